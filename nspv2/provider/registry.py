"""Client sessions and lookups of one provider: the registry.

``NSPv2Startup`` creates a :class:`Session` and hands C an opaque token
through ``ppvClientSessionArg``; every later call carrying that token
resolves to the same object. ``NSPv2LookupServiceBegin`` creates a
:class:`Lookup` and hands C a handle. Tokens and handles come from one
process-wide counter: non-zero, never reused, never an address or ``id()``,
and a lookup handle is never a valid session token (or the reverse).

Calls may arrive from any number of native threads. Every check-then-act
(creating, ending, closing) takes the registry's lock; a plain lookup of a
token or handle is one ``dict.get``, which is atomic in CPython (a single
operation under the GIL, and under the dict's own lock in free-threaded
builds), so it takes no lock: it sees the session either before or after
an end, never half-ended, and everything that matters after it (ending
a lookup, completing a NextEx) is decided under a lock again. A session
ends exactly once; so does a lookup.

Lookup ownership (enforced here and in :mod:`nspv2.provider.base`):

- A lookup's ``held`` and ``in_flight`` are written only under
  ``lookup.lock``; ``results`` is taken out of the lookup (to close it) only
  under that lock, and while a NextEx is in flight only its owner touches
  it. Lock order: the registry's lock, then a lookup's lock; no provider
  code runs under either.
- Ending a lookup (End, its session ending, the table closing) only marks
  it ``ended`` under its lock. It never completes a NextEx in flight: that
  call's owner (the thread running it) completes it, exactly once, under
  the lookup's lock: WSA_E_CANCELLED without writing if the lookup ended,
  else it writes the result and completes NO_ERROR.
- The generator is closed exactly once: by whoever ends the lookup, or, if
  a NextEx is running it at that moment, by that NextEx when it is done.
- An async lookup's NextEx runs as a task on the provider's event loop
  (:mod:`nspv2.provider.aio`): ending the lookup also cancels that task
  (``Lookup.canceller``, after the locks are released), and the task's end
  completes the call, still under the rules above. An ended session's
  async SetServiceEx calls (``Session._calls``) are cancelled the same way.

Sessions and lookups are slotted objects built for the hot path: a
session's ``data`` dict is made on first access, its ``provider_id`` is
kept as the 16 bytes Startup received and turned into a ``uuid.UUID`` on
first access, and ``started_at`` / ``ended_at`` are recorded only when the
registry's ``record_times`` is set (a debugging aid; None otherwise).
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from ..sdk.winsock2 import WSAError
from .errors import WinsockError
from .queryset import QuerySet

__all__ = [
    "EndedBy",
    "Lookup",
    "Registry",
    "Session",
    "cancel_step",
    "close_results",
    "close_taken",
    "new_token",
]

# One counter for every token and handle in the process. It starts well
# above small integers so that a stray 0/1/-1 never names anything.
_tokens = itertools.count(0x10001)
_tokens_lock = threading.Lock()
log = logging.getLogger("nspv2")


def _locked_next() -> int:
    with _tokens_lock:
        return next(_tokens)


#: A fresh non-zero identifier, unique in this process. With the GIL,
#: ``itertools.count.__next__`` is one C call that cannot be interrupted, so
#: it needs no lock; a free-threaded build (no GIL) takes one.
new_token = _tokens.__next__ if getattr(sys, "_is_gil_enabled", lambda: True)() else _locked_next


class EndedBy(enum.Enum):
    """How a session ended (``Session.ended_by``); the value is how it is shown."""

    CLEANUP = "NSPv2Cleanup"
    RUNDOWN = "NSPv2ClientSessionRundown"
    CLOSE = "table closed"
    PROVIDER = "provider"
    STARTUP_FAILED = "NSPv2Startup failed"


class Session:
    """One client session, from NSPv2Startup to its end.

    ``data`` is the provider's own state for the session (a dict, made on
    first access). ``provider_id`` is the ``lpProviderId`` Startup received
    (a ``uuid.UUID``, or None). ``end_reason`` is None after a normal
    NSPv2Cleanup and a CPNATFWT reason otherwise. ``rundown_reason`` is set
    when the host started running the session's provider down (e.g.
    unadvertise): the reason its rundown then reports, on whatever thread
    the host delivers it; never cleared. ``started_at`` / ``ended_at``
    (``time.time()``) are recorded only when the registry's
    ``record_times`` is set, else None.
    """

    __slots__ = (
        "_calls",
        "_data",
        "_lookups",
        "_pid",
        "_registry",
        "end_reason",
        "ended",
        "ended_at",
        "ended_by",
        "rundown_reason",
        "started_at",
        "token",
    )

    def __init__(
        self,
        token: int,
        provider_id: uuid.UUID | bytes | None = None,
        started_at: float | None = None,
    ) -> None:
        self.token = token
        # The 16 bytes as Startup read them (bytes_le), or a UUID given.
        self._pid: uuid.UUID | bytes | None = provider_id
        self.started_at = started_at
        self._data: dict[str, Any] | None = None
        self.ended = False
        self.ended_by: EndedBy | None = None
        self.end_reason: Reason | None = None
        self.ended_at: float | None = None
        self.rundown_reason: Reason | None = None
        self._registry: Registry | None = None
        # Handles of the session's open lookups (None until its first).
        self._lookups: set[int] | None = None
        # Async SetServiceEx calls running on the provider's loop (None
        # until the first), cancelled when the session ends; under the
        # registry's lock.
        self._calls: set[Any] | None = None

    @property
    def provider_id(self) -> uuid.UUID | None:
        pid = self._pid
        if type(pid) is bytes:
            pid = self._pid = uuid.UUID(bytes_le=pid)
        return pid  # type: ignore[return-value]

    @provider_id.setter
    def provider_id(self, value: uuid.UUID | None) -> None:
        self._pid = value

    @property
    def data(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            data = self._data = {}
        return data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value

    @property
    def id(self) -> int:
        """The session's token, as C sees it."""
        return self.token

    def end(self) -> bool:
        """End the session at the provider's request (PROVIDER_REQUEST).

        Returns False if it had already ended.
        """
        if self._registry is None:
            return False
        ended = self._registry.end_session(
            self.token, EndedBy.PROVIDER, Reason.CPNATFWT_SESSION_TERMINATION_PROVIDER_REQUEST
        )
        return ended is not None

    def describe_end(self) -> str:
        if not self.ended:
            return "open"
        by = self.ended_by.value if self.ended_by is not None else "?"
        if self.end_reason is None:
            return f"ended by {by} (normal)"
        return f"ended by {by}: {self.end_reason.name}"

    def __repr__(self) -> str:
        return (
            f"Session(token={self.token:#x}, provider_id={self.provider_id}, {self.describe_end()})"
        )


class Lookup:
    """One lookup, from NSPv2LookupServiceBegin to NSPv2LookupServiceEnd.

    ``held`` is a result that did not fit, returned again next time;
    ``pulled`` the result the NextEx in flight pulled from ``results`` (its
    owner's); ``in_flight`` the async handle of the NextEx in flight (its
    owner completes it), or None; ``canceller`` the object whose
    ``cancel()`` stops that NextEx's task on the provider's event loop (an
    async lookup's step, set under ``lock``), or None.
    """

    __slots__ = (
        "canceller",
        "ended",
        "flags",
        "handle",
        "held",
        "in_flight",
        "lock",
        "pulled",
        "restrictions",
        "results",
        "session",
    )

    def __init__(
        self,
        handle: int,
        session: Session,
        restrictions: QuerySet | None,
        flags: int,
        results: Iterator[QuerySet] | None = None,
    ) -> None:
        self.handle = handle
        self.session = session
        self.restrictions = restrictions
        self.flags = flags
        self.results = results
        self.held: QuerySet | None = None
        self.pulled: QuerySet | None = None
        self.in_flight: int | None = None
        self.ended = False
        self.lock = threading.Lock()
        self.canceller: Any = None

    def end_locked(self) -> Iterator[QuerySet] | None:
        """Mark ended (caller holds ``lock``); return the generator to close,
        or None if a NextEx in flight will close it."""
        self.ended = True
        self.held = None
        if self.in_flight is not None:
            return None
        results, self.results = self.results, None
        return results

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"Lookup(handle={self.handle:#x}, session={self.session.token:#x}, {state})"


class Registry:
    """Sessions and lookups of one routine table (thread-safe)."""

    def __init__(self, history: int = 256) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[int, Session] = {}
        self._lookups: dict[int, Lookup] = {}
        #: The most recently ended sessions, newest last (bounded).
        self.ended: collections.deque[Session] = collections.deque(maxlen=history)
        self.sessions_started = 0
        self.sessions_ended = 0
        self.lookups_started = 0
        self.lookups_ended = 0
        self._closed = False
        #: Record ``started_at`` / ``ended_at`` on sessions (off: no clock
        #: read per session).
        self.record_times = False

    # -- sessions -------------------------------------------------------------

    def new_session(self, provider_id: uuid.UUID | bytes | None) -> Session:
        """A new open session; WSAEINVALIDPROVIDER once :meth:`close` ran
        (a Startup racing the table's close never leaves a session open).
        ``provider_id`` may be the GUID's 16 bytes (``bytes_le``), turned
        into a UUID when ``session.provider_id`` is first read."""
        session = Session(new_token(), provider_id, time.time() if self.record_times else None)
        session._registry = self
        with self._lock:
            if self._closed:
                raise WinsockError(WSAError.WSAEINVALIDPROVIDER, "routine table closed")
            self._sessions[session.token] = session
            self.sessions_started += 1
        return session

    def session(self, token: int | None) -> Session | None:
        """The open session for ``token``, or None."""
        if not token:
            return None
        return self._sessions.get(token)  # atomic: no lock (module docstring)

    def end_session(
        self, token: int | None, ended_by: EndedBy, reason: Reason | None
    ) -> Session | None:
        """End an open session exactly once; None if unknown or already ended.

        Its open lookups end with it. A rundown of a session marked with a
        ``rundown_reason`` reports that reason instead of ``reason``.
        """
        if not token:
            return None
        with self._lock:
            session = self._sessions.pop(token, None)
            if session is None:
                return None
            if ended_by is EndedBy.RUNDOWN and session.rundown_reason is not None:
                reason = session.rundown_reason
            session.ended = True
            session.ended_by = ended_by
            session.end_reason = reason
            if self.record_times:
                session.ended_at = time.time()
            self.sessions_ended += 1
            self.ended.append(session)
            calls, session._calls = session._calls, None
            handles = session._lookups
            if not handles and not calls:
                return session
            session._lookups = None
            orphans = [self._lookups.pop(h) for h in handles or () if h in self._lookups]
            to_close = []
            for lk in orphans:
                with lk.lock:
                    to_close.append(lk.end_locked())
                self.lookups_ended += 1
        # Outside the locks: cancelling schedules work on the provider's
        # event loop; closing runs (or schedules) generators' finally.
        for call in calls or ():
            call.cancel()
        for lk, results in zip(orphans, to_close, strict=True):
            if lk.canceller is not None:  # an async step in flight
                cancel_step(lk)
            close_taken(lk, results)
        return session

    def track_call(self, session: Session, call: Any) -> bool:
        """Record an async call of ``session`` (cancelled when it ends);
        False, nothing recorded, if it has ended."""
        with self._lock:
            if session.ended:
                return False
            if session._calls is None:
                session._calls = {call}
            else:
                session._calls.add(call)
            return True

    def untrack_call(self, session: Session, call: Any) -> None:
        with self._lock:
            if session._calls is not None:
                session._calls.discard(call)

    def mark_rundown(self, reason: Reason) -> None:
        """Mark every open session: a later rundown of it reports ``reason``."""
        with self._lock:
            for session in self._sessions.values():
                session.rundown_reason = reason

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    # -- lookups ----------------------------------------------------------------

    def new_lookup(
        self,
        session: Session,
        restrictions: QuerySet | None,
        flags: int,
        results: Iterator[QuerySet] | None = None,
    ) -> Lookup:
        """A new lookup of ``session`` over ``results``. If the session has
        ended meanwhile, ``results`` is closed and this raises WSAEINVAL."""
        lookup = Lookup(new_token(), session, restrictions, flags, results)
        with self._lock:
            ended = session.ended
            if not ended:
                self._lookups[lookup.handle] = lookup
                if session._lookups is None:
                    session._lookups = {lookup.handle}
                else:
                    session._lookups.add(lookup.handle)
                self.lookups_started += 1
        if ended:
            close_taken(lookup, results)
            raise WinsockError(WSAError.WSAEINVAL, f"client session {session.token:#x} ended")
        return lookup

    def lookup(self, handle: int | None) -> Lookup | None:
        if not handle:
            return None
        return self._lookups.get(handle)  # atomic: no lock (module docstring)

    def end_lookup(self, handle: int | None) -> Lookup | None:
        """End an open lookup exactly once; None if unknown or already ended."""
        if not handle:
            return None
        with self._lock:
            lookup = self._lookups.pop(handle, None)
            if lookup is None:
                return None
            with lookup.lock:
                results = lookup.end_locked()
            if lookup.session._lookups is not None:
                lookup.session._lookups.discard(handle)
            self.lookups_ended += 1
        if lookup.canceller is not None:  # an async step in flight (no frame otherwise)
            cancel_step(lookup)
        if results is not None:
            close_taken(lookup, results)
        return lookup

    def lookups(self) -> list[Lookup]:
        with self._lock:
            return list(self._lookups.values())

    # -- inspection ---------------------------------------------------------------

    def open_counts(self) -> dict[str, int]:
        """What is open now: ``{"sessions": n, "lookups": m}`` (for leak checks)."""
        with self._lock:
            return {"sessions": len(self._sessions), "lookups": len(self._lookups)}

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self, ended_by: EndedBy, reason: Reason) -> list[Session]:
        """Refuse new sessions from now on, then end every open one."""
        with self._lock:
            self._closed = True
        return self.close_all(ended_by, reason)

    def reopen(self) -> None:
        """Accept sessions again (a new routine table for the provider)."""
        with self._lock:
            self._closed = False

    def close_all(self, ended_by: EndedBy, reason: Reason) -> list[Session]:
        """End every open session (and so every lookup)."""
        ended = []
        for session in self.sessions():
            done = self.end_session(session.token, ended_by, reason)
            if done is not None:
                ended.append(done)
        for lookup in self.lookups():
            self.end_lookup(lookup.handle)
        return ended


def close_results(lookup: Lookup) -> None:
    """Close a lookup's result generator now, unless a NextEx is running it
    (that NextEx closes it when it is done, if the lookup has ended)."""
    with lookup.lock:
        if lookup.in_flight is not None:
            return
        results, lookup.results = lookup.results, None
    close_taken(lookup, results)


def cancel_step(lookup: Lookup) -> None:
    """Cancel the async step of a lookup just ended (no lock held; never
    raises). The step completes the call itself when its task ends; a step
    that starts after the end sees ``ended`` under the lookup's lock and
    cancels itself, so no cancellation is lost (see nspv2.provider.aio)."""
    step = lookup.canceller
    if step is None:
        return
    try:
        step.cancel()
    except BaseException as exc:
        try:
            log.error("cancelling the step of lookup %#x raised", lookup.handle, exc_info=exc)
        except BaseException:
            pass


def close_taken(lookup: Lookup, results: object) -> None:
    """Close ``results`` (runs a generator's ``finally``); never raises.

    The caller took ``results`` out of the lookup under its lock, so it is
    closed exactly once. Whatever its ``finally`` raises, BaseException
    included (KeyboardInterrupt, SystemExit), is logged and goes no further:
    the session or table being ended still ends completely.
    """
    close = getattr(results, "close", None)
    if close is None:
        return
    try:
        close()
    except BaseException as exc:
        try:
            log.error("closing the results of lookup %#x raised", lookup.handle, exc_info=exc)
        except BaseException:
            pass
