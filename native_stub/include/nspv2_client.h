/*
 * nspv2_client.h - the client library (libnspv2client): Winsock's client
 * calls for a client process, reaching the NSPv2 providers that a provider
 * process (`nspv2 serve`) advertises, as ws2_32's hidden RPC hop does on
 * Windows. Not for Windows (ws2_32.dll is the client library there).
 *
 * It exports exactly the Winsock client names below, with Winsock's
 * signatures, so a client program written for Windows builds unchanged
 * against it (with nspv2's compat headers: `nspv2 config --compat --cflags
 * --client-libs`), and a few nspv2_client_* extras. A program may include
 * this header, <winsock2.h> from the compat folder, or both.
 *
 * How it behaves (docs/client-c.md):
 *
 *   - WSAStartup always succeeds (as on Windows) and connects nothing. The
 *     first call that needs a provider process connects. One-server mode:
 *     a socket is chosen (nspv2_client_set_socket, else $NSPV2_SOCKET); that
 *     server's host routes among its providers. Routed mode (no socket
 *     chosen): every live `serve-<pid>.sock` of the runtime folder
 *     ($NSPV2_RUNTIME_DIR, else $XDG_RUNTIME_DIR/nspv2, else
 *     /tmp/nspv2-<euid>; it must be owned by you with no group/other
 *     permission), one connection each; Begin and SetService are routed
 *     through the namespace catalog in effect (NSPV2_CATALOG, ...) by the
 *     host's rules, to the live server serving each routed provider (the
 *     connected one with the lowest pid when two do; a request that loses
 *     its connection goes to the next one); Next aggregates them in route
 *     order. A server's providers are read from its HELLO reply once per
 *     connection: one it advertises later is seen when the connection is
 *     made again (after the last WSACleanup, or a retry, below). No
 *     server, or a folder that is not private: that call fails with
 *     WSASERVICE_NOT_FOUND and nspv2_client_error_text() says why; the next
 *     call looks again. The mode is decided whenever no connection is held.
 *   - A connection is this process's client session in that provider
 *     process: its first call into a provider runs that provider's
 *     NSPv2Startup; the last WSACleanup (one per successful WSAStartup) says
 *     GOODBYE (NSPv2Cleanup) on every connection; a process that exits or
 *     dies without it is run down by each provider process
 *     (NSPv2ClientSessionRundown).
 *   - While connected a background thread per connection sends a keepalive
 *     at the interval that provider process asked for.
 *   - Routed: a server that dies mid-lookup fails that part's Next with the
 *     connection's error: recorded, the lookup goes on with the next part
 *     (the final WSA_E_NO_MORE's text names what was skipped). A server
 *     gone is not routed to any more. A connection lost while its server
 *     lives (a timeout, a protocol error) fails its parts with
 *     WSAECONNRESET ("... was lost earlier: CAUSE"); it is made again (a new
 *     session) at a later Begin/SetService/nspv2_client_connect once no open
 *     lookup has a part on it and its retry time has come (1 s after the
 *     loss, doubling while retries keep failing, at most 60 s); an
 *     abandoned one is not.
 *   - Errors: a failing call returns SOCKET_ERROR with WSAGetLastError() set
 *     to the provider's (or the host's) code, as the in-process host would.
 *     A provider process that refuses the connection (another user:
 *     WSAEACCES; too many clients: WSAEPROCLIM; a protocol error) fails that
 *     call with its code and text. Once a connection is lost every call
 *     to it fails with WSAECONNRESET (one-server mode: every call; routed:
 *     the parts it serves, until it is retried), until the last
 *     WSACleanup; after a new
 *     WSAStartup the next call connects again.
 *   - Thread-safe: calls from several threads are serialized (one request in
 *     flight at a time); the last error and the error text are per thread.
 *   - fork(): the child does not share the parent's connection. Its copy
 *     of the socket is closed (no GOODBYE, no shutdown: the parent's
 *     session goes on); the child's next call connects on its own, a
 *     session of its own. The WSAStartup count, chosen socket and timeout
 *     are kept; the parent's lookup handles are not valid in the child.
 *   - A reply waits at most nspv2_client_set_timeout_ms (default 30000):
 *     then the call fails with WSAETIMEDOUT and the connection is closed (the
 *     provider process runs the session down).
 *   - lpqsResults of WSALookupServiceNextW must be aligned for a
 *     WSAQUERYSETW (as its type requires); a misaligned buffer fails with
 *     WSAEFAULT.
 */
#ifndef NSPV2_CLIENT_H
#define NSPV2_CLIENT_H

#include "nspv2_abi.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#error "nspv2_client.h: on Windows, clients use ws2_32.dll"
#endif

#define NSPV2_CLIENT_API __attribute__((visibility("default")))

/* ---- Winsock (winsock2.h) ---- */
NSPV2_CLIENT_API int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);
NSPV2_CLIENT_API int WSAAPI WSACleanup(void);
NSPV2_CLIENT_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                   DWORD dwControlFlags, LPHANDLE lphLookup);
NSPV2_CLIENT_API INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags,
                                                  LPDWORD lpdwBufferLength,
                                                  LPWSAQUERYSETW lpqsResults);
NSPV2_CLIENT_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup);
NSPV2_CLIENT_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                           WSAESETSERVICEOP essoperation, DWORD dwControlFlags);
NSPV2_CLIENT_API void WSAAPI WSASetLastError(int iError); /* per thread */
NSPV2_CLIENT_API int WSAAPI WSAGetLastError(void);        /* per thread */

/* ---- nspv2 extras ---- */

/* Why this thread's last failing call failed, in English (UTF-8, NUL
 * terminated, valid until this thread's next call into the library); ""
 * when the last call succeeded. */
NSPV2_CLIENT_API const char *nspv2_client_error_text(void);

/* Connect to this socket instead of $NSPV2_SOCKET / the runtime folder
 * (one-server mode; NULL or "": back to those, routed mode without
 * $NSPV2_SOCKET). Takes effect at the next connection; while connected
 * (any connection) -> SOCKET_ERROR, WSAEISCONN. A path longer than a Unix
 * socket address holds -> WSAEINVAL. */
NSPV2_CLIENT_API INT nspv2_client_set_socket(const char *path);

/* How long a call waits for its reply, in ms (0: forever). Default 30000. */
NSPV2_CLIENT_API void nspv2_client_set_timeout_ms(uint32_t timeout_ms);

/* Connect now rather than at the first call (after WSAStartup; without it
 * -> WSANOTINITIALISED). NO_ERROR when connected (also already); routed:
 * to every live server, NO_ERROR when at least one is connected. */
NSPV2_CLIENT_API INT nspv2_client_connect(void);

/* Close the connection (routed: every connection) without GOODBYE, as a
 * process that dies does: the provider process runs the session down
 * (NSPv2ClientSessionRundown). Later calls fail with WSAECONNRESET until
 * the last WSACleanup (routed: an abandoned connection is never retried).
 * Not connected -> SOCKET_ERROR, WSAENOTCONN. */
NSPV2_CLIENT_API INT nspv2_client_abandon(void);

enum {
    NSPV2_CLIENT_NOT_CONNECTED = 0,
    NSPV2_CLIENT_CONNECTED = 1,
    NSPV2_CLIENT_LOST = 2 /* until the last WSACleanup (routed: or a retry) */
};

/* One-server mode: its connection. Routed: state CONNECTED when some
 * connection is, else LOST when some is; server_pid, keepalive_ms and
 * socket_path of the connected server with the lowest pid (else the lost
 * one); providers, requests and keepalives summed over the connections. */
typedef struct nspv2_client_info {
    uint32_t state;        /* NSPV2_CLIENT_* */
    uint32_t startups;     /* WSAStartup calls not yet matched by WSACleanup */
    uint32_t server_pid;   /* while connected or lost: the provider process */
    uint32_t keepalive_ms; /* its keepalive interval */
    uint32_t providers;    /* providers it advertised when we connected */
    uint32_t requests;     /* requests answered on this connection */
    uint64_t keepalives;   /* keepalives sent on this connection */
    char socket_path[108]; /* the socket connected to ("" if none) */
} nspv2_client_info;

/* NULL out -> WSAEFAULT. */
NSPV2_CLIENT_API INT nspv2_client_info_get(nspv2_client_info *out);

#ifdef __cplusplus
}
#endif

#endif /* NSPV2_CLIENT_H */
