"""msgrpriv.h (Windows Messenger 4.5): results of a session invitation.

The seed page names the typedef ``LockError``; the enumeration is
SESSION_RESULT. Its values jump from 0x81000619 to 0x81000620 (there is no
0x8100061A..0x8100061F); these are the documented values, kept as they are.
"""

from __future__ import annotations

from .hresult import HRESULTEnum

__all__ = ["SESSION_RESULT"]


class SESSION_RESULT(HRESULTEnum):
    """Result codes of a Messenger session invitation (HRESULTs).

    Members hold the unsigned 32-bit form; calling the enumeration also
    accepts the signed form a LONG holds (``HRESULTEnum``).
    """

    #: The application failed to start.
    SR_APPLICATION_LAUNCH_FAILED = 0x81000601
    #: The invitee declined.
    SR_INVITATION_DECLINED = 0x81000602
    #: The connection failed.
    SR_CONNECTION_FAILURE = 0x81000603
    #: Authentication failed.
    SR_AUTHENTICATION_FAILED = 0x81000604
    #: The session is not ready.
    SR_SESSION_NOT_READY = 0x81000605
    #: Cancelled locally.
    SR_SESSION_CANCELLED_LOCAL = 0x81000606
    #: Cancelled by the remote side.
    SR_SESSION_CANCELLED_REMOTE = 0x81000607
    #: Protocol error.
    SR_SESSION_PROTOCOL_ERROR = 0x81000608
    #: The session timed out.
    SR_SESSION_TIMEOUT = 0x81000609
    #: Cancelled before the connection was made.
    SR_CANCEL_BEFORE_CONNECT = 0x8100060A
    #: The recipient is not the invitee.
    SR_NOT_INVITEE = 0x8100060B
    #: The recipient is not the inviter.
    SR_NOT_INVITER = 0x8100060C
    #: The application is already registered.
    SR_APP_ALREADY_REGISTERED = 0x8100060D
    #: The application is not registered.
    SR_APP_NOT_REGISTERED = 0x8100060E
    #: The application does not allow a session to be created.
    SR_NOT_VALID_FOR_APP_INVITE = 0x8100060F
    #: No application was specified for the session.
    SR_APP_NOT_SPECIFIED = 0x81000610
    #: The context data is over the limit.
    SR_CONTEXT_DATA_OVER_LIMIT = 0x81000611
    #: No user was invited.
    SR_NO_USER_INVITED = 0x81000612
    #: The inviter invited itself.
    SR_INVITED_SELF = 0x81000613
    #: The session state is invalid.
    SR_SESSION_STATE_INVALID = 0x81000614
    #: Sending the invitation failed.
    SR_INVITATION_SEND_FAILURE = 0x81000615
    #: Sending the cancellation failed.
    SR_CANCEL_SEND_FAILURE = 0x81000616
    #: Sending the decline failed.
    SR_DECLINE_SEND_FAILURE = 0x81000617
    #: Sending the acceptance failed.
    SR_ACCEPT_SEND_FAILURE = 0x81000618
    #: Sending the context data failed.
    SR_CONTEXT_DATA_SEND_FAILURE = 0x81000619
    #: A network configuration operation failed.
    SR_NETWORK_CONFIG_FAILURE = 0x81000620
    #: The network is not supported.
    SR_NET_NOT_SUPPORTED = 0x81000621
    #: The remote network is not supported.
    SR_REMOTE_NET_NOT_SUPPORTED = 0x81000622
    #: The firewall is not supported.
    SR_FIREWALL_NOT_SUPPORTED = 0x81000623
    #: The SIP stack is out of date.
    SR_OLD_SIP_STACK = 0x81000624
