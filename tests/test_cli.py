"""The command-line tool: demo, lookup/register/signout (against a provider
process), check, bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from nspv2.tools.check import run_check
from nspv2.tools.check_registry import RULE_NAMES
from nspv2.tools.rules import INSTALL_BLOB, RACING, ROUND_TRIP

from . import broken_providers as bp
from .clirun import BROKEN_FILE, nspv2_cli
from .served import serving


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return nspv2_cli(*args)


def test_demo_is_deterministic_and_tells_the_story() -> None:
    first, second = cli("demo"), cli("demo")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    out = first.stdout
    for needle in (
        "NSPv2Startup",
        "NSPv2SetServiceEx",
        "RNRSERVICE_REGISTER alice@example.com",
        "*@example.com",
        "WSAEFAULT",
        "WSA_E_NO_MORE",
        "RNRSERVICE_DELETE bob@example.com",
        "WSASERVICE_NOT_FOUND",
        "NSPv2ClientSessionRundown",
        "NSPv2Cleanup",
        "CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR",
        "MSGR_E_NOT_LOGGED_ON",
    ):
        assert needle in out, needle
    # the client's size is the provider's plus the header difference, explained once
    [asked] = {int(w) for w in out.split() if w.isdigit() and f"needs {w} bytes" in out}
    assert out.count("NSPV2_QS_DELTA") == 1
    assert f"needs {asked + 8}" in out and f"the {asked} bytes the provider asked for" in out
    assert " ms " not in out  # no timestamps unless asked
    assert " ms " in cli("demo", "--timestamps").stdout


def test_demo_json() -> None:
    out = cli("demo", "--json")
    doc = json.loads(out.stdout)
    assert {"timeline", "client_results", "directory", "sessions"} <= set(doc)
    slots = {e["entry_point"] for e in doc["timeline"]}
    assert {
        "NSPv2Startup",
        "NSPv2LookupServiceBegin",
        "NSPv2LookupServiceNextEx",
        "NSPv2LookupServiceEnd",
        "NSPv2SetServiceEx",
        "NSPv2ClientSessionRundown",
        "NSPv2Cleanup",
    } <= slots
    reasons = {s["session"]: s["end_reason"] for s in doc["sessions"]}
    assert reasons == {
        "S1": "normal",
        "S2": "normal",
        "S3": "CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR",
    }


def test_lookup_register_signout_against_a_provider_process() -> None:
    # The commands are client processes of `nspv2 serve` (more in test_served_cli.py).
    with serving() as served:
        env = served.env  # NSPV2_SOCKET names the server

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return nspv2_cli(*args, env=env, timeout=60)

        out = run(
            "register", "dave@example.com", "--status", "busy", "--addr", "192.0.2.9:5060",
            "--json", "--once",
        )  # fmt: skip
        [r] = json.loads(out.stdout)
        assert r["comment"] == "MISTATUS_BUSY" and r["addresses"] == ["192.0.2.9:5060"]
        out = run("lookup", "dave@example.com")  # --once closed its session: signed out
        assert out.returncode == 1 and "WSASERVICE_NOT_FOUND" in out.stderr
        out = run("signout", "zed@example.com")
        assert out.returncode == 1 and "WSASERVICE_NOT_FOUND" in out.stdout
        out = run("lookup", "*@example.com", "--flags", "RETURN_NAME|RETURN_COMMENT")
        assert out.returncode == 1 and "WSASERVICE_NOT_FOUND" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["lookup", "x@example.com", "--flags", "RETURN_NOTHING"],
        ["register", "x@example.com", "--status", "sleepy"],
        ["register", "x@example.com", "--addr", "nowhere"],
        ["check", "no_such_module_xyz:Thing"],
        ["check", "nspv2.examples.email:Nope"],
        ["check", "nspv2.examples.email:EMAIL_PROVIDER_ID"],
        ["check", "nspv2.sdk.winsock2"],
        ["check", "missing/file.py"],
        ["layout", "--abi", "sparc"],
        [],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    out = cli(*args)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_provider_fault_in_constructor_exits_1_without_traceback() -> None:
    out = cli("check", f"{BROKEN_FILE}:ExplodingConstructor")
    assert out.returncode == 1
    assert "ExplodingConstructor() raised RuntimeError: cannot start" in out.stderr
    assert "Traceback" not in out.stderr
    debug = cli("--debug", "check", f"{BROKEN_FILE}:ExplodingConstructor")
    assert debug.returncode == 1


def test_help_everywhere() -> None:
    for command in ("demo", "lookup", "register", "signout", "check", "layout"):
        out = cli(command, "--help")
        assert out.returncode == 0 and "usage:" in out.stdout, command


def test_check_passes_the_example() -> None:
    out = cli("check", "nspv2.examples.email:EmailDirectory")
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(RULE_NAMES)
    assert f"{n} of {n} rules pass" in out.stdout
    assert "FAIL" not in out.stdout
    assert out.stderr == ""  # no progress output when piped
    rules = json.loads(cli("check", "nspv2.examples.email:EmailDirectory", "--json").stdout)
    assert all(r["passed"] for r in rules) and [r["rule"] for r in rules] == list(RULE_NAMES)


def test_check_a_file_path() -> None:
    out = cli("check", f"{BROKEN_FILE}:Good")
    assert out.returncode == 0, out.stdout


BROKEN = {
    "RaisesInLookup": "no exception or fault escapes a slot",
    "SetServiceSucceedsWithoutImplementation": "optional slots fail with WSAEOPNOTSUPP",
    "WrongRequiredSize": "every short buffer gives WSAEFAULT with the exact size; then the full result",
    "Overruns": "packed results stay inside the buffer",
    "IgnoresFlushPrevious": "LUP_FLUSHPREVIOUS drops the held result",
    "LosesTheHeldResult": "every short buffer gives WSAEFAULT with the exact size; then the full result",
    "NeverEnds": "the end is WSA_E_NO_MORE",
    "EndAcceptsAnything": "End of an ended handle and NextEx after End give WSA_INVALID_HANDLE",
    "LeaksSessions": "each session ends once; nothing left open after cleanup and after rundown",
    "CleanupFails": "each session ends once; nothing left open after cleanup and after rundown",
}


@pytest.mark.parametrize("name, rule", sorted(BROKEN.items()))
def test_check_names_each_fault(name: str, rule: str) -> None:
    # through the command line: every rule in a process of its own
    out = nspv2_cli("check", f"{BROKEN_FILE}:{name}", "--timeout", "5", "--json", timeout=240)
    assert out.returncode == 1, out.stdout + out.stderr
    rules = {r["rule"]: r for r in json.loads(out.stdout)}
    assert list(rules) == list(RULE_NAMES)
    assert rules[rule]["status"] == "fail", f"{name}: {rule}: {rules[rule]}"
    assert rules[rule]["evidence"]


def test_check_cli_exit_1_lists_failing_rules() -> None:
    out = cli("check", f"{BROKEN_FILE}:Overruns")
    assert out.returncode == 1
    assert "FAIL  packed results stay inside the buffer" in out.stdout
    assert "packed results stay inside the buffer" in out.stdout.splitlines()[-1]


def test_good_provider_passes_everything() -> None:
    rows = run_check(bp.Good)  # in this process
    assert [r.name for r in rows] == list(RULE_NAMES)
    assert not [r for r in rows if r.failed]
    # skipped only what it cannot do: register (no set_service), install a blob
    assert {r.name for r in rows if not r.passed} == {ROUND_TRIP, RACING, INSTALL_BLOB}
