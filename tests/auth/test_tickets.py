"""Connection tickets: what negotiate hands out, and what a transport request may present instead of
its bearer token (service/auth/tickets.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.auth import AuthenticationError, ConnectionTickets, is_ticket

EXPIRES = 2_000_000_000.0
TOKEN_TEXT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=64)


def _tickets(now: float = EXPIRES - 600, leeway: float = 30.0) -> ConnectionTickets:
    return ConnectionTickets(key=b"k" * 32, leeway=leeway, clock=lambda: now)


def _refusal(tickets: ConnectionTickets, ticket: str, connection_token: str | None) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as refused:
        tickets.verify(ticket, connection_token)
    assert refused.value.error == "invalid_token"  # a 401 with an RFC 6750 error code
    return refused.value


def test_a_ticket_is_short_and_valid_for_its_connection_until_the_token_expires() -> None:
    tickets = _tickets()
    ticket = tickets.issue("conn-token-1", EXPIRES - 0.5)  # exp rounded up: never shorter than the token
    assert is_ticket(ticket)
    assert len(ticket) <= 40  # a Cognito token is 1-4 KiB: this is what an open WebSocket keeps instead
    assert tickets.verify(ticket, "conn-token-1") == EXPIRES


def test_a_ticket_is_refused_for_another_connection_without_an_id_and_when_tampered() -> None:
    tickets = _tickets()
    ticket = tickets.issue("conn-token-1", EXPIRES)
    assert _refusal(tickets, ticket, "conn-token-2").reason == "bad_ticket"
    assert "negotiate" in _refusal(tickets, ticket, None).description  # negotiate or skipNegotiation
    later = ticket.replace(f".{int(EXPIRES)}.", f".{int(EXPIRES) + 3600}.")
    assert _refusal(tickets, later, "conn-token-1").reason == "bad_ticket"  # exp is covered by the MAC
    other_process = ConnectionTickets(key=b"o" * 32, clock=lambda: EXPIRES - 600)
    assert _refusal(other_process, ticket, "conn-token-1").reason == "bad_ticket"


def test_an_expired_ticket_is_refused_after_the_leeway() -> None:
    ticket = _tickets().issue("c", EXPIRES)
    assert _tickets(now=EXPIRES + 29).verify(ticket, "c") == EXPIRES  # the token's own leeway
    assert _refusal(_tickets(now=EXPIRES + 31), ticket, "c").reason == "expired"


@pytest.mark.parametrize(
    "ticket",
    [
        "sct1.",
        "sct1.123",
        "sct1.12a.abc",
        "sct1.-5.abc",
        "sct1.١٢٣.abc",  # Arabic-Indic digits: str.isdigit() is True for them
        "sct1." + "9" * 80 + ".abc",
        "eyJhbGciOiJSUzI1NiJ9.e30.sig",  # a JWT is not a ticket
    ],
)
def test_a_malformed_ticket_is_refused_as_malformed(ticket: str) -> None:
    assert _refusal(_tickets(), ticket, "c").reason == "malformed"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ConnectionTickets(key=b"short")


@given(connection_token=TOKEN_TEXT, other=TOKEN_TEXT)
def test_any_connection_token_round_trips_and_binds_its_ticket(connection_token: str, other: str) -> None:
    tickets = _tickets()
    ticket = tickets.issue(connection_token, EXPIRES)
    assert tickets.verify(ticket, connection_token) == EXPIRES
    if other != connection_token:
        with pytest.raises(AuthenticationError):
            tickets.verify(ticket, other)


@given(position=st.integers(min_value=0), replacement=st.characters(min_codepoint=32, max_codepoint=0x2FFF))
def test_any_change_to_a_ticket_makes_it_invalid(position: int, replacement: str) -> None:
    tickets = _tickets()
    ticket = tickets.issue("conn", EXPIRES)
    index = position % len(ticket)
    changed = ticket[:index] + replacement + ticket[index + 1 :]
    if changed == ticket:
        return
    with pytest.raises(AuthenticationError):
        tickets.verify(changed, "conn")
