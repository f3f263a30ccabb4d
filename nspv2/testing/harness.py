"""Call any slot of a routine table in isolation, through its C function pointer.

:class:`SlotHarness` takes a :class:`~nspv2.provider.routine.Routine` or a
:class:`~nspv2.provider.Provider`, gives it an in-process error channel, and
calls each entry point the way C does: it reads the function pointer out of
the NSPV2_ROUTINE, builds a ctypes function from that address, and passes
real C arguments (a GUID, a pointer for the session argument, a
WSAQUERYSET2W image, a DWORD buffer length, a buffer with guard bytes after
it). It reads back the return value, the last error, the async completion
code, the token or handle written, and the packed result.

Example: run only ClientSessionRundown on a session and check the provider
saw it::

    >>> import uuid
    >>> from nspv2 import Provider, QuerySet
    >>> from nspv2.testing import SlotHarness
    >>> class Presence(Provider):
    ...     provider_id = uuid.UUID("6642243a-3ba8-4aa6-baa5-2e0bd71fdd83")
    ...     def __init__(self):
    ...         self.gone = []
    ...     def lookup(self, session, restrictions, flags):
    ...         return []
    ...     def client_session_rundown(self, session):
    ...         self.gone.append(session.token)
    >>> provider = Presence()
    >>> with SlotHarness(provider) as h:
    ...     token = h.startup().value
    ...     call = h.rundown(token)
    ...     (call.returned, provider.gone == [token])
    ...     provider.registry.open_counts()
    ...     provider.registry.ended[-1].end_reason.name
    (None, True)
    {'sessions': 0, 'lookups': 0}
    'CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR'
"""

from __future__ import annotations

import ctypes
import uuid
from dataclasses import dataclass
from typing import Any

from ..provider.base import Provider
from ..provider.channel import InProcessChannel
from ..provider.errors import WinsockError
from ..provider.queryset import Kind, QuerySet
from ..provider.routine import Routine
from ..sdk.guiddef import GUID
from ..sdk.winsock2 import LUP, NO_ERROR, SOCKET_ERROR, WSAError
from ..sdk.ws2spi import PROTOTYPES

__all__ = ["GUARD_BYTES", "NextCall", "SlotCall", "SlotHarness"]

#: Bytes of a known pattern placed after every result buffer.
GUARD_BYTES = 64
_GUARD = 0xA5
_PROTO = {p.slot: p.functype for p in PROTOTYPES}


@dataclass(frozen=True)
class SlotCall:
    """What one entry-point call did."""

    slot: str
    returned: int | None  # the INT returned (None for VOID slots)
    last_error: int  # WSAGetLastError() after the call (INT slots)
    completion: int | None  # the async completion code (NextEx, SetServiceEx)
    value: int | None = None  # token or handle written (Startup, Begin)

    @property
    def code(self) -> int:
        """The call's outcome: NO_ERROR, or the error it reported.

        SOCKET_ERROR without a last error is still a failure: WSAEINVAL, as
        the native host reports it.
        """
        if self.completion is not None:
            return self.completion
        if self.returned == SOCKET_ERROR:
            return self.last_error or int(WSAError.WSAEINVAL)
        return NO_ERROR

    @property
    def ok(self) -> bool:
        return self.code == NO_ERROR


@dataclass(frozen=True)
class NextCall(SlotCall):
    """A NextEx call: plus the buffer length written and the result."""

    buffer_length: int = 0  # *lpdwBufferLength after the call
    result: QuerySet | None = None  # the packed result, read back (on NO_ERROR)
    raw: bytes = b""  # the caller's buffer after the call
    guard_intact: bool = True  # nothing written past the buffer
    buffer_address: int = 0
    result_error: str | None = None  # why the "successful" result could not be read


class SlotHarness:
    """Call a provider's slots through their C function pointers, in isolation."""

    def __init__(
        self,
        target: Routine | Provider,
        *,
        timeout: float = 5.0,
        provider_id: uuid.UUID | None = None,
    ) -> None:
        self.channel = InProcessChannel()
        if isinstance(target, Provider):
            self.provider: Provider | None = target
            self.routine = target.routine()
            provider_id = provider_id or type(target).provider_id
        else:
            self.provider = None
            self.routine = target
        self._previous_channel = self.routine.channel
        self.routine.channel = self.channel
        self.timeout = timeout
        self.guid = GUID.from_uuid(provider_id or uuid.UUID(int=0))

    def close(self) -> None:
        """Give the routine table its previous channel back."""
        self.routine.channel = self._previous_channel

    def __enter__(self) -> SlotHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def function(self, slot: str) -> Any:
        """A ctypes function made from the C pointer stored in ``slot``."""
        return _PROTO[slot](self.routine.slot_address(slot))

    # -- INT slots --------------------------------------------------------------------

    def _int_call(self, slot: str, *args: Any) -> tuple[int, int]:
        self.channel.set_last_error(NO_ERROR)
        returned = self.function(slot)(*args)
        return returned, self.channel.get_last_error()

    def startup(self) -> SlotCall:
        """NSPv2Startup; ``value`` is the session argument written."""
        arg = ctypes.c_void_p(0)
        returned, err = self._int_call("NSPv2Startup", ctypes.byref(self.guid), ctypes.byref(arg))
        return SlotCall("NSPv2Startup", returned, err, None, arg.value)

    def cleanup(self, token: int | None) -> SlotCall:
        returned, err = self._int_call("NSPv2Cleanup", ctypes.byref(self.guid), token)
        return SlotCall("NSPv2Cleanup", returned, err, None)

    def rundown(self, token: int | None) -> SlotCall:
        self.function("NSPv2ClientSessionRundown")(ctypes.byref(self.guid), token)
        return SlotCall("NSPv2ClientSessionRundown", None, NO_ERROR, None)

    def begin(
        self,
        token: int | None,
        restrictions: QuerySet | int | None,
        flags: int = LUP.LUP_RETURN_ALL,
    ) -> SlotCall:
        """NSPv2LookupServiceBegin; ``restrictions`` is a QuerySet (packed
        here), a raw address, or None (NULL). ``value`` is the handle."""
        address, _alive = self._restrictions_address(restrictions)
        handle = ctypes.c_void_p(0)
        returned, err = self._int_call(
            "NSPv2LookupServiceBegin",
            ctypes.byref(self.guid),
            ctypes.cast(address or 0, _PROTO["NSPv2LookupServiceBegin"]._argtypes_[1]),
            int(flags),
            token,
            ctypes.byref(handle),
        )
        return SlotCall("NSPv2LookupServiceBegin", returned, err, None, handle.value)

    def end(self, handle: int | None) -> SlotCall:
        returned, err = self._int_call("NSPv2LookupServiceEnd", handle)
        return SlotCall("NSPv2LookupServiceEnd", returned, err, None)

    # -- async slots ------------------------------------------------------------------

    def _wait(self, h_async: int) -> int:
        code = self.channel.wait(h_async, self.timeout)
        if code is None:
            raise TimeoutError(f"the async call was not completed within {self.timeout} s")
        return code

    def next(self, handle: int | None, flags: int = 0, buffer_size: int = 4096) -> NextCall:
        """NSPv2LookupServiceNextEx with a ``buffer_size``-byte buffer followed
        by guard bytes; waits for the completion."""
        arena = (ctypes.c_uint8 * (buffer_size + GUARD_BYTES + 16))()
        base = ctypes.addressof(arena)
        start = (base + 15) & ~15  # aligned like any malloc'd buffer
        ctypes.memset(start + buffer_size, _GUARD, GUARD_BYTES)
        length = ctypes.c_uint32(buffer_size)
        h_async = self.channel.new_call()
        self.function("NSPv2LookupServiceNextEx")(
            h_async,
            handle,
            int(flags),
            ctypes.byref(length),
            ctypes.cast(start, _PROTO["NSPv2LookupServiceNextEx"]._argtypes_[4]),
        )
        code = self._wait(h_async)
        guard = ctypes.string_at(start + buffer_size, GUARD_BYTES)
        intact = guard == bytes([_GUARD]) * GUARD_BYTES
        result = None
        problem = None
        if code == NO_ERROR:
            try:
                # a result must lie wholly inside the buffer it was given
                result = QuerySet.from_address(start, bounds=(start, start + buffer_size))
            except WinsockError as exc:
                problem = str(exc)
        return NextCall(
            "NSPv2LookupServiceNextEx",
            None,
            NO_ERROR,
            code,
            None,
            buffer_length=length.value,
            result=result,
            raw=ctypes.string_at(start, buffer_size),
            guard_intact=intact,
            buffer_address=start,
            result_error=problem,
        )

    def set_service(
        self,
        token: int | None,
        reg_info: QuerySet | int | None,
        operation: int,
        flags: int = 0,
    ) -> SlotCall:
        address, _alive = self._restrictions_address(reg_info)
        h_async = self.channel.new_call()
        self.function("NSPv2SetServiceEx")(
            h_async,
            ctypes.byref(self.guid),
            ctypes.cast(address or 0, _PROTO["NSPv2SetServiceEx"]._argtypes_[2]),
            int(operation),
            int(flags),
            token,
        )
        return SlotCall("NSPv2SetServiceEx", None, NO_ERROR, self._wait(h_async))

    # -- conveniences -----------------------------------------------------------------

    def results(
        self,
        token: int | None,
        restrictions: QuerySet,
        flags: int = LUP.LUP_RETURN_ALL,
        buffer_size: int = 4096,
    ) -> list[QuerySet]:
        """Begin, NextEx until WSA_E_NO_MORE (growing on WSAEFAULT), End."""
        begun = self.begin(token, restrictions, flags)
        if not begun.ok:
            raise WinsockError(begun.code, "NSPv2LookupServiceBegin")
        out: list[QuerySet] = []
        try:
            size = buffer_size
            while True:
                call = self.next(begun.value, flags, size)
                if call.code == WSAError.WSAEFAULT:
                    size = call.buffer_length
                    continue
                if call.code == WSAError.WSA_E_NO_MORE:
                    return out
                if not call.ok:
                    raise WinsockError(call.code, "NSPv2LookupServiceNextEx")
                assert call.result is not None
                out.append(call.result)
        finally:
            self.end(begun.value)

    @staticmethod
    def _restrictions_address(
        value: QuerySet | int | None, kind: Kind = "2W"
    ) -> tuple[int | None, Any]:
        """The address to pass, and the buffer to keep alive during the call."""
        if value is None or isinstance(value, int):
            return value, None
        buf = value.to_buffer(kind)
        return ctypes.addressof(buf), buf
