"""Real RabbitMQ for tests: where the broker is, a private node we may kill, a TCP proxy that drops links.

- ``resolve_broker_url()``: ``RABBITMQ_URL`` if set; else a testcontainers RabbitMQ when a Docker
  engine answers; else ``amqp://guest:guest@127.0.0.1:5672/``. Never a mock.
- ``devkit.local_broker.PrivateBroker`` (used by the fixtures): a throwaway ``rabbitmq-server``
  node of our own on spare ports (own node name,
  data and log directories, Erlang cookie, no plugins), so tests can SIGKILL, stop, restart it or
  close all its connections without touching the shared broker other work relies on.
- ``TcpProxy``: sits between the service and a broker and can cut every connection at once
  (``disconnect_all``) or refuse new ones (``refuse``) — a dropped network, seen from both sides —
  or swallow every byte while keeping the sockets open (``blackhole``) — a half-open link, which
  only heartbeats reveal.
- ``BrokerAdmin``: what a test does on the broker directly (publish raw bodies — also without a
  ``message_id``, which aio-pika always fills in —, read a queue or a stream, count messages,
  delete what a test declared), on its own connection.

Rule: nothing here stops or reconfigures a broker it did not start, and every resource is released
in teardown even when the test failed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq import Channel as UnderlayChannel
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from yarl import URL

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONTAINER_IMAGE = "rabbitmq:3.10-alpine"


# --- where the broker is ----------------------------------------------------------------------


@dataclass
class BrokerLocation:
    url: str
    source: str  # "RABBITMQ_URL", "testcontainers" or "local"
    stop: Callable[[], None] = field(default=lambda: None)


def docker_reachable(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers (``DOCKER_HOST`` or the default socket)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    # A failed probe can leave the client's socket to the garbage collector; that is not a leak of
    # the code under test, so its ResourceWarning is collected and ignored here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=int(max(1, timeout)))
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (DockerException, OSError):
            return False
        finally:
            gc.collect()


def resolve_broker_url() -> BrokerLocation:
    """``RABBITMQ_URL`` if set; else testcontainers when Docker answers; else the local broker (README)."""
    explicit = os.environ.get("RABBITMQ_URL")
    if explicit:
        return BrokerLocation(explicit, "RABBITMQ_URL")
    if docker_reachable():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.rabbitmq import RabbitMqContainer

            container = RabbitMqContainer(os.environ.get("RABBITMQ_IMAGE", CONTAINER_IMAGE))
            container.start()
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        url = f"amqp://{container.username}:{container.password}@{host}:{port}/"
        return BrokerLocation(url, "testcontainers", stop=container.stop)
    return BrokerLocation(DEFAULT_BROKER_URL, "local")


async def check_reachable(url: str, timeout: float = 5.0) -> str | None:
    """``None`` when an AMQP connection opens, else why not."""
    try:
        connection = await aio_pika.connect(url, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - any failure is reported to the test run as text
        return f"{type(error).__name__}: {error}"
    await connection.close()
    return None


def redact(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***") if parsed.password else parsed)


def with_host_port(url: str, host: str, port: int) -> str:
    return str(URL(url).with_host(host).with_port(port))


# --- a TCP proxy that can drop every link ------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a broker; ``disconnect_all()`` aborts every forwarded connection."""

    def __init__(self, target_url: str) -> None:
        parsed = URL(target_url)
        self._target_url = target_url
        self._target = (parsed.host or "127.0.0.1", parsed.port or 5672)
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.refusing = False
        self.swallowing = False
        self._swallowed: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.connections_made = 0
        self.refused = 0
        self.attempted = asyncio.Event()
        """Set on every connection attempt; clear it, then await it to see the next one."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return with_host_port(self._target_url, "127.0.0.1", self.port)

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, new connections are accepted and immediately reset (broker "down")."""
        self.refusing = refusing

    def blackhole(self, swallowing: bool = True) -> None:
        """Swallow everything, both ways, on every open link and on links accepted meanwhile; sockets
        stay open (the client sees no close or reset, only silence), also after the broker gives up
        on its side. Turning it off forwards on new links only: a swallowed link has lost bytes
        mid-stream, so it stays silent until its client closes it."""
        self.swallowing = swallowing
        if swallowing:
            self._swallowed.update(self._links)

    def disconnect_all(self) -> int:
        """Abort every forwarded connection in both directions; returns how many."""
        links = list(self._links)
        self._links.clear()
        self._swallowed.clear()
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._swallowed.clear()
        self.disconnect_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_attempts(self, count: int, timeout: float = 20.0) -> None:
        """Return once ``count`` more connection attempts have reached the proxy."""
        async with asyncio.timeout(timeout):
            for _ in range(count):
                self.attempted.clear()
                await self.attempted.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempted.set()
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.connections_made += 1
        link = (writer, up_writer)
        self._links.add(link)
        if self.swallowing:
            self._swallowed.add(link)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        client, upstream = link
        try:
            while data := await source.read(65536):
                if link in self._swallowed:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link in self._swallowed and sink is client:
                # The broker closed its side of a swallowed link: the client must not see it.
                upstream.transport.abort()
            else:
                self._links.discard(link)
                self._swallowed.discard(link)
                for side in link:
                    side.transport.abort()


# --- doing things on the broker from a test ------------------------------------------------------


class BrokerAdmin:
    """A test's own connection to the broker, for arranging and inspecting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def open(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):  # the channel's opening too: no step waits forever
            self._connection = await aio_pika.connect_robust(self.url, timeout=timeout)
            self._channel = await self._connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None

    async def channel(self) -> AbstractRobustChannel:
        """A usable channel (a refused declaration closes a channel; this opens a fresh one)."""
        assert self._connection is not None, "BrokerAdmin.open() first"
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
        return self._channel

    async def publish(
        self,
        exchange: str,
        body: bytes,
        *,
        routing_key: str = "test",
        content_type: str | None = "application/json",
        message_id: str | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> str:
        """Publish raw bytes, persistent and confirmed; returns the message id.

        ``timeout`` bounds the wait for the broker's confirm (``asyncio.TimeoutError`` past it);
        without it a confirm that never comes is waited for forever."""
        channel = await self.channel()
        message_id = message_id if message_id is not None else str(uuid.uuid4())
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                content_type=content_type,
                message_id=message_id or None,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                **properties,
            ),
            routing_key=routing_key,
            timeout=timeout,
        )
        return message_id

    async def publish_without_message_id(
        self,
        exchange: str,
        body: bytes,
        *,
        routing_key: str = "test",
        content_type: str | None = "application/json",
    ) -> None:
        """Publish ``body`` with no ``message_id`` at all, as a producer that sets none would.

        aiormq gives every message it publishes a random ``message_id``, so the frames are written
        here by hand on a channel of their own; a synchronous method on that channel afterwards
        (``basic.qos``) returns only once the broker has handled the publish before it.
        """
        assert self._connection is not None, "BrokerAdmin.open() first"
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            underlay = cast(UnderlayChannel, await channel.get_underlay_channel())
            properties = spec.Basic.Properties(
                content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value
            )
            frames: list[Any] = [
                spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
                ContentHeader(properties=properties, body_size=len(body)),
            ]
            if body:
                frames.append(ContentBody(body))
            await underlay.write_queue.put(
                ChannelFrame.marshall(channel_number=underlay.number, frames=frames)
            )
            await underlay.basic_qos(prefetch_count=1)
        finally:
            await channel.close()

    async def read_stream(
        self, stream: str, count: int, *, offset: int | str = "first", timeout: float = 10.0
    ) -> list[tuple[int, AbstractIncomingMessage]]:
        """The first ``count`` entries of ``stream`` from ``offset``, with their offsets."""
        assert self._connection is not None, "BrokerAdmin.open() first"
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=max(1, count))
            source = await channel.declare_queue(stream, passive=True, robust=False)
            received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            tag = await source.consume(received.put, arguments={"x-stream-offset": offset})
            entries: list[tuple[int, AbstractIncomingMessage]] = []
            try:
                async with asyncio.timeout(timeout):
                    while len(entries) < count:
                        message = await received.get()
                        offset_header = (message.headers or {})["x-stream-offset"]
                        assert isinstance(offset_header, int)
                        entries.append((offset_header, message))
            except TimeoutError:
                raise AssertionError(
                    f"{stream}: got {len(entries)} of {count} entries within {timeout} s"
                ) from None
            finally:
                await source.cancel(tag)  # before closing the channel (see FINDINGS 9.5)
            return entries
        finally:
            # No ack is needed: a stream keeps its entries; acks are only credit.
            await channel.close()

    async def read_stream_until(
        self, stream: str, last: Callable[[AbstractIncomingMessage], bool], *, timeout: float = 10.0
    ) -> list[AbstractIncomingMessage] | None:
        """Every entry of ``stream`` from the first up to the one ``last`` accepts; None when no such
        entry arrives within ``timeout``."""
        assert self._connection is not None, "BrokerAdmin.open() first"
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=500)
            source = await channel.declare_queue(stream, passive=True, robust=False)
            entries: list[AbstractIncomingMessage] = []
            done = asyncio.get_running_loop().create_future()

            async def on_message(message: AbstractIncomingMessage) -> None:
                entries.append(message)
                await message.ack()
                if last(message) and not done.done():
                    done.set_result(None)

            tag = await source.consume(on_message, arguments={"x-stream-offset": "first"})
            try:
                await asyncio.wait_for(done, timeout)
            except TimeoutError:
                return None
            finally:
                await source.cancel(tag)
            return entries
        finally:
            await channel.close()

    async def first_offset(self, stream: str) -> int:
        """The offset of the first entry ``stream`` still retains."""
        [(offset, _)] = await self.read_stream(stream, 1)
        return offset

    async def take(self, queue: str, count: int, *, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
        """Consume exactly ``count`` messages from ``queue`` (acked), or fail after ``timeout``."""
        channel = await self.channel()
        source = await channel.declare_queue(queue, passive=True, robust=False)
        received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tag = await source.consume(received.put, no_ack=False)
        messages: list[AbstractIncomingMessage] = []
        try:
            async with asyncio.timeout(timeout):
                while len(messages) < count:
                    message = await received.get()
                    await message.ack()
                    messages.append(message)
        except TimeoutError:
            raise AssertionError(
                f"{queue}: got {len(messages)} of {count} messages within {timeout} s"
            ) from None
        finally:
            await source.cancel(tag)
        return messages

    async def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` now (not counting unacknowledged ones). Not for a stream,
        whose count is a statistic refreshed every few seconds (FINDINGS 1e)."""
        # A robust channel answers a passive declaration of a queue it declared before from its
        # cache, with the count of back then; the underlying channel asks the broker.
        channel = await (await self.channel()).get_underlay_channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)

    async def delete(self, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        channel = await self.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def existing_queues(url: str, queues: Iterable[str]) -> list[str]:
    """Those of ``queues`` the broker still has (a passive declare answers 404 for the others): what
    a test or benchmark that deletes its queues must leave empty."""
    connection = await aiormq.connect(url)
    found: list[str] = []
    try:
        for queue in queues:
            channel = await connection.channel()
            try:
                await channel.queue_declare(queue, passive=True)
                found.append(queue)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return found


def header_text(headers: Mapping[str, Any] | None, name: str) -> Any:
    """A header value with AMQP long strings (bytes) decoded."""
    value = (headers or {}).get(name)
    return value.decode() if isinstance(value, bytes) else value
