/*
 * fuzz_result.c - libFuzzer harness for the host's provider side: the
 * WSAQUERYSET2W a provider's NSPv2LookupServiceNextEx writes into the
 * host's scratch buffer, which nspv2_lookup_next validates and relocates
 * into the client's buffer as a WSAQUERYSETW.
 *
 * The provider is NOT trusted: its header and nested structures may hold
 * any pointer value (inside the scratch buffer, in its header, just past
 * it, before it, in unrelated memory, small or wrapping integers,
 * misaligned) and any counts and lengths. The host must validate before it
 * dereferences anything; a read of a wild pointer crashes, a read of a
 * neighbouring heap block is an AddressSanitizer report.
 *
 * Input encoding (missing bytes read as zero)
 * -------------------------------------------
 *   [0]      ctl
 *              bits 0-1  completion code: 0 NO_ERROR, 1 WSAEFAULT with
 *                        *lpdwBufferLength = need, 2 WSA_E_NO_MORE,
 *                        3 an error from a small table, or need itself
 *              bit 2     overrun: also write 1 + need % 16 zero bytes past
 *                        *lpdwBufferLength (into the host's guard bytes:
 *                        GUARD_BYTES, 64 in src/host_internal.h)
 *              bit 3     the client passes a NULL buffer
 *              bit 4     with NO_ERROR, also set *lpdwBufferLength = need
 *              bit 5     complete twice (the second must be refused)
 *   [1..2]   client buffer length, little-endian, modulo MAX_CLIENT + 1;
 *            the client buffer is a malloc'd block of exactly that size
 *   [3..6]   need (little-endian uint32)
 *   [7]      npatch: number of 5-byte patch records that follow
 *   [8..)    npatch records {target, index, kind, value (uint16 LE)}
 *   rest     the image: copied to the start of the scratch buffer (at most
 *            *lpdwBufferLength bytes; the host zero-fills the rest), then
 *            the patches are applied in order
 *
 * A patch writes one field, always inside the scratch buffer (a field that
 * would not fit is skipped). target % 19:
 *   0..8    a pointer field of the WSAQUERYSET2W header, in this order:
 *           lpszServiceInstanceName, lpVersion, lpszComment, lpNSProviderId,
 *           lpszContext, lpafpProtocols, lpszQueryString, lpcsaBuffer, lpBlob
 *   9, 10   LocalAddr / RemoteAddr .lpSockaddr of CSADDR_INFO number
 *           index % 8 of the array the header's lpcsaBuffer points at (when
 *           that element lies inside the scratch buffer)
 *   11      pBlobData of the BLOB the header's lpBlob points at (idem)
 *   12..14  dwNumberOfProtocols, dwNumberOfCsAddrs, dwSize of the header
 *   15, 16  LocalAddr / RemoteAddr .iSockaddrLength of CSADDR_INFO index % 8
 *   17      cbSize of the BLOB
 *   18      a pointer at byte offset index of the scratch buffer (any
 *           alignment)
 * Pointer values, for kind % 8, with S the scratch buffer, L its length
 * (*lpdwBufferLength), H2 = sizeof(WSAQUERYSET2W), v the value:
 *   0 NULL                     1 S + v % (L + 1)     (inside, any alignment)
 *   2 S + H2 + v               3 S + L - v % (L + 1) (from the end)
 *   4 S + L + v % 128 (past)   5 S - 1 - v % 64      (before: heap redzone)
 *   6 a static decoy array + v % its size (valid memory, not the buffer)
 *   7 v odd: (v >> 1) + 1 (small integers); v even: UINTPTR_MAX - (v >> 1)
 * 32-bit values, for kind % 4: v, 0xFFFFFFFF - v, 0x80000000 + v,
 * 0x7FFFFFFF - v.
 *
 * Oracle (abort() = a finding). nspv2_lookup_next returns NO_ERROR or
 * SOCKET_ERROR with the code of the contract: WSAEFAULT for a NULL buffer
 * of non-zero length (the provider not called), WSAEFAULT with
 * *lpdwBufferLength = need + NSPV2_QS_DELTA (saturated), the provider's
 * error as is, and for a NO_ERROR completion either NO_ERROR or
 * WSANO_RECOVERY (a provider fault, counted in nspv2_host_stats; always so
 * after an overrun). On NO_ERROR the client's buffer must hold a valid
 * WSAQUERYSETW: dwSize = sizeof(WSAQUERYSETW), lpServiceClassId NULL, every
 * pointer NULL or pointing, with what it designates (string up to its
 * terminator, count x element, sockaddr length, blob size), inside the
 * client's buffer; each pointer at the same place relative to the data area
 * as the provider's was in the scratch buffer, which must have been inside
 * the provider's data area; and the same bytes there, except the pointer
 * fields the host rewrites (CSADDR_INFO lpSockaddr, BLOB pBlobData) - but
 * no exception for strings: a result string is exactly the provider's,
 * terminator included.
 */
#define FUZZ_NAME "fuzz_result"
#include "fuzz_common.h"

/* {46555A5A-5253-4C54-8A1F-46555A5A5253} */
static const GUID fr_id = {0x46555a5a, 0x5253, 0x4c54,
                           {0x8a, 0x1f, 0x46, 0x55, 0x5a, 0x5a, 0x52, 0x53}};

#define MAX_CLIENT 8192u
#define H1 sizeof(WSAQUERYSETW)
#define H2 sizeof(WSAQUERYSET2W)
#define CSA sizeof(CSADDR_INFO)
#define PTR sizeof(void *)

#define CTL_CODE 0x03u
#define CTL_OVERRUN 0x04u
#define CTL_NULL_BUFFER 0x08u
#define CTL_SET_LEN 0x10u
#define CTL_TWICE 0x20u

#define LOOKUP_HANDLE ((HANDLE)(uintptr_t)0x5253u)

static unsigned char decoy[256];

static const size_t hdr_ptr[9] = {
    offsetof(WSAQUERYSET2W, lpszServiceInstanceName),
    offsetof(WSAQUERYSET2W, lpVersion),
    offsetof(WSAQUERYSET2W, lpszComment),
    offsetof(WSAQUERYSET2W, lpNSProviderId),
    offsetof(WSAQUERYSET2W, lpszContext),
    offsetof(WSAQUERYSET2W, lpafpProtocols),
    offsetof(WSAQUERYSET2W, lpszQueryString),
    offsetof(WSAQUERYSET2W, lpcsaBuffer),
    offsetof(WSAQUERYSET2W, lpBlob),
};

static const INT error_table[] = {WSANO_DATA,  WSASERVICE_NOT_FOUND, WSAEINVAL,
                                  WSATRY_AGAIN, WSA_E_CANCELLED};

static struct {
    /* the plan, from the input */
    unsigned ctl;
    uint32_t need;
    INT code;
    const uint8_t *patches;
    size_t npatch;
    const uint8_t *image;
    size_t image_len;
    /* what the provider saw and wrote */
    int nexts;
    uintptr_t scratch;
    size_t scratch_len;
    unsigned char *snap; /* the scratch buffer as the provider left it */
    int overran;
} P;

/* ---- the in-harness provider -------------------------------------------- */

static uintptr_t get_ptr(const unsigned char *buf, size_t len, size_t at)
{
    uintptr_t p = 0;
    if (at <= len && len - at >= PTR)
        memcpy(&p, buf + at, PTR);
    return p;
}

static void put_ptr(unsigned char *buf, size_t len, size_t at, uintptr_t p)
{
    if (at <= len && len - at >= PTR)
        memcpy(buf + at, &p, PTR);
}

static void put_u32(unsigned char *buf, size_t len, size_t at, uint32_t v)
{
    if (at <= len && len - at >= sizeof v)
        memcpy(buf + at, &v, sizeof v);
}

/* Offset in buf of the element `index` (of size el) of the array a pointer
 * field at `field` points at, or SIZE_MAX when it is not inside buf. */
static size_t element_at(const unsigned char *buf, size_t len, size_t field, size_t index,
                         size_t el)
{
    uintptr_t p = get_ptr(buf, len, field), s = (uintptr_t)buf;
    if (p < s || p - s > len)
        return SIZE_MAX;
    size_t off = p - s;
    if ((len - off) / el <= index)
        return SIZE_MAX;
    return off + index * el;
}

static uintptr_t pointer_value(unsigned kind, uint16_t v, uintptr_t s, size_t len)
{
    switch (kind & 7u) {
    case 0:
        return 0;
    case 1:
        return s + v % (len + 1);
    case 2:
        return s + H2 + v;
    case 3:
        return s + len - v % (len + 1);
    case 4:
        return s + len + v % 128u;
    case 5:
        return s - 1 - v % 64u;
    case 6:
        return (uintptr_t)decoy + v % sizeof decoy;
    default:
        return (v & 1u) ? (uintptr_t)(v >> 1) + 1 : UINTPTR_MAX - (v >> 1);
    }
}

static uint32_t u32_value(unsigned kind, uint16_t v)
{
    switch (kind & 3u) {
    case 0:
        return v;
    case 1:
        return 0xFFFFFFFFu - v;
    case 2:
        return 0x80000000u + v;
    default:
        return 0x7FFFFFFFu - v;
    }
}

static void apply_patch(unsigned char *buf, size_t len, const uint8_t *rec)
{
    unsigned target = rec[0] % 19u, index = rec[1], kind = rec[2];
    uint16_t v = (uint16_t)(rec[3] | rec[4] << 8);
    uintptr_t s = (uintptr_t)buf;
    size_t at;
    switch (target) {
    case 9:
    case 10:
        at = element_at(buf, len, offsetof(WSAQUERYSET2W, lpcsaBuffer), index % 8u, CSA);
        if (at != SIZE_MAX)
            put_ptr(buf, len,
                    at + (target == 9 ? offsetof(CSADDR_INFO, LocalAddr.lpSockaddr)
                                      : offsetof(CSADDR_INFO, RemoteAddr.lpSockaddr)),
                    pointer_value(kind, v, s, len));
        break;
    case 11:
        at = element_at(buf, len, offsetof(WSAQUERYSET2W, lpBlob), 0, sizeof(BLOB));
        if (at != SIZE_MAX)
            put_ptr(buf, len, at + offsetof(BLOB, pBlobData), pointer_value(kind, v, s, len));
        break;
    case 12:
        put_u32(buf, len, offsetof(WSAQUERYSET2W, dwNumberOfProtocols), u32_value(kind, v));
        break;
    case 13:
        put_u32(buf, len, offsetof(WSAQUERYSET2W, dwNumberOfCsAddrs), u32_value(kind, v));
        break;
    case 14:
        put_u32(buf, len, offsetof(WSAQUERYSET2W, dwSize), u32_value(kind, v));
        break;
    case 15:
    case 16:
        at = element_at(buf, len, offsetof(WSAQUERYSET2W, lpcsaBuffer), index % 8u, CSA);
        if (at != SIZE_MAX)
            put_u32(buf, len,
                    at + (target == 15 ? offsetof(CSADDR_INFO, LocalAddr.iSockaddrLength)
                                       : offsetof(CSADDR_INFO, RemoteAddr.iSockaddrLength)),
                    u32_value(kind, v));
        break;
    case 17:
        at = element_at(buf, len, offsetof(WSAQUERYSET2W, lpBlob), 0, sizeof(BLOB));
        if (at != SIZE_MAX)
            put_u32(buf, len, at + offsetof(BLOB, cbSize), u32_value(kind, v));
        break;
    case 18:
        put_ptr(buf, len, index, pointer_value(kind, v, s, len));
        break;
    default: /* 0..8 */
        put_ptr(buf, len, hdr_ptr[target], pointer_value(kind, v, s, len));
        break;
    }
}

static INT WSAAPI fr_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    *arg = NULL;
    return NO_ERROR;
}

static INT WSAAPI fr_begin(LPGUID id, LPWSAQUERYSET2W q, DWORD flags, LPVOID arg, LPHANDLE lph)
{
    (void)id;
    (void)q;
    (void)flags;
    (void)arg;
    *lph = LOOKUP_HANDLE;
    return NO_ERROR;
}

static VOID WSAAPI fr_next(HANDLE async, HANDLE lookup, DWORD flags, LPDWORD lpdwBufferLength,
                           LPWSAQUERYSET2W res)
{
    (void)flags;
    if (lookup != LOOKUP_HANDLE || !lpdwBufferLength || !res)
        die("NextEx: bad arguments");
    unsigned char *buf = (unsigned char *)res;
    size_t len = *lpdwBufferLength;
    P.nexts++;
    P.scratch = (uintptr_t)buf;
    P.scratch_len = len;
    size_t n = P.image_len < len ? P.image_len : len;
    if (n)
        memcpy(buf, P.image, n);
    for (size_t i = 0; i < P.npatch; i++)
        apply_patch(buf, len, P.patches + 5 * i);
    free(P.snap);
    P.snap = malloc(len ? len : 1);
    if (!P.snap)
        die("out of memory");
    memcpy(P.snap, buf, len);
    if (P.ctl & CTL_OVERRUN) {
        memset(buf + len, 0, 1 + P.need % 16u); /* inside the host's guard */
        P.overran = 1;
    }
    if ((P.ctl & CTL_CODE) == 1 || (P.ctl & CTL_SET_LEN))
        *lpdwBufferLength = P.need;
    if (WSAProviderCompleteAsyncCall(async, P.code) != NO_ERROR)
        die("NextEx: completion refused");
    if ((P.ctl & CTL_TWICE) &&
        (WSAProviderCompleteAsyncCall(async, P.code) != SOCKET_ERROR ||
         WSAGetLastError() != WSAEINVAL))
        die("NextEx: a second completion was not refused with WSAEINVAL");
}

static INT WSAAPI fr_end(HANDLE lookup)
{
    if (lookup != LOOKUP_HANDLE)
        die("End: not our lookup handle");
    return NO_ERROR;
}

static NSPV2_ROUTINE fr_routine;
static WSAQUERYSETW fr_query;

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
    fr_routine.cbSize = sizeof fr_routine;
    fr_routine.dwMajorVersion = 1;
    NSPV2_SLOT(fr_routine, NSPv2Startup, fr_startup);
    NSPV2_SLOT(fr_routine, NSPv2LookupServiceBegin, fr_begin);
    NSPV2_SLOT(fr_routine, NSPv2LookupServiceNextEx, fr_next);
    NSPV2_SLOT(fr_routine, NSPv2LookupServiceEnd, fr_end);
    install_in_memory(&fr_id);
    if (WSAAdvertiseProvider(&fr_id, &fr_routine) != NO_ERROR)
        die("WSAAdvertiseProvider failed");
    nspv2_host_set_timeout_ms(2000);
    fr_query.dwSize = sizeof fr_query;
    fr_query.dwNameSpace = NS_ALL;
    fr_query.lpNSProviderId = (LPGUID)&fr_id;
    for (size_t i = 0; i < sizeof decoy; i++)
        decoy[i] = (unsigned char)(i * 7u + 1u);
    return 0;
}

/* ---- checking the client's result ----------------------------------------- */

typedef struct view {
    const unsigned char *cb; /* client buffer */
    size_t clen;
    const unsigned char *cd; /* client data area: cb + H1 */
    const unsigned char *pd; /* provider data area: snap + H2 */
    size_t dlen;             /* data area length (the same for both) */
    unsigned char *mask;     /* data-area bytes of the rewritten pointer fields */
} view;

static void fail_at(const char *what, const char *field)
{
    fprintf(stderr, "fuzz_result: %s: %s\n", field, what);
    abort();
}

/* Offset in the provider's data area of a region the host accepted. */
static size_t provider_off(const view *v, uintptr_t p, size_t len, const char *field)
{
    uintptr_t lo = P.scratch + H2;
    if (p < lo || p - lo > v->dlen || len > v->dlen - (p - lo))
        fail_at("the host accepted a region outside the provider's data area", field);
    return p - lo;
}

/* The client's pointer for the provider's p (len bytes): NULL for NULL,
 * else inside the client's buffer at the same data-area offset. */
static size_t check_moved(const view *v, uintptr_t p, const void *got, size_t len,
                          const char *field)
{
    uintptr_t g = (uintptr_t)got, c = (uintptr_t)v->cb;
    if (!p) {
        if (got)
            fail_at("NULL became non-NULL", field);
        return SIZE_MAX;
    }
    if (!got)
        fail_at("non-NULL became NULL", field);
    if (g < c || g - c > v->clen || len > v->clen - (g - c))
        fail_at("points outside the client's buffer", field);
    size_t off = provider_off(v, p, len, field);
    if (g != (uintptr_t)v->cd + off)
        fail_at("not relocated to the same place", field);
    return off;
}

static void mark(view *v, size_t off, size_t len)
{
    for (size_t i = 0; i < len && off + i < v->dlen; i++)
        v->mask[off + i] = 1;
}

static int masked(const view *v, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (v->mask[off + i])
            return 1;
    return 0;
}

static void same_bytes(const view *v, size_t off, size_t len, const char *field)
{
    for (size_t i = 0; i < len; i++)
        if (!v->mask[off + i] && v->cd[off + i] != v->pd[off + i])
            fail_at("bytes differ from the provider's", field);
}

static void check_region(const view *v, uintptr_t p, const void *got, size_t len,
                         const char *field)
{
    size_t off = check_moved(v, p, got, len, field);
    if (off != SIZE_MAX)
        same_bytes(v, off, len, field);
}

/* count x el bytes (an array the host accepted cannot overflow) */
static size_t times(DWORD count, size_t el, const char *field)
{
    if (el && count > SIZE_MAX / el)
        fail_at("the host accepted an impossible count", field);
    return (size_t)count * el;
}

static void check_array(const view *v, uintptr_t p, const void *got, DWORD count, size_t el,
                        const char *field)
{
    if (count && !p)
        fail_at("the host accepted a count with a NULL array", field);
    check_region(v, p, got, times(count, el, field), field);
}

static void check_string(const view *v, uintptr_t p, const void *got, const char *field)
{
    if (!p) {
        check_moved(v, p, got, 0, field);
        return;
    }
    uintptr_t lo = P.scratch + H2;
    if (p < lo || p - lo >= v->dlen)
        fail_at("the host accepted a string outside the provider's data area", field);
    size_t off = p - lo, len = 0;
    for (;;) { /* the provider's string, up to and with its terminator */
        if (v->dlen - off - len < sizeof(WCHAR))
            fail_at("the host accepted an unterminated string", field);
        WCHAR c;
        memcpy(&c, v->pd + off + len, sizeof c);
        len += sizeof c;
        if (!c)
            break;
    }
    check_moved(v, p, got, sizeof(WCHAR), field);
    /* the client's string must end inside the client's buffer */
    const unsigned char *s = got;
    size_t room = v->clen - (size_t)(s - v->cb), clen = 0;
    for (;;) {
        if (room - clen < sizeof(WCHAR))
            fail_at("the result string runs past the client's buffer", field);
        WCHAR c;
        memcpy(&c, s + clen, sizeof c);
        clen += sizeof c;
        if (!c)
            break;
    }
    /* and be the provider's string: a string sharing bytes with a pointer
     * the host rewrites (CSADDR_INFO, BLOB) would change, and could lose its
     * terminator (or gain one), depending on the two buffers' addresses */
    if (clen != len || memcmp(s, v->pd + off, len) != 0)
        fail_at(masked(v, off, len) ? "the result string differs from the provider's: it "
                                      "shares bytes with a pointer the host rewrites"
                                    : "the result string differs from the provider's",
                field);
}

static void check_result(const unsigned char *cb, size_t clen)
{
    if (P.nexts != 1)
        die("NO_ERROR without exactly one NextEx");
    if (P.code != NO_ERROR)
        die("NO_ERROR for a failed NextEx");
    if (P.overran)
        die("NO_ERROR although the provider wrote past its buffer");
    if (!cb || clen < H1 || P.scratch_len < H2)
        die("NO_ERROR without room for the header");
    if (clen - H1 != P.scratch_len - H2)
        die("scratch buffer size is not the client's minus NSPV2_QS_DELTA");
    view v = {cb, clen, cb + H1, P.snap + H2, P.scratch_len - H2, NULL};
    v.mask = calloc(v.dlen ? v.dlen : 1, 1);
    if (!v.mask)
        die("out of memory");

    WSAQUERYSETW w;
    WSAQUERYSET2W q;
    memcpy(&w, cb, sizeof w);
    memcpy(&q, P.snap, sizeof q);
    if (w.dwSize != sizeof(WSAQUERYSETW))
        die("result dwSize is not sizeof(WSAQUERYSETW)");
    if (w.lpServiceClassId)
        die("result lpServiceClassId is not NULL");
    if (w.dwNameSpace != q.dwNameSpace || w.dwNumberOfProtocols != q.dwNumberOfProtocols ||
        w.dwNumberOfCsAddrs != q.dwNumberOfCsAddrs || w.dwOutputFlags != q.dwOutputFlags)
        die("a DWORD field of the result differs from the provider's");

    /* the pointer fields the host rewrites inside the data area */
    size_t csa_off = SIZE_MAX, blob_off = SIZE_MAX;
    uintptr_t csa = (uintptr_t)q.lpcsaBuffer, blob = (uintptr_t)q.lpBlob;
    if (q.dwNumberOfCsAddrs && csa) {
        csa_off = provider_off(&v, csa, times(q.dwNumberOfCsAddrs, CSA, "lpcsaBuffer"),
                               "lpcsaBuffer");
        for (size_t i = 0; i < q.dwNumberOfCsAddrs; i++) {
            mark(&v, csa_off + i * CSA + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), PTR);
            mark(&v, csa_off + i * CSA + offsetof(CSADDR_INFO, RemoteAddr.lpSockaddr), PTR);
        }
    }
    if (blob) {
        blob_off = provider_off(&v, blob, sizeof(BLOB), "lpBlob");
        mark(&v, blob_off + offsetof(BLOB, pBlobData), PTR);
    }

    check_string(&v, (uintptr_t)q.lpszServiceInstanceName, w.lpszServiceInstanceName,
                 "lpszServiceInstanceName");
    check_string(&v, (uintptr_t)q.lpszComment, w.lpszComment, "lpszComment");
    check_string(&v, (uintptr_t)q.lpszContext, w.lpszContext, "lpszContext");
    check_string(&v, (uintptr_t)q.lpszQueryString, w.lpszQueryString, "lpszQueryString");
    check_region(&v, (uintptr_t)q.lpVersion, w.lpVersion, q.lpVersion ? sizeof(WSAVERSION) : 0,
                 "lpVersion");
    check_region(&v, (uintptr_t)q.lpNSProviderId, w.lpNSProviderId,
                 q.lpNSProviderId ? sizeof(GUID) : 0, "lpNSProviderId");
    check_array(&v, (uintptr_t)q.lpafpProtocols, w.lpafpProtocols, q.dwNumberOfProtocols,
                sizeof(AFPROTOCOLS), "lpafpProtocols");
    check_array(&v, (uintptr_t)q.lpcsaBuffer, w.lpcsaBuffer, q.dwNumberOfCsAddrs, CSA,
                "lpcsaBuffer");
    for (size_t i = 0; csa_off != SIZE_MAX && i < q.dwNumberOfCsAddrs; i++) {
        CSADDR_INFO pc, cc;
        memcpy(&pc, v.pd + csa_off + i * CSA, sizeof pc);
        memcpy(&cc, v.cd + csa_off + i * CSA, sizeof cc);
        if (pc.LocalAddr.iSockaddrLength < 0 || pc.RemoteAddr.iSockaddrLength < 0)
            die("the host accepted a negative iSockaddrLength");
        check_region(&v, (uintptr_t)pc.LocalAddr.lpSockaddr, cc.LocalAddr.lpSockaddr,
                     (size_t)pc.LocalAddr.iSockaddrLength, "CSADDR_INFO.LocalAddr");
        check_region(&v, (uintptr_t)pc.RemoteAddr.lpSockaddr, cc.RemoteAddr.lpSockaddr,
                     (size_t)pc.RemoteAddr.iSockaddrLength, "CSADDR_INFO.RemoteAddr");
    }
    check_region(&v, blob, w.lpBlob, blob ? sizeof(BLOB) : 0, "lpBlob");
    if (blob_off != SIZE_MAX) {
        BLOB pb, cbl;
        memcpy(&pb, v.pd + blob_off, sizeof pb);
        memcpy(&cbl, v.cd + blob_off, sizeof cbl);
        check_region(&v, (uintptr_t)pb.pBlobData, cbl.pBlobData, pb.cbSize, "BLOB.pBlobData");
    }
    free(v.mask);
}

/* ---- one input ------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t head[8] = {0};
    memcpy(head, data, size < sizeof head ? size : sizeof head);
    memset(&P, 0, sizeof P);
    P.ctl = head[0];
    size_t client_len = (size_t)(head[1] | head[2] << 8) % (MAX_CLIENT + 1);
    P.need = (uint32_t)head[3] | (uint32_t)head[4] << 8 | (uint32_t)head[5] << 16 |
             (uint32_t)head[6] << 24;
    size_t rest = size > sizeof head ? size - sizeof head : 0;
    P.npatch = head[7] < rest / 5 ? head[7] : rest / 5;
    P.patches = data + sizeof head;
    P.image = P.patches + 5 * P.npatch;
    P.image_len = rest - 5 * P.npatch;
    switch (P.ctl & CTL_CODE) {
    case 0:
        P.code = NO_ERROR;
        break;
    case 1:
        P.code = WSAEFAULT;
        break;
    case 2:
        P.code = WSA_E_NO_MORE;
        break;
    default: {
        size_t k = P.need % (sizeof error_table / sizeof error_table[0] + 1);
        P.code = k < sizeof error_table / sizeof error_table[0] ? error_table[k]
                                                                : (INT)(P.need | 0x10000u);
        break;
    }
    }

    int null_buffer = (P.ctl & CTL_NULL_BUFFER) != 0;
    unsigned char *cb = null_buffer ? NULL : malloc(client_len);
    if (!null_buffer && !cb && client_len)
        return 0;

    uint64_t sid = 0;
    HANDLE h = NULL;
    expect(outcome(nspv2_session_open(&sid)), NO_ERROR, "nspv2_session_open");
    expect(outcome(nspv2_lookup_begin(sid, &fr_query, 0, &h)), NO_ERROR, "nspv2_lookup_begin");
    nspv2_host_stats before, after;
    nspv2_host_stats_get(&before);

    DWORD len = (DWORD)client_len;
    WSASetLastError(0);
    int r = outcome(nspv2_lookup_next(h, 0, &len, (LPWSAQUERYSETW)(void *)cb));
    nspv2_host_stats_get(&after);
    uint64_t faults = after.provider_faults - before.provider_faults;
    if (verbose)
        fprintf(stderr, "fuzz_result: client %zu bytes, NextEx %d completes %d -> %d, len %u\n",
                client_len, P.nexts, (int)P.code, r, (unsigned)len);

    if (!cb && client_len) {
        expect(r, WSAEFAULT, "nspv2_lookup_next with a NULL buffer");
        if (P.nexts)
            die("NextEx called for a NULL client buffer");
    } else {
        if (P.nexts != 1)
            die("NextEx not called exactly once");
        if (P.code == NO_ERROR) {
            if (r == NO_ERROR)
                check_result(cb, client_len);
            else
                expect(r, WSANO_RECOVERY, "nspv2_lookup_next (NextEx succeeded)");
            if (P.overran && r == NO_ERROR)
                die("an overrun went unnoticed");
            if (faults != (uint64_t)(r == WSANO_RECOVERY))
                die("provider_faults does not count the fault");
        } else if (P.overran) {
            /* an overrun is a fault whatever the provider completed with */
            expect(r, WSANO_RECOVERY, "nspv2_lookup_next (NextEx overran, then failed)");
            if (faults != 1)
                die("provider_faults does not count the fault");
        } else {
            expect(r, P.code, "nspv2_lookup_next (NextEx failed)");
            if (P.code == WSAEFAULT) {
                DWORD want = P.need > UINT32_MAX - NSPV2_QS_DELTA ? UINT32_MAX
                                                                  : P.need + NSPV2_QS_DELTA;
                expect((int)len, (int)want, "*lpdwBufferLength after WSAEFAULT");
            }
        }
    }

    expect(outcome(nspv2_lookup_end(h)), NO_ERROR, "nspv2_lookup_end");
    expect(outcome(nspv2_session_close(sid)), NO_ERROR, "nspv2_session_close");
    free(cb);
    free(P.snap);
    P.snap = NULL;
    return 0;
}
