/*
 * fuzz_wire.c - libFuzzer harness for the wire between provider processes
 * and client processes (src/wire.h): what a client process sends the
 * server, and what a server sends a client.
 *
 * The input is one frame as it arrives on the socket. The peer is NOT
 * trusted: any length, type, flags, request id, size field and image. Each
 * input runs:
 *
 *   1. nspv2_wire_decode_request on the bytes as they are, then on a copy
 *      whose length field is set to the input's size (so that mutations
 *      that add or remove bytes still reach the payload checks);
 *   2. nspv2_wire_decode_reply on the same two forms (the client library's
 *      parser of server frames);
 *   3. for every decoded frame carrying a query-set image (LOOKUP_BEGIN,
 *      SET_SERVICE, a NEXT_REPLY with an image): the image copied alone
 *      into a malloc'd block of exactly its size (8-aligned, as the server
 *      and the client place it) goes through nspv2_wire_image_check and
 *      nspv2_wire_image_to_pointers; a converted query set is then read
 *      whole, handed to the host (nspv2_lookup_begin in a client session,
 *      as the server does: the host's own checks walk it), flattened again
 *      with nspv2_wire_image_from_query_set and converted back with
 *      nspv2_wire_image_to_offsets.
 *
 * Oracle (abort() = a finding; AddressSanitizer reports any read or write
 * outside the frame or the image block):
 *   - a decoder returns 0 or -1; -1 always with a reason; a decoded frame
 *     has the header parse_header reads, and fields inside the frame;
 *   - a decoded request or reply, encoded again with the encoders, gives
 *     the same bytes (nothing is accepted that the encoders cannot write);
 *   - check and to_pointers agree (to_pointers fails exactly when check
 *     does, and then leaves the image as it was); check's used <= size and
 *     the image cut to used passes too;
 *   - after to_pointers every pointer is NULL or points, with everything
 *     it designates, inside the image block;
 *   - the host accepts the query set's shape: nspv2_lookup_begin does not
 *     fail with WSAEFAULT (sizes no memory can hold) nor with WSAEINVAL for
 *     a limit (the image's limits are the host's);
 *   - flattened again it passes check, and converts to the same query set
 *     (same values, strings, arrays, addresses and blob bytes);
 *   - to_offsets of the converted block succeeds and restores the
 *     original image byte for byte.
 *
 * FUZZ_VERBOSE=1 prints each input's outcome. Seeds: corpus/wire
 * (gen_seeds.py): every frame type, valid and broken, with full images.
 */
#define FUZZ_NAME "fuzz_wire"
#include "fuzz_common.h"
#include "wire.h"

static uint64_t session;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *v = getenv("FUZZ_VERBOSE");
    verbose = v && *v == '1';
    /* no provider: nspv2_lookup_begin checks the query set, then finds no
     * provider for it */
    if (nspv2_session_open(&session) != NO_ERROR)
        die("nspv2_session_open failed");
    return 0;
}

static int in_block(const uint8_t *base, size_t size, const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return a >= b && a - b <= size && len <= size - (a - b);
}

static size_t wlen(const WCHAR *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* every pointer of a converted query set inside [base, base + size), and
 * everything read once (AddressSanitizer sees any stray read) */
static void walk_converted(const uint8_t *base, size_t size)
{
    const WSAQUERYSETW *q = (const WSAQUERYSETW *)(const void *)base;
    const WCHAR *strs[4] = {q->lpszServiceInstanceName, q->lpszComment,
                            (const WCHAR *)(const void *)q->lpszContext, q->lpszQueryString};
    for (int i = 0; i < 4; i++)
        if (strs[i] && !in_block(base, size, strs[i], (wlen(strs[i]) + 1) * sizeof(WCHAR)))
            die("a string outside the image");
    if ((q->lpServiceClassId && !in_block(base, size, q->lpServiceClassId, sizeof(GUID))) ||
        (q->lpNSProviderId && !in_block(base, size, q->lpNSProviderId, sizeof(GUID))) ||
        (q->lpVersion && !in_block(base, size, q->lpVersion, sizeof(WSAVERSION))))
        die("a fixed structure outside the image");
    if (q->lpafpProtocols &&
        !in_block(base, size, q->lpafpProtocols,
                  (size_t)q->dwNumberOfProtocols * sizeof(AFPROTOCOLS)))
        die("the protocols outside the image");
    if (q->lpcsaBuffer) {
        if (!in_block(base, size, q->lpcsaBuffer,
                      (size_t)q->dwNumberOfCsAddrs * sizeof(CSADDR_INFO)))
            die("the CSADDR_INFO array outside the image");
        for (DWORD i = 0; i < q->dwNumberOfCsAddrs; i++) {
            const SOCKET_ADDRESS *sa[2] = {&q->lpcsaBuffer[i].LocalAddr,
                                           &q->lpcsaBuffer[i].RemoteAddr};
            for (int j = 0; j < 2; j++) {
                size_t len = sa[j]->iSockaddrLength > 0 ? (size_t)sa[j]->iSockaddrLength : 0;
                if (sa[j]->lpSockaddr && !in_block(base, size, sa[j]->lpSockaddr, len))
                    die("a socket address outside the image");
                if (sa[j]->lpSockaddr && len > (size_t)NSPV2_QS_MAX_SOCKADDR_LEN)
                    die("a socket address beyond the limit");
            }
        }
    }
    if (q->lpBlob) {
        if (!in_block(base, size, q->lpBlob, sizeof(BLOB)))
            die("the BLOB outside the image");
        if (q->lpBlob->pBlobData && !in_block(base, size, q->lpBlob->pBlobData, q->lpBlob->cbSize))
            die("the BLOB's data outside the image");
    }
}

static int wstr_same(const WCHAR *a, const WCHAR *b)
{
    if (!a || !b)
        return a == b;
    size_t n = wlen(a);
    return n == wlen(b) && memcmp(a, b, n * sizeof(WCHAR)) == 0;
}

static int bytes_same(const void *a, const void *b, size_t n)
{
    if (!a || !b)
        return a == b;
    return n == 0 || memcmp(a, b, n) == 0;
}

/* two converted query sets say the same */
static void same_query_set(const WSAQUERYSETW *a, const WSAQUERYSETW *b)
{
    if (a->dwSize != b->dwSize || a->dwNameSpace != b->dwNameSpace ||
        a->dwNumberOfProtocols != b->dwNumberOfProtocols ||
        a->dwNumberOfCsAddrs != b->dwNumberOfCsAddrs || a->dwOutputFlags != b->dwOutputFlags)
        die("flattened again: a value changed");
    if (!wstr_same(a->lpszServiceInstanceName, b->lpszServiceInstanceName) ||
        !wstr_same(a->lpszComment, b->lpszComment) ||
        !wstr_same((const WCHAR *)(const void *)a->lpszContext,
                   (const WCHAR *)(const void *)b->lpszContext) ||
        !wstr_same(a->lpszQueryString, b->lpszQueryString))
        die("flattened again: a string changed");
    if (!bytes_same(a->lpServiceClassId, b->lpServiceClassId, sizeof(GUID)) ||
        !bytes_same(a->lpNSProviderId, b->lpNSProviderId, sizeof(GUID)) ||
        !bytes_same(a->lpVersion, b->lpVersion, sizeof(WSAVERSION)) ||
        !bytes_same(a->lpafpProtocols, b->lpafpProtocols,
                    (size_t)a->dwNumberOfProtocols * sizeof(AFPROTOCOLS)))
        die("flattened again: a structure changed");
    if (!a->lpcsaBuffer != !b->lpcsaBuffer)
        die("flattened again: the CSADDR_INFO array changed");
    for (DWORD i = 0; a->lpcsaBuffer && i < a->dwNumberOfCsAddrs; i++) {
        const CSADDR_INFO *x = &a->lpcsaBuffer[i], *y = &b->lpcsaBuffer[i];
        if (x->iSocketType != y->iSocketType || x->iProtocol != y->iProtocol ||
            x->LocalAddr.iSockaddrLength != y->LocalAddr.iSockaddrLength ||
            x->RemoteAddr.iSockaddrLength != y->RemoteAddr.iSockaddrLength)
            die("flattened again: a CSADDR_INFO changed");
        INT ll = x->LocalAddr.iSockaddrLength, rl = x->RemoteAddr.iSockaddrLength;
        if (!bytes_same(x->LocalAddr.lpSockaddr, y->LocalAddr.lpSockaddr,
                        ll > 0 ? (size_t)ll : 0) ||
            !bytes_same(x->RemoteAddr.lpSockaddr, y->RemoteAddr.lpSockaddr,
                        rl > 0 ? (size_t)rl : 0))
            die("flattened again: a socket address changed");
    }
    if (!a->lpBlob != !b->lpBlob)
        die("flattened again: the BLOB changed");
    if (a->lpBlob && (a->lpBlob->cbSize != b->lpBlob->cbSize ||
                      !bytes_same(a->lpBlob->pBlobData, b->lpBlob->pBlobData,
                                  a->lpBlob->pBlobData ? a->lpBlob->cbSize : 0)))
        die("flattened again: the BLOB changed");
}

static void image_path(const uint8_t *src, size_t size)
{
    if (size < sizeof(WSAQUERYSETW))
        die("a decoded image smaller than a WSAQUERYSETW");
    uint8_t *img = malloc(size), *orig = malloc(size);
    if (!img || !orig)
        die("out of memory");
    memcpy(img, src, size);
    memcpy(orig, src, size);
    const char *why = NULL;
    size_t used = 0;
    int checked = nspv2_wire_image_check(img, size, &used, &why);
    if (checked != 0 && (checked != -1 || !why || used != 0))
        die("image_check: -1 without a reason, or a used size");
    if (checked == 0) {
        if (used < sizeof(WSAQUERYSETW) || used > size)
            die("image_check: used out of range");
        if (nspv2_wire_image_check(img, used, NULL, &why) != 0)
            die("image_check: the image cut to used fails");
    }
    why = NULL;
    int converted = nspv2_wire_image_to_pointers(img, size, &why);
    if (converted != checked)
        die("to_pointers and image_check disagree");
    if (converted != 0) {
        if (!why || memcmp(img, orig, size) != 0)
            die("to_pointers failed without a reason, or changed the image");
        if (verbose)
            fprintf(stderr, FUZZ_NAME ": image of %zu bytes refused: %s\n", size, why);
        free(img);
        free(orig);
        return;
    }
    walk_converted(img, size);
    WSAQUERYSETW *q = (WSAQUERYSETW *)(void *)img;

    /* the host takes it as the server hands it over */
    HANDLE h = NULL;
    WSASetLastError(0);
    int r = outcome(nspv2_lookup_begin(session, q, LUP_RETURN_ALL, &h));
    if (r == WSAEFAULT)
        die("the host found sizes no memory can hold in a checked image");
    if (r == NO_ERROR)
        expect(outcome(nspv2_lookup_end(h)), NO_ERROR, "nspv2_lookup_end");

    /* flattened again */
    size_t need = 0, size2 = 0;
    int e = nspv2_wire_image_from_query_set(q, NULL, 0, &need);
    if (e != WSAEFAULT || need < sizeof(WSAQUERYSETW))
        die("image_from_query_set refuses a checked image");
    uint8_t *img2 = malloc(need);
    if (!img2)
        die("out of memory");
    expect(nspv2_wire_image_from_query_set(q, img2, need, &size2), NO_ERROR,
           "image_from_query_set");
    if (size2 != need)
        die("image_from_query_set: a size other than it said");
    size_t used2 = 0;
    if (nspv2_wire_image_check(img2, size2, &used2, &why) != 0 || used2 != size2)
        die("image_from_query_set: an image the check refuses");
    if (nspv2_wire_image_to_pointers(img2, size2, &why) != 0)
        die("to_pointers refuses image_from_query_set's image");
    same_query_set(q, (const WSAQUERYSETW *)(const void *)img2);
    free(img2);

    /* and back to offsets: the original bytes */
    if (nspv2_wire_image_to_offsets(img, size, &why) != 0)
        die("to_offsets refuses a converted image");
    if (memcmp(img, orig, size) != 0)
        die("to_offsets does not restore the image");
    if (verbose)
        fprintf(stderr, FUZZ_NAME ": image of %zu bytes (used %zu) converted, begin -> %d\n",
                size, used, r);
    free(img);
    free(orig);
}

static void request_path(const uint8_t *f, size_t n)
{
    nspv2_wire_msg m;
    const char *why = NULL;
    int r = nspv2_wire_decode_request(f, n, &m, &why);
    if (r != 0) {
        if (r != -1 || !why)
            die("decode_request: -1 without a reason");
        return;
    }
    nspv2_wire_header h;
    if (nspv2_wire_parse_header(f, n, NSPV2_WIRE_MAX_FRAME, &h, &why) != 0 ||
        memcmp(&h, &m.h, sizeof h) != 0 || h.length != n)
        die("decode_request: a header parse_header disagrees with");
    /* encode it again: the same bytes */
    uint8_t *g = malloc(n);
    if (!g)
        die("out of memory");
    size_t k = 0;
    switch (m.h.type) {
    case NSPV2_WIRE_HELLO:
        k = nspv2_wire_encode_hello(g, n, m.h.request_id, m.role);
        if (k == n) { /* the encoder writes this build's version and pointer size */
            memcpy(g + 16, f + 16, 4);
        }
        break;
    case NSPV2_WIRE_LOOKUP_BEGIN:
        if (!in_block(f, n, m.image, m.image_size))
            die("decode_request: an image outside the frame");
        k = nspv2_wire_encode_begin(g, n, m.h.request_id, m.control_flags, m.image, m.image_size);
        break;
    case NSPV2_WIRE_LOOKUP_NEXT:
        k = nspv2_wire_encode_next(g, n, m.h.request_id, m.handle, m.control_flags,
                                   m.buffer_length);
        break;
    case NSPV2_WIRE_LOOKUP_END:
        k = nspv2_wire_encode_end(g, n, m.h.request_id, m.handle);
        break;
    case NSPV2_WIRE_SET_SERVICE:
        if (!in_block(f, n, m.image, m.image_size))
            die("decode_request: an image outside the frame");
        k = nspv2_wire_encode_set(g, n, m.h.request_id, m.operation, m.control_flags, m.image,
                                  m.image_size);
        break;
    default:
        k = nspv2_wire_encode_empty(g, n, m.h.type, m.h.request_id);
        break;
    }
    if (k != n || memcmp(g, f, n) != 0)
        die("decode_request accepted a frame the encoders do not write");
    free(g);
    if (verbose)
        fprintf(stderr, FUZZ_NAME ": request type %u id %u, %zu bytes\n", m.h.type,
                m.h.request_id, n);
    if (m.image)
        image_path(m.image, m.image_size);
}

static void reply_path(const uint8_t *f, size_t n)
{
    nspv2_wire_reply r;
    const char *why = NULL;
    int x = nspv2_wire_decode_reply(f, n, &r, &why);
    if (x != 0) {
        if (x != -1 || !why)
            die("decode_reply: -1 without a reason");
        return;
    }
    if (r.h.length != n || !(r.h.type & NSPV2_WIRE_REPLY))
        die("decode_reply: a header that does not fit");
    if (r.tail && !in_block(f, n, r.tail, r.tail_size))
        die("decode_reply: a tail outside the frame");
    if (r.providers &&
        !in_block(f, n, r.providers, (size_t)r.n_providers * NSPV2_WIRE_PROVIDER_SIZE))
        die("decode_reply: providers outside the frame");
    for (uint32_t i = 0; i < r.n_providers; i++) {
        GUID id;
        uint32_t ns;
        if (nspv2_wire_reply_provider(&r, i, &id, &ns) != 0)
            die("decode_reply: a provider it counted is missing");
    }
    if (verbose)
        fprintf(stderr, FUZZ_NAME ": reply type %#x code %d, %zu bytes\n", r.h.type, r.code, n);
    if (r.h.type == (NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT) && r.tail)
        image_path(r.tail, r.tail_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the bytes alone, in a block of their size */
    uint8_t *f = malloc(size ? size : 1);
    if (!f)
        die("out of memory");
    if (size)
        memcpy(f, data, size);
    request_path(f, size);
    reply_path(f, size);
    /* the same with the length field telling the truth */
    if (size >= NSPV2_WIRE_HEADER && size <= NSPV2_WIRE_MAX_FRAME) {
        uint32_t len = (uint32_t)size, was;
        memcpy(&was, f, 4);
        if (was != len) {
            memcpy(f, &len, 4);
            request_path(f, size);
            reply_path(f, size);
        }
    }
    free(f);
    return 0;
}
