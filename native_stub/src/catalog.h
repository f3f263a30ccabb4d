/*
 * catalog.h - the namespace catalog and the routing rules (internal to
 * native_stub: compiled into the host library and into the client library;
 * nothing here is exported, both are built with -fvisibility=hidden).
 *
 *   catalog.c      the catalog (file or process memory), the NS_EMAIL
 *                  installation blob check, the route order and the
 *                  NextEx stepping rules: the one rule set the in-process
 *                  host, the server and the client library all follow
 *   catalog_api.c  the Winsock-named calls built on it (host library only):
 *                  WSCInstallNameSpaceEx, WSCUnInstallNameSpace,
 *                  WSCEnableNSProvider, WSAEnumNameSpaceProvidersExW and
 *                  the nspv2_catalog_* extras of nspv2_host.h
 *
 * Where the catalog lives (resolved at every operation, unless
 * nspv2_catalog_set_path chose): NSPV2_CATALOG (a file path, or ":memory:"
 * for a catalog private to the process), else $XDG_CONFIG_HOME/nspv2/catalog,
 * else $HOME/.config/nspv2/catalog. On Windows builds the catalog is always
 * the process's memory (the real one is Windows' own, in ws2_32).
 *
 * File format 1 (UTF-8 text, LF line ends, written whole to a temporary file
 * in the same folder, fsync'd, renamed over the catalog, folder fsync'd;
 * writers serialize on flock of "<catalog>.lock"; readers take no lock;
 * a missing folder is created 0700, parents too; the file and the lock are
 * 0600; a writer first removes the "<catalog>.tmp.<pid>" files writers
 * killed mid-write left):
 *
 *   nspv2-catalog 1
 *   provider <guid> <namespace> <version> <enabled> <identifier> <blob>
 *   ...one line per provider, in catalog order...
 *   end <number of provider lines>
 *
 * <guid> lower-case 8-4-4-4-12 hex without braces; <namespace> <version>
 * decimal u32; <enabled> 0 or 1; <identifier> the UTF-16 code units as
 * lower-case hex, 4 digits each, "-" for none (NULL), "=" for empty;
 * <blob> the bytes as lower-case hex, "-" for none (NULL lpProviderInfo),
 * "=" for a zero-length blob. Lines starting with '#' are comments. A file
 * that does not parse (a missing "end" line included) is corrupt: reads
 * fail with WSANO_RECOVERY and nspv2_catalog_error_text says where; it is
 * never overwritten (a write fails the same way).
 * Limits: NSPV2_CATALOG_MAX_PROVIDERS entries, identifiers up to
 * NSPV2_CATALOG_MAX_IDENTIFIER_CHARS, blobs up to NSPV2_CATALOG_MAX_BLOB_BYTES.
 *
 * Locks and files (POSIX): the catalog is opened O_NONBLOCK and must be a
 * regular file (a FIFO, folder, socket or device there fails reads and
 * writes with WSANO_RECOVERY at once instead of blocking); the lock is
 * opened O_NOFOLLOW (a symbolic link there is refused, WSANO_RECOVERY) and
 * taken with LOCK_NB retries until NSPV2_CATALOG_LOCK_TIMEOUT_MS; every
 * descriptor is close-on-exec. Within a process one file change runs at a
 * time, and fork() waits for the change in progress (a pthread_atfork
 * handler takes the writer's mutex and the catalog's other locks, and
 * releases them in parent and child): a child forked without exec never
 * holds the flock nor any catalog lock.
 */
#ifndef NSPV2_CATALOG_H
#define NSPV2_CATALOG_H

#include "nspv2_abi.h"

#include <stddef.h>
#include <stdint.h>

#define NSPV2_CATALOG_FORMAT 1u
#define NSPV2_CATALOG_MAX_PROVIDERS 1024u
#define NSPV2_CATALOG_MAX_IDENTIFIER_CHARS 1024u
#define NSPV2_CATALOG_MAX_BLOB_BYTES 65536u
#define NSPV2_CATALOG_MEMORY ":memory:"
/* How long a writer waits for "<catalog>.lock" held by another process
 * before failing with WSANO_RECOVERY ("the catalog is locked by another
 * writer (<catalog>.lock)..."): a stopped or hung installer never blocks
 * the others for longer. Test hook: NSPV2_TEST_CATALOG_LOCK_MS=N (1 ..
 * 600000) replaces it, like NSPV2_TEST_CATALOG_PAUSE_MS=N, which makes a
 * writer sleep N ms after writing half of the temporary file. */
#define NSPV2_CATALOG_LOCK_TIMEOUT_MS 10000u

/* NAPI_PROVIDER_LEVEL */
#define NSPV2_LEVEL_NONE 0u
#define NSPV2_LEVEL_SECONDARY 1u
#define NSPV2_LEVEL_PRIMARY 2u

typedef struct nspv2_cat_domain {
    WCHAR *name;    /* NUL-terminated copy */
    uint32_t chars; /* without the terminator */
    uint32_t level; /* NSPV2_LEVEL_* */
} nspv2_cat_domain;

typedef struct nspv2_cat_entry {
    GUID id;
    DWORD name_space;
    DWORD version;
    int enabled;
    int has_identifier;
    WCHAR *identifier; /* NUL-terminated, or NULL when !has_identifier */
    uint32_t identifier_chars;
    int has_blob;
    uint8_t *blob; /* blob_size bytes (NULL when 0) */
    uint32_t blob_size;
    /* NS_EMAIL entries with a valid blob: what routing reads */
    int email; /* 1 when name_space == NS_EMAIL and the blob parsed */
    int wildcard;
    uint32_t provider_type;
    nspv2_cat_domain *domains;
    uint32_t ndomains;
} nspv2_cat_entry;

/* An immutable snapshot, shared by reference count. */
typedef struct nspv2_catalog {
    nspv2_cat_entry *entries; /* in catalog order */
    size_t n;
    unsigned refs; /* internal */
} nspv2_catalog;

/* The catalog in effect, as a snapshot (cached: a file is re-read only when
 * its identity, size or mtime changed, or when it was modified less than
 * 2 s ago, since a rewrite within one clock tick may keep all of them).
 * 0, or WSANO_RECOVERY (corrupt or
 * unreadable file), WSA_NOT_ENOUGH_MEMORY. A missing file is an empty
 * catalog. Thread-safe; call without any host lock held (it may read a
 * file). Release with nspv2_catalog_release. */
int nspv2_catalog_snapshot(nspv2_catalog **out);
void nspv2_catalog_release(nspv2_catalog *c);

/* The entry for id in c, or NULL. */
const nspv2_cat_entry *nspv2_catalog_find(const nspv2_catalog *c, const GUID *id);

/* Read-modify-write of the catalog in effect, under the writers' lock.
 * Each returns 0 or the Winsock error (the caller reports it):
 *   install: NULL id -> WSAEFAULT; already installed -> WSANO_RECOVERY;
 *     identifier or blob above the limits, cbSize > 0 with NULL data, or an
 *     NS_EMAIL blob that fails nspv2_cat_blob_check -> WSAEINVAL; full
 *     catalog -> WSA_NOT_ENOUGH_MEMORY. Appended at the end, enabled.
 *   uninstall: NULL -> WSAEFAULT; unknown -> WSAEINVAL.
 *   enable: NULL -> WSAEFAULT; unknown -> WSAEINVAL; already in that
 *     state -> 0 (no write).
 *   Any: corrupt file -> WSANO_RECOVERY; the folder cannot be created or
 *     written, or the lock taken within NSPV2_CATALOG_LOCK_TIMEOUT_MS, or the
 *     path or its lock is not a regular file -> WSANO_RECOVERY (text says
 *     which). */
int nspv2_catalog_install(const WCHAR *identifier, DWORD name_space, DWORD version,
                          const GUID *id, const BLOB *info);
int nspv2_catalog_uninstall(const GUID *id);
int nspv2_catalog_enable(const GUID *id, int enable);

/* (nspv2_catalog_where and nspv2_cat_blob_check are the internal halves
 * of nspv2_host.h's nspv2_catalog_location and nspv2_email_blob_check,
 * which catalog_api.c exports under those names.) */
/* Where the catalog is: path (copied), NSPV2_CATALOG_MEMORY, or NULL for
 * the default resolution. 0 or WSAEINVAL (path longer than PATH_MAX). */
int nspv2_catalog_use(const char *path);
/* The location in effect (the file path, or NSPV2_CATALOG_MEMORY) into buf
 * (NUL-terminated, truncated to cap). */
void nspv2_catalog_where(char *buf, size_t cap);
/* Forget the process-memory catalog (nspv2_host_reset). */
void nspv2_catalog_reset_memory(void);
/* The text of this thread's last catalog failure ("" when none). Every
 * nspv2_catalog_* call above clears it first. */
const char *nspv2_catalog_error(void);
/* Sets this thread's catalog error text (printf format); returns err. For
 * catalog_api.c's own argument checks. */
int nspv2_catalog_fail(int err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void nspv2_catalog_clear_error(void);

/* Format 1 text <-> snapshot (the file code's parser and writer, exposed
 * for the fuzzer and the tests). parse: 0 with *out (refs 1), or
 * WSANO_RECOVERY with "line N: ..." as the error text, or
 * WSA_NOT_ENOUGH_MEMORY. format: the text (malloc'd, *len bytes, no NUL
 * terminator), or NULL when out of memory. */
int nspv2_catalog_parse(const char *text, size_t len, nspv2_catalog **out);
char *nspv2_catalog_format(const nspv2_catalog *c, size_t *len);

/* The NS_EMAIL installation blob rules (nsemail.h), the same as Python's
 * nspv2.sdk.nsemail.installation_blob_problems: 0 when valid, else WSAEINVAL
 * with the first violated rule written to why (NUL-terminated, truncated). */
int nspv2_cat_blob_check(const uint8_t *blob, size_t size, char *why, size_t why_size);

/* ---- routing -------------------------------------------------------------
 * The providers a query reaches, in order. Candidates are entries that are
 * enabled, available (avail(id, ctx) != 0: advertised in this process, or
 * served by a live provider process) and of the query's namespace (any,
 * for NS_ALL).
 *   provider_id given: that provider only. Not installed or not available
 *     -> WSAEINVAL; disabled, or of another namespace than a non-NS_ALL
 *     name_space -> WSASERVICE_NOT_FOUND.
 *   Otherwise, with D the name's domain (after the last '@' of name,
 *   compared without ASCII case, one trailing '.' ignored; none when name is
 *   NULL or has no '@' or nothing after it), each candidate gets a rank and
 *   the route is the candidates by rank, then catalog order:
 *     0  NS_EMAIL, a domain equal to D at level primary
 *     1  NS_EMAIL, a domain equal to D at level secondary;
 *        any candidate of another namespace
 *     2  NS_EMAIL and fSupportsWildCard, or installed without a blob
 *     -  otherwise (D matches only at level none, or D is none and the
 *        provider is not a wildcard one): not routed
 *   Nothing routed -> WSASERVICE_NOT_FOUND.
 * The rank is the first line that applies, top to bottom: a provider of
 * another namespace is 1 even without a blob; an NS_EMAIL wildcard provider
 * whose domains match D only at level none is 2. avail NULL: every
 * installed provider is available. The error text says why on failure.
 * On success *out (malloc'd, caller frees) holds *n >= 1 ids. */
typedef int (*nspv2_avail_fn)(const GUID *id, void *ctx);
int nspv2_route_order(const nspv2_catalog *c, DWORD name_space, const GUID *provider_id,
                      const WCHAR *name, nspv2_avail_fn avail, void *ctx, GUID **out,
                      size_t *n);

/* ---- NextEx stepping ------------------------------------------------------
 * A lookup's parts are the routed providers whose Begin succeeded, in route
 * order. After part `cur` answered a Next with rc:
 *   0 (a result), WSAEFAULT (buffer too small): RETURN rc, stay on it.
 *   WSA_E_CANCELLED, WSAECANCELLED: RETURN rc, stay (the lookup is ending).
 *   WSA_E_NO_MORE, WSAENOMORE: without LUP_NON_AUTHORITATIVE, a part that
 *     returned a result was the answer: DONE. Otherwise NEXT_PART.
 *   any other error: recorded (the first one is kept), NEXT_PART.
 * DONE and running out of parts both finish the lookup: the code to return
 * then is nspv2_route_final(): WSA_E_NO_MORE when some part returned a
 * result or reached its end, else the first recorded error. */
enum { NSPV2_STEP_RETURN, NSPV2_STEP_NEXT_PART, NSPV2_STEP_DONE };

typedef struct nspv2_route_cursor {
    size_t cur;       /* the part Next asks */
    size_t n;         /* parts */
    DWORD flags;      /* the Begin's dwControlFlags (LUP_NON_AUTHORITATIVE) */
    int part_answered; /* part cur returned a result */
    int answered;     /* some part returned a result */
    int exhausted;    /* some part reached WSA_E_NO_MORE */
    INT first_error;  /* 0, or the first error recorded */
} nspv2_route_cursor;

void nspv2_route_cursor_init(nspv2_route_cursor *c, size_t nparts, DWORD flags);
/* Apply rule above for rc from part c->cur; NEXT_PART advances c->cur (and
 * clears part_answered): the lookup has run out of parts when c->cur
 * reaches c->n then; DONE sets c->cur = c->n. */
int nspv2_route_step(nspv2_route_cursor *c, INT rc);
INT nspv2_route_final(const nspv2_route_cursor *c);

#endif
