/*
 * main.c - gpuqd's command line: read the configuration, apply the flags
 * over it, check the whole (which refuses a listen address beyond
 * loopback without API tokens), run the daemon.  Only main decides to
 * exit.
 *
 *   gpuqd [--config FILE] [--data DIR] [--listen HOST:PORT] [--debug]
 *   gpuqd --check-config FILE
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <systemd/sd-daemon.h>

#include "../core/err.h"
#include "config.h"
#include "daemon.h"
#include "log.h"

/*
 * Each connection takes a file descriptor, and the usual soft limit
 * (1024) is far below what the host allows: raise it to the hard limit.
 * Running out anyway only pauses accepting (http.c, gq_http_guard_listener).
 */
static void
raise_nofile(void)
{
    struct rlimit rl;
    rlim_t want;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    want = rl.rlim_max;
    if (want == RLIM_INFINITY || want > (rlim_t)1 << 20)
        want = (rlim_t)1 << 20;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return;
        gq_log(GQ_LOG_DEBUG, "open files: soft limit %llu -> %llu",
               (unsigned long long)old, (unsigned long long)want);
    }
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: gpuqd [--config FILE] [--data DIR] [--listen HOST:PORT]"
            " [--debug]\n"
            "             [--fault-injection]   (tests only)\n"
            "       gpuqd --check-config FILE\n"
            "       gpuqd --version\n"
            "Flags override the file; with no file the built-in defaults "
            "apply\n(see doc/config.md).  A --listen address beyond "
            "loopback needs API tokens\n([token NAME] sections) or "
            "[server] allow_remote = true.\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"check-config", required_argument, NULL, 'C'},
        {"debug", no_argument, NULL, 'v'},
        {"fault-injection", no_argument, NULL, 'F'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *data = NULL, *listen = NULL, *check = NULL;
    static struct gq_config cfg;
    static struct gq_daemon d;
    static char err[8192];
    int ch, rc, faults = 0;

    while ((ch = getopt_long(argc, argv, "c:d:l:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'd': data = optarg; break;
        case 'l': listen = optarg; break;
        case 'C': check = optarg; break;
        case 'v': gq_log_level = GQ_LOG_DEBUG; break;
        case 'F': faults = 1; break;
        case 'V': printf("gpuqd %s\n", GQ_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (check) {
        rc = gq_config_load(&cfg, check, err, sizeof err);
        if (rc == 0)
            rc = gq_config_check(&cfg, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "%s%s", err,
                    err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
            return 1;
        }
        if (cfg.ntokens > 0)
            printf("%s: ok (%d classes, %d slots, %d API tokens)\n", check,
                   cfg.nclasses, cfg.slots, cfg.ntokens);
        else
            printf("%s: ok (%d classes, %d slots)\n", check, cfg.nclasses,
                   cfg.slots);
        return 0;
    }
    if (config) {
        rc = gq_config_load(&cfg, config, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "%s%s", err,
                    err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
            return 1;
        }
    } else {
        gq_config_defaults(&cfg);
    }
    if (data)
        snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", data);
    if (listen)
        snprintf(cfg.listen, sizeof cfg.listen, "%s", listen);
    if (gq_config_check(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s%s", err,
                err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
        return 1;
    }
    raise_nofile();
    rc = gq_daemon_init(&d, &cfg, err, sizeof err);
    if (rc < 0) {
        gq_log(GQ_LOG_ERR, "%s", err);
        gq_daemon_close(&d);
        return 1;
    }
    d.fault_injection = faults;
    /* SIGHUP re-reads the file and applies the same flags over it. */
    gq_daemon_set_source(&d, config, data, listen);
    gq_daemon_notify_ready(&d); /* READY=1, STATUS=, WATCHDOG=1 */
    rc = gq_daemon_run(&d);
    sd_notify(0, "STOPPING=1");
    gq_daemon_close(&d);
    gq_log(GQ_LOG_INFO, "stopped");
    return rc;
}
