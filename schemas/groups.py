"""Hub group names, shared by the consumer (which sends to them) and the hub (which puts clients in them).

Rule: a group name is built only here, from a value in canonical form — regions lower-cased,
contractor ids as lower-case hyphenated UUIDs — so that ``North-America`` in an event and
``north-america`` in a token claim name the same group.
"""

from __future__ import annotations

from typing import Final
from uuid import UUID

__all__ = ["CONTRACTOR_GROUP_PREFIX", "DISPATCH_GROUP_PREFIX", "contractor_group", "dispatch_group"]

DISPATCH_GROUP_PREFIX: Final = "dispatch/"
CONTRACTOR_GROUP_PREFIX: Final = "contractor/"


def dispatch_group(region: str) -> str:
    """The dispatchers of ``region``: ``dispatch/north-america``."""
    if not region:
        raise ValueError("region must not be empty")
    return f"{DISPATCH_GROUP_PREFIX}{region.lower()}"


def contractor_group(contractor_id: str | UUID) -> str:
    """One contractor: ``contractor/3f2504e0-4f89-11d3-9a0c-0305e82c3301``; ``ValueError`` if not a UUID."""
    canonical = contractor_id if isinstance(contractor_id, UUID) else UUID(contractor_id)
    return f"{CONTRACTOR_GROUP_PREFIX}{canonical}"
