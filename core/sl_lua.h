/* lua.h: LuaJIT VM setup shared by the master (config), workers (plugins) and `sluice test`. */
#ifndef SL_SL_LUA_H
#define SL_SL_LUA_H

#include <lua.h>

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

#endif
