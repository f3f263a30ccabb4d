/*
 * fuzz_common.h - what the two harnesses share: the prototypes libFuzzer
 * calls, FUZZ_VERBOSE, and the oracle's ways to report a finding (abort()).
 * Define FUZZ_NAME (the harness's name, prefixed to every message) before
 * including it.
 */
#ifndef NSPV2_FUZZ_COMMON_H
#define NSPV2_FUZZ_COMMON_H

#include "nspv2_host.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_VERBOSE=1 in the environment: print each input's outcome. */
static int verbose;

static void die(const char *what)
{
    fprintf(stderr, FUZZ_NAME ": %s\n", what);
    abort();
}

/* A call's return value as an error code: NO_ERROR, or the non-zero
 * WSAGetLastError() that must come with SOCKET_ERROR. */
static int outcome(INT r)
{
    if (r == NO_ERROR)
        return NO_ERROR;
    if (r != SOCKET_ERROR)
        die("return value neither NO_ERROR nor SOCKET_ERROR");
    int e = WSAGetLastError();
    if (e == 0)
        die("SOCKET_ERROR without an error code");
    return e;
}

static void expect(int got, int want, const char *what)
{
    if (got != want) {
        fprintf(stderr, FUZZ_NAME ": %s: got %d, expected %d\n", what, got, want);
        abort();
    }
}

#endif /* NSPV2_FUZZ_COMMON_H */
