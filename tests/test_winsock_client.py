"""nspv2.client.WinsockClient: Winsock's client calls through the C client
library (ctypes), against real ``nspv2 serve`` processes (tests/served.py),
and ``nspv2 lookup`` without --socket, which uses it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2 import LUP, NS, QuerySet, WinsockError, WSAError
from nspv2.client import Client, WinsockClient
from nspv2.examples.email import EMAIL_PROVIDER_ID, sign_in
from nspv2.host.winsock import load_native_host
from nspv2.sdk.winsock2 import WSAESETSERVICEOP

from .clirun import nspv2_cli
from .served import Served, private_folder, serving

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the C client library is POSIX")

DAVE = "dave@example.com"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime folder of the test's own, for the servers and this process's client library."""
    folder = private_folder()
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(folder))
    monkeypatch.delenv("NSPV2_SOCKET", raising=False)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def served(runtime: Path) -> Iterator[Served]:
    with serving(runtime_dir=runtime) as server:
        yield server


def test_lookup_finds_a_name_signed_in_through_another_client(served: Served) -> None:
    load_native_host()  # the host library in this process too: the client's names stay its own
    with served.client() as dave:
        sign_in(dave, DAVE)
        with WinsockClient() as winsock:
            [found] = winsock.lookup(DAVE)
            assert found.service_instance_name == DAVE and found.comment == "MISTATUS_ONLINE"
            # a 1-byte first buffer: WSAEFAULT with the size needed, then the result
            assert winsock.lookup(DAVE, buffer_size=1) == [found]
            only = winsock.lookup(DAVE, NS.NS_EMAIL, LUP.LUP_RETURN_NAME, EMAIL_PROVIDER_ID)
            assert [r.service_instance_name for r in only] == [DAVE]
            assert only[0].comment is None  # RETURN_NAME only
            with pytest.raises(WinsockError) as missing:
                winsock.lookup("nobody@example.com")
            assert missing.value.code == WSAError.WSASERVICE_NOT_FOUND


def test_set_service_registers_in_the_process_session_until_the_last_cleanup(
    served: Served,
) -> None:
    winsock = WinsockClient()
    winsock.startup()
    try:
        reg = QuerySet("erin@example.com")
        winsock.set_service(reg, WSAESETSERVICEOP.RNRSERVICE_REGISTER)
        assert [r.service_instance_name for r in winsock.lookup("erin@example.com")] == [
            "erin@example.com"
        ]
        with Client(socket=served.socket) as other:
            assert len(other.lookup("erin@example.com")) == 1
    finally:
        winsock.cleanup()  # the last one: GOODBYE, NSPv2Cleanup signs erin out
    served.wait_log(r"ended: cleanup")
    with Client(socket=served.socket) as other, pytest.raises(WinsockError) as gone:
        other.lookup("erin@example.com")
    assert gone.value.code == WSAError.WSASERVICE_NOT_FOUND


def test_lookup_begin_next_end_one_at_a_time(served: Served) -> None:
    with served.client() as dave:
        sign_in(dave, DAVE)
        with WinsockClient() as winsock:
            handle = winsock.lookup_begin(DAVE)
            try:
                short = winsock.lookup_next(handle, buffer_size=8)
                assert short.code == WSAError.WSAEFAULT and short.buffer_length > 8
                full = winsock.lookup_next(handle, buffer_size=short.buffer_length)
                assert full.code == 0 and full.result is not None
                assert full.result.service_instance_name == DAVE
                assert winsock.lookup_next(handle).code == WSAError.WSA_E_NO_MORE
            finally:
                winsock.lookup_end(handle)
            with pytest.raises(WinsockError) as ended:
                winsock.lookup_end(handle)
            assert ended.value.code == WSAError.WSA_INVALID_HANDLE


def test_no_provider_process_is_not_found_with_the_librarys_reason(runtime: Path) -> None:
    with WinsockClient() as winsock, pytest.raises(WinsockError) as none:
        winsock.lookup(DAVE)
    assert none.value.code == WSAError.WSASERVICE_NOT_FOUND
    assert "WSALookupServiceBeginW: " in str(none.value)  # and the library's explanation
    assert none.value.message and len(none.value.message) > len("WSALookupServiceBeginW: ")


def test_refuses_out_of_range_numbers_before_calling() -> None:
    winsock = WinsockClient()
    with pytest.raises(ValueError):
        winsock.lookup(DAVE, flags=-1)
    with pytest.raises(ValueError):
        winsock.lookup_next(0, buffer_size=2**32)


def test_cli_lookup_without_socket_goes_through_the_client_library(served: Served) -> None:
    env = dict(served.env)
    env.pop("NSPV2_SOCKET")
    with served.client() as dave:
        sign_in(dave, DAVE)
        out = nspv2_cli("lookup", DAVE, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[:2] == [DAVE, "  presence  MISTATUS_ONLINE"]
        missing = nspv2_cli("lookup", "nobody@example.com", env=env, timeout=60)
        assert missing.returncode == 1
        assert missing.stderr.startswith("nobody@example.com: WSASERVICE_NOT_FOUND (10108)")
    served.stop()
    # the client library's own connection ended in order: NSPv2Cleanup, not a rundown
    assert served.count_log(r"ended: cleanup") >= 2
    assert served.count_log(r"ended: rundown") == 0
