/*
 * host_tests.c - tests of the native NSPv2 host, the C reference provider
 * (the NS_EMAIL presence directory of docs/email-example.md) and the C
 * bench provider. Built together with src/host.c, src/ref_provider.c and
 * src/bench_provider.c (see the Makefile); prints one line per failed check
 * and a summary, exits non-zero on any failure.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_bench_provider.h"
#include "nspv2_host.h"
#include "nspv2_messenger.h"
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

static void advertise_bench(void)
{
    NSPV2_ROUTINE r;
    nspv2_bench_provider_routine(&r);
    CHECK_OK(WSAAdvertiseProvider(&nspv2_bench_provider_id, &r));
}

static void check_bench(const WSAQUERYSETW *r, const char *name, size_t size);

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

/* every test starts from an empty host and an empty directory */
static void fresh(void)
{
    nspv2_host_reset();
    nspv2_ref_provider_reset();
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
    advertise_bench();
    uint64_t s[3];
    HANDLE h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_OK(nspv2_session_open(&s[i]));
        WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
        CHECK_OK(nspv2_lookup_begin(s[i], &q, 0, &h[i]));
    }
    CHECK_OK(nspv2_lookup_end(h[0])); /* h[1], h[2] stay open */
    /* one of them also uses the bench provider */
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
    /* the bench provider is untouched */
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(rh, 0, &len, &buf.qs));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(rh));

    /* closing the sessions now ends nothing more for the gone provider */
    for (int i = 0; i < 3; i++)
        CHECK_OK(nspv2_session_close(s[i]));
    st = stats();
    CHECK(st.rundowns == 3);
    CHECK(st.cleanups == 1); /* s[1]'s bench provider session */
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
/* the bench provider: one fixed result for any name                        */

static void check_bench_blob(const BLOB *b)
{
    CHECK(b->cbSize == NSPV2_BENCH_BLOB_SIZE);
    int ok = b->pBlobData != NULL;
    for (size_t i = 0; ok && i < NSPV2_BENCH_BLOB_SIZE; i++)
        ok = b->pBlobData[i] == (unsigned char)i;
    CHECK(ok);
}

/* Checks a full (LUP_RETURN_ALL) bench result for `name`, all pointers
 * inside [buf, buf + size). */
static void check_bench(const WSAQUERYSETW *r, const char *name, size_t size)
{
    const void *buf = r;
    CHECK(r->dwSize == sizeof(WSAQUERYSETW));
    CHECK(r->dwNameSpace == NS_EMAIL);
    CHECK(r->dwOutputFlags == RESULT_IS_ADDED);
    CHECK(r->lpServiceClassId == NULL && r->lpVersion == NULL);
    CHECK(wstr_is(r->lpszServiceInstanceName, name));
    CHECK(in_buffer(r->lpszServiceInstanceName, (strlen(name) + 1) * 2, buf, size));
    CHECK(wstr_is(r->lpszComment, "MISTATUS_ONLINE"));
    CHECK(in_buffer(r->lpszComment, 32, buf, size));
    CHECK(r->dwNumberOfCsAddrs == 2);
    CHECK(in_buffer(r->lpcsaBuffer, 2 * sizeof(CSADDR_INFO), buf, size));
    if (r->dwNumberOfCsAddrs == 2 && r->lpcsaBuffer) {
        const CSADDR_INFO *c = r->lpcsaBuffer;
        CHECK(c[0].iSocketType == 1 && c[0].iProtocol == 6);
        CHECK(c[1].iSocketType == 1 && c[1].iProtocol == 6);
        CHECK(c[0].LocalAddr.lpSockaddr == NULL && c[1].LocalAddr.lpSockaddr == NULL);
        CHECK(c[0].RemoteAddr.iSockaddrLength == (INT)sizeof(SOCKADDR_IN));
        CHECK(in_buffer(c[0].RemoteAddr.lpSockaddr, sizeof(SOCKADDR_IN), buf, size));
        const SOCKADDR_IN *sin = (const SOCKADDR_IN *)(const void *)c[0].RemoteAddr.lpSockaddr;
        const unsigned char *a4 = (const unsigned char *)&sin->sin_addr;
        const unsigned char *p4 = (const unsigned char *)&sin->sin_port;
        CHECK(sin->sin_family == NSPV2_AF_INET);
        CHECK(a4[0] == 192 && a4[1] == 0 && a4[2] == 2 && a4[3] == 10);
        CHECK(p4[0] == (5060 >> 8) && p4[1] == (5060 & 0xff));
        CHECK(c[1].RemoteAddr.iSockaddrLength == (INT)sizeof(SOCKADDR_IN6));
        CHECK(in_buffer(c[1].RemoteAddr.lpSockaddr, sizeof(SOCKADDR_IN6), buf, size));
        const SOCKADDR_IN6 *sin6 =
            (const SOCKADDR_IN6 *)(const void *)c[1].RemoteAddr.lpSockaddr;
        const unsigned char *a6 = (const unsigned char *)&sin6->sin6_addr;
        const unsigned char *p6 = (const unsigned char *)&sin6->sin6_port;
        CHECK(sin6->sin6_family == NSPV2_AF_INET6);
        CHECK(a6[0] == 0x20 && a6[1] == 0x01 && a6[2] == 0x0d && a6[3] == 0xb8 && a6[15] == 0x10);
        CHECK(p6[0] == (5060 >> 8) && p6[1] == (5060 & 0xff));
    }
    CHECK(in_buffer(r->lpBlob, sizeof(BLOB), buf, size));
    if (r->lpBlob) {
        CHECK(in_buffer(r->lpBlob->pBlobData, NSPV2_BENCH_BLOB_SIZE, buf, size));
        check_bench_blob(r->lpBlob);
    }
}

TEST(test_bench_lookup)
{
    fresh();
    advertise_bench();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "Anyone@Example.COM");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK(h != NULL);
    CHECK(stats().lookups_open == 1);
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_bench(&buf.qs, "Anyone@Example.COM", sizeof buf.bytes); /* the name asked */
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_INVALID_HANDLE);
    CHECK_ERR(nspv2_lookup_end(NULL), WSA_INVALID_HANDLE);

    /* any name at all, through lpNSProviderId and NS_ALL */
    q = query(NS_ALL, &nspv2_bench_provider_id, "not even an address");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_bench(&buf.qs, "not even an address", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));

    /* only the requested fields */
    q = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK(buf.qs.lpszComment == NULL && buf.qs.dwNumberOfCsAddrs == 0 &&
          buf.qs.lpcsaBuffer == NULL && buf.qs.lpBlob == NULL);
    CHECK(buf.qs.dwOutputFlags == RESULT_IS_ADDED && buf.qs.dwNameSpace == NS_EMAIL);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_BLOB | LUP_RETURN_COMMENT, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 0);
    CHECK(wstr_is(buf.qs.lpszComment, "MISTATUS_ONLINE"));
    CHECK(buf.qs.lpBlob != NULL);
    if (buf.qs.lpBlob)
        check_bench_blob(buf.qs.lpBlob);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ADDR, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 2 &&
          buf.qs.lpBlob == NULL);
    CHECK_OK(nspv2_lookup_end(h));

    /* errors: no name; registration is not supported */
    q = query(NS_EMAIL, NULL, NULL);
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSAEINVAL);
    q = query(NS_EMAIL, &nspv2_bench_provider_id, "alice@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_DELETE, 0), WSAEOPNOTSUPP);
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_session_close(s));
    nspv2_host_stats st = stats();
    CHECK(st.startups == 1 && st.cleanups == 1 && st.lookups_open == 0);
}

TEST(test_bench_every_buffer_size)
{
    fresh();
    advertise_bench();
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
    check_bench(&buf.qs, "alice@example.com", need);
    int tail_ok = 1;
    for (size_t i = need; i < sizeof buf.bytes; i++)
        if (buf.bytes[i] != 0xee)
            tail_ok = 0;
    CHECK(tail_ok); /* not a byte past the caller's length */
    len = need;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    printf("     bench: required size for alice (LUP_RETURN_ALL): %lu bytes\n",
           (unsigned long)need);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_bench_flush_previous)
{
    fresh();
    advertise_bench();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "alice@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    result_buf buf;
    DWORD len = 16;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSAEFAULT);
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, LUP_FLUSHPREVIOUS, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    /* without a preceding WSAEFAULT, LUP_FLUSHPREVIOUS drops nothing */
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, LUP_FLUSHPREVIOUS, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    /* held: the result comes after any number of short tries */
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    for (int i = 0; i < 3; i++) {
        len = 100;
        CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSAEFAULT);
    }
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

/* ------------------------------------------------------------------------ */
/* the reference provider: the NS_EMAIL presence directory                   */

/* A registration: the query set and what it points to, in one place. The
 * pointers are set by reg_set, so a reg may be filled in any order. */
typedef struct reg {
    WSAQUERYSETW q;
    WCHAR name[128];
    WCHAR query[160];
    DWORD ncs;
    CSADDR_INFO cs[8];
    SOCKADDR_IN6 sa[8]; /* room for either family */
    int has_blob;
    BLOB blob;
    unsigned char data[32];
} reg;

static void wcopy(WCHAR *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        dst[i] = (WCHAR)(unsigned char)s[i];
    dst[i] = 0;
}

static void reg_init(reg *r, const char *name)
{
    memset(r, 0, sizeof *r);
    r->q.dwSize = sizeof r->q;
    r->q.dwNameSpace = NS_EMAIL;
    r->q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id;
    if (name) {
        wcopy(r->name, 128, name);
        r->q.lpszServiceInstanceName = r->name;
    }
}

/* 192.0.2.<last>:<port> */
static void reg_v4(reg *r, unsigned char last, unsigned short port)
{
    SOCKADDR_IN a;
    memset(&a, 0, sizeof a);
    a.sin_family = NSPV2_AF_INET;
    unsigned char p[2] = {(unsigned char)(port >> 8), (unsigned char)port};
    memcpy(&a.sin_port, p, 2);
    unsigned char ip[4] = {192, 0, 2, last};
    memcpy(&a.sin_addr, ip, 4);
    memset(&r->sa[r->ncs], 0, sizeof r->sa[0]);
    memcpy(&r->sa[r->ncs], &a, sizeof a);
    r->cs[r->ncs].RemoteAddr.iSockaddrLength = (INT)sizeof a;
    r->cs[r->ncs].iSocketType = 1;
    r->cs[r->ncs].iProtocol = 6;
    r->ncs++;
}

/* [2001:db8::<last>]:<port> */
static void reg_v6(reg *r, unsigned char last, unsigned short port)
{
    SOCKADDR_IN6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = NSPV2_AF_INET6;
    unsigned char p[2] = {(unsigned char)(port >> 8), (unsigned char)port};
    memcpy(&a.sin6_port, p, 2);
    unsigned char ip[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    memcpy(&a.sin6_addr, ip, 16);
    r->sa[r->ncs] = a;
    r->cs[r->ncs].RemoteAddr.iSockaddrLength = (INT)sizeof a;
    r->cs[r->ncs].iSocketType = 1;
    r->cs[r->ncs].iProtocol = 6;
    r->ncs++;
}

static void encode_presence(DWORD status, unsigned char out[NSPV2_PRESENCE_BLOB_SIZE])
{
    const unsigned char head[8] = {'N', 'S', 'P', 'P', 1, 0, 0, 0};
    memcpy(out, head, 8);
    for (int i = 0; i < 4; i++)
        out[8 + i] = (unsigned char)(status >> (8 * i));
}

static void reg_blob(reg *r, const unsigned char *bytes, ULONG n)
{
    memcpy(r->data, bytes, n);
    r->blob.cbSize = n;
    r->has_blob = 1;
}

static void reg_status(reg *r, DWORD status)
{
    unsigned char p[NSPV2_PRESENCE_BLOB_SIZE];
    encode_presence(status, p);
    reg_blob(r, p, sizeof p);
}

static INT reg_set(uint64_t s, reg *r, WSAESETSERVICEOP op, DWORD flags)
{
    r->q.dwNumberOfCsAddrs = r->ncs;
    r->q.lpcsaBuffer = r->ncs ? r->cs : NULL;
    for (DWORD i = 0; i < r->ncs; i++)
        r->cs[i].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)&r->sa[i];
    r->blob.pBlobData = r->data;
    r->q.lpBlob = r->has_blob ? &r->blob : NULL;
    return nspv2_set_service(s, &r->q, op, flags);
}

/* Registers name (CS address 192.0.2.1:5060) with status; -1: no blob. */
static INT sign_in(uint64_t s, const char *name, long status)
{
    reg r;
    reg_init(&r, name);
    reg_v4(&r, 1, 5060);
    if (status >= 0)
        reg_status(&r, (DWORD)status);
    return reg_set(s, &r, RNRSERVICE_REGISTER, 0);
}

static INT sign_out(uint64_t s, const char *name)
{
    reg r;
    reg_init(&r, name);
    return reg_set(s, &r, RNRSERVICE_DELETE, 0);
}

static INT invite(uint64_t s, const char *inviter, const char *invitee)
{
    reg r;
    reg_init(&r, inviter);
    char text[160];
    snprintf(text, sizeof text, "invite=%s", invitee);
    wcopy(r.query, 160, text);
    r.q.lpszQueryString = r.query;
    return reg_set(s, &r, RNRSERVICE_REGISTER, 0);
}

static int is_v4(const CSADDR_INFO *c, unsigned char last, unsigned short port)
{
    if (c->LocalAddr.lpSockaddr || c->RemoteAddr.iSockaddrLength != (INT)sizeof(SOCKADDR_IN))
        return 0;
    const unsigned char *b = (const unsigned char *)c->RemoteAddr.lpSockaddr;
    static const unsigned char zero[8];
    return b && b[0] == NSPV2_AF_INET && b[1] == 0 && b[2] == (port >> 8) &&
           b[3] == (port & 0xff) && b[4] == 192 && b[5] == 0 && b[6] == 2 && b[7] == last &&
           memcmp(b + 8, zero, 8) == 0 && c->iSocketType == 1 && c->iProtocol == 6;
}

static int is_v6(const CSADDR_INFO *c, unsigned char last, unsigned short port)
{
    if (c->LocalAddr.lpSockaddr || c->RemoteAddr.iSockaddrLength != (INT)sizeof(SOCKADDR_IN6))
        return 0;
    const unsigned char *b = (const unsigned char *)c->RemoteAddr.lpSockaddr;
    const unsigned char ip[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    return b && b[0] == NSPV2_AF_INET6 && b[1] == 0 && b[2] == (port >> 8) &&
           b[3] == (port & 0xff) && memcmp(b + 8, ip, 16) == 0;
}

static int blob_is_presence(const BLOB *b, DWORD status)
{
    unsigned char p[NSPV2_PRESENCE_BLOB_SIZE];
    encode_presence(status, p);
    return b && b->cbSize == sizeof p && b->pBlobData && memcmp(b->pBlobData, p, sizeof p) == 0;
}

/* Checks a LUP_RETURN_ALL result: name, status, flags, version; the CS
 * addresses are the caller's to check. All pointers inside the buffer. */
static void check_entry(const WSAQUERYSETW *r, size_t size, const char *name, DWORD status,
                        const char *status_name, DWORD output_flags, DWORD version)
{
    const void *buf = r;
    CHECK(r->dwSize == sizeof(WSAQUERYSETW));
    CHECK(r->dwNameSpace == NS_EMAIL);
    CHECK(r->lpServiceClassId == NULL);
    CHECK(r->lpNSProviderId && in_buffer(r->lpNSProviderId, sizeof(GUID), buf, size) &&
          memcmp(r->lpNSProviderId, &nspv2_ref_provider_id, sizeof(GUID)) == 0);
    CHECK(wstr_is(r->lpszServiceInstanceName, name));
    CHECK(in_buffer(r->lpszServiceInstanceName, (strlen(name) + 1) * 2, buf, size));
    CHECK(wstr_is(r->lpszComment, status_name));
    CHECK(r->dwOutputFlags == output_flags);
    CHECK(r->lpVersion && in_buffer(r->lpVersion, sizeof(WSAVERSION), buf, size) &&
          r->lpVersion->dwVersion == version && r->lpVersion->ecHow == COMP_EQUAL);
    CHECK(in_buffer(r->lpBlob, sizeof(BLOB), buf, size) && blob_is_presence(r->lpBlob, status));
    if (r->lpBlob)
        CHECK(in_buffer(r->lpBlob->pBlobData, NSPV2_PRESENCE_BLOB_SIZE, buf, size));
    if (r->dwNumberOfCsAddrs)
        CHECK(in_buffer(r->lpcsaBuffer, r->dwNumberOfCsAddrs * sizeof(CSADDR_INFO), buf, size));
    for (DWORD i = 0; i < r->dwNumberOfCsAddrs && r->lpcsaBuffer; i++)
        CHECK(in_buffer(r->lpcsaBuffer[i].RemoteAddr.lpSockaddr,
                        (size_t)r->lpcsaBuffer[i].RemoteAddr.iSockaddrLength, buf, size));
}

/* One exact lookup that must find exactly one result, into *out. */
static void look_one(uint64_t s, const char *name, DWORD flags, result_buf *out)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    memset(out, 0, sizeof *out);
    CHECK_OK(nspv2_lookup_begin(s, &q, flags, &h));
    DWORD len = 4096;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &out->qs));
    result_buf more;
    len = 4096;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &more.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
}

/* The error of a lookup expected to fail at Begin. */
static int look_error(uint64_t s, const char *name)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    if (nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h) == NO_ERROR) {
        nspv2_lookup_end(h);
        return NO_ERROR;
    }
    return WSAGetLastError();
}

/* The names a lookup returns, joined with ' ' into out; the error code. */
static int look_names(uint64_t s, const char *name, char *out, size_t cap)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    out[0] = 0;
    if (nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h) != NO_ERROR)
        return WSAGetLastError();
    result_buf buf;
    for (;;) {
        DWORD len = sizeof buf.bytes;
        if (nspv2_lookup_next(h, 0, &len, &buf.qs) != NO_ERROR)
            break;
        size_t n = strlen(out);
        if (n && n + 1 < cap)
            out[n++] = ' ';
        for (const WCHAR *w = buf.qs.lpszServiceInstanceName; w && *w && n + 1 < cap; w++)
            out[n++] = (char)*w;
        out[n] = 0;
    }
    int err = WSAGetLastError();
    nspv2_lookup_end(h);
    return err == WSA_E_NO_MORE ? NO_ERROR : err;
}

TEST(test_ref_sign_in_and_look_up)
{
    fresh();
    advertise_ref();
    uint64_t a, b;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    reg r;
    reg_init(&r, "alice@example.com");
    reg_v4(&r, 1, 5060);
    reg_v6(&r, 1, 5060);
    reg_status(&r, MISTATUS_AWAY);
    CHECK_OK(reg_set(a, &r, RNRSERVICE_REGISTER, 0));

    /* another session finds her, by any case, with every field */
    const char *spellings[] = {"alice@example.com", "ALICE@Example.COM"};
    for (int i = 0; i < 2; i++) {
        result_buf buf;
        look_one(b, spellings[i], LUP_RETURN_ALL, &buf);
        check_entry(&buf.qs, sizeof buf.bytes, "alice@example.com", MISTATUS_AWAY,
                    "MISTATUS_AWAY", RESULT_IS_ADDED, 1);
        CHECK(buf.qs.dwNumberOfCsAddrs == 2);
        if (buf.qs.dwNumberOfCsAddrs == 2) {
            CHECK(is_v4(&buf.qs.lpcsaBuffer[0], 1, 5060));
            CHECK(is_v6(&buf.qs.lpcsaBuffer[1], 1, 5060));
        }
    }
    /* no blob: online; the name is returned as registered */
    CHECK_OK(sign_in(a, "Bob@Example.com", -1));
    result_buf buf;
    look_one(b, "bob@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "Bob@Example.com", MISTATUS_ONLINE, "MISTATUS_ONLINE",
                RESULT_IS_ADDED, 1);
    CHECK(buf.qs.dwNumberOfCsAddrs == 1 && is_v4(&buf.qs.lpcsaBuffer[0], 1, 5060));
    /* NS_ALL reaches it too (in the query and in the registration) */
    WSAQUERYSETW q = query(NS_ALL, NULL, "alice@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(b, &q, LUP_RETURN_NAME, &h));
    CHECK_OK(nspv2_lookup_end(h));
    reg_init(&r, "carol@example.org");
    r.q.dwNameSpace = NS_ALL;
    r.q.lpNSProviderId = NULL;
    CHECK_OK(reg_set(a, &r, RNRSERVICE_REGISTER, 0));
    CHECK(look_error(b, "carol@example.org") == NO_ERROR);
    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_close(b));
    CHECK(stats().async_pending == 0 && stats().lookups_open == 0);
}

TEST(test_ref_lup_return_flags)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    CHECK_OK(sign_in(s, "carol@example.org", MISTATUS_BUSY));
    result_buf buf;
    look_one(s, "carol@example.org", LUP_RETURN_NAME, &buf);
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "carol@example.org"));
    CHECK(buf.qs.lpszComment == NULL && buf.qs.lpVersion == NULL && buf.qs.lpBlob == NULL &&
          buf.qs.dwNumberOfCsAddrs == 0 && buf.qs.lpcsaBuffer == NULL);
    CHECK(buf.qs.dwOutputFlags == RESULT_IS_ADDED && buf.qs.dwNameSpace == NS_EMAIL);
    look_one(s, "carol@example.org", LUP_RETURN_COMMENT, &buf);
    CHECK(buf.qs.lpszServiceInstanceName == NULL && wstr_is(buf.qs.lpszComment, "MISTATUS_BUSY"));
    look_one(s, "carol@example.org", LUP_RETURN_ADDR, &buf);
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 1 &&
          is_v4(&buf.qs.lpcsaBuffer[0], 1, 5060) && buf.qs.lpBlob == NULL);
    look_one(s, "carol@example.org", LUP_RETURN_BLOB, &buf);
    CHECK(buf.qs.lpszComment == NULL && blob_is_presence(buf.qs.lpBlob, MISTATUS_BUSY));
    look_one(s, "carol@example.org", LUP_RETURN_VERSION, &buf);
    CHECK(buf.qs.lpVersion && buf.qs.lpVersion->dwVersion == 1 && buf.qs.lpBlob == NULL);
    /* nothing asked: the header, the namespace, the provider id */
    look_one(s, "carol@example.org", 0, &buf);
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.lpszComment == NULL &&
          buf.qs.lpVersion == NULL && buf.qs.lpBlob == NULL && buf.qs.dwNumberOfCsAddrs == 0);
    CHECK(buf.qs.lpNSProviderId &&
          memcmp(buf.qs.lpNSProviderId, &nspv2_ref_provider_id, sizeof(GUID)) == 0);
    /* TYPE, ALIASES and QUERY_STRING add nothing */
    look_one(s, "carol@example.org", LUP_RETURN_TYPE | LUP_RETURN_ALIASES |
             LUP_RETURN_QUERY_STRING, &buf);
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.lpszQueryString == NULL &&
          buf.qs.lpBlob == NULL);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_update_and_deregister)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    reg r;
    reg_init(&r, "dave@example.com");
    reg_v4(&r, 1, 5060);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, 0));
    /* registering again replaces addresses and presence: changed, version 2 */
    reg_init(&r, "DAVE@example.com");
    reg_v6(&r, 1, 5060);
    reg_status(&r, MISTATUS_IDLE);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, 0));
    result_buf buf;
    look_one(s, "dave@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "dave@example.com", MISTATUS_IDLE, "MISTATUS_IDLE",
                RESULT_IS_CHANGED, 2);
    CHECK(buf.qs.dwNumberOfCsAddrs == 1 && is_v6(&buf.qs.lpcsaBuffer[0], 1, 5060));
    /* SERVICE_MULTIPLE adds the new addresses, each once */
    reg_init(&r, "dave@example.com");
    reg_v4(&r, 1, 5060);
    reg_v6(&r, 1, 5060);
    reg_v4(&r, 1, 5060);
    reg_v4(&r, 2, 5061);
    reg_status(&r, MISTATUS_IDLE);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, SERVICE_MULTIPLE));
    look_one(s, "dave@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "dave@example.com", MISTATUS_IDLE, "MISTATUS_IDLE",
                RESULT_IS_CHANGED, 3);
    CHECK(buf.qs.dwNumberOfCsAddrs == 3);
    if (buf.qs.dwNumberOfCsAddrs == 3) {
        CHECK(is_v6(&buf.qs.lpcsaBuffer[0], 1, 5060));
        CHECK(is_v4(&buf.qs.lpcsaBuffer[1], 1, 5060));
        CHECK(is_v4(&buf.qs.lpcsaBuffer[2], 2, 5061));
    }
    /* SERVICE_MULTIPLE with no address keeps them all */
    reg_init(&r, "dave@example.com");
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, SERVICE_MULTIPLE));
    look_one(s, "dave@example.com", LUP_RETURN_ADDR | LUP_RETURN_COMMENT, &buf);
    CHECK(buf.qs.dwNumberOfCsAddrs == 3 && wstr_is(buf.qs.lpszComment, "MISTATUS_ONLINE"));
    /* the same address, with sin_zero set or a longer length, is the same */
    reg_init(&r, "dave@example.com");
    reg_v4(&r, 2, 5061);
    ((unsigned char *)&r.sa[0])[12] = 0x77;
    r.cs[0].RemoteAddr.iSockaddrLength = 24;
    CHECK_OK(reg_set(s, &r, RNRSERVICE_DEREGISTER, 0));
    look_one(s, "dave@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "dave@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_CHANGED, 5);
    CHECK(buf.qs.dwNumberOfCsAddrs == 2);
    if (buf.qs.dwNumberOfCsAddrs == 2) {
        CHECK(is_v6(&buf.qs.lpcsaBuffer[0], 1, 5060));
        CHECK(is_v4(&buf.qs.lpcsaBuffer[1], 1, 5060));
    }
    /* deregistering an address it does not have still counts as a change */
    reg_init(&r, "dave@example.com");
    reg_v4(&r, 9, 9);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_DEREGISTER, 0));
    /* no address given: all of them go; the name stays */
    reg_init(&r, "dave@example.com");
    CHECK_OK(reg_set(s, &r, RNRSERVICE_DEREGISTER, 0));
    look_one(s, "dave@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "dave@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_CHANGED, 7);
    CHECK(buf.qs.dwNumberOfCsAddrs == 0 && buf.qs.lpcsaBuffer == NULL);
    /* not signed in */
    reg_init(&r, "nobody@example.com");
    CHECK_ERR(reg_set(s, &r, RNRSERVICE_DEREGISTER, 0), WSASERVICE_NOT_FOUND);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_wildcard_sorted)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    const char *names[] = {"zed@example.net", "Bob@example.net", "amy@example.net",
                           "max@other.net", "eve@sub.example.net", "al@example.nett"};
    for (int i = 0; i < 6; i++)
        CHECK_OK(sign_in(s, names[i], MISTATUS_ONLINE));
    char got[256];
    CHECK(look_names(s, "*@EXAMPLE.net", got, sizeof got) == NO_ERROR);
    /* sorted by lowercased name: amy, Bob, zed (not "Bob" first) */
    CHECK(strcmp(got, "amy@example.net Bob@example.net zed@example.net") == 0);
    CHECK(look_names(s, "*@other.net", got, sizeof got) == NO_ERROR);
    CHECK(strcmp(got, "max@other.net") == 0);
    CHECK(look_names(s, "*@sub.example.net", got, sizeof got) == NO_ERROR);
    CHECK(strcmp(got, "eve@sub.example.net") == 0);
    CHECK(look_error(s, "*@nowhere.com") == WSASERVICE_NOT_FOUND);
    CHECK(look_error(s, "*@net") == WSAEINVAL); /* not a domain.tld */
    /* one per NextEx, then WSA_E_NO_MORE */
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@example.net");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    result_buf buf;
    for (int i = 0; i < 3; i++) {
        DWORD len = sizeof buf.bytes;
        CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
        CHECK(buf.qs.dwNumberOfCsAddrs == 1);
    }
    DWORD len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_bad_input)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    CHECK_OK(sign_in(s, "gus@example.com", -1));
    /* names: local@domain.tld, or *@domain.tld for lookups */
    const char *bad[] = {"not an address", "no-at-sign", "@example.com", "a@", "a@b",
                         "a@.com", "a@example.c", "a@example.c0m", "a@exa_mple.com",
                         "a b@example.com", "a@b@example.com", "*@example.com.",
                         "**@example.com", "*x@example.com", "a@example.com\n\n", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(look_error(s, bad[i]) == WSAEINVAL);
        CHECK_ERR(sign_in(s, bad[i], -1), WSAEINVAL);
    }
    CHECK_ERR(sign_in(s, "*@example.com", -1), WSAEINVAL); /* no wildcard sign-in */
    CHECK_ERR(sign_in(s, NULL, -1), WSAEINVAL);
    CHECK(look_error(s, NULL) == WSAEINVAL);
    const char *good[] = {"a.b_c%d+e-f@x-y.example.museum", "1@2.3.ab"};
    for (size_t i = 0; i < 2; i++) {
        CHECK_OK(sign_in(s, good[i], -1));
        CHECK(look_error(s, good[i]) == NO_ERROR);
    }
    /* the whole name must match: not even a trailing newline */
    CHECK(sign_in(s, "nl@example.com\n", -1) == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL);
    CHECK(look_error(s, "nl@example.com") == WSASERVICE_NOT_FOUND);

    /* presence blobs: version 1, 12 bytes, a MISTATUS one can sign in with */
    const unsigned char v2[12] = {'N', 'S', 'P', 'P', 2, 0, 0, 0, 2, 0, 0, 0};
    const unsigned char magic[12] = {'N', 'S', 'P', 'Q', 1, 0, 0, 0, 2, 0, 0, 0};
    const unsigned char reserved[12] = {'N', 'S', 'P', 'P', 1, 0, 1, 0, 2, 0, 0, 0};
    const unsigned char notstate[12] = {'N', 'S', 'P', 'P', 1, 0, 0, 0, 3, 0, 0, 0};
    const unsigned char high[12] = {'N', 'S', 'P', 'P', 1, 0, 0, 0, 2, 0, 0, 1};
    const unsigned char *blobs[] = {v2, magic, reserved, notstate, high};
    reg r;
    for (int i = 0; i < 5; i++) {
        reg_init(&r, "fay@example.com");
        reg_blob(&r, blobs[i], 12);
        CHECK_ERR(reg_set(s, &r, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    }
    unsigned char online[32] = {0}; /* a valid blob, then padding */
    encode_presence(MISTATUS_ONLINE, online);
    const ULONG sizes[] = {0, 5, 11, 13, 32};
    for (int i = 0; i < 5; i++) {
        reg_init(&r, "fay@example.com");
        reg_blob(&r, online, sizes[i]);
        CHECK_ERR(reg_set(s, &r, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    }
    reg_init(&r, "fay@example.com");
    reg_blob(&r, online, 12);
    r.q.lpBlob = &r.blob;
    r.blob.pBlobData = NULL; /* a size with no data */
    r.q.dwNumberOfCsAddrs = 0;
    CHECK_ERR(nspv2_set_service(s, &r.q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    const DWORD cannot[] = {MISTATUS_UNKNOWN, MISTATUS_OFFLINE, MISTATUS_LOCAL_FINDING_SERVER,
                            MISTATUS_LOCAL_CONNECTING_TO_SERVER,
                            MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER,
                            MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER};
    for (int i = 0; i < 6; i++)
        CHECK_ERR(sign_in(s, "fay@example.com", (long)cannot[i]), WSAEINVAL);
    const DWORD can[] = {MISTATUS_ONLINE, MISTATUS_INVISIBLE, MISTATUS_BUSY,
                         MISTATUS_BE_RIGHT_BACK, MISTATUS_IDLE, MISTATUS_AWAY,
                         MISTATUS_ON_THE_PHONE, MISTATUS_OUT_TO_LUNCH};
    for (int i = 0; i < 8; i++)
        CHECK_OK(sign_in(s, "fay@example.com", (long)can[i]));
    /* a bad blob fails even for another session's name (checked first) */
    uint64_t b;
    CHECK_OK(nspv2_session_open(&b));
    CHECK_ERR(sign_in(b, "fay@example.com", MISTATUS_OFFLINE), WSAEINVAL);
    CHECK_ERR(sign_in(b, "fay@example.com", MISTATUS_ONLINE), WSAEALREADY);

    /* socket addresses, as the Python reader checks them */
    reg_init(&r, "fay@example.com");
    reg_v4(&r, 1, 1);
    r.cs[0].RemoteAddr.iSockaddrLength = 15; /* AF_INET needs 16 */
    CHECK_ERR(reg_set(s, &r, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    reg_init(&r, "fay@example.com");
    reg_v6(&r, 1, 1);
    r.cs[0].RemoteAddr.iSockaddrLength = 27; /* AF_INET6 needs 28 */
    CHECK_ERR(reg_set(s, &r, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    reg_init(&r, "fay@example.com");
    reg_v4(&r, 1, 1);
    r.cs[0].RemoteAddr.iSockaddrLength = 129;
    CHECK_ERR(reg_set(s, &r, RNRSERVICE_DEREGISTER, 0), WSAEINVAL);
    reg_init(&r, "fay@example.com");
    reg_v4(&r, 1, 1);
    r.q.dwNumberOfCsAddrs = 1;
    r.q.lpcsaBuffer = r.cs;
    r.cs[0].RemoteAddr.lpSockaddr = NULL; /* a length with no address */
    CHECK_ERR(nspv2_set_service(s, &r.q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    r.q.lpcsaBuffer = NULL; /* a count with no array */
    CHECK_ERR(nspv2_set_service(s, &r.q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    /* another family is kept as its bytes */
    reg_init(&r, "raw@example.com");
    reg_v4(&r, 1, 1);
    ((unsigned char *)&r.sa[0])[0] = 99;
    r.cs[0].RemoteAddr.iSockaddrLength = 6;
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, 0));
    result_buf buf;
    look_one(s, "raw@example.com", LUP_RETURN_ADDR, &buf);
    CHECK(buf.qs.dwNumberOfCsAddrs == 1 &&
          buf.qs.lpcsaBuffer[0].RemoteAddr.iSockaddrLength == 6 &&
          memcmp(buf.qs.lpcsaBuffer[0].RemoteAddr.lpSockaddr, &r.sa[0], 6) == 0);

    /* the namespace: only NS_EMAIL and NS_ALL (the host routes NS_DNS here
     * once the provider is installed for it) */
    CHECK_OK(WSCInstallNameSpaceEx(W("ref"), W("ref.dll"), NS_DNS, 1,
                                   (LPGUID)&nspv2_ref_provider_id, NULL));
    WSAQUERYSETW q = query(NS_DNS, NULL, "gus@example.com");
    HANDLE h;
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSAEINVAL);
    reg_init(&r, "dns@example.com");
    r.q.dwNameSpace = NS_DNS;
    r.q.lpNSProviderId = NULL;
    CHECK_ERR(reg_set(s, &r, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    CHECK_OK(WSCUnInstallNameSpace((LPGUID)&nspv2_ref_provider_id));
    CHECK_OK(nspv2_session_close(s));
    CHECK_OK(nspv2_session_close(b));
}

TEST(test_ref_another_sessions_name)
{
    fresh();
    advertise_ref();
    uint64_t a, b;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    CHECK_OK(sign_in(a, "gus@example.com", -1));
    CHECK_ERR(sign_in(b, "GUS@example.com", MISTATUS_BUSY), WSAEALREADY);
    reg r;
    reg_init(&r, "gus@example.com");
    CHECK_ERR(reg_set(b, &r, RNRSERVICE_DEREGISTER, 0), WSAEACCES);
    CHECK_ERR(sign_out(b, "gus@example.com"), WSAEACCES);
    result_buf buf;
    look_one(b, "gus@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "gus@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_ADDED, 1); /* untouched */
    CHECK_OK(sign_out(a, "Gus@Example.com"));
    CHECK_OK(sign_in(b, "gus@example.com", -1)); /* free again */
    CHECK_ERR(sign_in(a, "gus@example.com", -1), WSAEALREADY);
    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_close(b));
}

TEST(test_ref_sign_out_in_flight)
{
    fresh();
    advertise_ref();
    uint64_t a, b;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    CHECK_OK(sign_in(a, "hal@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(a, "ida@example.com", MISTATUS_BUSY));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(b, &q, LUP_RETURN_ALL, &h));
    result_buf buf;
    DWORD len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_entry(&buf.qs, sizeof buf.bytes, "hal@example.com", MISTATUS_AWAY, "MISTATUS_AWAY",
                RESULT_IS_ADDED, 1);
    /* ida signs out, and signs in again (a new entry) from another session:
     * the lookup still holds the old one, disconnecting */
    CHECK_OK(sign_out(a, "ida@example.com"));
    CHECK_OK(sign_in(b, "ida@example.com", MISTATUS_ONLINE));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_entry(&buf.qs, sizeof buf.bytes, "ida@example.com",
                MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER,
                "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER", RESULT_IS_DELETED, 1);
    CHECK(buf.qs.dwNumberOfCsAddrs == 1 && is_v4(&buf.qs.lpcsaBuffer[0], 1, 5060));
    len = sizeof buf.bytes;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    look_one(a, "ida@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "ida@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_ADDED, 1);
    /* a lookup begun after a sign-out does not find the name */
    CHECK_OK(sign_out(b, "ida@example.com"));
    CHECK(look_error(a, "ida@example.com") == WSASERVICE_NOT_FOUND);
    CHECK_ERR(sign_out(b, "ida@example.com"), WSASERVICE_NOT_FOUND);
    CHECK_ERR(sign_out(a, "nobody@example.com"), WSASERVICE_NOT_FOUND);
    /* a lookup ended before reaching a signed-out entry frees it */
    CHECK_OK(nspv2_lookup_begin(b, &q, LUP_RETURN_ALL, &h));
    CHECK_OK(sign_out(a, "hal@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_close(b));
}

TEST(test_ref_session_end_signs_out)
{
    fresh();
    advertise_ref();
    uint64_t a, b, c;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    CHECK_OK(nspv2_session_open(&c));
    CHECK_OK(sign_in(a, "jan@example.com", -1));
    CHECK_OK(sign_in(b, "kim@example.com", -1));
    CHECK_OK(sign_in(b, "lee@example.com", -1));
    CHECK_OK(sign_in(c, "mo@example.com", -1));
    /* a lookup in flight sees the names of an abandoned session go */
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(c, &q, LUP_RETURN_NAME | LUP_RETURN_COMMENT, &h));
    CHECK_OK(nspv2_session_close(a)); /* NSPv2Cleanup */
    CHECK(look_error(c, "jan@example.com") == WSASERVICE_NOT_FOUND);
    CHECK_OK(nspv2_session_abandon(b)); /* NSPv2ClientSessionRundown */
    char got[256];
    CHECK(look_names(c, "*@example.com", got, sizeof got) == NO_ERROR);
    CHECK(strcmp(got, "mo@example.com") == 0);
    const char *expect[][2] = {{"jan@example.com", "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER"},
                               {"kim@example.com", "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER"},
                               {"lee@example.com", "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER"},
                               {"mo@example.com", "MISTATUS_ONLINE"}};
    result_buf buf;
    for (int i = 0; i < 4; i++) {
        DWORD len = sizeof buf.bytes;
        CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, expect[i][0]));
        CHECK(wstr_is(buf.qs.lpszComment, expect[i][1]));
        CHECK(buf.qs.dwOutputFlags == (i < 3 ? RESULT_IS_DELETED : RESULT_IS_ADDED));
    }
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(sign_in(c, "kim@example.com", -1)); /* free again */
    /* unadvertising runs the sessions down: their names go too */
    CHECK_OK(WSAUnadvertiseProvider(&nspv2_ref_provider_id));
    advertise_ref();
    CHECK(look_error(c, "kim@example.com") == WSASERVICE_NOT_FOUND); /* c starts again */
    CHECK_OK(nspv2_session_close(c));
    nspv2_host_stats st = stats();
    CHECK(st.startups == 4 && st.cleanups == 2 && st.rundowns == 2);
}

TEST(test_ref_invitations)
{
    fresh();
    advertise_ref();
    uint64_t a, b;
    CHECK_OK(nspv2_session_open(&a));
    CHECK_OK(nspv2_session_open(&b));
    CHECK_OK(sign_in(a, "max@example.com", -1));
    CHECK_OK(sign_in(b, "ned@example.com", -1));
    CHECK_OK(sign_in(b, "oli@example.com", MISTATUS_INVISIBLE));
    CHECK_OK(invite(a, "max@example.com", "NED@example.com"));
    CHECK_ERR(invite(a, "max@example.com", "Max@Example.com"), WSAEINVAL);  /* SR_INVITED_SELF */
    CHECK_ERR(invite(a, "max@example.com", "pat@example.com"), WSASERVICE_NOT_FOUND);
    CHECK_ERR(invite(a, "ned@example.com", "max@example.com"), WSAEACCES);  /* SR_NOT_INVITER */
    CHECK_ERR(invite(a, "pat@example.com", "max@example.com"), WSASERVICE_NOT_FOUND);
    CHECK_ERR(invite(a, "max@example.com", "oli@example.com"), WSAEREFUSED); /* declined */
    CHECK_ERR(invite(a, "max@example.com", ""), WSASERVICE_NOT_FOUND);
    CHECK_ERR(invite(a, "", ""), WSAEINVAL); /* inviting oneself, whoever that is */
    /* an invitation changes nothing */
    result_buf buf;
    look_one(a, "ned@example.com", LUP_RETURN_ALL, &buf);
    check_entry(&buf.qs, sizeof buf.bytes, "ned@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_ADDED, 1);
    /* "invite=" is case-sensitive: anything else is a registration */
    reg r;
    reg_init(&r, "max@example.com");
    wcopy(r.query, 160, "Invite=ned@example.com");
    r.q.lpszQueryString = r.query;
    CHECK_OK(reg_set(a, &r, RNRSERVICE_REGISTER, 0));
    look_one(a, "max@example.com", LUP_RETURN_ALL, &buf);
    CHECK(buf.qs.dwOutputFlags == RESULT_IS_CHANGED && buf.qs.dwNumberOfCsAddrs == 0);
    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_close(b));
}

TEST(test_ref_every_buffer_size)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    reg r;
    reg_init(&r, "alice@example.com");
    reg_v4(&r, 10, 5061);
    reg_v6(&r, 0x10, 5061);
    reg_status(&r, MISTATUS_AWAY);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, 0));
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
        INT rc = nspv2_lookup_next(h, 0, &len, size ? &buf.qs : NULL);
        if (rc != SOCKET_ERROR || WSAGetLastError() != WSAEFAULT || len != need)
            sizes_ok = 0;
        for (size_t i = 0; i < sizeof buf.bytes; i++) /* nothing written */
            if (buf.bytes[i] != 0xee)
                sizes_ok = 0;
    }
    CHECK(sizes_ok);
    memset(buf.bytes, 0xee, sizeof buf.bytes);
    DWORD len = need;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_entry(&buf.qs, need, "alice@example.com", MISTATUS_AWAY, "MISTATUS_AWAY",
                RESULT_IS_ADDED, 1);
    CHECK(buf.qs.dwNumberOfCsAddrs == 2 && is_v4(&buf.qs.lpcsaBuffer[0], 10, 5061) &&
          is_v6(&buf.qs.lpcsaBuffer[1], 0x10, 5061));
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

TEST(test_ref_held_result_and_flush_previous)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    CHECK_OK(sign_in(s, "alice@example.com", MISTATUS_ONLINE));
    CHECK_OK(sign_in(s, "bob@example.com", MISTATUS_BUSY));
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
    /* the held result is the one taken when it did not fit (as Python
     * holds the QuerySet): an update in between shows next time only */
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = 16;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSAEFAULT);
    CHECK_OK(sign_in(s, "alice@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_out(s, "alice@example.com"));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_entry(&buf.qs, sizeof buf.bytes, "alice@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_ADDED, 1);
    CHECK_OK(nspv2_lookup_end(h));
    /* a held result survives the end of the entry and of the lookup */
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    len = 16;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, &buf.qs), WSAEFAULT);
    CHECK_OK(sign_out(s, "bob@example.com"));
    nspv2_ref_provider_reset();
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_reset_with_lookups_in_flight)
{
    fresh();
    advertise_ref();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    CHECK_OK(sign_in(s, "pia@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(s, "quin@example.com", MISTATUS_AWAY));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "*@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    nspv2_ref_provider_reset();
    CHECK(look_error(s, "pia@example.com") == WSASERVICE_NOT_FOUND);
    result_buf buf;
    for (int i = 0; i < 2; i++) {
        DWORD len = sizeof buf.bytes;
        CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
        CHECK(buf.qs.dwOutputFlags == RESULT_IS_DELETED);
        CHECK(blob_is_presence(buf.qs.lpBlob, MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER));
    }
    CHECK_OK(nspv2_lookup_end(h));
    /* the session goes on; the names are free */
    CHECK_OK(sign_in(s, "pia@example.com", -1));
    CHECK_OK(nspv2_session_close(s));
}

/* The entry points called directly, as Winsock would (no host checks in
 * front of them). */
TEST(test_ref_entry_points)
{
    fresh();
    NSPV2_ROUTINE r;
    nspv2_ref_provider_routine(&r);
    CHECK(r.cbSize == sizeof r && r.dwMajorVersion == 1 && r.dwMinorVersion == 1);
    CHECK(r.NSPv2Startup && r.NSPv2Cleanup && r.NSPv2LookupServiceBegin &&
          r.NSPv2LookupServiceNextEx && r.NSPv2LookupServiceEnd && r.NSPv2SetServiceEx &&
          r.NSPv2ClientSessionRundown);
    GUID id = nspv2_ref_provider_id;
    LPVOID arg = NULL, arg2 = NULL;
    CHECK_ERR(r.NSPv2Startup((LPGUID)&tp_id, &arg), WSAEINVAL); /* not ours */
    CHECK_ERR(r.NSPv2Startup(&id, NULL), WSAEINVAL);
    CHECK_OK(r.NSPv2Startup(&id, &arg));
    CHECK_OK(r.NSPv2Startup(&id, &arg2));
    CHECK(arg != NULL && arg2 != NULL && arg != arg2);

    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = NS_EMAIL;
    q.lpszServiceInstanceName = W("*@example.com");
    HANDLE h = NULL;
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, NULL), WSAEINVAL);
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, NULL, 0, arg, &h), WSAEINVAL);
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, (LPVOID)(uintptr_t)987654, &h), WSAEINVAL);
    q.dwSize = sizeof q - 1;
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSAEINVAL);
    q.dwSize = sizeof q;
    q.dwNameSpace = NS_DNS;
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSAEINVAL);
    q.dwNameSpace = NS_ALL;
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSASERVICE_NOT_FOUND);
    q.lpszServiceInstanceName = W("x@example.com");
    WSAVERSION v = {1, (WSAECOMPARATOR)5};
    q.lpVersion = &v; /* malformed: not a WSAECOMPARATOR */
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSAEINVAL);
    q.lpVersion = NULL;
    q.dwNumberOfProtocols = 1; /* a count with no array */
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSAEINVAL);
    q.dwNumberOfProtocols = 0;
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSASERVICE_NOT_FOUND);

    CHECK_ERR(r.NSPv2LookupServiceEnd((HANDLE)(uintptr_t)4242), WSA_INVALID_HANDLE);
    CHECK_ERR(r.NSPv2LookupServiceEnd(NULL), WSA_INVALID_HANDLE);
    CHECK_OK(r.NSPv2Cleanup(&id, arg));
    CHECK_ERR(r.NSPv2Cleanup(&id, arg), WSAEINVAL); /* ended already */
    CHECK_ERR(r.NSPv2Cleanup(&id, (LPVOID)(uintptr_t)987654), WSAEINVAL);
    CHECK_ERR(r.NSPv2LookupServiceBegin(&id, &q, 0, arg, &h), WSAEINVAL);
    r.NSPv2ClientSessionRundown(&id, arg2);
    r.NSPv2ClientSessionRundown(&id, arg2); /* unknown: ignored */
    CHECK_ERR(r.NSPv2Cleanup(&id, arg2), WSAEINVAL);
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
    CHECK_OK(sign_in(s, "bob@example.com", MISTATUS_BUSY));
    CHECK_OK(sign_in(s, "alice@example.com", -1));
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
    CHECK_ERR(WSALookupServiceBeginW(&q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
    CHECK_OK(WSASetServiceW(&q, RNRSERVICE_REGISTER, 0));
    CHECK_OK(WSALookupServiceBeginW(&q, LUP_RETURN_ALL, &h));
    CHECK_OK(WSALookupServiceNextW(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "bob@example.com"));
    CHECK(wstr_is(buf.qs.lpszComment, "MISTATUS_ONLINE"));
    len = sizeof buf.bytes;
    CHECK_ERR(WSALookupServiceNextW(h, 0, &len, &buf.qs), WSA_E_NO_MORE);
    CHECK_OK(WSALookupServiceEnd(h));
    CHECK_ERR(WSALookupServiceEnd(h), WSA_INVALID_HANDLE);
    CHECK_OK(WSASetServiceW(&q, RNRSERVICE_DELETE, 0));
    CHECK_ERR(WSASetServiceW(&q, RNRSERVICE_DELETE, 0), WSASERVICE_NOT_FOUND);
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
    advertise_bench();
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
    /* the host keeps working, for tp and for the bench provider */
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    DWORD len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    WSAQUERYSETW rq = query(NS_EMAIL, NULL, "alice@example.com");
    CHECK_OK(nspv2_lookup_begin(s, &rq, LUP_RETURN_ALL, &h));
    len = sizeof buf.bytes;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf.qs));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().provider_faults == 3);
}

TEST(test_set_service)
{
    fresh();
    advertise_bench();
    uint64_t s;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "dave@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    q.lpNSProviderId = (LPGUID)&nspv2_bench_provider_id;
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_DELETE, 0), WSAEOPNOTSUPP);
    CHECK_ERR(nspv2_set_service(s, NULL, RNRSERVICE_REGISTER, 0), WSAEFAULT);
    CHECK_ERR(nspv2_set_service(s, &q, (WSAESETSERVICEOP)7, 0), WSAEINVAL);
    CHECK_ERR(nspv2_set_service(s + 99, &q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    q.dwSize = sizeof q - 1;
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    q = query(NS_DNS, NULL, "dave@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSASERVICE_NOT_FOUND);
    /* two providers serve NS_EMAIL: a registration must name one */
    advertise_ref();
    q = query(NS_EMAIL, NULL, "dave@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
    q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id;
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    CHECK(look_error(s, "dave@example.com") == NO_ERROR);
    /* NS_ALL reaches both: the first error (the bench provider's) comes
     * back, and the reference provider registered the name all the same */
    q = query(NS_ALL, NULL, "erin@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    CHECK(look_error(s, "erin@example.com") == NO_ERROR);
    /* a provider that registers */
    advertise_tp();
    q = query(TP_NAMESPACE, NULL, "x");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().startups == 3 && stats().cleanups == 3);
    /* the session's names went with it */
    CHECK_OK(nspv2_session_open(&s));
    CHECK(look_error(s, "dave@example.com") == WSASERVICE_NOT_FOUND);
    CHECK_OK(nspv2_session_close(s));
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
    /* a session keeps two names of example.com (and one elsewhere) signed
     * in while the driver runs */
    uint64_t keeper;
    CHECK_OK(nspv2_session_open(&keeper));
    CHECK_OK(sign_in(keeper, "bob@example.com", MISTATUS_BUSY));
    CHECK_OK(sign_in(keeper, "alice@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(keeper, "carol@example.org", MISTATUS_ONLINE));
    nspv2_host_stats_reset();
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
    CHECK(st.sessions_open == 1 && /* the keeper */ st.lookups_open == 0 && st.async_pending == 0);
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
    /* open, nspv2_session_start (Startup), close (Cleanup) */
    CHECK(code_count(&r, NO_ERROR) == 800 * 3 && r.n_codes == 1);
    st = stats();
    CHECK(st.startups == 800 && st.sessions_open == 1); /* the keeper */
    CHECK_OK(nspv2_session_close(keeper));

    /* the yardstick: the bench provider, one result per lookup */
    advertise_bench();
    nspv2_host_stats_reset();
    cfg.session_only = 0;
    cfg.cycles = (uint32_t)C;
    cfg.abandon_every = (uint32_t)A;
    cfg.provider_id = &nspv2_bench_provider_id;
    cfg.service_name = W("alice@example.com");
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x2000 bench alice@example.com", &r);
    CHECK(r.cycles_done == cycles && r.results == cycles);
    /* open, begin, next, end, close/abandon succeed; 1 x next ends */
    CHECK(code_count(&r, NO_ERROR) == 5 * cycles);
    CHECK(code_count(&r, WSA_E_NO_MORE) == cycles);
    CHECK(r.n_codes == 2);
    st = stats();
    CHECK(st.sessions_open == 0 && st.lookups_open == 0 && st.async_pending == 0);
    CHECK(st.startups == cycles && st.rundowns == abandons);
    CHECK(st.cleanups == cycles - abandons);
    CHECK(st.provider_faults == 0 && st.late_completions == 0);
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

/* open, look up (NS_ALL: ref, bench, then tp), end, close or abandon; the handle is
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
    advertise_bench();
    advertise_tp();
    uint64_t keeper; /* keeps two names signed in for the lookups */
    CHECK_OK(nspv2_session_open(&keeper));
    CHECK_OK(sign_in(keeper, "alice@example.com", -1));
    CHECK_OK(sign_in(keeper, "bob@example.com", MISTATUS_BUSY));
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
    CHECK_OK(nspv2_session_close(keeper));

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

/* The presence directory under concurrent sign-ins, updates, sign-outs,
 * session ends, lookups holding entries, and resets (run it under ASan:
 * an entry freed while a lookup still holds it shows there). */

static const WCHAR *const presence_names[] = {
    u"w0-0@example.com", u"w0-1@example.com", u"w0-2@example.com",
    u"w1-0@example.com", u"w1-1@example.com", u"w1-2@example.com"};

static void presence_writer_main(void *p)
{
    int w = (int)(uintptr_t)p;
    const DWORD states[] = {MISTATUS_ONLINE, MISTATUS_AWAY, MISTATUS_INVISIBLE, MISTATUS_BUSY};
    uint64_t s = 0;
    for (int i = 0; !stress_done(); i++) {
        if (!s && nspv2_session_open(&s) != NO_ERROR) {
            stress_unexpected("writer open", WSAGetLastError());
            continue;
        }
        char name[32], other[32];
        snprintf(name, sizeof name, "w%d-%d@example.com", w, i % 3);
        snprintf(other, sizeof other, "w%d-%d@example.com", 1 - w, (i / 3) % 3);
        int e;
        if (sign_in(s, name, (long)states[i % 4]) != NO_ERROR)
            stress_unexpected("sign in", WSAGetLastError());
        reg r;
        reg_init(&r, name);
        reg_v4(&r, (unsigned char)(i % 5), 5060);
        reg_v6(&r, (unsigned char)(i % 7), 5060);
        if (reg_set(s, &r, RNRSERVICE_REGISTER, SERVICE_MULTIPLE) != NO_ERROR)
            stress_unexpected("update", WSAGetLastError());
        reg_init(&r, name);
        reg_v4(&r, (unsigned char)(i % 5), 5060);
        /* a reset may have signed the name out meanwhile */
        if (reg_set(s, &r, RNRSERVICE_DEREGISTER, 0) != NO_ERROR &&
            (e = WSAGetLastError()) != WSASERVICE_NOT_FOUND)
            stress_unexpected("deregister", e);
        if (invite(s, name, other) != NO_ERROR && (e = WSAGetLastError()) != WSASERVICE_NOT_FOUND &&
            e != WSAEREFUSED)
            stress_unexpected("invite", e);
        if (i % 2 && sign_out(s, name) != NO_ERROR &&
            (e = WSAGetLastError()) != WSASERVICE_NOT_FOUND)
            stress_unexpected("sign out", e);
        if (i % 16 == 15) { /* the session ends: its names go */
            INT rc = (i / 16) % 2 ? nspv2_session_abandon(s) : nspv2_session_close(s);
            if (rc != NO_ERROR)
                stress_unexpected("writer close", WSAGetLastError());
            s = 0;
        }
    }
    if (s)
        nspv2_session_close(s);
}

/* A result must be one the directory can produce. */
static int presence_result_ok(const WSAQUERYSETW *q)
{
    const WCHAR *n = q->lpszServiceInstanceName;
    if (!n || n[0] != 'w' || !q->lpBlob || q->lpBlob->cbSize != NSPV2_PRESENCE_BLOB_SIZE ||
        !q->lpVersion || q->lpVersion->dwVersion == 0)
        return 0;
    const unsigned char *b = q->lpBlob->pBlobData;
    DWORD status = (DWORD)b[8] | (DWORD)b[9] << 8;
    if (q->dwOutputFlags == RESULT_IS_DELETED)
        return status == MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER;
    if (q->dwOutputFlags == RESULT_IS_ADDED)
        return q->lpVersion->dwVersion == 1;
    return q->dwOutputFlags == RESULT_IS_CHANGED && q->lpVersion->dwVersion > 1;
}

static void presence_reader_main(void *p)
{
    uintptr_t seed = (uintptr_t)p;
    result_buf *buf = malloc(sizeof *buf);
    for (int i = 0; buf && !stress_done(); i++) {
        uint64_t s;
        if (nspv2_session_open(&s) != NO_ERROR) {
            stress_unexpected("reader open", WSAGetLastError());
            continue;
        }
        WSAQUERYSETW q = query(NS_EMAIL, NULL, NULL);
        q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id;
        q.lpszServiceInstanceName =
            (LPWSTR)(i % 3 ? u"*@example.com" : presence_names[(i + (int)seed) % 6]);
        HANDLE h;
        if (nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h) == NO_ERROR) {
            for (int k = 0;; k++) {
                DWORD len = (k + i) % 3 == 0 ? 64 : 4096;
                DWORD flags = (k + i) % 5 == 0 ? LUP_FLUSHPREVIOUS : 0;
                if (nspv2_lookup_next(h, flags, &len, &buf->qs) == NO_ERROR) {
                    if (!presence_result_ok(&buf->qs))
                        stress_unexpected("a result out of the blue", 0);
                    continue;
                }
                int e = WSAGetLastError();
                if (e == WSAEFAULT && len > 64 && len < 4096)
                    continue; /* held: next time, with room (or flushed) */
                if (e != WSA_E_NO_MORE)
                    stress_unexpected("reader next", e);
                break;
            }
            if (nspv2_lookup_end(h) != NO_ERROR)
                stress_unexpected("reader end", WSAGetLastError());
        } else if (WSAGetLastError() != WSASERVICE_NOT_FOUND) {
            stress_unexpected("reader begin", WSAGetLastError());
        }
        INT rc = i % 4 == 0 ? nspv2_session_abandon(s) : nspv2_session_close(s);
        if (rc != NO_ERROR)
            stress_unexpected("reader close", WSAGetLastError());
    }
    free(buf);
}

static void presence_resetter_main(void *p)
{
    (void)p;
    while (!stress_done()) {
        nspv2_ref_provider_reset();
        nspv2_sleep_ms(3);
    }
}

TEST(test_ref_stress)
{
    fresh();
    advertise_ref();
    st.done = 0;
    st.errors = 0;
    nspv2_thread t[5];
    CHECK(nspv2_thread_create(&t[0], presence_writer_main, (void *)0) == 0);
    CHECK(nspv2_thread_create(&t[1], presence_writer_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&t[2], presence_reader_main, (void *)0) == 0);
    CHECK(nspv2_thread_create(&t[3], presence_reader_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&t[4], presence_resetter_main, NULL) == 0);
    nspv2_sleep_ms(STRESS_MS);
    nspv2_mutex_lock(&st.lock);
    st.done = 1;
    nspv2_mutex_unlock(&st.lock);
    for (int i = 0; i < 5; i++)
        nspv2_thread_join(t[i]);
    CHECK(st.errors == 0);
    nspv2_host_stats s = stats();
    CHECK(s.sessions_open == 0 && s.lookups_open == 0 && s.async_pending == 0);
    CHECK(s.startups == s.cleanups + s.rundowns);
    CHECK(s.provider_faults == 0);
    printf("     presence stress: startups %" PRIu64 ", cleanups %" PRIu64 ", rundowns %" PRIu64
           "\n",
           s.startups, s.cleanups, s.rundowns);
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
    RUN(test_bench_lookup);
    RUN(test_bench_every_buffer_size);
    RUN(test_bench_flush_previous);
    RUN(test_ref_sign_in_and_look_up);
    RUN(test_ref_lup_return_flags);
    RUN(test_ref_update_and_deregister);
    RUN(test_ref_wildcard_sorted);
    RUN(test_ref_bad_input);
    RUN(test_ref_another_sessions_name);
    RUN(test_ref_sign_out_in_flight);
    RUN(test_ref_session_end_signs_out);
    RUN(test_ref_invitations);
    RUN(test_ref_every_buffer_size);
    RUN(test_ref_held_result_and_flush_previous);
    RUN(test_ref_reset_with_lookups_in_flight);
    RUN(test_ref_entry_points);
    RUN(test_ns_all_drains_in_order);
    RUN(test_winsock_named_calls);
    RUN(test_last_error_per_thread);
    RUN(test_provider_faults);
    RUN(test_set_service);
    RUN(test_driver);
    RUN(test_reset);
    RUN(test_stress);
    RUN(test_ref_stress);
    fresh();
    printf("%lu checks, %lu failed\n", checks_run, checks_failed);
    return checks_failed ? 1 : 0;
}
