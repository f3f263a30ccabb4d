"""nspv2.client.wire and query-set images: the constants are wire.h's, every
frame round-trips, and the parsers raise nothing but their documented error
on any bytes (hypothesis)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from nspv2 import Client, QuerySet, WinsockError, WSAError
from nspv2.client import ConnectionLost, ServerNotFound, wire
from nspv2.client.errors import WSAECONNRESET
from nspv2.client.wire import MsgType, Role, WireError
from nspv2.provider.queryset import (
    MAX_STRING_CHARS,
    AfProtocol,
    CsAddr,
    QuerySetError,
    RawSocketAddress,
    SocketAddress,
    Version,
)
from nspv2.sdk.winsock2 import WSAECOMPARATOR, WSAQUERYSETW

from .cprobe import CFLAGS, INCLUDE, NATIVE, measure, require_compiler, run

P = ctypes.sizeof(ctypes.c_void_p)
QSW = ctypes.sizeof(WSAQUERYSETW)

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
ids = st.integers(1, 2**32 - 1)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))
maybe_text = st.none() | texts
sockaddrs = st.one_of(
    st.builds(SocketAddress, st.ip_addresses(v=4), st.integers(0, 65535)),
    st.builds(SocketAddress, st.ip_addresses(v=6), st.integers(0, 65535), u32, u32),
    st.builds(RawSocketAddress, st.sampled_from([1, 6, 17, 32]), st.binary(max_size=30)),
)
querysets = st.builds(
    QuerySet,
    service_instance_name=maybe_text,
    version=st.none() | st.builds(Version, u32, st.sampled_from(list(WSAECOMPARATOR))),
    comment=maybe_text,
    namespace=u32,
    provider_id=st.none() | st.uuids(),
    context=maybe_text,
    protocols=st.lists(st.builds(AfProtocol, i32, i32), max_size=4).map(tuple),
    query_string=maybe_text,
    cs_addrs=st.lists(
        st.builds(CsAddr, st.none() | sockaddrs, st.none() | sockaddrs, i32, i32), max_size=4
    ).map(tuple),
    output_flags=u32,
    blob=st.none() | st.binary(max_size=100),
    service_class_id=st.none() | st.uuids(),
)


# ---- the constants are the C header's ---------------------------------------------


def test_constants_equal_wire_h(tmp_path: Path) -> None:
    names = {
        "NSPV2_WIRE_MAGIC": wire.MAGIC,
        "NSPV2_WIRE_VERSION": wire.VERSION,
        "NSPV2_WIRE_HEADER": wire.HEADER,
        "NSPV2_WIRE_MAX_FRAME": wire.MAX_FRAME,
        "NSPV2_WIRE_MAX_IMAGE": wire.MAX_IMAGE,
        "NSPV2_WIRE_MAX_TEXT": wire.MAX_TEXT,
        "NSPV2_WIRE_MAX_PROVIDERS": wire.MAX_PROVIDERS,
        "NSPV2_WIRE_ROLE_CLIENT": Role.CLIENT,
        "NSPV2_WIRE_ROLE_MONITOR": Role.MONITOR,
        "sizeof(nspv2_wire_header)": wire.HEADER,
        "sizeof(WSAQUERYSETW)": QSW,
        "sizeof(void *)": wire.POINTER_SIZE,
    }
    for member in MsgType:
        if member.value & 0x8000 and member not in (MsgType.REPLY, MsgType.ERROR):
            continue  # the replies are request | NSPV2_WIRE_REPLY, not names of their own
        names[f"NSPV2_WIRE_{member.name}"] = member
    source = tmp_path / "wire_constants.c"
    source.write_text(
        '#include "wire.h"\n#include <stdio.h>\nint main(void) {\n'
        + "".join(
            f'    printf("%s %lld\\n", "nspv2_probe_{i}", (long long)({name}));\n'
            for i, name in enumerate(names)
        )
        + "    return 0;\n}\n"
    )
    found = measure(require_compiler("host"), source, tmp_path, [f"-I{NATIVE / 'src'}"])
    got = {name: found[f"nspv2_probe_{i}"] for i, name in enumerate(names)}
    assert got == {name: int(value) for name, value in names.items()}
    # and the replies are their request's type | REPLY
    for member in MsgType:
        if member.name.endswith("_REPLY") and member is not MsgType.HELLO_REPLY:
            request = member.name.removesuffix("_REPLY")
            request = {"BEGIN": "LOOKUP_BEGIN", "NEXT": "LOOKUP_NEXT", "END": "LOOKUP_END"}.get(
                request, {"SET": "SET_SERVICE"}.get(request, request)
            )
            assert member == MsgType[request] | MsgType.REPLY
    assert MsgType.HELLO_REPLY == MsgType.HELLO | MsgType.REPLY


# ---- frames round-trip ------------------------------------------------------------------


@given(ids, st.sampled_from(list(Role)))
def test_hello(rid: int, role: Role) -> None:
    frame = wire.encode_hello(rid, role)
    assert len(frame) == 12 + 16
    r = wire.decode_request(frame)
    assert (r.header.type, r.header.request_id, r.magic, r.version, r.pointer_size, r.role) == (
        MsgType.HELLO,
        rid,
        wire.MAGIC,
        wire.VERSION,
        P,
        role,
    )


@given(ids, u32, querysets)
def test_begin_and_set_carry_the_image(rid: int, flags: int, q: QuerySet) -> None:
    image = q.to_image()
    r = wire.decode_request(wire.encode_begin(rid, flags, image))
    assert (r.header.type, r.header.request_id, r.control_flags) == (
        MsgType.LOOKUP_BEGIN,
        rid,
        flags,
    )
    assert QuerySet.from_image(r.image) == q
    r = wire.decode_request(wire.encode_set(rid, 2, flags, image))
    assert (r.header.type, r.operation, r.control_flags) == (MsgType.SET_SERVICE, 2, flags)
    assert QuerySet.from_image(r.image) == q


@given(ids, st.integers(0, 2**64 - 1), u32, u32)
def test_next_and_end(rid: int, handle: int, flags: int, length: int) -> None:
    r = wire.decode_request(wire.encode_next(rid, handle, flags, length))
    assert (r.header.type, r.handle, r.control_flags, r.buffer_length) == (
        MsgType.LOOKUP_NEXT,
        handle,
        flags,
        length,
    )
    r = wire.decode_request(wire.encode_end(rid, handle))
    assert (r.header.type, r.header.length, r.handle) == (MsgType.LOOKUP_END, 20, handle)


def test_empty_frames() -> None:
    assert wire.decode_request(wire.encode_empty(MsgType.KEEPALIVE, 0)).header.length == 12
    assert wire.decode_request(wire.encode_empty(MsgType.GOODBYE, 5)).header.request_id == 5
    assert wire.decode_request(wire.encode_empty(MsgType.STATUS, 6)).header.type == MsgType.STATUS
    with pytest.raises(WireError, match="request id 0"):
        wire.decode_request(wire.encode_empty(MsgType.KEEPALIVE, 1))
    with pytest.raises(WireError, match="id is not 0"):
        wire.decode_request(wire.encode_empty(MsgType.GOODBYE, 0))
    with pytest.raises(WireError, match="has a payload"):
        wire.encode_empty(MsgType.HELLO, 1)


@given(ids, u32, st.lists(st.tuples(st.uuids(), u32), max_size=wire.MAX_PROVIDERS).map(tuple))
def test_hello_reply(rid: int, pid: int, providers: tuple[tuple[uuid.UUID, int], ...]) -> None:
    r = wire.decode_reply(wire.encode_hello_reply(rid, pid, 5000, providers, max_in_flight=3))
    assert (r.type, r.server_pid, r.keepalive_ms, r.max_in_flight, r.max_frame) == (
        MsgType.HELLO_REPLY,
        pid,
        5000,
        3,
        wire.MAX_FRAME,
    )
    assert r.providers == providers


@given(ids, i32, st.integers(1, 2**64 - 1), u32, querysets, st.text(max_size=300))
def test_replies(rid: int, code: int, handle: int, length: int, q: QuerySet, text: str) -> None:
    assume(code != 0)
    r = wire.decode_reply(
        wire.encode_reply(MsgType.BEGIN_REPLY, rid, 0, extra=struct.pack("<Q", handle))
    )
    assert (r.code, r.handle) == (0, handle)
    r = wire.decode_reply(wire.encode_reply(MsgType.BEGIN_REPLY, rid, code, extra=bytes(8)))
    assert (r.code, r.handle) == (code, 0)
    image = q.to_image()
    frame = wire.encode_reply(
        MsgType.NEXT_REPLY, rid, 0, length, struct.pack("<II", len(image), 0), image
    )
    r = wire.decode_reply(frame)
    assert (r.code, r.word) == (0, length)
    assert QuerySet.from_image(r.tail) == q
    r = wire.decode_reply(
        wire.encode_reply(MsgType.NEXT_REPLY, rid, code, length, struct.pack("<II", 0, 0))
    )
    assert (r.code, r.word, r.tail) == (code, length, b"")
    for mtype in (MsgType.END_REPLY, MsgType.SET_REPLY, MsgType.GOODBYE_REPLY):
        assert wire.decode_reply(wire.encode_reply(mtype, rid, code)).code == code
    data = text.encode()
    r = wire.decode_reply(wire.encode_reply(MsgType.STATUS_REPLY, rid, 0, len(data), tail=data))
    assert r.text == text
    data = data[: wire.MAX_TEXT]
    r = wire.decode_reply(wire.encode_reply(MsgType.ERROR, 0, code, len(data), tail=data))
    assert (r.code, r.tail, r.header.request_id) == (code, data, 0)


def test_malformed_frames_say_why() -> None:
    hello = wire.encode_hello(1)
    cases = {
        "outside 12..": struct.pack("<IHHI", 11, 1, 0, 1),
        "flags": struct.pack("<IHHI", 12, 6, 1, 1),
        "unknown frame type": struct.pack("<IHHI", 12, 0x0009, 0, 1),
        "the frame is": hello[:-1],
        "magic": hello[:12] + b"XXXX" + hello[16:],
        "payload bytes": struct.pack("<IHHIQ", 20, int(MsgType.GOODBYE), 0, 1, 0),
        "not a request": wire.encode_reply(MsgType.END_REPLY, 1),
    }
    for why, frame in cases.items():
        with pytest.raises(WireError, match=why):
            wire.decode_request(frame)
    big = struct.pack("<IHHI", wire.MAX_FRAME + 1, 1, 0, 1)
    with pytest.raises(WireError, match="outside"):
        wire.parse_header(big)
    too_small = struct.pack("<IHHIII", 20, int(MsgType.LOOKUP_BEGIN), 0, 1, 0, 0)
    with pytest.raises(WireError, match="an image of 0 bytes"):
        wire.decode_request(too_small)
    replies = {
        "not a reply": hello,
        "has request id 0": wire.encode_reply(MsgType.END_REPLY, 0),
        "carries a handle": wire.encode_reply(MsgType.BEGIN_REPLY, 1, 5, extra=b"\1" + bytes(7)),
        "carries no handle": wire.encode_reply(MsgType.BEGIN_REPLY, 1, 0, extra=bytes(8)),
        "carries an image": wire.encode_reply(
            MsgType.NEXT_REPLY, 1, 5, 0, struct.pack("<II", QSW, 0), bytes(QSW)
        ),
        "above 1024": wire.encode_reply(MsgType.ERROR, 0, 1, 1025, tail=bytes(1025)),
        "providers, above": wire.encode_hello_reply(1, 1, 1)[:-4] + struct.pack("<I", 257),
    }
    for why, frame in replies.items():
        with pytest.raises(WireError, match=why):
            wire.decode_reply(frame)


# ---- the parsers never raise anything else ---------------------------------------------


def valid_frames() -> list[bytes]:
    image = QuerySet("alice@example.com", comment="c", blob=b"xy").to_image()
    return [
        wire.encode_hello(1),
        wire.encode_begin(2, 0xFF0, image),
        wire.encode_next(3, 7, 0, 1024),
        wire.encode_end(4, 7),
        wire.encode_set(5, 0, 0, image),
        wire.encode_empty(MsgType.GOODBYE, 6),
        wire.encode_empty(MsgType.KEEPALIVE, 0),
        wire.encode_hello_reply(1, 99, 5000, ((uuid.uuid4(), 37),)),
        wire.encode_reply(MsgType.BEGIN_REPLY, 2, 0, extra=struct.pack("<Q", 7)),
        wire.encode_reply(MsgType.NEXT_REPLY, 3, 0, 1024, struct.pack("<II", len(image), 0), image),
        wire.encode_reply(MsgType.END_REPLY, 4, 0),
        wire.encode_reply(MsgType.ERROR, 0, 10013, 3, tail=b"why"),
    ]


def parse_all(data: bytes) -> None:
    for parse in (wire.decode_request, wire.decode_reply):
        try:
            parse(data)
        except WireError:
            pass
    try:
        wire.parse_header(data)
    except WireError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    parse_all(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(valid_frames()), st.data())
def test_mutated_frames_raise_only_wire_error(frame: bytes, data: st.DataObject) -> None:
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    parse_all(bytes(mutated[:cut]))
    parse_all(bytes(mutated))
    # a header whose length is fixed up to the mutated size
    if len(mutated) >= 12:
        struct.pack_into("<I", mutated, 0, len(mutated))
        parse_all(bytes(mutated))


# ---- images ----------------------------------------------------------------------------


@given(querysets)
def test_image_round_trip(q: QuerySet) -> None:
    image = q.to_image()
    assert len(image) == q.required_size("W")
    assert QuerySet.from_image(image) == q
    assert QuerySet.from_image(q.to_image("2W"), "2W") == dataclasses.replace(
        q, service_class_id=None
    )


def test_image_is_the_packed_structure_with_offsets() -> None:
    q = QuerySet("bob@example.com", comment="hi", provider_id=uuid.uuid4())
    image = q.to_image()
    buf = q.to_buffer("W")
    base = ctypes.addressof(buf)
    packed = ctypes.string_at(base, len(image))
    header = WSAQUERYSETW.from_buffer_copy(image)
    live = WSAQUERYSETW.from_buffer_copy(packed)
    assert header.dwSize == QSW
    for name in ("lpszServiceInstanceName", "lpszComment", "lpNSProviderId"):
        offset = ctypes.cast(getattr(header, name), ctypes.c_void_p).value
        pointer = ctypes.cast(getattr(live, name), ctypes.c_void_p).value
        assert offset and pointer == base + offset
    assert ctypes.cast(header.lpszContext, ctypes.c_void_p).value is None  # NULL is 0
    assert image[QSW:] == packed[QSW:]


def image_with(q: QuerySet, **fields: int) -> bytes:
    data = bytearray(q.to_image())
    offsets = {name: getattr(WSAQUERYSETW, name).offset for name, *_ in WSAQUERYSETW._fields_}
    for name, value in fields.items():
        size = 4 if name.startswith("dw") else P
        data[offsets[name] : offsets[name] + size] = value.to_bytes(size, "little")
    return bytes(data)


def test_image_checks_like_the_c_side() -> None:
    q = QuerySet("carol@example.com", comment="x", blob=b"abc")
    good = q.to_image()
    name_at = struct.unpack_from(
        "<Q" if P == 8 else "<I", good, WSAQUERYSETW.lpszServiceInstanceName.offset
    )[0]
    cases = {
        "less than the structure": good[: QSW - 1],
        "dwSize is": image_with(q, dwSize=QSW + 8),
        "overlaps the structure": image_with(q, lpszServiceInstanceName=8),
        "not 2-aligned": image_with(q, lpszServiceInstanceName=name_at + 1),
        "outside the image": image_with(q, lpszComment=(len(good) + 1) & ~1),
        "no NUL inside": QuerySet("carol@example.com").to_image()[:-2],
        "lpafpProtocols is NULL": image_with(q, dwNumberOfProtocols=1),
        "above 65536": image_with(q, dwNumberOfCsAddrs=65537),
        "lpNSProviderId .* outside": image_with(q, lpNSProviderId=(len(good) - 8) & ~3),
    }
    # the BLOB and the CSADDR_INFO array share no byte with other objects
    blob_at = struct.unpack_from("<Q" if P == 8 else "<I", good, WSAQUERYSETW.lpBlob.offset)[0]
    cases["lpBlob shares bytes with lpNSProviderId"] = image_with(q, lpNSProviderId=blob_at)
    cases["lpBlob shares bytes with lpszComment"] = image_with(q, lpszComment=blob_at)
    for why, image in cases.items():
        with pytest.raises(QuerySetError, match=why):
            QuerySet.from_image(image)
    # other objects may share bytes: one string for two fields
    shared = QuerySet.from_image(image_with(q, lpszComment=name_at))
    assert shared.comment == shared.service_instance_name == "carol@example.com"
    with pytest.raises(ValueError, match="unknown query set kind"):
        QuerySet.from_image(good, "X")  # type: ignore[arg-type]


def test_image_string_limit() -> None:
    longest = QuerySet("a" * MAX_STRING_CHARS)
    assert QuerySet.from_image(longest.to_image()) == longest
    # the name is the only piece: its terminator ends the image; one unit more
    image = longest.to_image()[:-2] + "a".encode("utf-16-le") + b"\0\0"
    with pytest.raises(QuerySetError, match="longer than 32767"):
        QuerySet.from_image(image)


@settings(max_examples=500)
@given(st.binary(max_size=600))
@example(bytes(QSW))
def test_arbitrary_images_raise_only_query_set_error(data: bytes) -> None:
    try:
        QuerySet.from_image(data)
    except QuerySetError:
        pass


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(querysets, st.data())
def test_mutated_images_raise_only_query_set_error(q: QuerySet, data: st.DataObject) -> None:
    image = bytearray(q.to_image())
    for _ in range(data.draw(st.integers(1, 8))):
        # mostly in the structure, where the offsets and counts are
        at = data.draw(st.integers(0, min(len(image), QSW + 16) - 1))
        image[at] = data.draw(st.integers(0, 255))
    try:
        QuerySet.from_image(bytes(image))
    except QuerySetError:
        pass


def test_wsa_error_codes_are_the_client_constants() -> None:
    from nspv2.client.errors import WSAECONNRESET, WSAEPROCLIM

    assert (WSAECONNRESET, WSAEPROCLIM) == (10054, 10067)
    assert int(WSAError.WSASERVICE_NOT_FOUND) == 10108


# ---- the client against a scripted server ------------------------------------------------
#
# What a real server never does (malformed replies, answering the wrong
# request, going silent) is scripted here; everything else is in
# tests/test_client.py against real `nspv2 serve` processes.


class Scripted:
    """A one-connection server on a Unix socket, in a thread: it answers
    HELLO, then hands each request to ``answer`` (None: close)."""

    def __init__(
        self,
        folder: Path,
        answer: Callable[[wire.Request], bytes | None],
        *,
        hello: Callable[[wire.Request], bytes] | None = None,
        keepalive_ms: int = 0,
    ) -> None:
        self.path = folder / "scripted.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.answer = answer
        self.hello = hello or (
            lambda r: wire.encode_hello_reply(
                r.header.request_id, 4242, keepalive_ms, ((uuid.UUID(int=7), 37),)
            )
        )
        self.received: list[wire.Request] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def read(self, conn: socket.socket) -> wire.Request | None:
        head = b""
        while len(head) < 12:
            chunk = conn.recv(12 - len(head))
            if not chunk:
                return None
            head += chunk
        length = struct.unpack_from("<I", head)[0]
        body = b""
        while len(body) < length - 12:
            chunk = conn.recv(length - 12 - len(body))
            if not chunk:
                return None
            body += chunk
        request = wire.decode_request(head + body)
        self.received.append(request)
        return request

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn:
            first = self.read(conn)
            if first is None:
                return
            conn.sendall(self.hello(first))
            while True:
                try:
                    request = self.read(conn)
                except (OSError, TimeoutError):
                    return
                if request is None:
                    return
                if request.header.type == MsgType.KEEPALIVE:
                    continue
                reply = self.answer(request)
                if reply is None:
                    return
                if reply:
                    conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@contextlib.contextmanager
def scripted(answer: Callable[[wire.Request], bytes | None], **kw: Any) -> Iterator[Scripted]:
    folder = Path(tempfile.mkdtemp(prefix="nspv2-", dir="/tmp"))
    server = Scripted(folder, answer, **kw)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(folder)


def result_reply(rid: int, q: QuerySet, length: int = 1024) -> bytes:
    image = q.to_image()
    return wire.encode_reply(
        MsgType.NEXT_REPLY, rid, 0, length, struct.pack("<II", len(image), 0), image
    )


def test_client_speaks_the_protocol() -> None:
    results = [QuerySet("a@example.com", comment="x" * 600), QuerySet("b@example.com")]

    def answer(r: wire.Request) -> bytes | None:
        rid = r.header.request_id
        if r.header.type == MsgType.LOOKUP_BEGIN:
            assert QuerySet.from_image(r.image) == QuerySet("*@example.com")
            return wire.encode_reply(MsgType.BEGIN_REPLY, rid, 0, extra=struct.pack("<Q", 99))
        if r.header.type == MsgType.LOOKUP_NEXT:
            assert r.handle == 99
            if not results:
                return wire.encode_reply(
                    MsgType.NEXT_REPLY, rid, WSAError.WSA_E_NO_MORE, r.buffer_length, bytes(8)
                )
            need = results[0].required_size("W")
            if r.buffer_length < need:  # the WSAEFAULT path: the client grows its buffer
                return wire.encode_reply(
                    MsgType.NEXT_REPLY, rid, WSAError.WSAEFAULT, need, bytes(8)
                )
            return result_reply(rid, results.pop(0), need)
        if r.header.type == MsgType.LOOKUP_END:
            return wire.encode_reply(MsgType.END_REPLY, rid, 0)
        if r.header.type == MsgType.SET_SERVICE:
            return wire.encode_reply(MsgType.SET_REPLY, rid, WSAError.WSAEINVAL)
        if r.header.type == MsgType.STATUS:
            text = b'{"version": 1}'
            return wire.encode_reply(MsgType.STATUS_REPLY, rid, 0, len(text), tail=text)
        assert r.header.type == MsgType.GOODBYE
        return wire.encode_reply(MsgType.GOODBYE_REPLY, rid, 0)

    with scripted(answer) as server, Client(socket=server.path) as client:
        assert (client.server_pid, client.providers) == (4242, ((uuid.UUID(int=7), 37),))
        found = client.lookup("*@example.com")
        assert [q.service_instance_name for q in found] == ["a@example.com", "b@example.com"]
        with pytest.raises(WinsockError) as caught:
            client.set_service(QuerySet("a@example.com"), 0)
        assert caught.value.code == WSAError.WSAEINVAL
        assert client.status() == {"version": 1}
    kinds = [MsgType(r.header.type).name for r in server.received]
    assert kinds[0] == "HELLO" and kinds[-1] == "GOODBYE"
    assert kinds.count("LOOKUP_NEXT") == 4  # WSAEFAULT, a (grown buffer), b, no more
    assert server.received[0].pointer_size == P and server.received[0].role == Role.CLIENT
    ids = [r.header.request_id for r in server.received]
    assert len(set(ids)) == len(ids) and 0 not in ids


def test_argument_checks_happen_before_anything_is_sent() -> None:
    with scripted(
        lambda r: wire.encode_reply(MsgType.GOODBYE_REPLY, r.header.request_id)
    ) as server:
        with Client(socket=server.path) as client:
            for call in (
                lambda: client.lookup_next(1, buffer_size=-1),
                lambda: client.lookup_next(1, flags=2**32),
                lambda: client.lookup("x", buffer_size=2**32),
                lambda: client.set_service(QuerySet("x"), 7),
                lambda: client.lookup_end(-1),
            ):
                with pytest.raises(ValueError):
                    call()
            with pytest.raises(QuerySetError):
                client.lookup_begin(QuerySet("a\0b"))
    assert [MsgType(r.header.type).name for r in server.received] == ["HELLO", "GOODBYE"]


def test_an_error_frame_ends_the_connection_with_its_code() -> None:
    def refuse(r: wire.Request) -> bytes:
        text = b"uid 1234 may not connect"
        return wire.encode_reply(MsgType.ERROR, 0, WSAError.WSAEACCES, len(text), tail=text)

    with scripted(lambda r: None, hello=refuse) as server:
        with pytest.raises(ConnectionLost) as caught:
            Client(socket=server.path)
    assert caught.value.code == WSAError.WSAEACCES
    assert "uid 1234 may not connect" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (lambda rid: None, "closed the connection"),
        (lambda rid: wire.encode_reply(MsgType.END_REPLY, rid + 1), "answered END_REPLY"),
        (lambda rid: wire.encode_reply(MsgType.SET_REPLY, rid), "answered SET_REPLY"),
        (lambda rid: wire.encode_reply(MsgType.END_REPLY, rid, 0, 1), "malformed frame"),
        (
            lambda rid: wire.encode_reply(
                MsgType.NEXT_REPLY, rid, 0, QSW, struct.pack("<II", QSW, 0), bytes(QSW)
            ),
            "malformed result",
        ),
    ],
)
def test_a_broken_server_loses_the_connection(
    reply: Callable[[int], bytes | None], why: str
) -> None:
    def answer(r: wire.Request) -> bytes | None:
        if r.header.type == MsgType.LOOKUP_NEXT:
            return reply(r.header.request_id)
        return wire.encode_reply(MsgType.END_REPLY, r.header.request_id)

    with scripted(answer) as server:
        client = Client(socket=server.path)
        with pytest.raises(ConnectionLost, match=why) as caught:
            client.lookup_next(5)
        assert caught.value.code == WSAECONNRESET
        assert client.closed
        with pytest.raises(ConnectionLost, match=why):  # and every call after it
            client.lookup_end(5)
        client.close()  # nothing left to end: no error


def test_no_reply_in_time_loses_the_connection() -> None:
    with scripted(lambda r: b"") as server:  # reads, never answers
        client = Client(socket=server.path, timeout=0.5)
        with pytest.raises(ConnectionLost, match=r"no reply within 0\.5 s") as caught:
            client.lookup_end(1)
        assert caught.value.code == WSAECONNRESET


def test_keepalive_is_sent_every_interval_and_stops_at_close() -> None:
    with scripted(
        lambda r: wire.encode_reply(MsgType.GOODBYE_REPLY, r.header.request_id), keepalive_ms=50
    ) as server:
        client = Client(socket=server.path)
        time.sleep(0.6)
        client.close()
        sent = sum(1 for r in server.received if r.header.type == MsgType.KEEPALIVE)
        assert 5 <= sent <= 13, sent
        assert server.received[-1].header.type == MsgType.GOODBYE
    with scripted(lambda r: None, keepalive_ms=50) as server:
        client = Client(socket=server.path, keepalive=False)
        time.sleep(0.3)
        client.abandon()
    assert [MsgType(r.header.type).name for r in server.received] == ["HELLO"]


def test_a_monitor_only_asks_for_status() -> None:
    with scripted(lambda r: None) as server:
        monitor = Client.monitor(server.path)
        with pytest.raises(WinsockError, match="only asks for status"):
            monitor.lookup("x")
        monitor.close()
    assert server.received[0].role == Role.MONITOR
    assert [MsgType(r.header.type).name for r in server.received] == ["HELLO"]


def test_connecting_to_nothing_is_server_not_found(tmp_path: Path) -> None:
    with pytest.raises(ServerNotFound, match="cannot connect to") as caught:
        Client(socket=tmp_path / "none.sock")
    assert caught.value.code == WSAError.WSASERVICE_NOT_FOUND


# ---- images: the same verdicts as wire.c -------------------------------------------------


class ImageEcho:
    """tests/native/image_echo.c (with native_stub/src/wire.c), one process
    for many images: C's verdict on an image, and its own flattening back."""

    def __init__(self, folder: Path) -> None:
        compiler = require_compiler("host")
        exe = folder / "image_echo"
        run(
            [
                compiler.command,
                *CFLAGS,
                f"-I{INCLUDE}",
                f"-I{NATIVE / 'src'}",
                str(Path(__file__).parent / "native" / "image_echo.c"),
                str(NATIVE / "src" / "wire.c"),
                "-o",
                str(exe),
            ]
        )
        self.proc = subprocess.Popen(
            [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False
        )

    def echo(self, image: bytes) -> tuple[bool, bytes | str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(struct.pack("<I", len(image)) + image)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode().rstrip("\n")
        verdict, _, rest = line.partition(" ")
        assert verdict in ("ok", "bad"), line
        return (True, bytes.fromhex(rest)) if verdict == "ok" else (False, rest)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


@pytest.fixture(scope="module")
def image_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageEcho]:
    echo = ImageEcho(tmp_path_factory.mktemp("image_echo"))
    try:
        yield echo
    finally:
        echo.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(querysets)
def test_c_accepts_python_images_and_python_reads_cs(image_echo: ImageEcho, q: QuerySet) -> None:
    ok, flattened = image_echo.echo(q.to_image())
    assert ok, flattened
    assert isinstance(flattened, bytes)
    assert QuerySet.from_image(flattened) == q


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(querysets, st.data())
def test_python_accepts_no_image_c_refuses(
    image_echo: ImageEcho, q: QuerySet, data: st.DataObject
) -> None:
    """Mutated images: what wire.c refuses, from_image refuses; what both
    accept reads the same. (from_image also refuses what a QuerySet cannot
    hold and the host's reader refuses: a count with a NULL array, a socket
    address too short for its family...)"""
    image = bytearray(q.to_image())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(image) - 1))
        if data.draw(st.booleans()):  # an offset or count: small values, near the image
            width = data.draw(st.sampled_from([1, 2, 4]))
            at = min(at, len(image) - width)
            value = data.draw(st.integers(0, len(image) + 8))
            image[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        else:
            image[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del image[data.draw(st.integers(QSW, len(image))) :]
    c_ok, c_out = image_echo.echo(bytes(image))
    try:
        mine = QuerySet.from_image(bytes(image))
    except QuerySetError:
        return
    assert c_ok, f"from_image accepted what wire.c refuses: {c_out}"
    assert isinstance(c_out, bytes)
    assert QuerySet.from_image(c_out) == mine
