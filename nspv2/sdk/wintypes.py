"""Base Windows data types (minwindef.h / winnt.h / basetsd.h) as fixed-width ctypes.

Windows is LLP64: ``LONG``/``ULONG`` are 32 bits on x86 and x64 alike, while
``ctypes.c_long`` is 64 bits on Linux x86-64. Every type here is therefore
spelled with an explicit width, never with ``c_long``/``c_ulong``.

``WCHAR`` is a 16-bit code unit on Windows. ``ctypes.c_wchar`` is 4 bytes on
Linux, so nspv2 models ``WCHAR`` as ``c_uint16`` on every platform and
``LPWSTR`` as a pointer to it; strings are UTF-16LE. Use :func:`wstr` to make
one and :func:`read_wstr` to read one back with a bound: it is the one reader
of NUL-terminated UTF-16 strings in nspv2, with one policy (see its docstring).
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
    "WstrError",
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

#: Longest string :func:`read_wstr` accepts by default, in UTF-16 code units,
#: terminator excluded: 32767, the most a Windows counted string
#: (UNICODE_STRING) can hold.
WSTR_MAX_CHARS = 32767

_PAGE = 4096


def wstr(text: str) -> ctypes.Array[ctypes.c_uint16]:
    """Return a NUL-terminated UTF-16LE buffer holding ``text``.

    Non-BMP characters become surrogate pairs; a lone surrogate in ``text``
    (as :func:`read_wstr` returns for one in memory) is written back as that
    code unit, so reading and writing a string keeps every unit. The result
    can be passed wherever an ``LPWSTR`` is expected
    (``ctypes.cast(buf, LPWSTR)``); keep it alive as long as C uses it.
    """
    data = text.encode("utf-16-le", errors="surrogatepass")
    units = len(data) // 2
    buf = (WCHAR * (units + 1))()
    ctypes.memmove(buf, data, len(data))
    return buf


class WstrError(ValueError):
    """A string :func:`read_wstr` refuses (misaligned, unterminated, out of bounds)."""


def read_wstr(
    pointer: Any,
    max_chars: int = WSTR_MAX_CHARS,
    *,
    within: tuple[int, int] | None = None,
    what: str = "string",
) -> str | None:
    """Read a NUL-terminated UTF-16LE string from memory; the one policy.

    ``pointer`` is an ``LPWSTR``, a ``c_void_p`` or an integer address.

    - NULL gives ``None``.
    - Bound: at most ``max_chars`` code units before the terminator. With
      ``within=(start, end)``, every byte read (terminator included) must also
      lie in ``[start, end)``.
    - Reads stop at the terminator and never cross into a page the string has
      not reached: a string with no terminator makes the reader touch nothing
      past the page holding its bound.
    - Refused, with :class:`WstrError` (a ``ValueError``) naming ``what``: an
      odd address, an address outside ``within``, and no terminator within
      the bound.
    - Invalid UTF-16 is not an error: Windows does not validate WCHAR
      strings, so a lone surrogate is kept as that code point in the Python
      string (``surrogatepass``), and :func:`wstr` writes it back as the same
      unit. Reading then writing a string preserves every code unit.
    """
    if isinstance(pointer, int):
        address = pointer
    else:
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
    if not address:
        return None
    if address % 2:
        raise WstrError(f"{what} is not 2-byte aligned")
    full = 2 * (max_chars + 1)
    limit = full
    if within is not None:
        if address < within[0] or address >= within[1]:
            raise WstrError(f"{what} lies outside its memory")
        limit = min(limit, within[1] - address)
    chunks: list[bytes] = []
    total = 0
    pos = address
    want = 256
    while total < limit:
        span = min(_PAGE - (pos % _PAGE), limit - total, want)
        chunk = ctypes.string_at(pos, span)
        start = 0
        while True:
            found = chunk.find(b"\0\0", start)
            if found < 0:
                break
            if found % 2 == 0:
                chunks.append(chunk[:found])
                return b"".join(chunks).decode("utf-16-le", errors="surrogatepass")
            start = found + 1
        chunks.append(chunk)
        total += span
        pos += span
        want = min(want * 2, _PAGE)
    if total < full:
        raise WstrError(f"{what} has no terminator inside its memory")
    raise WstrError(f"{what} has no terminator within {max_chars} characters")
