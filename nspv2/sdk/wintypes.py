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
import functools
import operator
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
    "wsaapi_prototype",
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


def wsaapi_prototype(restype: Any, *argtypes: Any, use_last_error: bool = False) -> Any:
    """A prototype for a ``WSAAPI`` function, chosen when called (not at import).

    On Windows it is always ``WINFUNCTYPE`` (stdcall: the x86 callee pops its
    arguments), whatever library object the function is then looked up on
    (``CDLL``'s own functions would be cdecl); elsewhere ``CFUNCTYPE``.
    ``use_last_error`` as for ctypes: see :meth:`nspv2.sdk.ws2spi.FunctionSpec.bind`.
    """
    if sys.platform == "win32":
        factory = getattr(ctypes, "WINFUNCTYPE")  # noqa: B009 - absent from typeshed off Windows
    else:
        factory = ctypes.CFUNCTYPE
    return factory(restype, *argtypes, use_last_error=use_last_error)


#: Longest string :func:`read_wstr` accepts by default, in UTF-16 code units,
#: terminator excluded: 32767, the most a Windows counted string
#: (UNICODE_STRING) can hold.
WSTR_MAX_CHARS = 32767


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
    - Never a byte past what is known to be valid. Without ``within``, the
      only memory known to be valid is the string itself, up to its
      terminator: the reader reads it code unit by code unit and stops at the
      terminator. With ``within``, the caller vouches for ``[start, end)``: the
      reader reads chunks of it (never past ``end``), which is faster for long
      strings. A string with no terminator is read up to its bound, no
      further.
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
    full = max_chars + 1  # units the bound lets the reader examine
    if within is None:
        units = _count_units(address, full)
        if units < 0:
            raise WstrError(f"{what} has no terminator within {max_chars} characters")
        return ctypes.string_at(address, 2 * units).decode("utf-16-le", errors="surrogatepass")
    if address < within[0] or address + 2 > within[1]:
        raise WstrError(f"{what} lies outside its memory")
    limit = min(2 * full, (within[1] - address) & ~1)  # bytes the reader may read
    chunks: list[bytes] = []
    total = 0
    span = _FIRST_CHUNK
    while total < limit:
        span = min(span, limit - total)
        chunk = ctypes.string_at(address + total, span)
        found = chunk.find(b"\0\0")
        while found >= 0 and found % 2:  # a zero high byte then a zero low byte
            found = chunk.find(b"\0\0", found + 1)
        if found >= 0:
            chunks.append(chunk[:found])
            return b"".join(chunks).decode("utf-16-le", errors="surrogatepass")
        chunks.append(chunk)
        total += span
        span *= 4
    if limit < 2 * full:
        raise WstrError(f"{what} has no terminator inside its memory")
    raise WstrError(f"{what} has no terminator within {max_chars} characters")


# First chunk of a bounded read, in bytes (even: chunks stay unit-aligned).
_FIRST_CHUNK = 256


@functools.lru_cache(maxsize=8)
def _units_type(count: int) -> type[ctypes.Array[ctypes.c_uint16]]:
    return ctypes.c_uint16 * count


def _count_units(address: int, limit: int) -> int:
    """Code units before the first zero unit at ``address``, examining at most
    ``limit`` units one at a time (a memoryview iterates item by item and
    ``operator.indexOf`` stops at the first match, both in C); -1 if none.
    Nothing past the zero unit is read."""
    units = memoryview(_units_type(limit).from_address(address)).cast("B").cast("H")
    try:
        return operator.indexOf(units, 0)
    except ValueError:
        return -1
    finally:
        units.release()
