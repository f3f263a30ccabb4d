"""The catalog of the tools that host providers in their own process.

``nspv2 check``, ``bench``, ``stress``, ``fuzz``, ``demo``, ``compare``,
``measure`` and ``memory`` advertise the providers they exercise on the
in-process host with ``Host(auto_install=True)``. They do it on a catalog
private to the process (:data:`nspv2.host.catalog.MEMORY`), never the
user's: a run that is killed leaves nothing installed behind, and nothing
installed by the user gets in the way.

:func:`private_catalog` is that catalog for a block of this process;
:func:`child_environment` is the environment of a child process that hosts
providers itself (``NSPV2_CATALOG=:memory:``). A provider process a tool
starts (``nspv2 stress --processes``) gets a catalog file of its own
instead, filled with :func:`install_in`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..provider.base import Provider

__all__ = ["CATALOG_ENV", "child_environment", "install_in", "private_catalog"]

#: The variable that names the catalog (docs/catalog.md).
CATALOG_ENV = "NSPV2_CATALOG"


@contextlib.contextmanager
def private_catalog(location: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """This process's catalog is its own memory (empty at first), or the
    file at ``location``, for the block; then the catalog that was in
    effect before, again."""
    from ..host.catalog import MEMORY, Catalog, use_catalog

    before = Catalog().location
    use_catalog(MEMORY if location is None else location)
    try:
        yield
    finally:
        use_catalog(None)  # the default resolution (NSPV2_CATALOG, the user's file)
        if Catalog().location != before:
            use_catalog(before)  # it had been chosen in this process


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
