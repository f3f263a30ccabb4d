"""iphlpapi.h: why the platform ends a provider session.

nspv2 records this reason for every client session that ends otherwise than
by a normal ``NSPv2Cleanup``.
"""

from __future__ import annotations

import enum

__all__ = ["CPNATFWT_SESSION_TERMINATION_REASON"]


# typedef enum {
#     CPNATFWT_SESSION_TERMINATION_PROVIDER_REQUEST,
#     CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN,
#     CPNATFWT_SESSION_TERMINATION_PROVIDER_TIMEOUT,
#     CPNATFWT_SESSION_TERMINATION_PROVIDER_OTHER_FAILURE,
#     CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR
# } CPNATFWT_SESSION_TERMINATION_REASON;
class CPNATFWT_SESSION_TERMINATION_REASON(enum.IntEnum):
    """Why a session with a provider was ended."""

    #: The provider asked for the session to end.
    CPNATFWT_SESSION_TERMINATION_PROVIDER_REQUEST = 0
    #: The platform is shutting down (or the provider was unadvertised).
    CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN = 1
    #: The provider timed out.
    CPNATFWT_SESSION_TERMINATION_PROVIDER_TIMEOUT = 2
    #: The provider failed in some other way.
    CPNATFWT_SESSION_TERMINATION_PROVIDER_OTHER_FAILURE = 3
    #: A communication error (e.g. the client went away).
    CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR = 4
