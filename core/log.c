/* log.c: error-log lines with levels and the buffered JSON-lines access log. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int sl_log_level = SL_LOG_NOTICE;
static int log_fd = 2;
static int log_worker = -1;

static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};

int sl_log_open(const sl_server_conf_t *s)
{
    sl_log_level = s->log_level;
    if (s->error_log == NULL || strcmp(s->error_log, "stderr") == 0) {
        log_fd = 2;
        return SL_OK;
    }
    int fd = open(s->error_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        sl_log(SL_LOG_ERR, "cannot open error log %s: %s", s->error_log, strerror(errno));
        return SL_ERROR;
    }
    if (log_fd > 2)
        close(log_fd);
    log_fd = fd;
    return SL_OK;
}

void sl_log_set_worker(int worker)
{
    log_worker = worker;
}

void sl_log_close(void)
{
    if (log_fd > 2)
        close(log_fd);
    log_fd = 2;
}

void sl_log(int level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d/%02d/%02d %02d:%02d:%02d [%s] %d#%d: ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, level_names[level],
                     (int)getpid(), log_worker);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + SL_MIN((size_t)m, sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t rc = write(log_fd, line, len);
    SL_UNUSED(rc);
}

int sl_access_log_open(sl_access_log_t *al, const sl_server_conf_t *s)
{
    al->fd = -1;
    al->owned = 0;
    al->len = 0;
    al->buf = NULL;
    if (s->access_log == NULL)
        return SL_OK;
    if (strcmp(s->access_log, "stdout") == 0) {
        al->fd = 1;
    } else if (strcmp(s->access_log, "stderr") == 0) {
        al->fd = 2;
    } else {
        al->fd = open(s->access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (al->fd < 0) {
            sl_log(SL_LOG_ERR, "cannot open access log %s: %s", s->access_log, strerror(errno));
            return SL_ERROR;
        }
        al->owned = 1;
    }
    al->size = s->access_log_buffer < 4096 ? 4096 : s->access_log_buffer;
    al->buf = malloc(al->size);
    if (al->buf == NULL) {
        sl_access_log_close(al);
        return SL_ERROR;
    }
    return SL_OK;
}

int sl_log_generation;

int sl_access_log_reopen(sl_access_log_t *al, const sl_server_conf_t *s)
{
    if (!al->owned || al->fd < 0)
        return SL_OK; /* off, stdout or stderr */
    sl_access_log_flush(al);
    int fd = open(s->access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        sl_log(SL_LOG_ERR, "cannot reopen access log %s: %s", s->access_log, strerror(errno));
        return SL_ERROR;
    }
    close(al->fd);
    al->fd = fd;
    return SL_OK;
}

void sl_access_log_flush(sl_access_log_t *al)
{
    size_t off = 0;
    while (off < al->len) {
        ssize_t n = write(al->fd, al->buf + off, al->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* A full disk or a closed pipe must not stall the worker: drop the batch. */
            sl_log(SL_LOG_WARN, "access log write failed, %zu bytes dropped: %s", al->len - off,
                   strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    al->len = 0;
}

void sl_access_log_close(sl_access_log_t *al)
{
    if (al->fd >= 0 && al->buf != NULL)
        sl_access_log_flush(al);
    if (al->owned && al->fd >= 0)
        close(al->fd);
    free(al->buf);
    al->buf = NULL;
    al->fd = -1;
}

char *sl_access_log_reserve(sl_access_log_t *al, size_t len)
{
    if (al->fd < 0)
        return NULL;
    if (len > al->size)
        return NULL;
    if (al->size - al->len < len)
        sl_access_log_flush(al);
    return al->buf + al->len;
}

void sl_access_log_commit(sl_access_log_t *al, size_t len)
{
    al->len += len;
}

size_t sl_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
            continue;
        }
        if (o + 6 > cap)
            break;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else {
            /* Control bytes and non-ASCII are escaped byte by byte: the log
             * stays valid JSON whatever a client sent. */
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}
