/*
 * test_wire.c - tests of src/wire.c, the protocol between provider
 * processes and client processes: every frame encoded and decoded back,
 * every malformation refused (truncations, reserved fields, sizes, ids,
 * types), the size limits at and one past their edge, and query-set images:
 * a full query set flattened and turned back into pointers, every image
 * rule broken once, and images through the host and a provider (a
 * registration and a lookup whose result goes to offsets and back, as the
 * server and the client library do).
 */
#include "test_support.h"
#include "wire.h"

void run_wire_tests(void);

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static int req_ok(const uint8_t *f, size_t n, nspv2_wire_msg *m)
{
    const char *why = NULL;
    int r = nspv2_wire_decode_request(f, n, m, &why);
    if (r != 0)
        printf("     decode_request: %s\n", why ? why : "(no reason)");
    return r == 0;
}

/* decode_request refuses and gives a reason */
static int req_bad(const uint8_t *f, size_t n)
{
    nspv2_wire_msg m;
    const char *why = NULL;
    return nspv2_wire_decode_request(f, n, &m, &why) == -1 && why && *why;
}

static int rep_ok(const uint8_t *f, size_t n, nspv2_wire_reply *r)
{
    const char *why = NULL;
    int x = nspv2_wire_decode_reply(f, n, r, &why);
    if (x != 0)
        printf("     decode_reply: %s\n", why ? why : "(no reason)");
    return x == 0;
}

static int rep_bad(const uint8_t *f, size_t n)
{
    nspv2_wire_reply r;
    const char *why = NULL;
    return nspv2_wire_decode_reply(f, n, &r, &why) == -1 && why && *why;
}

/* every proper prefix of a frame (with its length field kept) is refused,
 * and so is the frame with one byte more */
static int prefixes_refused(const uint8_t *f, size_t n, int reply)
{
    uint8_t *g = malloc(n + 1);
    if (!g)
        return 0;
    memcpy(g, f, n);
    g[n] = 0;
    int ok = 1;
    for (size_t k = 0; k < n && ok; k++)
        ok = reply ? rep_bad(g, k) : req_bad(g, k);
    if (ok)
        ok = reply ? rep_bad(g, n + 1) : req_bad(g, n + 1);
    free(g);
    return ok;
}

/* a valid image to test with: image_from_query_set of a query set using
 * every field (malloc'd, 8-aligned; *size its length) */
typedef struct full_qs {
    WSAQUERYSETW q;
    GUID class_id, provider_id;
    WSAVERSION version;
    AFPROTOCOLS protocols[2];
    CSADDR_INFO cs[3];
    SOCKADDR_IN sin[2];
    SOCKADDR_IN6 sin6;
    BLOB blob;
    unsigned char data[5];
} full_qs;

static const GUID some_class = {0x11223344, 0x5566, 0x7788, {1, 2, 3, 4, 5, 6, 7, 8}};

static void full_init(full_qs *f)
{
    memset(f, 0, sizeof *f);
    f->class_id = some_class;
    f->provider_id = nspv2_bench_provider_id;
    f->version.dwVersion = 7;
    f->version.ecHow = COMP_NOTLESS;
    f->protocols[0].iAddressFamily = NSPV2_AF_INET;
    f->protocols[0].iProtocol = 6;
    f->protocols[1].iAddressFamily = NSPV2_AF_INET6;
    f->protocols[1].iProtocol = 17;
    f->sin[0].sin_family = NSPV2_AF_INET;
    f->sin[0].sin_port = 0xC513;
    f->sin[1].sin_family = NSPV2_AF_INET;
    f->sin[1].sin_port = 0x0102;
    f->sin6.sin6_family = NSPV2_AF_INET6;
    f->sin6.sin6_scope_id = 9;
    f->cs[0].LocalAddr.lpSockaddr = (LPSOCKADDR)(void *)&f->sin[0];
    f->cs[0].LocalAddr.iSockaddrLength = sizeof(SOCKADDR_IN);
    f->cs[0].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)&f->sin6;
    f->cs[0].RemoteAddr.iSockaddrLength = sizeof(SOCKADDR_IN6);
    f->cs[0].iSocketType = 1;
    f->cs[0].iProtocol = 6;
    /* a non-NULL address of length <= 0: nothing copied, still non-NULL */
    f->cs[1].LocalAddr.lpSockaddr = (LPSOCKADDR)(void *)&f->sin[1];
    f->cs[1].LocalAddr.iSockaddrLength = -5;
    f->cs[1].iSocketType = 2;
    f->cs[1].iProtocol = 17;
    /* a NULL address with a length */
    f->cs[2].RemoteAddr.iSockaddrLength = 16;
    f->cs[2].iSocketType = 3;
    memcpy(f->data, "\x01\x02\x03\x04\x05", 5);
    f->blob.cbSize = 5;
    f->blob.pBlobData = f->data;
    WSAQUERYSETW *q = &f->q;
    q->dwSize = sizeof *q;
    q->lpszServiceInstanceName = W("alice@example.com");
    q->lpServiceClassId = &f->class_id;
    q->lpVersion = &f->version;
    q->lpszComment = W("MISTATUS_ONLINE");
    q->dwNameSpace = NS_EMAIL;
    q->lpNSProviderId = &f->provider_id;
    q->lpszContext = (void *)W("ctx");
    q->dwNumberOfProtocols = 2;
    q->lpafpProtocols = f->protocols;
    q->lpszQueryString = W("");
    q->dwNumberOfCsAddrs = 3;
    q->lpcsaBuffer = f->cs;
    q->dwOutputFlags = 0x55;
    q->lpBlob = &f->blob;
}

static uint8_t *make_image(const WSAQUERYSETW *q, size_t *size)
{
    *size = 0;
    size_t need = 0;
    if (nspv2_wire_image_from_query_set(q, NULL, 0, &need) != WSAEFAULT || !need)
        return NULL;
    uint8_t *img = malloc(need);
    if (img && nspv2_wire_image_from_query_set(q, img, need, size) != NO_ERROR) {
        free(img);
        return NULL;
    }
    return img;
}

static uintptr_t off_at(const uint8_t *img, size_t field)
{
    uintptr_t v;
    memcpy(&v, img + field, sizeof v);
    return v;
}

static void set_off(uint8_t *img, size_t field, uintptr_t v)
{
    memcpy(img + field, &v, sizeof v);
}

static void set_dw(uint8_t *img, size_t field, DWORD v)
{
    memcpy(img + field, &v, sizeof v);
}

/* an image copy the check refuses, and to_pointers refuses leaving it as
 * it was */
static int image_refused(const uint8_t *img, size_t size)
{
    uint8_t *a = malloc(size ? size : 1), *b = malloc(size ? size : 1);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memcpy(a, img, size);
    memcpy(b, img, size);
    const char *why1 = NULL, *why2 = NULL;
    size_t used = 1;
    int ok = nspv2_wire_image_check(a, size, &used, &why1) == -1 && why1 && used == 0 &&
             nspv2_wire_image_to_pointers(a, size, &why2) == -1 && why2 &&
             memcmp(a, b, size) == 0;
    if (!ok)
        printf("     image not refused (%s)\n", why1 ? why1 : "accepted");
    free(a);
    free(b);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* frames                                                                    */

TEST(test_wire_requests_round_trip)
{
    uint8_t f[256], img[sizeof(WSAQUERYSETW) + 8];
    nspv2_wire_msg m;
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)i;

    size_t n = nspv2_wire_encode_hello(f, sizeof f, 1, NSPV2_WIRE_ROLE_MONITOR);
    CHECK(n == 28);
    CHECK(req_ok(f, n, &m));
    CHECK(m.h.length == 28 && m.h.type == NSPV2_WIRE_HELLO && m.h.flags == 0 &&
          m.h.request_id == 1);
    CHECK(m.magic == NSPV2_WIRE_MAGIC && m.version == NSPV2_WIRE_VERSION &&
          m.pointer_size == sizeof(void *) && m.role == NSPV2_WIRE_ROLE_MONITOR);
    CHECK(memcmp(f + 12, "NSP2", 4) == 0); /* the magic in memory */
    CHECK(prefixes_refused(f, n, 0));

    n = nspv2_wire_encode_begin(f, sizeof f, 0xFFFFFFFFu, LUP_RETURN_ALL, img, sizeof img);
    CHECK(n == 12 + 8 + sizeof img);
    CHECK(req_ok(f, n, &m));
    CHECK(m.h.type == NSPV2_WIRE_LOOKUP_BEGIN && m.h.request_id == 0xFFFFFFFFu &&
          m.control_flags == LUP_RETURN_ALL && m.image_size == sizeof img &&
          m.image == f + 20 && memcmp(m.image, img, sizeof img) == 0);
    CHECK(prefixes_refused(f, n, 0));

    n = nspv2_wire_encode_next(f, sizeof f, 7, 0x0102030405060708ull, 0x10, 4096);
    CHECK(n == 28);
    CHECK(req_ok(f, n, &m));
    CHECK(m.h.type == NSPV2_WIRE_LOOKUP_NEXT && m.handle == 0x0102030405060708ull &&
          m.control_flags == 0x10 && m.buffer_length == 4096 && m.image == NULL);
    CHECK(prefixes_refused(f, n, 0));

    n = nspv2_wire_encode_end(f, sizeof f, 8, 42);
    CHECK(n == 20);
    CHECK(req_ok(f, n, &m));
    CHECK(m.h.type == NSPV2_WIRE_LOOKUP_END && m.handle == 42);
    CHECK(prefixes_refused(f, n, 0));

    n = nspv2_wire_encode_set(f, sizeof f, 9, RNRSERVICE_DELETE, SERVICE_MULTIPLE, img,
                              sizeof img);
    CHECK(n == 12 + 16 + sizeof img);
    CHECK(req_ok(f, n, &m));
    CHECK(m.h.type == NSPV2_WIRE_SET_SERVICE && m.operation == RNRSERVICE_DELETE &&
          m.control_flags == SERVICE_MULTIPLE && m.image_size == sizeof img &&
          m.image == f + 28 && memcmp(m.image, img, sizeof img) == 0);
    CHECK(prefixes_refused(f, n, 0));

    const uint16_t empties[] = {NSPV2_WIRE_GOODBYE, NSPV2_WIRE_STATUS, NSPV2_WIRE_KEEPALIVE};
    for (int i = 0; i < 3; i++) {
        uint32_t id = empties[i] == NSPV2_WIRE_KEEPALIVE ? 0 : 5;
        n = nspv2_wire_encode_empty(f, sizeof f, empties[i], id);
        CHECK(n == 12);
        CHECK(req_ok(f, n, &m));
        CHECK(m.h.type == empties[i] && m.h.request_id == id);
        CHECK(prefixes_refused(f, n, 0));
    }

    /* the header alone */
    nspv2_wire_header h;
    const char *why = NULL;
    n = nspv2_wire_encode_next(f, sizeof f, 3, 1, 0, 0);
    CHECK(nspv2_wire_parse_header(f, 12, NSPV2_WIRE_MAX_FRAME, &h, &why) == 0);
    CHECK(h.length == 28 && h.type == NSPV2_WIRE_LOOKUP_NEXT && h.request_id == 3);
    CHECK(nspv2_wire_parse_header(f, 12, 27, &h, &why) == -1 && why); /* beyond max_frame */
    CHECK(nspv2_wire_parse_header(f, 11, NSPV2_WIRE_MAX_FRAME, &h, &why) == -1);
    CHECK(nspv2_wire_parse_header(NULL, 12, NSPV2_WIRE_MAX_FRAME, &h, &why) == -1);
}

TEST(test_wire_requests_malformed)
{
    uint8_t f[256], g[256], img[sizeof(WSAQUERYSETW)];
    memset(img, 0, sizeof img);
    size_t n = nspv2_wire_encode_hello(f, sizeof f, 1, 0);

    /* header fields */
    memcpy(g, f, n);
    put16(g + 6, 1); /* flags */
    CHECK(req_bad(g, n));
    memcpy(g, f, n);
    put16(g + 4, 0x0009); /* unknown type */
    CHECK(req_bad(g, n));
    put16(g + 4, 0);
    CHECK(req_bad(g, n));
    put16(g + 4, NSPV2_WIRE_REPLY | NSPV2_WIRE_HELLO); /* a server's type */
    CHECK(req_bad(g, n));
    put16(g + 4, NSPV2_WIRE_ERROR);
    CHECK(req_bad(g, n));
    memcpy(g, f, n);
    put32(g + 8, 0); /* request id 0 */
    CHECK(req_bad(g, n));
    memcpy(g, f, n);
    put32(g, 11); /* length shorter than a header */
    CHECK(req_bad(g, n));
    put32(g, NSPV2_WIRE_MAX_FRAME + 1);
    CHECK(req_bad(g, n));
    put32(g, (uint32_t)n + 4); /* more than the bytes given */
    CHECK(req_bad(g, n));
    /* HELLO: magic, reserved */
    memcpy(g, f, n);
    g[12] ^= 1;
    CHECK(req_bad(g, n));
    memcpy(g, f, n);
    put32(g + 24, 1);
    CHECK(req_bad(g, n));
    /* version, pointer size and role are the server's to judge */
    memcpy(g, f, n);
    put16(g + 16, 99);
    put16(g + 18, 4);
    put32(g + 20, 7);
    nspv2_wire_msg m;
    CHECK(req_ok(g, n, &m) && m.version == 99 && m.pointer_size == 4 && m.role == 7);

    /* KEEPALIVE with an id; GOODBYE with a payload */
    n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_KEEPALIVE, 3);
    CHECK(n == 12 && req_bad(f, n));
    CHECK(nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_LOOKUP_NEXT, 3) == 0);
    n = nspv2_wire_encode_end(f, sizeof f, 4, 1);
    put16(f + 4, NSPV2_WIRE_GOODBYE);
    CHECK(req_bad(f, n));
    put16(f + 4, NSPV2_WIRE_LOOKUP_NEXT); /* END's size as a NEXT */
    CHECK(req_bad(f, n));

    /* image sizes: not matching the frame, smaller than a WSAQUERYSETW */
    n = nspv2_wire_encode_begin(f, sizeof f, 1, 0, img, sizeof img);
    memcpy(g, f, n);
    put32(g + 16, (uint32_t)sizeof img + 1);
    CHECK(req_bad(g, n));
    put32(g + 16, (uint32_t)sizeof img - 1);
    CHECK(req_bad(g, n));
    n = nspv2_wire_encode_begin(f, sizeof f, 1, 0, img, sizeof img - 1);
    CHECK(n > 0 && req_bad(f, n));
    n = nspv2_wire_encode_begin(f, sizeof f, 1, 0, NULL, 0);
    CHECK(n == 20 && req_bad(f, n));
    n = nspv2_wire_encode_set(f, sizeof f, 1, 0, 0, img, sizeof img);
    memcpy(g, f, n);
    put32(g + 20, (uint32_t)sizeof img + 8);
    CHECK(req_bad(g, n));
    memcpy(g, f, n);
    put32(g + 24, 1); /* reserved */
    CHECK(req_bad(g, n));
    n = nspv2_wire_encode_set(f, sizeof f, 1, 0, 0, img, sizeof img - 2);
    CHECK(n > 0 && req_bad(f, n));
}

TEST(test_wire_limits)
{
    /* the largest frame: SET_SERVICE with the largest image */
    uint8_t *big = malloc(NSPV2_WIRE_MAX_FRAME + 16);
    CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 0, NSPV2_WIRE_MAX_FRAME + 16);
    const uint8_t *img = big; /* the codec does not look into it */
    uint8_t *f = malloc(NSPV2_WIRE_MAX_FRAME + 16);
    CHECK(f != NULL);
    if (!f) {
        free(big);
        return;
    }
    size_t cap = NSPV2_WIRE_MAX_FRAME + 16;
    nspv2_wire_msg m;
    size_t n = nspv2_wire_encode_set(f, cap, 1, 0, 0, img, NSPV2_WIRE_MAX_IMAGE);
    CHECK(n == NSPV2_WIRE_MAX_FRAME);
    CHECK(req_ok(f, n, &m) && m.image_size == NSPV2_WIRE_MAX_IMAGE);
    CHECK(nspv2_wire_encode_set(f, cap, 1, 0, 0, img, NSPV2_WIRE_MAX_IMAGE + 1) == 0);
    n = nspv2_wire_encode_begin(f, cap, 1, 0, img, NSPV2_WIRE_MAX_IMAGE);
    CHECK(n == NSPV2_WIRE_MAX_FRAME - 8 && req_ok(f, n, &m));
    CHECK(nspv2_wire_encode_begin(f, cap, 1, 0, img, NSPV2_WIRE_MAX_IMAGE + 1) == 0);
    /* a BEGIN with one image byte more than the largest fits a frame, and
     * is still refused */
    put32(f, (uint32_t)n + 1);
    put32(f + 16, NSPV2_WIRE_MAX_IMAGE + 1);
    CHECK(req_bad(f, n + 1));
    /* a frame of max + 1 bytes: refused by its header */
    n = nspv2_wire_encode_set(f, cap, 1, 0, 0, img, NSPV2_WIRE_MAX_IMAGE);
    put32(f, NSPV2_WIRE_MAX_FRAME + 1);
    put32(f + 20, NSPV2_WIRE_MAX_IMAGE + 1);
    CHECK(req_bad(f, NSPV2_WIRE_MAX_FRAME + 1));
    /* a reply as large as a frame can be */
    n = nspv2_wire_encode_reply(f, cap, NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS, 1, 0,
                                NSPV2_WIRE_MAX_FRAME - 20, NULL, 0, img,
                                NSPV2_WIRE_MAX_FRAME - 20);
    CHECK(n == NSPV2_WIRE_MAX_FRAME);
    CHECK(nspv2_wire_encode_reply(f, cap, NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS, 1, 0, 0, NULL,
                                  0, img, NSPV2_WIRE_MAX_FRAME - 19) == 0);

    /* cap one byte short of each frame: 0, nothing written past cap */
    uint8_t small[64];
    uint8_t qsimg[sizeof(WSAQUERYSETW)] = {0};
    struct {
        size_t len;
        size_t got;
    } e[7];
    e[0].len = 28;
    e[0].got = nspv2_wire_encode_hello(small, 27, 1, 0);
    e[1].len = 20 + sizeof qsimg;
    e[1].got = nspv2_wire_encode_begin(small, 19 + sizeof qsimg, 1, 0, qsimg, sizeof qsimg);
    e[2].len = 28;
    e[2].got = nspv2_wire_encode_next(small, 27, 1, 1, 0, 0);
    e[3].len = 20;
    e[3].got = nspv2_wire_encode_end(small, 19, 1, 1);
    e[4].len = 12;
    e[4].got = nspv2_wire_encode_empty(small, 11, NSPV2_WIRE_GOODBYE, 1);
    e[5].len = 20;
    e[5].got = nspv2_wire_encode_reply(small, 19, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_END, 1,
                                       0, 0, NULL, 0, NULL, 0);
    e[6].len = 40;
    e[6].got = nspv2_wire_encode_hello_reply(small, 39, 1, 1, 1, 64, 1, NULL, NULL, 0);
    for (int i = 0; i < 7; i++)
        CHECK(e[i].got == 0);
    CHECK(nspv2_wire_encode_hello(NULL, 64, 1, 0) == 0);
    CHECK(nspv2_wire_encode_begin(small, sizeof small, 1, 0, NULL, 4) == 0);
    CHECK(nspv2_wire_encode_reply(small, sizeof small, NSPV2_WIRE_LOOKUP_END, 1, 0, 0, NULL, 0,
                                  NULL, 0) == 0); /* not a reply type */
    CHECK(nspv2_wire_encode_reply(small, sizeof small, NSPV2_WIRE_REPLY | 0x0007, 1, 0, 0, NULL,
                                  0, NULL, 0) == 0); /* KEEPALIVE has none */
    free(f);
    free(big);
}

TEST(test_wire_replies)
{
    uint8_t f[512], g[512];
    nspv2_wire_reply r;
    GUID ids[2] = {nspv2_ref_provider_id, some_class};
    uint32_t nss[2] = {NS_EMAIL, NS_ALL};
    size_t n = nspv2_wire_encode_hello_reply(f, sizeof f, 1, 4242, 5000, NSPV2_WIRE_MAX_FRAME,
                                             8, ids, nss, 2);
    CHECK(n == 12 + 28 + 48);
    CHECK(rep_ok(f, n, &r));
    CHECK(r.h.type == (NSPV2_WIRE_REPLY | NSPV2_WIRE_HELLO) && r.h.request_id == 1);
    CHECK(r.server_pid == 4242 && r.keepalive_ms == 5000 &&
          r.max_frame == NSPV2_WIRE_MAX_FRAME && r.max_in_flight == 8 && r.n_providers == 2);
    GUID id;
    uint32_t ns = 99;
    CHECK(nspv2_wire_reply_provider(&r, 0, &id, &ns) == 0 &&
          memcmp(&id, &nspv2_ref_provider_id, sizeof id) == 0 && ns == NS_EMAIL);
    CHECK(nspv2_wire_reply_provider(&r, 1, &id, &ns) == 0 &&
          memcmp(&id, &some_class, sizeof id) == 0 && ns == NS_ALL);
    CHECK(nspv2_wire_reply_provider(&r, 2, &id, &ns) == -1);
    CHECK(prefixes_refused(f, n, 1));
    memcpy(g, f, n);
    put32(g + 36, 3); /* count beyond the entries */
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    put32(g + 36, NSPV2_WIRE_MAX_PROVIDERS + 1);
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    put16(g + 16, NSPV2_WIRE_VERSION + 1);
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    put32(g + 32, 0); /* max in flight 0 */
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    put32(g + 12 + 28 + 20, 1); /* an entry's reserved field */
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    g[12] ^= 0x80; /* magic */
    CHECK(rep_bad(g, n));
    n = nspv2_wire_encode_hello_reply(f, sizeof f, 1, 1, 1, 64, 1, NULL, NULL, 0);
    CHECK(n == 40 && rep_ok(f, n, &r) && r.n_providers == 0 && r.providers == NULL);
    CHECK(nspv2_wire_encode_hello_reply(f, sizeof f, 1, 1, 1, 64, 1, NULL, NULL, 1) == 0);

    /* BEGIN_REPLY: the handle exactly when NO_ERROR */
    uint8_t extra[8];
    uint64_t handle = 77;
    memcpy(extra, &handle, 8);
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN, 2, 0,
                                0, extra, 8, NULL, 0);
    CHECK(n == 28 && rep_ok(f, n, &r) && r.code == 0 && r.handle == 77);
    CHECK(prefixes_refused(f, n, 1));
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN, 2,
                                WSAEINVAL, 0, extra, 8, NULL, 0);
    CHECK(n == 28 && rep_bad(f, n));
    memset(extra, 0, 8);
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN, 2,
                                WSASERVICE_NOT_FOUND, 0, extra, 8, NULL, 0);
    CHECK(rep_ok(f, n, &r) && r.code == WSASERVICE_NOT_FOUND && r.handle == 0);
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN, 2, 0,
                                0, extra, 8, NULL, 0);
    CHECK(rep_bad(f, n));

    /* NEXT_REPLY: an image with NO_ERROR, none with an error */
    uint8_t img[sizeof(WSAQUERYSETW) + 4];
    memset(img, 0xAB, sizeof img);
    uint32_t fx[2] = {(uint32_t)sizeof img, 0};
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT, 3, 0,
                                4096, (const uint8_t *)fx, 8, img, sizeof img);
    CHECK(rep_ok(f, n, &r) && r.code == 0 && r.word == 4096 && r.tail_size == sizeof img &&
          r.tail == f + 28 && memcmp(r.tail, img, sizeof img) == 0);
    CHECK(prefixes_refused(f, n, 1));
    memcpy(g, f, n);
    put32(g + 24, 1); /* reserved */
    CHECK(rep_bad(g, n));
    memcpy(g, f, n);
    put32(g + 12, WSAEFAULT); /* an error with an image */
    CHECK(rep_bad(g, n));
    fx[0] = 0;
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT, 3,
                                WSAEFAULT, 1234, (const uint8_t *)fx, 8, NULL, 0);
    CHECK(rep_ok(f, n, &r) && r.code == WSAEFAULT && r.word == 1234 && r.tail == NULL);
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT, 3, 0,
                                1234, (const uint8_t *)fx, 8, NULL, 0);
    CHECK(rep_bad(f, n)); /* NO_ERROR without an image */
    fx[0] = 8;
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT, 3, 0,
                                1234, (const uint8_t *)fx, 8, img, 8);
    CHECK(rep_bad(f, n)); /* an image smaller than a WSAQUERYSETW */

    /* END, SET, GOODBYE replies: 8 bytes, word 0 */
    const uint16_t plain[] = {NSPV2_WIRE_LOOKUP_END, NSPV2_WIRE_SET_SERVICE, NSPV2_WIRE_GOODBYE};
    for (int i = 0; i < 3; i++) {
        n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | plain[i], 4, WSAEINVAL, 0,
                                    NULL, 0, NULL, 0);
        CHECK(n == 20 && rep_ok(f, n, &r) && r.code == WSAEINVAL);
        CHECK(prefixes_refused(f, n, 1));
        n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | plain[i], 4, 0, 1, NULL, 0,
                                    NULL, 0);
        CHECK(rep_bad(f, n));
    }

    /* STATUS_REPLY and ERROR: text of the announced size */
    const char *json = "{\"version\": 1}";
    uint32_t jn = (uint32_t)strlen(json);
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS, 5, 0, jn,
                                NULL, 0, (const uint8_t *)json, jn);
    CHECK(rep_ok(f, n, &r) && r.tail_size == jn && memcmp(r.tail, json, jn) == 0);
    CHECK(prefixes_refused(f, n, 1));
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS, 5, 0, jn + 1,
                                NULL, 0, (const uint8_t *)json, jn);
    CHECK(rep_bad(f, n));
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_ERROR, 0, WSAEACCES, 5, NULL, 0,
                                (const uint8_t *)"nope!", 5);
    CHECK(rep_ok(f, n, &r) && r.h.request_id == 0 && r.code == WSAEACCES && r.tail_size == 5);
    static uint8_t text[NSPV2_WIRE_MAX_TEXT + 1];
    uint8_t *fe = malloc(NSPV2_WIRE_MAX_TEXT + 64);
    if (fe) {
        n = nspv2_wire_encode_reply(fe, NSPV2_WIRE_MAX_TEXT + 64, NSPV2_WIRE_ERROR, 0, 1,
                                    NSPV2_WIRE_MAX_TEXT, NULL, 0, text, NSPV2_WIRE_MAX_TEXT);
        CHECK(rep_ok(fe, n, &r));
        n = nspv2_wire_encode_reply(fe, NSPV2_WIRE_MAX_TEXT + 64, NSPV2_WIRE_ERROR, 0, 1,
                                    NSPV2_WIRE_MAX_TEXT + 1, NULL, 0, text,
                                    NSPV2_WIRE_MAX_TEXT + 1);
        CHECK(n > 0 && rep_bad(fe, n));
        free(fe);
    }

    /* ids and directions */
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_GOODBYE, 0, 0, 0,
                                NULL, 0, NULL, 0);
    CHECK(rep_bad(f, n)); /* request id 0 on a reply */
    n = nspv2_wire_encode_end(f, sizeof f, 4, 1);
    CHECK(rep_bad(f, n)); /* a client's frame */
    n = nspv2_wire_encode_reply(f, sizeof f, NSPV2_WIRE_REPLY | NSPV2_WIRE_GOODBYE, 4, 0, 0,
                                NULL, 0, NULL, 0);
    CHECK(req_bad(f, n)); /* a server's frame */
}

/* ------------------------------------------------------------------------ */
/* query-set images                                                          */

TEST(test_wire_image_round_trip)
{
    full_qs fq;
    full_init(&fq);
    full_qs before = fq;

    size_t need = 0, size = 0;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &need) == WSAEFAULT && need > 0);
    uint8_t *img = malloc(need + 64);
    CHECK(img != NULL);
    if (!img)
        return;
    memset(img, 0xEE, need + 64);
    CHECK(nspv2_wire_image_from_query_set(&fq.q, img, need - 1, &size) == WSAEFAULT &&
          size == need);
    CHECK(img[0] == 0xEE); /* nothing written */
    CHECK(nspv2_wire_image_from_query_set(&fq.q, img, need, &size) == NO_ERROR && size == need);
    CHECK(img[need] == 0xEE); /* not a byte past it */
    CHECK(memcmp(&fq, &before, sizeof fq) == 0); /* the client's memory as it was */
    size_t used = 0;
    const char *why = NULL;
    CHECK(nspv2_wire_image_check(img, size, &used, &why) == 0 && used == size);

    /* offsets, never pointers */
    CHECK(off_at(img, offsetof(WSAQUERYSETW, lpszServiceInstanceName)) >= sizeof(WSAQUERYSETW));
    CHECK(off_at(img, offsetof(WSAQUERYSETW, lpBlob)) < size);

    /* the image copied elsewhere (8-aligned) turns into the same query set */
    uint8_t *copy = malloc(size);
    CHECK(copy != NULL);
    if (!copy) {
        free(img);
        return;
    }
    memcpy(copy, img, size);
    CHECK(nspv2_wire_image_to_pointers(copy, size, &why) == 0);
    const WSAQUERYSETW *q = (const WSAQUERYSETW *)(const void *)copy;
    CHECK(q->dwSize == sizeof(WSAQUERYSETW) && q->dwNameSpace == NS_EMAIL &&
          q->dwOutputFlags == 0x55);
    CHECK(wstr_is(q->lpszServiceInstanceName, "alice@example.com"));
    CHECK(in_buffer(q->lpszServiceInstanceName, 36, copy, size));
    CHECK(wstr_is(q->lpszComment, "MISTATUS_ONLINE"));
    CHECK(wstr_is((const WCHAR *)(const void *)q->lpszContext, "ctx"));
    CHECK(wstr_is(q->lpszQueryString, "") && q->lpszQueryString != NULL);
    CHECK(q->lpServiceClassId && memcmp(q->lpServiceClassId, &some_class, sizeof(GUID)) == 0);
    CHECK(q->lpNSProviderId &&
          memcmp(q->lpNSProviderId, &nspv2_bench_provider_id, sizeof(GUID)) == 0);
    CHECK(q->lpVersion && q->lpVersion->dwVersion == 7 && q->lpVersion->ecHow == COMP_NOTLESS);
    CHECK(q->dwNumberOfProtocols == 2 && q->lpafpProtocols &&
          memcmp(q->lpafpProtocols, fq.protocols, sizeof fq.protocols) == 0);
    CHECK(q->dwNumberOfCsAddrs == 3 && in_buffer(q->lpcsaBuffer, 3 * sizeof(CSADDR_INFO), copy,
                                                 size));
    if (q->lpcsaBuffer) {
        const CSADDR_INFO *c = q->lpcsaBuffer;
        CHECK(c[0].LocalAddr.iSockaddrLength == sizeof(SOCKADDR_IN) &&
              in_buffer(c[0].LocalAddr.lpSockaddr, sizeof(SOCKADDR_IN), copy, size) &&
              memcmp(c[0].LocalAddr.lpSockaddr, &fq.sin[0], sizeof(SOCKADDR_IN)) == 0);
        CHECK(c[0].RemoteAddr.iSockaddrLength == sizeof(SOCKADDR_IN6) &&
              memcmp(c[0].RemoteAddr.lpSockaddr, &fq.sin6, sizeof(SOCKADDR_IN6)) == 0);
        CHECK(c[0].iSocketType == 1 && c[0].iProtocol == 6);
        CHECK(c[1].LocalAddr.lpSockaddr != NULL && c[1].LocalAddr.iSockaddrLength == -5 &&
              in_buffer(c[1].LocalAddr.lpSockaddr, 0, copy, size));
        CHECK(c[1].RemoteAddr.lpSockaddr == NULL && c[1].iSocketType == 2 &&
              c[1].iProtocol == 17);
        CHECK(c[2].RemoteAddr.lpSockaddr == NULL && c[2].RemoteAddr.iSockaddrLength == 16 &&
              c[2].iSocketType == 3);
    }
    CHECK(q->lpBlob && q->lpBlob->cbSize == 5 &&
          in_buffer(q->lpBlob->pBlobData, 5, copy, size) &&
          memcmp(q->lpBlob->pBlobData, "\x01\x02\x03\x04\x05", 5) == 0);

    /* flattened again: the same image */
    size_t size2 = 0;
    uint8_t *img2 = make_image(q, &size2);
    CHECK(img2 && size2 == size && memcmp(img2, img, size) == 0);
    free(img2);

    /* through the host: a query set it accepts as it would the original
     * (the bench provider's lookup; the result names what was asked) */
    fresh();
    advertise_bench();
    uint64_t s = open_session();
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, (LPWSAQUERYSETW)(void *)copy, LUP_RETURN_ALL, &h));
    result_buf buf;
    CHECK_OK(next_result(h, 0, &buf));
    check_bench(&buf.qs, "alice@example.com", sizeof buf.bytes);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));

    /* dwSize: larger is normalized, smaller refused; NULL */
    fq.q.dwSize = sizeof(WSAQUERYSETW) + 16;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, img, need, &size) == NO_ERROR);
    CHECK(size == need && memcmp(img, img2 ? img : img, size) == 0 &&
          *(const DWORD *)(const void *)img == sizeof(WSAQUERYSETW));
    fq.q.dwSize = sizeof(WSAQUERYSETW) - 1;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, img, need, &size) == WSAEINVAL);
    CHECK(nspv2_wire_image_from_query_set(NULL, img, need, &size) == WSAEFAULT);
    CHECK(nspv2_wire_image_from_query_set(&fq.q, img, need, NULL) == WSAEFAULT);

    /* the smallest image: a WSAQUERYSETW of NULLs */
    WSAQUERYSETW empty;
    memset(&empty, 0, sizeof empty);
    empty.dwSize = sizeof empty;
    empty.dwNumberOfProtocols = 0xFFFFFFFFu; /* NULL arrays keep any count */
    empty.dwNumberOfCsAddrs = 0x7FFFFFFFu;
    CHECK(nspv2_wire_image_from_query_set(&empty, img, need, &size) == NO_ERROR &&
          size == sizeof(WSAQUERYSETW));
    CHECK(nspv2_wire_image_check(img, size, &used, &why) == 0 && used == sizeof(WSAQUERYSETW));
    CHECK(nspv2_wire_image_to_pointers(img, size, &why) == 0);
    q = (const WSAQUERYSETW *)(const void *)img;
    CHECK(q->lpafpProtocols == NULL && q->dwNumberOfProtocols == 0xFFFFFFFFu &&
          q->dwNumberOfCsAddrs == 0x7FFFFFFFu && q->lpBlob == NULL);
    free(copy);
    free(img);
}

TEST(test_wire_image_from_limits)
{
    /* each limit: WSAEINVAL before reading what it describes (ASan would
     * see a read past these small objects) */
    full_qs fq;
    size_t size = 0;
    uint8_t *img;
    full_init(&fq);
    fq.q.dwNumberOfProtocols = NSPV2_QS_MAX_COUNT + 1;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    full_init(&fq);
    fq.q.dwNumberOfCsAddrs = NSPV2_QS_MAX_COUNT + 1;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    full_init(&fq);
    fq.cs[0].RemoteAddr.iSockaddrLength = NSPV2_QS_MAX_SOCKADDR_LEN + 1;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    full_init(&fq);
    fq.cs[2].LocalAddr.iSockaddrLength = NSPV2_QS_MAX_SOCKADDR_LEN + 1; /* NULL address too */
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    full_init(&fq);
    fq.blob.cbSize = NSPV2_QS_MAX_BLOB_BYTES + 1;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    /* within the host's limits but beyond the largest image */
    full_init(&fq);
    fq.blob.cbSize = NSPV2_WIRE_MAX_IMAGE;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    /* a NULL pBlobData keeps any cbSize */
    full_init(&fq);
    fq.blob.pBlobData = NULL;
    fq.blob.cbSize = 0xFFFFFFFFu;
    img = make_image(&fq.q, &size);
    CHECK(img != NULL);
    if (img) {
        CHECK(nspv2_wire_image_to_pointers(img, size, NULL) == 0);
        const WSAQUERYSETW *q = (const WSAQUERYSETW *)(const void *)img;
        CHECK(q->lpBlob && q->lpBlob->cbSize == 0xFFFFFFFFu && q->lpBlob->pBlobData == NULL);
        free(img);
    }
    /* strings: the longest allowed, one more */
    size_t longest = NSPV2_QS_MAX_STRING_CHARS;
    WCHAR *w = malloc((longest + 2) * sizeof(WCHAR));
    CHECK(w != NULL);
    if (!w)
        return;
    for (size_t i = 0; i < longest; i++)
        w[i] = (WCHAR)('a' + i % 26);
    w[longest] = 0;
    full_init(&fq);
    fq.q.lpszComment = w;
    img = make_image(&fq.q, &size);
    CHECK(img != NULL);
    if (img) {
        CHECK(nspv2_wire_image_to_pointers(img, size, NULL) == 0);
        const WSAQUERYSETW *q = (const WSAQUERYSETW *)(const void *)img;
        CHECK(q->lpszComment && q->lpszComment[longest - 1] == w[longest - 1] &&
              q->lpszComment[longest] == 0);
        free(img);
    }
    w[longest] = 'z';
    w[longest + 1] = 0;
    CHECK(nspv2_wire_image_from_query_set(&fq.q, NULL, 0, &size) == WSAEINVAL);
    free(w);
}

TEST(test_wire_image_rules)
{
    full_qs fq;
    full_init(&fq);
    size_t size = 0;
    uint8_t *img = make_image(&fq.q, &size);
    CHECK(img != NULL);
    if (!img)
        return;
    uint8_t *m = malloc(size + 70000);
    CHECK(m != NULL);
    if (!m) {
        free(img);
        return;
    }
    const size_t hdr = sizeof(WSAQUERYSETW);
#define RESET() memcpy(m, img, size)
    RESET();
    CHECK(nspv2_wire_image_check(m, size, NULL, NULL) == 0);

    /* every cut short of the image's end */
    int cuts_refused = 1;
    for (size_t k = 0; k < size; k++)
        cuts_refused &= image_refused(img, k);
    CHECK(cuts_refused);
    CHECK(nspv2_wire_image_check(NULL, 0, NULL, NULL) == -1);
    CHECK(nspv2_wire_image_to_pointers(NULL, 0, NULL) == -1);

    /* dwSize */
    RESET();
    set_dw(m, 0, hdr + 8);
    CHECK(image_refused(m, size));

    /* every pointer field: into the header, past the end, misaligned */
    static const size_t fields[] = {
        offsetof(WSAQUERYSETW, lpszServiceInstanceName), offsetof(WSAQUERYSETW, lpServiceClassId),
        offsetof(WSAQUERYSETW, lpVersion),               offsetof(WSAQUERYSETW, lpszComment),
        offsetof(WSAQUERYSETW, lpNSProviderId),          offsetof(WSAQUERYSETW, lpszContext),
        offsetof(WSAQUERYSETW, lpafpProtocols),          offsetof(WSAQUERYSETW, lpszQueryString),
        offsetof(WSAQUERYSETW, lpcsaBuffer),             offsetof(WSAQUERYSETW, lpBlob)};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uintptr_t o = off_at(img, fields[i]);
        CHECK(o != 0);
        RESET();
        set_off(m, fields[i], 8);
        CHECK(image_refused(m, size));
        RESET();
        set_off(m, fields[i], hdr - 2);
        CHECK(image_refused(m, size));
        RESET();
        set_off(m, fields[i], size + 8);
        CHECK(image_refused(m, size));
        RESET();
        set_off(m, fields[i], (uintptr_t)-8);
        CHECK(image_refused(m, size));
        RESET();
        set_off(m, fields[i], o + 1); /* odd: misaligned for every type */
        CHECK(image_refused(m, size));
        RESET();
        set_off(m, fields[i], 0); /* NULL is always fine */
        CHECK(nspv2_wire_image_check(m, size, NULL, NULL) == 0);
    }
    /* misaligned by less than the type's alignment */
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpNSProviderId),
            off_at(img, offsetof(WSAQUERYSETW, lpNSProviderId)) + 2);
    CHECK(image_refused(m, size));
    if (_Alignof(CSADDR_INFO) > 4) {
        RESET();
        set_off(m, offsetof(WSAQUERYSETW, lpcsaBuffer),
                off_at(img, offsetof(WSAQUERYSETW, lpcsaBuffer)) + 4);
        CHECK(image_refused(m, size));
    }

    uintptr_t o_csa = off_at(img, offsetof(WSAQUERYSETW, lpcsaBuffer));
    uintptr_t o_blob = off_at(img, offsetof(WSAQUERYSETW, lpBlob));
    uintptr_t o_name = off_at(img, offsetof(WSAQUERYSETW, lpszServiceInstanceName));
    /* counts */
    RESET();
    set_dw(m, offsetof(WSAQUERYSETW, dwNumberOfCsAddrs), 4); /* past the array's room */
    CHECK(nspv2_wire_image_check(m, size, NULL, NULL) == -1);
    RESET();
    set_dw(m, offsetof(WSAQUERYSETW, dwNumberOfCsAddrs), NSPV2_QS_MAX_COUNT + 1);
    CHECK(image_refused(m, size));
    RESET();
    set_dw(m, offsetof(WSAQUERYSETW, dwNumberOfProtocols), NSPV2_QS_MAX_COUNT + 1);
    CHECK(image_refused(m, size));
    RESET();
    set_dw(m, offsetof(WSAQUERYSETW, dwNumberOfProtocols), 0xFFFFFFFFu);
    CHECK(image_refused(m, size));
    /* socket addresses */
    RESET();
    set_dw(m, o_csa + offsetof(CSADDR_INFO, RemoteAddr.iSockaddrLength),
           NSPV2_QS_MAX_SOCKADDR_LEN + 1);
    CHECK(image_refused(m, size));
    RESET();
    set_dw(m, o_csa + sizeof(CSADDR_INFO) * 2 + offsetof(CSADDR_INFO, RemoteAddr.iSockaddrLength),
           NSPV2_QS_MAX_SOCKADDR_LEN + 1); /* even with a NULL address */
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_csa + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), size - 8); /* 16 bytes */
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_csa + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), 8);
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_csa + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), o_csa + 8); /* in the array */
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_csa + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr), o_blob); /* on the BLOB */
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_csa + sizeof(CSADDR_INFO) + offsetof(CSADDR_INFO, LocalAddr.lpSockaddr),
            o_csa + 8); /* length <= 0: zero bytes overlap nothing */
    CHECK(nspv2_wire_image_check(m, size, NULL, NULL) == 0);
    /* the BLOB and its data */
    RESET();
    set_dw(m, o_blob + offsetof(BLOB, cbSize), NSPV2_QS_MAX_BLOB_BYTES + 1);
    CHECK(image_refused(m, size));
    RESET();
    set_dw(m, o_blob + offsetof(BLOB, cbSize), (DWORD)size);
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpBlob), o_csa); /* on the CSADDR_INFO array */
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_blob + offsetof(BLOB, pBlobData), o_csa + 3);
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, o_blob + offsetof(BLOB, pBlobData), o_blob + 2);
    CHECK(image_refused(m, size));
    /* a string on the array, a string on the BLOB; strings may share */
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpszComment), o_csa);
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpszComment), o_blob + 8);
    CHECK(image_refused(m, size));
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpszComment), o_name + 2);
    CHECK(nspv2_wire_image_check(m, size, NULL, NULL) == 0);
    /* a GUID over the BLOB */
    RESET();
    set_off(m, offsetof(WSAQUERYSETW, lpNSProviderId), o_blob);
    CHECK(image_refused(m, size));

    /* a string without its NUL inside the image; one longer than the limit */
    size_t at = (size + 7) & ~(size_t)7; /* the image ends with odd blob data */
    RESET();
    for (size_t k = size; k < at + 4; k++)
        m[k] = 'A';
    set_off(m, offsetof(WSAQUERYSETW, lpszComment), at);
    CHECK(image_refused(m, at + 4));
    m[at + 4] = m[at + 5] = 0;
    CHECK(nspv2_wire_image_check(m, at + 6, NULL, NULL) == 0);
    size_t big = at + (NSPV2_QS_MAX_STRING_CHARS + 2) * 2;
    if (big <= size + 70000) {
        RESET();
        for (size_t k = size; k < big; k++)
            m[k] = 'B';
        set_off(m, offsetof(WSAQUERYSETW, lpszComment), at);
        CHECK(image_refused(m, big)); /* 32768 units, no NUL */
        m[at + NSPV2_QS_MAX_STRING_CHARS * 2] = 0;
        m[at + NSPV2_QS_MAX_STRING_CHARS * 2 + 1] = 0; /* NUL after 32767 units */
        size_t used = 0;
        CHECK(nspv2_wire_image_check(m, big, &used, NULL) == 0 &&
              used == at + (NSPV2_QS_MAX_STRING_CHARS + 1) * 2);
        /* the NUL one unit later (32768 units before it): refused */
        m[at + NSPV2_QS_MAX_STRING_CHARS * 2] = m[at + NSPV2_QS_MAX_STRING_CHARS * 2 + 1] = 'B';
        m[at + NSPV2_QS_MAX_STRING_CHARS * 2 + 2] = m[at + NSPV2_QS_MAX_STRING_CHARS * 2 + 3] = 0;
        CHECK(image_refused(m, big));
    }

    /* to_pointers wants the image 8-aligned in memory */
    RESET();
    memmove(m + 4, m, size);
    const char *why = NULL;
    CHECK(nspv2_wire_image_check(m + 4, size, NULL, &why) == 0);
    CHECK(nspv2_wire_image_to_pointers(m + 4, size, &why) == -1 && why);
#undef RESET
    free(m);
    free(img);
}

/* A host result in its buffer -> offsets -> cut to used -> moved -> pointers. */
static uint8_t *result_round_trip(result_buf *buf, size_t len, size_t *used)
{
    const char *why = NULL;
    *used = 0;
    if (nspv2_wire_image_to_offsets(buf->bytes, len, &why) != 0) {
        printf("     to_offsets: %s\n", why);
        return NULL;
    }
    if (nspv2_wire_image_check(buf->bytes, len, used, &why) != 0 || *used > len)
        return NULL;
    uint8_t *copy = malloc(*used);
    if (!copy)
        return NULL;
    memcpy(copy, buf->bytes, *used);
    if (nspv2_wire_image_to_pointers(copy, *used, &why) != 0) {
        printf("     to_pointers: %s\n", why);
        free(copy);
        return NULL;
    }
    return copy;
}

TEST(test_wire_results_to_offsets_and_back)
{
    fresh();
    advertise_ref();
    advertise_bench();
    uint64_t s = open_session();

    /* the bench provider's full result (every pointer kind) */
    HANDLE h = begin_lookup(s, NS_EMAIL, "Anyone@Example.COM", LUP_RETURN_ALL);
    result_buf buf;
    CHECK_OK(next_result(h, 0, &buf));
    size_t used = 0;
    uint8_t *r = result_round_trip(&buf, sizeof buf.bytes - 64, &used);
    CHECK(r != NULL && used < sizeof buf.bytes - 64);
    if (r)
        check_bench((const WSAQUERYSETW *)(const void *)r, "Anyone@Example.COM", used);
    free(r);
    CHECK_OK(nspv2_lookup_end(h));

    /* a result at exactly the size it needs */
    h = begin_lookup(s, NS_EMAIL, "alice@example.com", LUP_RETURN_ALL);
    DWORD need = next_at_every_size(h, &buf);
    lookup_finish_sized(h, &buf, need);
    r = result_round_trip(&buf, need, &used);
    CHECK(r != NULL && used <= need);
    if (r)
        check_bench((const WSAQUERYSETW *)(const void *)r, "alice@example.com", used);
    free(r);

    /* the reference provider: registered from an image, looked up from one */
    reg g;
    reg_init(&g, "dave@example.com");
    reg_v4(&g, 7, 5061);
    reg_v6(&g, 8, 5062);
    reg_status(&g, MISTATUS_BUSY);
    g.q.dwNumberOfCsAddrs = g.ncs;
    g.q.lpcsaBuffer = g.cs;
    for (DWORD i = 0; i < g.ncs; i++)
        g.cs[i].RemoteAddr.lpSockaddr = (LPSOCKADDR)(void *)&g.sa[i];
    g.blob.pBlobData = g.data;
    g.q.lpBlob = &g.blob;
    size_t isize = 0;
    uint8_t *img = make_image(&g.q, &isize);
    CHECK(img && nspv2_wire_image_to_pointers(img, isize, NULL) == 0);
    if (img)
        CHECK_OK(nspv2_set_service(s, (LPWSAQUERYSETW)(void *)img, RNRSERVICE_REGISTER, 0));
    free(img);
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, "dave@example.com");
    img = make_image(&q, &isize);
    CHECK(img && nspv2_wire_image_to_pointers(img, isize, NULL) == 0);
    h = NULL;
    if (img)
        CHECK_OK(nspv2_lookup_begin(s, (LPWSAQUERYSETW)(void *)img, LUP_RETURN_ALL, &h));
    free(img);
    CHECK_OK(next_result(h, 0, &buf));
    r = result_round_trip(&buf, sizeof buf.bytes - 64, &used);
    CHECK(r != NULL);
    if (r) {
        const WSAQUERYSETW *res = (const WSAQUERYSETW *)(const void *)r;
        check_entry(res, used, "dave@example.com", MISTATUS_BUSY, "MISTATUS_BUSY",
                    RESULT_IS_ADDED, 1);
        CHECK(res->dwNumberOfCsAddrs == 2);
        if (res->dwNumberOfCsAddrs == 2) {
            CHECK(is_v4(&res->lpcsaBuffer[0], 7, 5061));
            CHECK(is_v6(&res->lpcsaBuffer[1], 8, 5062));
        }
    }
    free(r);
    CHECK_ERR(next_result(h, 0, &buf), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));

    /* pointers outside the buffer are refused */
    memset(&buf, 0, sizeof buf);
    buf.qs.dwSize = sizeof(WSAQUERYSETW);
    static WCHAR outside[] = {'x', 0};
    buf.qs.lpszComment = outside;
    const char *why = NULL;
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 512, &why) == -1 && why);
    memset(&buf, 0, sizeof buf);
    buf.qs.dwSize = sizeof(WSAQUERYSETW);
    buf.qs.dwNumberOfCsAddrs = 100; /* running past the buffer */
    buf.qs.lpcsaBuffer = (LPCSADDR_INFO)(void *)(buf.bytes + 256);
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 512, &why) == -1);
    memset(&buf, 0, sizeof buf);
    buf.qs.dwSize = sizeof(WSAQUERYSETW);
    buf.qs.lpBlob = (LPBLOB)(void *)(buf.bytes + 504); /* its 16 bytes run past 512 */
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 512, &why) == -1);
    memset(&buf, 0, sizeof buf);
    buf.qs.dwSize = sizeof(WSAQUERYSETW);
    buf.qs.lpszComment = (LPWSTR)(void *)(buf.bytes + 200); /* inside, but no NUL */
    memset(buf.bytes + 200, 'A', 312);
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 512, &why) == -1);
    memset(&buf, 0, sizeof buf);
    buf.qs.dwSize = sizeof(WSAQUERYSETW);
    buf.qs.lpszComment = (LPWSTR)(void *)(buf.bytes + 200);
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 512, &why) == 0);
    CHECK(nspv2_wire_image_check(buf.bytes, 512, &used, &why) == 0 && used == 202);
    CHECK(nspv2_wire_image_to_offsets(buf.bytes, 16, &why) == -1);
}

void run_wire_tests(void)
{
    RUN(test_wire_requests_round_trip);
    RUN(test_wire_requests_malformed);
    RUN(test_wire_limits);
    RUN(test_wire_replies);
    RUN(test_wire_image_round_trip);
    RUN(test_wire_image_from_limits);
    RUN(test_wire_image_rules);
    RUN(test_wire_results_to_offsets_and_back);
}
