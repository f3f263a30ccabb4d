"""``nspv2 stress``: native threads against Python providers; every outcome accounted for."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..host.host import Host
from ..sdk.winsock2 import LUP, NO_ERROR, WSAError, code_name
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, add_json, positive
from .measure import BENCH_NAME, AsyncScaffoldBench, ScaffoldBench

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["add_commands", "run_stress"]


def run_stress(
    *,
    threads: int = 8,
    cycles: int = 50_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Native threads hammering Python providers; every outcome accounted for."""
    say = progress or (lambda _t: None)
    expected = {NO_ERROR, int(WSAError.WSA_E_NO_MORE), int(WSAError.WSAEFAULT)}
    phases = [
        (
            "close and abandon, short buffers grown on WSAEFAULT",
            ScaffoldBench,
            {"abandon_every": 3, "buffer_size": 64, "grow_on_efault": True},
        ),
        (
            "LUP_FLUSHPREVIOUS on every NextEx after a short buffer",
            ScaffoldBench,
            {
                "abandon_every": 5,
                "buffer_size": 64,
                "grow_on_efault": True,
                "control_flags": int(LUP.LUP_RETURN_ALL | LUP.LUP_FLUSHPREVIOUS),
            },
        ),
        ("completion from another thread", AsyncScaffoldBench, {"abandon_every": 2}),
    ]
    out: dict[str, Any] = {"threads": threads, "cycles_per_thread": cycles, "phases": []}
    problems: list[str] = []
    with Host(timeout_ms=10000) as host:
        for title, cls, opts in phases:
            provider = cls()
            host.advertise(provider)
            say(f"{title}: {threads} x {cycles}")
            kw: dict[str, Any] = {"buffer_size": 1024, "control_flags": int(LUP.LUP_RETURN_ALL)}
            kw.update(opts)
            r = host.drive(
                threads=threads,
                cycles=cycles,
                provider_id=provider.provider_id,
                service_name=BENCH_NAME,
                **kw,
            )
            outcomes = {code_name(c): n for c, n in r.outcomes().items()}
            reg = provider.registry
            total = threads * cycles
            ok = (
                r.cycles_done == total
                and reg.sessions_started == total
                and reg.sessions_ended == total
                and reg.open_counts() == {"sessions": 0, "lookups": 0}
                and set(r.outcomes()) <= expected
            )
            ended_by: dict[str, int] = {}
            for s in reg.ended:
                by = s.ended_by.value if s.ended_by else "?"
                ended_by[by] = ended_by.get(by, 0) + 1
            phase = {
                "phase": title,
                "cycles": r.cycles_done,
                "results": r.results,
                "outcomes": outcomes,
                "sessions_started": reg.sessions_started,
                "sessions_ended": reg.sessions_ended,
                "open": reg.open_counts(),
                "seconds": round(r.elapsed_ns / 1e9, 3),
                "cycles_per_second": round(total / (r.elapsed_ns / 1e9), 1),
                "ok": ok,
            }
            if not ok:
                problems.append(title)
            out["phases"].append(phase)
            host.unadvertise(provider)
            provider.close()
        # throughput: 1 thread vs `threads` threads on the first phase's workload
        provider = ScaffoldBench()
        host.advertise(provider)
        n1 = max(cycles // 4, 100)
        say(f"throughput: 1 thread x {n1 * threads}")
        one = host.drive(
            threads=1,
            cycles=n1 * threads,
            provider_id=provider.provider_id,
            service_name=BENCH_NAME,
        )
        say(f"throughput: {threads} threads x {n1}")
        many = host.drive(
            threads=threads, cycles=n1, provider_id=provider.provider_id, service_name=BENCH_NAME
        )
        rate1 = n1 * threads / (one.elapsed_ns / 1e9)
        rate_n = n1 * threads / (many.elapsed_ns / 1e9)
        out["throughput"] = {
            "1_thread_cycles_per_s": round(rate1, 1),
            f"{threads}_threads_cycles_per_s": round(rate_n, 1),
            "ratio": round(rate_n / rate1, 3),
        }
        out["host_open"] = {
            k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))
        }
        if any(out["host_open"].values()):
            problems.append("host left something open")
    out["problems"] = problems
    return out


def cmd_stress(args: argparse.Namespace) -> int:
    progress = Progress()
    doc = run_stress(threads=args.threads, cycles=args.cycles, progress=progress)
    progress.done()
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(
            f"nspv2 stress: {doc['threads']} native threads x {doc['cycles_per_thread']} cycles per phase"
        )
        for p in doc["phases"]:
            mark = "ok  " if p["ok"] else "FAIL"
            print(f"  {mark} {p['phase']}")
            print(
                f"       {p['cycles']} cycles, {p['results']} results, sessions {p['sessions_started']} started / {p['sessions_ended']} ended, open {p['open']}, {p['cycles_per_second']:.0f} cycles/s"
            )
            print(
                f"       outcomes: {', '.join(f'{k} {v}' for k, v in sorted(p['outcomes'].items()))}"
            )
        t = doc["throughput"]
        keys = list(t)
        print(
            f"  throughput: 1 thread {t[keys[0]]:.0f} cycles/s, {doc['threads']} threads {t[keys[1]]:.0f} cycles/s (ratio {t['ratio']:.2f})"
        )
        print(f"  host left open: {doc['host_open']}")
    return EXIT_OK if not doc["problems"] else EXIT_PROBLEMS


def add_commands(sub: SubParsers) -> None:
    p_stress = sub.add_parser(
        "stress",
        help="native threads against Python providers",
        description="Native threads mixing closes and abandons, short buffers retried, LUP_FLUSHPREVIOUS, and a provider "
        "completing from another thread; every session must end once and every outcome be accounted for.",
    )
    p_stress.add_argument("--threads", type=positive, default=8, help="native threads (default 8)")
    p_stress.add_argument(
        "--cycles",
        type=positive,
        default=50_000,
        help="cycles per thread and phase (default 50000)",
    )
    add_json(p_stress, "the figures")
    p_stress.set_defaults(func=cmd_stress)
