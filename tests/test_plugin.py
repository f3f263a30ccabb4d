"""The pytest plugin: the documented example file runs and passes, with the
fixtures coming from the installed ``pytest11`` entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_documented_example_test_file_passes() -> None:
    example = ROOT / "docs" / "examples" / "test_presence.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
        capture_output=True,
        text=True,
        cwd=ROOT / "docs" / "examples",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout


def test_plugin_is_registered_by_the_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("nspv2") == "nspv2.testing.pytest_plugin"
