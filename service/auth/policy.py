"""Who may be a member of which hub group, decided from verified claims only.

Rule (RELIABILITY.md §4.7, ASP.NET "groups are not a security feature"): a connection joins a group only
after its principal was checked for *that* group here. Group keys are canonical before any decision:

* ``dispatch/<region>`` — region is an ASCII slug (``a-z``, ``0-9``, ``-``), lower-cased;
* ``contractor/<uuid>`` — the hyphenated UUID in lower case.

The two prefixes cannot collide, and a case or spelling variant of a key names the same group, so no
one reaches another tenant's group by writing its name differently. Admins may join any well-formed
group; everyone else needs the role *and* the resource in their own claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import schemas
from service.auth.errors import AuthorizationError
from service.auth.principal import Principal, canonical_uuid

__all__ = [
    "MAX_REGION_LENGTH",
    "GroupPolicy",
    "InvalidGroupKeyError",
    "Roles",
    "contractor_group",
    "dispatch_group",
    "normalize_region",
]

MAX_REGION_LENGTH = 64
# Letters/digits separated by single hyphens; no leading, trailing or doubled hyphen.
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class InvalidGroupKeyError(ValueError):
    """A region or contractor id that cannot name a group; ``str()`` tells the client what is valid."""


@dataclass(frozen=True)
class Roles:
    """Cognito group names that act as roles (``cognito:groups``)."""

    dispatcher: str = "Dispatcher"
    contractor: str = "Contractor"
    admin: str = "Admin"


_DEFAULT_ROLES = Roles()


def normalize_region(region: str) -> str:
    """The canonical (lower-case) slug for ``region``; ``InvalidGroupKeyError`` if it is not one."""
    # isascii first: str.lower() maps some non-ASCII letters onto ASCII ("K" KELVIN SIGN -> "k").
    normalized = region.lower() if region.isascii() else ""
    if not normalized or len(normalized) > MAX_REGION_LENGTH or _SLUG.fullmatch(normalized) is None:
        raise InvalidGroupKeyError(
            f"Invalid region {region[:MAX_REGION_LENGTH]!r}: use 1-{MAX_REGION_LENGTH} letters, digits "
            "and single hyphens, e.g. 'north-america'"
        )
    return normalized


def dispatch_group(region: str) -> str:
    """``dispatch/<region>`` with the region as a canonical slug."""
    return schemas.dispatch_group(normalize_region(region))


def _canonical_contractor(contractor_id: str) -> str:
    canonical = canonical_uuid(contractor_id)
    if canonical is None:
        raise InvalidGroupKeyError(
            f"Invalid contractor id {contractor_id[:64]!r}: expected a UUID like "
            "'3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d'"
        )
    return canonical


def contractor_group(contractor_id: str) -> str:
    """``contractor/<uuid>`` with the UUID in canonical lower case."""
    return schemas.contractor_group(_canonical_contractor(contractor_id))


def _principal_regions(principal: Principal) -> frozenset[str]:
    regions: set[str] = set()
    for region in principal.regions:
        try:
            regions.add(normalize_region(region))
        except InvalidGroupKeyError:
            continue  # a claim value that is no slug can never match a requested (valid) one
    return frozenset(regions)


class GroupPolicy:
    """Decides group membership from a principal's roles and resource claims."""

    def __init__(
        self,
        roles: Roles = _DEFAULT_ROLES,
        region_claim: str = "custom:region",
        *,
        groups_claim: str = "cognito:groups",
        contractor_id_claim: str = "custom:contractorId",
        contractor_requires_role: bool = False,
    ) -> None:
        self._roles = roles
        self._region_claim = region_claim
        self._groups_claim = groups_claim
        self._contractor_id_claim = contractor_id_claim
        self._contractor_requires_role = contractor_requires_role

    @property
    def roles(self) -> Roles:
        return self._roles

    def authorize_dispatch(self, principal: Principal, region: str) -> str:
        """The dispatch group name for ``region`` if ``principal`` may join it, else ``AuthorizationError``.

        Requires the Dispatcher role and the region among the principal's regions, or the Admin role.
        ``InvalidGroupKeyError`` when ``region`` is not a valid slug (checked before any decision).
        """
        region_key = normalize_region(region)
        group = f"dispatch/{region_key}"
        if principal.has_role(self._roles.admin):
            return group
        refused = f"Not authorized to join dispatch group for region '{region_key}'"
        if not principal.has_role(self._roles.dispatcher):
            raise AuthorizationError(
                f"{refused}: requires the '{self._roles.dispatcher}' or '{self._roles.admin}' group "
                f"in your {self._groups_claim} claim"
            )
        if region_key not in _principal_regions(principal):
            raise AuthorizationError(f"{refused}: region is not in your {self._region_claim} claim")
        return group

    def authorize_contractor(self, principal: Principal, contractor_id: str) -> str:
        """The contractor group name if it is the principal's own contractor id (or Admin)."""
        canonical = _canonical_contractor(contractor_id)
        group = f"contractor/{canonical}"
        if principal.has_role(self._roles.admin):
            return group
        refused = f"Not authorized to join contractor group '{canonical}'"
        if self._contractor_requires_role and not principal.has_role(self._roles.contractor):
            raise AuthorizationError(
                f"{refused}: requires the '{self._roles.contractor}' or '{self._roles.admin}' group "
                f"in your {self._groups_claim} claim"
            )
        own = canonical_uuid(principal.contractor_id) if principal.contractor_id else None
        if own != canonical:
            raise AuthorizationError(
                f"{refused}: it is not the contractor id in your token ({self._contractor_id_claim})"
            )
        return group

    def groups_for(self, principal: Principal) -> frozenset[str]:
        """Every group the principal's own claims entitle it to (what a hub joins at connect).

        Dispatchers get their regions' dispatch groups, contractors their own contractor group; claim
        values that are not valid keys are skipped. Admin adds nothing implicit: an admin joins
        specific groups through ``authorize_*``, never "all".
        """
        groups: set[str] = set()
        if principal.has_role(self._roles.dispatcher):
            groups.update(f"dispatch/{region}" for region in _principal_regions(principal))
        if principal.has_role(self._roles.contractor) and principal.contractor_id:
            own = canonical_uuid(principal.contractor_id)
            if own is not None:
                groups.add(f"contractor/{own}")
        return frozenset(groups)
