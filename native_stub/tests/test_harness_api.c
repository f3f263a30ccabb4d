/*
 * test_harness_api.c - what loaders, checkers and harnesses ask the host:
 * harness async handles (nspv2_async_create / wait / close), what is
 * advertised and installed (nspv2_host_advertise_count, _providers,
 * _provider_table, _installed, _installed_identifier), and the counters
 * double_completions and missing_last_error.
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* harness handles                                                           */

TEST(test_async_handle_lifecycle)
{
    fresh();
    CHECK_ERR(nspv2_async_create(NULL), WSAEFAULT);
    HANDLE h = NULL;
    CHECK_OK(nspv2_async_create(&h));
    CHECK(h != NULL);
    CHECK(stats().async_pending == 1);

    INT code = -1, last = -1;
    uint32_t n = 99;
    CHECK_ERR(nspv2_async_wait(h, 0, &code, &last, &n), WSAETIMEDOUT);
    CHECK(n == 0 && code == -1 && last == -1); /* code and last error untouched */
    CHECK_ERR(nspv2_async_wait(h, 30, NULL, NULL, NULL), WSAETIMEDOUT);

    WSASetLastError(WSAENOBUFS); /* the completer's last error is recorded */
    CHECK_OK(WSAProviderCompleteAsyncCall(h, WSAEFAULT));
    CHECK(WSAGetLastError() == WSAENOBUFS); /* and left alone */
    CHECK(stats().async_pending == 0);
    CHECK_OK(nspv2_async_wait(h, 0, &code, &last, &n));
    CHECK(code == WSAEFAULT && last == WSAENOBUFS && n == 1);

    /* a second completion: refused, counted on the handle and in the stats */
    WSASetLastError(0);
    CHECK_ERR(WSAProviderCompleteAsyncCall(h, NO_ERROR), WSAEINVAL);
    CHECK_OK(nspv2_async_wait(h, 0, &code, &last, &n));
    CHECK(code == WSAEFAULT && last == WSAENOBUFS && n == 2); /* the first wins */
    CHECK(stats().double_completions == 1);
    CHECK(stats().late_completions == 0);

    CHECK_OK(nspv2_async_close(h));
    CHECK_ERR(nspv2_async_wait(h, 0, &code, &last, &n), WSAEINVAL);
    CHECK_ERR(nspv2_async_close(h), WSAEINVAL);
    /* completed, then forgotten: a third completion is a double one too */
    CHECK_ERR(WSAProviderCompleteAsyncCall(h, NO_ERROR), WSAEINVAL);
    CHECK(stats().double_completions == 2);

    /* handles the harness did not make */
    CHECK_ERR(nspv2_async_wait(NULL, 0, NULL, NULL, NULL), WSAEINVAL);
    CHECK_ERR(nspv2_async_wait((HANDLE)(uintptr_t)0x7fff1234, 0, NULL, NULL, NULL), WSAEINVAL);
    CHECK_ERR(nspv2_async_close(NULL), WSAEINVAL);
    /* never issued: refused, not counted */
    CHECK_ERR(WSAProviderCompleteAsyncCall((HANDLE)(uintptr_t)0x7fff1234, NO_ERROR), WSAEINVAL);
    CHECK(stats().double_completions == 2);
}

TEST(test_async_handles_are_distinct_and_fresh)
{
    fresh();
    HANDLE a, b;
    CHECK_OK(nspv2_async_create(&a));
    CHECK_OK(nspv2_async_create(&b));
    CHECK(a != b);
    CHECK_OK(WSAProviderCompleteAsyncCall(b, 7));
    CHECK_ERR(nspv2_async_wait(a, 0, NULL, NULL, NULL), WSAETIMEDOUT); /* a untouched */
    CHECK_OK(nspv2_async_close(b));
    HANDLE c;
    CHECK_OK(nspv2_async_create(&c));
    CHECK(c != a && c != b); /* never reused */
    CHECK_OK(nspv2_async_close(a));
    CHECK_OK(nspv2_async_close(c));
}

typedef struct late_completer {
    HANDLE h;
    uint32_t delay_ms;
    INT code;
    int err;    /* set as last error before completing */
    INT ret;
} late_completer;

static void late_completer_main(void *p)
{
    late_completer *c = p;
    nspv2_sleep_ms(c->delay_ms);
    WSASetLastError(c->err);
    c->ret = WSAProviderCompleteAsyncCall(c->h, c->code);
}

TEST(test_async_completed_on_another_thread)
{
    fresh();
    late_completer c = {.delay_ms = 50, .code = WSA_E_NO_MORE, .err = WSAEACCES};
    CHECK_OK(nspv2_async_create(&c.h));
    WSASetLastError(0);
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, late_completer_main, &c) == 0);
    INT code = 0, last = 0;
    uint32_t n = 0;
    uint64_t t0 = nspv2_now_ns();
    CHECK_OK(nspv2_async_wait(c.h, 5000, &code, &last, &n));
    uint64_t waited_ms = (nspv2_now_ns() - t0) / 1000000u;
    nspv2_thread_join(t);
    CHECK(c.ret == NO_ERROR);
    CHECK(code == WSA_E_NO_MORE && n == 1);
    CHECK(last == WSAEACCES);        /* the completing thread's, not ours */
    CHECK(WSAGetLastError() == 0);   /* ours untouched */
    CHECK(waited_ms < 4000);         /* woken by the completion, not the timeout */
    CHECK_OK(nspv2_async_close(c.h));
}

typedef struct waiter {
    HANDLE h;
    INT ret;
    int err;
} waiter;

static void waiter_main(void *p)
{
    waiter *w = p;
    w->ret = nspv2_async_wait(w->h, 10000, NULL, NULL, NULL);
    w->err = WSAGetLastError();
}

TEST(test_async_close_wakes_a_waiter)
{
    fresh();
    waiter w = {0};
    CHECK_OK(nspv2_async_create(&w.h));
    nspv2_thread t;
    uint64_t t0 = nspv2_now_ns();
    CHECK(nspv2_thread_create(&t, waiter_main, &w) == 0);
    nspv2_sleep_ms(50);
    CHECK_OK(nspv2_async_close(w.h));
    nspv2_thread_join(t);
    CHECK(w.ret == SOCKET_ERROR && w.err == WSAEINVAL);
    CHECK((nspv2_now_ns() - t0) / 1000000u < 5000);
    CHECK(stats().async_pending == 0);
    nspv2_host_reset(); /* releases the held record */
    CHECK(stats().timed_out_held == 0);
}

TEST(test_async_closed_pending_is_held_and_completed_late)
{
    fresh();
    HANDLE h;
    CHECK_OK(nspv2_async_create(&h));
    CHECK_OK(nspv2_async_close(h));
    nspv2_host_stats s = stats();
    CHECK(s.async_pending == 0);
    CHECK(s.timed_out_held == 1 && s.timed_out_held_bytes == 0); /* the buffer is not ours */
    CHECK_ERR(WSAProviderCompleteAsyncCall(h, NO_ERROR), WSAEINVAL);
    s = stats();
    CHECK(s.late_completions == 1 && s.double_completions == 0 && s.timed_out_held == 0);
    /* expired, then forgotten: another completion is neither late nor double */
    CHECK_ERR(WSAProviderCompleteAsyncCall(h, NO_ERROR), WSAEINVAL);
    s = stats();
    CHECK(s.late_completions == 1 && s.double_completions == 0);

    /* released by the bound before any completion: not counted either */
    HANDLE a, b;
    CHECK_OK(nspv2_async_create(&a));
    CHECK_OK(nspv2_async_create(&b));
    nspv2_host_set_held_limit(1, NSPV2_HELD_MAX_BYTES);
    CHECK_OK(nspv2_async_close(a));
    CHECK_OK(nspv2_async_close(b)); /* a is released */
    s = stats();
    CHECK(s.timed_out_held == 1 && s.timed_out_released == 1);
    CHECK_ERR(WSAProviderCompleteAsyncCall(a, NO_ERROR), WSAEINVAL);
    CHECK_ERR(WSAProviderCompleteAsyncCall(b, NO_ERROR), WSAEINVAL);
    s = stats();
    CHECK(s.late_completions == 2 && s.double_completions == 0 && s.timed_out_held == 0);
}

/* NextEx called directly with a harness handle, through the table the host
 * holds (as SlotHarness does with a native table). */
TEST(test_async_handle_drives_next_ex_through_the_table)
{
    fresh();
    advertise_tp();
    NSPV2_ROUTINE r;
    CHECK_OK(nspv2_host_provider_table(&tp_id, &r));
    LPNSPV2LOOKUPSERVICEBEGIN begin = r.NSPv2LookupServiceBegin;
    NSPV2_SDK_LOOKUPSERVICENEXTEX next_ex =
        (NSPV2_SDK_LOOKUPSERVICENEXTEX)(void (*)(void))r.NSPv2LookupServiceNextEx;
    LPNSPV2LOOKUPSERVICEEND end = r.NSPv2LookupServiceEnd;
    GUID id = tp_id;
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = TP_NAMESPACE;
    HANDLE lookup = NULL;
    CHECK_OK(begin(&id, &q, 0, NULL, &lookup));

    union {
        WSAQUERYSET2W qs;
        unsigned char bytes[512];
    } buf;
    HANDLE h;
    CHECK_OK(nspv2_async_create(&h));
    DWORD len = 8; /* too small: WSAEFAULT with the size needed */
    next_ex(h, lookup, 0, &len, &buf.qs);
    INT code = 0;
    uint32_t n = 0;
    CHECK_OK(nspv2_async_wait(h, 1000, &code, NULL, &n));
    CHECK(code == WSAEFAULT && n == 1 && len > 8 && len <= sizeof buf);
    CHECK_OK(nspv2_async_close(h));

    CHECK_OK(nspv2_async_create(&h));
    len = sizeof buf;
    next_ex(h, lookup, 0, &len, &buf.qs);
    CHECK_OK(nspv2_async_wait(h, 1000, &code, NULL, &n));
    CHECK(code == NO_ERROR && n == 1);
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_async_close(h));

    CHECK_OK(nspv2_async_create(&h));
    next_ex(h, lookup, 0, &len, &buf.qs);
    CHECK_OK(nspv2_async_wait(h, 1000, &code, NULL, NULL));
    CHECK(code == WSA_E_NO_MORE);
    CHECK_OK(nspv2_async_close(h));
    CHECK_OK(end(lookup));
    nspv2_host_stats s = stats();
    CHECK(s.async_pending == 0 && s.double_completions == 0 && s.late_completions == 0);
}

/* ------------------------------------------------------------------------ */
/* what is advertised                                                        */

static int guid_is(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

TEST(test_advertise_count_and_providers)
{
    fresh();
    uint64_t before = nspv2_host_advertise_count();
    uint32_t count = 99;
    CHECK_OK(nspv2_host_providers(NULL, 0, &count));
    CHECK(count == 0);
    CHECK_OK(nspv2_host_providers(NULL, 0, NULL));
    GUID ids[4];
    CHECK_ERR(nspv2_host_providers(NULL, 1, &count), WSAEFAULT);

    NSPV2_ROUTINE r = tp_routine();
    advertise_installed(&tp_silent_id, NS_EMAIL, NULL, &r);
    advertise_installed(&tp_id, TP_NAMESPACE, NULL, &r);
    CHECK_ERR(WSAAdvertiseProvider(&tp_id, &r), WSAEALREADY);          /* not counted */
    CHECK_ERR(WSAAdvertiseProvider(&tp_fail_id, &r), WSAEINVALIDPROVIDER); /* nor this */
    CHECK(nspv2_host_advertise_count() == before + 2);
    CHECK_OK(nspv2_host_providers(NULL, 0, &count));
    CHECK(count == 2);
    memset(ids, 0, sizeof ids);
    CHECK_OK(nspv2_host_providers(ids, 1, &count));
    CHECK(count == 2 && guid_is(&ids[0], &tp_silent_id)); /* advertise order */
    CHECK(ids[1].Data1 == 0);                             /* max respected */
    CHECK_OK(nspv2_host_providers(ids, 4, &count));
    CHECK(count == 2 && guid_is(&ids[0], &tp_silent_id) && guid_is(&ids[1], &tp_id));

    CHECK_OK(WSAUnadvertiseProvider(&tp_silent_id));
    CHECK_OK(nspv2_host_providers(ids, 4, &count));
    CHECK(count == 1 && guid_is(&ids[0], &tp_id));
    CHECK(nspv2_host_advertise_count() == before + 2); /* never goes down */
    nspv2_host_reset();
    CHECK(nspv2_host_advertise_count() == before + 2); /* nor is reset */
    CHECK_OK(nspv2_host_providers(ids, 4, &count));
    CHECK(count == 0);
}

static INT WSAAPI other_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg,
                              LPHANDLE h)
{
    (void)id;
    (void)qs;
    (void)flags;
    (void)arg;
    (void)h;
    WSASetLastError(WSAEACCES);
    return SOCKET_ERROR;
}

TEST(test_provider_table_is_the_advertised_copy)
{
    fresh();
    NSPV2_ROUTINE out;
    CHECK_ERR(nspv2_host_provider_table(&tp_id, &out), WSAEINVAL);
    CHECK_ERR(nspv2_host_provider_table(NULL, &out), WSAEFAULT);
    NSPV2_ROUTINE r = tp_routine();
    r.cbSize = sizeof r + 16; /* larger is allowed; only sizeof is read */
    r.dwMajorVersion = 3;
    r.dwMinorVersion = 7;
    r.NSPv2Startup = NULL; /* optional slots stay NULL */
    r.NSPv2Cleanup = NULL;
    r.NSPv2SetServiceEx = NULL;
    r.NSPv2ClientSessionRundown = NULL;
    advertise_installed(&tp_id, TP_NAMESPACE, NULL, &r);
    CHECK_ERR(nspv2_host_provider_table(&tp_id, NULL), WSAEFAULT);
    memset(&out, 0xee, sizeof out);
    CHECK_OK(nspv2_host_provider_table(&tp_id, &out));
    CHECK(memcmp(&out, &r, sizeof r) == 0);
    CHECK(out.cbSize == sizeof r + 16 && out.dwMajorVersion == 3 && out.dwMinorVersion == 7);
    CHECK(out.NSPv2Startup == NULL && out.NSPv2SetServiceEx == NULL);
    /* a copy: what the advertiser does to its table later does not show */
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, other_begin);
    CHECK_OK(nspv2_host_provider_table(&tp_id, &out));
    CHECK(out.NSPv2LookupServiceBegin == tp_routine().NSPv2LookupServiceBegin);
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    CHECK_ERR(nspv2_host_provider_table(&tp_id, &out), WSAEINVAL);
}

/* ------------------------------------------------------------------------ */
/* what is installed                                                         */

TEST(test_installed_blob_and_identifier)
{
    fresh();
    GUID id = tp_silent_id;
    unsigned char data[40];
    for (unsigned i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7 + 1);
    BLOB b = {sizeof data, data}; /* any bytes: only NS_EMAIL blobs are checked */
    CHECK_OK(WSCInstallNameSpaceEx(W("Silent provider"), W("silent.dll"), NS_NLA, 1, &id, &b));
    memset(data, 0, sizeof data); /* the host kept its own copy */

    DWORD ns = 0;
    uint32_t has = 9, size = 0;
    unsigned char got[64];
    CHECK_OK(nspv2_host_installed(&id, &ns, &has, NULL, &size)); /* the size only */
    CHECK(ns == NS_NLA && has == 1 && size == 40);
    size = 39;
    memset(got, 0xcc, sizeof got);
    CHECK_ERR(nspv2_host_installed(&id, NULL, NULL, got, &size), WSAEFAULT);
    CHECK(size == 40 && got[0] == 0xcc); /* nothing written when short */
    size = sizeof got;
    CHECK_OK(nspv2_host_installed(&id, NULL, NULL, got, &size));
    CHECK(size == 40 && got[40] == 0xcc);
    int same = 1;
    for (unsigned i = 0; i < 40; i++)
        same &= got[i] == (unsigned char)(i * 7 + 1);
    CHECK(same);
    CHECK_OK(nspv2_host_installed(&id, NULL, NULL, NULL, NULL));
    CHECK_ERR(nspv2_host_installed(NULL, &ns, NULL, NULL, NULL), WSAEFAULT);

    WCHAR name[32];
    uint32_t chars = 0;
    CHECK_OK(nspv2_host_installed_identifier(&id, NULL, &chars));
    CHECK(chars == 16); /* "Silent provider" + NUL */
    chars = 15;
    CHECK_ERR(nspv2_host_installed_identifier(&id, name, &chars), WSAEFAULT);
    CHECK(chars == 16);
    chars = 32;
    CHECK_OK(nspv2_host_installed_identifier(&id, name, &chars));
    CHECK(chars == 16 && wstr_is(name, "Silent provider"));
    CHECK_ERR(nspv2_host_installed_identifier(&id, name, NULL), WSAEFAULT);

    /* installed once; uninstall forgets it all */
    CHECK_ERR(WSCInstallNameSpaceEx(W("again"), NULL, NS_DNS, 1, &id, NULL), WSANO_RECOVERY);
    CHECK_OK(WSCUnInstallNameSpace(&id));
    CHECK_ERR(nspv2_host_installed(&id, &ns, &has, NULL, &size), WSAEINVAL);
    CHECK_ERR(nspv2_host_installed_identifier(&id, NULL, &chars), WSAEINVAL);

    /* without a blob, with an empty one, without an identifier */
    CHECK_OK(WSCInstallNameSpaceEx(NULL, NULL, NS_DNS, 1, &id, NULL));
    size = 5;
    CHECK_OK(nspv2_host_installed(&id, &ns, &has, got, &size));
    CHECK(ns == NS_DNS && has == 0 && size == 0);
    chars = 32;
    name[0] = 'x';
    CHECK_OK(nspv2_host_installed_identifier(&id, name, &chars));
    CHECK(chars == 1 && name[0] == 0);
    CHECK_OK(WSCUnInstallNameSpace(&id));
    BLOB empty = {0, NULL};
    CHECK_OK(WSCInstallNameSpaceEx(W("e"), NULL, NS_DNS, 1, &id, &empty));
    CHECK_OK(nspv2_host_installed(&id, NULL, &has, NULL, &size));
    CHECK(has == 1 && size == 0);
    CHECK_OK(WSCUnInstallNameSpace(&id));

    /* refused blobs: nothing recorded */
    BLOB no_data = {4, NULL};
    CHECK_ERR(WSCInstallNameSpaceEx(W("x"), NULL, NS_EMAIL, 1, &id, &no_data), WSAEINVAL);
    BLOB huge = {NSPV2_CATALOG_MAX_BLOB_BYTES + 1u, data}; /* never read */
    CHECK_ERR(WSCInstallNameSpaceEx(W("x"), NULL, NS_DNS, 1, &id, &huge), WSAEINVAL);
    BLOB not_email = {8, data}; /* not an installation blob */
    CHECK_ERR(WSCInstallNameSpaceEx(W("x"), NULL, NS_EMAIL, 1, &id, &not_email), WSAEINVAL);
    CHECK_ERR(nspv2_host_installed(&id, NULL, NULL, NULL, NULL), WSAEINVAL);

    /* reset empties the memory catalog (the ASan build checks for leaks) */
    b.cbSize = 8;
    CHECK_OK(WSCInstallNameSpaceEx(W("kept"), NULL, NS_DNS, 1, &id, &b));
    nspv2_host_reset();
    CHECK_ERR(nspv2_host_installed(&id, NULL, NULL, NULL, NULL), WSAEINVAL);
}

/* ------------------------------------------------------------------------ */
/* providers' mistakes the counters show                                     */

TEST(test_double_completion_of_a_client_call_is_counted)
{
    fresh();
    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    tp_set_mode(TP_DOUBLE); /* completes twice, at once */
    result_buf buf;
    CHECK(stats().double_completions == 0);
    CHECK_ERR(next_result(h, 0, &buf), WSATRY_AGAIN);
    CHECK(stats().double_completions == 1);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    nspv2_host_stats_reset();
    CHECK(stats().double_completions == 0);
}

/* A completion after the client call collected its result: the host no
 * longer tracks the handle, and it did not expire. */
TEST(test_completion_after_the_call_returned_is_a_double_completion)
{
    fresh();
    advertise_tp();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    tp_set_mode(TP_DEFER);
    nspv2_thread t;
    /* the deferred handle appears once NextEx ran; complete it from here */
    next_runner nr = {.h = h};
    CHECK(nspv2_thread_create(&t, next_runner_main, &nr) == 0);
    HANDLE call = tp_wait_deferred();
    CHECK(call != NULL);
    CHECK_OK(WSAProviderCompleteAsyncCall(call, WSA_E_NO_MORE));
    nspv2_thread_join(t);
    CHECK(nr.ret == SOCKET_ERROR && nr.err == WSA_E_NO_MORE);
    CHECK(stats().double_completions == 0);
    CHECK_ERR(WSAProviderCompleteAsyncCall(call, NO_ERROR), WSAEINVAL);
    CHECK(stats().double_completions == 1 && stats().late_completions == 0);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

static INT WSAAPI silent_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg,
                               LPHANDLE h)
{
    (void)id;
    (void)qs;
    (void)flags;
    (void)arg;
    (void)h;
    return SOCKET_ERROR; /* no WSASetLastError */
}

static INT WSAAPI silent_end(HANDLE h)
{
    (void)h;
    return SOCKET_ERROR;
}

static INT WSAAPI silent_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    *arg = NULL;
    return SOCKET_ERROR;
}

TEST(test_socket_error_without_last_error_is_counted)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, silent_begin);
    advertise_installed(&tp_silent_id, NS_EMAIL, NULL, &r);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(NS_ALL, &tp_silent_id, "x");
    HANDLE h;
    WSASetLastError(WSAEACCES); /* stale: the host clears it before the call */
    /* the provider's Begin failed (WSAEINVAL, last error missing): dropped */
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK(stats().missing_last_error == 1);
    CHECK_OK(WSAUnadvertiseProvider(&tp_silent_id));

    /* End without a last error: counted when the lookup ends */
    r = tp_routine();
    NSPV2_SLOT(r, NSPv2LookupServiceEnd, silent_end);
    CHECK_OK(WSAAdvertiseProvider(&tp_silent_id, &r));
    h = begin_lookup(s, NS_ALL, "x", 0);
    CHECK(stats().missing_last_error == 1);
    CHECK_ERR(nspv2_lookup_end(h), WSAEINVAL);
    CHECK(stats().missing_last_error == 2);
    CHECK_OK(WSAUnadvertiseProvider(&tp_silent_id));

    /* Startup without a last error */
    r = tp_routine();
    NSPV2_SLOT(r, NSPv2Startup, silent_startup);
    CHECK_OK(WSAAdvertiseProvider(&tp_silent_id, &r));
    CHECK_ERR(nspv2_session_start(s, NS_ALL, &tp_silent_id), WSAEINVAL);
    CHECK(stats().missing_last_error == 3);
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK(stats().missing_last_error == 4);

    /* a failure with a last error is not counted */
    r.NSPv2Startup = NULL; /* no session state: no Cleanup either */
    r.NSPv2Cleanup = NULL;
    r.NSPv2ClientSessionRundown = NULL;
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, other_begin);
    advertise_installed(&tp_fail_id, NS_EMAIL, NULL, &r);
    q.lpNSProviderId = (LPGUID)&tp_fail_id;
    CHECK_ERR(nspv2_lookup_begin(s, &q, 0, &h), WSASERVICE_NOT_FOUND);
    CHECK(stats().missing_last_error == 4);
    CHECK_OK(nspv2_session_close(s));
    nspv2_host_stats_reset();
    CHECK(stats().missing_last_error == 0);
}

void run_harness_api_tests(void)
{
    RUN(test_async_handle_lifecycle);
    RUN(test_async_handles_are_distinct_and_fresh);
    RUN(test_async_completed_on_another_thread);
    RUN(test_async_close_wakes_a_waiter);
    RUN(test_async_closed_pending_is_held_and_completed_late);
    RUN(test_async_handle_drives_next_ex_through_the_table);
    RUN(test_advertise_count_and_providers);
    RUN(test_provider_table_is_the_advertised_copy);
    RUN(test_installed_blob_and_identifier);
    RUN(test_double_completion_of_a_client_call_is_counted);
    RUN(test_completion_after_the_call_returned_is_a_double_completion);
    RUN(test_socket_error_without_last_error_is_counted);
}
