"""Base Windows data types (minwindef.h / winnt.h / basetsd.h) as fixed-width ctypes.

Windows is LLP64: ``LONG``/``ULONG`` are 32 bits on x86 and x64 alike, while
``ctypes.c_long`` is 64 bits on Linux x86-64. Every type here is therefore
spelled with an explicit width, never with ``c_long``/``c_ulong``.

``WCHAR`` is a 16-bit code unit on Windows. ``ctypes.c_wchar`` is 4 bytes on
Linux, so nspv2 models ``WCHAR`` as ``c_uint16`` on every platform and
``LPWSTR`` as a pointer to it; strings are UTF-16LE. Use :func:`wstr` to make
one and :func:`read_wstr` to read one back with a bound.
"""

from __future__ import annotations

import ctypes
import sys
from typing import TYPE_CHECKING, Any

__all__ = [
    "BOOL",
    "BYTE",
    "CHAR",
    "DWORD",
    "HANDLE",
    "INT",
    "LPBYTE",
    "LPDWORD",
    "LPHANDLE",
    "LPINT",
    "LPSTR",
    "LPVOID",
    "LPWSTR",
    "PVOID",
    "UCHAR",
    "ULONG",
    "USHORT",
    "WCHAR",
    "WSAAPI_FUNCTYPE",
    "WSTR_MAX_CHARS",
    "read_wstr",
    "wstr",
]

# typedef unsigned char BYTE;
BYTE = ctypes.c_uint8
# typedef unsigned char UCHAR;
UCHAR = ctypes.c_uint8
# typedef char CHAR;
CHAR = ctypes.c_char
# typedef unsigned short USHORT;
USHORT = ctypes.c_uint16
# typedef int INT;
INT = ctypes.c_int32
# typedef int BOOL;
BOOL = ctypes.c_int32
# typedef unsigned long DWORD;   (32 bits: Windows is LLP64)
DWORD = ctypes.c_uint32
# typedef unsigned long ULONG;   (32 bits: Windows is LLP64)
ULONG = ctypes.c_uint32
# typedef wchar_t WCHAR;         (16 bits on Windows; UTF-16LE code unit)
WCHAR = ctypes.c_uint16

# typedef void *PVOID, *LPVOID;
PVOID = ctypes.c_void_p
LPVOID = ctypes.c_void_p
# typedef void *HANDLE;
HANDLE = ctypes.c_void_p
# typedef HANDLE *LPHANDLE;
LPHANDLE = ctypes.POINTER(HANDLE)
# typedef DWORD *LPDWORD;
LPDWORD = ctypes.POINTER(DWORD)
# typedef int *LPINT;
LPINT = ctypes.POINTER(INT)
# typedef BYTE *LPBYTE;
LPBYTE = ctypes.POINTER(BYTE)
# typedef WCHAR *LPWSTR;
LPWSTR = ctypes.POINTER(WCHAR)
# typedef CHAR *LPSTR;
LPSTR = ctypes.POINTER(CHAR)

# #define WSAAPI __stdcall  (x86: callee pops; x64: the one Windows convention)
if TYPE_CHECKING:
    WSAAPI_FUNCTYPE: Any
elif sys.platform == "win32":
    WSAAPI_FUNCTYPE = ctypes.WINFUNCTYPE
else:
    WSAAPI_FUNCTYPE = ctypes.CFUNCTYPE

#: Upper bound, in UTF-16 code units, that readers accept for one string
#: before giving up on finding its terminator (64 Ki code units).
WSTR_MAX_CHARS = 65536


def wstr(text: str) -> ctypes.Array[ctypes.c_uint16]:
    """Return a NUL-terminated UTF-16LE buffer holding ``text``.

    The result can be passed wherever an ``LPWSTR`` is expected
    (``ctypes.cast(buf, LPWSTR)``); keep it alive as long as C uses it.
    """
    data = text.encode("utf-16-le")
    units = len(data) // 2
    buf = (WCHAR * (units + 1))()
    ctypes.memmove(buf, data, len(data))
    return buf


def read_wstr(pointer: Any, max_chars: int = WSTR_MAX_CHARS) -> str | None:
    """Read a NUL-terminated UTF-16LE string, at most ``max_chars`` units.

    ``pointer`` is an ``LPWSTR``, a ``c_void_p`` or an integer address.
    Returns ``None`` for NULL. Raises ``ValueError`` when no terminator is
    found within ``max_chars`` code units or the text is not valid UTF-16.
    """
    if isinstance(pointer, int):
        address = pointer
    else:
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
    if not address:
        return None
    units = ctypes.cast(address, ctypes.POINTER(WCHAR))
    for n in range(max_chars + 1):
        if units[n] == 0:
            raw = ctypes.string_at(address, 2 * n)
            return raw.decode("utf-16-le", errors="strict")
    raise ValueError(f"string at 0x{address:x} has no terminator within {max_chars} units")
