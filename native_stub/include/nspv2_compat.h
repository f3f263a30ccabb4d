/*
 * nspv2_compat.h - the Win32 pieces Windows providers commonly use, so that
 * provider source written for Windows builds unchanged elsewhere.
 *
 * On Windows this only includes the real headers (windows.h, the Winsock
 * headers through nspv2_host.h / nspv2_abi.h, strsafe.h). Everywhere else it
 * provides, on top of nspv2_abi.h and nspv2_host.h:
 *
 *   - SAL annotations (_In_, _Out_, _Inout_opt_, _Outptr_, ...): empty;
 *   - the common typedefs (WORD, LONG, LPCSTR, PWSTR, SIZE_T, ULONG_PTR,
 *     HRESULT, TCHAR / LPTSTR, ...) with Windows' widths (LLP64);
 *   - CRITICAL_SECTION, recursive as on Windows;
 *   - SetLastError / GetLastError: the host's per-thread Winsock last error
 *     (WSASetLastError / WSAGetLastError), as on Windows where both are the
 *     same per-thread value;
 *   - ZeroMemory, CopyMemory, MoveMemory, FillMemory; GetProcessHeap,
 *     HeapAlloc (HEAP_ZERO_MEMORY), HeapReAlloc, HeapFree, HeapSize;
 *   - Interlocked{Increment,Decrement,Exchange,ExchangeAdd,CompareExchange}
 *     (and the Pointer forms);
 *   - events: CreateEventW / CreateEventA (unnamed: a name is ignored),
 *     SetEvent, ResetEvent, WaitForSingleObject (INFINITE or milliseconds),
 *     CloseHandle (of an event); Sleep;
 *   - the generic names of UNICODE builds: WSAQUERYSET2, LPWSAQUERYSET2,
 *     PWSAQUERYSET2, WSAQUERYSET, LPWSAQUERYSET, PCNSPV2_ROUTINE, TCHAR,
 *     TEXT / _T, _tcs*;
 *   - UTF-16 string functions on 16-bit wchar_t: wcslen, wcsnlen, wcscpy,
 *     wcsncpy, wcscat, wcsncat, wcscmp, wcsncmp, wcschr, wcsrchr, wcsstr,
 *     _wcsdup, _wcsicmp, _wcsnicmp (ASCII case folding, as the "C" locale
 *     does), wcscpy_s, wcsncpy_s, wcscat_s, StringCchCopyW, StringCchCatW,
 *     StringCchLengthW, StringCbCopyW, StringCbLengthW; _stricmp, _strnicmp;
 *   - TRUE, FALSE, INFINITE, MAX_PATH, WAIT_*, ERROR_*, S_OK, E_*, ...
 *
 * Build with 16-bit wchar_t, as Windows has it, so that L"..." literals are
 * UTF-16 WCHAR strings: `nspv2 config --compat` prints the flags
 * (-fshort-wchar -DUNICODE -D_UNICODE and -I for include/compat, whose
 * windows.h, winsock2.h, ws2spi.h, ws2tcpip.h, nsemail.h, sal.h and
 * strsafe.h include this header). The C library's own wide functions assume
 * a 4-byte wchar_t: the names above are macros for nspv2_-prefixed inline
 * functions, defined after the C library headers are included, so a later
 * #include <wchar.h> is harmless. Formatted wide I/O (swprintf, wprintf) is
 * not provided.
 *
 * The non-inline parts (critical sections, events, Sleep) are in the host
 * library (src/compat.c), which a provider links anyway.
 */
#ifndef NSPV2_COMPAT_H
#define NSPV2_COMPAT_H

#ifdef _WIN32

#include "nspv2_host.h" /* before the Winsock headers: see nspv2_host.h */
#include <windows.h>
#include <strsafe.h>

#else /* !_WIN32 */

#include "nspv2_host.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NSPV2_COMPAT_IMPLEMENTATION
_Static_assert(sizeof(wchar_t) == 2,
               "nspv2_compat.h needs a 16-bit wchar_t, as on Windows: compile with -fshort-wchar "
               "(nspv2 config --compat prints the flags)");
#endif

/* ---- SAL annotations: documentation only ---- */
#define _In_
#define _In_opt_
#define _In_z_
#define _In_opt_z_
#define _In_count_(n)
#define _In_reads_(n)
#define _In_reads_opt_(n)
#define _In_reads_bytes_(n)
#define _In_reads_bytes_opt_(n)
#define _In_reads_z_(n)
#define _Out_
#define _Out_opt_
#define _Out_z_cap_(n)
#define _Out_writes_(n)
#define _Out_writes_opt_(n)
#define _Out_writes_z_(n)
#define _Out_writes_bytes_(n)
#define _Out_writes_bytes_opt_(n)
#define _Out_writes_to_(n, c)
#define _Out_writes_bytes_to_(n, c)
#define _Out_writes_bytes_to_opt_(n, c)
#define _Out_writes_bytes_all_(n)
#define _Inout_
#define _Inout_opt_
#define _Inout_z_
#define _Inout_updates_(n)
#define _Inout_updates_opt_(n)
#define _Inout_updates_bytes_(n)
#define _Inout_updates_bytes_opt_(n)
#define _Outptr_
#define _Outptr_opt_
#define _Outptr_result_maybenull_
#define _Outptr_result_buffer_(n)
#define _Outptr_result_bytebuffer_(n)
#define _Deref_out_
#define _Deref_out_opt_
#define _Ret_maybenull_
#define _Ret_notnull_
#define _Ret_z_
#define _Result_nullonfailure_
#define _Success_(expr)
#define _Check_return_
#define _Must_inspect_result_
#define _Null_terminated_
#define _NullNull_terminated_
#define _Field_size_(n)
#define _Field_size_opt_(n)
#define _Field_size_bytes_(n)
#define _Field_size_bytes_opt_(n)
#define _Field_z_
#define _Printf_format_string_
#define _Reserved_
#define _Pre_
#define _Post_
#define _Pre_notnull_
#define _Post_invalid_
#define _Frees_ptr_
#define _Frees_ptr_opt_
#define _Acquires_lock_(l)
#define _Releases_lock_(l)
#define _Requires_lock_held_(l)
#define _Guarded_by_(l)
#define _Interlocked_operand_
#define _When_(c, a)
#define _Analysis_assume_(e)
#define _Use_decl_annotations_
#define __in
#define __in_opt
#define __out
#define __out_opt
#define __inout
#define __inout_opt
#define __reserved
#define IN
#define OUT
#define OPTIONAL

/* ---- calling conventions and declaration helpers ---- */
#define CALLBACK
#define APIENTRY
#define WINAPIV
#define STDAPI
#define UNREFERENCED_PARAMETER(P) ((void)(P))
#define ARRAYSIZE(a) (sizeof(a) / sizeof((a)[0]))
#define _countof(a) (sizeof(a) / sizeof((a)[0]))
#define RTL_NUMBER_OF(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD_OFFSET(type, field) ((LONG)offsetof(type, field))
#define CONTAINING_RECORD(address, type, field) \
    ((type *)((char *)(address) - offsetof(type, field)))

/* ---- typedefs (Windows widths: LONG is 32-bit) ---- */
typedef int16_t SHORT;
typedef SHORT *PSHORT;
typedef int32_t LONG;
typedef LONG *PLONG, *LPLONG;
typedef int64_t LONGLONG;
typedef uint64_t ULONGLONG, DWORD64, DWORDLONG;
typedef int64_t LONG64, INT64;
typedef uint64_t ULONG64, UINT64;
typedef int32_t INT32;
typedef uint32_t UINT32, DWORD32;
typedef uint32_t UINT;
typedef UINT *PUINT;
typedef intptr_t INT_PTR, LONG_PTR, SSIZE_T;
typedef uintptr_t UINT_PTR, ULONG_PTR, DWORD_PTR;
typedef size_t SIZE_T;
typedef SIZE_T *PSIZE_T;
typedef ULONG_PTR *PULONG_PTR;
typedef WORD *PWORD, *LPWORD;
typedef DWORD *PDWORD;
typedef ULONG *PULONG;
typedef USHORT *PUSHORT;
typedef BYTE *PBYTE;
typedef BYTE BOOLEAN;
typedef BOOLEAN *PBOOLEAN;
typedef BOOL *PBOOL, *LPBOOL;
typedef INT *PINT;
typedef CHAR *PCHAR, *PSTR;
typedef const CHAR *LPCSTR, *PCSTR;
typedef WCHAR *PWCHAR, *PWSTR, *NWPSTR;
typedef const WCHAR *PCWSTR;
typedef const void *LPCVOID;
typedef float FLOAT;
typedef LONG HRESULT;
typedef int errno_t;
typedef HANDLE *PHANDLE;
typedef HANDLE HMODULE, HINSTANCE, HLOCAL, HGLOBAL, HKEY;
typedef PVOID PSECURITY_DESCRIPTOR;
typedef struct _SECURITY_ATTRIBUTES {
    DWORD nLength;
    LPVOID lpSecurityDescriptor;
    BOOL bInheritHandle;
} SECURITY_ATTRIBUTES, *PSECURITY_ATTRIBUTES, *LPSECURITY_ATTRIBUTES;

#ifdef UNICODE
typedef WCHAR TCHAR, TBYTE;
#define __TEXT(quote) L##quote
#else
typedef char TCHAR, TBYTE;
#define __TEXT(quote) quote
#endif
typedef TCHAR *PTCHAR, *LPTSTR, *PTSTR;
typedef const TCHAR *LPCTSTR, *PCTSTR;
#define TEXT(quote) __TEXT(quote)
#ifndef _T
#define _T(x) __TEXT(x)
#endif

/* ---- the generic (UNICODE) names of the Winsock structures ---- */
typedef const NSPV2_ROUTINE *PCNSPV2_ROUTINE;
#ifdef UNICODE
typedef WSAQUERYSET2W WSAQUERYSET2;
typedef PWSAQUERYSET2W PWSAQUERYSET2;
typedef LPWSAQUERYSET2W LPWSAQUERYSET2;
typedef WSAQUERYSETW WSAQUERYSET;
typedef PWSAQUERYSETW PWSAQUERYSET;
typedef LPWSAQUERYSETW LPWSAQUERYSET;
typedef WSANAMESPACE_INFOEXW WSANAMESPACE_INFOEX;
typedef PWSANAMESPACE_INFOEXW PWSANAMESPACE_INFOEX;
typedef LPWSANAMESPACE_INFOEXW LPWSANAMESPACE_INFOEX;
#else
typedef WSAQUERYSET2A WSAQUERYSET2;
typedef PWSAQUERYSET2A PWSAQUERYSET2;
typedef LPWSAQUERYSET2A LPWSAQUERYSET2;
#endif

/* ---- constants ---- */
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#ifndef NULL
#define NULL ((void *)0)
#endif
#define INFINITE 0xFFFFFFFFu
#define MAX_PATH 260
#define INVALID_HANDLE_VALUE ((HANDLE)(LONG_PTR)-1)
#define WAIT_OBJECT_0 0x00000000u
#define WAIT_ABANDONED 0x00000080u
#define WAIT_TIMEOUT 0x00000102u
#define WAIT_FAILED 0xFFFFFFFFu
#define HEAP_NO_SERIALIZE 0x00000001u
#define HEAP_GENERATE_EXCEPTIONS 0x00000004u
#define HEAP_ZERO_MEMORY 0x00000008u
#define HEAP_REALLOC_IN_PLACE_ONLY 0x00000010u

#define ERROR_SUCCESS 0L
#define ERROR_INVALID_FUNCTION 1L
#define ERROR_FILE_NOT_FOUND 2L
#define ERROR_ACCESS_DENIED 5L
#define ERROR_INVALID_HANDLE 6L
#define ERROR_NOT_ENOUGH_MEMORY 8L
#define ERROR_OUTOFMEMORY 14L
#define ERROR_NOT_SUPPORTED 50L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_INSUFFICIENT_BUFFER 122L
#define ERROR_ALREADY_EXISTS 183L
#define ERROR_MORE_DATA 234L
#define ERROR_NO_MORE_ITEMS 259L
#define ERROR_IO_PENDING 997L
#define ERROR_NOT_FOUND 1168L
#define ERROR_TIMEOUT 1460L

#define S_OK ((HRESULT)0)
#define S_FALSE ((HRESULT)1)
#define E_NOTIMPL ((HRESULT)0x80004001u)
#define E_POINTER ((HRESULT)0x80004003u)
#define E_FAIL ((HRESULT)0x80004005u)
#define E_UNEXPECTED ((HRESULT)0x8000FFFFu)
#define E_OUTOFMEMORY ((HRESULT)0x8007000Eu)
#define E_INVALIDARG ((HRESULT)0x80070057u)
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#define HRESULT_FROM_WIN32(x) \
    ((HRESULT)(x) <= 0 ? (HRESULT)(x) : (HRESULT)(((uint32_t)(x) & 0x0000FFFFu) | 0x80070000u))
#define STRSAFE_MAX_CCH 2147483647
#define STRSAFE_E_INSUFFICIENT_BUFFER ((HRESULT)0x8007007Au)
#define STRSAFE_E_INVALID_PARAMETER ((HRESULT)0x80070057u)
#define STRSAFE_E_END_OF_FILE ((HRESULT)0x80070026u)
#ifndef _TRUNCATE
#define _TRUNCATE ((size_t)-1)
#endif
#ifndef STRUNCATE
#define STRUNCATE 80
#endif

#define MAKEWORD(a, b) ((WORD)(((BYTE)((a) & 0xff)) | ((WORD)((BYTE)((b) & 0xff))) << 8))
#define MAKELONG(a, b) ((LONG)(((WORD)((a) & 0xffff)) | ((DWORD)((WORD)((b) & 0xffff))) << 16))
#define LOWORD(l) ((WORD)((l) & 0xffff))
#define HIWORD(l) ((WORD)(((DWORD)(l) >> 16) & 0xffff))
#define LOBYTE(w) ((BYTE)((w) & 0xff))
#define HIBYTE(w) ((BYTE)(((WORD)(w) >> 8) & 0xff))

/* Windows' address family values (nspv2_abi.h's structures use them), for
 * code that does not include the host's <sys/socket.h>. */
#ifndef AF_UNSPEC
#define AF_UNSPEC 0
#endif
#ifndef AF_INET
#define AF_INET NSPV2_AF_INET
#endif
#ifndef AF_INET6
#define AF_INET6 NSPV2_AF_INET6
#endif

/* ---- last error: the host's per-thread Winsock last error ---- */
static inline void nspv2_SetLastError(DWORD code) { WSASetLastError((int)code); }
static inline DWORD nspv2_GetLastError(void) { return (DWORD)WSAGetLastError(); }
#define SetLastError nspv2_SetLastError
#define GetLastError nspv2_GetLastError

/* ---- memory ---- */
#define ZeroMemory(d, n) memset((d), 0, (n))
#define SecureZeroMemory(d, n) memset((d), 0, (n))
#define FillMemory(d, n, v) memset((d), (v), (n))
#define CopyMemory(d, s, n) memcpy((d), (s), (n))
#define MoveMemory(d, s, n) memmove((d), (s), (n))
#define RtlZeroMemory ZeroMemory
#define RtlCopyMemory CopyMemory
#define RtlMoveMemory MoveMemory

/* Heap blocks carry their size in front (HeapSize, HeapReAlloc zeroing the
 * growth); the one "process heap" is a token. */
#define NSPV2_HEAP_HEADER 16u
static inline HANDLE nspv2_GetProcessHeap(void) { return (HANDLE)(uintptr_t)0x4E535048u; }
static inline LPVOID nspv2_HeapAlloc(HANDLE heap, DWORD flags, SIZE_T bytes)
{
    (void)heap;
    if (bytes > SIZE_MAX - NSPV2_HEAP_HEADER)
        return NULL;
    unsigned char *block = (flags & HEAP_ZERO_MEMORY) ? (unsigned char *)calloc(1, NSPV2_HEAP_HEADER + bytes)
                                                      : (unsigned char *)malloc(NSPV2_HEAP_HEADER + bytes);
    if (!block) {
        WSASetLastError((int)ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    memcpy(block, &bytes, sizeof bytes);
    return block + NSPV2_HEAP_HEADER;
}
static inline SIZE_T nspv2_HeapSize(HANDLE heap, DWORD flags, LPCVOID mem)
{
    (void)heap;
    (void)flags;
    SIZE_T bytes;
    if (!mem)
        return (SIZE_T)-1;
    memcpy(&bytes, (const unsigned char *)mem - NSPV2_HEAP_HEADER, sizeof bytes);
    return bytes;
}
static inline BOOL nspv2_HeapFree(HANDLE heap, DWORD flags, LPVOID mem)
{
    (void)heap;
    (void)flags;
    if (mem)
        free((unsigned char *)mem - NSPV2_HEAP_HEADER);
    return TRUE;
}
static inline LPVOID nspv2_HeapReAlloc(HANDLE heap, DWORD flags, LPVOID mem, SIZE_T bytes)
{
    if (!mem)
        return NULL; /* as Windows: HeapReAlloc needs a block */
    SIZE_T old = nspv2_HeapSize(heap, 0, mem);
    if (flags & HEAP_REALLOC_IN_PLACE_ONLY)
        return bytes <= old ? mem : NULL;
    if (bytes > SIZE_MAX - NSPV2_HEAP_HEADER)
        return NULL;
    unsigned char *block =
        (unsigned char *)realloc((unsigned char *)mem - NSPV2_HEAP_HEADER, NSPV2_HEAP_HEADER + bytes);
    if (!block) {
        WSASetLastError((int)ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    memcpy(block, &bytes, sizeof bytes);
    if ((flags & HEAP_ZERO_MEMORY) && bytes > old)
        memset(block + NSPV2_HEAP_HEADER + old, 0, bytes - old);
    return block + NSPV2_HEAP_HEADER;
}
#define GetProcessHeap nspv2_GetProcessHeap
#define HeapAlloc nspv2_HeapAlloc
#define HeapSize nspv2_HeapSize
#define HeapFree nspv2_HeapFree
#define HeapReAlloc nspv2_HeapReAlloc

/* ---- interlocked operations (full barriers, as on Windows) ---- */
static inline LONG nspv2_InterlockedIncrement(LONG volatile *p)
{
    return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST);
}
static inline LONG nspv2_InterlockedDecrement(LONG volatile *p)
{
    return __atomic_sub_fetch(p, 1, __ATOMIC_SEQ_CST);
}
static inline LONG nspv2_InterlockedExchange(LONG volatile *p, LONG v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
static inline LONG nspv2_InterlockedExchangeAdd(LONG volatile *p, LONG v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline LONG nspv2_InterlockedCompareExchange(LONG volatile *p, LONG exchange, LONG comparand)
{
    __atomic_compare_exchange_n(p, &comparand, exchange, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return comparand; /* the initial value */
}
static inline PVOID nspv2_InterlockedExchangePointer(PVOID volatile *p, PVOID v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
static inline PVOID nspv2_InterlockedCompareExchangePointer(PVOID volatile *p, PVOID exchange,
                                                            PVOID comparand)
{
    __atomic_compare_exchange_n(p, &comparand, exchange, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return comparand;
}
#define InterlockedIncrement nspv2_InterlockedIncrement
#define InterlockedDecrement nspv2_InterlockedDecrement
#define InterlockedExchange nspv2_InterlockedExchange
#define InterlockedExchangeAdd nspv2_InterlockedExchangeAdd
#define InterlockedCompareExchange nspv2_InterlockedCompareExchange
#define InterlockedExchangePointer nspv2_InterlockedExchangePointer
#define InterlockedCompareExchangePointer nspv2_InterlockedCompareExchangePointer

/* ---- critical sections, events, Sleep (the host library, src/compat.c) ---- */
typedef struct _RTL_CRITICAL_SECTION {
    pthread_mutex_t nspv2_mutex; /* recursive */
    DWORD SpinCount;
} CRITICAL_SECTION, *PCRITICAL_SECTION, *LPCRITICAL_SECTION;

NSPV2_HOST_API void nspv2_compat_cs_init(LPCRITICAL_SECTION cs, DWORD spin);
NSPV2_HOST_API void nspv2_compat_cs_enter(LPCRITICAL_SECTION cs);
NSPV2_HOST_API BOOL nspv2_compat_cs_try_enter(LPCRITICAL_SECTION cs);
NSPV2_HOST_API void nspv2_compat_cs_leave(LPCRITICAL_SECTION cs);
NSPV2_HOST_API void nspv2_compat_cs_delete(LPCRITICAL_SECTION cs);
/* NULL (last error ERROR_NOT_ENOUGH_MEMORY) when out of memory. */
NSPV2_HOST_API HANDLE nspv2_compat_event_create(BOOL manual_reset, BOOL initial_state);
NSPV2_HOST_API BOOL nspv2_compat_event_set(HANDLE event);
NSPV2_HOST_API BOOL nspv2_compat_event_reset(HANDLE event);
/* WAIT_OBJECT_0, WAIT_TIMEOUT, or WAIT_FAILED (last error ERROR_INVALID_HANDLE). */
NSPV2_HOST_API DWORD nspv2_compat_wait(HANDLE handle, DWORD milliseconds);
NSPV2_HOST_API BOOL nspv2_compat_close_handle(HANDLE handle);
NSPV2_HOST_API void nspv2_compat_sleep(DWORD milliseconds);
NSPV2_HOST_API DWORD nspv2_compat_thread_id(void);

static inline void nspv2_InitializeCriticalSection(LPCRITICAL_SECTION cs)
{
    nspv2_compat_cs_init(cs, 0);
}
static inline BOOL nspv2_InitializeCriticalSectionAndSpinCount(LPCRITICAL_SECTION cs, DWORD spin)
{
    nspv2_compat_cs_init(cs, spin);
    return TRUE;
}
static inline BOOL nspv2_InitializeCriticalSectionEx(LPCRITICAL_SECTION cs, DWORD spin, DWORD flags)
{
    (void)flags;
    nspv2_compat_cs_init(cs, spin);
    return TRUE;
}
static inline HANDLE nspv2_CreateEventW(LPSECURITY_ATTRIBUTES sa, BOOL manual_reset,
                                        BOOL initial_state, LPCWSTR name)
{
    (void)sa;
    (void)name;
    return nspv2_compat_event_create(manual_reset, initial_state);
}
static inline HANDLE nspv2_CreateEventA(LPSECURITY_ATTRIBUTES sa, BOOL manual_reset,
                                        BOOL initial_state, LPCSTR name)
{
    (void)sa;
    (void)name;
    return nspv2_compat_event_create(manual_reset, initial_state);
}
#define InitializeCriticalSection nspv2_InitializeCriticalSection
#define InitializeCriticalSectionAndSpinCount nspv2_InitializeCriticalSectionAndSpinCount
#define InitializeCriticalSectionEx nspv2_InitializeCriticalSectionEx
#define EnterCriticalSection nspv2_compat_cs_enter
#define TryEnterCriticalSection nspv2_compat_cs_try_enter
#define LeaveCriticalSection nspv2_compat_cs_leave
#define DeleteCriticalSection nspv2_compat_cs_delete
#define CreateEventW nspv2_CreateEventW
#define CreateEventA nspv2_CreateEventA
#ifdef UNICODE
#define CreateEvent nspv2_CreateEventW
#else
#define CreateEvent nspv2_CreateEventA
#endif
#define SetEvent nspv2_compat_event_set
#define ResetEvent nspv2_compat_event_reset
#define WaitForSingleObject nspv2_compat_wait
#define CloseHandle nspv2_compat_close_handle
#define Sleep nspv2_compat_sleep
#define GetCurrentThreadId nspv2_compat_thread_id

#ifndef NSPV2_COMPAT_IMPLEMENTATION

/* ---- UTF-16 strings (wchar_t is WCHAR here) ---- */
static inline size_t nspv2_wcslen(const wchar_t *s)
{
    const wchar_t *p = s;
    while (*p)
        p++;
    return (size_t)(p - s);
}
static inline size_t nspv2_wcsnlen(const wchar_t *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}
static inline wchar_t *nspv2_wcscpy(wchar_t *d, const wchar_t *s)
{
    wchar_t *r = d;
    while ((*d++ = *s++) != 0) {
    }
    return r;
}
static inline wchar_t *nspv2_wcsncpy(wchar_t *d, const wchar_t *s, size_t n)
{
    size_t i = 0;
    for (; i < n && s[i]; i++)
        d[i] = s[i];
    for (; i < n; i++)
        d[i] = 0;
    return d;
}
static inline wchar_t *nspv2_wcscat(wchar_t *d, const wchar_t *s)
{
    nspv2_wcscpy(d + nspv2_wcslen(d), s);
    return d;
}
static inline wchar_t *nspv2_wcsncat(wchar_t *d, const wchar_t *s, size_t n)
{
    wchar_t *e = d + nspv2_wcslen(d);
    size_t i = 0;
    for (; i < n && s[i]; i++)
        e[i] = s[i];
    e[i] = 0;
    return d;
}
static inline int nspv2_wcsncmp(const wchar_t *a, const wchar_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
        if (!a[i])
            return 0;
    }
    return 0;
}
static inline int nspv2_wcscmp(const wchar_t *a, const wchar_t *b)
{
    return nspv2_wcsncmp(a, b, SIZE_MAX);
}
static inline wchar_t *nspv2_wcschr(const wchar_t *s, wchar_t c)
{
    for (;; s++) {
        if (*s == c)
            return (wchar_t *)(uintptr_t)s;
        if (!*s)
            return NULL;
    }
}
static inline wchar_t *nspv2_wcsrchr(const wchar_t *s, wchar_t c)
{
    const wchar_t *found = NULL;
    for (;; s++) {
        if (*s == c)
            found = s;
        if (!*s)
            return (wchar_t *)(uintptr_t)found;
    }
}
static inline wchar_t *nspv2_wcsstr(const wchar_t *hay, const wchar_t *needle)
{
    size_t n = nspv2_wcslen(needle);
    for (; *hay; hay++)
        if (nspv2_wcsncmp(hay, needle, n) == 0)
            return (wchar_t *)(uintptr_t)hay;
    return n == 0 ? (wchar_t *)(uintptr_t)hay : NULL;
}
static inline wchar_t *nspv2_wcsdup(const wchar_t *s)
{
    size_t bytes = (nspv2_wcslen(s) + 1) * sizeof(wchar_t);
    wchar_t *d = (wchar_t *)malloc(bytes);
    if (d)
        memcpy(d, s, bytes);
    return d;
}
/* The "C" locale's case folding: ASCII letters only, compared lowercased. */
static inline unsigned nspv2_fold_ascii(unsigned c) { return c >= 'A' && c <= 'Z' ? c + 32u : c; }
static inline int nspv2_wcsnicmp(const wchar_t *a, const wchar_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned x = nspv2_fold_ascii((unsigned)a[i]), y = nspv2_fold_ascii((unsigned)b[i]);
        if (x != y)
            return x < y ? -1 : 1;
        if (!x)
            return 0;
    }
    return 0;
}
static inline int nspv2_wcsicmp(const wchar_t *a, const wchar_t *b)
{
    return nspv2_wcsnicmp(a, b, SIZE_MAX);
}
static inline int nspv2_strnicmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned x = nspv2_fold_ascii((unsigned char)a[i]);
        unsigned y = nspv2_fold_ascii((unsigned char)b[i]);
        if (x != y)
            return x < y ? -1 : 1;
        if (!x)
            return 0;
    }
    return 0;
}
static inline int nspv2_stricmp(const char *a, const char *b) { return nspv2_strnicmp(a, b, SIZE_MAX); }

/* The _s forms: 0, EINVAL (22) for a NULL pointer or size 0, ERANGE (34)
 * when it does not fit (dest then ""), STRUNCATE (80) for wcsncpy_s with
 * _TRUNCATE when it had to cut. */
static inline errno_t nspv2_wcsncpy_s(wchar_t *d, size_t size, const wchar_t *s, size_t count)
{
    if (!d || size == 0)
        return 22;
    if (!s) {
        d[0] = 0;
        return 22;
    }
    size_t n = nspv2_wcsnlen(s, count == _TRUNCATE ? size : count);
    if (n >= size) {
        if (count == _TRUNCATE) {
            memcpy(d, s, (size - 1) * sizeof(wchar_t));
            d[size - 1] = 0;
            return STRUNCATE;
        }
        d[0] = 0;
        return 34;
    }
    memcpy(d, s, n * sizeof(wchar_t));
    d[n] = 0;
    return 0;
}
static inline errno_t nspv2_wcscpy_s(wchar_t *d, size_t size, const wchar_t *s)
{
    if (!d || size == 0)
        return 22;
    if (!s) {
        d[0] = 0;
        return 22;
    }
    if (nspv2_wcsnlen(s, size) >= size) {
        d[0] = 0;
        return 34;
    }
    nspv2_wcscpy(d, s);
    return 0;
}
static inline errno_t nspv2_wcscat_s(wchar_t *d, size_t size, const wchar_t *s)
{
    if (!d || size == 0)
        return 22;
    size_t used = nspv2_wcsnlen(d, size);
    if (!s || used == size) {
        d[0] = 0;
        return 22;
    }
    if (nspv2_wcsnlen(s, size - used) >= size - used) {
        d[0] = 0;
        return 34;
    }
    nspv2_wcscpy(d + used, s);
    return 0;
}

/* strsafe.h: S_OK; STRSAFE_E_INSUFFICIENT_BUFFER with the copy cut and
 * terminated; STRSAFE_E_INVALID_PARAMETER for a size of 0 or above
 * STRSAFE_MAX_CCH (StringCchLengthW: also no terminator within cchMax). */
static inline HRESULT nspv2_StringCchCopyW(wchar_t *d, size_t cch, const wchar_t *s)
{
    if (cch == 0 || cch > STRSAFE_MAX_CCH)
        return STRSAFE_E_INVALID_PARAMETER;
    size_t i = 0;
    for (; i < cch - 1 && s[i]; i++)
        d[i] = s[i];
    d[i] = 0;
    return s[i] ? STRSAFE_E_INSUFFICIENT_BUFFER : S_OK;
}
static inline HRESULT nspv2_StringCchCatW(wchar_t *d, size_t cch, const wchar_t *s)
{
    if (cch == 0 || cch > STRSAFE_MAX_CCH)
        return STRSAFE_E_INVALID_PARAMETER;
    size_t used = nspv2_wcsnlen(d, cch);
    if (used == cch)
        return STRSAFE_E_INVALID_PARAMETER;
    return nspv2_StringCchCopyW(d + used, cch - used, s);
}
static inline HRESULT nspv2_StringCchLengthW(const wchar_t *s, size_t cch_max, size_t *cch)
{
    size_t n = (s && cch_max <= STRSAFE_MAX_CCH) ? nspv2_wcsnlen(s, cch_max) : cch_max;
    if (!s || cch_max > STRSAFE_MAX_CCH || n == cch_max) {
        if (cch)
            *cch = 0;
        return STRSAFE_E_INVALID_PARAMETER;
    }
    if (cch)
        *cch = n;
    return S_OK;
}
static inline HRESULT nspv2_StringCbCopyW(wchar_t *d, size_t cb, const wchar_t *s)
{
    return nspv2_StringCchCopyW(d, cb / sizeof(wchar_t), s);
}
static inline HRESULT nspv2_StringCbLengthW(const wchar_t *s, size_t cb_max, size_t *cb)
{
    size_t cch = 0;
    HRESULT hr = nspv2_StringCchLengthW(s, cb_max / sizeof(wchar_t), &cch);
    if (cb)
        *cb = cch * sizeof(wchar_t);
    return hr;
}

#define wcslen nspv2_wcslen
#define wcsnlen nspv2_wcsnlen
#define wcscpy nspv2_wcscpy
#define wcsncpy nspv2_wcsncpy
#define wcscat nspv2_wcscat
#define wcsncat nspv2_wcsncat
#define wcscmp nspv2_wcscmp
#define wcsncmp nspv2_wcsncmp
#define wcschr nspv2_wcschr
#define wcsrchr nspv2_wcsrchr
#define wcsstr nspv2_wcsstr
#define _wcsdup nspv2_wcsdup
#define wcsdup nspv2_wcsdup
#define _wcsicmp nspv2_wcsicmp
#define _wcsnicmp nspv2_wcsnicmp
#define _stricmp nspv2_stricmp
#define _strnicmp nspv2_strnicmp
#define wcscpy_s nspv2_wcscpy_s
#define wcsncpy_s nspv2_wcsncpy_s
#define wcscat_s nspv2_wcscat_s
#define StringCchCopyW nspv2_StringCchCopyW
#define StringCchCatW nspv2_StringCchCatW
#define StringCchLengthW nspv2_StringCchLengthW
#define StringCbCopyW nspv2_StringCbCopyW
#define StringCbLengthW nspv2_StringCbLengthW
#ifdef UNICODE
#define StringCchCopy nspv2_StringCchCopyW
#define StringCchCat nspv2_StringCchCatW
#define StringCchLength nspv2_StringCchLengthW
#define StringCbCopy nspv2_StringCbCopyW
#define StringCbLength nspv2_StringCbLengthW
#define _tcslen nspv2_wcslen
#define _tcscpy nspv2_wcscpy
#define _tcsncpy nspv2_wcsncpy
#define _tcscat nspv2_wcscat
#define _tcscmp nspv2_wcscmp
#define _tcsncmp nspv2_wcsncmp
#define _tcsicmp nspv2_wcsicmp
#define _tcsnicmp nspv2_wcsnicmp
#define _tcschr nspv2_wcschr
#define _tcsrchr nspv2_wcsrchr
#define _tcsstr nspv2_wcsstr
#else
#define _tcslen strlen
#define _tcscpy strcpy
#define _tcsncpy strncpy
#define _tcscat strcat
#define _tcscmp strcmp
#define _tcsncmp strncmp
#define _tcsicmp nspv2_stricmp
#define _tcsnicmp nspv2_strnicmp
#define _tcschr strchr
#define _tcsrchr strrchr
#define _tcsstr strstr
#endif

#endif /* !NSPV2_COMPAT_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* _WIN32 */

#endif /* NSPV2_COMPAT_H */
