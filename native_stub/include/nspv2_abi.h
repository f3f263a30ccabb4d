/*
 * nspv2_abi.h - the NSPv2 ABI for C code in native_stub/.
 *
 * On Windows this includes the real SDK headers. Everywhere else it declares
 * the same types with the Windows layout (LLP64 widths, 16-bit WCHAR,
 * natural alignment), so that providers and the host compile unchanged.
 *
 * Signatures are the Windows SDK's: NextEx, SetServiceEx and
 * ClientSessionRundown return VOID, and WSAAdvertiseProvider takes one
 * pointer to the routine table. mingw-w64's ws2spi.h differs (int returns,
 * a pointer to a pointer); see docs/abi.md. Code that must build against
 * both uses the NSPV2_SDK_* typedefs below and NSPV2_SLOT() to store a
 * function in a table slot.
 */
#ifndef NSPV2_ABI_H
#define NSPV2_ABI_H

#ifdef _WIN32

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0600
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <ws2spi.h>
#include <nspapi.h>
#include <nsemail.h>

#else /* !_WIN32: a mirror of the SDK declarations */

#include <stddef.h>
#include <stdint.h>

#define WSAAPI
#define WSPAPI

typedef uint8_t BYTE;
typedef uint8_t UCHAR;
typedef char CHAR;
typedef uint16_t USHORT;
typedef int32_t INT;
typedef int32_t BOOL;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef uint16_t WCHAR; /* UTF-16LE code unit; wchar_t is 4 bytes here */
typedef void VOID;
typedef void *PVOID, *LPVOID;
typedef void *HANDLE;
typedef HANDLE *LPHANDLE;
typedef DWORD *LPDWORD;
typedef INT *LPINT;
typedef BYTE *LPBYTE;
typedef WCHAR *LPWSTR;
typedef const WCHAR *LPCWSTR;
typedef CHAR *LPSTR;

/* guiddef.h */
typedef struct _GUID {
    DWORD Data1;
    USHORT Data2;
    USHORT Data3;
    BYTE Data4[8];
} GUID, *LPGUID;
typedef const GUID *LPCGUID;

/* ws2def.h */
typedef USHORT ADDRESS_FAMILY;

typedef struct nspv2_sockaddr {
    ADDRESS_FAMILY sa_family;
    CHAR sa_data[14];
} SOCKADDR, *PSOCKADDR, *LPSOCKADDR;

typedef struct nspv2_in_addr {
    union {
        struct { UCHAR s_b1, s_b2, s_b3, s_b4; } S_un_b;
        struct { USHORT s_w1, s_w2; } S_un_w;
        ULONG S_addr;
    } S_un;
} IN_ADDR, *PIN_ADDR;

typedef struct nspv2_sockaddr_in {
    ADDRESS_FAMILY sin_family;
    USHORT sin_port;
    IN_ADDR sin_addr;
    CHAR sin_zero[8];
} SOCKADDR_IN, *PSOCKADDR_IN;

typedef struct _SOCKET_ADDRESS {
    LPSOCKADDR lpSockaddr;
    INT iSockaddrLength;
} SOCKET_ADDRESS, *PSOCKET_ADDRESS, *LPSOCKET_ADDRESS;

typedef struct _CSADDR_INFO {
    SOCKET_ADDRESS LocalAddr;
    SOCKET_ADDRESS RemoteAddr;
    INT iSocketType;
    INT iProtocol;
} CSADDR_INFO, *PCSADDR_INFO, *LPCSADDR_INFO;

/* in6addr.h / ws2ipdef.h */
typedef struct nspv2_in6_addr {
    union {
        UCHAR Byte[16];
        USHORT Word[8];
    } u;
} IN6_ADDR, *PIN6_ADDR;

typedef struct nspv2_sockaddr_in6 {
    ADDRESS_FAMILY sin6_family;
    USHORT sin6_port;
    ULONG sin6_flowinfo;
    IN6_ADDR sin6_addr;
    union {
        ULONG sin6_scope_id;
        ULONG sin6_scope_struct; /* SCOPE_ID: a 32-bit bitfield view */
    };
} SOCKADDR_IN6, *PSOCKADDR_IN6;

/* wtypesbase.h / nspapi.h */
typedef struct _BLOB {
    ULONG cbSize;
    BYTE *pBlobData;
} BLOB, *LPBLOB;

/* winsock2.h */
#define SOCKET_ERROR (-1)
#define NO_ERROR 0
#define SERVICE_MULTIPLE 0x00000001

#define NS_ALL 0
#define NS_DEFAULT 0
#define NS_SAP 1
#define NS_NDS 2
#define NS_PEER_BROWSE 3
#define NS_SLP 5
#define NS_DHCP 6
#define NS_TCPIP_LOCAL 10
#define NS_TCPIP_HOSTS 11
#define NS_DNS 12
#define NS_NETBT 13
#define NS_WINS 14
#define NS_NLA 15
#define NS_BTH 16
#define NS_LOCALNAME 19
#define NS_NBP 20
#define NS_MS 30
#define NS_STDA 31
#define NS_NTDS 32
#define NS_EMAIL 37
#define NS_PNRPNAME 38
#define NS_PNRPCLOUD 39
#define NS_X500 40
#define NS_NIS 41
#define NS_NISPLUS 42
#define NS_WRQ 50
#define NS_VNS 50
#define NS_NETDES 60

#define LUP_DEEP 0x0001
#define LUP_CONTAINERS 0x0002
#define LUP_NOCONTAINERS 0x0004
#define LUP_NEAREST 0x0008
#define LUP_RETURN_NAME 0x0010
#define LUP_RETURN_TYPE 0x0020
#define LUP_RETURN_VERSION 0x0040
#define LUP_RETURN_COMMENT 0x0080
#define LUP_RETURN_ADDR 0x0100
#define LUP_RETURN_BLOB 0x0200
#define LUP_RETURN_ALIASES 0x0400
#define LUP_RETURN_QUERY_STRING 0x0800
#define LUP_RETURN_ALL 0x0FF0
#define LUP_FLUSHCACHE 0x1000
#define LUP_FLUSHPREVIOUS 0x2000
#define LUP_NON_AUTHORITATIVE 0x4000
#define LUP_SECURE 0x8000
#define LUP_RES_SERVICE 0x8000
#define LUP_RETURN_PREFERRED_NAMES 0x10000
#define LUP_DNS_ONLY 0x20000
#define LUP_ADDRCONFIG 0x100000
#define LUP_DUAL_ADDR 0x200000
#define LUP_FILESERVER 0x400000
#define LUP_DISABLE_IDN_ENCODING 0x00800000
#define LUP_API_ANSI 0x01000000
#define LUP_RESOLUTION_HANDLE 0x80000000

#define RESULT_IS_ALIAS 0x0001
#define RESULT_IS_ADDED 0x0010
#define RESULT_IS_CHANGED 0x0020
#define RESULT_IS_DELETED 0x0040

#define WSABASEERR 10000
#define WSA_INVALID_HANDLE 6
#define WSA_NOT_ENOUGH_MEMORY 8
#define WSA_INVALID_PARAMETER 87
#define WSA_OPERATION_ABORTED 995
#define WSA_IO_INCOMPLETE 996
#define WSA_IO_PENDING 997
#define WSAEINTR (WSABASEERR + 4)
#define WSAEACCES (WSABASEERR + 13)
#define WSAEFAULT (WSABASEERR + 14)
#define WSAEINVAL (WSABASEERR + 22)
#define WSAEWOULDBLOCK (WSABASEERR + 35)
#define WSAEINPROGRESS (WSABASEERR + 36)
#define WSAEALREADY (WSABASEERR + 37)
#define WSAEPROTONOSUPPORT (WSABASEERR + 43)
#define WSAEOPNOTSUPP (WSABASEERR + 45)
#define WSAEPFNOSUPPORT (WSABASEERR + 46)
#define WSAEAFNOSUPPORT (WSABASEERR + 47)
#define WSAECONNRESET (WSABASEERR + 54)
#define WSAENOBUFS (WSABASEERR + 55)
#define WSAEISCONN (WSABASEERR + 56)
#define WSAENOTCONN (WSABASEERR + 57)
#define WSAETIMEDOUT (WSABASEERR + 60)
#define WSAEPROCLIM (WSABASEERR + 67)
#define WSASYSNOTREADY (WSABASEERR + 91)
#define WSAVERNOTSUPPORTED (WSABASEERR + 92)
#define WSANOTINITIALISED (WSABASEERR + 93)
#define WSAENOMORE (WSABASEERR + 102)
#define WSAECANCELLED (WSABASEERR + 103)
#define WSAEINVALIDPROCTABLE (WSABASEERR + 104)
#define WSAEINVALIDPROVIDER (WSABASEERR + 105)
#define WSAEPROVIDERFAILEDINIT (WSABASEERR + 106)
#define WSASYSCALLFAILURE (WSABASEERR + 107)
#define WSASERVICE_NOT_FOUND (WSABASEERR + 108)
#define WSATYPE_NOT_FOUND (WSABASEERR + 109)
#define WSA_E_NO_MORE (WSABASEERR + 110)
#define WSA_E_CANCELLED (WSABASEERR + 111)
#define WSAEREFUSED (WSABASEERR + 112)
#define WSAHOST_NOT_FOUND (WSABASEERR + 1001)
#define WSATRY_AGAIN (WSABASEERR + 1002)
#define WSANO_RECOVERY (WSABASEERR + 1003)
#define WSANO_DATA (WSABASEERR + 1004)

typedef enum _WSAEcomparator {
    COMP_EQUAL = 0,
    COMP_NOTLESS
} WSAECOMPARATOR, *PWSAECOMPARATOR, *LPWSAECOMPARATOR;

typedef struct _WSAVersion {
    DWORD dwVersion;
    WSAECOMPARATOR ecHow;
} WSAVERSION, *PWSAVERSION, *LPWSAVERSION;

typedef struct _AFPROTOCOLS {
    INT iAddressFamily;
    INT iProtocol;
} AFPROTOCOLS, *PAFPROTOCOLS, *LPAFPROTOCOLS;

typedef enum _WSAESETSERVICEOP {
    RNRSERVICE_REGISTER = 0,
    RNRSERVICE_DEREGISTER,
    RNRSERVICE_DELETE
} WSAESETSERVICEOP, *PWSAESETSERVICEOP, *LPWSAESETSERVICEOP;

typedef struct _WSAQuerySetW {
    DWORD dwSize;
    LPWSTR lpszServiceInstanceName;
    LPGUID lpServiceClassId;
    LPWSAVERSION lpVersion;
    LPWSTR lpszComment;
    DWORD dwNameSpace;
    LPGUID lpNSProviderId;
    LPWSTR lpszContext;
    DWORD dwNumberOfProtocols;
    LPAFPROTOCOLS lpafpProtocols;
    LPWSTR lpszQueryString;
    DWORD dwNumberOfCsAddrs;
    LPCSADDR_INFO lpcsaBuffer;
    DWORD dwOutputFlags;
    LPBLOB lpBlob;
} WSAQUERYSETW, *PWSAQUERYSETW, *LPWSAQUERYSETW;

typedef struct _WSAQuerySet2W {
    DWORD dwSize;
    LPWSTR lpszServiceInstanceName;
    LPWSAVERSION lpVersion;
    LPWSTR lpszComment;
    DWORD dwNameSpace;
    LPGUID lpNSProviderId;
    LPWSTR lpszContext;
    DWORD dwNumberOfProtocols;
    LPAFPROTOCOLS lpafpProtocols;
    LPWSTR lpszQueryString;
    DWORD dwNumberOfCsAddrs;
    LPCSADDR_INFO lpcsaBuffer;
    DWORD dwOutputFlags;
    LPBLOB lpBlob;
} WSAQUERYSET2W, *PWSAQUERYSET2W, *LPWSAQUERYSET2W;

typedef struct _WSAQuerySet2A {
    DWORD dwSize;
    LPSTR lpszServiceInstanceName;
    LPWSAVERSION lpVersion;
    LPSTR lpszComment;
    DWORD dwNameSpace;
    LPGUID lpNSProviderId;
    LPSTR lpszContext;
    DWORD dwNumberOfProtocols;
    LPAFPROTOCOLS lpafpProtocols;
    LPSTR lpszQueryString;
    DWORD dwNumberOfCsAddrs;
    LPCSADDR_INFO lpcsaBuffer;
    DWORD dwOutputFlags;
    LPBLOB lpBlob;
} WSAQUERYSET2A, *PWSAQUERYSET2A, *LPWSAQUERYSET2A;

typedef struct _WSANSClassInfoW {
    LPWSTR lpszName;
    DWORD dwNameSpace;
    DWORD dwValueType;
    DWORD dwValueSize;
    LPVOID lpValue;
} WSANSCLASSINFOW, *PWSANSCLASSINFOW, *LPWSANSCLASSINFOW;

typedef struct _WSANAMESPACE_INFOEXW {
    GUID NSProviderId;
    DWORD dwNameSpace;
    BOOL fActive;
    DWORD dwVersion;
    LPWSTR lpszIdentifier;
    BLOB ProviderSpecific;
} WSANAMESPACE_INFOEXW, *PWSANAMESPACE_INFOEXW, *LPWSANAMESPACE_INFOEXW;

/* ws2spi.h (SDK signatures) */
typedef INT (WSAAPI *LPNSPV2STARTUP)(LPGUID lpProviderId, LPVOID *ppvClientSessionArg);
typedef INT (WSAAPI *LPNSPV2CLEANUP)(LPGUID lpProviderId, LPVOID pvClientSessionArg);
typedef INT (WSAAPI *LPNSPV2LOOKUPSERVICEBEGIN)(LPGUID lpProviderId,
                                                LPWSAQUERYSET2W lpqsRestrictions,
                                                DWORD dwControlFlags,
                                                LPVOID lpvClientSessionArg,
                                                LPHANDLE lphLookup);
typedef VOID (WSAAPI *LPNSPV2LOOKUPSERVICENEXTEX)(HANDLE hAsyncCall, HANDLE hLookup,
                                                  DWORD dwControlFlags,
                                                  LPDWORD lpdwBufferLength,
                                                  LPWSAQUERYSET2W lpqsResults);
typedef INT (WSAAPI *LPNSPV2LOOKUPSERVICEEND)(HANDLE hLookup);
typedef VOID (WSAAPI *LPNSPV2SETSERVICEEX)(HANDLE hAsyncCall, LPGUID lpProviderId,
                                           LPWSAQUERYSET2W lpqsRegInfo,
                                           WSAESETSERVICEOP essOperation,
                                           DWORD dwControlFlags,
                                           LPVOID lpvClientSessionArg);
typedef VOID (WSAAPI *LPNSPV2CLIENTSESSIONRUNDOWN)(LPGUID lpProviderId,
                                                   LPVOID pvClientSessionArg);

typedef struct _NSPV2_ROUTINE {
    DWORD cbSize;
    DWORD dwMajorVersion;
    DWORD dwMinorVersion;
    LPNSPV2STARTUP NSPv2Startup;
    LPNSPV2CLEANUP NSPv2Cleanup;
    LPNSPV2LOOKUPSERVICEBEGIN NSPv2LookupServiceBegin;
    LPNSPV2LOOKUPSERVICENEXTEX NSPv2LookupServiceNextEx;
    LPNSPV2LOOKUPSERVICEEND NSPv2LookupServiceEnd;
    LPNSPV2SETSERVICEEX NSPv2SetServiceEx;
    LPNSPV2CLIENTSESSIONRUNDOWN NSPv2ClientSessionRundown;
} NSPV2_ROUTINE, *PNSPV2_ROUTINE, *LPNSPV2_ROUTINE;
typedef const NSPV2_ROUTINE *LPCNSPV2_ROUTINE;

/* nsemail.h */
typedef enum _NAPI_PROVIDER_TYPE {
    ProviderType_Application = 1,
    ProviderType_Service
} NAPI_PROVIDER_TYPE;

typedef enum _NAPI_PROVIDER_LEVEL {
    ProviderLevel_None = 0,
    ProviderLevel_Secondary,
    ProviderLevel_Primary
} NAPI_PROVIDER_LEVEL;

typedef struct _NAPI_DOMAIN_DESCRIPTION_BLOB {
    DWORD AuthLevel;
    DWORD cchDomainName;
    DWORD OffsetNextDomainDescription;
    DWORD OffsetThisDomainName;
} NAPI_DOMAIN_DESCRIPTION_BLOB, *PNAPI_DOMAIN_DESCRIPTION_BLOB;

typedef struct _NAPI_PROVIDER_INSTALLATION_BLOB {
    DWORD dwVersion;
    DWORD dwProviderType;
    DWORD fSupportsWildCard;
    DWORD cDomains;
    DWORD OffsetFirstDomain;
} NAPI_PROVIDER_INSTALLATION_BLOB, *PNAPI_PROVIDER_INSTALLATION_BLOB;

/* winsock2.h: WSAStartup's WSADATA. The field order differs between 64-bit
 * and 32-bit Windows (iMaxSockets, iMaxUdpDg and lpVendorInfo come first on
 * _WIN64, last on 32-bit); this follows the host's pointer width. */
#ifndef WINAPI
#define WINAPI
#endif
typedef uint16_t WORD;
#define WSADESCRIPTION_LEN 256
#define WSASYS_STATUS_LEN 128
typedef struct WSAData {
    WORD wVersion;
    WORD wHighVersion;
#if UINTPTR_MAX > 0xFFFFFFFFu
    unsigned short iMaxSockets;
    unsigned short iMaxUdpDg;
    char *lpVendorInfo;
    char szDescription[WSADESCRIPTION_LEN + 1];
    char szSystemStatus[WSASYS_STATUS_LEN + 1];
#else
    char szDescription[WSADESCRIPTION_LEN + 1];
    char szSystemStatus[WSASYS_STATUS_LEN + 1];
    unsigned short iMaxSockets;
    unsigned short iMaxUdpDg;
    char *lpVendorInfo;
#endif
} WSADATA, *LPWSADATA;

#endif /* _WIN32 */

/* Windows' address family values, whatever the host's are. */
#define NSPV2_AF_INET 2
#define NSPV2_AF_INET6 23

/* The SDK's entry-point types, on every compiler (mingw-w64 declares the
 * three asynchronous/notification slots as returning int). */
typedef VOID (WSAAPI *NSPV2_SDK_LOOKUPSERVICENEXTEX)(HANDLE, HANDLE, DWORD, LPDWORD,
                                                     LPWSAQUERYSET2W);
typedef VOID (WSAAPI *NSPV2_SDK_SETSERVICEEX)(HANDLE, LPGUID, LPWSAQUERYSET2W,
                                              WSAESETSERVICEOP, DWORD, LPVOID);
typedef VOID (WSAAPI *NSPV2_SDK_CLIENTSESSIONRUNDOWN)(LPGUID, LPVOID);

/* Store function F in slot S of an NSPV2_ROUTINE whatever the header's
 * declared type of the slot (identical layout; the cast only reconciles
 * mingw-w64's int returns with the SDK's VOID). */
#define NSPV2_SLOT(routine, S, F) ((routine).S = (__typeof__((routine).S))(void (*)(void))(F))

#endif /* NSPV2_ABI_H */
