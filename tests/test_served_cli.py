"""``nspv2 lookup``, ``register``, ``signout`` and ``stress --processes`` as
client processes of a real ``nspv2 serve`` (tests/served.py): the "Done
when" sequences (install, catalog, serve, register, lookup; and register,
lookup, status, kill, rundown, stop), register's Ctrl-C / SIGTERM / --once /
server-gone paths, signout's answers, discovery errors, and a short stress
run whose server stats equal the clients' counts. Every test has a catalog
file of its own (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from nspv2.client import status as monitor_status
from nspv2.examples.email import EMAIL_PROVIDER_ID, sign_in

from .clirun import OUTSIDE, command, nspv2_cli
from .served import Served, private_folder, serving, stop_process

DAVE = "dave@example.com"
NO_SERVER = "no nspv2 provider process is serving (start one with: nspv2 serve MODULE:CLASS)"
HELD = re.compile(r"is signed in while this client session is open")


def discovering(served: Served) -> dict[str, str]:
    """The server's environment without NSPV2_SOCKET: clients find it in the
    runtime folder, as a user's would."""
    env = dict(served.env)
    env.pop("NSPV2_SOCKET", None)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return nspv2_cli(*args, env=env, timeout=60)


class Background:
    """A CLI command left running, its output in a file."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.folder = private_folder("nspv2-bg-")
        self.out_path = self.folder / "out"
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [*command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=OUTSIDE,
                env=env,
            )
        self.pid = self.proc.pid

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_output(self, pattern: re.Pattern[str], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.output()):
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern.pattern!r} within {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)

    def end(self) -> None:
        stop_process(self.proc, signal.SIGKILL, timeout=5)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def background(env: dict[str, str], *args: str) -> Iterator[Background]:
    bg = Background(env, *args)
    try:
        yield bg
    finally:
        bg.end()


def until(check: object, what: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def lookup_fails(env: dict[str, str], name: str) -> bool:
    out = cli(env, "lookup", name)
    if out.returncode == 0:
        return False
    assert out.returncode == 1 and "WSASERVICE_NOT_FOUND" in out.stderr, out
    return True


EMAIL = "nspv2.examples.email:EmailDirectory"
ALICE = "alice@example.com"


def test_done_when_install_catalog_serve_register_lookup() -> None:
    """From a fresh install, in this order: ``nspv2 install ... --domain
    example.com``, ``nspv2 catalog``, ``nspv2 serve ... &``, a name signed in
    (``nspv2 register``), and ``nspv2 lookup`` finds it (through the client
    library's routing: no --socket, no NSPV2_SOCKET)."""
    folder = private_folder()
    try:
        env = {**os.environ, "NSPV2_RUNTIME_DIR": str(folder)}
        env.pop("NSPV2_SOCKET", None)
        installed = nspv2_cli("install", EMAIL, "--domain", "example.com", env=env, script=True)
        assert installed.returncode == 0, installed.stderr
        assert str(EMAIL_PROVIDER_ID) in installed.stdout
        listed = nspv2_cli("catalog", env=env, script=True)
        assert listed.returncode == 0, listed.stderr
        assert f"{{{str(EMAIL_PROVIDER_ID).upper()}}}" in listed.stdout  # as netsh shows it
        assert "example.com  primary" in listed.stdout
        assert "example.org" not in listed.stdout  # --domain replaced the declared domains
        with serving(EMAIL, runtime_dir=folder, install=False) as served:
            with background(env, "register", ALICE) as register:
                register.wait_output(HELD)
                found = nspv2_cli("lookup", ALICE, env=env, script=True, timeout=60)
                assert found.returncode == 0, found.stderr
                assert found.stdout.splitlines()[:2] == [ALICE, "  presence  MISTATUS_ONLINE"]
            assert served.stop(signal.SIGTERM) == 0
        # the catalog outlives the server: installed until uninstalled
        [entry] = json.loads(nspv2_cli("catalog", "--json", env=env).stdout)["providers"]
        assert entry["provider_id"] == str(EMAIL_PROVIDER_ID)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_done_when_register_lookup_status_kill_rundown_stop() -> None:
    installed = nspv2_cli("install", EMAIL)  # the catalog first: serve serves installed providers
    assert installed.returncode == 0, installed.stderr
    with serving(EMAIL, install=False) as served:
        env = discovering(served)
        with background(env, "register", DAVE) as register:
            register.wait_output(HELD)
            assert "MISTATUS_ONLINE" in register.output()

            found = cli(env, "lookup", DAVE)
            assert found.returncode == 0, found.stderr
            assert found.stdout.splitlines()[:2] == [DAVE, "  presence  MISTATUS_ONLINE"]
            flags = cli(env, "lookup", DAVE, "--flags", "RETURN_NAME|RETURN_COMMENT", "--json")
            [r] = json.loads(flags.stdout)
            assert r["comment"] == "MISTATUS_ONLINE" and r["addresses"] == [] and r["blob"] is None

            status = cli(env, "status")
            assert status.returncode == 0, status.stderr
            assert str(register.pid) in status.stdout
            doc = json.loads(cli(env, "status", "--json").stdout)
            [server] = doc["servers"]
            assert register.pid in [c["pid"] for c in server["clients"]]

            os.kill(register.pid, signal.SIGKILL)
            assert register.wait() == -signal.SIGKILL
            # the rundown follows the disconnect; the next lookups see it
            until(lambda: lookup_fails(env, DAVE), f"{DAVE} signed out after kill -9")

            doc = json.loads(cli(env, "status", "--json").stdout)
            [server] = doc["servers"]
            [ended] = [e for e in server["ended"] if e["pid"] == register.pid]
            assert (ended["how"], ended["reason"]) == ("rundown", "OTHER_COMMUNICATION_ERROR")
            text = cli(env, "status").stdout
            assert "OTHER_COMMUNICATION_ERROR" in text
            served.wait_log(
                rf"session of client #\d+ \(pid {register.pid}\) ended: rundown, "
                r"OTHER_COMMUNICATION_ERROR"
            )
        assert served.stop(signal.SIGTERM) == 0
        assert not served.socket.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_register_interrupted_closes_in_order_and_signs_out(sig: int) -> None:
    with serving() as served:
        assert "; 4 threads, keepalive" in served.log()  # a synchronous provider's default
        env = discovering(served)
        with background(env, "register", DAVE, "--status", "away") as register:
            register.wait_output(HELD)
            assert "MISTATUS_AWAY" in cli(env, "lookup", DAVE).stdout
            os.kill(register.pid, sig)
            assert register.wait() == 0, register.output()
            last = register.output().splitlines()[-1]
            assert last == (
                f"{signal.Signals(sig).name}: client session closed (NSPv2Cleanup); "
                f"{DAVE} signed out"
            )
        assert lookup_fails(env, DAVE)  # closed before register exited: no wait
        served.wait_log(rf"session of client #\d+ \(pid {register.pid}\) ended: cleanup")
        assert "rundown" not in served.log()


def test_register_once_prints_the_entry_and_closes() -> None:
    with serving() as served:
        env = discovering(served)
        out = cli(env, "register", DAVE, "--once", "--addr", "192.0.2.9:5060", "--json")
        assert out.returncode == 0, out.stderr
        [entry] = json.loads(out.stdout)
        assert entry["name"] == DAVE and entry["comment"] == "MISTATUS_ONLINE"
        assert entry["addresses"] == ["192.0.2.9:5060"]
        assert lookup_fails(env, DAVE)  # its session ended: the example signed it out
        served.wait_log(r"ended: cleanup")


def test_register_json_keeps_stdout_json_while_held() -> None:
    with serving() as served:
        env = discovering(served)
        proc = subprocess.Popen(
            [*command(), "register", DAVE, "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=OUTSIDE,
            env=env,
            text=True,
        )
        try:
            assert proc.stderr is not None
            ready, _, _ = select.select([proc.stderr], [], [], 20)
            assert ready, "register --json did not say it holds its session within 20 s"
            assert HELD.search(proc.stderr.readline())
            os.kill(proc.pid, signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            stop_process(proc, signal.SIGKILL, timeout=5)
        assert proc.returncode == 0
        [entry] = json.loads(stdout)  # stdout is the entry alone
        assert entry["name"] == DAVE
        assert "signed out" in stderr


def test_register_exits_1_when_the_server_stops() -> None:
    with serving() as served:
        env = discovering(served)
        with background(env, "register", DAVE) as register:
            register.wait_output(HELD)
            assert served.stop(signal.SIGTERM) == 0
            assert register.wait() == 1, register.output()
            assert f"provider process {served.pid} closed the connection" in register.output()
            assert f"{DAVE} is no longer signed in" in register.output()
        served.wait_log(r"rundown, PLATFORM_SHUTDOWN")


def test_held_register_asks_nothing_and_exits_1_at_once_when_the_server_is_killed() -> None:
    with serving() as served:
        env = discovering(served)
        with background(env, "register", DAVE) as register:
            register.wait_output(HELD)

            def requests() -> int:
                [mine] = [
                    c for c in monitor_status(served.socket)["clients"] if c["pid"] == register.pid
                ]
                return int(mine["requests"])

            held = requests()
            time.sleep(2.5)  # the old hold loop asked for STATUS every second
            assert requests() == held
            served.stop(signal.SIGKILL)
            killed = time.monotonic()
            assert register.wait(timeout=10) == 1, register.output()
            assert time.monotonic() - killed < 1.0
            assert f"provider process {served.pid} closed the connection" in register.output()
            assert f"{DAVE} is no longer signed in" in register.output()


def test_signout_reports_the_providers_answer() -> None:
    with serving() as served:
        env = discovering(served)
        with background(env, "register", DAVE) as register:
            register.wait_output(HELD)
            other = cli(env, "signout", DAVE)
            assert other.returncode == 1
            assert other.stdout.strip() == (
                f"{DAVE}: WSAEACCES (10013): SR_NOT_INVITER: another client session signed it "
                "in, and only that session may sign it out"
            )
            assert cli(env, "lookup", DAVE).returncode == 0  # still signed in
        doc = json.loads(cli(env, "signout", "zed@example.com", "--json").stdout)
        assert doc["code_name"] == "WSASERVICE_NOT_FOUND" and doc["code"] == 10108
    assert "SR_NOT_INVITER" in nspv2_cli("signout", "--help").stdout


@pytest.mark.parametrize("args", [["lookup", DAVE], ["register", DAVE], ["signout", DAVE]])
def test_no_server_exits_1_saying_how_to_start_one(args: list[str]) -> None:
    folder = private_folder()
    try:
        env = {**os.environ, "NSPV2_RUNTIME_DIR": str(folder)}
        env.pop("NSPV2_SOCKET", None)
        out = cli(env, *args)
        assert out.returncode == 1
        assert out.stderr == f"nspv2 {args[0]}: {NO_SERVER}\n"
        doc = json.loads(cli(env, *args, "--json").stdout)
        assert doc == {"error": f"nspv2 {args[0]}: {NO_SERVER}", "code": 10108}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_several_servers_register_exits_1_unless_one_is_chosen_lookup_asks_them() -> None:
    folder = private_folder()
    try:
        with serving(runtime_dir=folder) as one, serving(runtime_dir=folder) as two:
            env = discovering(one)
            out = cli(env, "register", DAVE, "--once")
            assert out.returncode == 1
            assert out.stderr.startswith("nspv2 register: several provider processes are serving: ")
            for s in (one, two):
                assert f"{s.pid} ({s.socket})" in out.stderr
            assert out.stderr.endswith("; choose one with --socket or NSPV2_SOCKET\n")
            # lookup routes across both: the example's GUID, served twice, is
            # asked in the provider process with the lowest pid
            first = min((one, two), key=lambda s: s.pid)
            with first.client() as erin:
                sign_in(erin, "erin@example.com")
                found = cli(env, "lookup", "erin@example.com")
                assert found.returncode == 0, found.stderr
            first.wait_log(r"ended: cleanup")
            chosen = cli(env, "register", DAVE, "--once", "--socket", str(two.socket))
            assert chosen.returncode == 0, chosen.stderr
            two.wait_log(r"ended: cleanup")
            before = one.count_log(r"\) connected")
            assert cli({**env, "NSPV2_SOCKET": str(one.socket)}, "lookup", DAVE).returncode == 1
            until(lambda: one.count_log(r"\) connected") == before + 1, "the lookup in one")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_stress_processes_accounts_for_every_session() -> None:
    out = nspv2_cli(
        "stress", "--processes", "3", "--cycles", "6", "--abandon-every", "3", "--json",
        timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["problems"] == [], doc["checks"]
    served = doc["served"]
    assert (served["cycles"], served["closed"], served["abandoned"]) == (18, 12, 6)
    delta = doc["server"]["stats_delta"]
    assert (delta["sessions_opened"], delta["sessions_cleanup"], delta["sessions_rundown"]) == (
        18,
        12,
        6,
    )
    assert doc["server"]["provider_counts"] == {"startups": 18, "cleanups": 12, "rundowns": 6}
    assert doc["in_process"]["host_counts"] == {"startups": 18, "cleanups": 12, "rundowns": 6}
    assert served["latency_ms"]["p50"] <= served["latency_ms"]["p99"] <= served["latency_ms"]["max"]
    assert doc["ratio"] > 0


def test_stress_processes_against_a_running_server() -> None:
    with serving() as served:
        out = nspv2_cli(
            "stress", "--processes", "2", "--cycles", "3", "--socket", str(served.socket),
            "--json", timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(out.stdout)
        assert doc["server"]["started_here"] is False
        assert doc["server"]["stats_delta"]["sessions_cleanup"] == 6
        assert "provider_counts" not in doc["server"]
        assert served.proc.poll() is None  # not stopped by stress


@pytest.mark.parametrize(
    "args, words",
    [
        (["stress", "--processes", "0"], "out of range"),
        (["stress", "--processes", "65"], "out of range"),
        (["stress", "--processes", "2", "--threads", "4"], "do not go together"),
        (["stress", "--processes", "2", "nspv2.examples.email:EmailDirectory"], "--socket"),
        (["stress", "--abandon-every", "2"], "go with --processes"),
    ],
)
def test_stress_processes_usage_errors(args: list[str], words: str) -> None:
    out = nspv2_cli(*args)
    assert out.returncode == 2, out
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--keepalive", "3601"], "3601 is out of range (0.001 to 3600 seconds)"),
        (["--keepalive", "0"], "0 is out of range (0.001 to 3600 seconds)"),
        (["--keepalive", "nan"], "nan is out of range (0.001 to 3600 seconds)"),
        (["--keepalive", "inf"], "inf is out of range (0.001 to 3600 seconds)"),
        (["--keepalive", "soon"], "'soon' is not a number of seconds"),
        (["--threads", "1025"], "1025 is out of range (1 to 1024)"),
        (["--threads", "0"], "0 is out of range (1 to 1024)"),
        (["--max-clients", "1048577"], "1048577 is out of range (1 to 1048576)"),
        (["--max-clients", "0"], "0 is out of range (1 to 1048576)"),
    ],
)
def test_serve_limits_are_usage_errors_naming_the_range(args: list[str], words: str) -> None:
    folder = private_folder()
    try:
        env = {**os.environ, "NSPV2_RUNTIME_DIR": str(folder)}
        env.pop("NSPV2_SOCKET", None)
        out = cli(env, "serve", "nspv2.examples.email:EmailDirectory", *args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.startswith(f"nspv2 serve: error: argument {args[0]}: {words}"), out
        assert list(folder.iterdir()) == []  # nothing was served
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_serve_limits_are_the_c_servers() -> None:
    """The ranges --help states, and their upper ends served by the C server."""
    helped = " ".join(cli(dict(os.environ), "serve", "--help").stdout.split())
    assert "1 to 1024" in helped and "1 to 1048576" in helped and "0.001 to 3600" in helped
    with serving(
        "nspv2.examples.email:EmailDirectory", "--keepalive", "3600", "--threads", "1024"
    ) as served:
        doc = monitor_status(served.socket)
        assert (doc["keepalive_ms"], doc["threads"]) == (3600000, 1024)
