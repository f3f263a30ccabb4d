/*
 * pin.c - Python thread-state pinning (the contract: the "Python
 * thread-state pinning" section of include/nspv2_host.h).
 *
 * State
 * -----
 *   pin_active     0 until nspv2_pin_install or nspv2_pin_shutdown: the
 *                  host's provider call sites test only this (prov_enter in
 *                  host_internal.h, one relaxed load) while it is 0.
 *   g.installed    CPython's functions are in g.api (written before it, read
 *                  after an acquire load of it).
 *   g.stopped      nspv2_pin_shutdown ran: the gate is closed.
 *   g.in_flight    provider calls that passed the gate and have not returned.
 *   g.busy         releases in progress (they run CPython code too, so
 *                  shutdown waits for them).
 *   per thread     the pinned thread state, in a pthread key whose
 *                  destructor is the thread-exit hook (POSIX), or in an FLS
 *                  slot whose callback is (Windows; the index is never
 *                  freed, so the callback stays registered for the life of
 *                  the process).
 *
 * The gate (Dekker): a caller increments its counter, then reads g.stopped;
 * shutdown sets g.stopped, then reads the counters (all seq_cst). So either
 * shutdown sees the caller counted and waits for it, or the caller sees the
 * gate closed and backs out: no CPython function is called by this file
 * once nspv2_pin_shutdown has returned with 0 (the interpreter may be
 * finalizing then).
 *
 * The counters of nspv2_pin_stats are kept under g.lock: they change only
 * when a thread is pinned or released or a call refused, never on the path
 * of an ordinary provider call.
 */
#include "host_internal.h"

#include <stdatomic.h>

#define PY_GILSTATE_UNLOCKED 1 /* PyGILState_STATE's PyGILState_UNLOCKED */

atomic_int pin_active;

static struct {
    nspv2_mutex lock;
    nspv2_python_api api;
    atomic_int installed;
    atomic_int stopped;
    atomic_long in_flight;
    atomic_long busy;
    nspv2_pin_stats st; /* the counters (installed, stopped, in_flight: from the atomics) */
} g = {.lock = NSPV2_MUTEX_INIT};

enum { RELEASED_DETACH, RELEASED_EXIT };

/* ------------------------------------------------------------------------ */
/* the per-thread pinned state                                               */

#ifdef _WIN32

static void WINAPI pin_fls_exit(PVOID state);
static DWORD pin_fls = FLS_OUT_OF_INDEXES;

static int tls_create(void)
{
    if (pin_fls == FLS_OUT_OF_INDEXES)
        pin_fls = FlsAlloc(pin_fls_exit); /* under g.lock; never FlsFree'd */
    return pin_fls == FLS_OUT_OF_INDEXES ? -1 : 0;
}
/* Neither touches the thread's last error (the Winsock last error). */
static void *tls_get(void)
{
    DWORD saved = GetLastError();
    void *v = FlsGetValue(pin_fls);
    SetLastError(saved);
    return v;
}
static void tls_set(void *v)
{
    DWORD saved = GetLastError();
    FlsSetValue(pin_fls, v);
    SetLastError(saved);
}

#else

static void pin_key_exit(void *state);
static pthread_key_t pin_key;
static int pin_key_made;

/* This thread's provider calls inside the gate (its share of g.in_flight). */
static _Thread_local long pin_depth;

/* fork: only the forking thread goes on in the child. Its counters must
 * not keep the other threads' calls and releases (nspv2_pin_shutdown at the
 * child's exit would wait for threads that do not exist there), and g.lock
 * must not be inherited held. */
static void pin_fork_prepare(void) { nspv2_mutex_lock(&g.lock); }
static void pin_fork_parent(void) { nspv2_mutex_unlock(&g.lock); }
static void pin_fork_child(void)
{
    nspv2_mutex_init(&g.lock);
    atomic_store(&g.in_flight, pin_depth);
    atomic_store(&g.busy, 0);
    g.st.pinned_now = pthread_getspecific(pin_key) ? 1 : 0;
}

static int tls_create(void)
{
    if (!pin_key_made && pthread_key_create(&pin_key, pin_key_exit) == 0) {
        pin_key_made = 1; /* under g.lock; never deleted */
        pthread_atfork(pin_fork_prepare, pin_fork_parent, pin_fork_child);
    }
    return pin_key_made ? 0 : -1;
}
static void *tls_get(void) { return pthread_getspecific(pin_key); }
static void tls_set(void *v) { pthread_setspecific(pin_key, v); }

#endif

/* Passes the gate on counter c: 1, or 0 when it is closed (not counted). */
static int gate_pass(atomic_long *c)
{
    atomic_fetch_add(c, 1);
    if (atomic_load(&g.stopped)) {
        atomic_fetch_sub(c, 1);
        return 0;
    }
    return 1;
}

/* Releases this thread's pinned state (TLS already cleared). Detach: the
 * end of the Ensure the pin began (PyGILState_Release finds the state
 * through CPython's own thread-specific key). Thread exit: that key may
 * already be cleared (the C library empties every key before it runs the
 * destructors), so clear and delete the state as CPython ends its own
 * threads. Nothing once the gate is closed: the interpreter's finalization
 * frees the state. */
static void release_state(void *state, int how)
{
    if (!atomic_load(&g.installed) || !gate_pass(&g.busy))
        return;
    g.api.restore_thread(state);
    if (how == RELEASED_DETACH) {
        g.api.gil_release(PY_GILSTATE_UNLOCKED);
    } else {
        g.api.clear_state(state);
        g.api.delete_current(); /* releases the GIL */
    }
    nspv2_mutex_lock(&g.lock);
    g.st.pinned_now--;
    if (how == RELEASED_DETACH)
        g.st.released_detach++;
    else
        g.st.released_exit++;
    nspv2_mutex_unlock(&g.lock);
    atomic_fetch_sub(&g.busy, 1);
}

#ifdef _WIN32
static void WINAPI pin_fls_exit(PVOID state)
{
    if (state)
        release_state(state, RELEASED_EXIT);
}
#else
static void pin_key_exit(void *state)
{
    /* the key's value is already NULL here (POSIX clears it first) */
    if (state)
        release_state(state, RELEASED_EXIT);
}
#endif

/* ------------------------------------------------------------------------ */
/* the host's side (host_internal.h)                                         */

int pin_enter(void)
{
    if (!gate_pass(&g.in_flight)) {
        nspv2_mutex_lock(&g.lock);
        g.st.refused_calls++;
        nspv2_mutex_unlock(&g.lock);
        return PIN_REFUSED;
    }
#ifndef _WIN32
    pin_depth++;
#endif
    if (!atomic_load_explicit(&g.installed, memory_order_acquire) || tls_get())
        return 1;
    /* A thread with no Python thread state: pin one (gil_ensure creates it
     * and takes the GIL, save_thread keeps it and lets the GIL go). A
     * Python thread's own state (Python's threads, or a callback running
     * on this thread now) is never pinned. */
#ifdef _WIN32
    DWORD saved = GetLastError(); /* the Winsock last error */
#endif
    if (!g.api.this_thread_state()) {
        g.api.gil_ensure();
        void *state = g.api.save_thread();
        tls_set(state);
        nspv2_mutex_lock(&g.lock);
        g.st.pinned_now++;
        g.st.pinned_total++;
        nspv2_mutex_unlock(&g.lock);
    }
#ifdef _WIN32
    SetLastError(saved);
#endif
    return 1;
}

void pin_leave(void)
{
#ifndef _WIN32
    pin_depth--;
#endif
    atomic_fetch_sub(&g.in_flight, 1);
}

void pin_test_reset(void)
{
    nspv2_mutex_lock(&g.lock);
    if (atomic_load(&g.installed))
        tls_set(NULL);
    memset(&g.api, 0, sizeof g.api);
    memset(&g.st, 0, sizeof g.st);
    atomic_store(&g.installed, 0);
    atomic_store(&g.stopped, 0);
    atomic_store(&g.in_flight, 0);
    atomic_store(&g.busy, 0);
    atomic_store(&pin_active, 0);
    nspv2_mutex_unlock(&g.lock);
}

/* ------------------------------------------------------------------------ */
/* the API                                                                   */

NSPV2_HOST_API INT nspv2_pin_install(const nspv2_python_api *api)
{
    if (!api || api->size < sizeof *api || !api->gil_ensure || !api->gil_release ||
        !api->save_thread || !api->restore_thread || !api->this_thread_state ||
        !api->clear_state || !api->delete_current)
        return WSAEINVAL;
    INT r = 0;
    nspv2_mutex_lock(&g.lock);
    if (atomic_load(&g.stopped))
        r = WSASYSNOTREADY;
    else if (atomic_load(&g.installed))
        r = WSAEALREADY;
    else if (tls_create() != 0)
        r = WSA_NOT_ENOUGH_MEMORY;
    if (!r) {
        memcpy(&g.api, api, sizeof g.api);
        g.api.size = (uint32_t)sizeof g.api;
        atomic_store_explicit(&g.installed, 1, memory_order_release);
        atomic_store(&pin_active, 1);
    }
    nspv2_mutex_unlock(&g.lock);
    return r;
}

NSPV2_HOST_API INT nspv2_pin_shutdown(DWORD timeout_ms)
{
    nspv2_mutex_lock(&g.lock);
    if (!atomic_load(&g.stopped)) {
        atomic_store(&g.stopped, 1);
        atomic_store(&pin_active, 1); /* the call sites now take the gate */
        g.st.left_at_shutdown = g.st.pinned_now;
    }
    nspv2_mutex_unlock(&g.lock);
    uint64_t deadline = nspv2_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        long inside = atomic_load(&g.in_flight), other = atomic_load(&g.busy);
        if (inside + other == 0)
            return 0;
        if (nspv2_now_ns() >= deadline)
            return (INT)(inside > 0 ? inside : 0);
        nspv2_sleep_ms(1);
    }
}

NSPV2_HOST_API void nspv2_pin_thread_detach(void)
{
    if (!atomic_load_explicit(&g.installed, memory_order_acquire))
        return;
    void *state = tls_get();
    if (state) {
        tls_set(NULL); /* the exit hook has nothing left to do */
        release_state(state, RELEASED_DETACH);
    }
}

NSPV2_HOST_API void nspv2_pin_stats_get(nspv2_pin_stats *out)
{
    if (!out)
        return;
    nspv2_mutex_lock(&g.lock);
    *out = g.st;
    nspv2_mutex_unlock(&g.lock);
    out->installed = (uint32_t)atomic_load(&g.installed);
    out->stopped = (uint32_t)atomic_load(&g.stopped);
    long inside = atomic_load(&g.in_flight);
    out->in_flight = inside > 0 ? (uint64_t)inside : 0;
}
