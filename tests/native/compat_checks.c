/*
 * compat_checks.c - nspv2_compat.h and the host's compat.c, proved from a
 * program built the way Windows-style provider source is built here:
 * cc -std=c11 ... $(nspv2 config --compat --cflags --libs) compat_checks.c
 * Prints each failed check and "N checks, M failed"; exits with M != 0.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <time.h>

#include <windows.h>
#include <winsock2.h>
#include <ws2spi.h>
#include <strsafe.h>
#include <wchar.h> /* after the compat layer: harmless */

#include <stdio.h>

static int checks, failed;
#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failed++;                                                        \
            printf("FAILED line %d: %s\n", __LINE__, #cond);                 \
        }                                                                    \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- CRITICAL_SECTION: recursive, exclusive across threads ---- */
static CRITICAL_SECTION cs;
static LONG counter;
static volatile LONG atomic_counter;

static void *try_from_other_thread(void *arg)
{
    BOOL got = TryEnterCriticalSection(&cs);
    if (got)
        LeaveCriticalSection(&cs);
    *(BOOL *)arg = got;
    return NULL;
}

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        EnterCriticalSection(&cs);
        EnterCriticalSection(&cs); /* recursion must not deadlock */
        LONG v = counter;
        counter = v + 1;
        LeaveCriticalSection(&cs);
        LeaveCriticalSection(&cs);
        InterlockedIncrement(&atomic_counter);
    }
    return NULL;
}

static void check_critical_section(void)
{
    pthread_t t[4];
    BOOL got = TRUE;
    InitializeCriticalSection(&cs);
    EnterCriticalSection(&cs);
    CHECK(TryEnterCriticalSection(&cs)); /* the owner re-enters */
    pthread_create(&t[0], NULL, try_from_other_thread, &got);
    pthread_join(t[0], NULL);
    CHECK(!got); /* held (twice) by this thread */
    LeaveCriticalSection(&cs);
    pthread_create(&t[0], NULL, try_from_other_thread, &got);
    pthread_join(t[0], NULL);
    CHECK(!got); /* still held once */
    LeaveCriticalSection(&cs);
    pthread_create(&t[0], NULL, try_from_other_thread, &got);
    pthread_join(t[0], NULL);
    CHECK(got); /* released */
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(counter == 80000);
    CHECK(atomic_counter == 80000);
    DeleteCriticalSection(&cs);
    CHECK(InitializeCriticalSectionAndSpinCount(&cs, 4000));
    DeleteCriticalSection(&cs);
}

/* ---- UTF-16 strings ---- */
static void check_strings(void)
{
    WCHAR buf[32];
    CHECK(sizeof(WCHAR) == 2 && sizeof(L"ab") == 6);
    CHECK(wcslen(L"h\u00e9llo") == 5); /* é is one UTF-16 unit */
    CHECK(L"\u00e9"[0] == 0x00E9);
    CHECK(wcsnlen(L"hello", 3) == 3 && wcsnlen(L"hi", 8) == 2);
    wcscpy(buf, L"alice");
    wcscat(buf, L"@example.com");
    CHECK(wcscmp(buf, L"alice@example.com") == 0);
    CHECK(wcscmp(L"a", L"b") < 0 && wcscmp(L"b", L"a") > 0);
    CHECK(wcsncmp(buf, L"alice@other", 6) == 0 && wcsncmp(buf, L"alice@other", 7) != 0);
    CHECK(wcschr(buf, L'@') == buf + 5 && wcschr(buf, L'#') == NULL);
    CHECK(wcsrchr(buf, L'e') == buf + 12);
    CHECK(wcsstr(buf, L"example") == buf + 6 && wcsstr(buf, L"nope") == NULL);
    CHECK(_wcsicmp(L"Alice@Example.COM", L"alice@example.com") == 0);
    CHECK(_wcsicmp(L"alice", L"bob") < 0 && _wcsicmp(L"B", L"a") > 0);
    CHECK(_wcsnicmp(L"ALICE@x", L"alice@y", 6) == 0 && _wcsnicmp(L"ALICE@x", L"alice@y", 7) != 0);
    CHECK(_wcsicmp(L"\u00c9", L"\u00e9") != 0); /* "C" locale: ASCII folding only */
    CHECK(_stricmp("Alice", "aLICE") == 0 && _strnicmp("abcX", "ABCy", 3) == 0);
    wcsncpy(buf, L"xy", 4);
    CHECK(buf[0] == 'x' && buf[2] == 0 && buf[3] == 0);
    CHECK(wcscpy_s(buf, 4, L"abc") == 0 && wcscmp(buf, L"abc") == 0);
    CHECK(wcscpy_s(buf, 3, L"abc") == 34 && buf[0] == 0);
    CHECK(wcsncpy_s(buf, 3, L"abc", _TRUNCATE) == STRUNCATE && wcscmp(buf, L"ab") == 0);
    CHECK(wcscat_s(buf, 5, L"cd") == 0 && wcscmp(buf, L"abcd") == 0);
    CHECK(wcscat_s(buf, 5, L"e") == 34);
    CHECK(StringCchCopyW(buf, 4, L"abcdef") == STRSAFE_E_INSUFFICIENT_BUFFER &&
          wcscmp(buf, L"abc") == 0);
    CHECK(SUCCEEDED(StringCchCopyW(buf, 32, L"abcdef")));
    size_t n = 0;
    CHECK(StringCchLengthW(buf, 32, &n) == S_OK && n == 6);
    CHECK(StringCchLengthW(buf, 6, &n) == STRSAFE_E_INVALID_PARAMETER && n == 0);
    CHECK(StringCbCopyW(buf, 4 * sizeof(WCHAR), L"xyz") == S_OK);
    TCHAR t[] = TEXT("tchar");
    CHECK(sizeof t == 6 * sizeof(WCHAR) && _tcslen(t) == 5);
}

/* ---- events, Sleep ---- */
static HANDLE later_event;
static void *set_later(void *arg)
{
    (void)arg;
    Sleep(50);
    SetEvent(later_event);
    return NULL;
}

static void check_events(void)
{
    HANDLE autoreset = CreateEventW(NULL, FALSE, FALSE, NULL);
    HANDLE manual = CreateEvent(NULL, TRUE, TRUE, NULL);
    CHECK(autoreset != NULL && manual != NULL);
    double t0 = now_ms();
    CHECK(WaitForSingleObject(autoreset, 60) == WAIT_TIMEOUT);
    double waited = now_ms() - t0;
    CHECK(waited >= 55 && waited < 2000);
    CHECK(SetEvent(autoreset));
    CHECK(WaitForSingleObject(autoreset, 0) == WAIT_OBJECT_0);
    CHECK(WaitForSingleObject(autoreset, 0) == WAIT_TIMEOUT); /* consumed */
    CHECK(WaitForSingleObject(manual, 0) == WAIT_OBJECT_0);
    CHECK(WaitForSingleObject(manual, 0) == WAIT_OBJECT_0); /* stays set */
    CHECK(ResetEvent(manual));
    CHECK(WaitForSingleObject(manual, 10) == WAIT_TIMEOUT);
    later_event = manual;
    pthread_t t;
    t0 = now_ms();
    pthread_create(&t, NULL, set_later, NULL);
    CHECK(WaitForSingleObject(manual, INFINITE) == WAIT_OBJECT_0);
    CHECK(now_ms() - t0 >= 45);
    pthread_join(t, NULL);
    CHECK(CloseHandle(autoreset) && CloseHandle(manual));
    SetLastError(0);
    CHECK(!CloseHandle(manual)); /* closed already */
    CHECK(GetLastError() == ERROR_INVALID_HANDLE);
    CHECK(WaitForSingleObject((HANDLE)&t, 0) == WAIT_FAILED);
}

/* ---- last error, heap, WSAStartup ---- */
static void *read_last_error(void *arg)
{
    *(DWORD *)arg = GetLastError();
    return NULL;
}

static void check_last_error_and_heap(void)
{
    SetLastError(1234);
    CHECK(WSAGetLastError() == 1234 && GetLastError() == 1234);
    WSASetLastError(WSAEINVAL);
    CHECK(GetLastError() == WSAEINVAL);
    DWORD other = 99;
    pthread_t t;
    pthread_create(&t, NULL, read_last_error, &other);
    pthread_join(t, NULL);
    CHECK(other == 0); /* per thread */

    BYTE *p = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, 16);
    CHECK(p && p[0] == 0 && p[15] == 0 && HeapSize(GetProcessHeap(), 0, p) == 16);
    FillMemory(p, 16, 0xAB);
    p = HeapReAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, p, 64);
    CHECK(p && p[15] == 0xAB && p[16] == 0 && p[63] == 0);
    ZeroMemory(p, 64);
    CopyMemory(p, "abc", 4);
    MoveMemory(p + 1, p, 3);
    CHECK(p[1] == 'a' && p[3] == 'c');
    CHECK(HeapFree(GetProcessHeap(), 0, p));

    LONG v = 5;
    CHECK(InterlockedCompareExchange(&v, 7, 5) == 5 && v == 7);
    CHECK(InterlockedCompareExchange(&v, 9, 5) == 7 && v == 7);
    CHECK(InterlockedExchange(&v, 1) == 7 && InterlockedDecrement(&v) == 0);
}

static void check_startup(void)
{
    WSADATA d;
    CHECK(WSAStartup(MAKEWORD(2, 2), NULL) == WSAEFAULT);
    CHECK(WSACleanup() == SOCKET_ERROR && WSAGetLastError() == WSANOTINITIALISED);
    CHECK(WSAStartup(MAKEWORD(2, 2), &d) == 0);
    CHECK(d.wVersion == 0x0202 && d.wHighVersion == 0x0202);
    CHECK(strcmp(d.szDescription, "WinSock 2.0") == 0);
    CHECK(WSAStartup(MAKEWORD(3, 1), &d) == 0 && d.wVersion == 0x0202);
    CHECK(WSAStartup(MAKEWORD(1, 1), &d) == 0 && d.wVersion == 0x0101);
    CHECK(WSAStartup(MAKEWORD(0, 9), &d) == WSAVERNOTSUPPORTED && d.wHighVersion == 0x0202);
    CHECK(WSACleanup() == 0 && WSACleanup() == 0 && WSACleanup() == 0);
    CHECK(WSACleanup() == SOCKET_ERROR && WSAGetLastError() == WSANOTINITIALISED);
}

/* ---- console control handlers ---- */
static int calls_first, calls_second;
static DWORD seen_type, handler_thread;

static BOOL WINAPI first_handler(DWORD type)
{
    calls_first++;
    seen_type = type;
    handler_thread = GetCurrentThreadId();
    return FALSE;
}
static BOOL WINAPI second_handler(DWORD type)
{
    calls_second++;
    seen_type = type;
    handler_thread = GetCurrentThreadId();
    return TRUE;
}

static void check_console(void)
{
    CHECK(!nspv2_host_console_event(CTRL_CLOSE_EVENT)); /* nobody registered */
    CHECK(SetConsoleCtrlHandler(first_handler, TRUE));
    CHECK(SetConsoleCtrlHandler(second_handler, TRUE));
    CHECK(nspv2_host_console_event(CTRL_CLOSE_EVENT)); /* the last registered took it */
    CHECK(calls_second == 1 && calls_first == 0 && seen_type == CTRL_CLOSE_EVENT);
    CHECK(handler_thread != 0 && handler_thread != GetCurrentThreadId());
    CHECK(SetConsoleCtrlHandler(second_handler, FALSE));
    CHECK(!nspv2_host_console_event(CTRL_C_EVENT)); /* first_handler declines */
    CHECK(calls_first == 1 && seen_type == CTRL_C_EVENT);
    SetLastError(0);
    CHECK(!SetConsoleCtrlHandler(second_handler, FALSE));
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
    CHECK(SetConsoleCtrlHandler(first_handler, FALSE));
    CHECK(!nspv2_host_console_event(7)); /* not a console event */
}

int main(void)
{
    check_critical_section();
    check_strings();
    check_events();
    check_last_error_and_heap();
    check_startup();
    check_console();
    printf("%d checks, %d failed\n", checks, failed);
    return failed != 0;
}
