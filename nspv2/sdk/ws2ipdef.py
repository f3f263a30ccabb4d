"""ws2ipdef.h / in6addr.h: the IPv6 socket address in its Windows layout."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from .wintypes import UCHAR, ULONG, USHORT
from .ws2def import ADDRESS_FAMILY

__all__ = ["IN6_ADDR", "PSOCKADDR_IN6", "SOCKADDR_IN6"]


# union { UCHAR Byte[16]; USHORT Word[8]; } u;
class _IN6_ADDR_U(ctypes.Union):
    _fields_ = [("Byte", UCHAR * 16), ("Word", USHORT * 8)]


# typedef struct in6_addr { union { UCHAR Byte[16]; USHORT Word[8]; } u; } IN6_ADDR;
class IN6_ADDR(ctypes.Structure):
    if TYPE_CHECKING:
        u: _IN6_ADDR_U

    _fields_ = [("u", _IN6_ADDR_U)]


# typedef struct sockaddr_in6 {
#     ADDRESS_FAMILY sin6_family;
#     USHORT sin6_port;
#     ULONG  sin6_flowinfo;
#     IN6_ADDR sin6_addr;
#     union { ULONG sin6_scope_id; SCOPE_ID sin6_scope_struct; };
# } SOCKADDR_IN6;
#
# The anonymous union is flattened to its ULONG member: SCOPE_ID is a 32-bit
# bitfield view of the same value, and the layout is identical.
class SOCKADDR_IN6(ctypes.Structure):
    """IPv6 socket address; port and flow info are in network byte order."""

    if TYPE_CHECKING:
        sin6_family: int
        sin6_port: int
        sin6_flowinfo: int
        sin6_addr: IN6_ADDR
        sin6_scope_id: int

    _fields_ = [
        ("sin6_family", ADDRESS_FAMILY),
        ("sin6_port", USHORT),
        ("sin6_flowinfo", ULONG),
        ("sin6_addr", IN6_ADDR),
        ("sin6_scope_id", ULONG),
    ]


PSOCKADDR_IN6 = ctypes.POINTER(SOCKADDR_IN6)
