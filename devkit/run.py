"""``make run``: the service on this machine, in development auth mode, with a broker, ready to try.

Settings come from the environment, then the env file (``CONFIG_FILE`` or ``config/local.env``), as
for the service itself.

1. A broker: ``RABBITMQ_URL`` if set; else one on 127.0.0.1:5672; else a private ``rabbitmq-server``
   node under ``.local/rabbitmq`` (port 5673, data kept between runs, stopped when this exits).
2. Tokens from the development key in ``.dev/`` (the service uses the same key), printed with the
   console URL and the commands that publish events.
3. ``python -m service`` in the foreground with ``AUTH_DEV_MODE=true``; Ctrl-C stops everything.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from config.settings import LogFormat, env_file_values
from devkit.local_broker import PrivateBroker, port_open
from service.auth import DevIssuer
from service.logs import configure_logging

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
LOCAL_NODE_PORT = 5673
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"  # the publisher's default too
# The contractor the printed token is for, fixed so that the README's publish command reaches it.
DEV_CONTRACTOR_ID = "3b241101-e2bb-4255-8caf-4136c566a962"


@functools.cache
def _file_values() -> dict[str, str]:
    return env_file_values()  # read once: every setting below asks


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or _file_values().get(name) or default


def _say(text: str = "") -> None:
    print(text, flush=True)


def _broker() -> tuple[str, PrivateBroker | None]:
    explicit = _setting("RABBITMQ_URL", "")
    if explicit:
        parts = urlsplit(explicit)
        if not port_open(parts.port or 5672, parts.hostname or "127.0.0.1"):
            sys.exit(f"RABBITMQ_URL={explicit} does not answer; start that broker or unset RABBITMQ_URL")
        return explicit, None
    if port_open(5672):
        return DEFAULT_BROKER, None
    try:
        node = PrivateBroker(
            ROOT / ".local" / "rabbitmq", port=LOCAL_NODE_PORT, node="realtime-dev@localhost"
        )
    except FileNotFoundError:
        sys.exit(
            "No RabbitMQ: nothing listens on 127.0.0.1:5672 and rabbitmq-server is not installed.\n"
            "Install it (apt-get install rabbitmq-server), set RABBITMQ_URL, or use `docker compose up`."
        )
    _say(f"Starting a private RabbitMQ node on 127.0.0.1:{LOCAL_NODE_PORT} (data in .local/rabbitmq) …")
    node.start()
    return node.url, node


def main() -> int:
    port = _setting("HTTP_PORT", "5004")
    key_dir = Path(_setting("AUTH_DEV_KEY_DIR", str(ROOT / ".dev")))
    configure_logging("INFO", LogFormat.CONSOLE)  # this launcher's own log lines, on stderr
    url, node = _broker()
    issuer = DevIssuer(key_dir)
    contractor_id = DEV_CONTRACTOR_ID
    tokens = {
        "dispatcher (north-america)": issuer.mint(
            subject="dev-dispatcher", roles=["Dispatcher"], regions=["north-america"], ttl_seconds=8 * 3600
        ),
        f"contractor {contractor_id}": issuer.mint(
            subject="dev-contractor", roles=["Contractor"], contractor_id=contractor_id, ttl_seconds=8 * 3600
        ),
        "admin": issuer.mint(subject="dev-admin", roles=["Admin"], ttl_seconds=8 * 3600),
    }
    base = f"http://localhost:{port}"
    _say()
    _say(f"  Dispatcher console  {base}/console/")
    _say(f"  Hub                 {base}/hub/recommendations   (metrics: {base}/metrics)")
    _say(f"  Broker              {url.split('@')[-1]}")
    _say()
    for who, token in tokens.items():
        _say(f"  Token, {who}:\n    {token}")
    _say()
    _say("  Publish events from another terminal:")
    broker_env = f"RABBITMQ_URL={url} " if url != DEFAULT_BROKER else ""
    _say(f"    {broker_env}.venv/bin/python -m publisher recommendation-ready --region north-america")
    _say(
        f"    {broker_env}.venv/bin/python -m publisher job-assigned --region north-america "
        f"--contractor-id {contractor_id}"
    )
    _say()
    env = {
        **os.environ,
        "AUTH_DEV_MODE": "true",
        "AUTH_DEV_KEY_DIR": str(key_dir),
        "RABBITMQ_URL": url,
        "HTTP_PORT": port,
        "LOG_FORMAT": _setting("LOG_FORMAT", "console"),
        "INSTANCE_ID": _setting("INSTANCE_ID", "dev"),
    }
    service = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT)

    def forward(signum: int, _frame: object) -> None:
        service.send_signal(signum)  # the service shuts down gracefully and exits 0

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return service.wait()
    finally:
        if node is not None:
            _say("Stopping the private RabbitMQ node …")
            node.stop()


if __name__ == "__main__":
    raise SystemExit(main())
