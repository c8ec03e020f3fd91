"""Group names: one builder and one canonical form for the consumer, the policy and the hub."""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    InvalidGroupKeyError,
    canonical_contractor_id,
    canonical_uuid,
    contractor_group,
    dispatch_group,
    normalize_region,
)
from schemas.events import REGION_PATTERN

ROOT = Path(__file__).resolve().parent.parent.parent
OWN = "3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d"


# --- regions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "group"),
    [
        ("north-america", "dispatch/north-america"),
        ("North-America", "dispatch/north-america"),
        ("NORTH-AMERICA", "dispatch/north-america"),
        ("EU", "dispatch/eu"),
        ("zone-7", "dispatch/zone-7"),
        ("42", "dispatch/42"),
        ("a" * 64, "dispatch/" + "a" * 64),
    ],
)
def test_dispatch_group_is_the_lower_case_slug(region: str, group: str) -> None:
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
    assert str(caught.value) == (
        f"Invalid region {region[:64]!r}: use 1-64 letters, digits and single hyphens, e.g. 'north-america'"
    )


@given(st.text(max_size=80))
def test_normalize_region_is_idempotent_lower_case_and_a_slug(text: str) -> None:
    try:
        normalized = normalize_region(text)
    except InvalidGroupKeyError:
        return
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", normalized)
    assert normalize_region(normalized) == normalized
    assert normalized == text.lower()


@given(st.from_regex(REGION_PATTERN[1:-1], fullmatch=True).filter(lambda r: len(r) <= 64))
def test_every_region_an_event_may_carry_names_a_group(region: str) -> None:
    assert dispatch_group(region) == f"dispatch/{region.lower()}"


# --- contractor ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "contractor_id", [OWN, OWN.upper(), OWN[:8].upper() + OWN[8:], uuid.UUID(OWN), uuid.UUID(OWN.upper())]
)
def test_contractor_group_is_the_lower_case_hyphenated_uuid(contractor_id: str | uuid.UUID) -> None:
    assert canonical_contractor_id(contractor_id) == OWN
    assert contractor_group(contractor_id) == f"contractor/{OWN}"


@pytest.mark.parametrize(
    "contractor_id",
    [
        "",
        "nope",
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
def test_other_uuid_spellings_and_non_uuids_are_refused(contractor_id: str) -> None:
    assert canonical_uuid(contractor_id) is None
    with pytest.raises(InvalidGroupKeyError) as caught:
        contractor_group(contractor_id)
    assert str(caught.value) == (
        f"Invalid contractor id {contractor_id[:64]!r}: expected a UUID like "
        "'3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d'"
    )


@given(st.uuids())
def test_any_uuid_in_any_case_has_one_group(value: uuid.UUID) -> None:
    spellings: set[str | uuid.UUID] = {str(value), str(value).upper(), value}
    assert {contractor_group(spelling) for spelling in spellings} == {f"contractor/{value}"}


# A UUID is a valid region slug too: the same key may name both kinds of group.
@given(st.text(max_size=40) | st.uuids().map(str), st.text(max_size=40) | st.uuids().map(str))
def test_dispatch_and_contractor_groups_never_collide(region: str, contractor_id: str) -> None:
    groups: list[str] = []
    for build, key, prefix in (
        (dispatch_group, region, "dispatch/"),
        (contractor_group, contractor_id, "contractor/"),
    ):
        try:
            group = build(key)
        except InvalidGroupKeyError:
            continue
        assert group == prefix + key.lower()  # the key itself, in lower case, under its own prefix
        groups.append(group)
    assert len(set(groups)) == len(groups)


# --- one place -------------------------------------------------------------------------------------


def _code_strings(tree: ast.AST) -> list[str]:
    """String literals and f-string pieces of a module, without docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_but_schemas_groups_spells_a_group_prefix() -> None:
    builders = []
    for path in sorted([*ROOT.glob("service/**/*.py"), *ROOT.glob("consumers/**/*.py")]):
        strings = _code_strings(ast.parse(path.read_text(encoding="utf-8")))
        if any(text.startswith(("dispatch/", "contractor/")) for text in strings):
            builders.append(str(path.relative_to(ROOT)))
    assert builders == []
