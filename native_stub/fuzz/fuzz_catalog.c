/*
 * fuzz_catalog.c - libFuzzer harness for the namespace catalog's readers
 * (src/catalog.c): the parser of catalog files (format 1) and the NS_EMAIL
 * installation blob check. Both read what another process (or the user's
 * editor) wrote: nothing in the input is trusted.
 *
 * Each input, copied into a malloc'd block of exactly its size (so that
 * AddressSanitizer reports any read past it), runs:
 *
 *   1. nspv2_catalog_parse on the bytes as a catalog file;
 *   2. nspv2_email_blob_check (the exported check) and nspv2_cat_blob_check
 *      on the bytes as an installation blob, with a roomy and a tiny `why`;
 *   3. when the blob passes: WSCInstallNameSpaceEx of it as NS_EMAIL in the
 *      process-memory catalog, its routing fields, a route for a name in
 *      its first domain, and WSCUnInstallNameSpace.
 *
 * Oracle (abort() = a finding):
 *   - parse returns 0, WSANO_RECOVERY with a "line N: " error text, or
 *     WSA_NOT_ENOUGH_MEMORY; a parsed catalog is within the limits, has no
 *     provider twice, and every NS_EMAIL entry with a blob has its routing
 *     fields (the parser refuses invalid ones);
 *   - a parsed catalog written with nspv2_catalog_format parses again to
 *     the same entries, and writes the same text again;
 *   - the blob check returns NO_ERROR with an empty why, or SOCKET_ERROR +
 *     WSAEINVAL with a non-empty NUL-terminated why (truncated, never
 *     overrun, when why is tiny); both halves agree;
 *   - a valid blob installs (an NS_EMAIL provider may not be refused for a
 *     blob the check accepts), its domains match the blob's cDomains, and
 *     a name in a primary domain (without '@') routes to it first.
 */
#define FUZZ_NAME "fuzz_catalog"
#include "fuzz_common.h"

#include "catalog.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *v = getenv("FUZZ_VERBOSE");
    verbose = v && *v == '1';
    if (nspv2_catalog_set_path(NSPV2_CATALOG_MEMORY) != NO_ERROR)
        die("nspv2_catalog_set_path(:memory:) failed");
    return 0;
}

static int entries_equal(const nspv2_cat_entry *a, const nspv2_cat_entry *b)
{
    if (memcmp(&a->id, &b->id, sizeof a->id) || a->name_space != b->name_space ||
        a->version != b->version || !a->enabled != !b->enabled ||
        a->has_identifier != b->has_identifier || a->identifier_chars != b->identifier_chars ||
        a->has_blob != b->has_blob || a->blob_size != b->blob_size || a->email != b->email ||
        a->wildcard != b->wildcard || a->ndomains != b->ndomains)
        return 0;
    if (a->identifier_chars &&
        memcmp(a->identifier, b->identifier, a->identifier_chars * sizeof(WCHAR)))
        return 0;
    if (a->blob_size && memcmp(a->blob, b->blob, a->blob_size))
        return 0;
    for (uint32_t i = 0; i < a->ndomains; i++)
        if (a->domains[i].level != b->domains[i].level ||
            a->domains[i].chars != b->domains[i].chars ||
            memcmp(a->domains[i].name, b->domains[i].name,
                   (a->domains[i].chars + 1) * sizeof(WCHAR)))
            return 0;
    return 1;
}

static void check_catalog(const nspv2_catalog *c)
{
    if (c->n > NSPV2_CATALOG_MAX_PROVIDERS)
        die("more providers than the limit");
    for (size_t i = 0; i < c->n; i++) {
        const nspv2_cat_entry *e = &c->entries[i];
        if (nspv2_catalog_find(c, &e->id) != e)
            die("a provider listed twice");
        if (e->identifier_chars > NSPV2_CATALOG_MAX_IDENTIFIER_CHARS ||
            e->blob_size > NSPV2_CATALOG_MAX_BLOB_BYTES)
            die("an entry above the limits");
        if (e->has_identifier != (e->identifier != NULL))
            die("has_identifier and identifier disagree");
        if (e->identifier && e->identifier[e->identifier_chars] != 0)
            die("identifier not NUL-terminated");
        if (!e->has_blob && e->blob_size)
            die("a blob size without a blob");
        if (e->name_space == NS_EMAIL && e->has_blob && !e->email)
            die("an NS_EMAIL blob accepted without its routing fields");
        if (e->name_space != NS_EMAIL && e->email)
            die("routing fields for another namespace");
    }
}

static void fuzz_parse(const char *text, size_t size)
{
    nspv2_catalog *c = NULL;
    int rc = nspv2_catalog_parse(text, size, &c);
    if (verbose)
        fprintf(stderr, FUZZ_NAME ": parse -> %d %s\n", rc, rc ? nspv2_catalog_error() : "");
    if (rc == WSA_NOT_ENOUGH_MEMORY)
        return;
    if (rc == WSANO_RECOVERY) {
        if (c || strncmp(nspv2_catalog_error(), "line ", 5) != 0)
            die("a corrupt file without a \"line N: \" error text");
        return;
    }
    if (rc != 0 || !c)
        die("parse returned neither 0, WSANO_RECOVERY nor WSA_NOT_ENOUGH_MEMORY");
    check_catalog(c);
    size_t len1 = 0, len2 = 0;
    char *t1 = nspv2_catalog_format(c, &len1);
    if (!t1)
        die("format failed");
    nspv2_catalog *c2 = NULL;
    if (nspv2_catalog_parse(t1, len1, &c2) != 0)
        die("the formatted catalog does not parse");
    if (c2->n != c->n)
        die("round trip: another number of providers");
    for (size_t i = 0; i < c->n; i++)
        if (!entries_equal(&c->entries[i], &c2->entries[i]))
            die("round trip: another entry");
    char *t2 = nspv2_catalog_format(c2, &len2);
    if (!t2 || len1 != len2 || memcmp(t1, t2, len1))
        die("round trip: another text");
    free(t1);
    free(t2);
    nspv2_catalog_release(c2);
    nspv2_catalog_release(c);
}

static void fuzz_blob(const uint8_t *data, size_t size)
{
    char why[512], tiny[6];
    memset(why, 'z', sizeof why);
    memset(tiny, 'z', sizeof tiny);
    int rc = outcome(nspv2_email_blob_check(data, (uint32_t)size, why, sizeof why));
    int rc2 = outcome(nspv2_email_blob_check(data, (uint32_t)size, tiny, sizeof tiny));
    int rc3 = nspv2_cat_blob_check(data, size, NULL, 0);
    if (verbose)
        fprintf(stderr, FUZZ_NAME ": blob -> %d %s\n", rc, rc ? why : "");
    if (rc != rc2 || rc != rc3)
        die("blob check: different answers for different why buffers");
    if (rc == NO_ERROR) {
        if (why[0] != 0 || tiny[0] != 0)
            die("blob check: a why for a valid blob");
    } else {
        expect(rc, WSAEINVAL, "blob check's error");
        if (!memchr(why, 0, sizeof why) || why[0] == 0)
            die("blob check: no why, or not NUL-terminated");
        if (!memchr(tiny, 0, sizeof tiny) || strlen(tiny) != sizeof tiny - 1)
            die("blob check: the tiny why not truncated to its room");
        if (strncmp(why, tiny, sizeof tiny - 1) != 0)
            die("blob check: the tiny why is not the start of the roomy one");
        return;
    }
    /* a valid blob: installed, routed, uninstalled */
    if (size > NSPV2_CATALOG_MAX_BLOB_BYTES)
        return;
    static const GUID id = {0x0fa2c0de, 0x1, 0x2, {3, 4, 5, 6, 7, 8, 9, 10}};
    void *aligned = malloc(size ? size : 1);
    if (!aligned)
        return;
    memcpy(aligned, data, size);
    BLOB b = {(ULONG)size, aligned};
    WCHAR ident[] = {'f', 0};
    nspv2_catalog_reset_memory();
    expect(outcome(WSCInstallNameSpaceEx(ident, NULL, NS_EMAIL, 1, (LPGUID)&id, &b)), NO_ERROR,
           "install of a valid blob");
    nspv2_catalog *c = NULL;
    if (nspv2_catalog_snapshot(&c) != 0 || !c || c->n != 1)
        die("snapshot after install");
    const nspv2_cat_entry *e = &c->entries[0];
    uint32_t count = (uint32_t)data[12] | (uint32_t)data[13] << 8 | (uint32_t)data[14] << 16 |
                     (uint32_t)data[15] << 24;
    if (!e->email || e->ndomains != count || e->wildcard != (data[8] | data[9] | data[10] | data[11] ? 1 : 0))
        die("routing fields disagree with the blob");
    for (uint32_t i = 0; i < e->ndomains; i++) {
        const nspv2_cat_domain *d = &e->domains[i];
        if (d->level != NSPV2_LEVEL_PRIMARY || d->chars == 0 || d->chars > 1000)
            continue;
        size_t chars = d->chars, at = 0;
        int has_at = 0;
        for (size_t k = 0; k < chars; k++)
            has_at |= d->name[k] == '@';
        if (has_at || (chars == 1 && d->name[0] == '.'))
            continue;
        WCHAR name[1003];
        name[at++] = 'x';
        name[at++] = '@';
        memcpy(name + at, d->name, chars * sizeof(WCHAR));
        name[at + chars] = 0;
        GUID *ids = NULL;
        size_t n = 0;
        if (nspv2_route_order(c, NS_EMAIL, NULL, name, NULL, NULL, &ids, &n) != 0 || n != 1 ||
            memcmp(&ids[0], &id, sizeof id))
            die("a name in a primary domain does not route to its provider");
        free(ids);
        break;
    }
    nspv2_catalog_release(c);
    expect(outcome(WSCUnInstallNameSpace((LPGUID)&id)), NO_ERROR, "uninstall");
    free(aligned);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fuzz_parse((const char *)copy, size);
    fuzz_blob(copy, size);
    free(copy);
    return 0;
}
