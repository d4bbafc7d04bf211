/*
 * run.c - fork/exec a command and babysit it: pipes, heartbeats, signals
 * and the SIGTERM-then-SIGKILL stop when the grant is lost.
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sig.h"

#define HB_RETRY_MS 2000  /* after a failed heartbeat */
#define DRAIN_MS 2000     /* read pipes this long after CMD exits (its
                           * children may hold them open) */

extern char **environ;

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

int
gq_run_exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

char **
gq_run_env(char *const *add, size_t n)
{
    size_t count = 0, i, j, k = 0;
    char **env;

    while (environ && environ[count])
        count++;
    env = calloc(count + n + 1, sizeof(*env));
    if (!env)
        return NULL;
    for (i = 0; i < count; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nlen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (j = 0; j < n && !replaced; j++)
            replaced = strncmp(add[j], environ[i], nlen) == 0 &&
                       add[j][nlen] == '=';
        if (!replaced)
            env[k++] = environ[i];
    }
    for (j = 0; j < n; j++)
        env[k++] = add[j];
    env[k] = NULL;
    return env;
}

void
gq_run_free(struct gq_run *r)
{
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
}

/* Run-loop state beyond the caller's struct. */
struct loop {
    struct gq_run *r;
    pid_t pid;
    int in_fd, out_fd, err_fd; /* our ends; -1 when closed */
    size_t in_off;             /* bytes of input written */
    size_t out_cap;
    char cur[GQ_RUN_LINE_MAX]; /* stderr line being read */
    size_t cur_len;
};

/* Sends sig to CMD (its whole group when it has its own). */
static void
signal_child(struct loop *l, int sig)
{
    if (l->r->own_pgrp)
        kill(-l->pid, sig);
    else
        kill(l->pid, sig);
}

/* Ends the stderr line in progress: keeps it if it is not blank. */
static void
end_line(struct loop *l)
{
    size_t n = l->cur_len;

    while (n > 0 && (l->cur[n - 1] == '\r' || l->cur[n - 1] == ' ' ||
                     l->cur[n - 1] == '\t'))
        n--;
    if (n > 0) {
        memcpy(l->r->err_line, l->cur, n);
        l->r->err_line[n] = '\0';
    }
    l->cur_len = 0;
}

static void
on_stderr(struct loop *l)
{
    char buf[4096];
    ssize_t n = read(l->err_fd, buf, sizeof(buf)), i;

    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            close_fd(&l->err_fd);
        return;
    }
    if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
        /* Our stderr is gone; keep the last line all the same. */
    }
    for (i = 0; i < n; i++) {
        if (buf[i] == '\n')
            end_line(l);
        else if (l->cur_len + 1 < sizeof(l->cur))
            l->cur[l->cur_len++] = buf[i];
    }
}

static void
on_stdout(struct loop *l)
{
    struct gq_run *r = l->r;
    char buf[16384];
    ssize_t n = read(l->out_fd, buf, sizeof(buf));
    size_t take;

    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            close_fd(&l->out_fd);
        return;
    }
    take = (size_t)n;
    if (r->out_len + take > r->out_max) {
        r->out_overflow = 1;
        take = r->out_max - r->out_len;
    }
    if (take == 0)
        return;
    if (r->out_len + take + 1 > l->out_cap) {
        size_t cap = l->out_cap ? l->out_cap : 16384;
        char *nb;
        while (cap < r->out_len + take + 1)
            cap *= 2;
        nb = realloc(r->out, cap);
        if (!nb) { /* keep what fits, like an overflow */
            r->out_overflow = 1;
            return;
        }
        r->out = nb;
        l->out_cap = cap;
    }
    memcpy(r->out + r->out_len, buf, take);
    r->out_len += take;
    r->out[r->out_len] = '\0';
}

static void
on_stdin(struct loop *l)
{
    struct gq_run *r = l->r;
    ssize_t n;

    if (l->in_off < r->input_len) {
        n = write(l->in_fd, r->input + l->in_off, r->input_len - l->in_off);
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            close_fd(&l->in_fd); /* EPIPE: CMD does not read it */
            return;
        }
        if (n > 0)
            l->in_off += (size_t)n;
    }
    if (l->in_off >= r->input_len)
        close_fd(&l->in_fd);
}

/* In the child: wire up stdio and exec.  Never returns. */
static void
child_exec(struct gq_run *r, int in_r, int out_w, int err_w)
{
    int e;

    if (r->own_pgrp)
        setpgid(0, 0);
    gq_sig_child_reset();
    if (r->capture) {
        if (in_r < 0)
            in_r = open("/dev/null", O_RDONLY);
        if (dup2(in_r, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 ||
            dup2(err_w, STDERR_FILENO) < 0)
            _exit(126);
    }
    /* The pipes are close-on-exec; this also drops our HTTP sockets. */
    close_range(3, ~0U, 0);
    execvpe(r->argv[0], r->argv, r->envp);
    e = errno;
    dprintf(STDERR_FILENO, "gpuq: cannot run %s: %s\n", r->argv[0],
            strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

/* Makes the pipes; our ends are non-blocking.  -1 with errno on failure. */
static int
make_pipes(struct gq_run *r, int in[2], int out[2], int err[2])
{
    if (!r->capture)
        return 0;
    if ((r->input && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
        pipe2(err, O_CLOEXEC) < 0)
        return -1;
    if ((in[1] >= 0 && fcntl(in[1], F_SETFL, O_NONBLOCK) < 0) ||
        fcntl(out[0], F_SETFL, O_NONBLOCK) < 0 ||
        fcntl(err[0], F_SETFL, O_NONBLOCK) < 0)
        return -1;
    return 0;
}

/* Handles pending signal records. */
static void
on_signals(struct loop *l, int exited)
{
    struct gq_run *r = l->r;
    int signo, from_kernel;

    while (gq_sig_read(&signo, &from_kernel)) {
        if (signo == SIGCHLD || exited)
            continue;
        if (r->forward && !from_kernel) {
            kill(l->pid, signo);
        } else if (r->own_pgrp && gq_sig_stop >= 2 && !r->stopped) {
            r->stopped = 1;
            signal_child(l, SIGTERM);
        }
    }
}

int
gq_run_child(struct gq_run *r)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, e;
    struct loop *l;
    long long now, next_hb, last_ok, kill_at = 0, drain_until = 0;
    int exited = 0;

    r->status = 0;
    r->lost = r->stopped = r->out_overflow = 0;
    r->out = NULL;
    r->out_len = 0;
    r->err_line[0] = '\0';
    l = calloc(1, sizeof(*l));
    if (!l)
        return -1;
    l->r = r;
    if (make_pipes(r, in, out, err) < 0)
        goto fail;
    l->pid = fork();
    if (l->pid < 0)
        goto fail;
    if (l->pid == 0)
        child_exec(r, in[0], out[1], err[1]);
    if (r->own_pgrp)
        setpgid(l->pid, l->pid); /* also here: no race with a kill(-pid) */
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    l->in_fd = in[1];
    l->out_fd = out[0];
    l->err_fd = err[0];

    now = now_ms();
    last_ok = now;
    next_hb = now + r->hb_ms;
    for (;;) {
        struct pollfd pfd[4];
        int n = 0, i, timeout;
        pid_t w;

        if (!exited) {
            w = waitpid(l->pid, &r->status, WNOHANG);
            if (w == l->pid) {
                exited = 1;
                drain_until = now_ms() + DRAIN_MS;
                close_fd(&l->in_fd);
            }
        }
        now = now_ms();
        if (exited && (now >= drain_until ||
                       (l->out_fd < 0 && l->err_fd < 0)))
            break;
        if (!exited && !r->lost && now >= next_hb) {
            int hb = r->heartbeat(r->ud);
            now = now_ms();
            if (hb == GQ_HB_OK)
                last_ok = now;
            if (hb == GQ_HB_LOST ||
                (hb != GQ_HB_OK && now - last_ok >= r->lease_ms)) {
                r->lost = 1;
                signal_child(l, SIGTERM);
                kill_at = now + GQ_RUN_KILL_GRACE_MS;
            }
            next_hb = now + (hb == GQ_HB_OK ? r->hb_ms
                             : r->hb_ms < HB_RETRY_MS ? r->hb_ms
                                                      : HB_RETRY_MS);
            continue; /* the heartbeat may have taken a while */
        }
        if (!exited && r->lost && kill_at && now >= kill_at) {
            signal_child(l, SIGKILL);
            kill_at = 0;
        }

        timeout = 1000; /* also a backstop for a lost SIGCHLD */
        if (exited)
            timeout = (int)(drain_until - now);
        else if (!r->lost && next_hb - now < timeout)
            timeout = (int)(next_hb - now);
        else if (kill_at && kill_at - now < timeout)
            timeout = (int)(kill_at - now);
        if (timeout < 0)
            timeout = 0;
        pfd[n++] = (struct pollfd){.fd = gq_sig_fd(), .events = POLLIN};
        if (l->in_fd >= 0)
            pfd[n++] = (struct pollfd){.fd = l->in_fd, .events = POLLOUT};
        if (l->out_fd >= 0)
            pfd[n++] = (struct pollfd){.fd = l->out_fd, .events = POLLIN};
        if (l->err_fd >= 0)
            pfd[n++] = (struct pollfd){.fd = l->err_fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
            goto fail_running;
        for (i = 0; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            if (pfd[i].fd == gq_sig_fd())
                on_signals(l, exited);
            else if (pfd[i].fd == l->in_fd)
                on_stdin(l);
            else if (pfd[i].fd == l->out_fd)
                on_stdout(l);
            else if (pfd[i].fd == l->err_fd)
                on_stderr(l);
        }
    }
    if (l->cur_len > 0)
        end_line(l);
    close_fd(&l->in_fd);
    close_fd(&l->out_fd);
    close_fd(&l->err_fd);
    free(l);
    return 0;

fail_running:
    /* poll itself failed: do not leave CMD running unwatched. */
    e = errno;
    signal_child(l, SIGKILL);
    waitpid(l->pid, &r->status, 0);
    errno = e;
    in[1] = l->in_fd;
    out[0] = l->out_fd;
    err[0] = l->err_fd;
fail:
    e = errno;
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&err[0]);
    close_fd(&err[1]);
    gq_run_free(r);
    free(l);
    errno = e;
    return -1;
}
