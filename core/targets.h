/* targets.h: target names re-resolved by the master, their addresses shared with every worker.
 *
 * A target (or a service host) that is a name owns SL_DNS_SLOTS slots of its
 * upstream's targets (config.h). The master looks every name up again when
 * its answer's TTL runs out, without blocking (c-ares polled next to its
 * signals), fits the new addresses into the name's slots (an address that
 * stays keeps its slot, so its health and pooled connections stay too) and
 * publishes them in a shared table, one record per name with a version
 * number. Workers compare each record's version with the one they adopted
 * (one relaxed atomic load) and rebuild that upstream's peers when it moved
 * (upstream.c: sl_upstreams_refresh). */
#ifndef SL_TARGETS_H
#define SL_TARGETS_H

#include <stdint.h>

#include "config.h"

struct pollfd;

/* One address of a name, without the port (the target's). family 0: none. */
typedef struct {
    uint16_t family; /* AF_INET, AF_INET6 or 0 */
    uint32_t scope;  /* sin6_scope_id */
    uint8_t addr[16];
} sl_taddr_t;

/* Converts between the two forms; port is in host order. sl_taddr_from
 * returns 0 for a family other than AF_INET and AF_INET6. */
int sl_taddr_from(sl_taddr_t *a, const struct sockaddr_storage *ss);
void sl_taddr_to(const sl_taddr_t *a, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

/* Fits the addresses fresh[0..n) (distinct) into slots[0..nslots): an
 * address already in a slot keeps it; a slot whose address is not in fresh
 * is emptied and vacated[slot] set to stamp; each new address takes the
 * empty slot that was emptied longest ago (vacated 0: never used), so that
 * a slot a worker may still use for the old address is reused last.
 * Addresses that find no empty slot are left out and counted in *dropped.
 * Sets changed[slot] for every slot whose address changed and returns how
 * many did. Pure: no I/O, no shared memory. nslots <= SL_DNS_SLOTS. */
size_t sl_targets_reconcile(sl_taddr_t *slots, uint64_t *vacated, size_t nslots,
                            const sl_taddr_t *fresh, size_t n, uint64_t stamp, uint8_t *changed,
                            size_t *dropped);

/* --- the master ------------------------------------------------------------ */

/* Maps the shared table for every name of cf's upstreams (setting each slot's
 * dns_name), publishes the addresses resolved at load, opens the master's
 * DNS channel and schedules the first lookup of each name at once (to learn
 * its TTL). Called by the master before forking, after sl_health_create.
 * Returns SL_OK, or SL_ERROR (logged). A config without names maps nothing. */
int sl_targets_create(sl_config_t *cf);

/* Closes the channel and unmaps the table (master exit, tests). */
void sl_targets_destroy(void);

/* In a newly forked worker: closes the master's DNS sockets (the table stays
 * mapped: the worker reads it). */
void sl_targets_forked(void);

/* Starts the lookups that are due, fills fds (up to max) with the DNS
 * sockets to poll and lowers *wait (seconds) to when the next lookup or
 * c-ares timeout is due. Returns how many fds it filled. */
int sl_targets_poll(struct pollfd *fds, int max, double *wait);

/* Handles what poll(2) reported for the fds sl_targets_poll filled; lookups
 * that end publish their answers. */
void sl_targets_process(const struct pollfd *fds, int n);

/* Publishes fresh[0..n) as the addresses of name k (sl_target_t.dns_name):
 * reconciles them with its slots, marks the slots that changed present or
 * absent in the health state (sl_health_set_present), writes the record and
 * logs the change. n must be at least 1: an empty answer never replaces
 * addresses. Returns how many slots changed. Master only (and tests). */
size_t sl_targets_publish(uint32_t k, const sl_taddr_t *fresh, size_t n);

/* --- the workers ----------------------------------------------------------- */

/* Reads name k's record into out[0..SL_DNS_SLOTS) when its version differs
 * from *seen, and sets *seen. Returns 1 when out was filled, 0 when nothing
 * changed (or the master is writing it right now: the next call gets it, or
 * there is no table). The common case costs one relaxed atomic load. */
int sl_targets_read(uint32_t k, uint32_t *seen, sl_taddr_t *out);

/* Returns 1 and target i of u's current address (the shared table's for a
 * name's slot), or 0 when the slot has no address now. */
int sl_targets_addr(const sl_upstream_t *u, size_t i, struct sockaddr_storage *ss, socklen_t *len);

#endif
