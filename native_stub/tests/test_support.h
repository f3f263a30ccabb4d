/*
 * test_support.h - shared by the C tests of the native NSPv2 host, the C
 * reference provider (the NS_EMAIL presence directory of
 * docs/email-example.md) and the C bench provider:
 *
 *   host_tests.c        main: runs every subject, prints "N checks, M failed"
 *   test_sessions.c     advertise/unadvertise, namespaces, sessions, the
 *                       Winsock-named calls, per-thread last error, reset
 *   test_lookups.c      async completion, timeouts, races, NS_ALL order,
 *                       registration routing, the stress test
 *   test_queryset.c     query-set relocation (the bench provider's full
 *                       result at every buffer size) and provider faults
 *   test_ref_provider.c the reference provider, its stress test included
 *   test_driver.c       nspv2_driver_run
 *   test_lifetime.c     the provider's copy of a query set, held buffers of
 *                       calls never completed
 *   test_routing.c      routing through the catalog: primary, secondary and
 *                       wildcard providers, disabled ones, NextEx stepping
 *                       across providers, where a registration goes
 *   test_support.c      the checks' counters and the helpers below
 *
 * Built together with the library sources (see the Makefile); prints one
 * line per failed check and a summary, exits non-zero on any failure.
 */
#ifndef NSPV2_TEST_SUPPORT_H
#define NSPV2_TEST_SUPPORT_H

#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "nspv2_bench_provider.h"
#include "nspv2_host.h"
#include "nspv2_messenger.h"
#include "nspv2_ref_provider.h"

#include "catalog.h" /* NSPV2_CATALOG_MEMORY, NSPV2_LEVEL_* */
#include "platform.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* checks                                                                    */

extern unsigned long checks_run, checks_failed;
extern const char *current_test;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks_run++;                                                                     \
        if (!(cond)) {                                                                    \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s\n", current_test, __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

/* expr must return SOCKET_ERROR with WSAGetLastError() == err */
#define CHECK_ERR(expr, err)                                                              \
    do {                                                                                  \
        checks_run++;                                                                     \
        INT r_ = (expr);                                                                  \
        int e_ = WSAGetLastError();                                                       \
        if (r_ != SOCKET_ERROR || e_ != (err)) {                                          \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s -> %d, last error %d, expected %d\n", current_test, \
                   __FILE__, __LINE__, #expr, (int)r_, e_, (int)(err));                   \
        }                                                                                 \
    } while (0)

#define CHECK_OK(expr)                                                                    \
    do {                                                                                  \
        checks_run++;                                                                     \
        INT r_ = (expr);                                                                  \
        if (r_ != NO_ERROR) {                                                             \
            checks_failed++;                                                              \
            printf("FAIL %s (%s:%d): %s -> %d, last error %d\n", current_test, __FILE__,   \
                   __LINE__, #expr, (int)r_, WSAGetLastError());                          \
        }                                                                                 \
    } while (0)

#define TEST(name) static void name(void)
#define RUN(name)                                                                         \
    do {                                                                                  \
        unsigned long before_ = checks_failed;                                            \
        current_test = #name;                                                             \
        name();                                                                           \
        printf("%s %s\n", checks_failed == before_ ? "ok  " : "FAILED", #name);           \
        fflush(stdout);                                                                   \
    } while (0)

/* each test file's list, run by main in host_tests.c */
void run_session_tests(void);
void run_lookup_tests(void);
void run_queryset_tests(void);
void run_ref_provider_tests(void);
void run_driver_tests(void);
void run_lifetime_tests(void);

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* An ASCII string as UTF-16 into dst (cap WCHARs, terminator included). */
void wcopy(WCHAR *dst, size_t cap, const char *s);
/* A UTF-16 copy of an ASCII string (static storage, a few at a time; not
 * thread-safe). */
WCHAR *W(const char *s);
int wstr_is(const WCHAR *w, const char *s);
WSAQUERYSETW query(DWORD ns, const GUID *provider, const char *name);
nspv2_host_stats stats(void);
/* [p, p + len) lies inside [buf, buf + size). */
int in_buffer(const void *p, size_t len, const void *buf, size_t size);
/* ---- the catalog: fresh() makes it this process's memory, empty ---- */
/* An NS_EMAIL installation blob (nsemail.h; an application provider):
 * fSupportsWildCard = wildcard, n domains (ASCII) with their AuthLevels. */
typedef union {
    DWORD align;
    unsigned char bytes[1024];
} email_blob_buf;
BLOB email_blob(email_blob_buf *b, int wildcard, size_t n, const char *const *domains,
                const unsigned *levels);
/* WSCInstallNameSpaceEx(id, ns, blob) (one check); blob may be NULL. */
void install_provider(const GUID *id, DWORD ns, const BLOB *blob);
/* install_provider unless id is installed already, then
 * WSAAdvertiseProvider(id, r). */
void advertise_installed(const GUID *id, DWORD ns, const BLOB *blob, const NSPV2_ROUTINE *r);
/* The reference provider ("ref"): NS_EMAIL, primary for example.com and
 * example.org, and a wildcard provider; installed (unless it is), then
 * advertised. */
void advertise_ref(void);
/* The bench provider ("bench"): NS_EMAIL without a blob; the same. */
void advertise_bench(void);
/* The bench provider's BLOB. */
void check_bench_blob(const BLOB *b);
/* Checks a full (LUP_RETURN_ALL) bench result for `name`, all pointers
 * inside [buf, buf + size). */
void check_bench(const WSAQUERYSETW *r, const char *name, size_t size);

/* Buffer aligned like Winsock's, with 64 canary bytes after `size`. */
typedef union {
    WSAQUERYSETW qs;
    unsigned char bytes[4096 + 64];
} result_buf;

/* Opens a client session (one check). */
uint64_t open_session(void);
/* Begins a lookup of name in ns, any provider, with flags (one check); the
 * lookup handle. */
HANDLE begin_lookup(uint64_t s, DWORD ns, const char *name, DWORD flags);
/* nspv2_lookup_next on h into the whole of buf; its return value (the last
 * error as the call left it). */
INT next_result(HANDLE h, DWORD flags, result_buf *buf);
/* The same with a buffer length of len bytes (at most what buf holds). */
INT next_sized(HANDLE h, DWORD len, result_buf *buf);
/* The first result of h asked for at every buffer length below the one it
 * needs: each try fails with WSAEFAULT, reports exactly that length and
 * writes nothing. Then the result at exactly that length into buf (every
 * byte after it left as it was, for lookup_finish_sized to check); returns
 * the length. */
DWORD next_at_every_size(HANDLE h, result_buf *buf);
/* After next_at_every_size(h, buf) returned need: not a byte of buf past
 * need written; no more results; ends the lookup. */
void lookup_finish_sized(HANDLE h, result_buf *buf, DWORD need);

/* One nspv2_lookup_next on h in a thread (into a local 4096-byte buffer). */
typedef struct next_runner {
    HANDLE h;
    INT ret;
    int err;
} next_runner;
void next_runner_main(void *p);

/* ------------------------------------------------------------------------ */
/* a test provider whose behaviour the tests choose (test_support.c)         */

extern const GUID tp_id, tp_fail_id, tp_silent_id;
#define TP_NAMESPACE NS_NLA

enum tp_mode {
    TP_SYNC,     /* complete at once: tp_results results, then WSA_E_NO_MORE */
    TP_DEFER,    /* do not complete; publish the async handle in tp.deferred */
    TP_ASYNC,    /* like TP_SYNC, but the completer thread completes later */
    TP_DOUBLE,   /* complete twice; keep the second outcome */
    TP_OVERRUN,  /* write 16 bytes past the buffer, then complete NO_ERROR */
    TP_BADPTR,   /* a pointer outside the buffer */
    TP_BADCOUNT, /* a CSADDR_INFO count running past the buffer */
};

#define TP_QUEUE 1024
typedef struct tp_session {
    int cleanups, rundowns;
} tp_session;

typedef struct tp_state {
    nspv2_mutex lock;
    int mode;
    int results;        /* results per lookup in TP_SYNC */
    HANDLE deferred;    /* TP_DEFER: the handle left pending */
    INT second_ret;     /* TP_DOUBLE */
    int second_err;
    int begins, ends, nexts;
    tp_session **sessions; /* every session argument ever handed out */
    int nsessions, capsessions;
    HANDLE queue[TP_QUEUE]; /* TP_ASYNC: calls for the completer thread */
    INT queue_code[TP_QUEUE];
    int qhead, qlen;
    int stop;
    int cursor[256];    /* results handed out per lookup handle */
    uintptr_t next_handle;
} tp_state;
extern tp_state tp;

void tp_set_mode(int mode);
/* The async handle TP_DEFER left pending (waits up to 2 s), or NULL. */
HANDLE tp_wait_deferred(void);
/* TP_ASYNC: completes queued calls from its own thread until tp.stop. */
void tp_completer_main(void *p);
NSPV2_ROUTINE tp_routine(void);
/* installs tp_id ("tp", TP_NAMESPACE, no blob) unless it is, and advertises
 * the test provider */
void advertise_tp(void);
/* every test starts from an empty host and an empty directory */
void fresh(void);

/* ------------------------------------------------------------------------ */
/* the reference provider: registrations and lookups (test_support.c)        */

/* A registration: the query set and what it points to, in one place. The
 * pointers are set by reg_set, so a reg may be filled in any order. */
typedef struct reg {
    WSAQUERYSETW q;
    WCHAR name[128];
    WCHAR query[160];
    DWORD ncs;
    CSADDR_INFO cs[8];
    SOCKADDR_IN6 sa[8]; /* room for either family */
    int has_blob;
    BLOB blob;
    unsigned char data[32];
} reg;

void reg_init(reg *r, const char *name);
/* 192.0.2.<last>:<port> */
void reg_v4(reg *r, unsigned char last, unsigned short port);
/* [2001:db8::<last>]:<port> */
void reg_v6(reg *r, unsigned char last, unsigned short port);
void encode_presence(DWORD status, unsigned char out[NSPV2_PRESENCE_BLOB_SIZE]);
void reg_blob(reg *r, const unsigned char *bytes, ULONG n);
void reg_status(reg *r, DWORD status);
INT reg_set(uint64_t s, reg *r, WSAESETSERVICEOP op, DWORD flags);
/* Registers name (CS address 192.0.2.1:5060) with status; -1: no blob. */
INT sign_in(uint64_t s, const char *name, long status);
INT sign_out(uint64_t s, const char *name);
INT invite(uint64_t s, const char *inviter, const char *invitee);
int is_v4(const CSADDR_INFO *c, unsigned char last, unsigned short port);
int is_v6(const CSADDR_INFO *c, unsigned char last, unsigned short port);
int blob_is_presence(const BLOB *b, DWORD status);
/* Checks a LUP_RETURN_ALL result: name, status, flags, version; the CS
 * addresses are the caller's to check. All pointers inside the buffer. */
void check_entry(const WSAQUERYSETW *r, size_t size, const char *name, DWORD status,
                 const char *status_name, DWORD output_flags, DWORD version);
/* One exact lookup that must find exactly one result, into *out. */
void look_one(uint64_t s, const char *name, DWORD flags, result_buf *out);
/* The error of a lookup expected to fail at Begin (through the host: a
 * provider's own Begin error comes back as WSASERVICE_NOT_FOUND). */
int look_error(uint64_t s, const char *name);
/* The reference provider's own NSPv2LookupServiceBegin, called through the
 * routine table the host holds, with no session argument (only its
 * argument checks can pass): its error, or NO_ERROR (then ended). */
int ref_begin_error(const char *name);
/* The names a lookup returns, joined with ' ' into out; the error code. */
int look_names(uint64_t s, const char *name, char *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* stress tests: worker threads run until stress_stop (test_support.c)       */

#define STRESS_MS 400

typedef struct stress_state {
    nspv2_mutex lock;
    HANDLE shared_lookup;   /* published by lookup workers, ended by the ender */
    uint64_t shared_session; /* published by session workers, closed by the closer */
    int done;
    unsigned long errors;   /* unexpected outcomes */
} stress_state;
extern stress_state st;

/* clears the stop flag and the error count */
void stress_start(void);
void stress_stop(void);
int stress_done(void);
/* counts an unexpected outcome (prints the first ten) */
void stress_unexpected(const char *what, int code);
/* Closes (or abandons) s; any failure is unexpected, as `what`. */
void stress_end_session(uint64_t s, int abandon, const char *what);
/* Lets the n threads run for STRESS_MS, stops them and joins them. */
void stress_run(nspv2_thread *t, int n);
/* The books after a stress run: no unexpected outcome, nothing left open
 * or pending, as many provider sessions ended as began, no provider fault (four
 * checks); the host's stats. */
nspv2_host_stats stress_check_books(void);

#endif /* NSPV2_TEST_SUPPORT_H */
