/* <ws2spi.h> for building Windows provider source elsewhere: nspv2's
 * compat layer, nspv2_compat.h (nspv2 config --compat puts this folder on
 * the include path). Under Windows the real header is used. */
#if defined(_WIN32)
#include_next <ws2spi.h>
#elif !defined(NSPV2_COMPAT_SHIM_WS2SPI_H)
#define NSPV2_COMPAT_SHIM_WS2SPI_H
#include "../nspv2_compat.h"
#endif
