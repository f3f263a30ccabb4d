"""``nspv2 bench``: what the scaffold costs over hand-written ctypes and over C.

Lookup, session and rundown cycles of A, B and C (see
:mod:`nspv2.tools.measure`) on the native driver (one native thread), and
QuerySet packing throughput.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

from ..host.host import Host
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.winsock2 import NO_ERROR, WSAError
from .measure import (
    BENCH_NAME,
    CYCLES,
    Figure,
    RawBench,
    ScaffoldBench,
    advertise_raw,
    bench_result,
    drive,
)

__all__ = ["packing_throughput", "run_bench"]


def run_bench(
    *,
    cycles: int = 20000,
    repeats: int = 7,
    sessions_open: int = 10000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every benchmark in this process; return the figures."""
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {"cycles": cycles, "repeats": repeats, "cycle_kinds": {}}
    with Host(timeout_ms=5000) as host:
        a = ScaffoldBench()
        host.advertise(a)
        raw = RawBench(host.winsock.WSAProviderCompleteAsyncCall, host.winsock.WSASetLastError)
        advertise_raw(host, raw)
        c_id = host.advertise_bench_provider()
        providers = {"A": a.provider_id, "B": raw.provider_id, "C": c_id}
        # the three give the same answer
        with host.open_session() as client:
            answers = {
                k: host.lookup(client, QuerySet(BENCH_NAME, provider_id=pid))
                for k, pid in providers.items()
            }
        out["same_answers"] = (
            answers["A"] == answers["B"] == answers["C"] == [bench_result(BENCH_NAME)]
        )
        for kind in CYCLES:
            samples: dict[str, list[float]] = {k: [] for k in providers}
            for rep in range(repeats + 1):  # repetition 0 is the warm-up
                order = list(providers.items())
                order = order[rep % 3 :] + order[: rep % 3]  # rotate who goes first
                for key, pid in order:
                    say(f"{kind} cycle, repetition {rep}/{repeats}, provider {key}")
                    ns, outcomes = drive(host, kind, pid, cycles if key != "C" else cycles * 4)
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
            base = Figure(
                [drive(host, "lookup", a.provider_id, cycles)[0] for _ in range(repeats)]
            )
            held = []
            for _ in range(sessions_open):
                s = host.open_session()
                held.append(
                    (s, host.lookup_begin(s, QuerySet(BENCH_NAME, provider_id=a.provider_id)))
                )
            say(f"lookup cycles with {sessions_open} sessions open")
            loaded = Figure(
                [drive(host, "lookup", a.provider_id, cycles)[0] for _ in range(repeats)]
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
