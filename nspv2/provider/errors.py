"""The exception carrying a Winsock error code."""

from __future__ import annotations

from ..sdk.winsock2 import WSAError, error_meaning

__all__ = ["WinsockError"]


class WinsockError(Exception):
    """A Winsock error code, with its symbolic name.

    Raise it from a provider callback to fail the call with ``code``; nspv2's
    host bindings raise it when a Winsock function fails. ``code`` must fit
    in 32 bits (a signed INT or a DWORD such as an HRESULT): anything else
    is refused with ValueError, since C would silently truncate it (a code
    of 2**32 would arrive as NO_ERROR). Raised from a slot, a WinsockError
    of NO_ERROR fails the call with WSANO_RECOVERY (see
    :mod:`nspv2.provider.routine`).
    """

    def __init__(self, code: int, message: str | None = None) -> None:
        code = int(code)
        if not -(2**31) <= code < 2**32:
            raise ValueError(f"a Winsock error code fits in 32 bits; {code} does not")
        self.code = code
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
