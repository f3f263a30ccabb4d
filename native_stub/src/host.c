/*
 * host.c - the native NSPv2 host (see include/nspv2_host.h for the contract,
 * src/host_internal.h for the design and how the sources divide it): global
 * state and its lock, per-thread state, routing, the deferred provider calls
 * (todo list), the provider-facing calls, async calls, control and
 * inspection.
 */
#include "host_internal.h"

/* ------------------------------------------------------------------------ */
/* global state                                                              */

host_state host_g = {.lock = NSPV2_MUTEX_INIT,
                     .timeout_ms = DEFAULT_TIMEOUT_MS,
                     .held_max_calls = NSPV2_HELD_MAX_CALLS,
                     .held_max_bytes = NSPV2_HELD_MAX_BYTES};

static nspv2_once g_once = NSPV2_ONCE_INIT;
static void g_init(void) { nspv2_cond_init(&host_g.cv); }
void host_init(void) { nspv2_call_once(&g_once, g_init); }
void host_lock(void) { nspv2_mutex_lock(&host_g.lock); }
void host_unlock(void) { nspv2_mutex_unlock(&host_g.lock); }

/* ------------------------------------------------------------------------ */
/* per-thread state                                                          */

/* The session entered (in two 32-bit halves: a TLS value is pointer-sized),
 * and, except on Windows, the Winsock last error. */
#ifndef _WIN32
NSPV2_TLS_UINTPTR(tls_last_error)
#endif
NSPV2_TLS_UINTPTR(tls_session_lo)
NSPV2_TLS_UINTPTR(tls_session_hi)

uint64_t current_session(void)
{
    return ((uint64_t)tls_session_hi_get() << 32) | (uint64_t)tls_session_lo_get();
}

void set_current_session(uint64_t id)
{
    tls_session_lo_set((uintptr_t)(uint32_t)id);
    tls_session_hi_set((uintptr_t)(uint32_t)(id >> 32));
}

/* The NSPv2Startup calls this thread is inside, innermost first: a chain of
 * startup_frame records on the stacks of the ps_acquire_L calls running them
 * (see startup_frame in host_internal.h). */
NSPV2_TLS_UINTPTR(tls_startups)

void startup_enter(startup_frame *f, const psess *ps)
{
    f->ps = ps;
    f->outer = (startup_frame *)tls_startups_get();
    tls_startups_set((uintptr_t)f);
}

void startup_leave(startup_frame *f)
{
    tls_startups_set((uintptr_t)f->outer);
}

int startup_running_here(const psess *ps)
{
    for (const startup_frame *f = (const startup_frame *)tls_startups_get(); f; f = f->outer)
        if (f->ps == ps)
            return 1;
    return 0;
}

/* On Windows the Winsock last error IS the Win32 last error, as in ws2_32:
 * a provider that reports with SetLastError (as Microsoft's sample does) is
 * read by WSAGetLastError, and a client's GetLastError sees what
 * WSASetLastError set. Rule for the host's code: nothing that may change the
 * Win32 last error runs between reading a provider's error and using it, or
 * between host_fail() and returning (the TLS helpers of platform.h preserve
 * it; SRW locks and free() leave it alone). */
NSPV2_HOST_API void WSAAPI WSASetLastError(int iError)
{
#ifdef _WIN32
    SetLastError((DWORD)iError);
#else
    tls_last_error_set((uintptr_t)(unsigned int)iError);
#endif
}

NSPV2_HOST_API int WSAAPI WSAGetLastError(void)
{
#ifdef _WIN32
    return (int)GetLastError();
#else
    return (int)(unsigned int)tls_last_error_get();
#endif
}

INT host_fail(int err)
{
    WSASetLastError(err);
    return SOCKET_ERROR;
}

/* The error a provider reported for a failed call: its last error, or
 * WSAEINVAL when it set none (counted: missing_last_error). Called without
 * the lock. */
int provider_error(void)
{
    int err = WSAGetLastError();
    if (err)
        return err;
    host_lock();
    host_g.missing_last_error++;
    host_unlock();
    return WSAEINVAL;
}

/* ------------------------------------------------------------------------ */
/* providers, namespaces                                                     */

size_t provider_index_L(const GUID *id)
{
    for (size_t i = 0; i < host_g.nprov; i++)
        if (guid_eq(&host_g.prov[i]->id, id))
            return i;
    return SIZE_MAX;
}

void provider_unref_L(provider *p)
{
    if (--p->refs == 0) {
        if (p->removed)
            host_g.retired--; /* its last call has returned: nothing calls it again */
        free(p);
    }
}

/* nspv2_route_order's availability test: advertised in this process (the
 * caller holds host_g.lock). */
static int advertised_here(const GUID *id, void *ctx)
{
    (void)ctx;
    return provider_index_L(id) != SIZE_MAX;
}

/* The providers a query reaches, in route order (catalog.h: the catalog's
 * rules, among the providers advertised here), each with a counted
 * reference. Returns 0, or the error. */
int route_L(const nspv2_catalog *cat, DWORD name_space, const GUID *provider_id,
            const WCHAR *name, provider ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    GUID *ids = NULL;
    size_t k = 0;
    int err = nspv2_route_order(cat, name_space, provider_id, name, advertised_here, NULL, &ids,
                                &k);
    if (err)
        return err;
    provider **list = malloc(k * sizeof *list);
    if (!list) {
        free(ids);
        return WSA_NOT_ENOUGH_MEMORY;
    }
    for (size_t i = 0; i < k; i++) {
        list[i] = host_g.prov[provider_index_L(&ids[i])]; /* available: advertised */
        list[i]->refs++;
    }
    free(ids);
    *out = list;
    *n = k;
    return 0;
}

void route_release(provider **list, size_t n)
{
    host_lock();
    for (size_t i = 0; i < n; i++)
        provider_unref_L(list[i]);
    host_unlock();
    free(list);
}

/* The providers a client call of an open session routes to; 0 or an error
 * (unknown session -> WSAEINVAL). Lock held. */
int session_route_L(uint64_t session_id, const nspv2_catalog *cat, DWORD name_space,
                    const GUID *provider_id, const WCHAR *name, provider ***out, size_t *n)
{
    if (!idmap_get(&host_g.sessions, session_id))
        return WSAEINVAL;
    return route_L(cat, name_space, provider_id, name, out, n);
}

/* ------------------------------------------------------------------------ */
/* the todo list: provider calls to make once the lock is released          */

static void todo_push_L(todo *t, int kind, psess *ps, HANDLE handle)
{
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 8;
        todo_item *ni = realloc(t->items, ncap * sizeof *ni);
        if (!ni) {
            /* Cannot queue: drop the call (the object stays referenced,
             * i.e. leaks, rather than being ended twice or freed early). */
            t->oom = 1;
            return;
        }
        t->items = ni;
        t->cap = ncap;
    }
    t->items[t->n].kind = kind;
    t->items[t->n].ps = ps;
    t->items[t->n].handle = handle;
    t->n++;
}

void ps_unref_L(psess *ps)
{
    if (--ps->refs == 0) {
        provider_unref_L(ps->prov);
        free(ps);
    }
}

/* Queue the end of a started psess if it is due (end asked, no calls). */
static void ps_maybe_finish_L(psess *ps, todo *t)
{
    if (ps->state == PS_STARTED && ps->end_kind != END_NONE && ps->calls == 0) {
        ps->state = PS_ENDED;
        ps->refs++;
        todo_push_L(t, TODO_FINISH, ps, NULL);
    }
}

void ps_request_end_L(psess *ps, int kind, todo *t)
{
    if (ps->end_kind == END_NONE)
        ps->end_kind = kind;
    ps_maybe_finish_L(ps, t);
}

void ps_call_hold_L(psess *ps)
{
    ps->calls++;
    ps->refs++;
}

void ps_call_release_L(psess *ps, todo *t)
{
    ps->calls--;
    ps_maybe_finish_L(ps, t);
    ps_unref_L(ps);
}

/* Queue NSPv2LookupServiceEnd for a part (holding a call on its psess). */
void part_end_L(lookup_part *part, todo *t)
{
    if (part->ended)
        return;
    part->ended = 1;
    ps_call_hold_L(part->ps);
    todo_push_L(t, TODO_END, part->ps, part->handle);
}

/* Runs the queued provider calls, without the lock. Returns NO_ERROR or the
 * first error an NSPv2LookupServiceEnd reported. */
int todo_run(todo *t)
{
    int first_err = NO_ERROR;
    for (size_t i = 0; i < t->n; i++) { /* items may be appended meanwhile */
        todo_item it = t->items[i];
        provider *p = it.ps->prov;
        GUID id = p->id;
        if (it.kind == TODO_END) {
            int pin = prov_enter();
            int err = WSASYSNOTREADY; /* refused: as the provider's error */
            if (pin != PIN_REFUSED) {
                WSASetLastError(0);
                err = p->fn.end(it.handle) == NO_ERROR ? NO_ERROR : -1;
            }
            prov_leave(pin);
            if (err != NO_ERROR && first_err == NO_ERROR)
                first_err = err == -1 ? provider_error() : err;
            host_lock();
            ps_call_release_L(it.ps, t);
            host_unlock();
        } else {
            int called = 0;
            /* refused: skipped; the session ends host-side all the same */
            int pin = prov_enter();
            int kind = pin == PIN_REFUSED ? END_NONE : it.ps->end_kind;
            if (kind == END_CLEANUP && p->fn.cleanup) {
                p->fn.cleanup(&id, it.ps->arg);
                called = END_CLEANUP;
            } else if (kind == END_RUNDOWN && p->fn.rundown) {
                p->fn.rundown(&id, it.ps->arg);
                called = END_RUNDOWN;
            }
            prov_leave(pin);
            host_lock();
            if (called == END_CLEANUP)
                host_g.cleanups++;
            else if (called == END_RUNDOWN)
                host_g.rundowns++;
            ps_unref_L(it.ps);
            host_unlock();
        }
    }
    free(t->items);
    t->items = NULL;
    t->n = t->cap = 0;
    return first_err;
}

/* ------------------------------------------------------------------------ */
/* provider-facing                                                           */

NSPV2_HOST_API INT WSAAPI WSAAdvertiseProvider(const GUID *puuidProviderId,
                                               const NSPV2_ROUTINE *pNSPv2Routine)
{
    host_init();
    if (!puuidProviderId)
        return host_fail(WSAEFAULT);
    if (!pNSPv2Routine)
        return host_fail(WSAEINVAL);
    NSPV2_ROUTINE r;
    memcpy(&r, pNSPv2Routine, sizeof r); /* cbSize checked next; read no more */
    if (r.cbSize < sizeof(NSPV2_ROUTINE) || !r.NSPv2LookupServiceBegin ||
        !r.NSPv2LookupServiceNextEx || !r.NSPv2LookupServiceEnd)
        return host_fail(WSAEINVAL);
    /* only an installed provider may advertise (read outside host_g.lock:
     * the catalog may be a file) */
    nspv2_catalog *cat = NULL;
    int err = nspv2_catalog_snapshot(&cat);
    if (err)
        return host_fail(err);
    int installed = nspv2_catalog_find(cat, puuidProviderId) != NULL;
    nspv2_catalog_release(cat);
    if (!installed)
        return host_fail(WSAEINVALIDPROVIDER);
    provider *p = calloc(1, sizeof *p);
    if (!p)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    p->id = *puuidProviderId;
    p->fn.startup = FN_CAST(fn_startup, r.NSPv2Startup);
    p->fn.cleanup = FN_CAST(fn_cleanup, r.NSPv2Cleanup);
    p->fn.begin = FN_CAST(fn_begin, r.NSPv2LookupServiceBegin);
    p->fn.next_ex = FN_CAST(NSPV2_SDK_LOOKUPSERVICENEXTEX, r.NSPv2LookupServiceNextEx);
    p->fn.end = FN_CAST(fn_end, r.NSPv2LookupServiceEnd);
    p->fn.set_service_ex = FN_CAST(NSPV2_SDK_SETSERVICEEX, r.NSPv2SetServiceEx);
    p->fn.rundown = FN_CAST(NSPV2_SDK_CLIENTSESSIONRUNDOWN, r.NSPv2ClientSessionRundown);
    p->table = r;
    p->refs = 1;
    host_lock();
    if (provider_index_L(puuidProviderId) != SIZE_MAX) {
        host_unlock();
        free(p);
        return host_fail(WSAEALREADY);
    }
    if (host_g.nprov == host_g.capprov) {
        size_t ncap = host_g.capprov ? host_g.capprov * 2 : 8;
        provider **nl = realloc(host_g.prov, ncap * sizeof *nl);
        if (!nl) {
            host_unlock();
            free(p);
            return host_fail(WSA_NOT_ENOUGH_MEMORY);
        }
        host_g.prov = nl;
        host_g.capprov = ncap;
    }
    host_g.prov[host_g.nprov++] = p;
    host_g.advertise_count++;
    host_unlock();
    return NO_ERROR;
}

NSPV2_HOST_API INT WSAAPI WSAUnadvertiseProvider(const GUID *puuidProviderId)
{
    host_init();
    if (!puuidProviderId)
        return host_fail(WSAEINVAL);
    todo t = {0};
    host_lock();
    size_t idx = provider_index_L(puuidProviderId);
    if (idx == SIZE_MAX) {
        host_unlock();
        return host_fail(WSAEINVAL);
    }
    provider *p = host_g.prov[idx];
    memmove(&host_g.prov[idx], &host_g.prov[idx + 1],
            (host_g.nprov - idx - 1) * sizeof *host_g.prov);
    host_g.nprov--;
    p->removed = 1;
    host_g.retired++;

    /* 1. end its parts of every open lookup (a next waiting on one of them
     *    is cancelled) */
    size_t n = 0;
    void **vals = idmap_values(&host_g.lookups, &n);
    for (size_t i = 0; i < n; i++) {
        lookup *lk = vals[i];
        for (size_t j = 0; j < lk->nparts; j++) {
            if (lk->parts[j].ps->prov != p || lk->parts[j].ended)
                continue;
            if (lk->pending && lk->pending_part == j) {
                lk->pending->cancelled = 1;
                nspv2_cond_broadcast(&host_g.cv);
            }
            part_end_L(&lk->parts[j], &t);
        }
    }
    free(vals);
    /* 2. run down every session that started it (after those Ends: the End
     *    calls hold the psess, which defers the Rundown until they return) */
    vals = idmap_values(&host_g.sessions, &n);
    for (size_t i = 0; i < n; i++) {
        session *s = vals[i];
        psess *ps = session_find_ps_L(s, p);
        if (!ps)
            continue;
        session_detach_ps_L(s, ps);
        ps_request_end_L(ps, END_RUNDOWN, &t);
        ps_unref_L(ps); /* the list's reference */
    }
    free(vals);
    /* 3. release its held calls (timed out, never completed) */
    held_release_L(&p->id);
    provider_unref_L(p);
    host_unlock();
    todo_run(&t);
    return NO_ERROR;
}

static void held_unlink_L(async_call *a); /* async calls, below */

/* A completion for id, which the host does not track: a double completion
 * if the host issued id and did not forget it on expiry. */
static void untracked_completion_L(uint64_t id)
{
    if (!id || (host_g.next_async <= (uint64_t)UINTPTR_MAX && id > host_g.next_async))
        return; /* never issued */
    size_t n = host_g.expired_count < EXPIRED_RING ? host_g.expired_count : EXPIRED_RING;
    for (size_t i = 0; i < n; i++)
        if (host_g.expired_ring[i] == id)
            return; /* expired, then forgotten: not counted */
    host_g.double_completions++;
}

/* id expired and is forgotten now (late completion or release). */
static void expired_forget_L(uint64_t id)
{
    host_g.expired_ring[host_g.expired_next] = id;
    host_g.expired_next = (host_g.expired_next + 1) % EXPIRED_RING;
    if (host_g.expired_count < EXPIRED_RING)
        host_g.expired_count++;
}

NSPV2_HOST_API INT WSAAPI WSAProviderCompleteAsyncCall(HANDLE hAsyncCall, INT iRetCode)
{
    int completer_error = WSAGetLastError(); /* before anything can change it */
    host_init();
    if (!hAsyncCall)
        return host_fail(WSAEINVAL);
    host_lock();
    uint64_t id = handle_to_id(hAsyncCall);
    async_call *a = idmap_get(&host_g.asyncs, id);
    if (!a) {
        untracked_completion_L(id);
        host_unlock();
        return host_fail(WSAEINVAL);
    }
    if (a->completions < UINT32_MAX)
        a->completions++;
    if (a->state == AS_PENDING) {
        a->state = AS_COMPLETED;
        a->code = iRetCode;
        a->last_error = completer_error;
        host_g.async_pending--;
        nspv2_cond_broadcast(&host_g.cv);
        host_unlock();
        WSASetLastError(completer_error); /* success leaves it as it was */
        return NO_ERROR;
    }
    if (a->state == AS_EXPIRED) { /* its waiter gave up: refuse, and free it */
        idmap_remove(&host_g.asyncs, id);
        held_unlink_L(a);
        expired_forget_L(id);
        host_g.late_completions++;
        host_unlock();
        async_free(a);
        return host_fail(WSAEINVAL);
    }
    host_g.double_completions++; /* completed already, not yet collected */
    host_unlock();
    return host_fail(WSAEINVAL);
}

/* ------------------------------------------------------------------------ */
/* async calls                                                               */

void async_complete_L(async_call *a, INT code)
{
    if (a->state != AS_PENDING)
        return;
    a->state = AS_COMPLETED;
    a->code = code;
    host_g.async_pending--;
    nspv2_cond_broadcast(&host_g.cv);
}

/* A new async call record with scratch_size bytes of zeroed scratch buffer
 * followed by the guard (with_scratch), not yet registered. Called without
 * the lock. NULL when out of memory. */
async_call *async_alloc(size_t scratch_size, int with_scratch)
{
    async_call *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    if (with_scratch) {
        if (scratch_size > SIZE_MAX - GUARD_BYTES ||
            !(a->scratch = malloc(scratch_size + GUARD_BYTES))) {
            free(a);
            return NULL;
        }
        a->scratch_size = scratch_size;
        memset(a->scratch, 0, scratch_size);
        for (unsigned i = 0; i < GUARD_BYTES; i++)
            a->scratch[scratch_size + i] = GUARD_BYTE(i);
    }
    return a;
}

void async_free(async_call *a)
{
    if (a) {
        free(a->scratch);
        free(a->qs);
        free(a);
    }
}

/* Registers a as a pending call with a fresh handle. 0, or -1 (no memory). */
int async_register_L(async_call *a)
{
    a->id = fresh_id(&host_g.next_async, &host_g.asyncs, 1);
    if (idmap_put(&host_g.asyncs, a->id, a) != 0)
        return -1;
    a->state = AS_PENDING;
    a->cancelled = 0;
    host_g.async_pending++;
    return 0;
}

/* Waits (lock held) until a completes, its waiter is cancelled, or the
 * deadline passes. Returns 1 when completed (a is removed from the table
 * and belongs to the caller), 0 otherwise (a stays in the table, EXPIRED,
 * for the late completion to free). */
/* ---- held calls: timed out, never completed ----------------------------
 * Ownership rule: an EXPIRED call belongs to the host's held list, not to
 * its waiter (gone) nor to the provider; a late completion frees it; else
 * the host releases it when the bound is exceeded (oldest first), when its
 * provider is unadvertised, or at reset. The provider must not write a
 * released call's buffer (as after completing it). */

static uint64_t held_size(const async_call *a)
{
    return (uint64_t)(a->scratch ? a->scratch_size + GUARD_BYTES : 0) + (uint64_t)a->qs_size;
}

static void held_unlink_L(async_call *a)
{
    if (a->hprev)
        a->hprev->hnext = a->hnext;
    else
        host_g.held_head = a->hnext;
    if (a->hnext)
        a->hnext->hprev = a->hprev;
    else
        host_g.held_tail = a->hprev;
    a->hprev = a->hnext = NULL;
    host_g.held_calls--;
    host_g.held_bytes -= held_size(a);
}

/* Forget a held call and free it: its handle is unknown from now on. */
static void held_drop_L(async_call *a)
{
    held_unlink_L(a);
    idmap_remove(&host_g.asyncs, a->id);
    expired_forget_L(a->id);
    host_g.held_released++;
    async_free(a);
}

static void held_trim_L(void)
{
    while (host_g.held_head && (host_g.held_calls > host_g.held_max_calls ||
                                host_g.held_bytes > host_g.held_max_bytes))
        held_drop_L(host_g.held_head);
}

void held_release_L(const GUID *id)
{
    async_call *a = host_g.held_head;
    while (a) {
        async_call *next = a->hnext;
        if (!id || guid_eq(&a->provider_id, id))
            held_drop_L(a);
        a = next;
    }
}

/* The waiter of p's call a gave up: hold a (or drop it at once when p was
 * unadvertised: nothing may complete it any more). p is NULL for a harness
 * handle closed before its completion. */
static void held_add_L(async_call *a, const provider *p)
{
    a->hprev = host_g.held_tail;
    a->hnext = NULL;
    if (host_g.held_tail)
        host_g.held_tail->hnext = a;
    else
        host_g.held_head = a;
    host_g.held_tail = a;
    host_g.held_calls++;
    host_g.held_bytes += held_size(a);
    if (p && p->removed)
        held_drop_L(a);
    else
        held_trim_L();
}

int async_wait_L(async_call *a, uint64_t deadline_ns, const provider *p)
{
    while (a->state == AS_PENDING && !a->cancelled) {
        uint64_t now = nspv2_now_ns();
        if (now >= deadline_ns)
            break;
        uint64_t left_ms = (deadline_ns - now + 999999u) / 1000000u;
        if (left_ms > UINT32_MAX)
            left_ms = UINT32_MAX;
        nspv2_cond_timedwait_ms(&host_g.cv, &host_g.lock, (uint32_t)left_ms);
    }
    if (a->state == AS_COMPLETED) {
        idmap_remove(&host_g.asyncs, a->id);
        return 1;
    }
    a->state = AS_EXPIRED;
    host_g.async_pending--;
    held_add_L(a, p); /* may free a */
    return 0;
}

uint64_t deadline_after_L(void)
{
    return nspv2_now_ns() + (uint64_t)host_g.timeout_ms * 1000000u;
}

/* ---- harness handles: async calls with no client call behind them -------
 * Ownership rule: the creator closes the handle; the record stays in the
 * table (completed or not) until then, so nspv2_async_wait can be asked
 * again. Closing a pending one makes it EXPIRED and held like a timed-out
 * call (no buffer of its own: the caller's buffer is the caller's). */

NSPV2_HOST_API INT nspv2_async_create(HANDLE *out)
{
    host_init();
    if (!out)
        return host_fail(WSAEFAULT);
    async_call *a = async_alloc(0, 0);
    if (!a)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    a->harness = 1;
    host_lock();
    if (async_register_L(a) != 0) {
        host_unlock();
        async_free(a);
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    }
    *out = id_to_handle(a->id);
    host_unlock();
    return NO_ERROR;
}

/* The open harness record of h, or NULL. */
static async_call *harness_get_L(HANDLE h)
{
    async_call *a = idmap_get(&host_g.asyncs, handle_to_id(h));
    return a && a->harness && !a->closed ? a : NULL;
}

NSPV2_HOST_API INT nspv2_async_wait(HANDLE h, uint32_t timeout_ms, INT *code, INT *last_error,
                                    uint32_t *completions)
{
    host_init();
    host_lock();
    uint64_t deadline = nspv2_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        /* looked up again after every wait: a close may have freed it */
        async_call *a = harness_get_L(h);
        if (!a) {
            host_unlock();
            return host_fail(WSAEINVAL);
        }
        if (completions)
            *completions = a->completions;
        if (a->state == AS_COMPLETED) {
            if (code)
                *code = a->code;
            if (last_error)
                *last_error = a->last_error;
            host_unlock();
            return NO_ERROR;
        }
        uint64_t now = nspv2_now_ns();
        if (now >= deadline) {
            host_unlock();
            return host_fail(WSAETIMEDOUT);
        }
        uint64_t left_ms = (deadline - now + 999999u) / 1000000u;
        nspv2_cond_timedwait_ms(&host_g.cv, &host_g.lock,
                                left_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)left_ms);
    }
}

NSPV2_HOST_API INT nspv2_async_close(HANDLE h)
{
    host_init();
    host_lock();
    async_call *a = harness_get_L(h);
    if (!a) {
        host_unlock();
        return host_fail(WSAEINVAL);
    }
    a->closed = 1;
    nspv2_cond_broadcast(&host_g.cv); /* waiters on it return WSAEINVAL */
    if (a->state == AS_COMPLETED) {
        /* forgotten; a later completion is a double completion */
        idmap_remove(&host_g.asyncs, a->id);
        host_unlock();
        async_free(a);
        return NO_ERROR;
    }
    a->state = AS_EXPIRED; /* a late completion is refused and counted late */
    host_g.async_pending--;
    held_add_L(a, NULL); /* may free a */
    host_unlock();
    return NO_ERROR;
}

/* ------------------------------------------------------------------------ */
/* control and inspection                                                    */

NSPV2_HOST_API void nspv2_host_set_timeout_ms(uint32_t timeout_ms)
{
    host_init();
    host_lock();
    host_g.timeout_ms = timeout_ms;
    host_unlock();
}

NSPV2_HOST_API void nspv2_host_set_held_limit(uint32_t max_calls, uint64_t max_bytes)
{
    host_init();
    host_lock();
    host_g.held_max_calls = max_calls;
    host_g.held_max_bytes = max_bytes;
    held_trim_L();
    host_unlock();
}

NSPV2_HOST_API void nspv2_host_stats_get(nspv2_host_stats *out)
{
    host_init();
    if (!out)
        return;
    host_lock();
    out->providers = (uint32_t)host_g.nprov;
    out->sessions_open = (uint32_t)host_g.sessions.count;
    out->lookups_open = (uint32_t)host_g.lookups.count;
    out->async_pending = host_g.async_pending;
    out->startups = host_g.startups;
    out->cleanups = host_g.cleanups;
    out->rundowns = host_g.rundowns;
    out->late_completions = host_g.late_completions;
    out->provider_faults = host_g.provider_faults;
    out->timed_out_held = host_g.held_calls;
    out->timed_out_held_bytes = host_g.held_bytes;
    out->timed_out_released = host_g.held_released;
    out->double_completions = host_g.double_completions;
    out->missing_last_error = host_g.missing_last_error;
    host_unlock();
}

NSPV2_HOST_API uint64_t nspv2_host_advertise_count(void)
{
    host_init();
    host_lock();
    uint64_t n = host_g.advertise_count;
    host_unlock();
    return n;
}

NSPV2_HOST_API INT nspv2_host_providers(GUID *ids, uint32_t max, uint32_t *count)
{
    host_init();
    if (!ids && max)
        return host_fail(WSAEFAULT);
    host_lock();
    size_t n = host_g.nprov;
    for (size_t i = 0; i < n && i < max; i++)
        ids[i] = host_g.prov[i]->id;
    host_unlock();
    if (count)
        *count = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_host_provider_table(const GUID *id, NSPV2_ROUTINE *out)
{
    host_init();
    if (!id || !out)
        return host_fail(WSAEFAULT);
    host_lock();
    size_t i = provider_index_L(id);
    if (i == SIZE_MAX) {
        host_unlock();
        return host_fail(WSAEINVAL);
    }
    *out = host_g.prov[i]->table;
    host_unlock();
    return NO_ERROR;
}

/* Unadvertised providers the host may still call (a deferred Rundown or End,
 * a call in flight): 0 means it has returned from the last call into every
 * unadvertised routine table, and will never call one again. */
NSPV2_HOST_API uint32_t nspv2_host_retired_tables(void)
{
    host_init();
    host_lock();
    uint32_t n = host_g.retired;
    host_unlock();
    return n;
}

NSPV2_HOST_API void nspv2_host_stats_reset(void)
{
    host_init();
    host_lock();
    host_g.startups = host_g.cleanups = host_g.rundowns = 0;
    host_g.late_completions = host_g.provider_faults = host_g.held_released = 0;
    host_g.double_completions = host_g.missing_last_error = 0;
    host_unlock();
}

NSPV2_HOST_API void nspv2_host_reset(void)
{
    host_init();
    for (;;) {
        host_lock();
        if (host_g.nprov == 0) {
            host_unlock();
            break;
        }
        GUID id = host_g.prov[0]->id;
        host_unlock();
        WSAUnadvertiseProvider(&id);
    }
    host_lock();
    size_t n = host_g.sessions.count, k = 0;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < host_g.sessions.cap; i++)
        if (host_g.sessions.keys[i])
            ids[k++] = host_g.sessions.keys[i];
    held_release_L(NULL); /* the bound's default too */
    host_g.held_max_calls = NSPV2_HELD_MAX_CALLS;
    host_g.held_max_bytes = NSPV2_HELD_MAX_BYTES;
    host_unlock();
    for (size_t i = 0; i < k; i++)
        nspv2_session_abandon(ids[i]);
    free(ids);
    set_current_session(0);
    nspv2_catalog_reset_memory(); /* a ":memory:" catalog starts empty again */
}
