"""Call any slot of a routine table in isolation, through its C function pointer.

:class:`SlotHarness` takes a :class:`~nspv2.provider.routine.Routine` or a
:class:`~nspv2.provider.Provider`, gives it an in-process error channel, and
calls each entry point the way C does: it reads the function pointer out of
the NSPV2_ROUTINE, builds a ctypes function from that address, and passes
real C arguments (a GUID, a pointer for the session argument, a
WSAQUERYSET2W image, a DWORD buffer length, a buffer with guard bytes after
it). It reads back the return value, the last error, the async completion
code, the token or handle written, and the packed result.

It also takes a native table: an ``NSPV2_ROUTINE`` filled by C, or a
:class:`~nspv2.host.NativeTable` a loaded native provider advertised. Then
the last error is the native host's (``WSASetLastError`` /
``WSAGetLastError`` on the calling thread, where C providers set it), and
NextEx / SetServiceEx get an async handle from the host
(``nspv2_async_create``) that the provider completes with
``WSAProviderCompleteAsyncCall`` from any thread; the harness waits for it
(``nspv2_async_wait``) and closes it. A NULL slot is not called: the call
reports ``WSAEOPNOTSUPP`` with ``missing=True``, as Winsock treats a NULL
optional entry point.

Ownership: the buffers of an async call that was not completed in time
(NextEx's result buffer and length, SetServiceEx's query set) are kept until
the harness is closed, since the provider may still write them.

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
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from ..host.native_provider import NativeTable
from ..host.winsock import Winsock, load_native_host
from ..provider.base import Provider
from ..provider.channel import InProcessChannel
from ..provider.errors import WinsockError
from ..provider.queryset import Kind, QuerySet
from ..provider.routine import Routine
from ..sdk.guiddef import GUID
from ..sdk.winsock2 import LUP, NO_ERROR, SOCKET_ERROR, WSAError
from ..sdk.ws2spi import NSPV2_ROUTINE, PROTOTYPES

__all__ = ["GUARD_BYTES", "NextCall", "SlotCall", "SlotHarness"]

#: Bytes of a known pattern placed after every result buffer.
GUARD_BYTES = 64
_GUARD = 0xA5
_PROTO = {p.slot: p.functype for p in PROTOTYPES}

# Ownership: the buffer of a NextEx (and the query set of a SetServiceEx)
# that was never completed belongs to the provider for as long as the
# process lives: it may write it whenever it completes late, and the host
# refusing that completion does not undo the write. SlotHarness.close()
# moves such buffers here; nothing ever removes them (a bounded leak, one
# buffer per call that never completed, against a use-after-free).
_NEVER_FREED: list[Any] = []
_never_freed_lock = threading.Lock()
_EOPNOTSUPP = int(WSAError.WSAEOPNOTSUPP)
_ETIMEDOUT = 10060  # winsock2.h WSAETIMEDOUT: nspv2_async_wait's "not completed yet"


@dataclass(frozen=True)
class SlotCall:
    """What one entry-point call did."""

    slot: str
    returned: int | None  # the INT returned (None for VOID slots)
    last_error: int  # WSAGetLastError() after the call (INT slots)
    completion: int | None  # the async completion code (NextEx, SetServiceEx)
    value: int | None = None  # token or handle written (Startup, Begin)
    missing: bool = False  # the slot is NULL: not called, WSAEOPNOTSUPP

    @property
    def code(self) -> int:
        """The call's outcome: NO_ERROR, or the error it reported.

        SOCKET_ERROR without a last error is still a failure: WSAEINVAL, as
        the native host reports it. A NULL slot: WSAEOPNOTSUPP.
        """
        if self.missing:
            return _EOPNOTSUPP
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
    """Call a provider's slots through their C function pointers, in isolation.

    ``target``: a Provider or a Routine (Python: the harness's own error
    channel), or a native table, an ``NSPV2_ROUTINE`` or a
    :class:`~nspv2.host.NativeTable` (the native host's last error and
    async handles; ``provider_id`` defaults to the NativeTable's).
    """

    def __init__(
        self,
        target: Routine | Provider | NSPV2_ROUTINE | NativeTable,
        *,
        timeout: float = 5.0,
        provider_id: uuid.UUID | None = None,
        winsock: Winsock | None = None,
    ) -> None:
        #: The Python error channel (Python targets; unused for native ones).
        self.channel = InProcessChannel()
        self.provider: Provider | None = None
        self.routine: Routine | None = None
        self.native_table: NativeTable | None = None
        #: The native host binding (native targets only).
        self.winsock: Winsock | None = None
        self._previous_channel = None
        if isinstance(target, Provider):
            self.provider = target
            self.routine = target.routine()
            provider_id = provider_id or type(target).provider_id
        elif isinstance(target, Routine):
            self.routine = target
        elif isinstance(target, NativeTable):
            self.native_table = target
            provider_id = provider_id or target.provider_id
        elif not isinstance(target, NSPV2_ROUTINE):
            raise TypeError(
                f"SlotHarness takes a Provider, a Routine, an NSPV2_ROUTINE or a "
                f"NativeTable, not {type(target).__name__}"
            )
        if self.routine is not None:
            #: The table whose slots are called.
            self.table: NSPV2_ROUTINE = self.routine.table
            self._previous_channel = self.routine.channel
            self.routine.channel = self.channel
        else:
            if isinstance(target, NativeTable):
                self.table = target.table
            else:
                assert isinstance(target, NSPV2_ROUTINE)
                self.table = target
            self.winsock = winsock or load_native_host()
            assert self.winsock.native is not None
        self.timeout = timeout
        self.guid = GUID.from_uuid(provider_id or uuid.UUID(int=0))
        # what calls never completed may still write: kept, then never freed (close())
        self._held: list[Any] = []

    @property
    def native(self) -> bool:
        """Whether the table is a native one (host last error and async handles)."""
        return self.winsock is not None

    @property
    def held(self) -> int:
        """How many calls' buffers are kept because they were never completed."""
        return len(self._held)

    def close(self) -> None:
        """Give a Python routine table its previous channel back. The buffers
        of calls that were never completed are handed to the process: a
        provider may still write them at any time (nothing stops a late
        NextEx), so they are never freed."""
        if self.routine is not None:
            self.routine.channel = self._previous_channel
        with _never_freed_lock:
            _NEVER_FREED.extend(self._held)
        self._held.clear()

    def __enter__(self) -> SlotHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def function(self, slot: str) -> Any:
        """A ctypes function made from the C pointer stored in ``slot``
        (None when a native table's slot is NULL)."""
        if self.routine is not None:
            return _PROTO[slot](self.routine.slot_address(slot))
        if slot not in _PROTO:
            raise KeyError(f"no slot {slot!r}; slots are {', '.join(_PROTO)}")
        address = ctypes.cast(getattr(self.table, slot), ctypes.c_void_p).value
        return _PROTO[slot](address) if address else None

    def implements(self, slot: str) -> bool:
        """Whether ``slot`` is not NULL."""
        return self.function(slot) is not None

    # -- the last error and async handles: Python channel or native host --------------

    def _set_last_error(self, code: int) -> None:
        if self.winsock is not None:
            self.winsock.WSASetLastError(code)
        else:
            self.channel.set_last_error(code)

    def _get_last_error(self) -> int:
        if self.winsock is not None:
            return int(self.winsock.WSAGetLastError())
        return self.channel.get_last_error()

    def _new_call(self) -> int:
        if self.winsock is None:
            return self.channel.new_call()
        assert self.winsock.native is not None
        handle = ctypes.c_void_p(0)
        if self.winsock.native.nspv2_async_create(ctypes.byref(handle)) == SOCKET_ERROR:
            raise WinsockError(self.winsock.last_error(), "nspv2_async_create")
        assert handle.value
        return handle.value

    def _wait(self, h_async: int, keep: Any) -> tuple[int, int]:
        """(completion code, last error of the completing thread). On
        timeout ``keep`` (what the provider may still write) is held until
        close() and TimeoutError is raised."""
        if self.winsock is None:
            code = self.channel.wait(h_async, self.timeout)
            if code is None:
                self._held.append(keep)
                raise TimeoutError(f"the async call was not completed within {self.timeout} s")
            return code, NO_ERROR
        native = self.winsock.native
        assert native is not None
        code_out = ctypes.c_int(0)
        last_error = ctypes.c_int(0)
        rc = native.nspv2_async_wait(
            h_async,
            max(0, min(int(self.timeout * 1000), 0xFFFFFFFF)),
            ctypes.byref(code_out),
            ctypes.byref(last_error),
            None,
        )
        failure = self.winsock.last_error() if rc == SOCKET_ERROR else NO_ERROR
        native.nspv2_async_close(h_async)  # a later completion is refused
        if rc == SOCKET_ERROR:
            self._held.append(keep)
            if failure == _ETIMEDOUT:
                raise TimeoutError(f"the async call was not completed within {self.timeout} s")
            raise WinsockError(failure, "nspv2_async_wait")
        return int(code_out.value), int(last_error.value)

    def _missing(self, slot: str) -> SlotCall:
        return SlotCall(slot, None, _EOPNOTSUPP, None, missing=True)

    # -- INT slots --------------------------------------------------------------------

    def _int_call(self, function: Any, *args: Any) -> tuple[int, int]:
        self._set_last_error(NO_ERROR)
        returned = function(*args)
        return returned, self._get_last_error()

    def startup(self) -> SlotCall:
        """NSPv2Startup; ``value`` is the session argument written."""
        function = self.function("NSPv2Startup")
        if function is None:
            return self._missing("NSPv2Startup")
        arg = ctypes.c_void_p(0)
        returned, err = self._int_call(function, ctypes.byref(self.guid), ctypes.byref(arg))
        return SlotCall("NSPv2Startup", returned, err, None, arg.value)

    def cleanup(self, token: int | None) -> SlotCall:
        function = self.function("NSPv2Cleanup")
        if function is None:
            return self._missing("NSPv2Cleanup")
        returned, err = self._int_call(function, ctypes.byref(self.guid), token)
        return SlotCall("NSPv2Cleanup", returned, err, None)

    def rundown(self, token: int | None) -> SlotCall:
        function = self.function("NSPv2ClientSessionRundown")
        if function is None:
            return self._missing("NSPv2ClientSessionRundown")
        function(ctypes.byref(self.guid), token)
        return SlotCall("NSPv2ClientSessionRundown", None, NO_ERROR, None)

    def begin(
        self,
        token: int | None,
        restrictions: QuerySet | int | None,
        flags: int = LUP.LUP_RETURN_ALL,
    ) -> SlotCall:
        """NSPv2LookupServiceBegin; ``restrictions`` is a QuerySet (packed
        here), a raw address, or None (NULL). ``value`` is the handle."""
        function = self.function("NSPv2LookupServiceBegin")
        if function is None:
            return self._missing("NSPv2LookupServiceBegin")
        address, _alive = self._restrictions_address(restrictions)
        handle = ctypes.c_void_p(0)
        returned, err = self._int_call(
            function,
            ctypes.byref(self.guid),
            ctypes.cast(address or 0, _PROTO["NSPv2LookupServiceBegin"]._argtypes_[1]),
            int(flags),
            token,
            ctypes.byref(handle),
        )
        return SlotCall("NSPv2LookupServiceBegin", returned, err, None, handle.value)

    def end(self, handle: int | None) -> SlotCall:
        function = self.function("NSPv2LookupServiceEnd")
        if function is None:
            return self._missing("NSPv2LookupServiceEnd")
        returned, err = self._int_call(function, handle)
        return SlotCall("NSPv2LookupServiceEnd", returned, err, None)

    # -- async slots ------------------------------------------------------------------

    def next(
        self, handle: int | None, flags: int = 0, buffer_size: int = 4096, offset: int = 0
    ) -> NextCall:
        """NSPv2LookupServiceNextEx with a ``buffer_size``-byte buffer followed
        by guard bytes; waits for the completion.

        The buffer starts ``offset`` bytes (0..15) after a 16-byte boundary,
        so every alignment from 16 (offset 0) down to 1 can be tried.
        """
        if not 0 <= offset <= 15:
            raise ValueError(f"offset must be between 0 and 15, not {offset!r}")
        slot = "NSPv2LookupServiceNextEx"
        function = self.function(slot)
        if function is None:
            return NextCall(slot, None, _EOPNOTSUPP, None, missing=True)
        arena = (ctypes.c_uint8 * (buffer_size + GUARD_BYTES + 32))()
        base = ctypes.addressof(arena)
        start = ((base + 15) & ~15) + offset  # aligned like a malloc'd buffer, plus offset
        ctypes.memset(start + buffer_size, _GUARD, GUARD_BYTES)
        length = ctypes.c_uint32(buffer_size)
        h_async = self._new_call()
        function(
            h_async,
            handle,
            int(flags),
            ctypes.byref(length),
            ctypes.cast(start, _PROTO[slot]._argtypes_[4]),
        )
        code, last_error = self._wait(h_async, (arena, length))
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
            slot,
            None,
            last_error,
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
        slot = "NSPv2SetServiceEx"
        function = self.function(slot)
        if function is None:
            return self._missing(slot)
        address, alive = self._restrictions_address(reg_info)
        h_async = self._new_call()
        function(
            h_async,
            ctypes.byref(self.guid),
            ctypes.cast(address or 0, _PROTO[slot]._argtypes_[2]),
            int(operation),
            int(flags),
            token,
        )
        code, last_error = self._wait(h_async, alive)
        return SlotCall(slot, None, last_error, code)

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
