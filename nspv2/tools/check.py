"""``python -m nspv2 check``: a conformance run of any Provider on the native host.

Each rule is a row with pass/fail and the evidence. The provider is
advertised on nspv2's native host and driven through the host's client calls
(sessions, WSALookupServiceBeginW/NextW/End, WSASetServiceW); the rules
about malformed input call the entry points directly through their C
function pointers (:class:`~nspv2.testing.SlotHarness`).

What to look up: ``check_queries`` on the provider class (names), or
``--query``; what to register first: ``check_registrations`` (names), or
``--register``.
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

from ..host.host import Host
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
    WSAQUERYSET2W,
    WSAError,
    code_name,
)
from ..testing.harness import SlotHarness
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, UsageError, add_json, emit_json

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["CheckError", "Rule", "add_commands", "load_provider_class", "print_rules", "run_check"]

_E = WSAError
_MAX_RESULTS = 1000
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

# The rules, in the order they are reported.
ESCAPED = "no exception escapes a slot"
OPTIONAL = "optional slots fail with WSAEOPNOTSUPP"
MALFORMED = "Begin rejects a malformed query set with WSAEINVAL"
ENDED_HANDLE = "End with an ended handle gives WSA_INVALID_HANDLE"
SIZES = "every short buffer gives WSAEFAULT with the exact size; then the full result"
FLUSH = "LUP_FLUSHPREVIOUS drops the held result"
END = "the end is WSA_E_NO_MORE"
INSIDE = "packed results stay inside the buffer"
SESSIONS = "each session ends once; nothing left open after cleanup and after rundown"
RULE_NAMES = (ESCAPED, OPTIONAL, MALFORMED, ENDED_HANDLE, SIZES, FLUSH, END, INSIDE, SESSIONS)

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


def _instantiate(cls: type[Provider]) -> Provider:
    try:
        return cls()
    except Exception as exc:
        raise CheckError(
            f"{cls.__name__}() raised {type(exc).__name__}: {exc}", usage=False
        ) from exc


def run_check(
    cls: type[Provider],
    *,
    queries: Sequence[str] = (),
    registrations: Sequence[str] = (),
    timeout_ms: int = 2000,
    progress: Callable[[str], None] | None = None,
    on_step: Step | None = None,
    on_rule: Callable[[Rule], None] | None = None,
) -> list[Rule]:
    """Run every rule against a fresh instance of ``cls``; return the rows.

    In this process: a provider that hangs or kills its process takes the
    caller with it (the command line runs this in a child process, see
    :mod:`nspv2.tools.check_worker`). ``on_step(rule, what)`` is called as the
    check starts on each part of each rule, ``on_rule(row)`` as each row is final.
    """

    def step(rule: str, what: str) -> None:
        if progress is not None:
            progress(what)
        if on_step is not None:
            on_step(rule, what)

    def final(rows: list[Rule]) -> list[Rule]:
        for row in rows:
            if on_rule is not None:
                on_rule(row)
        return rows

    queries = list(queries) or list(getattr(cls, "check_queries", ()))
    registrations = list(registrations) or list(getattr(cls, "check_registrations", ()))
    errors = _ErrorLog()
    logger = logging.getLogger("nspv2")
    logger.addHandler(errors)
    unraisable: list[Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    rules: list[Rule] = []
    try:
        rules += final(_isolated_rules(cls, queries, registrations, step))
        rules += final(_host_rules(cls, queries, registrations, timeout_ms, step))
    finally:
        sys.unraisablehook = previous_hook
        logger.removeHandler(errors)
    escaped = Rule(ESCAPED)
    if unraisable:
        escaped.fail(f"{len(unraisable)} exception(s) reached C: {unraisable[0].exc_value!r}")
    unexpected = [r for r in errors.records if r.exc_info]
    for record in unexpected[:5]:
        exc = record.exc_info[1] if record.exc_info else None
        escaped.fail(f"the guard caught {type(exc).__name__}: {exc} ({record.getMessage()})")
    if escaped.passed:
        escaped.note("no exception other than WinsockError was raised by the provider")
    rules.insert(0, escaped)
    final([escaped])
    return rules


def _isolated_rules(
    cls: type[Provider], queries: list[str], registrations: list[str], at: Step
) -> list[Rule]:
    at(ENDED_HANDLE, "constructing the provider")
    provider = _instantiate(cls)
    ns = int(cls.namespace)
    optional = Rule(OPTIONAL)
    malformed = Rule(MALFORMED)
    handle_rule = Rule(ENDED_HANDLE)
    try:
        with SlotHarness(provider) as h:
            at(ENDED_HANDLE, "NSPv2Startup through its C function pointer")
            token = h.startup().value
            for name in registrations:
                at(ENDED_HANDLE, f"registering {name} through NSPv2SetServiceEx")
                h.set_service(
                    token, QuerySet(name, namespace=ns), WSAESETSERVICEOP.RNRSERVICE_REGISTER
                )
            for name in queries:
                at(ENDED_HANDLE, f"{name}: Begin, End twice, NextEx on the ended handle")
                begun = h.begin(token, QuerySet(name, namespace=ns))
                if not begun.ok:
                    handle_rule.fail(f"{name}: Begin -> {code_name(begun.code)}")
                    continue
                first, second = h.end(begun.value), h.end(begun.value)
                ok = first.ok and second.code == _E.WSA_INVALID_HANDLE
                (handle_rule.note if ok else handle_rule.fail)(
                    f"{name}: NSPv2LookupServiceEnd -> {code_name(first.code)}, again -> {code_name(second.code)}"
                )
                stale = h.next(begun.value).code
                (handle_rule.note if stale == _E.WSA_INVALID_HANDLE else handle_rule.fail)(
                    f"{name}: NSPv2LookupServiceNextEx on the ended handle -> {code_name(stale)}"
                )
            if not queries:
                handle_rule.skip(NOTHING_TO_LOOK_UP)
            at(OPTIONAL, "NSPv2SetServiceEx")
            if provider.implements("set_service"):
                optional.note("NSPv2SetServiceEx is implemented (set_service)")
            else:
                code = h.set_service(token, QuerySet("check@example.com", namespace=ns), 0).code
                (optional.note if code == _E.WSAEOPNOTSUPP else optional.fail)(
                    f"NSPv2SetServiceEx (not implemented) -> {code_name(code)}"
                )
            at(MALFORMED, "Begin with malformed query sets")
            small = WSAQUERYSET2W()
            small.dwSize = 4
            nulls = WSAQUERYSET2W()
            nulls.dwSize = ctypes.sizeof(WSAQUERYSET2W)
            nulls.dwNumberOfCsAddrs = 2
            for label, image in (
                ("NULL", None),
                ("dwSize 4", small),
                ("2 CS addresses, NULL array", nulls),
            ):
                address = None if image is None else ctypes.addressof(image)
                call = h.begin(token, address)
                text = f"Begin({label}) -> {code_name(call.code)}"
                (malformed.note if call.code == _E.WSAEINVAL else malformed.fail)(text)
                if call.ok and call.value:
                    h.end(call.value)
            at(MALFORMED, "NSPv2Cleanup")
            h.cleanup(token)
    finally:
        provider.close()
    return [optional, malformed, handle_rule]


def _host_rules(
    cls: type[Provider],
    queries: list[str],
    registrations: list[str],
    timeout_ms: int,
    at: Step,
) -> list[Rule]:
    sizes = Rule(SIZES)
    flush = Rule(FLUSH)
    end = Rule(END)
    inside = Rule(INSIDE)
    sessions = Rule(SESSIONS)
    rows = [sizes, flush, end, inside, sessions]
    at(SIZES, "advertising on the native host")
    provider = _instantiate(cls)
    pid = type(provider).provider_id
    ns = int(type(provider).namespace)
    with Host(timeout_ms=timeout_ms) as host:
        faults_before = host.stats()["provider_faults"]
        host.advertise(provider)
        owner = host.open_session()
        for name in registrations:
            at(SIZES, f"registering {name}")
            try:
                owner.set_service(
                    QuerySet(name, provider_id=pid, namespace=ns),
                    WSAESETSERVICEOP.RNRSERVICE_REGISTER,
                )
            except WinsockError as exc:
                sizes.fail(f"registering {name} failed: {code_name(exc.code)}")
        if not queries:
            for rule in (sizes, flush, end, inside):
                rule.skip(NOTHING_TO_LOOK_UP)
        client = host.open_session()
        for name in queries:
            query = QuerySet(name, provider_id=pid, namespace=ns)
            _check_query(host, client, query, sizes, flush, end, at)
        at(SESSIONS, "sessions: startup, a lookup left open, rundown, cleanup")
        client.close()
        dying = host.open_session()
        # sessions reach the provider even with nothing to look up
        guid = GUID.from_uuid(pid)
        for session in (owner, dying):
            if host.native.nspv2_session_start(session.id, ns, ctypes.byref(guid)) == SOCKET_ERROR:
                code = host.winsock.WSAGetLastError()
                sessions.fail(f"nspv2_session_start (NSPv2Startup) -> {code_name(code)}")
        for name in queries[:1]:
            try:  # a lookup left open: the rundown must end it
                open_handle = host.lookup_begin(
                    dying, QuerySet(name, provider_id=pid, namespace=ns)
                )
                host.lookup_next(open_handle, 0, 65536)
            except WinsockError:
                pass
        dying.abandon()
        owner.close()
        stats = host.stats()
        faults = stats["provider_faults"] - faults_before
        if faults or queries:
            (inside.fail if faults else inside.note)(
                f"{faults} write(s) past the buffer or pointer(s) outside it, seen by the host's guard bytes"
            )
        registry = provider.registry
        counts = registry.open_counts()
        started, ended = registry.sessions_started, registry.sessions_ended
        ended_tokens = [s.token for s in registry.ended]
        if started == 0:
            sessions.fail(
                "no session reached the provider (NSPv2Startup was never called; "
                f"is it advertised for namespace {ns}?)"
            )
        if counts != {"sessions": 0, "lookups": 0}:
            sessions.fail(f"left open after cleanup and rundown: {counts}")
        if started != ended or len(set(ended_tokens)) != len(ended_tokens):
            sessions.fail(f"{started} session(s) started, {ended} ended")
        if stats["sessions_open"] or stats["lookups_open"] or stats["async_pending"]:
            sessions.fail(f"the host still has open: {stats}")
        kinds = sorted({s.ended_by.value if s.ended_by else "?" for s in registry.ended})
        if sessions.passed:
            sessions.note(
                f"{started} started, {ended} ended once each ({', '.join(kinds)}); nothing open"
            )
        bad_ends = [
            s for s in registry.ended if s.end_reason is not None and s.ended_by is EndedBy.CLEANUP
        ]
        for s in bad_ends[:3]:
            sessions.fail(
                f"session {s.token:#x}: cleanup hook failed ({s.end_reason.name if s.end_reason else ''})"
            )
        at(SESSIONS, "closing the native host")
    provider.close()
    for rule in rows:
        if rule.passed and not rule.evidence and rule.skipped is None:
            rule.fail("could not be checked: no lookup got this far (see the other rules)")
    return rows


def _check_query(
    host: Host,
    client: Any,
    query: QuerySet,
    sizes: Rule,
    flush: Rule,
    end: Rule,
    at: Step,
) -> None:
    name = query.service_instance_name
    reference: list[QuerySet] = []
    at(SIZES, f"{name}: the whole lookup")
    try:
        handle = host.lookup_begin(client, query)
        try:
            while len(reference) < _MAX_RESULTS:
                step = host.lookup_next(handle, 0, 65536)
                if step.code != NO_ERROR or step.result is None:
                    break
                reference.append(step.result)
        finally:
            host.lookup_end(handle)
    except WinsockError as exc:
        sizes.fail(f"{name}: lookup failed with {code_name(exc.code)}")
        return
    if not reference:
        sizes.fail(f"{name}: no result to check")
        return
    # every buffer size below the required one
    at(SIZES, f"{name}: every buffer size")
    try:
        handle = host.lookup_begin(client, query)
    except WinsockError as exc:
        sizes.fail(f"{name}: Begin -> {code_name(exc.code)}")
        return
    try:
        first = host.lookup_next(handle, 0, 0)
        need = first.buffer_length
        if first.code != _E.WSAEFAULT:
            sizes.fail(f"{name}: a 0-byte buffer -> {code_name(first.code)}, not WSAEFAULT")
        else:
            wrong = []
            for size in range(0, need):
                step = host.lookup_next(handle, 0, size)
                if step.code != _E.WSAEFAULT or step.buffer_length != need:
                    wrong.append(
                        f"{size} bytes -> {code_name(step.code)}, size {step.buffer_length}"
                    )
            full = host.lookup_next(handle, 0, need)
            if wrong:
                sizes.fail(f"{name}: " + "; ".join(wrong[:3]))
            elif full.code != NO_ERROR or full.result != reference[0]:
                sizes.fail(
                    f"{name}: with {need} bytes -> {code_name(full.code)}, result {'differs' if full.code == NO_ERROR else 'missing'}"
                )
            else:
                sizes.note(
                    f"{name}: sizes 0..{need - 1} -> WSAEFAULT, size {need}; then the complete result"
                )
        # the rest, and the end
        at(END, f"{name}: the rest, to the end")
        count = 1
        while count < _MAX_RESULTS:
            step = host.lookup_next(handle, 0, 65536)
            if step.code != NO_ERROR:
                break
            count += 1
        else:
            end.fail(f"{name}: still returning results after {_MAX_RESULTS}")
            step = host.lookup_next(handle, 0, 65536)
        again = host.lookup_next(handle, 0, 65536)
        if step.code == _E.WSA_E_NO_MORE and again.code == _E.WSA_E_NO_MORE:
            end.note(f"{name}: {count} result(s), then WSA_E_NO_MORE (twice)")
        else:
            end.fail(
                f"{name}: after {count} result(s): {code_name(step.code)}, then {code_name(again.code)}"
            )
    finally:
        host.lookup_end(handle)
    # LUP_FLUSHPREVIOUS
    at(FLUSH, f"{name}: LUP_FLUSHPREVIOUS")
    handle = host.lookup_begin(client, query)
    try:
        held = host.lookup_next(handle, 0, 8)
        after = host.lookup_next(handle, LUP.LUP_FLUSHPREVIOUS, 65536)
        if held.code != _E.WSAEFAULT:
            flush.fail(f"{name}: an 8-byte buffer -> {code_name(held.code)}")
        elif len(reference) > 1:
            ok = after.code == NO_ERROR and after.result == reference[1]
            (flush.note if ok else flush.fail)(
                f"{name}: after WSAEFAULT, FLUSHPREVIOUS -> {code_name(after.code)}, "
                + ("the second result" if ok else "not the second result")
            )
        else:
            ok = after.code == _E.WSA_E_NO_MORE
            (flush.note if ok else flush.fail)(
                f"{name}: the only result dropped -> {code_name(after.code)}"
            )
    finally:
        host.lookup_end(handle)


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


def cmd_check(args: argparse.Namespace) -> int:
    from .check_isolated import run_isolated

    if not args.timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    progress = Progress()
    try:
        run = run_isolated(
            args.provider,
            queries=args.query,
            registrations=args.register,
            timeout=args.timeout,
            progress=progress,
        )
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
        print_rules(rules, args.provider, sys.stdout)
    if run.interrupted:
        if not args.json:
            print("(interrupted: the rules above are partial)")
        print("nspv2: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS if any(r.failed for r in rules) else EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_check = sub.add_parser(
        "check",
        help="conformance run of a Provider on the native host",
        description="Run the conformance rules against a Provider: MODULE:CLASS, or a path to a .py file "
        "(with :CLASS if it defines several). Modules are found in the current folder and beside a "
        "given file. Rules that need lookups are SKIPPED without check_queries or --query. "
        "The provider runs in a child process: one that hangs, exits or crashes fails the rule "
        "it was in. Exit 1 if any rule fails, 130 on Ctrl-C (with the rules finished so far).",
    )
    p_check.add_argument("provider", metavar="MODULE:CLASS")
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
    add_json(p_check, "the rules")
    p_check.set_defaults(func=cmd_check)
