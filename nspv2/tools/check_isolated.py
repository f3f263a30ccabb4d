"""``nspv2 check`` with every rule in its own child process, under a time limit.

For each rule in order, a child (:mod:`nspv2.tools.check_worker`) loads the
provider afresh (a Python class, or a C library whose entry point advertises
it), runs that one rule and reports each step and the row over a pipe. This
side waits for it with a deadline that starts again at every step; a step is
one part of one rule (for one name, one slot). A child that misses its
deadline, calls ``exit``/``os._exit``, forks, dies of a signal or is stopped
by a sanitizer report fails the rule it was running, saying how (with the
innermost Python frames from faulthandler, or the report's first frames);
the check goes on with the next rule and always prints the whole report.
Ctrl-C stops it with the rules so far. Each child runs in its own process
group (a new session), which is killed when its rule ends, however it ends:
nothing the provider started is left running.

The ESCAPED row is made here from every child: what escaped a Python
provider's slots (the children's guard logs and unraisable exceptions), and
for any provider the children that died of a signal.

The first child also proves the provider loads: if it cannot be loaded
(a usage error, a provider error, no native host) or dies while loading,
the check stops with that error, as ``nspv2 check`` always did.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.native import NativeHostUnavailable
from .check import DEFAULT_TIMEOUT, CheckError, Rule, escaped_rule
from .check_registry import RULE_NAMES, RULES
from .check_target import TargetSpec
from .private_catalog import child_environment

__all__ = ["DEFAULT_TIMEOUT", "IsolatedRun", "run_isolated", "sanitizer_summary"]

#: How long a child that reported "done" gets to exit before it is killed.
_EXIT_GRACE = 2.0
#: How often the wait wakes up (for Ctrl-C and a child that died without EOF).
_TICK = 0.05
#: How many frames of a sanitizer report a failed rule quotes (#0..#3).
_REPORT_FRAMES = 4

# sys.path as the parent has it, without the child's own working folder first
# (a module there must not shadow json or nspv2): then run the worker.
_BOOT = (
    "import sys; sys.path[:] = [p for p in sys.path if p]; import json; "
    "sys.path[:] = json.loads(sys.argv[1]); "
    "from nspv2.tools.check_worker import main; main(sys.argv[2])"
)


@dataclass
class IsolatedRun:
    """The rows (every rule, in order) and whether Ctrl-C stopped the run."""

    rules: list[Rule]
    interrupted: bool = False
    #: The children's tracebacks for errors they reported (shown with --debug).
    traceback: str = ""
    #: Seconds each rule's process took, by rule name.
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _State:
    """What one rule's child said and did."""

    row: Rule | None = None
    rule: str = ""
    what: str = ""
    started: float = 0.0
    done: bool = False
    exit_code: int | None = None
    forks: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def where(self) -> str:
        return f"rule '{self.rule}' ({self.what})" if self.rule else self.what


@dataclass
class _Outcome:
    row: Rule
    #: How the process died of a signal (for ESCAPED), if it did.
    death: str = ""
    escapes: list[str] = field(default_factory=list)
    interrupted: bool = False
    traceback: str = ""


def _seconds(value: float) -> str:
    return f"{value:g}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _fault_frames(path: Path, limit: int = 3) -> list[str]:
    """The innermost frames of the thread faulthandler says was current."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    frames: list[str] = []
    current = False
    for line in text.splitlines():
        if line.startswith("Current thread"):
            current = True
            continue
        if current:
            found = re.match(r'\s+File "(.+)", line (\d+) in (.+)', line)
            if not found:
                break
            frames.append(f"{found[3]} ({Path(found[1]).name}:{found[2]})")
    return frames[:limit]


_SANITIZER = re.compile(
    r"(?:ERROR: (?P<tool>AddressSanitizer|LeakSanitizer|ThreadSanitizer): (?P<what>.*))"
    r"|(?:(?P<where>\S+:\d+(?::\d+)?): runtime error: (?P<ub>.*))"
)
_FRAME = re.compile(r"^\s*#(\d+) 0x[0-9a-fA-F]+(?: in (\S+))?(?: (.*))?$")
#: Frames of a signal being delivered again, above the frame that faulted.
_DELIVERY = re.compile(r"^(?:__pthread_kill\w*|pthread_kill|__GI_raise|raise|gsignal)$")
#: glibc's messages before it aborts on a heap it finds corrupted.
_LIBC = re.compile(r"^(?:\w+\(\): .*|.*double free.*|.*corrupted.*)$")


def _short_place(text: str) -> str:
    """``/path/to/file.c:12:5`` -> ``file.c:12``; ``(/lib/libc.so.6+0x29d90)`` -> ``libc.so.6``."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        return Path(text[1:-1].split("+")[0]).name
    found = re.match(r"(.*?):(\d+)(?::\d+)?$", text)
    if found:
        return f"{Path(found[1]).name}:{found[2]}"
    return Path(text).name if "/" in text else text


def sanitizer_summary(stderr: str) -> str | None:
    """The first sanitizer report in ``stderr``, in one line with its first
    frames (#0..#3): ``AddressSanitizer: attempting double-free ...; #0 free
    (libasan.so.8) <- #1 end (broken_provider.c:88) ...``; None without one."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        found = _SANITIZER.search(line)
        if not found:
            continue
        if found["tool"]:
            what = re.sub(r" on (?:unknown )?address 0x[0-9a-f]+.*", "", found["what"]).strip()
            head = f"{found['tool']}: {what}"
        else:
            head = f"UndefinedBehaviorSanitizer: {found['ub']} at {_short_place(found['where'])}"
        frames: list[str] = []
        for later in lines[index + 1 :]:
            frame = _FRAME.match(later)
            if frame is None:
                if frames:
                    break
                continue
            number, function, place = frame[1], frame[2], frame[3] or ""
            delivery = _DELIVERY.match(function) if function else "libc.so" in place
            if not frames and delivery:
                continue  # a signal re-raised (faulthandler hands it on): not where it struck
            text = f"#{number} {function or '??'}"
            if place:
                text += f" ({_short_place(place)})"
            frames.append(text)
            if len(frames) == _REPORT_FRAMES:
                break
        return head + (f"; {' <- '.join(frames)}" if frames else "")
    return None


def _libc_message(stderr: str) -> str | None:
    """The C library's last word before it aborted (``free(): double free ...``)."""
    found = [line.strip() for line in stderr.splitlines() if _LIBC.match(line.strip())]
    return found[-1] if found else None


def _spawn(
    config: dict[str, Any], env: Mapping[str, str] | None, stderr: Any
) -> subprocess.Popen[bytes]:
    """The worker, its stdout a pipe that carries only the report (it sends
    its own prints, and the provider's, to stderr: a file, relayed after)."""
    posix = os.name == "posix"
    # the worker installs what it advertises in a catalog of its own, never the user's
    env = child_environment(env)
    return subprocess.Popen(
        [sys.executable, "-c", _BOOT, json.dumps(sys.path), json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        start_new_session=posix,
        creationflags=0 if posix else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
    )


def _read_lines(stream: Any, lines: queue.Queue[bytes | None]) -> None:
    """Forward the report line by line; None at the end of it."""
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):  # closed under us after a kill
        pass
    finally:
        lines.put(None)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill the child and everything in its process group, then reap it."""
    if os.name == "posix":
        try:  # the group outlives its leader while members remain; the leader is not reaped yet
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:  # pragma: no cover - Windows
        child.kill()
    child.wait()


def _exited(child: subprocess.Popen[bytes]) -> bool:
    """Has the child exited? (Not reaped: its process group stays killable.)"""
    if hasattr(os, "waitid"):
        try:
            info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None
    return child.poll() is not None  # pragma: no cover - Windows


def _handle(state: _State, line: bytes) -> None:
    event = json.loads(line)
    kind = event["event"]
    if kind == "step":
        state.rule, state.what, state.started = event["rule"], event["what"], time.monotonic()
    elif kind == "rule":
        state.row = Rule.from_dict(event["row"])
    elif kind == "escapes":
        state.escapes = [str(item) for item in event["items"]]
    elif kind == "fork":
        state.forks.append(state.what)
    elif kind == "exit":
        state.exit_code = int(event["code"])
    elif kind == "error":
        state.error = event
    elif kind == "done":
        state.done = True


def _death(state: _State, status: int | None, fault_file: Path, stderr: str) -> tuple[str, str]:
    """How the child ended without finishing, in words; and, if it died of a
    signal or a sanitizer stopped it, that again for the ESCAPED row."""
    where = state.where()
    report = sanitizer_summary(stderr)
    if report is not None:
        return f"{report}, in {where}", report
    if state.exit_code is not None:
        return f"os._exit({state.exit_code}) called in {where}", ""
    if status is not None and status < 0:
        text = f"the provider's process was killed by {_signal_name(-status)} in {where}"
        libc = _libc_message(stderr)
        if libc:
            text += f" (the C library said: {libc})"
        frames = _fault_frames(fault_file)
        text += f"; innermost: {' <- '.join(frames)}" if frames else ""
        return text, f"killed by {_signal_name(-status)}"
    return f"the provider's process exited with status {status} in {where}", ""


def _run_rule(
    spec: TargetSpec,
    name: str,
    *,
    timeout: float,
    say: Callable[[str], None],
    env: Mapping[str, str] | None,
    first: bool,
) -> _Outcome:
    """Run rule ``name`` in a child; its row however the child ended.

    Raises CheckError / NativeHostUnavailable for a provider that cannot be
    loaded when ``first`` (later, that is the rule's failure).
    """
    handle, fault_name = tempfile.mkstemp(prefix="nspv2-check-", suffix=".faults")
    os.close(handle)
    fault_file = Path(fault_name)
    config = {"fault_file": fault_name, "target": spec.as_dict(), "rule": name}
    state = _State(started=time.monotonic())
    interrupted = timed_out = False
    errors = tempfile.TemporaryFile()
    try:
        child = _spawn(config, env, errors)
        lines: queue.Queue[bytes | None] = queue.Queue()
        reader = threading.Thread(
            target=_read_lines, args=(child.stdout, lines), name="nspv2-check-report", daemon=True
        )
        reader.start()
        try:
            while not state.done:
                left = state.started + timeout - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                try:
                    line = lines.get(timeout=min(left, _TICK))
                except queue.Empty:
                    continue
                if line is None:  # the child closed its end: it died, or is dying
                    break
                before = state.what
                _handle(state, line)
                if state.what != before and state.what:
                    say(state.what)
            if not timed_out:  # finished, or dying: let it exit by itself, briefly
                end = time.monotonic() + _EXIT_GRACE
                while not _exited(child) and time.monotonic() < end:
                    time.sleep(_TICK)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            _kill_group(child)
            reader.join(timeout=1.0)
            if child.stdout is not None:
                child.stdout.close()
        status = child.returncode
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
        _relay(stderr)
        traceback = str(state.error["traceback"]) if state.error else ""
        if state.error is not None and state.error["kind"] != "exception":
            kind, message = state.error["kind"], str(state.error["message"])
            if first:
                if kind == "host":
                    raise NativeHostUnavailable(message)
                raise CheckError(message, usage=kind == "usage", child_traceback=traceback)
        death = ""
        if interrupted:
            ended = (
                f"interrupted (Ctrl-C) after "
                f"{_seconds(round(time.monotonic() - state.started, 1))} s in {state.where()}"
            )
        elif timed_out:
            ended = (
                f"timed out after {_seconds(timeout)} s in {state.where()}; "
                "the provider's process was killed"
            )
        elif state.error is not None:
            ended = f"the check stopped in {state.where()}: {state.error['message']}"
        elif not state.done:
            ended, death = _death(state, status, fault_file, stderr)
        else:
            ended = ""
            report = sanitizer_summary(stderr)  # a report the process survived
            if report is not None:
                ended = death = report
        if ended and not state.rule and first and not interrupted:  # still loading the provider
            raise CheckError(ended, usage=False)
        row = state.row or Rule(name)
        if ended and (state.row is None or death):
            row.fail(ended)
        if state.forks:
            times = f" ({len(state.forks)} times in this rule)" if len(state.forks) > 1 else ""
            row.fail(
                f"the provider forked (os.fork) in rule '{name}' ({state.forks[0]}){times}; "
                "each forked process ended at once, before it could go on with the check"
            )
        if death:
            death = f"rule '{name}': {death} ({state.what})"
        return _Outcome(row, death, state.escapes, interrupted, traceback)
    finally:
        errors.close()
        fault_file.unlink(missing_ok=True)


def _relay(stderr: str) -> None:
    """What the child printed to stderr (the provider's prints, a sanitizer
    report), passed on to ours."""
    if stderr:
        sys.stderr.write(stderr)
        sys.stderr.flush()


def run_isolated(
    spec: TargetSpec | str,
    *,
    queries: Sequence[str] = (),
    registrations: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> IsolatedRun:
    """Run ``nspv2 check`` on ``spec``, each rule in its own child process.

    ``spec`` is a :class:`TargetSpec` or a Python provider's ``MODULE:CLASS``
    (then ``queries`` and ``registrations`` apply); ``env`` is the children's
    environment (``--asan`` sets the ASan host and runtime there). Raises
    :class:`CheckError` when the provider cannot be loaded or constructed
    (or its loading hangs or kills the child), and
    :class:`NativeHostUnavailable` when the child has no native host.
    """
    if not timeout > 0:
        raise ValueError("timeout must be more than 0 seconds")
    if isinstance(spec, str):
        spec = TargetSpec(spec, queries=tuple(queries), registrations=tuple(registrations))
    say = progress or (lambda _text: None)
    rows: dict[str, Rule] = {}
    deaths: list[str] = []
    first_seen: dict[str, str] = {}  # what escaped -> the first rule it escaped in
    tracebacks: list[str] = []
    seconds: dict[str, float] = {}
    interrupted = False
    for index, (name, _function) in enumerate(RULES):
        if interrupted:
            row = Rule(name)
            row.skip("not run: the check was interrupted (Ctrl-C)")
            rows[name] = row
            continue
        began = time.monotonic()
        outcome = _run_rule(spec, name, timeout=timeout, say=say, env=env, first=index == 0)
        seconds[name] = round(time.monotonic() - began, 3)
        rows[name] = outcome.row
        for text in outcome.escapes:
            first_seen.setdefault(text, name)
        if outcome.death:
            deaths.append(outcome.death)
        if outcome.traceback:
            tracebacks.append(outcome.traceback)
        interrupted = outcome.interrupted
    escapes = [f"{text} (first in rule '{rule}')" for text, rule in first_seen.items()]
    escaped = escaped_rule(not spec.native, escapes, deaths)
    if interrupted and escaped.passed:
        escaped.skip("not finished: the check was interrupted (Ctrl-C)")
    ordered = [escaped if name == escaped.name else rows[name] for name in RULE_NAMES]
    return IsolatedRun(
        ordered, interrupted=interrupted, traceback="".join(tracebacks), seconds=seconds
    )
