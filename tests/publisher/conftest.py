"""The publisher's tests read what they publish through a real ``EventConsumer`` (``tests.consumers``)."""

from __future__ import annotations

from tests.consumers.conftest import sender

__all__ = ["sender"]
