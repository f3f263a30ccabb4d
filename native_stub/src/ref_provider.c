/*
 * ref_provider.c - the C reference NS_EMAIL provider: a presence directory.
 *
 * Start here to write an NSPv2 provider in C. Clients sign users in and out
 * with WSASetServiceW and find them with WSALookupServiceBegin/Next/End;
 * docs/email-example.md is the specification and nspv2/examples/email.py the
 * same provider in Python (nspv2/examples/scenarios/email.json runs against both, through
 * the native host, and the two must agree row by row).
 *
 * Everything a provider must get right is here and commented:
 *
 *   - the SDK signatures (NextEx, SetServiceEx and ClientSessionRundown
 *     return VOID) stored with NSPV2_SLOT(), so the table also compiles
 *     against mingw-w64's ws2spi.h, which declares those slots as int;
 *   - per-client-session state allocated by Startup and ended exactly once,
 *     by Cleanup (normal close) or ClientSessionRundown (client gone); both
 *     sign out the names the session signed in;
 *   - session arguments and lookup handles that are numbers from one counter,
 *     looked up in a table, never addresses: a stale or forged one is
 *     refused, not followed;
 *   - every input validated before it is used (the same rules as the
 *     Python scaffold's reader, nspv2/provider/queryset.py);
 *   - one lock around the provider's state, and shared data that outlives
 *     its place in the directory: an entry signed out while lookups still
 *     hold it is reference counted, never freed under them;
 *   - NextEx and SetServiceEx report ONLY through WSAProviderCompleteAsyncCall
 *     (here before they return; it may also be later, from another thread);
 *   - buffer packing: the WSAQUERYSET2W header, then every piece aligned to
 *     a pointer boundary, with absolute pointers into the caller's buffer,
 *     never a byte past *lpdwBufferLength; when the buffer is short, the
 *     EXACT required size goes to *lpdwBufferLength and the call completes
 *     with WSAEFAULT, and the same result is offered again next time
 *     (unless the caller passes LUP_FLUSHPREVIOUS, which drops it).
 *     Sizing and packing are one walk (email_layout), so they cannot
 *     disagree;
 *   - no lock is held while calling the host (WSAProviderCompleteAsyncCall
 *     may do work of its own).
 *
 * To port: replace the directory (section "The directory") with your data
 * source and the result (email_result, email_layout) with yours; keep the
 * sessions, the lookup table, the NextEx protocol and the packing rules.
 *
 * Where Python's behaviour is followed to the letter although a C author
 * would not write it that way, a comment says "as Python".
 *
 * Names follow the Python example's (email_sign_in / sign_in, email_sign_out
 * / sign_out, email_client_session_rundown / client_session_rundown,
 * email_new_token_L / registry.new_token, ...); docs/email-example.md
 * ("Python and C side by side") lists every pair. Both read an entry only
 * under the lock: Begin collects the entries, NextEx snapshots one
 * (email_snapshot_L / _snapshot).
 */
/* clock_gettime, CLOCK_MONOTONIC, pthread_condattr_setclock (platform.h) */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_ref_provider.h"

#include "nspv2_messenger.h"
#include "platform.h"

#include <stdlib.h>
#include <string.h>

/* {6E737032-7265-4600-8A1F-5245464E5350} */
NSPV2_HOST_API const GUID nspv2_ref_provider_id = {
    0x6e737032, 0x7265, 0x4600, {0x8a, 0x1f, 0x52, 0x45, 0x46, 0x4e, 0x53, 0x50}};

/* What a client may hand us, as the Python scaffold's reader accepts it
 * (nspv2/provider/queryset.py): anything beyond is WSAEINVAL. */
#define EMAIL_MAX_STRING_CHARS 32767u          /* UTF-16 units, terminator excluded */
#define EMAIL_MAX_COUNT 65536u                 /* dwNumberOfCsAddrs, dwNumberOfProtocols */
#define EMAIL_MAX_BLOB_BYTES (16u * 1024u * 1024u)
#define EMAIL_MAX_SOCKADDR_LEN 128             /* SOCKADDR_STORAGE */
#define EMAIL_SOCKADDR_IN_LEN 16               /* SOCKADDR_IN as Windows lays it out */
#define EMAIL_SOCKADDR_IN6_LEN 28              /* SOCKADDR_IN6 */

/* ======================================================================== */
/* Presence: MISTATUS values and the version-1 blob                          */

static const struct {
    DWORD value;
    const char *name; /* returned as lpszComment */
    int can_sign_in;  /* a state one can sign in with */
} email_states[] = {
    {MISTATUS_UNKNOWN, "MISTATUS_UNKNOWN", 0},
    {MISTATUS_OFFLINE, "MISTATUS_OFFLINE", 0},
    {MISTATUS_ONLINE, "MISTATUS_ONLINE", 1},
    {MISTATUS_INVISIBLE, "MISTATUS_INVISIBLE", 1},
    {MISTATUS_BUSY, "MISTATUS_BUSY", 1},
    {MISTATUS_BE_RIGHT_BACK, "MISTATUS_BE_RIGHT_BACK", 1},
    {MISTATUS_IDLE, "MISTATUS_IDLE", 1},
    {MISTATUS_AWAY, "MISTATUS_AWAY", 1},
    {MISTATUS_ON_THE_PHONE, "MISTATUS_ON_THE_PHONE", 1},
    {MISTATUS_OUT_TO_LUNCH, "MISTATUS_OUT_TO_LUNCH", 1},
    {MISTATUS_LOCAL_FINDING_SERVER, "MISTATUS_LOCAL_FINDING_SERVER", 0},
    {MISTATUS_LOCAL_CONNECTING_TO_SERVER, "MISTATUS_LOCAL_CONNECTING_TO_SERVER", 0},
    {MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER, "MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER", 0},
    {MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER, "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER", 0},
    /* Office Communicator 2007's states */
    {MISTATUS_IN_A_MEETING, "MISTATUS_IN_A_MEETING", 1},
    {MISTATUS_OUT_OF_OFFICE, "MISTATUS_OUT_OF_OFFICE", 1},
    {MISTATUS_DO_NOT_DISTURB, "MISTATUS_DO_NOT_DISTURB", 1},
    {MISTATUS_IN_A_CONFERENCE, "MISTATUS_IN_A_CONFERENCE", 1},
    {MISTATUS_ALLOW_URGENT_INTERRUPTIONS, "MISTATUS_ALLOW_URGENT_INTERRUPTIONS", 1},
    {MISTATUS_MAY_BE_AVAILABLE, "MISTATUS_MAY_BE_AVAILABLE", 1},
    {MISTATUS_CUSTOM, "MISTATUS_CUSTOM", 1},
};
#define EMAIL_NSTATES (sizeof email_states / sizeof email_states[0])

/* The index of a MISTATUS value in email_states, or -1. */
static int email_state_index(DWORD status)
{
    for (size_t i = 0; i < EMAIL_NSTATES; i++)
        if (email_states[i].value == status)
            return (int)i;
    return -1;
}

static const char *email_state_name(DWORD status)
{
    int i = email_state_index(status);
    return i < 0 ? "" : email_states[i].name; /* never "": statuses are checked */
}

static uint32_t email_get_le(const unsigned char *p, size_t n)
{
    uint32_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

static void email_encode_presence(DWORD status, unsigned char out[NSPV2_PRESENCE_BLOB_SIZE])
{
    memcpy(out, NSPV2_PRESENCE_BLOB_MAGIC, 4);
    out[4] = NSPV2_PRESENCE_BLOB_VERSION;
    out[5] = 0;
    out[6] = out[7] = 0; /* reserved */
    for (int i = 0; i < 4; i++)
        out[8 + i] = (unsigned char)(status >> (8 * i));
}

/* Reads a presence blob: NO_ERROR and *status, or WSAEINVAL for anything but
 * a valid version 1 carrying a MISTATUS value. (Whether one may sign in with
 * that state is the caller's question: SR_SESSION_STATE_INVALID.) */
static int email_decode_presence(const BLOB *b, DWORD *status)
{
    if (b->cbSize != NSPV2_PRESENCE_BLOB_SIZE)
        return WSAEINVAL;
    const unsigned char *p = b->pBlobData; /* non-NULL: checked with the query set */
    if (memcmp(p, NSPV2_PRESENCE_BLOB_MAGIC, 4) != 0 ||
        email_get_le(p + 4, 2) != NSPV2_PRESENCE_BLOB_VERSION || email_get_le(p + 6, 2) != 0)
        return WSAEINVAL;
    DWORD value = email_get_le(p + 8, 4);
    if (email_state_index(value) < 0)
        return WSAEINVAL;
    *status = value;
    return NO_ERROR;
}

/* The Winsock error a client receives for a SESSION_RESULT. */
static int email_sr_error(SESSION_RESULT session_result)
{
    switch (session_result) {
    case SR_APP_ALREADY_REGISTERED:
        return WSAEALREADY;
    case SR_APP_NOT_REGISTERED:
        return WSASERVICE_NOT_FOUND;
    case SR_NOT_INVITER:
        return WSAEACCES;
    case SR_INVITED_SELF:
    case SR_SESSION_STATE_INVALID:
        return WSAEINVAL;
    case SR_INVITATION_DECLINED:
        return WSAEREFUSED;
    default:
        return WSAEINVAL;
    }
}

/* ======================================================================== */
/* Names                                                                     */

/* Case folding of names, for comparisons: ASCII letters only (names are
 * ASCII by their syntax; the Python example folds the same way). */
static WCHAR email_fold(WCHAR c)
{
    if (c >= 'A' && c <= 'Z')
        return (WCHAR)(c + ('a' - 'A'));
    return c;
}

/* Compares a[0..an) with b[0..bn) after folding, by UTF-16 unit. */
static int email_cmp_fold(const WCHAR *a, size_t an, const WCHAR *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++) {
        WCHAR x = email_fold(a[i]), y = email_fold(b[i]);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return an == bn ? 0 : (an < bn ? -1 : 1);
}

static int email_is_letter(WCHAR c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int email_is_digit(WCHAR c) { return c >= '0' && c <= '9'; }

/* [A-Za-z0-9._%+-] */
static int email_is_local_char(WCHAR c)
{
    return email_is_letter(c) || email_is_digit(c) || c == '.' || c == '_' || c == '%' ||
           c == '+' || c == '-';
}

/* [A-Za-z0-9.-] */
static int email_is_domain_char(WCHAR c)
{
    return email_is_letter(c) || email_is_digit(c) || c == '.' || c == '-';
}

/* Python's [A-Za-z0-9.-]+\.[A-Za-z]{2,} over all of d[0..n): domain
 * characters only, and after the last '.' (which is not the first
 * character) two or more letters. */
static int email_is_domain(const WCHAR *d, size_t n)
{
    size_t dot = n;
    for (size_t i = 0; i < n; i++) {
        if (!email_is_domain_char(d[i]))
            return 0;
        if (d[i] == '.')
            dot = i;
    }
    if (dot == n || dot == 0 || n - dot - 1 < 2)
        return 0;
    for (size_t i = dot + 1; i < n; i++)
        if (!email_is_letter(d[i]))
            return 0;
    return 1;
}

/* The whole name must match its pattern (nothing after it, not even a
 * newline). */
static size_t email_pattern_len(const WCHAR *s, size_t n)
{
    (void)s;
    return n;
}

/* local@domain.tld: ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ */
static int email_is_address(const WCHAR *s, size_t n)
{
    n = email_pattern_len(s, n);
    size_t i = 0;
    while (i < n && email_is_local_char(s[i]))
        i++;
    if (i == 0 || i == n || s[i] != '@')
        return 0;
    return email_is_domain(s + i + 1, n - i - 1);
}

/* *@domain.tld: ^\*@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ */
static int email_is_wildcard(const WCHAR *s, size_t n)
{
    n = email_pattern_len(s, n);
    return n >= 2 && s[0] == '*' && s[1] == '@' && email_is_domain(s + 2, n - 2);
}

/* ======================================================================== */
/* The directory                                                             */

/* One CSADDR_INFO as the directory keeps it. Socket addresses are stored as
 * the Python provider stores them (normalised): an AF_INET address as 16
 * bytes with sin_zero cleared, an AF_INET6 one as its 28 bytes, another
 * family as given. Two addresses are the same when their bytes are. */
typedef struct email_sockaddr {
    INT len; /* 0: none */
    unsigned char bytes[EMAIL_MAX_SOCKADDR_LEN];
} email_sockaddr;

typedef struct email_csaddr {
    email_sockaddr local, remote;
    INT socket_type, protocol;
} email_csaddr;

/* A list of CS addresses, immutable once built and reference counted: an
 * update gives the entry a new list, so a result held for a client (see
 * email_result) keeps the list it was taken with. */
typedef struct email_addrs {
    unsigned refs;
    size_t n;
    email_csaddr a[]; /* n items */
} email_addrs;

/* One signed-in user. refs counts the directory's reference (while signed
 * in), each lookup's that captured it, and each held result's; the last
 * release frees it, so a lookup never sees an entry freed under it. Every
 * field changes only under the lock; once signed out (out of the
 * directory) only refs does. */
typedef struct email_entry {
    unsigned refs;
    uintptr_t owner;    /* the client session that signed it in */
    DWORD status;       /* MISTATUS it signed in or updated with */
    DWORD version;      /* 1 at sign-in, + 1 per update */
    int changed;        /* updated since sign-in */
    int signing_out;    /* signed out: in-flight lookups see it disconnecting */
    email_addrs *addrs; /* counted reference; NULL: no addresses */
    size_t len;         /* of the name, in UTF-16 units */
    WCHAR name[];       /* as registered, NUL-terminated */
} email_entry;

/* Sessions and lookups are kept in plain lists, looked up by number: a
 * provider serving many clients at once would use a hash table keyed by the
 * same numbers. */
typedef struct email_session {
    struct email_session *next;
    uintptr_t id; /* the session argument the host passes back */
} email_session;

/* A lookup result as the Python provider builds it: a snapshot of an entry
 * taken when NextEx reaches it. Kept ("held") when it did not fit the
 * caller's buffer, and offered again as it was. */
typedef struct email_result {
    email_entry *entry; /* counted reference: the name */
    email_addrs *addrs; /* counted reference, or NULL */
    DWORD status;       /* as reported (DISCONNECTING when signing out) */
    DWORD version;
    DWORD output_flags; /* RESULT_IS_* */
} email_result;

typedef struct email_lookup {
    struct email_lookup *next;
    uintptr_t handle;  /* from email_new_token_L, never an address */
    uintptr_t session; /* the client session that began it */
    DWORD flags;       /* Begin's LUP_RETURN_* choose the fields */
    int has_held;      /* held: the result that did not fit last time */
    email_result held;
    size_t n, pos;        /* entries found at Begin; the next to hand out */
    email_entry *found[]; /* counted references, in result order */
} email_lookup;

/* All the provider's state, under one lock. Functions named *_L expect the
 * lock held. */
static struct {
    nspv2_mutex lock;
    email_entry **dir; /* signed-in names, sorted by folded name */
    size_t n, cap;
    email_session *sessions;
    email_lookup *lookups;
    uintptr_t last_token; /* session arguments and lookup handles: one counter */
    unsigned long invitations; /* recorded; the example keeps no more */
} email = {.lock = NSPV2_MUTEX_INIT};

static void email_addrs_release_L(email_addrs *a)
{
    if (a && --a->refs == 0)
        free(a);
}

static void email_entry_release_L(email_entry *e)
{
    if (--e->refs == 0) {
        email_addrs_release_L(e->addrs);
        free(e);
    }
}

static void email_result_release_L(email_result *r)
{
    email_addrs_release_L(r->addrs);
    email_entry_release_L(r->entry);
    memset(r, 0, sizeof *r);
}

/* The entry signed in under name[0..n) (compared folded), or NULL; *at is
 * its index, or where it would go. */
static email_entry *email_find_L(const WCHAR *name, size_t n, size_t *at)
{
    size_t lo = 0, hi = email.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const email_entry *e = email.dir[mid];
        int c = email_cmp_fold(e->name, e->len, name, n);
        if (c == 0) {
            *at = mid;
            return email.dir[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return NULL;
}

/* Signs out the entry at index i: lookups holding it see it disconnecting;
 * the directory drops its reference. */
static void email_sign_out_at_L(size_t i)
{
    email_entry *e = email.dir[i];
    e->signing_out = 1;
    memmove(&email.dir[i], &email.dir[i + 1], (email.n - i - 1) * sizeof *email.dir);
    email.n--;
    email_entry_release_L(e);
}

/* Signs out every name the session signed in. */
static void email_sign_out_session_L(uintptr_t session)
{
    size_t i = 0;
    while (i < email.n) {
        if (email.dir[i]->owner == session)
            email_sign_out_at_L(i);
        else
            i++;
    }
}

static int email_same_csaddr(const email_csaddr *x, const email_csaddr *y)
{
    return x->socket_type == y->socket_type && x->protocol == y->protocol &&
           x->local.len == y->local.len && x->remote.len == y->remote.len &&
           memcmp(x->local.bytes, y->local.bytes, (size_t)x->local.len) == 0 &&
           memcmp(x->remote.bytes, y->remote.bytes, (size_t)x->remote.len) == 0;
}

static int email_addrs_contain(const email_addrs *list, const email_csaddr *c)
{
    for (size_t i = 0; list && i < list->n; i++)
        if (email_same_csaddr(&list->a[i], c))
            return 1;
    return 0;
}

static email_addrs *email_addrs_alloc(size_t n)
{
    email_addrs *a = malloc(sizeof *a + n * sizeof a->a[0]);
    if (a) {
        a->refs = 1;
        a->n = 0;
    }
    return a;
}

/* ======================================================================== */
/* Reading what the client sent                                              */

/* The length of a client string in UTF-16 units; -1 when it is misaligned or
 * has no terminator within EMAIL_MAX_STRING_CHARS units. NULL: 0. */
static long email_wcslen(const WCHAR *s)
{
    if (!s)
        return 0;
    if ((uintptr_t)s % sizeof(WCHAR) != 0)
        return -1;
    for (unsigned long i = 0; i <= EMAIL_MAX_STRING_CHARS; i++)
        if (s[i] == 0)
            return (long)i;
    return -1;
}

/* One client socket address, normalised (see email_sockaddr). */
static int email_read_sockaddr(const SOCKET_ADDRESS *in, email_sockaddr *out)
{
    memset(out, 0, sizeof *out);
    if (!in->lpSockaddr)
        return in->iSockaddrLength == 0 ? NO_ERROR : WSAEINVAL;
    INT len = in->iSockaddrLength;
    if (len < 2 || len > EMAIL_MAX_SOCKADDR_LEN)
        return WSAEINVAL;
    const unsigned char *raw = (const unsigned char *)in->lpSockaddr;
    uint32_t family = email_get_le(raw, 2);
    if (family == NSPV2_AF_INET) {
        if (len < EMAIL_SOCKADDR_IN_LEN)
            return WSAEINVAL;
        memcpy(out->bytes, raw, 8); /* family, port, address; sin_zero stays 0 */
        out->len = EMAIL_SOCKADDR_IN_LEN;
    } else if (family == NSPV2_AF_INET6) {
        if (len < EMAIL_SOCKADDR_IN6_LEN)
            return WSAEINVAL;
        memcpy(out->bytes, raw, EMAIL_SOCKADDR_IN6_LEN);
        out->len = EMAIL_SOCKADDR_IN6_LEN;
    } else {
        memcpy(out->bytes, raw, (size_t)len);
        out->len = len;
    }
    return NO_ERROR;
}

static int email_read_csaddr(const CSADDR_INFO *in, email_csaddr *out)
{
    int err = email_read_sockaddr(&in->LocalAddr, &out->local);
    if (!err)
        err = email_read_sockaddr(&in->RemoteAddr, &out->remote);
    out->socket_type = in->iSocketType;
    out->protocol = in->iProtocol;
    return err;
}

/* Validates a query set the way the Python scaffold reads one: WSAEINVAL
 * for anything malformed, NO_ERROR otherwise. Reads nothing the counts and
 * terminators do not allow. */
static int email_check_query_set(const WSAQUERYSET2W *q)
{
    if (!q || (uintptr_t)q % _Alignof(WSAQUERYSET2W) != 0 || q->dwSize < sizeof(WSAQUERYSET2W))
        return WSAEINVAL;
    if (email_wcslen(q->lpszServiceInstanceName) < 0 || email_wcslen(q->lpszComment) < 0 ||
        email_wcslen((const WCHAR *)q->lpszContext) < 0 || email_wcslen(q->lpszQueryString) < 0)
        return WSAEINVAL;
    if (q->lpVersion && q->lpVersion->ecHow != COMP_EQUAL && q->lpVersion->ecHow != COMP_NOTLESS)
        return WSAEINVAL;
    if (q->dwNumberOfProtocols > EMAIL_MAX_COUNT || (q->dwNumberOfProtocols && !q->lpafpProtocols))
        return WSAEINVAL;
    if (q->dwNumberOfCsAddrs > EMAIL_MAX_COUNT || (q->dwNumberOfCsAddrs && !q->lpcsaBuffer))
        return WSAEINVAL;
    for (DWORD i = 0; i < q->dwNumberOfCsAddrs; i++) {
        email_csaddr c;
        if (email_read_csaddr(&q->lpcsaBuffer[i], &c) != NO_ERROR)
            return WSAEINVAL;
    }
    if (q->lpBlob && (q->lpBlob->cbSize > EMAIL_MAX_BLOB_BYTES ||
                      (q->lpBlob->cbSize && !q->lpBlob->pBlobData)))
        return WSAEINVAL;
    return NO_ERROR;
}

/* The CS addresses of a checked query set as a new list (*out NULL when
 * there are none). NO_ERROR or WSA_NOT_ENOUGH_MEMORY. */
static int email_read_addrs(const WSAQUERYSET2W *q, email_addrs **out)
{
    *out = NULL;
    if (q->dwNumberOfCsAddrs == 0)
        return NO_ERROR;
    email_addrs *a = email_addrs_alloc(q->dwNumberOfCsAddrs);
    if (!a)
        return WSA_NOT_ENOUGH_MEMORY;
    for (DWORD i = 0; i < q->dwNumberOfCsAddrs; i++)
        email_read_csaddr(&q->lpcsaBuffer[i], &a->a[a->n++]); /* checked already */
    *out = a;
    return NO_ERROR;
}

/* ======================================================================== */
/* Sessions and lookups                                                      */

static email_session *email_session_find_L(uintptr_t id)
{
    for (email_session *s = email.sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static email_lookup *email_lookup_find_L(uintptr_t handle)
{
    for (email_lookup *l = email.lookups; l; l = l->next)
        if (l->handle == handle)
            return l;
    return NULL;
}

/* Unlinks a lookup and drops everything it holds. */
static void email_lookup_free_L(email_lookup **link)
{
    email_lookup *l = *link;
    *link = l->next;
    if (l->has_held)
        email_result_release_L(&l->held);
    for (size_t i = 0; i < l->n; i++)
        email_entry_release_L(l->found[i]);
    free(l);
}

/* Ends whatever lookups the session left open (the host ends them before
 * Cleanup or Rundown; another host might not). */
static void email_drop_session_lookups_L(uintptr_t session)
{
    email_lookup **link = &email.lookups;
    while (*link) {
        if ((*link)->session == session)
            email_lookup_free_L(link);
        else
            link = &(*link)->next;
    }
}

/* A fresh non-zero number for a session argument or a lookup handle, from
 * one counter for both (as Python's registry.new_token): a lookup handle
 * never equals a session argument, so one passed for the other is refused
 * (WSA_INVALID_HANDLE, WSAEINVAL), never taken for another object. Skips
 * values still in use once the counter wraps. */
static uintptr_t email_new_token_L(void)
{
    uintptr_t t;
    do
        t = ++email.last_token;
    while (t == 0 || email_session_find_L(t) || email_lookup_find_L(t));
    return t;
}

static INT email_fail(int err)
{
    WSASetLastError(err);
    return SOCKET_ERROR;
}

static int email_is_our_id(const GUID *id)
{
    return id && memcmp(id, &nspv2_ref_provider_id, sizeof *id) == 0;
}

/* ======================================================================== */
/* The result: a snapshot, and its layout                                    */

/* Takes the result for entry e as it is now (as Python's Entry.as_queryset). */
static void email_snapshot_L(email_entry *e, email_result *r)
{
    e->refs++;
    r->entry = e;
    r->addrs = e->addrs;
    if (r->addrs)
        r->addrs->refs++;
    r->version = e->version;
    if (e->signing_out) {
        r->status = MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER;
        r->output_flags = RESULT_IS_DELETED;
    } else {
        r->status = e->status;
        r->output_flags = e->changed ? RESULT_IS_CHANGED : RESULT_IS_ADDED;
    }
}

#define EMAIL_ALIGN(n) (((n) + sizeof(void *) - 1) & ~(sizeof(void *) - 1))

/* Places len bytes at the next pointer-aligned offset; with a buffer, also
 * copies src there (if not NULL). Returns the offset. */
static size_t email_put(unsigned char *buf, size_t *off, const void *src, size_t len)
{
    size_t at = EMAIL_ALIGN(*off);
    if (buf && src)
        memcpy(buf + at, src, len);
    *off = at + len;
    return at;
}

/* Places an ASCII string as UTF-16. */
static size_t email_put_ascii(unsigned char *buf, size_t *off, const char *s)
{
    size_t n = strlen(s) + 1;
    size_t at = email_put(buf, off, NULL, n * sizeof(WCHAR));
    if (buf) {
        for (size_t i = 0; i < n; i++) {
            WCHAR w = (WCHAR)(unsigned char)s[i];
            memcpy(buf + at + i * sizeof w, &w, sizeof w);
        }
    }
    return at;
}

/* The one layout of a result. With buf == NULL it only measures; with buf
 * (pointer-aligned, at least the measured size, zeroed) it also packs: the
 * header at offset 0, then each piece the flags ask for, aligned to a
 * pointer boundary relative to buf, with absolute pointers into buf.
 * Returns the size in bytes. Sizing and packing are the same walk, so they
 * cannot disagree. */
static size_t email_layout(const email_result *r, DWORD flags, unsigned char *buf)
{
    WSAQUERYSET2W q;
    memset(&q, 0, sizeof q);
    size_t off = sizeof(WSAQUERYSET2W);
#define EMAIL_AT(o) ((void *)(buf + (o)))
    if (flags & LUP_RETURN_NAME) {
        size_t at = email_put(buf, &off, r->entry->name, (r->entry->len + 1) * sizeof(WCHAR));
        q.lpszServiceInstanceName = buf ? EMAIL_AT(at) : NULL;
    }
    if (flags & LUP_RETURN_COMMENT) {
        size_t at = email_put_ascii(buf, &off, email_state_name(r->status));
        q.lpszComment = buf ? EMAIL_AT(at) : NULL;
    }
    if (flags & LUP_RETURN_VERSION) {
        WSAVERSION v = {r->version, COMP_EQUAL};
        size_t at = email_put(buf, &off, &v, sizeof v);
        q.lpVersion = buf ? EMAIL_AT(at) : NULL;
    }
    {
        size_t at = email_put(buf, &off, &nspv2_ref_provider_id, sizeof(GUID));
        q.lpNSProviderId = buf ? EMAIL_AT(at) : NULL;
    }
    if ((flags & LUP_RETURN_ADDR) && r->addrs && r->addrs->n) {
        size_t n = r->addrs->n;
        size_t array = email_put(buf, &off, NULL, n * sizeof(CSADDR_INFO));
        for (size_t i = 0; i < n; i++) {
            const email_csaddr *c = &r->addrs->a[i];
            CSADDR_INFO out;
            memset(&out, 0, sizeof out);
            if (c->local.len) {
                size_t at = email_put(buf, &off, c->local.bytes, (size_t)c->local.len);
                out.LocalAddr.lpSockaddr = buf ? EMAIL_AT(at) : NULL;
                out.LocalAddr.iSockaddrLength = c->local.len;
            }
            if (c->remote.len) {
                size_t at = email_put(buf, &off, c->remote.bytes, (size_t)c->remote.len);
                out.RemoteAddr.lpSockaddr = buf ? EMAIL_AT(at) : NULL;
                out.RemoteAddr.iSockaddrLength = c->remote.len;
            }
            out.iSocketType = c->socket_type;
            out.iProtocol = c->protocol;
            if (buf)
                memcpy(buf + array + i * sizeof out, &out, sizeof out);
        }
        q.dwNumberOfCsAddrs = (DWORD)n;
        q.lpcsaBuffer = buf ? EMAIL_AT(array) : NULL;
    }
    if (flags & LUP_RETURN_BLOB) {
        unsigned char presence[NSPV2_PRESENCE_BLOB_SIZE];
        email_encode_presence(r->status, presence);
        size_t at = email_put(buf, &off, NULL, sizeof(BLOB));
        size_t data = email_put(buf, &off, presence, sizeof presence);
        if (buf) {
            BLOB b = {NSPV2_PRESENCE_BLOB_SIZE, buf + data};
            memcpy(buf + at, &b, sizeof b);
            q.lpBlob = EMAIL_AT(at);
        }
    }
#undef EMAIL_AT
    /* LUP_RETURN_TYPE, _ALIASES and _QUERY_STRING add nothing. */
    q.dwSize = sizeof(WSAQUERYSET2W);
    q.dwNameSpace = NS_EMAIL;
    q.dwOutputFlags = r->output_flags;
    if (buf)
        memcpy(buf, &q, sizeof q);
    return off;
}

/* ======================================================================== */
/* The entry points                                                          */

/* A client session reaches this provider for the first time: allocate its
 * state, register it under a fresh number and hand that number to the
 * host, which passes it back to Begin, SetServiceEx, and finally to Cleanup
 * or ClientSessionRundown. */
static INT WSAAPI email_startup(LPGUID lpProviderId, LPVOID *ppvClientSessionArg)
{
    if (!email_is_our_id(lpProviderId) || !ppvClientSessionArg)
        return email_fail(WSAEINVAL);
    email_session *s = calloc(1, sizeof *s);
    if (!s)
        return email_fail(WSA_NOT_ENOUGH_MEMORY);
    nspv2_mutex_lock(&email.lock);
    s->id = email_new_token_L();
    s->next = email.sessions;
    email.sessions = s;
    nspv2_mutex_unlock(&email.lock);
    *ppvClientSessionArg = (LPVOID)s->id;
    return NO_ERROR;
}

/* Ends a session: its names are signed out, as IMessenger::Signout would.
 * NULL when the session is unknown or ended already. */
static email_session *email_end_session(LPVOID arg)
{
    uintptr_t id = (uintptr_t)arg;
    email_session *found = NULL;
    nspv2_mutex_lock(&email.lock);
    for (email_session **pp = &email.sessions; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    if (found) {
        email_drop_session_lookups_L(id);
        email_sign_out_session_L(id);
    }
    nspv2_mutex_unlock(&email.lock);
    return found;
}

/* The client closed its session normally. */
static INT WSAAPI email_cleanup(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    email_session *s = email_end_session(pvClientSessionArg);
    if (!s)
        return email_fail(WSAEINVAL); /* not ours, or ended already */
    free(s);
    return NO_ERROR;
}

/* The client went away without closing (or the provider is being
 * unadvertised): the same as Cleanup, but nothing can be reported. */
static VOID WSAAPI email_client_session_rundown(LPGUID lpProviderId, LPVOID pvClientSessionArg)
{
    (void)lpProviderId;
    free(email_end_session(pvClientSessionArg)); /* NULL when unknown */
}

/* The entries a lookup of name[0..len) finds, in result order: the one
 * signed in under that name, or for "*@domain" every name whose folded form
 * ends in "@domain", in directory order (sorted by folded name, as Python
 * sorts by lowercased name). Counts them; with out, also stores them. */
static size_t email_collect_L(const WCHAR *name, size_t len, int wildcard, email_entry **out)
{
    size_t count = 0;
    if (wildcard) {
        const WCHAR *suffix = name + 1; /* "@domain" */
        size_t slen = len - 1;
        for (size_t i = 0; i < email.n; i++) {
            email_entry *e = email.dir[i];
            if (e->len >= slen &&
                email_cmp_fold(e->name + e->len - slen, slen, suffix, slen) == 0) {
                if (out)
                    out[count] = e;
                count++;
            }
        }
    } else {
        size_t at;
        email_entry *e = email_find_L(name, len, &at);
        if (e) {
            if (out)
                out[0] = e;
            count = 1;
        }
    }
    return count;
}

static INT WSAAPI email_begin(LPGUID lpProviderId, LPWSAQUERYSET2W lpqsRestrictions,
                              DWORD dwControlFlags, LPVOID lpvClientSessionArg,
                              LPHANDLE lphLookup)
{
    (void)lpProviderId;
    /* 1. validate the arguments and the restrictions */
    if (!lphLookup || email_check_query_set(lpqsRestrictions) != NO_ERROR)
        return email_fail(WSAEINVAL);
    if (lpqsRestrictions->dwNameSpace != NS_EMAIL && lpqsRestrictions->dwNameSpace != NS_ALL)
        return email_fail(WSAEINVAL);
    const WCHAR *name = lpqsRestrictions->lpszServiceInstanceName;
    size_t len = (size_t)email_wcslen(name);
    int wildcard = len > 0 && email_is_wildcard(name, len);
    if (len == 0 || !(wildcard || email_is_address(name, len)))
        return email_fail(WSAEINVAL);

    /* 2. capture the matching entries, as they are signed in now: the
     *    lookup keeps them (counted) and reads their state at each NextEx,
     *    so a sign-out in between shows as disconnecting */
    int err = NO_ERROR;
    nspv2_mutex_lock(&email.lock);
    size_t count = email_collect_L(name, len, wildcard, NULL);
    email_lookup *l = NULL;
    if (!email_session_find_L((uintptr_t)lpvClientSessionArg))
        err = WSAEINVAL;
    else if (count == 0)
        err = WSASERVICE_NOT_FOUND;
    else if (!(l = calloc(1, sizeof *l + count * sizeof l->found[0])))
        err = WSA_NOT_ENOUGH_MEMORY;
    if (!err) {
        l->n = email_collect_L(name, len, wildcard, l->found);
        for (size_t i = 0; i < l->n; i++)
            l->found[i]->refs++;
        l->flags = dwControlFlags;
        l->session = (uintptr_t)lpvClientSessionArg;
        /* 3. register it under a fresh handle */
        l->handle = email_new_token_L();
        l->next = email.lookups;
        email.lookups = l;
        *lphLookup = (HANDLE)l->handle;
    }
    nspv2_mutex_unlock(&email.lock);
    return err ? email_fail(err) : NO_ERROR;
}

static VOID WSAAPI email_next_ex(HANDLE hAsyncCall, HANDLE hLookup, DWORD dwControlFlags,
                                 LPDWORD lpdwBufferLength, LPWSAQUERYSET2W lpqsResults)
{
    INT code = NO_ERROR;
    nspv2_mutex_lock(&email.lock);
    email_lookup *l = email_lookup_find_L((uintptr_t)hLookup);
    if (!l) {
        code = WSA_INVALID_HANDLE;
    } else if (!lpdwBufferLength) {
        code = WSAEINVAL;
    } else {
        /* LUP_FLUSHPREVIOUS: give up the result that did not fit last time */
        if ((dwControlFlags & LUP_FLUSHPREVIOUS) && l->has_held) {
            email_result_release_L(&l->held);
            l->has_held = 0;
        }
        int was_held = l->has_held;
        if (!l->has_held && l->pos < l->n) {
            email_snapshot_L(l->found[l->pos++], &l->held);
            l->has_held = 1;
        }
        if (!l->has_held) {
            code = WSA_E_NO_MORE;
        } else {
            size_t need = email_layout(&l->held, l->flags, NULL);
            if (*lpdwBufferLength < need) {
                /* short buffer: the exact size, and the same result next
                 * time (it stays held) */
                *lpdwBufferLength = (DWORD)need;
                code = WSAEFAULT;
            } else if (!lpqsResults || (uintptr_t)lpqsResults % sizeof(void *) != 0) {
                /* no buffer, or one not pointer-aligned as the layout
                 * requires (Winsock's and the host's always are); as
                 * Python, a result that was not held is lost */
                code = WSAEINVAL;
                if (!was_held) {
                    email_result_release_L(&l->held);
                    l->has_held = 0;
                }
            } else {
                memset(lpqsResults, 0, need); /* also zeroes the padding */
                email_layout(&l->held, l->flags, (unsigned char *)lpqsResults);
                email_result_release_L(&l->held);
                l->has_held = 0;
            }
        }
    }
    nspv2_mutex_unlock(&email.lock);
    /* Report through the host, never while holding our lock. */
    WSAProviderCompleteAsyncCall(hAsyncCall, code);
}

static INT WSAAPI email_end(HANDLE hLookup)
{
    int found = 0;
    nspv2_mutex_lock(&email.lock);
    for (email_lookup **pp = &email.lookups; *pp; pp = &(*pp)->next) {
        if ((*pp)->handle == (uintptr_t)hLookup) {
            email_lookup_free_L(pp);
            found = 1;
            break;
        }
    }
    nspv2_mutex_unlock(&email.lock);
    if (!found)
        return email_fail(WSA_INVALID_HANDLE); /* unknown, or ended already */
    return NO_ERROR;
}

/* RNRSERVICE_REGISTER of a name: sign in, or update one's own entry. Takes
 * over the reference of addrs. */
static int email_sign_in(uintptr_t session, const WCHAR *name, size_t len, DWORD status,
                         email_addrs *addrs, int multiple)
{
    int err = NO_ERROR;
    nspv2_mutex_lock(&email.lock);
    size_t at;
    email_entry *e = email_find_L(name, len, &at);
    if (!e) {
        /* a new entry, in the directory's sorted place */
        if (email.n == email.cap) {
            size_t ncap = email.cap ? email.cap * 2 : 16;
            email_entry **nd = realloc(email.dir, ncap * sizeof *nd);
            if (!nd) {
                err = WSA_NOT_ENOUGH_MEMORY;
                goto out;
            }
            email.dir = nd;
            email.cap = ncap;
        }
        e = calloc(1, sizeof *e + (len + 1) * sizeof(WCHAR));
        if (!e) {
            err = WSA_NOT_ENOUGH_MEMORY;
            goto out;
        }
        e->refs = 1; /* the directory's */
        e->owner = session;
        e->status = status;
        e->version = 1;
        e->addrs = addrs;
        addrs = NULL;
        e->len = len;
        memcpy(e->name, name, len * sizeof(WCHAR));
        memmove(&email.dir[at + 1], &email.dir[at], (email.n - at) * sizeof *email.dir);
        email.dir[at] = e;
        email.n++;
    } else if (e->owner != session) {
        err = email_sr_error(SR_APP_ALREADY_REGISTERED);
    } else {
        if (multiple && addrs) {
            /* SERVICE_MULTIPLE: the old addresses, then each new one not
             * there yet */
            size_t old = e->addrs ? e->addrs->n : 0;
            email_addrs *merged = email_addrs_alloc(old + addrs->n);
            if (!merged) {
                err = WSA_NOT_ENOUGH_MEMORY;
                goto out;
            }
            for (size_t i = 0; i < old; i++)
                merged->a[merged->n++] = e->addrs->a[i];
            for (size_t i = 0; i < addrs->n; i++)
                if (!email_addrs_contain(merged, &addrs->a[i]))
                    merged->a[merged->n++] = addrs->a[i];
            email_addrs_release_L(e->addrs);
            e->addrs = merged;
        } else if (!multiple) {
            email_addrs_release_L(e->addrs);
            e->addrs = addrs;
            addrs = NULL;
        }
        e->status = status;
        e->version++;
        e->changed = 1;
    }
out:
    email_addrs_release_L(addrs); /* not taken over */
    nspv2_mutex_unlock(&email.lock);
    return err;
}

/* The entry of name if this session signed it in; else NULL and *err set. */
static email_entry *email_owned_L(uintptr_t session, const WCHAR *name, size_t len, size_t *at,
                                  int *err)
{
    email_entry *e = email_find_L(name, len, at);
    if (!e)
        *err = email_sr_error(SR_APP_NOT_REGISTERED);
    else if (e->owner != session)
        *err = email_sr_error(SR_NOT_INVITER);
    return *err ? NULL : e;
}

/* RNRSERVICE_DEREGISTER: keep the name, drop the given addresses (all of
 * them when none are given). Takes over the reference of addrs. */
static int email_deregister(uintptr_t session, const WCHAR *name, size_t len, email_addrs *addrs)
{
    int err = NO_ERROR;
    size_t at;
    nspv2_mutex_lock(&email.lock);
    email_entry *e = email_owned_L(session, name, len, &at, &err);
    if (e) {
        email_addrs *kept = NULL;
        if (addrs && e->addrs) {
            kept = email_addrs_alloc(e->addrs->n);
            if (!kept) {
                err = WSA_NOT_ENOUGH_MEMORY;
                goto out;
            }
            for (size_t i = 0; i < e->addrs->n; i++)
                if (!email_addrs_contain(addrs, &e->addrs->a[i]))
                    kept->a[kept->n++] = e->addrs->a[i];
        }
        email_addrs_release_L(e->addrs);
        e->addrs = kept;
        e->version++;
        e->changed = 1;
    }
out:
    email_addrs_release_L(addrs);
    nspv2_mutex_unlock(&email.lock);
    return err;
}

/* RNRSERVICE_DELETE: sign the name out, as IMessenger::Signout. (Signout
 * itself would return MSGR_E_NOT_LOGGED_ON for a name not signed in; the
 * client receives SR_APP_NOT_REGISTERED's error.) */
static int email_sign_out(uintptr_t session, const WCHAR *name, size_t len)
{
    int err = NO_ERROR;
    size_t at;
    nspv2_mutex_lock(&email.lock);
    if (email_owned_L(session, name, len, &at, &err))
        email_sign_out_at_L(at);
    nspv2_mutex_unlock(&email.lock);
    return err;
}

/* RNRSERVICE_REGISTER with lpszQueryString "invite=<invitee>". */
static int email_invite(uintptr_t session, const WCHAR *inviter, size_t inviter_len,
                        const WCHAR *invitee, size_t invitee_len)
{
    if (email_cmp_fold(inviter, inviter_len, invitee, invitee_len) == 0)
        return email_sr_error(SR_INVITED_SELF);
    int err = NO_ERROR;
    size_t at;
    nspv2_mutex_lock(&email.lock);
    if (email_owned_L(session, inviter, inviter_len, &at, &err)) {
        const email_entry *target = email_find_L(invitee, invitee_len, &at);
        if (!target)
            err = email_sr_error(SR_APP_NOT_REGISTERED);
        else if (target->status == MISTATUS_INVISIBLE)
            err = email_sr_error(SR_INVITATION_DECLINED);
        else
            email.invitations++;
    }
    nspv2_mutex_unlock(&email.lock);
    return err;
}

/* NSPv2SetServiceEx's work; returns the completion code. */
static int email_set_service(LPWSAQUERYSET2W q, WSAESETSERVICEOP op, DWORD flags,
                             uintptr_t session)
{
    nspv2_mutex_lock(&email.lock);
    int known = email_session_find_L(session) != NULL;
    nspv2_mutex_unlock(&email.lock);
    if (!known || email_check_query_set(q) != NO_ERROR)
        return WSAEINVAL;
    if ((unsigned)op > (unsigned)RNRSERVICE_DELETE)
        return WSAEINVAL;
    if (q->dwNameSpace != NS_EMAIL && q->dwNameSpace != NS_ALL)
        return WSAEINVAL;
    static const WCHAR empty[1] = {0};
    const WCHAR *name = q->lpszServiceInstanceName ? q->lpszServiceInstanceName : empty;
    size_t len = (size_t)email_wcslen(name);
    email_addrs *addrs = NULL;
    int err;

    switch (op) {
    case RNRSERVICE_REGISTER: {
        static const char invite[] = "invite=";
        const WCHAR *qs = q->lpszQueryString;
        size_t k = 0;
        while (qs && k < sizeof invite - 1 && qs[k] == (WCHAR)invite[k])
            k++;
        if (k == sizeof invite - 1)
            return email_invite(session, name, len, qs + k, (size_t)email_wcslen(qs + k));
        DWORD status = MISTATUS_ONLINE;
        if (q->lpBlob && email_decode_presence(q->lpBlob, &status) != NO_ERROR)
            return WSAEINVAL;
        if (!email_is_address(name, len))
            return WSAEINVAL;
        if (!email_states[email_state_index(status)].can_sign_in)
            return email_sr_error(SR_SESSION_STATE_INVALID);
        if ((err = email_read_addrs(q, &addrs)) != NO_ERROR)
            return err;
        return email_sign_in(session, name, len, status, addrs, (flags & SERVICE_MULTIPLE) != 0);
    }
    case RNRSERVICE_DEREGISTER:
        if ((err = email_read_addrs(q, &addrs)) != NO_ERROR)
            return err;
        return email_deregister(session, name, len, addrs);
    default: /* RNRSERVICE_DELETE */
        return email_sign_out(session, name, len);
    }
}

/* Registration: every SetServiceEx completes through the host, exactly
 * once, success or failure. */
static VOID WSAAPI email_set_service_ex(HANDLE hAsyncCall, LPGUID lpProviderId,
                                        LPWSAQUERYSET2W lpqsRegInfo,
                                        WSAESETSERVICEOP essOperation, DWORD dwControlFlags,
                                        LPVOID lpvClientSessionArg)
{
    (void)lpProviderId;
    int code = email_set_service(lpqsRegInfo, essOperation, dwControlFlags,
                                 (uintptr_t)lpvClientSessionArg);
    WSAProviderCompleteAsyncCall(hAsyncCall, code); /* no lock held */
}

NSPV2_HOST_API void nspv2_ref_provider_routine(NSPV2_ROUTINE *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->cbSize = sizeof(NSPV2_ROUTINE);
    out->dwMajorVersion = 1;
    out->dwMinorVersion = 1;
    /* NSPV2_SLOT casts only the declared return type of the slot (int under
     * mingw-w64 for the three VOID entry points); the layout is the SDK's. */
    NSPV2_SLOT(*out, NSPv2Startup, email_startup);
    NSPV2_SLOT(*out, NSPv2Cleanup, email_cleanup);
    NSPV2_SLOT(*out, NSPv2LookupServiceBegin, email_begin);
    NSPV2_SLOT(*out, NSPv2LookupServiceNextEx, email_next_ex);
    NSPV2_SLOT(*out, NSPv2LookupServiceEnd, email_end);
    NSPV2_SLOT(*out, NSPv2SetServiceEx, email_set_service_ex);
    NSPV2_SLOT(*out, NSPv2ClientSessionRundown, email_client_session_rundown);
}

NSPV2_HOST_API void nspv2_ref_provider_reset(void)
{
    nspv2_mutex_lock(&email.lock);
    while (email.n > 0)
        email_sign_out_at_L(email.n - 1); /* lookups holding one keep it */
    free(email.dir);
    email.dir = NULL;
    email.cap = 0;
    email.invitations = 0;
    nspv2_mutex_unlock(&email.lock);
}
