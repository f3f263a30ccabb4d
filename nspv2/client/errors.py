"""The client side's exceptions: both are :class:`~nspv2.WinsockError`."""

from __future__ import annotations

from ..provider.errors import WinsockError
from ..sdk.winsock2 import WSAError

__all__ = [
    "WSAECONNRESET",
    "WSAEPROCLIM",
    "ConnectionLost",
    "RuntimeDirRefused",
    "ServerNotFound",
]

#: WSAECONNRESET: the connection to the provider process is gone.
WSAECONNRESET = 10054
#: WSAEPROCLIM: the server has as many clients as it takes.
WSAEPROCLIM = 10067


class ServerNotFound(WinsockError):  # noqa: N818 - the documented name
    """No provider process to talk to (none serving, several, or the runtime
    folder refused); the code is WSASERVICE_NOT_FOUND, the message says why."""

    def __init__(self, message: str, code: int = WSAError.WSASERVICE_NOT_FOUND) -> None:
        super().__init__(code, message)

    def __reduce__(self) -> tuple[type[ServerNotFound], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message or "", self.code))


class RuntimeDirRefused(ServerNotFound):
    """The runtime folder is not private to this user (owned by another uid,
    group or other permission bits, not a folder): nothing in it is trusted."""


class ConnectionLost(WinsockError):  # noqa: N818 - the documented name
    """The connection to the provider process is dead: it closed or broke
    (WSAECONNRESET), or the server ended it with an ERROR frame (that frame's
    code and text). Every later call on the same client raises it again."""

    def __init__(self, code: int = WSAECONNRESET, message: str | None = None) -> None:
        super().__init__(code, message)
