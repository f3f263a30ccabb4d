/*
 * client_driver.c - a client process for tests/test_client_c.py, built
 * against the installed C client library (nspv2 config --cflags
 * --client-libs). It reads one command per line on stdin and answers each
 * with one line on stdout: "ok ..." or "err CODE TEXT".
 *
 *   startup | cleanup | connect | abandon | info
 *   timeout MS            -> nspv2_client_set_timeout_ms(MS): ok
 *   lookup NAME           -> ok FOUND_COUNT [first presence comment]
 *   register NAME         -> ok (RNRSERVICE_REGISTER, no blob: online)
 *   next-bad              -> WSALookupServiceNextW on a handle never issued
 *   lookupx NAME NS FLAGS [GUID]
 *                         -> a lookup in namespace NS with dwControlFlags
 *                            FLAGS (strtoul base 0), lpNSProviderId GUID
 *                            if given: ok COUNT COMMENT,COMMENT,... (every
 *                            result's lpszComment, "-" for none)
 *   begin NAME NS FLAGS   -> WSALookupServiceBeginW alone: ok HANDLE
 *   next HANDLE           -> one WSALookupServiceNextW: ok COMMENT
 *   end HANDLE            -> WSALookupServiceEnd: ok
 *   setx NAME NS OP [GUID] -> WSASetServiceW (OP 0 register, 1 deregister,
 *                            2 delete) in namespace NS: ok
 *   threads N M NAME      -> N threads x M lookups at once: ok DONE FAILED
 *   sleep MS
 *   fork CMD[;CMD]...     -> fork(): the child runs each CMD (its answers
 *                            come first), then _exit(0); the parent waits
 *                            for it: ok child PID exited STATUS
 *   exit                  -> exit(0) without WSACleanup (the kernel closes)
 */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_client.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void to_wide(const char *s, WCHAR *w, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        w[i] = (WCHAR)(unsigned char)s[i];
    w[i] = 0;
}

static void narrow(const WCHAR *w, char *out, size_t cap)
{
    size_t i = 0;
    for (; w && w[i] && i + 1 < cap; i++)
        out[i] = w[i] < 0x80 ? (char)w[i] : '?';
    out[i] = '\0';
}

static int err_line(void)
{
    int code = WSAGetLastError();
    printf("err %d %s\n", code, nspv2_client_error_text());
    return code;
}

/* Look name up: the results count (>= 0), or -1 with the error kept. */
static int lookup(const char *name, char *comment, size_t cap)
{
    WCHAR wname[256];
    WSAQUERYSETW qs;
    HANDLE h;
    union {
        WSAQUERYSETW qs;
        unsigned char bytes[4096];
    } buf;
    to_wide(name, wname, 256);
    memset(&qs, 0, sizeof qs);
    qs.dwSize = sizeof qs;
    qs.lpszServiceInstanceName = wname;
    qs.dwNameSpace = NS_EMAIL;
    if (comment && cap)
        comment[0] = '\0';
    if (WSALookupServiceBeginW(&qs, LUP_RETURN_ALL, &h) != 0)
        return -1;
    int n = 0;
    for (;;) {
        DWORD len = sizeof buf;
        if (WSALookupServiceNextW(h, 0, &len, &buf.qs) != 0) {
            int code = WSAGetLastError();
            if (code == WSA_E_NO_MORE)
                break;
            WSALookupServiceEnd(h);
            WSASetLastError(code);
            return -1;
        }
        if (n == 0 && comment)
            narrow(buf.qs.lpszComment, comment, cap);
        n++;
    }
    if (WSALookupServiceEnd(h) != 0)
        return -1;
    return n;
}

/* A GUID in its 8-4-4-4-12 text form (no braces): 0, or -1. */
static int parse_guid(const char *s, GUID *g)
{
    unsigned long d1;
    unsigned d2, d3, b[8];
    if (strlen(s) != 36 ||
        sscanf(s, "%8lx-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x", &d1, &d2, &d3, &b[0], &b[1], &b[2],
               &b[3], &b[4], &b[5], &b[6], &b[7]) != 11)
        return -1;
    g->Data1 = (uint32_t)d1;
    g->Data2 = (uint16_t)d2;
    g->Data3 = (uint16_t)d3;
    for (int i = 0; i < 8; i++)
        g->Data4[i] = (uint8_t)b[i];
    return 0;
}

/* A query set for name in namespace ns (wname and id outlive it). */
static void query_set(WSAQUERYSETW *qs, const char *name, WCHAR *wname, DWORD ns,
                      const char *guid, GUID *id)
{
    to_wide(name, wname, 256);
    memset(qs, 0, sizeof *qs);
    qs->dwSize = sizeof *qs;
    qs->lpszServiceInstanceName = wname;
    qs->dwNameSpace = ns;
    if (guid && *guid && parse_guid(guid, id) == 0)
        qs->lpNSProviderId = id;
}

/* lookupx: every result's comment into out; the count, or -1. */
static int lookup_all(const char *name, DWORD ns, DWORD flags, const char *guid, char *out,
                      size_t cap)
{
    WCHAR wname[256];
    GUID id;
    WSAQUERYSETW qs;
    HANDLE h;
    union {
        WSAQUERYSETW qs;
        unsigned char bytes[4096];
    } buf;
    query_set(&qs, name, wname, ns, guid, &id);
    out[0] = '\0';
    if (WSALookupServiceBeginW(&qs, flags, &h) != 0)
        return -1;
    int n = 0;
    size_t at = 0;
    for (;;) {
        DWORD len = sizeof buf;
        if (WSALookupServiceNextW(h, 0, &len, &buf.qs) != 0) {
            int code = WSAGetLastError();
            if (code == WSA_E_NO_MORE)
                break;
            WSALookupServiceEnd(h);
            WSASetLastError(code);
            return -1;
        }
        char one[128];
        narrow(buf.qs.lpszComment, one, sizeof one);
        if (at < cap)
            at += (size_t)snprintf(out + at, cap - at, "%s%s", n ? "," : "",
                                   one[0] ? one : "-");
        n++;
    }
    if (WSALookupServiceEnd(h) != 0)
        return -1;
    return n;
}

typedef struct job {
    const char *name;
    int cycles, failed;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    for (int i = 0; i < j->cycles; i++)
        if (lookup(j->name, NULL, 0) != 1)
            j->failed++;
    return NULL;
}

static void run(const char *line);

/* The fifth word of line (after the command and three arguments), or "". */
static const char *fourth(const char *line)
{
    static _Thread_local char word[64];
    char skip[4][256];
    word[0] = '\0';
    if (sscanf(line, "%255s %255s %255s %255s %63s", skip[0], skip[1], skip[2], skip[3], word) <
        5)
        word[0] = '\0';
    return word;
}

/* fork CMDS: the child runs CMDS (';' between them) and exits; the parent
 * answers once it has. */
static void run_fork(const char *cmds)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("err 0 fork failed\n");
        return;
    }
    if (pid == 0) {
        alarm(30); /* a child stuck in the library dies rather than hangs */
        char copy[512];
        snprintf(copy, sizeof copy, "%s", cmds);
        char *save = NULL;
        for (char *one = strtok_r(copy, ";\n", &save); one; one = strtok_r(NULL, ";\n", &save))
            run(one);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (WIFSIGNALED(status))
        printf("err 0 child %ld killed by signal %d\n", (long)pid, WTERMSIG(status));
    else
        printf("ok child %ld exited %d\n", (long)pid, WEXITSTATUS(status));
}

static void run(const char *line)
{
    {
        char cmd[32] = "", a[256] = "", b[64] = "", c[256] = "";
        if (sscanf(line, "%31s %255s %63s %255s", cmd, a, b, c) < 1)
            return;
        if (!strcmp(cmd, "startup")) {
            WSADATA wsa;
            int rc = WSAStartup(0x0202, &wsa);
            if (rc != 0)
                printf("err %d startup\n", rc);
            else
                printf("ok %u.%u\n", wsa.wVersion & 0xFF, wsa.wVersion >> 8);
        } else if (!strcmp(cmd, "cleanup")) {
            if (WSACleanup() == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "connect")) {
            if (nspv2_client_connect() == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "timeout")) {
            nspv2_client_set_timeout_ms((uint32_t)strtoul(a, NULL, 10));
            printf("ok\n");
        } else if (!strcmp(cmd, "abandon")) {
            if (nspv2_client_abandon() == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "info")) {
            nspv2_client_info info;
            nspv2_client_info_get(&info);
            printf("ok state=%u startups=%u pid=%u keepalive_ms=%u providers=%u requests=%u "
                   "keepalives=%llu socket=%s\n",
                   info.state, info.startups, info.server_pid, info.keepalive_ms,
                   info.providers, info.requests, (unsigned long long)info.keepalives,
                   info.socket_path);
        } else if (!strcmp(cmd, "lookup")) {
            char comment[128];
            int n = lookup(a, comment, sizeof comment);
            if (n < 0)
                err_line();
            else
                printf("ok %d %s\n", n, comment);
        } else if (!strcmp(cmd, "register")) {
            WCHAR wname[256];
            WSAQUERYSETW qs;
            to_wide(a, wname, 256);
            memset(&qs, 0, sizeof qs);
            qs.dwSize = sizeof qs;
            qs.lpszServiceInstanceName = wname;
            qs.dwNameSpace = NS_EMAIL;
            if (WSASetServiceW(&qs, RNRSERVICE_REGISTER, 0) == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "lookupx")) {
            char out[1024];
            int n = lookup_all(a, (DWORD)strtoul(b, NULL, 0), (DWORD)strtoul(c, NULL, 0),
                               fourth(line), out, sizeof out);
            if (n < 0)
                err_line();
            else
                printf("ok %d %s\n", n, out);
        } else if (!strcmp(cmd, "begin")) {
            WCHAR wname[256];
            GUID id;
            WSAQUERYSETW qs;
            HANDLE h;
            query_set(&qs, a, wname, (DWORD)strtoul(b, NULL, 0), NULL, &id);
            if (WSALookupServiceBeginW(&qs, (DWORD)strtoul(c, NULL, 0), &h) == 0)
                printf("ok %llu\n", (unsigned long long)(uintptr_t)h);
            else
                err_line();
        } else if (!strcmp(cmd, "next")) {
            union {
                WSAQUERYSETW qs;
                unsigned char bytes[4096];
            } buf;
            DWORD len = sizeof buf;
            HANDLE h = (HANDLE)(uintptr_t)strtoull(a, NULL, 0);
            if (WSALookupServiceNextW(h, 0, &len, &buf.qs) == 0) {
                char one[128];
                narrow(buf.qs.lpszComment, one, sizeof one);
                printf("ok %s\n", one[0] ? one : "-");
            } else {
                err_line();
            }
        } else if (!strcmp(cmd, "end")) {
            if (WSALookupServiceEnd((HANDLE)(uintptr_t)strtoull(a, NULL, 0)) == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "setx")) {
            WCHAR wname[256];
            GUID id;
            WSAQUERYSETW qs;
            query_set(&qs, a, wname, (DWORD)strtoul(b, NULL, 0), fourth(line), &id);
            if (WSASetServiceW(&qs, (WSAESETSERVICEOP)strtoul(c, NULL, 0), 0) == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "next-bad")) {
            union {
                WSAQUERYSETW qs;
                unsigned char bytes[1024];
            } buf;
            DWORD len = sizeof buf;
            if (WSALookupServiceNextW((HANDLE)(uintptr_t)0x7777, 0, &len, &buf.qs) == 0)
                printf("ok\n");
            else
                err_line();
        } else if (!strcmp(cmd, "threads")) {
            int n = atoi(a), m = atoi(b);
            if (n < 1 || n > 64 || m < 1) {
                printf("err 0 bad threads command\n");
                return;
            }
            pthread_t t[64];
            job jobs[64];
            for (int i = 0; i < n; i++) {
                jobs[i] = (job){c, m, 0};
                pthread_create(&t[i], NULL, worker, &jobs[i]);
            }
            int failed = 0;
            for (int i = 0; i < n; i++) {
                pthread_join(t[i], NULL);
                failed += jobs[i].failed;
            }
            printf("ok %d %d\n", n * m, failed);
        } else if (!strcmp(cmd, "sleep")) {
            long ms = atol(a);
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            printf("ok\n");
        } else if (!strcmp(cmd, "fork")) {
            const char *rest = strstr(line, "fork") + 4;
            while (*rest == ' ')
                rest++;
            run_fork(rest);
        } else if (!strcmp(cmd, "exit")) {
            fflush(stdout);
            _exit(0);
        } else {
            printf("err 0 unknown command %s\n", cmd);
        }
    }
}

int main(void)
{
    char line[512];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin))
        run(line);
    return 0;
}
