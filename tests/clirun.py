"""Run the ``nspv2`` command the way a user does: as a child process, from
a folder outside the checkout (``python -m`` puts its working folder on
sys.path, so a run from the checkout would test the source tree instead of
the installed package)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The test suite's deliberately broken providers, named by file (the
#: ``tests`` package is not importable from a folder outside the checkout).
BROKEN_FILE = Path(__file__).resolve().with_name("broken_providers.py")
#: The console script installed next to this Python.
SCRIPT = Path(sys.executable).parent / ("nspv2.exe" if sys.platform == "win32" else "nspv2")
#: An empty folder, outside the checkout, removed when the test run ends.
OUTSIDE = Path(tempfile.mkdtemp(prefix="nspv2-cli-"))
atexit.register(shutil.rmtree, OUTSIDE, ignore_errors=True)


def command(script: bool = False) -> list[str]:
    """``nspv2`` (the console script) or ``python -m nspv2``."""
    return [str(SCRIPT)] if script else [sys.executable, "-m", "nspv2"]


def nspv2_cli(
    *args: str,
    cwd: Path = OUTSIDE,
    script: bool = False,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``env``: the whole environment of the command (default: this process's)."""
    return subprocess.run(
        [*command(script), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )
