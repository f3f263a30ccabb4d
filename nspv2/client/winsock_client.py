"""Winsock's client calls from Python: lookups routed across every provider process.

:class:`nspv2.Client` talks to one provider process over its socket. A
client program on Windows does not choose: it calls ws2_32.dll's
``WSALookupServiceBeginW``/``NextW``/``End`` and ``WSASetServiceW``, and
Winsock routes the query through the namespace catalog to the providers
that match. :class:`WinsockClient` makes those very calls through ctypes:

* on Windows, on ``ws2_32.dll``;
* elsewhere, on nspv2's C client library (``libnspv2client``, built into
  the package as ``nspv2/host/_nspv2client*.so``, or NSPV2_CLIENT_LIBRARY;
  docs/client-c.md). With NSPV2_SOCKET set it talks to that one provider
  process; otherwise it routes each query, by the catalog's rules
  (docs/host.md), to the matching enabled providers of every provider
  process serving in the runtime folder.

Python never routes by itself: the order, the aggregation of several
providers' answers and what happens when one fails are the library's.
::

    from nspv2.client import WinsockClient

    with WinsockClient() as winsock:  # WSAStartup(2.2) ... WSACleanup
        for result in winsock.lookup("alice@example.com"):
            print(result.service_instance_name, result.comment)

The client library (not this object) holds the process's one connection
per provider process: its client session. ``startup``/``cleanup`` count, as
WSAStartup/WSACleanup do; the last cleanup ends the sessions (NSPv2Cleanup).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from typing import Any

from ..host.host import NextResult, drain_lookup
from ..host.native import client_library_path
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..sdk.winsock2 import LUP, NO_ERROR, NS, SOCKET_ERROR, WSAESETSERVICEOP
from ..sdk.wintypes import DWORD, HANDLE, INT, LPDWORD, LPHANDLE
from ..sdk.ws2spi import FunctionSpec

__all__ = ["CLIENT_FUNCTIONS", "WINSOCK_VERSION", "WinsockClient"]

#: MAKEWORD(2, 2): the Winsock version asked for.
WINSOCK_VERSION = 0x0202
_U32_MAX = 0xFFFFFFFF
#: typedef unsigned short WORD;
WORD = ctypes.c_uint16
#: Room for a WSADATA of any layout (408 bytes on 64-bit Windows).
_WSADATA_BYTES = 512


def _client_spec(name: str, restype: Any, argtypes: tuple[Any, ...], decl: str) -> FunctionSpec:
    return FunctionSpec(name, argtypes, restype, decl, f"{name}@{4 * len(argtypes)}")


#: The Winsock client functions bound (winsock2.h; nspv2_client.h exports
#: the same names with the same signatures). Query sets are passed by
#: address (``QuerySet.to_buffer("W")``).
CLIENT_FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        _client_spec(
            "WSAStartup",
            ctypes.c_int,
            (WORD, ctypes.c_void_p),
            "int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);",
        ),
        _client_spec("WSACleanup", ctypes.c_int, (), "int WSAAPI WSACleanup(void);"),
        _client_spec(
            "WSALookupServiceBeginW",
            INT,
            (ctypes.c_void_p, DWORD, LPHANDLE),
            "INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions, "
            "DWORD dwControlFlags, LPHANDLE lphLookup);",
        ),
        _client_spec(
            "WSALookupServiceNextW",
            INT,
            (HANDLE, DWORD, LPDWORD, ctypes.c_void_p),
            "INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags, "
            "LPDWORD lpdwBufferLength, LPWSAQUERYSETW lpqsResults);",
        ),
        _client_spec(
            "WSALookupServiceEnd",
            INT,
            (HANDLE,),
            "INT WSAAPI WSALookupServiceEnd(HANDLE hLookup);",
        ),
        _client_spec(
            "WSASetServiceW",
            INT,
            (ctypes.c_void_p, INT, DWORD),
            "INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo, "
            "WSAESETSERVICEOP essoperation, DWORD dwControlFlags);",
        ),
        _client_spec("WSAGetLastError", ctypes.c_int, (), "int WSAAPI WSAGetLastError(void);"),
    )
}

_lock = threading.Lock()
_libraries: dict[str, Any] = {}


def _load(path: str | os.PathLike[str] | None) -> tuple[Any, bool]:
    """(the library, whether it is ws2_32.dll), loaded once per path."""
    if path is None and sys.platform == "win32":
        key, windows = "ws2_32", True
    else:
        key, windows = os.fspath(path if path is not None else client_library_path()), False
    with _lock:
        if key not in _libraries:
            if windows:
                _libraries[key] = getattr(ctypes, "WinDLL")(key)  # noqa: B009
            else:
                # RTLD_LOCAL (ctypes' default): its Winsock names stay out of the
                # process's global scope, where the native host's may be.
                _libraries[key] = ctypes.CDLL(key)
        return _libraries[key], windows


def _u32(value: int, what: str) -> int:
    number = int(value)
    if not 0 <= number <= _U32_MAX:
        raise ValueError(f"{what} must be between 0 and 2**32-1, not {value!r}")
    return number


class WinsockClient:
    """The Winsock client calls, on ws2_32.dll (Windows) or nspv2's C client
    library (elsewhere; ``library`` names another build).

    Use it as a context manager (:meth:`startup` at the start,
    :meth:`cleanup` at the end), or call them yourself. Failures raise
    :class:`~nspv2.provider.errors.WinsockError` with the Winsock code; on
    the C client library the message has its explanation
    (``nspv2_client_error_text``: which provider process, why none was found).
    """

    def __init__(self, library: str | os.PathLike[str] | None = None) -> None:
        self.library, self.windows = _load(library)
        swap = self.windows  # ws2_32 keeps its last error in the thread's (see Winsock)
        bound = {
            name: spec.bind(self.library, use_last_error=swap)
            for name, spec in CLIENT_FUNCTIONS.items()
        }
        self._startup = bound["WSAStartup"]
        self._cleanup = bound["WSACleanup"]
        self._begin = bound["WSALookupServiceBeginW"]
        self._next = bound["WSALookupServiceNextW"]
        self._end = bound["WSALookupServiceEnd"]
        self._set_service = bound["WSASetServiceW"]
        self._get_last_error = bound["WSAGetLastError"]
        self._error_text: Any = None
        if not self.windows:
            # const char *nspv2_client_error_text(void);
            text = ctypes.CFUNCTYPE(ctypes.c_char_p)(("nspv2_client_error_text", self.library))
            self._error_text = text

    # -- errors -------------------------------------------------------------------------

    def last_error(self) -> int:
        """The calling thread's last Winsock error."""
        if self.windows:
            get_last_error: Any = getattr(ctypes, "get_last_error")  # noqa: B009
            return int(get_last_error())
        return int(self._get_last_error())

    def error_text(self) -> str:
        """Why this thread's last failing call failed ("" on ws2_32.dll)."""
        if self._error_text is None:
            return ""
        raw = self._error_text()
        return raw.decode("utf-8", "replace") if raw else ""

    def _error(self, what: str, code: int | None = None) -> WinsockError:
        code = self.last_error() if code is None else code
        text = self.error_text()
        return WinsockError(code, f"{what}: {text}" if text else what)

    # -- lifetime -----------------------------------------------------------------------

    def startup(self) -> None:
        """WSAStartup(2.2)."""
        data = (ctypes.c_uint8 * _WSADATA_BYTES)()
        code = int(self._startup(WINSOCK_VERSION, ctypes.addressof(data)))
        if code != NO_ERROR:  # WSAStartup returns its error (no last error)
            raise self._error("WSAStartup", code)

    def cleanup(self) -> None:
        """WSACleanup: the last one (of the process) ends its client sessions."""
        if self._cleanup() == SOCKET_ERROR:
            raise self._error("WSACleanup")

    def __enter__(self) -> WinsockClient:
        self.startup()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()

    # -- lookups ------------------------------------------------------------------------

    def lookup_begin(self, restrictions: QuerySet | str, flags: int = LUP.LUP_RETURN_ALL) -> int:
        """WSALookupServiceBeginW; the lookup handle."""
        if isinstance(restrictions, str):
            restrictions = QuerySet(restrictions)
        buf = restrictions.to_buffer("W")
        handle = HANDLE()
        rc = self._begin(ctypes.addressof(buf), _u32(flags, "flags"), ctypes.byref(handle))
        if rc == SOCKET_ERROR:
            raise self._error("WSALookupServiceBeginW")
        assert handle.value
        return int(handle.value)

    def lookup_next(self, handle: int, flags: int = 0, buffer_size: int = 1024) -> NextResult:
        """One WSALookupServiceNextW with a ``buffer_size``-byte buffer
        (aligned for a WSAQUERYSETW)."""
        buffer_size = _u32(buffer_size, "buffer_size")
        buf = (ctypes.c_uint64 * ((buffer_size + 7) // 8 or 1))()
        length = DWORD(buffer_size)
        rc = self._next(handle, _u32(flags, "flags"), ctypes.byref(length), ctypes.addressof(buf))
        if rc == SOCKET_ERROR:
            return NextResult(self.last_error(), None, int(length.value))
        start = ctypes.addressof(buf)
        result = QuerySet.from_address(start, "W", bounds=(start, start + buffer_size))
        return NextResult(NO_ERROR, result, int(length.value))

    def lookup_end(self, handle: int) -> None:
        """WSALookupServiceEnd."""
        if self._end(handle) == SOCKET_ERROR:
            raise self._error("WSALookupServiceEnd")

    def lookup(
        self,
        name: QuerySet | str,
        namespace: int = NS.NS_EMAIL,
        flags: int = LUP.LUP_RETURN_ALL,
        provider_id: uuid.UUID | None = None,
        *,
        buffer_size: int = 1024,
    ) -> list[QuerySet]:
        """Begin, Next until WSA_E_NO_MORE (the buffer grown on WSAEFAULT),
        End: every result, from every provider the query was routed to.
        ``name`` is the service instance name (or a whole QuerySet: then
        ``namespace`` and ``provider_id`` are its own); ``provider_id``
        asks that one provider only."""
        _u32(buffer_size, "buffer_size")
        if isinstance(name, str):
            query = QuerySet(name, namespace=_u32(namespace, "namespace"), provider_id=provider_id)
        else:
            query = name
        handle = self.lookup_begin(query, flags)
        try:
            try:
                return drain_lookup(self.lookup_next, handle, flags, buffer_size)
            except WinsockError as exc:
                if exc.message != "WSALookupServiceNextW":
                    raise
                raise self._error("WSALookupServiceNextW", exc.code) from None
        finally:
            self.lookup_end(handle)

    def set_service(self, query_set: QuerySet, operation: int, flags: int = 0) -> None:
        """WSASetServiceW (operation: WSAESETSERVICEOP), routed as the
        library routes it (lpNSProviderId given: that provider; else the
        first of the query's route)."""
        op = int(WSAESETSERVICEOP(_u32(operation, "operation")))
        buf = query_set.to_buffer("W")
        if self._set_service(ctypes.addressof(buf), op, _u32(flags, "flags")) == SOCKET_ERROR:
            raise self._error("WSASetServiceW")

    def __repr__(self) -> str:
        where = "ws2_32.dll" if self.windows else getattr(self.library, "_name", "?")
        return f"<WinsockClient {where}>"
