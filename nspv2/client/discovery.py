"""Finding the provider process to talk to (the rules of docs/serve.md).

1. An explicit socket (``Client(socket=...)``, ``--socket PATH``) wins,
   then the environment variable ``NSPV2_SOCKET``. With an explicit socket
   no folder checks are made.
2. Else the runtime folder (:func:`runtime_dir`): ``NSPV2_RUNTIME_DIR`` if
   set; else ``$XDG_RUNTIME_DIR/nspv2`` when ``XDG_RUNTIME_DIR`` is a
   folder; else ``/tmp/nspv2-<euid>``. It must be owned by the effective uid
   and have no group or other permission bits, or it is refused
   (:class:`~nspv2.client.RuntimeDirRefused`). Servers listen on
   ``serve-<pid>.sock`` in it; such a socket is live while process ``pid``
   exists, stale otherwise.
3. Exactly one live server: use it. None, or several:
   :class:`~nspv2.client.ServerNotFound` saying so.

Nothing here connects: a socket file is judged by its name and its
process only (:func:`live_servers`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from .errors import RuntimeDirRefused, ServerNotFound

__all__ = [
    "ENV_RUNTIME_DIR",
    "ENV_SOCKET",
    "NO_SERVER",
    "ServerInfo",
    "check_private",
    "choose",
    "live_servers",
    "pid_alive",
    "remove_stale",
    "runtime_dir",
    "server_socket_path",
]

ENV_SOCKET = "NSPV2_SOCKET"
ENV_RUNTIME_DIR = "NSPV2_RUNTIME_DIR"

#: The error when no provider process is serving.
NO_SERVER = "no nspv2 provider process is serving (start one with: nspv2 serve MODULE:CLASS)"

_SOCKET_NAME = re.compile(r"serve-([1-9][0-9]{0,9})\.sock")


class ServerInfo(NamedTuple):
    """A live server's socket in the runtime folder, and its process id."""

    path: Path
    pid: int


def _default_dir() -> Path:
    explicit = os.environ.get(ENV_RUNTIME_DIR)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "nspv2"
    return Path(f"/tmp/nspv2-{os.geteuid()}")


def check_private(path: Path) -> None:
    """Raise :class:`RuntimeDirRefused` unless ``path`` is a folder (not a
    symbolic link) owned by the effective uid with no group/other bits."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirRefused(f"refusing {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirRefused(f"refusing {path}: not a folder; it must be private to you")
    problems = []
    if st.st_uid != os.geteuid():
        problems.append(f"owned by uid {st.st_uid}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(f"mode {mode:04o}")
    if problems:
        raise RuntimeDirRefused(
            f"refusing {path}: {' / '.join(problems)}; it must be private to you"
        )


def runtime_dir(create: bool = False) -> Path:
    """The runtime folder, checked private when it exists.

    With ``create``, a missing folder is made (mode 0700; missing parents
    too). A folder that exists but is not private raises
    :class:`RuntimeDirRefused`; without ``create`` a missing folder is
    returned as is (no server can be in it).
    """
    path = _default_dir()
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RuntimeDirRefused(f"cannot create {path}: {exc.strerror}") from None
        else:
            os.chmod(path, 0o700)  # the umask may have taken bits away, never added
    if create or os.path.lexists(path):
        check_private(path)
    return path


def server_socket_path(pid: int | None = None) -> Path:
    """``<runtime folder>/serve-<pid>.sock`` (``pid``: this process by default)."""
    return runtime_dir() / f"serve-{os.getpid() if pid is None else pid}.sock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (``kill(pid, 0)`` succeeds or fails
    with EPERM)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:  # pragma: no cover - EINVAL cannot happen for signal 0
        return exc.errno == errno.EPERM
    return True


def _sockets(folder: Path) -> list[ServerInfo]:
    """Every ``serve-<pid>.sock`` socket in ``folder`` (live or not), by pid."""
    found = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        match = _SOCKET_NAME.fullmatch(name)
        if match is None:
            continue
        path = folder / name
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except FileNotFoundError:
            continue
        found.append(ServerInfo(path, int(match.group(1))))
    return sorted(found, key=lambda s: s.pid)


def live_servers() -> list[ServerInfo]:
    """The live servers in the runtime folder, by pid (none if it is missing;
    :class:`RuntimeDirRefused` if it is not private)."""
    return [s for s in _sockets(runtime_dir()) if pid_alive(s.pid)]


def remove_stale() -> list[Path]:
    """Remove the sockets of servers that no longer exist; return their paths."""
    removed = []
    for info in _sockets(runtime_dir()):
        if pid_alive(info.pid):
            continue
        try:
            info.path.unlink()
        except FileNotFoundError:
            continue
        removed.append(info.path)
    return removed


def choose(socket: str | os.PathLike[str] | None = None) -> Path:
    """The socket to connect to: ``socket``, else ``$NSPV2_SOCKET``, else the
    one live server of the runtime folder; :class:`ServerNotFound` if there
    is none or several."""
    if socket is not None and os.fspath(socket):
        return Path(socket)
    env = os.environ.get(ENV_SOCKET)
    if env:
        return Path(env)
    servers = live_servers()
    if len(servers) == 1:
        return servers[0].path
    if not servers:
        raise ServerNotFound(NO_SERVER)
    listed = ", ".join(f"{s.pid} ({s.path})" for s in servers)
    raise ServerNotFound(
        f"several provider processes are serving: {listed}; "
        f"choose one with --socket or {ENV_SOCKET}"
    )
