/*
 * catalog_api.c - the namespace catalog's exported calls (host library
 * only): WSCInstallNameSpaceEx, WSCUnInstallNameSpace, WSCEnableNSProvider,
 * WSAEnumNameSpaceProvidersExW, the nspv2_catalog_* extras and
 * nspv2_host_installed*, all on catalog.c (rules in catalog.h, contracts in
 * nspv2_host.h). Each failure sets this thread's catalog error text
 * (nspv2_catalog_error_text) and returns SOCKET_ERROR with
 * WSASetLastError; nothing changes the last error after host_fail().
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_host.h"

#include "catalog.h"
#include "host_internal.h"

#include <stdlib.h>
#include <string.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

static INT cat_result(int err) { return err ? host_fail(err) : NO_ERROR; }

NSPV2_HOST_API INT WSAAPI WSCInstallNameSpaceEx(LPWSTR lpszIdentifier, LPWSTR lpszPathName,
                                                DWORD dwNameSpace, DWORD dwVersion,
                                                LPGUID lpProviderId, LPBLOB lpProviderInfo)
{
    (void)lpszPathName;
    return cat_result(
        nspv2_catalog_install(lpszIdentifier, dwNameSpace, dwVersion, lpProviderId, lpProviderInfo));
}

NSPV2_HOST_API INT WSAAPI WSCUnInstallNameSpace(LPGUID lpProviderId)
{
    return cat_result(nspv2_catalog_uninstall(lpProviderId));
}

NSPV2_HOST_API INT WSAAPI WSCEnableNSProvider(LPGUID lpProviderId, BOOL fEnable)
{
    return cat_result(nspv2_catalog_enable(lpProviderId, fEnable ? 1 : 0));
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Layout: the entries, then each identifier (NUL-terminated, an empty one
 * for a provider installed without), then each non-empty blob at a
 * pointer-aligned offset. Returns the bytes needed. */
static size_t enum_size(const nspv2_catalog *c)
{
    size_t off = c->n * sizeof(WSANAMESPACE_INFOEXW);
    for (size_t i = 0; i < c->n; i++)
        off += ((size_t)c->entries[i].identifier_chars + 1) * sizeof(WCHAR);
    for (size_t i = 0; i < c->n; i++)
        if (c->entries[i].blob_size)
            off = align_up(off, sizeof(void *)) + c->entries[i].blob_size;
    return off;
}

NSPV2_HOST_API INT WSAAPI WSAEnumNameSpaceProvidersExW(LPDWORD lpdwBufferLength,
                                                       LPWSANAMESPACE_INFOEXW lpnspBuffer)
{
    nspv2_catalog_clear_error();
    if (!lpdwBufferLength)
        return host_fail(nspv2_catalog_fail(WSAEFAULT, "lpdwBufferLength is NULL"));
    nspv2_catalog *c;
    int rc = nspv2_catalog_snapshot(&c);
    if (rc)
        return host_fail(rc);
    size_t need = enum_size(c);
    if (need > 0xFFFFFFFFu) {
        nspv2_catalog_release(c);
        return host_fail(nspv2_catalog_fail(WSA_NOT_ENOUGH_MEMORY, "the catalog needs more "
                                                                   "than 4 GiB"));
    }
    if ((size_t)*lpdwBufferLength < need || (!lpnspBuffer && need > 0)) {
        *lpdwBufferLength = (DWORD)need;
        nspv2_catalog_release(c);
        return host_fail(nspv2_catalog_fail(WSAEFAULT, "the buffer is shorter than the %lu "
                                                       "bytes needed",
                                            (unsigned long)need));
    }
    unsigned char *base = (unsigned char *)lpnspBuffer;
    size_t off = c->n * sizeof(WSANAMESPACE_INFOEXW);
    for (size_t i = 0; i < c->n; i++) {
        const nspv2_cat_entry *e = &c->entries[i];
        WSANAMESPACE_INFOEXW *o = &lpnspBuffer[i];
        memset(o, 0, sizeof *o);
        o->NSProviderId = e->id;
        o->dwNameSpace = e->name_space;
        o->fActive = e->enabled ? 1 : 0;
        o->dwVersion = e->version;
        o->lpszIdentifier = (LPWSTR)(void *)(base + off);
        if (e->identifier_chars)
            memcpy(base + off, e->identifier, (size_t)e->identifier_chars * sizeof(WCHAR));
        memset(base + off + (size_t)e->identifier_chars * sizeof(WCHAR), 0, sizeof(WCHAR));
        off += ((size_t)e->identifier_chars + 1) * sizeof(WCHAR);
    }
    for (size_t i = 0; i < c->n; i++) {
        const nspv2_cat_entry *e = &c->entries[i];
        WSANAMESPACE_INFOEXW *o = &lpnspBuffer[i];
        o->ProviderSpecific.cbSize = e->blob_size;
        o->ProviderSpecific.pBlobData = NULL;
        if (e->blob_size) {
            off = align_up(off, sizeof(void *));
            o->ProviderSpecific.pBlobData = base + off;
            memcpy(base + off, e->blob, e->blob_size);
            off += e->blob_size;
        }
    }
    INT count = (INT)c->n;
    nspv2_catalog_release(c);
    return count;
}

NSPV2_HOST_API INT nspv2_catalog_set_path(const char *path)
{
    nspv2_catalog_clear_error();
    return cat_result(nspv2_catalog_use(path));
}

NSPV2_HOST_API INT nspv2_catalog_location(char *buf, uint32_t *size)
{
    nspv2_catalog_clear_error();
    if (!size)
        return host_fail(nspv2_catalog_fail(WSAEFAULT, "size is NULL"));
    char where[PATH_MAX];
    nspv2_catalog_where(where, sizeof where);
    uint32_t need = (uint32_t)strlen(where) + 1u;
    if (!buf || *size < need) {
        *size = need;
        return host_fail(nspv2_catalog_fail(WSAEFAULT, "the buffer is shorter than the %lu "
                                                       "bytes needed",
                                            (unsigned long)need));
    }
    memcpy(buf, where, need);
    *size = need;
    return NO_ERROR;
}

NSPV2_HOST_API const char *nspv2_catalog_error_text(void) { return nspv2_catalog_error(); }

NSPV2_HOST_API INT nspv2_email_blob_check(const void *blob, uint32_t size, char *why,
                                          uint32_t why_size)
{
    int rc = nspv2_cat_blob_check((const uint8_t *)blob, blob ? size : 0u, why, why_size);
    return cat_result(rc);
}

/* The entry for id in the catalog in effect: 0 with *c (release it) and
 * *e, or the error. */
static int installed_find(const GUID *id, nspv2_catalog **c, const nspv2_cat_entry **e)
{
    nspv2_catalog_clear_error();
    if (!id)
        return nspv2_catalog_fail(WSAEFAULT, "the provider id is NULL");
    int rc = nspv2_catalog_snapshot(c);
    if (rc)
        return rc;
    *e = nspv2_catalog_find(*c, id);
    if (!*e) {
        nspv2_catalog_release(*c);
        return nspv2_catalog_fail(WSAEINVAL, "the provider is not installed");
    }
    return 0;
}

NSPV2_HOST_API INT nspv2_host_installed(const GUID *id, DWORD *name_space, uint32_t *has_blob,
                                        void *blob, uint32_t *blob_size)
{
    nspv2_catalog *c;
    const nspv2_cat_entry *e;
    int rc = installed_find(id, &c, &e);
    if (rc)
        return host_fail(rc);
    if (name_space)
        *name_space = e->name_space;
    if (has_blob)
        *has_blob = e->has_blob ? 1u : 0u;
    if (blob_size) {
        if (blob && *blob_size < e->blob_size)
            rc = nspv2_catalog_fail(WSAEFAULT, "the blob needs %lu bytes",
                                    (unsigned long)e->blob_size);
        else if (blob && e->blob_size)
            memcpy(blob, e->blob, e->blob_size);
        *blob_size = e->blob_size;
    }
    nspv2_catalog_release(c);
    return cat_result(rc);
}

NSPV2_HOST_API INT nspv2_host_installed_identifier(const GUID *id, WCHAR *identifier,
                                                   uint32_t *chars)
{
    nspv2_catalog_clear_error();
    if (!chars)
        return host_fail(nspv2_catalog_fail(WSAEFAULT, "chars is NULL"));
    nspv2_catalog *c;
    const nspv2_cat_entry *e;
    int rc = installed_find(id, &c, &e);
    if (rc)
        return host_fail(rc);
    uint32_t need = e->identifier_chars + 1u;
    if (identifier && *chars >= need) {
        if (e->identifier_chars)
            memcpy(identifier, e->identifier, (size_t)need * sizeof(WCHAR));
        else
            identifier[0] = 0;
    } else if (identifier) {
        rc = nspv2_catalog_fail(WSAEFAULT, "the identifier needs %lu characters",
                                (unsigned long)need);
    }
    *chars = need;
    nspv2_catalog_release(c);
    return cat_result(rc);
}
