/*
 * test_ref_provider.c - tests of the C reference provider, the NS_EMAIL
 * presence directory of docs/email-example.md, through the host and
 * through its entry points directly, concurrency included.
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* the reference provider: the NS_EMAIL presence directory                   */

TEST(test_ref_sign_in_and_look_up)
{
    fresh();
    advertise_ref();
    uint64_t a = open_session(), b = open_session();
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
    HANDLE h = begin_lookup(b, NS_ALL, "alice@example.com", LUP_RETURN_NAME);
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
    uint64_t s = open_session();
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
    uint64_t s = open_session();
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
    uint64_t s = open_session();
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
    /* not a domain.tld: the provider's Begin refuses it, the host's
     * lookup has no provider left */
    CHECK(ref_begin_error("*@net") == WSAEINVAL);
    CHECK(look_error(s, "*@net") == WSASERVICE_NOT_FOUND);
    /* one per NextEx, then WSA_E_NO_MORE */
    HANDLE h = begin_lookup(s, NS_EMAIL, "*@example.net", LUP_RETURN_ALL);
    result_buf buf;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(next_result(h, 0, &buf));
        CHECK(buf.qs.dwNumberOfCsAddrs == 1);
    }
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_ERR(nspv2_lookup_end(h), WSA_INVALID_HANDLE);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_bad_input)
{
    fresh();
    advertise_ref();
    uint64_t s = open_session();
    CHECK_OK(sign_in(s, "gus@example.com", -1));
    /* names: local@domain.tld, or *@domain.tld for lookups */
    const char *bad[] = {"not an address", "no-at-sign", "@example.com", "a@", "a@b",
                         "a@.com", "a@example.c", "a@example.c0m", "a@exa_mple.com",
                         "a b@example.com", "a@b@example.com", "*@example.com.",
                         "**@example.com", "*x@example.com", "a@example.com\n\n", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(ref_begin_error(bad[i]) == WSAEINVAL);
        CHECK(look_error(s, bad[i]) == WSASERVICE_NOT_FOUND); /* no provider left */
        CHECK_ERR(sign_in(s, bad[i], -1), WSAEINVAL);
    }
    CHECK_ERR(sign_in(s, "*@example.com", -1), WSAEINVAL); /* no wildcard sign-in */
    CHECK_ERR(sign_in(s, NULL, -1), WSAEINVAL);
    CHECK(ref_begin_error(NULL) == WSAEINVAL);
    CHECK(look_error(s, NULL) == WSASERVICE_NOT_FOUND);
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
    uint64_t b = open_session();
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
     * once the provider is installed for it instead) */
    CHECK_OK(WSCUnInstallNameSpace((LPGUID)&nspv2_ref_provider_id));
    CHECK_OK(WSCInstallNameSpaceEx(W("ref"), W("ref.dll"), NS_DNS, 1,
                                   (LPGUID)&nspv2_ref_provider_id, NULL));
    WSAQUERYSETW q = query(NS_DNS, NULL, "gus@example.com");
    HANDLE h;
    /* its Begin refuses NS_DNS (WSAEINVAL): no provider left */
    CHECK_ERR(nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h), WSASERVICE_NOT_FOUND);
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
    uint64_t a = open_session(), b = open_session();
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
    uint64_t a = open_session(), b = open_session();
    CHECK_OK(sign_in(a, "hal@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(a, "ida@example.com", MISTATUS_BUSY));
    HANDLE h = begin_lookup(b, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    result_buf buf;
    CHECK_OK(next_result(h, 0, &buf));
    check_entry(&buf.qs, sizeof buf.bytes, "hal@example.com", MISTATUS_AWAY, "MISTATUS_AWAY",
                RESULT_IS_ADDED, 1);
    /* ida signs out, and signs in again (a new entry) from another session:
     * the lookup still holds the old one, disconnecting */
    CHECK_OK(sign_out(a, "ida@example.com"));
    CHECK_OK(sign_in(b, "ida@example.com", MISTATUS_ONLINE));
    CHECK_OK(next_result(h, 0, &buf));
    check_entry(&buf.qs, sizeof buf.bytes, "ida@example.com",
                MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER,
                "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER", RESULT_IS_DELETED, 1);
    CHECK(buf.qs.dwNumberOfCsAddrs == 1 && is_v4(&buf.qs.lpcsaBuffer[0], 1, 5060));
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
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
    h = begin_lookup(b, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    CHECK_OK(sign_out(a, "hal@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(a));
    CHECK_OK(nspv2_session_close(b));
}

TEST(test_ref_session_end_signs_out)
{
    fresh();
    advertise_ref();
    uint64_t a = open_session(), b = open_session(), c = open_session();
    CHECK_OK(sign_in(a, "jan@example.com", -1));
    CHECK_OK(sign_in(b, "kim@example.com", -1));
    CHECK_OK(sign_in(b, "lee@example.com", -1));
    CHECK_OK(sign_in(c, "mo@example.com", -1));
    /* a lookup in flight sees the names of an abandoned session go */
    HANDLE h = begin_lookup(c, NS_EMAIL, "*@example.com", LUP_RETURN_NAME | LUP_RETURN_COMMENT);
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
        CHECK_OK(next_result(h, 0, &buf));
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
    uint64_t a = open_session(), b = open_session();
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
    uint64_t s = open_session();
    reg r;
    reg_init(&r, "alice@example.com");
    reg_v4(&r, 10, 5061);
    reg_v6(&r, 0x10, 5061);
    reg_status(&r, MISTATUS_AWAY);
    CHECK_OK(reg_set(s, &r, RNRSERVICE_REGISTER, 0));
    HANDLE h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    static result_buf buf;
    DWORD need = next_at_every_size(h, &buf);
    check_entry(&buf.qs, need, "alice@example.com", MISTATUS_AWAY, "MISTATUS_AWAY",
                RESULT_IS_ADDED, 1);
    CHECK(buf.qs.dwNumberOfCsAddrs == 2 && is_v4(&buf.qs.lpcsaBuffer[0], 10, 5061) &&
          is_v6(&buf.qs.lpcsaBuffer[1], 0x10, 5061));
    lookup_finish_sized(h, &buf, need);
    printf("     required size for alice (LUP_RETURN_ALL): %lu bytes\n", (unsigned long)need);
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_held_result_and_flush_previous)
{
    fresh();
    advertise_ref();
    uint64_t s = open_session();
    CHECK_OK(sign_in(s, "alice@example.com", MISTATUS_ONLINE));
    CHECK_OK(sign_in(s, "bob@example.com", MISTATUS_BUSY));
    HANDLE h = begin_lookup(s, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    result_buf buf;
    CHECK_ERR(next_sized(h, 16, &buf), WSAEFAULT);
    CHECK_OK(next_result(h, LUP_FLUSHPREVIOUS, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "bob@example.com")); /* alice dropped */
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    /* without a preceding WSAEFAULT, LUP_FLUSHPREVIOUS drops nothing */
    h = begin_lookup(s, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    CHECK_OK(next_result(h, LUP_FLUSHPREVIOUS, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "alice@example.com"));
    CHECK_OK(nspv2_lookup_end(h));
    /* the held result is the one taken when it did not fit (as Python
     * holds the QuerySet): an update in between shows next time only */
    h = begin_lookup(s, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    CHECK_ERR(next_sized(h, 16, &buf), WSAEFAULT);
    CHECK_OK(sign_in(s, "alice@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_out(s, "alice@example.com"));
    CHECK_OK(next_result(h, 0, &buf));
    check_entry(&buf.qs, sizeof buf.bytes, "alice@example.com", MISTATUS_ONLINE,
                "MISTATUS_ONLINE", RESULT_IS_ADDED, 1);
    CHECK_OK(nspv2_lookup_end(h));
    /* a held result survives the end of the entry and of the lookup */
    h = begin_lookup(s, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    CHECK_ERR(next_sized(h, 16, &buf), WSAEFAULT);
    CHECK_OK(sign_out(s, "bob@example.com"));
    nspv2_ref_provider_reset();
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

TEST(test_ref_reset_with_lookups_in_flight)
{
    fresh();
    advertise_ref();
    uint64_t s = open_session();
    CHECK_OK(sign_in(s, "pia@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(s, "quin@example.com", MISTATUS_AWAY));
    HANDLE h = begin_lookup(s, NS_EMAIL, "*@example.com", LUP_RETURN_ALL);
    nspv2_ref_provider_reset();
    CHECK(look_error(s, "pia@example.com") == WSASERVICE_NOT_FOUND);
    result_buf buf;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(next_result(h, 0, &buf));
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

/* Session arguments and lookup handles come from one counter (as Python's
 * registry.new_token): a handle taken between two Startups lies between
 * their arguments, and neither kind is accepted for the other. */
TEST(test_ref_one_counter)
{
    fresh();
    advertise_ref();
    uint64_t s = open_session();
    CHECK_OK(sign_in(s, "alice@example.com", -1));
    NSPV2_ROUTINE r;
    nspv2_ref_provider_routine(&r);
    GUID id = nspv2_ref_provider_id;
    LPVOID a1 = NULL, a2 = NULL;
    HANDLE h = NULL;
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = NS_EMAIL;
    q.lpszServiceInstanceName = W("alice@example.com");
    CHECK_OK(r.NSPv2Startup(&id, &a1));
    CHECK_OK(r.NSPv2LookupServiceBegin(&id, &q, LUP_RETURN_NAME, a1, &h));
    CHECK_OK(r.NSPv2Startup(&id, &a2));
    CHECK((uintptr_t)a1 < (uintptr_t)h && (uintptr_t)h < (uintptr_t)a2);
    CHECK_ERR(r.NSPv2LookupServiceEnd((HANDLE)a1), WSA_INVALID_HANDLE);
    CHECK_ERR(r.NSPv2Cleanup(&id, (LPVOID)h), WSAEINVAL);
    CHECK_OK(r.NSPv2LookupServiceEnd(h));
    CHECK_OK(r.NSPv2Cleanup(&id, a1));
    CHECK_OK(r.NSPv2Cleanup(&id, a2));
    CHECK_OK(nspv2_session_close(s));
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
            stress_end_session(s, (i / 16) % 2, "writer close");
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
        stress_end_session(s, i % 4 == 0, "reader close");
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
    stress_start();
    nspv2_thread t[5];
    CHECK(nspv2_thread_create(&t[0], presence_writer_main, (void *)0) == 0);
    CHECK(nspv2_thread_create(&t[1], presence_writer_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&t[2], presence_reader_main, (void *)0) == 0);
    CHECK(nspv2_thread_create(&t[3], presence_reader_main, (void *)1) == 0);
    CHECK(nspv2_thread_create(&t[4], presence_resetter_main, NULL) == 0);
    stress_run(t, 5);
    nspv2_host_stats s = stress_check_books();
    printf("     presence stress: startups %" PRIu64 ", cleanups %" PRIu64 ", rundowns %" PRIu64
           "\n",
           s.startups, s.cleanups, s.rundowns);
}

void run_ref_provider_tests(void)
{
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
    RUN(test_ref_one_counter);
    RUN(test_ref_stress);
}
