/* json.h: scanning JSON text already known to be valid: where a value, a string or blanks end. */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <stddef.h>

/* The skip functions take text s[0, len) and a 0-based offset i, and return the offset
 * just past what starts at i (len when the text ends first). They check
 * nothing: on text that is not valid JSON they return some offset <= len. */

/* Past the blanks (space, tab, CR, LF) at i. */
size_t sl_json_skip_ws(const char *s, size_t len, size_t i);

/* Past the string whose opening quote is at i. */
size_t sl_json_skip_string(const char *s, size_t len, size_t i);

/* Past the value starting at i: a string, an object or array (with all it
 * holds), or a number, true, false or null. */
size_t sl_json_skip_value(const char *s, size_t len, size_t i);

/* Whether s[0, len) is exactly one JSON value (RFC 8259), blanks around it
 * allowed, nested at most SL_JSON_MAX_DEPTH deep. Builds nothing: the body
 * editors check a body with it before they scan it with the functions above. */
#define SL_JSON_MAX_DEPTH 1000
int sl_json_valid(const char *s, size_t len);

#endif
