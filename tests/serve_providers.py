"""Providers for tests that serve them from another process (``nspv2 serve
tests/serve_providers.py:GatedDirectory``); named by file, since the
``tests`` package is not importable where the server runs.

GatedDirectory is the e-mail presence directory plus two things a test in
another process can see and steer:

* every NSPv2Startup, NSPv2Cleanup and NSPv2ClientSessionRundown is
  appended, one line each, to the file named by ``NSPV2_TEST_EVENTS``
  (``startup <token>``, ``cleanup <token>``, ``rundown <token> <REASON>``);
* a lookup of a name starting with ``gate`` blocks its NextEx (on the
  server's worker thread) until the file named by ``NSPV2_TEST_GATE``
  exists (at most 60 seconds), after appending ``blocked <name>``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from nspv2.examples.email import EmailDirectory
from nspv2.provider.queryset import QuerySet
from nspv2.provider.registry import Session
from nspv2.sdk.nsemail import NAPI_PROVIDER_LEVEL, NAPI_PROVIDER_TYPE, InstallationBlob

GATE_PREFIX = "gate"
_lock = threading.Lock()


def _event(line: str) -> None:
    path = os.environ.get("NSPV2_TEST_EVENTS")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class GatedDirectory(EmailDirectory):
    #: The example's domains, and a wildcard provider: the catalog also
    #: routes names without a domain ("gate-...") to it.
    install_blob = InstallationBlob(
        NAPI_PROVIDER_TYPE.ProviderType_Application,
        level=NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
        wildcard=True,
        domains=["example.com", "example.org"],
    ).pack()

    def startup(self, session: Session) -> None:
        _event(f"startup {session.token}")

    def cleanup(self, session: Session) -> None:
        super().cleanup(session)
        _event(f"cleanup {session.token}")

    def client_session_rundown(self, session: Session) -> None:
        super().client_session_rundown(session)
        reason = session.end_reason.name if session.end_reason is not None else "None"
        _event(f"rundown {session.token} {reason.removeprefix('CPNATFWT_SESSION_TERMINATION_')}")

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterable[QuerySet]:
        name = restrictions.service_instance_name or ""
        if not name.startswith(GATE_PREFIX):
            return super().lookup(session, restrictions, flags)
        return self._gated(name)

    def _gated(self, name: str) -> Iterator[QuerySet]:
        _event(f"blocked {name}")
        gate = Path(os.environ.get("NSPV2_TEST_GATE", "/nonexistent"))
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        _event(f"released {name}")
        yield QuerySet(name, comment="released")
