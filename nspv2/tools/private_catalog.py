"""The catalog of the tools that host providers in their own process.

``nspv2 check``, ``bench``, ``stress``, ``fuzz``, ``demo``, ``compare``,
``measure`` and ``memory`` advertise the providers they exercise on the
in-process host with ``Host(auto_install=True)``. They do it on a catalog
private to the process (:data:`nspv2.host.catalog.MEMORY`), never the
user's: a run that is killed leaves nothing installed behind, and nothing
installed by the user gets in the way. Private to the process, not to a
thread or a block: see :func:`private_catalog`.

:func:`private_catalog` is that catalog for a block of this process;
:func:`child_environment` is the environment of a child process that hosts
providers itself (``NSPV2_CATALOG=:memory:``). A provider process a tool
starts (``nspv2 stress --processes``) gets a catalog file of its own
instead, filled with :func:`install_in`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..provider.base import Provider

__all__ = ["CATALOG_ENV", "child_environment", "install_in", "private_catalog"]

#: The variable that names the catalog (docs/catalog.md).
CATALOG_ENV = "NSPV2_CATALOG"


#: Guards the blocks' shared state below (any thread may enter a block).
_lock = threading.Lock()
#: The locations of the blocks open now, innermost last (one token each).
_open: list[tuple[object, str | os.PathLike[str]]] = []
#: The location in effect before the outermost open block.
_before: str | None = None


def _location() -> str:
    from ..host.catalog import Catalog
    from ..host.winsock import load_native_host

    # the native host's catalog (on Windows Catalog() is ws2_32's)
    return Catalog(load_native_host()).location


def _restore(before: str) -> None:
    from ..host.catalog import use_catalog

    use_catalog(None)  # the default resolution (NSPV2_CATALOG, the user's file)
    if _location() != before:
        use_catalog(before)  # it had been chosen in this process


@contextlib.contextmanager
def private_catalog(location: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """The native host's catalog is this process's memory, or the file at
    ``location``, for the block; then the catalog that was in effect before
    the outermost block, again.

    The choice is process-wide (``nspv2_catalog_set_path``): it applies to
    every thread of the process, not only the one in the block. Blocks may
    nest and overlap across threads: the catalog in effect is the innermost
    open block's (the one entered last), and the catalog of before is put
    back only when the last open block ends. The memory catalog is the
    process's own and is not emptied on entry: what an earlier block
    installed there and did not uninstall is still listed.
    """
    from ..host.catalog import MEMORY, use_catalog

    global _before
    token = object()
    chosen: str | os.PathLike[str] = MEMORY if location is None else location
    with _lock:
        if not _open:
            _before = _location()
        use_catalog(chosen)
        _open.append((token, chosen))
    try:
        yield
    finally:
        with _lock:
            top = _open[-1][0] is token
            _open[:] = [(t, loc) for t, loc in _open if t is not token]
            if not _open:
                assert _before is not None
                _restore(_before)
                _before = None
            elif top:
                use_catalog(_open[-1][1])  # the block that is now innermost


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (os.environ when None) with NSPV2_CATALOG=:memory:."""
    from ..host.catalog import MEMORY

    env = dict(os.environ if base is None else base)
    env[CATALOG_ENV] = MEMORY
    return env


def install_in(location: str | os.PathLike[str], provider: type[Provider]) -> None:
    """Install ``provider`` in the catalog file at ``location`` as
    ``Host(auto_install=True)`` would (its name, namespace and
    ``install_blob``), for a provider process run with NSPV2_CATALOG set to it."""
    from ..host.catalog import Catalog

    blob = provider.install_blob
    with private_catalog(location):
        Catalog().install(
            provider.provider_id,
            int(provider.namespace),
            provider.name or provider.__name__,
            None if blob is None else bytes(blob),
        )
