"""``nspv2 check`` runs every rule in its own child process: a provider that
hangs, spins, exits, crashes or forks fails each rule it does that in,
naming what happened, within the time limit; the rules after it still run,
and no process is left behind; Ctrl-C stops it within a second with the
rules finished so far."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2.tools.check import ESCAPED
from nspv2.tools.check_registry import RULE_NAMES
from nspv2.tools.rules import RESTRICTIONS_UNTOUCHED

from .clirun import BROKEN_FILE, OUTSIDE, command

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and /proc are POSIX")

#: The rule running when the provider's first lookup is driven (on the host).
SIZES = "every short buffer gives WSAEFAULT with the exact size; then the full result"
#: The rules that finish before the first lookup is driven.
FIRST = ("optional slots fail with WSAEOPNOTSUPP",)
#: Rules after the first lookup that drive no lookup: they pass, in processes of their own.
LATER = (RESTRICTIONS_UNTOUCHED,)
LIMIT = 1  # --timeout for these runs
#: A process per rule, each up to LIMIT in a hang, plus its start-up on a busy machine.
BOUND = len(RULE_NAMES) * (LIMIT + 1.5) + 6.0


def running(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) process?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def pids_in(path: Path) -> list[int]:
    return [int(w) for w in path.read_text().split()] if path.exists() else []


def gone_soon(pids: list[int], within: float = 2.0) -> list[int]:
    """The pids still running after ``within`` seconds."""
    end = time.monotonic() + within
    while True:
        left = [p for p in pids if running(p)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


class Run:
    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.child: subprocess.Popen[str] | None = None

    def start(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "NSPV2_TEST_PIDS": str(self.pid_file)}
        self.child = subprocess.Popen(
            [*command(), "check", *args],
            cwd=OUTSIDE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return self.child

    def kill_all(self) -> None:
        for pid in pids_in(self.pid_file) + ([self.child.pid] if self.child else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.child is not None:
            self.child.wait(timeout=10)
            for stream in (self.child.stdout, self.child.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path / "pids")
    try:
        yield run
    finally:
        run.kill_all()


def run_bounded(
    run: Run, *args: str, bound: float
) -> tuple[subprocess.Popen[str], str, str, float]:
    start = time.monotonic()
    child = run.start(*args)
    try:
        out, err = child.communicate(timeout=bound + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nspv2 check {' '.join(args)} still running after {bound + 30:.0f} s")
    took = time.monotonic() - start
    assert took < bound, f"took {took:.1f} s, bound {bound:.1f} s"
    return child, out, err, took


CASES = {
    "SleepsInLookup": f"timed out after {LIMIT} s in rule '{SIZES}'",
    "SpinsInLookup": f"timed out after {LIMIT} s in rule '{SIZES}'",
    "ExitsInLookup": f"os._exit(3) called in rule '{SIZES}'",
    "CrashesInLookup": f"killed by SIGSEGV in rule '{SIZES}'",
    "ForksInLookup": f"the provider forked (os.fork) in rule '{SIZES}'",
}


@pytest.mark.parametrize("name, words", sorted(CASES.items()))
def test_a_provider_that_takes_the_process_down_is_a_failed_rule(
    runner: Run, name: str, words: str
) -> None:
    child, out, err, _took = run_bounded(
        runner, f"{BROKEN_FILE}:{name}", "--timeout", str(LIMIT), "--json", bound=BOUND
    )
    assert child.returncode == 1, out + err
    rows = json.loads(out)  # one document: nothing else wrote to stdout (a fork did not)
    rules = {r["rule"]: r for r in rows}
    assert [r["rule"] for r in rows] == list(RULE_NAMES)
    assert rules[SIZES]["status"] == "fail"
    assert any(words in e for e in rules[SIZES]["evidence"]), rules[SIZES]
    for done in FIRST:  # finished before the fault: their results are kept
        assert rules[done]["status"] == "pass", rules[done]
    for later in LATER:  # after the fault: they ran, in processes of their own
        assert rules[later]["status"] == "pass", rules[later]
    # every rule ran: skipped only for its own reason (this provider registers nothing)
    assert not [r for r in rows if r["reason"] and r["reason"].startswith(("not run", "not fin"))]
    pids = pids_in(runner.pid_file)
    assert pids and child.pid not in pids  # the provider ran in another process
    assert gone_soon(pids) == [], f"left running: {pids}"


def test_text_output_names_how_the_provider_process_died(runner: Run) -> None:
    child, out, err, _took = run_bounded(
        runner, f"{BROKEN_FILE}:CrashesInLookup", "--timeout", str(LIMIT), bound=BOUND
    )
    assert child.returncode == 1, out + err
    assert f"FAIL  {SIZES}" in out
    assert "SIGSEGV" in out and "Traceback (most recent call last)" not in err
    assert "failing:" in out.splitlines()[-1]
    # faulthandler's view of where it died: the provider's own frame
    assert "innermost: string_at (" in out and "<- lookup (broken_providers.py:" in out
    # a fault escaped the provider's slots: the processes that died are named
    assert f"FAIL  {ESCAPED}" in out
    assert f"rule '{SIZES}': killed by SIGSEGV" in out
    for later in LATER:
        assert f"pass  {later}" in out


def test_a_fast_provider_is_not_cut_short(runner: Run) -> None:
    child, out, err, _took = run_bounded(
        runner, f"{BROKEN_FILE}:Good", "--timeout", "1", bound=BOUND
    )
    assert child.returncode == 0, out + err
    assert f" of {len(RULE_NAMES)} rules pass" in out and "FAIL" not in out


def test_ctrl_c_ends_check_within_a_second_with_partial_results(runner: Run) -> None:
    child = runner.start(f"{BROKEN_FILE}:SleepsInLookup", "--timeout", "120")
    deadline = time.monotonic() + 30
    while not pids_in(runner.pid_file):  # the provider is asleep in lookup
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the provider's lookup was never reached"
        time.sleep(0.05)
    time.sleep(0.2)
    sent = time.monotonic()
    os.kill(child.pid, signal.SIGINT)
    try:
        out, err = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("nspv2 check still running 10 s after SIGINT")
    took = time.monotonic() - sent
    assert child.returncode == 130, out + err
    assert took < 1.0, f"took {took:.2f} s to stop"
    for done in FIRST:
        assert f"pass  {done}" in out
    assert f"FAIL  {SIZES}" in out and "interrupted" in out
    assert "not run: the check was interrupted" in out  # the rules after it
    assert "interrupted" in err
    pids = pids_in(runner.pid_file)
    assert gone_soon(pids) == [], f"left running: {pids}"
