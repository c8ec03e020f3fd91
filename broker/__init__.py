"""The RabbitMQ contract shared by the consumer and the publisher: connecting, the topology, errors.

Rule: no consuming and no publishing here — only what both sides must agree on (entity names and
arguments, URL parameters, which broker errors are an operator's to fix).
"""

from __future__ import annotations

from broker.errors import BrokerConfigurationError, PublishError, UnroutableError
from broker.topology import Topology

__all__ = ["BrokerConfigurationError", "PublishError", "Topology", "UnroutableError"]
