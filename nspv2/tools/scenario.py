"""Scenarios: client calls played against one provider, and what the clients saw.

A scenario (docs/compare.md) is a JSON file: a list of cases, each a list
of steps (open, close and abandon client sessions; register, deregister and
delete names with WSASetServiceW; look names up with
WSALookupServiceBegin/Next/End, whole or call by call, with buffer sizes
and flags). :func:`load_scenario` reads one and refuses a bad step with a
:class:`ScenarioError` naming the case and the step.

:func:`run_case` plays one case against one target on the native host, on
a fresh provider, and records a transcript: one JSON-able record per step
(every call's code, each result's fields, the buffer sizes asked for on
WSAEFAULT), with the session ends as the host saw them (NSPv2Cleanup or
NSPv2ClientSessionRundown, counted from the host's statistics) and, last,
the teardown (the provider stopped while the sessions still open are
open: the host runs them down). Only what a Python and a native provider
can both show is recorded, so two transcripts can be compared as they are
(``nspv2 compare``, :mod:`nspv2.tools.compare`). A result's
lpNSProviderId is the provider's own id, which differs from provider to
provider: it is recorded as ``"own"`` when it is the target's id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.msgrua import MISTATUS
from ..sdk.winsock2 import (
    LUP,
    NO_ERROR,
    NS,
    RESULT_IS,
    SERVICE_MULTIPLE,
    WSAECOMPARATOR,
    WSAESETSERVICEOP,
    WSAError,
)
from ..sdk.ws2def import AF, IPPROTO, SOCK

if TYPE_CHECKING:
    from ..host.host import ClientSession, Host

__all__ = [
    "FORMAT",
    "OPS",
    "Case",
    "ExpectedResult",
    "Scenario",
    "ScenarioError",
    "StartError",
    "Step",
    "Target",
    "code_name",
    "example_path",
    "load_scenario",
    "parse_scenario",
    "parse_target",
    "run_case",
]

#: The format version a scenario file declares (``"format": 1``).
FORMAT = 1
#: Every step's ``op``.
OPS = (
    "open",
    "close",
    "abandon",
    "register",
    "deregister",
    "delete",
    "lookup",
    "begin",
    "next",
    "end",
)

_SESSION_OPS = ("open", "close", "abandon", "register", "deregister", "delete", "lookup", "begin")
_NAME_OPS = ("register", "deregister", "delete", "lookup", "begin")
_HANDLE_OPS = ("begin", "next", "end")
# The fields each op takes (besides "op" and "note").
_FIELDS: dict[str, frozenset[str]] = {
    "open": frozenset({"session"}),
    "close": frozenset({"session"}),
    "abandon": frozenset({"session"}),
    "register": frozenset(
        {"session", "name", "addrs", "blob", "presence", "flags", "query_string", "expect"}
    ),
    "deregister": frozenset({"session", "name", "addrs", "flags", "expect"}),
    "delete": frozenset({"session", "name", "expect"}),
    "lookup": frozenset({"session", "name", "flags", "context", "buffer", "expect", "results"}),
    "begin": frozenset({"session", "handle", "name", "flags", "context", "expect"}),
    "next": frozenset({"handle", "flags", "buffer", "expect", "result"}),
    "end": frozenset({"handle", "expect"}),
}
_RESULT_FIELDS = frozenset({"name", "comment", "addrs", "flags", "version", "blob", "presence"})
_DEFAULT_LOOKUP_BUFFER = 1024
_DEFAULT_NEXT_BUFFER = 4096
#: A lookup step stops after this many results (a provider that never says WSA_E_NO_MORE).
MAX_RESULTS = 10_000
_DWORD_MAX = 0xFFFFFFFF
_FLAG_NAMES: dict[str, int] = {
    **{name: int(m) for name, m in LUP.__members__.items()},
    **{name: int(m) for name, m in RESULT_IS.__members__.items()},
    "SERVICE_MULTIPLE": SERVICE_MULTIPLE,
}


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names the file, case and step."""


class StartError(RuntimeError):
    """A target that could not be started (``usage``: it could not be found)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


# -- the format ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedResult:
    """A result a step expects (the test suite's check of a scenario file;
    ``nspv2 compare`` ignores expectations). None: the field must be absent."""

    name: str | None = None
    comment: str | None = None
    addrs: tuple[str, ...] = ()
    flags: int = 0
    version: int | None = None
    blob: bytes | None = None


@dataclass(frozen=True)
class Step:
    """One client call (or session event) of a case; ``number`` counts from 1."""

    number: int
    op: str
    session: str | None = None
    handle: str | None = None
    name: str | None = None
    addrs: tuple[str, ...] = ()
    blob: bytes | None = None
    flags: int = 0
    query_string: str | None = None
    context: str | None = None
    buffer: int = 0
    #: The code the step expects (None: not said).
    expect: int | None = None
    #: lookup: the results it expects; next: a one-element tuple, or () for none.
    results: tuple[ExpectedResult, ...] | None = None

    def text(self) -> str:
        """The step in one line, as the reports show it."""
        words = [self.op]
        if self.session is not None:
            words.append(self.session)
        if self.handle is not None:
            words.append(self.handle)
        if self.name is not None:
            words.append(self.name)
        if self.addrs:
            words.append("addrs=" + ",".join(self.addrs))
        if self.blob is not None:
            words.append(f"blob={self.blob.hex()}")
        if self.query_string is not None:
            words.append(f"query_string={self.query_string}")
        if self.context is not None:
            words.append(f"context={self.context}")
        if self.op in ("lookup", "begin", "next") or self.flags:
            words.append(f"flags={_flags_text(self.flags, self.op)}")
        if self.op in ("lookup", "next"):
            words.append(f"buffer={self.buffer}")
        return " ".join(words)


@dataclass(frozen=True)
class Case:
    title: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Scenario:
    title: str
    cases: tuple[Case, ...]
    source: str = "scenario"

    @property
    def step_count(self) -> int:
        return sum(len(c.steps) for c in self.cases)


def example_path(name: str) -> Path:
    """The scenario file shipped with nspv2 as ``name`` (``"email"``: the
    NS_EMAIL example's case table, ``nspv2/examples/scenarios/email.json``)."""
    folder = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
    path = folder / f"{name}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise ScenarioError(f"no scenario {name!r} is shipped (shipped: {shipped})")
    return path


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file (JSON)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{source}: not UTF-8 text ({exc.reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            f"{source}, line {exc.lineno} column {exc.colno}: not JSON: {exc.msg}"
        ) from None
    return parse_scenario(doc, source)


def parse_scenario(doc: Any, source: str = "scenario") -> Scenario:
    """Check a scenario document (parsed JSON) and return it as values."""
    if not isinstance(doc, dict):
        raise ScenarioError(f"{source}: a scenario is a JSON object, not {_kind(doc)}")
    unknown = set(doc) - {"format", "title", "note", "cases"}
    if unknown:
        raise ScenarioError(f"{source}: unknown field {sorted(unknown)[0]!r}")
    if doc.get("format") != FORMAT:
        raise ScenarioError(
            f'{source}: "format" must be {FORMAT} (this nspv2 reads format {FORMAT}), '
            f"not {json.dumps(doc.get('format'))}"
        )
    title = doc.get("title", "")
    if not isinstance(title, str):
        raise ScenarioError(f'{source}: "title" must be a string')
    cases = doc.get("cases")
    if not isinstance(cases, list) or not cases:
        raise ScenarioError(f'{source}: "cases" must be a non-empty list of cases')
    return Scenario(title, tuple(_parse_case(c, i, source) for i, c in enumerate(cases, 1)), source)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _parse_case(doc: Any, number: int, source: str) -> Case:
    where = f"{source}: case {number}"
    if not isinstance(doc, dict):
        raise ScenarioError(f'{where}: a case is an object with "title" and "steps"')
    title = doc.get("title", f"case {number}")
    if not isinstance(title, str):
        raise ScenarioError(f'{where}: "title" must be a string')
    where = f"{source}: case {number} ({title!r})"
    unknown = set(doc) - {"title", "note", "steps"}
    if unknown:
        raise ScenarioError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f'{where}: "steps" must be a non-empty list of steps')
    state = _State()
    return Case(
        title, tuple(_parse_step(s, i, f"{where}, step {i}", state) for i, s in enumerate(steps, 1))
    )


@dataclass
class _State:
    """Sessions open and handles begun so far, to refuse steps that use others."""

    open: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    handles: set[str] = field(default_factory=set)


def _parse_step(doc: Any, number: int, where: str, state: _State) -> Step:
    if not isinstance(doc, dict):
        raise ScenarioError(f'{where}: a step is an object with "op", not {_kind(doc)}')
    op = doc.get("op")
    if op not in OPS:
        raise ScenarioError(f'{where}: "op" must be one of {", ".join(OPS)}, not {json.dumps(op)}')
    where = f"{where} ({op})"
    unknown = set(doc) - _FIELDS[op] - {"op", "note"}
    if unknown:
        raise ScenarioError(
            f"{where}: unknown field {sorted(unknown)[0]!r} "
            f"({op} takes: {', '.join(sorted(_FIELDS[op]))})"
        )
    get = _Getter(doc, where)
    session = get.label("session") if op in _SESSION_OPS else None
    handle = get.label("handle") if op in _HANDLE_OPS else None
    name = get.text("name", required=True) if op in _NAME_OPS else None
    # sessions and handles must exist when used
    if session is not None:
        if op == "open":
            if session in state.open:
                raise ScenarioError(f"{where}: session {session!r} is already open")
            state.open.add(session)
            state.closed.discard(session)
        elif session not in state.open:
            said = "was closed before" if session in state.closed else "was never opened"
            raise ScenarioError(f"{where}: session {session!r} {said}")
        elif op in ("close", "abandon"):
            state.open.discard(session)
            state.closed.add(session)
    if handle is not None:
        if op == "begin":
            if handle in state.handles:
                raise ScenarioError(f"{where}: handle {handle!r} was begun before")
            state.handles.add(handle)
        elif handle not in state.handles:
            raise ScenarioError(f"{where}: handle {handle!r} was never begun")
    blob = get.blob()
    if op in ("lookup", "begin"):
        flags = get.flags("flags", int(LUP.LUP_RETURN_ALL))
    else:
        flags = get.flags("flags", 0)
    default_buffer = _DEFAULT_LOOKUP_BUFFER if op == "lookup" else _DEFAULT_NEXT_BUFFER
    buffer = get.dword("buffer", default_buffer) if op in ("lookup", "next") else 0
    results: tuple[ExpectedResult, ...] | None = None
    if "results" in doc:
        if not isinstance(doc["results"], list):
            raise ScenarioError(f'{where}: "results" must be a list of results')
        results = tuple(
            _parse_result(r, f"{where}, result {i}") for i, r in enumerate(doc["results"], 1)
        )
    if "result" in doc:
        one = doc["result"]
        results = () if one is None else (_parse_result(one, f"{where}, result"),)
    return Step(
        number,
        op,
        session,
        handle,
        name,
        get.addrs("addrs"),
        blob,
        flags,
        get.text("query_string"),
        get.text("context"),
        buffer,
        get.code("expect"),
        results,
    )


def _parse_result(doc: Any, where: str) -> ExpectedResult:
    if not isinstance(doc, dict):
        raise ScenarioError(f"{where}: a result is an object, not {_kind(doc)}")
    unknown = set(doc) - _RESULT_FIELDS
    if unknown:
        raise ScenarioError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    get = _Getter(doc, where)
    version = doc.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ScenarioError(f'{where}: "version" must be a number')
    return ExpectedResult(
        get.text("name"),
        get.text("comment"),
        get.addrs("addrs"),
        get.flags("flags", 0),
        version,
        get.blob(),
    )


_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")


class _Getter:
    """Typed reads of a step's fields, each error naming the step and field."""

    def __init__(self, doc: Mapping[str, Any], where: str) -> None:
        self.doc = doc
        self.where = where

    def _bad(self, key: str, what: str) -> ScenarioError:
        return ScenarioError(
            f"{self.where}: {key!r} must be {what}, not {json.dumps(self.doc[key])}"
        )

    def label(self, key: str) -> str:
        if key not in self.doc:
            raise ScenarioError(f"{self.where}: {key!r} is missing")
        value = self.doc[key]
        if not isinstance(value, str) or not _LABEL.match(value):
            raise self._bad(key, "a short label (letters, digits, _ . -)")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        if key not in self.doc or self.doc[key] is None:
            if required:
                raise ScenarioError(f"{self.where}: {key!r} is missing")
            return None
        value = self.doc[key]
        if not isinstance(value, str) or "\0" in value:
            raise self._bad(key, "a string without NUL")
        return value

    def dword(self, key: str, default: int) -> int:
        if key not in self.doc:
            return default
        value = self.doc[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _DWORD_MAX:
            raise self._bad(key, "a number of bytes from 0 to 4294967295")
        return value

    def flags(self, key: str, default: int) -> int:
        if key not in self.doc:
            return default
        value = self.doc[key]
        words = value if isinstance(value, list) else [value]
        total = 0
        for word in words:
            if isinstance(word, int) and not isinstance(word, bool) and 0 <= word <= _DWORD_MAX:
                total |= word
            elif isinstance(word, str) and word in _FLAG_NAMES:
                total |= _FLAG_NAMES[word]
            else:
                raise self._bad(
                    key,
                    "a flag name (LUP_..., RESULT_IS_..., SERVICE_MULTIPLE), a number, "
                    "or a list of them",
                )
        return total

    def code(self, key: str) -> int | None:
        if key not in self.doc:
            return None
        value = self.doc[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if value == "NO_ERROR":
            return NO_ERROR
        if isinstance(value, str) and value in WSAError.__members__:
            return int(WSAError[value])
        raise self._bad(key, "NO_ERROR, a WSAError name (WSAEINVAL, ...) or a number")

    def addrs(self, key: str) -> tuple[str, ...]:
        if key not in self.doc:
            return ()
        value = self.doc[key]
        if not isinstance(value, list):
            raise self._bad(key, 'a list of addresses ("192.0.2.1:5060", "[2001:db8::1]:5060")')
        for text in value:
            try:
                parse_address(text)
            except ValueError as exc:
                raise ScenarioError(f"{self.where}: {key!r}: {exc}") from None
        return tuple(value)

    def blob(self) -> bytes | None:
        has_blob, has_presence = "blob" in self.doc, "presence" in self.doc
        if has_blob and has_presence:
            raise ScenarioError(f'{self.where}: give "blob" or "presence", not both')
        if has_presence:
            value = self.doc["presence"]
            if not isinstance(value, str) or value not in MISTATUS.__members__:
                raise self._bad("presence", "a MISTATUS name (MISTATUS_ONLINE, ...)")
            from ..examples.email import encode_presence

            return encode_presence(MISTATUS[value])
        if has_blob:
            value = self.doc["blob"]
            if value is None:
                return None
            if not isinstance(value, str) or not _HEX.match(value):
                raise self._bad("blob", 'the blob\'s bytes in hex ("4e535050...")')
            return bytes.fromhex(value)
        return None


def parse_address(text: Any) -> SocketAddress:
    """``"192.0.2.1:5060"`` or ``"[2001:db8::1]:5060"``."""
    if not isinstance(text, str):
        raise ValueError(f"an address is a string, not {json.dumps(text)}")
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"{text!r} is not ADDRESS:PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{text!r}: unbalanced brackets")
    try:
        address = SocketAddress.parse(host.strip("[]"), int(port))
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IPv4 or IPv6 address") from None
    if address.address.version == 6 and not host.startswith("["):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets ([2001:db8::1]:5060)")
    return address


# -- names for the transcript ------------------------------------------------------------


def code_name(code: int) -> str:
    """``NO_ERROR``, a WSAError name, or the number."""
    if code == NO_ERROR:
        return "NO_ERROR"
    try:
        return WSAError(code).name
    except ValueError:
        return str(code)


def _flags_text(value: int, op: str = "lookup") -> str:
    kind: type[LUP] | type[RESULT_IS] = RESULT_IS if op == "result" else LUP
    if op in ("register", "deregister"):
        return "SERVICE_MULTIPLE" if value == SERVICE_MULTIPLE else hex(value)
    if value == 0:
        return "0"
    if kind is LUP and value & int(LUP.LUP_RETURN_ALL) == int(LUP.LUP_RETURN_ALL):
        names, rest = ["LUP_RETURN_ALL"], value & ~int(LUP.LUP_RETURN_ALL)
    else:
        names, rest = [], value
    for member in kind:
        bit = int(member)
        if member.name and bit & (bit - 1) == 0 and rest & bit:
            names.append(member.name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def _enum_name(kind: Any, value: int) -> str:
    try:
        return str(kind(value).name)
    except ValueError:
        return str(value)


def _addr_text(addr: CsAddr) -> str:
    text = str(addr.remote) if addr.remote is not None else "-"
    extra = []
    if addr.local is not None:
        extra.append(f"local {addr.local}")
    if addr.socket_type != SOCK.SOCK_STREAM:
        extra.append(_enum_name(SOCK, addr.socket_type))
    if addr.protocol != IPPROTO.IPPROTO_TCP:
        extra.append(_enum_name(IPPROTO, addr.protocol))
    return f"{text} ({', '.join(extra)})" if extra else text


def result_record(q: QuerySet, own_id: uuid.UUID | None) -> dict[str, Any]:
    """A result's fields as the transcript keeps them (absent fields left out;
    the provider's own id as ``"own"``)."""
    out: dict[str, Any] = {}
    if q.service_instance_name is not None:
        out["name"] = q.service_instance_name
    if q.version is not None:
        out["version"] = q.version.version
        if q.version.how != WSAECOMPARATOR.COMP_EQUAL:
            out["version_how"] = _enum_name(WSAECOMPARATOR, q.version.how)
    if q.comment is not None:
        out["comment"] = q.comment
    out["namespace"] = _enum_name(NS, q.namespace)
    if q.provider_id is not None:
        out["provider"] = "own" if q.provider_id == own_id else str(q.provider_id)
    if q.service_class_id is not None:
        out["service_class"] = str(q.service_class_id)
    if q.context is not None:
        out["context"] = q.context
    if q.protocols:
        out["protocols"] = [
            f"{_enum_name(AF, p.family)}/{_enum_name(IPPROTO, p.protocol)}" for p in q.protocols
        ]
    if q.query_string is not None:
        out["query_string"] = q.query_string
    if q.cs_addrs:
        out["addrs"] = [_addr_text(a) for a in q.cs_addrs]
    out["flags"] = _flags_text(q.output_flags, "result")
    if q.blob is not None:
        out["blob"] = q.blob.hex()
    return out


def ends_text(ends: Mapping[str, int]) -> str:
    """``Cleanup``, ``Rundown``, ``none``, or counts (``2 Cleanup, 1 Rundown``)."""
    cleanup, rundown = ends.get("cleanup", 0), ends.get("rundown", 0)
    if (cleanup, rundown) == (0, 0):
        return "none"
    parts = []
    for count, what in ((cleanup, "Cleanup"), (rundown, "Rundown")):
        if count:
            parts.append(what if count == 1 else f"{count} {what}")
    return ", ".join(parts)


# -- targets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a scenario runs against.

    ``kind``: ``"python"`` (``spec`` is MODULE:CLASS or a .py file, as
    ``nspv2 check`` takes it), ``"native"`` (``spec`` is the library's path,
    ``entry`` its entry point) or ``"builtin"`` (``spec`` ``"reference"``:
    the C reference provider compiled into the host library).
    """

    kind: str
    spec: str
    entry: str = "main"

    @property
    def label(self) -> str:
        if self.kind == "native":
            return f"native {self.spec}:{self.entry}"
        if self.kind == "builtin":
            return f"builtin {self.spec}"
        return self.spec

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "spec": self.spec, "entry": self.entry}


_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_target(text: str, native: bool) -> Target:
    """``MODULE:CLASS`` (Python) or ``LIB[:ENTRY]`` (native; default entry ``main``)."""
    if not native:
        return Target("python", text)
    lib, colon, entry = text.rpartition(":")
    if colon and lib and _ENTRY.match(entry):
        return Target("native", lib, entry)
    return Target("native", text)


class _Started:
    """A target running on a host: its id, namespace, and how to stop it."""

    def __init__(self, target: Target, host: Host) -> None:
        self.host = host
        self.native: Any = None
        if target.kind == "python":
            from .check import CheckError, load_provider_class

            cls = load_provider_class(target.spec)
            try:
                provider = cls()
            except Exception as exc:
                raise CheckError(
                    f"{cls.__name__}() raised {type(exc).__name__}: {exc}", usage=False
                ) from exc
            entry = host.advertise(provider)
            self.provider_id = entry.provider_id
            self.namespace = entry.namespace
        elif target.kind == "native":
            from ..host.native_provider import NativeProvider

            self.native = NativeProvider.load(target.spec, target.entry)
            table = self.native.tables[0]
            self.provider_id = table.provider_id
            self.namespace = table.namespace
        elif target.kind == "builtin" and target.spec == "reference":
            host.winsock.library.nspv2_ref_provider_reset()
            self.provider_id = host.advertise_reference_provider()
            self.namespace = int(NS.NS_EMAIL)
        else:
            raise ValueError(f"unknown target {target}")

    def stop(self) -> None:
        if self.native is not None:
            self.native.close()
        else:
            self.host.unadvertise(self.provider_id)


# -- running -----------------------------------------------------------------------------

_ENDS = ("cleanups", "rundowns")
# What the host counts of a provider's misdeeds (present in its stats or not).
_HOST_NOTICED = ("provider_faults", "late_completions", "double_completions", "missing_last_error")


class _Runner:
    def __init__(self, host: Host, started: _Started) -> None:
        self.host = host
        self.started = started
        self.pid = started.provider_id
        self.sessions: dict[str, ClientSession] = {}
        self.handles: dict[str, int] = {}

    def query(self, name: str | None, **fields: Any) -> QuerySet:
        return QuerySet(name, namespace=self.started.namespace, provider_id=self.pid, **fields)

    def set_service(self, step: Step, op: WSAESETSERVICEOP, qs: QuerySet) -> dict[str, Any]:
        assert step.session is not None
        try:
            self.host.set_service(self.sessions[step.session], qs, op, step.flags)
            return {"code": "NO_ERROR"}
        except WinsockError as exc:
            return {"code": code_name(exc.code)}

    def addrs(self, step: Step) -> tuple[CsAddr, ...]:
        return tuple(CsAddr(None, parse_address(a)) for a in step.addrs)

    def play(self, step: Step) -> dict[str, Any]:
        op = step.op
        if op == "open":
            assert step.session is not None
            self.sessions[step.session] = self.host.open_session()
            return {}
        if op in ("close", "abandon"):
            assert step.session is not None
            session = self.sessions.pop(step.session)
            try:
                session.close() if op == "close" else session.abandon()
                return {"code": "NO_ERROR"}
            except WinsockError as exc:
                return {"code": code_name(exc.code)}
        if op == "register":
            qs = self.query(
                step.name, cs_addrs=self.addrs(step), blob=step.blob, query_string=step.query_string
            )
            return self.set_service(step, WSAESETSERVICEOP.RNRSERVICE_REGISTER, qs)
        if op == "deregister":
            qs = self.query(step.name, cs_addrs=self.addrs(step))
            return self.set_service(step, WSAESETSERVICEOP.RNRSERVICE_DEREGISTER, qs)
        if op == "delete":
            return self.set_service(step, WSAESETSERVICEOP.RNRSERVICE_DELETE, self.query(step.name))
        if op == "lookup":
            return self.lookup(step)
        if op == "begin":
            assert step.session is not None and step.handle is not None
            try:
                self.handles[step.handle] = self.host.lookup_begin(
                    self.sessions[step.session],
                    self.query(step.name, context=step.context),
                    step.flags,
                )
                return {"code": "NO_ERROR"}
            except WinsockError as exc:
                self.handles[step.handle] = 0  # a later next/end passes a NULL handle
                return {"code": code_name(exc.code)}
        if op == "next":
            assert step.handle is not None
            res = self.host.lookup_next(self.handles[step.handle], step.flags, step.buffer)
            saw: dict[str, Any] = {"code": code_name(res.code)}
            if res.code == int(WSAError.WSAEFAULT):
                saw["asked"] = res.buffer_length
            if res.result is not None:
                saw["result"] = result_record(res.result, self.pid)
            return saw
        if op == "end":
            assert step.handle is not None
            try:
                self.host.lookup_end(self.handles[step.handle])
                return {"code": "NO_ERROR"}
            except WinsockError as exc:
                return {"code": code_name(exc.code)}
        raise AssertionError(op)  # pragma: no cover

    def lookup(self, step: Step) -> dict[str, Any]:
        """Begin, NextEx until WSA_E_NO_MORE (growing the buffer to the size
        asked on WSAEFAULT, each asked size recorded), End."""
        assert step.session is not None
        try:
            handle = self.host.lookup_begin(
                self.sessions[step.session], self.query(step.name, context=step.context), step.flags
            )
        except WinsockError as exc:
            return {"code": code_name(exc.code), "results": []}
        results: list[dict[str, Any]] = []
        asked: list[int] = []
        code = NO_ERROR
        size = step.buffer
        while len(results) < MAX_RESULTS:
            res = self.host.lookup_next(handle, step.flags, size)
            if res.code == int(WSAError.WSAEFAULT):
                asked.append(res.buffer_length)
                if res.buffer_length <= size:  # asks for no more room: stop there
                    code = res.code
                    break
                size = res.buffer_length
                continue
            if res.code != NO_ERROR:
                code = NO_ERROR if res.code == int(WSAError.WSA_E_NO_MORE) else res.code
                break
            assert res.result is not None
            results.append(result_record(res.result, self.pid))
        else:
            code = -1
        saw: dict[str, Any] = {"code": code_name(code), "results": results}
        if code == -1:
            saw["code"] = f"more than {MAX_RESULTS} results"
        if asked:
            saw["asked"] = asked
        try:
            self.host.lookup_end(handle)
        except WinsockError as exc:
            saw["end"] = code_name(exc.code)
        return saw


def run_case(
    target: Target,
    case: Case,
    record: Callable[[dict[str, Any]], None],
    *,
    timeout_ms: int = 5000,
    started: Callable[[], None] | None = None,
) -> None:
    """Play ``case`` against a fresh ``target`` on the native host; call
    ``record`` with each step's record as soon as it is known (a crash later
    keeps what came before), then with the teardown's.

    Each record: ``{"step": N, "do": step text, "saw": {...}}``; the
    teardown's ``step`` is ``"teardown"``. ``started`` is called once the
    target has started (advertised), before the first step. A target that cannot start raises
    :class:`StartError` (``usage`` when a Python target cannot be found).
    """
    from ..host.host import Host
    from .private_catalog import private_catalog

    with private_catalog():
        _run_case(Host(timeout_ms=timeout_ms, auto_install=True), target, case, record, started)


def _run_case(
    host: Host,
    target: Target,
    case: Case,
    record: Callable[[dict[str, Any]], None],
    started: Callable[[], None] | None,
) -> None:
    from .check import CheckError

    try:
        try:
            running = _Started(target, host)
        except CheckError as exc:
            raise StartError(str(exc), usage=exc.usage) from exc
        except Exception as exc:
            raise StartError(f"{type(exc).__name__}: {exc}") from exc
        if started is not None:
            started()
        runner = _Runner(host, running)
        first = host.stats()
        for step in case.steps:
            before = host.stats()
            saw = runner.play(step)
            ends = _delta(before, host.stats(), _ENDS)
            if step.op in ("close", "abandon") or any(ends.values()):
                saw["ends"] = ends_text(_ends(ends))
            record({"step": step.number, "do": step.text(), "saw": saw})
        before = host.stats()
        running.stop()
        after = host.stats()
        saw = {"ends": ends_text(_ends(_delta(before, after, _ENDS)))}
        # what the host counted against the provider during the whole case
        noticed = {k: v for k, v in _delta(first, after, _HOST_NOTICED).items() if v}
        if noticed:
            saw["host"] = noticed
        still = sorted(runner.sessions)
        record({"step": "teardown", "do": _teardown_text(still), "saw": saw})
    finally:
        host.close()


def _teardown_text(still_open: list[str]) -> str:
    if not still_open:
        return "teardown: stop the provider"
    return "teardown: stop the provider with sessions " + ", ".join(still_open) + " open"


def _delta(
    before: Mapping[str, int], after: Mapping[str, int], keys: tuple[str, ...]
) -> dict[str, int]:
    return {k: after[k] - before[k] for k in keys if k in after and k in before}


def _ends(delta: Mapping[str, int]) -> dict[str, int]:
    return {"cleanup": delta.get("cleanups", 0), "rundown": delta.get("rundowns", 0)}
