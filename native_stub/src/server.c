/*
 * server.c - serving client processes (nspv2_host.h, "provider process"):
 * a Unix domain socket, one I/O thread, a pool of worker threads.
 *
 * Threads
 * -------
 *   I/O thread  accept(); peer credentials; poll() over the listening
 *               socket, a wake pipe and every connection; frame reassembly;
 *               decoding (wire.c); HELLO (session open, HELLO_REPLY); the
 *               order and in-flight checks; STATUS (answered here, so a
 *               monitor is answered while every worker is busy); keepalive
 *               deadlines; and every write to a client socket: replies wait
 *               in their connection's output queue and are sent without
 *               blocking when the socket takes them (POLLOUT). It never
 *               calls a provider (HELLO's nspv2_session_open does not) and
 *               never blocks on a client.
 *   workers     take work from the server's queue: first connections to
 *               end (their "end task"), then requests in FIFO order. They
 *               call the host's client API, queue the replies on their
 *               connection (never touching its socket), and end sessions
 *               (nspv2_session_close / _abandon, which may call providers'
 *               Cleanup / Rundown).
 *
 * A request counts against its connection's in-flight limit from the moment
 * it is read until its reply is entirely written to the socket, so a
 * connection's output queue holds at most max_in_flight replies (plus
 * HELLO_REPLY and GOODBYE_REPLY); past SRV_OUT_CAP bytes unsent (or what
 * max_in_flight + 2 of the largest frames take, if more), or with
 * nothing taken for 3 x keepalive while replies wait, the client is ended
 * (it stopped reading its replies) and its session run down.
 *
 * Locks (order: g_servers_lock -> srv.lock -> host_g.lock; nothing here is
 * held while a provider runs except through the host's own calls, which
 * take only host_g.lock):
 *   g_servers_lock  the table of running servers (ids -> server).
 *   srv.lock        every field of srv and of its conns marked [S] below;
 *                   srv.cv wakes workers. The I/O thread sends (non-blocking)
 *                   under it.
 *   [I] fields      belong to the I/O thread alone (no lock).
 *   [C] fields      constant after the connection was accepted.
 *
 * Ownership
 * ---------
 * A conn is reference counted under srv.lock: the I/O thread's reference
 * (from accept until it sees the conn ended), one per request queued or
 * running (the parked GOODBYE included), one for a queued or running end
 * task. Whoever drops the last one frees it (conn_unref_L): it leaves
 * srv.conns and its socket is closed there and only there, so no thread
 * can write to a descriptor number that was reused. Ending a connection
 * (conn_end_L: the first of disconnect, keepalive, protocol error, refusal,
 * failed send, a client that stops reading, GOODBYE, stop wins) only marks
 * it and queues its end task; the I/O thread then sends what it can of the
 * queued output and the ERROR frame if any (without blocking) and shuts the
 * socket down (after GOODBYE: once GOODBYE_REPLY is written), while the end
 * task (a worker) ends the client session exactly once: nspv2_session_abandon
 * (Rundown) for everything but GOODBYE, whose worker runs
 * nspv2_session_close (Cleanup) itself before it answers. Calls of that
 * session still running in workers are the host's to cancel (a waiting
 * LookupServiceNextEx completes with WSA_E_CANCELLED, a provider session
 * ends when its last call returns); requests still queued for an ended
 * connection are dropped without reaching the host.
 *
 * The socket file is created by nspv2_server_start and unlinked by
 * nspv2_server_stop once the listening socket is closed (only if the path
 * still names the socket this server bound: a server started later at the
 * same path keeps its file).
 *
 * Windows has no such server (ws2_32 does this): the file compiles to
 * nothing there.
 */
#if !defined(_WIN32)

#define _GNU_SOURCE 1 /* SO_PEERCRED, struct ucred, pipe2, accept4 */

#include "host_internal.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef WSAEPROCLIM
#define WSAEPROCLIM (WSABASEERR + 67)
#endif

#define SRV_ENDED_RING 32u
#define SRV_TEXT 256u
#define SRV_REFUSE_MS 1000u /* a refused peer gets its ERROR by then */
#define SRV_READ_BURST 16   /* frames read from one connection per poll round */
#define SRV_MONITORS 4u     /* monitors (STATUS-only) at once, besides max_clients */
#define SRV_OUT_CAP (8u * NSPV2_WIRE_MAX_FRAME) /* unsent bytes per connection */

/* How a connection ended (conn.end_kind). */
enum {
    CE_NONE,
    CE_GOODBYE,    /* orderly: the GOODBYE worker closed the session */
    CE_DISCONNECT, /* the peer closed, or a read/write failed */
    CE_KEEPALIVE,  /* nothing received (or no reply taken) for 3 x keepalive */
    CE_PROTOCOL,   /* a malformed or out-of-order frame; SRV_OUT_CAP passed */
    CE_SHUTDOWN,   /* nspv2_server_stop */
    CE_REFUSED     /* never accepted: uid, too many clients, bad HELLO */
};

typedef struct srv srv;
typedef struct conn conn;

/* A frame waiting to be written (the I/O thread writes, from the head). */
typedef struct outf {
    struct outf *next;
    size_t len, off;  /* off: bytes already sent */
    uint32_t id;      /* the request it answers (counted) */
    int counted;      /* in flight until written */
    uint8_t data[];
} outf;

typedef struct req {
    struct req *next;
    conn *c;
    nspv2_wire_msg m; /* m.image is not used: see qs */
    uint8_t *qs;      /* LOOKUP_BEGIN / SET_SERVICE: the image, as pointers */
} req;

struct conn {
    srv *s;                   /* [C] */
    uint64_t num;             /* [C] connection number (#N in the log) */
    int fd;                   /* [C] closed only when the conn is freed */
    long pid;                 /* [C] peer credentials */
    uint32_t uid;             /* [C] */
    double connected;         /* [C] wall clock at accept */

    /* [I] I/O thread only */
    uint8_t hdr[NSPV2_WIRE_HEADER];
    uint8_t *rbuf;
    size_t have, need, rcap; /* need: 0 while reading the header */
    uint64_t last_rx_ns;
    uint64_t refuse_at_ns;    /* refusing: the ERROR is sent by then */

    /* [S] under srv.lock */
    conn *next;               /* srv.conns */
    unsigned refs;
    int hello;                /* HELLO accepted */
    int role;                 /* NSPV2_WIRE_ROLE_* once hello */
    int refusing;             /* refused at accept: ends at its first input */
    uint64_t session;         /* client session, 0 for none */
    int goodbye;              /* GOODBYE received: only KEEPALIVE may follow */
    req *goodbye_req;         /* parked until busy drops to 1 */
    int goodbye_done;         /* GOODBYE_REPLY queued: close once written */
    outf *out_head, *out_tail;/* frames to write, in order */
    size_t out_bytes;         /* unsent bytes queued */
    uint64_t out_progress_ns; /* last time the client took bytes (or queue start) */
    uint32_t in_flight;       /* requests accepted, reply not yet written */
    uint32_t busy;            /* requests queued or running, not yet done */
    uint32_t *ids;            /* request ids in flight (max_in_flight) */
    uint64_t *lookups;        /* lookup handles this connection owns */
    size_t nlookups, caplookups;
    uint64_t requests;        /* answered */
    int ended;                /* conn_end_L ran */
    int end_kind;             /* CE_* */
    int end_code;             /* ERROR frame to send (0: none) */
    char end_text[SRV_TEXT];  /* why */
    conn *end_next;           /* srv.end_head list */
};

typedef struct ended_rec {
    uint64_t conn, session;
    long pid;
    uint32_t uid;
    int cleanup;              /* 1: cleanup, 0: rundown */
    const char *reason;       /* NULL, "OTHER_COMMUNICATION_ERROR", "PLATFORM_SHUTDOWN" */
    char detail[SRV_TEXT];
    double ended;
} ended_rec;

struct srv {
    uint64_t id;                   /* [C] */
    nspv2_server_config cfg;       /* [C] (allow_uids and socket_path copied) */
    uint32_t *allow;               /* [C] */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* [C] */
    dev_t sock_dev;                /* [C] the socket file bound */
    ino_t sock_ino;
    int lfd;                       /* [I] listening socket, closed by the I/O thread */
    int wake[2];                   /* wake pipe: [0] read by the I/O thread */
    long pid;                      /* [C] */
    uint32_t euid;                 /* [C] */
    double started;                /* [C] */
    nspv2_thread io;
    nspv2_thread *workers;
    uint32_t nworkers;

    nspv2_mutex lock;
    nspv2_cond cv;                 /* workers: work queued or exit */
    /* [S] */
    int stopping;                  /* the I/O thread ends everything and exits */
    int workers_exit;              /* workers exit once the queues are empty */
    conn *conns;                   /* every conn not freed yet */
    uint64_t next_conn;
    uint32_t live;                 /* accepted or awaiting HELLO, not ended, not refusing */
    uint32_t nclients, nmonitors;  /* of which: past HELLO, by role */
    req *qhead, *qtail;            /* requests, FIFO */
    uint64_t qlen;
    conn *end_head, *end_tail;     /* end tasks, FIFO, before any request */
    nspv2_server_stats st;         /* (open_now is `live`) */
    ended_rec ended[SRV_ENDED_RING];
    uint32_t nended, ended_next;
};

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

/* ns from t to now, 0 when t is later (another thread's newer clock) */
static uint64_t since(uint64_t now, uint64_t t)
{
    return now > t ? now - t : 0;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wake_io(srv *s)
{
    char b = 1;
    ssize_t r = write(s->wake[1], &b, 1); /* non-blocking; a full pipe is awake already */
    (void)r;
}

/* One log line, one write(2). */
static void srv_log(const srv *s, const char *fmt, ...)
{
    if (s->cfg.log_fd < 0)
        return;
    char line[768];
    int n = snprintf(line, sizeof line, "nspv2 serve[%ld]: ", s->pid);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t r = write(s->cfg.log_fd, line, len);
    (void)r;
}

/* Sends what fd takes now of buf (never blocks): bytes sent, or -1 with
 * errno (EAGAIN: nothing taken). */
static ssize_t send_some(int fd, const uint8_t *buf, size_t len)
{
    ssize_t r;
    do
        r = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r;
}

/* ------------------------------------------------------------------------ */
/* connections: references, ending                                           */

static void conn_unref_L(conn *c)
{
    if (--c->refs)
        return;
    srv *s = c->s;
    for (conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    close(c->fd);
    while (c->out_head) {
        outf *o = c->out_head;
        c->out_head = o->next;
        free(o);
    }
    free(c->rbuf);
    free(c->ids);
    free(c->lookups);
    free(c);
}

/* c no longer counts as open. */
static void mark_ended_L(srv *s, conn *c)
{
    c->ended = 1;
    if (!c->refusing)
        s->live--;
    if (c->hello) {
        if (c->role == NSPV2_WIRE_ROLE_MONITOR)
            s->nmonitors--;
        else
            s->nclients--;
    }
}

/* Marks c ended (the first caller wins: returns 1) and queues its end task,
 * which the first free worker runs before any request. code: the ERROR
 * frame's code, 0 for none. The I/O thread closes the socket. */
static int conn_end_L(conn *c, int kind, int code, const char *why)
{
    srv *s = c->s;
    if (c->ended)
        return 0;
    mark_ended_L(s, c);
    c->end_kind = kind;
    c->end_code = code;
    if (why != c->end_text)
        snprintf(c->end_text, sizeof c->end_text, "%s", why);
    c->refs++; /* the end task's */
    c->end_next = NULL;
    if (s->end_tail)
        s->end_tail->end_next = c;
    else
        s->end_head = c;
    s->end_tail = c;
    nspv2_cond_broadcast(&s->cv);
    return 1;
}

static void record_end_L(srv *s, const conn *c, int cleanup, const char *reason,
                         const char *detail)
{
    ended_rec *e = &s->ended[s->ended_next];
    s->ended_next = (s->ended_next + 1) % SRV_ENDED_RING;
    if (s->nended < SRV_ENDED_RING)
        s->nended++;
    e->conn = c->num;
    e->session = c->session;
    e->pid = c->pid;
    e->uid = c->uid;
    e->cleanup = cleanup;
    e->reason = reason;
    snprintf(e->detail, sizeof e->detail, "%s", detail);
    e->ended = wall_now();
}

/* An ERROR frame, best effort, never blocking (a peer that does not read
 * does not get it). The I/O thread only. */
static void send_error(conn *c, uint32_t request_id, int code, const char *text)
{
    uint8_t frame[NSPV2_WIRE_HEADER + 8 + NSPV2_WIRE_MAX_TEXT];
    size_t tl = strlen(text);
    if (tl > NSPV2_WIRE_MAX_TEXT)
        tl = NSPV2_WIRE_MAX_TEXT;
    size_t n = nspv2_wire_encode_reply(frame, sizeof frame, NSPV2_WIRE_ERROR, request_id, code,
                                       (uint32_t)tl, NULL, 0, (const uint8_t *)text,
                                       (uint32_t)tl);
    if (n)
        send_some(c->fd, frame, n);
}

/* Queues frame o on c (takes it). Dropped when c has ended, unless force
 * (GOODBYE_REPLY). Past SRV_OUT_CAP unsent bytes the client is ended. The
 * caller wakes the I/O thread (workers) or flushes (the I/O thread). */
static void push_out_L(conn *c, outf *o, int force)
{
    if (c->ended && !force) {
        free(o);
        return;
    }
    o->next = NULL;
    if (c->out_tail)
        c->out_tail->next = o;
    else {
        c->out_head = o;
        c->out_progress_ns = nspv2_now_ns();
    }
    c->out_tail = o;
    c->out_bytes += o->len;
    /* Never less than what max_in_flight replies (and HELLO_REPLY,
     * GOODBYE_REPLY) may take at the largest frame: a client within its
     * in-flight limit is never ended by this cap; it guards the rest. */
    uint64_t cap = ((uint64_t)c->s->cfg.max_in_flight + 2u) * NSPV2_WIRE_MAX_FRAME;
    if (cap < SRV_OUT_CAP)
        cap = SRV_OUT_CAP;
    if (c->out_bytes > cap && !c->ended) {
        char text[SRV_TEXT];
        snprintf(text, sizeof text, "stopped reading its replies: more than %u MiB unsent",
                 (unsigned)(cap >> 20));
        conn_end_L(c, CE_PROTOCOL, WSANO_RECOVERY, text);
    }
}

/* A copy of frame[0..n) as a queued frame; NULL when out of memory. */
static outf *outf_of(const uint8_t *frame, size_t n, uint32_t id, int counted)
{
    outf *o = malloc(sizeof *o + n);
    if (!o)
        return NULL;
    o->next = NULL;
    o->len = n;
    o->off = 0;
    o->id = id;
    o->counted = counted;
    memcpy(o->data, frame, n);
    return o;
}

static void reply_accounting_L(conn *c, uint32_t id);

/* The I/O thread: writes c's queued frames while the socket takes them
 * (never blocks). A failed send ends c and drops its output. */
static void conn_flush_L(conn *c)
{
    while (c->out_head) {
        outf *o = c->out_head;
        ssize_t r = send_some(c->fd, o->data + o->off, o->len - o->off);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (!c->ended) {
                char why[SRV_TEXT];
                snprintf(why, sizeof why, "connection lost: %s", strerror(errno));
                conn_end_L(c, CE_DISCONNECT, 0, why);
            }
            while (c->out_head) {
                o = c->out_head;
                c->out_head = o->next;
                free(o);
            }
            c->out_tail = NULL;
            c->out_bytes = 0;
            return;
        }
        c->out_progress_ns = nspv2_now_ns();
        o->off += (size_t)r;
        if (o->off < o->len)
            continue;
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_bytes -= o->len;
        if (o->counted)
            reply_accounting_L(c, o->id);
        free(o);
    }
}

/* The I/O thread, for an ended connection: 1 once its socket is done with
 * (shut down; the I/O thread drops it), 0 to keep polling it (a GOODBYE
 * whose Cleanup runs or whose reply is being written). force: stopping. */
static int conn_finish_L(conn *c, uint64_t now, uint64_t silence_ns, int force)
{
    if (c->end_kind == CE_GOODBYE && !force) {
        if (!c->goodbye_done)
            return 0; /* Cleanup runs: the reply follows */
        conn_flush_L(c);
        if (c->out_head && since(now, c->out_progress_ns) < silence_ns)
            return 0;
    } else {
        /* what the socket takes now, then the ERROR between frames */
        conn_flush_L(c);
        if (c->end_code && (!c->out_head || c->out_head->off == 0))
            send_error(c, 0, c->end_code, c->end_text);
    }
    shutdown(c->fd, SHUT_RDWR);
    return 1;
}

/* The end task (a worker): ERROR frame, shutdown, the session's rundown,
 * log lines, books. Drops the end task's reference. */
static void run_end(srv *s, conn *c)
{
    nspv2_mutex_lock(&s->lock);
    int kind = c->end_kind;
    char why[SRV_TEXT];
    memcpy(why, c->end_text, sizeof why);
    uint64_t session = c->session;
    int client = c->hello && c->role == NSPV2_WIRE_ROLE_CLIENT;
    req *parked = c->goodbye_req;
    c->goodbye_req = NULL;
    if (parked) {
        c->busy--;
        conn_unref_L(c); /* the parked GOODBYE's reference; ours remains */
    }
    nspv2_mutex_unlock(&s->lock);
    free(parked);
    wake_io(s); /* the I/O thread writes the ERROR (code) and closes */

    if (session)
        nspv2_session_abandon(session); /* Rundown of every provider it started */

    const char *reason = kind == CE_SHUTDOWN ? "PLATFORM_SHUTDOWN" : "OTHER_COMMUNICATION_ERROR";
    /* one phrase, the client's: "connection closed ..." -> "client
     * disconnected ...", "connection lost: ..." -> "client connection lost:
     * ..."; the others say it already */
    char detail[SRV_TEXT + 32];
    if (kind == CE_DISCONNECT && strncmp(why, "connection closed ", 18) == 0)
        snprintf(detail, sizeof detail, "client disconnected %s", why + 18);
    else if (kind == CE_DISCONNECT)
        snprintf(detail, sizeof detail, "client %s", why);
    else
        snprintf(detail, sizeof detail, "%s", why);
    if (client) {
        srv_log(s, "client #%" PRIu64 " (pid %ld) disconnected: %s", c->num, c->pid, why);
        if (session)
            srv_log(s, "session of client #%" PRIu64 " (pid %ld) ended: rundown, %s (%s)", c->num,
                    c->pid, reason, detail);
    } /* monitors are not logged */

    nspv2_mutex_lock(&s->lock);
    if (session) {
        s->st.sessions_rundown++;
        switch (kind) {
        case CE_KEEPALIVE: s->st.ended_keepalive++; break;
        case CE_PROTOCOL: s->st.ended_protocol++; break;
        case CE_SHUTDOWN: s->st.ended_shutdown++; break;
        default: s->st.ended_disconnect++; break;
        }
        record_end_L(s, c, 0, reason, detail);
    }
    conn_unref_L(c);
    nspv2_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------------------ */
/* the queue                                                                 */

static void enqueue_L(srv *s, req *r)
{
    r->next = NULL;
    if (s->qtail)
        s->qtail->next = r;
    else
        s->qhead = r;
    s->qtail = r;
    s->qlen++;
    if (s->qlen > s->st.queue_peak)
        s->st.queue_peak = s->qlen;
    nspv2_cond_broadcast(&s->cv);
}

static int id_in_flight_L(const conn *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->in_flight; i++)
        if (c->ids[i] == id)
            return 1;
    return 0;
}

/* A request's reply is written (or the request dropped): it no longer
 * counts against the in-flight limit. */
static void reply_accounting_L(conn *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->in_flight; i++) {
        if (c->ids[i] == id) {
            c->ids[i] = c->ids[--c->in_flight];
            break;
        }
    }
}

/* The end of a request (replied or dropped): its reference, and the parked
 * GOODBYE once nothing else of the connection is queued or running. */
static void req_done_L(srv *s, conn *c)
{
    c->busy--;
    if (c->busy == 1 && c->goodbye_req) { /* only the parked GOODBYE left */
        req *g = c->goodbye_req;
        c->goodbye_req = NULL;
        enqueue_L(s, g);
    }
    conn_unref_L(c);
}

/* ------------------------------------------------------------------------ */
/* lookup handles a connection owns                                          */

static int owns_L(const conn *c, uint64_t h)
{
    for (size_t i = 0; i < c->nlookups; i++)
        if (c->lookups[i] == h)
            return 1;
    return 0;
}

static void disown_L(conn *c, uint64_t h)
{
    for (size_t i = 0; i < c->nlookups; i++) {
        if (c->lookups[i] == h) {
            c->lookups[i] = c->lookups[--c->nlookups];
            return;
        }
    }
}

static int own_L(conn *c, uint64_t h)
{
    if (c->nlookups == c->caplookups) {
        size_t ncap = c->caplookups ? c->caplookups * 2 : 8;
        uint64_t *nl = realloc(c->lookups, ncap * sizeof *nl);
        if (!nl)
            return -1;
        c->lookups = nl;
        c->caplookups = ncap;
    }
    c->lookups[c->nlookups++] = h;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* status JSON                                                               */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t len)
{
    if (b->oom)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 1024;
        while (ncap < b->n + len + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string from UTF-8 bytes (control characters escaped). */
static void sb_jstr(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sb_put(b, e, 2);
        } else if (ch < 0x20) {
            sb_fmt(b, "\\u%04x", ch);
        } else {
            sb_put(b, (const char *)&ch, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* A JSON string from UTF-16 (unpaired surrogates become U+FFFD). */
static void sb_jwstr(sbuf *b, const WCHAR *w, size_t n)
{
    size_t cap = n * 3 + 1;
    char *u = malloc(cap);
    if (!u) {
        b->oom = 1;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = w[i];
        if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < n && w[i + 1] >= 0xDC00 && w[i + 1] < 0xE000) {
            cp = 0x10000u + ((cp - 0xD800u) << 10) + (w[i + 1] - 0xDC00u);
            i++;
        } else if (cp >= 0xD800 && cp < 0xE000) {
            cp = 0xFFFD;
        }
        if (cp < 0x80) {
            u[k++] = (char)cp;
        } else if (cp < 0x800) {
            u[k++] = (char)(0xC0 | (cp >> 6));
            u[k++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            u[k++] = (char)(0xE0 | (cp >> 12));
            u[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[k++] = (char)(0x80 | (cp & 0x3F));
        } else {
            u[k++] = (char)(0xF0 | (cp >> 18));
            u[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            u[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[k++] = (char)(0x80 | (cp & 0x3F));
        }
        if (k + 4 >= cap)
            break; /* 3 bytes per unit at most; a pair is 4 bytes for 2 units */
    }
    u[k] = 0;
    sb_jstr(b, u);
    free(u);
}

static void sb_guid(sbuf *b, const GUID *g)
{
    sb_fmt(b, "\"%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x\"", (unsigned)g->Data1,
           (unsigned)g->Data2, (unsigned)g->Data3, g->Data4[0], g->Data4[1], g->Data4[2],
           g->Data4[3], g->Data4[4], g->Data4[5], g->Data4[6], g->Data4[7]);
}

static void sb_providers(sbuf *b)
{
    uint32_t n = 0;
    nspv2_host_providers(NULL, 0, &n);
    GUID *ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids) {
        b->oom = 1;
        return;
    }
    uint32_t got = n;
    nspv2_host_providers(ids, n, &got);
    if (got < n)
        n = got;
    sb_put(b, "[", 1);
    for (uint32_t i = 0; i < n; i++) {
        DWORD ns = NS_EMAIL; /* advertised without being installed: NS_EMAIL */
        nspv2_host_installed(&ids[i], &ns, NULL, NULL, NULL);
        sb_fmt(b, "%s{\"id\": ", i ? ", " : "");
        sb_guid(b, &ids[i]);
        sb_fmt(b, ", \"namespace\": %u, \"name\": ", (unsigned)ns);
        uint32_t chars = 0;
        WCHAR *name = NULL;
        if (nspv2_host_installed_identifier(&ids[i], NULL, &chars) == NO_ERROR && chars) {
            name = calloc(chars, sizeof *name);
            if (name && nspv2_host_installed_identifier(&ids[i], name, &chars) != NO_ERROR) {
                free(name);
                name = NULL;
            }
        }
        if (name)
            sb_jwstr(b, name, chars - 1);
        else
            sb_put(b, "\"\"", 2);
        free(name);
        sb_put(b, "}", 1);
    }
    sb_put(b, "]", 1);
    free(ids);
}

/* The status JSON (docs/serve.md) into *out (free it); -1 out of memory. */
static int build_status(srv *s, char **out, size_t *len)
{
    sbuf b = {0};
    sb_fmt(&b, "{\"version\": 1, \"server_pid\": %ld, \"uid\": %u, \"socket\": ", s->pid,
           (unsigned)s->euid);
    sb_jstr(&b, s->path);
    sb_fmt(&b,
           ", \"started\": %.3f, \"keepalive_ms\": %u, \"threads\": %u, \"max_clients\": %u, "
           "\"max_in_flight\": %u, \"providers\": ",
           s->started, (unsigned)s->cfg.keepalive_ms, (unsigned)s->cfg.threads,
           (unsigned)s->cfg.max_clients, (unsigned)s->cfg.max_in_flight);
    sb_providers(&b);
    sb_put(&b, ", \"clients\": [", 14);
    nspv2_mutex_lock(&s->lock);
    int first = 1;
    for (const conn *c = s->conns; c; c = c->next) {
        if (c->ended || !c->hello || c->role != NSPV2_WIRE_ROLE_CLIENT)
            continue;
        uint32_t started = 0, lookups = 0;
        session_info(c->session, &started, &lookups); /* takes host_g.lock (order: srv then host) */
        sb_fmt(&b,
               "%s{\"connection\": %" PRIu64 ", \"pid\": %ld, \"uid\": %u, \"role\": \"client\", "
               "\"session\": %" PRIu64 ", \"providers_started\": %u, \"lookups_open\": %u, "
               "\"in_flight\": %u, \"requests\": %" PRIu64 ", \"connected\": %.3f}",
               first ? "" : ", ", c->num, c->pid, (unsigned)c->uid, c->session, (unsigned)started,
               (unsigned)lookups, (unsigned)c->in_flight, c->requests, c->connected);
        first = 0;
    }
    sb_put(&b, "], \"ended\": [", 13);
    for (uint32_t i = 0; i < s->nended; i++) {
        uint32_t k = (s->ended_next + SRV_ENDED_RING - s->nended + i) % SRV_ENDED_RING;
        const ended_rec *e = &s->ended[k];
        sb_fmt(&b,
               "%s{\"connection\": %" PRIu64 ", \"pid\": %ld, \"uid\": %u, \"session\": %" PRIu64
               ", \"how\": \"%s\", \"reason\": ",
               i ? ", " : "", e->conn, e->pid, (unsigned)e->uid, e->session,
               e->cleanup ? "cleanup" : "rundown");
        if (e->reason)
            sb_jstr(&b, e->reason);
        else
            sb_put(&b, "null", 4);
        sb_put(&b, ", \"detail\": ", 12);
        sb_jstr(&b, e->detail);
        sb_fmt(&b, ", \"ended\": %.3f}", e->ended);
    }
    nspv2_server_stats st = s->st;
    st.open_now = s->live;
    nspv2_mutex_unlock(&s->lock);
    sb_fmt(&b,
           "], \"stats\": {\"accepted\": %" PRIu64 ", \"refused\": %" PRIu64
           ", \"open_now\": %" PRIu64 ", \"sessions_opened\": %" PRIu64
           ", \"sessions_cleanup\": %" PRIu64 ", \"sessions_rundown\": %" PRIu64
           ", \"ended_disconnect\": %" PRIu64 ", \"ended_keepalive\": %" PRIu64,
           st.accepted, st.refused, st.open_now, st.sessions_opened, st.sessions_cleanup,
           st.sessions_rundown, st.ended_disconnect, st.ended_keepalive);
    sb_fmt(&b,
           ", \"ended_protocol\": %" PRIu64 ", \"ended_shutdown\": %" PRIu64
           ", \"requests\": %" PRIu64 ", \"queue_peak\": %" PRIu64 "}}",
           st.ended_protocol, st.ended_shutdown, st.requests, st.queue_peak);
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* workers                                                                   */

/* Sends the reply to request id, or queues it (it stays in flight until
 * written) for the I/O thread, unless the connection has ended. Never
 * blocks on the client. */
static void write_reply(srv *s, conn *c, uint32_t id, const uint8_t *frame, size_t n)
{
    if (!n)
        return;
    size_t sent = 0;
    nspv2_mutex_lock(&s->lock);
    /* The common case, without a trip through the I/O thread: nothing else
     * is queued for c, so this reply is next on the socket; what the socket
     * takes now is sent here (MSG_DONTWAIT: never blocks). A whole frame
     * written is answered (out of flight) at once; the rest, or an error,
     * goes through the queue like any reply (the I/O thread writes it or
     * finds the error and ends c). The fd is open: c has not ended (checked
     * under srv.lock, which orders this with the I/O thread's shutdown and
     * close) and this worker holds a reference. */
    if (!c->ended && !c->out_head) {
        ssize_t r = send_some(c->fd, frame, n);
        if (r == (ssize_t)n) {
            reply_accounting_L(c, id);
            nspv2_mutex_unlock(&s->lock);
            return;
        }
        if (r > 0)
            sent = (size_t)r;
    }
    /* Queued under the same hold of srv.lock: a part already sent must be
     * followed by its rest before any other frame. */
    outf *o = outf_of(frame, n, id, 1);
    if (o) {
        o->off = sent;
        push_out_L(c, o, 0);
    }
    else
        conn_end_L(c, CE_DISCONNECT, 0, "connection lost: out of memory for a reply");
    nspv2_mutex_unlock(&s->lock);
    wake_io(s);
}

/* A reply with only a code (END, SET, GOODBYE) or code + handle (BEGIN). */
static void reply_small(srv *s, conn *c, uint16_t type, uint32_t id, int code,
                        const uint8_t *extra, uint32_t extra_size)
{
    uint8_t frame[NSPV2_WIRE_HEADER + 16];
    size_t n = nspv2_wire_encode_reply(frame, sizeof frame, type, id, code, 0, extra, extra_size,
                                       NULL, 0);
    write_reply(s, c, id, frame, n);
}

static void do_goodbye(srv *s, conn *c, const req *r)
{
    nspv2_mutex_lock(&s->lock);
    int won = 0;
    if (!c->ended) {
        /* The orderly end: mark it ended here (no end task), so nothing
         * else ends it meanwhile; the I/O thread closes the socket once
         * GOODBYE_REPLY is written. */
        mark_ended_L(s, c);
        c->end_kind = CE_GOODBYE;
        won = 1;
        s->st.requests++; /* counted before GOODBYE_REPLY is written */
        c->requests++;
    }
    uint64_t session = c->session;
    nspv2_mutex_unlock(&s->lock);
    if (!won)
        return; /* ended another way first: its end task does the rest */
    int code = NO_ERROR;
    if (session && nspv2_session_close(session) != NO_ERROR) /* Cleanup of every provider */
        code = WSAGetLastError();
    /* Answered after Cleanup ran: a client that read GOODBYE_REPLY knows
     * its session has ended. write_reply skips ended conns: write here. */
    uint8_t frame[NSPV2_WIRE_HEADER + 8];
    size_t n = nspv2_wire_encode_reply(frame, sizeof frame, NSPV2_WIRE_GOODBYE | NSPV2_WIRE_REPLY,
                                       r->m.h.request_id, code, 0, NULL, 0, NULL, 0);
    outf *o = n ? outf_of(frame, n, 0, 0) : NULL;
    nspv2_mutex_lock(&s->lock);
    if (o)
        push_out_L(c, o, 1); /* the I/O thread writes it, then closes */
    c->goodbye_done = 1;
    nspv2_mutex_unlock(&s->lock);
    wake_io(s);
    if (c->role == NSPV2_WIRE_ROLE_CLIENT) {
        srv_log(s, "client #%" PRIu64 " (pid %ld) disconnected: orderly close (GOODBYE)", c->num,
                c->pid);
        if (session)
            srv_log(s, "session of client #%" PRIu64 " (pid %ld) ended: cleanup", c->num, c->pid);
    }
    nspv2_mutex_lock(&s->lock);
    if (session) {
        s->st.sessions_cleanup++;
        record_end_L(s, c, 1, NULL, "orderly close");
    }
    nspv2_mutex_unlock(&s->lock);
}

static void do_next(srv *s, conn *c, const req *r, uint64_t handle)
{
    uint32_t id = r->m.h.request_id;
    DWORD asked = r->m.buffer_length;
    if (asked > NSPV2_WIRE_MAX_IMAGE)
        asked = NSPV2_WIRE_MAX_IMAGE;
    DWORD len = asked;
    uint8_t *buf = NULL;
    int code = NO_ERROR;
    if (len && !(buf = malloc(len))) /* malloc: aligned for WSAQUERYSETW */
        code = WSA_NOT_ENOUGH_MEMORY;
    if (!code && nspv2_lookup_next(id_to_handle(handle), r->m.control_flags, &len,
                                   (LPWSAQUERYSETW)(void *)buf) != NO_ERROR)
        code = WSAGetLastError();
    size_t image = 0;
    if (code == NO_ERROR) {
        /* offsets, then the image cut to what its objects use */
        const char *why = NULL;
        if (nspv2_wire_image_to_offsets(buf, asked, &why) != 0 ||
            nspv2_wire_image_check(buf, asked, &image, &why) != 0)
            code = WSANO_RECOVERY; /* not expected after the host's relocation */
    }
    uint8_t extra[8] = {0};
    uint32_t n32 = code == NO_ERROR ? (uint32_t)image : 0;
    memcpy(extra, &n32, 4);
    uint32_t word = code == WSAEFAULT ? (uint32_t)len : (uint32_t)asked;
    size_t cap = NSPV2_WIRE_HEADER + 16 + n32;
    uint8_t *frame = malloc(cap);
    size_t n = 0;
    if (frame)
        n = nspv2_wire_encode_reply(frame, cap, NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY, id,
                                    code, word, extra, 8, n32 ? buf : NULL, n32);
    if (n) {
        write_reply(s, c, id, frame, n);
    } else {
        uint8_t small[NSPV2_WIRE_HEADER + 16];
        memset(extra, 0, sizeof extra);
        n = nspv2_wire_encode_reply(small, sizeof small, NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY,
                                    id, WSA_NOT_ENOUGH_MEMORY, word, extra, 8, NULL, 0);
        write_reply(s, c, id, small, n);
    }
    free(frame);
    free(buf);
}

static void run_req(srv *s, req *r)
{
    conn *c = r->c;
    uint32_t id = r->m.h.request_id;
    uint16_t type = r->m.h.type;
    nspv2_mutex_lock(&s->lock);
    int ended = c->ended;
    uint64_t session = c->session;
    int owned = type == NSPV2_WIRE_LOOKUP_NEXT || type == NSPV2_WIRE_LOOKUP_END
                    ? owns_L(c, r->m.handle)
                    : 1;
    if (owned && type == NSPV2_WIRE_LOOKUP_END)
        disown_L(c, r->m.handle); /* the handle is closed whatever End returns */
    if (!ended && type != NSPV2_WIRE_GOODBYE) {
        /* Counted before its reply can be sent (a worker may send it
         * itself): a client that read the reply and asks STATUS sees it. */
        c->requests++;
        s->st.requests++;
    }
    nspv2_mutex_unlock(&s->lock);
    if (ended)
        goto done; /* dropped: the session is being (or was) run down */

    int code = NO_ERROR;
    switch (type) {
    case NSPV2_WIRE_GOODBYE:
        do_goodbye(s, c, r);
        goto done;
    case NSPV2_WIRE_LOOKUP_BEGIN: {
        HANDLE h = NULL;
        if (nspv2_lookup_begin(session, (LPWSAQUERYSETW)(void *)r->qs, r->m.control_flags, &h) !=
            NO_ERROR)
            code = WSAGetLastError();
        uint64_t hv = code == NO_ERROR ? handle_to_id(h) : 0;
        nspv2_mutex_lock(&s->lock);
        if (code == NO_ERROR && own_L(c, hv) != 0) {
            nspv2_mutex_unlock(&s->lock);
            nspv2_lookup_end(h);
            nspv2_mutex_lock(&s->lock);
            code = WSA_NOT_ENOUGH_MEMORY;
            hv = 0;
        }
        nspv2_mutex_unlock(&s->lock);
        uint8_t extra[8];
        memcpy(extra, &hv, 8);
        reply_small(s, c, NSPV2_WIRE_LOOKUP_BEGIN | NSPV2_WIRE_REPLY, id, code, extra, 8);
        break;
    }
    case NSPV2_WIRE_LOOKUP_NEXT:
        if (!owned) {
            uint8_t extra[8] = {0};
            uint8_t frame[NSPV2_WIRE_HEADER + 16];
            size_t n = nspv2_wire_encode_reply(frame, sizeof frame,
                                               NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY, id,
                                               WSA_INVALID_HANDLE, r->m.buffer_length, extra, 8,
                                               NULL, 0);
            write_reply(s, c, id, frame, n);
        } else {
            do_next(s, c, r, r->m.handle);
        }
        break;
    case NSPV2_WIRE_LOOKUP_END:
        if (!owned)
            code = WSA_INVALID_HANDLE; /* another connection's, or none */
        else if (nspv2_lookup_end(id_to_handle(r->m.handle)) != NO_ERROR)
            code = WSAGetLastError();
        reply_small(s, c, NSPV2_WIRE_LOOKUP_END | NSPV2_WIRE_REPLY, id, code, NULL, 0);
        break;
    case NSPV2_WIRE_SET_SERVICE:
        if (nspv2_set_service(session, (LPWSAQUERYSETW)(void *)r->qs,
                              (WSAESETSERVICEOP)r->m.operation, r->m.control_flags) != NO_ERROR)
            code = WSAGetLastError();
        reply_small(s, c, NSPV2_WIRE_SET_SERVICE | NSPV2_WIRE_REPLY, id, code, NULL, 0);
        break;
    default:
        break;
    }
done:
    nspv2_mutex_lock(&s->lock);
    if (c->ended)
        reply_accounting_L(c, id); /* dropped: its reply never comes */
    req_done_L(s, c);
    nspv2_mutex_unlock(&s->lock);
    free(r->qs);
    free(r);
}

static void worker_main(void *p)
{
    srv *s = p;
    nspv2_mutex_lock(&s->lock);
    for (;;) {
        if (s->end_head) {
            conn *c = s->end_head;
            s->end_head = c->end_next;
            if (!s->end_head)
                s->end_tail = NULL;
            nspv2_mutex_unlock(&s->lock);
            run_end(s, c);
            nspv2_mutex_lock(&s->lock);
            continue;
        }
        if (s->qhead) {
            req *r = s->qhead;
            s->qhead = r->next;
            if (!s->qhead)
                s->qtail = NULL;
            s->qlen--;
            nspv2_mutex_unlock(&s->lock);
            run_req(s, r);
            nspv2_mutex_lock(&s->lock);
            continue;
        }
        if (s->workers_exit)
            break;
        nspv2_cond_wait(&s->cv, &s->lock);
    }
    nspv2_mutex_unlock(&s->lock);
    nspv2_pin_thread_detach(); /* a host thread: its pinned Python state goes now */
}

/* ------------------------------------------------------------------------ */
/* the I/O thread                                                            */

/* log: 0 for a monitor (monitors are not logged) */
static void refuse(srv *s, conn *c, int code, const char *why, int log)
{
    if (log)
        srv_log(s, "refused a client (pid %ld, uid %u): %s", c->pid, (unsigned)c->uid, why);
    nspv2_mutex_lock(&s->lock);
    s->st.refused++;
    if (!c->refusing) {
        c->refusing = 1;
        s->live--;
    }
    conn_end_L(c, CE_REFUSED, code, why);
    nspv2_mutex_unlock(&s->lock);
}

static void protocol_error(srv *s, conn *c, const char *why)
{
    char text[SRV_TEXT];
    snprintf(text, sizeof text, "protocol error: %.200s", why);
    nspv2_mutex_lock(&s->lock);
    conn_end_L(c, CE_PROTOCOL, WSANO_RECOVERY, text);
    nspv2_mutex_unlock(&s->lock);
}

static void on_hello(srv *s, conn *c, const uint8_t *frame, size_t len)
{
    nspv2_wire_msg m;
    const char *why = NULL;
    char text[SRV_TEXT];
    if (nspv2_wire_decode_request(frame, len, &m, &why) != 0) {
        snprintf(text, sizeof text, "bad HELLO: %.200s", why ? why : "malformed");
        refuse(s, c, WSANO_RECOVERY, text, 1);
        return;
    }
    if (m.h.type != NSPV2_WIRE_HELLO) {
        refuse(s, c, WSANO_RECOVERY, "bad HELLO: the first frame must be HELLO", 1);
        return;
    }
    if (m.version != NSPV2_WIRE_VERSION) {
        snprintf(text, sizeof text, "bad HELLO: protocol version %u (this server speaks %u)",
                 (unsigned)m.version, (unsigned)NSPV2_WIRE_VERSION);
        refuse(s, c, WSAVERNOTSUPPORTED, text, 1);
        return;
    }
    if (m.pointer_size != sizeof(void *)) {
        snprintf(text, sizeof text, "bad HELLO: a %u-bit client (this server is %u-bit)",
                 (unsigned)m.pointer_size * 8u, (unsigned)sizeof(void *) * 8u);
        refuse(s, c, WSAVERNOTSUPPORTED, text, 1);
        return;
    }
    if (m.role != NSPV2_WIRE_ROLE_CLIENT && m.role != NSPV2_WIRE_ROLE_MONITOR) {
        snprintf(text, sizeof text, "bad HELLO: unknown role %u", (unsigned)m.role);
        refuse(s, c, WSANO_RECOVERY, text, 1);
        return;
    }
    /* max_clients counts clients; monitors have SRV_MONITORS of their own,
     * so that `nspv2 status` answers on a full server */
    nspv2_mutex_lock(&s->lock);
    int full = m.role == NSPV2_WIRE_ROLE_CLIENT ? s->nclients >= s->cfg.max_clients
                                                : s->nmonitors >= SRV_MONITORS;
    nspv2_mutex_unlock(&s->lock);
    if (full) {
        if (m.role == NSPV2_WIRE_ROLE_CLIENT)
            snprintf(text, sizeof text, "too many clients (%u connected)",
                     (unsigned)s->cfg.max_clients);
        else
            snprintf(text, sizeof text, "too many monitors (%u connected)",
                     (unsigned)SRV_MONITORS);
        refuse(s, c, WSAEPROCLIM, text, m.role == NSPV2_WIRE_ROLE_CLIENT);
        return;
    }
    uint64_t session = 0;
    if (m.role == NSPV2_WIRE_ROLE_CLIENT && nspv2_session_open(&session) != NO_ERROR) {
        int e = WSAGetLastError();
        refuse(s, c, e, "could not open a client session", 1);
        return;
    }
    uint32_t np = 0;
    nspv2_host_providers(NULL, 0, &np);
    if (np > NSPV2_WIRE_MAX_PROVIDERS)
        np = NSPV2_WIRE_MAX_PROVIDERS;
    GUID ids[NSPV2_WIRE_MAX_PROVIDERS];
    uint32_t nss[NSPV2_WIRE_MAX_PROVIDERS];
    uint32_t got = np;
    nspv2_host_providers(ids, np, &got);
    if (got < np)
        np = got;
    for (uint32_t i = 0; i < np; i++) {
        DWORD ns = NS_EMAIL; /* advertised without being installed: NS_EMAIL */
        nspv2_host_installed(&ids[i], &ns, NULL, NULL, NULL);
        nss[i] = (uint32_t)ns;
    }
    uint8_t frame_out[NSPV2_WIRE_HEADER + 28 + NSPV2_WIRE_PROVIDER_SIZE * NSPV2_WIRE_MAX_PROVIDERS];
    size_t n = nspv2_wire_encode_hello_reply(frame_out, sizeof frame_out, m.h.request_id,
                                             (uint32_t)s->pid, s->cfg.keepalive_ms,
                                             NSPV2_WIRE_MAX_FRAME, s->cfg.max_in_flight, ids, nss,
                                             np);
    outf *o = n ? outf_of(frame_out, n, 0, 0) : NULL;
    nspv2_mutex_lock(&s->lock);
    c->hello = 1;
    c->role = (int)m.role;
    c->session = session;
    if (m.role == NSPV2_WIRE_ROLE_MONITOR)
        s->nmonitors++;
    else
        s->nclients++;
    s->st.accepted++;
    if (session)
        s->st.sessions_opened++;
    if (o)
        push_out_L(c, o, 0); /* written by the I/O thread's next flush */
    else
        conn_end_L(c, CE_DISCONNECT, 0, "connection lost: out of memory for HELLO_REPLY");
    nspv2_mutex_unlock(&s->lock);
    if (m.role == NSPV2_WIRE_ROLE_CLIENT)
        srv_log(s, "client #%" PRIu64 " (pid %ld, uid %u) connected", c->num, c->pid,
                (unsigned)c->uid);
}

/* STATUS, answered by the I/O thread (the request counts in flight until
 * its reply is written, as any other). */
static void answer_status(srv *s, conn *c, uint32_t id)
{
    char *json = NULL;
    size_t jlen = 0;
    uint8_t *frame = NULL;
    size_t n = 0;
    if (build_status(s, &json, &jlen) == 0 && jlen <= NSPV2_WIRE_MAX_IMAGE &&
        (frame = malloc(NSPV2_WIRE_HEADER + 8 + jlen)) != NULL)
        n = nspv2_wire_encode_reply(frame, NSPV2_WIRE_HEADER + 8 + jlen,
                                    NSPV2_WIRE_STATUS | NSPV2_WIRE_REPLY, id, NO_ERROR,
                                    (uint32_t)jlen, NULL, 0, (const uint8_t *)json,
                                    (uint32_t)jlen);
    uint8_t small[NSPV2_WIRE_HEADER + 8];
    if (!n) {
        free(frame);
        frame = NULL;
        n = nspv2_wire_encode_reply(small, sizeof small, NSPV2_WIRE_STATUS | NSPV2_WIRE_REPLY, id,
                                    WSA_NOT_ENOUGH_MEMORY, 0, NULL, 0, NULL, 0);
    }
    outf *o = n ? outf_of(frame ? frame : small, n, id, 1) : NULL;
    free(frame);
    free(json);
    nspv2_mutex_lock(&s->lock);
    if (o)
        push_out_L(c, o, 0);
    else
        conn_end_L(c, CE_DISCONNECT, 0, "connection lost: out of memory for a reply");
    c->requests++;
    s->st.requests++;
    nspv2_mutex_unlock(&s->lock);
}

/* One whole frame from c (the I/O thread owns frame until it returns). */
static void on_frame(srv *s, conn *c, const uint8_t *frame, size_t len)
{
    nspv2_mutex_lock(&s->lock);
    int hello = c->hello, role = c->role, goodbye = c->goodbye;
    nspv2_mutex_unlock(&s->lock);
    if (!hello) {
        on_hello(s, c, frame, len);
        return;
    }
    nspv2_wire_msg m;
    const char *why = NULL;
    if (nspv2_wire_decode_request(frame, len, &m, &why) != 0) {
        protocol_error(s, c, why ? why : "malformed frame");
        return;
    }
    uint16_t type = m.h.type;
    if (type == NSPV2_WIRE_KEEPALIVE)
        return;
    if (goodbye) {
        protocol_error(s, c, "a request after GOODBYE");
        return;
    }
    if (type == NSPV2_WIRE_HELLO) {
        protocol_error(s, c, "HELLO sent twice");
        return;
    }
    if (role == NSPV2_WIRE_ROLE_MONITOR && type != NSPV2_WIRE_STATUS) {
        protocol_error(s, c, "a monitor may send only STATUS and KEEPALIVE");
        return;
    }
    req *r = calloc(1, sizeof *r);
    if (!r) {
        protocol_error(s, c, "out of memory");
        return;
    }
    r->c = c;
    r->m = m;
    r->m.image = NULL;
    if (type == NSPV2_WIRE_LOOKUP_BEGIN || type == NSPV2_WIRE_SET_SERVICE) {
        /* an 8-aligned copy, its offsets checked and turned into pointers */
        r->qs = malloc(m.image_size ? m.image_size : 1);
        if (!r->qs) {
            free(r);
            protocol_error(s, c, "out of memory");
            return;
        }
        memcpy(r->qs, m.image, m.image_size);
        if (nspv2_wire_image_to_pointers(r->qs, m.image_size, &why) != 0) {
            char text[SRV_TEXT];
            snprintf(text, sizeof text, "bad query set: %.200s", why ? why : "malformed");
            free(r->qs);
            free(r);
            protocol_error(s, c, text);
            return;
        }
    }
    char text[SRV_TEXT];
    nspv2_mutex_lock(&s->lock);
    text[0] = 0;
    if (type == NSPV2_WIRE_GOODBYE) {
        /* Only KEEPALIVE may follow (the connection stays polled, so a
         * hang-up or silence while it waits still ends it, as rundown). It
         * runs once every earlier request of the connection is done (parked
         * until then). */
        c->goodbye = 1;
        c->busy++;
        c->refs++;
        if (c->busy == 1)
            enqueue_L(s, r);
        else
            c->goodbye_req = r;
        r = NULL;
    } else if (c->in_flight >= s->cfg.max_in_flight) {
        snprintf(text, sizeof text, "more than %u requests in flight",
                 (unsigned)s->cfg.max_in_flight);
    } else if (id_in_flight_L(c, m.h.request_id)) {
        snprintf(text, sizeof text, "request id %u is already in flight",
                 (unsigned)m.h.request_id);
    } else if (type == NSPV2_WIRE_STATUS) {
        c->ids[c->in_flight++] = m.h.request_id;
        free(r);
        r = NULL;
        nspv2_mutex_unlock(&s->lock);
        answer_status(s, c, m.h.request_id); /* here, not behind the workers */
        return;
    } else {
        c->ids[c->in_flight++] = m.h.request_id;
        c->busy++;
        c->refs++;
        enqueue_L(s, r);
        r = NULL;
    }
    nspv2_mutex_unlock(&s->lock);
    if (r) {
        free(r->qs);
        free(r);
        protocol_error(s, c, text);
    }
}

/* Reads what c has; frames go to on_frame. 0 to go on polling it, -1 when
 * it ended. */
static int conn_read(srv *s, conn *c)
{
    nspv2_mutex_lock(&s->lock);
    int refusing = c->refusing && !c->ended;
    nspv2_mutex_unlock(&s->lock);
    if (refusing) {
        /* refused at accept: read what it sent (its HELLO), then the ERROR
         * goes (the peer then reads it instead of a reset) */
        uint8_t sink[4096];
        while (recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
        nspv2_mutex_lock(&s->lock);
        conn_end_L(c, CE_REFUSED, c->end_code, c->end_text);
        nspv2_mutex_unlock(&s->lock);
        return -1;
    }
    for (int frames = 0; frames < SRV_READ_BURST; frames++) {
        uint8_t *dst;
        size_t want;
        if (c->need == 0) {
            dst = c->hdr + c->have;
            want = NSPV2_WIRE_HEADER - c->have;
        } else {
            if (c->have == c->rcap && c->rcap < c->need) {
                /* grow with what arrives (only when full), not with what
                 * the header claims */
                size_t ncap = c->rcap ? c->rcap * 2 : 4096;
                if (ncap > c->need)
                    ncap = c->need;
                uint8_t *nb = realloc(c->rbuf, ncap);
                if (!nb) {
                    protocol_error(s, c, "out of memory");
                    return -1;
                }
                c->rbuf = nb;
                c->rcap = ncap;
            }
            dst = c->rbuf + c->have;
            /* never past this frame: the next one's bytes stay in the socket */
            want = (c->rcap < c->need ? c->rcap : c->need) - c->have;
        }
        ssize_t r = recv(c->fd, dst, want, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r <= 0) {
            nspv2_mutex_lock(&s->lock);
            char why[SRV_TEXT];
            if (r == 0 && c->need == 0 && c->have == 0)
                snprintf(why, sizeof why, "connection closed %s",
                         c->goodbye ? "before GOODBYE_REPLY" : "without GOODBYE");
            else if (r == 0)
                snprintf(why, sizeof why, "connection closed in the middle of a frame");
            else
                snprintf(why, sizeof why, "connection lost: %s", strerror(errno));
            conn_end_L(c, CE_DISCONNECT, 0, why);
            nspv2_mutex_unlock(&s->lock);
            return -1;
        }
        c->last_rx_ns = nspv2_now_ns();
        c->have += (size_t)r;
        if (c->need == 0) {
            if (c->have < NSPV2_WIRE_HEADER)
                continue;
            nspv2_wire_header h;
            const char *why = NULL;
            if (nspv2_wire_parse_header(c->hdr, NSPV2_WIRE_HEADER, NSPV2_WIRE_MAX_FRAME, &h, &why) !=
                0) {
                nspv2_mutex_lock(&s->lock);
                int hello = c->hello;
                nspv2_mutex_unlock(&s->lock);
                char text[SRV_TEXT];
                if (!hello) {
                    snprintf(text, sizeof text, "bad HELLO: %.200s", why ? why : "bad header");
                    refuse(s, c, WSANO_RECOVERY, text, 1);
                } else {
                    protocol_error(s, c, why ? why : "bad header");
                }
                return -1;
            }
            c->need = h.length;
            if (c->rcap < NSPV2_WIRE_HEADER) {
                uint8_t *nb = realloc(c->rbuf, 4096 < h.length ? 4096 : h.length);
                if (!nb) {
                    protocol_error(s, c, "out of memory");
                    return -1;
                }
                c->rbuf = nb;
                c->rcap = 4096 < h.length ? 4096 : h.length;
            }
            memcpy(c->rbuf, c->hdr, NSPV2_WIRE_HEADER);
        }
        if (c->have < c->need)
            continue;
        size_t len = c->need;
        c->need = c->have = 0;
        on_frame(s, c, c->rbuf, len);
        if (c->rcap > 65536) { /* do not keep a large buffer per idle client */
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = 0;
        }
        nspv2_mutex_lock(&s->lock);
        int stop = c->ended;
        nspv2_mutex_unlock(&s->lock);
        if (stop)
            return -1;
    }
    return 0;
}

/* A new connection: its credentials, the uid and max-clients checks. */
static conn *conn_accept(srv *s, int fd)
{
    conn *c = calloc(1, sizeof *c);
    uint32_t *ids = calloc(s->cfg.max_in_flight, sizeof *ids);
    if (!c || !ids) {
        free(c);
        free(ids);
        close(fd);
        return NULL;
    }
    c->s = s;
    c->fd = fd;
    c->ids = ids;
    c->pid = 0;
    c->uid = UINT32_MAX;
#if defined(SO_PEERCRED)
    struct ucred cr;
    socklen_t crl = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) == 0) {
        c->pid = (long)cr.pid;
        c->uid = (uint32_t)cr.uid;
    }
#else
    {
        uid_t u;
        gid_t g;
        if (getpeereid(fd, &u, &g) == 0)
            c->uid = (uint32_t)u;
    }
#endif
    c->connected = wall_now();
    c->last_rx_ns = nspv2_now_ns();

    int allowed = c->uid == s->euid;
    for (uint32_t i = 0; !allowed && i < s->cfg.n_allow_uids; i++)
        allowed = c->uid == s->allow[i];
    nspv2_mutex_lock(&s->lock);
    c->num = ++s->next_conn;
    c->refs = 1; /* the I/O thread's */
    c->next = s->conns;
    s->conns = c;
    /* clients and monitors are told apart at HELLO (on_hello); here only a
     * bound on the connections still awaiting their HELLO */
    int full = s->live - s->nclients - s->nmonitors >= s->cfg.max_clients + SRV_MONITORS;
    char text[SRV_TEXT];
    text[0] = 0;
    if (!allowed) {
        if (c->uid == UINT32_MAX)
            snprintf(text, sizeof text, "its user id cannot be read");
        else
            snprintf(text, sizeof text,
                     "uid %u may not use this provider process (it serves uid %u)",
                     (unsigned)c->uid, (unsigned)s->euid);
        c->end_code = WSAEACCES;
    } else if (full) {
        snprintf(text, sizeof text, "too many connections awaiting HELLO (%u)",
                 (unsigned)(s->live - s->nclients - s->nmonitors));
        c->end_code = WSAEPROCLIM;
    }
    if (text[0]) {
        /* Refused: answered with ERROR once it has sent something (its
         * HELLO) or after SRV_REFUSE_MS, so that the peer reads the ERROR
         * instead of a reset. */
        c->refusing = 1;
        snprintf(c->end_text, sizeof c->end_text, "%s", text);
        s->st.refused++;
        c->refuse_at_ns = nspv2_now_ns() + (uint64_t)SRV_REFUSE_MS * 1000000u;
    } else {
        s->live++;
    }
    nspv2_mutex_unlock(&s->lock);
    if (text[0])
        srv_log(s, "refused a client (pid %ld, uid %u): %s", c->pid, (unsigned)c->uid, text);
    return c;
}

static void io_main(void *p)
{
    srv *s = p;
    conn **io = NULL; /* the I/O thread's conns: one reference each */
    size_t nio = 0, capio = 0;
    struct pollfd *pf = NULL;
    size_t cappf = 0;
    const uint64_t silence_ns = (uint64_t)s->cfg.keepalive_ms * 3u * 1000000u;

    for (;;) {
        /* finish the ended (their socket written what it takes, shut
         * down), build the poll set */
        nspv2_mutex_lock(&s->lock);
        int stopping = s->stopping;
        uint64_t now = nspv2_now_ns();
        size_t k = 0;
        for (size_t i = 0; i < nio; i++) {
            conn *c = io[i];
            if (stopping)
                conn_end_L(c, CE_SHUTDOWN, 0, "server stopping"); /* unless ended */
            if (c->ended && conn_finish_L(c, now, silence_ns, stopping)) {
                conn_unref_L(c);
                continue;
            }
            io[k++] = c;
        }
        nio = k;
        if (stopping) {
            nspv2_mutex_unlock(&s->lock);
            break;
        }
        if (cappf < nio + 2) {
            size_t ncap = (nio + 2) * 2;
            struct pollfd *np = realloc(pf, ncap * sizeof *np);
            if (np) {
                pf = np;
                cappf = ncap;
            }
        }
        if (!pf || cappf < 2) {
            nspv2_mutex_unlock(&s->lock);
            nspv2_sleep_ms(10);
            continue;
        }
        size_t npf = 0;
        pf[npf++] = (struct pollfd){s->wake[0], POLLIN, 0};
        pf[npf++] = (struct pollfd){s->lfd, POLLIN, 0};
        uint64_t next_deadline = now + 60000000000ull;
        size_t polled = 0;
        for (size_t i = 0; i < nio && npf < cappf; i++) {
            conn *c = io[i];
            short ev = 0;
            uint64_t d = UINT64_MAX;
            if (!c->ended) { /* a GOODBYE waiting for its turn included */
                ev |= POLLIN;
                d = c->refuse_at_ns ? c->refuse_at_ns : c->last_rx_ns + silence_ns;
            }
            if (c->out_head) {
                ev |= POLLOUT;
                /* A GOODBYE whose Cleanup still runs has no deadline of its
                 * own: nothing acts on one until the worker is done (it wakes
                 * this thread), so a deadline already past would only make
                 * poll() return at once, again and again. */
                int cleanup_runs = c->ended && c->end_kind == CE_GOODBYE && !c->goodbye_done;
                if (!cleanup_runs && c->out_progress_ns + silence_ns < d)
                    d = c->out_progress_ns + silence_ns;
            }
            /* an ended conn with nothing to write (its Cleanup runs) is not
             * polled: a hang-up would be reported at once, again and again */
            pf[npf++] = (struct pollfd){ev ? c->fd : -1, ev, 0};
            polled++;
            if (d < next_deadline)
                next_deadline = d;
        }
        nspv2_mutex_unlock(&s->lock);
        int timeout = next_deadline <= now ? 0 : (int)((next_deadline - now) / 1000000u + 1);
        int n = poll(pf, npf, timeout);
        if (n < 0 && errno != EINTR)
            nspv2_sleep_ms(10);
        if (n > 0 && (pf[0].revents & POLLIN)) {
            char drain[64];
            while (read(s->wake[0], drain, sizeof drain) > 0) {
            }
        }
        /* connections (before accepting: io[] indexes match pf[2..]) */
        now = nspv2_now_ns();
        for (size_t i = 0; i < polled; i++) {
            conn *c = io[i];
            short rev = n > 0 ? pf[2 + i].revents : 0;
            if (rev & (POLLIN | POLLHUP | POLLERR)) {
                nspv2_mutex_lock(&s->lock);
                int ended = c->ended;
                nspv2_mutex_unlock(&s->lock);
                if (!ended)
                    conn_read(s, c);
            }
            nspv2_mutex_lock(&s->lock);
            if (c->out_head) /* replies queued by workers (woken) or writable */
                conn_flush_L(c);
            if (!c->ended && c->refusing && now >= c->refuse_at_ns) {
                conn_end_L(c, CE_REFUSED, c->end_code, c->end_text);
            } else if (!c->ended && !c->refusing && since(now, c->last_rx_ns) >= silence_ns) {
                char text[SRV_TEXT];
                snprintf(text, sizeof text, "stopped answering: nothing received for %u ms",
                         (unsigned)(s->cfg.keepalive_ms * 3u));
                conn_end_L(c, CE_KEEPALIVE, WSAETIMEDOUT, text);
            } else if (!c->ended && c->out_head && since(now, c->out_progress_ns) >= silence_ns) {
                char text[SRV_TEXT];
                snprintf(text, sizeof text, "stopped reading its replies: none taken for %u ms",
                         (unsigned)(s->cfg.keepalive_ms * 3u));
                conn_end_L(c, CE_KEEPALIVE, WSAETIMEDOUT, text);
            }
            nspv2_mutex_unlock(&s->lock);
        }
        if (n > 0 && (pf[1].revents & POLLIN)) {
            for (;;) {
                /* never blocks: reads and writes are non-blocking */
                int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                        nspv2_sleep_ms(10); /* out of descriptors: do not spin */
                    break;
                }
                conn *c = conn_accept(s, fd);
                if (!c)
                    continue;
                if (nio == capio) {
                    size_t ncap = capio ? capio * 2 : 16;
                    conn **nl = realloc(io, ncap * sizeof *nl);
                    if (!nl) {
                        nspv2_mutex_lock(&s->lock);
                        conn_end_L(c, CE_DISCONNECT, 0, "out of memory");
                        conn_unref_L(c);
                        nspv2_mutex_unlock(&s->lock);
                        continue;
                    }
                    io = nl;
                    capio = ncap;
                }
                io[nio++] = c;
            }
        }
    }
    close(s->lfd);
    s->lfd = -1;
    free(io);
    free(pf);
}

/* ------------------------------------------------------------------------ */
/* the API                                                                   */

static nspv2_mutex g_servers_lock = NSPV2_MUTEX_INIT;
static srv **g_servers; /* [g_servers_lock] */
static size_t g_nservers, g_capservers;
static uint64_t g_next_server;

static void srv_free(srv *s)
{
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    if (s->lfd >= 0)
        close(s->lfd);
    nspv2_cond_destroy(&s->cv);
    nspv2_mutex_destroy(&s->lock);
    free(s->allow);
    free(s->workers);
    free(s);
}

static int errno_to_wsa(int e)
{
    switch (e) {
    case EADDRINUSE: return WSAEADDRINUSE;
    case EACCES:
    case EPERM: return WSAEACCES;
    case ENOMEM:
    case ENOBUFS: return WSA_NOT_ENOUGH_MEMORY;
    default: return WSAEINVAL;
    }
}

/* An existing file at the path: a live socket (someone accepts) or another
 * kind of file -> WSAEADDRINUSE; a dead socket is removed. 0 or the code. */
static int clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : errno_to_wsa(errno);
    if (!S_ISSOCK(st.st_mode))
        return WSAEADDRINUSE;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno_to_wsa(errno);
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (r == 0)
        return WSAEADDRINUSE;
    if (e != ECONNREFUSED)
        return errno_to_wsa(e);
    return unlink(path) == 0 || errno == ENOENT ? 0 : errno_to_wsa(errno);
}

NSPV2_HOST_API INT nspv2_server_start(const nspv2_server_config *cfg, uint64_t *server)
{
    host_init();
    if (!cfg || !server || !cfg->socket_path)
        return host_fail(WSAEFAULT);
    if (cfg->n_allow_uids && !cfg->allow_uids)
        return host_fail(WSAEFAULT);
    size_t plen = strlen(cfg->socket_path);
    if (plen == 0 || plen >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return host_fail(WSAEINVAL);
    if (cfg->keepalive_ms > 3600000u || cfg->threads > 1024u || cfg->max_in_flight > 65536u ||
        cfg->max_clients > NSPV2_SERVER_MAX_CLIENTS)
        return host_fail(WSAEINVAL);

    srv *s = calloc(1, sizeof *s);
    if (!s)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    s->lfd = s->wake[0] = s->wake[1] = -1;
    nspv2_mutex_init(&s->lock);
    nspv2_cond_init(&s->cv);
    s->cfg = *cfg;
    s->cfg.threads = cfg->threads ? cfg->threads : 4;
    s->cfg.max_clients = cfg->max_clients ? cfg->max_clients : 64;
    s->cfg.max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : 8;
    s->cfg.keepalive_ms = cfg->keepalive_ms ? cfg->keepalive_ms : 5000;
    memcpy(s->path, cfg->socket_path, plen + 1);
    s->cfg.socket_path = s->path;
    s->allow = calloc(cfg->n_allow_uids ? cfg->n_allow_uids : 1, sizeof *s->allow);
    s->workers = calloc(s->cfg.threads, sizeof *s->workers);
    if (!s->allow || !s->workers) {
        srv_free(s);
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    }
    if (cfg->n_allow_uids)
        memcpy(s->allow, cfg->allow_uids, cfg->n_allow_uids * sizeof *s->allow);
    s->cfg.allow_uids = s->allow;
    s->pid = (long)getpid();
    s->euid = (uint32_t)geteuid();
    s->started = wall_now();

    int err = clear_stale(s->path);
    if (err) {
        srv_free(s);
        return host_fail(err);
    }
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, s->path, plen + 1);
    struct stat st;
    if ((s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        err = errno_to_wsa(errno);
        srv_free(s);
        return host_fail(err);
    }
    /* private to the user (the folder is too; the uid check is what counts) */
    if (chmod(s->path, 0600) != 0 || lstat(s->path, &st) != 0 || listen(s->lfd, 128) != 0 ||
        pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        err = errno_to_wsa(errno);
        unlink(s->path);
        srv_free(s);
        return host_fail(err);
    }
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;

    nspv2_mutex_lock(&g_servers_lock);
    if (g_nservers == g_capservers) {
        size_t ncap = g_capservers ? g_capservers * 2 : 4;
        srv **nl = realloc(g_servers, ncap * sizeof *nl);
        if (!nl) {
            nspv2_mutex_unlock(&g_servers_lock);
            unlink(s->path);
            srv_free(s);
            return host_fail(WSA_NOT_ENOUGH_MEMORY);
        }
        g_servers = nl;
        g_capservers = ncap;
    }
    s->id = ++g_next_server;
    nspv2_mutex_unlock(&g_servers_lock);

    uint32_t started = 0;
    for (; started < s->cfg.threads; started++)
        if (nspv2_thread_create(&s->workers[started], worker_main, s) != 0)
            break;
    s->nworkers = started;
    if (started < s->cfg.threads || nspv2_thread_create(&s->io, io_main, s) != 0) {
        nspv2_mutex_lock(&s->lock);
        s->workers_exit = 1;
        nspv2_cond_broadcast(&s->cv);
        nspv2_mutex_unlock(&s->lock);
        for (uint32_t i = 0; i < started; i++)
            nspv2_thread_join(s->workers[i]);
        unlink(s->path);
        srv_free(s);
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    }
    nspv2_mutex_lock(&g_servers_lock);
    g_servers[g_nservers++] = s;
    nspv2_mutex_unlock(&g_servers_lock);
    *server = s->id;
    return NO_ERROR;
}

static srv *find_L(uint64_t id)
{
    for (size_t i = 0; i < g_nservers; i++)
        if (g_servers[i]->id == id)
            return g_servers[i];
    return NULL;
}

NSPV2_HOST_API INT nspv2_server_stop(uint64_t server)
{
    host_init();
    nspv2_mutex_lock(&g_servers_lock);
    srv *s = NULL;
    for (size_t i = 0; i < g_nservers; i++) {
        if (g_servers[i]->id == server) {
            s = g_servers[i];
            g_servers[i] = g_servers[--g_nservers];
            break;
        }
    }
    nspv2_mutex_unlock(&g_servers_lock);
    if (!s)
        return host_fail(WSAEINVAL);

    /* 1. the I/O thread ends every connection (PLATFORM_SHUTDOWN), closes
     *    the listening socket and exits */
    nspv2_mutex_lock(&s->lock);
    s->stopping = 1;
    nspv2_mutex_unlock(&s->lock);
    wake_io(s);
    nspv2_thread_join(s->io);
    /* 2. nobody can connect any more: the socket file goes (if still ours) */
    struct stat st;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
        unlink(s->path);
    /* 3. the workers finish what is running (the end tasks' rundowns cancel
     *    waiting lookups), run every end task, drop what is queued, exit */
    nspv2_mutex_lock(&s->lock);
    s->workers_exit = 1;
    nspv2_cond_broadcast(&s->cv);
    nspv2_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < s->nworkers; i++)
        nspv2_thread_join(s->workers[i]);
    /* every conn has dropped its last reference by now */
    srv_free(s);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_server_stats_get(uint64_t server, nspv2_server_stats *out)
{
    host_init();
    if (!out)
        return host_fail(WSAEFAULT);
    nspv2_mutex_lock(&g_servers_lock);
    srv *s = find_L(server);
    if (s) {
        nspv2_mutex_lock(&s->lock);
        *out = s->st;
        out->open_now = s->live;
        nspv2_mutex_unlock(&s->lock);
    }
    nspv2_mutex_unlock(&g_servers_lock);
    return s ? NO_ERROR : host_fail(WSAEINVAL);
}

NSPV2_HOST_API INT nspv2_server_status(uint64_t server, char *json, uint32_t *len)
{
    host_init();
    if (!len)
        return host_fail(WSAEFAULT);
    nspv2_mutex_lock(&g_servers_lock);
    srv *s = find_L(server);
    char *text = NULL;
    size_t n = 0;
    int err = !s ? WSAEINVAL : build_status(s, &text, &n) != 0 ? WSA_NOT_ENOUGH_MEMORY : 0;
    nspv2_mutex_unlock(&g_servers_lock);
    if (!err) {
        if (n > UINT32_MAX)
            err = WSA_NOT_ENOUGH_MEMORY;
        else if (!json || *len < n)
            err = WSAEFAULT;
        else
            memcpy(json, text, n);
        *len = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    }
    free(text);
    return err ? host_fail(err) : NO_ERROR;
}

#else
typedef int nspv2_server_not_on_windows; /* ws2_32 serves client processes there */
#endif
