"""Who may be a member of which hub group, decided from verified claims only.

Rule: a connection joins a group only after its principal was checked for *that* group here (ASP.NET
Core docs, "Manage users and groups in SignalR": groups are not a security feature by themselves).
This module only decides: group keys are put in canonical form and names are built by
``schemas.groups`` before and after any decision, so no one reaches another tenant's group by writing
its name differently. Admins may join any well-formed group; everyone else needs the role *and* the
resource in their own claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.groups import (
    InvalidGroupKeyError,
    canonical_contractor_id,
    canonical_uuid,
    contractor_group,
    dispatch_group,
    normalize_region,
    split_group,
)
from service.auth.errors import AuthorizationError
from service.auth.principal import Principal

__all__ = ["GroupPolicy", "Roles"]


@dataclass(frozen=True)
class Roles:
    """Cognito group names that act as roles (``cognito:groups``)."""

    dispatcher: str = "Dispatcher"
    contractor: str = "Contractor"
    admin: str = "Admin"


_DEFAULT_ROLES = Roles()


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
        group = dispatch_group(region_key)
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

    def authorize_group(self, principal: Principal, group: str) -> str:
        """The canonical name of ``group`` (``dispatch/…`` or ``contractor/…``) if ``principal`` may join
        it: the same decision as the join of that kind."""
        kind, key = split_group(group)
        if kind == "dispatch":
            return self.authorize_dispatch(principal, key)
        return self.authorize_contractor(principal, key)

    def authorize_contractor(self, principal: Principal, contractor_id: str) -> str:
        """The contractor group name if it is the principal's own contractor id (or Admin)."""
        canonical = canonical_contractor_id(contractor_id)
        group = contractor_group(canonical)
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
