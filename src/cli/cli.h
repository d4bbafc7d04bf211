/*
 * cli.h - what the gpuq commands share: the exit codes, the per-run
 * context (server URL, --json, --timeout), the command table's entry type,
 * and small helpers for calling the API and printing its replies.
 *
 * Commands return an exit code; only main() exits.  Every message meant
 * for the user goes through gq_cli_errf (stderr, "gpuq: " prefix).
 */
#ifndef GQ_CLI_H
#define GQ_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "http.h"

#define GQ_CLI_VERSION "0.1.0"
#define GQ_CLI_DEFAULT_URL "http://127.0.0.1:7707"
#define GQ_CLI_DEFAULT_TIMEOUT 30 /* seconds per ordinary request */

/* The exit codes, documented in doc/cli.md and `gpuq --help`. */
enum gq_exit {
    GQ_EXIT_OK = 0,      /* success */
    GQ_EXIT_HTTP = 1,    /* the server answered with an error */
    GQ_EXIT_USAGE = 2,   /* bad command line */
    GQ_EXIT_CONN = 3,    /* the server could not be reached (or timed out) */
    GQ_EXIT_NOTOK = 4,   /* submit --wait: the job did not succeed */
    GQ_EXIT_LOST = 5,    /* lock/lease lost (heartbeat refused) */
    GQ_EXIT_TIMEOUT = 6, /* lock: the wait for the lock ran out */
};

struct gq_cli;
typedef int (*gq_cmd_fn)(struct gq_cli *c, int argc, char **argv);

/* One row of the command table in main.c. */
struct gq_cmd {
    const char *name;    /* the word after "gpuq" */
    gq_cmd_fn fn;        /* argv[0] is the command name */
    const char *args;    /* synopsis of its arguments */
    const char *summary; /* one line for `gpuq --help` */
    const char *help;    /* its options, one per line, for `gpuq CMD -h` */
};

/* The per-run context; main() owns it. */
struct gq_cli {
    const char *url;          /* --url, $GPUQ_URL or the default */
    int json;                 /* --json: print the server's JSON */
    long timeout_s;           /* --timeout: limit of ordinary requests */
    const struct gq_cmd *cmd; /* the command being run */
    int http_ready;           /* http is initialised */
    struct gq_httpc http;      /* initialised on first use */
};

/*
 * The global options every command accepts, for getopt_long tables, and
 * their short-option string.  End a command's table with these and
 * {0, 0, 0, 0}; pass every option character it does not know to
 * gq_cli_global_opt.
 */
enum { GQ_OPT_URL = 0x100, GQ_OPT_JSON, GQ_OPT_TIMEOUT, GQ_OPT_VERSION };
#define GQ_CLI_GLOBAL_OPTS                                                  \
    {"url", required_argument, 0, GQ_OPT_URL},                              \
    {"json", no_argument, 0, GQ_OPT_JSON},                                  \
    {"timeout", required_argument, 0, GQ_OPT_TIMEOUT},                      \
    {"version", no_argument, 0, GQ_OPT_VERSION},                            \
    {"help", no_argument, 0, 'h'}

/*
 * Handles a global option (or getopt's '?' / ':').  Returns -1 when it
 * was consumed and parsing should go on, or an exit code to return now
 * (0 after printing help or the version, 2 for a usage error).
 */
int gq_cli_global_opt(struct gq_cli *c, int ch, const char *arg);

/* Prints the current command's usage to stdout; returns 0. */
int gq_cli_help(const struct gq_cli *c);

/* Prints "gpuq: MSG" and the command's synopsis to stderr; returns 2. */
int gq_cli_usage(const struct gq_cli *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "gpuq: MSG\n" to stderr. */
void gq_cli_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Initialises c->http for c->url unless done already.  Returns 0, or
 * GQ_EINVAL (bad URL) / GQ_ENOMEM with the reason in c->http.errbuf.
 */
int gq_cli_connect(struct gq_cli *c);

/*
 * Makes one API call.  body (may be NULL) is serialised, not freed.  The
 * call may take timeout_s (0 = c->timeout_s); interruptible as for
 * gq_httpc_request.  On 0 (a reply came, whatever its status) r holds it
 * and *out (if out is not NULL) its parsed JSON or NULL when it had none;
 * the caller frees both.  Otherwise returns the GQ_E* code of
 * gq_httpc_request, with the reason in c->http.errbuf, and leaves *out
 * NULL.
 */
int gq_cli_call(struct gq_cli *c, const char *method, const char *path,
                json_t *body, long timeout_s, int interruptible,
                struct gq_httpc_resp *r, json_t **out);

/*
 * gq_cli_call for the common case: returns 0 on a 2xx reply, otherwise
 * prints why and returns the exit code (1 for an HTTP error, 3 when the
 * server could not be reached, 2 for a bad URL).  r and *out as above;
 * on failure both are already freed.
 */
int gq_cli_do(struct gq_cli *c, const char *method, const char *path,
              json_t *body, long timeout_s, struct gq_httpc_resp *r,
              json_t **out);

/*
 * Prints why a call failed (err from gq_cli_call, or 0 and an error
 * reply in r/reply) and returns the matching exit code.
 */
int gq_cli_report(struct gq_cli *c, int err, const struct gq_httpc_resp *r,
                  json_t *reply);

/* Prints a reply: its raw body under --json, else pretty JSON. */
void gq_cli_print(const struct gq_cli *c, const struct gq_httpc_resp *r,
                  json_t *reply);

/*
 * Percent-escapes s (a path segment or query value) into buf.  Returns 0,
 * or -1 if it does not fit.
 */
int gq_cli_esc(const char *s, char *buf, size_t len);

/* Parses a whole decimal integer in [min, max]; 0 or -1. */
int gq_cli_parse_long(const char *s, long min, long max, long *out);

/* Parses a number of seconds >= 0 (fractions allowed); 0 or -1. */
int gq_cli_parse_secs(const char *s, double *out);

/* A JSON number for seconds: an integer when whole.  NULL on ENOMEM. */
json_t *gq_cli_json_secs(double s);

/*
 * Adds "K=V" to obj as a string member.  Returns 0, -1 when kv has no '='
 * or an empty key, -2 when out of memory.
 */
int gq_cli_meta_add(json_t *obj, const char *kv);

/* Formats a duration in ms as "850ms", "12.3s", "4m05s", "2h10m". */
const char *gq_cli_fmt_ms(long long ms, char *buf, size_t len);

/* obj[key] as a string, or NULL. */
const char *gq_cli_str(json_t *obj, const char *key);

/* obj[key] as an integer, or dflt when absent or not an integer. */
long long gq_cli_int(json_t *obj, const char *key, long long dflt);

/* 1 when state names a terminal job state. */
int gq_cli_terminal(const char *state);

/* The commands, each in its own file. */
int gq_cmd_submit(struct gq_cli *c, int argc, char **argv);
int gq_cmd_get(struct gq_cli *c, int argc, char **argv);
int gq_cmd_ls(struct gq_cli *c, int argc, char **argv);
int gq_cmd_cancel(struct gq_cli *c, int argc, char **argv);
int gq_cmd_requeue(struct gq_cli *c, int argc, char **argv);
int gq_cmd_status(struct gq_cli *c, int argc, char **argv);
int gq_cmd_watch(struct gq_cli *c, int argc, char **argv);
int gq_cmd_drain(struct gq_cli *c, int argc, char **argv);
int gq_cmd_lock(struct gq_cli *c, int argc, char **argv);
int gq_cmd_worker(struct gq_cli *c, int argc, char **argv);

#endif
