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
    if (c->client)
        return GQ_EXIT_OK;
    if (gpuq_url_check(c->url) != 0) {
        gq_cli_errf("bad server URL '%s': want http://HOST:PORT", c->url);
        return GQ_EXIT_USAGE;
    }
    /* The API token comes from the environment only, so it never shows
     * in ps (GPUQ_TOKEN is the lease token `gpuq worker` gives CMD). */
    const char *tok = getenv("GPUQ_API_TOKEN");
    c->client = gpuq_client_new(c->url, tok && tok[0] ? tok : NULL);
    if (!c->client) {
        gq_cli_errf("%s: out of memory", c->url);
        return GQ_EXIT_HTTP;
    }
    gpuq_client_set_timeout(c->client, c->timeout_s);
    return GQ_EXIT_OK;
}

int
gq_cli_reply(int rc, const struct gpuq_response *r, json_t **out)
{
    if (out)
        *out = NULL;
    if (rc != 0 && rc != GPUQ_EHTTP && rc != GPUQ_EPROTO)
        return rc;
    if (out && r->len > 0)
        *out = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
    return 0;
}

int
gq_cli_report(struct gq_cli *c, int err, const struct gpuq_response *r)
{
    const char *why = c->client ? gpuq_client_errmsg(c->client) : "";

    switch (err) {
    case 0:
        break;
    case GPUQ_EURL:
        gq_cli_errf("bad server URL '%s': %s", c->url, why);
        return GQ_EXIT_USAGE;
    case GPUQ_EINVAL:
        gq_cli_errf("%s", why);
        return GQ_EXIT_USAGE;
    case GPUQ_ETOOBIG:
    case GPUQ_ENOMEM:
        gq_cli_errf("%s: %s", c->url, why);
        return GQ_EXIT_HTTP;
    default:
        gq_cli_errf("cannot reach gpuqd at %s: %s", c->url, why);
        return GQ_EXIT_CONN;
    }
    if (r->error_code || r->error_message)
        fprintf(stderr, "gpuq: HTTP %ld %s: %s", r->status,
                r->error_code ? r->error_code : "error",
                r->error_message ? r->error_message : "(no message)");
    else
        fprintf(stderr, "gpuq: HTTP %ld: %.200s", r->status,
                r->body ? r->body : "(no body)");
    if (r->error_field)
        fprintf(stderr, " (field: %s)", r->error_field);
    if (r->retry_after >= 0)
        fprintf(stderr, " (retry after %lds)", r->retry_after);
    fputc('\n', stderr);
    return GQ_EXIT_HTTP;
}

int
gq_cli_do(struct gq_cli *c, int rc, struct gpuq_response *r, json_t **out)
{
    int err = gq_cli_reply(rc, r, out), code = GQ_EXIT_OK;

    if (err != 0 || r->status < 200 || r->status > 299)
        code = gq_cli_report(c, err, r);
    else if (r->len > 0 && !*out) {
        /* libgpuq's typed calls check that a 2xx body is JSON. */
        gq_cli_errf("%s", rc == GPUQ_EPROTO ? gpuq_client_errmsg(c->client)
                                            : "malformed reply");
        code = GQ_EXIT_HTTP;
    }
    if (code != GQ_EXIT_OK) {
        json_decref(*out);
        *out = NULL;
        gpuq_response_free(r);
    }
    return code;
}

void
gq_cli_print(const struct gq_cli *c, const struct gpuq_response *r,
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
    return gpuq_escape(s, buf, len) == 0 ? 0 : -1;
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
gq_cli_utf8(const char *s)
{
    json_t *v = json_string(s); /* NULL for invalid UTF-8 */

    json_decref(v);
    return v != NULL;
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
