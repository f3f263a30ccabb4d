"""Who keeps an advertised routine table alive: one registry for the process.

C holds the function pointers of a table it was handed by
``WSAAdvertiseProvider`` (the native host copies the table, so it holds the
entry points, the ctypes thunks). The library is loaded once per process,
so what it can call belongs to the process, not to whichever ``Host``,
``Winsock`` or ``Provider`` object advertised it. The rule, enforced here:

* :func:`keep` takes a strong reference to everything C may call through a
  table (the ``Routine`` with its thunks, the ``Provider`` behind it, a bare
  table's ``owner``) *before* ``WSAAdvertiseProvider`` is called;
* :func:`forget` drops it only if that advertise failed (C kept nothing);
* :func:`retire` is called once ``WSAUnadvertiseProvider`` has returned
  (:meth:`nspv2.host.winsock.Winsock.unadvertise`, the one caller, whoever
  advertised): the provider's entries are no longer advertised, but the host may still call it (a call in
  flight on another thread, a Rundown or End deferred past the unadvertise);
* a retired entry is released only when the host says it has returned from
  the last call into every unadvertised table: the native host's
  ``nspv2_host_retired_tables()`` reads 0 (checked by :func:`sweep`, which
  runs at every advertise and unadvertise). A library without that
  signal (``ws2_32.dll``, an older native host) gives no such proof, so
  its retired entries are kept until the process exits: bounded by the
  number of unadvertise calls, a few kilobytes each.

Dropping a ``Host`` without ``close()``, dropping the last reference to an
advertised ``Provider`` or ``Routine``, or ``gc.collect()`` at any time
therefore never frees a thunk C can still call.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Kept", "advertised_count", "forget", "keep", "retire", "retired_count", "sweep"]


@dataclass(eq=False)
class Kept:
    """One advertised table and everything C may call through it."""

    token: int
    #: The library (its id) and the provider id the table was advertised as.
    library: int
    provider_id: uuid.UUID
    #: The library's "retired tables still referenced" count, or None when
    #: the library cannot say (ws2_32.dll): then kept until process exit.
    retired_probe: Callable[[], int] | None
    objects: tuple[Any, ...] = field(default=())


_lock = threading.Lock()
_tokens = itertools.count(1)
_live: dict[int, Kept] = {}
_retired: list[Kept] = []


def probe_for(library: Any) -> Callable[[], int] | None:
    """The native host's ``nspv2_host_retired_tables`` bound on ``library``,
    or None when the library has no such function."""
    name = "nspv2_host_retired_tables"
    if library is None or getattr(library, name, None) is None:
        return None
    # uint32_t nspv2_host_retired_tables(void): a plain C (cdecl) function
    fn: Callable[[], int] = ctypes.CFUNCTYPE(ctypes.c_uint32)((name, library))
    return fn


def keep(
    library: object,
    provider_id: uuid.UUID,
    retired_probe: Callable[[], int] | None,
    *objects: Any,
) -> Kept:
    """Hold ``objects`` for a table about to be advertised as ``provider_id``
    on ``library``; returns its entry."""
    entry = Kept(next(_tokens), id(library), provider_id, retired_probe, tuple(objects))
    with _lock:
        _live[entry.token] = entry
    return entry


def forget(entry: Kept) -> None:
    """The advertise failed: C holds nothing from this table; drop it."""
    with _lock:
        _live.pop(entry.token, None)


def retire(library: object, provider_id: uuid.UUID) -> None:
    """WSAUnadvertiseProvider(provider_id) on ``library`` has returned: keep
    what was advertised as that id until the host says it has returned from
    the last call into it (see :func:`sweep`)."""
    with _lock:
        gone = [
            e for e in _live.values() if e.library == id(library) and e.provider_id == provider_id
        ]
        for entry in gone:
            del _live[entry.token]
        _retired.extend(gone)
    sweep()


def sweep() -> int:
    """Release the retired entries the host can no longer call; returns how
    many were released.

    The retired list is read before the host's count: every entry in it was
    retired after its unadvertise returned, so that provider was counted by
    then, and a count of 0 read afterwards proves it was released.
    """
    with _lock:
        snapshot = list(_retired)
    if not snapshot:
        return 0
    released: list[Kept] = []
    verdict: dict[int, bool] = {}  # one read per probe
    for entry in snapshot:
        probe = entry.retired_probe
        if probe is None:
            continue  # no signal: kept until process exit
        key = id(probe)
        if key not in verdict:
            verdict[key] = int(probe()) == 0
        if verdict[key]:
            released.append(entry)
    if released:
        gone = {e.token for e in released}
        with _lock:
            _retired[:] = [e for e in _retired if e.token not in gone]
    return len(released)


def advertised_count() -> int:
    """How many advertised tables the process holds."""
    with _lock:
        return len(_live)


def retired_count() -> int:
    """How many unadvertised tables are still held (the host may call them)."""
    with _lock:
        return len(_retired)
