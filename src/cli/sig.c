/*
 * sig.c - the self-pipe trick: each handled signal writes a two-byte
 * record {signo, from_kernel} to a non-blocking pipe that the run loop
 * polls, so no signal is lost between a check and a poll().
 */
#include "sig.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t gq_sig_stop;

static int sigpipe[2] = {-1, -1};
static const int handled[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};

/*
 * Stop signals closer than this to the last counted one count once: some
 * supervisors (timeout(1), for one) signal both the process and its
 * group, and a worker must not read that as a second, forcing ^C.
 */
#define STOP_DEBOUNCE_MS 1000

static long long last_stop_ms = -STOP_DEBOUNCE_MS;

static void
on_signal(int signo, siginfo_t *info, void *uctx)
{
    int saved = errno;
    unsigned char rec[2];
    struct timespec ts;
    long long now;

    (void)uctx;
    if (signo != SIGCHLD) {
        clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
        now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (gq_sig_stop == 0 || now - last_stop_ms >= STOP_DEBOUNCE_MS) {
            gq_sig_stop++;
            last_stop_ms = now;
        }
    }
    rec[0] = (unsigned char)signo;
    rec[1] = info && info->si_code == SI_KERNEL;
    if (sigpipe[1] >= 0 && write(sigpipe[1], rec, sizeof(rec)) < 0) {
        /* Pipe full: the loop has records to read anyway. */
    }
    errno = saved;
}

int
gq_sig_install(void)
{
    struct sigaction sa;
    size_t i;

    if (pipe2(sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        sigaddset(&sa.sa_mask, handled[i]); /* handlers never nest */
    for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        if (sigaction(handled[i], &sa, NULL) < 0)
            return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

int
gq_sig_fd(void)
{
    return sigpipe[0];
}

int
gq_sig_read(int *signo, int *from_kernel)
{
    unsigned char rec[2];

    /* Records are written whole (2 bytes < PIPE_BUF), so read whole. */
    if (sigpipe[0] < 0 || read(sigpipe[0], rec, sizeof(rec)) != 2)
        return 0;
    *signo = rec[0];
    *from_kernel = rec[1];
    return 1;
}

void
gq_sig_child_reset(void)
{
    struct sigaction sa;
    sigset_t all;
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        sigaction(handled[i], &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

int
gq_sig_abort(void *ud)
{
    (void)ud;
    return gq_sig_stop != 0;
}
