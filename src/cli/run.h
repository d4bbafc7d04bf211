/*
 * run.h - running a command while holding a grant: fork/exec CMD, feed
 * its stdin, capture its stdout and the last line of its stderr (bounded),
 * heartbeat the grant on a timer, pass signals on, and stop CMD when the
 * grant is lost.  Used by `gpuq lock` and `gpuq worker`.
 *
 * One poll() loop over the self-pipe of sig.h and CMD's pipes; the
 * heartbeat is a blocking call made from the loop, so there are no
 * threads.  gq_sig_install must have been called.
 */
#ifndef GQ_CLI_RUN_H
#define GQ_CLI_RUN_H

#include <stddef.h>
#include <sys/types.h>

#define GQ_RUN_LINE_MAX 1024 /* bytes kept of CMD's last stderr line */
#define GQ_RUN_KILL_GRACE_MS 10000 /* SIGTERM, then SIGKILL this later */

/* Heartbeat results. */
enum {
    GQ_HB_OK = 0,    /* the grant was extended */
    GQ_HB_LOST = 1,  /* the grant is gone (409 / 404) */
    GQ_HB_RETRY = 2, /* no answer this time; try again soon */
};

/*
 * Renews the grant.  Returns a GQ_HB_* value.  Called from the run loop;
 * it should return within a few seconds.
 */
typedef int (*gq_run_hb_fn)(void *ud);

/* Caller-allocated; fill the inputs, call gq_run_child, gq_run_free. */
struct gq_run {
    /* Inputs. */
    char *const *argv;     /* CMD and its arguments, NULL-terminated */
    char *const *envp;     /* CMD's whole environment */
    int own_pgrp;          /* worker: CMD in its own process group, so a
                            * ^C on the terminal reaches only gpuq */
    int forward;           /* lock: pass SIGINT/SIGTERM/SIGHUP sent to us
                            * by kill(2) on to CMD (the terminal's reach
                            * CMD directly) */
    int capture;           /* pipe stdin from input, capture stdout, copy
                            * stderr to ours keeping its last line;
                            * else CMD inherits our stdio */
    const char *input;     /* capture: CMD's stdin (NULL = empty) */
    size_t input_len;
    size_t out_max;        /* capture: stdout bytes kept */
    long hb_ms;            /* heartbeat period */
    long lease_ms;         /* grant lifetime: lost when no heartbeat
                            * succeeded for this long */
    gq_run_hb_fn heartbeat;
    void *ud;

    /* Outputs. */
    int status;            /* CMD's waitpid status */
    int lost;              /* the grant was lost and CMD was stopped */
    int stopped;           /* worker: a second stop signal stopped CMD */
    char *out;             /* capture: stdout, NUL-terminated, malloc'd */
    size_t out_len;
    int out_overflow;      /* stdout was over out_max (the rest dropped) */
    char err_line[GQ_RUN_LINE_MAX]; /* last non-empty stderr line, "" */
};

/*
 * Runs CMD to its end.  Returns 0 when it ran (see status, lost, out),
 * or -1 with errno set when it could not be started (pipe, fork or
 * memory).  A CMD that cannot be exec'd exits 127 (126 if not
 * executable) after saying why on its stderr.
 */
int gq_run_child(struct gq_run *r);

/* Frees what gq_run_child allocated in r. */
void gq_run_free(struct gq_run *r);

/*
 * Describes a waitpid status as an exit code: the exit status, or 128+N
 * when killed by signal N.
 */
int gq_run_exit_code(int status);

/*
 * A malloc'd environment: environ with each "NAME=value" of add (n of
 * them) replacing or adding to it.  The strings stay the caller's and
 * environ's; free only the array.  NULL when out of memory.
 */
char **gq_run_env(char *const *add, size_t n);

#endif
