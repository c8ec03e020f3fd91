"""Every exception the consumers package raises on purpose.

Rule: say whose fault it is. ``BrokerConfigurationError`` is an operator's problem that retrying
cannot fix (credentials, vhost, permissions, an entity that exists with other arguments); it is
reported once and ends the consumer. Transient broker trouble is never an exception of ours: it is
retried and shows up as ``is_connected``/``is_consuming`` being false.
"""

from __future__ import annotations

__all__ = ["BrokerConfigurationError", "PublishError", "UnroutableError"]


class BrokerConfigurationError(Exception):
    """The broker refused this instance's setup; ``str()`` names the entity and the setting to check."""


class PublishError(Exception):
    """An event could not be published: invalid, not confirmed by the broker, or the broker unreachable."""


class UnroutableError(PublishError):
    """The broker took the publish but no queue is bound to receive it (no consumer has declared one yet)."""
