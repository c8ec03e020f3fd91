"""The one place that reads configuration.

Every setting comes from an environment variable of the same name in upper case (``HTTP_PORT``,
``AUTH_ISSUER``, …). An optional env file supplies defaults underneath the real environment:
``CONFIG_FILE`` if set, else ``config/local.env`` when it exists (git-ignored, for a developer's own
overrides). Nothing else in the project touches ``os.environ`` for configuration.

Defaults follow the ASP.NET Core SignalR server where there is one to follow (see
``HubOptionsSetup.cs``, ``HttpConnectionDispatcherOptions.cs``), so official clients behave here as
they do against .NET.
"""

from __future__ import annotations

import os
import re
import socket
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Final

from dotenv import dotenv_values
from pydantic import AnyUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ConfigurationError", "LogFormat", "QueueType", "Settings", "Transport", "load_settings"]


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class QueueType(StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"


class Transport(StrEnum):
    """Transport names exactly as the negotiate response spells them."""

    WEBSOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


class ConfigurationError(Exception):
    """A setting is missing or malformed; ``str()`` is one line that names the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _default_config_file() -> tuple[str, ...]:
    explicit = os.environ.get("CONFIG_FILE")
    if explicit:
        return (explicit,)
    local = Path("config/local.env")
    return (str(local),) if local.is_file() else ()


def env_file_values() -> dict[str, str]:
    """The env file's settings (``CONFIG_FILE`` or ``config/local.env``), for a launcher that picks
    values before the service reads its ``Settings`` (``make run``), so that the file counts there too."""
    values: dict[str, str] = {}
    for path in _default_config_file():
        values.update({k.upper(): v for k, v in dotenv_values(path).items() if v is not None})
    return values


# The official clients' defaults (HubConnectionBuilder / HttpConnection in every client).
_CLIENT_SERVER_TIMEOUT: Final = 30.0  # serverTimeoutInMilliseconds
_CLIENT_KEEP_ALIVE: Final = 15.0  # keepAliveIntervalInMilliseconds
_CLIENT_POLL_TIMEOUT: Final = 100.0  # the JS client's HTTP request timeout, which a poll is


class Settings(BaseSettings):
    """Typed configuration of one service instance."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- HTTP ---------------------------------------------------------------------------------
    http_host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    http_port: int = Field(default=5004, ge=0, le=65535)
    hub_path: str = "/hub/recommendations"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["http://localhost:3000"])
    # Proxies whose X-Forwarded-For the logs believe (comma-separated addresses or networks).
    http_trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)

    # --- Logging ------------------------------------------------------------------------------
    log_level: str = "INFO"
    # One INFO line per delivered event (event.delivered); off keeps INFO's other lines.
    log_event_deliveries: bool = True
    log_format: LogFormat = LogFormat.JSON
    # Lines waiting for the log writer thread (service/log_writer.py); beyond, records are dropped and
    # counted, never waited for: a stderr nobody drains must not stall the event loop.
    log_buffer_records: int = Field(default=10_000, ge=1)

    # --- Authentication (AWS Cognito) ---------------------------------------------------------
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    # Negotiate answers with a short ticket valid for that connection's own requests until the token
    # expires (service/auth/tickets.py): the clients send it instead of their 1-4 KiB token, which an
    # open WebSocket would otherwise keep in memory. Off: every request presents the token itself.
    auth_connection_tickets: bool = True
    auth_jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    auth_jwks_fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    auth_claim_groups: str = "cognito:groups"
    auth_claim_region: str = "custom:region"
    auth_claim_contractor_id: str = "custom:contractorId"
    auth_role_dispatcher: str = "Dispatcher"
    auth_role_contractor: str = "Contractor"
    auth_role_admin: str = "Admin"
    # Development auth: the service mints its own keys and tokens. Never on unless asked for.
    auth_dev_mode: bool = False
    auth_dev_key_dir: Path = Path(".dev")

    # --- Hub (defaults from ASP.NET Core HubOptions / HttpConnectionDispatcherOptions) --------
    hub_transports: Annotated[list[Transport], NoDecode] = Field(
        default_factory=lambda: [Transport.WEBSOCKETS, Transport.SERVER_SENT_EVENTS, Transport.LONG_POLLING],
        min_length=1,
    )
    hub_keep_alive_interval: float = Field(default=15.0, gt=0)
    hub_client_timeout_interval: float = Field(default=30.0, gt=0)
    hub_handshake_timeout: float = Field(default=15.0, gt=0)
    hub_disconnect_timeout: float = Field(default=15.0, gt=0)
    hub_long_polling_timeout: float = Field(default=90.0, gt=0)
    hub_transport_send_timeout: float = Field(default=10.0, gt=0)
    hub_max_receive_message_size: int = Field(default=32_768, ge=1024)
    hub_max_buffered_bytes: int = Field(default=131_072, ge=4096)
    # SO_SNDBUF of WebSocket and SSE sockets (the kernel doubles it and stops growing it): what a
    # client that stops reading may still absorb beyond HUB_MAX_BUFFERED_BYTES. 0: the kernel's own.
    hub_socket_send_buffer_bytes: int = Field(default=65_536, ge=0)
    hub_stateful_reconnect: bool = True
    hub_stateful_reconnect_buffer_size: int = Field(default=100_000, ge=1024)
    hub_close_on_authentication_expiration: bool = True
    hub_detailed_errors: bool = False
    hub_websocket_compression: bool = False
    hub_max_connections: int = Field(default=0, ge=0)  # 0: bounded only by the OS file limit
    # Fairness: a connection's inbound records are processed this many at a time, then the loop
    # serves everyone else before the next ones (one socket cannot monopolise the process).
    hub_messages_per_turn: int = Field(default=8, ge=1, le=10_000)
    # Abuse bounds (issue 11), far above what the official clients do: a connection calls a few hub
    # methods on connect (Resume, joins) and now and then after; a user has a few tabs and devices.
    hub_max_invocations_per_second: float = Field(default=20.0, ge=0)  # 0: no limit
    hub_invocation_burst: int = Field(default=100, ge=1)
    hub_max_connections_per_user: int = Field(default=20, ge=0)  # by the token's subject; 0: no limit
    hub_max_negotiates_per_user_per_minute: int = Field(default=60, ge=0)  # new connections; 0: no limit
    # ... of which at most this many at once (a reconnect storm gets them, then one every 60/rate s).
    hub_negotiate_burst: int = Field(default=10, ge=1)

    # --- RabbitMQ -----------------------------------------------------------------------------
    rabbitmq_url: AnyUrl = AnyUrl("amqp://guest:guest@localhost:5672/")
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    recommendations_exchange: str = "recommendations"
    assignments_exchange: str = "assignments"
    dead_letter_exchange: str = "realtime.dead-letter"
    dead_letter_queue: str = "realtime.dead-letter"
    # The shared log: one RabbitMQ stream bound to both exchanges, read by every instance.
    stream_name: str = "realtime.events"
    stream_max_age: str = "1h"
    stream_max_bytes: int = Field(default=2_000_000_000, ge=1_000_000)
    stream_segment_bytes: int = Field(default=100_000_000, ge=100_000)
    # After attaching at an offset, this long without any delivery means the offset lies beyond the
    # end of the stream (it was deleted and recreated): start it afresh.
    stream_attach_timeout_seconds: float = Field(default=10.0, gt=0)
    # Where each instance keeps the last position it delivered (one tiny queue per instance).
    position_queue_prefix: str = "realtime.position."
    queue_type: QueueType = QueueType.CLASSIC
    queue_expires_ms: int = Field(default=3_600_000, ge=60_000)
    prefetch_count: int = Field(default=1000, ge=1, le=5000)
    consume_grace_seconds: float = Field(default=3.0, ge=0)
    # Continuity: what each instance keeps in memory to replay, and how clients resume.
    history_window_seconds: float = Field(default=600.0, gt=0)
    history_max_entries: int = Field(default=200_000, ge=100)
    history_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1_000_000)
    replay_max_events: int = Field(default=1000, ge=1)
    resume_wait_seconds: float = Field(default=5.0, ge=0)
    checkpoint_interval_seconds: float = Field(default=5.0, gt=0)
    dedup_window_seconds: float = Field(default=600.0, ge=0)
    dedup_max_entries: int = Field(default=100_000, ge=0)
    max_event_bytes: int = Field(default=2048, ge=256)
    broker_connect_timeout_seconds: float = Field(default=60.0, gt=0)
    broker_heartbeat_seconds: int = Field(default=20, ge=0, le=600)
    broker_reconnect_interval_seconds: float = Field(default=2.0, gt=0)
    consumer_watchdog_interval_seconds: float = Field(default=5.0, gt=0)

    # --- Process ------------------------------------------------------------------------------
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    # Part of SHUTDOWN_TIMEOUT_SECONDS: after SIGTERM the listener stays open this long at most, so
    # that a long-polling client between two polls can collect its Close (issue 11, B13).
    hub_shutdown_drain_seconds: float = Field(default=5.0, ge=0)
    event_loop_lag_interval_seconds: float = Field(default=0.05, ge=0)  # 0: not sampled
    gc_freeze: bool = True  # service.gc_freeze: keep connections' state out of full GC passes
    # service.gc_probe: a due refreeze's full pass runs first in a forked copy of the process; the
    # service runs it (and stops its loop) only when the copy found garbage worth freeing.
    gc_freeze_probe: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("http_trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin in ("*", "null"):
                raise ValueError(f"{origin!r} cannot be allowed: the SignalR client sends credentials")
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/").lower() for origin in value]

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
            raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("hub_transports", mode="before")
    @classmethod
    def _parse_transports(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("hub_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError("must start with '/' and not end with '/'")
        return value

    @field_validator("auth_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://", "file://")):
            raise ValueError("must be an https://, http:// or file:// URL")
        return value

    @field_validator("stream_max_age")
    @classmethod
    def _check_max_age(cls, value: str) -> str:
        # RabbitMQ's x-max-age: a positive number and one unit, Y M D h m s (compared as a string).
        if not re.fullmatch(r"[1-9][0-9]*[YMDhms]", value):
            raise ValueError("must be a number and one unit of Y, M, D, h, m, s, e.g. 1h or 90m")
        return value

    @model_validator(mode="after")
    def _segments_fit(self) -> Settings:
        # Retention applies to whole segments: a segment larger than the stream would never be deleted.
        if self.stream_segment_bytes > self.stream_max_bytes:
            raise ValueError("STREAM_SEGMENT_BYTES must not exceed STREAM_MAX_BYTES")
        return self

    def doubts(self) -> list[str]:
        """Values valid alone that break the official clients at their defaults (logged at start as
        ``config.doubtful``, not refused: clients configured to match are fine)."""
        found = []
        if self.hub_keep_alive_interval > _CLIENT_SERVER_TIMEOUT / 2:
            found.append(
                f"HUB_KEEP_ALIVE_INTERVAL={self.hub_keep_alive_interval:g}: the official clients close a "
                f"connection that sent nothing for {_CLIENT_SERVER_TIMEOUT:g} s (serverTimeout), so idle "
                f"ones drop; keep it at most half of the clients' serverTimeout"
            )
        if self.hub_client_timeout_interval < 2 * _CLIENT_KEEP_ALIVE:
            found.append(
                f"HUB_CLIENT_TIMEOUT_INTERVAL={self.hub_client_timeout_interval:g}: the official clients "
                f"ping every {_CLIENT_KEEP_ALIVE:g} s (keepAliveInterval), so healthy idle ones are closed; "
                f"keep it at least twice the clients' keepAliveInterval"
            )
        if self.hub_long_polling_timeout >= _CLIENT_POLL_TIMEOUT:
            found.append(
                f"HUB_LONG_POLLING_TIMEOUT={self.hub_long_polling_timeout:g}: the JS client gives up on a "
                f"poll after {_CLIENT_POLL_TIMEOUT:g} s and proxies often sooner (config/nginx.conf: "
                f"120 s); keep it well below both"
            )
        return found

    @model_validator(mode="after")
    def _drain_fits(self) -> Settings:
        # The drain is part of the shutdown bound, and the server needs time left to close sockets.
        if self.hub_shutdown_drain_seconds >= self.shutdown_timeout_seconds:
            raise ValueError("HUB_SHUTDOWN_DRAIN_SECONDS must be less than SHUTDOWN_TIMEOUT_SECONDS")
        return self

    @field_validator("rabbitmq_url")
    @classmethod
    def _check_amqp(cls, value: AnyUrl) -> AnyUrl:
        if value.scheme not in ("amqp", "amqps"):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value

    @model_validator(mode="after")
    def _auth_configured(self) -> Settings:
        if not self.auth_dev_mode:
            for name in ("auth_jwks_url", "auth_issuer", "auth_audience"):
                if not getattr(self, name):
                    raise ValueError(
                        f"{name.upper()} is required (or set AUTH_DEV_MODE=true for local development)"
                    )
        return self

    @property
    def amqp_url(self) -> str:
        return str(self.rabbitmq_url)


def _describe(error: ValidationError) -> str:
    """One line naming the variable, e.g. ``HTTP_PORT: Input should be a valid integer``."""
    first = error.errors()[0]
    location = str(first["loc"][0]).upper() if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    if not location:
        return message
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return f"{location}: {message}{shown}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and the optional env file); raise ``ConfigurationError`` with one line."""
    try:
        return Settings(_env_file=_default_config_file(), **overrides)
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
