/* lua.c: LuaJIT VM creation, module paths and protected calls with tracebacks. */
#include "sl_lua.h"

#include <ev.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "proxy.h"
#include "sl_ffi.h"
#include "sluice.h"
#include "sl_yaml.h"

/* Debian installs pure-Lua modules and C modules for Lua 5.1 here; LuaJIT
 * loads both (busted, luassert, penlight, cjson, socket). */
#define DEBIAN_LUA_PATH  "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
#define DEBIAN_LUA_CPATH "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;/usr/lib/lua/5.1/?.so"

const char *sl_lua_plugins_dir(void)
{
    const char *dir = getenv("SLUICE_PLUGINS_DIR");
    return dir != NULL && *dir != '\0' ? dir : SL_PLUGINS_DIR;
}

const char *sl_lua_dir(void)
{
    const char *dir = getenv("SLUICE_LUA_DIR");
    return dir != NULL && *dir != '\0' ? dir : SL_LUA_DIR;
}

lua_State *sl_lua_new(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    luaL_openlibs(L);

    const char *dir = sl_lua_dir();
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;./?.lua;./?/init.lua;%s", dir, dir, DEBIAN_LUA_PATH);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "./?.so;" DEBIAN_LUA_CPATH);
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_sluice_yaml);
    lua_setfield(L, -2, "sluice.yaml");
    lua_pop(L, 1);
    /* Where the Lua side finds sluice's own folders. */
    lua_getfield(L, -1, "loaded");
    lua_createtable(L, 0, 2);
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, sl_lua_plugins_dir());
    lua_setfield(L, -2, "plugins");
    lua_setfield(L, -2, "sluice.paths");
    lua_pop(L, 2);
    return L;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = luaL_typename(L, 1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int sl_lua_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return rc == 0 ? SL_OK : SL_ERROR;
}

int sl_lua_run_busted(int argc, char **argv)
{
    lua_State *L = sl_lua_new();
    if (L == NULL) {
        fprintf(stderr, "sluice: out of memory\n");
        return 1;
    }
    /* busted reads its command line from the global `arg`. */
    lua_createtable(L, argc, 1);
    lua_pushstring(L, "sluice test");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    /* busted's runner inspects its caller with debug.getinfo, so it is called
     * from a Lua chunk, not straight from C. When specs fail it raises an
     * error with no value (its way of exiting under Lua 5.1): that is a
     * failed run, already reported, not a crash. */
    static const char chunk[] =
        "local ok, err = pcall(require('busted.runner'), { standalone = false })\n"
        "if ok then return 0 end\n"
        "if err == nil then return 1 end\n"
        "error(err, 0)\n";
    int code = 1;
    if (luaL_loadbuffer(L, chunk, sizeof(chunk) - 1, "@sluice") != 0 ||
        sl_lua_pcall(L, 0, 1) != SL_OK)
        fprintf(stderr, "sluice test: %s\n", lua_tostring(L, -1));
    else
        code = (int)lua_tointeger(L, -1);
    lua_close(L);
    return code;
}

/* --- the worker runtime ------------------------------------------------------ */

SL_EXPORT sl_ffi_current_t sl_ffi_current;

/* Coroutines kept for reuse: a finished coroutine with an empty stack can run
 * the next request's phase, which spares a lua_newthread per request. */
#define CO_POOL_MAX 256

static lua_State *vm;
static int ref_run = LUA_NOREF;
static int ref_finish = LUA_NOREF;
static int worker_id, worker_count;
static struct {
    lua_State *co;
    int ref;
} co_pool[CO_POOL_MAX];
static int co_pooled;

SL_EXPORT int sl_ffi_worker_id(int *count)
{
    *count = worker_count;
    return worker_id;
}

int sl_lua_worker_init(lua_State *L, int id, int nworkers)
{
    vm = L;
    worker_id = id;
    worker_count = nworkers;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sluice.runner");
    if (sl_lua_pcall(L, 1, 1) != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot load the plugin runner: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return SL_ERROR;
    }
    lua_getfield(L, -1, "run_phase");
    ref_run = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "finish");
    ref_finish = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "init_worker");
    lua_pushinteger(L, id);
    lua_pushinteger(L, nworkers);
    if (sl_lua_pcall(L, 2, 0) != SL_OK) {
        sl_log(SL_LOG_ERR, "init_worker failed: %s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return SL_ERROR;
    }
    lua_pop(L, 1);
    return SL_OK;
}

static int resume(sl_request_t *req, int nargs)
{
    lua_State *co = req->co;
    sl_ffi_current.r = req;
    sl_ffi_current.phase = req->phase;
    sl_ffi_current.id = req->seq;
    sl_ffi_current.has_ctx = req->has_ctx;
    int rc = lua_resume(co, nargs);
    req->has_ctx = sl_ffi_current.has_ctx;
    sl_ffi_current.r = NULL;
    sl_ffi_current.phase = SL_PHASE_NONE;

    if (rc == LUA_YIELD) {
        lua_settop(co, 0);
        return SL_AGAIN;
    }
    if (rc == 0) {
        if (lua_gettop(co) > 0 && lua_type(co, 1) == LUA_TNUMBER) {
            lua_settop(co, 3);
            return SL_DONE;
        }
        lua_settop(co, 0);
        return SL_OK;
    }
    /* The runner catches plugin errors itself; what reaches here is a bug in
     * the runtime. The coroutine is dead and cannot be reused. */
    luaL_traceback(vm, co, lua_tostring(co, -1), 0);
    sl_log(SL_LOG_ERR, "plugin runtime error: %s", lua_tostring(vm, -1));
    lua_pop(vm, 1);
    luaL_unref(vm, LUA_REGISTRYINDEX, req->co_ref);
    req->co = NULL;
    req->co_ref = LUA_NOREF;
    return SL_ERROR;
}

int sl_lua_phase(sl_request_t *req, int phase)
{
    if (req->co == NULL) {
        if (co_pooled > 0) {
            co_pooled--;
            req->co = co_pool[co_pooled].co;
            req->co_ref = co_pool[co_pooled].ref;
        } else {
            req->co = lua_newthread(vm);
            req->co_ref = luaL_ref(vm, LUA_REGISTRYINDEX);
        }
    }
    req->phase = phase;
    lua_State *co = req->co;
    lua_settop(co, 0); /* an earlier phase's exit values */
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref_run);
    lua_pushinteger(co, phase);
    lua_pushinteger(co, req->route != NULL ? (lua_Integer)req->route->index + 1 : 0);
    lua_pushnumber(co, req->seq);
    return resume(req, 3);
}

int sl_lua_resume(sl_request_t *req, int id)
{
    lua_pushinteger(req->co, id);
    return resume(req, 1);
}

void sl_lua_wait_add(sl_request_t *req, sl_wait_t *w, int id, void (*cancel)(sl_wait_t *))
{
    w->req = req;
    w->id = id;
    w->cancel = cancel;
    sl_queue_insert_tail(&req->waits, &w->link);
}

void sl_lua_wait_done(sl_wait_t *w)
{
    sl_queue_remove(&w->link);
}

/* A sleep. Sleeps come from a free list: a request that sleeps allocates
 * nothing in steady state. */
typedef struct lua_sleep_s {
    sl_wait_t wait;
    ev_timer ev;
    struct lua_sleep_s *next_free;
} lua_sleep_t;

#define SLEEP_FREE_MAX 1024

static lua_sleep_t *free_sleeps;
static int nfree_sleeps;

static void sleep_free(lua_sleep_t *sl)
{
    if (nfree_sleeps >= SLEEP_FREE_MAX) {
        free(sl);
        return;
    }
    sl->next_free = free_sleeps;
    free_sleeps = sl;
    nfree_sleeps++;
}

static void sleep_cancel(sl_wait_t *w)
{
    lua_sleep_t *sl = (lua_sleep_t *)w;
    ev_timer_stop(ev_default_loop(0), &sl->ev);
    sleep_free(sl);
}

static void sleep_timer_cb(struct ev_loop *loop, ev_timer *ev, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    lua_sleep_t *sl = (lua_sleep_t *)((char *)ev - offsetof(lua_sleep_t, ev));
    sl_request_t *req = sl->wait.req;
    int id = sl->wait.id;
    sl_lua_wait_done(&sl->wait);
    sleep_free(sl);
    sl_proxy_lua_wake(req, id);
}

int sl_lua_wait_timer(sl_request_t *req, double seconds, int id)
{
    lua_sleep_t *sl = free_sleeps;
    if (sl != NULL) {
        free_sleeps = sl->next_free;
        nfree_sleeps--;
    } else if ((sl = malloc(sizeof(*sl))) == NULL) {
        return SL_ERROR;
    }
    sl_lua_wait_add(req, &sl->wait, id, sleep_cancel);
    ev_timer_init(&sl->ev, sleep_timer_cb, seconds > 0 ? seconds : 0, 0.);
    ev_timer_start(ev_default_loop(0), &sl->ev);
    return SL_OK;
}

/* Cancels every wait the request still has (it ended, or its client left). */
static void waits_cancel(sl_request_t *req)
{
    while (!sl_queue_empty(&req->waits)) {
        sl_wait_t *w = sl_queue_data(req->waits.next, sl_wait_t, link);
        sl_lua_wait_done(w);
        w->cancel(w);
    }
}

int sl_lua_exit(sl_request_t *req, const char **body, size_t *len)
{
    lua_State *co = req->co;
    *body = lua_tolstring(co, 2, len);
    return (int)lua_tointeger(co, 1);
}

int sl_lua_exit_keep_headers(sl_request_t *req)
{
    lua_State *co = req->co;
    if (co == NULL || !lua_istable(co, 3))
        return LUA_NOREF;
    lua_pushvalue(co, 3);
    return luaL_ref(co, LUA_REGISTRYINDEX);
}

void sl_lua_exit_restore_headers(sl_request_t *req, int ref)
{
    lua_State *co = req->co;
    if (co == NULL) {
        if (ref != LUA_NOREF)
            luaL_unref(vm, LUA_REGISTRYINDEX, ref);
        return;
    }
    lua_settop(co, 2);
    if (ref == LUA_NOREF) {
        lua_pushnil(co);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
    luaL_unref(co, LUA_REGISTRYINDEX, ref);
}

void sl_lua_release(sl_request_t *req)
{
    waits_cancel(req);
    lua_State *co = req->co;
    if (co == NULL)
        return;
    req->co = NULL;
    /* Drop the request's Lua context (ctx tables, plugin state). */
    if (req->has_ctx) {
        lua_rawgeti(vm, LUA_REGISTRYINDEX, ref_finish);
        lua_pushnumber(vm, req->seq);
        if (sl_lua_pcall(vm, 1, 0) != SL_OK) {
            sl_log(SL_LOG_ERR, "plugin runtime error: %s", lua_tostring(vm, -1));
            lua_pop(vm, 1);
        }
    }
    if (lua_status(co) == 0 && co_pooled < CO_POOL_MAX) {
        lua_settop(co, 0);
        co_pool[co_pooled].co = co;
        co_pool[co_pooled].ref = req->co_ref;
        co_pooled++;
    } else {
        /* A coroutine still suspended (the client left mid-sleep) is
         * dropped; the collector frees it. */
        luaL_unref(vm, LUA_REGISTRYINDEX, req->co_ref);
    }
    req->co_ref = LUA_NOREF;
}

/* --- timers ----------------------------------------------------------------------- */

/* Timers a worker may have pending at once: a plugin that arms one per request
 * under load must hit a clear error, not exhaust memory. */
#define MAX_TIMERS 4096

typedef struct lua_timer_s {
    ev_timer ev;
    int id;
    struct lua_timer_s *next;
} lua_timer_t;

static lua_timer_t *timers; /* pending, for cancel */
static int ntimers;
static int ref_run_timer = LUA_NOREF;

static void timer_unlink(lua_timer_t *t)
{
    for (lua_timer_t **p = &timers; *p != NULL; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            ntimers--;
            return;
        }
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *ev, int revents)
{
    SL_UNUSED(revents);
    lua_timer_t *t = (lua_timer_t *)ev;
    int id = t->id, repeat = ev->repeat > 0;
    if (!repeat) {
        /* libev stopped it before calling us: balance the ev_unref made at start. */
        ev_ref(loop);
        timer_unlink(t);
        free(t);
    }
    /* Runs on the main Lua state: timer functions cannot wait for I/O yet. */
    lua_rawgeti(vm, LUA_REGISTRYINDEX, ref_run_timer);
    lua_pushinteger(vm, id);
    lua_pushboolean(vm, repeat);
    if (sl_lua_pcall(vm, 2, 0) != SL_OK) {
        sl_log(SL_LOG_ERR, "timer %d failed: %s", id, lua_tostring(vm, -1));
        lua_pop(vm, 1);
    }
}

SL_EXPORT int sl_ffi_timer_start(double delay, double interval, int id, const char **err)
{
    if (vm == NULL) {
        *err = "timers run in a worker (not in sluice check or sluice test)";
        return SL_ERROR;
    }
    if (ntimers >= MAX_TIMERS) {
        *err = "too many pending timers";
        return SL_ERROR;
    }
    if (ref_run_timer == LUA_NOREF) {
        lua_getglobal(vm, "require");
        lua_pushliteral(vm, "sluice.timer");
        if (sl_lua_pcall(vm, 1, 1) != SL_OK) {
            lua_pop(vm, 1);
            *err = "cannot load sluice.timer";
            return SL_ERROR;
        }
        lua_getfield(vm, -1, "run");
        ref_run_timer = luaL_ref(vm, LUA_REGISTRYINDEX);
        lua_pop(vm, 1);
    }
    lua_timer_t *t = malloc(sizeof(*t));
    if (t == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    struct ev_loop *loop = ev_default_loop(0);
    ev_timer_init(&t->ev, timer_cb, delay < 0 ? 0 : delay, interval > 0 ? interval : 0);
    t->id = id;
    t->next = timers;
    timers = t;
    ntimers++;
    ev_timer_start(loop, &t->ev);
    /* Pending timers do not keep a stopping worker alive. */
    ev_unref(loop);
    return SL_OK;
}

SL_EXPORT int sl_ffi_timer_cancel(int id)
{
    for (lua_timer_t *t = timers; t != NULL; t = t->next) {
        if (t->id == id) {
            struct ev_loop *loop = ev_default_loop(0);
            ev_ref(loop);
            ev_timer_stop(loop, &t->ev);
            timer_unlink(t);
            free(t);
            return SL_OK;
        }
    }
    return SL_DECLINED;
}
