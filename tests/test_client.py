"""nspv2.Client against real provider processes (``nspv2 serve``, started by
tests/served.py): the same answers as the in-process host, the server's
codes, how sessions end as the server sees them, keepalive and its
deadline, a stopped client process run down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nspv2 import LUP, MISTATUS, Client, Host, QuerySet, WinsockError, WSAError
from nspv2.client import ConnectionLost, ServerNotFound
from nspv2.client import status as server_status
from nspv2.client.errors import WSAECONNRESET
from nspv2.examples.email import EmailDirectory, decode_presence, sign_in, sign_out

from .served import Served, serving, stop_process

DAVE = "dave@example.com"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ended(served: Served, how: str) -> list[dict[str, Any]]:
    return [e for e in server_status(served.socket)["ended"] if e["how"] == how]


def codes(call: Callable[[], object]) -> int:
    with pytest.raises(WinsockError) as caught:
        call()
    return caught.value.code


class InProcess:
    """Client's methods on the in-process host (Host's lookups, a ClientSession)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.session = host.open_session()
        self.set_service = self.session.set_service
        self.lookup_next = host.lookup_next
        self.lookup_end = host.lookup_end

    def lookup(
        self, restrictions: Any, flags: int = LUP.LUP_RETURN_ALL, *, buffer_size: int = 1024
    ) -> Any:
        return self.host.lookup(self.session, restrictions, flags, buffer_size=buffer_size)

    def lookup_begin(self, restrictions: Any, flags: int = LUP.LUP_RETURN_ALL) -> int:
        return self.host.lookup_begin(self.session, restrictions, flags)

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.session.close()


def test_answers_and_codes_are_the_in_process_hosts() -> None:
    """The same operations through a provider process and in process: equal
    results, equal error codes."""

    def scenario(open_client: Callable[[], Any]) -> list[object]:
        out: list[object] = []
        with open_client() as alice, open_client() as bob:
            sign_in(alice, DAVE, MISTATUS.MISTATUS_BUSY, ["192.0.2.1:5060", "[2001:db8::1]:5061"])
            sign_in(alice, "erin@example.com")
            out.append(bob.lookup(DAVE))
            out.append(bob.lookup("*@example.com", buffer_size=64))  # grows on WSAEFAULT
            out.append(codes(lambda: bob.lookup("nobody@example.com")))
            out.append(codes(lambda: sign_out(bob, DAVE)))  # only alice's session may
            handle = bob.lookup_begin(DAVE)
            step = bob.lookup_next(handle, buffer_size=16)
            out.append((step.code, step.buffer_length))
            step = bob.lookup_next(handle, buffer_size=step.buffer_length)
            out.append((step.code, step.result))
            out.append(bob.lookup_next(handle).code)
            bob.lookup_end(handle)
            out.append(codes(lambda: bob.lookup_end(handle)))
            sign_out(alice, DAVE)
            out.append(codes(lambda: bob.lookup(DAVE)))
        return out

    with Host(auto_install=True) as host:
        host.advertise(EmailDirectory())
        expected = scenario(lambda: InProcess(host))
    with serving() as served:
        got = scenario(served.client)
    assert got == expected
    found = got[0]
    assert isinstance(found, list) and len(found) == 1
    assert decode_presence(found[0].blob) is MISTATUS.MISTATUS_BUSY
    assert got[2] == WSAError.WSASERVICE_NOT_FOUND


def test_close_is_cleanup_abandon_is_rundown_and_both_sign_out() -> None:
    with serving() as served:
        looker = served.client()
        closing = served.client()
        sign_in(closing, DAVE)
        assert looker.lookup(DAVE)
        closing.close()
        closing.close()  # idempotent
        assert codes(lambda: looker.lookup(DAVE)) == WSAError.WSASERVICE_NOT_FOUND
        [cleanup] = ended(served, "cleanup")
        assert (cleanup["pid"], cleanup["reason"]) == (os.getpid(), None)

        vanishing = served.client()
        sign_in(vanishing, DAVE)
        assert looker.lookup(DAVE)
        vanishing.abandon()
        wait_for("the rundown", lambda: ended(served, "rundown"))
        [rundown] = ended(served, "rundown")
        assert rundown["reason"] == "OTHER_COMMUNICATION_ERROR"
        assert codes(lambda: looker.lookup(DAVE)) == WSAError.WSASERVICE_NOT_FOUND
        with pytest.raises(ConnectionLost, match="closed") as caught:
            vanishing.lookup(DAVE)
        assert caught.value.code == WSAECONNRESET
        served.wait_log(
            r"session of client #\d+ \(pid \d+\) ended: rundown, OTHER_COMMUNICATION_ERROR"
        )
        looker.close()
        assert len(ended(served, "cleanup")) == 2


def test_discovery_status_and_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving() as served:
        monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(served.runtime_dir))
        monkeypatch.delenv("NSPV2_SOCKET", raising=False)
        with Client() as client:  # the one live server of the runtime folder
            assert client.server_pid == served.pid
            assert Path(client.socket).samefile(served.socket)
            assert [ns for _id, ns in client.providers] == [37]
            doc = client.status()
            assert doc["server_pid"] == served.pid
            mine = [c for c in doc["clients"] if c["pid"] == os.getpid()]
            assert len(mine) == 1 and mine[0]["role"] == "client"
            with Client.monitor() as monitor:
                listed = monitor.status()["clients"]
                assert [c["pid"] for c in listed] == [os.getpid()]  # monitors are not listed
                with pytest.raises(WinsockError):
                    monitor.lookup(DAVE)
            json.dumps(doc)
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(served.runtime_dir))
    with pytest.raises(ServerNotFound, match="no nspv2 provider process is serving"):
        Client()


def test_one_client_shared_by_threads() -> None:
    with serving() as served, served.client() as client:
        names = [f"user{i}@example.com" for i in range(8)]
        for name in names:
            sign_in(client, name)
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                for _ in range(20):
                    [found] = client.lookup(name)
                    assert found.service_instance_name == name
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)


def test_keepalive_keeps_an_idle_client_and_silence_is_run_down() -> None:
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served:
        alive = served.client()
        silent = served.client(keepalive=False)
        assert alive.keepalive_ms == 200
        sign_in(alive, DAVE)
        sign_in(silent, "erin@example.com")
        time.sleep(1.2)  # six intervals: twice the deadline
        assert alive.lookup(DAVE)  # still connected, session and name intact
        [rundown] = wait_for("the silent client's rundown", lambda: ended(served, "rundown"))
        assert rundown["reason"] == "OTHER_COMMUNICATION_ERROR"
        assert codes(lambda: alive.lookup("erin@example.com")) == WSAError.WSASERVICE_NOT_FOUND
        with pytest.raises(ConnectionLost) as caught:
            silent.lookup(DAVE)
        # the server logs the end after it has closed the connection
        served.wait_log("stopped answering")
        assert caught.value.code != 0
        alive.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from nspv2 import Client
    from nspv2.examples.email import sign_in
    client = Client(sys.argv[1])
    sign_in(client, sys.argv[2])
    print("signed in", flush=True)
    time.sleep(120)
    """
)


def test_a_stopped_client_process_is_run_down_after_the_deadline() -> None:
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(served.socket), DAVE],
            stdout=subprocess.PIPE,
            env=served.env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"signed in\n"
            with served.client() as looker:
                assert looker.lookup(DAVE)
                time.sleep(1.0)  # its keepalive thread keeps it alive while it runs
                assert looker.lookup(DAVE) and not ended(served, "rundown")
                os.kill(child.pid, signal.SIGSTOP)
                stopped = time.monotonic()
                [rundown] = wait_for("the rundown", lambda: ended(served, "rundown"))
                assert time.monotonic() - stopped >= 0.5  # not before 3 x 0.2 s (less polling)
                assert (rundown["pid"], rundown["reason"]) == (
                    child.pid,
                    "OTHER_COMMUNICATION_ERROR",
                )
                assert codes(lambda: looker.lookup(DAVE)) == WSAError.WSASERVICE_NOT_FOUND
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGCONT)
            stop_process(child, signal.SIGKILL)


def test_a_server_gone_is_connection_reset() -> None:
    with serving() as served:
        client = served.client()
        sign_in(client, DAVE)
        assert served.stop() == 0
        for _ in range(2):  # that call and every later one
            with pytest.raises(
                ConnectionLost, match="provider process closed the connection"
            ) as caught:
                client.lookup(DAVE)
            assert caught.value.code == WSAECONNRESET
        client.close()


def test_query_sets_beyond_the_wire_are_refused_before_sending() -> None:
    with serving() as served, served.client() as client:
        with pytest.raises(WinsockError) as caught:
            client.set_service(QuerySet(DAVE, blob=bytes(5 * 1024 * 1024)), 0)
        assert caught.value.code == WSAError.WSAEINVAL
        sign_in(client, DAVE)  # the connection is intact
        assert client.lookup(DAVE)


def _requests(served: Served, pid: int) -> int:
    [mine] = [c for c in server_status(served.socket)["clients"] if c["pid"] == pid]
    return int(mine["requests"])


def test_a_forked_child_does_not_end_the_parents_session() -> None:
    """os.fork() with a connected Client: the child's copy is dead (calls say
    why; close sends no GOODBYE and does not shut the parent's socket down);
    the parent's session, keepalive and name go on."""
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served:
        client = served.client()
        sign_in(client, DAVE)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report through the pipe, never return into pytest
            answer = "not run"
            try:
                try:
                    client.lookup(DAVE)
                    answer = "the child's lookup went through the parent's connection"
                except ConnectionLost as exc:
                    answer = f"{exc.code} {exc.message}"
                client.close()
                client.abandon()
            except BaseException as exc:  # anything is the answer
                answer = f"raised {exc!r}"
            finally:
                os.write(write_end, answer.encode())
                os._exit(0)
        os.close(write_end)
        try:
            _, how = os.waitpid(child, 0)
            with os.fdopen(read_end, "rb") as pipe:
                answer = pipe.read().decode()
        finally:
            stop_process_pid(child)
        assert os.waitstatus_to_exitcode(how) == 0
        assert answer == (
            f"{WSAECONNRESET} this client's connection belongs to process {os.getpid()}, "
            "which forked this one; a forked child makes a Client of its own"
        )
        time.sleep(1.0)  # five keepalive intervals: the parent's keepalive thread runs
        [entry] = client.lookup(DAVE)
        assert decode_presence(entry.blob) == MISTATUS.MISTATUS_ONLINE
        assert server_status(served.socket)["ended"] == []
        assert "disconnected" not in served.log()
        client.close()
        served.wait_log(r"ended: cleanup")


def stop_process_pid(pid: int) -> None:
    """A forked child that outlived its test: killed and reaped."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_wait_closed_sends_nothing_and_lets_calls_through() -> None:
    with serving() as served:
        client = served.client()
        sign_in(client, DAVE)
        before = _requests(served, os.getpid())
        started = time.monotonic()
        assert client.wait_closed(0.5) is False
        assert 0.45 <= time.monotonic() - started < 2.0
        assert client.wait_closed(0) is False
        assert _requests(served, os.getpid()) == before  # not one request
        # another thread's calls go on while one thread waits without a limit
        waited: list[bool] = []
        waiter = threading.Thread(target=lambda: waited.append(client.wait_closed()))
        waiter.start()
        try:
            started = time.monotonic()
            for _ in range(40):
                assert client.lookup(DAVE)
            assert time.monotonic() - started < 10.0
            counted = _requests(served, os.getpid())
            time.sleep(0.5)
            assert _requests(served, os.getpid()) == counted  # the waiter asks nothing
            assert waiter.is_alive() and not waited
            served.stop(signal.SIGKILL)
            waiter.join(timeout=5.0)
            assert waited == [True]
        finally:
            client.abandon()
            waiter.join(timeout=5.0)
        with pytest.raises(ConnectionLost, match="provider process closed the connection") as lost:
            client.lookup(DAVE)
        assert lost.value.code == WSAECONNRESET
        assert client.wait_closed(0) is True


def test_wait_closed_gives_the_servers_reason() -> None:
    with serving("nspv2.examples.email:EmailDirectory", "--keepalive", "0.2") as served:
        silent = served.client(keepalive=False)
        assert silent.wait_closed(10.0) is True  # the server ends it after 3 x 0.2 s
        with pytest.raises(ConnectionLost) as caught:
            silent.lookup(DAVE)
        assert caught.value.code != 0
        # the server logs the end after it has closed the connection
        served.wait_log("stopped answering")
    with serving() as served, served.client() as client:
        with pytest.raises(ValueError, match="timeout"):
            client.wait_closed(-1)
        client.abandon()
        assert client.wait_closed() is True
