/* sl_lua.h: LuaJIT VM setup shared by the master (config), workers (plugins) and `sluice test`. */
#ifndef SL_SL_LUA_H
#define SL_SL_LUA_H

#include <lua.h>

#include "sluice.h"

/* Returns a new VM with the standard libraries open and package.path/cpath set
 * to sluice's lua/ directory first, then Debian's Lua 5.1 module directories.
 * Returns NULL when out of memory. */
lua_State *sl_lua_new(void);

/* The directory holding sluice's Lua sources (SLUICE_LUA_DIR overrides). */
const char *sl_lua_dir(void);

/* Calls the function on top of the stack with nargs arguments below it,
 * adding a traceback to errors. Returns SL_OK, or SL_ERROR with the message
 * (traceback included) left on the stack. */
int sl_lua_pcall(lua_State *L, int nargs, int nresults);

/* Runs busted inside this VM on the given arguments (spec paths and busted
 * options), the way `sluice test` does. Returns the process exit code. */
int sl_lua_run_busted(int argc, char **argv);

/* The directory holding the bundled plugins (SLUICE_PLUGINS_DIR overrides). */
const char *sl_lua_plugins_dir(void);

typedef struct sl_request_s sl_request_t;
typedef struct sl_lua_task_s sl_lua_task_t;
typedef struct sl_wait_s sl_wait_t;

/* Who a Lua wait wakes: a coroutine running plugin code outside the main
 * state. A proxied request's phases are one kind (embedded in sl_request_t,
 * so it costs no allocation), a timer run another, an in-process test request
 * (core/inproc.c) a third. Operations that wait (a sleep, an HTTP call, a
 * Redis command) put an sl_wait_t on the task's list and call wake(task, id)
 * when done; the owner of the task resumes its coroutine with that id. */
struct sl_lua_task_s {
    struct lua_State *co; /* the coroutine, while the task runs Lua */
    int co_ref;
    int phase;         /* SL_PHASE_* running or last run */
    double seq;        /* the key of its Lua context (requests > 0, timer runs < 0) */
    int has_ctx;       /* Lua made that context: drop it when the task ends */
    sl_queue_t waits;  /* pending sl_wait_t, cancelled when the task ends */
    sl_request_t *req; /* the request whose phases it runs; NULL for a timer run */
    void (*wake)(sl_lua_task_t *t, int id);
};

/* Makes t an idle task of req (NULL: not a request) woken through wake. */
void sl_lua_task_init(sl_lua_task_t *t, sl_request_t *req, void (*wake)(sl_lua_task_t *, int));

/* Something a task's Lua code waits for (a sleep, an HTTP call). Kept in
 * t->waits so that a task that ends cancels what it still waits for. */
struct sl_wait_s {
    sl_queue_t link;
    sl_lua_task_t *task;
    int id;
    void (*cancel)(sl_wait_t *w); /* stops and frees the wait */
};

/* Registers w as wait `id` of t. */
void sl_lua_wait_add(sl_lua_task_t *t, sl_wait_t *w, int id, void (*cancel)(sl_wait_t *));

/* Takes w off its task's list; the owner then wakes the task. */
void sl_lua_wait_done(sl_wait_t *w);

/* Tells w's task that wait `id` completed. */
static inline void sl_lua_wake(sl_lua_task_t *t, int id)
{
    t->wake(t, id);
}

/* Finds wait `id` of t that was registered with cancel (the kind of wait);
 * NULL when there is none. O(waits of the task): a handful. */
sl_wait_t *sl_lua_wait_find(sl_lua_task_t *t, int id, void (*cancel)(sl_wait_t *));

/* Starts a timer wait for t: after seconds, wake(t, id). Returns SL_OK or
 * SL_ERROR (out of memory). */
int sl_lua_wait_timer(sl_lua_task_t *t, double seconds, int id);

/* --- the runtime ----------------------------------------------------------------- */

/* Makes L (the config VM the master built, inherited across fork) this
 * worker's VM and runs every plugin's init_worker. Returns SL_OK, or SL_ERROR
 * when the runtime cannot start (logged). */
int sl_lua_worker_init(lua_State *L, int worker_id, int nworkers);

/* Loads the Lua functions C calls (runner.run_phase and finish, timer.run)
 * once. Workers do it in sl_lua_worker_init; `sluice test` when a spec first
 * needs them. Returns SL_OK or SL_ERROR (logged). */
int sl_lua_load_runtime(void);

/* The worker is stopping: sluice.worker.exiting() turns true, every pending
 * timer runs once at once (repeating ones stop after it), and hook is called
 * each time the last timer run ends, so the worker can exit when nothing
 * else holds it. */
void sl_lua_shutdown(void (*hook)(void));

/* Timer runs that have started and not ended (some wait for I/O). */
int sl_lua_timer_runs(void);

/* Runs the plugins of `phase` for req in its coroutine (created on first
 * use). Returns SL_OK when they finished, SL_AGAIN when the coroutine yielded
 * (C resumes it with sl_lua_resume once the I/O is done), SL_DONE when a
 * plugin answered the request itself (sl_lua_exit reads the answer) or
 * SL_ERROR when the runtime failed (logged). */
int sl_lua_phase(sl_request_t *req, int phase);

/* As sl_lua_phase, with the runner's chain set given (a route's
 * sl_route_t.chain; 0 and SL_PHASE_REWRITE: the global rewrite plugins). */
int sl_lua_phase_chain(sl_request_t *req, int phase, int chain);

/* Resumes req's yielded coroutine with the id of the wait that completed;
 * returns as sl_lua_phase. */
int sl_lua_resume(sl_request_t *req, int id);

/* After SL_DONE: returns the status and the body (NULL when none); the
 * headers table stays on req's coroutine at index 3 (nil when none) until the
 * next phase or the release. */
int sl_lua_exit(sl_request_t *req, const char **body, size_t *len);

/* Moves an exit's headers table out of the coroutine (a registry reference)
 * so another phase can run, and puts it back at index 3. */
int sl_lua_exit_keep_headers(sl_request_t *req);
void sl_lua_exit_restore_headers(sl_request_t *req, int ref);

/* Drops req's Lua context and gives its coroutine back to the pool. */
void sl_lua_release(sl_request_t *req);

/* `sluice test` only: the runtime on L without a worker (timers, waits and
 * in-process requests on the default libev loop; specs block in it through
 * the sluice.loop module), and its end, before L is closed. */
int sl_lua_test_init(lua_State *L);
void sl_lua_test_close(void);

/* Raises a Lua error naming fname unless a spec's own code may block in the
 * loop here: in `sluice test`, outside any task. Returns 0. */
int sl_lua_test_check(lua_State *L, const char *fname);

/* `sluice test` only: runs one iteration of the loop for a spec blocked in
 * fname (busy: the caller still waits for something of its own). Raises a Lua
 * error when called from inside a task, outside `sluice test`, or when not
 * busy (it would block for nothing). */
int sl_lua_test_step(lua_State *L, const char *fname, int busy);

/* The Lua module sluice.loop (preloaded in every VM; usable in `sluice test`). */
int luaopen_sluice_loop(lua_State *L);

#endif
