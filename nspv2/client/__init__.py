"""Client processes of a provider process (``nspv2 serve``).

:mod:`nspv2.client.discovery` finds the server (docs/serve.md's rules);
:mod:`nspv2.client.wire` is the protocol (native_stub/src/wire.h);
:class:`nspv2.Client` is one client process's session with one provider
process; :class:`WinsockClient` makes Winsock's client calls (the C client
library, ws2_32.dll on Windows), routed across every provider process.
"""

from .client import Client, status
from .discovery import ServerInfo, choose, live_servers, remove_stale, runtime_dir
from .errors import ConnectionLost, RuntimeDirRefused, ServerNotFound
from .winsock_client import WinsockClient

__all__ = [
    "Client",
    "ConnectionLost",
    "RuntimeDirRefused",
    "ServerInfo",
    "ServerNotFound",
    "WinsockClient",
    "choose",
    "live_servers",
    "remove_stale",
    "runtime_dir",
    "status",
]
