"""``nspv2 memory``: RSS growth and leaks over many cycles through the native host."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..host.host import Host
from ..provider.base import Provider
from ..sdk.winsock2 import NO_ERROR, WSAError
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, add_json, add_subject, non_negative, positive
from .measure import BENCH_NAME, ScaffoldBench, drive, subject
from .private_catalog import private_catalog

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["add_commands", "rss_bytes", "run_memory"]


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; elsewhere peak RSS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_memory(
    *,
    cycles: int = 1_000_000,
    chunk: int = 20_000,
    provider: type[Provider] = ScaffoldBench,
    name: str = BENCH_NAME,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``cycles`` lookup cycles, then ``cycles`` session+rundown cycles, through
    the host on ``provider`` (A: the scaffold's bench provider unless given);
    RSS growth after warm-up and what is left open."""
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {"cycles": cycles, "provider": provider.__qualname__, "name": name}
    with private_catalog(), Host(auto_install=True) as host:
        a = provider()
        host.advertise(a)
        how: dict[str, Any] = {"name": name, "namespace": int(provider.namespace)}
        for kind in ("lookup", "rundown"):
            warm = max(min(cycles // 10, 50_000), 1000)
            drive(host, kind, a.provider_id, warm, **how)
            gc.collect()
            before = rss_bytes()
            done = 0
            peak = before
            while done < cycles:
                n = min(chunk, cycles - done)
                _, outcomes = drive(host, kind, a.provider_id, n, **how)
                bad = {
                    c: k
                    for c, k in outcomes.items()
                    if c not in (NO_ERROR, int(WSAError.WSA_E_NO_MORE))
                }
                if bad:
                    raise RuntimeError(f"{kind} cycles saw errors: {bad}")
                done += n
                peak = max(peak, rss_bytes())
                say(f"{kind}: {done}/{cycles} cycles, RSS {rss_bytes() / 2**20:.1f} MiB")
            gc.collect()
            after = rss_bytes()
            out[kind] = {
                "rss_before_mib": round(before / 2**20, 2),
                "rss_after_mib": round(after / 2**20, 2),
                "growth_kib": round((after - before) / 1024, 1),
                "peak_growth_kib": round((peak - before) / 1024, 1),
            }
        out["open"] = {
            "provider": a.registry.open_counts(),
            "host": {k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))},
        }
        out["sessions"] = {
            "started": a.registry.sessions_started,
            "ended": a.registry.sessions_ended,
        }
    return out


def cmd_memory(args: argparse.Namespace) -> int:
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    doc = run_memory(cycles=args.cycles, provider=cls, name=name, progress=progress)
    progress.done()
    open_total = sum(doc["open"]["provider"].values()) + sum(doc["open"]["host"].values())
    over = [k for k in ("lookup", "rundown") if doc[k]["growth_kib"] > args.max_growth_kib]
    doc["verdict"] = {
        "open_total": open_total,
        "over_growth_limit": over,
        "max_growth_kib": args.max_growth_kib,
    }
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(
            f"nspv2 memory: {doc['cycles']} cycles of each kind through the native host (provider A)"
        )
        for k, label in (("lookup", "lookup cycles"), ("rundown", "session + rundown cycles")):
            d = doc[k]
            print(
                f"  {label:<26} RSS {d['rss_before_mib']:.2f} -> {d['rss_after_mib']:.2f} MiB after warm-up: growth {d['growth_kib']:.0f} KiB (peak {d['peak_growth_kib']:.0f} KiB)"
            )
        print(f"  left open: provider {doc['open']['provider']}, host {doc['open']['host']}")
        print(f"  sessions started {doc['sessions']['started']}, ended {doc['sessions']['ended']}")
    return EXIT_OK if not over and open_total == 0 else EXIT_PROBLEMS


def add_commands(sub: SubParsers) -> None:
    p_memory = sub.add_parser(
        "memory",
        help="RSS growth and leaks over many cycles",
        description="Run CYCLES lookup cycles and CYCLES session+rundown cycles through the native host; "
        "report RSS growth after warm-up and what is left open. Exit 1 if growth exceeds the limit or anything is open.",
    )
    p_memory.add_argument(
        "--cycles", type=positive, default=1_000_000, help="cycles of each kind (default 1000000)"
    )
    p_memory.add_argument(
        "--max-growth-kib",
        type=non_negative,
        default=1024.0,
        help="allowed RSS growth per kind (default 1024)",
    )
    add_subject(p_memory)
    add_json(p_memory, "the figures")
    p_memory.set_defaults(func=cmd_memory)
