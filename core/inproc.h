/* inproc.h: in-process requests for `sluice test` (t.plugin), as the Lua module sluice.inproc. */
#ifndef SL_INPROC_H
#define SL_INPROC_H

#include <lua.h>

/* Opens sluice.inproc: new(config, chains) compiles a validated config into a
 * handle; run(handle, ...) runs one request through it. Preloaded in every
 * VM; run works in `sluice test` only. See core/inproc.c. */
int luaopen_sluice_inproc(lua_State *L);

#endif
