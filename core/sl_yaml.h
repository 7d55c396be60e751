/* sl_yaml.h: YAML documents (libyaml) loaded into Lua tables, with the line of every key. */
#ifndef SL_YAML_H
#define SL_YAML_H

#include <lua.h>
#include <stddef.h>

/* Files larger than this are refused before they are read. */
#define SL_YAML_MAX_FILE (64 * 1024 * 1024)

/* Collections nested deeper than this are refused. */
#define SL_YAML_MAX_DEPTH 64

/* Loads the single document in the file at path and pushes two values on L:
 * the document and its line table, or nil and "FILE:LINE:COL: message".
 *
 * Mappings become tables with string keys, sequences 1-based arrays. Plain
 * scalars resolve by the YAML 1.2 core schema (null, booleans, decimal, 0x and
 * 0o integers, floats with .inf and .nan); quoted and block scalars are always
 * strings. A null is the light userdata `require("sluice.yaml").null`, never
 * nil, so that `key: ~` differs from an absent key. Anchors, aliases and merge
 * keys (<<) are resolved; an alias yields the same Lua table as its anchor.
 *
 * The line table is weak-keyed and maps every table of the document to a
 * table {[key] = line of the key or item, ["@"] = line where the table starts},
 * all 1-based. Returns SL_OK when a document was pushed, SL_ERROR otherwise.
 * Raises no Lua error (out of memory is reported as a message). */
int sl_yaml_load_file(lua_State *L, const char *path);

/* Like sl_yaml_load_file for the len bytes at s; name is used in messages. */
int sl_yaml_load_string(lua_State *L, const char *s, size_t len, const char *name);

/* The Lua module "sluice.yaml": load_file(path), load_string(s [, name]), each
 * returning doc, lines or nil, err; and the `null` sentinel. sl_lua_new
 * registers it in package.preload. */
int luaopen_sluice_yaml(lua_State *L);

#endif
