"""The native host in C: its own test program, sanitizers, Windows builds.

Each test runs one target of native_stub/Makefile into a temporary build
directory and checks the outcome: ``test`` and ``asan`` run
native_stub/tests/host_tests.c natively, ``mingw64`` / ``mingw32``
cross-compile the DLL and the test program, ``wine`` runs the x64 test
program under Wine. Missing tools skip the test, except under CI (the CI
environment variable set), where a missing cross compiler fails it. Wine is
optional everywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native_stub"
TIMEOUT = 300

SUMMARY = re.compile(r"^(\d+) checks, (\d+) failed$", re.MULTILINE)
WINE_CANDIDATES = ("wine64", "wine")
DEBIAN_WINE = Path("/usr/lib/wine/wine64")


def _missing(what: str) -> None:
    """Skip for a missing tool, or fail when running under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must provide it", pytrace=False)
    pytest.skip(what)


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        _missing(f"{tool} not found: install it (Debian: {package})")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("native_stub_build")


def make(target: str, build_dir: Path) -> str:
    """Run ``make -C native_stub <target>``; return its output, fail on error."""
    _require("make", "make")
    result = subprocess.run(
        ["make", "-C", str(NATIVE), f"BUILD={build_dir}", target],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"make {target} failed ({result.returncode}):\n{output}"
    return output


def check_test_output(output: str) -> None:
    summary = SUMMARY.findall(output)
    assert summary, f"no summary line in the test output:\n{output}"
    checks, failed = (int(n) for n in summary[-1])
    assert failed == 0 and checks > 0, output
    assert "FAIL" not in output, output
    # the driver figures (4 threads x 2000 cycles against the reference
    # provider, two names signed in; then against the bench provider)
    for line in output.splitlines():
        if line.strip().startswith(("driver ", "stats:", "stress:", "presence stress:")):
            print(line.strip())
    assert "driver 4x2000 *@example.com: 8000 cycles, 16000 results" in output
    assert "driver 4x2000 bench alice@example.com: 8000 cycles, 8000 results" in output


def test_native_host_tests(build_dir: Path) -> None:
    _require("cc", "gcc")
    check_test_output(make("test", build_dir))
    assert (build_dir / "host_tests").exists()


def test_native_host_tests_asan(build_dir: Path) -> None:
    _require("cc", "gcc")
    output = make("asan", build_dir)
    check_test_output(output)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in output, output


def test_native_shared_library(build_dir: Path) -> None:
    _require("cc", "gcc")
    make("lib", build_dir)
    library = build_dir / "libnspv2host.so"
    assert library.exists()
    nm = shutil.which("nm")
    if nm is None:
        return
    exported = subprocess.run(
        [nm, "-D", "--defined-only", str(library)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    names = {line.split()[-1] for line in exported.splitlines() if line.strip()}
    expected = {
        "WSAAdvertiseProvider",
        "WSAUnadvertiseProvider",
        "WSAProviderCompleteAsyncCall",
        "WSASetLastError",
        "WSAGetLastError",
        "nspv2_session_open",
        "nspv2_lookup_next",
        "nspv2_driver_run",
        "nspv2_ref_provider_id",
        "nspv2_ref_provider_routine",
        "nspv2_ref_provider_reset",
        "nspv2_bench_provider_id",
        "nspv2_bench_provider_routine",
    }
    assert expected <= names
    # -fvisibility=hidden: nothing internal leaks out; the compat layer adds
    # one Win32 name (kernel32's on Windows, where the DLL does not export it)
    win32 = {"SetConsoleCtrlHandler"}
    assert all(n.startswith(("WSA", "WSC", "nspv2_")) or n in win32 for n in names), sorted(names)


@pytest.mark.parametrize(
    ("target", "compiler", "abi"),
    [
        ("mingw64", "x86_64-w64-mingw32-gcc", "x64"),
        ("mingw32", "i686-w64-mingw32-gcc", "x86"),
    ],
)
def test_windows_cross_build(build_dir: Path, target: str, compiler: str, abi: str) -> None:
    package = "gcc-mingw-w64-x86-64" if abi == "x64" else "gcc-mingw-w64-i686"
    _require(compiler, package)
    make(target, build_dir)
    for name in (f"nspv2host-{abi}.dll", f"host_tests-{abi}.exe"):
        path = build_dir / name
        assert path.exists(), name
        assert path.read_bytes()[:2] == b"MZ", f"{name} is not a PE image"


WINSOCK_EXPORTS = (
    "WSAAdvertiseProvider",
    "WSAUnadvertiseProvider",
    "WSAProviderCompleteAsyncCall",
    "WSASetLastError",
    "WSAGetLastError",
    "WSCInstallNameSpaceEx",
    "WSCUnInstallNameSpace",
    "WSALookupServiceBeginW",
    "WSALookupServiceNextW",
    "WSALookupServiceEnd",
    "WSASetServiceW",
)


def _export_names(objdump: str, dll: Path) -> set[str]:
    """The names in a PE image's export table (``objdump -p``)."""
    dump = subprocess.run(
        [objdump, "-p", str(dll)], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    table = dump.split("[Ordinal/Name Pointer] Table", 1)
    assert len(table) == 2, f"no export table in {dll.name}:\n{dump}"
    names = set()
    for line in table[1].splitlines()[1:]:
        match = re.match(r"^\s*\[\s*\d+\]\s+(\S+)$", line)
        if match is None:
            break
        names.add(match.group(1))
    return names


@pytest.mark.parametrize(
    ("target", "prefix", "abi"),
    [("mingw64", "x86_64-w64-mingw32", "x64"), ("mingw32", "i686-w64-mingw32", "x86")],
)
def test_windows_dll_exports_plain_names(
    build_dir: Path, target: str, prefix: str, abi: str
) -> None:
    """ws2_32.dll exports its functions undecorated on both ABIs; so does the
    host DLL (no ``WSAAdvertiseProvider@8`` on x86), and a C client linked
    with its import library imports the plain names."""
    package = "gcc-mingw-w64-x86-64" if abi == "x64" else "gcc-mingw-w64-i686"
    _require(f"{prefix}-gcc", package)
    _require(f"{prefix}-objdump", "binutils-mingw-w64")
    make(target, build_dir)
    objdump = f"{prefix}-objdump"
    names = _export_names(objdump, build_dir / f"nspv2host-{abi}.dll")
    assert set(WINSOCK_EXPORTS) <= names, sorted(names)
    assert not [n for n in names if "@" in n], sorted(names)

    client = build_dir / f"import_client-{abi}.c"
    client.write_text(
        '#include "nspv2_host.h"\n'
        "int main(void)\n{\n"
        "    WSASetLastError(WSAEINVAL);\n"
        "    return WSAGetLastError() == WSAEINVAL ? 0 : 1;\n}\n"
    )
    exe = build_dir / f"import_client-{abi}.exe"
    subprocess.run(
        [
            f"{prefix}-gcc",
            "-I",
            str(NATIVE / "include"),
            str(client),
            "-o",
            str(exe),
            str(build_dir / f"libnspv2host-{abi}.dll.a"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    dump = subprocess.run(
        [objdump, "-p", str(exe)], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    imports = dump.split(f"DLL Name: nspv2host-{abi}.dll", 1)
    assert len(imports) == 2, dump
    imported = set(re.findall(r"^\s*[0-9a-f]+\s+\d+\s+(\S+)$", imports[1], re.MULTILINE))
    assert {"WSASetLastError", "WSAGetLastError"} <= imported, imports[1]


def _wine() -> str | None:
    for name in WINE_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return str(DEBIAN_WINE) if DEBIAN_WINE.exists() else None


def test_wine_runs_x64_tests(build_dir: Path) -> None:
    wine = _wine()
    if wine is None:
        reason = "skipped: wine not installed (Debian packages: wine wine64)"
        print(reason)
        pytest.skip(reason)
    _require("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64")
    check_test_output(make("wine", build_dir))
