/*
 * sched_bench.c - how fair and how fast the scheduler is.
 *
 * Three measurements, printed as plain text lines meant to be pasted into
 * doc/BENCHMARKS.md:
 *  (a) fairness: achieved share against weight over 10,000 grants on one
 *      slot with every class always backlogged (a fake clock; exact and
 *      repeatable, a fixed PRNG seed);
 *  (b) decision latency: one pick + release + re-enqueue with 10^2, 10^4
 *      and 10^6 jobs queued across three classes (CLOCK_MONOTONIC);
 *  (c) memory: bytes per queued job, from sizeof and from the heap growth
 *      that mallinfo2() sees while 10^6 jobs are allocated, indexed and
 *      queued.
 * Runs in well under a minute on two cores.  No arguments.
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/job.h"
#include "core/sched.h"

#define MS 1000LL
#define SEC 1000000LL

/* splitmix64: a fixed seed makes every run grant the same sequence. */
static uint64_t
rnd_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct gq_class_conf
klass(const char *name, double weight, int cap)
{
    struct gq_class_conf c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    c.weight = weight;
    c.max_consecutive = cap;
    c.max_queue = 1000000;
    return c;
}

static struct gq_sched *
mksched(const struct gq_class_conf *cc, int n, enum gq_share_by by)
{
    char msg[128];
    struct gq_sched *s = gq_sched_new(cc, n, 1, by, 1, msg, sizeof msg);
    if (s == NULL) {
        fprintf(stderr, "sched_bench: gq_sched_new: %s\n", msg);
        exit(1);
    }
    return s;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* --- (a) fairness --- */

struct fair_case {
    const char *label;
    int ncls;
    struct gq_class_conf cc[3];
    enum gq_share_by by;
    int64_t lo, hi;            /* grant length, uniform lo..hi us */
};

static void
fairness(const struct fair_case *fc)
{
    enum { N = 10000, QUEUED = 3 };
    struct gq_sched *s = mksched(fc->cc, fc->ncls, fc->by);
    struct gq_job jobs[3 * QUEUED];
    uint64_t seq = 0, rng = 42;
    int64_t now = SEC, gpu[3] = {0};
    long grants[3] = {0};
    int run[3] = {0}, longest[3] = {0}, prev = -1;

    for (int i = 0; i < fc->ncls * QUEUED; i++) {
        gq_job_init(&jobs[i], ++seq, (uint16_t)(i % fc->ncls), 0,
                    GQ_KIND_JOB);
        gq_sched_enqueue(s, &jobs[i], now);
    }
    for (int i = 0; i < N; i++) {
        struct gq_job *j = gq_sched_pick(s, now, NULL, NULL);
        if (j == NULL) {
            fprintf(stderr, "sched_bench: nothing granted\n");
            exit(1);
        }
        int64_t d = fc->lo;
        if (fc->hi > fc->lo)
            d += (int64_t)(rnd_next(&rng) % (uint64_t)(fc->hi - fc->lo + 1));
        now += d;
        gq_sched_release(s, j, now);
        int c = j->cls;
        gpu[c] += d;
        grants[c]++;
        run[c] = c == prev ? run[c] + 1 : 1;
        if (run[c] > longest[c])
            longest[c] = run[c];
        prev = c;
        gq_job_init(j, ++seq, (uint16_t)c, 0, GQ_KIND_JOB);
        gq_sched_enqueue(s, j, now);
    }
    double wsum = 0, tsum = 0;
    for (int c = 0; c < fc->ncls; c++) {
        wsum += fc->cc[c].weight;
        tsum += (double)gpu[c];
    }
    for (int c = 0; c < fc->ncls; c++) {
        double want = fc->cc[c].weight / wsum;
        double ts = (double)gpu[c] / tsum, gs = (double)grants[c] / N;
        double got = fc->by == GQ_SHARE_TIME ? ts : gs;
        printf("%-34s %-14s %6.3f %7.4f %7.4f %+7.2f %5d\n",
               c == 0 ? fc->label : "", fc->cc[c].name, want, ts, gs,
               100 * (got - want), longest[c]);
    }
    gq_sched_free(s);
}

static void
bench_fairness(void)
{
    static const struct fair_case cases[] = {
        {"70/30 time, caps off, 1-100 ms", 2,
         {{"transcription", 0, 70, 0, 0, 0, 0, 0},
          {"summarization", 0, 30, 0, 0, 0, 0, 0}},
         GQ_SHARE_TIME, 1 * MS, 100 * MS},
        {"70/30 time, caps 2/1, 1-100 ms", 2,
         {{"transcription", 0, 70, 2, 0, 0, 0, 0},
          {"summarization", 0, 30, 1, 0, 0, 0, 0}},
         GQ_SHARE_TIME, 1 * MS, 100 * MS},
        {"70/30 time, caps 2/1, equal 1 s", 2,
         {{"transcription", 0, 70, 2, 0, 0, 0, 0},
          {"summarization", 0, 30, 1, 0, 0, 0, 0}},
         GQ_SHARE_TIME, SEC, SEC},
        {"50/30/20 time, caps off, 1-100 ms", 3,
         {{"a", 0, 50, 0, 0, 0, 0, 0},
          {"b", 0, 30, 0, 0, 0, 0, 0},
          {"c", 0, 20, 0, 0, 0, 0, 0}},
         GQ_SHARE_TIME, 1 * MS, 100 * MS},
        {"70/30 grants, caps off, 1-100 ms", 2,
         {{"transcription", 0, 70, 0, 0, 0, 0, 0},
          {"summarization", 0, 30, 0, 0, 0, 0, 0}},
         GQ_SHARE_GRANTS, 1 * MS, 100 * MS},
    };
    printf("## (a) fairness: 10000 grants, 1 slot, every class always "
           "backlogged\n");
    printf("# time/grants = achieved share of GPU time / of grants; "
           "err = the share_by one minus weight share, in points\n");
    printf("%-34s %-14s %6s %7s %7s %7s %5s\n", "config", "class", "weight",
           "time", "grants", "err", "run");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fairness(&cases[i]);
    printf("\n");
}

/* --- (b) decision latency --- */

static int
serve_all(void *ud, const struct gq_job *head)
{
    (void)ud;
    (void)head;
    return 1;
}

struct lat {
    double median, mean, p50, p99;
};

/*
 * n jobs queued across 3 classes (50/30/20, caps 2/1/0), one slot.  One
 * op: pick (with a servable callback, as the daemon does), release, and
 * the same memory re-enqueued as a new submission.  With randprio the
 * jobs carry random priorities, so each re-enqueue lands at a random
 * place in its class's treap; otherwise every job has priority 0 and a
 * re-enqueue goes to the tail.
 */
static struct lat
latency(uint32_t n, int randprio)
{
    enum { WARM = 20000, BATCH = 1000, NBATCH = 300, SINGLE = 100000 };
    static int64_t samples[SINGLE];
    struct gq_class_conf cc[3] = {klass("a", 50, 2), klass("b", 30, 1),
                                  klass("c", 20, 0)};
    struct gq_sched *s = mksched(cc, 3, GQ_SHARE_TIME);
    struct gq_job *jobs = malloc((size_t)n * sizeof *jobs);
    double batch[NBATCH];
    uint64_t seq = 0, rng = 7;
    int64_t now = SEC;
    struct lat r;

    if (jobs == NULL) {
        fprintf(stderr, "sched_bench: out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < n; i++) {
        int32_t prio = randprio ? (int32_t)(rnd_next(&rng) % 2001) - 1000 : 0;
        gq_job_init(&jobs[i], ++seq, (uint16_t)(i % 3), prio, GQ_KIND_JOB);
        gq_sched_enqueue(s, &jobs[i], now);
    }

#define ONE_OP()                                                            \
    do {                                                                    \
        struct gq_job *j = gq_sched_pick(s, now, serve_all, NULL);          \
        now += MS;                                                          \
        gq_sched_release(s, j, now);                                        \
        int32_t p = randprio ? (int32_t)(rnd_next(&rng) % 2001) - 1000 : 0; \
        gq_job_init(j, ++seq, j->cls, p, GQ_KIND_JOB);                      \
        gq_sched_enqueue(s, j, now);                                        \
    } while (0)

    for (int i = 0; i < WARM; i++)
        ONE_OP();
    double total = 0;
    for (int b = 0; b < NBATCH; b++) {
        int64_t t0 = mono_ns();
        for (int i = 0; i < BATCH; i++)
            ONE_OP();
        batch[b] = (double)(mono_ns() - t0) / BATCH;
        total += batch[b];
    }
    /* Each op timed alone, for the tail (includes one clock read). */
    for (int i = 0; i < SINGLE; i++) {
        int64_t t0 = mono_ns();
        ONE_OP();
        samples[i] = mono_ns() - t0;
    }
#undef ONE_OP
    qsort(batch, NBATCH, sizeof batch[0], cmp_double);
    qsort(samples, SINGLE, sizeof samples[0], cmp_i64);
    r.median = batch[NBATCH / 2];
    r.mean = total / NBATCH;
    r.p50 = (double)samples[SINGLE / 2];
    r.p99 = (double)samples[SINGLE * 99 / 100];
    gq_sched_free(s);
    free(jobs);
    return r;
}

static void
bench_latency(void)
{
    static const uint32_t sizes[] = {100, 10000, 1000000};
    int64_t t0 = mono_ns(), clk;
    for (int i = 0; i < 1000; i++)
        (void)mono_ns();
    clk = (mono_ns() - t0) / 1000;

    printf("## (b) decision latency: pick + release + re-enqueue, "
           "3 classes (50/30/20, caps 2/1/0), 1 slot\n");
    printf("# ns/op: median and mean of 300 batches of 1000 ops; p50/p99: "
           "100000 ops timed one by one (incl. ~%" PRId64 " ns clock read)\n",
           clk);
    printf("%-8s %-10s %10s %10s %8s %8s\n", "order", "queued", "median",
           "mean", "p50", "p99");
    for (int rp = 0; rp < 2; rp++) {
        struct lat l[3];
        for (int i = 0; i < 3; i++) {
            l[i] = latency(sizes[i], rp);
            printf("%-8s %-10" PRIu32 " %10.1f %10.1f %8.0f %8.0f\n",
                   rp ? "random" : "fifo", sizes[i], l[i].median, l[i].mean,
                   l[i].p50, l[i].p99);
        }
        printf("ratio %s 10^6/10^2 (median ns/op): %.2fx (goal <= 2x)\n",
               rp ? "random" : "fifo", l[2].median / l[0].median);
    }
    printf("\n");
}

/* --- (c) memory --- */

static size_t
heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void
bench_memory(void)
{
    enum { N = 1000000 };
    struct gq_class_conf cc[3] = {klass("a", 50, 2), klass("b", 30, 1),
                                  klass("c", 20, 0)};
    struct gq_sched *s = mksched(cc, 3, GQ_SHARE_TIME);
    struct gq_jobtab tab;
    struct gq_job **jobs = malloc(N * sizeof *jobs);
    if (jobs == NULL || gq_jobtab_init(&tab) < 0) {
        fprintf(stderr, "sched_bench: out of memory\n");
        exit(1);
    }

    /* As the daemon keeps them: one allocation per job, every job in the
     * id table, every job queued with a queue deadline (the worst case:
     * the deadline heap then holds them all). */
    size_t m0 = heap_used();
    for (uint32_t i = 0; i < N; i++) {
        jobs[i] = malloc(sizeof *jobs[i]);
        if (jobs[i] == NULL) {
            fprintf(stderr, "sched_bench: out of memory\n");
            exit(1);
        }
        gq_job_init(jobs[i], i + 1, (uint16_t)(i % 3), 0, GQ_KIND_JOB);
        jobs[i]->deadline_us = 3600 * SEC + i;
    }
    size_t m1 = heap_used();
    for (uint32_t i = 0; i < N; i++)
        if (gq_jobtab_put(&tab, jobs[i]) < 0) {
            fprintf(stderr, "sched_bench: out of memory\n");
            exit(1);
        }
    size_t m2 = heap_used();
    for (uint32_t i = 0; i < N; i++)
        gq_sched_enqueue(s, jobs[i], SEC);
    size_t m3 = heap_used();

    printf("## (c) memory: 10^6 queued jobs (one malloc each, in the id "
           "table, each with a queue deadline)\n");
    printf("sizeof(struct gq_job): %zu bytes\n", sizeof(struct gq_job));
    printf("heap per job, job structs (malloc'd one by one): %.1f bytes\n",
           (double)(m1 - m0) / N);
    printf("heap per job, id table buckets: %.1f bytes\n",
           (double)(m2 - m1) / N);
    printf("heap per job, scheduler (deadline heap): %.1f bytes\n",
           (double)(m3 - m2) / N);
    printf("bytes per queued job, total: %.1f (goal <= 512)\n",
           (double)(m3 - m0) / N);
    printf("\n");

    for (uint32_t i = 0; i < N; i++) {
        gq_sched_remove(s, jobs[i]);
        free(jobs[i]);
    }
    free(jobs);
    gq_jobtab_close(&tab);
    gq_sched_free(s);
}

int
main(void)
{
    int64_t t0 = mono_ns();
    printf("# gpuq sched_bench: struct gq_job %zu bytes\n\n",
           sizeof(struct gq_job));
    bench_fairness();
    fflush(stdout);
    bench_latency();
    fflush(stdout);
    bench_memory();
    printf("# total %.1f s\n", (double)(mono_ns() - t0) / 1e9);
    return 0;
}
