"""Opening the AMQP connection: URL parameters, jittered robust reconnects, a retried first connect.

aio-pika's ``RobustConnection`` reconnects by itself once it has connected, but at a fixed interval
(replicas would hammer a recovering broker in lockstep) and its *first* connect fails fast. So:

- the first connect is retried here with tenacity — ``wait_random_exponential`` (jitter), only on
  transient errors, each window bounded by ``BROKER_CONNECT_TIMEOUT_SECONDS``, every retry logged;
  the caller runs it in the background and keeps calling it after a window ends, so the hub keeps
  serving while the broker is down;
- later reconnects are aio-pika's, with the pause jittered by ``JitteredRobustConnection``;
- the AMQP heartbeat is set (default 20 s) so a dead peer is noticed rather than after the kernel's
  TCP timeout (~11 min; https://www.rabbitmq.com/docs/heartbeats). aiormq itself closes a silent
  link only after (heartbeat + 1) × 3 seconds; ``broker.heartbeat`` and the link's heartbeat watch
  bring that down to 2 × the heartbeat (the consumer's link closes the connection itself).

Rule: errors that retrying cannot fix (credentials, vhost, a port that does not speak AMQP)
become ``BrokerConfigurationError`` at once; everything else is retried.
"""

from __future__ import annotations

import random
from typing import Any, Final

import aiormq.exceptions
import structlog
from aio_pika import RobustConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)
from yarl import URL

from broker.errors import BrokerConfigurationError

__all__ = [
    "FATAL_CONNECT_ERRORS",
    "JitteredRobustConnection",
    "amqp_url",
    "connect_with_retry",
    "is_fatal_connect_error",
    "redact",
]

log = structlog.get_logger(__name__)

FATAL_CONNECT_ERRORS: Final = (
    aiormq.exceptions.ProbableAuthenticationError,  # wrong user or password
    aiormq.exceptions.AuthenticationError,  # no common SASL mechanism
    aiormq.exceptions.IncompatibleProtocolError,
    aiormq.exceptions.ConnectionNotAllowed,
)


def is_fatal_connect_error(error: BaseException) -> bool:
    """Whether retrying ``error`` is pointless: the broker rejects this configuration."""
    if isinstance(error, FATAL_CONNECT_ERRORS):
        return True
    # RabbitMQ answers Connection.Open for a missing (or forbidden) vhost with Connection.Close
    # (530 NOT_ALLOWED); aiormq 7 reports that as an InvalidFrameError whose text is all we get.
    text = str(error)
    return (
        isinstance(error, aiormq.exceptions.InvalidFrameError)
        and "Connection.OpenOk" in text
        and "Connection.Close" in text
    )


def amqp_url(
    url: str, *, heartbeat_seconds: int, connection_name: str, reconnect_interval_seconds: float
) -> URL:
    """The broker URL with our connection parameters; values already in the URL win (operators tune them)."""
    parsed = URL(url)
    defaults = {
        "heartbeat": str(heartbeat_seconds),
        "name": connection_name,
        "reconnect_interval": repr(float(reconnect_interval_seconds)),
    }
    missing = {key: value for key, value in defaults.items() if key not in parsed.query}
    return parsed.update_query(missing) if missing else parsed


def redact(url: URL | str) -> str:
    """The URL without its password, for logs."""
    parsed = URL(str(url))
    return str(parsed.with_password("***") if parsed.password else parsed)


class JitteredRobustConnection(RobustConnection):
    """A ``RobustConnection`` whose pause between reconnect attempts is randomised (0.5x to 1.5x)."""

    def __init__(self, url: URL, **kwargs: Any) -> None:
        self._base_reconnect_interval = 5.0
        super().__init__(url, **kwargs)

    # aio-pika reads ``self.reconnect_interval`` before every reconnect sleep and assigns it in
    # ``__init__``; a property with a setter gives each sleep its own jitter.
    @property
    def reconnect_interval(self) -> float:
        return self._base_reconnect_interval * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._base_reconnect_interval = float(value)


def _transient(error: BaseException) -> bool:
    if is_fatal_connect_error(error):
        return False
    return isinstance(error, aiormq.exceptions.AMQPError | OSError | TimeoutError)


def _describe(error: BaseException) -> str:
    if isinstance(error, aiormq.exceptions.InvalidFrameError):
        return "the broker refused to open the vhost (missing, or no access for this user)"
    return str(error)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "broker.connect_failed",
        attempt=state.attempt_number,
        retryInSeconds=round(state.upcoming_sleep, 2),
        error=f"{type(error).__name__}: {error}",
    )


async def connect_with_retry(
    url: URL,
    *,
    window_seconds: float,
    attempt_timeout_seconds: float,
    max_backoff_seconds: float = 10.0,
) -> JitteredRobustConnection:
    """Connect, retrying transient failures for up to ``window_seconds``; then re-raise the last error.

    Raises ``BrokerConfigurationError`` at once for errors retrying cannot fix.
    """
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(window_seconds),
        wait=wait_random_exponential(multiplier=0.25, max=max_backoff_seconds),
        retry=retry_if_exception(_transient),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            connection = JitteredRobustConnection(url)
            try:
                await connection.connect(timeout=attempt_timeout_seconds)
            except BaseException as error:
                await connection.close()
                if is_fatal_connect_error(error):
                    raise BrokerConfigurationError(
                        f"RabbitMQ at {redact(url)} refused the connection ({type(error).__name__}: "
                        f"{_describe(error)}); check the user, password and vhost in RABBITMQ_URL"
                    ) from None
                raise
            return connection
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
