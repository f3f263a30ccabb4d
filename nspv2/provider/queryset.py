"""``QuerySet``: a WSAQUERYSET2W (or WSAQUERYSETW) as a Python value.

Reading (:meth:`QuerySet.from_address`) validates everything it follows:
NULL, ``dwSize`` below the structure size, a count with a NULL array, a
count above a sane bound, a socket address whose length does not fit its
family, a string with no terminator within :data:`MAX_STRING_CHARS` units;
each raises ``WinsockError(WSAEINVAL)``. It reads no byte past what the
counts and terminators allow.

Packing (:meth:`QuerySet.pack_into`) writes the structure and everything it
points to into one caller's buffer: the header first, then each piece
aligned to the pointer size relative to the buffer start, all pointers
absolute into the buffer, ``required_size()`` bytes in all. A short buffer is
left untouched. The packed image is built once per QuerySet and kind, with
pointers stored as offsets; packing relocates it for the destination address
in one ``struct`` call and copies it with one ``memmove`` (the NextEx hot
path).
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import uuid
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
from ..sdk.ws2def import AF, CSADDR_INFO, IPPROTO, SOCK, SOCKADDR_IN, SOCKET_ADDRESS
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
    "RawSocketAddress",
    "SockAddr",
    "SocketAddress",
    "Version",
]

#: Longest string a reader accepts, in UTF-16 code units (terminator excluded).
MAX_STRING_CHARS = 32767
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
_PAGE = 4096


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
        """Bytes needed to pack this query set as ``kind``."""
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


# ---- the packed image ----------------------------------------------------


def _align(n: int) -> int:
    return (n + _P - 1) & ~(_P - 1)


def _fmt_for(cls: type[ctypes.Structure]) -> str:
    """A little-endian struct format matching a ctypes structure's layout."""
    fmt = "<"
    pos = 0
    for entry in cls._fields_:
        name, ctype = entry[0], entry[1]
        descr = getattr(cls, name)
        if descr.offset > pos:
            fmt += f"{descr.offset - pos}x"
        size = descr.size
        if issubclass(ctype, (ctypes.c_void_p, getattr(ctypes, "_Pointer"))):  # noqa: B009
            fmt += _PTR
        elif ctype is ctypes.c_int32:
            fmt += "i"
        elif size == 4:
            fmt += "I"
        else:  # pragma: no cover - no other field kinds in query sets
            raise TypeError(f"unexpected field {name} of {cls.__name__}")
        pos = descr.offset + size
    if ctypes.sizeof(cls) > pos:
        fmt += f"{ctypes.sizeof(cls) - pos}x"
    return fmt


_QS2W = struct.Struct(_fmt_for(WSAQUERYSET2W))
_QSW = struct.Struct(_fmt_for(WSAQUERYSETW))
_SOCKET_ADDRESS_FMT = f"<{_PTR}i" + ("4x" if _P == 8 else "")
_CSADDR_INFO = struct.Struct(
    "<" + (_SOCKET_ADDRESS_FMT[1:]) * 2 + "ii"
)  # LocalAddr, RemoteAddr, iSocketType, iProtocol
_BLOB = struct.Struct(f"<I{'4x' if _P == 8 else ''}{_PTR}")
_VERSION = struct.Struct("<Ii")
_AFPROTO = struct.Struct("<ii")

assert _QS2W.size == ctypes.sizeof(WSAQUERYSET2W)
assert _QSW.size == ctypes.sizeof(WSAQUERYSETW)
assert _CSADDR_INFO.size == ctypes.sizeof(CSADDR_INFO)
assert _BLOB.size == ctypes.sizeof(BLOB)
assert _VERSION.size == ctypes.sizeof(WSAVERSION)
assert _AFPROTO.size == ctypes.sizeof(AFPROTOCOLS)
assert struct.calcsize(_SOCKET_ADDRESS_FMT) == ctypes.sizeof(SOCKET_ADDRESS)


def _encode_wstr(text: str) -> bytes:
    return text.encode("utf-16-le", errors="surrogatepass") + b"\0\0"


def _encode_sockaddr(sa: SockAddr) -> bytes:
    if isinstance(sa, SocketAddress):
        if sa.address.version == 4:
            return (
                struct.pack("<H", AF.AF_INET)
                + struct.pack(">H", sa.port)
                + sa.address.packed
                + bytes(8)
            )
        return (
            struct.pack("<H", AF.AF_INET6)
            + struct.pack(">H", sa.port)
            + struct.pack("<I", sa.flowinfo)
            + sa.address.packed
            + struct.pack("<I", sa.scope_id)
        )
    return struct.pack("<H", sa.family) + sa.data


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


def _build_image(q: QuerySet, kind: Kind) -> _Image:
    hdr = _QS2W if kind == "2W" else _QSW
    b = _Builder(hdr.size)

    def string(s: str | None) -> int | None:
        return None if s is None else b.piece(_encode_wstr(s))

    name = string(q.service_instance_name)
    comment = string(q.comment)
    context = string(q.context)
    query = string(q.query_string)
    version = (
        None if q.version is None else b.piece(_VERSION.pack(q.version.version, int(q.version.how)))
    )
    provider = None if q.provider_id is None else b.piece(q.provider_id.bytes_le)
    class_id = None
    if kind == "W" and q.service_class_id is not None:
        class_id = b.piece(q.service_class_id.bytes_le)
    protocols = None
    if q.protocols:
        protocols = b.piece(b"".join(_AFPROTO.pack(p.family, p.protocol) for p in q.protocols))
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
                b.pointer(base + j * struct.calcsize(_SOCKET_ADDRESS_FMT), b.piece(raw))
            _CSADDR_INFO.pack_into(
                b.data, base, 0, lens[0], 0, lens[1], cs.socket_type, cs.protocol
            )
    blob = None
    if q.blob is not None:
        blob = b.reserve(_BLOB.size)
        data_at = b.piece(q.blob) if q.blob else None
        _BLOB.pack_into(b.data, blob, len(q.blob), 0)
        b.pointer(blob + _BLOB.size - _P, data_at)
    values: list[int] = [
        hdr.size,
        0,  # lpszServiceInstanceName
    ]
    if kind == "W":
        values.append(0)  # lpServiceClassId
    values += [
        0,  # lpVersion
        0,  # lpszComment
        int(q.namespace),
        0,  # lpNSProviderId
        0,  # lpszContext
        len(q.protocols),
        0,  # lpafpProtocols
        0,  # lpszQueryString
        len(q.cs_addrs),
        0,  # lpcsaBuffer
        int(q.output_flags),
        0,  # lpBlob
    ]
    hdr.pack_into(b.data, 0, *values)
    offsets = _header_pointer_offsets(kind)
    b.pointer(offsets["lpszServiceInstanceName"], name)
    if kind == "W":
        b.pointer(offsets["lpServiceClassId"], class_id)
    b.pointer(offsets["lpVersion"], version)
    b.pointer(offsets["lpszComment"], comment)
    b.pointer(offsets["lpNSProviderId"], provider)
    b.pointer(offsets["lpszContext"], context)
    b.pointer(offsets["lpafpProtocols"], protocols)
    b.pointer(offsets["lpszQueryString"], query)
    b.pointer(offsets["lpcsaBuffer"], csaddrs)
    b.pointer(offsets["lpBlob"], blob)
    return _Image(bytes(b.data), sorted(b.fixups))


_HEADER_OFFSETS: dict[str, dict[str, int]] = {}


def _header_pointer_offsets(kind: Kind) -> dict[str, int]:
    cached = _HEADER_OFFSETS.get(kind)
    if cached is None:
        cls = WSAQUERYSET2W if kind == "2W" else WSAQUERYSETW
        cached = {entry[0]: getattr(cls, entry[0]).offset for entry in cls._fields_}
        _HEADER_OFFSETS[kind] = cached
    return cached


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
    return ctypes.string_at(address, size)


def _read_wstr(address: int, what: str, bounds: _Bounds = None) -> str | None:
    """Read a UTF-16LE string, never past the page holding its terminator."""
    if not address:
        return None
    if address % 2:
        raise _fail(f"{what} is not 2-byte aligned")
    limit = 2 * (MAX_STRING_CHARS + 1)
    if bounds is not None:
        if address < bounds[0] or address >= bounds[1]:
            raise _fail(f"{what} lies outside the query set's memory")
        limit = min(limit, bounds[1] - address)
    chunks: list[bytes] = []
    total = 0
    pos = address
    want = 256
    while total < limit:
        # Never read across a page boundary the string has not reached: a
        # string without a terminator must not make us touch a page beyond it.
        span = min(_PAGE - (pos % _PAGE), limit - total, want)
        chunk = ctypes.string_at(pos, span)
        start = 0
        while True:
            end = chunk.find(b"\0\0", start)
            if end < 0:
                break
            if end % 2 == 0:
                chunks.append(chunk[:end])
                return b"".join(chunks).decode("utf-16-le", errors="surrogatepass")
            start = end + 1
        chunks.append(chunk)
        total += span
        pos += span
        want = min(want * 2, _PAGE)
    if bounds is not None and total < 2 * (MAX_STRING_CHARS + 1):
        raise _fail(f"{what} has no terminator inside the query set's memory")
    raise _fail(f"{what} has no terminator within {MAX_STRING_CHARS} characters")


def _read_sockaddr(address: int, length: int, what: str, bounds: _Bounds = None) -> SockAddr | None:
    if not address:
        if length:
            raise _fail(f"{what} is NULL with length {length}")
        return None
    if length < 2 or length > MAX_SOCKADDR_LEN:
        raise _fail(f"{what} length {length} is out of range")
    raw = _at(address, length, bounds, what)
    (family,) = struct.unpack_from("<H", raw)
    if family == AF.AF_INET:
        if length < ctypes.sizeof(SOCKADDR_IN):
            raise _fail(f"{what}: AF_INET address with length {length}")
        (port,) = struct.unpack_from(">H", raw, 2)
        return SocketAddress(ipaddress.IPv4Address(raw[4:8]), port)
    if family == AF.AF_INET6:
        if length < ctypes.sizeof(SOCKADDR_IN6):
            raise _fail(f"{what}: AF_INET6 address with length {length}")
        (port,) = struct.unpack_from(">H", raw, 2)
        (flowinfo,) = struct.unpack_from("<I", raw, 4)
        (scope,) = struct.unpack_from("<I", raw, 24)
        return SocketAddress(ipaddress.IPv6Address(raw[8:24]), port, flowinfo, scope)
    return RawSocketAddress(family, raw[2:])


def _read_guid(address: int, bounds: _Bounds = None) -> uuid.UUID | None:
    if not address:
        return None
    return uuid.UUID(bytes_le=_at(address, 16, bounds, "a GUID"))


def _read_queryset(address: int | None, kind: Kind, bounds: _Bounds = None) -> QuerySet:
    if kind not in ("2W", "W"):
        raise ValueError(f"unknown query set kind {kind!r}; choose '2W' or 'W'")
    if not address:
        raise _fail("query set pointer is NULL")
    hdr = _QS2W if kind == "2W" else _QSW
    if address % ctypes.alignment(WSAQUERYSET2W):
        raise _fail("query set pointer is misaligned")
    (dw_size,) = struct.unpack("<I", _at(address, 4, bounds, "dwSize"))
    if dw_size < hdr.size:
        raise _fail(f"dwSize {dw_size} is smaller than the structure ({hdr.size})")
    values = list(hdr.unpack(_at(address, hdr.size, bounds, "the header")))
    class_id_ptr = 0
    if kind == "W":
        class_id_ptr = values.pop(2)
    (
        _size,
        name_ptr,
        version_ptr,
        comment_ptr,
        namespace,
        provider_ptr,
        context_ptr,
        n_protocols,
        protocols_ptr,
        query_ptr,
        n_csaddrs,
        csaddrs_ptr,
        output_flags,
        blob_ptr,
    ) = values
    version = None
    if version_ptr:
        number, how = _VERSION.unpack(_at(version_ptr, _VERSION.size, bounds, "lpVersion"))
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
        protocols = tuple(AfProtocol(f, p) for f, p in _AFPROTO.iter_unpack(raw))
    cs_addrs: tuple[CsAddr, ...] = ()
    if n_csaddrs:
        if n_csaddrs > MAX_COUNT:
            raise _fail(f"dwNumberOfCsAddrs {n_csaddrs} is above {MAX_COUNT}")
        if not csaddrs_ptr:
            raise _fail(f"dwNumberOfCsAddrs is {n_csaddrs} but lpcsaBuffer is NULL")
        raw = _at(csaddrs_ptr, _CSADDR_INFO.size * n_csaddrs, bounds, "lpcsaBuffer")
        items = []
        for i, (lp, ll, rp, rl, stype, proto) in enumerate(_CSADDR_INFO.iter_unpack(raw)):
            items.append(
                CsAddr(
                    _read_sockaddr(lp, ll, f"lpcsaBuffer[{i}].LocalAddr", bounds),
                    _read_sockaddr(rp, rl, f"lpcsaBuffer[{i}].RemoteAddr", bounds),
                    stype,
                    proto,
                )
            )
        cs_addrs = tuple(items)
    blob = None
    if blob_ptr:
        cb, data_ptr = _BLOB.unpack(_at(blob_ptr, _BLOB.size, bounds, "lpBlob"))
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
