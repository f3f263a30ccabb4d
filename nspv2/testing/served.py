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
"""

from __future__ import annotations

import contextlib
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

__all__ = ["READY", "ServeFailed", "Served", "private_folder", "serving", "stop_process"]

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
    there); the current folder by default.
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
    try:
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
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
