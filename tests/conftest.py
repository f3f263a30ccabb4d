"""Shared fixtures: every test fails if anything reached sys.unraisablehook
(ctypes reports an exception escaping a callback there).

The suite tests the installed nspv2, never the source tree beside it: a run
that would import ``nspv2`` from this checkout stops before the first test
(README's test command installs the package and runs pytest from a temporary
folder with ``--import-mode=importlib``, so nothing puts the checkout on
sys.path). Set NSPV2_TEST_SOURCE_TREE=1 to iterate on an editable install;
the packaging tests then say what they cannot prove.

No test touches the user's namespace catalog: each test runs with
NSPV2_CATALOG naming a catalog file of its own, in a fresh temporary folder
(the processes it starts inherit it); ``catalog_path`` is that file.
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
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This test's namespace catalog file (NSPV2_CATALOG; it does not exist yet).

    Set with a MonkeyPatch of its own: a test's ``monkeypatch.undo()`` does
    not take it away mid-test (and point the host at the user's catalog)."""
    path = tmp_path_factory.mktemp("catalog") / "catalog"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NSPV2_CATALOG", str(path))
        yield path


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
