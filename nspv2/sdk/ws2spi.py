"""ws2spi.h: the NSPv2 entry-point prototypes, NSPV2_ROUTINE and host functions.

Signatures follow the Windows SDK, not mingw-w64: in the SDK,
``NSPv2LookupServiceNextEx``, ``NSPv2SetServiceEx`` and
``NSPv2ClientSessionRundown`` return VOID (the first two complete through
``WSAProviderCompleteAsyncCall``), and ``WSAAdvertiseProvider`` takes one
pointer to the routine table. See ``docs/abi.md``.

Nothing is loaded at import: :data:`HOST_FUNCTIONS` describes each host
function (argtypes, restype, x86 export name) and :meth:`FunctionSpec.bind`
applies a description to a function of any library object.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .guiddef import GUID, LPGUID
from .winsock2 import LPBLOB, LPWSAQUERYSET2W
from .wintypes import (
    DWORD,
    HANDLE,
    INT,
    LPDWORD,
    LPHANDLE,
    LPVOID,
    LPWSTR,
    WSAAPI_FUNCTYPE,
    wsaapi_prototype,
)

__all__ = [
    "HOST_FUNCTIONS",
    "LPCNSPV2_ROUTINE",
    "LPNSPV2CLEANUP",
    "LPNSPV2CLIENTSESSIONRUNDOWN",
    "LPNSPV2LOOKUPSERVICEBEGIN",
    "LPNSPV2LOOKUPSERVICEEND",
    "LPNSPV2LOOKUPSERVICENEXTEX",
    "LPNSPV2SETSERVICEEX",
    "LPNSPV2STARTUP",
    "LPNSPV2_ROUTINE",
    "NSPV2_ROUTINE",
    "NSPV2_SLOTS",
    "PNSPV2_ROUTINE",
    "PROTOTYPES",
    "FunctionSpec",
    "Prototype",
    "address_functype",
]

# WSAESETSERVICEOP is a C enum: 4 bytes, passed as an int.
_WSAESETSERVICEOP = INT

# typedef INT (WSAAPI *LPNSPV2STARTUP)(
#     LPGUID lpProviderId,
#     LPVOID *ppvClientSessionArg);                    /* [out] */
LPNSPV2STARTUP = WSAAPI_FUNCTYPE(INT, LPGUID, ctypes.POINTER(LPVOID))

# typedef INT (WSAAPI *LPNSPV2CLEANUP)(
#     LPGUID lpProviderId,
#     LPVOID pvClientSessionArg);
LPNSPV2CLEANUP = WSAAPI_FUNCTYPE(INT, LPGUID, LPVOID)

# typedef INT (WSAAPI *LPNSPV2LOOKUPSERVICEBEGIN)(
#     LPGUID lpProviderId,
#     LPWSAQUERYSET2W lpqsRestrictions,
#     DWORD dwControlFlags,
#     LPVOID lpvClientSessionArg,
#     LPHANDLE lphLookup);                             /* [out] */
LPNSPV2LOOKUPSERVICEBEGIN = WSAAPI_FUNCTYPE(INT, LPGUID, LPWSAQUERYSET2W, DWORD, LPVOID, LPHANDLE)

# typedef VOID (WSAAPI *LPNSPV2LOOKUPSERVICENEXTEX)(
#     HANDLE hAsyncCall,
#     HANDLE hLookup,
#     DWORD dwControlFlags,
#     LPDWORD lpdwBufferLength,                        /* [in, out] */
#     LPWSAQUERYSET2W lpqsResults);                    /* [out] */
LPNSPV2LOOKUPSERVICENEXTEX = WSAAPI_FUNCTYPE(None, HANDLE, HANDLE, DWORD, LPDWORD, LPWSAQUERYSET2W)

# typedef INT (WSAAPI *LPNSPV2LOOKUPSERVICEEND)(
#     HANDLE hLookup);
LPNSPV2LOOKUPSERVICEEND = WSAAPI_FUNCTYPE(INT, HANDLE)

# typedef VOID (WSAAPI *LPNSPV2SETSERVICEEX)(
#     HANDLE hAsyncCall,
#     LPGUID lpProviderId,
#     LPWSAQUERYSET2W lpqsRegInfo,
#     WSAESETSERVICEOP essOperation,
#     DWORD dwControlFlags,
#     LPVOID lpvClientSessionArg);
LPNSPV2SETSERVICEEX = WSAAPI_FUNCTYPE(
    None, HANDLE, LPGUID, LPWSAQUERYSET2W, _WSAESETSERVICEOP, DWORD, LPVOID
)

# typedef VOID (WSAAPI *LPNSPV2CLIENTSESSIONRUNDOWN)(
#     LPGUID lpProviderId,
#     LPVOID pvClientSessionArg);
LPNSPV2CLIENTSESSIONRUNDOWN = WSAAPI_FUNCTYPE(None, LPGUID, LPVOID)


# typedef struct _NSPV2_ROUTINE {
#     DWORD cbSize;
#     DWORD dwMajorVersion;
#     DWORD dwMinorVersion;
#     LPNSPV2STARTUP NSPv2Startup;
#     LPNSPV2CLEANUP NSPv2Cleanup;
#     LPNSPV2LOOKUPSERVICEBEGIN NSPv2LookupServiceBegin;
#     LPNSPV2LOOKUPSERVICENEXTEX NSPv2LookupServiceNextEx;
#     LPNSPV2LOOKUPSERVICEEND NSPv2LookupServiceEnd;
#     LPNSPV2SETSERVICEEX NSPv2SetServiceEx;
#     LPNSPV2CLIENTSESSIONRUNDOWN NSPv2ClientSessionRundown;
# } NSPV2_ROUTINE, *PNSPV2_ROUTINE, *LPNSPV2_ROUTINE;
# typedef const NSPV2_ROUTINE *LPCNSPV2_ROUTINE;
class NSPV2_ROUTINE(ctypes.Structure):
    """The routine table an NSPv2 provider hands to ``WSAAdvertiseProvider``."""

    if TYPE_CHECKING:
        cbSize: int
        dwMajorVersion: int
        dwMinorVersion: int
        NSPv2Startup: Any
        NSPv2Cleanup: Any
        NSPv2LookupServiceBegin: Any
        NSPv2LookupServiceNextEx: Any
        NSPv2LookupServiceEnd: Any
        NSPv2SetServiceEx: Any
        NSPv2ClientSessionRundown: Any

    _fields_ = [
        ("cbSize", DWORD),
        ("dwMajorVersion", DWORD),
        ("dwMinorVersion", DWORD),
        ("NSPv2Startup", LPNSPV2STARTUP),
        ("NSPv2Cleanup", LPNSPV2CLEANUP),
        ("NSPv2LookupServiceBegin", LPNSPV2LOOKUPSERVICEBEGIN),
        ("NSPv2LookupServiceNextEx", LPNSPV2LOOKUPSERVICENEXTEX),
        ("NSPv2LookupServiceEnd", LPNSPV2LOOKUPSERVICEEND),
        ("NSPv2SetServiceEx", LPNSPV2SETSERVICEEX),
        ("NSPv2ClientSessionRundown", LPNSPV2CLIENTSESSIONRUNDOWN),
    ]


PNSPV2_ROUTINE = ctypes.POINTER(NSPV2_ROUTINE)
LPNSPV2_ROUTINE = PNSPV2_ROUTINE
LPCNSPV2_ROUTINE = PNSPV2_ROUTINE


class Returns(enum.Enum):
    """What an entry point returns, per the SDK."""

    INT = "INT"
    VOID = "VOID"


@dataclass(frozen=True)
class Prototype:
    """One NSPv2 entry point: its slot in NSPV2_ROUTINE and its C signature."""

    slot: str
    typedef: str
    functype: Any
    returns: Returns
    params: tuple[tuple[str, str], ...]

    @property
    def argcount(self) -> int:
        return len(self.params)

    def c_declaration(self) -> str:
        args = ",\n    ".join(f"{ctype} {name}" for ctype, name in self.params)
        return f"typedef {self.returns.value} (WSAAPI *{self.typedef})(\n    {args});"

    @property
    def address_functype(self) -> Any:
        """The same C signature with every pointer and handle as ``LPVOID``.

        Derived from :attr:`functype`: each argument whose type is a pointer
        (``POINTER(...)``) or ``void *`` (``LPVOID``, ``HANDLE``) becomes
        ``LPVOID``, which ctypes hands Python as a plain ``int`` (or None for
        NULL); every other argument and the return type are kept. Same ABI,
        no ctypes pointer object built per call.
        """
        return address_functype(self.functype)


def _is_address(ctype: Any) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, (ctypes._Pointer, ctypes.c_void_p))


def address_functype(functype: Any) -> Any:
    """``functype`` (a WSAAPI_FUNCTYPE) with its pointer arguments as ``LPVOID``."""
    argtypes = tuple(LPVOID if _is_address(t) else t for t in functype._argtypes_)
    return WSAAPI_FUNCTYPE(functype._restype_, *argtypes)


PROTOTYPES: tuple[Prototype, ...] = (
    Prototype(
        "NSPv2Startup",
        "LPNSPV2STARTUP",
        LPNSPV2STARTUP,
        Returns.INT,
        (("LPGUID", "lpProviderId"), ("LPVOID *", "ppvClientSessionArg")),
    ),
    Prototype(
        "NSPv2Cleanup",
        "LPNSPV2CLEANUP",
        LPNSPV2CLEANUP,
        Returns.INT,
        (("LPGUID", "lpProviderId"), ("LPVOID", "pvClientSessionArg")),
    ),
    Prototype(
        "NSPv2LookupServiceBegin",
        "LPNSPV2LOOKUPSERVICEBEGIN",
        LPNSPV2LOOKUPSERVICEBEGIN,
        Returns.INT,
        (
            ("LPGUID", "lpProviderId"),
            ("LPWSAQUERYSET2W", "lpqsRestrictions"),
            ("DWORD", "dwControlFlags"),
            ("LPVOID", "lpvClientSessionArg"),
            ("LPHANDLE", "lphLookup"),
        ),
    ),
    Prototype(
        "NSPv2LookupServiceNextEx",
        "LPNSPV2LOOKUPSERVICENEXTEX",
        LPNSPV2LOOKUPSERVICENEXTEX,
        Returns.VOID,
        (
            ("HANDLE", "hAsyncCall"),
            ("HANDLE", "hLookup"),
            ("DWORD", "dwControlFlags"),
            ("LPDWORD", "lpdwBufferLength"),
            ("LPWSAQUERYSET2W", "lpqsResults"),
        ),
    ),
    Prototype(
        "NSPv2LookupServiceEnd",
        "LPNSPV2LOOKUPSERVICEEND",
        LPNSPV2LOOKUPSERVICEEND,
        Returns.INT,
        (("HANDLE", "hLookup"),),
    ),
    Prototype(
        "NSPv2SetServiceEx",
        "LPNSPV2SETSERVICEEX",
        LPNSPV2SETSERVICEEX,
        Returns.VOID,
        (
            ("HANDLE", "hAsyncCall"),
            ("LPGUID", "lpProviderId"),
            ("LPWSAQUERYSET2W", "lpqsRegInfo"),
            ("WSAESETSERVICEOP", "essOperation"),
            ("DWORD", "dwControlFlags"),
            ("LPVOID", "lpvClientSessionArg"),
        ),
    ),
    Prototype(
        "NSPv2ClientSessionRundown",
        "LPNSPV2CLIENTSESSIONRUNDOWN",
        LPNSPV2CLIENTSESSIONRUNDOWN,
        Returns.VOID,
        (("LPGUID", "lpProviderId"), ("LPVOID", "pvClientSessionArg")),
    ),
)

#: Slot names of NSPV2_ROUTINE in table order.
NSPV2_SLOTS: tuple[str, ...] = tuple(p.slot for p in PROTOTYPES)


@dataclass(frozen=True)
class FunctionSpec:
    """A host function's foreign signature, to be bound to any library."""

    name: str
    argtypes: tuple[Any, ...]
    restype: Any
    c_declaration: str
    x86_export: str

    def bind(self, library: Any, *, use_last_error: bool = False) -> Any:
        """Return the function ``name`` of ``library``, typed, as a fresh object.

        The calling convention comes from the prototype, never from the
        library object: :func:`~nspv2.sdk.wintypes.wsaapi_prototype` is
        ``WINFUNCTYPE`` on Windows (stdcall, which the x86 host DLL and
        ws2_32.dll use) even when ``library`` is a ``CDLL``. The symbol is
        the undecorated ``name``, as ws2_32.dll and the x86 host DLL export
        it; ``x86_export`` is the stdcall-decorated spelling, for reference.

        ``use_last_error=True`` makes ctypes swap the thread's Windows last
        error with its private copy around the call (read it back with
        ``ctypes.get_last_error()``): right for a call whose failure Python
        reads afterwards, wrong for ``WSASetLastError`` called by a provider,
        whose value the swap-back would take away from ws2_32 (see
        :class:`nspv2.host.winsock.Winsock`). Off Windows ctypes ignores it.
        """
        prototype = wsaapi_prototype(self.restype, *self.argtypes, use_last_error=use_last_error)
        function = prototype((self.name, library))
        function.__name__ = self.name
        function.argtypes = list(self.argtypes)
        function.restype = self.restype
        return function


def _spec(name: str, restype: Any, argtypes: tuple[Any, ...], decl: str) -> FunctionSpec:
    # Pointers are 4 bytes on x86, so every argument here takes one 4-byte slot.
    stack_bytes = 4 * len(argtypes)
    return FunctionSpec(name, argtypes, restype, decl, f"{name}@{stack_bytes}")


HOST_FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "WSAAdvertiseProvider",
            INT,
            (ctypes.POINTER(GUID), LPCNSPV2_ROUTINE),
            "INT WSAAPI WSAAdvertiseProvider(const GUID *puuidProviderId, "
            "const NSPV2_ROUTINE *pNSPv2Routine);",
        ),
        _spec(
            "WSAUnadvertiseProvider",
            INT,
            (ctypes.POINTER(GUID),),
            "INT WSAAPI WSAUnadvertiseProvider(const GUID *puuidProviderId);",
        ),
        _spec(
            "WSAProviderCompleteAsyncCall",
            INT,
            (HANDLE, INT),
            "INT WSAAPI WSAProviderCompleteAsyncCall(HANDLE hAsyncCall, INT iRetCode);",
        ),
        _spec(
            "WSASetLastError",
            None,
            (INT,),
            "void WSAAPI WSASetLastError(int iError);",
        ),
        _spec(
            "WSAGetLastError",
            INT,
            (),
            "int WSAAPI WSAGetLastError(void);",
        ),
        _spec(
            "WSCInstallNameSpaceEx",
            INT,
            (LPWSTR, LPWSTR, DWORD, DWORD, LPGUID, LPBLOB),
            "INT WSAAPI WSCInstallNameSpaceEx(LPWSTR lpszIdentifier, LPWSTR lpszPathName, "
            "DWORD dwNameSpace, DWORD dwVersion, LPGUID lpProviderId, LPBLOB lpProviderSpecific);",
        ),
        _spec(
            "WSCUnInstallNameSpace",
            INT,
            (LPGUID,),
            "INT WSAAPI WSCUnInstallNameSpace(LPGUID lpProviderId);",
        ),
    )
}
