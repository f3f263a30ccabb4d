/*
 * nspv2_host.h - the native NSPv2 host: what Winsock's ws2_32.dll does for
 * NSPv2 providers, as a small C11 library for any platform.
 *
 * Provider-facing functions carry Winsock's names and signatures
 * (WSAAdvertiseProvider, WSAUnadvertiseProvider, WSAProviderCompleteAsyncCall,
 * WSASetLastError, WSAGetLastError, WSCInstallNameSpaceEx,
 * WSCUnInstallNameSpace), so the same binding code serves ws2_32.dll and
 * this host. Client-facing functions stand in for client processes:
 * explicit client sessions, and Winsock's lookup / registration calls on
 * WSAQUERYSETW.
 *
 * Identifiers handed out by the host (session ids, lookup handles, async
 * call handles) are opaque non-zero numbers from per-process counters,
 * never addresses, and never reused; every one received is looked up in a
 * table before use.
 */
#ifndef NSPV2_HOST_H
#define NSPV2_HOST_H

#if defined(_WIN32)
/* Under the real Windows headers two declarations clash with the host's
 * definitions: winsock2.h declares the Winsock client calls and the last
 * error functions dllimport (WINSOCK_API_LINKAGE), and mingw-w64's ws2spi.h
 * declares WSAAdvertiseProvider with a pointer to a pointer (docs/abi.md).
 * Include this header before <winsock2.h> / nspv2_abi.h so that they are
 * declared as this library defines them. */
#ifndef WINSOCK_API_LINKAGE
#define WINSOCK_API_LINKAGE
#endif
#define WSAAdvertiseProvider nspv2_sdk_header_WSAAdvertiseProvider
#include "nspv2_abi.h"
#undef WSAAdvertiseProvider
#else
#include "nspv2_abi.h"
#endif

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define NSPV2_HOST_API __declspec(dllexport)
#else
#define NSPV2_HOST_API __attribute__((visibility("default")))
#endif

/* ---- provider-facing (Winsock names, SDK signatures) -------------------- */

/* Validates like Winsock: NULL GUID -> WSAEFAULT, NULL table -> WSAEINVAL,
 * cbSize < sizeof(NSPV2_ROUTINE) or a NULL Begin/NextEx/End -> WSAEINVAL;
 * then a GUID the catalog in effect does not list (WSCInstallNameSpaceEx
 * first) -> WSAEINVALIDPROVIDER, a catalog that cannot be read ->
 * WSANO_RECOVERY; a GUID already advertised -> WSAEALREADY. Copies the
 * table. Returns NO_ERROR or SOCKET_ERROR with the last error set. */
NSPV2_HOST_API INT WSAAPI WSAAdvertiseProvider(const GUID *puuidProviderId,
                                               const NSPV2_ROUTINE *pNSPv2Routine);
/* Unknown GUID -> WSAEINVAL. Client sessions still open on the provider are
 * run down first (NSPv2ClientSessionRundown, once each); lookups still open
 * on it are ended (NSPv2LookupServiceEnd). */
NSPV2_HOST_API INT WSAAPI WSAUnadvertiseProvider(const GUID *puuidProviderId);
/* NULL, unknown, already completed or timed-out handle -> WSAEINVAL.
 * May be called from any thread, before or after the entry point returns.
 * The first completion wins; a second one is refused and counted
 * (nspv2_host_stats.double_completions), also once the host has forgotten
 * the call, unless the call timed out first (late_completions). */
NSPV2_HOST_API INT WSAAPI WSAProviderCompleteAsyncCall(HANDLE hAsyncCall, INT iRetCode);
NSPV2_HOST_API void WSAAPI WSASetLastError(int iError); /* per thread */
NSPV2_HOST_API int WSAAPI WSAGetLastError(void);        /* per thread */
/* ---- the namespace catalog (src/catalog_api.c; rules in src/catalog.h) ----
 * A per-user catalog persisted in a file (NSPV2_CATALOG, else
 * $XDG_CONFIG_HOME/nspv2/catalog, else $HOME/.config/nspv2/catalog), or
 * private to the process (":memory:"; always so on Windows builds). Each
 * call returns NO_ERROR, or SOCKET_ERROR with WSAGetLastError() set and
 * nspv2_catalog_error_text() saying why.
 * WSCInstallNameSpaceEx: appends the provider, enabled, keeping a copy of
 * lpszIdentifier and of lpProviderInfo's blob; lpszPathName is not used
 * (empty for NSPv2). NULL GUID -> WSAEFAULT; already installed ->
 * WSANO_RECOVERY (as Windows documents); an identifier above
 * NSPV2_CATALOG_MAX_IDENTIFIER_CHARS, a blob above
 * NSPV2_CATALOG_MAX_BLOB_BYTES, cbSize > 0 with NULL pBlobData, or an
 * NS_EMAIL blob that breaks nsemail.h's rules -> WSAEINVAL. */
NSPV2_HOST_API INT WSAAPI WSCInstallNameSpaceEx(LPWSTR lpszIdentifier, LPWSTR lpszPathName,
                                                DWORD dwNameSpace, DWORD dwVersion,
                                                LPGUID lpProviderId, LPBLOB lpProviderInfo);
/* NULL -> WSAEFAULT; not installed -> WSAEINVAL. An advertised provider
 * stays advertised, but no query is routed to it. */
NSPV2_HOST_API INT WSAAPI WSCUnInstallNameSpace(LPGUID lpProviderId);
/* Enable (fEnable TRUE) or disable a provider; a disabled provider is never
 * routed to. NULL -> WSAEFAULT; not installed -> WSAEINVAL. */
NSPV2_HOST_API INT WSAAPI WSCEnableNSProvider(LPGUID lpProviderId, BOOL fEnable);
/* Every installed provider, in catalog order, as WSANAMESPACE_INFOEXW
 * entries (fActive = enabled) followed by their identifiers and blobs,
 * which the entries point to. Returns the number of entries, or
 * SOCKET_ERROR: NULL lpdwBufferLength -> WSAEFAULT; a buffer shorter than
 * needed (or NULL) -> WSAEFAULT with *lpdwBufferLength = the size needed. */
NSPV2_HOST_API INT WSAAPI WSAEnumNameSpaceProvidersExW(LPDWORD lpdwBufferLength,
                                                       LPWSANAMESPACE_INFOEXW lpnspBuffer);
#define NSPV2_CATALOG_MAX_IDENTIFIER_CHARS 1024u
#define NSPV2_CATALOG_MAX_BLOB_BYTES 65536u
/* Where this process's catalog is: a file path, ":memory:", or NULL for the
 * default resolution above (made again at every operation). NO_ERROR, or
 * WSAEINVAL for a path longer than the system's limit. */
NSPV2_HOST_API INT nspv2_catalog_set_path(const char *path);
/* The location in effect (a path, or ":memory:"), NUL-terminated, in
 * buf; *size in: room, out: the length with the terminator; WSAEFAULT when
 * short (buf NULL asks the size). NULL size -> WSAEFAULT. */
NSPV2_HOST_API INT nspv2_catalog_location(char *buf, uint32_t *size);
/* Why this thread's last catalog call failed, in English ("" if it did not). */
NSPV2_HOST_API const char *nspv2_catalog_error_text(void);
/* nsemail.h's rules for an NS_EMAIL installation blob: NO_ERROR when
 * size bytes at blob are a valid NAPI_PROVIDER_INSTALLATION_BLOB, else
 * WSAEINVAL with the first violated rule in why (NUL-terminated, truncated
 * to why_size; why may be NULL). Never reads outside the size bytes. */
NSPV2_HOST_API INT nspv2_email_blob_check(const void *blob, uint32_t size, char *why,
                                          uint32_t why_size);

#if !defined(_WIN32)
/* ---- process start-up and console control (src/compat.c) ---------------
 * What a provider process calls besides the provider-facing functions; on
 * Windows they come from ws2_32 and kernel32 instead.
 * WSAStartup: NULL lpWSAData -> WSAEFAULT; major version 0 ->
 * WSAVERNOTSUPPORTED; above 2.2 -> wVersion 2.2; else wVersion as asked,
 * wHighVersion 2.2. Returns the code (not SOCKET_ERROR); each success must
 * be matched by a WSACleanup; one too many -> SOCKET_ERROR, WSANOTINITIALISED.
 * SetConsoleCtrlHandler(fn, TRUE) adds fn, (fn, FALSE) removes its latest
 * registration (not registered -> FALSE, last error ERROR_INVALID_PARAMETER);
 * a NULL fn is accepted and ignored. nspv2_host_console_event delivers
 * CTRL_C_EVENT 0, CTRL_BREAK_EVENT 1, CTRL_CLOSE_EVENT 2 (also 5, 6) to the
 * handlers, last registered first, until one returns TRUE, on a new thread as
 * Windows does, and waits for it: TRUE if a handler took it. */
#define CTRL_C_EVENT 0
#define CTRL_BREAK_EVENT 1
#define CTRL_CLOSE_EVENT 2
#define CTRL_LOGOFF_EVENT 5
#define CTRL_SHUTDOWN_EVENT 6
NSPV2_HOST_API int WSAAPI WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);
NSPV2_HOST_API int WSAAPI WSACleanup(void);
typedef BOOL (WINAPI *PHANDLER_ROUTINE)(DWORD dwCtrlType);
NSPV2_HOST_API BOOL WINAPI SetConsoleCtrlHandler(PHANDLER_ROUTINE HandlerRoutine, BOOL Add);
NSPV2_HOST_API BOOL nspv2_host_console_event(DWORD ctrl_type);
#endif

/* ---- client-facing ------------------------------------------------------ */

/* A client session stands in for one client process. The first call of a
 * session into a provider runs that provider's NSPv2Startup and keeps the
 * session argument it writes; close runs NSPv2Cleanup, abandon runs
 * NSPv2ClientSessionRundown, for every provider the session started.
 * All return NO_ERROR or SOCKET_ERROR with WSAGetLastError() set. */
NSPV2_HOST_API INT nspv2_session_open(uint64_t *session_id);
NSPV2_HOST_API INT nspv2_session_close(uint64_t session_id);
NSPV2_HOST_API INT nspv2_session_abandon(uint64_t session_id);
/* Run NSPv2Startup now for the providers dwNameSpace / lpNSProviderId route
 * to (as a session's first call into them would), without any other call. */
NSPV2_HOST_API INT nspv2_session_start(uint64_t session_id, DWORD name_space,
                                       const GUID *provider_id);

/* Winsock's client lookup and registration, in an explicit session.
 * The query set is converted to WSAQUERYSET2W for the provider and routed
 * through the catalog among the providers advertised here (src/catalog.h,
 * docs/host.md "Routing"): lpNSProviderId (when not NULL, only that
 * provider), else dwNameSpace and, for NS_EMAIL, the name's domain
 * (primary, secondary, then wildcard providers; disabled ones never). A
 * lookup begins every routed provider (those whose Begin fails are dropped;
 * none left: WSASERVICE_NOT_FOUND) and steps through them in that order
 * (without LUP_NON_AUTHORITATIVE it ends with the first that answered); a
 * registration goes to the first routed provider (NS_ALL: to every one).
 *
 * next: the provider's NSPv2LookupServiceNextEx is called with a fresh async
 * handle and a scratch buffer of *lpdwBufferLength - NSPV2_QS_DELTA bytes
 * followed by guard bytes; the host waits for WSAProviderCompleteAsyncCall
 * (from any thread) up to the timeout, then fails with WSA_E_CANCELLED and
 * refuses the late completion. On WSAEFAULT the provider's required size
 * plus NSPV2_QS_DELTA is written to *lpdwBufferLength. On success the
 * WSAQUERYSET2W result is relocated into the caller's buffer as a
 * WSAQUERYSETW (lpServiceClassId NULL). A write past the provider's buffer
 * is a provider fault: the call fails with WSANO_RECOVERY and the fault is
 * counted (nspv2_host_stats). */
NSPV2_HOST_API INT nspv2_lookup_begin(uint64_t session_id, LPWSAQUERYSETW lpqsRestrictions,
                                      DWORD dwControlFlags, LPHANDLE lphLookup);
NSPV2_HOST_API INT nspv2_lookup_next(HANDLE hLookup, DWORD dwControlFlags,
                                     LPDWORD lpdwBufferLength, LPWSAQUERYSETW lpqsResults);
NSPV2_HOST_API INT nspv2_lookup_end(HANDLE hLookup);
NSPV2_HOST_API INT nspv2_set_service(uint64_t session_id, LPWSAQUERYSETW lpqsRegInfo,
                                     WSAESETSERVICEOP essOperation, DWORD dwControlFlags);

/* The Winsock-named client calls use the calling thread's current session
 * (nspv2_session_enter); with none entered they fail with WSANOTINITIALISED. */
NSPV2_HOST_API INT nspv2_session_enter(uint64_t session_id); /* 0 leaves */
NSPV2_HOST_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                 DWORD dwControlFlags, LPHANDLE lphLookup);
NSPV2_HOST_API INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags,
                                                LPDWORD lpdwBufferLength,
                                                LPWSAQUERYSETW lpqsResults);
NSPV2_HOST_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup);
NSPV2_HOST_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                         WSAESETSERVICEOP essoperation, DWORD dwControlFlags);

/* sizeof(WSAQUERYSETW) - sizeof(WSAQUERYSET2W): 8 on 64-bit, 4 on 32-bit. */
#define NSPV2_QS_DELTA ((DWORD)(sizeof(WSAQUERYSETW) - sizeof(WSAQUERYSET2W)))

/* ---- host control and inspection ---------------------------------------- */

/* ---- what is advertised and installed (loaders, checkers) ---- */
/* Successful WSAAdvertiseProvider calls since the library was loaded (never
 * reset, nspv2_host_reset included). */
NSPV2_HOST_API uint64_t nspv2_host_advertise_count(void);
/* The provider ids advertised now, in advertise order: up to max into ids;
 * *count = how many are advertised (may be > max). NULL ids with max 0 asks
 * the count; NULL ids with max > 0 -> WSAEFAULT; count may be NULL. */
NSPV2_HOST_API INT nspv2_host_providers(GUID *ids, uint32_t max, uint32_t *count);
/* A copy of the routine table the host holds for id: the first
 * sizeof(NSPV2_ROUTINE) bytes of what was advertised, cbSize as the provider
 * gave it, NULL optional slots still NULL. NULL id or out -> WSAEFAULT;
 * unknown id -> SOCKET_ERROR, WSAEINVAL. */
NSPV2_HOST_API INT nspv2_host_provider_table(const GUID *id, NSPV2_ROUTINE *out);
/* What WSCInstallNameSpaceEx recorded for id: *name_space, and its
 * lpProviderInfo blob copied into blob (*blob_size in: room, out: the
 * blob's size; WSAEFAULT when short, *blob_size then the size needed; blob
 * NULL only asks the size; blob is written only when blob_size is given).
 * *has_blob = 0 when installed without one (lpProviderInfo NULL), else 1.
 * NULL id -> WSAEFAULT; unknown id -> WSAEINVAL. Any out pointer may be
 * NULL. */
NSPV2_HOST_API INT nspv2_host_installed(const GUID *id, DWORD *name_space, uint32_t *has_blob,
                                        void *blob, uint32_t *blob_size);
/* The lpszIdentifier WSCInstallNameSpaceEx recorded for id, NUL-terminated
 * (empty when it was NULL), in the same way: *chars in: room in WCHARs,
 * out: the length with the terminator; WSAEFAULT when short (identifier NULL
 * only asks the length). NULL id or chars -> WSAEFAULT; unknown -> WSAEINVAL. */
NSPV2_HOST_API INT nspv2_host_installed_identifier(const GUID *id, WCHAR *identifier,
                                                   uint32_t *chars);

/* ---- async handles for calling NextEx / SetServiceEx directly (harnesses) ---- */
#ifndef WSAETIMEDOUT
#define WSAETIMEDOUT (WSABASEERR + 60) /* winsock2.h's value */
#endif
/* A fresh async call handle, pending, not tied to any client call (counted
 * in async_pending while pending). Completed by WSAProviderCompleteAsyncCall
 * like any other (first completion wins). NULL out -> WSAEFAULT. */
NSPV2_HOST_API INT nspv2_async_create(HANDLE *out);
/* Wait up to timeout_ms for it to be completed. NO_ERROR: *code = the
 * iRetCode of the first completion, *last_error = WSAGetLastError() of the
 * completing thread at that moment (may be asked again, until closed).
 * SOCKET_ERROR + WSAETIMEDOUT: not completed yet (still pending).
 * SOCKET_ERROR + WSAEINVAL: not a handle from nspv2_async_create (or
 * closed, also while waiting). *completions = how many times
 * WSAProviderCompleteAsyncCall was called on it so far (a second one is
 * refused with WSAEINVAL but counted here, and in double_completions).
 * Out pointers may be NULL. */
NSPV2_HOST_API INT nspv2_async_wait(HANDLE h, uint32_t timeout_ms, INT *code, INT *last_error,
                                    uint32_t *completions);
/* Forget the handle: a completion after this gets WSAEINVAL (counted in
 * late_completions if it was never completed, else in double_completions).
 * A handle closed before its completion is held like a timed-out call
 * (timed_out_held, with no bytes: its buffer is the caller's) until that
 * completion, or until released by the held bound or nspv2_host_reset.
 * Unknown or closed -> WSAEINVAL.
 *
 * Ownership: whoever created a harness handle closes it (nspv2_host_reset
 * does not). The buffer passed to NextEx (or the query set passed to
 * SetServiceEx) with it belongs to the caller, who must keep it until the
 * call is completed, or, if it never is, for as long as the provider might
 * still write it (nspv2's Python harness keeps such buffers until the
 * harness is closed). The host never reads or frees that memory. */
NSPV2_HOST_API INT nspv2_async_close(HANDLE h);

/* How long the host waits for WSAProviderCompleteAsyncCall (default 5000). */
NSPV2_HOST_API void nspv2_host_set_timeout_ms(uint32_t timeout_ms);

/* The bound on buffers held for calls that timed out without completing
 * (defaults below). When one more would exceed either limit, the oldest
 * held calls are released: their buffers freed, their handles forgotten (a
 * completion then gets WSAEINVAL). WSAUnadvertiseProvider releases the
 * provider's held calls, nspv2_host_reset all of them. Ownership rule: once
 * the provider has not completed a call by then, it must not write the
 * call's buffer after the host released it (the same rule as after
 * completing it). */
/* The bounds of a client's query set that the host copies for a provider
 * (the same bounds as nspv2's readers: a provider could accept nothing
 * larger). A query set beyond them fails with WSAEINVAL before the host
 * reads the memory they describe, so a client's count or length that lies
 * cannot make the host read past what the client owns. */
#define NSPV2_QS_MAX_STRING_CHARS 32767u /* UTF-16 units, terminator excluded */
#define NSPV2_QS_MAX_COUNT 65536u        /* dwNumberOfProtocols, dwNumberOfCsAddrs */
#define NSPV2_QS_MAX_BLOB_BYTES (16u * 1024u * 1024u)
#define NSPV2_QS_MAX_SOCKADDR_LEN 128    /* SOCKADDR_STORAGE */

#define NSPV2_HELD_MAX_CALLS 1024u
#define NSPV2_HELD_MAX_BYTES (16u * 1024u * 1024u)
NSPV2_HOST_API void nspv2_host_set_held_limit(uint32_t max_calls, uint64_t max_bytes);

typedef struct nspv2_host_stats {
    uint32_t providers;        /* advertised now */
    uint32_t sessions_open;    /* client sessions open now */
    uint32_t lookups_open;     /* client lookup handles open now */
    uint32_t async_pending;    /* async calls awaiting completion now */
    uint64_t startups;         /* NSPv2Startup calls made, since reset */
    uint64_t cleanups;         /* NSPv2Cleanup calls made */
    uint64_t rundowns;         /* NSPv2ClientSessionRundown calls made */
    uint64_t late_completions; /* completions refused after a timeout */
    uint64_t provider_faults;  /* buffer overruns and other provider faults */
    /* Calls that timed out (or were cancelled) and were never completed:
     * their buffers (NextEx scratch buffer, SetServiceEx query-set copy) are
     * held for a late completion, within the bound set by
     * nspv2_host_set_held_limit. */
    uint64_t timed_out_held;       /* such calls held now */
    uint64_t timed_out_held_bytes; /* bytes of their buffers, now */
    uint64_t timed_out_released;   /* released before any completion (bound
                                    * exceeded, unadvertise, reset), since reset */
    uint64_t double_completions;  /* WSAProviderCompleteAsyncCall on a call already
                                   * completed (refused, WSAEINVAL), since reset */
    uint64_t missing_last_error;  /* an INT entry point (Startup, Begin, End)
                                   * returned SOCKET_ERROR with the last error
                                   * left 0 (the host reports WSAEINVAL), since reset */
} nspv2_host_stats;

NSPV2_HOST_API void nspv2_host_stats_get(nspv2_host_stats *out);
/* Zero the counters (not the "now" figures). */
NSPV2_HOST_API void nspv2_host_stats_reset(void);
/* How many unadvertised providers the host still holds (a call in flight, a
 * Rundown or End deferred past WSAUnadvertiseProvider). When it reads 0 the
 * host has returned from the last call into every unadvertised table and
 * never calls one again; bindings free such tables' entry points then. */
NSPV2_HOST_API uint32_t nspv2_host_retired_tables(void);
/* Unadvertise everything, run down every open session: back to empty. */
NSPV2_HOST_API void nspv2_host_reset(void);

/* ---- native driver (stress and benchmarks) ------------------------------ */

typedef struct nspv2_driver_config {
    uint32_t threads;          /* native threads to run (>= 1) */
    uint32_t cycles;           /* cycles per thread */
    uint32_t abandon_every;    /* every Nth cycle abandons instead of closing; 0 never */
    uint32_t buffer_size;      /* client buffer for lookup_next (bytes) */
    DWORD name_space;          /* dwNameSpace of the lookup (e.g. NS_EMAIL) */
    const GUID *provider_id;   /* NULL: route by namespace only */
    const WCHAR *service_name; /* lpszServiceInstanceName of the lookup */
    DWORD control_flags;       /* flags for begin and next (e.g. LUP_RETURN_ALL) */
    uint32_t session_only;     /* 1: open, nspv2_session_start, close/abandon; no lookup */
    uint32_t grow_on_efault;   /* 1: on WSAEFAULT, grow the buffer to the size asked, retry */
} nspv2_driver_config;

#define NSPV2_DRIVER_MAX_CODES 16

typedef struct nspv2_driver_result {
    uint64_t cycles_done;
    uint64_t elapsed_ns;     /* wall time of the whole run */
    uint64_t results;        /* NextEx results received (NO_ERROR) */
    uint32_t n_codes;        /* distinct outcome codes seen */
    int32_t codes[NSPV2_DRIVER_MAX_CODES];
    uint64_t counts[NSPV2_DRIVER_MAX_CODES];
} nspv2_driver_result;

/* Runs cfg->threads threads x cfg->cycles cycles of: open session ->
 * [begin -> next until WSA_E_NO_MORE or an error -> end] -> close or abandon.
 * Counts every call's outcome code (NO_ERROR included) in out. */
NSPV2_HOST_API INT nspv2_driver_run(const nspv2_driver_config *cfg, nspv2_driver_result *out);
/* Thread exits: total_threads native threads, started in waves of at most
 * cfg->threads, each running cfg->cycles cycles as nspv2_driver_run's do and
 * then ending as a program's own thread would (without
 * nspv2_pin_thread_detach, so a pinned Python thread state is released by
 * the thread-exit hook). out adds up every thread's counts; elapsed_ns is
 * the whole run, thread creation and joins included. WSAEINVAL for NULLs,
 * cfg->threads 0 or above 1024, or total_threads 0; WSA_NOT_ENOUGH_MEMORY
 * if a thread could not start (the others ran and are counted). */
NSPV2_HOST_API INT nspv2_driver_thread_exits(const nspv2_driver_config *cfg, uint32_t total_threads,
                                             nspv2_driver_result *out);

/* ---- Python thread-state pinning (src/pin.c) -----------------------------
 * For providers written in Python (ctypes callbacks). A native thread with
 * no Python thread state makes ctypes create one and destroy it again
 * around every callback (PyGILState_Ensure/Release). Once nspv2's Python
 * package installs these hooks (nspv2_pin_install, at load, GIL held), the
 * host pins a thread state on every thread that calls a provider entry
 * point: before its first provider call on a thread that has no thread
 * state, the host calls gil_ensure() then save_thread() and keeps the
 * state, so each later callback only takes and releases the GIL. Threads
 * that already have a thread state (Python's own threads) are never
 * pinned. The library never links to Python: it only calls these pointers.
 *
 * Ownership: a pinned state belongs to its thread and is released on that
 * thread, exactly once: by nspv2_pin_thread_detach (the host's own threads
 * call it before they end): restore_thread(state) then
 * gil_release(PyGILState_UNLOCKED), CPython's own end of an Ensure/Release
 * pair; or else by the thread-exit hook (a pthread key destructor; an FLS
 * callback on Windows): restore_thread(state), clear_state(state) then
 * delete_current(), as CPython ends its own threads. (The exit hook cannot
 * use gil_release: the C library clears every thread-specific value, CPython's
 * PyGILState key included, before it calls a key's destructor, and
 * PyGILState_Release aborts on a thread whose key is empty.) Nothing else
 * ever frees one.
 *
 * Shutdown: nspv2_pin_shutdown (Python's atexit, before finalization)
 * stops pinning and closes the gate: every provider call from then on is
 * refused by the host without calling the provider (INT slots fail with
 * WSASYSNOTREADY; NextEx / SetServiceEx complete with WSASYSNOTREADY;
 * Cleanup / Rundown are skipped); it waits up to timeout_ms for the calls
 * already inside a provider to return. Pinned states of threads still
 * alive are left to the interpreter's finalization (which frees every
 * thread state); their thread-exit hooks then do nothing. Before install
 * and when never installed (C programs), the gate is open and nothing is
 * pinned: the host behaves as it always did. */
typedef struct nspv2_python_api {
    uint32_t size;                    /* sizeof(nspv2_python_api) */
    int (*gil_ensure)(void);          /* PyGILState_Ensure */
    void (*gil_release)(int);         /* PyGILState_Release */
    void *(*save_thread)(void);       /* PyEval_SaveThread */
    void (*restore_thread)(void *);   /* PyEval_RestoreThread */
    void *(*this_thread_state)(void); /* PyGILState_GetThisThreadState */
    void (*clear_state)(void *);      /* PyThreadState_Clear */
    void (*delete_current)(void);     /* PyThreadState_DeleteCurrent */
} nspv2_python_api;

typedef struct nspv2_pin_stats {
    uint32_t installed;        /* 1 once nspv2_pin_install succeeded */
    uint32_t stopped;          /* 1 once nspv2_pin_shutdown ran */
    uint64_t pinned_now;       /* threads holding a pinned state */
    uint64_t pinned_total;     /* states ever pinned */
    uint64_t released_detach;  /* released by nspv2_pin_thread_detach */
    uint64_t released_exit;    /* released by the thread-exit hook */
    uint64_t left_at_shutdown; /* still pinned when shutdown ran */
    uint64_t refused_calls;    /* provider calls refused after shutdown */
    uint64_t in_flight;        /* provider calls inside a provider now */
} nspv2_pin_stats;

/* Hand over CPython's functions (GIL held). WSAEINVAL for a NULL or short
 * api or a NULL pointer in it; WSAEALREADY if installed before (the first
 * stays); WSASYSNOTREADY after shutdown. */
NSPV2_HOST_API INT nspv2_pin_install(const nspv2_python_api *api);
/* Stop pinning and refuse provider calls (see above); returns how many
 * calls were still inside a provider when timeout_ms ran out (0: none).
 * Call it without the GIL (ctypes.CDLL releases it). Idempotent. */
NSPV2_HOST_API INT nspv2_pin_shutdown(DWORD timeout_ms);
/* The calling thread's exit hook, run early: releases its pinned state now
 * (nothing if it has none or shutdown ran). The host's own threads call it
 * before they end; a program that owns threads calling providers may too. */
NSPV2_HOST_API void nspv2_pin_thread_detach(void);
NSPV2_HOST_API void nspv2_pin_stats_get(nspv2_pin_stats *out);

#if !defined(_WIN32)
/* ---- provider process: serving client processes (src/server.c) ----------
 * What ws2_32's RPC hop does on Windows: client processes connect to a
 * provider process over a Unix domain socket and their calls reach the
 * providers advertised here, each connection one client session (see
 * src/wire.h for the protocol and docs/serve.md for the whole picture).
 *
 * A connection's HELLO opens a client session (nspv2_session_open); its
 * first call into a provider runs that provider's NSPv2Startup (the host's
 * usual lazy start); GOODBYE closes it (NSPv2Cleanup, reason "cleanup");
 * a connection that ends without GOODBYE (closed, the process killed), that
 * sends nothing for 3 x keepalive_ms, or that breaks the protocol, is run
 * down (nspv2_session_abandon: NSPv2ClientSessionRundown; reason
 * OTHER_COMMUNICATION_ERROR). nspv2_server_stop runs every open session
 * down with reason PLATFORM_SHUTDOWN. Each ends exactly once.
 *
 * Peers are checked with the kernel's credentials (SO_PEERCRED), not file
 * permissions: only the server's effective uid and allow_uids may connect
 * (root is not special); anyone else gets an ERROR frame (WSAEACCES) and is
 * logged and closed.
 *
 * Calls run on a pool of `threads` native threads; a connection may have
 * max_in_flight requests unanswered (more is a protocol error); requests
 * wait in one FIFO, bounded by max_clients x max_in_flight, for a free
 * thread. STATUS is answered by the I/O thread, not the pool. A lookup
 * handle or call belongs to the connection that made it: another
 * connection's handle is WSA_INVALID_HANDLE.
 *
 * No thread waits on a client's socket: replies wait in their connection's
 * output queue and the I/O thread writes them without blocking as the
 * socket takes them. A request is unanswered (counts in max_in_flight)
 * until its reply is entirely written, so a connection holds at most
 * max_in_flight replies (plus HELLO_REPLY / GOODBYE_REPLY); one whose unsent
 * bytes pass 32 MiB (8 x the largest frame; (max_in_flight + 2) x the
 * largest frame when that is more), or that takes none of them for
 * 3 x keepalive_ms, is ended and run down ("stopped reading its replies").
 *
 * GOODBYE runs once the connection's earlier requests are answered; its
 * reply is sent after NSPv2Cleanup returned, then the connection is closed.
 * Until then only KEEPALIVE may follow GOODBYE, and the connection is still
 * watched: a hang-up, 3 x keepalive_ms of silence or a stop runs the session
 * down instead (cancelling the calls still running). A connection that ends
 * otherwise gets an
 * ERROR frame first when the server ends it: WSAETIMEDOUT (keepalive),
 * WSANO_RECOVERY (protocol error), and for a refusal WSAEACCES (uid),
 * WSAEPROCLIM (too many clients), WSAVERNOTSUPPORTED (version or pointer
 * size) or WSANO_RECOVERY (bad HELLO); a refused peer gets it after its
 * first bytes arrive (or after a second), so it reads the ERROR rather than
 * a reset. At stop, connections are closed without an ERROR. Requests still
 * queued for a connection that ended are dropped; calls already running
 * are cancelled by the host's rundown (a waiting NextEx: WSA_E_CANCELLED).
 *
 * Log lines (log_fd >= 0): one per client connected, refused, disconnected
 * and per session ended (with its reason), each a single write(2) ending in
 * a newline; monitors (role 1) are not logged. */
#ifndef WSAEADDRINUSE
#define WSAEADDRINUSE (WSABASEERR + 48) /* winsock2.h's value */
#endif
#define NSPV2_SERVER_MAX_CLIENTS (1u << 20) /* larger -> WSAEINVAL */
typedef struct nspv2_server_config {
    const char *socket_path; /* required; the parent folder must exist; an
                              * existing file there -> WSAEADDRINUSE, unless
                              * it is a socket nobody accepts on (removed) */
    uint32_t threads;        /* worker threads (0: 4) */
    uint32_t max_clients;    /* clients at once (0: 64; at most
                              * NSPV2_SERVER_MAX_CLIENTS); past it a new one
                              * gets ERROR WSAEPROCLIM at HELLO and is
                              * closed. Monitors (role 1) do not count: 4
                              * of them besides, the 5th refused (not
                              * logged). Connections awaiting HELLO:
                              * max_clients + 4 at most. */
    uint32_t max_in_flight;  /* per connection (0: 8) */
    uint32_t keepalive_ms;   /* told to clients in HELLO_REPLY (0: 5000);
                              * silence for 3x that ends a connection */
    const uint32_t *allow_uids; /* besides the server's own euid */
    uint32_t n_allow_uids;
    int log_fd;              /* -1: no log */
} nspv2_server_config;

typedef struct nspv2_server_stats {
    uint64_t accepted;        /* connections that sent a valid HELLO */
    uint64_t refused;         /* wrong uid, too many clients / monitors, bad HELLO */
    uint64_t open_now;        /* connections open now (clients + monitors) */
    uint64_t sessions_opened; /* client sessions opened (role client) */
    uint64_t sessions_cleanup;   /* ended by GOODBYE (NSPv2Cleanup) */
    uint64_t sessions_rundown;   /* ended any other way (Rundown) */
    uint64_t ended_disconnect;   /* of which: connection closed without GOODBYE */
    uint64_t ended_keepalive;    /* of which: silent for 3 x keepalive */
    uint64_t ended_protocol;     /* of which: protocol error */
    uint64_t ended_shutdown;     /* of which: nspv2_server_stop */
    uint64_t requests;           /* requests answered */
    uint64_t queue_peak;         /* most requests ever waiting for a thread */
} nspv2_server_stats;

/* Bind, listen and start serving on new threads; returns once clients can
 * connect. *server gets an opaque non-zero id. NULL cfg / server / socket
 * path -> WSAEFAULT; a path too long for sockaddr_un -> WSAEINVAL. */
NSPV2_HOST_API INT nspv2_server_start(const nspv2_server_config *cfg, uint64_t *server);
/* Stop accepting, end every connection (in-flight calls return first,
 * within the host's completion timeout; sessions run down, reason
 * PLATFORM_SHUTDOWN), join the threads, unlink the socket. Unknown id ->
 * WSAEINVAL. */
NSPV2_HOST_API INT nspv2_server_stop(uint64_t server);
NSPV2_HOST_API INT nspv2_server_stats_get(uint64_t server, nspv2_server_stats *out);
/* The STATUS reply's JSON (docs/serve.md): *len in: room, out: bytes
 * needed (no NUL written); WSAEFAULT when short. */
NSPV2_HOST_API INT nspv2_server_status(uint64_t server, char *json, uint32_t *len);
#endif

#ifdef __cplusplus
}
#endif

#endif /* NSPV2_HOST_H */
