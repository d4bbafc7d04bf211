/*
 * test_sched.c - the scheduling policy, driven with a fake clock.
 *
 * Every test builds its own scheduler, allocates its own jobs and moves an
 * int64 microsecond clock by hand; nothing sleeps and nothing does I/O.
 * Random tests use a seeded PRNG, so a failure replays exactly.  The
 * policy under test is the one in sched.h and doc/scheduling.md.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/job.h"
#include "core/sched.h"

#define MS 1000LL
#define SEC 1000000LL

/* Fails with both sides printed when |a - b| > eps. */
#define assert_near(a, b, eps)                                              \
    do {                                                                    \
        double a_ = (a), b_ = (b);                                          \
        if (!(fabs(a_ - b_) <= (eps)))                                      \
            fail_msg("%s = %.6f and %s = %.6f differ by more than %g", #a,  \
                     a_, #b, b_, (double)(eps));                            \
    } while (0)

/* --- helpers --- */

/* splitmix64: small and seeded, so every random test replays. */
static uint64_t
rnd_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in 0..n-1 (n small, so the modulo bias does not matter). */
static uint32_t
rnd_below(uint64_t *st, uint32_t n)
{
    return (uint32_t)(rnd_next(st) % n);
}

static struct gq_class_conf
klass(const char *name, int prio, double weight, int cap)
{
    struct gq_class_conf c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    c.priority = prio;
    c.weight = weight;
    c.max_consecutive = cap;
    c.max_queue = 1000;
    c.lease_ttl = 120;
    c.max_attempts = 3;
    return c;
}

static struct gq_sched *
mksched(const struct gq_class_conf *cc, int n, int slots,
        enum gq_share_by by)
{
    char msg[128] = "";
    struct gq_sched *s = gq_sched_new(cc, n, slots, by, 12345, msg,
                                      (int)sizeof msg);
    if (s == NULL)
        fail_msg("gq_sched_new: %s", msg);
    return s;
}

/* Jobs owned by a test, in one array so pointers stay put; seqs are
 * handed out in submission order starting at 1. */
struct bag {
    struct gq_job *v;
    int n, cap;
    uint64_t seq;
};

static void
bag_init(struct bag *b, int cap)
{
    b->v = calloc((size_t)cap, sizeof *b->v);
    assert_non_null(b->v);
    b->n = 0;
    b->cap = cap;
    b->seq = 0;
}

static void
bag_close(struct bag *b)
{
    free(b->v);
    b->v = NULL;
}

static struct gq_job *
bag_job(struct bag *b, int cls, int prio)
{
    assert_true(b->n < b->cap);
    struct gq_job *j = &b->v[b->n++];
    gq_job_init(j, ++b->seq, (uint16_t)cls, prio, GQ_KIND_JOB);
    return j;
}

/* A new job of cls, queued now. */
static struct gq_job *
enq(struct gq_sched *s, struct bag *b, int cls, int prio, int64_t now)
{
    struct gq_job *j = bag_job(b, cls, prio);
    gq_sched_enqueue(s, j, now);
    return j;
}

/* Reuses a released job's memory as a new submission (a fresh seq). */
static void
resubmit(struct gq_sched *s, struct bag *b, struct gq_job *j, int64_t now)
{
    gq_job_init(j, ++b->seq, j->cls, j->priority, GQ_KIND_JOB);
    gq_sched_enqueue(s, j, now);
}

/* Picks, asserting that something is granted. */
static struct gq_job *
must_pick(struct gq_sched *s, int64_t now)
{
    struct gq_job *j = gq_sched_pick(s, now, NULL, NULL);
    assert_non_null(j);
    assert_int_equal(j->state, GQ_RUNNING);
    assert_true(j->slot >= 0);
    return j;
}

/*
 * Runs n grants on the scheduler's one slot with every class always
 * backlogged (three queued jobs each): a granted job runs a length drawn
 * by lenfn, is released and comes back as a new submission.  Adds each
 * class's GPU microseconds to gpu[] and grants to grants[], and stores the
 * class of grant i in order[i] (order may be NULL).
 */
struct runlen {
    int64_t lo, hi;            /* uniform lo..hi microseconds */
};

static void
run_backlogged(struct gq_sched *s, struct bag *b, int ncls, int n,
               uint64_t *rng, struct runlen len, int64_t *now,
               int64_t *gpu, long *grants, int *order)
{
    for (int c = 0; c < ncls; c++)
        while (gq_sched_queued(s, c) < 3)
            enq(s, b, c, 0, *now);
    for (int i = 0; i < n; i++) {
        struct gq_job *j = must_pick(s, *now);
        int64_t d = len.lo;
        if (len.hi > len.lo)
            d += (int64_t)rnd_below(rng, (uint32_t)(len.hi - len.lo + 1));
        *now += d;
        gq_sched_release(s, j, *now);
        gpu[j->cls] += d;
        grants[j->cls]++;
        if (order)
            order[i] = j->cls;
        resubmit(s, b, j, *now);
    }
}

/* Longest run of consecutive grants of cls in order[0..n). */
static int
longest_run(const int *order, int n, int cls)
{
    int best = 0, cur = 0;
    for (int i = 0; i < n; i++) {
        cur = order[i] == cls ? cur + 1 : 0;
        if (cur > best)
            best = cur;
    }
    return best;
}

/* The grant sequence as letters ("ABBA..."), for readable comparisons. */
static void
letters(const int *order, int n, const char *alpha, char *out)
{
    for (int i = 0; i < n; i++)
        out[i] = alpha[order[i]];
    out[n] = '\0';
}

/* --- configuration --- */

static void
test_new_rejects_bad_config(void **state)
{
    (void)state;
    struct gq_class_conf ok[2] = {klass("a", 0, 1, 0), klass("b", 0, 1, 0)};
    struct gq_class_conf bad[2];
    char msg[128];

    memcpy(bad, ok, sizeof ok);
    bad[1].weight = 0;
    msg[0] = '\0';
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "weight"));

    bad[1].weight = -3;
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    bad[1].weight = NAN;
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    bad[1].weight = INFINITY;
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));

    memcpy(bad, ok, sizeof ok);
    snprintf(bad[1].name, sizeof bad[1].name, "a");
    msg[0] = '\0';
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "duplicate"));

    msg[0] = '\0';
    assert_null(gq_sched_new(ok, 2, 0, GQ_SHARE_TIME, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "slots"));
    assert_null(gq_sched_new(ok, 2, -1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    assert_null(gq_sched_new(ok, 2, GQ_MAX_SLOTS + 1, GQ_SHARE_TIME, 1, msg,
                             sizeof msg));
    assert_null(gq_sched_new(ok, 0, 1, GQ_SHARE_TIME, 1, msg, sizeof msg));
    assert_null(gq_sched_new(ok, GQ_MAX_CLASSES + 1, 1, GQ_SHARE_TIME, 1,
                             msg, sizeof msg));
    /* A NULL message buffer is allowed. */
    assert_null(gq_sched_new(bad, 2, 1, GQ_SHARE_TIME, 1, NULL, 0));

    struct gq_sched *s = gq_sched_new(ok, 2, GQ_MAX_SLOTS, GQ_SHARE_TIME, 0,
                                      NULL, 0);
    assert_non_null(s);
    assert_int_equal(gq_sched_nslots(s), GQ_MAX_SLOTS);
    assert_int_equal(gq_sched_free_slots(s), GQ_MAX_SLOTS);
    gq_sched_free(s);
    gq_sched_free(NULL);
}

static void
test_class_lookup(void **state)
{
    (void)state;
    struct gq_class_conf cc[3] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1),
                                  klass("interactive", 10, 1, 0)};
    struct gq_sched *s = mksched(cc, 3, 2, GQ_SHARE_TIME);
    assert_int_equal(gq_sched_nclasses(s), 3);
    assert_int_equal(gq_sched_class(s, "transcription"), 0);
    assert_int_equal(gq_sched_class(s, "summarization"), 1);
    assert_int_equal(gq_sched_class(s, "interactive"), 2);
    assert_int_equal(gq_sched_class(s, "nope"), GQ_ENOCLASS);
    assert_int_equal(gq_sched_class(s, ""), GQ_ENOCLASS);
    assert_string_equal(gq_sched_conf(s, 1)->name, "summarization");
    assert_int_equal(gq_sched_conf(s, 0)->max_consecutive, 2);
    assert_int_equal(gq_sched_conf(s, 2)->priority, 10);
    assert_int_equal(gq_sched_nslots(s), 2);
    assert_null(gq_sched_slot(s, 0));
    assert_null(gq_sched_slot(s, -1));
    assert_null(gq_sched_slot(s, 2));
    gq_sched_free(s);
}

/* --- tiers --- */

static void
test_strict_tiers(void **state)
{
    (void)state;
    /* urgent is alone in the top tier with a cap of 1; the two lower
     * classes are owed nothing by it and cannot make it wait. */
    struct gq_class_conf cc[3] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1),
                                  klass("urgent", 10, 1, 1)};
    struct gq_sched *s = mksched(cc, 3, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 256);
    int64_t now = SEC;

    /* urgent runs a long time alone, so its virtual time is far ahead. */
    for (int i = 0; i < 20; i++) {
        enq(s, &b, 2, 0, now);
        struct gq_job *j = must_pick(s, now);
        now += 60 * SEC;
        gq_sched_release(s, j, now);
    }
    for (int i = 0; i < 10; i++) {
        enq(s, &b, 0, 0, now);
        enq(s, &b, 1, 0, now);
    }
    struct gq_job *u[8];
    for (int i = 0; i < 8; i++)
        u[i] = enq(s, &b, 2, 0, now);

    /* Lower-tier heads wait for "priority" while urgent has ready work. */
    uint32_t pos;
    struct gq_class_stats st;
    for (int i = 0; i < 8; i++) {
        for (int k = 0; k < b.n; k++) {
            struct gq_job *o = &b.v[k];
            if (o->state == GQ_QUEUED && o->cls != 2)
                assert_int_equal(gq_sched_reason(s, o, &pos), GQ_R_PRIORITY);
        }
        struct gq_job *j = must_pick(s, now);
        assert_ptr_equal(j, u[i]);
        now += 5 * SEC;
        gq_sched_release(s, j, now);
    }
    /* It ran 8 in a row, past its cap of 1: alone in its tier. */
    gq_sched_stats(s, 2, &st);
    assert_int_equal(st.streak, 28);

    /* Now the lower tier runs; a new urgent job cuts in at the next pick
     * even though transcription is owed share and not capped. */
    struct gq_job *j = must_pick(s, now);
    assert_int_not_equal(j->cls, 2);
    gq_sched_release(s, j, now + SEC);
    now += SEC;
    struct gq_job *x = enq(s, &b, 2, -5, now);
    assert_ptr_equal(must_pick(s, now), x);
    gq_sched_free(s);
    bag_close(&b);
}

/* Random load over three tiers: every grant goes to the highest tier
 * that has ready work, whatever the shares and streaks say. */
static void
test_strict_tiers_random(void **state)
{
    (void)state;
    struct gq_class_conf cc[5] = {
        klass("lo_a", 0, 70, 2), klass("lo_b", 0, 30, 1),
        klass("mid_a", 5, 1, 1), klass("mid_b", 5, 3, 0),
        klass("hi", 10, 1, 1),
    };
    struct gq_sched *s = mksched(cc, 5, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 30000);
    uint64_t rng = 7;
    int64_t now = SEC;
    int hi_run = 0, hi_best = 0, picks = 0;

    for (int step = 0; step < 20000; step++) {
        if (rnd_below(&rng, 2) == 0 && b.n < b.cap) {
            int c = (int)rnd_below(&rng, 5);
            enq(s, &b, c, (int)rnd_below(&rng, 3) - 1, now);
            continue;
        }
        int top = -1000;
        for (int c = 0; c < 5; c++) {
            struct gq_class_stats st;
            gq_sched_stats(s, c, &st);
            if (st.ready > 0 && cc[c].priority > top)
                top = cc[c].priority;
        }
        struct gq_job *j = gq_sched_pick(s, now, NULL, NULL);
        if (top == -1000) {
            assert_null(j);
            continue;
        }
        assert_non_null(j);
        assert_int_equal(cc[j->cls].priority, top);
        picks++;
        hi_run = j->cls == 4 ? hi_run + 1 : 0;
        if (hi_run > hi_best)
            hi_best = hi_run;
        now += 1 + (int64_t)rnd_below(&rng, 100 * MS);
        gq_sched_release(s, j, now);
    }
    assert_true(picks > 5000);
    assert_true(hi_best > 1); /* its cap never held it back */
    gq_sched_free(s);
    bag_close(&b);
}

/* --- shares --- */

static void
check_shares(const struct gq_class_conf *cc, int n, enum gq_share_by by,
             uint64_t seed)
{
    struct gq_sched *s = mksched(cc, n, 1, by);
    struct bag b;
    bag_init(&b, 64);
    uint64_t rng = seed;
    int64_t now = SEC, gpu[8] = {0};
    long grants[8] = {0};
    struct runlen len = {1 * MS, 100 * MS};

    run_backlogged(s, &b, n, 10000, &rng, len, &now, gpu, grants, NULL);

    double wsum = 0, tsum = 0, gsum = 0;
    for (int c = 0; c < n; c++) {
        wsum += cc[c].weight;
        tsum += (double)gpu[c];
        gsum += (double)grants[c];
    }
    for (int c = 0; c < n; c++) {
        double want = cc[c].weight / wsum;
        double got = by == GQ_SHARE_TIME ? (double)gpu[c] / tsum
                                         : (double)grants[c] / gsum;
        print_message("  %s: weight share %.3f, achieved %.4f\n",
                      cc[c].name, want, got);
        assert_near(got, want, 0.01);
        struct gq_class_stats st;
        gq_sched_stats(s, c, &st);
        assert_near(st.share, got, 1e-9);
        assert_int_equal(st.grants, grants[c]);
        assert_near(st.granted_s, (double)gpu[c] / 1e6, 1e-6);
    }
    gq_sched_free(s);
    bag_close(&b);
}

static void
test_shares_time_70_30(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 0),
                                  klass("summarization", 0, 30, 0)};
    check_shares(cc, 2, GQ_SHARE_TIME, 1);
    check_shares(cc, 2, GQ_SHARE_TIME, 2);
}

static void
test_shares_time_50_30_20(void **state)
{
    (void)state;
    struct gq_class_conf cc[3] = {klass("a", 0, 50, 0), klass("b", 0, 30, 0),
                                  klass("c", 0, 20, 0)};
    check_shares(cc, 3, GQ_SHARE_TIME, 3);
}

static void
test_shares_grants(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 0),
                                  klass("summarization", 0, 30, 0)};
    check_shares(cc, 2, GQ_SHARE_GRANTS, 4);
    struct gq_class_conf c3[3] = {klass("a", 0, 50, 0), klass("b", 0, 30, 0),
                                  klass("c", 0, 20, 0)};
    check_shares(c3, 3, GQ_SHARE_GRANTS, 5);
}

/* share_by grants ignores how long grants run: a class whose jobs run 10x
 * longer still gets its weight's share of grants, so most of the time. */
static void
test_shares_grants_ignore_length(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("long", 0, 1, 0),
                                  klass("short", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_GRANTS);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = SEC, gpu[2] = {0, 0};
    long grants[2] = {0, 0};
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 3; i++)
            enq(s, &b, c, 0, now);
    for (int i = 0; i < 1000; i++) {
        struct gq_job *j = must_pick(s, now);
        int64_t d = j->cls == 0 ? 100 * MS : 10 * MS;
        now += d;
        gq_sched_release(s, j, now);
        gpu[j->cls] += d;
        grants[j->cls]++;
        resubmit(s, &b, j, now);
    }
    assert_int_equal(grants[0], 500);
    assert_int_equal(grants[1], 500);
    struct gq_class_stats st;
    gq_sched_stats(s, 0, &st);
    assert_near(st.share, 0.5, 1e-9);
    assert_near(st.granted_s, 50.0, 1e-6);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- caps --- */

static void
test_caps_beat_weights(void **state)
{
    (void)state;
    enum { N = 3000 };
    static int order[N];
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    uint64_t rng = 9;
    int64_t now = SEC, gpu[2] = {0, 0};
    long grants[2] = {0, 0};
    struct runlen len = {SEC, SEC};

    run_backlogged(s, &b, 2, N, &rng, len, &now, gpu, grants, order);
    /* Both are always backlogged, so the caps bind at every point. */
    assert_int_equal(longest_run(order, N, 0), 2);
    assert_int_equal(longest_run(order, N, 1), 1);
    double tshare = (double)grants[0] / N;
    assert_true(tshare <= 2.0 / 3 + 0.001);
    assert_true(tshare >= 2.0 / 3 - 0.001);
    char seq[16];
    letters(order, 11, "TS", seq);
    assert_string_equal(seq, "TSTTSTTSTTS");
    gq_sched_free(s);
    bag_close(&b);

    /* The control: without caps the weights alone give transcription
     * 70% and runs of three, so the caps above are what held it. */
    cc[0].max_consecutive = cc[1].max_consecutive = 0;
    s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    bag_init(&b, 16);
    memset(grants, 0, sizeof grants);
    run_backlogged(s, &b, 2, N, &rng, len, &now, gpu, grants, order);
    assert_near((double)grants[0] / N, 0.70, 0.002);
    assert_int_equal(longest_run(order, N, 0), 3);
    gq_sched_free(s);
    bag_close(&b);
}

/* Caps with random lengths: the run limits hold for every grant, not
 * just on average. */
static void
test_caps_random_lengths(void **state)
{
    (void)state;
    enum { N = 10000 };
    static int order[N];
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    uint64_t rng = 10;
    int64_t now = SEC, gpu[2] = {0, 0};
    long grants[2] = {0, 0};
    struct runlen len = {1 * MS, 100 * MS};
    run_backlogged(s, &b, 2, N, &rng, len, &now, gpu, grants, order);
    assert_true(longest_run(order, N, 0) <= 2);
    assert_true(longest_run(order, N, 1) <= 1);
    assert_true((double)grants[0] / N <= 2.0 / 3 + 0.001);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- work conservation --- */

static int
deny_class(void *ud, const struct gq_job *head)
{
    return head->cls != *(const int *)ud;
}

static void
test_work_conserving_alone(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 64);
    int64_t now = SEC;
    struct gq_class_stats st;

    /* Alone in its tier, transcription runs 10 in a row past its cap. */
    for (int i = 0; i < 10; i++)
        enq(s, &b, 0, 0, now);
    for (int i = 0; i < 10; i++) {
        struct gq_job *j = must_pick(s, now);
        assert_int_equal(j->cls, 0);
        now += SEC;
        gq_sched_release(s, j, now);
    }
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.streak, 10);
    assert_null(gq_sched_pick(s, now, NULL, NULL));

    /* summarization has ready work but nothing can serve it: the cap is
     * not applied and transcription keeps the GPU busy. */
    for (int i = 0; i < 5; i++) {
        enq(s, &b, 0, 0, now);
        enq(s, &b, 1, 0, now);
    }
    int deny = 1;
    for (int i = 0; i < 5; i++) {
        struct gq_job *j = gq_sched_pick(s, now, deny_class, &deny);
        assert_non_null(j);
        assert_int_equal(j->cls, 0);
        now += SEC;
        gq_sched_release(s, j, now);
    }
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.streak, 15);
    /* Nothing left that can be served: NULL, and nothing changes. */
    assert_null(gq_sched_pick(s, now, deny_class, &deny));
    gq_sched_stats(s, 1, &st);
    assert_int_equal(st.ready, 5);
    assert_int_equal(gq_sched_free_slots(s), 1);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- no banked credit --- */

static void
test_no_banked_credit_backlogged(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("a", 0, 2, 0), klass("b", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 64);
    int64_t now = SEC;
    int order[12];
    char seq[16];

    /* a runs alone, always backlogged, for 1000 one-second grants. */
    for (int i = 0; i < 3; i++)
        enq(s, &b, 0, 0, now);
    for (int i = 0; i < 1000; i++) {
        struct gq_job *j = must_pick(s, now);
        now += SEC;
        gq_sched_release(s, j, now);
        resubmit(s, &b, j, now);
    }
    /* b arrives: it starts level with a, so the next grants split 1:2
     * at once instead of b running 500 in a row. */
    for (int i = 0; i < 20; i++)
        enq(s, &b, 1, 0, now);
    for (int i = 0; i < 12; i++) {
        struct gq_job *j = must_pick(s, now);
        order[i] = j->cls;
        now += SEC;
        gq_sched_release(s, j, now);
        resubmit(s, &b, j, now);
    }
    letters(order, 12, "ab", seq);
    assert_string_equal(seq, "baabaabaabaa");
    gq_sched_free(s);
    bag_close(&b);
}

/* The same with caps 2/1 and weights 70/30: the newcomer gets one grant,
 * then the cap pattern resumes right away. */
static void
test_no_banked_credit_caps(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 64);
    int64_t now = SEC;
    int order[9];
    char seq[16];

    for (int i = 0; i < 3; i++)
        enq(s, &b, 0, 0, now);
    for (int i = 0; i < 500; i++) {
        struct gq_job *j = must_pick(s, now);
        now += SEC;
        gq_sched_release(s, j, now);
        resubmit(s, &b, j, now);
    }
    for (int i = 0; i < 20; i++)
        enq(s, &b, 1, 0, now);
    for (int i = 0; i < 9; i++) {
        struct gq_job *j = must_pick(s, now);
        order[i] = j->cls;
        now += SEC;
        gq_sched_release(s, j, now);
        resubmit(s, &b, j, now);
    }
    letters(order, 9, "TS", seq);
    assert_string_equal(seq, "STTSTTSTT");
    gq_sched_free(s);
    bag_close(&b);
}

/*
 * a runs alone for a long time, one job at a time, so between its jobs
 * its class is briefly idle.  b arrives in such a gap, then a submits
 * again: b must not be credited for the time it was idle while a ran.
 */
static void
check_idle_gap(enum gq_share_by by)
{
    struct gq_class_conf cc[2] = {klass("a", 0, 1, 0), klass("b", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 1, by);
    struct bag b;
    bag_init(&b, 1100);
    int64_t now = SEC;
    int order[20];
    char seq[24];

    for (int i = 0; i < 1000; i++) {
        enq(s, &b, 0, 0, now);
        struct gq_job *j = must_pick(s, now);
        now += SEC;
        gq_sched_release(s, j, now);
    }
    for (int i = 0; i < 20; i++)
        enq(s, &b, 1, 0, now);
    for (int i = 0; i < 20; i++)
        enq(s, &b, 0, 0, now);
    for (int i = 0; i < 20; i++) {
        struct gq_job *j = must_pick(s, now);
        order[i] = j->cls;
        now += SEC;
        gq_sched_release(s, j, now);
    }
    letters(order, 20, "ab", seq);
    if (longest_run(order, 20, 1) > 1)
        fail_msg("b banked credit while idle: grants after it arrived "
                 "were %s (want alternating)", seq);
    assert_string_equal(seq, "babababababababababa");
    gq_sched_free(s);
    bag_close(&b);
}

static void
test_no_banked_credit_idle_gap(void **state)
{
    (void)state;
    check_idle_gap(GQ_SHARE_TIME);
    check_idle_gap(GQ_SHARE_GRANTS);
}

/* --- order within a class --- */

static void
test_priority_then_fifo(void **state)
{
    (void)state;
    struct gq_class_conf cc[1] = {klass("c", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 1, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = SEC;
    static const int prio[] = {0, 5, 0, 5, -1, 0, 1000, -1000};
    static const int want[] = {6, 1, 3, 0, 2, 5, 4, 7}; /* indexes */
    struct gq_job *j[8];
    for (int i = 0; i < 8; i++) {
        j[i] = enq(s, &b, 0, prio[i], now);
        now += MS;
    }
    for (int i = 0; i < 8; i++) {
        uint32_t pos = 0;
        gq_sched_reason(s, j[want[i]], &pos);
        assert_int_equal(pos, i + 1);
    }
    for (int i = 0; i < 8; i++) {
        struct gq_job *g = must_pick(s, now);
        assert_ptr_equal(g, j[want[i]]);
        gq_sched_release(s, g, now + MS);
        now += MS;
    }
    gq_sched_free(s);
    bag_close(&b);
}

static void
test_yield_keeps_place(void **state)
{
    (void)state;
    struct gq_class_conf cc[1] = {klass("c", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 1, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = SEC;
    struct gq_job *j1 = enq(s, &b, 0, 0, now);
    struct gq_job *j2 = enq(s, &b, 0, 0, now);
    struct gq_job *j3 = enq(s, &b, 0, 0, now);
    uint32_t pos;

    assert_ptr_equal(must_pick(s, now), j1);
    struct gq_job *j4 = enq(s, &b, 0, 0, now + MS);
    now += SEC;
    /* Yield: release, back to the queue with its seq unchanged. */
    gq_sched_release(s, j1, now);
    gq_sched_enqueue(s, j1, now);
    assert_int_equal(j1->state, GQ_QUEUED);
    gq_sched_reason(s, j1, &pos);
    assert_int_equal(pos, 1);
    gq_sched_reason(s, j4, &pos);
    assert_int_equal(pos, 4);
    struct gq_job *want[] = {j1, j2, j3, j4};
    for (int i = 0; i < 4; i++) {
        struct gq_job *g = must_pick(s, now);
        assert_ptr_equal(g, want[i]);
        gq_sched_release(s, g, now + MS);
        now += MS;
    }
    gq_sched_free(s);
    bag_close(&b);
}

/* --- reasons and positions --- */

static void
test_reasons(void **state)
{
    (void)state;
    struct gq_class_conf cc[3] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1),
                                  klass("urgent", 10, 1, 0)};
    struct gq_sched *s = mksched(cc, 3, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 64);
    int64_t now = SEC;
    uint32_t pos = 99;
    struct gq_job *t[6], *sm[6];
    for (int i = 0; i < 6; i++) {
        t[i] = enq(s, &b, 0, 0, now);
        sm[i] = enq(s, &b, 1, 0, now);
    }

    /* Heads with nothing owed: gpu_busy; later jobs: gpu_busy with their
     * position. */
    assert_int_equal(gq_sched_reason(s, t[0], &pos), GQ_R_GPU_BUSY);
    assert_int_equal(pos, 1);
    assert_int_equal(gq_sched_reason(s, t[3], &pos), GQ_R_GPU_BUSY);
    assert_int_equal(pos, 4);
    assert_int_equal(gq_sched_reason(s, t[3], NULL), GQ_R_GPU_BUSY);

    /* Draining beats everything but backoff. */
    gq_sched_set_draining(s, 1);
    assert_true(gq_sched_draining(s));
    assert_int_equal(gq_sched_reason(s, t[0], &pos), GQ_R_DRAINING);
    assert_int_equal(pos, 1);
    assert_null(gq_sched_pick(s, now, NULL, NULL));
    gq_sched_set_draining(s, 0);
    assert_false(gq_sched_draining(s));

    /* Grants go T S T T (see test_caps_beat_weights). */
    struct gq_job *g = must_pick(s, now);
    assert_ptr_equal(g, t[0]);
    assert_int_equal(gq_sched_reason(s, g, &pos), GQ_R_NONE);
    assert_int_equal(pos, 0);
    /* While t[0] runs, the next transcription job is gpu_busy. */
    assert_int_equal(gq_sched_reason(s, t[1], &pos), GQ_R_GPU_BUSY);
    assert_int_equal(pos, 1);
    now += SEC;
    gq_sched_release(s, g, now);
    /* Transcription has had a second; summarization is owed. */
    assert_int_equal(gq_sched_reason(s, t[1], &pos), GQ_R_SHARE);
    assert_int_equal(pos, 1);
    assert_int_equal(gq_sched_reason(s, t[2], &pos), GQ_R_GPU_BUSY);
    assert_int_equal(pos, 2);
    assert_int_equal(gq_sched_reason(s, sm[0], &pos), GQ_R_GPU_BUSY);

    g = must_pick(s, now);
    assert_ptr_equal(g, sm[0]);
    now += SEC;
    gq_sched_release(s, g, now);
    g = must_pick(s, now);
    assert_ptr_equal(g, t[1]);
    now += SEC;
    gq_sched_release(s, g, now);
    g = must_pick(s, now);
    assert_ptr_equal(g, t[2]);
    now += SEC;
    gq_sched_release(s, g, now);
    /* Two in a row: transcription is capped while summarization waits,
     * even though summarization is not owed by virtual time. */
    assert_int_equal(gq_sched_reason(s, t[3], &pos), GQ_R_CAP);
    assert_int_equal(pos, 1);
    assert_int_equal(gq_sched_reason(s, sm[1], &pos), GQ_R_GPU_BUSY);

    /* A higher tier with ready work: priority for the lower tier. */
    struct gq_job *u = enq(s, &b, 2, 0, now);
    assert_int_equal(gq_sched_reason(s, t[3], &pos), GQ_R_PRIORITY);
    assert_int_equal(pos, 1);
    assert_int_equal(gq_sched_reason(s, sm[1], &pos), GQ_R_PRIORITY);
    assert_int_equal(gq_sched_reason(s, sm[2], &pos), GQ_R_PRIORITY);
    assert_int_equal(pos, 2);
    assert_int_equal(gq_sched_reason(s, u, &pos), GQ_R_GPU_BUSY);
    assert_int_equal(pos, 1);
    assert_ptr_equal(must_pick(s, now), u);

    /* Backoff: position 0. */
    struct gq_job *bo = bag_job(&b, 0, 0);
    bo->ready_at_us = now + 10 * SEC;
    gq_sched_enqueue(s, bo, now);
    assert_int_equal(gq_sched_reason(s, bo, &pos), GQ_R_BACKOFF);
    assert_int_equal(pos, 0);
    gq_sched_set_draining(s, 1);
    assert_int_equal(gq_sched_reason(s, bo, &pos), GQ_R_BACKOFF);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- backoff and deadlines --- */

static void
test_backoff(void **state)
{
    (void)state;
    struct gq_class_conf cc[1] = {klass("c", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 1, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = 100 * SEC;
    struct gq_class_stats st;

    assert_int_equal(gq_sched_next_timer(s), 0);
    struct gq_job *j = bag_job(&b, 0, 0);
    j->ready_at_us = now + 5 * SEC;
    gq_sched_enqueue(s, j, now);
    assert_int_equal(j->enq_us, now);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 0);
    assert_int_equal(st.backoff, 1);
    assert_int_equal(gq_sched_queued(s, 0), 1);
    assert_int_equal(gq_sched_next_timer(s), now + 5 * SEC);
    assert_null(gq_sched_pick(s, now + 6 * SEC, NULL, NULL));

    /* A ready job behind it (later seq) goes first while it waits. */
    struct gq_job *k = enq(s, &b, 0, 0, now);
    gq_sched_tick(s, now + 5 * SEC - 1);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.backoff, 1);
    assert_ptr_equal(must_pick(s, now + 5 * SEC - 1), k);
    gq_sched_release(s, k, now + 5 * SEC - 1);
    assert_null(gq_sched_pick(s, now + 5 * SEC - 1, NULL, NULL));

    gq_sched_tick(s, now + 5 * SEC);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.backoff, 0);
    assert_int_equal(st.ready, 1);
    assert_int_equal(j->ready_at_us, 0);
    assert_int_equal(gq_sched_next_timer(s), 0);
    assert_ptr_equal(must_pick(s, now + 5 * SEC), j);
    gq_sched_release(s, j, now + 6 * SEC);

    /* A ready_at already past is no backoff at all. */
    now += 10 * SEC;
    struct gq_job *p = bag_job(&b, 0, 0);
    p->ready_at_us = now;
    gq_sched_enqueue(s, p, now);
    assert_int_equal(p->ready_at_us, 0);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 1);
    assert_int_equal(gq_sched_next_timer(s), 0);
    assert_ptr_equal(must_pick(s, now), p);

    /* Several: the timer is the earliest, and ticks release in order. */
    int64_t at[] = {7, 3, 9, 1, 5};
    struct gq_job *q[5];
    for (int i = 0; i < 5; i++) {
        q[i] = bag_job(&b, 0, 0);
        q[i]->ready_at_us = now + at[i] * SEC;
        gq_sched_enqueue(s, q[i], now);
    }
    assert_int_equal(gq_sched_next_timer(s), now + 1 * SEC);
    gq_sched_tick(s, now + 4 * SEC);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 2);
    assert_int_equal(st.backoff, 3);
    assert_int_equal(gq_sched_next_timer(s), now + 5 * SEC);
    /* A deadline earlier than every backoff end is the next timer. */
    struct gq_job *d = bag_job(&b, 0, 0);
    d->deadline_us = now + 4 * SEC + 1;
    gq_sched_enqueue(s, d, now + 4 * SEC);
    assert_int_equal(gq_sched_next_timer(s), now + 4 * SEC + 1);
    gq_sched_free(s);
    bag_close(&b);
}

static void
test_deadlines(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("a", 0, 1, 0), klass("b", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = SEC;
    struct gq_class_stats st;

    struct gq_job *x = bag_job(&b, 0, 0);
    x->deadline_us = now + 10 * SEC;
    gq_sched_enqueue(s, x, now);
    struct gq_job *y = bag_job(&b, 1, 0);
    y->deadline_us = now + 20 * SEC;
    y->ready_at_us = now + 30 * SEC; /* expires while in backoff */
    gq_sched_enqueue(s, y, now);
    struct gq_job *z = enq(s, &b, 0, 0, now); /* waits forever */
    assert_int_equal(gq_sched_next_timer(s), now + 10 * SEC);

    assert_null(gq_sched_pop_expired(s, now + 10 * SEC - 1));
    assert_ptr_equal(gq_sched_pop_expired(s, now + 10 * SEC), x);
    assert_null(gq_sched_pop_expired(s, now + 10 * SEC));
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 1);
    assert_int_equal(gq_sched_queued(s, 0), 1);
    assert_int_equal(gq_sched_next_timer(s), now + 20 * SEC);

    assert_ptr_equal(gq_sched_pop_expired(s, now + 25 * SEC), y);
    gq_sched_stats(s, 1, &st);
    assert_int_equal(st.backoff, 0);
    assert_int_equal(gq_sched_queued(s, 1), 0);
    assert_int_equal(gq_sched_next_timer(s), 0);
    /* The expired jobs are gone: only z is granted, the backoff end of y
     * no longer fires. */
    gq_sched_tick(s, now + 40 * SEC);
    assert_ptr_equal(must_pick(s, now + 40 * SEC), z);
    assert_null(gq_sched_pick(s, now + 40 * SEC, NULL, NULL));
    gq_sched_release(s, z, now + 41 * SEC);

    /* A job granted before its deadline does not expire while running. */
    now += 50 * SEC;
    struct gq_job *w = bag_job(&b, 0, 0);
    w->deadline_us = now + SEC;
    gq_sched_enqueue(s, w, now);
    assert_ptr_equal(must_pick(s, now), w);
    assert_int_equal(gq_sched_next_timer(s), 0);
    assert_null(gq_sched_pop_expired(s, now + 100 * SEC));
    gq_sched_release(s, w, now + 2 * SEC);

    /* Several expire in deadline order. */
    int64_t dl[] = {4, 2, 3};
    struct gq_job *v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = bag_job(&b, i % 2, 0);
        v[i]->deadline_us = now + dl[i] * SEC;
        gq_sched_enqueue(s, v[i], now);
    }
    assert_ptr_equal(gq_sched_pop_expired(s, now + 9 * SEC), v[1]);
    assert_ptr_equal(gq_sched_pop_expired(s, now + 9 * SEC), v[2]);
    assert_ptr_equal(gq_sched_pop_expired(s, now + 9 * SEC), v[0]);
    assert_null(gq_sched_pop_expired(s, now + 9 * SEC));
    assert_int_equal(gq_sched_queued(s, 0) + gq_sched_queued(s, 1), 0);
    gq_sched_free(s);
    bag_close(&b);
}

static void
test_remove(void **state)
{
    (void)state;
    struct gq_class_conf cc[1] = {klass("c", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 1, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 16);
    int64_t now = SEC;
    struct gq_class_stats st;
    uint32_t pos;

    struct gq_job *a = enq(s, &b, 0, 0, now);
    struct gq_job *c = enq(s, &b, 0, 0, now);
    struct gq_job *d = enq(s, &b, 0, 0, now);
    struct gq_job *e = bag_job(&b, 0, 0);
    e->ready_at_us = now + SEC;
    e->deadline_us = now + 2 * SEC;
    gq_sched_enqueue(s, e, now);

    gq_sched_remove(s, c);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 2);
    gq_sched_reason(s, d, &pos);
    assert_int_equal(pos, 2);
    gq_sched_remove(s, c); /* twice is a no-op */
    gq_sched_remove(s, e);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.backoff, 0);
    assert_int_equal(gq_sched_queued(s, 0), 2);
    assert_int_equal(gq_sched_next_timer(s), 0);
    assert_null(gq_sched_pop_expired(s, now + 3 * SEC));

    /* Removing a running job is a no-op. */
    assert_ptr_equal(must_pick(s, now), a);
    gq_sched_remove(s, a);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.running, 1);
    assert_int_equal(gq_sched_free_slots(s), 0);
    gq_sched_release(s, a, now + SEC);
    assert_ptr_equal(must_pick(s, now), d);
    gq_sched_release(s, d, now + SEC);
    assert_null(gq_sched_pick(s, now, NULL, NULL));

    /* A removed job can be queued again. */
    gq_sched_enqueue(s, c, now);
    assert_ptr_equal(must_pick(s, now), c);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- slots --- */

static void
test_slots(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("a", 0, 1, 0), klass("b", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 3, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 32);
    int64_t now = SEC;
    struct gq_class_stats st;

    for (int i = 0; i < 10; i++)
        enq(s, &b, i % 2, 0, now);
    struct gq_job *g[3];
    for (int i = 0; i < 3; i++) {
        g[i] = must_pick(s, now);
        assert_int_equal(g[i]->slot, i);
        assert_ptr_equal(gq_sched_slot(s, i), g[i]);
        assert_int_equal(g[i]->grant_us, now);
        assert_int_equal(gq_sched_free_slots(s), 2 - i);
    }
    assert_null(gq_sched_pick(s, now, NULL, NULL));
    int running = 0;
    for (int c = 0; c < 2; c++) {
        gq_sched_stats(s, c, &st);
        running += (int)st.running;
    }
    assert_int_equal(running, 3);

    /* Releasing the middle slot frees exactly that one. */
    gq_sched_release(s, g[1], now + SEC);
    assert_int_equal(g[1]->slot, -1);
    assert_null(gq_sched_slot(s, 1));
    assert_int_equal(gq_sched_free_slots(s), 1);
    struct gq_job *n = must_pick(s, now + SEC);
    assert_int_equal(n->slot, 1);
    assert_null(gq_sched_pick(s, now + SEC, NULL, NULL));

    /* attach: a taken or bad slot is refused; a free one is taken. */
    struct gq_job *r = bag_job(&b, 1, 0);
    r->state = GQ_RUNNING;
    assert_int_equal(gq_sched_attach(s, r, 0, now), GQ_EINVAL);
    assert_int_equal(gq_sched_attach(s, r, 3, now), GQ_EINVAL);
    assert_int_equal(gq_sched_attach(s, r, -1, now), GQ_EINVAL);
    gq_sched_release(s, g[2], now + 2 * SEC);
    assert_int_equal(gq_sched_attach(s, r, 2, now), 0);
    assert_int_equal(r->slot, 2);
    assert_int_equal(gq_sched_free_slots(s), 0);
    gq_sched_stats(s, 1, &st);
    assert_int_equal(st.running, (g[0]->cls == 1) + (n->cls == 1) + 1);
    gq_sched_release(s, r, now + 3 * SEC);
    assert_int_equal(gq_sched_free_slots(s), 1);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- servability --- */

struct seen {
    unsigned deny;             /* bit c set: class c is not served */
    int calls;
    const struct gq_job *heads[8];
};

static int
record_servable(void *ud, const struct gq_job *head)
{
    struct seen *sn = ud;
    if (sn->calls < 8)
        sn->heads[sn->calls] = head;
    sn->calls++;
    return !(sn->deny & (1u << head->cls));
}

static void
test_servable(void **state)
{
    (void)state;
    struct gq_class_conf cc[3] = {klass("transcription", 0, 70, 2),
                                  klass("summarization", 0, 30, 1),
                                  klass("urgent", 10, 1, 0)};
    struct gq_sched *s = mksched(cc, 3, 1, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 32);
    int64_t now = SEC;
    struct seen sn = {.deny = 1u << 2};
    uint32_t pos;

    struct gq_job *t0 = enq(s, &b, 0, 0, now);
    struct gq_job *t1 = enq(s, &b, 0, 9, now); /* the head of its class */
    struct gq_job *s0 = enq(s, &b, 1, 0, now);
    struct gq_job *u0 = enq(s, &b, 2, 0, now);

    /* The urgent head is not servable: it does not block the tier
     * below, and the callback is asked about each class's head. */
    struct gq_job *g = gq_sched_pick(s, now, record_servable, &sn);
    assert_ptr_equal(g, t1);
    assert_int_equal(sn.calls, 3);
    assert_ptr_equal(sn.heads[0], u0);
    assert_ptr_equal(sn.heads[1], t1);
    assert_ptr_equal(sn.heads[2], s0);
    now += SEC;
    gq_sched_release(s, g, now);

    /* summarization is owed (it has had nothing), but nobody serves it:
     * transcription goes instead of the GPU idling.  (The reason counts
     * urgent's ready job, servable or not.) */
    assert_int_equal(gq_sched_reason(s, t0, &pos), GQ_R_PRIORITY);
    assert_int_equal(gq_sched_reason(s, s0, &pos), GQ_R_PRIORITY);
    sn.deny = 1u << 1 | 1u << 2;
    g = gq_sched_pick(s, now, record_servable, &sn);
    assert_ptr_equal(g, t0);
    now += SEC;
    gq_sched_release(s, g, now);

    /* transcription has its 2 in a row; the only other class of its tier
     * cannot be served, so the cap does not apply. */
    struct gq_job *t2 = enq(s, &b, 0, 0, now);
    struct gq_job *t3 = enq(s, &b, 0, 0, now);
    assert_ptr_equal(gq_sched_pick(s, now, record_servable, &sn), t2);
    now += SEC;
    gq_sched_release(s, t2, now);
    struct gq_class_stats st;
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.streak, 3);

    /* Everything served: urgent first, then summarization (capped
     * transcription, owed summarization), then transcription. */
    sn.deny = 0;
    assert_ptr_equal(gq_sched_pick(s, now, record_servable, &sn), u0);
    gq_sched_release(s, u0, now + SEC);
    assert_ptr_equal(gq_sched_pick(s, now, record_servable, &sn), s0);
    gq_sched_release(s, s0, now + SEC);
    assert_ptr_equal(gq_sched_pick(s, now, record_servable, &sn), t3);
    gq_sched_release(s, t3, now + SEC);
    assert_null(gq_sched_pick(s, now, record_servable, &sn));
    gq_sched_free(s);
    bag_close(&b);
}

/* --- stats --- */

static void
test_stats(void **state)
{
    (void)state;
    struct gq_class_conf cc[2] = {klass("a", 0, 3, 0), klass("b", 0, 1, 0)};
    struct gq_sched *s = mksched(cc, 2, 2, GQ_SHARE_TIME);
    struct bag b;
    bag_init(&b, 32);
    int64_t now = 10 * SEC;
    struct gq_class_stats st;

    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready + st.backoff + st.running, 0);
    assert_int_equal(st.oldest_enq_us, 0);
    assert_near(st.share, 0, 0);
    assert_int_equal(st.streak, 0);

    struct gq_job *a1 = enq(s, &b, 0, 0, now);
    enq(s, &b, 0, 0, now + SEC);
    enq(s, &b, 0, 0, now + 2 * SEC);
    struct gq_job *ab = bag_job(&b, 0, 0);
    ab->ready_at_us = now + 100 * SEC;
    gq_sched_enqueue(s, ab, now);
    struct gq_job *b1 = enq(s, &b, 1, 0, now + 3 * SEC);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 3);
    assert_int_equal(st.backoff, 1);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.oldest_enq_us, now);

    now += 5 * SEC;
    struct gq_job *g = must_pick(s, now);
    assert_ptr_equal(g, a1);
    struct gq_job *h = must_pick(s, now);
    assert_ptr_equal(h, b1);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.ready, 2);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.grants, 1);
    assert_int_equal(st.streak, 0); /* b had the last grant */
    assert_int_equal(st.oldest_enq_us, now - 4 * SEC);
    gq_sched_stats(s, 1, &st);
    assert_int_equal(st.streak, 1);
    assert_int_equal(st.ready, 0);
    assert_int_equal(st.oldest_enq_us, 0);

    /* a runs 3 s, b 1 s: shares are of GPU time within the tier, and
     * virtual time is seconds / weight. */
    gq_sched_release(s, g, now + 3 * SEC);
    gq_sched_release(s, h, now + 1 * SEC);
    gq_sched_stats(s, 0, &st);
    assert_near(st.share, 0.75, 1e-12);
    assert_near(st.granted_s, 3, 1e-12);
    assert_near(st.vtime, 1.0, 1e-12);
    assert_int_equal(st.running, 0);
    gq_sched_stats(s, 1, &st);
    assert_near(st.share, 0.25, 1e-12);
    assert_near(st.vtime, 1.0, 1e-12);

    /* a streak counts grants in a row of the last class. */
    now += 10 * SEC;
    g = must_pick(s, now);
    gq_sched_release(s, g, now);
    g = must_pick(s, now);
    assert_int_equal(g->cls, 0);
    gq_sched_release(s, g, now);
    gq_sched_stats(s, 0, &st);
    assert_int_equal(st.streak, 2);
    assert_int_equal(st.grants, 3);
    gq_sched_free(s);
    bag_close(&b);
}

/* --- random operations against a model --- */

enum { M_FREE, M_READY, M_BACKOFF, M_RUNNING };

#define FZ_CLASSES 5
#define FZ_JOBS 300

struct model {
    struct gq_sched *s;
    struct bag b;
    int where[FZ_JOBS];
    int64_t ready_at[FZ_JOBS];
    int64_t deadline[FZ_JOBS];
    int servable[FZ_CLASSES];
    int last[16];              /* per tier key: class of the last grant */
    uint32_t streak[16];
    int draining;
};

/* Tiers by priority: 1 (hi) and 0 (the three fair-shared classes). */
static const struct {
    const char *name;
    int prio;
    double weight;
    int cap;
} fz_cc[FZ_CLASSES] = {
    {"hi", 1, 1, 1},
    {"t", 0, 70, 2},
    {"s", 0, 30, 1},
    {"x", 0, 10, 0},
    {"hi2", 1, 2, 3},
};

static int
mjob_index(const struct model *m, const struct gq_job *j)
{
    return (int)(j - m->b.v);
}

/* Precedes: higher job priority, then lower seq. */
static int
before(const struct gq_job *a, const struct gq_job *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static struct gq_job *
model_head(const struct model *m, int c)
{
    struct gq_job *h = NULL;
    for (int i = 0; i < m->b.n; i++) {
        struct gq_job *j = &m->b.v[i];
        if (m->where[i] == M_READY && j->cls == c && (h == NULL ||
                                                      before(j, h)))
            h = j;
    }
    return h;
}

static int
fz_servable(void *ud, const struct gq_job *head)
{
    struct model *m = ud;
    /* The scheduler only asks about class heads. */
    assert_ptr_equal(head, model_head(m, head->cls));
    return m->servable[head->cls];
}

static void
model_check(struct model *m)
{
    int cnt[FZ_CLASSES][4];
    memset(cnt, 0, sizeof cnt);
    int64_t timer = 0;
    for (int i = 0; i < m->b.n; i++) {
        const struct gq_job *j = &m->b.v[i];
        int w = m->where[i];
        cnt[j->cls][w]++;
        int64_t t[2] = {0, 0};
        if (w == M_BACKOFF)
            t[0] = m->ready_at[i];
        if (w == M_READY || w == M_BACKOFF)
            t[1] = m->deadline[i];
        for (int k = 0; k < 2; k++)
            if (t[k] > 0 && (timer == 0 || t[k] < timer))
                timer = t[k];
        if (w == M_RUNNING) {
            assert_int_equal(j->state, GQ_RUNNING);
            assert_ptr_equal(gq_sched_slot(m->s, j->slot), j);
        } else if (w != M_FREE) {
            assert_int_equal(j->state, GQ_QUEUED);
        }
    }
    int running = 0;
    for (int c = 0; c < FZ_CLASSES; c++) {
        struct gq_class_stats st;
        gq_sched_stats(m->s, c, &st);
        assert_int_equal(st.ready, cnt[c][M_READY]);
        assert_int_equal(st.backoff, cnt[c][M_BACKOFF]);
        assert_int_equal(st.running, cnt[c][M_RUNNING]);
        assert_int_equal(gq_sched_queued(m->s, c),
                         cnt[c][M_READY] + cnt[c][M_BACKOFF]);
        int key = fz_cc[c].prio;
        assert_int_equal(st.streak, m->last[key] == c ? m->streak[key] : 0);
        running += cnt[c][M_RUNNING];
    }
    assert_int_equal(gq_sched_free_slots(m->s),
                     gq_sched_nslots(m->s) - running);
    assert_int_equal(gq_sched_next_timer(m->s), timer);
}

static int
model_capped(const struct model *m, int c)
{
    int key = fz_cc[c].prio;
    return fz_cc[c].cap > 0 && m->last[key] == c &&
           m->streak[key] >= (uint32_t)fz_cc[c].cap;
}

static void
fz_pick(struct model *m, int64_t now)
{
    struct gq_job *head[FZ_CLASSES];
    double vt[FZ_CLASSES];
    int top = -1;
    for (int c = 0; c < FZ_CLASSES; c++) {
        struct gq_class_stats st;
        gq_sched_stats(m->s, c, &st);
        vt[c] = st.vtime;
        head[c] = model_head(m, c);
        if (head[c] && m->servable[c] && fz_cc[c].prio > top)
            top = fz_cc[c].prio;
    }
    int nfree = gq_sched_free_slots(m->s);
    struct gq_job *g = gq_sched_pick(m->s, now, fz_servable, m);
    if (m->draining || nfree == 0 || top < 0) {
        if (g != NULL)
            fail_msg("granted j%llu with nothing to grant",
                     (unsigned long long)g->seq);
        return;
    }
    if (g == NULL)
        fail_msg("pick returned NULL with a free slot and a servable "
                 "ready job (tier %d)", top);
    int c = g->cls;
    assert_ptr_equal(g, head[c]);
    assert_int_equal(fz_cc[c].prio, top);
    assert_true(m->servable[c]);
    /* Candidates: servable heads of the tier; a capped one is skipped
     * when there is another; the winner has the least virtual time. */
    int ncand = 0, skip = -1;
    for (int k = 0; k < FZ_CLASSES; k++)
        if (fz_cc[k].prio == top && head[k] && m->servable[k])
            ncand++;
    for (int k = 0; k < FZ_CLASSES; k++)
        if (ncand > 1 && fz_cc[k].prio == top && head[k] &&
            m->servable[k] && model_capped(m, k))
            skip = k;
    assert_int_not_equal(c, skip);
    for (int k = 0; k < FZ_CLASSES; k++)
        if (k != skip && fz_cc[k].prio == top && head[k] && m->servable[k])
            assert_true(vt[c] <= vt[k]);
    if (m->last[top] == c) {
        m->streak[top]++;
    } else {
        m->last[top] = c;
        m->streak[top] = 1;
    }
    assert_int_equal(g->grant_us, now);
    m->where[mjob_index(m, g)] = M_RUNNING;
}

static void
fz_reason(struct model *m, int i)
{
    const struct gq_job *j = &m->b.v[i];
    uint32_t pos = 99;
    if (m->where[i] == M_FREE)
        return; /* not in the scheduler: no question to ask */
    enum gq_reason r = gq_sched_reason(m->s, j, &pos);
    if (m->where[i] == M_BACKOFF) {
        assert_int_equal(r, GQ_R_BACKOFF);
        assert_int_equal(pos, 0);
        return;
    }
    if (m->where[i] != M_READY) {
        assert_int_equal(r, GQ_R_NONE);
        return;
    }
    uint32_t want = 1;
    int higher = 0;
    for (int k = 0; k < m->b.n; k++) {
        const struct gq_job *o = &m->b.v[k];
        if (m->where[k] != M_READY)
            continue;
        if (o->cls == j->cls && before(o, j))
            want++;
        if (fz_cc[o->cls].prio > fz_cc[j->cls].prio)
            higher = 1;
    }
    assert_int_equal(pos, want);
    if (m->draining) {
        assert_int_equal(r, GQ_R_DRAINING);
    } else if (higher) {
        assert_int_equal(r, GQ_R_PRIORITY);
    } else if (pos > 1) {
        assert_int_equal(r, GQ_R_GPU_BUSY);
    } else {
        struct gq_class_stats me, st;
        gq_sched_stats(m->s, j->cls, &me);
        int other = 0, owed = 0;
        for (int c = 0; c < FZ_CLASSES; c++) {
            if (c == j->cls || fz_cc[c].prio != fz_cc[j->cls].prio)
                continue;
            gq_sched_stats(m->s, c, &st);
            if (st.ready == 0)
                continue;
            other = 1;
            if (st.vtime < me.vtime)
                owed = 1;
        }
        if (other && model_capped(m, j->cls))
            assert_int_equal(r, GQ_R_CAP);
        else if (owed)
            assert_int_equal(r, GQ_R_SHARE);
        else
            assert_int_equal(r, GQ_R_GPU_BUSY);
    }
}

static void
test_random_ops(void **state)
{
    (void)state;
    struct gq_class_conf cc[FZ_CLASSES];
    for (int c = 0; c < FZ_CLASSES; c++)
        cc[c] = klass(fz_cc[c].name, fz_cc[c].prio, fz_cc[c].weight,
                      fz_cc[c].cap);
    struct model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->s = mksched(cc, FZ_CLASSES, 3, GQ_SHARE_TIME);
    bag_init(&m->b, FZ_JOBS);
    for (int i = 0; i < FZ_JOBS; i++)
        bag_job(&m->b, (int)(i % FZ_CLASSES), 0);
    for (int k = 0; k < 16; k++)
        m->last[k] = -1;
    uint64_t rng = 2024;
    int64_t now = SEC;
    long picks = 0, expired = 0, ticked = 0;

    for (int step = 0; step < 20000; step++) {
        int op = (int)rnd_below(&rng, 100);
        int i = (int)rnd_below(&rng, FZ_JOBS);
        struct gq_job *j = &m->b.v[i];
        now += (int64_t)rnd_below(&rng, 2 * MS);
        for (int c = 0; c < FZ_CLASSES; c++)
            m->servable[c] = rnd_below(&rng, 10) < 8;
        if (op < 35) {
            /* Submit: a free job comes back with a fresh seq. */
            if (m->where[i] != M_FREE)
                continue;
            int cls = (int)rnd_below(&rng, FZ_CLASSES);
            gq_job_init(j, ++m->b.seq, (uint16_t)cls,
                        (int)rnd_below(&rng, 5) - 2, GQ_KIND_JOB);
            if (rnd_below(&rng, 5) == 0)
                j->ready_at_us = now + 1 + rnd_below(&rng, 50 * MS);
            if (rnd_below(&rng, 5) == 0)
                j->deadline_us = now + 1 + rnd_below(&rng, 200 * MS);
            m->ready_at[i] = j->ready_at_us;
            m->deadline[i] = j->deadline_us;
            gq_sched_enqueue(m->s, j, now);
            m->where[i] = m->ready_at[i] > now ? M_BACKOFF : M_READY;
        } else if (op < 60) {
            fz_pick(m, now);
            picks++;
        } else if (op < 78) {
            /* Release a running job: done, or (yield) back to the queue
             * with its seq and priority. */
            if (m->where[i] != M_RUNNING)
                continue;
            gq_sched_release(m->s, j, now);
            m->where[i] = M_FREE;
            if (rnd_below(&rng, 2) == 0) {
                gq_sched_enqueue(m->s, j, now);
                m->where[i] = M_READY;
            }
        } else if (op < 86) {
            /* Cancel: remove, whatever its state. */
            gq_sched_remove(m->s, j);
            if (m->where[i] == M_READY || m->where[i] == M_BACKOFF)
                m->where[i] = M_FREE;
        } else if (op < 94) {
            now += (int64_t)rnd_below(&rng, 20 * MS);
            gq_sched_tick(m->s, now);
            for (int k = 0; k < FZ_JOBS; k++) {
                if (m->where[k] == M_BACKOFF && m->ready_at[k] <= now) {
                    m->where[k] = M_READY;
                    ticked++;
                }
            }
            struct gq_job *x;
            while ((x = gq_sched_pop_expired(m->s, now)) != NULL) {
                int k = mjob_index(m, x);
                assert_true(m->where[k] == M_READY ||
                            m->where[k] == M_BACKOFF);
                assert_true(m->deadline[k] > 0 && m->deadline[k] <= now);
                m->where[k] = M_FREE;
                expired++;
            }
            for (int k = 0; k < FZ_JOBS; k++)
                if ((m->where[k] == M_READY || m->where[k] == M_BACKOFF) &&
                    m->deadline[k] > 0 && m->deadline[k] <= now)
                    fail_msg("job %d past its deadline was not popped", k);
        } else if (op < 98) {
            fz_reason(m, i);
        } else {
            m->draining = op == 98 && rnd_below(&rng, 3) == 0;
            gq_sched_set_draining(m->s, m->draining);
        }
        model_check(m);
    }
    print_message("  %ld picks, %ld backoff ends, %ld expiries\n", picks,
                  ticked, expired);
    assert_true(picks > 4000 && ticked > 100 && expired > 100);
    gq_sched_free(m->s);
    bag_close(&m->b);
    free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_config),
        cmocka_unit_test(test_class_lookup),
        cmocka_unit_test(test_strict_tiers),
        cmocka_unit_test(test_strict_tiers_random),
        cmocka_unit_test(test_shares_time_70_30),
        cmocka_unit_test(test_shares_time_50_30_20),
        cmocka_unit_test(test_shares_grants),
        cmocka_unit_test(test_shares_grants_ignore_length),
        cmocka_unit_test(test_caps_beat_weights),
        cmocka_unit_test(test_caps_random_lengths),
        cmocka_unit_test(test_work_conserving_alone),
        cmocka_unit_test(test_no_banked_credit_backlogged),
        cmocka_unit_test(test_no_banked_credit_caps),
        cmocka_unit_test(test_no_banked_credit_idle_gap),
        cmocka_unit_test(test_priority_then_fifo),
        cmocka_unit_test(test_yield_keeps_place),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_servable),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_random_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
