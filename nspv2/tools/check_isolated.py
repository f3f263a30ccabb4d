"""``nspv2 check`` with the provider in a child process, each rule under a time limit.

The child (:mod:`nspv2.tools.check_worker`) reports each step and each
finished row over a pipe. This side waits for it with a deadline that
starts again at every step; a step is one part of one rule (for one name,
one slot). A child that misses its deadline, is interrupted (Ctrl-C), calls
``os._exit``, forks or dies of a signal becomes a failed row for the rule it
was in, saying how; rows already finished keep their results; rules not
reached are SKIPPED with the reason. The child runs in its own process group
(a new session), which is killed whenever the check ends, however it ends:
nothing the provider started is left running.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.native import NativeHostUnavailable
from .check import DEFAULT_TIMEOUT, RULE_NAMES, CheckError, Rule

__all__ = ["DEFAULT_TIMEOUT", "IsolatedRun", "run_isolated"]

#: How long a child that reported "done" gets to exit before it is killed.
_EXIT_GRACE = 2.0
#: How often the wait wakes up (for Ctrl-C and a child that died without EOF).
_TICK = 0.05

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
    #: The child's traceback for an error it reported (shown with --debug).
    traceback: str = ""


@dataclass
class _State:
    rows: dict[str, Rule] = field(default_factory=dict)
    rule: str = ""
    what: str = ""
    started: float = 0.0
    done: bool = False
    exit_code: int | None = None
    forks: list[tuple[str, str]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def where(self) -> str:
        return f"rule '{self.rule}' ({self.what})" if self.rule else self.what


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


def _spawn(config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The worker, its stdout a pipe that carries only the report (it sends
    its own prints, and the provider's, to stderr)."""
    posix = os.name == "posix"
    return subprocess.Popen(
        [sys.executable, "-c", _BOOT, json.dumps(sys.path), json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
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
        row = Rule.from_dict(event["row"])
        state.rows[row.name] = row
    elif kind == "fork":
        state.forks.append((state.rule or RULE_NAMES[1], state.what))
    elif kind == "exit":
        state.exit_code = int(event["code"])
    elif kind == "error":
        state.error = event
    elif kind == "done":
        state.done = True


def _death(state: _State, child: subprocess.Popen[bytes], fault_file: Path) -> str:
    """How the child ended without finishing, in words."""
    where = state.where()
    code = child.returncode
    if state.exit_code is not None:
        return f"os._exit({state.exit_code}) called in {where}"
    if code is not None and code < 0:
        text = f"the provider's process was killed by {_signal_name(-code)} in {where}"
        frames = _fault_frames(fault_file)
        return text + (f"; innermost: {' <- '.join(frames)}" if frames else "")
    return f"the provider's process exited with status {code} in {where}"


def run_isolated(
    spec: str,
    *,
    queries: Sequence[str] = (),
    registrations: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> IsolatedRun:
    """Run ``nspv2 check`` on the provider ``spec`` in a child process.

    Raises :class:`CheckError` when the provider cannot be loaded or
    constructed (or its loading hangs or kills the child), and
    :class:`NativeHostUnavailable` when the child has no native host.
    """
    if not timeout > 0:
        raise ValueError("timeout must be more than 0 seconds")
    say = progress or (lambda _text: None)
    handle, fault_name = tempfile.mkstemp(prefix="nspv2-check-", suffix=".faults")
    os.close(handle)
    fault_file = Path(fault_name)
    config = {
        "fault_file": fault_name,
        "provider": spec,
        "queries": list(queries),
        "registrations": list(registrations),
    }
    state = _State(started=time.monotonic())
    interrupted = timed_out = False
    try:
        child = _spawn(config)
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
        if state.error is not None and state.error["kind"] != "exception":
            kind, message = state.error["kind"], str(state.error["message"])
            if kind == "host":
                raise NativeHostUnavailable(message)
            raise CheckError(
                message, usage=kind == "usage", child_traceback=state.error["traceback"]
            )
        if interrupted:
            ended = f"interrupted (Ctrl-C) after {_seconds(round(time.monotonic() - state.started, 1))} s in {state.where()}"
        elif timed_out:
            ended = f"timed out after {_seconds(timeout)} s in {state.where()}; the provider's process was killed"
        elif state.error is not None:
            ended = f"the check stopped in {state.where()}: {state.error['message']}"
        elif not state.done:
            ended = _death(state, child, fault_file)
        else:
            ended = ""
        if ended and not state.rule:  # still loading the provider
            raise CheckError(ended, usage=False)
        return IsolatedRun(
            _rows(state, ended),
            interrupted=interrupted,
            traceback=str(state.error["traceback"]) if state.error else "",
        )
    finally:
        fault_file.unlink(missing_ok=True)


def _rows(state: _State, ended: str) -> list[Rule]:
    """Every rule in order: finished rows as reported, the one running failed
    with how the check ended, the others skipped."""
    rows: list[Rule] = []
    for name in RULE_NAMES:
        row = state.rows.get(name)
        if row is None:
            row = Rule(name)
            if name == state.rule:
                row.fail(ended)
            else:
                row.skip(f"not finished: the check stopped in rule '{state.rule}'")
        forks = [what for rule, what in state.forks if rule == name]
        if forks:
            times = f" ({len(forks)} times in this rule)" if len(forks) > 1 else ""
            row.fail(
                f"the provider forked (os.fork) in rule '{name}' ({forks[0]}){times}; "
                "each forked process ended at once, before it could go on with the check"
            )
        rows.append(row)
    return rows
