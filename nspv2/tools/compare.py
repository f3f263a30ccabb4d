"""``nspv2 compare A B --scenario FILE``: do two providers look the same to clients?

Each side is ``MODULE:CLASS`` (a Python provider, found as ``nspv2 check``
finds it) or ``--native LIB[:ENTRY]`` (a native provider library, loaded
with :meth:`nspv2.host.NativeProvider.load`), in the order given. Every case
of the scenario (:mod:`nspv2.tools.scenario`, docs/compare.md) runs on a
fresh provider, each side in its own child process under a time limit, the
two sides at once: a side that crashes, hangs or exits is that side's
failure at the step it was in, and the other cases still run. The two
transcripts are then compared step by step; the first difference (case,
step, what A saw, what B saw) is printed with the session ends of its case.

Exit status: 0 when the sides agree on every step of every case, 1 on a
difference or a failure, 2 on a usage error (a bad scenario step, a target
that cannot be found).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EXIT_OK, EXIT_PROBLEMS, UsageError, add_json, emit_json
from .private_catalog import child_environment
from .scenario import (
    Scenario,
    ScenarioError,
    StartError,
    Target,
    load_scenario,
    parse_target,
    run_case,
)

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = [
    "DEFAULT_TIMEOUT",
    "CaseResult",
    "Comparison",
    "Side",
    "compare",
    "first_difference",
]

#: Seconds one side may take for one case (start, every step, teardown).
DEFAULT_TIMEOUT = 60.0
#: How long a side that reported its last record gets to exit before it is killed.
_EXIT_GRACE = 5.0
_TICK = 0.02
_TAIL_LINES = 12

_BOOT = (
    "import sys; sys.path[:] = [p for p in sys.path if p]; import json; "
    "sys.path[:] = json.loads(sys.argv[1]); "
    "from nspv2.tools.compare import child_main; child_main(sys.argv[2])"
)


# -- the child: one side, one case ----------------------------------------------------------


def child_main(spec_json: str) -> None:
    """Run one case against one target; write each record as a JSON line to
    ``out`` (flushed at once), then ``{"done": true}``."""
    spec = json.loads(spec_json)
    target = Target(**spec["target"])
    with open(spec["out"], "a", encoding="utf-8") as out:

        def write(doc: dict[str, Any]) -> None:
            out.write(json.dumps(doc) + "\n")
            out.flush()

        try:
            scenario = load_scenario(spec["scenario"])
            case = scenario.cases[spec["case"]]
            run_case(
                target,
                case,
                write,
                timeout_ms=spec["timeout_ms"],
                started=lambda: write({"started": True}),
            )
        except StartError as exc:
            write({"error": str(exc), "usage": exc.usage, "at": "start"})
        except Exception as exc:
            write({"error": f"{type(exc).__name__}: {exc}", "usage": False})
        write({"done": True})
    sys.stdout.flush()
    # A native provider's threads must not keep the process alive.
    os._exit(0)


# -- the parent ------------------------------------------------------------------------------


@dataclass
class Side:
    """What one side did in one case: its records, and a failure if it had one."""

    records: list[dict[str, Any]] = field(default_factory=list)
    #: Why the side did not finish the case (crash, timeout, exit, error); "" if it did.
    failure: str = ""
    #: The target could not be found or loaded (a usage error for the command).
    usage: bool = False
    #: The failure came before the first step (the provider did not start).
    at_start: bool = False
    #: The last lines the side wrote to stdout/stderr (shown with a failure).
    output: str = ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Running:
    def __init__(
        self, target: Target, scenario: Path, case_index: int, case_steps: list[str], timeout: float
    ) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="nspv2-compare-")
        self.out = Path(self.folder.name) / "records.jsonl"
        self.log = Path(self.folder.name) / "output.txt"
        self.steps = case_steps
        self.timeout = timeout
        spec = {
            "target": target.as_dict(),
            "scenario": str(scenario),
            "case": case_index,
            "out": str(self.out),
            "timeout_ms": int(min(max(timeout / 4, 0.5), 30.0) * 1000),
        }
        self.out.touch()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(sys.path), json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_environment(),  # its host's catalog: its own memory
            )
        self.started = time.monotonic()

    def _kill(self) -> None:
        """Kill the side's process group. Only while its leader is not reaped
        (returncode None): after that the group id may name someone else's."""
        if self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _exited(self) -> bool:
        """Has the leader exited? Not reaped, so its group stays killable."""
        if hasattr(os, "waitid"):
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            return info is not None
        return self.proc.poll() is not None  # pragma: no cover - Windows

    started_provider = False

    def _records(self) -> tuple[list[dict[str, Any]], bool, dict[str, Any] | None]:
        records: list[dict[str, Any]] = []
        done = False
        error = None
        for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if doc.get("done"):
                done = True
            elif doc.get("started"):
                self.started_provider = True
            elif "error" in doc:
                error = doc
            else:
                records.append(doc)
        return records, done, error

    def poll(self) -> bool:
        """True once the side has finished (or was killed)."""
        if self._exited():
            return True
        if time.monotonic() - self.started > self.timeout:
            self._kill()
            self.proc.wait()
            self.timed_out = True
            return True
        return False

    timed_out = False

    def finish(self) -> Side:
        # whatever the provider left running in the side's process group,
        # killed before the leader is reaped (its group id is still ours)
        self._kill()
        self.proc.wait()
        records, done, error = self._records()
        side = Side(records)
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        side.output = "\n".join(tail[-_TAIL_LINES:])
        at = self._where(records)
        side.at_start = not self.started_provider
        if error is not None:
            side.failure = str(error["error"])
            side.usage = bool(error.get("usage"))
            side.at_start = side.at_start or error.get("at") == "start"
        elif self.timed_out:
            side.failure = f"timed out after {self.timeout:g} s {at} (killed)"
        elif self.proc.returncode < 0:
            side.failure = f"killed by {_signal_name(-self.proc.returncode)} {at}"
        elif not done:
            side.failure = f"exited with status {self.proc.returncode} {at}"
        self.folder.cleanup()
        return side

    def _where(self, records: list[dict[str, Any]]) -> str:
        if not self.started_provider:
            return "while starting the provider"
        if records and records[-1].get("step") == "teardown":
            return "after the teardown"
        n = len(records)
        if n < len(self.steps):
            return f"in step {n + 1} ({self.steps[n]})"
        return "in the teardown"


@dataclass
class CaseResult:
    number: int
    title: str
    a: Side
    b: Side
    #: The first difference: step number (or "teardown"/"start"), what was done, what each saw.
    difference: dict[str, Any] | None = None


@dataclass
class Comparison:
    scenario: Scenario
    a: Target
    b: Target
    cases: list[CaseResult]

    @property
    def agree(self) -> bool:
        return all(c.difference is None for c in self.cases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.source,
            "a": self.a.label,
            "b": self.b.label,
            "agree": self.agree,
            "cases": [
                {
                    "case": c.number,
                    "title": c.title,
                    "agree": c.difference is None,
                    "difference": c.difference,
                    "ends": {"a": _session_ends(c.a), "b": _session_ends(c.b)},
                    **({"a_failure": c.a.failure} if c.a.failure else {}),
                    **({"b_failure": c.b.failure} if c.b.failure else {}),
                    "transcripts": {"a": c.a.records, "b": c.b.records},
                }
                for c in self.cases
            ],
        }


def _session_ends(side: Side) -> list[dict[str, Any]]:
    return [
        {"step": r["step"], "do": r["do"], "ends": r["saw"]["ends"]}
        for r in side.records
        if "ends" in r.get("saw", {})
    ]


def _first_path(a: Any, b: Any, path: str = "") -> str:
    """Where two records first differ (``results[1].comment``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return _first_path(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}")
        return path
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return _first_path(x, y, f"{path}[{i}]")
        return f"{path} (length {len(a)} vs {len(b)})"
    return path


_MISSING = "(absent)"


def first_difference(a: Side, b: Side, steps: list[str]) -> dict[str, Any] | None:
    """The first step where the two sides' records differ, or where either
    failed (a failure never counts as agreement, even the same on both)."""
    for ra, rb in zip(a.records, b.records, strict=False):
        if ra["saw"] != rb["saw"]:
            return {
                "step": ra["step"],
                "do": ra["do"],
                "a": ra["saw"],
                "b": rb["saw"],
                "where": _first_path(ra["saw"], rb["saw"]).lstrip("."),
            }
    i = min(len(a.records), len(b.records))
    if not a.failure and not b.failure and len(a.records) == len(b.records):
        return None
    longer = a.records if len(a.records) > i else b.records
    at_start = (a.at_start and bool(a.failure)) or (b.at_start and bool(b.failure))
    if at_start:
        step: Any = "start"
        do = "start the provider"
    elif i < len(longer):
        step, do = longer[i]["step"], longer[i]["do"]
    elif i < len(steps):
        step, do = i + 1, steps[i]
    else:
        step, do = "teardown", "teardown: stop the provider"

    def saw(side: Side) -> dict[str, Any]:
        if at_start:
            return {"failure": side.failure} if side.at_start else {"started": True}
        if len(side.records) > i:
            return dict(side.records[i]["saw"])
        return {"failure": side.failure or "stopped without a record"}

    return {"step": step, "do": do, "a": saw(a), "b": saw(b), "where": ""}


def compare(
    a: Target,
    b: Target,
    scenario_path: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Any = None,
) -> Comparison:
    """Run every case of the scenario on both targets (each case, each side,
    in its own child process) and compare the transcripts."""
    path = Path(scenario_path).resolve()
    scenario = load_scenario(scenario_path)
    results: list[CaseResult] = []
    for index, case in enumerate(scenario.cases):
        if progress is not None:
            progress(f"case {index + 1}/{len(scenario.cases)}: {case.title}")
        steps = [s.text() for s in case.steps]
        sides: list[_Running] = []
        try:
            sides += (_Running(t, path, index, steps, timeout) for t in (a, b))
            while not all(s.poll() for s in sides):
                time.sleep(_TICK)
            side_a, side_b = (s.finish() for s in sides)
        finally:
            for s in sides:  # after finish() these are no-ops
                s._kill()
                s.proc.wait()
                s.folder.cleanup()
        for target, side in ((a, side_a), (b, side_b)):
            if side.usage:
                raise UsageError(f"{target.label}: {side.failure}")
        result = CaseResult(index + 1, case.title, side_a, side_b)
        result.difference = first_difference(side_a, side_b, steps)
        results.append(result)
    return Comparison(scenario, a, b, results)


# -- output ----------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value and "'" not in value:
        return value
    return json.dumps(value)


def saw_lines(saw: dict[str, Any]) -> list[str]:
    """What a side saw, as lines for the report."""
    if "failure" in saw:
        return [f"FAILED: {saw['failure']}"]
    if saw.get("started"):
        return ["started"]
    head: list[str] = []
    if "code" in saw:
        head.append(str(saw["code"]))
    if "asked" in saw:
        asked = saw["asked"]
        asked_text = ", ".join(map(str, asked)) if isinstance(asked, list) else str(asked)
        head.append(f"asked for {asked_text} bytes")
    if "end" in saw:
        head.append(f"End: {saw['end']}")
    if "ends" in saw:
        head.append(f"session end: {saw['ends']}")
    if "host" in saw:
        head.append("host counted " + ", ".join(f"{k}={v}" for k, v in saw["host"].items()))
    results = saw.get("results")
    if results is not None:
        head.append(f"{len(results)} result{'s' if len(results) != 1 else ''}")
    lines = [", ".join(head) if head else "(nothing)"]
    one = [saw["result"]] if "result" in saw else []
    for r in (results or []) + one:
        lines.append(" ".join(f"{k}={_value(v)}" for k, v in r.items()))
    return lines


def print_comparison(cmp: Comparison, out: Any) -> None:
    total = cmp.scenario.step_count
    out.write(f"A: {cmp.a.label}\nB: {cmp.b.label}\n")
    n = len(cmp.scenario.cases)
    out.write(
        f"scenario: {cmp.scenario.source} ({n} case{'s' if n != 1 else ''}, "
        f"{total} step{'s' if total != 1 else ''})\n"
    )
    differing = [c for c in cmp.cases if c.difference is not None]
    if not differing:
        cleanups = rundowns = 0
        for c in cmp.cases:
            for e in _session_ends(c.a):
                for part in str(e["ends"]).split(", "):
                    count, _, what = part.rpartition(" ")
                    n = int(count) if count else 1
                    if what == "Cleanup":
                        cleanups += n
                    elif what == "Rundown":
                        rundowns += n
        out.write(
            f"agree: A and B saw the same at every step of every case "
            f"(session ends: {cleanups} Cleanup, {rundowns} Rundown on each side)\n"
        )
        return
    first = differing[0]
    d = first.difference
    assert d is not None
    step = d["step"]
    where = f"step {step}" if isinstance(step, int) else str(step)
    out.write(f"first difference: case {first.number} ({first.title}), {where}: {d['do']}\n")
    if d.get("where"):
        out.write(f"  differs at: {d['where']}\n")
    for label, saw in (("A saw", d["a"]), ("B saw", d["b"])):
        lines = saw_lines(saw)
        out.write(f"  {label}: {lines[0]}\n")
        for line in lines[1:]:
            out.write(f"    {line}\n")
    for label, side in (("A", first.a), ("B", first.b)):
        ends = _session_ends(side)
        text = "; ".join(
            f"step {e['step']} {e['do']}: {e['ends']}"
            if isinstance(e["step"], int)
            else f"{e['step']}: {e['ends']}"
            for e in ends
        )
        out.write(f"  session ends in case {first.number}, {label}: {text or 'none recorded'}\n")
        if side.failure and side.output:
            out.write(f"  {label}'s last output:\n")
            for line in side.output.splitlines():
                out.write(f"    {line}\n")
    if len(differing) > 1:
        others = ", ".join(
            f"{c.number} (step {c.difference['step']})" for c in differing[1:] if c.difference
        )
        out.write(f"also differ: case {others}\n")


# -- the command -----------------------------------------------------------------------------


class _AddTarget(argparse.Action):
    """Append a target to ``args.targets`` in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        targets = list(getattr(namespace, "targets", None) or [])
        targets.append(parse_target(str(values), native=True))
        namespace.targets = targets


def _targets(args: argparse.Namespace) -> list[Target]:
    """The targets in command-line order.

    argparse parses the options in front of the first positional word, then
    the REMAINDER takes that word and the rest: each round here takes one
    Python target and lets the same parser read the options after it (so
    ``A --native B``, ``--native A B`` and ``A --scenario F B`` all keep A
    first)."""
    targets: list[Target] = list(getattr(args, "targets", None) or [])
    rest: list[str] = list(args.rest)
    parser: argparse.ArgumentParser = args.compare_parser
    while rest:
        word = rest.pop(0)
        if word == "--":
            targets.extend(parse_target(w, native=False) for w in rest)
            break
        targets.append(parse_target(word, native=False))
        args.targets = targets
        args.rest = []
        parser.parse_args(rest, namespace=args)
        targets = list(args.targets)
        rest = list(args.rest)
    return targets


def cmd_compare(args: argparse.Namespace) -> int:
    from .common import Progress

    targets = _targets(args)
    if len(targets) != 2:
        raise UsageError(
            f"give two providers to compare (MODULE:CLASS or --native LIB[:ENTRY]), not {len(targets)}"
        )
    if args.scenario is None:
        raise UsageError("--scenario FILE is required")
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    for t in targets:
        if t.kind == "native" and not Path(t.spec).is_file():
            raise UsageError(f"--native {t.spec}: no such file")
    resolved = [
        Target(t.kind, str(Path(t.spec).resolve()), t.entry) if t.kind == "native" else t
        for t in targets
    ]
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    progress = Progress()
    try:
        cmp = compare(
            resolved[0], resolved[1], args.scenario, timeout=args.timeout, progress=progress
        )
    finally:
        progress.done()
    # report the targets as given
    cmp.a, cmp.b = targets
    cmp.scenario = scenario
    if args.json:
        emit_json(cmp.as_dict())
    else:
        print_comparison(cmp, sys.stdout)
    return EXIT_OK if cmp.agree else EXIT_PROBLEMS


def add_commands(sub: SubParsers) -> None:
    p = sub.add_parser(
        "compare",
        help="run one scenario against two providers and show where clients see a difference",
        description="Run a scenario (docs/compare.md) against two providers, A then B, each "
        "MODULE:CLASS (a Python Provider) or --native LIB[:ENTRY] (a native provider library; "
        "entry point main by default), and print the first step where their clients saw "
        "something different, with the session ends. Each case runs on a fresh provider, each "
        "side in its own child process: a crash, hang or exit is that side's failure. "
        "Exit 1 on a difference or a failure, 0 when they agree.",
    )
    p.add_argument(
        "--native",
        action=_AddTarget,
        dest="targets",
        metavar="LIB[:ENTRY]",
        help="a native provider library as one side (in command-line order with MODULE:CLASS)",
    )
    p.add_argument("--scenario", metavar="FILE", help="the scenario (JSON), required")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="the longest one side may take for one case before its process is killed "
        "(default: %(default)g)",
    )
    add_json(p, "the comparison")
    p.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="MODULE:CLASS",
        help="a Python Provider as one side",
    )
    p.set_defaults(func=cmd_compare, compare_parser=p)
