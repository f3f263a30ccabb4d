"""``nspv2 serve`` (a provider process) and ``nspv2 status`` (what the
provider processes are doing).

``serve`` loads a provider the way ``check`` names one (MODULE:CLASS, a
.py file, or ``--native LIB[:ENTRY] [-- ARGS]``), advertises it on the
native host (a Python provider must be installed in the namespace catalog
in effect, ``nspv2 install``: else exit 2 saying so; a native one may
install itself), and serves client processes with the host's C server
(:class:`nspv2.host.server.Server`) on a Unix domain socket until SIGINT or
SIGTERM; then it stops the server (open sessions run down with
PLATFORM_SHUTDOWN), unadvertises and exits 0. The log lines (stderr) are
the C server's, plus this module's "listening on" and "stopped" lines.

``status`` asks every live server of the runtime folder (or the one named
with ``--socket`` / NSPV2_SOCKET) for its status document over a monitor
connection and prints it. docs/serve.md describes both.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..provider.errors import WinsockError
from ..sdk.winsock2 import NS
from .common import (
    DWORD_MAX,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    UsageError,
    add_json,
    emit_json,
    whole,
)

if TYPE_CHECKING:
    from ..host.native_provider import NativeProvider
    from .check_target import NativeTarget, PythonTarget
    from .common import SubParsers

__all__ = ["add_commands", "cmd_serve", "cmd_status", "format_status"]

#: How long the host waits for a provider to complete an async call (ms).
HOST_TIMEOUT_MS = 5000
#: How often the main thread looks whether a native provider's entry returned.
_POLL = 0.5
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _log(line: str) -> None:
    """One log line on stderr, in one write (the C server writes there too)."""
    text = f"nspv2 serve[{os.getpid()}]: {line}\n"
    try:
        os.write(sys.stderr.fileno(), text.encode("utf-8", errors="replace"))
    except (OSError, ValueError):  # no usable stderr (closed, redirected to nothing)
        pass


#: The C server's limits (nspv2_server_start refuses more with WSAEINVAL).
KEEPALIVE_MAX_SECONDS = 3600
THREADS_MAX = 1024
#: Worker threads by default; an async Python provider gets more, since a
#: served NextEx holds its worker until the provider's loop completes it
#: and those workers only wait (docs/serve.md, "The pool and the limits").
THREADS_DEFAULT = 4
THREADS_DEFAULT_ASYNC = 64
#: The server's NSPV2_SERVER_MAX_CLIENTS (also the most file descriptors a
#: Linux process may have by default: fs.nr_open).
MAX_CLIENTS_MAX = 1 << 20


def _keepalive_seconds(text: str) -> float:
    """--keepalive: seconds from 0.001 to KEEPALIVE_MAX_SECONDS (whole ms)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.001 <= seconds <= KEEPALIVE_MAX_SECONDS:  # also nan and inf
        raise argparse.ArgumentTypeError(
            f"{text} is out of range (0.001 to {KEEPALIVE_MAX_SECONDS} seconds)"
        )
    return seconds


def _keepalive_ms(seconds: float) -> int:
    ms = round(seconds * 1000)
    if not 1 <= ms <= KEEPALIVE_MAX_SECONDS * 1000:
        raise UsageError(f"--keepalive must be from 0.001 to {KEEPALIVE_MAX_SECONDS} seconds")
    return ms


def _socket_path(args: argparse.Namespace) -> Path:
    """--socket PATH as given; else ``<runtime folder>/serve-<pid>.sock``
    (the folder created 0700 if missing, refused if not private; sockets of
    servers that are gone removed)."""
    from ..client.discovery import remove_stale, runtime_dir
    from ..client.errors import RuntimeDirRefused

    if args.socket is not None:
        path = Path(args.socket)
        if not path.parent.is_dir():
            raise UsageError(f"--socket {path}: no folder {path.parent}")
        return path
    try:
        folder = runtime_dir(create=True)
        for stale in remove_stale():
            _log(f"removed the stale socket {stale}")
    except RuntimeDirRefused as exc:
        raise _ServeError(exc.message or str(exc)) from None
    return folder / f"serve-{os.getpid()}.sock"


class _ServeError(Exception):
    """serve cannot start (exit 1, one line)."""


class _StopSignals:
    """While entered, SIGINT and SIGTERM set ``event`` (and are noted in
    ``received``) instead of ending the process; the previous handlers come
    back on exit."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: object) -> None:
        self.received.append(signal.Signals(signum).name)
        self.event.set()

    def __enter__(self) -> _StopSignals:
        self._previous = {sig: signal.signal(sig, self._handler) for sig in _SIGNALS}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)


def _load(args: argparse.Namespace) -> PythonTarget | NativeTarget:
    from .check import _spec

    args.query, args.register = [], []
    spec = _spec(args)  # the same MODULE:CLASS / --native LIB[:ENTRY] -- ARGS rules as check
    spec = type(spec)(
        spec.provider,
        native=spec.native,
        args=spec.args,
        timeout_ms=HOST_TIMEOUT_MS,
        load_timeout=args.timeout,
    )
    return spec.load()


def _not_installed(args: argparse.Namespace) -> str | None:
    """Why a Python provider cannot be served: it is not in the namespace
    catalog in effect (WSAAdvertiseProvider would fail with
    WSAEINVALIDPROVIDER). None when it is installed, or for a native
    provider (which may install itself from its entry point)."""
    if args.native is not None or args.provider is None:
        return None
    from ..host.catalog import Catalog
    from .check import load_provider_class

    cls = load_provider_class(args.provider)
    catalog = Catalog()
    if catalog.find(cls.provider_id) is not None:
        return None
    name = getattr(cls, "name", None) or cls.__name__
    return (
        f"provider {{{cls.provider_id}}} ({name}) is not installed in the namespace catalog at "
        f"{catalog.location}: run `nspv2 install {args.provider}` first (docs/catalog.md)"
    )


def _load_explained(args: argparse.Namespace) -> PythonTarget | NativeTarget:
    """:func:`_load`; a native provider that did not advertise is told that
    advertising needs the provider in the namespace catalog."""
    from .check import CheckError

    try:
        return _load(args)
    except CheckError as exc:
        if args.native is None or exc.usage or "without advertising" not in str(exc):
            raise
        from ..host.catalog import Catalog

        raise CheckError(
            f"{exc}. A provider advertises only once it is installed in the namespace catalog "
            f"(at {Catalog().location}): one whose entry point does not install it "
            "(WSCInstallNameSpaceEx) must be installed first",
            usage=False,
        ) from exc


def _provider_lines(target: PythonTarget | NativeTarget) -> str:
    from .check_target import NativeTarget

    if not isinstance(target, NativeTarget):
        return f"{type(target.python).__name__} {{{target.provider_id}}}"
    tables = target.loaded.tables
    return ", ".join(f"{{{t.provider_id}}}" for t in tables)


def _threads(args: argparse.Namespace, target: PythonTarget | NativeTarget) -> int:
    """``--threads``, else the default for this provider."""
    if args.threads is not None:
        return int(args.threads)
    python = getattr(target, "python", None)
    if python is not None and python.is_async:
        return THREADS_DEFAULT_ASYNC
    return THREADS_DEFAULT


def cmd_serve(args: argparse.Namespace) -> int:
    from ..host.server import Server

    if not args.timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    if not 0 < args.stop_timeout < float("inf"):
        raise UsageError(f"--stop-timeout must be more than 0 seconds, not {args.stop_timeout:g}")
    keepalive = _keepalive_ms(args.keepalive)
    with _StopSignals() as stop:
        try:
            path = _socket_path(args)
        except _ServeError as exc:
            print(f"nspv2 serve: {exc}", file=sys.stderr)
            return EXIT_PROBLEMS
        try:
            refused = _not_installed(args)
        except WinsockError as exc:  # an unreadable catalog
            print(f"nspv2 serve: {exc}", file=sys.stderr)
            return EXIT_PROBLEMS
        if refused is not None:
            print(f"nspv2 serve: {refused}", file=sys.stderr)
            return EXIT_USAGE
        target = _load_explained(args)
        try:
            server = Server(
                path,
                threads=_threads(args, target),
                max_clients=args.max_clients,
                max_in_flight=args.max_in_flight,
                keepalive_ms=keepalive,
                allow_uids=args.allow_uid,
                log_fd=sys.stderr.fileno(),
                host=target.host() if target.python is not None else None,
            )
            try:
                server.start()
            except WinsockError as exc:
                print(f"nspv2 serve: cannot serve on {path}: {exc}", file=sys.stderr)
                return EXIT_PROBLEMS
            try:
                doc = server.status()
                _log(
                    f"listening on {path} ({_provider_lines(target)}; "
                    f"{doc.get('threads')} threads, keepalive {keepalive / 1000:g} s)"
                )
                code = _wait(stop, target)
            except BaseException:
                server.stop()
                raise
        except BaseException:
            target.close()
            raise
        if not _stop_within(stop, server, target, args.stop_timeout):
            _log(
                "a provider call has not returned"
                + (
                    f" ({stop.received[-1]} again)"
                    if len(stop.received) > 1
                    else f" {args.stop_timeout:g} s after stopping began"
                )
                + ": exiting without waiting for it"
            )
            sys.stdout.flush()
            sys.stderr.flush()
            # The stopping thread is still inside the provider's call: no
            # interpreter shutdown (it would wait for that thread, or tear
            # down what the call still uses).
            os._exit(EXIT_PROBLEMS)
    _log("stopped" if code == EXIT_OK else "stopped: the provider's entry point returned")
    return code


def _stop_within(
    stop: _StopSignals, server: Any, target: PythonTarget | NativeTarget, seconds: float
) -> bool:
    """Stop the server (every session run down, worker threads joined) and
    unadvertise, on a thread of its own; wait at most ``seconds``, or until a
    second SIGINT/SIGTERM. The server joins its workers, so a provider entry
    point that never returns would keep a plain stop waiting for ever.
    True if everything stopped; an error of the stop is raised here."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            try:
                server.stop()
            finally:
                target.close()
        except BaseException as exc:  # raised again on the main thread
            errors.append(exc)

    signals = len(stop.received)
    thread = threading.Thread(target=run, name="nspv2-serve-stop", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while thread.is_alive():
        thread.join(0.05)
        if len(stop.received) > signals or time.monotonic() >= deadline:
            return not thread.is_alive()
    if errors:
        raise errors[0]
    return True


def _wait(stop: _StopSignals, target: PythonTarget | NativeTarget) -> int:
    """Until SIGINT/SIGTERM (exit 0), or a native provider's entry point
    returns on its own (exit 1: it unadvertised itself)."""
    native: NativeProvider | None = getattr(target, "loaded", None)
    while not stop.event.wait(_POLL):
        if native is not None and not native.running:
            _log("the provider's entry point returned: stopping")
            return EXIT_PROBLEMS
    _log(f"{stop.received[0]}: stopping; open sessions run down (PLATFORM_SHUTDOWN)")
    return EXIT_OK


# -- status -----------------------------------------------------------------------------


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _namespace(value: int) -> str:
    try:
        return f"{NS(value).name} ({value})"
    except ValueError:
        return str(value)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "?"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def format_status(doc: dict[str, Any]) -> str:
    """The status document of one server as the text ``nspv2 status`` prints."""
    out = [
        f"provider process {doc.get('server_pid')} (user {_user(int(doc.get('uid', -1)))}) "
        f"on {doc.get('socket')}, serving since {_when(doc.get('started'))}",
        f"  {doc.get('threads')} threads, up to {doc.get('max_clients')} clients and "
        f"{doc.get('max_in_flight')} requests in flight each, keepalive "
        f"{int(doc.get('keepalive_ms', 0)) / 1000:g} s",
        "  providers:",
    ]
    for p in doc.get("providers", []):
        name = p.get("name") or "(no name)"
        out.append(f"    {name}  {{{p.get('id')}}}  {_namespace(int(p.get('namespace', 0)))}")
    if not doc.get("providers"):
        out.append("    (none)")
    clients = doc.get("clients", [])
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for c in clients:
        by_pid.setdefault(int(c.get("pid", 0)), []).append(c)
    out.append(f"  client processes: {len(by_pid)}")
    for pid, conns in sorted(by_pid.items()):
        started = sum(int(c.get("providers_started", 0)) for c in conns)
        lookups = sum(int(c.get("lookups_open", 0)) for c in conns)
        requests = sum(int(c.get("requests", 0)) for c in conns)
        out.append(
            f"    pid {pid}  user {_user(int(conns[0].get('uid', -1)))}  "
            f"sessions open {len(conns)}  ({started} provider(s) started, {lookups} lookup(s) "
            f"open, {requests} request(s))"
        )
    ended = doc.get("ended", [])
    out.append(f"  sessions ended (last {len(ended)}):")
    for e in ended:
        how = str(e.get("how"))
        if e.get("reason"):
            how += f", {e.get('reason')}"
        detail = f" ({e.get('detail')})" if e.get("detail") else ""
        out.append(
            f"    {_when(e.get('ended'))}  pid {e.get('pid')}  session {e.get('session')}: "
            f"{how}{detail}"
        )
    stats = doc.get("stats", {})
    if stats:
        out.append("  stats: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return "\n".join(out)


def _targets(args: argparse.Namespace) -> list[tuple[Path, int | None]]:
    """The servers to ask: the one chosen (--socket, NSPV2_SOCKET), else every
    live one of the runtime folder."""
    from ..client.discovery import ENV_SOCKET, NO_SERVER, live_servers
    from ..client.errors import ServerNotFound

    chosen = args.socket or os.environ.get(ENV_SOCKET)
    if chosen:
        return [(Path(chosen), None)]
    servers = live_servers()  # RuntimeDirRefused is a ServerNotFound
    if not servers:
        raise ServerNotFound(NO_SERVER)
    return [(s.path, s.pid) for s in servers]


def _fetch(path: Path) -> dict[str, Any]:
    """The status document of the server on ``path``, over a monitor
    connection (no client session, not logged)."""
    from ..client.client import status

    return status(path, timeout=10.0)


def cmd_status(args: argparse.Namespace) -> int:
    from ..client.errors import ServerNotFound

    try:
        targets = _targets(args)
    except ServerNotFound as exc:
        message = f"nspv2 status: {exc.message or exc}"
        if args.json:
            emit_json({"error": message, "code": exc.code})
        else:
            print(message, file=sys.stderr)
        return EXIT_PROBLEMS
    docs: list[dict[str, Any]] = []
    failed = False
    for path, pid in targets:
        try:
            docs.append(_fetch(path))
        except (WinsockError, OSError) as exc:
            failed = True
            text = exc.message if isinstance(exc, WinsockError) and exc.message else str(exc)
            docs.append({"socket": str(path), "server_pid": pid, "error": text})
    if args.json:
        emit_json({"servers": docs})
    else:
        for i, doc in enumerate(docs):
            if i:
                print()
            if "error" in doc:
                print(
                    f"provider process {doc['server_pid'] or '?'} on {doc['socket']}: "
                    f"{doc['error']}"
                )
            else:
                print(format_status(doc))
    return EXIT_PROBLEMS if failed else EXIT_OK


# -- the parser ------------------------------------------------------------------------


def add_commands(sub: SubParsers) -> None:
    p_serve = sub.add_parser(
        "serve",
        help="run a provider as a provider process serving client processes",
        usage="%(prog)s [-h] [options] (MODULE:CLASS | --native LIB[:ENTRY] [-- ARGS...])",
        description="Advertise a provider (MODULE:CLASS or a .py file, as for check; or a C "
        "provider library with --native) on the native host and serve client processes "
        "(nspv2.Client, the C client library, nspv2 lookup / register / signout) on a Unix "
        "domain socket: <runtime folder>/serve-<pid>.sock unless --socket. Each connection is "
        "one client session. Only this user's processes (and --allow-uid) may connect. Runs "
        "until SIGINT or SIGTERM, then runs the open sessions down (PLATFORM_SHUTDOWN), "
        "unadvertises and exits 0. One log line per client and per session ended, on stderr. "
        "docs/serve.md.",
    )
    p_serve.add_argument("provider", metavar="MODULE:CLASS", nargs="?")
    p_serve.add_argument(
        "--native",
        metavar="LIB[:ENTRY]",
        help="a C provider library and its entry point, called as ENTRY(argc, argv) with the "
        "ARGS after --",
    )
    p_serve.add_argument(
        "--socket", metavar="PATH", help="listen here (its folder must exist) instead"
    )
    p_serve.add_argument(
        "--threads",
        type=whole(1, THREADS_MAX),
        default=None,
        metavar="N",
        help=f"worker threads running provider calls, 1 to {THREADS_MAX} (default: "
        f"{THREADS_DEFAULT}, or {THREADS_DEFAULT_ASYNC} for an async Python provider, whose "
        "lookups each hold a thread only while they wait)",
    )
    p_serve.add_argument(
        "--max-clients",
        type=whole(1, MAX_CLIENTS_MAX),
        default=64,
        metavar="N",
        help=f"connections at once, 1 to {MAX_CLIENTS_MAX}; one more is refused with "
        "WSAEPROCLIM (default: %(default)s)",
    )
    p_serve.add_argument(
        "--max-in-flight",
        type=whole(1, 1024),
        default=8,
        metavar="N",
        help="unanswered requests per connection (default: %(default)s)",
    )
    p_serve.add_argument(
        "--keepalive",
        type=_keepalive_seconds,
        default=5.0,
        metavar="SECONDS",
        help=f"clients send a keepalive this often, 0.001 to {KEEPALIVE_MAX_SECONDS}; one "
        "silent for 3 times as long is run down (default: %(default)g)",
    )
    p_serve.add_argument(
        "--allow-uid",
        type=whole(0, DWORD_MAX),
        action="append",
        default=[],
        metavar="UID",
        help="also accept client processes of this user id (repeatable; root is not "
        "accepted unless named)",
    )
    p_serve.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a native provider's entry point gets to advertise (default: %(default)g)",
    )
    p_serve.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long stopping may wait for provider calls still running (a call blocked in "
        "the provider cannot be cancelled); past it, or at a second SIGINT/SIGTERM, the "
        "process exits 1 without them (default: %(default)g)",
    )
    p_serve.set_defaults(func=cmd_serve, entry_args=[])

    p_status = sub.add_parser(
        "status",
        help="what the provider processes are serving: providers, clients, sessions ended",
        description="Ask every live provider process of the runtime folder (or the one given "
        "with --socket or NSPV2_SOCKET) for its status: advertised providers, client "
        "processes (pid, user, sessions open) and the last sessions ended with their reasons. "
        "Exit 1 if none is serving.",
    )
    p_status.add_argument("--socket", metavar="PATH", help="the provider process to ask")
    add_json(p_status, "each server's status document")
    p_status.set_defaults(func=cmd_status)
