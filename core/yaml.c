/* yaml.c: libyaml's event stream turned into Lua tables, a line table and resolved scalars. */
#include "sl_yaml.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "sluice.h"

/* The null sentinel is the address of this byte, as a light userdata. */
static const char null_sentinel;

#define TAG_PREFIX "tag:yaml.org,2002:"

/* Stack slots of the protected loader (see load_document). */
enum { SLOT_LOADER = 1, SLOT_ANCHORS, SLOT_OPEN, SLOT_LINES };

typedef struct {
    yaml_parser_t parser;
    yaml_event_t event; /* the current event; deleted by whoever holds have_event */
    int have_event;
    const char *name; /* file name for messages */
} loader_t;

/* Raises "NAME:LINE:COL: message" as a Lua error; the caller's cleanup runs
 * after lua_pcall returns. */
__attribute__((format(printf, 4, 5))) static void fail(lua_State *L, loader_t *ld, yaml_mark_t mark,
                                                       const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lua_pushfstring(L, "%s:%d:%d: %s", ld->name, (int)mark.line + 1, (int)mark.column + 1, msg);
    lua_error(L);
}

/* Replaces the current event with the next one, raising on a syntax error. */
static void next_event(lua_State *L, loader_t *ld)
{
    if (ld->have_event) {
        yaml_event_delete(&ld->event);
        ld->have_event = 0;
    }
    if (!yaml_parser_parse(&ld->parser, &ld->event)) {
        yaml_parser_t *p = &ld->parser;
        const char *problem = p->problem != NULL ? p->problem : "invalid YAML";
        if (p->error == YAML_MEMORY_ERROR)
            fail(L, ld, p->mark, "out of memory");
        if (p->context != NULL)
            fail(L, ld, p->problem_mark, "%s (%s that starts at line %d)", problem, p->context,
                 (int)p->context_mark.line + 1);
        fail(L, ld, p->problem_mark, "%s", problem);
    }
    ld->have_event = 1;
}

static int is_digits(const char *s, const char *end, const char *set)
{
    if (s == end)
        return 0;
    for (; s < end; s++)
        if (strchr(set, *s) == NULL)
            return 0;
    return 1;
}

/* Matches the core schema's float:
 * [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int is_float(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    if (p < end && (*p == '-' || *p == '+'))
        p++;
    const char *int_start = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    int int_digits = p > int_start;
    int frac_digits = 0;
    if (p < end && *p == '.') {
        p++;
        const char *frac_start = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        frac_digits = p > frac_start;
    }
    if (!int_digits && !frac_digits)
        return 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        if (!is_digits(p, end, "0123456789"))
            return 0;
        return 1;
    }
    return p == end;
}

enum { KIND_STR, KIND_NULL, KIND_BOOL, KIND_INT, KIND_FLOAT };

/* Pushes the value of a plain scalar as the YAML 1.2 core schema resolves it
 * and returns its KIND_*. The text is NUL-terminated by libyaml. */
static int push_plain(lua_State *L, const char *s, size_t len)
{
    const char *end = s + len;
    if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0) {
        lua_pushlightuserdata(L, (void *)&null_sentinel);
        return KIND_NULL;
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        lua_pushboolean(L, 1);
        return KIND_BOOL;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        lua_pushboolean(L, 0);
        return KIND_BOOL;
    }
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        int hex = s[1] == 'x';
        if (is_digits(s + 2, end, hex ? "0123456789abcdefABCDEF" : "01234567")) {
            /* Beyond 2^64 the value is only approximate, as any Lua number is past 2^53. */
            errno = 0;
            unsigned long long v = strtoull(s + 2, NULL, hex ? 16 : 8);
            lua_pushnumber(L, errno == ERANGE ? HUGE_VAL : (lua_Number)v);
            return KIND_INT;
        }
    }
    const char *digits = (s[0] == '-' || s[0] == '+') ? s + 1 : s;
    if (is_digits(digits, end, "0123456789")) {
        lua_pushnumber(L, (lua_Number)strtod(s, NULL));
        return KIND_INT;
    }
    if (is_float(s, len)) {
        lua_pushnumber(L, (lua_Number)strtod(s, NULL));
        return KIND_FLOAT;
    }
    if (*digits == '.' && (strcmp(digits + 1, "inf") == 0 || strcmp(digits + 1, "Inf") == 0 ||
                           strcmp(digits + 1, "INF") == 0)) {
        lua_pushnumber(L, s[0] == '-' ? -HUGE_VAL : HUGE_VAL);
        return KIND_FLOAT;
    }
    if (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0) {
        lua_pushnumber(L, NAN);
        return KIND_FLOAT;
    }
    lua_pushlstring(L, s, len);
    return KIND_STR;
}

/* Pushes the scalar of the current event, honouring the core schema's tags. */
static void push_scalar(lua_State *L, loader_t *ld)
{
    yaml_event_t *ev = &ld->event;
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;

    if (tag == NULL) {
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            push_plain(L, s, len);
        else
            lua_pushlstring(L, s, len);
        return;
    }
    if (strcmp(tag, "!") == 0 || strcmp(tag, TAG_PREFIX "str") == 0) {
        lua_pushlstring(L, s, len);
        return;
    }
    static const struct {
        const char *name;
        int kind;
    } tags[] = {{"null", KIND_NULL}, {"bool", KIND_BOOL}, {"int", KIND_INT}, {"float", KIND_FLOAT}};
    for (size_t i = 0; i < SL_NELEMS(tags); i++) {
        if (strncmp(tag, TAG_PREFIX, sizeof(TAG_PREFIX) - 1) != 0 ||
            strcmp(tag + sizeof(TAG_PREFIX) - 1, tags[i].name) != 0)
            continue;
        int kind = push_plain(L, s, len);
        /* An integer is a valid !!float. */
        if (kind == tags[i].kind || (kind == KIND_INT && tags[i].kind == KIND_FLOAT))
            return;
        fail(L, ld, ev->start_mark, "'%s' is not a valid !!%s", s, tags[i].name);
    }
    fail(L, ld, ev->start_mark, "unsupported tag '%s'", tag);
}

/* Collections accept no tag or their own core tag. */
static void check_collection_tag(lua_State *L, loader_t *ld, const yaml_char_t *tag,
                                 const char *own)
{
    if (tag == NULL || strcmp((const char *)tag, "!") == 0)
        return;
    if (strncmp((const char *)tag, TAG_PREFIX, sizeof(TAG_PREFIX) - 1) == 0 &&
        strcmp((const char *)tag + sizeof(TAG_PREFIX) - 1, own) == 0)
        return;
    fail(L, ld, ld->event.start_mark, "unsupported tag '%s'", (const char *)tag);
}

/* Pushes the value an alias names. */
static void push_alias(lua_State *L, loader_t *ld)
{
    const char *anchor = (const char *)ld->event.data.alias.anchor;
    lua_getfield(L, SLOT_OPEN, anchor);
    int open = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (open)
        fail(L, ld, ld->event.start_mark, "alias *%s refers to a collection that contains it",
             anchor);
    lua_getfield(L, SLOT_ANCHORS, anchor);
    if (lua_isnil(L, -1))
        fail(L, ld, ld->event.start_mark, "unknown anchor '%s'", anchor);
}

/* For a collection starting at the current event: pushes the anchor name (or
 * nil) and marks it open so that an alias inside it is refused; then pushes
 * the new table and registers a line table for it. Returns the line. */
static int open_collection(lua_State *L, loader_t *ld, const yaml_char_t *anchor, int depth)
{
    yaml_mark_t mark = ld->event.start_mark;
    if (depth > SL_YAML_MAX_DEPTH)
        fail(L, ld, mark, "the document is nested deeper than %d levels", SL_YAML_MAX_DEPTH);
    if (!lua_checkstack(L, 16))
        fail(L, ld, mark, "out of memory");
    if (anchor != NULL) {
        lua_pushstring(L, (const char *)anchor);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, SLOT_OPEN);
    } else {
        lua_pushnil(L);
    }
    int line = (int)mark.line + 1;
    lua_newtable(L); /* the collection */
    lua_pushvalue(L, -1);
    lua_createtable(L, 0, 1); /* its lines */
    lua_pushinteger(L, line);
    lua_setfield(L, -2, "@");
    lua_rawset(L, SLOT_LINES);
    return line;
}

/* Pops the anchor name below the finished table at the top and binds it. */
static void close_collection(lua_State *L)
{
    if (!lua_isnil(L, -2)) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, SLOT_OPEN);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, SLOT_ANCHORS);
    }
    lua_remove(L, -2);
}

/* Pushes the line table of the table at idx (created when missing, for tables
 * built outside this loader never happen, but stay safe). */
static void push_lines_of(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    lua_rawget(L, SLOT_LINES);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, idx);
        lua_pushvalue(L, -2);
        lua_rawset(L, SLOT_LINES);
    }
}

static void load_node(lua_State *L, loader_t *ld, int depth);

static void load_sequence(lua_State *L, loader_t *ld, int depth)
{
    check_collection_tag(L, ld, ld->event.data.sequence_start.tag, "seq");
    open_collection(L, ld, ld->event.data.sequence_start.anchor, depth);
    int t = lua_gettop(L);
    push_lines_of(L, t);
    int lt = lua_gettop(L);
    for (int i = 1;; i++) {
        next_event(L, ld);
        if (ld->event.type == YAML_SEQUENCE_END_EVENT)
            break;
        int line = (int)ld->event.start_mark.line + 1;
        load_node(L, ld, depth + 1);
        lua_rawseti(L, t, i);
        lua_pushinteger(L, line);
        lua_rawseti(L, lt, i);
    }
    lua_pop(L, 1); /* lines */
    close_collection(L);
}

/* Copies into the table at t the keys of the mapping at src it lacks, with
 * their lines. */
static void merge_into(lua_State *L, loader_t *ld, int t, int lt, int src, yaml_mark_t mark)
{
    if (!lua_istable(L, src))
        fail(L, ld, mark, "a merge key (<<) takes a mapping or a list of mappings");
    lua_rawgeti(L, src, 1);
    int is_list = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (is_list)
        fail(L, ld, mark, "a merge key (<<) takes a mapping or a list of mappings");
    push_lines_of(L, src);
    int slt = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        lua_pushvalue(L, -2);
        lua_rawget(L, t);
        int present = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!present) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, t);
            lua_pushvalue(L, -1);
            lua_pushvalue(L, -1);
            lua_rawget(L, slt);
            lua_rawset(L, lt);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Applies a merge key's value (a mapping or a list of mappings, at idx): the
 * mapping's own keys win, then earlier mappings over later ones. */
static void apply_merge(lua_State *L, loader_t *ld, int t, int lt, int idx, yaml_mark_t mark)
{
    if (!lua_istable(L, idx))
        fail(L, ld, mark, "a merge key (<<) takes a mapping or a list of mappings");
    lua_rawgeti(L, idx, 1);
    int is_list = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!is_list) {
        merge_into(L, ld, t, lt, idx, mark);
        return;
    }
    for (int i = 1;; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        merge_into(L, ld, t, lt, lua_gettop(L), mark);
        lua_pop(L, 1);
    }
}

static void load_mapping(lua_State *L, loader_t *ld, int depth)
{
    check_collection_tag(L, ld, ld->event.data.mapping_start.tag, "map");
    open_collection(L, ld, ld->event.data.mapping_start.anchor, depth);
    int t = lua_gettop(L);
    push_lines_of(L, t);
    int lt = lua_gettop(L);
    lua_pushnil(L); /* the merge key's value, applied once all keys are in */
    int merge = lua_gettop(L);
    yaml_mark_t merge_mark = {0};

    for (;;) {
        next_event(L, ld);
        if (ld->event.type == YAML_MAPPING_END_EVENT)
            break;
        yaml_mark_t key_mark = ld->event.start_mark;
        int is_merge = 0;
        if (ld->event.type == YAML_SCALAR_EVENT) {
            const char *k = (const char *)ld->event.data.scalar.value;
            is_merge = ld->event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                       ld->event.data.scalar.tag == NULL && strcmp(k, "<<") == 0;
            lua_pushlstring(L, k, ld->event.data.scalar.length);
            if (ld->event.data.scalar.anchor != NULL) {
                lua_pushvalue(L, -1);
                lua_setfield(L, SLOT_ANCHORS, (const char *)ld->event.data.scalar.anchor);
            }
        } else if (ld->event.type == YAML_ALIAS_EVENT) {
            push_alias(L, ld);
            if (lua_type(L, -1) != LUA_TSTRING)
                fail(L, ld, key_mark, "an alias used as a mapping key must name a string");
        } else {
            fail(L, ld, key_mark, "mapping keys must be scalars, not %s",
                 ld->event.type == YAML_MAPPING_START_EVENT ? "mappings" : "sequences");
        }
        if (is_merge && !lua_isnil(L, merge))
            fail(L, ld, key_mark, "duplicate merge key '<<'");
        if (!is_merge) {
            lua_pushvalue(L, -1);
            lua_rawget(L, t);
            if (!lua_isnil(L, -1)) {
                lua_pushvalue(L, -2);
                lua_rawget(L, lt);
                fail(L, ld, key_mark, "duplicate key '%s' (first at line %d)", lua_tostring(L, -3),
                     (int)lua_tointeger(L, -1));
            }
            lua_pop(L, 1);
        }

        next_event(L, ld);
        load_node(L, ld, depth + 1);
        if (is_merge) {
            lua_replace(L, merge);
            lua_pop(L, 1); /* the key */
            merge_mark = key_mark;
            continue;
        }
        lua_pushvalue(L, -2);
        lua_pushinteger(L, (int)key_mark.line + 1);
        lua_rawset(L, lt);
        lua_rawset(L, t);
    }
    if (!lua_isnil(L, merge))
        apply_merge(L, ld, t, lt, merge, merge_mark);
    lua_pop(L, 2); /* merge value, lines */
    close_collection(L);
}

/* Pushes the node starting at the current event; collections are consumed up
 * to and including their end event. */
static void load_node(lua_State *L, loader_t *ld, int depth)
{
    yaml_event_t *ev = &ld->event;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        push_alias(L, ld);
        break;
    case YAML_SCALAR_EVENT:
        if (!lua_checkstack(L, 4))
            fail(L, ld, ev->start_mark, "out of memory");
        push_scalar(L, ld);
        if (ev->data.scalar.anchor != NULL) {
            lua_pushvalue(L, -1);
            lua_setfield(L, SLOT_ANCHORS, (const char *)ev->data.scalar.anchor);
        }
        break;
    case YAML_SEQUENCE_START_EVENT:
        load_sequence(L, ld, depth);
        break;
    case YAML_MAPPING_START_EVENT:
        load_mapping(L, ld, depth);
        break;
    default:
        fail(L, ld, ev->start_mark, "unexpected YAML event %d", (int)ev->type);
    }
}

/* lua_CFunction run under lua_pcall: takes the loader, returns doc, lines. */
static int load_document(lua_State *L)
{
    loader_t *ld = lua_touserdata(L, SLOT_LOADER);
    lua_settop(L, SLOT_LOADER);
    lua_newtable(L); /* SLOT_ANCHORS: name -> value */
    lua_newtable(L); /* SLOT_OPEN: name -> true while its collection is being built */
    lua_newtable(L); /* SLOT_LINES: table -> {key = line, ["@"] = line} */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, SLOT_LINES);

    next_event(L, ld); /* stream start */
    next_event(L, ld);
    if (ld->event.type == YAML_STREAM_END_EVENT) {
        lua_pushlightuserdata(L, (void *)&null_sentinel);
        lua_pushvalue(L, SLOT_LINES);
        return 2;
    }
    next_event(L, ld);
    load_node(L, ld, 1);
    next_event(L, ld); /* document end */
    next_event(L, ld);
    if (ld->event.type != YAML_STREAM_END_EVENT)
        fail(L, ld, ld->event.start_mark,
             "a second document starts here: the file must hold exactly one");
    lua_pushvalue(L, SLOT_LINES);
    return 2;
}

int sl_yaml_load_string(lua_State *L, const char *s, size_t len, const char *name)
{
    loader_t ld;
    memset(&ld, 0, sizeof(ld));
    ld.name = name != NULL ? name : "<string>";
    if (!yaml_parser_initialize(&ld.parser)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: out of memory", ld.name);
        return SL_ERROR;
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)s, len);

    lua_pushcfunction(L, load_document);
    lua_pushlightuserdata(L, &ld);
    int rc = lua_pcall(L, 1, 2, 0);
    if (ld.have_event)
        yaml_event_delete(&ld.event);
    yaml_parser_delete(&ld.parser);
    if (rc != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return SL_ERROR;
    }
    return SL_OK;
}

int sl_yaml_load_file(lua_State *L, const char *path)
{
    int rc = SL_ERROR;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;

    if (f == NULL || fstat(fileno(f), &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot read the file: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: is a directory, not a file", path);
        goto done;
    }
    if (st.st_size > SL_YAML_MAX_FILE) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: the file is larger than %d MiB", path, SL_YAML_MAX_FILE >> 20);
        goto done;
    }
    /* Read up to one byte past the limit: the size may change under us. */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    buf = malloc(cap);
    if (buf == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: out of memory", path);
        goto done;
    }
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len > SL_YAML_MAX_FILE) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: the file is larger than %d MiB", path, SL_YAML_MAX_FILE >> 20);
            goto done;
        }
        if (n == 0)
            break;
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                lua_pushnil(L);
                lua_pushfstring(L, "%s: out of memory", path);
                goto done;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot read the file: %s", path, strerror(errno));
        goto done;
    }
    rc = sl_yaml_load_string(L, buf, len, path);
done:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

static int l_load_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    sl_yaml_load_file(L, path);
    return 2;
}

static int l_load_string(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");
    sl_yaml_load_string(L, s, len, name);
    return 2;
}

int luaopen_sluice_yaml(lua_State *L)
{
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_load_file);
    lua_setfield(L, -2, "load_file");
    lua_pushcfunction(L, l_load_string);
    lua_setfield(L, -2, "load_string");
    lua_pushlightuserdata(L, (void *)&null_sentinel);
    lua_setfield(L, -2, "null");
    return 1;
}
