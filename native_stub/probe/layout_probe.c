/*
 * layout_probe.c - what the C compiler says about the NSPv2 ABI.
 *
 * Every measured value is a named constant object, nspv2_probe__<what>, so
 * that a cross compiler's assembly output (-S) can be read without running
 * the program; run natively, main() prints "<what> <value>" per line.
 *
 *   size__S, align__S        sizeof(S), _Alignof(S)
 *   offset__S__F, fsize__S__F offsetof(S, F), sizeof(((S *)0)->F)
 *   proto__T__sdk            1 if typedef T has the Windows SDK's signature
 *   proto__T__intret         1 if T has that signature but returns int
 *   advertise__sdk           1 if WSAAdvertiseProvider takes const NSPV2_ROUTINE *
 *   advertise__ptrptr        1 if it takes a pointer to a pointer (mingw-w64)
 */
#include "nspv2_abi.h"

#include <stdint.h>
#include <stdio.h>

#define PROBE_STRUCT(S)                                                 \
    const int32_t nspv2_probe__size__##S = (int32_t)sizeof(S);          \
    const int32_t nspv2_probe__align__##S = (int32_t)_Alignof(S);
#define PROBE_FIELD(S, F)                                                   \
    const int32_t nspv2_probe__offset__##S##__##F = (int32_t)offsetof(S, F); \
    const int32_t nspv2_probe__fsize__##S##__##F = (int32_t)sizeof(((S *)0)->F);
#include "probe_structs.h"
#undef PROBE_STRUCT
#undef PROBE_FIELD

#define COMPATIBLE(a, b) (__builtin_types_compatible_p(a, b) ? 1 : 0)

/* Each prototype: its SDK form, and the same parameters returning int. */
#define PROBE_PROTOS(X)                                                                     \
    X(LPNSPV2STARTUP, INT, (LPGUID, LPVOID *))                                              \
    X(LPNSPV2CLEANUP, INT, (LPGUID, LPVOID))                                                \
    X(LPNSPV2LOOKUPSERVICEBEGIN, INT, (LPGUID, LPWSAQUERYSET2W, DWORD, LPVOID, LPHANDLE))   \
    X(LPNSPV2LOOKUPSERVICENEXTEX, VOID, (HANDLE, HANDLE, DWORD, LPDWORD, LPWSAQUERYSET2W))  \
    X(LPNSPV2LOOKUPSERVICEEND, INT, (HANDLE))                                               \
    X(LPNSPV2SETSERVICEEX, VOID,                                                            \
      (HANDLE, LPGUID, LPWSAQUERYSET2W, WSAESETSERVICEOP, DWORD, LPVOID))                   \
    X(LPNSPV2CLIENTSESSIONRUNDOWN, VOID, (LPGUID, LPVOID))

#define DEFINE_PROTO(T, RET, ARGS)                                                        \
    const int32_t nspv2_probe__proto__##T##__sdk = COMPATIBLE(T, RET(WSAAPI *) ARGS);     \
    const int32_t nspv2_probe__proto__##T##__intret = COMPATIBLE(T, int(WSAAPI *) ARGS);
PROBE_PROTOS(DEFINE_PROTO)

#ifdef _WIN32
/* The SDK: INT WSAAPI WSAAdvertiseProvider(const GUID *, const NSPV2_ROUTINE *). */
const int32_t nspv2_probe__advertise__sdk =
    COMPATIBLE(__typeof__(&WSAAdvertiseProvider), INT(WSAAPI *)(const GUID *, const NSPV2_ROUTINE *));
const int32_t nspv2_probe__advertise__ptrptr = COMPATIBLE(
    __typeof__(&WSAAdvertiseProvider), INT(WSAAPI *)(const GUID *, NSPV2_ROUTINE *const *));
#endif

#ifndef NSPV2_PROBE_NO_MAIN
int main(void)
{
#define PRINT_STRUCT(S)                                                      \
    printf("size__%s %ld\n", #S, (long)nspv2_probe__size__##S);              \
    printf("align__%s %ld\n", #S, (long)nspv2_probe__align__##S);
#define PRINT_FIELD(S, F)                                                                 \
    printf("offset__%s__%s %ld\n", #S, #F, (long)nspv2_probe__offset__##S##__##F);       \
    printf("fsize__%s__%s %ld\n", #S, #F, (long)nspv2_probe__fsize__##S##__##F);
#define PROBE_STRUCT PRINT_STRUCT
#define PROBE_FIELD PRINT_FIELD
#include "probe_structs.h"
#undef PROBE_STRUCT
#undef PROBE_FIELD
#define PRINT_PROTO(T, RET, ARGS)                                                   \
    printf("proto__%s__sdk %ld\n", #T, (long)nspv2_probe__proto__##T##__sdk);       \
    printf("proto__%s__intret %ld\n", #T, (long)nspv2_probe__proto__##T##__intret);
    PROBE_PROTOS(PRINT_PROTO)
    return 0;
}
#endif
