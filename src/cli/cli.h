/*
 * cli.h - what the gpuq commands share: the exit codes, the per-run
 * context (server URL, --json, --timeout), the command table's entry type,
 * and helpers that turn libgpuq's results into messages and exit codes.
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

#include <gpuq.h>

#define GQ_CLI_VERSION GPUQ_VERSION
#define GQ_CLI_DEFAULT_URL GPUQ_DEFAULT_URL
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
    struct gpuq_client *client; /* made by gq_cli_connect; main frees it */
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
 * Makes c->client for c->url, with c->timeout_s, unless made already.
 * Returns 0, or an exit code after saying why (2 for a bad URL, 1 when
 * out of memory).
 */
int gq_cli_connect(struct gq_cli *c);

/*
 * The result rc of a libgpuq call on c->client in the CLI's terms:
 * returns 0 when a reply came, whatever its status (rc 0, GPUQ_EHTTP or
 * GPUQ_EPROTO; see r->status), with *out (if out is not NULL) its parsed
 * JSON or NULL when it had none; the caller frees both.  Otherwise
 * returns rc, with the reason in gpuq_client_errmsg, and leaves *out
 * NULL.
 */
int gq_cli_reply(int rc, const struct gpuq_response *r, json_t **out);

/*
 * gq_cli_reply for the common case: returns 0 on a 2xx reply (whose body,
 * if any, is JSON), otherwise prints why and returns the exit code (1 for
 * an HTTP error, 3 when the server could not be reached, 2 for a bad
 * URL).  r and *out as above; on failure both are already freed.
 */
int gq_cli_do(struct gq_cli *c, int rc, struct gpuq_response *r,
              json_t **out);

/*
 * Prints why a call failed (err from gq_cli_reply, or 0 and an error
 * reply in r) and returns the matching exit code.
 */
int gq_cli_report(struct gq_cli *c, int err, const struct gpuq_response *r);

/* Prints a reply: its raw body under --json, else pretty JSON. */
void gq_cli_print(const struct gq_cli *c, const struct gpuq_response *r,
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

/* 1 when s is valid UTF-8 (what JSON strings must be). */
int gq_cli_utf8(const char *s);

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
