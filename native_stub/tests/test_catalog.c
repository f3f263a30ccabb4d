/*
 * test_catalog.c - the namespace catalog (src/catalog.c, src/catalog_api.c):
 * the exported calls' errors, WSAEnumNameSpaceProvidersExW at every buffer
 * size, nspv2_host_installed*, the location, the NS_EMAIL blob check (the
 * same words as nspv2.sdk.nsemail), the route order and the NextEx
 * stepping rules; on POSIX also the file: round trip, corrupt files,
 * concurrent writers in 8 processes, the reader's cache, a writer killed
 * mid-write (NSPV2_TEST_CATALOG_PAUSE_MS) and stale temporary files, a
 * fork() during a write, the writers' lock deadline (NSPV2_TEST_CATALOG_LOCK_MS),
 * a FIFO at the catalog's path and a symbolic link as its lock.
 */
#include "test_support.h"

#include "catalog.h"

#if !defined(_WIN32)
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#ifndef TRUE
#define TRUE 1
#define FALSE 0
#endif

static GUID gid(uint32_t n)
{
    GUID g = {0x6b0f3a10u + n, 0x51c2, 0x4e0d, {0x9a, 0x1b, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77}};
    return g;
}

static void use_memory(void)
{
    nspv2_catalog_set_path(NSPV2_CATALOG_MEMORY);
    nspv2_catalog_reset_memory();
}

/* An NS_EMAIL installation blob, laid out like InstallationBlob.pack. */
typedef union cat_blob_buf {
    uint32_t align;
    unsigned char bytes[1024];
} cat_blob_buf;

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static BLOB cat_blob(cat_blob_buf *b, int wildcard, size_t n, const char *const *domains,
                     const unsigned *levels)
{
    size_t at_name = 20 + 16 * n;
    memset(b->bytes, 0, sizeof b->bytes);
    put32(b->bytes, 1);
    put32(b->bytes + 4, 1);
    put32(b->bytes + 8, wildcard ? 1u : 0u);
    put32(b->bytes + 12, (uint32_t)n);
    put32(b->bytes + 16, n ? 20u : 0u);
    for (size_t i = 0; i < n; i++) {
        size_t cch = strlen(domains[i]);
        unsigned char *d = b->bytes + 20 + 16 * i;
        put32(d, levels[i]);
        put32(d + 4, (uint32_t)cch);
        put32(d + 8, i + 1 < n ? (uint32_t)(20 + 16 * (i + 1)) : 0u);
        put32(d + 12, (uint32_t)at_name);
        for (size_t k = 0; k <= cch; k++)
            b->bytes[at_name + 2 * k] = (unsigned char)domains[i][k];
        at_name += 2 * (cch + 1);
    }
    BLOB out = {(ULONG)((at_name + 3u) & ~(size_t)3u), b->bytes};
    return out;
}

static BLOB one_domain(cat_blob_buf *b, const char *domain, unsigned level, int wildcard)
{
    const char *d[1] = {domain};
    unsigned l[1] = {level};
    return cat_blob(b, wildcard, domain ? 1 : 0, d, l);
}

/* ------------------------------------------------------------------------ */
/* the calls' errors                                                          */

TEST(test_catalog_errors)
{
    use_memory();
    GUID a = gid(1), b = gid(2);
    CHECK_ERR(WSCInstallNameSpaceEx(W("a"), W(""), NS_DNS, 1, NULL, NULL), WSAEFAULT);
    CHECK(strstr(nspv2_catalog_error_text(), "NULL") != NULL);
    CHECK_OK(WSCInstallNameSpaceEx(W("a"), W(""), NS_DNS, 1, &a, NULL));
    CHECK(nspv2_catalog_error_text()[0] == 0);
    CHECK_ERR(WSCInstallNameSpaceEx(W("a"), W(""), NS_DNS, 1, &a, NULL), WSANO_RECOVERY);
    CHECK(strstr(nspv2_catalog_error_text(), "already installed") != NULL);
    /* identifier limit: 1024 characters fit, 1025 do not */
    static WCHAR longid[NSPV2_CATALOG_MAX_IDENTIFIER_CHARS + 2];
    for (size_t i = 0; i < NSPV2_CATALOG_MAX_IDENTIFIER_CHARS + 1; i++)
        longid[i] = 'x';
    longid[NSPV2_CATALOG_MAX_IDENTIFIER_CHARS + 1] = 0;
    CHECK_ERR(WSCInstallNameSpaceEx(longid, NULL, NS_DNS, 1, &b, NULL), WSAEINVAL);
    longid[NSPV2_CATALOG_MAX_IDENTIFIER_CHARS] = 0;
    CHECK_OK(WSCInstallNameSpaceEx(longid, NULL, NS_DNS, 1, &b, NULL));
    CHECK_OK(WSCUnInstallNameSpace(&b));
    /* blob limit, NULL data */
    static unsigned char big[NSPV2_CATALOG_MAX_BLOB_BYTES + 1];
    BLOB huge = {NSPV2_CATALOG_MAX_BLOB_BYTES + 1, big};
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, &huge), WSAEINVAL);
    huge.cbSize = NSPV2_CATALOG_MAX_BLOB_BYTES;
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, &huge));
    CHECK_OK(WSCUnInstallNameSpace(&b));
    BLOB nodata = {4, NULL};
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, &nodata), WSAEINVAL);
    /* NS_EMAIL blobs: checked, and 4-byte aligned */
    cat_blob_buf bb;
    BLOB good = one_domain(&bb, "example.com", NSPV2_LEVEL_PRIMARY, 0);
    BLOB bad = good;
    put32(bb.bytes, 2); /* dwVersion */
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_EMAIL, 1, &b, &bad), WSAEINVAL);
    CHECK(strstr(nspv2_catalog_error_text(), "dwVersion is 2, not 1") != NULL);
    put32(bb.bytes, 1);
    static union {
        uint32_t align;
        unsigned char bytes[1100];
    } shifted;
    memcpy(shifted.bytes + 2, good.pBlobData, good.cbSize);
    BLOB misaligned = {good.cbSize, shifted.bytes + 2};
    CHECK(nspv2_email_blob_check(misaligned.pBlobData, misaligned.cbSize, NULL, 0) == NO_ERROR);
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_EMAIL, 1, &b, &misaligned), WSAEINVAL);
    CHECK(strstr(nspv2_catalog_error_text(), "aligned") != NULL);
    BLOB empty = {0, NULL};
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_EMAIL, 1, &b, &empty), WSAEINVAL);
    CHECK_OK(nspv2_host_installed(&a, NULL, NULL, NULL, NULL));
    CHECK_ERR(nspv2_host_installed(&b, NULL, NULL, NULL, NULL), WSAEINVAL);
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_EMAIL, 1, &b, &good));
    /* another namespace's blob is opaque */
    CHECK_OK(WSCUnInstallNameSpace(&b));
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, &bad));
    /* uninstall, enable */
    CHECK_ERR(WSCUnInstallNameSpace(NULL), WSAEFAULT);
    GUID c = gid(3);
    CHECK_ERR(WSCUnInstallNameSpace(&c), WSAEINVAL);
    CHECK(strstr(nspv2_catalog_error_text(), "not installed") != NULL);
    CHECK_ERR(WSCEnableNSProvider(NULL, TRUE), WSAEFAULT);
    CHECK_ERR(WSCEnableNSProvider(&c, TRUE), WSAEINVAL);
    CHECK_OK(WSCEnableNSProvider(&a, TRUE)); /* already so */
    CHECK_OK(WSCEnableNSProvider(&a, FALSE));
    CHECK_OK(WSCEnableNSProvider(&a, FALSE));
    union {
        WSANAMESPACE_INFOEXW e[4];
        unsigned char bytes[8192];
    } buf;
    DWORD len = sizeof buf;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, buf.e) == 2);
    CHECK(buf.e[0].fActive == 0 && buf.e[1].fActive != 0);
    CHECK_OK(WSCEnableNSProvider(&a, 7)); /* any non-zero BOOL */
    len = sizeof buf;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, buf.e) == 2);
    CHECK(buf.e[0].fActive == 1);
    CHECK_ERR(WSAEnumNameSpaceProvidersExW(NULL, buf.e), WSAEFAULT);
    CHECK_OK(WSCUnInstallNameSpace(&a));
    CHECK_ERR(WSCUnInstallNameSpace(&a), WSAEINVAL);
    CHECK_OK(WSCInstallNameSpaceEx(W("a"), NULL, NS_DNS, 1, &a, NULL)); /* again, at the end */
    len = sizeof buf;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, buf.e) == 2);
    CHECK(memcmp(&buf.e[0].NSProviderId, &b, sizeof b) == 0);
    CHECK(memcmp(&buf.e[1].NSProviderId, &a, sizeof a) == 0);
    /* a full catalog */
    use_memory();
    for (uint32_t i = 0; i < NSPV2_CATALOG_MAX_PROVIDERS; i++) {
        GUID g = gid(1000 + i);
        if (WSCInstallNameSpaceEx(NULL, NULL, NS_DNS, 1, &g, NULL) != NO_ERROR) {
            CHECK(!"install below the limit");
            break;
        }
    }
    GUID over = gid(5000);
    CHECK_ERR(WSCInstallNameSpaceEx(NULL, NULL, NS_DNS, 1, &over, NULL), WSA_NOT_ENOUGH_MEMORY);
    use_memory();
}

/* ------------------------------------------------------------------------ */
/* WSAEnumNameSpaceProvidersExW at every size                                 */

static void enum_every_size(size_t expect_n)
{
    DWORD need = 0;
    CHECK_ERR(WSAEnumNameSpaceProvidersExW(&need, NULL), WSAEFAULT);
    CHECK(need >= expect_n * sizeof(WSANAMESPACE_INFOEXW));
    unsigned char *buf = malloc((size_t)need + 64);
    unsigned char *keep = malloc((size_t)need + 64);
    if (!buf || !keep) {
        CHECK(!"memory");
        free(buf);
        free(keep);
        return;
    }
    /* WSANAMESPACE_INFOEXW needs pointer alignment: malloc gives it */
    int bad = 0;
    for (DWORD size = 0; size < need; size++) {
        memset(buf, 0xA5, (size_t)need + 64);
        DWORD len = size;
        INT r = WSAEnumNameSpaceProvidersExW(&len, (LPWSANAMESPACE_INFOEXW)(void *)buf);
        int e = WSAGetLastError();
        size_t untouched = 0;
        while (untouched < (size_t)need + 64 && buf[untouched] == 0xA5)
            untouched++;
        if (r != SOCKET_ERROR || e != WSAEFAULT || len != need || untouched != (size_t)need + 64)
            bad++;
    }
    CHECK(bad == 0);
    memset(buf, 0xA5, (size_t)need + 64);
    memset(keep, 0xA5, (size_t)need + 64);
    DWORD len = need;
    INT r = WSAEnumNameSpaceProvidersExW(&len, (LPWSANAMESPACE_INFOEXW)(void *)buf);
    CHECK(r == (INT)expect_n);
    CHECK(memcmp(buf + need, keep + need, 64) == 0); /* nothing past need */
    const WSANAMESPACE_INFOEXW *e = (const WSANAMESPACE_INFOEXW *)(const void *)buf;
    for (size_t i = 0; r > 0 && i < (size_t)r; i++) {
        CHECK(e[i].lpszIdentifier != NULL);
        size_t chars = 0;
        if (e[i].lpszIdentifier && in_buffer(e[i].lpszIdentifier, 2, buf, need)) {
            CHECK(((uintptr_t)e[i].lpszIdentifier & 1u) == 0);
            while (in_buffer(e[i].lpszIdentifier + chars, 2, buf, need) &&
                   e[i].lpszIdentifier[chars])
                chars++;
            CHECK(in_buffer(e[i].lpszIdentifier, (chars + 1) * 2, buf, need));
            CHECK((const unsigned char *)e[i].lpszIdentifier >=
                  buf + expect_n * sizeof(WSANAMESPACE_INFOEXW));
        } else {
            CHECK(!"identifier inside the buffer");
        }
        if (e[i].ProviderSpecific.cbSize) {
            CHECK(in_buffer(e[i].ProviderSpecific.pBlobData, e[i].ProviderSpecific.cbSize, buf,
                            need));
            CHECK(((uintptr_t)e[i].ProviderSpecific.pBlobData % sizeof(void *)) == 0);
        } else {
            CHECK(e[i].ProviderSpecific.pBlobData == NULL);
        }
    }
    /* a larger buffer: the same, and the length left as given */
    len = need + 40;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, (LPWSANAMESPACE_INFOEXW)(void *)buf) ==
          (INT)expect_n);
    free(buf);
    free(keep);
}

TEST(test_catalog_enum_sizes)
{
    use_memory();
    DWORD len = 0;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, NULL) == 0); /* empty: nothing needed */
    CHECK(len == 0);
    GUID a = gid(11), b = gid(12), c = gid(13), d = gid(14);
    unsigned char odd[3] = {1, 2, 3};
    BLOB oddb = {3, odd};
    cat_blob_buf bb;
    BLOB email = one_domain(&bb, "example.com", NSPV2_LEVEL_PRIMARY, 1);
    BLOB zero = {0, NULL};
    CHECK_OK(WSCInstallNameSpaceEx(W("odd blob"), NULL, NS_DNS, 3, &a, &oddb));
    CHECK_OK(WSCInstallNameSpaceEx(NULL, NULL, NS_NLA, 1, &b, NULL));
    CHECK_OK(WSCInstallNameSpaceEx(W("mail"), NULL, NS_EMAIL, 2, &c, &email));
    CHECK_OK(WSCInstallNameSpaceEx(W(""), NULL, NS_DNS, 1, &d, &zero));
    enum_every_size(4);
    union {
        WSANAMESPACE_INFOEXW e[4];
        unsigned char bytes[4096];
    } buf;
    len = sizeof buf;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, buf.e) == 4);
    CHECK(memcmp(&buf.e[0].NSProviderId, &a, sizeof a) == 0 && buf.e[0].dwVersion == 3 &&
          buf.e[0].dwNameSpace == NS_DNS && buf.e[0].fActive == 1);
    CHECK(wstr_is(buf.e[0].lpszIdentifier, "odd blob"));
    CHECK(buf.e[0].ProviderSpecific.cbSize == 3 &&
          memcmp(buf.e[0].ProviderSpecific.pBlobData, odd, 3) == 0);
    CHECK(wstr_is(buf.e[1].lpszIdentifier, "")); /* installed with NULL */
    CHECK(buf.e[1].ProviderSpecific.cbSize == 0 && buf.e[1].ProviderSpecific.pBlobData == NULL);
    CHECK(wstr_is(buf.e[2].lpszIdentifier, "mail") && buf.e[2].dwNameSpace == NS_EMAIL);
    CHECK(buf.e[2].ProviderSpecific.cbSize == email.cbSize &&
          memcmp(buf.e[2].ProviderSpecific.pBlobData, email.pBlobData, email.cbSize) == 0);
    CHECK(wstr_is(buf.e[3].lpszIdentifier, ""));
    use_memory();
}

/* ------------------------------------------------------------------------ */
/* nspv2_host_installed*, location                                             */

TEST(test_catalog_installed)
{
    use_memory();
    GUID a = gid(21), b = gid(22);
    unsigned char bytes[5] = {9, 8, 7, 6, 5};
    BLOB bl = {5, bytes};
    CHECK_OK(WSCInstallNameSpaceEx(W("first"), NULL, NS_DNS, 1, &a, &bl));
    CHECK_OK(WSCInstallNameSpaceEx(NULL, NULL, NS_NLA, 1, &b, NULL));
    DWORD ns = 0;
    uint32_t has = 9, size = 0;
    CHECK_OK(nspv2_host_installed(&a, &ns, &has, NULL, &size));
    CHECK(ns == NS_DNS && has == 1 && size == 5);
    unsigned char got[8] = {0};
    size = 4;
    CHECK_ERR(nspv2_host_installed(&a, NULL, NULL, got, &size), WSAEFAULT);
    CHECK(size == 5 && got[0] == 0);
    size = 8;
    CHECK_OK(nspv2_host_installed(&a, NULL, NULL, got, &size));
    CHECK(size == 5 && memcmp(got, bytes, 5) == 0);
    CHECK_OK(nspv2_host_installed(&b, &ns, &has, NULL, &size));
    CHECK(ns == NS_NLA && has == 0 && size == 0);
    CHECK_ERR(nspv2_host_installed(NULL, NULL, NULL, NULL, NULL), WSAEFAULT);
    GUID c = gid(23);
    CHECK_ERR(nspv2_host_installed(&c, NULL, NULL, NULL, NULL), WSAEINVAL);
    uint32_t chars = 0;
    CHECK_OK(nspv2_host_installed_identifier(&a, NULL, &chars));
    CHECK(chars == 6);
    WCHAR name[8];
    chars = 5;
    CHECK_ERR(nspv2_host_installed_identifier(&a, name, &chars), WSAEFAULT);
    CHECK(chars == 6);
    CHECK_OK(nspv2_host_installed_identifier(&a, name, &chars));
    CHECK(wstr_is(name, "first"));
    chars = 8;
    CHECK_OK(nspv2_host_installed_identifier(&b, name, &chars));
    CHECK(chars == 1 && name[0] == 0);
    CHECK_ERR(nspv2_host_installed_identifier(&a, name, NULL), WSAEFAULT);
    CHECK_ERR(nspv2_host_installed_identifier(NULL, name, &chars), WSAEFAULT);
    CHECK_ERR(nspv2_host_installed_identifier(&c, name, &chars), WSAEINVAL);
    use_memory();
}

TEST(test_catalog_location)
{
    use_memory();
    char buf[64];
    uint32_t size = 0;
    CHECK_ERR(nspv2_catalog_location(buf, NULL), WSAEFAULT);
    CHECK_ERR(nspv2_catalog_location(NULL, &size), WSAEFAULT);
    CHECK(size == sizeof NSPV2_CATALOG_MEMORY);
    size = sizeof NSPV2_CATALOG_MEMORY - 1;
    CHECK_ERR(nspv2_catalog_location(buf, &size), WSAEFAULT);
    size = sizeof NSPV2_CATALOG_MEMORY;
    CHECK_OK(nspv2_catalog_location(buf, &size));
    CHECK(strcmp(buf, NSPV2_CATALOG_MEMORY) == 0);
    static char longpath[70000];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    CHECK_ERR(nspv2_catalog_set_path(longpath), WSAEINVAL);
    CHECK(nspv2_catalog_error_text()[0] != 0);
    CHECK_ERR(nspv2_catalog_set_path(""), WSAEINVAL);
#ifdef _WIN32
    /* Windows builds: the memory only */
    CHECK_ERR(nspv2_catalog_set_path("C:\\catalog"), WSAEINVAL);
    CHECK_OK(nspv2_catalog_set_path(NULL));
    size = sizeof buf;
    CHECK_OK(nspv2_catalog_location(buf, &size));
    CHECK(strcmp(buf, NSPV2_CATALOG_MEMORY) == 0);
#else
    /* the default resolution, made again at every call */
    const char *saved_names[3] = {"NSPV2_CATALOG", "XDG_CONFIG_HOME", "HOME"};
    char *saved[3];
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(saved_names[i]);
        saved[i] = v ? strdup(v) : NULL;
    }
    char path[256];
    CHECK_OK(nspv2_catalog_set_path(NULL));
    setenv("NSPV2_CATALOG", "/nowhere/a/catalog", 1);
    size = sizeof path;
    CHECK_OK(nspv2_catalog_location(path, &size));
    CHECK(strcmp(path, "/nowhere/a/catalog") == 0 && size == strlen(path) + 1);
    unsetenv("NSPV2_CATALOG");
    setenv("XDG_CONFIG_HOME", "/nowhere/xdg", 1);
    size = sizeof path;
    CHECK_OK(nspv2_catalog_location(path, &size));
    CHECK(strcmp(path, "/nowhere/xdg/nspv2/catalog") == 0);
    unsetenv("XDG_CONFIG_HOME");
    setenv("HOME", "/nowhere/home", 1);
    size = sizeof path;
    CHECK_OK(nspv2_catalog_location(path, &size));
    CHECK(strcmp(path, "/nowhere/home/.config/nspv2/catalog") == 0);
    setenv("NSPV2_CATALOG", NSPV2_CATALOG_MEMORY, 1);
    size = sizeof path;
    CHECK_OK(nspv2_catalog_location(path, &size));
    CHECK(strcmp(path, NSPV2_CATALOG_MEMORY) == 0);
    /* a chosen path wins over the environment */
    CHECK_OK(nspv2_catalog_set_path("/nowhere/chosen"));
    size = sizeof path;
    CHECK_OK(nspv2_catalog_location(path, &size));
    CHECK(strcmp(path, "/nowhere/chosen") == 0);
    for (int i = 0; i < 3; i++) {
        if (saved[i])
            setenv(saved_names[i], saved[i], 1);
        else
            unsetenv(saved_names[i]);
        free(saved[i]);
    }
#endif
    use_memory();
}

/* ------------------------------------------------------------------------ */
/* the NS_EMAIL blob check: nspv2.sdk.nsemail's words                         */

static void expect_problem(const unsigned char *blob, uint32_t size, const char *want)
{
    char why[256];
    memset(why, 'z', sizeof why);
    INT r = nspv2_email_blob_check(blob, size, why, sizeof why);
    if (!want) {
        CHECK(r == NO_ERROR && why[0] == 0);
        return;
    }
    CHECK(r == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL);
    CHECK(strcmp(why, want) == 0);
    if (strcmp(why, want) != 0)
        printf("  got  %s\n  want %s\n", why, want);
}

TEST(test_catalog_blob_check)
{
    cat_blob_buf bb;
    const char *two[2] = {"example.com", "example.org"};
    unsigned lv[2] = {2, 2};
    BLOB b = cat_blob(&bb, 0, 2, two, lv);
    CHECK(b.cbSize == 100);
    expect_problem(b.pBlobData, b.cbSize, NULL);
    /* the nsemail docstring's example: data[:-4] + b"x" */
    unsigned char cut[100];
    memcpy(cut, b.pBlobData, 96);
    cut[96] = 'x';
    expect_problem(cut, 97,
                   "domain #2: its name (11 characters at offset 76) ends past the blob (97 bytes)");
    expect_problem(b.pBlobData, 19,
                   "the blob is 19 bytes, shorter than NAPI_PROVIDER_INSTALLATION_BLOB (20)");
    CHECK(nspv2_email_blob_check(NULL, 0, NULL, 0) == SOCKET_ERROR);
    unsigned char w[128];
#define FRESH() memcpy(w, b.pBlobData, b.cbSize)
    FRESH();
    put32(w + 4, 3);
    expect_problem(w, 100, "dwProviderType is 3, not 1 (application) or 2 (service)");
    FRESH();
    put32(w + 12, 0);
    expect_problem(w, 100, "cDomains is 0 but OffsetFirstDomain is 20, not 0");
    FRESH();
    put32(w + 16, 0);
    expect_problem(w, 100, "cDomains is 2 but OffsetFirstDomain is 0");
    FRESH();
    put32(w + 16, 22);
    expect_problem(w, 100, "domain #1 at offset 22 (OffsetFirstDomain): offset 22 is not a "
                           "multiple of 4");
    FRESH();
    put32(w + 16, 16);
    expect_problem(w, 100, "domain #1 at offset 16 (OffsetFirstDomain): offset 16 overlaps the "
                           "20-byte header");
    FRESH();
    put32(w + 16, 88);
    expect_problem(w, 100, "domain #1 at offset 88 (OffsetFirstDomain): ends past the blob (100 "
                           "bytes)");
    FRESH();
    put32(w + 20 + 8, 20); /* domain #1 -> itself */
    expect_problem(w, 100, "domain #2 at offset 20 (OffsetNextDomainDescription of domain #1): "
                           "a loop, back to domain #1");
    FRESH();
    put32(w + 20, 3);
    expect_problem(w, 100, "domain #1: AuthLevel 3 is not 0, 1 or 2 (NAPI_PROVIDER_LEVEL)");
    FRESH();
    put32(w + 20 + 4, 0);
    expect_problem(w, 100, "domain #1: cchDomainName is 0 (an empty name)");
    FRESH();
    put32(w + 20 + 12, 53);
    expect_problem(w, 100, "domain #1: OffsetThisDomainName 53 is not a multiple of 2");
    FRESH();
    put32(w + 20 + 12, 10);
    expect_problem(w, 100, "domain #1: OffsetThisDomainName 10 overlaps the 20-byte header");
    FRESH();
    put32(w + 20 + 4, 12);
    expect_problem(w, 100, "domain #1: cchDomainName is 12 but the name ends after 11 "
                           "characters");
    FRESH();
    put32(w + 20 + 4, 10);
    expect_problem(w, 100, "domain #1: cchDomainName is 10 but the name goes on (no NUL after "
                           "10 characters)");
    FRESH();
    put32(w + 20 + 8, 0);
    expect_problem(w, 100, "cDomains is 2 but the chain ends after 1 domain(s)");
    FRESH();
    put32(w + 12, 1);
    expect_problem(w, 100, "domain #1, the last of cDomains 1: OffsetNextDomainDescription is "
                           "36, not 0");
    /* no domains, wildcard: valid */
    BLOB none = cat_blob(&bb, 1, 0, NULL, NULL);
    expect_problem(none.pBlobData, none.cbSize, NULL);
    /* why NULL or tiny: still the code */
    char tiny[4];
    CHECK(nspv2_email_blob_check(b.pBlobData, 19, tiny, sizeof tiny) == SOCKET_ERROR &&
          strlen(tiny) == 3);
    CHECK(nspv2_email_blob_check(b.pBlobData, 19, NULL, 100) == SOCKET_ERROR);
#undef FRESH
}

/* ------------------------------------------------------------------------ */
/* route order                                                                */

typedef struct avail_set {
    GUID ids[16];
    size_t n;
} avail_set;

static int avail_in(const GUID *id, void *ctx)
{
    const avail_set *s = ctx;
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(&s->ids[i], id, sizeof *id) == 0)
            return 1;
    return 0;
}

/* The route for (ns, provider, name) as indexes into ids (want: -1
 * terminated); err: the expected error (0 for a route). */
static void expect_route(const GUID *ids, DWORD ns, const GUID *provider, const char *name,
                         avail_set *avail, int err, const int *want, int line)
{
    nspv2_catalog *c = NULL;
    CHECK(nspv2_catalog_snapshot(&c) == 0);
    GUID *out = NULL;
    size_t n = 0;
    int rc = nspv2_route_order(c, ns, provider, name ? W(name) : NULL, avail_in, avail, &out, &n);
    int ok = rc == err;
    if (ok && !err) {
        size_t k = 0;
        while (want[k] >= 0)
            k++;
        ok = n == k;
        for (size_t i = 0; ok && i < k; i++)
            ok = memcmp(&out[i], &ids[want[i]], sizeof(GUID)) == 0;
    } else if (ok) {
        ok = out == NULL && n == 0 && nspv2_catalog_error()[0] != 0;
    }
    checks_run++;
    if (!ok) {
        checks_failed++;
        printf("FAIL %s (%s:%d): route for %s -> %d,", current_test, __FILE__, line,
               name ? name : "(NULL)", rc);
        for (size_t i = 0; i < n; i++)
            for (int j = 0; j < 16; j++)
                if (memcmp(&out[i], &ids[j], sizeof(GUID)) == 0)
                    printf(" %d", j);
        printf("\n");
    }
    free(out);
    nspv2_catalog_release(c);
}

#define ROUTE(ns, prov, name, err, ...)                                                  \
    do {                                                                                 \
        static const int want_[] = {__VA_ARGS__};                                        \
        expect_route(ids, ns, prov, name, &av, err, want_, __LINE__);                    \
    } while (0)

TEST(test_catalog_route_order)
{
    use_memory();
    GUID ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = gid(100 + (uint32_t)i);
    cat_blob_buf bb;
    BLOB b;
    /* catalog order: 0 wildcard (no domains), 1 secondary example.com,
     * 2 primary example.com, 3 blobless NS_EMAIL, 4 NS_DNS, 5 primary
     * Other.Org. (trailing dot), 6 level none example.com, 7 secondary
     * example.com (disabled), 8 primary example.com (not available),
     * 9 wildcard with example.com at level none */
    b = one_domain(&bb, NULL, 0, 1);
    CHECK_OK(WSCInstallNameSpaceEx(W("p0"), NULL, NS_EMAIL, 1, &ids[0], &b));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_SECONDARY, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p1"), NULL, NS_EMAIL, 1, &ids[1], &b));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_PRIMARY, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p2"), NULL, NS_EMAIL, 1, &ids[2], &b));
    CHECK_OK(WSCInstallNameSpaceEx(W("p3"), NULL, NS_EMAIL, 1, &ids[3], NULL));
    CHECK_OK(WSCInstallNameSpaceEx(W("p4"), NULL, NS_DNS, 1, &ids[4], NULL));
    b = one_domain(&bb, "Other.Org.", NSPV2_LEVEL_PRIMARY, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p5"), NULL, NS_EMAIL, 1, &ids[5], &b));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_NONE, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p6"), NULL, NS_EMAIL, 1, &ids[6], &b));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_SECONDARY, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p7"), NULL, NS_EMAIL, 1, &ids[7], &b));
    CHECK_OK(WSCEnableNSProvider(&ids[7], FALSE));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_PRIMARY, 0);
    CHECK_OK(WSCInstallNameSpaceEx(W("p8"), NULL, NS_EMAIL, 1, &ids[8], &b));
    b = one_domain(&bb, "example.com", NSPV2_LEVEL_NONE, 1);
    CHECK_OK(WSCInstallNameSpaceEx(W("p9"), NULL, NS_EMAIL, 1, &ids[9], &b));
    avail_set av = {{ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7], ids[9]}, 9};

    /* primary, then secondary, then wildcard and blobless, catalog order in each */
    ROUTE(NS_EMAIL, NULL, "alice@example.com", 0, 2, 1, 0, 3, 9, -1);
    ROUTE(NS_EMAIL, NULL, "alice@EXAMPLE.Com", 0, 2, 1, 0, 3, 9, -1); /* ASCII case */
    ROUTE(NS_EMAIL, NULL, "alice@example.com.", 0, 2, 1, 0, 3, 9, -1); /* trailing dot */
    ROUTE(NS_EMAIL, NULL, "a@b@example.com", 0, 2, 1, 0, 3, 9, -1);   /* the last '@' */
    ROUTE(NS_EMAIL, NULL, "alice@example.com..", 0, 0, 3, 9, -1);    /* one dot only */
    ROUTE(NS_EMAIL, NULL, "bob@other.org", 0, 5, 0, 3, 9, -1);       /* its dot ignored */
    ROUTE(NS_EMAIL, NULL, "bob@unknown.net", 0, 0, 3, 9, -1);        /* wildcards only */
    ROUTE(NS_EMAIL, NULL, "no domain", 0, 0, 3, 9, -1);
    ROUTE(NS_EMAIL, NULL, "nobody@", 0, 0, 3, 9, -1);
    ROUTE(NS_EMAIL, NULL, "nobody@.", 0, 0, 3, 9, -1);
    ROUTE(NS_EMAIL, NULL, NULL, 0, 0, 3, 9, -1);
    /* NS_ALL: another namespace ranks with the secondaries */
    ROUTE(NS_ALL, NULL, "alice@example.com", 0, 2, 1, 4, 0, 3, 9, -1);
    ROUTE(NS_ALL, NULL, NULL, 0, 4, 0, 3, 9, -1);
    /* another namespace: its providers only */
    ROUTE(NS_DNS, NULL, "alice@example.com", 0, 4, -1);
    ROUTE(NS_NLA, NULL, "x", WSASERVICE_NOT_FOUND, -1);
    /* a named provider */
    ROUTE(NS_EMAIL, &ids[1], "bob@unknown.net", 0, 1, -1); /* not routed by domain: still it */
    ROUTE(NS_ALL, &ids[4], NULL, 0, 4, -1);
    ROUTE(NS_EMAIL, &ids[4], NULL, WSASERVICE_NOT_FOUND, -1); /* another namespace */
    ROUTE(NS_EMAIL, &ids[7], NULL, WSASERVICE_NOT_FOUND, -1); /* disabled */
    ROUTE(NS_EMAIL, &ids[8], NULL, WSAEINVAL, -1);            /* not available */
    GUID stranger = gid(999);
    ROUTE(NS_EMAIL, &stranger, NULL, WSAEINVAL, -1); /* not installed */
    /* disabling and enabling */
    CHECK_OK(WSCEnableNSProvider(&ids[2], FALSE));
    ROUTE(NS_EMAIL, NULL, "alice@example.com", 0, 1, 0, 3, 9, -1);
    CHECK_OK(WSCEnableNSProvider(&ids[2], TRUE));
    CHECK_OK(WSCEnableNSProvider(&ids[7], TRUE));
    ROUTE(NS_EMAIL, NULL, "alice@example.com", 0, 2, 1, 7, 0, 3, 9, -1);
    /* becoming available */
    av.ids[av.n++] = ids[8];
    ROUTE(NS_EMAIL, NULL, "alice@example.com", 0, 2, 8, 1, 7, 0, 3, 9, -1);
    /* nothing available */
    av.n = 0;
    ROUTE(NS_EMAIL, NULL, "alice@example.com", WSASERVICE_NOT_FOUND, -1);
    ROUTE(NS_ALL, NULL, NULL, WSASERVICE_NOT_FOUND, -1);
    /* uninstalled: gone from routes */
    av.n = 0;
    for (int i = 0; i < 10; i++)
        av.ids[av.n++] = ids[i];
    CHECK_OK(WSCUnInstallNameSpace(&ids[2]));
    ROUTE(NS_EMAIL, NULL, "alice@example.com", 0, 8, 1, 7, 0, 3, 9, -1);
    ROUTE(NS_EMAIL, &ids[2], NULL, WSAEINVAL, -1);
    /* avail NULL: every installed provider */
    nspv2_catalog *c;
    CHECK(nspv2_catalog_snapshot(&c) == 0);
    GUID *out = NULL;
    size_t n = 0;
    CHECK(nspv2_route_order(c, NS_EMAIL, NULL, W("x@example.com"), NULL, NULL, &out, &n) == 0);
    CHECK(n == 6);
    free(out);
    nspv2_catalog_release(c);
    /* an empty catalog */
    use_memory();
    ROUTE(NS_ALL, NULL, NULL, WSASERVICE_NOT_FOUND, -1);
    use_memory();
}

/* ------------------------------------------------------------------------ */
/* NextEx stepping                                                            */

TEST(test_catalog_stepping)
{
    nspv2_route_cursor c;
    /* authoritative: the first part that answers is the answer */
    nspv2_route_cursor_init(&c, 3, 0);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 1);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN && c.cur == 1);
    CHECK(nspv2_route_step(&c, WSAEFAULT) == NSPV2_STEP_RETURN && c.cur == 1);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN && c.cur == 1);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_DONE && c.cur == 3);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE);
    /* WSAENOMORE is the same end */
    nspv2_route_cursor_init(&c, 2, 0);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN);
    CHECK(nspv2_route_step(&c, WSAENOMORE) == NSPV2_STEP_DONE && c.cur == 2);
    /* LUP_NON_AUTHORITATIVE: every part */
    nspv2_route_cursor_init(&c, 3, LUP_NON_AUTHORITATIVE);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN && c.part_answered);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 1 &&
          !c.part_answered);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 2);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 3);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE);
    /* errors: recorded (the first kept), next part */
    nspv2_route_cursor_init(&c, 3, 0);
    CHECK(nspv2_route_step(&c, WSAECONNRESET) == NSPV2_STEP_NEXT_PART && c.cur == 1);
    CHECK(nspv2_route_step(&c, WSANO_RECOVERY) == NSPV2_STEP_NEXT_PART && c.cur == 2);
    CHECK(c.first_error == WSAECONNRESET);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_DONE);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE); /* a part answered */
    /* every part failed: the first error */
    nspv2_route_cursor_init(&c, 2, 0);
    CHECK(nspv2_route_step(&c, WSAECONNRESET) == NSPV2_STEP_NEXT_PART);
    CHECK(nspv2_route_step(&c, WSANO_RECOVERY) == NSPV2_STEP_NEXT_PART && c.cur == 2);
    CHECK(nspv2_route_final(&c) == WSAECONNRESET);
    /* a part reached its end without results, another failed: the end */
    nspv2_route_cursor_init(&c, 2, 0);
    CHECK(nspv2_route_step(&c, WSANO_RECOVERY) == NSPV2_STEP_NEXT_PART);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 2);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE);
    /* an error after results of the same part: recorded, next part */
    nspv2_route_cursor_init(&c, 2, 0);
    CHECK(nspv2_route_step(&c, NO_ERROR) == NSPV2_STEP_RETURN);
    CHECK(nspv2_route_step(&c, WSAECONNRESET) == NSPV2_STEP_NEXT_PART && c.cur == 1);
    CHECK(nspv2_route_step(&c, WSA_E_NO_MORE) == NSPV2_STEP_NEXT_PART && c.cur == 2);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE);
    /* cancellation: returned, the part kept */
    nspv2_route_cursor_init(&c, 2, 0);
    CHECK(nspv2_route_step(&c, WSA_E_CANCELLED) == NSPV2_STEP_RETURN && c.cur == 0);
    CHECK(nspv2_route_step(&c, WSAECANCELLED) == NSPV2_STEP_RETURN && c.cur == 0);
    CHECK(c.first_error == 0);
    /* no parts */
    nspv2_route_cursor_init(&c, 0, 0);
    CHECK(nspv2_route_final(&c) == WSA_E_NO_MORE);
}

/* ------------------------------------------------------------------------ */
/* the file (POSIX)                                                           */

#if !defined(_WIN32)

static char tmp_root[512];

static int make_tmp_root(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/nspv2-catalog-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp_root)) {
        CHECK(!"mkdtemp");
        return -1;
    }
    return 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_tree(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(text, 1, len, f) == len);
        fclose(f);
    }
}

/* Temporary files "<catalog>.tmp.*" in the catalog's folder. */
static int count_temps(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".tmp."))
            n++;
    if (d)
        closedir(d);
    return n;
}

TEST(test_catalog_file_round_trip)
{
    if (make_tmp_root())
        return;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/deep/er", tmp_root);
    snprintf(path, sizeof path, "%s/catalog", dir);
    CHECK_OK(nspv2_catalog_set_path(path));
    /* missing file: an empty catalog, and reading creates nothing */
    DWORD len = 0;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, NULL) == 0);
    struct stat st;
    CHECK(stat(dir, &st) != 0);
    GUID a = gid(201), b = gid(202), c = gid(203), d = gid(204);
    /* "nspv2 😀" (non-BMP: a surrogate pair) */
    WCHAR smile[] = {'n', 's', 'p', 'v', '2', ' ', 0xD83D, 0xDE00, 0};
    unsigned char bytes[6] = {0, 1, 0xfe, 0xff, 0x80, 0x7f};
    BLOB bl = {6, bytes}, zero = {0, NULL};
    cat_blob_buf bb;
    BLOB email = one_domain(&bb, "example.com", NSPV2_LEVEL_SECONDARY, 1);
    CHECK_OK(WSCInstallNameSpaceEx(smile, NULL, NS_DNS, 7, &a, &bl));
    CHECK_OK(WSCInstallNameSpaceEx(W(""), NULL, NS_NLA, 4294967295u, &b, &zero));
    CHECK_OK(WSCInstallNameSpaceEx(NULL, NULL, NS_EMAIL, 0, &c, NULL));
    CHECK_OK(WSCInstallNameSpaceEx(W("mail"), NULL, NS_EMAIL, 1, &d, &email));
    CHECK_OK(WSCEnableNSProvider(&b, FALSE));
    CHECK_ERR(WSCInstallNameSpaceEx(W("again"), NULL, NS_DNS, 1, &a, NULL), WSANO_RECOVERY);
    /* the folder 0700 (parents too), the file and the lock 0600 */
    CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
    char parent[650];
    snprintf(parent, sizeof parent, "%s/deep", tmp_root);
    CHECK(stat(parent, &st) == 0 && (st.st_mode & 0777) == 0700);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    char lockp[720];
    snprintf(lockp, sizeof lockp, "%s.lock", path);
    CHECK(stat(lockp, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(count_temps(dir) == 0);
    /* the text, as documented */
    size_t flen = 0;
    char *text = read_file(path, &flen);
    CHECK(text != NULL);
    if (text) {
        static const char want[] =
            "nspv2-catalog 1\n"
            "provider 6b0f3ad9-51c2-4e0d-9a1b-223344556677 12 7 1 "
            "006e00730070007600320020d83dde00 0001feff807f\n"
            "provider 6b0f3ada-51c2-4e0d-9a1b-223344556677 15 4294967295 0 = =\n"
            "provider 6b0f3adb-51c2-4e0d-9a1b-223344556677 37 0 1 - -\n";
        CHECK(flen > sizeof want - 1 && memcmp(text, want, sizeof want - 1) == 0);
        CHECK(flen > 6 && memcmp(text + flen - 6, "end 4\n", 6) == 0);
        free(text);
    }
    /* read back from the file (a fresh parse: drop the cache by another path) */
    char link[720];
    snprintf(link, sizeof link, "%s/../er/catalog", dir);
    CHECK_OK(nspv2_catalog_set_path(link));
    union {
        WSANAMESPACE_INFOEXW e[4];
        unsigned char bytes[4096];
    } buf;
    len = sizeof buf;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, buf.e) == 4);
    CHECK(memcmp(&buf.e[0].NSProviderId, &a, sizeof a) == 0 && buf.e[0].dwVersion == 7);
    CHECK(memcmp(buf.e[0].lpszIdentifier, smile, sizeof smile) == 0);
    CHECK(buf.e[0].ProviderSpecific.cbSize == 6 &&
          memcmp(buf.e[0].ProviderSpecific.pBlobData, bytes, 6) == 0);
    CHECK(buf.e[1].fActive == 0 && buf.e[1].dwVersion == 4294967295u &&
          buf.e[1].dwNameSpace == NS_NLA);
    CHECK(buf.e[2].fActive == 1 && buf.e[2].dwNameSpace == NS_EMAIL);
    CHECK(buf.e[3].ProviderSpecific.cbSize == email.cbSize &&
          memcmp(buf.e[3].ProviderSpecific.pBlobData, email.pBlobData, email.cbSize) == 0);
    DWORD ns;
    uint32_t has, size;
    CHECK_OK(nspv2_host_installed(&b, &ns, &has, NULL, &size));
    CHECK(has == 1 && size == 0);
    CHECK_OK(nspv2_host_installed(&c, &ns, &has, NULL, &size));
    CHECK(has == 0 && size == 0);
    WCHAR name[16];
    uint32_t chars = 16;
    CHECK_OK(nspv2_host_installed_identifier(&b, name, &chars));
    CHECK(chars == 1);
    chars = 16;
    CHECK_OK(nspv2_host_installed_identifier(&c, name, &chars));
    CHECK(chars == 1);
    enum_every_size(4);
    /* the routing fields came back from the blob */
    nspv2_catalog *cat;
    CHECK(nspv2_catalog_snapshot(&cat) == 0);
    const nspv2_cat_entry *e = nspv2_catalog_find(cat, &d);
    CHECK(e && e->email && e->wildcard && e->ndomains == 1 &&
          e->domains[0].level == NSPV2_LEVEL_SECONDARY && wstr_is(e->domains[0].name,
                                                                  "example.com"));
    nspv2_catalog_release(cat);
    /* uninstall all: "end 0" */
    CHECK_OK(WSCUnInstallNameSpace(&a));
    CHECK_OK(WSCUnInstallNameSpace(&b));
    CHECK_OK(WSCUnInstallNameSpace(&c));
    CHECK_OK(WSCUnInstallNameSpace(&d));
    text = read_file(path, &flen);
    CHECK(text && flen == strlen("nspv2-catalog 1\nend 0\n") &&
          memcmp(text, "nspv2-catalog 1\nend 0\n", flen) == 0);
    free(text);
    use_memory();
    rm_tree(tmp_root);
}

TEST(test_catalog_file_corrupt)
{
    if (make_tmp_root())
        return;
    char path[700];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    GUID a = gid(301), b = gid(302);
    unsigned char bytes[2] = {0xab, 0xcd};
    BLOB bl = {2, bytes};
    CHECK_OK(WSCInstallNameSpaceEx(W("a"), NULL, NS_DNS, 1, &a, &bl));
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, NULL));
    size_t glen = 0;
    char *good = read_file(path, &glen);
    CHECK(good != NULL);
    if (!good)
        return;
    static const struct {
        const char *text; /* NULL: the good file cut in half */
        const char *line;
    } cases[] = {
        {NULL, "line "},
        {"nspv2-catalog 1\n", "line 2: no end line"},
        {"", "line 1: no \"nspv2-catalog 1\" line"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 0061 zz\nend 1\n",
         "line 2: the blob is not lower-case hex"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 0061 -\nend 2\n",
         "line 3: the end line counts 2 providers, the file lists 1"},
        {"nspv2-catalog 1\nprovider 6B0F3C3D-51c2-4e0d-9a1b-223344556677 12 1 1 0061 -\nend 1\n",
         "line 2: the provider id"},
        {"nspv2-catalog 2\nend 0\n", "line 1: format 2"},
        {"nspv2-catalog 1\nend 0\nprovider\n", "line 3: text after the end line"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 0061 -\nend 1",
         "line 3: no line end"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 2 0061 -\nend 1\n",
         "line 2: enabled"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 006 -\nend 1\n",
         "line 2: the identifier"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 37 1 1 - 00\nend 1\n",
         "line 2: the NS_EMAIL installation blob is invalid: the blob is 1 bytes"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 - -\n"
         "provider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 - -\nend 2\n",
         "line 3: a provider listed twice"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 12 1 1 - -\r\nend 1\n",
         "line 2: a NUL or CR"},
        {"nspv2-catalog 1\nprovider 6b0f3c3d-51c2-4e0d-9a1b-223344556677 012 1 1 - -\nend 1\n",
         "line 2: the namespace"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text ? cases[i].text : good;
        size_t tl = cases[i].text ? strlen(t) : glen / 2;
        write_file(path, t, tl);
        DWORD len = 0;
        CHECK_ERR(WSAEnumNameSpaceProvidersExW(&len, NULL), WSANO_RECOVERY);
        const char *why = nspv2_catalog_error_text();
        CHECK(strstr(why, path) != NULL && strstr(why, "corrupt") != NULL);
        CHECK(strstr(why, cases[i].line) != NULL);
        if (!strstr(why, cases[i].line))
            printf("  case %zu: %s\n", i, why);
        GUID c = gid(303);
        CHECK_ERR(WSCInstallNameSpaceEx(W("c"), NULL, NS_DNS, 1, &c, NULL), WSANO_RECOVERY);
        CHECK_ERR(WSCUnInstallNameSpace(&a), WSANO_RECOVERY);
        CHECK_ERR(WSCEnableNSProvider(&a, FALSE), WSANO_RECOVERY);
        CHECK_ERR(nspv2_host_installed(&a, NULL, NULL, NULL, NULL), WSANO_RECOVERY);
        size_t now_len = 0;
        char *now = read_file(path, &now_len);
        CHECK(now && now_len == tl && memcmp(now, t, tl) == 0); /* never overwritten */
        free(now);
    }
    /* comments are fine anywhere before the end */
    static const char commented[] = "# a comment\nnspv2-catalog 1\n#\nend 0\n";
    write_file(path, commented, sizeof commented - 1);
    DWORD len = 0;
    CHECK(WSAEnumNameSpaceProvidersExW(&len, NULL) == 0);
    /* the good file again: fine */
    write_file(path, good, glen);
    len = 0;
    CHECK_ERR(WSAEnumNameSpaceProvidersExW(&len, NULL), WSAEFAULT);
    free(good);
    /* a folder where the file should be */
    char dpath[720];
    snprintf(dpath, sizeof dpath, "%s/folder", tmp_root);
    mkdir(dpath, 0700);
    CHECK_OK(nspv2_catalog_set_path(dpath));
    CHECK_ERR(WSAEnumNameSpaceProvidersExW(&len, NULL), WSANO_RECOVERY);
    /* a file where the folder should be */
    snprintf(dpath, sizeof dpath, "%s/catalog/sub/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(dpath));
    GUID c = gid(303);
    CHECK_ERR(WSCInstallNameSpaceEx(W("c"), NULL, NS_DNS, 1, &c, NULL), WSANO_RECOVERY);
    CHECK(strstr(nspv2_catalog_error_text(), "folder") != NULL);
    use_memory();
    rm_tree(tmp_root);
}

/* 8 processes install 50 providers each, at the same time. */
TEST(test_catalog_file_concurrent)
{
    if (make_tmp_root())
        return;
    char path[700];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    enum { KIDS = 8, EACH = 50 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            int failed = 0;
            for (int i = 0; i < EACH; i++) {
                GUID g = gid(10000 + (uint32_t)(k * EACH + i));
                if (WSCInstallNameSpaceEx(W("kid"), NULL, NS_DNS, 1, &g, NULL) != NO_ERROR)
                    failed++;
            }
            _exit(failed ? 1 : 0);
        }
        CHECK(kids[k] > 0);
    }
    for (int k = 0; k < KIDS; k++) {
        int status = 0;
        if (kids[k] > 0) {
            CHECK(waitpid(kids[k], &status, 0) == kids[k]);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    nspv2_catalog *c = NULL;
    CHECK(nspv2_catalog_snapshot(&c) == 0);
    if (c) {
        CHECK(c->n == KIDS * EACH);
        int missing = 0;
        for (int i = 0; i < KIDS * EACH; i++) {
            GUID g = gid(10000 + (uint32_t)i);
            if (!nspv2_catalog_find(c, &g))
                missing++;
        }
        CHECK(missing == 0);
        nspv2_catalog_release(c);
    }
    CHECK(count_temps(tmp_root) == 0);
    use_memory();
    rm_tree(tmp_root);
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
    CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0);
}

/* The reader's cache: kept while the file is unchanged, dropped when its
 * identity, size or mtime changes. */
TEST(test_catalog_file_cache)
{
    if (make_tmp_root())
        return;
    char path[700];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    GUID a = gid(401), b = gid(402);
    CHECK_OK(WSCInstallNameSpaceEx(W("a"), NULL, NS_DNS, 1, &a, NULL));
    time_t old = time(NULL) - 100;
    set_mtime(path, old, 0);
    nspv2_catalog *s1 = NULL, *s2 = NULL, *s3 = NULL;
    CHECK(nspv2_catalog_snapshot(&s1) == 0);
    CHECK(nspv2_catalog_snapshot(&s2) == 0);
    CHECK(s1 && s1 == s2); /* the cached snapshot, shared */
    nspv2_catalog_release(s2);
    /* rewritten in place (same inode), same size, mtime changed: noticed */
    size_t len = 0;
    char *text = read_file(path, &len);
    CHECK(text != NULL);
    char *en = text ? strstr(text, " 12 1 1 ") : NULL;
    CHECK(en != NULL);
    if (en) {
        en[6] = '0'; /* enabled 1 -> 0 */
        int fd = open(path, O_WRONLY);
        CHECK(fd >= 0 && write(fd, text, len) == (ssize_t)len);
        close(fd);
        set_mtime(path, old + 1, 0);
        CHECK(nspv2_catalog_snapshot(&s3) == 0);
        CHECK(s3 && s3 != s1 && s3->n == 1 && s3->entries[0].enabled == 0);
        nspv2_catalog_release(s3);
    }
    free(text);
    CHECK(s1 && s1->n == 1 && s1->entries[0].enabled == 1); /* a snapshot never changes */
    nspv2_catalog_release(s1);
    /* rewritten by a writer (rename): noticed at once */
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, NULL));
    CHECK(nspv2_catalog_snapshot(&s1) == 0);
    CHECK(s1 && s1->n == 2);
    nspv2_catalog_release(s1);
    /* a rewrite keeping the size and mtime in the same clock tick: a
     * recent file is never taken from the cache */
    CHECK_OK(WSCEnableNSProvider(&b, FALSE));
    CHECK(nspv2_catalog_snapshot(&s1) == 0);
    CHECK_OK(WSCEnableNSProvider(&b, TRUE));
    CHECK(nspv2_catalog_snapshot(&s2) == 0);
    CHECK(s1 && s2 && s1->entries[1].enabled == 0 && s2->entries[1].enabled == 1);
    nspv2_catalog_release(s1);
    nspv2_catalog_release(s2);
    /* removed: empty */
    unlink(path);
    CHECK(nspv2_catalog_snapshot(&s1) == 0);
    CHECK(s1 && s1->n == 0);
    nspv2_catalog_release(s1);
    use_memory();
    rm_tree(tmp_root);
}

/* A writer killed mid-write (NSPV2_TEST_CATALOG_PAUSE_MS: it sleeps with
 * half of the temporary file written): the catalog reads back as it was,
 * the next writer removes the stale temporary file. */
TEST(test_catalog_file_killed_writer)
{
    if (make_tmp_root())
        return;
    char path[700], tmp[760];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    GUID a = gid(501);
    CHECK_OK(WSCInstallNameSpaceEx(W("kept"), NULL, NS_DNS, 1, &a, NULL));
    size_t before_len = 0;
    char *before = read_file(path, &before_len);
    for (int round = 0; round < 3; round++) {
        pid_t kid = fork();
        if (kid == 0) {
            setenv("NSPV2_TEST_CATALOG_PAUSE_MS", "5000", 1);
            GUID g = gid(600 + (uint32_t)round);
            WSCInstallNameSpaceEx(W("killed"), NULL, NS_DNS, 1, &g, NULL);
            _exit(0);
        }
        CHECK(kid > 0);
        if (kid <= 0)
            break;
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)kid);
        struct stat st;
        int seen = 0;
        for (int i = 0; i < 400 && !seen; i++) {
            if (stat(tmp, &st) == 0 && st.st_size > 0)
                seen = 1;
            else
                nspv2_sleep_ms(10);
        }
        CHECK(seen);
        kill(kid, SIGKILL);
        int status;
        CHECK(waitpid(kid, &status, 0) == kid && WIFSIGNALED(status));
        CHECK(stat(tmp, &st) == 0); /* left behind; the previous round's was removed
                                       by this round's writer */
        CHECK(count_temps(tmp_root) == 1);
        size_t now_len = 0;
        char *now = read_file(path, &now_len);
        CHECK(now && before && now_len == before_len && memcmp(now, before, now_len) == 0);
        free(now);
        nspv2_catalog *c = NULL;
        CHECK(nspv2_catalog_snapshot(&c) == 0);
        CHECK(c && c->n == 1);
        nspv2_catalog_release(c);
    }
    GUID b = gid(502);
    CHECK_OK(WSCInstallNameSpaceEx(W("next"), NULL, NS_DNS, 1, &b, NULL));
    CHECK(count_temps(tmp_root) == 0);
    nspv2_catalog *c = NULL;
    CHECK(nspv2_catalog_snapshot(&c) == 0);
    CHECK(c && c->n == 2);
    nspv2_catalog_release(c);
    free(before);
    use_memory();
    rm_tree(tmp_root);
}

/* Milliseconds since start (CLOCK_MONOTONIC). */
static uint64_t ms_since(uint64_t start_ns) { return (nspv2_now_ns() - start_ns) / 1000000u; }

typedef struct paused_install {
    GUID id;
    int rc;
} paused_install;

static void paused_install_thread(void *arg)
{
    paused_install *p = arg;
    p->rc = WSCInstallNameSpaceEx(W("paused"), NULL, NS_DNS, 1, &p->id, NULL);
}

/* A fork() (no exec) from one thread while another is inside a write: the
 * child must not keep the writers' lock (flock belongs to the open file
 * description it would inherit), and must find no catalog lock held. The
 * fork waits for the write to end; the next writer in the parent finishes
 * at once, though the child lives on. */
TEST(test_catalog_file_fork_mid_write)
{
    if (make_tmp_root())
        return;
    char path[700], tmp[760];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    paused_install p = {gid(701), -1};
    setenv("NSPV2_TEST_CATALOG_PAUSE_MS", "800", 1);
    nspv2_thread t;
    if (nspv2_thread_create(&t, paused_install_thread, &p) != 0) {
        CHECK(!"thread");
        unsetenv("NSPV2_TEST_CATALOG_PAUSE_MS");
        return;
    }
    /* mid-write: the temporary file has its first half */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    struct stat st;
    int seen = 0;
    for (int i = 0; i < 400 && !seen; i++) {
        if (stat(tmp, &st) == 0 && st.st_size > 0)
            seen = 1;
        else
            nspv2_sleep_ms(5);
    }
    CHECK(seen);
    pid_t kid = fork();
    if (kid == 0) {
        alarm(8); /* a child that cannot finish must not outlive the test run */
        unsetenv("NSPV2_TEST_CATALOG_PAUSE_MS");
        /* no catalog lock inherited held: the child can write and read */
        GUID g = gid(703);
        int rc = WSCInstallNameSpaceEx(W("child"), NULL, NS_DNS, 1, &g, NULL);
        nspv2_catalog *c = NULL;
        int src = nspv2_catalog_snapshot(&c);
        nspv2_catalog_release(c);
        nspv2_sleep_ms(3000); /* a forked worker that lives on */
        _exit(rc == 0 && src == 0 ? 0 : 1);
    }
    CHECK(kid > 0);
    nspv2_thread_join(t);
    unsetenv("NSPV2_TEST_CATALOG_PAUSE_MS");
    CHECK(p.rc == NO_ERROR);
    GUID b = gid(702);
    uint64_t t0 = nspv2_now_ns();
    CHECK_OK(WSCInstallNameSpaceEx(W("after"), NULL, NS_DNS, 1, &b, NULL));
    uint64_t took = ms_since(t0);
    CHECK(took < 2000);
    if (took >= 2000)
        printf("  the install after the fork took %llu ms\n", (unsigned long long)took);
    if (kid > 0) {
        int status = 0;
        /* the child's own install has had time to finish; stop its sleep */
        for (int i = 0; i < 200; i++) {
            nspv2_catalog *c = NULL;
            int done = nspv2_catalog_snapshot(&c) == 0 && c && c->n == 3;
            nspv2_catalog_release(c);
            if (done)
                break;
            nspv2_sleep_ms(10);
        }
        kill(kid, SIGTERM);
        CHECK(waitpid(kid, &status, 0) == kid);
    }
    nspv2_catalog *c = NULL;
    CHECK(nspv2_catalog_snapshot(&c) == 0);
    GUID g703 = gid(703);
    CHECK(c && c->n == 3 && nspv2_catalog_find(c, &p.id) && nspv2_catalog_find(c, &b) &&
          nspv2_catalog_find(c, &g703));
    nspv2_catalog_release(c);
    use_memory();
    rm_tree(tmp_root);
}

/* The writers' lock held by another process (here a child that flocks it
 * and sleeps; a stopped installer is the same): a writer gives up at the
 * deadline (NSPV2_TEST_CATALOG_LOCK_MS shortens it for the test) with
 * WSANO_RECOVERY, and writes again once the holder is gone. */
TEST(test_catalog_file_lock_deadline)
{
    if (make_tmp_root())
        return;
    char path[700], lockp[720];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    snprintf(lockp, sizeof lockp, "%s.lock", path);
    CHECK_OK(nspv2_catalog_set_path(path));
    GUID a = gid(801), b = gid(802);
    CHECK_OK(WSCInstallNameSpaceEx(W("a"), NULL, NS_DNS, 1, &a, NULL));
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        alarm(20);
        close(pfd[0]);
        int fd = open(lockp, O_RDWR);
        if (fd < 0 || flock(fd, LOCK_EX) != 0)
            _exit(1);
        if (write(pfd[1], "L", 1) != 1)
            _exit(1);
        nspv2_sleep_ms(5000); /* killed before */
        _exit(0);
    }
    CHECK(kid > 0);
    close(pfd[1]);
    char ch = 0;
    CHECK(kid > 0 && read(pfd[0], &ch, 1) == 1 && ch == 'L');
    close(pfd[0]);
    setenv("NSPV2_TEST_CATALOG_LOCK_MS", "300", 1);
    uint64_t t0 = nspv2_now_ns();
    CHECK_ERR(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, NULL), WSANO_RECOVERY);
    uint64_t took = ms_since(t0);
    CHECK(took >= 300 && took < 2000);
    const char *why = nspv2_catalog_error_text();
    CHECK(strstr(why, "locked by another writer") != NULL && strstr(why, lockp) != NULL);
    if (!strstr(why, "locked by another writer"))
        printf("  error text: %s (after %llu ms)\n", why, (unsigned long long)took);
    CHECK_ERR(WSCUnInstallNameSpace(&a), WSANO_RECOVERY);
    CHECK_ERR(WSCEnableNSProvider(&a, FALSE), WSANO_RECOVERY);
    /* readers take no lock */
    nspv2_catalog *c = NULL;
    CHECK(nspv2_catalog_snapshot(&c) == 0 && c && c->n == 1);
    nspv2_catalog_release(c);
    if (kid > 0) {
        kill(kid, SIGKILL);
        int status = 0;
        CHECK(waitpid(kid, &status, 0) == kid && WIFSIGNALED(status));
    }
    CHECK_OK(WSCInstallNameSpaceEx(W("b"), NULL, NS_DNS, 1, &b, NULL));
    unsetenv("NSPV2_TEST_CATALOG_LOCK_MS");
    use_memory();
    rm_tree(tmp_root);
}

/* Each catalog call on the current location, in a child process with an
 * alarm (a call that blocks forever is a failed check, not a hung run).
 * The child exits 0 when every call failed with WSANO_RECOVERY and an error
 * text containing want; the parent reports the time taken. */
static void expect_refused_in_child(const char *want, uint64_t *took_ms)
{
    uint64_t t0 = nspv2_now_ns();
    pid_t kid = fork();
    if (kid == 0) {
        alarm(5);
        int bad = 0;
        DWORD len = 0;
        GUID g = gid(901);
        if (WSAEnumNameSpaceProvidersExW(&len, NULL) != SOCKET_ERROR ||
            WSAGetLastError() != WSANO_RECOVERY || !strstr(nspv2_catalog_error_text(), want))
            bad |= 2;
        if (WSCInstallNameSpaceEx(W("g"), NULL, NS_DNS, 1, &g, NULL) != SOCKET_ERROR ||
            WSAGetLastError() != WSANO_RECOVERY || !strstr(nspv2_catalog_error_text(), want))
            bad |= 4;
        if (bad)
            printf("  child: %s\n", nspv2_catalog_error_text());
        fflush(stdout);
        _exit(bad);
    }
    CHECK(kid > 0);
    int status = 0;
    CHECK(kid > 0 && waitpid(kid, &status, 0) == kid);
    *took_ms = ms_since(t0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status))
        printf("  child killed by signal %d (blocked)\n", WTERMSIG(status));
}

/* A FIFO (or any file that is not a regular one) at the catalog's path:
 * readers and writers fail at once with WSANO_RECOVERY instead of blocking
 * in open(). A symbolic link at "<catalog>.lock" is refused, not followed. */
TEST(test_catalog_file_not_regular)
{
    if (make_tmp_root())
        return;
    char path[700], lockp[720], target[720];
    snprintf(path, sizeof path, "%s/catalog", tmp_root);
    CHECK_OK(nspv2_catalog_set_path(path));
    CHECK(mkfifo(path, 0600) == 0);
    uint64_t took = 0;
    expect_refused_in_child("not a regular file", &took);
    CHECK(took < 2000);
    unlink(path);
    /* a symbolic link as the lock */
    snprintf(lockp, sizeof lockp, "%s.lock", path);
    snprintf(target, sizeof target, "%s/elsewhere", tmp_root);
    unlink(lockp); /* the refused writer made it */
    CHECK(symlink(target, lockp) == 0);
    GUID g = gid(902);
    CHECK_ERR(WSCInstallNameSpaceEx(W("g"), NULL, NS_DNS, 1, &g, NULL), WSANO_RECOVERY);
    CHECK(strstr(nspv2_catalog_error_text(), "symbolic link") != NULL &&
          strstr(nspv2_catalog_error_text(), lockp) != NULL);
    struct stat st;
    CHECK(lstat(target, &st) != 0); /* not created through the link */
    CHECK(lstat(path, &st) != 0);   /* nothing written */
    unlink(lockp);
    CHECK_OK(WSCInstallNameSpaceEx(W("g"), NULL, NS_DNS, 1, &g, NULL));
    use_memory();
    rm_tree(tmp_root);
}

#endif /* !_WIN32 */

void run_catalog_tests(void)
{
    RUN(test_catalog_errors);
    RUN(test_catalog_enum_sizes);
    RUN(test_catalog_installed);
    RUN(test_catalog_location);
    RUN(test_catalog_blob_check);
    RUN(test_catalog_route_order);
    RUN(test_catalog_stepping);
#if !defined(_WIN32)
    RUN(test_catalog_file_round_trip);
    RUN(test_catalog_file_corrupt);
    RUN(test_catalog_file_concurrent);
    RUN(test_catalog_file_cache);
    RUN(test_catalog_file_killed_writer);
    RUN(test_catalog_file_fork_mid_write);
    RUN(test_catalog_file_lock_deadline);
    RUN(test_catalog_file_not_regular);
#endif
    use_memory();
}
