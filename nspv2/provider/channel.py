"""The error channel: how a provider reports results back to its host.

An NSPv2 provider talks back to Winsock through two calls:
``WSASetLastError`` (before an INT entry point returns ``SOCKET_ERROR``) and
``WSAProviderCompleteAsyncCall`` (to finish ``NSPv2LookupServiceNextEx`` and
``NSPv2SetServiceEx``). :class:`ErrorChannel` is that interface.

:class:`InProcessChannel` implements it inside Python, for calling slots in
isolation when no Winsock library is bound: it keeps a last error per thread
and records every async call's completion (see :mod:`nspv2.testing`). The
native host and ``ws2_32.dll`` implementations plug into the same interface
(:func:`set_channel`).
"""

from __future__ import annotations

import itertools
import threading
from typing import Protocol, runtime_checkable

from ..sdk.winsock2 import NO_ERROR, WSAError

__all__ = [
    "ErrorChannel",
    "InProcessChannel",
    "current_channel",
    "set_channel",
]


@runtime_checkable
class ErrorChannel(Protocol):
    """What a provider needs from its host to report errors and completions."""

    def set_last_error(self, code: int) -> None:
        """``WSASetLastError(code)`` on the calling thread."""

    def get_last_error(self) -> int:
        """``WSAGetLastError()`` on the calling thread."""

    def complete(self, async_handle: int | None, code: int) -> int:
        """``WSAProviderCompleteAsyncCall(async_handle, code)``; returns its INT."""


class InProcessChannel:
    """An :class:`ErrorChannel` living in Python: per-thread last error and
    recorded completions of async calls.

    ``new_call()`` issues an async handle (non-zero, never reused); a slot
    completes it through :meth:`complete`; :meth:`wait` blocks until then.
    Completing an unknown handle, or one twice, returns ``WSAEINVAL`` as the
    native host does.
    """

    _handles = itertools.count(0x7A000001)

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: set[int] = set()
        self._done: dict[int, int] = {}
        self.completions = 0
        self.refused = 0

    def set_last_error(self, code: int) -> None:
        self._local.code = int(code)

    def get_last_error(self) -> int:
        code: int = getattr(self._local, "code", NO_ERROR)
        return code

    def new_call(self) -> int:
        """Issue a fresh async-call handle, pending until completed."""
        handle = next(self._handles)
        with self._lock:
            self._pending.add(handle)
        return handle

    def complete(self, async_handle: int | None, code: int) -> int:
        with self._cond:
            if not async_handle or async_handle not in self._pending:
                self.refused += 1
                return int(WSAError.WSAEINVAL)
            self._pending.discard(async_handle)
            self._done[async_handle] = int(code)
            self.completions += 1
            self._cond.notify_all()
        return NO_ERROR

    def wait(self, async_handle: int, timeout: float | None = 5.0) -> int | None:
        """Wait for ``async_handle``'s completion; return its code, or None on
        timeout (after which a late completion is refused)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: async_handle in self._done, timeout)
            if not ok:
                self._pending.discard(async_handle)
                return None
            return self._done.pop(async_handle)

    def pending(self) -> int:
        """Number of async calls issued and not yet completed."""
        with self._lock:
            return len(self._pending)


_default = InProcessChannel()
_current: ErrorChannel = _default


def current_channel() -> ErrorChannel:
    """The channel routine tables use when they were not given one."""
    return _current


def set_channel(channel: ErrorChannel | None) -> ErrorChannel:
    """Make ``channel`` the process default (None restores the in-process
    one); returns the previous channel."""
    global _current
    previous = _current
    _current = channel if channel is not None else _default
    return previous
