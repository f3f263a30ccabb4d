/*
 * wire.h - the protocol between nspv2's provider processes (`nspv2 serve`,
 * src/server.c) and client processes (client/client.c, nspv2.Client): what
 * ws2_32's hidden RPC hop carries on Windows.
 *
 * Both ends run on one machine, so values are in the machine's byte order
 * (little-endian on every platform nspv2 serves on) and query sets in its
 * own WSAQUERYSETW layout; HELLO carries the pointer size and a client of
 * another size is refused.
 *
 * A frame is a 12-byte header and a payload:
 *
 *     u32 length      the whole frame, header included (12 .. NSPV2_WIRE_MAX_FRAME)
 *     u16 type        NSPV2_WIRE_* below
 *     u16 flags       0 (anything else is malformed)
 *     u32 request_id  chosen by the client, non-zero, echoed by the reply;
 *                     0 only on KEEPALIVE and on an ERROR not tied to a request
 *
 * Payloads (fixed fields first, every size exact: a frame whose length does
 * not match its type's payload is malformed; every field shown as 0 is
 * reserved and must be 0):
 *
 *   client -> server
 *   HELLO        u32 magic NSPV2_WIRE_MAGIC, u16 version, u16 pointer size
 *                (sizeof(void *)), u32 role (NSPV2_WIRE_ROLE_*), u32 0   = 16 bytes
 *   LOOKUP_BEGIN u32 dwControlFlags, u32 image size N, N bytes of query-set image
 *   LOOKUP_NEXT  u64 handle, u32 dwControlFlags, u32 buffer length    = 16 bytes
 *   LOOKUP_END   u64 handle                                           = 8 bytes
 *   SET_SERVICE  u32 essOperation, u32 dwControlFlags, u32 image size N, u32 0,
 *                N bytes of query-set image
 *   GOODBYE      (empty) the orderly end: WSACleanup, Client.close()
 *   KEEPALIVE    (empty) request_id 0, no reply
 *   STATUS       (empty)
 *
 *   server -> client (type = request type | NSPV2_WIRE_REPLY)
 *   HELLO_REPLY  u32 magic, u16 version, u16 0, u32 server pid, u32 keepalive
 *                ms, u32 max frame, u32 max in flight, u32 provider count P,
 *                then P x { 16-byte GUID, u32 dwNameSpace, u32 0 }
 *   BEGIN_REPLY  i32 code, u32 0, u64 handle (non-zero exactly when code is
 *                NO_ERROR)                                             = 16
 *   NEXT_REPLY   i32 code, u32 buffer length (on WSAEFAULT the size needed),
 *                u32 image size N (0 unless code is NO_ERROR; then at least a
 *                WSAQUERYSETW), u32 0, N bytes
 *   END_REPLY, SET_REPLY, GOODBYE_REPLY   i32 code, u32 0                = 8
 *   STATUS_REPLY i32 code, u32 text size N, N bytes of UTF-8 JSON
 *   ERROR        i32 code, u32 text size N (<= NSPV2_WIRE_MAX_TEXT), N bytes
 *                of UTF-8: why the server is closing the connection (sent
 *                once, then the connection is closed)
 *
 * A query-set image is a WSAQUERYSETW at offset 0 followed by everything
 * it points to, every pointer field (and SOCKET_ADDRESS.lpSockaddr,
 * BLOB.pBlobData inside it) holding an offset from the image's start; 0 is
 * NULL (nothing can live at offset 0: the WSAQUERYSETW does). The rules
 * (nspv2_wire_image_check; nspv2.client's from_image applies the same):
 *   - dwSize is sizeof(WSAQUERYSETW); the image is at least that long;
 *   - every object lies wholly inside the image, after the WSAQUERYSETW,
 *     at an offset that is a multiple of its type's alignment (on 64-bit:
 *     8 for CSADDR_INFO and BLOB, 4 for GUID, WSAVERSION, AFPROTOCOLS; 2
 *     for strings and socket addresses; 1 for blob data);
 *   - objects: the 4 strings (each ends with a NUL inside the image, at
 *     most NSPV2_QS_MAX_STRING_CHARS units before it), lpServiceClassId and
 *     lpNSProviderId (GUID), lpVersion, lpafpProtocols (dwNumberOfProtocols
 *     entries), lpcsaBuffer (dwNumberOfCsAddrs entries), each entry's two
 *     socket addresses (iSockaddrLength bytes, none when <= 0), lpBlob and
 *     its pBlobData (cbSize bytes);
 *   - limits as the host's (nspv2_host.h), applied when the pointer is not
 *     NULL: counts <= NSPV2_QS_MAX_COUNT, cbSize <= NSPV2_QS_MAX_BLOB_BYTES;
 *     iSockaddrLength <= NSPV2_QS_MAX_SOCKADDR_LEN always;
 *   - the CSADDR_INFO array and the BLOB (whose pointers are rewritten in
 *     place) share no byte with each other or with any other object;
 *     other objects may share bytes.
 * A NULL array with a non-zero count, or a NULL pBlobData with a non-zero
 * cbSize, is kept as it is (the host accepts it from a client). The image
 * needs nothing else, so it can be copied anywhere 8-aligned and turned
 * back into pointers.
 *
 * Order: HELLO first and once; then any number of requests, at most the
 * HELLO_REPLY's max-in-flight unanswered at a time, each with a request_id
 * not in flight; after GOODBYE nothing but KEEPALIVE (sent while the
 * client waits for GOODBYE_REPLY). A monitor (role 1) may send only
 * STATUS and KEEPALIVE, and has no client session. A server frame that
 * breaks these rules, or any frame malformed, ends the connection: the
 * server sends ERROR with the reason, logs it, runs the client's session
 * down (NSPv2ClientSessionRundown), and serves everyone else as before.
 */
#ifndef NSPV2_WIRE_H
#define NSPV2_WIRE_H

#include "nspv2_abi.h"

#include <stddef.h>
#include <stdint.h>

#define NSPV2_WIRE_MAGIC 0x3250534Eu /* "NSP2" in memory */
#define NSPV2_WIRE_VERSION 1u
#define NSPV2_WIRE_HEADER 12u
/* The largest frame either end sends or accepts, header included. */
#define NSPV2_WIRE_MAX_FRAME (4u * 1024u * 1024u)
/* The largest query-set image in a request or a reply, and the largest
 * buffer length the server uses for a LOOKUP_NEXT (a larger one asked for
 * is cut to it: a result needing more fails with WSAEFAULT and that size). */
#define NSPV2_WIRE_MAX_IMAGE (NSPV2_WIRE_MAX_FRAME - NSPV2_WIRE_HEADER - 16u)
#define NSPV2_WIRE_MAX_TEXT 1024u  /* ERROR's text */
#define NSPV2_WIRE_MAX_PROVIDERS 256u /* in HELLO_REPLY */

enum {
    NSPV2_WIRE_HELLO = 0x0001,
    NSPV2_WIRE_LOOKUP_BEGIN = 0x0002,
    NSPV2_WIRE_LOOKUP_NEXT = 0x0003,
    NSPV2_WIRE_LOOKUP_END = 0x0004,
    NSPV2_WIRE_SET_SERVICE = 0x0005,
    NSPV2_WIRE_GOODBYE = 0x0006,
    NSPV2_WIRE_KEEPALIVE = 0x0007,
    NSPV2_WIRE_STATUS = 0x0008,
    NSPV2_WIRE_REPLY = 0x8000, /* | request type */
    NSPV2_WIRE_ERROR = 0x80FF
};

enum { NSPV2_WIRE_ROLE_CLIENT = 0, NSPV2_WIRE_ROLE_MONITOR = 1 };

typedef struct nspv2_wire_header {
    uint32_t length;
    uint16_t type;
    uint16_t flags;
    uint32_t request_id;
} nspv2_wire_header;

/* A decoded frame: fields of its type; pointers point into the frame. */
typedef struct nspv2_wire_msg {
    nspv2_wire_header h;
    /* HELLO */
    uint32_t magic;
    uint16_t version, pointer_size;
    uint32_t role;
    /* LOOKUP_NEXT / LOOKUP_END */
    uint64_t handle;
    /* LOOKUP_BEGIN / LOOKUP_NEXT / SET_SERVICE */
    uint32_t control_flags;
    uint32_t buffer_length; /* LOOKUP_NEXT */
    uint32_t operation;     /* SET_SERVICE */
    const uint8_t *image;   /* LOOKUP_BEGIN / SET_SERVICE (not aligned) */
    uint32_t image_size;
} nspv2_wire_msg;

/* Read a header from the first NSPV2_WIRE_HEADER bytes of p (n >= 12).
 * 0 if it may start a frame (length within 12..max_frame, flags 0, a known
 * type), else -1 with *why set to a static reason. */
int nspv2_wire_parse_header(const uint8_t *p, size_t n, uint32_t max_frame,
                            nspv2_wire_header *h, const char **why);

/* Decode one whole client->server frame (frame[0..len) with len equal to its
 * header's length): 0 and *out filled, or -1 with *why set (a static
 * string) for anything malformed: a bad header, a server-side type, a size
 * that does not match the type, request_id 0 on a request (or non-zero on
 * KEEPALIVE), image sizes beyond NSPV2_WIRE_MAX_IMAGE or smaller than a
 * WSAQUERYSETW, a HELLO with a wrong magic. (Version, pointer size, role and
 * ordering are the server's checks, not the decoder's.) The image is not
 * checked here: nspv2_wire_image_to_pointers does that. */
int nspv2_wire_decode_request(const uint8_t *frame, size_t len, nspv2_wire_msg *out,
                              const char **why);

/* Encoders: write a whole frame into out (cap bytes) and return its length,
 * or 0 when cap is too small or a size is out of range. */
size_t nspv2_wire_encode_hello(uint8_t *out, size_t cap, uint32_t request_id, uint32_t role);
size_t nspv2_wire_encode_begin(uint8_t *out, size_t cap, uint32_t request_id, uint32_t flags,
                               const uint8_t *image, uint32_t image_size);
size_t nspv2_wire_encode_next(uint8_t *out, size_t cap, uint32_t request_id, uint64_t handle,
                              uint32_t flags, uint32_t buffer_length);
size_t nspv2_wire_encode_end(uint8_t *out, size_t cap, uint32_t request_id, uint64_t handle);
size_t nspv2_wire_encode_set(uint8_t *out, size_t cap, uint32_t request_id, uint32_t operation,
                             uint32_t flags, const uint8_t *image, uint32_t image_size);
/* GOODBYE, KEEPALIVE (request_id 0), STATUS: header only */
size_t nspv2_wire_encode_empty(uint8_t *out, size_t cap, uint16_t type, uint32_t request_id);
/* A reply: header (type, request_id), i32 code, u32 word, then the fixed
 * extra bytes (extra_size 0 or 8: handle / image size + 0) and the tail
 * (image or text). */
size_t nspv2_wire_encode_reply(uint8_t *out, size_t cap, uint16_t type, uint32_t request_id,
                               int32_t code, uint32_t word, const uint8_t *extra,
                               uint32_t extra_size, const uint8_t *tail, uint32_t tail_size);

/* HELLO_REPLY: count providers (ids[i], namespaces[i]); 0 when it does not
 * fit or count > NSPV2_WIRE_MAX_PROVIDERS. */
#define NSPV2_WIRE_PROVIDER_SIZE 24u /* one provider entry of HELLO_REPLY */
size_t nspv2_wire_encode_hello_reply(uint8_t *out, size_t cap, uint32_t request_id,
                                     uint32_t server_pid, uint32_t keepalive_ms,
                                     uint32_t max_frame, uint32_t max_in_flight,
                                     const GUID *ids, const uint32_t *namespaces,
                                     uint32_t count);

/* Server -> client frames as a client decodes them. */
typedef struct nspv2_wire_reply {
    nspv2_wire_header h;
    int32_t code;
    uint32_t word;           /* buffer length (NEXT), text size (STATUS, ERROR) */
    uint64_t handle;         /* BEGIN_REPLY */
    const uint8_t *tail;     /* NEXT image, STATUS / ERROR text (not aligned) */
    uint32_t tail_size;
    /* HELLO_REPLY */
    uint32_t server_pid, keepalive_ms, max_frame, max_in_flight, n_providers;
    const uint8_t *providers; /* n_providers x 24 bytes */
} nspv2_wire_reply;
/* Decode one whole server->client frame; -1 with *why for anything
 * malformed (the client then treats the connection as lost). */
int nspv2_wire_decode_reply(const uint8_t *frame, size_t len, nspv2_wire_reply *out,
                            const char **why);
/* Provider i of a decoded HELLO_REPLY: 0, or -1 when i >= n_providers. */
int nspv2_wire_reply_provider(const nspv2_wire_reply *r, uint32_t i, GUID *id,
                              uint32_t *name_space);

/* ---- query-set images ---- */

/* The image of a client's query set (pointers into the caller's memory,
 * read through memcpy, bounded by the NSPV2_QS_* limits of nspv2_host.h:
 * beyond them -> WSAEINVAL before reading what they describe). Every object
 * is placed 8-aligned, in field order; gaps and padding are zero; dwSize
 * becomes sizeof(WSAQUERYSETW). Returns NO_ERROR with *size set and the
 * image written when cap >= *size; WSAEFAULT with *size the size needed
 * when cap is short (out may be NULL then); WSAEFAULT for a NULL qs or
 * size; WSAEINVAL for dwSize < sizeof(WSAQUERYSETW), a limit exceeded, or
 * an image beyond NSPV2_WIRE_MAX_IMAGE (the largest query set the wire
 * carries). Its result always passes nspv2_wire_image_check. */
int nspv2_wire_image_from_query_set(const WSAQUERYSETW *qs, uint8_t *out, size_t cap,
                                    size_t *size);

/* Check an image in offset form (any alignment in memory; size bytes)
 * against every rule above without changing it: 0 and *used (may be NULL)
 * the end of its highest object (the image cut to *used still passes);
 * -1 with *why (static) otherwise. Never reads outside [image, image + size). */
int nspv2_wire_image_check(const uint8_t *image, size_t size, size_t *used, const char **why);

/* Check an image in place (image 8-aligned, size bytes) and, if it passes
 * nspv2_wire_image_check, turn its offsets into pointers into it: 0 on
 * success; -1 with *why and the image unchanged otherwise. Never reads or
 * writes outside [image, image + size). */
int nspv2_wire_image_to_pointers(uint8_t *image, size_t size, const char **why);

/* The opposite, for a query set whose every pointer lies inside
 * [base, base + size) (the host's relocated result in the server's buffer):
 * pointers become offsets from base, in place, then the image is checked
 * as nspv2_wire_image_to_pointers will check it at the other end. -1 (and
 * *why) if a pointer lies outside or the check fails (the buffer is then
 * partly converted: do not send it). The server sends the image cut to the
 * *used of nspv2_wire_image_check. */
int nspv2_wire_image_to_offsets(uint8_t *base, size_t size, const char **why);

#endif /* NSPV2_WIRE_H */
