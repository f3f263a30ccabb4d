"""The conformance rules added with native providers, for Python and C alike.

Each rule is a function ``rule_xxx(t: CheckTarget, at: Step) -> Rule`` with
its name in a constant; it sees the provider only through
:class:`~nspv2.tools.check_target.CheckTarget` and calls ``at(NAME, what)``
before each part, so that the parent process can say where a hang or a
crash struck (``nspv2 check`` runs each rule in its own child process).
:mod:`nspv2.tools.check_registry` lists them in order.

The names looked up and registered are the target's queries and
registrations; rules that need more names generate them in the domain of
the first query (``check-0001@example.com``...).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from ..provider.channel import InProcessChannel
from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.nsemail import InstallationBlob, installation_blob_problems
from ..sdk.winsock2 import (
    BLOB,
    NO_ERROR,
    NS,
    SOCKET_ERROR,
    WSAESETSERVICEOP,
    WSAQUERYSET2W,
    WSAError,
    code_name,
)
from ..sdk.wintypes import wstr
from ..sdk.ws2def import CSADDR_INFO
from .check import ENDED_HANDLE, MALFORMED, NOTHING_TO_LOOK_UP, Rule, Step

if TYPE_CHECKING:
    from ..host.host import Host
    from ..testing.harness import SlotCall, SlotHarness
    from .check_target import CheckTarget

__all__ = [
    "BOUNDS",
    "CAPACITY_NAMES",
    "COMPLETED_ONCE",
    "CONTEXT",
    "HANDLE_AFTER_END",
    "INSTALL_BLOB",
    "LAST_ERROR",
    "NEW_RULES",
    "RACING",
    "RESTRICTIONS_UNTOUCHED",
    "ROUND_TRIP",
    "rule_bounds",
    "rule_completed_once",
    "rule_context",
    "rule_handle_after_end",
    "rule_install_blob",
    "rule_last_error",
    "rule_racing",
    "rule_restrictions_untouched",
    "rule_round_trip",
]

COMPLETED_ONCE = "every NextEx and SetServiceEx is completed exactly once"
LAST_ERROR = "SOCKET_ERROR always comes with a last error"
RESTRICTIONS_UNTOUCHED = MALFORMED  # the stricter form of today's rule, under its name
HANDLE_AFTER_END = ENDED_HANDLE
CONTEXT = "lookups with lpszContext NULL and non-NULL run to WSA_E_NO_MORE"
ROUND_TRIP = "registered names are found again, 2000 of them in one session"
RACING = "registration and lookup racing on several threads"
BOUNDS = "results never extend past *lpdwBufferLength, at every alignment and size"
INSTALL_BLOB = "the NS_EMAIL installation blob follows nsemail.h"

_E = WSAError
_REGISTER = WSAESETSERVICEOP.RNRSERVICE_REGISTER
_DELETE = WSAESETSERVICEOP.RNRSERVICE_DELETE
#: How many names the capacity part registers in one session.
CAPACITY_NAMES = 2000
#: Threads x names of the racing rule.
RACE_THREADS = 4
RACE_NAMES = 50
#: How long to wait after a completion for a second one.
GRACE = 0.05
#: The longest a harness call may stay uncompleted before it counts as never.
HARNESS_TIMEOUT = 2.0
#: Codes End / NextEx may give for a handle already ended.
_ENDED_CODES = (_E.WSA_INVALID_HANDLE, _E.WSA_E_CANCELLED, _E.WSAECANCELLED)
_MAX_STEPS = 200
_NO_SET_SERVICE = "does not implement NSPv2SetServiceEx (nothing can be registered)"


# -- helpers ---------------------------------------------------------------------------


@contextmanager
def _harness(t: CheckTarget) -> Iterator[SlotHarness]:
    h = t.harness()
    h.timeout = min(h.timeout, HARNESS_TIMEOUT)
    try:
        yield h
    finally:
        h.close()


def _start(t: CheckTarget, h: SlotHarness, rule: Rule, at: Step) -> int | None:
    """NSPv2Startup through the harness, then t.registrations through
    NSPv2SetServiceEx (if implemented); the session argument (None: failed, noted)."""
    at(rule.name, "NSPv2Startup through its C function pointer")
    started = h.startup()
    if not started.ok:
        rule.fail(f"NSPv2Startup -> {code_name(started.code)}")
        return None
    if t.implements("NSPv2SetServiceEx"):
        for name in t.registrations:
            at(rule.name, f"registering {name} through NSPv2SetServiceEx")
            call = h.set_service(started.value, _registration(t, name), _REGISTER)
            if not call.ok:
                rule.fail(f"registering {name} -> {code_name(call.code)}")
    return started.value


def _domain(t: CheckTarget) -> str:
    for name in t.queries:
        _local, sep, domain = name.rpartition("@")
        if sep and domain and "*" not in domain:
            return domain
    return "example.com"


def generated_names(t: CheckTarget, count: int, prefix: str = "check") -> list[str]:
    """``check-0001@example.com``...: ``count`` names in the first query's domain."""
    domain = _domain(t)
    return [f"{prefix}-{i:04d}@{domain}" for i in range(1, count + 1)]


def _registration(t: CheckTarget, name: str, *, with_provider: bool = False) -> QuerySet:
    return QuerySet(
        name,
        namespace=t.namespace,
        provider_id=t.provider_id if with_provider else None,
        cs_addrs=(CsAddr(None, SocketAddress.parse("192.0.2.10", 5060)),),
    )


def _host_query(t: CheckTarget, name: str) -> QuerySet:
    return QuerySet(name, provider_id=t.provider_id, namespace=t.namespace)


def _stat(host: Host, *keys: str) -> int:
    stats = host.stats()
    return sum(int(stats.get(k, 0)) for k in keys)


def _refusals(t: CheckTarget, h: SlotHarness) -> int:
    """Completions refused so far: a second completion of a harness call is
    refused by the harness's own channel (Python tables) or by the host,
    which counts it in ``double_completions`` (native tables)."""
    own = h.channel.refused if isinstance(h.channel, InProcessChannel) else 0
    return own + _stat(t.host(), "double_completions")


def _more(values: list[str], limit: int = 3) -> str:
    shown = "; ".join(values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


# -- every NextEx and SetServiceEx completed exactly once --------------------------------


def rule_completed_once(t: CheckTarget, at: Step) -> Rule:
    """Each async call, through the harness and in a host workload: one completion."""
    rule = Rule(COMPLETED_ONCE)
    calls = 0
    with _harness(t) as h:
        at(COMPLETED_ONCE, "NSPv2Startup through its C function pointer")
        started = h.startup()
        token = started.value if started.ok else None

        def counted(what: str, call: Callable[[], SlotCall]) -> SlotCall | None:
            nonlocal calls
            at(COMPLETED_ONCE, what)
            before = _refusals(t, h)
            try:
                result = call()
            except TimeoutError:
                rule.fail(f"{what}: never completed (waited {h.timeout:g} s)")
                return None
            calls += 1
            time.sleep(GRACE)
            if _refusals(t, h) > before:
                rule.fail(f"{what}: completed twice")
            return result

        if t.implements("NSPv2SetServiceEx"):
            names = t.registrations or generated_names(t, 1)
            for i, name in enumerate(names, 1):
                counted(
                    f"SetServiceEx #{i} (RNRSERVICE_REGISTER {name})",
                    partial(h.set_service, token, _registration(t, name), _REGISTER),
                )
            absent = generated_names(t, 1, "check-absent")[0]
            counted(
                f"SetServiceEx #{len(names) + 1} (RNRSERVICE_DELETE {absent}, never registered)",
                partial(h.set_service, token, _registration(t, absent), _DELETE),
            )
        for name in t.queries:
            begun = h.begin(token, QuerySet(name, namespace=t.namespace))
            if not begun.ok:
                rule.note(f"{name}: Begin -> {code_name(begun.code)} (no NextEx to count)")
                continue
            handle = begun.value
            n = 0
            size = 0  # the first call: WSAEFAULT, completed too
            while n < _MAX_STEPS:
                n += 1
                step = counted(
                    f"NextEx #{n} of {name}",
                    partial(h.next, handle, 0, size),
                )
                if step is None or step.code not in (NO_ERROR, _E.WSAEFAULT):
                    break
                size = 65536
            h.end(handle)
            counted(f"NextEx #{n + 1} of {name} (after End)", partial(h.next, handle, 0, 4096))
        if token is not None:
            h.cleanup(token)
    # the same through the host's client calls
    at(COMPLETED_ONCE, "a workload through the host's client calls")
    host = t.host()
    before_double = _stat(host, "double_completions")
    before_timeouts = _stat(host, "timed_out_held", "timed_out_released", "late_completions")
    _host_workload(t)
    double = _stat(host, "double_completions") - before_double
    timeouts = (
        _stat(host, "timed_out_held", "timed_out_released", "late_completions") - before_timeouts
    )
    if double:
        rule.fail(f"host workload: {double} call(s) completed twice")
    if timeouts:
        rule.fail(f"host workload: {timeouts} call(s) not completed in time")
    if rule.passed:
        rule.note(f"{calls} harness call(s) completed once each; host workload: none twice or late")
    return rule


def _host_workload(t: CheckTarget) -> None:
    """Registrations and lookups (small buffers first) through the host."""
    host = t.host()
    with host.open_session() as owner, host.open_session() as client:
        if t.implements("NSPv2SetServiceEx"):
            for name in t.registrations:
                try:
                    owner.set_service(_registration(t, name, with_provider=True), _REGISTER)
                except WinsockError:
                    pass
        for name in [*t.queries, generated_names(t, 1, "check-absent")[0]]:
            try:
                _bounded_lookup(host, client, _host_query(t, name))
            except WinsockError:
                pass


def _bounded_lookup(host: Host, client: Any, query: QuerySet) -> list[QuerySet]:
    """Begin, Next with a 16-byte buffer first (growing on WSAEFAULT), End: the
    results, at most WORKLOAD_RESULTS of them, so that a provider that never
    says WSA_E_NO_MORE cannot hold a rule forever (that is the end rule's
    finding, not the caller's). Another failure raises WinsockError, as
    Host.lookup does."""
    handle = host.lookup_begin(client, query)
    found: list[QuerySet] = []
    try:
        size = 16
        for _ in range(2 * WORKLOAD_RESULTS):
            step = host.lookup_next(handle, 0, size)
            if step.code == WSAError.WSAEFAULT and step.buffer_length > size:
                size = step.buffer_length
            elif step.code == NO_ERROR and step.result is not None:
                found.append(step.result)
                if len(found) >= WORKLOAD_RESULTS:
                    break
            elif step.code == WSAError.WSA_E_NO_MORE:
                break
            else:
                raise WinsockError(step.code, "WSALookupServiceNextW")
    finally:
        host.lookup_end(handle)
    return found


# -- SOCKET_ERROR always comes with a last error -----------------------------------------


def rule_last_error(t: CheckTarget, at: Step) -> Rule:
    """Every INT slot call made here that returns SOCKET_ERROR has set a last error."""
    rule = Rule(LAST_ERROR)
    failures = 0
    made = 0

    def check(what: str, call: SlotCall) -> SlotCall:
        nonlocal failures, made
        made += 1
        if call.returned == SOCKET_ERROR:
            failures += 1
            if call.last_error == NO_ERROR:
                rule.fail(f"{what}: SOCKET_ERROR with no last error")
        return call

    with _harness(t) as h:
        at(LAST_ERROR, "NSPv2Startup")
        started = check("NSPv2Startup", h.startup())
        token = started.value if started.ok else None
        at(LAST_ERROR, "Begin with NULL restrictions")
        check("NSPv2LookupServiceBegin(NULL)", h.begin(token, None))
        absent = generated_names(t, 1, "check-absent")[0]
        for name in [*t.queries, absent]:
            at(LAST_ERROR, f"{name}: Begin, End, End again")
            begun = check(
                f"NSPv2LookupServiceBegin({name})",
                h.begin(token, QuerySet(name, namespace=t.namespace)),
            )
            if begun.ok:
                check(f"NSPv2LookupServiceEnd({name})", h.end(begun.value))
                check(f"NSPv2LookupServiceEnd({name}, ended)", h.end(begun.value))
        at(LAST_ERROR, "NSPv2Cleanup twice")
        check("NSPv2Cleanup", h.cleanup(token))
        check("NSPv2Cleanup (again)", h.cleanup(token))
    at(LAST_ERROR, "a workload through the host's client calls")
    host = t.host()
    before = _stat(host, "missing_last_error")
    _host_workload(t)
    missing = _stat(host, "missing_last_error") - before
    if missing:
        rule.fail(f"host workload: {missing} SOCKET_ERROR(s) with no last error")
    if rule.passed:
        rule.note(
            f"{made} INT slot call(s), {failures} SOCKET_ERROR, each with a last error; "
            "host workload: none missing"
        )
    return rule


# -- Begin rejects malformed restrictions without touching them --------------------------


class _Image:
    """A WSAQUERYSET2W and what it points to, all in ctypes buffers."""

    def __init__(self, t: CheckTarget, name: str) -> None:
        self.qs = WSAQUERYSET2W()
        self.qs.dwSize = ctypes.sizeof(WSAQUERYSET2W)
        self.qs.dwNameSpace = t.namespace
        self.name = wstr(name)
        self.qs.lpszServiceInstanceName = ctypes.cast(
            self.name, type(self.qs.lpszServiceInstanceName)
        )
        self.regions: list[tuple[int, int]] = [
            (ctypes.addressof(self.qs), ctypes.sizeof(self.qs)),
            (ctypes.addressof(self.name), ctypes.sizeof(self.name)),
        ]
        self.keep: list[object] = []

    def add(
        self, buffer: ctypes.Array[ctypes.c_char] | ctypes.Structure | ctypes.Array[CSADDR_INFO]
    ) -> int:
        self.keep.append(buffer)
        self.regions.append((ctypes.addressof(buffer), ctypes.sizeof(buffer)))
        return ctypes.addressof(buffer)

    def snapshot(self) -> list[bytes]:
        return [ctypes.string_at(a, n) for a, n in self.regions]


def _malformed(t: CheckTarget, name: str) -> list[tuple[str, _Image | None]]:
    out: list[tuple[str, _Image | None]] = [("NULL", None)]
    small = _Image(t, name)
    small.qs.dwSize = 4
    out.append(("dwSize 4", small))
    short = _Image(t, name)
    short.qs.dwSize = ctypes.sizeof(WSAQUERYSET2W) - 8
    out.append((f"dwSize {short.qs.dwSize} (8 short)", short))
    cs = _Image(t, name)
    cs.qs.dwNumberOfCsAddrs = 2
    out.append(("dwNumberOfCsAddrs 2, lpcsaBuffer NULL", cs))
    protocols = _Image(t, name)
    protocols.qs.dwNumberOfProtocols = 2
    out.append(("dwNumberOfProtocols 2, lpafpProtocols NULL", protocols))
    negative = _Image(t, name)
    sockaddr = ctypes.create_string_buffer(bytes([2, 0, 0x13, 0xC4, 192, 0, 2, 1]) + bytes(8))
    array = (CSADDR_INFO * 1)()
    array[0].LocalAddr.lpSockaddr = ctypes.cast(
        negative.add(sockaddr), type(array[0].LocalAddr.lpSockaddr)
    )
    array[0].LocalAddr.iSockaddrLength = -16
    array[0].RemoteAddr.lpSockaddr = array[0].LocalAddr.lpSockaddr
    array[0].RemoteAddr.iSockaddrLength = 16
    negative.qs.dwNumberOfCsAddrs = 1
    negative.qs.lpcsaBuffer = ctypes.cast(negative.add(array), type(negative.qs.lpcsaBuffer))
    out.append(("a CSADDR_INFO with iSockaddrLength -16", negative))
    return out


def rule_restrictions_untouched(t: CheckTarget, at: Step) -> Rule:
    """Begin on malformed restrictions: WSAEINVAL, and their bytes unchanged."""
    rule = Rule(RESTRICTIONS_UNTOUCHED)
    name = (t.queries or generated_names(t, 1))[0]
    with _harness(t) as h:
        token = _start(t, h, rule, at)
        for label, image in _malformed(t, name):
            at(RESTRICTIONS_UNTOUCHED, f"Begin with {label}")
            before = image.snapshot() if image else []
            call = h.begin(token, None if image is None else ctypes.addressof(image.qs))
            text = f"Begin({label}) -> {code_name(call.code)}"
            (rule.note if call.code == _E.WSAEINVAL else rule.fail)(text)
            if call.ok and call.value:
                h.end(call.value)
            if image is not None and image.snapshot() != before:
                rule.fail(f"Begin({label}) changed the query set or what it points to")
        if token is not None:
            h.cleanup(token)
    return rule


# -- End of an ended handle, NextEx after End -------------------------------------------


def rule_handle_after_end(t: CheckTarget, at: Step) -> Rule:
    """End twice and NextEx after End: WSA_INVALID_HANDLE (or a cancellation code)."""
    rule = Rule(HANDLE_AFTER_END)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    allowed = " or ".join(code_name(c) for c in _ENDED_CODES)
    with _harness(t) as h:
        token = _start(t, h, rule, at)
        for name in t.queries:
            at(HANDLE_AFTER_END, f"{name}: Begin, NextEx, End")
            begun = h.begin(token, QuerySet(name, namespace=t.namespace))
            if not begun.ok:
                rule.fail(f"{name}: Begin -> {code_name(begun.code)}")
                continue
            h.next(begun.value, 0, 0)  # a result held when End comes
            first = h.end(begun.value)
            if not first.ok:
                rule.fail(f"{name}: End -> {code_name(first.code)}")
            at(HANDLE_AFTER_END, f"{name}: End of the ended handle")
            again = h.end(begun.value)
            at(HANDLE_AFTER_END, f"{name}: NextEx on the ended handle")
            try:
                stale = h.next(begun.value, 0, 4096).code
            except TimeoutError:
                rule.fail(f"{name}: NextEx on the ended handle was never completed")
                continue
            ok = again.code in _ENDED_CODES and stale in _ENDED_CODES
            (rule.note if ok else rule.fail)(
                f"{name}: End again -> {code_name(again.code)}, NextEx after End -> "
                f"{code_name(stale)}" + ("" if ok else f" (expected {allowed})")
            )
        if token is not None:
            h.cleanup(token)
    return rule


# -- lpszContext NULL and non-NULL -------------------------------------------------------


def _to_the_end(h: SlotHarness, token: int | None, query: QuerySet) -> tuple[int, int]:
    """Begin, NextEx (growing on WSAEFAULT) until not NO_ERROR, End: (code, results)."""
    begun = h.begin(token, query)
    if not begun.ok:
        return begun.code, 0
    results = 0
    size = 1024
    try:
        for _ in range(_MAX_STEPS * 10):
            step = h.next(begun.value, 0, size)
            if step.code == _E.WSAEFAULT and step.buffer_length > size:
                size = step.buffer_length
                continue
            if step.code != NO_ERROR:
                return step.code, results
            results += 1
        return NO_ERROR, results
    finally:
        h.end(begun.value)


def rule_context(t: CheckTarget, at: Step) -> Rule:
    """Each query with lpszContext NULL, then with a context: both end in WSA_E_NO_MORE."""
    rule = Rule(CONTEXT)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    with _harness(t) as h:
        token = _start(t, h, rule, at)
        for name in t.queries:
            for context in (None, "check-context"):
                label = "NULL" if context is None else repr(context)
                at(CONTEXT, f"{name}: lpszContext {label}")
                query = QuerySet(name, namespace=t.namespace, context=context)
                code, n = _to_the_end(h, token, query)
                text = f"{name}, lpszContext {label}: {n} result(s), then {code_name(code)}"
                (rule.note if code == _E.WSA_E_NO_MORE else rule.fail)(text)
        if token is not None:
            h.cleanup(token)
    return rule


# -- registration then lookup, and capacity ----------------------------------------------


def _finds(host: Host, client: object, t: CheckTarget, name: str) -> str | None:
    """None if a lookup of ``name`` returns it, else why not."""
    try:
        found = _bounded_lookup(host, client, _host_query(t, name))
    except WinsockError as exc:
        return f"{name}: lookup -> {code_name(exc.code)}"
    names = [(r.service_instance_name or "").lower() for r in found]
    if name.lower() not in names:
        return f"{name}: not among the {len(found)} result(s)"
    return None


def rule_round_trip(t: CheckTarget, at: Step) -> Rule:
    """Register the target's names and 2000 more in one session, then find each."""
    rule = Rule(ROUND_TRIP)
    if not t.implements("NSPv2SetServiceEx"):
        rule.skip(_NO_SET_SERVICE)
        return rule
    host = t.host()
    names = list(dict.fromkeys([*t.registrations, *generated_names(t, CAPACITY_NAMES)]))
    with host.open_session() as owner, host.open_session() as client:
        start = time.monotonic()
        refused: list[str] = []
        for i, name in enumerate(names):
            if i % 250 == 0:
                at(ROUND_TRIP, f"registering {name} ({i + 1} of {len(names)})")
            try:
                owner.set_service(_registration(t, name, with_provider=True), _REGISTER)
            except WinsockError as exc:
                refused.append(f"registering {name} -> {code_name(exc.code)}")
        registered = time.monotonic() - start
        missing: list[str] = []
        for i, name in enumerate(names):
            if i % 250 == 0:
                at(ROUND_TRIP, f"looking up {name} ({i + 1} of {len(names)})")
            why = _finds(host, client, t, name)
            if why:
                missing.append(why)
        looked = time.monotonic() - start - registered
    if refused:
        rule.fail(f"{len(refused)} of {len(names)} registrations failed: {_more(refused)}")
    if missing:
        rule.fail(f"{len(missing)} of {len(names)} names not found again: {_more(missing)}")
    if rule.passed:
        rule.note(
            f"{len(names)} names registered in one session ({registered:.2f} s) "
            f"and each found again ({looked:.2f} s)"
        )
    return rule


# -- registration and lookup racing on several threads -----------------------------------


def rule_racing(t: CheckTarget, at: Step) -> Rule:
    """4 threads, each in its own session: register, look up, delete every other name."""
    rule = Rule(RACING)
    if not t.implements("NSPv2SetServiceEx"):
        rule.skip(_NO_SET_SERVICE)
        return rule
    host = t.host()
    before = host.stats()
    problems: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        names = generated_names(t, RACE_NAMES, f"race{k}")
        own: list[str] = []
        try:
            with host.open_session() as mine, host.open_session() as client:
                kept: list[str] = []
                for i, name in enumerate(names):
                    try:
                        mine.set_service(_registration(t, name, with_provider=True), _REGISTER)
                    except WinsockError as exc:
                        own.append(f"registering {name} -> {code_name(exc.code)}")
                        continue
                    why = _finds(host, client, t, name)
                    if why:
                        own.append(why)
                    if i % 2:
                        try:
                            mine.set_service(_registration(t, name, with_provider=True), _DELETE)
                        except WinsockError as exc:
                            own.append(f"deleting {name} -> {code_name(exc.code)}")
                    else:
                        kept.append(name)
                for name in kept:  # registered and not removed: still there
                    why = _finds(host, client, t, name)
                    if why:
                        own.append(f"at the end, {why}")
        except Exception as exc:  # reported as the rule's failure
            own.append(f"thread {k}: {type(exc).__name__}: {exc}")
        with lock:
            problems.extend(own)

    at(RACING, f"{RACE_THREADS} threads x {RACE_NAMES} names: register, look up, delete")
    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(RACE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - start
    at(RACING, "what is left open")
    after = host.stats()
    for key in ("sessions_open", "lookups_open", "async_pending"):
        if after.get(key, 0) > before.get(key, 0):
            problems.append(f"the host has {after[key] - before[key]} more {key} after")
    if t.python is not None:
        counts = t.python.registry.open_counts()
        if counts.get("lookups", 0):
            problems.append(f"the provider still has {counts['lookups']} lookup(s) open")
    if problems:
        problems.sort(key=lambda p: "lookup" not in p and "not among" not in p)  # lookups first
        rule.fail(f"{len(problems)} problem(s): {_more(problems)}")
    else:
        rule.note(
            f"{RACE_THREADS} threads x {RACE_NAMES} names in {took:.2f} s: every name "
            "registered and not removed found; nothing left open"
        )
    return rule


# -- results within *lpdwBufferLength at every alignment and size -------------------------


def _address(pointer: object) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0  # type: ignore[arg-type]


def _outside(raw: bytes, start: int) -> list[str]:
    """What of the WSAQUERYSET2W packed in ``raw`` (a buffer at ``start``)
    points outside it: read from the bytes, so it works at any alignment."""
    end = start + len(raw)
    if len(raw) < ctypes.sizeof(WSAQUERYSET2W):
        return [f"the result header needs {ctypes.sizeof(WSAQUERYSET2W)} bytes"]
    qs = WSAQUERYSET2W.from_buffer_copy(raw)
    out: list[str] = []

    def inside(field: str, address: int, length: int) -> bool:
        if address and not start <= address <= address + length <= end:
            out.append(f"{field} ({length} bytes at {address:#x}) outside the buffer")
            return False
        return bool(address)

    def string(field: str, address: int) -> None:
        if inside(field, address, 2):
            text = raw[address - start :]
            units = [text[i : i + 2] for i in range(0, len(text) - 1, 2)]
            if b"\0\0" not in units:
                out.append(f"{field}: no terminator inside the buffer")

    for field in ("lpszServiceInstanceName", "lpszComment", "lpszContext", "lpszQueryString"):
        string(field, _address(getattr(qs, field)))
    inside("lpVersion", _address(qs.lpVersion), 8)
    inside("lpNSProviderId", _address(qs.lpNSProviderId), 16)
    inside("lpafpProtocols", _address(qs.lpafpProtocols), 8 * qs.dwNumberOfProtocols)
    array = _address(qs.lpcsaBuffer)
    one = ctypes.sizeof(CSADDR_INFO)
    if inside("lpcsaBuffer", array, one * qs.dwNumberOfCsAddrs):
        for i in range(min(qs.dwNumberOfCsAddrs, 4096)):
            at = array - start + i * one
            item = CSADDR_INFO.from_buffer_copy(raw[at : at + one])
            for side in ("LocalAddr", "RemoteAddr"):
                sa = getattr(item, side)
                inside(
                    f"lpcsaBuffer[{i}].{side}", _address(sa.lpSockaddr), max(sa.iSockaddrLength, 0)
                )
    blob = _address(qs.lpBlob)
    if inside("lpBlob", blob, ctypes.sizeof(BLOB)):
        at = blob - start
        data = BLOB.from_buffer_copy(raw[at : at + ctypes.sizeof(BLOB)])
        inside("lpBlob->pBlobData", _address(data.pBlobData), data.cbSize)
    return out


def rule_bounds(t: CheckTarget, at: Step) -> Rule:
    """NextEx into buffers at offsets 0..15 from a 16-byte boundary (alignment
    16, then 1..15) and of every size from 0 to the required one: nothing
    written past the buffer, every pointer of the result inside it."""
    rule = Rule(BOUNDS)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    with _harness(t) as h:
        token = _start(t, h, rule, at)
        for name in t.queries:
            query = QuerySet(name, namespace=t.namespace)
            at(BOUNDS, f"{name}: the required size")
            begun = h.begin(token, query)
            if not begun.ok:
                rule.fail(f"{name}: Begin -> {code_name(begun.code)}")
                continue
            first = h.next(begun.value, 0, 0)
            h.end(begun.value)
            if first.code != _E.WSAEFAULT:
                rule.fail(f"{name}: a 0-byte buffer -> {code_name(first.code)}, not WSAEFAULT")
                continue
            bad: list[str] = []
            reference: QuerySet | None = None
            needs: set[int] = set()
            refused: list[str] = []
            for offset in range(16):
                at(BOUNDS, f"{name}: buffers at offset {offset}")
                begun = h.begin(token, query)
                if not begun.ok:
                    bad.append(f"offset {offset}: Begin -> {code_name(begun.code)}")
                    continue
                try:
                    probe = h.next(begun.value, 0, 0, offset=offset)
                    need = probe.buffer_length
                    needs.add(need)
                    if probe.code != _E.WSAEFAULT:
                        bad.append(f"offset {offset}, 0 bytes: {code_name(probe.code)}")
                        continue
                    for size in range(need + 1):
                        step = h.next(begun.value, 0, size, offset=offset)
                        where = f"offset {offset}, {size} bytes"
                        if not step.guard_intact:
                            bad.append(f"{where}: written past the buffer")
                        if step.code == NO_ERROR:
                            outside = _outside(step.raw, step.buffer_address)
                            bad += [f"{where}: {o}" for o in outside]
                            if step.result is not None:
                                if reference is None:
                                    reference = step.result
                                elif step.result != reference:
                                    bad.append(f"{where}: a different result")
                            if size < need:
                                bad.append(f"{where}: NO_ERROR below the required {need}")
                            break
                        if step.code != _E.WSAEFAULT:
                            # refusing a buffer (a misaligned one, say) writes nothing
                            refused.append(f"offset {offset}: {code_name(step.code)}")
                            break
                    else:
                        bad.append(f"offset {offset}: still WSAEFAULT with {need} bytes")
                finally:
                    h.end(begun.value)
                if len(bad) > 20:
                    break
            if reference is None and not bad:
                bad.append(f"no buffer got a result ({_more(refused, 2)})")
            if bad:
                rule.fail(f"{name}: {len(bad)} problem(s): {_more(bad)}")
            else:
                sizes = "..".join(str(n) for n in sorted({min(needs), max(needs)}))
                rule.note(
                    f"{name}: 16 alignments x sizes 0..{sizes}: nothing past the buffer, "
                    "the result inside it"
                    + (f"; refused at the full size: {_more(refused, 2)}" if refused else "")
                )
        if token is not None:
            h.cleanup(token)
    return rule


# -- the NS_EMAIL installation blob ------------------------------------------------------


def rule_install_blob(t: CheckTarget, at: Step) -> Rule:
    """The blob the provider installed for NS_EMAIL, against nsemail.h's rules."""
    rule = Rule(INSTALL_BLOB)
    at(INSTALL_BLOB, "reading the installation blob")
    blob = t.blob
    if blob is None and t.python is not None:
        blob = type(t.python).install_blob
    if t.namespace != NS.NS_EMAIL:
        rule.skip(f"installed for namespace {t.namespace}, not NS_EMAIL ({int(NS.NS_EMAIL)})")
        return rule
    if blob is None:
        rule.skip("installs no blob")
        return rule
    problems = installation_blob_problems(blob)
    for problem in problems:
        rule.fail(problem)
    if not problems:
        parsed = InstallationBlob.parse(blob)
        domains = ", ".join(f"{d.name} (level {d.level})" for d in parsed.domains) or "none"
        rule.note(
            f"{len(blob)} bytes: version {parsed.version}, provider type "
            f"{parsed.provider_type}, wildcard {'yes' if parsed.wildcard else 'no'}, "
            f"domains: {domains}"
        )
    return rule


#: Results a workload lookup reads at most.
WORKLOAD_RESULTS = 100

#: The rules of this module, in the order they are meant to run. Two of them
#: carry the names of today's rules (MALFORMED, ENDED_HANDLE) and replace them:
#: the same checks, stricter (the query set untouched; NextEx held before End).
NEW_RULES: tuple[tuple[str, Callable[[CheckTarget, Step], Rule]], ...] = (
    (COMPLETED_ONCE, rule_completed_once),
    (LAST_ERROR, rule_last_error),
    (RESTRICTIONS_UNTOUCHED, rule_restrictions_untouched),
    (HANDLE_AFTER_END, rule_handle_after_end),
    (CONTEXT, rule_context),
    (ROUND_TRIP, rule_round_trip),
    (RACING, rule_racing),
    (BOUNDS, rule_bounds),
    (INSTALL_BLOB, rule_install_blob),
)
