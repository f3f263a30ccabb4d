"""``nspv2 serve`` and ``nspv2 status`` with real processes: a provider
process serving client processes over its Unix domain socket.

Every server is started by tests/served.py in its own runtime folder and
killed by pid at the end; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nspv2.client import ServerNotFound
from nspv2.client import wire as w
from nspv2.client.discovery import NO_SERVER, choose
from nspv2.provider.errors import WinsockError
from nspv2.provider.queryset import QuerySet
from nspv2.sdk.winsock2 import WSAESETSERVICEOP, WSAError
from nspv2.testing.pytest_plugin import Serve

from .clirun import OUTSIDE, command, nspv2_cli
from .nativebuild import NativeLib, email_provider, native_lib
from .served import Served, private_folder, serving, stop_process

__all__ = ["native_lib"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="serving is POSIX only")

GATED = str(Path(__file__).resolve().with_name("serve_providers.py")) + ":GatedDirectory"
SCRATCH_UID = 4242
WSAEACCES = 10013
WSAEPROCLIM = 10067
ENDED = r"nspv2 serve\[\d+\]: session of client #\d+ \(pid {pid}\) ended: "


#: Client-process scripts start with this: sign_in(client, name) registers a name.
PRELUDE = """
from nspv2 import QuerySet
from nspv2.sdk.winsock2 import WSAESETSERVICEOP

def sign_in(client, name):
    client.set_service(QuerySet(name), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
"""


def sign_in(client: Any, name: str) -> None:
    """The e-mail example's sign-in (RNRSERVICE_REGISTER), in the client's session."""
    client.set_service(QuerySet(name), WSAESETSERVICEOP.RNRSERVICE_REGISTER)


def names(results: list[QuerySet]) -> list[str | None]:
    return [r.service_instance_name for r in results]


def _no_socket_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NSPV2_SOCKET"}
    env.update(extra)
    return env


def run_client(
    served: Served, code: str, *, timeout: float = 30, **popen: Any
) -> subprocess.Popen[str]:
    """A client process running ``code`` (``socket`` is the server's path)."""
    script = f"socket = {str(served.socket)!r}\n" + PRELUDE + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=OUTSIDE,
        env=served.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"client process did not finish in {timeout} s:\n{out}\n{err}"
        ) from None
    return proc.returncode, out, err


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def events(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(events file, gate file) for GatedDirectory; the gate is opened at the end
    so that no provider thread stays blocked."""
    folder = private_folder("nspv2-ev-")
    try:
        yield folder / "events", folder / "gate"
    finally:
        (folder / "gate").touch()
        shutil.rmtree(folder, ignore_errors=True)


def gated(events: tuple[Path, Path], *args: str, **kw: Any) -> Any:
    env = {"NSPV2_TEST_EVENTS": str(events[0]), "NSPV2_TEST_GATE": str(events[1])}
    env.update(kw.pop("env", {}))
    return serving(GATED, *args, env=env, **kw)


def read_events(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# -- starting, logging, stopping ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_logs_clients_and_stops_cleanly(sig: int) -> None:
    with serving() as served:
        assert stat.S_ISSOCK(os.lstat(served.socket).st_mode)
        assert stat.S_IMODE(os.lstat(served.socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(served.runtime_dir).st_mode) == 0o700
        proc = run_client(
            served,
            """
            import os, nspv2
            with nspv2.Client(socket=socket) as c:
                sign_in(c, "erin@example.com")
                print(os.getpid(), c.server_pid, len(c.lookup("*@example.com")))
            """,
        )
        code, out, err = finish(proc)
        assert code == 0, err
        pid, server_pid, found = map(int, out.split())
        assert (server_pid, found) == (served.pid, 1)
        served.wait_log(rf"client #\d+ \(pid {pid}, uid {os.geteuid()}\) connected")
        served.wait_log(rf"client #\d+ \(pid {pid}\) disconnected")
        served.wait_log(ENDED.format(pid=pid) + "cleanup")
        assert served.stop(sig) == 0
        log = served.log()
        assert not served.socket.exists(), log
        assert re.search(rf"nspv2 serve\[{served.pid}\]: stopped$", log, re.M), log
        # one write per line: every line is whole
        for line in log.splitlines():
            assert line.startswith(f"nspv2 serve[{served.pid}]: "), line


def test_stop_runs_open_sessions_down_with_platform_shutdown(
    events: tuple[Path, Path],
) -> None:
    with gated(events) as served:
        client = served.client()
        try:
            sign_in(client, "frank@example.com")  # NSPv2Startup ran
            wait_for(lambda: any(e.startswith("startup") for e in read_events(events[0])))
            assert served.stop(signal.SIGTERM) == 0
        finally:
            client.abandon()
        log = served.log()
        assert re.search(r"ended: rundown, PLATFORM_SHUTDOWN \(server stopping\)", log), log
        rundowns = [e for e in read_events(events[0]) if e.startswith("rundown")]
        assert len(rundowns) == 1 and rundowns[0].endswith(" PLATFORM_SHUTDOWN"), rundowns
        # the client sees the connection gone
        with pytest.raises(WinsockError) as caught:
            client.lookup("frank@example.com")
        assert caught.value.code == 10054


def test_serve_rejects_bad_command_lines() -> None:
    both = nspv2_cli("serve", "nspv2.examples.email:EmailDirectory", "--native", "x.so")
    assert both.returncode == 2 and "not both" in both.stderr
    nothing = nspv2_cli("serve")
    assert nothing.returncode == 2 and "MODULE:CLASS" in nothing.stderr
    assert nspv2_cli("install", "nspv2.examples.email:EmailDirectory").returncode == 0
    args = nspv2_cli("serve", "nspv2.examples.email:EmailDirectory", "--", "x")
    assert args.returncode == 2 and "--native" in args.stderr
    missing = nspv2_cli("serve", "no_such_module_here:Nope")
    assert missing.returncode == 2 and "cannot import" in missing.stderr


def test_socket_in_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = nspv2_cli("serve", "--socket", str(tmp_path / "none" / "s.sock"))
    assert result.returncode == 2, result.stderr


# -- runtime folder and discovery -----------------------------------------------------


def test_runtime_folder_is_created_private(tmp_path: Path) -> None:
    base = private_folder()
    try:
        folder = base / "a" / "run"
        with serving(env={"NSPV2_RUNTIME_DIR": str(folder)}, runtime_dir=folder) as served:
            assert served.socket == folder / f"serve-{served.pid}.sock"
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
            assert os.stat(folder).st_uid == os.geteuid()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("problem", ["mode", "owner"])
def test_a_folder_not_private_is_refused(problem: str) -> None:
    if problem == "owner" and os.geteuid() != 0:
        pytest.skip("giving a folder to another uid needs root")
    base = private_folder()
    try:
        folder = base / "run"
        folder.mkdir()
        if problem == "mode":
            folder.chmod(0o755)
            why = "mode 0755"
        else:
            folder.chmod(0o700)
            os.chown(folder, SCRATCH_UID, SCRATCH_UID)
            why = f"owned by uid {SCRATCH_UID}"
        result = subprocess.run(
            [*command(), "serve", "nspv2.examples.email:EmailDirectory"],
            env=_no_socket_env(NSPV2_RUNTIME_DIR=str(folder)),
            cwd=OUTSIDE,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert f"refusing {folder}: {why}; it must be private to you" in result.stderr
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_two_servers_status_and_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    base = private_folder()
    folder = base / "run"
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(folder))
    monkeypatch.delenv("NSPV2_SOCKET", raising=False)
    env = _no_socket_env(NSPV2_RUNTIME_DIR=str(folder))
    try:
        with serving(runtime_dir=folder) as first:
            assert choose() == first.socket
            with serving(runtime_dir=folder) as second:
                with pytest.raises(ServerNotFound) as several:
                    choose()
                listed = ", ".join(
                    f"{s.pid} ({s.socket})" for s in sorted((first, second), key=lambda s: s.pid)
                )
                assert several.value.message == (
                    f"several provider processes are serving: {listed}; "
                    "choose one with --socket or NSPV2_SOCKET"
                )
                status = subprocess.run(
                    [*command(), "status", "--json"],
                    env=env,
                    cwd=OUTSIDE,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert status.returncode == 0, status.stderr
                docs = json.loads(status.stdout)["servers"]
                assert sorted(d["server_pid"] for d in docs) == sorted((first.pid, second.pid))
                assert {d["socket"] for d in docs} == {str(first.socket), str(second.socket)}
                one = subprocess.run(
                    [*command(), "status", "--socket", str(second.socket)],
                    env=env,
                    cwd=OUTSIDE,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert one.returncode == 0, one.stderr
                assert f"provider process {second.pid} " in one.stdout
                assert f"provider process {first.pid} " not in one.stdout
                assert "nspv2 e-mail presence" in one.stdout
            # the second stopped: its socket is gone, the first is the one again
            assert choose() == first.socket
            # a server killed outright leaves a stale socket: ignored, then removed
            stale = first.socket
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
            assert stale.exists()
            with pytest.raises(ServerNotFound) as none:
                choose()
            assert none.value.message == NO_SERVER
            empty = subprocess.run(
                [*command(), "status"],
                env=env,
                cwd=OUTSIDE,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert empty.returncode == 1 and NO_SERVER in empty.stderr
            with serving(runtime_dir=folder) as third:
                third.wait_log(f"removed the stale socket {re.escape(str(stale))}")
                assert not stale.exists()
                assert choose() == third.socket
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- who may connect ------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)
AS_SCRATCH = ["setpriv", f"--reuid={SCRATCH_UID}", f"--regid={SCRATCH_UID}", "--clear-groups"]


class Scratch:
    """How a process of the scratch user runs this nspv2: ``python`` and
    ``env`` (extra variables; None for the test's own environment)."""

    def __init__(self, python: str, env: dict[str, str] | None) -> None:
        self.python = python
        self.env = env

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, **(self.env or {})}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    """The installed package may lie where the scratch user cannot read it
    (a venv inside a private temporary folder, as CI makes; likewise an
    NSPV2_HOST_LIBRARY built there): then that user runs the interpreter by
    its real path with a world-readable copy of the installed package (and
    of that library) first on PYTHONPATH. The copy is removed afterwards."""
    import nspv2

    probe = [*AS_SCRATCH, sys.executable, "-c", "import nspv2.host.native as n; n.load_library()"]
    if subprocess.run(probe, cwd="/", capture_output=True, timeout=60).returncode == 0:
        yield Scratch(sys.executable, None)
        return
    copy = Path(tempfile.mkdtemp(prefix="nspv2-scratch-"))
    try:
        shutil.copytree(Path(nspv2.__file__).resolve().parent, copy / "nspv2")
        env = {"PYTHONPATH": str(copy)}
        library = os.environ.get("NSPV2_HOST_LIBRARY")
        if library:
            shutil.copy2(library, copy / Path(library).name)
            env["NSPV2_HOST_LIBRARY"] = str(copy / Path(library).name)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        python = os.path.realpath(sys.executable)
        check = subprocess.run(
            [*AS_SCRATCH, python, "-c", "import nspv2.host.native as n; n.load_library()"],
            cwd="/",
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, f"uid {SCRATCH_UID} cannot load nspv2: {check.stderr}"
        yield Scratch(python, env)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


CONNECT = """
    import json, os, nspv2
    from nspv2.provider.errors import WinsockError
    try:
        with nspv2.Client(socket=socket) as c:
            sign_in(c, "gina@example.com")
            print(json.dumps({"ok": True, "found": len(c.lookup("gina@example.com"))}))
    except WinsockError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "text": exc.message}))
"""


@needs_root
def test_a_client_of_another_uid_is_refused_by_its_credentials(scratch: Scratch) -> None:
    base = private_folder()
    try:
        sock = base / "open.sock"
        with serving("nspv2.examples.email:EmailDirectory", "--socket", str(sock)) as served:
            # file permissions would let anyone in: only the credentials refuse
            base.chmod(0o755)
            sock.chmod(0o777)
            proc = run_client(served, CONNECT)
            _code, out, err = finish(proc)
            assert json.loads(out) == {"ok": True, "found": 1}, err
            other = subprocess.run(
                [
                    *AS_SCRATCH,
                    scratch.python,
                    "-c",
                    f"socket = {str(sock)!r}\n" + textwrap.dedent(CONNECT),
                ],
                cwd="/",
                env=scratch.environ(served.env),
                capture_output=True,
                text=True,
                timeout=60,
            )
            doc = json.loads(other.stdout)
            assert doc["ok"] is False and doc["code"] == WSAEACCES, other.stderr
            served.wait_log(rf"refused a client \(pid \d+, uid {SCRATCH_UID}\): ")
            assert served.client().status()["stats"]["refused"] == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("allow", [False, True], ids=["root-refused", "allow-uid-0"])
def test_root_is_not_special_unless_allowed(allow: bool, scratch: Scratch) -> None:
    base = private_folder()
    try:
        folder = base / "run"
        folder.mkdir(mode=0o700)
        os.chown(folder, SCRATCH_UID, SCRATCH_UID)
        catalogs = base / "catalog"  # that user's catalog (the test's own is root's, 0700)
        catalogs.mkdir(mode=0o700)
        os.chown(catalogs, SCRATCH_UID, SCRATCH_UID)
        base.chmod(0o755)
        extra = ["--allow-uid", "0"] if allow else []
        with serving(
            "nspv2.examples.email:EmailDirectory",
            *extra,
            runtime_dir=folder,
            preexec=AS_SCRATCH,
            cwd=Path("/"),
            python=scratch.python,
            env={**(scratch.env or {}), "NSPV2_CATALOG": str(catalogs / "catalog")},
        ) as served:
            status = json.loads(
                subprocess.run(
                    [*AS_SCRATCH, scratch.python, "-m", "nspv2", "status", "--json"],
                    env=served.env,
                    cwd="/",
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout
            )["servers"][0]
            assert status["uid"] == SCRATCH_UID
            _code, out, err = finish(run_client(served, CONNECT))
            doc = json.loads(out)
            if allow:
                assert doc == {"ok": True, "found": 1}, err
                served.wait_log(r"client #\d+ \(pid \d+, uid 0\) connected")
            else:
                assert doc["ok"] is False and doc["code"] == WSAEACCES, (doc, err)
                served.wait_log(r"refused a client \(pid \d+, uid 0\): ")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- client processes that die, slow providers ----------------------------------------


def test_a_client_killed_mid_lookup_is_run_down_once_and_signed_out(
    events: tuple[Path, Path],
) -> None:
    events_file, gate = events
    with gated(events) as served:
        proc = run_client(
            served,
            """
            import os, nspv2
            c = nspv2.Client(socket=socket)
            sign_in(c, "carol@example.com")
            print(os.getpid(), flush=True)
            c.lookup("gate-carol")  # blocks in the provider until the test opens the gate
            """,
        )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "the client did not sign in"
            pid = int(proc.stdout.readline())
            wait_for(lambda: "blocked gate-carol" in read_events(events_file), what="blocked")
            with served.client() as watcher:
                assert [r.service_instance_name for r in watcher.lookup("carol@example.com")] == [
                    "carol@example.com"
                ]
                os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=10)
                served.wait_log(rf"client #\d+ \(pid {pid}\) disconnected")
                gate.touch()  # the blocked call returns; the rundown follows it
                served.wait_log(ENDED.format(pid=pid) + r"rundown, OTHER_COMMUNICATION_ERROR")
                # the host delivers the rundown once the provider's call has returned
                wait_for(
                    lambda: any(e.startswith("rundown") for e in read_events(events_file)),
                    what="the provider's rundown",
                )
                with pytest.raises(WinsockError) as gone:
                    watcher.lookup("carol@example.com")
                assert gone.value.code == WSAError.WSASERVICE_NOT_FOUND
                status = watcher.status()
            ended = [e for e in status["ended"] if e["pid"] == pid]
            assert len(ended) == 1, status["ended"]
            assert ended[0]["how"] == "rundown"
            assert ended[0]["reason"] == "OTHER_COMMUNICATION_ERROR"
            assert pid not in [c["pid"] for c in status["clients"]]
            rundowns = [e for e in read_events(events_file) if e.startswith("rundown")]
            assert len(rundowns) == 1 and rundowns[0].endswith("OTHER_COMMUNICATION_ERROR")
            assert served.count_log(ENDED.format(pid=pid)) == 1
        finally:
            stop_process(proc, signal.SIGKILL)


def test_a_slow_call_does_not_stop_other_clients_and_the_pool_is_bounded(
    events: tuple[Path, Path],
) -> None:
    events_file, gate = events
    with gated(events, "--threads", "2") as served:
        blocked = [served.client(), served.client()]
        results: dict[int, Any] = {}

        def blocked_lookup(i: int) -> None:
            try:
                results[i] = blocked[i].lookup(f"gate-{i}")
            except Exception as exc:  # reported by the assertion below
                results[i] = exc

        threads = [threading.Thread(target=blocked_lookup, args=(i,)) for i in (0,)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: "blocked gate-0" in read_events(events_file), what="gate-0")
            # one worker is held: another client's calls still run
            with served.client() as other:
                sign_in(other, "hal@example.com")
                started = time.monotonic()
                for _ in range(20):
                    assert names(other.lookup("hal@example.com")) == ["hal@example.com"]
                assert time.monotonic() - started < 10
            queued = served.client()
            sign_in(queued, "ida@example.com")
            # hold the second worker too: now a call waits in the queue for a thread
            threads.append(threading.Thread(target=blocked_lookup, args=(1,)))
            threads[-1].start()
            wait_for(lambda: "blocked gate-1" in read_events(events_file), what="gate-1")
            with queued:
                waiting: list[Any] = []
                t = threading.Thread(
                    target=lambda: waiting.append(names(queued.lookup("ida@example.com")))
                )
                t.start()
                time.sleep(0.5)
                assert waiting == [], "a third call ran with both threads held"
                with served.client(timeout=5) as monitor:
                    # STATUS is answered by the I/O thread, not the pool: at once while both
                    # threads are held, and it shows the call waiting in the queue (the bound)
                    started = time.monotonic()
                    status = monitor.status()
                    assert time.monotonic() - started < 2
                    assert waiting == [], "a third call ran with both threads held"
                    assert status["stats"]["queue_peak"] >= 1, status["stats"]
                    assert sorted(c["in_flight"] for c in status["clients"])[-3:] == [1, 1, 1]
                    gate.touch()
                    t.join(30)
                assert waiting == [["ida@example.com"]], waiting
            for t in threads:
                t.join(30)
            assert [r[0].comment for r in (results[0], results[1])] == ["released"] * 2
        finally:
            gate.touch()
            for t in threads:
                t.join(30)
            for c in blocked:
                c.close()


# -- pipelined requests ---------------------------------------------------------------


def test_pipelined_requests_are_all_answered_after_a_provider_started() -> None:
    """Two requests in one write, after the session's first call started the
    provider (NSPv2Startup): each gets its reply (regression: the second one
    of a pair was left unanswered once the session had a provider)."""
    with serving() as served:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(str(served.socket))
            sock.sendall(w.encode_hello(1))
            assert _Fuzzer._read_frame(sock) is not None
            reg = QuerySet("pipe@example.com").to_image()
            sock.sendall(w.encode_set(2, int(WSAESETSERVICEOP.RNRSERVICE_REGISTER), 0, reg))
            frame = _Fuzzer._read_frame(sock)
            assert frame is not None and w.decode_reply(frame).code == 0
            for first in (3, 5, 7):
                sock.sendall(w.encode_end(first, 0xDEAD) + w.encode_end(first + 1, 0xBEEF))
                got = set()
                for _ in range(2):
                    try:
                        frame = _Fuzzer._read_frame(sock)
                    except TimeoutError:
                        frame = None
                    assert frame is not None, f"requests {first}, {first + 1}: got only {got}"
                    reply = w.decode_reply(frame)
                    assert reply.code == WSAError.WSA_INVALID_HANDLE
                    got.add(reply.header.request_id)
                assert got == {first, first + 1}
        finally:
            sock.close()


# -- a misbehaving client -------------------------------------------------------------

FUZZ_FRAMES = int(os.environ.get("NSPV2_SERVE_FUZZ_FRAMES", "100000"))
#: The most the fuzz run may take; more fails the test.
FUZZ_BUDGET = float(os.environ.get("NSPV2_SERVE_FUZZ_BUDGET", "240"))
_HEADER = struct.Struct("<IHHI")
#: How long the fuzzer waits for an answer before it calls the frame a stall.
STALL = 2.0


class _Fuzzer:
    """A client that sends malformed and mutated frames; reconnects (with a
    valid HELLO) whenever the server closes it."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.sock: socket.socket | None = None
        self.next_id = 1
        self.sent = 0
        self.connections = 0
        self.closed_by_server = 0
        self.replies = 0
        self.stalls: list[bytes] = []
        self.valid = self._valid_frames()

    def _valid_frames(self) -> list[bytes]:
        from nspv2.provider.queryset import QuerySet

        image = QuerySet("alice@example.com").to_image()
        reg = QuerySet("fuzz@example.com", comment="x").to_image()
        return [
            w.encode_begin(1, 0x0FF0, image),
            w.encode_next(1, 0x1234, 0, 1024),
            w.encode_end(1, 0x1234),
            w.encode_set(1, 0, 0, reg),
            w.encode_empty(w.MsgType.STATUS, 1),
            w.encode_empty(w.MsgType.KEEPALIVE, 0),
            w.encode_hello(1),
            w.encode_empty(w.MsgType.GOODBYE, 1),
        ]

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(STALL)
        sock.connect(str(self.path))
        sock.sendall(w.encode_hello(self._id()))
        self._read_frame(sock)  # HELLO_REPLY
        self.connections += 1
        self.sock = sock
        return sock

    def _id(self) -> int:
        self.next_id = self.next_id % 0xFFFFFFF0 + 1
        return self.next_id

    @staticmethod
    def _read_frame(sock: socket.socket) -> bytes | None:
        head = _Fuzzer._exact(sock, w.HEADER)
        if head is None:
            return None
        (length,) = struct.unpack_from("<I", head)
        rest = _Fuzzer._exact(sock, length - w.HEADER)
        return None if rest is None else head + rest

    @staticmethod
    def _exact(sock: socket.socket, n: int) -> bytes | None:
        """n bytes, or None if the connection ends first (TimeoutError if
        nothing comes for the socket's timeout)."""
        data = b""
        while len(data) < n:
            try:
                chunk = sock.recv(n - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def mutate(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(6)
        frame = bytearray(rng.choice(self.valid))
        _HEADER.pack_into(frame, 0, len(frame), *_HEADER.unpack_from(frame)[1:3], self._id())
        if kind == 0:  # bit flips anywhere
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(frame))
                frame[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # a random header on the payload
            _HEADER.pack_into(
                frame,
                0,
                rng.choice([len(frame), rng.randrange(1 << 32)]),
                rng.randrange(1 << 16),
                rng.choice([0, rng.randrange(1 << 16)]),
                rng.randrange(1 << 32),
            )
        elif kind == 2:  # truncated
            del frame[rng.randrange(len(frame)) :]
        elif kind == 3:  # random bytes in the payload (the image, mostly)
            for _ in range(rng.randint(1, 16)):
                if len(frame) > w.HEADER:
                    frame[rng.randrange(w.HEADER, len(frame))] = rng.randrange(256)
        elif kind == 4:  # extra bytes past the payload, length adjusted
            frame += rng.randbytes(rng.randint(1, 64))
            struct.pack_into("<I", frame, 0, len(frame))
        else:  # pure noise
            frame = bytearray(rng.randbytes(rng.randint(1, 64)))
        return bytes(frame)

    def _complete(self, data: bytes) -> bool:
        """Whether the server will see ``data`` as whole frames (or reject
        a header in it): otherwise it waits for bytes that never come."""
        at = 0
        while len(data) - at >= w.HEADER:
            try:
                header = w.parse_header(data[at : at + w.HEADER])
            except w.WireError:
                return True  # refused at its header
            at += header.length
        return at == len(data)

    def send_one(self) -> None:
        sock = self.sock or self.connect()
        frame = self.mutate()
        ping_id = self._id()
        ping = w.encode_end(ping_id, 0xDEAD)
        self.sent += 1
        try:
            if not self._complete(frame):  # the rest never comes: end the connection
                sock.sendall(frame)
                self._drop()
                return
            sock.sendall(frame + ping)
        except (BrokenPipeError, ConnectionResetError):
            self._drop(by_server=True)
            return
        # whatever the frame did, the ping's reply (or the close) says it was read
        while True:
            try:
                reply = self._read_frame(sock)
            except TimeoutError:  # the server waits for more: a wrong guess of _complete
                self.stalls.append(frame)
                self._drop()
                return
            if reply is None:
                self._drop(by_server=True)
                return
            self.replies += 1
            header = w.parse_header(reply[: w.HEADER])
            if header.type in (w.MsgType.ERROR, w.MsgType.GOODBYE_REPLY):
                self._drop(by_server=header.type == w.MsgType.ERROR)  # nothing after GOODBYE
                return
            if header.request_id == ping_id:
                return

    def _drop(self, by_server: bool = False) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.closed_by_server += by_server


def test_the_server_survives_fuzzed_frames_while_serving_others() -> None:
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "2") as served:
        fuzzer = _Fuzzer(served.socket, seed=12)
        answers: list[float] = []
        failures: list[BaseException] = []
        done = threading.Event()

        def well_behaved() -> None:
            try:
                with served.client() as good:
                    sign_in(good, "good@example.com")
                    while not done.is_set():
                        found = good.lookup("good@example.com")
                        assert [r.service_instance_name for r in found] == ["good@example.com"]
                        answers.append(time.monotonic())
                        time.sleep(0.01)
            except BaseException as exc:
                failures.append(exc)
                failed_at.append(fuzzer.sent)

        failed_at: list[int] = []
        good = threading.Thread(target=well_behaved)
        good.start()
        started = time.monotonic()
        try:
            while fuzzer.sent < FUZZ_FRAMES:
                fuzzer.send_one()
                assert time.monotonic() - started < FUZZ_BUDGET, (
                    f"{fuzzer.sent} frames in {FUZZ_BUDGET} s"
                )
        finally:
            fuzzer._drop()
            done.set()
            good.join(30)
        elapsed = time.monotonic() - started
        print(
            f"\n{fuzzer.sent} fuzzed frames in {elapsed:.1f} s over {fuzzer.connections} "
            f"connections ({fuzzer.closed_by_server} closed by the server); "
            f"{len(answers)} answers to the well-behaved client; {len(fuzzer.stalls)} stalls"
        )
        assert not failures, f"the well-behaved client failed after {failed_at} frames: {failures}"
        assert answers, "the well-behaved client got no answer"
        gaps = [
            b - a for a, b in zip([started, *answers], [*answers, time.monotonic()], strict=True)
        ]
        assert max(gaps) < 5.0, f"the well-behaved client waited {max(gaps):.1f} s"
        # and afterwards it still serves; every session ended exactly once
        with served.client() as after:
            sign_in(after, "after@example.com")
            assert names(after.lookup("*@example.com")) == ["after@example.com"]
            stats = wait_for(
                lambda: (s := after.status()["stats"])["open_now"] == 1 and s,
                what="the fuzzer's connections ended",
            )
        print(f"server stats after: {stats}")
        # a stall: no answer to a frame and its ping within STALL seconds
        assert not fuzzer.stalls, [f.hex() for f in fuzzer.stalls[:5]]
        assert stats["ended_protocol"] > 0
        # `after` is the one session still open
        assert stats["sessions_opened"] == stats["sessions_cleanup"] + stats["sessions_rundown"] + 1
        assert served.stop() == 0


# -- native providers -----------------------------------------------------------------


def test_serve_native_email_example(native_lib: NativeLib) -> None:
    library = email_provider(native_lib)
    # --no-install: its entry point does not install it, so it is installed first
    installed = nspv2_cli("install", "--native", f"{library}:main")
    assert installed.returncode == 0, installed.stderr
    with serving("--native", f"{library}:main", "--", "--no-install") as served:
        # past a few of serve's checks on the entry point (every 0.5 s): it
        # once crashed there (TypeError) and stopped the server
        time.sleep(1.5)
        with served.client() as c:
            sign_in(c, "dave@example.com")
            found = c.lookup("dave@example.com")
            assert [r.service_instance_name for r in found] == ["dave@example.com"]
            doc = c.status()
        assert len(doc["providers"]) == 1
        assert served.stop() == 0


# -- the pytest plugin's fixture ------------------------------------------------------


def test_the_nspv2_served_fixture_serves_a_provider_class(nspv2_served: Serve) -> None:
    from .serve_providers import GatedDirectory

    served = nspv2_served(GatedDirectory, "--threads", "1")
    assert served.socket.name == f"serve-{served.pid}.sock"
    with served.client() as client:
        sign_in(client, "jo@example.com")
        assert names(client.lookup("jo@example.com")) == ["jo@example.com"]
        assert client.status()["threads"] == 1
    served.wait_log(r"ended: cleanup$")
    assert served.stop() == 0


@pytest.mark.parametrize("how", ["timeout", "second signal"])
def test_stopping_does_not_wait_for_ever_on_a_provider_call_that_never_returns(
    events: tuple[Path, Path], how: str
) -> None:
    """A lookup blocked in the provider's NextEx (synchronous: nothing can
    cancel it) would keep the server's stop joining its worker for ever; the
    stop is bounded by --stop-timeout, or cut short by a second signal, and
    then the process exits 1 saying so."""
    events_file, _gate = events
    stop_timeout = "2" if how == "timeout" else "60"
    with gated(events, "--stop-timeout", stop_timeout) as served:
        proc = run_client(served, 'import nspv2\nnspv2.Client(socket=socket).lookup("gate-dave")')
        try:
            wait_for(lambda: "blocked gate-dave" in read_events(events_file), what="blocked")
            started = time.monotonic()
            os.kill(served.pid, signal.SIGTERM)
            served.wait_log(r"SIGTERM: stopping")
            if how == "second signal":
                time.sleep(0.3)
                os.kill(served.pid, signal.SIGINT)
            code = served.proc.wait(timeout=30)
            took = time.monotonic() - started
            assert code == 1, served.log()
            expected = "2 s after stopping began" if how == "timeout" else "(SIGINT again)"
            assert f"a provider call has not returned {expected}" in served.log(), served.log()
            assert took < (15 if how == "timeout" else 10), took
            assert "stopped" not in served.log().splitlines()[-1]
        finally:
            stop_process(proc, signal.SIGKILL)


class _Interrupted(BaseException):
    """What the test's SIGINT handler raises (not KeyboardInterrupt, which
    pytest would take as the user stopping the run)."""


def test_a_client_call_interrupted_before_its_reply_gives_up_the_connection(
    events: tuple[Path, Path],
) -> None:
    """A signal while a lookup's NextEx waited for its reply used to leave the
    client's reply stream out of step: lookup()'s End then read the NextEx's
    reply and raised ConnectionLost ("answered NEXT_REPLY #n to END_REPLY
    #n+1") in place of the interruption. Now the connection is given up at
    once and the interruption goes on."""
    from nspv2.client import ConnectionLost

    def interrupt(_signum: int, _frame: object) -> None:
        raise _Interrupted

    with gated(events) as served:
        client = served.client()
        previous = signal.signal(signal.SIGINT, interrupt)
        sender = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        opener = threading.Timer(1.0, events[1].touch)  # the NextEx's reply comes then
        sender.start()
        opener.start()
        try:
            with pytest.raises(_Interrupted):
                client.lookup("gate-interrupted")
        finally:
            sender.cancel()
            opener.cancel()
            signal.signal(signal.SIGINT, previous)
        assert client.closed
        with pytest.raises(ConnectionLost, match="interrupted"):
            client.lookup("alice@example.com")
        events[1].touch()
        served.wait_log(r"session of client #\d+ \(pid \d+\) ended: rundown", timeout=10)
