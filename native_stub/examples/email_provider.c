/*
 * email_provider.c - the email example's C provider, written as a Windows
 * provider process is: start Winsock, install the NS_EMAIL namespace with
 * its installation blob, advertise the routine table, run until told to
 * stop (Ctrl-C, Ctrl-Break or the console closing), then unadvertise,
 * uninstall and clean up. The provider itself is the C reference provider
 * (ref_provider.c, docs/email-example.md).
 *
 * Windows (mingw-w64 or MSVC): an ordinary console program, linked with
 * ws2_32. Elsewhere: a shared library built against the installed nspv2,
 * whose main() nspv2 runs on a thread of its own and stops with a console
 * event (nspv2.host.NativeProvider, nspv2 check --native):
 *
 *     cc -std=c11 -Wall -Wextra -Werror -shared -fPIC \
 *        $(nspv2 config --compat --cflags --libs) email_provider.c ref_provider.c
 *
 * Arguments: --no-install skips WSCInstallNameSpaceEx: the provider must be
 * installed already (`nspv2 install --native ...`), or WSAAdvertiseProvider
 * fails with WSAEINVALIDPROVIDER.
 *
 * Installed already (WSANO_RECOVERY, as Windows reports it): that install is
 * used, and left in place at exit; only what this run installed is
 * uninstalled.
 */

/* ref_provider.c is compiled into this library: bind to that copy, not the
 * host library's (nspv2_ref_provider.h). nspv2_ref_provider.h comes first:
 * with mingw-w64's headers it must precede <winsock2.h> (nspv2_host.h). */
#define NSPV2_REF_PROVIDER_LOCAL 1
#include "nspv2_ref_provider.h"

#include <windows.h>
#include <winsock2.h>
#include <ws2spi.h>
#include <nsemail.h>

#include <stdio.h>
#include <string.h>

/* Names for `nspv2 check --native`: registered first, then looked up. */
const char *const nspv2_check_registrations[] = {"alice@example.com", "bob@example.org", NULL};
const char *const nspv2_check_queries[] = {"alice@example.com", "*@example.com", NULL};

static const WCHAR *const domains[] = {L"example.com", L"example.org"};
#define N_DOMAINS (sizeof domains / sizeof domains[0])

/* The installation blob: the header, the domain descriptions one after the
 * other, then the names (NUL-terminated UTF-16), padded to a multiple of 4
 * bytes; offsets from the start of the blob, the last domain's next 0. */
static DWORD blob_words[64]; /* DWORD-aligned storage */

static DWORD build_installation_blob(void)
{
    BYTE *blob = (BYTE *)blob_words;
    NAPI_PROVIDER_INSTALLATION_BLOB header;
    DWORD at_domain = (DWORD)sizeof header;
    DWORD at_name = at_domain + (DWORD)(N_DOMAINS * sizeof(NAPI_DOMAIN_DESCRIPTION_BLOB));
    ZeroMemory(blob_words, sizeof blob_words);
    header.dwVersion = 1;
    header.dwProviderType = ProviderType_Application;
    header.fSupportsWildCard = 0;
    header.cDomains = (DWORD)N_DOMAINS;
    header.OffsetFirstDomain = at_domain;
    CopyMemory(blob, &header, sizeof header);
    for (size_t i = 0; i < N_DOMAINS; i++) {
        NAPI_DOMAIN_DESCRIPTION_BLOB d;
        DWORD cch = (DWORD)wcslen(domains[i]);
        d.AuthLevel = ProviderLevel_Primary;
        d.cchDomainName = cch;
        d.OffsetNextDomainDescription =
            i + 1 < N_DOMAINS ? at_domain + (DWORD)sizeof d : 0;
        d.OffsetThisDomainName = at_name;
        CopyMemory(blob + at_domain, &d, sizeof d);
        CopyMemory(blob + at_name, domains[i], (cch + 1) * sizeof(WCHAR));
        at_domain += (DWORD)sizeof d;
        at_name += (cch + 1) * (DWORD)sizeof(WCHAR);
    }
    return (at_name + 3u) & ~3u;
}

static HANDLE stop_event;

static BOOL WINAPI on_console_event(DWORD ctrl_type)
{
    switch (ctrl_type) {
    case CTRL_C_EVENT:
    case CTRL_BREAK_EVENT:
    case CTRL_CLOSE_EVENT:
        SetEvent(stop_event);
        return TRUE;
    default:
        return FALSE;
    }
}

int main(int argc, char **argv)
{
    WSADATA wsa;
    NSPV2_ROUTINE routine;
    GUID id = nspv2_ref_provider_id;
    BLOB info;
    BOOL install = TRUE, installed = FALSE;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-install") == 0) {
            install = FALSE;
        } else {
            fprintf(stderr, "email_provider: unknown argument %s\n", argv[i]);
            return 2;
        }
    }

    rc = WSAStartup(MAKEWORD(2, 2), &wsa);
    if (rc != 0) {
        fprintf(stderr, "email_provider: WSAStartup failed: %d\n", rc);
        return 1;
    }
    stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!stop_event || !SetConsoleCtrlHandler(on_console_event, TRUE)) {
        fprintf(stderr, "email_provider: no stop event: %lu\n", (unsigned long)GetLastError());
        WSACleanup();
        return 1;
    }

    if (install) {
        info.cbSize = build_installation_blob();
        info.pBlobData = (BYTE *)blob_words;
        if (WSCInstallNameSpaceEx(L"nspv2 email example", L"", NS_EMAIL, 1, &id, &info) == 0)
            installed = TRUE;
        else if (WSAGetLastError() != WSANO_RECOVERY) { /* WSANO_RECOVERY: installed already */
            fprintf(stderr, "email_provider: WSCInstallNameSpaceEx failed: %d\n", WSAGetLastError());
            rc = 1;
            goto out;
        }
    }

    nspv2_ref_provider_routine(&routine);
    if (WSAAdvertiseProvider(&id, &routine) != 0) {
        fprintf(stderr, "email_provider: WSAAdvertiseProvider failed: %d\n", WSAGetLastError());
        rc = 1;
        goto out;
    }

    WaitForSingleObject(stop_event, INFINITE); /* the provider's main loop */

    WSAUnadvertiseProvider(&id);
    nspv2_ref_provider_reset(); /* sign everyone out: the next start begins empty */
    rc = 0;
out:
    if (installed)
        WSCUnInstallNameSpace(&id);
    SetConsoleCtrlHandler(on_console_event, FALSE);
    CloseHandle(stop_event);
    WSACleanup();
    return rc;
}
