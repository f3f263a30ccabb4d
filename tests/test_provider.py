"""Provider: sessions, lookups and set-service, every path through the C pointers."""

from __future__ import annotations

import ctypes
import enum
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nspv2 import (
    LUP,
    NO_ERROR,
    SOCKET_ERROR,
    WSAESETSERVICEOP,
    CsAddr,
    Provider,
    QuerySet,
    Session,
    SocketAddress,
    WinsockError,
    WSAError,
)
from nspv2.provider.registry import EndedBy
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason
from nspv2.sdk.winsock2 import WSAQUERYSET2W
from nspv2.testing import SlotHarness

from .typecheck import errors, mypy_strict

PID = uuid.UUID("8ad1f0c4-31a5-4d47-9b5b-0f9c0d1e2f30")
ENTRIES = {
    f"{n}@example.com": QuerySet(
        f"{n}@example.com",
        comment="MISTATUS_ONLINE",
        cs_addrs=(
            CsAddr(None, SocketAddress.parse("192.0.2.1", 5060)),
            CsAddr(None, SocketAddress.parse("2001:db8::1", 5060)),
        ),
        blob=bytes(32),
    )
    for n in ("alice", "bob", "carol")
}


class Directory(Provider):
    provider_id = PID

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.closed_generators = 0
        self.registered: list[tuple[str | None, WSAESETSERVICEOP, int]] = []

    def startup(self, session: Session) -> None:
        self.events.append(("startup", session.token))

    def cleanup(self, session: Session) -> None:
        self.events.append(("cleanup", session.token))

    def client_session_rundown(self, session: Session) -> None:
        self.events.append(("rundown", session.token))

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        if name.startswith("*@"):
            matches = [q for n, q in ENTRIES.items() if n.endswith(name[1:])]
        elif name in ENTRIES:
            matches = [ENTRIES[name]]
        else:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
        return self._generate(matches)

    def _generate(self, matches: list[QuerySet]) -> Iterator[QuerySet]:
        try:
            yield from matches
        finally:
            self.closed_generators += 1

    def set_service(
        self, session: Session, reg: QuerySet, op: WSAESETSERVICEOP, flags: int
    ) -> None:
        if reg.service_instance_name == "fail@example.com":
            raise WinsockError(WSAError.WSAEACCES)
        self.registered.append((reg.service_instance_name, op, flags))


@pytest.fixture
def h() -> Iterator[SlotHarness]:
    provider = Directory()
    with SlotHarness(provider) as harness:
        yield harness
    provider.close()


def prov(h: SlotHarness) -> Directory:
    assert isinstance(h.provider, Directory)
    return h.provider


# ---- sessions -------------------------------------------------------------------


def test_startup_writes_a_fresh_token_and_calls_the_hook(h: SlotHarness) -> None:
    tokens = [h.startup().value for _ in range(50)]
    assert all(tokens) and len(set(tokens)) == 50
    assert [e for e, _ in prov(h).events] == ["startup"] * 50
    s = prov(h).registry.session(tokens[0])
    assert s is not None and s.token == s.id == tokens[0] and s.provider_id == PID
    # No clock read per session unless the registry records times.
    assert s.started_at is None and s.ended_at is None
    prov(h).registry.record_times = True
    timed = prov(h).registry.session(h.startup().value)
    assert timed is not None and timed.started_at is not None
    assert timed.started_at <= time.time()
    assert h.cleanup(timed.token).returned == NO_ERROR
    assert timed.ended_at is not None and timed.started_at <= timed.ended_at <= time.time()


def test_cleanup_ends_normally_once(h: SlotHarness) -> None:
    token = h.startup().value
    assert h.cleanup(token).returned == NO_ERROR
    again = h.cleanup(token)
    assert (again.returned, again.last_error) == (SOCKET_ERROR, WSAError.WSAEINVAL)
    ended = prov(h).registry.ended[-1]
    assert ended.ended_by == EndedBy.CLEANUP and ended.end_reason is None
    assert prov(h).events[-1] == ("cleanup", token)
    assert prov(h).registry.open_counts() == {"sessions": 0, "lookups": 0}


def test_ended_by_is_an_enum_shown_by_its_value(h: SlotHarness) -> None:
    assert issubclass(EndedBy, enum.Enum)
    assert {m.name: m.value for m in EndedBy} == {
        "CLEANUP": "NSPv2Cleanup",
        "RUNDOWN": "NSPv2ClientSessionRundown",
        "CLOSE": "table closed",
        "PROVIDER": "provider",
        "STARTUP_FAILED": "NSPv2Startup failed",
    }
    first, second = h.startup().value, h.startup().value
    h.cleanup(first)
    h.rundown(second)
    cleaned, ran_down = prov(h).registry.ended
    assert cleaned.ended_by is EndedBy.CLEANUP and ran_down.ended_by is EndedBy.RUNDOWN
    assert cleaned.describe_end() == "ended by NSPv2Cleanup (normal)"
    assert ran_down.describe_end() == (
        "ended by NSPv2ClientSessionRundown: CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR"
    )


@pytest.mark.parametrize("bad", [None, 0, 1, 0xDEADBEEF])
def test_cleanup_of_unknown_session(h: SlotHarness, bad: int | None) -> None:
    call = h.cleanup(bad)
    assert (call.returned, call.last_error) == (SOCKET_ERROR, WSAError.WSAEINVAL)


def test_rundown_ends_with_communication_error_and_is_ignored_twice(
    h: SlotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    token = h.startup().value
    h.rundown(token)
    h.rundown(token)
    assert "unknown or ended session" in caplog.text
    ended = prov(h).registry.ended[-1]
    assert ended.end_reason is Reason.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
    assert [e for e in prov(h).events if e[0] == "rundown"] == [("rundown", token)]
    assert h.cleanup(token).last_error == WSAError.WSAEINVAL  # already ended


def test_startup_hook_failure_ends_the_session_as_provider_failure() -> None:
    class Failing(Directory):
        def startup(self, session: Session) -> None:
            raise WinsockError(WSAError.WSAEACCES)

    p = Failing()
    with SlotHarness(p) as h:
        call = h.startup()
    assert (call.returned, call.last_error, call.value) == (SOCKET_ERROR, WSAError.WSAEACCES, None)
    assert (
        p.registry.ended[-1].end_reason
        is Reason.CPNATFWT_SESSION_TERMINATION_PROVIDER_OTHER_FAILURE
    )
    assert p.registry.open_counts()["sessions"] == 0


def test_provider_request_and_close_reasons(h: SlotHarness) -> None:
    t1, t2 = h.startup().value, h.startup().value
    s1 = prov(h).registry.session(t1)
    assert s1 is not None and s1.end() and not s1.end()
    assert s1.end_reason is Reason.CPNATFWT_SESSION_TERMINATION_PROVIDER_REQUEST
    begun = h.begin(t2, QuerySet("alice@example.com"))
    assert begun.ok
    prov(h).close()
    s2 = prov(h).registry.ended[-1]
    assert s2.token == t2 and s2.end_reason is Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
    assert prov(h).registry.open_counts() == {"sessions": 0, "lookups": 0}
    assert ("rundown", t2) in prov(h).events
    assert "PLATFORM_SHUTDOWN" in s2.describe_end()


def test_unknown_session_for_lookup_and_set_service(h: SlotHarness) -> None:
    begun = h.begin(0x999999, QuerySet("alice@example.com"))
    assert (begun.returned, begun.last_error) == (SOCKET_ERROR, WSAError.WSAEINVAL)
    assert h.set_service(None, QuerySet("x"), 0).completion == WSAError.WSAEINVAL
    token = h.startup().value
    h.cleanup(token)
    assert h.begin(token, QuerySet("alice@example.com")).last_error == WSAError.WSAEINVAL


# ---- lookups ----------------------------------------------------------------------


def test_lookup_exact_and_wildcard(h: SlotHarness) -> None:
    token = h.startup().value
    assert h.results(token, QuerySet("bob@example.com")) == [ENTRIES["bob@example.com"]]
    assert h.results(token, QuerySet("*@example.com")) == list(ENTRIES.values())
    begun = h.begin(token, QuerySet("nobody@example.com"))
    assert begun.last_error == WSAError.WSASERVICE_NOT_FOUND
    assert prov(h).registry.open_counts() == {"sessions": 1, "lookups": 0}


def test_every_short_buffer_gives_wsaefault_with_the_exact_size(h: SlotHarness) -> None:
    token = h.startup().value
    begun = h.begin(token, QuerySet("alice@example.com"))
    need = ENTRIES["alice@example.com"].required_size()
    for size in range(0, need):
        call = h.next(begun.value, 0, size)
        assert call.completion == WSAError.WSAEFAULT, size
        assert call.buffer_length == need
        assert call.guard_intact and call.raw == bytes(size), "a short buffer was written"
    call = h.next(begun.value, 0, need)
    assert call.completion == NO_ERROR and call.guard_intact
    assert call.result == ENTRIES["alice@example.com"]
    assert h.next(begun.value).completion == WSAError.WSA_E_NO_MORE
    assert h.next(begun.value).completion == WSAError.WSA_E_NO_MORE
    assert h.end(begun.value).returned == NO_ERROR


def test_flushprevious_drops_the_held_result(h: SlotHarness) -> None:
    token = h.startup().value
    begun = h.begin(token, QuerySet("*@example.com"))
    assert h.next(begun.value, 0, 8).completion == WSAError.WSAEFAULT  # alice held
    call = h.next(begun.value, LUP.LUP_FLUSHPREVIOUS, 4096)
    assert call.result == ENTRIES["bob@example.com"]
    assert h.next(begun.value, 0, 4096).result == ENTRIES["carol@example.com"]


def test_end_closes_the_generator_and_handles_are_not_reused(h: SlotHarness) -> None:
    token = h.startup().value
    handles = set()
    for _ in range(20):
        begun = h.begin(token, QuerySet("*@example.com"))
        handles.add(begun.value)
        h.next(begun.value)
        assert h.end(begun.value).returned == NO_ERROR
        again = h.end(begun.value)
        assert (again.returned, again.last_error) == (SOCKET_ERROR, WSAError.WSA_INVALID_HANDLE)
        assert h.next(begun.value).completion == WSAError.WSA_INVALID_HANDLE
    assert len(handles) == 20 and token not in handles
    assert prov(h).closed_generators == 20
    assert h.end(None).last_error == WSAError.WSA_INVALID_HANDLE
    assert h.next(token).completion == WSAError.WSA_INVALID_HANDLE  # a session token is no handle


def test_cleanup_ends_open_lookups(h: SlotHarness) -> None:
    token = h.startup().value
    begun = h.begin(token, QuerySet("*@example.com"))
    assert h.next(begun.value).ok  # the generator is running
    h.cleanup(token)
    assert prov(h).registry.open_counts() == {"sessions": 0, "lookups": 0}
    assert h.end(begun.value).last_error == WSAError.WSA_INVALID_HANDLE
    assert prov(h).closed_generators == 1


def malformed_images() -> list[tuple[str, Any]]:
    small = WSAQUERYSET2W()
    small.dwSize = 8
    nulls = WSAQUERYSET2W()
    nulls.dwSize = ctypes.sizeof(WSAQUERYSET2W)
    nulls.dwNumberOfCsAddrs = 3
    return [("NULL", None), ("dwSize 8", small), ("count with NULL array", nulls)]


@pytest.mark.parametrize(
    "label, image", malformed_images(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_begin_rejects_malformed_restrictions(h: SlotHarness, label: str, image: Any) -> None:
    token = h.startup().value
    address = None if image is None else ctypes.addressof(image)
    begun = h.begin(token, address)
    assert (begun.returned, begun.last_error) == (SOCKET_ERROR, WSAError.WSAEINVAL), label
    assert prov(h).registry.open_counts() == {"sessions": 1, "lookups": 0}


def test_null_buffer_length_pointer(h: SlotHarness) -> None:
    token = h.startup().value
    begun = h.begin(token, QuerySet("alice@example.com"))
    fn = h.function("NSPv2LookupServiceNextEx")
    h_async = h.channel.new_call()
    fn(h_async, begun.value, 0, None, None)
    assert h.channel.wait(h_async) == WSAError.WSAEINVAL


def test_lookup_yielding_garbage_fails_that_call(h: SlotHarness) -> None:
    class Garbage(Directory):
        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Any:
            return ["not a QuerySet"]

    with SlotHarness(Garbage()) as g:
        token = g.startup().value
        begun = g.begin(token, QuerySet("x"))
        assert g.next(begun.value).completion == WSAError.WSANO_RECOVERY


# ---- set service ----------------------------------------------------------------


def test_set_service(h: SlotHarness) -> None:
    token = h.startup().value
    call = h.set_service(
        token, QuerySet("dave@example.com"), WSAESETSERVICEOP.RNRSERVICE_REGISTER, 1
    )
    assert call.completion == NO_ERROR
    assert prov(h).registered == [("dave@example.com", WSAESETSERVICEOP.RNRSERVICE_REGISTER, 1)]
    assert h.set_service(token, QuerySet("fail@example.com"), 0).completion == WSAError.WSAEACCES
    assert h.set_service(token, QuerySet("x"), 7).completion == WSAError.WSAEINVAL
    assert h.set_service(token, None, 0).completion == WSAError.WSAEINVAL


def test_set_service_absent_gets_the_stub() -> None:
    class NoSet(Provider):
        provider_id = PID

        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
            return []

    with SlotHarness(NoSet()) as h:
        token = h.startup().value
        assert h.set_service(token, QuerySet("x"), 0).completion == WSAError.WSAEOPNOTSUPP
        assert h.results(token, QuerySet("x")) == []


def test_provider_declaration_errors() -> None:
    class NoLookup(Provider):
        provider_id = PID

    with pytest.raises(TypeError, match="must implement lookup"):
        NoLookup().routine()

    class NoId(Provider):
        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
            return []

    with pytest.raises(TypeError, match=r"provider_id must be a uuid\.UUID"):
        NoId().routine()


# ---- asynchronous completion and cancellation --------------------------------------


class Slow(Directory):
    complete_from_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        return self._slow()

    def _slow(self) -> Iterator[QuerySet]:
        try:
            self.entered.set()
            self.release.wait(5)
            yield ENTRIES["alice@example.com"]
            yield ENTRIES["bob@example.com"]
        finally:
            self.closed_generators += 1


def test_next_completed_later_from_another_thread() -> None:
    p = Slow()
    with SlotHarness(p) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("x"))
        threading.Timer(0.05, p.release.set).start()
        call = h.next(begun.value)
        assert call.completion == NO_ERROR and call.result == ENTRIES["alice@example.com"]
    p.close()


def test_end_while_next_pending_cancels_it() -> None:
    p = Slow()
    with SlotHarness(p) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("x"))
        fn = h.function("NSPv2LookupServiceNextEx")
        h_async = h.channel.new_call()
        length = ctypes.c_uint32(4096)
        buf = ctypes.create_string_buffer(4096)
        fn(
            h_async,
            begun.value,
            0,
            ctypes.byref(length),
            ctypes.cast(buf, ctypes.POINTER(WSAQUERYSET2W)),
        )
        assert p.entered.wait(5)
        assert h.end(begun.value).returned == NO_ERROR
        time.sleep(0.1)
        assert h.channel.pending() == 1  # End marked the lookup; the worker owns the call
        p.release.set()
        assert h.channel.wait(h_async, 5) == WSAError.WSA_E_CANCELLED
        time.sleep(0.1)
        assert h.channel.refused == 0  # completed once, by the worker
        assert buf.raw == bytes(4096)  # and nothing written
        assert p.registry.open_counts() == {"sessions": 1, "lookups": 0}
    p.close()
    assert p.closed_generators == 1


# ---- concurrency -------------------------------------------------------------------


def test_many_threads_no_session_lost_or_ended_twice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "nspv2")
    p = Directory()
    errors: list[str] = []
    with SlotHarness(p) as h:

        def worker(n: int) -> None:
            for i in range(150):
                token = h.startup().value
                got = h.results(token, QuerySet("*@example.com"), buffer_size=64)
                if len(got) != 3:
                    errors.append(f"thread {n}: {len(got)} results")
                if i % 3 == 0:
                    h.rundown(token)
                elif h.cleanup(token).returned != NO_ERROR:
                    errors.append(f"thread {n}: cleanup failed")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    reg = p.registry
    assert reg.open_counts() == {"sessions": 0, "lookups": 0}
    assert reg.sessions_started == reg.sessions_ended == 8 * 150
    assert reg.lookups_started == reg.lookups_ended == 8 * 150
    kinds = [e for e, _ in p.events]
    assert (
        kinds.count("startup") == 1200
        and kinds.count("rundown") == 400
        and kinds.count("cleanup") == 800
    )
    ended_tokens = [t for e, t in p.events if e in ("rundown", "cleanup")]
    assert len(set(ended_tokens)) == 1200
    assert "ignored" not in caplog.text


# ---- hooks: declared on Provider, called only when overridden ---------------------


class Quiet(Provider):
    provider_id = PID

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        return []


def test_hooks_not_overridden_are_not_implemented() -> None:
    p = Quiet()
    assert not any(
        p.implements(h) for h in ("startup", "cleanup", "client_session_rundown", "set_service")
    )
    with pytest.raises(ValueError, match="no hook"):
        p.implements("lookup")
    with p.routine() as r:
        assert "NSPv2SetServiceEx" not in r.implemented
    d = Directory()
    assert all(
        d.implements(h) for h in ("startup", "cleanup", "client_session_rundown", "set_service")
    )
    with d.routine() as r:
        assert "NSPv2SetServiceEx" in r.implemented


def test_hook_inherited_from_an_intermediate_class_or_set_on_the_instance() -> None:
    class Registering(Quiet):
        def set_service(
            self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
        ) -> None:
            seen.append(("class", reg_info.service_instance_name))

    class Child(Registering):
        pass

    seen: list[tuple[str, str | None]] = []
    with SlotHarness(Child()) as h:
        token = h.startup().value
        assert h.set_service(token, QuerySet("a@example.com"), 0).completion == NO_ERROR
    one = Quiet()
    one.client_session_rundown = lambda s: seen.append(("instance", str(s.token)))  # type: ignore[method-assign]
    assert one.implements("client_session_rundown")
    with SlotHarness(one) as h:
        token = h.startup().value
        h.rundown(token)
    assert seen == [("class", "a@example.com"), ("instance", str(token))]


def test_calling_the_base_set_service_fails_with_wsaeopnotsupp() -> None:
    class Deferring(Quiet):
        def set_service(
            self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
        ) -> None:
            super().set_service(session, reg_info, operation, flags)

    with SlotHarness(Deferring()) as h:
        token = h.startup().value
        assert h.set_service(token, QuerySet("x"), 0).completion == WSAError.WSAEOPNOTSUPP


_TYPED_HEADER = """
import uuid
from nspv2 import WSAESETSERVICEOP, Provider, QuerySet, Session


class P(Provider):
    provider_id = uuid.UUID(int=1)

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        return []
"""


def test_mypy_strict_checks_hook_overrides(tmp_path: Path) -> None:
    right = (
        _TYPED_HEADER
        + """
    def startup(self, session: Session) -> None:
        session.data["n"] = 1

    def cleanup(self, session: Session) -> None:
        pass

    def client_session_rundown(self, session: Session) -> None:
        pass

    def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        pass
"""
    )
    wrong_startup = (
        _TYPED_HEADER
        + """
    def startup(self, session: int) -> None:
        pass
"""
    )
    wrong_set_service = (
        _TYPED_HEADER
        + """
    def set_service(self, session: Session, reg_info: QuerySet) -> None:
        pass
"""
    )
    wrong_rundown = (
        _TYPED_HEADER
        + """
    def client_session_rundown(self, session: Session) -> int:
        return 0
"""
    )
    found = mypy_strict(
        tmp_path,
        {
            "right.py": right,
            "wrong_startup.py": wrong_startup,
            "wrong_set_service.py": wrong_set_service,
            "wrong_rundown.py": wrong_rundown,
        },
    )
    assert errors(found["right.py"]) == []
    for name in ("wrong_startup.py", "wrong_set_service.py", "wrong_rundown.py"):
        problems = errors(found[name])
        assert problems and all("[override]" in line for line in problems), found[name]
