/*
 * nspv2_ref_provider.h - the C reference NS_EMAIL provider: a presence
 * directory in the spirit of Windows Messenger.
 *
 * It implements docs/email-example.md exactly as nspv2/examples/email.py
 * does in Python (one table of cases, nspv2/examples/scenarios/email.json, runs against
 * both through the native host and they must agree row by row), and it is
 * the starting point for a provider written in C. It is linked into the
 * host library and calls the host's WSAProviderCompleteAsyncCall and
 * WSASetLastError (under Windows the same code links against ws2_32).
 *
 * Use:
 *     NSPV2_ROUTINE r;
 *     nspv2_ref_provider_routine(&r);
 *     WSAAdvertiseProvider(&nspv2_ref_provider_id, &r);
 *
 * In short (the specification is docs/email-example.md):
 *
 *   WSASetServiceW (NSPv2SetServiceEx), dwNameSpace NS_EMAIL or NS_ALL:
 *     RNRSERVICE_REGISTER   signs lpszServiceInstanceName in for the client
 *                           session, with the CS addresses and the presence
 *                           in lpBlob (NSPV2_PRESENCE_BLOB_SIZE bytes;
 *                           none: MISTATUS_ONLINE). Again from the same
 *                           session: an update (SERVICE_MULTIPLE adds the
 *                           addresses instead of replacing them).
 *                           lpszQueryString "invite=<name>": an invitation.
 *     RNRSERVICE_DEREGISTER removes the given CS addresses (all if none).
 *     RNRSERVICE_DELETE     signs the name out; lookups already in flight
 *                           see it MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER
 *                           with RESULT_IS_DELETED, new ones do not find it.
 *     Failures are SESSION_RESULTs (nspv2_messenger.h) reported as Winsock
 *     errors: SR_APP_ALREADY_REGISTERED -> WSAEALREADY, SR_APP_NOT_REGISTERED
 *     -> WSASERVICE_NOT_FOUND, SR_NOT_INVITER -> WSAEACCES, SR_INVITED_SELF
 *     and SR_SESSION_STATE_INVALID -> WSAEINVAL, SR_INVITATION_DECLINED ->
 *     WSAEREFUSED; a bad name, blob or namespace -> WSAEINVAL.
 *   NSPv2Cleanup / NSPv2ClientSessionRundown sign out every name the client
 *     session signed in.
 *   WSALookupServiceBegin/Next/End: an exact name or "*@domain.tld" (every
 *     signed-in name of the domain, sorted by lowercased name), compared
 *     case-insensitively; one result per NextEx, its fields chosen by the
 *     LUP_RETURN_* flags of Begin (NAME, VERSION, COMMENT = the presence's
 *     name, ADDR, BLOB); dwNameSpace NS_EMAIL, lpNSProviderId this
 *     provider's id, dwOutputFlags RESULT_IS_ADDED / _CHANGED / _DELETED.
 *     A short buffer completes with WSAEFAULT and the exact size needed in
 *     *lpdwBufferLength; the same result comes next time, unless
 *     LUP_FLUSHPREVIOUS drops it. After the last result: WSA_E_NO_MORE.
 */
#ifndef NSPV2_REF_PROVIDER_H
#define NSPV2_REF_PROVIDER_H

#include "nspv2_host.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The host library exports the provider's names below. A provider library
 * that compiles ref_provider.c in itself (native_stub/examples/
 * email_provider.c does) defines NSPV2_REF_PROVIDER_LOCAL before including
 * this header: its references then bind to its own copy, hidden in that
 * library, instead of to the host's exported one (ELF takes the most
 * hidden visibility any declaration gives a symbol; on Windows each DLL
 * binds to its own definitions anyway). */
#if !defined(NSPV2_REF_PROVIDER_LOCAL)
#define NSPV2_REF_PROVIDER_API NSPV2_HOST_API
#elif defined(_WIN32)
#define NSPV2_REF_PROVIDER_API
#else
#define NSPV2_REF_PROVIDER_API __attribute__((visibility("hidden")))
#endif

/* {6E737032-7265-4600-8A1F-5245464E5350} */
NSPV2_REF_PROVIDER_API extern const GUID nspv2_ref_provider_id;

/* Fills *out with the provider's routine table (cbSize, version 1.1, all
 * seven entry points). */
NSPV2_REF_PROVIDER_API void nspv2_ref_provider_routine(NSPV2_ROUTINE *out);

/* Empties the directory: every name is signed out (lookups in flight that
 * captured an entry keep it, in MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER,
 * until they end) and the invitation count goes back to 0. Client sessions
 * and lookups stay open. For tests, which share one process-wide
 * directory. */
NSPV2_REF_PROVIDER_API void nspv2_ref_provider_reset(void);

/* The presence blob, version 1 (little-endian):
 *   offset 0  4 bytes  magic "NSPP"
 *   offset 4  2 bytes  version, 1
 *   offset 6  2 bytes  reserved, 0
 *   offset 8  4 bytes  status, a MISTATUS value (nspv2_messenger.h) */
#define NSPV2_PRESENCE_BLOB_SIZE 12
#define NSPV2_PRESENCE_BLOB_MAGIC "NSPP"
#define NSPV2_PRESENCE_BLOB_VERSION 1

#ifdef __cplusplus
}
#endif

#endif /* NSPV2_REF_PROVIDER_H */
