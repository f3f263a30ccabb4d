/*
 * bench_provider.c - the performance yardstick: a minimal NS_EMAIL provider
 * answering every name with one fixed result (nspv2_bench_provider.h).
 *
 * It follows the same rules as ref_provider.c (the commented template):
 * counters, not addresses, for session arguments and lookup handles; one
 * layout walk for sizing and packing; never a byte past *lpdwBufferLength;
 * the exact size on WSAEFAULT and the result held until LUP_FLUSHPREVIOUS;
 * completion only through WSAProviderCompleteAsyncCall, with no lock held.
 * What it does not do is anything a real provider would (validation beyond
 * the essentials, a directory), so that what it costs is what the host and
 * the packing cost.
 */
/* clock_gettime, CLOCK_MONOTONIC, pthread_condattr_setclock (platform.h) */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_bench_provider.h"

#include "platform.h"

#include <stdlib.h>
#include <string.h>

/* {6E737032-6265-6E63-8A1F-42454E434821} */
NSPV2_HOST_API const GUID nspv2_bench_provider_id = {
    0x6e737032, 0x6265, 0x6e63, {0x8a, 0x1f, 0x42, 0x45, 0x4e, 0x43, 0x48, 0x21}};

#define BENCH_PORT 5060

static const unsigned char bench_ipv4[4] = {192, 0, 2, 10};
static const unsigned char bench_ipv6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                             0,    0,    0,    0,    0, 0, 0, 0x10};
static const WCHAR bench_comment[] = {'M', 'I', 'S', 'T', 'A', 'T', 'U', 'S',
                                      '_', 'O', 'N', 'L', 'I', 'N', 'E', 0};

typedef struct bench_session {
    struct bench_session *next;
    uintptr_t id;
    unsigned long lookups; /* begun in this session: the per-session state */
} bench_session;

enum {
    BENCH_PENDING, /* the result was not offered yet */
    BENCH_HELD,    /* it did not fit: offered again next time */
    BENCH_DONE     /* delivered, or dropped by LUP_FLUSHPREVIOUS */
};

typedef struct bench_lookup {
    struct bench_lookup *next;
    uintptr_t handle;
    DWORD flags;   /* Begin's LUP_RETURN_* */
    int state;     /* BENCH_* */
    size_t need;   /* the result's size, computed once at Begin */
    size_t len;    /* of the name, in UTF-16 units */
    WCHAR name[];  /* the requested name, NUL-terminated */
} bench_lookup;

static struct {
    nspv2_mutex lock;
    bench_session *sessions;
    bench_lookup *lookups;
    uintptr_t next_session, next_handle;
} bench = {.lock = NSPV2_MUTEX_INIT};

static INT bench_fail(int err)
{
    WSASetLastError(err);
    return SOCKET_ERROR;
}

/* ------------------------------------------------------------------------ */
/* the result's layout: one walk to size (buf NULL) and to pack              */

#define BENCH_ALIGN(n) (((n) + sizeof(void *) - 1) & ~(sizeof(void *) - 1))

static size_t bench_put(unsigned char *buf, size_t *off, const void *src, size_t len)
{
    size_t at = BENCH_ALIGN(*off);
    if (buf && src)
        memcpy(buf + at, src, len);
    *off = at + len;
    return at;
}

static void bench_put_port(unsigned char *field)
{
    field[0] = (unsigned char)(BENCH_PORT >> 8); /* network byte order */
    field[1] = (unsigned char)(BENCH_PORT & 0xff);
}

/* buf: pointer-aligned, zeroed, at least the measured size; or NULL. */
static size_t bench_layout(const WCHAR *name, size_t len, DWORD flags, unsigned char *buf)
{
    WSAQUERYSET2W q;
    size_t off = sizeof q;
    memset(&q, 0, sizeof q);
    if (flags & LUP_RETURN_NAME) {
        size_t at = bench_put(buf, &off, name, (len + 1) * sizeof(WCHAR));
        if (buf)
            q.lpszServiceInstanceName = (LPWSTR)(void *)(buf + at);
    }
    if (flags & LUP_RETURN_COMMENT) {
        size_t at = bench_put(buf, &off, bench_comment, sizeof bench_comment);
        if (buf)
            q.lpszComment = (LPWSTR)(void *)(buf + at);
    }
    if (flags & LUP_RETURN_ADDR) {
        size_t csa = bench_put(buf, &off, NULL, 2 * sizeof(CSADDR_INFO));
        size_t sin = bench_put(buf, &off, NULL, sizeof(SOCKADDR_IN));
        size_t sin6 = bench_put(buf, &off, NULL, sizeof(SOCKADDR_IN6));
        if (buf) {
            SOCKADDR_IN a4;
            SOCKADDR_IN6 a6;
            memset(&a4, 0, sizeof a4);
            memset(&a6, 0, sizeof a6);
            a4.sin_family = NSPV2_AF_INET;
            bench_put_port((unsigned char *)&a4.sin_port);
            memcpy(&a4.sin_addr, bench_ipv4, sizeof bench_ipv4);
            a6.sin6_family = NSPV2_AF_INET6;
            bench_put_port((unsigned char *)&a6.sin6_port);
            memcpy(&a6.sin6_addr, bench_ipv6, sizeof bench_ipv6);
            memcpy(buf + sin, &a4, sizeof a4);
            memcpy(buf + sin6, &a6, sizeof a6);
            CSADDR_INFO c[2];
            memset(c, 0, sizeof c);
            c[0].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)(buf + sin);
            c[0].RemoteAddr.iSockaddrLength = (INT)sizeof(SOCKADDR_IN);
            c[1].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)(buf + sin6);
            c[1].RemoteAddr.iSockaddrLength = (INT)sizeof(SOCKADDR_IN6);
            for (int i = 0; i < 2; i++) {
                c[i].iSocketType = 1; /* SOCK_STREAM */
                c[i].iProtocol = 6;   /* IPPROTO_TCP */
            }
            memcpy(buf + csa, c, sizeof c);
            q.dwNumberOfCsAddrs = 2;
            q.lpcsaBuffer = (LPCSADDR_INFO)(void *)(buf + csa);
        }
    }
    if (flags & LUP_RETURN_BLOB) {
        size_t at = bench_put(buf, &off, NULL, sizeof(BLOB));
        size_t data = bench_put(buf, &off, NULL, NSPV2_BENCH_BLOB_SIZE);
        if (buf) {
            for (size_t i = 0; i < NSPV2_BENCH_BLOB_SIZE; i++)
                buf[data + i] = (unsigned char)i;
            BLOB b = {NSPV2_BENCH_BLOB_SIZE, buf + data};
            memcpy(buf + at, &b, sizeof b);
            q.lpBlob = (LPBLOB)(void *)(buf + at);
        }
    }
    if (buf) {
        q.dwSize = sizeof q;
        q.dwNameSpace = NS_EMAIL;
        q.dwOutputFlags = RESULT_IS_ADDED;
        memcpy(buf, &q, sizeof q);
    }
    return off;
}

/* ------------------------------------------------------------------------ */
/* the entry points                                                          */

static bench_session *bench_session_find_L(uintptr_t id)
{
    for (bench_session *s = bench.sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static bench_lookup *bench_lookup_find_L(uintptr_t handle)
{
    for (bench_lookup *l = bench.lookups; l; l = l->next)
        if (l->handle == handle)
            return l;
    return NULL;
}

static INT WSAAPI bench_startup(LPGUID lpProviderId, LPVOID *ppvClientSessionArg)
{
    (void)lpProviderId;
    if (!ppvClientSessionArg)
        return bench_fail(WSAEINVAL);
    bench_session *s = calloc(1, sizeof *s);
    if (!s)
        return bench_fail(WSA_NOT_ENOUGH_MEMORY);
    nspv2_mutex_lock(&bench.lock);
    do
        s->id = ++bench.next_session;
    while (s->id == 0 || bench_session_find_L(s->id));
    s->next = bench.sessions;
    bench.sessions = s;
    nspv2_mutex_unlock(&bench.lock);
    *ppvClientSessionArg = (LPVOID)s->id;
    return NO_ERROR;
}

static bench_session *bench_session_take(LPVOID arg)
{
    bench_session *found = NULL;
    nspv2_mutex_lock(&bench.lock);
    for (bench_session **pp = &bench.sessions; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == (uintptr_t)arg) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    nspv2_mutex_unlock(&bench.lock);
    return found;
}

static INT WSAAPI bench_cleanup(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    bench_session *s = bench_session_take(pvClientSessionArg);
    if (!s)
        return bench_fail(WSAEINVAL);
    free(s);
    return NO_ERROR;
}

static VOID WSAAPI bench_rundown(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    free(bench_session_take(pvClientSessionArg));
}

static INT WSAAPI bench_begin(LPGUID lpProviderId, LPWSAQUERYSET2W lpqsRestrictions,
                              DWORD dwControlFlags, LPVOID lpvClientSessionArg,
                              LPHANDLE lphLookup)
{
    (void)lpProviderId;
    if (!lphLookup || !lpqsRestrictions || lpqsRestrictions->dwSize < sizeof(WSAQUERYSET2W))
        return bench_fail(WSAEINVAL);
    if (lpqsRestrictions->dwNameSpace != NS_EMAIL && lpqsRestrictions->dwNameSpace != NS_ALL)
        return bench_fail(WSAEINVAL);
    const WCHAR *name = lpqsRestrictions->lpszServiceInstanceName;
    if (!name)
        return bench_fail(WSAEINVAL);
    size_t len = 0;
    while (name[len])
        len++;
    bench_lookup *l = malloc(sizeof *l + (len + 1) * sizeof(WCHAR));
    if (!l)
        return bench_fail(WSA_NOT_ENOUGH_MEMORY);
    memcpy(l->name, name, (len + 1) * sizeof(WCHAR));
    l->len = len;
    l->flags = dwControlFlags;
    l->state = BENCH_PENDING;
    l->need = bench_layout(l->name, len, dwControlFlags, NULL);

    nspv2_mutex_lock(&bench.lock);
    bench_session *s = bench_session_find_L((uintptr_t)lpvClientSessionArg);
    if (!s) {
        nspv2_mutex_unlock(&bench.lock);
        free(l);
        return bench_fail(WSAEINVAL);
    }
    s->lookups++;
    do
        l->handle = ++bench.next_handle;
    while (l->handle == 0 || bench_lookup_find_L(l->handle));
    l->next = bench.lookups;
    bench.lookups = l;
    nspv2_mutex_unlock(&bench.lock);
    *lphLookup = (HANDLE)l->handle;
    return NO_ERROR;
}

static VOID WSAAPI bench_next_ex(HANDLE hAsyncCall, HANDLE hLookup, DWORD dwControlFlags,
                                 LPDWORD lpdwBufferLength, LPWSAQUERYSET2W lpqsResults)
{
    INT code = NO_ERROR;
    nspv2_mutex_lock(&bench.lock);
    bench_lookup *l = bench_lookup_find_L((uintptr_t)hLookup);
    if (!l) {
        code = WSA_INVALID_HANDLE;
    } else if (!lpdwBufferLength) {
        code = WSAEINVAL;
    } else {
        /* the one result is held until it fits; LUP_FLUSHPREVIOUS drops a
         * held result (one never offered is not "previous") */
        if ((dwControlFlags & LUP_FLUSHPREVIOUS) && l->state == BENCH_HELD)
            l->state = BENCH_DONE;
        if (l->state == BENCH_DONE) {
            code = WSA_E_NO_MORE;
        } else if (*lpdwBufferLength < l->need) {
            *lpdwBufferLength = (DWORD)l->need;
            l->state = BENCH_HELD;
            code = WSAEFAULT;
        } else if (!lpqsResults || (uintptr_t)lpqsResults % sizeof(void *) != 0) {
            code = WSAEINVAL;
        } else {
            memset(lpqsResults, 0, l->need);
            bench_layout(l->name, l->len, l->flags, (unsigned char *)lpqsResults);
            l->state = BENCH_DONE;
        }
    }
    nspv2_mutex_unlock(&bench.lock);
    WSAProviderCompleteAsyncCall(hAsyncCall, code); /* no lock held */
}

static INT WSAAPI bench_end(HANDLE hLookup)
{
    bench_lookup *found = NULL;
    nspv2_mutex_lock(&bench.lock);
    for (bench_lookup **pp = &bench.lookups; *pp; pp = &(*pp)->next) {
        if ((*pp)->handle == (uintptr_t)hLookup) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    nspv2_mutex_unlock(&bench.lock);
    if (!found)
        return bench_fail(WSA_INVALID_HANDLE);
    free(found);
    return NO_ERROR;
}

static VOID WSAAPI bench_set_service_ex(HANDLE hAsyncCall, LPGUID lpProviderId,
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

NSPV2_HOST_API void nspv2_bench_provider_routine(NSPV2_ROUTINE *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->cbSize = sizeof(NSPV2_ROUTINE);
    out->dwMajorVersion = 1;
    out->dwMinorVersion = 1;
    NSPV2_SLOT(*out, NSPv2Startup, bench_startup);
    NSPV2_SLOT(*out, NSPv2Cleanup, bench_cleanup);
    NSPV2_SLOT(*out, NSPv2LookupServiceBegin, bench_begin);
    NSPV2_SLOT(*out, NSPv2LookupServiceNextEx, bench_next_ex);
    NSPV2_SLOT(*out, NSPv2LookupServiceEnd, bench_end);
    NSPV2_SLOT(*out, NSPv2SetServiceEx, bench_set_service_ex);
    NSPV2_SLOT(*out, NSPv2ClientSessionRundown, bench_rundown);
}
