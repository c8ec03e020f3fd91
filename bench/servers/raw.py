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

from bench.servers.feed import Feed, add_feed_arguments
from bench.wire import raise_fd_limit, unmasked_frame

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
            groups.setdefault(name, set()).add(transport)  # type: ignore[arg-type]
        try:
            async for _ in ws:
                pass
        finally:
            for name in names:
                members = groups.get(name)
                if members is not None:
                    members.discard(transport)  # type: ignore[arg-type]
        return ws

    def on_event(body: bytes) -> None:
        members = groups.get(orjson.loads(body)["region"])
        if not members:
            return
        frame = unmasked_frame(body)
        for transport in members:
            if not transport.is_closing():
                transport.write(frame)

    feed = Feed(args.amqp, args.exchange, args.queue, args.prefetch, on_event)

    async def feed_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        await feed.start()
        yield
        await feed.stop()

    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.cleanup_ctx.append(feed_ctx)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.raw")
    add_feed_arguments(parser)
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.install()
    web.run_app(build_app(args), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
