"""Shared fixtures: every test fails if anything reached sys.unraisablehook
(ctypes reports an exception escaping a callback there)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_unraisable() -> Iterator[list[Any]]:
    seen: list[Any] = []
    previous = sys.unraisablehook

    def hook(info: Any) -> None:
        seen.append(info)

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous
    assert not seen, f"an exception reached sys.unraisablehook: {seen[0].exc_value!r}"
