/* lua.c: LuaJIT VM creation, module paths and protected calls with tracebacks. */
#include "sl_lua.h"

#include <ev.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "inproc.h"
#include "log.h"
#include "proxy.h"
#include "resolver.h"
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
    lua_pushcfunction(L, luaopen_sluice_loop);
    lua_setfield(L, -2, "sluice.loop");
    lua_pushcfunction(L, luaopen_sluice_inproc);
    lua_setfield(L, -2, "sluice.inproc");
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
    /* The runtime's modules load before busted runs: busted unloads what a
     * spec file required when the file ends, and C keeps references to the
     * runner's and the timers' functions, which must stay the ones specs see. */
    if (sl_lua_test_init(L) != SL_OK || sl_lua_load_runtime() != SL_OK) {
        fprintf(stderr, "sluice test: cannot start the runtime (event loop, plugin runner)\n");
        sl_lua_test_close();
        lua_close(L);
        return 1;
    }

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
    sl_lua_test_close();
    lua_close(L);
    return code;
}

/* --- the runtime: tasks, waits, timers ----------------------------------------- */

SL_EXPORT sl_ffi_current_t sl_ffi_current;

/* Coroutines kept for reuse: a finished coroutine with an empty stack can run
 * the next task, which spares a lua_newthread per request. */
#define CO_POOL_MAX 256

static lua_State *vm;
static int ref_run = LUA_NOREF;
static int ref_contexts = LUA_NOREF; /* the runner's contexts table: seq -> ctx */
static int ref_run_timer = LUA_NOREF;
static int worker_id, worker_count;
static int exiting;
static int test_mode; /* `sluice test`: no worker, specs block in sluice.loop */
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

SL_EXPORT int sl_ffi_worker_exiting(void)
{
    return exiting;
}

SL_EXPORT double sl_ffi_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sl_lua_load_runtime(void)
{
    if (ref_run != LUA_NOREF)
        return SL_OK;
    lua_getglobal(vm, "require");
    lua_pushliteral(vm, "sluice.runner");
    if (sl_lua_pcall(vm, 1, 1) != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot load the plugin runner: %s", lua_tostring(vm, -1));
        lua_pop(vm, 1);
        return SL_ERROR;
    }
    lua_getglobal(vm, "require");
    lua_pushliteral(vm, "sluice.timer");
    if (sl_lua_pcall(vm, 1, 1) != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot load sluice.timer: %s", lua_tostring(vm, -1));
        lua_pop(vm, 2);
        return SL_ERROR;
    }
    lua_getfield(vm, -1, "run");
    ref_run_timer = luaL_ref(vm, LUA_REGISTRYINDEX);
    lua_pop(vm, 1);
    lua_getfield(vm, -1, "contexts");
    ref_contexts = luaL_ref(vm, LUA_REGISTRYINDEX);
    lua_getfield(vm, -1, "run_phase");
    ref_run = luaL_ref(vm, LUA_REGISTRYINDEX);
    lua_pop(vm, 1);
    return SL_OK;
}

int sl_lua_worker_init(lua_State *L, int id, int nworkers)
{
    vm = L;
    worker_id = id;
    worker_count = nworkers;
    if (sl_lua_load_runtime() != SL_OK)
        return SL_ERROR;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sluice.runner");
    if (sl_lua_pcall(L, 1, 1) != SL_OK) {
        lua_pop(L, 1);
        return SL_ERROR;
    }
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

void sl_lua_task_init(sl_lua_task_t *t, sl_request_t *req, void (*wake)(sl_lua_task_t *, int))
{
    t->co = NULL;
    t->co_ref = LUA_NOREF;
    t->phase = SL_PHASE_NONE;
    t->seq = 0;
    t->has_ctx = 0;
    sl_queue_init(&t->waits);
    t->req = req;
    t->wake = wake;
}

/* Gives t a coroutine: a pooled one, or a new one. */
static void task_coroutine(sl_lua_task_t *t)
{
    if (t->co != NULL)
        return;
    if (co_pooled > 0) {
        co_pooled--;
        t->co = co_pool[co_pooled].co;
        t->co_ref = co_pool[co_pooled].ref;
    } else {
        t->co = lua_newthread(vm);
        t->co_ref = luaL_ref(vm, LUA_REGISTRYINDEX);
    }
}

/* Resumes t's coroutine with nargs values on its stack. Returns SL_AGAIN
 * when it yielded (it waits), SL_DONE when it returned a status (a plugin's
 * exit: status, body, headers stay at 1..3), SL_OK when it returned anything
 * else, SL_ERROR when it raised (a runtime bug: logged, coroutine dropped).
 * The current task is saved and restored around it, because a spec blocked
 * in sluice.loop runs tasks from inside a Lua call of its own. */
static int task_resume(sl_lua_task_t *t, int nargs)
{
    lua_State *co = t->co;
    sl_ffi_current_t saved = sl_ffi_current;
    sl_ffi_current.r = t->req;
    sl_ffi_current.task = t;
    sl_ffi_current.phase = t->phase;
    sl_ffi_current.id = t->seq;
    sl_ffi_current.has_ctx = t->has_ctx;
    int rc = lua_resume(co, nargs);
    t->has_ctx = sl_ffi_current.has_ctx;
    sl_ffi_current = saved;

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
    /* The runner and timer.run catch Lua errors themselves; what reaches
     * here is a bug in the runtime. The coroutine is dead and not reused. */
    luaL_traceback(vm, co, lua_tostring(co, -1), 0);
    sl_log(SL_LOG_ERR, "plugin runtime error: %s", lua_tostring(vm, -1));
    lua_pop(vm, 1);
    luaL_unref(vm, LUA_REGISTRYINDEX, t->co_ref);
    t->co = NULL;
    t->co_ref = LUA_NOREF;
    return SL_ERROR;
}

/* Cancels every wait t still has (it ended, or its client left). */
static void waits_cancel(sl_lua_task_t *t)
{
    while (!sl_queue_empty(&t->waits)) {
        sl_wait_t *w = sl_queue_data(t->waits.next, sl_wait_t, link);
        sl_lua_wait_done(w);
        w->cancel(w);
    }
}

/* Ends t: cancels its waits, drops its Lua context and gives its coroutine
 * back to the pool (a coroutine still suspended is left to the collector). */
static void task_release(sl_lua_task_t *t)
{
    waits_cancel(t);
    lua_State *co = t->co;
    if (co == NULL)
        return;
    t->co = NULL;
    /* Drop the task's Lua context (ctx tables, plugin state), if it made one:
     * contexts[seq] = nil, a raw store that cannot fail or run Lua. */
    if (t->has_ctx) {
        t->has_ctx = 0;
        lua_rawgeti(vm, LUA_REGISTRYINDEX, ref_contexts);
        lua_pushnumber(vm, t->seq);
        lua_pushnil(vm);
        lua_rawset(vm, -3);
        lua_pop(vm, 1);
    }
    if (lua_status(co) == 0 && co_pooled < CO_POOL_MAX) {
        lua_settop(co, 0);
        co_pool[co_pooled].co = co;
        co_pool[co_pooled].ref = t->co_ref;
        co_pooled++;
    } else {
        luaL_unref(vm, LUA_REGISTRYINDEX, t->co_ref);
    }
    t->co_ref = LUA_NOREF;
}

int sl_lua_phase_chain(sl_request_t *req, int phase, int chain)
{
    sl_lua_task_t *t = &req->task;
    task_coroutine(t);
    t->phase = phase;
    lua_State *co = t->co;
    lua_settop(co, 0); /* an earlier phase's exit values */
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref_run);
    lua_pushinteger(co, phase);
    lua_pushinteger(co, chain);
    lua_pushnumber(co, t->seq);
    return task_resume(t, 3);
}

int sl_lua_phase(sl_request_t *req, int phase)
{
    return sl_lua_phase_chain(req, phase, req->route != NULL ? req->route->chain : 0);
}

int sl_lua_resume(sl_request_t *req, int id)
{
    lua_pushinteger(req->task.co, id);
    return task_resume(&req->task, 1);
}

void sl_lua_wait_add(sl_lua_task_t *t, sl_wait_t *w, int id, void (*cancel)(sl_wait_t *))
{
    w->task = t;
    w->id = id;
    w->cancel = cancel;
    sl_queue_insert_tail(&t->waits, &w->link);
}

void sl_lua_wait_done(sl_wait_t *w)
{
    sl_queue_remove(&w->link);
}

sl_wait_t *sl_lua_wait_find(sl_lua_task_t *t, int id, void (*cancel)(sl_wait_t *))
{
    for (sl_queue_t *q = t->waits.next; q != &t->waits; q = q->next) {
        sl_wait_t *w = sl_queue_data(q, sl_wait_t, link);
        if (w->id == id && w->cancel == cancel)
            return w;
    }
    return NULL;
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
    sl_lua_task_t *t = sl->wait.task;
    int id = sl->wait.id;
    sl_lua_wait_done(&sl->wait);
    sleep_free(sl);
    sl_lua_wake(t, id);
}

int sl_lua_wait_timer(sl_lua_task_t *t, double seconds, int id)
{
    lua_sleep_t *sl = free_sleeps;
    if (sl != NULL) {
        free_sleeps = sl->next_free;
        nfree_sleeps--;
    } else if ((sl = malloc(sizeof(*sl))) == NULL) {
        return SL_ERROR;
    }
    sl_lua_wait_add(t, &sl->wait, id, sleep_cancel);
    ev_timer_init(&sl->ev, sleep_timer_cb, seconds > 0 ? seconds : 0, 0.);
    ev_timer_start(ev_default_loop(0), &sl->ev);
    return SL_OK;
}

int sl_lua_exit(sl_request_t *req, const char **body, size_t *len)
{
    lua_State *co = req->task.co;
    *body = lua_tolstring(co, 2, len);
    return (int)lua_tointeger(co, 1);
}

int sl_lua_exit_keep_headers(sl_request_t *req)
{
    lua_State *co = req->task.co;
    if (co == NULL || !lua_istable(co, 3))
        return LUA_NOREF;
    lua_pushvalue(co, 3);
    return luaL_ref(co, LUA_REGISTRYINDEX);
}

void sl_lua_exit_restore_headers(sl_request_t *req, int ref)
{
    lua_State *co = req->task.co;
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
    task_release(&req->task);
}

/* --- timers ----------------------------------------------------------------------- */

/* Timers a worker may have pending at once: a plugin that arms one per request
 * under load must hit a clear error, not exhaust memory. */
#define MAX_TIMERS 4096

typedef struct timer_run_s timer_run_t;

typedef struct lua_timer_s {
    ev_timer ev;
    int id;
    timer_run_t *run; /* a repeating timer's run that has not ended yet */
    int unref;        /* it does not hold the loop (a worker's timers) */
    struct lua_timer_s *next;
} lua_timer_t;

/* One run of a timer's function: a task of its own, so the function may wait
 * for I/O. A repeating timer starts no run while its previous one has not
 * ended: that tick is skipped, not queued (see docs/pdk.md). */
struct timer_run_s {
    sl_lua_task_t task;
    lua_timer_t *timer; /* the repeating timer it belongs to, while it exists */
    sl_queue_t link;    /* in runs */
};

static lua_timer_t *timers; /* pending, for cancel */
static int ntimers;
static sl_queue_t runs = {&runs, &runs};
static int nruns;
static double run_seq;
static void (*idle_hook)(void);

int sl_lua_timer_runs(void)
{
    return nruns;
}

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

static void run_end(timer_run_t *run)
{
    sl_queue_remove(&run->link);
    nruns--;
    if (run->timer != NULL)
        run->timer->run = NULL;
    task_release(&run->task);
    free(run);
    if (nruns == 0 && idle_hook != NULL)
        idle_hook();
}

static void run_wake(sl_lua_task_t *t, int id)
{
    timer_run_t *run = (timer_run_t *)t;
    lua_pushinteger(t->co, id);
    if (task_resume(t, 1) != SL_AGAIN)
        run_end(run);
}

/* Starts a run of timer `id` (its function is kept by lua/sluice/timer.lua):
 * the function runs at once until it ends or waits. */
static void run_start(int id, int repeating, lua_timer_t *timer)
{
    timer_run_t *run = malloc(sizeof(*run));
    if (run == NULL || sl_lua_load_runtime() != SL_OK) {
        sl_log(SL_LOG_ERR, "timer %d not run: out of memory", id);
        free(run);
        return;
    }
    sl_lua_task_init(&run->task, NULL, run_wake);
    run->task.phase = SL_PHASE_TIMER;
    run_seq -= 1;
    run->task.seq = run_seq;
    run->timer = timer;
    sl_queue_insert_tail(&runs, &run->link);
    nruns++;
    if (timer != NULL)
        timer->run = run;
    task_coroutine(&run->task);
    lua_State *co = run->task.co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref_run_timer);
    lua_pushinteger(co, id);
    lua_pushboolean(co, repeating);
    if (task_resume(&run->task, 2) != SL_AGAIN)
        run_end(run);
}

static void timer_cb(struct ev_loop *loop, ev_timer *ev, int revents)
{
    SL_UNUSED(revents);
    lua_timer_t *t = (lua_timer_t *)ev;
    int id = t->id, repeat = ev->repeat > 0;
    if (repeat && t->run != NULL) {
        SL_LOG(SL_LOG_DEBUG, "timer %d: the previous run has not ended; skipping this one", id);
        return;
    }
    if (!repeat) {
        /* libev stopped it before calling us: balance the ev_unref made at start. */
        if (t->unref)
            ev_ref(loop);
        timer_unlink(t);
        free(t);
    }
    run_start(id, repeat, repeat ? t : NULL);
}

SL_EXPORT int sl_ffi_timer_start(double delay, double interval, int id, const char **err)
{
    if (vm == NULL) {
        *err = "timers run in a worker or in sluice test (not in sluice check)";
        return SL_ERROR;
    }
    if (exiting && (delay > 0 || interval > 0)) {
        *err = "process exiting";
        return SL_ERROR;
    }
    if (ntimers >= MAX_TIMERS) {
        *err = "too many pending timers";
        return SL_ERROR;
    }
    if (sl_lua_load_runtime() != SL_OK) {
        *err = "cannot load sluice.timer";
        return SL_ERROR;
    }
    lua_timer_t *t = malloc(sizeof(*t));
    if (t == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    struct ev_loop *loop = ev_default_loop(0);
    if (test_mode && sl_ffi_current.task == NULL)
        ev_now_update(loop); /* a spec's own code: the loop's clock stood still */
    ev_timer_init(&t->ev, timer_cb, delay < 0 ? 0 : delay, interval > 0 ? interval : 0);
    t->id = id;
    t->run = NULL;
    t->next = timers;
    timers = t;
    ntimers++;
    ev_timer_start(loop, &t->ev);
    /* Pending timers do not keep a stopping worker alive; in sluice test
     * they are what a spec blocked in sluice.loop waits for. */
    t->unref = !test_mode;
    if (t->unref)
        ev_unref(loop);
    return SL_OK;
}

static void timer_free(struct ev_loop *loop, lua_timer_t *t)
{
    if (t->unref)
        ev_ref(loop);
    ev_timer_stop(loop, &t->ev);
    if (t->run != NULL)
        t->run->timer = NULL;
    timer_unlink(t);
    free(t);
}

SL_EXPORT int sl_ffi_timer_cancel(int id)
{
    for (lua_timer_t *t = timers; t != NULL; t = t->next) {
        if (t->id == id) {
            /* A run in progress finishes; no other starts. */
            timer_free(ev_default_loop(0), t);
            return SL_OK;
        }
    }
    return SL_DECLINED;
}

void sl_lua_shutdown(void (*hook)(void))
{
    if (exiting)
        return;
    exiting = 1;
    idle_hook = hook;
    /* As OpenResty does on exit: every pending timer runs once now, so a
     * timer that ships buffered logs gets its last chance. Each run starts
     * from a copy of the list, as runs may arm (zero-delay) or cancel timers. */
    struct ev_loop *loop = ev_default_loop(0);
    while (timers != NULL) {
        lua_timer_t *t = timers;
        int id = t->id, busy = t->run != NULL;
        timer_free(loop, t);
        if (!busy)
            run_start(id, 0, NULL);
        else
            SL_LOG(SL_LOG_DEBUG, "timer %d: still running at exit, not run again", id);
    }
}

/* --- sluice test: the loop a spec blocks in ------------------------------------ */

/* In `sluice test` a spec's own code runs on the main Lua state, outside any
 * task: it cannot yield to a loop. A PDK call that waits, made there, starts
 * its operation on the main task and then blocks in sluice.loop.wait, which
 * runs the loop until that operation completes; timers, in-process requests
 * and other I/O progress meanwhile. Waits of the main task complete in any
 * order, so their ids are collected here until their waiter asks. */
#define MAIN_DONE_MAX 64

static sl_lua_task_t main_task;
static int main_done[MAIN_DONE_MAX];
static int nmain_done;

static void main_wake(sl_lua_task_t *t, int id)
{
    SL_UNUSED(t);
    if (nmain_done < MAIN_DONE_MAX)
        main_done[nmain_done++] = id;
}

static int main_take(int id)
{
    for (int i = 0; i < nmain_done; i++) {
        if (main_done[i] == id) {
            main_done[i] = main_done[--nmain_done];
            return 1;
        }
    }
    return 0;
}

SL_EXPORT sl_lua_task_t *sl_ffi_main_task(void)
{
    if (!test_mode || sl_ffi_current.task != NULL)
        return NULL;
    /* The loop's clock stood still while the spec ran: timeouts and sleeps
     * about to start count from now. */
    ev_now_update(ev_default_loop(0));
    return &main_task;
}

/* DNS for sluice.http in specs: the system's resolvers and hosts file, with
 * the defaults of server.dns_* (docs/configuration.md). */
static sl_server_conf_t test_server = {
    .dns_stale_ttl = 4000,
    .dns_not_found_ttl = 30000,
    .dns_error_ttl = 1000,
};

int sl_lua_test_init(lua_State *L)
{
    const char *err;
    if (ev_default_loop(0) == NULL)
        return SL_ERROR;
    if (sl_resolver_init(ev_default_loop(0), &test_server, &err) != SL_OK)
        fprintf(stderr, "sluice test: no DNS resolver (%s): sluice.http takes IPs only\n", err);
    vm = L;
    test_mode = 1;
    sl_lua_task_init(&main_task, NULL, main_wake);
    main_task.phase = SL_PHASE_TIMER;
    return SL_OK;
}

void sl_lua_test_close(void)
{
    struct ev_loop *loop = ev_default_loop(0);
    waits_cancel(&main_task);
    while (timers != NULL)
        timer_free(loop, timers);
    while (!sl_queue_empty(&runs)) {
        timer_run_t *run = sl_queue_data(runs.next, timer_run_t, link);
        run_end(run);
    }
    while (free_sleeps != NULL) {
        lua_sleep_t *sl = free_sleeps;
        free_sleeps = sl->next_free;
        free(sl);
    }
    nfree_sleeps = 0;
    sl_resolver_close();
    test_mode = 0;
    vm = NULL;
}

int sl_lua_test_check(lua_State *L, const char *fname)
{
    if (!test_mode)
        return luaL_error(L, "%s: the event loop runs in sluice test only", fname);
    if (sl_ffi_current.task != NULL)
        return luaL_error(L, "%s cannot be called from a timer or a plugin: it blocks the loop",
                          fname);
    return 0;
}

int sl_lua_test_step(lua_State *L, const char *fname, int busy)
{
    sl_lua_test_check(L, fname);
    /* Idle pooled connections keep watchers too: they are no reason to wait. */
    if (!busy)
        return luaL_error(L, "%s: nothing left to wait for", fname);
    ev_run(ev_default_loop(0), EVRUN_ONCE);
    return 0;
}

/* sluice.loop.wait(id): blocks until wait `id` of the main task completed. */
static int loop_wait(lua_State *L)
{
    int id = (int)luaL_checkinteger(L, 1);
    while (!main_take(id))
        sl_lua_test_step(L, "sluice.loop.wait", !sl_queue_empty(&main_task.waits));
    return 0;
}

/* sluice.loop.step(): one loop iteration, for a spec waiting on timers and
 * threads; raises when none is pending. */
static int loop_step(lua_State *L)
{
    sl_lua_test_step(L, "sluice.loop.step",
                     nruns > 0 || ntimers > 0 || !sl_queue_empty(&main_task.waits));
    return 0;
}

/* sluice.loop.spawn(id): runs the function of timer id (kept by
 * lua/sluice/timer.lua) now, as a task of its own, until it ends or waits. */
static int loop_spawn(lua_State *L)
{
    int id = (int)luaL_checkinteger(L, 1);
    if (vm == NULL)
        return luaL_error(L, "sluice.loop.spawn: no runtime");
    run_start(id, 0, NULL);
    return 0;
}

/* sluice.loop.timer_runs(): timer runs that have not ended. */
static int loop_timer_runs(lua_State *L)
{
    lua_pushinteger(L, nruns);
    return 1;
}

int luaopen_sluice_loop(lua_State *L)
{
    static const luaL_Reg fns[] = {{"wait", loop_wait},
                                   {"step", loop_step},
                                   {"spawn", loop_spawn},
                                   {"timer_runs", loop_timer_runs},
                                   {NULL, NULL}};
    lua_createtable(L, 0, 4);
    luaL_register(L, NULL, fns);
    return 1;
}
