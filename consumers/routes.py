"""Which hub groups an event goes to.

The README's hub contract: ``RecommendationReady`` → ``dispatch/{region}``; ``JobAssigned`` →
``dispatch/{region}`` and ``contractor/{contractorId}``.

Rule: an event goes to exactly the groups named here and never to "everyone": there is no
fallback group. Names are built by ``schemas.groups`` (regions lower-case, contractor ids as
lower-case canonical UUIDs) so they match the groups the hub puts clients in.
"""

from __future__ import annotations

from schemas import Event, JobAssigned, RecommendationReady, contractor_group, dispatch_group

__all__ = ["groups_for"]


def groups_for(event: Event) -> tuple[str, ...]:
    """The groups ``event`` is sent to, in a stable order, without duplicates."""
    match event:
        case RecommendationReady():
            return (dispatch_group(event.region),)
        case JobAssigned():
            return (dispatch_group(event.region), contractor_group(event.contractor_id))
