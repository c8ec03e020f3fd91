"""smartscheduler-realtime: RabbitMQ events pushed to browsers through a SignalR-compatible hub."""
