/* log.h: the error log (levels, file or stderr) and the buffered JSON access log. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdarg.h>

#include "config.h"

/* Opens the error log named by cf (a path or "stderr"). Until it is called,
 * messages go to stderr at level notice. Returns SL_OK or SL_ERROR (logged). */
int sl_log_open(const sl_server_conf_t *s);

/* Sets the "pid#worker" tag each line carries; worker is -1 in the master. */
void sl_log_set_worker(int worker);

void sl_log_close(void);

/* Writes one error-log line if level is enabled. One write(2) per line, so
 * lines from several processes never interleave. */
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sl_log_enabled(level) ((level) <= sl_log_level)
extern int sl_log_level;

#define SL_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if (sl_log_enabled(level))                                                                 \
            sl_log(level, __VA_ARGS__);                                                            \
    } while (0)

/* The access log: JSON lines appended to a per-worker buffer and written when
 * the buffer fills, on sl_access_log_flush (a timer calls it every second) and
 * at exit. */
typedef struct {
    int fd; /* -1: off */
    int owned;
    char *buf;
    size_t size;
    size_t len;
} sl_access_log_t;

int sl_access_log_open(sl_access_log_t *al, const sl_server_conf_t *s);

/* Log rotation (SIGUSR1): writes out what the access log holds, then opens
 * its path anew, so that lines stop going to a file renamed meanwhile. On
 * failure (logged) the old file stays in use. Returns SL_OK or SL_ERROR. */
int sl_access_log_reopen(sl_access_log_t *al, const sl_server_conf_t *s);

/* How many times this process reopened its log files; Lua's log plugins
 * read it (sl_ffi_log_generation) to reopen theirs. */
extern int sl_log_generation;
void sl_access_log_flush(sl_access_log_t *al);
void sl_access_log_close(sl_access_log_t *al);

/* Reserves room for a line of up to len bytes, flushing first if needed.
 * Returns where to write, or NULL when the log is off. */
char *sl_access_log_reserve(sl_access_log_t *al, size_t len);
void sl_access_log_commit(sl_access_log_t *al, size_t len);

/* Appends s as the inside of a JSON string (quotes not included), escaping as
 * needed, writing at most cap bytes. Returns the bytes written. */
size_t sl_json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
