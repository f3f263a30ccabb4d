"""Providers for tests/test_compare.py: the email example with one
deliberate difference each, named by file (``path/compare_providers.py:Class``)
since ``nspv2 compare`` runs each side in a child process outside the checkout."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

from nspv2 import MISTATUS, CsAddr, QuerySet, Session
from nspv2.examples.email import EmailDirectory, Entry


class Reversed(EmailDirectory):
    """Returns wildcard matches in reverse order (the spec says sorted)."""

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        results = list(super().lookup(session, restrictions, flags))
        yield from reversed(results)


class CrashesOnDave(EmailDirectory):
    """Dies of SIGSEGV when dave@example.com signs in."""

    def sign_in(
        self,
        owner: int,
        name: str,
        status: MISTATUS,
        addresses: list[CsAddr],
        multiple: bool = False,
    ) -> Entry:
        if name == "dave@example.com":
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().sign_in(owner, name, status, addresses, multiple)


class ExitsOnDave(EmailDirectory):
    """Calls os._exit(3) when dave@example.com signs in."""

    def sign_in(
        self,
        owner: int,
        name: str,
        status: MISTATUS,
        addresses: list[CsAddr],
        multiple: bool = False,
    ) -> Entry:
        if name == "dave@example.com":
            os._exit(3)
        return super().sign_in(owner, name, status, addresses, multiple)


class NeverStarts(EmailDirectory):
    """Hangs in its constructor."""

    def __init__(self) -> None:
        time.sleep(3600)
        super().__init__()


class FailsToStart(EmailDirectory):
    """Its constructor raises."""

    def __init__(self) -> None:
        raise RuntimeError("no directory today")
