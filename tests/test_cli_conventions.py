"""One convention for every command: --version, --debug anywhere, --json
(errors included), one-line usage errors, how providers are found, SKIPPED
rules, user providers for bench/memory/stress, Ctrl-C, and ``config``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nspv2
from nspv2.tools.bench import SPREAD_LIMIT, spread_warnings
from nspv2.tools.check import run_check

from . import broken_providers as bp
from .clirun import BROKEN_FILE, OUTSIDE, SCRIPT, command, nspv2_cli
from .served import serving

run = nspv2_cli


def needs_script() -> None:
    if not SCRIPT.is_file():
        pytest.skip(f"no console script at {SCRIPT} (nspv2 not installed with pip)")


@pytest.mark.parametrize("script", [False, True], ids=["python -m", "console script"])
def test_version(script: bool) -> None:
    if script:
        needs_script()
    out = run("--version", script=script)
    assert out.returncode == 0
    assert out.stdout == f"nspv2 {nspv2.__version__}\n"


def test_debug_before_or_after_the_command() -> None:
    before, after = run("--debug", "demo"), run("demo", "--debug")
    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout
    # --debug shows the traceback of a provider that cannot be constructed
    plain = run("check", f"{BROKEN_FILE}:ExplodingConstructor")
    debug = run("check", f"{BROKEN_FILE}:ExplodingConstructor", "--debug")
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert plain.returncode == debug.returncode == 1


def test_json_errors_go_to_stdout_with_the_same_exit_code() -> None:
    with serving() as served:
        out = run("lookup", "nobody@example.com", "--json", env=served.env)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert "WSASERVICE_NOT_FOUND" in doc["error"] and doc["code"] == 10108
    usage = run("lookup", "x@example.com", "--flags", "0x100000000", "--json")
    assert usage.returncode == 2 and usage.stderr == ""
    assert "out of range" in json.loads(usage.stdout)["error"]
    missing = run("check", "no_such_module_xyz:Thing", "--json")
    assert missing.returncode == 2 and "no_such_module_xyz" in json.loads(missing.stdout)["error"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["register", "x@example.com", "--addr", "192.0.2.1:65536"], "65536"),
        (["register", "x@example.com", "--addr", "[2001:db8::1]:99999"], "99999"),
        (["check", ":Good"], "no module"),
        (["check", "nspv2.examples.email:EmailDirectory", "--timeout", "0"], "more than 0"),
        (["check", "nspv2.examples.email:EmailDirectory", "--timeout", "-1"], "more than 0"),
        (["check", "nspv2.examples.email:EmailDirectory", "--timeout", "nan"], "more than 0"),
        (["lookup", "x@example.com", "--flags", "0x100000000"], "out of range"),
        (["lookup", "x@example.com", "--flags", "-1"], "out of range"),
        (["bench", "--cycles", "0"], "out of range"),
        (["bench", "--cycles", str(2**32)], "out of range"),
        (["bench", "--sessions-open", "-1"], "out of range"),
        (["memory", "--cycles", "-5"], "out of range"),
        (["memory", "--max-growth-kib", "-1"], "0 or more"),
        (["stress", "--threads", "0"], "out of range"),
        (["stress", "--threads", "1025"], "out of range"),
        (["stress", "--cycles", str(2**32)], "out of range"),
        (["fuzz", "--cases", "0"], "out of range"),
        (["fuzz", "--cases", "many"], "whole number"),
        (["config", "--include"], "unrecognized"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], words: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_a_provider_file_with_a_syntax_error_exits_2_naming_file_and_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "broken_syntax.py"
    bad.write_text("import uuid\n\nclass P(\n    pass\n")
    for spec in (str(bad), "broken_syntax:P"):
        out = run("check", spec, cwd=tmp_path)
        assert out.returncode == 2, out
        [line] = out.stderr.strip().splitlines()
        assert "broken_syntax.py" in line and "line 3" in line, line


PROVIDER_MODULE = textwrap.dedent(
    """
    import uuid
    from collections.abc import Iterator

    from helper_names import NAME
    from nspv2 import NS, Provider, QuerySet, Session


    class Local(Provider):
        provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-0000000000c1")
        namespace = NS.NS_DNS
        check_queries = (NAME,)

        def lookup(self, session: Session, q: QuerySet, flags: int) -> Iterator[QuerySet]:
            yield QuerySet(q.service_instance_name, comment="here", namespace=NS.NS_DNS)
    """
)


@pytest.mark.parametrize("script", [False, True], ids=["python -m", "console script"])
def test_check_finds_modules_in_the_current_folder_and_beside_a_file(
    tmp_path: Path, script: bool
) -> None:
    if script:
        needs_script()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "local_provider.py").write_text(PROVIDER_MODULE)
    (folder / "helper_names.py").write_text('NAME = "host.example.com"\n')
    by_module = run("check", "local_provider:Local", "--json", cwd=folder, script=script)
    assert by_module.returncode == 0, by_module.stdout + by_module.stderr
    assert "fail" not in {r["status"] for r in json.loads(by_module.stdout)}
    by_file = run("check", "mine/local_provider.py", cwd=tmp_path, script=script)
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr
    assert " rules pass" in by_file.stdout and "FAIL" not in by_file.stdout


def test_check_uses_the_provider_namespace() -> None:
    rules = run_check(bp.GoodDns)
    assert [r.name for r in rules if r.failed] == []


def test_rules_that_cannot_be_exercised_are_skipped_not_passed() -> None:
    rules = {r.name: r for r in run_check(bp.GoodWithoutQueries)}
    skipped = [r for r in rules.values() if "check_queries" in (r.skipped or "")]
    assert len(skipped) >= 5  # every rule that needs a lookup
    assert all(not r.passed for r in skipped)
    assert not any(r.failed for r in rules.values())
    out = run("check", f"{BROKEN_FILE}:GoodWithoutQueries")
    assert out.returncode == 0, out.stdout
    assert "SKIPPED" in out.stdout and "skipped (not exercised)" in out.stdout
    doc = json.loads(run("check", f"{BROKEN_FILE}:GoodWithoutQueries", "--json").stdout)
    assert {r["status"] for r in doc} == {"pass", "skipped"}
    assert all(r["passed"] is None and r["reason"] for r in doc if r["status"] == "skipped")


def test_sessions_rule_fails_when_nothing_reached_the_provider() -> None:
    rules = {r.name: r for r in run_check(bp.StartupUnreachable)}
    sessions = rules["each session ends once; nothing left open after cleanup and after rundown"]
    assert sessions.failed
    assert any("no session reached the provider" in e for e in sessions.evidence)


def test_bench_memory_stress_measure_a_users_provider() -> None:
    spec = f"{BROKEN_FILE}:GoodDns"
    bench = run("bench", spec, "--cycles", "50", "--repeats", "1", "--sessions-open", "3", "--json")
    assert bench.returncode == 0, bench.stderr
    doc = json.loads(bench.stdout)
    assert doc["provider"] == "GoodDns" and doc["name"] == "one@example.com"
    assert doc["same_answers"] is None and doc["results_per_lookup"]["A"] == 1
    assert isinstance(doc["spread_warning"], list)
    memory = run("memory", spec, "--cycles", "2000", "--json")
    assert memory.returncode == 0, memory.stdout + memory.stderr
    assert json.loads(memory.stdout)["sessions"]["started"] > 0
    stress = run("stress", spec, "--threads", "2", "--cycles", "40", "--json")
    assert stress.returncode == 0, stress.stdout + stress.stderr
    phases = json.loads(stress.stdout)["phases"]
    assert [p["cycles"] for p in phases] == [80, 80, 80] and all(p["ok"] for p in phases)
    unknown = run("stress", f"{BROKEN_FILE}:Nope", "--cycles", "1")
    assert unknown.returncode == 2 and "Nope" in unknown.stderr


def test_bench_warns_when_repetitions_spread() -> None:
    def fig(spread: float) -> dict[str, float]:
        return {"spread": spread}

    steady = {"cycle_kinds": {"lookup": {"A": fig(0.02), "B": fig(0.05), "C": fig(0.1)}}}
    assert spread_warnings(steady) == []
    noisy = {
        "cycle_kinds": {"lookup": {"A": fig(0.02), "B": fig(SPREAD_LIMIT + 0.01), "C": fig(0)}},
        "many_open": {"baseline": fig(0.5), "loaded": fig(0.0)},
    }
    assert spread_warnings(noisy) == ["lookup B 11.0%", "many-open baseline 50.0%"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_ends_stress_within_a_second_with_partial_figures() -> None:
    child = subprocess.Popen(
        [*command(), "stress", "--threads", "4", "--cycles", "100000000"],
        cwd=OUTSIDE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.5)  # well into the first phase
        assert child.poll() is None
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130, err
    assert took < 1.0, f"took {took:.2f} s to stop"
    assert "(interrupted)" in out and "the figures above are partial" in out
    assert "interrupted" in err


def test_config_prints_compiler_and_linker_flags() -> None:
    include = nspv2.sdk.get_include()
    library = nspv2.host.library_path().resolve()
    cflags = run("config", "--cflags")
    assert cflags.returncode == 0 and cflags.stdout == f"-I{include}\n"
    assert (Path(include) / "nspv2_host.h").is_file()
    libs = run("config", "--libs").stdout.split()
    assert libs == [
        f"-L{library.parent}",
        f"-l:{library.name}",
        f"-Wl,-rpath,{library.parent}",
    ]
    both = run("config", "--cflags", "--libs")
    assert both.stdout.split() == [f"-I{include}", *libs]
    doc = json.loads(run("config", "--json").stdout)
    assert doc["include_dir"] == include and Path(doc["library"]) == library
    assert doc["cflags"] == f"-I{include}" and doc["libs"].split() == libs


def test_layout_json_is_format_json() -> None:
    assert run("layout", "--json").stdout == run("layout", "--format", "json").stdout


def test_help_on_every_command() -> None:
    for name in (
        "demo", "lookup", "register", "signout", "check", "layout",
        "bench", "memory", "stress", "fuzz", "config",
    ):  # fmt: skip
        out = run(name, "--help")
        assert out.returncode == 0 and "--debug" in out.stdout, name
        printing = name not in ("layout",)
        assert ("--json" in out.stdout) or not printing, name
