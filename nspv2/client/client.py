"""``Client``: one client process's session with a provider process.

>>> from nspv2 import Client
>>> with Client() as client:                        # doctest: +SKIP
...     [r.service_instance_name for r in client.lookup("dave@example.com")]
['dave@example.com']

A :class:`Client` is a connection to ``nspv2 serve`` (found by the rules of
:mod:`nspv2.client.discovery`, or given with ``socket=``) and, on the
server, one client session: the first call that reaches a provider runs its
NSPv2Startup; :meth:`Client.close` (GOODBYE) runs NSPv2Cleanup;
:meth:`Client.abandon`, or the process dying, or going silent past three
keepalive intervals, runs NSPv2ClientSessionRundown.

Its methods are those of :class:`nspv2.host.ClientSession` and
:class:`nspv2.Host`'s lookups, with the same arguments, checks and results:
a failure is a :class:`~nspv2.WinsockError` with the code the server sent.
A dead connection is :class:`~nspv2.client.ConnectionLost` (WSAECONNRESET,
or the code of the server's ERROR frame), for that call and every later one.

Calls are serialized: one request in flight per client (a lock), so one
Client may be shared by threads. While connected, a daemon thread sends
KEEPALIVE every ``keepalive_ms`` the server asked for.

A Client belongs to the process that made it: in a child made by
:func:`os.fork` its copy of the connection is closed at once (no GOODBYE,
no shutdown: the parent's session goes on) and the child's calls raise
:class:`~nspv2.client.ConnectionLost` saying so; a child makes a Client
of its own.
"""

from __future__ import annotations

import json
import os
import select
import socket as _socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from ..host.host import NextResult, drain_lookup
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet, QuerySetError
from ..sdk.winsock2 import LUP, NO_ERROR, WSAESETSERVICEOP, WSAError
from . import discovery, wire
from .errors import WSAECONNRESET, ConnectionLost, ServerNotFound
from .wire import MsgType, Reply, Role, WireError

__all__ = ["Client", "status"]

_U32_MAX = 0xFFFFFFFF
_CLOSED_TEXT = "the provider process closed the connection"
_INTERRUPTED_TEXT = (
    "a call was interrupted before its reply was read; the connection was given up"
)
#: wait_closed holds the request lock at most this long at a time (s).
_WAIT_SLICE = 0.05
#: ... and leaves it free this long between two slices (s).
_WAIT_GAP = 0.005

#: Every Client with a connection, for the fork handler.
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _u32(value: int, what: str) -> int:
    """As nspv2.host.host: a DWORD, or ValueError before anything is sent."""
    number = int(value)
    if not 0 <= number <= _U32_MAX:
        raise ValueError(f"{what} must be between 0 and 2**32-1, not {value!r}")
    return number


class Client:
    """A client session with a provider process, over its Unix socket.

    ``socket``: the server's socket (else ``NSPV2_SOCKET``, else the one
    live server of the runtime folder; :class:`~nspv2.client.ServerNotFound`
    if there is none or several). ``timeout``: seconds to wait for a reply
    (``None``: no limit); a call that times out loses the connection (the
    server then runs the session down). ``keepalive``: send KEEPALIVE while
    connected (turn it off only to test the server's deadline).
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = 30.0,
        keepalive: bool = True,
        _role: Role = Role.CLIENT,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        self.socket = discovery.choose(socket)
        self.timeout = timeout
        self.role = _role
        self._call_lock = threading.Lock()  # one request in flight
        self._send_lock = threading.Lock()  # whole frames, also from the keepalive thread
        self._next_id = 1
        self._dead: ConnectionLost | None = None
        self._closed = False
        self._stop = threading.Event()
        self._keepalive_thread: threading.Thread | None = None
        self._max_frame = wire.MAX_FRAME
        self._pid = os.getpid()  # the process whose connection this is
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(os.fspath(self.socket))
        except OSError as exc:
            sock.close()
            raise ServerNotFound(
                f"cannot connect to {self.socket}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        _clients.add(self)
        try:
            hello = self._call(MsgType.HELLO_REPLY, wire.encode_hello, _role)
        except BaseException:
            self._shut()
            raise
        if hello.version != wire.VERSION:
            self._shut()
            raise WinsockError(
                WSAError.WSAVERNOTSUPPORTED,
                f"the server speaks wire version {hello.version}, this client {wire.VERSION}",
            )
        #: The provider process's id.
        self.server_pid: int = hello.server_pid
        #: How often KEEPALIVE is sent (ms); the server's deadline is three times it.
        self.keepalive_ms: int = hello.keepalive_ms
        #: The most unanswered requests the server takes (this client sends one at a time).
        self.max_in_flight: int = hello.max_in_flight
        self._max_frame = min(hello.max_frame, wire.MAX_FRAME) or wire.MAX_FRAME
        #: The advertised providers: (provider id, namespace).
        self.providers: tuple[tuple[uuid.UUID, int], ...] = hello.providers
        if keepalive and self.keepalive_ms:
            self._keepalive_thread = threading.Thread(
                target=self._keepalive, name=f"nspv2 keepalive {self.socket}", daemon=True
            )
            self._keepalive_thread.start()

    @classmethod
    def monitor(
        cls, socket: str | os.PathLike[str] | None = None, *, timeout: float | None = 30.0
    ) -> Client:
        """A STATUS-only connection (role monitor): no client session, not
        listed among the server's clients; only :meth:`status` works."""
        return cls(socket, timeout=timeout, _role=Role.MONITOR)

    # -- the connection ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed or abandoned here, or the connection was lost."""
        return self._closed or self._dead is not None

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = rid % _U32_MAX + 1  # 1 .. 2**32-1, never 0
        return rid

    def _lose(self, code: int, text: str) -> ConnectionLost:
        """Mark the connection dead (once; the first reason sticks) and close it."""
        if self._dead is None:
            self._dead = ConnectionLost(code, text)
        self._shut()
        return ConnectionLost(self._dead.code, self._dead.message)

    def _shut(self) -> None:
        self._stop.set()
        if os.getpid() == self._pid:  # never the socket a parent still uses
            try:
                self._sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        self._sock.close()

    def _forked(self) -> None:
        """In a child just made by fork(): the connection is the parent's.
        Close this process's copy of the socket (no shutdown, no GOODBYE:
        the parent's session goes on); calls raise ConnectionLost. Locks
        other threads of the parent may have held are made anew; the
        keepalive thread does not exist here."""
        self._call_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._stop.set()
        self._keepalive_thread = None
        if self._dead is None and not self._closed:
            self._dead = ConnectionLost(
                WSAECONNRESET,
                f"this client's connection belongs to process {self._pid}, which forked "
                "this one; a forked child makes a Client of its own",
            )
        self._sock.close()

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(frame)

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_frame(self) -> Reply:
        """Call lock held: read one whole frame; a broken connection is lost."""
        try:
            head = self._recv_exact(wire.HEADER)
            header = wire.parse_header(head, self._max_frame)
            return wire.decode_reply(head + self._recv_exact(header.length - wire.HEADER))
        except EOFError:
            raise self._lose(WSAECONNRESET, _CLOSED_TEXT) from None
        except TimeoutError:
            raise self._lose(
                WSAECONNRESET,
                f"no reply within {self.timeout} s; the connection was closed",
            ) from None
        except OSError as exc:
            raise self._lose(WSAECONNRESET, f"{_CLOSED_TEXT} ({exc.strerror or exc})") from None
        except WireError as exc:
            raise self._lose(
                WSAECONNRESET, f"the provider process sent a malformed frame: {exc}"
            ) from None
        except BaseException:
            # Interrupted (KeyboardInterrupt, a signal handler's exception)
            # before the whole reply was read: the next bytes on the socket
            # belong to this request, so no later call could read its own
            # reply. The connection is given up (the server runs the session
            # down) and the interruption goes on, not a ConnectionLost later.
            self._lose(WSAECONNRESET, _INTERRUPTED_TEXT)
            raise

    def _call(self, expect: MsgType, build: Callable[..., bytes], *args: Any) -> Reply:
        """Send one request (``build(request_id, *args)``) and read its reply."""
        if self.role is Role.MONITOR and expect not in (MsgType.HELLO_REPLY, MsgType.STATUS_REPLY):
            raise WinsockError(WSAError.WSAEOPNOTSUPP, "a monitor connection only asks for status")
        with self._call_lock:
            if self._dead is not None:
                raise ConnectionLost(self._dead.code, self._dead.message)
            if self._closed:
                raise ConnectionLost(WSAECONNRESET, "this client is closed")
            request_id = self._take_id()
            frame = build(request_id, *args)
            try:
                self._send(frame)
            except TimeoutError:
                raise self._lose(
                    WSAECONNRESET,
                    f"no reply within {self.timeout} s; the connection was closed",
                ) from None
            except OSError as exc:
                raise self._lose(WSAECONNRESET, f"{_CLOSED_TEXT} ({exc.strerror or exc})") from None
            except BaseException:  # interrupted mid-request: the stream is out of step
                self._lose(WSAECONNRESET, _INTERRUPTED_TEXT)
                raise
            reply = self._read_frame()
            if reply.type == MsgType.ERROR:
                raise self._lose(reply.code, reply.text or "the server ended the connection")
            if reply.type != expect or reply.header.request_id != request_id:
                raise self._lose(
                    WSAECONNRESET,
                    f"the provider process answered {MsgType(reply.type).name} "
                    f"#{reply.header.request_id} to {expect.name} #{request_id}",
                )
            return reply

    def _keepalive(self) -> None:
        interval = self.keepalive_ms / 1000.0
        frame = wire.encode_empty(MsgType.KEEPALIVE, 0)
        while not self._stop.wait(interval):
            try:
                self._send(frame)
            except OSError:
                return  # the next call finds out

    # -- lifetime -------------------------------------------------------------------

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is gone (the server closed it, ended it
        with an ERROR, or this client was closed or abandoned): True; False
        when ``timeout`` seconds pass first (``None``: no limit; 0: just look).

        It sends nothing (the server's request count does not grow) and takes
        no reply meant for a request: it watches the socket only while it
        holds the request lock, in slices of at most 50 ms with the lock free
        between them, so calls from other threads go on meanwhile (each may
        wait up to one slice to start). Once it returns True, calls raise
        :class:`~nspv2.client.ConnectionLost` with the reason (a server's
        ERROR frame gives its code and text)."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed:
                return True
            left = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            step = max(0.0, min(_WAIT_SLICE, left))
            if (
                self._call_lock.acquire(timeout=step)
                if step > 0
                else self._call_lock.acquire(False)
            ):
                try:
                    if deadline is not None:
                        step = max(0.0, min(step, deadline - time.monotonic()))
                    if self._gone(step):
                        return True
                finally:
                    self._call_lock.release()
            if deadline is not None and time.monotonic() >= deadline:
                return self.closed
            time.sleep(_WAIT_GAP)  # the lock is free: a waiting call takes it

    def _gone(self, wait: float) -> bool:
        """Call lock held, no request in flight: is the connection gone
        (waiting up to ``wait`` s for the socket to say so)?"""
        if self.closed:
            return True
        fd = self._sock.fileno()
        if fd < 0:
            return self.closed
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(int(wait * 1000)):
            return False
        # readable with nothing asked: the end of the stream, or the frame
        # the server sends before closing (ERROR: its code and reason)
        try:
            peek = self._sock.recv(1, _socket.MSG_PEEK)
        except OSError as exc:
            self._lose(WSAECONNRESET, f"{_CLOSED_TEXT} ({exc.strerror or exc})")
            return True
        if not peek:
            self._lose(WSAECONNRESET, _CLOSED_TEXT)
            return True
        try:
            reply = self._read_frame()
        except ConnectionLost:
            return True
        if reply.type == MsgType.ERROR:
            self._lose(reply.code, reply.text or "the server ended the connection")
        else:
            self._lose(
                WSAECONNRESET,
                f"the provider process sent {MsgType(reply.type).name} "
                f"#{reply.header.request_id}, which nothing asked for",
            )
        return True

    def close(self) -> None:
        """End gracefully (GOODBYE): each provider the session used gets
        NSPv2Cleanup. Idempotent; after a lost connection there is nothing
        to end (the server ran the session down) and nothing is raised."""
        if self.closed or self.role is Role.MONITOR:
            self._closed = True
            self._shut()
            return
        try:
            reply = self._call(MsgType.GOODBYE_REPLY, wire.encode_empty_request, MsgType.GOODBYE)
        except ConnectionLost:
            return
        finally:
            self._closed = True
            self._shut()
        if reply.code != NO_ERROR:
            raise WinsockError(reply.code, "GOODBYE")

    def abandon(self) -> None:
        """Vanish (close the socket without GOODBYE): each provider the
        session used gets NSPv2ClientSessionRundown."""
        if not self.closed:
            self._closed = True
            self._shut()  # wakes a call blocked in another thread: it fails
        self._stop.set()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"connected to pid {self.server_pid}"
        return f"<Client {self.socket} {state}>"

    # -- the calls --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The server's status (docs/serve.md), parsed from its JSON."""
        reply = self._call(MsgType.STATUS_REPLY, wire.encode_empty_request, MsgType.STATUS)
        if reply.code != NO_ERROR:
            raise WinsockError(reply.code, "STATUS")
        try:
            parsed = json.loads(reply.tail)
        except ValueError as exc:
            raise WinsockError(WSAError.WSANO_RECOVERY, f"the status is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise WinsockError(WSAError.WSANO_RECOVERY, "the status is not a JSON object")
        return parsed

    def _image(self, q: QuerySet) -> bytes:
        image = q.to_image("W")  # QuerySetError for what a reader would refuse
        if len(image) > wire.MAX_IMAGE:
            raise WinsockError(
                WSAError.WSAEINVAL,
                f"the query set's image is {len(image)} bytes; the wire carries {wire.MAX_IMAGE}",
            )
        return image

    def lookup_begin(self, restrictions: QuerySet | str, flags: int = LUP.LUP_RETURN_ALL) -> int:
        """WSALookupServiceBeginW: the lookup's handle."""
        if isinstance(restrictions, str):
            restrictions = QuerySet(restrictions)
        flags = _u32(flags, "flags")
        reply = self._call(MsgType.BEGIN_REPLY, wire.encode_begin, flags, self._image(restrictions))
        if reply.code != NO_ERROR:
            raise WinsockError(reply.code, "WSALookupServiceBeginW")
        return reply.handle

    def lookup_next(self, handle: int, flags: int = 0, buffer_size: int = 1024) -> NextResult:
        """One WSALookupServiceNextW with a ``buffer_size``-byte buffer (on
        the server: a larger one is cut to the wire's largest image)."""
        buffer_size = _u32(buffer_size, "buffer_size")
        flags = _u32(flags, "flags")
        handle = int(handle)
        if not 0 <= handle < 2**64:
            raise ValueError(f"handle must be between 0 and 2**64-1, not {handle!r}")
        reply = self._call(MsgType.NEXT_REPLY, wire.encode_next, handle, flags, buffer_size)
        if reply.code != NO_ERROR:
            return NextResult(reply.code, None, reply.word)
        try:
            result = QuerySet.from_image(reply.tail, "W")
        except QuerySetError as exc:
            with self._call_lock:
                raise self._lose(
                    WSAECONNRESET, f"the provider process sent a malformed result: {exc}"
                ) from None
        return NextResult(NO_ERROR, result, reply.word)

    def lookup_end(self, handle: int) -> None:
        """WSALookupServiceEnd."""
        handle = int(handle)
        if not 0 <= handle < 2**64:
            raise ValueError(f"handle must be between 0 and 2**64-1, not {handle!r}")
        reply = self._call(MsgType.END_REPLY, wire.encode_end, handle)
        if reply.code != NO_ERROR:
            raise WinsockError(reply.code, "WSALookupServiceEnd")

    def lookup(
        self,
        restrictions: QuerySet | str,
        flags: int = LUP.LUP_RETURN_ALL,
        *,
        buffer_size: int = 1024,
    ) -> list[QuerySet]:
        """Begin, Next until WSA_E_NO_MORE (growing the buffer on WSAEFAULT), End."""
        _u32(buffer_size, "buffer_size")  # refused before Begin, not after
        handle = self.lookup_begin(restrictions, flags)
        try:
            return drain_lookup(self.lookup_next, handle, flags, buffer_size)
        finally:
            if not self.closed:
                self.lookup_end(handle)

    def set_service(self, reg_info: QuerySet, operation: int, flags: int = 0) -> None:
        """WSASetServiceW (operation: WSAESETSERVICEOP)."""
        op = int(WSAESETSERVICEOP(_u32(operation, "operation")))
        flags = _u32(flags, "flags")
        reply = self._call(MsgType.SET_REPLY, wire.encode_set, op, flags, self._image(reg_info))
        if reply.code != NO_ERROR:
            raise WinsockError(reply.code, "WSASetServiceW")


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forked()
    _clients.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def status(
    socket: str | os.PathLike[str] | None = None, *, timeout: float | None = 30.0
) -> dict[str, Any]:
    """One server's status through a monitor connection (no client session)."""
    with Client.monitor(socket, timeout=timeout) as monitor:
        return monitor.status()
