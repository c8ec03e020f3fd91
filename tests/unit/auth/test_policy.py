"""Group keys and GroupPolicy (RELIABILITY.md §4.7; §6 case 25's authorization half)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.auth import (
    AuthorizationError,
    GroupPolicy,
    InvalidGroupKeyError,
    Principal,
    Roles,
    TokenValidator,
    contractor_group,
    dispatch_group,
    normalize_region,
)
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


# --- group keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "group"),
    [
        ("north-america", "dispatch/north-america"),
        ("North-America", "dispatch/north-america"),
        ("EU", "dispatch/eu"),
        ("zone-7", "dispatch/zone-7"),
        ("42", "dispatch/42"),
        ("a" * 64, "dispatch/" + "a" * 64),
    ],
)
def test_dispatch_group_is_canonical(region: str, group: str) -> None:
    assert dispatch_group(region) == group


@pytest.mark.parametrize(
    "region",
    [
        "",
        " ",
        " north",
        "north ",
        "north america",
        "north_america",
        "north.america",
        "-north",
        "north-",
        "north--america",
        "dispatch/north",
        "../north",
        "north/*",
        "*",
        "r\u00e9gion",
        "nor\u212ath",  # KELVIN SIGN lower-cases to ASCII "k": refused before lowering
        "\u0130stanbul",
        "a" * 65,
        "north\x00",
    ],
)
def test_invalid_regions_are_refused_with_a_usable_message(region: str) -> None:
    with pytest.raises(InvalidGroupKeyError) as caught:
        dispatch_group(region)
    assert isinstance(caught.value, ValueError)
    assert "letters, digits and single hyphens" in str(caught.value)


@pytest.mark.parametrize("contractor_id", [OWN, OWN.upper(), OWN[:8].upper() + OWN[8:]])
def test_contractor_group_is_lower_case_uuid(contractor_id: str) -> None:
    assert contractor_group(contractor_id) == f"contractor/{OWN}"


@pytest.mark.parametrize(
    "contractor_id",
    [
        "",
        "not-a-uuid",
        "{" + OWN + "}",
        "urn:uuid:" + OWN,
        OWN.replace("-", ""),
        " " + OWN,
        OWN + "\n",
        OWN[:-1] + "g",
        "north-america",
        "contractor/" + OWN,
    ],
)
def test_invalid_contractor_ids_are_refused(contractor_id: str) -> None:
    with pytest.raises(InvalidGroupKeyError, match="expected a UUID"):
        contractor_group(contractor_id)


@given(st.text(max_size=80))
def test_normalize_region_property(text: str) -> None:
    try:
        normalized = normalize_region(text)
    except InvalidGroupKeyError:
        return
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", normalized)
    assert normalize_region(normalized) == normalized
    assert normalized == text.lower()


@given(st.text(max_size=40), st.text(max_size=40))
def test_dispatch_and_contractor_groups_never_collide(region: str, contractor_id: str) -> None:
    groups: list[str] = []
    for build, key in ((dispatch_group, region), (contractor_group, contractor_id)):
        try:
            groups.append(build(key))
        except InvalidGroupKeyError:
            continue
    assert len(set(groups)) == len(groups)


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
    # The default follows the brief: owning the id is enough.
    assert POLICY.authorize_contractor(principal(roles=set(), contractor_id=OWN), OWN)


# --- groups derived at connect ----------------------------------------------------------------


def test_groups_for() -> None:
    both = principal(
        roles={"Dispatcher", "Contractor"}, regions={"North", "south", "bad region"}, contractor_id=OWN
    )
    assert POLICY.groups_for(both) == {"dispatch/north", "dispatch/south", f"contractor/{OWN}"}
    assert POLICY.groups_for(principal(roles={"Admin"}, regions={"north"}, contractor_id=OWN)) == frozenset()
    assert POLICY.groups_for(principal(roles={"Contractor"}, contractor_id="legacy")) == frozenset()


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
