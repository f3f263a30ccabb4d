/*
 * platform.h - the few threading primitives the native host needs, as a thin
 * shim: pthreads and clock_gettime on POSIX, the Win32 API on _WIN32.
 *
 *   nspv2_mutex   lock / unlock (not recursive)
 *   nspv2_cond    wait, wait with a relative timeout in ms, broadcast
 *   nspv2_once    one-time initialisation
 *   nspv2_thread  create / join
 *   NSPV2_TLS_UINTPTR  a per-thread value (the Winsock last error, ...)
 *   nspv2_now_ns  monotonic clock in nanoseconds
 *   nspv2_sleep_ms
 *
 * Internal to native_stub: not installed, not part of the ABI.
 */
#ifndef NSPV2_PLATFORM_H
#define NSPV2_PLATFORM_H

#include <stdint.h>

#ifdef _WIN32

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <string.h>

typedef SRWLOCK nspv2_mutex;
typedef CONDITION_VARIABLE nspv2_cond;
typedef INIT_ONCE nspv2_once;
typedef HANDLE nspv2_thread;

#define NSPV2_MUTEX_INIT SRWLOCK_INIT
#define NSPV2_ONCE_INIT INIT_ONCE_STATIC_INIT

static inline void nspv2_mutex_init(nspv2_mutex *m) { InitializeSRWLock(m); }
static inline void nspv2_mutex_destroy(nspv2_mutex *m) { (void)m; }
static inline void nspv2_mutex_lock(nspv2_mutex *m) { AcquireSRWLockExclusive(m); }
static inline void nspv2_mutex_unlock(nspv2_mutex *m) { ReleaseSRWLockExclusive(m); }

static inline void nspv2_cond_init(nspv2_cond *c) { InitializeConditionVariable(c); }
static inline void nspv2_cond_destroy(nspv2_cond *c) { (void)c; }
static inline void nspv2_cond_wait(nspv2_cond *c, nspv2_mutex *m)
{
    SleepConditionVariableSRW(c, m, INFINITE, 0);
}
/* Returns 0 when woken (or spuriously), 1 when the timeout elapsed. */
static inline int nspv2_cond_timedwait_ms(nspv2_cond *c, nspv2_mutex *m, uint32_t ms)
{
    DWORD wait = ms >= INFINITE ? INFINITE - 1 : (DWORD)ms;
    if (SleepConditionVariableSRW(c, m, wait, 0))
        return 0;
    return GetLastError() == ERROR_TIMEOUT ? 1 : 0;
}
static inline void nspv2_cond_broadcast(nspv2_cond *c) { WakeAllConditionVariable(c); }

typedef void (*nspv2_once_fn)(void);
static inline BOOL CALLBACK nspv2_once_trampoline(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    (void)once;
    (void)ctx;
    nspv2_once_fn fn;
    memcpy(&fn, &param, sizeof fn);
    fn();
    return TRUE;
}
static inline void nspv2_call_once(nspv2_once *once, void (*fn)(void))
{
    PVOID param;
    memcpy(&param, &fn, sizeof param);
    InitOnceExecuteOnce(once, nspv2_once_trampoline, param, NULL);
}

typedef struct nspv2_thread_start {
    void (*fn)(void *);
    void *arg;
} nspv2_thread_start;

static inline DWORD WINAPI nspv2_thread_trampoline(LPVOID p)
{
    nspv2_thread_start start = *(nspv2_thread_start *)p;
    HeapFree(GetProcessHeap(), 0, p);
    start.fn(start.arg);
    return 0;
}
/* Returns 0 on success. */
static inline int nspv2_thread_create(nspv2_thread *t, void (*fn)(void *), void *arg)
{
    nspv2_thread_start *start = HeapAlloc(GetProcessHeap(), 0, sizeof *start);
    if (!start)
        return -1;
    start->fn = fn;
    start->arg = arg;
    *t = CreateThread(NULL, 0, nspv2_thread_trampoline, start, 0, NULL);
    if (!*t) {
        HeapFree(GetProcessHeap(), 0, start);
        return -1;
    }
    return 0;
}
static inline void nspv2_thread_join(nspv2_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

/* Per-thread values: one pointer-sized TLS slot each, allocated on first
 * use. Nothing is allocated per thread and no callback is registered, so
 * threads may outlive an unloaded DLL. NSPV2_TLS_UINTPTR(name) defines
 * name_get() and name_set(v); a thread's value starts at 0. */
typedef struct nspv2_tls_slot {
    INIT_ONCE once;
    DWORD index;
} nspv2_tls_slot;
#define NSPV2_TLS_SLOT_INIT {INIT_ONCE_STATIC_INIT, TLS_OUT_OF_INDEXES}

static inline BOOL CALLBACK nspv2_tls_alloc(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    (void)once;
    (void)ctx;
    ((nspv2_tls_slot *)param)->index = TlsAlloc();
    return TRUE;
}
static inline uintptr_t nspv2_tls_get(nspv2_tls_slot *slot)
{
    DWORD saved = GetLastError(); /* TlsGetValue resets the Win32 last error */
    uintptr_t v = 0;
    InitOnceExecuteOnce(&slot->once, nspv2_tls_alloc, slot, NULL);
    if (slot->index != TLS_OUT_OF_INDEXES)
        v = (uintptr_t)TlsGetValue(slot->index);
    SetLastError(saved);
    return v;
}
static inline void nspv2_tls_set(nspv2_tls_slot *slot, uintptr_t v)
{
    DWORD saved = GetLastError();
    InitOnceExecuteOnce(&slot->once, nspv2_tls_alloc, slot, NULL);
    if (slot->index != TLS_OUT_OF_INDEXES)
        TlsSetValue(slot->index, (LPVOID)v);
    SetLastError(saved);
}
#define NSPV2_TLS_UINTPTR(name)                                                           \
    static nspv2_tls_slot name##_slot = NSPV2_TLS_SLOT_INIT;                              \
    static inline uintptr_t name##_get(void) { return nspv2_tls_get(&name##_slot); }      \
    static inline void name##_set(uintptr_t v) { nspv2_tls_set(&name##_slot, v); }

static inline uint64_t nspv2_now_ns(void)
{
    static LARGE_INTEGER freq; /* constant after the first call */
    LARGE_INTEGER now;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    uint64_t f = (uint64_t)freq.QuadPart, c = (uint64_t)now.QuadPart;
    return (c / f) * 1000000000u + (c % f) * 1000000000u / f;
}

static inline void nspv2_sleep_ms(uint32_t ms) { Sleep(ms); }

#else /* POSIX */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef pthread_mutex_t nspv2_mutex;
typedef pthread_cond_t nspv2_cond;
typedef pthread_once_t nspv2_once;
typedef pthread_t nspv2_thread;

#define NSPV2_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define NSPV2_ONCE_INIT PTHREAD_ONCE_INIT

static inline void nspv2_mutex_init(nspv2_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void nspv2_mutex_destroy(nspv2_mutex *m) { pthread_mutex_destroy(m); }
static inline void nspv2_mutex_lock(nspv2_mutex *m) { pthread_mutex_lock(m); }
static inline void nspv2_mutex_unlock(nspv2_mutex *m) { pthread_mutex_unlock(m); }

/* Condition variables time out against CLOCK_MONOTONIC. */
static inline void nspv2_cond_init(nspv2_cond *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}
static inline void nspv2_cond_destroy(nspv2_cond *c) { pthread_cond_destroy(c); }
static inline void nspv2_cond_wait(nspv2_cond *c, nspv2_mutex *m) { pthread_cond_wait(c, m); }
/* Returns 0 when woken (or spuriously), 1 when the timeout elapsed. */
static inline int nspv2_cond_timedwait_ms(nspv2_cond *c, nspv2_mutex *m, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000u);
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(c, m, &ts) != 0;
}
static inline void nspv2_cond_broadcast(nspv2_cond *c) { pthread_cond_broadcast(c); }

static inline void nspv2_call_once(nspv2_once *once, void (*fn)(void)) { pthread_once(once, fn); }

typedef struct nspv2_thread_start {
    void (*fn)(void *);
    void *arg;
} nspv2_thread_start;

static inline void *nspv2_thread_trampoline(void *p)
{
    nspv2_thread_start start = *(nspv2_thread_start *)p;
    free(p);
    start.fn(start.arg);
    return NULL;
}
/* Returns 0 on success. */
static inline int nspv2_thread_create(nspv2_thread *t, void (*fn)(void *), void *arg)
{
    nspv2_thread_start *start = malloc(sizeof *start);
    if (!start)
        return -1;
    start->fn = fn;
    start->arg = arg;
    if (pthread_create(t, NULL, nspv2_thread_trampoline, start) != 0) {
        free(start);
        return -1;
    }
    return 0;
}
static inline void nspv2_thread_join(nspv2_thread t) { pthread_join(t, NULL); }

/* Per-thread values: C11 thread-local storage. NSPV2_TLS_UINTPTR(name)
 * defines name_get() and name_set(v); a thread's value starts at 0. */
#define NSPV2_TLS_UINTPTR(name)                                                           \
    static _Thread_local uintptr_t name##_value;                                          \
    static inline uintptr_t name##_get(void) { return name##_value; }                     \
    static inline void name##_set(uintptr_t v) { name##_value = v; }

static inline uint64_t nspv2_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void nspv2_sleep_ms(uint32_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif /* _WIN32 */

#endif /* NSPV2_PLATFORM_H */
