/* config.c: libFuzzer target for the YAML loader and the config validator. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "sl_lua.h"
#include "sluice.h"

static lua_State *L;
static int ref_load_string = LUA_NOREF;

static void close_vm(void)
{
    lua_close(L);
}

static void init(void)
{
    L = sl_lua_new();
    if (L == NULL)
        abort();
    /* Closing the VM at exit frees what Lua C modules (cjson) allocated. */
    atexit(close_vm);
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.config");
    if (sl_lua_pcall(L, 1, 1) != SL_OK) {
        fprintf(stderr, "fuzz: cannot load sluice.config: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_getfield(L, -1, "load_string");
    ref_load_string = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);

    /* One load before fuzzing: what the first load allocates for good (the
     * digest context derived ids use, lua-cjson's encode buffer, the bundled
     * plugins) is held from LuaJIT's heap, which LeakSanitizer does not scan,
     * so it would look like a leak of whichever input came first. */
    static const char warm[] = "_format_version: \"3.0\"\n"
                               "services:\n"
                               "- name: s\n"
                               "  url: http://127.0.0.1:1\n"
                               "  routes:\n"
                               "  - paths: [\"/\"]\n"
                               "    plugins:\n"
                               "    - name: request-termination\n"
                               "    - name: pre-function\n"
                               "      config: { access: [\"return\"] }\n"
                               "    - name: circuit-breaker\n"
                               "consumers:\n"
                               "- username: u\n";
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_load_string);
    lua_pushlstring(L, warm, sizeof(warm) - 1);
    lua_pushstring(L, "warm.yaml");
    if (sl_lua_pcall(L, 2, 2) != SL_OK)
        abort();
    lua_settop(L, 0);
}

/* Whatever the bytes, load_string must return a config or nil and a message:
 * a Lua error escaping it is a bug (it would crash `sluice check`). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs;
    if (L == NULL)
        init();
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_load_string);
    lua_pushlstring(L, (const char *)data, size);
    lua_pushstring(L, "fuzz.yaml");
    if (sl_lua_pcall(L, 2, 2) != SL_OK) {
        fprintf(stderr, "config validation raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_isnil(L, -2) && !lua_isstring(L, -1)) {
        fprintf(stderr, "config validation failed without a message\n");
        abort();
    }
    lua_settop(L, 0);
    if (++runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
