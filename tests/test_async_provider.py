"""Async providers through the native host: ``async def lookup`` (an async
generator), ``async def set_service`` and async hooks, completed from the
provider's event loop; End, session end, rundown, unadvertise and close
cancel the pending step (its ``finally`` run once, the call completed
WSA_E_CANCELLED once); timeouts; the in-flight bound; a loop handed over.

Every call here goes through the C function pointers of the advertised
table, from the host's client API (the way ws2_32 calls a provider), and
completes through WSAProviderCompleteAsyncCall from the loop's thread.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest

from nspv2 import Host, Provider, QuerySet, Session, WinsockError, WSAError
from nspv2.sdk.winsock2 import WSAESETSERVICEOP

PID = uuid.UUID("6e737032-6173-796e-6300-0000000000a1")
CANCELLED = WSAError.WSA_E_CANCELLED


class Recorder(Provider):
    """Async everything; records what ran where."""

    provider_id = PID
    async_timeout = 3.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.finalized = 0
        self.cancelled = 0
        self.final_threads: list[str] = []
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.services: list[str] = []
        self.rundowns: list[int] = []
        self.cleanups: list[int] = []
        self.waiting = threading.Semaphore(0)  # released when a step starts waiting

    async def lookup(
        self, session: Session, restrictions: QuerySet, flags: int
    ) -> AsyncIterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        with self.lock:
            self.started += 1
        try:
            if name.startswith("fail-winsock"):
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
            if name.startswith("fail-value"):
                raise ValueError("a bug in the provider")
            if name.startswith("fail-memory"):
                raise MemoryError
            if name.startswith("fail-interrupt"):
                raise KeyboardInterrupt
            if name.startswith("not-a-queryset"):
                yield "oops"  # type: ignore[misc]
            count = 1 if name.startswith("slow") else 3
            for i in range(count):
                if name.startswith("slow"):
                    self.waiting.release()
                    await asyncio.sleep(3600)
                elif self.gate is not None:
                    self.waiting.release()
                    await self.gate.wait()
                else:
                    await asyncio.sleep(self.delay)
                yield QuerySet(f"r{i}-{name}", comment="MISTATUS_ONLINE")
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled += 1
            raise
        finally:
            with self.lock:
                self.finalized += 1
                self.final_threads.append(threading.current_thread().name)

    async def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        name = reg_info.service_instance_name or ""
        if name.startswith("slow"):
            self.waiting.release()
            await asyncio.sleep(3600)
        if name.startswith("refuse"):
            raise WinsockError(WSAError.WSAEACCES, name)
        await asyncio.sleep(0.001)
        self.services.append(f"{operation.name}:{name}")

    async def startup(self, session: Session) -> None:
        await asyncio.sleep(0)
        session.data["loop_thread"] = threading.current_thread().name

    async def cleanup(self, session: Session) -> None:
        await asyncio.sleep(0)
        self.cleanups.append(session.token)

    async def client_session_rundown(self, session: Session) -> None:
        await asyncio.sleep(0)
        self.rundowns.append(session.token)


@pytest.fixture
def provider() -> Iterator[Recorder]:
    p = Recorder()
    yield p
    p.close()  # stops its loop thread


@pytest.fixture
def host(provider: Recorder) -> Iterator[Host]:
    with Host(timeout_ms=5000, auto_install=True) as h:
        h.advertise(provider)
        yield h


def drained(provider: Provider, host: Host) -> None:
    """Nothing open, nothing pending, nothing completed twice."""
    assert provider.wait_async_idle(5.0), provider.async_stats()
    stats = provider.async_stats()
    assert stats["tasks"] == 0 and stats["in_flight"] == 0, stats
    assert provider.registry.open_counts() == {"sessions": 0, "lookups": 0}
    h = host.stats()
    assert (h["sessions_open"], h["lookups_open"], h["async_pending"]) == (0, 0, 0), h
    assert h["double_completions"] == 0, h


def next_in_thread(host: Host, handle: int) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(host.lookup_next(handle)))
    thread.start()
    return thread, out


def test_results_come_from_the_loop_one_per_next(provider: Recorder, host: Host) -> None:
    client = host.open_session()
    results = client.lookup("alice@example.com")
    assert [r.service_instance_name for r in results] == [
        f"r{i}-alice@example.com" for i in range(3)
    ]
    assert provider.started == provider.finalized == 1
    assert provider.final_threads == [f"nspv2-{provider.display_name}-loop"]
    client.close()
    drained(provider, host)
    assert provider.cleanups and provider.async_stats()["steps"] >= 4


def test_async_startup_ran_on_the_loop_before_startup_returned(
    provider: Recorder, host: Host
) -> None:
    client = host.open_session()
    client.lookup("a@example.com")
    (session,) = provider.registry.sessions()
    assert session.data["loop_thread"] == f"nspv2-{provider.display_name}-loop"
    client.close()
    assert provider.cleanups == [session.token]
    drained(provider, host)


@pytest.mark.parametrize(
    ("ender", "reason"),
    [("end", None), ("abandon", "rundown"), ("close", "cleanup")],
)
def test_ending_while_a_next_waits_cancels_the_task_once(
    provider: Recorder, host: Host, ender: str, reason: str | None
) -> None:
    client = host.open_session()
    handle = host.lookup_begin(client, "slow@example.com")
    thread, out = next_in_thread(host, handle)
    assert provider.waiting.acquire(timeout=5), "the step never started"
    if ender == "end":
        host.lookup_end(handle)
    elif ender == "abandon":
        client.abandon()
    else:
        client.close()
    thread.join(10)
    assert not thread.is_alive()
    assert out[0].code == CANCELLED
    assert provider.wait_async_idle(5.0)
    assert (provider.started, provider.cancelled, provider.finalized) == (1, 1, 1)
    if ender == "end":
        client.close()
    elif ender == "abandon":
        assert len(provider.rundowns) == 1
    drained(provider, host)
    assert provider.async_stats()["cancelled"] == 1


def test_end_between_results_closes_the_generator_on_the_loop(
    provider: Recorder, host: Host
) -> None:
    client = host.open_session()
    handle = host.lookup_begin(client, "bob@example.com")
    assert host.lookup_next(handle).code == 0  # suspended at its first yield
    host.lookup_end(handle)
    assert provider.wait_async_idle(5.0)
    assert provider.finalized == 1 and provider.cancelled == 0  # aclose: GeneratorExit
    assert provider.final_threads == [f"nspv2-{provider.display_name}-loop"]
    client.close()
    drained(provider, host)


class QuickTimeout(Recorder):
    async_timeout = 0.2


class TwoInFlight(Recorder):
    async_max_in_flight = 2


@pytest.fixture
def hosted(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, Host]]:
    provider: Recorder = request.param()
    with Host(timeout_ms=5000, auto_install=True) as h:
        h.advertise(provider)
        yield provider, h
    provider.close()


@pytest.mark.parametrize("hosted", [QuickTimeout], indirect=True)
def test_a_step_past_async_timeout_is_cancelled_and_completes_timed_out(
    hosted: tuple[Recorder, Host],
) -> None:
    provider, host = hosted
    client = host.open_session()
    handle = host.lookup_begin(client, "slow@example.com")
    t0 = time.monotonic()
    first = host.lookup_next(handle)
    assert first.code == WSAError.WSAETIMEDOUT
    assert time.monotonic() - t0 < 3.0
    assert provider.finalized == 1 and provider.cancelled == 1  # the generator ended
    host.lookup_end(handle)
    client.close()
    drained(provider, host)
    assert provider.async_stats()["timed_out"] == 1


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("fail-winsock@example.com", WSAError.WSASERVICE_NOT_FOUND),
        ("fail-value@example.com", WSAError.WSANO_RECOVERY),
        ("fail-memory@example.com", WSAError.WSA_NOT_ENOUGH_MEMORY),
        ("fail-interrupt@example.com", WSAError.WSANO_RECOVERY),
        ("not-a-queryset@example.com", WSAError.WSANO_RECOVERY),
    ],
)
def test_an_exception_in_the_coroutine_gets_the_guards_code(
    provider: Recorder, host: Host, name: str, code: int
) -> None:
    client = host.open_session()
    handle = host.lookup_begin(client, name)
    assert host.lookup_next(handle).code == code
    host.lookup_end(handle)
    # the loop survived (KeyboardInterrupt did not stop it)
    assert len(client.lookup("after@example.com")) == 3
    client.close()
    drained(provider, host)


@pytest.mark.parametrize("hosted", [TwoInFlight], indirect=True)
def test_past_async_max_in_flight_next_completes_try_again(
    hosted: tuple[Recorder, Host],
) -> None:
    provider, host = hosted
    ready = threading.Event()

    async def make_gate() -> None:
        provider.gate = asyncio.Event()
        ready.set()

    loop = provider._runner().loop()
    asyncio.run_coroutine_threadsafe(make_gate(), loop).result(5)
    assert ready.wait(5)
    clients = [host.open_session() for _ in range(3)]
    handles = [host.lookup_begin(c, f"u{i}@example.com") for i, c in enumerate(clients)]
    waiters = [next_in_thread(host, h) for h in handles[:2]]
    for _ in range(2):
        assert provider.waiting.acquire(timeout=5)
    third = host.lookup_next(handles[2])
    assert third.code == WSAError.WSATRY_AGAIN
    assert provider.async_stats()["refused"] == 1
    # The host ends a lookup's part at its provider's failure (as for any
    # code but WSAEFAULT): the client begins again once there is room.
    gate = provider.gate
    assert gate is not None
    loop.call_soon_threadsafe(gate.set)
    for thread, out in waiters:
        thread.join(10)
        assert out[0].code == 0
    again = host.lookup_begin(clients[2], "u2@example.com")
    assert host.lookup_next(again).code == 0
    for h in [*handles, again]:
        host.lookup_end(h)
    for c in clients:
        c.close()
    drained(provider, host)


def test_async_set_service_completes_and_reports_its_code(provider: Recorder, host: Host) -> None:
    client = host.open_session()
    host.set_service(client, QuerySet("carol@example.com"), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
    assert provider.services == ["RNRSERVICE_REGISTER:carol@example.com"]
    with pytest.raises(WinsockError) as info:
        host.set_service(client, QuerySet("refuse@example.com"), 0)
    assert info.value.code == WSAError.WSAEACCES
    client.close()
    drained(provider, host)


def test_a_pending_set_service_is_cancelled_when_its_session_runs_down(
    provider: Recorder, host: Host
) -> None:
    client = host.open_session()
    errors: list[BaseException] = []

    def register() -> None:
        try:
            host.set_service(client, QuerySet("slow@example.com"), 0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    assert provider.waiting.acquire(timeout=5)
    client.abandon()
    thread.join(10)
    assert isinstance(errors[0], WinsockError) and errors[0].code == CANCELLED
    drained(provider, host)


def test_unadvertise_cancels_pending_steps_and_close_stops_the_loop_thread() -> None:
    provider = Recorder()
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(provider)
        client = host.open_session()
        handle = host.lookup_begin(client, "slow@example.com")
        thread, out = next_in_thread(host, handle)
        assert provider.waiting.acquire(timeout=5)
        host.unadvertise(provider)
        thread.join(10)
        assert out[0].code in (CANCELLED, WSAError.WSA_E_NO_MORE)
        assert provider.wait_async_idle(5.0)
        assert provider.finalized == provider.started == 1
        runner = provider._aio
        assert runner is not None and runner._thread is not None
        provider.close()
        assert not runner._thread.is_alive()
        assert host.lookup_next(handle).code != 0  # its provider is gone
        client.abandon()


def test_close_completes_every_call_it_cancels() -> None:
    provider = Recorder()
    host = Host(timeout_ms=5000, auto_install=True)
    host.advertise(provider)
    client = host.open_session()
    handle = host.lookup_begin(client, "slow@example.com")
    thread, out = next_in_thread(host, handle)
    assert provider.waiting.acquire(timeout=5)
    provider.close()  # the table closes under the host's feet
    thread.join(10)
    assert out[0].code == CANCELLED
    assert provider.finalized == 1
    assert provider.async_stats()["tasks"] == 0
    host.close()
    assert host.stats()["double_completions"] == 0


def test_an_async_hook_past_its_timeout_fails_startup_with_timed_out() -> None:
    class SlowStart(Recorder):
        async_hook_timeout = 0.2

        async def startup(self, session: Session) -> None:
            await asyncio.sleep(3600)

    provider = SlowStart()
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(provider)
        client = host.open_session()
        with pytest.raises(WinsockError) as info:
            client.lookup("a@example.com")
        assert info.value.code in (WSAError.WSAETIMEDOUT, WSAError.WSASERVICE_NOT_FOUND)
        assert provider.async_stats()["timed_out"] == 1
        ended = provider.registry.ended[-1]
        assert ended.ended_by is not None and ended.ended_by.name == "STARTUP_FAILED"
        client.close()
        drained(provider, host)


def test_a_loop_handed_over_runs_every_coroutine_and_is_left_running() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="users-loop", daemon=True)
    runner.start()
    try:
        provider = Recorder()
        provider.use_event_loop(loop)
        with Host(timeout_ms=5000, auto_install=True) as host:
            host.advertise(provider)
            client = host.open_session()
            assert len(client.lookup("a@example.com")) == 3
            client.close()
            drained(provider, host)
        assert provider.final_threads == ["users-loop"]
        assert loop.is_running()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def test_use_event_loop_refuses_what_is_not_a_loop() -> None:
    with pytest.raises(TypeError):
        Recorder().use_event_loop(object())  # type: ignore[arg-type]


def test_a_plain_lookup_may_validate_in_begin_and_return_an_async_iterator() -> None:
    class Validating(Provider):
        provider_id = PID

        def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> AsyncIterator[QuerySet]:
            name = restrictions.service_instance_name or ""
            if "@" not in name:
                raise WinsockError(WSAError.WSAEINVAL, f"{name!r} is not an address")
            return self._answers(name)

        async def _answers(self, name: str) -> AsyncIterator[QuerySet]:
            await asyncio.sleep(0)
            yield QuerySet(name)

    from nspv2.testing import SlotHarness

    provider = Validating()
    with SlotHarness(provider) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("not-an-address"))
        assert (begun.returned, begun.last_error) == (-1, WSAError.WSAEINVAL)  # Begin failed
        h.cleanup(token)
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(provider)
        client = host.open_session()
        assert [r.service_instance_name for r in client.lookup("a@example.com")] == [
            "a@example.com"
        ]
        client.close()
        drained(provider, host)
    provider.close()


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_racing_ends_complete_every_next_exactly_once() -> None:
    """End and rundown racing NextEx's hand-over to the loop, with the
    switch interval at its smallest so threads interleave inside it. A step
    cancelled before it started used to leave a coroutine never awaited
    (a RuntimeWarning, an error here and so an unraisable exception)."""
    provider = Recorder()
    provider.delay = 0.0005
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with Host(timeout_ms=5000, auto_install=True) as host:
            host.advertise(provider)
            codes: dict[int, int] = {}
            lock = threading.Lock()

            def client_thread(seed: int) -> None:
                for i in range(60):
                    client = host.open_session()
                    handle = host.lookup_begin(client, f"u{seed}-{i}@example.com")
                    thread, out = next_in_thread(host, handle)
                    time.sleep((i % 4) * 0.0002)
                    if i % 3 == 0:
                        client.abandon()
                    else:
                        try:
                            host.lookup_end(handle)
                        except WinsockError:
                            pass
                        client.close()
                    thread.join(10)
                    assert not thread.is_alive()
                    with lock:
                        code = out[0].code
                        codes[code] = codes.get(code, 0) + 1

            workers = [threading.Thread(target=client_thread, args=(n,)) for n in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(120)
            assert sum(codes.values()) == 240, codes
            assert set(codes) <= {0, CANCELLED, WSAError.WSA_INVALID_HANDLE}, codes
            drained(provider, host)
            assert provider.started == provider.finalized, (provider.started, provider.finalized)
    finally:
        sys.setswitchinterval(old)


def test_slot_harness_drives_an_async_provider_in_isolation() -> None:
    from nspv2.testing import SlotHarness

    provider = Recorder()
    with SlotHarness(provider) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("a@example.com"))
        names = []
        while True:
            call = h.next(begun.value)
            if call.completion != 0:
                assert call.completion == WSAError.WSA_E_NO_MORE
                break
            assert call.result is not None
            names.append(call.result.service_instance_name)
        assert len(names) == 3
        h.end(begun.value)
        h.rundown(token)
        assert provider.rundowns == [token]
    assert provider.async_stats()["tasks"] == 0


# -- regressions found by review ---------------------------------------------------------


def test_keyboard_interrupt_in_a_task_the_provider_made_leaves_the_loop_running() -> None:
    """asyncio re-raises KeyboardInterrupt/SystemExit from any task out of the
    loop; the loop used to die, stranding every call on it."""

    class Gathering(Recorder):
        async def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> AsyncIterator[QuerySet]:
            name = restrictions.service_instance_name or ""

            async def part() -> None:
                if name.startswith("interrupt"):
                    raise KeyboardInterrupt
                await asyncio.sleep(0.3 if name.startswith("waiting") else 0)

            await asyncio.gather(part())
            yield QuerySet(name)

    provider = Gathering()
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(provider)
        client = host.open_session()
        other = host.open_session()
        waiting = host.lookup_begin(other, "waiting@example.com")
        thread, out = next_in_thread(host, waiting)
        time.sleep(0.05)  # the other step is on the loop, awaiting
        handle = host.lookup_begin(client, "interrupt@example.com")
        assert host.lookup_next(handle).code == WSAError.WSANO_RECOVERY
        host.lookup_end(handle)
        thread.join(10)
        assert out[0].code == 0  # completed, not stranded until the host's timeout
        assert [r.service_instance_name for r in client.lookup("after@example.com")] == [
            "after@example.com"
        ]
        host.lookup_end(waiting)
        client.close()
        other.close()
        drained(provider, host)
    provider.close()


def test_close_lets_a_cancelled_generators_finally_finish_its_awaits() -> None:
    """close() used to cancel the step again at once and every 50 ms, so an
    await in the generator's finally (closing a connection) was cut short."""

    class Tidy(Recorder):
        cleaned: ClassVar[list[str]] = []

        async def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> AsyncIterator[QuerySet]:
            try:
                self.waiting.release()
                await asyncio.sleep(3600)
                yield QuerySet("never")
            finally:
                await asyncio.sleep(0.1)  # the clean-up awaits
                self.cleaned.append("done")

    provider = Tidy()
    host = Host(timeout_ms=5000, auto_install=True)
    try:
        host.advertise(provider)
        client = host.open_session()
        handle = host.lookup_begin(client, "a@example.com")
        thread, out = next_in_thread(host, handle)
        assert provider.waiting.acquire(timeout=5)
        provider.close()
        assert provider.cleaned == ["done"]
        thread.join(10)
        assert out[0].code == CANCELLED
    finally:
        host.close()


def test_close_racing_the_first_async_call_leaves_no_loop_thread() -> None:
    """The first async call makes the provider's runner; close() used to read
    it without the lock it is made under, so a loop thread could start after
    close() had returned, never to be stopped."""
    in_runner = threading.Event()
    closing = threading.Event()

    class Racy(Provider):
        provider_id = PID

        @property
        def display_name(self) -> str:  # read inside _runner(), under its lock
            if threading.current_thread().name == "racer" and not in_runner.is_set():
                in_runner.set()
                closing.wait(0.5)
            return "Racy"

        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
            return []

        async def set_service(
            self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
        ) -> None:
            await asyncio.sleep(0)

    provider = Racy()
    with Host(timeout_ms=5000, auto_install=True) as host:
        host.advertise(provider)
        client = host.open_session()
        errors: list[BaseException] = []

        def racer() -> None:
            try:
                host.set_service(client, QuerySet("x@example.com"), 0)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=racer, name="racer")
        thread.start()
        assert in_runner.wait(5)
        provider.close()
        closing.set()
        thread.join(10)
        client.abandon()
    time.sleep(0.2)
    alive = [t.name for t in threading.enumerate() if t.name == "nspv2-Racy-loop"]
    assert alive == []
    runner = provider._aio
    assert runner is not None and runner.closed


def test_an_async_def_lookup_without_yield_is_refused_when_the_table_is_built() -> None:
    class Eager(Provider):
        provider_id = PID

        async def lookup(  # type: ignore[override]
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> list[QuerySet]:
            return [QuerySet("a")]

    with pytest.raises(TypeError, match="async generator"):
        Eager().routine()


def test_is_async_sees_each_async_form_and_only_those() -> None:
    """``nspv2 serve`` sizes its pool by is_async: a plain def lookup that
    returns an async iterator (the form that can fail Begin) used to read as
    synchronous, and so got 4 threads."""

    class Plain(Provider):
        provider_id = PID

        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
            return []

    class ReturnsAsync(Plain):
        def lookup(  # type: ignore[override]
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> AsyncIterator[QuerySet]:
            return self._more()

        async def _more(self) -> AsyncIterator[QuerySet]:
            yield QuerySet("a")

    class AsyncHook(Plain):
        async def client_session_rundown(self, session: Session) -> None:
            pass

    assert not Plain().is_async
    assert ReturnsAsync().is_async
    assert AsyncHook().is_async
    assert Recorder().is_async


def test_a_task_left_pending_at_close_is_destroyed_without_an_unraisable_error() -> None:
    """A generator that ignores cancellation outlives close()'s budget; its
    task is destroyed with the loop. The coroutine's close (GeneratorExit)
    used to be wrapped as a provider failure, and so became an exception
    that reached sys.unraisablehook."""
    import gc
    import logging

    class Stubborn(Recorder):
        async_timeout = 0.1
        async_hook_timeout = 0.1

        async def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> AsyncIterator[QuerySet]:
            self.waiting.release()
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue  # what the docs say never to do
            yield QuerySet("never")  # pragma: no cover

    provider = Stubborn()
    host = Host(timeout_ms=5000, auto_install=True)
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)  # "Task was destroyed but it is pending!"
    try:
        host.advertise(provider)
        client = host.open_session()
        handle = host.lookup_begin(client, "a@example.com")
        thread, _out = next_in_thread(host, handle)
        assert provider.waiting.acquire(timeout=5)
        host.lookup_end(handle)  # cancelled once, ignored
        provider.close()  # the budget runs out; the loop stops with the task pending
        assert provider.async_stats()["tasks"] == 1
        client.abandon()
        host.close()
        thread.join(10)
        del provider
        gc.collect()
    finally:
        asyncio_log.setLevel(level)


def test_slot_harness_end_while_next_waits_shows_the_cancellation() -> None:
    from nspv2.testing import SlotHarness

    with Recorder() as provider, SlotHarness(provider) as h:
        token = h.startup().value
        begun = h.begin(token, QuerySet("slow@example.com"))
        calls: list[Any] = []
        waiter = threading.Thread(target=lambda: calls.append(h.next(begun.value)))
        waiter.start()
        assert provider.waiting.acquire(timeout=5)
        assert h.end(begun.value).returned == 0
        waiter.join(10)
        assert calls[0].completion == CANCELLED and calls[0].result is None
        assert provider.wait_async_idle(5.0) and provider.finalized == 1
        h.cleanup(token)
    assert provider.async_stats()["tasks"] == 0
