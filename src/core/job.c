/* job.c - job states and reasons as strings, ids, and the job table. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "job.h"

static const char *const state_names[] = {
#define X(n, s) s,
    GQ_STATE_MAP(X)
#undef X
};

static const char *const reason_names[] = {
#define X(n, s) s,
    GQ_REASON_MAP(X)
#undef X
};

const char *
gq_state_str(enum gq_state s)
{
    return (unsigned)s < GQ_NSTATES ? state_names[s] : "unknown";
}

const char *
gq_reason_str(enum gq_reason r)
{
    return (unsigned)r < GQ_NREASONS ? reason_names[r] : "unknown";
}

const char *
gq_kind_str(enum gq_kind k)
{
    return k == GQ_KIND_LOCK ? "lock" : "job";
}

int
gq_state_parse(const char *s, enum gq_state *out)
{
    for (int i = 0; i < GQ_NSTATES; i++) {
        if (strcmp(s, state_names[i]) == 0) {
            *out = (enum gq_state)i;
            return 0;
        }
    }
    return GQ_EINVAL;
}

int
gq_state_terminal(enum gq_state s)
{
    return s != GQ_QUEUED && s != GQ_RUNNING;
}

void
gq_job_init(struct gq_job *j, uint64_t seq, uint16_t cls, int32_t priority,
            enum gq_kind kind)
{
    memset(j, 0, sizeof *j);
    j->seq = seq;
    j->cls = cls;
    j->priority = priority;
    j->kind = (uint8_t)kind;
    j->state = GQ_QUEUED;
    j->slot = -1;
}

char *
gq_job_id(uint64_t seq, char *buf, size_t len)
{
    snprintf(buf, len, "j%" PRIu64, seq);
    return buf;
}

int
gq_job_parse_id(const char *s, uint64_t *seq)
{
    uint64_t v = 0;
    /* "j" + at most 20 digits: UINT64_MAX has 20. */
    if (s == NULL || s[0] != 'j' || s[1] == '\0' || strlen(s) > 21)
        return GQ_EINVAL;
    for (const char *p = s + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return GQ_EINVAL;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return GQ_EINVAL;
        v = v * 10 + d;
    }
    if (v == 0)
        return GQ_EINVAL;
    *seq = v;
    return 0;
}

/* The job table: chained hashing on a mixed seq, doubling at load 1. */

static size_t
slot_of(uint64_t seq, size_t n)
{
    seq ^= seq >> 33;
    seq *= 0xff51afd7ed558ccdULL;
    seq ^= seq >> 33;
    return (size_t)seq & (n - 1);
}

int
gq_jobtab_init(struct gq_jobtab *t)
{
    t->nbuckets = 1024;
    t->count = 0;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    return t->buckets ? 0 : GQ_ENOMEM;
}

void
gq_jobtab_close(struct gq_jobtab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

static int
grow(struct gq_jobtab *t)
{
    size_t n = t->nbuckets * 2;
    struct gq_job **b = calloc(n, sizeof *b);
    if (b == NULL)
        return GQ_ENOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct gq_job *j = t->buckets[i], *next;
        for (; j; j = next) {
            next = j->h_next;
            size_t k = slot_of(j->seq, n);
            j->h_next = b[k];
            b[k] = j;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

int
gq_jobtab_put(struct gq_jobtab *t, struct gq_job *j)
{
    if (t->count >= t->nbuckets && grow(t) < 0)
        return GQ_ENOMEM;
    size_t k = slot_of(j->seq, t->nbuckets);
    j->h_next = t->buckets[k];
    t->buckets[k] = j;
    t->count++;
    return 0;
}

struct gq_job *
gq_jobtab_get(const struct gq_jobtab *t, uint64_t seq)
{
    struct gq_job *j = t->buckets[slot_of(seq, t->nbuckets)];
    while (j && j->seq != seq)
        j = j->h_next;
    return j;
}

void
gq_jobtab_del(struct gq_jobtab *t, struct gq_job *j)
{
    struct gq_job **pp = &t->buckets[slot_of(j->seq, t->nbuckets)];
    while (*pp && *pp != j)
        pp = &(*pp)->h_next;
    if (*pp) {
        *pp = j->h_next;
        j->h_next = NULL;
        t->count--;
    }
}

void
gq_jobtab_each(const struct gq_jobtab *t,
               void (*fn)(struct gq_job *, void *), void *ud)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct gq_job *j, *next;
        for (j = t->buckets[i]; j; j = next) {
            next = j->h_next; /* fn may free j */
            fn(j, ud);
        }
    }
}
