/*
 * compat.c - what a Windows provider process calls besides the NSPv2
 * functions, for non-Windows builds: WSAStartup / WSACleanup,
 * SetConsoleCtrlHandler and the host's way to deliver a console control
 * event (nspv2_host_console_event: how a loader tells a native provider to
 * stop), and the non-inline parts of nspv2_compat.h (recursive critical
 * sections, events, Sleep). On Windows all of these come from ws2_32 and
 * kernel32, and this file is empty.
 */
#if !defined(_WIN32)

#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#define NSPV2_COMPAT_IMPLEMENTATION
#include "nspv2_compat.h"

#include "platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- WSAStartup / WSACleanup ---------------------------------------------- */

static nspv2_mutex startup_lock = NSPV2_MUTEX_INIT;
static uint64_t startup_count; /* successful WSAStartup calls not yet cleaned up */

NSPV2_HOST_API int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData)
{
    const WORD highest = MAKEWORD(2, 2);
    BYTE major = LOBYTE(wVersionRequested), minor = HIBYTE(wVersionRequested);
    if (!lpWSAData)
        return WSAEFAULT;
    memset(lpWSAData, 0, sizeof *lpWSAData);
    lpWSAData->wHighVersion = highest;
    if (major > 2 || (major == 2 && minor > 2))
        lpWSAData->wVersion = highest;
    else
        lpWSAData->wVersion = wVersionRequested;
    memcpy(lpWSAData->szDescription, "WinSock 2.0", sizeof "WinSock 2.0");
    memcpy(lpWSAData->szSystemStatus, "Running", sizeof "Running");
    if (major == 0)
        return WSAVERNOTSUPPORTED; /* nothing below 1.0 exists */
    nspv2_mutex_lock(&startup_lock);
    startup_count++;
    nspv2_mutex_unlock(&startup_lock);
    return 0;
}

NSPV2_HOST_API int WSAAPI WSACleanup(void)
{
    int ok;
    nspv2_mutex_lock(&startup_lock);
    ok = startup_count > 0;
    if (ok)
        startup_count--;
    nspv2_mutex_unlock(&startup_lock);
    if (!ok) {
        WSASetLastError(WSANOTINITIALISED);
        return SOCKET_ERROR;
    }
    return 0;
}

/* ---- console control handlers ----------------------------------------------- */

static nspv2_mutex console_lock = NSPV2_MUTEX_INIT;
static PHANDLER_ROUTINE *console_handlers; /* registration order */
static size_t console_count, console_room;

NSPV2_HOST_API BOOL WINAPI SetConsoleCtrlHandler(PHANDLER_ROUTINE HandlerRoutine, BOOL Add)
{
    BOOL ok = TRUE;
    if (!HandlerRoutine)
        return TRUE; /* Windows: ignore / restore Ctrl-C for the process; nothing to do here */
    nspv2_mutex_lock(&console_lock);
    if (Add) {
        if (console_count == console_room) {
            size_t room = console_room ? console_room * 2 : 8;
            PHANDLER_ROUTINE *grown = realloc(console_handlers, room * sizeof *grown);
            if (grown) {
                console_handlers = grown;
                console_room = room;
            }
        }
        if (console_count < console_room)
            console_handlers[console_count++] = HandlerRoutine;
        else
            ok = FALSE;
    } else {
        size_t i = console_count;
        while (i > 0 && console_handlers[i - 1] != HandlerRoutine)
            i--;
        if (i == 0) {
            ok = FALSE;
        } else {
            memmove(&console_handlers[i - 1], &console_handlers[i],
                    (console_count - i) * sizeof *console_handlers);
            console_count--;
        }
    }
    nspv2_mutex_unlock(&console_lock);
    if (!ok)
        WSASetLastError(Add ? (int)ERROR_NOT_ENOUGH_MEMORY : (int)ERROR_INVALID_PARAMETER);
    return ok;
}

typedef struct console_delivery {
    DWORD ctrl_type;
    PHANDLER_ROUTINE *handlers; /* a snapshot, registration order */
    size_t count;
    BOOL handled;
} console_delivery;

static void console_deliver(void *arg)
{
    console_delivery *d = arg;
    for (size_t i = d->count; i > 0 && !d->handled; i--)
        d->handled = d->handlers[i - 1](d->ctrl_type) ? TRUE : FALSE;
}

NSPV2_HOST_API BOOL nspv2_host_console_event(DWORD ctrl_type)
{
    console_delivery d = {ctrl_type, NULL, 0, FALSE};
    nspv2_thread thread;
    if (ctrl_type > CTRL_CLOSE_EVENT && ctrl_type != CTRL_LOGOFF_EVENT &&
        ctrl_type != CTRL_SHUTDOWN_EVENT) {
        WSASetLastError((int)ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    int out_of_memory = 0;
    nspv2_mutex_lock(&console_lock); /* console_count is read only under it */
    if (console_count) {
        d.handlers = malloc(console_count * sizeof *d.handlers);
        if (d.handlers) {
            memcpy(d.handlers, console_handlers, console_count * sizeof *d.handlers);
            d.count = console_count;
        } else {
            out_of_memory = 1;
        }
    }
    nspv2_mutex_unlock(&console_lock);
    if (out_of_memory) {
        WSASetLastError((int)ERROR_NOT_ENOUGH_MEMORY);
        return FALSE;
    }
    if (d.count == 0)
        return FALSE;
    if (nspv2_thread_create(&thread, console_deliver, &d) != 0) {
        free(d.handlers);
        WSASetLastError((int)ERROR_NOT_ENOUGH_MEMORY);
        return FALSE;
    }
    nspv2_thread_join(thread);
    free(d.handlers);
    return d.handled;
}

/* ---- critical sections ------------------------------------------------------ */

NSPV2_HOST_API void nspv2_compat_cs_init(LPCRITICAL_SECTION cs, DWORD spin)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&cs->nspv2_mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    cs->SpinCount = spin;
}
NSPV2_HOST_API void nspv2_compat_cs_enter(LPCRITICAL_SECTION cs)
{
    pthread_mutex_lock(&cs->nspv2_mutex);
}
NSPV2_HOST_API BOOL nspv2_compat_cs_try_enter(LPCRITICAL_SECTION cs)
{
    return pthread_mutex_trylock(&cs->nspv2_mutex) == 0;
}
NSPV2_HOST_API void nspv2_compat_cs_leave(LPCRITICAL_SECTION cs)
{
    pthread_mutex_unlock(&cs->nspv2_mutex);
}
NSPV2_HOST_API void nspv2_compat_cs_delete(LPCRITICAL_SECTION cs)
{
    pthread_mutex_destroy(&cs->nspv2_mutex);
}

/* ---- events ------------------------------------------------------------------ */

/* Live events are kept in a list so that a handle that is not one (or was
 * closed) is refused instead of dereferenced. */
typedef struct compat_event {
    struct compat_event *next;
    nspv2_mutex lock;
    nspv2_cond cond;
    BOOL manual_reset;
    BOOL signaled;
    uint32_t users; /* waiters inside nspv2_compat_wait */
    BOOL closed;
} compat_event;

static nspv2_mutex events_lock = NSPV2_MUTEX_INIT;
static compat_event *events;

/* Under events_lock: the live event h is, or NULL. */
static compat_event *event_find(HANDLE h)
{
    for (compat_event *e = events; e; e = e->next)
        if ((HANDLE)e == h && !e->closed)
            return e;
    return NULL;
}

static void event_free(compat_event *e)
{
    nspv2_cond_destroy(&e->cond);
    nspv2_mutex_destroy(&e->lock);
    free(e);
}

NSPV2_HOST_API HANDLE nspv2_compat_event_create(BOOL manual_reset, BOOL initial_state)
{
    compat_event *e = calloc(1, sizeof *e);
    if (!e) {
        WSASetLastError((int)ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    nspv2_mutex_init(&e->lock);
    nspv2_cond_init(&e->cond);
    e->manual_reset = manual_reset ? TRUE : FALSE;
    e->signaled = initial_state ? TRUE : FALSE;
    nspv2_mutex_lock(&events_lock);
    e->next = events;
    events = e;
    nspv2_mutex_unlock(&events_lock);
    return (HANDLE)e;
}

static BOOL event_signal(HANDLE h, BOOL signaled)
{
    nspv2_mutex_lock(&events_lock);
    compat_event *e = event_find(h);
    if (e) {
        nspv2_mutex_lock(&e->lock);
        e->signaled = signaled;
        if (signaled)
            nspv2_cond_broadcast(&e->cond);
        nspv2_mutex_unlock(&e->lock);
    }
    nspv2_mutex_unlock(&events_lock);
    if (!e)
        WSASetLastError((int)ERROR_INVALID_HANDLE);
    return e != NULL;
}

NSPV2_HOST_API BOOL nspv2_compat_event_set(HANDLE event) { return event_signal(event, TRUE); }
NSPV2_HOST_API BOOL nspv2_compat_event_reset(HANDLE event) { return event_signal(event, FALSE); }

NSPV2_HOST_API DWORD nspv2_compat_wait(HANDLE handle, DWORD milliseconds)
{
    nspv2_mutex_lock(&events_lock);
    compat_event *e = event_find(handle);
    if (e)
        e->users++; /* keeps it allocated past a CloseHandle from another thread */
    nspv2_mutex_unlock(&events_lock);
    if (!e) {
        WSASetLastError((int)ERROR_INVALID_HANDLE);
        return WAIT_FAILED;
    }
    DWORD result = WAIT_OBJECT_0;
    uint64_t deadline = nspv2_now_ns() + (uint64_t)milliseconds * 1000000u;
    nspv2_mutex_lock(&e->lock);
    while (!e->signaled) {
        if (milliseconds == INFINITE) {
            nspv2_cond_wait(&e->cond, &e->lock);
            continue;
        }
        uint64_t now = nspv2_now_ns();
        if (now >= deadline) {
            result = WAIT_TIMEOUT;
            break;
        }
        uint64_t left_ms = (deadline - now + 999999u) / 1000000u;
        nspv2_cond_timedwait_ms(&e->cond, &e->lock, (uint32_t)left_ms);
    }
    if (result == WAIT_OBJECT_0 && !e->manual_reset)
        e->signaled = FALSE; /* auto-reset: this waiter consumed it */
    nspv2_mutex_unlock(&e->lock);

    nspv2_mutex_lock(&events_lock);
    BOOL last = --e->users == 0 && e->closed;
    if (last) {
        compat_event **p = &events;
        while (*p != e)
            p = &(*p)->next;
        *p = e->next;
    }
    nspv2_mutex_unlock(&events_lock);
    if (last)
        event_free(e);
    return result;
}

NSPV2_HOST_API BOOL nspv2_compat_close_handle(HANDLE handle)
{
    nspv2_mutex_lock(&events_lock);
    compat_event *e = event_find(handle);
    BOOL now = FALSE;
    if (e) {
        e->closed = TRUE;
        now = e->users == 0;
        if (now) {
            compat_event **p = &events;
            while (*p != e)
                p = &(*p)->next;
            *p = e->next;
        }
    }
    nspv2_mutex_unlock(&events_lock);
    if (!e) {
        WSASetLastError((int)ERROR_INVALID_HANDLE);
        return FALSE;
    }
    if (now)
        event_free(e);
    return TRUE;
}

NSPV2_HOST_API void nspv2_compat_sleep(DWORD milliseconds)
{
    if (milliseconds == INFINITE) {
        for (;;)
            pause();
    }
    nspv2_sleep_ms(milliseconds);
}

NSPV2_HOST_API DWORD nspv2_compat_thread_id(void)
{
    static nspv2_mutex lock = NSPV2_MUTEX_INIT;
    static DWORD next = 1;
    static _Thread_local DWORD mine;
    if (!mine) {
        nspv2_mutex_lock(&lock);
        mine = next++;
        nspv2_mutex_unlock(&lock);
    }
    return mine;
}

#else
typedef int nspv2_compat_unused; /* ISO C wants something in a translation unit */
#endif /* !_WIN32 */
