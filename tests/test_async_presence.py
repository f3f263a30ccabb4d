"""The asyncio example: the HTTP presence backend (routes, errors, delay, a
client hanging up mid-delay, bounds), the provider answering NS_EMAIL from
it through the native host (lookups, sign-in, sign-out, error mapping,
cancellation reaching the backend), ``nspv2 check``, and the real processes
(``nspv2 presence-backend``, ``nspv2 serve``, ``nspv2 lookup``)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nspv2.examples.presence_backend import (
    SEED,
    BackendThread,
    PresenceBackend,
    running_backend,
)

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
    ],
)
def test_backend_answers_malformed_requests_with_an_error(
    backend: BackendThread, data: bytes, status: int
) -> None:
    out = raw(backend, data + b"GET /v1/stats HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:80]
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
