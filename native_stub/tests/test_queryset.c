/*
 * test_queryset.c - tests of query-set relocation: the bench provider's full
 * result (every pointer kind) at every buffer size, and provider faults
 * (overruns, pointers outside the buffer, counts running past it).
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* the bench provider: one fixed result for any name                        */

TEST(test_bench_lookup)
{
    fresh();
    advertise_bench();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, NS_EMAIL, "Anyone@Example.COM", LUP_RETURN_ALL);
    CHECK(h != NULL);
    CHECK(stats().lookups_open == 1);
    result_buf buf;
    CHECK_OK(next_result(h, 0, &buf));
    check_bench(&buf.qs, "Anyone@Example.COM", sizeof buf.bytes); /* the name asked */
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK_ERR(next_result(h, 0, &buf), WSA_INVALID_HANDLE);
    CHECK_ERR(nspv2_lookup_end(NULL), WSA_INVALID_HANDLE);

    /* any name at all, through lpNSProviderId and NS_ALL */
    WSAQUERYSETW q = query(NS_ALL, &nspv2_bench_provider_id, "not even an address");
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h));
    CHECK_OK(next_result(h, 0, &buf));
    check_bench(&buf.qs, "not even an address", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));

    /* only the requested fields */
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_NAME);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK(buf.qs.lpszComment == NULL && buf.qs.dwNumberOfCsAddrs == 0 &&
          buf.qs.lpcsaBuffer == NULL && buf.qs.lpBlob == NULL);
    CHECK(buf.qs.dwOutputFlags == RESULT_IS_ADDED && buf.qs.dwNameSpace == NS_EMAIL);
    CHECK_OK(nspv2_lookup_end(h));
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_BLOB | LUP_RETURN_COMMENT);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 0);
    CHECK(wstr_is(buf.qs.lpszComment, "MISTATUS_ONLINE"));
    CHECK(buf.qs.lpBlob != NULL);
    if (buf.qs.lpBlob)
        check_bench_blob(buf.qs.lpBlob);
    CHECK_OK(nspv2_lookup_end(h));
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ADDR);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(buf.qs.lpszServiceInstanceName == NULL && buf.qs.dwNumberOfCsAddrs == 2 &&
          buf.qs.lpBlob == NULL);
    CHECK_OK(nspv2_lookup_end(h));

    /* errors: no name (the provider's Begin fails: no provider left);
     * registration is not supported */
    q = query(NS_EMAIL, NULL, NULL);
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
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
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    static result_buf buf;
    DWORD need = next_at_every_size(h, &buf);
    check_bench(&buf.qs, "alice@example.com", need);
    lookup_finish_sized(h, &buf, need);
    printf("     bench: required size for alice (LUP_RETURN_ALL): %lu bytes\n",
           (unsigned long)need);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_bench_flush_previous)
{
    fresh();
    advertise_bench();
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    result_buf buf;
    CHECK_ERR(next_sized(h, 16, &buf), WSAEFAULT);
    CHECK_ERR(next_result(h, LUP_FLUSHPREVIOUS, &buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    /* without a preceding WSAEFAULT, LUP_FLUSHPREVIOUS drops nothing */
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    CHECK_OK(next_result(h, LUP_FLUSHPREVIOUS, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    /* held: the result comes after any number of short tries */
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    for (int i = 0; i < 3; i++)
        CHECK_ERR(next_sized(h, 100, &buf), WSAEFAULT);
    CHECK_OK(next_result(h, 0, &buf));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

/* ------------------------------------------------------------------------ */
/* faults, set service                                                       */

TEST(test_provider_faults)
{
    fresh();
    advertise_bench();
    advertise_tp();
    uint64_t s = open_session();
    result_buf buf;
    int modes[] = {TP_OVERRUN, TP_BADPTR, TP_BADCOUNT};
    for (int i = 0; i < 3; i++) {
        HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
        tp_set_mode(modes[i]);
        CHECK_ERR(next_sized(h, 256, &buf), WSANO_RECOVERY);
        CHECK(stats().provider_faults == (uint64_t)i + 1);
        tp_set_mode(TP_SYNC);
        CHECK_OK(nspv2_lookup_end(h));
    }
    /* the host keeps working, for tp and for the bench provider */
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "tp0"));
    CHECK_OK(nspv2_lookup_end(h));
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    CHECK_OK(next_result(h, 0, &buf));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    CHECK(stats().provider_faults == 3);
}

void run_queryset_tests(void)
{
    RUN(test_bench_lookup);
    RUN(test_bench_every_buffer_size);
    RUN(test_bench_flush_previous);
    RUN(test_provider_faults);
}
