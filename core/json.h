/* json.h: scanning JSON text already known to be valid: where a value, a string or blanks end. */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <stddef.h>

/* Each takes text s[0, len) and a 0-based offset i, and returns the offset
 * just past what starts at i (len when the text ends first). They check
 * nothing: on text that is not valid JSON they return some offset <= len. */

/* Past the blanks (space, tab, CR, LF) at i. */
size_t sl_json_skip_ws(const char *s, size_t len, size_t i);

/* Past the string whose opening quote is at i. */
size_t sl_json_skip_string(const char *s, size_t len, size_t i);

/* Past the value starting at i: a string, an object or array (with all it
 * holds), or a number, true, false or null. */
size_t sl_json_skip_value(const char *s, size_t len, size_t i);

#endif
