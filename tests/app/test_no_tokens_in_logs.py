"""No token in anything the service process writes, whatever it is sent (issue 11, C22).

The real process (``python -m service``, development auth, ``LOG_LEVEL=DEBUG``) takes a battery of
good and malformed requests on every transport — tokens in the query and in ``Authorization``, an
over-long request line and an over-long header that aiohttp itself logs at ERROR with their first
bytes, a bad method, broken percent-encoding, unknown connection tokens, expired and forged JWTs —
then everything it wrote to stdout and stderr is searched for the secrets it was given.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.auth import DevIssuer
from tests.support.instances import free_port, wait_healthy
from tests.support.tokens import forge

ROOT = Path(__file__).resolve().parents[2]
HUB = "/hub/recommendations"
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
LINE_LIMIT = 8190  # aiohttp's max_line_size / max_field_size


@dataclass
class Secrets:
    """Every value that must never be written, and the requests that carried them."""

    values: list[str] = field(default_factory=list)

    def add(self, value: str) -> str:
        self.values.append(value)
        return value


@asynccontextmanager
async def _service(tmp_path: Path, key_dir: Path, log_format: str) -> AsyncIterator[str]:
    """The service process; yields its base URL. Its stdout and stderr go to files (no pipe to fill)."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env = {
        **keep,
        "PYTHONPATH": str(ROOT),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "AUTH_DEV_MODE": "true",
        "AUTH_DEV_KEY_DIR": str(key_dir),
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/",  # no broker: its client logs errors too
        "INSTANCE_ID": f"logs-test-{port}",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": log_format,
    }
    with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, cwd=tmp_path, stdout=out, stderr=err
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, process)
        yield base
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _raw(base: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would send; return the whole answer (the server closes after it)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def _negotiate(session: aiohttp.ClientSession, base: str, token: str, *, in_query: bool) -> str:
    params = {"negotiateVersion": "1", **({"access_token": token} if in_query else {})}
    headers = {} if in_query else {"Authorization": f"Bearer {token}"}
    async with session.post(f"{base}{HUB}/negotiate", params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    connection_token: str = body["connectionToken"]
    return connection_token


async def _websocket(session: aiohttp.ClientSession, base: str, token: str, secrets: Secrets) -> None:
    connection = secrets.add(await _negotiate(session, base, token, in_query=True))
    async with session.ws_connect(f"{base}{HUB}", params={"id": connection, "access_token": token}) as ws:
        await ws.send_str(HANDSHAKE.decode())
        assert (await ws.receive_str(timeout=10)).startswith("{}")
        invocation = (
            b'{"type":1,"invocationId":"1","target":"JoinDispatchGroup","arguments":["north-america"]}\x1e'
        )
        await ws.send_str(invocation.decode())
        assert '"type":3' in await ws.receive_str(timeout=10)
    # skipNegotiation, token in the header
    async with session.ws_connect(f"{base}{HUB}", headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send_str(HANDSHAKE.decode())
        assert (await ws.receive_str(timeout=10)).startswith("{}")


async def _server_sent_events(
    session: aiohttp.ClientSession, base: str, token: str, secrets: Secrets
) -> None:
    connection = secrets.add(await _negotiate(session, base, token, in_query=False))
    query = {"id": connection, "access_token": token}
    async with session.get(f"{base}{HUB}", params=query, headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status == 200
        async with session.post(f"{base}{HUB}", params=query, data=HANDSHAKE) as sent:
            assert sent.status == 200
        received = b""
        while b"{}" not in received:
            received += await asyncio.wait_for(stream.content.readany(), 10)


async def _long_polling(session: aiohttp.ClientSession, base: str, token: str, secrets: Secrets) -> None:
    connection = secrets.add(await _negotiate(session, base, token, in_query=True))
    query = {"id": connection, "access_token": token}
    async with session.get(f"{base}{HUB}", params=query) as first:
        assert first.status == 200
    async with session.post(f"{base}{HUB}", params=query, data=HANDSHAKE) as sent:
        assert sent.status == 200
    async with session.get(f"{base}{HUB}", params=query) as poll:
        assert (await poll.read()).startswith(b"{}")
    async with session.delete(f"{base}{HUB}", params=query) as ended:
        assert ended.status == 202


async def _refusals(
    session: aiohttp.ClientSession, base: str, tokens: dict[str, str], secrets: Secrets
) -> None:
    """Requests the endpoint refuses: unknown connection tokens, bad tokens in both places."""
    good = tokens["good"]
    unknown = secrets.add("UnknownConnectionTokenSecret42")
    for method in ("GET", "POST", "DELETE"):
        async with session.request(method, f"{base}{HUB}", params={"id": unknown, "access_token": good}) as r:
            assert r.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect(f"{base}{HUB}", params={"id": unknown, "access_token": good})
    for name in ("expired", "forged", "garbage", "truncated"):
        bad = tokens[name]
        async with session.post(f"{base}{HUB}/negotiate", params={"access_token": bad}) as r:
            assert r.status == 401, name
        async with session.post(f"{base}{HUB}/negotiate", headers={"Authorization": f"Bearer {bad}"}) as r:
            assert r.status == 401, name
        async with session.get(f"{base}{HUB}", params={"id": unknown, "access_token": bad}) as r:
            assert r.status == 401, name
    async with session.get(f"{base}{HUB}/negotiate", params={"access_token": good}) as r:
        assert r.status == 405


async def _malformed(base: str, token: str, connection: str) -> None:
    """What aiohttp's parser refuses and logs itself, with the first bytes of the offending line."""
    host = base.removeprefix("http://")
    secret_query = f"id={connection}&access_token={token}"
    over = "A" * (LINE_LIMIT + 100)

    def request(line: str, *headers: str) -> bytes:
        return "\r\n".join([line, f"Host: {host}", *headers, "", ""]).encode()

    answers = [
        await _raw(base, request(f"GET {HUB}?{secret_query}{over} HTTP/1.1")),  # over-long request line
        await _raw(base, request(f"GET /{token}{over} HTTP/1.1")),  # the token first, with no key
        await _raw(base, request(f"GET {HUB} HTTP/1.1", f"Authorization: Bearer {token}{over}")),
        await _raw(base, request(f"GET {HUB} HTTP/1.1", f"Authorization: bearer  {token}{over}")),
        await _raw(base, request(f"GET {HUB} HTTP/1.1", f"Referer: http://x/?{secret_query}{over}")),
        await _raw(base, request(f"G@T {HUB}?{secret_query} HTTP/1.1")),  # bad method
        await _raw(base, request(f"GET {HUB}?{secret_query} HTTP/9.9")),  # bad version
        await _raw(base, request(f"GET {HUB}?{secret_query}\x01 HTTP/1.1")),  # a control character
        await _raw(  # broken percent-encoding
            base,
            request(
                f"GET {HUB}?id=%ZZ{connection}%&access_token={token}%E0%A4 HTTP/1.1", "Connection: close"
            ),
        ),
        await _raw(  # percent-encoded keys, which aiohttp decodes (so the request is served)
            base, request(f"GET {HUB}?%69d={connection}&access%5Ftoken={token} HTTP/1.1", "Connection: close")
        ),
    ]
    # aiohttp answers 400 to what it cannot parse; the broken token is refused; the last is served.
    assert [answer[:12] for answer in answers] == [b"HTTP/1.0 400"] * 8 + [b"HTTP/1.1 401", b"HTTP/1.1 200"]


def _around(line: bytes, needles: list[bytes]) -> bytes:
    """The start of a line and the bytes around its first secret (to see who wrote it)."""
    at = min(i for i in (line.find(n) for n in needles) if i >= 0)
    return line[:100] + b" ... " + line[max(at - 100, 0) : at + 20]


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_nothing_the_service_writes_contains_a_token(tmp_path: Path, log_format: str) -> None:
    key_dir = tmp_path / "keys"
    issuer = DevIssuer(key_dir)  # creates the key the service will load
    secrets = Secrets()

    def mint(**kwargs: Any) -> str:
        return issuer.mint(
            subject="dev-dispatcher-logs", roles=["Dispatcher"], regions=["north-america"], **kwargs
        )

    good = secrets.add(mint())
    expired = secrets.add(
        DevIssuer(key_dir, clock=lambda: time.time() - 7200).mint(
            subject="dev-dispatcher-logs", roles=["Dispatcher"], regions=["north-america"]
        )
    )
    forged = secrets.add(forge({"alg": "RS256", "kid": issuer.kid, "typ": "JWT"}, {"sub": "x"}, b"forged"))
    tokens = {
        "good": good,
        "expired": expired,
        "forged": forged,
        "garbage": secrets.add("NotAJwtButASecretValue1234567890"),
        "truncated": good[:60],  # a JWT cut short is still a secret
    }
    async with _service(tmp_path, key_dir, log_format) as base, aiohttp.ClientSession() as session:
        await _websocket(session, base, good, secrets)
        await _server_sent_events(session, base, good, secrets)
        await _long_polling(session, base, good, secrets)
        await _refusals(session, base, tokens, secrets)
        live = secrets.add(await _negotiate(session, base, good, in_query=False))
        await _malformed(base, good, live)
        async with session.get(
            f"{base}/dev/token", params={"role": "dispatcher", "region": "north-america"}
        ) as minted:
            secrets.add((await minted.json())["token"])

    written = (tmp_path / "stdout").read_bytes() + (tmp_path / "stderr").read_bytes()
    # The battery reached the loggers that used to leak: aiohttp's own errors, the access log.
    assert b"Got more than 8190 bytes" in written
    assert b"Invalid method" in written
    assert b"http.access" in written
    assert b"service.stopped" in written
    # A secret, or its first characters where aiohttp cut a line short, or any JWT (even the start of
    # one: its base64url header begins with "eyJ").
    needles = [value[:16].encode() for value in secrets.values] + [b"eyJ"]
    leaks = [_around(line, needles) for line in written.splitlines() if any(n in line for n in needles)]
    assert leaks == [], "lines with a secret:\n" + "\n".join(map(repr, leaks))
