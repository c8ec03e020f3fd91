"""The local stack's files fit together: docker-compose.yml, Dockerfile, nginx.conf, RabbitMQ definitions.

No Docker engine is needed: Debian's ``docker-compose`` (1.29) parses, validates and resolves the
file offline (``config``), and Debian's ``nginx -t`` checks ``config/nginx.conf``. A missing tool
fails under ``CI=true`` with the package to install, and skips with that message elsewhere.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import subprocess
import tomllib
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from broker.topology import Topology
from config.settings import Settings
from tests.support.nginx import NGINX_CONF, nginx_test
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEFINITIONS = ROOT / "config" / "rabbitmq-definitions.json"
RABBITMQ_CONF = ROOT / "config" / "rabbitmq.conf"
INSTANCES = ("realtime-1", "realtime-2")
SERVICE_PORT = 5004


def _defaults() -> Settings:
    return Settings(_env_file=None, auth_dev_mode=True)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """``docker-compose config``: the file validated, anchors merged, paths resolved."""
    binary = require_tool("docker-compose", "docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target → source of every volume (``source:target[:mode]`` or long syntax)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = str(volume["source"])
        else:
            source, target, *_ = volume.split(":")
            mounts[target] = source
    return mounts


def _published(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        ports.add(int(port["published"]) if isinstance(port, dict) else int(str(port).split(":")[0]))
    return ports


@pytest.mark.tools
def test_the_stack_has_its_four_services_each_health_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"rabbitmq", *INSTANCES, "nginx"}
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test") or [""]
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    for name in INSTANCES:
        assert any("/healthz" in part for part in services[name]["healthcheck"]["test"]), name


@pytest.mark.tools
def test_two_service_instances_share_a_dev_key_but_not_a_queue(compose: dict[str, Any]) -> None:
    services = compose["services"]
    environments = [_environment(services[name]) for name in INSTANCES]
    assert len({env["INSTANCE_ID"] for env in environments}) == 2  # one queue each
    key_dirs = set()
    for name, env in zip(INSTANCES, environments, strict=True):
        service = services[name]
        assert env["AUTH_DEV_MODE"] == "true"
        key_dir = env["AUTH_DEV_KEY_DIR"]
        key_dirs.add(_mounts(service)[key_dir])  # the key directory is a volume...
        assert Path(service["build"]["context"]) == ROOT
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert urlsplit(env["RABBITMQ_URL"]).hostname == "rabbitmq"
        assert "http://localhost:8080" in env["CORS_ORIGINS"].split(",")
        # Every value is one the service accepts (a ValidationError otherwise).
        Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    (key_volume,) = key_dirs  # ...and the same one for both
    assert key_volume in compose["volumes"]


@pytest.mark.tools
def test_nginx_fronts_both_instances_with_the_checked_in_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert Path(_mounts(nginx)["/etc/nginx/nginx.conf"]) == NGINX_CONF
    assert _published(nginx) == {8080}
    for name in INSTANCES:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"
    # The instances believe X-Forwarded-For from nginx's fixed address, and from nothing else.
    address = nginx["networks"]["default"]["ipv4_address"]
    (subnet,) = (pool["subnet"] for pool in compose["networks"]["default"]["ipam"]["config"])
    assert ip_address(address) in ip_network(subnet)
    for name in INSTANCES:
        assert _environment(compose["services"][name])["HTTP_TRUSTED_PROXIES"] == address
        assert not _published(compose["services"][name])  # reachable only through nginx

    conf = NGINX_CONF.read_text()
    upstream_servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, re.MULTILINE)
    assert upstream_servers == [f"{name}:{SERVICE_PORT}" for name in INSTANCES]
    assert re.search(r"^\s*hash \$remote_addr consistent;", conf, re.MULTILINE)  # sticky
    assert re.search(r"^\s*listen 8080;", conf, re.MULTILINE)
    for directive in (
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Host $http_host;",  # with the port: the service's same-origin check needs it
        "proxy_buffering off;",
    ):
        assert directive in conf, directive
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))  # type: ignore[union-attr]
    assert read_timeout > _defaults().hub_long_polling_timeout


@pytest.mark.tools
def test_nginx_conf_syntax(tmp_path: Path) -> None:
    result = nginx_test(tmp_path, [f"127.0.0.1:{port}" for port in (5004, 5005)])
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.tools
def test_rabbitmq_loads_the_broker_contract(compose: dict[str, Any]) -> None:
    rabbitmq = compose["services"]["rabbitmq"]
    assert "management" in rabbitmq["image"]
    assert {15672, 5672} <= _published(rabbitmq)
    mounts = _mounts(rabbitmq)
    assert Path(mounts["/etc/rabbitmq/rabbitmq.conf"]) == RABBITMQ_CONF
    rabbitmq_conf = RABBITMQ_CONF.read_text()
    (definitions_path,) = re.findall(r"^load_definitions\s*=\s*(\S+)", rabbitmq_conf, re.MULTILINE)
    assert Path(mounts[definitions_path]) == DEFINITIONS

    definitions = json.loads(DEFINITIONS.read_text())
    topology = Topology.from_settings(_defaults())
    exchanges = {e["name"]: e for e in definitions["exchanges"]}

    def shape(name: str) -> tuple[str, bool, str]:
        return exchanges[name]["type"], exchanges[name]["durable"], exchanges[name]["vhost"]

    for name in topology.event_exchanges:
        assert shape(name) == ("topic", True, "/")
    assert shape(topology.dead_letter_exchange) == ("fanout", True, "/")
    queues = {q["name"]: q for q in definitions["queues"]}
    assert set(queues) == {topology.dead_letter_queue, topology.stream}
    # Exactly what broker/topology.py declares, or its declaration fails with PRECONDITION_FAILED.
    for name, arguments in (
        (topology.dead_letter_queue, topology.dead_letter_queue_arguments()),
        (topology.stream, topology.stream_arguments()),
    ):
        assert (queues[name]["durable"], queues[name]["auto_delete"]) == (True, False)
        assert queues[name]["arguments"] == arguments
    bindings = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in definitions["bindings"]
    }
    assert bindings == {
        (topology.dead_letter_exchange, topology.dead_letter_queue, "queue", ""),
        *((exchange, topology.stream, "queue", "#") for exchange in topology.event_exchanges),
    }
    assert [v["name"] for v in definitions["vhosts"]] == ["/"]


@pytest.mark.tools
def test_the_service_user_logs_in_with_the_compose_password(compose: dict[str, Any]) -> None:
    """The definitions store only a salted hash; it must match the dev password the instances use."""
    url = urlsplit(_environment(compose["services"]["realtime-1"])["RABBITMQ_URL"])
    assert url.password is not None
    assert url.password.endswith("-dev-only")  # marked as a dev value
    definitions = json.loads(DEFINITIONS.read_text())
    users = {u["name"]: u for u in definitions["users"]}
    user = users[url.username or ""]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    decoded = base64.b64decode(user["password_hash"])
    salt, digest = decoded[:4], decoded[4:]
    assert hashlib.sha256(salt + url.password.encode()).digest() == digest
    (permission,) = [p for p in definitions["permissions"] if p["user"] == url.username]
    assert permission["vhost"] == (url.path.removeprefix("/") or "/")


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS runtime$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.MULTILINE)
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r"^EXPOSE 5004$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["smartscheduler-realtime"\]$', dockerfile, re.MULTILINE)

    # Every COPY from the build context names something the .dockerignore allow-list lets through.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert source in allowed, f"COPY {source}: excluded by .dockerignore"
        assert (ROOT / source).exists(), source

    # The image holds every package the wheel ships, and every first-party package those import
    # (a package left out builds fine and passes `--help`, then `serve` dies on its first import).
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = {pattern.removesuffix("*") for pattern in setuptools["packages"]["find"]["include"]}
    assert packaged <= set(sources), f"packaged but not copied into the image: {packaged - set(sources)}"
    imported = {
        name
        for package in packaged
        for module in (ROOT / package).rglob("*.py")
        for name in _top_level_imports(module)
        if (ROOT / name / "__init__.py").exists()
    }
    assert imported <= set(sources), f"imported but not copied into the image: {imported - set(sources)}"


def _top_level_imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names
