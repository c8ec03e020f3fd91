"""RabbitMQ side of the service: topology, the consume loop and ack policy, routes to hub groups, publishing.

Rule: the only package that imports aio_pika, and it never imports ``service``: the hub reaches it
only through ``consumers.ports.GroupSender``, which ``service.app`` hands to ``EventConsumer``.
``consumers.publish`` (producer API and CLI) is imported on its own, not from here, so that
``python -m consumers.publish`` runs it exactly once.
"""

from __future__ import annotations

from consumers.consumer import EventConsumer
from consumers.errors import BrokerConfigurationError, PublishError, UnroutableError
from consumers.ports import GroupSender
from consumers.topology import Topology

__all__ = [
    "BrokerConfigurationError",
    "EventConsumer",
    "GroupSender",
    "PublishError",
    "Topology",
    "UnroutableError",
]
