"""msgrua.h (Windows Messenger): presence states and the results of Signout.

Windows Messenger's API is retired; nspv2 keeps these values because its
NS_EMAIL example is a presence directory that speaks them. The seed page
names the typedef ``LockError``; the enumeration is MISTATUS. The values
from 0x52 to 0xB2 are those Office Communicator 2007 added.
"""

from __future__ import annotations

import enum

from .hresult import HRESULTEnum

__all__ = ["MISTATUS", "SignoutResult"]


class MISTATUS(enum.IntEnum):
    """Local or remote client state (presence)."""

    #: The client's state is unknown.
    MISTATUS_UNKNOWN = 0x0000
    #: Not connected to a server.
    MISTATUS_OFFLINE = 0x0001
    #: Connected to a server.
    MISTATUS_ONLINE = 0x0002
    #: Connected, but hidden from other users.
    MISTATUS_INVISIBLE = 0x0006
    #: Connected and marked busy by the user.
    MISTATUS_BUSY = 0x000A
    #: Away for a short while, by the user's choice.
    MISTATUS_BE_RIGHT_BACK = 0x000E
    #: No input seen for a while; probably away.
    MISTATUS_IDLE = 0x0012
    #: Away, by the user's choice.
    MISTATUS_AWAY = 0x0022
    #: On the phone, by the user's choice.
    MISTATUS_ON_THE_PHONE = 0x0032
    #: Out to lunch, by the user's choice.
    MISTATUS_OUT_TO_LUNCH = 0x0042
    #: The local client is looking for its server.
    MISTATUS_LOCAL_FINDING_SERVER = 0x0100
    #: The local client is connecting to its server.
    MISTATUS_LOCAL_CONNECTING_TO_SERVER = 0x0200
    #: The local client is synchronizing with its server.
    MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER = 0x0300
    #: The local client is signing out (until the server acknowledges).
    MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER = 0x0400

    # Office Communicator 2007 (its msgrua.h) adds these user-chosen states.
    #: In a meeting (Communicator 2007).
    MISTATUS_IN_A_MEETING = 0x0052
    #: Out of the office (Communicator 2007).
    MISTATUS_OUT_OF_OFFICE = 0x0062
    #: Do not disturb (Communicator 2007).
    MISTATUS_DO_NOT_DISTURB = 0x0072
    #: In a conference (Communicator 2007).
    MISTATUS_IN_A_CONFERENCE = 0x0082
    #: Do not disturb, but urgent interruptions are allowed (Communicator 2007).
    MISTATUS_ALLOW_URGENT_INTERRUPTIONS = 0x0092
    #: Possibly available (Communicator 2007).
    MISTATUS_MAY_BE_AVAILABLE = 0x00A2
    #: A custom state defined by the user (Communicator 2007).
    MISTATUS_CUSTOM = 0x00B2

    @property
    def meaning(self) -> str:
        return _MISTATUS_MEANINGS[self]


_MISTATUS_MEANINGS = {
    MISTATUS.MISTATUS_UNKNOWN: "state unknown",
    MISTATUS.MISTATUS_OFFLINE: "not connected to a server",
    MISTATUS.MISTATUS_ONLINE: "connected to a server",
    MISTATUS.MISTATUS_INVISIBLE: "connected but invisible to others",
    MISTATUS.MISTATUS_BUSY: "connected, busy",
    MISTATUS.MISTATUS_BE_RIGHT_BACK: "away for a short time",
    MISTATUS.MISTATUS_IDLE: "no recent input, likely away",
    MISTATUS.MISTATUS_AWAY: "away",
    MISTATUS.MISTATUS_ON_THE_PHONE: "on the phone",
    MISTATUS.MISTATUS_OUT_TO_LUNCH: "out to lunch",
    MISTATUS.MISTATUS_LOCAL_FINDING_SERVER: "finding the server",
    MISTATUS.MISTATUS_LOCAL_CONNECTING_TO_SERVER: "connecting to the server",
    MISTATUS.MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER: "synchronizing with the server",
    MISTATUS.MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER: "signing out from the server",
    MISTATUS.MISTATUS_IN_A_MEETING: "in a meeting",
    MISTATUS.MISTATUS_OUT_OF_OFFICE: "out of the office",
    MISTATUS.MISTATUS_DO_NOT_DISTURB: "do not disturb",
    MISTATUS.MISTATUS_IN_A_CONFERENCE: "in a conference",
    MISTATUS.MISTATUS_ALLOW_URGENT_INTERRUPTIONS: "do not disturb, urgent interruptions allowed",
    MISTATUS.MISTATUS_MAY_BE_AVAILABLE: "may be available",
    MISTATUS.MISTATUS_CUSTOM: "a custom state",
}


class SignoutResult(HRESULTEnum):
    """HRESULTs of ``IMessenger::Signout``.

    Members hold the unsigned 32-bit form; calling the enumeration also
    accepts the signed form a LONG holds (``HRESULTEnum``).
    """

    #: Signed out.
    S_OK = 0
    #: The Messenger object was not found or the sign-out message was not sent.
    E_FAIL = 0x80004005
    #: Not signed in to the primary service (0x81000300 + 0x1E).
    MSGR_E_NOT_LOGGED_ON = 0x8100031E

    @property
    def meaning(self) -> str:
        return _SIGNOUT_MEANINGS[self]


_SIGNOUT_MEANINGS = {
    SignoutResult.S_OK: "signed out",
    SignoutResult.E_FAIL: "Messenger object not found or sign-out not sent",
    SignoutResult.MSGR_E_NOT_LOGGED_ON: "not signed in to the primary service",
}
