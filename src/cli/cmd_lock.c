/*
 * cmd_lock.c - `gpuq lock CLASS -- CMD...`: wait for a GPU lock, run CMD
 * while heartbeating it, release it however CMD ends, and exit with CMD's
 * status.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "grant.h"
#include "run.h"
#include "sig.h"


/* The first stop signal pending in the self-pipe, else SIGINT. */
static int
stop_signal(void)
{
    int signo, from_kernel;

    while (gq_sig_read(&signo, &from_kernel))
        if (signo != SIGCHLD)
            return signo;
    return SIGINT;
}

/* POST /v1/locks until granted; returns an exit code. */
static int
acquire(struct gq_cli *c, const char *cls, const char *holder, long wait_s,
        const char *fields, struct gq_grant *g, char *job_id, size_t len)
{
    struct gpuq_response r;
    json_t *reply = NULL;
    int rc, err, code;

    gpuq_client_set_abort(c->client, gq_sig_abort, NULL);
    rc = gpuq_client_lock(c->client, cls, holder, wait_s, fields, &r);
    gpuq_client_set_abort(c->client, NULL, NULL);
    err = gq_cli_reply(rc, &r, &reply);
    if (err != 0 && gq_sig_stop) {
        /* The server cancels a lock waiter that disconnects. */
        code = 128 + stop_signal();
    } else if (err == 0 && r.status == 200) {
        code = gq_grant_init(g, c, "locks", reply, "lock_id") == 0
                   ? GQ_EXIT_OK
                   : GQ_EXIT_HTTP;
        snprintf(job_id, len, "%s",
                 gq_cli_str(reply, "job_id") ? gq_cli_str(reply, "job_id")
                                             : "");
    } else if (err == 0 && r.status == 408) {
        gq_cli_errf("timed out waiting for the lock");
        code = GQ_EXIT_TIMEOUT;
    } else {
        code = gq_cli_report(c, err, &r);
    }
    json_decref(reply);
    gpuq_response_free(&r);
    return code;
}

/* Runs CMD under the lock; returns the exit code. */
static int
hold(struct gq_cli *c, struct gq_grant *g, const char *job_id, char **cmd)
{
    char e_id[GQ_GRANT_ID_MAX + 16], e_tok[64], e_job[GQ_GRANT_ID_MAX + 16];
    char e_url[GPUQ_URL_MAX + 16];
    char *add[4] = {e_id, e_tok, e_job, e_url};
    struct gq_run run;
    json_t *reply = NULL;
    char **env;
    int code;

    snprintf(e_id, sizeof(e_id), "GPUQ_LOCK_ID=%s", g->raw_id);
    snprintf(e_tok, sizeof(e_tok), "GPUQ_LOCK_TOKEN=%lld", g->token);
    snprintf(e_job, sizeof(e_job), "GPUQ_JOB_ID=%s", job_id);
    snprintf(e_url, sizeof(e_url), "GPUQ_URL=%s", c->url);
    env = gq_run_env(add, 4);
    if (!env) {
        gq_cli_errf("out of memory");
        code = GQ_EXIT_HTTP;
        goto release;
    }
    memset(&run, 0, sizeof(run));
    run.argv = cmd;
    run.envp = env;
    run.forward = 1;
    run.hb_ms = gq_grant_hb_ms(g);
    run.lease_ms = g->ttl_ms;
    run.heartbeat = gq_grant_heartbeat;
    run.ud = g;
    if (gq_run_child(&run) < 0) {
        gq_cli_errf("cannot run %s: %s", cmd[0], strerror(errno));
        free(env);
        code = GQ_EXIT_HTTP;
        goto release;
    }
    free(env);
    gq_run_free(&run);
    if (run.lost) {
        gq_cli_errf("lock %s lost; %s was stopped", g->raw_id, cmd[0]);
        return GQ_EXIT_LOST;
    }
    code = gq_run_exit_code(run.status);
release:
    switch (gq_grant_post(g, "release", NULL, &reply)) {
    case GQ_EXIT_OK:
        break;
    case GQ_EXIT_LOST:
        gq_cli_errf("lock %s was lost before it was released", g->raw_id);
        break;
    default: /* said why; the lock ends when its ttl runs out */
        gq_cli_errf("lock %s not released; it expires in %.1fs", g->raw_id,
                    (double)g->ttl_ms / 1000.0);
    }
    json_decref(reply);
    return code;
}

int
gq_cmd_lock(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"holder", required_argument, 0, 'H'},
        {"wait", required_argument, 0, 'w'},
        {"meta", required_argument, 0, 'm'},
        {"priority", required_argument, 0, 'P'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    json_t *body = json_object(), *meta = json_object();
    struct gq_grant g;
    char holder[512], job_id[GQ_GRANT_ID_MAX], *fields = NULL;
    long wait_s = -1, n; /* -1: the server's default */
    int ch, code = GQ_EXIT_OK;

    if (!body || !meta) {
        gq_cli_errf("out of memory");
        code = GQ_EXIT_HTTP;
        goto out;
    }
    gq_grant_default_holder(holder, sizeof(holder));
    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'H':
            snprintf(holder, sizeof(holder), "%s", optarg);
            break;
        case 'w':
            if (gq_cli_parse_long(optarg, 0, 3600, &n) < 0) {
                code = gq_cli_usage(c, "--wait wants seconds, 0..3600");
                goto out;
            }
            wait_s = n;
            break;
        case 'm':
            if (gq_cli_meta_add(meta, optarg) < 0) {
                code = gq_cli_usage(c, "--meta wants KEY=VALUE (UTF-8), "
                                       "not '%s'", optarg);
                goto out;
            }
            break;
        case 'P':
            if (gq_cli_parse_long(optarg, -1000000, 1000000, &n) < 0) {
                code = gq_cli_usage(c, "--priority wants an integer");
                goto out;
            }
            json_object_set_new(body, "priority", json_integer(n));
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                goto out;
            code = GQ_EXIT_OK;
        }
    }
    if (optind + 2 > argc) {
        code = gq_cli_usage(c, optind >= argc ? "missing the CLASS"
                                              : "missing the CMD to run");
        goto out;
    }
    if (!gq_cli_utf8(argv[optind]) || !gq_cli_utf8(holder) ||
        (json_object_size(meta) > 0 &&
         json_object_set(body, "metadata", meta) != 0)) {
        code = gq_cli_usage(c, "CLASS and --holder must be UTF-8");
        goto out;
    }
    /* body holds the members gpuq_client_lock has no argument for. */
    fields = json_dumps(body, JSON_COMPACT);
    if (!fields) {
        gq_cli_errf("out of memory");
        code = GQ_EXIT_HTTP;
        goto out;
    }
    if (gq_sig_install() < 0) {
        gq_cli_errf("cannot set up signals: %s", strerror(errno));
        code = GQ_EXIT_HTTP;
        goto out;
    }
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        goto out;
    code = acquire(c, argv[optind], holder, wait_s, fields, &g, job_id,
                   sizeof(job_id));
    if (code == GQ_EXIT_OK)
        code = hold(c, &g, job_id, argv + optind + 1);
out:
    json_decref(body);
    json_decref(meta);
    free(fields);
    return code;
}
