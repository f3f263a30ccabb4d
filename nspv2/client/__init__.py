"""Client processes of a provider process (``nspv2 serve``).

:mod:`nspv2.client.discovery` finds the server (docs/serve.md's rules);
:mod:`nspv2.client.wire` is the protocol (native_stub/src/wire.h);
:class:`nspv2.Client` is one client process's session.
"""

from .client import Client, status
from .discovery import ServerInfo, choose, live_servers, remove_stale, runtime_dir
from .errors import ConnectionLost, RuntimeDirRefused, ServerNotFound

__all__ = [
    "Client",
    "ConnectionLost",
    "RuntimeDirRefused",
    "ServerInfo",
    "ServerNotFound",
    "choose",
    "live_servers",
    "remove_stale",
    "runtime_dir",
    "status",
]
