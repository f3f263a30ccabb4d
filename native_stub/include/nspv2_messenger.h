/*
 * nspv2_messenger.h - the Windows Messenger values the NS_EMAIL presence
 * directory speaks (docs/email-example.md), and the reason a provider
 * session ends, for C code in native_stub/.
 *
 * Names and values are those of msgrua.h (MISTATUS, the results of
 * IMessenger::Signout), msgrpriv.h (SESSION_RESULT) and iphlpapi.h
 * (CPNATFWT_SESSION_TERMINATION_REASON), exactly as nspv2/sdk/msgrua.py,
 * nspv2/sdk/msgrpriv.py and nspv2/sdk/iphlpapi.py define them
 * (tests/test_definitions.py compiles this header and compares every value
 * with the Python enumerations). Windows Messenger's API is retired and its
 * headers are not in current SDKs, so they are declared here on every
 * platform (each group guarded, should the real header come first).
 *
 * Types:
 *   MISTATUS, CPNATFWT_SESSION_TERMINATION_REASON  C enumerations (their
 *       values fit an int).
 *   SESSION_RESULT, SignoutResult  HRESULTs (a 32-bit LONG), each a typedef
 *       of HRESULT with #define constants, NOT C enumerations: their failure
 *       values are above 0x7FFFFFFF, which a C11 enumeration constant cannot
 *       hold portably (it must be representable as an int). The constants
 *       are signed, as a C HRESULT is (SR_APP_NOT_REGISTERED ==
 *       -2130704882, i.e. 0x8100060E), built by NSPV2_HRESULT without any
 *       implementation-defined conversion; compare them with HRESULTs, not
 *       with DWORDs. Python's enumerations hold the unsigned form and accept
 *       both (nspv2/sdk/hresult.py).
 */
#ifndef NSPV2_MESSENGER_H
#define NSPV2_MESSENGER_H

#include "nspv2_abi.h"

#ifndef _WIN32
#include <stdint.h>
typedef int32_t HRESULT; /* LONG: winerror.h's on Windows */
#endif

/* The failure HRESULT whose 32-bit pattern is u (0x80000000 <= u <=
 * 0xFFFFFFFF), as a signed HRESULT constant: u - 2^32, computed in range. */
#define NSPV2_HRESULT(u) ((HRESULT)((u) - 0x80000000u) - 0x7FFFFFFF - 1)

/* ---- msgrua.h: MISTATUS, a client's presence ---------------------------- */

#ifndef __msgrua_h__
typedef enum MISTATUS {
    MISTATUS_UNKNOWN = 0x0000,                         /* state unknown */
    MISTATUS_OFFLINE = 0x0001,                         /* not connected to a server */
    MISTATUS_ONLINE = 0x0002,                          /* connected to a server */
    MISTATUS_INVISIBLE = 0x0006,                       /* connected but invisible */
    MISTATUS_BUSY = 0x000A,                            /* connected, busy */
    MISTATUS_BE_RIGHT_BACK = 0x000E,                   /* away for a short time */
    MISTATUS_IDLE = 0x0012,                            /* no recent input */
    MISTATUS_AWAY = 0x0022,                            /* away */
    MISTATUS_ON_THE_PHONE = 0x0032,                    /* on the phone */
    MISTATUS_OUT_TO_LUNCH = 0x0042,                    /* out to lunch */
    MISTATUS_LOCAL_FINDING_SERVER = 0x0100,            /* finding the server */
    MISTATUS_LOCAL_CONNECTING_TO_SERVER = 0x0200,      /* connecting to the server */
    MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER = 0x0300, /* synchronizing */
    MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER = 0x0400, /* signing out */
    /* Office Communicator 2007 adds these user-chosen states. */
    MISTATUS_IN_A_MEETING = 0x0052,               /* in a meeting */
    MISTATUS_OUT_OF_OFFICE = 0x0062,              /* out of the office */
    MISTATUS_DO_NOT_DISTURB = 0x0072,             /* do not disturb */
    MISTATUS_IN_A_CONFERENCE = 0x0082,            /* in a conference */
    MISTATUS_ALLOW_URGENT_INTERRUPTIONS = 0x0092, /* DND, urgent interruptions allowed */
    MISTATUS_MAY_BE_AVAILABLE = 0x00A2,           /* may be available */
    MISTATUS_CUSTOM = 0x00B2                      /* a custom state */
} MISTATUS;
#endif

/* ---- msgrua.h: results of IMessenger::Signout --------------------------- */

/* msgrua.h has no type for them; named as nspv2.sdk.msgrua.SignoutResult.
 * S_OK and E_FAIL are winerror.h's (declared here where it is absent). */
typedef HRESULT SignoutResult;
#ifndef S_OK
#define S_OK ((HRESULT)0)
#endif
#ifndef E_FAIL
#define E_FAIL NSPV2_HRESULT(0x80004005u)
#endif
#ifndef MSGR_E_NOT_LOGGED_ON
#define MSGR_E_NOT_LOGGED_ON NSPV2_HRESULT(0x8100031Eu) /* not signed in to the primary service */
#endif

/* ---- msgrpriv.h: SESSION_RESULT, results of a session invitation -------- */

#ifndef __msgrpriv_h__
typedef HRESULT SESSION_RESULT;
#define SR_APPLICATION_LAUNCH_FAILED NSPV2_HRESULT(0x81000601u)
#define SR_INVITATION_DECLINED NSPV2_HRESULT(0x81000602u)
#define SR_CONNECTION_FAILURE NSPV2_HRESULT(0x81000603u)
#define SR_AUTHENTICATION_FAILED NSPV2_HRESULT(0x81000604u)
#define SR_SESSION_NOT_READY NSPV2_HRESULT(0x81000605u)
#define SR_SESSION_CANCELLED_LOCAL NSPV2_HRESULT(0x81000606u)
#define SR_SESSION_CANCELLED_REMOTE NSPV2_HRESULT(0x81000607u)
#define SR_SESSION_PROTOCOL_ERROR NSPV2_HRESULT(0x81000608u)
#define SR_SESSION_TIMEOUT NSPV2_HRESULT(0x81000609u)
#define SR_CANCEL_BEFORE_CONNECT NSPV2_HRESULT(0x8100060Au)
#define SR_NOT_INVITEE NSPV2_HRESULT(0x8100060Bu)
#define SR_NOT_INVITER NSPV2_HRESULT(0x8100060Cu)
#define SR_APP_ALREADY_REGISTERED NSPV2_HRESULT(0x8100060Du)
#define SR_APP_NOT_REGISTERED NSPV2_HRESULT(0x8100060Eu)
#define SR_NOT_VALID_FOR_APP_INVITE NSPV2_HRESULT(0x8100060Fu)
#define SR_APP_NOT_SPECIFIED NSPV2_HRESULT(0x81000610u)
#define SR_CONTEXT_DATA_OVER_LIMIT NSPV2_HRESULT(0x81000611u)
#define SR_NO_USER_INVITED NSPV2_HRESULT(0x81000612u)
#define SR_INVITED_SELF NSPV2_HRESULT(0x81000613u)
#define SR_SESSION_STATE_INVALID NSPV2_HRESULT(0x81000614u)
#define SR_INVITATION_SEND_FAILURE NSPV2_HRESULT(0x81000615u)
#define SR_CANCEL_SEND_FAILURE NSPV2_HRESULT(0x81000616u)
#define SR_DECLINE_SEND_FAILURE NSPV2_HRESULT(0x81000617u)
#define SR_ACCEPT_SEND_FAILURE NSPV2_HRESULT(0x81000618u)
#define SR_CONTEXT_DATA_SEND_FAILURE NSPV2_HRESULT(0x81000619u)
/* (the documented values jump: there is no 0x8100061A..0x8100061F) */
#define SR_NETWORK_CONFIG_FAILURE NSPV2_HRESULT(0x81000620u)
#define SR_NET_NOT_SUPPORTED NSPV2_HRESULT(0x81000621u)
#define SR_REMOTE_NET_NOT_SUPPORTED NSPV2_HRESULT(0x81000622u)
#define SR_FIREWALL_NOT_SUPPORTED NSPV2_HRESULT(0x81000623u)
#define SR_OLD_SIP_STACK NSPV2_HRESULT(0x81000624u)
#endif

/* ---- iphlpapi.h: why the platform ends a provider session ---------------- */

#ifndef NSPV2_HAVE_CPNATFWT_SESSION_TERMINATION_REASON
#define NSPV2_HAVE_CPNATFWT_SESSION_TERMINATION_REASON 1
typedef enum CPNATFWT_SESSION_TERMINATION_REASON {
    CPNATFWT_SESSION_TERMINATION_PROVIDER_REQUEST = 0,
    CPNATFWT_SESSION_TERMINATION_PLATFORM_SHUTDOWN = 1,
    CPNATFWT_SESSION_TERMINATION_PROVIDER_TIMEOUT = 2,
    CPNATFWT_SESSION_TERMINATION_PROVIDER_OTHER_FAILURE = 3,
    CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR = 4
} CPNATFWT_SESSION_TERMINATION_REASON;
#endif

#endif /* NSPV2_MESSENGER_H */
