/*
 * host_tests.c - tests of the native NSPv2 host and the C reference
 * provider. Built together with src/host.c and src/ref_provider.c (see the
 * Makefile); prints one line per failed check and a summary, exits non-zero
 * on any failure.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_host.h"
#include "nspv2_ref_provider.h"

#include "platform.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* checks                                                                    */

static unsigned long checks_run, checks_failed;
static const char *current_test = "";

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks_run++;                                                                     \
        if (!(cond)) {                                                                    \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s\n", current_test, __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

/* expr must return SOCKET_ERROR with WSAGetLastError() == err */
#define CHECK_ERR(expr, err)                                                              \
    do {                                                                                  \
        checks_run++;                                                                     \
        INT r_ = (expr);                                                                  \
        int e_ = WSAGetLastError();                                                       \
        if (r_ != SOCKET_ERROR || e_ != (err)) {                                          \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s -> %d, last error %d, expected %d\n", current_test, \
                   __FILE__, __LINE__, #expr, (int)r_, e_, (int)(err));                   \
        }                                                                                 \
    } while (0)

#define CHECK_OK(expr)                                                                    \
    do {                                                                                  \
        checks_run++;                                                                     \
        INT r_ = (expr);                                                                  \
        if (r_ != NO_ERROR) {                                                             \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s -> %d, last error %d\n", current_test, __FILE__,   \
                   __LINE__, #expr, (int)r_, WSAGetLastError());                          \
        }                                                                                 \
    } while (0)

#define TEST(name) static void name(void)
#define RUN(name)                                                                         \
    do {                                                                                  \
        unsigned long before_ = checks_failed;                                            \
        current_test = #name;                                                             \
        name();                                                                           \
        printf("%s %s\n", checks_failed == before_ ? "ok  " : "FAILED", #name);           \
        fflush(stdout);                                                                   \
    } while (0)

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* A UTF-16 copy of an ASCII string (static storage, a few at a time). */
static WCHAR *W(const char *s)
{
    static WCHAR pool[8][128];
    static unsigned next;
    WCHAR *w = pool[next++ % 8];
    size_t i = 0;
    for (; s[i] && i < 127; i++)
        w[i] = (WCHAR)(unsigned char)s[i];
    w[i] = 0;
    return w;
}

static int wstr_is(const WCHAR *w, const char *s)
{
    if (!w)
        return 0;
    for (; *s; w++, s++)
        if (*w != (WCHAR)(unsigned char)*s)
            return 0;
    return *w == 0;
}

static WSAQUERYSETW query(DWORD ns, const GUID *provider, const char *name)
{
    WSAQUERYSETW q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = ns;
    q.lpNSProviderId = (LPGUID)provider;
    q.lpszServiceInstanceName = name ? W(name) : NULL;
    return q;
}

static nspv2_host_stats stats(void)
{
    nspv2_host_stats s;
    nspv2_host_stats_get(&s);
    return s;
}

static int in_buffer(const void *p, size_t len, const void *buf, size_t size)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)buf;
    return a >= b && a <= b + size && len <= b + size - a;
}

static void advertise_ref(void)
{
    NSPV2_ROUTINE r;
    nspv2_ref_provider_routine(&r);
    CHECK_OK(WSAAdvertiseProvider(&nspv2_ref_provider_id, &r));
}

/* Buffer aligned like Winsock's, with 64 canary bytes after `size`. */
typedef union {
    WSAQUERYSETW qs;
    unsigned char bytes[4096 + 64];
} result_buf;

/* ------------------------------------------------------------------------ */
/* a test provider whose behaviour the tests choose                          */

static const GUID tp_id = {0x74657374, 0x0001, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 1}};
static const GUID tp_fail_id = {0x74657374, 0x0002, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 2}};
static const GUID tp_silent_id = {0x74657374, 0x0003, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 3}};
#define TP_NAMESPACE NS_NLA

enum tp_mode {
    TP_SYNC,     /* complete at once: tp_results results, then WSA_E_NO_MORE */
    TP_DEFER,    /* do not complete; publish the async handle in tp.deferred */
    TP_ASYNC,    /* like TP_SYNC, but the completer thread completes later */
    TP_DOUBLE,   /* complete twice; keep the second outcome */
    TP_OVERRUN,  /* write 16 bytes past the buffer, then complete NO_ERROR */
    TP_BADPTR,   /* a pointer outside the buffer */
    TP_BADCOUNT, /* a CSADDR_INFO count running past the buffer */
};

#define TP_QUEUE 1024
typedef struct tp_session {
    int cleanups, rundowns;
} tp_session;

static struct {
    nspv2_mutex lock;
    int mode;
    int results;        /* results per lookup in TP_SYNC */
    HANDLE deferred;    /* TP_DEFER: the handle left pending */
    INT second_ret;     /* TP_DOUBLE */
    int second_err;
    int begins, ends, nexts;
    tp_session **sessions; /* every session argument ever handed out */
    int nsessions, capsessions;
    HANDLE queue[TP_QUEUE]; /* TP_ASYNC: calls for the completer thread */
    INT queue_code[TP_QUEUE];
    int qhead, qlen;
    int stop;
    int cursor[256];    /* results handed out per lookup handle */
    uintptr_t next_handle;
} tp = {.lock = NSPV2_MUTEX_INIT, .results = 1};

static void tp_set_mode(int mode)
{
    nspv2_mutex_lock(&tp.lock);
    tp.mode = mode;
    tp.deferred = NULL;
    nspv2_mutex_unlock(&tp.lock);
}

static HANDLE tp_wait_deferred(void)
{
    for (int i = 0; i < 2000; i++) {
        nspv2_mutex_lock(&tp.lock);
        HANDLE h = tp.deferred;
        nspv2_mutex_unlock(&tp.lock);
        if (h)
            return h;
        nspv2_sleep_ms(1);
    }
    return NULL;
}

static INT WSAAPI tp_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    tp_session *s = calloc(1, sizeof *s);
    if (!s)
        return SOCKET_ERROR;
    nspv2_mutex_lock(&tp.lock);
    if (tp.nsessions == tp.capsessions) {
        int ncap = tp.capsessions ? tp.capsessions * 2 : 64;
        tp_session **nl = realloc(tp.sessions, (size_t)ncap * sizeof *nl);
        if (!nl) {
            nspv2_mutex_unlock(&tp.lock);
            free(s);
            return SOCKET_ERROR;
        }
        tp.sessions = nl;
        tp.capsessions = ncap;
    }
    tp.sessions[tp.nsessions++] = s;
    nspv2_mutex_unlock(&tp.lock);
    *arg = s;
    return NO_ERROR;
}

static INT WSAAPI tp_cleanup(LPGUID id, LPVOID arg)
{
    (void)id;
    nspv2_mutex_lock(&tp.lock);
    ((tp_session *)arg)->cleanups++;
    nspv2_mutex_unlock(&tp.lock);
    return NO_ERROR;
}

static VOID WSAAPI tp_rundown(LPGUID id, LPVOID arg)
{
    (void)id;
    nspv2_mutex_lock(&tp.lock);
    ((tp_session *)arg)->rundowns++;
    nspv2_mutex_unlock(&tp.lock);
}

static INT WSAAPI tp_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg, LPHANDLE h)
{
    (void)id;
    (void)qs;
    (void)flags;
    (void)arg;
    nspv2_mutex_lock(&tp.lock);
    tp.begins++;
    uintptr_t v = ++tp.next_handle;
    tp.cursor[v % 256] = 0;
    nspv2_mutex_unlock(&tp.lock);
    *h = (HANDLE)v;
    return NO_ERROR;
}

static INT WSAAPI tp_end(HANDLE h)
{
    (void)h;
    nspv2_mutex_lock(&tp.lock);
    tp.ends++;
    nspv2_mutex_unlock(&tp.lock);
    return NO_ERROR;
}

/* A result with a name ("tp") and one AFPROTOCOLS entry. */
static DWORD tp_pack(unsigned char *buf, DWORD len, int index)
{
    size_t need = sizeof(WSAQUERYSET2W) + 8 * sizeof(WCHAR) + sizeof(AFPROTOCOLS);
    if (len < need)
        return (DWORD)need;
    WSAQUERYSET2W *q = (WSAQUERYSET2W *)(void *)buf;
    memset(buf, 0, need);
    q->dwSize = sizeof *q;
    q->dwNameSpace = TP_NAMESPACE;
    WCHAR *name = (WCHAR *)(void *)(buf + sizeof *q);
    name[0] = 't';
    name[1] = 'p';
    name[2] = (WCHAR)('0' + index);
    name[3] = 0;
    q->lpszServiceInstanceName = name;
    AFPROTOCOLS *afp = (AFPROTOCOLS *)(void *)(buf + sizeof *q + 8 * sizeof(WCHAR));
    afp->iAddressFamily = NSPV2_AF_INET6;
    afp->iProtocol = 17;
    q->dwNumberOfProtocols = 1;
    q->lpafpProtocols = afp;
    return 0;
}

static VOID WSAAPI tp_next_ex(HANDLE async, HANDLE h, DWORD flags, LPDWORD len,
                              LPWSAQUERYSET2W qs)
{
    (void)flags;
    unsigned char *buf = (unsigned char *)qs;
    nspv2_mutex_lock(&tp.lock);
    int mode = tp.mode;
    tp.nexts++;
    if (mode == TP_DEFER)
        tp.deferred = async;
    int *cursor = &tp.cursor[(uintptr_t)h % 256];
    int results = tp.results;
    nspv2_mutex_unlock(&tp.lock);

    switch (mode) {
    case TP_DEFER:
        return; /* someone else completes, or nobody */
    case TP_DOUBLE: {
        WSAProviderCompleteAsyncCall(async, WSATRY_AGAIN);
        INT r = WSAProviderCompleteAsyncCall(async, NO_ERROR);
        int e = WSAGetLastError();
        nspv2_mutex_lock(&tp.lock);
        tp.second_ret = r;
        tp.second_err = e;
        nspv2_mutex_unlock(&tp.lock);
        return;
    }
    case TP_OVERRUN:
        memset(buf, 0x5a, (size_t)*len + 16);
        WSAProviderCompleteAsyncCall(async, NO_ERROR);
        return;
    case TP_BADPTR:
    case TP_BADCOUNT: {
        static WCHAR outside[] = {'x', 0};
        if (tp_pack(buf, *len, 0) != 0) {
            WSAProviderCompleteAsyncCall(async, WSAEFAULT);
            return;
        }
        if (mode == TP_BADPTR)
            qs->lpszComment = outside;
        else
            qs->dwNumberOfProtocols = 100000;
        WSAProviderCompleteAsyncCall(async, NO_ERROR);
        return;
    }
    default:
        break;
    }
    INT code = NO_ERROR;
    nspv2_mutex_lock(&tp.lock);
    if (*cursor >= results) {
        code = WSA_E_NO_MORE;
    } else {
        DWORD need = tp_pack(buf, *len, *cursor);
        if (need) {
            *len = need;
            code = WSAEFAULT;
        } else {
            (*cursor)++;
        }
    }
    if (mode == TP_ASYNC && tp.qlen < TP_QUEUE) {
        int slot = (tp.qhead + tp.qlen++) % TP_QUEUE;
        tp.queue[slot] = async;
        tp.queue_code[slot] = code;
        nspv2_mutex_unlock(&tp.lock);
        return;
    }
    nspv2_mutex_unlock(&tp.lock);
    WSAProviderCompleteAsyncCall(async, code);
}

/* TP_ASYNC: completes queued calls from its own thread until tp.stop. */
static void tp_completer_main(void *p)
{
    (void)p;
    for (;;) {
        nspv2_mutex_lock(&tp.lock);
        int stop = tp.stop && tp.qlen == 0;
        HANDLE h = NULL;
        INT code = 0;
        if (tp.qlen) {
            h = tp.queue[tp.qhead];
            code = tp.queue_code[tp.qhead];
            tp.qhead = (tp.qhead + 1) % TP_QUEUE;
            tp.qlen--;
        }
        nspv2_mutex_unlock(&tp.lock);
        if (stop)
            return;
        if (h)
            WSAProviderCompleteAsyncCall(h, code);
        else
            nspv2_sleep_ms(0);
    }
}

static VOID WSAAPI tp_set_service_ex(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                     WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)id;
    (void)qs;
    (void)op;
    (void)flags;
    (void)arg;
    WSAProviderCompleteAsyncCall(async, NO_ERROR);
}

static NSPV2_ROUTINE tp_routine(void)
{
    NSPV2_ROUTINE r;
    memset(&r, 0, sizeof r);
    r.cbSize = sizeof r;
    r.dwMajorVersion = 1;
    r.dwMinorVersion = 1;
    NSPV2_SLOT(r, NSPv2Startup, tp_startup);
    NSPV2_SLOT(r, NSPv2Cleanup, tp_cleanup);
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, tp_begin);
    NSPV2_SLOT(r, NSPv2LookupServiceNextEx, tp_next_ex);
    NSPV2_SLOT(r, NSPv2LookupServiceEnd, tp_end);
    NSPV2_SLOT(r, NSPv2SetServiceEx, tp_set_service_ex);
    NSPV2_SLOT(r, NSPv2ClientSessionRundown, tp_rundown);
    return r;
}

static void advertise_tp(void)
{
    NSPV2_ROUTINE r = tp_routine();
    CHECK_OK(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), TP_NAMESPACE, 1, (LPGUID)&tp_id, NULL));
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
}

static void tp_reset(void)
{
    nspv2_mutex_lock(&tp.lock);
    for (int i = 0; i < tp.nsessions; i++)
        free(tp.sessions[i]);
    free(tp.sessions);
    tp.sessions = NULL;
    tp.nsessions = tp.capsessions = 0;
    tp.qhead = tp.qlen = 0;
    tp.stop = 0;
    tp.mode = TP_SYNC;
    tp.results = 1;
    tp.deferred = NULL;
    tp.begins = tp.ends = tp.nexts = 0;
    nspv2_mutex_unlock(&tp.lock);
}

/* every test starts from an empty host */
static void fresh(void)
{
    nspv2_host_reset();
    nspv2_host_stats_reset();
    nspv2_host_set_timeout_ms(5000);
    tp_reset();
}

/* ------------------------------------------------------------------------ */
/* advertise / unadvertise                                                   */

static INT WSAAPI fail_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    (void)arg;
    WSASetLastError(WSAEACCES);
    return SOCKET_ERROR;
}

static INT WSAAPI silent_fail_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    (void)arg;
    return SOCKET_ERROR; /* sets no error */
}

TEST(test_advertise_validation)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    CHECK_ERR(WSAAdvertiseProvider(NULL, &r), WSAEFAULT);
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, NULL), WSAEINVAL);
    NSPV2_ROUTINE bad = r;
    bad.cbSize = sizeof bad - 1;
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &bad), WSAEINVAL);
    bad = r;
    bad.NSPv2LookupServiceBegin = NULL;
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &bad), WSAEINVAL);
    bad = r;
    bad.NSPv2LookupServiceNextEx = NULL;
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &bad), WSAEINVAL);
    bad = r;
    bad.NSPv2LookupServiceEnd = NULL;
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &bad), WSAEINVAL);
    CHECK(stats().providers == 0);

    /* optional slots may be NULL; a larger cbSize is fine */
    bad = r;
    bad.cbSize = sizeof bad + 16;
    bad.NSPv2Startup = NULL;
    bad.NSPv2Cleanup = NULL;
    bad.NSPv2SetServiceEx = NULL;
    bad.NSPv2ClientSessionRundown = NULL;
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &bad));
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &r), WSAEALREADY);
    CHECK(stats().providers == 1);
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    CHECK_ERR(WSAUnadvertiseProvider(&tp_id), WSAEINVAL);
    CHECK_ERR(WSAUnadvertiseProvider(&nspv2_ref_provider_id), WSAEINVAL);
    CHECK(stats().providers == 0);

    /* the table is copied: changing the caller's copy changes nothing */
    r = tp_routine();
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    memset(&r, 0, sizeof r);
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));

    /* namespaces: install, duplicate, uninstall */
    CHECK_OK(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), NS_DNS, 1, (LPGUID)&tp_id, NULL));
    CHECK_ERR(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), NS_DNS, 1, (LPGUID)&tp_id, NULL),
              WSAEALREADY);
    CHECK_ERR(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), NS_DNS, 1, NULL, NULL), WSAEFAULT);
    CHECK_OK(WSCUnInstallNameSpace((LPGUID)&tp_id));
    CHECK_ERR(WSCUnInstallNameSpace((LPGUID)&tp_id), WSAEINVAL);
}

TEST(test_startup_failure)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2Startup, fail_startup);
    CHECK_OK(WSAAdvertiseProvider(&tp_fail_id, &r));
    NSPV2_SLOT(r, NSPv2Startup, silent_fail_startup);
    CHECK_OK(WSAAdvertiseProvider(&tp_silent_id, &r));
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_ALL, &tp_fail_id, "x");
    HANDLE h;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSAEACCES);
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSAEACCES); /* tried again */
    q.lpNSProviderId = (LPGUID)&tp_silent_id;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSAEINVAL);
    CHECK(stats().startups == 3);
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().cleanups == 0); /* nothing started, nothing to clean */
    CHECK(tp.begins == 0);
}

/* ------------------------------------------------------------------------ */
/* sessions                                                                  */

TEST(test_sessions)
{
    fresh();
    advertise_tp();
    uint64_t a, b, c;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    CHECK_OK(nspv2_session_open(&c));
    CHECK(a >= 1 && b > a && c > b);
    CHECK(stats().sessions_open == 3);
    CHECK_ERR(nspv2_session_open(NULL), WSAEFAULT);

    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    /* a and b start the provider, twice each: one Startup per session */
    for (int i = 0; i < 2; i++) {
        CHECK_OK(nspv2_lookup_begin(a, &q, 0, &h));
        CHECK_OK(nspv2_lookup_end(h));
        CHECK_OK(nspv2_lookup_begin(b, &q, 0, &h));
        CHECK_OK(nspv2_lookup_end(h));
    }
    CHECK(stats().startups == 2);
    CHECK(tp.nsessions == 2);

    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_abandon(b));
    CHECK_OK(nspv2_session_close(c)); /* never started: nothing to end */
    CHECK_ERR(nspv2_session_close(a), WSAEINVAL);
    CHECK_ERR(nspv2_session_abandon(b), WSAEINVAL);
    CHECK_ERR(nspv2_session_close(0), WSAEINVAL);
    CHECK_ERR(nspv2_session_close(987654321), WSAEINVAL);
    CHECK_ERR(nspv2_lookup_begin(a, &q, 0, &h), WSAEINVAL);

    nspv2_host_stats st = stats();
    CHECK(st.cleanups == 1 && st.rundowns == 1 && st.sessions_open == 0);
    CHECK(tp.sessions[0]->cleanups == 1 && tp.sessions[0]->rundowns == 0);
    CHECK(tp.sessions[1]->cleanups == 0 && tp.sessions[1]->rundowns == 1);

    /* ids are never reused */
    uint64_t d;
    CHECK_OK(nspv2_session_open(&d));
    CHECK(d > c);
    /* closing a session ends its open lookups first */
    CHECK_OK(nspv2_lookup_begin(d, &q, 0, &h));
    int ends = tp.ends;
    CHECK(stats().lookups_open == 1);
    CHECK_OK(nspv2_session_close(d));
    CHECK(tp.ends == ends + 1);
    CHECK(stats().lookups_open == 0);
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK(tp.sessions[2]->cleanups == 1 && tp.sessions[2]->rundowns == 0);
}

TEST(test_unadvertise_with_sessions)
{
    fresh();
    advertise_tp();
    advertise_ref();
    uint64_t s[3];
    HANDLE h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_OK(nspv2_session_open(&s[i]));
        WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
        CHECK_OK(nspv2_lookup_begin(s[i], &q, 0, &h[i]));
    }
    CHECK_OK(nspv2_lookup_end(h[0])); /* h[1], h[2] stay open */
    /* one of them also uses the reference provider */
    WSAQUERYSETW rq = query(NS_EMAIL, NULL, "alice@example.com");
    HANDLE rh;
    CHECK_OK(nspv2_lookup_begin(s[1], &rq, LUP_RETURN_ALL, &rh));
    int ends = tp.ends;

    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    nspv2_host_stats st = stats();
    CHECK(st.rundowns == 3);
    CHECK(st.providers == 1);
    CHECK(tp.ends == ends + 2); /* the two open lookups were ended */
    for (int i = 0; i < 3; i++)
        CHECK(tp.sessions[i]->rundowns == 1 && tp.sessions[i]->cleanups == 0);

    /* the client handles stay valid but have nothing left */
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h[1], 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h[1]));
    CHECK(tp.ends == ends + 2); /* not ended twice */
    /* the reference provider is untouched */
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(rh, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK_OK(nspv2_lookup_end(rh));

    /* closing the sessions now ends nothing more for the gone provider */
    for (int i = 0; i < 3; i++)
        CHECK_OK(nspv2_session_close(s[i]));
    st = stats();
    CHECK(st.rundowns == 3);
    CHECK(st.cleanups == 1); /* s[1]'s reference provider session */
    CHECK(st.sessions_open == 0 && st.lookups_open == 0);
    for (int i = 0; i < 3; i++)
        CHECK(tp.sessions[i]->rundowns == 1 && tp.sessions[i]->cleanups == 0);
}

/* ------------------------------------------------------------------------ */
/* async completion                                                          */

TEST(test_completion_errors)
{
    fresh();
    CHECK_ERR(WSAProviderCompleteAsyncCall(NULL, NO_ERROR), WSAEINVAL);
    CHECK_ERR(WSAProviderCompleteAsyncCall((HANDLE)(uintptr_t)0xdeadbeef, NO_ERROR), WSAEINVAL);

    advertise_tp();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    tp_set_mode(TP_DOUBLE);
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSATRY_AGAIN); /* the first counts */
    CHECK(tp.second_ret == SOCKET_ERROR && tp.second_err == WSAEINVAL);
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

typedef struct completer {
    uint32_t delay_ms;
    INT code;
    INT ret;
    int err;
} completer;

static void completer_main(void *p)
{
    completer *c = p;
    HANDLE h = tp_wait_deferred();
    nspv2_sleep_ms(c->delay_ms);
    c->ret = WSAProviderCompleteAsyncCall(h, c->code);
    c->err = c->ret ? WSAGetLastError() : 0;
}

TEST(test_completion_from_other_thread)
{
    fresh();
    advertise_tp();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    tp_set_mode(TP_DEFER);
    completer c = {50, WSATRY_AGAIN, -2, 0};
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, completer_main, &c) == 0);
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    uint64_t t0 = nspv2_now_ns();
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSATRY_AGAIN);
    uint64_t waited_ms = (nspv2_now_ns() - t0) / 1000000u;
    nspv2_thread_join(t);
    CHECK(c.ret == NO_ERROR);
    CHECK(waited_ms >= 40 && waited_ms < 4000);
    /* and again, this time completing with a real result */
    tp_set_mode(TP_DEFER);
    c.code = WSA_E_NO_MORE; /* -> the lookup ends: no other provider */
    CHECK(nspv2_thread_create(&t, completer_main, &c) == 0);
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    nspv2_thread_join(t);
    CHECK(c.ret == NO_ERROR);
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_timeout_and_late_completion)
{
    fresh();
    advertise_tp();
    nspv2_host_set_timeout_ms(100);
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    tp_set_mode(TP_DEFER);
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    uint64_t t0 = nspv2_now_ns();
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_CANCELLED);
    uint64_t waited_ms = (nspv2_now_ns() - t0) / 1000000u;
    CHECK(waited_ms >= 90 && waited_ms < 3000);
    CHECK(stats().async_pending == 0);
    HANDLE late = tp_wait_deferred();
    CHECK(late != NULL);
    CHECK_ERR(WSAProviderCompleteAsyncCall(late, NO_ERROR), WSAEINVAL);
    CHECK_ERR(WSAProviderCompleteAsyncCall(late, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 1);

    /* the lookup still works afterwards */
    tp_set_mode(TP_SYNC);
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

typedef struct next_runner {
    HANDLE h;
    INT ret;
    int err;
} next_runner;

static void next_runner_main(void *p)
{
    next_runner *n = p;
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    n->ret = nspv2_lookup_next(n->h, 0, &len, &buf.qs);
    n->err = n->ret ? WSAGetLastError() : 0;
}

TEST(test_end_races_next)
{
    fresh();
    advertise_tp();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    tp_set_mode(TP_DEFER);
    next_runner n = {h, 0, 0};
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, next_runner_main, &n) == 0);
    HANDLE pending = tp_wait_deferred();
    CHECK(pending != NULL);
    nspv2_sleep_ms(20);
    CHECK_OK(nspv2_lookup_end(h));
    nspv2_thread_join(t);
    CHECK(n.ret == SOCKET_ERROR && n.err == WSA_E_CANCELLED);
    CHECK_ERR(WSAProviderCompleteAsyncCall(pending, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 1);
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);

    /* the same with the session closed under the waiting next */
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    tp_set_mode(TP_DEFER);
    n.h = h;
    CHECK(nspv2_thread_create(&t, next_runner_main, &n) == 0);
    pending = tp_wait_deferred();
    nspv2_sleep_ms(20);
    CHECK_OK(nspv2_session_abandon(s));
    nspv2_thread_join(t);
    CHECK(n.ret == SOCKET_ERROR && n.err == WSA_E_CANCELLED);
    CHECK_ERR(WSAProviderCompleteAsyncCall(pending, NO_ERROR), WSAEINVAL);
    nspv2_host_stats st = stats();
    CHECK(st.rundowns == 1 && st.lookups_open == 0 && st.async_pending == 0);
}

/* ------------------------------------------------------------------------ */
/* lookups against the reference provider                                    */

static void check_blob(const BLOB *b, size_t entry)
{
    CHECK(b->cbSize == NSPV2_REF_BLOB_SIZE);
    int ok = b->pBlobData != NULL;
    for (size_t i = 0; ok && i < NSPV2_REF_BLOB_SIZE; i++)
        ok = b->pBlobData[i] == (unsigned char)(0x40u + entry * 0x10u + i);
    CHECK(ok);
}

/* Checks a full (LUP_RETURN_ALL) result for alice, all pointers inside
 * [buf, buf + size). */
static void check_alice(const WSAQUERYSETW *r, size_t size)
{
    const void *buf = r;
    CHECK(r->dwSize == sizeof(WSAQUERYSETW));
    CHECK(r->dwNameSpace == NS_EMAIL);
    CHECK(r->lpServiceClassId == NULL);
    CHECK(wstr_is(r->lpszServiceInstanceName, "alice@example.com"));
    CHECK(in_buffer(r->lpszServiceInstanceName, 36, buf, size));
    CHECK(wstr_is(r->lpszComment, "MISTATUS_ONLINE"));
    CHECK(in_buffer(r->lpszComment, 32, buf, size));
    CHECK(r->dwNumberOfCsAddrs == 2);
    CHECK(in_buffer(r->lpcsaBuffer, 2 * sizeof(CSADDR_INFO), buf, size));
    if (r->dwNumberOfCsAddrs == 2 && r->lpcsaBuffer) {
        const CSADDR_INFO *c = r->lpcsaBuffer;
        CHECK(c[0].iSocketType == 1 && c[0].iProtocol == 6);
        CHECK(c[0].LocalAddr.lpSockaddr == NULL);
        CHECK(c[0].RemoteAddr.iSockaddrLength == (INT)sizeof(SOCKADDR_IN));
        CHECK(in_buffer(c[0].RemoteAddr.lpSockaddr, sizeof(SOCKADDR_IN), buf, size));
        const SOCKADDR_IN *sin = (const SOCKADDR_IN *)(const void *)c[0].RemoteAddr.lpSockaddr;
        const unsigned char *a4 = (const unsigned char *)&sin->sin_addr;
        const unsigned char *p4 = (const unsigned char *)&sin->sin_port;
        CHECK(sin->sin_family == NSPV2_AF_INET);
        CHECK(a4[0] == 192 && a4[1] == 0 && a4[2] == 2 && a4[3] == 10);
        CHECK(p4[0] == (5061 >> 8) && p4[1] == (5061 & 0xff));
        CHECK(c[1].RemoteAddr.iSockaddrLength == (INT)sizeof(SOCKADDR_IN6));
        CHECK(in_buffer(c[1].RemoteAddr.lpSockaddr, sizeof(SOCKADDR_IN6), buf, size));
        const SOCKADDR_IN6 *sin6 =
            (const SOCKADDR_IN6 *)(const void *)c[1].RemoteAddr.lpSockaddr;
        const unsigned char *a6 = (const unsigned char *)&sin6->sin6_addr;
        CHECK(sin6->sin6_family == NSPV2_AF_INET6);
        CHECK(a6[0] == 0x20 && a6[1] == 0x01 && a6[2] == 0x0d && a6[3] == 0xb8 && a6[15] == 0x10);
    }
    CHECK(in_buffer(r->lpBlob, sizeof(BLOB), buf, size));
    if (r->lpBlob) {
        CHECK(in_buffer(r->lpBlob->pBlobData, NSPV2_REF_BLOB_SIZE, buf, size));
        check_blob(r->lpBlob, 0);
    }
}

TEST(test_ref_exact)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "Alice@Example.COM");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK(h != NULL);
    CHECK(stats().lookups_open == 1);
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_alice(&buf.qs, sizeof buf.bytes);
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_INVALID_HANDLE);
    CHECK_ERR(nspv2_lookup_end(NULL), WSA_INVALID_HANDLE);

    /* the same through lpNSProviderId, and through NS_ALL */
    q = query(NS_ALL, &nspv2_ref_provider_id, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_alice(&buf.qs, sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));

    /* only the requested fields */
    q = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK(buf.qs.lpszComment == NULL && buf.qs.dwNumberOfCsAddrs == 0 &&
          buf.qs.lpcsaBuffer == NULL && buf.qs.lpBlob == NULL);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_BLOB | LUP_RETURN_COMMENT, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 0);
    CHECK(wstr_is(buf.qs.lpszComment, "MISTATUS_ONLINE"));
    CHECK(buf.qs.lpBlob != NULL);
    if (buf.qs.lpBlob)
        check_blob(buf.qs.lpBlob, 0);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    nspv2_host_stats st = stats();
    CHECK(st.startups == 1 && st.cleanups == 1 && st.lookups_open == 0);
}

TEST(test_ref_wildcard)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@EXAMPLE.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    result_buf buf;
    const char *expected[] = {"alice@example.com", "bob@example.com"};
    const char *status[] = {"MISTATUS_ONLINE", "MISTATUS_BUSY"};
    for (int i = 0; i < 2; i++) {
        DWORD len = sizeof buf.bytes;
        CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, expected[i]));
        CHECK(wstr_is(buf.qs.lpszComment, status[i]));
        CHECK(buf.qs.dwNumberOfCsAddrs == 2);
        if (buf.qs.lpBlob)
            check_blob(buf.qs.lpBlob, (size_t)i);
    }
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));

    q = query(NS_EMAIL, NULL, "*@example.org");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "carol@example.org"));
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_begin_errors)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    HANDLE h;
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "nobody@example.com");
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
    q = query(NS_EMAIL, NULL, "*@example.net");
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
    q = query(NS_EMAIL, NULL, NULL);
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSAEINVAL); /* the provider's */
    /* host validation and routing */
    q = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_ERR(nspv2_lookup_begin(s, NULL, 0, &h), WSAEFAULT);
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, NULL), WSAEFAULT);
    q.dwSize = sizeof(WSAQUERYSETW) - 1;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSAEINVAL);
    q.dwSize = sizeof(WSAQUERYSETW);
    CHECK_ERR(nspv2_lookup_begin(s + 1000, &q, 0, &h), WSAEINVAL);
    q.dwNameSpace = NS_DNS;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    q.dwNameSpace = NS_DNS;
    q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    q.dwNameSpace = NS_EMAIL;
    q.lpNSProviderId = (LPGUID)&tp_id;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSAEINVAL);
    CHECK(stats().lookups_open == 0);
    /* next argument checks */
    result_buf buf;
    q = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK_ERR(nspv2_lookup_next(h, 0, NULL, &buf.qs), WSAEFAULT);
    DWORD len = 100;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, NULL), WSAEFAULT);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_every_buffer_size)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "alice@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    DWORD need = 0;
    CHECK_ERR(nspv2_lookup_next(h, 0, &need, NULL), WSAEFAULT);
    CHECK(need > sizeof(WSAQUERYSETW) && need < 4096);
    static result_buf buf;
    int sizes_ok = 1;
    for (DWORD size = 0; size < need; size++) {
        DWORD len = size;
        memset(buf.bytes, 0xee, sizeof buf.bytes);
        INT r = nspv2_lookup_next(h, 0, &len, size ? &buf.qs : NULL);
        if (r != SOCKET_ERROR || WSAGetLastError() != WSAEFAULT || len != need)
            sizes_ok = 0;
        for (size_t i = 0; i < sizeof buf.bytes; i++) /* nothing written */
            if (buf.bytes[i] != 0xee)
                sizes_ok = 0;
    }
    CHECK(sizes_ok);
    memset(buf.bytes, 0xee, sizeof buf.bytes);
    DWORD len = need;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_alice(&buf.qs, need);
    int tail_ok = 1;
    for (size_t i = need; i < sizeof buf.bytes; i++)
        if (buf.bytes[i] != 0xee)
            tail_ok = 0;
    CHECK(tail_ok); /* not a byte past the caller's length */
    len = need;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    printf("     required size for alice (LUP_RETURN_ALL): %lu bytes\n", (unsigned long)need);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_flush_previous)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    result_buf buf;
    DWORD len = 16;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSAEFAULT);
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, LUP_FLUSHPREVIOUS, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "bob@example.com")); /* alice dropped */
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    /* without a preceding WSAEFAULT, LUP_FLUSHPREVIOUS drops nothing */
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, LUP_FLUSHPREVIOUS, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ns_all_drains_in_order)
{
    fresh();
    advertise_ref();
    advertise_tp();
    nspv2_mutex_lock(&tp.lock);
    tp.results = 2;
    nspv2_mutex_unlock(&tp.lock);
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_ALL, NULL, "*@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    const char *expected[] = {"alice@example.com", "bob@example.com", "tp0", "tp1"};
    result_buf buf;
    for (int i = 0; i < 4; i++) {
        DWORD len = sizeof buf.bytes;
        CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, expected[i]));
    }
    /* tp's result carries an AFPROTOCOLS array, relocated too */
    CHECK(buf.qs.dwNumberOfProtocols == 1 && buf.qs.lpafpProtocols &&
          in_buffer(buf.qs.lpafpProtocols, sizeof(AFPROTOCOLS), buf.bytes, 4096) &&
          buf.qs.lpafpProtocols->iAddressFamily == NSPV2_AF_INET6 &&
          buf.qs.lpafpProtocols->iProtocol == 17);
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK(tp.ends == 1);
    /* a provider whose Begin fails is skipped while another succeeds */
    q = query(NS_ALL, NULL, "nobody@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().cleanups == 2);
}

TEST(test_winsock_named_calls)
{
    fresh();
    advertise_ref();
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "bob@example.com");
    HANDLE h;
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(WSALookupServiceBeginW(&q, LUP_RETURN_ALL, &h), WSANOTINITIALISED);
    CHECK_ERR(WSALookupServiceNextW(NULL, 0, &len, &buf.qs), WSANOTINITIALISED);
    CHECK_ERR(WSALookupServiceEnd(NULL), WSANOTINITIALISED);
    CHECK_ERR(WSASetServiceW(&q, RNRSERVICE_REGISTER, 0), WSANOTINITIALISED);
    CHECK_ERR(nspv2_session_enter(424242), WSAEINVAL);
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    CHECK_OK(nspv2_session_enter(s));
    CHECK_OK(WSALookupServiceBeginW(&q, LUP_RETURN_ALL, &h));
    CHECK_OK(WSALookupServiceNextW(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "bob@example.com"));
    len = sizeof buf.bytes;
    CHECK_ERR(WSALookupServiceNextW(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(WSALookupServiceEnd(h));
    CHECK_ERR(WSALookupServiceEnd(h), WSA_INVALID_HANDLE);
    CHECK_ERR(WSASetServiceW(&q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    CHECK_OK(nspv2_session_enter(0));
    CHECK_ERR(WSALookupServiceBeginW(&q, LUP_RETURN_ALL, &h), WSANOTINITIALISED);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_last_error_per_thread)
{
    WSASetLastError(1234);
    CHECK(WSAGetLastError() == 1234);
    nspv2_thread t;
    next_runner n = {(HANDLE)(uintptr_t)777777, 0, 0}; /* unknown handle in another thread */
    CHECK(nspv2_thread_create(&t, next_runner_main, &n) == 0);
    nspv2_thread_join(t);
    CHECK(n.ret == SOCKET_ERROR && n.err == WSA_INVALID_HANDLE);
    CHECK(WSAGetLastError() == 1234); /* untouched here */
}

/* ------------------------------------------------------------------------ */
/* faults, set service                                                       */

TEST(test_provider_faults)
{
    fresh();
    advertise_ref();
    advertise_tp();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    result_buf buf;
    int modes[] = {TP_OVERRUN, TP_BADPTR, TP_BADCOUNT};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
        tp_set_mode(modes[i]);
        DWORD len = 256;
        CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSANO_RECOVERY);
        CHECK(stats().provider_faults == (uint64_t)i + 1);
        tp_set_mode(TP_SYNC);
        CHECK_OK(nspv2_lookup_end(h));
    }
    /* the host keeps working, for tp and for the reference provider */
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    DWORD len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    WSAQUERYSETW rq = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &rq, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_alice(&buf.qs, sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().provider_faults == 3);
}

TEST(test_set_service)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "dave@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id;
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_DELETE, 0), WSAEOPNOTSUPP);
    CHECK_ERR(nspv2_set_service(s, NULL, RNRSERVICE_REGISTER, 0), WSAEFAULT);
    CHECK_ERR(nspv2_set_service(s, &q, (WSAESETSERVICEOP)7, 0), WSAEINVAL);
    CHECK_ERR(nspv2_set_service(s + 99, &q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    q = query(NS_DNS, NULL, "dave@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSASERVICE_NOT_FOUND);
    /* a provider that registers */
    advertise_tp();
    q = query(TP_NAMESPACE, NULL, "x");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().startups == 2 && stats().cleanups == 2);
}

/* ------------------------------------------------------------------------ */
/* the driver                                                                */

static uint64_t code_count(const nspv2_driver_result *r, int32_t code)
{
    for (uint32_t i = 0; i < r->n_codes; i++)
        if (r->codes[i] == code)
            return r->counts[i];
    return 0;
}

static void print_driver(const char *what, const nspv2_driver_result *r)
{
    printf("     driver %s: %" PRIu64 " cycles, %" PRIu64 " results, %.1f ms;", what,
           r->cycles_done, r->results, (double)r->elapsed_ns / 1e6);
    for (uint32_t i = 0; i < r->n_codes; i++)
        printf(" [%d]=%" PRIu64, (int)r->codes[i], r->counts[i]);
    printf("\n");
}

TEST(test_driver)
{
    fresh();
    advertise_ref();
    nspv2_driver_result r;
    CHECK_ERR(nspv2_driver_run(NULL, &r), WSAEINVAL);
    nspv2_driver_config cfg;
    memset(&cfg, 0, sizeof cfg);
    CHECK_ERR(nspv2_driver_run(&cfg, &r), WSAEINVAL); /* 0 threads */
    cfg.threads = 4;
    CHECK_ERR(nspv2_driver_run(&cfg, NULL), WSAEINVAL);

    const uint64_t T = 4, C = 2000, A = 7;
    cfg.threads = (uint32_t)T;
    cfg.cycles = (uint32_t)C;
    cfg.abandon_every = (uint32_t)A;
    cfg.buffer_size = 4096;
    cfg.name_space = NS_EMAIL;
    cfg.provider_id = NULL;
    cfg.service_name = W("*@example.com");
    cfg.control_flags = LUP_RETURN_ALL;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x2000 *@example.com", &r);
    const uint64_t cycles = T * C, abandons = T * (C / A);
    CHECK(r.cycles_done == cycles);
    CHECK(r.results == 2 * cycles);
    /* open, begin, 2 x next, end, close/abandon succeed; 1 x next ends */
    CHECK(code_count(&r, NO_ERROR) == 6 * cycles);
    CHECK(code_count(&r, WSA_E_NO_MORE) == cycles);
    CHECK(r.n_codes == 2);
    CHECK(r.elapsed_ns > 0);
    nspv2_host_stats st = stats();
    CHECK(st.sessions_open == 0 && st.lookups_open == 0 && st.async_pending == 0);
    CHECK(st.startups == cycles);
    CHECK(st.rundowns == abandons);
    CHECK(st.cleanups == cycles - abandons);
    CHECK(st.provider_faults == 0 && st.late_completions == 0);
    printf("     stats: startups %" PRIu64 ", cleanups %" PRIu64 ", rundowns %" PRIu64 "\n",
           st.startups, st.cleanups, st.rundowns);

    /* a buffer too small: every next stops at WSAEFAULT */
    nspv2_host_stats_reset();
    cfg.cycles = 200;
    cfg.buffer_size = 64;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x200 buffer 64", &r);
    CHECK(r.results == 0);
    CHECK(code_count(&r, WSAEFAULT) == 800);
    CHECK(code_count(&r, NO_ERROR) == 800 * 4);

    /* unknown name: begin fails, nothing else but open and close */
    cfg.buffer_size = 4096;
    cfg.service_name = W("nobody@example.com");
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    CHECK(code_count(&r, WSASERVICE_NOT_FOUND) == 800);
    CHECK(code_count(&r, NO_ERROR) == 800 * 2);

    /* sessions only */
    nspv2_host_stats_reset();
    cfg.session_only = 1;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x200 session_only", &r);
    CHECK(code_count(&r, NO_ERROR) == 800 * 2 && r.n_codes == 1);
    st = stats();
    CHECK(st.startups == 0 && st.sessions_open == 0);
}

TEST(test_reset)
{
    advertise_tp();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    nspv2_host_reset();
    nspv2_host_stats st = stats();
    CHECK(st.providers == 0 && st.sessions_open == 0 && st.lookups_open == 0);
    CHECK(st.async_pending == 0);
    CHECK_ERR(nspv2_session_close(s), WSAEINVAL);
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK(tp.ends >= 1);
}


/* ------------------------------------------------------------------------ */
/* concurrency: everything at once, then check that the books balance       */

#define STRESS_MS 400

static struct {
    nspv2_mutex lock;
    HANDLE shared_lookup;   /* published by lookup workers, ended by the ender */
    uint64_t shared_session; /* published by session workers, closed by the closer */
    int done;
    unsigned long errors;   /* unexpected outcomes */
} st = {.lock = NSPV2_MUTEX_INIT};

static void stress_unexpected(const char *what, int code)
{
    nspv2_mutex_lock(&st.lock);
    if (st.errors++ < 10)
        printf("     unexpected: %s -> %d\n", what, code);
    nspv2_mutex_unlock(&st.lock);
}

static int stress_done(void)
{
    nspv2_mutex_lock(&st.lock);
    int d = st.done;
    nspv2_mutex_unlock(&st.lock);
    return d;
}

/* open, look up (NS_ALL: ref then tp), end, close or abandon; the handle is
 * published so the ender thread may end it under our feet */
static void stress_lookup_main(void *p)
{
    uintptr_t seed = (uintptr_t)p;
    result_buf *buf = malloc(sizeof *buf);
    for (int i = 0; !stress_done(); i++) {
        uint64_t s;
        if (nspv2_session_open(&s) != NO_ERROR) {
            stress_unexpected("open", WSAGetLastError());
            continue;
        }
        WSAQUERYSETW q = query(NS_ALL, NULL, NULL);
        q.lpszServiceInstanceName = (LPWSTR)u"*@example.com"; /* W() is not thread-safe */
        HANDLE h;
        if (nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h) == NO_ERROR) {
            nspv2_mutex_lock(&st.lock);
            st.shared_lookup = h;
            nspv2_mutex_unlock(&st.lock);
            for (;;) {
                DWORD len = (i + (int)seed) % 5 == 0 ? 100 : 4096;
                if (nspv2_lookup_next(h, 0, &len, &buf->qs) == NO_ERROR)
                    continue;
                int e = WSAGetLastError();
                if (e != WSA_E_NO_MORE && e != WSA_E_CANCELLED && e != WSA_INVALID_HANDLE &&
                    e != WSAEFAULT)
                    stress_unexpected("next", e);
                break;
            }
            if (nspv2_lookup_end(h) != NO_ERROR && WSAGetLastError() != WSA_INVALID_HANDLE)
                stress_unexpected("end", WSAGetLastError());
        } else {
            stress_unexpected("begin", WSAGetLastError());
        }
        INT r = (i + (int)seed) % 3 == 0 ? nspv2_session_abandon(s) : nspv2_session_close(s);
        if (r != NO_ERROR)
            stress_unexpected("close", WSAGetLastError());
    }
    free(buf);
}

static void stress_ender_main(void *p)
{
    (void)p;
    while (!stress_done()) {
        nspv2_mutex_lock(&st.lock);
        HANDLE h = st.shared_lookup;
        st.shared_lookup = NULL;
        nspv2_mutex_unlock(&st.lock);
        if (h && nspv2_lookup_end(h) != NO_ERROR && WSAGetLastError() != WSA_INVALID_HANDLE)
            stress_unexpected("ender end", WSAGetLastError());
        nspv2_sleep_ms(0);
    }
}

/* sessions that another thread closes while they are used */
static void stress_session_main(void *p)
{
    (void)p;
    result_buf *buf = malloc(sizeof *buf);
    for (int i = 0; !stress_done(); i++) {
        uint64_t s;
        if (nspv2_session_open(&s) != NO_ERROR)
            continue;
        nspv2_mutex_lock(&st.lock);
        st.shared_session = s;
        nspv2_mutex_unlock(&st.lock);
        WSAQUERYSETW q = query(TP_NAMESPACE, NULL, NULL);
        HANDLE h;
        if (nspv2_lookup_begin(s, &q, 0, &h) == NO_ERROR) {
            DWORD len = 4096;
            while (nspv2_lookup_next(h, 0, &len, &buf->qs) == NO_ERROR)
                len = 4096;
            nspv2_lookup_end(h);
        } else {
            int e = WSAGetLastError();
            if (e != WSAEINVAL && e != WSASERVICE_NOT_FOUND)
                stress_unexpected("session begin", e);
        }
        if (nspv2_session_close(s) != NO_ERROR && WSAGetLastError() != WSAEINVAL)
            stress_unexpected("session close", WSAGetLastError());
    }
    free(buf);
}

static void stress_closer_main(void *p)
{
    (void)p;
    int n = 0;
    while (!stress_done()) {
        nspv2_mutex_lock(&st.lock);
        uint64_t s = st.shared_session;
        st.shared_session = 0;
        nspv2_mutex_unlock(&st.lock);
        if (s) {
            INT r = (n++ & 1) ? nspv2_session_abandon(s) : nspv2_session_close(s);
            if (r != NO_ERROR && WSAGetLastError() != WSAEINVAL)
                stress_unexpected("closer", WSAGetLastError());
        }
        nspv2_sleep_ms(0);
    }
}

/* the test provider comes and goes */
static void stress_churn_main(void *p)
{
    (void)p;
    NSPV2_ROUTINE r = tp_routine();
    while (!stress_done()) {
        if (WSAUnadvertiseProvider(&tp_id) != NO_ERROR)
            stress_unexpected("unadvertise", WSAGetLastError());
        nspv2_sleep_ms(1);
        if (WSAAdvertiseProvider(&tp_id, &r) != NO_ERROR)
            stress_unexpected("advertise", WSAGetLastError());
        nspv2_sleep_ms(2);
    }
}

TEST(test_stress)
{
    fresh();
    advertise_ref();
    advertise_tp();
    nspv2_host_set_timeout_ms(2000);
    tp_set_mode(TP_ASYNC);
    nspv2_mutex_lock(&tp.lock);
    tp.results = 2;
    nspv2_mutex_unlock(&tp.lock);
    st.done = 0;
    st.errors = 0;
    nspv2_thread completer, workers[4], helpers[3];
    CHECK(nspv2_thread_create(&completer, tp_completer_main, NULL) == 0);
    CHECK(nspv2_thread_create(&helpers[0], stress_ender_main, NULL) == 0);
    CHECK(nspv2_thread_create(&helpers[1], stress_closer_main, NULL) == 0);
    CHECK(nspv2_thread_create(&helpers[2], stress_churn_main, NULL) == 0);
    CHECK(nspv2_thread_create(&workers[0], stress_lookup_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&workers[1], stress_lookup_main, (void *)2) == 0);
    CHECK(nspv2_thread_create(&workers[2], stress_session_main, NULL) == 0);
    CHECK(nspv2_thread_create(&workers[3], stress_session_main, NULL) == 0);
    nspv2_sleep_ms(STRESS_MS);
    nspv2_mutex_lock(&st.lock);
    st.done = 1;
    nspv2_mutex_unlock(&st.lock);
    for (int i = 0; i < 4; i++)
        nspv2_thread_join(workers[i]);
    for (int i = 0; i < 3; i++)
        nspv2_thread_join(helpers[i]);
    nspv2_mutex_lock(&tp.lock);
    tp.stop = 1;
    nspv2_mutex_unlock(&tp.lock);
    nspv2_thread_join(completer);

    CHECK(st.errors == 0);
    nspv2_host_stats s = stats();
    CHECK(s.sessions_open == 0 && s.lookups_open == 0 && s.async_pending == 0);
    CHECK(s.startups == s.cleanups + s.rundowns);
    CHECK(s.provider_faults == 0);
    int once = 1;
    for (int i = 0; i < tp.nsessions; i++)
        if (tp.sessions[i]->cleanups + tp.sessions[i]->rundowns != 1)
            once = 0;
    CHECK(once); /* every provider session ended exactly once */
    printf("     stress: %d test-provider sessions, startups %" PRIu64 ", cleanups %" PRIu64
           ", rundowns %" PRIu64 ", late completions %" PRIu64 "\n",
           tp.nsessions, s.startups, s.cleanups, s.rundowns, s.late_completions);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    RUN(test_advertise_validation);
    RUN(test_startup_failure);
    RUN(test_sessions);
    RUN(test_unadvertise_with_sessions);
    RUN(test_completion_errors);
    RUN(test_completion_from_other_thread);
    RUN(test_timeout_and_late_completion);
    RUN(test_end_races_next);
    RUN(test_ref_exact);
    RUN(test_ref_wildcard);
    RUN(test_ref_begin_errors);
    RUN(test_ref_every_buffer_size);
    RUN(test_ref_flush_previous);
    RUN(test_ns_all_drains_in_order);
    RUN(test_winsock_named_calls);
    RUN(test_last_error_per_thread);
    RUN(test_provider_faults);
    RUN(test_set_service);
    RUN(test_driver);
    RUN(test_reset);
    RUN(test_stress);
    fresh();
    printf("%lu checks, %lu failed\n", checks_run, checks_failed);
    return checks_failed ? 1 : 0;
}
