/* main.c: runs every registered C unit test, or those whose name contains argv[1]. */
#include <stdarg.h>
#include <stdlib.h>

#include "test.h"

typedef struct {
    const char *file;
    const char *name;
    sl_test_fn fn;
} test_t;

static test_t tests[1024];
static size_t ntests;
static int current_failed;

void sl_test_register(const char *file, const char *name, sl_test_fn fn)
{
    if (ntests == sizeof(tests) / sizeof(tests[0])) {
        fprintf(stderr, "too many tests; raise the table size in spec/core/main.c\n");
        exit(2);
    }
    tests[ntests++] = (test_t){file, name, fn};
}

void sl_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: assertion failed: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    current_failed = 1;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;

    for (size_t i = 0; i < ntests; i++) {
        if (filter != NULL && strstr(tests[i].name, filter) == NULL)
            continue;
        current_failed = 0;
        tests[i].fn();
        if (current_failed) {
            failed++;
            fprintf(stderr, "FAIL %s (%s)\n", tests[i].name, tests[i].file);
        } else {
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
