"""``QuerySet``: a WSAQUERYSET2W (or WSAQUERYSETW) as a Python value.

Reading (:meth:`QuerySet.from_address`) validates everything it follows:
NULL, ``dwSize`` below the structure size, a count with a NULL array, a
count above a sane bound, a socket address whose length does not fit its
family, a string with no terminator within :data:`MAX_STRING_CHARS` units;
each raises ``WinsockError(WSAEINVAL)``. It reads no byte past what the
counts and terminators allow, and it reads everything before it returns:
the memory is never read again (the caller's buffer may be freed or reused
at once). Only a GUID's ``uuid.UUID`` is built later, on first access, from
the 16 bytes copied then; the result is an ordinary ``QuerySet``.

Packing writes only what the reader reads back equal: a query set the
reader would refuse or change (a string holding a NUL character or longer
than :data:`MAX_STRING_CHARS` units, a count above :data:`MAX_COUNT`, a blob
above :data:`MAX_BLOB_BYTES`, a socket address above
:data:`MAX_SOCKADDR_LEN` bytes, a field out of its C type's range...) makes
:meth:`QuerySet.required_size` and :meth:`QuerySet.pack_into` raise
:class:`QuerySetError` (a ``ValueError``) naming the field, before any byte
is written.

Packing (:meth:`QuerySet.pack_into`) writes the structure and everything it
points to into one caller's buffer: the header first, then each piece
aligned to the pointer size relative to the buffer start, all pointers
absolute into the buffer, ``required_size()`` bytes in all. A short buffer is
left untouched. The packed image is built once per QuerySet and kind, with
pointers stored as offsets; packing relocates it for the destination address
in one ``struct`` call and copies it with one ``memmove`` (the NextEx hot
path).

Images (:meth:`QuerySet.to_image`, :meth:`QuerySet.from_image`) are the
form query sets travel in between provider and client processes
(native_stub/src/wire.h): the structure at offset 0, everything it points
to after it, every pointer an offset from the start (0 is NULL). Reading an
image checks what the C side checks (every object inside the image, after
the structure and aligned for its type, strings terminated inside it,
``dwSize`` exact, the limits above) and raises :class:`QuerySetError` for
anything else.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Union

from ..sdk.winsock2 import (
    AFPROTOCOLS,
    BLOB,
    NS,
    WSAECOMPARATOR,
    WSAQUERYSET2W,
    WSAQUERYSETW,
    WSAVERSION,
    WSAError,
)
from ..sdk.wintypes import WSTR_MAX_CHARS, WstrError, read_wstr
from ..sdk.ws2def import AF, CSADDR_INFO, IPPROTO, SOCK, SOCKADDR, SOCKADDR_IN
from ..sdk.ws2ipdef import SOCKADDR_IN6
from .errors import WinsockError

__all__ = [
    "MAX_BLOB_BYTES",
    "MAX_COUNT",
    "MAX_SOCKADDR_LEN",
    "MAX_STRING_CHARS",
    "AfProtocol",
    "CsAddr",
    "QuerySet",
    "QuerySetError",
    "RawSocketAddress",
    "SockAddr",
    "SocketAddress",
    "Version",
]

#: Longest string a reader accepts, in UTF-16 code units (terminator excluded):
#: the one bound of :func:`nspv2.sdk.wintypes.read_wstr`.
MAX_STRING_CHARS = WSTR_MAX_CHARS
#: Largest dwNumberOfProtocols / dwNumberOfCsAddrs a reader accepts.
MAX_COUNT = 65536
#: Largest blob a reader accepts (16 MiB).
MAX_BLOB_BYTES = 16 * 1024 * 1024
#: Largest iSockaddrLength a reader accepts (SOCKADDR_STORAGE is 128).
MAX_SOCKADDR_LEN = 128

Kind = Literal["2W", "W"]

_P = ctypes.sizeof(ctypes.c_void_p)
_PTR = "Q" if _P == 8 else "I"
_INVALID = WSAError.WSAEINVAL


class QuerySetError(ValueError):
    """A query set the packer refuses: the reader would refuse what it would
    write, or read back something else (the message names the field)."""


@dataclass(frozen=True)
class Version:
    """WSAVERSION: a version number and how to compare with it."""

    version: int
    how: WSAECOMPARATOR = WSAECOMPARATOR.COMP_EQUAL


@dataclass(frozen=True)
class AfProtocol:
    """AFPROTOCOLS: an address family and protocol pair."""

    family: int
    protocol: int


@dataclass(frozen=True)
class SocketAddress:
    """An IPv4 (SOCKADDR_IN) or IPv6 (SOCKADDR_IN6) socket address.

    ``port`` is a host-order integer (stored in network order). ``flowinfo``
    and ``scope_id`` are IPv6 only, as the ULONG values of their fields.
    """

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int = 0
    flowinfo: int = 0
    scope_id: int = 0

    @classmethod
    def parse(cls, text: str, port: int = 0, scope_id: int = 0) -> SocketAddress:
        return cls(ipaddress.ip_address(text), port, 0, scope_id)

    @property
    def family(self) -> int:
        return AF.AF_INET if self.address.version == 4 else AF.AF_INET6

    def __str__(self) -> str:
        if self.address.version == 4:
            return f"{self.address}:{self.port}"
        scope = f"%{self.scope_id}" if self.scope_id else ""
        return f"[{self.address}{scope}]:{self.port}"


@dataclass(frozen=True)
class RawSocketAddress:
    """A socket address of another family, kept as its bytes after sa_family."""

    family: int
    data: bytes = b""


SockAddr = Union[SocketAddress, RawSocketAddress]  # noqa: UP007


@dataclass(frozen=True)
class CsAddr:
    """CSADDR_INFO: local and remote socket addresses, socket type, protocol."""

    local: SockAddr | None = None
    remote: SockAddr | None = None
    socket_type: int = SOCK.SOCK_STREAM
    protocol: int = IPPROTO.IPPROTO_TCP


@dataclass(frozen=True)
class QuerySet:
    """The content of a WSAQUERYSET2W, as Python values.

    ``service_class_id`` exists only in WSAQUERYSETW; it is ignored when
    packing a WSAQUERYSET2W.
    """

    service_instance_name: str | None = None
    version: Version | None = None
    comment: str | None = None
    namespace: int = NS.NS_EMAIL
    provider_id: uuid.UUID | None = None
    context: str | None = None
    protocols: tuple[AfProtocol, ...] = ()
    query_string: str | None = None
    cs_addrs: tuple[CsAddr, ...] = ()
    output_flags: int = 0
    blob: bytes | None = None
    service_class_id: uuid.UUID | None = field(default=None, compare=True)

    # ---- packing -----------------------------------------------------------

    def required_size(self, kind: Kind = "2W") -> int:
        """Bytes needed to pack this query set as ``kind``.

        Raises :class:`QuerySetError` for a query set the reader would not
        read back equal (so does :meth:`pack_into`)."""
        return self._image(kind).size

    def pack_into(self, address: int, capacity: int, kind: Kind = "2W") -> int:
        """Pack into ``capacity`` bytes at ``address``; return the required size.

        Nothing is written when ``capacity`` is smaller than the required
        size. ``address`` should be aligned for the structure (as C requires
        of any LPWSAQUERYSET2W); pieces are aligned relative to it.
        """
        return self._image(kind).pack_into(address, capacity)

    def to_buffer(self, kind: Kind = "2W") -> ctypes.Array[ctypes.c_char]:
        """A new ctypes buffer holding this query set packed as ``kind``."""
        image = self._image(kind)
        buf = ctypes.create_string_buffer(max(image.size, 1))
        image.pack_into(ctypes.addressof(buf), image.size)
        return buf

    def to_image(self, kind: Kind = "W") -> bytes:
        """The wire image of this query set (native_stub/src/wire.h): packed
        as ``kind`` with every pointer an offset from the image's start.

        Raises :class:`QuerySetError` as :meth:`required_size` does."""
        return self._image(kind).relocated(0)

    @classmethod
    def from_image(cls, data: bytes, kind: Kind = "W") -> QuerySet:
        """Read a wire image (as :meth:`to_image` and the C side write them).

        Anything the C side would refuse (an offset outside the image or into
        the structure, a misaligned object, a string without its NUL inside
        the image, a count or length above the limits, ``dwSize`` other than
        the structure's size) raises :class:`QuerySetError`; nothing else is
        raised, whatever the bytes."""
        if kind not in ("2W", "W"):
            raise ValueError(f"unknown query set kind {kind!r}; choose '2W' or 'W'")
        return _read_image(bytes(data), kind)

    def _image(self, kind: Kind) -> _Image:
        if kind == "2W":
            return self._image_2w
        if kind == "W":
            return self._image_w
        raise ValueError(f"unknown query set kind {kind!r}; choose '2W' or 'W'")

    @cached_property
    def _image_2w(self) -> _Image:
        return _build_image(self, "2W")

    @cached_property
    def _image_w(self) -> _Image:
        return _build_image(self, "W")

    # ---- reading -----------------------------------------------------------

    @classmethod
    def from_address(
        cls, address: int | None, kind: Kind = "2W", *, bounds: tuple[int, int] | None = None
    ) -> QuerySet:
        """Read a WSAQUERYSET2W (or, with ``kind="W"``, a WSAQUERYSETW).

        Raises ``WinsockError(WSAEINVAL)`` for anything malformed. With
        ``bounds=(start, end)``, every byte read must lie in that range (a
        pointer or string reaching outside it is WSAEINVAL): use it when the
        memory holding the query set is known, e.g. a result buffer.
        """
        return _read_queryset(address, kind, bounds)

    @classmethod
    def from_pointer(cls, pointer: object, kind: Kind = "2W") -> QuerySet:
        """Read from a ctypes pointer (``LPWSAQUERYSET2W``) or ``c_void_p``."""
        address = ctypes.cast(pointer, ctypes.c_void_p).value  # type: ignore[arg-type]
        return _read_queryset(address, kind)


class _LazyGuid:
    """A GUID field of a :class:`QuerySet` the reader copied as 16 raw bytes
    (while the memory was valid) and turns into a ``uuid.UUID`` on first
    access; building a UUID costs more than the rest of a small query set.

    A non-data descriptor: a value in the instance's ``__dict__`` (set by
    ``__init__``, or by the first access) wins over it, so only the reader's
    instances ever reach :meth:`__get__`, once per field. Read on the class,
    it is the field's default, None.
    """

    __slots__ = ("name", "raw")

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw = "_raw_" + name

    def __get__(self, obj: object, owner: object = None) -> uuid.UUID | None:
        if obj is None:
            return None
        values = obj.__dict__
        raw = values.get(self.raw)
        value = None if raw is None else uuid.UUID(bytes_le=raw)
        values[self.name] = value  # two threads racing here store equal values
        values.pop(self.raw, None)
        return value


# The dataclass keeps the defaults it captured (None); the class attributes
# become the lazy readers.
for _name in ("provider_id", "service_class_id"):
    setattr(QuerySet, _name, _LazyGuid(_name))
del _name
_new_queryset = object.__new__
_string_at = ctypes.string_at


# ---- the packed image ----------------------------------------------------


def _align(n: int) -> int:
    return (n + _P - 1) & ~(_P - 1)


# ---- struct formats, derived from the ctypes classes ------------------------
#
# Every format below is computed from a structure's ``_fields_`` (offsets,
# sizes, signedness, nested structures), never written by hand; the tests
# check each one against its class field by field.


_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _leaves(cls: type[ctypes.Structure], prefix: str = "") -> list[tuple[str, int, str]]:
    """(dotted name, offset, struct code) of every leaf field of ``cls``:
    nested structures flattened, pointers as unsigned integers of pointer
    size, integers by size and signedness, byte arrays as ``Ns``."""
    out: list[tuple[str, int, str]] = []
    for entry in cls._fields_:
        name, ctype = entry[0], entry[1]
        if len(entry) > 2:  # pragma: no cover - no bit fields in these structures
            raise TypeError(f"bit field {name} of {cls.__name__}")
        offset = getattr(cls, name).offset
        if issubclass(ctype, (ctypes.c_void_p, ctypes._Pointer)):
            out.append((prefix + name, offset, _PTR))
        elif issubclass(ctype, ctypes.Structure):
            out += [
                (leaf, offset + at, code) for leaf, at, code in _leaves(ctype, f"{prefix}{name}.")
            ]
        elif issubclass(ctype, ctypes.Array) and ctypes.alignment(ctype) == 1:  # bytes
            out.append((prefix + name, offset, f"{ctypes.sizeof(ctype)}s"))
        elif issubclass(ctype, ctypes._SimpleCData) and ctypes.sizeof(ctype) in _INT_CODES:
            code = _INT_CODES[ctypes.sizeof(ctype)]
            signed = ctype(-1).value == -1
            out.append((prefix + name, offset, code if signed else code.upper()))
        else:
            raise TypeError(f"no struct code for {prefix}{name} ({ctype.__name__})")
    return out


def _struct_format(cls: type[ctypes.Structure]) -> str:
    """A little-endian ``struct`` format with the layout of ``cls`` on this
    platform: one code per leaf field, padding as ``x``."""
    fmt = "<"
    pos = 0
    for _name, offset, code in _leaves(cls):
        if offset > pos:
            fmt += f"{offset - pos}x"
        fmt += code
        pos = offset + struct.calcsize("<" + code)
    if ctypes.sizeof(cls) > pos:
        fmt += f"{ctypes.sizeof(cls) - pos}x"
    return fmt


class _Layout:
    """A ctypes structure's ``struct`` packer, addressed by field name."""

    __slots__ = ("cls", "names", "offsets", "packer", "size")

    def __init__(self, cls: type[ctypes.Structure]) -> None:
        leaves = _leaves(cls)
        self.cls = cls
        self.packer = struct.Struct(_struct_format(cls))
        self.size = self.packer.size
        if self.size != ctypes.sizeof(cls):  # pragma: no cover - caught by the tests
            raise TypeError(f"{cls.__name__}: format {self.packer.format} is {self.size} bytes")
        self.names = tuple(name for name, _offset, _code in leaves)
        self.offsets = {name: offset for name, offset, _code in leaves}

    def pack(self, **values: int | bytes) -> bytes:
        """The structure with the given fields (the others zero)."""
        return self.packer.pack(*(values.get(name, 0) for name in self.names))

    def pack_into(self, buffer: bytearray, at: int, **values: int | bytes) -> None:
        self.packer.pack_into(buffer, at, *(values.get(name, 0) for name in self.names))

    def unpack(self, data: bytes) -> dict[str, int]:
        return dict(zip(self.names, self.packer.unpack(data), strict=True))

    def iter_unpack(self, data: bytes) -> Iterator[dict[str, int]]:
        for values in self.packer.iter_unpack(data):
            yield dict(zip(self.names, values, strict=True))


_QS2W = _Layout(WSAQUERYSET2W)
_QSW = _Layout(WSAQUERYSETW)
_CSADDR_INFO = _Layout(CSADDR_INFO)
_BLOB = _Layout(BLOB)
_VERSION = _Layout(WSAVERSION)
_AFPROTO = _Layout(AFPROTOCOLS)

#: The layout of every structure a query set is made of (the tests check
#: each format against its class, field by field).
LAYOUTS: tuple[_Layout, ...] = (_QS2W, _QSW, _CSADDR_INFO, _BLOB, _VERSION, _AFPROTO)

# Where the pointers live inside a CSADDR_INFO and a BLOB.
_CSADDR_POINTERS = (
    _CSADDR_INFO.offsets["LocalAddr.lpSockaddr"],
    _CSADDR_INFO.offsets["RemoteAddr.lpSockaddr"],
)
_BLOB_DATA_AT = _BLOB.offsets["pBlobData"]


# Socket address fields (the port is in network order, the rest as stored).
def _offset(cls: type[ctypes.Structure], name: str) -> int:
    offset: int = getattr(cls, name).offset
    return offset


_SA_FAMILY = _offset(SOCKADDR, "sa_family")
_SA_DATA = _offset(SOCKADDR, "sa_data")
_SIN_PORT = _offset(SOCKADDR_IN, "sin_port")
_SIN_ADDR = _offset(SOCKADDR_IN, "sin_addr")
_SIN6_PORT = _offset(SOCKADDR_IN6, "sin6_port")
_SIN6_FLOWINFO = _offset(SOCKADDR_IN6, "sin6_flowinfo")
_SIN6_ADDR = _offset(SOCKADDR_IN6, "sin6_addr")
_SIN6_SCOPE_ID = _offset(SOCKADDR_IN6, "sin6_scope_id")


def _encode_wstr(text: str) -> bytes:
    # The inverse of read_wstr: lone surrogates go back as the same unit.
    return text.encode("utf-16-le", errors="surrogatepass") + b"\0\0"


def _encode_sockaddr(sa: SockAddr) -> bytes:
    if isinstance(sa, SocketAddress):
        if sa.address.version == 4:
            raw = bytearray(ctypes.sizeof(SOCKADDR_IN))
            struct.pack_into("<H", raw, _SA_FAMILY, AF.AF_INET)
            struct.pack_into(">H", raw, _SIN_PORT, sa.port)
            raw[_SIN_ADDR : _SIN_ADDR + 4] = sa.address.packed
            return bytes(raw)
        raw = bytearray(ctypes.sizeof(SOCKADDR_IN6))
        struct.pack_into("<H", raw, _SA_FAMILY, AF.AF_INET6)
        struct.pack_into(">H", raw, _SIN6_PORT, sa.port)
        struct.pack_into("<I", raw, _SIN6_FLOWINFO, sa.flowinfo)
        raw[_SIN6_ADDR : _SIN6_ADDR + 16] = sa.address.packed
        struct.pack_into("<I", raw, _SIN6_SCOPE_ID, sa.scope_id)
        return bytes(raw)
    raw = bytearray(_SA_DATA)
    struct.pack_into("<H", raw, _SA_FAMILY, sa.family)
    return bytes(raw) + sa.data


class _Builder:
    """Lays out pieces after a header, recording pointer fix-ups."""

    def __init__(self, header_size: int) -> None:
        self.data = bytearray(header_size)
        self.fixups: list[tuple[int, int]] = []  # (position of pointer, target offset)

    def piece(self, payload: bytes) -> int:
        start = _align(len(self.data))
        self.data.extend(bytes(start - len(self.data)))
        self.data.extend(payload)
        return start

    def reserve(self, size: int) -> int:
        return self.piece(bytes(size))

    def pointer(self, at: int, target: int | None) -> None:
        if target is not None:
            self.fixups.append((at, target))


_U16 = (0, 0xFFFF)
_U32 = (0, 0xFFFFFFFF)
_I32 = (-(2**31), 2**31 - 1)


def _check_int(value: object, bounds: tuple[int, int], what: str) -> None:
    if not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise QuerySetError(f"{what} is {value!r}, outside [{bounds[0]}, {bounds[1]}]")


def _check_string(text: object, what: str) -> None:
    if text is None:
        return
    if not isinstance(text, str):
        raise QuerySetError(f"{what} is a {type(text).__name__}, not a str")
    nul = text.find("\0")
    if nul >= 0:
        raise QuerySetError(
            f"{what} holds a NUL character at index {nul}: a reader would cut the string there"
        )
    units = len(text) + sum(1 for c in text if c > "\uffff")  # UTF-16 code units
    if units > MAX_STRING_CHARS:
        raise QuerySetError(
            f"{what} is {units} UTF-16 code units long; a reader accepts {MAX_STRING_CHARS}"
        )


def _check_sockaddr(sa: SockAddr | None, what: str) -> None:
    if sa is None:
        return
    if isinstance(sa, SocketAddress):
        _check_int(sa.port, _U16, f"{what}.port")
        if sa.address.version == 4:
            if sa.flowinfo or sa.scope_id:
                raise QuerySetError(f"{what}: an IPv4 address has no flowinfo or scope_id")
        else:
            _check_int(sa.flowinfo, _U32, f"{what}.flowinfo")
            _check_int(sa.scope_id, _U32, f"{what}.scope_id")
        return
    if not isinstance(sa, RawSocketAddress):
        raise QuerySetError(f"{what} is a {type(sa).__name__}, not a socket address")
    _check_int(sa.family, _U16, f"{what}.family")
    if sa.family in (AF.AF_INET, AF.AF_INET6):
        raise QuerySetError(
            f"{what}: a RawSocketAddress of family {sa.family} reads back as a SocketAddress "
            "(or is refused); use SocketAddress"
        )
    length = _SA_DATA + len(sa.data)
    if length > MAX_SOCKADDR_LEN:
        raise QuerySetError(
            f"{what} is {length} bytes long; a reader accepts {MAX_SOCKADDR_LEN} (SOCKADDR_STORAGE)"
        )


def _check(q: QuerySet) -> None:
    """Refuse what the reader would refuse or read back differently."""
    for name, text in (
        ("service_instance_name", q.service_instance_name),
        ("comment", q.comment),
        ("context", q.context),
        ("query_string", q.query_string),
    ):
        _check_string(text, name)
    if q.version is not None:
        _check_int(q.version.version, _U32, "version.version")
        if q.version.how not in (WSAECOMPARATOR.COMP_EQUAL, WSAECOMPARATOR.COMP_NOTLESS):
            raise QuerySetError(f"version.how is {q.version.how!r}, not a WSAECOMPARATOR")
    _check_int(q.namespace, _U32, "namespace")
    _check_int(q.output_flags, _U32, "output_flags")
    for what, count in (("protocols", len(q.protocols)), ("cs_addrs", len(q.cs_addrs))):
        if count > MAX_COUNT:
            raise QuerySetError(f"{what} holds {count} items; a reader accepts {MAX_COUNT}")
    for i, p in enumerate(q.protocols):
        _check_int(p.family, _I32, f"protocols[{i}].family")
        _check_int(p.protocol, _I32, f"protocols[{i}].protocol")
    for i, cs in enumerate(q.cs_addrs):
        _check_sockaddr(cs.local, f"cs_addrs[{i}].local")
        _check_sockaddr(cs.remote, f"cs_addrs[{i}].remote")
        _check_int(cs.socket_type, _I32, f"cs_addrs[{i}].socket_type")
        _check_int(cs.protocol, _I32, f"cs_addrs[{i}].protocol")
    if q.blob is not None and len(q.blob) > MAX_BLOB_BYTES:
        raise QuerySetError(f"blob is {len(q.blob)} bytes; a reader accepts {MAX_BLOB_BYTES}")


def _build_image(q: QuerySet, kind: Kind) -> _Image:
    _check(q)
    hdr = _QS2W if kind == "2W" else _QSW
    b = _Builder(hdr.size)

    def string(s: str | None) -> int | None:
        return None if s is None else b.piece(_encode_wstr(s))

    name = string(q.service_instance_name)
    comment = string(q.comment)
    context = string(q.context)
    query = string(q.query_string)
    version = None
    if q.version is not None:
        version = b.piece(_VERSION.pack(dwVersion=q.version.version, ecHow=int(q.version.how)))
    provider = None if q.provider_id is None else b.piece(q.provider_id.bytes_le)
    class_id = None
    if kind == "W" and q.service_class_id is not None:
        class_id = b.piece(q.service_class_id.bytes_le)
    protocols = None
    if q.protocols:
        protocols = b.piece(
            b"".join(
                _AFPROTO.pack(iAddressFamily=p.family, iProtocol=p.protocol) for p in q.protocols
            )
        )
    csaddrs = None
    if q.cs_addrs:
        csaddrs = b.reserve(_CSADDR_INFO.size * len(q.cs_addrs))
        for i, cs in enumerate(q.cs_addrs):
            base = csaddrs + i * _CSADDR_INFO.size
            lens = []
            for j, sa in enumerate((cs.local, cs.remote)):
                if sa is None:
                    lens.append(0)
                    continue
                raw = _encode_sockaddr(sa)
                lens.append(len(raw))
                b.pointer(base + _CSADDR_POINTERS[j], b.piece(raw))
            _CSADDR_INFO.pack_into(
                b.data,
                base,
                **{"LocalAddr.iSockaddrLength": lens[0], "RemoteAddr.iSockaddrLength": lens[1]},
                iSocketType=cs.socket_type,
                iProtocol=cs.protocol,
            )
    blob = None
    if q.blob is not None:
        blob = b.reserve(_BLOB.size)
        data_at = b.piece(q.blob) if q.blob else None
        _BLOB.pack_into(b.data, blob, cbSize=len(q.blob))
        b.pointer(blob + _BLOB_DATA_AT, data_at)
    hdr.pack_into(
        b.data,
        0,
        dwSize=hdr.size,
        dwNameSpace=int(q.namespace),
        dwNumberOfProtocols=len(q.protocols),
        dwNumberOfCsAddrs=len(q.cs_addrs),
        dwOutputFlags=int(q.output_flags),
    )
    pointers = {
        "lpszServiceInstanceName": name,
        "lpVersion": version,
        "lpszComment": comment,
        "lpNSProviderId": provider,
        "lpszContext": context,
        "lpafpProtocols": protocols,
        "lpszQueryString": query,
        "lpcsaBuffer": csaddrs,
        "lpBlob": blob,
    }
    if kind == "W":
        pointers["lpServiceClassId"] = class_id
    for field_name, target in pointers.items():
        b.pointer(hdr.offsets[field_name], target)
    return _Image(bytes(b.data), sorted(b.fixups))


class _Image:
    """A packed query set with pointers as offsets, relocatable in one step."""

    __slots__ = ("_args", "_last", "_slots", "_struct", "size")

    def __init__(self, data: bytes, fixups: list[tuple[int, int]]) -> None:
        self.size = len(data)
        fmt = "<"
        args: list[object] = []
        slots: list[tuple[int, int]] = []
        pos = 0
        for at, target in fixups:
            if at > pos:
                fmt += f"{at - pos}s"
                args.append(data[pos:at])
            slots.append((len(args), target))
            fmt += _PTR
            args.append(0)
            pos = at + _P
        if pos < len(data):
            fmt += f"{len(data) - pos}s"
            args.append(data[pos:])
        self._struct = struct.Struct(fmt)
        self._args = args
        self._slots = slots
        self._last: tuple[int, bytes] = (-1, b"")

    def relocated(self, address: int) -> bytes:
        last_address, last_data = self._last
        if last_address == address:
            return last_data
        args = self._args.copy()
        for index, target in self._slots:
            args[index] = address + target
        data = self._struct.pack(*args)
        self._last = (address, data)
        return data

    def pack_into(self, address: int, capacity: int) -> int:
        if capacity >= self.size:
            ctypes.memmove(address, self.relocated(address), self.size)
        return self.size


# ---- reading -------------------------------------------------------------


def _fail(detail: str) -> WinsockError:
    return WinsockError(_INVALID, detail)


_Bounds = tuple[int, int] | None


def _at(address: int, size: int, bounds: _Bounds, what: str) -> bytes:
    """``size`` bytes at ``address``, checked against ``bounds``."""
    if bounds is not None and (address < bounds[0] or address + size > bounds[1]):
        raise _fail(f"{what} lies outside the query set's memory")
    return _string_at(address, size)


def _read_wstr(address: int, what: str, bounds: _Bounds = None) -> str | None:
    """A string of the query set, read under nspv2's one policy
    (:func:`nspv2.sdk.wintypes.read_wstr`); a refusal is WSAEINVAL."""
    try:
        return read_wstr(address, MAX_STRING_CHARS, within=bounds, what=what)
    except WstrError as exc:
        raise _fail(str(exc)) from None


def _read_sockaddr(address: int, length: int, what: str, bounds: _Bounds = None) -> SockAddr | None:
    if not address:
        if length:
            raise _fail(f"{what} is NULL with length {length}")
        return None
    if length < 2 or length > MAX_SOCKADDR_LEN:
        raise _fail(f"{what} length {length} is out of range")
    return _decode_sockaddr(_at(address, length, bounds, what), what)


def _decode_sockaddr(raw: bytes, what: str) -> SockAddr:
    """The socket address in ``raw`` (2..MAX_SOCKADDR_LEN bytes)."""
    length = len(raw)
    (family,) = struct.unpack_from("<H", raw, _SA_FAMILY)
    if family == AF.AF_INET:
        if length < ctypes.sizeof(SOCKADDR_IN):
            raise _fail(f"{what}: AF_INET address with length {length}")
        (port,) = struct.unpack_from(">H", raw, _SIN_PORT)
        return SocketAddress(ipaddress.IPv4Address(raw[_SIN_ADDR : _SIN_ADDR + 4]), port)
    if family == AF.AF_INET6:
        if length < ctypes.sizeof(SOCKADDR_IN6):
            raise _fail(f"{what}: AF_INET6 address with length {length}")
        (port,) = struct.unpack_from(">H", raw, _SIN6_PORT)
        (flowinfo,) = struct.unpack_from("<I", raw, _SIN6_FLOWINFO)
        (scope,) = struct.unpack_from("<I", raw, _SIN6_SCOPE_ID)
        ip6 = ipaddress.IPv6Address(raw[_SIN6_ADDR : _SIN6_ADDR + 16])
        return SocketAddress(ip6, port, flowinfo, scope)
    return RawSocketAddress(family, raw[_SA_DATA:])


def _read_guid(address: int, bounds: _Bounds = None) -> uuid.UUID | None:
    if not address:
        return None
    return uuid.UUID(bytes_le=_at(address, 16, bounds, "a GUID"))


_ALIGN_QS = ctypes.alignment(WSAQUERYSET2W)
_DWSIZE = struct.Struct("<I")
_u32_at = ctypes.c_uint32.from_address
#: 16 bytes in place: ``bytes(_GUID_BYTES.from_address(at))`` copies a GUID
#: (cheaper than ctypes.string_at, a foreign call).
_GUID_BYTES = ctypes.c_char * 16
# Where each header field sits in the unpacked tuple, per kind.
_INDEX = {hdr: {name: i for i, name in enumerate(hdr.names)} for hdr in (_QS2W, _QSW)}
# The fields that need more than a string or a GUID read: when all are zero,
# the query set is read without building anything else.
_NESTED = ("lpVersion", "dwNumberOfProtocols", "dwNumberOfCsAddrs", "lpBlob")
# Each header in place, for struct's unpack_from.
_HEADER = {hdr: ctypes.c_char * hdr.size for hdr in (_QS2W, _QSW)}
# Per kind: the tuple positions the fast path reads.
_FAST = {
    hdr: (
        tuple(_INDEX[hdr][name] for name in _NESTED),
        _INDEX[hdr]["lpszServiceInstanceName"],
        _INDEX[hdr]["lpszComment"],
        _INDEX[hdr]["lpszContext"],
        _INDEX[hdr]["lpszQueryString"],
        _INDEX[hdr]["dwNameSpace"],
        _INDEX[hdr]["dwOutputFlags"],
        _INDEX[hdr]["lpNSProviderId"],
        _INDEX[hdr].get("lpServiceClassId"),
        hdr.offsets["dwSize"],
    )
    for hdr in (_QS2W, _QSW)
}


def _read_queryset(address: int | None, kind: Kind, bounds: _Bounds = None) -> QuerySet:
    # Everything is read (and validated) here, while the memory is valid:
    # strings, counts, arrays, blob. Only the GUIDs' uuid.UUID objects are
    # built later, from bytes copied now (_LazyGuid). Nothing reads the
    # memory at ``address`` after this returns.
    if not address:
        raise _fail("query set pointer is NULL")
    if kind == "2W":
        hdr = _QS2W
    elif kind == "W":
        hdr = _QSW
    else:
        raise ValueError(f"unknown query set kind {kind!r}; choose '2W' or 'W'")
    if address % _ALIGN_QS:
        raise _fail("query set pointer is misaligned")
    nested, i_name, i_comment, i_context, i_query, i_ns, i_flags, i_pid, i_class, size_at = _FAST[
        hdr
    ]
    if bounds is None:  # no bounds to check: read in place (no ctypes call)
        dw_size = _u32_at(address + size_at).value
        if dw_size < hdr.size:
            raise _fail(f"dwSize {dw_size} is smaller than the structure ({hdr.size})")
        values = hdr.packer.unpack_from(_HEADER[hdr].from_address(address))
    else:
        (dw_size,) = _DWSIZE.unpack(_at(address + size_at, 4, bounds, "dwSize"))
        if dw_size < hdr.size:
            raise _fail(f"dwSize {dw_size} is smaller than the structure ({hdr.size})")
        values = hdr.packer.unpack(_at(address, hdr.size, bounds, "the header"))
    for i in nested:
        if values[i]:
            break
    else:  # the common restrictions: strings, GUIDs and integers only
        at = values[i_name]
        name = _read_wstr(at, "lpszServiceInstanceName", bounds) if at else None
        at = values[i_comment]
        comment = _read_wstr(at, "lpszComment", bounds) if at else None
        at = values[i_context]
        context = _read_wstr(at, "lpszContext", bounds) if at else None
        at = values[i_query]
        query = _read_wstr(at, "lpszQueryString", bounds) if at else None
        qs = _new_queryset(QuerySet)
        found = qs.__dict__
        found.update(
            service_instance_name=name,
            version=None,
            comment=comment,
            namespace=values[i_ns],
            context=context,
            protocols=(),
            query_string=query,
            cs_addrs=(),
            output_flags=values[i_flags],
            blob=None,
        )
        at = values[i_pid]
        if at:
            found["_raw_provider_id"] = (
                bytes(_GUID_BYTES.from_address(at))
                if bounds is None
                else _at(at, 16, bounds, "a GUID")
            )
        else:
            found["provider_id"] = None
        at = 0 if i_class is None else values[i_class]
        if at:
            found["_raw_service_class_id"] = (
                bytes(_GUID_BYTES.from_address(at))
                if bounds is None
                else _at(at, 16, bounds, "a GUID")
            )
        else:
            found["service_class_id"] = None
        return qs
    fields = dict(zip(hdr.names, values, strict=True))
    class_id_ptr = fields.get("lpServiceClassId", 0)
    name_ptr = fields["lpszServiceInstanceName"]
    version_ptr = fields["lpVersion"]
    comment_ptr = fields["lpszComment"]
    namespace = fields["dwNameSpace"]
    provider_ptr = fields["lpNSProviderId"]
    context_ptr = fields["lpszContext"]
    n_protocols = fields["dwNumberOfProtocols"]
    protocols_ptr = fields["lpafpProtocols"]
    query_ptr = fields["lpszQueryString"]
    n_csaddrs = fields["dwNumberOfCsAddrs"]
    csaddrs_ptr = fields["lpcsaBuffer"]
    output_flags = fields["dwOutputFlags"]
    blob_ptr = fields["lpBlob"]
    version = None
    if version_ptr:
        found = _VERSION.unpack(_at(version_ptr, _VERSION.size, bounds, "lpVersion"))
        number, how = found["dwVersion"], found["ecHow"]
        if how not in (0, 1):
            raise _fail(f"lpVersion->ecHow {how} is not a WSAECOMPARATOR")
        version = Version(number, WSAECOMPARATOR(how))
    protocols: tuple[AfProtocol, ...] = ()
    if n_protocols:
        if n_protocols > MAX_COUNT:
            raise _fail(f"dwNumberOfProtocols {n_protocols} is above {MAX_COUNT}")
        if not protocols_ptr:
            raise _fail(f"dwNumberOfProtocols is {n_protocols} but lpafpProtocols is NULL")
        raw = _at(protocols_ptr, _AFPROTO.size * n_protocols, bounds, "lpafpProtocols")
        protocols = tuple(
            AfProtocol(p["iAddressFamily"], p["iProtocol"]) for p in _AFPROTO.iter_unpack(raw)
        )
    cs_addrs: tuple[CsAddr, ...] = ()
    if n_csaddrs:
        if n_csaddrs > MAX_COUNT:
            raise _fail(f"dwNumberOfCsAddrs {n_csaddrs} is above {MAX_COUNT}")
        if not csaddrs_ptr:
            raise _fail(f"dwNumberOfCsAddrs is {n_csaddrs} but lpcsaBuffer is NULL")
        raw = _at(csaddrs_ptr, _CSADDR_INFO.size * n_csaddrs, bounds, "lpcsaBuffer")
        items = []
        for i, cs in enumerate(_CSADDR_INFO.iter_unpack(raw)):
            local, remote = (
                _read_sockaddr(
                    cs[f"{half}.lpSockaddr"],
                    cs[f"{half}.iSockaddrLength"],
                    f"lpcsaBuffer[{i}].{half}",
                    bounds,
                )
                for half in ("LocalAddr", "RemoteAddr")
            )
            items.append(CsAddr(local, remote, cs["iSocketType"], cs["iProtocol"]))
        cs_addrs = tuple(items)
    blob = None
    if blob_ptr:
        found = _BLOB.unpack(_at(blob_ptr, _BLOB.size, bounds, "lpBlob"))
        cb, data_ptr = found["cbSize"], found["pBlobData"]
        if cb > MAX_BLOB_BYTES:
            raise _fail(f"lpBlob->cbSize {cb} is above {MAX_BLOB_BYTES}")
        if cb and not data_ptr:
            raise _fail(f"lpBlob->cbSize is {cb} but pBlobData is NULL")
        blob = _at(data_ptr, cb, bounds, "pBlobData") if cb else b""
    return QuerySet(
        service_instance_name=_read_wstr(name_ptr, "lpszServiceInstanceName", bounds),
        version=version,
        comment=_read_wstr(comment_ptr, "lpszComment", bounds),
        namespace=namespace,
        provider_id=_read_guid(provider_ptr, bounds),
        context=_read_wstr(context_ptr, "lpszContext", bounds),
        protocols=protocols,
        query_string=_read_wstr(query_ptr, "lpszQueryString", bounds),
        cs_addrs=cs_addrs,
        output_flags=output_flags,
        blob=blob,
        service_class_id=_read_guid(class_id_ptr, bounds),
    )


# ---- images (the wire form) --------------------------------------------------


_ALIGN_CSADDR = ctypes.alignment(CSADDR_INFO)
_ALIGN_BLOB = ctypes.alignment(BLOB)
_ALIGN_VERSION = ctypes.alignment(WSAVERSION)
_ALIGN_AFPROTO = ctypes.alignment(AFPROTOCOLS)
_ALIGN_GUID = 4
_ALIGN_WCHAR = 2
_ALIGN_SOCKADDR = 2


class _ImageReader:
    """Bounded reads of an image's objects by offset."""

    __slots__ = ("data", "objects", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start  # the first offset an object may use (after the header)
        self.objects: list[tuple[int, int, str]] = []  # [start, end) and name of each read

    def exclusive(self, names: tuple[str, ...]) -> None:
        """The objects named share no byte with any other object (C rewrites
        their pointers in place)."""
        for start, end, what in self.objects:
            if what not in names:
                continue
            for other_start, other_end, other in self.objects:
                if other is not what and other_start < end and start < other_end:
                    raise QuerySetError(f"image: {what} shares bytes with {other}")

    def check(self, offset: int, size: int, align: int, what: str) -> None:
        if offset < self.start:
            raise QuerySetError(
                f"image: {what} at offset {offset} overlaps the structure ({self.start} bytes)"
            )
        if offset % align:
            raise QuerySetError(f"image: {what} at offset {offset} is not {align}-aligned")
        if offset + size > len(self.data):
            raise QuerySetError(
                f"image: {what} ({size} bytes at offset {offset}) lies outside the image "
                f"({len(self.data)} bytes)"
            )

    def at(self, offset: int, size: int, align: int, what: str) -> bytes:
        self.check(offset, size, align, what)
        if size:
            self.objects.append((offset, offset + size, what))
        return self.data[offset : offset + size]

    def wstr(self, offset: int, what: str) -> str | None:
        if not offset:
            return None
        self.check(offset, 2, _ALIGN_WCHAR, what)
        end = min(len(self.data), offset + 2 * (MAX_STRING_CHARS + 1))
        end -= (end - offset) % 2
        units = memoryview(self.data)[offset:end].cast("H")
        for count, unit in enumerate(units):
            if not unit:
                self.objects.append((offset, offset + 2 * count + 2, what))
                raw = self.data[offset : offset + 2 * count]
                return raw.decode("utf-16-le", errors="surrogatepass")
        if end - offset >= 2 * (MAX_STRING_CHARS + 1):
            raise QuerySetError(f"image: {what} is longer than {MAX_STRING_CHARS} units")
        raise QuerySetError(f"image: {what} has no NUL inside the image")

    def guid(self, offset: int, what: str) -> uuid.UUID | None:
        if not offset:
            return None
        return uuid.UUID(bytes_le=self.at(offset, 16, _ALIGN_GUID, what))

    def sockaddr(self, offset: int, length: int, what: str) -> SockAddr | None:
        if not offset:
            if length:
                raise QuerySetError(f"image: {what} is NULL with length {length}")
            return None
        if length < 2 or length > MAX_SOCKADDR_LEN:
            raise QuerySetError(f"image: {what} length {length} is out of range")
        raw = self.at(offset, length, _ALIGN_SOCKADDR, what)
        try:
            return _decode_sockaddr(raw, what)
        except WinsockError as exc:
            raise QuerySetError(f"image: {exc.message}") from None


def _read_image(data: bytes, kind: Kind) -> QuerySet:
    hdr = _QS2W if kind == "2W" else _QSW
    if len(data) < hdr.size:
        raise QuerySetError(f"image: {len(data)} bytes, less than the structure ({hdr.size})")
    fields = hdr.unpack(data[: hdr.size])
    if fields["dwSize"] != hdr.size:
        raise QuerySetError(f"image: dwSize is {fields['dwSize']}, not {hdr.size}")
    r = _ImageReader(data, hdr.size)
    version = None
    if fields["lpVersion"]:
        found = _VERSION.unpack(
            r.at(fields["lpVersion"], _VERSION.size, _ALIGN_VERSION, "lpVersion")
        )
        if found["ecHow"] not in (0, 1):
            raise QuerySetError(f"image: lpVersion->ecHow {found['ecHow']} is not a WSAECOMPARATOR")
        version = Version(found["dwVersion"], WSAECOMPARATOR(found["ecHow"]))
    protocols: tuple[AfProtocol, ...] = ()
    n_protocols = fields["dwNumberOfProtocols"]
    # A pointer is checked even when what it points to is empty (as C does).
    if not n_protocols and fields["lpafpProtocols"]:
        r.check(fields["lpafpProtocols"], 0, _ALIGN_AFPROTO, "lpafpProtocols")
    if not fields["dwNumberOfCsAddrs"] and fields["lpcsaBuffer"]:
        r.check(fields["lpcsaBuffer"], 0, _ALIGN_CSADDR, "lpcsaBuffer")
    if n_protocols:
        if n_protocols > MAX_COUNT:
            raise QuerySetError(f"image: dwNumberOfProtocols {n_protocols} is above {MAX_COUNT}")
        if not fields["lpafpProtocols"]:
            raise QuerySetError(f"image: {n_protocols} protocols but lpafpProtocols is NULL")
        raw = r.at(
            fields["lpafpProtocols"], _AFPROTO.size * n_protocols, _ALIGN_AFPROTO, "lpafpProtocols"
        )
        protocols = tuple(
            AfProtocol(p["iAddressFamily"], p["iProtocol"]) for p in _AFPROTO.iter_unpack(raw)
        )
    cs_addrs: tuple[CsAddr, ...] = ()
    n_csaddrs = fields["dwNumberOfCsAddrs"]
    if n_csaddrs:
        if n_csaddrs > MAX_COUNT:
            raise QuerySetError(f"image: dwNumberOfCsAddrs {n_csaddrs} is above {MAX_COUNT}")
        if not fields["lpcsaBuffer"]:
            raise QuerySetError(f"image: {n_csaddrs} CS addresses but lpcsaBuffer is NULL")
        raw = r.at(
            fields["lpcsaBuffer"], _CSADDR_INFO.size * n_csaddrs, _ALIGN_CSADDR, "lpcsaBuffer"
        )
        items = []
        for i, cs in enumerate(_CSADDR_INFO.iter_unpack(raw)):
            local, remote = (
                r.sockaddr(
                    cs[f"{half}.lpSockaddr"],
                    cs[f"{half}.iSockaddrLength"],
                    f"lpcsaBuffer[{i}].{half}",
                )
                for half in ("LocalAddr", "RemoteAddr")
            )
            items.append(CsAddr(local, remote, cs["iSocketType"], cs["iProtocol"]))
        cs_addrs = tuple(items)
    blob = None
    if fields["lpBlob"]:
        found = _BLOB.unpack(r.at(fields["lpBlob"], _BLOB.size, _ALIGN_BLOB, "lpBlob"))
        cb, data_at = found["cbSize"], found["pBlobData"]
        if cb > MAX_BLOB_BYTES:
            raise QuerySetError(f"image: lpBlob->cbSize {cb} is above {MAX_BLOB_BYTES}")
        if cb and not data_at:
            raise QuerySetError(f"image: lpBlob->cbSize is {cb} but pBlobData is NULL")
        if not cb and data_at:
            r.check(data_at, 0, 1, "pBlobData")
        blob = r.at(data_at, cb, 1, "pBlobData") if cb else b""
    strings = {
        name: r.wstr(fields[name], name)
        for name in ("lpszServiceInstanceName", "lpszComment", "lpszContext", "lpszQueryString")
    }
    provider_id = r.guid(fields["lpNSProviderId"], "lpNSProviderId")
    class_id = r.guid(fields.get("lpServiceClassId", 0), "lpServiceClassId")
    r.exclusive(("lpcsaBuffer", "lpBlob"))
    return QuerySet(
        service_instance_name=strings["lpszServiceInstanceName"],
        version=version,
        comment=strings["lpszComment"],
        namespace=fields["dwNameSpace"],
        provider_id=provider_id,
        context=strings["lpszContext"],
        protocols=protocols,
        query_string=strings["lpszQueryString"],
        cs_addrs=cs_addrs,
        output_flags=fields["dwOutputFlags"],
        blob=blob,
        service_class_id=class_id,
    )
