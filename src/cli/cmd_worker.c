/*
 * cmd_worker.c - `gpuq worker --class C -- CMD...`: an external executor.
 * It long-polls for leases, runs CMD once per job with the payload on
 * stdin, heartbeats while CMD runs, and reports CMD's outcome:
 *
 *   exit 0                 complete, result = stdout as JSON (empty = null,
 *                          not JSON = a JSON string)
 *   stdout over 1 MiB      fail, "result_too_large", not retryable
 *   exit 65 (EX_DATAERR)   fail, "exit_65", not retryable
 *   other exit N           fail, "exit_N", retryable
 *   killed by signal N     fail, "signal_N", retryable
 *   stopped by a 2nd ^C    yield (back to its queue, attempt not counted)
 *
 * The failure message is the last non-blank line CMD wrote to stderr.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "grant.h"
#include "run.h"
#include "sig.h"

#define WORKER_DEFAULT_WAIT_S 30
#define RESULT_MAX (1024 * 1024)  /* stdout bytes; the server's max_payload */
#define BACKOFF_MAX_MS 30000      /* between tries while the server is away */
#define EX_DATAERR_CODE 65        /* sysexits.h: bad input, do not retry */

struct worker {
    struct gq_cli *c;
    const char **classes; /* --class, NULL-terminated */
    const char *name;     /* the worker name */
    long wait_s;
    char **cmd;           /* CMD and its arguments */
};

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, or less when a stop signal comes. */
static void
nap(long ms)
{
    struct pollfd p = {.fd = gq_sig_fd(), .events = POLLIN};
    long long end = now_ms() + ms, left;
    int signo, from_kernel;

    for (;;) {
        left = end - now_ms();
        if (gq_sig_stop || left <= 0)
            break;
        if (poll(&p, 1, (int)left) > 0)
            while (gq_sig_read(&signo, &from_kernel))
                ;
    }
}

/*
 * A JSON string of s[0..len), with bytes that are not valid UTF-8
 * replaced by '?'.  NULL when out of memory.
 */
static json_t *
safe_string(const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    char *copy;
    size_t i;

    if (v)
        return v;
    /* Not UTF-8: keep ASCII, mark the rest. */
    copy = malloc(len + 1);
    if (!copy)
        return NULL;
    for (i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    v = json_stringn(copy, len);
    free(copy);
    return v;
}

static int
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* CMD's stdout as the job's result (see the file comment). */
static json_t *
parse_result(const char *out, size_t len)
{
    json_t *v;

    while (len > 0 && is_space(out[len - 1]))
        len--;
    while (len > 0 && is_space(out[0])) {
        out++;
        len--;
    }
    if (len == 0)
        return json_null();
    v = json_loadb(out, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    return v ? v : safe_string(out, len);
}

/* The body of /fail for a CMD that did not succeed. */
static json_t *
fail_body(const struct gq_run *run)
{
    char code[32], msg[GQ_RUN_LINE_MAX + 64];
    int retryable = 1;

    if (run->out_overflow && WIFEXITED(run->status) &&
        WEXITSTATUS(run->status) == 0) {
        snprintf(code, sizeof(code), "result_too_large");
        snprintf(msg, sizeof(msg), "stdout over %d bytes", RESULT_MAX);
        retryable = 0;
    } else if (WIFSIGNALED(run->status)) {
        snprintf(code, sizeof(code), "signal_%d", WTERMSIG(run->status));
        snprintf(msg, sizeof(msg), "%s",
                 run->err_line[0] ? run->err_line
                                  : strsignal(WTERMSIG(run->status)));
    } else {
        int st = WIFEXITED(run->status) ? WEXITSTATUS(run->status) : 1;
        snprintf(code, sizeof(code), "exit_%d", st);
        if (run->err_line[0])
            snprintf(msg, sizeof(msg), "%s", run->err_line);
        else
            snprintf(msg, sizeof(msg), "exited with status %d", st);
        retryable = st != EX_DATAERR_CODE;
    }
    return json_pack("{s{ssso}sb}", "error", "code", code, "message",
                     safe_string(msg, strlen(msg)), "retryable", retryable);
}

/* Reports the outcome line: the job as JSON, or "ID CLASS STATE ...". */
static void
print_outcome(struct gq_cli *c, json_t *job, const char *what, long long ms)
{
    char took[32];
    const char *state = gq_cli_str(job, "state");
    json_t *err;

    if (c->json) {
        json_dumpf(job, stdout, JSON_COMPACT);
        putchar('\n');
    } else {
        /* A succeeded job may still carry an earlier attempt's error. */
        err = state && strcmp(state, "succeeded") != 0
                  ? json_object_get(job, "error")
                  : NULL;
        printf("%s %s attempt %lld: %s -> %s%s%s in %s\n",
               gq_cli_str(job, "id") ? gq_cli_str(job, "id") : "?",
               gq_cli_str(job, "class") ? gq_cli_str(job, "class") : "?",
               gq_cli_int(job, "attempts", 0), what, state ? state : "?",
               gq_cli_str(err, "code") ? " " : "",
               gq_cli_str(err, "code") ? gq_cli_str(err, "code") : "",
               gq_cli_fmt_ms(ms, took, sizeof(took)));
    }
    fflush(stdout);
}

/*
 * Runs CMD for one granted lease.  Returns 0 (whatever the job's fate),
 * GQ_EXIT_LOST when the lease was lost, or GQ_EXIT_HTTP for a malformed
 * grant.
 */
static int
handle(struct worker *w, json_t *reply)
{
    struct gq_cli *c = w->c;
    struct gq_grant g;
    struct gq_run run;
    json_t *job = json_object_get(reply, "job"), *body = NULL, *out = NULL;
    char e_id[GQ_GRANT_ID_MAX + 16], e_cls[256], e_att[64];
    char e_lease[GQ_GRANT_ID_MAX + 16], e_tok[64], e_url[GPUQ_URL_MAX + 16];
    char *add[6] = {e_id, e_cls, e_att, e_lease, e_tok, e_url};
    const char *id = gq_cli_str(job, "id"), *op, *what;
    char *input = NULL, **env = NULL;
    long long start = now_ms();
    int code;

    if (gq_grant_init(&g, c, "leases", reply, "lease_id") < 0 || !id)
        return GQ_EXIT_HTTP;
    snprintf(e_id, sizeof(e_id), "GPUQ_JOB_ID=%s", id);
    snprintf(e_cls, sizeof(e_cls), "GPUQ_JOB_CLASS=%s",
             gq_cli_str(job, "class") ? gq_cli_str(job, "class") : "");
    snprintf(e_att, sizeof(e_att), "GPUQ_ATTEMPT=%lld",
             gq_cli_int(job, "attempts", 1));
    snprintf(e_lease, sizeof(e_lease), "GPUQ_LEASE_ID=%s", g.raw_id);
    snprintf(e_tok, sizeof(e_tok), "GPUQ_TOKEN=%lld", g.token);
    snprintf(e_url, sizeof(e_url), "GPUQ_URL=%s", c->url);
    {
        json_t *payload = json_object_get(job, "payload");
        char *text = json_dumps(payload ? payload : json_null(),
                                JSON_COMPACT | JSON_ENCODE_ANY);
        size_t n = text ? strlen(text) : 0;
        input = text ? realloc(text, n + 2) : NULL;
        if (!input)
            free(text);
        else
            memcpy(input + n, "\n", 2); /* a line, for line readers */
    }
    env = gq_run_env(add, 6);
    memset(&run, 0, sizeof(run));
    if (!input || !env) {
        gq_cli_errf("out of memory running %s", id);
        run.status = 1 << 8; /* as if it exited 1: fail, retryable */
    } else {
        run.argv = w->cmd;
        run.envp = env;
        run.own_pgrp = 1;
        run.capture = 1;
        run.input = input;
        run.input_len = strlen(input);
        run.out_max = RESULT_MAX;
        run.hb_ms = gq_grant_hb_ms(&g);
        run.lease_ms = g.ttl_ms;
        run.heartbeat = gq_grant_heartbeat;
        run.ud = &g;
        if (gq_run_child(&run) < 0) {
            gq_cli_errf("cannot run %s: %s", w->cmd[0], strerror(errno));
            snprintf(run.err_line, sizeof(run.err_line),
                     "gpuq worker could not start the command: %s",
                     strerror(errno));
            run.status = 1 << 8;
        }
    }
    free(input);
    free(env);
    if (run.lost) {
        gq_cli_errf("lease %s of %s lost; %s was stopped", g.raw_id, id,
                    w->cmd[0]);
        gq_run_free(&run);
        return GQ_EXIT_LOST;
    }

    if (run.stopped && !(WIFEXITED(run.status) &&
                         WEXITSTATUS(run.status) == 0)) {
        op = "yield";
        what = "stopped";
        body = json_object();
    } else if (WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0 &&
               !run.out_overflow) {
        op = "complete";
        what = "exit 0";
        body = json_object();
        if (body &&
            json_object_set_new(body, "result",
                                parse_result(run.out ? run.out : "",
                                             run.out_len)) != 0) {
            json_decref(body);
            body = NULL;
        }
    } else {
        op = "fail";
        what = WIFSIGNALED(run.status) ? "killed" : "failed";
        body = fail_body(&run);
    }
    gq_run_free(&run);
    if (!body) {
        gq_cli_errf("out of memory reporting %s", id);
        return GQ_EXIT_HTTP;
    }
    code = gq_grant_post(&g, op, body, &out);
    json_decref(body);
    if (code == GQ_EXIT_HTTP && strcmp(op, "complete") == 0) {
        /* E.g. 413: the result is over max_payload.  Rerunning would
         * make the same result, so the job fails for good. */
        what = "result refused";
        body = json_pack("{s{ssss}sb}", "error", "code", "result_rejected",
                         "message", "the server refused the job's result",
                         "retryable", 0);
        code = body ? gq_grant_post(&g, "fail", body, &out) : GQ_EXIT_HTTP;
        json_decref(body);
    }
    if (code == GQ_EXIT_OK)
        print_outcome(c, out, what, now_ms() - start);
    else if (code == GQ_EXIT_LOST)
        gq_cli_errf("lease %s of %s was lost before %s", g.raw_id, id, op);
    else /* said why; the lease expires and the server retries the job */
        gq_cli_errf("outcome of %s not reported", id);
    json_decref(out);
    return code == GQ_EXIT_LOST ? GQ_EXIT_LOST : GQ_EXIT_OK;
}

/* Says why the worker is about to back off. */
static void
report_outage(struct gq_cli *c, int err, const struct gpuq_response *r)
{
    if (err != 0)
        gq_cli_errf("cannot reach gpuqd at %s: %s; retrying", c->url,
                    gpuq_client_errmsg(c->client));
    else
        gq_cli_errf("HTTP %ld %s; retrying", r->status,
                    r->error_code ? r->error_code : "");
}

/* The main loop; returns the exit code. */
static int
serve(struct worker *w, long max_jobs)
{
    struct gq_cli *c = w->c;
    struct gpuq_response r;
    json_t *reply;
    long handled = 0, backoff = 0;
    int rc, err, code;

    while (!gq_sig_stop && (max_jobs == 0 || handled < max_jobs)) {
        gpuq_client_set_abort(c->client, gq_sig_abort, NULL);
        rc = gpuq_client_lease(c->client, w->classes, w->wait_s, w->name,
                               &r);
        gpuq_client_set_abort(c->client, NULL, NULL);
        err = gq_cli_reply(rc, &r, &reply);
        if (gq_sig_stop && err != 0) {
            gpuq_response_free(&r);
            break;
        }
        if (err == GPUQ_EURL || err == GPUQ_EINVAL)
            return gq_cli_report(c, err, &r);
        if (err == 0 && r.status == 200) {
            backoff = 0;
            code = handle(w, reply);
            handled++;
            json_decref(reply);
            gpuq_response_free(&r);
            if (code == GQ_EXIT_HTTP)
                return code;
            if (code == GQ_EXIT_LOST && max_jobs == 1)
                return code;
            continue;
        }
        if (err == 0 && r.status == 204) {
            backoff = 0;
            json_decref(reply);
            gpuq_response_free(&r);
            continue;
        }
        if (err == 0 && r.status < 500) { /* 400, 404 unknown_class */
            code = gq_cli_report(c, err, &r);
            json_decref(reply);
            gpuq_response_free(&r);
            return code;
        }
        /* Unreachable, or 5xx (draining, busy): wait and try again,
         * saying so once per outage. */
        backoff = backoff ? backoff * 2 : 1000;
        if (backoff > BACKOFF_MAX_MS)
            backoff = BACKOFF_MAX_MS;
        if (backoff == 1000)
            report_outage(c, err, &r);
        json_decref(reply);
        gpuq_response_free(&r);
        nap(backoff);
    }
    return GQ_EXIT_OK;
}

int
gq_cmd_worker(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"class", required_argument, 0, 'c'},
        {"name", required_argument, 0, 'n'},
        {"wait", required_argument, 0, 'w'},
        {"once", no_argument, 0, 'o'},
        {"max-jobs", required_argument, 0, 'M'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    struct worker w;
    char name[600];
    size_t nclasses = 0;
    long n, max_jobs = 0;
    int ch, code = GQ_EXIT_OK;

    memset(&w, 0, sizeof(w));
    w.c = c;
    w.wait_s = WORKER_DEFAULT_WAIT_S;
    /* At most one --class per argument: argc + 1 slots are plenty. */
    w.classes = calloc((size_t)argc + 1, sizeof(*w.classes));
    if (!w.classes) {
        gq_cli_errf("out of memory");
        return GQ_EXIT_HTTP;
    }
    gq_grant_default_holder(name, sizeof(name) - 16);
    snprintf(name + strlen(name), 16, ":%ld", (long)getpid());
    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'c':
            if (!gq_cli_utf8(optarg)) {
                code = gq_cli_usage(c, "--class must be UTF-8");
                goto out;
            }
            w.classes[nclasses++] = optarg;
            break;
        case 'n':
            snprintf(name, sizeof(name), "%s", optarg);
            break;
        case 'w':
            if (gq_cli_parse_long(optarg, 1, 300, &n) < 0) {
                code = gq_cli_usage(c, "--wait wants seconds, 1..300");
                goto out;
            }
            w.wait_s = n;
            break;
        case 'o':
            max_jobs = 1;
            break;
        case 'M':
            if (gq_cli_parse_long(optarg, 1, 1000000000L, &n) < 0) {
                code = gq_cli_usage(c, "--max-jobs wants a count >= 1");
                goto out;
            }
            max_jobs = n;
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                goto out;
            code = GQ_EXIT_OK;
        }
    }
    if (nclasses == 0) {
        code = gq_cli_usage(c, "at least one --class is needed");
        goto out;
    }
    if (optind >= argc) {
        code = gq_cli_usage(c, "missing the CMD to run (after --)");
        goto out;
    }
    w.cmd = argv + optind;
    w.name = name;
    if (!gq_cli_utf8(name)) {
        code = gq_cli_usage(c, "--name must be UTF-8");
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
    code = serve(&w, max_jobs);
out:
    free(w.classes);
    return code;
}
