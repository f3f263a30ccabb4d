"""The asyncio example: the HTTP presence backend (routes, errors, delay, a
client hanging up mid-delay, bounds), the provider answering NS_EMAIL from
it through the native host (lookups, sign-in, sign-out, error mapping,
cancellation reaching the backend), ``nspv2 check``, and the real processes
(``nspv2 presence-backend``, ``nspv2 serve``, ``nspv2 lookup``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nspv2 import (
    LUP,
    MISTATUS,
    RESULT_IS,
    WSAESETSERVICEOP,
    Host,
    QuerySet,
    Version,
    WinsockError,
    WSAError,
)
from nspv2.client import ConnectionLost
from nspv2.examples.async_presence import (
    HTTP_PRESENCE_PROVIDER_ID,
    URL_VARIABLE,
    HttpPresenceDirectory,
)
from nspv2.examples.email import encode_presence, sign_in, sign_out
from nspv2.examples.presence_backend import (
    SEED,
    BackendThread,
    PresenceBackend,
    running_backend,
)

from .clirun import OUTSIDE, command, nspv2_cli
from .served import serving, stop_process

ALICE = "alice@example.net"


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def backend() -> Iterator[BackendThread]:
    with running_backend() as running:
        yield running


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


def call(
    running: BackendThread,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request with the standard library's HTTP client: (status, JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port_of(running.url), timeout=10)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        conn.request(method, path, body=data, headers=headers or {})
        reply = conn.getresponse()
        raw = reply.read()
        assert reply.getheader("Content-Type") == "application/json"
        return reply.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def raw(running: BackendThread, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port_of(running.url)), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# -- the backend ------------------------------------------------------------------


def test_backend_routes(backend: BackendThread) -> None:
    assert backend.url.startswith("http://127.0.0.1:")
    status, entry = call(backend, "GET", f"/v1/presence/{ALICE}")
    assert status == 200
    assert entry == {
        "address": ALICE,
        "status": "MISTATUS_ONLINE",
        "owner": "seed",
        "version": 1,
        "addresses": ["192.0.2.20:5060"],
    }
    assert call(backend, "GET", "/v1/presence/ALICE@Example.NET")[1]["address"] == ALICE
    assert call(backend, "GET", "/v1/presence/zed@example.net")[0] == 404
    assert call(backend, "GET", "/v1/presence?domain=example.net") == (
        200,
        {"addresses": sorted(a for a, _, _ in SEED)},
    )
    assert call(backend, "GET", "/v1/presence?domain=example.org") == (200, {"addresses": []})

    put = {"status": "MISTATUS_BUSY", "owner": "me", "addresses": ["192.0.2.9:5060"]}
    status, entry = call(backend, "PUT", "/v1/presence/dave@example.net", put)
    assert status == 201 and entry["version"] == 1 and entry["owner"] == "me"
    status, entry = call(
        backend, "PUT", "/v1/presence/dave@example.net", {"status": "MISTATUS_AWAY", "owner": "me"}
    )
    assert (status, entry["status"], entry["version"]) == (200, "MISTATUS_AWAY", 2)
    assert entry["addresses"] == ["192.0.2.9:5060"]  # kept when not given
    status, _ = call(
        backend, "PUT", "/v1/presence/dave@example.net", {"status": "MISTATUS_AWAY", "owner": "x"}
    )
    assert status == 409
    assert (
        "dave@example.net"
        in call(backend, "GET", "/v1/presence?domain=example.net")[1]["addresses"]
    )
    assert call(backend, "DELETE", "/v1/presence/dave@example.net?owner=x")[0] == 409
    assert call(backend, "DELETE", "/v1/presence/dave@example.net?owner=me") == (204, None)
    assert call(backend, "DELETE", "/v1/presence/dave@example.net?owner=me")[0] == 404
    assert call(backend, "GET", "/v1/presence/dave@example.net")[0] == 404

    stats = call(backend, "GET", "/v1/stats")[1]
    # /v1/stats itself is not counted
    assert stats == {"requests": 13, "in_flight": 0, "answered": 13, "disconnected": 0}
    assert backend.stats == stats


def test_brackets_inside_json_strings_are_not_nesting(backend: BackendThread) -> None:
    """The depth check before parsing skips strings: an owner full of
    brackets is a valid body, while 9 real levels are refused."""
    owner = "[{" * 50
    body = {"status": "MISTATUS_ONLINE", "owner": owner, "addresses": ["[2001:db8::1]:5061"]}
    assert call(backend, "PUT", "/v1/presence/dave@example.net", body)[0] == 201
    deep = b'{"status": "MISTATUS_ONLINE", "owner": "me", "x": ' + b"[" * 8 + b"]" * 8 + b"}"
    assert call(backend, "PUT", "/v1/presence/erin@example.net", deep)[0] == 400


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("PUT", "/v1/presence/dave@example.net", b"not json", 400),
        ("PUT", "/v1/presence/dave@example.net", [1], 400),
        ("PUT", "/v1/presence/dave@example.net", {"status": "ONLINE", "owner": "me"}, 400),
        ("PUT", "/v1/presence/dave@example.net", {"status": "MISTATUS_ONLINE"}, 400),
        ("PUT", "/v1/presence/dave@example.net", {"status": "MISTATUS_ONLINE", "owner": ""}, 400),
        (
            "PUT",
            "/v1/presence/dave@example.net",
            {"status": "MISTATUS_ONLINE", "owner": "me", "addresses": ["example.net:80"]},
            400,
        ),
        (
            "PUT",
            "/v1/presence/dave@example.net",
            {"status": "MISTATUS_ONLINE", "owner": "me", "addresses": ["192.0.2.1:5060"] * 17},
            400,
        ),
        ("PUT", "/v1/presence/not-an-address", {"status": "MISTATUS_ONLINE", "owner": "me"}, 400),
        ("DELETE", f"/v1/presence/{ALICE}", None, 400),  # no ?owner=
        ("GET", "/v1/presence", None, 400),  # no ?domain=
        ("GET", "/v1/presence?domain=", None, 400),
        ("GET", "/v1/presence?domain=example.net&domain=x.org", None, 400),
        ("DELETE", "/v1/presence", None, 400),  # no ?owner=
        ("DELETE", "/v1/presence?owner=a&owner=b", None, 400),
        ("PUT", "/v1/presence/dave@example.net", b"[" * 15000, 400),  # too deep for json
        ("PUT", "/v1/presence/dave@example.net", b"[" * 100 + b"]" * 100, 400),
        ("POST", f"/v1/presence/{ALICE}", {}, 405),
        ("DELETE", "/v1/stats", None, 405),
        ("GET", "/v2/anything", None, 404),
    ],
)
def test_backend_refuses_bad_requests(
    backend: BackendThread, method: str, path: str, body: Any, status: int
) -> None:
    got, doc = call(backend, method, path, body)
    assert got == status and doc["error"]
    assert call(backend, "GET", f"/v1/presence/{ALICE}")[1]["version"] == 1  # unchanged
    counted = 1 if path.startswith("/v1/stats") else 2  # /v1/stats is not counted
    assert backend.stats == {
        "requests": counted,
        "in_flight": 0,
        "answered": counted,
        "disconnected": 0,
    }


def test_backend_keeps_a_connection_alive_and_answers_in_order(backend: BackendThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(backend.url), timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", f"/v1/presence/{ALICE}")
            reply = conn.getresponse()
            assert reply.status == 200 and reply.getheader("Connection") == "keep-alive"
            reply.read()
    finally:
        conn.close()
    # two requests in one write, the second sent while the first waits
    out = raw(
        backend,
        b"GET /v1/presence/bob@example.net HTTP/1.1\r\nX-Delay-Ms: 100\r\n\r\n"
        b"GET /v1/presence/alice@example.net HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"bob@example.net") < out.index(b"alice@example.net")
    assert backend.stats["disconnected"] == 0


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/stats HTTP/2.0\r\n\r\n", 400),
        (b"GET v1/stats HTTP/1.1\r\n\r\n", 400),
        (b"GET /v1/stats HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /v1/stats HTTP/1.1\r\nX: \xff\r\n\r\n", 400),
        (b"PUT /v1/presence/a@b.net HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"PUT /v1/presence/a@b.net HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            400,
        ),
        (b"PUT /v1/presence/a@b.net HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413),
        (b"PUT /v1/presence/a@b.net HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GET /v1/stats HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /v1/stats HTTP/1.1\r\n" + b"X: 1\r\n" * 65 + b"\r\n", 431),
        (b"GET /v1/presence/alice@example.net HTTP/1.1\r\nX-Delay-Ms: soon\r\n\r\n", 400),
        (b"GET /v1/presence/alice@example.net HTTP/1.1\r\nX-Delay-Ms: 60001\r\n\r\n", 400),
        # thousands of digits: past what int() converts
        (b"GET /v1/presence/alice@example.net HTTP/1.1\r\nX-Delay-Ms: " + b"1" * 5000, 400),
        (b"PUT /v1/presence/a@b.net HTTP/1.1\r\nContent-Length: " + b"1" * 5000, 400),
        (b"PUT /v1/presence/a@b.net HTTP/1.1\r\nContent-Length: " + b"0" * 19, 400),
    ],
    ids=lambda v: v[:60].decode(errors="replace") if isinstance(v, bytes) else str(v),
)
def test_backend_answers_malformed_requests_with_an_error(
    backend: BackendThread, data: bytes, status: int
) -> None:
    if not data.endswith(b"\r\n\r\n"):
        data += b"\r\n\r\n"
    out = raw(backend, data + b"GET /v1/stats HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:80]
    stats = backend.stats  # a refused head is not counted; any other request is answered
    assert stats["requests"] == stats["answered"] and stats["disconnected"] == 0
    if b"X-Delay-Ms" in data:  # a bad value of a header keeps the connection
        assert out.count(b"HTTP/1.1 ") == 2 and b"Connection: keep-alive" in out
    else:
        assert out.count(b"HTTP/1.1 ") == 1  # closed after the error
        assert b"Connection: close" in out


def test_backend_bounds_the_time_to_send_a_request() -> None:
    with BackendThread(PresenceBackend(read_timeout=0.2)) as running:
        start = time.monotonic()
        out = raw(running, b"GET /v1/stats HTTP/1.1\r\n")  # the head never ends
        assert out.startswith(b"HTTP/1.1 408 ")
        assert raw(running, b"") == b""  # silent: closed without an answer
        assert time.monotonic() - start < 5


def test_backend_bounds_its_connections() -> None:
    with BackendThread(PresenceBackend(max_connections=2)) as running:
        port = port_of(running.url)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        try:
            until(lambda: len(running.backend._handlers) == 2, "two connections held")
            assert raw(running, b"GET /v1/stats HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503 ")
        finally:
            for s in held:
                s.close()
        until(lambda: not running.backend._handlers, "held connections closed")
        assert call(running, "GET", "/v1/stats")[0] == 200


def test_backend_delays_each_request() -> None:
    with running_backend(delay=0.2) as running:
        start = time.monotonic()
        assert call(running, "GET", f"/v1/presence/{ALICE}")[0] == 200
        assert time.monotonic() - start >= 0.2
        start = time.monotonic()
        call(running, "GET", f"/v1/presence/{ALICE}", headers={"X-Delay-Ms": "0"})
        call(running, "GET", "/v1/stats")  # never delayed
        assert time.monotonic() - start < 0.2
        start = time.monotonic()
        call(running, "GET", f"/v1/presence/{ALICE}", headers={"X-Delay-Ms": "300"})
        assert time.monotonic() - start >= 0.3


def test_backend_counts_a_client_that_hangs_up_while_its_request_waits(
    backend: BackendThread,
) -> None:
    body = json.dumps({"status": "MISTATUS_ONLINE", "owner": "me"}).encode()
    s = socket.create_connection(("127.0.0.1", port_of(backend.url)), timeout=10)
    start = time.monotonic()
    with s:
        s.sendall(
            b"PUT /v1/presence/dave@example.net HTTP/1.1\r\nX-Delay-Ms: 30000\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        until(lambda: backend.stats["in_flight"] == 1, "the request waiting")
    until(lambda: backend.stats["disconnected"] == 1, "the hang-up seen")
    assert time.monotonic() - start < 5  # the wait was cancelled, not served
    assert backend.stats == {"requests": 1, "in_flight": 0, "answered": 0, "disconnected": 1}
    assert call(backend, "GET", "/v1/presence/dave@example.net")[0] == 404  # no effect


def test_backend_close_ends_waiting_requests() -> None:
    running = BackendThread(PresenceBackend(delay=30)).start()
    s = socket.create_connection(("127.0.0.1", port_of(running.url)), timeout=10)
    with s:
        s.sendall(
            b"GET /v1/stats HTTP/1.1\r\n\r\nGET /v1/presence/alice@example.net HTTP/1.1\r\n\r\n"
        )
        until(lambda: running.stats["in_flight"] == 1, "the request waiting")
        start = time.monotonic()
        running.stop()
        assert time.monotonic() - start < 5
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")  # the stats, then the end
        assert s.recv(65536) == b""
    assert running.stats["disconnected"] == 0 and running.stats["in_flight"] == 0
    running.stop()  # idempotent
    with pytest.raises(ValueError, match="loopback"):
        PresenceBackend(host="0.0.0.0")


def test_backend_signs_out_everything_an_owner_holds_in_one_request(
    backend: BackendThread,
) -> None:
    for name, owner in [("dave", "me"), ("erin", "me"), ("fred", "you")]:
        body = {"status": "MISTATUS_ONLINE", "owner": owner}
        assert call(backend, "PUT", f"/v1/presence/{name}@example.net", body)[0] == 201
    assert call(backend, "DELETE", "/v1/presence?owner=me") == (
        200,
        {"deleted": ["dave@example.net", "erin@example.net"]},
    )
    assert call(backend, "DELETE", "/v1/presence?owner=me") == (200, {"deleted": []})
    assert call(backend, "GET", "/v1/presence?domain=example.net")[1]["addresses"] == sorted(
        [a for a, _, _ in SEED] + ["fred@example.net"]
    )


def test_backend_bounds_its_entries() -> None:
    with BackendThread(PresenceBackend(max_entries=len(SEED) + 1)) as running:
        body = {"status": "MISTATUS_ONLINE", "owner": "me"}
        assert call(running, "PUT", "/v1/presence/dave@example.net", body)[0] == 201
        status, doc = call(running, "PUT", "/v1/presence/erin@example.net", body)
        assert status == 507 and "4 names" in doc["error"]
        assert call(running, "PUT", "/v1/presence/dave@example.net", body)[0] == 200  # update
        assert call(running, "DELETE", "/v1/presence/dave@example.net?owner=me")[0] == 204
        assert call(running, "PUT", "/v1/presence/erin@example.net", body)[0] == 201
        assert len(call(running, "GET", "/v1/presence?domain=example.net")[1]["addresses"]) == 4


def test_backend_drops_a_client_that_does_not_read_its_answers() -> None:
    """Pipelined requests from a client that never reads: once an answer
    waits longer than write_timeout to be taken, the connection is dropped
    (its slot freed)."""
    with BackendThread(PresenceBackend(max_connections=1, write_timeout=0.3)) as running:
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", port_of(running.url)))
        with hog:
            hog.setblocking(False)
            request = b"GET /v1/presence/carol@example.net HTTP/1.1\r\n\r\n" * 100
            blocked_since = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the server stops reading
                try:
                    hog.send(request)
                    blocked_since = None
                except BlockingIOError:
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 0.2:
                        break
                    time.sleep(0.01)
                except (ConnectionError, OSError):
                    break  # dropped already
            until(lambda: not running.backend._handlers, "the hog dropped", timeout=5)
            assert call(running, "GET", "/v1/stats")[0] == 200  # its slot is free
            stats = running.stats
            assert stats["requests"] == stats["answered"] and stats["in_flight"] == 0


def test_backend_closes_open_connections_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Closing with idle connections (served, and refused past the limit)
    logs nothing: no 'Exception in callback ... CancelledError' per
    connection (Python 3.11's streams)."""
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        running = BackendThread(PresenceBackend(max_connections=2)).start()
        port = port_of(running.url)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            held[0].sendall(b"GET /v1/stats HTTP/1.1\r\n\r\n")
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")  # then idle
            until(lambda: len(running.backend._handlers) == 2, "two connections served")
            assert held[2].recv(65536).startswith(b"HTTP/1.1 503 ")  # refused, lingering
            running.stop()
        finally:
            for s in held:
                s.close()
    noise = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noise == [], [r.getMessage() for r in noise]


# -- the provider, through the native host ---------------------------------------


@contextlib.contextmanager
def advertised(provider: HttpPresenceDirectory) -> Iterator[Host]:
    """``provider`` advertised on an in-process host; closed (its loop
    thread stopped) after the host."""
    with provider, Host(auto_install=True) as host:
        host.advertise(provider)
        yield host


@pytest.fixture
def directory(backend: BackendThread) -> Iterator[tuple[Host, HttpPresenceDirectory]]:
    provider = HttpPresenceDirectory(backend.url)
    with advertised(provider) as host:
        yield host, provider
    assert provider.async_stats()["tasks"] == 0


def names(results: list[QuerySet]) -> list[str | None]:
    return [r.service_instance_name for r in results]


def code_of(call: Callable[[], object]) -> int:
    with pytest.raises(WinsockError) as raised:
        call()
    return raised.value.code


def test_lookups_answer_from_the_backend(
    directory: tuple[Host, HttpPresenceDirectory], backend: BackendThread
) -> None:
    host, _ = directory
    with host.open_session() as client:
        [alice] = client.lookup(ALICE)
        assert (alice.service_instance_name, alice.comment) == (ALICE, "MISTATUS_ONLINE")
        assert [str(c.remote) for c in alice.cs_addrs] == ["192.0.2.20:5060"]
        assert alice.blob == encode_presence(MISTATUS.MISTATUS_ONLINE)
        assert alice.output_flags == RESULT_IS.RESULT_IS_ADDED
        assert alice.provider_id == HTTP_PRESENCE_PROVIDER_ID
        [bare] = client.lookup("Alice@EXAMPLE.net", LUP.LUP_RETURN_NAME)
        assert (bare.service_instance_name, bare.comment, bare.blob) == (ALICE, None, None)
        everyone = client.lookup("*@example.net")
        assert names(everyone) == [a for a, _, _ in SEED]
        assert [r.comment for r in everyone] == [s.name for _, s, _ in SEED]
        assert code_of(lambda: client.lookup("zed@example.net")) == WSAError.WSASERVICE_NOT_FOUND
    # alice twice; the listing and three entries; zed
    assert backend.stats["requests"] == 7


def test_a_wildcard_fetches_each_entry_at_its_own_nextex(
    directory: tuple[Host, HttpPresenceDirectory], backend: BackendThread
) -> None:
    host, _ = directory
    with host.open_session() as client:
        handle = host.lookup_begin(client, "*@example.net")
        assert backend.stats["requests"] == 0  # Begin asks nothing
        first = host.lookup_next(handle, buffer_size=4096)
        assert first.result is not None and first.result.service_instance_name == ALICE
        assert backend.stats["requests"] == 2  # the listing, alice
        # bob signs out between two NextEx: skipped
        assert call(backend, "DELETE", "/v1/presence/bob@example.net?owner=seed")[0] == 204
        second = host.lookup_next(handle, buffer_size=4096)
        assert second.result is not None
        assert second.result.service_instance_name == "carol@example.net"
        assert host.lookup_next(handle).code == WSAError.WSA_E_NO_MORE
        host.lookup_end(handle)


def test_a_wildcard_with_nobody_signed_in_is_not_found() -> None:
    with running_backend(seed=False) as empty, advertised(HttpPresenceDirectory(empty.url)) as host:
        with host.open_session() as client:
            handle = host.lookup_begin(client, "*@example.net")  # Begin asks nothing
            assert host.lookup_next(handle).code == WSAError.WSASERVICE_NOT_FOUND
            host.lookup_end(handle)


def test_sign_in_and_out_through_the_host(
    directory: tuple[Host, HttpPresenceDirectory], backend: BackendThread
) -> None:
    host, provider = directory
    dave = "dave@example.net"
    with host.open_session() as a, host.open_session() as b:
        sign_in(a, dave, MISTATUS.MISTATUS_BUSY, ["192.0.2.9:5060"])
        status, entry = call(backend, "GET", f"/v1/presence/{dave}")
        assert status == 200 and entry["status"] == "MISTATUS_BUSY"
        assert entry["addresses"] == ["192.0.2.9:5060"]
        assert entry["owner"].startswith("nspv2/")
        [found] = b.lookup(dave)
        assert (found.comment, found.version) == ("MISTATUS_BUSY", Version(1))
        sign_in(a, dave, MISTATUS.MISTATUS_AWAY)  # again: an update
        [found] = b.lookup(dave)
        assert (found.comment, found.version) == ("MISTATUS_AWAY", Version(2))
        assert found.output_flags == RESULT_IS.RESULT_IS_CHANGED
        assert found.cs_addrs == ()  # replaced by none

        # the e-mail example's SESSION_RESULT codes
        assert code_of(lambda: sign_in(b, dave)) == WSAError.WSAEALREADY
        assert code_of(lambda: sign_out(b, dave)) == WSAError.WSAEACCES
        assert code_of(lambda: sign_in(b, "erin@example.net", MISTATUS.MISTATUS_OFFLINE)) == (
            WSAError.WSAEINVAL
        )
        bad_blob = QuerySet("erin@example.net", blob=b"NSPP")
        register = WSAESETSERVICEOP.RNRSERVICE_REGISTER
        assert code_of(lambda: b.set_service(bad_blob, register)) == WSAError.WSAEINVAL
        assert call(backend, "GET", "/v1/presence/erin@example.net")[0] == 404

        sign_out(a, dave)
        assert code_of(lambda: b.lookup(dave)) == WSAError.WSASERVICE_NOT_FOUND
        assert code_of(lambda: sign_out(a, dave)) == WSAError.WSASERVICE_NOT_FOUND
        sign_in(a, dave)
        deregister = WSAESETSERVICEOP.RNRSERVICE_DEREGISTER
        a.set_service(QuerySet(dave), deregister)  # signs out too
        assert call(backend, "GET", f"/v1/presence/{dave}")[0] == 404
    assert provider.async_stats()["timed_out"] == 0


@pytest.mark.parametrize("end", ["close", "abandon"])
def test_a_sessions_end_signs_its_names_out(
    directory: tuple[Host, HttpPresenceDirectory], backend: BackendThread, end: str
) -> None:
    host, _ = directory
    client = host.open_session()
    for name in ("dave@example.net", "erin@example.net"):
        sign_in(client, name)
    assert len(call(backend, "GET", "/v1/presence?domain=example.net")[1]["addresses"]) == 5
    getattr(client, end)()  # NSPv2Cleanup, or NSPv2ClientSessionRundown
    assert call(backend, "GET", "/v1/presence?domain=example.net")[1] == {
        "addresses": [a for a, _, _ in SEED]
    }


def test_a_sessions_end_signs_out_any_number_of_names_in_one_request() -> None:
    """More names than the backend takes connections: still one request,
    well within the hook's time."""
    with BackendThread(PresenceBackend(max_connections=4)) as running:
        with advertised(HttpPresenceDirectory(running.url)) as host:
            client = host.open_session()
            mine = [f"user{i}@example.net" for i in range(40)]
            for name in mine:
                sign_in(client, name)
            before = running.stats["requests"]
            client.close()
            assert running.stats["requests"] == before + 1
            listed = call(running, "GET", "/v1/presence?domain=example.net")[1]["addresses"]
            assert listed == [a for a, _, _ in SEED]


def test_a_sign_out_the_backend_missed_is_retried_at_a_later_sessions_end() -> None:
    with BackendThread(PresenceBackend(max_connections=2)) as running:
        provider = HttpPresenceDirectory(running.url)
        with advertised(provider) as host:
            first = host.open_session()
            sign_in(first, "dave@example.net")
            port = port_of(running.url)
            held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
            try:  # the backend answers 503 (too many connections) while these are held
                until(lambda: len(running.backend._handlers) == 2, "two connections held")
                first.close()
            finally:
                for s in held:
                    s.close()
            assert call(running, "GET", "/v1/presence/dave@example.net")[0] == 200  # missed
            until(lambda: not running.backend._handlers, "held connections closed")
            with host.open_session() as later:
                assert names(later.lookup(ALICE)) == [ALICE]
            # the later session's end signed the first session's names out too
            assert call(running, "GET", "/v1/presence/dave@example.net")[0] == 404


def test_a_full_backend_is_no_buffers() -> None:
    with BackendThread(PresenceBackend(max_entries=len(SEED))) as full:
        with advertised(HttpPresenceDirectory(full.url)) as host, host.open_session() as client:
            assert code_of(lambda: sign_in(client, "dave@example.net")) == WSAError.WSAENOBUFS
            assert names(client.lookup(ALICE)) == [ALICE]  # lookups go on


# -- errors: what the backend does, as Winsock codes -------------------------------


@contextlib.contextmanager
def canned(reply: bytes) -> Iterator[str]:
    """A server answering every request with ``reply`` (then closing): its URL."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.request.sendall(reply)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reply(status: str, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n".encode() + body


@pytest.mark.parametrize(
    "answer, code",
    [
        (reply("404 Not Found", b'{"error": "no"}'), WSAError.WSASERVICE_NOT_FOUND),
        (reply("400 Bad Request", b"{}"), WSAError.WSAEINVAL),
        (reply("409 Conflict", b"{}"), WSAError.WSAEALREADY),
        (reply("500 Internal Server Error", b""), WSAError.WSATRY_AGAIN),
        (reply("503 Service Unavailable", b"{}"), WSAError.WSATRY_AGAIN),
        (reply("507 Insufficient Storage", b"{}"), WSAError.WSAENOBUFS),
        (b"", WSAError.WSATRY_AGAIN),  # closed without answering
        (b"SSH-2.0-OpenSSH\r\n\r\n", WSAError.WSANO_RECOVERY),
        (b"HTTP/1.1 200 OK\r\nContent-", WSAError.WSANO_RECOVERY),  # head cut short
        (reply("200 OK", b'{"address": 1}', 100), WSAError.WSANO_RECOVERY),  # body cut short
        (reply("200 OK", b"<html>"), WSAError.WSANO_RECOVERY),
        (reply("200 OK", b'{"address": "alice@example.net"}'), WSAError.WSANO_RECOVERY),
        (reply("200 OK", b"{}", 1 << 21), WSAError.WSANO_RECOVERY),  # over the body limit
        (reply("302 Found", b""), WSAError.WSANO_RECOVERY),
    ],
    ids=lambda v: v[:24].decode(errors="replace") if isinstance(v, bytes) else v.name,
)
def test_backend_answers_map_to_winsock_codes(answer: bytes, code: WSAError) -> None:
    with canned(answer) as url, advertised(HttpPresenceDirectory(url)) as host:
        with host.open_session() as client:
            assert code_of(lambda: client.lookup(ALICE)) == code


def test_a_backend_that_is_down_is_try_again() -> None:
    provider = HttpPresenceDirectory(f"http://127.0.0.1:{free_port()}")
    with advertised(provider) as host, host.open_session() as client:
        assert code_of(lambda: client.lookup(ALICE)) == WSAError.WSATRY_AGAIN
        assert code_of(lambda: client.lookup("*@example.net")) == WSAError.WSATRY_AGAIN
        assert code_of(lambda: sign_in(client, "dave@example.net")) == WSAError.WSATRY_AGAIN
        assert code_of(lambda: sign_out(client, "dave@example.net")) == WSAError.WSATRY_AGAIN
    # a backend refusing connections past its limit answers 503: the same
    with BackendThread(PresenceBackend(max_connections=0)) as full:
        with advertised(HttpPresenceDirectory(full.url)) as host, host.open_session() as client:
            assert code_of(lambda: client.lookup(ALICE)) == WSAError.WSATRY_AGAIN


def test_a_slow_backend_times_out_and_sees_the_client_go() -> None:
    with running_backend(delay=2.0) as slow:
        provider = HttpPresenceDirectory(slow.url, timeout=0.2)
        with advertised(provider) as host, host.open_session() as client:
            start = time.monotonic()
            assert code_of(lambda: client.lookup(ALICE)) == WSAError.WSAETIMEDOUT
            assert code_of(lambda: sign_in(client, "dave@example.net")) == WSAError.WSAETIMEDOUT
            assert time.monotonic() - start < 1.5
            until(lambda: slow.stats["disconnected"] == 2, "both requests abandoned")
        assert slow.stats["answered"] == 0
        # the sign-in never happened; the session's end asked to sign it out
        assert (
            call(slow, "GET", "/v1/presence/dave@example.net", headers={"X-Delay-Ms": "0"})[0]
            == 404
        )


# -- cancellation reaches the backend ---------------------------------------------


@pytest.mark.parametrize("end", ["lookup_end", "close", "abandon"])
def test_ending_a_lookup_while_its_nextex_waits_cancels_the_backend_request(end: str) -> None:
    with running_backend(delay=30) as slow:
        provider = HttpPresenceDirectory(slow.url)
        with advertised(provider) as host:
            client = host.open_session()
            handle = host.lookup_begin(client, ALICE)
            got: dict[str, Any] = {}
            waiting = threading.Thread(target=lambda: got.update(r=host.lookup_next(handle)))
            waiting.start()
            until(lambda: slow.stats["in_flight"] == 1, "the backend request waiting")
            start = time.monotonic()
            if end == "lookup_end":
                host.lookup_end(handle)
            else:
                getattr(client, end)()  # NSPv2Cleanup / NSPv2ClientSessionRundown
            waiting.join(10)
            assert not waiting.is_alive()
            assert got["r"].code == WSAError.WSA_E_CANCELLED
            until(lambda: slow.stats["disconnected"] == 1, "the backend seeing the hang-up")
            assert time.monotonic() - start < 1.0  # not the request's timeout (1.5 s)
            assert slow.stats == {"requests": 1, "in_flight": 0, "answered": 0, "disconnected": 1}
            assert provider.wait_async_idle(5)
            stats = provider.async_stats()
            assert (stats["tasks"], stats["in_flight"], stats["cancelled"]) == (0, 0, 1)
            client.close()


# -- where the backend comes from -------------------------------------------------


def test_without_a_url_the_provider_runs_a_backend_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    provider = HttpPresenceDirectory()
    assert provider.backend_url is None and provider.embedded_backend is None
    with advertised(provider) as host:
        with host.open_session() as client:
            assert names(client.lookup("*@example.net")) == [a for a, _, _ in SEED]
            sign_in(client, "dave@example.net")
            assert names(client.lookup("dave@example.net")) == ["dave@example.net"]
        embedded = provider.embedded_backend
        assert embedded is not None and embedded.serving
        assert provider.backend_url == embedded.url
        assert embedded.stats["requests"] == 7  # listing, 3 entries, PUT, GET, DELETE
    assert provider.embedded_backend is None and not embedded.serving  # closed with it
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port_of(embedded.url)), timeout=5).close()


def test_an_embedded_backend_that_fails_to_start_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    real_start = PresenceBackend.start
    failures = [OSError(24, "Too many open files")]

    async def flaky_start(self: PresenceBackend) -> None:
        if failures:
            raise failures.pop()
        await real_start(self)

    monkeypatch.setattr(PresenceBackend, "start", flaky_start)
    provider = HttpPresenceDirectory()
    with advertised(provider) as host, host.open_session() as client:
        assert code_of(lambda: client.lookup(ALICE)) == WSAError.WSATRY_AGAIN
        assert provider.embedded_backend is None
        assert names(client.lookup(ALICE)) == [ALICE]  # started this time
        embedded = provider.embedded_backend
        assert embedded is not None and embedded.serving


def test_the_url_comes_from_the_argument_else_the_environment(
    monkeypatch: pytest.MonkeyPatch, backend: BackendThread
) -> None:
    monkeypatch.setenv(URL_VARIABLE, backend.url)
    assert HttpPresenceDirectory().backend_url == backend.url
    assert HttpPresenceDirectory("http://127.0.0.1:1").backend_url == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        HttpPresenceDirectory("https://127.0.0.1:1")
    for wrong in ("http://127.0.0.1:1/api", "http://127.0.0.1:1?x=1", "http://u@127.0.0.1:1"):
        with pytest.raises(ValueError, match=r"http://HOST:PORT URL \(.*no path"):
            HttpPresenceDirectory(wrong)
    assert HttpPresenceDirectory("http://127.0.0.1:1/").backend_url == "http://127.0.0.1:1"


# -- the commands -----------------------------------------------------------------

SPEC = "nspv2.examples.async_presence:HttpPresenceDirectory"


def without_url() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(URL_VARIABLE, None)
    return env


def test_check_passes_the_example() -> None:
    out = nspv2_cli("check", SPEC, env=without_url())
    assert out.returncode == 0, out.stdout + out.stderr
    assert "16 of 16 rules pass" in out.stdout


@contextlib.contextmanager
def presence_backend_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``nspv2 presence-backend ARGS`` as a child process, and its URL; always ended."""
    proc = subprocess.Popen(
        [*command(), "presence-backend", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=OUTSIDE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = threading.Event()
        lines: list[str] = []

        def first_line() -> None:
            assert proc.stdout is not None
            lines.append(proc.stdout.readline())
            ready.set()

        threading.Thread(target=first_line, daemon=True).start()
        assert ready.wait(20), "nspv2 presence-backend did not print its URL in 20 s"
        prefix = "presence backend listening on "
        if "--json" in args:
            yield proc, json.loads(lines[0])["url"]
            return
        assert lines[0].startswith(prefix), lines[0] + (proc.stderr.read() if proc.stderr else "")
        yield proc, lines[0][len(prefix) :].strip()
    finally:
        stop_process(proc, signal.SIGKILL, timeout=5)


def test_presence_backend_command_serves_until_a_signal() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        with presence_backend_process("--delay-ms", "100", "--no-seed") as (proc, url):
            assert url.startswith("http://127.0.0.1:")
            start = time.monotonic()
            status, _ = http_get(url, f"/v1/presence/{ALICE}")
            assert status == 404 and time.monotonic() - start >= 0.1  # no seed, delayed
            os.kill(proc.pid, sig)
            assert proc.wait(10) == 0
    usage = nspv2_cli("presence-backend", "--delay-ms", "60001")
    assert usage.returncode == 2 and "out of range" in usage.stderr
    helped = nspv2_cli("presence-backend", "--help")
    assert helped.returncode == 0 and "--debug" in helped.stdout and "--json" in helped.stdout


def test_presence_backend_command_ends_quietly_with_clients_connected() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with presence_backend_process("--json") as (proc, url):
            idle = socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
            with idle:
                idle.sendall(b"GET /v1/stats HTTP/1.1\r\n\r\n")
                assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")  # kept alive, idle
                os.kill(proc.pid, sig)
                assert proc.wait(10) == 0
                assert idle.recv(65536) == b""  # closed by the backend
            assert proc.stderr is not None
            assert proc.stderr.read() == ""


def test_presence_backend_json_prints_the_url() -> None:
    with presence_backend_process("--json") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        assert http_get(url, "/v1/stats")[0] == 200
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0


def http_get(url: str, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def test_served_provider_answers_from_the_backend_process() -> None:
    """``nspv2 presence-backend`` + ``nspv2 install`` + ``nspv2 serve`` with
    NSPV2_PRESENCE_URL, then ``nspv2 lookup`` and an ``nspv2.Client``; a
    lookup ended while its NextEx waits reaches the backend as a hang-up."""
    with presence_backend_process() as (backend_proc, url):
        installed = nspv2_cli("install", SPEC)
        assert installed.returncode == 0, installed.stderr
        assert str(HTTP_PRESENCE_PROVIDER_ID) in installed.stdout
        with serving(SPEC, env={URL_VARIABLE: url}, install=False) as served:
            # an async provider's default pool: its served lookups only wait
            assert "; 64 threads, keepalive" in served.log()
            env = dict(served.env)
            env.pop("NSPV2_SOCKET", None)  # found through the runtime folder
            found = nspv2_cli("lookup", ALICE, env=env, timeout=60)
            assert found.returncode == 0, found.stderr
            assert found.stdout.splitlines()[:3] == [
                ALICE,
                "  presence  MISTATUS_ONLINE",
                "  addresses 192.0.2.20:5060",
            ]
            with served.client() as client:
                sign_in(client, "dave@example.net", MISTATUS.MISTATUS_BUSY)
                assert http_get(url, "/v1/presence/dave@example.net")[1]["status"] == (
                    "MISTATUS_BUSY"
                )
                assert names(client.lookup("*@example.net")) == sorted(
                    [a for a, _, _ in SEED] + ["dave@example.net"]
                )
            # the client's session closed: dave signed out by the provider process
            assert http_get(url, "/v1/presence/dave@example.net")[0] == 404
            missing = nspv2_cli("lookup", "zed@example.net", env=env, timeout=60)
            assert missing.returncode == 1 and "WSASERVICE_NOT_FOUND" in missing.stderr
        assert http_get(url, "/v1/stats")[1]["disconnected"] == 0
        os.kill(backend_proc.pid, signal.SIGTERM)
        assert backend_proc.wait(10) == 0


PATIENT = """
from nspv2.examples.async_presence import HttpPresenceDirectory


class Patient(HttpPresenceDirectory):
    request_timeout = 3.5  # so that only a cancellation ends the request early
"""


def test_served_client_gone_while_nextex_waits_cancels_the_backend_request(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "patient.py"
    spec.write_text(PATIENT)
    with presence_backend_process("--delay-ms", "30000") as (_proc, url):
        with serving(f"{spec}:Patient", env={URL_VARIABLE: url}) as served:
            client = served.client()
            handle = client.lookup_begin(ALICE)
            got: dict[str, Any] = {}

            def next_result() -> None:
                try:
                    got["r"] = client.lookup_next(handle)
                except WinsockError as exc:
                    got["r"] = exc

            waiting = threading.Thread(target=next_result)
            waiting.start()
            until(lambda: http_get(url, "/v1/stats")[1]["in_flight"] == 1, "request waiting")
            start = time.monotonic()
            client.abandon()  # the client process vanishes: its session is run down
            waiting.join(10)
            assert isinstance(got["r"], ConnectionLost), got
            until(
                lambda: http_get(url, "/v1/stats")[1]["disconnected"] == 1,
                "the backend seeing the hang-up",
                timeout=3.0,
            )
            assert time.monotonic() - start < 3.0  # before the provider's own timeout
            assert http_get(url, "/v1/stats")[1]["answered"] == 0
            served.wait_log(r"ended: rundown, OTHER_COMMUNICATION_ERROR")
