/*
 * workq.h - a small thread pool for heavy CPU work (audio decoding,
 * resampling) kept off the daemon's event loop (prefix gq_workq_).
 *
 * work(arg) runs on a pool thread; done(arg) runs afterwards on the loop
 * thread, in the loop's own turn.  Completions reach the loop through an
 * eventfd watched by an ordinary event plus a mutex-protected list, so
 * the event_base needs no evthread_use_pthreads().
 *
 * Every submitted job gets its done callback exactly once, even when the
 * queue is freed before the job ran (see gq_workq_free), so done is the
 * one place to release arg.
 *
 * The eventfd's event stays added while the queue lives, so
 * event_base_dispatch does not return for lack of events until
 * gq_workq_free (the daemon ends its loop with loopbreak/loopexit).
 */
#ifndef GQ_EXEC_WORKQ_H
#define GQ_EXEC_WORKQ_H

#include <event2/event.h>

#define GQ_WORKQ_MAX_THREADS 64

struct gq_workq;

/*
 * Starts nthreads pool threads (<= 0: one per online CPU; at most
 * GQ_WORKQ_MAX_THREADS) whose completions are delivered on base (not
 * owned; must outlive the queue).  The threads block every signal, so
 * signals keep going to the loop thread.  Returns NULL when a thread,
 * the eventfd or memory cannot be had.
 */
struct gq_workq *gq_workq_new(struct event_base *base, int nthreads);

/*
 * Queues a job: work(arg) on a pool thread, then done(arg) on the loop
 * thread.  Jobs start in submission order (several run at once).  Safe
 * from any thread, including from inside work or done.  The queue is not
 * bounded: callers bound what they submit.  Returns 0, GQ_EINVAL (no
 * work or no done), GQ_ENOMEM, or GQ_ESTATE while the queue is being
 * freed.
 */
int gq_workq_submit(struct gq_workq *q, void (*work)(void *arg),
                    void (*done)(void *arg), void *arg);

/*
 * Stops the pool: waits for the jobs running now to finish, does NOT run
 * the jobs still queued, then calls - on the calling thread, before
 * returning - done for every job not yet delivered: first the finished
 * ones, then the skipped ones (whose work never ran; a job that needs to
 * know records in arg whether work ran).  Frees q.  NULL is a no-op.
 * Call it on the loop thread, not from inside a done callback.
 */
void gq_workq_free(struct gq_workq *q);

/* Jobs submitted whose done has not run yet (queued, running or
 * finished-undelivered). */
int gq_workq_pending(struct gq_workq *q);

#endif
