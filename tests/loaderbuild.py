"""Building tests/native/loader_provider.c for the loader and harness tests.

The library is built the way a user builds a provider: ``cc -shared -fPIC``
with the flags ``nspv2 config --cflags --libs`` prints (the host nspv2
loads, NSPV2_HOST_LIBRARY included).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "native" / "loader_provider.c"
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror"]


def config(*flags: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "nspv2", "config", *flags],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return shlex.split(out)


def build(out: Path, *, libs: list[str] | None = None) -> Path:
    """Compile the loader provider into ``out``; ``libs`` replaces the
    ``--libs`` flags (to link another copy of the host)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    link = config("--libs") if libs is None else libs
    cmd = [cc, *WARN, "-shared", "-fPIC", *config("--cflags"), str(SOURCE), "-o", str(out), *link]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed:\n{done.stderr}")
    return out
