/*
 * test_pin.c - Python thread-state pinning (src/pin.c) against a fake
 * CPython: a GIL (a mutex), thread states from a fixed pool, and counters
 * of every call; and a provider whose every slot does what a ctypes
 * callback does around a Python function (gil_ensure ... gil_release).
 * Checked: a thread is pinned at its first provider call only, its state
 * released on it exactly once (detach or thread exit, 10,000 threads
 * included), Python threads never pinned, the foreign-host pin, the
 * install errors, shutdown waiting for calls inside a provider and the
 * host refusing every slot afterwards with its books right.
 *
 * Pinning is process-wide state: these tests end with pin_test_reset() so
 * that the other files' tests run with the gate open, as before.
 */
#include "test_support.h"

#include "host_internal.h" /* pin_test_reset */

#include <stdatomic.h>

/* ------------------------------------------------------------------------ */
/* a fake CPython                                                            */

#define FAKE_LOCKED 0   /* PyGILState_LOCKED */
#define FAKE_UNLOCKED 1 /* PyGILState_UNLOCKED */
#define FAKE_POOL 64

typedef struct fake_ts {
    atomic_int used;
    int counter;        /* the Ensure count (gilstate_counter) */
    unsigned long serial;
} fake_ts;

static fake_ts fake_pool[FAKE_POOL];
static nspv2_mutex fake_gil = NSPV2_MUTEX_INIT;
static atomic_ulong fake_ensures, fake_releases, fake_saves, fake_restores;
static atomic_ulong fake_created, fake_deleted, fake_serial, fake_errors;

/* PyGILState's thread-specific key: on POSIX a pthread key made before
 * pin.c's, so that, as with CPython's, the C library has emptied it by the
 * time pin.c's key destructor runs at thread exit; a TLS slot on Windows
 * (never emptied at exit, as CPython's). */
#ifdef _WIN32
NSPV2_TLS_UINTPTR(fake_tss)
static void fake_init(void) {}
#else
static pthread_key_t fake_key;
static pthread_once_t fake_key_once = PTHREAD_ONCE_INIT;
static void fake_key_make(void) { pthread_key_create(&fake_key, NULL); }
static void fake_init(void) { pthread_once(&fake_key_once, fake_key_make); }
static uintptr_t fake_tss_get(void) { return (uintptr_t)pthread_getspecific(fake_key); }
static void fake_tss_set(uintptr_t v) { pthread_setspecific(fake_key, (void *)v); }
#endif
NSPV2_TLS_UINTPTR(fake_current) /* the state holding the GIL on this thread */
NSPV2_TLS_UINTPTR(fake_holds)   /* the thread holds the GIL */

static void fake_error(const char *what)
{
    atomic_fetch_add(&fake_errors, 1);
    printf("     fake CPython misused: %s\n", what);
}

static void fake_take_gil(fake_ts *ts)
{
    nspv2_mutex_lock(&fake_gil);
    fake_holds_set(1);
    fake_current_set((uintptr_t)ts);
}

static void fake_drop_gil(void)
{
    fake_current_set(0);
    fake_holds_set(0);
    nspv2_mutex_unlock(&fake_gil);
}

static int fake_ensure(void)
{
    atomic_fetch_add(&fake_ensures, 1);
    fake_ts *ts = (fake_ts *)fake_tss_get();
    if (!ts) {
        for (int i = 0; i < FAKE_POOL && !ts; i++) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&fake_pool[i].used, &expect, 1))
                ts = &fake_pool[i];
        }
        if (!ts) {
            fake_error("no thread state left in the pool");
            return FAKE_LOCKED;
        }
        ts->counter = 0;
        ts->serial = atomic_fetch_add(&fake_serial, 1) + 1;
        atomic_fetch_add(&fake_created, 1);
        fake_tss_set((uintptr_t)ts);
    }
    ts->counter++;
    if (fake_holds_get())
        return FAKE_LOCKED;
    fake_take_gil(ts);
    return FAKE_UNLOCKED;
}

static void fake_delete(fake_ts *ts)
{
    if (fake_tss_get() == (uintptr_t)ts)
        fake_tss_set(0);
    atomic_fetch_add(&fake_deleted, 1);
    atomic_store(&ts->used, 0);
    fake_drop_gil();
}

static void fake_release(int old)
{
    atomic_fetch_add(&fake_releases, 1);
    fake_ts *ts = (fake_ts *)fake_tss_get();
    if (!ts || !fake_holds_get()) {
        /* CPython: "Fatal Python error: PyGILState_Release: auto-releasing
         * thread-state, but no thread-state for this thread" */
        fake_error("gil_release without a state for this thread, or without the GIL");
        if (fake_holds_get())
            fake_drop_gil(); /* CPython would abort; the test goes on */
        return;
    }
    if (--ts->counter == 0) /* PyThreadState_Clear + delete, GIL released */
        fake_delete(ts);
    else if (old == FAKE_UNLOCKED)
        fake_drop_gil();
}

static void *fake_save(void)
{
    atomic_fetch_add(&fake_saves, 1);
    void *ts = (void *)fake_current_get();
    if (!fake_holds_get() || !ts)
        fake_error("save_thread without the GIL");
    fake_drop_gil();
    return ts;
}

static void fake_restore(void *state)
{
    atomic_fetch_add(&fake_restores, 1);
    if (!state || fake_holds_get())
        fake_error("restore_thread of no state, or with the GIL held");
    fake_take_gil(state);
}

static void *fake_this(void) { return (void *)fake_tss_get(); }

static void fake_clear(void *state)
{
    if (!fake_holds_get() || (void *)fake_current_get() != state)
        fake_error("PyThreadState_Clear of a state not current");
}

static void fake_delete_current(void)
{
    fake_ts *ts = (fake_ts *)fake_current_get();
    if (!ts || !fake_holds_get()) {
        fake_error("PyThreadState_DeleteCurrent without a current state");
        return;
    }
    fake_delete(ts);
}

static nspv2_python_api fake_api(void)
{
    fake_init();
    nspv2_python_api api = {sizeof api,  fake_ensure, fake_release,       fake_save,
                            fake_restore, fake_this,   fake_clear, fake_delete_current};
    return api;
}

static nspv2_pin_stats pin_stats(void)
{
    nspv2_pin_stats s;
    nspv2_pin_stats_get(&s);
    return s;
}

/* ------------------------------------------------------------------------ */
/* a provider written "in Python": every slot runs inside ensure/release    */

static const GUID pp_id = {0x6e737032, 0x7069, 0x6e00, {0x70, 0x79, 0, 0, 0, 0, 0, 0x01}};

static struct {
    atomic_int startups, cleanups, begins, nexts, ends, sets, rundowns;
    atomic_int block_begin;  /* Begin waits while this is 1 */
    atomic_int begin_inside; /* a Begin is waiting */
    atomic_int callbacks_pinned; /* callbacks that found the thread's state alive already */
} pp;

/* What ctypes does around a Python callback; counts a callback that found
 * a state already there (a pinned or Python thread). */
static int cb_enter(void)
{
    if (fake_this())
        atomic_fetch_add(&pp.callbacks_pinned, 1);
    return fake_ensure();
}
static void cb_leave(int g) { fake_release(g); }

static INT WSAAPI pp_startup(LPGUID id, LPVOID *arg)
{
    (void)id;
    int g = cb_enter();
    atomic_fetch_add(&pp.startups, 1);
    *arg = NULL;
    cb_leave(g);
    return NO_ERROR;
}
static INT WSAAPI pp_cleanup(LPGUID id, LPVOID arg)
{
    (void)id, (void)arg;
    int g = cb_enter();
    atomic_fetch_add(&pp.cleanups, 1);
    cb_leave(g);
    return NO_ERROR;
}
static INT WSAAPI pp_begin(LPGUID id, LPWSAQUERYSET2W qs, DWORD flags, LPVOID arg, LPHANDLE h)
{
    (void)id, (void)qs, (void)flags, (void)arg;
    if (atomic_load(&pp.block_begin)) { /* a Python function blocked outside the GIL */
        atomic_store(&pp.begin_inside, 1);
        while (atomic_load(&pp.block_begin))
            nspv2_sleep_ms(1);
        atomic_store(&pp.begin_inside, 0);
    }
    int g = cb_enter();
    atomic_fetch_add(&pp.begins, 1);
    *h = (HANDLE)(uintptr_t)7;
    cb_leave(g);
    return NO_ERROR;
}
static VOID WSAAPI pp_next_ex(HANDLE async, HANDLE h, DWORD flags, LPDWORD len,
                              LPWSAQUERYSET2W qs)
{
    (void)h, (void)flags, (void)len, (void)qs;
    int g = cb_enter();
    atomic_fetch_add(&pp.nexts, 1);
    WSAProviderCompleteAsyncCall(async, WSA_E_NO_MORE);
    cb_leave(g);
}
static INT WSAAPI pp_end(HANDLE h)
{
    (void)h;
    int g = cb_enter();
    atomic_fetch_add(&pp.ends, 1);
    cb_leave(g);
    return NO_ERROR;
}
static VOID WSAAPI pp_set_service_ex(HANDLE async, LPGUID id, LPWSAQUERYSET2W qs,
                                     WSAESETSERVICEOP op, DWORD flags, LPVOID arg)
{
    (void)id, (void)qs, (void)op, (void)flags, (void)arg;
    int g = cb_enter();
    atomic_fetch_add(&pp.sets, 1);
    WSAProviderCompleteAsyncCall(async, NO_ERROR);
    cb_leave(g);
}
static VOID WSAAPI pp_rundown(LPGUID id, LPVOID arg)
{
    (void)id, (void)arg;
    int g = cb_enter();
    atomic_fetch_add(&pp.rundowns, 1);
    cb_leave(g);
}

static void advertise_pp(void)
{
    NSPV2_ROUTINE r;
    memset(&r, 0, sizeof r);
    r.cbSize = sizeof r;
    r.dwMajorVersion = 1;
    r.dwMinorVersion = 1;
    NSPV2_SLOT(r, NSPv2Startup, pp_startup);
    NSPV2_SLOT(r, NSPv2Cleanup, pp_cleanup);
    NSPV2_SLOT(r, NSPv2LookupServiceBegin, pp_begin);
    NSPV2_SLOT(r, NSPv2LookupServiceNextEx, pp_next_ex);
    NSPV2_SLOT(r, NSPv2LookupServiceEnd, pp_end);
    NSPV2_SLOT(r, NSPv2SetServiceEx, pp_set_service_ex);
    NSPV2_SLOT(r, NSPv2ClientSessionRundown, pp_rundown);
    advertise_installed(&pp_id, TP_NAMESPACE, NULL, &r);
}

/* One whole cycle on pp from this thread: open, begin, next (its end),
 * end, close: five provider calls. */
static void pp_cycle(void)
{
    uint64_t s = 0;
    CHECK_OK(nspv2_session_open(&s));
    WSAQUERYSETW q = query(TP_NAMESPACE, &pp_id, "x");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(s, &q, 0, &h));
    DWORD len = 0;
    CHECK_ERR(nspv2_lookup_next(h, 0, &len, NULL), WSA_E_NO_MORE);
    CHECK_OK(nspv2_lookup_end(h));
    CHECK_OK(nspv2_session_close(s));
}

/* A thread: cycles pp_cycle()s, then detaches or just ends. */
typedef struct cycler {
    int cycles;
    int detach;
} cycler;

static void cycler_main(void *p)
{
    const cycler *c = p;
    for (int i = 0; i < c->cycles; i++)
        pp_cycle();
    if (c->detach)
        nspv2_pin_thread_detach();
}

static void run_threads(int n, cycler *c)
{
    nspv2_thread t[16];
    for (int i = 0; i < n; i++)
        CHECK(nspv2_thread_create(&t[i], cycler_main, c) == 0);
    for (int i = 0; i < n; i++)
        nspv2_thread_join(t[i]);
}

/* ------------------------------------------------------------------------ */
/* tests                                                                     */

TEST(test_pin_not_installed)
{
    fresh();
    pin_test_reset();
    advertise_pp();
    nspv2_pin_stats s = pin_stats();
    CHECK(s.installed == 0 && s.stopped == 0 && s.pinned_total == 0 && s.in_flight == 0);
    /* never installed: every callback makes and drops its own state */
    unsigned long created = atomic_load(&fake_created);
    cycler c = {3, 0};
    run_threads(2, &c);
    CHECK(atomic_load(&fake_created) - created == 2 * 3 * 5);
    CHECK(atomic_load(&fake_deleted) == atomic_load(&fake_created));
    CHECK(pin_stats().pinned_total == 0);
    nspv2_pin_thread_detach(); /* nothing to do */

    /* install errors */
    nspv2_python_api api = fake_api();
    CHECK(nspv2_pin_install(NULL) == WSAEINVAL);
    api.size = sizeof api - 1;
    CHECK(nspv2_pin_install(&api) == WSAEINVAL);
    api = fake_api();
    api.restore_thread = NULL;
    CHECK(nspv2_pin_install(&api) == WSAEINVAL);
    api = fake_api();
    api.this_thread_state = NULL;
    CHECK(nspv2_pin_install(&api) == WSAEINVAL);
    api = fake_api();
    api.delete_current = NULL;
    CHECK(nspv2_pin_install(&api) == WSAEINVAL);
    CHECK(pin_stats().installed == 0);
    api = fake_api();
    api.size = sizeof api + 16; /* a later, longer version of the struct */
    CHECK(nspv2_pin_install(&api) == 0);
    CHECK(pin_stats().installed == 1);
    api = fake_api();
    CHECK(nspv2_pin_install(&api) == WSAEALREADY);
    pin_test_reset();
}

TEST(test_pin_threads)
{
    fresh();
    pin_test_reset();
    advertise_pp();
    nspv2_python_api api = fake_api();
    CHECK(nspv2_pin_install(&api) == 0);

    /* threads that end on their own: one state each, made at the first
     * provider call, alive across all their callbacks, released by the
     * thread-exit hook exactly once */
    unsigned long created = atomic_load(&fake_created), deleted = atomic_load(&fake_deleted);
    int pinned_cbs = atomic_load(&pp.callbacks_pinned);
    cycler c = {20, 0};
    run_threads(4, &c);
    nspv2_pin_stats s = pin_stats();
    CHECK(atomic_load(&fake_created) - created == 4);
    CHECK(atomic_load(&fake_deleted) - deleted == 4);
    CHECK(atomic_load(&pp.callbacks_pinned) - pinned_cbs == 4 * 20 * 5);
    CHECK(s.pinned_total == 4 && s.pinned_now == 0);
    CHECK(s.released_exit == 4 && s.released_detach == 0);
    CHECK(s.in_flight == 0 && s.refused_calls == 0);

    /* threads that detach: released by nspv2_pin_thread_detach, the exit
     * hook then has nothing to do */
    c.detach = 1;
    run_threads(3, &c);
    s = pin_stats();
    CHECK(atomic_load(&fake_created) - created == 7);
    CHECK(atomic_load(&fake_deleted) - deleted == 7);
    CHECK(s.pinned_total == 7 && s.pinned_now == 0);
    CHECK(s.released_exit == 4 && s.released_detach == 3);

    /* the native driver's threads are the host's own: they detach */
    nspv2_driver_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.threads = 3;
    cfg.cycles = 50;
    cfg.buffer_size = 1024;
    cfg.name_space = TP_NAMESPACE;
    cfg.provider_id = &pp_id;
    cfg.service_name = W("x");
    nspv2_driver_result r;
    int begins = atomic_load(&pp.begins);
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    CHECK(r.cycles_done == 150 && atomic_load(&pp.begins) - begins == 150);
    s = pin_stats();
    CHECK(s.pinned_total == 10 && s.pinned_now == 0);
    CHECK(s.released_detach == 6 && s.released_exit == 4);
    CHECK(atomic_load(&fake_created) - created == 10);
    CHECK(atomic_load(&fake_deleted) - deleted == 10);
    CHECK(atomic_load(&fake_errors) == 0);
    CHECK(atomic_load(&fake_restores) == atomic_load(&fake_saves)); /* every pin released */
    pin_test_reset();
}

/* A "Python thread": it has its own state (GIL released, as in a ctypes
 * call), so the host must never pin it. */
static void python_thread_main(void *p)
{
    (void)p;
    int g = fake_ensure();
    void *mine = fake_save(); /* the ctypes call releases the GIL */
    pp_cycle();
    nspv2_pin_thread_detach(); /* nothing: it was never pinned */
    CHECK(fake_this() == mine);
    fake_restore(mine);
    fake_release(g);
}

TEST(test_pin_python_threads)
{
    fresh();
    pin_test_reset();
    advertise_pp();
    nspv2_python_api api = fake_api();
    CHECK(nspv2_pin_install(&api) == 0);
    unsigned long created = atomic_load(&fake_created), deleted = atomic_load(&fake_deleted);
    nspv2_thread t;
    CHECK(nspv2_thread_create(&t, python_thread_main, NULL) == 0);
    nspv2_thread_join(t);
    nspv2_pin_stats s = pin_stats();
    CHECK(s.pinned_total == 0 && s.released_exit == 0 && s.released_detach == 0);
    CHECK(atomic_load(&fake_created) - created == 1 && atomic_load(&fake_deleted) - deleted == 1);

    CHECK(atomic_load(&fake_errors) == 0);
    pin_test_reset();
}

/* One thread of the 10,000: a session started and closed (Startup,
 * Cleanup), then the thread ends. */
static void one_call_main(void *p)
{
    (void)p;
    uint64_t s = 0;
    if (nspv2_session_open(&s) != NO_ERROR ||
        nspv2_session_start(s, TP_NAMESPACE, &pp_id) != NO_ERROR)
        atomic_fetch_add(&fake_errors, 1);
    nspv2_session_close(s);
}

TEST(test_pin_10000_thread_exits)
{
    fresh();
    pin_test_reset();
    advertise_pp();
    nspv2_python_api api = fake_api();
    CHECK(nspv2_pin_install(&api) == 0);
    unsigned long created = atomic_load(&fake_created), deleted = atomic_load(&fake_deleted);
    const int N = 10000, WAVE = 8;
    int started = 0;
    for (int done = 0; done < N; done += WAVE) {
        nspv2_thread t[8];
        int ok[8];
        for (int i = 0; i < WAVE; i++)
            started += ok[i] = nspv2_thread_create(&t[i], one_call_main, NULL) == 0;
        for (int i = 0; i < WAVE; i++)
            if (ok[i])
                nspv2_thread_join(t[i]);
    }
    CHECK(started == N);
    nspv2_pin_stats s = pin_stats();
    CHECK(s.pinned_total == (uint64_t)N && s.released_exit == (uint64_t)N && s.pinned_now == 0);
    CHECK(atomic_load(&fake_created) - created == (unsigned long)N);
    CHECK(atomic_load(&fake_deleted) - deleted == (unsigned long)N);
    CHECK(atomic_load(&fake_errors) == 0);
    printf("     %d threads: %" PRIu64 " pinned, %" PRIu64 " released at exit\n", N,
           s.pinned_total, s.released_exit);
    nspv2_host_stats hs = stats();
    CHECK(hs.sessions_open == 0 && hs.startups == (uint64_t)N && hs.cleanups == (uint64_t)N);
    pin_test_reset();
}

static void begin_main(void *p)
{
    uint64_t *s = p;
    WSAQUERYSETW q = query(TP_NAMESPACE, &pp_id, "x");
    HANDLE h = NULL;
    CHECK_OK(nspv2_lookup_begin(*s, &q, 0, &h)); /* passed the gate before shutdown */
    CHECK_ERR(nspv2_lookup_end(h), WSASYSNOTREADY); /* after it: refused */
}

typedef struct shutdown_run {
    DWORD timeout_ms;
    INT ret;
    atomic_int done;
} shutdown_run;

static void shutdown_main(void *p)
{
    shutdown_run *r = p;
    r->ret = nspv2_pin_shutdown(r->timeout_ms);
    atomic_store(&r->done, 1);
}

/* A thread pinned before shutdown, alive until told to end. */
static atomic_int keeper_go, keeper_ready;
static void keeper_main(void *p)
{
    (void)p;
    pp_cycle();
    atomic_store(&keeper_ready, 1);
    while (!atomic_load(&keeper_go))
        nspv2_sleep_ms(1);
    nspv2_pin_thread_detach(); /* after shutdown: nothing */
}

TEST(test_pin_shutdown)
{
    fresh();
    pin_test_reset();
    advertise_pp();
    nspv2_python_api api = fake_api();
    CHECK(nspv2_pin_install(&api) == 0);

    /* before shutdown: a session started (s1) with two lookups open, one
     * session to abandon (s2), a pinned thread that outlives shutdown */
    uint64_t s1 = open_session(), s2 = open_session(), s3 = open_session();
    CHECK_OK(nspv2_session_start(s1, TP_NAMESPACE, &pp_id));
    CHECK_OK(nspv2_session_start(s2, TP_NAMESPACE, &pp_id));
    WSAQUERYSETW q = query(TP_NAMESPACE, &pp_id, "x");
    HANDLE h1 = NULL, h2 = NULL;
    CHECK_OK(nspv2_lookup_begin(s1, &q, 0, &h1));
    CHECK_OK(nspv2_lookup_begin(s1, &q, 0, &h2));
    atomic_store(&keeper_go, 0);
    atomic_store(&keeper_ready, 0);
    nspv2_thread keeper;
    CHECK(nspv2_thread_create(&keeper, keeper_main, NULL) == 0);
    for (int i = 0; i < 5000 && !atomic_load(&keeper_ready); i++)
        nspv2_sleep_ms(1);
    CHECK(pin_stats().pinned_now == 2); /* this thread and the keeper */

    /* a Begin inside the provider when shutdown starts: a short timeout
     * gives up and says one call is still inside */
    atomic_store(&pp.block_begin, 1);
    nspv2_thread b;
    CHECK(nspv2_thread_create(&b, begin_main, &s1) == 0);
    for (int i = 0; i < 5000 && !atomic_load(&pp.begin_inside); i++)
        nspv2_sleep_ms(1);
    CHECK(pin_stats().in_flight == 1);
    CHECK(nspv2_pin_shutdown(50) == 1);
    nspv2_pin_stats s = pin_stats();
    /* pinned then: this thread (its calls above), the keeper, the Begin's */
    CHECK(s.stopped == 1 && s.in_flight == 1 && s.left_at_shutdown == 3);
    /* again (idempotent), waiting long: returns once the Begin returns */
    shutdown_run sr = {5000, -1, 0};
    nspv2_thread st_thread;
    CHECK(nspv2_thread_create(&st_thread, shutdown_main, &sr) == 0);
    nspv2_sleep_ms(100);
    CHECK(atomic_load(&sr.done) == 0);
    atomic_store(&pp.block_begin, 0);
    nspv2_thread_join(st_thread);
    CHECK(sr.ret == 0);
    nspv2_thread_join(b); /* its End was refused: see below */
    CHECK(pin_stats().in_flight == 0);

    /* from now on the host refuses every slot, books kept */
    CHECK(nspv2_pin_install(&api) == WSASYSNOTREADY);
    int startups = atomic_load(&pp.startups), cleanups = atomic_load(&pp.cleanups);
    int begins = atomic_load(&pp.begins), nexts = atomic_load(&pp.nexts);
    int ends = atomic_load(&pp.ends), sets = atomic_load(&pp.sets);
    int rundowns = atomic_load(&pp.rundowns);
    nspv2_host_stats before = stats();
    uint64_t refused = pin_stats().refused_calls;

    /* Startup: WSASYSNOTREADY as the provider's error */
    CHECK_ERR(nspv2_session_start(s3, TP_NAMESPACE, &pp_id), WSASYSNOTREADY);
    /* Begin: the provider's error; no provider began: WSASERVICE_NOT_FOUND */
    HANDLE h3 = NULL;
    CHECK_ERR(nspv2_lookup_begin(s1, &q, 0, &h3), WSASERVICE_NOT_FOUND);
    /* NextEx: completed by the host with WSASYSNOTREADY */
    DWORD len = 0;
    CHECK_ERR(nspv2_lookup_next(h1, 0, &len, NULL), WSASYSNOTREADY);
    CHECK_ERR(nspv2_lookup_next(h1, 0, &len, NULL), WSASYSNOTREADY); /* the lookup is over */
    /* End: WSASYSNOTREADY as the provider's error; the handle is closed */
    CHECK_ERR(nspv2_lookup_end(h1), WSASYSNOTREADY);
    CHECK_ERR(nspv2_lookup_end(h1), WSA_INVALID_HANDLE);
    /* SetServiceEx: completed by the host with WSASYSNOTREADY */
    WSAQUERYSETW reg = query(TP_NAMESPACE, &pp_id, "x");
    CHECK_ERR(nspv2_set_service(s1, &reg, RNRSERVICE_REGISTER, 0), WSASYSNOTREADY);
    /* Cleanup (h2 still open: its End refused too) and Rundown: skipped,
     * the sessions end all the same */
    CHECK_OK(nspv2_session_close(s1));
    CHECK_OK(nspv2_session_abandon(s2));
    CHECK_OK(nspv2_session_close(s3));
    CHECK_ERR(nspv2_lookup_end(h2), WSA_INVALID_HANDLE);

    CHECK(atomic_load(&pp.startups) == startups && atomic_load(&pp.cleanups) == cleanups);
    CHECK(atomic_load(&pp.begins) == begins && atomic_load(&pp.nexts) == nexts);
    CHECK(atomic_load(&pp.ends) == ends && atomic_load(&pp.sets) == sets);
    CHECK(atomic_load(&pp.rundowns) == rundowns);
    nspv2_host_stats after = stats();
    CHECK(after.startups == before.startups && after.cleanups == before.cleanups &&
          after.rundowns == before.rundowns);
    CHECK(after.sessions_open == 0 && after.lookups_open == 0 && after.async_pending == 0);
    CHECK(after.late_completions == 0 && after.provider_faults == 0);
    /* refused: Startup, Begin, NextEx, End (h1), SetServiceEx, End (h2),
     * Cleanup, Rundown */
    CHECK(pin_stats().refused_calls - refused == 8);

    /* the pinned thread outlives shutdown: its detach and exit hook do
     * nothing (its state is left to the interpreter's finalization) */
    unsigned long deleted = atomic_load(&fake_deleted);
    atomic_store(&keeper_go, 1);
    nspv2_thread_join(keeper);
    s = pin_stats();
    CHECK(s.released_detach == 0 && s.released_exit == 0 && s.pinned_now == 3);
    CHECK(atomic_load(&fake_deleted) == deleted);
    CHECK(atomic_load(&fake_errors) == 0);
    /* the keeper's state stays "in use" in the pool, as a real one would
     * stay until finalization; give it back for the next tests */
    for (int i = 0; i < FAKE_POOL; i++)
        atomic_store(&fake_pool[i].used, 0);
    fake_tss_set(0);
    pin_test_reset();
}

void run_pin_tests(void)
{
    fake_init(); /* its key before pin.c's (made at the first install) */
    RUN(test_pin_not_installed);
    RUN(test_pin_threads);
    RUN(test_pin_python_threads);
    RUN(test_pin_10000_thread_exits);
    RUN(test_pin_shutdown);
    fresh();
}
