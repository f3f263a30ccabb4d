"""The native host's libFuzzer harnesses: ``make -C native_stub/fuzz short``.

Builds native_stub/fuzz/fuzz_queryset.c, fuzz_result.c and fuzz_wire.c (the
frames between provider and client processes and the query-set images they
carry) with clang (-fsanitize=fuzzer,address,undefined) into a temporary
directory, fuzzes each for a few seconds on a copy of its seed corpus and
runs every regression file;
any crash, sanitizer report or harness check is a failure. Without clang or
its libFuzzer runtime the test is skipped, except under CI (the CI
environment variable set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "native_stub" / "fuzz"
SECONDS_PER_FUZZER = 10
TIMEOUT = 360
FUZZERS = ("fuzz_queryset", "fuzz_result", "fuzz_wire", "fuzz_catalog")

DONE = re.compile(r"^Done (\d+) runs in", re.MULTILINE)


def _missing(what: str) -> None:
    """Skip for a missing tool, or fail when running under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must provide it", pytrace=False)
    pytest.skip(what)


def _require_libfuzzer(tmp: Path) -> None:
    for tool, package in (("make", "make"), ("clang", "clang")):
        if shutil.which(tool) is None:
            _missing(f"{tool} not found: install it (Debian: {package})")
    source = tmp / "probe.c"
    source.write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
        "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
        " { (void)d; (void)n; return 0; }\n"
    )
    probe = subprocess.run(
        ["clang", "-fsanitize=fuzzer,address,undefined", str(source), "-o", str(tmp / "probe")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        _missing(
            "clang cannot link a libFuzzer program (Debian: libclang-rt-<version>-dev):\n"
            + probe.stderr.strip()
        )


def test_fuzz_short(tmp_path: Path) -> None:
    _require_libfuzzer(tmp_path)
    build = tmp_path / "build"
    result = subprocess.run(
        ["make", "-C", str(FUZZ), f"BUILD={build}", f"SHORT_SECONDS={SECONDS_PER_FUZZER}", "short"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"make short failed ({result.returncode}):\n{output}"
    for name in FUZZERS:
        assert f"== {name}:" in output, f"{name} did not run:\n{output}"
    runs = [int(n) for n in DONE.findall(output)]
    assert len(runs) == len(FUZZERS), f"expected the run count of every fuzzer:\n{output}"
    assert all(n > 0 for n in runs), output
