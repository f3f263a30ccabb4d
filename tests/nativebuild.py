"""Building native providers for the tests, the way a user builds one.

:func:`build_provider` compiles C sources into a shared library with
exactly ``cc -std=c11 -Wall -Wextra -Werror -shared -fPIC`` and the flags
``nspv2 config --cflags [--compat] --libs`` prints (the installed nspv2's
headers and the host library it loads, NSPV2_HOST_LIBRARY included), run
through this interpreter's ``python -m nspv2``. ``asan=True`` builds the
provider with AddressSanitizer (it then loads only into a process with
libasan preloaded, as ``nspv2 check --native --asan`` runs it).

The session fixture ``native_lib`` is a factory with the same arguments
that builds each (sources, defines, asan, compat, include_dirs) once per
test session. The sources: :func:`email_sources` (the email example's C
provider as installed, built with compat), :data:`BROKEN_SOURCE` with one
of :data:`BREAKS` defined, :data:`ALTERED_SOURCE`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

NATIVE_DIR = Path(__file__).resolve().parent / "native"
BROKEN_SOURCE = NATIVE_DIR / "broken_provider.c"
ALTERED_SOURCE = NATIVE_DIR / "altered_email.c"
WARN = ("-std=c11", "-Wall", "-Wextra", "-Werror")
ASAN = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")

# The compile-time breaks of broken_provider.c (tests/native/broken_provider.c
# says what each one does).
BREAKS = (
    "BREAK_OVERRUN",
    "BREAK_WRONG_SIZE",
    "BREAK_END_FREES_TWICE",
    "BREAK_NO_COMPLETION",
    "BREAK_DOUBLE_COMPLETION",
    "BREAK_BAD_BLOB",
    "BREAK_NO_LAST_ERROR",
    "BREAK_CRASH_IN_NEXT",
)


class NativeBuildError(RuntimeError):
    """The compiler failed; the message has its command and output."""


def compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def nspv2_config(*flags: str) -> str:
    """What ``nspv2 config FLAGS`` prints (this interpreter's nspv2)."""
    return subprocess.run(
        [sys.executable, "-m", "nspv2", "config", *flags],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def email_sources() -> list[Path]:
    """The email example's C provider, as the installed package ships it."""
    examples = Path(json.loads(nspv2_config("--json"))["examples_dir"])
    return [examples / "email_provider.c", examples / "ref_provider.c"]


def build_command(
    output: Path,
    sources: Iterable[Path | str],
    *,
    defines: Iterable[str] = (),
    asan: bool = False,
    compat: bool = False,
    include_dirs: Iterable[Path | str] = (),
) -> list[str]:
    cc = compiler()
    if cc is None:
        raise NativeBuildError("no C compiler (cc, gcc or clang) on PATH")
    flags = shlex.split(nspv2_config("--cflags", *(["--compat"] if compat else []), "--libs"))
    return [
        cc,
        *WARN,
        "-shared",
        "-fPIC",
        *(ASAN if asan else ()),
        *(f"-I{d}" for d in include_dirs),
        *(f"-D{d}" for d in defines),
        *(str(s) for s in sources),
        *flags,
        "-o",
        str(output),
    ]


def build_provider(
    out_dir: Path,
    sources: Sequence[Path | str],
    *,
    defines: Iterable[str] = (),
    asan: bool = False,
    compat: bool = False,
    include_dirs: Iterable[Path | str] = (),
) -> Path:
    """Compile ``sources`` into ``out_dir/<first source>-<hash>.so``."""
    defines, include_dirs = tuple(defines), tuple(include_dirs)
    key = repr(([str(s) for s in sources], defines, asan, compat, [str(d) for d in include_dirs]))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{Path(sources[0]).stem}-{digest}.so"
    command = build_command(
        output, sources, defines=defines, asan=asan, compat=compat, include_dirs=include_dirs
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise NativeBuildError(f"{shlex.join(command)}\n{done.stdout}{done.stderr}")
    return output


NativeLib = Callable[..., Path]


@pytest.fixture(scope="session")
def native_lib(tmp_path_factory: pytest.TempPathFactory) -> NativeLib:
    """``native_lib(sources, defines=(), asan=False, compat=False,
    include_dirs=())``: the built library, built once per session."""
    if compiler() is None:
        pytest.skip("no C compiler to build native providers")
    out_dir = tmp_path_factory.mktemp("native-providers")
    built: dict[tuple[object, ...], Path] = {}

    def build(
        sources: Sequence[Path | str],
        defines: Iterable[str] = (),
        asan: bool = False,
        compat: bool = False,
        include_dirs: Iterable[Path | str] = (),
    ) -> Path:
        defines, include_dirs = tuple(defines), tuple(include_dirs)
        key = (tuple(str(s) for s in sources), defines, asan, compat, tuple(map(str, include_dirs)))
        if key not in built:
            built[key] = build_provider(
                out_dir,
                sources,
                defines=defines,
                asan=asan,
                compat=compat,
                include_dirs=include_dirs,
            )
        return built[key]

    return build


def email_provider(native_lib: NativeLib, *, asan: bool = False) -> Path:
    """The email example's C provider, built with the compat flags."""
    return native_lib(email_sources(), asan=asan, compat=True)


def broken_provider(native_lib: NativeLib, brk: str | None = None, *, asan: bool = False) -> Path:
    """tests/native/broken_provider.c, intact (None) or with one of BREAKS."""
    if brk is not None and brk not in BREAKS:
        raise ValueError(f"{brk} is not one of {BREAKS}")
    return native_lib([BROKEN_SOURCE], defines=[brk] if brk else [], asan=asan)


def altered_email_provider(native_lib: NativeLib, *, asan: bool = False) -> Path:
    """tests/native/altered_email.c: the email provider with one visible
    difference (Begin drops LUP_RETURN_COMMENT, so results have no comment)."""
    sources = email_sources()
    return native_lib(
        [ALTERED_SOURCE, sources[1]], asan=asan, compat=True, include_dirs=[sources[0].parent]
    )
