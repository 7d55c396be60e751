/* json.c: scanning JSON text already known to be valid, for the body editors in Lua. */
#include "json.h"

#include <string.h>

#include "sl_ffi.h"

size_t sl_json_skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

size_t sl_json_skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '"')
            return i + 1;
        if (s[i] == '\\')
            i++;
    }
    return len;
}

size_t sl_json_skip_value(const char *s, size_t len, size_t i)
{
    if (i >= len)
        return len;
    if (s[i] == '"')
        return sl_json_skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = s[i];
            if (c == '"') {
                i = sl_json_skip_string(s, len, i);
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return len;
    }
    /* A number, true, false or null: up to a delimiter or a blank. */
    while (i < len && !strchr(",}] \t\r\n", s[i]))
        i++;
    return i;
}

/* The FFI's 1-based view for lua/sluice/json_edit.lua: offsets are Lua string
 * indices, so Lua adds and subtracts nothing. */
SL_EXPORT int sl_ffi_json_skip(int what, const char *s, int len, int p)
{
    size_t i = (size_t)(p - 1), n = (size_t)len;
    if (p < 1 || i > n)
        return len + 1;
    if (what == 0)
        return (int)sl_json_skip_ws(s, n, i) + 1;
    if (what == 1)
        return (int)sl_json_skip_string(s, n, i) + 1;
    return (int)sl_json_skip_value(s, n, i) + 1;
}
