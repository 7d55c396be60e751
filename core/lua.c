/* lua.c: LuaJIT VM creation, module paths and protected calls with tracebacks. */
#include "sl_lua.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "sluice.h"
#include "sl_yaml.h"

/* Debian installs pure-Lua modules and C modules for Lua 5.1 here; LuaJIT
 * loads both (busted, luassert, penlight, cjson, socket). */
#define DEBIAN_LUA_PATH  "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
#define DEBIAN_LUA_CPATH "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;/usr/lib/lua/5.1/?.so"

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
