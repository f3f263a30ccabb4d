"""``Routine``: an NSPV2_ROUTINE owned by Python, filled with guarded thunks.

This is the raw level: each callable receives exactly the arguments C
passes, as ctypes gives them (``pointers="ctypes"``, the SDK prototypes) or
with every pointer and handle as a plain integer address (``pointers="int"``,
same C ABI, no ctypes pointer objects built per call).

Every slot is guarded (:func:`guard_int`, :func:`guard_async`,
:func:`guard_void`): no Python exception ever reaches C.

==========================  =========================================
raised in a slot            the call fails with
==========================  =========================================
``WinsockError(code)``      ``code``
``WinsockError(0)``         ``WSANO_RECOVERY`` (logged: "failing" with
                            NO_ERROR would report a phantom success)
``MemoryError``             ``WSA_NOT_ENOUGH_MEMORY``
anything else               ``WSANO_RECOVERY`` (logged with traceback)
==========================  =========================================

A code outside 32 bits cannot be built (``WinsockError`` raises
ValueError, which the guard turns into WSANO_RECOVERY like any bug); a code
changed afterwards to such a value is treated the same way.

The guards' own reporting never lets an exception reach C: if logging or
the error channel fails (even with RecursionError at the recursion limit),
the call still fails with its code, and nothing is left to
``sys.unraisablehook``.

INT slots fail by ``WSASetLastError(code)`` and returning ``SOCKET_ERROR``;
NextEx and SetServiceEx by ``WSAProviderCompleteAsyncCall(hAsyncCall,
code)``; ClientSessionRundown has no way to fail, so it only logs.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any, Literal

from ..sdk.winsock2 import NO_ERROR, SOCKET_ERROR, WSAError, code_name
from ..sdk.ws2spi import NSPV2_ROUTINE, NSPV2_SLOTS, PROTOTYPES
from .channel import ErrorChannel, current_channel
from .errors import WinsockError

__all__ = [
    "FALLBACK_ERROR",
    "REQUIRED_SLOTS",
    "SLOT_OF",
    "Routine",
    "RoutineClosedError",
    "code_for_exception",
    "fail_async",
    "fail_int",
    "fail_void",
    "log_failure",
    "report_exception",
]

log = logging.getLogger("nspv2")

#: The code a slot fails with when Python raises something other than
#: WinsockError or MemoryError. WSANO_RECOVERY ("a nonrecoverable error
#: occurred") says the provider failed, not the caller: clients do not
#: retry it as they would WSATRY_AGAIN, and it cannot be mistaken for a
#: validation error (WSAEINVAL) or a normal end (WSA_E_NO_MORE).
FALLBACK_ERROR = WSAError.WSANO_RECOVERY
_FALLBACK = int(FALLBACK_ERROR)

#: Winsock refuses to advertise a table without these.
REQUIRED_SLOTS = ("NSPv2LookupServiceBegin", "NSPv2LookupServiceNextEx", "NSPv2LookupServiceEnd")

#: Routine's keyword for each slot -> the slot's name in NSPV2_ROUTINE.
SLOT_OF: dict[str, str] = {
    "startup": "NSPv2Startup",
    "cleanup": "NSPv2Cleanup",
    "begin": "NSPv2LookupServiceBegin",
    "next_ex": "NSPv2LookupServiceNextEx",
    "end": "NSPv2LookupServiceEnd",
    "set_service_ex": "NSPv2SetServiceEx",
    "client_session_rundown": "NSPv2ClientSessionRundown",
}
_INT_SLOTS = {"NSPv2Startup", "NSPv2Cleanup", "NSPv2LookupServiceBegin", "NSPv2LookupServiceEnd"}
_ASYNC_SLOTS = {"NSPv2LookupServiceNextEx", "NSPv2SetServiceEx"}

# The same C signatures with every pointer and handle as an integer (LPVOID
# arrives in Python as int or None), derived from the SDK prototypes.
_INT_PROTOTYPES: dict[str, Any] = {p.slot: p.address_functype for p in PROTOTYPES}
_SDK_PROTOTYPES: dict[str, Any] = {p.slot: p.functype for p in PROTOTYPES}


class RoutineClosedError(RuntimeError):
    """The routine table was closed; C must no longer call it."""


def code_for_exception(exc: BaseException) -> int:
    """The Winsock code a slot fails with when ``exc`` escapes it (as C's
    signed INT). A WinsockError whose code is NO_ERROR or does not fit in 32
    bits fails with WSANO_RECOVERY instead."""
    if isinstance(exc, WinsockError):
        code = exc.code
        if type(code) is int and code != NO_ERROR and -(2**31) <= code < 2**32:
            return code - 2**32 if code >= 2**31 else code
        return int(FALLBACK_ERROR)
    if isinstance(exc, MemoryError):
        return int(WSAError.WSA_NOT_ENOUGH_MEMORY)
    return int(FALLBACK_ERROR)


def log_failure(message: str, name: str, exc: BaseException) -> None:
    """Log ``exc`` with its traceback; never raises (logging itself may fail,
    e.g. with RecursionError near the recursion limit)."""
    try:
        log.error(message, name, exc_info=exc)
    except BaseException:
        pass


def _report(slot: str, exc: BaseException) -> int:
    code = code_for_exception(exc)
    if isinstance(exc, WinsockError) and code != FALLBACK_ERROR:
        log.debug("%s failed: %s", slot, exc)
    elif isinstance(exc, WinsockError):
        log.error(
            "%s raised WinsockError(%r), which no call can fail with; failing it with %s",
            slot,
            exc.code,
            code_name(code),
        )
    else:
        log.error(
            "%s raised %s; failing the call with %s",
            slot,
            type(exc).__name__,
            code_name(code),
            exc_info=exc,
        )
    return code


def report_exception(slot: str, exc: BaseException) -> int:
    """Log ``exc`` as the guards do and return the code to fail with; never raises."""
    try:
        return _report(slot, exc)
    except BaseException:
        try:
            return code_for_exception(exc)
        except BaseException:
            return _FALLBACK


ChannelSource = Callable[[], ErrorChannel]


def fail_int(slot: str, exc: BaseException, channel: ChannelSource) -> int:
    """An INT slot failed with ``exc``: log it, set the last error, return
    SOCKET_ERROR. Never raises (each step has its own fallback)."""
    code = _failure_code(slot, exc)
    try:
        channel().set_last_error(code)
    except BaseException:
        try:
            log.error("%s: could not set the last error", slot)
        except BaseException:
            pass
    return SOCKET_ERROR


def fail_async(slot: str, h_async: Any, exc: BaseException, channel: ChannelSource) -> None:
    """An async slot (NextEx, SetServiceEx) that still owns its call failed
    with ``exc``: complete the call with its code. Never raises."""
    code = _failure_code(slot, exc)
    try:
        rc = channel().complete(h_async, code)
    except BaseException:
        rc = None
    if rc != NO_ERROR:
        try:
            log.warning(
                "%s: completing async call %s after an exception returned %s", slot, h_async, rc
            )
        except BaseException:
            pass


def fail_void(slot: str, exc: BaseException) -> None:
    """ClientSessionRundown failed with ``exc``: log it. Never raises."""
    try:
        _report(slot, exc)
    except BaseException:
        pass


def guard_int(
    slot: str, fn: Callable[..., Any], channel: ChannelSource, closed: Callable[[], bool]
) -> Callable[..., int]:
    """Wrap an INT slot: the callable's int (None means NO_ERROR) is
    returned; an exception sets the last error and returns SOCKET_ERROR."""

    def thunk(*args: Any) -> int:
        try:
            if closed():
                raise WinsockError(WSAError.WSAEINVALIDPROVIDER, "routine table closed")
            result = fn(*args)
            if result is None:
                return NO_ERROR
            if type(result) is int:
                return result
            return int(result)
        except BaseException as exc:
            # Inline, not fail_int: one frame less when the stack is nearly
            # exhausted. No call below may raise out of here: each has its
            # own fallback.
            code = _failure_code(slot, exc)
            try:
                channel().set_last_error(code)
            except BaseException:
                try:
                    log.error("%s: could not set the last error", slot)
                except BaseException:
                    pass
            return SOCKET_ERROR

    return thunk


def _failure_code(slot: str, exc: BaseException) -> int:
    """The code a failed slot reports (logged with the traceback); never
    raises: if reporting fails, the exception's own code; if that fails too,
    the fallback."""
    try:
        return _report(slot, exc)
    except BaseException:
        try:
            return code_for_exception(exc)
        except BaseException:
            return _FALLBACK


def guard_async(
    slot: str, fn: Callable[..., Any], channel: ChannelSource, closed: Callable[[], bool]
) -> Callable[..., None]:
    """Wrap NextEx / SetServiceEx: an exception completes the async call
    (first argument) with its code."""

    def thunk(h_async: int | None, *args: Any) -> None:
        try:
            if closed():
                raise WinsockError(WSAError.WSAEINVALIDPROVIDER, "routine table closed")
            fn(h_async, *args)
        except BaseException as exc:
            # Inline, not fail_async: one frame less near the recursion limit.
            code = _failure_code(slot, exc)
            try:
                rc = channel().complete(h_async, code)
            except BaseException:
                rc = None
            if rc != NO_ERROR:
                try:
                    log.warning(
                        "%s: completing async call %s after an exception returned %s",
                        slot,
                        h_async,
                        rc,
                    )
                except BaseException:
                    pass

    return thunk


def guard_void(
    slot: str, fn: Callable[..., Any], channel: ChannelSource, closed: Callable[[], bool]
) -> Callable[..., None]:
    """Wrap ClientSessionRundown: exceptions are logged (VOID, no error path)."""

    def thunk(*args: Any) -> None:
        try:
            if closed():
                log.warning("%s called on a closed routine table; ignored", slot)
                return
            fn(*args)
        except BaseException as exc:
            fail_void(slot, exc)

    return thunk


def _stub_int(*_args: Any) -> int:
    raise WinsockError(WSAError.WSAEOPNOTSUPP)


def _stub_async(_h_async: Any, *_args: Any) -> None:
    raise WinsockError(WSAError.WSAEOPNOTSUPP)


def _stub_rundown(*_args: Any) -> None:
    log.debug("NSPv2ClientSessionRundown: not implemented by this provider (stub)")


class Routine:
    """An NSPV2_ROUTINE whose slots call Python, owned for as long as C may call it.

    Pass callables by keyword (``startup``, ``cleanup``, ``begin``,
    ``next_ex``, ``end``, ``set_service_ex``, ``client_session_rundown``);
    each has the C signature of its slot and receives exactly C's arguments.
    ``begin``, ``next_ex`` and ``end`` are required. Every slot left empty
    gets a real stub function (never NULL): INT slots fail with
    WSAEOPNOTSUPP, NextEx/SetServiceEx complete with WSAEOPNOTSUPP, and
    ClientSessionRundown's stub only logs.

    ``guarded`` names keywords whose callables guard themselves: each
    checks :attr:`closed` itself (refusing with WSAEINVALIDPROVIDER as the
    guards do), never raises, and reports its own failures with
    :func:`fail_int`, :func:`fail_async` or :func:`fail_void`; the table
    calls them directly, with no guard frame around them (the scaffold's
    :class:`~nspv2.provider.base.Provider` slots are built this way).

    ``channel`` is the error channel the guards and stubs use; by default the
    process's current one (:func:`nspv2.provider.channel.current_channel`), looked up
    at call time. Close the table (``close()`` or ``with``) once C can no
    longer call it; afterwards it refuses to be used, and any call that
    still arrives fails with WSAEINVALIDPROVIDER.
    """

    def __init__(
        self,
        *,
        begin: Callable[..., Any] | None = None,
        next_ex: Callable[..., Any] | None = None,
        end: Callable[..., Any] | None = None,
        startup: Callable[..., Any] | None = None,
        cleanup: Callable[..., Any] | None = None,
        set_service_ex: Callable[..., Any] | None = None,
        client_session_rundown: Callable[..., Any] | None = None,
        version: tuple[int, int] = (1, 1),
        channel: ErrorChannel | None = None,
        pointers: Literal["ctypes", "int"] = "ctypes",
        name: str = "provider",
        on_close: Callable[[], None] | None = None,
        guarded: frozenset[str] = frozenset(),
    ) -> None:
        given = {
            "begin": begin,
            "next_ex": next_ex,
            "end": end,
            "startup": startup,
            "cleanup": cleanup,
            "set_service_ex": set_service_ex,
            "client_session_rundown": client_session_rundown,
        }
        missing = [SLOT_OF[k] for k in ("begin", "next_ex", "end") if given[k] is None]
        if missing:
            raise ValueError(
                f"an NSPv2 routine table needs {', '.join(missing)}: Winsock refuses to "
                "advertise a table without NSPv2LookupServiceBegin, NSPv2LookupServiceNextEx "
                "and NSPv2LookupServiceEnd (WSAEINVAL)"
            )
        for key, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{key} must be callable, not {type(fn).__name__}")
        unknown = sorted(set(guarded) - set(SLOT_OF))
        if unknown or any(given[k] is None for k in guarded):
            raise ValueError(
                f"guarded names slots that are not given: {unknown or sorted(guarded)}"
            )
        if pointers not in ("ctypes", "int"):
            raise ValueError(f"pointers must be 'ctypes' or 'int', not {pointers!r}")
        self.name = name
        self._channel = channel
        self._closed = False
        self._on_close = on_close
        self.implemented: frozenset[str] = frozenset(
            SLOT_OF[k] for k, fn in given.items() if fn is not None
        )
        prototypes = _SDK_PROTOTYPES if pointers == "ctypes" else _INT_PROTOTYPES
        table = NSPV2_ROUTINE()
        table.cbSize = ctypes.sizeof(NSPV2_ROUTINE)
        table.dwMajorVersion, table.dwMinorVersion = version
        self._thunks: dict[str, Any] = {}
        self._python: dict[str, Callable[..., Any]] = {}
        for key, slot in SLOT_OF.items():
            fn = given[key]
            wrapped: Callable[..., Any]
            if key in guarded:
                assert fn is not None
                wrapped = fn
            elif slot in _INT_SLOTS:
                wrapped = guard_int(slot, fn or _stub_int, self.channel_now, self.is_closed)
            elif slot in _ASYNC_SLOTS:
                wrapped = guard_async(slot, fn or _stub_async, self.channel_now, self.is_closed)
            else:
                wrapped = guard_void(slot, fn or _stub_rundown, self.channel_now, self.is_closed)
            thunk = prototypes[slot](wrapped)
            self._thunks[slot] = thunk
            self._python[slot] = wrapped
            setattr(table, slot, ctypes.cast(thunk, _SDK_PROTOTYPES[slot]))
        self._table = table

    # -- the table ---------------------------------------------------------------

    @property
    def table(self) -> NSPV2_ROUTINE:
        """The NSPV2_ROUTINE itself (raises once closed)."""
        self._check_open()
        return self._table

    @property
    def address(self) -> int:
        """Address of the NSPV2_ROUTINE, for C."""
        return ctypes.addressof(self.table)

    def pointer(self) -> Any:
        """An ``LPNSPV2_ROUTINE`` to the table, for ctypes calls."""
        return ctypes.pointer(self.table)

    def slot_address(self, slot: str) -> int:
        """The C function pointer stored in ``slot``."""
        if slot not in NSPV2_SLOTS:
            raise KeyError(f"no slot {slot!r}; slots are {', '.join(NSPV2_SLOTS)}")
        value = ctypes.cast(getattr(self.table, slot), ctypes.c_void_p).value
        assert value
        return value

    def channel_now(self) -> ErrorChannel:
        return self._channel if self._channel is not None else current_channel()

    @property
    def channel(self) -> ErrorChannel | None:
        return self._channel

    @channel.setter
    def channel(self, value: ErrorChannel | None) -> None:
        self._channel = value

    # -- lifetime ------------------------------------------------------------------

    def is_closed(self) -> bool:
        return self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RoutineClosedError(f"the routine table of {self.name} is closed")

    def close(self) -> None:
        """Close the table. Idempotent. The thunks stay alive as long as this
        object does, so a late call from C is answered (and refused) rather
        than jumping into freed memory."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Routine:
        self._check_open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Routine {self.name} {state} implements={sorted(self.implemented)}>"
