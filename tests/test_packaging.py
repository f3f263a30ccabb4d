"""The package as users install it: what the wheel holds and what an
install without a compiler says. (A C program built against the installed
package with nothing but ``nspv2 config``'s output is docs/package.md's
example, which tests/test_docs.py runs.)

The suite runs against the installed nspv2 (conftest.py refuses the source
tree), so these tests look at what pip put in site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import nspv2
from nspv2.host import library_path
from nspv2.sdk import get_include

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(nspv2.__file__).resolve().parent
PUBLIC_HEADERS = ("nspv2_abi.h", "nspv2_host.h", "nspv2_ref_provider.h", "nspv2_messenger.h")


def _source_modules() -> set[str]:
    return {p.relative_to(ROOT / "nspv2").as_posix() for p in (ROOT / "nspv2").rglob("*.py")}


needs_install = pytest.mark.skipif(
    INSTALLED == (ROOT / "nspv2").resolve(),
    reason="NSPV2_TEST_SOURCE_TREE=1: the package under test is the source tree, not an install",
)


@needs_install
def test_every_module_of_the_source_tree_is_installed() -> None:
    installed = {p.relative_to(INSTALLED).as_posix() for p in INSTALLED.rglob("*.py")}
    missing = sorted(_source_modules() - installed)
    assert not missing, f"modules missing from the installed package: {missing}"
    assert (INSTALLED / "py.typed").is_file()


@needs_install
def test_installed_package_has_the_host_library_and_the_headers() -> None:
    built = sorted((INSTALLED / "host").glob("_nspv2host*"))
    assert len(built) == 1, built
    if not os.environ.get("NSPV2_HOST_LIBRARY"):  # the override (an ASan build, say) wins
        assert library_path().resolve() == built[0].resolve()
    include = Path(get_include())
    assert include == INSTALLED / "sdk" / "include"
    for header in PUBLIC_HEADERS:
        assert (include / header).read_bytes() == (ROOT / "native_stub" / "include" / header).read_bytes(), header


# What setup.py ships besides the public headers: (checkout folder, glob,
# installed folder). The examples' folder holds symbolic links to src/; the
# package holds the files they name.
SHIPPED_SOURCES = (
    ("native_stub/include/compat", "*.h", "sdk/include/compat"),
    ("native_stub/examples", "*.[ch]", "examples/native"),
    ("native_stub/src", "*.[ch]", "host/csrc"),
)


def _shipped_problems(installed: Path) -> list[str]:
    problems = []
    for checkout, pattern, folder in SHIPPED_SOURCES:
        sources = sorted((ROOT / checkout).glob(pattern))
        assert sources, checkout
        for source in sources:
            copy = installed / folder / source.name
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                problems.append(f"{checkout}/{source.name} is not installed as {folder}/{source.name}")
    return problems


@needs_install
def test_installed_package_ships_the_compat_headers_c_examples_and_host_sources() -> None:
    assert not _shipped_problems(INSTALLED)
    assert {"email_provider.c", "ref_provider.c", "platform.h"} <= {
        p.name for p in (INSTALLED / "examples" / "native").iterdir()
    }
    assert {"windows.h", "winsock2.h", "ws2spi.h", "ws2tcpip.h", "nsemail.h", "sal.h", "strsafe.h"} <= {
        p.name for p in (INSTALLED / "sdk" / "include" / "compat").iterdir()
    }
    assert (INSTALLED / "sdk" / "include" / "nspv2_compat.h").is_file()


def _copy_sources(dest: Path) -> None:
    """What a build needs (no compiled library, no caches)."""
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o", "build")
    shutil.copytree(ROOT / "nspv2", dest / "nspv2", ignore=ignore)
    shutil.copytree(ROOT / "native_stub", dest / "native_stub", ignore=ignore)


@pytest.mark.skipif(sys.platform == "win32", reason="the native host is not built on Windows")
def test_install_without_compiler_says_so_in_one_line_and_ships_no_stale_library(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy_sources(src)
    # A host library left over from an earlier build, where setuptools
    # would pick it up again.
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    stale_dir = src / "build" / f"lib.linux-x86_64-{tag}" / "nspv2" / "host"
    stale_dir.mkdir(parents=True)
    (stale_dir / f"_nspv2host.{tag}-x86_64-linux-gnu.so").write_bytes(b"stale")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_REQUIRE", "PYTHON", "NSPV2_"))  # NSPV2_HOST_LIBRARY would find a host
    }
    env.update(PATH=str(bin_dir), CC=str(tmp_path / "no-such-cc"))
    pip = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "-q", str(src)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    notices = [line for line in pip.stderr.splitlines() if line.startswith("nspv2:")]
    assert len(notices) == 1, pip.stderr
    assert "no C compiler found" in notices[0] and "apt-get install gcc" in notices[0]
    site = next((env_dir / "lib").glob("python3*/site-packages/nspv2/host"))
    assert not list(site.glob("_nspv2host*")), "a stale host library was packaged"
    # The C sources ship all the same (a provider or host can be built later).
    assert not _shipped_problems(site.parent)
    used = subprocess.run(
        [str(bin_dir / "python"), "-c", "import nspv2; nspv2.Host()"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert used.returncode == 1 and "NativeHostUnavailable" in used.stderr, used.stderr


def test_suite_refuses_to_test_the_source_tree(tmp_path: Path) -> None:
    """With the checkout first on sys.path, the run stops before any test."""
    env = {k: v for k, v in os.environ.items() if k != "NSPV2_TEST_SOURCE_TREE"}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests" / "test_packaging.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "imported from the source tree" in run.stderr, run.stderr
