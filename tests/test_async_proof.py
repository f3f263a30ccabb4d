"""Short versions of ``nspv2 prove-async`` (nspv2/tools/async_proof.py).

Concurrency: 64 client sessions whose lookups each wait 50 ms finish in well
under 64 x 50 ms through the in-process host and through ``nspv2 serve``,
while the blocking twin (complete_from_thread) cannot beat its four workers.
Mixed cycles: ends and abandons while a NextEx waits, generators closed at
a ``yield``, timeouts, async set_service; afterwards nothing is open,
pending or held, no task is left on the loop, every generator's ``finally``
ran once, nothing reached sys.unraisablehook. The bounds are generous (a
shared 2-core machine, also under ASan); the figures come from the command.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from nspv2.provider.registry import Session
from nspv2.tools.async_proof import ChaosDirectory, run_cancellation, run_concurrency, run_mixed

from .clirun import nspv2_cli

SERIAL_MS = 64 * 50
#: The blocking twin's floor: 64 lookups of 50 ms on the scaffold's 4 workers.
TWIN_FLOOR_MS = 64 // 4 * 50


def _run(doc: dict[str, Any], where: str, which: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = doc["runs"]
    [run] = [r for r in runs if r["where"] == where and r["provider"] == which]
    return run


def test_64_sessions_waiting_50_ms_in_process_take_well_under_64_x_50_ms() -> None:
    doc = run_concurrency(sessions=64, delay=0.05, backend="sleep")
    assert doc["serial_bound_ms"] == SERIAL_MS
    fast, twin = _run(doc, "in-process", "async"), _run(doc, "in-process", "blocking twin")
    assert fast["codes"] == twin["codes"] == {"NO_ERROR": 64}, doc
    assert fast["wall_ms"] < SERIAL_MS / 4, doc
    # the twin blocks one of four workers per waiting lookup: 16 rounds of 50 ms at least
    assert twin["wall_ms"] >= TWIN_FLOOR_MS * 0.95, doc
    assert fast["wall_ms"] < twin["wall_ms"], doc
    assert doc["ok"] and doc["problems"] == []


def test_64_served_sessions_waiting_50_ms_take_well_under_64_x_50_ms() -> None:
    doc = run_concurrency(sessions=64, delay=0.05, backend="sleep", served=True, in_process=False)
    assert [r["where"] for r in doc["runs"]] == ["served", "served"]
    fast, twin = _run(doc, "served", "async"), _run(doc, "served", "blocking twin")
    assert fast["serve_threads"] == 64
    assert fast["codes"] == twin["codes"] == {"NO_ERROR": 64}, doc
    assert fast["wall_ms"] < SERIAL_MS / 4, doc
    assert twin["wall_ms"] >= TWIN_FLOOR_MS * 0.95, doc
    assert doc["ok"], doc


def test_served_async_lookups_are_bounded_by_the_servers_threads() -> None:
    """Each of nspv2 serve's workers waits in WSALookupServiceNext while the
    step runs on the loop: with 4 threads, 64 lookups take 16 rounds."""
    doc = run_concurrency(
        sessions=64,
        delay=0.05,
        backend="sleep",
        served=True,
        serve_threads=4,
        in_process=False,
        twin=False,
    )
    [fast] = doc["runs"]
    assert fast["codes"] == {"NO_ERROR": 64}, doc
    assert fast["wall_ms"] >= TWIN_FLOOR_MS * 0.95, doc
    assert not doc["ok"] and any("served async" in p for p in doc["problems"]), doc


def test_64_sessions_of_the_http_example_waiting_50_ms_take_well_under_64_x_50_ms() -> None:
    doc = run_concurrency(sessions=64, delay=0.05, backend="http", twin=False, cancel=0)
    [fast] = doc["runs"]
    assert doc["provider"] == "HttpPresenceDirectory" and "cancellation" not in doc
    assert fast["codes"] == {"NO_ERROR": 64}, doc
    assert fast["wall_ms"] < SERIAL_MS / 4, doc
    # every lookup made its request, and the backend answered each one (and the warm-up's)
    assert doc["backend_stats"]["answered"] == 65 and doc["backend_stats"]["disconnected"] == 0


def test_a_cancelled_lookups_backend_request_is_cancelled_too() -> None:
    doc = run_cancellation(lookups=8, wait=2.0)
    assert doc["all_waiting"], doc
    assert doc["codes"] == {"WSA_E_CANCELLED": 8}, doc
    assert doc["backend_stats"]["disconnected"] == 8 and doc["backend_stats"]["answered"] == 0
    assert doc["disconnects_seen_ms"] < 2000, doc  # seen before the wait could have ended
    assert doc["ok"]


def test_mixed_cycles_leave_nothing_open_pending_or_unfinalized() -> None:
    doc = run_mixed(threads=8, cycles=300, seed=7)
    assert doc["cycles"] == 8 * 300
    assert doc["problems"] == [], doc["problems"]
    assert all(doc["checks"].values()), doc["checks"]
    assert doc["provider_open"] == {"sessions": 0, "lookups": 0}
    assert not any(doc["host_open"].values()), doc["host_open"]
    assert doc["async_stats"]["tasks"] == 0 and doc["async_stats"]["in_flight"] == 0
    assert doc["host_counters"]["double_completions"] == 0
    assert doc["unraisable_count"] == 0 and doc["asyncio_error_count"] == 0
    c = doc["provider_counts"]
    assert c["started"] == c["finalized"] > 0 and c["finalized_twice"] == 0
    assert c["cancelled"] > 0 and c["closed"] > 0  # both ways of ending a generator ran
    assert c["startups"] == c["cleanups"] + c["rundowns"] == 8 * 300
    out = doc["outcomes"]
    # ended (or abandoned) by another thread while the NextEx waited: cancelled, every time
    for kind in ("end_waiting", "abandon_waiting"):
        nexts = {k: v for k, v in out[kind].items() if k.startswith("next:")}
        assert list(nexts) == ["next:WSA_E_CANCELLED"], out[kind]
    assert set(out["end_waiting"]) == {
        "end:WSA_INVALID_HANDLE",
        "ender-end:NO_ERROR",
        "next:WSA_E_CANCELLED",
    }
    assert set(out["timeout"]) == {"next:WSAETIMEDOUT", "end:NO_ERROR"}
    assert doc["async_stats"]["timed_out"] >= out["timeout"]["next:WSAETIMEDOUT"]
    assert set(out["error"]) == {"next:WSASERVICE_NOT_FOUND", "end:NO_ERROR"}
    assert out["set_service"]["set:WSASERVICE_NOT_FOUND"] * 2 == out["set_service"]["set:NO_ERROR"]


class _TooSlow(ChaosDirectory):
    """Every step outlives the timeout: drained lookups time out."""

    async_timeout: ClassVar[float] = 0.001
    max_delay: ClassVar[float] = 0.05


class _Unraisable:
    def __del__(self) -> None:
        raise RuntimeError("raised in __del__")


class _LeaksAnUnraisable(ChaosDirectory):
    def startup(self, session: Session) -> None:
        super().startup(session)
        _Unraisable()


def test_mixed_cycles_report_a_code_their_kind_does_not_allow() -> None:
    doc = run_mixed(threads=2, cycles=40, seed=3, provider_class=_TooSlow)
    assert not doc["ok"]
    assert not doc["checks"]["every code one its kind allows"]
    assert any("WSAETIMEDOUT" in p for p in doc["problems"]), doc["problems"]
    # the leak checks still hold
    assert doc["checks"]["no task left on the loop"] and doc["checks"]["provider registry empty"]


def test_mixed_cycles_count_what_reaches_sys_unraisablehook(no_unraisable: list[Any]) -> None:
    doc = run_mixed(threads=2, cycles=20, seed=3, provider_class=_LeaksAnUnraisable)
    assert doc["unraisable_count"] > 0
    assert "RuntimeError: raised in __del__" in doc["unraisable"][0]
    assert not doc["checks"]["nothing reached sys.unraisablehook"] and not doc["ok"]
    # handed on to the hook in place before the run (here the suite's own): expected
    assert len(no_unraisable) == doc["unraisable_count"]
    no_unraisable.clear()


def test_command_prints_the_figures_and_checks_as_json() -> None:
    done = nspv2_cli(
        "prove-async", "--only", "mixed", "--threads", "2", "--cycles", "30", "--json", timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["mixed"]["cycles"] == 60 and "concurrency" not in doc


def test_command_text_output() -> None:
    done = nspv2_cli(
        "prove-async", "--backend", "sleep", "--sessions", "8", "--threads", "2", "--cycles",
        "20", timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serial bound 8 x 50 ms = 400 ms" in done.stdout
    assert "ok   mixed cycles: 2 threads x 20 cycles" in done.stdout
    assert "ok   every generator's finally ran once" in done.stdout


def test_command_refuses_bad_arguments() -> None:
    for args, message in (
        (("--serve-threads", "4"), "--serve-threads goes with --served"),
        (("--only", "mixed", "--served"), "--served and --serve-threads go with the concurrency"),
        (("--max-ratio", "0"), "is not above 0 and at most 1"),
        (("--sessions", "0"), "out of range"),
        (("--cycles", "x"), "not a whole number"),
        (("--backend", "ldap"), "invalid choice"),
    ):
        done = nspv2_cli("prove-async", *args, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
