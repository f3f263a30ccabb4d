/* server.c - serving client processes (nspv2_host.h). Being written. */
#include "nspv2_host.h"
