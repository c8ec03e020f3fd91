"""The authenticated caller: what a verified token says about who is calling.

Rule: a ``Principal`` is only ever built from a token whose signature, issuer, audience and times were
checked (``TokenValidator``) or by tests. It is immutable, and ``claims`` is a read-only copy, so
code that holds a principal cannot widen it. Group names are *not* derived here; ``policy`` does that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Principal", "canonical_uuid"]

# Only the RFC 4122 hyphenated form ("8-4-4-4-12" hex), any case. ``uuid.UUID`` would also take
# braces, "urn:uuid:" and bare hex; refusing those keeps one spelling per id on the wire and in logs.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def canonical_uuid(value: str) -> str | None:
    """The lower-case hyphenated UUID ``value`` spells, or ``None`` when it is not one."""
    if _UUID.fullmatch(value) is None:
        return None
    return value.lower()


def _freeze(value: Any) -> Any:
    """Deep read-only copy of decoded JSON: dicts become mapping proxies, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as a verified token states it.

    ``contractor_id`` is ``custom:contractorId`` (else ``sub``), in canonical lower case when it is a
    UUID. ``regions`` keep the spelling of the claim; compare them through ``policy``, which
    normalizes. ``claims`` is excluded from ``repr`` (it carries personal data such as e-mail) and
    from equality/hash.
    """

    subject: str
    username: str | None
    token_use: str
    roles: frozenset[str]
    regions: frozenset[str]
    contractor_id: str | None
    expires_at: float
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen means "no attribute assignment"; also make the containers themselves immutable so a
        # caller passing a set or dict cannot change the principal afterwards.
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "regions", frozenset(self.regions))
        object.__setattr__(self, "claims", _freeze(self.claims))

    def has_role(self, name: str) -> bool:
        """Whether the groups claim lists ``name`` (Cognito group names are case-sensitive)."""
        return name in self.roles
