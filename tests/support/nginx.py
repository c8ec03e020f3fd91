"""Debian's nginx with the project's ``config/nginx.conf``, for tests: syntax check and a live proxy.

The checked-in file names the compose services (``realtime-1:5004``...), which do not resolve
outside Docker, and listens on 8080. ``render_nginx_conf`` swaps only those for local addresses and
points nginx's pid and temporary files into a test directory (so it runs without root); every other
directive — stickiness, upgrade headers, buffering, timeouts — is tested exactly as shipped.

A missing nginx fails under ``CI=true`` and skips elsewhere (``tests.support.tools.require_tool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.support.tools import require_tool

__all__ = ["NGINX_CONF", "nginx_binary", "nginx_test", "render_nginx_conf", "running_nginx"]

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "config" / "nginx.conf"
_UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)realtime-\d+:5004(\s[^;]*)?;", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*listen\s+)8080;", re.MULTILINE)


def nginx_binary() -> str:
    return require_tool("nginx", "nginx", "/usr/sbin/nginx")


def render_nginx_conf(directory: Path, upstreams: Sequence[str], *, listen_port: int = 8080) -> Path:
    """Write ``config/nginx.conf`` to ``directory`` with local upstreams and port; return its path."""
    text = NGINX_CONF.read_text()
    servers = _UPSTREAM_SERVER.findall(text)
    if len(servers) != len(upstreams):
        raise AssertionError(
            f"nginx.conf has {len(servers)} upstream servers, the test gives {len(upstreams)}"
        )
    replacements = iter(upstreams)
    text = _UPSTREAM_SERVER.sub(lambda m: f"{m.group(1)}{next(replacements)}{m.group(2) or ''};", text)
    text, listens = _LISTEN.subn(lambda m: f"{m.group(1)}127.0.0.1:{listen_port};", text)
    if listens != 1:
        raise AssertionError("nginx.conf must have exactly one `listen 8080;`")
    temp = directory / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", f"http {{\n{paths}", 1)
    conf = directory / "nginx.conf"
    conf.write_text(text)
    return conf


def _command(nginx: str, conf: Path, *extra: str, directives: str = "") -> list[str]:
    # nginx reads a single -g: every global directive the test adds goes into it.
    directory = conf.parent
    global_directives = f"pid {directory}/nginx.pid; {directives}".strip()
    return [nginx, "-p", str(directory), "-c", str(conf), "-e", "stderr", "-g", global_directives, *extra]


def nginx_test(directory: Path, upstreams: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the rendered configuration."""
    conf = render_nginx_conf(directory, upstreams)
    return subprocess.run(
        _command(nginx_binary(), conf, "-t"), capture_output=True, text=True, timeout=30, check=False
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_nginx(directory: Path, upstreams: Sequence[str]) -> AsyncIterator[str]:
    """Run nginx in the foreground in front of ``upstreams``; yields its base URL."""
    nginx = nginx_binary()
    port = _free_port()
    conf = render_nginx_conf(directory, upstreams, listen_port=port)
    log_path = directory / "nginx.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *_command(nginx, conf, directives="daemon off;"), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        for _ in range(200):
            if process.returncode is not None:
                raise AssertionError(f"nginx exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.025)
                continue
            writer.close()
            await writer.wait_closed()
            break
        else:
            raise AssertionError(f"nginx did not listen on {port}:\n{log_path.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: fast shutdown; ends the proxied long polls and streams
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
