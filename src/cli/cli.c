/*
 * cli.c - helpers the gpuq commands share: global options, usage and
 * error messages, API calls with their error reporting, and parsing and
 * formatting of small values.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"

void
gq_cli_errf(const char *fmt, ...)
{
    va_list ap;

    fputs("gpuq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* cmd is NULL before the command word is read. */
static void
print_synopsis(FILE *f, const struct gq_cmd *cmd)
{
    if (!cmd)
        fprintf(f, "usage: gpuq [--url URL] [--json] [--timeout S] COMMAND"
                   " [ARGS]\n");
    else
        fprintf(f, "usage: gpuq [--url URL] [--json] [--timeout S] %s%s%s\n",
                cmd->name, cmd->args[0] ? " " : "", cmd->args);
}

int
gq_cli_help(const struct gq_cli *c)
{
    print_synopsis(stdout, c->cmd);
    if (!c->cmd)
        return GQ_EXIT_OK;
    printf("%s\n", c->cmd->summary);
    if (c->cmd->help[0])
        printf("\n%s", c->cmd->help);
    printf("\nGlobal options: --url URL (default $GPUQ_URL or %s), --json,\n"
           "--timeout S (default %d), -h/--help, --version.  "
           "Exit codes: gpuq --help.\n",
           GQ_CLI_DEFAULT_URL, GQ_CLI_DEFAULT_TIMEOUT);
    return GQ_EXIT_OK;
}

int
gq_cli_usage(const struct gq_cli *c, const char *fmt, ...)
{
    va_list ap;

    fputs("gpuq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_synopsis(stderr, c->cmd);
    fprintf(stderr, "(gpuq %s%s--help for more)\n",
            c->cmd ? c->cmd->name : "", c->cmd ? " " : "");
    return GQ_EXIT_USAGE;
}

int
gq_cli_global_opt(struct gq_cli *c, int ch, const char *arg)
{
    long n;

    switch (ch) {
    case GQ_OPT_URL:
        c->url = arg;
        return -1;
    case GQ_OPT_JSON:
        c->json = 1;
        return -1;
    case GQ_OPT_TIMEOUT:
        if (gq_cli_parse_long(arg, 0, 86400, &n) < 0)
            return gq_cli_usage(c, "--timeout wants whole seconds, 0..86400"
                                   " (0 = no limit), not '%s'", arg);
        c->timeout_s = n;
        return -1;
    case GQ_OPT_VERSION:
        printf("gpuq %s\n", GQ_CLI_VERSION);
        return GQ_EXIT_OK;
    case 'h':
        return gq_cli_help(c);
    default: /* '?' or ':': getopt has printed why */
        print_synopsis(stderr, c->cmd);
        return GQ_EXIT_USAGE;
    }
}

int
gq_cli_connect(struct gq_cli *c)
{
    int err;

    if (c->http_ready)
        return 0;
    err = gq_httpc_init(&c->http, c->url);
    if (err != 0) {
        gq_httpc_close(&c->http);
        snprintf(c->http.errbuf, sizeof(c->http.errbuf), "%s",
                 err == GQ_ENOMEM ? "out of memory" : "want http://HOST:PORT");
        return err;
    }
    c->http_ready = 1;
    return 0;
}

int
gq_cli_call(struct gq_cli *c, const char *method, const char *path,
            json_t *body, long timeout_s, int interruptible,
            struct gq_httpc_resp *r, json_t **out)
{
    char *text = NULL;
    int err;

    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
    if (out)
        *out = NULL;
    err = gq_cli_connect(c);
    if (err != 0)
        return err;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            snprintf(c->http.errbuf, sizeof(c->http.errbuf),
                     "out of memory");
            return GQ_ENOMEM;
        }
    }
    err = gq_httpc_request(&c->http, method, path, text,
                           timeout_s ? timeout_s : c->timeout_s,
                           interruptible, r);
    free(text);
    if (err == 0 && out && r->len > 0)
        *out = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
    return err;
}

int
gq_cli_report(struct gq_cli *c, int err, const struct gq_httpc_resp *r,
              json_t *reply)
{
    json_t *e;
    const char *code, *msg, *field;

    switch (err) {
    case 0:
        break;
    case GQ_EINVAL:
        gq_cli_errf("bad server URL '%s': %s", c->url, c->http.errbuf);
        return GQ_EXIT_USAGE;
    case GQ_ETOOBIG:
    case GQ_ENOMEM:
        gq_cli_errf("%s: %s", c->url, c->http.errbuf);
        return GQ_EXIT_HTTP;
    default:
        gq_cli_errf("cannot reach gpuqd at %s: %s", c->url, c->http.errbuf);
        return GQ_EXIT_CONN;
    }
    e = reply ? json_object_get(reply, "error") : NULL;
    code = gq_cli_str(e, "code");
    msg = gq_cli_str(e, "message");
    field = gq_cli_str(e, "field");
    if (code || msg)
        fprintf(stderr, "gpuq: HTTP %ld %s: %s", r->status,
                code ? code : "error", msg ? msg : "(no message)");
    else
        fprintf(stderr, "gpuq: HTTP %ld: %.200s", r->status,
                r->body ? r->body : "(no body)");
    if (field)
        fprintf(stderr, " (field: %s)", field);
    if (r->retry_after >= 0)
        fprintf(stderr, " (retry after %lds)", r->retry_after);
    fputc('\n', stderr);
    return GQ_EXIT_HTTP;
}

int
gq_cli_do(struct gq_cli *c, const char *method, const char *path,
          json_t *body, long timeout_s, struct gq_httpc_resp *r, json_t **out)
{
    int err, code = GQ_EXIT_OK;

    err = gq_cli_call(c, method, path, body, timeout_s, 0, r, out);
    if (err != 0 || r->status < 200 || r->status > 299)
        code = gq_cli_report(c, err, r, *out);
    else if (r->len > 0 && !*out) {
        gq_cli_errf("malformed reply from %s%s: %.200s", c->url, path,
                    r->body);
        code = GQ_EXIT_HTTP;
    }
    if (code != GQ_EXIT_OK) {
        json_decref(*out);
        *out = NULL;
        gq_httpc_resp_free(r);
    }
    return code;
}

void
gq_cli_print(const struct gq_cli *c, const struct gq_httpc_resp *r,
             json_t *reply)
{
    if (c->json || !reply) {
        if (r->len > 0) {
            fwrite(r->body, 1, r->len, stdout);
            if (r->body[r->len - 1] != '\n')
                putchar('\n');
        }
        return;
    }
    json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
    putchar('\n');
}

int
gq_cli_esc(const char *s, char *buf, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
            ch == '_' || ch == '~') {
            if (k + 1 >= len)
                return -1;
            buf[k++] = (char)ch;
        } else {
            if (k + 3 >= len)
                return -1;
            buf[k++] = '%';
            buf[k++] = hex[ch >> 4];
            buf[k++] = hex[ch & 15];
        }
    }
    if (k >= len)
        return -1;
    buf[k] = '\0';
    return 0;
}

int
gq_cli_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int
gq_cli_parse_secs(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0)
        return -1;
    *out = v;
    return 0;
}

json_t *
gq_cli_json_secs(double s)
{
    /* No floor(): the CLI does not link libm. */
    if (s < 9e15 && (double)(long long)s == s)
        return json_integer((json_int_t)s);
    return json_real(s);
}

int
gq_cli_meta_add(json_t *obj, const char *kv)
{
    const char *eq = strchr(kv, '=');
    char key[256];
    size_t klen;

    if (!eq || eq == kv)
        return -1;
    klen = (size_t)(eq - kv);
    if (klen >= sizeof(key))
        return -1;
    memcpy(key, kv, klen);
    key[klen] = '\0';
    /* json_string refuses invalid UTF-8 (and fails when out of memory). */
    if (json_object_set_new(obj, key, json_string(eq + 1)) != 0)
        return -1;
    return 0;
}

const char *
gq_cli_fmt_ms(long long ms, char *buf, size_t len)
{
    long long s = ms / 1000;

    if (ms < 0)
        snprintf(buf, len, "-");
    else if (ms < 1000)
        snprintf(buf, len, "%lldms", ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, len, "%lldd%02lldh", s / 86400, s / 3600 % 24);
    return buf;
}

const char *
gq_cli_str(json_t *obj, const char *key)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;

    return json_is_string(v) ? json_string_value(v) : NULL;
}

long long
gq_cli_int(json_t *obj, const char *key, long long dflt)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;

    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

int
gq_cli_terminal(const char *state)
{
    static const char *const terminal[] = {
        "succeeded", "failed", "cancelled", "expired", "dead",
    };
    size_t i;

    for (i = 0; state && i < sizeof(terminal) / sizeof(terminal[0]); i++)
        if (strcmp(state, terminal[i]) == 0)
            return 1;
    return 0;
}
