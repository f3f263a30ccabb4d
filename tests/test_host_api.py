"""The native host's loader / checker / harness functions, through their
typed bindings (NativeHostFunctions): harness async handles driving a C
provider's NextEx through its C function pointers, what is advertised and
installed, and the double_completions / missing_last_error counters."""

from __future__ import annotations

import ctypes
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nspv2 import LUP, NO_ERROR, SOCKET_ERROR, Host, QuerySet, Routine, WinsockError, WSAError
from nspv2.host.winsock import (
    CTRL_CLOSE_EVENT,
    PHANDLER_ROUTINE,
    WSAETIMEDOUT,
    NativeHostFunctions,
)
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.winsock2 import NS, WSAQUERYSET2W
from nspv2.sdk.ws2spi import NSPV2_ROUTINE


@pytest.fixture
def host() -> Iterator[Host]:
    with Host(timeout_ms=2000, auto_install=True) as h:
        yield h


def native(host: Host) -> NativeHostFunctions:
    return host.native


def wait(
    host: Host, handle: int, timeout_ms: int = 0
) -> tuple[int, int | None, int | None, int, int]:
    """nspv2_async_wait: (rc, code, last error, completions, failure)."""
    code, last, n = ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_uint32(99)
    rc = native(host).nspv2_async_wait(
        handle, timeout_ms, ctypes.byref(code), ctypes.byref(last), ctypes.byref(n)
    )
    failure = host.winsock.last_error() if rc == SOCKET_ERROR else NO_ERROR
    if rc != NO_ERROR:
        return rc, None, None, n.value, failure
    return rc, code.value, last.value, n.value, failure


def create(host: Host) -> int:
    h = ctypes.c_void_p(0)
    assert native(host).nspv2_async_create(ctypes.byref(h)) == NO_ERROR
    assert h.value
    return h.value


def table_of(host: Host, pid: uuid.UUID) -> NSPV2_ROUTINE:
    table = NSPV2_ROUTINE()
    rc = native(host).nspv2_host_provider_table(ctypes.byref(GUID.from_uuid(pid)), table)
    host.winsock.check(rc, "nspv2_host_provider_table")
    return table


def test_harness_handle_lifecycle(host: Host) -> None:
    ws = host.winsock
    h = create(host)
    assert host.stats()["async_pending"] == 1
    rc, _, _, n, failure = wait(host, h, 0)
    assert (rc, n, failure) == (SOCKET_ERROR, 0, WSAETIMEDOUT)

    ws.WSASetLastError(int(WSAError.WSAENOBUFS))  # recorded with the completion
    assert ws.WSAProviderCompleteAsyncCall(h, int(WSAError.WSAEFAULT)) == NO_ERROR
    assert wait(host, h) == (NO_ERROR, WSAError.WSAEFAULT, WSAError.WSAENOBUFS, 1, NO_ERROR)
    assert host.stats()["async_pending"] == 0

    before = host.stats()["double_completions"]
    assert ws.WSAProviderCompleteAsyncCall(h, NO_ERROR) == SOCKET_ERROR
    assert ws.last_error() == WSAError.WSAEINVAL
    # the first completion wins; the second is counted on the handle and in the stats
    assert wait(host, h) == (NO_ERROR, WSAError.WSAEFAULT, WSAError.WSAENOBUFS, 2, NO_ERROR)
    assert host.stats()["double_completions"] == before + 1

    assert native(host).nspv2_async_close(h) == NO_ERROR
    assert wait(host, h)[4] == WSAError.WSAEINVAL
    assert native(host).nspv2_async_close(h) == SOCKET_ERROR
    assert ws.last_error() == WSAError.WSAEINVAL
    assert native(host).nspv2_async_create(None) == SOCKET_ERROR
    assert ws.last_error() == WSAError.WSAEFAULT


def test_harness_handle_completed_by_a_python_thread_while_waiting(host: Host) -> None:
    ws = host.winsock
    h = create(host)

    def complete() -> None:
        ws.WSASetLastError(int(WSAError.WSAEACCES))
        ws.WSAProviderCompleteAsyncCall(h, int(WSAError.WSA_E_NO_MORE))

    timer = threading.Timer(0.05, complete)
    timer.start()
    try:
        ws.WSASetLastError(0)
        got = wait(host, h, 5000)
    finally:
        timer.join()
    # the completing thread's last error, not the waiter's
    assert got == (NO_ERROR, WSAError.WSA_E_NO_MORE, WSAError.WSAEACCES, 1, NO_ERROR)
    assert native(host).nspv2_async_close(h) == NO_ERROR


def test_closed_pending_handle_refuses_the_late_completion(host: Host) -> None:
    ws = host.winsock
    h = create(host)
    start = host.stats()
    assert native(host).nspv2_async_close(h) == NO_ERROR
    assert host.stats()["timed_out_held"] == start["timed_out_held"] + 1
    assert ws.WSAProviderCompleteAsyncCall(h, NO_ERROR) == SOCKET_ERROR
    now = host.stats()
    assert now["late_completions"] == start["late_completions"] + 1
    assert now["double_completions"] == start["double_completions"]
    assert now["timed_out_held"] == start["timed_out_held"]


def test_harness_handle_drives_the_bench_providers_next_ex_through_its_table(
    host: Host,
) -> None:
    """The C bench provider's Startup, Begin, NextEx and End called through
    the function pointers of the table the host holds, with harness handles."""
    pid = host.advertise_bench_provider()
    table = table_of(host, pid)
    guid = GUID.from_uuid(pid)
    arg = ctypes.c_void_p(0)
    assert table.NSPv2Startup(ctypes.byref(guid), ctypes.byref(arg)) == NO_ERROR
    restrictions = QuerySet("alice@example.com", namespace=NS.NS_EMAIL).to_buffer("2W")
    lookup = ctypes.c_void_p(0)
    rc = table.NSPv2LookupServiceBegin(
        ctypes.byref(guid),
        ctypes.cast(restrictions, ctypes.POINTER(WSAQUERYSET2W)),
        int(LUP.LUP_RETURN_ALL),
        arg,
        ctypes.byref(lookup),
    )
    assert rc == NO_ERROR and lookup.value

    buf = (ctypes.c_uint64 * 128)()  # 1024 bytes, 8-aligned
    length = ctypes.c_uint32(8)
    h = create(host)
    table.NSPv2LookupServiceNextEx(
        h, lookup, 0, ctypes.byref(length), ctypes.cast(buf, ctypes.POINTER(WSAQUERYSET2W))
    )
    rc, code, _, n, _ = wait(host, h, 2000)
    assert (rc, code, n) == (NO_ERROR, WSAError.WSAEFAULT, 1)
    need = length.value
    assert 8 < need <= ctypes.sizeof(buf)
    assert native(host).nspv2_async_close(h) == NO_ERROR

    length.value = ctypes.sizeof(buf)
    h = create(host)
    table.NSPv2LookupServiceNextEx(
        h, lookup, 0, ctypes.byref(length), ctypes.cast(buf, ctypes.POINTER(WSAQUERYSET2W))
    )
    assert wait(host, h, 2000)[:2] == (NO_ERROR, NO_ERROR)
    assert native(host).nspv2_async_close(h) == NO_ERROR
    result = QuerySet.from_address(
        ctypes.addressof(buf), bounds=(ctypes.addressof(buf), ctypes.addressof(buf) + need)
    )
    assert result.service_instance_name == "alice@example.com"

    assert table.NSPv2LookupServiceEnd(lookup) == NO_ERROR
    assert table.NSPv2Cleanup(ctypes.byref(guid), arg) == NO_ERROR
    assert host.stats()["async_pending"] == 0
    host.unadvertise(pid)


def test_advertise_count_providers_and_table_copy(host: Host) -> None:
    nat = native(host)
    before = nat.nspv2_host_advertise_count()
    pid_a, pid_b = uuid.uuid4(), uuid.uuid4()
    # the C bench provider's table with its optional slots set to NULL
    sparse = NSPV2_ROUTINE()
    nat.nspv2_bench_provider_routine(ctypes.addressof(sparse))
    optional = ("NSPv2Startup", "NSPv2Cleanup", "NSPv2SetServiceEx", "NSPv2ClientSessionRundown")
    for slot in optional:
        offset = getattr(NSPV2_ROUTINE, slot).offset
        ctypes.memset(ctypes.addressof(sparse) + offset, 0, ctypes.sizeof(ctypes.c_void_p))
    sparse.dwMajorVersion, sparse.dwMinorVersion = 3, 7
    host.advertise(sparse, provider_id=pid_a)
    bench = host.advertise_bench_provider()
    host.advertise(sparse, provider_id=pid_b)
    assert nat.nspv2_host_advertise_count() == before + 3

    count = ctypes.c_uint32(0)
    assert nat.nspv2_host_providers(None, 0, ctypes.byref(count)) == NO_ERROR
    assert count.value == 3
    ids = (GUID * 2)()
    assert nat.nspv2_host_providers(ids, 2, ctypes.byref(count)) == NO_ERROR
    assert count.value == 3  # more than asked
    assert [g.to_uuid() for g in ids] == [pid_a, bench]  # advertise order

    table = table_of(host, pid_a)
    assert ctypes.string_at(ctypes.addressof(table), ctypes.sizeof(table)) == ctypes.string_at(
        ctypes.addressof(sparse), ctypes.sizeof(sparse)
    )
    assert (table.cbSize, table.dwMajorVersion, table.dwMinorVersion) == (
        ctypes.sizeof(NSPV2_ROUTINE),
        3,
        7,
    )
    for slot in optional:  # NULL stays NULL
        assert not ctypes.cast(getattr(table, slot), ctypes.c_void_p).value, slot

    host.unadvertise(pid_a)
    assert nat.nspv2_host_advertise_count() == before + 3  # never goes down
    assert nat.nspv2_host_providers(ids, 2, ctypes.byref(count)) == NO_ERROR
    assert count.value == 2 and ids[0].to_uuid() == bench
    with pytest.raises(WinsockError) as info:
        table_of(host, pid_a)
    assert info.value.code == WSAError.WSAEINVAL
    host.unadvertise(bench)
    host.unadvertise(pid_b)


def test_installed_blob_and_identifier(host: Host) -> None:
    from nspv2.sdk.winsock2 import BLOB

    ws, nat = host.winsock, native(host)
    pid = uuid.uuid4()
    guid = GUID.from_uuid(pid)
    blob = bytes(range(7, 47))
    data = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
    info = BLOB(len(blob), ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)))
    name = ctypes.create_unicode_buffer("Mail directory")  # wchar_t: converted below
    ident = (ctypes.c_uint16 * (len(name.value) + 1))(*[ord(c) for c in name.value], 0)
    rc = ws.WSCInstallNameSpaceEx(
        ctypes.cast(ident, ctypes.POINTER(ctypes.c_uint16)),
        None,
        int(NS.NS_DNS),  # any blob is kept as given (an NS_EMAIL one must follow nsemail.h)
        1,
        ctypes.byref(guid),
        ctypes.byref(info),
    )
    ws.check(rc, "WSCInstallNameSpaceEx")
    ctypes.memset(data, 0, len(blob))  # the host kept its own copy
    try:
        ns, has, size = ctypes.c_uint32(0), ctypes.c_uint32(9), ctypes.c_uint32(0)
        assert nat.nspv2_host_installed(guid, ns, has, None, size) == NO_ERROR
        assert (ns.value, has.value, size.value) == (NS.NS_DNS, 1, len(blob))
        out = (ctypes.c_uint8 * 64)()
        size.value = len(blob) - 1
        assert nat.nspv2_host_installed(guid, None, None, out, size) == SOCKET_ERROR
        assert ws.last_error() == WSAError.WSAEFAULT and size.value == len(blob)
        size.value = 64
        assert nat.nspv2_host_installed(guid, None, None, out, size) == NO_ERROR
        assert bytes(out[: size.value]) == blob

        chars = ctypes.c_uint32(0)
        assert nat.nspv2_host_installed_identifier(guid, None, chars) == NO_ERROR
        text = (ctypes.c_uint16 * chars.value)()
        assert nat.nspv2_host_installed_identifier(guid, text, chars) == NO_ERROR
        assert "".join(chr(c) for c in text[: chars.value - 1]) == "Mail directory"
    finally:
        ws.check(ws.WSCUnInstallNameSpace(ctypes.byref(guid)), "WSCUnInstallNameSpace")
    assert nat.nspv2_host_installed(guid, None, None, None, None) == SOCKET_ERROR
    assert ws.last_error() == WSAError.WSAEINVAL


def test_provider_completing_twice_is_counted(host: Host) -> None:
    """Regression: a second WSAProviderCompleteAsyncCall on a client call was
    refused but left no trace; it is counted in double_completions."""
    ws = host.winsock

    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        ctypes.c_void_p.from_address(ph).value = 1
        return NO_ERROR

    seconds: list[int] = []

    def next_ex(h_async: int, h_lookup: int, flags: int, plen: Any, pqs: Any) -> None:
        ws.WSAProviderCompleteAsyncCall(h_async, int(WSAError.WSA_E_NO_MORE))
        seconds.append(ws.WSAProviderCompleteAsyncCall(h_async, NO_ERROR))

    routine = Routine(begin=begin, next_ex=next_ex, end=lambda h: NO_ERROR, pointers="int")
    pid = uuid.uuid4()
    host.advertise(routine, provider_id=pid)
    try:
        before = host.stats()["double_completions"]
        with host.open_session() as c:
            assert c.lookup(QuerySet("x", provider_id=pid)) == []
        assert seconds == [SOCKET_ERROR]
        assert host.stats()["double_completions"] == before + 1
    finally:
        host.unadvertise(pid)
        routine.close()


def test_socket_error_without_last_error_is_counted(host: Host) -> None:
    """Regression: a Begin returning SOCKET_ERROR without setting a last error
    was reported as WSAEINVAL with no trace; it is counted in missing_last_error."""

    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        return SOCKET_ERROR  # and no WSASetLastError

    routine = Routine(begin=begin, next_ex=lambda *a: None, end=lambda h: NO_ERROR)
    pid = uuid.uuid4()
    host.advertise(routine, provider_id=pid)
    try:
        before = host.stats()["missing_last_error"]
        with host.open_session() as c:
            # the host takes it as WSAEINVAL and drops the provider: none left
            with pytest.raises(WinsockError) as info:
                c.lookup(QuerySet("x", provider_id=pid))
            assert info.value.code == WSAError.WSASERVICE_NOT_FOUND
        assert host.stats()["missing_last_error"] == before + 1
        host.reset_stats()
        assert host.stats()["missing_last_error"] == 0
    finally:
        host.unadvertise(pid)
        routine.close()


needs_compat = pytest.mark.skipif(
    sys.platform == "win32", reason="ws2_32.dll and kernel32.dll have these on Windows"
)


@needs_compat
def test_wsastartup_and_wsacleanup_through_the_bindings(host: Host) -> None:
    nat = native(host)
    data = (ctypes.c_uint16 * 256)()  # room for either WSADATA layout
    assert nat.WSAStartup(0x0202, data) == 0
    assert (data[0], data[1]) == (0x0202, 0x0202)  # wVersion, wHighVersion
    assert nat.WSAStartup(0x0303, data) == 0  # above 2.2: 2.2
    assert data[0] == 0x0202
    assert nat.WSAStartup(0x0202, None) == WSAError.WSAEFAULT  # the code is returned
    assert nat.WSACleanup() == 0
    assert nat.WSACleanup() == 0


@needs_compat
def test_console_event_reaches_the_handlers_on_another_thread(host: Host) -> None:
    """nspv2_host_console_event delivers to handlers registered with
    SetConsoleCtrlHandler, last registered first, on a thread of its own."""
    nat = native(host)
    seen: list[tuple[str, int, int]] = []
    caller = threading.get_ident()

    def first(ctrl: int) -> int:
        seen.append(("first", ctrl, threading.get_ident()))
        return 1

    def second(ctrl: int) -> int:
        seen.append(("second", ctrl, threading.get_ident()))
        return 0  # not handled: on to the one before

    h1, h2 = PHANDLER_ROUTINE(first), PHANDLER_ROUTINE(second)
    assert nat.SetConsoleCtrlHandler(h1, 1) and nat.SetConsoleCtrlHandler(h2, 1)
    try:
        assert nat.nspv2_host_console_event(CTRL_CLOSE_EVENT) == 1
        assert [(who, ctrl) for who, ctrl, _ in seen] == [
            ("second", CTRL_CLOSE_EVENT),
            ("first", CTRL_CLOSE_EVENT),
        ]
        assert all(thread != caller for _, _, thread in seen)
    finally:
        assert nat.SetConsoleCtrlHandler(h2, 0) and nat.SetConsoleCtrlHandler(h1, 0)
    assert not nat.SetConsoleCtrlHandler(h1, 0)  # removed already
    # (no event is delivered now: other handlers of this process would get it)
