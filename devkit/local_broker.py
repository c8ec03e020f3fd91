"""A private ``rabbitmq-server`` node of our own: spare ports, own data, logs and Erlang cookie.

Used by ``make run`` (a local broker under ``.local/rabbitmq`` when none is running) and by the tests
that kill and restart a broker. Rule: it never touches a broker it did not start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["PrivateBroker", "free_port", "port_open", "rabbitmq_scripts_dir"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmq_scripts_dir() -> Path:
    """Directory holding ``rabbitmq-server`` and ``rabbitmqctl``.

    Debian's ``/usr/sbin`` wrappers re-run the scripts as the ``rabbitmq`` user when called by root,
    which loses our private HOME (Erlang cookie) and cannot write our temp dirs — so prefer the real
    scripts in ``/usr/lib/rabbitmq/bin``. ``RABBITMQ_SCRIPTS_DIR`` overrides.
    """
    explicit = os.environ.get("RABBITMQ_SCRIPTS_DIR")
    if explicit:
        return Path(explicit)
    debian = Path("/usr/lib/rabbitmq/bin")
    if (debian / "rabbitmq-server").is_file():
        return debian
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise FileNotFoundError(
            "rabbitmq-server not found (install rabbitmq-server or set RABBITMQ_SCRIPTS_DIR)"
        )
    return Path(found).resolve().parent


class PrivateBroker:
    """One RabbitMQ node owned by this process (a test run, or ``make run``).

    Methods are blocking; call them via ``asyncio.to_thread`` from async code.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        boot_timeout: float = 90.0,
        port: int | None = None,
        node: str | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.boot_timeout = boot_timeout
        self.scripts = rabbitmq_scripts_dir()
        self.node = node or f"rt-test-{uuid.uuid4().hex[:10]}@localhost"
        self.port = port or free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._prepare()

    def _prepare(self) -> None:
        home = self.base_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():  # a persistent node (make run) keeps its cookie across runs
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.base_dir / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart, keeping its data) and return once it accepts AMQP connections."""
        if self.running:
            return
        self._log_file = (self.base_dir / "server.out").open("ab")
        self._process = subprocess.Popen(
            [str(self.scripts / "rabbitmq-server")],
            env=self.env,
            cwd=self.base_dir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so kill() reaches beam and its children
        )
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"private RabbitMQ node exited during boot:\n{self.log_tail()}")
            if port_open(self.port):
                self.rabbitmqctl("await_startup", "--timeout", "60")
                return
            time.sleep(0.1)  # polling a process we do not control: there is no event to await
        self.kill()
        raise TimeoutError(f"private RabbitMQ node not up after {self.boot_timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (``rabbitmqctl stop``); SIGKILL if that does not finish."""
        if not self.running:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.rabbitmqctl("stop", timeout=timeout)
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL the whole node (no goodbye to clients): a crash or power loss."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        self._reap(30.0)

    def close_all_connections(self, reason: str = "test: close_all_connections") -> None:
        self.rabbitmqctl("close_all_connections", reason)

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout.decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        out = self.base_dir / "server.out"
        if not out.is_file():
            return "(no output)"
        return "\n".join(out.read_text(errors="replace").splitlines()[-lines:])

    def teardown(self) -> None:
        try:
            self.stop(timeout=20.0)
        finally:
            self.kill()
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _reap(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # Children (epmd is shared and not ours; erl_child_setup, inet_gethost are) die with beam.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
