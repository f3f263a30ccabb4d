"""The Winsock side: ``ws2_32.dll`` or nspv2's native host, and :class:`Host`.

:mod:`~nspv2.host.winsock` binds the Winsock functions on either library,
:mod:`~nspv2.host.native` finds and loads the native host, and
:class:`Host` advertises providers and plays clients against them.
"""

from .host import Advertised, ClientSession, Host, NextResult
from .native import NativeHostUnavailable, library_path

__all__ = [
    "Advertised",
    "ClientSession",
    "Host",
    "NativeHostUnavailable",
    "NextResult",
    "library_path",
]
