/*
 * test_routing.c - tests of how the in-process host routes through the
 * catalog (src/catalog.h's rules): primary, secondary and wildcard NS_EMAIL
 * providers, disabled and uninstalled ones, the NextEx stepping across
 * providers (authoritative or LUP_NON_AUTHORITATIVE, a provider failing
 * Begin or Next, one unadvertised mid-lookup) and where a registration goes.
 *
 * The providers are one routine table advertised under RP_N GUIDs: Begin
 * learns which one it is from its GUID, and every call is counted per
 * provider, so a test can tell which provider answered and which were never
 * called.
 */
#include "test_support.h"

#define RP_N 5

static const GUID rp_ids[RP_N] = {
    {0x726f7574, 0x0000, 0x4000, {0x80, 0x72, 0x70, 0, 0, 0, 0, 0}},
    {0x726f7574, 0x0001, 0x4000, {0x80, 0x72, 0x70, 0, 0, 0, 0, 1}},
    {0x726f7574, 0x0002, 0x4000, {0x80, 0x72, 0x70, 0, 0, 0, 0, 2}},
    {0x726f7574, 0x0003, 0x4000, {0x80, 0x72, 0x70, 0, 0, 0, 0, 3}},
    {0x726f7574, 0x0004, 0x4000, {0x80, 0x72, 0x70, 0, 0, 0, 0, 4}},
};

typedef struct rp_provider {
    /* behaviour */
    int results;     /* results per lookup */
    int begin_error; /* Begin fails with it (0: succeeds) */
    int next_error;  /* NextEx completes with it after fail_after results */
    int fail_after;
    int overrun;     /* with next_error: write 16 bytes past the buffer first */
    /* calls */
    int begins, nexts, ends, set_services;
} rp_provider;

static struct {
    nspv2_mutex lock;
    rp_provider p[RP_N];
    int served[64]; /* results handed out, per lookup handle (serial) */
    uintptr_t serial;
} rp = {.lock = NSPV2_MUTEX_INIT};

static int rp_index(const GUID *id)
{
    for (int i = 0; i < RP_N; i++)
        if (memcmp(id, &rp_ids[i], sizeof *id) == 0)
            return i;
    return -1;
}

/* handle: provider index in the low byte, the lookup's serial above it */
static INT WSAAPI rp_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg, LPHANDLE h)
{
    (void)qs;
    (void)flags;
    (void)arg;
    int i = rp_index(id);
    if (i < 0) {
        WSASetLastError(WSAEINVAL);
        return SOCKET_ERROR;
    }
    nspv2_mutex_lock(&rp.lock);
    rp.p[i].begins++;
    int err = rp.p[i].begin_error;
    uintptr_t serial = ++rp.serial % 64;
    rp.served[serial] = 0;
    nspv2_mutex_unlock(&rp.lock);
    if (err) {
        WSASetLastError(err);
        return SOCKET_ERROR;
    }
    *h = (HANDLE)((serial << 8) | (uintptr_t)i | 0x80u);
    return NO_ERROR;
}

/* A result named "p<provider>r<n>". */
static DWORD rp_pack(unsigned char *buf, DWORD len, int provider, int n)
{
    size_t need = sizeof(WSAQUERYSET2W) + 8 * sizeof(WCHAR);
    if (len < need)
        return (DWORD)need;
    WSAQUERYSET2W *q = (WSAQUERYSET2W *)(void *)buf;
    memset(buf, 0, need);
    q->dwSize = sizeof *q;
    q->dwNameSpace = NS_EMAIL;
    WCHAR *name = (WCHAR *)(void *)(buf + sizeof *q);
    name[0] = 'p';
    name[1] = (WCHAR)('0' + provider);
    name[2] = 'r';
    name[3] = (WCHAR)('0' + n);
    name[4] = 0;
    q->lpszServiceInstanceName = name;
    return 0;
}

static VOID WSAAPI rp_next_ex(HANDLE async, HANDLE h, DWORD flags, LPDWORD len,
                              LPWSAQUERYSET2W qs)
{
    (void)flags;
    uintptr_t v = (uintptr_t)h;
    int i = (int)(v & 0x7fu);
    int *served = &rp.served[(v >> 8) % 64];
    INT code;
    nspv2_mutex_lock(&rp.lock);
    rp_provider *p = &rp.p[i];
    p->nexts++;
    if (p->next_error && *served >= p->fail_after) {
        code = p->next_error;
        if (p->overrun)
            memset(qs, 0x5a, (size_t)*len + 16);
    } else if (*served >= p->results) {
        code = WSA_E_NO_MORE;
    } else {
        DWORD need = rp_pack((unsigned char *)qs, *len, i, *served);
        if (need) {
            *len = need;
            code = WSAEFAULT;
        } else {
            ++*served;
            code = NO_ERROR;
        }
    }
    nspv2_mutex_unlock(&rp.lock);
    WSAProviderCompleteAsyncCall(async, code);
}

static INT WSAAPI rp_end(HANDLE h)
{
    nspv2_mutex_lock(&rp.lock);
    rp.p[(uintptr_t)h & 0x7fu].ends++;
    nspv2_mutex_unlock(&rp.lock);
    return NO_ERROR;
}

static VOID WSAAPI rp_set_service(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                  WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)qs;
    (void)op;
    (void)flags;
    (void)arg;
    int i = rp_index(id);
    nspv2_mutex_lock(&rp.lock);
    if (i >= 0)
        rp.p[i].set_services++;
    nspv2_mutex_unlock(&rp.lock);
    WSAProviderCompleteAsyncCall(async, i >= 0 ? NO_ERROR : WSAEINVAL);
}

static NSPV2_ROUTINE rp_routine(void)
{
    NSPV2_ROUTINE r;
    memset(&r, 0, sizeof r);
    r.cbSize = sizeof r;
    r.dwMajorVersion = 1;
    r.dwMinorVersion = 1;
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, rp_begin);
    NSPV2_SLOT(r, NSPv2LookupServiceNextEx, rp_next_ex);
    NSPV2_SLOT(r, NSPv2LookupServiceEnd, rp_end);
    NSPV2_SLOT(r, NSPv2SetServiceEx, rp_set_service);
    return r;
}

static void rp_reset(void)
{
    nspv2_mutex_lock(&rp.lock);
    memset(rp.p, 0, sizeof rp.p);
    for (int i = 0; i < RP_N; i++)
        rp.p[i].results = 1;
    nspv2_mutex_unlock(&rp.lock);
}

static rp_provider rp_get(int i)
{
    nspv2_mutex_lock(&rp.lock);
    rp_provider p = rp.p[i];
    nspv2_mutex_unlock(&rp.lock);
    return p;
}

static void rp_set(int i, int results, int begin_error, int next_error, int fail_after)
{
    nspv2_mutex_lock(&rp.lock);
    rp.p[i].results = results;
    rp.p[i].begin_error = begin_error;
    rp.p[i].next_error = next_error;
    rp.p[i].fail_after = fail_after;
    nspv2_mutex_unlock(&rp.lock);
}

/* Installs provider i for NS_EMAIL: wildcard, and `domain` at `level` (no
 * domain when NULL); then advertises it unless `advertise` is 0. */
static void rp_install(int i, int wildcard, const char *domain, unsigned level, int advertise)
{
    email_blob_buf b;
    const char *const domains[] = {domain};
    const unsigned levels[] = {level};
    BLOB blob = email_blob(&b, wildcard, domain ? 1 : 0, domains, levels);
    install_provider(&rp_ids[i], NS_EMAIL, &blob);
    if (advertise) {
        NSPV2_ROUTINE r = rp_routine();
        CHECK_OK(WSAAdvertiseProvider(&rp_ids[i], &r));
    }
}

/* The usual cast, in catalog order: p0 a wildcard provider, p1 secondary
 * and p2 primary for example.com, p3 primary for example.org, p4 primary
 * for example.net but never advertised. */
static void rp_cast(void)
{
    fresh();
    rp_reset();
    rp_install(0, 1, NULL, 0, 1);
    rp_install(1, 0, "example.com", NSPV2_LEVEL_SECONDARY, 1);
    rp_install(2, 0, "example.com", NSPV2_LEVEL_PRIMARY, 1);
    rp_install(3, 0, "example.org", NSPV2_LEVEL_PRIMARY, 1);
    rp_install(4, 0, "example.net", NSPV2_LEVEL_PRIMARY, 0);
}

/* Every result of a lookup of name in ns by provider id (NULL: routed)
 * with Begin flags, as "p2r0 p1r0", into out; the code that ended it
 * (WSA_E_NO_MORE, or Begin's or Next's error). The lookup is ended. */
static int drain(uint64_t s, DWORD ns, const GUID *id, const char *name, DWORD flags, char *out,
                 size_t cap)
{
    WSAQUERYSETW q = query(ns, id, name);
    HANDLE h;
    out[0] = 0;
    if (nspv2_lookup_begin(s, &q, flags | LUP_RETURN_NAME, &h) != NO_ERROR)
        return WSAGetLastError();
    result_buf buf;
    int err;
    for (;;) {
        if (next_result(h, 0, &buf) != NO_ERROR) {
            err = WSAGetLastError();
            break;
        }
        size_t n = strlen(out);
        if (n && n + 1 < cap)
            out[n++] = ' ';
        for (const WCHAR *w = buf.qs.lpszServiceInstanceName; w && *w && n + 1 < cap; w++)
            out[n++] = (char)*w;
        out[n] = 0;
    }
    CHECK_OK(nspv2_lookup_end(h));
    return err;
}

#define CHECK_DRAIN(s, ns, id, name, flags, code, expected)                                \
    do {                                                                                  \
        char got_[128];                                                                   \
        int code_ = drain(s, ns, id, name, flags, got_, sizeof got_);                     \
        CHECK(code_ == (code) && strcmp(got_, expected) == 0);                            \
        if (code_ != (code) || strcmp(got_, expected) != 0)                               \
            printf("     %s: got \"%s\" ending %d\n", name ? (const char *)name : "(null)", \
                   got_, code_);                                                          \
    } while (0)

/* Begins, NextEx calls and Ends of each provider as "b/n/e" ... */
static int calls_are(const int *begins, const int *nexts, const int *ends)
{
    int ok = 1;
    for (int i = 0; i < RP_N; i++) {
        rp_provider p = rp_get(i);
        if (p.begins != begins[i] || p.nexts != nexts[i] || p.ends != ends[i]) {
            printf("     p%d: %d begins, %d nexts, %d ends; expected %d, %d, %d\n", i, p.begins,
                   p.nexts, p.ends, begins[i], nexts[i], ends[i]);
            ok = 0;
        }
    }
    return ok;
}

TEST(test_route_order_primary_secondary_wildcard)
{
    rp_cast();
    uint64_t s = open_session();
    const DWORD NA = LUP_NON_AUTHORITATIVE;
    /* every routed provider: the primary, the secondary, the wildcard one */
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", NA, WSA_E_NO_MORE, "p2r0 p1r0 p0r0");
    {
        const int b[RP_N] = {1, 1, 1, 0, 0}, n[RP_N] = {2, 2, 2, 0, 0}, e[RP_N] = {1, 1, 1, 0, 0};
        CHECK(calls_are(b, n, e));
    }
    /* the domain compared without case, a trailing '.' ignored */
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@EXAMPLE.Org.", NA, WSA_E_NO_MORE, "p3r0 p0r0");
    /* NS_ALL routes the same way here (every provider is NS_EMAIL) */
    CHECK_DRAIN(s, NS_ALL, NULL, "*@example.org", NA, WSA_E_NO_MORE, "p3r0 p0r0");
    /* a domain nobody advertised is primary for (p4 is installed but not
     * advertised), no domain at all: the wildcard provider only */
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.net", NA, WSA_E_NO_MORE, "p0r0");
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@nowhere.example", NA, WSA_E_NO_MORE, "p0r0");
    CHECK_DRAIN(s, NS_EMAIL, NULL, "no-at-sign", NA, WSA_E_NO_MORE, "p0r0");
    CHECK_DRAIN(s, NS_EMAIL, NULL, NULL, NA, WSA_E_NO_MORE, "p0r0");
    /* another namespace: nobody */
    CHECK_DRAIN(s, NS_DNS, NULL, "a@example.com", NA, WSASERVICE_NOT_FOUND, "");
    /* lpNSProviderId: that provider, whatever the domain; one not
     * advertised (p4), or not installed, is WSAEINVAL */
    CHECK_DRAIN(s, NS_EMAIL, &rp_ids[3], "a@example.com", NA, WSA_E_NO_MORE, "p3r0");
    CHECK_DRAIN(s, NS_ALL, &rp_ids[1], NULL, 0, WSA_E_NO_MORE, "p1r0");
    CHECK_DRAIN(s, NS_EMAIL, &rp_ids[4], "a@example.net", 0, WSAEINVAL, "");
    CHECK_DRAIN(s, NS_EMAIL, &tp_id, "a@example.net", 0, WSAEINVAL, "");
    CHECK_DRAIN(s, NS_DNS, &rp_ids[3], "a@example.org", 0, WSASERVICE_NOT_FOUND, "");
    /* once p4 advertises, it is example.net's primary */
    NSPV2_ROUTINE r = rp_routine();
    CHECK_OK(WSAAdvertiseProvider(&rp_ids[4], &r));
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.net", NA, WSA_E_NO_MORE, "p4r0 p0r0");
    /* uninstalled, an advertised provider is no longer routed to */
    CHECK_OK(WSCUnInstallNameSpace((LPGUID)&rp_ids[2]));
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", NA, WSA_E_NO_MORE, "p1r0 p0r0");
    CHECK_DRAIN(s, NS_EMAIL, &rp_ids[2], "a@example.com", NA, WSAEINVAL, "");
    CHECK(stats().providers == 5);
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

TEST(test_route_authoritative_or_not)
{
    rp_cast();
    for (int i = 0; i < 3; i++)
        rp_set(i, 2, 0, 0, 0);
    uint64_t s = open_session();
    /* authoritative (the default): the primary's answer is the answer; the
     * others were begun, never asked, and ended */
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p2r0 p2r1");
    {
        const int b[RP_N] = {1, 1, 1, 0, 0}, n[RP_N] = {0, 0, 3, 0, 0}, e[RP_N] = {1, 1, 1, 0, 0};
        CHECK(calls_are(b, n, e));
    }
    /* LUP_NON_AUTHORITATIVE: everyone's */
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", LUP_NON_AUTHORITATIVE, WSA_E_NO_MORE,
                "p2r0 p2r1 p1r0 p1r1 p0r0 p0r1");
    /* a primary with nothing: the secondary's answer, not the wildcard's */
    rp_set(2, 0, 0, 0, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p1r0 p1r1");
    /* nobody with anything: WSA_E_NO_MORE at once */
    rp_set(1, 0, 0, 0, 0);
    rp_set(0, 0, 0, 0, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "");
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

TEST(test_route_failing_provider_is_skipped)
{
    rp_cast();
    uint64_t s = open_session();
    /* the primary's Next fails at once: recorded, skipped; the secondary
     * answers */
    rp_set(2, 1, 0, WSATRY_AGAIN, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p1r0");
    /* after a result: skipped all the same (it never reached its end) */
    rp_set(2, 3, 0, WSAENOTCONN, 1);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p2r0 p1r0");
    /* everyone fails: the first error recorded comes back */
    rp_set(2, 1, 0, WSATRY_AGAIN, 0);
    rp_set(1, 1, 0, WSAENOTCONN, 0);
    rp_set(0, 1, 0, WSAECONNRESET, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSATRY_AGAIN, "");
    /* one that reached its end, the others failing: WSA_E_NO_MORE */
    rp_set(1, 0, 0, 0, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", LUP_NON_AUTHORITATIVE, WSA_E_NO_MORE, "");
    /* a failing Begin drops the provider; Begin fails only when every
     * routed provider's does, with WSASERVICE_NOT_FOUND (not their own
     * errors) */
    rp_reset();
    rp_set(2, 1, WSAEACCES, 0, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", LUP_NON_AUTHORITATIVE, WSA_E_NO_MORE,
                "p1r0 p0r0");
    rp_set(1, 1, WSAENOTCONN, 0, 0);
    rp_set(0, 1, WSATRY_AGAIN, 0, 0);
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSASERVICE_NOT_FOUND, "");
    {
        /* failed Begins are never ended; every part begun, asked or not,
         * is ended exactly once */
        rp_provider p0 = rp_get(0), p1 = rp_get(1), p2 = rp_get(2);
        CHECK(p2.begins == 2 && p2.ends == 0 && p2.nexts == 0);
        CHECK(p1.begins == 2 && p1.ends == 1 && p0.begins == 2 && p0.ends == 1);
    }
    /* an error completion that wrote past its buffer: a fault, reported at
     * once; that provider is left, the next Next goes on with the next */
    rp_reset();
    rp_set(2, 1, 0, WSATRY_AGAIN, 0);
    nspv2_mutex_lock(&rp.lock);
    rp.p[2].overrun = 1;
    nspv2_mutex_unlock(&rp.lock);
    uint64_t faults = stats().provider_faults;
    {
        WSAQUERYSETW q = query(NS_EMAIL, NULL, "a@example.com");
        HANDLE h;
        CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
        result_buf buf;
        CHECK_ERR(next_result(h, 0, &buf), WSANO_RECOVERY);
        CHECK(stats().provider_faults == faults + 1);
        CHECK_OK(next_result(h, 0, &buf));
        CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p1r0"));
        CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
        CHECK(rp_get(2).nexts == 1);
        CHECK_OK(nspv2_lookup_end(h));
    }
    /* WSAEFAULT stays on the provider: the same result at a larger buffer */
    rp_reset();
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "a@example.com");
    HANDLE h;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_NON_AUTHORITATIVE, &h));
    result_buf buf;
    CHECK_ERR(next_sized(h, 8, &buf), WSAEFAULT);
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p2r0"));
    CHECK_OK(next_result(h, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p1r0"));
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

TEST(test_route_unadvertised_mid_lookup)
{
    rp_cast();
    rp_set(2, 2, 0, 0, 0);
    uint64_t s = open_session();
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "a@example.com");
    HANDLE na, au;
    CHECK_OK(nspv2_lookup_begin(s, &q, LUP_NON_AUTHORITATIVE, &na));
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &au));
    result_buf buf;
    CHECK_OK(next_result(na, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p2r0"));
    CHECK_OK(next_result(au, 0, &buf));
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p2r0"));
    CHECK_OK(WSAUnadvertiseProvider(&rp_ids[2])); /* its parts end: as if at their end */
    CHECK(rp_get(2).ends == 2);
    CHECK_OK(next_result(na, 0, &buf)); /* on to the secondary */
    CHECK(wstr_is(buf.qs.lpszServiceInstanceName, "p1r0"));
    CHECK_ERR(next_result(au, 0, &buf), WSA_E_NO_MORE); /* the primary had answered */
    CHECK_OK(nspv2_lookup_end(na));
    CHECK_OK(nspv2_session_close(s)); /* ends au's parts */
    const int b[RP_N] = {2, 2, 2, 0, 0}, e[RP_N] = {2, 2, 2, 0, 0};
    for (int i = 0; i < RP_N; i++)
        CHECK(rp_get(i).begins == b[i] && rp_get(i).ends == e[i]);
    fresh();
}

TEST(test_route_disabled_provider_never_called)
{
    rp_cast();
    CHECK_OK(WSCEnableNSProvider((LPGUID)&rp_ids[2], 0));
    uint64_t s = open_session();
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", LUP_NON_AUTHORITATIVE, WSA_E_NO_MORE,
                "p1r0 p0r0");
    CHECK_DRAIN(s, NS_ALL, NULL, "a@example.com", LUP_NON_AUTHORITATIVE, WSA_E_NO_MORE,
                "p1r0 p0r0");
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p1r0");
    CHECK_DRAIN(s, NS_EMAIL, &rp_ids[2], "a@example.com", 0, WSASERVICE_NOT_FOUND, "");
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "a@example.com");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    q.dwNameSpace = NS_ALL;
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    q.lpNSProviderId = (LPGUID)&rp_ids[2];
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSASERVICE_NOT_FOUND);
    CHECK_OK(nspv2_session_start(s, NS_ALL, NULL));
    rp_provider p2 = rp_get(2);
    CHECK(p2.begins == 0 && p2.nexts == 0 && p2.ends == 0 && p2.set_services == 0);
    CHECK(rp_get(1).set_services == 2);
    /* enabled again, it is the primary again */
    CHECK_OK(WSCEnableNSProvider((LPGUID)&rp_ids[2], 1));
    CHECK_DRAIN(s, NS_EMAIL, NULL, "a@example.com", 0, WSA_E_NO_MORE, "p2r0");
    /* every provider disabled: nothing to route to */
    for (int i = 0; i < RP_N; i++)
        CHECK_OK(WSCEnableNSProvider((LPGUID)&rp_ids[i], 0));
    CHECK_DRAIN(s, NS_ALL, NULL, "a@example.com", 0, WSASERVICE_NOT_FOUND, "");
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

TEST(test_route_set_service_goes_to_the_first)
{
    rp_cast();
    uint64_t s = open_session();
    int expected[RP_N] = {0};
    WSAQUERYSETW q = query(NS_EMAIL, NULL, "a@example.com");
    /* a specific namespace: the first of the route, the primary */
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    expected[2]++;
    /* no primary advertised for the domain: the wildcard provider */
    q = query(NS_EMAIL, NULL, "a@example.net");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    expected[0]++;
    /* NS_ALL: every routed provider */
    q = query(NS_ALL, NULL, "a@example.com");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_DELETE, 0));
    expected[2]++;
    expected[1]++;
    expected[0]++;
    /* named: that one only */
    q = query(NS_EMAIL, &rp_ids[1], "a@example.org");
    CHECK_OK(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0));
    expected[1]++;
    /* nothing routed */
    q = query(NS_DNS, NULL, "a@example.com");
    CHECK_ERR(nspv2_set_service(s, &q, RNRSERVICE_REGISTER, 0), WSASERVICE_NOT_FOUND);
    for (int i = 0; i < RP_N; i++)
        CHECK(rp_get(i).set_services == expected[i]);
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

void run_routing_tests(void)
{
    RUN(test_route_order_primary_secondary_wildcard);
    RUN(test_route_authoritative_or_not);
    RUN(test_route_failing_provider_is_skipped);
    RUN(test_route_unadvertised_mid_lookup);
    RUN(test_route_disabled_provider_never_called);
    RUN(test_route_set_service_goes_to_the_first);
}
