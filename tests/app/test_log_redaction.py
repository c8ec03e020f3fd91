"""``service.logs.redact``: what a secret looks like in a log line, and what is left alone."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from config.settings import LogFormat
from service.logs import configure_logging, redact
from tests.support.session_logging import configure_session_logging

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0"
    ".eyJzdWIiOiJkZXYtZGlzcGF0Y2hlciIsImV4cCI6MTc5NjA1MzE4NH0"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # aiohttp.server's LineTooLong: the line's first bytes, cut short in the middle of the JWT
        (
            "Got more than 8190 bytes when reading: bytearray(b'/hub/recommendations?id=YS-oAB96Xg&"
            "access_token=eyJhbGciOiJSUzI1NiIsImtpZCI6IkpIc1hxOHowQ1Y1...').",
            "Got more than 8190 bytes when reading: "
            "bytearray(b'/hub/recommendations?id=***&access_token=***').",
        ),
        (
            "Got more than 8190 bytes when reading: b'Bearer eyJhbGciOiJSU...'.",
            "Got more than 8190 bytes when reading: b'Bearer ***'.",
        ),
        (
            f"    b'G@T /hub?access_token={JWT}&id=abc HTTP/1.1'",
            "    b'G@T /hub?access_token=***&id=*** HTTP/1.1'",
        ),
        (f"GET /{JWT[:40]}AAAA", "GET /***"),  # a JWT with no key before it
        ("query=a=1&id=tok&access_token=x", "query=a=1&id=***&access_token=***"),
        # the keys as aiohttp decodes them (the endpoint reads exactly ``id`` and ``access_token``)
        (
            "?%69d=tok&access%5Ftoken=x&%69%64=y&%61ccess_token=z",
            "?%69d=***&access%5Ftoken=***&%69%64=***&%61ccess_token=***",
        ),
        ("uuid=u1&ID=other", "uuid=u1&ID=other"),
        ("uuid=eyJhbGciOi.eyJzdWIi", "uuid=***"),
        (
            '{"connectionToken":"c-tok","connectionId":"pub"}',
            '{"connectionToken":"***","connectionId":"pub"}',
        ),
        ("connectionToken=c-tok connectionId=pub", "connectionToken=*** connectionId=pub"),
        (
            "<CIMultiDictProxy('Authorization': 'Bearer garbage-123')>",
            "<CIMultiDictProxy('Authorization': 'Bearer ***')>",
        ),
        ("Authorization: bearer   garbage-123", "Authorization: bearer   ***"),
        ("MultiDictProxy('access_token': 'garbage-123')", "MultiDictProxy('access_token': '***')"),
        (
            '{"exception": "...\\n  b\'GET /hub?id=tok\\\\x01\'"}',
            '{"exception": "...\\n  b\'GET /hub?id=***\\\\x01\'"}',
        ),
        # left alone: the service's own words and the public ids
        (
            "detail='A bearer token is required (Authorization header or access_token query)'",
            "detail='A bearer token is required (Authorization header or access_token query)'",
        ),
        ("connectionId=pub requestId=r1 uuid=u1 jobId=j1", "connectionId=pub requestId=r1 uuid=u1 jobId=j1"),
        ("plain line", "plain line"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_segment = st.text(alphabet=_B64URL, min_size=1, max_size=200)
_jwts = st.builds(lambda a, b, c: f"eyJ{a}.{b}.{c}", _segment, _segment, _segment)
# What a query value may hold in a raw request line (no separator: whitespace, &, quote, backslash).
_values = st.text(alphabet=_B64URL + "%.~+/=:;,()!*$@", min_size=1, max_size=300)
_keys = st.sampled_from(
    [
        "access_token=",
        "id=",
        "%69d=",
        "Bearer ",
        "Authorization: Bearer ",
        '"connectionToken":"',
        "'access_token': '",
    ]
)
_contexts = st.sampled_from(
    [
        ("bytearray(b'/hub/recommendations?negotiateVersion=1&", "').", "..."),
        ("GET /hub/recommendations?x=1&", " HTTP/1.1", ""),
        ("Got more than 8190 bytes when reading: b'", "'.", "..."),
        ('{"exception": "Traceback ...\\n  ', '\\n", "level": "error"}', ""),
        ("http.access query=", " status=400", ""),
    ]
)


@given(key=_keys, secret=st.one_of(_values, _jwts), cut=st.integers(min_value=1), context=_contexts)
def test_a_secret_after_its_key_is_gone_even_cut_short(
    key: str, secret: str, cut: int, context: tuple[str, str, str]
) -> None:
    before, after, ellipsis = context
    shown = secret[: max(1, cut % (len(secret) + 1))] + ellipsis  # aiohttp shows the line's start
    assert redact(f"{before}{key}{shown}{after}") == f"{before}{key}***{after}"


@given(jwt=_jwts, cut=st.integers(min_value=3), context=_contexts)
def test_a_jwt_anywhere_is_gone_even_cut_short(jwt: str, cut: int, context: tuple[str, str, str]) -> None:
    before, after, ellipsis = context
    shown = jwt[: max(3, cut % (len(jwt) + 1))]
    redacted = redact(f"{before}/{shown}{ellipsis}{after}")
    assert "eyJ" not in redacted
    assert redacted.startswith(before)
    assert redacted.endswith(after)


@pytest.fixture
def handler_output() -> Iterator[logging.Handler]:
    """The root handler configure_logging installs; the session's configuration is restored after."""
    yield logging.getLogger().handlers[0]
    configure_session_logging()


@pytest.mark.parametrize("fmt", [LogFormat.CONSOLE, LogFormat.JSON])
def test_every_logger_goes_through_redaction(handler_output: logging.Handler, fmt: LogFormat) -> None:
    """A foreign stdlib record: message arguments, exception text and traceback are all redacted."""
    configure_logging("DEBUG", fmt)
    handler = logging.getLogger().handlers[0]
    try:
        raise ValueError(f"Invalid method encountered: b'G@T /hub?id=ctok-1&access_token={JWT}'")
    except ValueError:
        record = logging.getLogger("aiohttp.server").makeRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request %s (Authorization: Bearer %s)",
            ("id=ctok-2", "garbage-3"),
            sys.exc_info(),
        )
    line = handler.format(record)
    for secret in ("ctok-1", "ctok-2", "garbage-3", "eyJ"):
        assert secret not in line
    assert "Error handling request id=***" in line
    assert "ValueError: Invalid method encountered" in line
    if fmt is LogFormat.JSON:
        assert json.loads(line)["logger"] == "aiohttp.server"


def test_warnings_and_uncaught_exceptions_go_through_the_redaction() -> None:
    """Python writes warnings and an uncaught exception's traceback straight to stderr unless
    logging takes them over: a token in either must be redacted like any other line."""
    import subprocess
    import textwrap

    program = textwrap.dedent(
        f"""
        import warnings
        from config.settings import LogFormat
        from service.logs import configure_logging
        configure_logging("INFO", LogFormat.CONSOLE)
        warnings.warn("retrying /hub?access_token={JWT}")
        raise RuntimeError("failed: /hub?id=secret-connection-token&access_token={JWT}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    written = done.stdout + done.stderr
    assert done.returncode == 1, written
    assert "process.uncaught_exception" in written, written
    assert "RuntimeError" in written, written
    assert "retrying /hub?access_token=***" in written, written
    assert "eyJ" not in written, written
    assert "secret-connection-token" not in written, written


def test_a_call_below_the_level_runs_no_processor() -> None:
    """Several ``connection.*`` lines at INFO per connection under ``LOG_LEVEL=WARNING``: each used to
    copy the context and enter the processor chain before being dropped (~2 µs)."""
    from service.logs import LevelCheckedLogger

    seen: list[str] = []

    def record(_logger: object, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        seen.append(method)
        raise structlog.DropEvent

    stdlib = logging.getLogger("tests.level_checked")
    stdlib.setLevel(logging.WARNING)
    log = structlog.wrap_logger(stdlib, processors=[record], wrapper_class=LevelCheckedLogger)
    log.debug("connection.negotiated")
    log.info("connection.closed", connectionId="abc")
    log.warning("connection.slow_client")
    assert seen == ["warning"]
    stdlib.setLevel(logging.DEBUG)
    log.debug("connection.negotiated")
    log.info("connection.closed")
    assert seen == ["warning", "debug", "info"]
