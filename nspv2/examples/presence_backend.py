"""A small HTTP/1.1 presence service on asyncio streams (standard library only).

The backend :mod:`nspv2.examples.async_presence` answers NS_EMAIL lookups
from. It listens on loopback only and speaks JSON; docs/async-example.md
describes its API:

==========================================  ===========================================
request                                     answer
==========================================  ===========================================
``GET /v1/presence/{address}``              200 the entry, 404
``GET /v1/presence?domain=D``               200 ``{"addresses": [...]}`` (sorted)
``PUT /v1/presence/{address}``              body ``{"status": "MISTATUS_...", "owner": O,
                                            "addresses": ["192.0.2.1:5060", ...]}``
                                            (addresses optional): 201 signed in, 200
                                            updated, 409 another owner holds it, 400,
                                            507 ``max_entries`` names signed in already
``DELETE /v1/presence/{address}?owner=O``   204 signed out, 404, 409 another owner
``DELETE /v1/presence?owner=O``              200 ``{"deleted": [...]}``: every name O holds
``GET /v1/stats``                           200 ``{"requests", "in_flight", "answered",
                                            "disconnected"}``
==========================================  ===========================================

An entry is ``{"address", "status", "owner", "version", "addresses"}``.

Every request but ``/v1/stats`` first waits: the server's ``delay``
(seconds), or the request's ``X-Delay-Ms`` header when it has one. While a
request waits, the server watches its connection: a client that hangs up
(closes or resets it) cancels the wait, the request has no effect, and it is
counted in ``disconnected``. This is how a test sees that cancelling a
lookup in a provider cancelled its backend request too.

Bounded: connections (past the limit: 503 and close), request head and
body sizes (431, 413), the time to receive a request (``read_timeout``,
then 408 or a silent close when nothing arrived), the time to hand an
answer to a client that does not read (``write_timeout``, then the
connection is dropped), the entries (``max_entries``, then 507) and the
delay (at most 60 s). A malformed request gets 400 and the connection is
closed. Requests refused while their head is read (400, 408, 413, 431,
501) are not counted; every other one ends answered or disconnected.

In process::

    backend = PresenceBackend()      # port 0: any free port
    await backend.start()
    ... backend.url, backend.stats ...
    await backend.close()

or on a thread of its own (tests, commands)::

    with BackendThread(PresenceBackend(delay=0.05)) as running:
        running.url

As a command: ``nspv2 presence-backend [--port N] [--delay-ms N] [--no-seed]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..sdk.msgrua import MISTATUS

log = logging.getLogger("nspv2")

__all__ = [
    "SEED",
    "BackendThread",
    "PresenceBackend",
    "running_backend",
]

#: The users a seeded backend starts with: (address, status, addresses).
SEED: tuple[tuple[str, MISTATUS, tuple[str, ...]], ...] = (
    ("alice@example.net", MISTATUS.MISTATUS_ONLINE, ("192.0.2.20:5060",)),
    ("bob@example.net", MISTATUS.MISTATUS_AWAY, ()),
    ("carol@example.net", MISTATUS.MISTATUS_BUSY, ("192.0.2.22:5060", "[2001:db8::22]:5061")),
)
#: The owner of the seeded entries.
SEED_OWNER = "seed"

_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.ASCII)
_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}
#: The longest delay a request may ask for.
MAX_DELAY = 60.0
#: At most this many addresses per entry; owners at most this long.
MAX_ADDRESSES = 16
MAX_OWNER = 200
#: The deepest JSON a PUT body may nest (a valid one nests 2 levels).
MAX_NESTING = 8


def _nesting(body: bytes) -> int:
    """How deep ``body``'s JSON arrays and objects nest (outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


#: Content-Length and X-Delay-Ms: at most this many digits (int() of a
#: longer text is refused by Python past 4300 digits; no valid value needs 19).
_MAX_DIGITS = 18
_MAX_HEADERS = 64
#: After a last answer, read what the client still sends at most this long / much.
_LINGER = 0.5
_LINGER_BYTES = 1 << 20


def _key(address: str) -> str:
    return address.translate(_ASCII_LOWER)


def _valid_socket_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 0xFFFF:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        versions: tuple[int, ...] = (6,)
    else:
        versions = (4,)
    try:
        return ipaddress.ip_address(host).version in versions
    except ValueError:
        return False


class _RequestError(Exception):
    """Answer ``status`` with ``message``; ``close``: then close the connection."""

    def __init__(self, status: int, message: str, close: bool = True, allow: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.close = close
        self.allow = allow


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass
class _Entry:
    address: str
    status: MISTATUS
    owner: str
    addresses: list[str] = field(default_factory=list)
    version: int = 1

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status.name,
            "owner": self.owner,
            "version": self.version,
            "addresses": list(self.addresses),
        }


class _Input:
    """A connection's bytes: what was read ahead (while watching the
    connection during a delay) is kept for the next request."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()

    async def fill(self) -> bool:
        chunk = await self.reader.read(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    async def head(self, limit: int) -> bytes | None:
        """The next request head (without its blank line); None at a clean end."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                if end > limit:
                    raise _RequestError(431, "request head too large")
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > limit:
                raise _RequestError(431, "request head too large")
            if not await self.fill():
                if self.buffer.strip():
                    raise _RequestError(400, "connection ended inside a request head")
                return None

    async def body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not await self.fill():
                raise _RequestError(400, "connection ended inside a request body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    async def watch(self, limit: int) -> None:
        """Return when the client hangs up; bytes it sends meanwhile (a
        pipelined request) are kept, up to ``limit``, then no longer watched."""
        try:
            while len(self.buffer) <= limit:
                if not await self.fill():
                    return
        except (ConnectionError, OSError):
            return
        await asyncio.Event().wait()  # cannot tell any more: wait to be cancelled


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After a last answer: end the sending side, then read (and drop) what
    the client still sends, briefly, so that closing with unread bytes does
    not reset the connection before the client has read the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
        await asyncio.wait_for(_drain_input(reader), _LINGER)


async def _end(writer: asyncio.StreamWriter) -> None:
    """Close the connection: at once (dropping what is unsent) when the
    client has not taken everything written, else after it has."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _drain_input(reader: asyncio.StreamReader) -> None:
    dropped = 0
    while dropped < _LINGER_BYTES and (chunk := await reader.read(65536)):
        dropped += len(chunk)


class PresenceBackend:
    """The presence service (one asyncio server on the loop that starts it).

    ``delay``: seconds every request (but /v1/stats) waits unless it sends
    ``X-Delay-Ms``; ``seed``: start with :data:`SEED`'s users. The other
    arguments bound it: connections at once, request head and body bytes,
    seconds to receive a request, seconds to hand over an answer (a client
    that does not read its replies loses its connection), and names signed
    in at once (the seeded ones included; past it a sign-in gets 507).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        seed: bool = True,
        *,
        max_connections: int = 256,
        max_head_bytes: int = 8192,
        max_body_bytes: int = 16384,
        read_timeout: float = 5.0,
        write_timeout: float = 5.0,
        max_entries: int = 10000,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the presence backend listens on loopback only, not {host}")
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay must be 0 to {MAX_DELAY} s, not {delay}")
        self.host = host
        self.port = port
        self.delay = float(delay)
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        if seed:
            for address, status, addresses in SEED:
                self._entries[_key(address)] = _Entry(address, status, SEED_OWNER, list(addresses))
        self._counts = {"requests": 0, "in_flight": 0, "answered": 0, "disconnected": 0}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._refusing: set[asyncio.Task[None]] = set()

    # -- lifetime -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (on the running loop)."""
        if self._server is not None:
            raise RuntimeError("the presence backend is already started")
        self._server = await asyncio.start_server(
            self._connected, self.host, self.port, limit=self.max_head_bytes + self.max_body_bytes
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, end every connection (requests waiting are
        cancelled, not counted as disconnected) and wait for them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await asyncio.sleep(0)  # connections accepted just now: their tasks start
        handlers = [*self._handlers, *self._refusing]
        for task in handlers:
            task.cancel()  # each ends quietly (_connected)
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the port chosen once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters: requests received, in flight,
        answered, and disconnected (the client hung up while it waited)."""
        return dict(self._counts)

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> PresenceBackend:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- connections ----------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        refuse = len(self._handlers) >= self.max_connections
        tasks = self._refusing if refuse else self._handlers
        tasks.add(task)
        # The task ends normally whatever happens, cancellation (close())
        # included: on Python 3.11 asyncio's streams log a traceback for a
        # connection task that ends cancelled.
        try:
            try:
                if refuse:
                    await self._refuse(reader, writer)
                else:
                    await self._serve(_Input(reader), writer)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass  # reset, or an answer not taken in write_timeout
            finally:
                tasks.discard(task)
                await _end(writer)
        except asyncio.CancelledError:
            pass

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._write(writer, 503, {"error": "too many connections"}, False)
        await self._send(writer)
        await _linger(reader, writer)

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        """Wait until the client takes what was written, at most
        ``write_timeout`` s (then asyncio.TimeoutError: the connection is
        dropped, with what it could not send)."""
        await asyncio.wait_for(writer.drain(), self.write_timeout)

    async def _serve(self, data: _Input, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await self._read_request(data)
            except _RequestError as reject:
                self._write(writer, reject.status, {"error": str(reject)}, False)
                await self._send(writer)
                await _linger(data.reader, writer)
                return
            if request is None:
                return
            if request.path == "/v1/stats":  # not counted: looking changes nothing
                if request.method == "GET":
                    self._write(writer, 200, self.stats, request.keep_alive)
                else:
                    self._write(writer, 405, {"error": "use GET"}, request.keep_alive, "GET")
                await self._send(writer)
                if not request.keep_alive:
                    return
                continue
            self._counts["requests"] += 1
            self._counts["in_flight"] += 1
            try:
                answer = await self._answer(request, data)
            finally:
                self._counts["in_flight"] -= 1
            if answer is None:  # the client hung up while the request waited
                self._counts["disconnected"] += 1
                return
            status, body, keep_alive, allow = answer
            keep_alive = keep_alive and request.keep_alive
            self._counts["answered"] += 1  # before writing: the client can read it at once
            self._write(writer, status, body, keep_alive, allow)
            await self._send(writer)
            if not keep_alive:
                return

    async def _read_request(self, data: _Input) -> _Request | None:
        try:
            head = await asyncio.wait_for(data.head(self.max_head_bytes), self.read_timeout)
        except asyncio.TimeoutError:
            if data.buffer:
                raise _RequestError(408, "request not received in time") from None
            return None  # an idle connection: closed without an answer
        if head is None:
            return None
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            raise _RequestError(400, "request head is not ASCII") from None
        line, *header_lines = text.split("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
            raise _RequestError(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _RequestError(400, f"unsupported protocol {version[:16]!r}")
        if len(header_lines) > _MAX_HEADERS:
            raise _RequestError(431, "too many header fields")
        headers: dict[str, str] = {}
        for header in header_lines:
            name, sep, value = header.partition(":")
            if not sep or not _TOKEN.fullmatch(name):
                raise _RequestError(400, "malformed header field")
            name = name.lower()
            if name in headers and name in ("content-length", "x-delay-ms", "transfer-encoding"):
                raise _RequestError(400, f"repeated {name}")
            headers[name] = value.strip(" \t")
        if "transfer-encoding" in headers:
            raise _RequestError(501, "Transfer-Encoding is not supported; send Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or not length_text.isascii() or len(length_text) > _MAX_DIGITS:
            raise _RequestError(400, "malformed Content-Length")
        length = int(length_text)
        if length > self.max_body_bytes:
            raise _RequestError(413, f"body over {self.max_body_bytes} bytes")
        try:
            body = await asyncio.wait_for(data.body(length), self.read_timeout)
        except asyncio.TimeoutError:
            raise _RequestError(408, "request body not received in time") from None
        split = urllib.parse.urlsplit(target)
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        return _Request(
            method,
            urllib.parse.unquote(split.path),
            urllib.parse.parse_qs(split.query, keep_blank_values=True),
            headers,
            body,
            keep_alive,
        )

    def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Any,
        keep_alive: bool,
        allow: str = "",
    ) -> None:
        payload = b"" if status == 204 else json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if allow:
            head.append(f"Allow: {allow}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload)

    # -- requests -------------------------------------------------------------------

    async def _answer(self, request: _Request, data: _Input) -> tuple[int, Any, bool, str] | None:
        """(status, body, keep_alive, Allow), or None if the client hung up
        while the request waited."""
        try:
            delay = self._delay(request)
            if delay > 0 and not await self._wait(delay, data):
                return None
            status, body, keep_alive = self._route(request)
            return status, body, keep_alive, ""
        except _RequestError as reject:
            return reject.status, {"error": str(reject)}, not reject.close, reject.allow
        except Exception:  # a bug: answered (500), logged, the connection closed
            log.exception("presence backend: %s %s", request.method, request.path[:100])
            return 500, {"error": "internal error"}, False, ""

    def _delay(self, request: _Request) -> float:
        text = request.headers.get("x-delay-ms")
        if text is None:
            return self.delay
        if (
            not text.isdigit()
            or not text.isascii()
            or len(text) > _MAX_DIGITS
            or int(text) > MAX_DELAY * 1000
        ):
            raise _RequestError(
                400, f"X-Delay-Ms must be 0 to {int(MAX_DELAY * 1000)}", close=False
            )
        return int(text) / 1000

    async def _wait(self, delay: float, data: _Input) -> bool:
        """Sleep ``delay`` s unless the client hangs up first (False)."""
        watcher = asyncio.ensure_future(data.watch(self.max_head_bytes + self.max_body_bytes))
        sleeper = asyncio.ensure_future(asyncio.sleep(delay))
        try:
            await asyncio.wait({watcher, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, sleeper):
                task.cancel()
            await asyncio.gather(watcher, sleeper, return_exceptions=True)
        return (
            sleeper.done()
            and not sleeper.cancelled()
            and not (watcher.done() and not watcher.cancelled())
        )

    @staticmethod
    def _allow(request: _Request, *methods: str) -> None:
        if request.method not in methods:
            allow = ", ".join(methods)
            raise _RequestError(405, f"{request.method} is not allowed here", False, allow)

    def _route(self, request: _Request) -> tuple[int, Any, bool]:
        path = request.path
        if path == "/v1/presence":
            self._allow(request, "GET", "DELETE")
            if request.method == "DELETE":
                owner = self._one(request, "owner")
                gone = sorted(k for k, e in self._entries.items() if e.owner == owner)
                deleted = [self._entries.pop(k).address for k in gone]
                return 200, {"deleted": deleted}, True
            domain = self._one(request, "domain")
            if not _DOMAIN.fullmatch(domain):
                raise _RequestError(400, "give ?domain=DOMAIN", close=False)
            found = sorted(
                e.address for k, e in self._entries.items() if k.rpartition("@")[2] == _key(domain)
            )
            return 200, {"addresses": found}, True
        prefix = "/v1/presence/"
        if not path.startswith(prefix):
            return 404, {"error": f"no route {path[:100]!r}"}, True
        address = path[len(prefix) :]
        if not _ADDRESS.fullmatch(address):
            raise _RequestError(400, "not an e-mail address", close=False)
        self._allow(request, "GET", "PUT", "DELETE")
        entry = self._entries.get(_key(address))
        if request.method == "GET":
            if entry is None:
                return 404, {"error": f"{address} is not signed in"}, True
            return 200, entry.as_json(), True
        if request.method == "PUT":
            status, owner, addresses = self._put_body(request.body)
            if entry is None:
                if len(self._entries) >= self.max_entries:
                    return 507, {"error": f"{self.max_entries} names are signed in"}, True
                entry = _Entry(address, status, owner, addresses if addresses is not None else [])
                self._entries[_key(address)] = entry
                return 201, entry.as_json(), True
            if entry.owner != owner:
                return 409, {"error": f"{address} is signed in by another owner"}, True
            entry.status = status
            if addresses is not None:
                entry.addresses = addresses
            entry.version += 1
            return 200, entry.as_json(), True
        owner = self._one(request, "owner")
        if entry is None:
            return 404, {"error": f"{address} is not signed in"}, True
        if entry.owner != owner:
            return 409, {"error": f"{address} is signed in by another owner"}, True
        del self._entries[_key(address)]
        return 204, None, True

    @staticmethod
    def _one(request: _Request, name: str) -> str:
        """The query's one ``name`` parameter (400 if none, empty or repeated)."""
        values = request.query.get(name)
        if not values or len(values) != 1 or not values[0]:
            raise _RequestError(400, f"give one ?{name}={name.upper()}", close=False)
        return values[0]

    @staticmethod
    def _put_body(body: bytes) -> tuple[MISTATUS, str, list[str] | None]:
        # Refused before parsing: json would raise RecursionError past ~1000
        # levels, and a RecursionError leaves CPython 3.11's recursion
        # accounting of that thread suspect (SystemError from a later
        # compile there), so none is provoked.
        if _nesting(body) > MAX_NESTING:
            raise _RequestError(400, f"JSON nested deeper than {MAX_NESTING}", close=False)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _RequestError(400, "the body is not JSON", close=False) from None
        if not isinstance(doc, dict):
            raise _RequestError(400, "the body is not a JSON object", close=False)
        status_name, owner = doc.get("status"), doc.get("owner")
        if not isinstance(status_name, str) or status_name not in MISTATUS.__members__:
            raise _RequestError(400, "status must be a MISTATUS name", close=False)
        if not isinstance(owner, str) or not 0 < len(owner) <= MAX_OWNER:
            raise _RequestError(
                400, f"owner must be a string of 1 to {MAX_OWNER} characters", False
            )
        addresses = doc.get("addresses")
        if addresses is not None and (
            not isinstance(addresses, list)
            or len(addresses) > MAX_ADDRESSES
            or not all(isinstance(a, str) and _valid_socket_address(a) for a in addresses)
        ):
            raise _RequestError(
                400, f"addresses: at most {MAX_ADDRESSES} ADDRESS:PORT texts", close=False
            )
        return MISTATUS[status_name], owner, addresses


class BackendThread:
    """Run a :class:`PresenceBackend` on an event loop of its own, in a
    thread of its own: ``start()`` returns once it listens; ``stop()``
    closes it and ends the thread. A context manager."""

    def __init__(self, backend: PresenceBackend | None = None) -> None:
        self.backend = backend or PresenceBackend()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def stats(self) -> dict[str, int]:
        return self.backend.stats

    def start(self, timeout: float = 10.0) -> BackendThread:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="nspv2-presence-backend")
        self._thread.daemon = True
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the presence backend did not start in time")
        if self._failure is not None:
            self._thread.join(timeout)
            raise self._failure
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.backend.start()
        except BaseException as exc:
            self._failure = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.backend.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the backend and end its thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("the presence backend did not stop in time")

    def __enter__(self) -> BackendThread:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_backend(
    delay: float = 0.0, seed: bool = True, port: int = 0
) -> Iterator[BackendThread]:
    """A seeded backend on a thread of its own, for the ``with`` block."""
    with BackendThread(PresenceBackend(port=port, delay=delay, seed=seed)) as running:
        yield running
