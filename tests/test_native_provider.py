"""NativeProvider: loading a C provider library that advertises itself.

Everything goes through the real path: the library's own main() calls
WSAAdvertiseProvider (and WSCInstallNameSpaceEx) on nspv2's host, client
sessions of a Host reach it through the host's routing, close() sends the
console close event the provider's handler waits for.
"""

from __future__ import annotations

import ctypes
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2 import LUP, NS, Host, QuerySet, WinsockError, WSAError
from nspv2.host import NativeProvider, NativeProviderError, NativeTable, library_path
from nspv2.host.native import host_copies
from tests.loaderbuild import build


def loader_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"4c4f4144-4552-4e53-8a1f-{n:012x}")


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("loader") / "loader_provider.so")


@pytest.fixture(scope="module")
def other_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second copy of the host library, at another path (another file)."""
    folder = tmp_path_factory.mktemp("otherhost")
    copy = folder / "libnspv2host-other.so"
    shutil.copyfile(library_path(), copy)
    return copy


@pytest.fixture
def host() -> Iterator[Host]:
    with Host(auto_install=True) as h:
        yield h


def advertised(host: Host) -> list[uuid.UUID]:
    from nspv2.sdk.guiddef import GUID

    count = ctypes.c_uint32(0)
    ids = (GUID * 16)()
    assert host.native.nspv2_host_providers(ids, 16, ctypes.byref(count)) == 0
    return [ids[i].to_uuid() for i in range(count.value)]


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False


def count(provider: NativeProvider, what: str) -> int:
    fn = provider.library.loader_count
    fn.argtypes = [ctypes.c_char_p]
    fn.restype = ctypes.c_int
    value: int = fn(what.encode())
    return value


def test_load_advertises_and_client_sessions_reach_it(lib: Path, host: Host) -> None:
    provider = NativeProvider.load(lib, args=["--exit", "7"], timeout=10)
    try:
        [table] = provider.tables
        assert isinstance(table, NativeTable)
        assert table.provider_id == loader_id(1)
        assert table.namespace == NS.NS_EMAIL and table.blob is None
        assert table.name == lib.name  # it did not install: the file name
        assert table.implements("NSPv2Startup") and table.implements("NSPv2SetServiceEx")
        assert loader_id(1) in advertised(host)
        with host.open_session() as client:
            [result] = client.lookup("bob@example.com")
            assert (result.service_instance_name, result.comment) == ("bob@example.com", "listed")
            with pytest.raises(WinsockError) as info:
                client.lookup("nobody@elsewhere.test")
            assert info.value.code == WSAError.WSASERVICE_NOT_FOUND
        assert count(provider, "startups") == 1 and count(provider, "cleanups") == 1
        assert provider.running and provider.exit_code is None
    finally:
        code = provider.close()
    assert code == 7 and provider.exit_code == 7 and not provider.running
    assert loader_id(1) not in advertised(host)  # it unadvertised itself
    assert provider.close() == 7  # twice is harmless


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NativeProviderError, match="no such file"):
        NativeProvider.load(tmp_path / "absent.so")


def test_not_a_shared_library(tmp_path: Path) -> None:
    text = tmp_path / "provider.so"
    text.write_text("not ELF\n")
    with pytest.raises(NativeProviderError, match="could not be loaded as a shared library"):
        NativeProvider.load(text)


def test_no_such_entry_point(lib: Path) -> None:
    with pytest.raises(NativeProviderError, match="has no entry point 'provider_main'"):
        NativeProvider.load(lib, entry="provider_main")


def test_an_entry_that_returns_without_advertising_reports_its_code(lib: Path) -> None:
    started = time.monotonic()
    with pytest.raises(NativeProviderError, match=r"returned 3 without advertising a provider"):
        NativeProvider.load(lib, args=["--return", "3"], timeout=10)
    assert time.monotonic() - started < 5  # not the timeout: it noticed the return


def test_an_entry_that_blocks_without_advertising_times_out_and_is_stopped(lib: Path) -> None:
    started = time.monotonic()
    with pytest.raises(NativeProviderError, match=r"did not advertise a provider .* within 0.5 s"):
        NativeProvider.load(lib, args=["--block"], timeout=0.5)
    assert time.monotonic() - started < 4
    # the loader sent it the close event: its thread is gone
    assert wait_until(
        lambda: not any(t.name.startswith("nspv2 native loader") for t in threading.enumerate())
    )


def test_two_providers_two_tables(lib: Path, host: Host) -> None:
    with NativeProvider.load(lib, args=["--count", "2"], expect=2) as provider:
        assert [t.provider_id for t in provider.tables] == [loader_id(1), loader_id(2)]
        with host.open_session() as client:
            for pid in (loader_id(1), loader_id(2)):
                [r] = client.lookup(QuerySet("carol@example.com", provider_id=pid))
                assert r.comment == "listed"
            # NS_EMAIL: the first in catalog order answers; non-authoritative, both do
            assert len(client.lookup("carol@example.com")) == 1
            every = LUP.LUP_RETURN_ALL | LUP.LUP_NON_AUTHORITATIVE
            assert len(client.lookup("carol@example.com", every)) == 2
    assert provider.exit_code == 0
    assert not {loader_id(1), loader_id(2)} & set(advertised(host))


def test_install_records_namespace_identifier_and_blob(lib: Path) -> None:
    # NS_DNS: the catalog keeps any blob of it as given (an NS_EMAIL one must follow nsemail.h)
    args = ["--install", "Loader NSP", "--namespace", str(int(NS.NS_DNS)), "--blob"]
    with NativeProvider.load(lib, args=args) as provider:
        [table] = provider.tables
        assert table.namespace == NS.NS_DNS
        assert table.blob == b"loader-blob"
        assert table.name == "Loader NSP"


def test_null_optional_slots(lib: Path, host: Host) -> None:
    with NativeProvider.load(lib, args=["--null-slots"]) as provider:
        [table] = provider.tables
        for slot in (
            "NSPv2Startup",
            "NSPv2Cleanup",
            "NSPv2SetServiceEx",
            "NSPv2ClientSessionRundown",
        ):
            assert not table.implements(slot)
        assert table.implements("NSPv2LookupServiceNextEx")
        with host.open_session() as client:  # the host skips NULL Startup/Cleanup
            [r] = client.lookup("dave@example.com")
            assert r.comment == "listed"
            with pytest.raises(WinsockError) as info:
                client.set_service(QuerySet("dave@example.com"), 0)
            assert info.value.code == WSAError.WSAEOPNOTSUPP
            client.abandon()  # NULL Rundown: nothing to call, nothing breaks
        assert count(provider, "startups") == 0


def test_close_unadvertises_what_it_left_and_the_host_runs_its_sessions_down(
    lib: Path, host: Host
) -> None:
    provider = NativeProvider.load(lib, args=["--leave"])
    client = host.open_session()
    client.lookup("erin@example.com")  # the session started on the provider
    assert count(provider, "rundowns") == 0
    assert provider.close() == 0  # main returned without unadvertising
    assert loader_id(1) not in advertised(host)
    assert count(provider, "rundowns") == 1  # the host ran the session down
    client.close()


def test_close_without_a_handler_times_out_then_unadvertises(lib: Path, host: Host) -> None:
    provider = NativeProvider.load(lib, args=["--no-handler", "--linger-ms", "1500"])
    started = time.monotonic()
    assert provider.close(timeout=0.2) is None  # still running
    assert time.monotonic() - started < 1.2
    assert provider.running
    assert loader_id(1) not in advertised(host)  # the loader unadvertised it
    assert wait_until(lambda: not provider.running)  # its main ends on its own
    assert provider.exit_code == 0


def test_a_provider_linked_to_another_copy_of_the_host_reaches_nspv2s_host(
    tmp_path: Path, other_host: Path, host: Host
) -> None:
    libs = [f"-L{other_host.parent}", f"-l:{other_host.name}", f"-Wl,-rpath,{other_host.parent}"]
    linked = build(tmp_path / "linked_to_other.so", libs=libs)
    with NativeProvider.load(linked) as provider:
        # the copy really is mapped (its DT_NEEDED), and nspv2's host got the provider
        assert other_host in host_copies()
        assert loader_id(1) in advertised(host)
        with host.open_session() as client:
            [r] = client.lookup("frank@example.com")
            assert r.comment == "listed"
    assert provider.exit_code == 0


def test_a_provider_advertising_on_another_copy_times_out_naming_it(
    lib: Path, other_host: Path, host: Host
) -> None:
    with pytest.raises(NativeProviderError) as info:
        NativeProvider.load(lib, args=["--other-host", str(other_host)], timeout=1.0)
    message = str(info.value)
    assert "did not advertise" in message
    assert "Another copy of the host library is mapped" in message
    assert str(other_host) in message
    assert loader_id(1) not in advertised(host)
    assert wait_until(
        lambda: not any(t.name.startswith("nspv2 native loader") for t in threading.enumerate())
    )


def test_expect_must_be_positive(lib: Path) -> None:
    with pytest.raises(ValueError):
        NativeProvider.load(lib, expect=0)


def test_close_refuses_while_a_provider_loaded_later_is_open(
    lib: Path, tmp_path: Path, host: Host
) -> None:
    # Regression: a console event reaches the newest handler first and stops
    # at the first that takes it, so closing the older provider stopped the
    # newer one and left the older running.
    from tests.nativebuild import build_provider, email_sources

    email = build_provider(tmp_path, email_sources(), compat=True)
    older = NativeProvider.load(lib)
    newer = NativeProvider.load(email)
    try:
        with pytest.raises(NativeProviderError, match=r"close .* first"):
            older.close(timeout=1.0)
        assert older.running and newer.running
    finally:
        assert newer.close() == 0
        assert older.close() == 0
    assert not older.running and not newer.running
