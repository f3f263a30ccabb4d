"""The exception carrying a Winsock error code."""

from __future__ import annotations

from ..sdk.winsock2 import WSAError, error_meaning

__all__ = ["WinsockError"]


class WinsockError(Exception):
    """A Winsock error code, with its symbolic name.

    Raise it from a provider callback to fail the call with ``code``; nspv2's
    host bindings raise it when a Winsock function fails.
    """

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = int(code)
        self.message = message
        text = error_meaning(self.code)
        super().__init__(f"{text}: {message}" if message else text)

    @property
    def name(self) -> str:
        """The symbolic name (``WSAEINVAL``), or ``error N`` if unknown."""
        try:
            return WSAError(self.code).name
        except ValueError:
            return "NO_ERROR" if self.code == 0 else f"error {self.code}"

    def __reduce__(self) -> tuple[type[WinsockError], tuple[int, str | None]]:
        return (type(self), (self.code, self.message))
