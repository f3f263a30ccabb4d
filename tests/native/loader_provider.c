/*
 * loader_provider.c - a small native provider for the loader and harness tests.
 *
 * Its main() behaves like a provider process, with options to misbehave:
 *
 *   (none)            advertise one provider, wait for the console close
 *                     event, unadvertise, return --exit's code (default 0)
 *   --count N         advertise N providers (ids ...-000000000001 .. N)
 *   --null-slots      Startup, Cleanup, SetServiceEx and Rundown left NULL
 *   --install NAME    WSCInstallNameSpaceEx(NAME, --namespace NS) first, with
 *                     the blob "loader-blob" when --blob is given (failing:
 *                     return 67). Without it each provider not in the
 *                     catalog yet is installed without identifier or blob
 *                     (an advertise needs it: WSAEINVALIDPROVIDER), and
 *                     what it installed is uninstalled at the end
 *   --return N        return N at once, advertising nothing
 *   --block           advertise nothing, wait for the close event
 *   --leave           on close, return without unadvertising
 *   --no-handler      register no console handler: wait --linger-ms (default
 *                     2000) instead, then unadvertise and return
 *   --other-host LIB  advertise through LIB's own WSAAdvertiseProvider
 *                     (dlopen RTLD_LOCAL): the provider lands on that copy
 *   --exit N          the code main returns after a normal stop
 *
 * The provider: any name registered with SetServiceEx (RNRSERVICE_REGISTER)
 * in a session is found until that session's Cleanup or Rundown or a
 * DELETE; names ending in "@example.com" are always found. One result per
 * lookup: the name, with comment "registered" or "listed". NextEx and
 * SetServiceEx complete on a thread of their own; a NextEx for a name
 * starting with "silent" is never completed.
 *
 * loader_count("startups" | "cleanups" | "rundowns" | "registered" |
 * "nexts") reads its counters.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nspv2_host.h"

#ifndef TRUE
#define TRUE 1
#define FALSE 0
#endif

#define MAX_NAMES 256
#define MAX_LOOKUPS 256
#define NAME_CHARS 128
#define MAX_PROVIDERS 4

typedef INT(WSAAPI *advertise_fn)(const GUID *, const NSPV2_ROUTINE *);
typedef INT(WSAAPI *unadvertise_fn)(const GUID *);

typedef struct {
    WCHAR name[NAME_CHARS];
    size_t len;
    uintptr_t session;
    int used;
} reg_name;

typedef struct {
    uintptr_t handle;
    WCHAR name[NAME_CHARS];
    size_t len;
    int registered;
    int served;
} lookup;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop_requested;
static reg_name names[MAX_NAMES];
static lookup lookups[MAX_LOOKUPS];
static uintptr_t next_number = 0x100;
static int n_startups, n_cleanups, n_rundowns, n_registered, n_nexts;

int loader_count(const char *what)
{
    int v = -1;
    pthread_mutex_lock(&lock);
    if (strcmp(what, "startups") == 0) v = n_startups;
    else if (strcmp(what, "cleanups") == 0) v = n_cleanups;
    else if (strcmp(what, "rundowns") == 0) v = n_rundowns;
    else if (strcmp(what, "registered") == 0) v = n_registered;
    else if (strcmp(what, "nexts") == 0) v = n_nexts;
    pthread_mutex_unlock(&lock);
    return v;
}

static INT fail(int code)
{
    WSASetLastError(code);
    return SOCKET_ERROR;
}

static size_t wlen(const WCHAR *s)
{
    size_t n = 0;
    while (s[n] && n < NAME_CHARS) n++;
    return n;
}

static int listed(const WCHAR *s, size_t n)
{
    static const char tail[] = "@example.com";
    size_t t = sizeof tail - 1;
    if (n <= t) return 0;
    for (size_t i = 0; i < t; i++)
        if (s[n - t + i] != (WCHAR)tail[i]) return 0;
    return 1;
}

/* Under lock. */
static reg_name *find_name(const WCHAR *s, size_t n)
{
    for (size_t i = 0; i < MAX_NAMES; i++)
        if (names[i].used && names[i].len == n && memcmp(names[i].name, s, n * sizeof *s) == 0)
            return &names[i];
    return NULL;
}

static void drop_session(uintptr_t session)
{
    for (size_t i = 0; i < MAX_NAMES; i++)
        if (names[i].used && names[i].session == session) names[i].used = 0;
}

/* ---- the routine table ---- */

static INT WSAAPI p_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    if (!arg) return fail(WSAEINVAL);
    pthread_mutex_lock(&lock);
    *arg = (LPVOID)(next_number++);
    n_startups++;
    pthread_mutex_unlock(&lock);
    return NO_ERROR;
}

static INT WSAAPI p_cleanup(LPGUID id, LPVOID arg)
{
    (void)id;
    pthread_mutex_lock(&lock);
    drop_session((uintptr_t)arg);
    n_cleanups++;
    pthread_mutex_unlock(&lock);
    return NO_ERROR;
}

static VOID WSAAPI p_rundown(LPGUID id, LPVOID arg)
{
    (void)id;
    pthread_mutex_lock(&lock);
    drop_session((uintptr_t)arg);
    n_rundowns++;
    pthread_mutex_unlock(&lock);
}

static INT WSAAPI p_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg, LPHANDLE out)
{
    (void)id;
    (void)flags;
    (void)arg;
    if (!qs || !out || qs->dwSize < sizeof *qs || !qs->lpszServiceInstanceName)
        return fail(WSAEINVAL);
    size_t n = wlen(qs->lpszServiceInstanceName);
    if (n == 0 || n >= NAME_CHARS) return fail(WSAEINVAL);
    pthread_mutex_lock(&lock);
    int registered = find_name(qs->lpszServiceInstanceName, n) != NULL;
    if (!registered && !listed(qs->lpszServiceInstanceName, n)) {
        pthread_mutex_unlock(&lock);
        return fail(WSASERVICE_NOT_FOUND);
    }
    for (size_t i = 0; i < MAX_LOOKUPS; i++) {
        if (lookups[i].handle == 0) {
            lookups[i].handle = next_number++;
            memcpy(lookups[i].name, qs->lpszServiceInstanceName, n * sizeof(WCHAR));
            lookups[i].len = n;
            lookups[i].registered = registered;
            lookups[i].served = 0;
            *out = (HANDLE)lookups[i].handle;
            pthread_mutex_unlock(&lock);
            return NO_ERROR;
        }
    }
    pthread_mutex_unlock(&lock);
    return fail(WSA_NOT_ENOUGH_MEMORY);
}

static INT WSAAPI p_end(HANDLE h)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < MAX_LOOKUPS; i++) {
        if (h && lookups[i].handle == (uintptr_t)h) {
            lookups[i].handle = 0;
            pthread_mutex_unlock(&lock);
            return NO_ERROR;
        }
    }
    pthread_mutex_unlock(&lock);
    return fail(WSA_INVALID_HANDLE);
}

typedef struct {
    HANDLE async;
    HANDLE lookup;
    LPDWORD length;
    LPWSAQUERYSET2W out;
} next_job;

static const WCHAR comment_registered[] = {'r', 'e', 'g', 'i', 's', 't', 'e', 'r', 'e', 'd', 0};
static const WCHAR comment_listed[] = {'l', 'i', 's', 't', 'e', 'd', 0};

static void *next_thread(void *p)
{
    next_job job = *(next_job *)p;
    free(p);
    INT code = NO_ERROR;
    pthread_mutex_lock(&lock);
    n_nexts++;
    lookup *l = NULL;
    for (size_t i = 0; i < MAX_LOOKUPS; i++)
        if (job.lookup && lookups[i].handle == (uintptr_t)job.lookup) l = &lookups[i];
    if (!l) {
        code = WSA_INVALID_HANDLE;
    } else if (l->served) {
        code = WSA_E_NO_MORE;
    } else {
        const WCHAR *comment = l->registered ? comment_registered : comment_listed;
        size_t clen = wlen(comment) + 1;
        size_t name_at = sizeof(WSAQUERYSET2W);
        size_t comment_at = name_at + (l->len + 1) * sizeof(WCHAR);
        size_t need = comment_at + clen * sizeof(WCHAR);
        if (!job.length || !job.out || *job.length < need) {
            if (job.length) *job.length = (DWORD)need;
            code = WSAEFAULT;
        } else {
            unsigned char *base = (unsigned char *)job.out;
            WSAQUERYSET2W qs;
            memset(&qs, 0, sizeof qs);
            qs.dwSize = sizeof qs;
            qs.dwNameSpace = NS_EMAIL;
            qs.lpszServiceInstanceName = (LPWSTR)(base + name_at);
            qs.lpszComment = (LPWSTR)(base + comment_at);
            memcpy(base + name_at, l->name, l->len * sizeof(WCHAR));
            memset(base + name_at + l->len * sizeof(WCHAR), 0, sizeof(WCHAR));
            memcpy(base + comment_at, comment, clen * sizeof(WCHAR));
            memcpy(base, &qs, sizeof qs);
            l->served = 1;
        }
    }
    int silent = l && l->len >= 6 && l->name[0] == 's' && l->name[1] == 'i' && l->name[2] == 'l' &&
                 l->name[3] == 'e' && l->name[4] == 'n' && l->name[5] == 't';
    pthread_mutex_unlock(&lock);
    if (!silent) WSAProviderCompleteAsyncCall(job.async, code);
    return NULL;
}

static void on_thread(void *(*fn)(void *), void *job)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fn, job) != 0) fn(job); /* no thread: complete here */
    pthread_attr_destroy(&attr);
}

static VOID WSAAPI p_next(HANDLE async, HANDLE h, DWORD flags, LPDWORD length,
                          LPWSAQUERYSET2W out)
{
    (void)flags;
    next_job *job = malloc(sizeof *job);
    if (!job) {
        WSAProviderCompleteAsyncCall(async, WSA_NOT_ENOUGH_MEMORY);
        return;
    }
    job->async = async;
    job->lookup = h;
    job->length = length;
    job->out = out;
    on_thread(next_thread, job);
}

typedef struct {
    HANDLE async;
    INT code;
} done_job;

static void *complete_thread(void *p)
{
    done_job job = *(done_job *)p;
    free(p);
    WSAProviderCompleteAsyncCall(job.async, job.code);
    return NULL;
}

static VOID WSAAPI p_set_service(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                 WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)id;
    (void)flags;
    INT code = NO_ERROR;
    size_t n = 0;
    if (!qs || qs->dwSize < sizeof *qs || !qs->lpszServiceInstanceName ||
        (n = wlen(qs->lpszServiceInstanceName)) == 0 || n >= NAME_CHARS) {
        code = WSAEINVAL;
    } else {
        pthread_mutex_lock(&lock);
        reg_name *r = find_name(qs->lpszServiceInstanceName, n);
        if (op == RNRSERVICE_REGISTER) {
            if (!r) {
                for (size_t i = 0; i < MAX_NAMES && !r; i++)
                    if (!names[i].used) r = &names[i];
            }
            if (!r) {
                code = WSA_NOT_ENOUGH_MEMORY;
            } else {
                memcpy(r->name, qs->lpszServiceInstanceName, n * sizeof(WCHAR));
                r->len = n;
                r->session = (uintptr_t)arg;
                r->used = 1;
                n_registered++;
            }
        } else if (r) {
            r->used = 0;
        } else {
            code = WSASERVICE_NOT_FOUND;
        }
        pthread_mutex_unlock(&lock);
    }
    done_job *job = malloc(sizeof *job);
    if (!job) {
        WSAProviderCompleteAsyncCall(async, WSA_NOT_ENOUGH_MEMORY);
        return;
    }
    job->async = async;
    job->code = code;
    on_thread(complete_thread, job);
}

/* ---- the provider process ---- */

static BOOL WINAPI on_console(DWORD type)
{
    if (type != CTRL_CLOSE_EVENT && type != CTRL_C_EVENT) return FALSE;
    pthread_mutex_lock(&lock);
    stop_requested = 1;
    pthread_cond_broadcast(&stop_cond);
    pthread_mutex_unlock(&lock);
    return TRUE;
}

static void wait_for_stop(long linger_ms)
{
    pthread_mutex_lock(&lock);
    if (linger_ms < 0) {
        while (!stop_requested) pthread_cond_wait(&stop_cond, &lock);
    } else {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += linger_ms / 1000;
        until.tv_nsec += (linger_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!stop_requested && pthread_cond_timedwait(&stop_cond, &lock, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&lock);
}

static void to_wide(const char *s, WCHAR *out, size_t room)
{
    size_t i = 0;
    for (; s[i] && i + 1 < room; i++) out[i] = (WCHAR)(unsigned char)s[i];
    out[i] = 0;
}

int main(int argc, char **argv)
{
    int count = 1, null_slots = 0, block = 0, leave = 0, handler = 1, exit_code = 0;
    long linger_ms = 2000;
    const char *install = NULL, *other = NULL;
    DWORD name_space = NS_EMAIL;
    int blob = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
        if (strcmp(a, "--count") == 0) count = atoi(v), i++;
        else if (strcmp(a, "--null-slots") == 0) null_slots = 1;
        else if (strcmp(a, "--install") == 0) install = v, i++;
        else if (strcmp(a, "--namespace") == 0) name_space = (DWORD)atol(v), i++;
        else if (strcmp(a, "--blob") == 0) blob = 1;
        else if (strcmp(a, "--return") == 0) return atoi(v);
        else if (strcmp(a, "--block") == 0) block = 1;
        else if (strcmp(a, "--leave") == 0) leave = 1;
        else if (strcmp(a, "--no-handler") == 0) handler = 0;
        else if (strcmp(a, "--linger-ms") == 0) linger_ms = atol(v), i++;
        else if (strcmp(a, "--other-host") == 0) other = v, i++;
        else if (strcmp(a, "--exit") == 0) exit_code = atoi(v), i++;
        else return 64; /* EX_USAGE */
    }
    if (count < 1 || count > MAX_PROVIDERS) return 64;

    /* A fresh run: this library may have been run before in this process. */
    pthread_mutex_lock(&lock);
    stop_requested = 0;
    memset(names, 0, sizeof names);
    memset(lookups, 0, sizeof lookups);
    n_startups = n_cleanups = n_rundowns = n_registered = n_nexts = 0;
    pthread_mutex_unlock(&lock);

    advertise_fn advertise = WSAAdvertiseProvider;
    unadvertise_fn unadvertise = WSAUnadvertiseProvider;
    if (other) {
        void *lib = dlopen(other, RTLD_NOW | RTLD_LOCAL);
        if (!lib) return 65;
        /* POSIX: a data pointer converted to a function pointer */
        *(void **)&advertise = dlsym(lib, "WSAAdvertiseProvider");
        *(void **)&unadvertise = dlsym(lib, "WSAUnadvertiseProvider");
        if (!advertise || !unadvertise) return 66;
    }
    if (handler) SetConsoleCtrlHandler(on_console, TRUE);

    NSPV2_ROUTINE table;
    memset(&table, 0, sizeof table);
    table.cbSize = sizeof table;
    table.dwMajorVersion = 1;
    table.dwMinorVersion = 1;
    table.NSPv2LookupServiceBegin = p_begin;
    NSPV2_SLOT(table, NSPv2LookupServiceNextEx, p_next);
    table.NSPv2LookupServiceEnd = p_end;
    if (!null_slots) {
        table.NSPv2Startup = p_startup;
        table.NSPv2Cleanup = p_cleanup;
        NSPV2_SLOT(table, NSPv2SetServiceEx, p_set_service);
        NSPV2_SLOT(table, NSPv2ClientSessionRundown, p_rundown);
    }

    /* {4c4f4144-4552-4e53-8a1f-00000000000N} */
    GUID ids[MAX_PROVIDERS];
    for (int i = 0; i < count; i++) {
        GUID g = {0x4c4f4144, 0x4552, 0x4e53, {0x8a, 0x1f, 0, 0, 0, 0, 0, (BYTE)(i + 1)}};
        ids[i] = g;
    }
    int rc = 0;
    int advertised = 0;
    int ours[MAX_PROVIDERS] = {0}; /* installed here without --install */
    if (!block) {
        for (int i = install ? 1 : 0; i < count; i++) {
            if (WSCInstallNameSpaceEx(NULL, NULL, name_space, 1, &ids[i], NULL) == NO_ERROR)
                ours[i] = 1;
            else if (WSAGetLastError() != WSANO_RECOVERY) { /* WSANO_RECOVERY: installed */
                rc = 67;
                goto out;
            }
        }
        if (install) {
            WCHAR wname[NAME_CHARS];
            to_wide(install, wname, NAME_CHARS);
            static BYTE blob_bytes[] = "loader-blob";
            BLOB b = {sizeof blob_bytes - 1, blob_bytes};
            if (WSCInstallNameSpaceEx(wname, NULL, name_space, 1, &ids[0], blob ? &b : NULL) ==
                SOCKET_ERROR) {
                rc = 67;
                goto out;
            }
        }
        for (; advertised < count; advertised++) {
            if (advertise(&ids[advertised], &table) == SOCKET_ERROR) {
                rc = 68;
                goto out;
            }
        }
    }
    wait_for_stop(handler ? -1 : linger_ms);
    rc = exit_code;
    if (leave) advertised = 0;
out:
    for (int i = 0; i < advertised; i++) unadvertise(&ids[i]);
    if (install && !leave) WSCUnInstallNameSpace(&ids[0]);
    for (int i = 0; i < count; i++)
        if (ours[i] && !leave) WSCUnInstallNameSpace(&ids[i]);
    if (handler) SetConsoleCtrlHandler(on_console, FALSE);
    return rc;
}
