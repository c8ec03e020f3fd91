"""The authenticated caller: what a verified token says about who is calling.

Rule: a ``Principal`` is only ever built from a token whose signature, issuer, audience and times were
checked (``TokenValidator``) or by tests. It is immutable, and ``claims`` is a read-only copy, so
code that holds a principal cannot widen it. Group names are *not* derived here (``schemas.groups``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Principal"]


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
    UUID. ``regions`` keep the spelling of the claim; ``policy`` compares them in canonical form.
    ``claims`` is excluded from ``repr`` (it carries personal data such as e-mail) and from
    equality/hash.
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
