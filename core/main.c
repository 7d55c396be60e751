/* main.c: the command line: start, check, stop, test, version, help. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "sl_lua.h"
#include "master.h"
#include "sluice.h"

#define DEFAULT_CONFIG "conf/sluice.yaml"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice <command> [options]\n"
            "\n"
            "commands:\n"
            "  start [-c FILE] [--daemon]   run the gateway (foreground unless --daemon)\n"
            "  check [-c FILE] [--routes]   validate FILE and print what it defines\n"
            "                               (--routes: each route's plugins, in order)\n"
            "  stop  [-c FILE] [--now]      stop the running gateway named by server.pid_file\n"
            "                               (graceful drain; --now skips the drain)\n"
            "  test  [busted args] [PATH]   run busted specs inside sluice's LuaJIT\n"
            "  version                      print the version\n"
            "  help                         print this text\n"
            "\n"
            "FILE defaults to " DEFAULT_CONFIG ".\n");
}

typedef struct {
    const char *config;
    int daemon;
    int now;
    int routes;
} options_t;

/* Parses the options shared by start, check and stop; returns -1 on a bad one. */
static int parse_options(int argc, char **argv, options_t *o)
{
    o->config = DEFAULT_CONFIG;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            o->config = argv[++i];
        } else if (strcmp(argv[i], "--daemon") == 0 || strcmp(argv[i], "-d") == 0) {
            o->daemon = 1;
        } else if (strcmp(argv[i], "--now") == 0) {
            o->now = 1;
        } else if (strcmp(argv[i], "--routes") == 0) {
            o->routes = 1;
        } else {
            fprintf(stderr, "sluice: unknown option '%s' (see 'sluice help')\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static sl_config_t *load(const char *path)
{
    char *err = NULL;
    sl_config_t *cf = sl_config_load(path, &err);
    if (cf == NULL) {
        fprintf(stderr, "%s", err != NULL ? err : "sluice: could not load the config\n");
        free(err);
    }
    return cf;
}

static int cmd_check(options_t *o)
{
    sl_config_t *cf = load(o->config);
    if (cf == NULL)
        return 1;
    sl_config_summary(cf, stdout, o->routes);
    sl_config_free(cf);
    return 0;
}

static int cmd_stop(options_t *o)
{
    sl_config_t *cf = load(o->config);
    if (cf == NULL)
        return 1;
    int rc = 1;
    FILE *f = fopen(cf->server.pid_file, "r");
    long pid = 0;
    if (f == NULL) {
        fprintf(stderr, "sluice: cannot read pid file %s: %s (is sluice running?)\n",
                cf->server.pid_file, strerror(errno));
        goto done;
    }
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "sluice: pid file %s does not hold a process id\n", cf->server.pid_file);
        fclose(f);
        goto done;
    }
    fclose(f);
    if (kill((pid_t)pid, o->now ? SIGQUIT : SIGTERM) != 0) {
        fprintf(stderr, "sluice: cannot signal process %ld from %s: %s\n", pid, cf->server.pid_file,
                strerror(errno));
        goto done;
    }
    /* Wait for the master to go, up to the drain time and a little more. */
    long waited_ms = 0, limit_ms = cf->server.shutdown_timeout + 5000;
    while (kill((pid_t)pid, 0) == 0 && waited_ms < limit_ms) {
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        waited_ms += 50;
    }
    if (kill((pid_t)pid, 0) == 0) {
        fprintf(stderr, "sluice: process %ld is still running after %ld ms\n", pid, waited_ms);
        goto done;
    }
    rc = 0;
done:
    sl_config_free(cf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    options_t o = {0};

    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0) {
        printf("sluice %s\n", SL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "test") == 0)
        return sl_lua_run_busted(argc - 2, argv + 2);

    if (parse_options(argc - 2, argv + 2, &o) != 0)
        return 2;
    if (strcmp(cmd, "check") == 0)
        return cmd_check(&o);
    if (strcmp(cmd, "stop") == 0)
        return cmd_stop(&o);
    if (strcmp(cmd, "start") == 0) {
        sl_config_t *cf = load(o.config);
        if (cf == NULL)
            return 1;
        return sl_master_run(cf, o.config, o.daemon);
    }
    fprintf(stderr, "sluice: unknown command '%s' (see 'sluice help')\n", cmd);
    return 2;
}
