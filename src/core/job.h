/*
 * job.h - the job model: states, wait reasons, the in-memory job and the
 * table that finds jobs by id.
 *
 * Only jobs that are not finished live in memory (queued, in backoff or
 * running), each as a small struct gq_job that carries what scheduling
 * needs.  Payloads, metadata and results stay in the store and are read
 * when a job is granted or asked for.  No I/O here.
 */
#ifndef GQ_JOB_H
#define GQ_JOB_H

#include <stddef.h>
#include <stdint.h>

#define GQ_STATE_MAP(X)                                                     \
    X(QUEUED, "queued")                                                     \
    X(RUNNING, "running")                                                   \
    X(SUCCEEDED, "succeeded")                                               \
    X(FAILED, "failed")                                                     \
    X(CANCELLED, "cancelled")                                               \
    X(EXPIRED, "expired")                                                   \
    X(DEAD, "dead")

enum gq_state {
#define X(n, s) GQ_##n,
    GQ_STATE_MAP(X)
#undef X
    GQ_NSTATES
};

#define GQ_REASON_MAP(X)                                                    \
    X(NONE, "none")                                                         \
    X(GPU_BUSY, "gpu_busy")                                                 \
    X(PRIORITY, "priority")                                                 \
    X(SHARE, "share")                                                       \
    X(CAP, "cap")                                                           \
    X(BACKOFF, "backoff")                                                   \
    X(DEPS, "deps")                                                         \
    X(DRAINING, "draining")                                                 \
    X(NO_WORKER, "no_worker")                                               \
    X(BACKEND, "backend")

enum gq_reason {
#define X(n, s) GQ_R_##n,
    GQ_REASON_MAP(X)
#undef X
    GQ_NREASONS
};

/* What runs the job once granted. */
enum gq_kind {
    GQ_KIND_JOB = 0,  /* run by an external worker (lease) */
    GQ_KIND_LOCK = 1, /* run by its own caller (GPU lock) */
};

const char *gq_state_str(enum gq_state s);  /* never NULL */
const char *gq_reason_str(enum gq_reason r); /* never NULL */
const char *gq_kind_str(enum gq_kind k);    /* "job" or "lock" */
/* Parses a state name; returns GQ_EINVAL if it names none. */
int gq_state_parse(const char *s, enum gq_state *out);
/* 1 for succeeded, failed, cancelled, expired, dead. */
int gq_state_terminal(enum gq_state s);

/*
 * A job while it is not finished.  Allocated and freed by the caller
 * (the daemon); the scheduler links it into its queues through the
 * intrusive fields below and never frees it.
 */
struct gq_job {
    uint64_t seq;          /* unique, only grows; the id is "j<seq>" */
    int64_t enq_us;        /* when it last entered the queue */
    int64_t ready_at_us;   /* end of backoff; 0 = ready when queued */
    int64_t deadline_us;   /* queue timeout; 0 = waits forever */
    int64_t grant_us;      /* start of the current grant */
    int64_t expires_us;    /* lease expiry of the current grant */
    uint64_t token;        /* fencing token of the current or last grant */
    int32_t priority;      /* higher first within the class */
    uint16_t cls;          /* class index in the scheduler */
    uint8_t state;         /* enum gq_state */
    uint8_t kind;          /* enum gq_kind */
    uint16_t attempts;     /* grants so far */
    int16_t slot;          /* slot held while running, else -1 */
    uint8_t blocked;       /* queued but waiting for dependencies */

    /* Scheduler links: ready treap, class FIFO, timer heaps. */
    struct gq_job *t_left, *t_right;
    uint32_t t_prio;       /* treap heap priority (random) */
    uint32_t t_size;       /* subtree size, for positions */
    struct gq_job *f_prev, *f_next;
    uint32_t b_idx;        /* index+1 in the backoff heap, 0 = not in it */
    uint32_t d_idx;        /* index+1 in the deadline heap, 0 = not in it */

    struct gq_job *h_next; /* job table chain */
    void *owner;           /* daemon's per-job context (waiter, grant) */
};

/* Initialises a job to a queued, unlinked state. */
void gq_job_init(struct gq_job *j, uint64_t seq, uint16_t cls,
                 int32_t priority, enum gq_kind kind);

/* Formats the public id ("j<seq>") into buf; returns buf. */
char *gq_job_id(uint64_t seq, char *buf, size_t len);
/* Parses a public id; returns GQ_EINVAL unless s is "j" + digits. */
int gq_job_parse_id(const char *s, uint64_t *seq);

/*
 * The job table: every in-memory job by seq.  Grows by doubling; never
 * owns the jobs.
 */
struct gq_jobtab {
    struct gq_job **buckets;
    size_t nbuckets;       /* a power of two */
    size_t count;
};

int gq_jobtab_init(struct gq_jobtab *t);   /* 0 or GQ_ENOMEM */
void gq_jobtab_close(struct gq_jobtab *t); /* frees buckets, not jobs */
int gq_jobtab_put(struct gq_jobtab *t, struct gq_job *j); /* 0/GQ_ENOMEM */
struct gq_job *gq_jobtab_get(const struct gq_jobtab *t, uint64_t seq);
void gq_jobtab_del(struct gq_jobtab *t, struct gq_job *j);
/* Calls fn for every job; fn may free the job it is given but must not
 * otherwise change the table. */
void gq_jobtab_each(const struct gq_jobtab *t,
                    void (*fn)(struct gq_job *, void *), void *ud);

#endif
