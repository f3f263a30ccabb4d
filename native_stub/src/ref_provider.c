/*
 * ref_provider.c - the C reference NS_EMAIL provider for NSPv2.
 *
 * Start here to write an NSPv2 provider in C. It is complete but small:
 * a fixed directory of three e-mail names, answered one result per
 * NSPv2LookupServiceNextEx. Everything a provider must get right is here
 * and commented:
 *
 *   - the SDK signatures (NextEx, SetServiceEx and ClientSessionRundown
 *     return VOID) stored with NSPV2_SLOT(), so the table also compiles
 *     against mingw-w64's ws2spi.h, which declares those slots as int;
 *   - per-client-session state allocated by Startup and freed exactly once,
 *     by Cleanup (normal close) or ClientSessionRundown (client gone);
 *   - lookup handles that are numbers from a counter, looked up in a table,
 *     never addresses: a stale or forged handle is refused, not followed;
 *   - NextEx reports its result ONLY through WSAProviderCompleteAsyncCall
 *     (here before it returns; it may also be later, from another thread);
 *   - buffer packing: the WSAQUERYSET2W header, then every piece aligned to
 *     a pointer boundary, with absolute pointers into the caller's buffer,
 *     never a byte past *lpdwBufferLength; when the buffer is short, the
 *     EXACT required size goes to *lpdwBufferLength and the call completes
 *     with WSAEFAULT, and the same result is offered again next time
 *     (unless the caller passes LUP_FLUSHPREVIOUS, which drops it).
 *     Sizing and packing use one layout function, so they cannot disagree.
 *   - no lock is held while calling the host (WSAProviderCompleteAsyncCall
 *     may do work of its own).
 *
 * To port: replace the directory (ref_directory) and the matching
 * (ref_entry_matches) with your data source; keep the rest.
 */
/* clock_gettime, CLOCK_MONOTONIC, pthread_condattr_setclock (platform.h) */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_ref_provider.h"

#include "platform.h"

#include <stdlib.h>
#include <string.h>

/* {6E737032-7265-4600-8A1F-5245464E5350} */
NSPV2_HOST_API const GUID nspv2_ref_provider_id = {
    0x6e737032, 0x7265, 0x4600, {0x8a, 0x1f, 0x52, 0x45, 0x46, 0x4e, 0x53, 0x50}};

/* ------------------------------------------------------------------------ */
/* The directory                                                             */

typedef struct ref_entry {
    const char *name;    /* ASCII; returned as UTF-16 */
    const char *comment; /* presence status, returned as lpszComment */
    unsigned char ipv4[4];
    unsigned char ipv6[16];
    unsigned short port; /* host order; stored big-endian in the sockaddrs */
} ref_entry;

static const ref_entry ref_directory[] = {
    {"alice@example.com", "MISTATUS_ONLINE", {192, 0, 2, 10},
     {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}, 5061},
    {"bob@example.com", "MISTATUS_BUSY", {192, 0, 2, 11},
     {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11}, 5061},
    {"carol@example.org", "MISTATUS_AWAY", {198, 51, 100, 12},
     {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12}, 5062},
};
#define REF_ENTRIES (sizeof ref_directory / sizeof ref_directory[0])

/* Blob bytes of entry i: a fixed pattern a client can check. */
static unsigned char ref_blob_byte(size_t entry, size_t i)
{
    return (unsigned char)(0x40u + entry * 0x10u + i);
}

static WCHAR ascii_fold(WCHAR c) { return (c >= 'A' && c <= 'Z') ? (WCHAR)(c + 32) : c; }

/* Case-insensitive (ASCII) comparison of a NUL-terminated UTF-16 string with
 * an ASCII one. Stops at the first difference: never reads past the
 * caller's terminator. */
static int wstr_eq_ascii(const WCHAR *w, const char *a)
{
    for (;; w++, a++) {
        WCHAR c = ascii_fold(*w);
        WCHAR d = ascii_fold((WCHAR)(unsigned char)*a);
        if (c != d)
            return 0;
        if (c == 0)
            return 1;
    }
}

/* An exact name, or "*@domain" for every name in that domain. */
static int ref_entry_matches(const ref_entry *e, const WCHAR *query)
{
    if (query[0] == '*' && query[1] == '@') {
        const char *at = strchr(e->name, '@');
        return at && wstr_eq_ascii(query + 2, at + 1);
    }
    return wstr_eq_ascii(query, e->name);
}

/* ------------------------------------------------------------------------ */
/* Provider state: client sessions and lookups, under one lock               */

typedef struct ref_session {
    struct ref_session *next;
    unsigned long lookups; /* lookups begun in this session (example state) */
} ref_session;

typedef struct ref_lookup {
    struct ref_lookup *next;
    uintptr_t handle;              /* from ref_next_handle, never an address */
    DWORD flags;                   /* Begin's LUP_RETURN_* choose the fields */
    size_t matches[REF_ENTRIES];   /* directory indexes, in order */
    size_t nmatches;
    size_t pos;                    /* next result to hand out */
    int too_big;                   /* last NextEx failed with WSAEFAULT */
} ref_lookup;

static nspv2_mutex ref_lock = NSPV2_MUTEX_INIT;
static ref_session *ref_sessions;
static ref_lookup *ref_lookups;
static uintptr_t ref_next_handle;

/* Is arg a session this provider created (and has not ended)? */
static int ref_session_known_L(const ref_session *arg)
{
    for (const ref_session *s = ref_sessions; s; s = s->next)
        if (s == arg)
            return 1;
    return 0;
}

/* Unlinks and returns the session, or NULL when unknown. */
static ref_session *ref_session_take_L(const void *arg)
{
    for (ref_session **pp = &ref_sessions; *pp; pp = &(*pp)->next) {
        if (*pp == arg) {
            ref_session *s = *pp;
            *pp = s->next;
            return s;
        }
    }
    return NULL;
}

static ref_lookup *ref_lookup_find_L(HANDLE h)
{
    for (ref_lookup *l = ref_lookups; l; l = l->next)
        if (l->handle == (uintptr_t)h)
            return l;
    return NULL;
}

static INT ref_fail(int err)
{
    WSASetLastError(err);
    return SOCKET_ERROR;
}

static int ref_is_our_id(const GUID *id)
{
    return id && memcmp(id, &nspv2_ref_provider_id, sizeof *id) == 0;
}

/* ------------------------------------------------------------------------ */
/* Result layout: computed once, used both to size and to pack               */

#define REF_ALIGN(n) (((n) + sizeof(void *) - 1) & ~(sizeof(void *) - 1))

typedef struct ref_layout {
    size_t name, comment, csaddrs, sin, sin6, blob, blob_data; /* offsets; 0 = absent */
    size_t total;                                              /* bytes needed */
} ref_layout;

static void ref_compute_layout(const ref_entry *e, DWORD flags, ref_layout *lay)
{
    /* Offsets are relative to the start of the caller's buffer, which is
     * pointer-aligned; so every piece placed at an aligned offset is
     * aligned in memory too. */
    size_t off = sizeof(WSAQUERYSET2W);
    memset(lay, 0, sizeof *lay);
    if (flags & LUP_RETURN_NAME) {
        off = REF_ALIGN(off);
        lay->name = off;
        off += (strlen(e->name) + 1) * sizeof(WCHAR);
    }
    if (flags & LUP_RETURN_COMMENT) {
        off = REF_ALIGN(off);
        lay->comment = off;
        off += (strlen(e->comment) + 1) * sizeof(WCHAR);
    }
    if (flags & LUP_RETURN_ADDR) {
        off = REF_ALIGN(off);
        lay->csaddrs = off;
        off += 2 * sizeof(CSADDR_INFO);
        off = REF_ALIGN(off);
        lay->sin = off;
        off += sizeof(SOCKADDR_IN);
        off = REF_ALIGN(off);
        lay->sin6 = off;
        off += sizeof(SOCKADDR_IN6);
    }
    if (flags & LUP_RETURN_BLOB) {
        off = REF_ALIGN(off);
        lay->blob = off;
        off += sizeof(BLOB);
        off = REF_ALIGN(off);
        lay->blob_data = off;
        off += NSPV2_REF_BLOB_SIZE;
    }
    lay->total = off;
}

static WCHAR *ref_put_wstr(unsigned char *buf, size_t off, const char *ascii)
{
    WCHAR *w = (WCHAR *)(void *)(buf + off);
    size_t i = 0;
    for (; ascii[i]; i++)
        w[i] = (WCHAR)(unsigned char)ascii[i];
    w[i] = 0;
    return w;
}

static void ref_put_port(USHORT *field, unsigned short port)
{
    unsigned char be[2] = {(unsigned char)(port >> 8), (unsigned char)(port & 0xff)};
    memcpy(field, be, sizeof be); /* network byte order */
}

/* Packs entry e into buf, which holds at least lay->total bytes. */
static void ref_pack(unsigned char *buf, size_t entry_index, const ref_layout *lay)
{
    const ref_entry *e = &ref_directory[entry_index];
    WSAQUERYSET2W *q = (WSAQUERYSET2W *)(void *)buf;
    memset(buf, 0, lay->total); /* also zeroes the alignment padding */
    q->dwSize = sizeof(WSAQUERYSET2W);
    q->dwNameSpace = NS_EMAIL;
    if (lay->name)
        q->lpszServiceInstanceName = ref_put_wstr(buf, lay->name, e->name);
    if (lay->comment)
        q->lpszComment = ref_put_wstr(buf, lay->comment, e->comment);
    if (lay->csaddrs) {
        CSADDR_INFO *csa = (CSADDR_INFO *)(void *)(buf + lay->csaddrs);
        SOCKADDR_IN *sin = (SOCKADDR_IN *)(void *)(buf + lay->sin);
        SOCKADDR_IN6 *sin6 = (SOCKADDR_IN6 *)(void *)(buf + lay->sin6);
        sin->sin_family = NSPV2_AF_INET;
        ref_put_port(&sin->sin_port, e->port);
        memcpy(&sin->sin_addr, e->ipv4, 4);
        sin6->sin6_family = NSPV2_AF_INET6;
        ref_put_port(&sin6->sin6_port, e->port);
        memcpy(&sin6->sin6_addr, e->ipv6, 16);
        /* the address is where to reach the name: RemoteAddr; TCP stream */
        csa[0].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)sin;
        csa[0].RemoteAddr.iSockaddrLength = (INT)sizeof(SOCKADDR_IN);
        csa[0].iSocketType = 1; /* SOCK_STREAM */
        csa[0].iProtocol = 6;   /* IPPROTO_TCP */
        csa[1].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)sin6;
        csa[1].RemoteAddr.iSockaddrLength = (INT)sizeof(SOCKADDR_IN6);
        csa[1].iSocketType = 1;
        csa[1].iProtocol = 6;
        q->dwNumberOfCsAddrs = 2;
        q->lpcsaBuffer = csa;
    }
    if (lay->blob) {
        BLOB *b = (BLOB *)(void *)(buf + lay->blob);
        unsigned char *data = buf + lay->blob_data;
        for (size_t i = 0; i < NSPV2_REF_BLOB_SIZE; i++)
            data[i] = ref_blob_byte(entry_index, i);
        b->cbSize = NSPV2_REF_BLOB_SIZE;
        b->pBlobData = data;
        q->lpBlob = b;
    }
}

/* ------------------------------------------------------------------------ */
/* The entry points                                                          */

/* A client session reaches this provider for the first time: allocate its
 * state and hand it to the host, which passes it back to Begin,
 * SetServiceEx, and finally to Cleanup or ClientSessionRundown. */
static INT WSAAPI ref_startup(LPGUID lpProviderId, LPVOID *ppvClientSessionArg)
{
    if (!ref_is_our_id(lpProviderId))
        return ref_fail(WSAEINVAL);
    if (!ppvClientSessionArg)
        return ref_fail(WSAEFAULT);
    ref_session *s = calloc(1, sizeof *s);
    if (!s)
        return ref_fail(WSA_NOT_ENOUGH_MEMORY);
    nspv2_mutex_lock(&ref_lock);
    s->next = ref_sessions;
    ref_sessions = s;
    nspv2_mutex_unlock(&ref_lock);
    *ppvClientSessionArg = s;
    return NO_ERROR;
}

/* The client closed its session normally. */
static INT WSAAPI ref_cleanup(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    nspv2_mutex_lock(&ref_lock);
    ref_session *s = ref_session_take_L(pvClientSessionArg);
    nspv2_mutex_unlock(&ref_lock);
    if (!s)
        return ref_fail(WSAEINVAL); /* not ours, or ended already */
    free(s);
    return NO_ERROR;
}

/* The client went away without closing (or the provider is being
 * unadvertised): same as Cleanup, but nothing can be reported. */
static VOID WSAAPI ref_rundown(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    nspv2_mutex_lock(&ref_lock);
    ref_session *s = ref_session_take_L(pvClientSessionArg);
    nspv2_mutex_unlock(&ref_lock);
    free(s); /* NULL when unknown: nothing to do */
}

static INT WSAAPI ref_begin(LPGUID lpProviderId, LPWSAQUERYSET2W lpqsRestrictions,
                            DWORD dwControlFlags, LPVOID lpvClientSessionArg,
                            LPHANDLE lphLookup)
{
    (void)lpProviderId;
    /* 1. validate the restrictions */
    if (!lpqsRestrictions || lpqsRestrictions->dwSize < sizeof(WSAQUERYSET2W))
        return ref_fail(WSAEINVAL);
    if (lpqsRestrictions->dwNameSpace != NS_EMAIL && lpqsRestrictions->dwNameSpace != NS_ALL)
        return ref_fail(WSAEINVAL);
    const WCHAR *query = lpqsRestrictions->lpszServiceInstanceName;
    if (!query)
        return ref_fail(WSAEINVAL);
    if (!lphLookup)
        return ref_fail(WSAEFAULT);

    /* 2. find the matches (the directory is constant: no lock needed) */
    ref_lookup *l = calloc(1, sizeof *l);
    if (!l)
        return ref_fail(WSA_NOT_ENOUGH_MEMORY);
    for (size_t i = 0; i < REF_ENTRIES; i++)
        if (ref_entry_matches(&ref_directory[i], query))
            l->matches[l->nmatches++] = i;
    if (l->nmatches == 0) {
        free(l);
        return ref_fail(WSASERVICE_NOT_FOUND);
    }
    l->flags = dwControlFlags;

    /* 3. register it under a fresh handle, in a known session */
    nspv2_mutex_lock(&ref_lock);
    if (!ref_session_known_L(lpvClientSessionArg)) {
        nspv2_mutex_unlock(&ref_lock);
        free(l);
        return ref_fail(WSAEINVAL);
    }
    ((ref_session *)lpvClientSessionArg)->lookups++;
    do
        l->handle = ++ref_next_handle;
    while (l->handle == 0 || ref_lookup_find_L((HANDLE)l->handle));
    l->next = ref_lookups;
    ref_lookups = l;
    nspv2_mutex_unlock(&ref_lock);
    *lphLookup = (HANDLE)l->handle;
    return NO_ERROR;
}

static VOID WSAAPI ref_next_ex(HANDLE hAsyncCall, HANDLE hLookup, DWORD dwControlFlags,
                               LPDWORD lpdwBufferLength, LPWSAQUERYSET2W lpqsResults)
{
    INT code = NO_ERROR;
    if (!lpdwBufferLength) {
        WSAProviderCompleteAsyncCall(hAsyncCall, WSAEFAULT);
        return;
    }
    nspv2_mutex_lock(&ref_lock);
    ref_lookup *l = ref_lookup_find_L(hLookup);
    if (!l) {
        code = WSA_INVALID_HANDLE;
    } else {
        /* LUP_FLUSHPREVIOUS: give up the result that did not fit last time */
        if ((dwControlFlags & LUP_FLUSHPREVIOUS) && l->too_big && l->pos < l->nmatches)
            l->pos++;
        l->too_big = 0;
        if (l->pos >= l->nmatches) {
            code = WSA_E_NO_MORE;
        } else {
            size_t entry = l->matches[l->pos];
            ref_layout lay;
            ref_compute_layout(&ref_directory[entry], l->flags, &lay);
            if (lpqsResults && (uintptr_t)lpqsResults % sizeof(void *) != 0) {
                /* the layout assumes a pointer-aligned buffer (Winsock's
                 * and the host's always are) */
                code = WSAEINVAL;
            } else if (!lpqsResults || *lpdwBufferLength < lay.total) {
                /* short buffer: exact size, same result next time */
                *lpdwBufferLength = (DWORD)lay.total;
                l->too_big = 1;
                code = WSAEFAULT;
            } else {
                ref_pack((unsigned char *)lpqsResults, entry, &lay);
                l->pos++;
            }
        }
    }
    nspv2_mutex_unlock(&ref_lock);
    /* Report through the host, never while holding our lock. */
    WSAProviderCompleteAsyncCall(hAsyncCall, code);
}

static INT WSAAPI ref_end(HANDLE hLookup)
{
    ref_lookup *found = NULL;
    nspv2_mutex_lock(&ref_lock);
    for (ref_lookup **pp = &ref_lookups; *pp; pp = &(*pp)->next) {
        if ((*pp)->handle == (uintptr_t)hLookup) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    nspv2_mutex_unlock(&ref_lock);
    if (!found)
        return ref_fail(WSA_INVALID_HANDLE); /* unknown, or ended already */
    free(found);
    return NO_ERROR;
}

/* Registration is not supported: complete, as every SetServiceEx must. */
static VOID WSAAPI ref_set_service_ex(HANDLE hAsyncCall, LPGUID lpProviderId,
                                      LPWSAQUERYSET2W lpqsRegInfo,
                                      WSAESETSERVICEOP essOperation, DWORD dwControlFlags,
                                      LPVOID lpvClientSessionArg)
{
    (void)lpProviderId;
    (void)lpqsRegInfo;
    (void)essOperation;
    (void)dwControlFlags;
    (void)lpvClientSessionArg;
    WSAProviderCompleteAsyncCall(hAsyncCall, WSAEOPNOTSUPP);
}

NSPV2_HOST_API void nspv2_ref_provider_routine(NSPV2_ROUTINE *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->cbSize = sizeof(NSPV2_ROUTINE);
    out->dwMajorVersion = 1;
    out->dwMinorVersion = 1;
    /* NSPV2_SLOT casts only the declared return type of the slot (int under
     * mingw-w64 for the three VOID entry points); the layout is the SDK's. */
    NSPV2_SLOT(*out, NSPv2Startup, ref_startup);
    NSPV2_SLOT(*out, NSPv2Cleanup, ref_cleanup);
    NSPV2_SLOT(*out, NSPv2LookupServiceBegin, ref_begin);
    NSPV2_SLOT(*out, NSPv2LookupServiceNextEx, ref_next_ex);
    NSPV2_SLOT(*out, NSPv2LookupServiceEnd, ref_end);
    NSPV2_SLOT(*out, NSPv2SetServiceEx, ref_set_service_ex);
    NSPV2_SLOT(*out, NSPv2ClientSessionRundown, ref_rundown);
}
