/*
 * fuzz_queryset.c - libFuzzer harness for the host's client side: the
 * WSAQUERYSETW a client hands to nspv2_lookup_begin and nspv2_set_service,
 * converted by the host to the WSAQUERYSET2W its providers see.
 *
 * The client is trusted the way Winsock trusts it, which reads (marshals)
 * everything the query set points to: every pointer the harness produces is
 * NULL or points inside the arena (never a wild address), is aligned for its
 * type, a pointer to ONE fixed-size structure (GUID, WSAVERSION, BLOB) has
 * the whole structure inside the arena, and what a non-NULL pointer
 * describes is readable: the arena ends with a NUL WCHAR after the input's
 * bytes (every string ends by then), and a count (dwNumberOfProtocols,
 * dwNumberOfCsAddrs), a positive iSockaddrLength or a cbSize that would run
 * past the arena is cut to what it holds; a BLOB sharing bytes with the
 * CSADDR_INFO array is left out (lpBlob NULL). Everything else may lie: counts
 * with NULL arrays, non-positive sockaddr lengths, NULL sockaddrs or blob
 * data with a size, bogus families, a small dwSize. The arena is an
 * allocation of exactly its size, so any read past it is an
 * AddressSanitizer report.
 *
 * Input encoding (missing bytes read as zero)
 * -------------------------------------------
 *   [0]         ctl
 *                 bits 0-1  essOperation for nspv2_set_service (3: invalid)
 *                 bit 2     copy this provider's GUID to *lpNSProviderId
 *                 bit 3     the provider's Begin fails (WSANO_DATA: the lookup,
 *                           with no provider left, WSASERVICE_NOT_FOUND)
 *                 bit 4     the provider's Startup fails with WSAEOPNOTSUPP
 *                 bit 5     the provider's Startup fails with WSASYSNOTREADY
 *                 bit 6     the provider's SetServiceEx completes WSANO_DATA
 *                 bit 7     nspv2_lookup_begin gets a NULL lphLookup
 *   [1..4]      dwControlFlags (little-endian)
 *   [5..5+H)    the WSAQUERYSETW header image, H = sizeof(WSAQUERYSETW):
 *               DWORD fields are taken as they are (dwSize, dwNameSpace,
 *               the counts, dwOutputFlags); each pointer field holds a
 *               selector (below) in its first 4 bytes
 *   [5+H..)     the arena: the rest of the input, copied to a malloc'd
 *               block of exactly that size (rounded up to even) plus a NUL
 *               WCHAR. Inside it, the lpSockaddr
 *               fields of the CSADDR_INFO elements lpcsaBuffer points at
 *               (those wholly inside the arena, up to dwNumberOfCsAddrs)
 *               and the pBlobData field of *lpBlob are selectors too, and
 *               are replaced in place by the pointers they select.
 *
 * A selector e (uint32) picks a pointer into the arena of n bytes:
 *   e & 3 == 0  NULL
 *   e & 3 == 1  arena + (e >> 2) % n                   (from the start)
 *   e & 3 == 2  arena + n - 1 - (e >> 2) % n           (from the end)
 *   e & 3 == 3  arena + n - 1 - (e >> 2) % min(n, 16)  (the last bytes:
 *               strings and arrays that run off the end of the arena)
 * then aligned down for the pointed type; for a fixed-size structure it is
 * moved back so that the structure fits (NULL when n is too small).
 *
 * Oracle (abort() = a finding): a call returns NO_ERROR, or SOCKET_ERROR
 * with a non-zero WSAGetLastError(); the provider sees exactly the client's
 * fields and contents (dwSize = sizeof(WSAQUERYSET2W)) in a copy of its own
 * (no pointer into the arena), which the harness's provider then overwrites
 * whole (ASan checks the copy's bounds); the provider is reached exactly
 * when the contract of nspv2_host.h says it is, and the outcome is the one
 * it gives; the host never writes to the client's query set.
 */
#define FUZZ_NAME "fuzz_queryset"
#include "fuzz_common.h"

/* {46555A5A-5153-4554-8A1F-46555A5A5153} */
static const GUID fz_id = {0x46555a5a, 0x5153, 0x4554,
                           {0x8a, 0x1f, 0x46, 0x55, 0x5a, 0x5a, 0x51, 0x53}};

#define CTL_OP 0x03u
#define CTL_COPY_GUID 0x04u
#define CTL_BEGIN_FAILS 0x08u
#define CTL_STARTUP_NOTSUPP 0x10u
#define CTL_STARTUP_FAILS 0x20u
#define CTL_SETSVC_FAILS 0x40u
#define CTL_NULL_HANDLE_PTR 0x80u

#define HDR_AT 5u

static struct {
    unsigned ctl;
    const WSAQUERYSETW *client; /* the query set being converted */
    int startups, begins, sets;
} st;

/* ---- the in-harness provider ------------------------------------------- */

static struct {
    const unsigned char *lo;
    size_t n;
} arena_seen; /* the client's arena: the provider's copy must not point into it */

static size_t wlen(const void *w)
{
    const unsigned char *p = w;
    size_t n = 0;
    for (;; n++) {
        WCHAR u;
        memcpy(&u, p + n * sizeof u, sizeof u);
        if (!u)
            return n;
    }
}

/* p (non-NULL) lies in the provider's copy, not in the client's arena. */
static void not_client(const void *p)
{
    uintptr_t u = (uintptr_t)p, lo = (uintptr_t)arena_seen.lo;
    if (u >= lo && u < lo + arena_seen.n + 2)
        die("the provider was handed the client's memory, not a copy");
}

/* copy and client are both NULL, or copy holds client's len bytes
 * elsewhere; then the provider overwrites them. */
static void same_bytes(void *copy, const void *client, size_t len)
{
    if (!copy != !client)
        die("WSAQUERYSETW -> WSAQUERYSET2W: a pointer's NULL-ness changed");
    if (!copy)
        return;
    not_client(copy);
    if (len && memcmp(copy, client, len) != 0)
        die("WSAQUERYSET2W: copied bytes differ from the client's");
    if (len)
        memset(copy, 0xEE, len);
}

static void same_wstr(void *copy, const void *client)
{
    size_t len = client ? (wlen(client) + 1) * sizeof(WCHAR) : 0;
    if (copy && client && wlen(copy) + 1 != len / sizeof(WCHAR))
        die("WSAQUERYSET2W: a string's length differs from the client's");
    same_bytes(copy, client, len);
}

static void check_converted(WSAQUERYSET2W *q)
{
    const WSAQUERYSETW *w = st.client;
    if (!q || !w)
        die("provider called without a query set");
    not_client(q);
    if (q->dwSize != sizeof(WSAQUERYSET2W))
        die("WSAQUERYSET2W.dwSize is not sizeof(WSAQUERYSET2W)");
    if (q->dwNameSpace != w->dwNameSpace || q->dwNumberOfProtocols != w->dwNumberOfProtocols ||
        q->dwNumberOfCsAddrs != w->dwNumberOfCsAddrs || q->dwOutputFlags != w->dwOutputFlags)
        die("WSAQUERYSETW -> WSAQUERYSET2W conversion changed a field");
    same_wstr(q->lpszServiceInstanceName, w->lpszServiceInstanceName);
    same_wstr(q->lpszComment, w->lpszComment);
    same_wstr((void *)q->lpszContext, (const void *)w->lpszContext);
    same_wstr(q->lpszQueryString, w->lpszQueryString);
    same_bytes(q->lpVersion, w->lpVersion, sizeof(WSAVERSION));
    same_bytes(q->lpNSProviderId, w->lpNSProviderId, sizeof(GUID));
    same_bytes(q->lpafpProtocols, w->lpafpProtocols,
               w->lpafpProtocols ? (size_t)w->dwNumberOfProtocols * sizeof(AFPROTOCOLS) : 0);
    if (!q->lpcsaBuffer != !w->lpcsaBuffer)
        die("WSAQUERYSETW -> WSAQUERYSET2W: lpcsaBuffer's NULL-ness changed");
    for (DWORD i = 0; q->lpcsaBuffer && i < q->dwNumberOfCsAddrs; i++) {
        CSADDR_INFO *c = &q->lpcsaBuffer[i];
        CSADDR_INFO o;
        memcpy(&o, (const unsigned char *)w->lpcsaBuffer + (size_t)i * sizeof o, sizeof o);
        not_client(c);
        if (c->iSocketType != o.iSocketType || c->iProtocol != o.iProtocol ||
            c->LocalAddr.iSockaddrLength != o.LocalAddr.iSockaddrLength ||
            c->RemoteAddr.iSockaddrLength != o.RemoteAddr.iSockaddrLength)
            die("WSAQUERYSET2W: a CSADDR_INFO differs from the client's");
        INT ll = o.LocalAddr.iSockaddrLength, rl = o.RemoteAddr.iSockaddrLength;
        same_bytes(c->LocalAddr.lpSockaddr, o.LocalAddr.lpSockaddr, ll > 0 ? (size_t)ll : 0);
        same_bytes(c->RemoteAddr.lpSockaddr, o.RemoteAddr.lpSockaddr, rl > 0 ? (size_t)rl : 0);
    }
    if (q->lpcsaBuffer)
        memset(q->lpcsaBuffer, 0xEE, (size_t)q->dwNumberOfCsAddrs * sizeof(CSADDR_INFO));
    if (!q->lpBlob != !w->lpBlob)
        die("WSAQUERYSETW -> WSAQUERYSET2W: lpBlob's NULL-ness changed");
    if (q->lpBlob) {
        BLOB o;
        memcpy(&o, w->lpBlob, sizeof o);
        not_client(q->lpBlob);
        if (q->lpBlob->cbSize != o.cbSize)
            die("WSAQUERYSET2W: the blob's size differs from the client's");
        same_bytes(q->lpBlob->pBlobData, o.pBlobData, o.pBlobData ? o.cbSize : 0);
        memset(q->lpBlob, 0xEE, sizeof(BLOB));
    }
    memset(q, 0xEE, sizeof *q); /* a provider may overwrite all it was given */
}

static void check_session_arg(LPVOID arg)
{
    int null_arg = (st.ctl & CTL_STARTUP_NOTSUPP) != 0;
    if (null_arg ? arg != NULL : arg != (LPVOID)&st)
        die("wrong client session argument");
}

static INT WSAAPI fz_startup(LPGUID id, LPVOID *arg)
{
    if (!id || memcmp(id, &fz_id, sizeof *id) != 0 || !arg)
        die("Startup: bad arguments");
    st.startups++;
    if (st.ctl & CTL_STARTUP_FAILS) {
        WSASetLastError(WSASYSNOTREADY);
        return SOCKET_ERROR;
    }
    if (st.ctl & CTL_STARTUP_NOTSUPP) {
        WSASetLastError(WSAEOPNOTSUPP);
        return SOCKET_ERROR;
    }
    *arg = &st;
    return NO_ERROR;
}

static INT WSAAPI fz_cleanup(LPGUID id, LPVOID arg)
{
    (void)id;
    check_session_arg(arg);
    return NO_ERROR;
}

static INT WSAAPI fz_begin(LPGUID id, LPWSAQUERYSET2W q, DWORD flags, LPVOID arg,
                           LPHANDLE lph)
{
    (void)flags;
    if (!id || memcmp(id, &fz_id, sizeof *id) != 0 || !lph)
        die("Begin: bad arguments");
    check_session_arg(arg);
    check_converted(q);
    st.begins++;
    if (st.ctl & CTL_BEGIN_FAILS) {
        WSASetLastError(WSANO_DATA);
        return SOCKET_ERROR;
    }
    *lph = (HANDLE)(uintptr_t)0x5153u;
    return NO_ERROR;
}

static VOID WSAAPI fz_next(HANDLE async, HANDLE lookup, DWORD flags, LPDWORD len,
                           LPWSAQUERYSET2W res)
{
    (void)lookup;
    (void)flags;
    (void)len;
    (void)res;
    WSAProviderCompleteAsyncCall(async, WSA_E_NO_MORE);
}

static INT WSAAPI fz_end(HANDLE lookup)
{
    if (lookup != (HANDLE)(uintptr_t)0x5153u)
        die("End: not our lookup handle");
    return NO_ERROR;
}

static VOID WSAAPI fz_set_service(HANDLE async, LPGUID id, LPWSAQUERYSET2W q,
                                  WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)flags;
    if (!id || memcmp(id, &fz_id, sizeof *id) != 0)
        die("SetServiceEx: bad provider id");
    if ((unsigned)op > (unsigned)RNRSERVICE_DELETE)
        die("SetServiceEx: invalid essOperation passed on");
    check_session_arg(arg);
    check_converted(q);
    st.sets++;
    INT code = (st.ctl & CTL_SETSVC_FAILS) ? WSANO_DATA : NO_ERROR;
    if (WSAProviderCompleteAsyncCall(async, code) != NO_ERROR)
        die("SetServiceEx: completion refused");
}

static VOID WSAAPI fz_rundown(LPGUID id, LPVOID arg)
{
    (void)id;
    check_session_arg(arg);
}

static NSPV2_ROUTINE fz_routine;

/* The host advertises only a provider the catalog in effect lists: install
 * it first in a catalog private to this process (in memory, never the
 * user's); already installed (WSANO_RECOVERY) is fine. */
static void install_in_memory(const GUID *id)
{
    static WCHAR ident[] = {'f', 'u', 'z', 'z', 0};
    static WCHAR path[] = {'f', 'u', 'z', 'z', '.', 'd', 'l', 'l', 0};
    GUID g = *id;
    if (nspv2_catalog_set_path(":memory:") != NO_ERROR)
        die("nspv2_catalog_set_path(\":memory:\") failed");
    if (WSCInstallNameSpaceEx(ident, path, NS_EMAIL, 1, &g, NULL) != NO_ERROR &&
        WSAGetLastError() != WSANO_RECOVERY)
        die("WSCInstallNameSpaceEx failed");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    fz_routine.cbSize = sizeof fz_routine;
    fz_routine.dwMajorVersion = 1;
    NSPV2_SLOT(fz_routine, NSPv2Startup, fz_startup);
    NSPV2_SLOT(fz_routine, NSPv2Cleanup, fz_cleanup);
    NSPV2_SLOT(fz_routine, NSPv2LookupServiceBegin, fz_begin);
    NSPV2_SLOT(fz_routine, NSPv2LookupServiceNextEx, fz_next);
    NSPV2_SLOT(fz_routine, NSPv2LookupServiceEnd, fz_end);
    NSPV2_SLOT(fz_routine, NSPv2SetServiceEx, fz_set_service);
    NSPV2_SLOT(fz_routine, NSPv2ClientSessionRundown, fz_rundown);
    install_in_memory(&fz_id);
    if (WSAAdvertiseProvider(&fz_id, &fz_routine) != NO_ERROR)
        die("WSAAdvertiseProvider failed");
    nspv2_host_set_timeout_ms(2000);
    return 0;
}

/* ---- building the query set --------------------------------------------- */

static uint32_t rd32(const uint8_t *data, size_t size, size_t at)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        if (at + i < size)
            v |= (uint32_t)data[at + i] << (8 * i);
    return v;
}

/* The pointer selector e picks (see the top of the file). */
static void *decode(uint32_t e, unsigned char *arena, size_t n, size_t fixed, size_t align)
{
    if (n == 0 || n < fixed || (e & 3u) == 0)
        return NULL;
    size_t v = e >> 2, off;
    if ((e & 3u) == 1)
        off = v % n;
    else if ((e & 3u) == 2)
        off = n - 1 - v % n;
    else
        off = n - 1 - v % (n < 16 ? n : 16);
    if (fixed && off > n - fixed)
        off = n - fixed;
    off -= off % align; /* arena is malloc-aligned */
    return arena + off;
}

static void *decode_field(const uint8_t *data, size_t size, size_t field_off,
                          unsigned char *arena, size_t n, size_t fixed, size_t align)
{
    return decode(rd32(data, size, HDR_AT + field_off), arena, n, fixed, align);
}

/* Replaces the selector in the pointer slot at p (inside the arena) by the
 * pointer it selects. */
static void decode_slot(unsigned char *slot, unsigned char *arena, size_t n, size_t align)
{
    uint32_t e;
    memcpy(&e, slot, sizeof e);
    void *p = decode(e, arena, n, 0, align);
    memcpy(slot, &p, sizeof p);
}

/* A positive sockaddr length cut to the arena's bytes from p (non-NULL). */
static void clamp_len(INT *len, const void *p, const unsigned char *arena, size_t n)
{
    if (p && *len > 0 && (size_t)*len > (size_t)(arena + n - (const unsigned char *)p))
        *len = (INT)(arena + n - (const unsigned char *)p);
}

/* The outcome r of `call`: refused by the host (the error `refused`, not
 * zero), the provider's `routine` not called; or routed, the routine
 * called exactly once (calls) and its outcome `reached` passed on. */
static void expect_routed(int r, int refused, int calls, int reached, const char *call,
                          const char *routine)
{
    if (refused) {
        expect(r, refused, call);
        if (calls) {
            fprintf(stderr, FUZZ_NAME ": %s called for a query set the host must refuse\n",
                    routine);
            abort();
        }
        return;
    }
    if (calls != 1) {
        fprintf(stderr, FUZZ_NAME ": %s not called exactly once\n", routine);
        abort();
    }
    expect(r, reached, call);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const size_t H = sizeof(WSAQUERYSETW);
    st.ctl = size ? data[0] : 0;
    st.startups = st.begins = st.sets = 0;
    DWORD flags = rd32(data, size, 1);

    size_t n = size > HDR_AT + H ? size - HDR_AT - H : 0;
    unsigned char *arena = calloc(1, n + (n & 1u) + sizeof(WCHAR)); /* even, then a NUL WCHAR */
    if (!arena)
        return 0;
    if (n)
        memcpy(arena, data + HDR_AT + H, n);

    WSAQUERYSETW qs;
    memset(&qs, 0, sizeof qs);
    qs.dwSize = rd32(data, size, HDR_AT + offsetof(WSAQUERYSETW, dwSize));
    qs.dwNameSpace = rd32(data, size, HDR_AT + offsetof(WSAQUERYSETW, dwNameSpace));
    qs.dwNumberOfProtocols =
        rd32(data, size, HDR_AT + offsetof(WSAQUERYSETW, dwNumberOfProtocols));
    qs.dwNumberOfCsAddrs = rd32(data, size, HDR_AT + offsetof(WSAQUERYSETW, dwNumberOfCsAddrs));
    qs.dwOutputFlags = rd32(data, size, HDR_AT + offsetof(WSAQUERYSETW, dwOutputFlags));
#define FIELD(f, fixed, align) \
    decode_field(data, size, offsetof(WSAQUERYSETW, f), arena, n, fixed, align)
    qs.lpszServiceInstanceName = FIELD(lpszServiceInstanceName, 0, sizeof(WCHAR));
    qs.lpServiceClassId = FIELD(lpServiceClassId, sizeof(GUID), _Alignof(GUID));
    qs.lpVersion = FIELD(lpVersion, sizeof(WSAVERSION), _Alignof(WSAVERSION));
    qs.lpszComment = FIELD(lpszComment, 0, sizeof(WCHAR));
    qs.lpNSProviderId = FIELD(lpNSProviderId, sizeof(GUID), _Alignof(GUID));
    qs.lpszContext = FIELD(lpszContext, 0, sizeof(WCHAR));
    qs.lpafpProtocols = FIELD(lpafpProtocols, 0, _Alignof(AFPROTOCOLS));
    qs.lpszQueryString = FIELD(lpszQueryString, 0, sizeof(WCHAR));
    qs.lpcsaBuffer = FIELD(lpcsaBuffer, 0, _Alignof(CSADDR_INFO));
    qs.lpBlob = FIELD(lpBlob, sizeof(BLOB), _Alignof(BLOB));
#undef FIELD

    /* Routing by GUID: put ours where lpNSProviderId points (before the
     * nested pointers are decoded, so that these never hold GUID bytes). */
    if ((st.ctl & CTL_COPY_GUID) && qs.lpNSProviderId)
        memcpy(qs.lpNSProviderId, &fz_id, sizeof fz_id);
    if (qs.lpcsaBuffer) {
        unsigned char *csa = (unsigned char *)qs.lpcsaBuffer;
        size_t room = (size_t)(arena + n - csa) / sizeof(CSADDR_INFO);
        size_t count = qs.dwNumberOfCsAddrs < room ? qs.dwNumberOfCsAddrs : room;
        for (size_t i = 0; i < count; i++) {
            unsigned char *el = csa + i * sizeof(CSADDR_INFO);
            decode_slot(el + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), arena, n,
                        _Alignof(SOCKADDR_IN6));
            decode_slot(el + offsetof(CSADDR_INFO, RemoteAddr.lpSockaddr), arena, n,
                        _Alignof(SOCKADDR_IN6));
            /* what a sockaddr's length describes is readable */
            CSADDR_INFO c;
            memcpy(&c, el, sizeof c);
            clamp_len(&c.LocalAddr.iSockaddrLength, c.LocalAddr.lpSockaddr, arena, n);
            clamp_len(&c.RemoteAddr.iSockaddrLength, c.RemoteAddr.lpSockaddr, arena, n);
            memcpy(el, &c, sizeof c);
        }
        qs.dwNumberOfCsAddrs = (DWORD)count; /* the array is readable */
    }
    if (qs.lpafpProtocols) {
        size_t room =
            (size_t)(arena + n - (unsigned char *)qs.lpafpProtocols) / sizeof(AFPROTOCOLS);
        if (qs.dwNumberOfProtocols > room)
            qs.dwNumberOfProtocols = (DWORD)room;
    }
    /* a BLOB sharing bytes with the CSADDR_INFO array would rewrite its
     * pointers and lengths: no client's memory looks like that; drop it */
    if (qs.lpBlob && qs.lpcsaBuffer &&
        (unsigned char *)qs.lpBlob <
            (unsigned char *)qs.lpcsaBuffer + (size_t)qs.dwNumberOfCsAddrs * sizeof(CSADDR_INFO) &&
        (unsigned char *)qs.lpcsaBuffer < (unsigned char *)qs.lpBlob + sizeof(BLOB))
        qs.lpBlob = NULL;
    if (qs.lpBlob) {
        decode_slot((unsigned char *)qs.lpBlob + offsetof(BLOB, pBlobData), arena, n, 1);
        BLOB b;
        memcpy(&b, qs.lpBlob, sizeof b);
        if (b.pBlobData && b.cbSize > (size_t)(arena + n - b.pBlobData))
            b.cbSize = (ULONG)(arena + n - b.pBlobData);
        memcpy(qs.lpBlob, &b, sizeof b);
    }

    /* What the contract says must happen. A sockaddr longer than
     * NSPV2_QS_MAX_SOCKADDR_LEN is refused with dwSize's code, before
     * routing (counts, strings and blobs here stay inside the bounds: the
     * input is at most a few KiB). */
    int size_ok = qs.dwSize >= sizeof(WSAQUERYSETW);
    if (size_ok && qs.lpcsaBuffer) {
        for (DWORD i = 0; i < qs.dwNumberOfCsAddrs; i++) {
            CSADDR_INFO c;
            memcpy(&c, (unsigned char *)qs.lpcsaBuffer + (size_t)i * sizeof c, sizeof c);
            if (c.LocalAddr.iSockaddrLength > (INT)NSPV2_QS_MAX_SOCKADDR_LEN ||
                c.RemoteAddr.iSockaddrLength > (INT)NSPV2_QS_MAX_SOCKADDR_LEN)
                size_ok = 0;
        }
    }
    int route_err = 0;
    if (qs.lpNSProviderId && memcmp(qs.lpNSProviderId, &fz_id, sizeof fz_id) != 0)
        route_err = WSAEINVAL; /* not an advertised provider */
    else if (qs.dwNameSpace != NS_ALL && qs.dwNameSpace != NS_EMAIL)
        route_err = WSASERVICE_NOT_FOUND; /* the provider serves NS_EMAIL */
    int startup_err = (st.ctl & CTL_STARTUP_FAILS) ? WSASYSNOTREADY : 0;

    arena_seen.lo = arena;
    arena_seen.n = n;
    unsigned char *arena_copy = malloc(n ? n : 1);
    WSAQUERYSETW qs_copy;
    memcpy(&qs_copy, &qs, sizeof qs);
    if (!arena_copy) {
        free(arena);
        return 0;
    }
    memcpy(arena_copy, arena, n);
    st.client = &qs;

    uint64_t sid = 0;
    if (nspv2_session_open(&sid) != NO_ERROR)
        die("nspv2_session_open failed");

    /* 1. lookup */
    HANDLE h = NULL;
    int null_h = (st.ctl & CTL_NULL_HANDLE_PTR) != 0;
    WSASetLastError(0);
    int r = outcome(nspv2_lookup_begin(sid, &qs, flags, null_h ? NULL : &h));
    if (null_h) {
        if (r != WSAEFAULT && !(r == WSAEINVAL && !size_ok))
            expect(r, WSAEFAULT, "nspv2_lookup_begin(lphLookup NULL)");
        if (st.begins)
            die("Begin called with lphLookup NULL");
    } else {
        /* the lone routed provider's failing Startup or Begin drops it: no
         * provider left, WSASERVICE_NOT_FOUND */
        expect_routed(r,
                      !size_ok      ? WSAEINVAL
                      : route_err   ? route_err
                      : startup_err ? WSASERVICE_NOT_FOUND
                                    : 0,
                      st.begins, (st.ctl & CTL_BEGIN_FAILS) ? WSASERVICE_NOT_FOUND : NO_ERROR,
                      "nspv2_lookup_begin", "Begin");
    }
    int lookup_r = r;
    if (r == NO_ERROR) {
        if (!h)
            die("NO_ERROR with a NULL lookup handle");
        expect(outcome(nspv2_lookup_end(h)), NO_ERROR, "nspv2_lookup_end");
    }

    /* 2. registration */
    unsigned op = st.ctl & CTL_OP;
    WSASetLastError(0);
    r = outcome(nspv2_set_service(sid, &qs, (WSAESETSERVICEOP)op, flags));
    expect_routed(r,
                  (!size_ok || op > (unsigned)RNRSERVICE_DELETE) ? WSAEINVAL
                  : route_err                                    ? route_err
                                                                 : startup_err,
                  st.sets, (st.ctl & CTL_SETSVC_FAILS) ? WSANO_DATA : NO_ERROR,
                  "nspv2_set_service", "SetServiceEx");

    if (verbose)
        fprintf(stderr, "fuzz_queryset: begin -> %d (Begin called %d), set_service(op %u) -> %d\n",
                lookup_r, st.begins, op, r);
    expect(outcome(nspv2_session_close(sid)), NO_ERROR, "nspv2_session_close");

    if (memcmp(&qs, &qs_copy, sizeof qs) != 0 || memcmp(arena, arena_copy, n) != 0)
        die("the host wrote to the client's query set");
    st.client = NULL;
    free(arena_copy);
    free(arena);
    return 0;
}
