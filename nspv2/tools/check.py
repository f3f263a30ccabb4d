"""``python -m nspv2 check``: a conformance run of a provider on the native host.

Each rule is a row with pass/fail and the evidence, and a function
``rule_xxx(t, at) -> Rule`` that sees the provider only as a
:class:`~nspv2.tools.check_target.CheckTarget`: a Python ``Provider`` class
(a fresh instance advertised on nspv2's native host) or a C provider library
(``--native``: loaded, its entry point run, its table advertised by itself).
The rules drive it through the host's client calls (sessions,
WSALookupServiceBeginW/NextW/End, WSASetServiceW) or call its entry points
directly through their C function pointers
(:class:`~nspv2.testing.SlotHarness`).

This module holds today's rules and the in-process runner
(:func:`run_check`); :mod:`nspv2.tools.rules` the rules added with native
providers; :mod:`nspv2.tools.check_registry` their order;
:mod:`nspv2.tools.check_isolated` runs each rule in its own child process
(the command line). What to look up: ``check_queries`` on the class,
``--query``, or a library's exported ``nspv2_check_queries``; what to
register first: ``check_registrations``, ``--register`` or
``nspv2_check_registrations``. docs/check.md describes every rule.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.registry import EndedBy
from ..sdk.guiddef import GUID
from ..sdk.winsock2 import (
    LUP,
    NO_ERROR,
    SOCKET_ERROR,
    WSAESETSERVICEOP,
    WSAError,
    code_name,
)
from ..testing.harness import SlotHarness
from .check_target import CheckTarget, NativeTarget, PythonTarget, TargetSpec
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, UsageError, add_json, emit_json

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = [
    "CheckError",
    "EscapeWatch",
    "Rule",
    "Step",
    "add_commands",
    "escaped_rule",
    "instantiate",
    "load_provider_class",
    "print_rules",
    "rule_end",
    "rule_flush",
    "rule_inside",
    "rule_optional",
    "rule_sessions",
    "rule_sizes",
    "run_check",
]

_E = WSAError
_MAX_RESULTS = 1000
#: The longest a harness call may stay uncompleted before it counts as never.
HARNESS_TIMEOUT = 2.0
#: How many processes that died the ESCAPED row names one by one.
_DEATHS_LISTED = 3
#: How many different escapes it names.
_ESCAPES_LISTED = 5
EXIT_INTERRUPTED = 130
#: Seconds one step of a rule may take in ``nspv2 check`` (``--timeout``).
DEFAULT_TIMEOUT = 10.0


class CheckError(Exception):
    """The provider could not be loaded or constructed (exit 1 or 2)."""

    def __init__(self, message: str, usage: bool, child_traceback: str = "") -> None:
        super().__init__(message)
        self.usage = usage
        #: The traceback in the child process that ran the provider (``nspv2 check``).
        self.child_traceback = child_traceback


#: Why a rule about lookups cannot be exercised.
NOTHING_TO_LOOK_UP = "nothing to look up: give check_queries on the class or --query NAME"

# Today's rules (the order they are reported in: nspv2.tools.check_registry).
ESCAPED = "no exception or fault escapes a slot"
OPTIONAL = "optional slots fail with WSAEOPNOTSUPP"
# Today's two rules about malformed input and ended handles were made
# stricter with native providers; their bodies live in nspv2.tools.rules.
MALFORMED = "Begin rejects malformed restrictions with WSAEINVAL without touching them"
ENDED_HANDLE = "End of an ended handle and NextEx after End give WSA_INVALID_HANDLE"
SIZES = "every short buffer gives WSAEFAULT with the exact size; then the full result"
FLUSH = "LUP_FLUSHPREVIOUS drops the held result"
END = "the end is WSA_E_NO_MORE"
INSIDE = "packed results stay inside the buffer"
SESSIONS = "each session ends once; nothing left open after cleanup and after rundown"

#: ``step(rule, what)``: the check starts on ``what`` (for a name, a slot) for ``rule``.
Step = Callable[[str, str], None]


@dataclass
class Rule:
    """One row: passed, failed, or skipped (could not be exercised, with why)."""

    name: str
    passed: bool = True
    evidence: list[str] = field(default_factory=list)
    skipped: str | None = None

    def fail(self, text: str) -> None:
        self.passed = False
        self.skipped = None
        self.evidence.append(text)

    def note(self, text: str) -> None:
        self.evidence.append(text)

    def skip(self, reason: str) -> None:
        """Neither passed nor failed: the rule could not be exercised."""
        self.passed = False
        self.skipped = reason

    @property
    def failed(self) -> bool:
        return not self.passed and self.skipped is None

    @property
    def status(self) -> str:
        return "skipped" if self.skipped is not None else "pass" if self.passed else "fail"

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Rule:
        rule = cls(str(doc["rule"]), evidence=[str(e) for e in doc["evidence"]])
        rule.passed = doc["status"] == "pass"
        rule.skipped = None if doc["reason"] is None else str(doc["reason"])
        return rule

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "status": self.status,
            "passed": None if self.skipped is not None else self.passed,
            "reason": self.skipped,
            "evidence": self.evidence,
        }


def _on_path(folder: Path) -> None:
    """Make modules in ``folder`` importable (first), once."""
    resolved = folder.resolve()
    present = {Path(entry or os.curdir).resolve() for entry in sys.path}
    if resolved not in present:
        sys.path.insert(0, str(resolved))


def load_provider_class(spec: str) -> type[Provider]:
    """``package.module:Class``, ``path/to/file.py:Class`` or ``path/to/file.py``.

    Modules are found in the current folder (also from the ``nspv2`` console
    script, whose ``sys.path[0]`` is its own bin folder) and, for a file,
    beside it. A syntax error is a usage error naming the file and line.
    """
    target, _, class_name = spec.partition(":")
    if not target:
        raise CheckError(f"{spec!r} names no module before :CLASS (MODULE:CLASS)", usage=True)
    _on_path(Path.cwd())
    try:
        if target.endswith(".py") or Path(target).is_file():
            path = Path(target)
            if not path.is_file():
                raise CheckError(f"no such file: {path}", usage=True)
            _on_path(path.parent)
            mod_spec = importlib.util.spec_from_file_location(f"nspv2_check_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise CheckError(f"cannot import {path}", usage=True)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except CheckError:
        raise
    except SyntaxError as exc:
        where = f"{exc.filename or target}, line {exc.lineno}" if exc.lineno else target
        raise CheckError(f"syntax error in {where}: {exc.msg}", usage=True) from exc
    except ModuleNotFoundError as exc:
        raise CheckError(f"cannot import {target}: {exc}", usage=True) from exc
    except Exception as exc:
        raise CheckError(
            f"importing {target} failed: {type(exc).__name__}: {exc}", usage=False
        ) from exc
    if class_name:
        cls = getattr(module, class_name, None)
        if cls is None:
            raise CheckError(f"{target} has no attribute {class_name}", usage=True)
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise CheckError(f"{spec} is not a subclass of nspv2.Provider", usage=True)
        return cls
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, Provider)
        and v is not Provider
        and v.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise CheckError(
            f"{target} must define exactly one Provider subclass (found: {names}); name it with :CLASS",
            usage=True,
        )
    return found[0]


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def instantiate(cls: type[Provider]) -> Provider:
    """A fresh instance of ``cls``; CheckError (exit 1) if its constructor raises."""
    try:
        return cls()
    except Exception as exc:
        raise CheckError(
            f"{cls.__name__}() raised {type(exc).__name__}: {exc}", usage=False
        ) from exc


class EscapeWatch:
    """What escaped the provider's slots in this process while watching:
    exceptions that reached C (``sys.unraisablehook``) and exceptions the
    slot guards caught and logged (anything but WinsockError)."""

    def __init__(self) -> None:
        self._errors = _ErrorLog()
        self._unraisable: list[Any] = []
        self._previous: Callable[[Any], object] | None = None

    def __enter__(self) -> EscapeWatch:
        logging.getLogger("nspv2").addHandler(self._errors)
        self._previous = sys.unraisablehook
        sys.unraisablehook = self._unraisable.append
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            sys.unraisablehook = self._previous
        logging.getLogger("nspv2").removeHandler(self._errors)

    def evidence(self) -> list[str]:
        """One line per kind of escape (at most five guard lines)."""
        lines: list[str] = []
        if self._unraisable:
            lines.append(
                f"{len(self._unraisable)} exception(s) reached C: {self._unraisable[0].exc_value!r}"
            )
        caught = [r for r in self._errors.records if r.exc_info]
        for record in caught[:5]:
            exc = record.exc_info[1] if record.exc_info else None
            lines.append(f"the guard caught {type(exc).__name__}: {exc} ({record.getMessage()})")
        return lines


def escaped_rule(python: bool, escapes: Sequence[str], deaths: Sequence[str] = ()) -> Rule:
    """The ESCAPED row from what every rule's process saw: ``escapes`` (a
    Python provider's exceptions, gathered by :class:`EscapeWatch`) and
    ``deaths`` (processes that died of a signal, in words)."""
    row = Rule(ESCAPED)
    unique = list(dict.fromkeys(escapes))
    for text in unique[:_ESCAPES_LISTED]:
        row.fail(text)
    if len(unique) > _ESCAPES_LISTED:
        row.fail(f"(and {len(unique) - _ESCAPES_LISTED} more)")
    for text in deaths[:_DEATHS_LISTED]:
        row.fail(text)
    if len(deaths) > _DEATHS_LISTED:
        row.fail(f"(and in {len(deaths) - _DEATHS_LISTED} more rules' processes)")
    if row.passed:
        row.note(
            "no exception other than WinsockError was raised by the provider"
            if python
            else "no rule's process died of a signal"
        )
    return row


def _checked(rule: Rule) -> Rule:
    """A rule that neither passed with evidence nor was skipped could not be checked."""
    if rule.passed and not rule.evidence and rule.skipped is None:
        rule.fail("could not be checked: no lookup got this far (see the other rules)")
    return rule


# -- the rules on isolated slots (SlotHarness) -------------------------------------------


def _harness_session(t: CheckTarget, h: SlotHarness, rule: Rule, at: Step) -> int | None:
    """NSPv2Startup through the harness and t.registrations through
    NSPv2SetServiceEx; the session argument, or None (failed, noted)."""
    at(rule.name, "NSPv2Startup through its C function pointer")
    started = h.startup()
    if not started.ok:  # the sessions rule judges that; this one goes on without a session
        rule.note(f"NSPv2Startup -> {code_name(started.code)}; going on without a session")
    token = started.value if started.ok else None
    for name in t.registrations:
        at(rule.name, f"registering {name} through NSPv2SetServiceEx")
        reg = QuerySet(name, namespace=t.namespace)
        call = h.set_service(token, reg, WSAESETSERVICEOP.RNRSERVICE_REGISTER)
        if not call.ok:
            rule.fail(f"registering {name} -> {code_name(call.code)}")
    return token


def rule_optional(t: CheckTarget, at: Step) -> Rule:
    """A SetServiceEx slot the provider does not implement fails with WSAEOPNOTSUPP."""
    rule = Rule(OPTIONAL)
    at(OPTIONAL, "NSPv2SetServiceEx")
    if t.implements("NSPv2SetServiceEx"):
        rule.note(
            "NSPv2SetServiceEx is implemented" + (" (set_service)" if t.python is not None else "")
        )
        return rule
    with t.harness() as h:
        h.timeout = min(h.timeout, HARNESS_TIMEOUT)
        started = h.startup()
        token = started.value if started.ok else None
        call = h.set_service(token, QuerySet("check@example.com", namespace=t.namespace), 0)
        (rule.note if call.code == _E.WSAEOPNOTSUPP else rule.fail)(
            f"NSPv2SetServiceEx (not implemented) -> {code_name(call.code)}"
        )
        if started.ok:
            h.cleanup(token)
    return rule


# -- the rules through the host's client calls --------------------------------------------


class _OnHost:
    """The target's host, a session that registered ``t.registrations`` (kept
    open: registrations may belong to it) and a client session."""

    def __init__(self, t: CheckTarget, rule: Rule, at: Step) -> None:
        self.t = t
        self.host = t.host()
        self.owner = self.host.open_session()
        for name in t.registrations:
            at(rule.name, f"registering {name}")
            try:
                self.owner.set_service(self.query(name), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
            except WinsockError as exc:
                rule.fail(f"registering {name} failed: {code_name(exc.code)}")
        self.client = self.host.open_session()

    def query(self, name: str) -> QuerySet:
        return QuerySet(name, provider_id=self.t.provider_id, namespace=self.t.namespace)

    def reference(self, name: str, rule: Rule, at: Step) -> list[QuerySet]:
        """The whole lookup of ``name`` with a large buffer (a failure is noted)."""
        at(rule.name, f"{name}: the whole lookup")
        out: list[QuerySet] = []
        try:
            handle = self.host.lookup_begin(self.client, self.query(name))
            try:
                while len(out) < _MAX_RESULTS:
                    step = self.host.lookup_next(handle, 0, 65536)
                    if step.code != NO_ERROR or step.result is None:
                        break
                    out.append(step.result)
            finally:
                self.host.lookup_end(handle)
        except WinsockError as exc:
            rule.fail(f"{name}: lookup failed with {code_name(exc.code)}")
            return []
        if not out:
            rule.fail(f"{name}: no result to check")
        return out

    def close(self) -> None:
        for session in (self.client, self.owner):
            try:
                session.close()
            except WinsockError:
                pass


def rule_sizes(t: CheckTarget, at: Step) -> Rule:
    """Every buffer size below the required one: WSAEFAULT and that size; then the result."""
    rule = Rule(SIZES)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    on = _OnHost(t, rule, at)
    try:
        for name in t.queries:
            reference = on.reference(name, rule, at)
            if reference:
                _every_size(on, name, reference[0], rule, at)
    finally:
        on.close()
    return _checked(rule)


def _every_size(on: _OnHost, name: str, expected: QuerySet, rule: Rule, at: Step) -> None:
    host = on.host
    at(SIZES, f"{name}: every buffer size")
    try:
        handle = host.lookup_begin(on.client, on.query(name))
    except WinsockError as exc:
        rule.fail(f"{name}: Begin -> {code_name(exc.code)}")
        return
    try:
        first = host.lookup_next(handle, 0, 0)
        need = first.buffer_length
        if first.code != _E.WSAEFAULT:
            rule.fail(f"{name}: a 0-byte buffer -> {code_name(first.code)}, not WSAEFAULT")
            return
        wrong = []
        for size in range(0, need):
            step = host.lookup_next(handle, 0, size)
            if step.code != _E.WSAEFAULT or step.buffer_length != need:
                wrong.append(f"{size} bytes -> {code_name(step.code)}, size {step.buffer_length}")
        full = host.lookup_next(handle, 0, need)
        if wrong:
            rule.fail(f"{name}: " + "; ".join(wrong[:3]))
        elif full.code != NO_ERROR or full.result != expected:
            rule.fail(
                f"{name}: with {need} bytes -> {code_name(full.code)}, result "
                + ("differs" if full.code == NO_ERROR else "missing")
            )
        else:
            rule.note(
                f"{name}: sizes 0..{need - 1} -> WSAEFAULT, size {need}; then the complete result"
            )
    finally:
        host.lookup_end(handle)


def rule_end(t: CheckTarget, at: Step) -> Rule:
    """After the last result: WSA_E_NO_MORE, and again."""
    rule = Rule(END)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    on = _OnHost(t, rule, at)
    host = on.host
    try:
        for name in t.queries:
            at(END, f"{name}: every result, to the end")
            try:
                handle = host.lookup_begin(on.client, on.query(name))
            except WinsockError as exc:
                rule.fail(f"{name}: Begin -> {code_name(exc.code)}")
                continue
            try:
                count = 0
                while count < _MAX_RESULTS:
                    step = host.lookup_next(handle, 0, 65536)
                    if step.code != NO_ERROR:
                        break
                    count += 1
                else:
                    rule.fail(f"{name}: still returning results after {_MAX_RESULTS}")
                    step = host.lookup_next(handle, 0, 65536)
                again = host.lookup_next(handle, 0, 65536)
                if step.code == _E.WSA_E_NO_MORE and again.code == _E.WSA_E_NO_MORE:
                    rule.note(f"{name}: {count} result(s), then WSA_E_NO_MORE (twice)")
                else:
                    rule.fail(
                        f"{name}: after {count} result(s): {code_name(step.code)}, "
                        f"then {code_name(again.code)}"
                    )
            finally:
                host.lookup_end(handle)
    finally:
        on.close()
    return _checked(rule)


def rule_flush(t: CheckTarget, at: Step) -> Rule:
    """A result held after WSAEFAULT is dropped by LUP_FLUSHPREVIOUS."""
    rule = Rule(FLUSH)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    on = _OnHost(t, rule, at)
    host = on.host
    try:
        for name in t.queries:
            reference = on.reference(name, rule, at)
            if not reference:
                continue
            at(FLUSH, f"{name}: LUP_FLUSHPREVIOUS")
            handle = host.lookup_begin(on.client, on.query(name))
            try:
                held = host.lookup_next(handle, 0, 8)
                after = host.lookup_next(handle, LUP.LUP_FLUSHPREVIOUS, 65536)
                if held.code != _E.WSAEFAULT:
                    rule.fail(f"{name}: an 8-byte buffer -> {code_name(held.code)}")
                elif len(reference) > 1:
                    ok = after.code == NO_ERROR and after.result == reference[1]
                    (rule.note if ok else rule.fail)(
                        f"{name}: after WSAEFAULT, FLUSHPREVIOUS -> {code_name(after.code)}, "
                        + ("the second result" if ok else "not the second result")
                    )
                else:
                    ok = after.code == _E.WSA_E_NO_MORE
                    (rule.note if ok else rule.fail)(
                        f"{name}: the only result dropped -> {code_name(after.code)}"
                    )
            finally:
                host.lookup_end(handle)
    finally:
        on.close()
    return _checked(rule)


def rule_inside(t: CheckTarget, at: Step) -> Rule:
    """No write past the buffer, no pointer outside it (the host's guard bytes),
    with large buffers and with buffers of exactly the required size."""
    rule = Rule(INSIDE)
    if not t.queries:
        rule.skip(NOTHING_TO_LOOK_UP)
        return rule
    on = _OnHost(t, rule, at)
    host = on.host
    faults_before = host.stats()["provider_faults"]
    packed = 0
    try:
        for name in t.queries:
            at(INSIDE, f"{name}: every result in a large buffer, then in one of exactly its size")
            for exact in (False, True):
                packed += _pack_all(on, name, exact)
    finally:
        on.close()
    faults = host.stats()["provider_faults"] - faults_before
    (rule.fail if faults else rule.note)(
        f"{faults} write(s) past the buffer or pointer(s) outside it, seen by the host's "
        f"guard bytes ({packed} result(s) packed)"
    )
    return rule


def _pack_all(on: _OnHost, name: str, exact: bool) -> int:
    """Look ``name`` up to the end (bounded): each result in a 64 KiB buffer,
    or in one of the size the provider asked for; how many were packed.
    Failures are other rules' business."""
    host = on.host
    try:
        handle = host.lookup_begin(on.client, on.query(name))
    except WinsockError:
        return 0
    packed = 0
    try:
        while packed < _MAX_RESULTS:
            size = 65536
            if exact:
                asked = host.lookup_next(handle, 0, 0)
                if asked.code == _E.WSAEFAULT and asked.buffer_length:
                    size = asked.buffer_length
                elif asked.code != NO_ERROR:
                    break
            step = host.lookup_next(handle, 0, size)
            if step.code == _E.WSAEFAULT and size < 65536:
                step = host.lookup_next(handle, 0, 65536)  # a wrong size: another rule's failure
            if step.code != NO_ERROR:
                break
            packed += 1
    finally:
        host.lookup_end(handle)
    return packed


def rule_sessions(t: CheckTarget, at: Step) -> Rule:
    """Sessions end once each, by cleanup or rundown; nothing is left open."""
    rule = Rule(SESSIONS)
    host = t.host()
    before = host.stats()
    at(SESSIONS, "sessions: startup, a lookup left open, rundown, cleanup")
    on = _OnHost(t, rule, at)
    on.client.close()
    dying = host.open_session()
    # sessions reach the provider even with nothing to look up
    guid = GUID.from_uuid(t.provider_id)
    for session in (on.owner, dying):
        if (
            host.native.nspv2_session_start(session.id, t.namespace, ctypes.byref(guid))
            == SOCKET_ERROR
        ):
            code = host.winsock.WSAGetLastError()
            rule.fail(f"nspv2_session_start (NSPv2Startup) -> {code_name(code)}")
    for name in t.queries[:1]:
        try:  # a lookup left open: the rundown must end it
            open_handle = host.lookup_begin(dying, on.query(name))
            host.lookup_next(open_handle, 0, 65536)
        except WinsockError:
            pass
    at(SESSIONS, "abandoning one session (rundown), closing the other (cleanup)")
    dying.abandon()
    on.close()
    stats = host.stats()
    started = stats["startups"] - before["startups"]
    ended = (stats["cleanups"] - before["cleanups"]) + (stats["rundowns"] - before["rundowns"])
    if t.python is not None:
        _registry_evidence(t.python, t.namespace, rule)
    elif started == 0:
        rule.fail(
            "no session reached the provider (NSPv2Startup was never called; "
            f"is it advertised for namespace {t.namespace}?)"
        )
    if started != ended:
        rule.fail(f"the host started {started} session(s) on the provider and ended {ended}")
    if stats["sessions_open"] or stats["lookups_open"] or stats["async_pending"]:
        open_now = {k: stats[k] for k in ("sessions_open", "lookups_open", "async_pending")}
        rule.fail(f"the host still has open: {open_now}")
    if rule.passed:
        rule.note(
            f"the host: {started} started, {stats['cleanups'] - before['cleanups']} cleaned up, "
            f"{stats['rundowns'] - before['rundowns']} run down; nothing open"
        )
    return rule


def _registry_evidence(provider: Provider, namespace: int, rule: Rule) -> None:
    """What a Python provider's own registry says about its sessions."""
    registry = provider.registry
    counts = registry.open_counts()
    started, ended = registry.sessions_started, registry.sessions_ended
    ended_tokens = [s.token for s in registry.ended]
    if started == 0:
        rule.fail(
            "no session reached the provider (NSPv2Startup was never called; "
            f"is it advertised for namespace {namespace}?)"
        )
    if counts != {"sessions": 0, "lookups": 0}:
        rule.fail(f"left open after cleanup and rundown: {counts}")
    if started != ended or len(set(ended_tokens)) != len(ended_tokens):
        rule.fail(f"{started} session(s) started, {ended} ended")
    kinds = sorted({s.ended_by.value if s.ended_by else "?" for s in registry.ended})
    if rule.passed:
        rule.note(f"{started} started, {ended} ended once each ({', '.join(kinds)}); nothing open")
    bad_ends = [
        s for s in registry.ended if s.end_reason is not None and s.ended_by is EndedBy.CLEANUP
    ]
    for s in bad_ends[:3]:
        rule.fail(
            f"session {s.token:#x}: cleanup hook failed "
            f"({s.end_reason.name if s.end_reason else ''})"
        )


# -- running every rule in this process ----------------------------------------------------


def run_check(
    target: type[Provider] | TargetSpec,
    *,
    queries: Sequence[str] = (),
    registrations: Sequence[str] = (),
    timeout_ms: int = 2000,
    progress: Callable[[str], None] | None = None,
    on_step: Step | None = None,
    on_rule: Callable[[Rule], None] | None = None,
) -> list[Rule]:
    """Run every rule, each on a freshly loaded provider, in this process;
    return the rows (ESCAPED first, then the rules in :data:`RULE_NAMES` order).

    ``target`` is a Provider class or a :class:`TargetSpec`. A provider that
    hangs or kills its process takes the caller with it: the command line
    runs each rule in its own child process instead
    (:mod:`nspv2.tools.check_isolated`). ``on_step(rule, what)`` is called as
    the check starts on each part of each rule, ``on_rule(row)`` as each row
    is final. The providers are installed in a catalog private to the
    process while it runs (:mod:`nspv2.tools.private_catalog`).
    """
    from .check_registry import RULES
    from .private_catalog import private_catalog

    def step(rule: str, what: str) -> None:
        if progress is not None:
            progress(what)
        if on_step is not None:
            on_step(rule, what)

    if isinstance(target, TargetSpec):
        spec = target
        cls = None if spec.native else load_provider_class(spec.provider)
    else:
        spec, cls = None, target

    def load() -> PythonTarget | NativeTarget:
        if cls is not None:
            return PythonTarget(
                cls, queries=queries, registrations=registrations, timeout_ms=timeout_ms
            )
        assert spec is not None
        return spec.load()

    rows: list[Rule] = []
    with private_catalog(), EscapeWatch() as watch:
        for name, function in RULES:
            step(name, "loading the provider")
            loaded = load()
            try:
                row = function(loaded, step)
            except CheckError:
                raise
            except Exception as exc:  # a failure the rule did not expect: its row, not the run
                row = Rule(name)
                row.fail(f"the check stopped: {type(exc).__name__}: {exc}")
            finally:
                loaded.close()
            rows.append(row)
            if on_rule is not None:
                on_rule(row)
    escaped = escaped_rule(cls is not None, watch.evidence())
    if on_rule is not None:
        on_rule(escaped)
    return [escaped, *rows]


def print_rules(rules: list[Rule], target: str, out: TextIO) -> None:
    out.write(f"nspv2 check {target}\n\n")
    marks = {"pass": "pass", "fail": "FAIL", "skipped": "SKIPPED"}
    for r in rules:
        out.write(f"  {marks[r.status]:<4}  {r.name}\n")
        if r.skipped is not None:
            out.write(f"        {r.skipped}\n")
        for line in r.evidence:
            out.write(f"        {line}\n")
    passed = [r for r in rules if r.passed]
    failed = [r for r in rules if r.failed]
    skipped = len(rules) - len(passed) - len(failed)
    out.write(f"\n{len(passed)} of {len(rules)} rules pass")
    if skipped:
        out.write(f", {skipped} skipped (not exercised)")
    out.write(f"; failing: {', '.join(r.name for r in failed)}\n" if failed else "\n")


def _spec(args: argparse.Namespace) -> TargetSpec:
    """The provider the command line names (usage errors for a wrong mix)."""
    entry_args = list(getattr(args, "entry_args", None) or [])
    if args.native is not None and args.provider is not None:
        raise UsageError("give MODULE:CLASS or --native LIB[:ENTRY], not both")
    if args.native is None and args.provider is None:
        raise UsageError("give the provider: MODULE:CLASS, or --native LIB[:ENTRY]")
    if entry_args and args.native is None:
        raise UsageError("arguments after -- are for a native provider's entry point (--native)")
    return TargetSpec(
        args.native if args.native is not None else args.provider,
        native=args.native is not None,
        args=tuple(entry_args),
        queries=tuple(args.query),
        registrations=tuple(args.register),
        load_timeout=args.timeout,
    )


def cmd_check(args: argparse.Namespace) -> int:
    from .check_isolated import run_isolated

    if not args.timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    spec = _spec(args)
    env = None
    if args.asan:
        from ..host.asan import AsanUnavailable, asan_environment

        try:
            env = asan_environment()
        except AsanUnavailable as exc:
            raise CheckError(f"--asan: {exc}", usage=False) from exc
    progress = Progress()
    try:
        run = run_isolated(spec, timeout=args.timeout, progress=progress, env=env)
    except CheckError as exc:
        if args.debug and exc.child_traceback:
            sys.stderr.write(exc.child_traceback)
        raise
    finally:
        progress.done()
    if run.traceback and args.debug:
        sys.stderr.write(run.traceback)
    rules = run.rules
    if args.json:
        doc: Any = [r.as_dict() for r in rules]
        emit_json({"error": "nspv2: interrupted", "rules": doc} if run.interrupted else doc)
    else:
        print_rules(rules, spec.label + (" (ASan host)" if args.asan else ""), sys.stdout)
    if run.interrupted:
        if not args.json:
            print("(interrupted: the rules above are partial)")
        print("nspv2: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS if any(r.failed for r in rules) else EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_check = sub.add_parser(
        "check",
        help="conformance run of a provider (Python or native) on the native host",
        usage="%(prog)s [-h] [options] (MODULE:CLASS | --native LIB[:ENTRY] [-- ARGS...])",
        description="Run the conformance rules against a provider: a Python Provider, "
        "MODULE:CLASS or a path to a .py file (with :CLASS if it defines several; modules are "
        "found in the current folder and beside a given file), or, with --native, a C provider "
        "library whose entry point (default main, given ARGS after --) advertises it. "
        "Rules that need lookups are SKIPPED without names to look up (check_queries, --query, "
        "or the library's nspv2_check_queries). Every rule runs in its own child process: a "
        "provider that hangs, exits or crashes fails the rule it was in and the check goes on. "
        "Exit 1 if any rule fails, 130 on Ctrl-C (with the rules finished so far). "
        "Every rule: docs/check.md.",
    )
    p_check.add_argument("provider", metavar="MODULE:CLASS", nargs="?")
    p_check.add_argument(
        "--native",
        metavar="LIB[:ENTRY]",
        help="a C provider library (built with 'nspv2 config --cflags --libs') and its entry "
        "point, called as ENTRY(argc, argv) with the ARGS after --",
    )
    p_check.add_argument(
        "--query", action="append", default=[], help="a name to look up (repeatable)"
    )
    p_check.add_argument(
        "--register", action="append", default=[], help="a name to sign in first (repeatable)"
    )
    p_check.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="the longest one step of a rule (one name, one slot) may take before the "
        "provider's process is killed and the rule fails (default: %(default)g)",
    )
    p_check.add_argument(
        "--asan",
        action="store_true",
        help="run the rules against an AddressSanitizer build of the host (built on first use "
        "and cached) with the ASan runtime preloaded; a sanitizer report fails the rule",
    )
    add_json(p_check, "the rules")
    p_check.set_defaults(func=cmd_check, entry_args=[])
