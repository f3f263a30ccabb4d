/*
 * client.c - the client library (include/nspv2_client.h): Winsock's client
 * calls carried to provider processes over src/wire.h.
 *
 * Two modes, decided when the library holds no connection:
 *
 *   one server  a socket was chosen (nspv2_client_set_socket, NSPV2_SOCKET):
 *               one connection to it, made lazily by the first call that
 *               needs a provider process and ended by the last WSACleanup
 *               (GOODBYE). That server's host routes among its providers.
 *   routed      otherwise: every live server of the runtime folder, one
 *               connection (one client session) per server, each made
 *               lazily, its HELLO_REPLY listing the providers it serves.
 *               Begin and SetService route through the catalog
 *               (src/catalog.h: the same rules as the in-process host),
 *               one request per routed provider (lpNSProviderId set) to
 *               the server that serves it; Next steps through the parts
 *               with nspv2_route_step. A connection lost mid-lookup fails
 *               its part's Next: recorded, next part. A provider served
 *               twice goes to the connected server with the lowest pid; a
 *               connection lost while its server lives is made again
 *               (routed_refresh) once no lookup part is on it.
 *
 * Locks, taken in this order, never the other way round:
 *
 *   call_lock   one request in flight: held by a call from sending its
 *               request until its reply is read, and while connecting or
 *               tearing a connection down. Only its holder reads a socket,
 *               changes a connection or a lookup.
 *   state_lock  what other threads read (startups, the connections' states
 *               and counters, the connection list, the handle table, the
 *               keepalive threads' stop flags).
 *   c->send_lock  writes on a connection's socket (a call's request, its
 *               keepalive thread's KEEPALIVE): whole frames, never
 *               interleaved.
 *
 *   catalog_lock  around calls into catalog.c; in the order, after
 *               call_lock and before state_lock (fork() takes it, then
 *               state_lock).
 *
 * A keepalive thread (one per connection) takes state_lock (to sleep) and
 * its connection's send_lock (to send), never call_lock; whoever tears the
 * connection down holds call_lock, wakes it, shuts the socket down (a
 * blocked write returns) and joins it before closing the descriptor.
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_client.h"
#include "catalog.h"
#include "wire.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TEXT_MAX 1024
#define HELLO_SIZE (NSPV2_WIRE_HEADER + 16u)
#define DEFAULT_TIMEOUT_MS 30000u
#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)
/* routed: a connection lost while its server lives is retried no sooner
 * than this after it was lost, the wait doubling at each loss that follows
 * a retry without an answered request in between, up to RETRY_MAX_MS */
#define RETRY_MIN_MS 1000u
#define RETRY_MAX_MS 60000u

static const char NO_SERVER[] =
    "no nspv2 provider process is serving (start one with: nspv2 serve MODULE:CLASS)";
static const char CLOSED[] = "the provider process closed the connection";
static const char ANSWERED[] = "the provider process answered with this error";

/* ---- per-thread last error and text ---- */

static _Thread_local int last_error;
static _Thread_local char error_text[TEXT_MAX];

NSPV2_CLIENT_API void WSAAPI WSASetLastError(int iError) { last_error = iError; }
NSPV2_CLIENT_API int WSAAPI WSAGetLastError(void) { return last_error; }
NSPV2_CLIENT_API const char *nspv2_client_error_text(void) { return error_text; }

static void set_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_text(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
}

/* A call succeeded: NO_ERROR, the text cleared (the last error is left as
 * it was, as Winsock does on success). */
static INT ok(void)
{
    error_text[0] = '\0';
    return NO_ERROR;
}

/* A call failed with code and the text already set (or set here). */
static INT fail(int code, const char *text)
{
    if (text && text != error_text)
        set_text("%s", text);
    last_error = code;
    return SOCKET_ERROR;
}

/* ---- process state ---- */

enum { ST_NONE = NSPV2_CLIENT_NOT_CONNECTED, ST_UP = NSPV2_CLIENT_CONNECTED,
       ST_LOST = NSPV2_CLIENT_LOST };
enum { MODE_NONE, MODE_ONE, MODE_ROUTED };

/* One connection to one provider process (one client session there). */
typedef struct conn {
    /* call_lock (fd, ids, nids also under state_lock when they change) */
    int fd;
    int ka_running;
    pthread_t ka_thread;
    pthread_mutex_t send_lock;
    long found_pid; /* routed: the pid of its serve-<pid>.sock name */
    int live;       /* routed: in the latest listing of the runtime folder */
    size_t refs;    /* routed: lookup parts on it */
    int no_retry;   /* routed: abandoned, not retried until the last WSACleanup */
    uint64_t retry_at;  /* routed, lost: retried no sooner (monotonic ms) */
    uint32_t retry_ms;  /* the wait after the last loss; 0 once a request was answered */
    GUID *ids;      /* the providers its HELLO_REPLY listed */
    uint32_t nids;
    char lost_text[TEXT_MAX]; /* why it was lost */
    /* state_lock */
    int state;
    int ka_stop;
    uint32_t server_pid, keepalive_ms, providers, requests;
    uint64_t keepalives;
    char socket_path[SUN_PATH_MAX];
} conn;

/* A lookup: one part (one server) in one-server mode, one part per routed
 * provider whose Begin succeeded in routed mode. */
typedef struct part {
    conn *c;
    uint64_t remote; /* the provider process's handle */
    GUID id;
} part;

typedef struct lookup {
    uint64_t local; /* the HANDLE the caller holds */
    int routed;
    part *parts;
    size_t nparts;
    nspv2_route_cursor cursor;
    int note_code;       /* the first error recorded (routed) */
    char note[TEXT_MAX]; /* and its text */
} lookup;

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
/* Held around every call into catalog.c (its own locks are held briefly
 * inside): fork() takes it first, so a child never inherits one of them
 * locked by a thread it does not have. */
static pthread_mutex_t catalog_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_cond_t ka_cv; /* CLOCK_MONOTONIC, initialized once; all keepalive threads */

static struct {
    /* state_lock */
    uint32_t startups;
    char chosen_socket[SUN_PATH_MAX]; /* set_socket */
    uint32_t timeout_ms;
    lookup **lookups;
    size_t nlookups, caplookups;
    uint64_t next_handle;
    /* changed under call_lock and state_lock both (read under either) */
    conn **conns;
    size_t nconns, capconns;
    int mode;
    /* call_lock */
    uint32_t next_request;
} g = {.timeout_ms = DEFAULT_TIMEOUT_MS, .next_handle = 1};

static void ka_cv_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ka_cv, &attr);
    pthread_condattr_destroy(&attr);
}

static void lookup_free(lookup *lk)
{
    if (lk) {
        free(lk->parts);
        free(lk);
    }
}

/* state_lock held: forget every lookup (their servers forget them with the
 * sessions, or the caller ended them). */
static void drop_lookups_S(void)
{
    for (size_t i = 0; i < g.nlookups; i++) {
        lookup *lk = g.lookups[i];
        for (size_t j = 0; j < lk->nparts; j++)
            if (lk->parts[j].c->refs)
                lk->parts[j].c->refs--;
        lookup_free(lk);
    }
    g.nlookups = 0;
}

/* fork(): catalog_lock and state_lock are held across it, so the child's
 * copy of the fields below and of catalog.c's state is whole (both are
 * only ever held briefly). */
static void fork_prepare(void)
{
    pthread_mutex_lock(&catalog_lock);
    pthread_mutex_lock(&state_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&state_lock);
    pthread_mutex_unlock(&catalog_lock);
}

/* In the child, the only thread is the one that called fork(). The
 * connections are the parent's: its sessions, its keepalive threads (which
 * do not exist here), its lookup handles. Close the child's copies of the
 * descriptors (no shutdown, no GOODBYE: the parent's connections are left
 * exactly as they were) and forget them; the child's next call that needs
 * a provider process connects on its own (sessions of its own). WSAStartup
 * count, chosen socket and timeout stay. Locks other threads of the parent
 * may have held, and the keepalive threads' condition, are made anew. */
static void fork_child(void)
{
    pthread_mutex_init(&call_lock, NULL);
    ka_cv_init();
    drop_lookups_S();
    for (size_t i = 0; i < g.nconns; i++) {
        conn *c = g.conns[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->ids);
        free(c); /* its send_lock may be held by a thread the child lacks */
    }
    g.nconns = 0;
    g.mode = MODE_NONE;
    pthread_mutex_unlock(&state_lock);
    pthread_mutex_unlock(&catalog_lock);
}

static void init_once(void)
{
    ka_cv_init();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t timeout_ms(void)
{
    pthread_mutex_lock(&state_lock);
    uint32_t t = g.timeout_ms;
    pthread_mutex_unlock(&state_lock);
    return t;
}

/* ---- socket I/O with a deadline (0: none) ---- */

/* Wait until fd is ready for events or the deadline passes: 1 ready, 0
 * timed out, -1 error (errno). */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        int wait = -1;
        if (deadline) {
            uint64_t now = now_ms();
            if (now >= deadline)
                return 0;
            wait = deadline - now > 60000u ? 60000 : (int)(deadline - now);
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, wait);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* 0 sent; -1 error (errno; ETIMEDOUT when the deadline passed). */
static int send_all(int fd, const uint8_t *p, size_t n, uint64_t deadline)
{
    while (n) {
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (r < 0)
            return -1;
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 1 read; 0 end of stream before n bytes; -1 error (errno, ETIMEDOUT). */
static int recv_all(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n) {
        int r = wait_fd(fd, POLLIN, deadline);
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (r < 0)
            return -1;
        ssize_t k = recv(fd, p, n, MSG_DONTWAIT);
        if (k == 0)
            return 0;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 1;
}

static int send_frame(conn *c, const uint8_t *frame, size_t len, uint64_t deadline)
{
    pthread_mutex_lock(&c->send_lock);
    int r = send_all(c->fd, frame, len, deadline);
    int e = errno;
    pthread_mutex_unlock(&c->send_lock);
    errno = e;
    return r;
}

/* ---- the keepalive threads ---- */

static void *keepalive_main(void *arg)
{
    conn *c = arg;
    uint8_t frame[NSPV2_WIRE_HEADER];
    size_t len = nspv2_wire_encode_empty(frame, sizeof frame, NSPV2_WIRE_KEEPALIVE, 0);
    pthread_mutex_lock(&state_lock);
    uint32_t interval = c->keepalive_ms;
    uint64_t next = now_ms() + interval;
    int fd = c->fd; /* stable until this thread is joined */
    while (!c->ka_stop) {
        uint64_t now = now_ms();
        if (now < next) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait = next - now;
            ts.tv_sec += (time_t)(wait / 1000u);
            ts.tv_nsec += (long)(wait % 1000u) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&ka_cv, &state_lock, &ts);
            continue;
        }
        next = now + interval;
        pthread_mutex_unlock(&state_lock);
        pthread_mutex_lock(&c->send_lock);
        /* bounded by one interval: a peer that stops reading is the next
         * call's to find out */
        int r = len ? send_all(fd, frame, len, now_ms() + interval) : -1;
        pthread_mutex_unlock(&c->send_lock);
        pthread_mutex_lock(&state_lock);
        if (r == 0)
            c->keepalives++;
    }
    pthread_mutex_unlock(&state_lock);
    return NULL;
}

/* call_lock held. Stop c's keepalive thread and close its socket; its
 * state becomes `state`. In one-server mode the lookups go with it (the
 * provider process forgets them with the session); routed lookups keep
 * their parts, whose calls then fail. */
static void teardown(conn *c, int state)
{
    if (c->fd >= 0 && c->ka_running) {
        pthread_mutex_lock(&state_lock);
        c->ka_stop = 1;
        pthread_cond_broadcast(&ka_cv);
        pthread_mutex_unlock(&state_lock);
        shutdown(c->fd, SHUT_RDWR); /* a keepalive blocked in send returns */
        pthread_join(c->ka_thread, NULL);
        c->ka_running = 0;
    }
    pthread_mutex_lock(&state_lock);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = state;
    c->ka_stop = 0;
    if (state == ST_LOST) {
        c->retry_ms = c->retry_ms ? c->retry_ms * 2u : RETRY_MIN_MS;
        if (c->retry_ms > RETRY_MAX_MS)
            c->retry_ms = RETRY_MAX_MS;
        c->retry_at = now_ms() + c->retry_ms;
    }
    if (g.mode != MODE_ROUTED)
        drop_lookups_S();
    if (state == ST_NONE) {
        c->server_pid = c->keepalive_ms = c->providers = c->requests = 0;
        c->keepalives = 0;
    }
    pthread_mutex_unlock(&state_lock);
}

/* call_lock held. c is lost: close it, remember why, fail the current call
 * with code and that text. */
static INT lose(conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static INT lose(conn *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->lost_text, sizeof c->lost_text, fmt, ap);
    va_end(ap);
    teardown(c, ST_LOST);
    return fail(code, c->lost_text);
}

/* ---- connections (the list: call_lock and state_lock) ---- */

static conn *conn_new(const char *path, long pid)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = -1;
    c->found_pid = pid;
    pthread_mutex_init(&c->send_lock, NULL);
    snprintf(c->socket_path, sizeof c->socket_path, "%s", path);
    pthread_mutex_lock(&state_lock);
    if (g.nconns == g.capconns) {
        size_t nc = g.capconns ? g.capconns * 2 : 4;
        conn **nl = realloc(g.conns, nc * sizeof *nl);
        if (!nl) {
            pthread_mutex_unlock(&state_lock);
            pthread_mutex_destroy(&c->send_lock);
            free(c);
            return NULL;
        }
        g.conns = nl;
        g.capconns = nc;
    }
    g.conns[g.nconns++] = c;
    pthread_mutex_unlock(&state_lock);
    return c;
}

/* call_lock held, c torn down (no socket, no thread): remove and free. */
static void conn_free(conn *c)
{
    pthread_mutex_lock(&state_lock);
    for (size_t i = 0; i < g.nconns; i++)
        if (g.conns[i] == c) {
            memmove(&g.conns[i], &g.conns[i + 1], (g.nconns - i - 1) * sizeof *g.conns);
            g.nconns--;
            break;
        }
    if (g.nconns == 0)
        g.mode = MODE_NONE;
    pthread_mutex_unlock(&state_lock);
    pthread_mutex_destroy(&c->send_lock);
    free(c->ids);
    free(c);
}

/* ---- discovery (docs/serve.md: the same rules as nspv2.client.discovery) ---- */

static int pid_alive(long pid)
{
    if (pid <= 0)
        return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* pid of a "serve-<pid>.sock" name (1-10 digits, no leading 0), else 0. */
static long socket_name_pid(const char *name)
{
    if (strncmp(name, "serve-", 6) != 0)
        return 0;
    const char *p = name + 6;
    if (*p < '1' || *p > '9')
        return 0;
    long pid = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 10)
            return 0;
        pid = pid * 10 + (*p - '0');
        p++;
    }
    return strcmp(p, ".sock") == 0 ? pid : 0;
}

typedef struct found_server {
    long pid;
    char path[SUN_PATH_MAX];
} found_server;

static int by_pid(const void *a, const void *b)
{
    long x = ((const found_server *)a)->pid, y = ((const found_server *)b)->pid;
    return (x > y) - (x < y);
}

/* The live servers of the runtime folder, by pid, into *out (malloc'd,
 * possibly NULL when *n is 0): 0, or -1 with the text set (the folder is
 * refused or unreadable; a missing folder is no server). */
static int list_servers(found_server **out, size_t *n_out)
{
    char dir[4096];
    *out = NULL;
    *n_out = 0;
    const char *rt = getenv("NSPV2_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (rt && *rt)
        snprintf(dir, sizeof dir, "%s", rt);
    else if (xdg && *xdg && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(dir, sizeof dir, "%s/nspv2", xdg);
    else
        snprintf(dir, sizeof dir, "/tmp/nspv2-%lu", (unsigned long)geteuid());

    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        set_text("refusing %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_text("refusing %s: not a folder; it must be private to you", dir);
        return -1;
    }
    unsigned mode = (unsigned)st.st_mode & 07777u;
    if (st.st_uid != geteuid() && (mode & 077u)) {
        set_text("refusing %s: owned by uid %lu / mode %04o; it must be private to you", dir,
                 (unsigned long)st.st_uid, mode);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        set_text("refusing %s: owned by uid %lu; it must be private to you", dir,
                 (unsigned long)st.st_uid);
        return -1;
    }
    if (mode & 077u) {
        set_text("refusing %s: mode %04o; it must be private to you", dir, mode);
        return -1;
    }

    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        set_text("refusing %s: %s", dir, strerror(errno));
        return -1;
    }
    found_server *live = NULL;
    size_t n = 0, capn = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = socket_name_pid(e->d_name);
        if (!pid)
            continue;
        found_server s = {.pid = pid};
        int w = snprintf(s.path, sizeof s.path, "%s/%s", dir, e->d_name);
        if (w < 0 || (size_t)w >= sizeof s.path)
            continue; /* cannot be connected to anyway */
        if (lstat(s.path, &st) != 0 || !S_ISSOCK(st.st_mode) || !pid_alive(pid))
            continue;
        if (n == capn) {
            size_t nc = capn ? capn * 2 : 4;
            found_server *nl = realloc(live, nc * sizeof *nl);
            if (!nl)
                break;
            live = nl;
            capn = nc;
        }
        live[n++] = s;
    }
    closedir(d);
    if (n > 1)
        qsort(live, n, sizeof *live, by_pid);
    *out = live;
    *n_out = n;
    return 0;
}

/* One-server mode: the socket to connect to, into path (cap bytes): 0, or
 * -1 with the text set (the call then fails with WSASERVICE_NOT_FOUND). */
static int choose_socket(char *path, size_t cap)
{
    pthread_mutex_lock(&state_lock);
    int given = g.chosen_socket[0] != '\0';
    if (given)
        snprintf(path, cap, "%s", g.chosen_socket);
    pthread_mutex_unlock(&state_lock);
    if (given)
        return 0;
    const char *env = getenv("NSPV2_SOCKET");
    if (env && *env) {
        if (strlen(env) >= cap) {
            set_text("NSPV2_SOCKET is too long for a Unix socket address: %s", env);
            return -1;
        }
        snprintf(path, cap, "%s", env);
        return 0;
    }
    set_text("no socket chosen");
    return -1;
}

/* Whether a socket is chosen (one-server mode) rather than routed. */
static int socket_chosen(void)
{
    pthread_mutex_lock(&state_lock);
    int given = g.chosen_socket[0] != '\0';
    pthread_mutex_unlock(&state_lock);
    const char *env = getenv("NSPV2_SOCKET");
    return given || (env && *env);
}

/* ---- frames ---- */

/* call_lock held, c connected. Read the reply to request `id` of type
 * `type` (a whole frame, malloc'd into *frame): NO_ERROR, or c is lost and
 * the call's code returned (the text set). */
static int read_reply(conn *c, uint32_t id, uint16_t type, nspv2_wire_reply *rep,
                      uint8_t **frame, uint64_t deadline)
{
    uint8_t head[NSPV2_WIRE_HEADER];
    *frame = NULL;
    int r = recv_all(c->fd, head, sizeof head, deadline);
    if (r == 0)
        return lose(c, WSAECONNRESET, "%s", CLOSED), WSAECONNRESET;
    if (r < 0) {
        if (errno == ETIMEDOUT)
            return lose(c, WSAETIMEDOUT,
                        "no reply from the provider process within %lu ms; "
                        "the connection was closed",
                        (unsigned long)timeout_ms()),
                   WSAETIMEDOUT;
        return lose(c, WSAECONNRESET, "%s (%s)", CLOSED, strerror(errno)), WSAECONNRESET;
    }
    nspv2_wire_header h;
    const char *why = "malformed";
    if (nspv2_wire_parse_header(head, sizeof head, NSPV2_WIRE_MAX_FRAME, &h, &why) != 0)
        return lose(c, WSAECONNRESET, "the provider process sent a malformed frame (%s)", why),
               WSAECONNRESET;
    uint8_t *buf = malloc(h.length);
    if (!buf)
        return lose(c, WSA_NOT_ENOUGH_MEMORY, "out of memory for a %lu-byte reply",
                    (unsigned long)h.length),
               WSA_NOT_ENOUGH_MEMORY;
    memcpy(buf, head, sizeof head);
    r = recv_all(c->fd, buf + sizeof head, h.length - sizeof head, deadline);
    if (r <= 0) {
        int timed_out = r < 0 && errno == ETIMEDOUT;
        free(buf);
        if (timed_out)
            return lose(c, WSAETIMEDOUT,
                        "no reply from the provider process within %lu ms; "
                        "the connection was closed",
                        (unsigned long)timeout_ms()),
                   WSAETIMEDOUT;
        return lose(c, WSAECONNRESET, "%s", CLOSED), WSAECONNRESET;
    }
    if (nspv2_wire_decode_reply(buf, h.length, rep, &why) != 0) {
        free(buf);
        return lose(c, WSAECONNRESET, "the provider process sent a malformed frame (%s)", why),
               WSAECONNRESET;
    }
    if (rep->h.type == NSPV2_WIRE_ERROR) {
        int code = rep->code ? rep->code : WSAECONNRESET;
        char text[NSPV2_WIRE_MAX_TEXT + 1];
        size_t n = rep->tail_size < NSPV2_WIRE_MAX_TEXT ? rep->tail_size : NSPV2_WIRE_MAX_TEXT;
        memcpy(text, rep->tail, n);
        text[n] = '\0';
        free(buf);
        return lose(c, code, "the provider process closed the connection: %s", text), code;
    }
    if (rep->h.type != type || rep->h.request_id != id) {
        unsigned got_type = rep->h.type, got_id = rep->h.request_id;
        free(buf);
        return lose(c, WSAECONNRESET,
                    "the provider process sent an unexpected frame (type 0x%04x, request %u; "
                    "expected type 0x%04x, request %lu)",
                    got_type, got_id, (unsigned)type, (unsigned long)id),
               WSAECONNRESET;
    }
    pthread_mutex_lock(&state_lock);
    c->requests++;
    pthread_mutex_unlock(&state_lock);
    if (type != (NSPV2_WIRE_HELLO | NSPV2_WIRE_REPLY))
        c->retry_ms = 0; /* answered: the next loss waits the least again */
    *frame = buf;
    return NO_ERROR;
}

/* call_lock held. A send on c failed: the provider process may have said
 * why before it closed (an ERROR frame waiting to be read); else the
 * connection is simply gone. Returns the call's code. */
static int send_failed(conn *c, int err)
{
    if (err == ETIMEDOUT)
        return lose(c, WSAETIMEDOUT,
                    "the provider process did not read a request within %lu ms; "
                    "the connection was closed",
                    (unsigned long)timeout_ms()),
               WSAETIMEDOUT;
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    /* whatever is already there (a closed peer's socket reads at once) */
    int code = read_reply(c, 0, NSPV2_WIRE_ERROR, &rep, &frame, now_ms() + 100u);
    free(frame);
    if (code == NO_ERROR || code == WSAETIMEDOUT) { /* nothing said: simply gone */
        snprintf(c->lost_text, sizeof c->lost_text, "%s (%s)", CLOSED, strerror(err));
        teardown(c, ST_LOST);
        fail(WSAECONNRESET, c->lost_text);
        code = WSAECONNRESET;
    }
    return code;
}

/* call_lock held: send a frame on c and read its reply (type). NO_ERROR or
 * the call's code (c lost, the text set). */
static int transact(conn *c, const uint8_t *req, size_t len, uint32_t id, uint16_t type,
                    nspv2_wire_reply *rep, uint8_t **frame)
{
    uint32_t t = timeout_ms();
    uint64_t deadline = t ? now_ms() + t : 0;
    *frame = NULL;
    if (send_frame(c, req, len, deadline) != 0)
        return send_failed(c, errno);
    return read_reply(c, id, type, rep, frame, deadline);
}

static uint32_t request_id(void)
{
    if (++g.next_request == 0)
        g.next_request = 1;
    return g.next_request;
}

/* call_lock held, c in state NONE: connect to its socket, HELLO, start its
 * keepalive thread. NO_ERROR or the code (text set): a socket that cannot
 * be connected to leaves c NONE (WSASERVICE_NOT_FOUND); a refusal or a
 * failure after connecting leaves it LOST. */
static int conn_connect(conn *c)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t plen = strlen(c->socket_path);
    if (plen >= sizeof addr.sun_path) {
        set_text("the socket path is too long for a Unix socket address: %s", c->socket_path);
        return WSASERVICE_NOT_FOUND;
    }
    memcpy(addr.sun_path, c->socket_path, plen + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_text("cannot make a socket: %s", strerror(errno));
        return WSASYSCALLFAILURE;
    }
    int r;
    do
        r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        set_text("cannot connect to %s: %s", c->socket_path, strerror(errno));
        close(fd);
        return WSASERVICE_NOT_FOUND;
    }
    pthread_mutex_lock(&state_lock);
    c->fd = fd;
    c->state = ST_UP; /* for lose(); HELLO below decides */
    c->requests = 0;
    c->keepalives = 0;
    pthread_mutex_unlock(&state_lock);

    uint8_t hello[HELLO_SIZE];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_hello(hello, sizeof hello, id, NSPV2_WIRE_ROLE_CLIENT);
    if (!len)
        return lose(c, WSANO_RECOVERY, "cannot encode HELLO"), WSANO_RECOVERY;
    nspv2_wire_reply rep;
    uint8_t *frame;
    int code = transact(c, hello, len, id, NSPV2_WIRE_HELLO | NSPV2_WIRE_REPLY, &rep, &frame);
    if (code != NO_ERROR)
        return code;
    if (rep.code != NO_ERROR) {
        int e = rep.code;
        free(frame);
        return lose(c, e, "the provider process refused the connection (error %d)", e), e;
    }
    uint32_t keepalive = rep.keepalive_ms, pid = rep.server_pid, providers = rep.n_providers;
    GUID *ids = providers ? calloc(providers, sizeof *ids) : NULL;
    if (providers && !ids) {
        free(frame);
        return lose(c, WSA_NOT_ENOUGH_MEMORY, "out of memory for the provider list"),
               WSA_NOT_ENOUGH_MEMORY;
    }
    for (uint32_t i = 0; i < providers; i++) {
        uint32_t ns;
        nspv2_wire_reply_provider(&rep, i, &ids[i], &ns);
    }
    free(frame);
    pthread_mutex_lock(&state_lock);
    free(c->ids);
    c->ids = ids;
    c->nids = providers;
    c->server_pid = pid;
    c->keepalive_ms = keepalive;
    c->providers = providers;
    c->ka_stop = 0;
    pthread_mutex_unlock(&state_lock);
    if (keepalive) {
        /* The thread takes no signals: they stay the program's threads' own
         * (it inherits the mask of the thread creating it). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int made = pthread_create(&c->ka_thread, NULL, keepalive_main, c);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (made == 0)
            c->ka_running = 1;
        else
            return lose(c, WSASYSCALLFAILURE, "cannot start the keepalive thread"),
                   WSASYSCALLFAILURE;
    }
    return NO_ERROR;
}

/* call_lock held: the one-server mode's connection, connected: NO_ERROR
 * and *out, or the code (text set). */
static int one_server(conn **out)
{
    if (g.nconns) {
        conn *c = g.conns[0];
        if (c->state == ST_LOST) {
            set_text("%s", c->lost_text);
            return WSAECONNRESET;
        }
        *out = c;
        return NO_ERROR;
    }
    char path[SUN_PATH_MAX];
    if (choose_socket(path, sizeof path) != 0)
        return WSASERVICE_NOT_FOUND;
    conn *c = conn_new(path, 0);
    if (!c) {
        set_text("out of memory for a connection");
        return WSA_NOT_ENOUGH_MEMORY;
    }
    int code = conn_connect(c);
    if (code != NO_ERROR) {
        if (c->state == ST_NONE)
            conn_free(c); /* nothing is remembered: the next call looks again */
        return code;
    }
    *out = c;
    return NO_ERROR;
}

/* Enter a call that needs the provider processes: call_lock taken and
 * NO_ERROR (in one-server mode connected, *c the connection; in routed mode
 * *c NULL), or the call's code with the lock released and the error set.
 * The mode is decided here whenever no connection is held. */
static int enter(conn **c)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&call_lock);
    *c = NULL;
    pthread_mutex_lock(&state_lock);
    uint32_t startups = g.startups;
    int nconns = g.nconns != 0;
    pthread_mutex_unlock(&state_lock);
    int code = NO_ERROR;
    if (!startups) {
        set_text("WSAStartup has not been called (or every WSAStartup was cleaned up)");
        code = WSANOTINITIALISED;
    } else {
        if (!nconns) {
            int mode = socket_chosen() ? MODE_ONE : MODE_ROUTED;
            pthread_mutex_lock(&state_lock);
            g.mode = mode;
            pthread_mutex_unlock(&state_lock);
        }
        if (g.mode == MODE_ONE)
            code = one_server(c);
    }
    if (code != NO_ERROR) {
        last_error = code;
        pthread_mutex_unlock(&call_lock);
    }
    return code;
}

static void leave(void) { pthread_mutex_unlock(&call_lock); }

/* ---- routed mode ---- */

/* Why c, lost before this call, fails it: into out (TEXT_MAX bytes). */
static void lost_earlier(const conn *c, char *out)
{
    snprintf(out, TEXT_MAX, "the connection to provider process %ld was lost earlier: %.900s",
             c->found_pid, c->lost_text);
}

/* call_lock held, routed: match the connections to the live servers of the
 * runtime folder (new ones connected; connections to servers gone and
 * holding no lookup part dropped; a connection lost while its server lives
 * connected again, a new session, once no lookup has a part on it, it was
 * not abandoned, and its retry time has come). NO_ERROR when some live
 * server is connected, or (lost_routes) when every live server's
 * connection is lost and none failed to connect (routed to, their
 * providers then fail); else the code (text set): no server, the folder
 * refused, why none could be connected, or that a connection was lost. */
static int routed_refresh(int lost_routes)
{
    found_server *live;
    size_t n;
    if (list_servers(&live, &n) != 0)
        return WSASERVICE_NOT_FOUND;
    for (size_t i = 0; i < g.nconns; i++)
        g.conns[i]->live = 0;
    int first = NO_ERROR;
    char first_text[TEXT_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        conn *c = NULL;
        for (size_t j = 0; j < g.nconns && !c; j++)
            if (g.conns[j]->found_pid == live[i].pid &&
                strcmp(g.conns[j]->socket_path, live[i].path) == 0)
                c = g.conns[j];
        if (!c)
            c = conn_new(live[i].path, live[i].pid);
        if (!c) {
            if (!first) {
                first = WSA_NOT_ENOUGH_MEMORY;
                snprintf(first_text, sizeof first_text, "out of memory for a connection");
            }
            continue;
        }
        c->live = 1;
    }
    free(live);
    /* a connection to a server gone: forgotten once no lookup has a part on it */
    for (size_t i = g.nconns; i-- > 0;) {
        conn *c = g.conns[i];
        if (!c->live && c->refs == 0) {
            teardown(c, ST_NONE);
            conn_free(c);
        }
    }
    size_t usable = 0;
    const conn *lost = NULL;
    for (size_t i = 0; i < g.nconns; i++) {
        conn *c = g.conns[i];
        if (!c->live)
            continue;
        /* refs == 0: no part holds a handle of the old session, so none
         * can ever be sent to the new one */
        if (c->state == ST_LOST && c->refs == 0 && !c->no_retry && now_ms() >= c->retry_at)
            teardown(c, ST_NONE);
        if (c->state == ST_NONE) {
            int code = conn_connect(c);
            if (code != NO_ERROR && !first) {
                first = code;
                snprintf(first_text, sizeof first_text, "%s", error_text);
            }
        }
        if (c->state == ST_UP)
            usable++;
        else if (c->state == ST_LOST && !lost)
            lost = c;
    }
    if (n == 0) {
        set_text("%s", NO_SERVER);
        return WSASERVICE_NOT_FOUND;
    }
    if (usable)
        return NO_ERROR;
    if (first) {
        set_text("%s", first_text);
        return first;
    }
    if (!lost) {
        set_text("%s", NO_SERVER);
        return WSASERVICE_NOT_FOUND;
    }
    if (lost_routes)
        return NO_ERROR;
    lost_earlier(lost, first_text);
    set_text("%s", first_text);
    return WSAECONNRESET;
}

/* The live server that serves provider id: the connected one with the
 * lowest pid; when none is connected, the lost one with the lowest pid
 * (its parts fail); NULL when none serves it. */
static conn *serving_conn(const GUID *id)
{
    conn *best = NULL;
    for (size_t i = 0; i < g.nconns; i++) {
        conn *c = g.conns[i];
        if (!c->live || c->state == ST_NONE)
            continue;
        for (uint32_t k = 0; k < c->nids; k++)
            if (memcmp(&c->ids[k], id, sizeof *id) == 0) {
                int up = c->state == ST_UP, best_up = best && best->state == ST_UP;
                if (!best || (up && !best_up) ||
                    (up == best_up && c->found_pid < best->found_pid))
                    best = c;
                break;
            }
    }
    return best;
}

static int served_by_live_server(const GUID *id, void *ctx)
{
    (void)ctx;
    return serving_conn(id) != NULL;
}

static void guid_text(const GUID *id, char out[40])
{
    snprintf(out, 40, "%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             (unsigned long)id->Data1, id->Data2, id->Data3, id->Data4[0], id->Data4[1],
             id->Data4[2], id->Data4[3], id->Data4[4], id->Data4[5], id->Data4[6],
             id->Data4[7]);
}

/* call_lock held, routed, refreshed: the providers qs reaches, in order
 * (nspv2_route_order over the catalog in effect, available = served by a
 * live server): NO_ERROR with *ids (malloc'd) and *n >= 1, or the code
 * (text set). */
static int routed_order(const WSAQUERYSETW *qs, GUID **ids, size_t *n)
{
    char where[1024];
    pthread_mutex_lock(&catalog_lock);
    nspv2_catalog_where(where, sizeof where);
    nspv2_catalog *cat = NULL;
    int rc = nspv2_catalog_snapshot(&cat);
    if (rc != NO_ERROR) {
        const char *why = nspv2_catalog_error();
        set_text("cannot read the catalog %s: %s", where, why && *why ? why : "failed");
        pthread_mutex_unlock(&catalog_lock);
        return rc;
    }
    rc = nspv2_route_order(cat, qs->dwNameSpace, qs->lpNSProviderId,
                           qs->lpszServiceInstanceName, served_by_live_server, NULL, ids, n);
    nspv2_catalog_release(cat);
    pthread_mutex_unlock(&catalog_lock);
    if (rc == NO_ERROR)
        return NO_ERROR;
    if (qs->lpNSProviderId) {
        char g_text[40];
        guid_text(qs->lpNSProviderId, g_text);
        if (rc == WSAEINVAL)
            set_text("provider %s is not installed in the catalog %s, or no live provider "
                     "process serves it",
                     g_text, where);
        else
            set_text("provider %s is disabled in the catalog %s, or not of namespace %lu",
                     g_text, where, (unsigned long)qs->dwNameSpace);
    } else {
        set_text("no provider for this query (namespace %lu) is installed and enabled in the "
                 "catalog %s and served by a live provider process",
                 (unsigned long)qs->dwNameSpace, where);
    }
    return rc;
}

/* ---- lookup handles (state_lock) ---- */

static uint64_t handle_add(lookup *lk)
{
    pthread_mutex_lock(&state_lock);
    uint64_t local = 0;
    if (g.nlookups == g.caplookups) {
        size_t nc = g.caplookups ? g.caplookups * 2 : 8;
        lookup **nh = realloc(g.lookups, nc * sizeof *nh);
        if (!nh)
            goto out;
        g.lookups = nh;
        g.caplookups = nc;
    }
    local = g.next_handle++;
    lk->local = local;
    g.lookups[g.nlookups++] = lk;
out:
    pthread_mutex_unlock(&state_lock);
    return local;
}

/* The lookup of local, or NULL (call_lock held: it stays valid). */
static lookup *handle_get(uint64_t local)
{
    lookup *lk = NULL;
    pthread_mutex_lock(&state_lock);
    for (size_t i = 0; local && i < g.nlookups; i++)
        if (g.lookups[i]->local == local)
            lk = g.lookups[i];
    pthread_mutex_unlock(&state_lock);
    return lk;
}

static void handle_remove(const lookup *lk)
{
    pthread_mutex_lock(&state_lock);
    for (size_t i = 0; i < g.nlookups; i++)
        if (g.lookups[i] == lk) {
            g.lookups[i] = g.lookups[--g.nlookups];
            break;
        }
    pthread_mutex_unlock(&state_lock);
}

/* ---- query-set images ---- */

/* The image of qs, malloc'd (8-aligned) into *image: NO_ERROR, or the code
 * (text set). */
static int make_image(const WSAQUERYSETW *qs, uint8_t **image, uint32_t *size)
{
    size_t need = 0;
    *image = NULL;
    int rc = nspv2_wire_image_from_query_set(qs, NULL, 0, &need);
    if (rc == NO_ERROR && need == 0)
        rc = WSAEINVAL;
    if (rc != WSAEFAULT && rc != NO_ERROR) {
        set_text("the query set is not valid (dwSize, or a count or length beyond the limits)");
        return rc;
    }
    if (need > NSPV2_WIRE_MAX_IMAGE) {
        set_text("the query set takes %lu bytes; a request carries at most %lu",
                 (unsigned long)need, (unsigned long)NSPV2_WIRE_MAX_IMAGE);
        return WSAEINVAL;
    }
    uint8_t *buf = malloc(need);
    if (!buf) {
        set_text("out of memory for a %lu-byte query set", (unsigned long)need);
        return WSA_NOT_ENOUGH_MEMORY;
    }
    size_t got = need;
    rc = nspv2_wire_image_from_query_set(qs, buf, need, &got);
    if (rc != NO_ERROR || got > need) {
        free(buf);
        set_text("the query set changed while it was read");
        return rc != NO_ERROR ? rc : WSAEINVAL;
    }
    *image = buf;
    *size = (uint32_t)got;
    return NO_ERROR;
}

/* call_lock held, c connected: a request carrying qs's image (LOOKUP_BEGIN:
 * a = dwControlFlags; SET_SERVICE: a = essOperation, b = dwControlFlags)
 * sent on c, its reply read into *rep (*frame holds it; the caller frees
 * it). NO_ERROR, or the code (text set; a transport failure loses c). */
static int query_set_send(conn *c, const WSAQUERYSETW *qs, uint16_t type, uint32_t a,
                          uint32_t b, nspv2_wire_reply *rep, uint8_t **frame)
{
    uint8_t *image;
    uint32_t size = 0;
    *frame = NULL;
    int code = make_image(qs, &image, &size);
    if (code != NO_ERROR)
        return code;
    size_t cap = NSPV2_WIRE_HEADER + 16u + size;
    uint8_t *req = malloc(cap);
    if (!req) {
        free(image);
        set_text("out of memory");
        return WSA_NOT_ENOUGH_MEMORY;
    }
    uint32_t id = request_id();
    size_t len = type == NSPV2_WIRE_LOOKUP_BEGIN
                     ? nspv2_wire_encode_begin(req, cap, id, a, image, size)
                     : nspv2_wire_encode_set(req, cap, id, a, b, image, size);
    free(image);
    code = len ? transact(c, req, len, id, (uint16_t)(type | NSPV2_WIRE_REPLY), rep, frame)
               : (set_text("cannot encode the request"), WSAEINVAL);
    free(req);
    return code;
}

/* call_lock held, c connected: LOOKUP_END of remote. NO_ERROR, the
 * provider process's code, or the transport's (c lost). */
static int end_remote(conn *c, uint64_t remote)
{
    uint8_t req[NSPV2_WIRE_HEADER + 8u];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_end(req, sizeof req, id, remote);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    int code = len ? transact(c, req, len, id, NSPV2_WIRE_LOOKUP_END | NSPV2_WIRE_REPLY, &rep,
                              &frame)
                   : (set_text("cannot encode the request"), WSAEINVAL);
    if (code != NO_ERROR)
        return code;
    code = rep.code;
    free(frame);
    return code;
}

/* call_lock held, c connected: LOOKUP_NEXT of remote into the caller's
 * buffer. The provider's code or the transport's (c lost; text set);
 * WSAEFAULT sets *lpdwBufferLength to the size needed. */
static int next_remote(conn *c, uint64_t remote, DWORD flags, LPDWORD lpdwBufferLength,
                       LPWSAQUERYSETW lpqsResults)
{
    DWORD length = *lpdwBufferLength;
    uint8_t req[NSPV2_WIRE_HEADER + 16u];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_next(req, sizeof req, id, remote, flags, length);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    int code = len ? transact(c, req, len, id, NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY, &rep,
                              &frame)
                   : (set_text("cannot encode the request"), WSAEINVAL);
    if (code != NO_ERROR)
        return code;
    if (rep.code != NO_ERROR) {
        int rc = rep.code;
        if (rc == WSAEFAULT) {
            *lpdwBufferLength = rep.word;
            set_text("the buffer is too small: *lpdwBufferLength now says how large it must be");
        } else {
            set_text("%s", ANSWERED);
        }
        free(frame);
        return rc;
    }
    const char *why = "";
    if (rep.tail_size < sizeof(WSAQUERYSETW) || rep.tail_size > length) {
        unsigned long n = rep.tail_size;
        free(frame);
        return lose(c, WSAECONNRESET,
                    "the provider process sent a %lu-byte result for a %lu-byte buffer", n,
                    (unsigned long)length),
               WSAECONNRESET;
    }
    memcpy(lpqsResults, rep.tail, rep.tail_size);
    if (nspv2_wire_image_to_pointers((uint8_t *)lpqsResults, rep.tail_size, &why) != 0) {
        free(frame);
        return lose(c, WSAECONNRESET, "the provider process sent a malformed result (%s)", why),
               WSAECONNRESET;
    }
    free(frame);
    return NO_ERROR;
}

/* Record a routed lookup's (or call's) first error and its text. */
static void note(int *code, char *text, int rc, const char *why)
{
    if (!*code) {
        *code = rc;
        snprintf(text, TEXT_MAX, "%s", why);
    }
}

/* ---- Winsock ---- */

NSPV2_CLIENT_API int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData)
{
    const WORD highest = (WORD)(2u | (2u << 8));
    unsigned major = wVersionRequested & 0xFFu, minor = (wVersionRequested >> 8) & 0xFFu;
    pthread_once(&once, init_once);
    if (!lpWSAData)
        return WSAEFAULT;
    memset(lpWSAData, 0, sizeof *lpWSAData);
    lpWSAData->wHighVersion = highest;
    lpWSAData->wVersion =
        (major > 2 || (major == 2 && minor > 2)) ? highest : wVersionRequested;
    memcpy(lpWSAData->szDescription, "WinSock 2.0", sizeof "WinSock 2.0");
    memcpy(lpWSAData->szSystemStatus, "Running", sizeof "Running");
    if (major == 0)
        return WSAVERNOTSUPPORTED;
    pthread_mutex_lock(&state_lock);
    g.startups++;
    pthread_mutex_unlock(&state_lock);
    ok();
    return 0;
}

NSPV2_CLIENT_API int WSAAPI WSACleanup(void)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&call_lock);
    pthread_mutex_lock(&state_lock);
    int was = g.startups > 0;
    if (was)
        g.startups--;
    int last = was && g.startups == 0;
    pthread_mutex_unlock(&state_lock);
    if (!was) {
        pthread_mutex_unlock(&call_lock);
        return fail(WSANOTINITIALISED, "WSACleanup without a matching WSAStartup");
    }
    if (last) {
        /* the orderly end of every session: NSPv2Cleanup in each provider
         * process */
        for (size_t i = 0; i < g.nconns; i++) {
            conn *c = g.conns[i];
            if (c->state == ST_UP) {
                uint8_t frame[NSPV2_WIRE_HEADER];
                uint32_t id = request_id();
                size_t len = nspv2_wire_encode_empty(frame, sizeof frame, NSPV2_WIRE_GOODBYE, id);
                nspv2_wire_reply rep;
                uint8_t *reply = NULL;
                if (len && transact(c, frame, len, id, NSPV2_WIRE_GOODBYE | NSPV2_WIRE_REPLY,
                                    &rep, &reply) == NO_ERROR)
                    free(reply);
            }
            teardown(c, ST_NONE);
        }
        pthread_mutex_lock(&state_lock);
        drop_lookups_S();
        pthread_mutex_unlock(&state_lock);
        while (g.nconns)
            conn_free(g.conns[g.nconns - 1]);
    }
    pthread_mutex_unlock(&call_lock);
    ok();
    return 0;
}

/* Record, for a routed Begin, why provider id (served by c) was dropped:
 * "provider {id} (pid N): why", the first one kept. */
static void note_dropped(lookup *lk, const GUID *id, const conn *c, int rc, const char *why)
{
    char g_text[40];
    char text[TEXT_MAX];
    guid_text(id, g_text);
    snprintf(text, sizeof text, "provider %s (pid %ld): %.900s", g_text, c->found_pid, why);
    note(&lk->note_code, lk->note, rc, text);
}

/* Routed WSALookupServiceBeginW: call_lock held; leaves it. Every routed
 * provider's Begin; those that fail are dropped, and when none is left the
 * lookup fails with WSASERVICE_NOT_FOUND, the first failure in the text. */
static INT routed_begin(const WSAQUERYSETW *qs, DWORD flags, LPHANDLE lphLookup)
{
    int code = routed_refresh(1);
    GUID *ids = NULL;
    size_t n = 0;
    if (code == NO_ERROR)
        code = routed_order(qs, &ids, &n);
    lookup *lk = code == NO_ERROR ? calloc(1, sizeof *lk) : NULL;
    if (code == NO_ERROR && (!lk || !(lk->parts = calloc(n, sizeof *lk->parts)))) {
        set_text("out of memory for a lookup");
        code = WSA_NOT_ENOUGH_MEMORY;
    }
    if (code != NO_ERROR) {
        free(ids);
        lookup_free(lk);
        leave();
        return fail(code, NULL);
    }
    lk->routed = 1;
    for (size_t i = 0; i < n; i++) {
        conn *c;
        nspv2_wire_reply rep;
        uint8_t *frame = NULL;
        /* a connection lost on the way: the next server serving it, if any */
        for (;;) {
            c = serving_conn(&ids[i]);
            if (!c)
                break;
            if (c->state != ST_UP) {
                char why[TEXT_MAX];
                lost_earlier(c, why);
                note_dropped(lk, &ids[i], c, WSAECONNRESET, why);
                c = NULL;
                break;
            }
            WSAQUERYSETW one = *qs;
            one.lpNSProviderId = &ids[i];
            code = query_set_send(c, &one, NSPV2_WIRE_LOOKUP_BEGIN, flags, 0, &rep, &frame);
            if (code == NO_ERROR)
                break;
            note_dropped(lk, &ids[i], c, code, error_text);
            if (c->state == ST_UP) {
                c = NULL; /* not the transport's failure: not retried */
                break;
            }
        }
        if (!c)
            continue;
        int rc = rep.code;
        uint64_t remote = rep.handle;
        free(frame);
        if (rc != NO_ERROR) {
            char why[64];
            snprintf(why, sizeof why, "its Begin failed with error %d", rc);
            note_dropped(lk, &ids[i], c, rc, why);
            continue;
        }
        if (!remote) {
            lose(c, WSAECONNRESET, "the provider process answered a lookup with handle 0");
            note_dropped(lk, &ids[i], c, WSAECONNRESET, c->lost_text);
            continue;
        }
        lk->parts[lk->nparts++] = (part){c, remote, ids[i]};
        c->refs++;
    }
    free(ids);
    if (lk->nparts == 0) {
        /* n >= 1 providers were routed; none's Begin succeeded */
        if (lk->note_code)
            set_text("no provider answered: %.980s", lk->note);
        else
            set_text("no provider answered the lookup");
        lookup_free(lk);
        leave();
        return fail(WSASERVICE_NOT_FOUND, NULL);
    }
    nspv2_route_cursor_init(&lk->cursor, lk->nparts, flags);
    uint64_t local = handle_add(lk);
    if (!local) {
        for (size_t i = 0; i < lk->nparts; i++) {
            if (lk->parts[i].c->state == ST_UP)
                end_remote(lk->parts[i].c, lk->parts[i].remote);
            lk->parts[i].c->refs--;
        }
        lookup_free(lk);
        leave();
        return fail(WSA_NOT_ENOUGH_MEMORY, "out of memory for a lookup handle");
    }
    leave();
    *lphLookup = (HANDLE)(uintptr_t)local;
    return ok();
}

NSPV2_CLIENT_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                   DWORD dwControlFlags, LPHANDLE lphLookup)
{
    if (!lpqsRestrictions)
        return fail(WSAEFAULT, "lpqsRestrictions is NULL");
    if (!lphLookup)
        return fail(WSAEFAULT, "lphLookup is NULL");
    {
        /* the query set is checked before anything is connected */
        uint8_t *image;
        uint32_t size;
        int code = make_image(lpqsRestrictions, &image, &size);
        if (code != NO_ERROR)
            return fail(code, NULL);
        free(image);
    }
    conn *c;
    if (enter(&c) != NO_ERROR)
        return SOCKET_ERROR;
    if (!c)
        return routed_begin(lpqsRestrictions, dwControlFlags, lphLookup);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    int code = query_set_send(c, lpqsRestrictions, NSPV2_WIRE_LOOKUP_BEGIN, dwControlFlags, 0,
                              &rep, &frame);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    int rc = rep.code;
    uint64_t remote = rep.handle;
    free(frame);
    if (rc != NO_ERROR) {
        leave();
        return fail(rc, ANSWERED);
    }
    if (!remote) {
        code = lose(c, WSAECONNRESET, "the provider process answered a lookup with handle 0");
        leave();
        return code;
    }
    lookup *lk = calloc(1, sizeof *lk);
    part *p = lk ? calloc(1, sizeof *p) : NULL;
    uint64_t local = 0;
    if (p) {
        *p = (part){c, remote, {0}};
        lk->parts = p;
        lk->nparts = 1;
        local = handle_add(lk);
    }
    if (!local) {
        lookup_free(lk);
        /* cannot keep it: end it there */
        end_remote(c, remote);
        leave();
        return fail(WSA_NOT_ENOUGH_MEMORY, "out of memory for a lookup handle");
    }
    leave();
    *lphLookup = (HANDLE)(uintptr_t)local;
    return ok();
}

/* Routed WSALookupServiceNextW: call_lock held; leaves it. The parts in
 * order, each until the stepping rules move on (catalog.h). */
static INT routed_next(lookup *lk, DWORD flags, LPDWORD lpdwBufferLength,
                       LPWSAQUERYSETW lpqsResults)
{
    nspv2_route_cursor *cur = &lk->cursor;
    while (cur->cur < cur->n) {
        part *p = &lk->parts[cur->cur];
        int rc;
        if (p->c->state != ST_UP) {
            char why[TEXT_MAX];
            lost_earlier(p->c, why);
            rc = WSAECONNRESET;
            set_text("%s", why);
        } else {
            rc = next_remote(p->c, p->remote, flags, lpdwBufferLength, lpqsResults);
        }
        int step = nspv2_route_step(cur, rc);
        if (step == NSPV2_STEP_RETURN) {
            leave();
            return rc == NO_ERROR ? ok() : fail(rc, NULL);
        }
        if (rc != NO_ERROR && rc != WSA_E_NO_MORE && rc != WSAENOMORE) {
            char g_text[40];
            char why[TEXT_MAX];
            guid_text(&p->id, g_text);
            snprintf(why, sizeof why, "provider %s (pid %lu) was skipped: %.900s", g_text,
                     (unsigned long)p->c->server_pid, error_text);
            note(&lk->note_code, lk->note, rc, why);
        }
        if (step == NSPV2_STEP_DONE)
            break;
    }
    INT final = nspv2_route_final(cur);
    if (final == WSA_E_NO_MORE) {
        if (lk->note_code)
            set_text("no more results (%.980s)", lk->note);
        else
            set_text("no more results");
    } else {
        set_text("%s", lk->note);
    }
    leave();
    return fail(final, NULL);
}

NSPV2_CLIENT_API INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags,
                                                  LPDWORD lpdwBufferLength,
                                                  LPWSAQUERYSETW lpqsResults)
{
    if (!lpdwBufferLength)
        return fail(WSAEFAULT, "lpdwBufferLength is NULL");
    DWORD length = *lpdwBufferLength;
    if (length && !lpqsResults)
        return fail(WSAEFAULT, "lpqsResults is NULL");
    if (length && ((uintptr_t)lpqsResults % _Alignof(WSAQUERYSETW)) != 0)
        return fail(WSAEFAULT, "lpqsResults is not aligned for a WSAQUERYSETW");
    conn *c;
    if (enter(&c) != NO_ERROR)
        return SOCKET_ERROR;
    lookup *lk = handle_get((uint64_t)(uintptr_t)hLookup);
    if (!lk) {
        leave();
        return fail(WSA_INVALID_HANDLE, "not a lookup handle of this connection");
    }
    if (lk->routed)
        return routed_next(lk, dwControlFlags, lpdwBufferLength, lpqsResults);
    int rc = next_remote(lk->parts[0].c, lk->parts[0].remote, dwControlFlags, lpdwBufferLength,
                         lpqsResults);
    leave();
    return rc == NO_ERROR ? ok() : fail(rc, NULL);
}

NSPV2_CLIENT_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup)
{
    conn *c;
    if (enter(&c) != NO_ERROR)
        return SOCKET_ERROR;
    lookup *lk = handle_get((uint64_t)(uintptr_t)hLookup);
    if (!lk) {
        leave();
        return fail(WSA_INVALID_HANDLE, "not a lookup handle of this connection");
    }
    if (!lk->routed) {
        conn *one = lk->parts[0].c;
        int rc = end_remote(one, lk->parts[0].remote);
        if (rc != NO_ERROR && one->state != ST_UP) {
            leave(); /* lost: the lookup went with the connection */
            return fail(rc, NULL);
        }
        /* the host ends the handle whatever its provider's End returned */
        handle_remove(lk);
        lookup_free(lk);
        leave();
        return rc == NO_ERROR ? ok() : fail(rc, ANSWERED);
    }
    /* every part's server exactly once; a lost connection's server forgot
     * its part with the session */
    handle_remove(lk);
    int first = NO_ERROR;
    char first_text[TEXT_MAX] = "";
    for (size_t i = 0; i < lk->nparts; i++) {
        conn *pc = lk->parts[i].c;
        if (pc->state == ST_UP) {
            int rc = end_remote(pc, lk->parts[i].remote);
            if (rc != NO_ERROR && pc->state == ST_UP)
                note(&first, first_text, rc, ANSWERED);
        }
        pc->refs--;
    }
    lookup_free(lk);
    leave();
    return first == NO_ERROR ? ok() : fail(first, first_text);
}

/* Routed WSASetServiceW: call_lock held; leaves it. */
static INT routed_set(const WSAQUERYSETW *qs, WSAESETSERVICEOP op, DWORD flags)
{
    int code = routed_refresh(0);
    GUID *ids = NULL;
    size_t n = 0;
    if (code == NO_ERROR)
        code = routed_order(qs, &ids, &n);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    /* lpNSProviderId: that one (the route has only it); NS_ALL: every
     * routed provider; a namespace: the first of the route */
    if (!qs->lpNSProviderId && qs->dwNameSpace != NS_ALL && n > 1)
        n = 1;
    int first = NO_ERROR;
    char first_text[TEXT_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        conn *c;
        nspv2_wire_reply rep;
        uint8_t *frame = NULL;
        int lost_on_the_way = NO_ERROR;
        char lost_text[TEXT_MAX] = "";
        /* a connection lost on the way: the next server serving it, if any */
        for (;;) {
            c = serving_conn(&ids[i]);
            if (!c)
                break;
            if (c->state != ST_UP) {
                if (!lost_on_the_way) {
                    lost_on_the_way = WSAECONNRESET;
                    lost_earlier(c, lost_text);
                }
                c = NULL;
                break;
            }
            WSAQUERYSETW one = *qs;
            one.lpNSProviderId = &ids[i];
            code = query_set_send(c, &one, NSPV2_WIRE_SET_SERVICE, (uint32_t)op, flags, &rep,
                                  &frame);
            if (code == NO_ERROR)
                break;
            if (c->state == ST_UP) {
                note(&first, first_text, code, error_text);
                lost_on_the_way = NO_ERROR; /* this provider's failure is its own */
                c = NULL;
                break;
            }
            if (!lost_on_the_way) {
                lost_on_the_way = code;
                snprintf(lost_text, sizeof lost_text, "%s", error_text);
            }
        }
        if (!c) {
            if (lost_on_the_way)
                note(&first, first_text, lost_on_the_way, lost_text);
            continue;
        }
        int rc = rep.code;
        free(frame);
        if (rc != NO_ERROR)
            note(&first, first_text, rc, ANSWERED);
    }
    free(ids);
    leave();
    return first == NO_ERROR ? ok() : fail(first, first_text);
}

NSPV2_CLIENT_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                           WSAESETSERVICEOP essoperation, DWORD dwControlFlags)
{
    if (!lpqsRegInfo)
        return fail(WSAEFAULT, "lpqsRegInfo is NULL");
    {
        uint8_t *image;
        uint32_t size;
        int code = make_image(lpqsRegInfo, &image, &size);
        if (code != NO_ERROR)
            return fail(code, NULL);
        free(image);
    }
    conn *c;
    if (enter(&c) != NO_ERROR)
        return SOCKET_ERROR;
    if (!c)
        return routed_set(lpqsRegInfo, essoperation, dwControlFlags);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    int code = query_set_send(c, lpqsRegInfo, NSPV2_WIRE_SET_SERVICE, (uint32_t)essoperation,
                              dwControlFlags, &rep, &frame);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    int rc = rep.code;
    free(frame);
    leave();
    if (rc != NO_ERROR)
        return fail(rc, ANSWERED);
    return ok();
}

/* ---- extras ---- */

static int any_up_S(void)
{
    for (size_t i = 0; i < g.nconns; i++)
        if (g.conns[i]->state == ST_UP)
            return 1;
    return 0;
}

NSPV2_CLIENT_API INT nspv2_client_set_socket(const char *path)
{
    pthread_once(&once, init_once);
    if (path && strlen(path) >= sizeof g.chosen_socket)
        return fail(WSAEINVAL, "the path is too long for a Unix socket address");
    pthread_mutex_lock(&state_lock);
    if (any_up_S()) {
        pthread_mutex_unlock(&state_lock);
        return fail(WSAEISCONN, "already connected: the socket applies to the next connection");
    }
    snprintf(g.chosen_socket, sizeof g.chosen_socket, "%s", path ? path : "");
    pthread_mutex_unlock(&state_lock);
    return ok();
}

NSPV2_CLIENT_API void nspv2_client_set_timeout_ms(uint32_t ms)
{
    pthread_mutex_lock(&state_lock);
    g.timeout_ms = ms;
    pthread_mutex_unlock(&state_lock);
}

NSPV2_CLIENT_API INT nspv2_client_connect(void)
{
    conn *c;
    if (enter(&c) != NO_ERROR)
        return SOCKET_ERROR;
    int code = c ? NO_ERROR : routed_refresh(0);
    leave();
    return code == NO_ERROR ? ok() : fail(code, NULL);
}

NSPV2_CLIENT_API INT nspv2_client_abandon(void)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&call_lock);
    size_t abandoned = 0;
    for (size_t i = 0; i < g.nconns; i++) {
        conn *c = g.conns[i];
        if (c->state != ST_UP)
            continue;
        snprintf(c->lost_text, sizeof c->lost_text,
                 "the connection was abandoned (nspv2_client_abandon)");
        c->no_retry = 1;
        teardown(c, ST_LOST);
        abandoned++;
    }
    pthread_mutex_unlock(&call_lock);
    if (!abandoned)
        return fail(WSAENOTCONN, "not connected");
    return ok();
}

NSPV2_CLIENT_API INT nspv2_client_info_get(nspv2_client_info *out)
{
    if (!out)
        return fail(WSAEFAULT, "out is NULL");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&state_lock);
    out->startups = g.startups;
    /* one-server mode: its connection; routed: the connected server with
     * the lowest pid (else the lost one), with counts summed over all */
    const conn *shown = NULL;
    int up = 0, lost = 0;
    for (size_t i = 0; i < g.nconns; i++) {
        const conn *c = g.conns[i];
        if (c->state == ST_NONE)
            continue;
        out->providers += c->providers;
        out->requests += c->requests;
        out->keepalives += c->keepalives;
        int better = !shown || (c->state == ST_UP && shown->state != ST_UP) ||
                     (c->state == shown->state && c->server_pid < shown->server_pid);
        if (better)
            shown = c;
        up += c->state == ST_UP;
        lost += c->state == ST_LOST;
    }
    out->state = up ? ST_UP : lost ? ST_LOST : ST_NONE;
    if (shown) {
        out->server_pid = shown->server_pid;
        out->keepalive_ms = shown->keepalive_ms;
        snprintf(out->socket_path, sizeof out->socket_path, "%s", shown->socket_path);
    }
    pthread_mutex_unlock(&state_lock);
    return ok();
}
