"""``nspv2 compare``: scenarios, the runner's transcripts, and the command.

Every comparison here runs the real thing: each side in its own child
process, every step through the native host's client calls (sessions,
WSASetServiceW, WSALookupServiceBegin/Next/End) into the provider's table.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from nspv2.tools.cli import build_parser
from nspv2.tools.compare import Side, compare, first_difference
from nspv2.tools.compare import _targets as ordered_targets
from nspv2.tools.scenario import (
    OPS,
    Scenario,
    ScenarioError,
    Target,
    example_path,
    load_scenario,
    parse_scenario,
    run_case,
)

from .clirun import nspv2_cli
from .nativebuild import NativeLib, altered_email_provider, email_provider, native_lib

__all__ = ["native_lib"]  # the fixture, used by the native tests here

PROVIDERS = Path(__file__).resolve().with_name("compare_providers.py")
EMAIL = example_path("email")
PYTHON_EMAIL = "nspv2.examples.email:EmailDirectory"


def provider(name: str) -> str:
    return f"{PROVIDERS}:{name}"


def scenario_file(tmp_path: Path, *cases: list[dict[str, Any]], name: str = "s.json") -> Path:
    doc = {
        "format": 1,
        "title": "test",
        "cases": [{"title": f"case {i}", "steps": steps} for i, steps in enumerate(cases, 1)],
    }
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def email_case(title: str) -> dict[str, Any]:
    doc = json.loads(EMAIL.read_text())
    [case] = [c for c in doc["cases"] if c["title"] == title]
    return dict(case)


# -- the targets' order on the command line -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["A", "--native", "B"], [("python", "A"), ("native", "B")]),
        (["--native", "A", "B"], [("native", "A"), ("python", "B")]),
        (["--native", "A", "--native", "B"], [("native", "A"), ("native", "B")]),
        (["A", "B"], [("python", "A"), ("python", "B")]),
        (["A", "--scenario", "F", "B"], [("python", "A"), ("python", "B")]),
        (["--scenario", "F", "A", "--json", "--native", "B"], [("python", "A"), ("native", "B")]),
        (["--native", "lib.so:start", "A"], [("native", "lib.so"), ("python", "A")]),
        (["A", "--", "B"], [("python", "A"), ("python", "B")]),
    ],
)
def test_targets_keep_their_command_line_order(
    argv: list[str], want: list[tuple[str, str]]
) -> None:
    args = build_parser().parse_args(["compare", *argv])
    got = ordered_targets(args)
    assert [(t.kind, t.spec) for t in got] == want
    assert args.scenario == ("F" if "F" in argv else None)
    assert args.json == ("--json" in argv)


def test_native_entry_is_split_off_only_when_it_is_a_name() -> None:
    args = build_parser().parse_args(["compare", "--native", "lib.so:start", "--native", "x.so"])
    a, b = ordered_targets(args)
    assert (a.spec, a.entry) == ("lib.so", "start")
    assert (b.spec, b.entry) == ("x.so", "main")


# -- the scenario format -------------------------------------------------------------------


def test_the_email_scenario_loads_and_covers_every_op() -> None:
    scenario = load_scenario(EMAIL)
    ops = {s.op for c in scenario.cases for s in c.steps}
    assert ops == set(OPS)
    small = [s for c in scenario.cases for s in c.steps if s.op == "lookup" and s.buffer < 64]
    assert small, "the email scenario has a lookup in a buffer too small for its results"


def _error(doc: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc, "bad.json")
    return str(info.value)


def _one(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "cases": [{"title": "t", "steps": list(steps)}]}


OPEN = {"op": "open", "session": "a"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([OPEN, {"op": "lookp", "session": "a"}], 'step 2: "op" must be one of open, close'),
        (
            [OPEN, {"op": "lookup", "session": "a", "name": "x", "flag": 1}],
            "step 2 (lookup): unknown field 'flag'",
        ),
        (
            [{"op": "lookup", "session": "a", "name": "x"}],
            "step 1 (lookup): session 'a' was never opened",
        ),
        (
            [OPEN, {"op": "close", "session": "a"}, {"op": "delete", "session": "a", "name": "x"}],
            "step 3 (delete): session 'a' was closed before",
        ),
        ([OPEN, {"op": "next", "handle": "h"}], "step 2 (next): handle 'h' was never begun"),
        (
            [OPEN, {"op": "lookup", "session": "a", "name": "x", "flags": "LUP_RETURN_EVERYTHING"}],
            "step 2 (lookup): 'flags' must be a flag name",
        ),
        (
            [OPEN, {"op": "register", "session": "a", "name": "x", "addrs": ["2001:db8::1:80"]}],
            "step 2 (register): 'addrs': '2001:db8::1:80': write an IPv6 address in brackets",
        ),
        (
            [OPEN, {"op": "register", "session": "a", "name": "x", "presence": "MISTATUS_HAPPY"}],
            "step 2 (register): 'presence' must be a MISTATUS name",
        ),
        (
            [OPEN, {"op": "lookup", "session": "a", "name": "x", "buffer": -1}],
            "step 2 (lookup): 'buffer' must be a number of bytes",
        ),
        ([OPEN, {"op": "lookup", "session": "a"}], "step 2 (lookup): 'name' is missing"),
        (
            [OPEN, {"op": "delete", "session": "a", "name": "x", "expect": "WSAEOOPS"}],
            "step 2 (delete): 'expect' must be NO_ERROR, a WSAError name",
        ),
        ([OPEN, OPEN], "step 2 (open): session 'a' is already open"),
    ],
)
def test_a_bad_step_is_named(steps: list[dict[str, Any]], message: str) -> None:
    text = _error(_one(*steps))
    assert text.startswith("bad.json: case 1 ('t'), ")
    assert message in text


def test_bad_documents_are_named() -> None:
    assert "a scenario is a JSON object" in _error([])
    assert '"format" must be 1' in _error({"cases": []})
    assert '"cases" must be a non-empty list' in _error({"format": 1, "cases": []})
    assert "case 1: a case is an object" in _error({"format": 1, "cases": [[]]})


def test_a_file_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": 1,\n "cases": [,]}')
    with pytest.raises(ScenarioError, match=r"x\.json, line 2 column 12: not JSON"):
        load_scenario(path)


# -- the runner, in this process ------------------------------------------------------------


def _run(target: Target, scenario: Scenario, index: int = 0) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    run_case(target, scenario.cases[index], records.append)
    return records


def test_transcript_records_codes_fields_asked_sizes_and_session_ends() -> None:
    doc = _one(
        OPEN,
        {"op": "open", "session": "b"},
        {"op": "open", "session": "c"},
        {"op": "register", "session": "a", "name": "ann@example.com", "addrs": ["192.0.2.1:5060"]},
        {"op": "lookup", "session": "b", "name": "ann@example.com", "buffer": 0},
        {"op": "begin", "session": "c", "handle": "h", "name": "ann@example.com"},
        {"op": "next", "handle": "h", "buffer": 8},
        {"op": "end", "handle": "h"},
        {"op": "close", "session": "a"},
        {"op": "abandon", "session": "b"},
    )
    records = _run(Target("python", PYTHON_EMAIL), parse_scenario(doc))
    saw = {r["step"]: r["saw"] for r in records}
    assert saw[4] == {"code": "NO_ERROR"}
    [result] = saw[5]["results"]
    assert result["name"] == "ann@example.com"
    assert result["addrs"] == ["192.0.2.1:5060"]
    assert result["provider"] == "own"  # lpNSProviderId, normalized
    assert result["flags"] == "RESULT_IS_ADDED"
    assert saw[5]["asked"] == [result_size := saw[5]["asked"][0]] and result_size > 8
    assert saw[7] == {"code": "WSAEFAULT", "asked": result_size}
    assert saw[9]["ends"] == "Cleanup"
    assert saw[10]["ends"] == "Rundown"
    # c is open at the end: the provider stopping runs it down
    assert records[-1] == {
        "step": "teardown",
        "do": "teardown: stop the provider with sessions c open",
        "saw": {"ends": "Rundown"},
    }


def test_a_session_that_never_reached_the_provider_has_no_end() -> None:
    doc = _one(OPEN, {"op": "close", "session": "a"})
    records = _run(Target("python", PYTHON_EMAIL), parse_scenario(doc))
    assert records[1]["saw"] == {"code": "NO_ERROR", "ends": "none"}


def test_python_example_and_c_reference_give_identical_transcripts() -> None:
    """The same scenario, in this process, against the two providers: the
    transcripts are equal record for record (the provider ids differ, and
    are recorded as "own")."""
    scenario = load_scenario(EMAIL)
    for index in range(len(scenario.cases)):
        python = _run(Target("python", PYTHON_EMAIL), scenario, index)
        c = _run(Target("builtin", "reference"), scenario, index)
        assert python == c, scenario.cases[index].title
        assert len(python) == len(scenario.cases[index].steps) + 1


def test_a_begin_that_failed_leaves_a_null_handle_for_next_and_end() -> None:
    doc = _one(
        OPEN,
        {"op": "begin", "session": "a", "handle": "h", "name": "not an address"},
        {"op": "next", "handle": "h"},
        {"op": "end", "handle": "h"},
    )
    records = _run(Target("python", PYTHON_EMAIL), parse_scenario(doc))
    # the provider's Begin refuses the name (WSAEINVAL); the host drops it
    # and, no provider left, fails the lookup with WSASERVICE_NOT_FOUND
    assert [r["saw"]["code"] for r in records[1:4]] == [
        "WSASERVICE_NOT_FOUND",
        "WSA_INVALID_HANDLE",
        "WSA_INVALID_HANDLE",
    ]


# -- differences -----------------------------------------------------------------------------


def test_first_difference_names_the_step_and_the_field() -> None:
    a = Side([{"step": 1, "do": "x", "saw": {"code": "NO_ERROR", "results": [{"name": "p"}]}}])
    b = Side([{"step": 1, "do": "x", "saw": {"code": "NO_ERROR", "results": [{"name": "q"}]}}])
    d = first_difference(a, b, ["x"])
    assert d is not None and d["step"] == 1 and d["where"] == "results[0].name"
    assert first_difference(a, Side(list(a.records)), ["x"]) is None


def test_a_failure_is_never_agreement() -> None:
    """Both sides dying the same way at the same step is still a difference to report."""
    both = Side([], failure="killed by SIGSEGV in step 1 (x)")
    d = first_difference(both, Side([], failure=both.failure), ["x"])
    assert d is not None and d["step"] == 1
    assert d["a"] == d["b"] == {"failure": both.failure}


def test_the_altered_python_provider_is_named_at_its_first_difference(tmp_path: Path) -> None:
    """Case 1 agrees (a lookup of one name), case 2 differs at its first NextEx."""
    path = scenario_file(
        tmp_path,
        email_case("sign in, then look up with every field")["steps"],
        email_case("wildcard returns every match, sorted, one per NextEx")["steps"],
    )
    cmp = compare(Target("python", PYTHON_EMAIL), Target("python", provider("Reversed")), path)
    assert cmp.cases[0].difference is None
    assert not cmp.agree
    first = cmp.cases[1]
    d = first.difference
    assert d is not None
    assert d["step"] == 6 and d["do"].startswith("next h")
    assert d["a"]["result"]["name"] == "amy@example.net"
    assert d["b"]["result"]["name"] == "zed@example.net"
    assert d["where"] == "result.name"


# -- the command -----------------------------------------------------------------------------


def test_cli_agree_exits_0(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, email_case("LUP_RETURN flags choose the fields")["steps"])
    done = nspv2_cli("compare", PYTHON_EMAIL, PYTHON_EMAIL, "--scenario", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agree: A and B saw the same at every step of every case" in done.stdout


def test_cli_difference_exits_1_and_prints_both_sides(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, email_case("wildcard returns every match, sorted, one per NextEx")["steps"]
    )
    done = nspv2_cli("compare", PYTHON_EMAIL, provider("Reversed"), "--scenario", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "first difference: case 1 (case 1), step 6: next h flags=0 buffer=4096" in out
    assert "differs at: result.name" in out
    assert "A saw: NO_ERROR" in out and "name=amy@example.net" in out
    assert "B saw: NO_ERROR" in out and "name=zed@example.net" in out
    assert "session ends in case 1, A: teardown: Rundown" in out
    assert "session ends in case 1, B: teardown: Rundown" in out


def test_cli_json(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, email_case("wildcard returns every match, sorted, one per NextEx")["steps"]
    )
    done = nspv2_cli(
        "compare", "--json", PYTHON_EMAIL, provider("Reversed"), "--scenario", str(path)
    )
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["agree"] is False
    [case] = doc["cases"]
    assert case["difference"]["step"] == 6
    assert case["transcripts"]["a"][0] == {"step": 1, "do": "open a", "saw": {}}
    assert case["ends"]["a"] == [
        {
            "step": "teardown",
            "do": "teardown: stop the provider with sessions a open",
            "ends": "Rundown",
        }
    ]


def test_cli_bad_step_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, [OPEN, {"op": "lookup", "session": "b", "name": "x"}])
    done = nspv2_cli("compare", PYTHON_EMAIL, PYTHON_EMAIL, "--scenario", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        f"{path}: case 1 ('case 1'), step 2 (lookup): session 'b' was never opened" in done.stderr
    )


def test_cli_json_usage_error_after_a_target(tmp_path: Path) -> None:
    """Options after the first target are still read (--json, --debug)."""
    path = scenario_file(tmp_path, [{"op": "close", "session": "a"}])
    done = nspv2_cli(
        "compare", PYTHON_EMAIL, "--json", PYTHON_EMAIL, "--debug", "--scenario", str(path)
    )
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["usage"] is True
    assert "step 1 (close): session 'a' was never opened" in doc["error"]


def test_cli_usage_errors() -> None:
    one = nspv2_cli("compare", PYTHON_EMAIL, "--scenario", str(EMAIL))
    assert one.returncode == 2 and "give two providers to compare" in one.stderr
    none = nspv2_cli("compare", PYTHON_EMAIL, PYTHON_EMAIL)
    assert none.returncode == 2 and "--scenario FILE is required" in none.stderr
    missing = nspv2_cli("compare", PYTHON_EMAIL, "--native", "nowhere.so", "--scenario", str(EMAIL))
    assert missing.returncode == 2 and "--native nowhere.so: no such file" in missing.stderr
    unknown = nspv2_cli("compare", PYTHON_EMAIL, "no_such_module:X", "--scenario", str(EMAIL))
    assert (
        unknown.returncode == 2
        and "no_such_module:X: cannot import no_such_module" in unknown.stderr
    )


def _dave(tmp_path: Path) -> Path:
    """Two cases: the second signs dave in."""
    first = [OPEN, {"op": "lookup", "session": "a", "name": "x@example.com"}]
    return scenario_file(
        tmp_path,
        first,
        email_case("register again updates; SERVICE_MULTIPLE adds addresses")["steps"],
    )


def test_a_side_that_crashes_fails_at_its_step_and_the_other_cases_run(tmp_path: Path) -> None:
    cmp = compare(
        Target("python", PYTHON_EMAIL), Target("python", provider("CrashesOnDave")), _dave(tmp_path)
    )
    first, second = cmp.cases
    assert first.difference is None
    assert second.a.failure == ""
    assert second.b.failure.startswith(
        f"killed by {signal.SIGSEGV.name} in step 2 (register a dave"
    )
    d = second.difference
    assert d is not None and d["step"] == 2
    assert d["a"] == {"code": "NO_ERROR"} and d["b"] == {"failure": second.b.failure}


def test_a_side_that_exits_fails_with_its_status(tmp_path: Path) -> None:
    cmp = compare(
        Target("python", provider("ExitsOnDave")), Target("python", PYTHON_EMAIL), _dave(tmp_path)
    )
    assert cmp.cases[1].a.failure.startswith("exited with status 3 in step 2 (register a dave")


def test_a_side_that_hangs_is_killed_at_the_time_bound(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, [OPEN])
    done = nspv2_cli(
        "compare", PYTHON_EMAIL, provider("NeverStarts"), "--scenario", str(path), "--timeout", "3"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "first difference: case 1 (case 1), start: start the provider" in done.stdout
    assert "A saw: started" in done.stdout
    assert "B saw: FAILED: timed out after 3 s while starting the provider (killed)" in done.stdout


def test_a_provider_that_cannot_start_is_its_sides_failure(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, [OPEN])
    cmp = compare(Target("python", provider("FailsToStart")), Target("python", PYTHON_EMAIL), path)
    [case] = cmp.cases
    assert case.a.failure == "FailsToStart() raised RuntimeError: no directory today"
    assert case.difference is not None and case.difference["step"] == "start"


# -- native providers ------------------------------------------------------------------------


@pytest.fixture
def email_c(native_lib: NativeLib) -> Path:
    """The email example's C provider as installed, built as a user builds it."""
    return email_provider(native_lib)


def test_cli_python_and_c_email_providers_agree(email_c: Path) -> None:
    """The porter's proof: the email example's Python provider and its C
    twin, loaded as a native provider library, agree on the whole scenario."""
    done = nspv2_cli("compare", PYTHON_EMAIL, "--native", str(email_c), "--scenario", str(EMAIL))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"B: native {email_c}:main" in done.stdout
    assert "agree: A and B saw the same at every step of every case" in done.stdout


def test_cli_native_first_then_python(email_c: Path, tmp_path: Path) -> None:
    path_case = email_case("a session's names are signed out when it closes or dies")
    path = scenario_file(tmp_path, path_case["steps"])
    done = nspv2_cli(
        "compare", "--native", f"{email_c}:main", PYTHON_EMAIL, "--scenario", str(path), "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["a"] == f"native {email_c}:main" and doc["b"] == PYTHON_EMAIL
    [case] = doc["cases"]
    assert [e["ends"] for e in case["ends"]["a"]] == ["Cleanup", "Rundown", "Rundown"]


def test_cli_altered_c_build_is_named_at_its_first_difference(
    email_c: Path, native_lib: NativeLib, tmp_path: Path
) -> None:
    """tests/native/altered_email.c drops LUP_RETURN_COMMENT in Begin: the
    first lookup of the scenario is where it shows, named with the field."""
    altered = altered_email_provider(native_lib)
    done = nspv2_cli(
        "compare", "--native", str(email_c), "--native", str(altered), "--scenario", str(EMAIL)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"A: native {email_c}:main\nB: native {altered}:main\n" in out
    assert (
        "first difference: case 1 (sign in, then look up with every field), "
        "step 4: lookup b alice@example.com flags=LUP_RETURN_ALL buffer=1024\n"
        "  differs at: results[0].comment\n"
        "  A saw: NO_ERROR, 1 result\n"
        "    name=alice@example.com version=1 comment=MISTATUS_AWAY namespace=NS_EMAIL"
    ) in out
    assert (
        "  B saw: NO_ERROR, 1 result\n    name=alice@example.com version=1 namespace=NS_EMAIL"
        in out
    )
    # the Python prototype against the altered port: the same first difference
    path = scenario_file(tmp_path, email_case("sign in, then look up with every field")["steps"])
    python = nspv2_cli(
        "compare", PYTHON_EMAIL, "--native", str(altered), "--scenario", str(path), "--json"
    )
    assert python.returncode == 1
    doc = json.loads(python.stdout)
    [first] = doc["cases"]
    assert first["difference"]["step"] == 4
    assert first["difference"]["where"] == "results[0].comment"


def test_provider_ids_differ_yet_agree() -> None:
    """What the normalization hides: the two providers really have different ids."""
    from nspv2.examples.email import EMAIL_PROVIDER_ID
    from nspv2.host.host import Host

    with Host(auto_install=True) as host:
        host.winsock.library.nspv2_ref_provider_reset()
        c_id = host.advertise_reference_provider()
    assert isinstance(c_id, uuid.UUID) and c_id != EMAIL_PROVIDER_ID
