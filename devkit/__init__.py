"""Developer tooling that is not part of the service: a local broker, the `make run` launcher."""
