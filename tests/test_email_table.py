"""Run the shared NS_EMAIL table against the Python and the C provider.

Each row runs through the native host (client sessions, WSASetServiceW,
WSALookupServiceBegin/Next/End), so both providers are driven by the same C
code and judged by the same expectations; then the two transcripts must be
identical.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nspv2 import (
    LUP,
    MISTATUS,
    NO_ERROR,
    WSAESETSERVICEOP,
    Host,
    QuerySet,
    WinsockError,
    WSAError,
)
from nspv2.examples.email import EmailDirectory, encode_presence
from nspv2.provider.queryset import CsAddr, SocketAddress

from .email_cases import CASES, Case, R


def sockaddr(text: str) -> CsAddr:
    host, _, port = text.rpartition(":")
    return CsAddr(None, SocketAddress.parse(host.strip("[]"), int(port)))


def summarize(q: QuerySet) -> R:
    return R(
        q.service_instance_name,
        q.comment,
        tuple(str(c.remote) for c in q.cs_addrs),
        q.output_flags,
        q.version.version if q.version else None,
        q.blob,
    )


class Runner:
    def __init__(self, host: Host, provider_id: uuid.UUID) -> None:
        self.host = host
        self.pid = provider_id
        self.sessions: dict[str, Any] = {}
        self.handles: dict[str, int] = {}

    def _set(self, session: str, qs: QuerySet, op: WSAESETSERVICEOP, flags: int = 0) -> int:
        try:
            self.host.set_service(self.sessions[session], qs, op, flags)
            return NO_ERROR
        except WinsockError as exc:
            return exc.code

    def run(self, case: Case) -> list[tuple[Any, ...]]:
        transcript: list[tuple[Any, ...]] = []
        for step in case.steps:
            op = step[0]
            if op == "open":
                self.sessions[step[1]] = self.host.open_session()
                got: tuple[Any, ...] = (op, step[1])
            elif op in ("close", "abandon"):
                getattr(self.sessions[step[1]], op)()
                got = (op, step[1])
            elif op == "reg":
                _, s, name, addrs, status, flags, _want = step
                blob = encode_presence(status) if isinstance(status, MISTATUS) else status
                qs = QuerySet(
                    name,
                    provider_id=self.pid,
                    cs_addrs=tuple(sockaddr(a) for a in addrs),
                    blob=blob,
                )
                got = (op, s, name, self._set(s, qs, WSAESETSERVICEOP.RNRSERVICE_REGISTER, flags))
            elif op == "invite":
                _, s, inviter, invitee, _want = step
                qs = QuerySet(inviter, provider_id=self.pid, query_string=f"invite={invitee}")
                got = (
                    op,
                    s,
                    inviter,
                    invitee,
                    self._set(s, qs, WSAESETSERVICEOP.RNRSERVICE_REGISTER),
                )
            elif op == "dereg":
                _, s, name, addrs, _want = step
                qs = QuerySet(
                    name, provider_id=self.pid, cs_addrs=tuple(sockaddr(a) for a in addrs)
                )
                got = (op, s, name, self._set(s, qs, WSAESETSERVICEOP.RNRSERVICE_DEREGISTER))
            elif op == "delete":
                _, s, name, _want = step
                got = (
                    op,
                    s,
                    name,
                    self._set(
                        s, QuerySet(name, provider_id=self.pid), WSAESETSERVICEOP.RNRSERVICE_DELETE
                    ),
                )
            elif op == "look":
                _, s, name, flags, _want, _results = step
                try:
                    found = self.host.lookup(
                        self.sessions[s], QuerySet(name, provider_id=self.pid), flags
                    )
                    got = (op, s, name, NO_ERROR, [summarize(q) for q in found])
                except WinsockError as exc:
                    got = (op, s, name, exc.code, [])
            elif op == "begin":
                _, s, label, name, flags, _want = step
                try:
                    self.handles[label] = self.host.lookup_begin(
                        self.sessions[s], QuerySet(name, provider_id=self.pid), flags
                    )
                    got = (op, s, label, NO_ERROR)
                except WinsockError as exc:
                    got = (op, s, label, exc.code)
            elif op == "next":
                _, label, _want, _r = step
                res = self.host.lookup_next(self.handles[label], 0, 4096)
                got = (op, label, res.code, summarize(res.result) if res.result else None)
            elif op == "end":
                _, label, _want = step
                try:
                    self.host.lookup_end(self.handles[label])
                    got = (op, label, NO_ERROR)
                except WinsockError as exc:
                    got = (op, label, exc.code)
            else:  # pragma: no cover
                raise AssertionError(f"unknown step {op}")
            transcript.append(got)
        return transcript


def expected(case: Case) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for step in case.steps:
        op = step[0]
        if op in ("open", "close", "abandon"):
            out.append(step)
        elif op == "reg":
            out.append((op, step[1], step[2], step[6]))
        elif op == "invite":
            out.append((op, step[1], step[2], step[3], step[4]))
        elif op in ("dereg",):
            out.append((op, step[1], step[2], step[4]))
        elif op == "delete":
            out.append((op, step[1], step[2], step[3]))
        elif op == "look":
            out.append((op, step[1], step[2], step[4], step[5]))
        elif op == "begin":
            out.append((op, step[1], step[2], step[5]))
        elif op == "next":
            out.append((op, step[1], step[2], step[3]))
        elif op == "end":
            out.append((op, step[1], step[2]))
    return out


@pytest.fixture
def host() -> Iterator[Host]:
    with Host(auto_install=True) as h:
        yield h


def run_python(host: Host, case: Case) -> list[tuple[Any, ...]]:
    provider = EmailDirectory()
    host.advertise(provider)
    try:
        return Runner(host, EmailDirectory.provider_id).run(case)
    finally:
        host.close()
        assert provider.registry.open_counts() == {"sessions": 0, "lookups": 0}


def run_c(host: Host, case: Case) -> list[tuple[Any, ...]]:
    if "nspv2_ref_provider_reset" not in dir(host.winsock.library) and not hasattr(
        host.winsock.library, "nspv2_ref_provider_reset"
    ):
        pytest.fail("the C reference provider lacks nspv2_ref_provider_reset")
    host.winsock.library.nspv2_ref_provider_reset()
    pid = host.advertise_reference_provider()
    try:
        return Runner(host, pid).run(case)
    finally:
        host.close()


def compare(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"step {i}: got {g}, want {w}"


@pytest.mark.parametrize("case", CASES, ids=[c.title for c in CASES])
def test_python_provider(host: Host, case: Case) -> None:
    compare(run_python(host, case), expected(case))


@pytest.mark.parametrize("case", CASES, ids=[c.title for c in CASES])
def test_c_provider_agrees_row_by_row(case: Case) -> None:
    with Host(auto_install=True) as h1:
        python = run_python(h1, case)
    with Host(auto_install=True) as h2:
        c = run_c(h2, case)
    compare(c, expected(case))
    assert c == python


def test_the_table_covers_the_spec() -> None:
    ops = {step[0] for case in CASES for step in case.steps}
    assert ops == {
        "open",
        "close",
        "abandon",
        "reg",
        "invite",
        "dereg",
        "delete",
        "look",
        "begin",
        "next",
        "end",
    }
    codes = {
        step[-1]
        for case in CASES
        for step in case.steps
        if step[0] in ("reg", "invite", "dereg", "delete")
    }
    assert {int(WSAError.WSAEALREADY), int(WSAError.WSAEACCES), int(WSAError.WSAEREFUSED)} <= codes


def test_python_snapshot_is_taken_under_the_directory_lock(host: Host) -> None:
    """NextEx reads its entry under the directory's lock, as the C twin's
    email_snapshot_L does: while another thread holds the lock, a next
    through the native host waits for it, then sees what was written."""
    provider = EmailDirectory()
    host.advertise(provider)
    session = host.open_session()
    alice = QuerySet("alice@example.com", provider_id=EmailDirectory.provider_id)
    host.set_service(session, alice, WSAESETSERVICEOP.RNRSERVICE_REGISTER)
    handle = host.lookup_begin(session, alice, LUP.LUP_RETURN_ALL)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(host.lookup_next(handle, 0, 4096)))
    with provider._lock:
        worker.start()
        worker.join(0.3)
        waited = worker.is_alive()
        entry = provider._entries["alice@example.com"]
        entry.status = MISTATUS.MISTATUS_BUSY  # an update made under the lock
        entry.version += 1
        entry.changed = True
    worker.join(10)
    assert waited, "NextEx read the entry without taking the directory's lock"
    [res] = results
    assert res.code == NO_ERROR and res.result is not None
    assert res.result.comment == "MISTATUS_BUSY"
    assert res.result.version is not None and res.result.version.version == 2
    host.lookup_end(handle)
    host.close()
