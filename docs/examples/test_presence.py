"""A complete test file for a provider, using nspv2's pytest plugin.

Run it with ``python -m pytest docs/examples/test_presence.py``: the
``nspv2_*`` fixtures come from the plugin that installing nspv2 registers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from nspv2 import LUP, CsAddr, Provider, QuerySet, Session, SocketAddress, WinsockError, WSAError
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON


class Presence(Provider):
    """A tiny NS_EMAIL provider: a fixed set of users, and per-session watch lists."""

    provider_id = uuid.UUID("c0ffee00-1111-4222-8333-444455556666")

    def __init__(self) -> None:
        self.users = {"alice@example.com": SocketAddress.parse("192.0.2.10", 5060)}
        self.watchers: dict[int, list[str]] = {}

    def startup(self, session: Session) -> None:
        self.watchers[session.token] = []

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        name = restrictions.service_instance_name or ""
        if name not in self.users:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
        self.watchers[session.token].append(name)
        yield QuerySet(name, comment="MISTATUS_ONLINE", cs_addrs=(CsAddr(remote=self.users[name]),))

    def client_session_rundown(self, session: Session) -> None:
        # The client died: forget what it was watching.
        del self.watchers[session.token]

    def cleanup(self, session: Session) -> None:
        del self.watchers[session.token]


# Story 1: the provider on the native host, driven by a client session.


def test_lookup_through_the_host(nspv2_advertise, nspv2_client) -> None:  # type: ignore[no-untyped-def]
    nspv2_advertise(Presence())
    [result] = nspv2_client.lookup("alice@example.com")
    assert result.comment == "MISTATUS_ONLINE"
    assert str(result.cs_addrs[0].remote) == "192.0.2.10:5060"


def test_unknown_name(nspv2_advertise, nspv2_client) -> None:  # type: ignore[no-untyped-def]
    nspv2_advertise(Presence())
    with pytest.raises(WinsockError) as info:
        nspv2_client.lookup("nobody@example.com")
    assert info.value.code == WSAError.WSASERVICE_NOT_FOUND


def test_a_dying_client_is_run_down(nspv2_host, nspv2_advertise) -> None:  # type: ignore[no-untyped-def]
    provider = nspv2_advertise(Presence())
    client = nspv2_host.open_session()
    client.lookup("alice@example.com")
    client.abandon()  # the host calls NSPv2ClientSessionRundown
    assert provider.watchers == {}
    ended = provider.registry.ended[-1]
    assert (
        ended.end_reason
        is CPNATFWT_SESSION_TERMINATION_REASON.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
    )


# Story 2: one callback in isolation, through its C function pointer.


def test_rundown_alone(nspv2_harness, nspv2_no_unraisable) -> None:  # type: ignore[no-untyped-def]
    provider = Presence()
    h = nspv2_harness(provider)
    token = h.startup().value  # NSPv2Startup: a fresh session token
    assert provider.watchers == {token: []}
    h.rundown(token)  # only NSPv2ClientSessionRundown
    assert provider.watchers == {}
    assert provider.registry.open_counts() == {"sessions": 0, "lookups": 0}


def test_short_buffer_alone(nspv2_harness) -> None:  # type: ignore[no-untyped-def]
    h = nspv2_harness(Presence())
    token = h.startup().value
    handle = h.begin(token, QuerySet("alice@example.com"), LUP.LUP_RETURN_ALL).value
    short = h.next(handle, buffer_size=16)
    assert short.completion == WSAError.WSAEFAULT  # and the exact size:
    full = h.next(handle, buffer_size=short.buffer_length)
    assert full.ok and full.guard_intact
    assert full.result is not None and full.result.service_instance_name == "alice@example.com"
