"""``Server``: serve the providers advertised in this process to client processes.

What ws2_32's hidden RPC hop does on Windows, done by the native host's C
server (``nspv2_server_*`` in nspv2_host.h, native_stub/src/server.c): it
listens on a Unix domain socket, and every connection is one client
session on this process's host (docs/serve.md has the whole picture; the
protocol is native_stub/src/wire.h). Python only configures, starts, reads
and stops it; no Python code runs on its threads except the providers'
own slots, called by the host.

``nspv2 serve`` (nspv2/tools/serve.py) does, in short::

    with Host() as host:
        host.advertise(EmailDirectory())
        with Server(socket_path, host=host, log_fd=2) as server:
            ...  # until SIGINT / SIGTERM; server.status() meanwhile

Stopping (:meth:`Server.stop`) runs every open client session down. A
Python provider advertised on ``host`` sees those rundowns with reason
PLATFORM_SHUTDOWN (``Provider.running_down``), as at unadvertise; a client
process that goes away on its own is still OTHER_COMMUNICATION_ERROR.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..provider.errors import WinsockError
from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from ..sdk.winsock2 import SOCKET_ERROR, WSAError
from .winsock import NativeHostFunctions, Winsock, load_native_host

if TYPE_CHECKING:
    from .host import Host

__all__ = ["Server", "ServerConfig", "ServerStats"]

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_U32_MAX = 0xFFFFFFFF


class ServerConfig(ctypes.Structure):
    """nspv2_server_config (nspv2_host.h)."""

    _fields_ = [
        ("socket_path", ctypes.c_char_p),
        ("threads", _u32),
        ("max_clients", _u32),
        ("max_in_flight", _u32),
        ("keepalive_ms", _u32),
        ("allow_uids", ctypes.POINTER(_u32)),
        ("n_allow_uids", _u32),
        ("log_fd", ctypes.c_int),
    ]


class ServerStats(ctypes.Structure):
    """nspv2_server_stats (nspv2_host.h)."""

    _fields_ = [
        ("accepted", _u64),
        ("refused", _u64),
        ("open_now", _u64),
        ("sessions_opened", _u64),
        ("sessions_cleanup", _u64),
        ("sessions_rundown", _u64),
        ("ended_disconnect", _u64),
        ("ended_keepalive", _u64),
        ("ended_protocol", _u64),
        ("ended_shutdown", _u64),
        ("requests", _u64),
        ("queue_peak", _u64),
    ]

    def as_dict(self) -> dict[str, int]:
        return {f[0]: int(getattr(self, f[0])) for f in self._fields_}


def _dword(value: int, what: str) -> int:
    number = int(value)
    if not 0 <= number <= _U32_MAX:
        raise ValueError(f"{what} must be between 0 and 2**32-1, not {value!r}")
    return number


class Server:
    """The native host's server on ``socket_path``: not started until
    :meth:`start` (or ``with``); :meth:`stop` (or the end of ``with``) ends it.

    ``threads``, ``max_clients``, ``max_in_flight`` and ``keepalive_ms`` are
    nspv2_server_config's (0: the C defaults, 4 / 64 / 8 / 5000);
    ``allow_uids`` are the users allowed besides this process's effective
    uid; ``log_fd`` gets the log lines (-1: none). ``host`` is the
    :class:`~nspv2.host.Host` whose Python providers are marked for
    PLATFORM_SHUTDOWN at stop (the server itself serves every provider
    advertised in the process, whoever advertised it).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        threads: int = 0,
        max_clients: int = 0,
        max_in_flight: int = 0,
        keepalive_ms: int = 0,
        allow_uids: Iterable[int] = (),
        log_fd: int = -1,
        host: Host | None = None,
        winsock: Winsock | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.host = host
        self.winsock = winsock or (host.winsock if host is not None else load_native_host())
        native = self.winsock.native
        if native is None:
            raise ValueError("Server needs nspv2's native host library, not ws2_32.dll")
        self.native: NativeHostFunctions = native
        uids = [_dword(u, "a uid in allow_uids") for u in allow_uids]
        # Kept alive with the config: C reads them in nspv2_server_start only,
        # but nothing is lost by keeping them for the server's life.
        self._path_bytes = os.fsencode(self.socket_path)
        self._uids = (_u32 * max(len(uids), 1))(*uids)
        self.config = ServerConfig(
            self._path_bytes,
            _dword(threads, "threads"),
            _dword(max_clients, "max_clients"),
            _dword(max_in_flight, "max_in_flight"),
            _dword(keepalive_ms, "keepalive_ms"),
            ctypes.cast(self._uids, ctypes.POINTER(_u32)),
            len(uids),
            int(log_fd),
        )
        #: The C server's id (0: not started, or stopped).
        self.id = 0
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------

    def _check(self, rc: int, what: str) -> None:
        if rc == SOCKET_ERROR:
            raise WinsockError(self.winsock.last_error(), what)

    @property
    def running(self) -> bool:
        return self.id != 0

    def start(self) -> Server:
        """Bind, listen, serve (returns once clients can connect)."""
        with self._lock:
            if self.id:
                raise RuntimeError(f"the server on {self.socket_path} is already running")
            server = _u64()
            self._check(
                self.native.nspv2_server_start(ctypes.byref(self.config), ctypes.byref(server)),
                "nspv2_server_start",
            )
            self.id = int(server.value)
        return self

    def stop(self) -> None:
        """Stop accepting, run every open session down (PLATFORM_SHUTDOWN),
        join the threads, remove the socket. Does nothing once stopped."""
        with self._lock:
            server, self.id = self.id, 0
        if not server:
            return
        with contextlib.ExitStack() as marks:
            for provider in self._python_providers():
                marks.enter_context(
                    provider.running_down(Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN)
                )
            self._check(self.native.nspv2_server_stop(server), "nspv2_server_stop")

    def _python_providers(self) -> list[Any]:
        if self.host is None:
            return []
        return [a.provider for a in list(self.host.advertised.values()) if a.provider is not None]

    def __enter__(self) -> Server:
        if not self.id:
            self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what it is doing -------------------------------------------------------------

    def _running_id(self) -> int:
        server = self.id
        if not server:
            raise WinsockError(WSAError.WSAEINVAL, f"the server on {self.socket_path} is stopped")
        return server

    def stats(self) -> dict[str, int]:
        """nspv2_server_stats as a dict (every field, by its C name)."""
        out = ServerStats()
        self._check(
            self.native.nspv2_server_stats_get(self._running_id(), ctypes.byref(out)),
            "nspv2_server_stats_get",
        )
        return out.as_dict()

    def status_json(self) -> str:
        """The status document (docs/serve.md), as the C server writes it."""
        server = self._running_id()
        size = _u32(0)
        while True:
            buffer = ctypes.create_string_buffer(max(size.value, 1))
            room = size.value
            rc = self.native.nspv2_server_status(server, buffer, ctypes.byref(size))
            if rc != SOCKET_ERROR:
                return buffer.raw[: size.value].decode("utf-8")
            code = self.winsock.last_error()
            if code != WSAError.WSAEFAULT or size.value <= room:
                raise WinsockError(code, "nspv2_server_status")
            # short: size now says how much is needed (it may grow meanwhile)

    def status(self) -> dict[str, Any]:
        """The status document, parsed."""
        doc: dict[str, Any] = json.loads(self.status_json())
        return doc

    def __repr__(self) -> str:
        state = f"running (#{self.id})" if self.id else "stopped"
        return f"<Server {self.socket_path} {state}>"
