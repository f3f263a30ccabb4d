/*
 * host.c - the native NSPv2 host (see include/nspv2_host.h for the contract).
 *
 * Design
 * ------
 * All tables live in one structure `g`, guarded by one mutex `g.lock`, with
 * one condition variable `g.cv` that is broadcast whenever something a
 * waiter might care about changes (an async call completes or is cancelled,
 * a provider session finishes starting, a lookup stops being busy).
 *
 * The host NEVER calls into a provider while holding g.lock: providers call
 * back WSAProviderCompleteAsyncCall / WSASetLastError from inside their entry
 * points, possibly on other threads. Every provider call therefore follows
 * the same pattern: under the lock, take references on what the call needs;
 * unlock; call; lock again; drop the references.
 *
 * Objects
 * -------
 *   provider  one advertised provider: its GUID and a copy of its routine
 *             table. Reference counted so that an in-flight call can still
 *             read the table after WSAUnadvertiseProvider.
 *   psess     one (client session, provider) pair: the session argument
 *             written by NSPv2Startup. `calls` counts host calls in flight
 *             that may use it (Startup, Begin, NextEx, End, SetServiceEx);
 *             ending it (Cleanup or Rundown, chosen by whoever asks first)
 *             is deferred until `calls` drops to zero, so the argument is
 *             never ended while a call is using it, and it ends exactly
 *             once.
 *   session   a client session: its psess list and its open lookups.
 *   lookup    a client lookup handle: a list of parts (psess, provider
 *             lookup handle), drained in order.
 *   async     one NextEx / SetServiceEx call awaiting completion, with the
 *             scratch buffer and the length the provider writes. When its
 *             waiter gives up (timeout or cancellation) the record stays in
 *             the table as EXPIRED, buffer included, because the provider
 *             may still write it; a late completion frees it.
 *
 * Work that must run outside the lock (NSPv2LookupServiceEnd, NSPv2Cleanup,
 * NSPv2ClientSessionRundown) is collected in a `todo` list under the lock
 * and run by todo_run() after unlocking.
 *
 * Behaviour where the contract leaves a choice
 * --------------------------------------------
 * Advertise: Startup, Cleanup, SetServiceEx and ClientSessionRundown may be
 *   NULL (no Startup, or a Startup stub failing with WSAEOPNOTSUPP: the
 *   session argument is NULL; no SetServiceEx:
 *   registration fails with WSAEOPNOTSUPP). cbSize may exceed
 *   sizeof(NSPV2_ROUTINE); only sizeof(NSPV2_ROUTINE) bytes are copied.
 * WSAUnadvertiseProvider(NULL) -> WSAEINVAL. Client lookup handles that
 *   reached the provider stay valid (their other providers go on); a next
 *   waiting on it gets WSA_E_CANCELLED.
 * WSCInstallNameSpaceEx: NULL GUID -> WSAEFAULT, GUID already installed ->
 *   WSAEALREADY; identifier, path, version and blob are not used.
 *   WSCUnInstallNameSpace: NULL -> WSAEFAULT, unknown -> WSAEINVAL.
 * Routing (lookups and registration): lpNSProviderId not advertised ->
 *   WSAEINVAL; advertised but serving another namespace than a non-NS_ALL
 *   dwNameSpace -> WSASERVICE_NOT_FOUND; nothing matches ->
 *   WSASERVICE_NOT_FOUND.
 * nspv2_lookup_begin: NULL query set or NULL lphLookup -> WSAEFAULT;
 *   dwSize < sizeof(WSAQUERYSETW) -> WSAEINVAL; unknown session ->
 *   WSAEINVAL. A provider whose Startup or Begin fails is left out; the
 *   lookup fails only if every routed provider failed, with the first
 *   error (in advertise order).
 * nspv2_lookup_next: NULL lpdwBufferLength, or NULL lpqsResults with a
 *   non-zero length -> WSAEFAULT. One next at a time per handle (a second
 *   waits for the first). A provider's WSA_E_NO_MORE moves on to the next
 *   provider; any other error is returned and the lookup stays on the same
 *   provider (so does WSA_E_CANCELLED: the next call asks it again).
 *   WSA_E_CANCELLED also when the lookup is ended, its session closed or
 *   its provider unadvertised while the call waits. A timeout of 0 accepts
 *   only completions made before NextEx returns.
 * nspv2_lookup_end: the handle is closed whatever happens; returns the first
 *   error a provider's End reported, else NO_ERROR.
 * nspv2_set_service: NULL -> WSAEFAULT; dwSize too small or essOperation
 *   above RNRSERVICE_DELETE -> WSAEINVAL; with a namespace other than
 *   NS_ALL and no lpNSProviderId, more than one matching provider ->
 *   WSAEINVAL (ambiguous); with NS_ALL every matching provider is called
 *   and the first error is returned.
 * Sessions: close / abandon first end the session's open lookups
 *   (NSPv2LookupServiceEnd), then run Cleanup / Rundown; they return
 *   NO_ERROR whatever Cleanup returns. An end that races a call still
 *   using the session argument (another thread inside Begin, say) runs when
 *   that call returns, on that thread. The Winsock-named calls, Next and
 *   End included, need a session entered (else WSANOTINITIALISED);
 *   nspv2_session_enter of an unknown session -> WSAEINVAL.
 * late_completions counts completions refused after a timeout or a
 *   cancellation. Such calls keep their scratch buffer until that late
 *   completion (also across nspv2_host_reset), since the provider may still
 *   write it.
 * Handles are counter values of HANDLE width: on 32-bit Windows they wrap
 *   after 2^32, skipping values still in use.
 * nspv2_driver_run: NULL cfg or out, threads 0 or above 1024 -> WSAEINVAL.
 *   Cycle c (1-based, per thread) abandons when c % abandon_every == 0.
 *   Every cycle is counted in cycles_done, a failed open included. Codes
 *   beyond NSPV2_DRIVER_MAX_CODES distinct ones are not counted.
 */
/* clock_gettime, CLOCK_MONOTONIC, pthread_condattr_setclock (platform.h) */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_host.h"

#include "platform.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* entry-point types with the SDK's shapes, whatever the headers declare     */

typedef INT (WSAAPI *fn_startup)(LPGUID, LPVOID *);
typedef INT (WSAAPI *fn_cleanup)(LPGUID, LPVOID);
typedef INT (WSAAPI *fn_begin)(LPGUID, LPWSAQUERYSET2W, DWORD, LPVOID, LPHANDLE);
typedef INT (WSAAPI *fn_end)(HANDLE);

typedef struct routine {
    fn_startup startup;
    fn_cleanup cleanup;
    fn_begin begin;
    NSPV2_SDK_LOOKUPSERVICENEXTEX next_ex;
    fn_end end;
    NSPV2_SDK_SETSERVICEEX set_service_ex;
    NSPV2_SDK_CLIENTSESSIONRUNDOWN rundown;
} routine;

/* Convert between function pointer types through void (*)(void), which is
 * what NSPV2_SLOT does too (the layouts are identical). */
#define FN_CAST(type, f) ((type)(void (*)(void))(f))

#define GUARD_BYTES 64u
#define GUARD_BYTE(i) ((unsigned char)(0xA5u ^ (unsigned)(i)))
#define DEFAULT_TIMEOUT_MS 5000u

/* ------------------------------------------------------------------------ */
/* a small uint64 -> pointer hash map (open addressing, linear probing)      */

typedef struct idmap {
    uint64_t *keys; /* 0 = empty */
    void **vals;
    size_t cap;     /* power of two, or 0 */
    size_t count;
} idmap;

static size_t idmap_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static void *idmap_get(const idmap *m, uint64_t k)
{
    if (!m->cap || !k)
        return NULL;
    for (size_t i = idmap_hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == k)
            return m->vals[i];
        if (!m->keys[i])
            return NULL;
    }
}

static int idmap_grow(idmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    uint64_t *nk = calloc(ncap, sizeof *nk);
    void **nv = calloc(ncap, sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = idmap_hash(m->keys[i], ncap);
        while (nk[j])
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return 0;
}

/* k must be non-zero and absent. Returns 0, or -1 when out of memory. */
static int idmap_put(idmap *m, uint64_t k, void *v)
{
    if ((m->count + 1) * 2 > m->cap && idmap_grow(m) != 0)
        return -1;
    size_t i = idmap_hash(k, m->cap);
    while (m->keys[i])
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = k;
    m->vals[i] = v;
    m->count++;
    return 0;
}

static void *idmap_remove(idmap *m, uint64_t k)
{
    if (!m->cap || !k)
        return NULL;
    size_t mask = m->cap - 1, i = idmap_hash(k, m->cap);
    while (m->keys[i] != k) {
        if (!m->keys[i])
            return NULL;
        i = (i + 1) & mask;
    }
    void *v = m->vals[i];
    /* backward-shift deletion keeps every probe chain unbroken */
    for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        size_t home = idmap_hash(m->keys[j], m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->vals[i] = NULL;
    m->count--;
    return v;
}

/* Snapshot of the values (iteration while the map may change). */
static void **idmap_values(const idmap *m, size_t *n)
{
    void **out = malloc((m->count ? m->count : 1) * sizeof *out);
    size_t k = 0;
    if (out)
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i])
                out[k++] = m->vals[i];
    *n = out ? k : 0;
    return out;
}

/* ------------------------------------------------------------------------ */
/* objects                                                                   */

typedef struct provider {
    GUID id;
    routine fn;
    unsigned refs; /* the provider table's, each psess's, each routing snapshot's */
    int removed;
} provider;

enum { PS_STARTING, PS_STARTED, PS_ENDED };
enum { END_NONE, END_CLEANUP, END_RUNDOWN };

typedef struct psess {
    provider *prov;  /* counted reference */
    LPVOID arg;      /* written by NSPv2Startup */
    int state;
    int end_kind;    /* requested end, END_NONE until asked */
    int listed;      /* still in its session's list */
    unsigned calls;  /* host calls in flight that use it */
    unsigned refs;
} psess;

typedef struct lookup lookup;

typedef struct session {
    uint64_t id;
    psess **ps;
    size_t nps, capps;
    lookup *lookups; /* open lookups of this session (doubly linked) */
} session;

enum { AS_PENDING, AS_COMPLETED, AS_EXPIRED };

typedef struct async_call {
    uint64_t id;
    int state;
    int cancelled;          /* the waiter was asked to give up */
    INT code;               /* completion code */
    DWORD len;              /* *lpdwBufferLength for NextEx */
    size_t scratch_size;
    unsigned char *scratch; /* scratch_size bytes + GUARD_BYTES, or NULL */
    GUID provider_id;       /* copies handed to SetServiceEx */
    WSAQUERYSET2W qs2;
} async_call;

typedef struct lookup_part {
    psess *ps;     /* counted reference */
    HANDLE handle; /* the provider's lookup handle */
    int ended;     /* NSPv2LookupServiceEnd called (or queued) */
} lookup_part;

struct lookup {
    uint64_t id;
    session *sess; /* NULL once detached */
    lookup *sprev, *snext;
    lookup_part *parts;
    size_t nparts, cur;
    int ended;
    int busy;              /* a next is in progress */
    async_call *pending;   /* the call that next waits for */
    size_t pending_part;
    unsigned refs;         /* the table's + each next in progress */
};

typedef struct install {
    GUID id;
    DWORD name_space;
} install;

typedef struct todo_item {
    int kind; /* TODO_END: NSPv2LookupServiceEnd; TODO_FINISH: Cleanup/Rundown */
    psess *ps;
    HANDLE handle;
} todo_item;
enum { TODO_END = 1, TODO_FINISH };

typedef struct todo {
    todo_item *items;
    size_t n, cap;
    int oom;
} todo;

static struct {
    nspv2_mutex lock;
    nspv2_cond cv;
    provider **prov; /* advertise order */
    size_t nprov, capprov;
    install *inst;
    size_t ninst, capinst;
    idmap sessions, lookups, asyncs;
    uint64_t next_session, next_lookup, next_async;
    uint32_t timeout_ms;
    uint32_t async_pending;
    uint64_t startups, cleanups, rundowns, late_completions, provider_faults;
} g = {.lock = NSPV2_MUTEX_INIT, .timeout_ms = DEFAULT_TIMEOUT_MS};

static nspv2_once g_once = NSPV2_ONCE_INIT;
static void g_init(void) { nspv2_cond_init(&g.cv); }
static void host_init(void) { nspv2_call_once(&g_once, g_init); }
static void lock(void) { nspv2_mutex_lock(&g.lock); }
static void unlock(void) { nspv2_mutex_unlock(&g.lock); }

/* ------------------------------------------------------------------------ */
/* per-thread state                                                          */

/* The Winsock last error, and the session entered (in two 32-bit halves:
 * a TLS value is pointer-sized). */
NSPV2_TLS_UINTPTR(tls_last_error)
NSPV2_TLS_UINTPTR(tls_session_lo)
NSPV2_TLS_UINTPTR(tls_session_hi)

static uint64_t current_session(void)
{
    return ((uint64_t)tls_session_hi_get() << 32) | (uint64_t)tls_session_lo_get();
}

static void set_current_session(uint64_t id)
{
    tls_session_lo_set((uintptr_t)(uint32_t)id);
    tls_session_hi_set((uintptr_t)(uint32_t)(id >> 32));
}

NSPV2_HOST_API void WSAAPI WSASetLastError(int iError)
{
    tls_last_error_set((uintptr_t)(unsigned int)iError);
}

NSPV2_HOST_API int WSAAPI WSAGetLastError(void)
{
    return (int)(unsigned int)tls_last_error_get();
}

static INT fail(int err)
{
    WSASetLastError(err);
    return SOCKET_ERROR;
}

/* The error a provider reported for a failed call: its last error, or
 * WSAEINVAL when it set none. */
static int provider_error(void)
{
    int err = WSAGetLastError();
    return err ? err : WSAEINVAL;
}

static HANDLE id_to_handle(uint64_t id) { return (HANDLE)(uintptr_t)id; }
static uint64_t handle_to_id(HANDLE h) { return (uint64_t)(uintptr_t)h; }

/* A fresh id from *counter that fits a HANDLE, is non-zero and not in m. */
static uint64_t fresh_id(uint64_t *counter, const idmap *m, int as_handle)
{
    for (;;) {
        uint64_t v = ++*counter;
        if (as_handle)
            v = (uint64_t)(uintptr_t)v;
        if (v && !idmap_get(m, v))
            return v;
    }
}

/* ------------------------------------------------------------------------ */
/* providers, namespaces                                                     */

static int guid_eq(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

static size_t provider_index_L(const GUID *id)
{
    for (size_t i = 0; i < g.nprov; i++)
        if (guid_eq(&g.prov[i]->id, id))
            return i;
    return SIZE_MAX;
}

static DWORD provider_namespace_L(const provider *p)
{
    for (size_t i = 0; i < g.ninst; i++)
        if (guid_eq(&g.inst[i].id, &p->id))
            return g.inst[i].name_space;
    return NS_EMAIL;
}

static void provider_unref_L(provider *p)
{
    if (--p->refs == 0)
        free(p);
}

/* The providers a query reaches, in advertise order, each with a counted
 * reference. Returns 0, or the error. */
static int route_L(DWORD name_space, const GUID *provider_id, provider ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    provider **list = malloc((g.nprov ? g.nprov : 1) * sizeof *list);
    if (!list)
        return WSA_NOT_ENOUGH_MEMORY;
    size_t k = 0;
    if (provider_id) {
        size_t i = provider_index_L(provider_id);
        if (i == SIZE_MAX) {
            free(list);
            return WSAEINVAL;
        }
        if (name_space == NS_ALL || provider_namespace_L(g.prov[i]) == name_space)
            list[k++] = g.prov[i];
    } else {
        for (size_t i = 0; i < g.nprov; i++)
            if (name_space == NS_ALL || provider_namespace_L(g.prov[i]) == name_space)
                list[k++] = g.prov[i];
    }
    if (k == 0) {
        free(list);
        return WSASERVICE_NOT_FOUND;
    }
    for (size_t i = 0; i < k; i++)
        list[i]->refs++;
    *out = list;
    *n = k;
    return 0;
}

static void route_release(provider **list, size_t n)
{
    lock();
    for (size_t i = 0; i < n; i++)
        provider_unref_L(list[i]);
    unlock();
    free(list);
}

/* The providers a client call of an open session routes to; 0 or an error
 * (unknown session -> WSAEINVAL). Lock held. */
static int session_route_L(uint64_t session_id, DWORD name_space, const GUID *provider_id,
                           provider ***out, size_t *n)
{
    if (!idmap_get(&g.sessions, session_id))
        return WSAEINVAL;
    return route_L(name_space, provider_id, out, n);
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

static void ps_unref_L(psess *ps)
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

static void ps_request_end_L(psess *ps, int kind, todo *t)
{
    if (ps->end_kind == END_NONE)
        ps->end_kind = kind;
    ps_maybe_finish_L(ps, t);
}

static void ps_call_hold_L(psess *ps)
{
    ps->calls++;
    ps->refs++;
}

static void ps_call_release_L(psess *ps, todo *t)
{
    ps->calls--;
    ps_maybe_finish_L(ps, t);
    ps_unref_L(ps);
}

/* Queue NSPv2LookupServiceEnd for a part (holding a call on its psess). */
static void part_end_L(lookup_part *part, todo *t)
{
    if (part->ended)
        return;
    part->ended = 1;
    ps_call_hold_L(part->ps);
    todo_push_L(t, TODO_END, part->ps, part->handle);
}

/* Runs the queued provider calls, without the lock. Returns NO_ERROR or the
 * first error an NSPv2LookupServiceEnd reported. */
static int todo_run(todo *t)
{
    int first_err = NO_ERROR;
    for (size_t i = 0; i < t->n; i++) { /* items may be appended meanwhile */
        todo_item it = t->items[i];
        provider *p = it.ps->prov;
        GUID id = p->id;
        if (it.kind == TODO_END) {
            WSASetLastError(0);
            if (p->fn.end(it.handle) != NO_ERROR && first_err == NO_ERROR)
                first_err = provider_error();
            lock();
            ps_call_release_L(it.ps, t);
            unlock();
        } else {
            int called = 0;
            if (it.ps->end_kind == END_CLEANUP && p->fn.cleanup) {
                p->fn.cleanup(&id, it.ps->arg);
                called = END_CLEANUP;
            } else if (it.ps->end_kind == END_RUNDOWN && p->fn.rundown) {
                p->fn.rundown(&id, it.ps->arg);
                called = END_RUNDOWN;
            }
            lock();
            if (called == END_CLEANUP)
                g.cleanups++;
            else if (called == END_RUNDOWN)
                g.rundowns++;
            ps_unref_L(it.ps);
            unlock();
        }
    }
    free(t->items);
    t->items = NULL;
    t->n = t->cap = 0;
    return first_err;
}

/* ------------------------------------------------------------------------ */
/* sessions and provider sessions                                            */

static psess *session_find_ps_L(session *s, const provider *p)
{
    for (size_t i = 0; i < s->nps; i++)
        if (s->ps[i]->prov == p)
            return s->ps[i];
    return NULL;
}

/* Removes ps from its session's list; the caller then owns the list's
 * reference. */
static void session_detach_ps_L(session *s, psess *ps)
{
    for (size_t i = 0; i < s->nps; i++) {
        if (s->ps[i] == ps) {
            s->ps[i] = s->ps[--s->nps];
            ps->listed = 0;
            return;
        }
    }
}

/* The psess of (session, provider) with a call held, running NSPv2Startup
 * first if the session has not started the provider. Returns 0 or an error;
 * the lock is held on entry and on return (released around Startup). */
static int ps_acquire_L(uint64_t session_id, provider *p, psess **out, todo *t)
{
    *out = NULL;
    for (;;) {
        session *s = idmap_get(&g.sessions, session_id);
        if (!s)
            return WSAEINVAL;
        if (p->removed)
            return WSAEINVAL;
        psess *ps = session_find_ps_L(s, p);
        if (ps && ps->state == PS_STARTING) {
            nspv2_cond_wait(&g.cv, &g.lock);
            continue;
        }
        if (ps) {
            if (ps->end_kind != END_NONE || ps->state != PS_STARTED)
                return WSAEINVAL;
            ps_call_hold_L(ps);
            *out = ps;
            return 0;
        }
        if (s->nps == s->capps) {
            size_t ncap = s->capps ? s->capps * 2 : 4;
            psess **nl = realloc(s->ps, ncap * sizeof *nl);
            if (!nl)
                return WSA_NOT_ENOUGH_MEMORY;
            s->ps = nl;
            s->capps = ncap;
        }
        ps = calloc(1, sizeof *ps);
        if (!ps)
            return WSA_NOT_ENOUGH_MEMORY;
        ps->prov = p;
        p->refs++;
        ps->state = PS_STARTING;
        ps->listed = 1;
        ps->refs = 1; /* the session's list */
        s->ps[s->nps++] = ps;
        ps_call_hold_L(ps);

        int err = 0;
        LPVOID arg = NULL;
        if (p->fn.startup) {
            GUID id = p->id;
            unlock();
            WSASetLastError(0);
            INT r = p->fn.startup(&id, &arg);
            if (r != NO_ERROR) {
                err = provider_error();
                /* An optional Startup left to a WSAEOPNOTSUPP stub: the
                 * provider keeps no session state; go on with a NULL
                 * session argument, as with a NULL Startup slot. */
                if (err == WSAEOPNOTSUPP) {
                    err = 0;
                    arg = NULL;
                }
            }
            lock();
            g.startups++;
        }
        nspv2_cond_broadcast(&g.cv);
        if (err) {
            ps->state = PS_ENDED; /* never started: nothing to end */
            session *s2 = ps->listed ? idmap_get(&g.sessions, session_id) : NULL;
            if (s2) {
                session_detach_ps_L(s2, ps);
                ps_unref_L(ps); /* the list's reference; ours remains */
            }
            ps_call_release_L(ps, t);
            return err;
        }
        ps->arg = arg;
        ps->state = PS_STARTED;
        if (ps->end_kind != END_NONE) { /* closed or unadvertised meanwhile */
            ps_call_release_L(ps, t);
            return WSAEINVAL;
        }
        *out = ps;
        return 0;
    }
}

NSPV2_HOST_API INT nspv2_session_open(uint64_t *session_id)
{
    host_init();
    if (!session_id)
        return fail(WSAEFAULT);
    session *s = calloc(1, sizeof *s);
    if (!s)
        return fail(WSA_NOT_ENOUGH_MEMORY);
    lock();
    s->id = fresh_id(&g.next_session, &g.sessions, 0);
    if (idmap_put(&g.sessions, s->id, s) != 0) {
        unlock();
        free(s);
        return fail(WSA_NOT_ENOUGH_MEMORY);
    }
    *session_id = s->id;
    unlock();
    return NO_ERROR;
}

static void lookup_unref_L(lookup *lk)
{
    if (--lk->refs)
        return;
    for (size_t i = 0; i < lk->nparts; i++)
        ps_unref_L(lk->parts[i].ps);
    free(lk->parts);
    free(lk);
}

/* Ends a lookup already removed from the table: cancels a waiting next and
 * queues NSPv2LookupServiceEnd for every part. Drops the table's reference. */
static void lookup_end_L(lookup *lk, todo *t)
{
    lk->ended = 1;
    if (lk->pending) {
        lk->pending->cancelled = 1;
        nspv2_cond_broadcast(&g.cv);
    }
    for (size_t i = 0; i < lk->nparts; i++)
        part_end_L(&lk->parts[i], t);
    if (lk->sess) {
        if (lk->sprev)
            lk->sprev->snext = lk->snext;
        else
            lk->sess->lookups = lk->snext;
        if (lk->snext)
            lk->snext->sprev = lk->sprev;
        lk->sess = NULL;
        lk->sprev = lk->snext = NULL;
    }
    nspv2_cond_broadcast(&g.cv); /* nexts waiting for busy */
    lookup_unref_L(lk);
}

static INT session_end(uint64_t session_id, int kind)
{
    host_init();
    todo t = {0};
    lock();
    session *s = idmap_remove(&g.sessions, session_id);
    if (!s) {
        unlock();
        return fail(WSAEINVAL);
    }
    while (s->lookups) {
        lookup *lk = s->lookups;
        idmap_remove(&g.lookups, lk->id);
        lookup_end_L(lk, &t); /* unlinks it */
    }
    for (size_t i = 0; i < s->nps; i++) {
        psess *ps = s->ps[i];
        ps->listed = 0;
        ps_request_end_L(ps, kind, &t);
        ps_unref_L(ps);
    }
    free(s->ps);
    free(s);
    unlock();
    todo_run(&t);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_session_close(uint64_t session_id)
{
    return session_end(session_id, END_CLEANUP);
}

NSPV2_HOST_API INT nspv2_session_abandon(uint64_t session_id)
{
    return session_end(session_id, END_RUNDOWN);
}

NSPV2_HOST_API INT nspv2_session_enter(uint64_t session_id)
{
    host_init();
    if (session_id) {
        lock();
        int known = idmap_get(&g.sessions, session_id) != NULL;
        unlock();
        if (!known)
            return fail(WSAEINVAL);
    }
    set_current_session(session_id);
    return NO_ERROR;
}

/* ------------------------------------------------------------------------ */
/* provider-facing                                                           */

NSPV2_HOST_API INT WSAAPI WSAAdvertiseProvider(const GUID *puuidProviderId,
                                               const NSPV2_ROUTINE *pNSPv2Routine)
{
    host_init();
    if (!puuidProviderId)
        return fail(WSAEFAULT);
    if (!pNSPv2Routine)
        return fail(WSAEINVAL);
    NSPV2_ROUTINE r;
    memcpy(&r, pNSPv2Routine, sizeof r); /* cbSize checked next; read no more */
    if (r.cbSize < sizeof(NSPV2_ROUTINE) || !r.NSPv2LookupServiceBegin ||
        !r.NSPv2LookupServiceNextEx || !r.NSPv2LookupServiceEnd)
        return fail(WSAEINVAL);
    provider *p = calloc(1, sizeof *p);
    if (!p)
        return fail(WSA_NOT_ENOUGH_MEMORY);
    p->id = *puuidProviderId;
    p->fn.startup = FN_CAST(fn_startup, r.NSPv2Startup);
    p->fn.cleanup = FN_CAST(fn_cleanup, r.NSPv2Cleanup);
    p->fn.begin = FN_CAST(fn_begin, r.NSPv2LookupServiceBegin);
    p->fn.next_ex = FN_CAST(NSPV2_SDK_LOOKUPSERVICENEXTEX, r.NSPv2LookupServiceNextEx);
    p->fn.end = FN_CAST(fn_end, r.NSPv2LookupServiceEnd);
    p->fn.set_service_ex = FN_CAST(NSPV2_SDK_SETSERVICEEX, r.NSPv2SetServiceEx);
    p->fn.rundown = FN_CAST(NSPV2_SDK_CLIENTSESSIONRUNDOWN, r.NSPv2ClientSessionRundown);
    p->refs = 1;
    lock();
    if (provider_index_L(puuidProviderId) != SIZE_MAX) {
        unlock();
        free(p);
        return fail(WSAEALREADY);
    }
    if (g.nprov == g.capprov) {
        size_t ncap = g.capprov ? g.capprov * 2 : 8;
        provider **nl = realloc(g.prov, ncap * sizeof *nl);
        if (!nl) {
            unlock();
            free(p);
            return fail(WSA_NOT_ENOUGH_MEMORY);
        }
        g.prov = nl;
        g.capprov = ncap;
    }
    g.prov[g.nprov++] = p;
    unlock();
    return NO_ERROR;
}

NSPV2_HOST_API INT WSAAPI WSAUnadvertiseProvider(const GUID *puuidProviderId)
{
    host_init();
    if (!puuidProviderId)
        return fail(WSAEINVAL);
    todo t = {0};
    lock();
    size_t idx = provider_index_L(puuidProviderId);
    if (idx == SIZE_MAX) {
        unlock();
        return fail(WSAEINVAL);
    }
    provider *p = g.prov[idx];
    memmove(&g.prov[idx], &g.prov[idx + 1], (g.nprov - idx - 1) * sizeof *g.prov);
    g.nprov--;
    p->removed = 1;

    /* 1. end its parts of every open lookup (a next waiting on one of them
     *    is cancelled) */
    size_t n = 0;
    void **vals = idmap_values(&g.lookups, &n);
    for (size_t i = 0; i < n; i++) {
        lookup *lk = vals[i];
        for (size_t j = 0; j < lk->nparts; j++) {
            if (lk->parts[j].ps->prov != p || lk->parts[j].ended)
                continue;
            if (lk->pending && lk->pending_part == j) {
                lk->pending->cancelled = 1;
                nspv2_cond_broadcast(&g.cv);
            }
            part_end_L(&lk->parts[j], &t);
        }
    }
    free(vals);
    /* 2. run down every session that started it (after those Ends: the End
     *    calls hold the psess, which defers the Rundown until they return) */
    vals = idmap_values(&g.sessions, &n);
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
    provider_unref_L(p);
    unlock();
    todo_run(&t);
    return NO_ERROR;
}

NSPV2_HOST_API INT WSAAPI WSAProviderCompleteAsyncCall(HANDLE hAsyncCall, INT iRetCode)
{
    host_init();
    if (!hAsyncCall)
        return fail(WSAEINVAL);
    lock();
    uint64_t id = handle_to_id(hAsyncCall);
    async_call *a = idmap_get(&g.asyncs, id);
    if (!a) {
        unlock();
        return fail(WSAEINVAL);
    }
    if (a->state == AS_PENDING) {
        a->state = AS_COMPLETED;
        a->code = iRetCode;
        g.async_pending--;
        nspv2_cond_broadcast(&g.cv);
        unlock();
        return NO_ERROR;
    }
    if (a->state == AS_EXPIRED) { /* its waiter gave up: refuse, and free it */
        idmap_remove(&g.asyncs, id);
        g.late_completions++;
        unlock();
        free(a->scratch);
        free(a);
        return fail(WSAEINVAL);
    }
    unlock(); /* completed already */
    return fail(WSAEINVAL);
}

NSPV2_HOST_API INT WSAAPI WSCInstallNameSpaceEx(LPWSTR lpszIdentifier, LPWSTR lpszPathName,
                                                DWORD dwNameSpace, DWORD dwVersion,
                                                LPGUID lpProviderId, LPBLOB lpProviderInfo)
{
    (void)lpszIdentifier;
    (void)lpszPathName;
    (void)dwVersion;
    (void)lpProviderInfo;
    host_init();
    if (!lpProviderId)
        return fail(WSAEFAULT);
    lock();
    for (size_t i = 0; i < g.ninst; i++) {
        if (guid_eq(&g.inst[i].id, lpProviderId)) {
            unlock();
            return fail(WSAEALREADY);
        }
    }
    if (g.ninst == g.capinst) {
        size_t ncap = g.capinst ? g.capinst * 2 : 8;
        install *ni = realloc(g.inst, ncap * sizeof *ni);
        if (!ni) {
            unlock();
            return fail(WSA_NOT_ENOUGH_MEMORY);
        }
        g.inst = ni;
        g.capinst = ncap;
    }
    g.inst[g.ninst].id = *lpProviderId;
    g.inst[g.ninst].name_space = dwNameSpace;
    g.ninst++;
    unlock();
    return NO_ERROR;
}

NSPV2_HOST_API INT WSAAPI WSCUnInstallNameSpace(LPGUID lpProviderId)
{
    host_init();
    if (!lpProviderId)
        return fail(WSAEFAULT);
    lock();
    for (size_t i = 0; i < g.ninst; i++) {
        if (guid_eq(&g.inst[i].id, lpProviderId)) {
            g.inst[i] = g.inst[--g.ninst];
            unlock();
            return NO_ERROR;
        }
    }
    unlock();
    return fail(WSAEINVAL);
}

/* ------------------------------------------------------------------------ */
/* async calls                                                               */

/* A new async call record with scratch_size bytes of zeroed scratch buffer
 * followed by the guard (with_scratch), not yet registered. Called without
 * the lock. NULL when out of memory. */
static async_call *async_alloc(size_t scratch_size, int with_scratch)
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

static void async_free(async_call *a)
{
    if (a) {
        free(a->scratch);
        free(a);
    }
}

/* Registers a as a pending call with a fresh handle. 0, or -1 (no memory). */
static int async_register_L(async_call *a)
{
    a->id = fresh_id(&g.next_async, &g.asyncs, 1);
    if (idmap_put(&g.asyncs, a->id, a) != 0)
        return -1;
    a->state = AS_PENDING;
    a->cancelled = 0;
    g.async_pending++;
    return 0;
}

/* Waits (lock held) until a completes, its waiter is cancelled, or the
 * deadline passes. Returns 1 when completed (a is removed from the table
 * and belongs to the caller), 0 otherwise (a stays in the table, EXPIRED,
 * for the late completion to free). */
static int async_wait_L(async_call *a, uint64_t deadline_ns)
{
    while (a->state == AS_PENDING && !a->cancelled) {
        uint64_t now = nspv2_now_ns();
        if (now >= deadline_ns)
            break;
        uint64_t left_ms = (deadline_ns - now + 999999u) / 1000000u;
        if (left_ms > UINT32_MAX)
            left_ms = UINT32_MAX;
        nspv2_cond_timedwait_ms(&g.cv, &g.lock, (uint32_t)left_ms);
    }
    if (a->state == AS_COMPLETED) {
        idmap_remove(&g.asyncs, a->id);
        return 1;
    }
    a->state = AS_EXPIRED;
    g.async_pending--;
    return 0;
}

static uint64_t deadline_after_L(void)
{
    return nspv2_now_ns() + (uint64_t)g.timeout_ms * 1000000u;
}

/* ------------------------------------------------------------------------ */
/* query sets                                                                */

static int check_query_set(const WSAQUERYSETW *qs)
{
    if (!qs)
        return WSAEFAULT;
    if (qs->dwSize < sizeof(WSAQUERYSETW))
        return WSAEINVAL;
    return 0;
}

static void to_query_set2(const WSAQUERYSETW *in, WSAQUERYSET2W *out)
{
    memset(out, 0, sizeof *out);
    out->dwSize = sizeof(WSAQUERYSET2W);
    out->lpszServiceInstanceName = in->lpszServiceInstanceName;
    out->lpVersion = in->lpVersion;
    out->lpszComment = in->lpszComment;
    out->dwNameSpace = in->dwNameSpace;
    out->lpNSProviderId = in->lpNSProviderId;
    out->lpszContext = (void *)in->lpszContext; /* LPTSTR under mingw-w64 */
    out->dwNumberOfProtocols = in->dwNumberOfProtocols;
    out->lpafpProtocols = in->lpafpProtocols;
    out->lpszQueryString = in->lpszQueryString;
    out->dwNumberOfCsAddrs = in->dwNumberOfCsAddrs;
    out->lpcsaBuffer = in->lpcsaBuffer;
    out->dwOutputFlags = in->dwOutputFlags;
    out->lpBlob = in->lpBlob;
}

/* Relocation of a provider's WSAQUERYSET2W result (in the scratch buffer)
 * into the client's buffer as a WSAQUERYSETW. Every pointer must be NULL or
 * lie, with what it points to, inside the data area of the scratch buffer
 * (after the header), and no string may share bytes with the CSADDR_INFO
 * array or the BLOB, whose pointers are rewritten in place; anything else
 * is a provider fault. */
typedef struct reloc {
    uintptr_t lo, hi; /* data area of the scratch buffer */
    uintptr_t used;   /* end of the highest region referenced */
} reloc;

static int reloc_region(reloc *r, const void *ptr, size_t len)
{
    uintptr_t p = (uintptr_t)ptr;
    if (!p)
        return len == 0;
    if (p < r->lo || p > r->hi || len > r->hi - p)
        return 0;
    if (p + len > r->used)
        r->used = p + len;
    return 1;
}

static int reloc_array(reloc *r, const void *ptr, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return 0;
    return reloc_region(r, ptr, count * size);
}

/* A NUL-terminated UTF-16 string inside the data area; *len gets its size
 * in bytes, terminator included (0 for NULL). */
static int reloc_wstr(reloc *r, const void *ptr, size_t *len)
{
    uintptr_t p = (uintptr_t)ptr;
    *len = 0;
    if (!p)
        return 1;
    if (p < r->lo || p >= r->hi)
        return 0;
    const unsigned char *s = ptr;
    for (size_t off = 0; r->hi - p - off >= sizeof(WCHAR); off += sizeof(WCHAR)) {
        WCHAR c;
        memcpy(&c, s + off, sizeof c);
        if (c == 0) {
            *len = off + sizeof(WCHAR);
            return reloc_region(r, ptr, *len);
        }
    }
    return 0;
}

static int regions_overlap(const void *a, size_t alen, const void *b, size_t blen)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    if (!pa || !pb || !alen || !blen)
        return 0;
    return pa < pb + blen && pb < pa + alen;
}

/* 1 if nothing was written past the provider's buffer. */
static int guard_intact(const unsigned char *scratch, size_t scratch_size)
{
    if (!scratch)
        return 1;
    for (unsigned i = 0; i < GUARD_BYTES; i++)
        if (scratch[scratch_size + i] != GUARD_BYTE(i))
            return 0;
    return 1;
}

/* Returns 0 on success, -1 on a provider fault. The client buffer holds at
 * least scratch_size + NSPV2_QS_DELTA bytes. */
static int relocate_result(const unsigned char *scratch, size_t scratch_size,
                           unsigned char *client)
{
    const size_t h2 = sizeof(WSAQUERYSET2W), h1 = sizeof(WSAQUERYSETW);
    for (unsigned i = 0; i < GUARD_BYTES; i++)
        if (scratch[scratch_size + i] != GUARD_BYTE(i))
            return -1; /* wrote past its buffer */
    if (scratch_size < h2)
        return -1; /* success without room for the header */
    WSAQUERYSET2W q;
    memcpy(&q, scratch, sizeof q);
    reloc r = {(uintptr_t)scratch + h2, (uintptr_t)scratch + scratch_size,
               (uintptr_t)scratch + h2};

    const void *str[4] = {q.lpszServiceInstanceName, q.lpszComment, (const void *)q.lpszContext,
                          q.lpszQueryString};
    size_t slen[4];
    if (!reloc_wstr(&r, str[0], &slen[0]) || !reloc_wstr(&r, str[1], &slen[1]) ||
        !reloc_wstr(&r, str[2], &slen[2]) || !reloc_wstr(&r, str[3], &slen[3]) ||
        !reloc_region(&r, q.lpVersion, q.lpVersion ? sizeof(WSAVERSION) : 0) ||
        !reloc_region(&r, q.lpNSProviderId, q.lpNSProviderId ? sizeof(GUID) : 0))
        return -1;
    if ((q.dwNumberOfProtocols && !q.lpafpProtocols) ||
        !reloc_array(&r, q.lpafpProtocols, q.dwNumberOfProtocols, sizeof(AFPROTOCOLS)))
        return -1;
    if ((q.dwNumberOfCsAddrs && !q.lpcsaBuffer) ||
        !reloc_array(&r, q.lpcsaBuffer, q.dwNumberOfCsAddrs, sizeof(CSADDR_INFO)))
        return -1;
    const unsigned char *csa = (const unsigned char *)q.lpcsaBuffer;
    for (DWORD i = 0; i < q.dwNumberOfCsAddrs; i++) {
        CSADDR_INFO c;
        memcpy(&c, csa + (size_t)i * sizeof c, sizeof c);
        if (c.LocalAddr.iSockaddrLength < 0 || c.RemoteAddr.iSockaddrLength < 0 ||
            !reloc_region(&r, c.LocalAddr.lpSockaddr, (size_t)c.LocalAddr.iSockaddrLength) ||
            !reloc_region(&r, c.RemoteAddr.lpSockaddr, (size_t)c.RemoteAddr.iSockaddrLength))
            return -1;
    }
    BLOB b = {0, NULL};
    if (q.lpBlob) {
        if (!reloc_region(&r, q.lpBlob, sizeof(BLOB)))
            return -1;
        memcpy(&b, q.lpBlob, sizeof b);
        if (!reloc_region(&r, b.pBlobData, b.cbSize))
            return -1;
        /* its pointer is rewritten in place: it must not share bytes with
         * the CSADDR_INFO array, whose pointers are rewritten too */
        if (regions_overlap(q.lpBlob, sizeof(BLOB), q.lpcsaBuffer,
                            (size_t)q.dwNumberOfCsAddrs * sizeof(CSADDR_INFO)))
            return -1;
    }
    /* nor may a string: it would change with the rewritten pointer, and
     * could lose its terminator */
    for (size_t i = 0; i < 4; i++)
        if (regions_overlap(str[i], slen[i], q.lpcsaBuffer,
                            (size_t)q.dwNumberOfCsAddrs * sizeof(CSADDR_INFO)) ||
            regions_overlap(str[i], slen[i], q.lpBlob, sizeof(BLOB)))
            return -1;

    /* Copy the data area, then rewrite the pointers in the client's copy:
     * a pointer p into scratch + h2 becomes client + h1 + (p - scratch - h2). */
    memcpy(client + h1, scratch + h2, r.used - r.lo);
#define MOVED(p) ((p) ? (void *)(client + h1 + ((uintptr_t)(p) - r.lo)) : NULL)
    for (DWORD i = 0; i < q.dwNumberOfCsAddrs; i++) {
        size_t off = ((uintptr_t)csa - r.lo) + (size_t)i * sizeof(CSADDR_INFO);
        CSADDR_INFO c;
        memcpy(&c, client + h1 + off, sizeof c);
        c.LocalAddr.lpSockaddr = MOVED(c.LocalAddr.lpSockaddr);
        c.RemoteAddr.lpSockaddr = MOVED(c.RemoteAddr.lpSockaddr);
        memcpy(client + h1 + off, &c, sizeof c);
    }
    if (q.lpBlob) {
        size_t off = (uintptr_t)q.lpBlob - r.lo;
        b.pBlobData = MOVED(b.pBlobData);
        memcpy(client + h1 + off, &b, sizeof b);
    }
    WSAQUERYSETW w;
    memset(&w, 0, sizeof w);
    w.dwSize = sizeof(WSAQUERYSETW);
    w.lpszServiceInstanceName = MOVED(q.lpszServiceInstanceName);
    w.lpServiceClassId = NULL;
    w.lpVersion = MOVED(q.lpVersion);
    w.lpszComment = MOVED(q.lpszComment);
    w.dwNameSpace = q.dwNameSpace;
    w.lpNSProviderId = MOVED(q.lpNSProviderId);
    w.lpszContext = MOVED(q.lpszContext);
    w.dwNumberOfProtocols = q.dwNumberOfProtocols;
    w.lpafpProtocols = MOVED(q.lpafpProtocols);
    w.lpszQueryString = MOVED(q.lpszQueryString);
    w.dwNumberOfCsAddrs = q.dwNumberOfCsAddrs;
    w.lpcsaBuffer = MOVED(q.lpcsaBuffer);
    w.dwOutputFlags = q.dwOutputFlags;
    w.lpBlob = MOVED(q.lpBlob);
#undef MOVED
    memcpy(client, &w, sizeof w);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* client-facing lookups                                                     */

NSPV2_HOST_API INT nspv2_lookup_begin(uint64_t session_id, LPWSAQUERYSETW lpqsRestrictions,
                                      DWORD dwControlFlags, LPHANDLE lphLookup)
{
    host_init();
    int err = check_query_set(lpqsRestrictions);
    if (err)
        return fail(err);
    if (!lphLookup)
        return fail(WSAEFAULT);
    WSAQUERYSET2W qs2;
    to_query_set2(lpqsRestrictions, &qs2);

    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    lock();
    err = session_route_L(session_id, lpqsRestrictions->dwNameSpace,
                          lpqsRestrictions->lpNSProviderId, &route, &nroute);
    if (err) {
        unlock();
        return fail(err);
    }
    lookup_part *parts = calloc(nroute, sizeof *parts);
    lookup *lk = calloc(1, sizeof *lk);
    if (!parts || !lk) {
        unlock();
        free(parts);
        free(lk);
        route_release(route, nroute);
        return fail(WSA_NOT_ENOUGH_MEMORY);
    }
    size_t nparts = 0;
    int first_err = 0;
    for (size_t i = 0; i < nroute; i++) {
        provider *p = route[i];
        psess *ps;
        int e = ps_acquire_L(session_id, p, &ps, &t);
        if (e) {
            if (!first_err)
                first_err = e;
            continue;
        }
        /* keep the call held until the lookup is registered, so that the
         * provider session cannot end before its part is known */
        GUID id = p->id;
        LPVOID arg = ps->arg;
        HANDLE h = NULL;
        unlock();
        WSASetLastError(0);
        INT r = p->fn.begin(&id, &qs2, dwControlFlags, arg, &h);
        e = r == NO_ERROR ? 0 : provider_error();
        lock();
        if (e) {
            if (!first_err)
                first_err = e;
            ps_call_release_L(ps, &t);
            continue;
        }
        ps->refs++; /* the part's reference */
        parts[nparts].ps = ps;
        parts[nparts].handle = h;
        nparts++;
    }
    session *s = idmap_get(&g.sessions, session_id);
    int ok = nparts > 0 && s != NULL;
    if (ok) {
        lk->id = fresh_id(&g.next_lookup, &g.lookups, 1);
        if (idmap_put(&g.lookups, lk->id, lk) != 0) {
            ok = 0;
            first_err = WSA_NOT_ENOUGH_MEMORY;
        }
    } else if (nparts > 0) {
        first_err = WSAEINVAL; /* the session was closed meanwhile */
    }
    lk->parts = parts;
    lk->nparts = nparts;
    lk->refs = 1;
    for (size_t i = 0; i < nparts; i++) {
        psess *ps = parts[i].ps;
        /* a provider session asked to end meanwhile (unadvertised): end
         * its part now, before the held call is released */
        if (!ok || ps->end_kind != END_NONE)
            part_end_L(&parts[i], &t);
        ps_call_release_L(ps, &t);
    }
    if (ok) {
        lk->sess = s;
        lk->snext = s->lookups;
        if (s->lookups)
            s->lookups->sprev = lk;
        s->lookups = lk;
        *lphLookup = id_to_handle(lk->id);
    } else {
        lookup_unref_L(lk);
    }
    unlock();
    todo_run(&t);
    route_release(route, nroute);
    if (!ok)
        return fail(first_err ? first_err : WSASERVICE_NOT_FOUND);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_session_start(uint64_t session_id, DWORD name_space,
                                      const GUID *provider_id)
{
    host_init();
    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    lock();
    int err = session_route_L(session_id, name_space, provider_id, &route, &nroute);
    if (err) {
        unlock();
        return fail(err);
    }
    int first_err = 0;
    size_t started = 0;
    for (size_t i = 0; i < nroute; i++) {
        psess *ps;
        int e = ps_acquire_L(session_id, route[i], &ps, &t);
        if (e) {
            if (!first_err)
                first_err = e;
            continue;
        }
        started++;
        ps_call_release_L(ps, &t);
    }
    unlock();
    todo_run(&t);
    route_release(route, nroute);
    if (!started)
        return fail(first_err ? first_err : WSASERVICE_NOT_FOUND);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_lookup_next(HANDLE hLookup, DWORD dwControlFlags,
                                     LPDWORD lpdwBufferLength, LPWSAQUERYSETW lpqsResults)
{
    host_init();
    if (!lpdwBufferLength)
        return fail(WSAEFAULT);
    DWORD client_len = *lpdwBufferLength;
    if (client_len && !lpqsResults)
        return fail(WSAEFAULT);
    size_t scratch_size = client_len > NSPV2_QS_DELTA ? client_len - NSPV2_QS_DELTA : 0;

    todo t = {0};
    lock();
    lookup *lk = idmap_get(&g.lookups, handle_to_id(hLookup));
    if (!lk) {
        unlock();
        return fail(WSA_INVALID_HANDLE);
    }
    lk->refs++;
    while (lk->busy && !lk->ended)
        nspv2_cond_wait(&g.cv, &g.lock); /* one next at a time per lookup */
    if (lk->ended) {
        lookup_unref_L(lk);
        unlock();
        return fail(WSA_INVALID_HANDLE);
    }
    lk->busy = 1;

    int err = 0;
    async_call *done = NULL; /* a completed call to hand back */
    async_call *a = NULL;
    for (;;) {
        if (lk->ended) { /* ended by another thread meanwhile */
            err = WSA_E_CANCELLED;
            break;
        }
        while (lk->cur < lk->nparts && lk->parts[lk->cur].ended)
            lk->cur++;
        if (lk->cur >= lk->nparts) {
            err = WSA_E_NO_MORE;
            break;
        }
        if (!a) { /* allocate without the lock (busy keeps the lookup ours) */
            unlock();
            a = async_alloc(scratch_size, 1);
            lock();
            if (!a) {
                err = WSA_NOT_ENOUGH_MEMORY;
                break;
            }
            continue; /* look at the parts again */
        }
        if (async_register_L(a) != 0) {
            err = WSA_NOT_ENOUGH_MEMORY;
            break;
        }
        size_t idx = lk->cur;
        lookup_part *part = &lk->parts[idx];
        psess *ps = part->ps;
        ps_call_hold_L(ps);
        lk->pending = a;
        lk->pending_part = idx;
        HANDLE hprov = part->handle;
        NSPV2_SDK_LOOKUPSERVICENEXTEX next_ex = ps->prov->fn.next_ex;
        uint64_t deadline = deadline_after_L();
        a->len = (DWORD)scratch_size;
        unlock();
        next_ex(id_to_handle(a->id), hprov, dwControlFlags, &a->len,
                (LPWSAQUERYSET2W)(void *)a->scratch);
        lock();
        ps_call_release_L(ps, &t);
        int completed = async_wait_L(a, deadline);
        lk->pending = NULL;
        if (!completed) {
            a = NULL; /* stays in the table (EXPIRED) for a late completion */
            err = WSA_E_CANCELLED;
            break;
        }
        if (a->code == WSA_E_NO_MORE && !guard_intact(a->scratch, a->scratch_size)) {
            done = a; /* an overrun: reported as a fault below */
            a = NULL;
            break;
        }
        if (a->code == WSA_E_NO_MORE && !lk->ended) {
            async_free(a);
            a = NULL;
            if (lk->cur == idx)
                lk->cur++;
            continue; /* on to the next provider */
        }
        done = a;
        a = NULL;
        break;
    }
    lk->busy = 0;
    nspv2_cond_broadcast(&g.cv);
    lookup_unref_L(lk);
    unlock();
    async_free(a); /* allocated but unused */
    todo_run(&t);
    if (!done)
        return fail(err);

    INT code = done->code;
    if (code != NO_ERROR && !guard_intact(done->scratch, done->scratch_size)) {
        /* an overrun is a fault whatever the provider completed with */
        lock();
        g.provider_faults++;
        unlock();
        code = WSANO_RECOVERY;
    } else if (code == NO_ERROR) {
        if (relocate_result(done->scratch, done->scratch_size, (unsigned char *)lpqsResults) != 0) {
            lock();
            g.provider_faults++;
            unlock();
            code = WSANO_RECOVERY;
        }
    } else if (code == WSAEFAULT) {
        DWORD need = done->len;
        *lpdwBufferLength = need > UINT32_MAX - NSPV2_QS_DELTA ? UINT32_MAX : need + NSPV2_QS_DELTA;
    }
    async_free(done);
    return code == NO_ERROR ? NO_ERROR : fail(code);
}

NSPV2_HOST_API INT nspv2_lookup_end(HANDLE hLookup)
{
    host_init();
    todo t = {0};
    lock();
    lookup *lk = idmap_remove(&g.lookups, handle_to_id(hLookup));
    if (!lk) {
        unlock();
        return fail(WSA_INVALID_HANDLE);
    }
    lookup_end_L(lk, &t);
    unlock();
    int err = todo_run(&t);
    return err ? fail(err) : NO_ERROR;
}

NSPV2_HOST_API INT nspv2_set_service(uint64_t session_id, LPWSAQUERYSETW lpqsRegInfo,
                                     WSAESETSERVICEOP essOperation, DWORD dwControlFlags)
{
    host_init();
    int err = check_query_set(lpqsRegInfo);
    if (err)
        return fail(err);
    if ((unsigned)essOperation > (unsigned)RNRSERVICE_DELETE)
        return fail(WSAEINVAL);
    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    lock();
    err = session_route_L(session_id, lpqsRegInfo->dwNameSpace, lpqsRegInfo->lpNSProviderId,
                          &route, &nroute);
    if (!err && nroute > 1 && lpqsRegInfo->dwNameSpace != NS_ALL)
        err = WSAEINVAL; /* ambiguous: name the provider with lpNSProviderId */
    if (err) {
        unlock();
        if (route)
            route_release(route, nroute);
        return fail(err);
    }
    int first_err = 0;
    for (size_t i = 0; i < nroute; i++) {
        provider *p = route[i];
        int e = 0;
        psess *ps = NULL;
        if (!p->fn.set_service_ex)
            e = WSAEOPNOTSUPP;
        else
            e = ps_acquire_L(session_id, p, &ps, &t);
        async_call *a = NULL;
        if (!e && (!(a = async_alloc(0, 0)) || async_register_L(a) != 0)) {
            free(a);
            e = WSA_NOT_ENOUGH_MEMORY;
            ps_call_release_L(ps, &t);
        }
        if (e) {
            if (!first_err)
                first_err = e;
            continue;
        }
        to_query_set2(lpqsRegInfo, &a->qs2);
        a->provider_id = p->id;
        LPVOID arg = ps->arg;
        uint64_t deadline = deadline_after_L();
        unlock();
        p->fn.set_service_ex(id_to_handle(a->id), &a->provider_id, &a->qs2, essOperation,
                             dwControlFlags, arg);
        lock();
        ps_call_release_L(ps, &t);
        if (async_wait_L(a, deadline)) {
            e = a->code;
            async_free(a);
        } else {
            e = WSA_E_CANCELLED; /* a stays in the table (EXPIRED) */
        }
        if (e && !first_err)
            first_err = e;
    }
    unlock();
    todo_run(&t);
    route_release(route, nroute);
    return first_err ? fail(first_err) : NO_ERROR;
}

/* ------------------------------------------------------------------------ */
/* Winsock-named client calls, in the thread's current session              */

NSPV2_HOST_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                 DWORD dwControlFlags, LPHANDLE lphLookup)
{
    uint64_t s = current_session();
    if (!s)
        return fail(WSANOTINITIALISED);
    return nspv2_lookup_begin(s, lpqsRestrictions, dwControlFlags, lphLookup);
}

NSPV2_HOST_API INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags,
                                                LPDWORD lpdwBufferLength,
                                                LPWSAQUERYSETW lpqsResults)
{
    if (!current_session())
        return fail(WSANOTINITIALISED);
    return nspv2_lookup_next(hLookup, dwControlFlags, lpdwBufferLength, lpqsResults);
}

NSPV2_HOST_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup)
{
    if (!current_session())
        return fail(WSANOTINITIALISED);
    return nspv2_lookup_end(hLookup);
}

NSPV2_HOST_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                         WSAESETSERVICEOP essoperation, DWORD dwControlFlags)
{
    uint64_t s = current_session();
    if (!s)
        return fail(WSANOTINITIALISED);
    return nspv2_set_service(s, lpqsRegInfo, essoperation, dwControlFlags);
}

/* ------------------------------------------------------------------------ */
/* control and inspection                                                    */

NSPV2_HOST_API void nspv2_host_set_timeout_ms(uint32_t timeout_ms)
{
    host_init();
    lock();
    g.timeout_ms = timeout_ms;
    unlock();
}

NSPV2_HOST_API void nspv2_host_stats_get(nspv2_host_stats *out)
{
    host_init();
    if (!out)
        return;
    lock();
    out->providers = (uint32_t)g.nprov;
    out->sessions_open = (uint32_t)g.sessions.count;
    out->lookups_open = (uint32_t)g.lookups.count;
    out->async_pending = g.async_pending;
    out->startups = g.startups;
    out->cleanups = g.cleanups;
    out->rundowns = g.rundowns;
    out->late_completions = g.late_completions;
    out->provider_faults = g.provider_faults;
    unlock();
}

NSPV2_HOST_API void nspv2_host_stats_reset(void)
{
    host_init();
    lock();
    g.startups = g.cleanups = g.rundowns = 0;
    g.late_completions = g.provider_faults = 0;
    unlock();
}

NSPV2_HOST_API void nspv2_host_reset(void)
{
    host_init();
    for (;;) {
        lock();
        if (g.nprov == 0) {
            unlock();
            break;
        }
        GUID id = g.prov[0]->id;
        unlock();
        WSAUnadvertiseProvider(&id);
    }
    lock();
    size_t n = g.sessions.count, k = 0;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < g.sessions.cap; i++)
        if (g.sessions.keys[i])
            ids[k++] = g.sessions.keys[i];
    g.ninst = 0;
    unlock();
    for (size_t i = 0; i < k; i++)
        nspv2_session_abandon(ids[i]);
    free(ids);
    set_current_session(0);
}

/* ------------------------------------------------------------------------ */
/* native driver                                                             */

typedef struct driver_thread {
    const nspv2_driver_config *cfg;
    nspv2_driver_result res;
    nspv2_thread thread;
    int started;
} driver_thread;

static void count_code(nspv2_driver_result *r, int32_t code)
{
    for (uint32_t i = 0; i < r->n_codes; i++) {
        if (r->codes[i] == code) {
            r->counts[i]++;
            return;
        }
    }
    if (r->n_codes < NSPV2_DRIVER_MAX_CODES) { /* further codes are not counted */
        r->codes[r->n_codes] = code;
        r->counts[r->n_codes] = 1;
        r->n_codes++;
    }
}

static int32_t outcome(INT r) { return r == NO_ERROR ? NO_ERROR : WSAGetLastError(); }

static void driver_main(void *p)
{
    driver_thread *dt = p;
    const nspv2_driver_config *cfg = dt->cfg;
    nspv2_driver_result *res = &dt->res;
    size_t cap = cfg->buffer_size ? cfg->buffer_size : 1;
    void *buf = malloc(cap);
    WSAQUERYSETW qs;
    memset(&qs, 0, sizeof qs);
    qs.dwSize = sizeof qs;
    qs.dwNameSpace = cfg->name_space;
    qs.lpNSProviderId = (LPGUID)cfg->provider_id;
    qs.lpszServiceInstanceName = (LPWSTR)cfg->service_name;

    for (uint32_t c = 1; c <= cfg->cycles; c++) {
        uint64_t sid = 0;
        int32_t code = outcome(nspv2_session_open(&sid));
        count_code(res, code);
        res->cycles_done++;
        if (code != NO_ERROR)
            continue;
        if (cfg->session_only) {
            /* Startup now, then Cleanup or Rundown below: a session cycle */
            count_code(res, outcome(nspv2_session_start(sid, cfg->name_space, cfg->provider_id)));
        } else {
            HANDLE h = NULL;
            code = outcome(nspv2_lookup_begin(sid, &qs, cfg->control_flags, &h));
            count_code(res, code);
            if (code == NO_ERROR) {
                size_t want = cfg->buffer_size; /* every lookup starts short again */
                for (;;) {
                    DWORD len = buf ? (DWORD)want : 0;
                    code = outcome(nspv2_lookup_next(h, cfg->control_flags, &len, buf));
                    count_code(res, code);
                    if (code == WSAEFAULT && cfg->grow_on_efault && len > want) {
                        if (len > cap) {
                            void *bigger = realloc(buf, len);
                            if (!bigger)
                                break;
                            buf = bigger;
                            cap = len;
                        }
                        want = len;
                        continue; /* the same result, now that it fits */
                    }
                    if (code != NO_ERROR)
                        break;
                    res->results++;
                }
                count_code(res, outcome(nspv2_lookup_end(h)));
            }
        }
        if (cfg->abandon_every && c % cfg->abandon_every == 0)
            count_code(res, outcome(nspv2_session_abandon(sid)));
        else
            count_code(res, outcome(nspv2_session_close(sid)));
    }
    free(buf);
}

NSPV2_HOST_API INT nspv2_driver_run(const nspv2_driver_config *cfg, nspv2_driver_result *out)
{
    host_init();
    if (!cfg || !out || cfg->threads == 0 || cfg->threads > 1024)
        return fail(WSAEINVAL);
    memset(out, 0, sizeof *out);
    driver_thread *dts = calloc(cfg->threads, sizeof *dts);
    if (!dts)
        return fail(WSA_NOT_ENOUGH_MEMORY);
    uint64_t t0 = nspv2_now_ns();
    for (uint32_t i = 0; i < cfg->threads; i++) {
        dts[i].cfg = cfg;
        dts[i].started = nspv2_thread_create(&dts[i].thread, driver_main, &dts[i]) == 0;
    }
    for (uint32_t i = 0; i < cfg->threads; i++)
        if (dts[i].started)
            nspv2_thread_join(dts[i].thread);
    out->elapsed_ns = nspv2_now_ns() - t0;
    int all_started = 1;
    for (uint32_t i = 0; i < cfg->threads; i++) {
        nspv2_driver_result *r = &dts[i].res;
        all_started &= dts[i].started;
        out->cycles_done += r->cycles_done;
        out->results += r->results;
        for (uint32_t k = 0; k < r->n_codes; k++) {
            uint32_t j = 0;
            while (j < out->n_codes && out->codes[j] != r->codes[k])
                j++;
            if (j == out->n_codes) {
                if (j == NSPV2_DRIVER_MAX_CODES)
                    continue;
                out->codes[j] = r->codes[k];
                out->n_codes++;
            }
            out->counts[j] += r->counts[k];
        }
    }
    free(dts);
    if (!all_started)
        return fail(WSA_NOT_ENOUGH_MEMORY);
    return NO_ERROR;
}
