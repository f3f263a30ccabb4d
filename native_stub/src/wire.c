/*
 * wire.c - the codec of the protocol between provider processes and client
 * processes (the contract, with the frame layout and the rules, is wire.h).
 * Compiled into the host library (the server) and the client library; it
 * uses nothing of the host but the NSPV2_QS_* limits. Every read of a frame
 * or an image goes through memcpy (nothing in them is assumed aligned but
 * what wire.h says) and is bounded by the length the caller gave.
 */
/* the NSPV2_QS_* limits; first, for its Windows header order */
#include "nspv2_host.h"

#include "wire.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* little helpers                                                            */

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint8_t *wr16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof v);
    return p + sizeof v;
}

static uint8_t *wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
    return p + sizeof v;
}

static uint8_t *wr64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
    return p + sizeof v;
}

static uint8_t *wrbytes(uint8_t *p, const uint8_t *src, size_t n)
{
    if (n)
        memcpy(p, src, n);
    return p + n;
}

/* The header of a frame of `payload` bytes; NULL when it does not fit in
 * cap or exceeds NSPV2_WIRE_MAX_FRAME (sizes in size_t: no wrap). */
static uint8_t *start_frame(uint8_t *out, size_t cap, uint16_t type, uint32_t request_id,
                            size_t payload)
{
    if (!out || payload > NSPV2_WIRE_MAX_FRAME - NSPV2_WIRE_HEADER)
        return NULL;
    size_t len = NSPV2_WIRE_HEADER + payload;
    if (cap < len)
        return NULL;
    uint8_t *p = wr32(out, (uint32_t)len);
    p = wr16(p, type);
    p = wr16(p, 0);
    return wr32(p, request_id);
}

static int fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* headers                                                                   */

static int known_type(uint16_t t)
{
    switch (t) {
    case NSPV2_WIRE_HELLO:
    case NSPV2_WIRE_LOOKUP_BEGIN:
    case NSPV2_WIRE_LOOKUP_NEXT:
    case NSPV2_WIRE_LOOKUP_END:
    case NSPV2_WIRE_SET_SERVICE:
    case NSPV2_WIRE_GOODBYE:
    case NSPV2_WIRE_KEEPALIVE:
    case NSPV2_WIRE_STATUS:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_HELLO:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_END:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_SET_SERVICE:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_GOODBYE:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS:
    case NSPV2_WIRE_ERROR:
        return 1;
    default:
        return 0;
    }
}

int nspv2_wire_parse_header(const uint8_t *p, size_t n, uint32_t max_frame,
                            nspv2_wire_header *h, const char **why)
{
    if (!p || n < NSPV2_WIRE_HEADER)
        return fail(why, "frame shorter than its header");
    nspv2_wire_header v;
    v.length = rd32(p);
    v.type = rd16(p + 4);
    v.flags = rd16(p + 6);
    v.request_id = rd32(p + 8);
    if (h)
        *h = v;
    if (v.length < NSPV2_WIRE_HEADER)
        return fail(why, "frame length shorter than a header");
    if (v.length > max_frame || v.length > NSPV2_WIRE_MAX_FRAME)
        return fail(why, "frame length beyond the largest frame");
    if (v.flags != 0)
        return fail(why, "frame flags not 0");
    if (!known_type(v.type))
        return fail(why, "unknown frame type");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* client -> server                                                          */

int nspv2_wire_decode_request(const uint8_t *frame, size_t len, nspv2_wire_msg *out,
                              const char **why)
{
    nspv2_wire_msg m;
    memset(&m, 0, sizeof m);
    if (out)
        *out = m;
    if (nspv2_wire_parse_header(frame, len, NSPV2_WIRE_MAX_FRAME, &m.h, why) != 0)
        return -1;
    if (m.h.length != len)
        return fail(why, "frame length does not match the bytes received");
    if (m.h.type & NSPV2_WIRE_REPLY)
        return fail(why, "a server's frame type sent by a client");
    const uint8_t *p = frame + NSPV2_WIRE_HEADER;
    size_t payload = len - NSPV2_WIRE_HEADER;
    if (m.h.type == NSPV2_WIRE_KEEPALIVE) {
        if (m.h.request_id != 0)
            return fail(why, "KEEPALIVE with a request id");
    } else if (m.h.request_id == 0) {
        return fail(why, "request id 0 on a request");
    }
    switch (m.h.type) {
    case NSPV2_WIRE_HELLO:
        if (payload != 16)
            return fail(why, "HELLO of the wrong size");
        m.magic = rd32(p);
        m.version = rd16(p + 4);
        m.pointer_size = rd16(p + 6);
        m.role = rd32(p + 8);
        if (m.magic != NSPV2_WIRE_MAGIC)
            return fail(why, "HELLO without the protocol's magic");
        if (rd32(p + 12) != 0)
            return fail(why, "HELLO's reserved field not 0");
        break;
    case NSPV2_WIRE_LOOKUP_BEGIN:
        if (payload < 8)
            return fail(why, "LOOKUP_BEGIN shorter than its fixed fields");
        m.control_flags = rd32(p);
        m.image_size = rd32(p + 4);
        if (m.image_size != payload - 8)
            return fail(why, "LOOKUP_BEGIN's image size does not match the frame");
        m.image = p + 8;
        break;
    case NSPV2_WIRE_LOOKUP_NEXT:
        if (payload != 16)
            return fail(why, "LOOKUP_NEXT of the wrong size");
        m.handle = rd64(p);
        m.control_flags = rd32(p + 8);
        m.buffer_length = rd32(p + 12);
        break;
    case NSPV2_WIRE_LOOKUP_END:
        if (payload != 8)
            return fail(why, "LOOKUP_END of the wrong size");
        m.handle = rd64(p);
        break;
    case NSPV2_WIRE_SET_SERVICE:
        if (payload < 16)
            return fail(why, "SET_SERVICE shorter than its fixed fields");
        m.operation = rd32(p);
        m.control_flags = rd32(p + 4);
        m.image_size = rd32(p + 8);
        if (rd32(p + 12) != 0)
            return fail(why, "SET_SERVICE's reserved field not 0");
        if (m.image_size != payload - 16)
            return fail(why, "SET_SERVICE's image size does not match the frame");
        m.image = p + 16;
        break;
    case NSPV2_WIRE_GOODBYE:
    case NSPV2_WIRE_KEEPALIVE:
    case NSPV2_WIRE_STATUS:
        if (payload != 0)
            return fail(why, "a frame that carries nothing has a payload");
        break;
    default:
        return fail(why, "unknown frame type");
    }
    if (m.image) {
        if (m.image_size < sizeof(WSAQUERYSETW))
            return fail(why, "query-set image smaller than a WSAQUERYSETW");
        if (m.image_size > NSPV2_WIRE_MAX_IMAGE)
            return fail(why, "query-set image beyond the largest image");
    }
    if (out)
        *out = m;
    return 0;
}

size_t nspv2_wire_encode_hello(uint8_t *out, size_t cap, uint32_t request_id, uint32_t role)
{
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_HELLO, request_id, 16);
    if (!p)
        return 0;
    p = wr32(p, NSPV2_WIRE_MAGIC);
    p = wr16(p, (uint16_t)NSPV2_WIRE_VERSION);
    p = wr16(p, (uint16_t)sizeof(void *));
    p = wr32(p, role);
    p = wr32(p, 0);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_begin(uint8_t *out, size_t cap, uint32_t request_id, uint32_t flags,
                               const uint8_t *image, uint32_t image_size)
{
    if (image_size > NSPV2_WIRE_MAX_IMAGE || (image_size && !image))
        return 0;
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_LOOKUP_BEGIN, request_id, 8u + image_size);
    if (!p)
        return 0;
    p = wr32(p, flags);
    p = wr32(p, image_size);
    p = wrbytes(p, image, image_size);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_next(uint8_t *out, size_t cap, uint32_t request_id, uint64_t handle,
                              uint32_t flags, uint32_t buffer_length)
{
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_LOOKUP_NEXT, request_id, 16);
    if (!p)
        return 0;
    p = wr64(p, handle);
    p = wr32(p, flags);
    p = wr32(p, buffer_length);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_end(uint8_t *out, size_t cap, uint32_t request_id, uint64_t handle)
{
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_LOOKUP_END, request_id, 8);
    if (!p)
        return 0;
    p = wr64(p, handle);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_set(uint8_t *out, size_t cap, uint32_t request_id, uint32_t operation,
                             uint32_t flags, const uint8_t *image, uint32_t image_size)
{
    if (image_size > NSPV2_WIRE_MAX_IMAGE || (image_size && !image))
        return 0;
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_SET_SERVICE, request_id, 16u + image_size);
    if (!p)
        return 0;
    p = wr32(p, operation);
    p = wr32(p, flags);
    p = wr32(p, image_size);
    p = wr32(p, 0);
    p = wrbytes(p, image, image_size);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_empty(uint8_t *out, size_t cap, uint16_t type, uint32_t request_id)
{
    if (type != NSPV2_WIRE_GOODBYE && type != NSPV2_WIRE_KEEPALIVE && type != NSPV2_WIRE_STATUS)
        return 0;
    uint8_t *p = start_frame(out, cap, type, request_id, 0);
    return p ? (size_t)(p - out) : 0;
}

/* ------------------------------------------------------------------------ */
/* server -> client                                                          */

size_t nspv2_wire_encode_reply(uint8_t *out, size_t cap, uint16_t type, uint32_t request_id,
                               int32_t code, uint32_t word, const uint8_t *extra,
                               uint32_t extra_size, const uint8_t *tail, uint32_t tail_size)
{
    if ((extra_size && !extra) || (tail_size && !tail) || !(type & NSPV2_WIRE_REPLY) ||
        !known_type(type))
        return 0;
    size_t payload = 8u + (size_t)extra_size + (size_t)tail_size;
    uint8_t *p = start_frame(out, cap, type, request_id, payload);
    if (!p)
        return 0;
    p = wr32(p, (uint32_t)code);
    p = wr32(p, word);
    p = wrbytes(p, extra, extra_size);
    p = wrbytes(p, tail, tail_size);
    return (size_t)(p - out);
}

size_t nspv2_wire_encode_hello_reply(uint8_t *out, size_t cap, uint32_t request_id,
                                     uint32_t server_pid, uint32_t keepalive_ms,
                                     uint32_t max_frame, uint32_t max_in_flight,
                                     const GUID *ids, const uint32_t *namespaces,
                                     uint32_t count)
{
    if (count > NSPV2_WIRE_MAX_PROVIDERS || (count && (!ids || !namespaces)))
        return 0;
    uint8_t *p = start_frame(out, cap, NSPV2_WIRE_REPLY | NSPV2_WIRE_HELLO, request_id,
                             28u + (size_t)count * NSPV2_WIRE_PROVIDER_SIZE);
    if (!p)
        return 0;
    p = wr32(p, NSPV2_WIRE_MAGIC);
    p = wr16(p, (uint16_t)NSPV2_WIRE_VERSION);
    p = wr16(p, 0);
    p = wr32(p, server_pid);
    p = wr32(p, keepalive_ms);
    p = wr32(p, max_frame);
    p = wr32(p, max_in_flight);
    p = wr32(p, count);
    for (uint32_t i = 0; i < count; i++) {
        p = wrbytes(p, (const uint8_t *)&ids[i], sizeof(GUID));
        p = wr32(p, namespaces[i]);
        p = wr32(p, 0);
    }
    return (size_t)(p - out);
}

int nspv2_wire_reply_provider(const nspv2_wire_reply *r, uint32_t i, GUID *id,
                              uint32_t *name_space)
{
    if (!r || !r->providers || i >= r->n_providers)
        return -1;
    const uint8_t *e = r->providers + (size_t)i * NSPV2_WIRE_PROVIDER_SIZE;
    if (id)
        memcpy(id, e, sizeof(GUID));
    if (name_space)
        *name_space = rd32(e + 16);
    return 0;
}

int nspv2_wire_decode_reply(const uint8_t *frame, size_t len, nspv2_wire_reply *out,
                            const char **why)
{
    nspv2_wire_reply r;
    memset(&r, 0, sizeof r);
    if (out)
        *out = r;
    if (nspv2_wire_parse_header(frame, len, NSPV2_WIRE_MAX_FRAME, &r.h, why) != 0)
        return -1;
    if (r.h.length != len)
        return fail(why, "frame length does not match the bytes received");
    if (!(r.h.type & NSPV2_WIRE_REPLY))
        return fail(why, "a client's frame type sent by a server");
    if (r.h.type != NSPV2_WIRE_ERROR && r.h.request_id == 0)
        return fail(why, "request id 0 on a reply");
    const uint8_t *p = frame + NSPV2_WIRE_HEADER;
    size_t payload = len - NSPV2_WIRE_HEADER;
    if (r.h.type == (NSPV2_WIRE_REPLY | NSPV2_WIRE_HELLO)) {
        if (payload < 28)
            return fail(why, "HELLO_REPLY shorter than its fixed fields");
        if (rd32(p) != NSPV2_WIRE_MAGIC)
            return fail(why, "HELLO_REPLY without the protocol's magic");
        if (rd16(p + 4) != NSPV2_WIRE_VERSION)
            return fail(why, "HELLO_REPLY of another protocol version");
        if (rd16(p + 6) != 0)
            return fail(why, "HELLO_REPLY's reserved field not 0");
        r.server_pid = rd32(p + 8);
        r.keepalive_ms = rd32(p + 12);
        r.max_frame = rd32(p + 16);
        r.max_in_flight = rd32(p + 20);
        r.n_providers = rd32(p + 24);
        if (r.n_providers > NSPV2_WIRE_MAX_PROVIDERS)
            return fail(why, "HELLO_REPLY with too many providers");
        if (payload != 28u + (size_t)r.n_providers * NSPV2_WIRE_PROVIDER_SIZE)
            return fail(why, "HELLO_REPLY's provider count does not match the frame");
        if (r.max_frame < NSPV2_WIRE_HEADER || r.max_frame > NSPV2_WIRE_MAX_FRAME ||
            r.max_in_flight == 0)
            return fail(why, "HELLO_REPLY with limits out of range");
        r.providers = r.n_providers ? p + 28 : NULL;
        for (uint32_t i = 0; i < r.n_providers; i++)
            if (rd32(p + 28 + (size_t)i * NSPV2_WIRE_PROVIDER_SIZE + 20) != 0)
                return fail(why, "HELLO_REPLY's provider entry has a reserved field not 0");
        if (out)
            *out = r;
        return 0;
    }
    if (payload < 8)
        return fail(why, "reply shorter than its code");
    r.code = (int32_t)rd32(p);
    r.word = rd32(p + 4);
    switch (r.h.type) {
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_BEGIN:
        if (payload != 16)
            return fail(why, "BEGIN_REPLY of the wrong size");
        if (r.word != 0)
            return fail(why, "BEGIN_REPLY's reserved field not 0");
        r.handle = rd64(p + 8);
        if ((r.code == 0) != (r.handle != 0))
            return fail(why, "BEGIN_REPLY's handle does not match its code");
        break;
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_NEXT:
        if (payload < 16)
            return fail(why, "NEXT_REPLY shorter than its fixed fields");
        r.tail_size = rd32(p + 8);
        if (rd32(p + 12) != 0)
            return fail(why, "NEXT_REPLY's reserved field not 0");
        if (r.tail_size != payload - 16)
            return fail(why, "NEXT_REPLY's image size does not match the frame");
        if (r.code != 0 && r.tail_size != 0)
            return fail(why, "NEXT_REPLY with an error code carries an image");
        if (r.code == 0 && r.tail_size < sizeof(WSAQUERYSETW))
            return fail(why, "NEXT_REPLY's image smaller than a WSAQUERYSETW");
        if (r.tail_size > NSPV2_WIRE_MAX_IMAGE)
            return fail(why, "NEXT_REPLY's image beyond the largest image");
        r.tail = r.tail_size ? p + 16 : NULL;
        break;
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_LOOKUP_END:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_SET_SERVICE:
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_GOODBYE:
        if (payload != 8)
            return fail(why, "reply of the wrong size");
        if (r.word != 0)
            return fail(why, "reply's reserved field not 0");
        break;
    case NSPV2_WIRE_REPLY | NSPV2_WIRE_STATUS:
    case NSPV2_WIRE_ERROR:
        if (r.word != payload - 8)
            return fail(why, "text size does not match the frame");
        if (r.h.type == NSPV2_WIRE_ERROR && r.word > NSPV2_WIRE_MAX_TEXT)
            return fail(why, "ERROR's text beyond its largest size");
        r.tail_size = r.word;
        r.tail = r.tail_size ? p + 8 : NULL;
        break;
    default:
        return fail(why, "unknown frame type");
    }
    if (out)
        *out = r;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* query-set images                                                          */

#define QS_HDR sizeof(WSAQUERYSETW)
#define IMG_ALIGN 8u /* where image_from places every object */

/* The pointer fields of a WSAQUERYSETW, by offset. */
#define F_NAME offsetof(WSAQUERYSETW, lpszServiceInstanceName)
#define F_CLASS offsetof(WSAQUERYSETW, lpServiceClassId)
#define F_VERSION offsetof(WSAQUERYSETW, lpVersion)
#define F_COMMENT offsetof(WSAQUERYSETW, lpszComment)
#define F_PROVIDER offsetof(WSAQUERYSETW, lpNSProviderId)
#define F_CONTEXT offsetof(WSAQUERYSETW, lpszContext)
#define F_PROTOCOLS offsetof(WSAQUERYSETW, lpafpProtocols)
#define F_QUERY offsetof(WSAQUERYSETW, lpszQueryString)
#define F_CSADDRS offsetof(WSAQUERYSETW, lpcsaBuffer)
#define F_BLOB offsetof(WSAQUERYSETW, lpBlob)
#define F_LOCAL offsetof(CSADDR_INFO, LocalAddr.lpSockaddr)
#define F_LOCAL_LEN offsetof(CSADDR_INFO, LocalAddr.iSockaddrLength)
#define F_REMOTE offsetof(CSADDR_INFO, RemoteAddr.lpSockaddr)
#define F_REMOTE_LEN offsetof(CSADDR_INFO, RemoteAddr.iSockaddrLength)
#define F_BLOB_SIZE offsetof(BLOB, cbSize)
#define F_BLOB_DATA offsetof(BLOB, pBlobData)

static uintptr_t rdptr(const uint8_t *p)
{
    uintptr_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void wrptr(uint8_t *p, uintptr_t v)
{
    memcpy(p, &v, sizeof v);
}

static DWORD rddw(const uint8_t *p)
{
    DWORD v;
    memcpy(&v, p, sizeof v);
    return v;
}

static INT rdint(const uint8_t *p)
{
    INT v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- flattening a client's query set ---- */

typedef struct img_builder {
    uint8_t *base; /* NULL while measuring */
    size_t off;
    int invalid; /* beyond a limit: nothing more is read */
} img_builder;

/* Reserve len bytes (8-aligned) and copy src there when filling; returns
 * the offset (0 for a NULL src). */
static size_t img_put(img_builder *b, const void *src, size_t len)
{
    if (!src || b->invalid)
        return 0;
    size_t at = (b->off + IMG_ALIGN - 1) & ~(size_t)(IMG_ALIGN - 1);
    if (at > NSPV2_WIRE_MAX_IMAGE || len > NSPV2_WIRE_MAX_IMAGE - at) {
        b->invalid = 1; /* the largest image: the wire's limit */
        return 0;
    }
    b->off = at + len;
    if (b->base && len)
        memcpy(b->base + at, src, len);
    return at;
}

static size_t img_put_wstr(img_builder *b, const void *src)
{
    if (!src || b->invalid)
        return 0;
    const unsigned char *p = src;
    size_t n = 0;
    for (;;) {
        if (n > NSPV2_QS_MAX_STRING_CHARS) {
            b->invalid = 1;
            return 0;
        }
        WCHAR u;
        memcpy(&u, p + n * sizeof(WCHAR), sizeof u);
        n++;
        if (!u)
            break;
    }
    return img_put(b, src, n * sizeof(WCHAR));
}

static size_t img_put_array(img_builder *b, const void *src, DWORD count, size_t size)
{
    if (src && count > NSPV2_QS_MAX_COUNT) {
        b->invalid = 1;
        return 0;
    }
    return img_put(b, src, (size_t)count * size);
}

static void img_build(img_builder *b, const WSAQUERYSETW *in)
{
    size_t hdr = img_put(b, in, QS_HDR); /* rewritten below */
    (void)hdr;                          /* always 0: the first object */
    WSAQUERYSETW w;
    memset(&w, 0, sizeof w);
    w.dwSize = sizeof(WSAQUERYSETW);
    w.dwNameSpace = in->dwNameSpace;
    w.dwNumberOfProtocols = in->dwNumberOfProtocols;
    w.dwNumberOfCsAddrs = in->dwNumberOfCsAddrs;
    w.dwOutputFlags = in->dwOutputFlags;
    size_t o_name = img_put_wstr(b, in->lpszServiceInstanceName);
    size_t o_class = img_put(b, in->lpServiceClassId, sizeof(GUID));
    size_t o_version = img_put(b, in->lpVersion, sizeof(WSAVERSION));
    size_t o_comment = img_put_wstr(b, in->lpszComment);
    size_t o_provider = img_put(b, in->lpNSProviderId, sizeof(GUID));
    size_t o_context = img_put_wstr(b, (const void *)in->lpszContext); /* LPTSTR under mingw-w64 */
    size_t o_protocols =
        img_put_array(b, in->lpafpProtocols, in->dwNumberOfProtocols, sizeof(AFPROTOCOLS));
    size_t o_query = img_put_wstr(b, in->lpszQueryString);
    size_t o_csaddrs =
        img_put_array(b, in->lpcsaBuffer, in->dwNumberOfCsAddrs, sizeof(CSADDR_INFO));
    if (in->lpcsaBuffer && !b->invalid) {
        const unsigned char *src = (const unsigned char *)in->lpcsaBuffer;
        for (DWORD i = 0; i < in->dwNumberOfCsAddrs && !b->invalid; i++) {
            CSADDR_INFO e;
            memcpy(&e, src + (size_t)i * sizeof e, sizeof e);
            INT ll = e.LocalAddr.iSockaddrLength, rl = e.RemoteAddr.iSockaddrLength;
            if (ll > (INT)NSPV2_QS_MAX_SOCKADDR_LEN || rl > (INT)NSPV2_QS_MAX_SOCKADDR_LEN) {
                b->invalid = 1;
                break;
            }
            size_t o_local = img_put(b, e.LocalAddr.lpSockaddr, ll > 0 ? (size_t)ll : 0);
            size_t o_remote = img_put(b, e.RemoteAddr.lpSockaddr, rl > 0 ? (size_t)rl : 0);
            if (b->base && !b->invalid) {
                CSADDR_INFO c;
                memset(&c, 0, sizeof c);
                c.LocalAddr.iSockaddrLength = ll;
                c.RemoteAddr.iSockaddrLength = rl;
                c.iSocketType = e.iSocketType;
                c.iProtocol = e.iProtocol;
                uint8_t *at = b->base + o_csaddrs + (size_t)i * sizeof c;
                memcpy(at, &c, sizeof c);
                wrptr(at + F_LOCAL, o_local);
                wrptr(at + F_REMOTE, o_remote);
            }
        }
    }
    size_t o_blob = img_put(b, in->lpBlob, sizeof(BLOB));
    if (in->lpBlob && !b->invalid) {
        BLOB src;
        memcpy(&src, in->lpBlob, sizeof src);
        if (src.pBlobData && src.cbSize > NSPV2_QS_MAX_BLOB_BYTES)
            b->invalid = 1;
        size_t o_data = img_put(b, src.pBlobData, src.cbSize);
        if (b->base && !b->invalid) {
            BLOB c;
            memset(&c, 0, sizeof c);
            c.cbSize = src.cbSize;
            memcpy(b->base + o_blob, &c, sizeof c);
            wrptr(b->base + o_blob + F_BLOB_DATA, o_data);
        }
    }
    if (b->base && !b->invalid) {
        memcpy(b->base, &w, sizeof w);
        wrptr(b->base + F_NAME, o_name);
        wrptr(b->base + F_CLASS, o_class);
        wrptr(b->base + F_VERSION, o_version);
        wrptr(b->base + F_COMMENT, o_comment);
        wrptr(b->base + F_PROVIDER, o_provider);
        wrptr(b->base + F_CONTEXT, o_context);
        wrptr(b->base + F_PROTOCOLS, o_protocols);
        wrptr(b->base + F_QUERY, o_query);
        wrptr(b->base + F_CSADDRS, o_csaddrs);
        wrptr(b->base + F_BLOB, o_blob);
    }
}

int nspv2_wire_image_from_query_set(const WSAQUERYSETW *qs, uint8_t *out, size_t cap,
                                    size_t *size)
{
    if (size)
        *size = 0;
    if (!qs || !size)
        return WSAEFAULT;
    if (qs->dwSize < sizeof(WSAQUERYSETW))
        return WSAEINVAL;
    img_builder m = {NULL, 0, 0};
    img_build(&m, qs);
    if (m.invalid)
        return WSAEINVAL;
    *size = m.off;
    if (!out || cap < m.off)
        return WSAEFAULT;
    memset(out, 0, m.off); /* the alignment gaps */
    img_builder f = {out, 0, 0};
    img_build(&f, qs);
    return NO_ERROR;
}

/* ---- checking an image ---- */

typedef struct img_region {
    size_t off, len; /* off 0: NULL */
} img_region;

typedef struct img_checker {
    const uint8_t *img;
    size_t size;
    size_t used;
    const char *why;
} img_checker;

static int bad(img_checker *c, const char *why)
{
    if (!c->why)
        c->why = why;
    return -1;
}

/* An object of len bytes at offset off (0: NULL, nothing to check). */
static int img_region_at(img_checker *c, uintptr_t off, size_t len, size_t align, img_region *r)
{
    r->off = 0;
    r->len = 0;
    if (!off)
        return 0;
    if (off < QS_HDR)
        return bad(c, "an object overlaps the WSAQUERYSETW");
    if (off > c->size || len > c->size - off)
        return bad(c, "an object lies outside the image");
    if (off % align)
        return bad(c, "an object is misaligned");
    r->off = (size_t)off;
    r->len = len;
    if (off + len > c->used)
        c->used = off + len;
    return 0;
}

static int img_string(img_checker *c, size_t field, img_region *r)
{
    uintptr_t off = rdptr(c->img + field);
    if (img_region_at(c, off, 0, sizeof(WCHAR), r) != 0 || !off)
        return c->why ? -1 : 0;
    size_t avail = (c->size - r->off) / sizeof(WCHAR);
    size_t limit = (size_t)NSPV2_QS_MAX_STRING_CHARS + 1u;
    size_t n = avail < limit ? avail : limit;
    for (size_t k = 0; k < n; k++)
        if (rd16(c->img + r->off + k * sizeof(WCHAR)) == 0)
            return img_region_at(c, off, (k + 1) * sizeof(WCHAR), sizeof(WCHAR), r);
    return bad(c, avail >= limit ? "a string is longer than the query-set limit"
                                 : "a string has no NUL inside the image");
}

static int overlaps(const img_region *a, const img_region *b)
{
    if (!a->off || !b->off || !a->len || !b->len)
        return 0;
    return a->off < b->off + b->len && b->off < a->off + a->len;
}

#define ALIGN_OF(t) _Alignof(t)

/* Check the offset form; *used the end of the highest object. */
static int img_check(img_checker *c)
{
    if (c->size < QS_HDR)
        return bad(c, "image smaller than a WSAQUERYSETW");
    c->used = QS_HDR;
    const uint8_t *h = c->img;
    if (rddw(h + offsetof(WSAQUERYSETW, dwSize)) != sizeof(WSAQUERYSETW))
        return bad(c, "the image's dwSize is not sizeof(WSAQUERYSETW)");
    img_region fixed[8]; /* 4 strings, 2 GUIDs, the version, the protocols */
    int k = 0;
    if (img_string(c, F_NAME, &fixed[k++]) || img_string(c, F_COMMENT, &fixed[k++]) ||
        img_string(c, F_CONTEXT, &fixed[k++]) || img_string(c, F_QUERY, &fixed[k++]))
        return -1;
    if (img_region_at(c, rdptr(h + F_CLASS), sizeof(GUID), ALIGN_OF(GUID), &fixed[k++]) ||
        img_region_at(c, rdptr(h + F_PROVIDER), sizeof(GUID), ALIGN_OF(GUID), &fixed[k++]) ||
        img_region_at(c, rdptr(h + F_VERSION), sizeof(WSAVERSION), ALIGN_OF(WSAVERSION),
                      &fixed[k++]))
        return -1;
    uintptr_t o_protocols = rdptr(h + F_PROTOCOLS);
    DWORD n_protocols = rddw(h + offsetof(WSAQUERYSETW, dwNumberOfProtocols));
    if (o_protocols && n_protocols > NSPV2_QS_MAX_COUNT)
        return bad(c, "dwNumberOfProtocols beyond the query-set limit");
    if (img_region_at(c, o_protocols, (size_t)n_protocols * sizeof(AFPROTOCOLS),
                      ALIGN_OF(AFPROTOCOLS), &fixed[k++]))
        return -1;

    /* the two structures whose pointers are rewritten in place */
    img_region csa, blob, data;
    uintptr_t o_csaddrs = rdptr(h + F_CSADDRS);
    DWORD n_csaddrs = rddw(h + offsetof(WSAQUERYSETW, dwNumberOfCsAddrs));
    if (o_csaddrs && n_csaddrs > NSPV2_QS_MAX_COUNT)
        return bad(c, "dwNumberOfCsAddrs beyond the query-set limit");
    if (img_region_at(c, o_csaddrs, (size_t)n_csaddrs * sizeof(CSADDR_INFO),
                      ALIGN_OF(CSADDR_INFO), &csa))
        return -1;
    if (img_region_at(c, rdptr(h + F_BLOB), sizeof(BLOB), ALIGN_OF(BLOB), &blob))
        return -1;
    if (overlaps(&csa, &blob))
        return bad(c, "the BLOB overlaps the CSADDR_INFO array");
    data.off = data.len = 0;
    if (blob.off) {
        ULONG cb;
        memcpy(&cb, c->img + blob.off + F_BLOB_SIZE, sizeof cb);
        uintptr_t o_data = rdptr(c->img + blob.off + F_BLOB_DATA);
        if (o_data && cb > NSPV2_QS_MAX_BLOB_BYTES)
            return bad(c, "the BLOB's cbSize is beyond the query-set limit");
        if (img_region_at(c, o_data, cb, 1, &data))
            return -1;
    }
    for (int i = 0; i < k; i++)
        if (overlaps(&fixed[i], &csa) || overlaps(&fixed[i], &blob))
            return bad(c, "an object overlaps the CSADDR_INFO array or the BLOB");
    if (overlaps(&data, &csa) || overlaps(&data, &blob))
        return bad(c, "the BLOB's data overlaps the CSADDR_INFO array or the BLOB");
    for (DWORD i = 0; csa.off && i < n_csaddrs; i++) {
        const uint8_t *e = c->img + csa.off + (size_t)i * sizeof(CSADDR_INFO);
        INT lens[2] = {rdint(e + F_LOCAL_LEN), rdint(e + F_REMOTE_LEN)};
        uintptr_t offs[2] = {rdptr(e + F_LOCAL), rdptr(e + F_REMOTE)};
        for (int j = 0; j < 2; j++) {
            if (lens[j] > (INT)NSPV2_QS_MAX_SOCKADDR_LEN)
                return bad(c, "a socket address is longer than the query-set limit");
            img_region sa;
            if (img_region_at(c, offs[j], lens[j] > 0 ? (size_t)lens[j] : 0, 2, &sa))
                return -1;
            if (overlaps(&sa, &csa) || overlaps(&sa, &blob))
                return bad(c, "a socket address overlaps the CSADDR_INFO array or the BLOB");
        }
    }
    return 0;
}

int nspv2_wire_image_check(const uint8_t *image, size_t size, size_t *used, const char **why)
{
    if (used)
        *used = 0;
    if (!image)
        return fail(why, "no image");
    img_checker c = {image, size, 0, NULL};
    if (img_check(&c) != 0)
        return fail(why, c.why);
    if (used)
        *used = c.used;
    return 0;
}

static void to_ptr(uint8_t *image, uint8_t *field)
{
    uintptr_t off = rdptr(field);
    wrptr(field, off ? (uintptr_t)(image + off) : 0);
}

int nspv2_wire_image_to_pointers(uint8_t *image, size_t size, const char **why)
{
    if (!image)
        return fail(why, "no image");
    if ((uintptr_t)image % IMG_ALIGN)
        return fail(why, "image not 8-aligned in memory");
    if (nspv2_wire_image_check(image, size, NULL, why) != 0)
        return -1;
    /* checked whole first: nothing rewritten below is read as an offset
     * after another rewrite touched it (the rewritten structures overlap
     * nothing) */
    uintptr_t o_csaddrs = rdptr(image + F_CSADDRS), o_blob = rdptr(image + F_BLOB);
    DWORD n_csaddrs = rddw(image + offsetof(WSAQUERYSETW, dwNumberOfCsAddrs));
    for (DWORD i = 0; o_csaddrs && i < n_csaddrs; i++) {
        uint8_t *e = image + o_csaddrs + (size_t)i * sizeof(CSADDR_INFO);
        to_ptr(image, e + F_LOCAL);
        to_ptr(image, e + F_REMOTE);
    }
    if (o_blob)
        to_ptr(image, image + o_blob + F_BLOB_DATA);
    static const size_t fields[] = {F_NAME,    F_CLASS,     F_VERSION, F_COMMENT, F_PROVIDER,
                                    F_CONTEXT, F_PROTOCOLS, F_QUERY,   F_CSADDRS, F_BLOB};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        to_ptr(image, image + fields[i]);
    return 0;
}

/* A pointer field inside [base, base + size) with len bytes after it
 * becomes an offset; *off gets it (0 for NULL). */
static int to_off(uint8_t *base, size_t size, uint8_t *field, size_t len, uintptr_t *off)
{
    uintptr_t p = rdptr(field), b = (uintptr_t)base;
    *off = 0;
    if (!p)
        return 0;
    if (p < b || p - b > size || len > size - (p - b))
        return -1;
    *off = p - b;
    wrptr(field, *off);
    return 0;
}

int nspv2_wire_image_to_offsets(uint8_t *base, size_t size, const char **why)
{
    if (!base || size < QS_HDR)
        return fail(why, "image smaller than a WSAQUERYSETW");
    uintptr_t off;
    DWORD n_csaddrs = rddw(base + offsetof(WSAQUERYSETW, dwNumberOfCsAddrs));
    /* the arrays are read through their pointers: bound them first */
    if (rdptr(base + F_CSADDRS) && n_csaddrs > NSPV2_QS_MAX_COUNT)
        return fail(why, "dwNumberOfCsAddrs beyond the query-set limit");
    uintptr_t o_csaddrs, o_blob;
    if (to_off(base, size, base + F_CSADDRS, (size_t)n_csaddrs * sizeof(CSADDR_INFO),
               &o_csaddrs) != 0 ||
        to_off(base, size, base + F_BLOB, sizeof(BLOB), &o_blob) != 0)
        return fail(why, "a pointer lies outside the buffer");
    for (DWORD i = 0; o_csaddrs && i < n_csaddrs; i++) {
        uint8_t *e = base + o_csaddrs + (size_t)i * sizeof(CSADDR_INFO);
        if (to_off(base, size, e + F_LOCAL, 0, &off) != 0 ||
            to_off(base, size, e + F_REMOTE, 0, &off) != 0)
            return fail(why, "a socket address lies outside the buffer");
    }
    if (o_blob && to_off(base, size, base + o_blob + F_BLOB_DATA, 0, &off) != 0)
        return fail(why, "the BLOB's data lies outside the buffer");
    static const size_t fields[] = {F_NAME,    F_CLASS,   F_VERSION, F_COMMENT,
                                    F_PROVIDER, F_CONTEXT, F_PROTOCOLS, F_QUERY};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (to_off(base, size, base + fields[i], 0, &off) != 0)
            return fail(why, "a pointer lies outside the buffer");
    /* now the whole image as the other end will check it */
    return nspv2_wire_image_check(base, size, NULL, why);
}
