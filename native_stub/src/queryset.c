/*
 * queryset.c - the host's query-set handling: a client's WSAQUERYSETW
 * restrictions or registration become the WSAQUERYSET2W a provider reads,
 * and a provider's WSAQUERYSET2W result is validated and relocated into the
 * client's buffer as a WSAQUERYSETW. The libFuzzer harnesses in
 * native_stub/fuzz exercise this file through the public calls.
 */
#include "host_internal.h"

/* ------------------------------------------------------------------------ */
/* query sets                                                                */


/* The deep copy a provider is handed (Begin, SetServiceEx): the client's
 * WSAQUERYSETW as a WSAQUERYSET2W with everything it points to, in one
 * allocation owned by the host, as a process boundary would marshal it.
 * Ownership rule: the host frees the copy once the provider's call is over
 * (Begin: when it returns; SetServiceEx: when it completes, or when its held
 * record is released); the provider may scribble on it, never on the
 * client's memory. Every field keeps its value; a pointer is NULL in the
 * copy exactly when it is in the client's: strings are copied to their
 * terminator, fixed structures whole, arrays for their count, a sockaddr for
 * its iSockaddrLength bytes (none when <= 0), blob data for cbSize bytes.
 * Beyond the NSPV2_QS_MAX_* bounds (nspv2_host.h) the copy stops reading and
 * the call fails with WSAEINVAL: a count or length that lies cannot make the
 * host read past the client's memory by more than the bounds allow.
 * Two passes over the same walk: measure (base NULL), then fill. */
typedef struct qs_copier {
    unsigned char *base; /* NULL while measuring */
    size_t off;
    int overflow;
    int invalid; /* beyond the NSPV2_QS_MAX_* bounds: nothing more is read */
} qs_copier;

#define QS_COPY_ALIGN 8u

static void *qs_put(qs_copier *c, const void *src, size_t len)
{
    if (!src)
        return NULL;
    size_t at = (c->off + QS_COPY_ALIGN - 1) & ~(size_t)(QS_COPY_ALIGN - 1);
    if (at < c->off || len > SIZE_MAX - at) {
        c->overflow = 1;
        return NULL;
    }
    c->off = at + len;
    if (!c->base || c->overflow)
        return NULL;
    if (len)
        memcpy(c->base + at, src, len);
    return c->base + at;
}

static void *qs_put_array(qs_copier *c, const void *src, DWORD count, size_t size)
{
    if (src && count > NSPV2_QS_MAX_COUNT) {
        c->invalid = 1;
        return NULL;
    }
    if (src && count > SIZE_MAX / size) {
        c->overflow = 1;
        return NULL;
    }
    return qs_put(c, src, (size_t)count * size);
}

static WCHAR *qs_put_wstr(qs_copier *c, const void *src)
{
    if (!src)
        return NULL;
    const unsigned char *p = src;
    size_t n = 0;
    for (;;) {
        if (n > NSPV2_QS_MAX_STRING_CHARS) { /* no terminator within the bound */
            c->invalid = 1;
            return NULL;
        }
        WCHAR u;
        memcpy(&u, p + n * sizeof(WCHAR), sizeof u);
        n++;
        if (!u)
            break;
    }
    return qs_put(c, src, n * sizeof(WCHAR));
}

static void qs_copy_walk(qs_copier *c, const WSAQUERYSETW *in)
{
    WSAQUERYSET2W *out = qs_put(c, in, sizeof(WSAQUERYSET2W)); /* header, rewritten below */
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    q.dwSize = sizeof(WSAQUERYSET2W);
    q.lpszServiceInstanceName = qs_put_wstr(c, in->lpszServiceInstanceName);
    q.lpVersion = qs_put(c, in->lpVersion, sizeof(WSAVERSION));
    q.lpszComment = qs_put_wstr(c, in->lpszComment);
    q.dwNameSpace = in->dwNameSpace;
    q.lpNSProviderId = qs_put(c, in->lpNSProviderId, sizeof(GUID));
    q.lpszContext = (void *)qs_put_wstr(c, (const void *)in->lpszContext); /* LPTSTR under mingw-w64 */
    q.dwNumberOfProtocols = in->dwNumberOfProtocols;
    q.lpafpProtocols =
        qs_put_array(c, in->lpafpProtocols, in->dwNumberOfProtocols, sizeof(AFPROTOCOLS));
    q.lpszQueryString = qs_put_wstr(c, in->lpszQueryString);
    q.dwNumberOfCsAddrs = in->dwNumberOfCsAddrs;
    q.lpcsaBuffer = qs_put_array(c, in->lpcsaBuffer, in->dwNumberOfCsAddrs, sizeof(CSADDR_INFO));
    if (in->lpcsaBuffer && !c->invalid) {
        const unsigned char *src = (const unsigned char *)in->lpcsaBuffer;
        for (DWORD i = 0; i < in->dwNumberOfCsAddrs && !c->overflow && !c->invalid; i++) {
            CSADDR_INFO e;
            memcpy(&e, src + (size_t)i * sizeof e, sizeof e);
            INT ll = e.LocalAddr.iSockaddrLength, rl = e.RemoteAddr.iSockaddrLength;
            if (ll > (INT)NSPV2_QS_MAX_SOCKADDR_LEN || rl > (INT)NSPV2_QS_MAX_SOCKADDR_LEN) {
                c->invalid = 1;
                break;
            }
            e.LocalAddr.lpSockaddr = qs_put(c, e.LocalAddr.lpSockaddr, ll > 0 ? (size_t)ll : 0);
            e.RemoteAddr.lpSockaddr = qs_put(c, e.RemoteAddr.lpSockaddr, rl > 0 ? (size_t)rl : 0);
            if (c->base && !c->overflow)
                memcpy((unsigned char *)q.lpcsaBuffer + (size_t)i * sizeof e, &e, sizeof e);
        }
    }
    q.dwOutputFlags = in->dwOutputFlags;
    q.lpBlob = qs_put(c, in->lpBlob, sizeof(BLOB));
    if (in->lpBlob) {
        BLOB b;
        memcpy(&b, in->lpBlob, sizeof b);
        if (b.pBlobData && b.cbSize > NSPV2_QS_MAX_BLOB_BYTES) {
            c->invalid = 1;
            b.pBlobData = NULL;
        }
        b.pBlobData = qs_put(c, b.pBlobData, b.cbSize);
        if (c->base && !c->overflow)
            memcpy(q.lpBlob, &b, sizeof b);
    }
    if (out && !c->overflow)
        memcpy(out, &q, sizeof q);
}

int copy_query_set2(const WSAQUERYSETW *in, WSAQUERYSET2W **out, size_t *size)
{
    *out = NULL;
    *size = 0;
    qs_copier m = {NULL, 0, 0, 0};
    qs_copy_walk(&m, in);
    if (m.invalid)
        return WSAEINVAL; /* beyond the NSPV2_QS_MAX_* bounds */
    if (m.overflow)
        return WSAEFAULT; /* counts or lengths no memory can hold */
    qs_copier f = {malloc(m.off), 0, 0, 0};
    if (!f.base)
        return WSA_NOT_ENOUGH_MEMORY;
    qs_copy_walk(&f, in);
    *out = (WSAQUERYSET2W *)(void *)f.base;
    *size = m.off;
    return 0;
}

/* A client's query set as every call taking one checks it first, before
 * routing (so no provider, and no Startup, sees one the copy would refuse):
 * NULL -> WSAEFAULT; dwSize too small or beyond the NSPV2_QS_MAX_* bounds ->
 * WSAEINVAL; counts or lengths no memory can hold -> WSAEFAULT. */
int check_query_set(const WSAQUERYSETW *qs)
{
    if (!qs)
        return WSAEFAULT;
    if (qs->dwSize < sizeof(WSAQUERYSETW))
        return WSAEINVAL;
    qs_copier m = {NULL, 0, 0, 0};
    qs_copy_walk(&m, qs);
    if (m.invalid)
        return WSAEINVAL;
    if (m.overflow)
        return WSAEFAULT;
    return 0;
}

/* Relocation of a provider's WSAQUERYSET2W result (in the scratch buffer)
 * into the client's buffer as a WSAQUERYSETW. Every pointer must be NULL or
 * lie, with what it points to, inside the data area of the scratch buffer
 * (after the header), and no string may share bytes with the CSADDR_INFO
 * array or the BLOB, whose pointers are rewritten in place; anything else
 * is a provider fault. */
typedef struct reloc {
    uintptr_t lo, hi; /* data area of the scratch buffer */
    uintptr_t used;   /* end of the highest region referenced */
} reloc;

static int reloc_region(reloc *r, const void *ptr, size_t len)
{
    uintptr_t p = (uintptr_t)ptr;
    if (!p)
        return len == 0;
    if (p < r->lo || p > r->hi || len > r->hi - p)
        return 0;
    if (p + len > r->used)
        r->used = p + len;
    return 1;
}

static int reloc_array(reloc *r, const void *ptr, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return 0;
    return reloc_region(r, ptr, count * size);
}

/* A NUL-terminated UTF-16 string inside the data area; *len gets its size
 * in bytes, terminator included (0 for NULL). */
static int reloc_wstr(reloc *r, const void *ptr, size_t *len)
{
    uintptr_t p = (uintptr_t)ptr;
    *len = 0;
    if (!p)
        return 1;
    if (p < r->lo || p >= r->hi)
        return 0;
    const unsigned char *s = ptr;
    for (size_t off = 0; r->hi - p - off >= sizeof(WCHAR); off += sizeof(WCHAR)) {
        WCHAR c;
        memcpy(&c, s + off, sizeof c);
        if (c == 0) {
            *len = off + sizeof(WCHAR);
            return reloc_region(r, ptr, *len);
        }
    }
    return 0;
}

static int regions_overlap(const void *a, size_t alen, const void *b, size_t blen)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    if (!pa || !pb || !alen || !blen)
        return 0;
    return pa < pb + blen && pb < pa + alen;
}

/* 1 if nothing was written past the provider's buffer. */
int guard_intact(const unsigned char *scratch, size_t scratch_size)
{
    if (!scratch)
        return 1;
    for (unsigned i = 0; i < GUARD_BYTES; i++)
        if (scratch[scratch_size + i] != GUARD_BYTE(i))
            return 0;
    return 1;
}

/* Returns 0 on success, -1 on a provider fault. The client buffer holds at
 * least scratch_size + NSPV2_QS_DELTA bytes. */
int relocate_result(const unsigned char *scratch, size_t scratch_size,
                           unsigned char *client)
{
    const size_t h2 = sizeof(WSAQUERYSET2W), h1 = sizeof(WSAQUERYSETW);
    for (unsigned i = 0; i < GUARD_BYTES; i++)
        if (scratch[scratch_size + i] != GUARD_BYTE(i))
            return -1; /* wrote past its buffer */
    if (scratch_size < h2)
        return -1; /* success without room for the header */
    WSAQUERYSET2W q;
    memcpy(&q, scratch, sizeof q);
    reloc r = {(uintptr_t)scratch + h2, (uintptr_t)scratch + scratch_size,
               (uintptr_t)scratch + h2};

    const void *str[4] = {q.lpszServiceInstanceName, q.lpszComment, (const void *)q.lpszContext,
                          q.lpszQueryString};
    size_t slen[4];
    if (!reloc_wstr(&r, str[0], &slen[0]) || !reloc_wstr(&r, str[1], &slen[1]) ||
        !reloc_wstr(&r, str[2], &slen[2]) || !reloc_wstr(&r, str[3], &slen[3]) ||
        !reloc_region(&r, q.lpVersion, q.lpVersion ? sizeof(WSAVERSION) : 0) ||
        !reloc_region(&r, q.lpNSProviderId, q.lpNSProviderId ? sizeof(GUID) : 0))
        return -1;
    if ((q.dwNumberOfProtocols && !q.lpafpProtocols) ||
        !reloc_array(&r, q.lpafpProtocols, q.dwNumberOfProtocols, sizeof(AFPROTOCOLS)))
        return -1;
    if ((q.dwNumberOfCsAddrs && !q.lpcsaBuffer) ||
        !reloc_array(&r, q.lpcsaBuffer, q.dwNumberOfCsAddrs, sizeof(CSADDR_INFO)))
        return -1;
    const unsigned char *csa = (const unsigned char *)q.lpcsaBuffer;
    for (DWORD i = 0; i < q.dwNumberOfCsAddrs; i++) {
        CSADDR_INFO c;
        memcpy(&c, csa + (size_t)i * sizeof c, sizeof c);
        if (c.LocalAddr.iSockaddrLength < 0 || c.RemoteAddr.iSockaddrLength < 0 ||
            !reloc_region(&r, c.LocalAddr.lpSockaddr, (size_t)c.LocalAddr.iSockaddrLength) ||
            !reloc_region(&r, c.RemoteAddr.lpSockaddr, (size_t)c.RemoteAddr.iSockaddrLength))
            return -1;
    }
    BLOB b = {0, NULL};
    if (q.lpBlob) {
        if (!reloc_region(&r, q.lpBlob, sizeof(BLOB)))
            return -1;
        memcpy(&b, q.lpBlob, sizeof b);
        if (!reloc_region(&r, b.pBlobData, b.cbSize))
            return -1;
        /* its pointer is rewritten in place: it must not share bytes with
         * the CSADDR_INFO array, whose pointers are rewritten too */
        if (regions_overlap(q.lpBlob, sizeof(BLOB), q.lpcsaBuffer,
                            (size_t)q.dwNumberOfCsAddrs * sizeof(CSADDR_INFO)))
            return -1;
    }
    /* nor may a string: it would change with the rewritten pointer, and
     * could lose its terminator */
    for (size_t i = 0; i < 4; i++)
        if (regions_overlap(str[i], slen[i], q.lpcsaBuffer,
                            (size_t)q.dwNumberOfCsAddrs * sizeof(CSADDR_INFO)) ||
            regions_overlap(str[i], slen[i], q.lpBlob, sizeof(BLOB)))
            return -1;

    /* Copy the data area, then rewrite the pointers in the client's copy:
     * a pointer p into scratch + h2 becomes client + h1 + (p - scratch - h2). */
    memcpy(client + h1, scratch + h2, r.used - r.lo);
#define MOVED(p) ((p) ? (void *)(client + h1 + ((uintptr_t)(p) - r.lo)) : NULL)
    for (DWORD i = 0; i < q.dwNumberOfCsAddrs; i++) {
        size_t off = ((uintptr_t)csa - r.lo) + (size_t)i * sizeof(CSADDR_INFO);
        CSADDR_INFO c;
        memcpy(&c, client + h1 + off, sizeof c);
        c.LocalAddr.lpSockaddr = MOVED(c.LocalAddr.lpSockaddr);
        c.RemoteAddr.lpSockaddr = MOVED(c.RemoteAddr.lpSockaddr);
        memcpy(client + h1 + off, &c, sizeof c);
    }
    if (q.lpBlob) {
        size_t off = (uintptr_t)q.lpBlob - r.lo;
        b.pBlobData = MOVED(b.pBlobData);
        memcpy(client + h1 + off, &b, sizeof b);
    }
    WSAQUERYSETW w;
    memset(&w, 0, sizeof w);
    w.dwSize = sizeof(WSAQUERYSETW);
    w.lpszServiceInstanceName = MOVED(q.lpszServiceInstanceName);
    w.lpServiceClassId = NULL;
    w.lpVersion = MOVED(q.lpVersion);
    w.lpszComment = MOVED(q.lpszComment);
    w.dwNameSpace = q.dwNameSpace;
    w.lpNSProviderId = MOVED(q.lpNSProviderId);
    w.lpszContext = MOVED(q.lpszContext);
    w.dwNumberOfProtocols = q.dwNumberOfProtocols;
    w.lpafpProtocols = MOVED(q.lpafpProtocols);
    w.lpszQueryString = MOVED(q.lpszQueryString);
    w.dwNumberOfCsAddrs = q.dwNumberOfCsAddrs;
    w.lpcsaBuffer = MOVED(q.lpcsaBuffer);
    w.dwOutputFlags = q.dwOutputFlags;
    w.lpBlob = MOVED(q.lpBlob);
#undef MOVED
    memcpy(client, &w, sizeof w);
    return 0;
}
