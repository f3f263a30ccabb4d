/*
 * idmap.c - a small uint64 -> pointer hash map (open addressing, linear
 * probing, backward-shift deletion) for the host's sessions, lookups and
 * async calls, and the counter-based ids they are keyed by.
 */
#include "host_internal.h"

static size_t idmap_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

void *idmap_get(const idmap *m, uint64_t k)
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
int idmap_put(idmap *m, uint64_t k, void *v)
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

void *idmap_remove(idmap *m, uint64_t k)
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
void **idmap_values(const idmap *m, size_t *n)
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

/* A fresh id from *counter that fits a HANDLE, is non-zero and not in m. */
uint64_t fresh_id(uint64_t *counter, const idmap *m, int as_handle)
{
    for (;;) {
        uint64_t v = ++*counter;
        if (as_handle)
            v = (uint64_t)(uintptr_t)v;
        if (v && !idmap_get(m, v))
            return v;
    }
}
