"""Hub group names, shared by the consumer (which sends to them) and the hub (which puts clients in them).

Rule: this is the one place that builds a group name and the one place that puts its key in canonical
form, so that ``North-America`` in an event, ``north-america`` in a token claim and ``NORTH-AMERICA``
in a join request name the same group:

* ``dispatch/<region>`` — the region is an ASCII slug (``a-z``, ``0-9``, single ``-``), lower-cased;
* ``contractor/<uuid>`` — the UUID in its hyphenated "8-4-4-4-12" hex form (RFC 9562 §4), lower case.

The two prefixes cannot collide, and a key that is not canonical-able is refused with
``InvalidGroupKeyError``, whose text tells the caller what is valid (hub clients see it).
"""

from __future__ import annotations

import re
from typing import Final
from uuid import UUID

from schemas.events import REGION_MAX_LENGTH

__all__ = [
    "CONTRACTOR_GROUP_PREFIX",
    "DISPATCH_GROUP_PREFIX",
    "InvalidGroupKeyError",
    "canonical_contractor_id",
    "canonical_uuid",
    "contractor_group",
    "dispatch_group",
    "normalize_region",
    "split_group",
]

DISPATCH_GROUP_PREFIX: Final = "dispatch/"
CONTRACTOR_GROUP_PREFIX: Final = "contractor/"

# Letters/digits separated by single hyphens; no leading, trailing or doubled hyphen.
_SLUG: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# Only the hyphenated form, any case. ``uuid.UUID`` would also take braces, "urn:uuid:" and bare hex;
# refusing those keeps one spelling per id on the wire and in logs.
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class InvalidGroupKeyError(ValueError):
    """A region or contractor id that cannot name a group; ``str()`` tells the client what is valid."""


def normalize_region(region: str) -> str:
    """The canonical (lower-case) slug for ``region``; ``InvalidGroupKeyError`` if it is not one."""
    # isascii first: str.lower() maps some non-ASCII letters onto ASCII ("K" KELVIN SIGN -> "k").
    normalized = region.lower() if region.isascii() else ""
    if not normalized or len(normalized) > REGION_MAX_LENGTH or _SLUG.fullmatch(normalized) is None:
        raise InvalidGroupKeyError(
            f"Invalid region {region[:REGION_MAX_LENGTH]!r}: use 1-{REGION_MAX_LENGTH} letters, digits "
            "and single hyphens, e.g. 'north-america'"
        )
    return normalized


def canonical_uuid(value: str) -> str | None:
    """The lower-case hyphenated UUID ``value`` spells, or ``None`` when it is not one."""
    if _UUID.fullmatch(value) is None:
        return None
    return value.lower()


def canonical_contractor_id(contractor_id: str | UUID) -> str:
    """The contractor id as a lower-case hyphenated UUID; ``InvalidGroupKeyError`` if it is not one."""
    if isinstance(contractor_id, UUID):
        return str(contractor_id)
    canonical = canonical_uuid(contractor_id)
    if canonical is None:
        raise InvalidGroupKeyError(
            f"Invalid contractor id {contractor_id[:64]!r}: expected a UUID like "
            "'3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d'"
        )
    return canonical


def dispatch_group(region: str) -> str:
    """The dispatchers of ``region``: ``dispatch/north-america``."""
    return f"{DISPATCH_GROUP_PREFIX}{normalize_region(region)}"


def contractor_group(contractor_id: str | UUID) -> str:
    """One contractor: ``contractor/3f2504e0-4f89-11d3-9a0c-0305e82c3301``."""
    return f"{CONTRACTOR_GROUP_PREFIX}{canonical_contractor_id(contractor_id)}"


def split_group(name: str) -> tuple[str, str]:
    """``("dispatch", "north-america")`` for ``dispatch/north-america``; the key is not yet canonical."""
    for prefix in (DISPATCH_GROUP_PREFIX, CONTRACTOR_GROUP_PREFIX):
        if name.startswith(prefix):
            return prefix[:-1], name[len(prefix) :]
    raise InvalidGroupKeyError(
        f"Invalid group {name[:80]!r}: expected 'dispatch/<region>' or 'contractor/<contractorId>'"
    )
