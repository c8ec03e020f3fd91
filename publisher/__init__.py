"""Publishing SmartScheduler events to RabbitMQ: the library upstream services and tests use, and a CLI.

Rule: publishing is not consuming — this package shares only the broker contract (``broker``) with
``consumers``. Every message is validated against the event contract before it leaves, published
persistent with publisher confirms and ``mandatory``.
"""

from __future__ import annotations

from publisher.events import EventPublisher, Published, job_assigned, recommendation_ready, routing_key_for

__all__ = ["EventPublisher", "Published", "job_assigned", "recommendation_ready", "routing_key_for"]
