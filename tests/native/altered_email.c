/*
 * altered_email.c - the email example's C provider with one deliberate,
 * visible difference, for `nspv2 compare`: its LookupServiceBegin drops
 * LUP_RETURN_COMMENT from the control flags, so no result carries the
 * presence name in lpszComment. Everything else is email_provider.c as
 * shipped (built with its folder on the include path, and ref_provider.c).
 */
#define NSPV2_REF_PROVIDER_LOCAL 1
#include "nspv2_ref_provider.h"

static LPNSPV2LOOKUPSERVICEBEGIN ref_begin;

static INT WSAAPI altered_begin(LPGUID lpProviderId, LPWSAQUERYSET2W lpqsRestrictions,
                                DWORD dwControlFlags, LPVOID lpvClientSessionArg,
                                LPHANDLE lphLookup)
{
    return ref_begin(lpProviderId, lpqsRestrictions, dwControlFlags & ~(DWORD)LUP_RETURN_COMMENT,
                     lpvClientSessionArg, lphLookup);
}

static void altered_routine(NSPV2_ROUTINE *out)
{
    nspv2_ref_provider_routine(out);
    ref_begin = out->NSPv2LookupServiceBegin;
    out->NSPv2LookupServiceBegin = altered_begin;
}

/* email_provider.c's main() fills its table with this instead. */
#define nspv2_ref_provider_routine altered_routine
#include "email_provider.c"
