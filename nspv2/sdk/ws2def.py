"""ws2def.h: socket addresses in their Windows layout.

Address family values are Windows' own (``AF_INET6`` is 23, not Linux's 10).
"""

from __future__ import annotations

import ctypes
import enum
from typing import TYPE_CHECKING

from .wintypes import CHAR, INT, UCHAR, ULONG, USHORT

__all__ = [
    "ADDRESS_FAMILY",
    "AF",
    "CSADDR_INFO",
    "IN_ADDR",
    "IPPROTO",
    "LPCSADDR_INFO",
    "LPSOCKADDR",
    "LPSOCKET_ADDRESS",
    "PCSADDR_INFO",
    "PSOCKADDR",
    "PSOCKET_ADDRESS",
    "SOCK",
    "SOCKADDR",
    "SOCKADDR_IN",
    "SOCKET_ADDRESS",
]

# typedef USHORT ADDRESS_FAMILY;
ADDRESS_FAMILY = USHORT


class AF(enum.IntEnum):
    """Address families (Windows values)."""

    AF_UNSPEC = 0
    AF_UNIX = 1
    AF_INET = 2
    AF_IPX = 6
    AF_APPLETALK = 16
    AF_NETBIOS = 17
    AF_INET6 = 23
    AF_IRDA = 26
    AF_BTH = 32


class SOCK(enum.IntEnum):
    """Socket types."""

    SOCK_STREAM = 1
    SOCK_DGRAM = 2
    SOCK_RAW = 3
    SOCK_RDM = 4
    SOCK_SEQPACKET = 5


class IPPROTO(enum.IntEnum):
    """IP protocols most often seen in CSADDR_INFO.iProtocol."""

    IPPROTO_IP = 0
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_IPV6 = 41
    IPPROTO_ICMPV6 = 58


# typedef struct sockaddr {
#     ADDRESS_FAMILY sa_family;
#     CHAR sa_data[14];
# } SOCKADDR, *PSOCKADDR, *LPSOCKADDR;
class SOCKADDR(ctypes.Structure):
    if TYPE_CHECKING:
        sa_family: int
        sa_data: bytes

    _fields_ = [
        ("sa_family", ADDRESS_FAMILY),
        ("sa_data", CHAR * 14),
    ]


PSOCKADDR = ctypes.POINTER(SOCKADDR)
LPSOCKADDR = PSOCKADDR


# struct { UCHAR s_b1, s_b2, s_b3, s_b4; } S_un_b;
class _S_UN_B(ctypes.Structure):
    _fields_ = [("s_b1", UCHAR), ("s_b2", UCHAR), ("s_b3", UCHAR), ("s_b4", UCHAR)]


# struct { USHORT s_w1, s_w2; } S_un_w;
class _S_UN_W(ctypes.Structure):
    _fields_ = [("s_w1", USHORT), ("s_w2", USHORT)]


# union { struct S_un_b; struct S_un_w; ULONG S_addr; } S_un;
class _S_UN(ctypes.Union):
    _fields_ = [("S_un_b", _S_UN_B), ("S_un_w", _S_UN_W), ("S_addr", ULONG)]


# typedef struct in_addr { union { ... } S_un; } IN_ADDR;  (inaddr.h)
class IN_ADDR(ctypes.Structure):
    """An IPv4 address in network byte order."""

    if TYPE_CHECKING:
        S_un: _S_UN

    _fields_ = [("S_un", _S_UN)]


# typedef struct sockaddr_in {
#     ADDRESS_FAMILY sin_family;
#     USHORT sin_port;
#     IN_ADDR sin_addr;
#     CHAR sin_zero[8];
# } SOCKADDR_IN, *PSOCKADDR_IN;
class SOCKADDR_IN(ctypes.Structure):
    """IPv4 socket address; ``sin_port`` is in network byte order."""

    if TYPE_CHECKING:
        sin_family: int
        sin_port: int
        sin_addr: IN_ADDR
        sin_zero: bytes

    _fields_ = [
        ("sin_family", ADDRESS_FAMILY),
        ("sin_port", USHORT),
        ("sin_addr", IN_ADDR),
        ("sin_zero", CHAR * 8),
    ]


# typedef struct _SOCKET_ADDRESS {
#     LPSOCKADDR lpSockaddr;
#     INT iSockaddrLength;
# } SOCKET_ADDRESS, *PSOCKET_ADDRESS, *LPSOCKET_ADDRESS;
class SOCKET_ADDRESS(ctypes.Structure):
    if TYPE_CHECKING:
        lpSockaddr: ctypes._Pointer[SOCKADDR]
        iSockaddrLength: int

    _fields_ = [
        ("lpSockaddr", LPSOCKADDR),
        ("iSockaddrLength", INT),
    ]


PSOCKET_ADDRESS = ctypes.POINTER(SOCKET_ADDRESS)
LPSOCKET_ADDRESS = PSOCKET_ADDRESS


# typedef struct _CSADDR_INFO {
#     SOCKET_ADDRESS LocalAddr;
#     SOCKET_ADDRESS RemoteAddr;
#     INT iSocketType;
#     INT iProtocol;
# } CSADDR_INFO, *PCSADDR_INFO, *LPCSADDR_INFO;
class CSADDR_INFO(ctypes.Structure):
    if TYPE_CHECKING:
        LocalAddr: SOCKET_ADDRESS
        RemoteAddr: SOCKET_ADDRESS
        iSocketType: int
        iProtocol: int

    _fields_ = [
        ("LocalAddr", SOCKET_ADDRESS),
        ("RemoteAddr", SOCKET_ADDRESS),
        ("iSocketType", INT),
        ("iProtocol", INT),
    ]


PCSADDR_INFO = ctypes.POINTER(CSADDR_INFO)
LPCSADDR_INFO = PCSADDR_INFO
