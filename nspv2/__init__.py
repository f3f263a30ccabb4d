"""nspv2: a toolkit for Winsock namespace service providers of version 2.

The ABI definitions live in one module per Windows header
(:mod:`nspv2.wintypes`, :mod:`nspv2.guiddef`, :mod:`nspv2.ws2def`,
:mod:`nspv2.ws2ipdef`, :mod:`nspv2.winsock2`, :mod:`nspv2.ws2spi`,
:mod:`nspv2.nsemail`, :mod:`nspv2.msgrua`, :mod:`nspv2.msgrpriv`,
:mod:`nspv2.iphlpapi`); the most used names are re-exported here.
Importing nspv2 loads no library.
"""

from .channel import ErrorChannel, InProcessChannel
from .errors import WinsockError
from .guiddef import GUID
from .host import ClientSession, Host
from .iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON
from .msgrpriv import SESSION_RESULT
from .msgrua import MISTATUS, SignoutResult
from .provider import Provider
from .queryset import AfProtocol, CsAddr, QuerySet, RawSocketAddress, SocketAddress, Version
from .registry import Lookup, Registry, Session
from .routine import Routine, RoutineClosedError
from .winsock2 import (
    LUP,
    NO_ERROR,
    NS,
    RESULT_IS,
    SERVICE_MULTIPLE,
    SOCKET_ERROR,
    WSAECOMPARATOR,
    WSAESETSERVICEOP,
    WSAQUERYSET2W,
    WSAQUERYSETW,
    WSAError,
)
from .ws2spi import NSPV2_ROUTINE

__version__ = "0.1.0"

__all__ = [
    "CPNATFWT_SESSION_TERMINATION_REASON",
    "GUID",
    "LUP",
    "MISTATUS",
    "NO_ERROR",
    "NS",
    "NSPV2_ROUTINE",
    "RESULT_IS",
    "SERVICE_MULTIPLE",
    "SESSION_RESULT",
    "SOCKET_ERROR",
    "WSAECOMPARATOR",
    "WSAESETSERVICEOP",
    "WSAQUERYSET2W",
    "WSAQUERYSETW",
    "AfProtocol",
    "ClientSession",
    "CsAddr",
    "ErrorChannel",
    "Host",
    "InProcessChannel",
    "Lookup",
    "Provider",
    "QuerySet",
    "RawSocketAddress",
    "Registry",
    "Routine",
    "RoutineClosedError",
    "Session",
    "SignoutResult",
    "SocketAddress",
    "Version",
    "WSAError",
    "WinsockError",
    "__version__",
]
