"""``nspv2 stress``: native threads against Python providers; every outcome accounted for.

Each phase runs in slices (a fraction of a second each) so that Ctrl-C ends
the run between two slices: the figures gathered so far are reported, with
``interrupted`` set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client import Client
from ..examples.email import EmailDirectory
from ..host.host import Host
from ..host.native import NativeHostUnavailable
from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.registry import Session
from ..sdk.nsemail import NAPI_PROVIDER_LEVEL, NAPI_PROVIDER_TYPE, InstallationBlob
from ..sdk.winsock2 import LUP, NO_ERROR, WSAError, code_name
from .common import (
    DWORD_MAX,
    EXIT_OK,
    EXIT_PROBLEMS,
    Progress,
    UsageError,
    add_json,
    add_subject,
    fail,
    positive,
    whole,
)
from .measure import (
    BENCH_NAME,
    AsyncScaffoldBench,
    ScaffoldBench,
    pin_delta,
    pinning_state,
    pinning_text,
    subject,
)
from .private_catalog import install_in, private_catalog
from .stress_client import CycleCounts, run_cycles

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = [
    "MAX_PROCESSES",
    "MAX_THREADS",
    "Fleet",
    "StressDirectory",
    "StressError",
    "add_commands",
    "run_process_stress",
    "run_stress",
    "run_thread_exits",
    "start_server",
    "thread_ladder",
]

#: The native driver's limit (nspv2_driver_run refuses more threads).
MAX_THREADS = 1024
#: The most client processes ``--processes`` starts (the server's default
#: max_clients is 64; each process holds one connection at a time).
MAX_PROCESSES = 64
#: How long one slice of a phase should take; Ctrl-C waits at most about this.
SLICE_SECONDS = 0.2
EXIT_INTERRUPTED = 130


class _Stop:
    """Set by SIGINT while a run is in progress (checked between slices)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, _signum: int, _frame: Any) -> None:
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()


@contextmanager
def _sigint_stops(stop: _Stop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _sliced_drive(
    host: Host, stop: _Stop, threads: int, cycles: int, **kw: Any
) -> tuple[int, int, int, dict[int, int]]:
    """``threads`` x ``cycles`` driver cycles in slices; returns (cycles done,
    results, elapsed ns, outcome counts) for what ran before a stop."""
    done_per_thread = cycles_done = results = elapsed = 0
    outcomes: dict[int, int] = {}
    step = min(cycles, 64)
    while done_per_thread < cycles and not stop.requested:
        n = min(step, cycles - done_per_thread)
        r = host.drive(threads=threads, cycles=n, **kw)
        done_per_thread += n
        cycles_done += r.cycles_done
        results += r.results
        elapsed += r.elapsed_ns
        for code, count in r.outcomes().items():
            outcomes[code] = outcomes.get(code, 0) + count
        seconds = r.elapsed_ns / 1e9
        if seconds < SLICE_SECONDS / 2:
            step = min(step * 2, 1 << 20)
        elif seconds > SLICE_SECONDS * 2 and step > 1:
            step //= 2
    return cycles_done, results, elapsed, outcomes


def run_stress(
    *,
    threads: int = 8,
    cycles: int = 50_000,
    provider: type[Provider] = ScaffoldBench,
    name: str = BENCH_NAME,
    thread_exits: int = 10_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Native threads hammering ``provider`` (the scaffold's bench provider
    unless given); every outcome accounted for. Then throughput with 1, 2,
    4, ... ``threads`` threads, and ``thread_exits`` native threads each
    making one cycle and ending (0 skips). Stops early on SIGINT (in the
    main thread) with ``interrupted`` set and the figures so far."""
    say = progress or (lambda _t: None)
    expected = {NO_ERROR, int(WSAError.WSA_E_NO_MORE), int(WSAError.WSAEFAULT)}
    in_thread: type[Provider] = (
        AsyncScaffoldBench
        if provider is ScaffoldBench
        else type(f"{provider.__name__}InThread", (provider,), {"complete_from_thread": True})
    )
    phases: list[tuple[str, type[Provider], dict[str, Any]]] = [
        (
            "close and abandon, short buffers grown on WSAEFAULT",
            provider,
            {"abandon_every": 3, "buffer_size": 64, "grow_on_efault": True},
        ),
        (
            "LUP_FLUSHPREVIOUS on every NextEx after a short buffer",
            provider,
            {
                "abandon_every": 5,
                "buffer_size": 64,
                "grow_on_efault": True,
                "control_flags": int(LUP.LUP_RETURN_ALL | LUP.LUP_FLUSHPREVIOUS),
            },
        ),
        ("completion from another thread", in_thread, {"abandon_every": 2}),
    ]
    out: dict[str, Any] = {
        "threads": threads,
        "cycles_per_thread": cycles,
        "provider": provider.__qualname__,
        "name": name,
        "phases": [],
        "interrupted": False,
    }
    problems: list[str] = []
    stop = _Stop()
    with (
        _sigint_stops(stop),
        private_catalog(),
        Host(timeout_ms=10000, auto_install=True) as host,
    ):
        common = {"service_name": name, "name_space": int(provider.namespace)}
        pin_before = pinning_state()
        out["pinning"] = {k: v for k, v in pin_before.items() if k != "stats"}
        for title, cls, opts in phases:
            if stop.requested:
                break
            instance = cls()
            host.advertise(instance)
            say(f"{title}: {threads} x {cycles}")
            kw: dict[str, Any] = {"buffer_size": 1024, "control_flags": int(LUP.LUP_RETURN_ALL)}
            kw.update(opts)
            done, results, elapsed, codes = _sliced_drive(
                host, stop, threads, cycles, provider_id=instance.provider_id, **common, **kw
            )
            host.unadvertise(instance)
            instance.close()
            outcomes = {code_name(c): n for c, n in codes.items()}
            reg = instance.registry
            ok = (
                reg.sessions_started == done
                and reg.sessions_ended == done
                and reg.open_counts() == {"sessions": 0, "lookups": 0}
                and set(codes) <= expected
            )
            phase = {
                "phase": title,
                "cycles": done,
                "results": results,
                "outcomes": outcomes,
                "sessions_started": reg.sessions_started,
                "sessions_ended": reg.sessions_ended,
                "open": reg.open_counts(),
                "seconds": round(elapsed / 1e9, 3),
                "cycles_per_second": round(done / (elapsed / 1e9), 1) if elapsed else 0.0,
                "ok": ok,
                "complete": done == threads * cycles,
            }
            if not ok:
                problems.append(title)
            out["phases"].append(phase)
        # throughput: 1 thread vs `threads` threads on the first phase's workload
        if not stop.requested:
            out["throughput"] = _throughput(host, stop, provider, threads, cycles, common, say)
            if not out["throughput"]["ok"]:
                problems.append("throughput runs")
        if thread_exits and not stop.requested:
            out["thread_exits"] = run_thread_exits(
                host, provider, thread_exits, threads, common, stop=stop, progress=say
            )
            if not out["thread_exits"].get("ok", True):
                problems.append("thread exits")
        out["pinning"]["stats_delta"] = pin_delta(pin_before, pinning_state())
        out["host_open"] = {
            k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))
        }
        if any(out["host_open"].values()):
            problems.append("host left something open")
    out["interrupted"] = stop.requested
    out["problems"] = problems
    return out


def thread_ladder(threads: int) -> list[int]:
    """1, 2, 4, ... below ``threads``, then ``threads``."""
    out, t = [], 1
    while t < threads:
        out.append(t)
        t *= 2
    return [*out, threads]


def _accounted(provider: Provider, done: int, codes: dict[int, int], expected: set[int]) -> bool:
    reg = provider.registry
    return (
        reg.sessions_started == reg.sessions_ended == done
        and reg.open_counts() == {"sessions": 0, "lookups": 0}
        and set(codes) <= expected
    )


def _throughput(
    host: Host,
    stop: _Stop,
    provider: type[Provider],
    threads: int,
    cycles: int,
    common: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The same total of lookup cycles on 1, 2, 4, ... ``threads`` native
    threads (a fresh provider each), cycles per second of each."""
    total = max(cycles // 4, 100) * threads
    ladder: list[dict[str, Any]] = []
    ok = True
    expected = {NO_ERROR, int(WSAError.WSA_E_NO_MORE)}
    for t in thread_ladder(threads):
        if stop.requested:
            break
        instance = provider()
        host.advertise(instance)
        try:
            per = total // t
            say(f"throughput: {t} thread{'s' if t > 1 else ''} x {per}")
            done, _results, elapsed, codes = _sliced_drive(
                host, stop, t, per, provider_id=instance.provider_id, **common
            )
        finally:
            host.unadvertise(instance)
            instance.close()
        accounted = _accounted(instance, done, codes, expected)
        ok &= accounted
        ladder.append(
            {
                "threads": t,
                "cycles": done,
                "seconds": round(elapsed / 1e9, 3),
                "cycles_per_second": round(done / (elapsed / 1e9), 1) if elapsed else 0.0,
                "accounted": accounted,
            }
        )
    rate1 = ladder[0]["cycles_per_second"] if ladder else 0.0
    for row in ladder:
        row["vs_1_thread"] = round(row["cycles_per_second"] / rate1, 3) if rate1 else 0.0
    rate_n = ladder[-1]["cycles_per_second"] if len(ladder) == len(thread_ladder(threads)) else 0.0
    return {
        "total_cycles": total,
        "ladder": ladder,
        "1_thread_cycles_per_s": rate1,
        f"{threads}_threads_cycles_per_s": rate_n,
        "ratio": round(rate_n / rate1, 3) if rate1 else 0.0,
        "ok": ok,
    }


#: Threads a slice of a thread-exits run starts (Ctrl-C waits at most one slice).
EXITS_SLICE = 500


def run_thread_exits(
    host: Host,
    provider: type[Provider],
    exits: int,
    concurrent: int,
    common: dict[str, Any],
    *,
    stop: _Stop | None = None,
    progress: Callable[[str], None] | None = None,
    after_slice: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """``exits`` native threads, at most ``concurrent`` at a time, each making
    one lookup cycle on a fresh ``provider`` and ending as a program's own
    thread would (nspv2_driver_thread_exits); thread exits per second and
    what the pin counters did. ``after_slice`` runs after each slice."""
    say = progress or (lambda _t: None)
    instance = provider()
    host.advertise(instance)
    pin_before = pinning_state()
    done = cycles = elapsed = 0
    codes: dict[int, int] = {}
    try:
        while done < exits and not (stop and stop.requested):
            n = min(EXITS_SLICE, exits - done)
            try:
                r = host.drive(
                    threads=concurrent,
                    cycles=1,
                    thread_exits=n,
                    provider_id=instance.provider_id,
                    **common,
                )
            except NativeHostUnavailable as exc:
                return {"skipped": str(exc)}
            done += n
            cycles += int(r.cycles_done)
            elapsed += r.elapsed_ns
            for code, count in r.outcomes().items():
                codes[code] = codes.get(code, 0) + count
            if after_slice:
                after_slice()
            say(f"thread exits: {done}/{exits}")
    finally:
        host.unadvertise(instance)
        instance.close()
    reg = instance.registry
    return {
        "threads": done,
        "concurrent": concurrent,
        "cycles": cycles,
        "seconds": round(elapsed / 1e9, 3),
        "exits_per_second": round(done / (elapsed / 1e9), 1) if elapsed else 0.0,
        "outcomes": {code_name(c): k for c, k in codes.items()},
        "sessions_started": reg.sessions_started,
        "sessions_ended": reg.sessions_ended,
        "open": reg.open_counts(),
        "pin_delta": pin_delta(pin_before, pinning_state()),
        "ok": cycles == done
        and _accounted(instance, cycles, codes, {NO_ERROR, int(WSAError.WSA_E_NO_MORE)}),
        "complete": done == exits,
    }


# ---- --processes: client processes of a provider process ------------------------------


class StressDirectory(EmailDirectory):
    """The email example, counting the entry points that begin and end
    sessions, so that a run can check them against the server's stats.

    A lookup of :data:`COUNTS_NAME` answers with the counts as JSON in the
    comment (the session asking has had its own Startup by then)."""

    #: The example's domains and that of :data:`COUNTS_NAME` (the catalog
    #: routes a lookup by the name's domain).
    install_blob = InstallationBlob(
        NAPI_PROVIDER_TYPE.ProviderType_Application,
        level=NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
        domains=["example.com", "example.org", "stress.invalid"],
    ).pack()

    def __init__(self) -> None:
        super().__init__()
        self._count_lock = threading.Lock()
        self.counts = {"startups": 0, "cleanups": 0, "rundowns": 0}

    def _count(self, what: str) -> None:
        with self._count_lock:
            self.counts[what] += 1

    def startup(self, session: Session) -> None:
        self._count("startups")
        super().startup(session)

    def cleanup(self, session: Session) -> None:
        self._count("cleanups")
        super().cleanup(session)

    def client_session_rundown(self, session: Session) -> None:
        self._count("rundowns")
        super().client_session_rundown(session)

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        if restrictions.service_instance_name == COUNTS_NAME:
            with self._count_lock:
                text = json.dumps(self.counts)
            return iter((QuerySet(COUNTS_NAME, comment=text),))
        return super().lookup(session, restrictions, flags)


#: The name :class:`StressDirectory` answers with its counts.
COUNTS_NAME = "counts@stress.invalid"
STRESS_PROVIDER = f"{__name__}:StressDirectory"
#: Bounds on waiting for client processes and the server.
READY_SECONDS = 60.0
SERVE_SECONDS = 30.0
SETTLE_SECONDS = 15.0


def _percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_ns:
        return 0.0
    rank = max(1, min(len(sorted_ns), math.ceil(q / 100 * len(sorted_ns))))
    return sorted_ns[rank - 1] / 1e6


def _figures(runs: list[CycleCounts]) -> dict[str, Any]:
    latencies = sorted(n for r in runs for n in r.latencies_ns)
    cycles = len(latencies)
    starts = [r.started_ns for r in runs if r.started_ns]
    ends = [r.finished_ns for r in runs if r.finished_ns]
    seconds = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    errors = [e for r in runs for e in r.errors]
    return {
        "cycles": cycles,
        "closed": sum(r.closed for r in runs),
        "abandoned": sum(r.abandoned for r in runs),
        "errors": len(errors),
        "first_errors": errors[:5],
        "seconds": round(seconds, 3),
        "cycles_per_second": round(cycles / seconds, 1) if seconds else 0.0,
        "latency_ms": {
            "p50": round(_percentile(latencies, 50), 3),
            "p99": round(_percentile(latencies, 99), 3),
            "max": round(latencies[-1] / 1e6, 3) if latencies else 0.0,
        },
    }


def _in_process(
    clients: int, cycles: int, abandon_every: int, say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """The same cycles on the in-process host: ``clients`` Python threads,
    each a stand-in for a client process (ClientSession). Returns the
    figures, the provider's counts and the host's startup/cleanup/rundown
    counts."""
    say(f"in-process host: {clients} threads x {cycles} cycles")
    with private_catalog(), Host(timeout_ms=10000, auto_install=True) as host:
        provider = StressDirectory()
        host.advertise(provider)
        host.reset_stats()
        start = threading.Barrier(clients)
        runs: list[CycleCounts] = [CycleCounts() for _ in range(clients)]

        def one(i: int) -> None:
            start.wait()
            runs[i] = run_cycles(host.open_session, f"t{i}", cycles, abandon_every)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = host.stats()
        host.unadvertise(provider)
        provider.close()
    host_counts = {k: stats[k] for k in ("startups", "cleanups", "rundowns")}
    return _figures(runs), dict(provider.counts), host_counts


class Fleet:
    """The processes a ``--processes`` run started: the server (unless
    ``--socket``) and the clients; each ended by its pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kw)
        self.procs.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return proc.returncode

    def end_all(self) -> None:
        for proc in reversed(self.procs):
            self.end(proc, timeout=2.0)


def start_server(
    fleet: Fleet,
    folder: Path,
    provider: type[Provider] = StressDirectory,
    spec: str = STRESS_PROVIDER,
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``nspv2 serve SPEC`` (``provider`` is the class it names) on a
    socket and catalog of its own in ``folder``; wait until it listens.
    Returns the process, its socket and its log."""
    socket = folder / "serve.sock"
    log = folder / "serve.log"
    # the server's catalog: a file of its own, the provider installed in it
    catalog = folder / "catalog"
    install_in(catalog, provider)
    env = {**os.environ, "NSPV2_RUNTIME_DIR": str(folder / "run"), "NSPV2_CATALOG": str(catalog)}
    env.pop("NSPV2_SOCKET", None)
    with open(log, "wb") as out:
        proc = fleet.start(
            [sys.executable, "-m", "nspv2", "serve", spec, "--socket", str(socket)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=folder,
            env=env,
        )
    wait_listening(proc, socket, log, StressError)
    return proc, socket, log


def wait_listening(
    proc: subprocess.Popen[bytes],
    socket: Path,
    log: Path,
    error: Callable[[str], Exception],
    seconds: float = SERVE_SECONDS,
) -> None:
    """Wait until the ``nspv2 serve`` in ``proc`` answers a monitor on
    ``socket``; raise ``error(message)`` (with its ``log``) if it exits, or
    does not listen within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise error(
                f"nspv2 serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        if socket.exists():
            try:
                Client.monitor(socket).close()
                return
            except WinsockError:
                pass
        if time.monotonic() > deadline:
            raise error(f"nspv2 serve did not listen within {seconds:.0f} s")
        time.sleep(0.05)


class StressError(Exception):
    """A ``--processes`` run could not be made (server or clients failed to start)."""


def _server_stats(socket: Path) -> dict[str, Any]:
    monitor = Client.monitor(socket)
    try:
        status: dict[str, Any] = monitor.status()
    finally:
        monitor.close()
    return status


def _provider_counts(socket: Path) -> dict[str, int]:
    with Client(socket=socket) as client:
        [answer] = client.lookup(COUNTS_NAME)
    counts: dict[str, int] = json.loads(answer.comment or "{}")
    counts["startups"] -= 1  # the asking session's own
    return counts


def _run_clients(
    fleet: Fleet, socket: Path, processes: int, cycles: int, abandon_every: int, cwd: Path
) -> list[CycleCounts]:
    clients = [
        fleet.start(
            [
                sys.executable,
                "-m",
                "nspv2.tools.stress_client",
                str(socket),
                str(i),
                str(cycles),
                str(abandon_every),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
        )
        for i in range(processes)
    ]
    deadline = time.monotonic() + READY_SECONDS
    for proc in clients:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready or proc.stdout.readline() != b"ready\n":
            raise StressError(f"client process {proc.pid} did not get ready")
    for proc in clients:  # go
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    runs: list[CycleCounts] = []
    for proc in clients:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        code = proc.wait()
        if code != 0 or not line:
            raise StressError(f"client process {proc.pid} exited with {code}")
        doc = json.loads(line)
        runs.append(CycleCounts(**doc))
    return runs


def run_process_stress(
    *,
    processes: int = 16,
    cycles: int = 200,
    abandon_every: int = 0,
    socket: Path | None = None,
    compare: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``processes`` client processes x ``cycles`` cycles (docs/reliability.md)
    against a provider process (started here unless ``socket``), then the
    same against the in-process host; every session accounted for."""
    say = progress or (lambda _t: None)
    fleet = Fleet()
    folder = Path(tempfile.mkdtemp(prefix="nspv2-stress-"))
    out: dict[str, Any] = {
        "mode": "processes",
        "processes": processes,
        "cycles_per_process": cycles,
        "abandon_every": abandon_every,
        "cycle": CYCLE,
    }
    checks: list[dict[str, Any]] = []

    def check(what: str, ok: bool, detail: str) -> None:
        checks.append({"check": what, "ok": ok, "detail": detail})

    try:
        server = None
        if socket is None:
            say("starting nspv2 serve")
            server, socket, log = start_server(fleet, folder)
        out["server"] = {"socket": str(socket), "started_here": server is not None}
        before = _server_stats(socket)["stats"]
        say(f"{processes} client processes x {cycles} cycles")
        runs = _run_clients(fleet, socket, processes, cycles, abandon_every, folder)
        served = _figures(runs)
        # Rundowns follow the clients' disconnects: wait (bounded) until
        # every session opened has ended.
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            after = _server_stats(socket)["stats"]
            delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}
            ended = delta["sessions_cleanup"] + delta["sessions_rundown"]
            if ended >= delta["sessions_opened"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out["served"] = served
        out["server"]["stats_delta"] = delta
        total = processes * cycles
        check(
            "sessions opened == cycles",
            delta["sessions_opened"] == total,
            f"server {delta['sessions_opened']}, clients {total}",
        )
        check(
            "cleanup == closed, rundown == abandoned",
            delta["sessions_cleanup"] == served["closed"]
            and delta["sessions_rundown"] == served["abandoned"],
            f"server {delta['sessions_cleanup']} cleanup / {delta['sessions_rundown']} rundown, "
            f"clients {served['closed']} closed / {served['abandoned']} abandoned",
        )
        check(
            "cleanup + rundown == opened",
            ended == delta["sessions_opened"],
            f"{ended} ended of {delta['sessions_opened']} opened",
        )
        if server is not None:
            counts = _provider_counts(socket)
            out["server"]["provider_counts"] = counts
            check(
                "provider: startups == cleanups + rundowns == cycles",
                counts["startups"] == counts["cleanups"] + counts["rundowns"] == total,
                f"{counts['startups']} startups, {counts['cleanups']} cleanups, "
                f"{counts['rundowns']} rundowns",
            )
            say("stopping nspv2 serve")
            code = fleet.end(server)
            check("server exits 0 on SIGTERM", code == 0, f"exit code {code}")
            if code != 0:
                out["server"]["log"] = log.read_text(errors="replace")[-4000:]
        check("no cycle failed", served["errors"] == 0, f"{served['errors']} errors")
        if compare:
            local, provider_counts, host_counts = _in_process(processes, cycles, abandon_every, say)
            out["in_process"] = local
            out["in_process"]["host_counts"] = host_counts
            check(
                "in-process: startups == cleanups + rundowns == cycles",
                host_counts["startups"]
                == host_counts["cleanups"] + host_counts["rundowns"]
                == provider_counts["startups"]
                == total,
                f"host {host_counts}, provider {provider_counts}",
            )
            check("in-process: no cycle failed", local["errors"] == 0, f"{local['errors']} errors")
            rate = local["cycles_per_second"]
            out["ratio"] = round(served["cycles_per_second"] / rate, 3) if rate else None
    finally:
        fleet.end_all()
        shutil.rmtree(folder, ignore_errors=True)
    out["checks"] = checks
    out["problems"] = [c["check"] for c in checks if not c["ok"]]
    return out


CYCLE = (
    "open a client session, RNRSERVICE_REGISTER a name of its own (NSPv2Startup), "
    "look it up (Begin, NextEx, NextEx, End), close (NSPv2Cleanup) or abandon (Rundown)"
)


def print_process_stress(doc: dict[str, Any]) -> None:
    print(
        f"nspv2 stress: {doc['processes']} client processes x {doc['cycles_per_process']} cycles"
        + (f", every {doc['abandon_every']}th abandoned" if doc["abandon_every"] else "")
    )
    print(f"  cycle: {doc['cycle']}")

    def line(title: str, f: dict[str, Any]) -> None:
        lat = f["latency_ms"]
        print(
            f"  {title:<18} {f['cycles']} cycles in {f['seconds']:.2f} s: "
            f"{f['cycles_per_second']:.0f} cycles/s, latency p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms"
        )

    line("provider process", doc["served"])
    if "in_process" in doc:
        line("in-process host", doc["in_process"])
        if doc.get("ratio") is not None:
            print(f"  ratio (provider process / in-process): {doc['ratio']:.2f}")
    for c in doc["checks"]:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")


def print_stress(doc: dict[str, Any]) -> None:
    print(
        f"nspv2 stress: {doc['threads']} native threads x {doc['cycles_per_thread']} cycles per phase"
        + (f" ({doc['provider']}, asking for {doc['name']})" if doc["provider"] else "")
    )
    for p in doc["phases"]:
        mark = "ok  " if p["ok"] else "FAIL"
        print(f"  {mark} {p['phase']}" + ("" if p["complete"] else " (interrupted)"))
        print(
            f"       {p['cycles']} cycles, {p['results']} results, sessions {p['sessions_started']} started / {p['sessions_ended']} ended, open {p['open']}, {p['cycles_per_second']:.0f} cycles/s"
        )
        print(f"       outcomes: {', '.join(f'{k} {v}' for k, v in sorted(p['outcomes'].items()))}")
    t = doc.get("throughput")
    if t:
        print(
            f"  {'ok  ' if t['ok'] else 'FAIL'} throughput, {t['total_cycles']} lookup cycles in all "
            "on each number of native threads:"
        )
        for row in t["ladder"]:
            print(
                f"       {row['threads']:>4} thread{'s' if row['threads'] > 1 else ' '}: "
                f"{row['cycles_per_second']:>9.0f} cycles/s ({row['vs_1_thread']:.2f}x 1 thread)"
                + ("" if row["accounted"] else ", NOT ACCOUNTED FOR")
            )
        print(f"       {doc['threads']} threads / 1 thread: {t['ratio']:.2f}")
    x = doc.get("thread_exits")
    if x and "skipped" in x:
        print(f"  thread exits: skipped: {x['skipped']}")
    elif x:
        print(
            f"  {'ok  ' if x['ok'] else 'FAIL'} thread exits: {x['threads']} native threads "
            f"({x['concurrent']} at a time), each one lookup cycle then ending: "
            f"{x['exits_per_second']:.0f} threads/s"
        )
        print(
            f"       sessions {x['sessions_started']} started / {x['sessions_ended']} ended, "
            f"open {x['open']}; outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(x["outcomes"].items()))
        )
        if x["pin_delta"] is not None:
            print(f"       pin counters over the run: {_pin_counts(x['pin_delta'])}")
    pin = doc.get("pinning")
    if pin:
        print(f"  {pinning_text(pin)}")
    print(f"  host left open: {doc['host_open']}")
    if doc["interrupted"]:
        print("  interrupted: the figures above are partial")


def _pin_counts(delta: dict[str, int]) -> str:
    keys = ("pinned_total", "released_detach", "released_exit", "pinned_now", "refused_calls")
    shown = [f"{k} {delta[k]:+d}" for k in keys if k in delta]
    return ", ".join(shown or [f"{k} {v:+d}" for k, v in delta.items()])


def cmd_stress(args: argparse.Namespace) -> int:
    if args.processes is not None:
        return _cmd_process_stress(args)
    if args.abandon_every is not None or args.socket is not None:
        raise UsageError("--abandon-every and --socket go with --processes")
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    started = time.monotonic()
    doc = run_stress(
        threads=args.threads,
        cycles=args.cycles if args.cycles is not None else 50_000,
        provider=cls,
        name=name,
        thread_exits=args.thread_exits if args.thread_exits is not None else 10_000,
        progress=progress,
    )
    progress.done()
    doc["wall_seconds"] = round(time.monotonic() - started, 3)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print_stress(doc)
    if doc["interrupted"]:
        if args.json:
            return EXIT_INTERRUPTED
        return fail(args, "nspv2: interrupted", EXIT_INTERRUPTED)
    return EXIT_OK if not doc["problems"] else EXIT_PROBLEMS


def _cmd_process_stress(args: argparse.Namespace) -> int:
    if args.provider is not None or args.name is not None:
        raise UsageError(
            "--processes serves its own provider (the email example, counting its sessions); "
            "to stress another provider process, serve it and pass --socket"
        )
    if args.threads_given:
        raise UsageError("--threads and --processes do not go together")
    if args.thread_exits is not None:
        raise UsageError("--thread-exits and --processes do not go together")
    progress = Progress()
    started = time.monotonic()
    try:
        doc = run_process_stress(
            processes=args.processes,
            cycles=args.cycles if args.cycles is not None else 200,
            abandon_every=args.abandon_every or 0,
            socket=Path(args.socket) if args.socket else None,
            progress=progress,
        )
    except (StressError, WinsockError) as exc:
        progress.done()
        return fail(args, f"nspv2 stress: {exc}", EXIT_PROBLEMS)
    progress.done()
    doc["wall_seconds"] = round(time.monotonic() - started, 3)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print_process_stress(doc)
    return EXIT_OK if not doc["problems"] else EXIT_PROBLEMS


class _ThreadsGiven(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.threads_given = True


def add_commands(sub: SubParsers) -> None:
    p_stress = sub.add_parser(
        "stress",
        help="native threads against Python providers; or client processes against a provider process",
        description="Native threads mixing closes and abandons, short buffers retried, LUP_FLUSHPREVIOUS, and a provider "
        "completing from another thread; every session must end once and every outcome be accounted for. "
        "Then the throughput of 1, 2, 4, ... --threads native threads on the same total of lookup cycles, and "
        "--thread-exits native threads each making one cycle and ending (threads per second, pin counters). "
        "Ctrl-C stops it within a second and prints the figures so far. "
        "With --processes N: start nspv2 serve (or use --socket), run N client processes of --cycles cycles each "
        "(open a session, register a name, look it up, close or every --abandon-every'th abandon), report "
        "throughput and latency p50/p99 against the same cycles on the in-process host, and check that the "
        "server's session counts equal the clients'.",
    )
    p_stress.set_defaults(threads_given=False)
    p_stress.add_argument(
        "--threads",
        type=whole(1, MAX_THREADS),
        default=8,
        action=_ThreadsGiven,
        help=f"native threads (default 8, at most {MAX_THREADS})",
    )
    p_stress.add_argument(
        "--cycles",
        type=positive,
        default=None,
        help="cycles per thread and phase (default 50000); with --processes, per process (default 200)",
    )
    p_stress.add_argument(
        "--thread-exits",
        type=whole(0, DWORD_MAX),
        metavar="N",
        default=None,
        help="native threads that each make one lookup cycle and end, --threads at a time "
        "(default 10000; 0 skips)",
    )
    p_stress.add_argument(
        "--processes",
        type=whole(1, MAX_PROCESSES),
        help=f"client processes against a provider process (at most {MAX_PROCESSES})",
    )
    p_stress.add_argument(
        "--abandon-every",
        type=positive,
        metavar="K",
        help="with --processes: every K-th cycle abandons its session (rundown) instead of closing",
    )
    p_stress.add_argument(
        "--socket",
        metavar="PATH",
        help="with --processes: a running provider process to use instead of starting one "
        "(it must accept RNRSERVICE_REGISTER and find the name, as the email example does)",
    )
    add_subject(p_stress)
    add_json(p_stress, "the figures")
    p_stress.set_defaults(func=cmd_stress)
