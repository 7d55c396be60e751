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

/* Makes L (the config VM the master built, inherited across fork) this
 * worker's VM and runs every plugin's init_worker. Returns SL_OK, or SL_ERROR
 * when the runtime cannot start (logged). */
int sl_lua_worker_init(lua_State *L, int worker_id, int nworkers);

/* Runs the plugins of `phase` for req in its coroutine (created on first
 * use). Returns SL_OK when they finished, SL_AGAIN when the coroutine yielded
 * (C resumes it with sl_lua_resume once the I/O is done), SL_DONE when a
 * plugin answered the request itself (sl_lua_exit reads the answer) or
 * SL_ERROR when the runtime failed (logged). */
int sl_lua_phase(sl_request_t *req, int phase);

/* Resumes req's yielded coroutine with the id of the wait that completed;
 * returns as sl_lua_phase. */
int sl_lua_resume(sl_request_t *req, int id);

/* Something a request's plugins wait for (a sleep, an HTTP call). Kept in
 * req->waits so that a request that ends cancels what it still waits for. */
typedef struct sl_wait_s sl_wait_t;
struct sl_wait_s {
    sl_queue_t link;
    sl_request_t *req;
    int id;
    void (*cancel)(sl_wait_t *w); /* stops and frees the wait */
};

/* Registers w as wait `id` of req. */
void sl_lua_wait_add(sl_request_t *req, sl_wait_t *w, int id, void (*cancel)(sl_wait_t *));

/* Takes w off its request's list; the owner then wakes the request. */
void sl_lua_wait_done(sl_wait_t *w);

/* Starts a timer wait for req: after seconds, sl_proxy_lua_wake(req, id).
 * Returns SL_OK or SL_ERROR (out of memory). */
int sl_lua_wait_timer(sl_request_t *req, double seconds, int id);

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

#endif
