"""Windows-style provider source on Linux: nspv2_compat.h, the compat
shims and the host's compat.c, built with ``nspv2 config --compat`` from the
installed package; the email example's C provider and the test providers
keep compiling (and the email provider runs); the same provider source
compiles against mingw-w64's real Windows headers.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nspv2 import LUP, Host, QuerySet
from nspv2.host import NativeProvider
from nspv2.sdk.nsemail import InstallationBlob, installation_blob_problems

from .nativebuild import (
    BREAKS,
    NATIVE_DIR,
    NativeLib,
    altered_email_provider,
    broken_provider,
    compiler,
    email_provider,
    email_sources,
    native_lib,
    nspv2_config,
)

__all__ = ["native_lib"]  # the fixture, imported for this module's tests

ROOT = Path(__file__).resolve().parent.parent
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror"]

needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler")


def _build_program(source: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cc = compiler()
    assert cc is not None
    command = [cc, *WARN, str(source), *flags, "-pthread", "-o", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@needs_cc
def test_compat_layer_behaves_as_win32_from_a_program_built_with_config_compat(
    tmp_path: Path,
) -> None:
    """Recursive CRITICAL_SECTION across threads, wcs* on L"" literals,
    _wcsicmp, events with timeouts, WSAStartup/WSACleanup codes, the last
    error round trip and console handler delivery (tests/native/compat_checks.c)."""
    flags = shlex.split(nspv2_config("--compat", "--cflags", "--libs"))
    built = _build_program(NATIVE_DIR / "compat_checks.c", tmp_path / "checks", *flags)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(tmp_path / "checks")], capture_output=True, text=True, timeout=120)
    assert run.stdout.splitlines()[-1] == "83 checks, 0 failed", run.stdout + run.stderr
    assert run.returncode == 0


@needs_cc
def test_without_short_wchar_the_compat_header_says_what_to_do(tmp_path: Path) -> None:
    source = tmp_path / "p.c"
    source.write_text("#include <windows.h>\nint main(void) { return 0; }\n")
    compat = nspv2_config("--compat")
    wide = [f for f in shlex.split(compat) if f != "-fshort-wchar"]
    built = _build_program(source, tmp_path / "p", *shlex.split(nspv2_config("--cflags")), *wide)
    assert built.returncode != 0
    assert "16-bit wchar_t" in built.stderr and "-fshort-wchar" in built.stderr


def test_config_compat_flags_and_json_folders() -> None:
    compat = shlex.split(nspv2_config("--compat", "--cflags"))
    include = shlex.split(nspv2_config("--cflags"))[0]
    assert compat[0] == include
    assert compat[1:] == [f"{include}/compat", "-fshort-wchar", "-DUNICODE", "-D_UNICODE"]
    doc = json.loads(nspv2_config("--json"))
    assert doc["compat_cflags"] == " ".join(compat[1:])
    assert (Path(doc["examples_dir"]) / "email_provider.c").is_file()
    assert (Path(doc["host_sources_dir"]) / "compat.c").is_file()
    assert (Path(doc["include_dir"]) / "compat" / "windows.h").is_file()


@needs_cc
def test_email_provider_installs_advertises_serves_and_stops(native_lib: NativeLib) -> None:
    """The shipped example built as documented: its install blob is the
    Python mirror's, it serves the email directory, and the console close
    event stops it (main returns 0, nothing left advertised or installed)."""
    path = email_provider(native_lib)
    provider = NativeProvider.load(path)
    try:
        (table,) = provider.tables
        assert table.name == "nspv2 email example"
        assert table.blob is not None and installation_blob_problems(table.blob) == []
        parsed = InstallationBlob.parse(table.blob)
        assert [d.name for d in parsed.domains] == ["example.com", "example.org"]
        assert table.blob == InstallationBlob(domains=["example.com", "example.org"]).pack()
        host = Host(auto_install=True)
        with host.open_session() as session:
            session.set_service(QuerySet("alice@example.com", namespace=37), 0)
            found = session.lookup(QuerySet("*@example.com", namespace=37), LUP.LUP_RETURN_NAME)
            assert [r.service_instance_name for r in found] == ["alice@example.com"]
    finally:
        code = provider.close()
    assert code == 0
    assert Host(auto_install=True).stats()["providers"] == 0


@needs_cc
@pytest.mark.parametrize("brk", [None, *BREAKS])
def test_broken_provider_variants_build(native_lib: NativeLib, brk: str | None) -> None:
    assert broken_provider(native_lib, brk).is_file()


@needs_cc
def test_altered_email_provider_builds(native_lib: NativeLib) -> None:
    assert altered_email_provider(native_lib).is_file()


MINGW64 = shutil.which("x86_64-w64-mingw32-gcc")


@pytest.mark.skipif(MINGW64 is None, reason="mingw-w64 (x86_64-w64-mingw32-gcc) not installed")
def test_email_provider_compiles_against_the_real_windows_headers(tmp_path: Path) -> None:
    """The same source, unchanged, with mingw-w64's windows.h / winsock2.h /
    ws2spi.h / nsemail.h (compile only) and nspv2's headers for the rest."""
    assert MINGW64 is not None
    include = shlex.split(nspv2_config("--cflags"))[0]
    for source in email_sources():
        done = subprocess.run(
            [MINGW64, *WARN, include, "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(MINGW64 is None, reason="mingw-w64 not installed")
def test_wsadata_layout_matches_mingw_and_the_mirror(tmp_path: Path) -> None:
    """WSADATA's field order differs between _WIN64 and 32-bit: the mirror in
    nspv2_abi.h follows the pointer width as the real header does."""
    source = tmp_path / "wsadata.c"
    source.write_text(
        '#include "nspv2_abi.h"\n#include <stddef.h>\n#include <stdint.h>\n'
        "#if UINTPTR_MAX > 0xFFFFFFFFu\n"
        '_Static_assert(offsetof(WSADATA, iMaxSockets) == 4, "");\n'
        '_Static_assert(offsetof(WSADATA, lpVendorInfo) == 8, "");\n'
        '_Static_assert(offsetof(WSADATA, szDescription) == 16, "");\n'
        '_Static_assert(offsetof(WSADATA, szSystemStatus) == 273, "");\n'
        '_Static_assert(sizeof(WSADATA) == 408, "");\n'
        "#else\n"
        '_Static_assert(offsetof(WSADATA, szDescription) == 4, "");\n'
        '_Static_assert(offsetof(WSADATA, szSystemStatus) == 261, "");\n'
        '_Static_assert(offsetof(WSADATA, iMaxSockets) == 390, "");\n'
        '_Static_assert(offsetof(WSADATA, lpVendorInfo) == 396, "");\n'
        '_Static_assert(sizeof(WSADATA) == 400, "");\n'
        "#endif\n"
    )
    include = shlex.split(nspv2_config("--cflags"))[0]
    compilers = [c for c in (compiler(), MINGW64, shutil.which("i686-w64-mingw32-gcc")) if c]
    for cc in compilers:
        done = subprocess.run(
            [cc, *WARN, include, "-c", str(source), "-o", str(tmp_path / "w.o")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{cc}: {done.stderr}"


@pytest.mark.skipif(
    not (MINGW64 and shutil.which("make") and (ROOT / "native_stub" / "Makefile").is_file()),
    reason="mingw-w64, make or the source checkout missing",
)
def test_makefile_mingw_compile_check_of_the_examples(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "native_stub"), f"BUILD={tmp_path}", "examples-mingw"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="the compat layer is for non-Windows builds")
