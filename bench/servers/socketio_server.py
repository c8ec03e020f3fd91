"""python-socketio ``AsyncServer`` on aiohttp, fed by the same RabbitMQ feed, emitting to rooms.

``python -m bench.servers.socketio_server --port 5102 --exchange X --queue Q``. What a Python user
would pick instead, with its defaults (stdlib ``json``, Engine.IO pings every 25 s): a client
connects, then emits ``join`` with a room name (acknowledged); an event is emitted to the room named
by its region.
"""

from __future__ import annotations

import argparse

import orjson
import socketio
from aiohttp import web

from bench.servers.feed import Feed, add_feed_arguments
from bench.wire import raise_fd_limit


def build_app(args: argparse.Namespace) -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    @sio.event
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    async def on_event(body: bytes) -> None:
        event = orjson.loads(body)
        await sio.emit(event["type"], event, room=event["region"])

    feed = Feed(args.amqp, args.exchange, args.queue, args.prefetch, on_event)

    async def feed_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        await feed.start()
        yield
        await feed.stop()

    app = web.Application()
    sio.attach(app)
    app.cleanup_ctx.append(feed_ctx)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.socketio_server")
    add_feed_arguments(parser)
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.install()
    web.run_app(build_app(args), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
