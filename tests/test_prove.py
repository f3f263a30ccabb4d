"""Shortened versions of the bench, memory, stress and fuzz commands.

These prove behaviour (nothing left open, every outcome accounted for, no
crash, only WSAEINVAL for malformed input); they assert no timings. The
figures come from ``python -m nspv2 bench|memory|stress|fuzz``.
"""

from __future__ import annotations

import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nspv2 import WinsockError, WSAError
from nspv2.provider.queryset import MAX_STRING_CHARS, QuerySet
from nspv2.tools.bench import count_instructions, run_bench
from nspv2.tools.fuzz import GuardedArena, build_image, run_fuzz
from nspv2.tools.memory import run_memory
from nspv2.tools.stress import run_stress, thread_ladder


def test_memory_short_run_leaves_nothing_open() -> None:
    doc = run_memory(cycles=20_000, chunk=5_000, thread_exits=2_000)
    assert doc["open"]["provider"] == {"sessions": 0, "lookups": 0}
    assert not any(doc["open"]["host"].values())
    assert doc["sessions"]["started"] == doc["sessions"]["ended"]
    for kind in ("lookup", "rundown", "exits"):
        assert doc[kind]["growth_kib"] < 8 * 1024, (
            doc
        )  # generous: the real target is checked by `nspv2 memory`
    exits = doc["exits"]
    assert exits["threads"] == 2_000 and exits["accounted"], exits
    assert exits["exits_per_second"] > 0
    assert isinstance(doc["pinning"]["installed"], bool)


def test_stress_short_run_accounts_for_everything() -> None:
    doc = run_stress(threads=8, cycles=300, thread_exits=600)
    assert doc["problems"] == [], doc
    for phase in doc["phases"]:
        assert phase["sessions_started"] == phase["sessions_ended"] == 8 * 300
        assert phase["open"] == {"sessions": 0, "lookups": 0}
    flush = doc["phases"][1]
    assert (
        flush["results"] == 0 and flush["outcomes"]["WSAEFAULT"] == 8 * 300
    )  # every held result dropped
    # throughput: the same total on 1, 2, 4 and 8 threads, each accounted for
    t = doc["throughput"]
    assert [row["threads"] for row in t["ladder"]] == [1, 2, 4, 8]
    for row in t["ladder"]:
        assert row["cycles"] == t["total_cycles"] and row["accounted"], row
        assert row["cycles_per_second"] > 0
    assert t["ratio"] > 0 and t["ok"]
    # thread exits: every thread made its one cycle, its session ended once
    x = doc["thread_exits"]
    assert x["threads"] == x["cycles"] == x["sessions_started"] == x["sessions_ended"] == 600
    assert x["open"] == {"sessions": 0, "lookups": 0}
    assert x["outcomes"] == {"NO_ERROR": 5 * 600, "WSA_E_NO_MORE": 600}
    assert x["exits_per_second"] > 0 and x["ok"]


def test_thread_ladder() -> None:
    assert thread_ladder(1) == [1]
    assert thread_ladder(8) == [1, 2, 4, 8]
    assert thread_ladder(6) == [1, 2, 4, 6]


def test_bench_runs_and_the_three_providers_agree() -> None:
    doc = run_bench(cycles=200, repeats=1, sessions_open=50, served_lookups=50)
    assert doc["same_answers"]
    assert set(doc["cycle_kinds"]) == {"lookup", "session", "rundown"}
    assert doc["many_open"]["sessions_open"] == 50
    assert doc["open_after"]["A"] == {"sessions": 0, "lookups": 0}
    assert doc["open_after"]["B"] == {"sessions": 0, "lookups": 0}
    assert isinstance(doc["pinning"]["installed"], bool)
    served = doc["served"]
    if "skipped" in served:
        pytest.skip(f"served round trip: {served['skipped']}")
    assert served["same_answers"] and served["results_per_lookup"] == {
        "served": 1,
        "in_process": 1,
    }
    assert served["served"]["median_ns"] > 0 and served["in_process"]["median_ns"] > 0
    assert served["served/in_process"] > 0
    assert served["server_exit"] == 0


@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind (callgrind) is not installed"
)
def test_bench_instructions_counts_every_cycle_of_a_b_c() -> None:
    doc = count_instructions(cycles=10)
    assert doc["mode"] == "instructions" and doc["cycles"] == 10
    assert set(doc["cycle_kinds"]) == {"lookup", "session", "rundown"}
    for row in doc["cycle_kinds"].values():
        for key in "ABC":
            fig = row[key]
            # twice the cycles cost more: the driver thread's work was counted
            assert fig["at_2n"] > fig["at_n"] > 0, row
            assert fig["instructions_per_cycle"] > 0
        assert row["A/B"] > 0 and row["A/C"] > 0


@pytest.fixture(scope="module")
def arena() -> GuardedArena:
    return GuardedArena(4 * 4096 + 2 * (MAX_STRING_CHARS + 1))


@settings(
    max_examples=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(st.randoms(use_true_random=False), st.sampled_from(["2W", "W"]))
def test_reader_on_malformed_images_parses_or_says_wsaeinval(
    arena: GuardedArena, rnd: random.Random, kind: str
) -> None:
    address = build_image(rnd, arena, kind=kind)
    try:
        QuerySet.from_address(address, kind, bounds=(arena.start, arena.end))  # type: ignore[arg-type]
    except WinsockError as exc:
        assert exc.code == WSAError.WSAEINVAL


@settings(
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(st.randoms(use_true_random=False))
def test_unbounded_reader_on_host_safe_images(arena: GuardedArena, rnd: random.Random) -> None:
    """Images a provider can receive from C: no bounds given, still no fault."""
    address = build_image(rnd, arena, kind="2W", host_safe=True)
    try:
        QuerySet.from_address(address)
    except WinsockError as exc:
        assert exc.code == WSAError.WSAEINVAL


def test_fuzz_through_the_host() -> None:
    doc = run_fuzz(cases=400, seed=7)
    assert doc["unexpected"] == []
    assert sum(doc["outcomes"]["host Begin"].values()) == 400
    assert doc["outcomes"]["reader 2W (bounded)"].get("WSAEINVAL", 0) > 0


def test_bench_instructions_without_valgrind_exits_2_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nspv2.tools.cli import main

    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert main(["bench", "--instructions", "--cycles", "5"]) == 2
    err = capsys.readouterr().err
    assert "valgrind" in err and "apt-get install valgrind" in err
