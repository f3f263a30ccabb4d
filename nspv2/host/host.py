"""``Host``: run providers on nspv2's native host, and be their clients.

>>> import uuid
>>> from nspv2 import Host, Provider, QuerySet
>>> class Hello(Provider):
...     provider_id = uuid.UUID("0b7e8f5a-2c1d-4e3f-9a8b-7c6d5e4f3a21")
...     def lookup(self, session, restrictions, flags):
...         yield QuerySet(restrictions.service_instance_name, comment="hi")
>>> with Host(auto_install=True) as host:  # installs Hello in the catalog, for now
...     _ = host.advertise(Hello())
...     with host.open_session() as client:
...         [r.comment for r in client.lookup("alice@example.com")]
['hi']

Everything goes through the host's C functions (the same the native
driver uses): WSAAdvertiseProvider with the routine table, client sessions,
WSALookupServiceBeginW/NextW/End on WSAQUERYSETW, WSASetServiceW.

As on Windows, only a provider installed in the namespace catalog may
advertise (``nspv2 install``, :class:`nspv2.host.catalog.Catalog`; the
catalog in effect is NSPV2_CATALOG's, else the user's file, see
docs/catalog.md). ``Host(auto_install=True)`` installs what it advertises
when it is not installed yet, and uninstalls at unadvertise exactly what
it installed; point it at a process-private catalog
(``nspv2.host.catalog.use_catalog(MEMORY)``) to leave the user's alone.

Ownership (docs/host.md): each table advertised here reports to this host's
error channel, handed to it by :meth:`Host.advertise` (no process-wide
default; ``with`` only adds ``close()`` at the end). What C can call through
the table is kept alive by the process-level registry
(:mod:`nspv2.host.tables`), not by the Host: dropping a Host without
``close()`` leaves its tables advertised and alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..provider.base import Provider
from ..provider.channel import ErrorChannel
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.routine import Routine
from ..sdk.guiddef import GUID
from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from ..sdk.winsock2 import BLOB, LUP, NO_ERROR, NS, SOCKET_ERROR, WSAESETSERVICEOP, WSAError
from ..sdk.wintypes import wstr
from ..sdk.ws2spi import NSPV2_ROUTINE
from . import pinning, tables
from .winsock import (
    DriverConfig,
    DriverResult,
    HostStats,
    NativeHostFunctions,
    Winsock,
    load_native_host,
)

__all__ = ["Advertised", "ClientSession", "Host", "NextResult"]

_EFAULT = int(WSAError.WSAEFAULT)
_NO_MORE = int(WSAError.WSA_E_NO_MORE)
_U32_MAX = 0xFFFFFFFF
_INVALID_PROVIDER = int(WSAError.WSAEINVALIDPROVIDER)
#: WSCInstallNameSpaceEx of an installed id: WSANO_RECOVERY (older hosts: WSAEALREADY)
_ALREADY_INSTALLED = (int(WSAError.WSANO_RECOVERY), int(WSAError.WSAEALREADY))


#: WSAAdvertiseProvider's checks of its arguments, made before it reads the
#: catalog: the catalog's error text is then an older call's, not shown.
_ARGUMENT_CHECKS = (_EFAULT, int(WSAError.WSAEINVAL), int(WSAError.WSAEALREADY))


def _with_catalog_text(native: object, what: str) -> str:
    """``what``, with the host's explanation of this thread's last catalog
    failure (nspv2_catalog_error_text) when the library has it and it says
    something, as :class:`nspv2.host.catalog.Catalog` reports."""
    try:
        raw = getattr(native, "nspv2_catalog_error_text")()  # noqa: B009 - older hosts lack it
    except Exception:  # a host library without it: the code alone
        return what
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return f"{what}: {text}" if text else what


def _not_installed(provider_id: uuid.UUID, name: str | None) -> str:
    """The message of WSAAdvertiseProvider's WSAEINVALIDPROVIDER."""
    who = f"{name} ({provider_id})" if name else str(provider_id)
    return (
        f"WSAAdvertiseProvider: provider {who} is not installed in the namespace catalog; "
        "install it first with `nspv2 install MODULE:CLASS` (see docs/catalog.md), "
        "or advertise it with Host(auto_install=True)"
    )


def _u32(value: int, what: str) -> int:
    """``value`` as a C DWORD/uint32_t, or ValueError: ctypes would silently
    truncate it (a buffer size of -1 would reach C as 4 GiB)."""
    number = int(value)
    if not 0 <= number <= _U32_MAX:
        raise ValueError(f"{what} must be between 0 and 2**32-1, not {value!r}")
    return number


@dataclass
class Advertised:
    """A routine table advertised on the host (kept alive while advertised)."""

    provider_id: uuid.UUID
    routine: Routine | None  # None for a bare NSPV2_ROUTINE (C providers, hand-built tables)
    provider: Provider | None
    namespace: int
    guid: GUID
    #: The table C holds a pointer to, kept alive while advertised.
    table: NSPV2_ROUTINE | None = None
    #: Whatever keeps a bare table's entry points alive (its thunks).
    owner: object = None
    #: The process-level registry's entry holding all of the above.
    kept: tables.Kept | None = None
    #: This Host installed it in the catalog (``auto_install``) and
    #: uninstalls it at unadvertise.
    installed_here: bool = False


@dataclass(frozen=True)
class NextResult:
    """One WSALookupServiceNextW: the code, the result, the size written."""

    code: int
    result: QuerySet | None
    buffer_length: int


def drain_lookup(
    next_step: Callable[[int, int, int], NextResult], handle: int, flags: int, buffer_size: int
) -> list[QuerySet]:
    """WSALookupServiceNextW on ``handle`` until WSA_E_NO_MORE, growing the
    buffer to the size asked on WSAEFAULT; the results. Any other code raises
    WinsockError. The lookup of ``Host.lookup`` and ``nspv2.Client.lookup``
    (``next_step`` is their ``lookup_next``); the caller begins and ends it."""
    out: list[QuerySet] = []
    size = buffer_size
    while True:
        step = next_step(handle, flags, size)
        if step.code == _EFAULT:
            if step.buffer_length <= size:
                raise WinsockError(_EFAULT, "the provider asked for no more room")
            size = step.buffer_length
            continue
        if step.code == _NO_MORE:
            return out
        if step.code != NO_ERROR:
            raise WinsockError(step.code, "WSALookupServiceNextW")
        assert step.result is not None
        out.append(step.result)


class ClientSession:
    """A client session on the host: a stand-in for one client process."""

    def __init__(self, host: Host, session_id: int) -> None:
        self.host = host
        self.id = session_id
        self.closed = False

    def close(self) -> None:
        """End gracefully: each provider it used gets NSPv2Cleanup."""
        if not self.closed:
            self.closed = True
            self.host._check(self.host.native.nspv2_session_close(self.id), "nspv2_session_close")

    def abandon(self) -> None:
        """Vanish: each provider it used gets NSPv2ClientSessionRundown."""
        if not self.closed:
            self.closed = True
            self.host._check(
                self.host.native.nspv2_session_abandon(self.id), "nspv2_session_abandon"
            )

    def lookup(
        self, restrictions: QuerySet | str, flags: int = LUP.LUP_RETURN_ALL
    ) -> list[QuerySet]:
        return self.host.lookup(self, restrictions, flags)

    def set_service(self, reg_info: QuerySet, operation: int, flags: int = 0) -> None:
        self.host.set_service(self, reg_info, operation, flags)

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClientSession {self.id} {'closed' if self.closed else 'open'}>"


class Host:
    """nspv2's native NSPv2 host, driven from Python.

    ``timeout_ms``: how long the host waits for WSAProviderCompleteAsyncCall.

    ``auto_install``: a provider must be installed in the namespace catalog
    before it advertises (as on Windows: WSAAdvertiseProvider fails with
    WSAEINVALIDPROVIDER otherwise). False (the default): :meth:`advertise`
    only advertises, and an uninstalled provider is a WinsockError saying
    to install it (``nspv2 install MODULE:CLASS``). True: :meth:`advertise`
    first installs a provider that is not installed (identifier: its name;
    its namespace; lpProviderInfo: its ``install_blob``, or none), and
    :meth:`unadvertise` / :meth:`close` uninstall exactly what it installed
    (a provider someone else installed, even in a race, stays installed).
    It writes the catalog in effect: a process that must not touch the
    user's catalog calls ``nspv2.host.catalog.use_catalog(MEMORY)`` first
    (or runs with NSPV2_CATALOG=:memory:).
    """

    def __init__(
        self, winsock: Winsock | None = None, *, timeout_ms: int = 5000, auto_install: bool = False
    ) -> None:
        # ctypes callbacks run in the main interpreter's thread states
        pinning.check_interpreter()
        #: advertise installs what is not installed (see the class docstring).
        self.auto_install = bool(auto_install)
        self.winsock = winsock or load_native_host()
        if not self.winsock.native_host:
            raise ValueError("Host needs nspv2's native host library, not ws2_32.dll")
        native = self.winsock.native
        assert native is not None
        #: The native host's own functions, typed (``host.native.nspv2_lookup_end(h)``).
        self.native: NativeHostFunctions = native
        native.nspv2_host_set_timeout_ms(_u32(timeout_ms, "timeout_ms"))
        #: What this Host advertised (the tables themselves are kept alive
        #: by the process-level registry, see nspv2.host.tables).
        self.advertised: dict[uuid.UUID, Advertised] = {}
        self.sessions: list[ClientSession] = []
        #: The error channel every table advertised here reports to.
        self._channel: ErrorChannel = self.winsock.channel()
        # Guards self.sessions and self.advertised (any thread may open
        # sessions, advertise or unadvertise); never held across a C call
        # that can call a provider.
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------

    @property
    def channel(self) -> ErrorChannel:
        """The error channel of the tables advertised on this host."""
        return self._channel

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sessions it opened, unadvertise what it advertised:
        every provider, even when one fails (each uninstalled when this Host
        installed it); then the first failure is raised again."""
        with self._lock:
            sessions, self.sessions = self.sessions, []
        for session in sessions:
            if not session.closed:
                try:
                    session.close()
                except WinsockError:
                    pass
        with self._lock:
            pids = list(self.advertised)
        first: Exception | None = None
        for pid in pids:
            try:
                self.unadvertise(pid)
            except Exception as exc:  # the rest are still unadvertised
                first = first or exc
        if first is not None:
            raise first

    def set_timeout(self, timeout_ms: int) -> None:
        """How long the host waits for WSAProviderCompleteAsyncCall."""
        self.native.nspv2_host_set_timeout_ms(_u32(timeout_ms, "timeout_ms"))

    # -- providers --------------------------------------------------------------------

    def advertise(
        self,
        target: Provider | Routine | NSPV2_ROUTINE,
        provider_id: uuid.UUID | None = None,
        namespace: int | None = None,
        *,
        owner: object = None,
        name: str | None = None,
    ) -> Advertised:
        """Advertise a routine table; the one way in.

        The provider must be installed in the catalog (``nspv2 install``),
        or this Host made with ``auto_install=True``, which installs it
        here and uninstalls it at :meth:`unadvertise`; else WinsockError
        WSAEINVALIDPROVIDER, whose message says so.

        ``target`` is a :class:`Provider` (its id, namespace and name are the
        defaults), a raw :class:`Routine`, or a bare ``NSPV2_ROUTINE`` filled
        by hand or by C. ``owner`` is whatever keeps a bare table's entry
        points alive (ctypes thunks, say); the returned entry holds it, and
        the table, until :meth:`unadvertise` (or :meth:`close`) has returned.
        """
        provider = target if isinstance(target, Provider) else None
        routine = target if isinstance(target, Routine) else None
        if provider is not None:
            # The table reports to this host's channel, from its first call.
            routine = provider.routine(channel=self._channel)
            provider_id = provider_id or type(provider).provider_id
            if namespace is None:
                namespace = type(provider).namespace
            name = name or provider.display_name
        elif routine is not None and routine.channel is None:
            routine.channel = self._channel
        if provider_id is None:
            raise ValueError("advertising a Routine or an NSPV2_ROUTINE needs provider_id")
        if routine is not None:
            table = routine.table
            name = name or routine.name
        elif isinstance(target, NSPV2_ROUTINE):
            table = target
        else:
            raise TypeError(
                f"cannot advertise {type(target).__name__}: "
                "expected a Provider, a Routine or an NSPV2_ROUTINE"
            )
        namespace = _u32(NS.NS_EMAIL if namespace is None else namespace, "namespace")
        guid = GUID.from_uuid(provider_id)
        # lpProviderInfo: the provider's install blob (Provider.install_blob), if any
        blob_data = None if provider is None else provider.install_blob
        info = None
        if blob_data is not None:
            data = (ctypes.c_uint8 * max(len(blob_data), 1)).from_buffer_copy(
                bytes(blob_data) or b"\0"
            )
            info = BLOB(len(blob_data), ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)))
        text = wstr(name or str(provider_id))
        entry = Advertised(provider_id, routine, provider, namespace, guid, table, owner)
        with self._lock:
            if provider_id in self.advertised:
                raise ValueError(f"provider {provider_id} is already advertised on this host")
            self.advertised[provider_id] = entry  # reserved: a second advertise is refused
        # Everything C may call through the table is owned by the process
        # registry from before WSAAdvertiseProvider until the host has
        # returned from the last call into it (tables.retire, tables.sweep).
        entry.kept = tables.keep(
            self.winsock.library,
            provider_id,
            self.winsock.retired_tables,
            table,
            routine,
            provider,
            owner,
        )
        try:
            if self.auto_install:
                entry.installed_here = self._install_if_missing(guid, namespace, text, info)
            rc = self.winsock.WSAAdvertiseProvider(ctypes.byref(guid), ctypes.byref(table))
            if rc == SOCKET_ERROR:
                code = self.winsock.last_error()
                if code == _INVALID_PROVIDER:
                    raise WinsockError(code, _not_installed(provider_id, name))
                what = "WSAAdvertiseProvider"
                if code not in _ARGUMENT_CHECKS:  # the catalog was read: its text is this call's
                    what = _with_catalog_text(self.native, what)
                raise WinsockError(code, what)
        except BaseException:
            # Undo what was done, whatever failed (a Winsock error, an
            # exception or an interrupt between the two calls): what this
            # Host installed is uninstalled, the registry does not keep the table.
            if entry.installed_here:
                self.winsock.WSCUnInstallNameSpace(ctypes.byref(guid))
            tables.forget(entry.kept)
            with self._lock:
                self.advertised.pop(provider_id, None)
            raise
        tables.sweep()
        return entry

    def unadvertise(self, target: Provider | Routine | uuid.UUID) -> None:
        """Unadvertise: the host runs down the provider's open sessions, which
        end with PLATFORM_SHUTDOWN."""
        if isinstance(target, uuid.UUID):
            pid = target
        elif isinstance(target, Provider):
            pid = type(target).provider_id
        else:
            with self._lock:
                found = [a.provider_id for a in self.advertised.values() if a.routine is target]
            if not found:
                raise KeyError("that routine is not advertised on this host")
            pid = found[0]
        with self._lock:
            entry = self.advertised.pop(pid, None)
        provider = entry.provider if entry else None
        running_down = (
            provider.running_down(Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN)
            if provider is not None
            else contextlib.nullcontext()
        )
        try:
            with running_down:
                # Retires the table in the process registry: unadvertised, but a
                # call may be in flight and a Rundown or End deferred past it, so
                # it is held until the host says it is done.
                self.winsock.unadvertise(pid)
        finally:
            # What this Host installed is uninstalled even when the host
            # refused the unadvertise (another Host of the process did it,
            # or the host was reset).
            if entry is not None and entry.installed_here:
                guid = entry.guid
                self.winsock.WSCUnInstallNameSpace(ctypes.byref(guid))

    def _installed(self, guid: GUID) -> bool:
        """``guid`` is in the catalog in effect (nspv2_host_installed)."""
        return bool(self.native.nspv2_host_installed(guid, None, None, None, None) == NO_ERROR)

    def _install_if_missing(
        self,
        guid: GUID,
        namespace: int,
        identifier: ctypes.Array[ctypes.c_uint16],
        info: BLOB | None,
    ) -> bool:
        """WSCInstallNameSpaceEx unless installed; True when this call installed it."""
        if self._installed(guid):
            return False
        rc = self.winsock.WSCInstallNameSpaceEx(
            ctypes.cast(identifier, ctypes.POINTER(ctypes.c_uint16)),
            None,
            namespace,
            1,
            ctypes.byref(guid),
            None if info is None else ctypes.byref(info),
        )
        if rc == SOCKET_ERROR:
            code = self.winsock.last_error()
            # Installed meanwhile by someone else (another Host, process or
            # `nspv2 install`): theirs, not uninstalled by this Host.
            if code in _ALREADY_INSTALLED and self._installed(guid):
                return False
            raise WinsockError(
                code, _with_catalog_text(self.native, "WSCInstallNameSpaceEx (auto_install)")
            )
        return True

    def advertise_reference_provider(self) -> uuid.UUID:
        """Advertise native_stub's C reference provider (the NS_EMAIL presence
        directory of docs/email-example.md); returns its id."""
        return self._advertise_native(
            self.native.nspv2_ref_provider_routine, "nspv2_ref_provider_id"
        )

    def advertise_bench_provider(self) -> uuid.UUID:
        """Advertise native_stub's C bench provider (one fixed result for any
        name: the yardstick for benchmarks); returns its id."""
        return self._advertise_native(
            self.native.nspv2_bench_provider_routine, "nspv2_bench_provider_id"
        )

    def _advertise_native(self, fill: Callable[[int], None], id_symbol: str) -> uuid.UUID:
        """Advertise a C provider linked into the host library."""
        table = NSPV2_ROUTINE()
        fill(ctypes.addressof(table))
        pid = GUID.in_dll(self.winsock.library, id_symbol).to_uuid()
        self.advertise(table, pid, int(NS.NS_EMAIL), name=id_symbol)
        return pid

    # -- clients ------------------------------------------------------------------------

    def _check(self, rc: int, what: str) -> None:
        if rc == SOCKET_ERROR:
            raise WinsockError(self.winsock.last_error(), what)

    def open_session(self) -> ClientSession:
        sid = ctypes.c_uint64()
        self._check(self.native.nspv2_session_open(ctypes.byref(sid)), "nspv2_session_open")
        session = ClientSession(self, sid.value)
        with self._lock:  # any thread: the append and the trim are one step
            self.sessions.append(session)
            if len(self.sessions) > 1024:
                self.sessions = [s for s in self.sessions if not s.closed]
        return session

    def lookup_begin(
        self, session: ClientSession, restrictions: QuerySet | str, flags: int = LUP.LUP_RETURN_ALL
    ) -> int:
        if isinstance(restrictions, str):
            restrictions = QuerySet(restrictions)
        flags = _u32(flags, "flags")
        buf = restrictions.to_buffer("W")
        handle = ctypes.c_void_p()
        rc = self.native.nspv2_lookup_begin(
            session.id, ctypes.addressof(buf), flags, ctypes.byref(handle)
        )
        if rc == SOCKET_ERROR:
            raise WinsockError(self.winsock.last_error(), "WSALookupServiceBeginW")
        assert handle.value
        return handle.value

    def lookup_next(self, handle: int, flags: int = 0, buffer_size: int = 1024) -> NextResult:
        """One WSALookupServiceNextW with a ``buffer_size``-byte buffer.

        ``buffer_size`` and ``flags`` are DWORDs: outside 0..2**32-1 they
        raise ValueError before C sees them (the buffer is exactly that big).
        """
        buffer_size = _u32(buffer_size, "buffer_size")
        flags = _u32(flags, "flags")
        buf = (ctypes.c_uint64 * ((buffer_size + 7) // 8 or 1))()
        length = ctypes.c_uint32(buffer_size)
        rc = self.native.nspv2_lookup_next(
            handle, flags, ctypes.byref(length), ctypes.addressof(buf)
        )
        if rc == SOCKET_ERROR:
            return NextResult(self.winsock.last_error(), None, length.value)
        # The result lies wholly in the buffer (the host relocated it there):
        # read it within the buffer's bounds.
        start = ctypes.addressof(buf)
        result = QuerySet.from_address(start, "W", bounds=(start, start + buffer_size))
        return NextResult(NO_ERROR, result, length.value)

    def lookup_end(self, handle: int) -> None:
        self._check(self.native.nspv2_lookup_end(handle), "WSALookupServiceEnd")

    def lookup(
        self,
        session: ClientSession,
        restrictions: QuerySet | str,
        flags: int = LUP.LUP_RETURN_ALL,
        *,
        buffer_size: int = 1024,
    ) -> list[QuerySet]:
        """Begin, Next until WSA_E_NO_MORE (growing the buffer on WSAEFAULT), End."""
        _u32(buffer_size, "buffer_size")  # refused before Begin, not after
        handle = self.lookup_begin(session, restrictions, flags)
        try:
            return drain_lookup(self.lookup_next, handle, flags, buffer_size)
        finally:
            self.lookup_end(handle)

    def set_service(
        self, session: ClientSession, reg_info: QuerySet, operation: int, flags: int = 0
    ) -> None:
        """WSASetServiceW in ``session`` (operation: WSAESETSERVICEOP)."""
        op = int(WSAESETSERVICEOP(_u32(operation, "operation")))
        flags = _u32(flags, "flags")
        buf = reg_info.to_buffer("W")
        rc = self.native.nspv2_set_service(session.id, ctypes.addressof(buf), op, flags)
        self._check(rc, "WSASetServiceW")

    # -- inspection and the native driver ---------------------------------------------

    def stats(self) -> dict[str, int]:
        out = HostStats()
        self.native.nspv2_host_stats_get(ctypes.byref(out))
        return out.as_dict()

    def reset_stats(self) -> None:
        self.native.nspv2_host_stats_reset()

    def pin_stats(self) -> dict[str, int]:
        """Thread-state pinning's counters (:func:`nspv2.host.pinning.stats`):
        ``installed``, ``stopped``, ``pinned_now``, ``pinned_total``,
        ``released_detach``, ``released_exit``, ``left_at_shutdown``,
        ``refused_calls``, ``in_flight``."""
        return pinning.stats()

    def drive(
        self,
        *,
        threads: int = 1,
        cycles: int = 1000,
        service_name: str = "alice@example.com",
        provider_id: uuid.UUID | None = None,
        name_space: int = NS.NS_EMAIL,
        abandon_every: int = 0,
        buffer_size: int = 1024,
        control_flags: int = LUP.LUP_RETURN_ALL,
        session_only: bool = False,
        grow_on_efault: bool = False,
        thread_exits: int = 0,
    ) -> DriverResult:
        """Run the native driver: ``threads`` native threads x ``cycles`` cycles.

        With ``thread_exits`` N: N native threads instead, at most
        ``threads`` at a time, each running ``cycles`` cycles and then
        ending as a program's own thread would (nspv2_driver_thread_exits)."""
        numbers = {
            "threads": threads,
            "cycles": cycles,
            "abandon_every": abandon_every,
            "buffer_size": buffer_size,
            "name_space": name_space,
            "control_flags": control_flags,
        }
        for what, value in numbers.items():
            _u32(value, what)
        name = wstr(service_name)
        guid = GUID.from_uuid(provider_id) if provider_id else None
        cfg = DriverConfig(
            threads,
            cycles,
            abandon_every,
            buffer_size,
            int(name_space),
            ctypes.pointer(guid) if guid is not None else None,
            ctypes.cast(name, ctypes.POINTER(ctypes.c_uint16)),
            int(control_flags),
            1 if session_only else 0,
            1 if grow_on_efault else 0,
        )
        result = DriverResult()
        if thread_exits:
            _u32(thread_exits, "thread_exits")
            self._check(
                self.native.nspv2_driver_thread_exits(
                    ctypes.byref(cfg), thread_exits, ctypes.byref(result)
                ),
                "nspv2_driver_thread_exits",
            )
            return result
        self._check(
            self.native.nspv2_driver_run(ctypes.byref(cfg), ctypes.byref(result)),
            "nspv2_driver_run",
        )
        return result
