"""One client process of ``nspv2 stress --processes``, and the cycle it runs.

``python -m nspv2.tools.stress_client SOCKET INDEX CYCLES ABANDON_EVERY``
imports everything, prints ``ready``, waits for a line on stdin (so that
every client starts at once), runs CYCLES cycles against the provider
process listening on SOCKET, and prints one line of JSON: each cycle's
latency, when it started and finished, and what it counted.

The cycle (docs/reliability.md, "Client processes"), the same against a
provider process (:class:`nspv2.Client`) and the in-process host
(:class:`nspv2.host.host.ClientSession`):

1. open a client session (a process: connect and HELLO);
2. RNRSERVICE_REGISTER a name of its own (the first call into the provider:
   NSPv2Startup, then NSPv2SetServiceEx);
3. look it up (Begin, NextEx: the entry, NextEx: WSA_E_NO_MORE, End);
4. close in order (GOODBYE, NSPv2Cleanup: the example signs the name out),
   or, every ABANDON_EVERY-th cycle, abandon (the socket closed without
   GOODBYE: NSPv2ClientSessionRundown, OTHER_COMMUNICATION_ERROR).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..examples.email import encode_presence
from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress
from ..sdk.msgrua import MISTATUS
from ..sdk.winsock2 import WSAESETSERVICEOP

__all__ = ["CycleCounts", "CycleSession", "main", "run_cycles"]

_ADDRESS = CsAddr(None, SocketAddress.parse("192.0.2.77", 5060))
_PRESENCE = encode_presence(MISTATUS.MISTATUS_ONLINE)


class CycleSession(Protocol):
    """What a cycle needs of a client session: a ClientSession or a Client."""

    def set_service(self, reg_info: QuerySet, operation: int, flags: int = 0) -> None: ...

    def lookup(self, restrictions: QuerySet | str, flags: int = ...) -> list[QuerySet]: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...


#: The domain of the names a cycle registers: one the email example is
#: installed for, so that the catalog routes them to it.
STRESS_DOMAIN = "example.org"


@dataclass
class CycleCounts:
    """What one client (process or thread) did."""

    latencies_ns: list[int] = field(default_factory=list)
    closed: int = 0
    abandoned: int = 0
    errors: list[str] = field(default_factory=list)
    started_ns: int = 0
    finished_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "latencies_ns": self.latencies_ns,
            "closed": self.closed,
            "abandoned": self.abandoned,
            "errors": self.errors,
            "started_ns": self.started_ns,
            "finished_ns": self.finished_ns,
        }


#: How many error texts a client keeps (the count is in ``closed``/``abandoned``).
MAX_ERRORS = 20


def run_cycles(
    open_session: Callable[[], CycleSession], tag: str, cycles: int, abandon_every: int
) -> CycleCounts:
    """``cycles`` cycles; ``tag`` makes the names unique to this client.

    Each cycle's latency runs from opening its session to its close (or
    abandon) returning. A cycle whose register or lookup fails still ends
    its session (closed or abandoned as planned) and is counted, with the
    error kept."""
    out = CycleCounts(started_ns=time.monotonic_ns())
    for i in range(1, cycles + 1):
        name = f"{tag}-{i}@{STRESS_DOMAIN}"
        abandon = abandon_every > 0 and i % abandon_every == 0
        t0 = time.perf_counter_ns()
        try:
            session = open_session()
        except WinsockError as exc:
            if len(out.errors) < MAX_ERRORS:
                out.errors.append(f"cycle {i}: open: {exc}")
            continue
        try:
            session.set_service(
                QuerySet(name, cs_addrs=(_ADDRESS,), blob=_PRESENCE),
                WSAESETSERVICEOP.RNRSERVICE_REGISTER,
            )
            found = session.lookup(name)
            if [q.service_instance_name for q in found] != [name]:
                raise WinsockError(0, f"looked up {name}, found {found}")
        except WinsockError as exc:
            if len(out.errors) < MAX_ERRORS:
                out.errors.append(f"cycle {i}: {exc}")
        finally:
            try:
                if abandon:
                    session.abandon()
                else:
                    session.close()
            except WinsockError as exc:
                if len(out.errors) < MAX_ERRORS:
                    out.errors.append(f"cycle {i}: end: {exc}")
        out.latencies_ns.append(time.perf_counter_ns() - t0)
        if abandon:
            out.abandoned += 1
        else:
            out.closed += 1
    out.finished_ns = time.monotonic_ns()
    return out


def main(argv: list[str]) -> int:
    from ..client import Client

    socket, index, cycles, abandon_every = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1  # the parent went away before saying go
    counts = run_cycles(
        lambda: Client(socket=socket), f"p{index}-{os.getpid()}", cycles, abandon_every
    )
    sys.stdout.write(json.dumps(counts.as_dict()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
