"""GroupPolicy: who may join which group, from verified claims (keys: tests/schemas/test_groups.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import InvalidGroupKeyError, contractor_group, dispatch_group
from service.auth import AuthorizationError, GroupPolicy, Principal, Roles, TokenValidator
from tests.support.tokens import TokenFactory

OWN = "3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d"
OTHER = "9a1d7e2c-0b3f-4c5a-8e6d-2f4b1c9a7e30"


def principal(
    *, roles: Iterable[str] = (), regions: Iterable[str] = (), contractor_id: str | None = None
) -> Principal:
    return Principal(
        subject="sub-1",
        username="user",
        token_use="access",
        roles=frozenset(roles),
        regions=frozenset(regions),
        contractor_id=contractor_id,
        expires_at=0.0,
    )


POLICY = GroupPolicy()


# --- the policy decides; schemas.groups names -----------------------------------------------------


def _outcome(decide: Callable[..., str], *args: Any) -> str:
    try:
        return decide(*args)
    except InvalidGroupKeyError as error:
        return f"refused: {error}"


@given(st.text(max_size=70))
def test_admin_gets_exactly_the_dispatch_group_schemas_builds(region: str) -> None:
    admin = principal(roles={"Admin"})
    assert _outcome(POLICY.authorize_dispatch, admin, region) == _outcome(dispatch_group, region)


@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=40)))
def test_admin_gets_exactly_the_contractor_group_schemas_builds(contractor_id: str) -> None:
    admin = principal(roles={"Admin"})
    assert _outcome(POLICY.authorize_contractor, admin, contractor_id) == _outcome(
        contractor_group, contractor_id
    )


def test_invalid_keys_reach_the_caller_with_the_same_message() -> None:
    with pytest.raises(InvalidGroupKeyError) as caught:
        POLICY.authorize_dispatch(principal(roles={"Dispatcher"}, regions={"north"}), "north america")
    assert str(caught.value) == (
        "Invalid region 'north america': use 1-64 letters, digits and single hyphens, e.g. 'north-america'"
    )
    with pytest.raises(InvalidGroupKeyError) as caught:
        POLICY.authorize_contractor(principal(roles={"Contractor"}), "nope")
    assert str(caught.value) == (
        "Invalid contractor id 'nope': expected a UUID like '3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d'"
    )


# --- dispatch groups ------------------------------------------------------------------------


def test_dispatcher_joins_own_region() -> None:
    dispatcher = principal(roles={"Dispatcher"}, regions={"North-America", "south"})
    assert POLICY.authorize_dispatch(dispatcher, "north-america") == "dispatch/north-america"
    assert POLICY.authorize_dispatch(dispatcher, "NORTH-AMERICA") == "dispatch/north-america"
    assert POLICY.authorize_dispatch(dispatcher, "South") == "dispatch/south"


def test_dispatcher_refused_for_another_region() -> None:
    dispatcher = principal(roles={"Dispatcher"}, regions={"north-america"})
    with pytest.raises(AuthorizationError) as caught:
        POLICY.authorize_dispatch(dispatcher, "south")
    assert str(caught.value) == (
        "Not authorized to join dispatch group for region 'south': region is not in your custom:region claim"
    )


def test_region_claim_values_that_are_not_slugs_never_match() -> None:
    dispatcher = principal(roles={"Dispatcher"}, regions={"north america", "r\u00e9gion", "*"})
    for region in ("north-america", "region", "north"):
        with pytest.raises(AuthorizationError):
            POLICY.authorize_dispatch(dispatcher, region)


def test_region_without_dispatcher_role_is_refused() -> None:
    contractor = principal(roles={"Contractor"}, regions={"north-america"}, contractor_id=OWN)
    with pytest.raises(
        AuthorizationError, match="requires the 'Dispatcher' or 'Admin' group in your cognito:groups"
    ):
        POLICY.authorize_dispatch(contractor, "north-america")


def test_role_names_are_case_sensitive() -> None:
    with pytest.raises(AuthorizationError):
        POLICY.authorize_dispatch(principal(roles={"dispatcher"}, regions={"north"}), "north")
    with pytest.raises(AuthorizationError):
        POLICY.authorize_dispatch(principal(roles={"admin"}), "north")


def test_admin_joins_any_valid_region() -> None:
    admin = principal(roles={"Admin"})
    assert POLICY.authorize_dispatch(admin, "South") == "dispatch/south"
    with pytest.raises(InvalidGroupKeyError):
        POLICY.authorize_dispatch(admin, "south/../north")


def test_invalid_region_is_refused_before_any_role_check() -> None:
    with pytest.raises(InvalidGroupKeyError):
        POLICY.authorize_dispatch(principal(), "no such region!")


def test_custom_role_names_and_claim_in_messages() -> None:
    policy = GroupPolicy(Roles(dispatcher="Ops", contractor="Vendor", admin="Root"), "custom:area")
    assert policy.authorize_dispatch(principal(roles={"Ops"}, regions={"west"}), "west") == "dispatch/west"
    assert policy.authorize_dispatch(principal(roles={"Root"}), "east") == "dispatch/east"
    with pytest.raises(AuthorizationError, match="custom:area"):
        policy.authorize_dispatch(principal(roles={"Ops"}, regions={"west"}), "east")
    with pytest.raises(AuthorizationError, match="'Ops' or 'Root'"):
        policy.authorize_dispatch(principal(roles={"Dispatcher"}, regions={"west"}), "west")


# --- contractor groups ----------------------------------------------------------------------


@pytest.mark.parametrize(("own", "requested"), [(OWN, OWN), (OWN, OWN.upper()), (OWN.upper(), OWN)])
def test_contractor_joins_own_group(own: str, requested: str) -> None:
    contractor = principal(roles={"Contractor"}, contractor_id=own)
    assert POLICY.authorize_contractor(contractor, requested) == f"contractor/{OWN}"


def test_contractor_refused_for_another_contractor() -> None:
    contractor = principal(roles={"Contractor"}, contractor_id=OWN)
    with pytest.raises(AuthorizationError) as caught:
        POLICY.authorize_contractor(contractor, OTHER)
    assert OTHER in str(caught.value)
    assert "custom:contractorId" in str(caught.value)


@pytest.mark.parametrize("own", [None, "", "legacy-42"])
def test_principal_without_a_uuid_contractor_id_joins_nothing(own: str | None) -> None:
    with pytest.raises(AuthorizationError):
        POLICY.authorize_contractor(principal(roles={"Contractor"}, contractor_id=own), OWN)


def test_admin_joins_any_contractor_group() -> None:
    assert POLICY.authorize_contractor(principal(roles={"Admin"}), OTHER.upper()) == f"contractor/{OTHER}"
    with pytest.raises(InvalidGroupKeyError):
        POLICY.authorize_contractor(principal(roles={"Admin"}), "everyone")


def test_contractor_role_can_be_required() -> None:
    strict = GroupPolicy(contractor_requires_role=True)
    assert strict.authorize_contractor(principal(roles={"Contractor"}, contractor_id=OWN), OWN)
    with pytest.raises(AuthorizationError, match="'Contractor' or 'Admin'"):
        strict.authorize_contractor(principal(roles={"Dispatcher"}, contractor_id=OWN), OWN)
    # By default owning the id is enough (the README's hub contract).
    assert POLICY.authorize_contractor(principal(roles=set(), contractor_id=OWN), OWN)


# --- end to end: token -> principal -> decision ---------------------------------------------


async def test_tokens_through_the_policy(token_factory: TokenFactory) -> None:
    validator: TokenValidator = token_factory.validator()
    dispatcher = await validator.validate(token_factory.dispatcher(regions=("North-America", "EU")))
    assert POLICY.authorize_dispatch(dispatcher, "eu") == "dispatch/eu"
    with pytest.raises(AuthorizationError):
        POLICY.authorize_dispatch(dispatcher, "south")

    contractor = await validator.validate(token_factory.contractor(OWN.upper()))
    assert POLICY.authorize_contractor(contractor, OWN) == f"contractor/{OWN}"
    with pytest.raises(AuthorizationError):
        POLICY.authorize_contractor(contractor, OTHER)
    with pytest.raises(AuthorizationError):
        POLICY.authorize_dispatch(contractor, "north-america")

    admin = await validator.validate(token_factory.admin())
    assert POLICY.authorize_contractor(admin, OTHER) == f"contractor/{OTHER}"
