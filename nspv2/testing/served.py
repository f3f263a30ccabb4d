"""Run ``nspv2 serve`` as a real provider process for a test, and always end it.

:func:`serving` gives the server its own private runtime folder (under
/tmp: socket paths stay far below sockaddr_un's 108 bytes), starts
``python -m nspv2 serve SPEC ARGS...``, waits, bounded, for its
"listening on" line, and when the block ends sends SIGTERM, then SIGKILL if
it has not exited, and removes the folder. A server that exits or does not
get ready in time raises :class:`ServeFailed` with its log. The pytest
fixture ``nspv2_served`` (:mod:`nspv2.testing.pytest_plugin`) is this, for
one test.

Several servers in one folder (discovery): make one with
:func:`private_folder` and pass it as ``runtime_dir=``; it is then the
caller's to remove.

``nspv2 serve`` serves only a provider installed in the namespace catalog
(docs/catalog.md). :func:`serving` installs a Python provider first, in the
catalog the server will use (NSPV2_CATALOG of its environment), as
``Host(auto_install=True)`` would: its name, its namespace, its
``install_blob`` (or none); a provider installed already stays as it is.
What it installed it uninstalls after the server has stopped. A native
provider (``--native``) installs itself when the server loads it.
``install=False`` serves without installing anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = [
    "READY",
    "ServeFailed",
    "Served",
    "install_provider",
    "private_folder",
    "serving",
    "stop_process",
    "uninstall_provider",
]

#: What ``nspv2 serve`` writes to stderr once clients can connect.
READY = re.compile(r"nspv2 serve\[(\d+)\]: listening on (\S+)")


class ServeFailed(AssertionError):  # noqa: N818 - a failed test's assertion
    """The server exited or did not get ready in time (the message has its log)."""


def private_folder(prefix: str = "nspv2-") -> Path:
    """A new folder under /tmp, mode 0700 (short paths for sockets)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Send ``sig`` to ``proc`` (by its pid, if still running), wait at most
    ``timeout`` seconds, then SIGKILL. Returns the exit code (negative: the
    signal that ended it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30)


class Served:
    """One running ``nspv2 serve`` process."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        socket: Path,
        runtime_dir: Path,
        log_path: Path,
        env: dict[str, str],
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.socket = socket
        self.runtime_dir = runtime_dir
        self.log_path = log_path
        #: os.environ + NSPV2_RUNTIME_DIR + NSPV2_SOCKET: for client processes.
        self.env = env

    def log(self) -> str:
        """Everything the server wrote (stderr and stdout) so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait, at most ``timeout`` seconds, until the log matches ``pattern``
        (a regular expression searched in the whole log, multi-line);
        AssertionError with the log if it does not."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {pattern!r} in the server's log within {timeout} s:\n{self.log()}"
                )
            time.sleep(0.02)

    def count_log(self, pattern: str) -> int:
        """How many times ``pattern`` occurs in the log."""
        return len(re.findall(pattern, self.log(), re.M))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout``)."""
        return stop_process(self.proc, sig, timeout)

    def client(self, **kw: Any) -> Client:
        """A ``nspv2.Client`` connected to this server."""
        from ..client.client import Client

        return Client(socket=self.socket, **kw)


def _socket_given(args: Sequence[str]) -> Path | None:
    words = list(args[: list(args).index("--")] if "--" in args else args)
    for i, word in enumerate(words):
        if word == "--socket" and i + 1 < len(words):
            return Path(words[i + 1])
        if word.startswith("--socket="):
            return Path(word.split("=", 1)[1])
    return None


#: The child that installs or uninstalls (``python -c _CATALOG_CHILD VERB ARG``).
_CATALOG_CHILD = "from nspv2.testing.served import _catalog_child; _catalog_child()"


def _catalog_child() -> None:
    """``install SPEC``: load the provider class as serve does and install it
    unless installed; print ``{"provider_id": ..., "installed": bool}``.
    ``uninstall GUID``. Runs with the server's environment and folder."""
    import uuid

    from ..host.catalog import Catalog
    from ..provider.errors import WinsockError
    from ..sdk.winsock2 import WSAError
    from ..tools.check import load_provider_class

    verb, arg = sys.argv[1], sys.argv[2]
    catalog = Catalog()
    if verb == "uninstall":
        catalog.uninstall(uuid.UUID(arg))
        return
    cls = load_provider_class(arg)
    installed = False
    if catalog.find(cls.provider_id) is None:
        blob = cls.install_blob
        try:
            catalog.install(
                cls.provider_id,
                int(cls.namespace),
                cls.name or cls.__name__,
                None if blob is None else bytes(blob),
            )
            installed = True
        except WinsockError as exc:  # installed meanwhile by someone else: theirs
            if exc.code != WSAError.WSANO_RECOVERY or catalog.find(cls.provider_id) is None:
                raise
    print(json.dumps({"provider_id": str(cls.provider_id), "installed": installed}))


def _run_catalog_child(
    verb: str,
    arg: str,
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None,
    python: str,
    preexec: Sequence[str] = (),
) -> str:
    done = subprocess.run(
        [*preexec, python, "-c", _CATALOG_CHILD, verb, arg],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ServeFailed(f"{verb} {arg} in the namespace catalog failed:\n{done.stderr}")
    return done.stdout


def install_provider(
    spec: str,
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
    preexec: Sequence[str] = (),
) -> str | None:
    """Install the Python provider ``spec`` (MODULE:CLASS, or a .py file
    with :CLASS) in the catalog of a process with ``env`` (os.environ when
    None) and ``cwd``, run with the command prefix ``preexec`` (the server's
    user), as ``Host(auto_install=True)`` does, unless it is installed. Its
    GUID when this call installed it, else None."""
    base = dict(os.environ if env is None else env)
    out = _run_catalog_child("install", spec, base, cwd, python, preexec)
    doc = json.loads(out.strip().splitlines()[-1])
    return str(doc["provider_id"]) if doc["installed"] else None


def uninstall_provider(
    provider_id: str,
    *,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    preexec: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
) -> None:
    """Uninstall ``provider_id`` from the catalog of a process with ``env``."""
    base = dict(os.environ if env is None else env)
    _run_catalog_child("uninstall", provider_id, base, cwd, python, preexec)


def _native(spec: str, args: Sequence[str]) -> bool:
    words = [spec, *args[: list(args).index("--")]] if "--" in args else [spec, *args]
    return any(w == "--native" or w.startswith("--native=") for w in words)


@contextlib.contextmanager
def serving(
    spec: str = "nspv2.examples.email:EmailDirectory",
    *args: str,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
    runtime_dir: Path | None = None,
    preexec: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
    install: bool = True,
) -> Iterator[Served]:
    """Start ``python -m nspv2 serve SPEC ARGS...`` and yield a :class:`Served`
    once it listens (at most ``timeout`` seconds); SIGTERM (then SIGKILL) it
    and remove its folders afterwards.

    The server's socket is ``<runtime_dir>/serve-<pid>.sock`` (the runtime
    folder rule) unless ARGS has ``--socket``. ``env`` is added to
    os.environ for the server (and kept in ``Served.env``); ``runtime_dir``
    shares a folder between servers (the caller removes it; it need not
    exist: serve creates it). ``preexec`` is a command prefix such as
    ``["setpriv", "--reuid=4242", ...]`` (then pass a ``cwd`` that user may
    enter). ``cwd``: where the server runs (MODULE:CLASS is also looked up
    there); the current folder by default. ``install``: install a Python
    provider first unless installed (see the module's docstring), and
    uninstall it at the end if this call installed it.
    """
    base = private_folder()
    own_folder = runtime_dir is None
    folder = base / "run" if runtime_dir is None else runtime_dir
    log_path = base / "serve.log"
    server_env = dict(os.environ)
    server_env.pop("NSPV2_SOCKET", None)
    server_env["NSPV2_RUNTIME_DIR"] = str(folder)
    server_env.update(env or {})
    argv = [*preexec, python, "-m", "nspv2", "serve", spec, *args]
    proc: subprocess.Popen[bytes] | None = None
    installed: str | None = None
    try:
        if install and not _native(spec, args):
            installed = install_provider(
                spec, env=server_env, cwd=cwd, python=python, preexec=preexec
            )
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd, env=server_env
            )
        socket = _socket_given(args) or folder / f"serve-{proc.pid}.sock"
        served = Served(proc, socket, folder, log_path, {**server_env, "NSPV2_SOCKET": str(socket)})
        deadline = time.monotonic() + timeout
        while not READY.search(served.log()):
            if proc.poll() is not None:
                raise ServeFailed(
                    f"nspv2 serve exited with {proc.returncode} before listening:\n{served.log()}"
                )
            if time.monotonic() >= deadline:
                raise ServeFailed(f"nspv2 serve did not listen within {timeout} s:\n{served.log()}")
            time.sleep(0.02)
        yield served
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)
        if installed is not None:
            uninstall_provider(installed, env=server_env, python=python, preexec=preexec, cwd=cwd)
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
