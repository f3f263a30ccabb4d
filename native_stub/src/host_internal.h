/*
 * host_internal.h - what the native host's source files share (internal to
 * native_stub: not installed, not part of the ABI; nothing here is exported,
 * the library is built with -fvisibility=hidden).
 *
 *   host.c      global state and lock, per-thread state (last error, current
 *               session), routing (catalog.h's rules among the providers
 *               advertised here), the todo list and provider sessions'
 *               reference counts, provider-facing calls, async calls,
 *               control and inspection
 *   idmap.c     the uint64 -> pointer hash map and fresh handle values
 *   queryset.c  WSAQUERYSETW -> WSAQUERYSET2W conversion, validation and
 *               relocation of a provider's result into the client's buffer
 *   session.c   client sessions, lookups, registration, and the
 *               Winsock-named client calls (WSALookupServiceBeginW, ...)
 *   driver.c    nspv2_driver_run, the native load driver
 *   pin.c       Python thread-state pinning and the gate every provider
 *               call passes (prov_enter / prov_leave below)
 *   catalog.c   the namespace catalog, the route order and the NextEx
 *               stepping (catalog.h); catalog_api.c its Winsock-named calls
 *
 * Functions named *_L expect host_g.lock held.
 *
 * Design
 * ------
 * All tables live in one structure `host_g`, guarded by one mutex `host_g.lock`, with
 * one condition variable `host_g.cv` that is broadcast whenever something a
 * waiter might care about changes (an async call completes or is cancelled,
 * a provider session finishes starting, a lookup stops being busy).
 *
 * The host NEVER calls into a provider while holding host_g.lock: providers call
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
 *             lookup handle), one per routed provider whose Begin
 *             succeeded, in route order, and a cursor
 *             (nspv2_route_cursor) saying which part Next asks.
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
 *   After the argument checks, a GUID the catalog in effect does not list
 *   -> WSAEINVALIDPROVIDER (a disabled one may advertise: it is installed);
 *   a catalog that cannot be read -> WSANO_RECOVERY; then a GUID already
 *   advertised -> WSAEALREADY.
 * WSAUnadvertiseProvider(NULL) -> WSAEINVAL. Client lookup handles that
 *   reached the provider stay valid (their other providers go on); a next
 *   waiting on it gets WSA_E_CANCELLED; later, its part counts as having
 *   reached its end (WSA_E_NO_MORE, for the stepping below).
 * The catalog (WSCInstallNameSpaceEx and the rest) is catalog_api.c's.
 *   Uninstalling or disabling an advertised provider leaves it advertised;
 *   no new call is routed to it (lookups already open keep their parts).
 * Routing (lookups, registration, nspv2_session_start): every call takes a
 *   snapshot of the catalog before host_g.lock (a file may be read), then
 *   nspv2_route_order among the providers advertised in this process:
 *   lpNSProviderId not installed or not advertised -> WSAEINVAL; disabled,
 *   or installed for another namespace than a non-NS_ALL dwNameSpace ->
 *   WSASERVICE_NOT_FOUND; otherwise NS_EMAIL by the name's domain (primary,
 *   then secondary and other namespaces, then wildcard providers and those
 *   installed without a blob; catalog order within a rank); nothing routed
 *   -> WSASERVICE_NOT_FOUND; an unreadable catalog -> WSANO_RECOVERY.
 *   nspv2_session_start routes as a query with no name would.
 * nspv2_lookup_begin: NULL query set or NULL lphLookup -> WSAEFAULT;
 *   dwSize < sizeof(WSAQUERYSETW) -> WSAEINVAL; unknown session ->
 *   WSAEINVAL. Every routed provider is begun; one whose Startup or Begin
 *   fails is left out; the lookup fails only if none began: with
 *   WSASERVICE_NOT_FOUND (as Winsock; the providers' own errors are not
 *   passed on), or WSAEINPROGRESS when every routed provider was refused
 *   because this thread runs its Startup, or WSAEINVAL when the session
 *   was closed meanwhile. The Begin's dwControlFlags are kept for the
 *   stepping (LUP_NON_AUTHORITATIVE).
 * nspv2_lookup_next: NULL lpdwBufferLength, or NULL lpqsResults with a
 *   non-zero length -> WSAEFAULT. One next at a time per handle (a second
 *   waits for the first). The part asked follows nspv2_route_step: a
 *   result, WSAEFAULT or a cancellation is returned and the lookup stays on
 *   that part; its WSA_E_NO_MORE ends the lookup when that part returned a
 *   result and Begin did not ask LUP_NON_AUTHORITATIVE, else moves on to
 *   the next part; any other error is recorded (the first one kept) and
 *   the next part asked, within the same call. Once the lookup is over,
 *   every Next returns nspv2_route_final: WSA_E_NO_MORE when some part
 *   returned a result or reached its end, else the first error recorded.
 *   A provider fault is counted and returned as WSANO_RECOVERY: after an
 *   error completion that wrote past the scratch buffer, that part is left
 *   as a failed one (its error recorded); after a result that fails
 *   validation, the lookup stays on that part.
 *   WSA_E_CANCELLED also when the lookup is ended, its session closed or
 *   its provider unadvertised while the call waits. A timeout of 0 accepts
 *   only completions made before NextEx returns.
 * nspv2_lookup_end: the handle is closed whatever happens; every part that
 *   was begun (asked by Next or left behind) gets NSPv2LookupServiceEnd
 *   exactly once, here or at its session's end; returns the first error a
 *   provider's End reported, else NO_ERROR.
 * nspv2_set_service: NULL -> WSAEFAULT; dwSize too small or essOperation
 *   above RNRSERVICE_DELETE -> WSAEINVAL. lpNSProviderId given: that
 *   provider; NS_ALL: every routed provider, the first error returned; a
 *   specific namespace: the first provider of the route only (the name's
 *   primary provider when one is advertised).
 * Sessions: close / abandon first end the session's open lookups
 *   (NSPv2LookupServiceEnd), then run Cleanup / Rundown; they return
 *   NO_ERROR whatever Cleanup returns. An end that races a call still
 *   using the session argument (another thread inside Begin, say) runs when
 *   that call returns, on that thread. A call needing a provider session
  whose Startup runs waits for it, except on the thread running that
  Startup (at any depth): WSAEINPROGRESS at once, for that provider. The
  Winsock-named calls, Next and
 *   End included, need a session entered (else WSANOTINITIALISED);
 *   nspv2_session_enter of an unknown session -> WSAEINVAL.
 * late_completions counts completions refused after a timeout or a
 *   cancellation. Such calls keep their buffers (scratch buffer, query-set
 *   copy) until that late completion, since the provider may still write
 *   them, but only within the held bound (nspv2_host_set_held_limit: the
 *   oldest go first), until WSAUnadvertiseProvider of their provider, or
 *   nspv2_host_reset; a call expiring after its provider was unadvertised
 *   is not held at all. Released calls are forgotten: their completion gets
 *   WSAEINVAL and is not counted.
 * Harness handles (nspv2_async_create) are async_call records with
 *   `harness` set and no buffer, in the same table and from the same
 *   counter as client calls; they stay (completed or not) until closed.
 * double_completions: a completion of a COMPLETED record, or of an issued
 *   id no longer in the table that is not in expired_ring (calls forgotten
 *   after expiring). missing_last_error: counted in provider_error().
 * Handles are counter values of HANDLE width: on 32-bit Windows they wrap
 *   after 2^32, skipping values still in use.
 * nspv2_driver_run: NULL cfg or out, threads 0 or above 1024 -> WSAEINVAL.
 *   Cycle c (1-based, per thread) abandons when c % abandon_every == 0.
 *   Every cycle is counted in cycles_done, a failed open included. Codes
 *   beyond NSPV2_DRIVER_MAX_CODES distinct ones are not counted.
 */
#ifndef NSPV2_HOST_INTERNAL_H
#define NSPV2_HOST_INTERNAL_H

/* clock_gettime, CLOCK_MONOTONIC, pthread_condattr_setclock (platform.h) */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_host.h"

#include "catalog.h"
#include "platform.h"

#include <limits.h>
#include <stdatomic.h>
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
#define EXPIRED_RING 4096u

/* ------------------------------------------------------------------------ */
/* a small uint64 -> pointer hash map (open addressing, linear probing)      */

typedef struct idmap {
    uint64_t *keys; /* 0 = empty */
    void **vals;
    size_t cap;     /* power of two, or 0 */
    size_t count;
} idmap;

/* ------------------------------------------------------------------------ */
/* objects                                                                   */

typedef struct provider {
    GUID id;
    routine fn;
    NSPV2_ROUTINE table; /* the table as advertised (nspv2_host_provider_table) */
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
    GUID provider_id;       /* the provider's GUID (SetServiceEx gets a copy) */
    WSAQUERYSET2W *qs;      /* SetServiceEx: the provider's copy of the query set */
    size_t qs_size;
    int harness;            /* made by nspv2_async_create: its creator waits and closes */
    int closed;             /* harness: nspv2_async_close called (then EXPIRED) */
    INT last_error;         /* WSAGetLastError() of the first completer, at completion */
    uint32_t completions;   /* WSAProviderCompleteAsyncCall calls on it, refused included */
    struct async_call *hprev, *hnext; /* the held list, while EXPIRED */
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
    size_t nparts;
    nspv2_route_cursor cursor; /* which part Next asks (catalog.h's stepping) */
    int ended;
    int busy;              /* a next is in progress */
    async_call *pending;   /* the call that next waits for */
    size_t pending_part;
    unsigned refs;         /* the table's + each next in progress */
};

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

typedef struct host_state {
    nspv2_mutex lock;
    nspv2_cond cv;
    provider **prov; /* advertise order */
    size_t nprov, capprov;
    idmap sessions, lookups, asyncs;
    uint64_t next_session, next_lookup, next_async;
    uint32_t timeout_ms;
    uint32_t async_pending;
    uint32_t retired; /* unadvertised providers whose struct is still referenced */
    uint64_t startups, cleanups, rundowns, late_completions, provider_faults;
    uint64_t double_completions, missing_last_error;
    uint64_t advertise_count; /* successful WSAAdvertiseProvider calls, never reset */
    /* The last EXPIRED_RING ids of calls that expired and were then
     * forgotten (late completion, release): a completion for an issued id
     * the host no longer tracks is a double completion unless it is one of
     * these. */
    uint64_t expired_ring[EXPIRED_RING];
    size_t expired_next, expired_count;
    /* EXPIRED calls, oldest first, and what they hold (bounded by held_max_*) */
    struct async_call *held_head, *held_tail;
    uint64_t held_calls, held_bytes, held_released;
    uint32_t held_max_calls;
    uint64_t held_max_bytes;
} host_state;

/* all the host's tables; defined in host.c */
extern host_state host_g;

/* ---- host.c ------------------------------------------------------------- */

void host_init(void);
void host_lock(void);
void host_unlock(void);
/* Sets the thread's last error to err; returns SOCKET_ERROR. */
INT host_fail(int err);
int provider_error(void);
uint64_t current_session(void);
void set_current_session(uint64_t id);

/* One NSPv2Startup in progress on this thread, for the psess it starts: a
 * record on the stack of the call running it, linked into a per-thread chain
 * (Startups nest when a Startup calls the host for another session or
 * provider). The psess is held (ps_call_hold_L) for as long as the record
 * is linked, so the pointer stays that psess's. */
typedef struct startup_frame {
    const psess *ps;
    struct startup_frame *outer;
} startup_frame;
void startup_enter(startup_frame *f, const psess *ps);
void startup_leave(startup_frame *f);
/* 1 if this thread is inside the Startup of ps (at any depth). */
int startup_running_here(const psess *ps);

size_t provider_index_L(const GUID *id);
void provider_unref_L(provider *p);
/* cat: a snapshot taken before host_g.lock (nspv2_catalog_snapshot). */
int route_L(const nspv2_catalog *cat, DWORD name_space, const GUID *provider_id,
            const WCHAR *name, provider ***out, size_t *n);
void route_release(provider **list, size_t n);
int session_route_L(uint64_t session_id, const nspv2_catalog *cat, DWORD name_space,
                    const GUID *provider_id, const WCHAR *name, provider ***out, size_t *n);

void ps_unref_L(psess *ps);
void ps_request_end_L(psess *ps, int kind, todo *t);
void ps_call_hold_L(psess *ps);
void ps_call_release_L(psess *ps, todo *t);
void part_end_L(lookup_part *part, todo *t);
int todo_run(todo *t);

async_call *async_alloc(size_t scratch_size, int with_scratch);
void async_free(async_call *a);
int async_register_L(async_call *a);
int async_wait_L(async_call *a, uint64_t deadline_ns, const provider *p);
/* Completes a PENDING call with code as the host itself (a refused call). */
void async_complete_L(async_call *a, INT code);
/* Releases held (EXPIRED) calls: of provider id (NULL: all). */
void held_release_L(const GUID *id);
uint64_t deadline_after_L(void);

/* ---- idmap.c ------------------------------------------------------------ */

void *idmap_get(const idmap *m, uint64_t k);
/* k must be non-zero and absent. Returns 0, or -1 when out of memory. */
int idmap_put(idmap *m, uint64_t k, void *v);
void *idmap_remove(idmap *m, uint64_t k);
/* Snapshot of the values (iteration while the map may change); free it. */
void **idmap_values(const idmap *m, size_t *n);
/* A fresh id from *counter that fits a HANDLE (as_handle), is non-zero and
 * not in m. */
uint64_t fresh_id(uint64_t *counter, const idmap *m, int as_handle);

static inline HANDLE id_to_handle(uint64_t id) { return (HANDLE)(uintptr_t)id; }
static inline uint64_t handle_to_id(HANDLE h) { return (uint64_t)(uintptr_t)h; }

static inline int guid_eq(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

/* ---- queryset.c --------------------------------------------------------- */

/* 0, WSAEFAULT (NULL) or WSAEINVAL (dwSize too small). */
int check_query_set(const WSAQUERYSETW *qs);
/* The provider's deep copy of a client query set, in one allocation: *out
 * (free() it) of *size bytes. 0, WSAEFAULT (counts no memory can hold) or
 * WSA_NOT_ENOUGH_MEMORY. */
int copy_query_set2(const WSAQUERYSETW *in, WSAQUERYSET2W **out, size_t *size);
/* 1 if nothing was written past the provider's buffer. */
int guard_intact(const unsigned char *scratch, size_t scratch_size);
/* Returns 0 on success, -1 on a provider fault. The client buffer holds at
 * least scratch_size + NSPV2_QS_DELTA bytes. */
int relocate_result(const unsigned char *scratch, size_t scratch_size, unsigned char *client);

/* ---- pin.c: the gate around every provider call ------------------------- */

/* 1 once nspv2_pin_install or nspv2_pin_shutdown ran (then every provider
 * call goes through pin_enter); 0 in a program that never installs. */
extern atomic_int pin_active;
#define PIN_REFUSED (-1)
int pin_enter(void);
void pin_leave(void);
/* Tests only: back to never installed (no thread may hold a pinned state). */
void pin_test_reset(void);

/* Around EVERY call into a provider, outside host_g.lock:
 *     int pin = prov_enter();
 *     if (pin != PIN_REFUSED) { call the provider; }  else { refused: see below }
 *     prov_leave(pin);
 * 0 when pinning was never installed (nothing counted), 1 when the call
 * passed the gate (counted in flight; the thread's Python state pinned on
 * its first call), PIN_REFUSED after nspv2_pin_shutdown: the provider must
 * not be called. A refused INT slot fails with WSASYSNOTREADY as the
 * provider's error; a refused NextEx / SetServiceEx is completed by the
 * host with WSASYSNOTREADY (async_complete_L); a refused Cleanup / Rundown
 * is skipped (not counted) while the session still ends host-side.
 * prov_leave changes no last error (the provider's error is read after it). */
static inline int prov_enter(void)
{
    if (!atomic_load_explicit(&pin_active, memory_order_relaxed))
        return 0;
    return pin_enter();
}
static inline void prov_leave(int pin)
{
    if (pin > 0)
        pin_leave();
}

/* ---- session.c ---------------------------------------------------------- */

psess *session_find_ps_L(session *s, const provider *p);
void session_detach_ps_L(session *s, psess *ps);
/* For the server's status (src/server.c): how many providers the session
 * has started (and not ended) and how many lookups it has open. 0, or
 * WSAEINVAL for an unknown session (outs then 0). Takes host_g.lock. */
int session_info(uint64_t session_id, uint32_t *providers_started, uint32_t *lookups_open);

#endif /* NSPV2_HOST_INTERNAL_H */
