"""``nspv2 memory``: RSS growth and leaks over many cycles, and over many
native thread exits, through the native host."""

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
from .common import (
    DWORD_MAX,
    EXIT_OK,
    EXIT_PROBLEMS,
    Progress,
    add_json,
    add_subject,
    non_negative,
    positive,
    whole,
)
from .measure import (
    BENCH_NAME,
    ScaffoldBench,
    drive,
    pin_delta,
    pinning_state,
    pinning_text,
    subject,
)
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
    thread_exits: int = 10_000,
    exits_at_once: int = 8,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``cycles`` lookup cycles, then ``cycles`` session+rundown cycles, through
    the host on ``provider`` (A: the scaffold's bench provider unless given);
    then ``thread_exits`` native threads (``exits_at_once`` at a time) each
    making one lookup cycle and ending (0 skips). RSS growth after warm-up
    and what is left open."""
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {
        "cycles": cycles,
        "thread_exits": thread_exits,
        "provider": provider.__qualname__,
        "name": name,
    }
    with private_catalog(), Host(auto_install=True) as host:
        out["pinning"] = {k: v for k, v in pinning_state().items() if k != "stats"}
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
        if thread_exits:  # a fresh instance of the class: A goes first
            host.unadvertise(a)
            out["exits"] = _exits_growth(host, provider, name, thread_exits, exits_at_once, say)
    return out


def _exits_growth(
    host: Host,
    provider: type[Provider],
    name: str,
    exits: int,
    at_once: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """RSS growth over ``exits`` native threads that each make one lookup
    cycle and end (after a warm-up of a tenth of them, at least 200)."""
    from .stress import run_thread_exits

    common = {"service_name": name, "name_space": int(provider.namespace)}
    warm = run_thread_exits(host, provider, max(exits // 10, 200), at_once, common)
    if "skipped" in warm:
        return {"skipped": warm["skipped"]}
    gc.collect()
    before = rss_bytes()
    peak = [before]

    def sample() -> None:
        peak[0] = max(peak[0], rss_bytes())

    pin_before = pinning_state()
    run = run_thread_exits(
        host,
        provider,
        exits,
        at_once,
        common,
        progress=lambda t: say(f"{t}, RSS {rss_bytes() / 2**20:.1f} MiB"),
        after_slice=sample,
    )
    gc.collect()
    after = rss_bytes()
    return {
        "threads": run["threads"],
        "at_once": at_once,
        "exits_per_second": run["exits_per_second"],
        "accounted": run["ok"],
        "rss_before_mib": round(before / 2**20, 2),
        "rss_after_mib": round(after / 2**20, 2),
        "growth_kib": round((after - before) / 1024, 1),
        "peak_growth_kib": round((peak[0] - before) / 1024, 1),
        "pin_delta": pin_delta(pin_before, pinning_state()),
    }


def cmd_memory(args: argparse.Namespace) -> int:
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    doc = run_memory(
        cycles=args.cycles,
        provider=cls,
        name=name,
        thread_exits=args.thread_exits,
        progress=progress,
    )
    progress.done()
    open_total = sum(doc["open"]["provider"].values()) + sum(doc["open"]["host"].values())
    kinds = ["lookup", "rundown"]
    exits = doc.get("exits")
    if exits and "skipped" not in exits:
        kinds.append("exits")
        if not exits["accounted"]:
            open_total += 1  # a thread's session not started and ended once
    over = [k for k in kinds if doc[k]["growth_kib"] > args.max_growth_kib]
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
        if exits and "skipped" in exits:
            print(f"  {'native thread exits':<26} skipped: {exits['skipped']}")
        elif exits:
            label = f"{exits['threads']} thread exits"
            print(
                f"  {label:<26} RSS {exits['rss_before_mib']:.2f} -> {exits['rss_after_mib']:.2f} MiB after warm-up: growth {exits['growth_kib']:.0f} KiB (peak {exits['peak_growth_kib']:.0f} KiB); "
                f"{exits['at_once']} at a time, each one lookup cycle, {exits['exits_per_second']:.0f} threads/s"
                + ("" if exits["accounted"] else ", SESSIONS NOT ACCOUNTED FOR")
            )
            if exits["pin_delta"] is not None:
                d = exits["pin_delta"]
                print(
                    "  "
                    + " " * 26
                    + " pin counters: "
                    + ", ".join(
                        f"{k} {v:+d}" for k, v in d.items() if k.startswith(("pinned", "released"))
                    )
                )
        print(f"  {pinning_text(doc['pinning'])}")
        print(f"  left open: provider {doc['open']['provider']}, host {doc['open']['host']}")
        print(f"  sessions started {doc['sessions']['started']}, ended {doc['sessions']['ended']}")
    return EXIT_OK if not over and open_total == 0 else EXIT_PROBLEMS


def add_commands(sub: SubParsers) -> None:
    p_memory = sub.add_parser(
        "memory",
        help="RSS growth and leaks over many cycles",
        description="Run CYCLES lookup cycles and CYCLES session+rundown cycles through the native host, then "
        "--thread-exits native threads each making one lookup cycle and ending; "
        "report RSS growth after warm-up and what is left open. Exit 1 if growth exceeds the limit or anything is open.",
    )
    p_memory.add_argument(
        "--cycles", type=positive, default=1_000_000, help="cycles of each kind (default 1000000)"
    )
    p_memory.add_argument(
        "--thread-exits",
        type=whole(0, DWORD_MAX),
        default=10_000,
        metavar="N",
        help="native threads that each make one lookup cycle and end, 8 at a time (default 10000; 0 skips)",
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
