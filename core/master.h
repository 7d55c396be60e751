/* master.h: the master process: workers, signals, shutdown. */
#ifndef SL_MASTER_H
#define SL_MASTER_H

#include "config.h"

/* Binds the listeners, forks cf->server.workers workers and supervises them
 * until SIGTERM/SIGINT (graceful: workers drain for shutdown_timeout) or
 * SIGQUIT (immediate). Writes and removes the pid file. With daemonize, the
 * process detaches first. Takes ownership of cf. Returns the exit code. */
int sl_master_run(sl_config_t *cf, const char *conf_path, int daemonize);

#endif
