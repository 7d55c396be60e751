/* bytes.c: a growable byte string (see bytes.h). */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

int sl_bytes_append(sl_bytes_t *b, const char *p, size_t n)
{
    if (n == 0)
        return SL_OK;
    if (b->cap - b->len < n) {
        size_t cap = b->cap > 0 ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return SL_ERROR;
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return SL_ERROR;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return SL_OK;
}

int sl_bytes_set(sl_bytes_t *b, const char *p, size_t n)
{
    size_t len = b->len;
    b->len = 0;
    if (sl_bytes_append(b, p, n) != SL_OK) {
        b->len = len;
        return SL_ERROR;
    }
    return SL_OK;
}

void sl_bytes_free(sl_bytes_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
