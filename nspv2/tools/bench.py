"""Benchmarks: what the scaffold costs over hand-written ctypes and over C.

Three providers give the same answer to a lookup (the name asked for,
``MISTATUS_ONLINE``, one IPv4 and one IPv6 CS address, a 32-byte blob):

A  :class:`ScaffoldBench`, written with :class:`nspv2.Provider`;
B  :class:`RawBench`, a hand-written raw ctypes provider using only nspv2's
   ABI definitions (prebuilt result bytes relocated into the caller's
   buffer): the best a careful user could do without the scaffold;
C  native_stub's C bench provider.

All cycles run on the native host's native driver (one native thread), so
the client side is identical C code for all three.
"""

from __future__ import annotations

import ctypes
import itertools
import statistics
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..host.host import Advertised, Host
from ..provider.base import Provider
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..provider.registry import Session
from ..sdk.guiddef import GUID
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
from ..sdk.wintypes import DWORD, HANDLE, INT, LPVOID, WSAAPI_FUNCTYPE, wstr
from ..sdk.ws2def import CSADDR_INFO, SOCKADDR_IN
from ..sdk.ws2ipdef import SOCKADDR_IN6
from ..sdk.ws2spi import NSPV2_ROUTINE

__all__ = ["BENCH_NAME", "RawBench", "ScaffoldBench", "bench_result", "run_bench"]

BENCH_NAME = "alice@example.com"
A_ID = uuid.UUID("6e737032-6265-6e63-8a1f-000000000a0a")
B_ID = uuid.UUID("6e737032-6265-6e63-8a1f-000000000b0b")


def bench_result(name: str) -> QuerySet:
    """The answer all three providers give."""
    return QuerySet(
        name,
        comment="MISTATUS_ONLINE",
        namespace=NS.NS_EMAIL,
        cs_addrs=(
            CsAddr(None, SocketAddress.parse("192.0.2.10", 5060)),
            CsAddr(None, SocketAddress.parse("2001:db8::10", 5060)),
        ),
        output_flags=int(RESULT_IS.RESULT_IS_ADDED),
        blob=bytes(range(32)),
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
        cs_at = put(bytes(2 * ctypes.sizeof(CSADDR_INFO)))
        sin = SOCKADDR_IN()
        sin.sin_family = 2
        sin.sin_port = (5060).to_bytes(2, "big")[0] | ((5060).to_bytes(2, "big")[1] << 8)
        ctypes.memmove(ctypes.addressof(sin.sin_addr), bytes([192, 0, 2, 10]), 4)
        sin_at = put(bytes(sin))
        sin6 = SOCKADDR_IN6()
        sin6.sin6_family = 23
        sin6.sin6_port = sin.sin_port
        ctypes.memmove(
            ctypes.addressof(sin6.sin6_addr), bytes.fromhex("20010db8000000000000000000000010"), 16
        )
        sin6_at = put(bytes(sin6))
        blob_at = put(bytes(ctypes.sizeof(BLOB)))
        blob_data_at = put(bytes(range(32)))
        cs = (CSADDR_INFO * 2).from_buffer(data, cs_at)
        for i, (at, size) in enumerate(
            ((sin_at, ctypes.sizeof(sin)), (sin6_at, ctypes.sizeof(sin6)))
        ):
            cs[i].RemoteAddr.iSockaddrLength = size
            cs[i].iSocketType = 1
            cs[i].iProtocol = 6
            fixups.append(
                (cs_at + i * ctypes.sizeof(CSADDR_INFO) + CSADDR_INFO.RemoteAddr.offset, at)
            )
        del cs
        blob = BLOB.from_buffer(data, blob_at)
        blob.cbSize = 32
        del blob
        fixups.append((blob_at + _offset(BLOB, "pBlobData"), blob_data_at))
        qs = WSAQUERYSET2W.from_buffer(data, 0)
        qs.dwSize = ctypes.sizeof(WSAQUERYSET2W)
        qs.dwNameSpace = int(NS.NS_EMAIL)
        qs.dwNumberOfCsAddrs = 2
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
                if not name_ptr:
                    set_error(int(WSAError.WSAEINVAL))
                    return SOCKET_ERROR
                n = 0
                units = ctypes.cast(name_ptr, ctypes.POINTER(ctypes.c_uint16))
                while units[n] and n < 1024:
                    n += 1
                handle = next(ids)
                with lock:
                    lookups[handle] = [token, False, self._image(ctypes.string_at(name_ptr, 2 * n))]
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

        self._thunks = [
            WSAAPI_FUNCTYPE(INT, LPVOID, LPVOID)(startup),
            WSAAPI_FUNCTYPE(INT, LPVOID, LPVOID)(cleanup),
            WSAAPI_FUNCTYPE(INT, LPVOID, LPVOID, DWORD, LPVOID, LPVOID)(begin),
            WSAAPI_FUNCTYPE(None, HANDLE, HANDLE, DWORD, LPVOID, LPVOID)(next_ex),
            WSAAPI_FUNCTYPE(INT, HANDLE)(end),
            WSAAPI_FUNCTYPE(None, HANDLE, LPVOID, LPVOID, INT, DWORD, LPVOID)(set_service),
            WSAAPI_FUNCTYPE(None, LPVOID, LPVOID)(rundown),
        ]
        table = NSPV2_ROUTINE()
        table.cbSize = ctypes.sizeof(NSPV2_ROUTINE)
        table.dwMajorVersion, table.dwMinorVersion = 1, 1
        base = ctypes.addressof(table)
        for i, thunk in enumerate(self._thunks):
            ctypes.c_void_p.from_address(
                base + 12 + (4 if _P == 8 else 0) + i * _P
            ).value = ctypes.cast(thunk, ctypes.c_void_p).value
        self.table = table

    def open_counts(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "lookups": len(self._lookups)}


# ---- running ------------------------------------------------------------------------


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
    guid = GUID.from_uuid(raw.provider_id)
    name = wstr("raw bench")
    host.winsock.check(
        host.winsock.WSCInstallNameSpaceEx(
            ctypes.cast(name, ctypes.POINTER(ctypes.c_uint16)),
            None,
            int(NS.NS_EMAIL),
            1,
            ctypes.byref(guid),
            None,
        ),
        "WSCInstallNameSpaceEx",
    )
    host.winsock.check(
        host.winsock.WSAAdvertiseProvider(ctypes.byref(guid), ctypes.byref(raw.table)),
        "WSAAdvertiseProvider",
    )
    # The host unadvertises it when it closes (even after an error), and
    # keeps `raw` (its thunks) alive until then.
    host.advertised[raw.provider_id] = Advertised(
        raw.provider_id, None, None, int(NS.NS_EMAIL), guid
    )
    host.keep_alive.append(raw)


CYCLES = ("lookup", "session", "rundown")


def _drive(
    host: Host, kind: str, pid: uuid.UUID, cycles: int, threads: int = 1
) -> tuple[float, dict[int, int]]:
    r = host.drive(
        threads=threads,
        cycles=cycles,
        provider_id=pid,
        service_name=BENCH_NAME,
        session_only=kind != "lookup",
        abandon_every=1 if kind == "rundown" else 0,
        control_flags=int(LUP.LUP_RETURN_ALL),
        buffer_size=1024,
    )
    return r.elapsed_ns / (cycles * threads), r.outcomes()


def run_bench(
    *,
    cycles: int = 20000,
    repeats: int = 7,
    sessions_open: int = 10000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every benchmark in this process; return the figures."""
    say = progress or (lambda _t: None)
    out: dict[str, Any] = {"cycles": cycles, "repeats": repeats, "cycle_kinds": {}}
    with Host(timeout_ms=5000) as host:
        a = ScaffoldBench()
        host.advertise(a)
        raw = RawBench(host.winsock.WSAProviderCompleteAsyncCall, host.winsock.WSASetLastError)
        advertise_raw(host, raw)
        c_id = host.advertise_bench_provider()
        providers = {"A": a.provider_id, "B": raw.provider_id, "C": c_id}
        # the three give the same answer
        with host.open_session() as client:
            answers = {
                k: host.lookup(client, QuerySet(BENCH_NAME, provider_id=pid))
                for k, pid in providers.items()
            }
        out["same_answers"] = (
            answers["A"] == answers["B"] == answers["C"] == [bench_result(BENCH_NAME)]
        )
        for kind in CYCLES:
            samples: dict[str, list[float]] = {k: [] for k in providers}
            for rep in range(repeats + 1):  # repetition 0 is the warm-up
                order = list(providers.items())
                order = order[rep % 3 :] + order[: rep % 3]  # rotate who goes first
                for key, pid in order:
                    say(f"{kind} cycle, repetition {rep}/{repeats}, provider {key}")
                    ns, outcomes = _drive(host, kind, pid, cycles if key != "C" else cycles * 4)
                    bad = {
                        c: n
                        for c, n in outcomes.items()
                        if c not in (NO_ERROR, int(WSAError.WSA_E_NO_MORE))
                    }
                    if bad:
                        raise RuntimeError(f"benchmark {kind}/{key} saw errors: {bad}")
                    if rep:
                        samples[key].append(ns)
            figs = {k: Figure(v) for k, v in samples.items()}
            out["cycle_kinds"][kind] = {
                **{k: f.as_dict() for k, f in figs.items()},
                "A/B": round(figs["A"].median / figs["B"].median, 3),
                "A/C": round(figs["A"].median / figs["C"].median, 3),
            }
        # NextEx cost with many sessions and lookups open
        if sessions_open:
            say(f"opening {sessions_open} sessions with a lookup each")
            base = Figure(
                [_drive(host, "lookup", a.provider_id, cycles)[0] for _ in range(repeats)]
            )
            held = []
            for _ in range(sessions_open):
                s = host.open_session()
                held.append(
                    (s, host.lookup_begin(s, QuerySet(BENCH_NAME, provider_id=a.provider_id)))
                )
            say(f"lookup cycles with {sessions_open} sessions open")
            loaded = Figure(
                [_drive(host, "lookup", a.provider_id, cycles)[0] for _ in range(repeats)]
            )
            open_now = a.registry.open_counts()
            for s, h in held:
                host.lookup_end(h)
                s.close()
            out["many_open"] = {
                "sessions_open": open_now["sessions"],
                "lookups_open": open_now["lookups"],
                "baseline": base.as_dict(),
                "loaded": loaded.as_dict(),
                "loaded/baseline": round(loaded.median / base.median, 3),
            }
        out["open_after"] = {
            "A": a.registry.open_counts(),
            "B": raw.open_counts(),
            "host": host.stats(),
        }
    out["packing"] = packing_throughput(progress=say)
    return out


def packing_throughput(
    sizes: tuple[int, ...] = (1, 16, 256),
    seconds: float = 0.3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Results per second packed by QuerySet.pack_into (image built once), and
    with the image built each time (a new QuerySet per result)."""
    out: dict[str, Any] = {}
    for n in sizes:
        if progress:
            progress(f"packing {n} addresses")
        addrs = tuple(
            CsAddr(
                None,
                SocketAddress.parse(f"192.0.{i // 256}.{i % 256}", 5060)
                if i % 2 == 0
                else SocketAddress.parse(f"2001:db8::{i:x}", 5060),
            )
            for i in range(n)
        )
        q = QuerySet(BENCH_NAME, comment="MISTATUS_ONLINE", cs_addrs=addrs, blob=bytes(32))
        size = q.required_size()
        bufs = [ctypes.create_string_buffer(size + 16) for _ in range(2)]
        addresses = [(ctypes.addressof(b) + 15) & ~15 for b in bufs]
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(200):
                q.pack_into(addresses[count & 1], size)
                count += 1
        warm = count / (time.perf_counter() - t0)
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(20):
                QuerySet(
                    BENCH_NAME, comment="MISTATUS_ONLINE", cs_addrs=addrs, blob=bytes(32)
                ).pack_into(addresses[0], size)
                count += 1
        cold = count / (time.perf_counter() - t0)
        out[str(n)] = {
            "bytes": size,
            "results_per_second": round(warm),
            "results_per_second_new_queryset": round(cold),
        }
    return out


# ---- memory ---------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; elsewhere peak RSS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_memory(
    *,
    cycles: int = 1_000_000,
    chunk: int = 20_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``cycles`` lookup cycles, then ``cycles`` session+rundown cycles, through
    the host on the scaffold's provider (A); RSS growth after warm-up and
    what is left open."""
    say = progress or (lambda _t: None)
    import gc

    out: dict[str, Any] = {"cycles": cycles}
    with Host() as host:
        a = ScaffoldBench()
        host.advertise(a)
        for kind in ("lookup", "rundown"):
            warm = max(min(cycles // 10, 50_000), 1000)
            _drive(host, kind, a.provider_id, warm)
            gc.collect()
            before = rss_bytes()
            done = 0
            peak = before
            while done < cycles:
                n = min(chunk, cycles - done)
                _, outcomes = _drive(host, kind, a.provider_id, n)
                bad = {
                    c: k
                    for c, k in outcomes.items()
                    if c not in (NO_ERROR, int(WSAError.WSA_E_NO_MORE))
                }
                if bad:
                    raise RuntimeError(f"{kind} cycles saw errors: {bad}")
                done += n
                peak = max(peak, rss_bytes())
                say(f"{kind}: {done}/{cycles} cycles, RSS {rss_bytes() / 2**20:.1f} MiB")
            gc.collect()
            after = rss_bytes()
            out[kind] = {
                "rss_before_mib": round(before / 2**20, 2),
                "rss_after_mib": round(after / 2**20, 2),
                "growth_kib": round((after - before) / 1024, 1),
                "peak_growth_kib": round((peak - before) / 1024, 1),
            }
        out["open"] = {
            "provider": a.registry.open_counts(),
            "host": {k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))},
        }
        out["sessions"] = {
            "started": a.registry.sessions_started,
            "ended": a.registry.sessions_ended,
        }
    return out


# ---- stress ---------------------------------------------------------------------------


class AsyncScaffoldBench(ScaffoldBench):
    """A, completing every NextEx from a worker thread."""

    provider_id = uuid.UUID("6e737032-6265-6e63-8a1f-000000000a1a")
    complete_from_thread = True


def run_stress(
    *,
    threads: int = 8,
    cycles: int = 50_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Native threads hammering Python providers; every outcome accounted for."""
    say = progress or (lambda _t: None)
    expected = {NO_ERROR, int(WSAError.WSA_E_NO_MORE), int(WSAError.WSAEFAULT)}
    phases = [
        (
            "close and abandon, short buffers grown on WSAEFAULT",
            ScaffoldBench,
            {"abandon_every": 3, "buffer_size": 64, "grow_on_efault": True},
        ),
        (
            "LUP_FLUSHPREVIOUS on every NextEx after a short buffer",
            ScaffoldBench,
            {
                "abandon_every": 5,
                "buffer_size": 64,
                "grow_on_efault": True,
                "control_flags": int(LUP.LUP_RETURN_ALL | LUP.LUP_FLUSHPREVIOUS),
            },
        ),
        ("completion from another thread", AsyncScaffoldBench, {"abandon_every": 2}),
    ]
    out: dict[str, Any] = {"threads": threads, "cycles_per_thread": cycles, "phases": []}
    problems: list[str] = []
    with Host(timeout_ms=10000) as host:
        for title, cls, opts in phases:
            provider = cls()
            host.advertise(provider)
            say(f"{title}: {threads} x {cycles}")
            kw: dict[str, Any] = {"buffer_size": 1024, "control_flags": int(LUP.LUP_RETURN_ALL)}
            kw.update(opts)
            r = host.drive(
                threads=threads,
                cycles=cycles,
                provider_id=provider.provider_id,
                service_name=BENCH_NAME,
                **kw,
            )
            outcomes = {
                ("NO_ERROR" if c == 0 else WSAError(c).name): n for c, n in r.outcomes().items()
            }
            reg = provider.registry
            total = threads * cycles
            ok = (
                r.cycles_done == total
                and reg.sessions_started == total
                and reg.sessions_ended == total
                and reg.open_counts() == {"sessions": 0, "lookups": 0}
                and set(r.outcomes()) <= expected
            )
            ended_by: dict[str, int] = {}
            for s in reg.ended:
                ended_by[s.ended_by or "?"] = ended_by.get(s.ended_by or "?", 0) + 1
            phase = {
                "phase": title,
                "cycles": r.cycles_done,
                "results": r.results,
                "outcomes": outcomes,
                "sessions_started": reg.sessions_started,
                "sessions_ended": reg.sessions_ended,
                "open": reg.open_counts(),
                "seconds": round(r.elapsed_ns / 1e9, 3),
                "cycles_per_second": round(total / (r.elapsed_ns / 1e9), 1),
                "ok": ok,
            }
            if not ok:
                problems.append(title)
            out["phases"].append(phase)
            host.unadvertise(provider)
            provider.close()
        # throughput: 1 thread vs `threads` threads on the first phase's workload
        provider = ScaffoldBench()
        host.advertise(provider)
        n1 = max(cycles // 4, 100)
        say(f"throughput: 1 thread x {n1 * threads}")
        one = host.drive(
            threads=1,
            cycles=n1 * threads,
            provider_id=provider.provider_id,
            service_name=BENCH_NAME,
        )
        say(f"throughput: {threads} threads x {n1}")
        many = host.drive(
            threads=threads, cycles=n1, provider_id=provider.provider_id, service_name=BENCH_NAME
        )
        rate1 = n1 * threads / (one.elapsed_ns / 1e9)
        rate_n = n1 * threads / (many.elapsed_ns / 1e9)
        out["throughput"] = {
            "1_thread_cycles_per_s": round(rate1, 1),
            f"{threads}_threads_cycles_per_s": round(rate_n, 1),
            "ratio": round(rate_n / rate1, 3),
        }
        out["host_open"] = {
            k: v for k, v in host.stats().items() if k.endswith(("_open", "_pending"))
        }
        if any(out["host_open"].values()):
            problems.append("host left something open")
    out["problems"] = problems
    return out
