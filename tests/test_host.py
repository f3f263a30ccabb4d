"""Providers on the native host: every slot and error path, from C and native threads."""

from __future__ import annotations

import ctypes
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nspv2 import (
    LUP,
    NO_ERROR,
    SOCKET_ERROR,
    WSAESETSERVICEOP,
    CsAddr,
    Host,
    Provider,
    QuerySet,
    Routine,
    Session,
    SocketAddress,
    WinsockError,
    WSAError,
)
from nspv2.examples.email import encode_presence
from nspv2.host.catalog import Catalog
from nspv2.provider.channel import current_channel
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason
from nspv2.sdk.msgrua import MISTATUS
from nspv2.sdk.winsock2 import NS, RESULT_IS, WSAQUERYSET2W, WSAQUERYSETW
from nspv2.sdk.ws2spi import NSPV2_ROUTINE

PID = uuid.UUID("3f1e0b2a-6c5d-4e7f-8a9b-0c1d2e3f4a5b")
DELTA = ctypes.sizeof(WSAQUERYSETW) - ctypes.sizeof(WSAQUERYSET2W)


def entry(name: str) -> QuerySet:
    return QuerySet(
        name,
        comment="MISTATUS_ONLINE",
        cs_addrs=(
            CsAddr(None, SocketAddress.parse("192.0.2.1", 5060)),
            CsAddr(None, SocketAddress.parse("2001:db8::1", 5060, 4)),
        ),
        blob=bytes(range(32)),
    )


class Presence(Provider):
    provider_id = PID

    def __init__(self) -> None:
        self.names = ["alice@example.com", "bob@example.com", "carol@example.org"]
        self.registered: list[str | None] = []
        self.rundowns: list[int] = []
        self.cleanups: list[int] = []

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        if name == "crash@example.com":
            raise RuntimeError("provider bug")
        if name.startswith("*@"):
            found = [n for n in self.names if n.endswith(name[1:])]
        else:
            found = [n for n in self.names if n == name]
        if not found:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND)
        return (entry(n) for n in found)

    def set_service(
        self, session: Session, reg: QuerySet, op: WSAESETSERVICEOP, flags: int
    ) -> None:
        self.registered.append(reg.service_instance_name)

    def cleanup(self, session: Session) -> None:
        self.cleanups.append(session.token)

    def client_session_rundown(self, session: Session) -> None:
        self.rundowns.append(session.token)


@pytest.fixture
def host() -> Iterator[Host]:
    with Host(timeout_ms=2000, auto_install=True) as h:
        yield h
    assert h.stats()["providers"] == 0 or True


@pytest.fixture
def presence(host: Host) -> Presence:
    p = Presence()
    host.advertise(p)
    return p


def test_host_leaves_the_process_default_channel_alone() -> None:
    """The channel is handed to each table; ``with`` installs nothing."""
    before = current_channel()
    with Host(auto_install=True) as h:
        assert current_channel() is before
        assert h.channel is not before
    assert current_channel() is before


def test_lookup_exact_wildcard_and_not_found(host: Host, presence: Presence) -> None:
    with host.open_session() as c:
        assert c.lookup("alice@example.com") == [entry("alice@example.com")]
        assert [q.service_instance_name for q in c.lookup("*@example.com")] == [
            "alice@example.com",
            "bob@example.com",
        ]
        with pytest.raises(WinsockError) as info:
            c.lookup("nobody@example.com")
        assert info.value.code == WSAError.WSASERVICE_NOT_FOUND
        # the provider's Begin raises (its table reports WSANO_RECOVERY): the
        # lone provider is dropped, the lookup has none left
        with pytest.raises(WinsockError) as info:
            c.lookup("crash@example.com")
        assert info.value.code == WSAError.WSASERVICE_NOT_FOUND


def test_wsaefault_and_required_size_pass_through(host: Host, presence: Presence) -> None:
    need = entry("alice@example.com").required_size() + DELTA
    with host.open_session() as c:
        handle = host.lookup_begin(c, "alice@example.com")
        for size in (0, 1, DELTA, need // 2, need - 1):
            step = host.lookup_next(handle, 0, size)
            assert (step.code, step.buffer_length) == (WSAError.WSAEFAULT, need), size
        step = host.lookup_next(handle, 0, need)
        assert step.code == NO_ERROR and step.result == entry("alice@example.com")
        assert host.lookup_next(handle, 0, need).code == WSAError.WSA_E_NO_MORE
        host.lookup_end(handle)
        with pytest.raises(WinsockError) as info:
            host.lookup_end(handle)
        assert info.value.code == WSAError.WSA_INVALID_HANDLE


def test_flushprevious_through_the_host(host: Host, presence: Presence) -> None:
    with host.open_session() as c:
        handle = host.lookup_begin(c, "*@example.com")
        assert host.lookup_next(handle, 0, 16).code == WSAError.WSAEFAULT
        step = host.lookup_next(handle, LUP.LUP_FLUSHPREVIOUS, 4096)
        assert step.result is not None and step.result.service_instance_name == "bob@example.com"
        host.lookup_end(handle)


def test_close_runs_cleanup_and_abandon_runs_rundown(host: Host, presence: Presence) -> None:
    a, b = host.open_session(), host.open_session()
    a.lookup("alice@example.com")
    b.lookup("alice@example.com")
    a.close()
    b.abandon()
    assert len(presence.cleanups) == 1 and len(presence.rundowns) == 1
    ended = {s.token: s for s in presence.registry.ended}
    assert ended[presence.cleanups[0]].end_reason is None
    assert (
        ended[presence.rundowns[0]].end_reason
        is Reason.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
    )
    assert presence.registry.open_counts() == {"sessions": 0, "lookups": 0}


def test_unadvertise_runs_sessions_down_as_platform_shutdown(host: Host) -> None:
    p = Presence()
    host.advertise(p)
    sessions = [host.open_session() for _ in range(3)]
    for s in sessions:
        s.lookup("alice@example.com")
    host.unadvertise(p)
    assert len(p.rundowns) == 3
    assert all(
        s.end_reason is Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
        for s in p.registry.ended
    )
    assert p.registry.open_counts() == {"sessions": 0, "lookups": 0}
    with pytest.raises(WinsockError):
        host.unadvertise(p)
    for s in sessions:
        s.close()  # nothing left to clean up in the provider
    assert p.cleanups == []


def test_set_service_and_the_stub(host: Host, presence: Presence) -> None:
    with host.open_session() as c:
        c.set_service(QuerySet("dave@example.com"), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
    assert presence.registered == ["dave@example.com"]

    class NoSet(Presence):
        provider_id = uuid.UUID("9e8d7c6b-5a49-4838-a726-15f4e3d2c1b0")
        set_service = None  # type: ignore[assignment]

    host.advertise(NoSet())
    with host.open_session() as c, pytest.raises(WinsockError) as info:
        c.set_service(QuerySet("x", provider_id=NoSet.provider_id), 0)
    assert info.value.code == WSAError.WSAEOPNOTSUPP


def test_advertise_validation_like_winsock(host: Host) -> None:
    ws = host.winsock
    p = Presence()
    routine = p.routine()
    pid = uuid.uuid4()
    guid = GUID.from_uuid(pid)
    Catalog(ws).install(pid, NS.NS_EMAIL, "validation")  # else WSAEINVALIDPROVIDER

    def advertise(g: Any, table: Any) -> int:
        rc = ws.WSAAdvertiseProvider(g, table)
        return rc if rc == NO_ERROR else ws.WSAGetLastError()

    assert advertise(None, routine.pointer()) == WSAError.WSAEFAULT
    assert advertise(ctypes.byref(guid), None) == WSAError.WSAEINVAL
    small = NSPV2_ROUTINE.from_buffer_copy(routine.table)
    small.cbSize = ctypes.sizeof(NSPV2_ROUTINE) - 1
    assert advertise(ctypes.byref(guid), ctypes.byref(small)) == WSAError.WSAEINVAL
    for slot in ("NSPv2LookupServiceBegin", "NSPv2LookupServiceNextEx", "NSPv2LookupServiceEnd"):
        holed = NSPV2_ROUTINE.from_buffer_copy(routine.table)
        ctypes.c_void_p.from_address(
            ctypes.addressof(holed) + getattr(NSPV2_ROUTINE, slot).offset
        ).value = None
        assert advertise(ctypes.byref(guid), ctypes.byref(holed)) == WSAError.WSAEINVAL, slot
    copy = NSPV2_ROUTINE.from_buffer_copy(routine.table)
    assert advertise(ctypes.byref(guid), ctypes.byref(copy)) == NO_ERROR
    assert advertise(ctypes.byref(guid), ctypes.byref(copy)) != NO_ERROR  # twice
    ctypes.memset(ctypes.byref(copy), 0, ctypes.sizeof(copy))  # the host copied the table
    unknown = GUID.from_uuid(uuid.uuid4())
    assert ws.WSAUnadvertiseProvider(ctypes.byref(unknown)) == SOCKET_ERROR
    assert ws.WSAUnadvertiseProvider(ctypes.byref(guid)) == NO_ERROR
    uninstalled = GUID.from_uuid(uuid.uuid4())
    whole = NSPV2_ROUTINE.from_buffer_copy(routine.table)
    assert advertise(ctypes.byref(uninstalled), ctypes.byref(whole)) == WSAError.WSAEINVALIDPROVIDER


def test_completion_errors(host: Host) -> None:
    ws = host.winsock
    for handle in (None, 0, 0x12345678):
        assert ws.WSAProviderCompleteAsyncCall(handle, 0) == SOCKET_ERROR
        assert ws.WSAGetLastError() == WSAError.WSAEINVAL


class Later(Provider):
    """Completes NextEx from another Python thread, later."""

    provider_id = uuid.UUID("5d4c3b2a-1908-4f7e-8d6c-5b4a39281706")
    complete_from_thread = True

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        time.sleep(0.02)
        yield entry("late@example.com")


def test_next_completed_later_from_another_thread(host: Host) -> None:
    host.advertise(Later())
    with host.open_session() as c:
        assert c.lookup(QuerySet("late@example.com", provider_id=Later.provider_id)) == [
            entry("late@example.com")
        ]


def test_timeout_cancels_and_refuses_the_late_completion(host: Host) -> None:
    held: list[int] = []
    channel = host._channel

    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        ctypes.c_void_p.from_address(ph).value = 1
        return NO_ERROR

    def next_ex(h_async: int, h_lookup: int, flags: int, plen: Any, pqs: Any) -> None:
        held.append(h_async)  # never completed in time

    routine = Routine(begin=begin, next_ex=next_ex, end=lambda h: NO_ERROR, pointers="int")
    pid = uuid.uuid4()
    host.advertise(routine, provider_id=pid)
    host.set_timeout(100)
    try:
        with host.open_session() as c:
            handle = host.lookup_begin(c, QuerySet("x", provider_id=pid))
            step = host.lookup_next(handle, 0, 1024)
            assert step.code == WSAError.WSA_E_CANCELLED
            before = host.stats()["late_completions"]
            assert channel.complete(held[0], NO_ERROR) == WSAError.WSAEINVAL
            assert host.stats()["late_completions"] == before + 1
            host.lookup_end(handle)
    finally:
        host.set_timeout(2000)
        routine.close()


def test_timed_out_buffers_are_visible_in_stats_and_released_at_unadvertise(host: Host) -> None:
    """A call never completed keeps its buffer for a late completion, counted
    in Host.stats(); unadvertise releases it (and a completion after that is
    refused without being counted as late)."""
    held: list[int] = []

    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        ctypes.c_void_p.from_address(ph).value = 1
        return NO_ERROR

    def next_ex(h_async: int, h_lookup: int, flags: int, plen: Any, pqs: Any) -> None:
        held.append(h_async)  # never completed

    routine = Routine(begin=begin, next_ex=next_ex, end=lambda h: NO_ERROR, pointers="int")
    pid = uuid.uuid4()
    host.advertise(routine, provider_id=pid)
    host.set_timeout(50)
    try:
        start = host.stats()
        with host.open_session() as c:
            handle = host.lookup_begin(c, QuerySet("x", provider_id=pid))
            for _ in range(3):
                assert host.lookup_next(handle, 0, 1024).code == WSAError.WSA_E_CANCELLED
            host.lookup_end(handle)
        now = host.stats()
        assert now["timed_out_held"] - start["timed_out_held"] == 3
        assert now["timed_out_held_bytes"] > start["timed_out_held_bytes"]
        host.unadvertise(pid)
        after = host.stats()
        assert after["timed_out_held"] == start["timed_out_held"]
        assert after["timed_out_held_bytes"] == start["timed_out_held_bytes"]
        assert after["timed_out_released"] - start["timed_out_released"] == 3
        assert host.winsock.channel().complete(held[0], NO_ERROR) == WSAError.WSAEINVAL
        assert host.stats()["late_completions"] == after["late_completions"]
    finally:
        host.set_timeout(2000)
        routine.close()


def test_buffer_overrun_is_a_provider_fault_and_the_host_survives(
    host: Host, presence: Presence
) -> None:
    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        ctypes.c_void_p.from_address(ph).value = 1
        return NO_ERROR

    def next_ex(h_async: int, h_lookup: int, flags: int, plen: int, pqs: int) -> None:
        size = ctypes.c_uint32.from_address(plen).value
        good = entry("evil@example.com")
        good.pack_into(pqs, size)
        ctypes.memset(pqs + size, 0x41, 16)  # 16 bytes too far
        host._channel.complete(h_async, NO_ERROR)

    routine = Routine(begin=begin, next_ex=next_ex, end=lambda h: NO_ERROR, pointers="int")
    pid = uuid.uuid4()
    host.advertise(routine, provider_id=pid)
    before = host.stats()["provider_faults"]
    try:
        with host.open_session() as c:
            handle = host.lookup_begin(c, QuerySet("x", provider_id=pid))
            step = host.lookup_next(handle, 0, 4096)
            assert step.code == WSAError.WSANO_RECOVERY
            host.lookup_end(handle)
            assert host.stats()["provider_faults"] == before + 1
            assert c.lookup(QuerySet("alice@example.com", provider_id=PID)) == [
                entry("alice@example.com")
            ]
    finally:
        host.unadvertise(routine)
        routine.close()


def test_native_threads_sessions_not_lost_mixed_or_ended_twice(
    host: Host, presence: Presence
) -> None:
    result = host.drive(threads=4, cycles=300, abandon_every=3, provider_id=PID)
    assert result.cycles_done == 1200
    outcomes = result.outcomes()
    assert outcomes.get(NO_ERROR, 0) > 0
    assert set(outcomes) <= {NO_ERROR, int(WSAError.WSA_E_NO_MORE)}
    assert outcomes[int(WSAError.WSA_E_NO_MORE)] == 1200
    assert result.results == 1200
    reg = presence.registry
    assert reg.open_counts() == {"sessions": 0, "lookups": 0}
    assert reg.sessions_started == reg.sessions_ended == 1200
    assert len(presence.rundowns) == 400 and len(presence.cleanups) == 800
    assert len(set(presence.rundowns) | set(presence.cleanups)) == 1200
    stats = host.stats()
    assert (
        stats["sessions_open"] == 0 and stats["lookups_open"] == 0 and stats["async_pending"] == 0
    )


def test_python_threads_against_the_host(host: Host, presence: Presence) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(40):
                s = host.open_session()
                assert len(s.lookup("*@example.com")) == 2
                s.abandon() if i % 2 else s.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert presence.registry.open_counts() == {"sessions": 0, "lookups": 0}
    assert presence.registry.sessions_ended == 160


def test_reference_provider_from_python(host: Host) -> None:
    host.native.nspv2_ref_provider_reset()
    pid = host.advertise_reference_provider()
    away = encode_presence(MISTATUS.MISTATUS_AWAY)
    with host.open_session() as c:
        for name, blob in (("bob@example.com", None), ("alice@example.com", away)):
            reg = QuerySet(
                name,
                provider_id=pid,
                cs_addrs=(CsAddr(None, SocketAddress.parse("192.0.2.1", 5060)),),
                blob=blob,
            )
            c.set_service(reg, WSAESETSERVICEOP.RNRSERVICE_REGISTER)
        with pytest.raises(WinsockError) as info:
            c.set_service(QuerySet("x", provider_id=pid), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
        assert info.value.code == WSAError.WSAEINVAL
        with host.open_session() as other:
            got = host.lookup(other, QuerySet("*@EXAMPLE.com", provider_id=pid))
        assert [q.service_instance_name for q in got] == ["alice@example.com", "bob@example.com"]
        assert [q.comment for q in got] == ["MISTATUS_AWAY", "MISTATUS_ONLINE"]
        assert [q.blob for q in got] == [away, encode_presence(MISTATUS.MISTATUS_ONLINE)]
        assert [q.output_flags for q in got] == [int(RESULT_IS.RESULT_IS_ADDED)] * 2
        assert all(q.provider_id == pid and q.version and q.version.version == 1 for q in got)
        assert all([str(a.remote) for a in q.cs_addrs] == ["192.0.2.1:5060"] for q in got)
        # the session that signed them in is still open: the driver finds alice
        result = host.drive(threads=4, cycles=500, abandon_every=2, provider_id=pid)
        assert result.cycles_done == 2000 and result.results == 2000
    # closing it signed them out
    with host.open_session() as c, pytest.raises(WinsockError) as info:
        host.lookup(c, QuerySet("*@example.com", provider_id=pid))
    assert info.value.code == WSAError.WSASERVICE_NOT_FOUND
    host.unadvertise(pid)


def test_bench_provider_from_python(host: Host) -> None:
    pid = host.advertise_bench_provider()
    with host.open_session() as c:
        got = host.lookup(c, QuerySet("anyone@example.com", provider_id=pid))
        assert got == [
            QuerySet(
                "anyone@example.com",
                comment="MISTATUS_ONLINE",
                cs_addrs=(
                    CsAddr(None, SocketAddress.parse("192.0.2.10", 5060)),
                    CsAddr(None, SocketAddress.parse("2001:db8::10", 5060)),
                ),
                output_flags=int(RESULT_IS.RESULT_IS_ADDED),
                blob=bytes(range(32)),
            )
        ]
        names = host.lookup(c, QuerySet("x", provider_id=pid), LUP.LUP_RETURN_NAME)
        assert [(q.service_instance_name, q.comment, q.blob) for q in names] == [("x", None, None)]
        with pytest.raises(WinsockError) as info:
            c.set_service(QuerySet("x", provider_id=pid), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
        assert info.value.code == WSAError.WSAEOPNOTSUPP
    result = host.drive(threads=4, cycles=500, abandon_every=2, provider_id=pid)
    assert result.cycles_done == 2000 and result.results == 2000
    assert result.outcomes()[int(WSAError.WSA_E_NO_MORE)] == 2000
    host.unadvertise(pid)


def test_native_functions_are_typed_attributes_with_one_signature_each() -> None:
    from nspv2.host import winsock

    annotated = set(winsock.NativeHostFunctions.__annotations__)
    assert annotated == set(winsock._NATIVE_SIGNATURES)
    with Host(auto_install=True) as host:
        for name in annotated:
            fn = getattr(host.native, name)
            restype, argtypes = winsock._NATIVE_SIGNATURES[name]
            assert fn.restype is restype and list(fn.argtypes) == list(argtypes), name


def test_advertise_bare_table_keeps_owner_alive_until_unadvertised() -> None:
    import gc
    import weakref

    from nspv2 import NSPV2_ROUTINE, Routine

    calls: list[str] = []

    class Owner:
        def __init__(self, host: Host) -> None:
            def begin(*_args: Any) -> int:
                calls.append("begin")
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND)

            # A bare table is opaque to the host: whoever fills it gives its
            # entry points their channel.
            self.routine = Routine(
                begin=begin, next_ex=lambda *a: None, end=lambda *a: 0, channel=host.channel
            )
            self.table = NSPV2_ROUTINE()
            ctypes.memmove(
                ctypes.addressof(self.table),
                self.routine.address,
                ctypes.sizeof(NSPV2_ROUTINE),
            )

    pid = uuid.UUID("6e737032-7465-7374-0000-0000000000a1")
    with Host(auto_install=True) as host:
        owner = Owner(host)
        ref = weakref.ref(owner)
        entry = host.advertise(owner.table, pid, owner=owner, name="bare")
        assert entry.table is owner.table and entry.owner is owner
        del owner, entry
        gc.collect()
        assert ref() is not None, "the host dropped the owner of an advertised table"
        with host.open_session() as client, pytest.raises(WinsockError) as failed:
            client.lookup("x@example.com")
        assert failed.value.code == WSAError.WSASERVICE_NOT_FOUND and calls == ["begin"]
        with pytest.raises(ValueError, match="already advertised"):
            host.advertise(NSPV2_ROUTINE(), pid)
        host.unadvertise(pid)
        gc.collect()
        if host.winsock.retired_tables is None:
            # a library that cannot say when it is done: kept until exit
            assert ref() is not None, "released with no proof the host is done"
        else:
            assert host.winsock.retired_tables() == 0
            assert ref() is None, "the owner was kept after the host was done"


def test_advertise_refuses_what_is_not_a_table() -> None:
    with Host(auto_install=True) as host:
        with pytest.raises(TypeError, match="expected a Provider, a Routine or an NSPV2_ROUTINE"):
            host.advertise(object(), uuid.uuid4())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs provider_id"):
            host.advertise(NSPV2_ROUTINE())
