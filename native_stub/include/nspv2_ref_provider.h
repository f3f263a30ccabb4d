/*
 * nspv2_ref_provider.h - the C reference NS_EMAIL provider.
 *
 * A small, complete NSPv2 provider serving a fixed directory of e-mail
 * names; the starting point for a provider written in C. It is linked into
 * the host library and calls the host's WSAProviderCompleteAsyncCall and
 * WSASetLastError (under Windows the same code links against ws2_32).
 *
 * Use:
 *     NSPV2_ROUTINE r;
 *     nspv2_ref_provider_routine(&r);
 *     WSAAdvertiseProvider(&nspv2_ref_provider_id, &r);
 *
 * Directory (NS_EMAIL; k is the entry's index):
 *   k  name               comment          IPv4            IPv6           port
 *   0  alice@example.com  MISTATUS_ONLINE  192.0.2.10      2001:db8::10   5061
 *   1  bob@example.com    MISTATUS_BUSY    192.0.2.11      2001:db8::11   5061
 *   2  carol@example.org  MISTATUS_AWAY    198.51.100.12   2001:db8:1::12 5062
 *
 * Begin: lpszServiceInstanceName is an exact name or "*@domain" (every name
 * in that domain, in the order above), compared case-insensitively (ASCII);
 * dwNameSpace NS_EMAIL or NS_ALL. Errors: NULL restrictions, dwSize too
 * small, another namespace or no name -> WSAEINVAL; no match ->
 * WSASERVICE_NOT_FOUND.
 *
 * NextEx: one result per call. The LUP_RETURN_* flags given to Begin choose
 * the fields: NAME (lpszServiceInstanceName), COMMENT (lpszComment), ADDR
 * (two CSADDR_INFO, RemoteAddr only, SOCK_STREAM 1 / IPPROTO_TCP 6: an
 * AF_INET then an AF_INET6 SOCKADDR, Windows family values 2 and 23, port
 * in network order), BLOB (NSPV2_REF_BLOB_SIZE bytes, byte i of entry k
 * being 0x40 + 0x10 * k + i). dwNameSpace is NS_EMAIL. A short buffer
 * completes with WSAEFAULT and the exact size needed in *lpdwBufferLength;
 * the same result comes next time, unless LUP_FLUSHPREVIOUS drops it. After
 * the last result: WSA_E_NO_MORE. SetServiceEx completes with
 * WSAEOPNOTSUPP.
 */
#ifndef NSPV2_REF_PROVIDER_H
#define NSPV2_REF_PROVIDER_H

#include "nspv2_host.h"

#ifdef __cplusplus
extern "C" {
#endif

/* {6E737032-7265-4600-8A1F-5245464E5350} */
NSPV2_HOST_API extern const GUID nspv2_ref_provider_id;

/* Fills *out with the provider's routine table (cbSize, version 1.1, all
 * seven entry points). */
NSPV2_HOST_API void nspv2_ref_provider_routine(NSPV2_ROUTINE *out);

/* The size of the blob attached to every result. */
#define NSPV2_REF_BLOB_SIZE 32

#ifdef __cplusplus
}
#endif

#endif /* NSPV2_REF_PROVIDER_H */
