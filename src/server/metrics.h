/*
 * metrics.h - counters and histograms for /metrics (Prometheus text).
 * Plain structs updated on the loop thread; no I/O.
 */
#ifndef GQ_METRICS_H
#define GQ_METRICS_H

#include <stdint.h>

#include "../core/job.h"
#include "../core/sched.h"
#include "config.h"

#define GQ_HBUCKETS 18

/* Upper bounds of the histogram buckets, seconds (the last is +Inf). */
extern const double gq_hist_bounds[GQ_HBUCKETS];

struct gq_hist {
    uint64_t bucket[GQ_HBUCKETS]; /* non-cumulative counts */
    uint64_t count;
    double sum;
};

void gq_hist_add(struct gq_hist *h, double seconds);
/* The q-quantile (0..1) estimated from the buckets (upper bound of the
 * bucket holding it); 0 when empty. */
double gq_hist_quantile(const struct gq_hist *h, double q);

/* The last GQ_RING samples, for exact recent quantiles in /v1/status. */
#define GQ_RING 1024
struct gq_ring {
    float v[GQ_RING];
    uint32_t n;               /* samples ever added */
};
void gq_ring_add(struct gq_ring *r, double v);
/* The q-quantile (0..1) of the samples held; 0 when empty. */
double gq_ring_quantile(const struct gq_ring *r, double q);

struct gq_metrics {
    uint64_t submitted[GQ_MAX_CLASSES];
    uint64_t grants[GQ_MAX_CLASSES];
    uint64_t finished[GQ_MAX_CLASSES][GQ_NSTATES];
    uint64_t lease_expired[GQ_MAX_CLASSES];
    uint64_t commits, commit_failures;
    struct gq_hist wait[GQ_MAX_CLASSES];  /* queued -> granted */
    struct gq_hist hold[GQ_MAX_CLASSES];  /* grant length */
    struct gq_hist handoff;  /* slot freed -> next grant, work waiting */
    struct gq_hist turn;     /* end-of-turn work: dispatch+commit+replies */
    struct gq_hist commit;   /* one group commit (fsync) */
    struct gq_hist first_token[GQ_MAX_CLASSES]; /* submit -> first token */
    uint64_t backend_errors[GQ_MAX_BACKENDS][2]; /* retryable, fatal */
    struct gq_ring hold_recent[GQ_MAX_CLASSES];
    struct gq_ring first_token_recent[GQ_MAX_CLASSES];
    /* Time each slot was held, grants that have ended (the one holding
     * it now is added when /metrics is read). */
    int64_t slot_busy_us[GQ_MAX_SLOTS];
};

/*
 * Counts a slot's occupancy that ended at now_us (the slot is free
 * again); from_us is when the slot was taken (its last holder's
 * grant_us, which a batched grant's handover passes on).  Both
 * monotonic microseconds; a bad slot or negative span is ignored.
 */
void gq_metrics_slot_freed(struct gq_metrics *m, int slot, int64_t from_us,
                           int64_t now_us);

#endif
