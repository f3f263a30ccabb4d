"""SlotHarness on native tables: a loaded provider's table and a table filled by C.

The calls go through the C function pointers of the table; the provider sets
its last error with the host's WSASetLastError on the calling thread and
completes NextEx / SetServiceEx with WSAProviderCompleteAsyncCall from
threads of its own, on handles from nspv2_async_create.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2 import LUP, NSPV2_ROUTINE, SOCKET_ERROR, QuerySet, WSAError
from nspv2.host import NativeProvider, NativeTable
from nspv2.host.winsock import load_native_host
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.winsock2 import NO_ERROR, WSAESETSERVICEOP
from nspv2.testing import SlotHarness
from nspv2.testing.pytest_plugin import LoadNative, MakeHarness
from tests.loaderbuild import build

REGISTER = int(WSAESETSERVICEOP.RNRSERVICE_REGISTER)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("loader") / "loader_provider.so")


@pytest.fixture
def table(lib: Path) -> Iterator[NativeTable]:
    provider = NativeProvider.load(lib)
    try:
        yield provider.tables[0]
    finally:
        provider.close()


def test_register_lookup_rundown_through_the_table(table: NativeTable) -> None:
    with SlotHarness(table, timeout=5) as h:
        assert h.native and h.guid.to_uuid() == table.provider_id
        owner = h.startup()
        reader = h.startup()
        assert owner.ok and reader.ok and owner.value != reader.value
        # SetServiceEx completes from a thread of the provider's, on a host handle
        registered = h.set_service(owner.value, QuerySet("zed@nowhere.test"), REGISTER)
        assert registered.ok and registered.completion == NO_ERROR
        begun = h.begin(reader.value, QuerySet("zed@nowhere.test"))
        assert begun.ok and begun.value
        first = h.next(begun.value)
        assert first.ok and first.guard_intact and first.result_error is None
        assert first.result is not None
        assert (first.result.service_instance_name, first.result.comment) == (
            "zed@nowhere.test",
            "registered",
        )
        assert h.next(begun.value).completion == WSAError.WSA_E_NO_MORE
        assert h.end(begun.value).ok
        # the owner's client goes away: its name with it
        assert h.rundown(owner.value).returned is None
        gone = h.begin(reader.value, QuerySet("zed@nowhere.test"))
        assert gone.returned == SOCKET_ERROR
        assert gone.last_error == WSAError.WSASERVICE_NOT_FOUND  # the host's last error
        assert h.cleanup(reader.value).ok


def test_last_error_is_read_on_the_calling_thread(table: NativeTable) -> None:
    with SlotHarness(table) as h:
        ended = h.end(0xDEAD)
        assert ended.returned == SOCKET_ERROR
        assert ended.last_error == WSAError.WSA_INVALID_HANDLE
        assert ended.code == WSAError.WSA_INVALID_HANDLE
        # a later success starts from a clean last error
        assert h.startup().last_error == NO_ERROR


def test_short_buffer_then_exact_size(table: NativeTable) -> None:
    with SlotHarness(table) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("amy@example.com")).value
        short = h.next(handle, buffer_size=16)
        assert short.completion == WSAError.WSAEFAULT and short.guard_intact
        exact = h.next(handle, buffer_size=short.buffer_length)
        assert exact.ok and exact.guard_intact and exact.result is not None
        assert exact.result.comment == "listed"
        h.end(handle)


@pytest.mark.parametrize("offset", range(16))
def test_buffers_at_every_alignment(table: NativeTable, offset: int) -> None:
    with SlotHarness(table) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("ann@example.com"), LUP.LUP_RETURN_ALL).value
        short = h.next(handle, buffer_size=8, offset=offset)
        assert short.buffer_address % 16 == offset
        assert short.completion == WSAError.WSAEFAULT and short.guard_intact
        call = h.next(handle, buffer_size=short.buffer_length, offset=offset)
        assert call.buffer_address % 16 == offset
        assert call.ok and call.guard_intact
        assert "ann@example.com".encode("utf-16-le") in call.raw
        if offset % 8 == 0:
            assert call.result is not None
            assert call.result.service_instance_name == "ann@example.com"
        else:  # the reader wants a pointer-aligned query set: it says so
            assert call.result is None and "misaligned" in (call.result_error or "")
        h.end(handle)


def test_offset_outside_0_15_is_refused(table: NativeTable) -> None:
    with SlotHarness(table) as h, pytest.raises(ValueError):
        h.next(1, offset=16)


def test_a_call_never_completed_keeps_its_buffer_until_close(table: NativeTable) -> None:
    h = SlotHarness(table, timeout=0.3)
    token = h.startup().value
    handle = h.begin(token, QuerySet("silent@example.com")).value
    with pytest.raises(TimeoutError):
        h.next(handle)
    assert h.held == 1
    [buffer] = h._held
    h.end(handle)
    h.close()
    assert h.held == 0
    # Regression: close() used to drop the buffer, which the provider may
    # still write at any time; it is the process's now, never freed.
    from nspv2.testing import harness

    assert any(kept is buffer for kept in harness._NEVER_FREED)


def test_null_slots_are_not_called(lib: Path) -> None:
    with (
        NativeProvider.load(lib, args=["--null-slots"]) as provider,
        SlotHarness(provider.tables[0]) as h,
    ):
        started = h.startup()
        assert started.missing and started.code == WSAError.WSAEOPNOTSUPP and not started.ok
        assert h.cleanup(None).missing
        assert h.rundown(None).missing
        assert h.set_service(None, QuerySet("x@example.com"), REGISTER).missing
        assert not h.implements("NSPv2Startup") and h.implements("NSPv2LookupServiceBegin")
        # the mandatory ones run, with a NULL session argument
        handle = h.begin(None, QuerySet("gus@example.com")).value
        call = h.next(handle)
        assert call.ok and not call.missing
        assert h.end(handle).ok


def test_a_table_filled_by_c(tmp_path: Path) -> None:
    """The host's C reference provider, its table filled by C, no Host at all."""
    winsock = load_native_host()
    assert winsock.native is not None
    filled = NSPV2_ROUTINE()
    winsock.native.nspv2_ref_provider_routine(ctypes.addressof(filled))
    ref_id = GUID.in_dll(winsock.library, "nspv2_ref_provider_id").to_uuid()
    with SlotHarness(filled, provider_id=ref_id) as h:
        token = h.startup().value
        signed_in = h.set_service(token, QuerySet("alice@example.com"), REGISTER)
        assert signed_in.ok
        other = h.startup().value
        [found] = h.results(other, QuerySet("alice@example.com"))
        assert found.service_instance_name == "alice@example.com"
        h.rundown(token)
        gone = h.begin(other, QuerySet("alice@example.com"))
        assert gone.code == WSAError.WSASERVICE_NOT_FOUND
        h.cleanup(other)


def test_a_bare_table_needs_no_provider_id_but_takes_one() -> None:
    filled = NSPV2_ROUTINE()
    pid = uuid.uuid4()
    with SlotHarness(filled, provider_id=pid) as h:
        assert h.native and h.guid.to_uuid() == pid
        assert h.startup().missing  # an all-NULL table: nothing is called


def test_the_plugin_fixtures(
    lib: Path, nspv2_native: LoadNative, nspv2_harness: MakeHarness
) -> None:
    provider = nspv2_native(lib, args=["--exit", "5"])
    h = nspv2_harness(provider.tables[0])
    token = h.startup().value
    assert h.set_service(token, QuerySet("hal@nowhere.test"), REGISTER).ok
    [r] = h.results(token, QuerySet("hal@nowhere.test"))
    assert r.comment == "registered"


_FIXTURE_TEST = """
loaded = []


def test_load(nspv2_native, nspv2_harness):
    provider = nspv2_native(LIBRARY, args=["--exit", "5"])
    loaded.append(provider)
    assert nspv2_harness(provider.tables[0]).startup().ok


def test_closed_after_the_test():
    [provider] = loaded
    assert not provider.running and provider.exit_code == 5
"""


def test_the_native_fixture_closes_the_provider_after_the_test(lib: Path, tmp_path: Path) -> None:
    test_file = tmp_path / "test_fixture.py"
    test_file.write_text(f"LIBRARY = {str(lib)!r}\n" + _FIXTURE_TEST)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
