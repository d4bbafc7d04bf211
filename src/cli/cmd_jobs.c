/*
 * cmd_jobs.c - the job commands: submit, get, ls, cancel, requeue.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define PAYLOAD_FILE_MAX (4L * 1024 * 1024) /* over the server's max_body */
#define SUBMIT_POLL_S 60                    /* one ?wait= long-poll */
#define ID_MAX 256                          /* escaped job id */

/*
 * Reads a whole file ("-" = stdin) of at most max bytes into a malloc'd
 * buffer.  Returns 0, -1 with errno set, or -2 when it is over max.
 */
static int
read_file(const char *path, long max, char **out, size_t *outlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t len = 0, cap = 0, n;
    char *buf = NULL, *nb;
    int rc = 0, saved;

    *out = NULL;
    if (!f)
        return -1;
    for (;;) {
        if (len == cap) {
            if (cap > (size_t)max) {
                rc = -2;
                break;
            }
            cap = cap ? cap * 2 : 65536;
            nb = realloc(buf, cap);
            if (!nb) {
                errno = ENOMEM;
                rc = -1;
                break;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                rc = -1; /* errno says why */
            break;
        }
    }
    if (rc == 0 && len > (size_t)max)
        rc = -2;
    saved = errno;
    if (f != stdin)
        fclose(f);
    errno = saved;
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *outlen = len;
    return 0;
}

/* Parses --payload: JSON text, @FILE or @- (stdin).  NULL after a message. */
static json_t *
parse_payload(const char *arg)
{
    json_error_t jerr;
    json_t *v;
    char *text;
    size_t len;
    int rc;

    if (arg[0] != '@') {
        v = json_loads(arg, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        if (!v)
            gq_cli_errf("--payload is not JSON: %s (column %d)", jerr.text,
                        jerr.column);
        return v;
    }
    rc = read_file(arg + 1, PAYLOAD_FILE_MAX, &text, &len);
    if (rc == -2) {
        gq_cli_errf("%s: over %ld bytes", arg + 1, PAYLOAD_FILE_MAX);
        return NULL;
    }
    if (rc != 0) {
        gq_cli_errf("%s: %s", arg + 1, strerror(errno));
        return NULL;
    }
    v = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                   &jerr);
    if (!v)
        gq_cli_errf("%s is not JSON: %s (line %d)", arg + 1, jerr.text,
                    jerr.line);
    free(text);
    return v;
}

/* Takes exactly one positional argument, an id, into path "/v1/jobs/ID". */
static int
job_path(struct gq_cli *c, int argc, char **argv, const char *suffix,
         char *path, size_t len)
{
    char id[ID_MAX];
    int n;

    if (optind + 1 != argc)
        return gq_cli_usage(c, optind >= argc ? "missing the job ID"
                                              : "too many arguments");
    if (gq_cli_esc(argv[optind], id, sizeof(id)) < 0)
        return gq_cli_usage(c, "job ID too long");
    n = snprintf(path, len, "/v1/jobs/%s%s", id, suffix);
    if (n < 0 || (size_t)n >= len)
        return gq_cli_usage(c, "job ID too long");
    return GQ_EXIT_OK;
}

/* Parses options that only the globals accept; returns -1 to go on. */
static int
only_global_opts(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {GQ_CLI_GLOBAL_OPTS, {0, 0, 0, 0}};
    int ch, code;

    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        code = gq_cli_global_opt(c, ch, optarg);
        if (code >= 0)
            return code;
    }
    return -1;
}

/* Long-polls the job until it is terminal; returns an exit code. */
static int
wait_job(struct gq_cli *c, const char *id, struct gq_httpc_resp *r,
         json_t **job)
{
    char esc[ID_MAX], path[ID_MAX + 64];
    int code;

    if (gq_cli_esc(id, esc, sizeof(esc)) < 0) {
        gq_cli_errf("job id from server too long");
        return GQ_EXIT_HTTP;
    }
    snprintf(path, sizeof(path), "/v1/jobs/%s?wait=%d", esc, SUBMIT_POLL_S);
    while (!gq_cli_terminal(gq_cli_str(*job, "state"))) {
        json_decref(*job);
        *job = NULL;
        gq_httpc_resp_free(r);
        code = gq_cli_do(c, "GET", path, NULL,
                         c->timeout_s ? SUBMIT_POLL_S + c->timeout_s : 0, r,
                         job);
        if (code != GQ_EXIT_OK)
            return code;
        if (!json_is_object(*job)) {
            gq_cli_errf("malformed job from server");
            return GQ_EXIT_HTTP;
        }
    }
    return GQ_EXIT_OK;
}

int
gq_cmd_submit(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"payload", required_argument, 0, 'p'},
        {"meta", required_argument, 0, 'm'},
        {"priority", required_argument, 0, 'P'},
        {"key", required_argument, 0, 'k'},
        {"queue-timeout", required_argument, 0, 'q'},
        {"wait", no_argument, 0, 'w'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    struct gq_httpc_resp r = {0};
    json_t *body = json_object(), *meta = json_object(), *job = NULL, *v;
    int ch, code = GQ_EXIT_OK, wait = 0;
    long prio;
    double secs;

    if (!body || !meta) {
        gq_cli_errf("out of memory");
        code = GQ_EXIT_HTTP;
        goto out;
    }
    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'p':
            v = parse_payload(optarg);
            if (!v) {
                code = GQ_EXIT_USAGE;
                goto out;
            }
            json_object_set_new(body, "payload", v);
            break;
        case 'm':
            if (gq_cli_meta_add(meta, optarg) < 0) {
                code = gq_cli_usage(c, "--meta wants KEY=VALUE (UTF-8), "
                                       "not '%s'", optarg);
                goto out;
            }
            break;
        case 'P':
            if (gq_cli_parse_long(optarg, -1000000, 1000000, &prio) < 0) {
                code = gq_cli_usage(c, "--priority wants an integer");
                goto out;
            }
            json_object_set_new(body, "priority", json_integer(prio));
            break;
        case 'k':
            json_object_set_new(body, "idempotency_key", json_string(optarg));
            break;
        case 'q':
            if (gq_cli_parse_secs(optarg, &secs) < 0) {
                code = gq_cli_usage(c, "--queue-timeout wants seconds >= 0");
                goto out;
            }
            json_object_set_new(body, "queue_timeout",
                                gq_cli_json_secs(secs));
            break;
        case 'w':
            wait = 1;
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                goto out;
            code = GQ_EXIT_OK;
        }
    }
    if (optind + 1 != argc) {
        code = gq_cli_usage(c, optind >= argc ? "missing the CLASS"
                                              : "too many arguments");
        goto out;
    }
    if (json_object_set_new(body, "class", json_string(argv[optind])) != 0 ||
        (json_object_size(meta) > 0 &&
         json_object_set(body, "metadata", meta) != 0)) {
        code = gq_cli_usage(c, "CLASS must be UTF-8");
        goto out;
    }
    code = gq_cli_do(c, "POST", "/v1/jobs", body, 0, &r, &job);
    if (code != GQ_EXIT_OK)
        goto out;
    if (!json_is_object(job) || !gq_cli_str(job, "id")) {
        gq_cli_errf("malformed job from server");
        code = GQ_EXIT_HTTP;
        goto out;
    }
    if (wait) {
        char id[ID_MAX];
        snprintf(id, sizeof(id), "%s", gq_cli_str(job, "id"));
        code = wait_job(c, id, &r, &job);
        if (code != GQ_EXIT_OK)
            goto out;
    }
    gq_cli_print(c, &r, job);
    if (wait) {
        const char *state = gq_cli_str(job, "state");
        if (strcmp(state, "succeeded") != 0) {
            gq_cli_errf("job %s ended %s", gq_cli_str(job, "id"), state);
            code = GQ_EXIT_NOTOK;
        }
    }
out:
    json_decref(body);
    json_decref(meta);
    json_decref(job);
    gq_httpc_resp_free(&r);
    return code;
}

int
gq_cmd_get(struct gq_cli *c, int argc, char **argv)
{
    struct gq_httpc_resp r;
    json_t *job = NULL;
    char path[ID_MAX + 64];
    int code = only_global_opts(c, argc, argv);

    if (code >= 0)
        return code;
    code = job_path(c, argc, argv, "", path, sizeof(path));
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, "GET", path, NULL, 0, &r, &job);
    if (code != GQ_EXIT_OK)
        return code;
    gq_cli_print(c, &r, job);
    json_decref(job);
    gq_httpc_resp_free(&r);
    return GQ_EXIT_OK;
}

/* cancel and requeue: POST /v1/jobs/ID/ACTION, print "ID STATE". */
static int
job_action(struct gq_cli *c, int argc, char **argv, const char *suffix)
{
    struct gq_httpc_resp r;
    json_t *job = NULL, *empty = json_object();
    char path[ID_MAX + 64];
    int code = only_global_opts(c, argc, argv);

    if (code < 0)
        code = job_path(c, argc, argv, suffix, path, sizeof(path));
    if (code != GQ_EXIT_OK) {
        json_decref(empty);
        return code;
    }
    if (!empty) {
        gq_cli_errf("out of memory");
        return GQ_EXIT_HTTP;
    }
    code = gq_cli_do(c, "POST", path, empty, 0, &r, &job);
    json_decref(empty);
    if (code != GQ_EXIT_OK)
        return code;
    if (c->json)
        gq_cli_print(c, &r, job);
    else
        printf("%s %s\n", gq_cli_str(job, "id") ? gq_cli_str(job, "id") : "?",
               gq_cli_str(job, "state") ? gq_cli_str(job, "state") : "?");
    json_decref(job);
    gq_httpc_resp_free(&r);
    return GQ_EXIT_OK;
}

int
gq_cmd_cancel(struct gq_cli *c, int argc, char **argv)
{
    return job_action(c, argc, argv, "/cancel");
}

int
gq_cmd_requeue(struct gq_cli *c, int argc, char **argv)
{
    return job_action(c, argc, argv, "/requeue");
}

/* Appends "&name=escaped value" to the query in q. */
static int
query_add(char *q, size_t len, const char *name, const char *value)
{
    char esc[512];
    size_t used = strlen(q);
    int n;

    if (!value)
        return 0;
    if (gq_cli_esc(value, esc, sizeof(esc)) < 0)
        return -1;
    n = snprintf(q + used, len - used, "%s%s=%s", used ? "&" : "?", name,
                 esc);
    return n < 0 || (size_t)n >= len - used ? -1 : 0;
}

static void
ls_row(json_t *j)
{
    char wait[32], att[32];
    const char *state = gq_cli_str(j, "state"), *reason;

    reason = state && strcmp(state, "queued") == 0 ? gq_cli_str(j, "reason")
                                                   : NULL;
    snprintf(att, sizeof(att), "%lld/%lld", gq_cli_int(j, "attempts", 0),
             gq_cli_int(j, "max_attempts", 0));
    printf("%-10s %-16s %-10s %5lld %5s %8s %s\n",
           gq_cli_str(j, "id") ? gq_cli_str(j, "id") : "?",
           gq_cli_str(j, "class") ? gq_cli_str(j, "class") : "?",
           state ? state : "?", gq_cli_int(j, "priority", 0), att,
           gq_cli_fmt_ms(gq_cli_int(j, "wait_ms", -1), wait, sizeof(wait)),
           reason ? reason : "-");
}

int
gq_cmd_ls(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"class", required_argument, 0, 'c'},
        {"state", required_argument, 0, 's'},
        {"limit", required_argument, 0, 'l'},
        {"after", required_argument, 0, 'a'},
        {"all", no_argument, 0, 'A'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    const char *cls = NULL, *state = NULL, *limit = NULL;
    char after[ID_MAX] = "", path[2048];
    struct gq_httpc_resp r;
    json_t *page, *jobs, *j;
    int ch, code, all = 0, printed = 0;
    size_t i;
    long n;

    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'c':
            cls = optarg;
            break;
        case 's':
            state = optarg;
            break;
        case 'l':
            if (gq_cli_parse_long(optarg, 1, 1000, &n) < 0)
                return gq_cli_usage(c, "--limit wants 1..1000");
            limit = optarg;
            break;
        case 'a':
            snprintf(after, sizeof(after), "%s", optarg);
            break;
        case 'A':
            all = 1;
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                return code;
        }
    }
    if (optind != argc)
        return gq_cli_usage(c, "unexpected argument '%s'", argv[optind]);
    if (all && c->json)
        fputs("{\"jobs\":[", stdout);
    else if (!c->json)
        printf("%-10s %-16s %-10s %5s %5s %8s %s\n", "ID", "CLASS", "STATE",
               "PRI", "ATT", "WAIT", "REASON");
    for (;;) {
        path[0] = '\0';
        if (query_add(path, sizeof(path), "class", cls) < 0 ||
            query_add(path, sizeof(path), "state", state) < 0 ||
            query_add(path, sizeof(path), "limit", limit) < 0 ||
            query_add(path, sizeof(path), "after", after[0] ? after : NULL))
            return gq_cli_usage(c, "arguments too long");
        {
            char full[2100];
            snprintf(full, sizeof(full), "/v1/jobs%s", path);
            code = gq_cli_do(c, "GET", full, NULL, 0, &r, &page);
        }
        if (code != GQ_EXIT_OK)
            return code;
        jobs = json_object_get(page, "jobs");
        if (!json_is_array(jobs)) {
            gq_cli_errf("malformed job list from server");
            json_decref(page);
            gq_httpc_resp_free(&r);
            return GQ_EXIT_HTTP;
        }
        if (c->json && !all)
            gq_cli_print(c, &r, page);
        json_array_foreach(jobs, i, j) {
            if (c->json && all) {
                if (printed++)
                    putchar(',');
                json_dumpf(j, stdout, JSON_COMPACT);
            } else if (!c->json)
                ls_row(j);
        }
        j = json_object_get(page, "next");
        after[0] = '\0';
        if (json_is_string(j))
            snprintf(after, sizeof(after), "%s", json_string_value(j));
        json_decref(page);
        gq_httpc_resp_free(&r);
        if (!after[0] || !all)
            break;
    }
    if (all && c->json)
        fputs("],\"next\":null}\n", stdout);
    else if (after[0] && !c->json)
        fprintf(stderr, "gpuq: more jobs: --after %s, or --all\n", after);
    return GQ_EXIT_OK;
}
