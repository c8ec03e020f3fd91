"""The recommendations hub: the methods clients may call.

Clients join the groups they are entitled to and then receive ``RecommendationReady`` /
``JobAssigned`` invocations pushed by the RabbitMQ consumers. Groups are not a security feature in
themselves (ASP.NET Core docs, "Manage users and groups in SignalR"): every join is checked against
the caller's verified claims by the group policy. A refused join fails that invocation and changes
nothing; the connection stays open.
"""

from __future__ import annotations

from typing import Any, Final

from schemas import InvalidGroupKeyError, contractor_group, dispatch_group
from schemas.log import InvalidPositionError, Position
from service.auth import AuthorizationError, GroupPolicy
from service.errors import HubException

from .dispatcher import CallerContext, hub_method
from .journal import EventJournal

__all__ = ["MAX_RESUME_GROUPS", "RecommendationsHub"]

MAX_RESUME_GROUPS: Final = 64


class RecommendationsHub:
    """Join and leave the dispatch and contractor groups as the token allows; resume from a position."""

    def __init__(self, policy: GroupPolicy, journal: EventJournal) -> None:
        self._policy = policy
        self._journal = journal

    @hub_method("Resume")
    async def resume(self, caller: CallerContext, groups: list[str], position: str | None) -> dict[str, Any]:
        """Join ``groups`` and replay, in log order, every event of theirs after ``position``.

        Returns ``{recovered, position, replayed, reason}``: ``recovered`` is false (and nothing is
        replayed) when the position is older than this instance keeps, past the replay cap, of another
        epoch of the log (the stream was recreated), or null (a fresh start); then the client reloads
        its state and continues from ``position``, the current head. Every group is authorized as
        its join method would authorize it; one refusal fails the call and joins nothing.
        """
        if not caller.positions:
            raise HubException(
                "Resume needs positions: connect with '?positions=true' on the hub URL, and handle each "
                "event's last argument (its position)"
            )
        if caller.groups.groups_of(caller.connection_id):
            raise HubException(
                "Resume must be the first join of a connection; call it right after connecting"
            )
        if not groups or len(groups) > MAX_RESUME_GROUPS:
            raise HubException(f"Resume takes 1 to {MAX_RESUME_GROUPS} groups")
        try:
            after = None if position is None else Position.parse(position)
            allowed = {self._policy.authorize_group(caller.principal, group) for group in groups}
        except (AuthorizationError, InvalidGroupKeyError, InvalidPositionError) as error:
            raise HubException(str(error)) from None
        result = await self._journal.resume(caller.connection_id, allowed, after)
        return result.as_reply()

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
