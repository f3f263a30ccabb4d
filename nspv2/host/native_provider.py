"""Native providers: C shared libraries that advertise themselves on nspv2's host.

A native provider is built against the installed nspv2
(``cc -shared -fPIC $(nspv2 config --cflags --libs) provider.c``) and does
what a Windows provider process does from an entry point (``main`` by
default, called as ``entry(argc, argv)``): ``WSAStartup``, optionally
``WSCInstallNameSpaceEx``, ``WSAAdvertiseProvider``, then it waits until it
is told to stop (``SetConsoleCtrlHandler`` and an event), unadvertises and
returns.

:meth:`NativeProvider.load` loads nspv2's host first (with ``RTLD_GLOBAL``,
so the provider's Winsock calls reach that host even if it links another
copy: see :mod:`nspv2.host.native`), then the library, runs the entry on a
thread of its own (the GIL is released while it runs) and waits until it
has advertised. Each provider it advertised is then a :class:`NativeTable`:
client sessions of any :class:`~nspv2.host.Host` reach it (the host routes
by namespace and provider id), :class:`~nspv2.testing.SlotHarness` calls its
slots one at a time, ``nspv2 check --native`` checks it.

:meth:`NativeProvider.close` stops it the way Windows stops a console
process: ``CTRL_CLOSE_EVENT`` to its console control handler
(``nspv2_host_console_event``), waits for the entry to return, and
unadvertises whatever it left advertised (the host runs down the sessions
still open on it: the provider's cleanup path).

Ownership: a loaded library is never unloaded while the process lives (the
host may still call into it: a deferred Rundown, a late completion's
thread), and neither are the ``argv`` strings handed to its entry.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sdk.guiddef import GUID
from ..sdk.winsock2 import NS, SOCKET_ERROR, WSAError
from ..sdk.wintypes import DWORD
from ..sdk.ws2spi import NSPV2_ROUTINE, NSPV2_SLOTS
from .native import host_copies, library_path
from .winsock import NativeHostFunctions, Winsock, load_native_host

__all__ = ["CTRL_CLOSE_EVENT", "NativeProvider", "NativeProviderError", "NativeTable"]

#: wincon.h: the console control event a closing console sends.
CTRL_CLOSE_EVENT = 2

_EINVAL = int(WSAError.WSAEINVAL)
_EFAULT = int(WSAError.WSAEFAULT)
_POLL = 0.005
# int entry(int argc, char **argv)
_ENTRY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))

# Loaded libraries, their entry functions and the argv arrays handed to
# them: kept for the life of the process (never unloaded, never freed).
_kept: list[Any] = []
_kept_lock = threading.Lock()
#: The providers loaded and not closed yet, oldest first (under _kept_lock).
_open: list[NativeProvider] = []


class NativeProviderError(RuntimeError):
    """A native provider could not be loaded, has no such entry point, did
    not advertise in time, or its entry returned without advertising."""


@dataclass(frozen=True)
class NativeTable:
    """One provider a native library advertised on nspv2's host."""

    provider_id: uuid.UUID
    #: From its WSCInstallNameSpaceEx; NS_EMAIL if it did not install itself.
    namespace: int
    #: The identifier it installed itself with, else the library's file name.
    name: str
    #: A copy of the table the host holds (nspv2_host_provider_table).
    table: NSPV2_ROUTINE
    #: Its WSCInstallNameSpaceEx blob, if it installed one.
    blob: bytes | None

    def implements(self, slot: str) -> bool:
        """Whether ``slot`` ("NSPv2SetServiceEx", ...) is not NULL."""
        if slot not in NSPV2_SLOTS:
            raise KeyError(f"no slot {slot!r}; slots are {', '.join(NSPV2_SLOTS)}")
        return bool(ctypes.cast(getattr(self.table, slot), ctypes.c_void_p).value)


class NativeProvider:
    """A C provider library loaded into this process, its entry running."""

    def __init__(self, path: Path, entry: str, winsock: Winsock, library: ctypes.CDLL) -> None:
        # Use NativeProvider.load(); this only records.
        self.path = path
        self.entry = entry
        self.winsock = winsock
        native = winsock.native
        assert native is not None
        self.native: NativeHostFunctions = native
        self.library = library
        #: What it advertised, one entry per provider id (set by load).
        self.tables: list[NativeTable] = []
        #: The entry's return value, once it has returned.
        self.exit_code: int | None = None
        self._returned = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        entry: str = "main",
        args: Iterable[str] = (),
        *,
        timeout: float = 10.0,
        expect: int = 1,
    ) -> NativeProvider:
        """Load ``path``, run ``entry(argc, argv)`` on its own thread
        (``argv[0]`` is ``path``, then ``args``) and wait up to ``timeout``
        seconds until ``expect`` providers it advertised are advertised.

        Raises NativeProviderError when the file is missing or not a
        loadable shared library, has no ``entry``, the entry returns before
        advertising (with its return code), or the time runs out (naming
        any other copy of the host library mapped into the process, the
        usual reason)."""
        if expect < 1:
            raise ValueError("expect must be at least 1")
        path = Path(path)
        if not path.is_file():
            raise NativeProviderError(f"{path}: no such file")
        winsock = load_native_host()  # nspv2's host first, with RTLD_GLOBAL
        try:
            # a path with a slash: dlopen does not search for it
            library = ctypes.CDLL(str(path.absolute()))
        except OSError as exc:
            raise NativeProviderError(
                f"{path} could not be loaded as a shared library: {exc}"
            ) from exc
        with _kept_lock:
            _kept.append(library)  # never unloaded
        try:
            function = _ENTRY((entry, library))
        except AttributeError:
            raise NativeProviderError(f"{path} has no entry point {entry!r}") from None
        self = cls(path, entry, winsock, library)
        with _kept_lock:
            _open.append(self)
        try:
            self._start(function, [str(path), *args], timeout, expect)
        except BaseException:
            self._closed = True
            with _kept_lock:
                _open.remove(self)
            raise
        return self

    def _start(self, function: Any, argv: list[str], timeout: float, expect: int) -> None:
        encoded = [a.encode() for a in argv]
        c_argv = (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)
        with _kept_lock:
            _kept.append((function, c_argv))  # the provider may keep argv pointers
        count_before = int(self.native.nspv2_host_advertise_count())
        before = set(self.advertised_now())

        def run() -> None:
            try:
                self.exit_code = int(function(len(encoded), c_argv))
            finally:
                self._returned.set()

        self._thread = threading.Thread(
            target=run, name=f"nspv2 native {self.path.name}:{self.entry}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while True:
            returned = self._returned.is_set()  # read before the ids: no race
            new = [pid for pid in self.advertised_now() if pid not in before]
            if len(new) >= expect:
                break
            calls = int(self.native.nspv2_host_advertise_count()) - count_before
            if returned:
                self._fail_cleanup(new)
                raise NativeProviderError(
                    f"{self.label} returned {self.exit_code} without advertising "
                    f"{_providers(expect)} (advertised now: {len(new)}; "
                    f"WSAAdvertiseProvider calls that succeeded meanwhile: {calls})"
                )
            if time.monotonic() >= deadline:
                self._fail_cleanup(new)
                raise NativeProviderError(self._timeout_message(timeout, expect, new, calls))
            time.sleep(_POLL)
        self.tables = [self._table(pid) for pid in new]

    def _timeout_message(
        self, timeout: float, expect: int, new: list[uuid.UUID], calls: int
    ) -> str:
        text = (
            f"{self.label} did not advertise {_providers(expect)} on nspv2's host "
            f"within {timeout:g} s (advertised: {len(new)}; WSAAdvertiseProvider calls "
            f"that succeeded meanwhile: {calls}; the entry "
            f"{'returned ' + str(self.exit_code) if self._returned.is_set() else 'is still running'})"
        )
        try:
            ours = str(library_path())
        except Exception:  # only a message
            ours = "nspv2's host library"
        copies = host_copies()
        if copies:
            text += (
                ". Another copy of the host library is mapped into this process: "
                + ", ".join(str(c) for c in copies)
                + f". The provider most likely advertised on that copy, not on {ours}: "
                "it calls that copy's functions directly (built with the host's sources "
                "compiled in with hidden visibility, -Bsymbolic or static linking, or "
                "it opened that copy itself). Build it with `nspv2 config --cflags --libs` "
                "and let the dynamic linker resolve the Winsock functions"
            )
        return text

    def _fail_cleanup(self, new: list[uuid.UUID]) -> None:
        """Stop a provider that failed to load in time, as far as it can be."""
        self.tables = []
        self._stop(1.0)
        for pid in new:
            self._unadvertise(pid)
        self._closed = True

    # -- what it advertised ---------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.path}:{self.entry}"

    def advertised_now(self) -> list[uuid.UUID]:
        """Every provider id advertised on the host now, in advertise order."""
        count = ctypes.c_uint32(0)
        while True:
            room = count.value + 4
            ids = (GUID * room)()
            rc = self.native.nspv2_host_providers(ids, room, ctypes.byref(count))
            if rc == SOCKET_ERROR:
                raise NativeProviderError(
                    f"nspv2_host_providers failed: {self.winsock.last_error()}"
                )
            if count.value <= room:
                return [ids[i].to_uuid() for i in range(count.value)]

    def _table(self, pid: uuid.UUID) -> NativeTable:
        guid = GUID.from_uuid(pid)
        table = NSPV2_ROUTINE()
        rc = self.native.nspv2_host_provider_table(ctypes.byref(guid), ctypes.byref(table))
        if rc == SOCKET_ERROR:
            raise NativeProviderError(
                f"nspv2_host_provider_table({pid}) failed: {self.winsock.last_error()}"
            )
        namespace, blob = self._installed(guid)
        name = self._identifier(guid) or self.path.name
        return NativeTable(pid, namespace, name, table, blob)

    def _identifier(self, guid: GUID) -> str | None:
        """The lpszIdentifier WSCInstallNameSpaceEx recorded (None: not
        installed, or installed without one)."""
        chars = ctypes.c_uint32(0)
        while True:
            room = chars.value
            buf = (ctypes.c_uint16 * max(room, 1))()
            rc = self.native.nspv2_host_installed_identifier(
                ctypes.byref(guid), buf, ctypes.byref(chars)
            )
            if rc != SOCKET_ERROR:
                text = bytes(buf)[: 2 * max(chars.value - 1, 0)].decode("utf-16-le", "replace")
                return text or None
            code = self.winsock.last_error()
            if code == _EINVAL:
                return None
            if code != _EFAULT or chars.value <= room:
                raise NativeProviderError(f"nspv2_host_installed_identifier failed: {code}")

    def _installed(self, guid: GUID) -> tuple[int, bytes | None]:
        """(namespace, blob) as WSCInstallNameSpaceEx recorded them."""
        name_space = DWORD(0)
        has_blob = ctypes.c_uint32(0)
        size = ctypes.c_uint32(0)
        while True:
            room = size.value
            buf = (ctypes.c_uint8 * max(room, 1))()
            rc = self.native.nspv2_host_installed(
                ctypes.byref(guid),
                ctypes.byref(name_space),
                ctypes.byref(has_blob),
                buf,
                ctypes.byref(size),
            )
            if rc != SOCKET_ERROR:
                if not has_blob.value:
                    return int(name_space.value), None
                return int(name_space.value), bytes(buf)[: size.value]
            code = self.winsock.last_error()
            if code == _EINVAL:  # advertised without installing
                return int(NS.NS_EMAIL), None
            if code != _EFAULT or size.value <= room:
                raise NativeProviderError(f"nspv2_host_installed failed: {code}")

    # -- stopping -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the entry has not returned yet."""
        return not self._returned.is_set()

    def _stop(self, timeout: float) -> bool:
        """CTRL_CLOSE_EVENT to the console handlers; wait for the entry."""
        if not self._returned.is_set():
            self.native.nspv2_host_console_event(CTRL_CLOSE_EVENT)
        return self._returned.wait(timeout)

    def _unadvertise(self, pid: uuid.UUID) -> None:
        guid = GUID.from_uuid(pid)
        self.winsock.WSAUnadvertiseProvider(ctypes.byref(guid))  # WSAEINVAL: gone already

    def close(self, timeout: float = 5.0) -> int | None:
        """Stop it (CTRL_CLOSE_EVENT), wait up to ``timeout`` seconds for the
        entry to return, then unadvertise whatever it left advertised (the
        host runs down its open sessions). Returns :attr:`exit_code` (None if
        the entry is still running). The library stays loaded."""
        if self._closed:
            return self.exit_code
        with _kept_lock:
            later = [p for p in _open[_open.index(self) + 1 :] if not p._closed]
        if later:
            # A console event reaches the newest handler first and stops at
            # the first that takes it: it would stop a provider loaded later.
            names = ", ".join(p.label for p in later)
            raise NativeProviderError(
                f"close {names} first: a console event goes to the provider loaded last"
            )
        self._closed = True
        with _kept_lock:
            _open.remove(self)
        self._stop(timeout)
        still = set(self.advertised_now())
        for table in self.tables:
            if table.provider_id in still:
                self._unadvertise(table.provider_id)
        return self.exit_code

    def __enter__(self) -> NativeProvider:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else f"returned {self.exit_code}"
        return f"<NativeProvider {self.label} {state}, {len(self.tables)} table(s)>"


def _providers(n: int) -> str:
    return "a provider" if n == 1 else f"{n} providers"
