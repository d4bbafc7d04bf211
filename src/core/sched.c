/*
 * sched.c - the scheduling policy (see sched.h and doc/scheduling.md).
 *
 * Per class: a treap of ready jobs ordered by (job priority desc, seq asc)
 * with subtree sizes, so the head, inserts, deletes and a job's position
 * are all O(log n); a FIFO of ready jobs in enqueue order for the oldest
 * wait.  Two binary heaps hold queued jobs by backoff end and by queue
 * deadline.  Classes are grouped into tiers by priority; a pick looks at
 * each class of the first tier with work once: O(classes + log jobs).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assert.h"
#include "err.h"
#include "sched.h"


struct sclass {
    struct gq_class_conf conf;
    int tier;                 /* index into tiers */
    struct gq_job *root;      /* ready treap */
    struct gq_job *head;      /* its first job, cached: picks are O(1) */
    struct gq_job *f_head;    /* ready jobs, oldest enqueue first */
    struct gq_job *f_tail;
    uint32_t nready, nbackoff, nrunning;
    double vtime;             /* charged GPU time (or grants) / weight */
    double charged;           /* charged GPU seconds (or grants) */
    uint64_t grants;
    double granted_s;
};

struct tier {
    int priority;
    int ncls;
    int cls[GQ_MAX_CLASSES];  /* member classes, in config order */
    int last;                 /* class of the last grant, -1 none */
    uint32_t streak;          /* grants in a row of `last` */
    double vclock;            /* least vtime of its active classes, as of
                                 the last charge; never goes back */
};

/* A binary min-heap of jobs keyed by an int64 field; each job stores its
 * index+1 in a uint32 field so it can be removed from the middle. */
struct jheap {
    struct gq_job **v;
    uint32_t n, cap;
    size_t key_off;           /* offsetof the int64_t key */
    size_t idx_off;           /* offsetof the uint32_t index+1 */
};

struct gq_sched {
    int ncls;
    struct sclass cls[GQ_MAX_CLASSES];
    int ntiers;
    struct tier tiers[GQ_MAX_CLASSES]; /* by priority, highest first */
    int nslots, nfree;
    struct gq_job *slots[GQ_MAX_SLOTS];
    enum gq_share_by share_by;
    uint32_t rng;
    int draining;
    struct jheap backoff;     /* by ready_at_us */
    struct jheap deadline;    /* by deadline_us */
};

/* --- heaps --- */

#define HKEY(h, j) (*(int64_t *)((char *)(j) + (h)->key_off))
#define HIDX(h, j) (*(uint32_t *)((char *)(j) + (h)->idx_off))

static void
hset(struct jheap *h, uint32_t i, struct gq_job *j)
{
    h->v[i] = j;
    HIDX(h, j) = i + 1;
}

static void
hup(struct jheap *h, uint32_t i)
{
    struct gq_job *j = h->v[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (HKEY(h, h->v[p]) <= HKEY(h, j))
            break;
        hset(h, i, h->v[p]);
        i = p;
    }
    hset(h, i, j);
}

static void
hdown(struct jheap *h, uint32_t i)
{
    struct gq_job *j = h->v[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && HKEY(h, h->v[c + 1]) < HKEY(h, h->v[c]))
            c++;
        if (HKEY(h, j) <= HKEY(h, h->v[c]))
            break;
        hset(h, i, h->v[c]);
        i = c;
    }
    hset(h, i, j);
}

/* Returns 0 or GQ_ENOMEM (the job is then not in the heap). */
static int
hpush(struct jheap *h, struct gq_job *j)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        struct gq_job **v = realloc(h->v, cap * sizeof *v);
        if (v == NULL)
            return GQ_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    hset(h, h->n++, j);
    hup(h, h->n - 1);
    return 0;
}

static void
hdel(struct jheap *h, struct gq_job *j)
{
    uint32_t i = HIDX(h, j);
    GQ_ASSERT(i > 0 && i <= h->n && h->v[i - 1] == j);
    i--;
    HIDX(h, j) = 0;
    h->n--;
    if (i == h->n)
        return;
    hset(h, i, h->v[h->n]);
    hup(h, i);
    hdown(h, HIDX(h, h->v[i]) - 1);
}

static struct gq_job *
htop(const struct jheap *h)
{
    return h->n ? h->v[0] : NULL;
}

/* --- treap of ready jobs --- */

static int
jcmp(const struct gq_job *a, const struct gq_job *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

static uint32_t
tsize(const struct gq_job *t)
{
    return t ? t->t_size : 0;
}

static void
tfix(struct gq_job *t)
{
    t->t_size = 1 + tsize(t->t_left) + tsize(t->t_right);
}

static struct gq_job *
rot_right(struct gq_job *t)
{
    struct gq_job *l = t->t_left;
    t->t_left = l->t_right;
    l->t_right = t;
    tfix(t);
    tfix(l);
    return l;
}

static struct gq_job *
rot_left(struct gq_job *t)
{
    struct gq_job *r = t->t_right;
    t->t_right = r->t_left;
    r->t_left = t;
    tfix(t);
    tfix(r);
    return r;
}

static struct gq_job *
tinsert(struct gq_job *t, struct gq_job *j)
{
    if (t == NULL) {
        j->t_left = j->t_right = NULL;
        j->t_size = 1;
        return j;
    }
    if (jcmp(j, t) < 0) {
        t->t_left = tinsert(t->t_left, j);
        if (t->t_left->t_prio > t->t_prio)
            return rot_right(t);
    } else {
        t->t_right = tinsert(t->t_right, j);
        if (t->t_right->t_prio > t->t_prio)
            return rot_left(t);
    }
    tfix(t);
    return t;
}

static struct gq_job *
tmerge(struct gq_job *a, struct gq_job *b)
{
    if (a == NULL)
        return b;
    if (b == NULL)
        return a;
    if (a->t_prio > b->t_prio) {
        a->t_right = tmerge(a->t_right, b);
        tfix(a);
        return a;
    }
    b->t_left = tmerge(a, b->t_left);
    tfix(b);
    return b;
}

static struct gq_job *
tdelete(struct gq_job *t, struct gq_job *j)
{
    GQ_ASSERT(t != NULL);
    if (t == j)
        return tmerge(t->t_left, t->t_right);
    if (jcmp(j, t) < 0)
        t->t_left = tdelete(t->t_left, j);
    else
        t->t_right = tdelete(t->t_right, j);
    tfix(t);
    return t;
}

static struct gq_job *
tfirst(struct gq_job *t)
{
    if (t)
        while (t->t_left)
            t = t->t_left;
    return t;
}

/* 1-based rank of j in the treap t (j must be in it). */
static uint32_t
trank(const struct gq_job *t, const struct gq_job *j)
{
    uint32_t r = 0;
    while (t) {
        int c = jcmp(j, t);
        if (c < 0) {
            t = t->t_left;
        } else {
            r += tsize(t->t_left) + 1;
            if (c == 0)
                return r;
            t = t->t_right;
        }
    }
    return 0;
}

/* --- class bookkeeping --- */

static uint32_t
rnd(struct gq_sched *s)
{
    /* xorshift32: only balances the treap. */
    uint32_t x = s->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return s->rng = x;
}

static int
active(const struct sclass *c)
{
    return c->nready > 0 || c->nrunning > 0;
}

/* Called before a class that may be idle gets work: an idle class starts
 * at the least virtual time of the active classes of its tier (or at the
 * tier's clock when none is active), so idling banks no credit. */
static void
wake(struct gq_sched *s, int ci)
{
    struct sclass *c = &s->cls[ci];
    if (active(c))
        return;
    struct tier *t = &s->tiers[c->tier];
    double min = INFINITY;
    for (int k = 0; k < t->ncls; k++) {
        const struct sclass *o = &s->cls[t->cls[k]];
        if (t->cls[k] != ci && active(o) && o->vtime < min)
            min = o->vtime;
    }
    if (min == INFINITY)
        min = t->vclock;
    if (c->vtime < min)
        c->vtime = min;
}

/* After a charge to c: moves its tier's clock up to the least virtual
 * time of the tier's active classes and c (active until just now).
 * Without it a class that wakes while the tier is idle for a moment
 * would keep the credit it "earned" while others ran. */
static void
advance_clock(struct gq_sched *s, const struct sclass *c)
{
    struct tier *t = &s->tiers[c->tier];
    double min = c->vtime;
    for (int k = 0; k < t->ncls; k++) {
        const struct sclass *o = &s->cls[t->cls[k]];
        if (active(o) && o->vtime < min)
            min = o->vtime;
    }
    if (min > t->vclock)
        t->vclock = min;
}

static void
make_ready(struct gq_sched *s, struct gq_job *j)
{
    struct sclass *c = &s->cls[j->cls];
    wake(s, j->cls);
    j->t_prio = rnd(s);
    c->root = tinsert(c->root, j);
    if (c->head == NULL || jcmp(j, c->head) < 0)
        c->head = j;
    j->f_next = NULL;
    j->f_prev = c->f_tail;
    if (c->f_tail)
        c->f_tail->f_next = j;
    else
        c->f_head = j;
    c->f_tail = j;
    c->nready++;
}

static void
unready(struct gq_sched *s, struct gq_job *j)
{
    struct sclass *c = &s->cls[j->cls];
    c->root = tdelete(c->root, j);
    if (c->head == j)
        c->head = tfirst(c->root);
    j->t_left = j->t_right = NULL;
    j->t_size = 0;
    if (j->f_prev)
        j->f_prev->f_next = j->f_next;
    else
        c->f_head = j->f_next;
    if (j->f_next)
        j->f_next->f_prev = j->f_prev;
    else
        c->f_tail = j->f_prev;
    j->f_prev = j->f_next = NULL;
    c->nready--;
}

/* --- public --- */

struct gq_sched *
gq_sched_new(const struct gq_class_conf *classes, int nclasses, int slots,
             enum gq_share_by share_by, uint32_t seed, char *msg, int msglen)
{
    char dummy[8];
    if (msg == NULL) {
        msg = dummy;
        msglen = sizeof dummy;
    }
    if (nclasses < 1 || nclasses > GQ_MAX_CLASSES) {
        snprintf(msg, (size_t)msglen, "need 1..%d classes", GQ_MAX_CLASSES);
        return NULL;
    }
    if (slots < 1 || slots > GQ_MAX_SLOTS) {
        snprintf(msg, (size_t)msglen, "slots must be 1..%d", GQ_MAX_SLOTS);
        return NULL;
    }
    for (int i = 0; i < nclasses; i++) {
        if (!(classes[i].weight > 0) || !isfinite(classes[i].weight)) {
            snprintf(msg, (size_t)msglen, "class %s: weight must be > 0",
                     classes[i].name);
            return NULL;
        }
        for (int k = 0; k < i; k++) {
            if (strcmp(classes[i].name, classes[k].name) == 0) {
                snprintf(msg, (size_t)msglen, "duplicate class %s",
                         classes[i].name);
                return NULL;
            }
        }
    }
    struct gq_sched *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(msg, (size_t)msglen, "out of memory");
        return NULL;
    }
    s->ncls = nclasses;
    s->nslots = s->nfree = slots;
    s->share_by = share_by;
    s->rng = seed ? seed : 0x9e3779b9u;
    s->backoff.key_off = offsetof(struct gq_job, ready_at_us);
    s->backoff.idx_off = offsetof(struct gq_job, b_idx);
    s->deadline.key_off = offsetof(struct gq_job, deadline_us);
    s->deadline.idx_off = offsetof(struct gq_job, d_idx);
    for (int i = 0; i < nclasses; i++) {
        s->cls[i].conf = classes[i];
        s->cls[i].conf.name[GQ_NAME_MAX - 1] = '\0';
    }
    /* Tiers: distinct priorities, highest first; members in config order. */
    for (int i = 0; i < nclasses; i++) {
        int p = classes[i].priority, t;
        for (t = 0; t < s->ntiers && s->tiers[t].priority != p; t++)
            ;
        if (t == s->ntiers) {
            int at = 0;
            while (at < s->ntiers && s->tiers[at].priority > p)
                at++;
            memmove(&s->tiers[at + 1], &s->tiers[at],
                    (size_t)(s->ntiers - at) * sizeof s->tiers[0]);
            memset(&s->tiers[at], 0, sizeof s->tiers[0]);
            s->tiers[at].priority = p;
            s->tiers[at].last = -1;
            s->ntiers++;
        }
    }
    for (int i = 0; i < nclasses; i++) {
        for (int t = 0; t < s->ntiers; t++) {
            if (s->tiers[t].priority == classes[i].priority) {
                s->tiers[t].cls[s->tiers[t].ncls++] = i;
                s->cls[i].tier = t;
            }
        }
    }
    return s;
}

void
gq_sched_free(struct gq_sched *s)
{
    if (s == NULL)
        return;
    free(s->backoff.v);
    free(s->deadline.v);
    free(s);
}

int
gq_sched_class(const struct gq_sched *s, const char *name)
{
    for (int i = 0; i < s->ncls; i++)
        if (strcmp(s->cls[i].conf.name, name) == 0)
            return i;
    return GQ_ENOCLASS;
}

int
gq_sched_nclasses(const struct gq_sched *s)
{
    return s->ncls;
}

const struct gq_class_conf *
gq_sched_conf(const struct gq_sched *s, int cls)
{
    return &s->cls[cls].conf;
}

int
gq_sched_nslots(const struct gq_sched *s)
{
    return s->nslots;
}

int
gq_sched_free_slots(const struct gq_sched *s)
{
    return s->nfree;
}

struct gq_job *
gq_sched_slot(const struct gq_sched *s, int i)
{
    return (i >= 0 && i < s->nslots) ? s->slots[i] : NULL;
}

void
gq_sched_enqueue(struct gq_sched *s, struct gq_job *j, int64_t now)
{
    GQ_ASSERT(j->cls < s->ncls && j->t_size == 0 && j->b_idx == 0 &&
              j->d_idx == 0 && j->slot < 0);
    j->state = GQ_QUEUED;
    j->enq_us = now;
    /* A failed push leaves the job without a deadline or made ready at
     * once: degraded timing, never a lost job. */
    if (j->deadline_us > 0)
        (void)hpush(&s->deadline, j);
    if (j->ready_at_us > now && hpush(&s->backoff, j) == 0) {
        s->cls[j->cls].nbackoff++;
        return;
    }
    j->ready_at_us = 0;
    make_ready(s, j);
}

void
gq_sched_remove(struct gq_sched *s, struct gq_job *j)
{
    if (j->state != GQ_QUEUED)
        return;
    if (j->b_idx) {
        hdel(&s->backoff, j);
        s->cls[j->cls].nbackoff--;
    } else if (j->t_size) {
        unready(s, j);
    }
    if (j->d_idx)
        hdel(&s->deadline, j);
}

static int
capped(const struct gq_sched *s, const struct tier *t, int ci)
{
    int cap = s->cls[ci].conf.max_consecutive;
    return t->last == ci && cap > 0 && t->streak >= (uint32_t)cap;
}

struct gq_job *
gq_sched_pick(struct gq_sched *s, int64_t now, gq_servable_fn servable,
              void *ud)
{
    if (s->draining || s->nfree == 0)
        return NULL;
    for (int ti = 0; ti < s->ntiers; ti++) {
        struct tier *t = &s->tiers[ti];
        int cand[GQ_MAX_CLASSES], nc = 0, skip = -1, best = -1;
        for (int k = 0; k < t->ncls; k++) {
            struct sclass *c = &s->cls[t->cls[k]];
            if (c->nready == 0)
                continue;
            if (servable && !servable(ud, c->head))
                continue;
            cand[nc++] = t->cls[k];
        }
        if (nc == 0)
            continue;
        for (int k = 0; nc > 1 && k < nc; k++)
            if (capped(s, t, cand[k]))
                skip = cand[k];
        for (int k = 0; k < nc; k++) {
            int ci = cand[k];
            if (ci == skip)
                continue;
            /* Least virtual time; ties go to a class other than the last
             * one granted, then to config order. */
            if (best < 0 || s->cls[ci].vtime < s->cls[best].vtime ||
                (s->cls[ci].vtime == s->cls[best].vtime && best == t->last))
                best = ci;
        }
        struct sclass *c = &s->cls[best];
        struct gq_job *j = c->head;
        unready(s, j);
        if (j->d_idx)
            hdel(&s->deadline, j);
        int slot = 0;
        while (s->slots[slot] != NULL)
            slot++;
        GQ_ASSERT(slot < s->nslots);
        s->slots[slot] = j;
        s->nfree--;
        j->slot = (int16_t)slot;
        j->state = GQ_RUNNING;
        j->grant_us = now;
        c->nrunning++;
        c->grants++;
        if (t->last == best) {
            t->streak++;
        } else {
            t->last = best;
            t->streak = 1;
        }
        if (s->share_by == GQ_SHARE_GRANTS) {
            c->charged += 1;
            c->vtime += 1 / c->conf.weight;
            advance_clock(s, c);
        }
        return j;
    }
    return NULL;
}

struct gq_job *
gq_sched_ride(struct gq_sched *s, int cls, int64_t now,
              gq_servable_fn servable, void *ud)
{
    struct sclass *c = &s->cls[cls];
    if (s->draining || c->nready == 0 ||
        (servable && !servable(ud, c->head)))
        return NULL;
    struct gq_job *j = c->head;
    unready(s, j);
    if (j->d_idx)
        hdel(&s->deadline, j);
    j->slot = -1;
    j->state = GQ_RUNNING;
    j->grant_us = now;
    c->nrunning++;
    c->grants++;
    if (s->share_by == GQ_SHARE_GRANTS) {
        c->charged += 1;
        c->vtime += 1 / c->conf.weight;
        advance_clock(s, c);
    }
    return j;
}

void
gq_sched_handover(struct gq_sched *s, struct gq_job *from, struct gq_job *to)
{
    GQ_ASSERT(from->slot >= 0 && s->slots[from->slot] == from &&
              to->slot < 0 && to->state == GQ_RUNNING &&
              to->cls == from->cls);
    to->slot = from->slot;
    s->slots[to->slot] = to;
    from->slot = -1;
    /* The slot's time is charged once, by its last holder, from the
     * grant's start; riders are charged no time. */
    to->grant_us = from->grant_us;
}

void
gq_sched_release(struct gq_sched *s, struct gq_job *j, int64_t now)
{
    GQ_ASSERT(j->state == GQ_RUNNING &&
              (j->slot < 0 || s->slots[j->slot] == j));
    struct sclass *c = &s->cls[j->cls];
    int rider = j->slot < 0;
    if (!rider) {
        s->slots[j->slot] = NULL;
        s->nfree++;
        j->slot = -1;
    }
    c->nrunning--;
    double dur = now > j->grant_us && !rider
                     ? (double)(now - j->grant_us) / 1e6
                     : 0;
    c->granted_s += dur;
    if (s->share_by == GQ_SHARE_TIME) {
        c->charged += dur;
        c->vtime += dur / c->conf.weight;
        advance_clock(s, c);
    }
}

int
gq_sched_attach(struct gq_sched *s, struct gq_job *j, int slot, int64_t now)
{
    if (slot < 0 || slot >= s->nslots || s->slots[slot] != NULL ||
        j->cls >= s->ncls)
        return GQ_EINVAL;
    s->slots[slot] = j;
    s->nfree--;
    j->slot = (int16_t)slot;
    j->state = GQ_RUNNING;
    j->grant_us = now;
    s->cls[j->cls].nrunning++;
    return 0;
}

int64_t
gq_sched_next_timer(const struct gq_sched *s)
{
    const struct gq_job *b = htop(&s->backoff), *d = htop(&s->deadline);
    int64_t t = 0;
    if (b)
        t = b->ready_at_us;
    if (d && (t == 0 || d->deadline_us < t))
        t = d->deadline_us;
    return t;
}

void
gq_sched_tick(struct gq_sched *s, int64_t now)
{
    struct gq_job *j;
    while ((j = htop(&s->backoff)) != NULL && j->ready_at_us <= now) {
        hdel(&s->backoff, j);
        s->cls[j->cls].nbackoff--;
        j->ready_at_us = 0;
        make_ready(s, j);
    }
}

struct gq_job *
gq_sched_pop_expired(struct gq_sched *s, int64_t now)
{
    struct gq_job *j = htop(&s->deadline);
    if (j == NULL || j->deadline_us > now)
        return NULL;
    gq_sched_remove(s, j);
    return j;
}

enum gq_reason
gq_sched_reason(const struct gq_sched *s, const struct gq_job *j,
                uint32_t *position)
{
    uint32_t pos = 0;
    enum gq_reason r = GQ_R_NONE;
    if (j->state != GQ_QUEUED) {
        r = GQ_R_NONE;
    } else if (j->b_idx) {
        r = GQ_R_BACKOFF;
    } else {
        const struct sclass *c = &s->cls[j->cls];
        const struct tier *t = &s->tiers[c->tier];
        pos = trank(c->root, j);
        r = GQ_R_GPU_BUSY;
        if (s->draining) {
            r = GQ_R_DRAINING;
        } else {
            for (int ti = 0; ti < c->tier; ti++)
                for (int k = 0; k < s->tiers[ti].ncls; k++)
                    if (s->cls[s->tiers[ti].cls[k]].nready > 0)
                        r = GQ_R_PRIORITY;
        }
        if (r == GQ_R_GPU_BUSY && pos == 1) {
            int other = 0, owed = 0;
            for (int k = 0; k < t->ncls; k++) {
                const struct sclass *o = &s->cls[t->cls[k]];
                if (t->cls[k] == j->cls || o->nready == 0)
                    continue;
                other = 1;
                if (o->vtime < c->vtime)
                    owed = 1;
            }
            if (other && capped(s, t, j->cls))
                r = GQ_R_CAP;
            else if (owed)
                r = GQ_R_SHARE;
        }
    }
    if (position)
        *position = pos;
    return r;
}

void
gq_sched_set_draining(struct gq_sched *s, int on)
{
    s->draining = on;
}

int
gq_sched_draining(const struct gq_sched *s)
{
    return s->draining;
}

void
gq_sched_stats(const struct gq_sched *s, int cls, struct gq_class_stats *o)
{
    const struct sclass *c = &s->cls[cls];
    const struct tier *t = &s->tiers[c->tier];
    double total = 0;
    for (int k = 0; k < t->ncls; k++)
        total += s->cls[t->cls[k]].charged;
    memset(o, 0, sizeof *o);
    o->ready = c->nready;
    o->backoff = c->nbackoff;
    o->running = c->nrunning;
    o->oldest_enq_us = c->f_head ? c->f_head->enq_us : 0;
    o->vtime = c->vtime;
    o->share = total > 0 ? c->charged / total : 0;
    o->grants = c->grants;
    o->granted_s = c->granted_s;
    o->streak = t->last == cls ? t->streak : 0;
}

uint32_t
gq_sched_queued(const struct gq_sched *s, int cls)
{
    return s->cls[cls].nready + s->cls[cls].nbackoff;
}
