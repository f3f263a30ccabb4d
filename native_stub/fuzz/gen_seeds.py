#!/usr/bin/env python3
"""Write the seed corpora of the native host's fuzzers (x86-64 layouts).

    python3 gen_seeds.py        # rewrites corpus/queryset/*, corpus/result/*, corpus/wire/*

The input encodings are described at the top of fuzz_queryset.c,
fuzz_result.c and fuzz_wire.c (frames of src/wire.h); the offsets below are
the Windows x64 (and Linux x86-64) layouts of WSAQUERYSETW (120 bytes),
WSAQUERYSET2W (112), CSADDR_INFO (40) and BLOB (16).
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent

NS_ALL = 0
NS_EMAIL = 37
NS_PNRPNAME = 38
LUP_RETURN_ALL = 0x0FF0

# {46555A5A-5153-4554-8A1F-46555A5A5153}, the provider of fuzz_queryset.c
FZ_ID = struct.pack(
    "<IHH8B", 0x46555A5A, 0x5153, 0x4554, 0x8A, 0x1F, 0x46, 0x55, 0x5A, 0x5A, 0x51, 0x53
)
OTHER_ID = struct.pack("<IHH8B", 0x12345678, 0x9ABC, 0xDEF0, 1, 2, 3, 4, 5, 6, 7, 8)

# WSAQUERYSETW field offsets (x64)
QS = {
    "dwSize": 0,
    "lpszServiceInstanceName": 8,
    "lpServiceClassId": 16,
    "lpVersion": 24,
    "lpszComment": 32,
    "dwNameSpace": 40,
    "lpNSProviderId": 48,
    "lpszContext": 56,
    "dwNumberOfProtocols": 64,
    "lpafpProtocols": 72,
    "lpszQueryString": 80,
    "dwNumberOfCsAddrs": 88,
    "lpcsaBuffer": 96,
    "dwOutputFlags": 104,
    "lpBlob": 112,
}
QS_SIZE = 120
QS2_SIZE = 112
# WSAQUERYSET2W DWORD field offsets (x64)
QS2 = {
    "dwSize": 0,
    "dwNameSpace": 32,
    "dwNumberOfProtocols": 56,
    "dwNumberOfCsAddrs": 80,
    "dwOutputFlags": 96,
}


def wstr(s: str, terminated: bool = True) -> bytes:
    return (s + ("\0" if terminated else "")).encode("utf-16-le")


def sockaddr_in(port: int, addr: bytes, family: int = 2) -> bytes:
    return struct.pack("<H", family) + struct.pack(">H", port) + addr + bytes(8)


class Arena:
    """Bytes with 8-aligned pieces; offsets of what was placed."""

    def __init__(self) -> None:
        self.data = bytearray()

    def put(self, blob: bytes, align: int = 8) -> int:
        while len(self.data) % align:
            self.data.append(0)
        off = len(self.data)
        self.data += blob
        return off


# ---- fuzz_queryset ---------------------------------------------------------


def sel_start(off: int) -> int:
    return (off << 2) | 1


def sel_tail(back: int) -> int:
    return (back << 2) | 3


def csaddr(
    local: int, local_len: int, remote: int, remote_len: int, stype: int, proto: int
) -> bytes:
    """A CSADDR_INFO (x64: 40 bytes); local/remote are the lpSockaddr values."""
    return struct.pack("<QiiQiiii", local, local_len, 0, remote, remote_len, 0, stype, proto)


def queryset(ctl: int, flags: int, fields: dict[str, int], arena: bytes) -> bytes:
    hdr = bytearray(QS_SIZE)
    for name, value in fields.items():
        struct.pack_into("<I", hdr, QS[name], value & 0xFFFFFFFF)
    return bytes([ctl]) + struct.pack("<I", flags) + bytes(hdr) + arena


def queryset_full(
    ctl: int = 0, ns: int = NS_EMAIL, guid: bytes = FZ_ID, dw_size: int = QS_SIZE
) -> bytes:
    a = Arena()
    g = a.put(guid)
    ver = a.put(struct.pack("<II", 1, 0))
    name = a.put(wstr("alice@example.com"))
    comment = a.put(wstr("MISTATUS_ONLINE"))
    query = a.put(wstr("*@example.com"))
    protos = a.put(struct.pack("<iiii", 2, 6, 23, 6))
    # CSADDR_INFO: two SOCKET_ADDRESS {ptr, int, pad}, type, protocol; the
    # lpSockaddr fields hold selectors, patched below once offsets are known
    csa = a.put(bytes(40))
    sin1 = a.put(sockaddr_in(5061, bytes([192, 0, 2, 10])))
    sin2 = a.put(sockaddr_in(5061, bytes([192, 0, 2, 11])))
    blob = a.put(bytes(16))
    blob_data = a.put(b"\x40\x41\x42\x43", 1)
    a.data[csa : csa + 40] = csaddr(sel_start(sin1), 16, sel_start(sin2), 16, 1, 6)
    struct.pack_into("<IIQ", a.data, blob, 4, 0, sel_start(blob_data))
    fields = {
        "dwSize": dw_size,
        "lpszServiceInstanceName": sel_start(name),
        "lpVersion": sel_start(ver),
        "lpszComment": sel_start(comment),
        "dwNameSpace": ns,
        "lpNSProviderId": sel_start(g),
        "lpszQueryString": sel_start(query),
        "dwNumberOfProtocols": 2,
        "lpafpProtocols": sel_start(protos),
        "dwNumberOfCsAddrs": 1,
        "lpcsaBuffer": sel_start(csa),
        "lpBlob": sel_start(blob),
    }
    return queryset(ctl, LUP_RETURN_ALL, fields, bytes(a.data))


def queryset_seeds() -> dict[str, bytes]:
    tail = wstr("AAAAAAAA", terminated=False)
    return {
        "valid-email": queryset_full(),
        "valid-all-ns-register": queryset_full(ctl=0x04, ns=NS_ALL),
        "deregister-begin-fails": queryset_full(ctl=0x01 | 0x08),
        "bad-op": queryset_full(ctl=0x03),
        "startup-fails": queryset_full(ctl=0x20 | 0x02),
        "startup-notsupp-setsvc-fails": queryset_full(ctl=0x10 | 0x40),
        "null-lphlookup": queryset_full(ctl=0x80),
        "small-dwsize": queryset_full(dw_size=60),
        "other-guid": queryset_full(guid=OTHER_ID),
        "other-namespace": queryset_full(ns=NS_PNRPNAME),
        "empty": queryset(0, 0, {"dwSize": QS_SIZE}, b""),
        "unterminated-at-end": queryset(
            0,
            0,
            {
                "dwSize": QS_SIZE,
                "dwNameSpace": NS_EMAIL,
                "lpszServiceInstanceName": sel_tail(3),
                "lpszComment": sel_tail(0),
                "lpszContext": sel_start(0),
            },
            tail,
        ),
        "huge-counts-null-arrays": queryset(
            0x04,
            0,
            {
                "dwSize": QS_SIZE,
                "dwNumberOfProtocols": 0xFFFFFFFF,
                "dwNumberOfCsAddrs": 0x7FFFFFFF,
                "lpBlob": sel_start(0),
                "lpNSProviderId": sel_start(16),
            },
            struct.pack("<IIQ", 0xFFFFFFFF, 0, sel_start(0)) + FZ_ID,
        ),
        "bogus-sockaddrs": queryset(
            0,
            0,
            {"dwSize": QS_SIZE, "dwNumberOfCsAddrs": 3, "lpcsaBuffer": sel_start(0)},
            csaddr(sel_tail(1), -1, sel_start(40), 1000, 99, 99) + struct.pack("<HH", 0xFFFF, 0),
        ),
    }


# ---- fuzz_result -----------------------------------------------------------

HDR_PTR = [
    "lpszServiceInstanceName",
    "lpVersion",
    "lpszComment",
    "lpNSProviderId",
    "lpszContext",
    "lpafpProtocols",
    "lpszQueryString",
    "lpcsaBuffer",
    "lpBlob",
]


def patch(target: int | str, kind: int, value: int, index: int = 0) -> bytes:
    t = HDR_PTR.index(target) if isinstance(target, str) else target
    return struct.pack("<BBBH", t, index, kind, value)


def data_ptr(target: int | str, off: int, index: int = 0) -> bytes:
    """A pointer field = scratch + sizeof(WSAQUERYSET2W) + off (kind 2)."""
    return patch(target, 2, off, index)


def result(ctl: int, client_len: int, need: int, patches: list[bytes], image: bytes) -> bytes:
    return struct.pack("<BHIB", ctl, client_len, need, len(patches)) + b"".join(patches) + image


def result_full(
    ctl: int = 0, client_len: int = 1024, extra: list[bytes] | None = None, exact: bool = False
) -> bytes:
    """A valid result (one name, comment, context, GUID, version, protocol,
    two CSADDR_INFO, a blob); exact: a client buffer of exactly its size."""
    hdr = bytearray(QS2_SIZE)
    struct.pack_into("<I", hdr, QS2["dwSize"], QS2_SIZE)
    struct.pack_into("<I", hdr, QS2["dwNameSpace"], NS_EMAIL)
    struct.pack_into("<I", hdr, QS2["dwNumberOfProtocols"], 1)
    struct.pack_into("<I", hdr, QS2["dwNumberOfCsAddrs"], 2)
    a = Arena()
    name = a.put(wstr("bob@example.com"))
    comment = a.put(wstr("MISTATUS_BUSY"))
    ctx = a.put(wstr("ctx"))
    g = a.put(FZ_ID)
    ver = a.put(struct.pack("<II", 1, 1))
    protos = a.put(struct.pack("<ii", 2, 6))
    csa = a.put(csaddr(0, 16, 0, 28, 1, 6) + csaddr(0, 16, 0, 0, 2, 17))
    sin = a.put(sockaddr_in(5061, bytes([192, 0, 2, 11])))
    sin6 = a.put(struct.pack("<HHI", 23, 0x13C5, 0) + bytes(16) + struct.pack("<I", 0))
    blob = a.put(struct.pack("<IIQ", 5, 0, 0))
    blob_data = a.put(b"\x50\x51\x52\x53\x54", 1)
    patches = [
        data_ptr("lpszServiceInstanceName", name),
        data_ptr("lpszComment", comment),
        data_ptr("lpszContext", ctx),
        data_ptr("lpNSProviderId", g),
        data_ptr("lpVersion", ver),
        data_ptr("lpafpProtocols", protos),
        data_ptr("lpcsaBuffer", csa),
        data_ptr(9, sin, 0),
        data_ptr(10, sin6, 0),
        data_ptr(9, sin, 1),
        data_ptr("lpBlob", blob),
        data_ptr(11, blob_data),
    ] + (extra or [])
    image = bytes(hdr) + bytes(a.data)
    if exact:
        client_len = 8 + len(image)  # NSPV2_QS_DELTA on x64
    return result(ctl, client_len, 0, patches, image)


def result_seeds() -> dict[str, bytes]:
    hdr = struct.pack("<I", QS2_SIZE) + bytes(QS2_SIZE - 4)
    return {
        "valid": result_full(),
        "valid-exact-fit": result_full(exact=True),
        "valid-twice-setlen": result_full(ctl=0x20 | 0x10),
        "overrun": result_full(ctl=0x04),
        "comment-before-buffer": result_full(extra=[patch("lpszComment", 5, 3)]),
        "blob-data-in-decoy": result_full(extra=[patch(11, 6, 10)]),
        "sockaddr-past-end": result_full(extra=[patch(10, 4, 0, 1), patch(16, 0, 64, 1)]),
        "name-unterminated-at-end": result(
            0, 300, 0, [patch("lpszServiceInstanceName", 3, 4)], hdr + b"A" * 300
        ),
        "huge-csaddr-count": result_full(extra=[patch(13, 1, 0)]),
        "negative-sockaddr-length": result_full(extra=[patch(15, 1, 0, 0)]),
        "wild-pointer": result_full(extra=[patch("lpszQueryString", 7, 0x1001)]),
        "misaligned-raw": result_full(extra=[patch(18, 1, 3, 11)]),
        "efault": result(0x01, 16, 600, [], b""),
        "efault-huge-need": result(0x01, 200, 0xFFFFFFFE, [], b""),
        "no-more": result(0x02, 64, 0, [], b""),
        "error": result(0x03, 512, 1, [], b""),
        "zero-length": result(0, 0, 0, [], b""),
        "null-buffer": result(0x08, 100, 0, [], b""),
    }


# ---- fuzz_wire --------------------------------------------------------------

WIRE_MAGIC = 0x3250534E
WIRE_VERSION = 1
HELLO, BEGIN, NEXT, END, SET, GOODBYE, KEEPALIVE, STATUS = range(1, 9)
REPLY = 0x8000
ERROR = 0x80FF
WSAEFAULT = 10014
WSAEACCES = 10013
WSASERVICE_NOT_FOUND = 10108


def frame(ftype: int, request_id: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack("<IHHI", 12 + len(payload), ftype, flags, request_id) + payload


def image(
    name: str | None = None,
    comment: str | None = None,
    context: str | None = None,
    query: str | None = None,
    class_id: bytes | None = None,
    provider: bytes | None = None,
    version: tuple[int, int] | None = None,
    protocols: list[tuple[int, int]] | None = None,
    csaddrs: list[tuple[bytes | None, int, bytes | None, int, int, int]] | None = None,
    blob: bytes | None = None,
    ns: int = NS_EMAIL,
    flags: int = 0,
    counts: tuple[int, int] | None = None,
) -> bytes:
    """A query-set image as nspv2_wire_image_from_query_set lays it out:
    the WSAQUERYSETW, then every object 8-aligned in field order."""
    a = Arena()
    a.put(bytes(QS_SIZE))
    off: dict[str, int] = {}

    def put(field: str, blob_: bytes | None) -> None:
        if blob_ is not None:
            off[field] = a.put(blob_)

    put("lpszServiceInstanceName", None if name is None else wstr(name))
    put("lpServiceClassId", class_id)
    put("lpVersion", None if version is None else struct.pack("<II", *version))
    put("lpszComment", None if comment is None else wstr(comment))
    put("lpNSProviderId", provider)
    put("lpszContext", None if context is None else wstr(context))
    put(
        "lpafpProtocols",
        None if protocols is None else b"".join(struct.pack("<ii", *p) for p in protocols),
    )
    put("lpszQueryString", None if query is None else wstr(query))
    if csaddrs is not None:
        at = a.put(bytes(40 * len(csaddrs)))
        off["lpcsaBuffer"] = at
        for i, (local, llen, remote, rlen, stype, proto) in enumerate(csaddrs):
            lo = a.put(local) if local is not None else 0
            ro = a.put(remote) if remote is not None else 0
            a.data[at + 40 * i : at + 40 * (i + 1)] = csaddr(lo, llen, ro, rlen, stype, proto)
    if blob is not None:
        b = a.put(bytes(16))
        off["lpBlob"] = b
        d = a.put(blob)
        struct.pack_into("<IIQ", a.data, b, len(blob), 0, d)
    n_protocols = len(protocols) if protocols is not None else 0
    n_csaddrs = len(csaddrs) if csaddrs is not None else 0
    if counts is not None:
        n_protocols, n_csaddrs = counts
    struct.pack_into("<I", a.data, QS["dwSize"], QS_SIZE)
    struct.pack_into("<I", a.data, QS["dwNameSpace"], ns)
    struct.pack_into("<I", a.data, QS["dwNumberOfProtocols"], n_protocols & 0xFFFFFFFF)
    struct.pack_into("<I", a.data, QS["dwNumberOfCsAddrs"], n_csaddrs & 0xFFFFFFFF)
    struct.pack_into("<I", a.data, QS["dwOutputFlags"], flags)
    for field, at in off.items():
        struct.pack_into("<Q", a.data, QS[field], at)
    return bytes(a.data)


def image_full() -> bytes:
    sin = sockaddr_in(5061, bytes([192, 0, 2, 10]))
    sin6 = struct.pack("<HHI", 23, 0x13C5, 0) + bytes(15) + b"\x01" + struct.pack("<I", 0)
    return image(
        name="alice@example.com",
        comment="MISTATUS_ONLINE",
        context="ctx",
        query="",
        class_id=OTHER_ID,
        provider=FZ_ID,
        version=(1, 1),
        protocols=[(2, 6), (23, 17)],
        csaddrs=[(sin, 16, sin6, 28, 1, 6), (b"", -5, None, 16, 2, 17)],
        blob=b"NSPP\x01\x00\x00\x00\x00\x00\x00\x00",
        flags=0x55,
    )


def begin(image_: bytes, request_id: int = 2, flags: int = LUP_RETURN_ALL) -> bytes:
    return frame(BEGIN, request_id, struct.pack("<II", flags, len(image_)) + image_)


def set_service(image_: bytes, op: int = 0, flags: int = 0, request_id: int = 3) -> bytes:
    return frame(SET, request_id, struct.pack("<IIII", op, flags, len(image_), 0) + image_)


def reply(ftype: int, request_id: int, code: int, word: int, rest: bytes = b"") -> bytes:
    return frame(ftype, request_id, struct.pack("<iI", code, word) + rest)


def wire_seeds() -> dict[str, bytes]:
    full = image_full()
    name_only = image(name="dave@example.com")
    hello = struct.pack("<IHHII", WIRE_MAGIC, WIRE_VERSION, 8, 0, 0)
    providers = FZ_ID + struct.pack("<II", NS_EMAIL, 0) + OTHER_ID + struct.pack("<II", 0, 0)
    hello_reply = struct.pack("<IHHIIIII", WIRE_MAGIC, WIRE_VERSION, 0, 4242, 5000, 4 << 20, 8, 2)
    outside = bytearray(name_only)
    struct.pack_into("<Q", outside, QS["lpszComment"], len(outside) + 8)
    unterminated = bytearray(image(name="x", comment="AAAA"))
    unterminated[-2:] = b"AA"
    blob_over_csa = bytearray(full)
    csa_at = struct.unpack_from("<Q", full, QS["lpcsaBuffer"])[0]
    struct.pack_into("<Q", blob_over_csa, QS["lpBlob"], csa_at)
    return {
        "req-hello": frame(HELLO, 1, hello),
        "req-hello-monitor": frame(HELLO, 1, struct.pack("<IHHII", WIRE_MAGIC, 1, 8, 1, 0)),
        "req-begin-full": begin(full),
        "req-begin-name": begin(name_only),
        "req-begin-empty": begin(image(counts=(0xFFFFFFFF, 0x7FFFFFFF))),
        "req-begin-pointer-outside": begin(bytes(outside)),
        "req-begin-unterminated": begin(bytes(unterminated)),
        "req-set-register-full": set_service(full),
        "req-set-delete": set_service(name_only, op=2),
        "req-set-blob-over-csaddrs": set_service(bytes(blob_over_csa)),
        "req-next": frame(NEXT, 4, struct.pack("<QII", 1, LUP_RETURN_ALL, 4096)),
        "req-end": frame(END, 5, struct.pack("<Q", 1)),
        "req-goodbye": frame(GOODBYE, 6, b""),
        "req-keepalive": frame(KEEPALIVE, 0, b""),
        "req-status": frame(STATUS, 7, b""),
        "req-bad-flags": frame(GOODBYE, 6, b"", flags=1),
        "req-truncated": begin(full)[:40],
        "rep-hello": frame(REPLY | HELLO, 1, hello_reply + providers),
        "rep-begin": reply(REPLY | BEGIN, 2, 0, 0, struct.pack("<Q", 17)),
        "rep-begin-error": reply(REPLY | BEGIN, 2, WSASERVICE_NOT_FOUND, 0, bytes(8)),
        "rep-next-full": reply(REPLY | NEXT, 4, 0, 4096, struct.pack("<II", len(full), 0) + full),
        "rep-next-efault": reply(REPLY | NEXT, 4, WSAEFAULT, 600, bytes(8)),
        "rep-end": reply(REPLY | END, 5, 0, 0),
        "rep-status": reply(REPLY | STATUS, 7, 0, 14, b'{"version": 1}'),
        "rep-error": reply(ERROR, 0, WSAEACCES, 10, b"not yours!"),
    }


def write(kind: str, seeds: dict[str, bytes]) -> None:
    out = HERE / "corpus" / kind
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, blob in seeds.items():
        (out / name).write_bytes(blob)


def main() -> None:
    write("queryset", queryset_seeds())
    write("result", result_seeds())
    write("wire", wire_seeds())


if __name__ == "__main__":
    main()
