/*
 * test_support.c - what the C test files share: the check counters, small
 * helpers (UTF-16 strings, query sets, stats, buffer bounds), the test
 * provider whose behaviour a test chooses, registrations and lookups of the
 * reference provider, and the stop flag of the stress tests. See
 * test_support.h.
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* checks                                                                    */

unsigned long checks_run, checks_failed;
const char *current_test = "";

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

void wcopy(WCHAR *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        dst[i] = (WCHAR)(unsigned char)s[i];
    dst[i] = 0;
}

/* A UTF-16 copy of an ASCII string (static storage, a few at a time). */
WCHAR *W(const char *s)
{
    static WCHAR pool[8][128];
    static unsigned next;
    WCHAR *w = pool[next++ % 8];
    wcopy(w, 128, s);
    return w;
}

int wstr_is(const WCHAR *w, const char *s)
{
    if (!w)
        return 0;
    for (; *s; w++, s++)
        if (*w != (WCHAR)(unsigned char)*s)
            return 0;
    return *w == 0;
}

WSAQUERYSETW query(DWORD ns, const GUID *provider, const char *name)
{
    WSAQUERYSETW q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = ns;
    q.lpNSProviderId = (LPGUID)provider;
    q.lpszServiceInstanceName = name ? W(name) : NULL;
    return q;
}

nspv2_host_stats stats(void)
{
    nspv2_host_stats s;
    nspv2_host_stats_get(&s);
    return s;
}

int in_buffer(const void *p, size_t len, const void *buf, size_t size)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)buf;
    return a >= b && a <= b + size && len <= b + size - a;
}

/* ------------------------------------------------------------------------ */
/* the catalog                                                               */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

BLOB email_blob(email_blob_buf *b, int wildcard, size_t n, const char *const *domains,
                const unsigned *levels)
{
    /* the header, the domain descriptions, the names (UTF-16LE, NUL), padded
     * to 4 bytes: InstallationBlob.pack's layout */
    size_t at_domain = 20, at_name = 20 + 16 * n;
    memset(b->bytes, 0, sizeof b->bytes);
    put32(b->bytes, 1);                 /* dwVersion */
    put32(b->bytes + 4, 1);             /* ProviderType_Application */
    put32(b->bytes + 8, wildcard ? 1u : 0u);
    put32(b->bytes + 12, (uint32_t)n);
    put32(b->bytes + 16, n ? 20u : 0u); /* OffsetFirstDomain */
    for (size_t i = 0; i < n; i++) {
        size_t cch = strlen(domains[i]);
        unsigned char *d = b->bytes + at_domain + 16 * i;
        put32(d, levels[i]);
        put32(d + 4, (uint32_t)cch);
        put32(d + 8, i + 1 < n ? (uint32_t)(at_domain + 16 * (i + 1)) : 0u);
        put32(d + 12, (uint32_t)at_name);
        for (size_t k = 0; k <= cch; k++) { /* the NUL too */
            b->bytes[at_name + 2 * k] = (unsigned char)domains[i][k];
            b->bytes[at_name + 2 * k + 1] = 0;
        }
        at_name += 2 * (cch + 1);
    }
    BLOB out = {(ULONG)((at_name + 3u) & ~(size_t)3u), b->bytes};
    return out;
}

static void install_named(const char *identifier, const GUID *id, DWORD ns, const BLOB *blob)
{
    CHECK_OK(WSCInstallNameSpaceEx(W(identifier), W(""), ns, 1, (LPGUID)id, (LPBLOB)blob));
}

void install_provider(const GUID *id, DWORD ns, const BLOB *blob)
{
    install_named("test provider", id, ns, blob);
}

static void advertise_named(const char *identifier, const GUID *id, DWORD ns, const BLOB *blob,
                            const NSPV2_ROUTINE *r)
{
    if (nspv2_host_installed(id, NULL, NULL, NULL, NULL) != NO_ERROR) /* not yet */
        install_named(identifier, id, ns, blob);
    CHECK_OK(WSAAdvertiseProvider(id, r));
}

void advertise_installed(const GUID *id, DWORD ns, const BLOB *blob, const NSPV2_ROUTINE *r)
{
    advertise_named("test provider", id, ns, blob, r);
}

/* The reference provider as the C tests install it: NS_EMAIL, primary for
 * example.com and example.org like the email example, and a wildcard
 * provider so that every other domain of its tests reaches it too. */
void advertise_ref(void)
{
    static const char *const domains[] = {"example.com", "example.org"};
    static const unsigned levels[] = {NSPV2_LEVEL_PRIMARY, NSPV2_LEVEL_PRIMARY};
    email_blob_buf b;
    BLOB blob = email_blob(&b, 1, 2, domains, levels);
    NSPV2_ROUTINE r;
    nspv2_ref_provider_routine(&r);
    advertise_named("ref", &nspv2_ref_provider_id, NS_EMAIL, &blob, &r);
}

/* The bench provider: NS_EMAIL, installed without a blob (routed like a
 * wildcard provider). */
void advertise_bench(void)
{
    NSPV2_ROUTINE r;
    nspv2_bench_provider_routine(&r);
    advertise_named("bench", &nspv2_bench_provider_id, NS_EMAIL, NULL, &r);
}

uint64_t open_session(void)
{
    uint64_t s = 0;
    CHECK_OK(nspv2_session_open(&s));
    return s;
}

HANDLE begin_lookup(uint64_t s, DWORD ns, const char *name, DWORD flags)
{
    WSAQUERYSETW q = query(ns, NULL, name);
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, flags, &h));
    return h;
}

INT next_result(HANDLE h, DWORD flags, result_buf *buf)
{
    DWORD len = sizeof buf->bytes;
    return nspv2_lookup_next(h, flags, &len, &buf->qs);
}

INT next_sized(HANDLE h, DWORD len, result_buf *buf)
{
    return nspv2_lookup_next(h, 0, &len, &buf->qs);
}

DWORD next_at_every_size(HANDLE h, result_buf *buf)
{
    DWORD need = 0;
    CHECK_ERR(nspv2_lookup_next(h, 0, &need, NULL), WSAEFAULT);
    CHECK(need > sizeof(WSAQUERYSETW) && need < 4096);
    int sizes_ok = 1;
    for (DWORD size = 0; size < need; size++) {
        DWORD len = size;
        memset(buf->bytes, 0xee, sizeof buf->bytes);
        INT r = nspv2_lookup_next(h, 0, &len, size ? &buf->qs : NULL);
        if (r != SOCKET_ERROR || WSAGetLastError() != WSAEFAULT || len != need)
            sizes_ok = 0;
        for (size_t i = 0; i < sizeof buf->bytes; i++) /* nothing written */
            if (buf->bytes[i] != 0xee)
                sizes_ok = 0;
    }
    CHECK(sizes_ok);
    memset(buf->bytes, 0xee, sizeof buf->bytes);
    DWORD len = need;
    CHECK_OK(nspv2_lookup_next(h, 0, &len, &buf->qs));
    return need;
}

void lookup_finish_sized(HANDLE h, result_buf *buf, DWORD need)
{
    int tail_ok = 1;
    for (size_t i = need; i < sizeof buf->bytes; i++)
        if (buf->bytes[i] != 0xee)
            tail_ok = 0;
    CHECK(tail_ok); /* not a byte past the caller's length */
    CHECK_ERR(next_sized(h, need, buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
}

void next_runner_main(void *p)
{
    next_runner *n = p;
    result_buf buf;
    n->ret = next_result(n->h, 0, &buf);
    n->err = n->ret ? WSAGetLastError() : 0;
}

void check_bench_blob(const BLOB *b)
{
    CHECK(b->cbSize == NSPV2_BENCH_BLOB_SIZE);
    int ok = b->pBlobData != NULL;
    for (size_t i = 0; ok && i < NSPV2_BENCH_BLOB_SIZE; i++)
        ok = b->pBlobData[i] == (unsigned char)i;
    CHECK(ok);
}

/* Checks a full (LUP_RETURN_ALL) bench result for `name`, all pointers
 * inside [buf, buf + size). */
void check_bench(const WSAQUERYSETW *r, const char *name, size_t size)
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

/* ------------------------------------------------------------------------ */
/* a test provider whose behaviour the tests choose                          */

const GUID tp_id = {0x74657374, 0x0001, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 1}};
const GUID tp_fail_id = {0x74657374, 0x0002, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 2}};
const GUID tp_silent_id = {0x74657374, 0x0003, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 3}};
tp_state tp = {.lock = NSPV2_MUTEX_INIT, .results = 1};

void tp_set_mode(int mode)
{
    nspv2_mutex_lock(&tp.lock);
    tp.mode = mode;
    tp.deferred = NULL;
    nspv2_mutex_unlock(&tp.lock);
}

HANDLE tp_wait_deferred(void)
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

/* One more of a counter of tp (or of one of its sessions), under its lock. */
static void tp_count(int *counter)
{
    nspv2_mutex_lock(&tp.lock);
    (*counter)++;
    nspv2_mutex_unlock(&tp.lock);
}

static INT WSAAPI tp_cleanup(LPGUID id, LPVOID arg)
{
    (void)id;
    tp_count(&((tp_session *)arg)->cleanups);
    return NO_ERROR;
}

static VOID WSAAPI tp_rundown(LPGUID id, LPVOID arg)
{
    (void)id;
    tp_count(&((tp_session *)arg)->rundowns);
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
    tp_count(&tp.ends);
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
void tp_completer_main(void *p)
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

NSPV2_ROUTINE tp_routine(void)
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

void advertise_tp(void)
{
    NSPV2_ROUTINE r = tp_routine();
    advertise_named("tp", &tp_id, TP_NAMESPACE, NULL, &r);
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
void fresh(void)
{
    /* the tests' catalog: this process's memory, never the user's file;
     * nspv2_host_reset empties it */
    nspv2_catalog_set_path(NSPV2_CATALOG_MEMORY);
    nspv2_host_reset();
    nspv2_ref_provider_reset();
    nspv2_host_stats_reset();
    nspv2_host_set_timeout_ms(5000);
    tp_reset();
}

/* ------------------------------------------------------------------------ */
/* the reference provider: registrations and lookups                         */

void reg_init(reg *r, const char *name)
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

/* One more CS address (TCP, remote address only) of len bytes. */
static void reg_add_address(reg *r, const void *sockaddr, size_t len)
{
    memset(&r->sa[r->ncs], 0, sizeof r->sa[0]);
    memcpy(&r->sa[r->ncs], sockaddr, len);
    r->cs[r->ncs].RemoteAddr.iSockaddrLength = (INT)len;
    r->cs[r->ncs].iSocketType = 1;
    r->cs[r->ncs].iProtocol = 6;
    r->ncs++;
}

/* 192.0.2.<last>:<port> */
void reg_v4(reg *r, unsigned char last, unsigned short port)
{
    SOCKADDR_IN a;
    memset(&a, 0, sizeof a);
    a.sin_family = NSPV2_AF_INET;
    unsigned char p[2] = {(unsigned char)(port >> 8), (unsigned char)port};
    memcpy(&a.sin_port, p, 2);
    unsigned char ip[4] = {192, 0, 2, last};
    memcpy(&a.sin_addr, ip, 4);
    reg_add_address(r, &a, sizeof a);
}

/* [2001:db8::<last>]:<port> */
void reg_v6(reg *r, unsigned char last, unsigned short port)
{
    SOCKADDR_IN6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = NSPV2_AF_INET6;
    unsigned char p[2] = {(unsigned char)(port >> 8), (unsigned char)port};
    memcpy(&a.sin6_port, p, 2);
    unsigned char ip[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    memcpy(&a.sin6_addr, ip, 16);
    reg_add_address(r, &a, sizeof a);
}

void encode_presence(DWORD status, unsigned char out[NSPV2_PRESENCE_BLOB_SIZE])
{
    const unsigned char head[8] = {'N', 'S', 'P', 'P', 1, 0, 0, 0};
    memcpy(out, head, 8);
    for (int i = 0; i < 4; i++)
        out[8 + i] = (unsigned char)(status >> (8 * i));
}

void reg_blob(reg *r, const unsigned char *bytes, ULONG n)
{
    memcpy(r->data, bytes, n);
    r->blob.cbSize = n;
    r->has_blob = 1;
}

void reg_status(reg *r, DWORD status)
{
    unsigned char p[NSPV2_PRESENCE_BLOB_SIZE];
    encode_presence(status, p);
    reg_blob(r, p, sizeof p);
}

INT reg_set(uint64_t s, reg *r, WSAESETSERVICEOP op, DWORD flags)
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
INT sign_in(uint64_t s, const char *name, long status)
{
    reg r;
    reg_init(&r, name);
    reg_v4(&r, 1, 5060);
    if (status >= 0)
        reg_status(&r, (DWORD)status);
    return reg_set(s, &r, RNRSERVICE_REGISTER, 0);
}

INT sign_out(uint64_t s, const char *name)
{
    reg r;
    reg_init(&r, name);
    return reg_set(s, &r, RNRSERVICE_DELETE, 0);
}

INT invite(uint64_t s, const char *inviter, const char *invitee)
{
    reg r;
    reg_init(&r, inviter);
    char text[160];
    snprintf(text, sizeof text, "invite=%s", invitee);
    wcopy(r.query, 160, text);
    r.q.lpszQueryString = r.query;
    return reg_set(s, &r, RNRSERVICE_REGISTER, 0);
}

int is_v4(const CSADDR_INFO *c, unsigned char last, unsigned short port)
{
    if (c->LocalAddr.lpSockaddr || c->RemoteAddr.iSockaddrLength != (INT)sizeof(SOCKADDR_IN))
        return 0;
    const unsigned char *b = (const unsigned char *)c->RemoteAddr.lpSockaddr;
    static const unsigned char zero[8];
    return b && b[0] == NSPV2_AF_INET && b[1] == 0 && b[2] == (port >> 8) &&
           b[3] == (port & 0xff) && b[4] == 192 && b[5] == 0 && b[6] == 2 && b[7] == last &&
           memcmp(b + 8, zero, 8) == 0 && c->iSocketType == 1 && c->iProtocol == 6;
}

int is_v6(const CSADDR_INFO *c, unsigned char last, unsigned short port)
{
    if (c->LocalAddr.lpSockaddr || c->RemoteAddr.iSockaddrLength != (INT)sizeof(SOCKADDR_IN6))
        return 0;
    const unsigned char *b = (const unsigned char *)c->RemoteAddr.lpSockaddr;
    const unsigned char ip[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    return b && b[0] == NSPV2_AF_INET6 && b[1] == 0 && b[2] == (port >> 8) &&
           b[3] == (port & 0xff) && memcmp(b + 8, ip, 16) == 0;
}

int blob_is_presence(const BLOB *b, DWORD status)
{
    unsigned char p[NSPV2_PRESENCE_BLOB_SIZE];
    encode_presence(status, p);
    return b && b->cbSize == sizeof p && b->pBlobData && memcmp(b->pBlobData, p, sizeof p) == 0;
}

/* Checks a LUP_RETURN_ALL result: name, status, flags, version; the CS
 * addresses are the caller's to check. All pointers inside the buffer. */
void check_entry(const WSAQUERYSETW *r, size_t size, const char *name, DWORD status,
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
void look_one(uint64_t s, const char *name, DWORD flags, result_buf *out)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    memset(out, 0, sizeof *out);
    CHECK_OK(nspv2_lookup_begin(s, &q, flags, &h));
    CHECK_OK(next_sized(h, 4096, out));
    result_buf more;
    CHECK_ERR(next_sized(h, 4096, &more), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
}

/* The error of a lookup expected to fail at Begin. */
int look_error(uint64_t s, const char *name)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    if (nspv2_lookup_begin(s, &q, LUP_RETURN_ALL, &h) == NO_ERROR) {
        nspv2_lookup_end(h);
        return NO_ERROR;
    }
    return WSAGetLastError();
}

int ref_begin_error(const char *name)
{
    NSPV2_ROUTINE r;
    if (nspv2_host_provider_table(&nspv2_ref_provider_id, &r) != NO_ERROR)
        return -1;
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof q;
    q.dwNameSpace = NS_EMAIL;
    q.lpszServiceInstanceName = name ? W(name) : NULL;
    GUID id = nspv2_ref_provider_id;
    HANDLE h = NULL;
    WSASetLastError(0);
    if (r.NSPv2LookupServiceBegin(&id, &q, LUP_RETURN_ALL, NULL, &h) == NO_ERROR) {
        r.NSPv2LookupServiceEnd(h);
        return NO_ERROR;
    }
    return WSAGetLastError();
}

/* The names a lookup returns, joined with ' ' into out; the error code. */
int look_names(uint64_t s, const char *name, char *out, size_t cap)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
    HANDLE h;
    out[0] = 0;
    if (nspv2_lookup_begin(s, &q, LUP_RETURN_NAME, &h) != NO_ERROR)
        return WSAGetLastError();
    result_buf buf;
    while (next_result(h, 0, &buf) == NO_ERROR) {
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

/* ------------------------------------------------------------------------ */
/* the stress tests' shared state                                            */

stress_state st = {.lock = NSPV2_MUTEX_INIT};

void stress_unexpected(const char *what, int code)
{
    nspv2_mutex_lock(&st.lock);
    if (st.errors++ < 10)
        printf("     unexpected: %s -> %d\n", what, code);
    nspv2_mutex_unlock(&st.lock);
}

int stress_done(void)
{
    nspv2_mutex_lock(&st.lock);
    int d = st.done;
    nspv2_mutex_unlock(&st.lock);
    return d;
}

void stress_start(void)
{
    nspv2_mutex_lock(&st.lock);
    st.done = 0;
    st.errors = 0;
    nspv2_mutex_unlock(&st.lock);
}

void stress_stop(void)
{
    nspv2_mutex_lock(&st.lock);
    st.done = 1;
    nspv2_mutex_unlock(&st.lock);
}

void stress_end_session(uint64_t s, int abandon, const char *what)
{
    INT r = abandon ? nspv2_session_abandon(s) : nspv2_session_close(s);
    if (r != NO_ERROR)
        stress_unexpected(what, WSAGetLastError());
}

void stress_run(nspv2_thread *t, int n)
{
    nspv2_sleep_ms(STRESS_MS);
    stress_stop();
    for (int i = 0; i < n; i++)
        nspv2_thread_join(t[i]);
}

nspv2_host_stats stress_check_books(void)
{
    CHECK(st.errors == 0);
    nspv2_host_stats s = stats();
    CHECK(s.sessions_open == 0 && s.lookups_open == 0 && s.async_pending == 0);
    CHECK(s.startups == s.cleanups + s.rundowns);
    CHECK(s.provider_faults == 0);
    return s;
}
