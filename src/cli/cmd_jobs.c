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

/*
 * Takes exactly one positional argument, a job id, which must escape to
 * fewer than ID_MAX bytes.  Returns 0 or an exit code.
 */
static int
job_arg(struct gq_cli *c, int argc, char **argv)
{
    char id[ID_MAX];

    if (optind + 1 != argc)
        return gq_cli_usage(c, optind >= argc ? "missing the job ID"
                                              : "too many arguments");
    if (gq_cli_esc(argv[optind], id, sizeof(id)) < 0)
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
wait_job(struct gq_cli *c, const char *id, struct gpuq_response *r,
         json_t **job)
{
    char esc[ID_MAX];
    int code;

    if (gq_cli_esc(id, esc, sizeof(esc)) < 0) {
        gq_cli_errf("job id from server too long");
        return GQ_EXIT_HTTP;
    }
    while (!gq_cli_terminal(gq_cli_str(*job, "state"))) {
        json_decref(*job);
        *job = NULL;
        gpuq_response_free(r);
        code = gq_cli_do(c, gpuq_client_get(c->client, id, SUBMIT_POLL_S, r),
                         r, job);
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
    struct gpuq_submit_opts o;
    struct gpuq_response r;
    json_t *payload = NULL, *meta = json_object(), *job = NULL, *v;
    char *payload_text = NULL, *meta_text = NULL;
    int ch, code = GQ_EXIT_OK, wait = 0;
    long prio;
    double secs;

    gpuq_submit_opts_init(&o);
    gpuq_response_init(&r);
    if (!meta) {
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
            json_decref(payload);
            payload = v;
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
            o.priority = prio;
            break;
        case 'k':
            o.idempotency_key = optarg;
            break;
        case 'q':
            if (gq_cli_parse_secs(optarg, &secs) < 0) {
                code = gq_cli_usage(c, "--queue-timeout wants seconds >= 0");
                goto out;
            }
            o.queue_timeout = secs;
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
    if (!gq_cli_utf8(argv[optind])) {
        code = gq_cli_usage(c, "CLASS must be UTF-8");
        goto out;
    }
    if (o.idempotency_key && !gq_cli_utf8(o.idempotency_key)) {
        code = gq_cli_usage(c, "--key must be UTF-8");
        goto out;
    }
    o.cls = argv[optind];
    if (payload) {
        payload_text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
        o.payload = payload_text;
    }
    if (json_object_size(meta) > 0) {
        meta_text = json_dumps(meta, JSON_COMPACT);
        o.metadata = meta_text;
    }
    if ((payload && !payload_text) || (json_object_size(meta) > 0 &&
                                       !meta_text)) {
        gq_cli_errf("out of memory");
        code = GQ_EXIT_HTTP;
        goto out;
    }
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        goto out;
    code = gq_cli_do(c, gpuq_client_submit(c->client, &o, &r), &r, &job);
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
    json_decref(payload);
    json_decref(meta);
    json_decref(job);
    free(payload_text);
    free(meta_text);
    gpuq_response_free(&r);
    return code;
}

int
gq_cmd_get(struct gq_cli *c, int argc, char **argv)
{
    struct gpuq_response r;
    json_t *job = NULL;
    int code = only_global_opts(c, argc, argv);

    if (code >= 0)
        return code;
    code = job_arg(c, argc, argv);
    if (code == GQ_EXIT_OK)
        code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, gpuq_client_get(c->client, argv[optind], 0, &r), &r,
                     &job);
    if (code != GQ_EXIT_OK)
        return code;
    gq_cli_print(c, &r, job);
    json_decref(job);
    gpuq_response_free(&r);
    return GQ_EXIT_OK;
}

/* cancel and requeue: POST /v1/jobs/ID/ACTION, print "ID STATE". */
static int
job_action(struct gq_cli *c, int argc, char **argv,
           int (*action)(struct gpuq_client *, const char *,
                         struct gpuq_response *))
{
    struct gpuq_response r;
    json_t *job = NULL;
    int code = only_global_opts(c, argc, argv);

    if (code >= 0)
        return code;
    code = job_arg(c, argc, argv);
    if (code == GQ_EXIT_OK)
        code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, action(c->client, argv[optind], &r), &r, &job);
    if (code != GQ_EXIT_OK)
        return code;
    if (c->json)
        gq_cli_print(c, &r, job);
    else
        printf("%s %s\n", gq_cli_str(job, "id") ? gq_cli_str(job, "id") : "?",
               gq_cli_str(job, "state") ? gq_cli_str(job, "state") : "?");
    json_decref(job);
    gpuq_response_free(&r);
    return GQ_EXIT_OK;
}

int
gq_cmd_cancel(struct gq_cli *c, int argc, char **argv)
{
    return job_action(c, argc, argv, gpuq_client_cancel);
}

int
gq_cmd_requeue(struct gq_cli *c, int argc, char **argv)
{
    return job_action(c, argc, argv, gpuq_client_requeue);
}

/* A query value must escape to fewer than 512 bytes; NULL is fine. */
static int
query_ok(const char *value)
{
    char esc[512];

    return !value || gq_cli_esc(value, esc, sizeof(esc)) == 0;
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
    const char *cls = NULL, *state = NULL;
    char after[ID_MAX] = "";
    struct gpuq_response r;
    json_t *page, *jobs, *j;
    int ch, code, all = 0, printed = 0;
    size_t i;
    long n, limit = 0;

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
            limit = n;
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
    if (!query_ok(cls) || !query_ok(state) || !query_ok(after))
        return gq_cli_usage(c, "arguments too long");
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    for (;;) {
        code = gq_cli_do(c,
                         gpuq_client_list(c->client, cls, state, limit,
                                          after[0] ? after : NULL, &r),
                         &r, &page);
        if (code != GQ_EXIT_OK)
            return code;
        jobs = json_object_get(page, "jobs");
        if (!json_is_array(jobs)) {
            gq_cli_errf("malformed job list from server");
            json_decref(page);
            gpuq_response_free(&r);
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
        gpuq_response_free(&r);
        if (!after[0] || !all)
            break;
    }
    if (all && c->json)
        fputs("],\"next\":null}\n", stdout);
    else if (after[0] && !c->json)
        fprintf(stderr, "gpuq: more jobs: --after %s, or --all\n", after);
    return GQ_EXIT_OK;
}
