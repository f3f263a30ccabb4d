"""``nspv2 prove-async``: what asyncio providers buy, and that they leave nothing behind.

Two parts, each printed with the figures it measured:

- **concurrency**: ``--sessions`` client sessions (64, up to 1024: the
  proof's providers admit that many steps at once, ``async_max_in_flight``,
  and its HTTP backend that many connections), each one lookup that
  waits ``--delay-ms`` (50 ms) on the backend, all at once from as many
  Python threads through the in-process host (``nspv2.Host``; a NextEx waits
  in C with the GIL released), and with ``--served`` the same through a
  provider process (``nspv2 serve``, one ``nspv2.Client`` connection per
  session). The wall time is compared with the serial bound (sessions x
  delay) and with the provider's synchronous twin: the same lookup body
  driven to its end on a worker thread with ``complete_from_thread`` (each
  waiting lookup blocks one of the scaffold's four workers). The backend is
  the HTTP presence example (``nspv2.examples.presence_backend``, in this
  process, over loopback) with ``--backend http``, else a provider that
  awaits ``asyncio.sleep``.
- **mixed cycles**: ``--threads`` Python threads x ``--cycles`` cycles
  against :class:`ChaosDirectory`, an async provider with small random
  waits. Each cycle opens a session, begins a lookup, and does one of:
  drain it; end it after one result (the generator closed at its
  ``yield``); end it from another thread WHILE its NextEx waits; abandon
  the session (Rundown) while the NextEx waits, or with the lookup open;
  close the session with the lookup open; end it from another thread at a
  random moment (a race); fail in the provider; outlive ``async_timeout``;
  register and delete a name with the async ``set_service``. Afterwards:
  nothing open in the provider's registry or in the host, no call pending,
  no task left on the provider's loop, every generator's ``finally`` run
  exactly once, no double completion, no exception reaching
  ``sys.unraisablehook`` or asyncio's error log, no warning or error of the
  scaffold's own on the ``nspv2`` logger (the event loop's: a close that
  timed out, tasks left after close, a ``finally`` that did not run, an
  exception escaping a task; not the guard's report of an exception the
  provider raised, which the codes show), no task or call left after
  ``close()``, and every client call's code one the cycle's kind allows.

Exit codes: 0 every check passed, 1 a check failed, 2 usage error, 130
interrupted (Ctrl-C: the lookups under way are ended, a ``nspv2 serve`` it
started is stopped, and the figures measured so far are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..host.host import ClientSession, Host
from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.registry import Session
from ..sdk.winsock2 import NO_ERROR, WSAESETSERVICEOP, WSAError, code_name
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, UsageError, add_json, positive, whole
from .private_catalog import install_in, private_catalog
from .stress import wait_listening

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = [
    "ChaosDirectory",
    "SleepDirectory",
    "add_commands",
    "blocking_twin",
    "run_concurrency",
    "run_mixed",
]

_OK = NO_ERROR
_NO_MORE = int(WSAError.WSA_E_NO_MORE)
_CANCELLED = int(WSAError.WSA_E_CANCELLED)
_INVALID = int(WSAError.WSA_INVALID_HANDLE)
_NOT_FOUND = int(WSAError.WSASERVICE_NOT_FOUND)
_TIMED_OUT = int(WSAError.WSAETIMEDOUT)
EXIT_INTERRUPTED = 130
#: The most client sessions of the concurrency part (threads of this process).
#: The proof's providers admit this many steps at once (``async_max_in_flight``)
#: and the HTTP backend this many connections, so any ``--sessions`` is measured.
MAX_SESSIONS = 1024
#: What each concurrency lookup waits by default, and the most (milliseconds).
DEFAULT_DELAY_MS = 50
MAX_DELAY_MS = 2000
#: The environment variable giving :class:`SleepDirectory`'s wait in a
#: provider process (``--served`` sets it for ``nspv2 serve``).
DELAY_VARIABLE = "NSPV2_PROOF_DELAY_MS"
#: The most threads of the mixed part.
MAX_THREADS = 256
#: How long the checks wait for the provider's loop to settle (tasks, finally).
SETTLE_SECONDS = 10.0
#: How long ``nspv2 serve`` gets to listen.
SERVE_SECONDS = 30.0


# ---- the concurrency part's providers ---------------------------------------------------


def proof_delay() -> float:
    """Seconds from ``NSPV2_PROOF_DELAY_MS`` (default 50 ms); ValueError
    saying what is wrong when it is no number of milliseconds from 0 to
    :data:`MAX_DELAY_MS`. Read only when a :class:`SleepDirectory` is made."""
    text = os.environ.get(DELAY_VARIABLE, "").strip()
    if not text:
        return DEFAULT_DELAY_MS / 1000
    try:
        ms = float(text)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= MAX_DELAY_MS:  # also NaN
        raise ValueError(
            f"{DELAY_VARIABLE}={text!r} is not a number of milliseconds from 0 to {MAX_DELAY_MS}"
        )
    return ms / 1000


class SleepDirectory(Provider):
    """Answers any name with one result after ``delay`` seconds of
    ``asyncio.sleep``: a backend wait with no backend."""

    provider_id = uuid.UUID("c36b3217-5453-4067-aa98-df4404fef973")
    name = "nspv2 async proof (sleep)"
    check_queries = ("alice@proof.test",)
    #: Seconds each lookup waits; None: ``NSPV2_PROOF_DELAY_MS`` (default
    #: 50), read when an instance is made (in a provider process, as
    #: ``--served`` starts one), so a bad value fails only there.
    delay: ClassVar[float | None] = None
    #: Every session of the largest ``--sessions`` waits at once.
    async_max_in_flight: ClassVar[int] = MAX_SESSIONS

    def __init__(self) -> None:
        self.wait = self.delay if self.delay is not None else proof_delay()

    async def lookup(
        self, session: Session, restrictions: QuerySet, flags: int
    ) -> AsyncIterator[QuerySet]:
        await asyncio.sleep(self.wait)
        yield QuerySet(restrictions.service_instance_name, comment="waited")


async def _next_or_done(agen: AsyncIterator[QuerySet]) -> tuple[bool, QuerySet | None]:
    try:
        return True, await agen.__anext__()
    except StopAsyncIteration:
        return False, None


def _drive_blocking(agen: AsyncIterator[QuerySet]) -> Iterator[QuerySet]:
    """An async generator's results, each step run to its end on a private
    event loop in the calling thread: the thread waits as blocking I/O would."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            more, item = loop.run_until_complete(_next_or_done(agen))
            if not more:
                return
            assert item is not None
            yield item
    finally:
        close = getattr(agen, "aclose", None)
        if close is not None:
            loop.run_until_complete(close())
        loop.close()


def blocking_twin(cls: type[Provider]) -> type[Provider]:
    """``cls`` with a synchronous ``lookup`` and ``complete_from_thread``:
    the same lookup body, but each step blocks one of the scaffold's worker
    threads for as long as it waits (how the provider would be written
    without asyncio)."""
    async_lookup = cls.lookup

    def lookup(self: Provider, session: Session, restrictions: QuerySet, flags: int) -> Any:
        return _drive_blocking(async_lookup(self, session, restrictions, flags))  # type: ignore[arg-type]

    return type(
        f"Blocking{cls.__name__}",
        (cls,),
        {
            "lookup": lookup,
            "complete_from_thread": True,
            "__module__": __name__,
            "__doc__": f"{cls.__name__} with a blocking lookup on worker threads.",
        },
    )


#: SleepDirectory's synchronous twin (importable, for ``nspv2 serve``).
BlockingSleepDirectory = blocking_twin(SleepDirectory)


# ---- the mixed cycles' provider ---------------------------------------------------------

#: Results of each ChaosDirectory lookup.
CHAOS_RESULTS = 3
#: What a step that should be ended (or time out) waits: far longer than any bound.
HANG_SECONDS = 60.0


class ChaosDirectory(Provider):
    """The mixed cycles' async provider. The name's first word says what
    the lookup does: ``missing-...`` fails its first step
    (WSASERVICE_NOT_FOUND); ``wait-...`` sets the event of
    :meth:`expect` and waits until it is cancelled; ``hang-...`` waits past
    ``async_timeout``; anything else yields :data:`CHAOS_RESULTS` results,
    each after a random wait of up to ``max_delay`` seconds. Counts what
    it saw (:meth:`counts`), every generator's ``finally`` by name."""

    provider_id = uuid.UUID("d876e542-f811-445d-a7fb-6bcff8dbe7d9")
    name = "nspv2 async proof (chaos)"
    check_queries = ("alice@proof.test",)
    check_registrations = ("alice@proof.test",)
    async_timeout: ClassVar[float] = 0.25
    max_delay: ClassVar[float] = 0.002

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)  # the loop thread's only
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._finalized: Counter[str] = Counter()
        self._expected: dict[str, threading.Event] = {}
        self._names: set[str] = set()

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def counts(self) -> dict[str, int]:
        """started, finalized, cancelled (at an await), closed (at a yield),
        results, startups, cleanups, rundowns, set_service, finalized_twice."""
        with self._lock:
            out = dict(self._counts)
            out["finalized_twice"] = sum(1 for n in self._finalized.values() if n > 1)
        for key in ("started", "finalized", "cancelled", "closed", "results", "startups"):
            out.setdefault(key, 0)
        for key in ("cleanups", "rundowns", "set_service"):
            out.setdefault(key, 0)
        return out

    def expect(self, name: str) -> threading.Event:
        """The event set when the lookup of ``name`` starts its long wait."""
        event = threading.Event()
        with self._lock:
            self._expected[name] = event
        return event

    def startup(self, session: Session) -> None:
        self._count("startups")

    async def cleanup(self, session: Session) -> None:
        await asyncio.sleep(0)
        self._count("cleanups")

    async def client_session_rundown(self, session: Session) -> None:
        await asyncio.sleep(0)
        self._count("rundowns")

    async def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        await asyncio.sleep(self._rng.random() * self.max_delay)
        self._count("set_service")
        name = reg_info.service_instance_name or ""
        with self._lock:
            if operation == WSAESETSERVICEOP.RNRSERVICE_REGISTER:
                self._names.add(name)
                return
            if name not in self._names:
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
            self._names.discard(name)

    async def lookup(
        self, session: Session, restrictions: QuerySet, flags: int
    ) -> AsyncIterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        kind = name.split("-", 1)[0]
        self._count("started")
        try:
            if kind == "missing":
                await asyncio.sleep(0)
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
            for i in range(CHAOS_RESULTS):
                if kind == "wait":
                    with self._lock:
                        event = self._expected.pop(name, None)
                    if event is not None:
                        event.set()
                    await asyncio.sleep(HANG_SECONDS)
                elif kind == "hang":
                    await asyncio.sleep(HANG_SECONDS)
                else:
                    await asyncio.sleep(self._rng.random() * self.max_delay)
                self._count("results")
                yield QuerySet(name, comment=str(i))
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        except GeneratorExit:
            self._count("closed")
            raise
        finally:
            with self._lock:
                self._counts["finalized"] += 1
                self._finalized[name] += 1


# ---- helpers ------------------------------------------------------------------------------


class _ErrorLog(logging.Handler):
    """Keeps the messages of the records it is handed at ``level`` and above
    that ``wanted`` accepts."""

    def __init__(self, level: int, wanted: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(level)
        self.wanted = wanted
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted(record):
            self.messages.append(f"{record.levelname} {record.getMessage()}"[:300])


def _scaffold_trouble(record: logging.LogRecord) -> bool:
    """Whether a WARNING/ERROR record of the ``nspv2`` logger tells of the
    scaffold's own trouble: the event loop (``nspv2.provider.aio``: a
    generator slow to close, tasks still running after close, a finally
    that did not run, an exception escaping a task), cancelling, closing or
    completing a call. Not the guard's report of an exception the provider
    raised (``routine._report``, e.g. a WinsockError of ChaosDirectory's
    failing lookups at another level): each call's code is checked for that."""
    return not (record.module == "routine" and record.funcName == "_report")


@dataclass
class _Watched:
    """What reached ``sys.unraisablehook``, asyncio's error log and the
    ``nspv2`` logger's warnings and errors about the scaffold's own work."""

    unraisable: list[str]
    asyncio_errors: list[str]
    nspv2_errors: list[str]


@contextlib.contextmanager
def _watching_errors() -> Iterator[_Watched]:
    """Watch ``sys.unraisablehook``, the ``asyncio`` logger's errors and
    the ``nspv2`` logger's warnings and errors while the block runs."""
    unraisable: list[str] = []
    previous = sys.unraisablehook

    def hook(info: Any) -> None:
        unraisable.append(f"{info.exc_type.__name__}: {info.exc_value} ({info.object!r})"[:300])
        previous(info)

    asyncio_log = logging.getLogger("asyncio")
    nspv2_log = logging.getLogger("nspv2")
    asyncio_handler = _ErrorLog(logging.ERROR, lambda _r: True)
    nspv2_handler = _ErrorLog(logging.WARNING, _scaffold_trouble)
    level = nspv2_log.level
    if nspv2_log.getEffectiveLevel() > logging.WARNING:  # or the records are never made
        nspv2_log.setLevel(logging.WARNING)
    sys.unraisablehook = hook
    asyncio_log.addHandler(asyncio_handler)
    nspv2_log.addHandler(nspv2_handler)
    try:
        yield _Watched(unraisable, asyncio_handler.messages, nspv2_handler.messages)
    finally:
        nspv2_log.removeHandler(nspv2_handler)
        asyncio_log.removeHandler(asyncio_handler)
        nspv2_log.setLevel(level)
        sys.unraisablehook = previous


def _async_stats(provider: Provider) -> dict[str, int]:
    stats = getattr(provider, "async_stats", None)
    if stats is None:
        raise RuntimeError("this Provider has no async_stats(): asyncio providers are missing")
    out: dict[str, int] = stats()
    return out


def _settle(provider: Provider, ready: Callable[[], bool], seconds: float) -> float:
    """Wait (at most ``seconds``) until no task is left on the provider's loop
    and ``ready()``; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if _async_stats(provider).get("tasks", 0) == 0 and ready():
            break
        time.sleep(0.01)
    return round(time.monotonic() - start, 3)


def _enough_files(sessions: int) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) for
    ``sessions`` client sockets and as many backend connections."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    want = sessions * 4 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        top = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def _close_provider(provider: Provider) -> None:
    close = getattr(provider, "close", None)
    if close is not None:
        close()


# ---- part 1: concurrency ------------------------------------------------------------------


@dataclass
class _Backend:
    """Where the concurrency part's lookups wait: the provider classes and
    the name to look up, with what must be closed after."""

    kind: str
    provider: type[Provider]
    twin: type[Provider]
    name: str
    make: Callable[[type[Provider]], Provider]
    env: dict[str, str] = field(default_factory=dict)
    spec: str = ""
    twin_spec: str = ""
    stats: Callable[[], dict[str, Any]] | None = None
    close: Callable[[], None] = lambda: None
    #: The provider's name in the figures (default: its class's).
    label: str = ""


def _sleep_backend(delay: float) -> _Backend:
    class Sleep(SleepDirectory):
        pass

    Sleep.delay = delay
    Sleep.__qualname__ = Sleep.__name__ = "SleepDirectory"
    twin = blocking_twin(Sleep)
    return _Backend(
        "sleep",
        Sleep,
        twin,
        "alice@proof.test",
        lambda cls: cls(),
        env={"NSPV2_PROOF_DELAY_MS": str(round(delay * 1000, 3))},
        spec=f"{__name__}:SleepDirectory",
        twin_spec=f"{__name__}:BlockingSleepDirectory",
    )


def _http_backend(delay: float, sessions: int) -> _Backend:
    """The presence example's backend on a thread of this process, taking
    a connection from every session at once (and the warm-up's)."""
    from ..examples import async_presence, presence_backend

    backend = presence_backend.PresenceBackend(
        delay=delay, max_connections=max(MAX_SESSIONS, sessions) + 16
    )
    running = presence_backend.BackendThread(backend)
    running.start()
    url = running.url
    cls: type[Provider] = __getattr__("ProofHttpPresenceDirectory")

    def stats() -> dict[str, Any]:
        return dict(running.stats)

    return _Backend(
        "http",
        cls,
        blocking_twin(cls),
        cls.check_queries[0],
        lambda c: c(url),  # type: ignore[call-arg]
        env={"NSPV2_PRESENCE_URL": url},
        spec=f"{__name__}:ProofHttpPresenceDirectory",
        twin_spec=f"{__name__}:BlockingHttpPresenceDirectory",
        stats=stats,
        close=running.stop,
        label=async_presence.HttpPresenceDirectory.__qualname__,
    )


def __getattr__(name: str) -> Any:
    """``ProofHttpPresenceDirectory`` (the HTTP example admitting
    :data:`MAX_SESSIONS` steps at once) and its ``BlockingHttpPresenceDirectory``,
    made on first use (importable by ``nspv2 serve``; the example is not
    imported with this module)."""
    if name == "ProofHttpPresenceDirectory":
        from ..examples.async_presence import HttpPresenceDirectory

        made: type[Provider] = type(
            name,
            (HttpPresenceDirectory,),
            {
                "async_max_in_flight": MAX_SESSIONS,
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": "The HTTP presence example, every --sessions lookup in flight at once.",
            },
        )
    elif name == "BlockingHttpPresenceDirectory":
        made = blocking_twin(__getattr__("ProofHttpPresenceDirectory"))
        made.__qualname__ = made.__name__ = name
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = globals().setdefault(name, made)
    return made


def _timed_lookup(
    barrier: threading.Barrier,
    lookup: Callable[[], list[QuerySet]],
    lock: threading.Lock,
    codes: Counter[str],
    ends: list[float],
) -> None:
    """One measured lookup (a thread's body, in-process or served): start
    with the others at ``barrier``, count its outcome, note when it ended."""
    try:
        barrier.wait()
    except threading.BrokenBarrierError:  # interrupted before the start
        return
    try:
        code = "NO_ERROR" if lookup() else "no result"
    except WinsockError as exc:
        code = code_name(exc.code)
    now = time.monotonic()
    with lock:
        codes[code] += 1
        ends.append(now)


def _join(
    threads: list[threading.Thread], barrier: threading.Barrier, stop: Callable[[], None]
) -> bool:
    """Release ``threads`` (the barrier) and wait for them. On Ctrl-C:
    ``stop()`` (which makes their calls return), then wait for them (at most
    :data:`SETTLE_SECONDS`); True if so interrupted."""
    try:
        barrier.wait()
        for t in threads:
            t.join()
        return False
    except (KeyboardInterrupt, threading.BrokenBarrierError):
        barrier.abort()
        stop()
        deadline = time.monotonic() + SETTLE_SECONDS
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return True


def _in_process(backend: _Backend, cls: type[Provider], sessions: int) -> dict[str, Any]:
    """``sessions`` lookups at once from as many threads through nspv2.Host."""
    provider = backend.make(cls)
    codes: Counter[str] = Counter()
    ends: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()
    interrupted = False
    try:
        with private_catalog(), Host(timeout_ms=30000, auto_install=True) as host:
            host.advertise(provider)
            with host.open_session() as warm:  # the loop thread, imports, a first connection
                host.lookup(warm, backend.name)
            opened = [host.open_session() for _ in range(sessions)]
            barrier = threading.Barrier(sessions + 1)

            def one(session: ClientSession) -> None:
                _timed_lookup(
                    barrier, lambda: host.lookup(session, backend.name), lock, codes, ends
                )

            threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in opened]
            for t in threads:
                t.start()
            start = time.monotonic()

            def abandon() -> None:  # a waiting NextEx completes WSA_E_CANCELLED
                for s in opened:
                    with contextlib.suppress(WinsockError):
                        s.abandon()

            interrupted = _join(threads, barrier, abandon)
            for s in opened:
                if not s.closed:
                    s.close()
    finally:
        _close_provider(provider)
    return _timing(start, ends, codes, sessions, interrupted)


def _timing(
    start: float, ends: list[float], codes: Counter[str], sessions: int, interrupted: bool
) -> dict[str, Any]:
    waits = sorted(e - start for e in ends)
    wall = waits[-1] if waits else 0.0
    return {
        "wall_ms": round(wall * 1000, 1),
        "median_ms": round(waits[len(waits) // 2] * 1000, 1) if waits else 0.0,
        "codes": dict(codes),
        "lookups": sessions,
        "interrupted": interrupted,
    }


def _serve(
    backend: _Backend, spec: str, cls: type[Provider], folder: Path, threads: int, sessions: int
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``nspv2 serve SPEC --threads N`` on a socket and catalog of its own."""
    socket = folder / "serve.sock"
    log = folder / "serve.log"
    catalog = folder / "catalog"
    install_in(catalog, cls)
    env = {
        **os.environ,
        **backend.env,
        "NSPV2_RUNTIME_DIR": str(folder / "run"),
        "NSPV2_CATALOG": str(catalog),
    }
    env.pop("NSPV2_SOCKET", None)
    argv = [sys.executable, "-m", "nspv2", "serve", spec, "--socket", str(socket)]
    argv += ["--threads", str(threads), "--max-clients", str(sessions + 8)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=folder, env=env
        )
    try:
        wait_listening(proc, socket, log, RuntimeError, SERVE_SECONDS)
        return proc, socket, log
    except BaseException:  # also Ctrl-C while it starts: the child goes too
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End ``nspv2 serve``: SIGTERM, then SIGKILL after 30 s or at a
    Ctrl-C meanwhile (which is raised again once the child is gone)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(exc, KeyboardInterrupt):
            raise


def _served(
    backend: _Backend, spec: str, cls: type[Provider], sessions: int, threads: int
) -> dict[str, Any]:
    """``sessions`` nspv2.Client connections to ``nspv2 serve``, one lookup each at once."""
    from ..client import Client

    codes: Counter[str] = Counter()
    ends: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="nspv2-prove-") as tmp:
        folder = Path(tmp)
        proc, socket, _log = _serve(backend, spec, cls, folder, threads, sessions)
        try:
            with Client(socket=socket) as warm:
                warm.lookup(backend.name)
            clients = [Client(socket=socket, timeout=60) for _ in range(sessions)]
            barrier = threading.Barrier(sessions + 1)

            def one(client: Client) -> None:
                _timed_lookup(barrier, lambda: client.lookup(backend.name), lock, codes, ends)

            workers = [threading.Thread(target=one, args=(c,), daemon=True) for c in clients]
            for t in workers:
                t.start()
            start = time.monotonic()
            # Interrupted: the server goes first, and each waiting client sees it hang up.
            interrupted = _join(workers, barrier, lambda: _stop(proc))
            for c in clients:
                if not interrupted:
                    c.close()
                    continue
                # The server is gone and a worker may still be inside its
                # lookup on this client: closing may meet a reply meant for
                # that lookup (ConnectionLost). Nothing is left to close
                # cleanly; the interruption is what is reported.
                with contextlib.suppress(WinsockError):
                    c.close()
        finally:
            _stop(proc)
    out = _timing(start, ends, codes, sessions, interrupted)
    out["serve_threads"] = threads
    return out


def run_cancellation(*, lookups: int = 16, wait: float = 1.0) -> dict[str, Any]:
    """``lookups`` lookups of the HTTP presence example whose backend
    requests each wait ``wait`` s, ended from another thread while their
    NextEx waits: each NextEx must be WSA_E_CANCELLED and the backend must
    see each request's client hang up (``disconnected``), none answered."""
    from ..examples import async_presence, presence_backend

    running = presence_backend.BackendThread(presence_backend.PresenceBackend(delay=wait))
    running.start()
    provider = async_presence.HttpPresenceDirectory(running.url)
    name = async_presence.HttpPresenceDirectory.check_queries[0]
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    out: dict[str, Any] = {"lookups": lookups, "backend_wait_ms": round(wait * 1000, 1)}

    def until(what: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not what():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    try:
        with private_catalog(), Host(timeout_ms=30000, auto_install=True) as host:
            host.advertise(provider)
            sessions = [host.open_session() for _ in range(lookups)]
            handles = [host.lookup_begin(s, name) for s in sessions]

            def one(handle: int) -> None:
                code = code_name(host.lookup_next(handle).code)
                with lock:
                    codes[code] += 1

            threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in handles]
            for t in threads:
                t.start()
            start = time.monotonic()
            try:
                out["all_waiting"] = until(lambda: running.stats["in_flight"] >= lookups, 10.0)
                start = time.monotonic()
                for h in handles:
                    host.lookup_end(h)
                for t in threads:
                    t.join()
            except KeyboardInterrupt:
                out["interrupted"] = True
                for h in handles:  # each waiting NextEx completes WSA_E_CANCELLED
                    with contextlib.suppress(WinsockError):
                        host.lookup_end(h)
                for t in threads:
                    t.join(SETTLE_SECONDS)
            out["ended_ms"] = round((time.monotonic() - start) * 1000, 1)
            if not out.get("interrupted"):
                until(lambda: running.stats["disconnected"] >= lookups, 5.0)
            out["disconnects_seen_ms"] = round((time.monotonic() - start) * 1000, 1)
            for s in sessions:
                s.close()
    finally:
        _close_provider(provider)
        out["backend_stats"] = dict(running.stats)
        running.stop()
    out["codes"] = dict(codes)
    out.setdefault("interrupted", False)
    out.setdefault("all_waiting", False)
    stats = out["backend_stats"]
    out["ok"] = (
        not out["interrupted"]
        and out["all_waiting"]
        and out["codes"] == {"WSA_E_CANCELLED": lookups}
        and stats["disconnected"] == lookups
        and stats["answered"] == 0
    )
    return out


def run_concurrency(
    *,
    sessions: int = 64,
    delay: float = 0.05,
    backend: str = "http",
    served: bool = False,
    serve_threads: int | None = None,
    max_ratio: float = 0.25,
    progress: Callable[[str], None] | None = None,
    in_process: bool = True,
    twin: bool = True,
    cancel: int = 16,
) -> dict[str, Any]:
    """``sessions`` lookups at once, each waiting ``delay`` s on ``backend``
    (``http`` or ``sleep``): the async provider, then (``twin``) its
    blocking twin, in-process (``in_process``) and (``served``) through
    ``nspv2 serve``. ``ok`` when the async runs took at most ``max_ratio``
    of the serial bound and every lookup answered. With the HTTP backend,
    then :func:`run_cancellation` of ``cancel`` lookups (0: none)."""
    say = progress or (lambda _t: None)
    _enough_files(sessions)
    made = _http_backend(delay, sessions) if backend == "http" else _sleep_backend(delay)
    serial_ms = sessions * delay * 1000
    out: dict[str, Any] = {
        "backend": made.kind,
        "provider": made.label or made.provider.__qualname__,
        "name": made.name,
        "sessions": sessions,
        "delay_ms": round(delay * 1000, 3),
        "serial_bound_ms": round(serial_ms, 1),
        "max_ratio": max_ratio,
        "runs": [],
        "interrupted": False,
    }
    try:
        plan: list[tuple[str, str, type[Provider], str]] = [
            (where, which, cls, spec)
            for where, wanted in (("in-process", in_process), ("served", served))
            if wanted
            for which, cls, spec, also in (
                ("async", made.provider, made.spec, True),
                ("blocking twin", made.twin, made.twin_spec, twin),
            )
            if also
        ]
        for where, which, cls, spec in plan:
            say(f"concurrency: {where}, {which}: {sessions} lookups at once")
            if where == "served":
                threads = serve_threads if serve_threads is not None else sessions
                run = _served(made, spec, cls, sessions, threads)
            else:
                run = _in_process(made, cls, sessions)
            run.update(where=where, provider=which, ratio=round(run["wall_ms"] / serial_ms, 3))
            out["runs"].append(run)
            if run["interrupted"]:
                out["interrupted"] = True
                break
        if made.stats is not None:
            out["backend_stats"] = made.stats()
    except KeyboardInterrupt:  # between runs: each run has stopped what it started
        out["interrupted"] = True
    finally:
        made.close()
    if made.kind == "http" and cancel and not out["interrupted"]:
        say(f"concurrency: {cancel} lookups ended while their backend requests wait")
        try:
            out["cancellation"] = run_cancellation(lookups=cancel)
        except KeyboardInterrupt:
            out["interrupted"] = True
        if out.get("cancellation", {}).get("interrupted"):
            out["interrupted"] = True
    problems = []
    for run in out["runs"]:
        if run["interrupted"]:
            continue  # its figures are partial, not wrong
        if run["codes"] != {"NO_ERROR": sessions}:
            problems.append(f"{run['where']} {run['provider']}: codes {run['codes']}")
        if run["provider"] == "async" and run["ratio"] > max_ratio:
            problems.append(
                f"{run['where']} async: {run['wall_ms']} ms is {run['ratio']:.2f} of the "
                f"serial bound, above {max_ratio}"
            )
    cancelled = out.get("cancellation")
    if cancelled is not None and not cancelled["ok"] and not cancelled["interrupted"]:
        problems.append(f"cancellation: {cancelled}")
    out["problems"] = problems
    out["ok"] = not problems
    return out


# ---- part 2: mixed cycles -------------------------------------------------------------------

#: Each kind of cycle and its weight.
KINDS: dict[str, int] = {
    "drain": 3,
    "one": 2,
    "begin_end": 1,
    "close_open": 1,
    "abandon_open": 1,
    "abandon_fresh": 1,
    "end_waiting": 2,
    "abandon_waiting": 1,
    "race": 2,
    "error": 1,
    "set_service": 1,
}
#: One cycle in this many (per thread) outlives the provider's async_timeout.
TIMEOUT_EVERY = 250


class _Ender:
    """Another thread ending lookups and abandoning sessions for the cycles:
    after the provider's step has started its wait (an event), or after a
    random short delay (a race)."""

    def __init__(self, host: Host, seed: int) -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.jobs: queue.Queue[tuple[str, Any, threading.Event | None, Counter[str]] | None] = (
            queue.Queue()
        )
        self.thread = threading.Thread(target=self._run, name="nspv2 prove ender", daemon=True)
        self.thread.start()

    def submit(
        self, what: str, target: Any, event: threading.Event | None, record: Counter[str]
    ) -> None:
        self.jobs.put((what, target, event, record))

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(60)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            what, target, event, record = job
            if event is not None:
                if not event.wait(10):
                    record["ender:step never waited"] += 1
            else:
                time.sleep(self.rng.random() * 0.002)
            try:
                if what == "end":
                    self.host.lookup_end(target)
                else:
                    target.abandon()
                code = _OK
            except WinsockError as exc:
                code = exc.code
            record[f"ender-{what}:{code_name(code)}"] += 1


@dataclass
class _Tally:
    """One thread's counts: per kind, each client call's code."""

    kinds: dict[str, Counter[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    cycles: int = 0

    def of(self, kind: str) -> Counter[str]:
        return self.kinds.setdefault(kind, Counter())


def _code_of(call: Callable[[], object]) -> int:
    try:
        call()
    except WinsockError as exc:
        return exc.code
    return _OK


def _cycle(
    host: Host,
    provider: ChaosDirectory,
    ender: _Ender,
    kind: str,
    name: str,
    tally: _Tally,
) -> None:
    rec = tally.of(kind)
    session = host.open_session()
    seen: list[int] = []

    def note(what: str, code: int) -> int:
        rec[f"{what}:{code_name(code)}"] += 1
        seen.append(code)
        return code

    def next_code(handle: int) -> int:
        return note("next", host.lookup_next(handle).code)

    def problem(text: str) -> None:
        if len(tally.problems) < 20:
            tally.problems.append(f"{kind} {name}: {text}; codes {[code_name(c) for c in seen]}")

    try:
        if kind == "set_service":
            q = QuerySet(name)
            reg, delete = WSAESETSERVICEOP.RNRSERVICE_REGISTER, WSAESETSERVICEOP.RNRSERVICE_DELETE
            codes = (
                note("set", _code_of(lambda: host.set_service(session, q, reg))),
                note("set", _code_of(lambda: host.set_service(session, q, delete))),
                note("set", _code_of(lambda: host.set_service(session, q, delete))),
            )
            if codes != (_OK, _OK, _NOT_FOUND):
                problem("register, delete, delete again")
            return
        handle = host.lookup_begin(session, name)
        if kind == "drain":
            drained = [next_code(handle) for _ in range(CHAOS_RESULTS + 1)]
            if drained != [_OK] * CHAOS_RESULTS + [_NO_MORE]:
                problem("not every result then WSA_E_NO_MORE")
            if note("end", _code_of(lambda: host.lookup_end(handle))) != _OK:
                problem("End failed")
        elif kind in ("one", "error", "timeout"):
            want = {"one": _OK, "error": _NOT_FOUND, "timeout": _TIMED_OUT}[kind]
            if next_code(handle) != want:
                problem(f"NextEx was not {code_name(want)}")
            if note("end", _code_of(lambda: host.lookup_end(handle))) != _OK:
                problem("End failed")
        elif kind == "begin_end":
            if note("end", _code_of(lambda: host.lookup_end(handle))) != _OK:
                problem("End failed")
        elif kind in ("close_open", "abandon_open"):
            if next_code(handle) != _OK:
                problem("NextEx failed")
            if kind == "abandon_open":
                note("abandon", _code_of(session.abandon))
            else:
                note("close", _code_of(session.close))
        elif kind == "abandon_fresh":
            note("abandon", _code_of(session.abandon))
        elif kind in ("end_waiting", "abandon_waiting"):
            event = provider.expect(name)
            if kind == "end_waiting":
                ender.submit("end", handle, event, rec)
            else:
                ender.submit("abandon", session, event, rec)
            if next_code(handle) != _CANCELLED:
                problem("NextEx ended while it waited was not WSA_E_CANCELLED")
            if kind == "end_waiting" and note("end", _code_of(lambda: host.lookup_end(handle))) != (
                _INVALID
            ):
                problem("End after another thread's End was not WSA_INVALID_HANDLE")
        elif kind == "race":
            ender.submit("end", handle, None, rec)
            code = _OK
            for _ in range(CHAOS_RESULTS + 1):
                code = next_code(handle)
                if code != _OK:
                    break
            if code not in (_NO_MORE, _CANCELLED, _INVALID):
                problem("NextEx racing an End ended otherwise")
            if note("end", _code_of(lambda: host.lookup_end(handle))) not in (_OK, _INVALID):
                problem("End racing an End failed otherwise")
        else:  # pragma: no cover - KINDS and this function go together
            raise AssertionError(kind)
    finally:
        if not session.closed:
            session.close()


def _worker(
    host: Host,
    provider: ChaosDirectory,
    ender: _Ender,
    index: int,
    cycles: int,
    seed: int,
    stop: threading.Event,
    tally: _Tally,
) -> None:
    rng = random.Random(seed * 1000 + index)
    names = list(KINDS)
    weights = [KINDS[k] for k in names]
    for cycle in range(cycles):
        if stop.is_set():
            return
        if cycle % TIMEOUT_EVERY == TIMEOUT_EVERY // 2:
            kind = "timeout"
        else:
            kind = rng.choices(names, weights)[0]
        word = {"end_waiting": "wait", "abandon_waiting": "wait", "error": "missing"}.get(
            kind, "hang" if kind == "timeout" else "ok"
        )
        try:
            _cycle(host, provider, ender, kind, f"{word}-{index}-{cycle}@proof.test", tally)
        except Exception as exc:  # counted, and the run goes on
            if len(tally.problems) < 20:
                tally.problems.append(f"{kind}: {type(exc).__name__}: {exc}")
            tally.of(kind)[f"raised:{type(exc).__name__}"] += 1
        tally.cycles += 1


_GAUGES = ("sessions_open", "lookups_open", "async_pending", "timed_out_held")
_COUNTERS = ("double_completions", "late_completions", "provider_faults", "timed_out_released")


def run_mixed(
    *,
    threads: int = 8,
    cycles: int = 10_000,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    provider_class: type[ChaosDirectory] = ChaosDirectory,
    settle: float = SETTLE_SECONDS,
) -> dict[str, Any]:
    """``threads`` threads x ``cycles`` mixed cycles against a
    :class:`ChaosDirectory` (or ``provider_class``); the outcome codes per
    kind and the checks. ``settle``: how long the loop gets to finish its
    tasks before the checks."""
    say = progress or (lambda _t: None)
    stop = stop or threading.Event()
    provider = provider_class(seed)
    tallies = [_Tally() for _ in range(threads)]
    out: dict[str, Any] = {"threads": threads, "cycles_per_thread": cycles, "seed": seed}
    with _watching_errors() as watched:
        try:
            with private_catalog(), Host(timeout_ms=10000, auto_install=True) as host:
                before = host.stats()
                host.advertise(provider)
                ender = _Ender(host, seed)
                workers = [
                    threading.Thread(
                        target=_worker,
                        args=(host, provider, ender, i, cycles, seed, stop, tallies[i]),
                        name=f"nspv2 prove {i}",
                    )
                    for i in range(threads)
                ]
                start = time.monotonic()
                for w in workers:
                    w.start()
                try:
                    while any(w.is_alive() for w in workers):
                        workers[0].join(0.5)
                        done = sum(t.cycles for t in tallies)
                        say(f"mixed cycles: {done}/{threads * cycles}")
                except KeyboardInterrupt:
                    stop.set()
                    out["interrupted"] = True
                for w in workers:
                    w.join()
                ender.stop()
                elapsed = time.monotonic() - start
                counts = provider.counts
                out["settle_seconds"] = _settle(
                    provider,
                    lambda: counts()["started"] == counts()["finalized"],
                    settle,
                )
                after = host.stats()
                out["async_stats"] = _async_stats(provider)
                out["provider_open"] = provider.registry.open_counts()
                out["provider_counts"] = counts()
        finally:
            _close_provider(provider)
        out["async_stats_after_close"] = _async_stats(provider)
    out["host_open"] = {k: after[k] for k in _GAUGES}
    out["host_counters"] = {k: after[k] - before[k] for k in _COUNTERS}
    out["cycles"] = sum(t.cycles for t in tallies)
    out["seconds"] = round(elapsed, 3)
    out["cycles_per_second"] = round(out["cycles"] / elapsed, 1) if elapsed else 0.0
    kinds: dict[str, Counter[str]] = {}
    for t in tallies:
        for kind, rec in t.kinds.items():
            kinds.setdefault(kind, Counter()).update(rec)
    out["outcomes"] = {k: dict(sorted(v.items())) for k, v in sorted(kinds.items())}
    unraisable, asyncio_errors, nspv2_errors = (
        watched.unraisable,
        watched.asyncio_errors,
        watched.nspv2_errors,
    )
    out["unraisable"] = unraisable[:20]
    out["unraisable_count"] = len(unraisable)
    out["asyncio_errors"] = asyncio_errors[:20]
    out["asyncio_error_count"] = len(asyncio_errors)
    out["nspv2_errors"] = nspv2_errors[:20]
    out["nspv2_error_count"] = len(nspv2_errors)
    closed = out["async_stats_after_close"]
    problems = [p for t in tallies for p in t.problems][:20]
    c = out["provider_counts"]
    checks = {
        "provider registry empty": out["provider_open"] == {"sessions": 0, "lookups": 0},
        "host: nothing open, no call pending or held": not any(out["host_open"].values()),
        "no task left on the loop": out["async_stats"].get("tasks", 0) == 0,
        "no step in flight": out["async_stats"].get("in_flight", 0) == 0,
        "after close: no task, no step in flight": closed.get("tasks", 0) == 0
        and closed.get("in_flight", 0) == 0,
        "every generator's finally ran once": c["started"] == c["finalized"]
        and c["finalized_twice"] == 0,
        "every session ended once (cleanup or rundown)": c["startups"]
        == c["cleanups"] + c["rundowns"],
        "no double completion": out["host_counters"]["double_completions"] == 0,
        "nothing reached sys.unraisablehook": not unraisable,
        "nothing in asyncio's error log": not asyncio_errors,
        "no scaffold warning or error on the nspv2 logger": not nspv2_errors,
        "every code one its kind allows": not problems,
    }
    out["checks"] = checks
    out["problems"] = problems + [f"check failed: {k}" for k, ok in checks.items() if not ok]
    out["ok"] = not out["problems"]
    out.setdefault("interrupted", False)
    return out


# ---- the command --------------------------------------------------------------------------


def print_concurrency(doc: dict[str, Any]) -> None:
    print(
        f"  {'ok  ' if doc['ok'] else 'FAIL'} concurrency: {doc['sessions']} client sessions at "
        f"once, each lookup waiting {doc['delay_ms']:g} ms on the {doc['backend']} backend "
        f"({doc['provider']}, asking for {doc['name']})"
    )
    print(
        f"       serial bound {doc['sessions']} x {doc['delay_ms']:g} ms = "
        f"{doc['serial_bound_ms']:g} ms"
    )
    for run in doc["runs"]:
        where = run["where"] + (
            f" (serve --threads {run['serve_threads']})" if "serve_threads" in run else ""
        )
        codes = ", ".join(f"{k} {v}" for k, v in sorted(run["codes"].items()))
        cut = " (interrupted: the lookups done by then)" if run["interrupted"] else ""
        print(
            f"       {where:<32} {run['provider']:<14} wall {run['wall_ms']:>8.1f} ms "
            f"(median {run['median_ms']:.1f} ms), {run['ratio']:.3f} of the bound; {codes}{cut}"
        )
    stats = doc.get("backend_stats")
    if stats:
        print(f"       backend: {json.dumps(stats, sort_keys=True)}")
    c = doc.get("cancellation")
    if c:
        b = c["backend_stats"]
        print(
            f"  {'cut ' if c['interrupted'] else 'ok  ' if c['ok'] else 'FAIL'} cancellation: "
            f"{c['lookups']} lookups ended by "
            f"another thread while their backend requests waited ({c['backend_wait_ms']:g} ms "
            f"each): NextEx {', '.join(f'{k} {v}' for k, v in sorted(c['codes'].items()))} "
            f"within {c['ended_ms']:g} ms; the backend saw {b['disconnected']} disconnects "
            f"(answered {b['answered']}) within {c['disconnects_seen_ms']:g} ms"
        )
    for p in doc["problems"]:
        print(f"       problem: {p}")


def print_mixed(doc: dict[str, Any]) -> None:
    print(
        f"  {'ok  ' if doc['ok'] else 'FAIL'} mixed cycles: {doc['threads']} threads x "
        f"{doc['cycles_per_thread']} cycles ({doc['cycles']} run, {doc['seconds']:g} s, "
        f"{doc['cycles_per_second']:g} cycles/s, seed {doc['seed']})"
    )
    for kind, rec in doc["outcomes"].items():
        print(f"       {kind:<16} " + ", ".join(f"{k} {v}" for k, v in rec.items()))
    c = doc["provider_counts"]
    print(
        f"       generators: {c['started']} started, {c['finalized']} finalized "
        f"({c['cancelled']} cancelled at an await, {c['closed']} closed at a yield); sessions: "
        f"{c['startups']} started, {c['cleanups']} cleanups, {c['rundowns']} rundowns"
    )
    print(
        f"       provider open {doc['provider_open']}; host open {doc['host_open']}; "
        f"host counters {doc['host_counters']} (a late completion: a NextEx whose waiter "
        "was cancelled, completed afterwards by its owner and refused by the host)"
    )
    print(
        f"       async_stats {doc['async_stats']} (settled in {doc['settle_seconds']:g} s); "
        f"after close {doc['async_stats_after_close']}"
    )
    print(
        f"       unraisable exceptions: {doc['unraisable_count']}; asyncio errors: "
        f"{doc['asyncio_error_count']}; nspv2 scaffold warnings and errors: "
        f"{doc['nspv2_error_count']}"
    )
    for text in doc["unraisable"] + doc["asyncio_errors"] + doc["nspv2_errors"]:
        print(f"         {text}")
    for check, ok in doc["checks"].items():
        print(f"       {'ok  ' if ok else 'FAIL'} {check}")
    for p in doc["problems"]:
        print(f"       problem: {p}")


def cmd_prove_async(args: argparse.Namespace) -> int:
    if args.only == "mixed" and (args.served or args.serve_threads is not None):
        raise UsageError("--served and --serve-threads go with the concurrency part")
    if args.serve_threads is not None and not args.served:
        raise UsageError("--serve-threads goes with --served")
    progress = Progress()
    doc: dict[str, Any] = {}
    stop = threading.Event()
    interrupted = False
    try:
        if args.only in (None, "concurrency"):
            doc["concurrency"] = run_concurrency(
                sessions=args.sessions,
                delay=args.delay_ms / 1000,
                backend=args.backend,
                served=args.served,
                serve_threads=args.serve_threads,
                max_ratio=args.max_ratio,
                progress=progress,
            )
            interrupted = doc["concurrency"]["interrupted"]
        if args.only in (None, "mixed") and not interrupted:
            doc["mixed"] = run_mixed(
                threads=args.threads,
                cycles=args.cycles,
                seed=args.seed,
                progress=progress,
                stop=stop,
            )
            interrupted = doc["mixed"]["interrupted"]
    except KeyboardInterrupt:  # outside a run's measuring: what it started is stopped
        interrupted = True
    finally:
        progress.done()
    ok = all(part["ok"] for part in doc.values())
    doc["ok"] = ok
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print("nspv2 prove-async:")
        if "concurrency" in doc:
            print_concurrency(doc["concurrency"])
        if "mixed" in doc:
            print_mixed(doc["mixed"])
        if interrupted:
            print("  interrupted: the figures above are those measured so far")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_PROBLEMS


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not above 0 and at most 1")
    return value


def add_commands(sub: SubParsers) -> None:
    p = sub.add_parser(
        "prove-async",
        help="figures for asyncio providers: concurrency, and mixed cycles that leave nothing behind",
        description="Concurrency: --sessions client sessions at once, each lookup waiting "
        "--delay-ms on the backend (the HTTP presence example over loopback, or asyncio.sleep "
        "with --backend sleep), through the in-process host and with --served through nspv2 "
        "serve; the wall time against the serial bound and against the provider's blocking "
        "twin (complete_from_thread, four worker threads). Mixed cycles: --threads threads x "
        "--cycles cycles of an async provider: drained, ended after one result, ended or "
        "abandoned by another thread while a NextEx waits, abandoned or closed with the lookup "
        "open, ended at a random moment, failing, timing out, registering; then nothing may "
        "be left open or pending, no task on the loop, every generator finalized once, no "
        "double completion, no unraisable exception, nothing in asyncio's error log, no "
        "warning or error of the scaffold's own on the nspv2 logger, no task left after "
        "close. Exit 1 if a check fails; Ctrl-C prints the figures measured so far (exit 130) "
        "and stops the nspv2 serve it started. docs/performance.md.",
    )
    p.add_argument("--only", choices=("concurrency", "mixed"), help="run one part (default: both)")
    p.add_argument(
        "--sessions",
        type=whole(1, MAX_SESSIONS),
        default=64,
        metavar="N",
        help=f"concurrency: client sessions at once, 1 to {MAX_SESSIONS}; the proof's providers "
        f"admit {MAX_SESSIONS} steps at once (async_max_in_flight, 256 by default) and its HTTP "
        "backend as many connections, so every size is measured (default: %(default)s)",
    )
    p.add_argument(
        "--delay-ms",
        type=whole(1, 2000),
        default=50,
        metavar="MS",
        help="concurrency: what each lookup waits on the backend, 1 to 2000 (default: %(default)s)",
    )
    p.add_argument(
        "--backend",
        choices=("http", "sleep"),
        default="http",
        help="concurrency: the HTTP presence example, or asyncio.sleep (default: %(default)s)",
    )
    p.add_argument(
        "--served",
        action="store_true",
        help="concurrency: also through nspv2 serve in a child process",
    )
    p.add_argument(
        "--serve-threads",
        type=whole(1, 1024),
        metavar="N",
        help="concurrency: nspv2 serve --threads (default: --sessions; its NextEx waits "
        "hold a worker each)",
    )
    p.add_argument(
        "--max-ratio",
        type=_ratio,
        default=0.25,
        metavar="R",
        help="concurrency: fail when an async run takes more than R of the serial bound "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=whole(1, MAX_THREADS),
        default=8,
        metavar="N",
        help=f"mixed: threads, 1 to {MAX_THREADS} (default: %(default)s)",
    )
    p.add_argument(
        "--cycles",
        type=positive,
        default=10_000,
        metavar="N",
        help="mixed: cycles per thread (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=whole(0, 2**32 - 1), default=1, help="mixed: random seed (default: 1)"
    )
    add_json(p, "the figures")
    p.set_defaults(func=cmd_prove_async)
