"""A complete test file for the tutorial's provider, using nspv2's pytest plugin.

Save it next to presence.py and run ``python -m pytest test_presence.py``:
the ``nspv2_*`` fixtures come from the plugin that installing nspv2 registers.
"""

import pytest
from presence import Presence

from nspv2 import LUP, QuerySet, WinsockError, WSAError
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON

# Story 1: the provider on the native host, driven by a client session.


def test_lookup_through_the_host(nspv2_advertise, nspv2_client):
    nspv2_advertise(Presence())
    [result] = nspv2_client.lookup("alice@example.com")
    assert result.comment == "MISTATUS_ONLINE"
    assert str(result.cs_addrs[0].remote) == "192.0.2.10:5060"


def test_unknown_name(nspv2_advertise, nspv2_client):
    nspv2_advertise(Presence())
    with pytest.raises(WinsockError) as info:
        nspv2_client.lookup("nobody@example.com")
    assert info.value.code == WSAError.WSASERVICE_NOT_FOUND


def test_a_dying_client_is_run_down(nspv2_host, nspv2_advertise):
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


def test_rundown_alone(nspv2_harness, nspv2_no_unraisable):
    provider = Presence()
    h = nspv2_harness(provider)
    token = h.startup().value  # NSPv2Startup: a fresh session token
    assert provider.watchers == {token: []}
    h.rundown(token)  # only NSPv2ClientSessionRundown
    assert provider.watchers == {}
    assert provider.registry.open_counts() == {"sessions": 0, "lookups": 0}


def test_short_buffer_alone(nspv2_harness):
    h = nspv2_harness(Presence())
    token = h.startup().value
    handle = h.begin(token, QuerySet("alice@example.com"), LUP.LUP_RETURN_ALL).value
    short = h.next(handle, buffer_size=16)
    assert short.completion == WSAError.WSAEFAULT  # and the exact size:
    full = h.next(handle, buffer_size=short.buffer_length)
    assert full.ok and full.guard_intact
    assert full.result is not None and full.result.service_instance_name == "alice@example.com"
