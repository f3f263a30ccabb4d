/*
 * catalog.c - the namespace catalog, the NS_EMAIL installation blob check,
 * the route order and the NextEx stepping rules (see catalog.h, the
 * contract). Internal: nothing here is exported; compiled into the host
 * library and into the client library.
 *
 * Snapshots are immutable once published and shared by reference count
 * (cat_lock guards the counts). The process-memory catalog is one snapshot
 * replaced whole by each write (mem_lock). The file catalog is read through
 * a one-entry cache (cache_lock) keyed on the file's path, device, inode,
 * size and mtime; a file modified less than NSPV2_CACHE_SETTLE_NS ago is
 * never trusted from the cache (a rewrite in the same clock tick could
 * reuse the inode and keep the size), so it is read again.
 *
 * Writers (file): take write_lock (one file change at a time in this
 * process), mkdir -p the folder (0700), open "<catalog>.lock" (0600, never
 * through a symbolic link) and flock it exclusively, retrying LOCK_NB with
 * short sleeps until NSPV2_CATALOG_LOCK_TIMEOUT_MS, remove stale
 * "<catalog>.tmp.*" files (no writer holds one without the lock), read and
 * parse the file, apply the change, write "<catalog>.tmp.<pid>" (O_EXCL,
 * 0600), fsync, rename over the catalog, fsync the folder, close the lock,
 * release write_lock.
 *
 * fork(): a flock belongs to the open file description, which a child
 * forked (without exec) inherits; a child forked while a write holds the
 * lock would keep it until it exits. A pthread_atfork handler (registered
 * at the first catalog call) takes write_lock and then every other lock of
 * this file in one fixed order before a fork, and releases them in the
 * parent and the child after it: a fork waits for a write in progress, and
 * the child starts with no catalog lock held. The order, which every path
 * also follows when it nests them: write_lock, cfg_lock, mem_lock,
 * cache_lock, cat_lock.
 */
#if !defined(_WIN32)
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* flock, st_mtim, strerror_r (XSI) */
#endif
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#endif

#include "catalog.h"
#include "platform.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#endif

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define NSPV2_CACHE_SETTLE_NS 2000000000ull
/* The largest file the reader accepts: every entry at its limits. */
#define NSPV2_CATALOG_MAX_FILE_BYTES                                                      \
    ((size_t)NSPV2_CATALOG_MAX_PROVIDERS *                                                \
     (2u * NSPV2_CATALOG_MAX_BLOB_BYTES + 4u * NSPV2_CATALOG_MAX_IDENTIFIER_CHARS + 128u) + \
     4096u)

/* ------------------------------------------------------------------------ */
/* this thread's error text                                                   */

#define ERR_CAP (PATH_MAX + 512)

#ifdef _WIN32
/* A per-thread buffer allocated at the first failure (platform.h's slots:
 * no per-thread destructor, so threads may outlive an unloaded DLL). */
NSPV2_TLS_UINTPTR(cat_err)
static char *err_buf(int create)
{
    char *b = (char *)cat_err_get();
    if (!b && create) {
        b = calloc(1, ERR_CAP);
        if (b)
            cat_err_set((uintptr_t)b);
    }
    return b;
}
#else
static _Thread_local char cat_err_text[ERR_CAP];
static char *err_buf(int create)
{
    (void)create;
    return cat_err_text;
}
#endif

static void err_clear(void)
{
    char *b = err_buf(0);
    if (b)
        b[0] = 0;
}

static int cat_vfail(int err, const char *fmt, va_list ap)
{
    char *b = err_buf(1);
    if (b)
        vsnprintf(b, ERR_CAP, fmt, ap);
    return err;
}

int nspv2_catalog_fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cat_vfail(err, fmt, ap);
    va_end(ap);
    return err;
}

void nspv2_catalog_clear_error(void) { err_clear(); }

const char *nspv2_catalog_error(void)
{
    const char *b = err_buf(0);
    return b ? b : "";
}

static void guid_text(const GUID *g, char out[37])
{
    snprintf(out, 37, "%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             (unsigned long)g->Data1, (unsigned)g->Data2, (unsigned)g->Data3,
             (unsigned)g->Data4[0], (unsigned)g->Data4[1], (unsigned)g->Data4[2],
             (unsigned)g->Data4[3], (unsigned)g->Data4[4], (unsigned)g->Data4[5],
             (unsigned)g->Data4[6], (unsigned)g->Data4[7]);
}

static int guid_eq(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

/* ------------------------------------------------------------------------ */
/* the NS_EMAIL installation blob                                             */

#define BLOB_HEADER 20u /* sizeof(NAPI_PROVIDER_INSTALLATION_BLOB) */
#define BLOB_DOMAIN 16u /* sizeof(NAPI_DOMAIN_DESCRIPTION_BLOB) */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int why_set(char *why, size_t cap, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return WSAEINVAL;
}

/* The same rules, in the same order and words, as
 * nspv2.sdk.nsemail.installation_blob_problems: the text is its first
 * problem. */
int nspv2_cat_blob_check(const uint8_t *blob, size_t size, char *why, size_t why_size)
{
    if (why && why_size)
        why[0] = 0;
    if (size < BLOB_HEADER || !blob)
        return why_set(why, why_size,
                       "the blob is %zu bytes, shorter than NAPI_PROVIDER_INSTALLATION_BLOB (%u)",
                       blob ? size : (size_t)0, BLOB_HEADER);
    uint32_t version = rd32(blob), ptype = rd32(blob + 4), count = rd32(blob + 12);
    uint32_t first = rd32(blob + 16);
    if (version != 1)
        return why_set(why, why_size, "dwVersion is %lu, not 1", (unsigned long)version);
    if (ptype != 1 && ptype != 2)
        return why_set(why, why_size, "dwProviderType is %lu, not 1 (application) or 2 (service)",
                       (unsigned long)ptype);
    if (count == 0) {
        if (first != 0)
            return why_set(why, why_size, "cDomains is 0 but OffsetFirstDomain is %lu, not 0",
                           (unsigned long)first);
        return 0;
    }
    if (first == 0)
        return why_set(why, why_size, "cDomains is %lu but OffsetFirstDomain is 0",
                       (unsigned long)count);
    /* a loop revisits an offset: with at most size / 16 distinct aligned
     * in-blob offsets, a chain longer than that has one; a visited set is
     * kept for the (small) chains that fit */
    uint64_t offset = first;
    uint32_t prev = 0; /* domain number that led here (0: OffsetFirstDomain) */
    size_t max_domains = size / BLOB_DOMAIN + 1;
    size_t seen_n = size / 4 + 1;
    uint32_t *seen_no = calloc(seen_n, sizeof *seen_no); /* offset / 4 -> domain number */
    int rc = 0;
    char where[128];
    for (uint64_t number = 1; number <= count; number++) {
        if (prev == 0)
            snprintf(where, sizeof where, "domain #%llu at offset %llu (OffsetFirstDomain)",
                     (unsigned long long)number, (unsigned long long)offset);
        else
            snprintf(where, sizeof where,
                     "domain #%llu at offset %llu (OffsetNextDomainDescription of domain #%lu)",
                     (unsigned long long)number, (unsigned long long)offset, (unsigned long)prev);
        if (offset % 4 == 0 && offset / 4 < seen_n && seen_no && seen_no[offset / 4]) {
            rc = why_set(why, why_size, "%s: a loop, back to domain #%lu", where,
                         (unsigned long)seen_no[offset / 4]);
            break;
        }
        if (offset % 4) {
            rc = why_set(why, why_size, "%s: offset %llu is not a multiple of 4", where,
                         (unsigned long long)offset);
            break;
        }
        if (offset < BLOB_HEADER) {
            rc = why_set(why, why_size, "%s: offset %llu overlaps the %u-byte header", where,
                         (unsigned long long)offset, BLOB_HEADER);
            break;
        }
        if (offset + BLOB_DOMAIN > size) {
            rc = why_set(why, why_size, "%s: ends past the blob (%zu bytes)", where, size);
            break;
        }
        if (!seen_no) { /* no memory for the loop check: bound the walk */
            if (number > max_domains) {
                rc = why_set(why, why_size, "%s: a loop", where);
                break;
            }
        } else {
            seen_no[offset / 4] = (uint32_t)number;
        }
        const uint8_t *d = blob + offset;
        uint32_t level = rd32(d), cch = rd32(d + 4), nxt = rd32(d + 8), at = rd32(d + 12);
        if (level > 2) {
            rc = why_set(why, why_size,
                         "domain #%llu: AuthLevel %lu is not 0, 1 or 2 (NAPI_PROVIDER_LEVEL)",
                         (unsigned long long)number, (unsigned long)level);
            break;
        }
        const char *np = NULL;
        char nbuf[160];
        if (cch == 0) {
            np = "cchDomainName is 0 (an empty name)";
        } else if (at % 2) {
            snprintf(nbuf, sizeof nbuf, "OffsetThisDomainName %lu is not a multiple of 2",
                     (unsigned long)at);
            np = nbuf;
        } else if (at < BLOB_HEADER) {
            snprintf(nbuf, sizeof nbuf, "OffsetThisDomainName %lu overlaps the %u-byte header",
                     (unsigned long)at, BLOB_HEADER);
            np = nbuf;
        } else if ((uint64_t)at + 2u * (uint64_t)cch > size) {
            snprintf(nbuf, sizeof nbuf,
                     "its name (%lu characters at offset %lu) ends past the blob (%zu bytes)",
                     (unsigned long)cch, (unsigned long)at, size);
            np = nbuf;
        } else {
            for (uint32_t i = 0; i < cch; i++) {
                if (blob[at + 2u * i] == 0 && blob[at + 2u * i + 1] == 0) {
                    snprintf(nbuf, sizeof nbuf,
                             "cchDomainName is %lu but the name ends after %lu characters",
                             (unsigned long)cch, (unsigned long)i);
                    np = nbuf;
                    break;
                }
            }
            uint64_t end = (uint64_t)at + 2u * (uint64_t)cch;
            if (!np && end + 2 <= size && (blob[end] != 0 || blob[end + 1] != 0)) {
                snprintf(nbuf, sizeof nbuf,
                         "cchDomainName is %lu but the name goes on (no NUL after %lu characters)",
                         (unsigned long)cch, (unsigned long)cch);
                np = nbuf;
            }
        }
        if (np) {
            rc = why_set(why, why_size, "domain #%llu: %s", (unsigned long long)number, np);
            break;
        }
        if (number == count) {
            if (nxt != 0)
                rc = why_set(why, why_size,
                             "domain #%llu, the last of cDomains %lu: OffsetNextDomainDescription "
                             "is %lu, not 0",
                             (unsigned long long)number, (unsigned long)count, (unsigned long)nxt);
            break;
        }
        if (nxt == 0) {
            rc = why_set(why, why_size, "cDomains is %lu but the chain ends after %llu domain(s)",
                         (unsigned long)count, (unsigned long long)number);
            break;
        }
        prev = (uint32_t)number;
        offset = nxt;
    }
    free(seen_no);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* entries and snapshots                                                      */

static nspv2_mutex cat_lock = NSPV2_MUTEX_INIT; /* reference counts */
static void fork_guard(void); /* the pthread_atfork handler, once (POSIX) */

static void entry_free(nspv2_cat_entry *e)
{
    free(e->identifier);
    free(e->blob);
    for (uint32_t i = 0; i < e->ndomains; i++)
        free(e->domains[i].name);
    free(e->domains);
    memset(e, 0, sizeof *e);
}

/* Fills the routing fields of an NS_EMAIL entry whose blob passes the
 * check (the caller checked it). 0 or WSA_NOT_ENOUGH_MEMORY. */
static int entry_derive(nspv2_cat_entry *e)
{
    e->email = 0;
    e->wildcard = 0;
    e->provider_type = 0;
    e->domains = NULL;
    e->ndomains = 0;
    if (e->name_space != NS_EMAIL || !e->has_blob ||
        nspv2_cat_blob_check(e->blob, e->blob_size, NULL, 0) != 0)
        return 0;
    const uint8_t *b = e->blob;
    uint32_t count = rd32(b + 12), offset = rd32(b + 16);
    e->provider_type = rd32(b + 4);
    e->wildcard = rd32(b + 8) != 0;
    if (count) {
        e->domains = calloc(count, sizeof *e->domains);
        if (!e->domains)
            return WSA_NOT_ENOUGH_MEMORY;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = b + offset;
        uint32_t cch = rd32(d + 4), at = rd32(d + 12);
        WCHAR *name = malloc(((size_t)cch + 1) * sizeof(WCHAR));
        if (!name)
            return WSA_NOT_ENOUGH_MEMORY;
        for (uint32_t k = 0; k < cch; k++)
            name[k] = (WCHAR)(b[at + 2u * k] | b[at + 2u * k + 1] << 8);
        name[cch] = 0;
        e->domains[i].name = name;
        e->domains[i].chars = cch;
        e->domains[i].level = rd32(d);
        e->ndomains = i + 1;
        offset = rd32(d + 8);
    }
    e->email = 1;
    return 0;
}

static int entry_copy(nspv2_cat_entry *dst, const nspv2_cat_entry *src)
{
    memset(dst, 0, sizeof *dst);
    dst->id = src->id;
    dst->name_space = src->name_space;
    dst->version = src->version;
    dst->enabled = src->enabled;
    dst->has_identifier = src->has_identifier;
    dst->identifier_chars = src->identifier_chars;
    dst->has_blob = src->has_blob;
    dst->blob_size = src->blob_size;
    if (src->identifier) {
        size_t bytes = ((size_t)src->identifier_chars + 1) * sizeof(WCHAR);
        if (!(dst->identifier = malloc(bytes)))
            goto oom;
        memcpy(dst->identifier, src->identifier, bytes);
    }
    if (src->blob_size) {
        if (!(dst->blob = malloc(src->blob_size)))
            goto oom;
        memcpy(dst->blob, src->blob, src->blob_size);
    }
    if (entry_derive(dst) == 0)
        return 0;
oom:
    entry_free(dst);
    return WSA_NOT_ENOUGH_MEMORY;
}

static nspv2_catalog *cat_new(void)
{
    nspv2_catalog *c = calloc(1, sizeof *c);
    if (c)
        c->refs = 1;
    return c;
}

static void cat_destroy(nspv2_catalog *c)
{
    for (size_t i = 0; i < c->n; i++)
        entry_free(&c->entries[i]);
    free(c->entries);
    free(c);
}

static nspv2_catalog *cat_ref(nspv2_catalog *c)
{
    nspv2_mutex_lock(&cat_lock);
    c->refs++;
    nspv2_mutex_unlock(&cat_lock);
    return c;
}

void nspv2_catalog_release(nspv2_catalog *c)
{
    if (!c)
        return;
    nspv2_mutex_lock(&cat_lock);
    unsigned left = --c->refs;
    nspv2_mutex_unlock(&cat_lock);
    if (left == 0)
        cat_destroy(c);
}

/* A private deep copy (refs 1), or NULL. */
static nspv2_catalog *cat_clone(const nspv2_catalog *src)
{
    nspv2_catalog *c = cat_new();
    if (!c)
        return NULL;
    if (src && src->n) {
        c->entries = calloc(src->n, sizeof *c->entries);
        if (!c->entries) {
            free(c);
            return NULL;
        }
        for (size_t i = 0; i < src->n; i++) {
            if (entry_copy(&c->entries[i], &src->entries[i]) != 0) {
                cat_destroy(c);
                return NULL;
            }
            c->n = i + 1;
        }
    }
    return c;
}

const nspv2_cat_entry *nspv2_catalog_find(const nspv2_catalog *c, const GUID *id)
{
    if (!c || !id)
        return NULL;
    for (size_t i = 0; i < c->n; i++)
        if (guid_eq(&c->entries[i].id, id))
            return &c->entries[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* changes, applied to a private catalog                                      */

enum { OP_INSTALL, OP_UNINSTALL, OP_ENABLE };

typedef struct cat_op {
    int kind;
    const GUID *id;
    int enable;
    nspv2_cat_entry *entry; /* OP_INSTALL: moved into the catalog on success */
} cat_op;

/* 0 (changed), 1 (nothing to change), or an error. */
static int op_apply(nspv2_catalog *c, cat_op *op)
{
    char g[37];
    guid_text(op->id, g);
    size_t i = 0;
    while (i < c->n && !guid_eq(&c->entries[i].id, op->id))
        i++;
    switch (op->kind) {
    case OP_INSTALL:
        if (i < c->n)
            return nspv2_catalog_fail(WSANO_RECOVERY, "provider %s is already installed", g);
        if (c->n >= NSPV2_CATALOG_MAX_PROVIDERS)
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY,
                                      "the catalog is full (%u providers)",
                                      NSPV2_CATALOG_MAX_PROVIDERS);
        {
            nspv2_cat_entry *ne = realloc(c->entries, (c->n + 1) * sizeof *ne);
            if (!ne)
                return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
            c->entries = ne;
            c->entries[c->n++] = *op->entry;
            memset(op->entry, 0, sizeof *op->entry);
        }
        return 0;
    case OP_UNINSTALL:
        if (i == c->n)
            return nspv2_catalog_fail(WSAEINVAL, "provider %s is not installed", g);
        entry_free(&c->entries[i]);
        memmove(&c->entries[i], &c->entries[i + 1], (c->n - i - 1) * sizeof *c->entries);
        c->n--;
        return 0;
    default:
        if (i == c->n)
            return nspv2_catalog_fail(WSAEINVAL, "provider %s is not installed", g);
        if (!c->entries[i].enabled == !op->enable)
            return 1;
        c->entries[i].enabled = op->enable ? 1 : 0;
        return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* where the catalog is                                                       */

static nspv2_mutex cfg_lock = NSPV2_MUTEX_INIT;
static char *cfg_chosen; /* NULL: the default resolution */

int nspv2_catalog_use(const char *path)
{
    char *copy = NULL;
    fork_guard();
    if (path) {
        size_t len = strlen(path);
        if (len == 0 || len >= PATH_MAX)
            return nspv2_catalog_fail(WSAEINVAL, "catalog path %s",
                                      len ? "longer than the system's limit" : "is empty");
#ifdef _WIN32
        if (strcmp(path, NSPV2_CATALOG_MEMORY) != 0)
            return nspv2_catalog_fail(WSAEINVAL,
                                      "Windows builds keep the catalog in memory only (\"%s\")",
                                      NSPV2_CATALOG_MEMORY);
#endif
        if (!(copy = malloc(len + 1)))
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        memcpy(copy, path, len + 1);
    }
    nspv2_mutex_lock(&cfg_lock);
    char *old = cfg_chosen;
    cfg_chosen = copy;
    nspv2_mutex_unlock(&cfg_lock);
    free(old);
    return 0;
}

/* The location in effect into buf (PATH_MAX bytes): 0, or WSANO_RECOVERY
 * when no default can be made (no HOME) or it is too long. */
static int location_resolve(char *buf)
{
#ifdef _WIN32
    snprintf(buf, PATH_MAX, "%s", NSPV2_CATALOG_MEMORY);
    return 0;
#else
    nspv2_mutex_lock(&cfg_lock);
    if (cfg_chosen) {
        snprintf(buf, PATH_MAX, "%s", cfg_chosen);
        nspv2_mutex_unlock(&cfg_lock);
        return 0;
    }
    nspv2_mutex_unlock(&cfg_lock);
    const char *env = getenv("NSPV2_CATALOG");
    int n;
    if (env && *env) {
        n = snprintf(buf, PATH_MAX, "%s", env);
    } else {
        const char *xdg = getenv("XDG_CONFIG_HOME");
        const char *home = getenv("HOME");
        if (xdg && *xdg)
            n = snprintf(buf, PATH_MAX, "%s/nspv2/catalog", xdg);
        else if (home && *home)
            n = snprintf(buf, PATH_MAX, "%s/.config/nspv2/catalog", home);
        else {
            buf[0] = 0;
            return nspv2_catalog_fail(WSANO_RECOVERY,
                                      "no catalog location: set NSPV2_CATALOG, XDG_CONFIG_HOME "
                                      "or HOME");
        }
    }
    if (n < 0 || n >= PATH_MAX) {
        buf[0] = 0;
        return nspv2_catalog_fail(WSANO_RECOVERY, "catalog path longer than the system's limit");
    }
    return 0;
#endif
}

void nspv2_catalog_where(char *buf, size_t cap)
{
    char where[PATH_MAX];
    fork_guard();
    if (!buf || !cap)
        return;
    if (location_resolve(where) != 0)
        where[0] = 0;
    snprintf(buf, cap, "%s", where);
}

static int is_memory(const char *where) { return strcmp(where, NSPV2_CATALOG_MEMORY) == 0; }

/* ------------------------------------------------------------------------ */
/* the process-memory catalog                                                 */

static nspv2_mutex mem_lock = NSPV2_MUTEX_INIT;
static nspv2_catalog *mem_cat; /* NULL: empty */

static int mem_snapshot(nspv2_catalog **out)
{
    nspv2_mutex_lock(&mem_lock);
    nspv2_catalog *c = mem_cat ? cat_ref(mem_cat) : NULL;
    nspv2_mutex_unlock(&mem_lock);
    if (!c && !(c = cat_new()))
        return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    *out = c;
    return 0;
}

static int mem_change(cat_op *op)
{
    nspv2_mutex_lock(&mem_lock);
    nspv2_catalog *next = cat_clone(mem_cat);
    int rc = next ? op_apply(next, op)
                  : nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    nspv2_catalog *old = NULL;
    if (rc == 0) {
        old = mem_cat;
        mem_cat = next;
        next = NULL;
    }
    nspv2_mutex_unlock(&mem_lock);
    if (next)
        nspv2_catalog_release(next);
    if (old)
        nspv2_catalog_release(old);
    return rc == 1 ? 0 : rc;
}

void nspv2_catalog_reset_memory(void)
{
    fork_guard();
    nspv2_mutex_lock(&mem_lock);
    nspv2_catalog *old = mem_cat;
    mem_cat = NULL;
    nspv2_mutex_unlock(&mem_lock);
    nspv2_catalog_release(old);
}

/* ------------------------------------------------------------------------ */
/* format 1: parse and write                                                  */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* A token [s, s + len) as a decimal u32 (no sign, no leading zero). */
static int parse_u32(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 10 || (len > 1 && s[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10u + (uint64_t)(s[i] - '0');
    }
    if (v > 0xFFFFFFFFu)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_guid(const char *s, size_t len, GUID *g)
{
    static const int dash[] = {8, 13, 18, 23};
    uint8_t b[16];
    if (len != 36)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < 36;) {
        if (i == (size_t)dash[0] || i == (size_t)dash[1] || i == (size_t)dash[2] ||
            i == (size_t)dash[3]) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        b[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    g->Data1 = (DWORD)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
    g->Data2 = (USHORT)(b[4] << 8 | b[5]);
    g->Data3 = (USHORT)(b[6] << 8 | b[7]);
    memcpy(g->Data4, b + 8, 8);
    return 0;
}

typedef struct parse_ctx {
    unsigned long line;
} parse_ctx;

static int corrupt(const parse_ctx *p, const char *what)
{
    return nspv2_catalog_fail(WSANO_RECOVERY, "line %lu: %s", p->line, what);
}

/* One provider line's fields (after "provider "), into e. */
static int parse_provider(const parse_ctx *p, const char *s, size_t len, nspv2_cat_entry *e)
{
    const char *tok[6];
    size_t tlen[6];
    size_t nt = 0, i = 0;
    memset(e, 0, sizeof *e); /* the caller frees e on failure: no early return before this */
    while (i <= len && nt < 7) {
        size_t j = i;
        while (j < len && s[j] != ' ')
            j++;
        if (nt == 6)
            return corrupt(p, "a provider line has more than 6 fields");
        tok[nt] = s + i;
        tlen[nt] = j - i;
        if (tlen[nt] == 0)
            return corrupt(p, "an empty field (two spaces, or a space at the end)");
        nt++;
        i = j + 1;
    }
    if (nt != 6)
        return corrupt(p, "a provider line needs 6 fields: guid namespace version enabled "
                          "identifier blob");
    if (parse_guid(tok[0], tlen[0], &e->id) != 0)
        return corrupt(p, "the provider id is not a lower-case 8-4-4-4-12 hex GUID");
    uint32_t v;
    if (parse_u32(tok[1], tlen[1], &v) != 0)
        return corrupt(p, "the namespace is not a decimal 32-bit number");
    e->name_space = v;
    if (parse_u32(tok[2], tlen[2], &v) != 0)
        return corrupt(p, "the version is not a decimal 32-bit number");
    e->version = v;
    if (tlen[3] != 1 || (tok[3][0] != '0' && tok[3][0] != '1'))
        return corrupt(p, "enabled is not 0 or 1");
    e->enabled = tok[3][0] == '1';
    /* identifier */
    if (tlen[4] == 1 && tok[4][0] == '-') {
        e->has_identifier = 0;
    } else {
        e->has_identifier = 1;
        size_t chars = 0;
        if (!(tlen[4] == 1 && tok[4][0] == '=')) {
            if (tlen[4] % 4)
                return corrupt(p, "the identifier is not 4 hex digits per UTF-16 code unit");
            chars = tlen[4] / 4;
            if (chars > NSPV2_CATALOG_MAX_IDENTIFIER_CHARS)
                return corrupt(p, "the identifier is longer than the limit");
        }
        if (!(e->identifier = malloc((chars + 1) * sizeof(WCHAR))))
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        for (size_t c = 0; c < chars; c++) {
            unsigned u = 0;
            for (size_t d = 0; d < 4; d++) {
                int h = hexval(tok[4][4 * c + d]);
                if (h < 0)
                    return corrupt(p, "the identifier is not lower-case hex");
                u = u << 4 | (unsigned)h;
            }
            if (u == 0)
                return corrupt(p, "the identifier holds a NUL");
            e->identifier[c] = (WCHAR)u;
        }
        e->identifier[chars] = 0;
        e->identifier_chars = (uint32_t)chars;
    }
    /* blob */
    if (tlen[5] == 1 && tok[5][0] == '-') {
        e->has_blob = 0;
    } else {
        e->has_blob = 1;
        if (!(tlen[5] == 1 && tok[5][0] == '=')) {
            if (tlen[5] % 2)
                return corrupt(p, "the blob has an odd number of hex digits");
            size_t bytes = tlen[5] / 2;
            if (bytes > NSPV2_CATALOG_MAX_BLOB_BYTES)
                return corrupt(p, "the blob is larger than the limit");
            if (!(e->blob = malloc(bytes)))
                return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
            for (size_t k = 0; k < bytes; k++) {
                int hi = hexval(tok[5][2 * k]), lo = hexval(tok[5][2 * k + 1]);
                if (hi < 0 || lo < 0)
                    return corrupt(p, "the blob is not lower-case hex");
                e->blob[k] = (uint8_t)(hi << 4 | lo);
            }
            e->blob_size = (uint32_t)bytes;
        }
    }
    if (e->name_space == NS_EMAIL && e->has_blob) {
        char why[256], msg[320];
        if (nspv2_cat_blob_check(e->blob, e->blob_size, why, sizeof why) != 0) {
            snprintf(msg, sizeof msg, "the NS_EMAIL installation blob is invalid: %s", why);
            return corrupt(p, msg);
        }
    }
    if (entry_derive(e) != 0)
        return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    return 0;
}

int nspv2_catalog_parse(const char *text, size_t len, nspv2_catalog **out)
{
    *out = NULL;
    nspv2_catalog *c = cat_new();
    if (!c)
        return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    parse_ctx p = {0};
    size_t pos = 0, cap = 0;
    int seen_header = 0, seen_end = 0, rc = 0;
    while (pos < len) {
        p.line++;
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        if (!nl) {
            rc = corrupt(&p, "no line end (the file is truncated)");
            break;
        }
        size_t l = (size_t)(nl - s);
        pos += l + 1;
        if (memchr(s, 0, l) || memchr(s, '\r', l)) {
            rc = corrupt(&p, "a NUL or CR character");
            break;
        }
        if (seen_end) {
            rc = corrupt(&p, "text after the end line");
            break;
        }
        if (l > 0 && s[0] == '#')
            continue;
        if (!seen_header) {
            static const char head[] = "nspv2-catalog ";
            uint32_t v;
            if (l < sizeof head - 1 || memcmp(s, head, sizeof head - 1) != 0 ||
                parse_u32(s + sizeof head - 1, l - (sizeof head - 1), &v) != 0) {
                rc = corrupt(&p, "not a catalog file (no \"nspv2-catalog 1\" first line)");
                break;
            }
            if (v != NSPV2_CATALOG_FORMAT) {
                char msg[96];
                snprintf(msg, sizeof msg, "format %lu, this build reads format %u",
                         (unsigned long)v, NSPV2_CATALOG_FORMAT);
                rc = corrupt(&p, msg);
                break;
            }
            seen_header = 1;
            continue;
        }
        if (l >= 9 && memcmp(s, "provider ", 9) == 0) {
            if (c->n >= NSPV2_CATALOG_MAX_PROVIDERS) {
                rc = corrupt(&p, "more providers than the limit");
                break;
            }
            if (c->n == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                nspv2_cat_entry *ne = realloc(c->entries, ncap * sizeof *ne);
                if (!ne) {
                    rc = nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
                    break;
                }
                c->entries = ne;
                cap = ncap;
            }
            nspv2_cat_entry *e = &c->entries[c->n];
            rc = parse_provider(&p, s + 9, l - 9, e);
            if (rc != 0) {
                entry_free(e);
                break;
            }
            if (nspv2_catalog_find(c, &e->id)) {
                entry_free(e);
                rc = corrupt(&p, "a provider listed twice");
                break;
            }
            c->n++;
            continue;
        }
        if (l >= 4 && memcmp(s, "end ", 4) == 0) {
            uint32_t n;
            if (parse_u32(s + 4, l - 4, &n) != 0) {
                rc = corrupt(&p, "the end line's count is not a decimal number");
                break;
            }
            if (n != c->n) {
                char msg[96];
                snprintf(msg, sizeof msg, "the end line counts %lu providers, the file lists %zu",
                         (unsigned long)n, c->n);
                rc = corrupt(&p, msg);
                break;
            }
            seen_end = 1;
            continue;
        }
        rc = corrupt(&p, "neither a provider line, an end line nor a comment");
        break;
    }
    if (rc == 0 && !seen_header)
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "line %lu: no \"nspv2-catalog 1\" line "
                                "(the file is empty or truncated)", p.line + 1);
    else if (rc == 0 && !seen_end)
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "line %lu: no end line (the file is truncated)",
                                p.line + 1);
    if (rc != 0) {
        cat_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* A text buffer that grows. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_need(sbuf *b, size_t more)
{
    if (b->oom || b->len + more <= b->cap)
        return;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more)
        ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = ncap;
}

static void sb_add(sbuf *b, const char *s, size_t n)
{
    sb_need(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_hex(sbuf *b, unsigned v, int digits)
{
    static const char hx[] = "0123456789abcdef";
    char t[8];
    for (int i = digits - 1; i >= 0; i--) {
        t[i] = hx[v & 15u];
        v >>= 4;
    }
    sb_add(b, t, (size_t)digits);
}

/* The file's text for c (malloc'd, *len bytes), or NULL (out of memory). */
char *nspv2_catalog_format(const nspv2_catalog *c, size_t *len)
{
    sbuf b = {0};
    char t[128];
    int n = snprintf(t, sizeof t, "nspv2-catalog %u\n", NSPV2_CATALOG_FORMAT);
    sb_add(&b, t, (size_t)n);
    for (size_t i = 0; i < c->n; i++) {
        const nspv2_cat_entry *e = &c->entries[i];
        char g[37];
        guid_text(&e->id, g);
        n = snprintf(t, sizeof t, "provider %s %lu %lu %d ", g, (unsigned long)e->name_space,
                     (unsigned long)e->version, e->enabled ? 1 : 0);
        sb_add(&b, t, (size_t)n);
        if (!e->has_identifier)
            sb_add(&b, "-", 1);
        else if (e->identifier_chars == 0)
            sb_add(&b, "=", 1);
        else
            for (uint32_t k = 0; k < e->identifier_chars; k++)
                sb_hex(&b, e->identifier[k], 4);
        sb_add(&b, " ", 1);
        if (!e->has_blob)
            sb_add(&b, "-", 1);
        else if (e->blob_size == 0)
            sb_add(&b, "=", 1);
        else
            for (uint32_t k = 0; k < e->blob_size; k++)
                sb_hex(&b, e->blob[k], 2);
        sb_add(&b, "\n", 1);
    }
    n = snprintf(t, sizeof t, "end %zu\n", c->n);
    sb_add(&b, t, (size_t)n);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ------------------------------------------------------------------------ */
/* the file catalog (POSIX)                                                   */

#if !defined(_WIN32)

static const char *err_str(int e, char *buf, size_t cap)
{
    if (strerror_r(e, buf, cap) != 0)
        snprintf(buf, cap, "error %d", e);
    return buf;
}

/* What a file that is not a regular one is, for the error texts. */
static const char *file_kind(mode_t m)
{
    if (S_ISDIR(m))
        return "a folder";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    if (S_ISLNK(m))
        return "a symbolic link";
    return "not a regular file";
}

/* The file at fd read whole: 0, or WSANO_RECOVERY / WSA_NOT_ENOUGH_MEMORY. */
static int read_all(int fd, const char *path, char **out, size_t *len)
{
    char eb[128];
    sbuf b = {0};
    for (;;) {
        sb_need(&b, 65536);
        if (b.oom) {
            free(b.p);
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory reading %s", path);
        }
        ssize_t r = read(fd, b.p + b.len, b.cap - b.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(b.p);
            return nspv2_catalog_fail(WSANO_RECOVERY, "cannot read the catalog %s: %s", path,
                                      err_str(e, eb, sizeof eb));
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
        if (b.len > NSPV2_CATALOG_MAX_FILE_BYTES) {
            free(b.p);
            return nspv2_catalog_fail(WSANO_RECOVERY,
                                      "the catalog %s is corrupt: larger than any catalog", path);
        }
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* Parse with the path in the error text. */
static int parse_file_text(const char *path, const char *text, size_t len, nspv2_catalog **out)
{
    int rc = nspv2_catalog_parse(text, len, out);
    if (rc == WSANO_RECOVERY) {
        char why[ERR_CAP];
        snprintf(why, sizeof why, "%s", nspv2_catalog_error());
        nspv2_catalog_fail(rc, "the catalog %s is corrupt: %s", path, why);
    }
    return rc;
}

typedef struct file_key {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
} file_key;

static nspv2_mutex cache_lock = NSPV2_MUTEX_INIT;
static char *cache_path;
static file_key cache_key;
static nspv2_catalog *cache_cat;

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int key_settled(const file_key *k)
{
    if (k->mtim.tv_sec < 0)
        return 1;
    uint64_t m = (uint64_t)k->mtim.tv_sec * 1000000000u + (uint64_t)k->mtim.tv_nsec;
    uint64_t now = wall_ns();
    return now > m && now - m >= NSPV2_CACHE_SETTLE_NS;
}

static int key_eq(const file_key *a, const file_key *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec;
}

/* Read the catalog at path (no cache). A missing file: an empty catalog. */
static int file_read(const char *path, int fd_or_neg, nspv2_catalog **out, file_key *key)
{
    char eb[128];
    int fd = fd_or_neg;
    if (fd < 0) {
        /* O_NONBLOCK: a FIFO at the path must not block the open; a
         * regular file ignores the flag, cleared below anyway */
        do
            fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        while (fd < 0 && errno == EINTR);
    }
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            if (key)
                memset(key, 0, sizeof *key);
            *out = cat_new();
            return *out ? 0 : nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        }
        return nspv2_catalog_fail(WSANO_RECOVERY, "cannot open the catalog %s: %s", path,
                                  err_str(e, eb, sizeof eb));
    }
    struct stat st;
    int bad = fstat(fd, &st) != 0 ? errno : 0;
    if (bad || !S_ISREG(st.st_mode)) {
        if (fd_or_neg < 0)
            close(fd);
        if (bad)
            return nspv2_catalog_fail(WSANO_RECOVERY, "cannot read the catalog %s: %s", path,
                                      err_str(bad, eb, sizeof eb));
        return nspv2_catalog_fail(WSANO_RECOVERY,
                                  "the catalog %s is not a regular file (it is %s): remove it "
                                  "or choose another path",
                                  path, file_kind(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        if (fd_or_neg < 0)
            close(fd);
        return nspv2_catalog_fail(WSANO_RECOVERY, "cannot read the catalog %s: %s", path,
                                  err_str(e, eb, sizeof eb));
    }
    if (key) {
        key->dev = st.st_dev;
        key->ino = st.st_ino;
        key->size = st.st_size;
        key->mtim = st.st_mtim;
    }
    /* the cache */
    if (key) {
        nspv2_mutex_lock(&cache_lock);
        if (cache_cat && cache_path && strcmp(cache_path, path) == 0 &&
            key_eq(&cache_key, key) && key_settled(key)) {
            *out = cat_ref(cache_cat);
            nspv2_mutex_unlock(&cache_lock);
            if (fd_or_neg < 0)
                close(fd);
            return 0;
        }
        nspv2_mutex_unlock(&cache_lock);
    }
    char *text = NULL;
    size_t len = 0;
    int rc = read_all(fd, path, &text, &len);
    if (fd_or_neg < 0)
        close(fd);
    if (rc != 0)
        return rc;
    rc = parse_file_text(path, text, len, out);
    free(text);
    if (rc == 0 && key && key_settled(key)) {
        size_t pl = strlen(path);
        char *pc = malloc(pl + 1);
        if (pc) {
            memcpy(pc, path, pl + 1);
            nspv2_catalog *old = NULL;
            char *oldp = NULL;
            nspv2_mutex_lock(&cache_lock);
            old = cache_cat;
            oldp = cache_path;
            cache_cat = cat_ref(*out);
            cache_path = pc;
            cache_key = *key;
            nspv2_mutex_unlock(&cache_lock);
            nspv2_catalog_release(old);
            free(oldp);
        }
    }
    return rc;
}

static int file_snapshot(const char *path, nspv2_catalog **out)
{
    file_key key;
    return file_read(path, -1, out, &key);
}

/* mkdir -p, new folders 0700. */
static int make_folders(const char *dir)
{
    char eb[128];
    char p[PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof p)
        return 0;
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != 0)
            continue;
        char saved = p[i];
        p[i] = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            return nspv2_catalog_fail(WSANO_RECOVERY, "cannot create the catalog's folder %s: %s",
                                      p, err_str(e, eb, sizeof eb));
        }
        p[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nspv2_catalog_fail(WSANO_RECOVERY, "the catalog's folder %s is not a folder", dir);
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The writers' lock deadline: NSPV2_CATALOG_LOCK_TIMEOUT_MS, or the test
 * hook NSPV2_TEST_CATALOG_LOCK_MS (1 .. 600000). */
static uint32_t lock_timeout_ms(void)
{
    const char *s = getenv("NSPV2_TEST_CATALOG_LOCK_MS");
    if (s && *s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (!*end && v > 0 && v <= 600000ul)
            return (uint32_t)v;
    }
    return NSPV2_CATALOG_LOCK_TIMEOUT_MS;
}

/* Open "<catalog>.lock" (never through a symbolic link) and flock it
 * exclusively, retrying with short sleeps until the deadline: the
 * descriptor, or -1 with the error set (WSANO_RECOVERY). */
static int lock_take(const char *lockp)
{
    char eb[128];
    int lfd;
    do
        lfd = open(lockp, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    while (lfd < 0 && errno == EINTR);
    if (lfd < 0) {
        int e = errno;
        struct stat st;
        if (e == ELOOP && lstat(lockp, &st) == 0 && S_ISLNK(st.st_mode))
            nspv2_catalog_fail(WSANO_RECOVERY,
                               "the catalog's lock %s is a symbolic link, which is never "
                               "followed: remove it",
                               lockp);
        else
            nspv2_catalog_fail(WSANO_RECOVERY, "cannot open the catalog's lock %s: %s", lockp,
                               err_str(e, eb, sizeof eb));
        return -1;
    }
    struct stat st;
    if (fstat(lfd, &st) != 0) {
        int e = errno;
        close(lfd);
        nspv2_catalog_fail(WSANO_RECOVERY, "cannot open the catalog's lock %s: %s", lockp,
                           err_str(e, eb, sizeof eb));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(lfd);
        nspv2_catalog_fail(WSANO_RECOVERY,
                           "the catalog's lock %s is not a regular file (it is %s): remove it",
                           lockp, file_kind(st.st_mode));
        return -1;
    }
    uint32_t limit = lock_timeout_ms();
    uint64_t start = nspv2_now_ns();
    uint32_t nap = 1;
    for (;;) {
        if (flock(lfd, LOCK_EX | LOCK_NB) == 0)
            return lfd;
        int e = errno;
        if (e != EWOULDBLOCK && e != EAGAIN && e != EINTR) {
            close(lfd);
            nspv2_catalog_fail(WSANO_RECOVERY, "cannot lock %s: %s", lockp,
                               err_str(e, eb, sizeof eb));
            return -1;
        }
        uint64_t waited = (nspv2_now_ns() - start) / 1000000u;
        if (waited >= limit) {
            close(lfd);
            nspv2_catalog_fail(WSANO_RECOVERY,
                               "the catalog is locked by another writer (%s): gave up after "
                               "%lu ms",
                               lockp, (unsigned long)limit);
            return -1;
        }
        uint32_t left = (uint32_t)(limit - waited);
        nspv2_sleep_ms(nap < left ? nap : left);
        if (nap < 20)
            nap *= 2;
    }
}

static uint32_t pause_ms(void)
{
    const char *s = getenv("NSPV2_TEST_CATALOG_PAUSE_MS");
    if (!s || !*s)
        return 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v > 600000ul)
        return 0;
    return (uint32_t)v;
}

/* Remove "<base>.tmp.*" left in dir by writers that died (lock held). */
static void remove_stale(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    size_t bl = strlen(base);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strncmp(n, base, bl) == 0 && strncmp(n + bl, ".tmp.", 5) == 0) {
            char full[PATH_MAX];
            int k = snprintf(full, sizeof full, "%s/%s", dir, n);
            if (k > 0 && (size_t)k < sizeof full)
                unlink(full);
        }
    }
    closedir(d);
}

static int file_change(const char *path, cat_op *op)
{
    char eb[128];
    char dir[PATH_MAX], base[PATH_MAX], lockp[PATH_MAX], tmp[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - path);
        if (dl == 0)
            dl = 1; /* "/catalog" */
        memcpy(dir, path, dl);
        dir[dl] = 0;
        snprintf(base, sizeof base, "%s", slash + 1);
    } else {
        snprintf(dir, sizeof dir, ".");
        snprintf(base, sizeof base, "%s", path);
    }
    if (!base[0])
        return nspv2_catalog_fail(WSANO_RECOVERY, "the catalog path %s names a folder", path);
    int n1 = snprintf(lockp, sizeof lockp, "%s.lock", path);
    int n2 = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n1 < 0 || (size_t)n1 >= sizeof lockp || n2 < 0 || (size_t)n2 >= sizeof tmp)
        return nspv2_catalog_fail(WSANO_RECOVERY, "catalog path longer than the system's limit");
    int rc = make_folders(dir);
    if (rc)
        return rc;
    int lfd = lock_take(lockp);
    if (lfd < 0)
        return WSANO_RECOVERY;
    remove_stale(dir, base);
    nspv2_catalog *cur = NULL;
    rc = file_read(path, -1, &cur, NULL);
    char *text = NULL;
    size_t len = 0;
    int tfd = -1;
    if (rc)
        goto out;
    rc = op_apply(cur, op);
    if (rc == 1) {
        rc = 0;
        goto out;
    }
    if (rc)
        goto out;
    if (!(text = nspv2_catalog_format(cur, &len))) {
        rc = nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        goto out;
    }
    do
        tfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    while (tfd < 0 && errno == EINTR);
    if (tfd < 0) {
        int e = errno;
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "cannot create %s: %s", tmp,
                                err_str(e, eb, sizeof eb));
        goto out;
    }
    uint32_t pause = pause_ms();
    size_t half = len / 2;
    if (write_all(tfd, text, half) != 0 || (pause ? (nspv2_sleep_ms(pause), 0) : 0) ||
        write_all(tfd, text + half, len - half) != 0 || fsync(tfd) != 0) {
        int e = errno;
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "cannot write %s: %s", tmp,
                                err_str(e, eb, sizeof eb));
        goto out;
    }
    if (close(tfd) != 0) {
        int e = errno;
        tfd = -1;
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "cannot write %s: %s", tmp,
                                err_str(e, eb, sizeof eb));
        goto out;
    }
    tfd = -1;
    if (rename(tmp, path) != 0) {
        int e = errno;
        rc = nspv2_catalog_fail(WSANO_RECOVERY, "cannot rename %s to %s: %s", tmp, path,
                                err_str(e, eb, sizeof eb));
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: some file systems refuse it for folders */
        close(dfd);
    }
out:
    if (tfd >= 0)
        close(tfd);
    if (rc)
        unlink(tmp); /* ours, if we made it (a stale one is gone already) */
    free(text);
    nspv2_catalog_release(cur);
    close(lfd); /* releases the flock */
    return rc;
}

#endif /* !_WIN32 */

/* ------------------------------------------------------------------------ */
/* fork()                                                                     */

#if !defined(_WIN32)

static nspv2_mutex write_lock = NSPV2_MUTEX_INIT; /* a file change, whole */
static nspv2_once fork_once = NSPV2_ONCE_INIT;

static void fork_prepare(void)
{
    nspv2_mutex_lock(&write_lock);
    nspv2_mutex_lock(&cfg_lock);
    nspv2_mutex_lock(&mem_lock);
    nspv2_mutex_lock(&cache_lock);
    nspv2_mutex_lock(&cat_lock);
}

static void fork_release(void)
{
    nspv2_mutex_unlock(&cat_lock);
    nspv2_mutex_unlock(&cache_lock);
    nspv2_mutex_unlock(&mem_lock);
    nspv2_mutex_unlock(&cfg_lock);
    nspv2_mutex_unlock(&write_lock);
}

static void fork_register(void) { pthread_atfork(fork_prepare, fork_release, fork_release); }

static void fork_guard(void) { nspv2_call_once(&fork_once, fork_register); }

#else

static void fork_guard(void) {}

#endif

/* ------------------------------------------------------------------------ */
/* the catalog in effect                                                      */

int nspv2_catalog_snapshot(nspv2_catalog **out)
{
    char where[PATH_MAX];
    *out = NULL;
    err_clear();
    fork_guard();
    int rc = location_resolve(where);
    if (rc)
        return rc;
    if (is_memory(where))
        return mem_snapshot(out);
#ifdef _WIN32
    return nspv2_catalog_fail(WSANO_RECOVERY, "no file catalog on Windows builds");
#else
    return file_snapshot(where, out);
#endif
}

static int change(cat_op *op)
{
    char where[PATH_MAX];
    fork_guard();
    int rc = location_resolve(where);
    if (rc)
        return rc;
    if (is_memory(where))
        return mem_change(op);
#ifdef _WIN32
    return nspv2_catalog_fail(WSANO_RECOVERY, "no file catalog on Windows builds");
#else
    /* held from the lock file's open to its close: no fork() in between
     * (fork_prepare), so no child inherits the flock'd description */
    nspv2_mutex_lock(&write_lock);
    rc = file_change(where, op);
    nspv2_mutex_unlock(&write_lock);
    return rc;
#endif
}

int nspv2_catalog_install(const WCHAR *identifier, DWORD name_space, DWORD version,
                          const GUID *id, const BLOB *info)
{
    err_clear();
    if (!id)
        return nspv2_catalog_fail(WSAEFAULT, "the provider id is NULL");
    char g[37];
    guid_text(id, g);
    nspv2_cat_entry e;
    memset(&e, 0, sizeof e);
    e.id = *id;
    e.name_space = name_space;
    e.version = version;
    e.enabled = 1;
    if (identifier) {
        size_t n = 0;
        while (identifier[n]) {
            if (++n > NSPV2_CATALOG_MAX_IDENTIFIER_CHARS)
                return nspv2_catalog_fail(WSAEINVAL,
                                          "the identifier is longer than %u characters",
                                          NSPV2_CATALOG_MAX_IDENTIFIER_CHARS);
        }
        if (!(e.identifier = malloc((n + 1) * sizeof(WCHAR))))
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        memcpy(e.identifier, identifier, (n + 1) * sizeof(WCHAR));
        e.identifier_chars = (uint32_t)n;
        e.has_identifier = 1;
    }
    if (info) {
        if (info->cbSize > NSPV2_CATALOG_MAX_BLOB_BYTES) {
            entry_free(&e);
            return nspv2_catalog_fail(WSAEINVAL, "the blob is larger than %u bytes",
                                      NSPV2_CATALOG_MAX_BLOB_BYTES);
        }
        if (info->cbSize > 0 && !info->pBlobData) {
            entry_free(&e);
            return nspv2_catalog_fail(WSAEINVAL, "the blob's cbSize is %lu but pBlobData is NULL",
                                      (unsigned long)info->cbSize);
        }
        if (name_space == NS_EMAIL) {
            char why[256];
            if (info->pBlobData && ((uintptr_t)info->pBlobData & 3u)) {
                entry_free(&e);
                return nspv2_catalog_fail(WSAEINVAL,
                                          "the NS_EMAIL installation blob's pBlobData is not "
                                          "4-byte aligned");
            }
            if (nspv2_cat_blob_check(info->pBlobData, info->cbSize, why, sizeof why) != 0) {
                entry_free(&e);
                return nspv2_catalog_fail(WSAEINVAL,
                                          "the NS_EMAIL installation blob is invalid: %s", why);
            }
        }
        e.has_blob = 1;
        e.blob_size = (uint32_t)info->cbSize;
        if (e.blob_size) {
            if (!(e.blob = malloc(e.blob_size))) {
                entry_free(&e);
                return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
            }
            memcpy(e.blob, info->pBlobData, e.blob_size);
        }
    }
    if (entry_derive(&e) != 0) {
        entry_free(&e);
        return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    }
    cat_op op = {OP_INSTALL, id, 0, &e};
    int rc = change(&op);
    entry_free(&e); /* emptied when moved into the catalog */
    return rc;
}

int nspv2_catalog_uninstall(const GUID *id)
{
    err_clear();
    if (!id)
        return nspv2_catalog_fail(WSAEFAULT, "the provider id is NULL");
    cat_op op = {OP_UNINSTALL, id, 0, NULL};
    return change(&op);
}

int nspv2_catalog_enable(const GUID *id, int enable)
{
    err_clear();
    if (!id)
        return nspv2_catalog_fail(WSAEFAULT, "the provider id is NULL");
    cat_op op = {OP_ENABLE, id, enable, NULL};
    return change(&op);
}

/* ------------------------------------------------------------------------ */
/* routing                                                                    */

static WCHAR fold(WCHAR c) { return (c >= 'A' && c <= 'Z') ? (WCHAR)(c + ('a' - 'A')) : c; }

/* [a, a + na) and [b, b + nb) equal without ASCII case, one trailing '.'
 * of each ignored. */
static int domain_eq(const WCHAR *a, size_t na, const WCHAR *b, size_t nb)
{
    if (na && a[na - 1] == '.')
        na--;
    if (nb && b[nb - 1] == '.')
        nb--;
    if (na != nb || na == 0)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (fold(a[i]) != fold(b[i]))
            return 0;
    return 1;
}

/* The rank of candidate e for domain [d, d + nd) (d NULL: none), or -1. */
static int route_rank(const nspv2_cat_entry *e, const WCHAR *d, size_t nd)
{
    if (e->name_space != NS_EMAIL)
        return 1;
    if (!e->has_blob)
        return 2;
    if (!e->email)
        return -1;
    int best = -1;
    if (d) {
        for (uint32_t i = 0; i < e->ndomains; i++) {
            if (!domain_eq(e->domains[i].name, e->domains[i].chars, d, nd))
                continue;
            if (e->domains[i].level == NSPV2_LEVEL_PRIMARY)
                return 0;
            if (e->domains[i].level == NSPV2_LEVEL_SECONDARY)
                best = 1;
        }
    }
    if (best >= 0)
        return best;
    return e->wildcard ? 2 : -1;
}

int nspv2_route_order(const nspv2_catalog *c, DWORD name_space, const GUID *provider_id,
                      const WCHAR *name, nspv2_avail_fn avail, void *ctx, GUID **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (provider_id) {
        char g[37];
        guid_text(provider_id, g);
        const nspv2_cat_entry *e = nspv2_catalog_find(c, provider_id);
        if (!e)
            return nspv2_catalog_fail(WSAEINVAL, "provider %s is not installed", g);
        if (avail && !avail(provider_id, ctx))
            return nspv2_catalog_fail(WSAEINVAL, "provider %s is not available", g);
        if (!e->enabled)
            return nspv2_catalog_fail(WSASERVICE_NOT_FOUND, "provider %s is disabled", g);
        if (name_space != NS_ALL && e->name_space != name_space)
            return nspv2_catalog_fail(WSASERVICE_NOT_FOUND,
                                      "provider %s serves namespace %lu, not %lu", g,
                                      (unsigned long)e->name_space, (unsigned long)name_space);
        if (!(*out = malloc(sizeof **out)))
            return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
        (*out)[0] = *provider_id;
        *n = 1;
        return 0;
    }
    const WCHAR *d = NULL;
    size_t nd = 0;
    if (name) {
        size_t len = 0, at = 0;
        int has_at = 0;
        while (name[len]) {
            if (name[len] == '@') {
                at = len;
                has_at = 1;
            }
            len++;
        }
        if (has_at) {
            d = name + at + 1;
            nd = len - at - 1;
            if (nd == 0 || (nd == 1 && d[0] == '.'))
                d = NULL; /* nothing after the '@' (domain_eq drops the dot) */
        }
    }
    if (!c || c->n == 0)
        return nspv2_catalog_fail(WSASERVICE_NOT_FOUND, "no provider installed");
    GUID *ids = malloc(c->n * sizeof *ids);
    int *rank = malloc(c->n * sizeof *rank);
    if (!ids || !rank) {
        free(ids);
        free(rank);
        return nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < c->n; i++) {
        const nspv2_cat_entry *e = &c->entries[i];
        rank[i] = -1;
        if (!e->enabled || (name_space != NS_ALL && e->name_space != name_space))
            continue;
        if (avail && !avail(&e->id, ctx))
            continue;
        rank[i] = route_rank(e, d, nd);
    }
    size_t k = 0;
    for (int r = 0; r <= 2; r++)
        for (size_t i = 0; i < c->n; i++)
            if (rank[i] == r)
                ids[k++] = c->entries[i].id;
    free(rank);
    if (k == 0) {
        free(ids);
        return nspv2_catalog_fail(WSASERVICE_NOT_FOUND,
                                  "no enabled, available provider is routed this query");
    }
    *out = ids;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* NextEx stepping                                                            */

void nspv2_route_cursor_init(nspv2_route_cursor *c, size_t nparts, DWORD flags)
{
    memset(c, 0, sizeof *c);
    c->n = nparts;
    c->flags = flags;
}

static int next_part(nspv2_route_cursor *c)
{
    if (c->cur < c->n)
        c->cur++;
    c->part_answered = 0;
    return NSPV2_STEP_NEXT_PART;
}

int nspv2_route_step(nspv2_route_cursor *c, INT rc)
{
    switch (rc) {
    case NO_ERROR:
        c->part_answered = 1;
        c->answered = 1;
        return NSPV2_STEP_RETURN;
    case WSAEFAULT:
    case WSA_E_CANCELLED:
    case WSAECANCELLED:
        return NSPV2_STEP_RETURN;
    case WSA_E_NO_MORE:
    case WSAENOMORE:
        c->exhausted = 1;
        if (!(c->flags & LUP_NON_AUTHORITATIVE) && c->part_answered) {
            c->cur = c->n;
            c->part_answered = 0;
            return NSPV2_STEP_DONE;
        }
        return next_part(c);
    default:
        if (!c->first_error)
            c->first_error = rc;
        return next_part(c);
    }
}

INT nspv2_route_final(const nspv2_route_cursor *c)
{
    if (c->answered || c->exhausted || !c->first_error)
        return WSA_E_NO_MORE;
    return c->first_error;
}
