/* chunked.c: libFuzzer target for sl_http_chunked_parse: memory safety, and the same payload and
 * outcome whether the body arrives whole, in two pieces or byte by byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/http_parser.h"

typedef struct {
    int rc;          /* final state, or SL_ERROR */
    size_t consumed; /* bytes consumed before DONE or the error */
    uint64_t total;
    size_t out_len;
    char *out;
} outcome_t;

/* Feeds data[0..size) in pieces that end at the offsets in cuts[0..ncuts), each piece in an
 * exact-size heap copy, and records what the decoder made of it. */
static void decode(const uint8_t *data, size_t size, const size_t *cuts, size_t ncuts, outcome_t *o)
{
    sl_http_chunked_t c = {0};
    size_t off = 0;

    memset(o, 0, sizeof(*o));
    o->out = malloc(size ? size : 1);
    for (size_t k = 0; k <= ncuts && o->rc == 0; k++) {
        size_t stop = k < ncuts ? cuts[k] : size;
        size_t n = stop - off;
        char *piece = malloc(n ? n : 1);
        size_t used = 0;

        memcpy(piece, data + off, n);
        while (used < n && c.state != SL_CHUNKED_DONE) {
            const char *p;
            size_t plen;
            int rc = sl_http_chunked_parse(&c, piece + used, n - used, &p, &plen);

            if (rc == SL_ERROR) {
                o->rc = SL_ERROR;
                break;
            }
            if (rc < 0 || (size_t)rc > n - used)
                abort();
            if (rc == 0 && c.state != SL_CHUNKED_DONE)
                abort();
            if (plen > 0) {
                /* The run ends the consumed range. */
                if (p != piece + used + rc - plen)
                    abort();
                memcpy(o->out + o->out_len, p, plen);
                o->out_len += plen;
            }
            used += (size_t)rc;
        }
        off += used;
        free(piece);
        if (c.state == SL_CHUNKED_DONE)
            o->rc = SL_CHUNKED_DONE;
    }
    /* Incomplete input leaves the decoder in the same state however it was cut. */
    o->consumed = off;
    o->total = c.total;
    if (o->rc == 0)
        o->rc = c.state;
    if (c.total != o->out_len)
        abort();
}

static void same(const outcome_t *a, const outcome_t *b)
{
    if (a->rc != b->rc || a->total != b->total || a->out_len != b->out_len ||
        memcmp(a->out, b->out, a->out_len) != 0)
        abort();
    if (a->rc == SL_CHUNKED_DONE && a->consumed != b->consumed)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outcome_t whole, split, bytes;
    size_t cut, *cuts;
    uint32_t h = 2166136261u;

    decode(data, size, NULL, 0, &whole);

    /* A split point derived from the input, so that the fuzzer explores them all. */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    cut = size ? h % (size + 1) : 0;
    decode(data, size, &cut, 1, &split);
    same(&whole, &split);

    if (size > 0 && size <= 512) {
        cuts = malloc(size * sizeof(*cuts));
        for (size_t i = 0; i < size; i++)
            cuts[i] = i + 1;
        decode(data, size, cuts, size - 1, &bytes);
        same(&whole, &bytes);
        free(cuts);
        free(bytes.out);
    }
    free(whole.out);
    free(split.out);
    return 0;
}
