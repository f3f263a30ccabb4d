"""The C client library (docs/client-c.md) in real client processes.

Programs are built the way a user builds them: the shipped Windows-style
example ``email_client.c`` with ``nspv2 config --compat --cflags
--client-libs``, and the test driver ``tests/native/client_driver.c`` (one
command per stdin line, one answer line each) with ``--cflags
--client-libs``. Servers are real ``nspv2 serve`` processes
(tests/served.py), each in its own private runtime folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2 import QuerySet, WinsockError, WSAError
from nspv2.host.native import NativeHostUnavailable, client_library_path
from nspv2.sdk.winsock2 import WSAESETSERVICEOP

from .nativebuild import WARN, compiler, nspv2_config
from .served import private_folder, serving, stop_process

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="clients use ws2_32.dll on Windows"),
    pytest.mark.skipif(compiler() is None, reason="no C compiler"),
]

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "native" / "client_driver.c"
SAN = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined")
NO_SERVER = "no nspv2 provider process is serving (start one with: nspv2 serve MODULE:CLASS)"
WSAECONNRESET = 10054
WSANOTINITIALISED = int(WSAError.WSANOTINITIALISED)
WSASERVICE_NOT_FOUND = int(WSAError.WSASERVICE_NOT_FOUND)
#: Winsock's client names the library exports, and nothing else but nspv2_client_*.
WINSOCK_NAMES = {
    "WSAStartup",
    "WSACleanup",
    "WSALookupServiceBeginW",
    "WSALookupServiceNextW",
    "WSALookupServiceEnd",
    "WSASetServiceW",
    "WSAGetLastError",
    "WSASetLastError",
}


def _cc(*args: str | Path) -> None:
    cc = compiler()
    assert cc is not None
    cmd = [cc, *WARN, *(str(a) for a in args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{shlex.join(cmd)}\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """email_client and client_driver, linked against the installed library."""
    out = tmp_path_factory.mktemp("cclient")
    examples = Path(__import__("json").loads(nspv2_config("--json"))["examples_dir"])
    example_flags = shlex.split(nspv2_config("--compat", "--cflags", "--client-libs"))
    driver_flags = shlex.split(nspv2_config("--cflags", "--client-libs"))
    _cc("-o", out / "email_client", examples / "email_client.c", *example_flags)
    _cc("-pthread", "-o", out / "client_driver", DRIVER, *driver_flags)
    return {"email_client": out / "email_client", "client_driver": out / "client_driver"}


class Driver:
    """A running client_driver: ``do(command)`` returns its answer line."""

    def __init__(self, program: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(program)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._buf = b""

    def do(self, command: str, timeout: float = 30.0) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.answer(timeout, command)

    def answer(self, timeout: float = 30.0, command: str = "") -> str:
        """The next answer line (a command's answers after its first)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no answer to {command!r} within {timeout} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the driver exited on {command!r}: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def exit(self) -> int:
        """Exit without WSACleanup (the kernel closes the socket)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"exit\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def driver(program: Path, env: dict[str, str]) -> Iterator[Driver]:
    d = Driver(program, env)
    try:
        yield d
    finally:
        stop_process(d.proc, signal.SIGKILL, timeout=10)
        for pipe in (d.proc.stdin, d.proc.stdout, d.proc.stderr):
            if pipe is not None:
                pipe.close()


def _env(runtime_dir: Path, socket: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NSPV2_SOCKET"}
    env["NSPV2_RUNTIME_DIR"] = str(runtime_dir)
    if socket is not None:
        env["NSPV2_SOCKET"] = str(socket)
    return env


def _client_env(env: dict[str, str]) -> dict[str, str]:
    """A served env for client programs: discovery through the runtime folder."""
    return {k: v for k, v in env.items() if k != "NSPV2_SOCKET"}


def test_exports_exactly_the_winsock_client_names_and_nspv2_client_extras() -> None:
    try:
        library = client_library_path()
    except NativeHostUnavailable as exc:  # the package must ship it wherever it has a compiler
        pytest.fail(str(exc))
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, timeout=60
    )
    assert nm.returncode == 0, nm.stderr
    names = {
        fields[2]
        for fields in (line.split() for line in nm.stdout.splitlines())
        if len(fields) == 3 and fields[1] in "TtWwDdBbRr" and fields[1].isupper()
    }
    extras = names - WINSOCK_NAMES
    assert WINSOCK_NAMES <= names, WINSOCK_NAMES - names
    header = (Path(nspv2_config("--cflags").strip()[2:]) / "nspv2_client.h").read_text()
    declared = set(re.findall(r"^NSPV2_CLIENT_API [^;(]*?\b(\w+)\(", header, re.M))
    assert extras == {n for n in declared if n.startswith("nspv2_client_")}, extras
    assert all(n.startswith("nspv2_client_") for n in extras), extras
    assert declared == names  # every name declared is exported, and no other


def test_no_server_is_service_not_found_with_the_reason(programs: dict[str, Path]) -> None:
    folder = private_folder()
    try:
        env = _env(folder)
        run = subprocess.run(
            [str(programs["email_client"]), "lookup", "dave@example.com"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1, run
        assert f"WSALookupServiceBeginW failed: {WSASERVICE_NOT_FOUND}" in run.stderr
        with driver(programs["client_driver"], env) as d:
            assert d.do("lookup dave@example.com") == f"err {WSANOTINITIALISED} " + (
                "WSAStartup has not been called (or every WSAStartup was cleaned up)"
            )
            assert d.do("startup") == "ok 2.2"
            assert d.do("lookup dave@example.com") == f"err {WSASERVICE_NOT_FOUND} {NO_SERVER}"
            # the next call looks again (nothing is remembered)
            assert d.do("lookup dave@example.com") == f"err {WSASERVICE_NOT_FOUND} {NO_SERVER}"
            os.chmod(folder, 0o755)
            answer = d.do("lookup dave@example.com")
            assert answer == (
                f"err {WSASERVICE_NOT_FOUND} refusing {folder}: mode 0755; "
                "it must be private to you"
            )
            assert d.do("cleanup") == "ok"
            assert d.do("cleanup").startswith(f"err {WSANOTINITIALISED} ")
    finally:
        os.chmod(folder, 0o700)
        os.rmdir(folder)


def test_several_servers_are_routed_and_a_chosen_socket_is_one_server(
    programs: dict[str, Path],
) -> None:
    """No socket chosen: routed mode over every live server of the folder
    (tests/test_routing.py has the rules); a provider two servers serve is
    reached at the lowest pid. NSPV2_SOCKET: that one server only."""
    folder = private_folder()
    try:
        with serving(runtime_dir=folder) as one, serving(runtime_dir=folder) as two:
            first, second = sorted([one, two], key=lambda s: s.pid)
            with driver(programs["client_driver"], _env(folder)) as d:
                assert d.do("startup") == "ok 2.2"
                assert d.do("register dave@example.com") == "ok"
                assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
                info = d.do("info")
                assert re.fullmatch(
                    rf"ok state=1 startups=1 pid={first.pid} .*providers=2 .*"
                    rf"socket={re.escape(str(first.socket))}",
                    info,
                ), info
                # the other server never saw dave: he signed in at the first
                with driver(programs["client_driver"], _env(folder, second.socket)) as other:
                    assert other.do("startup") == "ok 2.2"
                    assert other.do("lookup dave@example.com").startswith(
                        f"err {WSASERVICE_NOT_FOUND} "
                    )
                    assert re.fullmatch(rf"ok state=1 .*pid={second.pid} .*", other.do("info"))
                assert d.do("cleanup") == "ok"
                routed = d.proc.pid
            # a session at each server (each HELLO lists its providers), each
            # ended by the last WSACleanup
            for served in (first, second):
                served.wait_log(rf"session of client #\d+ \(pid {routed}\) ended: cleanup")
            # NSPV2_SOCKET chooses
            with driver(programs["client_driver"], _env(folder, second.socket)) as d:
                assert d.do("startup") == "ok 2.2"
                assert d.do("register erin@example.com") == "ok"
                assert re.fullmatch(rf"ok state=1 .*pid={second.pid} .*providers=1 .*",
                                    d.do("info"))  # fmt: skip
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def test_register_from_c_lookup_from_python_and_back(programs: dict[str, Path]) -> None:
    with serving() as served:
        env = _client_env(served.env)
        held = subprocess.Popen(
            [str(programs["email_client"]), "register", "dave@example.com", "busy"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert held.stdout is not None and held.stdin is not None
            first = held.stdout.readline().decode()
            assert first.startswith("dave@example.com MISTATUS_BUSY (0x000a) version 1"), first
            assert held.stdout.readline().decode().startswith("signed in; holding the session")
            with served.client() as py:
                (found,) = py.lookup("dave@example.com")
                assert found.service_instance_name == "dave@example.com"
                assert found.comment == "MISTATUS_BUSY"
                # Python signs erin in; the C example finds her
                py.set_service(QuerySet("erin@example.com"), WSAESETSERVICEOP.RNRSERVICE_REGISTER)
                look = subprocess.run(
                    [str(programs["email_client"]), "lookup", "*@example.com"],
                    env=env, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert look.returncode == 0, look.stderr
                lines = look.stdout.splitlines()
                assert [line.split()[:2] for line in lines] == [
                    ["dave@example.com", "MISTATUS_BUSY"],
                    ["erin@example.com", "MISTATUS_ONLINE"],
                ], lines
                # the C client's WSACleanup ends its session: dave signs out
                held.stdin.close()
                assert held.wait(timeout=30) == 0, held.stderr.read() if held.stderr else ""
                served.wait_log(rf"session of client #\d+ \(pid {held.pid}\) ended: cleanup")
                with pytest.raises(WinsockError) as lost:
                    py.lookup("dave@example.com")
                assert lost.value.code == WSASERVICE_NOT_FOUND
        finally:
            stop_process(held, signal.SIGKILL)


def test_server_killed_mid_session_is_connreset_until_cleanup(programs: dict[str, Path]) -> None:
    """One-server mode (NSPV2_SOCKET). Routed, a server that died is simply
    not routed to any more (tests/test_routing.py)."""
    with serving() as served, driver(programs["client_driver"], served.env) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do("register dave@example.com") == "ok"
        assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
        assert served.stop(signal.SIGKILL) == -signal.SIGKILL
        lost = d.do("lookup dave@example.com")
        assert lost.startswith(f"err {WSAECONNRESET} the provider process closed the connection")
        assert d.do("register erin@example.com").startswith(f"err {WSAECONNRESET} ")
        assert d.do("info").startswith("ok state=2 ")
        # the last WSACleanup forgets the lost connection; the next one looks again
        assert d.do("cleanup") == "ok"
        assert d.do("startup") == "ok 2.2"
        answer = d.do("lookup dave@example.com")
        assert answer.startswith(f"err {WSASERVICE_NOT_FOUND} cannot connect to {served.socket}")
    with serving() as served, driver(programs["client_driver"], _client_env(served.env)) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do("register dave@example.com") == "ok"
        assert served.stop(signal.SIGKILL) == -signal.SIGKILL
        assert d.do("lookup dave@example.com") == f"err {WSASERVICE_NOT_FOUND} {NO_SERVER}"


def test_session_ends_cleanup_on_last_wsacleanup_rundown_on_exit(programs: dict[str, Path]) -> None:
    with serving() as served:
        env = _client_env(served.env)
        with driver(programs["client_driver"], env) as d:
            assert d.do("startup") == "ok 2.2"
            assert d.do("startup") == "ok 2.2"  # counted, as on Windows
            assert d.do("register dave@example.com") == "ok"
            assert d.do("cleanup") == "ok"
            assert d.do("info").startswith("ok state=1 startups=1 ")
            assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
            assert d.do("cleanup") == "ok"  # the last one: GOODBYE
            pid = d.proc.pid
            served.wait_log(rf"session of client #\d+ \(pid {pid}\) ended: cleanup")
            assert d.do("info").startswith("ok state=0 startups=0 ")
        with driver(programs["client_driver"], env) as d:
            assert d.do("startup") == "ok 2.2"
            assert d.do("register erin@example.com") == "ok"
            assert d.exit() == 0  # no WSACleanup
            served.wait_log(
                rf"session of client #\d+ \(pid {d.proc.pid}\) ended: rundown, "
                r"OTHER_COMMUNICATION_ERROR"
            )
        with driver(programs["client_driver"], env) as d:
            assert d.do("startup") == "ok 2.2"
            # both sessions' names are signed out
            assert re.fullmatch(
                rf"err {WSASERVICE_NOT_FOUND} no provider answered: provider [0-9a-f-]{{36}} "
                rf"\(pid {served.pid}\): its Begin failed with error {WSASERVICE_NOT_FOUND}",
                d.do("lookup erin@example.com"),
            )
            assert d.do("next-bad").startswith(f"err {int(WSAError.WSA_INVALID_HANDLE)} ")
            assert d.do("abandon") == "ok"
            served.wait_log(
                rf"session of client #\d+ \(pid {d.proc.pid}\) ended: rundown, "
                r"OTHER_COMMUNICATION_ERROR"
            )
            # the abandoned connection's provider is routed to and dropped
            assert re.fullmatch(
                rf"err {WSASERVICE_NOT_FOUND} no provider answered: provider [0-9a-f-]{{36}} "
                rf"\(pid {served.pid}\): the connection to provider process {served.pid} was "
                r"lost earlier: the connection was abandoned \(nspv2_client_abandon\)",
                d.do("lookup erin@example.com"),
            )
        assert served.count_log(r"ended: cleanup") == 1


def test_threads_share_one_connection_and_keepalive_holds_it(programs: dict[str, Path]) -> None:
    with (
        serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served,
        driver(programs["client_driver"], _client_env(served.env)) as d,
    ):
        assert d.do("startup") == "ok 2.2"
        assert d.do("register dave@example.com") == "ok"
        assert d.do("threads 8 25 dave@example.com", timeout=120) == "ok 200 0"
        info = d.do("info")
        assert re.fullmatch(rf"ok state=1 startups=1 pid={served.pid} keepalive_ms=200 .*", info)
        # silent for 5 intervals (the server ends a client silent for 3):
        # the keepalive thread keeps the session
        assert d.do("sleep 1000") == "ok"
        assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
        counted = re.search(r"keepalives=(\d+)", d.do("info"))
        assert counted is not None and int(counted.group(1)) >= 3, counted
        assert served.count_log(r"client #\d+ \(pid \d+, uid \d+\) connected") == 1
        assert "disconnected" not in served.log()


def test_client_library_under_asan(tmp_path: Path) -> None:
    """The library's sources compiled into the driver with ASan + UBSan, one
    server:
    threads, a forked child's own session, keepalive, a server killed
    mid-session, cleanup."""
    sources = [
        ROOT / "native_stub" / "client" / "client.c",
        ROOT / "native_stub" / "src" / "wire.c",
        ROOT / "native_stub" / "src" / "catalog.c",
    ]
    if not all(s.is_file() for s in sources):
        pytest.skip("the client library's sources are in the checkout only")
    program = tmp_path / "client_driver_asan"
    try:
        _cc(*SAN, "-g", "-O1", "-pthread", f"-I{ROOT / 'native_stub' / 'include'}",
            f"-I{ROOT / 'native_stub' / 'src'}", "-o", program, DRIVER, *sources)  # fmt: skip
    except AssertionError as exc:
        if "asan" in str(exc).lower() and "cannot find" in str(exc).lower():
            pytest.skip("no AddressSanitizer runtime")
        raise
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.1") as served:
        # one-server mode (routed mode under ASan: tests/test_routing.py)
        env = {**served.env, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
        with driver(program, env) as d:
            assert d.do("startup") == "ok 2.2"
            assert d.do("register dave@example.com") == "ok"
            assert d.do("threads 4 20 dave@example.com", timeout=120) == "ok 80 0"
            assert d.do("fork lookup dave@example.com;cleanup") == "ok 1 MISTATUS_ONLINE"
            assert d.answer() == "ok"
            assert re.fullmatch(r"ok child \d+ exited 0", d.answer())
            assert d.do("sleep 400") == "ok"
            assert d.do("cleanup") == "ok"
            assert d.do("startup") == "ok 2.2"
            assert d.do("lookup dave@example.com").startswith(f"err {WSASERVICE_NOT_FOUND} ")
            assert d.do("register dave@example.com") == "ok"
            served.stop(signal.SIGKILL)
            assert d.do("lookup dave@example.com").startswith(f"err {WSAECONNRESET} ")
            assert d.do("cleanup") == "ok"
            assert d.proc.stdin is not None
            d.proc.stdin.close()
            assert d.proc.wait(timeout=60) == 0, d.stderr()
            report = d.stderr()
            assert "Sanitizer" not in report and "runtime error" not in report, report


def test_a_forked_child_leaves_the_parents_session_and_connects_its_own(
    programs: dict[str, Path],
) -> None:
    """fork() after connecting: the child's copy of the connection is closed
    (no GOODBYE, no shutdown of the parent's socket, no keepalive thread to
    join); its next call makes a session of its own."""
    with (
        serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served,
        driver(programs["client_driver"], _client_env(served.env)) as d,
    ):
        parent = d.proc.pid
        assert d.do("startup") == "ok 2.2"
        assert d.do("register dave@example.com") == "ok"
        # the child only cleans up: nothing reaches the provider process
        assert re.fullmatch(r"ok state=0 startups=1 pid=0 .*requests=0 keepalives=0 socket=",
                            d.do("fork info;cleanup")), d.stderr()  # fmt: skip
        assert d.answer() == "ok"  # the child's cleanup
        child = d.answer()
        assert re.fullmatch(r"ok child \d+ exited 0", child), child
        assert d.do("info").startswith(f"ok state=1 startups=1 pid={served.pid} ")
        assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
        # the child's calls connect on their own: a session of its own
        assert d.do("fork lookup dave@example.com;register erin@example.com;info;cleanup") == (
            "ok 1 MISTATUS_ONLINE"
        )
        assert d.answer() == "ok"
        assert re.fullmatch(rf"ok state=1 startups=1 pid={served.pid} .*", d.answer())
        assert d.answer() == "ok"
        second = d.answer()
        assert re.fullmatch(r"ok child \d+ exited 0", second), second
        child_pid = int(second.split()[2])
        served.wait_log(rf"session of client #\d+ \(pid {child_pid}\) ended: cleanup")
        # erin left with the child's session; dave stays with the parent's,
        # which the keepalive thread holds past three intervals
        assert d.do("sleep 1000") == "ok"
        assert d.do("lookup erin@example.com").startswith(f"err {WSASERVICE_NOT_FOUND} ")
        assert d.do("lookup dave@example.com") == "ok 1 MISTATUS_ONLINE"
        assert not re.search(rf"\(pid {parent}\) (ended|disconnected)", served.log()), served.log()
        assert served.count_log(r"client #\d+ \(pid \d+, uid \d+\) connected") == 2
        assert d.do("cleanup") == "ok"
        served.wait_log(rf"session of client #\d+ \(pid {parent}\) ended: cleanup")
