"""``nspv2 bench``: what the scaffold costs over hand-written ctypes and over C.

Lookup, session and rundown cycles of A, B and C (see
:mod:`nspv2.tools.measure`) on the native driver (one native thread),
QuerySet packing throughput, and a lookup served by a provider process
against the same lookup in-process. ``--instructions`` counts instructions
per cycle under callgrind instead of timing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..host.host import Host
from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.winsock2 import NO_ERROR, NS, WSAError
from .common import (
    DWORD_MAX,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
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
    CYCLES,
    Figure,
    RawBench,
    ScaffoldBench,
    advertise_raw,
    bench_result,
    drive,
    pinning_state,
    pinning_text,
    subject,
)
from .private_catalog import private_catalog

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = [
    "InstructionsUnavailableError",
    "add_commands",
    "count_instructions",
    "packing_throughput",
    "run_bench",
    "served_round_trip",
]


def _three(
    host: Host, provider: type[Provider]
) -> tuple[Provider, RawBench, dict[str, Any], dict[str, int]]:
    """Advertise A (``provider``), B and C on ``host``: (A, B, provider ids, namespaces)."""
    a = provider()
    host.advertise(a)
    spaces = {"A": int(provider.namespace), "B": int(NS.NS_EMAIL), "C": int(NS.NS_EMAIL)}
    raw = RawBench(host.winsock.WSAProviderCompleteAsyncCall, host.winsock.WSASetLastError)
    advertise_raw(host, raw)
    c_id = host.advertise_bench_provider()
    return a, raw, {"A": a.provider_id, "B": raw.provider_id, "C": c_id}, spaces


def _check_outcomes(kind: str, key: str, outcomes: dict[int, int]) -> None:
    bad = {c: n for c, n in outcomes.items() if c not in (NO_ERROR, int(WSAError.WSA_E_NO_MORE))}
    if bad:
        raise RuntimeError(f"benchmark {kind}/{key} saw errors: {bad}")


def run_bench(
    *,
    cycles: int = 20000,
    repeats: int = 7,
    sessions_open: int = 10000,
    provider: type[Provider] = ScaffoldBench,
    name: str = BENCH_NAME,
    served_lookups: int = 0,
    serve_spec: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every benchmark in this process; return the figures.

    ``provider`` is measured as A (the scaffold's bench provider unless
    given); every provider is asked for ``name``. ``same_answers`` compares
    the three only for the bench provider (None for another A).
    ``served_lookups`` (0 skips): see :func:`served_round_trip`, with
    ``serve_spec`` naming ``provider`` for ``nspv2 serve``.
    """
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {
        "mode": "timing",
        "cycles": cycles,
        "repeats": repeats,
        "provider": provider.__qualname__,
        "name": name,
        "cycle_kinds": {},
    }
    with private_catalog(), Host(timeout_ms=5000, auto_install=True) as host:
        out["pinning"] = pinning_state()
        a, raw, providers, spaces = _three(host, provider)
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
                    _check_outcomes(kind, key, outcomes)
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
        out["pinning_after"] = pinning_state()
    out["packing"] = packing_throughput(progress=say)
    if served_lookups:
        out["served"] = served_round_trip(
            lookups=served_lookups,
            repeats=repeats,
            provider=provider,
            spec=serve_spec,
            name=name,
            progress=say,
        )
    return out


#: What the served round trip measures (printed and in the JSON).
SERVED_WHAT = (
    "per lookup (Begin, NextEx: the result, NextEx: WSA_E_NO_MORE, End) made by this "
    "process's Python code on one open client session: 'served' through nspv2.Client on "
    "one connection to nspv2 serve of A in a child process, 'in-process' through a "
    "ClientSession of a Host in this process"
)


def served_round_trip(
    *,
    lookups: int = 2000,
    repeats: int = 7,
    provider: type[Provider] = ScaffoldBench,
    spec: str | None = None,
    name: str = BENCH_NAME,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A lookup served by a provider process against the same lookup in-process.

    ``nspv2 serve SPEC`` (``spec`` names ``provider``; the bench provider
    by default) runs in a child process, as ``nspv2 stress --processes``
    starts it; this process makes ``lookups`` lookups on one
    :class:`nspv2.Client` connection to it, and the same lookups on one
    ClientSession of an in-process :class:`Host`, interleaved per
    repetition (one warm-up, then ``repeats``). Returns the medians per
    lookup and their ratio, or ``{"skipped": reason}`` where serving is
    unavailable."""
    from ..client import Client
    from .stress import Fleet, StressError, start_server

    say = progress or (lambda _t: None)
    out: dict[str, Any] = {"what": SERVED_WHAT, "lookups": lookups, "repeats": repeats}
    if sys.platform == "win32":
        return {**out, "skipped": "serving needs Unix domain sockets (not on Windows)"}
    if spec is None:
        if provider is not ScaffoldBench:
            return {**out, "skipped": "the provider was not given as MODULE:CLASS for nspv2 serve"}
        spec = f"{ScaffoldBench.__module__}:{ScaffoldBench.__qualname__}"
    q = QuerySet(name, provider_id=provider.provider_id, namespace=int(provider.namespace))
    fleet = Fleet()
    folder = Path(tempfile.mkdtemp(prefix="nspv2-bench-"))
    try:
        say("starting nspv2 serve")
        try:
            server, socket, log = start_server(fleet, folder, provider, spec)
        except (StressError, WinsockError, OSError) as exc:
            return {**out, "skipped": f"nspv2 serve could not be started: {exc}"}
        with (
            private_catalog(),
            Host(timeout_ms=5000, auto_install=True) as host,
            Client(socket=socket) as client,
        ):
            host.advertise(provider())
            with host.open_session() as local:
                paths: dict[str, Callable[[], list[QuerySet]]] = {
                    "served": lambda: client.lookup(q),
                    "in_process": lambda: local.lookup(q),
                }
                samples: dict[str, list[float]] = {k: [] for k in paths}
                answers = {k: fn() for k, fn in paths.items()}
                for rep in range(repeats + 1):
                    order = list(paths.items())
                    if rep % 2:
                        order.reverse()
                    for key, fn in order:
                        say(f"lookup round trips {key}, repetition {rep}/{repeats}")
                        t0 = time.perf_counter_ns()
                        for _ in range(lookups):
                            fn()
                        if rep:
                            samples[key].append((time.perf_counter_ns() - t0) / lookups)
        say("stopping nspv2 serve")
        code = fleet.end(server)
        out["server_exit"] = code
        if code != 0:
            out["server_log"] = log.read_text(errors="replace")[-2000:]
    finally:
        fleet.end_all()
        shutil.rmtree(folder, ignore_errors=True)
    figs = {k: Figure(v) for k, v in samples.items()}
    out["results_per_lookup"] = {k: len(v) for k, v in answers.items()}
    out["same_answers"] = answers["served"] == answers["in_process"]
    out.update({k: f.as_dict() for k, f in figs.items()})
    out["served/in_process"] = round(figs["served"].median / figs["in_process"].median, 3)
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


# ---- --instructions: callgrind ----------------------------------------------------


class InstructionsUnavailableError(Exception):
    """``--instructions`` cannot run here (no valgrind); exit 2."""


#: Cycles run before N and 2N, so that first-call work (caches, first
#: thread state) is out of both.
INSTRUCTIONS_WARM = 20
#: The driver's thread function: callgrind counts only inside it (the
#: driver thread's work, provider callbacks included) and writes one dump
#: each time it returns, so one dump per driver run.
DRIVER_THREAD_FUNCTION = "driver_main"


def instructions_child(
    *,
    cycles: int,
    provider: type[Provider] = ScaffoldBench,
    name: str = BENCH_NAME,
) -> dict[str, Any]:
    """The child of :func:`count_instructions` (under callgrind): for each
    cycle kind and each of A, B, C, one driver run of INSTRUCTIONS_WARM
    cycles, then N, then 2N; returns what each driver run was, in order."""
    runs: list[dict[str, Any]] = []
    with private_catalog(), Host(timeout_ms=60000, auto_install=True) as host:
        pinning = pinning_state()
        a, raw, providers, spaces = _three(host, provider)
        for kind in CYCLES:
            for key, pid in providers.items():
                for label, n in (("warm", INSTRUCTIONS_WARM), ("n", cycles), ("2n", 2 * cycles)):
                    print(
                        f"nspv2 bench: callgrind: {kind} cycles, provider {key}, {n} cycles",
                        file=sys.stderr,
                        flush=True,
                    )
                    _, outcomes = drive(host, kind, pid, n, name=name, namespace=spaces[key])
                    _check_outcomes(kind, key, outcomes)
                    runs.append({"kind": kind, "provider": key, "label": label, "cycles": n})
        del a, raw  # the host keeps them until it closes
    return {"runs": runs, "pinning": pinning}


def _dump_total(path: Path) -> int:
    """The instruction count of one callgrind dump ("totals:" or "summary:")."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise InstructionsUnavailableError(f"callgrind dump {path.name} has no totals line")


def count_instructions(
    *,
    cycles: int = 500,
    spec: str | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Instructions per cycle of A, B and C for each cycle kind, counted by
    ``valgrind --tool=callgrind`` in a child ``python -m nspv2 bench``
    (PYTHONHASHSEED=0) that runs each cycle kind N and 2N times per
    provider: (count at 2N - count at N) / N, so start-up and the driver
    run's own set-up cancel. Only the driver thread is counted (from the
    start to the end of its thread function: the host's C code, the
    provider callbacks, ctypes and Python in them). ``spec`` is A as
    MODULE:CLASS (the bench provider if None). Raises
    :class:`InstructionsUnavailableError` without valgrind."""
    say = progress or (lambda _t: None)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise InstructionsUnavailableError(
            "--instructions needs valgrind (callgrind), which is not installed "
            "(Debian/Ubuntu: apt-get install valgrind)"
        )
    folder = Path(tempfile.mkdtemp(prefix="nspv2-callgrind-"))
    try:
        dump = folder / "callgrind.out"
        log = folder / "valgrind.log"
        argv = [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={dump}",
            "--collect-atstart=no",
            f"--toggle-collect={DRIVER_THREAD_FUNCTION}",
            f"--dump-after={DRIVER_THREAD_FUNCTION}",
            f"--log-file={log}",
            sys.executable,
            "-m",
            "nspv2",
            "bench",
            "--instructions-child",
            "--cycles",
            str(cycles),
            *([spec] if spec else []),
            *(["--name", name] if name else []),
        ]
        say(
            f"nspv2 bench: counting instructions under callgrind: {len(CYCLES)} cycle kinds x "
            f"A, B, C x {INSTRUCTIONS_WARM} + {cycles} + {2 * cycles} cycles"
        )
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        started = time.monotonic()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, env=env, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"the bench child under callgrind exited with {proc.returncode}\n{tail}"
            )
        child = json.loads(proc.stdout)
        dumps = sorted(
            (p for p in folder.glob("callgrind.out.*") if p.suffix[1:].isdigit()),
            key=lambda p: int(p.suffix[1:]),
        )
        runs = child["runs"]
        if len(dumps) != len(runs):
            raise RuntimeError(
                f"callgrind wrote {len(dumps)} dumps for {len(runs)} driver runs: the native "
                f"host library must keep the symbol {DRIVER_THREAD_FUNCTION} (not stripped)"
            )
        totals = [_dump_total(p) for p in dumps]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    at: dict[tuple[str, str, str], int] = {
        (r["kind"], r["provider"], r["label"]): t for r, t in zip(runs, totals, strict=True)
    }
    kinds: dict[str, Any] = {}
    for kind in CYCLES:
        row: dict[str, Any] = {}
        for key in "ABC":
            n1, n2 = at[(kind, key, "n")], at[(kind, key, "2n")]
            row[key] = {
                "instructions_per_cycle": round((n2 - n1) / cycles, 1),
                "at_n": n1,
                "at_2n": n2,
            }
        per = {k: row[k]["instructions_per_cycle"] for k in "ABC"}
        row["A/B"] = round(per["A"] / per["B"], 3) if per["B"] > 0 else None
        row["A/C"] = round(per["A"] / per["C"], 3) if per["C"] > 0 else None
        kinds[kind] = row
    return {
        "mode": "instructions",
        "cycles": cycles,
        "warm_up_cycles": INSTRUCTIONS_WARM,
        "counted": f"the driver thread's {DRIVER_THREAD_FUNCTION} (host C code, provider "
        "callbacks, ctypes and Python in them); (instructions at 2N - at N) / N",
        "pinning": child["pinning"],
        "cycle_kinds": kinds,
        "seconds": round(time.monotonic() - started, 1),
    }


def instructions_table(doc: dict[str, Any]) -> str:
    lines = [
        f"nspv2 bench --instructions: instructions per cycle, callgrind, N = {doc['cycles']} "
        f"(count at 2N cycles - count at N) / N, one native driver thread",
        "A = nspv2.Provider, B = hand-written raw ctypes, C = native C provider",
        f"{pinning_text(doc['pinning'])}",
        "",
        f"  {'cycle':<8} {'A':>12} {'B':>12} {'C':>10} {'A/B':>6} {'A/C':>7}",
    ]
    for kind, row in doc["cycle_kinds"].items():
        per = [row[k]["instructions_per_cycle"] for k in "ABC"]
        ab = f"{row['A/B']:.2f}" if row["A/B"] is not None else "-"
        ac = f"{row['A/C']:.1f}" if row["A/C"] is not None else "-"
        lines.append(
            f"  {kind:<8} {per[0]:>12,.0f} {per[1]:>12,.0f} {per[2]:>10,.0f} {ab:>6} {ac:>7}"
        )
    lines.append("")
    lines.append(f"  callgrind run: {doc['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


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
        pinning_text(doc["pinning"]),
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
    served = doc.get("served")
    if served:
        lines.append("")
        if "skipped" in served:
            lines.append(f"  served lookup: skipped: {served['skipped']}")
        else:
            lines.append(
                f"  lookup round trip, per lookup (Begin, NextEx: the result, NextEx: WSA_E_NO_MORE, End) "
                f"from this process's Python on one open client session; {served['lookups']} lookups "
                f"x {served['repeats']} repetitions:"
            )
            for key, label, how in (
                (
                    "served",
                    "served",
                    "nspv2.Client, one connection to nspv2 serve of A in a child process",
                ),
                ("in_process", "in-process", "a ClientSession of a Host in this process"),
            ):
                f = served[key]
                lines.append(
                    f"    {label:<11} {f['median_ns'] / 1000:9.2f} us ({f['spread']:5.1%})  {how}"
                )
            lines.append(
                f"    served / in-process: {served['served/in_process']:.2f}; same answers: "
                f"{'yes' if served['same_answers'] else 'NO'}"
            )
    lines.append("")
    lines.append("  QuerySet packing (results per second):")
    for n, row in doc["packing"].items():
        lines.append(
            f"    {n:>4} addresses, {row['bytes']:>6} bytes: {row['results_per_second']:>9} packed, {row['results_per_second_new_queryset']:>8} with a new QuerySet each time"
        )
    return "\n".join(lines) + "\n"


def _say_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.instructions_child:
        cls, name = subject(args.provider, args.name)
        doc = instructions_child(cycles=args.cycles or 500, provider=cls, name=name)
        sys.stdout.write(json.dumps(doc) + "\n")
        return EXIT_OK
    if args.instructions:
        if args.repeats_given or args.sessions_open_given or args.served_lookups_given:
            raise UsageError(
                "--instructions counts each cycle kind once under callgrind: "
                "--repeats, --sessions-open and --served-lookups do not apply"
            )
        subject(args.provider, args.name)  # a bad MODULE:CLASS fails here, not in the child
        try:
            doc = count_instructions(
                cycles=args.cycles or 500, spec=args.provider, name=args.name, progress=_say_line
            )
        except InstructionsUnavailableError as exc:
            return fail(args, f"nspv2 bench: {exc}", EXIT_USAGE)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else instructions_table(doc))
        return EXIT_OK
    cls, name = subject(args.provider, args.name)
    progress = Progress()
    doc = run_bench(
        cycles=args.cycles or 20000,
        repeats=args.repeats,
        sessions_open=args.sessions_open,
        provider=cls,
        name=name,
        served_lookups=args.served_lookups,
        serve_spec=args.provider,
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


class _Given(argparse.Action):
    """Store the value and note that the option was given."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_commands(sub: SubParsers) -> None:
    p_bench = sub.add_parser(
        "bench",
        help="benchmark the scaffold against raw ctypes and C",
        description="Lookup, session and rundown cycles on the native driver for A (nspv2.Provider), "
        "B (hand-written raw ctypes) and C (native C); medians of repetitions, ratios A/B and A/C, "
        "QuerySet packing throughput, and a lookup served by nspv2 serve in a child process against "
        "the same lookup in-process. With --instructions: instructions per cycle of A, B and C "
        "counted by valgrind's callgrind instead (deterministic; about a minute).",
    )
    p_bench.set_defaults(repeats_given=False, sessions_open_given=False, served_lookups_given=False)
    p_bench.add_argument(
        "--cycles",
        type=whole(1, DWORD_MAX // C_FACTOR),
        default=None,
        help=f"cycles per repetition (default 20000; C runs {C_FACTOR}x); with --instructions, "
        "N (default 500: each kind runs N and 2N cycles under callgrind)",
    )
    p_bench.add_argument(
        "--repeats",
        type=positive,
        default=7,
        action=_Given,
        help="repetitions after the warm-up (default 7)",
    )
    p_bench.add_argument(
        "--sessions-open",
        type=whole(0, DWORD_MAX),
        default=10000,
        action=_Given,
        help="sessions (each with a lookup) held open for the scaling run (default 10000; 0 skips)",
    )
    p_bench.add_argument(
        "--served-lookups",
        type=whole(0, DWORD_MAX),
        default=2000,
        action=_Given,
        help="lookups per repetition for the served round trip against in-process "
        "(default 2000; 0 skips)",
    )
    p_bench.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per cycle under valgrind --tool=callgrind instead of timing "
        "(exit 2 if valgrind is not installed)",
    )
    # the child --instructions runs under callgrind (one JSON line on stdout)
    p_bench.add_argument("--instructions-child", action="store_true", help=argparse.SUPPRESS)
    add_subject(p_bench)
    add_json(p_bench, "the figures")
    p_bench.set_defaults(func=cmd_bench)
