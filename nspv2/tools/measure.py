"""What bench, memory and stress share: the providers they measure and their figures.

Three providers give the same answer to a lookup (the name asked for,
``MISTATUS_ONLINE``, one IPv4 and one IPv6 CS address, a 32-byte blob):

A  :class:`ScaffoldBench`, written with :class:`nspv2.Provider` (or a
   user's Provider given as ``MODULE:CLASS``);
B  :class:`RawBench`, a hand-written raw ctypes provider using only nspv2's
   ABI definitions (prebuilt result bytes relocated into the caller's
   buffer): the best a careful user could do without the scaffold;
C  native_stub's C bench provider.

All cycles run on the native host's native driver, so the client side is
identical C code for all three.
"""

from __future__ import annotations

import ctypes
import importlib
import ipaddress
import itertools
import os
import socket
import statistics
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..host.host import Host
from ..provider.base import Provider
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..provider.registry import Session
from ..sdk.winsock2 import (
    BLOB,
    LUP,
    NO_ERROR,
    NS,
    RESULT_IS,
    SOCKET_ERROR,
    WSAQUERYSET2W,
    WSAError,
)
from ..sdk.wintypes import WstrError, read_wstr
from ..sdk.ws2def import AF, CSADDR_INFO, IPPROTO, SOCK, SOCKADDR_IN, SOCKET_ADDRESS
from ..sdk.ws2ipdef import SOCKADDR_IN6
from ..sdk.ws2spi import NSPV2_ROUTINE, PROTOTYPES

__all__ = [
    "BENCH_NAME",
    "CYCLES",
    "AsyncScaffoldBench",
    "Figure",
    "RawBench",
    "ScaffoldBench",
    "advertise_raw",
    "bench_result",
    "drive",
    "pin_delta",
    "pinning_state",
    "pinning_text",
    "subject",
]

BENCH_NAME = "alice@example.com"
_V4, _V6, _PORT = "192.0.2.10", "2001:db8::10", 5060
_BLOB = bytes(range(32))
A_ID = uuid.UUID("6e737032-6265-6e63-8a1f-000000000a0a")
B_ID = uuid.UUID("6e737032-6265-6e63-8a1f-000000000b0b")


def bench_result(name: str) -> QuerySet:
    """The answer all three providers give."""
    return QuerySet(
        name,
        comment="MISTATUS_ONLINE",
        namespace=NS.NS_EMAIL,
        cs_addrs=(
            CsAddr(None, SocketAddress.parse(_V4, _PORT)),
            CsAddr(None, SocketAddress.parse(_V6, _PORT)),
        ),
        output_flags=int(RESULT_IS.RESULT_IS_ADDED),
        blob=_BLOB,
    )


class ScaffoldBench(Provider):
    """A: the bench answer, written with the scaffold as a user would."""

    provider_id = A_ID

    def __init__(self) -> None:
        self._answers: dict[str | None, QuerySet] = {}

    def startup(self, session: Session) -> None:
        session.data["lookups"] = 0

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> tuple[QuerySet, ...]:
        name = restrictions.service_instance_name
        answer = self._answers.get(name)
        if answer is None:
            answer = self._answers[name] = bench_result(name or "")
        session.data["lookups"] += 1
        return (answer,)


# ---- B: the hand-written raw ctypes provider ----------------------------------------

_P = ctypes.sizeof(ctypes.c_void_p)
_PTR = "Q" if _P == 8 else "I"


def _align(n: int) -> int:
    return (n + _P - 1) & ~(_P - 1)


def _offset(struct_type: type[ctypes.Structure], field: str) -> int:
    offset: int = getattr(struct_type, field).offset
    return offset


class RawBench:
    """B: a raw ctypes NSPv2 provider, no scaffold: its own thunks, its own
    session and lookup tables, a prebuilt image relocated per call."""

    provider_id = B_ID

    def __init__(
        self, complete: Callable[[Any, int], int], set_last_error: Callable[[int], None]
    ) -> None:
        self._complete = complete
        self._set_last_error = set_last_error
        self._ids = itertools.count(0x20001)
        self._sessions: dict[int, int] = {}
        self._lookups: dict[int, list[Any]] = {}  # handle -> [session, done, held]
        self._images: dict[bytes, tuple[struct.Struct, list[Any], list[tuple[int, int]], int]] = {}
        self._lock = threading.Lock()
        self._build_table()

    # The image of one answer: WSAQUERYSET2W, then the pieces, pointers as offsets.
    def _image(
        self, name_bytes: bytes
    ) -> tuple[struct.Struct, list[Any], list[tuple[int, int]], int]:
        cached = self._images.get(name_bytes)
        if cached is not None:
            return cached
        data = bytearray(ctypes.sizeof(WSAQUERYSET2W))
        fixups: list[tuple[int, int]] = []

        def put(payload: bytes) -> int:
            at = _align(len(data))
            data.extend(bytes(at - len(data)))
            data.extend(payload)
            return at

        name_at = put(name_bytes + b"\0\0")
        comment_at = put("MISTATUS_ONLINE".encode("utf-16-le") + b"\0\0")
        cs_at = put(bytes(2 * ctypes.sizeof(CSADDR_INFO)))  # the two remotes below
        sin = SOCKADDR_IN()
        sin.sin_family = int(AF.AF_INET)
        sin.sin_port = socket.htons(_PORT)
        v4 = ipaddress.IPv4Address(_V4).packed
        ctypes.memmove(ctypes.addressof(sin.sin_addr), v4, len(v4))
        sin_at = put(bytes(sin))
        sin6 = SOCKADDR_IN6()
        sin6.sin6_family = int(AF.AF_INET6)
        sin6.sin6_port = socket.htons(_PORT)
        v6 = ipaddress.IPv6Address(_V6).packed
        ctypes.memmove(ctypes.addressof(sin6.sin6_addr), v6, len(v6))
        sin6_at = put(bytes(sin6))
        blob_at = put(bytes(ctypes.sizeof(BLOB)))
        blob_data_at = put(_BLOB)
        remotes = ((sin_at, ctypes.sizeof(sin)), (sin6_at, ctypes.sizeof(sin6)))
        cs = (CSADDR_INFO * len(remotes)).from_buffer(data, cs_at)
        for i, (at, size) in enumerate(remotes):
            cs[i].RemoteAddr.iSockaddrLength = size
            cs[i].iSocketType = int(SOCK.SOCK_STREAM)
            cs[i].iProtocol = int(IPPROTO.IPPROTO_TCP)
            fixups.append(
                (
                    cs_at
                    + i * ctypes.sizeof(CSADDR_INFO)
                    + _offset(CSADDR_INFO, "RemoteAddr")
                    + _offset(SOCKET_ADDRESS, "lpSockaddr"),
                    at,
                )
            )
        del cs
        blob = BLOB.from_buffer(data, blob_at)
        blob.cbSize = len(_BLOB)
        del blob
        fixups.append((blob_at + _offset(BLOB, "pBlobData"), blob_data_at))
        qs = WSAQUERYSET2W.from_buffer(data, 0)
        qs.dwSize = ctypes.sizeof(WSAQUERYSET2W)
        qs.dwNameSpace = int(NS.NS_EMAIL)
        qs.dwNumberOfCsAddrs = len(remotes)
        qs.dwOutputFlags = int(RESULT_IS.RESULT_IS_ADDED)
        del qs
        for field, at in (
            ("lpszServiceInstanceName", name_at),
            ("lpszComment", comment_at),
            ("lpcsaBuffer", cs_at),
            ("lpBlob", blob_at),
        ):
            fixups.append((getattr(WSAQUERYSET2W, field).offset, at))
        fixups.sort()
        # One struct call writes the whole image with absolute pointers.
        fmt, pos = "<", 0
        args: list[Any] = []
        slots: list[tuple[int, int]] = []
        for at, target in fixups:
            if at > pos:
                fmt += f"{at - pos}s"
                args.append(bytes(data[pos:at]))
            slots.append((len(args), target))
            fmt += _PTR
            args.append(0)
            pos = at + _P
        if pos < len(data):
            fmt += f"{len(data) - pos}s"
            args.append(bytes(data[pos:]))
        image = (struct.Struct(fmt), args, slots, len(data))
        self._images[name_bytes] = image
        return image

    def _build_table(self) -> None:
        ptr_at = ctypes.c_void_p.from_address
        u32_at = ctypes.c_uint32.from_address
        complete = self._complete
        set_error = self._set_last_error
        sessions = self._sessions
        lookups = self._lookups
        ids = self._ids
        lock = self._lock

        def startup(_pid: int | None, pp: int | None) -> int:
            try:
                token = next(ids)
                with lock:
                    sessions[token] = 0
                ptr_at(pp).value = token  # type: ignore[arg-type]
                return NO_ERROR
            except Exception:
                set_error(int(WSAError.WSAEINVAL))
                return SOCKET_ERROR

        def cleanup(_pid: int | None, token: int | None) -> int:
            with lock:
                found = sessions.pop(token, None) if token else None
            if found is None:
                set_error(int(WSAError.WSAEINVAL))
                return SOCKET_ERROR
            return NO_ERROR

        def rundown(_pid: int | None, token: int | None) -> None:
            with lock:
                if token:
                    sessions.pop(token, None)

        def begin(
            _pid: int | None, qs: int | None, flags: int, token: int | None, ph: int | None
        ) -> int:
            try:
                if not qs or not ph or token not in sessions:
                    set_error(int(WSAError.WSAEINVAL))
                    return SOCKET_ERROR
                name_ptr = ptr_at(qs + _offset(WSAQUERYSET2W, "lpszServiceInstanceName")).value
                try:  # the one UTF-16 reading policy (nspv2.sdk.wintypes.read_wstr)
                    name = read_wstr(name_ptr, what="lpszServiceInstanceName")
                except WstrError:
                    name = None
                if not name:
                    set_error(int(WSAError.WSAEINVAL))
                    return SOCKET_ERROR
                handle = next(ids)
                image = self._image(name.encode("utf-16-le", "surrogatepass"))
                with lock:
                    lookups[handle] = [token, False, image]
                ptr_at(ph).value = handle
                return NO_ERROR
            except Exception:
                set_error(int(WSAError.WSANO_RECOVERY))
                return SOCKET_ERROR

        def next_ex(
            h_async: int | None, h: int | None, flags: int, plen: int | None, pqs: int | None
        ) -> None:
            try:
                state = lookups.get(h)  # type: ignore[arg-type]
                if state is None:
                    complete(h_async, int(WSAError.WSA_INVALID_HANDLE))
                    return
                if state[1] or not plen:
                    complete(h_async, int(WSAError.WSA_E_NO_MORE))
                    return
                packer, args, slots, size = state[2]
                length = u32_at(plen)
                if length.value < size or not pqs:
                    length.value = size
                    complete(h_async, int(WSAError.WSAEFAULT))
                    return
                values = args.copy()
                for index, target in slots:
                    values[index] = pqs + target
                ctypes.memmove(pqs, packer.pack(*values), size)
                state[1] = True
                complete(h_async, NO_ERROR)
            except Exception:
                complete(h_async, int(WSAError.WSANO_RECOVERY))

        def end(h: int | None) -> int:
            with lock:
                found = lookups.pop(h, None) if h else None
            if found is None:
                set_error(int(WSAError.WSA_INVALID_HANDLE))
                return SOCKET_ERROR
            return NO_ERROR

        def set_service(h_async: int | None, *_args: Any) -> None:
            complete(h_async, int(WSAError.WSAEOPNOTSUPP))

        callables = (startup, cleanup, begin, next_ex, end, set_service, rundown)
        self._thunks = [p.address_functype(fn) for p, fn in zip(PROTOTYPES, callables, strict=True)]
        table = NSPV2_ROUTINE()
        table.cbSize = ctypes.sizeof(NSPV2_ROUTINE)
        table.dwMajorVersion, table.dwMinorVersion = 1, 1
        base = ctypes.addressof(table)
        for p, thunk in zip(PROTOTYPES, self._thunks, strict=True):
            ctypes.c_void_p.from_address(base + _offset(NSPV2_ROUTINE, p.slot)).value = ctypes.cast(
                thunk, ctypes.c_void_p
            ).value
        self.table = table

    def open_counts(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "lookups": len(self._lookups)}


class AsyncScaffoldBench(ScaffoldBench):
    """A, completing every NextEx from a worker thread."""

    provider_id = uuid.UUID("6e737032-6265-6e63-8a1f-000000000a1a")
    complete_from_thread = True


@dataclass
class Figure:
    samples_ns: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repetitions."""
        return (max(self.samples_ns) - min(self.samples_ns)) / self.median if self.median else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ns": round(self.median, 1),
            "min_ns": round(min(self.samples_ns), 1),
            "max_ns": round(max(self.samples_ns), 1),
            "spread": round(self.spread, 3),
            "cycles_per_second": round(1e9 / self.median, 1) if self.median else None,
        }


def advertise_raw(host: Host, raw: RawBench) -> None:
    # The host keeps `raw` (its thunks) alive until it unadvertises it.
    host.advertise(raw.table, raw.provider_id, int(NS.NS_EMAIL), owner=raw, name="raw bench")


CYCLES = ("lookup", "session", "rundown")


def subject(spec: str | None, name: str | None = None) -> tuple[type[Provider], str]:
    """The provider measured as A and the name to look up.

    ``spec`` is a user's ``MODULE:CLASS`` (or ``file.py[:CLASS]``), loaded as
    ``nspv2 check`` loads it (raises :class:`~nspv2.tools.check.CheckError`);
    None means :class:`ScaffoldBench`. The name defaults to the class's first
    ``check_queries`` entry, else :data:`BENCH_NAME`.
    """
    if spec is None:
        return ScaffoldBench, name or BENCH_NAME
    from .check import load_provider_class

    cls = load_provider_class(spec)
    queries = list(getattr(cls, "check_queries", ()))
    return cls, name or (queries[0] if queries else BENCH_NAME)


def drive(
    host: Host,
    kind: str,
    pid: uuid.UUID,
    cycles: int,
    threads: int = 1,
    *,
    name: str = BENCH_NAME,
    namespace: int = NS.NS_EMAIL,
) -> tuple[float, dict[int, int]]:
    r = host.drive(
        threads=threads,
        cycles=cycles,
        provider_id=pid,
        service_name=name,
        name_space=int(namespace),
        session_only=kind != "lookup",
        abandon_every=1 if kind == "rundown" else 0,
        control_flags=int(LUP.LUP_RETURN_ALL),
        buffer_size=1024,
    )
    return r.elapsed_ns / (cycles * threads), r.outcomes()


# ---- thread-state pinning, as the run used it ------------------------------------------


def pinning_state() -> dict[str, Any]:
    """Whether Python thread-state pinning (``nspv2.host.pinning``) was on for
    this process, with its stats; call it once the native host is loaded.

    ``available``: this nspv2 has the module; ``installed``: the host pins
    thread states (its stats say so); ``disabled_by_env``: NSPV2_NO_PINNING=1.
    """
    out: dict[str, Any] = {
        "available": False,
        "installed": False,
        "disabled_by_env": os.environ.get("NSPV2_NO_PINNING") == "1",
        "stats": None,
    }
    try:
        module = importlib.import_module("nspv2.host.pinning")
    except ImportError:
        return out
    out["available"] = True
    stats = getattr(module, "stats", None)
    if callable(stats):
        try:
            got = stats()
        except Exception as exc:  # report it, the measurement goes on
            out["error"] = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(got, dict):
                out["stats"] = dict(got)
                out["installed"] = bool(got.get("installed"))
    return out


def pin_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int] | None:
    """What the pin counters did between two :func:`pinning_state` calls."""
    b, a = before.get("stats"), after.get("stats")
    if not isinstance(b, dict) or not isinstance(a, dict):
        return None
    return {
        k: int(a[k]) - int(b.get(k, 0))
        for k in a
        if isinstance(a[k], int) and not isinstance(a[k], bool)
    }


def pinning_text(state: dict[str, Any]) -> str:
    """One line saying which pinning state a run used."""
    if not state["available"]:
        return "thread-state pinning: not in this nspv2 (every callback from a native thread creates a thread state)"
    if state["installed"]:
        return "thread-state pinning: installed"
    why = "NSPV2_NO_PINNING=1" if state["disabled_by_env"] else state.get("error", "not installed")
    return f"thread-state pinning: off ({why})"
