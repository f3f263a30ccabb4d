/*
 * broken_provider.c - a small, self-contained NS_EMAIL provider in C, right
 * as built (like tests/broken_providers.py's Good) and wrong in one way with
 * one of these defined:
 *
 *   BREAK_OVERRUN            NextEx writes 16 bytes past *lpdwBufferLength
 *   BREAK_WRONG_SIZE         a short buffer is told 8 bytes too few
 *   BREAK_END_FREES_TWICE    End frees the lookup but leaves its handle
 *                            known: a second End frees it again (glibc aborts)
 *   BREAK_NO_COMPLETION      the process's first NextEx is never completed
 *   BREAK_DOUBLE_COMPLETION  the process's first NextEx is completed twice
 *   BREAK_BAD_BLOB           the install blob's first domain is misaligned
 *                            and its last domain's next offset is not 0
 *   BREAK_NO_LAST_ERROR      Begin and End fail without WSASetLastError
 *   BREAK_CRASH_IN_NEXT      NextEx writes through a NULL pointer
 *
 * The provider: any name gives one result (that name), "*@..." gives two
 * (one@example.com, two@example.com), each with the comment MISTATUS_ONLINE,
 * one CS address (192.0.2.1:5060) and an 8-byte blob, as the LUP_RETURN_*
 * flags of Begin ask. SetServiceEx signs names in (REGISTER) and out
 * (DEREGISTER, DELETE). main() installs it for NS_EMAIL with its blob,
 * advertises it and runs until a console event.
 *
 * Built with `cc -std=c11 -Wall -Wextra -Werror -shared -fPIC
 * $(nspv2 config --cflags --libs) broken_provider.c [-DBREAK_...]`.
 */
#define _POSIX_C_SOURCE 200809L
#include "nspv2_host.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const nspv2_check_queries[] = {"one@example.com", "*@example.com", NULL};
const char *const nspv2_check_registrations[] = {"signin@example.com", NULL};

/* {aaaaaaaa-0000-4000-8000-0000000000c1} */
static const GUID provider_id = {
    0xaaaaaaaa, 0x0000, 0x4000, {0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc1}};

#define MAX_NAME 256
static const char *const wildcard_results[] = {"one@example.com", "two@example.com"};

typedef struct lookup {
    WCHAR name[MAX_NAME]; /* the exact name asked, or "" for a wildcard */
    /* (after name: what free() overwrites first is not the list links, so
     * BREAK_END_FREES_TWICE reaches the second free) */
    struct lookup *next;
    uintptr_t handle;
    DWORD flags;
    int wildcard;
    size_t pos, count;
    int held; /* the result at pos did not fit last time */
} lookup;

typedef struct registration {
    struct registration *next;
    WCHAR name[MAX_NAME];
} registration;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static lookup *lookups;
static registration *registrations;
static uintptr_t next_token = 1;
static unsigned next_ex_calls;

static INT fail(int err)
{
#ifndef BREAK_NO_LAST_ERROR
    WSASetLastError(err);
#else
    (void)err;
#endif
    return SOCKET_ERROR;
}

/* Length of a WCHAR string up to MAX_NAME - 1; -1 if longer or NULL. */
static long wlen(const WCHAR *s)
{
    if (!s)
        return -1;
    for (long n = 0; n < MAX_NAME; n++)
        if (!s[n])
            return n;
    return -1;
}

static void ascii_to_w(WCHAR *out, const char *s)
{
    while ((*out++ = (WCHAR)(unsigned char)*s++) != 0) {
    }
}

/* Winsock's rules for a restrictions / registration query set. */
static int check_query_set(const WSAQUERYSET2W *q)
{
    if (!q || q->dwSize < sizeof(WSAQUERYSET2W))
        return WSAEINVAL;
    if (q->dwNameSpace != NS_EMAIL && q->dwNameSpace != NS_ALL)
        return WSAEINVAL;
    if (q->dwNumberOfProtocols && !q->lpafpProtocols)
        return WSAEINVAL;
    if (q->dwNumberOfCsAddrs && !q->lpcsaBuffer)
        return WSAEINVAL;
    for (DWORD i = 0; i < q->dwNumberOfCsAddrs; i++)
        if (q->lpcsaBuffer[i].LocalAddr.iSockaddrLength < 0 ||
            q->lpcsaBuffer[i].RemoteAddr.iSockaddrLength < 0)
            return WSAEINVAL;
    if (wlen(q->lpszServiceInstanceName) <= 0)
        return WSAEINVAL;
    return NO_ERROR;
}

static INT WSAAPI good_startup(LPGUID lpProviderId, LPVOID *ppvClientSessionArg)
{
    (void)lpProviderId;
    if (!ppvClientSessionArg)
        return fail(WSAEINVAL);
    pthread_mutex_lock(&lock);
    *ppvClientSessionArg = (LPVOID)next_token++;
    pthread_mutex_unlock(&lock);
    return NO_ERROR;
}

static INT WSAAPI good_cleanup(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    (void)pvClientSessionArg;
    return NO_ERROR;
}

static VOID WSAAPI good_rundown(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    (void)pvClientSessionArg;
}

static INT WSAAPI good_begin(LPGUID lpProviderId, LPWSAQUERYSET2W lpqsRestrictions,
                             DWORD dwControlFlags, LPVOID lpvClientSessionArg, LPHANDLE lphLookup)
{
    (void)lpProviderId;
    (void)lpvClientSessionArg;
    if (!lphLookup || check_query_set(lpqsRestrictions) != NO_ERROR)
        return fail(WSAEINVAL);
    lookup *l = calloc(1, sizeof *l);
    if (!l)
        return fail(WSA_NOT_ENOUGH_MEMORY);
    const WCHAR *name = lpqsRestrictions->lpszServiceInstanceName;
    l->flags = dwControlFlags;
    l->wildcard = name[0] == '*';
    l->count = l->wildcard ? 2 : 1;
    if (!l->wildcard)
        memcpy(l->name, name, ((size_t)wlen(name) + 1) * sizeof(WCHAR));
    pthread_mutex_lock(&lock);
    l->handle = next_token++;
    l->next = lookups;
    lookups = l;
    *lphLookup = (HANDLE)l->handle;
    pthread_mutex_unlock(&lock);
    return NO_ERROR;
}

static size_t align_up(size_t at, size_t a) { return (at + a - 1) & ~(a - 1); }

/* Lays result `name` out at buf (NULL: only sizes it); returns the size. */
static size_t layout(const WCHAR *name, DWORD flags, unsigned char *buf)
{
    static const char comment[] = "MISTATUS_ONLINE";
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    size_t at = sizeof q;
    q.dwSize = sizeof q;
    q.dwNameSpace = NS_EMAIL;
    at = align_up(at, _Alignof(GUID));
    if (buf) {
        memcpy(buf + at, &provider_id, sizeof provider_id);
        q.lpNSProviderId = (LPGUID)(buf + at);
    }
    at += sizeof(GUID);
    if (flags & LUP_RETURN_ADDR) {
        size_t at_cs = align_up(at, _Alignof(CSADDR_INFO));
        size_t at_sa = align_up(at_cs + sizeof(CSADDR_INFO), _Alignof(SOCKADDR_IN));
        if (buf) {
            SOCKADDR_IN sa;
            CSADDR_INFO cs;
            memset(&sa, 0, sizeof sa);
            memset(&cs, 0, sizeof cs);
            sa.sin_family = NSPV2_AF_INET;
            memcpy(&sa.sin_port, "\x13\xc4", 2);         /* 5060, network order */
            memcpy(&sa.sin_addr, "\xc0\x00\x02\x01", 4); /* 192.0.2.1 */
            memcpy(buf + at_sa, &sa, sizeof sa);
            cs.RemoteAddr.lpSockaddr = (LPSOCKADDR)(buf + at_sa);
            cs.RemoteAddr.iSockaddrLength = (INT)sizeof sa;
            cs.iSocketType = 1; /* SOCK_STREAM */
            cs.iProtocol = 6;   /* IPPROTO_TCP */
            memcpy(buf + at_cs, &cs, sizeof cs);
            q.dwNumberOfCsAddrs = 1;
            q.lpcsaBuffer = (LPCSADDR_INFO)(buf + at_cs);
        }
        at = at_sa + sizeof(SOCKADDR_IN);
    }
    if (flags & LUP_RETURN_BLOB) {
        size_t at_blob = align_up(at, _Alignof(BLOB));
        size_t at_data = at_blob + sizeof(BLOB);
        if (buf) {
            BLOB b = {8, buf + at_data};
            memcpy(buf + at_blob, &b, sizeof b);
            memset(buf + at_data, 0, 8);
            q.lpBlob = (LPBLOB)(buf + at_blob);
        }
        at = at_data + 8;
    }
    if (flags & LUP_RETURN_NAME) {
        size_t n = (size_t)wlen(name) + 1;
        at = align_up(at, sizeof(WCHAR));
        if (buf) {
            memcpy(buf + at, name, n * sizeof(WCHAR));
            q.lpszServiceInstanceName = (LPWSTR)(buf + at);
        }
        at += n * sizeof(WCHAR);
    }
    if (flags & LUP_RETURN_COMMENT) {
        at = align_up(at, sizeof(WCHAR));
        if (buf) {
            ascii_to_w((WCHAR *)(buf + at), comment);
            q.lpszComment = (LPWSTR)(buf + at);
        }
        at += sizeof comment * sizeof(WCHAR);
    }
    if (buf)
        memcpy(buf, &q, sizeof q);
    return at;
}

static lookup *find_L(HANDLE h)
{
    for (lookup *l = lookups; l; l = l->next)
        if (l->handle == (uintptr_t)h)
            return l;
    return NULL;
}

static VOID WSAAPI good_next_ex(HANDLE hAsyncCall, HANDLE hLookup, DWORD dwControlFlags,
                                LPDWORD lpdwBufferLength, LPWSAQUERYSET2W lpqsResults)
{
    INT code = NO_ERROR;
    pthread_mutex_lock(&lock);
    unsigned call = next_ex_calls++;
    lookup *l = find_L(hLookup);
#ifdef BREAK_CRASH_IN_NEXT
    {
        int *volatile nowhere = NULL;
        *nowhere = 1;
    }
#endif
    if (!l) {
        code = WSA_INVALID_HANDLE;
    } else if (!lpdwBufferLength) {
        code = WSAEINVAL;
    } else {
        if ((dwControlFlags & LUP_FLUSHPREVIOUS) && l->held) {
            l->pos++; /* drop the result that did not fit */
            l->held = 0;
        }
        if (l->pos >= l->count) {
            code = WSA_E_NO_MORE;
        } else {
            WCHAR name[MAX_NAME];
            if (l->wildcard)
                ascii_to_w(name, wildcard_results[l->pos]);
            else
                memcpy(name, l->name, sizeof name);
            size_t need = layout(name, l->flags, NULL);
            if (*lpdwBufferLength < need) {
                *lpdwBufferLength = (DWORD)need;
#ifdef BREAK_WRONG_SIZE
                *lpdwBufferLength -= 8;
#endif
                l->held = 1;
                code = WSAEFAULT;
            } else if (!lpqsResults || (uintptr_t)lpqsResults % sizeof(void *) != 0) {
                code = WSAEINVAL; /* the layout needs a pointer-aligned buffer */
            } else {
                memset(lpqsResults, 0, need);
                layout(name, l->flags, (unsigned char *)lpqsResults);
#ifdef BREAK_OVERRUN
                memset((unsigned char *)lpqsResults + *lpdwBufferLength, 0x41, 16);
#endif
                l->pos++;
                l->held = 0;
            }
        }
    }
    pthread_mutex_unlock(&lock);
#ifdef BREAK_NO_COMPLETION
    if (call == 0)
        return;
#endif
    WSAProviderCompleteAsyncCall(hAsyncCall, code);
#ifdef BREAK_DOUBLE_COMPLETION
    if (call == 0)
        WSAProviderCompleteAsyncCall(hAsyncCall, code);
#endif
    (void)call;
}

static INT WSAAPI good_end(HANDLE hLookup)
{
    int found = 0;
    pthread_mutex_lock(&lock);
    for (lookup **pp = &lookups; *pp; pp = &(*pp)->next) {
        if ((*pp)->handle == (uintptr_t)hLookup) {
            lookup *l = *pp;
#ifndef BREAK_END_FREES_TWICE
            *pp = l->next;
#endif
            free(l);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return found ? NO_ERROR : fail(WSA_INVALID_HANDLE);
}

static int set_service(const WSAQUERYSET2W *q, WSAESETSERVICEOP op)
{
    if (check_query_set(q) != NO_ERROR)
        return WSAEINVAL;
    const WCHAR *name = q->lpszServiceInstanceName;
    size_t bytes = ((size_t)wlen(name) + 1) * sizeof(WCHAR);
    int code = NO_ERROR;
    pthread_mutex_lock(&lock);
    registration **pp = &registrations;
    while (*pp && memcmp((*pp)->name, name, bytes) != 0)
        pp = &(*pp)->next;
    if (op == RNRSERVICE_REGISTER) {
        if (!*pp) {
            registration *r = calloc(1, sizeof *r);
            if (r) {
                memcpy(r->name, name, bytes);
                r->next = registrations;
                registrations = r;
            } else {
                code = WSA_NOT_ENOUGH_MEMORY;
            }
        }
    } else if (op == RNRSERVICE_DEREGISTER || op == RNRSERVICE_DELETE) {
        if (*pp) {
            registration *r = *pp;
            *pp = r->next;
            free(r);
        } else {
            code = WSASERVICE_NOT_FOUND;
        }
    } else {
        code = WSAEINVAL;
    }
    pthread_mutex_unlock(&lock);
    return code;
}

static VOID WSAAPI good_set_service_ex(HANDLE hAsyncCall, LPGUID lpProviderId,
                                       LPWSAQUERYSET2W lpqsRegInfo, WSAESETSERVICEOP essOperation,
                                       DWORD dwControlFlags, LPVOID lpvClientSessionArg)
{
    (void)lpProviderId;
    (void)dwControlFlags;
    (void)lpvClientSessionArg;
    WSAProviderCompleteAsyncCall(hAsyncCall, set_service(lpqsRegInfo, essOperation));
}

/* ---- the provider process --------------------------------------------------- */

/* NAPI_PROVIDER_INSTALLATION_BLOB for one domain, example.com. */
static DWORD blob_words[16];

static DWORD build_blob(void)
{
    static const char domain[] = "example.com";
    unsigned char *blob = (unsigned char *)blob_words;
    NAPI_PROVIDER_INSTALLATION_BLOB h = {1, ProviderType_Application, 0, 1, 0};
    NAPI_DOMAIN_DESCRIPTION_BLOB d = {ProviderLevel_Primary, sizeof domain - 1, 0, 0};
#ifndef BREAK_BAD_BLOB
    h.OffsetFirstDomain = sizeof h; /* 20: a multiple of 4 */
#else
    h.OffsetFirstDomain = sizeof h + 2; /* 22: misaligned */
    d.OffsetNextDomainDescription = sizeof h; /* the last domain's next is not 0 */
#endif
    d.OffsetThisDomainName = h.OffsetFirstDomain + sizeof d;
    memset(blob_words, 0, sizeof blob_words);
    memcpy(blob, &h, sizeof h);
    memcpy(blob + h.OffsetFirstDomain, &d, sizeof d);
    ascii_to_w((WCHAR *)(void *)(blob + d.OffsetThisDomainName), domain);
    return (d.OffsetThisDomainName + (DWORD)sizeof domain * 2 + 3u) & ~3u;
}

static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop;

static BOOL WINAPI on_console_event(DWORD ctrl_type)
{
    (void)ctrl_type;
    pthread_mutex_lock(&stop_lock);
    stop = 1;
    pthread_cond_broadcast(&stop_cond);
    pthread_mutex_unlock(&stop_lock);
    return 1;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    WSADATA wsa;
    NSPV2_ROUTINE r;
    GUID id = provider_id;
    WCHAR identifier[] = {'b', 'r', 'o', 'k', 'e', 'n', 0};
    BLOB info;
    int installed;

    if (WSAStartup(0x0202, &wsa) != 0)
        return 1;
    stop = 0;
    SetConsoleCtrlHandler(on_console_event, 1);
    info.cbSize = build_blob();
    info.pBlobData = (BYTE *)blob_words;
    installed = WSCInstallNameSpaceEx(identifier, NULL, NS_EMAIL, 1, &id, &info) == NO_ERROR;

    memset(&r, 0, sizeof r);
    r.cbSize = sizeof r;
    r.dwMajorVersion = 1;
    r.dwMinorVersion = 1;
    r.NSPv2Startup = good_startup;
    r.NSPv2Cleanup = good_cleanup;
    r.NSPv2LookupServiceBegin = good_begin;
    r.NSPv2LookupServiceNextEx = good_next_ex;
    r.NSPv2LookupServiceEnd = good_end;
    r.NSPv2SetServiceEx = good_set_service_ex;
    r.NSPv2ClientSessionRundown = good_rundown;
    if (WSAAdvertiseProvider(&id, &r) != NO_ERROR) {
        fprintf(stderr, "broken_provider: WSAAdvertiseProvider failed: %d\n", WSAGetLastError());
        SetConsoleCtrlHandler(on_console_event, 0);
        WSACleanup();
        return 1;
    }

    pthread_mutex_lock(&stop_lock);
    while (!stop)
        pthread_cond_wait(&stop_cond, &stop_lock);
    pthread_mutex_unlock(&stop_lock);

    WSAUnadvertiseProvider(&id);
    if (installed)
        WSCUnInstallNameSpace(&id);
    SetConsoleCtrlHandler(on_console_event, 0);
    WSACleanup();
    return 0;
}
