"""Host and the namespace catalog: only an installed provider advertises;
``Host(auto_install=True)`` installs what is missing and uninstalls exactly
what it installed. Everything through the host's C functions, on this
test's own catalog file (NSPV2_CATALOG, tests/conftest.py)."""

from __future__ import annotations

import ctypes
import uuid
from pathlib import Path

import pytest

from nspv2 import Host, Provider, QuerySet, WinsockError
from nspv2.host import tables
from nspv2.provider.registry import Session
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.winsock2 import NO_ERROR, NS, WSAError
from nspv2.sdk.wintypes import wstr

PID = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000c501")


class Here(Provider):
    provider_id = PID
    name = "Here directory"

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        return [QuerySet(restrictions.service_instance_name, comment="here")]


def installed(host: Host, pid: uuid.UUID = PID) -> bool:
    guid = GUID.from_uuid(pid)
    return bool(host.native.nspv2_host_installed(guid, None, None, None, None) == NO_ERROR)


def install_by_hand(host: Host, pid: uuid.UUID = PID) -> None:
    guid = GUID.from_uuid(pid)
    text = wstr("someone else's")
    rc = host.winsock.WSCInstallNameSpaceEx(
        ctypes.cast(text, ctypes.POINTER(ctypes.c_uint16)),
        None,
        int(NS.NS_EMAIL),
        1,
        ctypes.byref(guid),
        None,
    )
    host.winsock.check(rc, "WSCInstallNameSpaceEx")


def uninstall_by_hand(host: Host, pid: uuid.UUID = PID) -> None:
    guid = GUID.from_uuid(pid)
    host.winsock.check(host.winsock.WSCUnInstallNameSpace(ctypes.byref(guid)), "uninstall")


def test_auto_install_installs_for_the_advertise_and_uninstalls_after(
    catalog_path: Path,
) -> None:
    with Host(auto_install=True) as host:
        assert not installed(host)
        entry = host.advertise(Here())
        assert entry.installed_here and installed(host)
        assert str(PID) in catalog_path.read_text()  # the catalog in effect: this test's file
        with host.open_session() as client:
            assert [r.comment for r in client.lookup("bob@example.com")] == ["here"]
        host.unadvertise(PID)
        assert not installed(host)
        assert str(PID) not in catalog_path.read_text()
        host.advertise(Here())  # again: installed again
        assert installed(host)
    assert not installed(host)  # close() uninstalled it too


def test_auto_install_leaves_what_someone_else_installed() -> None:
    with Host(auto_install=True) as host:
        install_by_hand(host)
        try:
            entry = host.advertise(Here())
            assert not entry.installed_here
            host.close()
            assert installed(host)
        finally:
            uninstall_by_hand(host)


def test_auto_install_racing_another_installer_leaves_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Installed between the Host's look and its WSCInstallNameSpaceEx: the
    install fails (already installed), the advertise goes on, and the
    provider stays installed after close (it is the other installer's)."""
    with Host(auto_install=True) as host:
        real = Host._installed
        looks: list[bool] = []

        def racing(self: Host, guid: GUID) -> bool:
            if not looks:  # the Host's first look: not yet; the other installer wins now
                looks.append(False)
                install_by_hand(host)
                return False
            looks.append(real(self, guid))
            return looks[-1]

        monkeypatch.setattr(Host, "_installed", racing)
        try:
            entry = host.advertise(Here())
            assert looks == [False, True] and not entry.installed_here
            with host.open_session() as client:
                assert [r.comment for r in client.lookup("x@example.com")] == ["here"]
            monkeypatch.undo()
            host.close()
            assert installed(host)
        finally:
            uninstall_by_hand(host)


def test_auto_install_failing_install_is_raised_and_nothing_advertised() -> None:
    class LongName(Here):
        name = "x" * 40000  # above every identifier limit: WSCInstallNameSpaceEx refuses it

    with Host(auto_install=True) as host:
        before = tables.advertised_count()
        with pytest.raises(WinsockError) as failed:
            host.advertise(LongName())
        assert failed.value.code == WSAError.WSAEINVAL
        assert "WSCInstallNameSpaceEx (auto_install)" in str(failed.value)
        assert PID not in host.advertised and tables.advertised_count() == before
        assert not installed(host)
        host.advertise(Here())  # nothing left behind


def test_advertise_of_an_uninstalled_provider_is_refused_saying_how_to_install() -> None:
    with Host() as host:
        assert not host.auto_install
        before = tables.advertised_count()
        with pytest.raises(WinsockError) as failed:
            host.advertise(Here())
        assert failed.value.code == WSAError.WSAEINVALIDPROVIDER
        message = str(failed.value)
        assert "Here directory" in message and str(PID) in message
        assert "nspv2 install" in message and "Host(auto_install=True)" in message
        assert PID not in host.advertised and tables.advertised_count() == before
        assert not installed(host)  # Host() never installs


def test_plain_host_advertises_what_is_installed_and_leaves_it_installed() -> None:
    with Host() as host:
        install_by_hand(host)
        try:
            entry = host.advertise(Here())
            assert not entry.installed_here
            with host.open_session() as client:
                assert [r.comment for r in client.lookup("x@example.com")] == ["here"]
            host.close()
            assert installed(host)
        finally:
            uninstall_by_hand(host)


PID2 = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000c502")


class There(Here):
    provider_id = PID2
    name = "There directory"


def test_auto_install_uninstalls_even_when_the_unadvertise_fails() -> None:
    """Another Host of the process unadvertised the provider first: this
    Host's unadvertise fails (WSAEINVAL from the host), yet what it installed
    is uninstalled; close() goes on through every provider, then raises the
    first failure."""
    owner = Host(auto_install=True)
    other = Host()
    owner.advertise(Here())
    owner.advertise(There())
    assert installed(owner) and installed(owner, PID2)
    other.unadvertise(PID)  # the host forgets PID: owner's own unadvertise will fail
    with pytest.raises(WinsockError) as failed:
        owner.close()
    assert failed.value.code == WSAError.WSAEINVAL
    assert not installed(owner)  # uninstalled although its unadvertise failed
    assert not installed(owner, PID2)  # the provider after the failing one: done too
    assert owner.advertised == {}
    with Host() as host:  # PID2 was really unadvertised: a new advertise is not "already"
        install_by_hand(host, PID2)
        try:
            host.advertise(There())
        finally:
            host.close()
            uninstall_by_hand(host, PID2)


def test_catalog_failures_carry_the_hosts_explanation(catalog_path: Path) -> None:
    """A corrupt catalog file: WSAAdvertiseProvider (and auto_install's
    WSCInstallNameSpaceEx) fail with WSANO_RECOVERY, and the message says
    which file and line, as nspv2_catalog_error_text does."""
    catalog_path.write_text("nspv2-catalog 1\ngarbage\n")
    for auto in (False, True):
        with Host(auto_install=auto) as host:
            with pytest.raises(WinsockError) as failed:
                host.advertise(Here())
            assert failed.value.code == WSAError.WSANO_RECOVERY
            message = str(failed.value)
            what = "WSCInstallNameSpaceEx (auto_install)" if auto else "WSAAdvertiseProvider"
            assert what in message, message
            assert str(catalog_path) in message and "line 2" in message, message
