"""The floor: aiohttp WebSockets and the same RabbitMQ feed, writing one pre-built frame per event.

``python -m bench.servers.raw --port 5101 --exchange X --queue Q``. A client connects to
``/ws?groups=g7,all``; an event body is parsed only for its region, framed once, and the same bytes
are written straight to every member socket's transport. No protocol, no auth, no per-client state
beyond group membership: the limit for aiohttp + aio-pika on this machine.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web

from bench.servers.feed import Feed, attach_feed, run_server
from bench.wire import unmasked_frame

Members = dict[str, set[asyncio.Transport]]


def build_app(args: argparse.Namespace) -> web.Application:
    groups: Members = {}

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        names = [name for name in request.query.get("groups", "").split(",") if name]
        for name in names:
            groups.setdefault(name, set()).add(transport)
        try:
            async for _ in ws:
                pass
        finally:
            for name in names:
                members = groups.get(name)
                if members is not None:
                    members.discard(transport)
        return ws

    def on_event(body: bytes) -> None:
        members = groups.get(orjson.loads(body)["region"])
        if not members:
            return
        frame = unmasked_frame(body)
        for transport in members:
            if not transport.is_closing():
                transport.write(frame)

    feed = Feed(
        args.amqp,
        args.exchange,
        args.queue,
        args.prefetch,
        on_event,
        stream=args.stream,
        keep_stream=args.keep_stream,
    )

    app = web.Application()
    app.router.add_get("/ws", websocket)
    attach_feed(app, feed)
    return app


def main() -> None:
    run_server("python -m bench.servers.raw", build_app)


if __name__ == "__main__":
    main()
