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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
static INT tclient_begin(tclient *t, const char *name, uint64_t *h)
{
    WSAQUERYSETW q = query(NS_EMAIL, &nspv2_ref_provider_id, name);
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

/* ------------------------------------------------------------------------ */
/* the server under test                                                     */

static int g_log[2] = {-1, -1}; /* a pipe: the server logs into [1] */

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

void run_server_tests(void)
{
    RUN(server_hello_and_the_four_calls);
    RUN(server_disconnect_runs_the_session_down);
    RUN(server_stop_runs_open_sessions_down);
}

#else
void run_server_tests(void) {}
#endif
