"""The shared table of the NS_EMAIL example: each row is a scenario of client
calls and the outcome every step must have. It runs, through the native
host, against the Python provider and against the C reference provider,
which must agree row by row (docs/email-example.md is the specification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nspv2 import LUP, MISTATUS, NO_ERROR, SERVICE_MULTIPLE, WSAError
from nspv2.examples.email import encode_presence
from nspv2.sdk.winsock2 import RESULT_IS

E = WSAError
ALL = int(LUP.LUP_RETURN_ALL)
NAME = int(LUP.LUP_RETURN_NAME)
ADDED, CHANGED, DELETED = (
    int(RESULT_IS.RESULT_IS_ADDED),
    int(RESULT_IS.RESULT_IS_CHANGED),
    int(RESULT_IS.RESULT_IS_DELETED),
)
V4 = "192.0.2.1:5060"
V4B = "192.0.2.2:5061"
V6 = "[2001:db8::1]:5060"


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
#   ("reg", S, name, addrs, status-or-blob-or-None, flags, expected_code)
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


A = MISTATUS
CASES: tuple[Case, ...] = (
    Case(
        "sign in, then look up with every field",
        (
            ("open", "a"),
            ("open", "b"),
            ("reg", "a", "alice@example.com", (V4, V6), A.MISTATUS_AWAY, 0, NO_ERROR),
            (
                "look",
                "b",
                "alice@example.com",
                ALL,
                NO_ERROR,
                [full("alice@example.com", A.MISTATUS_AWAY, (V4, V6))],
            ),
            (
                "look",
                "b",
                "ALICE@Example.COM",
                ALL,
                NO_ERROR,
                [full("alice@example.com", A.MISTATUS_AWAY, (V4, V6))],
            ),
        ),
    ),
    Case(
        "no blob means online",
        (
            ("open", "a"),
            ("reg", "a", "bob@example.com", (V4,), None, 0, NO_ERROR),
            (
                "look",
                "a",
                "bob@example.com",
                ALL,
                NO_ERROR,
                [full("bob@example.com", A.MISTATUS_ONLINE, (V4,))],
            ),
        ),
    ),
    Case(
        "LUP_RETURN flags choose the fields",
        (
            ("open", "a"),
            ("reg", "a", "carol@example.org", (V4,), A.MISTATUS_BUSY, 0, NO_ERROR),
            ("look", "a", "carol@example.org", NAME, NO_ERROR, [R("carol@example.org")]),
            (
                "look",
                "a",
                "carol@example.org",
                int(LUP.LUP_RETURN_COMMENT),
                NO_ERROR,
                [R(None, "MISTATUS_BUSY")],
            ),
            (
                "look",
                "a",
                "carol@example.org",
                int(LUP.LUP_RETURN_ADDR),
                NO_ERROR,
                [R(None, None, (V4,))],
            ),
            (
                "look",
                "a",
                "carol@example.org",
                int(LUP.LUP_RETURN_BLOB),
                NO_ERROR,
                [R(None, blob=encode_presence(A.MISTATUS_BUSY))],
            ),
            (
                "look",
                "a",
                "carol@example.org",
                int(LUP.LUP_RETURN_VERSION),
                NO_ERROR,
                [R(None, version=1)],
            ),
            ("look", "a", "carol@example.org", 0, NO_ERROR, [R(None)]),
        ),
    ),
    Case(
        "register again updates; SERVICE_MULTIPLE adds addresses",
        (
            ("open", "a"),
            ("reg", "a", "dave@example.com", (V4,), A.MISTATUS_ONLINE, 0, NO_ERROR),
            ("reg", "a", "dave@example.com", (V6,), A.MISTATUS_IDLE, 0, NO_ERROR),
            (
                "look",
                "a",
                "dave@example.com",
                ALL,
                NO_ERROR,
                [full("dave@example.com", A.MISTATUS_IDLE, (V6,), CHANGED, 2)],
            ),
            ("reg", "a", "dave@example.com", (V4, V6), A.MISTATUS_IDLE, SERVICE_MULTIPLE, NO_ERROR),
            (
                "look",
                "a",
                "dave@example.com",
                ALL,
                NO_ERROR,
                [full("dave@example.com", A.MISTATUS_IDLE, (V6, V4), CHANGED, 3)],
            ),
        ),
    ),
    Case(
        "deregister keeps the name, drops addresses",
        (
            ("open", "a"),
            ("reg", "a", "erin@example.com", (V4, V4B, V6), A.MISTATUS_ONLINE, 0, NO_ERROR),
            ("dereg", "a", "erin@example.com", (V4B,), NO_ERROR),
            (
                "look",
                "a",
                "erin@example.com",
                ALL,
                NO_ERROR,
                [full("erin@example.com", A.MISTATUS_ONLINE, (V4, V6), CHANGED, 2)],
            ),
            ("dereg", "a", "erin@example.com", (), NO_ERROR),
            (
                "look",
                "a",
                "erin@example.com",
                ALL,
                NO_ERROR,
                [full("erin@example.com", A.MISTATUS_ONLINE, (), CHANGED, 3)],
            ),
            ("dereg", "a", "nobody@example.com", (), int(E.WSASERVICE_NOT_FOUND)),
        ),
    ),
    Case(
        "wildcard returns every match, sorted, one per NextEx",
        (
            ("open", "a"),
            ("reg", "a", "zed@example.net", (V4,), A.MISTATUS_ONLINE, 0, NO_ERROR),
            ("reg", "a", "amy@example.net", (V4,), A.MISTATUS_AWAY, 0, NO_ERROR),
            ("reg", "a", "max@other.net", (V4,), A.MISTATUS_AWAY, 0, NO_ERROR),
            ("begin", "a", "h", "*@example.net", NAME, NO_ERROR),
            ("next", "h", NO_ERROR, R("amy@example.net")),
            ("next", "h", NO_ERROR, R("zed@example.net")),
            ("next", "h", int(E.WSA_E_NO_MORE), None),
            ("end", "h", NO_ERROR),
            ("end", "h", int(E.WSA_INVALID_HANDLE)),
        ),
    ),
    Case(
        "unknown names and bad input",
        (
            ("open", "a"),
            ("look", "a", "nobody@example.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
            ("look", "a", "*@nowhere.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
            ("look", "a", "not an address", ALL, int(E.WSAEINVAL), []),
            ("reg", "a", "no-at-sign", (V4,), None, 0, int(E.WSAEINVAL)),
            ("reg", "a", "*@example.com", (V4,), None, 0, int(E.WSAEINVAL)),
            (
                "reg",
                "a",
                "fay@example.com",
                (V4,),
                b"NSPP\x02\x00\x00\x00\x02\x00\x00\x00",
                0,
                int(E.WSAEINVAL),
            ),
            ("reg", "a", "fay@example.com", (V4,), b"short", 0, int(E.WSAEINVAL)),
            (
                "reg",
                "a",
                "fay@example.com",
                (V4,),
                b"NSPP\x01\x00\x00\x00\x03\x00\x00\x00",
                0,
                int(E.WSAEINVAL),
            ),
            ("reg", "a", "fay@example.com", (V4,), A.MISTATUS_OFFLINE, 0, int(E.WSAEINVAL)),
            (
                "reg",
                "a",
                "fay@example.com",
                (V4,),
                A.MISTATUS_LOCAL_FINDING_SERVER,
                0,
                int(E.WSAEINVAL),
            ),
            ("look", "a", "fay@example.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
        ),
    ),
    Case(
        "another session's name",
        (
            ("open", "a"),
            ("open", "b"),
            ("reg", "a", "gus@example.com", (V4,), None, 0, NO_ERROR),
            ("reg", "b", "gus@example.com", (V6,), None, 0, int(E.WSAEALREADY)),
            ("dereg", "b", "gus@example.com", (), int(E.WSAEACCES)),
            ("delete", "b", "gus@example.com", int(E.WSAEACCES)),
            (
                "look",
                "b",
                "gus@example.com",
                ALL,
                NO_ERROR,
                [full("gus@example.com", A.MISTATUS_ONLINE, (V4,))],
            ),
        ),
    ),
    Case(
        "sign-out: in-flight lookups see disconnecting, new ones find nothing",
        (
            ("open", "a"),
            ("open", "b"),
            ("reg", "a", "hal@example.com", (V4,), A.MISTATUS_AWAY, 0, NO_ERROR),
            ("reg", "a", "ida@example.com", (V4,), A.MISTATUS_BUSY, 0, NO_ERROR),
            ("begin", "b", "h", "*@example.com", ALL, NO_ERROR),
            ("next", "h", NO_ERROR, full("hal@example.com", A.MISTATUS_AWAY, (V4,))),
            ("delete", "a", "ida@example.com", NO_ERROR),
            (
                "next",
                "h",
                NO_ERROR,
                full("ida@example.com", A.MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER, (V4,), DELETED),
            ),
            ("next", "h", int(E.WSA_E_NO_MORE), None),
            ("end", "h", NO_ERROR),
            ("look", "b", "ida@example.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
            ("delete", "a", "ida@example.com", int(E.WSASERVICE_NOT_FOUND)),
        ),
    ),
    Case(
        "a session's names are signed out when it closes or dies",
        (
            ("open", "a"),
            ("open", "b"),
            ("open", "c"),
            ("reg", "a", "jan@example.com", (V4,), None, 0, NO_ERROR),
            ("reg", "b", "kim@example.com", (V4,), None, 0, NO_ERROR),
            ("reg", "b", "lee@example.com", (V4,), None, 0, NO_ERROR),
            ("close", "a"),
            ("look", "c", "jan@example.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
            ("abandon", "b"),
            ("look", "c", "*@example.com", ALL, int(E.WSASERVICE_NOT_FOUND), []),
            ("reg", "c", "kim@example.com", (V6,), None, 0, NO_ERROR),
        ),
    ),
    Case(
        "Communicator 2007 states sign in, update and look up",
        (
            ("open", "a"),
            ("open", "b"),
            ("reg", "a", "ann@example.com", (V4,), A.MISTATUS_IN_A_MEETING, 0, NO_ERROR),
            ("reg", "b", "bea@example.com", (V4,), A.MISTATUS_DO_NOT_DISTURB, 0, NO_ERROR),
            ("reg", "b", "cat@example.com", (V4,), A.MISTATUS_CUSTOM, 0, NO_ERROR),
            (
                "look",
                "b",
                "ann@example.com",
                ALL,
                NO_ERROR,
                [full("ann@example.com", A.MISTATUS_IN_A_MEETING, (V4,))],
            ),
            ("reg", "a", "ann@example.com", (V4,), A.MISTATUS_OUT_OF_OFFICE, 0, NO_ERROR),
            (
                "reg",
                "b",
                "bea@example.com",
                (V4,),
                A.MISTATUS_ALLOW_URGENT_INTERRUPTIONS,
                0,
                NO_ERROR,
            ),
            ("reg", "b", "cat@example.com", (V4,), A.MISTATUS_MAY_BE_AVAILABLE, 0, NO_ERROR),
            ("reg", "a", "dee@example.com", (V4,), A.MISTATUS_IN_A_CONFERENCE, 0, NO_ERROR),
            (
                "look",
                "a",
                "*@example.com",
                ALL,
                NO_ERROR,
                [
                    full("ann@example.com", A.MISTATUS_OUT_OF_OFFICE, (V4,), CHANGED, 2),
                    full(
                        "bea@example.com", A.MISTATUS_ALLOW_URGENT_INTERRUPTIONS, (V4,), CHANGED, 2
                    ),
                    full("cat@example.com", A.MISTATUS_MAY_BE_AVAILABLE, (V4,), CHANGED, 2),
                    full("dee@example.com", A.MISTATUS_IN_A_CONFERENCE, (V4,)),
                ],
            ),
        ),
    ),
    Case(
        "invitations report SESSION_RESULT failures as Winsock errors",
        (
            ("open", "a"),
            ("open", "b"),
            ("reg", "a", "max@example.com", (V4,), None, 0, NO_ERROR),
            ("reg", "b", "ned@example.com", (V4,), None, 0, NO_ERROR),
            ("reg", "b", "oli@example.com", (V4,), A.MISTATUS_INVISIBLE, 0, NO_ERROR),
            ("invite", "a", "max@example.com", "ned@example.com", NO_ERROR),
            ("invite", "a", "max@example.com", "max@example.com", int(E.WSAEINVAL)),
            ("invite", "a", "max@example.com", "pat@example.com", int(E.WSASERVICE_NOT_FOUND)),
            ("invite", "a", "ned@example.com", "max@example.com", int(E.WSAEACCES)),
            ("invite", "a", "max@example.com", "oli@example.com", int(E.WSAEREFUSED)),
        ),
    ),
)
