/* json.c: scanning JSON text already known to be valid, for the body editors in Lua. */
#include "json.h"

#include <ctype.h>
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

/* The validator: each function checks the value starting at *i and moves *i
 * past it; returns 1, or 0 at the first byte that cannot be there. */
static int valid_value(const char *s, size_t len, size_t *i, int depth);

static int valid_string(const char *s, size_t len, size_t *i)
{
    size_t p = *i + 1;
    while (p < len) {
        unsigned char c = (unsigned char)s[p];
        if (c == '"') {
            *i = p + 1;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++p >= len)
                return 0;
            c = (unsigned char)s[p];
            if (c == 'u') {
                for (int k = 0; k < 4; k++)
                    if (++p >= len || !isxdigit((unsigned char)s[p]))
                        return 0;
            } else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
                return 0;
            }
        }
        p++;
    }
    return 0;
}

static int valid_digits(const char *s, size_t len, size_t *p)
{
    size_t start = *p;
    while (*p < len && s[*p] >= '0' && s[*p] <= '9')
        (*p)++;
    return *p > start;
}

static int valid_number(const char *s, size_t len, size_t *i)
{
    size_t p = *i;
    if (p < len && s[p] == '-')
        p++;
    if (p < len && s[p] == '0')
        p++;
    else if (!valid_digits(s, len, &p))
        return 0;
    if (p < len && s[p] == '.') {
        p++;
        if (!valid_digits(s, len, &p))
            return 0;
    }
    if (p < len && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < len && (s[p] == '+' || s[p] == '-'))
            p++;
        if (!valid_digits(s, len, &p))
            return 0;
    }
    *i = p;
    return 1;
}

static int valid_word(const char *s, size_t len, size_t *i, const char *word)
{
    size_t n = strlen(word);
    if (len - *i < n || memcmp(s + *i, word, n) != 0)
        return 0;
    *i += n;
    return 1;
}

/* An object or an array: close is '}' or ']'. */
static int valid_container(const char *s, size_t len, size_t *i, int depth, char close)
{
    size_t p = sl_json_skip_ws(s, len, *i + 1);
    if (p < len && s[p] == close) {
        *i = p + 1;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (p >= len || s[p] != '"' || !valid_string(s, len, &p))
                return 0;
            p = sl_json_skip_ws(s, len, p);
            if (p >= len || s[p] != ':')
                return 0;
            p = sl_json_skip_ws(s, len, p + 1);
        }
        if (!valid_value(s, len, &p, depth + 1))
            return 0;
        p = sl_json_skip_ws(s, len, p);
        if (p < len && s[p] == ',') {
            p = sl_json_skip_ws(s, len, p + 1);
            continue;
        }
        if (p < len && s[p] == close) {
            *i = p + 1;
            return 1;
        }
        return 0;
    }
}

static int valid_value(const char *s, size_t len, size_t *i, int depth)
{
    if (*i >= len || depth > SL_JSON_MAX_DEPTH)
        return 0;
    switch (s[*i]) {
    case '{':
        return valid_container(s, len, i, depth, '}');
    case '[':
        return valid_container(s, len, i, depth, ']');
    case '"':
        return valid_string(s, len, i);
    case 't':
        return valid_word(s, len, i, "true");
    case 'f':
        return valid_word(s, len, i, "false");
    case 'n':
        return valid_word(s, len, i, "null");
    default:
        return valid_number(s, len, i);
    }
}

int sl_json_valid(const char *s, size_t len)
{
    size_t i = sl_json_skip_ws(s, len, 0);
    if (!valid_value(s, len, &i, 1))
        return 0;
    return sl_json_skip_ws(s, len, i) == len;
}

SL_EXPORT int sl_ffi_json_valid(const char *s, int len)
{
    return len >= 0 && sl_json_valid(s, (size_t)len);
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
