"""The recommendations hub: the methods clients may call.

Clients join the groups they are entitled to and then receive ``RecommendationReady`` /
``JobAssigned`` invocations pushed by the RabbitMQ consumers. Groups are not a security feature in
themselves (ASP.NET Core docs, "Manage users and groups in SignalR"): every join is checked against
the caller's verified claims by the group policy. A refused join fails that invocation and changes
nothing; the connection stays open.
"""

from __future__ import annotations

from schemas import InvalidGroupKeyError, contractor_group, dispatch_group
from service.auth import AuthorizationError, GroupPolicy
from service.errors import HubException

from .dispatcher import CallerContext, hub_method

__all__ = ["RecommendationsHub"]


class RecommendationsHub:
    """Join and leave the dispatch and contractor groups, as the token allows."""

    def __init__(self, policy: GroupPolicy) -> None:
        self._policy = policy

    @hub_method("JoinDispatchGroup")
    async def join_dispatch_group(self, caller: CallerContext, region: str) -> None:
        """Receive every event of ``region`` (needs the Dispatcher role and the region in the token)."""
        try:
            group = self._policy.authorize_dispatch(caller.principal, region)
        except (AuthorizationError, InvalidGroupKeyError) as error:
            raise HubException(str(error)) from None
        caller.groups.add_to_group(caller.connection_id, group)

    @hub_method("LeaveDispatchGroup")
    async def leave_dispatch_group(self, caller: CallerContext, region: str) -> None:
        try:
            group = dispatch_group(region)
        except InvalidGroupKeyError as error:
            raise HubException(str(error)) from None
        caller.groups.remove_from_group(caller.connection_id, group)

    @hub_method("JoinContractorGroup")
    async def join_contractor_group(self, caller: CallerContext, contractor_id: str) -> None:
        """Receive the assignments of one contractor (the caller's own id, or any for Admin)."""
        try:
            group = self._policy.authorize_contractor(caller.principal, contractor_id)
        except (AuthorizationError, InvalidGroupKeyError) as error:
            raise HubException(str(error)) from None
        caller.groups.add_to_group(caller.connection_id, group)

    @hub_method("LeaveContractorGroup")
    async def leave_contractor_group(self, caller: CallerContext, contractor_id: str) -> None:
        try:
            group = contractor_group(contractor_id)
        except InvalidGroupKeyError as error:
            raise HubException(str(error)) from None
        caller.groups.remove_from_group(caller.connection_id, group)
