"""nspv2.client.discovery: the runtime folder and which server to use (the
rules of docs/serve.md), on real folders, sockets and processes."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2.client import RuntimeDirRefused, ServerNotFound, discovery

from .served import private_folder


@pytest.fixture
def folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = private_folder()
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(path / "run"))
    monkeypatch.delenv("NSPV2_SOCKET", raising=False)
    try:
        yield path / "run"
    finally:
        shutil.rmtree(path)


def listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no such process (until reused, unlikely at once)


def test_where_the_runtime_folder_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(tmp_path / "x"))
    assert discovery.runtime_dir() == tmp_path / "x"
    monkeypatch.delenv("NSPV2_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert discovery.runtime_dir() == tmp_path / "nspv2"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "not-a-folder"))
    assert discovery.runtime_dir() == Path(f"/tmp/nspv2-{os.geteuid()}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert discovery.runtime_dir() == Path(f"/tmp/nspv2-{os.geteuid()}")
    assert discovery.server_socket_path(77) == Path(f"/tmp/nspv2-{os.geteuid()}/serve-77.sock")


def test_created_private_and_refused_otherwise(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not folder.exists()
    assert discovery.live_servers() == []  # missing: no server, nothing made
    assert not folder.exists()
    old = os.umask(0o022)
    try:
        assert discovery.runtime_dir(create=True) == folder
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)
    with pytest.raises(RuntimeDirRefused, match="mode 0755; it must be private to you") as caught:
        discovery.live_servers()
    assert caught.value.code == 10108
    with pytest.raises(RuntimeDirRefused):
        discovery.runtime_dir(create=True)  # an existing folder is never loosened or tightened
    folder.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(folder, 4242, -1)
        with pytest.raises(RuntimeDirRefused, match="owned by uid 4242"):
            discovery.choose()
        os.chown(folder, 0, -1)
    link = folder.parent / "link"
    link.symlink_to(folder)
    monkeypatch.setenv("NSPV2_RUNTIME_DIR", str(link))
    with pytest.raises(RuntimeDirRefused, match="not a folder"):
        discovery.live_servers()


def test_live_stale_and_choice(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    discovery.runtime_dir(create=True)
    with pytest.raises(ServerNotFound, match=r"no nspv2 provider process is serving \(start one"):
        discovery.choose()
    stale_pid = dead_pid()
    stale = listen(folder / f"serve-{stale_pid}.sock")
    (folder / "serve-1x.sock").touch()  # not a server's name
    (folder / f"serve-{os.getppid()}.sock").touch()  # not a socket
    try:
        with pytest.raises(ServerNotFound, match="no nspv2 provider"):
            discovery.choose()
        mine = listen(folder / f"serve-{os.getpid()}.sock")
        try:
            assert discovery.live_servers() == [
                discovery.ServerInfo(folder / f"serve-{os.getpid()}.sock", os.getpid())
            ]
            assert discovery.choose() == folder / f"serve-{os.getpid()}.sock"
            # process 1 exists (kill(1, 0) succeeds, or fails with EPERM): live
            other = listen(folder / "serve-1.sock")
            try:
                with pytest.raises(ServerNotFound) as caught:
                    discovery.choose()
                assert str(caught.value).endswith(
                    f"several provider processes are serving: 1 ({folder}/serve-1.sock), "
                    f"{os.getpid()} ({folder}/serve-{os.getpid()}.sock); "
                    "choose one with --socket or NSPV2_SOCKET"
                )
                assert discovery.choose(folder / "serve-1.sock") == folder / "serve-1.sock"
                monkeypatch.setenv("NSPV2_SOCKET", "/nowhere/s.sock")
                assert discovery.choose() == Path("/nowhere/s.sock")
                assert discovery.choose("/x.sock") == Path("/x.sock")  # explicit wins
                folder.chmod(0o755)  # with an explicit socket, no folder checks
                assert discovery.choose() == Path("/nowhere/s.sock")
                folder.chmod(0o700)
            finally:
                other.close()
        finally:
            mine.close()
        assert discovery.remove_stale() == [folder / f"serve-{stale_pid}.sock"]
        assert not (folder / f"serve-{stale_pid}.sock").exists()
        assert (folder / f"serve-{os.getpid()}.sock").exists()  # live: kept
    finally:
        stale.close()


def test_pid_alive() -> None:
    assert discovery.pid_alive(os.getpid())
    assert discovery.pid_alive(1)
    assert not discovery.pid_alive(dead_pid())
    assert not discovery.pid_alive(0) and not discovery.pid_alive(-1)
