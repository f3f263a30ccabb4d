"""Finding and loading nspv2's native host library.

``pip install`` compiles ``native_stub/src`` into the package as
``nspv2/host/_nspv2host*.so``. The environment variable ``NSPV2_HOST_LIBRARY``
names another build to load instead (a sanitizer build, say).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

__all__ = ["NativeHostUnavailable", "library_path", "load_library"]


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


def load_library() -> ctypes.CDLL:
    """Load the native host once per process and return it.

    On Windows it is a ``WinDLL``: its Winsock functions are WSAAPI
    (stdcall on x86). The bindings do not depend on the class: every
    function is bound through its own prototype, WINFUNCTYPE for WSAAPI and
    CFUNCTYPE for the ``nspv2_*`` functions (see nspv2.host.winsock).
    """
    global _loaded
    with _lock:
        if _loaded is None:
            path = library_path()
            loader = getattr(ctypes, "WinDLL") if sys.platform == "win32" else ctypes.CDLL  # noqa: B009
            try:
                _loaded = loader(str(path))
            except OSError as exc:
                raise NativeHostUnavailable(f"cannot load the native host {path}: {exc}") from exc
        return _loaded
