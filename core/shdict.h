/* shdict.h: shared dicts: key-value stores in shared memory, created by the master, used by all
 * workers. */
#ifndef SL_SHDICT_H
#define SL_SHDICT_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

typedef struct sl_shdict_s sl_shdict_t;

/* A dict's size (bytes of shared memory, header and index included) must lie
 * between these. The upper bound keeps every offset inside the region in 32
 * bits of 16-byte units. */
#define SL_SHDICT_MIN_SIZE ((size_t)32 * 1024)
#define SL_SHDICT_MAX_SIZE ((size_t)32 * 1024 * 1024 * 1024)

/* Maps a new, empty dict of `size` bytes (rounded up to whole pages) named
 * `name` (copied). The memory is MAP_SHARED and anonymous, so the master calls
 * this before forking and every worker inherits the dict at the same address.
 * Returns NULL, logged, when the size is out of range or mapping fails. The
 * dict is not registered: see sl_shdict_register. */
sl_shdict_t *sl_shdict_create(const char *name, size_t size);

/* Unregisters d if it is registered and unmaps it. Processes that inherited
 * the mapping keep theirs; only the master destroys dicts. */
void sl_shdict_destroy(sl_shdict_t *d);

/* Adds d to this process's registry, where sl_shdict_find (and Lua's
 * `sluice.shared.NAME`) looks dicts up. Returns SL_OK, or SL_DECLINED when a
 * dict with the same name is already registered (nothing is logged). The
 * registry is plain process memory: register before forking. */
int sl_shdict_register(sl_shdict_t *d);

/* Returns the registered dict named name[0..len), or NULL. */
sl_shdict_t *sl_shdict_find(const char *name, size_t len);

/* Destroys every registered dict (the master, at exit). */
void sl_shdict_destroy_all(void);

const char *sl_shdict_name(const sl_shdict_t *d);

/* Checks every invariant of d's shared memory (heap chain, free lists, hash
 * chains, LRU list, counters) under its lock. Returns SL_OK, or SL_ERROR with
 * *why naming the first broken one. Costs a walk of the whole region: for
 * tests and debugging. */
int sl_shdict_check(sl_shdict_t *d, const char **why);

/* Test hooks; nothing else calls them. */

/* Replaces the monotonic millisecond clock expiry uses (NULL restores it). */
void sl_shdict_test_clock(int64_t (*now_ms)(void));

/* Makes this process SIGKILL itself at the n-th crash point it reaches from
 * now on (0 disarms). Crash points sit between the steps of every change to a
 * dict, all inside its lock, so tests can check recovery from a death at each. */
void sl_shdict_test_crash_after(int n);

/* Takes d's lock the way a writer does (marking the dict as being changed) and
 * keeps it until sl_shdict_test_unlock. Returns SL_OK or SL_ERROR. */
int sl_shdict_test_lock(sl_shdict_t *d);
void sl_shdict_test_unlock(sl_shdict_t *d);

#endif
