"""The shared table of the NS_EMAIL example: each row is a scenario of client
calls and the outcome every step must have. It runs, through the native
host, against the Python provider and against the C reference provider,
which must agree row by row (docs/email-example.md is the specification).

The rows are read from the scenario file shipped with the package,
``nspv2/examples/scenarios/email.json`` (the format: docs/compare.md), so
the table and ``nspv2 compare``'s first scenario are one source. They are
turned here into the tuples test_email_table.py's own runner plays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nspv2 import MISTATUS
from nspv2.examples.email import encode_presence
from nspv2.sdk.winsock2 import RESULT_IS
from nspv2.tools.scenario import ExpectedResult, example_path, load_scenario
from nspv2.tools.scenario import Step as ScenarioStep

ADDED = int(RESULT_IS.RESULT_IS_ADDED)
SCENARIO = example_path("email")


@dataclass(frozen=True)
class R:
    """An expected lookup result (None: the field must be absent)."""

    name: str | None
    comment: str | None = None
    addrs: tuple[str, ...] = ()
    flags: int = ADDED
    version: int | None = None
    blob: bytes | None = None


def full(
    name: str, status: MISTATUS, addrs: tuple[str, ...], flags: int = ADDED, version: int = 1
) -> R:
    return R(name, status.name, addrs, flags, version, encode_presence(status))


# Steps: (op, session, *args, expected)
#   ("open", S) ("close", S) ("abandon", S)
#   ("reg", S, name, addrs, blob-or-None, flags, expected_code)
#   ("invite", S, inviter, invitee, expected_code)
#   ("dereg", S, name, addrs, expected_code)
#   ("delete", S, name, expected_code)
#   ("look", S, name, lup_flags, expected_code, [R, ...])
#   ("begin", S, handle_label, name, lup_flags, expected_code)
#   ("next", handle_label, expected_code, R-or-None)
#   ("end", handle_label, expected_code)
Step = tuple[Any, ...]


@dataclass(frozen=True)
class Case:
    title: str
    steps: tuple[Step, ...]


_INVITE = "invite="


def _r(e: ExpectedResult) -> R:
    return R(e.name, e.comment, e.addrs, e.flags, e.version, e.blob)


def _step(s: ScenarioStep) -> Step:
    want = s.expect
    if s.op in ("open", "close", "abandon"):
        return (s.op, s.session)
    if want is None:
        raise ValueError(f"{SCENARIO}: step {s.number} ({s.op}) says no expect")
    if s.op == "register" and s.query_string is not None:
        assert s.query_string.startswith(_INVITE) and not s.addrs and s.blob is None
        return ("invite", s.session, s.name, s.query_string[len(_INVITE) :], want)
    if s.op == "register":
        return ("reg", s.session, s.name, s.addrs, s.blob, s.flags, want)
    if s.op == "deregister":
        return ("dereg", s.session, s.name, s.addrs, want)
    if s.op == "delete":
        return ("delete", s.session, s.name, want)
    if s.op == "lookup":
        assert s.results is not None
        return ("look", s.session, s.name, s.flags, want, [_r(e) for e in s.results])
    if s.op == "begin":
        return ("begin", s.session, s.handle, s.name, s.flags, want)
    if s.op == "next":
        assert s.results is not None
        return ("next", s.handle, want, _r(s.results[0]) if s.results else None)
    if s.op == "end":
        return ("end", s.handle, want)
    raise ValueError(f"{SCENARIO}: step {s.number}: op {s.op} has no row form")


CASES: tuple[Case, ...] = tuple(
    Case(c.title, tuple(_step(s) for s in c.steps)) for c in load_scenario(SCENARIO).cases
)
