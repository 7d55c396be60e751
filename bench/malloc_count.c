/* malloc_count.c: an LD_PRELOAD library that counts heap calls per process, readable while it runs.
 *
 * Build: gcc -O2 -shared -fPIC -o malloc_count.so bench/malloc_count.c
 * Use:   MALLOC_COUNT_DIR=/tmp/d LD_PRELOAD=./malloc_count.so build/sluice start -c ...
 *
 * Every process that loads it (the master, and each worker forked from it)
 * gets its own file $MALLOC_COUNT_DIR/malloc_count.PID: six native-endian
 * uint64 counters, mapped MAP_SHARED, so another process reads the live
 * values at any time (`od -An -t u8 FILE`) without signalling the counted
 * one. That matters here: sluice's master and workers own their signal
 * masks, so a "dump on SIGUSR2" handler could be blocked or replaced.
 *
 * Counters, in file order: malloc, calloc, realloc, memalign-family
 * (posix_memalign, aligned_alloc, memalign, valloc, pvalloc), free (non-NULL
 * only), bytes requested. The real allocator is reached through glibc's
 * __libc_* entry points, so no dlsym() (which itself allocates) is needed.
 * glibc routes its own internal allocations (strdup, fopen, getaddrinfo, ...)
 * through the interposed malloc, so they are counted too.
 *
 * A fork() child gets a fresh file through a pthread_atfork handler, so the
 * worker's counts start at zero and never mix with the master's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern void __libc_free(void *);

enum { C_MALLOC, C_CALLOC, C_REALLOC, C_MEMALIGN, C_FREE, C_BYTES, C_N };

/* Until the file is mapped (allocations made while the loader runs), counts
 * go to this static block; they are copied into the file once it exists. */
static uint64_t early[C_N];
static uint64_t *counters = early;

static void map_counters(void)
{
    const char *dir = getenv("MALLOC_COUNT_DIR");
    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
    char path[4096];
    snprintf(path, sizeof(path), "%s/malloc_count.%ld", dir, (long)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return; /* keep counting in `early`; nobody can read it, but nothing breaks */
    if (ftruncate(fd, sizeof(uint64_t) * C_N) != 0) {
        close(fd);
        return;
    }
    void *p = mmap(NULL, sizeof(uint64_t) * C_N, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return;
    counters = p; /* a fresh file is zero-filled */
}

/* In the child of fork(): start from zero in a file of its own. The parent's
 * mapping is MAP_SHARED, so the child must not keep writing into it. */
static void after_fork_child(void)
{
    if (counters != early)
        munmap(counters, sizeof(uint64_t) * C_N);
    memset(early, 0, sizeof(early));
    counters = early;
    map_counters();
}

__attribute__((constructor)) static void malloc_count_init(void)
{
    uint64_t before[C_N];
    memcpy(before, early, sizeof(before));
    map_counters();
    if (counters != early)
        for (int i = 0; i < C_N; i++)
            counters[i] += before[i];
    pthread_atfork(NULL, NULL, after_fork_child);
}

static inline void count(int which, size_t bytes)
{
    __atomic_fetch_add(&counters[which], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&counters[C_BYTES], bytes, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    count(C_MALLOC, n);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    count(C_CALLOC, n * m);
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    count(C_REALLOC, n);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p != NULL)
        __atomic_fetch_add(&counters[C_FREE], 1, __ATOMIC_RELAXED);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    count(C_MEMALIGN, n);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    count(C_MEMALIGN, n);
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    count(C_MEMALIGN, n);
    void *p = __libc_memalign(align, n);
    if (p == NULL && n != 0)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    count(C_MEMALIGN, n);
    return __libc_valloc(n);
}

void *pvalloc(size_t n)
{
    count(C_MEMALIGN, n);
    return __libc_pvalloc(n);
}
