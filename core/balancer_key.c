/* balancer_key.c: what a request hashes on (consumer, ip, header, cookie, path, arg, capture). */
#include "balancer_key.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "proxy.h"
#include "sl_ffi.h"
#include "worker.h"

/* Several values of one key (repeated headers, repeated query arguments)
 * are joined with this, as nginx joins repeated headers in $http_NAME. */
static const char SEP[] = ", ";

static int name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* The header as the upstream will get it: a plugin's set or clear
 * (sluice.service.request.set_header) replaces what the client sent, and its
 * adds append, so a plugin can steer hashing as it can in Kong. Returns 0
 * when the header is absent. */
static int key_header(const sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    int n = 0, replaced = 0;
    *h = SL_HASH_INIT;
    /* sl_ffi_header_op keeps at most one set or clear per name, first. */
    for (int i = 0; i < req->nops; i++) {
        const sl_header_op_t *op = &req->ops[i];
        if (op->target == 0 && op->op != 1 && name_eq(op->name, op->name_len, k->name, k->name_len))
            replaced = 1;
    }
    if (!replaced) {
        for (size_t i = 0; i < req->h.nheaders; i++) {
            const sl_http_header_t *hd = &req->h.headers[i];
            if (!name_eq(hd->name, hd->name_len, k->name, k->name_len))
                continue;
            if (n++ > 0)
                *h = sl_hash_update(*h, SEP, sizeof(SEP) - 1);
            *h = sl_hash_update(*h, hd->value, hd->value_len);
        }
    }
    for (int i = 0; i < req->nops; i++) {
        const sl_header_op_t *op = &req->ops[i];
        if (op->target != 0 || op->op == 2 ||
            !name_eq(op->name, op->name_len, k->name, k->name_len))
            continue;
        if (n++ > 0)
            *h = sl_hash_update(*h, SEP, sizeof(SEP) - 1);
        *h = sl_hash_update(*h, op->value, op->value_len);
    }
    return n > 0;
}

/* The first cookie named k->name in the Cookie headers ("a=1; b=2"). */
static int key_cookie(const sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    for (size_t i = 0; i < req->h.nheaders; i++) {
        const sl_http_header_t *hd = &req->h.headers[i];
        if (!SL_IEQ(hd->name, hd->name_len, "cookie"))
            continue;
        const char *p = hd->value, *end = hd->value + hd->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
                p++;
            const char *name = p;
            while (p < end && *p != '=' && *p != ';')
                p++;
            size_t nlen = (size_t)(p - name);
            while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
                nlen--;
            if (p == end || *p == ';')
                continue; /* a cookie without '=' */
            const char *value = ++p;
            while (p < end && *p != ';')
                p++;
            size_t vlen = (size_t)(p - value);
            while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
                vlen--;
            if (nlen == k->name_len && memcmp(name, k->name, nlen) == 0) {
                *h = sl_hash_update(SL_HASH_INIT, value, vlen);
                return 1;
            }
        }
    }
    return 0;
}

static int unhex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes the byte of s[0..n) at *i (percent escapes, '+' as a space, as
 * the query arguments Kong hashes on are decoded) and moves *i past it. */
static int decode_at(const char *s, size_t n, size_t *i)
{
    int c = (unsigned char)s[*i];
    if (c == '+') {
        c = ' ';
    } else if (c == '%' && *i + 2 < n && unhex(s[*i + 1]) >= 0 && unhex(s[*i + 2]) >= 0) {
        c = unhex(s[*i + 1]) * 16 + unhex(s[*i + 2]);
        *i += 2;
    }
    (*i)++;
    return c;
}

static uint64_t hash_decoded(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n;)
        h = sl_hash_byte(h, (unsigned char)decode_at(s, n, &i));
    return h;
}

/* Does the raw argument name s[0..n) decode to name? */
static int arg_name_eq(const char *s, size_t n, const char *name, size_t name_len)
{
    size_t i = 0, j = 0;
    while (i < n && j < name_len)
        if (decode_at(s, n, &i) != (unsigned char)name[j++])
            return 0;
    return i == n && j == name_len;
}

/* The query argument k->name, decoded. Repeated arguments hash the same in
 * any order (Kong sorts them before joining); a bare `?name` or `name=` is
 * present with an empty value. The query is the one going upstream, after
 * any plugin's set_query. */
static int key_query_arg(const sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    const char *q = req->up_query.data != NULL ? req->up_query.data : req->h.query;
    size_t qlen = req->up_query.data != NULL ? req->up_query.len : req->h.query_len;
    int n = 0;
    uint64_t sum = 0;
    const char *p = q, *end = q != NULL ? q + qlen : NULL;
    while (p != NULL && p < end) {
        const char *arg = p;
        while (p < end && *p != '&')
            p++;
        const char *eq = memchr(arg, '=', (size_t)(p - arg));
        const char *name_end = eq != NULL ? eq : p;
        if (arg_name_eq(arg, (size_t)(name_end - arg), k->name, k->name_len)) {
            const char *v = eq != NULL ? eq + 1 : p;
            sum += sl_hash_mix(hash_decoded(SL_HASH_INIT, v, (size_t)(p - v)));
            n++;
        }
        if (p < end)
            p++;
    }
    if (n == 0)
        return 0;
    /* One value hashes as itself; several as the sum of their mixed hashes,
     * which does not depend on their order. */
    *h = sum;
    return 1;
}

/* A named capture of the route's regex path. */
static int key_capture(const sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    const sl_router_match_t *m = &req->m;
    if (m->capture_names == NULL)
        return 0;
    for (int i = 0; i < m->ncaptures && i < SL_ROUTER_MAX_CAPTURES; i++) {
        const char *name = m->capture_names[i];
        if (name == NULL || strlen(name) != k->name_len || memcmp(name, k->name, k->name_len) != 0)
            continue;
        int from = m->captures[2 * i], to = m->captures[2 * i + 1];
        if (from < 0 || to < from)
            return 0;
        *h = sl_hash_update(SL_HASH_INIT, req->path + from, (size_t)(to - from));
        return 1;
    }
    return 0;
}

/* Parses an address literal into IPv6 or IPv4-mapped form. */
static int parse_ip(const char *s, size_t len, uint8_t addr[16])
{
    char text[INET6_ADDRSTRLEN];
    struct in_addr v4;
    if (len == 0 || len >= sizeof(text))
        return 0;
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(AF_INET, text, &v4) == 1) {
        memset(addr, 0, 10);
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &v4, 4);
        return 1;
    }
    return inet_pton(AF_INET6, text, addr) == 1;
}

/* The client address as sluice.client.get_forwarded_ip sees it (Kong hashes
 * on nginx's $remote_addr after real_ip): the peer, or, from a peer in
 * server.trusted_ips, the X-Forwarded-For hop right of which every hop is
 * trusted. Hashes its text form. */
static int key_ip(const sl_request_t *req, uint64_t *h)
{
    const sl_conn_t *c = req->c;
    const sl_server_conf_t *s = &c->w->cf->server;
    const char *ip = c->peer_text;
    size_t len = c->peer_text_len;

    if (s->ntrusted_ips > 0 && sl_config_trusts(s, c->peer)) {
        /* Right to left over every hop of every X-Forwarded-For header. */
        const char *left = NULL;
        size_t left_len = 0;
        int done = 0;
        for (size_t i = req->h.nheaders; i-- > 0 && !done;) {
            const sl_http_header_t *hd = &req->h.headers[i];
            if (!SL_IEQ(hd->name, hd->name_len, "x-forwarded-for"))
                continue;
            const char *end = hd->value + hd->value_len;
            while (end > hd->value && !done) {
                const char *p = end;
                while (p > hd->value && p[-1] != ',')
                    p--;
                const char *a = p, *b = end;
                end = p > hd->value ? p - 1 : p;
                while (a < b && (*a == ' ' || *a == '\t'))
                    a++;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                    b--;
                if (a == b)
                    continue;
                uint8_t addr[16];
                if (!parse_ip(a, (size_t)(b - a), addr)) {
                    done = 1; /* not an address: the hop right of it stands */
                    break;
                }
                ip = a;
                len = (size_t)(b - a);
                left = a;
                left_len = len;
                if (!sl_config_trusts(s, addr))
                    done = 1;
            }
        }
        if (!done && left != NULL) {
            ip = left;
            len = left_len;
        }
    }
    *h = sl_hash_update(SL_HASH_INIT, ip, len);
    return 1;
}

/* The authenticated consumer's id, or its credential's when there is no
 * consumer (Kong's order), as sluice.client.authenticate set it. An
 * anonymous request has none and falls back, as in Kong. */
static int key_consumer(const sl_request_t *req, uint64_t *h)
{
    if (req->consumer_id.data == NULL)
        return 0;
    *h = sl_hash_update(SL_HASH_INIT, req->consumer_id.data, req->consumer_id.len);
    return 1;
}

/* The request has no cookie k->name: make one up, hash on it, and have the
 * client keep it (sticky sessions, as Kong does). 122 random bits in UUID
 * form, like Kong's. */
static int key_new_cookie(sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    const char *path = req->ups->conf->hash_cookie_path ? req->ups->conf->hash_cookie_path : "/";
    uint8_t r[16];
    if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        SL_LOG(SL_LOG_ERR, "cannot make a hashing cookie: getrandom failed");
        return 0;
    }
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    char uuid[37];
    snprintf(uuid, sizeof(uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    *h = sl_hash_update(SL_HASH_INIT, uuid, 36);

    /* Name and path were checked at load (a cookie name token, a path
     * without ';' or control characters), so the value is a valid header. */
    char value[1200];
    int n =
        snprintf(value, sizeof(value), "%.*s=%s; Path=%s", (int)k->name_len, k->name, uuid, path);
    const char *err = NULL;
    if (n < 0 || (size_t)n >= sizeof(value) ||
        sl_ffi_header_op(req, 1, 1, "Set-Cookie", 10, value, (size_t)n, &err) != SL_OK)
        SL_LOG(SL_LOG_ERR, "cannot set the hashing cookie %.*s: %s", (int)k->name_len, k->name,
               err != NULL ? err : "too long");
    return 1;
}

static int key_from(sl_request_t *req, const sl_hash_key_t *k, uint64_t *h)
{
    switch (k->from) {
    case SL_KEY_CONSUMER:
        return key_consumer(req, h);
    case SL_KEY_IP:
        return key_ip(req, h);
    case SL_KEY_HEADER:
        return key_header(req, k, h);
    case SL_KEY_COOKIE:
        return key_cookie(req, k, h) || key_new_cookie(req, k, h);
    case SL_KEY_PATH:
        /* The normalized path the router matched, as Kong hashes $uri. */
        *h = sl_hash_update(SL_HASH_INIT, req->path, req->path_len);
        return 1;
    case SL_KEY_QUERY_ARG:
        return key_query_arg(req, k, h);
    case SL_KEY_URI_CAPTURE:
        return key_capture(req, k, h);
    default:
        return 0;
    }
}

void sl_balancer_key(sl_request_t *req, sl_balancer_ctx_t *ctx)
{
    const sl_upstream_t *u = req->ups->conf;
    uint64_t h = 0;
    ctx->has_hash = key_from(req, &u->hash_on, &h) || key_from(req, &u->hash_fallback, &h);
    ctx->hash = ctx->has_hash ? sl_hash_mix(h) : 0;
}
