"""winsock2.h: query sets, namespace structures, lookup flags and error codes.

Structures are declared exactly as the Windows SDK declares them (names and
field order). They use nspv2's fixed-width types, so the same definitions
describe the Windows layout on any host; :mod:`nspv2.sdk.layout` derives the x86 and
x64 layouts from them.
"""

from __future__ import annotations

import ctypes
import enum
from typing import TYPE_CHECKING

from .guiddef import GUID, LPGUID
from .wintypes import BOOL, BYTE, DWORD, INT, LPSTR, LPVOID, LPWSTR, ULONG
from .ws2def import LPCSADDR_INFO

if TYPE_CHECKING:
    from .ws2def import CSADDR_INFO

__all__ = [
    "AFPROTOCOLS",
    "BLOB",
    "LPAFPROTOCOLS",
    "LPBLOB",
    "LPWSANAMESPACE_INFOEXW",
    "LPWSANSCLASSINFOW",
    "LPWSAQUERYSET2A",
    "LPWSAQUERYSET2W",
    "LPWSAQUERYSETW",
    "LPWSAVERSION",
    "LUP",
    "NO_ERROR",
    "NS",
    "PAFPROTOCOLS",
    "PBLOB",
    "PWSANAMESPACE_INFOEXW",
    "PWSANSCLASSINFOW",
    "PWSAQUERYSET2A",
    "PWSAQUERYSET2W",
    "PWSAQUERYSETW",
    "PWSAVERSION",
    "RESULT_IS",
    "SERVICE_MULTIPLE",
    "SOCKET_ERROR",
    "WSAECOMPARATOR",
    "WSAESETSERVICEOP",
    "WSANAMESPACE_INFOEXW",
    "WSANSCLASSINFOW",
    "WSAQUERYSET2A",
    "WSAQUERYSET2W",
    "WSAQUERYSETW",
    "WSAVERSION",
    "WSAError",
    "error_meaning",
]

# #define SOCKET_ERROR (-1)
SOCKET_ERROR = -1
# #define NO_ERROR 0L
NO_ERROR = 0
# #define SERVICE_MULTIPLE (0x00000001)
SERVICE_MULTIPLE = 0x00000001


class NS(enum.IntEnum):
    """Name spaces (``dwNameSpace``). NS_EMAIL is the NSPv2 namespace of Vista."""

    NS_ALL = 0
    NS_SAP = 1
    NS_NDS = 2
    NS_PEER_BROWSE = 3
    NS_SLP = 5
    NS_DHCP = 6
    NS_TCPIP_LOCAL = 10
    NS_TCPIP_HOSTS = 11
    NS_DNS = 12
    NS_NETBT = 13
    NS_WINS = 14
    NS_NLA = 15
    NS_BTH = 16
    NS_LOCALNAME = 19
    NS_NBP = 20
    NS_MS = 30
    NS_STDA = 31
    NS_NTDS = 32
    NS_EMAIL = 37
    NS_PNRPNAME = 38
    NS_PNRPCLOUD = 39
    NS_X500 = 40
    NS_NIS = 41
    NS_NISPLUS = 42
    NS_WRQ = 50
    NS_NETDES = 60
    # Aliases the headers define with the same values.
    NS_DEFAULT = 0
    NS_VNS = 50


class LUP(enum.IntFlag):
    """Lookup control flags (``dwControlFlags`` of Begin and NextEx)."""

    LUP_DEEP = 0x0001
    LUP_CONTAINERS = 0x0002
    LUP_NOCONTAINERS = 0x0004
    LUP_NEAREST = 0x0008
    LUP_RETURN_NAME = 0x0010
    LUP_RETURN_TYPE = 0x0020
    LUP_RETURN_VERSION = 0x0040
    LUP_RETURN_COMMENT = 0x0080
    LUP_RETURN_ADDR = 0x0100
    LUP_RETURN_BLOB = 0x0200
    LUP_RETURN_ALIASES = 0x0400
    LUP_RETURN_QUERY_STRING = 0x0800
    LUP_RETURN_ALL = 0x0FF0
    LUP_FLUSHCACHE = 0x1000
    LUP_FLUSHPREVIOUS = 0x2000
    LUP_NON_AUTHORITATIVE = 0x4000
    LUP_RES_SERVICE = 0x8000
    LUP_RETURN_PREFERRED_NAMES = 0x10000
    LUP_DNS_ONLY = 0x20000
    LUP_ADDRCONFIG = 0x100000
    LUP_DUAL_ADDR = 0x200000
    LUP_FILESERVER = 0x400000
    LUP_DISABLE_IDN_ENCODING = 0x00800000
    LUP_API_ANSI = 0x01000000
    LUP_RESOLUTION_HANDLE = 0x80000000
    # LUP_SECURE shares its value with LUP_RES_SERVICE in the SDK.
    LUP_SECURE = 0x8000


class RESULT_IS(enum.IntFlag):
    """Result flags (``dwOutputFlags`` of a returned query set)."""

    RESULT_IS_ALIAS = 0x0001
    RESULT_IS_ADDED = 0x0010
    RESULT_IS_CHANGED = 0x0020
    RESULT_IS_DELETED = 0x0040


# typedef enum _WSAEcomparator { COMP_EQUAL = 0, COMP_NOTLESS } WSAECOMPARATOR;
class WSAECOMPARATOR(enum.IntEnum):
    """How a WSAVERSION is compared with a service's version."""

    COMP_EQUAL = 0
    COMP_NOTLESS = 1


# typedef enum _WSAESETSERVICEOP {
#     RNRSERVICE_REGISTER = 0, RNRSERVICE_DEREGISTER, RNRSERVICE_DELETE
# } WSAESETSERVICEOP;
class WSAESETSERVICEOP(enum.IntEnum):
    """The operation of a set-service call."""

    RNRSERVICE_REGISTER = 0
    RNRSERVICE_DEREGISTER = 1
    RNRSERVICE_DELETE = 2


class WSAError(enum.IntEnum):
    """Winsock error codes an NSPv2 provider or host can meet."""

    WSA_INVALID_HANDLE = 6
    WSA_NOT_ENOUGH_MEMORY = 8
    WSA_INVALID_PARAMETER = 87
    WSA_OPERATION_ABORTED = 995
    WSA_IO_INCOMPLETE = 996
    WSA_IO_PENDING = 997
    WSAEINTR = 10004
    WSAEACCES = 10013
    WSAEFAULT = 10014
    WSAEINVAL = 10022
    WSAEWOULDBLOCK = 10035
    WSAEINPROGRESS = 10036
    WSAEALREADY = 10037
    WSAEPROTONOSUPPORT = 10043
    WSAEOPNOTSUPP = 10045
    WSAEPFNOSUPPORT = 10046
    WSAEAFNOSUPPORT = 10047
    WSAENOBUFS = 10055
    WSAETIMEDOUT = 10060
    WSASYSNOTREADY = 10091
    WSAVERNOTSUPPORTED = 10092
    WSANOTINITIALISED = 10093
    WSAENOMORE = 10102
    WSAECANCELLED = 10103
    WSAEINVALIDPROCTABLE = 10104
    WSAEINVALIDPROVIDER = 10105
    WSAEPROVIDERFAILEDINIT = 10106
    WSASYSCALLFAILURE = 10107
    WSASERVICE_NOT_FOUND = 10108
    WSATYPE_NOT_FOUND = 10109
    WSA_E_NO_MORE = 10110
    WSA_E_CANCELLED = 10111
    WSAEREFUSED = 10112
    WSAHOST_NOT_FOUND = 11001
    WSATRY_AGAIN = 11002
    WSANO_RECOVERY = 11003
    WSANO_DATA = 11004


_MEANINGS: dict[int, str] = {
    NO_ERROR: "success",
    WSAError.WSA_INVALID_HANDLE: "the handle is not a valid, open handle",
    WSAError.WSA_NOT_ENOUGH_MEMORY: "not enough memory",
    WSAError.WSA_INVALID_PARAMETER: "a parameter is invalid",
    WSAError.WSA_OPERATION_ABORTED: "the overlapped operation was aborted",
    WSAError.WSA_IO_INCOMPLETE: "the overlapped operation is not complete",
    WSAError.WSA_IO_PENDING: "the overlapped operation will complete later",
    WSAError.WSAEINTR: "the call was interrupted",
    WSAError.WSAEACCES: "permission denied",
    WSAError.WSAEFAULT: "bad address, or the buffer is too small",
    WSAError.WSAEINVAL: "invalid argument",
    WSAError.WSAEWOULDBLOCK: "the operation would block",
    WSAError.WSAEINPROGRESS: "a blocking operation is in progress on this thread",
    WSAError.WSAEALREADY: "an operation is already in progress",
    WSAError.WSAEPROTONOSUPPORT: "protocol not supported",
    WSAError.WSAEOPNOTSUPP: "operation not supported",
    WSAError.WSAEPFNOSUPPORT: "protocol family not supported",
    WSAError.WSAEAFNOSUPPORT: "address family not supported",
    WSAError.WSAENOBUFS: "no buffer space available",
    WSAError.WSAETIMEDOUT: "the operation timed out",
    WSAError.WSASYSNOTREADY: "the network subsystem is unavailable",
    WSAError.WSAVERNOTSUPPORTED: "Winsock version not supported",
    WSAError.WSANOTINITIALISED: "WSAStartup has not been called",
    WSAError.WSAENOMORE: "no more results (old code)",
    WSAError.WSAECANCELLED: "the call was cancelled (old code)",
    WSAError.WSAEINVALIDPROCTABLE: "the provider's procedure table is invalid",
    WSAError.WSAEINVALIDPROVIDER: "the provider is invalid",
    WSAError.WSAEPROVIDERFAILEDINIT: "the provider failed to initialize",
    WSAError.WSASYSCALLFAILURE: "a system call that should never fail failed",
    WSAError.WSASERVICE_NOT_FOUND: "no such service in the namespace",
    WSAError.WSATYPE_NOT_FOUND: "the class type was not found",
    WSAError.WSA_E_NO_MORE: "no more results",
    WSAError.WSA_E_CANCELLED: "the lookup was cancelled",
    WSAError.WSAEREFUSED: "the query was refused",
    WSAError.WSAHOST_NOT_FOUND: "host not found",
    WSAError.WSATRY_AGAIN: "nonauthoritative host not found, try again",
    WSAError.WSANO_RECOVERY: "a nonrecoverable error occurred",
    WSAError.WSANO_DATA: "valid name, no data record of the requested type",
}


def code_name(code: int) -> str:
    """``NO_ERROR``, the WSAError name (``WSAEINVAL``), or the number."""
    if code == NO_ERROR:
        return "NO_ERROR"
    try:
        return WSAError(code).name
    except ValueError:
        return str(code)


def error_meaning(code: int) -> str:
    """Return the symbolic name and a short meaning, e.g. ``WSAEINVAL (invalid argument)``."""
    if code == NO_ERROR:
        return "NO_ERROR (success)"
    try:
        member = WSAError(code)
    except ValueError:
        return f"error {code}"
    return f"{member.name} ({_MEANINGS[member]})"


# typedef struct _BLOB {            (wtypesbase.h / nspapi.h, reached through winsock2.h)
#     ULONG cbSize;
#     BYTE *pBlobData;
# } BLOB, *LPBLOB;
class BLOB(ctypes.Structure):
    if TYPE_CHECKING:
        cbSize: int
        pBlobData: ctypes._Pointer[ctypes.c_uint8]

    _fields_ = [
        ("cbSize", ULONG),
        ("pBlobData", ctypes.POINTER(BYTE)),
    ]


PBLOB = ctypes.POINTER(BLOB)
LPBLOB = PBLOB


# typedef struct _WSAVersion {
#     DWORD dwVersion;
#     WSAECOMPARATOR ecHow;
# } WSAVERSION, *PWSAVERSION, *LPWSAVERSION;
class WSAVERSION(ctypes.Structure):
    if TYPE_CHECKING:
        dwVersion: int
        ecHow: int

    _fields_ = [
        ("dwVersion", DWORD),
        ("ecHow", INT),  # WSAECOMPARATOR: a C enum, 4 bytes
    ]


PWSAVERSION = ctypes.POINTER(WSAVERSION)
LPWSAVERSION = PWSAVERSION


# typedef struct _AFPROTOCOLS {
#     INT iAddressFamily;
#     INT iProtocol;
# } AFPROTOCOLS, *PAFPROTOCOLS, *LPAFPROTOCOLS;
class AFPROTOCOLS(ctypes.Structure):
    if TYPE_CHECKING:
        iAddressFamily: int
        iProtocol: int

    _fields_ = [
        ("iAddressFamily", INT),
        ("iProtocol", INT),
    ]


PAFPROTOCOLS = ctypes.POINTER(AFPROTOCOLS)
LPAFPROTOCOLS = PAFPROTOCOLS


# typedef struct _WSAQuerySetW {
#     DWORD dwSize;
#     LPWSTR lpszServiceInstanceName;
#     LPGUID lpServiceClassId;
#     LPWSAVERSION lpVersion;
#     LPWSTR lpszComment;
#     DWORD dwNameSpace;
#     LPGUID lpNSProviderId;
#     LPWSTR lpszContext;
#     DWORD dwNumberOfProtocols;
#     LPAFPROTOCOLS lpafpProtocols;
#     LPWSTR lpszQueryString;
#     DWORD dwNumberOfCsAddrs;
#     LPCSADDR_INFO lpcsaBuffer;
#     DWORD dwOutputFlags;
#     LPBLOB lpBlob;
# } WSAQUERYSETW, *PWSAQUERYSETW, *LPWSAQUERYSETW;
class WSAQUERYSETW(ctypes.Structure):
    """The client-side query set (with a service class id)."""

    if TYPE_CHECKING:
        dwSize: int
        lpszServiceInstanceName: ctypes._Pointer[ctypes.c_uint16]
        lpServiceClassId: ctypes._Pointer[GUID]
        lpVersion: ctypes._Pointer[WSAVERSION]
        lpszComment: ctypes._Pointer[ctypes.c_uint16]
        dwNameSpace: int
        lpNSProviderId: ctypes._Pointer[GUID]
        lpszContext: ctypes._Pointer[ctypes.c_uint16]
        dwNumberOfProtocols: int
        lpafpProtocols: ctypes._Pointer[AFPROTOCOLS]
        lpszQueryString: ctypes._Pointer[ctypes.c_uint16]
        dwNumberOfCsAddrs: int
        lpcsaBuffer: ctypes._Pointer[CSADDR_INFO]
        dwOutputFlags: int
        lpBlob: ctypes._Pointer[BLOB]

    _fields_ = [
        ("dwSize", DWORD),
        ("lpszServiceInstanceName", LPWSTR),
        ("lpServiceClassId", LPGUID),
        ("lpVersion", LPWSAVERSION),
        ("lpszComment", LPWSTR),
        ("dwNameSpace", DWORD),
        ("lpNSProviderId", LPGUID),
        ("lpszContext", LPWSTR),
        ("dwNumberOfProtocols", DWORD),
        ("lpafpProtocols", LPAFPROTOCOLS),
        ("lpszQueryString", LPWSTR),
        ("dwNumberOfCsAddrs", DWORD),
        ("lpcsaBuffer", LPCSADDR_INFO),
        ("dwOutputFlags", DWORD),
        ("lpBlob", LPBLOB),
    ]


PWSAQUERYSETW = ctypes.POINTER(WSAQUERYSETW)
LPWSAQUERYSETW = PWSAQUERYSETW


# typedef struct _WSAQuerySet2W {
#     DWORD dwSize;
#     LPWSTR lpszServiceInstanceName;
#     LPWSAVERSION lpVersion;
#     LPWSTR lpszComment;
#     DWORD dwNameSpace;
#     LPGUID lpNSProviderId;
#     LPWSTR lpszContext;
#     DWORD dwNumberOfProtocols;
#     LPAFPROTOCOLS lpafpProtocols;
#     LPWSTR lpszQueryString;
#     DWORD dwNumberOfCsAddrs;
#     LPCSADDR_INFO lpcsaBuffer;
#     DWORD dwOutputFlags;
#     LPBLOB lpBlob;
# } WSAQUERYSET2W, *PWSAQUERYSET2W, *LPWSAQUERYSET2W;
class WSAQUERYSET2W(ctypes.Structure):
    """The NSPv2 query set: WSAQUERYSETW without ``lpServiceClassId``."""

    if TYPE_CHECKING:
        dwSize: int
        lpszServiceInstanceName: ctypes._Pointer[ctypes.c_uint16]
        lpVersion: ctypes._Pointer[WSAVERSION]
        lpszComment: ctypes._Pointer[ctypes.c_uint16]
        dwNameSpace: int
        lpNSProviderId: ctypes._Pointer[GUID]
        lpszContext: ctypes._Pointer[ctypes.c_uint16]
        dwNumberOfProtocols: int
        lpafpProtocols: ctypes._Pointer[AFPROTOCOLS]
        lpszQueryString: ctypes._Pointer[ctypes.c_uint16]
        dwNumberOfCsAddrs: int
        lpcsaBuffer: ctypes._Pointer[CSADDR_INFO]
        dwOutputFlags: int
        lpBlob: ctypes._Pointer[BLOB]

    _fields_ = [
        ("dwSize", DWORD),
        ("lpszServiceInstanceName", LPWSTR),
        ("lpVersion", LPWSAVERSION),
        ("lpszComment", LPWSTR),
        ("dwNameSpace", DWORD),
        ("lpNSProviderId", LPGUID),
        ("lpszContext", LPWSTR),
        ("dwNumberOfProtocols", DWORD),
        ("lpafpProtocols", LPAFPROTOCOLS),
        ("lpszQueryString", LPWSTR),
        ("dwNumberOfCsAddrs", DWORD),
        ("lpcsaBuffer", LPCSADDR_INFO),
        ("dwOutputFlags", DWORD),
        ("lpBlob", LPBLOB),
    ]


PWSAQUERYSET2W = ctypes.POINTER(WSAQUERYSET2W)
LPWSAQUERYSET2W = PWSAQUERYSET2W


# typedef struct _WSAQuerySet2A { ...as WSAQUERYSET2W with LPSTR strings... }
#     WSAQUERYSET2A, *PWSAQUERYSET2A, *LPWSAQUERYSET2A;
class WSAQUERYSET2A(ctypes.Structure):
    """The ANSI twin of WSAQUERYSET2W (same layout, ``LPSTR`` strings)."""

    _fields_ = [
        ("dwSize", DWORD),
        ("lpszServiceInstanceName", LPSTR),
        ("lpVersion", LPWSAVERSION),
        ("lpszComment", LPSTR),
        ("dwNameSpace", DWORD),
        ("lpNSProviderId", LPGUID),
        ("lpszContext", LPSTR),
        ("dwNumberOfProtocols", DWORD),
        ("lpafpProtocols", LPAFPROTOCOLS),
        ("lpszQueryString", LPSTR),
        ("dwNumberOfCsAddrs", DWORD),
        ("lpcsaBuffer", LPCSADDR_INFO),
        ("dwOutputFlags", DWORD),
        ("lpBlob", LPBLOB),
    ]


PWSAQUERYSET2A = ctypes.POINTER(WSAQUERYSET2A)
LPWSAQUERYSET2A = PWSAQUERYSET2A


# typedef struct _WSANSClassInfoW {
#     LPWSTR lpszName;
#     DWORD dwNameSpace;
#     DWORD dwValueType;
#     DWORD dwValueSize;
#     LPVOID lpValue;
# } WSANSCLASSINFOW, *PWSANSCLASSINFOW, *LPWSANSCLASSINFOW;
class WSANSCLASSINFOW(ctypes.Structure):
    if TYPE_CHECKING:
        lpszName: ctypes._Pointer[ctypes.c_uint16]
        dwNameSpace: int
        dwValueType: int
        dwValueSize: int
        lpValue: int | None

    _fields_ = [
        ("lpszName", LPWSTR),
        ("dwNameSpace", DWORD),
        ("dwValueType", DWORD),
        ("dwValueSize", DWORD),
        ("lpValue", LPVOID),
    ]


PWSANSCLASSINFOW = ctypes.POINTER(WSANSCLASSINFOW)
LPWSANSCLASSINFOW = PWSANSCLASSINFOW


# typedef struct _WSANAMESPACE_INFOEXW {
#     GUID NSProviderId;
#     DWORD dwNameSpace;
#     BOOL fActive;
#     DWORD dwVersion;
#     LPWSTR lpszIdentifier;
#     BLOB ProviderSpecific;
# } WSANAMESPACE_INFOEXW, *PWSANAMESPACE_INFOEXW, *LPWSANAMESPACE_INFOEXW;
class WSANAMESPACE_INFOEXW(ctypes.Structure):
    if TYPE_CHECKING:
        NSProviderId: GUID
        dwNameSpace: int
        fActive: int
        dwVersion: int
        lpszIdentifier: ctypes._Pointer[ctypes.c_uint16]
        ProviderSpecific: BLOB

    _fields_ = [
        ("NSProviderId", GUID),
        ("dwNameSpace", DWORD),
        ("fActive", BOOL),
        ("dwVersion", DWORD),
        ("lpszIdentifier", LPWSTR),
        ("ProviderSpecific", BLOB),
    ]


PWSANAMESPACE_INFOEXW = ctypes.POINTER(WSANAMESPACE_INFOEXW)
LPWSANAMESPACE_INFOEXW = PWSANAMESPACE_INFOEXW
