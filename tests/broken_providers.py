"""Deliberately broken providers: ``nspv2 check`` must name each fault."""

from __future__ import annotations

import ctypes
import itertools
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from nspv2 import LUP, NO_ERROR, NS, CsAddr, Provider, QuerySet, Session, SocketAddress, WSAError
from nspv2.provider.base import _EFAULT  # the scaffold's internals, overridden to break them
from nspv2.provider.registry import Lookup


def result(name: str) -> QuerySet:
    return QuerySet(
        name,
        comment="MISTATUS_ONLINE",
        cs_addrs=(CsAddr(None, SocketAddress.parse("192.0.2.1", 5060)),),
        blob=bytes(8),
    )


class Good(Provider):
    provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
    check_queries = ("one@example.com", "*@example.com")

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        if name.startswith("*"):
            yield result("one@example.com")
            yield result("two@example.com")
        else:
            yield result(name)


class RaisesInLookup(Good):
    """A bug in lookup: the guard catches a RuntimeError."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        raise RuntimeError("oops")


class SetServiceSucceedsWithoutImplementation(Good):
    """No set_service, yet its SetServiceEx slot claims success."""

    def routine(self, channel: Any = None) -> Any:
        super().routine(channel)
        if not getattr(self, "_patched", False):
            self._patched = True
            from nspv2.provider.routine import Routine

            def fake(h_async: Any, *_a: Any) -> None:
                self._routine_obj.channel_now().complete(h_async, NO_ERROR)  # type: ignore[union-attr]

            self._routine_obj = Routine(
                startup=self._slot_startup,
                cleanup=self._slot_cleanup,
                begin=self._slot_begin,
                next_ex=self._slot_next_ex,
                end=self._slot_end,
                set_service_ex=fake,
                client_session_rundown=self._slot_rundown,
                pointers="int",
                on_close=self._on_close,
            )
        return self._routine_obj


class WrongRequiredSize(Good):
    """Reports 8 bytes too few on WSAEFAULT."""

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        code = super()._produce(lookup, flags, p_length, p_results)
        if code == _EFAULT and p_length:
            length = ctypes.c_uint32.from_address(p_length)
            length.value -= 8
        return code


class Overruns(Good):
    """Writes 16 bytes past the caller's buffer."""

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        code = super()._produce(lookup, flags, p_length, p_results)
        if code == NO_ERROR and p_length and p_results:
            size = ctypes.c_uint32.from_address(p_length).value
            ctypes.memset(p_results + size, 0x41, 16)
        return code


class IgnoresFlushPrevious(Good):
    """Returns the held result again despite LUP_FLUSHPREVIOUS."""

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        return super()._produce(lookup, flags & ~int(LUP.LUP_FLUSHPREVIOUS), p_length, p_results)


class LosesTheHeldResult(Good):
    """Drops a result that did not fit (it never comes back)."""

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        code = super()._produce(lookup, flags, p_length, p_results)
        lookup.held = None
        return code


class NeverEnds(Good):
    """An endless lookup: never WSA_E_NO_MORE."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        for i in itertools.count():
            yield result(f"user{i}@example.com")


class EndAcceptsAnything(Good):
    """End of an ended handle succeeds."""

    def _slot_end(self, h_lookup: int | None) -> int:
        self.registry.end_lookup(h_lookup)
        return NO_ERROR


class LeaksSessions(Good):
    """Its rundown forgets to end the session."""

    def _slot_rundown(self, _provider_id: int | None, token: int | None) -> None:
        return None


class CleanupFails(Good):
    """Its cleanup hook raises."""

    def cleanup(self, session: Session) -> None:
        raise ValueError("cleanup failed")


class NotFoundEverywhere(Good):
    """Finds nothing at all."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        from nspv2 import WinsockError

        raise WinsockError(WSAError.WSASERVICE_NOT_FOUND)


class ExplodingConstructor(Good):
    def __init__(self) -> None:
        raise RuntimeError("cannot start")


class StartupUnreachable(Good):
    """Its table has no NSPv2Startup (the WSAEOPNOTSUPP stub): no session ever reaches it."""

    def _slot_callables(self) -> dict[str, Any]:
        slots = super()._slot_callables()
        del slots["startup"]
        return slots


class GoodDns(Good):
    """Good, serving NS_DNS instead of NS_EMAIL."""

    provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-0000000000d5")
    namespace = NS.NS_DNS


class GoodWithoutQueries(Good):
    """Good, with nothing to look up (no check_queries)."""

    check_queries = ()


# Providers that take the process down or never return: ``nspv2 check`` runs
# the provider in a child process and must report each as a failed rule.
# Each notes the pid of the process it runs in (and of any process it forks)
# in the file named by NSPV2_TEST_PIDS, so a test can prove none is left.


def note_pid(pid: int | None = None) -> None:
    path = os.environ.get("NSPV2_TEST_PIDS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid() if pid is None else pid}\n")


class SleepsInLookup(Good):
    """Blocks forever in its first lookup (time.sleep releases the GIL)."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        note_pid()
        time.sleep(3600)
        yield result("late@example.com")


class SpinsInLookup(Good):
    """Spins forever in its first lookup, holding the GIL."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        note_pid()
        while True:
            pass
        yield result("never@example.com")  # pragma: no cover


class ExitsInLookup(Good):
    """Calls os._exit(3) in its first lookup."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        note_pid()
        os._exit(3)
        yield result("never@example.com")  # pragma: no cover


class CrashesInLookup(Good):
    """Reads address 0 in its first lookup: SIGSEGV."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        note_pid()
        ctypes.string_at(0)
        yield result("never@example.com")  # pragma: no cover


class ForksInLookup(Good):
    """Forks in every lookup; both processes go on as if nothing happened."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        note_pid()
        child = os.fork()
        if child:
            note_pid(child)
        yield from super().lookup(session, restrictions, flags)
