/*
 * workq.c - the thread pool of workq.h.
 *
 * One mutex guards a FIFO of queued jobs (the pool threads wait on a
 * condition variable for it) and a FIFO of finished jobs.  A thread that
 * makes the finished list non-empty writes the eventfd; the loop's event
 * reads it, takes the whole list under the mutex and runs the done
 * callbacks outside it, so done may submit more work.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../core/assert.h"
#include "../core/err.h"
#include "workq.h"


struct job {
    void (*work)(void *arg);
    void (*done)(void *arg);
    void *arg;
    struct job *next;
};

struct jlist {
    struct job *head, *tail;
};

struct gq_workq {
    struct event_base *base;
    int efd;                      /* eventfd: finished list became non-empty */
    struct event *ev;             /* EV_READ | EV_PERSIST on efd */
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* queued non-empty, or stop */
    struct jlist queued;          /* under mu */
    struct jlist finished;        /* under mu */
    int stop;                     /* under mu: threads exit */
    int pending;                  /* under mu: submitted, done not run */
    int in_done;                  /* loop thread only */
    int nthreads;                 /* started */
    pthread_t threads[GQ_WORKQ_MAX_THREADS];
};

static void
jl_push(struct jlist *l, struct job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct job *
jl_pop(struct jlist *l)
{
    struct job *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
    }
    return j;
}

static void
wake_loop(struct gq_workq *q)
{
    uint64_t one = 1;
    /* Only fails with EAGAIN at a counter near 2^64: still readable. */
    ssize_t n = write(q->efd, &one, sizeof one);
    (void)n;
}

static void *
worker(void *arg)
{
    struct gq_workq *q = arg;

    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && !q->queued.head)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        struct job *j = jl_pop(&q->queued);
        pthread_mutex_unlock(&q->mu);
        j->work(j->arg);
        pthread_mutex_lock(&q->mu);
        int was_empty = q->finished.head == NULL;
        jl_push(&q->finished, j);
        if (was_empty)
            wake_loop(q);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Runs done for each job of l, in order, and frees them. */
static void
run_dones(struct gq_workq *q, struct job *j)
{
    while (j) {
        struct job *next = j->next;
        pthread_mutex_lock(&q->mu);
        q->pending--;
        pthread_mutex_unlock(&q->mu);
        q->in_done++;
        j->done(j->arg);
        q->in_done--;
        free(j);
        j = next;
    }
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct gq_workq *q = arg;
    uint64_t n;
    struct job *j;
    (void)what;

    /* Read first, then take the list: a job finished after the take
     * writes the eventfd again, so none is stranded. */
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    pthread_mutex_lock(&q->mu);
    j = q->finished.head;
    q->finished.head = q->finished.tail = NULL;
    pthread_mutex_unlock(&q->mu);
    run_dones(q, j);
}

struct gq_workq *
gq_workq_new(struct event_base *base, int nthreads)
{
    struct gq_workq *q;
    sigset_t all, old;

    if (!base)
        return NULL;
    if (nthreads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = n > GQ_WORKQ_MAX_THREADS ? GQ_WORKQ_MAX_THREADS
                   : n > 0                  ? (int)n
                                            : 1;
    }
    if (nthreads > GQ_WORKQ_MAX_THREADS)
        nthreads = GQ_WORKQ_MAX_THREADS;
    q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->base = base;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0) {
        free(q);
        return NULL;
    }
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_event, q);
    if (!q->ev || event_add(q->ev, NULL) != 0 ||
        pthread_mutex_init(&q->mu, NULL) != 0) {
        if (q->ev)
            event_free(q->ev);
        close(q->efd);
        free(q);
        return NULL;
    }
    if (pthread_cond_init(&q->cv, NULL) != 0) {
        pthread_mutex_destroy(&q->mu);
        event_free(q->ev);
        close(q->efd);
        free(q);
        return NULL;
    }
    /* Threads inherit the mask: signals stay with the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (q->nthreads = 0; q->nthreads < nthreads; q->nthreads++)
        if (pthread_create(&q->threads[q->nthreads], NULL, worker, q) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (q->nthreads < nthreads) {
        gq_workq_free(q);
        return NULL;
    }
    return q;
}

int
gq_workq_submit(struct gq_workq *q, void (*work)(void *arg),
                void (*done)(void *arg), void *arg)
{
    struct job *j;

    if (!q || !work || !done)
        return GQ_EINVAL;
    j = malloc(sizeof *j);
    if (!j)
        return GQ_ENOMEM;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&q->mu);
    if (q->stop) {
        pthread_mutex_unlock(&q->mu);
        free(j);
        return GQ_ESTATE;
    }
    jl_push(&q->queued, j);
    q->pending++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int
gq_workq_pending(struct gq_workq *q)
{
    int n;
    if (!q)
        return 0;
    pthread_mutex_lock(&q->mu);
    n = q->pending;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void
gq_workq_free(struct gq_workq *q)
{
    struct job *fin, *skipped;

    if (!q)
        return;
    GQ_ASSERT(q->in_done == 0);
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);

    /* No thread left: the lists are ours.  done may not submit now
     * (GQ_ESTATE), so they cannot grow. */
    fin = q->finished.head;
    skipped = q->queued.head;
    q->finished.head = q->finished.tail = NULL;
    q->queued.head = q->queued.tail = NULL;
    event_free(q->ev);
    close(q->efd);
    run_dones(q, fin);
    run_dones(q, skipped);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
