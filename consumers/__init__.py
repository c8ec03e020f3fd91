"""RabbitMQ consumers: topology, consume loop and ack policy, routing to hub groups, publisher CLI."""
