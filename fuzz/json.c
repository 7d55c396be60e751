/* json.c: fuzzes the JSON validator and scanners (core/json.c) against each other. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

/*
 * Any input: the scanners never run past the end, and a text the validator
 * accepts is exactly one value, which skip_value skips whole (blanks after
 * it aside).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    for (size_t i = 0; i < size; i++) {
        assert(sl_json_skip_value(s, size, i) <= size);
        assert(sl_json_skip_string(s, size, i) <= size);
        assert(sl_json_skip_ws(s, size, i) <= size);
    }
    if (sl_json_valid(s, size)) {
        size_t start = sl_json_skip_ws(s, size, 0);
        size_t end = sl_json_skip_value(s, size, start);
        assert(end > start);
        assert(sl_json_skip_ws(s, size, end) == size);
    }
    return 0;
}
