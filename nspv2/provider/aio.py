"""Async providers: one event loop per provider, and who completes what.

A :class:`~nspv2.provider.base.Provider` may write ``lookup`` as an async
generator, ``set_service`` and the session hooks as ``async def``. The
scaffold runs them on the provider's event loop (a thread of its own by
default, or a running loop the user hands over with
:meth:`Provider.use_event_loop`); this module is that machinery.

Ownership (the rules of :mod:`nspv2.provider.registry`, carried to a loop):

- A NextEx on an async lookup is claimed by its slot exactly as a
  synchronous one (``lookup.in_flight`` set under ``lookup.lock``). The slot
  then hands the call to the loop in one step, under the runner's lock:
  either it is admitted (counted, and its start scheduled on the loop), or
  it is not (the limit is reached: WSATRY_AGAIN; the loop is closing:
  WSASYSNOTREADY) and the slot completes it itself, through the same owner
  code. Exactly one of the two happens.
- Once handed over, the call belongs to its :class:`_Step`: the step's task
  pulls one result (``await results.__anext__()``), and its done callback,
  on the loop's thread, completes the call exactly once, under
  ``lookup.lock``, through the owner code synchronous NextEx uses
  (``Provider._next_step``): WSA_E_CANCELLED without writing if the lookup
  ended, else the result, or the code the guard's table gives the
  exception.
- Ending a lookup (End, its session ending, the table closing, unadvertise)
  marks it ended under its lock, as for any lookup, and then cancels the
  step's task (``_Step.cancel``, from any thread). It never completes the
  call: the task ends (CancelledError at the generator's ``await``, its
  ``finally`` run once, there) and its done callback completes
  WSA_E_CANCELLED. A step started after the lookup ended cancels itself.
- A step that outlives ``async_timeout`` is cancelled the same way and its
  call completed with WSAETIMEDOUT (unless the lookup ended meanwhile).
- An async generator suspended at a ``yield`` (no NextEx in flight) is
  closed by whoever ends the lookup through :meth:`AsyncResults.close`,
  which schedules ``aclose()`` on the loop and does not wait: its
  ``finally`` runs on the loop's thread, once.
- An async SetServiceEx is admitted the same way; its task's done callback
  completes it exactly once. Its session's end cancels it (WSA_E_CANCELLED).
- Async startup/cleanup/rundown hooks are awaited by the slot's own thread,
  at most ``async_hook_timeout``; past it the hook's task is cancelled and
  the slot fails with WSAETIMEDOUT (rundown: logged).
- :meth:`AsyncRunner.close` refuses new work first (under the runner's
  lock, so nothing admitted is left unscheduled), then cancels every task
  it tracks and waits for them, so every admitted call has been completed
  when it returns (or its wait timed out, reported). Its own loop is then
  stopped and its thread joined; a loop handed over is left running.
- A coroutine's KeyboardInterrupt or SystemExit never reaches the loop: it
  fails the call (WSANO_RECOVERY, logged) like any other exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..sdk.winsock2 import NO_ERROR, WSAError
from .errors import WinsockError
from .queryset import QuerySet
from .routine import log_failure, report_exception

if TYPE_CHECKING:
    from .registry import Lookup, Registry, Session

__all__ = ["AsyncResults", "AsyncRunner", "EscapedBaseError", "NextStep", "ServiceStep"]

log = logging.getLogger("nspv2")

_TRY_AGAIN = int(WSAError.WSATRY_AGAIN)
_NOT_READY = int(WSAError.WSASYSNOTREADY)
_TIMED_OUT = int(WSAError.WSAETIMEDOUT)
_CANCELLED = int(WSAError.WSA_E_CANCELLED)


class EscapedBaseError(Exception):
    """A provider coroutine raised a BaseException that is not an Exception
    (KeyboardInterrupt, SystemExit): asyncio would re-raise it out of the
    loop, stopping it for every provider call. It is wrapped in this and
    fails the one call instead; ``original`` is what was raised."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__} raised in a provider coroutine")
        self.original = original


async def guarded(make: Callable[[], Awaitable[Any]]) -> Any:
    """Make the provider's awaitable and await it; a KeyboardInterrupt or
    SystemExit (anything but an Exception or a cancellation) comes out as
    :class:`EscapedBaseError`. The awaitable is made here, inside the task,
    so a task cancelled before it starts leaves no coroutine un-awaited."""
    try:
        return await make()
    except (Exception, asyncio.CancelledError, GeneratorExit):
        # GeneratorExit: the coroutine itself is being closed (a task
        # destroyed while pending); it must go through untouched.
        raise
    except BaseException as exc:
        raise EscapedBaseError(exc) from exc


def unwrap(exc: BaseException) -> BaseException:
    """What the provider raised, for the guard's table of codes."""
    return exc.original if isinstance(exc, EscapedBaseError) else exc


class AsyncRunner:
    """The event loop a provider's coroutines run on, and every task it runs.

    ``loop`` None: a loop of its own on a daemon thread, started at first use
    and stopped by :meth:`close`. Otherwise a loop the user runs (on another
    thread than the host's callers), left running at close.
    """

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.name = name
        self._loop = loop
        self._own = loop is None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False  # set on the loop's thread before close stops it
        #: Tasks alive on the loop (added and removed on the loop's thread).
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Starts scheduled on the loop and not yet run (under _lock).
        self._queued = 0
        #: Admitted NextEx / SetServiceEx calls not yet completed (under _lock).
        self.in_flight = 0
        self.steps = 0
        self.refused = 0
        self.cancelled = 0
        self.timed_out = 0

    # -- the loop -----------------------------------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, its thread started on first use; WSASYSNOTREADY once closed."""
        with self._lock:
            if self._closed:
                raise WinsockError(_NOT_READY, f"{self.name}: the provider's event loop is closed")
            return self._loop_locked()

    def _loop_locked(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            self._thread_id = threading.get_ident()
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                while True:
                    try:
                        loop.run_forever()
                    except BaseException as exc:
                        # KeyboardInterrupt/SystemExit from a task the
                        # provider made itself (gather, create_task,
                        # wait_for on 3.10/3.11): asyncio re-raises them out
                        # of the loop. The loop stays: one call failed, not
                        # every call after it.
                        log.error(
                            "%s: %s escaped a task on the event loop; the loop goes on",
                            self.name,
                            type(exc).__name__,
                            exc_info=exc,
                        )
                        continue
                    if self._stopping:
                        break
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                except BaseException as exc:
                    log.error("%s: closing async generators failed", self.name, exc_info=exc)
                loop.close()

        thread = threading.Thread(target=run, name=f"nspv2-{self.name}-loop", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        return loop

    def on_loop_thread(self) -> bool:
        """Whether the calling thread is the one running the loop."""
        loop = self._loop
        if loop is None:
            return False
        if self._own:
            return threading.get_ident() == self._thread_id
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    # -- handing work to the loop ------------------------------------------------------------

    def admit(self, start: Callable[[], None], limit: int | None) -> None:
        """Schedule ``start`` on the loop for one more call in flight.

        Raises WinsockError (nothing scheduled, nothing counted): WSATRY_AGAIN
        when ``limit`` calls are in flight, WSASYSNOTREADY once closed. The
        check, the count and the scheduling are one step under the lock, so
        :meth:`close` never misses a call it admitted.
        """
        with self._lock:
            if self._closed:
                raise WinsockError(_NOT_READY, f"{self.name}: the provider's event loop is closed")
            if limit is not None and self.in_flight >= limit:
                self.refused += 1
                raise WinsockError(
                    _TRY_AGAIN, f"{self.name}: {limit} async calls in flight (async_max_in_flight)"
                )
            loop = self._loop_locked()
            loop.call_soon_threadsafe(self._run_start, start)
            self._queued += 1
            self.in_flight += 1
            self.steps += 1

    def schedule(self, start: Callable[[], None]) -> bool:
        """Schedule ``start`` on the loop (work that is no call: closing a
        generator). False, and nothing scheduled, once closed."""
        with self._lock:
            if self._closed:
                return False
            self._loop_locked().call_soon_threadsafe(self._run_start, start)
            self._queued += 1
            return True

    def _run_start(self, start: Callable[[], None]) -> None:
        try:
            start()
        except BaseException as exc:  # a start never raises; if it did, say so
            log.error("%s: starting async work failed", self.name, exc_info=exc)
        finally:
            # After start() tracked its task: pending() never reads 0 between.
            with self._lock:
                self._queued -= 1

    def bump(self, counter: str) -> None:
        """Add one to ``cancelled`` or ``timed_out`` (any thread)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def call_done(self) -> None:
        """An admitted call is about to be completed (on the loop's thread)."""
        with self._lock:
            self.in_flight -= 1

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task for ``coro``, tracked until done (on the loop's thread)."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop's thread (now, if this is it); never raises."""
        loop = self._loop
        if loop is None:
            return
        try:
            if self.on_loop_thread():
                fn()
            else:
                loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: its tasks are gone with it
            pass

    def wait_hook(self, make: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
        """Run a hook's coroutine on the loop and wait for it from this
        (non-loop) thread, at most ``timeout`` seconds: past it the task is
        cancelled and WSAETIMEDOUT raised."""
        if self.on_loop_thread():
            raise WinsockError(
                WSAError.WSANO_RECOVERY,
                f"{self.name}: async {what} called on its own event loop's thread, "
                "where waiting for it would wait for ever",
            )
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        holder: list[asyncio.Task[Any]] = []

        def start() -> None:
            try:
                task = self.spawn(guarded(make))
            except BaseException as exc:
                result.set_exception(exc)
                return
            holder.append(task)

            def done(t: asyncio.Task[Any]) -> None:
                if t.cancelled():
                    result.set_exception(asyncio.CancelledError())
                elif t.exception() is not None:
                    result.set_exception(unwrap(t.exception()))  # type: ignore[arg-type]
                else:
                    result.set_result(t.result())

            task.add_done_callback(done)

        with self._lock:
            if self._closed:
                raise WinsockError(_NOT_READY, f"{self.name}: the provider's event loop is closed")
            self._loop_locked().call_soon_threadsafe(self._run_start, start)
            self._queued += 1
        try:
            return result.result(timeout)
        except concurrent.futures.TimeoutError:
            self.call_soon(lambda: [t.cancel() for t in holder])
            self.bump("timed_out")
            raise WinsockError(
                _TIMED_OUT, f"{self.name}: async {what} took longer than {timeout:g} s"
            ) from None
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise WinsockError(
                WSAError.WSA_E_CANCELLED, f"{self.name}: async {what} was cancelled"
            ) from None

    # -- inspection and closing --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "tasks": len(self._tasks) + self._queued,
                "steps": self.steps,
                "cancelled": self.cancelled,
                "timed_out": self.timed_out,
                "refused": self.refused,
            }

    def pending(self) -> int:
        """Tasks alive plus starts not yet run."""
        with self._lock:
            return len(self._tasks) + self._queued

    def wait_idle(self, timeout: float) -> bool:
        """Wait (polling) until no task is pending; False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float) -> bool:
        """Refuse new work, cancel every task and wait for them (at most
        ``timeout`` s), then stop an own loop and join its thread. Returns
        False if tasks were still running when the wait ended."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            loop = self._loop
        if loop is None:
            return True
        finished = threading.Event()

        async def drain() -> None:
            # Everything admitted before _closed was scheduled before this,
            # and ending the sessions already cancelled every step once: wait
            # for the tasks (a generator's finally may await its clean-up),
            # and cancel what is left only when the budget has run out.
            deadline = loop.time() + timeout
            cancelled: set[asyncio.Task[Any]] = set()
            while True:
                tasks = [t for t in self._tasks if not t.done()]
                if not tasks and not self._queued:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    for t in tasks:
                        if t not in cancelled:
                            cancelled.add(t)
                            t.cancel()
                    left = 0.05
                if tasks:
                    await asyncio.wait(tasks, timeout=min(left, 0.05))
                else:
                    await asyncio.sleep(0)

        def drained_now(_task: asyncio.Task[Any]) -> None:
            finished.set()
            if self._own:  # stop the loop from its own thread, once drained
                self._stopping = True
                loop.stop()

        def start() -> None:
            loop.create_task(drain()).add_done_callback(drained_now)

        if self.on_loop_thread():
            # Closed from one of its own coroutines: it cannot wait for
            # itself; the drain stops the loop when it is done.
            start()
            return False
        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is already closed
            return True
        drained = finished.wait(timeout + 1.0)
        if not drained:
            log.error(
                "%s: %d async tasks still running %g s after close; left to the loop",
                self.name,
                len(self._tasks),
                timeout,
            )
            if self._own:

                def stop() -> None:
                    self._stopping = True
                    loop.stop()

                try:
                    loop.call_soon_threadsafe(stop)
                except RuntimeError:
                    pass
        thread = self._thread
        if self._own and thread is not None:
            thread.join(timeout + 1.0)
        return drained


class AsyncResults:
    """A lookup's async iterator, as the registry keeps it in ``Lookup.results``.

    ``close()`` is what ending the lookup calls (through ``close_taken``):
    it schedules ``aclose()`` on the loop and returns at once. The owner of
    a NextEx reads ``it`` only while the call is in flight.
    """

    __slots__ = ("it", "runner", "timeout")

    def __init__(self, it: AsyncIterator[QuerySet], runner: AsyncRunner, timeout: float) -> None:
        self.it = it
        self.runner = runner
        self.timeout = timeout

    def close(self) -> None:
        aclose = getattr(self.it, "aclose", None)
        if aclose is None:
            return
        runner = self.runner

        def start() -> None:
            task = runner.spawn(guarded(aclose))
            timer = asyncio.get_running_loop().call_later(self.timeout, task.cancel)

            def done(t: asyncio.Task[Any]) -> None:
                timer.cancel()
                if t.cancelled():
                    log.error(
                        "%s: closing an async lookup took longer than %g s; cancelled",
                        runner.name,
                        self.timeout,
                    )
                elif t.exception() is not None:
                    log.error(
                        "%s: closing an async lookup raised",
                        runner.name,
                        exc_info=unwrap(t.exception()),  # type: ignore[arg-type]
                    )

            task.add_done_callback(done)

        if runner.on_loop_thread():
            start()
        elif not runner.schedule(start):
            log.warning(
                "%s: an async lookup ended after its event loop closed; its finally did not run",
                runner.name,
            )


class _Step:
    """What a NextEx step and a SetServiceEx step share: a task on the loop,
    its timeout timer, and cancellation from any thread. :meth:`_launch`
    and the done callback run on the loop's thread."""

    __slots__ = ("cancel_requested", "runner", "task", "timed_out", "timeout", "timer")

    def __init__(self, runner: AsyncRunner, timeout: float) -> None:
        self.runner = runner
        self.timeout = timeout
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.cancel_requested = False

    def _launch(
        self, make: Callable[[], Awaitable[Any]], done: Callable[[asyncio.Task[Any]], None]
    ) -> None:
        """The task for ``make`` (raises if it cannot be made): cancelled at
        once if an end came first, else timed; ``done`` runs at its end."""
        task = self.runner.spawn(guarded(make))
        self.task = task
        if self.cancel_requested:  # an end between the start's check and the task
            task.cancel()
        else:
            self.timer = task.get_loop().call_later(self.timeout, self._time_out)
        task.add_done_callback(done)

    def cancel(self) -> None:
        """Cancel the step's task (any thread; the task's end completes the
        call). Runs on the loop after the start, or the start sees the flag."""
        self.cancel_requested = True
        self.runner.call_soon(self._cancel_now)

    def _cancel_now(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def _time_out(self) -> None:
        self.timed_out = True
        if self.task is not None:
            self.task.cancel()

    def _ended(self, task: asyncio.Task[Any], what: str) -> BaseException | None:
        """How the task ended, as the exception to report (None: it returned;
        a timeout or a cancellation counted and made a WinsockError)."""
        if self.timer is not None:
            self.timer.cancel()
        if task.cancelled():
            if self.timed_out:
                self.runner.bump("timed_out")
                return WinsockError(
                    _TIMED_OUT, f"{what} took longer than async_timeout ({self.timeout:g} s)"
                )
            self.runner.bump("cancelled")
            return WinsockError(_CANCELLED, f"{what} was cancelled")
        exc = task.exception()
        return None if exc is None else unwrap(exc)


class NextStep(_Step):
    """One NextEx of an async lookup, from its hand-over to its completion.

    Made by the slot that claimed the call; from :meth:`AsyncRunner.admit`
    on, the step owns the call. :meth:`start` and :meth:`_done` run on the
    loop's thread; :meth:`cancel` on any. ``finish(failure)`` is the
    provider's owner code (``Provider._next_step`` with the pull done): it
    completes the call exactly once, under ``lookup.lock``.
    """

    __slots__ = ("finish", "it", "lookup")

    def __init__(
        self,
        runner: AsyncRunner,
        lookup: Lookup,
        it: AsyncIterator[QuerySet],
        finish: Callable[[BaseException | None], None],
        timeout: float,
    ) -> None:
        super().__init__(runner, timeout)
        self.lookup = lookup
        self.it = it
        self.finish = finish

    def start(self) -> None:
        lookup = self.lookup
        # Read ended and set the canceller under the lookup's lock: an end
        # either happened before (seen here: no task at all) or comes after
        # and finds this step to cancel.
        with lookup.lock:
            ended = lookup.ended
            if not ended:
                lookup.canceller = self
        if ended:
            self.runner.call_done()
            self.finish(None)  # the owner code sees the end: WSA_E_CANCELLED
            return
        try:
            self._launch(self.it.__anext__, self._done)
        except BaseException as exc:
            lookup.canceller = None
            self.runner.call_done()
            self.finish(exc)

    def _done(self, task: asyncio.Task[Any]) -> None:
        lookup = self.lookup
        failure: BaseException | None
        try:
            failure = self._ended(task, "the lookup's step")
            if failure is None:
                result = task.result()
                if not isinstance(result, QuerySet):
                    raise TypeError(f"lookup() yielded {type(result).__name__}, not QuerySet")
                lookup.pulled = result  # the owner's, while in flight
            elif isinstance(failure, StopAsyncIteration):
                failure = None
                lookup.results = None  # exhausted: WSA_E_NO_MORE
        except BaseException as exc:
            failure = exc
        lookup.canceller = None
        self.runner.call_done()
        self.finish(failure)


class ServiceStep(_Step):
    """One async SetServiceEx, from its hand-over to its completion (the
    same rules as :class:`NextStep`; the session's end cancels it)."""

    __slots__ = ("complete", "make", "registry", "session")

    def __init__(
        self,
        runner: AsyncRunner,
        registry: Registry,
        session: Session,
        make: Callable[[], Awaitable[Any]],
        complete: Callable[[int], None],
        timeout: float,
    ) -> None:
        super().__init__(runner, timeout)
        self.registry = registry
        self.session = session
        self.make = make
        self.complete = complete

    def start(self) -> None:
        if not self.registry.track_call(self.session, self):  # the session has ended
            self.runner.call_done()
            self._complete(_CANCELLED)
            return
        try:
            self._launch(self.make, self._done)
        except BaseException as exc:
            self.registry.untrack_call(self.session, self)
            self.runner.call_done()
            self._complete(report_exception("NSPv2SetServiceEx", unwrap(exc)))

    def _complete(self, code: int) -> None:
        try:
            self.complete(code)
        except BaseException as exc:
            log_failure("%s: completing SetServiceEx", self.runner.name, exc)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.registry.untrack_call(self.session, self)
        try:
            failure = self._ended(task, "set_service")
            if failure is None:
                code = NO_ERROR
            elif isinstance(failure, WinsockError) and failure.code == _CANCELLED:
                code = _CANCELLED  # its session ended: not a failure to log
            else:
                code = report_exception("NSPv2SetServiceEx", failure)
        except BaseException as exc:
            code = report_exception("NSPv2SetServiceEx", exc)
        self.runner.call_done()
        self._complete(code)
