"""The rules of nspv2.tools.rules: a good provider passes each, a broken one fails it.

Each rule runs against a small in-test target: a fresh Python provider
advertised on the native host, seen through the CheckTarget protocol.
"""

from __future__ import annotations

import ctypes
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nspv2 import NO_ERROR, Host, Provider, QuerySet, Session, WinsockError, WSAError
from nspv2.examples.email import EmailDirectory
from nspv2.host.catalog import Catalog
from nspv2.sdk.winsock2 import SOCKET_ERROR, WSAQUERYSET2W
from nspv2.testing import SlotHarness
from nspv2.tools import rules
from nspv2.tools.check import Rule
from nspv2.tools.check_target import install_for_check

from .broken_providers import EndAcceptsAnything, Good, Overruns


class Target:
    """A CheckTarget made from a Provider class (what each rule's child process gets)."""

    def __init__(self, cls: type[Provider]) -> None:
        self.label = cls.__name__
        self.provider_id = cls.provider_id
        self.namespace = int(cls.namespace)
        self.queries = list(cls.check_queries)
        self.registrations = list(cls.check_registrations)
        self.python: Provider | None = cls()
        self.blob = cls.install_blob
        self.installed = self.blob is not None
        self._host = Host(timeout_ms=2000, auto_install=True)
        # installed as check installs it: a blob the catalog refuses is left out
        self._installed = install_for_check(cls, self.blob)
        self._host.advertise(self.python)

    def harness(self) -> SlotHarness:
        assert self.python is not None
        return SlotHarness(self.python)

    def host(self) -> Host:
        return self._host

    def implements(self, slot: str) -> bool:
        assert self.python is not None
        return slot != "NSPv2SetServiceEx" or self.python.implements("set_service")

    def close(self) -> None:
        self._host.close()
        if self._installed:
            Catalog(self._host.winsock).uninstall(self.provider_id)
        assert self.python is not None
        self.python.close()


def run(function: Callable[[Any, Any], Rule], cls: type[Provider]) -> Rule:
    target = Target(cls)
    steps: list[tuple[str, str]] = []
    try:
        return function(target, lambda rule, what: steps.append((rule, what)))
    finally:
        target.close()


# -- the broken providers --------------------------------------------------------------


class Directory(Good):
    """Good, with registrations kept in a dict (found by exact name)."""

    provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-0000000000a1")
    check_registrations = ("one@example.com",)

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.lock = threading.Lock()

    def set_service(self, session: Session, reg: QuerySet, operation: int, flags: int) -> None:
        name = (reg.service_instance_name or "").lower()
        with self.lock:
            if operation == 2:  # RNRSERVICE_DELETE
                if self.names.pop(name, None) is None:
                    raise WinsockError(WSAError.WSASERVICE_NOT_FOUND)
            else:
                self.store(name)

    def store(self, name: str) -> None:
        self.names[name] = 1

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        name = (restrictions.service_instance_name or "").lower()
        if name.startswith("check-") or name.startswith("race"):
            with self.lock:
                known = name in self.names
            if not known:
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND)
        return super().lookup(session, restrictions, flags)


class CompletesTwice(Directory):
    def _slot_next_ex(self, h_async: Any, *args: Any) -> None:
        super()._slot_next_ex(h_async, *args)
        assert self._routine_obj is not None
        self._routine_obj.channel_now().complete(h_async, NO_ERROR)


class NeverCompletesTheSecond(Directory):
    def _slot_next_ex(self, h_async: Any, *args: Any) -> None:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls != 2:
            super()._slot_next_ex(h_async, *args)


class SetServiceCompletesTwice(Directory):
    def _slot_set_service(self, h_async: Any, *args: Any) -> None:
        super()._slot_set_service(h_async, *args)
        assert self._routine_obj is not None
        self._routine_obj.channel_now().complete(h_async, NO_ERROR)


class NoLastError(Directory):
    """Begin of a name it does not know: SOCKET_ERROR, last error left 0."""

    def _slot_begin(self, pid: Any, restrictions: Any, flags: int, token: Any, ph: Any) -> int:
        if restrictions:
            name = QuerySet.from_address(restrictions).service_instance_name or ""
            if "absent" in name:
                assert self._routine_obj is not None
                self._routine_obj.channel_now().set_last_error(NO_ERROR)
                return SOCKET_ERROR
        return super()._slot_begin(pid, restrictions, flags, token, ph)


class ScribblesOnRestrictions(Directory):
    """Zeroes dwNameSpace of whatever query set Begin is given, then goes on."""

    def _slot_begin(self, pid: Any, restrictions: Any, flags: int, token: Any, ph: Any) -> int:
        if restrictions:
            at = restrictions + WSAQUERYSET2W.dwNameSpace.offset
            ctypes.c_uint32.from_address(at).value ^= 1
        return super()._slot_begin(pid, restrictions, flags, token, ph)


class AcceptsNegativeSockaddr(Directory):
    """Begin ignores the CS addresses: a negative sockaddr length is accepted."""

    def _slot_begin(self, pid: Any, restrictions: Any, flags: int, token: Any, ph: Any) -> int:
        if restrictions and WSAQUERYSET2W.from_address(restrictions).dwNumberOfCsAddrs == 1:
            good = QuerySet("one@example.com").to_buffer("2W")
            return super()._slot_begin(pid, ctypes.addressof(good), flags, token, ph)
        return super()._slot_begin(pid, restrictions, flags, token, ph)


class RefusesContext(Directory):
    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        if restrictions.context is not None:
            raise WinsockError(WSAError.WSAEINVAL, "lpszContext is not supported")
        return super().lookup(session, restrictions, flags)


class FixedTable(Directory):
    """Keeps the first 100 names registered, silently drops the rest."""

    def store(self, name: str) -> None:
        if len(self.names) < 100:
            self.names[name] = 1


class OneSlot(Directory):
    """Keeps only the last name registered (by anyone)."""

    def store(self, name: str) -> None:
        self.names.clear()
        self.names[name] = 1


class WithoutSetService(Good):
    check_registrations = ()


class BadBlob(Good):
    install_blob = bytes(EmailDirectory.install_blob[:20]) + bytes(
        [2, 0, 0, 0, 11, 0, 0, 0, 36, 0, 0, 0, 52, 0, 0, 0]
    )


class GoodBlob(Good):
    install_blob = EmailDirectory.install_blob


# -- each rule: a good provider passes it, a broken one fails it --------------------------

CASES = [
    (rules.rule_completed_once, CompletesTwice, "NextEx #1 of one@example.com: completed twice"),
    (
        rules.rule_completed_once,
        NeverCompletesTheSecond,
        "NextEx #2 of one@example.com: never completed",
    ),
    (
        rules.rule_completed_once,
        SetServiceCompletesTwice,
        "SetServiceEx #1 (RNRSERVICE_REGISTER one@example.com): completed twice",
    ),
    (
        rules.rule_last_error,
        NoLastError,
        "NSPv2LookupServiceBegin(check-absent-0001@example.com): SOCKET_ERROR with no last error",
    ),
    (
        rules.rule_restrictions_untouched,
        ScribblesOnRestrictions,
        "changed the query set or what it points to",
    ),
    (
        rules.rule_restrictions_untouched,
        AcceptsNegativeSockaddr,
        "Begin(a CSADDR_INFO with iSockaddrLength -16) -> NO_ERROR",
    ),
    (rules.rule_handle_after_end, EndAcceptsAnything, "End again -> NO_ERROR"),
    (
        rules.rule_context,
        RefusesContext,
        "lpszContext 'check-context': 0 result(s), then WSAEINVAL",
    ),
    (rules.rule_round_trip, FixedTable, "names not found again"),
    (rules.rule_racing, OneSlot, "lookup -> WSASERVICE_NOT_FOUND"),
    (rules.rule_bounds, Overruns, "written past the buffer"),
    (
        rules.rule_install_blob,
        BadBlob,
        "domain #1: its name (11 characters at offset 52) ends past the blob",
    ),
]


@pytest.mark.parametrize(
    ("function", "broken", "evidence"), CASES, ids=lambda v: getattr(v, "__name__", "")
)
def test_a_broken_provider_fails_the_rule(
    function: Callable[[Any, Any], Rule], broken: type[Provider], evidence: str
) -> None:
    rule = run(function, broken)
    assert rule.failed, (rule.status, rule.skipped, rule.evidence)
    assert any(evidence in line for line in rule.evidence), rule.evidence


@pytest.mark.parametrize(
    ("function", "_name"), [(f, n) for n, f in rules.NEW_RULES], ids=[n for n, _ in rules.NEW_RULES]
)
def test_the_email_example_passes_every_rule(
    function: Callable[[Any, Any], Rule], _name: str
) -> None:
    rule = run(function, EmailDirectory)
    assert rule.passed, (rule.status, rule.skipped, rule.evidence)
    assert rule.name == _name and rule.evidence


@pytest.mark.parametrize(
    "function", [f for _, f in rules.NEW_RULES if f is not rules.rule_install_blob]
)
def test_a_good_directory_passes(function: Callable[[Any, Any], Rule]) -> None:
    rule = run(function, Directory)
    assert rule.passed, (rule.status, rule.skipped, rule.evidence)


def test_rules_that_need_set_service_are_skipped_without_it() -> None:
    for function in (rules.rule_round_trip, rules.rule_racing):
        rule = run(function, WithoutSetService)
        assert rule.skipped == "does not implement NSPv2SetServiceEx (nothing can be registered)"


def test_install_blob_skipped_without_a_blob_and_passed_with_a_good_one() -> None:
    assert run(rules.rule_install_blob, Good).skipped == "installs no blob"
    assert run(rules.rule_install_blob, GoodBlob).passed


def test_generated_names_are_in_the_first_querys_domain() -> None:
    target = Target(Good)
    try:
        target.queries = ["no-domain", "*@example.net", "bob@example.org"]
        assert rules.generated_names(target, 2) == [
            "check-0001@example.net",
            "check-0002@example.net",
        ]
        target.queries = []
        assert rules.generated_names(target, 1, "race3") == ["race3-0001@example.com"]
    finally:
        target.close()


def test_last_error_missing_in_a_host_workload() -> None:
    with Host(auto_install=True) as host:
        if not hasattr(host.winsock.library, "nspv2_async_create"):  # the same round's API
            pytest.skip("this host library does not count missing_last_error")
    rule = run(rules.rule_last_error, NoLastError)
    assert "host workload: 1 SOCKET_ERROR(s) with no last error" in rule.evidence, rule.evidence


class RefusesMisaligned(Directory):
    """NextEx into a buffer not 8-byte aligned: WSAEINVAL, nothing written."""

    def _slot_next_ex(
        self, h_async: Any, h_lookup: Any, flags: int, p_len: Any, p_res: Any
    ) -> None:
        if p_res and p_res % 8 and p_len and ctypes.c_uint32.from_address(p_len).value >= 200:
            assert self._routine_obj is not None
            self._routine_obj.channel_now().complete(h_async, int(WSAError.WSAEINVAL))
            return
        super()._slot_next_ex(h_async, h_lookup, flags, p_len, p_res)


def test_bounds_a_clean_refusal_is_not_an_overrun() -> None:
    rule = run(rules.rule_bounds, RefusesMisaligned)
    assert rule.passed, rule.evidence
    assert "refused at the full size: offset 1: WSAEINVAL" in rule.evidence[0]


@pytest.mark.parametrize("function", [rules.rule_completed_once, rules.rule_last_error])
def test_host_workload_is_bounded_for_a_provider_that_never_ends(
    function: Callable[[Any, Any], Rule],
) -> None:
    # Regression: the workload's lookups read to WSA_E_NO_MORE with no bound,
    # so these rules never returned on an endless provider.
    from .broken_providers import NeverEnds

    outcome: list[Rule] = []
    worker = threading.Thread(target=lambda: outcome.append(run(function, NeverEnds)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the rule is still reading an endless lookup after 60 s"
    assert outcome and outcome[0].status in ("pass", "fail")
