"""Shortened versions of the bench, memory, stress and fuzz commands.

These prove behaviour (nothing left open, every outcome accounted for, no
crash, only WSAEINVAL for malformed input); they assert no timings. The
figures come from ``python -m nspv2 bench|memory|stress|fuzz``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nspv2 import WinsockError, WSAError
from nspv2.provider.queryset import MAX_STRING_CHARS, QuerySet
from nspv2.tools.bench import run_bench
from nspv2.tools.fuzz import GuardedArena, build_image, run_fuzz
from nspv2.tools.memory import run_memory
from nspv2.tools.stress import run_stress


def test_memory_short_run_leaves_nothing_open() -> None:
    doc = run_memory(cycles=20_000, chunk=5_000)
    assert doc["open"]["provider"] == {"sessions": 0, "lookups": 0}
    assert not any(doc["open"]["host"].values())
    assert doc["sessions"]["started"] == doc["sessions"]["ended"]
    for kind in ("lookup", "rundown"):
        assert doc[kind]["growth_kib"] < 8 * 1024, (
            doc
        )  # generous: the real target is checked by `nspv2 memory`


def test_stress_short_run_accounts_for_everything() -> None:
    doc = run_stress(threads=8, cycles=300)
    assert doc["problems"] == [], doc
    for phase in doc["phases"]:
        assert phase["sessions_started"] == phase["sessions_ended"] == 8 * 300
        assert phase["open"] == {"sessions": 0, "lookups": 0}
    flush = doc["phases"][1]
    assert (
        flush["results"] == 0 and flush["outcomes"]["WSAEFAULT"] == 8 * 300
    )  # every held result dropped


def test_bench_runs_and_the_three_providers_agree() -> None:
    doc = run_bench(cycles=200, repeats=1, sessions_open=50)
    assert doc["same_answers"]
    assert set(doc["cycle_kinds"]) == {"lookup", "session", "rundown"}
    assert doc["many_open"]["sessions_open"] == 50
    assert doc["open_after"]["A"] == {"sessions": 0, "lookups": 0}
    assert doc["open_after"]["B"] == {"sessions": 0, "lookups": 0}


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
