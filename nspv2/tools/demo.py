"""The main job: the NS_EMAIL presence directory on the embedded native host.

``python -m nspv2 demo`` advertises :class:`~nspv2.examples.email.EmailDirectory`
on nspv2's native host, plays three clients against it, and prints what each
entry point did: a timeline (entry point, session, result code and name),
the directory, and how each session ended.

``nspv2 lookup``, ``register`` and ``signout`` are client processes of a
running provider process (``nspv2 serve``): each opens one client session
with :class:`nspv2.Client` (docs/serve.md says how the server is found).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..client import Client, ConnectionLost, ServerNotFound
from ..client.discovery import ENV_SOCKET, NO_SERVER, live_servers
from ..client.errors import WSAECONNRESET
from ..client.winsock_client import WinsockClient
from ..examples.email import EmailDirectory, encode_presence
from ..host.host import ClientSession, Host
from ..host.native import NativeHostUnavailable
from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..provider.registry import Lookup
from ..provider.routine import SLOT_OF, code_for_exception
from ..sdk.msgrua import MISTATUS
from ..sdk.winsock2 import (
    LUP,
    NO_ERROR,
    RESULT_IS,
    SERVICE_MULTIPLE,
    WSAESETSERVICEOP,
    WSAQUERYSET2W,
    WSAQUERYSETW,
    WSAError,
    code_name,
    error_meaning,
)
from .common import DWORD_MAX, EXIT_OK, EXIT_PROBLEMS, add_json, emit_json, fail
from .private_catalog import private_catalog

if TYPE_CHECKING:
    from .common import SubParsers

__all__ = [
    "SEED",
    "DemoEvent",
    "DemoReport",
    "add_commands",
    "print_demo",
    "run_demo",
    "seeded_directory",
]

#: The users the demo starts from.
SEED: tuple[tuple[str, MISTATUS, tuple[str, ...]], ...] = (
    ("alice@example.com", MISTATUS.MISTATUS_AWAY, ("192.0.2.10:5060", "[2001:db8::10]:5060")),
    ("bob@example.com", MISTATUS.MISTATUS_ONLINE, ("192.0.2.11:5060",)),
    ("carol@example.org", MISTATUS.MISTATUS_BUSY, ("198.51.100.12:5061",)),
)


_PORT_MAX = 0xFFFF


def cs_addr(text: str) -> CsAddr:
    """``192.0.2.1:5060`` or ``[2001:db8::1]:5060`` as a remote CS address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r} is not ADDRESS:PORT")
    if int(port) > _PORT_MAX:
        raise ValueError(f"port {port} is out of range (0 to {_PORT_MAX})")
    return CsAddr(None, SocketAddress.parse(host.strip("[]"), int(port)))


@dataclass
class DemoEvent:
    step: str
    slot: str
    session: str
    code: int
    detail: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "entry_point": self.slot,
            "session": self.session,
            "code": self.code,
            "code_name": code_name(self.code),
            "detail": self.detail,
        }


@dataclass
class DemoReport:
    steps: list[str] = field(default_factory=list)
    events: list[DemoEvent] = field(default_factory=list)
    directory: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    client_results: list[str] = field(default_factory=list)


class _Recorder:
    def __init__(self) -> None:
        self.labels: dict[int, str] = {}
        self.report = DemoReport()
        self.step = ""
        self.start = time.monotonic()
        #: The sizes the provider asked for with WSAEFAULT, in order.
        self.asked: list[int] = []

    def label(self, token: int | None) -> str:
        if not token:
            return "-"
        if token not in self.labels:
            self.labels[token] = f"S{len(self.labels) + 1}"
        return self.labels[token]

    def __call__(self, slot: str, token: int | None, code: int, detail: str) -> None:
        self.report.events.append(
            DemoEvent(
                self.step, slot, self.label(token), code, detail, time.monotonic() - self.start
            )
        )

    def begin(self, text: str) -> None:
        self.step = text
        self.report.steps.append(text)


#: What the client's buffer needs beyond what the provider asked for: the host
#: hands the provider a WSAQUERYSET2W to fill and the client a WSAQUERYSETW,
#: whose header is longer (NSPV2_QS_DELTA in nspv2_host.h; docs/host.md).
QS_DELTA = ctypes.sizeof(WSAQUERYSETW) - ctypes.sizeof(WSAQUERYSET2W)


class _ObservedDirectory(EmailDirectory):
    """The example with every entry point reported to a recorder.

    The slots the scaffold installs are wrapped (:meth:`_slot_callables`);
    NextEx reports from ``_produce``, where its outcome is known (it
    completes through WSAProviderCompleteAsyncCall, not a return value).
    """

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def _slot_callables(self) -> dict[str, Callable[..., Any]]:
        slots = super()._slot_callables()
        return {key: fn if key == "next_ex" else self._wrap(key, fn) for key, fn in slots.items()}

    def _describe(self, key: str, args: tuple[Any, ...]) -> tuple[int | None, str]:
        if key == "startup":
            return None, ""
        if key in ("cleanup", "client_session_rundown"):
            return args[1], ""
        if key == "end":
            lookup = self.registry.lookup(args[0])
            return (lookup.session.token if lookup else None), ""
        query_at, token = (args[1], args[3]) if key == "begin" else (args[2], args[5])
        try:
            name = QuerySet.from_address(query_at).service_instance_name
        except WinsockError:
            name = "(malformed query set)"
        if key == "set_service_ex":
            try:
                op = WSAESETSERVICEOP(args[3]).name
            except ValueError:
                op = str(args[3])
            return token, f"{op} {name}"
        return token, str(name)

    def _wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        slot = SLOT_OF[key]

        def wrapper(*args: Any) -> Any:
            token, detail = self._describe(key, args)
            try:
                result = fn(*args)
            except BaseException as exc:
                self._recorder(slot, token, code_for_exception(exc), detail)
                raise
            if key == "startup" and args[1]:
                token = ctypes.c_void_p.from_address(args[1]).value
            self._recorder(slot, token, result if isinstance(result, int) else NO_ERROR, detail)
            return result

        return wrapper

    def _produce(
        self, lookup: Lookup, flags: int, p_length: int | None, p_results: int | None
    ) -> int:
        slot, token = SLOT_OF["next_ex"], lookup.session.token
        try:
            code = super()._produce(lookup, flags, p_length, p_results)
        except BaseException as exc:
            self._recorder(slot, token, code_for_exception(exc), "")
            raise
        detail = ""
        if code == WSAError.WSAEFAULT and p_length:
            asked = ctypes.c_uint32.from_address(p_length).value
            self._recorder.asked.append(asked)
            detail = f"needs {asked} bytes"
        elif code == NO_ERROR and p_results:
            packed = QuerySet.from_address(p_results)
            detail = f"{packed.service_instance_name} {packed.comment or ''}".strip()
        self._recorder(slot, token, code, detail)
        return code


def seeded_directory(
    host: Host, recorder: _Recorder | None = None
) -> tuple[EmailDirectory, list[ClientSession]]:
    """Advertise the example and sign the SEED users in, one client each."""
    directory = EmailDirectory() if recorder is None else _ObservedDirectory(recorder)
    host.advertise(directory)
    clients: list[ClientSession] = []
    for name, status, addrs in SEED:
        if recorder is not None:
            recorder.begin(f"client {len(clients) + 1} signs in {name} as {status.name}")
        client = host.open_session()
        client.set_service(
            QuerySet(name, cs_addrs=tuple(cs_addr(a) for a in addrs), blob=encode_presence(status)),
            WSAESETSERVICEOP.RNRSERVICE_REGISTER,
        )
        clients.append(client)
    return directory, clients


def run_demo() -> DemoReport:
    """Play the demo; return what happened."""
    rec = _Recorder()
    report = rec.report
    with private_catalog(), Host(auto_install=True) as host:
        directory, (c1, c2, c3) = seeded_directory(host, rec)

        rec.begin("client 2 looks up alice@example.com")
        for q in c2.lookup("alice@example.com"):
            report.client_results.append(
                f"{q.service_instance_name}: {q.comment}, {len(q.cs_addrs)} address(es)"
            )

        rec.begin("client 1 looks up *@example.com (wildcard, one result per NextEx)")
        for q in c1.lookup("*@example.com"):
            report.client_results.append(f"{q.service_instance_name}: {q.comment}")

        rec.begin("client 2 looks up bob@example.com with a 64-byte buffer, then grows it")
        handle = host.lookup_begin(c2, "bob@example.com", LUP.LUP_RETURN_ALL)
        first = host.lookup_next(handle, 0, 64)
        report.client_results.append(
            f"64 bytes: {code_name(first.code)}, needs {first.buffer_length}"
        )
        if rec.asked:
            report.client_results.append(
                f"  ({first.buffer_length} = the {rec.asked[-1]} bytes the provider asked for"
                f" + NSPV2_QS_DELTA {QS_DELTA}: the client's WSAQUERYSETW header is {QS_DELTA}"
                " bytes longer than the WSAQUERYSET2W the provider fills)"
            )
        second = host.lookup_next(handle, 0, first.buffer_length)
        report.client_results.append(f"{first.buffer_length} bytes: {code_name(second.code)}")
        host.lookup_next(handle, 0, first.buffer_length)
        host.lookup_end(handle)

        rec.begin("client 2 signs bob@example.com out (IMessenger::Signout)")
        c2.set_service(QuerySet("bob@example.com"), WSAESETSERVICEOP.RNRSERVICE_DELETE)

        rec.begin("client 2 signs bob@example.com out again")
        try:
            c2.set_service(QuerySet("bob@example.com"), WSAESETSERVICEOP.RNRSERVICE_DELETE)
        except WinsockError as exc:
            report.client_results.append(
                f"second sign-out: {code_name(exc.code)} (MSGR_E_NOT_LOGGED_ON)"
            )

        rec.begin("client 1 looks up nobody@example.com")
        try:
            c1.lookup("nobody@example.com")
        except WinsockError as exc:
            report.client_results.append(f"nobody@example.com: {code_name(exc.code)}")

        rec.begin("client 3 dies without closing (rundown)")
        c3.abandon()

        report.directory = [
            {
                "name": e.name,
                "presence": e.status.name,
                "addresses": [str(a.remote) for a in e.addresses],
                "version": e.version,
                "session": rec.label(e.owner),
            }
            for e in directory.entries()
        ]

        rec.begin("clients 1 and 2 close")
        c1.close()
        c2.close()

        for session in sorted(directory.registry.ended, key=lambda s: rec.label(s.token)):
            report.sessions.append(
                {
                    "session": rec.label(session.token),
                    "ended_by": session.ended_by.value if session.ended_by else "?",
                    "end_reason": session.end_reason.name if session.end_reason else "normal",
                    "signed_out": session.data.get("signed_out", []),
                }
            )
    return report


def print_demo(report: DemoReport, out: TextIO, *, timestamps: bool = False) -> None:
    w = out.write
    w("nspv2 demo: an NS_EMAIL presence directory (Python) on nspv2's native host (C)\n")
    w("Each line is one NSPv2 entry point the host called, in the provider's session.\n")
    step = None
    n = 0
    for ev in report.events:
        if ev.step != step:
            step = ev.step
            w(f"\n{step}\n")
        n += 1
        stamp = f"{ev.at * 1000:9.3f} ms  " if timestamps else ""
        detail = f"  {ev.detail}" if ev.detail else ""
        if ev.slot == "NSPv2ClientSessionRundown":
            result = f"{'':>5} (VOID)"
        else:
            result = f"{ev.code:>5} {code_name(ev.code)}"
        w(f"  {stamp}{n:3d}  {ev.session:<3} {ev.slot:<27} {result:<28}{detail}".rstrip() + "\n")
    w("\nWhat the clients saw\n")
    for line in report.client_results:
        w(f"  {line}\n")
    w("\nThe directory before clients 1 and 2 leave\n")
    w(f"  {'name':<20} {'presence':<24} {'ver':>3}  {'session':<7} addresses\n")
    for e in report.directory:
        w(
            f"  {e['name']:<20} {e['presence']:<24} {e['version']:>3}  {e['session']:<7} {', '.join(e['addresses'])}\n"
        )
    w("\nEnded sessions\n")
    w(f"  {'session':<7} {'ended by':<27} {'reason':<55} signed out\n")
    for s in report.sessions:
        w(
            f"  {s['session']:<7} {s['ended_by']:<27} {s['end_reason']:<55} {', '.join(s['signed_out']) or '-'}\n"
        )


# ---- commands: demo, lookup, register, signout -------------------------------------


def parse_flags(text: str) -> int:
    """LUP flags: a number (0x0ff0) or names joined by ',' or '|' (RETURN_ALL)."""
    text = text.strip()
    try:
        value = int(text, 0)
    except ValueError:
        pass
    else:
        if not 0 <= value <= DWORD_MAX:
            raise argparse.ArgumentTypeError(f"flags {text} are out of range (0 to {DWORD_MAX:#x})")
        return value
    value = 0
    for part in text.replace("|", ",").split(","):
        name = part.strip().upper()
        if not name.startswith("LUP_"):
            name = "LUP_" + name
        if name not in LUP.__members__:
            choices = ", ".join(n[4:] for n in LUP.__members__)
            raise argparse.ArgumentTypeError(f"unknown flag {part.strip()!r}; flags are {choices}")
        value |= int(LUP[name])
    return value


def _status(text: str) -> MISTATUS:
    name = text.strip().upper()
    if not name.startswith("MISTATUS_"):
        name = "MISTATUS_" + name
    if name not in MISTATUS.__members__:
        choices = ", ".join(n[9:] for n in MISTATUS.__members__)
        raise argparse.ArgumentTypeError(f"unknown presence {text!r}; choose from {choices}")
    return MISTATUS[name]


def _address(text: str) -> str:
    try:
        cs_addr(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ADDRESS:PORT (e.g. 192.0.2.1:5060): {exc}"
        ) from exc
    return text


def _qs_dict(q: QuerySet) -> dict[str, Any]:
    return {
        "name": q.service_instance_name,
        "comment": q.comment,
        "namespace": int(q.namespace),
        "provider_id": str(q.provider_id) if q.provider_id else None,
        "version": q.version.version if q.version else None,
        "output_flags": int(q.output_flags),
        "addresses": [str(c.remote or c.local) for c in q.cs_addrs],
        "blob": q.blob.hex() if q.blob is not None else None,
    }


def _print_results(results: list[QuerySet], as_json: bool) -> None:
    if as_json:
        emit_json([_qs_dict(q) for q in results])
        return
    for q in results:
        d = _qs_dict(q)
        flags = ", ".join(f.name or "" for f in RESULT_IS if q.output_flags & f) or "0"
        print(f"{d['name'] or '(no name)'}")
        print(f"  presence  {d['comment'] or '-'}")
        print(f"  addresses {', '.join(d['addresses']) or '-'}")
        print(f"  version   {d['version'] if d['version'] is not None else '-'}   flags {flags}")
        if q.blob is not None:
            print(f"  blob      {q.blob.hex()}")


def cmd_demo(args: argparse.Namespace) -> int:
    report = run_demo()
    if args.json:
        emit_json(
            {
                "timeline": [e.as_dict() for e in report.events],
                "client_results": report.client_results,
                "directory": report.directory,
                "sessions": report.sessions,
            }
        )
    else:
        print_demo(report, sys.stdout, timestamps=args.timestamps)
    return EXIT_OK


# ---- lookup, register, signout: a client process of a running provider process ----


def _connect(args: argparse.Namespace) -> Client | int:
    """A client session of the provider process (``--socket``, else
    NSPV2_SOCKET, else the one serving: docs/serve.md), or the exit code
    after saying why there is none to talk to."""
    try:
        return Client(socket=args.socket)
    except ServerNotFound as exc:
        return fail(args, f"nspv2 {args.command}: {exc.message}", EXIT_PROBLEMS, code=exc.code)
    except WinsockError as exc:  # refused (ERROR frame), or the connection broke
        return _failed(args, f"nspv2 {args.command}: connecting", exc)


def _failed(args: argparse.Namespace, what: str, exc: WinsockError) -> int:
    text = f"{what}: {exc.name} ({exc.code})"
    if isinstance(exc, ConnectionLost) and exc.message:
        text += f": {exc.message}"
    elif exc.message and ": " in exc.message:  # WinsockClient: the library's explanation
        why = exc.message.split(": ", 1)[1]
        # the code alone says it: the provider answered with it, or every
        # provider's Begin failed with it (the route's WSASERVICE_NOT_FOUND)
        if not why.endswith((_PROVIDERS_ANSWER, f"its Begin failed with error {exc.code}")):
            text += f": {why}"
    return fail(args, text, EXIT_PROBLEMS, code=exc.code)


def cmd_lookup(args: argparse.Namespace) -> int:
    if args.socket is None and not os.environ.get(ENV_SOCKET):
        return _routed_lookup(args)
    client = _connect(args)
    if isinstance(client, int):
        return client
    with client:
        try:
            results = client.lookup(QuerySet(args.name), args.flags)
        except WinsockError as exc:
            return _failed(args, args.name, exc)
    _print_results(results, args.json)
    return EXIT_OK


_NOT_FOUND = int(WSAError.WSASERVICE_NOT_FOUND)
#: The client library's explanation when the code is the provider's own answer.
_PROVIDERS_ANSWER = "the provider process answered with this error"


def _routed_lookup(args: argparse.Namespace) -> int:
    """``nspv2 lookup`` without --socket or NSPV2_SOCKET: the Winsock client
    calls (WinsockClient: the C client library here, ws2_32.dll on Windows),
    which route the query through the catalog to the matching providers of
    every provider process serving (docs/client-c.md)."""
    try:
        if sys.platform != "win32" and not live_servers():
            return fail(args, f"nspv2 lookup: {NO_SERVER}", EXIT_PROBLEMS, code=_NOT_FOUND)
        winsock = WinsockClient()
    except ServerNotFound as exc:  # the runtime folder refused
        return fail(args, f"nspv2 lookup: {exc.message}", EXIT_PROBLEMS, code=exc.code)
    except NativeHostUnavailable as exc:
        return fail(args, f"nspv2 lookup: {exc}", EXIT_PROBLEMS)
    try:
        with winsock:
            results = winsock.lookup(args.name, flags=args.flags)
    except WinsockError as exc:
        return _failed(args, args.name, exc)
    _print_results(results, args.json)
    return EXIT_OK


class _Hold:
    """SIGINT and SIGTERM end the wait of ``register`` (restored after)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        self.signal = signum
        self.event.set()

    def __enter__(self) -> _Hold:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


#: While ``register`` holds its session it waits on its connection
#: (Client.wait_closed: nothing is sent) this long at a time, then looks
#: whether SIGINT/SIGTERM came.
HOLD_SLICE_SECONDS = 0.2


def cmd_register(args: argparse.Namespace) -> int:
    reg = QuerySet(
        args.name,
        cs_addrs=tuple(cs_addr(a) for a in args.addr),
        blob=encode_presence(args.status),
    )
    client = _connect(args)
    if isinstance(client, int):
        return client
    with client:
        try:
            client.set_service(
                reg, WSAESETSERVICEOP.RNRSERVICE_REGISTER, SERVICE_MULTIPLE if args.multiple else 0
            )
            results = client.lookup(QuerySet(args.name))
        except WinsockError as exc:
            return _failed(args, f"register {args.name}", exc)
        _print_results(results, args.json)
        sys.stdout.flush()  # the entry shows now, also when stdout is a file or a pipe
        if args.once:
            return EXIT_OK
        # The name stays signed in while this session is open (the email
        # example signs a session's names out when it ends).
        note = sys.stderr if args.json else sys.stdout
        pid = client.server_pid
        with _Hold() as hold:  # before the line below: a signal it prompts finds the handler
            print(
                f"{args.name} is signed in while this client session is open "
                f"(provider process {pid}); Ctrl-C or SIGTERM signs it out",
                file=note,
                flush=True,
            )
            while not hold.event.is_set():
                if client.wait_closed(HOLD_SLICE_SECONDS):  # the provider process went
                    return fail(
                        args,
                        f"nspv2 register: provider process {pid} closed the connection; "
                        f"{args.name} is no longer signed in",
                        EXIT_PROBLEMS,
                        code=WSAECONNRESET,
                    )
            try:
                client.close()  # GOODBYE: NSPv2Cleanup, the example signs the name out
            except WinsockError as exc:
                return _failed(args, f"register {args.name}: closing", exc)
        how = signal.Signals(hold.signal).name if hold.signal else "a signal"
        print(
            f"{how}: client session closed (NSPv2Cleanup); {args.name} signed out",
            file=note,
            flush=True,
        )
    return EXIT_OK


#: What the email example's answers to RNRSERVICE_DELETE mean.
_SIGNOUT_MEANING = {
    NO_ERROR: "signed out",
    int(WSAError.WSAEACCES): "SR_NOT_INVITER: another client session signed it in, and only "
    "that session may sign it out",
    int(WSAError.WSASERVICE_NOT_FOUND): "SR_APP_NOT_REGISTERED: it is not signed in",
}


def cmd_signout(args: argparse.Namespace) -> int:
    client = _connect(args)
    if isinstance(client, int):
        return client
    with client:
        try:
            client.set_service(QuerySet(args.name), WSAESETSERVICEOP.RNRSERVICE_DELETE)
            code = NO_ERROR
        except ConnectionLost as exc:
            return _failed(args, f"signout {args.name}", exc)
        except WinsockError as exc:
            code = exc.code
    meaning = _SIGNOUT_MEANING.get(code, error_meaning(code))
    if args.json:
        emit_json(
            {"name": args.name, "code": code, "code_name": code_name(code), "meaning": meaning}
        )
    else:
        print(f"{args.name}: {code_name(code)} ({code}): {meaning}")
    return EXIT_OK if code == NO_ERROR else EXIT_PROBLEMS


def _add_socket(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the provider process's socket (default: $NSPV2_SOCKET, else the one "
        "provider process serving in the runtime folder; see docs/serve.md)",
    )


def add_commands(sub: SubParsers) -> None:
    p_demo = sub.add_parser(
        "demo",
        help="run the NS_EMAIL example on the embedded native host and show what happens",
        description="Advertise the NS_EMAIL presence directory on nspv2's native host, play "
        "three clients against it, and print a timeline of entry points, the directory and "
        "how each session ended.",
    )
    add_json(p_demo, "the report")
    p_demo.add_argument("--timestamps", action="store_true", help="show when each call ran")
    p_demo.set_defaults(func=cmd_demo)

    served = (
        " It is a client process of a running provider process (nspv2 serve MODULE:CLASS, "
        "e.g. nspv2.examples.email:EmailDirectory): --socket PATH, else $NSPV2_SOCKET, else "
        "the one serving; with none, it says how to start one and exits 1."
    )
    p_lookup = sub.add_parser(
        "lookup",
        help="look a name up in the provider processes serving",
        description="Look up NAME (an address or *@domain) in a client session of its own "
        "(WSALookupServiceBegin/Next/End), then close it. Without --socket or $NSPV2_SOCKET "
        "it makes Winsock's client calls (the C client library; ws2_32.dll on Windows), "
        "which route the query through the namespace catalog to the matching providers of "
        "every provider process serving (nspv2 serve MODULE:CLASS, after nspv2 install "
        "MODULE:CLASS); with none serving it says how to start one and exits 1. With "
        "--socket PATH or $NSPV2_SOCKET it asks that provider process only.",
    )
    p_lookup.add_argument("name", metavar="NAME")
    p_lookup.add_argument(
        "--flags",
        type=parse_flags,
        default=int(LUP.LUP_RETURN_ALL),
        help="LUP flags: names like RETURN_NAME,RETURN_COMMENT or a number (default RETURN_ALL)",
    )
    _add_socket(p_lookup)
    add_json(p_lookup)
    p_lookup.set_defaults(func=cmd_lookup)

    p_register = sub.add_parser(
        "register",
        help="sign a name in and stay signed in until Ctrl-C (a presence client)",
        description="Sign NAME in (RNRSERVICE_REGISTER), show the entry, then hold the client "
        "session in the foreground until Ctrl-C or SIGTERM: the session then closes in order "
        "(NSPv2Cleanup) and the email example signs NAME out; if the process is killed the "
        "session is run down (NSPv2ClientSessionRundown) and NAME is signed out too. --once "
        "closes the session right after showing the entry." + served,
    )
    p_register.add_argument("name", metavar="NAME")
    p_register.add_argument(
        "--status", type=_status, default=MISTATUS.MISTATUS_ONLINE, help="presence (default ONLINE)"
    )
    p_register.add_argument(
        "--addr", type=_address, action="append", default=[], help="ADDRESS:PORT, repeatable"
    )
    p_register.add_argument(
        "--multiple", action="store_true", help="SERVICE_MULTIPLE: add addresses"
    )
    p_register.add_argument(
        "--once",
        action="store_true",
        help="close the session after showing the entry (with the email example this signs "
        "NAME out again at once)",
    )
    _add_socket(p_register)
    add_json(p_register, "the entry")
    p_register.set_defaults(func=cmd_register)

    p_signout = sub.add_parser(
        "signout",
        help="sign a name out (RNRSERVICE_DELETE) in a session of its own",
        description="Send RNRSERVICE_DELETE for NAME in a client session of its own and report "
        "the provider's answer. With the email example only the client session that signed a "
        "name in may sign it out: from here that is WSAEACCES (SR_NOT_INVITER), and a name not "
        "signed in is WSASERVICE_NOT_FOUND (SR_APP_NOT_REGISTERED); to sign out a name held by "
        "nspv2 register, interrupt that register." + served,
    )
    p_signout.add_argument("name", metavar="NAME")
    _add_socket(p_signout)
    add_json(p_signout, "the result")
    p_signout.set_defaults(func=cmd_signout)
