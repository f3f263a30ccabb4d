"""Who keeps advertised tables alive, which channel they report to, and Host
under threads and bad arguments.

Crash cases (a thunk freed while C can still call it) run in a child Python
on the ASan build of the host with ``PYTHONMALLOC=malloc``, so a freed
ctypes thunk object is freed memory ASan watches: the child must finish
with the documented outcome and no sanitizer report.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator

import pytest

from nspv2 import Host, Provider, QuerySet, Routine, Session, WinsockError, WSAError
from nspv2.host import tables
from nspv2.sdk.ws2spi import NSPV2_ROUTINE

from .asan import AsanHost, asan_host, sanitizer_reports

__all__ = ["asan_host"]  # the fixture, imported for the tests below

PID = uuid.UUID("6e737032-6c69-6665-0000-0000000000b1")


def run_child(asan: AsanHost, code: str, timeout: float = 120.0) -> str:
    """Run ``code`` on the ASan host with Python's allocator off; return its
    output after checking it exited 0 with no sanitizer report."""
    env = asan.env()
    env["PYTHONMALLOC"] = "malloc"  # Python objects in ASan-watched memory
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert not sanitizer_reports(output), output[-4000:]
    assert proc.returncode == 0, output[-4000:]
    return proc.stdout


PRELUDE = """
import ctypes, gc, sys, threading, uuid, weakref
from nspv2 import Host, Provider, QuerySet, Routine, WinsockError
from nspv2.host import tables
from nspv2.host.winsock import load_native_host
PID = uuid.UUID("6e737032-6c69-6665-0000-0000000000c1")

class Hello(Provider):
    provider_id = PID
    def lookup(self, session, restrictions, flags):
        yield QuerySet(restrictions.service_instance_name, comment="hi")
"""


def test_host_dropped_without_close_keeps_its_tables_alive(asan_host: AsanHost) -> None:
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        def advertise_and_drop():
            host = Host(auto_install=True)
            host.advertise(Hello())  # no close(), no with
        advertise_and_drop()
        gc.collect()
        junk = [Routine(begin=len, next_ex=len, end=len) for _ in range(50)]  # reuse memory
        gc.collect()
        host = Host(timeout_ms=2000, auto_install=True)
        with host.open_session() as client:
            print([r.comment for r in client.lookup("alice@example.com")])
        """
        ),
    )
    assert out.strip() == "['hi']"


def test_provider_dropped_while_advertised_stays_callable(asan_host: AsanHost) -> None:
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        with Host(timeout_ms=2000, auto_install=True) as host:
            p = Hello()
            ref = weakref.ref(p)
            host.advertise(p)
            host.advertised.clear()  # even if nothing on the Host side holds it
            del p
            gc.collect()
            print(ref() is not None)
            with host.open_session() as client:
                print([r.comment for r in client.lookup("bob@example.com")])
            host.unadvertise(PID)
        gc.collect()
        print(ref() is None)  # released once unadvertised and the host is done
        """
        ),
    )
    assert out.split() == ["True", "['hi']", "True"]


def test_winsock_advertise_owns_its_table_until_unadvertise(asan_host: AsanHost) -> None:
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        from nspv2.host.catalog import Catalog
        winsock = load_native_host()
        Catalog(winsock).install(PID, Hello.namespace, "Hello")  # advertise needs it installed
        def advertise():
            winsock.advertise(PID, Hello())  # the caller keeps nothing
        advertise()
        gc.collect()
        host = Host(winsock, timeout_ms=2000, auto_install=True)
        with host.open_session() as client:
            print([r.comment for r in client.lookup("carol@example.com")])
        winsock.unadvertise(PID)
        print(tables.advertised_count(), tables.retired_count())
        """
        ),
    )
    assert out.split() == ["['hi']", "0", "0"]


def test_rundown_deferred_past_unadvertise_reaches_a_live_table(asan_host: AsanHost) -> None:
    """A SetServiceEx still running holds the session: the host delivers its
    Rundown after WSAUnadvertiseProvider has returned, when that call
    returns, on the client's thread. The Rundown's thunk belongs to an
    owner nothing in Python references any more, and the garbage collector
    runs meanwhile: the registry must still hold it, and release it once
    the host says it is done. (The running SetServiceEx is another table's
    thunk, kept by the test, so its frame keeps nothing of the owner.)"""
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        from nspv2.sdk.ws2spi import NSPV2_ROUTINE
        entered, release = threading.Event(), threading.Event()
        calls = []
        host = Host(timeout_ms=10000, auto_install=True)

        def set_service_ex(h_async, pid, qs, op, flags, arg):
            entered.set()
            release.wait(10)
            host.channel.complete(h_async, 0)
        helper = Routine(begin=lambda *a: 0, next_ex=lambda *a: None, end=lambda *a: 0,
                         set_service_ex=set_service_ex, pointers="int", channel=host.channel)

        class Owner:
            def __init__(self):
                def startup(pid, pp):
                    ctypes.c_void_p.from_address(pp).value = 0x1234
                    return 0
                def rundown(pid, arg):
                    calls.append("rundown")
                self.routine = Routine(startup=startup, begin=lambda *a: 0,
                                       next_ex=lambda *a: None, end=lambda *a: 0,
                                       client_session_rundown=rundown, pointers="int",
                                       channel=host.channel)
                self.table = NSPV2_ROUTINE()
                ctypes.memmove(ctypes.addressof(self.table), self.routine.address,
                               ctypes.sizeof(NSPV2_ROUTINE))
                self.table.NSPv2SetServiceEx = helper.table.NSPv2SetServiceEx

        owner = Owner()
        ref = weakref.ref(owner)
        host.advertise(owner.table, PID, owner=owner)
        del owner
        session = host.open_session()
        worker = threading.Thread(
            target=host.set_service, args=(session, QuerySet("a@example.com"), 0))
        worker.start()
        assert entered.wait(10)
        host.unadvertise(PID)  # returns with the Rundown deferred
        deferred = calls == []
        gc.collect()
        print(deferred, ref() is not None, host.winsock.retired_tables())
        release.set()  # the call returns: the Rundown follows, on the worker
        worker.join(10)
        print(calls, host.winsock.retired_tables())
        session.close()
        tables.sweep()
        gc.collect()
        print(ref() is None, tables.retired_count())
        """
        ),
    )
    # while the call is in flight the host counts the table as still in use
    assert out.split() == ["True", "True", "1", "['rundown']", "0", "True", "0"]


def test_gc_while_native_threads_call_a_dropped_hosts_table(asan_host: AsanHost) -> None:
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        Host(auto_install=True).advertise(Hello())  # dropped at once
        stop = threading.Event()
        def collect():
            while not stop.is_set():
                gc.collect()
        collector = threading.Thread(target=collect)
        collector.start()
        try:
            result = Host(timeout_ms=5000, auto_install=True).drive(threads=4, cycles=200, provider_id=PID)
        finally:
            stop.set()
            collector.join()
        print(result.outcomes())
        """
        ),
    )
    assert out.strip() == "{0: 4000, 10110: 800}"  # 800 cycles, one result each


# -- the error channel belongs to the table -------------------------------------------


class Refuser(Provider):
    provider_id = PID

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        if restrictions.service_instance_name == "nobody@example.com":
            raise WinsockError(WSAError.WSAEACCES, "no")
        yield QuerySet(restrictions.service_instance_name, comment="here")


@pytest.mark.parametrize("entered", [False, True], ids=["without with", "with"])
def test_host_reports_through_its_channel_with_or_without_with(entered: bool) -> None:
    host = Host(timeout_ms=1000, auto_install=True)
    try:
        if entered:
            host.__enter__()
        entry = host.advertise(Refuser())
        with host.open_session() as client:
            # NextEx completes through the channel: the host must receive it
            assert [r.comment for r in client.lookup("alice@example.com")] == ["here"]
            # Begin fails through WSASetLastError: the host must read the code
            with pytest.raises(WinsockError) as failed:
                client.lookup("nobody@example.com")
            assert failed.value.code == WSAError.WSAEACCES
        assert entry.routine is not None and entry.routine.channel is host.channel
    finally:
        host.close()


def test_a_routine_is_handed_the_hosts_channel() -> None:
    routine = Routine(begin=lambda *a: 0, next_ex=lambda *a: None, end=lambda *a: 0)
    with Host(auto_install=True) as host:
        host.advertise(routine, PID)
        assert routine.channel is host.channel


# -- Host arguments out of DWORD range -------------------------------------------------


def test_lookup_sizes_and_flags_out_of_dword_range_are_refused(asan_host: AsanHost) -> None:
    out = run_child(
        asan_host,
        PRELUDE
        + textwrap.dedent(
            """
        with Host(timeout_ms=2000, auto_install=True) as host:
            host.advertise(Hello())
            with host.open_session() as client:
                handle = host.lookup_begin(client, "alice@example.com")
                cases = [
                    lambda: host.lookup_next(handle, buffer_size=-1),
                    lambda: host.lookup_next(handle, buffer_size=-8),
                    lambda: host.lookup_next(handle, buffer_size=2**32 + 16),
                    lambda: host.lookup_next(handle, flags=-1),
                    lambda: host.lookup_next(handle, flags=2**32),
                    lambda: host.lookup(client, "alice@example.com", buffer_size=-1),
                    lambda: host.lookup(client, "alice@example.com", flags=2**32),
                    lambda: host.lookup_begin(client, "alice@example.com", flags=-1),
                    lambda: host.set_service(client, QuerySet("a@example.com"), 2**32),
                    lambda: host.set_service(client, QuerySet("a@example.com"), 0, flags=-1),
                    lambda: host.set_timeout(-1),
                    lambda: host.drive(threads=2**32 + 1, cycles=1),
                    lambda: host.drive(threads=1, cycles=1, buffer_size=-1),
                ]
                for case in cases:
                    try:
                        case()
                    except ValueError as exc:
                        print("ValueError", "2**32-1" in str(exc))
                    else:
                        print("accepted")
                print(host.lookup_next(handle).result.comment)  # the lookup still works
                host.lookup_end(handle)
        """
        ),
    )
    lines = out.splitlines()
    assert lines[:-1] == ["ValueError True"] * 13
    assert lines[-1] == "hi"


# -- Host from many threads ------------------------------------------------------------


def test_open_session_from_many_threads_loses_none() -> None:
    """Every session still open is in host.sessions (close() ends it)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads, per_thread = 8, 400
    barrier = threading.Barrier(threads)
    opened: list[list[int]] = [[] for _ in range(threads)]
    host = Host(auto_install=True)
    try:

        def work(k: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                session = host.open_session()
                if i % 2:
                    session.close()  # closed ones may be trimmed away
                else:
                    opened[k].append(session.id)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(previous)
    still_open = {sid for ids in opened for sid in ids}
    listed = {s.id for s in host.sessions if not s.closed}
    lost = still_open - listed
    for sid in lost:  # do not leave them open in the process-wide host
        host.native.nspv2_session_close(sid)
    host.close()
    assert not lost, f"{len(lost)} of {len(still_open)} open sessions lost from host.sessions"


def test_advertise_failing_half_way_undoes_what_it_did(monkeypatch: pytest.MonkeyPatch) -> None:
    with Host(auto_install=True) as host:
        before = tables.advertised_count()

        def interrupted(*_args: object) -> int:
            raise KeyboardInterrupt  # between WSCInstallNameSpaceEx and the advertise

        monkeypatch.setattr(host.winsock, "WSAAdvertiseProvider", interrupted)
        with pytest.raises(KeyboardInterrupt):
            host.advertise(Refuser())
        monkeypatch.undo()
        assert PID not in host.advertised and tables.advertised_count() == before
        # the GUID was uninstalled: advertising again works
        host.advertise(Refuser())
        with host.open_session() as client:
            assert [r.comment for r in client.lookup("x@example.com")] == ["here"]


def test_advertise_refused_by_the_host_undoes_the_install() -> None:
    with Host(auto_install=True) as host:
        before = tables.advertised_count()
        with pytest.raises(WinsockError) as failed:
            host.advertise(NSPV2_ROUTINE(), PID)  # no entry points: WSAEINVAL
        assert failed.value.code == WSAError.WSAEINVAL
        assert tables.advertised_count() == before
        host.advertise(Refuser())  # not left installed (WSAEALREADY)


def test_same_provider_advertised_from_many_threads_once() -> None:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            with Host(auto_install=True) as host:
                barrier = threading.Barrier(6)
                outcomes: list[str] = []

                def race(
                    host: Host = host,
                    barrier: threading.Barrier = barrier,
                    outcomes: list[str] = outcomes,
                ) -> None:
                    barrier.wait()
                    try:
                        host.advertise(Refuser())
                        outcomes.append("ok")
                    except (ValueError, WinsockError) as exc:
                        outcomes.append(type(exc).__name__)

                workers = [threading.Thread(target=race) for _ in range(6)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                assert outcomes.count("ok") == 1, outcomes
                assert list(host.advertised) == [PID]
    finally:
        sys.setswitchinterval(previous)
