"""Thread-state pinning (nspv2.host.pinning, native_stub/src/pin.c) on the
real path: a Python provider called by the native driver's threads through
the host's C function pointers.

Pinned, a native thread keeps one Python thread state across all its
callbacks (a ``threading.local`` value survives from one callback to the
next); with ``NSPV2_NO_PINNING=1`` every callback gets a fresh one. Thread
exits release their state (10,000 of them without RSS growth); a program
that exits while native threads still call a Python provider ends cleanly;
a sub-interpreter cannot make a Host.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from nspv2 import Host, Provider, QuerySet, Session
from nspv2.host import pinning
from nspv2.sdk.winsock2 import NS

PID = uuid.UUID("5f1d2c3b-4a59-4e68-9d7c-8b9a0f1e2d3c")


class Counting(Provider):
    """Records, per callback, the native thread and a per-thread-state count."""

    provider_id = PID
    name_space = NS.NS_EMAIL

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.seen: dict[int, list[int]] = {}

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterable[QuerySet]:
        n = getattr(self.local, "n", 0) + 1
        self.local.n = n
        with self.lock:
            self.seen.setdefault(threading.get_native_id(), []).append(n)
        return []


class Tally(Provider):
    """Counts callbacks, and those that found their thread-local value
    set by an earlier callback (no growing record: RSS is measured)."""

    provider_id = PID
    name_space = NS.NS_EMAIL

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.calls = 0
        self.reused = 0

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterable[QuerySet]:
        reused = getattr(self.local, "seen", False)
        self.local.seen = True
        with self.lock:
            self.calls += 1
            self.reused += reused
        return []


@pytest.fixture
def host() -> Iterator[Host]:
    if pinning.status() == "disabled":
        pytest.skip("NSPV2_NO_PINNING is set in this environment")
    with Host(timeout_ms=5000, auto_install=True) as h:
        yield h


def test_installed_at_load(host: Host) -> None:
    assert pinning.status() == "installed"
    st = host.pin_stats()
    assert st["installed"] == 1 and st["stopped"] == 0 and st["in_flight"] == 0


def test_a_driver_thread_keeps_one_thread_state(host: Host) -> None:
    provider = Counting()
    host.advertise(provider)
    before = host.pin_stats()
    result = host.drive(threads=3, cycles=40, provider_id=PID, service_name="x@example.com")
    assert result.cycles_done == 120
    after = host.pin_stats()
    # every callback of a thread ran in one state: its thread-local count
    # went 1, 2, 3, ... across the thread's 40 lookups
    assert len(provider.seen) == 3
    for counts in provider.seen.values():
        assert counts == list(range(1, 41))
    # pinned at the first call, released by the driver thread's detach
    assert after["pinned_total"] - before["pinned_total"] == 3
    assert after["released_detach"] - before["released_detach"] == 3
    assert after["pinned_now"] == before["pinned_now"]
    assert after["in_flight"] == 0 and after["refused_calls"] == 0


def test_a_python_thread_is_never_pinned(host: Host) -> None:
    provider = Counting()
    host.advertise(provider)
    before = host.pin_stats()
    with host.open_session() as client:
        for _ in range(3):
            assert client.lookup("x@example.com") == []
    # the main thread's own state ran the callbacks: its local kept counting
    assert provider.seen == {threading.get_native_id(): [1, 2, 3]}
    assert host.pin_stats()["pinned_total"] == before["pinned_total"]


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS read from /proc")
def test_10000_thread_exits_release_their_states(host: Host) -> None:
    if "thread_exits" not in inspect.signature(Host.drive).parameters:
        pytest.skip("this nspv2 has no nspv2_driver_thread_exits (Host.drive(thread_exits=))")
    provider = Tally()
    host.advertise(provider)

    def exits(n: int) -> None:
        result = host.drive(
            threads=8, cycles=1, thread_exits=n, provider_id=PID, service_name="x@example.com"
        )
        assert result.cycles_done == n

    exits(1000)  # warm-up: allocator pools, the catalog, the provider's tables
    before, rss_before = host.pin_stats(), _rss_kib()
    exits(10_000)
    rss_after, after = _rss_kib(), host.pin_stats()
    # each thread: pinned at its first callback, released by the exit hook
    assert after["pinned_total"] - before["pinned_total"] == 10_000
    assert after["released_exit"] - before["released_exit"] == 10_000
    assert after["pinned_now"] == before["pinned_now"]
    assert rss_after - rss_before < 1024, f"RSS grew {rss_after - rss_before} KiB"
    # one lookup per thread, each in its thread's own fresh state
    assert provider.calls == 11_000 and provider.reused == 0


def _run(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    return proc.stdout


PROVIDER = f"""
    import threading, uuid
    from nspv2 import Host, Provider
    from nspv2.host import pinning
    from nspv2.sdk.winsock2 import NS

    class Counting(Provider):
        provider_id = uuid.UUID("{PID}")
        name_space = NS.NS_EMAIL

        def __init__(self):
            self.local = threading.local()
            self.lock = threading.Lock()
            self.seen = {{}}

        def lookup(self, session, restrictions, flags):
            n = getattr(self.local, "n", 0) + 1
            self.local.n = n
            with self.lock:
                self.seen.setdefault(threading.get_native_id(), []).append(n)
            return []
"""


def test_no_pinning_gives_the_old_behaviour() -> None:
    out = _run(
        PROVIDER
        + """
    with Host(auto_install=True) as host:
        provider = Counting()
        host.advertise(provider)
        host.drive(threads=2, cycles=20, provider_id=provider.provider_id,
                   service_name="x@example.com")
        st = host.pin_stats()
    counts = sorted(n for c in provider.seen.values() for n in c)
    print(pinning.status(), st["installed"], st["pinned_total"], len(counts), max(counts))
    """,
        env={"NSPV2_NO_PINNING": "1"},
    )
    # a fresh thread state for every callback: the thread-local count never
    # gets past 1
    assert out.split() == ["disabled", "0", "0", "40", "1"]


def test_exit_while_native_threads_call_a_python_provider() -> None:
    """The main thread returns while 4 native driver threads keep calling a
    Python provider: atexit closes the gate (nspv2_pin_shutdown), the host
    refuses the calls from then on, the interpreter finalizes; the process
    exits 0 in time, no crash, no hang."""
    out = _run(
        """
    import atexit, time
    # registered before nspv2 loads the host: runs after its shutdown handler
    def report():
        time.sleep(0.3)  # the driver threads go on, refused
        st = pinning.stats()
        print("stats", st["stopped"], st["in_flight"], st["refused_calls"] > 0,
              st["left_at_shutdown"] >= 1, flush=True)
    atexit.register(report)
    """
        + PROVIDER
        + """
    host = Host(auto_install=True)
    provider = Counting()
    host.advertise(provider)

    def drive():
        host.drive(threads=4, cycles=10**8, provider_id=provider.provider_id,
                   service_name="x@example.com")

    threading.Thread(target=drive, daemon=True).start()
    while sum(len(c) for c in list(provider.seen.values())) < 200:
        time.sleep(0.01)
    print("calls seen", pinning.status(), flush=True)
    """,
        timeout=60,
    )
    lines = out.splitlines()
    assert lines[0] == "calls seen installed"
    assert lines[1] == "stats 1 0 True True"


SUBINTERPRETER = """
    import sys, textwrap
    from nspv2.host import Host, pinning
    from nspv2.host.native import load_library
    load_library()
    print("main", pinning.status(), flush=True)
    try:
        import _interpreters as interpreters          # 3.13
        interp = interpreters.create("legacy")
    except ImportError:
        import _xxsubinterpreters as interpreters     # 3.10 - 3.12
        try:
            interp = interpreters.create(isolated=False)  # 3.12: ctypes loads
        except TypeError:
            interp = interpreters.create()            # 3.10, 3.11: shared GIL
    interpreters.run_string(interp, textwrap.dedent('''
        from nspv2.host import Host, pinning
        from nspv2.host.native import load_library
        load_library()
        try:
            Host()
        except pinning.SubInterpreterError as exc:
            print("refused", pinning.status(), "|", exc, flush=True)
        else:
            print("not refused", flush=True)
    '''))
    interpreters.destroy(interp)
    Host().close()
    print("main still fine", flush=True)
"""


def test_a_forked_child_does_not_wait_for_its_parents_calls() -> None:
    """fork while a native driver thread is inside a Python provider: the
    child keeps only its own thread's calls, so its exit (atexit:
    nspv2_pin_shutdown) does not wait 5 s for a thread that is not there."""
    out = _run(
        PROVIDER
        + """
    import os, sys, time
    inside = threading.Event()

    class Slow(Counting):
        def lookup(self, session, restrictions, flags):
            inside.set()
            time.sleep(0.5)
            return []

    host = Host(auto_install=True)
    provider = Slow()
    host.advertise(provider)
    threading.Thread(target=lambda: host.drive(threads=1, cycles=4,
        provider_id=provider.provider_id, service_name="x@example.com"),
        daemon=True).start()
    inside.wait(10)
    assert pinning.stats()["in_flight"] == 1
    pid = os.fork()
    if pid == 0:
        st = pinning.stats()
        print("child", st["in_flight"], st["pinned_now"], flush=True)
        sys.exit(0)  # atexit: nspv2_pin_shutdown, which must not wait
    t0 = time.monotonic()
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status), time.monotonic() - t0 < 1.5, flush=True)
    os._exit(0)
    """,
        timeout=60,
    )
    assert "child 0 0" in out, out
    assert "child exit 0 True" in out, out


def test_a_sub_interpreter_cannot_make_a_host() -> None:
    names = ("_interpreters", "_xxsubinterpreters")
    if not any(_importable(n) for n in names):
        pytest.skip(f"no sub-interpreter module ({' or '.join(names)}) in Python {sys.version}")
    out = _run(SUBINTERPRETER)
    lines = out.splitlines()
    assert lines[0] == "main installed"
    assert lines[1].startswith("refused sub-interpreter | ")
    assert "sub-interpreter" in lines[1].split("|", 1)[1]
    assert lines[2] == "main still fine"


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
