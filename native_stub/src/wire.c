/* wire.c - the client/server protocol codec (src/wire.h). Being written. */
#include "wire.h"
