"""The Winsock side: ``ws2_32.dll`` or nspv2's native host, and :class:`Host`.

:mod:`~nspv2.host.winsock` binds the Winsock functions on either library,
:mod:`~nspv2.host.native` finds and loads the native host, and
:class:`Host` advertises providers and plays clients against them, and
:class:`NativeProvider` loads a provider written in C that advertises
itself (:mod:`~nspv2.host.native_provider`). :class:`Catalog` is the
namespace catalog providers are installed in (:mod:`~nspv2.host.catalog`).
"""

from .catalog import Catalog, CatalogEntry
from .host import Advertised, ClientSession, Host, NextResult
from .native import NativeHostUnavailable, library_path
from .native_provider import NativeProvider, NativeProviderError, NativeTable

__all__ = [
    "Advertised",
    "Catalog",
    "CatalogEntry",
    "ClientSession",
    "Host",
    "NativeHostUnavailable",
    "NativeProvider",
    "NativeProviderError",
    "NativeTable",
    "NextResult",
    "library_path",
]
