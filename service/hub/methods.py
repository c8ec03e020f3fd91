"""The recommendations hub: the methods clients may call.

Clients join the groups they are entitled to and then receive ``RecommendationReady`` /
``JobAssigned`` invocations pushed by the RabbitMQ consumers. Groups are not a security feature in
themselves (ASP.NET docs, "groups"): every join is checked against the caller's verified claims.
A refused join fails that invocation and changes nothing; the connection stays open.
"""

from __future__ import annotations

from schemas import InvalidGroupKeyError, contractor_group, dispatch_group
from service.auth import AuthorizationError
from service.errors import HubException
from service.hub.dispatcher import CallerContext, HubMethods

__all__ = ["recommendations_hub"]

recommendations_hub = HubMethods()


@recommendations_hub.method("JoinDispatchGroup")
async def join_dispatch_group(ctx: CallerContext, region: str) -> None:
    """Receive every event of ``region`` (needs the Dispatcher role and the region in the token)."""
    try:
        group = ctx.policy.authorize_dispatch(ctx.principal, region)
    except (AuthorizationError, InvalidGroupKeyError) as error:
        raise HubException(str(error)) from None
    ctx.add_to_group(group)


@recommendations_hub.method("LeaveDispatchGroup")
async def leave_dispatch_group(ctx: CallerContext, region: str) -> None:
    try:
        group = dispatch_group(region)
    except InvalidGroupKeyError as error:
        raise HubException(str(error)) from None
    ctx.remove_from_group(group)


@recommendations_hub.method("JoinContractorGroup")
async def join_contractor_group(ctx: CallerContext, contractor_id: str) -> None:
    """Receive the assignments of one contractor (the caller's own id, or any for Admin)."""
    try:
        group = ctx.policy.authorize_contractor(ctx.principal, contractor_id)
    except (AuthorizationError, InvalidGroupKeyError) as error:
        raise HubException(str(error)) from None
    ctx.add_to_group(group)


@recommendations_hub.method("LeaveContractorGroup")
async def leave_contractor_group(ctx: CallerContext, contractor_id: str) -> None:
    try:
        group = contractor_group(contractor_id)
    except InvalidGroupKeyError as error:
        raise HubException(str(error)) from None
    ctx.remove_from_group(group)
