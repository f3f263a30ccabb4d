"""Lifetime and safety of the scaffold: who completes an async call, who ends
a session, who closes a generator; every path through the C pointers."""

from __future__ import annotations

import ctypes
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from nspv2 import NO_ERROR, SOCKET_ERROR, Host, Provider, QuerySet, Session, WinsockError, WSAError
from nspv2.provider.registry import EndedBy
from nspv2.provider.routine import Routine
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason
from nspv2.sdk.winsock2 import WSAQUERYSET2W
from nspv2.sdk.ws2spi import PROTOTYPES
from nspv2.testing import SlotHarness

from .asan import AsanHost, asan_host, sanitizer_reports

__all__ = ["asan_host"]  # the fixture, re-exported for pytest

PID = uuid.UUID("5f0c7a3e-9d2b-4c1a-8e6f-1b2c3d4e5f60")
_PROTO = {p.slot: p.functype for p in PROTOTYPES}
CANCELLED = int(WSAError.WSA_E_CANCELLED)


class Gated(Provider):
    """Completes from a worker thread; each result waits for ``release``."""

    provider_id = PID
    complete_from_thread = True

    def __init__(self, results: int = 3) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.results = results
        self.closed = 0

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        try:
            for n in range(self.results):
                self.entered.set()
                assert self.release.wait(10)
                yield QuerySet(f"r{n}", comment="x" * 200)
        finally:
            self.closed += 1


def raw_next(h: SlotHarness, handle: int | None, size: int = 4096) -> tuple[int, Any, Any]:
    """Start a NextEx through the C pointer without waiting: (async, length, buffer)."""
    h_async = h.channel.new_call()
    length = ctypes.c_uint32(size)
    buf = (ctypes.c_uint8 * size)(*([0x5A] * size))
    h.function("NSPv2LookupServiceNextEx")(
        h_async,
        handle,
        0,
        ctypes.byref(length),
        ctypes.cast(buf, ctypes.POINTER(WSAQUERYSET2W)),
    )
    return h_async, length, buf


# ---- 1. one owner for every async call ---------------------------------------------


def test_end_marks_and_the_worker_completes_cancelled_without_writing() -> None:
    p = Gated()
    with SlotHarness(p) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("x")).value
        h_async, length, buf = raw_next(h, handle)
        assert p.entered.wait(5)
        assert h.end(handle).returned == NO_ERROR
        p.release.set()
        assert h.channel.wait(h_async, 5) == CANCELLED
        time.sleep(0.1)
        assert bytes(buf) == bytes([0x5A]) * len(buf)  # nothing written, before or after
        assert length.value == 4096
        assert h.channel.refused == 0 and h.channel.pending() == 0
    p.close()
    assert p.closed == 1


@pytest.mark.parametrize("how", ["cleanup", "rundown", "close"])
def test_session_end_cancels_through_the_owner(how: str) -> None:
    p = Gated()
    with SlotHarness(p) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("x")).value
        h_async, _length, buf = raw_next(h, handle)
        assert p.entered.wait(5)
        if how == "cleanup":
            assert h.cleanup(token).returned == NO_ERROR
        elif how == "rundown":
            h.rundown(token)
        else:
            threading.Timer(0.1, p.release.set).start()
            p.close()
        p.release.set()
        assert h.channel.wait(h_async, 5) == CANCELLED
        time.sleep(0.05)
        assert bytes(buf) == bytes([0x5A]) * len(buf)
        assert h.channel.refused == 0
    p.close()
    assert p.closed == 1


def test_two_concurrent_next_calls_each_complete_once() -> None:
    p = Gated()
    with SlotHarness(p) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("x")).value
        first, _l1, _b1 = raw_next(h, handle)
        assert p.entered.wait(5)
        second, _l2, _b2 = raw_next(h, handle)
        assert h.channel.wait(second, 5) == WSAError.WSAEALREADY
        p.release.set()
        assert h.channel.wait(first, 5) == NO_ERROR
        assert h.channel.refused == 0 and h.channel.pending() == 0
        assert h.end(handle).returned == NO_ERROR
    p.close()


def test_a_next_failing_after_pulling_a_result_keeps_it() -> None:
    p = Gated()
    p.release.set()
    with SlotHarness(p) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("x")).value
        h_async = h.channel.new_call()
        length = ctypes.c_uint32(4096)
        h.function("NSPv2LookupServiceNextEx")(h_async, handle, 0, ctypes.byref(length), None)
        assert h.channel.wait(h_async, 5) == WSAError.WSAEINVAL
        got = h.next(handle)
        assert got.ok and got.result is not None and got.result.service_instance_name == "r0"
        h.end(handle)
    p.close()


def test_async_outcomes_under_the_asan_host(asan_host: AsanHost) -> None:
    """End, session close, abandon and unadvertise against a worker still
    producing: every NextEx ends WSA_E_CANCELLED and nothing writes freed memory."""
    child = asan_host.run(
        """
        import json, threading, time, uuid
        from nspv2 import Host, Provider, QuerySet

        class Slow(Provider):
            provider_id = uuid.UUID("5f0c7a3e-9d2b-4c1a-8e6f-1b2c3d4e5f61")
            complete_from_thread = True
            def __init__(self):
                self.entered = threading.Event()
            def lookup(self, session, restrictions, flags):
                for n in range(100):
                    self.entered.set()
                    time.sleep(0.15)
                    yield QuerySet(restrictions.service_instance_name, comment="x" * 400)

        outcomes = {}
        with Host(timeout_ms=5000, auto_install=True) as host:
            for how in ("end", "close", "abandon", "unadvertise"):
                for _ in range(3):
                    p = Slow()
                    host.advertise(p)
                    client = host.open_session()
                    handle = host.lookup_begin(client, "a@example.com")
                    got = []
                    t = threading.Thread(
                        target=lambda: got.append(host.lookup_next(handle, 0, 4096).code)
                    )
                    t.start()
                    assert p.entered.wait(10)  # the worker is producing
                    if how == "end":
                        host.lookup_end(handle)
                    elif how == "close":
                        client.close()
                    elif how == "abandon":
                        client.abandon()
                    else:
                        host.unadvertise(p)
                    t.join(10)
                    time.sleep(0.3)  # the worker finishes its result meanwhile
                    if how != "unadvertise":
                        host.unadvertise(p)
                    p.close()
                    outcomes.setdefault(how, []).extend(got)
        print(json.dumps(outcomes))
        """,
        timeout=180,
    )
    output = child.stdout + child.stderr
    assert not sanitizer_reports(output), output[-6000:]
    assert child.returncode == 0, output[-6000:]
    outcomes = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcomes == {how: [CANCELLED] * 3 for how in ("end", "close", "abandon", "unadvertise")}


# ---- 4. sessions end exactly once ------------------------------------------------


class Plain(Provider):
    provider_id = PID

    def __init__(self) -> None:
        self.rundowns: list[int] = []

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterable[QuerySet]:
        return [QuerySet("r0")]

    def client_session_rundown(self, session: Session) -> None:
        self.rundowns.append(session.token)


def test_close_between_the_guard_and_the_new_session_leaves_none_open() -> None:
    p = Plain()
    with SlotHarness(p) as h:
        registry = p.registry
        original = registry.new_session

        def racing(provider_id: uuid.UUID | None) -> Session:
            p.close()  # the table closes after the guard let Startup in
            return original(provider_id)

        registry.new_session = racing  # type: ignore[method-assign]
        call = h.startup()
        assert call.code == WSAError.WSAEINVALIDPROVIDER
        assert registry.open_counts() == {"sessions": 0, "lookups": 0}
        assert registry.sessions_started == registry.sessions_ended == 0


def test_close_during_the_startup_hook_ends_the_session_once_and_fails_startup() -> None:
    entered, release = threading.Event(), threading.Event()

    class Starting(Plain):
        def startup(self, session: Session) -> None:
            entered.set()
            assert release.wait(5)

    p = Starting()
    with SlotHarness(p) as h:
        calls: list[Any] = []
        t = threading.Thread(target=lambda: calls.append(h.startup()))
        t.start()
        assert entered.wait(5)
        p.close()
        release.set()
        t.join(5)
        assert calls[0].code == WSAError.WSAEINVALIDPROVIDER and not calls[0].value
    reg = p.registry
    assert reg.sessions_started == reg.sessions_ended == 1
    assert reg.ended[-1].ended_by is EndedBy.CLOSE and len(p.rundowns) == 1


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_a_finally_raising_base_exception_does_not_stop_the_ending(
    exc: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    closed: list[str] = []

    class Stubborn(Plain):
        def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> Iterator[QuerySet]:
            name = restrictions.service_instance_name or ""
            try:
                yield QuerySet(name)
                yield QuerySet(name)
            finally:
                closed.append(name)
                if name == "bad":
                    raise exc()

    p = Stubborn()
    with SlotHarness(p) as h:
        sessions = []
        for _ in range(2):
            token = h.startup().value
            for name in ("bad", "good"):
                handle = h.begin(token, QuerySet(name)).value
                assert h.next(handle).ok  # the generator is running: close runs finally
            sessions.append(token)
        assert h.cleanup(sessions[0]).ok
        assert sorted(closed) == ["bad", "good"]
        p.close()  # ends the other session: both of its generators closed too
    assert sorted(closed) == ["bad", "bad", "good", "good"]
    reg = p.registry
    assert reg.sessions_started == reg.sessions_ended == 2
    assert reg.lookups_started == reg.lookups_ended == 4
    assert caplog.text.count(exc.__name__) >= 2


def test_begin_after_the_session_ended_fails_and_closes_the_iterator() -> None:
    class Results:
        closed = 0

        def __iter__(self) -> Results:
            return self

        def __next__(self) -> QuerySet:
            raise StopIteration

        def close(self) -> None:
            Results.closed += 1

    class EndsItself(Plain):
        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Any:
            session.end()  # the session ends between Begin's check and the new lookup
            return Results()

    p = EndsItself()
    with SlotHarness(p) as h:
        token = h.startup().value
        call = h.begin(token, QuerySet("x"))
        assert call.code == WSAError.WSAEINVAL and not call.value
    assert Results.closed == 1
    assert p.registry.open_counts() == {"sessions": 0, "lookups": 0}
    assert p.registry.lookups_started == 0


def test_a_real_rundown_during_unadvertise_keeps_its_own_reason() -> None:
    """The host runs session B down (unadvertise) while another thread delivers
    a real client rundown of session A: A's reason is the client's."""
    routine_box: dict[str, Routine] = {}
    guid = GUID.from_uuid(PID)

    class Witness(Plain):
        def client_session_rundown(self, session: Session) -> None:
            super().client_session_rundown(session)
            if len(self.rundowns) > 1:
                return
            r = routine_box["r"]
            arg = ctypes.c_void_p()
            startup = _PROTO["NSPv2Startup"](r.slot_address("NSPv2Startup"))
            assert startup(ctypes.byref(guid), ctypes.byref(arg)) == NO_ERROR
            rundown = _PROTO["NSPv2ClientSessionRundown"](
                r.slot_address("NSPv2ClientSessionRundown")
            )
            t = threading.Thread(target=rundown, args=(ctypes.byref(guid), arg.value))
            t.start()
            t.join(5)

    p = Witness()
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(p)
        routine_box["r"] = p.routine()
        client = host.open_session()
        assert host.lookup(client, "x")
        host.unadvertise(p)
    by_token = {s.token: s.end_reason for s in p.registry.ended}
    first, second = p.rundowns
    assert by_token[first] is Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
    assert by_token[second] is Reason.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
    p.close()


# ---- 6. codes that cannot reach C ----------------------------------------------------


@pytest.mark.parametrize("code", [2**32, 2**32 + 10022, -(2**31) - 1, 2**64])
def test_a_code_outside_32_bits_is_refused(code: int) -> None:
    with pytest.raises(ValueError, match="32 bits"):
        WinsockError(code)


@pytest.mark.parametrize("code", [2**32, 0])
def test_a_slot_raising_an_unusable_code_fails_with_wsano_recovery(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd(Plain):
        def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> Iterator[QuerySet]:
            error = WinsockError(WSAError.WSAEINVAL)
            error.code = code  # changed after construction
            raise error
            yield QuerySet("never")

    p = Odd()
    with SlotHarness(p) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("x")).value
        call = h.next(handle)
        assert call.completion == WSAError.WSANO_RECOVERY and call.result is None
    assert "which no call can fail with" in caplog.text
    p.close()


def test_harness_reports_socket_error_without_a_last_error_as_a_failure() -> None:
    def begin(*_a: Any) -> int:
        return SOCKET_ERROR  # "failed", without WSASetLastError

    r = Routine(begin=begin, next_ex=lambda *a: None, end=lambda *a: 0)
    with SlotHarness(r) as h:
        call = h.begin(1, QuerySet("x"))
        assert call.returned == SOCKET_ERROR and call.last_error == NO_ERROR
        assert not call.ok and call.code == WSAError.WSAEINVAL
    r.close()


# ---- 7. the guard's reporting never reaches C ----------------------------------------


class _RecursionHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RecursionError("maximum recursion depth exceeded (simulated)")

    def handleError(self, record: logging.LogRecord) -> None:
        raise RecursionError("maximum recursion depth exceeded (simulated)")


def test_guard_reporting_failing_with_recursion_error_stays_out_of_c(
    no_unraisable: list[Any],
) -> None:
    def begin(*_a: Any) -> int:
        raise RuntimeError("a bug")

    def next_ex(*_a: Any) -> None:
        raise RuntimeError("a bug")

    def rundown(*_a: Any) -> None:
        raise RuntimeError("a bug")

    r = Routine(begin=begin, next_ex=next_ex, end=lambda *a: 0, client_session_rundown=rundown)
    logger = logging.getLogger("nspv2")
    handler = _RecursionHandler()
    logger.addHandler(handler)
    raise_exc, logging.raiseExceptions = logging.raiseExceptions, True
    try:
        with SlotHarness(r) as h:
            assert h.begin(1, QuerySet("x")).code == WSAError.WSANO_RECOVERY
            assert h.next(1).completion == WSAError.WSANO_RECOVERY
            h.rundown(1)
    finally:
        logging.raiseExceptions = raise_exc
        logger.removeHandler(handler)
        r.close()
    assert not no_unraisable


def test_guard_near_the_recursion_limit(no_unraisable: list[Any]) -> None:
    """Callbacks entered with less and less stack left: every call that
    reaches the slot fails with SOCKET_ERROR and WSANO_RECOVERY, and nothing
    reaches sys.unraisablehook."""

    def begin(*_a: Any) -> int:
        raise RuntimeError("a bug")

    r = Routine(begin=begin, next_ex=lambda *a: None, end=lambda *a: 0)
    outcomes: list[tuple[int, int]] = []
    with SlotHarness(r) as h:
        fn = h.function("NSPv2LookupServiceBegin")
        handle = ctypes.c_void_p()

        def deep() -> None:
            try:
                deep()
            except RecursionError:
                pass
            if len(outcomes) < 60:
                try:
                    h.channel.set_last_error(0)
                    rc = fn(None, None, 0, 1, ctypes.byref(handle))
                    outcomes.append((rc, h.channel.get_last_error()))
                except (RecursionError, ctypes.ArgumentError):
                    pass  # refused on the Python side, before C

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(300)
        try:
            deep()
        finally:
            sys.setrecursionlimit(limit)
    r.close()
    assert len(outcomes) > 10
    assert set(outcomes) == {(SOCKET_ERROR, WSAError.WSANO_RECOVERY)}
    assert not no_unraisable


# ---- 5. a Startup hook re-entering its own session ----------------------------

_REENTRANT_CHILD = """
import json
from nspv2 import Host, Provider, QuerySet, WinsockError

class Reentrant(Provider):
    provider_id = PID

    def __init__(self):
        self.host = None
        self.entered = False
        self.clients = []
        self.inner = []
        self.cleanups = []

    def startup(self, session):
        if self.entered:
            return  # only the first Startup re-enters
        self.entered = True
        own, other = self.clients
        for client in (own, other):  # its own session, then another one
            try:
                found = self.host.lookup(client, "x")
                self.inner.append(["ok", [q.service_instance_name for q in found]])
            except WinsockError as e:
                self.inner.append(["error", int(e.code)])

    def lookup(self, session, restrictions, flags):
        return [QuerySet("r0")]

    def cleanup(self, session):
        self.cleanups.append(session.token)

p = Reentrant()
with Host(auto_install=True) as host:
    p.host = host
    host.advertise(p)
    own, other = host.open_session(), host.open_session()
    p.clients = [own, other]
    outer = [q.service_instance_name for q in own.lookup("x")]
    own.close()
    other.close()
reg = p.registry
print(json.dumps({
    "outer": outer, "inner": p.inner, "cleanups": p.cleanups,
    "started": reg.sessions_started, "ended": reg.sessions_ended,
}))
"""


def test_a_startup_hook_looking_up_in_its_own_session_fails_instead_of_hanging() -> None:
    """Provider.startup calling Host.lookup for the client session it is
    starting: that lookup fails with WSAEINPROGRESS at once (it would wait
    for this very Startup); a lookup in another session from the same hook
    works; the outer lookup gets its result and every session ends once.
    Runs in a child Python so that a hang fails the test within its time."""
    import os
    import subprocess

    code = f"import uuid\nPID = uuid.UUID({str(PID)!r})\n" + _REENTRANT_CHILD
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the Startup hook waited for its own Startup (the child hung for 30 s)")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["inner"] == [["error", int(WSAError.WSAEINPROGRESS)], ["ok", ["r0"]]]
    assert out["outer"] == ["r0"]
    assert out["started"] == out["ended"] == 2
    assert len(out["cleanups"]) == len(set(out["cleanups"])) == 2
