"""Structured logging (structlog) for the service and the libraries under it.

JSON lines in production, coloured console lines in development. structlog renders the service's
own events and hands each line to the log writer (``service.log_writer``); the standard library's
loggers (aiohttp, aio-pika, asyncio) go through the one handler ``configure_logging`` installs, which
renders them the same way and queues them to the same writer.

Rule: a token never reaches a log line. The access log redacts ``access_token`` (and the connection
token ``id``) from query strings; and because other code logs what it was sent — aiohttp logs the
start of a request line it could not parse (an over-long line, a bad method) with the token in it —
every formatted line, whatever its logger, passes ``redact`` before it is queued.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from types import TracebackType
from typing import Any, Final

import orjson
import structlog
from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from config.settings import LogFormat
from service.log_writer import BackgroundLogHandler

__all__ = ["RedactingAccessLogger", "configure_logging", "redact", "redact_query"]

_SECRET_QUERY_KEYS = frozenset({"access_token", "id"})
_access = structlog.get_logger("aiohttp.access")

_REDACTED = "***"

# What a secret looks like in a formatted line, whoever wrote it: a key and its value (the secret,
# up to a separator), or a JWT on its own. A value ends at whitespace, ``&``, a quote or a backslash
# (JSON escapes), so a value aiohttp cut short ("eyJhbGc...") is redacted to its end. Keys are the
# ones the endpoint reads, as aiohttp reads them: case-sensitive, percent-decoded.
_VALUE = r"[^\s&'\"\\]*"
# Every branch starts with a literal, so the regex engine jumps from candidate to candidate
# character; the value of a key is the last group that matched.
_NAMED = r"['\"]?\s*[:=]\s*['\"]?"
_SECRET = re.compile(
    # access_token=VALUE, id=VALUE: the query parameters that carry the JWT and the connection token
    # (TransportProtocols.md: the connection token is the ``id`` of every transport request); also
    # "connectionToken": "VALUE" (the negotiate response) and access_token: VALUE (a mapping's repr).
    f"access_token{_NAMED}({_VALUE})"
    f"|connectionToken{_NAMED}({_VALUE})"
    f"|i(?<![A-Za-z0-9_]i)d=({_VALUE})"  # not uuid=, pid=
    # RFC 6750 §2.1: Authorization: Bearer VALUE, wherever it is quoted.
    f"|Bearer\\s+({_VALUE})"
    # A JWT, or the start of one: its header is base64url JSON, so it begins with "eyJ" ('{"').
    r"|eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)*"
)
# Authorization: <any scheme, any case> VALUE (RFC 9110 §11.6.2; schemes are case-insensitive).
_AUTHORIZATION = re.compile(r"(?i)authorization['\"]?\s*[:=]\s*['\"]?[a-z]+\s+(" + _VALUE + ")")


def _spelled(key: str) -> str:
    """``key`` as aiohttp reads it from a query: each character plain or percent-encoded."""
    parts = []
    for char in key:
        code = f"{ord(char):02x}"
        hex_digit = f"[{code[1]}{code[1].upper()}]" if code[1].isalpha() else code[1]  # %5f or %5F
        parts.append(f"(?:{re.escape(char)}|%{code[0]}{hex_digit})")
    return "".join(parts)


_ENCODED_KEY = re.compile(f"(?<![A-Za-z0-9_])(?:{_spelled('access_token')}|{_spelled('id')})=({_VALUE})")


def _redacted(match: re.Match[str]) -> str:
    """The match with its secret part replaced: the value after a key, or all of a JWT."""
    group = match.lastindex
    if group is None:
        return _REDACTED
    return match.string[match.start() : match.start(group)] + _REDACTED


def redact(line: str) -> str:
    """``line`` without tokens: query values of ``access_token``/``id``, ``connectionToken`` values,
    ``Authorization`` credentials and anything shaped like a JWT (whole or cut short) become ``***``."""
    if "%" in line:
        line = _ENCODED_KEY.sub(_redacted, line)
    if "uthorization" in line or "UTHORIZATION" in line:
        line = _AUTHORIZATION.sub(_redacted, line)
    if (
        "id=" in line
        or "eyJ" in line
        or "Bearer" in line
        or "access_token" in line
        or "connectionToken" in line
    ):
        line = _SECRET.sub(_redacted, line)
    return line


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """The handler's formatter: renders as structlog does, then redacts the finished line.

    On the finished line, so that nothing escapes — the message, its arguments, an exception's text and
    traceback, structlog's key-value pairs — and only for lines actually written (after the level
    check): a few substring tests, and a regex pass on the lines that hold one of the keys.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_query(query_string: str) -> str:
    """``a=1&access_token=xyz`` → ``a=1&access_token=***`` (keys compared case-insensitively)."""
    if not query_string:
        return query_string
    parts = []
    for pair in query_string.split("&"):
        key, sep, _ = pair.partition("=")
        parts.append(f"{key}=***" if sep and key.lower() in _SECRET_QUERY_KEYS else pair)
    return "&".join(parts)


class LevelCheckedLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib ``BoundLogger`` copies the context and starts the processor chain before
    ``filter_by_level`` drops a disabled call: ~2 µs for each ``connection.*`` line at INFO under
    ``LOG_LEVEL=WARNING``, several per connection opened and closed (issue 12: 2,600 clients leaving
    at once delay the others' deliveries by their close work). The level is checked first here, as
    ``logging.Logger.isEnabledFor`` does from its cache (~0.05 µs)."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return super().info(event, *args, **kw)


def _json_line(event: dict[str, Any], **dumps_kw: Any) -> str:
    """orjson (a few µs a line against the standard library's ~10); what orjson refuses (a non-string
    key, an integer beyond 64 bits) goes through ``json.dumps`` rather than lose the line."""
    try:
        return orjson.dumps(event, default=dumps_kw.get("default")).decode()
    except TypeError:
        return json.dumps(event, **dumps_kw)


def _skip_record_lookups() -> None:
    """No line shows where it was logged from, or which thread, process or task logged it: don't let
    every ``LogRecord`` look it up (~15 µs a line; the Logging HOWTO's "Optimization" section)."""
    logging._srcfile = None  # documented there: skips sys._getframe()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+ reads it; 3.11 ignores it


class _WriterLogger:
    """The end of structlog's own chain: the rendered line, redacted, goes to the log writer.

    The service's events skip the standard library's ``Logger``, ``LogRecord`` and formatter, which
    cost ~25 µs a line more (issue 12, ``python -m bench.log_cost``). The writer is looked up at each
    line, so a logger cached before a reconfiguration writes to the current one.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name  # read by ``add_logger_name``

    def msg(self, line: str) -> None:
        writer = _writer
        if writer is not None:
            writer.put_line(redact(line))

    debug = info = warning = error = critical = fatal = exception = log = msg


def _writer_logger(*args: Any) -> _WriterLogger:
    return _WriterLogger(str(args[0]) if args else "root")


_writer: BackgroundLogHandler | None = None

MAX_VALUE_CHARS: Final = 1000
_LIBRARY_REPEAT_SECONDS: Final = 60.0
_REPEATING_LIBRARIES: Final = ("aiormq", "aio_pika")


class _RepeatLimiter(logging.Filter):
    """One line a minute per message of the broker client libraries, the next saying how many were
    left out (``suppressed``). They log every reconnect attempt (aiormq at ERROR, aio-pika at
    WARNING), every ~2 s during a broker outage: an hour wrote ~3,600 lines per instance and set off
    every ERROR-based alert of the fleet. The service's own ``broker.*`` lines say what happens."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._clock = clock
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_REPEATING_LIBRARIES):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < _LIBRARY_REPEAT_SECONDS:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._last) > 1000:
            self._last.clear()  # bounded: message templates are few, but a library may format its own
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            record.suppressed = seen[1]
        return True


def _clip_long_values(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Cut every string value past ``MAX_VALUE_CHARS``: many come from clients (a method or protocol
    name, an Origin header, a Close's error text, a path), and one client must not be able to write
    40 KB lines (log shippers split lines at 16 KB; the log buffer fills and real lines are dropped).
    Tracebacks are added after this, whole."""
    for key, value in event_dict.items():
        if type(value) is str and len(value) > MAX_VALUE_CHARS:
            event_dict[key] = f"{value[:MAX_VALUE_CHARS]}…(+{len(value) - MAX_VALUE_CHARS} chars)"
    return event_dict


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = LogFormat.JSON,
    *,
    buffer_records: int = 10_000,
    through_stdlib: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Every logger to stderr through one handler, written by a thread of its own (``service.log_writer``:
    a stderr nobody drains never blocks the caller) with at most ``buffer_records`` lines waiting.

    structlog's events are rendered by structlog itself and handed to that writer; the standard
    library's records (aiohttp, aio-pika, asyncio, warnings) go through its handler and are rendered
    the same way. ``through_stdlib`` sends structlog's events through the standard library too, so
    that pytest's ``caplog`` sees them (the tests' configuration; the lines are the same).
    """
    global _writer  # one writer per process, as stderr is one per process
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _clip_long_values,
    ]
    _skip_record_lookups()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    if through_stdlib:
        structlog.configure(
            # filter_by_level first: a disabled call (connection.* at INFO under LOG_LEVEL=WARNING) costs
            # a level check, not the whole processor chain.
            processors=[
                structlog.stdlib.filter_by_level,
                *shared,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=LevelCheckedLogger,
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.processors.format_exc_info, renderer],
            logger_factory=_writer_logger,
            wrapper_class=structlog.make_filtering_bound_logger(threshold),
            cache_logger_on_first_use=True,
        )
    formatter = _RedactingFormatter(
        # The log writer's own notice (service.log_writer) is a stdlib record with a ``dropped`` field.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=("dropped", "suppressed"))],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = BackgroundLogHandler(sys.stderr, buffer_records)
    handler.setFormatter(formatter)
    handler.addFilter(_RepeatLimiter(clock))
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, BackgroundLogHandler):
            previous.close()  # configured before (tests reconfigure): its lines written, its writer stopped
    root.handlers[:] = [handler]
    _writer = handler
    root.setLevel(threshold)
    # aio-pika/aiormq are chatty at INFO about every channel; keep their warnings.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Warnings and uncaught exceptions would go straight to stderr, around the redaction: route both
    # through the handler above.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("service").critical("process.uncaught_exception", exc_info=(kind, error, tb))


_trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


def trust_proxies(networks: Sequence[IPv4Network | IPv6Network]) -> None:
    """``HTTP_TRUSTED_PROXIES``: whose ``X-Forwarded-For`` the access log believes."""
    global _trusted_proxies
    _trusted_proxies = tuple(networks)


def client_address(request: BaseRequest, trusted: Sequence[IPv4Network | IPv6Network]) -> str | None:
    """The address the request came from: its peer, or behind proxies of ours the last address in
    ``X-Forwarded-For`` that none of them is (each proxy appends the one it saw; what is left of it
    is whatever the client wrote)."""
    address = request.remote
    if not trusted or address is None:
        return address
    hops = [
        hop.strip() for value in request.headers.getall(hdrs.X_FORWARDED_FOR, ()) for hop in value.split(",")
    ]
    while hops and _is_trusted(address, trusted):
        address = hops.pop()
    return address


def _is_trusted(address: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp access log as structured events, without secrets in the query string.

    aiohttp builds one per TCP connection, kept for its life: slots, no ``__dict__`` (issue 12).
    """

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        _access.info(
            "http.access",
            method=request.method,
            path=request.path,
            query=redact_query(request.query_string),
            status=response.status,
            durationMs=round(time * 1000, 1),
            remote=client_address(request, _trusted_proxies),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
