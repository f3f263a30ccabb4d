"""The definitions instantiated for a Windows ABI: x64, x86, or this host.

The structures in :mod:`nspv2.sdk.winsock2` and friends are host ctypes classes
(real pointers, callable thunks). :func:`retarget` derives from any of them a
class with the same fields for another ABI, each pointer replaced by an
unsigned integer of that ABI's pointer width; ctypes then lays the class out
with natural alignment, which is what MSVC and mingw-w64 do for these
structures (none of them is packed, and none holds a 64-bit integer whose
alignment x86 Windows would treat differently from the host).

:func:`layout` and :func:`all_layouts` describe sizes, alignments and field
offsets; :func:`render_layout` writes them as Markdown, C ``_Static_assert``
lines or JSON (``python -m nspv2 layout`` prints them).
"""

from __future__ import annotations

import ctypes
import enum
import json
from collections.abc import Sequence
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
    "FORMATS",
    "STRUCTS",
    "FieldLayout",
    "StructLayout",
    "all_layouts",
    "layout",
    "layout_dict",
    "pointer_size",
    "render_layout",
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


# ---- rendering ------------------------------------------------------------------------

#: The formats :func:`render_layout` writes.
FORMATS = ("markdown", "c", "json")

_ABI_GUARDS = {
    ABI.X64: "defined(_WIN64)",
    ABI.X86: "defined(_WIN32) && !defined(_WIN64)",
    ABI.HOST: "!defined(_WIN32)",
}


def _render_markdown(abis: Sequence[ABI]) -> str:
    tables = {abi: {s.name: s for s in all_layouts(abi)} for abi in abis}
    names = [s.name for s in all_layouts(abis[0])]
    out = [
        "# Structure layouts",
        "",
        "Generated by `python -m nspv2 layout --format markdown "
        + " ".join(f"--abi {a.value}" for a in abis)
        + "`; do not edit by hand.",
        "Sizes, alignments and offsets are in bytes.",
        "",
        "| struct | " + " | ".join(f"{a.value} size | {a.value} align" for a in abis) + " |",
        "|---|" + "---:|---:|" * len(abis),
    ]
    for name in names:
        cells = " | ".join(f"{tables[a][name].size} | {tables[a][name].alignment}" for a in abis)
        out.append(f"| `{name}` | {cells} |")
    for name in names:
        out += ["", f"## {name}", ""]
        out.append(
            "| field | " + " | ".join(f"{a.value} offset | {a.value} size" for a in abis) + " |"
        )
        out.append("|---|" + "---:|---:|" * len(abis))
        first = tables[abis[0]][name]
        for f in first.fields:
            cells = " | ".join(
                f"{tables[a][name].field(f.name).offset} | {tables[a][name].field(f.name).size}"
                for a in abis
            )
            out.append(f"| `{f.name}` | {cells} |")
    return "\n".join(out) + "\n"


def _render_c(abis: Sequence[ABI]) -> str:
    out = [
        "/* Generated by python -m nspv2 layout --format c; compile after including",
        " * <winsock2.h>, <ws2spi.h>, <nsemail.h> (or native_stub's nspv2_abi.h). */",
        "#include <stddef.h>",
    ]
    for abi in abis:
        out += ["", f"#if {_ABI_GUARDS[abi]} /* {abi.value} */"]
        for s in all_layouts(abi):
            out.append(
                f'_Static_assert(sizeof({s.name}) == {s.size}, "sizeof({s.name}) on {abi.value}");'
            )
            out.append(
                f"_Static_assert(_Alignof({s.name}) == {s.alignment}, "
                f'"_Alignof({s.name}) on {abi.value}");'
            )
            for f in s.fields:
                out.append(
                    f"_Static_assert(offsetof({s.name}, {f.name}) == {f.offset}, "
                    f'"{s.name}.{f.name} on {abi.value}");'
                )
        out.append(f"#endif /* {abi.value} */")
    return "\n".join(out) + "\n"


def layout_dict(s: StructLayout) -> dict[str, object]:
    """One structure's layout as plain data (the JSON format's entries)."""
    return {
        "size": s.size,
        "alignment": s.alignment,
        "fields": [{"name": f.name, "offset": f.offset, "size": f.size} for f in s.fields],
    }


def _render_json(abis: Sequence[ABI]) -> str:
    doc = {abi.value: {s.name: layout_dict(s) for s in all_layouts(abi)} for abi in abis}
    return json.dumps(doc, indent=2) + "\n"


def render_layout(abis: Sequence[ABI | str], fmt: str) -> str:
    """Render the layouts of every structure for ``abis`` (duplicates dropped) in ``fmt``."""
    chosen: list[ABI] = []
    for a in abis:
        if ABI(a) not in chosen:
            chosen.append(ABI(a))
    if not chosen:
        raise ValueError("no ABI given")
    if fmt == "markdown":
        return _render_markdown(chosen)
    if fmt == "c":
        return _render_c(chosen)
    if fmt == "json":
        return _render_json(chosen)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
