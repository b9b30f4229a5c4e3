"""The named peer for the intake benchmark: a plain aiohttp JSON POST handler.

It reads the body, parses it (orjson, as the intake does) and answers 200 with
a small JSON body: no checks, no signature, no store. Run it as its own
process (``python -m daemon.bench.plain_server PORT``) so it gets a process of
its own, as the daemon does; it prints ``ready`` once it listens.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from aiohttp import web

ROUTE = "/callbacks/connectwise"


async def handle(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    return web.json_response({"status": "accepted"})


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post(ROUTE, handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve("127.0.0.1", int(sys.argv[1])))
