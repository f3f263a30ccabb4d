"""An AddressSanitizer + UBSan build of the native host, built on demand.

``nspv2 check --asan`` runs each rule's process against this build, with the
ASan runtime preloaded, so that a provider built with ``-fsanitize=address``
(and the host itself) reports the first bad access instead of corrupting
memory silently. The build compiles the host's C sources shipped in the
package (``nspv2 config --json``: ``host_sources_dir``, with the headers of
``include_dir``) with the system C
compiler (``$CC``, else ``cc``), once per nspv2 version and sources: the
library is cached in a per-user folder (``$NSPV2_CACHE_DIR``, else
``$XDG_CACHE_HOME/nspv2``, else ``~/.cache/nspv2``) under
``asan-host/<version>-<hash of the sources and flags>/``. A lock file makes a
second check wait for a build in progress instead of building again.

Without a compiler, or with one that has no libasan, :class:`AsanUnavailable`
says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

__all__ = [
    "ASAN_FLAGS",
    "AsanHost",
    "AsanUnavailable",
    "asan_environment",
    "asan_host",
    "cache_dir",
    "host_sources_dir",
]

#: How the ASan host is compiled (after -std=c11, before the sources).
ASAN_FLAGS = (
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=undefined",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fvisibility=hidden",
)
#: The sanitizers' options in each rule's process (the user's own come after
#: and win): no leak report at exit (Python keeps memory), stop at the first
#: report with exit status 1, and no one-definition-rule report: a provider
#: library may carry its own copy of host or example code (the same global
#: names as the host's, hidden in it), which the design allows.
ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=1:detect_odr_violation=0"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1"
_LIBRARY = "libnspv2host.so"
#: Longest a build may take.
_BUILD_TIMEOUT = 600


class AsanUnavailable(RuntimeError):  # noqa: N818 - reads better than ...Error
    """No ASan host can be built here (no compiler, no libasan, no sources)."""


@dataclass(frozen=True)
class AsanHost:
    """The ASan host library and the ASan runtime to preload with it."""

    library: Path
    runtime: Path


def host_sources_dir() -> Path:
    """The host's C sources shipped in the package (``nspv2 config --json``:
    ``host_sources_dir``)."""
    from ..tools.config import host_sources_dir as shipped

    try:
        return shipped()
    except FileNotFoundError as exc:
        raise AsanUnavailable(
            f"{exc}: reinstall nspv2, or build the host with 'make -C native_stub lib "
            'CFLAGS="-fsanitize=address,undefined"\' and set NSPV2_HOST_LIBRARY to it'
        ) from exc


def cache_dir() -> Path:
    """nspv2's per-user cache folder."""
    override = os.environ.get("NSPV2_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nspv2"


def _compiler() -> str:
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if found is None:
        raise AsanUnavailable(
            f"no C compiler ({name}) to build the AddressSanitizer host: install one "
            "(Debian: apt-get install gcc) or run without --asan"
        )
    return found


def _runtime(cc: str) -> Path:
    """libasan as the compiler links it (``cc -print-file-name=libasan.so``)."""
    try:
        found = subprocess.run(
            [cc, "-print-file-name=libasan.so"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsanUnavailable(f"cannot ask {cc} where libasan is: {exc}") from exc
    path = Path(found.stdout.strip())
    if found.returncode != 0 or not path.is_absolute() or not path.exists():
        raise AsanUnavailable(
            f"{cc} has no AddressSanitizer runtime (libasan.so): install it "
            "(Debian: apt-get install libasan8, or gcc) or run without --asan"
        )
    return path.resolve()


def _sources(folder: Path) -> tuple[list[Path], list[Path]]:
    """The .c files to compile, and the include folders: nspv2's public
    headers, then the sources' own."""
    from ..sdk import get_include

    sources = sorted(p for p in folder.glob("*.c") if p.is_file())
    if not sources:
        raise AsanUnavailable(f"no C sources in {folder}")
    return sources, [Path(get_include()), folder]


def _key(cc: str, folder: Path, sources: list[Path], headers: list[Path]) -> str:
    """A hash of the compiler, the flags and every source and header."""
    digest = hashlib.sha256()
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsanUnavailable(f"the compiler {cc} does not run: {exc}") from exc
    digest.update(version.encode())
    digest.update(" ".join(ASAN_FLAGS).encode())
    files = sorted(set(sources) | {h for d in headers for h in d.glob("*.h")})
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class _Lock:
    """An exclusive lock on a file (fcntl), held while building."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc: object) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def asan_host(sources_dir: Path | None = None, cache: Path | None = None) -> AsanHost:
    """The ASan host library, built now if the cache has none for these sources."""
    if sys.platform == "win32":
        raise AsanUnavailable("the AddressSanitizer host is built on POSIX systems only")
    folder = sources_dir or host_sources_dir()
    cc = _compiler()
    runtime = _runtime(cc)
    sources, headers = _sources(folder)
    key = _key(cc, folder, sources, headers)
    home = (cache or cache_dir()) / "asan-host"
    target = home / f"{__version__}-{key}"
    library = target / _LIBRARY
    if library.is_file():
        return AsanHost(library, runtime)
    home.mkdir(parents=True, exist_ok=True)
    with _Lock(home / f"{__version__}-{key}.lock"):
        if library.is_file():  # built by another check while this one waited
            return AsanHost(library, runtime)
        target.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=target)
        os.close(handle)
        command = [
            cc,
            "-std=c11",
            *ASAN_FLAGS,
            *(f"-I{d}" for d in headers),
            *(str(s) for s in sources),
            "-o",
            partial,
        ]
        try:
            built = subprocess.run(
                command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            Path(partial).unlink(missing_ok=True)
            raise AsanUnavailable(f"building the AddressSanitizer host failed: {exc}") from exc
        if built.returncode != 0:
            Path(partial).unlink(missing_ok=True)
            tail = "\n".join((built.stderr or built.stdout).strip().splitlines()[-10:])
            raise AsanUnavailable(
                f"building the AddressSanitizer host failed ({' '.join(command[:4])} ...):\n{tail}"
            )
        os.replace(partial, library)
    return AsanHost(library, runtime)


def asan_environment(
    base: dict[str, str] | None = None, host: AsanHost | None = None
) -> dict[str, str]:
    """An environment for a process to run on the ASan host: ``LD_PRELOAD``
    the runtime, ``NSPV2_HOST_LIBRARY`` the ASan host, the sanitizers'
    options (the user's own, if any, after ours)."""
    found = host or asan_host()
    env = dict(os.environ if base is None else base)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{found.runtime} {preload}".strip()
    env["NSPV2_HOST_LIBRARY"] = str(found.library)
    for name, ours in (("ASAN_OPTIONS", ASAN_OPTIONS), ("UBSAN_OPTIONS", UBSAN_OPTIONS)):
        theirs = env.get(name, "")
        env[name] = f"{ours}:{theirs}" if theirs else ours
    return env
