"""Shared fixtures: every test fails if anything reached sys.unraisablehook
(ctypes reports an exception escaping a callback there).

The suite tests the installed nspv2, never the source tree beside it: a run
that would import ``nspv2`` from this checkout stops before the first test
(README's test command installs the package and runs pytest from a temporary
folder with ``--import-mode=importlib``, so nothing puts the checkout on
sys.path). Set NSPV2_TEST_SOURCE_TREE=1 to iterate on an editable install;
the packaging tests then say what they cannot prove.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nspv2

from .asan import skip_unsuitable_under_asan

ROOT = Path(__file__).resolve().parent.parent
UNDER_TEST = Path(nspv2.__file__).resolve().parent
FROM_SOURCE_TREE = UNDER_TEST == (ROOT / "nspv2").resolve()


def pytest_report_header() -> str:
    where = "the SOURCE TREE" if FROM_SOURCE_TREE else "installed"
    return f"nspv2 under test: {UNDER_TEST} ({where})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_unsuitable_under_asan(items)  # only in .ci/run's ASan step (tests/asan.py)


def pytest_configure(config: pytest.Config) -> None:
    if FROM_SOURCE_TREE and os.environ.get("NSPV2_TEST_SOURCE_TREE") != "1":
        raise pytest.UsageError(
            f"nspv2 is imported from the source tree ({UNDER_TEST}), so the tests would not "
            "prove what users install. Run README's test command (it installs nspv2 and runs "
            "pytest from a temporary folder), or set NSPV2_TEST_SOURCE_TREE=1 to test an "
            "editable install on purpose."
        )


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
