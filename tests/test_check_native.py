"""``nspv2 check --native``: C providers, built from the installed headers
with only ``nspv2 config`` output, checked through the command line from a
folder outside the checkout, every rule in a process of its own.

The email example's C provider passes every rule, with and without
``--asan``; each break of tests/native/broken_provider.c fails its rule,
the one whose End frees twice by killing the processes of the rules that
end a handle twice, without the checker crashing: the rules after them
still run and the whole report is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nspv2.tools import rules as new
from nspv2.tools.check import END, ENDED_HANDLE, ESCAPED, FLUSH, INSIDE, SIZES
from nspv2.tools.check_registry import RULE_NAMES

from .clirun import OUTSIDE, command
from .nativebuild import NativeLib, broken_provider, email_provider, native_lib

__all__ = ["native_lib"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="native providers are ELF here")

#: What the reference provider is asked (as docs/check.md shows).
REFERENCE_ARGS = (
    "--register",
    "alice@example.com",
    "--query",
    "alice@example.com",
    "--query",
    "*@example.com",
)
#: The longest a whole native check may take here (18 processes, a busy machine).
BOUND = 150.0


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """``nspv2 check ARGS`` from a folder outside the checkout: (exit, stdout, stderr, seconds)."""
    start = time.monotonic()
    done = subprocess.run(
        [*command(), "check", *args],
        cwd=OUTSIDE,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND + 60,
    )
    took = time.monotonic() - start
    assert took < BOUND, f"nspv2 check {' '.join(args)} took {took:.0f} s"
    return done.returncode, done.stdout, done.stderr, took


def rows(out: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(out)
    assert [r["rule"] for r in doc] == list(RULE_NAMES)
    return {r["rule"]: r for r in doc}


def has_asan_runtime() -> bool:
    found = subprocess.run(
        ["cc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    )
    path = Path(found.stdout.strip())
    return found.returncode == 0 and path.is_absolute() and path.exists()


@pytest.fixture(scope="module")
def asan_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a ``--asan`` check: its own cache folder, so the
    ASan host is built from the shipped sources here (once per module)."""
    if not has_asan_runtime():
        pytest.skip("the compiler has no libasan.so: --asan cannot run here")
    return {**os.environ, "NSPV2_CACHE_DIR": str(tmp_path_factory.mktemp("nspv2-cache"))}


def test_the_reference_provider_passes_every_rule(native_lib: NativeLib) -> None:
    lib = email_provider(native_lib)
    code, out, err, _took = check("--native", f"{lib}:main", *REFERENCE_ARGS, "--json")
    assert code == 0, out + err
    found = rows(out)
    assert {r["status"] for r in found.values()} == {"pass"}, out
    assert "no rule's process died of a signal" in found[ESCAPED]["evidence"]
    # its own nspv2_check_queries when no --query is given: the same verdict
    code, out, err, _took = check("--native", str(lib))
    assert code == 0, out + err
    assert f"{len(RULE_NAMES)} of {len(RULE_NAMES)} rules pass" in out
    assert out.startswith(f"nspv2 check native {lib}:main\n")


def test_the_reference_provider_passes_every_rule_under_asan(
    native_lib: NativeLib, asan_env: dict[str, str]
) -> None:
    lib = email_provider(native_lib, asan=True)
    code, out, err, _took = check(
        "--native", str(lib), "--asan", *REFERENCE_ARGS, "--json", env=asan_env
    )
    assert code == 0, out + err
    assert {r["status"] for r in rows(out).values()} == {"pass"}, out
    assert "AddressSanitizer" not in err
    built = list(Path(asan_env["NSPV2_CACHE_DIR"]).glob("asan-host/*/libnspv2host.so"))
    assert len(built) == 1, built  # built once, from the shipped sources, then reused


#: Each break, the rule it fails and words of the evidence.
BREAKS = {
    "BREAK_OVERRUN": (INSIDE, "write(s) past the buffer"),
    "BREAK_WRONG_SIZE": (SIZES, "result missing"),
    "BREAK_NO_COMPLETION": (new.COMPLETED_ONCE, "never completed"),
    "BREAK_DOUBLE_COMPLETION": (new.COMPLETED_ONCE, "completed twice"),
    "BREAK_NO_LAST_ERROR": (new.LAST_ERROR, "SOCKET_ERROR with no last error"),
    "BREAK_END_FREES_TWICE": (ENDED_HANDLE, "killed by SIGABRT"),
    "BREAK_CRASH_IN_NEXT": (SIZES, "killed by SIGSEGV"),
}
#: A sanitizer (CI's ASan run of the suite) reports a crash instead of the signal.
SANITIZED = "AddressSanitizer"


@pytest.mark.parametrize("brk", sorted(BREAKS))
def test_each_broken_provider_fails_its_rule(native_lib: NativeLib, brk: str) -> None:
    rule, words = BREAKS[brk]
    lib = broken_provider(native_lib, brk)
    code, out, err, _took = check("--native", str(lib), "--timeout", "4", "--json")
    assert code == 1, out + err
    found = rows(out)
    assert found[rule]["status"] == "fail", found[rule]
    text = " ".join(found[rule]["evidence"])
    assert words in text or (words.startswith("killed") and SANITIZED in text), text
    if words.startswith("killed"):  # a crash: a fault escaped, the checker went on
        assert found[ESCAPED]["status"] == "fail"
        # no Python traceback of the checker (a crashed child's sanitizer report
        # may name CPython's _Py_DumpTracebackThreads)
        assert "Traceback (most recent call last)" not in err
        for later in (new.RESTRICTIONS_UNTOUCHED, new.INSTALL_BLOB):
            assert found[later]["status"] == "pass", found[later]


def test_a_native_provider_with_a_bad_blob_cannot_install_so_cannot_advertise(
    native_lib: NativeLib,
) -> None:
    """The catalog refuses an NS_EMAIL blob that breaks nsemail.h (WSAEINVAL,
    the C check of nspv2_email_blob_check), so the provider is not installed
    and its WSAAdvertiseProvider fails: check says so instead of checking it."""
    lib = broken_provider(native_lib, "BREAK_BAD_BLOB")
    code, out, err, _took = check("--native", str(lib), "--timeout", "4")
    assert code == 1, out + err
    assert "broken_provider: WSAAdvertiseProvider failed: 10105" in err  # WSAEINVALIDPROVIDER
    assert "without advertising" in err and "Traceback" not in err


def test_end_that_frees_twice_crashes_only_the_rules_that_end_twice(native_lib: NativeLib) -> None:
    lib = broken_provider(native_lib, "BREAK_END_FREES_TWICE")
    code, out, err, _took = check("--native", str(lib), "--timeout", "4")
    assert code == 1, out + err
    # the whole report, each rule once, in order
    marks = [line.split(None, 1) for line in out.splitlines() if line.startswith("  ")]
    reported = [rest for mark, rest in marks if mark in ("pass", "FAIL", "SKIPPED")]
    assert reported == list(RULE_NAMES)
    assert f"FAIL  {ENDED_HANDLE}" in out
    for fine in (SIZES, FLUSH, END, INSIDE):  # one End per lookup: nothing freed twice
        assert f"pass  {fine}" in out
    assert "failing:" in out.splitlines()[-1]


def test_asan_fails_the_rule_with_the_reports_first_frames(
    native_lib: NativeLib, asan_env: dict[str, str]
) -> None:
    lib = broken_provider(native_lib, "BREAK_END_FREES_TWICE", asan=True)
    code, out, err, _took = check("--native", str(lib), "--asan", "--json", env=asan_env)
    assert code == 1, out + err
    found = rows(out)
    [evidence] = found[ENDED_HANDLE]["evidence"]
    assert evidence.startswith(
        "AddressSanitizer: heap-use-after-free; #0 good_end (broken_provider.c:"
    )
    assert " <- #1 " in evidence and " <- #3 " in evidence
    assert f"in rule '{ENDED_HANDLE}'" in evidence
    assert any("AddressSanitizer" in e for e in found[ESCAPED]["evidence"])
    assert "ERROR: AddressSanitizer" in err  # the whole report, passed on


def test_arguments_after_double_dash_reach_the_entry_point(native_lib: NativeLib) -> None:
    lib = email_provider(native_lib)
    # --no-install: it advertises without WSCInstallNameSpaceEx, and check's
    # catalog (the process's own, in memory) does not list it: refused
    code, out, err, _took = check("--native", str(lib), "--", "--no-install")
    assert code == 1, out + err
    assert "email_provider: WSAAdvertiseProvider failed: 10105" in err  # WSAEINVALIDPROVIDER
    # an argument it refuses: main returns early, a provider error (exit 1, one line)
    code, out, err, _took = check("--native", f"{lib}:main", "--", "--bogus")
    assert code == 1, out + err
    assert "email_provider: unknown argument --bogus" in err
    assert "without advertising" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--native", "no/such/lib.so"], "no such file"),
        (["nspv2.examples.email:EmailDirectory", "--", "x"], "after -- are for a native"),
        (["nspv2.examples.email:EmailDirectory", "--native", "x.so"], "not both"),
        ([], "give the provider"),
    ],
)
def test_usage_errors(args: list[str], words: str) -> None:
    done = subprocess.run(
        [*command(), "check", *args], cwd=OUTSIDE, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_asan_without_a_compiler_says_so(native_lib: NativeLib, tmp_path: Path) -> None:
    lib = email_provider(native_lib)
    env = {**os.environ, "CC": str(tmp_path / "no-cc"), "NSPV2_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [*command(), "check", "--native", str(lib), "--asan"],
        cwd=OUTSIDE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--asan: no C compiler" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("asan-host/*/*.so"))
