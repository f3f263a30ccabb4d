"""``nspv2 stress``: native threads against Python providers; every outcome accounted for.

Each phase runs in slices (a fraction of a second each) so that Ctrl-C ends
the run between two slices: the figures gathered so far are reported, with
``interrupted`` set.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..host.host import Host
from ..provider.base import Provider
from ..sdk.winsock2 import LUP, NO_ERROR, WSAError, code_name
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Progress,
    add_json,
    add_subject,
    fail,
    positive,
    whole,
)
from .measure import BENCH_NAME, AsyncScaffoldBench, ScaffoldBench, subject

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["MAX_THREADS", "add_commands", "run_stress"]

#: The native driver's limit (nspv2_driver_run refuses more threads).
MAX_THREADS = 1024
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
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Native threads hammering ``provider`` (the scaffold's bench provider
    unless given); every outcome accounted for. Stops early on SIGINT (in
    the main thread) with ``interrupted`` set and the figures so far."""
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
    with _sigint_stops(stop), Host(timeout_ms=10000) as host:
        common = {"service_name": name, "name_space": int(provider.namespace)}
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
        out["host_open"] = {
            k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))
        }
        if any(out["host_open"].values()):
            problems.append("host left something open")
    out["interrupted"] = stop.requested
    out["problems"] = problems
    return out


def _throughput(
    host: Host,
    stop: _Stop,
    provider: type[Provider],
    threads: int,
    cycles: int,
    common: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, float]:
    instance = provider()
    host.advertise(instance)
    try:
        n1 = max(cycles // 4, 100)
        say(f"throughput: 1 thread x {n1 * threads}")
        pid = instance.provider_id
        one = _sliced_drive(host, stop, 1, n1 * threads, provider_id=pid, **common)
        say(f"throughput: {threads} threads x {n1}")
        many = _sliced_drive(host, stop, threads, n1, provider_id=pid, **common)
    finally:
        host.unadvertise(instance)
        instance.close()
    rate1 = one[0] / (one[2] / 1e9) if one[2] else 0.0
    rate_n = many[0] / (many[2] / 1e9) if many[2] else 0.0
    return {
        "1_thread_cycles_per_s": round(rate1, 1),
        f"{threads}_threads_cycles_per_s": round(rate_n, 1),
        "ratio": round(rate_n / rate1, 3) if rate1 else 0.0,
    }


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
        keys = list(t)
        print(
            f"  throughput: 1 thread {t[keys[0]]:.0f} cycles/s, {doc['threads']} threads {t[keys[1]]:.0f} cycles/s (ratio {t['ratio']:.2f})"
        )
    print(f"  host left open: {doc['host_open']}")
    if doc["interrupted"]:
        print("  interrupted: the figures above are partial")


def cmd_stress(args: argparse.Namespace) -> int:
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    started = time.monotonic()
    doc = run_stress(
        threads=args.threads, cycles=args.cycles, provider=cls, name=name, progress=progress
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


def add_commands(sub: SubParsers) -> None:
    p_stress = sub.add_parser(
        "stress",
        help="native threads against Python providers",
        description="Native threads mixing closes and abandons, short buffers retried, LUP_FLUSHPREVIOUS, and a provider "
        "completing from another thread; every session must end once and every outcome be accounted for. "
        "Ctrl-C stops it within a second and prints the figures so far.",
    )
    p_stress.add_argument(
        "--threads",
        type=whole(1, MAX_THREADS),
        default=8,
        help=f"native threads (default 8, at most {MAX_THREADS})",
    )
    p_stress.add_argument(
        "--cycles",
        type=positive,
        default=50_000,
        help="cycles per thread and phase (default 50000)",
    )
    add_subject(p_stress)
    add_json(p_stress, "the figures")
    p_stress.set_defaults(func=cmd_stress)
