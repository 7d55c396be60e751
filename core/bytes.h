/* bytes.h: a growable byte string for bodies that Lua reads or replaces. */
#ifndef SL_BYTES_H
#define SL_BYTES_H

#include "sluice.h"

/* Bytes in data[0, len) of a malloc'd block of cap bytes. A zeroed sl_bytes_t
 * is empty and owns nothing. Only requests whose plugins read or replace a
 * body use one, so a proxied request without such plugins allocates nothing. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} sl_bytes_t;

/* Appends p[0, n), growing the block by doubling. Returns SL_OK, or SL_ERROR
 * when out of memory (b is unchanged). */
int sl_bytes_append(sl_bytes_t *b, const char *p, size_t n);

/* Replaces the contents with p[0, n); p may not point into b. Returns as
 * sl_bytes_append. */
int sl_bytes_set(sl_bytes_t *b, const char *p, size_t n);

/* Frees the block and empties b. */
void sl_bytes_free(sl_bytes_t *b);

#endif
