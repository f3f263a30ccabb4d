"""Finding and loading nspv2's native host library.

``pip install`` compiles ``native_stub/src`` into the package as
``nspv2/host/_nspv2host*.so``. The environment variable ``NSPV2_HOST_LIBRARY``
names another build to load instead (a sanitizer build, say).

One host per process. On POSIX systems the library is loaded with
``RTLD_GLOBAL``: its symbols join the process's global scope, which the
dynamic linker searches before a library's own dependencies. A native
provider loaded afterwards (:class:`nspv2.host.NativeProvider`) therefore
resolves ``WSAAdvertiseProvider``, ``WSAProviderCompleteAsyncCall``,
``WSASetLastError`` and the rest to this very library, even when it links
its own copy of the host (a ``DT_NEEDED`` on another build, or the host's
sources compiled in with default visibility): the provider's tables are
advertised where nspv2's :class:`~nspv2.host.Host` and harness look for
them. :func:`host_copies` names the other copies mapped into the process,
for the one case this cannot cover (a copy whose functions bind inside
itself: hidden visibility, ``-Bsymbolic``, static linking).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

from . import pinning

__all__ = [
    "NativeHostUnavailable",
    "client_library_path",
    "host_copies",
    "library_path",
    "load_library",
]


class NativeHostUnavailable(RuntimeError):  # noqa: N818 - reads better than ...Error
    """The native host library is not there (or cannot be loaded)."""


_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None


def library_path() -> Path:
    """Where the native host library is; raises NativeHostUnavailable."""
    override = os.environ.get("NSPV2_HOST_LIBRARY")
    if override:
        path = Path(override)
        if not path.is_file():
            raise NativeHostUnavailable(f"NSPV2_HOST_LIBRARY names {path}, which does not exist")
        return path
    here = Path(__file__).resolve().parent
    patterns = (
        ["_nspv2host*.pyd", "_nspv2host*.dll"] if sys.platform == "win32" else ["_nspv2host*.so"]
    )
    # Next to this file first; then an installed copy elsewhere on sys.path
    # (running from a source checkout whose nspv2/ shadows the installed one).
    places = [here] + [Path(entry or ".").resolve() / "nspv2" / "host" for entry in sys.path]
    for place in places:
        if not place.is_dir():
            continue
        for pattern in patterns:
            found = sorted(place.glob(pattern))
            if found:
                return found[0]
    raise NativeHostUnavailable(
        "nspv2's native host library was not built when nspv2 was installed "
        "(usually because the machine had no C compiler). Install one "
        "(Debian: apt-get install gcc) and reinstall nspv2, or set NSPV2_HOST_LIBRARY "
        "to a library built with 'make -C native_stub lib'."
    )


def client_library_path() -> Path:
    """Where the C client library is (``libnspv2client``: Winsock's client
    calls for client processes of ``nspv2 serve``; docs/client-c.md).

    ``pip install`` builds it into the package as ``nspv2/host/_nspv2client*.so``;
    ``NSPV2_CLIENT_LIBRARY`` names another build. Raises NativeHostUnavailable
    (on Windows too: ws2_32.dll is the client library there)."""
    override = os.environ.get("NSPV2_CLIENT_LIBRARY")
    if override:
        path = Path(override)
        if not path.is_file():
            raise NativeHostUnavailable(f"NSPV2_CLIENT_LIBRARY names {path}, which does not exist")
        return path
    if sys.platform == "win32":
        raise NativeHostUnavailable("on Windows, client programs link with ws2_32.dll")
    here = Path(__file__).resolve().parent
    places = [here] + [Path(entry or ".").resolve() / "nspv2" / "host" for entry in sys.path]
    for place in places:
        if place.is_dir():
            found = sorted(place.glob("_nspv2client*.so"))
            if found:
                return found[0]
    raise NativeHostUnavailable(
        "nspv2's C client library was not built when nspv2 was installed "
        "(usually because the machine had no C compiler). Install one "
        "(Debian: apt-get install gcc) and reinstall nspv2, or set NSPV2_CLIENT_LIBRARY "
        "to a library built with 'make -C native_stub client'."
    )


def load_library() -> ctypes.CDLL:
    """Load the native host once per process and return it.

    Right after loading, thread-state pinning is installed
    (:func:`nspv2.host.pinning.install`: not with ``NSPV2_NO_PINNING=1``, not
    in a sub-interpreter).

    On Windows it is a ``WinDLL``: its Winsock functions are WSAAPI
    (stdcall on x86). The bindings do not depend on the class: every
    function is bound through its own prototype, WINFUNCTYPE for WSAAPI and
    CFUNCTYPE for the ``nspv2_*`` functions (see nspv2.host.winsock).
    """
    global _loaded
    with _lock:
        if _loaded is None:
            path = library_path()
            try:
                if sys.platform == "win32":
                    _loaded = getattr(ctypes, "WinDLL")(str(path))  # noqa: B009
                else:
                    # RTLD_GLOBAL: one host per process (see the module's docstring).
                    _loaded = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise NativeHostUnavailable(f"cannot load the native host {path}: {exc}") from exc
            # thread-state pinning for Python providers (nspv2.host.pinning)
            pinning.install(_loaded)
        return _loaded


def _mapped_files() -> dict[str, list[tuple[int, int]]]:
    """The files mapped into this process, with their address ranges."""
    out: dict[str, list[tuple[int, int]]] = {}
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or not fields[5].startswith("/"):
                    continue
                path = fields[5].rstrip("\n")
                if path.endswith(" (deleted)"):
                    continue
                low, _, high = fields[0].partition("-")
                out.setdefault(path, []).append((int(low, 16), int(high, 16)))
    except OSError:
        pass
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def host_copies() -> list[Path]:
    """Other copies of the host library mapped into this process (Linux).

    A copy is a mapped file, other than the host nspv2 loaded, that
    defines ``WSAAdvertiseProvider`` itself (an exported definition lying
    in its own mapping) or whose name says it is the host (``*nspv2host*``).
    A provider that calls such a copy's functions directly advertises on
    that copy, where nspv2 does not see it. Empty where
    ``/proc/self/maps`` does not exist.
    """
    mapped = _mapped_files()
    if not mapped:
        return []
    ours = str(_loaded._name) if _loaded is not None else None
    if ours is None:
        try:
            ours = str(library_path())
        except NativeHostUnavailable:
            ours = None
    noload = getattr(os, "RTLD_NOLOAD", 0)
    found: list[Path] = []
    for path in mapped:
        if ours is not None and _same_file(path, ours):
            continue
        if "nspv2host" in os.path.basename(path):
            found.append(Path(path))
            continue
        if not noload or ".so" not in os.path.basename(path):
            continue
        try:
            # already mapped: RTLD_NOLOAD only looks it up, loads nothing
            lib = ctypes.CDLL(path, mode=noload | os.RTLD_LAZY)
            address = ctypes.cast(lib.WSAAdvertiseProvider, ctypes.c_void_p).value or 0
        except (OSError, AttributeError):
            continue
        # dlsym searches the object's dependencies too: count it only if the
        # definition lies in this file's own mapping
        if any(low <= address < high for low, high in mapped[path]):
            found.append(Path(path))
    return found
