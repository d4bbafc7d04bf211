/*
 * sig.h - signals for the commands that run a child (lock, worker): a
 * self-pipe that turns SIGINT, SIGTERM, SIGHUP and SIGCHLD into records a
 * poll() loop can read, and a count of stop requests that libgpuq's
 * abort callback can watch to end a long-poll.
 */
#ifndef GQ_CLI_SIG_H
#define GQ_CLI_SIG_H

#include <signal.h>

/*
 * SIGINT, SIGTERM and SIGHUP received since gq_sig_install; a burst
 * within a second counts once.
 */
extern volatile sig_atomic_t gq_sig_stop;

/*
 * Installs the handlers (SIGPIPE is ignored: a child that exits early
 * must not kill us while we write its stdin).  Returns 0, or -1 with
 * errno set.  Call once.
 */
int gq_sig_install(void);

/* The self-pipe's read end, for poll(); -1 before gq_sig_install. */
int gq_sig_fd(void);

/*
 * Takes one pending record.  Returns 1 and fills *signo and *from_kernel
 * (1 when the kernel sent it, e.g. ^C on the terminal, rather than
 * another process with kill(2)), or 0 when none is pending.
 */
int gq_sig_read(int *signo, int *from_kernel);

/*
 * A gpuq_abort_fn (ud unused): non-zero once gq_sig_stop is, so that a
 * stop signal ends a long-poll of libgpuq.
 */
int gq_sig_abort(void *ud);

/*
 * In a forked child, before exec: restores every signal gq_sig_install
 * touched to its default and unblocks all signals.  Async-signal-safe.
 */
void gq_sig_child_reset(void);

#endif
