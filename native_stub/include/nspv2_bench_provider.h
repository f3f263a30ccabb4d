/*
 * nspv2_bench_provider.h - a minimal, fast NS_EMAIL provider in C: the
 * yardstick that providers written with nspv2 (Python) are measured
 * against. Linked into the host library, like the reference provider.
 *
 * Use:
 *     NSPV2_ROUTINE r;
 *     nspv2_bench_provider_routine(&r);
 *     WSAAdvertiseProvider(&nspv2_bench_provider_id, &r);
 *
 * Begin: any lpszServiceInstanceName (not NULL) is found; dwNameSpace
 * NS_EMAIL or NS_ALL. Errors: NULL restrictions, dwSize too small, another
 * namespace, no name -> WSAEINVAL.
 *
 * NextEx: exactly one result, then WSA_E_NO_MORE. The result: dwNameSpace
 * NS_EMAIL, dwOutputFlags RESULT_IS_ADDED, and as the LUP_RETURN_* flags of
 * Begin ask: NAME (the requested name), COMMENT ("MISTATUS_ONLINE"), ADDR
 * (two CSADDR_INFO, RemoteAddr only, SOCK_STREAM / IPPROTO_TCP:
 * 192.0.2.10:5060 then [2001:db8::10]:5060, Windows family values), BLOB
 * (NSPV2_BENCH_BLOB_SIZE bytes, byte i being i). A short buffer completes
 * with WSAEFAULT and the exact size needed in *lpdwBufferLength; the same
 * result comes next time, unless LUP_FLUSHPREVIOUS drops it.
 *
 * Startup allocates a small per-session state (freed by Cleanup or
 * ClientSessionRundown); SetServiceEx completes with WSAEOPNOTSUPP.
 */
#ifndef NSPV2_BENCH_PROVIDER_H
#define NSPV2_BENCH_PROVIDER_H

#include "nspv2_host.h"

#ifdef __cplusplus
extern "C" {
#endif

/* {6E737032-6265-6E63-8A1F-42454E434821} */
NSPV2_HOST_API extern const GUID nspv2_bench_provider_id;

/* Fills *out with the provider's routine table (cbSize, version 1.1, all
 * seven entry points). */
NSPV2_HOST_API void nspv2_bench_provider_routine(NSPV2_ROUTINE *out);

/* The size of the blob of the result. */
#define NSPV2_BENCH_BLOB_SIZE 32

#ifdef __cplusplus
}
#endif

#endif /* NSPV2_BENCH_PROVIDER_H */
