"""``Provider``: write an NSPv2 provider as a Python class.

Subclass :class:`Provider`, declare ``provider_id`` (and optionally
``version``, ``namespace``, ``name``), and implement ``lookup``. Optional
methods: ``startup``, ``cleanup``, ``client_session_rundown``,
``set_service``. :meth:`Provider.routine` builds the NSPV2_ROUTINE:

=============================  ==============================================
C entry point                  what the scaffold does
=============================  ==============================================
NSPv2Startup                   new :class:`~nspv2.provider.registry.Session`; calls
                               ``startup(session)``; writes its token
NSPv2Cleanup                   ends the session (normal); ``cleanup(session)``
NSPv2ClientSessionRundown      ends it (OTHER_COMMUNICATION_ERROR);
                               ``client_session_rundown(session)``
NSPv2LookupServiceBegin        reads the restrictions; ``lookup(session,
                               restrictions, flags)``; writes a handle
NSPv2LookupServiceNextEx       packs the next result; completes the call
NSPv2LookupServiceEnd          ends the lookup (closes a generator)
NSPv2SetServiceEx              ``set_service(session, reg_info, op, flags)``
=============================  ==============================================

The session slots always run, because the registry lives in them; the
``startup``/``cleanup``/``client_session_rundown`` methods are optional
hooks, declared on :class:`Provider` with their signatures (so ``mypy
--strict`` checks an override) and called only when overridden.
NSPv2SetServiceEx gets the WSAEOPNOTSUPP stub when ``set_service`` is not
overridden. Any method may raise ``WinsockError(code)``.

``lookup`` may be an async generator and ``set_service`` and the hooks
``async def``: they run on the provider's event loop, and NextEx /
SetServiceEx are completed from there (:mod:`nspv2.provider.aio` states
who completes what; docs/provider.md, "Async providers").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from ..sdk.winsock2 import LUP, NO_ERROR, NS, WSAESETSERVICEOP, WSAError
from .aio import AsyncResults, AsyncRunner, NextStep, ServiceStep
from .channel import ErrorChannel, current_channel
from .errors import WinsockError
from .queryset import QuerySet, _read_queryset
from .registry import EndedBy, Lookup, Registry, Session, close_taken
from .routine import Routine, fail_async, fail_int, fail_void, log_failure, report_exception

__all__ = ["Provider"]

_P = TypeVar("_P", bound="Provider")

log = logging.getLogger("nspv2")

_EFAULT = int(WSAError.WSAEFAULT)
_NO_MORE = int(WSAError.WSA_E_NO_MORE)
_INVALID_HANDLE = int(WSAError.WSA_INVALID_HANDLE)
_CANCELLED = int(WSAError.WSA_E_CANCELLED)
_ALREADY = int(WSAError.WSAEALREADY)
_NEXT_SLOT = "NSPv2LookupServiceNextEx"
_COMMUNICATION_ERROR = Reason.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
_FLUSH = int(LUP.LUP_FLUSHPREVIOUS)
_u32_at = ctypes.c_uint32.from_address
_ptr_at = ctypes.c_void_p.from_address
_GUID_BYTES = ctypes.c_char * 16
_memmove = ctypes.memmove
_NO_RECOVERY = int(WSAError.WSANO_RECOVERY)
_INVALID_PROVIDER = int(WSAError.WSAEINVALIDPROVIDER)
_EINVAL = int(WSAError.WSAEINVAL)
_OTHER_FAILURE = Reason.CPNATFWT_SESSION_TERMINATION_PROVIDER_OTHER_FAILURE
#: Passed as ``failure`` to _next_step: pull the next result synchronously.
_PULL: Any = object()
#: Return annotations that mark a plain ``def lookup`` as async (is_async).
_ASYNC_RETURNS = ("AsyncIterator", "AsyncIterable", "AsyncGenerator")
#: The optional hooks a subclass may override.
_HOOKS = ("startup", "cleanup", "client_session_rundown", "set_service")
#: The methods whose override sends :meth:`Provider.routine` down the
#: guarded-callables path (see there).
_SLOT_METHODS = (
    "_slot_callables",
    "_slot_startup",
    "_slot_cleanup",
    "_slot_rundown",
    "_slot_begin",
    "_slot_next_ex",
    "_slot_end",
    "_slot_set_service",
)


class _Open:
    """The table of slots built to run inside a Routine's guards: those
    guards check for a closed table, so this one never reads as closed."""

    __slots__ = ()
    _closed = False


_OPEN = _Open()


class Provider:
    """Base class of an NSPv2 provider written in Python."""

    #: Required. The provider's GUID: the ``lpProviderId`` it is installed
    #: under (WSCInstallNameSpaceEx) and advertised with
    #: (WSAAdvertiseProvider); NSPv2Startup's ``lpProviderId`` is recorded
    #: on each session as ``session.provider_id``.
    provider_id: ClassVar[uuid.UUID]
    #: dwMajorVersion, dwMinorVersion written into the routine table.
    version: ClassVar[tuple[int, int]] = (1, 1)
    #: The ``dwNameSpace`` the provider is installed for (an ``NS_*`` value;
    #: NS_EMAIL by default). The scaffold does not filter on it: a host
    #: only routes queries of that namespace to the provider.
    namespace: ClassVar[int] = NS.NS_EMAIL
    #: The name the provider is installed under (``lpszIdentifier``) and
    #: logged with; None means the class name. Read it as
    #: :attr:`display_name`.
    name: ClassVar[str | None] = None
    #: If True, NextEx returns at once and the result is produced and the
    #: call completed from a worker thread (as a provider doing network I/O
    #: would). Ending the lookup meanwhile (End, its session ending, the
    #: table closing) only marks it ended; the worker, which owns the call,
    #: then completes it WSA_E_CANCELLED without writing the buffer.
    complete_from_thread: ClassVar[bool] = False
    #: Names ``nspv2 check`` looks up (the first is also what ``nspv2 bench``
    #: asks for): each becomes a query set's ``lpszServiceInstanceName``.
    #: Empty means the rules that need a lookup are skipped unless
    #: ``--query`` gives names.
    check_queries: ClassVar[tuple[str, ...]] = ()
    #: Names ``nspv2 check`` registers through NSPv2SetServiceEx
    #: (RNRSERVICE_REGISTER, in the checking session) before it looks up,
    #: so that the lookups find something; ``--register`` replaces them.
    check_registrations: ClassVar[tuple[str, ...]] = ()
    #: The ``lpProviderInfo`` blob :meth:`nspv2.Host.advertise` installs the
    #: provider with (WSCInstallNameSpaceEx); for NS_EMAIL, a
    #: NAPI_PROVIDER_INSTALLATION_BLOB (``nspv2.sdk.nsemail.InstallationBlob(...).pack()``),
    #: which ``nspv2 check`` validates. None: installed without one.
    install_blob: ClassVar[bytes | None] = None
    #: Async providers (docs/provider.md, "Async providers"): seconds one
    #: step of an async lookup (one result) or one async ``set_service`` may
    #: take; past it the step's task is cancelled and the call completed
    #: with WSAETIMEDOUT. Keep it below the host's completion timeout (the
    #: native host's is 5 s by default), or the host gives up first.
    async_timeout: ClassVar[float] = 4.0
    #: Seconds an async ``startup``/``cleanup``/``client_session_rundown``
    #: may take: those slots return synchronously, so their thread waits for
    #: the hook at most this long, then the hook's task is cancelled and the
    #: slot fails with WSAETIMEDOUT (a rundown only logs it).
    async_hook_timeout: ClassVar[float] = 2.0
    #: Async NextEx / SetServiceEx calls running on the provider's event loop
    #: at once. One more completes at once with WSATRY_AGAIN: nothing queues,
    #: and no host thread waits for room.
    async_max_in_flight: ClassVar[int] = 256

    _routine_obj: Routine | None = None
    _registry_obj: Registry | None = None
    _raising: dict[str, Callable[..., Any]] | None = None
    _aio: AsyncRunner | None = None
    _aio_closed = False
    _user_loop: asyncio.AbstractEventLoop | None = None

    def lookup(
        self, session: Session, restrictions: QuerySet, flags: int
    ) -> Iterable[QuerySet] | AsyncIterator[QuerySet]:
        """Return the results of a lookup (an iterable of QuerySet), or
        write it as an async generator (``async def`` with ``yield``).

        Called by NSPv2LookupServiceBegin. A generator's body runs at the
        first NextEx; to fail Begin itself, raise before returning (a plain
        ``def`` may validate, then return an async iterator).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement lookup()")

    # -- the routine table ----------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The sessions and lookups of this provider."""
        if self._registry_obj is None:
            self._registry_obj = Registry()
        return self._registry_obj

    @property
    def display_name(self) -> str:
        """:attr:`name`, or the class name when ``name`` is None."""
        return self.name or type(self).__name__

    # -- optional hooks ---------------------------------------------------------------
    #
    # Declared here so that a type checker checks an override's signature. The
    # scaffold calls a hook only if the subclass (or the instance) overrides
    # it; :meth:`implements` tells which do.

    def startup(self, session: Session) -> Awaitable[None] | None:
        """Hook: NSPv2Startup created ``session``. Raising fails Startup and
        ends the session (STARTUP_FAILED, PROVIDER_OTHER_FAILURE)."""

    def cleanup(self, session: Session) -> Awaitable[None] | None:
        """Hook: NSPv2Cleanup ended ``session`` (normally). Raising fails
        Cleanup; the session stays ended, with PROVIDER_OTHER_FAILURE."""

    def client_session_rundown(self, session: Session) -> Awaitable[None] | None:
        """Hook: ``session`` ended without Cleanup (NSPv2ClientSessionRundown,
        or the table closing). Called once per session; cannot fail."""

    def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> Awaitable[None] | None:
        """Hook: NSPv2SetServiceEx (register, deregister or delete
        ``reg_info``), plain or ``async def``. Without an override, the slot
        is the WSAEOPNOTSUPP stub."""
        raise WinsockError(WSAError.WSAEOPNOTSUPP, "set_service is not implemented")

    def implements(self, hook: str) -> bool:
        """Whether ``hook`` (``startup``, ``cleanup``, ``client_session_rundown``
        or ``set_service``) is overridden by this provider's class or instance."""
        return self._hook(hook) is not None

    def _hook(self, hook: str) -> Callable[..., Any] | None:
        """The bound hook if overridden, else None (the base's no-op)."""
        if hook not in _HOOKS:
            raise ValueError(f"no hook {hook!r}; hooks are {', '.join(_HOOKS)}")
        found = getattr(self, hook, None)
        if found is None or not callable(found):
            return None
        if getattr(found, "__func__", None) is getattr(Provider, hook):
            return None
        return found  # type: ignore[no-any-return]

    # -- the event loop of an async provider ------------------------------------------

    def use_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run this provider's coroutines on ``loop`` (which the caller runs,
        on a thread that never calls the host) instead of a loop thread of
        the provider's own. Call it before :meth:`routine`."""
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"use_event_loop needs an asyncio event loop, not {loop!r}")
        if self._routine_obj is not None and not self._routine_obj.closed:
            raise RuntimeError("use_event_loop must be called before routine()")
        self._user_loop = loop

    @property
    def is_async(self) -> bool:
        """Whether the provider runs work on an event loop: ``lookup`` is an
        async generator function, or a plain ``def`` whose return annotation
        is an async iterator type (``AsyncIterator[...]``,
        ``AsyncIterable[...]``, ``AsyncGenerator[...]``: what it returns
        cannot be known before it is called), or ``set_service`` or a hook
        is ``async def``. ``nspv2 serve`` sizes its pool by it."""
        lookup = self.lookup
        if inspect.isasyncgenfunction(lookup) or inspect.iscoroutinefunction(lookup):
            return True
        returns = getattr(lookup, "__annotations__", {}).get("return")
        if returns is not None:
            text = returns if isinstance(returns, str) else repr(returns)
            if any(name in text for name in _ASYNC_RETURNS):
                return True
        return any(inspect.iscoroutinefunction(self._hook(h)) for h in _HOOKS)

    def _runner(self) -> AsyncRunner:
        runner = self._aio
        if runner is None:
            with self._executor_lock:
                runner = self._aio
                if runner is None:
                    # Made under the lock _on_close takes to close it: a slot
                    # racing close() never starts a loop after it.
                    runner = self._aio = AsyncRunner(self.display_name, self._user_loop)
                    if self._aio_closed:
                        runner.close(0)
        return runner

    def async_stats(self) -> dict[str, int]:
        """The event loop's counters: ``in_flight`` (calls admitted, not yet
        completed), ``tasks`` (tasks alive or about to start: steps, hooks,
        generators closing), and since the table was built ``steps``
        admitted, ``cancelled``, ``timed_out`` and ``refused``
        (WSATRY_AGAIN). All 0 before any async work."""
        runner = self._aio
        if runner is None:
            return dict.fromkeys(
                ("in_flight", "tasks", "steps", "cancelled", "timed_out", "refused"), 0
            )
        return runner.stats()

    def wait_async_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no task of this provider is alive on its loop (e.g.
        generators still closing after End); False if ``timeout`` passed."""
        runner = self._aio
        return True if runner is None else runner.wait_idle(timeout)

    def routine(self, channel: ErrorChannel | None = None) -> Routine:
        """The provider's routine table (built on first use, then reused)."""
        if self._routine_obj is not None and not self._routine_obj.closed:
            if channel is not None:
                self._routine_obj.channel = channel
            return self._routine_obj
        cls = type(self)
        if cls.lookup is Provider.lookup:
            raise TypeError(f"{cls.__name__} must implement lookup(session, restrictions, flags)")
        if inspect.iscoroutinefunction(cls.lookup):
            raise TypeError(
                f"{cls.__name__}.lookup is an async def without yield: write it as an async "
                "generator (yield each result), or as a plain def that returns an async iterator"
            )
        pid = getattr(cls, "provider_id", None)
        if not isinstance(pid, uuid.UUID):
            raise TypeError(f"{cls.__name__}.provider_id must be a uuid.UUID, not {pid!r}")
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._aio = None  # a fresh event loop runner per table, made on first use
        self._aio_closed = False
        self._raising = None
        self.registry.reopen()
        # The fast path: each slot is one function, its guard and its body in
        # one frame. A subclass overriding _slot_callables or a _slot_*
        # method gets those callables inside Routine's guards instead.
        bind = None
        if all(getattr(cls, n) is getattr(Provider, n) for n in _SLOT_METHODS):
            slots, bind = self._build_slots(fused=True)
            guarded = frozenset(slots)
        else:
            slots, guarded = self._slot_callables(), frozenset()
        routine = Routine(
            **slots,
            version=cls.version,
            channel=channel,
            pointers="int",
            name=self.display_name,
            on_close=self._on_close,
            guarded=guarded,
        )
        if bind is not None:
            bind(routine)
        self._routine_obj = routine
        return routine

    def _slot_callables(self) -> dict[str, Callable[..., Any]]:
        """The callables :meth:`routine` installs, by Routine keyword.

        The one place to wrap them (a subclass instrumenting its entry
        points, as ``nspv2 demo`` does, overrides this). They raise on
        failure, and the table calls them inside its guards; a provider
        overriding neither this nor a ``_slot_*`` method gets the same slot
        bodies built with their guard in the same frame instead.
        """
        slots: dict[str, Callable[..., Any]] = {
            "startup": self._slot_startup,
            "cleanup": self._slot_cleanup,
            "begin": self._slot_begin,
            "next_ex": self._slot_next_ex,
            "end": self._slot_end,
            "client_session_rundown": self._slot_rundown,
        }
        if self.implements("set_service"):
            slots["set_service_ex"] = self._slot_set_service
        return slots

    def close(self) -> None:
        """Close the routine table: open sessions end with PLATFORM_SHUTDOWN."""
        if self._routine_obj is not None:
            self._routine_obj.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _on_close(self) -> None:
        # The registry refuses new sessions first: a Startup racing close()
        # either ends here with the others or fails; none is left open.
        ended = self.registry.close(
            EndedBy.CLOSE, Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
        )
        hook = self._blocking_hook("client_session_rundown")
        for session in ended:
            if hook is not None:
                try:
                    hook(session)
                except BaseException as exc:  # every session's hook runs
                    log_failure("%s: client_session_rundown on close", self.display_name, exc)
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        # After the sessions' hooks ran: every step left is cancelled and
        # completed (WSA_E_CANCELLED) before close returns.
        with self._executor_lock:
            self._aio_closed = True
            runner = self._aio
        if runner is not None:
            runner.close(self.async_timeout + self.async_hook_timeout)

    def end_sessions(self, reason: Reason) -> list[Session]:
        """End every open session with ``reason`` (e.g. on unadvertise)."""
        ended_by = (
            EndedBy.CLOSE
            if reason is Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
            else EndedBy.PROVIDER
        )
        return self.registry.close_all(ended_by, reason)

    @contextlib.contextmanager
    def running_down(self, reason: Reason) -> Iterator[None]:
        """The host is about to run down every open session (e.g. unadvertise).

        Each session open now is marked: its NSPv2ClientSessionRundown, on
        whichever thread the host delivers it (during or after the block),
        ends it with ``reason``. A rundown of any other session (a client
        that really went away) still reports OTHER_COMMUNICATION_ERROR. The
        reason travels with the sessions, never through a provider-wide
        setting toggled around the C call::

            with provider.running_down(Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN):
                winsock.unadvertise(provider_id)
        """
        self.registry.mark_rundown(reason)
        yield

    # -- slots (pointers arrive as integers) --------------------------------------------
    #
    # Each slot body is written once, in _build_slots. fused=True builds the
    # table's own slots: the guard (closed check, try/except reporting the
    # failure through the channel) is in the same frame as the body, and the
    # success path calls no channel. fused=False builds the raising bodies
    # the _slot_* methods run, for a table whose Routine guards them.

    def _raising_slots(self) -> dict[str, Callable[..., Any]]:
        slots = self._raising
        if slots is None:
            slots = self._raising = self._build_slots(fused=False)[0]
        return slots

    def _slot_startup(self, provider_id: int | None, pp_session: int | None) -> int:
        result: int = self._raising_slots()["startup"](provider_id, pp_session)
        return result

    def _slot_cleanup(self, provider_id: int | None, token: int | None) -> int:
        result: int = self._raising_slots()["cleanup"](provider_id, token)
        return result

    def _slot_rundown(self, provider_id: int | None, token: int | None) -> None:
        self._raising_slots()["client_session_rundown"](provider_id, token)

    def _slot_begin(
        self,
        provider_id: int | None,
        restrictions: int | None,
        flags: int,
        token: int | None,
        ph_lookup: int | None,
    ) -> int:
        result: int = self._raising_slots()["begin"](
            provider_id, restrictions, flags, token, ph_lookup
        )
        return result

    def _slot_next_ex(
        self,
        h_async: int | None,
        h_lookup: int | None,
        flags: int,
        p_length: int | None,
        p_results: int | None,
    ) -> None:
        self._raising_slots()["next_ex"](h_async, h_lookup, flags, p_length, p_results)

    def _slot_end(self, h_lookup: int | None) -> int:
        result: int = self._raising_slots()["end"](h_lookup)
        return result

    def _slot_set_service(
        self,
        h_async: int | None,
        provider_id: int | None,
        reg_info: int | None,
        operation: int,
        flags: int,
        token: int | None,
    ) -> None:
        self._raising_slots()["set_service_ex"](
            h_async, provider_id, reg_info, operation, flags, token
        )

    def _build_slots(
        self, *, fused: bool
    ) -> tuple[dict[str, Callable[..., Any]], Callable[[Routine], None]]:
        """The slot functions by Routine keyword, and the function that binds
        fused ones to their table once it exists (before C can call them)."""
        registry = self.registry
        sessions = registry._sessions
        lookups = registry._lookups
        # An async hook becomes a plain callable that runs it on the loop and
        # waits for it (bounded): the slot bodies below stay the same.
        startup_hook = self._blocking_hook("startup")
        cleanup_hook = self._blocking_hook("cleanup")
        rundown_hook = self._blocking_hook("client_session_rundown")
        lookup_fn = self.lookup
        async_lookup = inspect.isasyncgenfunction(lookup_fn)
        async_service = inspect.iscoroutinefunction(self._hook("set_service"))
        next_step = self._next_step
        next_async = self._next_async
        runner_now = self._runner
        threaded = self.complete_from_thread
        name = self.display_name
        table: Any = _OPEN  # the Routine once bound (fused); its _closed is read per call

        def bind(routine: Routine) -> None:
            nonlocal table
            table = routine

        def channel_now() -> ErrorChannel:
            if fused:
                channel: ErrorChannel | None = table._channel
                return channel if channel is not None else current_channel()
            routine = self._routine_obj
            assert routine is not None
            return routine.channel_now()

        def startup(provider_id: int | None, pp_session: int | None) -> int:
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                if not pp_session:
                    raise WinsockError(_EINVAL, "ppvClientSessionArg is NULL")
                # WSAEINVALIDPROVIDER once closed; the GUID's bytes are kept
                # and parsed when session.provider_id is read.
                session = registry.new_session(
                    bytes(_GUID_BYTES.from_address(provider_id)) if provider_id else None
                )
                if startup_hook is not None:
                    try:
                        startup_hook(session)
                    except BaseException:
                        registry.end_session(session.token, EndedBy.STARTUP_FAILED, _OTHER_FAILURE)
                        raise
                if session.ended:  # ended meanwhile (the table closed): it was ended once
                    raise WinsockError(
                        _INVALID_PROVIDER, f"client session {session.token:#x} ended in Startup"
                    )
                _ptr_at(pp_session).value = session.token
                return NO_ERROR
            except BaseException as exc:
                if not fused:
                    raise
                return fail_int("NSPv2Startup", exc, channel_now)

        def cleanup(_provider_id: int | None, token: int | None) -> int:
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                session = registry.end_session(token, EndedBy.CLEANUP, None)
                if session is None:
                    raise WinsockError(_EINVAL, f"no open client session {token!r}")
                if cleanup_hook is not None:
                    try:
                        cleanup_hook(session)
                    except BaseException:
                        session.end_reason = _OTHER_FAILURE
                        raise
                return NO_ERROR
            except BaseException as exc:
                if not fused:
                    raise
                return fail_int("NSPv2Cleanup", exc, channel_now)

        def rundown(_provider_id: int | None, token: int | None) -> None:
            try:
                if table._closed:
                    log.warning(
                        "NSPv2ClientSessionRundown called on a closed routine table; ignored"
                    )
                    return
                session = registry.end_session(token, EndedBy.RUNDOWN, _COMMUNICATION_ERROR)
                if session is None:
                    log.warning(
                        "%s: NSPv2ClientSessionRundown for unknown or ended session %r ignored",
                        name,
                        token,
                    )
                    return
                if rundown_hook is not None:
                    rundown_hook(session)
            except BaseException as exc:
                if not fused:
                    raise
                fail_void("NSPv2ClientSessionRundown", exc)

        def begin(
            _provider_id: int | None,
            restrictions: int | None,
            flags: int,
            token: int | None,
            ph_lookup: int | None,
        ) -> int:
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                session = sessions.get(token) if token else None  # atomic, no lock
                if session is None:
                    raise WinsockError(_EINVAL, f"no open client session {token!r}")
                if not ph_lookup:
                    raise WinsockError(_EINVAL, "lphLookup is NULL")
                # Read (and validated) entirely here: nothing reads the
                # host's buffer after Begin returns.
                query = _read_queryset(restrictions, "2W")
                raw: Any = lookup_fn(session, query, flags)
                results: Any
                if async_lookup:  # an async generator: its body starts at NextEx
                    results = AsyncResults(raw, runner_now(), float(self.async_timeout))
                else:
                    try:
                        results = iter(raw)
                    except TypeError:
                        if not hasattr(raw, "__anext__"):
                            raise
                        results = AsyncResults(raw, runner_now(), float(self.async_timeout))
                # If the session ended since the check above, this closes
                # results and fails Begin with WSAEINVAL.
                lookup = registry.new_lookup(session, query, flags, results)
                _ptr_at(ph_lookup).value = lookup.handle
                return NO_ERROR
            except BaseException as exc:
                if not fused:
                    raise
                return fail_int("NSPv2LookupServiceBegin", exc, channel_now)

        def next_ex(
            h_async: int | None,
            h_lookup: int | None,
            flags: int,
            p_length: int | None,
            p_results: int | None,
        ) -> None:
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                channel = table._channel if fused else None
                if channel is None:
                    channel = channel_now()
                lookup = lookups.get(h_lookup) if h_lookup else None  # atomic, no lock
                if lookup is None:
                    raise WinsockError(_INVALID_HANDLE, f"no open lookup {h_lookup!r}")
                if not h_async:
                    raise WinsockError(_EINVAL, "hAsyncCall is NULL")
                with lookup.lock:
                    if lookup.ended:
                        raise WinsockError(_CANCELLED, "the lookup has ended")
                    if lookup.in_flight is not None:
                        raise WinsockError(_ALREADY, "another NextEx on this lookup is in flight")
                    lookup.in_flight = h_async  # from here on, _next_step owns the call
                pulling: Any = lookup.results  # the owner's from here on
                if type(pulling) is AsyncResults:
                    if p_length and (lookup.held is None or flags & _FLUSH):
                        # Handed to the loop, or completed here; never raises.
                        next_async(channel, h_async, lookup, flags, p_length, p_results, pulling)
                        return
                elif threaded:
                    try:
                        self._pool().submit(
                            next_step, channel, h_async, lookup, flags, p_length, p_results
                        )
                    except BaseException:
                        with lookup.lock:  # not handed over: this slot completes it
                            lookup.in_flight = None
                        raise
                    return
            except BaseException as exc:
                if not fused:
                    raise
                fail_async(_NEXT_SLOT, h_async, exc, channel_now)
                return
            # Synchronous: this thread owns the call; _next_step completes it
            # exactly once and never raises.
            next_step(channel, h_async, lookup, flags, p_length, p_results)

        def end(h_lookup: int | None) -> int:
            # Marks the lookup ended and closes its generator unless a NextEx
            # is running it; never completes that NextEx (its owner does).
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                if registry.end_lookup(h_lookup) is None:
                    raise WinsockError(_INVALID_HANDLE, f"no open lookup {h_lookup!r}")
                return NO_ERROR
            except BaseException as exc:
                if not fused:
                    raise
                return fail_int("NSPv2LookupServiceEnd", exc, channel_now)

        def set_service(
            h_async: int | None,
            _provider_id: int | None,
            reg_info: int | None,
            operation: int,
            flags: int,
            token: int | None,
        ) -> None:
            try:
                if table._closed:
                    raise WinsockError(_INVALID_PROVIDER, "routine table closed")
                session = sessions.get(token) if token else None  # atomic, no lock
                if session is None:
                    raise WinsockError(_EINVAL, f"no open client session {token!r}")
                # Read entirely here, like Begin's restrictions.
                query = _read_queryset(reg_info, "2W")
                try:
                    op = WSAESETSERVICEOP(operation)
                except ValueError:
                    raise WinsockError(_EINVAL, f"unknown WSAESETSERVICEOP {operation}") from None
                if async_service:
                    # Admitted (the step owns the call from here and its
                    # task's end completes it) or raises: completed below.
                    self._service_async(channel_now(), h_async, session, query, op, flags)
                    return
                self.set_service(session, query, op, flags)
            except BaseException as exc:
                if not fused:
                    raise
                fail_async("NSPv2SetServiceEx", h_async, exc, channel_now)
                return
            # The slot owns the call: a failure above completed it with its
            # code; otherwise it is completed here, once, and nothing after
            # this can raise.
            try:
                channel_now().complete(h_async, NO_ERROR)
            except BaseException as exc:
                log_failure("%s: completing SetServiceEx", name, exc)

        slots: dict[str, Callable[..., Any]] = {
            "startup": startup,
            "cleanup": cleanup,
            "begin": begin,
            "next_ex": next_ex,
            "end": end,
            "client_session_rundown": rundown,
        }
        if self.implements("set_service"):
            slots["set_service_ex"] = set_service
        return slots, bind

    # NextEx: one owner per call. ---------------------------------------------------
    #
    # The slot that accepts a NextEx (or, with complete_from_thread, the worker
    # it hands the call to) owns it: it is the only party that writes the
    # caller's buffer or length and the only one that completes the call, once.
    # It decides under lookup.lock: if the lookup has ended, WSA_E_CANCELLED
    # without writing; otherwise it writes and completes, still under the lock.
    # Ending a lookup only marks it ended under the same lock, so nothing is
    # ever written after a completion. One NextEx at a time per lookup: a second
    # one while the first is in flight completes at once with WSAEALREADY.

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"nspv2-{self.display_name}"
                )
            return self._executor

    def _next_async(
        self,
        channel: ErrorChannel,
        h_async: int,
        lookup: Lookup,
        flags: int,
        p_length: int | None,
        p_results: int | None,
        results: AsyncResults,
    ) -> None:
        """Hand a claimed NextEx of an async lookup to the provider's loop;
        if it cannot be (the in-flight bound, a closed loop), complete it here
        through the owner code. Never raises."""

        def finish(failure: BaseException | None) -> None:
            self._next_step(channel, h_async, lookup, flags, p_length, p_results, failure)

        try:
            runner = results.runner
            step = NextStep(runner, lookup, results.it, finish, results.timeout)
            runner.admit(step.start, self.async_max_in_flight)
        except BaseException as exc:
            finish(exc)

    def _service_async(
        self,
        channel: ErrorChannel,
        h_async: int | None,
        session: Session,
        query: QuerySet,
        op: WSAESETSERVICEOP,
        flags: int,
    ) -> None:
        """Hand an async SetServiceEx to the loop (its ServiceStep completes
        it), or raise, the call not handed over, for the slot to complete."""
        runner = self._runner()
        hook = self.set_service
        name = self.display_name

        def complete(code: int) -> None:
            rc = channel.complete(h_async, code)
            if rc != NO_ERROR:
                log.warning("%s: completing SetServiceEx returned %s", name, rc)

        step = ServiceStep(
            runner,
            self.registry,
            session,
            lambda: hook(session, query, op, flags),  # type: ignore[arg-type, return-value]
            complete,
            float(self.async_timeout),
        )
        runner.admit(step.start, self.async_max_in_flight)

    def _blocking_hook(self, hook: str) -> Callable[[Session], Any] | None:
        """The hook, or for an async one a callable that runs it on the loop
        and waits for it at most ``async_hook_timeout``."""
        found = self._hook(hook)
        if found is None or not inspect.iscoroutinefunction(found):
            return found
        fn = found

        def wait(session: Session) -> None:
            timeout = float(self.async_hook_timeout)  # read at each call
            self._runner().wait_hook(lambda: fn(session), timeout, hook)

        return wait

    def _next_step(
        self,
        channel: ErrorChannel,
        h_async: int,
        lookup: Lookup,
        flags: int,
        p_length: int | None,
        p_results: int | None,
        failure: BaseException | None = _PULL,
    ) -> None:
        """Run a NextEx this thread owns; complete it exactly once.

        ``failure`` left out: pull the next result here (a synchronous
        lookup). Given (None or an exception): an async step already pulled
        it into ``lookup.pulled``, or failed; only the completion is left.
        Synchronous and async lookups share everything from here on."""
        code = _NO_RECOVERY
        to_close: object = None
        try:
            # Pull the next result into lookup.pulled unless the held one will
            # be returned. No lock here: while in_flight is set the owner
            # alone touches results and pulled (ending the lookup leaves them
            # to it); ended and held, read racily, only decide whether to
            # pull: what the call does is decided under the lock below. The
            # generator runs unlocked.
            if failure is _PULL:
                failure = None
                try:
                    if not p_length:
                        raise WinsockError(_EINVAL, "lpdwBufferLength is NULL")
                    results = lookup.results
                    if (
                        results is not None
                        and not lookup.ended
                        and (lookup.held is None or flags & _FLUSH)
                    ):
                        try:
                            result = next(results)
                        except StopIteration:
                            lookup.results = None
                        else:
                            if not isinstance(result, QuerySet):
                                raise TypeError(
                                    f"lookup() yielded {type(result).__name__}, not QuerySet"
                                )
                            lookup.pulled = result
                except BaseException as exc:
                    failure = exc
            with lookup.lock:
                try:
                    lookup.in_flight = None
                    if lookup.ended:
                        lookup.pulled = None
                        to_close, lookup.results = lookup.results, None
                        code = _CANCELLED
                    elif failure is not None:
                        code = report_exception(_NEXT_SLOT, failure)
                    else:
                        code = self._produce(lookup, flags, p_length, p_results)
                except BaseException as exc:
                    code = report_exception(_NEXT_SLOT, exc)
                finally:
                    try:
                        channel.complete(h_async, code)
                    except BaseException as exc:
                        log_failure("%s: completing NextEx", self.display_name, exc)
        finally:
            if to_close is not None:
                close_taken(lookup, to_close)

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        """Write the call's outcome into the caller's buffer and length; the
        owner calls it under ``lookup.lock``, the lookup not ended. A result
        that cannot be written stays held for the next call."""
        if flags & _FLUSH:
            lookup.held = None
        if lookup.held is None:
            lookup.held = lookup.pulled
        lookup.pulled = None
        result = lookup.held
        if result is None:
            return _NO_MORE
        if not p_length:
            raise WinsockError(WSAError.WSAEINVAL, "lpdwBufferLength is NULL")
        length = _u32_at(p_length)
        image = result._image_2w  # built once per result, relocated per call
        size = image.size
        if length.value < size:
            length.value = size
            return _EFAULT
        if not p_results:
            raise WinsockError(WSAError.WSAEINVAL, "lpqsResults is NULL")
        _memmove(p_results, image.relocated(p_results), size)
        lookup.held = None
        return NO_ERROR
