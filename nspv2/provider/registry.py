"""Client sessions and lookups of one provider: the registry.

``NSPv2Startup`` creates a :class:`Session` and hands C an opaque token
through ``ppvClientSessionArg``; every later call carrying that token
resolves to the same object. ``NSPv2LookupServiceBegin`` creates a
:class:`Lookup` and hands C a handle. Tokens and handles come from one
process-wide counter: non-zero, never reused, never an address or ``id()``,
and a lookup handle is never a valid session token (or the reverse).

Every operation takes the registry's lock, so calls may arrive from any
number of native threads. A session ends exactly once; so does a lookup.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from .queryset import QuerySet

__all__ = ["EndedBy", "Lookup", "Registry", "Session", "close_results", "new_token"]

# One counter for every token and handle in the process. It starts well
# above small integers so that a stray 0/1/-1 never names anything.
_tokens = itertools.count(0x10001)


def new_token() -> int:
    """A fresh non-zero identifier, unique in this process."""
    return next(_tokens)


class EndedBy(enum.Enum):
    """How a session ended (``Session.ended_by``); the value is how it is shown."""

    CLEANUP = "NSPv2Cleanup"
    RUNDOWN = "NSPv2ClientSessionRundown"
    CLOSE = "table closed"
    PROVIDER = "provider"
    STARTUP_FAILED = "NSPv2Startup failed"


@dataclass(eq=False)
class Session:
    """One client session, from NSPv2Startup to its end.

    ``data`` is the provider's own state for the session. ``end_reason`` is
    None after a normal NSPv2Cleanup and a CPNATFWT reason otherwise.
    """

    token: int
    provider_id: uuid.UUID | None
    started_at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)
    ended: bool = False
    ended_by: EndedBy | None = None
    end_reason: Reason | None = None
    ended_at: float | None = None
    _registry: Registry | None = field(default=None, repr=False)
    _lookups: set[int] = field(default_factory=set, repr=False)

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


@dataclass(eq=False)
class Lookup:
    """One lookup, from NSPv2LookupServiceBegin to NSPv2LookupServiceEnd."""

    handle: int
    session: Session
    restrictions: QuerySet | None
    flags: int
    results: Iterator[QuerySet] | None = None
    held: QuerySet | None = None  # a result that did not fit, returned again next time
    pending_async: int | None = None  # async handle of a NextEx in flight
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


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

    # -- sessions -------------------------------------------------------------

    def new_session(self, provider_id: uuid.UUID | None) -> Session:
        session = Session(new_token(), provider_id)
        session._registry = self
        with self._lock:
            self._sessions[session.token] = session
            self.sessions_started += 1
        return session

    def session(self, token: int | None) -> Session | None:
        """The open session for ``token``, or None."""
        if not token:
            return None
        return self._sessions.get(token)

    def end_session(
        self, token: int | None, ended_by: EndedBy, reason: Reason | None
    ) -> Session | None:
        """End an open session exactly once; None if unknown or already ended.

        Its open lookups end with it.
        """
        if not token:
            return None
        with self._lock:
            session = self._sessions.pop(token, None)
            if session is None:
                return None
            session.ended = True
            session.ended_by = ended_by
            session.end_reason = reason
            session.ended_at = time.time()
            self.sessions_ended += 1
            self.ended.append(session)
            orphans = [self._lookups.pop(h) for h in session._lookups if h in self._lookups]
            session._lookups.clear()
            for lk in orphans:
                lk.ended = True
                self.lookups_ended += 1
        for lk in orphans:
            close_results(lk)
        return session

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    # -- lookups ----------------------------------------------------------------

    def new_lookup(self, session: Session, restrictions: QuerySet | None, flags: int) -> Lookup:
        lookup = Lookup(new_token(), session, restrictions, flags)
        with self._lock:
            if session.ended:
                raise LookupError("session ended")
            self._lookups[lookup.handle] = lookup
            session._lookups.add(lookup.handle)
            self.lookups_started += 1
        return lookup

    def lookup(self, handle: int | None) -> Lookup | None:
        if not handle:
            return None
        return self._lookups.get(handle)

    def end_lookup(self, handle: int | None) -> Lookup | None:
        """End an open lookup exactly once; None if unknown or already ended."""
        if not handle:
            return None
        with self._lock:
            lookup = self._lookups.pop(handle, None)
            if lookup is None:
                return None
            lookup.ended = True
            lookup.session._lookups.discard(handle)
            self.lookups_ended += 1
        close_results(lookup)
        return lookup

    def lookups(self) -> list[Lookup]:
        with self._lock:
            return list(self._lookups.values())

    # -- inspection ---------------------------------------------------------------

    def open_counts(self) -> dict[str, int]:
        """What is open now: ``{"sessions": n, "lookups": m}`` (for leak checks)."""
        with self._lock:
            return {"sessions": len(self._sessions), "lookups": len(self._lookups)}

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
    """Close a lookup's result generator (runs its ``finally`` blocks).

    If the generator is running on another thread (a NextEx in flight), it
    is left for that thread to close when it is done.
    """
    results = lookup.results
    lookup.results = None
    close = getattr(results, "close", None)
    if close is None:
        return
    try:
        close()
    except ValueError:  # "generator already executing": its NextEx closes it
        lookup.results = results
    except Exception:  # the generator's finally block failed
        logging.getLogger("nspv2").exception("closing the results of lookup %#x", lookup.handle)
