/*
 * test_lookups.c - tests of lookups and registration through the host:
 * async completion (from other threads, twice, late), timeouts, an end or
 * a close racing a waiting next, NS_ALL draining providers in order,
 * registration routing, and everything at once (the stress test).
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* async completion                                                          */

TEST(test_completion_errors)
{
    fresh();
    CHECK_ERR(WSAProviderCompleteAsyncCall(NULL, NO_ERROR), WSAEINVAL);
    CHECK_ERR(WSAProviderCompleteAsyncCall((HANDLE)(uintptr_t)0xdeadbeef, NO_ERROR), WSAEINVAL);

    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    tp_set_mode(TP_DOUBLE);
    result_buf buf;
    CHECK_ERR(next_result(h, 0, &buf), WSATRY_AGAIN); /* the first counts */
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

/* A lookup of the test provider whose next call the provider leaves
 * pending (TP_DEFER). */
static HANDLE deferred_lookup(uint64_t s)
{
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    tp_set_mode(TP_DEFER);
    return h;
}

static uint64_t ms_since(uint64_t t0_ns)
{
    return (nspv2_now_ns() - t0_ns) / 1000000u;
}

TEST(test_completion_from_other_thread)
{
    fresh();
    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = deferred_lookup(s);
    completer c = {50, WSATRY_AGAIN, -2, 0};
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, completer_main, &c) == 0);
    result_buf buf;
    uint64_t t0 = nspv2_now_ns();
    CHECK_ERR(next_result(h, 0, &buf), WSATRY_AGAIN);
    uint64_t waited_ms = ms_since(t0);
    nspv2_thread_join(t);
    CHECK(c.ret == NO_ERROR);
    CHECK(waited_ms >= 40 && waited_ms < 4000);
    /* the failing provider was left (its error recorded): it is not asked
     * again, and with no other provider the lookup is over */
    CHECK(tp.nexts == 1);
    CHECK_ERR(next_result(h, 0, &buf), WSATRY_AGAIN);
    CHECK(tp.nexts == 1);
    CHECK_OK(nspv2_lookup_end(h));
    /* and again, this time completing with the end */
    tp_set_mode(TP_SYNC);
    h = deferred_lookup(s);
    c.code = WSA_E_NO_MORE; /* -> the lookup ends: no other provider */
    CHECK(nspv2_thread_create(&t, completer_main, &c) == 0);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
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
    uint64_t s = open_session();
    HANDLE h = deferred_lookup(s);
    result_buf buf;
    uint64_t t0 = nspv2_now_ns();
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_CANCELLED);
    uint64_t waited_ms = ms_since(t0);
    CHECK(waited_ms >= 90 && waited_ms < 3000);
    CHECK(stats().async_pending == 0);
    HANDLE late = tp_wait_deferred();
    CHECK(late != NULL);
    CHECK_ERR(WSAProviderCompleteAsyncCall(late, NO_ERROR), WSAEINVAL);
    CHECK_ERR(WSAProviderCompleteAsyncCall(late, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 1);

    /* the lookup still works afterwards */
    tp_set_mode(TP_SYNC);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_end_races_next)
{
    fresh();
    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = deferred_lookup(s);
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
    h = deferred_lookup(s);
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

TEST(test_ns_all_drains_in_order)
{
    fresh();
    advertise_ref();
    advertise_tp();
    nspv2_mutex_lock(&tp.lock);
    tp.results = 2;
    nspv2_mutex_unlock(&tp.lock);
    uint64_t s = open_session();
    CHECK_OK(sign_in(s, "bob@example.com", MISTATUS_BUSY));
    CHECK_OK(sign_in(s, "alice@example.com", -1));
    /* LUP_NON_AUTHORITATIVE: every routed provider, in route order (the
     * primary for example.com, then tp: another namespace) */
    HANDLE h = begin_lookup(s, NS_ALL, "*@example.com", LUP_RETURN_ALL | LUP_NON_AUTHORITATIVE);
    const char *expected[] = {"alice@example.com", "bob@example.com", "tp0", "tp1"};
    result_buf buf;
    for (int i = 0; i < 4; i++) {
        CHECK_OK(next_result(h, 0, &buf));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, expected[i]));
    }
    /* tp's result carries an AFPROTOCOLS array, relocated too */
    CHECK(buf.qs.dwNumberOfProtocols == 1 && buf.qs.lpafpProtocols &&
          in_buffer(buf.qs.lpafpProtocols, sizeof(AFPROTOCOLS), buf.bytes, 4096) &&
          buf.qs.lpafpProtocols->iAddressFamily == NSPV2_AF_INET6 &&
          buf.qs.lpafpProtocols->iProtocol == 17);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE); /* and again */
    CHECK_OK(nspv2_lookup_end(h));
    CHECK(tp.ends == 1);
    /* without it, the first provider that answered is the answer: tp is
     * begun (and ended) but never asked for a result */
    int nexts = tp.nexts;
    h = begin_lookup(s, NS_ALL, "*@example.com", LUP_RETURN_ALL);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(next_result(h, 0, &buf));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, expected[i]));
    }
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK(tp.nexts == nexts && tp.begins == 2 && tp.ends == 1);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK(tp.ends == 2);
    /* a provider whose Begin fails is skipped while another succeeds */
    h = begin_lookup(s, NS_ALL, "nobody@example.com", LUP_RETURN_NAME);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().cleanups == 2);
}

TEST(test_set_service)
{
    fresh();
    advertise_bench();
    uint64_t s = open_session();
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
    /* two providers serve NS_EMAIL: a registration goes to the first of
     * the route only, the name's primary provider (the reference provider
     * for example.com)... */
    advertise_ref();
    q = query(NS_EMAIL, NULL, "dave@example.com");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    CHECK(look_error(s, "dave@example.com") == NO_ERROR);
    /* ...for another domain both are wildcard providers (the bench one
     * installed without a blob): catalog order, the bench provider first */
    q = query(NS_EMAIL, NULL, "dave@example.net");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSAEOPNOTSUPP);
    CHECK(look_error(s, "dave@example.net") == WSASERVICE_NOT_FOUND);
    q.lpNSProviderId = (LPGUID)&nspv2_ref_provider_id; /* named: that one */
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    CHECK(look_error(s, "dave@example.net") == NO_ERROR);
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
/* concurrency: everything at once, then check that the books balance       */

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
        stress_end_session(s, (i + (int)seed) % 3 == 0, "close");
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
    stress_start();
    /* the workers first, then their helpers; the completer after them all */
    nspv2_thread completer, t[7];
    CHECK(nspv2_thread_create(&completer, tp_completer_main, NULL) == 0);
    CHECK(nspv2_thread_create(&t[4], stress_ender_main, NULL) == 0);
    CHECK(nspv2_thread_create(&t[5], stress_closer_main, NULL) == 0);
    CHECK(nspv2_thread_create(&t[6], stress_churn_main, NULL) == 0);
    CHECK(nspv2_thread_create(&t[0], stress_lookup_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&t[1], stress_lookup_main, (void *)2) == 0);
    CHECK(nspv2_thread_create(&t[2], stress_session_main, NULL) == 0);
    CHECK(nspv2_thread_create(&t[3], stress_session_main, NULL) == 0);
    stress_run(t, 7);
    nspv2_mutex_lock(&tp.lock);
    tp.stop = 1;
    nspv2_mutex_unlock(&tp.lock);
    nspv2_thread_join(completer);
    CHECK_OK(nspv2_session_close(keeper));

    nspv2_host_stats s = stress_check_books();
    int once = 1;
    for (int i = 0; i < tp.nsessions; i++)
        if (tp.sessions[i]->cleanups + tp.sessions[i]->rundowns != 1)
            once = 0;
    CHECK(once); /* every provider session ended exactly once */
    printf("     stress: %d test-provider sessions, startups %" PRIu64 ", cleanups %" PRIu64
           ", rundowns %" PRIu64 ", late completions %" PRIu64 "\n",
           tp.nsessions, s.startups, s.cleanups, s.rundowns, s.late_completions);
}

void run_lookup_tests(void)
{
    RUN(test_completion_errors);
    RUN(test_completion_from_other_thread);
    RUN(test_timeout_and_late_completion);
    RUN(test_end_races_next);
    RUN(test_ns_all_drains_in_order);
    RUN(test_set_service);
    RUN(test_stress);
}
