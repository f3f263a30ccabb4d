"""The definitions instantiated for a Windows ABI: x64, x86, or this host.

The structures in :mod:`nspv2.sdk.winsock2` and friends are host ctypes classes
(real pointers, callable thunks). :func:`retarget` derives from any of them a
class with the same fields for another ABI, each pointer replaced by an
unsigned integer of that ABI's pointer width; ctypes then lays the class out
with natural alignment, which is what MSVC and mingw-w64 do for these
structures (none of them is packed, and none holds a 64-bit integer whose
alignment x86 Windows would treat differently from the host).

:func:`layout` and :func:`all_layouts` describe sizes, alignments and field
offsets; ``python -m nspv2 layout`` prints them.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import Any

from .guiddef import GUID
from .nsemail import NAPI_DOMAIN_DESCRIPTION_BLOB, NAPI_PROVIDER_INSTALLATION_BLOB
from .winsock2 import (
    AFPROTOCOLS,
    BLOB,
    WSANAMESPACE_INFOEXW,
    WSANSCLASSINFOW,
    WSAQUERYSET2A,
    WSAQUERYSET2W,
    WSAQUERYSETW,
    WSAVERSION,
)
from .ws2def import CSADDR_INFO, IN_ADDR, SOCKADDR, SOCKADDR_IN, SOCKET_ADDRESS
from .ws2ipdef import IN6_ADDR, SOCKADDR_IN6
from .ws2spi import NSPV2_ROUTINE

__all__ = [
    "ABI",
    "STRUCTS",
    "FieldLayout",
    "StructLayout",
    "all_layouts",
    "layout",
    "pointer_size",
    "retarget",
]


class ABI(str, enum.Enum):
    """A target ABI: Windows x64, Windows x86 (4-byte pointers), or this host."""

    X64 = "x64"
    X86 = "x86"
    HOST = "host"


#: Every structure nspv2 defines, in the order layouts are printed.
STRUCTS: tuple[type[ctypes.Structure], ...] = (
    GUID,
    SOCKADDR,
    IN_ADDR,
    SOCKADDR_IN,
    IN6_ADDR,
    SOCKADDR_IN6,
    SOCKET_ADDRESS,
    CSADDR_INFO,
    BLOB,
    WSAVERSION,
    AFPROTOCOLS,
    WSAQUERYSETW,
    WSAQUERYSET2W,
    WSAQUERYSET2A,
    WSANSCLASSINFOW,
    WSANAMESPACE_INFOEXW,
    NSPV2_ROUTINE,
    NAPI_PROVIDER_INSTALLATION_BLOB,
    NAPI_DOMAIN_DESCRIPTION_BLOB,
)

_FUNC_PTR_BASE: type[Any] = getattr(ctypes, "_CFuncPtr")  # noqa: B009
_POINTER_LIKE: tuple[type[Any], ...] = (
    getattr(ctypes, "_Pointer"),  # noqa: B009
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_wchar_p,
    _FUNC_PTR_BASE,
)
_CACHE: dict[tuple[type[Any], ABI], type[Any]] = {}


def pointer_size(abi: ABI) -> int:
    """Size of a data or function pointer under ``abi``."""
    if abi is ABI.X64:
        return 8
    if abi is ABI.X86:
        return 4
    return ctypes.sizeof(ctypes.c_void_p)


def _is_pointer(ctype: type[Any]) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, _POINTER_LIKE)


def retarget(ctype: type[Any], abi: ABI) -> type[Any]:
    """Return ``ctype`` laid out for ``abi`` (``ctype`` itself for the host).

    Structures and unions are rebuilt field by field (same names, same
    order); pointers become ``c_uint32`` (x86) or ``c_uint64`` (x64); arrays
    keep their length. The result is cached.
    """
    abi = ABI(abi)
    if abi is ABI.HOST:
        return ctype
    if ctypes.alignment(ctypes.c_uint64) != 8:
        raise RuntimeError("retargeting needs a host where 64-bit integers are 8-aligned")
    key = (ctype, abi)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    result: type[Any]
    if _is_pointer(ctype):
        result = ctypes.c_uint64 if abi is ABI.X64 else ctypes.c_uint32
    elif isinstance(ctype, type) and issubclass(ctype, (ctypes.Structure, ctypes.Union)):
        base: type[Any] = ctypes.Union if issubclass(ctype, ctypes.Union) else ctypes.Structure
        fields = [(f[0], retarget(f[1], abi)) for f in ctype._fields_]
        result = type(ctype.__name__, (base,), {"_fields_": fields, "__module__": __name__})
    elif isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        element: type[Any] = getattr(ctype, "_type_")  # noqa: B009
        result = retarget(element, abi) * ctype._length_
    else:
        result = ctype
    _CACHE[key] = result
    return result


@dataclass(frozen=True)
class FieldLayout:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    alignment: int
    fields: tuple[FieldLayout, ...]

    def field(self, name: str) -> FieldLayout:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


def layout(struct: type[ctypes.Structure], abi: ABI | str) -> StructLayout:
    """Size, alignment and field offsets of ``struct`` under ``abi``."""
    target = retarget(struct, ABI(abi))
    fields = []
    for entry in target._fields_:
        descriptor = getattr(target, entry[0])
        fields.append(FieldLayout(entry[0], descriptor.offset, descriptor.size))
    return StructLayout(
        struct.__name__, ctypes.sizeof(target), ctypes.alignment(target), tuple(fields)
    )


def all_layouts(abi: ABI | str) -> list[StructLayout]:
    """Layouts of every structure in :data:`STRUCTS` under ``abi``."""
    return [layout(s, abi) for s in STRUCTS]
