"""QuerySet: reading with validation, exact packing, round trips."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import ipaddress
import logging
import struct
import uuid
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nspv2 import Provider, Session, WinsockError, WSAError
from nspv2.provider import queryset
from nspv2.provider.queryset import (
    MAX_BLOB_BYTES,
    MAX_COUNT,
    MAX_SOCKADDR_LEN,
    MAX_STRING_CHARS,
    AfProtocol,
    CsAddr,
    QuerySet,
    RawSocketAddress,
    SocketAddress,
    Version,
)
from nspv2.sdk.winsock2 import WSAECOMPARATOR, WSAQUERYSET2W, WSAQUERYSETW
from nspv2.sdk.wintypes import WSTR_MAX_CHARS, WstrError, read_wstr, wstr
from nspv2.testing import SlotHarness

from .asan import AsanHost, asan_host, sanitizer_reports
from .guarded import GuardedArena

__all__ = ["asan_host"]  # the fixture, re-exported for pytest

P = ctypes.sizeof(ctypes.c_void_p)

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))
maybe_text = st.none() | texts
ports = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
sockaddrs = st.one_of(
    st.builds(SocketAddress, st.ip_addresses(v=4), ports),
    st.builds(SocketAddress, st.ip_addresses(v=6), ports, u32, u32),
    st.builds(
        RawSocketAddress,
        st.sampled_from([1, 6, 16, 17, 26, 32]),
        st.binary(min_size=0, max_size=30),
    ),
)
cs_addrs = st.builds(
    CsAddr,
    st.none() | sockaddrs,
    st.none() | sockaddrs,
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
)
querysets = st.builds(
    QuerySet,
    service_instance_name=maybe_text,
    version=st.none() | st.builds(Version, u32, st.sampled_from(list(WSAECOMPARATOR))),
    comment=maybe_text,
    namespace=u32,
    provider_id=st.none() | st.uuids(),
    context=maybe_text,
    protocols=st.lists(
        st.builds(AfProtocol, st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1)),
        max_size=5,
    ).map(tuple),
    query_string=maybe_text,
    cs_addrs=st.lists(cs_addrs, max_size=8).map(tuple),
    output_flags=u32,
    blob=st.none() | st.binary(max_size=300),
)


def pack_at(
    q: QuerySet, capacity: int, offset: int = 0, fill: int = 0x5A
) -> tuple[ctypes.Array[ctypes.c_uint8], int, int]:
    arena = (ctypes.c_uint8 * (capacity + offset + 256))()
    ctypes.memset(arena, fill, len(arena))
    base = (ctypes.addressof(arena) + 15) & ~15
    address = base + offset
    needed = q.pack_into(address, capacity)
    return arena, address, needed


BIG = QuerySet(
    "ünïcødé@例え.jp",
    blob=bytes(range(256)) * 256,  # 64 KiB
    cs_addrs=tuple(
        CsAddr(
            SocketAddress.parse(f"10.0.{i // 256}.{i % 256}", i),
            SocketAddress.parse(f"2001:db8::{i:x}", i, i),
        )
        for i in range(300)
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(querysets)
@example(QuerySet())
@example(QuerySet("", comment="", context="", query_string="", blob=b""))
@example(BIG)
def test_round_trip(q: QuerySet) -> None:
    buf = q.to_buffer()
    assert QuerySet.from_address(ctypes.addressof(buf)) == q
    bufw = q.to_buffer("W")
    assert QuerySet.from_address(ctypes.addressof(bufw), "W") == q


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(querysets, st.integers(0, 64).map(lambda n: n * P), st.data())
def test_pack_stays_inside_and_is_exact(q: QuerySet, offset: int, data: st.DataObject) -> None:
    size = q.required_size()
    capacity = data.draw(st.one_of(st.integers(0, size), st.integers(size, size + 200)))
    arena, address, needed = pack_at(q, capacity, offset)
    assert needed == size
    raw = bytes(arena)
    start = address - ctypes.addressof(arena)
    if capacity < size:
        assert raw == bytes([0x5A]) * len(raw), "a short buffer was written to"
        return
    # not one byte past the required size
    assert raw[start + size :] == bytes([0x5A]) * (len(raw) - start - size)
    assert raw[:start] == bytes([0x5A]) * start
    assert QuerySet.from_address(address) == q
    # every pointer of the header points inside [address, address + size) and is aligned
    header = WSAQUERYSET2W.from_address(address)
    for name, _ in WSAQUERYSET2W._fields_:
        value = getattr(header, name)
        if isinstance(value, int):
            continue
        target = ctypes.cast(value, ctypes.c_void_p).value
        if target:
            assert address <= target < address + size, name
            assert (target - address) % P == 0, name


def test_required_size_of_the_benchmark_result() -> None:
    q = QuerySet(
        "alice@example.com",
        comment="MISTATUS_ONLINE",
        cs_addrs=(
            CsAddr(None, SocketAddress.parse("192.0.2.10", 5060)),
            CsAddr(None, SocketAddress.parse("2001:db8::10", 5060)),
        ),
        blob=bytes(32),
    )
    # header + name(36) + comment(32) + 2 CSADDR_INFO + v4(16) + v6(28->32) + BLOB + 32
    if P == 8:
        assert q.required_size() == 112 + 40 + 32 + 80 + 16 + 32 + 16 + 32


def test_pack_w_has_service_class_id() -> None:
    cid = uuid.uuid4()
    q = QuerySet("x", service_class_id=cid)
    buf = q.to_buffer("W")
    assert QuerySet.from_address(ctypes.addressof(buf), "W").service_class_id == cid
    assert q.required_size("W") > q.required_size("2W")
    with pytest.raises(ValueError, match="kind"):
        q.required_size("A")  # type: ignore[arg-type]


def test_pack_is_deterministic_and_relocatable() -> None:
    q = QuerySet("bob@example.com", blob=b"\x01\x02")
    _a1, addr1, _ = pack_at(q, 1024)
    _a2, addr2, _ = pack_at(q, 1024, offset=8 * P)
    assert QuerySet.from_address(addr1) == QuerySet.from_address(addr2) == q


# ---- malformed input: WSAEINVAL, never a crash ------------------------------------------


def header_image(kind: str = "2W", **fields: int) -> ctypes.Structure:
    cls = WSAQUERYSET2W if kind == "2W" else WSAQUERYSETW
    qs = cls()
    qs.dwSize = ctypes.sizeof(cls)
    qs.dwNameSpace = 37
    for name, value in fields.items():
        if name.startswith("lp"):
            ctypes.c_void_p.from_address(
                ctypes.addressof(qs) + getattr(cls, name).offset
            ).value = value
        else:
            setattr(qs, name, value)
    return qs


def invalid(address: int | None, kind: str = "2W") -> str:
    with pytest.raises(WinsockError) as info:
        QuerySet.from_address(address, kind)  # type: ignore[arg-type]
    assert info.value.code == WSAError.WSAEINVAL
    return str(info.value)


def test_null_pointer() -> None:
    assert "NULL" in invalid(None)
    assert "NULL" in invalid(0)


@pytest.mark.parametrize("kind", ["2W", "W"])
def test_dwsize_too_small(kind: str) -> None:
    qs = header_image(kind)
    qs.dwSize = ctypes.sizeof(qs) - 1  # type: ignore[attr-defined]
    assert "dwSize" in invalid(ctypes.addressof(qs), kind)


@pytest.mark.parametrize(
    "fields, word",
    [
        ({"dwNumberOfProtocols": 2}, "lpafpProtocols is NULL"),
        ({"dwNumberOfCsAddrs": 1}, "lpcsaBuffer is NULL"),
        ({"dwNumberOfCsAddrs": 10**6, "lpcsaBuffer": 8}, "above"),
        ({"dwNumberOfProtocols": 2**32 - 1, "lpafpProtocols": 8}, "above"),
    ],
)
def test_counts(fields: dict[str, int], word: str) -> None:
    qs = header_image(**fields)
    assert word in invalid(ctypes.addressof(qs))


def sockaddr_case(family: int, length: int) -> str:
    raw = (ctypes.c_uint8 * 128)()
    struct.pack_into("<H", raw, 0, family)
    csaddr = (ctypes.c_uint8 * 64)()
    ctypes.c_void_p.from_address(ctypes.addressof(csaddr)).value = ctypes.addressof(raw)
    ctypes.c_int32.from_address(ctypes.addressof(csaddr) + P).value = length
    qs = header_image(dwNumberOfCsAddrs=1, lpcsaBuffer=ctypes.addressof(csaddr))
    return invalid(ctypes.addressof(qs))


@pytest.mark.parametrize(
    "family, length",
    [(2, 15), (2, 4), (23, 27), (23, 16), (2, 0), (2, 1), (6, 129), (2, -1)],
)
def test_sockaddr_length_must_fit_family(family: int, length: int) -> None:
    assert "length" in sockaddr_case(family, length) or "out of range" in sockaddr_case(
        family, length
    )


def test_sockaddr_null_with_length() -> None:
    csaddr = (ctypes.c_uint8 * 64)()
    ctypes.c_int32.from_address(ctypes.addressof(csaddr) + P).value = 16
    qs = header_image(dwNumberOfCsAddrs=1, lpcsaBuffer=ctypes.addressof(csaddr))
    assert "NULL with length" in invalid(ctypes.addressof(qs))


def test_blob_with_null_data() -> None:
    blob = (ctypes.c_uint8 * 16)()
    ctypes.c_uint32.from_address(ctypes.addressof(blob)).value = 10
    qs = header_image(lpBlob=ctypes.addressof(blob))
    assert "pBlobData is NULL" in invalid(ctypes.addressof(qs))


def test_bad_comparator() -> None:
    version = (ctypes.c_uint32 * 2)(1, 7)
    qs = header_image(lpVersion=ctypes.addressof(version))
    assert "ecHow" in invalid(ctypes.addressof(qs))


def test_unterminated_string_stops_at_the_bound_before_the_guard_page() -> None:
    """A string of MAX_STRING_CHARS + 1 non-NUL units ending right at an
    inaccessible page: the reader gives up at its bound without touching it."""
    units = MAX_STRING_CHARS + 1
    arena = GuardedArena(2 * units)
    name = arena.write(0, b"A\0" * units)
    qs = header_image(lpszServiceInstanceName=name)
    assert "no terminator" in invalid(ctypes.addressof(qs))


def test_longest_string_accepted_ends_at_the_guard_page() -> None:
    units = MAX_STRING_CHARS
    arena = GuardedArena(2 * (units + 1))
    name = arena.write(0, "é".encode("utf-16-le") * units + b"\0\0")
    qs = header_image(lpszServiceInstanceName=name)
    assert QuerySet.from_address(ctypes.addressof(qs)).service_instance_name == "é" * units


def test_arrays_are_read_exactly_up_to_their_count() -> None:
    """Protocols ending exactly at a guard page are read without a fault."""
    arena = GuardedArena(16)
    protos = arena.write(0, struct.pack("<iiii", 2, 6, 23, 17))
    qs = header_image(dwNumberOfProtocols=2, lpafpProtocols=protos)
    got = QuerySet.from_address(ctypes.addressof(qs))
    assert got.protocols == (AfProtocol(2, 6), AfProtocol(23, 17))


def test_socket_address_text() -> None:
    v6 = SocketAddress(ipaddress.IPv6Address("fe80::1"), 80, 0, 3)
    assert str(v6) == "[fe80::1%3]:80"
    assert str(SocketAddress.parse("10.0.0.1", 5)) == "10.0.0.1:5"
    assert v6.family == 23


# ---- the struct formats agree with the ctypes classes ---------------------------


def _fill(obj: ctypes.Structure, prefix: str, values: dict[str, int | bytes]) -> None:
    """Set every leaf field of ``obj`` through ctypes to a distinct value."""
    for entry in type(obj)._fields_:
        name, ftype = entry[0], entry[1]
        k = len(values) + 1
        if issubclass(ftype, ctypes.Structure):
            _fill(getattr(obj, name), f"{prefix}{name}.", values)
            continue
        if issubclass(ftype, (ctypes.c_void_p, ctypes._Pointer)):
            value: int | bytes = (0x1122_3344_5566_7700 if P == 8 else 0x1122_3300) + 8 * k
            setattr(obj, name, ctypes.cast(ctypes.c_void_p(value), ftype))
        elif issubclass(ftype, ctypes.Array):
            value = bytes(range(k, k + ctypes.sizeof(ftype)))
            ctypes.memmove(ctypes.addressof(getattr(obj, name)), value, len(value))
        elif ftype(-1).value == -1:  # signed
            value = -1000 * k - 7
            setattr(obj, name, value)
        else:
            value = 0x8070_6000 + k
            setattr(obj, name, value)
        values[prefix + name] = value


def _disagreements(layout: Any) -> list[str]:
    obj = layout.cls()
    expected: dict[str, int | bytes] = {}
    _fill(obj, "", expected)
    problems = []
    if layout.size != ctypes.sizeof(layout.cls):
        return [f"size {layout.size} != {ctypes.sizeof(layout.cls)}"]
    if list(layout.names) != list(expected):
        problems.append(f"fields {layout.names} != {list(expected)}")
    elif layout.unpack(bytes(obj)) != expected:
        problems.append(f"unpack {layout.unpack(bytes(obj))} != {expected}")
    elif layout.pack(**expected) != bytes(obj):
        problems.append("pack differs from the ctypes image")
    return problems


@pytest.mark.parametrize("layout", queryset.LAYOUTS, ids=lambda layout: layout.cls.__name__)
def test_struct_formats_agree_with_the_ctypes_classes(layout: Any) -> None:
    assert _disagreements(layout) == []


def test_a_format_that_disagrees_with_its_class_is_caught() -> None:
    """The check above is not vacuous: a restated format with one wrong
    signedness, one missing padding, or fields out of order fails it."""
    good = queryset._CSADDR_INFO
    for wrong in ("<Qi4xQi4xiI", "<QiQi4xii", "<Qi4xQi4xii4x"):
        bad = copy.copy(good)
        bad.packer = struct.Struct(wrong)
        bad.size = bad.packer.size
        assert _disagreements(bad), wrong
    swapped = copy.copy(queryset._AFPROTO)
    swapped.names = tuple(reversed(swapped.names))
    assert _disagreements(swapped)


# ---- one UTF-16 reading policy ----------------------------------------------------


def test_lone_surrogates_are_kept_unit_for_unit() -> None:
    """Windows does not validate WCHAR strings: a lone surrogate is read as
    that code point and packed back as the same unit."""
    raw = struct.pack("<5H", 0x41, 0xD800, 0x42, 0xDFFF, 0)
    buf = ctypes.create_string_buffer(raw, len(raw))
    qs = header_image(lpszServiceInstanceName=ctypes.addressof(buf))
    name = QuerySet.from_address(ctypes.addressof(qs)).service_instance_name
    assert name == "A\ud800B\udfff"
    assert name == read_wstr(ctypes.addressof(buf))
    packed = QuerySet(name).to_buffer()
    assert bytes(wstr(name)) == raw
    back = QuerySet.from_address(ctypes.addressof(packed))
    assert back.service_instance_name == name


def test_query_set_strings_follow_read_wstrs_policy() -> None:
    """The query set reader is read_wstr: same bound, same refusals (as WSAEINVAL)."""
    assert MAX_STRING_CHARS == WSTR_MAX_CHARS
    buf = ctypes.create_string_buffer(b"\0A\0B\0\0\0", 8)
    odd = ctypes.addressof(buf) + 1
    with pytest.raises(WstrError, match="not 2-byte aligned"):
        read_wstr(odd)
    qs = header_image(lpszComment=odd)
    assert "lpszComment is not 2-byte aligned" in invalid(ctypes.addressof(qs))


def test_bounded_read_refuses_a_string_running_out_of_its_memory() -> None:
    units = (ctypes.c_uint16 * 4)(0x41, 0x42, 0x43, 0)
    start = ctypes.addressof(units)
    assert read_wstr(start, within=(start, start + 8)) == "ABC"
    with pytest.raises(WstrError, match="no terminator inside its memory"):
        read_wstr(start, within=(start, start + 6))
    with pytest.raises(WstrError, match="outside its memory"):
        read_wstr(start + 8, within=(start, start + 8))
    with pytest.raises(WstrError, match="no terminator within 2 characters"):
        read_wstr(start, max_chars=2)
    assert read_wstr(start, max_chars=3) == "ABC"


# ---- the packer writes only what the reader reads back equal ----------------------

LONG = [
    "a" * MAX_STRING_CHARS,
    "a" * (MAX_STRING_CHARS + 1),
    "\U0001f600" * (MAX_STRING_CHARS // 2) + "a",  # 32,767 units
    "\U0001f600" * (MAX_STRING_CHARS // 2 + 1),  # 32,768 units
]
any_text = st.text(max_size=20) | st.sampled_from(LONG)  # NULs and lone surrogates too
wide_ints = st.integers(-(2**31) - 1, 2**32)
wide_sockaddrs = st.one_of(
    st.builds(SocketAddress, st.ip_addresses(v=4), st.integers(-1, 65536), st.integers(0, 1)),
    st.builds(SocketAddress, st.ip_addresses(v=6), st.integers(0, 65536), wide_ints, wide_ints),
    st.builds(
        RawSocketAddress,
        st.sampled_from([0, 1, 2, 23, 26, 65535, 65536]),
        st.binary(max_size=130),
    ),
)
wide_querysets = st.builds(
    QuerySet,
    service_instance_name=st.none() | any_text,
    version=st.none() | st.builds(Version, wide_ints, st.integers(0, 2)),
    comment=st.none() | any_text,
    namespace=wide_ints,
    context=st.none() | any_text,
    protocols=st.lists(st.builds(AfProtocol, wide_ints, wide_ints), max_size=3).map(tuple),
    query_string=st.none() | any_text,
    cs_addrs=st.lists(
        st.builds(
            CsAddr, st.none() | wide_sockaddrs, st.none() | wide_sockaddrs, wide_ints, wide_ints
        ),
        max_size=3,
    ).map(tuple),
    output_flags=wide_ints,
    blob=st.none() | st.binary(max_size=40),
    service_class_id=st.none() | st.uuids(),
)


def expected(q: QuerySet, kind: str) -> QuerySet:
    """What reading back a packed ``q`` gives (WSAQUERYSET2W has no class id)."""
    return q if kind == "W" else dataclasses.replace(q, service_class_id=None)


def read_exactly(q: QuerySet, kind: str) -> QuerySet:
    """Pack ``q`` into a buffer of exactly its size and read it back, bounded."""
    buf = q.to_buffer(kind)  # type: ignore[arg-type]
    start = ctypes.addressof(buf)
    return QuerySet.from_address(start, kind, bounds=(start, start + len(buf)))  # type: ignore[arg-type]


def unchecked_image_reads(q: QuerySet, kind: str) -> QuerySet | None:
    """Pack ``q`` skipping the packer's checks and read it back: None when the
    image cannot even be written (a field outside its C type) or the reader
    refuses it."""
    with mock.patch.object(queryset, "_check", lambda _q: None):
        try:
            image = queryset._build_image(q, kind)  # type: ignore[arg-type]
        except struct.error:
            return None
    buf = ctypes.create_string_buffer(image.size)
    start = ctypes.addressof(buf)
    image.pack_into(start, image.size)
    try:
        return QuerySet.from_address(start, kind, bounds=(start, start + image.size))  # type: ignore[arg-type]
    except WinsockError as exc:
        assert exc.code == WSAError.WSAEINVAL
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_querysets, st.sampled_from(["2W", "W"]))
@example(QuerySet("a\0b"), "2W")
@example(QuerySet(comment=LONG[1]), "W")
@example(QuerySet(cs_addrs=(CsAddr(RawSocketAddress(26, bytes(127))),)), "2W")
@example(QuerySet(cs_addrs=(CsAddr(RawSocketAddress(2, bytes(14))),)), "2W")
def test_the_packer_refuses_exactly_what_the_reader_would_not_read_back(
    q: QuerySet, kind: str
) -> None:
    """Whatever the packer writes reads back equal; whatever it refuses, the
    reader would refuse or read back as something else."""
    try:
        q.required_size(kind)  # type: ignore[arg-type]
    except queryset.QuerySetError:
        assert unchecked_image_reads(q, kind) != expected(q, kind)
    else:
        assert read_exactly(q, kind) == expected(q, kind)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.builds(
        QuerySet,
        service_instance_name=st.none()
        | st.text(alphabet=st.characters(blacklist_characters="\0")),
        comment=st.none() | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0")),
        cs_addrs=st.lists(cs_addrs, max_size=3).map(tuple),
        blob=st.none() | st.binary(max_size=64),
    ).filter(
        lambda q: (
            not any(
                isinstance(sa, RawSocketAddress) and sa.family in (2, 23)
                for cs in q.cs_addrs
                for sa in (cs.local, cs.remote)
            )
        )
    ),
    st.sampled_from(["2W", "W"]),
)
def test_anything_packed_reads_back_equal_in_exactly_its_memory(q: QuerySet, kind: str) -> None:
    """Lone surrogates included, read with the buffer's bounds."""
    assert read_exactly(q, kind) == expected(q, kind)


REFUSED = [
    (QuerySet("alice\0@example.com"), "service_instance_name holds a NUL character at index 5"),
    (QuerySet(comment="\0"), "comment holds a NUL character at index 0"),
    (QuerySet(context=LONG[1]), "context is 32768 UTF-16 code units long"),
    (QuerySet(query_string=LONG[3]), "query_string is 32768 UTF-16 code units long"),
    (
        QuerySet(cs_addrs=(CsAddr(None, RawSocketAddress(26, bytes(127))),)),
        r"cs_addrs\[0\].remote is 129 bytes long; a reader accepts 128",
    ),
    (
        QuerySet(cs_addrs=(CsAddr(RawSocketAddress(2, bytes(14))),)),
        r"cs_addrs\[0\].local: a RawSocketAddress of family 2",
    ),
    (
        QuerySet(cs_addrs=(CsAddr(SocketAddress.parse("192.0.2.1", 70000)),)),
        r"cs_addrs\[0\].local.port is 70000",
    ),
    (
        QuerySet(cs_addrs=(CsAddr(SocketAddress(ipaddress.IPv4Address("192.0.2.1"), 1, 0, 3)),)),
        "an IPv4 address has no flowinfo or scope_id",
    ),
    (QuerySet(protocols=(AfProtocol(2, 6),) * (MAX_COUNT + 1)), "protocols holds 65537 items"),
    (QuerySet(cs_addrs=(CsAddr(),) * (MAX_COUNT + 1)), "cs_addrs holds 65537 items"),
    (QuerySet(blob=bytes(MAX_BLOB_BYTES + 1)), "blob is 16777217 bytes"),
    (QuerySet(namespace=-1), "namespace is -1"),
    (QuerySet(version=Version(1, 7)), "version.how is 7"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("kind", ["2W", "W"])
@pytest.mark.parametrize(("q", "reason"), REFUSED, ids=[r[:30] for _q, r in REFUSED])
def test_what_the_reader_refuses_the_packer_refuses_writing_nothing(
    q: QuerySet, reason: str, kind: str
) -> None:
    with pytest.raises(queryset.QuerySetError, match=reason):
        q.required_size(kind)  # type: ignore[arg-type]
    arena = (ctypes.c_uint8 * 4096)(*([0x5A] * 4096))
    with pytest.raises(queryset.QuerySetError, match=reason):
        q.pack_into(ctypes.addressof(arena), len(arena), kind)  # type: ignore[arg-type]
    assert bytes(arena) == b"\x5a" * 4096


def test_the_largest_accepted_values_read_back_equal() -> None:
    q = QuerySet(
        LONG[0],
        comment=LONG[2],
        protocols=(AfProtocol(-(2**31), 2**31 - 1),) * MAX_COUNT,
        cs_addrs=(CsAddr(RawSocketAddress(26, bytes(MAX_SOCKADDR_LEN - 2))),),
        blob=bytes(MAX_BLOB_BYTES),
        namespace=2**32 - 1,
    )
    assert read_exactly(q, "2W") == q


def test_an_unpackable_result_fails_next_with_wsano_recovery_and_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the C routine table: the call fails, the log says why."""

    class Truncating(Provider):
        provider_id = uuid.UUID("5a2b8c1e-7d3f-4e6a-9b0c-1d2e3f4a5b6c")

        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Any:
            yield QuerySet("alice@example.com\0ignored")

    caplog.set_level(logging.ERROR, "nspv2")
    with SlotHarness(Truncating()) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("alice@example.com"))
        assert h.next(begun.value).completion == WSAError.WSANO_RECOVERY
    assert "service_instance_name holds a NUL character at index 17" in caplog.text


# ---- the reader never reads past the memory it was given (under ASan) ---------------

READ_EXACT_BLOCKS = """
    import ctypes
    from nspv2 import CsAddr, QuerySet, SocketAddress
    from nspv2.sdk.wintypes import read_wstr

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def block(size):  # a heap block of exactly size bytes: ASan poisons the byte after it
        address = libc.malloc(size)
        assert address
        return address

    reads = 0
    for text in ("", "a", "alice@example.com", "\\u00e9" * 300, "\\U0001f600" * 700, "x" * 9000):
        data = (text + "\\0").encode("utf-16-le")
        p = block(len(data))
        ctypes.memmove(p, data, len(data))
        assert read_wstr(p) == text
        assert read_wstr(p, within=(p, p + len(data))) == text
        try:
            read_wstr(p, within=(p, p + len(data) - 2))
            raise AssertionError("a string cut short by its bound was read")
        except ValueError as exc:  # no terminator inside, or (empty) outside its memory
            assert "its memory" in str(exc), exc
        libc.free(p)
        reads += 3
    q = QuerySet(
        "alice@example.com",
        comment="MISTATUS_ONLINE",
        context="c",
        query_string="q",
        cs_addrs=(CsAddr(None, SocketAddress.parse("2001:db8::1", 5060)),),
    )
    for last in (q, QuerySet(comment="only a comment")):
        for kind in ("2W", "W"):
            size = last.required_size(kind)
            p = block(size)
            last.pack_into(p, size, kind)
            assert QuerySet.from_address(p, kind) == last
            assert QuerySet.from_address(p, kind, bounds=(p, p + size)) == last
            libc.free(p)
            reads += 2
    print("reads", reads)
"""


def test_the_reader_reads_nothing_past_a_heap_block(asan_host: AsanHost) -> None:
    """Strings and query sets in heap blocks of exactly their size: under
    ASan, a reader that reads ahead (as the page-careful one did, up to 256
    bytes) is a heap-buffer-overflow report."""
    child = asan_host.run(READ_EXACT_BLOCKS)
    output = child.stdout + child.stderr
    assert not sanitizer_reports(output), output[-4000:]
    assert child.returncode == 0, output[-4000:]
    assert "reads 26" in child.stdout
