"""Run ``mypy --strict`` on small source files, in a subprocess.

Skips the calling test (printing why) only when mypy is not importable.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def mypy_strict(tmp_path: Path, files: dict[str, str]) -> dict[str, list[str]]:
    """Write ``files`` (name -> source) under ``tmp_path``, check them all in
    one ``mypy --strict`` run, and return each file's error and note lines."""
    if importlib.util.find_spec("mypy") is None:
        reason = "mypy is not importable in this environment; the typing test cannot run"
        print(reason)
        pytest.skip(reason)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    # The package as this interpreter imports it. An installed one mypy finds
    # in site-packages (and refuses it on MYPYPATH); an editable install's
    # import hook is invisible to mypy, so then name its folder.
    import nspv2

    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    home = Path(nspv2.__file__).resolve().parent.parent
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if home not in installed:
        env["MYPYPATH"] = str(home)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--show-error-codes",
            *files,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    found: dict[str, list[str]] = {name: [] for name in files}
    for line in out.stdout.splitlines():
        name = line.split(":", 1)[0]
        if name in found:
            found[name].append(line)
    if out.returncode not in (0, 1) or (out.returncode == 1) != any(
        " error: " in line for lines in found.values() for line in lines
    ):
        raise AssertionError(f"mypy failed to run:\n{out.stdout}\n{out.stderr}")
    return found


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if " error: " in line]
