/*
 * test_sessions.c - tests of advertise/unadvertise, namespaces, sessions,
 * the Winsock-named calls, the per-thread last error and nspv2_host_reset.
 */
#include "test_support.h"

#ifndef _WIN32
#include <unistd.h> /* getpid */
#endif

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

    /* a provider the catalog does not list may not advertise (the other
     * checks come first) */
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &r), WSAEINVALIDPROVIDER);
    bad = r;
    bad.NSPv2LookupServiceEnd = NULL;
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &bad), WSAEINVAL);
    CHECK(stats().providers == 0);
    install_provider(&tp_id, TP_NAMESPACE, NULL);

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
    /* a disabled provider is still installed: it may advertise */
    CHECK_OK(WSCEnableNSProvider((LPGUID)&tp_id, 0));
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    CHECK_OK(WSCEnableNSProvider((LPGUID)&tp_id, 1));

    /* the table is copied: changing the caller's copy changes nothing */
    r = tp_routine();
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    memset(&r, 0, sizeof r);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));

    /* the catalog: installed once; uninstalled, an advertised provider
     * stays advertised but no query reaches it */
    CHECK_ERR(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), NS_DNS, 1, (LPGUID)&tp_id, NULL),
              WSANO_RECOVERY);
    CHECK_ERR(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), NS_DNS, 1, NULL, NULL), WSAEFAULT);
    CHECK_OK(WSCUnInstallNameSpace((LPGUID)&tp_id));
    CHECK_ERR(WSCUnInstallNameSpace((LPGUID)&tp_id), WSAEINVAL);
    CHECK(stats().providers == 1);
    s = open_session();
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSAEINVAL);
    q = query(NS_ALL, NULL, "x");
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
    CHECK_OK(nspv2_session_close(s));
    CHECK(tp.begins == 1);
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    r = tp_routine();
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &r), WSAEINVALIDPROVIDER);
}

#ifndef _WIN32
/* A catalog file that does not parse: advertising, lookups and
 * registrations fail with WSANO_RECOVERY (the file is never rewritten). */
TEST(test_corrupt_catalog)
{
    fresh();
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/nspv2-host-tests-%ld.catalog", dir && *dir ? dir : "/tmp",
             (long)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs("nspv2-catalog 1\nthis is not a provider line\n", f);
    fclose(f);
    install_provider(&tp_id, TP_NAMESPACE, NULL); /* the memory catalog */
    NSPV2_ROUTINE r = tp_routine();
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    CHECK_OK(nspv2_catalog_set_path(path));
    CHECK_ERR(WSAAdvertiseProvider(&tp_silent_id, &r), WSANO_RECOVERY);
    CHECK(strlen(nspv2_catalog_error_text()) > 0);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSANO_RECOVERY);
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSANO_RECOVERY);
    CHECK_ERR(nspv2_session_start(s, TP_NAMESPACE, NULL), WSANO_RECOVERY);
    CHECK(tp.begins == 0 && stats().startups == 0);
    CHECK_OK(nspv2_session_close(s));
    CHECK_OK(nspv2_catalog_set_path(NSPV2_CATALOG_MEMORY));
    remove(path);
    fresh();
}
#endif

TEST(test_startup_failure)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2Startup, fail_startup);
    advertise_installed(&tp_fail_id, NS_EMAIL, NULL, &r);
    NSPV2_SLOT(r, NSPv2Startup, silent_fail_startup);
    advertise_installed(&tp_silent_id, NS_EMAIL, NULL, &r);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(NS_ALL, &tp_fail_id, "x");
    HANDLE h;
    /* the provider's Startup fails (WSAEACCES): dropped, none left */
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND); /* tried again */
    q.lpNSProviderId = (LPGUID)&tp_silent_id;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK(stats().startups == 3);
    /* the Startup's own errors, as the host saw them: nspv2_session_start
     * still returns the first */
    CHECK_ERR(nspv2_session_start(s, NS_ALL, &tp_fail_id), WSAEACCES);
    CHECK_ERR(nspv2_session_start(s, NS_ALL, &tp_silent_id), WSAEINVAL);
    CHECK(stats().startups == 5);
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
    uint64_t a = open_session(), b = open_session(), c = open_session();
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
    uint64_t d = open_session();
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
    uint64_t s = open_session();
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

#ifdef _WIN32
/* A provider reporting its error the way Microsoft's sample does: with the
 * Win32 SetLastError, which ws2_32 reads back through WSAGetLastError. */
static INT WSAAPI win32_error_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg,
                                    LPHANDLE h)
{
    (void)id;
    (void)qs;
    (void)flags;
    (void)arg;
    (void)h;
    SetLastError(WSATYPE_NOT_FOUND);
    return SOCKET_ERROR;
}

static INT WSAAPI win32_error_end(HANDLE h)
{
    (void)h;
    SetLastError(WSATYPE_NOT_FOUND);
    return SOCKET_ERROR;
}

TEST(test_last_error_is_win32_last_error)
{
    fresh();
    WSASetLastError(WSAENOMORE);
    CHECK(GetLastError() == WSAENOMORE);
    SetLastError(WSAEREFUSED);
    CHECK(WSAGetLastError() == WSAEREFUSED);

    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, win32_error_begin);
    advertise_installed(&tp_id, TP_NAMESPACE, NULL, &r);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(TP_NAMESPACE, NULL, "x");
    HANDLE h = NULL;
    /* the Begin's error was read (not counted as missing); the provider
     * dropped, the lookup has none left */
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK(GetLastError() == WSASERVICE_NOT_FOUND);
    CHECK(stats().missing_last_error == 0);
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    /* End's error comes back as it is */
    r = tp_routine();
    NSPV2_SLOT(r, NSPv2LookupServiceEnd, win32_error_end);
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    CHECK_ERR(nspv2_lookup_end(h), WSATYPE_NOT_FOUND);
    CHECK(GetLastError() == WSATYPE_NOT_FOUND);
    CHECK(stats().missing_last_error == 0);
    CHECK_OK(nspv2_session_close(s));
    fresh();
}
#endif

/* ------------------------------------------------------------------------ */
/* a Startup calling back into the host                                      */

/* What the re-entering Startup does and saw. Set before the outer call,
 * read after it returns (the Startup runs on the caller's thread). */
static struct {
    int armed;          /* the next Startup re-enters (once) */
    uint64_t session;   /* the session whose Startup re-enters */
    uint64_t other;     /* another session, for the nested lookup */
    INT own_begin, own_winsock, own_start;
    int own_begin_err, own_winsock_err, own_start_err;
    INT other_session, other_provider;
    nspv2_thread waiter;  /* another thread needing the same provider session */
    int waiter_started;
    next_runner waited;   /* its outcome (h unused) */
} reent;

static void reentrant_waiter_main(void *p)
{
    (void)p;
    HANDLE h = NULL;
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    reent.waited.ret = nspv2_lookup_begin(reent.session, &q, 0, &h);
    reent.waited.err = WSAGetLastError();
    if (reent.waited.ret == NO_ERROR)
        nspv2_lookup_end(h);
}

typedef INT (WSAAPI *startup_fn)(LPGUID, LPVOID *);
static startup_fn tp_routine_startup; /* the test provider's own Startup */

static INT WSAAPI reentrant_startup(LPGUID id, LPVOID *arg)
{
    INT r = tp_routine_startup(id, arg);
    if (r != NO_ERROR || !reent.armed)
        return r;
    reent.armed = 0;
    /* another thread waits for this Startup, as before, and then works */
    reent.waiter_started = nspv2_thread_create(&reent.waiter, reentrant_waiter_main, NULL) == 0;
    nspv2_sleep_ms(20);
    HANDLE h = NULL;
    /* the same session and provider: its Startup is this very call */
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    reent.own_begin = nspv2_lookup_begin(reent.session, &q, 0, &h);
    reent.own_begin_err = WSAGetLastError();
    reent.own_winsock = WSALookupServiceBeginW(&q, 0, &h); /* the session entered */
    reent.own_winsock_err = WSAGetLastError();
    reent.own_start = nspv2_session_start(reent.session, NS_ALL, &tp_id);
    reent.own_start_err = WSAGetLastError();
    /* the same provider in another session: starts it there, and works */
    reent.other_session = nspv2_lookup_begin(reent.other, &q, 0, &h);
    if (reent.other_session == NO_ERROR)
        nspv2_lookup_end(h);
    /* another provider in the same session: works */
    q.lpNSProviderId = (LPGUID)&tp_fail_id;
    reent.other_provider = nspv2_lookup_begin(reent.session, &q, 0, &h);
    if (reent.other_provider == NO_ERROR)
        nspv2_lookup_end(h);
    return NO_ERROR;
}

static struct {
    nspv2_mutex lock;
    int done;
    INT outer;
    int outer_err;
} reent_run = {NSPV2_MUTEX_INIT, 0, 0, 0};

static void reentrant_lookup_main(void *p)
{
    (void)p;
    HANDLE h = NULL;
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    nspv2_session_enter(reent.session);
    INT r = nspv2_lookup_begin(reent.session, &q, 0, &h);
    int e = WSAGetLastError();
    if (r == NO_ERROR)
        nspv2_lookup_end(h);
    nspv2_session_enter(0);
    nspv2_mutex_lock(&reent_run.lock);
    reent_run.outer = r;
    reent_run.outer_err = e;
    reent_run.done = 1;
    nspv2_mutex_unlock(&reent_run.lock);
}

TEST(test_startup_reentering_its_own_session_fails_at_once)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    tp_routine_startup = (startup_fn)(void (*)(void))r.NSPv2Startup;
    NSPV2_SLOT(r, NSPv2Startup, reentrant_startup);
    advertise_installed(&tp_id, TP_NAMESPACE, NULL, &r);
    NSPV2_ROUTINE plain = tp_routine();
    advertise_installed(&tp_fail_id, NS_EMAIL, NULL, &plain);
    memset(&reent, 0, sizeof reent);
    reent.session = open_session();
    reent.other = open_session();
    reent.armed = 1;
    reent_run.done = 0;

    /* the lookup runs in a thread the test watches: a Startup that waits
     * for itself fails the test after 5 s instead of hanging it */
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, reentrant_lookup_main, NULL) == 0);
    int done = 0;
    for (int i = 0; i < 5000 && !done; i++) {
        nspv2_mutex_lock(&reent_run.lock);
        done = reent_run.done;
        nspv2_mutex_unlock(&reent_run.lock);
        if (!done)
            nspv2_sleep_ms(1);
    }
    CHECK(done);
    if (!done) {
        printf("FAILED %s: the re-entrant Startup waited for itself (deadlock)\n",
               current_test);
        printf("%lu checks, %lu failed\n", checks_run, checks_failed);
        exit(1); /* the thread is stuck inside the host: nothing can go on */
    }
    nspv2_thread_join(t);

    CHECK(reent_run.outer == NO_ERROR);
    CHECK(reent.own_begin == SOCKET_ERROR && reent.own_begin_err == WSAEINPROGRESS);
    CHECK(reent.own_winsock == SOCKET_ERROR && reent.own_winsock_err == WSAEINPROGRESS);
    CHECK(reent.own_start == SOCKET_ERROR && reent.own_start_err == WSAEINPROGRESS);
    CHECK(reent.other_session == NO_ERROR);
    CHECK(reent.other_provider == NO_ERROR);
    CHECK(reent.waiter_started);
    if (reent.waiter_started)
        nspv2_thread_join(reent.waiter);
    CHECK(reent.waited.ret == NO_ERROR);
    /* tp in the session, tp in the other session, the plain provider in the
     * session: three Startups, and the refused calls started nothing */
    CHECK(stats().startups == 3 && tp.nsessions == 3);
    CHECK(tp.begins == 4); /* the outer lookup, the waiter's, two from the Startup */

    /* once started, the session is the provider's like any other */
    WSAQUERYSETW q = query(NS_ALL, &tp_id, "x");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(reent.session, &q, 0, &h));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK(stats().startups == 3);

    CHECK_OK(nspv2_session_close(reent.session));
    CHECK_OK(nspv2_session_close(reent.other));
    nspv2_host_stats st = stats();
    CHECK(st.cleanups == 3 && st.rundowns == 0 && st.sessions_open == 0);
    for (int i = 0; i < tp.nsessions; i++)
        CHECK(tp.sessions[i]->cleanups == 1 && tp.sessions[i]->rundowns == 0);
    fresh();
}

TEST(test_reset)
{
    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    nspv2_host_reset();
    nspv2_host_stats st = stats();
    CHECK(st.providers == 0 && st.sessions_open == 0 && st.lookups_open == 0);
    CHECK(st.async_pending == 0);
    CHECK_ERR(nspv2_session_close(s), WSAEINVAL);
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK(tp.ends >= 1);
}

void run_session_tests(void)
{
    RUN(test_advertise_validation);
#ifndef _WIN32
    RUN(test_corrupt_catalog);
#endif
    RUN(test_startup_failure);
    RUN(test_sessions);
    RUN(test_unadvertise_with_sessions);
    RUN(test_winsock_named_calls);
    RUN(test_last_error_per_thread);
#ifdef _WIN32
    RUN(test_last_error_is_win32_last_error);
#endif
    RUN(test_startup_reentering_its_own_session_fails_at_once);
    RUN(test_reset);
}
