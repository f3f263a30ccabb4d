/*
 * nspv2_messenger.h - the Windows Messenger values the NS_EMAIL presence
 * directory speaks (docs/email-example.md), for C code in native_stub/.
 *
 * Names and values are those of msgrua.h (MISTATUS, the results of
 * IMessenger::Signout) and msgrpriv.h (SESSION_RESULT), exactly as
 * nspv2/sdk/msgrua.py and nspv2/sdk/msgrpriv.py define them. Windows Messenger's API
 * is retired and its headers are not in current SDKs, so they are declared
 * here on every platform (each guarded, should a header define it too).
 *
 * The HRESULT-like values are unsigned 32-bit constants.
 */
#ifndef NSPV2_MESSENGER_H
#define NSPV2_MESSENGER_H

/* ---- msgrua.h: MISTATUS, a client's presence ---------------------------- */

#ifndef MISTATUS_UNKNOWN
#define MISTATUS_UNKNOWN 0x0000u                         /* state unknown */
#define MISTATUS_OFFLINE 0x0001u                         /* not connected to a server */
#define MISTATUS_ONLINE 0x0002u                          /* connected to a server */
#define MISTATUS_INVISIBLE 0x0006u                       /* connected but invisible */
#define MISTATUS_BUSY 0x000Au                            /* connected, busy */
#define MISTATUS_BE_RIGHT_BACK 0x000Eu                   /* away for a short time */
#define MISTATUS_IDLE 0x0012u                            /* no recent input */
#define MISTATUS_AWAY 0x0022u                            /* away */
#define MISTATUS_ON_THE_PHONE 0x0032u                    /* on the phone */
#define MISTATUS_OUT_TO_LUNCH 0x0042u                    /* out to lunch */
#define MISTATUS_LOCAL_FINDING_SERVER 0x0100u            /* finding the server */
#define MISTATUS_LOCAL_CONNECTING_TO_SERVER 0x0200u      /* connecting to the server */
#define MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER 0x0300u /* synchronizing */
#define MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER 0x0400u /* signing out */
#endif

/* Office Communicator 2007 adds these user-chosen states. */
#ifndef MISTATUS_IN_A_MEETING
#define MISTATUS_IN_A_MEETING 0x0052u               /* in a meeting */
#define MISTATUS_OUT_OF_OFFICE 0x0062u              /* out of the office */
#define MISTATUS_DO_NOT_DISTURB 0x0072u             /* do not disturb */
#define MISTATUS_IN_A_CONFERENCE 0x0082u            /* in a conference */
#define MISTATUS_ALLOW_URGENT_INTERRUPTIONS 0x0092u /* DND, urgent interruptions allowed */
#define MISTATUS_MAY_BE_AVAILABLE 0x00A2u           /* may be available */
#define MISTATUS_CUSTOM 0x00B2u                     /* a custom state */
#endif

/* ---- msgrua.h: results of IMessenger::Signout --------------------------- */

/* (S_OK and E_FAIL are the usual winerror.h values, 0 and 0x80004005.) */
#ifndef MSGR_E_NOT_LOGGED_ON
#define MSGR_E_NOT_LOGGED_ON 0x8100031Eu /* not signed in to the primary service */
#endif

/* ---- msgrpriv.h: SESSION_RESULT, results of a session invitation -------- */

#ifndef SR_APPLICATION_LAUNCH_FAILED
#define SR_APPLICATION_LAUNCH_FAILED 0x81000601u
#define SR_INVITATION_DECLINED 0x81000602u
#define SR_CONNECTION_FAILURE 0x81000603u
#define SR_AUTHENTICATION_FAILED 0x81000604u
#define SR_SESSION_NOT_READY 0x81000605u
#define SR_SESSION_CANCELLED_LOCAL 0x81000606u
#define SR_SESSION_CANCELLED_REMOTE 0x81000607u
#define SR_SESSION_PROTOCOL_ERROR 0x81000608u
#define SR_SESSION_TIMEOUT 0x81000609u
#define SR_CANCEL_BEFORE_CONNECT 0x8100060Au
#define SR_NOT_INVITEE 0x8100060Bu
#define SR_NOT_INVITER 0x8100060Cu
#define SR_APP_ALREADY_REGISTERED 0x8100060Du
#define SR_APP_NOT_REGISTERED 0x8100060Eu
#define SR_NOT_VALID_FOR_APP_INVITE 0x8100060Fu
#define SR_APP_NOT_SPECIFIED 0x81000610u
#define SR_CONTEXT_DATA_OVER_LIMIT 0x81000611u
#define SR_NO_USER_INVITED 0x81000612u
#define SR_INVITED_SELF 0x81000613u
#define SR_SESSION_STATE_INVALID 0x81000614u
#define SR_INVITATION_SEND_FAILURE 0x81000615u
#define SR_CANCEL_SEND_FAILURE 0x81000616u
#define SR_DECLINE_SEND_FAILURE 0x81000617u
#define SR_ACCEPT_SEND_FAILURE 0x81000618u
#define SR_CONTEXT_DATA_SEND_FAILURE 0x81000619u
/* (the documented values jump: there is no 0x8100061A..0x8100061F) */
#define SR_NETWORK_CONFIG_FAILURE 0x81000620u
#define SR_NET_NOT_SUPPORTED 0x81000621u
#define SR_REMOTE_NET_NOT_SUPPORTED 0x81000622u
#define SR_FIREWALL_NOT_SUPPORTED 0x81000623u
#define SR_OLD_SIP_STACK 0x81000624u
#endif

#endif /* NSPV2_MESSENGER_H */
