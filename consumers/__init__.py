"""Reading the shared event log (a RabbitMQ stream) and handing each entry to the hub.

``consumer`` wires the parts and brackets their life; ``link`` keeps the broker connection and the
consumer alive; ``attach`` (re-)attaches at the right offset and resets the hub when the place is
lost; ``inbox`` keeps deliveries in order for ``worker``, which handles one entry at a time (phases,
hand-off, credit); ``handling`` classifies one entry as a pure function; ``settle`` gives credit
back and publishes dead letters; ``positions`` remembers where this instance was; ``routes`` says
which groups an event goes to.

Rule: the only package that consumes, and it never imports ``service``: the hub reaches it only
through ``consumers.ports.EventLog``, which ``service.app`` hands to ``EventConsumer``.
"""

from __future__ import annotations

from consumers.consumer import EventConsumer
from consumers.ports import EventLog, WriteCoalescing

__all__ = ["EventConsumer", "EventLog", "WriteCoalescing"]
