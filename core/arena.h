/* arena.h: bump allocators that free everything they handed out in one call. */
#ifndef SL_ARENA_H
#define SL_ARENA_H

#include "sluice.h"

typedef struct sl_arena_block_s sl_arena_block_t;

/* An arena hands out memory from blocks it mallocs and frees them all at once.
 * Reset keeps the first block, so an arena reused per request reaches a steady
 * state where it mallocs nothing. */
typedef struct sl_arena_s {
    sl_arena_block_t *head; /* the block being carved; older blocks follow */
    size_t block_size;
} sl_arena_t;

/* Returns a new arena whose blocks are block_size bytes (bigger requests get a
 * block of their own), or NULL when out of memory. */
sl_arena_t *sl_arena_create(size_t block_size);

/* Frees the arena and everything allocated from it. */
void sl_arena_destroy(sl_arena_t *a);

/* Frees all but the first block and rewinds it. */
void sl_arena_reset(sl_arena_t *a);

/* Returns size bytes aligned to 16, or NULL when out of memory. */
void *sl_arena_alloc(sl_arena_t *a, size_t size);

/* Like sl_arena_alloc, but zeroed. */
void *sl_arena_calloc(sl_arena_t *a, size_t size);

/* Copies len bytes of s and appends a NUL; NULL when out of memory. */
char *sl_arena_strndup(sl_arena_t *a, const char *s, size_t len);

char *sl_arena_strdup(sl_arena_t *a, const char *s);

#endif
