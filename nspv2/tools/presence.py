"""``nspv2 presence-backend``: run the example's HTTP presence service.

The backend :class:`nspv2.examples.async_presence.HttpPresenceDirectory`
answers from (docs/async-example.md). It listens on 127.0.0.1, prints one
line, ``presence backend listening on http://127.0.0.1:PORT`` (with
``--json``: ``{"url": ...}``), and runs until SIGINT or SIGTERM, then
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING

from ..examples.presence_backend import MAX_DELAY, PresenceBackend
from .common import EXIT_OK, add_json, whole

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = ["add_commands", "cmd_presence_backend"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_commands(sub: SubParsers) -> None:
    p = sub.add_parser(
        "presence-backend",
        help="run the asyncio example's HTTP presence service on 127.0.0.1",
        description="Run the HTTP presence service that the asyncio example "
        "(nspv2.examples.async_presence:HttpPresenceDirectory) answers NS_EMAIL lookups "
        "from, on 127.0.0.1, until SIGINT or SIGTERM. It prints the URL to give the "
        "provider in NSPV2_PRESENCE_URL. See docs/async-example.md.",
    )
    p.add_argument(
        "--port", type=whole(0, 65535), default=0, help="the port (default 0: any free port)"
    )
    p.add_argument(
        "--delay-ms",
        type=whole(0, int(MAX_DELAY * 1000)),
        default=0,
        metavar="N",
        help="milliseconds every request waits (a request's X-Delay-Ms header overrides it)",
    )
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="start with no users (default: alice, bob and carol at example.net)",
    )
    add_json(p, 'the URL ({"url": ...})')
    p.set_defaults(func=cmd_presence_backend)


def cmd_presence_backend(args: argparse.Namespace) -> int:
    backend = PresenceBackend(port=args.port, delay=args.delay_ms / 1000, seed=not args.no_seed)
    asyncio.run(_serve(backend, args.json))
    return EXIT_OK


async def _serve(backend: PresenceBackend, as_json: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await backend.start()
        try:
            if as_json:
                print(json.dumps({"url": backend.url}))
            else:
                print(f"presence backend listening on {backend.url}")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await backend.close()
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
