"""``nspv2 bench``: what the scaffold costs over hand-written ctypes and over C.

Lookup, session and rundown cycles of A, B and C (see
:mod:`nspv2.tools.measure`) on the native driver (one native thread), and
QuerySet packing throughput.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..host.host import Host
from ..provider.base import Provider
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.winsock2 import NO_ERROR, NS, WSAError
from .common import (
    DWORD_MAX,
    EXIT_OK,
    EXIT_PROBLEMS,
    Progress,
    add_json,
    add_subject,
    positive,
    whole,
)
from .measure import (
    BENCH_NAME,
    CYCLES,
    Figure,
    RawBench,
    ScaffoldBench,
    advertise_raw,
    bench_result,
    drive,
    subject,
)
from .private_catalog import private_catalog

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["add_commands", "packing_throughput", "run_bench"]


def run_bench(
    *,
    cycles: int = 20000,
    repeats: int = 7,
    sessions_open: int = 10000,
    provider: type[Provider] = ScaffoldBench,
    name: str = BENCH_NAME,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every benchmark in this process; return the figures.

    ``provider`` is measured as A (the scaffold's bench provider unless
    given); every provider is asked for ``name``. ``same_answers`` compares
    the three only for the bench provider (None for another A).
    """
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {
        "cycles": cycles,
        "repeats": repeats,
        "provider": provider.__qualname__,
        "name": name,
        "cycle_kinds": {},
    }
    with private_catalog(), Host(timeout_ms=5000, auto_install=True) as host:
        a = provider()
        host.advertise(a)
        spaces = {"A": int(provider.namespace), "B": int(NS.NS_EMAIL), "C": int(NS.NS_EMAIL)}
        raw = RawBench(host.winsock.WSAProviderCompleteAsyncCall, host.winsock.WSASetLastError)
        advertise_raw(host, raw)
        c_id = host.advertise_bench_provider()
        providers = {"A": a.provider_id, "B": raw.provider_id, "C": c_id}
        # the three give the same answer
        with host.open_session() as client:
            answers = {
                k: host.lookup(client, QuerySet(name, provider_id=pid, namespace=spaces[k]))
                for k, pid in providers.items()
            }
        out["same_answers"] = (
            answers["A"] == answers["B"] == answers["C"] == [bench_result(name)]
            if provider is ScaffoldBench
            else None
        )
        out["results_per_lookup"] = {k: len(v) for k, v in answers.items()}
        for kind in CYCLES:
            samples: dict[str, list[float]] = {k: [] for k in providers}
            for rep in range(repeats + 1):  # repetition 0 is the warm-up
                order = list(providers.items())
                order = order[rep % 3 :] + order[: rep % 3]  # rotate who goes first
                for key, pid in order:
                    say(f"{kind} cycle, repetition {rep}/{repeats}, provider {key}")
                    ns, outcomes = drive(
                        host,
                        kind,
                        pid,
                        cycles if key != "C" else cycles * C_FACTOR,
                        name=name,
                        namespace=spaces[key],
                    )
                    bad = {
                        c: n
                        for c, n in outcomes.items()
                        if c not in (NO_ERROR, int(WSAError.WSA_E_NO_MORE))
                    }
                    if bad:
                        raise RuntimeError(f"benchmark {kind}/{key} saw errors: {bad}")
                    if rep:
                        samples[key].append(ns)
            figs = {k: Figure(v) for k, v in samples.items()}
            out["cycle_kinds"][kind] = {
                **{k: f.as_dict() for k, f in figs.items()},
                "A/B": round(figs["A"].median / figs["B"].median, 3),
                "A/C": round(figs["A"].median / figs["C"].median, 3),
            }
        # NextEx cost with many sessions and lookups open
        if sessions_open:
            say(f"opening {sessions_open} sessions with a lookup each")
            how: dict[str, Any] = {"name": name, "namespace": spaces["A"]}
            base = Figure(
                [drive(host, "lookup", a.provider_id, cycles, **how)[0] for _ in range(repeats)]
            )
            held = []
            for _ in range(sessions_open):
                s = host.open_session()
                held.append(
                    (
                        s,
                        host.lookup_begin(
                            s, QuerySet(name, provider_id=a.provider_id, namespace=spaces["A"])
                        ),
                    )
                )
            say(f"lookup cycles with {sessions_open} sessions open")
            loaded = Figure(
                [drive(host, "lookup", a.provider_id, cycles, **how)[0] for _ in range(repeats)]
            )
            open_now = a.registry.open_counts()
            for s, h in held:
                host.lookup_end(h)
                s.close()
            out["many_open"] = {
                "sessions_open": open_now["sessions"],
                "lookups_open": open_now["lookups"],
                "baseline": base.as_dict(),
                "loaded": loaded.as_dict(),
                "loaded/baseline": round(loaded.median / base.median, 3),
            }
        out["open_after"] = {
            "A": a.registry.open_counts(),
            "B": raw.open_counts(),
            "host": host.stats(),
        }
    out["packing"] = packing_throughput(progress=say)
    return out


def packing_throughput(
    sizes: tuple[int, ...] = (1, 16, 256),
    seconds: float = 0.3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Results per second packed by QuerySet.pack_into (image built once), and
    with the image built each time (a new QuerySet per result)."""
    out: dict[str, Any] = {}
    for n in sizes:
        if progress:
            progress(f"packing {n} addresses")
        addrs = tuple(
            CsAddr(
                None,
                SocketAddress.parse(f"192.0.{i // 256}.{i % 256}", 5060)
                if i % 2 == 0
                else SocketAddress.parse(f"2001:db8::{i:x}", 5060),
            )
            for i in range(n)
        )
        q = QuerySet(BENCH_NAME, comment="MISTATUS_ONLINE", cs_addrs=addrs, blob=bytes(32))
        size = q.required_size()
        bufs = [ctypes.create_string_buffer(size + 16) for _ in range(2)]
        addresses = [(ctypes.addressof(b) + 15) & ~15 for b in bufs]
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(200):
                q.pack_into(addresses[count & 1], size)
                count += 1
        warm = count / (time.perf_counter() - t0)
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(20):
                QuerySet(
                    BENCH_NAME, comment="MISTATUS_ONLINE", cs_addrs=addrs, blob=bytes(32)
                ).pack_into(addresses[0], size)
                count += 1
        cold = count / (time.perf_counter() - t0)
        out[str(n)] = {
            "bytes": size,
            "results_per_second": round(warm),
            "results_per_second_new_queryset": round(cold),
        }
    return out


#: C runs this many times more cycles per repetition (it is that much faster).
C_FACTOR = 4
#: Repetitions spreading more than this ((max - min) / median) earn a warning.
SPREAD_LIMIT = 0.10


def spread_warnings(doc: dict[str, Any]) -> list[str]:
    """Every figure whose repetitions spread more than :data:`SPREAD_LIMIT`."""
    out = []
    for kind, row in doc["cycle_kinds"].items():
        for key in "ABC":
            if row[key]["spread"] > SPREAD_LIMIT:
                out.append(f"{kind} {key} {row[key]['spread']:.1%}")
    many = doc.get("many_open")
    if many:
        for key in ("baseline", "loaded"):
            if many[key]["spread"] > SPREAD_LIMIT:
                out.append(f"many-open {key} {many[key]['spread']:.1%}")
    return out


def bench_table(doc: dict[str, Any]) -> str:
    lines = [
        f"nspv2 bench: {doc['cycles']} cycles x {doc['repeats']} repetitions (after a warm-up), one native thread",
        "A = nspv2.Provider, B = hand-written raw ctypes, C = native C provider; per cycle: median (spread = (max-min)/median)",
        "",
        f"  {'cycle':<8} {'A':>22} {'B':>22} {'C':>22} {'A/B':>6} {'A/C':>7}",
    ]
    for kind, row in doc["cycle_kinds"].items():
        cells = [f"{row[k]['median_ns'] / 1000:9.2f} us ({row[k]['spread']:5.1%})" for k in "ABC"]
        lines.append(
            f"  {kind:<8} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22} {row['A/B']:>6.2f} {row['A/C']:>7.1f}"
        )
    lines.append("")
    lines.append(
        "  cycles per second: "
        + "; ".join(
            f"{kind} A {row['A']['cycles_per_second']:.0f}, B {row['B']['cycles_per_second']:.0f}, C {row['C']['cycles_per_second']:.0f}"
            for kind, row in doc["cycle_kinds"].items()
        )
    )
    if doc["same_answers"] is None:
        lines.append(
            f"  A is {doc['provider']}, asked for {doc['name']}: results per lookup "
            + ", ".join(f"{k} {n}" for k, n in doc["results_per_lookup"].items())
        )
    else:
        lines.append(
            f"  the three providers gave the same answer: {'yes' if doc['same_answers'] else 'NO'}"
        )
    many = doc.get("many_open")
    if many:
        lines.append(
            f"  A's lookup cycle with {many['sessions_open']} sessions and {many['lookups_open']} lookups open: "
            f"{many['loaded']['median_ns'] / 1000:.2f} us vs {many['baseline']['median_ns'] / 1000:.2f} us with none "
            f"(ratio {many['loaded/baseline']:.2f})"
        )
    lines.append("")
    lines.append("  QuerySet packing (results per second):")
    for n, row in doc["packing"].items():
        lines.append(
            f"    {n:>4} addresses, {row['bytes']:>6} bytes: {row['results_per_second']:>9} packed, {row['results_per_second_new_queryset']:>8} with a new QuerySet each time"
        )
    return "\n".join(lines) + "\n"


def cmd_bench(args: argparse.Namespace) -> int:
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    doc = run_bench(
        cycles=args.cycles,
        repeats=args.repeats,
        sessions_open=args.sessions_open,
        provider=cls,
        name=name,
        progress=progress,
    )
    progress.done()
    doc["spread_warning"] = spread_warnings(doc)
    if doc["spread_warning"]:
        print(
            f"nspv2 bench: warning: repetitions spread more than {SPREAD_LIMIT:.0%} "
            f"({', '.join(doc['spread_warning'])}); the machine is busy or the run too short, "
            "so the figures are unreliable",
            file=sys.stderr,
        )
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else bench_table(doc))
    return EXIT_PROBLEMS if doc["same_answers"] is False else EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_bench = sub.add_parser(
        "bench",
        help="benchmark the scaffold against raw ctypes and C",
        description="Lookup, session and rundown cycles on the native driver for A (nspv2.Provider), "
        "B (hand-written raw ctypes) and C (native C); medians of repetitions, ratios A/B and A/C, "
        "QuerySet packing throughput.",
    )
    p_bench.add_argument(
        "--cycles",
        type=whole(1, DWORD_MAX // C_FACTOR),
        default=20000,
        help=f"cycles per repetition (default 20000; C runs {C_FACTOR}x)",
    )
    p_bench.add_argument(
        "--repeats", type=positive, default=7, help="repetitions after the warm-up (default 7)"
    )
    p_bench.add_argument(
        "--sessions-open",
        type=whole(0, DWORD_MAX),
        default=10000,
        help="sessions (each with a lookup) held open for the scaling run (default 10000; 0 skips)",
    )
    add_subject(p_bench)
    add_json(p_bench, "the figures")
    p_bench.set_defaults(func=cmd_bench)
