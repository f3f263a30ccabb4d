"""Helpers to compile C probes and read what the compiler measured.

Natively, a probe runs and prints ``name value`` lines. Cross-compiled for
Windows, it is compiled to assembly only (no Windows or Wine needed) and each
``nspv2_probe__<name>`` object is read back from the ``.long`` directive that
initializes it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native_stub"
INCLUDE = NATIVE / "include"
PROBE_DIR = NATIVE / "probe"

CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]


@dataclass(frozen=True)
class Compiler:
    abi: str  # "host", "x64", "x86"
    command: str

    @property
    def cross(self) -> bool:
        return self.abi != "host"


COMPILERS = {
    "host": "cc",
    "x64": "x86_64-w64-mingw32-gcc",
    "x86": "i686-w64-mingw32-gcc",
}


def require_compiler(abi: str) -> Compiler:
    """Return the compiler for ``abi``; skip (or fail under CI) when absent."""
    command = COMPILERS[abi]
    if shutil.which(command) is None:
        if abi == "host" and shutil.which("gcc"):
            return Compiler(abi, "gcc")
        message = f"{command} not found: install mingw-w64 (Debian: gcc-mingw-w64) to run this"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must provide it", pytrace=False)
        pytest.skip(message)
    return Compiler(abi, command)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


_LABEL = re.compile(r"^_?nspv2_probe__(\w+):\s*$")
_LONG = re.compile(r"^\s*\.long\s+(-?\w+)\s*$")
_ZERO = re.compile(r"^\s*\.(?:zero|space)\s+4\s*$")


def parse_assembly(text: str) -> dict[str, int]:
    """Map probe names to the 32-bit values initializing them in ``text``."""
    values: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if not m:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        lm = _LONG.match(nxt)
        if lm:
            raw = int(lm.group(1), 0)
            values[m.group(1)] = raw - (1 << 32) if raw >= (1 << 31) else raw
        elif _ZERO.match(nxt):
            values[m.group(1)] = 0
        else:
            raise AssertionError(f"cannot read probe value {m.group(1)!r} from {nxt!r}")
    return values


def parse_output(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, value = line.split()
        values[name] = int(value)
    return values


def measure(
    compiler: Compiler, source: Path, workdir: Path, extra: list[str] | None = None
) -> dict[str, int]:
    """Compile ``source`` with ``compiler`` and return every probe value."""
    flags = [*CFLAGS, f"-I{INCLUDE}", f"-I{PROBE_DIR}", *(extra or [])]
    if compiler.cross:
        asm = workdir / f"{source.stem}-{compiler.abi}.s"
        run(
            [
                compiler.command,
                *flags,
                "-DNSPV2_PROBE_NO_MAIN",
                "-fno-zero-initialized-in-bss",
                "-S",
                str(source),
                "-o",
                str(asm),
            ]
        )
        return parse_assembly(asm.read_text())
    exe = workdir / f"{source.stem}-host"
    run([compiler.command, *flags, str(source), "-o", str(exe)])
    return parse_output(run([str(exe)]).stdout)
