/*
 * main.c - gpuq, the command-line client of gpuqd.  It speaks only the
 * public HTTP API (doc/api.md), through libgpuq (include/gpuq.h);
 * doc/cli.md is its manual.
 *
 * main() reads the global options, finds the command in the table below
 * and runs it; the command's return value is the exit code.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int cmd_help(struct gq_cli *c, int argc, char **argv);

static const struct gq_cmd cmds[] = {
    {"submit", gq_cmd_submit,
     "CLASS [--payload JSON|@FILE] [--meta K=V]... [--priority N] [--key K]"
     " [--queue-timeout S] [--wait]",
     "Submit a job and print it; --wait waits for it to finish.",
     "  --payload JSON|@FILE|@-  the job's payload (any JSON; @- = stdin)\n"
     "  --meta K=V               a metadata entry (repeatable)\n"
     "  --priority N             -1000..1000, higher first in its class\n"
     "  --key K                  idempotency key (a resubmit returns the"
     " same job)\n"
     "  --queue-timeout S        give up if not started in S seconds"
     " (0 = never)\n"
     "  --wait                   wait until the job is terminal; exit 4"
     " unless it succeeded\n"},
    {"get", gq_cmd_get, "ID", "Print a job, with its history.", ""},
    {"ls", gq_cmd_ls,
     "[--class C] [--state S] [--limit N] [--after ID] [--all]",
     "List jobs in id order.",
     "  --class C    only jobs of class C\n"
     "  --state S    only jobs in state S (queued, running, succeeded, ...)\n"
     "  --limit N    jobs per page, 1..1000 (server default 100)\n"
     "  --after ID   start after job ID (the \"next\" of a previous page)\n"
     "  --all        follow the pages to the end\n"},
    {"cancel", gq_cmd_cancel, "ID", "Cancel a queued or running job.", ""},
    {"requeue", gq_cmd_requeue, "ID",
     "Put a failed, dead, expired or cancelled job back in its queue.", ""},
    {"status", gq_cmd_status, "",
     "Show the GPU slots and the per-class scheduling state.", ""},
    {"watch", gq_cmd_watch, "[--class C] [--job ID]",
     "Print one line per job state change as it happens.",
     "  --class C    only events of class C\n"
     "  --job ID     only events of job ID; ends when the job is terminal\n"},
    {"drain", gq_cmd_drain, "[--deadline S]",
     "Make the daemon grant nothing new, let holders finish, then exit.",
     "  --deadline S   seconds holders get before the daemon exits\n"},
    {"lock", gq_cmd_lock,
     "CLASS [--holder NAME] [--wait S] [--meta K=V]... [--priority N]"
     " -- CMD [ARG]...",
     "Hold a GPU lock of CLASS while CMD runs; exit with CMD's status.",
     "  --holder NAME   who holds it (default user@host)\n"
     "  --wait S        wait at most S seconds for the lock, 0..3600\n"
     "                  (default: the server's, 30); exit 6 when it runs out\n"
     "  --meta K=V      a metadata entry of the lock job (repeatable)\n"
     "  --priority N    the lock job's priority in its class\n"
     "CMD gets GPUQ_LOCK_ID, GPUQ_LOCK_TOKEN and GPUQ_JOB_ID.  SIGINT, "
     "SIGTERM\nand SIGHUP are passed on to CMD.  If the lock is lost CMD "
     "gets SIGTERM\n(SIGKILL 10 s later) and gpuq exits 5.\n"},
    {"worker", gq_cmd_worker,
     "--class C [--class C2]... [--name N] [--wait S] [--once]"
     " [--max-jobs N] -- CMD [ARG]...",
     "Take jobs of the classes and run CMD for each.",
     "  --class C      a class to serve (repeatable, at least one)\n"
     "  --name N       worker name reported to the server (default"
     " user@host:pid)\n"
     "  --wait S       long-poll length, 1..300 seconds (default 30)\n"
     "  --once         handle one job, then exit\n"
     "  --max-jobs N   handle N jobs, then exit\n"
     "CMD reads the payload JSON on stdin; it gets GPUQ_JOB_ID, "
     "GPUQ_JOB_CLASS,\nGPUQ_ATTEMPT, GPUQ_LEASE_ID, GPUQ_TOKEN and GPUQ_URL. "
     " Exit 0: its stdout\n(JSON, else a string; empty = null) is the "
     "result.  Other exits fail the\njob as exit_N, retryable unless N is "
     "65 (EX_DATAERR).  SIGINT/SIGTERM:\nfinish the current job, then exit "
     "0; another one (a second or more\nlater) stops CMD and yields the job "
     "back to its queue.\n"},
    {"help", cmd_help, "[COMMAND]", "Show help for gpuq or a command.", ""},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static const struct gq_cmd *
find_cmd(const char *name)
{
    size_t i;

    for (i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

static void
usage(FILE *f)
{
    size_t i;

    fprintf(f, "usage: gpuq [--url URL] [--json] [--timeout S] COMMAND "
               "[ARGS]\n\nCommands:\n");
    for (i = 0; i < NCMDS; i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f,
            "\nGlobal options (before or after the command):\n"
            "  --url URL    the daemon (default $GPUQ_URL, else %s)\n"
            "               (an API token is read from $GPUQ_API_TOKEN)\n"
            "  --json       print the server's JSON instead of tables\n"
            "  --timeout S  limit of each ordinary request, seconds "
            "(default %d; 0 = none)\n"
            "  -h, --help   help (gpuq COMMAND --help for a command's)\n"
            "  --version    print the version\n"
            "\nExit codes:\n"
            "  0  success\n"
            "  1  the server answered with an error (its message is"
            " printed)\n"
            "  2  usage error\n"
            "  3  cannot reach the server (or it did not answer in time)\n"
            "  4  submit --wait: the job ended other than succeeded\n"
            "  5  lock/worker: the lock or lease was lost\n"
            "  6  lock: the wait for the lock timed out\n"
            "  lock: otherwise CMD's exit status (128+N if killed by"
            " signal N)\n",
            GQ_CLI_DEFAULT_URL, GQ_CLI_DEFAULT_TIMEOUT);
}

static int
cmd_help(struct gq_cli *c, int argc, char **argv)
{
    const struct gq_cmd *cmd;

    if (argc < 2) {
        usage(stdout);
        return GQ_EXIT_OK;
    }
    cmd = find_cmd(argv[1]);
    if (!cmd)
        return gq_cli_usage(c, "unknown command '%s'", argv[1]);
    c->cmd = cmd;
    return gq_cli_help(c);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {GQ_CLI_GLOBAL_OPTS, {0, 0, 0, 0}};
    struct gq_cli c;
    char name[64];
    const char *env = getenv("GPUQ_URL");
    int ch, code;

    memset(&c, 0, sizeof(c));
    c.url = env && env[0] ? env : GQ_CLI_DEFAULT_URL;
    c.timeout_s = GQ_CLI_DEFAULT_TIMEOUT;
    c.cmd = NULL; /* until the command word; main handles -h itself */

    /* Global options up to the command word ("+": stop there). */
    for (;;) {
        ch = getopt_long(argc, argv, "+h", opts, NULL);
        if (ch == -1)
            break;
        if (ch == 'h') {
            usage(stdout);
            return GQ_EXIT_OK;
        }
        if (ch == '?' || ch == ':') {
            usage(stderr);
            return GQ_EXIT_USAGE;
        }
        code = gq_cli_global_opt(&c, ch, optarg);
        if (code >= 0)
            return code;
    }
    if (optind >= argc) {
        usage(stderr);
        return GQ_EXIT_USAGE;
    }
    c.cmd = find_cmd(argv[optind]);
    if (!c.cmd) {
        gq_cli_errf("unknown command '%s'", argv[optind]);
        usage(stderr);
        return GQ_EXIT_USAGE;
    }
    argc -= optind;
    argv += optind;
    /* getopt's messages then read "gpuq submit: unrecognized ...". */
    snprintf(name, sizeof(name), "gpuq %s", c.cmd->name);
    argv[0] = name;
    optind = 0; /* a full getopt restart for the command's options */
    code = c.cmd->fn(&c, argc, argv);
    gpuq_client_free(c.client);
    if (fflush(stdout) != 0 && code == GQ_EXIT_OK) {
        gq_cli_errf("cannot write output");
        code = GQ_EXIT_HTTP;
    }
    return code;
}
