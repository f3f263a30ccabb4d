/*
 * test_lifetime.c - what the host owns and for how long: the copy of a
 * client's query set a provider is handed (Begin, SetServiceEx), and the
 * buffers of calls a provider never completed.
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* the provider gets a copy of the client's query set                        */

/* A client query set with every field set, and all it points to, in one
 * place: snapshot and compare it with one memcpy/memcmp. */
typedef struct full_qs {
    WSAQUERYSETW q;
    WCHAR name[16], comment[16], context[16], qstr[16];
    GUID class_id, prov_id;
    WSAVERSION version;
    AFPROTOCOLS protos[2];
    CSADDR_INFO cs[2];
    SOCKADDR_IN6 sa[4];
    BLOB blob;
    unsigned char data[24];
} full_qs;

static void full_qs_init(full_qs *f)
{
    memset(f, 0, sizeof *f);
    f->q.dwSize = sizeof f->q;
    wcopy(f->name, 16, "alice");
    wcopy(f->comment, 16, "a comment");
    wcopy(f->context, 16, "ctx");
    wcopy(f->qstr, 16, "q=1");
    f->class_id = tp_fail_id;
    f->prov_id = tp_id;
    f->version.dwVersion = 7;
    f->version.ecHow = COMP_NOTLESS;
    f->protos[0].iAddressFamily = 2;
    f->protos[0].iProtocol = 6;
    f->protos[1].iAddressFamily = 23;
    f->protos[1].iProtocol = 17;
    for (int i = 0; i < 4; i++) {
        f->sa[i].sin6_family = 23;
        f->sa[i].sin6_port = (USHORT)(5060 + i);
        f->sa[i].sin6_addr.u.Byte[15] = (UCHAR)(i + 1);
    }
    for (int i = 0; i < 2; i++) {
        f->cs[i].LocalAddr.lpSockaddr = (LPSOCKADDR)(void *)&f->sa[2 * i];
        f->cs[i].LocalAddr.iSockaddrLength = (INT)sizeof f->sa[0];
        f->cs[i].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)&f->sa[2 * i + 1];
        f->cs[i].RemoteAddr.iSockaddrLength = 16; /* shorter than the structure */
        f->cs[i].iSocketType = 1;
        f->cs[i].iProtocol = 6;
    }
    for (int i = 0; i < 24; i++)
        f->data[i] = (unsigned char)(0x30 + i);
    f->blob.cbSize = sizeof f->data;
    f->blob.pBlobData = f->data;
    f->q.lpszServiceInstanceName = f->name;
    f->q.lpServiceClassId = &f->class_id;
    f->q.lpVersion = &f->version;
    f->q.lpszComment = f->comment;
    f->q.dwNameSpace = TP_NAMESPACE;
    f->q.lpNSProviderId = &f->prov_id;
    f->q.lpszContext = (void *)f->context;
    f->q.dwNumberOfProtocols = 2;
    f->q.lpafpProtocols = f->protos;
    f->q.lpszQueryString = f->qstr;
    f->q.dwNumberOfCsAddrs = 2;
    f->q.lpcsaBuffer = f->cs;
    f->q.dwOutputFlags = 0x40;
    f->q.lpBlob = &f->blob;
}

static const full_qs *scribble_client; /* what the client handed the host */
static int scribble_calls, scribble_faithful, scribble_outside;

static int wsame(const WCHAR *a, const WCHAR *b)
{
    size_t i = 0;
    for (; a[i] && a[i] == b[i]; i++) {
    }
    return a[i] == b[i];
}

static int outside_client(const void *p)
{
    uintptr_t u = (uintptr_t)p, lo = (uintptr_t)scribble_client;
    return u < lo || u >= lo + sizeof *scribble_client;
}

/* Checks that q shows exactly the client's query set, from memory that is
 * not the client's; then overwrites every byte it was given. */
static void scribble(LPWSAQUERYSET2W q)
{
    const full_qs *f = scribble_client;
    scribble_calls++;
    int ok = q->dwSize == sizeof(WSAQUERYSET2W) && q->dwNameSpace == f->q.dwNameSpace &&
             q->dwOutputFlags == f->q.dwOutputFlags && q->dwNumberOfProtocols == 2 &&
             q->dwNumberOfCsAddrs == 2 && q->lpszServiceInstanceName && q->lpszComment &&
             q->lpszContext && q->lpszQueryString && q->lpVersion && q->lpNSProviderId &&
             q->lpafpProtocols && q->lpcsaBuffer && q->lpBlob;
    if (!ok)
        return;
    ok = wsame(q->lpszServiceInstanceName, f->name) && wsame(q->lpszComment, f->comment) &&
         wsame((const WCHAR *)(const void *)q->lpszContext, f->context) &&
         wsame(q->lpszQueryString, f->qstr) &&
         memcmp(q->lpVersion, &f->version, sizeof f->version) == 0 &&
         memcmp(q->lpNSProviderId, &f->prov_id, sizeof(GUID)) == 0 &&
         memcmp(q->lpafpProtocols, f->protos, sizeof f->protos) == 0 &&
         q->lpBlob->cbSize == f->blob.cbSize &&
         memcmp(q->lpBlob->pBlobData, f->data, sizeof f->data) == 0;
    int outside = outside_client(q->lpszServiceInstanceName) && outside_client(q->lpszComment) &&
                  outside_client(q->lpszContext) && outside_client(q->lpszQueryString) &&
                  outside_client(q->lpVersion) && outside_client(q->lpNSProviderId) &&
                  outside_client(q->lpafpProtocols) && outside_client(q->lpcsaBuffer) &&
                  outside_client(q->lpBlob) && outside_client(q->lpBlob->pBlobData);
    for (int i = 0; i < 2; i++) {
        const CSADDR_INFO *c = &q->lpcsaBuffer[i], *o = &f->cs[i];
        ok = ok && c->iSocketType == o->iSocketType && c->iProtocol == o->iProtocol &&
             c->LocalAddr.iSockaddrLength == o->LocalAddr.iSockaddrLength &&
             c->RemoteAddr.iSockaddrLength == o->RemoteAddr.iSockaddrLength &&
             memcmp(c->LocalAddr.lpSockaddr, o->LocalAddr.lpSockaddr,
                    (size_t)o->LocalAddr.iSockaddrLength) == 0 &&
             memcmp(c->RemoteAddr.lpSockaddr, o->RemoteAddr.lpSockaddr,
                    (size_t)o->RemoteAddr.iSockaddrLength) == 0;
        outside = outside && outside_client(c->LocalAddr.lpSockaddr) &&
                  outside_client(c->RemoteAddr.lpSockaddr);
    }
    scribble_faithful += ok;
    scribble_outside += outside;

    /* now scribble over everything: what it points to, then the header */
    WCHAR *str[4] = {q->lpszServiceInstanceName, q->lpszComment, (WCHAR *)(void *)q->lpszContext,
                     q->lpszQueryString};
    for (int i = 0; i < 4; i++) {
        size_t n = 0;
        while (str[i][n])
            n++;
        memset(str[i], 0x5A, (n + 1) * sizeof(WCHAR));
    }
    memset(q->lpVersion, 0x5A, sizeof(WSAVERSION));
    memset(q->lpNSProviderId, 0x5A, sizeof(GUID));
    memset(q->lpafpProtocols, 0x5A, 2 * sizeof(AFPROTOCOLS));
    for (int i = 0; i < 2; i++) {
        CSADDR_INFO *c = &q->lpcsaBuffer[i];
        memset(c->LocalAddr.lpSockaddr, 0x5A, (size_t)c->LocalAddr.iSockaddrLength);
        memset(c->RemoteAddr.lpSockaddr, 0x5A, (size_t)c->RemoteAddr.iSockaddrLength);
    }
    memset(q->lpcsaBuffer, 0x5A, 2 * sizeof(CSADDR_INFO));
    memset(q->lpBlob->pBlobData, 0x5A, q->lpBlob->cbSize);
    memset(q->lpBlob, 0x5A, sizeof(BLOB));
    memset(q, 0x5A, sizeof *q);
}

static INT WSAAPI scribble_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg,
                                 LPHANDLE h)
{
    (void)id;
    (void)flags;
    (void)arg;
    scribble(qs);
    *h = (HANDLE)(uintptr_t)0x5C71;
    return NO_ERROR;
}

static VOID WSAAPI scribble_set_service(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                        WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)id;
    (void)op;
    (void)flags;
    (void)arg;
    scribble(qs);
    WSAProviderCompleteAsyncCall(async, NO_ERROR);
}

/* A fresh host with the test provider whose Begin and SetServiceEx
 * scribble on their copy (the host copies the routine table), and an open
 * client session. */
static uint64_t advertise_scribbler(void)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, scribble_begin);
    NSPV2_SLOT(r, NSPv2SetServiceEx, scribble_set_service);
    CHECK_OK(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), TP_NAMESPACE, 1, (LPGUID)&tp_id, NULL));
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    return open_session();
}

TEST(test_provider_scribbles_on_its_copy)
{
    uint64_t s = advertise_scribbler();

    static full_qs client, before;
    full_qs_init(&client);
    memcpy(&before, &client, sizeof client);
    scribble_client = &client;
    scribble_calls = scribble_faithful = scribble_outside = 0;

    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &client.q, LUP_RETURN_ALL, &h));
    CHECK(memcmp(&client, &before, sizeof client) == 0);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_set_service(s, &client.q, RNRSERVICE_REGISTER, 0));
    CHECK(memcmp(&client, &before, sizeof client) == 0);
    /* the provider saw the client's fields, in memory of its own */
    CHECK(scribble_calls == 2);
    CHECK(scribble_faithful == 2);
    CHECK(scribble_outside == 2);
    CHECK_OK(nspv2_session_close(s));
    scribble_client = NULL;
    fresh();
}


/* A client whose counts and lengths lie: the host refuses the query set
 * with WSAEINVAL before reading what they describe (under ASan a read past
 * these small heap buffers would be reported), and the provider is never
 * called. */
TEST(test_copy_refuses_lying_counts_and_lengths)
{
    uint64_t s = advertise_scribbler();
    scribble_calls = 0;
    for (int lie = 0; lie < 5; lie++) {
        full_qs *f = malloc(sizeof *f);
        WCHAR *run = malloc((NSPV2_QS_MAX_STRING_CHARS + 1) * sizeof(WCHAR));
        CHECK(f != NULL && run != NULL);
        if (!f || !run)
            break;
        full_qs_init(f);
        switch (lie) {
        case 0: /* 2 protocols there, 70000 claimed */
            f->q.dwNumberOfProtocols = NSPV2_QS_MAX_COUNT + 4464u;
            break;
        case 1: /* 2 CSADDR_INFOs there, 100000 claimed */
            f->q.dwNumberOfCsAddrs = 100000u;
            break;
        case 2: /* 24 blob bytes there, 2 GiB claimed */
            f->blob.cbSize = 0x7FFFFFFFu;
            break;
        case 3: /* a 28-byte sockaddr claimed as 129 bytes */
            f->cs[1].RemoteAddr.iSockaddrLength = NSPV2_QS_MAX_SOCKADDR_LEN + 1;
            break;
        default: /* a name with no terminator within the bound, then the heap's end */
            for (size_t i = 0; i <= NSPV2_QS_MAX_STRING_CHARS; i++)
                run[i] = 'A';
            f->q.lpszServiceInstanceName = run;
            break;
        }
        HANDLE h = NULL;
        CHECK_ERR(nspv2_lookup_begin(s, &f->q, LUP_RETURN_ALL, &h), WSAEINVAL);
        CHECK_ERR(nspv2_set_service(s, &f->q, RNRSERVICE_REGISTER, 0), WSAEINVAL);
        free(run);
        free(f);
    }
    CHECK(scribble_calls == 0);
    CHECK_OK(nspv2_session_close(s));
    fresh();
}


/* ------------------------------------------------------------------------ */
/* buffers of calls never completed: held within a bound, then released      */

/* One next on h that times out at once (TP_DEFER, timeout 0) with a
 * len-byte buffer; the async handle the provider was given. */
static HANDLE expire_next(HANDLE h, DWORD len)
{
    static result_buf buf;
    tp_set_mode(TP_DEFER);
    CHECK_ERR(next_sized(h, len, &buf), WSA_E_CANCELLED);
    return tp_wait_deferred();
}

/* the bytes one held NextEx call of a len-byte client buffer holds */
static uint64_t held_bytes_of(DWORD len)
{
    return (uint64_t)(len - NSPV2_QS_DELTA) + 64u; /* scratch + guard bytes */
}

TEST(test_held_buffers_are_bounded_and_visible)
{
    fresh();
    advertise_tp();
    nspv2_host_set_timeout_ms(0);
    uint64_t s = open_session();
    HANDLE h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    CHECK(stats().timed_out_held == 0 && stats().timed_out_held_bytes == 0);

    /* held until the late completion, which frees it */
    HANDLE a1 = expire_next(h, 1000);
    CHECK(a1 != NULL);
    nspv2_host_stats st = stats();
    CHECK(st.timed_out_held == 1 && st.timed_out_held_bytes == held_bytes_of(1000));
    CHECK(st.async_pending == 0);
    CHECK_ERR(WSAProviderCompleteAsyncCall(a1, NO_ERROR), WSAEINVAL);
    st = stats();
    CHECK(st.timed_out_held == 0 && st.timed_out_held_bytes == 0);
    CHECK(st.late_completions == 1 && st.timed_out_released == 0);

    /* at most 2 calls: the third pushes the oldest out, forgotten */
    nspv2_host_set_held_limit(2, NSPV2_HELD_MAX_BYTES);
    HANDLE b1 = expire_next(h, 1000), b2 = expire_next(h, 2000), b3 = expire_next(h, 3000);
    st = stats();
    CHECK(st.timed_out_held == 2);
    CHECK(st.timed_out_held_bytes == held_bytes_of(2000) + held_bytes_of(3000));
    CHECK(st.timed_out_released == 1);
    CHECK_ERR(WSAProviderCompleteAsyncCall(b1, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 1); /* b1 is unknown now: not a late completion */
    CHECK_ERR(WSAProviderCompleteAsyncCall(b2, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 2);

    /* the byte bound: a 1000-byte call pushes out b3 (3000 bytes) */
    nspv2_host_set_held_limit(100, held_bytes_of(1000) + 10);
    st = stats();
    CHECK(st.timed_out_held == 0 && st.timed_out_released == 2); /* b3 over the new bound */
    HANDLE c1 = expire_next(h, 1000);
    CHECK(stats().timed_out_held == 1);
    HANDLE c2 = expire_next(h, 1000);
    st = stats();
    CHECK(st.timed_out_held == 1 && st.timed_out_held_bytes == held_bytes_of(1000));
    CHECK(st.timed_out_released == 3);
    CHECK_ERR(WSAProviderCompleteAsyncCall(c1, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 2);
    (void)b3;
    (void)c2;

    /* unadvertise releases the provider's held calls */
    nspv2_host_set_held_limit(NSPV2_HELD_MAX_CALLS, NSPV2_HELD_MAX_BYTES);
    HANDLE d1 = expire_next(h, 500);
    CHECK(stats().timed_out_held == 2);
    CHECK_OK(WSAUnadvertiseProvider(&tp_id));
    st = stats();
    CHECK(st.timed_out_held == 0 && st.timed_out_held_bytes == 0);
    CHECK(st.timed_out_released == 5);
    CHECK_ERR(WSAProviderCompleteAsyncCall(d1, NO_ERROR), WSAEINVAL);
    CHECK(stats().late_completions == 2);
    CHECK_OK(nspv2_session_close(s));

    /* and so does reset */
    NSPV2_ROUTINE r = tp_routine();
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r)); /* still installed */
    s = open_session();
    h = begin_lookup(s, TP_NAMESPACE, "x", 0);
    expire_next(h, 700);
    CHECK(stats().timed_out_held == 1);
    nspv2_host_reset();
    st = stats();
    CHECK(st.timed_out_held == 0 && st.timed_out_held_bytes == 0);
    fresh();
}

/* A registration that times out keeps the provider's copy of the query set
 * held, counted in bytes, until the late completion. */
static HANDLE held_set_async;
static VOID WSAAPI defer_set_service(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                     WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)id;
    (void)qs;
    (void)op;
    (void)flags;
    (void)arg;
    held_set_async = async;
}

TEST(test_held_registration_copy)
{
    fresh();
    NSPV2_ROUTINE r = tp_routine();
    NSPV2_SLOT(r, NSPv2SetServiceEx, defer_set_service);
    CHECK_OK(WSCInstallNameSpaceEx(W("tp"), W("tp.dll"), TP_NAMESPACE, 1, (LPGUID)&tp_id, NULL));
    CHECK_OK(WSAAdvertiseProvider(&tp_id, &r));
    nspv2_host_set_timeout_ms(0);
    uint64_t s = open_session();
    static full_qs client;
    full_qs_init(&client);
    held_set_async = NULL;
    CHECK_ERR(nspv2_set_service(s, &client.q, RNRSERVICE_REGISTER, 0), WSA_E_CANCELLED);
    nspv2_host_stats st = stats();
    CHECK(held_set_async != NULL);
    CHECK(st.timed_out_held == 1);
    /* the header, 4 strings, GUID, version, protocols, CS addresses with
     * their sockaddrs, the blob and its data */
    CHECK(st.timed_out_held_bytes > sizeof(WSAQUERYSET2W) + sizeof client.data);
    CHECK(st.timed_out_held_bytes < sizeof client + 256);
    CHECK_ERR(WSAProviderCompleteAsyncCall(held_set_async, NO_ERROR), WSAEINVAL);
    CHECK(stats().timed_out_held == 0 && stats().timed_out_held_bytes == 0);
    CHECK_OK(nspv2_session_close(s));
    fresh();
}

void run_lifetime_tests(void)
{
    RUN(test_provider_scribbles_on_its_copy);
    RUN(test_copy_refuses_lying_counts_and_lengths);
    RUN(test_held_buffers_are_bounded_and_visible);
    RUN(test_held_registration_copy);
}
