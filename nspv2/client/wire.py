"""The wire between provider processes and client processes, in Python.

A mirror of ``native_stub/src/wire.h`` (the contract; its comment has the
whole picture): a frame is a 12-byte header (u32 length, header included;
u16 type; u16 flags, 0; u32 request id) and a payload whose size is exact
for its type. Values are in the machine's byte order (little-endian on
every platform nspv2 serves on); query sets travel as images
(:meth:`nspv2.QuerySet.to_image`).

Encoders build whole frames. Decoders take one whole frame and return its
fields, or raise :class:`WireError` (a ``ValueError``) for anything
malformed, and nothing else, whatever the bytes.
"""

from __future__ import annotations

import ctypes
import enum
import struct
import uuid
from dataclasses import dataclass

from ..sdk.winsock2 import WSAQUERYSETW

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_FRAME",
    "MAX_IMAGE",
    "MAX_IN_FLIGHT_DEFAULT",
    "MAX_PROVIDERS",
    "MAX_TEXT",
    "POINTER_SIZE",
    "VERSION",
    "Header",
    "MsgType",
    "Reply",
    "Request",
    "Role",
    "WireError",
    "decode_reply",
    "decode_request",
    "encode_begin",
    "encode_empty",
    "encode_empty_request",
    "encode_end",
    "encode_hello",
    "encode_hello_reply",
    "encode_next",
    "encode_reply",
    "encode_set",
    "parse_header",
]

#: NSPV2_WIRE_MAGIC: "NSP2" in memory.
MAGIC = 0x3250534E
#: NSPV2_WIRE_VERSION.
VERSION = 1
#: NSPV2_WIRE_HEADER: bytes of a frame header.
HEADER = 12
#: NSPV2_WIRE_MAX_FRAME: the largest frame either end sends or accepts.
MAX_FRAME = 4 * 1024 * 1024
#: NSPV2_WIRE_MAX_IMAGE: the largest query-set image in a frame.
MAX_IMAGE = MAX_FRAME - HEADER - 16
#: NSPV2_WIRE_MAX_TEXT: the largest ERROR text.
MAX_TEXT = 1024
#: NSPV2_WIRE_MAX_PROVIDERS: the most providers a HELLO_REPLY lists.
MAX_PROVIDERS = 256
#: Used by the encoders of test servers only; the real value is the server's.
MAX_IN_FLIGHT_DEFAULT = 8
#: sizeof(void *) of this process, sent in HELLO.
POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)

_QSW_SIZE = ctypes.sizeof(WSAQUERYSETW)


class MsgType(enum.IntEnum):
    """A frame's type (``NSPV2_WIRE_*``); a reply is its request's | REPLY."""

    HELLO = 0x0001
    LOOKUP_BEGIN = 0x0002
    LOOKUP_NEXT = 0x0003
    LOOKUP_END = 0x0004
    SET_SERVICE = 0x0005
    GOODBYE = 0x0006
    KEEPALIVE = 0x0007
    STATUS = 0x0008
    REPLY = 0x8000
    ERROR = 0x80FF
    HELLO_REPLY = 0x8001
    BEGIN_REPLY = 0x8002
    NEXT_REPLY = 0x8003
    END_REPLY = 0x8004
    SET_REPLY = 0x8005
    GOODBYE_REPLY = 0x8006
    STATUS_REPLY = 0x8008


class Role(enum.IntEnum):
    """HELLO's role: a client (with a client session) or a monitor (STATUS only)."""

    CLIENT = 0
    MONITOR = 1


_REQUESTS = frozenset(
    {
        MsgType.HELLO,
        MsgType.LOOKUP_BEGIN,
        MsgType.LOOKUP_NEXT,
        MsgType.LOOKUP_END,
        MsgType.SET_SERVICE,
        MsgType.GOODBYE,
        MsgType.KEEPALIVE,
        MsgType.STATUS,
    }
)
_REPLIES = frozenset(
    {
        MsgType.HELLO_REPLY,
        MsgType.BEGIN_REPLY,
        MsgType.NEXT_REPLY,
        MsgType.END_REPLY,
        MsgType.SET_REPLY,
        MsgType.GOODBYE_REPLY,
        MsgType.STATUS_REPLY,
        MsgType.ERROR,
    }
)
_KNOWN = _REQUESTS | _REPLIES

_HEADER = struct.Struct("<IHHI")
_HELLO = struct.Struct("<IHHII")
_BEGIN = struct.Struct("<II")
_NEXT = struct.Struct("<QII")
_END = struct.Struct("<Q")
_SET = struct.Struct("<IIII")
_CODE = struct.Struct("<iI")  # every reply starts with i32 code, u32 word
_HANDLE = struct.Struct("<Q")
_IMAGE_SIZE = struct.Struct("<II")  # NEXT_REPLY: image size, 0
_HELLO_REPLY = struct.Struct("<IHHIIIII")
_PROVIDER = struct.Struct("<16sII")

assert _HEADER.size == HEADER and _HELLO.size == 16


class WireError(ValueError):
    """A malformed frame (the message says what is wrong)."""


@dataclass(frozen=True)
class Header:
    """A frame header."""

    length: int
    type: int
    flags: int
    request_id: int


@dataclass(frozen=True)
class Request:
    """A decoded client->server frame (fields of its type; the others 0)."""

    header: Header
    magic: int = 0
    version: int = 0
    pointer_size: int = 0
    role: int = 0
    handle: int = 0
    control_flags: int = 0
    buffer_length: int = 0
    operation: int = 0
    image: bytes = b""


@dataclass(frozen=True)
class Reply:
    """A decoded server->client frame.

    ``word`` is NEXT_REPLY's buffer length and STATUS_REPLY's / ERROR's text
    size; ``tail`` is NEXT_REPLY's image or the text's bytes.
    """

    header: Header
    code: int = 0
    word: int = 0
    handle: int = 0
    tail: bytes = b""
    server_pid: int = 0
    version: int = 0
    keepalive_ms: int = 0
    max_frame: int = 0
    max_in_flight: int = 0
    providers: tuple[tuple[uuid.UUID, int], ...] = ()

    @property
    def type(self) -> int:
        return self.header.type

    @property
    def text(self) -> str:
        """STATUS_REPLY's JSON or ERROR's reason (undecodable bytes replaced)."""
        return self.tail.decode("utf-8", errors="replace")


# ---- headers -----------------------------------------------------------------


def parse_header(data: bytes, max_frame: int = MAX_FRAME) -> Header:
    """The header in the first 12 bytes of ``data``, if it may start a frame:
    length within 12..``max_frame``, flags 0, a known type. Else WireError."""
    if len(data) < HEADER:
        raise WireError(f"a header is {HEADER} bytes, not {len(data)}")
    length, mtype, flags, request_id = _HEADER.unpack_from(data)
    if length < HEADER or length > max_frame:
        raise WireError(f"frame length {length} is outside {HEADER}..{max_frame}")
    if flags:
        raise WireError(f"flags are {flags:#x}, not 0")
    if mtype not in _KNOWN:
        raise WireError(f"unknown frame type {mtype:#06x}")
    return Header(length, mtype, flags, request_id)


def _whole(frame: bytes) -> tuple[Header, memoryview]:
    header = parse_header(frame)
    if header.length != len(frame):
        raise WireError(f"the header says {header.length} bytes, the frame is {len(frame)}")
    return header, memoryview(frame)[HEADER:]


def _frame(mtype: int, request_id: int, payload: bytes = b"") -> bytes:
    length = HEADER + len(payload)
    if length > MAX_FRAME:
        raise WireError(f"a frame of {length} bytes is above {MAX_FRAME}")
    if not 0 <= request_id <= 0xFFFFFFFF:
        raise WireError(f"request id {request_id} does not fit in 32 bits")
    return _HEADER.pack(length, mtype, 0, request_id) + payload


def _check_image(image: bytes) -> None:
    if not _QSW_SIZE <= len(image) <= MAX_IMAGE:
        raise WireError(f"an image of {len(image)} bytes is outside {_QSW_SIZE}..{MAX_IMAGE}")


# ---- client -> server -----------------------------------------------------------


def encode_hello(request_id: int, role: int = Role.CLIENT) -> bytes:
    return _frame(
        MsgType.HELLO, request_id, _HELLO.pack(MAGIC, VERSION, POINTER_SIZE, int(role), 0)
    )


def encode_begin(request_id: int, flags: int, image: bytes) -> bytes:
    _check_image(image)
    return _frame(MsgType.LOOKUP_BEGIN, request_id, _BEGIN.pack(flags, len(image)) + image)


def encode_next(request_id: int, handle: int, flags: int, buffer_length: int) -> bytes:
    return _frame(MsgType.LOOKUP_NEXT, request_id, _NEXT.pack(handle, flags, buffer_length))


def encode_end(request_id: int, handle: int) -> bytes:
    return _frame(MsgType.LOOKUP_END, request_id, _END.pack(handle))


def encode_set(request_id: int, operation: int, flags: int, image: bytes) -> bytes:
    _check_image(image)
    return _frame(
        MsgType.SET_SERVICE, request_id, _SET.pack(operation, flags, len(image), 0) + image
    )


def encode_empty(mtype: int, request_id: int) -> bytes:
    """GOODBYE, KEEPALIVE (request id 0) or STATUS: a header only."""
    if mtype not in (MsgType.GOODBYE, MsgType.KEEPALIVE, MsgType.STATUS):
        raise WireError(f"frame type {mtype:#06x} has a payload")
    return _frame(mtype, request_id)


def encode_empty_request(request_id: int, mtype: int) -> bytes:
    """:func:`encode_empty` with the request id first, like the other encoders."""
    return encode_empty(mtype, request_id)


def decode_request(frame: bytes) -> Request:
    """One whole client->server frame (the server's check, in Python: test
    servers and the tests use it). WireError for anything malformed."""
    header, body = _whole(frame)
    mtype, size = header.type, len(body)
    if mtype not in _REQUESTS:
        raise WireError(f"frame type {mtype:#06x} is not a request")
    if mtype == MsgType.KEEPALIVE:
        if header.request_id:
            raise WireError("KEEPALIVE has request id 0")
    elif not header.request_id:
        raise WireError("a request's id is not 0")

    def exact(n: int) -> None:
        if size != n:
            raise WireError(f"{MsgType(mtype).name} has {n} payload bytes, not {size}")

    if mtype == MsgType.HELLO:
        exact(_HELLO.size)
        magic, version, pointer_size, role, zero = _HELLO.unpack(body)
        if magic != MAGIC:
            raise WireError(f"HELLO's magic is {magic:#010x}")
        if zero:
            raise WireError("HELLO's reserved word is not 0")
        return Request(header, magic=magic, version=version, pointer_size=pointer_size, role=role)
    if mtype == MsgType.LOOKUP_BEGIN:
        if size < _BEGIN.size:
            raise WireError("LOOKUP_BEGIN is shorter than its fixed fields")
        flags, n = _BEGIN.unpack_from(body)
        exact(_BEGIN.size + n)
        image = bytes(body[_BEGIN.size :])
        _check_image(image)
        return Request(header, control_flags=flags, image=image)
    if mtype == MsgType.LOOKUP_NEXT:
        exact(_NEXT.size)
        handle, flags, length = _NEXT.unpack(body)
        return Request(header, handle=handle, control_flags=flags, buffer_length=length)
    if mtype == MsgType.LOOKUP_END:
        exact(_END.size)
        (handle,) = _END.unpack(body)
        return Request(header, handle=handle)
    if mtype == MsgType.SET_SERVICE:
        if size < _SET.size:
            raise WireError("SET_SERVICE is shorter than its fixed fields")
        operation, flags, n, zero = _SET.unpack_from(body)
        if zero:
            raise WireError("SET_SERVICE's reserved word is not 0")
        exact(_SET.size + n)
        image = bytes(body[_SET.size :])
        _check_image(image)
        return Request(header, operation=operation, control_flags=flags, image=image)
    exact(0)  # GOODBYE, KEEPALIVE, STATUS
    return Request(header)


# ---- server -> client -------------------------------------------------------------


def encode_reply(
    mtype: int,
    request_id: int,
    code: int = 0,
    word: int = 0,
    extra: bytes = b"",
    tail: bytes = b"",
) -> bytes:
    """A reply frame: i32 code, u32 word, the fixed extra bytes, the tail."""
    return _frame(mtype, request_id, _CODE.pack(code, word) + extra + tail)


def encode_hello_reply(
    request_id: int,
    server_pid: int,
    keepalive_ms: int,
    providers: tuple[tuple[uuid.UUID, int], ...] = (),
    *,
    max_frame: int = MAX_FRAME,
    max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
    version: int = VERSION,
) -> bytes:
    payload = _HELLO_REPLY.pack(
        MAGIC, version, 0, server_pid, keepalive_ms, max_frame, max_in_flight, len(providers)
    ) + b"".join(_PROVIDER.pack(p.bytes_le, ns, 0) for p, ns in providers)
    return _frame(MsgType.HELLO_REPLY, request_id, payload)


def decode_reply(frame: bytes) -> Reply:
    """One whole server->client frame. WireError for anything malformed (the
    client then treats the connection as lost)."""
    header, body = _whole(frame)
    mtype, size = header.type, len(body)
    if mtype not in _REPLIES:
        raise WireError(f"frame type {mtype:#06x} is not a reply")
    if mtype != MsgType.ERROR and not header.request_id:
        raise WireError(f"{MsgType(mtype).name} has request id 0")
    name = MsgType(mtype).name

    def exact(n: int) -> None:
        if size != n:
            raise WireError(f"{name} has {n} payload bytes, not {size}")

    if mtype == MsgType.HELLO_REPLY:
        if size < _HELLO_REPLY.size:
            raise WireError("HELLO_REPLY is shorter than its fixed fields")
        magic, version, zero, pid, keepalive, max_frame, in_flight, n = _HELLO_REPLY.unpack_from(
            body
        )
        if magic != MAGIC:
            raise WireError(f"HELLO_REPLY's magic is {magic:#010x}")
        if zero:
            raise WireError("HELLO_REPLY's reserved field is not 0")
        if n > MAX_PROVIDERS:
            raise WireError(f"HELLO_REPLY lists {n} providers, above {MAX_PROVIDERS}")
        exact(_HELLO_REPLY.size + n * _PROVIDER.size)
        providers = []
        for guid, namespace, pad in _PROVIDER.iter_unpack(body[_HELLO_REPLY.size :]):
            if pad:
                raise WireError("a HELLO_REPLY provider's reserved word is not 0")
            providers.append((uuid.UUID(bytes_le=bytes(guid)), namespace))
        return Reply(
            header,
            server_pid=pid,
            version=version,
            keepalive_ms=keepalive,
            max_frame=max_frame,
            max_in_flight=in_flight,
            providers=tuple(providers),
        )
    if size < _CODE.size:
        raise WireError(f"{name} is shorter than its code")
    code, word = _CODE.unpack_from(body)
    rest = body[_CODE.size :]
    if mtype == MsgType.BEGIN_REPLY:
        exact(_CODE.size + _HANDLE.size)
        (handle,) = _HANDLE.unpack(rest)
        if word:
            raise WireError("BEGIN_REPLY's reserved word is not 0")
        if code and handle:
            raise WireError("a failed BEGIN_REPLY carries a handle")
        if not code and not handle:
            raise WireError("a successful BEGIN_REPLY carries no handle")
        return Reply(header, code=code, handle=handle)
    if mtype == MsgType.NEXT_REPLY:
        if size < _CODE.size + _IMAGE_SIZE.size:
            raise WireError("NEXT_REPLY is shorter than its fixed fields")
        n, zero = _IMAGE_SIZE.unpack_from(rest)
        if zero:
            raise WireError("NEXT_REPLY's reserved word is not 0")
        exact(_CODE.size + _IMAGE_SIZE.size + n)
        if code and n:
            raise WireError("a failed NEXT_REPLY carries an image")
        if not code and not _QSW_SIZE <= n <= MAX_IMAGE:
            raise WireError(f"NEXT_REPLY's image of {n} bytes is outside {_QSW_SIZE}..{MAX_IMAGE}")
        return Reply(header, code=code, word=word, tail=bytes(rest[_IMAGE_SIZE.size :]))
    if mtype in (MsgType.END_REPLY, MsgType.SET_REPLY, MsgType.GOODBYE_REPLY):
        exact(_CODE.size)
        if word:
            raise WireError(f"{name}'s reserved word is not 0")
        return Reply(header, code=code)
    # STATUS_REPLY, ERROR: i32 code, u32 text size, text
    exact(_CODE.size + word)
    if mtype == MsgType.ERROR and word > MAX_TEXT:
        raise WireError(f"ERROR's text of {word} bytes is above {MAX_TEXT}")
    return Reply(header, code=code, word=word, tail=bytes(rest))
