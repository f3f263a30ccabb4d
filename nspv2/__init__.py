"""nspv2: a toolkit for Winsock namespace service providers of version 2.

Subpackages by role: :mod:`nspv2.sdk` (the header mirrors and their
layouts), :mod:`nspv2.provider` (the scaffold), :mod:`nspv2.host` (Winsock:
ws2_32 or the native host), :mod:`nspv2.testing` (harness and pytest
plugin), :mod:`nspv2.tools` (the command line) and :mod:`nspv2.examples`.
The most used names are re-exported here.
Importing nspv2 loads no library.
"""

from .client.client import Client
from .host.host import ClientSession, Host
from .host.native_provider import NativeProvider, NativeProviderError, NativeTable
from .provider.base import Provider
from .provider.channel import ErrorChannel, InProcessChannel
from .provider.errors import WinsockError
from .provider.queryset import (
    AfProtocol,
    CsAddr,
    QuerySet,
    RawSocketAddress,
    SocketAddress,
    Version,
)
from .provider.registry import Lookup, Registry, Session
from .provider.routine import Routine, RoutineClosedError
from .sdk.guiddef import GUID
from .sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON
from .sdk.msgrpriv import SESSION_RESULT
from .sdk.msgrua import MISTATUS, SignoutResult
from .sdk.winsock2 import (
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
from .sdk.ws2spi import NSPV2_ROUTINE

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
    "Client",
    "ClientSession",
    "CsAddr",
    "ErrorChannel",
    "Host",
    "InProcessChannel",
    "Lookup",
    "NativeProvider",
    "NativeProviderError",
    "NativeTable",
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
