/* test_server.c - tests of src/server.c. Being written. */
#include "test_support.h"
void run_server_tests(void);
void run_server_tests(void) {}
