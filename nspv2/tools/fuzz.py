"""Malformed query sets in a guarded arena, for the reader and the host.

:class:`GuardedArena` is memory followed by an inaccessible page (POSIX
``mprotect``): reading past its end kills the process instead of going
unnoticed. :func:`build_image` writes a random, usually malformed,
WSAQUERYSET2W or WSAQUERYSETW image into an arena: random counts, NULL and
dangling-but-in-arena pointers, small ``dwSize``, strings without a
terminator (which, for the host path, always reach the reader's bound
before the guard page), sockaddrs of bogus lengths and families, huge blob
sizes. :func:`run_fuzz` (``python -m nspv2 fuzz``) feeds them to
``QuerySet.from_address`` (bounded by the arena) and, through the native
host, to a provider's Begin and SetServiceEx.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import random
import struct
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..provider.errors import WinsockError
from ..provider.queryset import MAX_SOCKADDR_LEN, MAX_STRING_CHARS, QuerySet
from ..sdk.winsock2 import (
    AFPROTOCOLS,
    BLOB,
    NO_ERROR,
    NS,
    WSAQUERYSET2W,
    WSAQUERYSETW,
    WSAVERSION,
    WSAError,
    code_name,
)
from ..sdk.ws2def import AF, CSADDR_INFO, IPPROTO, SOCK, SOCKADDR_IN, SOCKET_ADDRESS
from ..sdk.ws2ipdef import SOCKADDR_IN6
from .common import EXIT_OK, EXIT_PROBLEMS, Progress, add_json, positive

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["ALLOWED_HOST_CODES", "GuardedArena", "add_commands", "build_image", "run_fuzz"]

PAGE = mmap.PAGESIZE
_P = ctypes.sizeof(ctypes.c_void_p)
_SIN = ctypes.sizeof(SOCKADDR_IN)
_SIN6 = ctypes.sizeof(SOCKADDR_IN6)
_FAMILY = ctypes.sizeof(ctypes.c_ushort)  # SOCKADDR.sa_family
_ALIGN_U32 = ctypes.alignment(ctypes.c_uint32)
#: iSockaddrLength values: exact, short by one, the reader's limit and one past it, absurd.
_SOCKADDR_LENGTHS = (
    *(_SIN, _SIN6, 0, 1, 2, _SIN - 1, _SIN6 - 1),
    *(MAX_SOCKADDR_LEN, MAX_SOCKADDR_LEN + 1, -1, 0x7FFFFFFF),
)


def _offset(struct_type: type[ctypes.Structure], field: str) -> int:
    """``offsetof(struct_type, field)``, from the ctypes definition."""
    offset: int = getattr(struct_type, field).offset
    return offset


def _set_pointer(obj: ctypes.Structure, field: str, address: int) -> None:
    """Store a raw address (possibly dangling: it is fuzz) in a pointer field."""
    at = ctypes.addressof(obj) + _offset(type(obj), field)
    ctypes.c_void_p.from_address(at).value = address or None


def _socket_address(address: int, length: int) -> SOCKET_ADDRESS:
    sa = SOCKET_ADDRESS()
    _set_pointer(sa, "lpSockaddr", address)
    sa.iSockaddrLength = length
    return sa


#: Codes the host path may give for a malformed query set: the provider's
#: WSAEINVAL, or the host's own validation before the provider is reached.
ALLOWED_HOST_CODES = {
    NO_ERROR,
    int(WSAError.WSAEINVAL),
    int(WSAError.WSAEFAULT),
    int(WSAError.WSASERVICE_NOT_FOUND),
}


class GuardedArena:
    """``size`` usable bytes ending exactly where a PROT_NONE page begins."""

    def __init__(self, size: int) -> None:
        if sys.platform == "win32":
            raise OSError("guarded arenas use mprotect (POSIX only)")
        pages = (size + PAGE - 1) // PAGE + 1
        self._map = mmap.mmap(-1, pages * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = ctypes.c_char.from_buffer(self._map)
        base = ctypes.addressof(self._view)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        guard = base + (pages - 1) * PAGE
        if libc.mprotect(guard, PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.end = guard
        self.start = guard - size
        self.size = size

    def write(self, offset: int, data: bytes) -> int:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write outside the arena")
        ctypes.memmove(self.start + offset, data, len(data))
        return self.start + offset

    def clear(self) -> None:
        ctypes.memset(self.start, 0, self.size)


def build_image(
    rnd: random.Random, arena: GuardedArena, *, kind: str = "2W", host_safe: bool = False
) -> int:
    """Write a random query-set image at the start of ``arena``; return its address.

    ``host_safe``: every string, read from any address a pointer here can
    hold, is terminated inside the arena; an over-long one runs for more than
    the readers' bound first (a reader that is not given the arena's bounds,
    as the host copying a client's query set, must not fault).
    """
    arena.clear()
    header = WSAQUERYSET2W if kind == "2W" else WSAQUERYSETW
    hsize = ctypes.sizeof(header)
    free_at = hsize
    size = arena.size

    def room(n: int, align: int = _P) -> int:
        nonlocal free_at
        at = (free_at + align - 1) & ~(align - 1)
        if at + n > size:
            return -1
        free_at = at + n
        return at

    def addr(offset: int) -> int:
        return arena.start + offset

    def pointer(kind_of: str, blob: bytes = b"", align: int = _P) -> int:
        choice = rnd.random()
        if choice < 0.15:
            return 0
        if choice < 0.25:  # dangling: stale bytes somewhere in the arena, with
            # room for the largest object a count here can describe (a reader
            # not given the arena's bounds trusts counts, as C does)
            at = rnd.randrange(0, size - 512) & ~(align - 1)
            return addr(at)
        at = room(len(blob) or 16, align)
        if at < 0:
            return 0
        arena.write(at, blob)
        return addr(at)

    def string() -> int:
        choice = rnd.random()
        if choice < 0.2:
            return 0
        text = "".join(
            chr(rnd.choice([0x41, 0x7A, 0xE9, 0x4E2D, 0xD83D, 0x20]))
            for _ in range(rnd.randrange(0, 24))
        )
        data = text.encode("utf-16-le", errors="surrogatepass")
        if choice < 0.85:
            return pointer("str", data + b"\0\0", 2)
        # unterminated
        if host_safe:
            # Over the bound, then at least one NUL unit before the guard
            # page: a dangling pointer into the run (see pointer()) must also
            # meet a terminator before the arena ends.
            run = 2 * (MAX_STRING_CHARS + 1)
            start = size - run - rnd.randrange(1, 64) * 2
            if start < hsize:
                return 0
            ctypes.memset(addr(start), 0x41, run)
            return addr(start)
        start = (size - len(data)) & ~1
        arena.write(start, data)
        return addr(start)

    fields: dict[str, int] = {}
    fields["dwSize"] = rnd.choice([hsize, hsize, hsize, 0, 4, hsize - 1, hsize + 8, 0xFFFFFFFF])
    fields["lpszServiceInstanceName"] = string()
    fields["lpszComment"] = string()
    fields["lpszContext"] = string()
    fields["lpszQueryString"] = string()
    fields["dwNameSpace"] = rnd.choice(
        [int(NS.NS_EMAIL), int(NS.NS_ALL), int(NS.NS_DNS), rnd.getrandbits(32)]
    )
    version = WSAVERSION(rnd.getrandbits(32), rnd.choice([0, 1, 2, -1]))
    fields["lpVersion"] = pointer("ver", bytes(version), ctypes.alignment(WSAVERSION))
    fields["lpNSProviderId"] = pointer(
        "guid", uuid.UUID(int=rnd.getrandbits(128)).bytes_le, _ALIGN_U32
    )
    if kind == "W":
        fields["lpServiceClassId"] = pointer(
            "guid", uuid.UUID(int=rnd.getrandbits(128)).bytes_le, _ALIGN_U32
        )
    n_proto = rnd.choice([0, 0, 1, 2, 5, 70000, 0xFFFFFFFF])
    fields["dwNumberOfProtocols"] = n_proto
    tcp = AFPROTOCOLS(int(AF.AF_INET), int(IPPROTO.IPPROTO_TCP))
    fields["lpafpProtocols"] = (
        pointer("protos", bytes(tcp) * min(n_proto, 5), ctypes.alignment(AFPROTOCOLS))
        if n_proto <= 5
        else rnd.choice([0, arena.start])
    )
    n_cs = rnd.choice([0, 0, 1, 2, 3, 100000])
    fields["dwNumberOfCsAddrs"] = n_cs
    if 0 < n_cs <= 3:
        items = bytearray()
        for _ in range(n_cs):
            sides = []
            for _side in range(2):
                family = rnd.choice(
                    [AF.AF_INET, AF.AF_INET6, AF.AF_INET, AF.AF_INET6, 0, 1, 99, 0xFFFF]
                )
                length = rnd.choice(_SOCKADDR_LENGTHS)
                raw = struct.pack("<H", family) + bytes(
                    rnd.getrandbits(8) for _ in range(_SIN6 - _FAMILY)
                )
                padding = bytes(max(0, min(length, MAX_SOCKADDR_LEN) - len(raw)))
                at = pointer("sa", raw + padding, ctypes.alignment(SOCKADDR_IN6))
                sides.append(_socket_address(at, length))
            item = CSADDR_INFO(*sides, int(SOCK.SOCK_STREAM), int(IPPROTO.IPPROTO_TCP))
            items += bytes(item)
        fields["lpcsaBuffer"] = pointer("cs", bytes(items))
    else:
        fields["lpcsaBuffer"] = rnd.choice([0, 0, arena.start])
    fields["dwOutputFlags"] = rnd.getrandbits(32)
    cb = rnd.choice([0, 1, 32, 1000, 0x7FFFFFFF, 0xFFFFFFFF])
    data_ptr = pointer("blobdata", bytes(min(cb, 64))) if cb <= 64 else rnd.choice([0, arena.start])
    blob = BLOB()
    blob.cbSize = cb
    _set_pointer(blob, "pBlobData", data_ptr)
    fields["lpBlob"] = pointer("blob", bytes(blob))
    image = header()
    for name, value in fields.items():
        if name.startswith("lp"):
            _set_pointer(image, name, value)
        else:
            setattr(image, name, value & 0xFFFFFFFF)
    arena.write(0, bytes(image))
    return arena.start


def run_fuzz(
    *,
    cases: int = 10000,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Feed ``cases`` random images to the reader and, through the host, to a provider."""
    from ..host.host import Host
    from ..provider.base import Provider
    from ..provider.registry import Session
    from ..sdk.winsock2 import WSAESETSERVICEOP
    from .private_catalog import private_catalog

    say = progress or (lambda _t: None)
    rnd = random.Random(seed)
    arena = GuardedArena(4 * PAGE + 2 * (MAX_STRING_CHARS + 1))
    outcomes: dict[str, dict[str, int]] = {
        "reader 2W (bounded)": {},
        "reader W (bounded)": {},
        "host Begin": {},
        "host SetServiceEx": {},
    }
    unexpected: list[str] = []

    def count(where: str, key: str) -> None:
        outcomes[where][key] = outcomes[where].get(key, 0) + 1

    class Target(Provider):
        provider_id = uuid.UUID("f0220000-0000-4000-8000-00000000f022")

        def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
            return [QuerySet("x@example.com")]

        def set_service(
            self, session: Session, reg: QuerySet, op: WSAESETSERVICEOP, flags: int
        ) -> None:
            pass

    with private_catalog(), Host(timeout_ms=5000, auto_install=True) as host:
        target = Target()
        host.advertise(target)
        client = host.open_session()
        for i in range(cases):
            if i % 500 == 0:
                say(f"case {i}/{cases}")
            for kind in ("2W", "W"):
                address = build_image(rnd, arena, kind=kind)
                where = f"reader {kind} (bounded)"
                try:
                    QuerySet.from_address(address, kind, bounds=(arena.start, arena.end))
                    count(where, "parsed")
                except WinsockError as exc:
                    if exc.code != WSAError.WSAEINVAL:
                        unexpected.append(f"case {i} {where}: {exc}")
                    count(where, exc.name)
            address = build_image(rnd, arena, kind="W", host_safe=True)
            handle = ctypes.c_void_p()
            rc = host.native.nspv2_lookup_begin(client.id, address, 0, ctypes.byref(handle))
            code = NO_ERROR if rc == NO_ERROR else host.winsock.WSAGetLastError()
            count("host Begin", code_name(code))
            if code not in ALLOWED_HOST_CODES:
                unexpected.append(f"case {i} host Begin: {code}")
            if code == NO_ERROR:
                host.lookup_end(handle.value or 0)
            address = build_image(rnd, arena, kind="W", host_safe=True)
            rc = host.native.nspv2_set_service(client.id, address, int(rnd.choice([0, 1, 2, 7])), 0)
            code = NO_ERROR if rc == NO_ERROR else host.winsock.WSAGetLastError()
            count("host SetServiceEx", code_name(code))
            if code not in ALLOWED_HOST_CODES:
                unexpected.append(f"case {i} host SetServiceEx: {code}")
        client.close()
        leaks = target.registry.open_counts()
        if leaks != {"sessions": 0, "lookups": 0}:
            unexpected.append(f"left open: {leaks}")
    return {"cases": cases, "seed": seed, "outcomes": outcomes, "unexpected": unexpected}


def cmd_fuzz(args: argparse.Namespace) -> int:
    progress = Progress()
    doc = run_fuzz(cases=args.cases, seed=args.seed, progress=progress)
    progress.done()
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(
            f"nspv2 fuzz: {doc['cases']} malformed query sets (seed {doc['seed']}), guarded arena"
        )
        for where, counts in doc["outcomes"].items():
            print(f"  {where:<34} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        print(f"  unexpected outcomes: {len(doc['unexpected'])}")
        for line in doc["unexpected"][:10]:
            print(f"    {line}")
    return EXIT_OK if not doc["unexpected"] else EXIT_PROBLEMS


def add_commands(sub: SubParsers) -> None:
    p_fuzz = sub.add_parser(
        "fuzz",
        help="feed malformed query sets to the reader and the host",
        description="Build malformed WSAQUERYSET2W/WSAQUERYSETW images in a guarded arena and feed them to "
        "QuerySet.from_address and, through the native host, to Begin and SetServiceEx; the only allowed "
        "outcomes are a parsed query set or WSAEINVAL (and the host's own validation codes).",
    )
    p_fuzz.add_argument("--cases", type=positive, default=10000, help="cases (default 10000)")
    p_fuzz.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    add_json(p_fuzz, "the outcome counts")
    p_fuzz.set_defaults(func=cmd_fuzz)
