/*
 * sched.h - the scheduling policy, pure: no I/O, no clock of its own.
 *
 * The caller passes the time (microseconds, any monotonic origin) into
 * every call that needs it, so tests drive the policy with a fake clock.
 *
 * Decision rule (doc/scheduling.md has worked examples):
 *  1. Only ready jobs count: queued, not in backoff, and servable (the
 *     caller's callback says whether something can run the head job now,
 *     e.g. a worker is waiting for its class).
 *  2. The highest class priority tier with ready work wins, strictly.
 *  3. In the tier, the class that has had max_consecutive grants in a row
 *     is skipped while another class of the tier has ready work.
 *  4. Of the rest, the class with the least virtual time goes.  A grant
 *     adds duration/weight (share_by time) or 1/weight (share_by grants)
 *     to its class; a class that becomes active after being idle starts
 *     at the tier's current minimum, so idling banks no credit.
 *  5. In the class: higher job priority first, then submission order.
 * Each pick costs O(classes + log jobs).
 */
#ifndef GQ_SCHED_H
#define GQ_SCHED_H

#include <stdint.h>

#include "job.h"

#define GQ_NAME_MAX 64
#define GQ_MAX_CLASSES 64
#define GQ_MAX_SLOTS 256

enum gq_share_by {
    GQ_SHARE_TIME = 0,
    GQ_SHARE_GRANTS = 1,
};

/* One class's policy.  Times are seconds (as in the config file). */
struct gq_class_conf {
    char name[GQ_NAME_MAX];
    int priority;           /* tier; higher goes strictly first */
    double weight;          /* share of GPU within the tier, > 0 */
    int max_consecutive;    /* cap on grants in a row; 0 = none */
    int max_queue;          /* queued jobs beyond which submits get 429 */
    double queue_timeout;   /* seconds a job may wait; 0 = forever */
    double lease_ttl;       /* seconds a grant lives without heartbeat */
    int max_attempts;       /* grants before a failing job is dead */
};

/* What /v1/status shows of a class. */
struct gq_class_stats {
    uint32_t ready;         /* queued and not in backoff */
    uint32_t backoff;       /* queued, waiting out a backoff */
    uint32_t running;       /* holding a slot */
    int64_t oldest_enq_us;  /* enqueue time of its oldest ready job; 0 */
    double vtime;           /* virtual time */
    double share;           /* achieved share of its tier, 0..1 */
    uint64_t grants;        /* grants since start */
    double granted_s;       /* GPU seconds of finished grants */
    uint32_t streak;        /* grants in a row, if it was the last */
};

struct gq_sched;

/* Says whether something can run this job now (nonzero = yes). */
typedef int (*gq_servable_fn)(void *ud, const struct gq_job *head);

/*
 * Creates a scheduler for nclasses classes (copied) and slots slots.
 * Returns NULL on bad arguments (no classes, a weight <= 0, slots out of
 * 1..GQ_MAX_SLOTS, duplicate names) or no memory; msg (may be NULL) gets
 * the reason.  seed feeds the treap's balancing, not the policy.
 */
struct gq_sched *gq_sched_new(const struct gq_class_conf *classes,
                              int nclasses, int slots,
                              enum gq_share_by share_by, uint32_t seed,
                              char *msg, int msglen);
void gq_sched_free(struct gq_sched *s);

/* Class index by name, or GQ_ENOCLASS. */
int gq_sched_class(const struct gq_sched *s, const char *name);
int gq_sched_nclasses(const struct gq_sched *s);
const struct gq_class_conf *gq_sched_conf(const struct gq_sched *s,
                                          int cls);
int gq_sched_nslots(const struct gq_sched *s);
int gq_sched_free_slots(const struct gq_sched *s);
/* The job holding slot i, or NULL. */
struct gq_job *gq_sched_slot(const struct gq_sched *s, int i);

/*
 * Queues j (state GQ_QUEUED, unlinked).  If j->ready_at_us > now it waits
 * in backoff until then; if j->deadline_us is set it expires then.  Sets
 * j->enq_us = now.
 */
void gq_sched_enqueue(struct gq_sched *s, struct gq_job *j, int64_t now);
/* Unlinks a queued job (cancel, expiry); no-op for one not queued. */
void gq_sched_remove(struct gq_sched *s, struct gq_job *j);

/*
 * Picks and grants the next job if a slot is free and a servable job is
 * ready: unlinks it, sets state RUNNING, slot, grant_us = now and counts
 * the grant.  Returns NULL when nothing can start.  servable may be NULL
 * (everything is servable).
 */
struct gq_job *gq_sched_pick(struct gq_sched *s, int64_t now,
                             gq_servable_fn servable, void *ud);
/*
 * Ends j's grant at now: frees its slot and charges its class.  The
 * caller then sets the job's new state (and re-enqueues it if it goes
 * back to the queue).
 */
void gq_sched_release(struct gq_sched *s, struct gq_job *j, int64_t now);

/*
 * Batched grants.  A backend that serves several requests at once can
 * share one grant among jobs of the holder's class: gq_sched_ride pops
 * the next ready job of class cls (if servable) and marks it running
 * without a slot of its own (slot -1).  Riders do not count towards the
 * tier's streak; their GPU time is charged to the class as usual when
 * released.  Returns NULL when the class has nothing ready.
 */
struct gq_job *gq_sched_ride(struct gq_sched *s, int cls, int64_t now,
                             gq_servable_fn servable, void *ud);
/* Moves the slot held by `from` to `to` (a rider of the same grant), so
 * the grant lives on after its first holder ends; `from` becomes a
 * rider. */
void gq_sched_handover(struct gq_sched *s, struct gq_job *from,
                       struct gq_job *to);

/*
 * Re-attaches a job that is running at start-up (or after a store
 * resync) to slot; returns GQ_EINVAL if the slot is taken or bad.
 */
int gq_sched_attach(struct gq_sched *s, struct gq_job *j, int slot,
                    int64_t now);

/* Earliest time at which tick has work (backoff end or deadline), or 0. */
int64_t gq_sched_next_timer(const struct gq_sched *s);
/* Moves jobs whose backoff has ended into the ready queues. */
void gq_sched_tick(struct gq_sched *s, int64_t now);
/* Unlinks and returns one queued job whose deadline has passed, or NULL;
 * call until NULL. */
struct gq_job *gq_sched_pop_expired(struct gq_sched *s, int64_t now);

/*
 * Why a queued job waits, and its 1-based position among the ready jobs
 * of its class (0 while in backoff).
 */
enum gq_reason gq_sched_reason(const struct gq_sched *s,
                               const struct gq_job *j, uint32_t *position);

/* Stops granting (drain); pick returns NULL from now on. */
void gq_sched_set_draining(struct gq_sched *s, int on);
int gq_sched_draining(const struct gq_sched *s);

void gq_sched_stats(const struct gq_sched *s, int cls,
                    struct gq_class_stats *out);
/* Queued jobs of a class, ready and in backoff. */
uint32_t gq_sched_queued(const struct gq_sched *s, int cls);

#endif
