/* test_wire.c - tests of src/wire.c. Being written. */
#include "test_support.h"
void run_wire_tests(void);
void run_wire_tests(void) {}
