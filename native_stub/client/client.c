/*
 * client.c - the client library (include/nspv2_client.h): Winsock's client
 * calls carried to a provider process over src/wire.h.
 *
 * One process-wide connection, made lazily by the first call that needs a
 * provider process and ended by the last WSACleanup (GOODBYE). Locks, taken
 * in this order, never the other way round:
 *
 *   call_lock   one request in flight: held by a call from sending its
 *               request until its reply is read, and while connecting or
 *               tearing the connection down. Only its holder reads the
 *               socket, changes `fd` or `state`.
 *   state_lock  the fields below that other threads read (startups, state,
 *               handle table, the keepalive thread's stop flag, counters).
 *   send_lock   writes on the socket (a call's request, the keepalive
 *               thread's KEEPALIVE): whole frames, never interleaved.
 *
 * The keepalive thread takes state_lock (to sleep) and send_lock (to send),
 * never call_lock; whoever tears the connection down holds call_lock,
 * wakes it, shuts the socket down (a blocked write returns) and joins it
 * before closing the descriptor.
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_client.h"
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

static const char NO_SERVER[] =
    "no nspv2 provider process is serving (start one with: nspv2 serve MODULE:CLASS)";
static const char CLOSED[] = "the provider process closed the connection";

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
    if (text)
        set_text("%s", text);
    last_error = code;
    return SOCKET_ERROR;
}

/* ---- process state ---- */

enum { ST_NONE = NSPV2_CLIENT_NOT_CONNECTED, ST_UP = NSPV2_CLIENT_CONNECTED,
       ST_LOST = NSPV2_CLIENT_LOST };

typedef struct handle_entry {
    uint64_t local;  /* the HANDLE the caller holds */
    uint64_t remote; /* the provider process's handle */
} handle_entry;

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t send_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_cond_t ka_cv; /* CLOCK_MONOTONIC, initialized once */

static struct {
    /* state_lock */
    uint32_t startups;
    int state;
    uint32_t server_pid, keepalive_ms, providers, requests;
    uint64_t keepalives;
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char chosen_socket[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* set_socket */
    uint32_t timeout_ms;
    handle_entry *handles;
    size_t nhandles, caphandles;
    uint64_t next_handle;
    int ka_stop;
    /* call_lock */
    int fd;
    int ka_running;
    pthread_t ka_thread;
    uint32_t next_request;
    char lost_text[TEXT_MAX]; /* why the connection was lost */
} g = {.fd = -1, .timeout_ms = DEFAULT_TIMEOUT_MS, .next_handle = 1};

static void ka_cv_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ka_cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* fork(): state_lock is held across it, so the child's copy of the fields
 * below is whole (it is only ever held briefly). */
static void fork_prepare(void) { pthread_mutex_lock(&state_lock); }

static void fork_parent(void) { pthread_mutex_unlock(&state_lock); }

/* In the child, the only thread is the one that called fork(). The
 * connection is the parent's: its session, its keepalive thread (which
 * does not exist here), its lookup handles. Close the child's copy of the
 * descriptor (no shutdown, no GOODBYE: the parent's connection is left
 * exactly as it was) and forget it; the child's next call that needs a
 * provider process connects on its own (a session of its own). WSAStartup
 * count, chosen socket and timeout stay. Locks other threads of the
 * parent may have held, and the keepalive thread's condition, are made
 * anew. */
static void fork_child(void)
{
    pthread_mutex_init(&call_lock, NULL);
    pthread_mutex_init(&send_lock, NULL);
    ka_cv_init();
    if (g.fd >= 0)
        close(g.fd);
    g.fd = -1;
    g.ka_running = 0;
    g.ka_stop = 0;
    g.state = ST_NONE;
    g.nhandles = 0;
    g.socket_path[0] = '\0';
    g.server_pid = g.keepalive_ms = g.providers = g.requests = 0;
    g.keepalives = 0;
    g.lost_text[0] = '\0';
    pthread_mutex_unlock(&state_lock);
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

static int send_frame(const uint8_t *frame, size_t len, uint64_t deadline)
{
    pthread_mutex_lock(&send_lock);
    int r = send_all(g.fd, frame, len, deadline);
    int e = errno;
    pthread_mutex_unlock(&send_lock);
    errno = e;
    return r;
}

/* ---- the keepalive thread ---- */

static void *keepalive_main(void *arg)
{
    (void)arg;
    uint8_t frame[NSPV2_WIRE_HEADER];
    size_t len = nspv2_wire_encode_empty(frame, sizeof frame, NSPV2_WIRE_KEEPALIVE, 0);
    pthread_mutex_lock(&state_lock);
    uint32_t interval = g.keepalive_ms;
    uint64_t next = now_ms() + interval;
    int fd = g.fd; /* stable until this thread is joined */
    while (!g.ka_stop) {
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
        pthread_mutex_lock(&send_lock);
        /* bounded by one interval: a peer that stops reading is the next
         * call's to find out */
        int r = len ? send_all(fd, frame, len, now_ms() + interval) : -1;
        pthread_mutex_unlock(&send_lock);
        pthread_mutex_lock(&state_lock);
        if (r == 0)
            g.keepalives++;
    }
    pthread_mutex_unlock(&state_lock);
    return NULL;
}

/* call_lock held. Stop the keepalive thread and close the socket; the
 * state becomes `state`. */
static void teardown(int state)
{
    if (g.fd >= 0 && g.ka_running) {
        pthread_mutex_lock(&state_lock);
        g.ka_stop = 1;
        pthread_cond_broadcast(&ka_cv);
        pthread_mutex_unlock(&state_lock);
        shutdown(g.fd, SHUT_RDWR); /* a keepalive blocked in send returns */
        pthread_join(g.ka_thread, NULL);
        g.ka_running = 0;
    }
    if (g.fd >= 0)
        close(g.fd);
    pthread_mutex_lock(&state_lock);
    g.fd = -1;
    g.state = state;
    g.ka_stop = 0;
    g.nhandles = 0; /* the provider process forgets them with the session */
    if (state == ST_NONE) {
        g.socket_path[0] = '\0';
        g.server_pid = g.keepalive_ms = g.providers = g.requests = 0;
        g.keepalives = 0;
    }
    pthread_mutex_unlock(&state_lock);
}

/* call_lock held. The connection is lost: close it, remember why, fail
 * the current call with code and that text. */
static INT lose(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static INT lose(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g.lost_text, sizeof g.lost_text, fmt, ap);
    va_end(ap);
    teardown(ST_LOST);
    return fail(code, g.lost_text);
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
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} found_server;

static int by_pid(const void *a, const void *b)
{
    long x = ((const found_server *)a)->pid, y = ((const found_server *)b)->pid;
    return (x > y) - (x < y);
}

/* The socket to connect to, into path (cap bytes): 0, or -1 with the text
 * set (the call then fails with WSASERVICE_NOT_FOUND). */
static int choose_socket(char *path, size_t cap)
{
    char dir[4096];
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
        if (errno == ENOENT) {
            set_text("%s", NO_SERVER);
            return -1;
        }
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
        if (errno == ENOENT) {
            set_text("%s", NO_SERVER);
            return -1;
        }
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
    int rc = -1;
    if (n == 1) {
        snprintf(path, cap, "%s", live[0].path);
        rc = 0;
    } else if (n == 0) {
        set_text("%s", NO_SERVER);
    } else {
        qsort(live, n, sizeof *live, by_pid);
        size_t at = (size_t)snprintf(error_text, sizeof error_text,
                                     "several provider processes are serving: ");
        for (size_t i = 0; i < n && at < sizeof error_text; i++)
            at += (size_t)snprintf(error_text + at, sizeof error_text - at, "%s%ld (%s)",
                                   i ? ", " : "", live[i].pid, live[i].path);
        if (at < sizeof error_text)
            snprintf(error_text + at, sizeof error_text - at,
                     "; choose one with --socket or NSPV2_SOCKET");
    }
    free(live);
    return rc;
}

/* ---- frames ---- */

/* call_lock held, connected. Read the reply to request `id` of type `type`
 * (a whole frame, malloc'd into *frame): NO_ERROR, or the connection is
 * lost and the call's code returned (the text set). */
static int read_reply(uint32_t id, uint16_t type, nspv2_wire_reply *rep, uint8_t **frame,
                      uint64_t deadline)
{
    uint8_t head[NSPV2_WIRE_HEADER];
    *frame = NULL;
    int r = recv_all(g.fd, head, sizeof head, deadline);
    if (r == 0)
        return lose(WSAECONNRESET, "%s", CLOSED), WSAECONNRESET;
    if (r < 0) {
        if (errno == ETIMEDOUT)
            return lose(WSAETIMEDOUT,
                        "no reply from the provider process within %lu ms; "
                        "the connection was closed",
                        (unsigned long)timeout_ms()),
                   WSAETIMEDOUT;
        return lose(WSAECONNRESET, "%s (%s)", CLOSED, strerror(errno)), WSAECONNRESET;
    }
    nspv2_wire_header h;
    const char *why = "malformed";
    if (nspv2_wire_parse_header(head, sizeof head, NSPV2_WIRE_MAX_FRAME, &h, &why) != 0)
        return lose(WSAECONNRESET, "the provider process sent a malformed frame (%s)", why),
               WSAECONNRESET;
    uint8_t *buf = malloc(h.length);
    if (!buf)
        return lose(WSA_NOT_ENOUGH_MEMORY, "out of memory for a %lu-byte reply",
                    (unsigned long)h.length),
               WSA_NOT_ENOUGH_MEMORY;
    memcpy(buf, head, sizeof head);
    r = recv_all(g.fd, buf + sizeof head, h.length - sizeof head, deadline);
    if (r <= 0) {
        int timed_out = r < 0 && errno == ETIMEDOUT;
        free(buf);
        if (timed_out)
            return lose(WSAETIMEDOUT,
                        "no reply from the provider process within %lu ms; "
                        "the connection was closed",
                        (unsigned long)timeout_ms()),
                   WSAETIMEDOUT;
        return lose(WSAECONNRESET, "%s", CLOSED), WSAECONNRESET;
    }
    if (nspv2_wire_decode_reply(buf, h.length, rep, &why) != 0) {
        free(buf);
        return lose(WSAECONNRESET, "the provider process sent a malformed frame (%s)", why),
               WSAECONNRESET;
    }
    if (rep->h.type == NSPV2_WIRE_ERROR) {
        int code = rep->code ? rep->code : WSAECONNRESET;
        char text[NSPV2_WIRE_MAX_TEXT + 1];
        size_t n = rep->tail_size < NSPV2_WIRE_MAX_TEXT ? rep->tail_size : NSPV2_WIRE_MAX_TEXT;
        memcpy(text, rep->tail, n);
        text[n] = '\0';
        free(buf);
        return lose(code, "the provider process closed the connection: %s", text), code;
    }
    if (rep->h.type != type || rep->h.request_id != id) {
        unsigned got_type = rep->h.type, got_id = rep->h.request_id;
        free(buf);
        return lose(WSAECONNRESET,
                    "the provider process sent an unexpected frame (type 0x%04x, request %u; "
                    "expected type 0x%04x, request %lu)",
                    got_type, got_id, (unsigned)type, (unsigned long)id),
               WSAECONNRESET;
    }
    pthread_mutex_lock(&state_lock);
    g.requests++;
    pthread_mutex_unlock(&state_lock);
    *frame = buf;
    return NO_ERROR;
}

/* call_lock held. A send failed: the provider process may have said why
 * before it closed (an ERROR frame waiting to be read); else the
 * connection is simply gone. Returns the call's code. */
static int send_failed(int err)
{
    if (err == ETIMEDOUT)
        return lose(WSAETIMEDOUT,
                    "the provider process did not read a request within %lu ms; "
                    "the connection was closed",
                    (unsigned long)timeout_ms()),
               WSAETIMEDOUT;
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    /* whatever is already there (a closed peer's socket reads at once) */
    int code = read_reply(0, NSPV2_WIRE_ERROR, &rep, &frame, now_ms() + 100u);
    free(frame);
    if (code == NO_ERROR || code == WSAETIMEDOUT) { /* nothing said: simply gone */
        snprintf(g.lost_text, sizeof g.lost_text, "%s (%s)", CLOSED, strerror(err));
        teardown(ST_LOST);
        fail(WSAECONNRESET, g.lost_text);
        code = WSAECONNRESET;
    }
    return code;
}

/* call_lock held: send a frame and read its reply (type). NO_ERROR or the
 * call's code (connection lost). */
static int transact(const uint8_t *req, size_t len, uint32_t id, uint16_t type,
                    nspv2_wire_reply *rep, uint8_t **frame)
{
    uint32_t t = timeout_ms();
    uint64_t deadline = t ? now_ms() + t : 0;
    *frame = NULL;
    if (send_frame(req, len, deadline) != 0)
        return send_failed(errno);
    return read_reply(id, type, rep, frame, deadline);
}

static uint32_t request_id(void)
{
    if (++g.next_request == 0)
        g.next_request = 1;
    return g.next_request;
}

/* call_lock held, state NONE: find and connect. NO_ERROR or the code
 * (text set). */
static int connect_now(void)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (choose_socket(path, sizeof path) != 0) {
        last_error = WSASERVICE_NOT_FOUND;
        return WSASERVICE_NOT_FOUND;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        set_text("the socket path is too long for a Unix socket address: %s", path);
        return WSASERVICE_NOT_FOUND;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
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
        set_text("cannot connect to %s: %s", path, strerror(errno));
        close(fd);
        return WSASERVICE_NOT_FOUND;
    }
    g.fd = fd;
    pthread_mutex_lock(&state_lock);
    g.state = ST_UP; /* for lose(); HELLO below decides */
    snprintf(g.socket_path, sizeof g.socket_path, "%s", path);
    g.requests = 0;
    g.keepalives = 0;
    pthread_mutex_unlock(&state_lock);

    uint8_t hello[HELLO_SIZE];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_hello(hello, sizeof hello, id, NSPV2_WIRE_ROLE_CLIENT);
    if (!len)
        return lose(WSANO_RECOVERY, "cannot encode HELLO"), WSANO_RECOVERY;
    nspv2_wire_reply rep;
    uint8_t *frame;
    int code = transact(hello, len, id, NSPV2_WIRE_HELLO | NSPV2_WIRE_REPLY, &rep, &frame);
    if (code != NO_ERROR)
        return code;
    if (rep.code != NO_ERROR) {
        int c = rep.code;
        free(frame);
        return lose(c, "the provider process refused the connection (error %d)", c), c;
    }
    uint32_t keepalive = rep.keepalive_ms, pid = rep.server_pid, providers = rep.n_providers;
    free(frame);
    pthread_mutex_lock(&state_lock);
    g.server_pid = pid;
    g.keepalive_ms = keepalive;
    g.providers = providers;
    g.ka_stop = 0;
    g.nhandles = 0;
    pthread_mutex_unlock(&state_lock);
    if (keepalive) {
        /* The thread takes no signals: they stay the program's threads' own
         * (it inherits the mask of the thread creating it). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int made = pthread_create(&g.ka_thread, NULL, keepalive_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (made == 0) {
            g.ka_running = 1;
        } else {
            return lose(WSASYSCALLFAILURE, "cannot start the keepalive thread"),
                   WSASYSCALLFAILURE;
        }
    }
    return NO_ERROR;
}

/* Enter a call that needs the provider process: call_lock taken and
 * NO_ERROR, or the call's code with the lock released and the error set. */
static int enter(void)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&call_lock);
    pthread_mutex_lock(&state_lock);
    uint32_t startups = g.startups;
    int state = g.state;
    pthread_mutex_unlock(&state_lock);
    int code = NO_ERROR;
    if (!startups) {
        set_text("WSAStartup has not been called (or every WSAStartup was cleaned up)");
        code = WSANOTINITIALISED;
    } else if (state == ST_LOST) {
        set_text("%s", g.lost_text);
        code = WSAECONNRESET;
    } else if (state == ST_NONE) {
        code = connect_now();
    }
    if (code != NO_ERROR) {
        last_error = code;
        pthread_mutex_unlock(&call_lock);
    }
    return code;
}

static void leave(void) { pthread_mutex_unlock(&call_lock); }

/* ---- lookup handles (state_lock) ---- */

static uint64_t handle_add(uint64_t remote)
{
    pthread_mutex_lock(&state_lock);
    uint64_t local = 0;
    if (g.nhandles == g.caphandles) {
        size_t nc = g.caphandles ? g.caphandles * 2 : 8;
        handle_entry *nh = realloc(g.handles, nc * sizeof *nh);
        if (!nh)
            goto out;
        g.handles = nh;
        g.caphandles = nc;
    }
    local = g.next_handle++;
    g.handles[g.nhandles++] = (handle_entry){local, remote};
out:
    pthread_mutex_unlock(&state_lock);
    return local;
}

/* The remote handle of local, or 0. */
static uint64_t handle_get(uint64_t local)
{
    uint64_t remote = 0;
    pthread_mutex_lock(&state_lock);
    for (size_t i = 0; i < g.nhandles; i++)
        if (g.handles[i].local == local)
            remote = g.handles[i].remote;
    pthread_mutex_unlock(&state_lock);
    return remote;
}

static void handle_remove(uint64_t local)
{
    pthread_mutex_lock(&state_lock);
    for (size_t i = 0; i < g.nhandles; i++)
        if (g.handles[i].local == local) {
            g.handles[i] = g.handles[--g.nhandles];
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
    int state = g.state;
    pthread_mutex_unlock(&state_lock);
    if (!was) {
        pthread_mutex_unlock(&call_lock);
        return fail(WSANOTINITIALISED, "WSACleanup without a matching WSAStartup");
    }
    if (last && state == ST_UP) {
        /* the orderly end: NSPv2Cleanup in the provider process */
        uint8_t frame[NSPV2_WIRE_HEADER];
        uint32_t id = request_id();
        size_t len = nspv2_wire_encode_empty(frame, sizeof frame, NSPV2_WIRE_GOODBYE, id);
        nspv2_wire_reply rep;
        uint8_t *reply = NULL;
        if (len &&
            transact(frame, len, id, NSPV2_WIRE_GOODBYE | NSPV2_WIRE_REPLY, &rep, &reply) ==
                NO_ERROR)
            free(reply);
        teardown(ST_NONE);
    } else if (last) {
        teardown(ST_NONE);
    }
    pthread_mutex_unlock(&call_lock);
    ok();
    return 0;
}

/* A call carrying a query set (LOOKUP_BEGIN: a = dwControlFlags; SET_SERVICE:
 * a = essOperation, b = dwControlFlags): its image in a request, sent, the
 * reply read into *rep (*frame holds it; the caller frees it). NO_ERROR: the
 * caller is inside enter() and must leave(). Otherwise SOCKET_ERROR with the
 * last error set, and nothing to leave or free. */
static INT query_set_call(const WSAQUERYSETW *qs, uint16_t type, uint32_t a, uint32_t b,
                          nspv2_wire_reply *rep, uint8_t **frame)
{
    uint8_t *image;
    uint32_t size = 0;
    int code = make_image(qs, &image, &size);
    if (code != NO_ERROR)
        return fail(code, NULL);
    size_t cap = NSPV2_WIRE_HEADER + 16u + size;
    uint8_t *req = malloc(cap);
    if (!req) {
        free(image);
        return fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    }
    code = enter();
    if (code != NO_ERROR) {
        free(image);
        free(req);
        return SOCKET_ERROR;
    }
    uint32_t id = request_id();
    size_t len = type == NSPV2_WIRE_LOOKUP_BEGIN
                     ? nspv2_wire_encode_begin(req, cap, id, a, image, size)
                     : nspv2_wire_encode_set(req, cap, id, a, b, image, size);
    free(image);
    code = len ? transact(req, len, id, (uint16_t)(type | NSPV2_WIRE_REPLY), rep, frame)
               : (set_text("cannot encode the request"), WSAEINVAL);
    free(req);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    return NO_ERROR;
}

NSPV2_CLIENT_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                   DWORD dwControlFlags, LPHANDLE lphLookup)
{
    if (!lpqsRestrictions)
        return fail(WSAEFAULT, "lpqsRestrictions is NULL");
    if (!lphLookup)
        return fail(WSAEFAULT, "lphLookup is NULL");
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    if (query_set_call(lpqsRestrictions, NSPV2_WIRE_LOOKUP_BEGIN, dwControlFlags, 0, &rep,
                       &frame) != NO_ERROR)
        return SOCKET_ERROR;
    int code;
    int rc = rep.code;
    uint64_t remote = rep.handle;
    free(frame);
    if (rc != NO_ERROR) {
        leave();
        return fail(rc, "the provider process answered with this error");
    }
    if (!remote) {
        code = lose(WSAECONNRESET, "the provider process answered a lookup with handle 0");
        leave();
        return code;
    }
    uint64_t local = handle_add(remote);
    if (!local) {
        /* cannot keep it: end it there */
        uint8_t end[NSPV2_WIRE_HEADER + 8u];
        uint32_t eid = request_id();
        size_t elen = nspv2_wire_encode_end(end, sizeof end, eid, remote);
        if (elen && transact(end, elen, eid, NSPV2_WIRE_LOOKUP_END | NSPV2_WIRE_REPLY, &rep,
                             &frame) == NO_ERROR)
            free(frame);
        leave();
        return fail(WSA_NOT_ENOUGH_MEMORY, "out of memory for a lookup handle");
    }
    leave();
    *lphLookup = (HANDLE)(uintptr_t)local;
    return ok();
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
    int code = enter();
    if (code != NO_ERROR)
        return SOCKET_ERROR;
    uint64_t local = (uint64_t)(uintptr_t)hLookup;
    uint64_t remote = local ? handle_get(local) : 0;
    if (!remote) {
        leave();
        return fail(WSA_INVALID_HANDLE, "not a lookup handle of this connection");
    }
    uint8_t req[NSPV2_WIRE_HEADER + 16u];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_next(req, sizeof req, id, remote, dwControlFlags, length);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    code = len ? transact(req, len, id, NSPV2_WIRE_LOOKUP_NEXT | NSPV2_WIRE_REPLY, &rep, &frame)
               : (set_text("cannot encode the request"), WSAEINVAL);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    if (rep.code != NO_ERROR) {
        int rc = rep.code;
        if (rc == WSAEFAULT)
            *lpdwBufferLength = rep.word;
        free(frame);
        leave();
        return fail(rc, rc == WSAEFAULT ? "the buffer is too small: *lpdwBufferLength now "
                                          "says how large it must be"
                                        : "the provider process answered with this error");
    }
    const char *why = "";
    if (rep.tail_size < sizeof(WSAQUERYSETW) || rep.tail_size > length) {
        unsigned long n = rep.tail_size;
        free(frame);
        code = lose(WSAECONNRESET,
                    "the provider process sent a %lu-byte result for a %lu-byte buffer", n,
                    (unsigned long)length);
        leave();
        return code;
    }
    memcpy(lpqsResults, rep.tail, rep.tail_size);
    if (nspv2_wire_image_to_pointers((uint8_t *)lpqsResults, rep.tail_size, &why) != 0) {
        free(frame);
        code = lose(WSAECONNRESET, "the provider process sent a malformed result (%s)", why);
        leave();
        return code;
    }
    free(frame);
    leave();
    return ok();
}

NSPV2_CLIENT_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup)
{
    int code = enter();
    if (code != NO_ERROR)
        return SOCKET_ERROR;
    uint64_t local = (uint64_t)(uintptr_t)hLookup;
    uint64_t remote = local ? handle_get(local) : 0;
    if (!remote) {
        leave();
        return fail(WSA_INVALID_HANDLE, "not a lookup handle of this connection");
    }
    uint8_t req[NSPV2_WIRE_HEADER + 8u];
    uint32_t id = request_id();
    size_t len = nspv2_wire_encode_end(req, sizeof req, id, remote);
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    code = len ? transact(req, len, id, NSPV2_WIRE_LOOKUP_END | NSPV2_WIRE_REPLY, &rep, &frame)
               : (set_text("cannot encode the request"), WSAEINVAL);
    if (code != NO_ERROR) {
        leave();
        return fail(code, NULL);
    }
    int rc = rep.code;
    free(frame);
    /* the host ends the handle whatever its provider's End returned */
    handle_remove(local);
    leave();
    if (rc != NO_ERROR)
        return fail(rc, "the provider process answered with this error");
    return ok();
}

NSPV2_CLIENT_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                           WSAESETSERVICEOP essoperation, DWORD dwControlFlags)
{
    if (!lpqsRegInfo)
        return fail(WSAEFAULT, "lpqsRegInfo is NULL");
    nspv2_wire_reply rep;
    uint8_t *frame = NULL;
    if (query_set_call(lpqsRegInfo, NSPV2_WIRE_SET_SERVICE, (uint32_t)essoperation,
                       dwControlFlags, &rep, &frame) != NO_ERROR)
        return SOCKET_ERROR;
    int rc = rep.code;
    free(frame);
    leave();
    if (rc != NO_ERROR)
        return fail(rc, "the provider process answered with this error");
    return ok();
}

/* ---- extras ---- */

NSPV2_CLIENT_API INT nspv2_client_set_socket(const char *path)
{
    pthread_once(&once, init_once);
    if (path && strlen(path) >= sizeof g.chosen_socket)
        return fail(WSAEINVAL, "the path is too long for a Unix socket address");
    pthread_mutex_lock(&state_lock);
    if (g.state == ST_UP) {
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
    if (enter() != NO_ERROR)
        return SOCKET_ERROR;
    leave();
    return ok();
}

NSPV2_CLIENT_API INT nspv2_client_abandon(void)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&call_lock);
    pthread_mutex_lock(&state_lock);
    int state = g.state;
    pthread_mutex_unlock(&state_lock);
    if (state != ST_UP) {
        pthread_mutex_unlock(&call_lock);
        return fail(WSAENOTCONN, "not connected");
    }
    snprintf(g.lost_text, sizeof g.lost_text,
             "the connection was abandoned (nspv2_client_abandon)");
    teardown(ST_LOST);
    pthread_mutex_unlock(&call_lock);
    return ok();
}

NSPV2_CLIENT_API INT nspv2_client_info_get(nspv2_client_info *out)
{
    if (!out)
        return fail(WSAEFAULT, "out is NULL");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&state_lock);
    out->state = (uint32_t)g.state;
    out->startups = g.startups;
    out->server_pid = g.server_pid;
    out->keepalive_ms = g.keepalive_ms;
    out->providers = g.providers;
    out->requests = g.requests;
    out->keepalives = g.keepalives;
    snprintf(out->socket_path, sizeof out->socket_path, "%s", g.socket_path);
    pthread_mutex_unlock(&state_lock);
    return ok();
}
