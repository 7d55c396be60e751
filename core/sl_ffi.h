/* sl_ffi.h: every C function the Lua PDK calls through LuaJIT's FFI, in one place.
 *
 * Rules for everything declared here (a test compares this file with the Lua
 * ffi.cdef in lua/sluice/ffi.lua, so the two can never drift apart):
 * - names are sl_ffi_<area>_<verb> and carry SL_EXPORT so ffi.C can see them;
 * - they return int (SL_OK or a negative SL_* code) and report failures
 *   through `const char **err`, pointing at a static string;
 * - they never allocate for the caller and never longjmp;
 * - only plain C types cross the boundary (no libev, no Lua types).
 * Each area keeps its declarations between its own BEGIN/END markers. */
#ifndef SL_FFI_H
#define SL_FFI_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* BEGIN shdict */
/* END shdict */

#endif
