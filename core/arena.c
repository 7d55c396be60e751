/* arena.c: bump allocation over a list of malloc'd blocks. */
#include "arena.h"

#include <stdlib.h>

struct sl_arena_block_s {
    sl_arena_block_t *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    /* Keeps data 16-aligned whatever the fields above add up to. */
    _Alignas(16) unsigned char data[];
};

static sl_arena_block_t *block_new(size_t size)
{
    sl_arena_block_t *b = malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

sl_arena_t *sl_arena_create(size_t block_size)
{
    sl_arena_t *a = malloc(sizeof(*a));
    if (a == NULL)
        return NULL;
    a->block_size = block_size;
    a->head = block_new(block_size);
    if (a->head == NULL) {
        free(a);
        return NULL;
    }
    return a;
}

void sl_arena_destroy(sl_arena_t *a)
{
    if (a == NULL)
        return;
    sl_arena_block_t *b = a->head;
    while (b != NULL) {
        sl_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void sl_arena_reset(sl_arena_t *a)
{
    /* The first block allocated is the last in the list; keep only it. */
    sl_arena_block_t *b = a->head;
    while (b->next != NULL) {
        sl_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    b->used = 0;
    a->head = b;
}

void *sl_arena_alloc(sl_arena_t *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    sl_arena_block_t *b = a->head;
    if (SL_UNLIKELY(b->size - b->used < size)) {
        b = block_new(size > a->block_size ? size : a->block_size);
        if (b == NULL)
            return NULL;
        /* Keep the original first block at the tail so reset can find it. */
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

void *sl_arena_calloc(sl_arena_t *a, size_t size)
{
    void *p = sl_arena_alloc(a, size);
    if (p != NULL)
        memset(p, 0, size);
    return p;
}

char *sl_arena_strndup(sl_arena_t *a, const char *s, size_t len)
{
    char *p = sl_arena_alloc(a, len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *sl_arena_strdup(sl_arena_t *a, const char *s)
{
    return sl_arena_strndup(a, s, strlen(s));
}
