"""QuerySet.from_address and read_wstr throughput (not a test: run it).

    python tests/bench_queryset.py [--seconds 0.3]

Prints reads per second and microseconds per read (CPU time of this process,
so other load on the machine matters less), best of five runs, for
the lookup result ``nspv2 bench`` packs, a query set with long strings, and
single strings; each unbounded (the provider's case: only the string itself
is known to be valid) and bounded by its buffer (the client's case).
"""

from __future__ import annotations

import argparse
import ctypes
import time
from collections.abc import Callable
from functools import partial

from nspv2 import CsAddr, QuerySet, SocketAddress
from nspv2.sdk.wintypes import read_wstr, wstr

RESULT = QuerySet(
    "alice@example.com",
    comment="MISTATUS_ONLINE",
    cs_addrs=(
        CsAddr(None, SocketAddress.parse("192.0.2.10", 5060)),
        CsAddr(None, SocketAddress.parse("2001:db8::10", 5060)),
    ),
    blob=bytes(32),
)
LONG = QuerySet("n" * 1000, comment="c" * 1000, context="x" * 1000, query_string="q" * 1000)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second, best of five runs of about ``seconds`` each."""
    n = 1
    while True:
        start = time.process_time()
        for _ in range(n):
            fn()
        took = time.process_time() - start
        if took >= seconds / 10:
            break
        n *= 4
    best = 0.0
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = max(best, n / (time.process_time() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3)
    seconds = parser.parse_args().seconds
    cases: list[tuple[str, Callable[[], object]]] = []
    keep: list[object] = []  # the buffers the cases read
    for label, q in (("lookup result", RESULT), ("4 strings x 1000", LONG)):
        buf = q.to_buffer()
        keep.append(buf)
        start = ctypes.addressof(buf)
        bounds = (start, start + len(buf))
        cases.append((f"from_address {label}, unbounded", partial(QuerySet.from_address, start)))
        cases.append(
            (f"from_address {label}, bounded", partial(QuerySet.from_address, start, bounds=bounds))
        )
    for n in (17, 1000):
        text = wstr("a" * n)
        keep.append(text)
        start = ctypes.addressof(text)
        end = start + ctypes.sizeof(text)
        cases.append((f"read_wstr {n} units, unbounded", partial(read_wstr, start)))
        cases.append(
            (f"read_wstr {n} units, bounded", partial(read_wstr, start, within=(start, end)))
        )
    print(f"{'case':<42} {'reads/s':>10} {'us/read':>8}")
    for name, fn in cases:
        r = rate(fn, seconds)
        print(f"{name:<42} {r:>10,.0f} {1e6 / r:>8.2f}")


if __name__ == "__main__":
    main()
