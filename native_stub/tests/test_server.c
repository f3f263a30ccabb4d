/*
 * test_server.c - tests of src/server.c: a provider process's server, with
 * real Unix domain sockets connected from threads of this process, against
 * the C reference provider (the NS_EMAIL presence directory). Requests are
 * encoded and replies decoded with wire.c, as the client library does.
 *
 * POSIX only (the server is not built on Windows).
 */
#include "test_support.h"

void run_server_tests(void);

#if !defined(_WIN32)

#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* a test client over a real socket                                          */

typedef struct tclient {
    int fd;
    uint32_t next_id;
    uint8_t *rx; /* the last reply frame (tclient_recv) */
    nspv2_wire_reply rep;
} tclient;

static char g_dir[64];
static char g_path[96];

static void make_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/nspv2-srvtest-XXXXXX");
    if (!mkdtemp(g_dir))
        g_dir[0] = 0;
    snprintf(g_path, sizeof g_path, "%s/serve.sock", g_dir);
}

static void remove_dir(void)
{
    unlink(g_path);
    rmdir(g_dir);
}

static int tclient_connect(tclient *t)
{
    memset(t, 0, sizeof *t);
    t->next_id = 1;
    t->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_path);
    if (t->fd < 0 || connect(t->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (t->fd >= 0)
            close(t->fd);
        t->fd = -1;
        return -1;
    }
    return 0;
}

static void tclient_close(tclient *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    free(t->rx);
    t->rx = NULL;
}

static int tclient_send(tclient *t, const uint8_t *f, size_t n)
{
    while (n) {
        ssize_t r = send(t->fd, f, n, MSG_NOSIGNAL);
        if (r <= 0)
            return -1;
        f += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads exactly n bytes within timeout_ms; 0, or -1 (closed, timeout). */
static int read_n(int fd, uint8_t *p, size_t n, int timeout_ms)
{
    while (n) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One reply into t->rep (t->rx holds its frame); 0, or -1 when the
 * connection closed, timed out or sent something malformed. */
static int tclient_recv(tclient *t, int timeout_ms)
{
    uint8_t h[NSPV2_WIRE_HEADER];
    if (read_n(t->fd, h, sizeof h, timeout_ms) != 0)
        return -1;
    uint32_t len;
    memcpy(&len, h, 4);
    if (len < NSPV2_WIRE_HEADER || len > NSPV2_WIRE_MAX_FRAME)
        return -1;
    free(t->rx);
    t->rx = malloc(len);
    if (!t->rx)
        return -1;
    memcpy(t->rx, h, sizeof h);
    if (read_n(t->fd, t->rx + sizeof h, len - sizeof h, timeout_ms) != 0)
        return -1;
    const char *why = NULL;
    if (nspv2_wire_decode_reply(t->rx, len, &t->rep, &why) != 0) {
        printf("     decode_reply: %s\n", why ? why : "?");
        return -1;
    }
    return 0;
}

/* The peer closed the connection (EOF) within timeout_ms, whatever came
 * before. */
static int tclient_wait_closed(tclient *t, int timeout_ms)
{
    uint8_t sink[4096];
    for (;;) {
        struct pollfd pf = {t->fd, POLLIN, 0};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return 0;
        ssize_t r = recv(t->fd, sink, sizeof sink, 0);
        if (r <= 0)
            return 1;
    }
}

/* HELLO and its reply; the HELLO_REPLY's code (the magic) or -1. */
static int tclient_hello(tclient *t, uint32_t role)
{
    uint8_t f[64];
    size_t n = nspv2_wire_encode_hello(f, sizeof f, t->next_id++, role);
    if (!n || tclient_send(t, f, n) != 0 || tclient_recv(t, 5000) != 0)
        return -1;
    return t->rep.h.type == (NSPV2_WIRE_HELLO | NSPV2_WIRE_REPLY) ? 0 : (int)t->rep.code;
}

static int tclient_open(tclient *t)
{
    if (tclient_connect(t) != 0)
        return -1;
    return tclient_hello(t, NSPV2_WIRE_ROLE_CLIENT);
}

/* A request with an image (BEGIN / SET): the reply's code, or -1. */
static int image_of(const WSAQUERYSETW *q, uint8_t **img, size_t *size)
{
    *size = 0;
    nspv2_wire_image_from_query_set(q, NULL, 0, size);
    *img = malloc(*size ? *size : 1);
    return *img && nspv2_wire_image_from_query_set(q, *img, *size, size) == NO_ERROR ? 0 : -1;
}

static INT tclient_set(tclient *t, WSAQUERYSETW *q, uint32_t op)
{
    uint8_t *img;
    size_t isz;
    if (image_of(q, &img, &isz) != 0)
        return -1;
    size_t cap = NSPV2_WIRE_HEADER + 16 + isz;
    uint8_t *f = malloc(cap);
    size_t n = f ? nspv2_wire_encode_set(f, cap, t->next_id++, op, 0, img, (uint32_t)isz) : 0;
    int r = n && tclient_send(t, f, n) == 0 && tclient_recv(t, 10000) == 0 ? 0 : -1;
    free(f);
    free(img);
    if (r != 0 || t->rep.h.type != (NSPV2_WIRE_SET_SERVICE | NSPV2_WIRE_REPLY))
        return -1;
    return t->rep.code;
}

static INT tclient_sign_in(tclient *t, const char *name)
{
    reg r;
    reg_init(&r, name);
    reg_v4(&r, 1, 5060);
    reg_status(&r, MISTATUS_ONLINE);
    reg_set(0, &r, RNRSERVICE_REGISTER, 0); /* fills the pointers; session 0 fails */
    return tclient_set(t, &r.q, RNRSERVICE_REGISTER);
}

/* BEGIN: the code; *h the handle */
static INT tclient_begin_in(tclient *t, DWORD ns, const GUID *prov, const char *name, uint64_t *h)
{
    /* query() would use W(), which is not thread-safe: client threads call this */
    WCHAR wname[128];
    wcopy(wname, 128, name);
    WSAQUERYSETW q = query(ns, prov, NULL);
    q.lpszServiceInstanceName = wname;
    uint8_t *img;
    size_t isz;
    *h = 0;
    if (image_of(&q, &img, &isz) != 0)
        return -1;
    size_t cap = NSPV2_WIRE_HEADER + 8 + isz;
    uint8_t *f = malloc(cap);
    size_t n = f ? nspv2_wire_encode_begin(f, cap, t->next_id++, LUP_RETURN_ALL, img,
                                           (uint32_t)isz)
                 : 0;
    int r = n && tclient_send(t, f, n) == 0 && tclient_recv(t, 10000) == 0 ? 0 : -1;
    free(f);
    free(img);
    if (r != 0 || t->rep.h.type != (NSPV2_WIRE_LOOKUP_BEGIN | NSPV2_WIRE_REPLY))
        return -1;
    *h = t->rep.handle;
    return t->rep.code;
}

static INT tclient_begin(tclient *t, const char *name, uint64_t *h)
{
    return tclient_begin_in(t, NS_EMAIL, &nspv2_ref_provider_id, name, h);
}

/* NEXT with a buffer of len: the code; on NO_ERROR the image turned into
 * pointers in out (8-aligned, 4096 bytes). */
static INT tclient_next(tclient *t, uint64_t h, uint32_t len, result_buf *out)
{
    uint8_t f[64];
    size_t n = nspv2_wire_encode_next(f, sizeof f, t->next_id++, h, LUP_RETURN_ALL, len);
    if (!n || tclient_send(t, f, n) != 0 || tclient_recv(t, 10000) != 0 ||
        t->rep.h.type != (NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY))
        return -1;
    if (t->rep.code == NO_ERROR && out) {
        const char *why = NULL;
        if (t->rep.tail_size > sizeof out->bytes)
            return -1;
        memcpy(out->bytes, t->rep.tail, t->rep.tail_size);
        if (nspv2_wire_image_to_pointers(out->bytes, t->rep.tail_size, &why) != 0)
            return -1;
    }
    return t->rep.code;
}

static INT tclient_end(tclient *t, uint64_t h)
{
    uint8_t f[64];
    size_t n = nspv2_wire_encode_end(f, sizeof f, t->next_id++, h);
    if (!n || tclient_send(t, f, n) != 0 || tclient_recv(t, 10000) != 0 ||
        t->rep.h.type != (NSPV2_WIRE_LOOKUP_END | NSPV2_WIRE_REPLY))
        return -1;
    return t->rep.code;
}

static INT tclient_goodbye(tclient *t)
{
    uint8_t f[64];
    size_t n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_GOODBYE, t->next_id++);
    if (!n || tclient_send(t, f, n) != 0 || tclient_recv(t, 10000) != 0 ||
        t->rep.h.type != (NSPV2_WIRE_GOODBYE | NSPV2_WIRE_REPLY))
        return -1;
    return t->rep.code;
}

/* A whole lookup of name in a fresh connection: the code of BEGIN, or of
 * the first NEXT; *found = the results before WSA_E_NO_MORE. */
static INT lookup_count(const char *name, int *found)
{
    tclient t;
    *found = 0;
    if (tclient_open(&t) != 0) {
        tclient_close(&t);
        return -1;
    }
    uint64_t h;
    INT code = tclient_begin(&t, name, &h);
    if (code == NO_ERROR) {
        result_buf buf;
        INT c;
        while ((c = tclient_next(&t, h, 4096, &buf)) == NO_ERROR)
            (*found)++;
        if (c != WSA_E_NO_MORE)
            code = c;
        tclient_end(&t, h);
    }
    tclient_goodbye(&t);
    tclient_close(&t);
    return code;
}


/* Sends a frame without waiting for anything. */
static int tclient_raw(tclient *t, const uint8_t *f, size_t n) { return tclient_send(t, f, n); }

/* Reads replies until an ERROR frame (within timeout): its code, or -1 when
 * the connection closed or timed out first. */
static int tclient_error(tclient *t, int timeout_ms)
{
    while (tclient_recv(t, timeout_ms) == 0)
        if (t->rep.h.type == NSPV2_WIRE_ERROR)
            return t->rep.code;
    return -1;
}

/* STATUS over t: the JSON (malloc'd, NUL-terminated) or NULL. */
static char *tclient_status(tclient *t)
{
    uint8_t f[64];
    size_t n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_STATUS, t->next_id++);
    if (!n || tclient_send(t, f, n) != 0 || tclient_recv(t, 5000) != 0 ||
        t->rep.h.type != (NSPV2_WIRE_STATUS | NSPV2_WIRE_REPLY) || t->rep.code != NO_ERROR)
        return NULL;
    char *j = malloc(t->rep.tail_size + 1);
    if (j) {
        memcpy(j, t->rep.tail, t->rep.tail_size);
        j[t->rep.tail_size] = 0;
    }
    return j;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ------------------------------------------------------------------------ */
/* the server under test                                                     */

static int g_log[2] = {-1, -1}; /* a pipe: the server logs into [1] */
static const uint32_t *g_allow; /* the next server's allow_uids */
static uint32_t g_nallow;

static uint64_t start_server(uint32_t threads, uint32_t max_clients, uint32_t max_in_flight,
                             uint32_t keepalive_ms)
{
    fresh();
    advertise_ref();
    make_dir();
    if (pipe(g_log) != 0)
        g_log[0] = g_log[1] = -1;
    nspv2_server_config cfg = {0};
    cfg.socket_path = g_path;
    cfg.threads = threads;
    cfg.max_clients = max_clients;
    cfg.max_in_flight = max_in_flight;
    cfg.keepalive_ms = keepalive_ms;
    cfg.log_fd = g_log[1];
    cfg.allow_uids = g_allow;
    cfg.n_allow_uids = g_nallow;
    uint64_t id = 0;
    CHECK_OK(nspv2_server_start(&cfg, &id));
    return id;
}

/* What the server logged so far (non-blocking read of the pipe). */
static char g_logtext[16384];
static size_t g_loglen;
static const char *log_text(void)
{
    for (;;) {
        struct pollfd pf = {g_log[0], POLLIN, 0};
        if (g_log[0] < 0 || poll(&pf, 1, 0) <= 0 || g_loglen + 1 >= sizeof g_logtext)
            break;
        ssize_t r = read(g_log[0], g_logtext + g_loglen, sizeof g_logtext - 1 - g_loglen);
        if (r <= 0)
            break;
        g_loglen += (size_t)r;
    }
    g_logtext[g_loglen] = 0;
    return g_logtext;
}

static void stop_server(uint64_t id)
{
    CHECK_OK(nspv2_server_stop(id));
    struct stat st;
    CHECK(lstat(g_path, &st) != 0); /* the socket file is gone */
    log_text();
    for (int i = 0; i < 2; i++)
        if (g_log[i] >= 0)
            close(g_log[i]);
    g_log[0] = g_log[1] = -1;
    g_loglen = 0;
    remove_dir();
    fresh();
}

static nspv2_server_stats sstats(uint64_t id)
{
    nspv2_server_stats st;
    memset(&st, 0, sizeof st);
    CHECK_OK(nspv2_server_stats_get(id, &st));
    return st;
}

/* Waits (up to 5 s) until the server's stats field reaches at least v. */
#define WAIT_STAT(id, field, v)                                                           \
    do {                                                                                  \
        for (int w_ = 0; w_ < 500; w_++) {                                                \
            nspv2_server_stats s_;                                                        \
            nspv2_server_stats_get((id), &s_);                                            \
            if (s_.field >= (v))                                                          \
                break;                                                                    \
            nspv2_sleep_ms(10);                                                           \
        }                                                                                 \
    } while (0)

/* ------------------------------------------------------------------------ */
/* tests                                                                     */

TEST(server_hello_and_the_four_calls)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(a.rep.n_providers == 1);
    GUID pid;
    uint32_t ns = 0;
    CHECK(nspv2_wire_reply_provider(&a.rep, 0, &pid, &ns) == 0);
    CHECK(memcmp(&pid, &nspv2_ref_provider_id, sizeof pid) == 0 && ns == NS_EMAIL);
    CHECK(a.rep.server_pid == (uint32_t)getpid());
    CHECK(a.rep.keepalive_ms == 5000 && a.rep.max_in_flight == 8);
    CHECK(a.rep.max_frame == NSPV2_WIRE_MAX_FRAME);

    CHECK(tclient_sign_in(&a, "alice@example.com") == NO_ERROR);

    /* another client process finds it, with the fields the host relocated */
    tclient b;
    CHECK(tclient_open(&b) == 0);
    /* the provider's code reaches the client: signed in by another session */
    CHECK(tclient_sign_in(&b, "alice@example.com") == WSAEALREADY);
    uint64_t h = 0;
    CHECK(tclient_begin(&b, "alice@example.com", &h) == NO_ERROR);
    CHECK(h != 0);
    result_buf buf;
    memset(&buf, 0, sizeof buf);
    /* too small: WSAEFAULT and the size needed */
    CHECK(tclient_next(&b, h, 16, NULL) == WSAEFAULT);
    uint32_t need = b.rep.word;
    CHECK(need > sizeof(WSAQUERYSETW) && need <= 4096);
    CHECK(b.rep.tail_size == 0);
    CHECK(tclient_next(&b, h, need, &buf) == NO_ERROR);
    CHECK(b.rep.tail_size >= sizeof(WSAQUERYSETW) && b.rep.tail_size <= need);
    check_entry(&buf.qs, b.rep.tail_size, "alice@example.com", MISTATUS_ONLINE, "MISTATUS_ONLINE",
                RESULT_IS_ADDED, 1);
    CHECK(tclient_next(&b, h, 4096, &buf) == WSA_E_NO_MORE);
    CHECK(tclient_end(&b, h) == NO_ERROR);
    CHECK(tclient_end(&b, h) == WSA_INVALID_HANDLE);
    /* the handle is not a's */
    CHECK(tclient_begin(&b, "alice@example.com", &h) == NO_ERROR);
    CHECK(tclient_next(&a, h, 4096, &buf) == WSA_INVALID_HANDLE);
    CHECK(tclient_end(&a, h) == WSA_INVALID_HANDLE);
    CHECK(tclient_next(&b, h, 4096, &buf) == NO_ERROR); /* still b's, untouched */
    CHECK(tclient_end(&b, h) == NO_ERROR);

    /* GOODBYE: Cleanup (the example signs a's names out) before the reply */
    nspv2_host_stats before = stats();
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    nspv2_host_stats after = stats();
    CHECK(after.cleanups == before.cleanups + 1);
    CHECK(after.rundowns == before.rundowns);
    CHECK(tclient_wait_closed(&a, 5000));
    tclient_close(&a);
    int found = -1;
    CHECK(lookup_count("alice@example.com", &found) == WSASERVICE_NOT_FOUND);

    CHECK(tclient_goodbye(&b) == NO_ERROR);
    tclient_close(&b);
    WAIT_STAT(id, sessions_cleanup, 3);
    nspv2_server_stats st = sstats(id);
    CHECK(st.accepted == 3 && st.sessions_opened == 3);
    CHECK(st.sessions_cleanup == 3 && st.sessions_rundown == 0);
    CHECK(st.refused == 0);
    CHECK(st.requests >= 14);
    const char *log = log_text();
    CHECK(strstr(log, "client #1 (pid ") != NULL);
    CHECK(strstr(log, "session of client #1 (pid ") != NULL);
    CHECK(strstr(log, "ended: cleanup\n") != NULL);
    stop_server(id);
}

TEST(server_disconnect_runs_the_session_down)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_sign_in(&a, "bob@example.com") == NO_ERROR);
    int found = 0;
    CHECK(lookup_count("bob@example.com", &found) == NO_ERROR && found == 1);
    nspv2_host_stats before = stats();
    tclient_close(&a); /* no GOODBYE: the process died, say */
    WAIT_STAT(id, sessions_rundown, 1);
    nspv2_server_stats st = sstats(id);
    CHECK(st.sessions_rundown == 1 && st.ended_disconnect == 1);
    CHECK(stats().rundowns == before.rundowns + 1);
    CHECK(stats().cleanups == before.cleanups);
    CHECK(lookup_count("bob@example.com", &found) == WSASERVICE_NOT_FOUND);
    const char *log = log_text();
    CHECK(strstr(log, "disconnected: connection closed without GOODBYE") != NULL);
    CHECK(strstr(log, "ended: rundown, OTHER_COMMUNICATION_ERROR (client disconnected") != NULL);
    stop_server(id);
}

TEST(server_stop_runs_open_sessions_down)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_sign_in(&a, "carol@example.com") == NO_ERROR);
    nspv2_host_stats before = stats();
    CHECK_OK(nspv2_server_stop(id));
    CHECK(stats().rundowns == before.rundowns + 1);
    CHECK(tclient_wait_closed(&a, 5000));
    struct stat sst;
    CHECK(lstat(g_path, &sst) != 0);
    CHECK_ERR(nspv2_server_stop(id), WSAEINVAL);
    nspv2_server_stats st;
    CHECK_ERR(nspv2_server_stats_get(id, &st), WSAEINVAL);
    const char *log = log_text();
    CHECK(strstr(log, "ended: rundown, PLATFORM_SHUTDOWN (server stopping)") != NULL);
    tclient_close(&a);
    for (int i = 0; i < 2; i++)
        close(g_log[i]);
    g_log[0] = g_log[1] = -1;
    g_loglen = 0;
    remove_dir();
    fresh();
}


TEST(server_keepalive_deadline)
{
    uint64_t id = start_server(2, 0, 0, 100); /* silence for 300 ms ends a client */
    tclient a, b;
    CHECK(tclient_open(&a) == 0);
    CHECK(a.rep.keepalive_ms == 100);
    CHECK(tclient_open(&b) == 0);
    CHECK(tclient_sign_in(&a, "quiet@example.com") == NO_ERROR);
    uint8_t ka[16];
    size_t kn = nspv2_wire_encode_empty(ka, sizeof ka, NSPV2_WIRE_KEEPALIVE, 0);
    uint64_t t0 = nspv2_now_ns();
    /* b says KEEPALIVE every 50 ms for 900 ms (three deadlines): kept */
    while (nspv2_now_ns() - t0 < 900000000ull) {
        CHECK(tclient_raw(&b, ka, kn) == 0);
        nspv2_sleep_ms(50);
    }
    CHECK(tclient_error(&a, 2000) == WSAETIMEDOUT); /* a said nothing: ended */
    CHECK(strstr((const char *)a.rep.tail, "stopped answering") != NULL);
    CHECK(tclient_wait_closed(&a, 2000));
    int found = 0;
    CHECK(lookup_count("quiet@example.com", &found) == WSASERVICE_NOT_FOUND);
    uint64_t h;
    CHECK(tclient_begin(&b, "*@example.com", &h) == WSASERVICE_NOT_FOUND); /* b still served */
    nspv2_server_stats st = sstats(id);
    CHECK(st.ended_keepalive == 1 && st.sessions_rundown == 1);
    CHECK(strstr(log_text(), "disconnected: stopped answering: nothing received for 300 ms") !=
          NULL);
    CHECK(tclient_goodbye(&b) == NO_ERROR);
    tclient_close(&a);
    tclient_close(&b);
    stop_server(id);
}

TEST(server_max_clients)
{
    uint64_t id = start_server(2, 2, 0, 0);
    tclient a, b, c;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_open(&b) == 0);
    CHECK(tclient_connect(&c) == 0);
    CHECK(tclient_hello(&c, NSPV2_WIRE_ROLE_CLIENT) == WSAEPROCLIM);
    CHECK(c.rep.h.type == NSPV2_WIRE_ERROR);
    CHECK(tclient_wait_closed(&c, 2000));
    tclient_close(&c);
    nspv2_server_stats st = sstats(id);
    CHECK(st.refused == 1 && st.accepted == 2 && st.open_now == 2);
    CHECK(strstr(log_text(), "refused a client (pid ") != NULL);
    CHECK(strstr(log_text(), "too many clients (2 connected)") != NULL);
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    tclient_close(&a);
    for (int i = 0; i < 500 && sstats(id).open_now != 1; i++)
        nspv2_sleep_ms(10);
    CHECK(tclient_open(&c) == 0); /* room again */
    CHECK(tclient_goodbye(&c) == NO_ERROR);
    CHECK(tclient_goodbye(&b) == NO_ERROR);
    tclient_close(&b);
    tclient_close(&c);
    stop_server(id);
}

/* a lookup on the test provider whose NextEx never completes: the NEXT
 * request stays in flight (until the host's timeout) */
static void begin_deferred(tclient *t, uint64_t *h, uint32_t next_id)
{
    CHECK(tclient_begin_in(t, TP_NAMESPACE, &tp_id, "x", h) == NO_ERROR);
    uint8_t f[64];
    size_t n = nspv2_wire_encode_next(f, sizeof f, next_id, *h, 0, 4096);
    CHECK(tclient_raw(t, f, n) == 0);
    CHECK(tp_wait_deferred() != NULL);
}

TEST(server_in_flight_limit_and_ids)
{
    uint64_t id = start_server(2, 0, 1, 0);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    uint64_t h;
    nspv2_host_stats before = stats();
    begin_deferred(&a, &h, 100);
    uint8_t f[64];
    size_t n = nspv2_wire_encode_end(f, sizeof f, 101, h); /* a second request: one too many */
    CHECK(tclient_raw(&a, f, n) == 0);
    CHECK(tclient_error(&a, 3000) == WSANO_RECOVERY);
    CHECK(strstr((const char *)a.rep.tail, "more than 1 requests in flight") != NULL);
    CHECK(tclient_wait_closed(&a, 3000));
    tclient_close(&a);
    WAIT_STAT(id, sessions_rundown, 1);
    CHECK(sstats(id).ended_protocol == 1);
    CHECK(stats().rundowns == before.rundowns + 1); /* the test provider's session */
    CHECK(strstr(log_text(), "disconnected: protocol error: more than 1 requests in flight") !=
          NULL);
    stop_server(id);

    /* a request id already in flight */
    id = start_server(2, 0, 0, 0);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    CHECK(tclient_open(&a) == 0);
    begin_deferred(&a, &h, 7);
    n = nspv2_wire_encode_end(f, sizeof f, 7, h);
    CHECK(tclient_raw(&a, f, n) == 0);
    CHECK(tclient_error(&a, 3000) == WSANO_RECOVERY);
    CHECK(strstr((const char *)a.rep.tail, "request id 7 is already in flight") != NULL);
    tclient_close(&a);
    stop_server(id);
}

TEST(server_protocol_errors_end_only_that_client)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient b;
    CHECK(tclient_open(&b) == 0);
    CHECK(tclient_sign_in(&b, "steady@example.com") == NO_ERROR);
    enum { N_BAD = 5 };
    for (int k = 0; k < N_BAD; k++) {
        tclient a;
        CHECK(tclient_connect(&a) == 0);
        CHECK(tclient_hello(&a, k == 4 ? NSPV2_WIRE_ROLE_MONITOR : NSPV2_WIRE_ROLE_CLIENT) == 0);
        uint8_t f[256];
        size_t n = 0;
        if (k == 0) { /* non-zero flags */
            n = nspv2_wire_encode_end(f, sizeof f, 9, 1);
            f[6] = 1;
        } else if (k == 1) { /* HELLO again */
            n = nspv2_wire_encode_hello(f, sizeof f, 9, NSPV2_WIRE_ROLE_CLIENT);
        } else if (k == 2) { /* an image whose string has no NUL */
            WSAQUERYSETW q = query(NS_EMAIL, NULL, "x@example.com");
            uint8_t *img;
            size_t isz;
            CHECK(image_of(&q, &img, &isz) == 0);
            for (size_t i = sizeof(WSAQUERYSETW); i < isz; i++)
                img[i] = 'x';
            n = nspv2_wire_encode_begin(f, sizeof f, 9, 0, img, (uint32_t)isz);
            free(img);
        } else if (k == 3) { /* a length that does not match the type */
            n = nspv2_wire_encode_end(f, sizeof f, 9, 1);
            uint32_t len = (uint32_t)n + 4;
            memcpy(f, &len, 4);
            memset(f + n, 0, 4);
            n += 4;
        } else { /* a monitor asking for a lookup */
            n = nspv2_wire_encode_end(f, sizeof f, 9, 1);
        }
        CHECK(n > 0 && tclient_raw(&a, f, n) == 0);
        CHECK(tclient_error(&a, 3000) == WSANO_RECOVERY);
        CHECK(tclient_wait_closed(&a, 3000));
        tclient_close(&a);
        int found = 0; /* everyone else is served as before */
        CHECK(lookup_count("steady@example.com", &found) == NO_ERROR && found == 1);
    }
    WAIT_STAT(id, ended_protocol, N_BAD - 1);
    nspv2_server_stats st = sstats(id);
    CHECK(st.ended_protocol == N_BAD - 1); /* the monitor had no session */
    CHECK(st.sessions_rundown == N_BAD - 1);
    /* before HELLO: refused */
    tclient a;
    CHECK(tclient_connect(&a) == 0);
    uint8_t f[64];
    size_t n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_STATUS, 1);
    CHECK(tclient_raw(&a, f, n) == 0);
    CHECK(tclient_error(&a, 3000) == WSANO_RECOVERY);
    CHECK(strstr((const char *)a.rep.tail, "bad HELLO") != NULL);
    tclient_close(&a);
    CHECK(sstats(id).refused == 1);
    CHECK(tclient_goodbye(&b) == NO_ERROR);
    tclient_close(&b);
    stop_server(id);
}

TEST(server_status)
{
    uint64_t id = start_server(3, 0, 0, 0);
    advertise_tp();
    tclient a, m;
    CHECK(tclient_open(&a) == 0);
    CHECK(a.rep.n_providers == 2);
    CHECK(tclient_sign_in(&a, "dave@example.com") == NO_ERROR);
    uint64_t h;
    CHECK(tclient_begin(&a, "dave@example.com", &h) == NO_ERROR);
    CHECK(tclient_connect(&m) == 0);
    CHECK(tclient_hello(&m, NSPV2_WIRE_ROLE_MONITOR) == 0);
    char *j = tclient_status(&m);
    CHECK(j != NULL);
    if (j) {
        char want[160];
        snprintf(want, sizeof want, "{\"version\": 1, \"server_pid\": %ld, \"uid\": %u, ",
                 (long)getpid(), (unsigned)geteuid());
        CHECK(strncmp(j, want, strlen(want)) == 0);
        CHECK(strstr(j, "\"keepalive_ms\": 5000, \"threads\": 3, \"max_clients\": 64, "
                        "\"max_in_flight\": 8") != NULL);
        CHECK(strstr(j, "{\"id\": \"6e737032-7265-4600-8a1f-5245464e5350\", \"namespace\": 37, "
                        "\"name\": \"ref\"}") != NULL);
        CHECK(strstr(j, "\"namespace\": 15, \"name\": \"tp\"}") != NULL);
        CHECK(count_of(j, "\"role\": \"client\"") == 1); /* the monitor is not listed */
        CHECK(strstr(j, "\"clients\": [{\"connection\": 1, ") != NULL);
        CHECK(strstr(j, "\"providers_started\": 1, \"lookups_open\": 1, \"in_flight\": 0, "
                        "\"requests\": 2, ") != NULL);
        CHECK(strstr(j, "\"ended\": [], ") != NULL);
        CHECK(strstr(j, "\"stats\": {\"accepted\": 2, \"refused\": 0, \"open_now\": 2, "
                        "\"sessions_opened\": 1, ") != NULL);
    }
    free(j);
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    tclient_close(&a);
    WAIT_STAT(id, sessions_cleanup, 1);
    /* the API: the size first, then the text */
    uint32_t len = 0;
    CHECK_ERR(nspv2_server_status(id, NULL, &len), WSAEFAULT);
    CHECK(len > 100);
    char *text = calloc(len + 1, 1);
    uint32_t room = len - 1;
    CHECK_ERR(nspv2_server_status(id, text, &room), WSAEFAULT);
    CHECK(room == len);
    CHECK_OK(nspv2_server_status(id, text, &len));
    CHECK(strstr(text, "\"clients\": [], ") != NULL);
    CHECK(strstr(text, "\"session\": ") != NULL);
    CHECK(strstr(text, "\"how\": \"cleanup\", \"reason\": null, \"detail\": \"orderly close\", "
                       "\"ended\": ") != NULL);
    free(text);
    CHECK(strstr(log_text(), "client #2") == NULL); /* monitors are not logged */
    tclient_close(&m);
    stop_server(id);
}

TEST(server_slow_call_does_not_stop_others)
{
    uint64_t id = start_server(2, 0, 0, 0);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    uint64_t h;
    begin_deferred(&a, &h, 50); /* holds one of the two threads */
    uint64_t t0 = nspv2_now_ns();
    int found = -1;
    CHECK(lookup_count("nobody@example.com", &found) == WSASERVICE_NOT_FOUND);
    CHECK(nspv2_now_ns() - t0 < 2000000000ull); /* not behind the 5 s wait */
    /* stop with that call in flight: the rundown cancels it, stop returns */
    nspv2_host_stats before = stats();
    t0 = nspv2_now_ns();
    CHECK_OK(nspv2_server_stop(id));
    CHECK(nspv2_now_ns() - t0 < 3000000000ull);
    CHECK(stats().rundowns == before.rundowns + 1);
    CHECK(tclient_wait_closed(&a, 2000));
    tclient_close(&a);
    for (int i = 0; i < 2; i++)
        close(g_log[i]);
    g_log[0] = g_log[1] = -1;
    g_loglen = 0;
    remove_dir();
    fresh();
}

/* client threads: connect, sign in, look up, then GOODBYE or just close */
typedef struct cycler {
    int index, cycles;
    int failures;
} cycler;

static void cycler_main(void *p)
{
    cycler *cy = p;
    for (int i = 0; i < cy->cycles; i++) {
        tclient t;
        char name[64];
        snprintf(name, sizeof name, "c%d-%d@example.com", cy->index, i);
        if (tclient_open(&t) != 0) {
            cy->failures++;
            tclient_close(&t);
            continue;
        }
        uint64_t h;
        result_buf buf;
        if (tclient_sign_in(&t, name) != NO_ERROR || tclient_begin(&t, name, &h) != NO_ERROR ||
            tclient_next(&t, h, 4096, &buf) != NO_ERROR)
            cy->failures++;
        if (i % 3 == 2) {
            tclient_close(&t); /* vanished: rundown */
            continue;
        }
        if (tclient_goodbye(&t) != NO_ERROR)
            cy->failures++;
        tclient_close(&t);
    }
}

TEST(server_threads_books)
{
    uint64_t id = start_server(4, 0, 0, 0);
    enum { NT = 6, CYCLES = 30 };
    nspv2_thread th[NT];
    cycler cy[NT];
    for (int i = 0; i < NT; i++) {
        cy[i] = (cycler){i, CYCLES, 0};
        CHECK(nspv2_thread_create(&th[i], cycler_main, &cy[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < NT; i++) {
        nspv2_thread_join(th[i]);
        failures += cy[i].failures;
    }
    CHECK(failures == 0);
    for (int i = 0; i < 500; i++) {
        nspv2_server_stats st = sstats(id);
        if (st.sessions_cleanup + st.sessions_rundown >= NT * CYCLES)
            break;
        nspv2_sleep_ms(10);
    }
    nspv2_server_stats st = sstats(id);
    CHECK(st.sessions_opened == NT * CYCLES);
    CHECK(st.sessions_cleanup == NT * CYCLES * 2 / 3);
    CHECK(st.sessions_rundown == NT * CYCLES / 3);
    CHECK(st.open_now == 0);
    nspv2_host_stats hs = stats();
    CHECK(hs.sessions_open == 0 && hs.lookups_open == 0);
    CHECK(hs.startups == hs.cleanups + hs.rundowns);
    CHECK(hs.cleanups == st.sessions_cleanup && hs.rundowns == st.sessions_rundown);
    printf("     server books: %d client threads x %d cycles: %" PRIu64 " cleanups, %" PRIu64
           " rundowns, %" PRIu64 " requests, queue peak %" PRIu64 "\n",
           NT, CYCLES, st.sessions_cleanup, st.sessions_rundown, st.requests, st.queue_peak);
    stop_server(id);
}

TEST(server_start_arguments)
{
    fresh();
    make_dir();
    nspv2_server_config cfg = {0};
    cfg.log_fd = -1;
    uint64_t id = 0;
    CHECK_ERR(nspv2_server_start(NULL, &id), WSAEFAULT);
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEFAULT); /* no path */
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    cfg.socket_path = longp;
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEINVAL);
    cfg.socket_path = g_path;
    /* limits: beyond them WSAEINVAL (max_clients + the monitors' places
     * must not wrap around) */
    cfg.max_clients = UINT32_MAX;
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEINVAL);
    cfg.max_clients = NSPV2_SERVER_MAX_CLIENTS + 1u;
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEINVAL);
    cfg.max_clients = 0;
    cfg.keepalive_ms = 3600001u;
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEINVAL);
    cfg.keepalive_ms = 0;
    cfg.threads = 1025u;
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEINVAL);
    cfg.threads = 0;
    CHECK_OK(nspv2_server_start(&cfg, &id));
    uint64_t id2 = 0;
    CHECK_ERR(nspv2_server_start(&cfg, &id2), WSAEADDRINUSE); /* someone accepts there */
    CHECK_OK(nspv2_server_stop(id));
    /* a socket nobody accepts on is removed */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_path);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    close(fd);
    CHECK_OK(nspv2_server_start(&cfg, &id));
    struct stat st;
    CHECK(lstat(g_path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(nspv2_server_stop(id));
    /* not a socket: left alone */
    FILE *f = fopen(g_path, "w");
    if (f)
        fclose(f);
    CHECK_ERR(nspv2_server_start(&cfg, &id), WSAEADDRINUSE);
    CHECK(lstat(g_path, &st) == 0 && S_ISREG(st.st_mode));
    remove_dir();
}


/* A child process of another uid connects and says HELLO: its exit status
 * is 0 when it got HELLO_REPLY, 2 when ERROR with WSAEACCES, 1 otherwise.
 * Root only (setuid); *pid the child's. */
static int hello_as_uid(uint32_t uid, pid_t *pid)
{
    *pid = fork();
    if (*pid == 0) {
        if (setgid((gid_t)uid) != 0 || setuid((uid_t)uid) != 0)
            _exit(1);
        tclient t;
        if (tclient_connect(&t) != 0)
            _exit(1);
        int r = tclient_hello(&t, NSPV2_WIRE_ROLE_CLIENT);
        _exit(r == 0 ? 0 : r == WSAEACCES && t.rep.h.type == NSPV2_WIRE_ERROR ? 2 : 1);
    }
    int status = 0;
    if (*pid < 0 || waitpid(*pid, &status, 0) != *pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

TEST(server_peer_credentials)
{
    if (geteuid() != 0) {
        printf("     skipped: needs root to connect as another uid\n");
        return;
    }
    const uint32_t other = 65534;
    uint64_t id = start_server(2, 0, 0, 0);
    /* the file permissions would let it in: the peer's uid is what counts */
    CHECK(chmod(g_dir, 0755) == 0 && chmod(g_path, 0666) == 0);
    pid_t child;
    CHECK(hello_as_uid(other, &child) == 2);
    nspv2_server_stats st = sstats(id);
    CHECK(st.refused == 1 && st.accepted == 0 && st.sessions_opened == 0);
    char want[160];
    snprintf(want, sizeof want,
             "refused a client (pid %ld, uid %u): uid %u may not use this provider process (it "
             "serves uid 0)\n",
             (long)child, (unsigned)other, (unsigned)other);
    CHECK(strstr(log_text(), want) != NULL);
    /* the server's own uid still gets in */
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    tclient_close(&a);
    stop_server(id);

    /* allow_uids lets it in */
    g_allow = &other;
    g_nallow = 1;
    id = start_server(2, 0, 0, 0);
    g_allow = NULL;
    g_nallow = 0;
    CHECK(chmod(g_dir, 0755) == 0 && chmod(g_path, 0666) == 0);
    CHECK(hello_as_uid(other, &child) == 0);
    WAIT_STAT(id, sessions_rundown, 1); /* it exited without GOODBYE */
    st = sstats(id);
    CHECK(st.refused == 0 && st.accepted == 1 && st.sessions_rundown == 1);
    snprintf(want, sizeof want, "client #1 (pid %ld, uid %u) connected\n", (long)child,
             (unsigned)other);
    CHECK(strstr(log_text(), want) != NULL);
    stop_server(id);
}


/* Regression: after a frame larger than the next ones (a registration),
 * two requests in one write were read as one (the reader read past the
 * first frame's end into its buffer) and the second was never answered. */
TEST(server_pipelined_requests)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_sign_in(&a, "pipe@example.com") == NO_ERROR);
    for (uint32_t first = 10; first < 16; first += 2) {
        uint8_t f[128];
        size_t n = nspv2_wire_encode_end(f, sizeof f, first, 0xDEAD);
        n += nspv2_wire_encode_end(f + n, sizeof f - n, first + 1, 0xBEEF);
        CHECK(tclient_raw(&a, f, n) == 0);
        uint32_t got = 0;
        for (int k = 0; k < 2; k++) {
            CHECK(tclient_recv(&a, 3000) == 0);
            CHECK(a.rep.code == WSA_INVALID_HANDLE);
            got |= 1u << (a.rep.h.request_id - first);
        }
        CHECK(got == 3);
    }
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    tclient_close(&a);
    stop_server(id);
}

/* A client that sends requests and never reads the replies: the workers
 * never wait on its socket (replies wait in its queue for the I/O thread),
 * so everyone else is served at once; its requests stay in flight until
 * written, so the in-flight limit ends it (regression: a worker blocked in
 * send for 3 x keepalive and the others queued behind its write lock). */
TEST(server_client_that_does_not_read)
{
    uint64_t id = start_server(2, 0, 0, 1000); /* a stalled write could last 3 s */
    tclient a;
    CHECK(tclient_open(&a) == 0);
    uint64_t worst = 0;
    uint32_t rid = 10, sent = 0;
    int a_alive = 1;
    for (int round = 0; round < 400 && a_alive; round++) {
        for (int k = 0; k < 3; k++) { /* small replies, many frames, never read */
            uint8_t f[64];
            size_t n = nspv2_wire_encode_end(f, sizeof f, rid++, 0xDEAD);
            ssize_t r = send(a.fd, f, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r == (ssize_t)n)
                sent++;
            else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                a_alive = 0; /* ended by the server */
        }
        uint64_t t0 = nspv2_now_ns();
        int found = -1;
        CHECK(lookup_count("nobody@example.com", &found) == WSASERVICE_NOT_FOUND);
        uint64_t dt = nspv2_now_ns() - t0;
        if (dt > worst)
            worst = dt;
        if (dt > 500000000ull)
            break; /* stalled behind it: failed already */
    }
    printf("     a client that does not read: %u requests sent; worst other lookup %.3f s\n",
           (unsigned)sent, (double)worst / 1e9);
    CHECK(worst < 500000000ull);
    WAIT_STAT(id, ended_protocol, 1);
    CHECK(sstats(id).ended_protocol == 1);
    CHECK(tclient_error(&a, 2000) == WSANO_RECOVERY || a_alive == 0);
    tclient_close(&a);
    stop_server(id);
}

/* GOODBYE while an earlier call waits in the provider: the connection is
 * still watched. A hang-up runs the session down at once (cancelling the
 * call), status stops listing it; silence past the keepalive deadline does
 * too; KEEPALIVE after GOODBYE is fine; stop ends such a connection and
 * does not wait for the provider (regression: it left the poll set and
 * nothing noticed it until the call returned). */
TEST(server_goodbye_while_a_call_waits)
{
    /* 1. a hang-up */
    uint64_t id = start_server(2, 0, 0, 100);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    tclient a, m;
    CHECK(tclient_open(&a) == 0);
    uint64_t h;
    uint8_t ka[16], gb[16];
    size_t kn = nspv2_wire_encode_empty(ka, sizeof ka, NSPV2_WIRE_KEEPALIVE, 0);
    size_t gn = nspv2_wire_encode_empty(gb, sizeof gb, NSPV2_WIRE_GOODBYE, 60);
    begin_deferred(&a, &h, 50);
    nspv2_host_stats before = stats();
    CHECK(tclient_raw(&a, gb, gn) == 0);
    for (int i = 0; i < 12; i++) { /* 600 ms of KEEPALIVE after GOODBYE: kept */
        CHECK(tclient_raw(&a, ka, kn) == 0);
        nspv2_sleep_ms(50);
    }
    CHECK(sstats(id).sessions_rundown == 0 && sstats(id).open_now == 1);
    uint64_t t0 = nspv2_now_ns();
    tclient_close(&a); /* the process dies before GOODBYE_REPLY */
    WAIT_STAT(id, sessions_rundown, 1);
    CHECK(nspv2_now_ns() - t0 < 2000000000ull); /* not when the call times out */
    nspv2_server_stats st = sstats(id);
    CHECK(st.sessions_rundown == 1 && st.sessions_cleanup == 0 && st.ended_disconnect == 1);
    CHECK(stats().rundowns == before.rundowns + 1 && stats().cleanups == before.cleanups);
    CHECK(tclient_connect(&m) == 0 && tclient_hello(&m, NSPV2_WIRE_ROLE_MONITOR) == 0);
    char *j = tclient_status(&m);
    CHECK(j != NULL && strstr(j, "\"clients\": [], ") != NULL);
    free(j);
    tclient_close(&m);
    CHECK(strstr(log_text(), "disconnected: connection closed before GOODBYE_REPLY\n") != NULL);
    CHECK(strstr(log_text(), "ended: rundown, OTHER_COMMUNICATION_ERROR (client disconnected "
                             "before GOODBYE_REPLY)\n") != NULL);
    stop_server(id);

    /* 2. silence after GOODBYE */
    id = start_server(2, 0, 0, 100);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    CHECK(tclient_open(&a) == 0);
    begin_deferred(&a, &h, 50);
    CHECK(tclient_raw(&a, gb, gn) == 0);
    t0 = nspv2_now_ns();
    CHECK(tclient_error(&a, 2000) == WSAETIMEDOUT);
    CHECK(nspv2_now_ns() - t0 < 2000000000ull);
    WAIT_STAT(id, sessions_rundown, 1);
    CHECK(sstats(id).ended_keepalive == 1 && sstats(id).sessions_cleanup == 0);
    tclient_close(&a);
    stop_server(id);

    /* 3. stop */
    id = start_server(2, 0, 0, 0);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    CHECK(tclient_open(&a) == 0);
    begin_deferred(&a, &h, 50);
    CHECK(tclient_raw(&a, gb, gn) == 0);
    nspv2_sleep_ms(100);
    before = stats();
    t0 = nspv2_now_ns();
    CHECK_OK(nspv2_server_stop(id));
    CHECK(nspv2_now_ns() - t0 < 2000000000ull);
    CHECK(stats().rundowns == before.rundowns + 1 && stats().cleanups == before.cleanups);
    CHECK(tclient_wait_closed(&a, 2000));
    CHECK(count_of(log_text(), "ended: rundown, PLATFORM_SHUTDOWN (server stopping)") == 1);
    tclient_close(&a);
    for (int i = 0; i < 2; i++)
        close(g_log[i]);
    g_log[0] = g_log[1] = -1;
    g_loglen = 0;
    remove_dir();
    fresh();
}

/* Monitors do not count toward max_clients (a full server still answers
 * `nspv2 status`); they have 4 places of their own, and are not logged
 * even when refused (regression: a monitor was refused and logged as a
 * client on a full server). */
TEST(server_monitors_on_a_full_server)
{
    uint64_t id = start_server(2, 1, 0, 0);
    tclient a, b, m[5];
    CHECK(tclient_open(&a) == 0);
    for (int i = 0; i < 4; i++) {
        CHECK(tclient_connect(&m[i]) == 0);
        CHECK(tclient_hello(&m[i], NSPV2_WIRE_ROLE_MONITOR) == 0);
        char *j = tclient_status(&m[i]);
        CHECK(j != NULL && strstr(j, "\"max_clients\": 1, ") != NULL);
        free(j);
    }
    CHECK(tclient_connect(&m[4]) == 0);
    CHECK(tclient_hello(&m[4], NSPV2_WIRE_ROLE_MONITOR) == WSAEPROCLIM);
    CHECK(strstr((const char *)m[4].rep.tail, "too many monitors") != NULL);
    CHECK(tclient_connect(&b) == 0);
    CHECK(tclient_hello(&b, NSPV2_WIRE_ROLE_CLIENT) == WSAEPROCLIM);
    const char *log = log_text();
    CHECK(count_of(log, "refused a client") == 1 && strstr(log, "too many clients (1 connected)"));
    CHECK(strstr(log, "monitor") == NULL);
    CHECK(sstats(id).refused == 2 && sstats(id).open_now == 5);
    for (int i = 0; i < 5; i++)
        tclient_close(&m[i]);
    tclient_close(&b);
    CHECK(tclient_goodbye(&a) == NO_ERROR);
    tclient_close(&a);
    stop_server(id);
}

/* STATUS is answered by the I/O thread: with every worker held by a slow
 * call, a monitor still gets its answer (regression: it queued behind the
 * workers). */
TEST(server_status_while_every_worker_is_busy)
{
    uint64_t id = start_server(1, 0, 0, 0);
    advertise_tp();
    tp_set_mode(TP_DEFER);
    tclient a, m;
    CHECK(tclient_open(&a) == 0);
    uint64_t h;
    begin_deferred(&a, &h, 50); /* the only worker waits on the provider */
    CHECK(tclient_connect(&m) == 0 && tclient_hello(&m, NSPV2_WIRE_ROLE_MONITOR) == 0);
    uint8_t f[64];
    size_t n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_STATUS, 9);
    uint64_t t0 = nspv2_now_ns();
    CHECK(tclient_raw(&m, f, n) == 0);
    CHECK(tclient_recv(&m, 1000) == 0);
    CHECK(m.rep.h.type == (NSPV2_WIRE_STATUS | NSPV2_WIRE_REPLY) && m.rep.code == NO_ERROR);
    CHECK(nspv2_now_ns() - t0 < 1000000000ull);
    CHECK(m.rep.tail_size > 0 && strstr((const char *)m.rep.tail, "\"in_flight\": 1, ") != NULL);
    tclient_close(&m);
    tclient_close(&a);
    stop_server(id);
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33) &&                         \
    !defined(__SANITIZE_ADDRESS__) && !defined(NSPV2_ASAN)
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

/* A frame's buffer grows with what arrives, only when full (regression:
 * it doubled at every recv, so a header claiming 4 MiB and a few bytes at
 * a time took 4 MiB). Measured with mallinfo2 (not under ASan). */
TEST(server_read_buffer_grows_only_when_full)
{
#if defined(HAVE_MALLINFO2)
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    uint8_t hdr[NSPV2_WIRE_HEADER];
    size_t n = nspv2_wire_encode_empty(hdr, sizeof hdr, NSPV2_WIRE_STATUS, 2);
    CHECK(n == sizeof hdr);
    uint32_t len = NSPV2_WIRE_MAX_FRAME;
    memcpy(hdr, &len, 4);
    struct mallinfo2 m0 = mallinfo2();
    CHECK(tclient_raw(&a, hdr, sizeof hdr) == 0);
    for (int i = 0; i < 16; i++) { /* one byte per recv */
        nspv2_sleep_ms(15);
        uint8_t z = 0;
        CHECK(tclient_raw(&a, &z, 1) == 0);
    }
    nspv2_sleep_ms(50);
    struct mallinfo2 m1 = mallinfo2();
    size_t grew = (m1.uordblks + m1.hblkhd) - (m0.uordblks + m0.hblkhd);
    if ((m1.uordblks + m1.hblkhd) < (m0.uordblks + m0.hblkhd))
        grew = 0;
    printf("     16 bytes of a 4 MiB frame: the heap grew by %zu bytes\n", grew);
    CHECK(grew < 1024u * 1024u);
    tclient_close(&a);
    stop_server(id);
#endif
}

/* The end's detail is one phrase (regression: "client disconnected without
 * GOODBYE (connection closed without GOODBYE)" and the like). */
TEST(server_rundown_detail_is_one_phrase)
{
    uint64_t id = start_server(2, 0, 0, 0);
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_sign_in(&a, "reset@example.com") == NO_ERROR);
    uint8_t f[64];
    size_t n = nspv2_wire_encode_end(f, sizeof f, 77, 0xDEAD);
    CHECK(tclient_raw(&a, f, n) == 0);
    nspv2_sleep_ms(100);
    tclient_close(&a); /* its reply unread: the server's read is reset */
    WAIT_STAT(id, sessions_rundown, 1);
    tclient m;
    CHECK(tclient_connect(&m) == 0 && tclient_hello(&m, NSPV2_WIRE_ROLE_MONITOR) == 0);
    char *j = tclient_status(&m);
    CHECK(j != NULL);
    const char *d = j ? strstr(j, "\"detail\": \"client ") : NULL;
    CHECK(d != NULL);
    if (d) {
        const char *end = strchr(d + 11, '"');
        const char *open = strchr(d, '(');
        printf("     %.*s\n", end ? (int)(end - d + 1) : 40, d);
        CHECK(open == NULL || open > end);       /* no parenthesis in the detail */
        CHECK(strncmp(d, "\"detail\": \"client disconnected without GOODBYE\"", 48) == 0 ||
              strncmp(d, "\"detail\": \"client connection lost: ", 35) == 0);
    }
    free(j);
    tclient_close(&m);
    CHECK(strstr(log_text(), "GOODBYE (") == NULL);
    stop_server(id);
}


/* GOODBYE from a client with replies still queued (it stopped reading),
 * while the provider's Cleanup takes its time: the I/O thread waits in
 * poll() for the worker, it does not spin (regression: the queued output's
 * "no reply taken" deadline had passed, poll() got a timeout of 0 and the
 * I/O thread ran a core flat out until Cleanup returned). */
static LPNSPV2CLEANUP g_real_cleanup;
static INT WSAAPI slow_cleanup(LPGUID id, LPVOID arg)
{
    nspv2_sleep_ms(2000);
    return g_real_cleanup(id, arg);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(server_goodbye_with_replies_queued_and_a_slow_cleanup)
{
    uint64_t id = start_server(2, 0, 0, 100); /* no reply taken for 300 ms: past */
    NSPV2_ROUTINE r;
    nspv2_ref_provider_routine(&r);
    g_real_cleanup = r.NSPv2Cleanup;
    r.NSPv2Cleanup = slow_cleanup;
    CHECK_OK(WSAUnadvertiseProvider(&nspv2_ref_provider_id));
    CHECK_OK(WSAAdvertiseProvider(&nspv2_ref_provider_id, &r));
    tclient a;
    CHECK(tclient_open(&a) == 0);
    CHECK(tclient_sign_in(&a, "slow@example.com") == NO_ERROR); /* Startup: Cleanup follows */
    /* STATUS until the replies stop arriving: the socket is full, the rest
     * wait in the server's queue (within the in-flight limit) */
    uint32_t rid = 100;
    int prev = -1, stuck = 0;
    for (int i = 0; i < 2000 && stuck < 3; i++) {
        uint8_t f[NSPV2_WIRE_HEADER];
        size_t n = nspv2_wire_encode_empty(f, sizeof f, NSPV2_WIRE_STATUS, rid++);
        CHECK(tclient_send(&a, f, n) == 0);
        nspv2_sleep_ms(5);
        int unread = 0;
        ioctl(a.fd, FIONREAD, &unread);
        stuck = unread == prev ? stuck + 1 : 0;
        prev = unread;
    }
    CHECK(stuck == 3);
    uint8_t g[NSPV2_WIRE_HEADER];
    size_t n = nspv2_wire_encode_empty(g, sizeof g, NSPV2_WIRE_GOODBYE, rid++);
    CHECK(tclient_send(&a, g, n) == 0);
    nspv2_sleep_ms(500); /* past the 300 ms with nothing taken */
    double c0 = cpu_seconds();
    nspv2_sleep_ms(1000); /* Cleanup still sleeps */
    double used = cpu_seconds() - c0;
    printf("     CPU while a GOODBYE's Cleanup runs with replies queued: %.3f s in 1 s\n", used);
    CHECK(used < 0.3);
    WAIT_STAT(id, sessions_cleanup, 1);
    CHECK(sstats(id).sessions_cleanup == 1 && sstats(id).sessions_rundown == 0);
    tclient_close(&a);
    stop_server(id);
}

void run_server_tests(void)
{
    RUN(server_hello_and_the_four_calls);
    RUN(server_disconnect_runs_the_session_down);
    RUN(server_stop_runs_open_sessions_down);
    RUN(server_keepalive_deadline);
    RUN(server_max_clients);
    RUN(server_in_flight_limit_and_ids);
    RUN(server_protocol_errors_end_only_that_client);
    RUN(server_status);
    RUN(server_slow_call_does_not_stop_others);
    RUN(server_threads_books);
    RUN(server_start_arguments);
    RUN(server_peer_credentials);
    RUN(server_pipelined_requests);
    RUN(server_client_that_does_not_read);
    RUN(server_goodbye_while_a_call_waits);
    RUN(server_monitors_on_a_full_server);
    RUN(server_status_while_every_worker_is_busy);
    RUN(server_read_buffer_grows_only_when_full);
    RUN(server_rundown_detail_is_one_phrase);
    RUN(server_goodbye_with_replies_queued_and_a_slow_cleanup);
}

#else
void run_server_tests(void) {}
#endif
