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

void run_queryset_tests(void)
{
    RUN(test_bench_lookup);
    RUN(test_bench_every_buffer_size);
    RUN(test_bench_flush_previous);
    RUN(test_provider_faults);
}
