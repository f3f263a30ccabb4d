"""The native host built under AddressSanitizer + UBSan, for crash cases.

A test that proves the absence of a use-after-free runs its scenario in a
child Python whose host library is this build (``asan_host`` fixture, built
once per test session into a temporary folder). The child runs with the ASan
runtime preloaded; :meth:`AsanHost.run` returns the finished process, and
:func:`sanitizer_reports` lists what the sanitizers printed.

Skips (saying why) only when no ASan build is possible: no compiler, no
``make``, no libasan, or not POSIX.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native_stub"
ASAN_CFLAGS = "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer"
#: What the sanitizers print when they find something.
MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


@dataclass(frozen=True)
class AsanHost:
    """An ASan build of the native host library and how to load it."""

    library: Path
    runtime: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(self.runtime)
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        env["NSPV2_HOST_LIBRARY"] = str(self.library)
        env["PYTHONFAULTHANDLER"] = "1"
        return env

    def run(self, code: str, *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``code`` (dedented) in a child Python on this host library."""
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def sanitizer_reports(output: str) -> list[str]:
    """The lines of ``output`` where a sanitizer reported an error."""
    return [line for line in output.splitlines() if any(m in line for m in MARKERS)]


def _build(dest: Path) -> AsanHost:
    if sys.platform == "win32":
        pytest.skip("the ASan host build is POSIX only")
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("no make or cc: cannot build the ASan host")
    if not (NATIVE / "Makefile").is_file():
        pytest.skip(f"no native_stub sources beside the tests ({NATIVE})")
    found = subprocess.run(
        ["cc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    )
    runtime = Path(found.stdout.strip())
    if found.returncode != 0 or not runtime.is_absolute() or not runtime.exists():
        pytest.skip("the compiler has no libasan.so: cannot build the ASan host")
    built = subprocess.run(
        ["make", "-C", str(NATIVE), "lib", f"BUILD={dest}", f"CFLAGS={ASAN_CFLAGS}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"building the ASan host failed:\n{built.stdout}\n{built.stderr}")
    return AsanHost(dest / "libnspv2host.so", runtime)


@pytest.fixture(scope="session")
def asan_host(tmp_path_factory: pytest.TempPathFactory) -> AsanHost:
    """The native host library under ASan+UBSan, built once per session."""
    return _build(tmp_path_factory.mktemp("asan-host"))


#: This process runs with the ASan runtime preloaded: the step of ``.ci/run``
#: that runs the whole suite against an ASan+UBSan build of the host.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


#: The tests that cannot run with the ASan runtime preloaded, by
#: ``file::name`` prefix, with the reason ``-ra`` prints. Only these skip;
#: everything else runs (tests/conftest.py applies the list).
UNSUITABLE_UNDER_ASAN: dict[str, str] = {
    "test_check_isolation.py::test_a_provider_that_takes_the_process_down_is_a_failed_rule"
    "[CrashesInLookup": "the provider reads address 0 on purpose: ASan catches the SIGSEGV, "
    "reports it and exits 1, so the process does not die of the signal the test expects",
    "test_check_isolation.py::test_text_output_names_how_the_provider_process_died": "the "
    "provider reads address 0 on purpose: ASan turns the SIGSEGV into its report and exit 1",
    "test_cli_conventions.py::test_bench_memory_stress_measure_a_users_provider": "its memory "
    "verdict measures RSS growth, and ASan keeps freed memory in quarantine",
    "test_prove.py::test_memory_short_run_leaves_nothing_open": "it measures RSS growth, and "
    "ASan keeps freed memory in quarantine",
    "test_pinning.py::test_10000_thread_exits_release_their_states": "it measures RSS growth "
    "over 10,000 thread exits, and ASan keeps freed memory and each ended thread's fake stack "
    "in quarantine (42 MiB in CI); the counters it also checks run in every other step",
    "test_prove.py::test_bench_instructions_counts_every_cycle_of_a_b_c": "valgrind cannot run "
    "a process with the ASan runtime preloaded (the callgrind child exits 1, counting nothing)",
    "test_docs.py::test_code_block[docs/package.md:61]": "it links a C program against the host "
    "library (here the ASan build): the linker's warnings about libasan join the output",
    "test_fuzz_c.py::test_fuzz_short": "the fuzzers carry clang's ASan runtime, which refuses to "
    "share a process with the preloaded one",
    "test_native_c.py::test_wine_runs_x64_tests": "wine cannot start with the ASan runtime "
    "preloaded",
    "test_compare.py::test_a_side_that_crashes_fails_at_its_step": "the provider sends itself "
    "SIGSEGV on purpose: ASan catches it, reports it and exits 1, so the side does not die of "
    "the signal the test expects",
    "test_native_provider.py::test_a_provider_linked_to_another_copy_of_the_host": "it maps a "
    "second copy of the host library, here the ASan build: ASan reports the copy's globals as "
    "an ODR violation and ends the process",
    "test_native_provider.py::test_a_provider_advertising_on_another_copy": "it maps a second "
    "copy of the host library, here the ASan build: ASan reports the copy's globals as an ODR "
    "violation and ends the process",
}


def skip_unsuitable_under_asan(items: list[pytest.Item]) -> None:
    """Under ASan only, mark the tests of :data:`UNSUITABLE_UNDER_ASAN` skipped."""
    if not UNDER_ASAN:
        return
    for item in items:
        where = f"{item.path.name}::{item.name}"
        for prefix, reason in UNSUITABLE_UNDER_ASAN.items():
            if where.startswith(prefix):
                item.add_marker(pytest.mark.skip(reason=f"under ASan: {reason}"))
