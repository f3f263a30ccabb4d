/*
 * email_client.c - a client of the NS_EMAIL presence directory, written as
 * a Windows client program is: WSAStartup, WSALookupServiceBeginW /
 * NextW / End or WSASetServiceW, WSACleanup. Nothing in it is specific to
 * nspv2.
 *
 * Windows (mingw-w64 or MSVC): an ordinary console program linked with
 * ws2_32; its calls reach the email example's provider process through
 * Winsock. Elsewhere: built against nspv2's client library, its calls reach
 * the provider process `nspv2 serve` runs (docs/client-c.md):
 *
 *     cc -std=c11 -Wall -Wextra -Werror -o email_client email_client.c \
 *        $(nspv2 config --compat --cflags --client-libs)
 *
 * Usage:
 *     email_client lookup NAME...      NAME is user@domain.tld or *@domain.tld;
 *                                      one line per entry found
 *     email_client register NAME [STATUS]
 *                                      sign NAME in (STATUS: online, busy,
 *                                      away, ...; default online), print its
 *                                      entry, and hold the session until a
 *                                      line or end of file on stdin; then
 *                                      WSACleanup ends the session, which
 *                                      signs NAME out
 *
 * Exit status: 0 when every call succeeded, 1 when a Winsock call failed
 * (its error code is printed), 2 for a usage error.
 */
#include <winsock2.h>
#include <windows.h>
#include <ws2tcpip.h>
#include <nsemail.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The presence blob of the NS_EMAIL example (docs/email-example.md):
 * "NSPP", version 1, reserved 0, a MISTATUS value; little-endian. */
#define PRESENCE_BLOB_SIZE 12

static const struct {
    const char *word;
    DWORD value; /* MISTATUS (msgrua.h) */
} statuses[] = {
    {"online", 0x0002},        {"invisible", 0x0006},     {"busy", 0x000A},
    {"be-right-back", 0x000E}, {"idle", 0x0012},          {"away", 0x0022},
    {"on-the-phone", 0x0032},  {"out-to-lunch", 0x0042},  {"in-a-meeting", 0x0052},
    {"out-of-office", 0x0062}, {"do-not-disturb", 0x0072}, {"in-a-conference", 0x0082},
};
#define N_STATUSES (sizeof statuses / sizeof statuses[0])

static const char *error_name(int code)
{
    switch (code) {
    case WSASERVICE_NOT_FOUND: return "WSASERVICE_NOT_FOUND";
    case WSA_E_NO_MORE: return "WSA_E_NO_MORE";
    case WSAEINVAL: return "WSAEINVAL";
    case WSAEFAULT: return "WSAEFAULT";
    case WSAEALREADY: return "WSAEALREADY";
    case WSAEACCES: return "WSAEACCES";
    case WSAECONNRESET: return "WSAECONNRESET";
    case WSANOTINITIALISED: return "WSANOTINITIALISED";
    case WSA_INVALID_HANDLE: return "WSA_INVALID_HANDLE";
    default: return "";
    }
}

static int failed(const char *call)
{
    int code = WSAGetLastError();
    fprintf(stderr, "email_client: %s failed: %d %s\n", call, code, error_name(code));
    return 1;
}

/* UTF-8 argument -> NUL-terminated UTF-16 (malloc'd); NULL if malformed. */
static WCHAR *to_utf16(const char *s)
{
    size_t n = strlen(s);
    WCHAR *out = malloc((n + 1) * 2 * sizeof(WCHAR));
    size_t k = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1Fu;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0Fu;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07u;
            len = 4;
        } else {
            free(out);
            return NULL;
        }
        if (i + len > n) {
            free(out);
            return NULL;
        }
        for (size_t j = 1; j < len; j++) {
            unsigned char cc = (unsigned char)s[i + j];
            if ((cc & 0xC0) != 0x80) {
                free(out);
                return NULL;
            }
            cp = (cp << 6) | (cc & 0x3Fu);
        }
        i += len;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out[k++] = (WCHAR)(0xD800 + (cp >> 10));
            out[k++] = (WCHAR)(0xDC00 + (cp & 0x3FF));
        } else {
            out[k++] = (WCHAR)cp;
        }
    }
    out[k] = 0;
    return out;
}

/* Print a UTF-16 string as UTF-8 (unpaired surrogates as U+FFFD). */
static void print_utf16(const WCHAR *w)
{
    for (; w && *w; w++) {
        uint32_t cp = *w;
        if (cp >= 0xD800 && cp < 0xDC00 && w[1] >= 0xDC00 && w[1] < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (uint32_t)(w[1] - 0xDC00);
            w++;
        } else if (cp >= 0xD800 && cp < 0xE000) {
            cp = 0xFFFD;
        }
        if (cp < 0x80) {
            putchar((int)cp);
        } else if (cp < 0x800) {
            putchar((int)(0xC0 | (cp >> 6)));
            putchar((int)(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            putchar((int)(0xE0 | (cp >> 12)));
            putchar((int)(0x80 | ((cp >> 6) & 0x3F)));
            putchar((int)(0x80 | (cp & 0x3F)));
        } else {
            putchar((int)(0xF0 | (cp >> 18)));
            putchar((int)(0x80 | ((cp >> 12) & 0x3F)));
            putchar((int)(0x80 | ((cp >> 6) & 0x3F)));
            putchar((int)(0x80 | (cp & 0x3F)));
        }
    }
}

/* One line per result: name, presence, version, what happened to it. */
static void print_result(const WSAQUERYSETW *r)
{
    print_utf16(r->lpszServiceInstanceName);
    printf(" ");
    if (r->lpszComment)
        print_utf16(r->lpszComment);
    else
        printf("-");
    if (r->lpBlob && r->lpBlob->cbSize == PRESENCE_BLOB_SIZE && r->lpBlob->pBlobData) {
        const BYTE *b = r->lpBlob->pBlobData;
        DWORD status = (DWORD)b[8] | (DWORD)b[9] << 8 | (DWORD)b[10] << 16 | (DWORD)b[11] << 24;
        printf(" (0x%04lx)", (unsigned long)status);
    }
    if (r->lpVersion)
        printf(" version %lu", (unsigned long)r->lpVersion->dwVersion);
    printf(" addresses %lu", (unsigned long)r->dwNumberOfCsAddrs);
    printf("%s%s%s\n", r->dwOutputFlags & RESULT_IS_ADDED ? " added" : "",
           r->dwOutputFlags & RESULT_IS_CHANGED ? " changed" : "",
           r->dwOutputFlags & RESULT_IS_DELETED ? " deleted" : "");
}

/* Look NAME up and print every entry: 0, or 1 when a call failed. */
static int lookup(const char *name)
{
    WSAQUERYSETW qs;
    HANDLE lookup_handle;
    DWORD size = 4096;
    LPWSAQUERYSETW results;
    int rc = 0;
    WCHAR *wname = to_utf16(name);

    if (!wname) {
        fprintf(stderr, "email_client: %s is not UTF-8\n", name);
        return 2;
    }
    ZeroMemory(&qs, sizeof qs);
    qs.dwSize = sizeof qs;
    qs.lpszServiceInstanceName = wname;
    qs.dwNameSpace = NS_EMAIL;
    if (WSALookupServiceBeginW(&qs, LUP_RETURN_ALL, &lookup_handle) != 0) {
        free(wname);
        return failed("WSALookupServiceBeginW");
    }
    free(wname);
    results = malloc(size);
    for (;;) {
        DWORD length = size;
        if (!results) {
            fprintf(stderr, "email_client: out of memory\n");
            rc = 1;
            break;
        }
        if (WSALookupServiceNextW(lookup_handle, 0, &length, results) == 0) {
            print_result(results);
            continue;
        }
        int code = WSAGetLastError();
        if (code == WSA_E_NO_MORE || code == WSAENOMORE)
            break;
        if (code == WSAEFAULT && length > size) { /* the size the entry needs */
            LPWSAQUERYSETW bigger = realloc(results, length);
            if (bigger) {
                results = bigger;
                size = length;
                continue;
            }
        }
        rc = failed("WSALookupServiceNextW");
        break;
    }
    free(results);
    if (WSALookupServiceEnd(lookup_handle) != 0 && rc == 0)
        rc = failed("WSALookupServiceEnd");
    return rc;
}

static int sign_in(const char *name, DWORD status)
{
    WSAQUERYSETW qs;
    BLOB blob;
    BYTE presence[PRESENCE_BLOB_SIZE] = {'N', 'S', 'P', 'P', 1, 0, 0, 0};
    WCHAR *wname = to_utf16(name);
    int rc;

    if (!wname) {
        fprintf(stderr, "email_client: %s is not UTF-8\n", name);
        return 2;
    }
    for (int i = 0; i < 4; i++)
        presence[8 + i] = (BYTE)(status >> (8 * i));
    blob.cbSize = sizeof presence;
    blob.pBlobData = presence;
    ZeroMemory(&qs, sizeof qs);
    qs.dwSize = sizeof qs;
    qs.lpszServiceInstanceName = wname;
    qs.dwNameSpace = NS_EMAIL;
    qs.lpBlob = &blob;
    rc = WSASetServiceW(&qs, RNRSERVICE_REGISTER, 0) == 0 ? 0 : failed("WSASetServiceW");
    free(wname);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: email_client lookup NAME...\n"
                    "       email_client register NAME [STATUS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    WSADATA wsa;
    int rc = 0;

    if (argc < 3)
        return usage();
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
        fprintf(stderr, "email_client: WSAStartup failed\n");
        return 1;
    }
    if (strcmp(argv[1], "lookup") == 0) {
        for (int i = 2; i < argc && rc == 0; i++)
            rc = lookup(argv[i]);
    } else if (strcmp(argv[1], "register") == 0 && argc <= 4) {
        DWORD status = 0x0002; /* MISTATUS_ONLINE */
        if (argc == 4) {
            size_t i = 0;
            while (i < N_STATUSES && strcmp(statuses[i].word, argv[3]) != 0)
                i++;
            if (i == N_STATUSES) {
                fprintf(stderr, "email_client: unknown status %s\n", argv[3]);
                WSACleanup();
                return 2;
            }
            status = statuses[i].value;
        }
        rc = sign_in(argv[2], status);
        if (rc == 0)
            rc = lookup(argv[2]);
        if (rc == 0) {
            printf("signed in; holding the session until a line or end of file on stdin\n");
            fflush(stdout);
            for (int c = getchar(); c != EOF && c != '\n'; c = getchar())
                ;
        }
    } else {
        rc = usage();
    }
    fflush(stdout);
    if (WSACleanup() != 0 && rc == 0) /* ends the session: signs NAME out */
        rc = failed("WSACleanup");
    return rc;
}
