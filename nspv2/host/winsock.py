"""The Winsock binding: Winsock-named functions bound on a library object.

One code path for two libraries: ``ws2_32.dll`` on Windows (a private
``WinDLL(..., use_last_error=True)``) and nspv2's native host (a shared
library exporting the same names and signatures) everywhere, Windows
included when asked. Nothing is loaded at import; :func:`load_ws2_32` and
:func:`load_native_host` do it on request.

:class:`WinsockChannel` is the :class:`~nspv2.provider.channel.ErrorChannel` over a
bound library: providers' ``WSASetLastError`` and
``WSAProviderCompleteAsyncCall`` reach the real host.
"""

from __future__ import annotations

import ctypes
import sys
import uuid
from collections.abc import Callable
from typing import Any

from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.routine import Routine
from ..sdk.guiddef import GUID
from ..sdk.winsock2 import LPBLOB, LPWSANAMESPACE_INFOEXW, NO_ERROR, SOCKET_ERROR, WSAError
from ..sdk.wintypes import BOOL, DWORD, HANDLE, INT, LPDWORD, LPHANDLE, LPWSTR, WCHAR
from ..sdk.ws2spi import HOST_FUNCTIONS, NSPV2_ROUTINE, FunctionSpec
from . import tables
from .native import NativeHostUnavailable

__all__ = [
    "CATALOG_FUNCTIONS",
    "CTRL_BREAK_EVENT",
    "CTRL_CLOSE_EVENT",
    "CTRL_C_EVENT",
    "PHANDLER_ROUTINE",
    "WSAETIMEDOUT",
    "CatalogFunctions",
    "DriverConfig",
    "DriverResult",
    "HostStats",
    "NativeHostFunctions",
    "Winsock",
    "WinsockChannel",
    "load_native_host",
    "load_ws2_32",
]

_u64 = ctypes.c_uint64
_u32 = ctypes.c_uint32
_EINVAL = int(WSAError.WSAEINVAL)
#: winsock2.h's WSAETIMEDOUT: nspv2_async_wait's "not completed yet".
WSAETIMEDOUT = 10060


class HostStats(ctypes.Structure):
    """nspv2_host_stats (nspv2_host.h)."""

    _fields_ = [
        ("providers", ctypes.c_uint32),
        ("sessions_open", ctypes.c_uint32),
        ("lookups_open", ctypes.c_uint32),
        ("async_pending", ctypes.c_uint32),
        ("startups", _u64),
        ("cleanups", _u64),
        ("rundowns", _u64),
        ("late_completions", _u64),
        ("provider_faults", _u64),
        ("timed_out_held", _u64),
        ("timed_out_held_bytes", _u64),
        ("timed_out_released", _u64),
        ("double_completions", _u64),
        ("missing_last_error", _u64),
    ]

    def as_dict(self) -> dict[str, int]:
        return {f[0]: int(getattr(self, f[0])) for f in self._fields_}


class DriverConfig(ctypes.Structure):
    """nspv2_driver_config (nspv2_host.h)."""

    _fields_ = [
        ("threads", ctypes.c_uint32),
        ("cycles", ctypes.c_uint32),
        ("abandon_every", ctypes.c_uint32),
        ("buffer_size", ctypes.c_uint32),
        ("name_space", DWORD),
        ("provider_id", ctypes.POINTER(GUID)),
        ("service_name", ctypes.POINTER(WCHAR)),
        ("control_flags", DWORD),
        ("session_only", ctypes.c_uint32),
        ("grow_on_efault", ctypes.c_uint32),
    ]


DRIVER_MAX_CODES = 16


class DriverResult(ctypes.Structure):
    """nspv2_driver_result (nspv2_host.h)."""

    _fields_ = [
        ("cycles_done", _u64),
        ("elapsed_ns", _u64),
        ("results", _u64),
        ("n_codes", ctypes.c_uint32),
        ("codes", ctypes.c_int32 * DRIVER_MAX_CODES),
        ("counts", _u64 * DRIVER_MAX_CODES),
    ]

    def outcomes(self) -> dict[int, int]:
        return {int(self.codes[i]): int(self.counts[i]) for i in range(self.n_codes)}


# Client-facing and control functions of the native host (nspv2_host.h and
# the providers linked into it; not in ws2_32.dll). Query-set pointers are
# declared c_void_p (same ABI as LPWSAQUERYSETW) so callers can pass the
# address of a packed buffer. Each C prototype is in a comment; the
# attribute annotations on NativeHostFunctions below are the typed names.
_u64p = ctypes.POINTER(_u64)
_u32p = ctypes.POINTER(_u32)
#: typedef BOOL (WINAPI *PHANDLER_ROUTINE)(DWORD dwCtrlType); (WINAPI is empty
#: where the host library exports SetConsoleCtrlHandler)
PHANDLER_ROUTINE = ctypes.CFUNCTYPE(BOOL, DWORD)
#: wincon.h's console control events (nspv2_host_console_event)
CTRL_C_EVENT = 0
CTRL_BREAK_EVENT = 1
CTRL_CLOSE_EVENT = 2
_NATIVE_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    # INT nspv2_session_open(uint64_t *session_id);
    "nspv2_session_open": (INT, (_u64p,)),
    # INT nspv2_session_close(uint64_t session_id);
    "nspv2_session_close": (INT, (_u64,)),
    # INT nspv2_session_abandon(uint64_t session_id);
    "nspv2_session_abandon": (INT, (_u64,)),
    # INT nspv2_session_enter(uint64_t session_id);
    "nspv2_session_enter": (INT, (_u64,)),
    # INT nspv2_session_start(uint64_t session_id, DWORD name_space, const GUID *provider_id);
    "nspv2_session_start": (INT, (_u64, DWORD, ctypes.POINTER(GUID))),
    # INT nspv2_lookup_begin(uint64_t session_id, LPWSAQUERYSETW, DWORD, LPHANDLE);
    "nspv2_lookup_begin": (INT, (_u64, ctypes.c_void_p, DWORD, LPHANDLE)),
    # INT nspv2_lookup_next(HANDLE, DWORD, LPDWORD, LPWSAQUERYSETW);
    "nspv2_lookup_next": (INT, (HANDLE, DWORD, LPDWORD, ctypes.c_void_p)),
    # INT nspv2_lookup_end(HANDLE hLookup);
    "nspv2_lookup_end": (INT, (HANDLE,)),
    # INT nspv2_set_service(uint64_t session_id, LPWSAQUERYSETW, WSAESETSERVICEOP, DWORD);
    "nspv2_set_service": (INT, (_u64, ctypes.c_void_p, INT, DWORD)),
    # void nspv2_host_set_timeout_ms(uint32_t timeout_ms);
    "nspv2_host_set_timeout_ms": (None, (ctypes.c_uint32,)),
    # void nspv2_host_stats_get(nspv2_host_stats *out);
    "nspv2_host_stats_get": (None, (ctypes.POINTER(HostStats),)),
    # void nspv2_host_stats_reset(void);
    "nspv2_host_stats_reset": (None, ()),
    # void nspv2_host_reset(void);
    "nspv2_host_reset": (None, ()),
    # INT nspv2_driver_run(const nspv2_driver_config *cfg, nspv2_driver_result *out);
    "nspv2_driver_run": (INT, (ctypes.POINTER(DriverConfig), ctypes.POINTER(DriverResult))),
    # INT nspv2_driver_thread_exits(const nspv2_driver_config *cfg, uint32_t total_threads,
    #                               nspv2_driver_result *out);
    "nspv2_driver_thread_exits": (
        INT,
        (ctypes.POINTER(DriverConfig), ctypes.c_uint32, ctypes.POINTER(DriverResult)),
    ),
    # void nspv2_ref_provider_routine(NSPV2_ROUTINE *out);
    "nspv2_ref_provider_routine": (None, (ctypes.c_void_p,)),
    # void nspv2_ref_provider_reset(void);
    "nspv2_ref_provider_reset": (None, ()),
    # void nspv2_bench_provider_routine(NSPV2_ROUTINE *out);
    "nspv2_bench_provider_routine": (None, (ctypes.c_void_p,)),
    # -- what is advertised and installed (loaders, checkers) --
    # uint64_t nspv2_host_advertise_count(void);
    "nspv2_host_advertise_count": (_u64, ()),
    # INT nspv2_host_providers(GUID *ids, uint32_t max, uint32_t *count);
    "nspv2_host_providers": (INT, (ctypes.POINTER(GUID), _u32, _u32p)),
    # INT nspv2_host_provider_table(const GUID *id, NSPV2_ROUTINE *out);
    "nspv2_host_provider_table": (INT, (ctypes.POINTER(GUID), ctypes.POINTER(NSPV2_ROUTINE))),
    # INT nspv2_host_installed(const GUID *id, DWORD *name_space, uint32_t *has_blob,
    #                          void *blob, uint32_t *blob_size);
    "nspv2_host_installed": (
        INT,
        (ctypes.POINTER(GUID), ctypes.POINTER(DWORD), _u32p, ctypes.c_void_p, _u32p),
    ),
    # INT nspv2_host_installed_identifier(const GUID *id, WCHAR *identifier, uint32_t *chars);
    "nspv2_host_installed_identifier": (INT, (ctypes.POINTER(GUID), ctypes.c_void_p, _u32p)),
    # -- async handles for calling NextEx / SetServiceEx directly (harnesses) --
    # INT nspv2_async_create(HANDLE *out);
    "nspv2_async_create": (INT, (LPHANDLE,)),
    # INT nspv2_async_wait(HANDLE h, uint32_t timeout_ms, INT *code, INT *last_error,
    #                      uint32_t *completions);
    "nspv2_async_wait": (
        INT,
        (HANDLE, _u32, ctypes.POINTER(INT), ctypes.POINTER(INT), _u32p),
    ),
    # INT nspv2_async_close(HANDLE h);
    "nspv2_async_close": (INT, (HANDLE,)),
    # -- the compat layer (native_stub/src/compat.c; not on Windows, where
    #    ws2_32.dll and kernel32.dll have them). WSAAPI / WINAPI are empty there.
    # int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);
    "WSAStartup": (ctypes.c_int, (ctypes.c_uint16, ctypes.c_void_p)),
    # int WSAAPI WSACleanup(void);
    "WSACleanup": (ctypes.c_int, ()),
    # BOOL WINAPI SetConsoleCtrlHandler(PHANDLER_ROUTINE HandlerRoutine, BOOL Add);
    "SetConsoleCtrlHandler": (BOOL, (PHANDLER_ROUTINE, BOOL)),
    # BOOL nspv2_host_console_event(DWORD ctrl_type);
    "nspv2_host_console_event": (BOOL, (DWORD,)),
    # -- the provider process's server (src/server.c; POSIX only). The config
    #    and stats structures are nspv2.host.server's ServerConfig / ServerStats.
    # INT nspv2_server_start(const nspv2_server_config *cfg, uint64_t *server);
    "nspv2_server_start": (INT, (ctypes.c_void_p, _u64p)),
    # INT nspv2_server_stop(uint64_t server);
    "nspv2_server_stop": (INT, (_u64,)),
    # INT nspv2_server_stats_get(uint64_t server, nspv2_server_stats *out);
    "nspv2_server_stats_get": (INT, (_u64, ctypes.c_void_p)),
    # INT nspv2_server_status(uint64_t server, char *json, uint32_t *len);
    "nspv2_server_status": (INT, (_u64, ctypes.c_void_p, _u32p)),
    # -- the namespace catalog's extras (src/catalog_api.c; the Winsock-named
    #    catalog calls are CATALOG_FUNCTIONS below)
    # INT nspv2_catalog_set_path(const char *path);
    "nspv2_catalog_set_path": (INT, (ctypes.c_char_p,)),
    # INT nspv2_catalog_location(char *buf, uint32_t *size);
    "nspv2_catalog_location": (INT, (ctypes.c_void_p, _u32p)),
    # const char *nspv2_catalog_error_text(void);
    "nspv2_catalog_error_text": (ctypes.c_char_p, ()),
    # INT nspv2_email_blob_check(const void *blob, uint32_t size, char *why, uint32_t why_size);
    "nspv2_email_blob_check": (INT, (ctypes.c_void_p, _u32, ctypes.c_char_p, _u32)),
}

#: The server's functions: not in a host library built for Windows (the
#: server is POSIX only) nor in one built before them.
_NATIVE_SERVER = frozenset(
    {"nspv2_server_start", "nspv2_server_stop", "nspv2_server_stats_get", "nspv2_server_status"}
)

#: The compat layer's functions: exported by the host library except on
#: Windows (where a provider gets them from ws2_32.dll and kernel32.dll).
_NATIVE_COMPAT = frozenset(
    {"WSAStartup", "WSACleanup", "SetConsoleCtrlHandler", "nspv2_host_console_event"}
)

#: Bound when the library has them; a library built before them (a stale
#: NSPV2_HOST_LIBRARY, say) still binds, and calling one of these raises
#: NativeHostUnavailable naming it (so does a compat function on Windows).
_NATIVE_SINCE_NATIVE_PROVIDERS = frozenset(
    {
        "nspv2_driver_thread_exits",
        "nspv2_catalog_set_path",
        "nspv2_catalog_location",
        "nspv2_catalog_error_text",
        "nspv2_email_blob_check",
        "nspv2_host_advertise_count",
        "nspv2_host_providers",
        "nspv2_host_provider_table",
        "nspv2_host_installed",
        "nspv2_host_installed_identifier",
        "nspv2_async_create",
        "nspv2_async_wait",
        "nspv2_async_close",
    }
)


class _Absent:
    """Stands for a function the library does not export: it has the
    binding's restype and argtypes, and calling it raises
    NativeHostUnavailable saying why."""

    def __init__(self, name: str, restype: Any, argtypes: tuple[Any, ...], why: str) -> None:
        self.__name__ = name
        self.restype = restype
        self.argtypes = argtypes
        self.why = why

    def __call__(self, *args: Any) -> Any:
        raise NativeHostUnavailable(self.why)


def _absent(name: str, library: Any, restype: Any, argtypes: tuple[Any, ...]) -> _Absent:
    if name in _NATIVE_COMPAT and sys.platform == "win32":
        why = f"{name} is not in the native host on Windows: ws2_32.dll / kernel32.dll have it"
    elif name in _NATIVE_SERVER and sys.platform == "win32":
        why = f"{name} is not in the native host on Windows: serving needs Unix domain sockets"
    else:
        where = getattr(library, "_name", library)
        why = (
            f"the native host library {where} has no {name}: it was built from older "
            "sources; rebuild it (make -C native_stub lib) or reinstall nspv2"
        )
    return _Absent(name, restype, argtypes, why)


class NativeHostFunctions:
    """The native host's own functions, bound with argtypes and restype.

    One typed attribute per C function, named as in C, so callers write
    ``host.native.nspv2_lookup_end(handle)``; ``INT`` functions return
    ``SOCKET_ERROR`` and set the host's last error on failure.
    """

    nspv2_session_open: Callable[[Any], int]
    nspv2_session_close: Callable[[int], int]
    nspv2_session_abandon: Callable[[int], int]
    nspv2_session_enter: Callable[[int], int]
    nspv2_session_start: Callable[[int, int, Any], int]
    nspv2_lookup_begin: Callable[[int, int, int, Any], int]
    nspv2_lookup_next: Callable[[int | None, int, Any, int], int]
    nspv2_lookup_end: Callable[[int | None], int]
    nspv2_set_service: Callable[[int, int, int, int], int]
    nspv2_host_set_timeout_ms: Callable[[int], None]
    nspv2_host_stats_get: Callable[[Any], None]
    nspv2_host_stats_reset: Callable[[], None]
    nspv2_host_reset: Callable[[], None]
    nspv2_driver_run: Callable[[Any, Any], int]
    nspv2_driver_thread_exits: Callable[[Any, int, Any], int]
    nspv2_ref_provider_routine: Callable[[int], None]
    nspv2_ref_provider_reset: Callable[[], None]
    nspv2_bench_provider_routine: Callable[[int], None]
    nspv2_host_advertise_count: Callable[[], int]
    nspv2_host_providers: Callable[[Any, int, Any], int]
    nspv2_host_provider_table: Callable[[Any, Any], int]
    nspv2_host_installed: Callable[[Any, Any, Any, Any, Any], int]
    nspv2_host_installed_identifier: Callable[[Any, Any, Any], int]
    nspv2_async_create: Callable[[Any], int]
    nspv2_async_wait: Callable[[int | None, int, Any, Any, Any], int]
    nspv2_async_close: Callable[[int | None], int]
    WSAStartup: Callable[[int, Any], int]
    WSACleanup: Callable[[], int]
    SetConsoleCtrlHandler: Callable[[Any, int], int]
    nspv2_host_console_event: Callable[[int], int]
    nspv2_server_start: Callable[[Any, Any], int]
    nspv2_server_stop: Callable[[int], int]
    nspv2_server_stats_get: Callable[[int, Any], int]
    nspv2_server_status: Callable[[int, Any, Any], int]
    nspv2_catalog_set_path: Callable[[bytes | None], int]
    nspv2_catalog_location: Callable[[Any, Any], int]
    nspv2_catalog_error_text: Callable[[], bytes | None]
    nspv2_email_blob_check: Callable[[Any, int, Any, int], int]

    def __init__(self, library: Any, *, use_last_error: bool = False) -> None:
        # These are plain C functions (cdecl, no WSAAPI in nspv2_host.h):
        # bound through CFUNCTYPE whatever the library object's class (the
        # host DLL is a WinDLL on Windows, for its WSAAPI functions).
        for name, (restype, argtypes) in _NATIVE_SIGNATURES.items():
            prototype = ctypes.CFUNCTYPE(restype, *argtypes, use_last_error=use_last_error)
            try:
                setattr(self, name, prototype((name, library)))
            except AttributeError:
                if name not in _NATIVE_SINCE_NATIVE_PROVIDERS | _NATIVE_COMPAT | _NATIVE_SERVER:
                    raise
                setattr(self, name, _absent(name, library, restype, argtypes))


class Winsock:
    """The provider-facing Winsock functions bound on ``library``.

    ``native_host`` says whether the library is nspv2's native host, which
    also has client-facing functions (``self.native``, None on ws2_32).

    The last error, on Windows, is the thread's Windows last error
    (``WSASetLastError`` is ``SetLastError``, in ws2_32.dll and in the
    native host's DLL alike). A ctypes function bound with
    ``use_last_error=True`` swaps that value with a private copy before the
    call and swaps it back after (CPython, ``_ctypes/callproc.c``): the
    value the call set ends up in the copy (``ctypes.get_last_error()``)
    and the thread gets its previous value back. So:

    * ``WSASetLastError`` (what a provider calls before returning
      SOCKET_ERROR to ws2_32) is bound *without* ``use_last_error``: the
      code stays the thread's last error, which ws2_32 reads when the thunk
      returns (the thunks' prototypes do not swap either);
    * ``WSAGetLastError`` is bound the same way: a provider reads the
      thread's real value;
    * every call whose failure Python reads afterwards (advertise,
      unadvertise, install, uninstall, complete, the native host's
      ``nspv2_*`` client functions) is bound *with* it on Windows, and
      :meth:`last_error` reads ``ctypes.get_last_error()``, so nothing
      Python does in between can overwrite the code.

    Elsewhere ctypes ignores ``use_last_error`` and the native host keeps
    the last error in its own thread-local slot: :meth:`last_error` is its
    ``WSAGetLastError``. Every WSAAPI function is bound through a WINFUNCTYPE prototype on
    Windows (:meth:`nspv2.sdk.ws2spi.FunctionSpec.bind`), whatever the
    class of ``library``.
    """

    def __init__(self, library: Any, *, native_host: bool) -> None:
        self.library = library
        self.native_host = native_host
        #: Windows: calls whose failure Python reads swap the last error.
        self.swaps_last_error = swap = sys.platform == "win32"

        def bind(name: str, use_last_error: bool) -> Any:
            return HOST_FUNCTIONS[name].bind(library, use_last_error=use_last_error)

        self.WSAAdvertiseProvider = bind("WSAAdvertiseProvider", swap)
        self.WSAUnadvertiseProvider = bind("WSAUnadvertiseProvider", swap)
        self.WSAProviderCompleteAsyncCall = bind("WSAProviderCompleteAsyncCall", swap)
        self.WSASetLastError = bind("WSASetLastError", False)
        self.WSAGetLastError = bind("WSAGetLastError", False)
        self.WSCInstallNameSpaceEx = bind("WSCInstallNameSpaceEx", swap)
        self.WSCUnInstallNameSpace = bind("WSCUnInstallNameSpace", swap)
        self.native = NativeHostFunctions(library, use_last_error=swap) if native_host else None
        #: The library's "unadvertised tables it may still call" count
        #: (None on ws2_32.dll and on a native host without it).
        self.retired_tables = tables.probe_for(library) if native_host else None

    def last_error(self) -> int:
        """The code the last failed call made from Python set on this thread."""
        if not self.swaps_last_error:
            return int(self.WSAGetLastError())
        get_last_error: Callable[[], int] = getattr(ctypes, "get_last_error")  # noqa: B009
        return get_last_error()

    def check(self, result: int, what: str) -> None:
        """Raise WinsockError with :meth:`last_error` if ``result`` is SOCKET_ERROR."""
        if result == SOCKET_ERROR:
            raise WinsockError(self.last_error(), what)

    def advertise(self, provider_id: uuid.UUID, target: Routine | Provider) -> GUID:
        """WSAAdvertiseProvider(&guid, table); returns the GUID object.

        The table reports to this binding's channel (a Provider's table is
        built with it; a Routine without a channel is given it), and the
        process-level registry (:mod:`nspv2.host.tables`) keeps the table,
        its thunks and its provider alive from before the call until
        :meth:`unadvertise` has returned and the host has returned from the
        last call into it (for ws2_32.dll, which cannot say: process exit).
        """
        routine = self._routine_for(target)
        guid = GUID.from_uuid(provider_id)
        kept = tables.keep(
            self.library, provider_id, self.retired_tables, routine, target, routine.table
        )
        try:
            self.check(
                self.WSAAdvertiseProvider(ctypes.byref(guid), routine.pointer()),
                "WSAAdvertiseProvider",
            )
        except BaseException:
            tables.forget(kept)  # C kept nothing
            raise
        tables.sweep()
        return guid

    def _routine_for(self, target: Routine | Provider) -> Routine:
        """``target``'s routine table, reporting to this binding's channel."""
        if isinstance(target, Provider):
            return target.routine(channel=self.channel())
        if target.channel is None:
            target.channel = self.channel()
        return target

    def unadvertise(self, provider_id: uuid.UUID) -> None:
        """WSAUnadvertiseProvider; then whatever was advertised as
        ``provider_id`` on this library (by this object, a Host or another
        binding) is retired: held until the host has returned from the last
        call into it. Also when the host no longer knows the id (WSAEINVAL:
        unadvertised already, by ``nspv2_host_reset`` say)."""
        guid = GUID.from_uuid(provider_id)
        if self.WSAUnadvertiseProvider(ctypes.byref(guid)) == SOCKET_ERROR:
            code = self.last_error()
            if code == _EINVAL:
                tables.retire(self.library, provider_id)
            raise WinsockError(code, "WSAUnadvertiseProvider")
        tables.retire(self.library, provider_id)

    def channel(self) -> WinsockChannel:
        return WinsockChannel(self)

    def catalog_functions(self, wow64: bool = False) -> CatalogFunctions:
        """The namespace catalog's functions on this library (bound once;
        ``wow64``: ws2_32.dll's 32-bit catalog). See :mod:`nspv2.host.catalog`."""
        cache: dict[bool, CatalogFunctions] = self.__dict__.setdefault("_catalog_functions", {})
        if wow64 not in cache:
            cache[wow64] = CatalogFunctions(self.library, native_host=self.native_host, wow64=wow64)
        return cache[wow64]


class WinsockChannel:
    """An ErrorChannel that calls the bound library's WSASetLastError,
    WSAGetLastError and WSAProviderCompleteAsyncCall (see :class:`Winsock`
    for which value each one reads and sets)."""

    def __init__(self, winsock: Winsock) -> None:
        self._set = winsock.WSASetLastError
        self._get = winsock.WSAGetLastError
        self._complete = winsock.WSAProviderCompleteAsyncCall
        self._last_error = winsock.last_error

    def set_last_error(self, code: int) -> None:
        self._set(code)

    def get_last_error(self) -> int:
        value: int = self._get()
        return value

    def complete(self, async_handle: int | None, code: int) -> int:
        rc: int = self._complete(async_handle, code)
        return NO_ERROR if rc == NO_ERROR else self._last_error()


# -- the namespace catalog's Winsock functions ----------------------------------------
# ws2spi.h (WSPAPI is WSAAPI) and winsock2.h; the *32 variants exist only in
# 64-bit ws2_32.dll and work on the 32-bit (WOW64) catalog. nspv2's native host
# exports the four native names with the same signatures (nspv2_host.h).
_LPGUID = ctypes.POINTER(GUID)
CATALOG_FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            name,
            argtypes,
            INT,
            decl,
            f"{name}@{4 * len(argtypes)}",
        )
        for name, argtypes, decl in (
            (
                "WSCInstallNameSpaceEx",
                (LPWSTR, LPWSTR, DWORD, DWORD, _LPGUID, LPBLOB),
                "INT WSAAPI WSCInstallNameSpaceEx(LPWSTR lpszIdentifier, LPWSTR lpszPathName, "
                "DWORD dwNameSpace, DWORD dwVersion, LPGUID lpProviderId, "
                "LPBLOB lpProviderSpecific);",
            ),
            (
                "WSCInstallNameSpaceEx32",
                (LPWSTR, LPWSTR, DWORD, DWORD, _LPGUID, LPBLOB),
                "INT WSAAPI WSCInstallNameSpaceEx32(LPWSTR lpszIdentifier, LPWSTR lpszPathName, "
                "DWORD dwNameSpace, DWORD dwVersion, LPGUID lpProviderId, "
                "LPBLOB lpProviderSpecific);",
            ),
            (
                "WSCUnInstallNameSpace",
                (_LPGUID,),
                "INT WSAAPI WSCUnInstallNameSpace(LPGUID lpProviderId);",
            ),
            (
                "WSCUnInstallNameSpace32",
                (_LPGUID,),
                "INT WSAAPI WSCUnInstallNameSpace32(LPGUID lpProviderId);",
            ),
            (
                "WSCEnableNSProvider",
                (_LPGUID, BOOL),
                "INT WSAAPI WSCEnableNSProvider(LPGUID lpProviderId, BOOL fEnable);",
            ),
            (
                "WSCEnableNSProvider32",
                (_LPGUID, BOOL),
                "INT WSAAPI WSCEnableNSProvider32(LPGUID lpProviderId, BOOL fEnable);",
            ),
            (
                "WSAEnumNameSpaceProvidersExW",
                (LPDWORD, LPWSANAMESPACE_INFOEXW),
                "INT WSAAPI WSAEnumNameSpaceProvidersExW(LPDWORD lpdwBufferLength, "
                "LPWSANAMESPACE_INFOEXW lpnspBuffer);",
            ),
            (
                "WSCEnumNameSpaceProvidersEx32",
                (LPDWORD, LPWSANAMESPACE_INFOEXW),
                "INT WSAAPI WSCEnumNameSpaceProvidersEx32(LPDWORD lpdwBufferLength, "
                "LPWSANAMESPACE_INFOEXW lpnspBuffer);",
            ),
        )
    )
}
#: ws2_32's start-up, needed before WSAEnumNameSpaceProvidersExW (not by the
#: native host's catalog).
_STARTUP = FunctionSpec(
    "WSAStartup",
    (ctypes.c_uint16, ctypes.c_void_p),
    ctypes.c_int,
    "int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);",
    "WSAStartup@8",
)
_CLEANUP = FunctionSpec(
    "WSACleanup", (), ctypes.c_int, "int WSAAPI WSACleanup(void);", "WSACleanup@0"
)


def _bind_spec(library: Any, spec: FunctionSpec, use_last_error: bool) -> Any:
    """``spec`` bound on ``library``. A library object that is not a ctypes
    library (a test double standing for ws2_32.dll) supplies each function
    as a Python callable: it is called through a C function pointer of the
    same prototype, so arguments are converted as for the real function."""
    if hasattr(library, "_handle"):
        return spec.bind(library, use_last_error=use_last_error)
    from ..sdk.wintypes import wsaapi_prototype

    prototype = wsaapi_prototype(spec.restype, *spec.argtypes, use_last_error=use_last_error)
    function = prototype(getattr(library, spec.name))
    function.argtypes = list(spec.argtypes)
    function.restype = spec.restype
    return function


class CatalogFunctions:
    """The namespace catalog's Winsock functions bound on one library, under
    their native names whichever catalog they work on.

    ``wow64=True`` binds ws2_32.dll's 32-bit catalog variants
    (``WSCInstallNameSpaceEx32``, ``WSCUnInstallNameSpace32``,
    ``WSCEnableNSProvider32``, ``WSCEnumNameSpaceProvidersEx32``) under the
    native names. On Windows (``windows``, default: this platform) failures
    are read from ctypes' private last-error copy, as for :class:`Winsock`;
    elsewhere from the library's ``WSAGetLastError``. Nothing is bound until
    the object is made.
    """

    WSCInstallNameSpaceEx: Callable[[Any, Any, int, int, Any, Any], int]
    WSCUnInstallNameSpace: Callable[[Any], int]
    WSCEnableNSProvider: Callable[[Any, int], int]
    WSAEnumNameSpaceProvidersExW: Callable[[Any, Any], int]

    def __init__(
        self,
        library: Any,
        *,
        native_host: bool,
        wow64: bool = False,
        windows: bool | None = None,
    ) -> None:
        self.library = library
        self.native_host = native_host
        self.wow64 = wow64
        self.windows = sys.platform == "win32" if windows is None else windows
        #: the function names called, native name -> name in the library
        self.names = {
            native: native32 if wow64 else native
            for native, native32 in (
                ("WSCInstallNameSpaceEx", "WSCInstallNameSpaceEx32"),
                ("WSCUnInstallNameSpace", "WSCUnInstallNameSpace32"),
                ("WSCEnableNSProvider", "WSCEnableNSProvider32"),
                ("WSAEnumNameSpaceProvidersExW", "WSCEnumNameSpaceProvidersEx32"),
            )
        }
        for native, actual in self.names.items():
            try:
                function = _bind_spec(library, CATALOG_FUNCTIONS[actual], self.windows)
            except AttributeError:
                spec = CATALOG_FUNCTIONS[actual]
                if native_host:
                    function = _absent(actual, library, spec.restype, spec.argtypes)
                else:
                    raise OSError(
                        f"ws2_32.dll has no {actual}"
                        + (
                            " (the 32-bit catalog's functions are in 64-bit Windows only)"
                            if wow64
                            else " (Windows Vista or later has it)"
                        )
                    ) from None
            setattr(self, native, function)
        if native_host:
            self._get_error = HOST_FUNCTIONS["WSAGetLastError"].bind(library)
            self.startup: Any = None
            self.cleanup: Any = None
        else:
            self._get_error = None
            self.startup = _bind_spec(library, _STARTUP, False)
            self.cleanup = _bind_spec(library, _CLEANUP, False)

    def last_error(self) -> int:
        """The code the last failed catalog call set on this thread."""
        if self.windows:
            get_last_error: Callable[[], int] = getattr(ctypes, "get_last_error")  # noqa: B009
            return int(get_last_error())
        assert self._get_error is not None
        return int(self._get_error())


def load_ws2_32() -> Winsock:
    """Bind the real ``ws2_32.dll`` (Windows only)."""
    if sys.platform != "win32":
        raise OSError("ws2_32.dll exists only on Windows; use load_native_host() elsewhere")
    windll = getattr(ctypes, "WinDLL")  # noqa: B009 - absent from typeshed off Windows
    # The library object's own flags do not matter: Winsock binds every
    # function through its own prototype (see Winsock for use_last_error).
    return Winsock(windll("ws2_32"), native_host=False)


def load_native_host() -> Winsock:
    """Bind nspv2's native host library (see :mod:`nspv2.host.native`)."""
    from .native import load_library

    return Winsock(load_library(), native_host=True)
