"""Broker fixtures (filled in with the consumers work)."""
