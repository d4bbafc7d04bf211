/*
 * cmd_ops.c - the operator commands: status (a table of slots and
 * classes), watch (the event stream, a line per event) and drain.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static const char *
dash(const char *s)
{
    return s && s[0] ? s : "-";
}

static void
status_slots(json_t *slots)
{
    char held[32];
    size_t i;
    json_t *s;

    printf("%-5s %-10s %-16s %-5s %-20s %s\n", "SLOT", "JOB", "CLASS",
           "KIND", "HOLDER", "HELD");
    json_array_foreach(slots, i, s) {
        const char *job = gq_cli_str(s, "job");
        if (!job) {
            printf("%-5lld %-10s\n", gq_cli_int(s, "slot", (long long)i),
                   "-");
            continue;
        }
        printf("%-5lld %-10s %-16s %-5s %-20s %s\n",
               gq_cli_int(s, "slot", (long long)i), job,
               dash(gq_cli_str(s, "class")), dash(gq_cli_str(s, "kind")),
               dash(gq_cli_str(s, "holder")),
               gq_cli_fmt_ms(gq_cli_int(s, "held_ms", -1), held,
                             sizeof(held)));
    }
}

/* A share in [0, 1] as "69.0%", or "-". */
static const char *
pct(json_t *cls, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(cls, key);

    if (!json_is_number(v))
        return "-";
    snprintf(buf, len, "%.1f%%", json_number_value(v) * 100.0);
    return buf;
}

static void
status_classes(json_t *classes)
{
    char target[32], share[32], oldest[32], streak[32], weight[32];
    size_t i;
    json_t *k;

    printf("%-16s %4s %6s %7s %7s %6s %7s %7s %8s %6s %7s\n", "CLASS", "PRI",
           "WEIGHT", "TARGET", "SHARE", "READY", "BACKOFF", "RUNNING",
           "OLDEST", "STREAK", "WORKERS");
    json_array_foreach(classes, i, k) {
        long long cap = gq_cli_int(k, "max_consecutive", 0);
        if (cap > 0)
            snprintf(streak, sizeof(streak), "%lld/%lld",
                     gq_cli_int(k, "streak", 0), cap);
        else
            snprintf(streak, sizeof(streak), "%lld",
                     gq_cli_int(k, "streak", 0));
        /* The weight may come as 70 or 70.0. */
        snprintf(weight, sizeof(weight), "%g",
                 json_number_value(json_object_get(k, "weight")));
        printf("%-16s %4lld %6s %7s %7s %6lld %7lld %7lld %8s %6s %7lld\n",
               dash(gq_cli_str(k, "name")), gq_cli_int(k, "priority", 0),
               weight,
               pct(k, "target_share", target, sizeof(target)),
               pct(k, "share", share, sizeof(share)),
               gq_cli_int(k, "ready", 0), gq_cli_int(k, "backoff", 0),
               gq_cli_int(k, "running", 0),
               gq_cli_int(k, "ready", 0) > 0
                   ? gq_cli_fmt_ms(gq_cli_int(k, "oldest_wait_ms", -1),
                                   oldest, sizeof(oldest))
                   : "-",
               streak, gq_cli_int(k, "workers_waiting", 0));
    }
}

int
gq_cmd_status(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {GQ_CLI_GLOBAL_OPTS, {0, 0, 0, 0}};
    struct gpuq_response r;
    json_t *st = NULL, *v;
    char up[32];
    int ch, code;

    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        code = gq_cli_global_opt(c, ch, optarg);
        if (code >= 0)
            return code;
    }
    if (optind != argc)
        return gq_cli_usage(c, "unexpected argument '%s'", argv[optind]);
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, gpuq_client_status(c->client, &r), &r, &st);
    if (code != GQ_EXIT_OK)
        return code;
    if (c->json || !json_is_object(st)) {
        gq_cli_print(c, &r, st);
    } else {
        v = json_object_get(st, "draining");
        printf("gpuqd %s at %s, up %s, share by %s%s\n\n",
               dash(gq_cli_str(st, "version")), c->url,
               gq_cli_fmt_ms(gq_cli_int(st, "uptime_s", -1) * 1000, up,
                             sizeof(up)),
               dash(gq_cli_str(st, "share_by")),
               json_is_true(v) ? ", DRAINING" : "");
        status_slots(json_object_get(st, "slots"));
        putchar('\n');
        status_classes(json_object_get(st, "classes"));
    }
    json_decref(st);
    gpuq_response_free(&r);
    return GQ_EXIT_OK;
}

/* What the event callback of a watch needs. */
struct watch {
    struct gq_cli *c;
    const char *job;          /* --job: end when it is terminal */
    int done;                 /* the watched job is terminal */
};

/* Prints one event; returns 1 when the watch should end. */
static int
watch_print(struct watch *w, const char *event, const char *data,
            size_t len)
{
    json_t *ev = json_loadb(data, len, 0, NULL), *v;
    const char *key, *state;
    int end = 0;

    if (w->c->json || !json_is_object(ev)) {
        fwrite(data, 1, len, stdout);
        putchar('\n');
    } else {
        printf("%s %s %s %s", dash(gq_cli_str(ev, "at")),
               dash(gq_cli_str(ev, "id")), dash(gq_cli_str(ev, "class")),
               dash(gq_cli_str(ev, "state")));
        json_object_foreach(ev, key, v) {
            char *text;
            if (!strcmp(key, "at") || !strcmp(key, "id") ||
                !strcmp(key, "class") || !strcmp(key, "state"))
                continue;
            text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (json_is_string(v))
                printf(" %s=%s", key, json_string_value(v));
            else
                printf(" %s=%s", key, text ? text : "?");
            free(text);
        }
        if (event[0] && strcmp(event, "job") != 0)
            printf(" event=%s", event);
        putchar('\n');
    }
    fflush(stdout);
    state = gq_cli_str(ev, "state");
    if (w->job && gq_cli_terminal(state)) {
        const char *id = gq_cli_str(ev, "id");
        end = id && strcmp(id, w->job) == 0;
    }
    json_decref(ev);
    return end;
}

/* gpuq_event_fn of the watch: one event of the stream. */
static int
watch_event(const char *event, const char *data, size_t len, void *ud)
{
    struct watch *w = ud;

    if (!data) {
        gq_cli_errf("event over %d bytes skipped", GPUQ_EVENT_MAX);
        w->done = 0;
        return 0;
    }
    w->done = watch_print(w, event, data, len);
    return w->done;
}

/*
 * watch --job: checks the job first, so a watch of a job that is already
 * terminal (or unknown) ends at once.  Returns -1 to go on watching, or
 * an exit code after printing the job's last state as an event line.
 */
static int
job_done(struct gq_cli *c, struct watch *w)
{
    struct gpuq_response r;
    json_t *job = NULL, *ev;
    char *text;
    int code;

    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, gpuq_client_get(c->client, w->job, 0, &r), &r, &job);
    if (code != GQ_EXIT_OK)
        return code;
    gpuq_response_free(&r);
    if (!gq_cli_terminal(gq_cli_str(job, "state"))) {
        json_decref(job);
        return -1;
    }
    ev = json_pack("{s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "id",
                   json_object_get(job, "id"), "class",
                   json_object_get(job, "class"), "state",
                   json_object_get(job, "state"), "at",
                   json_object_get(job, "finished_at"), "attempts",
                   json_object_get(job, "attempts"), "kind",
                   json_object_get(job, "kind"));
    json_decref(job);
    text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!text) {
        gq_cli_errf("out of memory");
        return GQ_EXIT_HTTP;
    }
    watch_print(w, "", text, strlen(text));
    free(text);
    return GQ_EXIT_OK;
}

int
gq_cmd_watch(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"class", required_argument, 0, 'c'},
        {"job", required_argument, 0, 'j'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    struct watch w;
    struct gpuq_response r;
    const char *cls = NULL;
    char esc[512];
    int ch, code, err;

    memset(&w, 0, sizeof(w));
    w.c = c;
    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'c':
            cls = optarg;
            break;
        case 'j':
            w.job = optarg;
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                return code;
        }
    }
    if (optind != argc)
        return gq_cli_usage(c, "unexpected argument '%s'", argv[optind]);
    if (cls && gq_cli_esc(cls, esc, sizeof(esc)) < 0)
        return gq_cli_usage(c, "--class too long");
    if (w.job && gq_cli_esc(w.job, esc, sizeof(esc)) < 0)
        return gq_cli_usage(c, "--job too long");
    if (w.job) {
        code = job_done(c, &w);
        if (code >= 0)
            return code;
    }
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    err = gq_cli_reply(gpuq_client_events(c->client, cls, w.job, watch_event,
                                          &w, &r),
                       &r, NULL);
    if (err != 0)
        return gq_cli_report(c, err, &r);
    if (r.status < 200 || r.status > 299) {
        code = gq_cli_report(c, 0, &r);
        gpuq_response_free(&r);
        return code;
    }
    gpuq_response_free(&r);
    if (!w.done)
        gq_cli_errf("the server closed the event stream");
    return GQ_EXIT_OK;
}

int
gq_cmd_drain(struct gq_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"deadline", required_argument, 0, 'd'},
        GQ_CLI_GLOBAL_OPTS,
        {0, 0, 0, 0},
    };
    struct gpuq_response r;
    json_t *reply = NULL;
    double secs, deadline = -1;
    int ch, code;

    for (;;) {
        ch = getopt_long(argc, argv, "h", opts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'd':
            if (gq_cli_parse_secs(optarg, &secs) < 0)
                return gq_cli_usage(c, "--deadline wants seconds >= 0");
            deadline = secs;
            break;
        default:
            code = gq_cli_global_opt(c, ch, optarg);
            if (code >= 0)
                return code;
        }
    }
    if (optind != argc)
        return gq_cli_usage(c, "unexpected argument '%s'", argv[optind]);
    code = gq_cli_connect(c);
    if (code != GQ_EXIT_OK)
        return code;
    code = gq_cli_do(c, gpuq_client_drain(c->client, deadline, &r), &r,
                     &reply);
    if (code != GQ_EXIT_OK)
        return code;
    if (c->json)
        gq_cli_print(c, &r, reply);
    else
        printf("draining\n");
    json_decref(reply);
    gpuq_response_free(&r);
    return GQ_EXIT_OK;
}
