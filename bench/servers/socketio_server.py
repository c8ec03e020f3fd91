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

from bench.servers.feed import Feed, attach_feed, run_server


def build_app(args: argparse.Namespace) -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    @sio.event  # type: ignore[untyped-decorator]  # python-socketio ships no type information
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    async def on_event(body: bytes) -> None:
        event = orjson.loads(body)
        await sio.emit(event["type"], event, room=event["region"])

    feed = Feed(args.amqp, args.exchange, args.queue, args.prefetch, on_event, stream=args.stream)

    app = web.Application()
    sio.attach(app)
    attach_feed(app, feed)
    return app


def main() -> None:
    run_server("python -m bench.servers.socketio_server", build_app)


if __name__ == "__main__":
    main()
