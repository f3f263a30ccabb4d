/*
 * image_echo.c - query-set images through wire.c, for tests/test_client_wire.py.
 *
 * Reads records from stdin (u32 size, then size bytes of an image); for
 * each, checks it and turns it into pointers (nspv2_wire_image_to_pointers),
 * then flattens the resulting WSAQUERYSETW again
 * (nspv2_wire_image_from_query_set) and prints one line: "ok HEX" with the
 * new image, or "bad WHY".
 */
#include "wire.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_all(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }

int main(void) {
    uint32_t size;
    while (read_all(&size, sizeof size)) {
        /* 8-aligned, at least one byte */
        uint64_t *image = calloc((size + 7u) / 8u + 1u, 8u);
        if (image == NULL || !read_all(image, size)) return 1;
        const char *why = "?";
        if (nspv2_wire_image_to_pointers((uint8_t *)image, size, &why) != 0) {
            printf("bad %s\n", why);
        } else {
            size_t need = 0;
            int rc = nspv2_wire_image_from_query_set((const WSAQUERYSETW *)image, NULL, 0, &need);
            uint64_t *out = calloc(need / 8u + 1u, 8u);
            if (out == NULL) return 1;
            if (rc == WSAEFAULT)
                rc = nspv2_wire_image_from_query_set((const WSAQUERYSETW *)image,
                                                     (uint8_t *)out, need, &need);
            if (rc != NO_ERROR) {
                printf("flatten %d\n", rc);
            } else {
                fputs("ok ", stdout);
                for (size_t i = 0; i < need; i++) printf("%02x", ((const uint8_t *)out)[i]);
                putchar('\n');
            }
            free(out);
        }
        fflush(stdout);
        free(image);
    }
    return 0;
}
