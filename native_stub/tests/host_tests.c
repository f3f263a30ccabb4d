/*
 * host_tests.c - main of the C tests of the native NSPv2 host, the C
 * reference provider and the C bench provider (the subjects are listed in
 * test_support.h). Prints one line per failed check, one line per test, and
 * a last line "N checks, M failed"; exits non-zero on any failure.
 */
#include "test_support.h"

void run_harness_api_tests(void); /* test_harness_api.c */
void run_wire_tests(void);        /* test_wire.c */
void run_server_tests(void);      /* test_server.c */
void run_routing_tests(void);     /* test_routing.c */
void run_catalog_tests(void);     /* test_catalog.c */
void run_pin_tests(void);         /* test_pin.c */

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    run_session_tests();
    run_lookup_tests();
    run_queryset_tests();
    run_ref_provider_tests();
    run_driver_tests();
    run_lifetime_tests();
    run_routing_tests();
    run_catalog_tests();
    run_harness_api_tests();
    run_wire_tests();
    run_server_tests();
    run_pin_tests();
    fresh();
    printf("%lu checks, %lu failed\n", checks_run, checks_failed);
    return checks_failed ? 1 : 0;
}
