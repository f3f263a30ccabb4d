"""``Host``: run providers on nspv2's native host, and be their clients.

>>> import uuid
>>> from nspv2 import Host, Provider, QuerySet
>>> class Hello(Provider):
...     provider_id = uuid.UUID("0b7e8f5a-2c1d-4e3f-9a8b-7c6d5e4f3a21")
...     def lookup(self, session, restrictions, flags):
...         yield QuerySet(restrictions.service_instance_name, comment="hi")
>>> with Host() as host:
...     _ = host.advertise(Hello())
...     with host.open_session() as client:
...         [r.comment for r in client.lookup("alice@example.com")]
['hi']

Everything goes through the host's C functions (the same the native
driver uses): WSAAdvertiseProvider with the routine table, client sessions,
WSALookupServiceBeginW/NextW/End on WSAQUERYSETW, WSASetServiceW. While a
Host is open, the process's error channel is the host's, so providers'
WSASetLastError and WSAProviderCompleteAsyncCall reach it.
"""

from __future__ import annotations

import ctypes
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..provider.base import Provider
from ..provider.channel import ErrorChannel, set_channel
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.routine import Routine
from ..sdk.guiddef import GUID
from ..sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as Reason  # noqa: N811
from ..sdk.winsock2 import LUP, NO_ERROR, NS, SOCKET_ERROR, WSAESETSERVICEOP, WSAError
from ..sdk.wintypes import wstr
from ..sdk.ws2spi import NSPV2_ROUTINE
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


@dataclass(frozen=True)
class NextResult:
    """One WSALookupServiceNextW: the code, the result, the size written."""

    code: int
    result: QuerySet | None
    buffer_length: int


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
    """nspv2's native NSPv2 host, driven from Python."""

    def __init__(self, winsock: Winsock | None = None, *, timeout_ms: int = 5000) -> None:
        self.winsock = winsock or load_native_host()
        if not self.winsock.native_host:
            raise ValueError("Host needs nspv2's native host library, not ws2_32.dll")
        native = self.winsock.native
        assert native is not None
        #: The native host's own functions, typed (``host.native.nspv2_lookup_end(h)``).
        self.native: NativeHostFunctions = native
        native.nspv2_host_set_timeout_ms(timeout_ms)
        #: What this Host advertised; each entry keeps its table (and the
        #: thunks C calls through it) alive until it is unadvertised.
        self.advertised: dict[uuid.UUID, Advertised] = {}
        self.sessions: list[ClientSession] = []
        self._channel: ErrorChannel = self.winsock.channel()
        self._previous: ErrorChannel | None = None
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------

    def __enter__(self) -> Host:
        self._previous = set_channel(self._channel)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sessions it opened, unadvertise what it advertised,
        give the process its previous error channel back."""
        for session in self.sessions:
            if not session.closed:
                try:
                    session.close()
                except WinsockError:
                    pass
        self.sessions.clear()
        for pid in list(self.advertised):
            self.unadvertise(pid)
        if self._previous is not None:
            set_channel(self._previous)
            self._previous = None

    def set_timeout(self, timeout_ms: int) -> None:
        """How long the host waits for WSAProviderCompleteAsyncCall."""
        self.native.nspv2_host_set_timeout_ms(timeout_ms)

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
        """Install (for routing) and advertise a routine table; the one way in.

        ``target`` is a :class:`Provider` (its id, namespace and name are the
        defaults), a raw :class:`Routine`, or a bare ``NSPV2_ROUTINE`` filled
        by hand or by C. ``owner`` is whatever keeps a bare table's entry
        points alive (ctypes thunks, say); the returned entry holds it, and
        the table, until :meth:`unadvertise` (or :meth:`close`) has returned.
        """
        provider = target if isinstance(target, Provider) else None
        routine = target if isinstance(target, Routine) else None
        if provider is not None:
            routine = provider.routine()
            provider_id = provider_id or type(provider).provider_id
            if namespace is None:
                namespace = type(provider).namespace
            name = name or provider.display_name
        if provider_id is None:
            raise ValueError("advertising a Routine or an NSPV2_ROUTINE needs provider_id")
        if provider_id in self.advertised:
            raise ValueError(f"provider {provider_id} is already advertised on this host")
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
        namespace = int(NS.NS_EMAIL if namespace is None else namespace)
        guid = GUID.from_uuid(provider_id)
        text = wstr(name or str(provider_id))
        self.winsock.check(
            self.winsock.WSCInstallNameSpaceEx(
                ctypes.cast(text, ctypes.POINTER(ctypes.c_uint16)),
                None,
                namespace,
                1,
                ctypes.byref(guid),
                None,
            ),
            "WSCInstallNameSpaceEx",
        )
        rc = self.winsock.WSAAdvertiseProvider(ctypes.byref(guid), ctypes.byref(table))
        if rc == SOCKET_ERROR:
            error = WinsockError(self.winsock.WSAGetLastError(), "WSAAdvertiseProvider")
            self.winsock.WSCUnInstallNameSpace(ctypes.byref(guid))
            raise error
        entry = Advertised(provider_id, routine, provider, namespace, guid, table, owner)
        self.advertised[provider_id] = entry
        return entry

    def unadvertise(self, target: Provider | Routine | uuid.UUID) -> None:
        """Unadvertise: the host runs down the provider's open sessions, which
        end with PLATFORM_SHUTDOWN."""
        if isinstance(target, uuid.UUID):
            pid = target
        elif isinstance(target, Provider):
            pid = type(target).provider_id
        else:
            found = [a.provider_id for a in self.advertised.values() if a.routine is target]
            if not found:
                raise KeyError("that routine is not advertised on this host")
            pid = found[0]
        entry = self.advertised.pop(pid, None)
        provider = entry.provider if entry else None
        if provider is not None:
            provider._rundown_reason = Reason.CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN
        try:
            self.winsock.unadvertise(pid)
        finally:
            if provider is not None:
                provider._rundown_reason = (
                    Reason.CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
                )
        if entry is not None:
            guid = entry.guid
            self.winsock.WSCUnInstallNameSpace(ctypes.byref(guid))

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
            raise WinsockError(self.winsock.WSAGetLastError(), what)

    def open_session(self) -> ClientSession:
        sid = ctypes.c_uint64()
        self._check(self.native.nspv2_session_open(ctypes.byref(sid)), "nspv2_session_open")
        session = ClientSession(self, sid.value)
        self.sessions.append(session)
        if len(self.sessions) > 1024:
            self.sessions = [s for s in self.sessions if not s.closed]
        return session

    def lookup_begin(
        self, session: ClientSession, restrictions: QuerySet | str, flags: int = LUP.LUP_RETURN_ALL
    ) -> int:
        if isinstance(restrictions, str):
            restrictions = QuerySet(restrictions)
        buf = restrictions.to_buffer("W")
        handle = ctypes.c_void_p()
        rc = self.native.nspv2_lookup_begin(
            session.id, ctypes.addressof(buf), int(flags), ctypes.byref(handle)
        )
        if rc == SOCKET_ERROR:
            raise WinsockError(self.winsock.WSAGetLastError(), "WSALookupServiceBeginW")
        assert handle.value
        return handle.value

    def lookup_next(self, handle: int, flags: int = 0, buffer_size: int = 1024) -> NextResult:
        """One WSALookupServiceNextW with a ``buffer_size``-byte buffer."""
        buf = (ctypes.c_uint64 * ((buffer_size + 7) // 8 or 1))()
        length = ctypes.c_uint32(buffer_size)
        rc = self.native.nspv2_lookup_next(
            handle, int(flags), ctypes.byref(length), ctypes.addressof(buf)
        )
        if rc == SOCKET_ERROR:
            return NextResult(self.winsock.WSAGetLastError(), None, length.value)
        return NextResult(NO_ERROR, QuerySet.from_address(ctypes.addressof(buf), "W"), length.value)

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
        handle = self.lookup_begin(session, restrictions, flags)
        out: list[QuerySet] = []
        try:
            size = buffer_size
            while True:
                step = self.lookup_next(handle, flags, size)
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
        finally:
            self.lookup_end(handle)

    def set_service(
        self, session: ClientSession, reg_info: QuerySet, operation: int, flags: int = 0
    ) -> None:
        """WSASetServiceW in ``session`` (operation: WSAESETSERVICEOP)."""
        buf = reg_info.to_buffer("W")
        rc = self.native.nspv2_set_service(
            session.id, ctypes.addressof(buf), int(WSAESETSERVICEOP(operation)), int(flags)
        )
        self._check(rc, "WSASetServiceW")

    # -- inspection and the native driver ---------------------------------------------

    def stats(self) -> dict[str, int]:
        out = HostStats()
        self.native.nspv2_host_stats_get(ctypes.byref(out))
        return out.as_dict()

    def reset_stats(self) -> None:
        self.native.nspv2_host_stats_reset()

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
    ) -> DriverResult:
        """Run the native driver: ``threads`` native threads x ``cycles`` cycles."""
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
        self._check(
            self.native.nspv2_driver_run(ctypes.byref(cfg), ctypes.byref(result)), "nspv2_driver_run"
        )
        return result
