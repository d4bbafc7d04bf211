/*
 * test_store.c - the SQLite store: round trips, listing, purge, schema
 * migration, group commit, injected disk-full and I/O errors, and
 * durability across a SIGKILL.
 *
 * Each test gets its own directory under /tmp (removed afterwards) and
 * leaves the fault injector disarmed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "core/err.h"
#include "core/job.h"
#include "store/store.h"

struct fixture {
    char dir[64];
    char path[128];
    struct gq_store *st;
    char err[GQ_STORE_ERRLEN];
};

/* ---- fixture and helpers ----------------------------------------- */

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/gq_store_XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/gpuq.db", fx->dir);
    gq_store_fault(GQ_FAULT_NONE, 0);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    gq_store_fault(GQ_FAULT_NONE, 0);
    if (fx->st)
        gq_store_close(fx->st);
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void
reopen(struct fixture *fx)
{
    if (fx->st)
        gq_store_close(fx->st);
    fx->err[0] = '\0';
    fx->st = gq_store_sqlite_open(fx->path, NULL, fx->err);
    if (!fx->st)
        fail_msg("open %s: %s", fx->path, fx->err);
}

/* Fails the test with the store's message unless rc == want. */
#define CHECK_RC(rc, want, fx)                                              \
    do {                                                                    \
        int rc_ = (rc);                                                     \
        if (rc_ != (want))                                                  \
            fail_msg("%s = %d (%s), want %d: %s", #rc, rc_,                 \
                     gq_err_name(rc_), (want), (fx)->err);                  \
    } while (0)
#define OK(rc, fx) CHECK_RC(rc, 0, fx)

static void
mkrec(struct gq_jobrec *r, const char *cls, int state, const char *payload)
{
    memset(r, 0, sizeof *r);
    snprintf(r->cls, sizeof r->cls, "%s", cls);
    r->state = state;
    r->kind = GQ_KIND_JOB;
    r->payload = (char *)payload;
    r->created_us = 1700000000000000;
}

static uint64_t
insert1(struct fixture *fx, const char *cls, int state, int64_t finished)
{
    struct gq_jobrec r;
    mkrec(&r, cls, state, "{}");
    r.finished_us = finished;
    OK(fx->st->ops->insert(fx->st, &r, fx->err), fx);
    assert_true(r.seq > 0);
    return r.seq;
}

/* Collects seqs (and payload markers) from list/load_active. */
struct seqs {
    uint64_t v[4096];
    int n;
    int stop_at;        /* return 7 when n reaches this; 0 = never */
};

static int
collect(void *ud, const struct gq_jobrec *r)
{
    struct seqs *s = ud;
    if (s->n < (int)(sizeof s->v / sizeof s->v[0]))
        s->v[s->n] = r->seq;
    s->n++;
    return s->stop_at && s->n == s->stop_at ? 7 : 0;
}

/* Every job with this payload, in seq order, paging through list(). */
struct by_payload {
    const char *payload;
    uint64_t v[4096];
    int n;
    int total;
    uint64_t last;
};

static int
collect_payload(void *ud, const struct gq_jobrec *r)
{
    struct by_payload *b = ud;
    b->last = r->seq;
    b->total++;
    if (r->payload && strcmp(r->payload, b->payload) == 0 && b->n < 4096)
        b->v[b->n++] = r->seq;
    return 0;
}

static int
count_payload(struct fixture *fx, const char *payload, int *total)
{
    struct by_payload b = {.payload = payload};
    struct gq_store_filter f = {.state = -1, .limit = 1000};
    for (;;) {
        int before = b.total;
        f.after = b.last;
        OK(fx->st->ops->list(fx->st, &f, collect_payload, &b, fx->err), fx);
        if (b.total - before < f.limit)
            break;
    }
    if (total)
        *total = b.total;
    return b.n;
}

/* ---- tests ---------------------------------------------------------- */

static void
test_roundtrip(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;

    struct gq_jobrec a;
    memset(&a, 0, sizeof a);
    memset(a.cls, 'c', sizeof a.cls - 1); /* the longest class name */
    a.priority = -1000;
    a.state = GQ_RUNNING;
    a.kind = GQ_KIND_LOCK;
    a.attempts = 3;
    a.token = UINT64_MAX;
    a.payload = "{\"audio\":\"/srv/a.wav\",\"n\":[1,2,3]}";
    a.metadata = "{\"meeting\":\"m-7\"}";
    a.idem_key = "upload-7";
    a.result = "{\"ok\":true}";
    a.progress = "0.5";
    a.err_code = "oom";
    a.err_msg = "out of \"memory\" \xc3\xa9";
    a.holder = "worker-1";
    a.created_us = INT64_MAX;
    a.started_us = INT64_MIN;
    a.ended_us = 1;
    a.finished_us = -1;
    a.ready_at_us = (int64_t)1 << 62;
    a.deadline_us = 42;
    a.wait_us = 1234567890123;
    a.run_us = 9876543210987;

    struct gq_jobrec b;
    mkrec(&b, "x", GQ_QUEUED, NULL); /* every string NULL */

    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->insert(st, &a, fx->err), fx);
    OK(st->ops->insert(st, &b, fx->err), fx);
    OK(gq_store_commit(st, fx->err), fx);
    assert_true(a.seq > 0);
    assert_int_equal(b.seq, a.seq + 1);

    reopen(fx);
    st = fx->st;
    struct gq_jobrec g;
    OK(st->ops->get(st, a.seq, &g, fx->err), fx);
    assert_int_equal(g.seq, a.seq);
    assert_string_equal(g.cls, a.cls);
    assert_int_equal(g.priority, -1000);
    assert_int_equal(g.state, GQ_RUNNING);
    assert_int_equal(g.kind, GQ_KIND_LOCK);
    assert_int_equal(g.attempts, 3);
    assert_true(g.token == UINT64_MAX);
    assert_string_equal(g.payload, a.payload);
    assert_string_equal(g.metadata, a.metadata);
    assert_string_equal(g.idem_key, a.idem_key);
    assert_string_equal(g.result, a.result);
    assert_string_equal(g.progress, a.progress);
    assert_string_equal(g.err_code, a.err_code);
    assert_string_equal(g.err_msg, a.err_msg);
    assert_string_equal(g.holder, a.holder);
    assert_true(g.created_us == INT64_MAX);
    assert_true(g.started_us == INT64_MIN);
    assert_true(g.ended_us == 1);
    assert_true(g.finished_us == -1);
    assert_true(g.ready_at_us == (int64_t)1 << 62);
    assert_true(g.deadline_us == 42);
    assert_true(g.wait_us == 1234567890123);
    assert_true(g.run_us == 9876543210987);
    gq_jobrec_clear(&g);
    assert_null(g.payload);
    assert_int_equal(g.seq, 0);

    OK(st->ops->get(st, b.seq, &g, fx->err), fx);
    assert_string_equal(g.cls, "x");
    assert_int_equal(g.kind, GQ_KIND_JOB);
    assert_null(g.payload);
    assert_null(g.metadata);
    assert_null(g.idem_key);
    assert_null(g.result);
    assert_null(g.progress);
    assert_null(g.err_code);
    assert_null(g.err_msg);
    assert_null(g.holder);
    gq_jobrec_clear(&g);

    /* update writes the mutable fields only. */
    struct gq_jobrec u = b;
    u.priority = 5;
    u.state = GQ_FAILED;
    u.attempts = 2;
    u.token = (uint64_t)1 << 63;
    u.result = "null";
    u.progress = "{\"p\":1}";
    u.err_code = "crash";
    u.err_msg = "segfault";
    u.holder = "w2";
    u.started_us = 10;
    u.ended_us = 20;
    u.finished_us = 30;
    u.ready_at_us = 40;
    u.deadline_us = 50;
    u.wait_us = 60;
    u.run_us = 70;
    u.payload = "{\"changed\":1}";     /* immutable: ignored */
    snprintf(u.cls, sizeof u.cls, "y"); /* immutable: ignored */
    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->update(st, &u, fx->err), fx);
    OK(gq_store_commit(st, fx->err), fx);
    OK(st->ops->get(st, b.seq, &g, fx->err), fx);
    assert_string_equal(g.cls, "x");
    assert_null(g.payload);
    assert_int_equal(g.priority, 5);
    assert_int_equal(g.state, GQ_FAILED);
    assert_int_equal(g.attempts, 2);
    assert_true(g.token == (uint64_t)1 << 63);
    assert_string_equal(g.result, "null");
    assert_string_equal(g.progress, "{\"p\":1}");
    assert_string_equal(g.err_code, "crash");
    assert_string_equal(g.err_msg, "segfault");
    assert_string_equal(g.holder, "w2");
    assert_true(g.started_us == 10 && g.ended_us == 20 &&
                g.finished_us == 30 && g.ready_at_us == 40 &&
                g.deadline_us == 50 && g.wait_us == 60 && g.run_us == 70);
    gq_jobrec_clear(&g);

    /* Missing rows. */
    CHECK_RC(st->ops->get(st, 999, &g, fx->err), GQ_ENOENT, fx);
    assert_null(g.payload);
    u.seq = 999;
    CHECK_RC(st->ops->update(st, &u, fx->err), GQ_ENOENT, fx);
    CHECK_RC(st->ops->get(st, 999, &g, NULL), GQ_ENOENT, fx);
}

static void
test_ids_never_repeat(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    OK(gq_store_begin(fx->st, fx->err), fx);
    uint64_t s1 = insert1(fx, "a", GQ_QUEUED, 0);
    insert1(fx, "a", GQ_SUCCEEDED, 100);
    uint64_t s3 = insert1(fx, "a", GQ_SUCCEEDED, 100);
    OK(gq_store_commit(fx->st, fx->err), fx);
    assert_int_equal(s3, s1 + 2);

    /* Purge the highest rows, reopen: the next id still goes up. */
    int64_t n = -1;
    OK(fx->st->ops->purge(fx->st, 1000, &n, fx->err), fx);
    assert_int_equal(n, 2);
    reopen(fx);
    OK(gq_store_begin(fx->st, fx->err), fx);
    uint64_t s4 = insert1(fx, "a", GQ_SUCCEEDED, 100);
    OK(gq_store_commit(fx->st, fx->err), fx);
    assert_int_equal(s4, s3 + 1);

    /* Purge everything, reopen again. */
    struct gq_jobrec r;
    OK(fx->st->ops->get(fx->st, s1, &r, fx->err), fx);
    r.state = GQ_CANCELLED;
    r.finished_us = 5;
    OK(fx->st->ops->update(fx->st, &r, fx->err), fx);
    gq_jobrec_clear(&r);
    OK(fx->st->ops->purge(fx->st, 1000, &n, fx->err), fx);
    assert_int_equal(n, 2);
    reopen(fx);
    OK(gq_store_begin(fx->st, fx->err), fx);
    uint64_t s5 = insert1(fx, "a", GQ_QUEUED, 0);
    OK(gq_store_commit(fx->st, fx->err), fx);
    assert_int_equal(s5, s4 + 1);
}

/* A duplicate idempotency key is a constraint violation, reported as
 * GQ_EINVAL; it fails only that insert, not the batch. */
static void
test_idem_key(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    struct gq_jobrec a, b, c, d;
    mkrec(&a, "a", GQ_QUEUED, "1");
    a.idem_key = "k1";
    mkrec(&b, "a", GQ_QUEUED, "2");
    b.idem_key = "k1";
    mkrec(&c, "a", GQ_QUEUED, "3"); /* NULL keys never collide */
    mkrec(&d, "a", GQ_QUEUED, "4");

    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->insert(st, &a, fx->err), fx);
    fx->err[0] = '\0';
    CHECK_RC(st->ops->insert(st, &b, fx->err), GQ_EINVAL, fx);
    assert_true(strstr(fx->err, "UNIQUE") != NULL);
    OK(st->ops->insert(st, &c, fx->err), fx);
    OK(st->ops->insert(st, &d, fx->err), fx);
    OK(gq_store_commit(st, fx->err), fx);

    uint64_t seq = 0;
    OK(st->ops->find_key(st, "k1", &seq, fx->err), fx);
    assert_int_equal(seq, a.seq);
    CHECK_RC(st->ops->find_key(st, "k2", &seq, fx->err), GQ_ENOENT, fx);
    int total = 0;
    assert_int_equal(count_payload(fx, "1", &total), 1);
    assert_int_equal(total, 3);

    /* Still unique after reopen, and across batches. */
    reopen(fx);
    st = fx->st;
    OK(st->ops->find_key(st, "k1", &seq, fx->err), fx);
    assert_int_equal(seq, a.seq);
    CHECK_RC(st->ops->insert(st, &b, fx->err), GQ_EINVAL, fx);
}

static void
test_list(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    static const char *const cls[] = {"a", "b", "c"};
    uint64_t seq[30];
    OK(gq_store_begin(st, fx->err), fx);
    for (int i = 0; i < 30; i++)
        seq[i] = insert1(fx, cls[i % 3], i % 4, 0);
    OK(gq_store_commit(st, fx->err), fx);

    /* Paging through everything with a cursor. */
    struct gq_store_filter f = {.state = -1, .limit = 7};
    int got = 0;
    for (int page = 0;; page++) {
        struct seqs s = {0};
        OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
        assert_true(s.n <= 7);
        for (int i = 0; i < s.n; i++)
            assert_int_equal(s.v[i], seq[got + i]);
        got += s.n;
        if (s.n < 7)
            break;
        f.after = s.v[s.n - 1];
        assert_true(page < 10);
    }
    assert_int_equal(got, 30);

    /* By class, by state, by both; cursor with filters. */
    struct seqs s = {0};
    f = (struct gq_store_filter){.cls = "b", .state = -1, .limit = 100};
    OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 10);
    for (int i = 0; i < s.n; i++)
        assert_int_equal(s.v[i], seq[3 * i + 1]);

    s = (struct seqs){0};
    f = (struct gq_store_filter){.state = GQ_RUNNING, .limit = 100};
    OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 8); /* i % 4 == 1 for i < 30 */
    for (int i = 0; i < s.n; i++)
        assert_int_equal(s.v[i], seq[4 * i + 1]);

    s = (struct seqs){0};
    f = (struct gq_store_filter){.cls = "a", .state = GQ_QUEUED,
                                 .after = seq[0], .limit = 100};
    OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
    /* i % 3 == 0 and i % 4 == 0: i = 12, 24 after i = 0. */
    assert_int_equal(s.n, 2);
    assert_int_equal(s.v[0], seq[12]);
    assert_int_equal(s.v[1], seq[24]);

    s = (struct seqs){0};
    f = (struct gq_store_filter){.cls = "zzz", .state = -1, .limit = 10};
    OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 0);

    /* Limit 0 (or over 1000) means 1000; a NULL filter lists all. */
    s = (struct seqs){0};
    f = (struct gq_store_filter){.state = -1, .limit = 0};
    OK(st->ops->list(st, &f, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 30);
    s = (struct seqs){0};
    OK(st->ops->list(st, NULL, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 30);

    /* The callback's nonzero value stops the walk and comes back. */
    s = (struct seqs){.stop_at = 3};
    assert_int_equal(st->ops->list(st, NULL, collect, &s, fx->err), 7);
    assert_int_equal(s.n, 3);
    s = (struct seqs){0}; /* and the statement was reset */
    OK(st->ops->list(st, NULL, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 30);

    f = (struct gq_store_filter){.state = 99, .limit = 10};
    CHECK_RC(st->ops->list(st, &f, collect, &s, fx->err), GQ_EINVAL, fx);
}

static void
test_load_active(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    uint64_t seq[14];
    OK(gq_store_begin(st, fx->err), fx);
    for (int i = 0; i < 14; i++)
        seq[i] = insert1(fx, i % 2 ? "a" : "b", i % GQ_NSTATES, 0);
    /* Move the first job (queued) to running, the second (running) to
     * succeeded. */
    struct gq_jobrec r;
    OK(st->ops->get(st, seq[0], &r, fx->err), fx);
    r.state = GQ_RUNNING;
    OK(st->ops->update(st, &r, fx->err), fx);
    gq_jobrec_clear(&r);
    OK(st->ops->get(st, seq[1], &r, fx->err), fx);
    r.state = GQ_SUCCEEDED;
    OK(st->ops->update(st, &r, fx->err), fx);
    gq_jobrec_clear(&r);
    OK(gq_store_commit(st, fx->err), fx);

    reopen(fx);
    struct seqs s = {0};
    OK(fx->st->ops->load_active(fx->st, collect, &s, fx->err), fx);
    /* Running first (0, 8), then queued (7), each in seq order. */
    assert_int_equal(s.n, 3);
    assert_int_equal(s.v[0], seq[0]);
    assert_int_equal(s.v[1], seq[8]);
    assert_int_equal(s.v[2], seq[7]);
    s = (struct seqs){.stop_at = 1};
    assert_int_equal(fx->st->ops->load_active(fx->st, collect, &s, NULL), 7);
}

struct evlog {
    char line[16][96];
    int n;
};

static int
collect_ev(void *ud, int64_t t_us, const char *st, const char *detail)
{
    struct evlog *l = ud;
    if (l->n < 16)
        snprintf(l->line[l->n], sizeof l->line[0], "%" PRId64 " %s %s",
                 t_us, st, detail ? detail : "NULL");
    l->n++;
    return 0;
}

static void
test_events(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    OK(gq_store_begin(st, fx->err), fx);
    uint64_t a = insert1(fx, "a", GQ_QUEUED, 0);
    uint64_t b = insert1(fx, "a", GQ_QUEUED, 0);
    OK(st->ops->event(st, a, 100, "queued", NULL, fx->err), fx);
    OK(st->ops->event(st, b, 100, "queued", "{\"b\":1}", fx->err), fx);
    OK(st->ops->event(st, a, 100, "running", "{\"w\":\"x\"}", fx->err),
       fx);
    OK(gq_store_commit(st, fx->err), fx);
    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->event(st, a, 90, "succeeded", "{}", fx->err), fx);
    OK(gq_store_commit(st, fx->err), fx);

    reopen(fx);
    st = fx->st;
    struct evlog l = {0};
    OK(st->ops->events(st, a, collect_ev, &l, fx->err), fx);
    /* Oldest first means append order, even if the clock went back. */
    assert_int_equal(l.n, 3);
    assert_string_equal(l.line[0], "100 queued NULL");
    assert_string_equal(l.line[1], "100 running {\"w\":\"x\"}");
    assert_string_equal(l.line[2], "90 succeeded {}");
    l = (struct evlog){0};
    OK(st->ops->events(st, b, collect_ev, &l, fx->err), fx);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.line[0], "100 queued {\"b\":1}");
    l = (struct evlog){0};
    OK(st->ops->events(st, 12345, collect_ev, &l, fx->err), fx);
    assert_int_equal(l.n, 0);
}

static void
test_meta(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    int64_t v = 99;
    OK(st->ops->meta_get(st, "fence", &v, fx->err), fx);
    assert_int_equal(v, 0);
    OK(st->ops->meta_set(st, "fence", 42, fx->err), fx);
    OK(st->ops->meta_get(st, "fence", &v, fx->err), fx);
    assert_int_equal(v, 42);
    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->meta_set(st, "fence", INT64_MAX, fx->err), fx);
    OK(st->ops->meta_set(st, "other", -5, fx->err), fx);
    OK(gq_store_commit(st, fx->err), fx);
    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->meta_set(st, "other", 6, fx->err), fx);
    gq_store_rollback(st);
    reopen(fx);
    st = fx->st;
    OK(st->ops->meta_get(st, "fence", &v, fx->err), fx);
    assert_true(v == INT64_MAX);
    OK(st->ops->meta_get(st, "other", &v, fx->err), fx);
    assert_int_equal(v, -5);
}

static void
test_purge(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    struct {
        int state;
        int64_t finished;
        int purged; /* by purge(250) */
    } jobs[] = {
        {GQ_SUCCEEDED, 100, 1}, {GQ_FAILED, 200, 1},
        {GQ_CANCELLED, 300, 0}, {GQ_QUEUED, 0, 0},
        {GQ_RUNNING, 0, 0},     {GQ_DEAD, 150, 1},
        {GQ_EXPIRED, 249, 1},   {GQ_EXPIRED, 250, 0},
        {GQ_QUEUED, 10, 0}, /* not terminal, whatever finished says */
    };
    enum { N = sizeof jobs / sizeof jobs[0] };
    uint64_t seq[N];
    OK(gq_store_begin(st, fx->err), fx);
    for (int i = 0; i < N; i++) {
        seq[i] = insert1(fx, "a", jobs[i].state, jobs[i].finished);
        OK(st->ops->event(st, seq[i], 1, "queued", NULL, fx->err), fx);
        OK(st->ops->event(st, seq[i], 2, "x", NULL, fx->err), fx);
    }
    OK(gq_store_commit(st, fx->err), fx);

    /* Inside a batch that is rolled back, purge changes nothing. */
    int64_t n = -1;
    OK(gq_store_begin(st, fx->err), fx);
    OK(st->ops->purge(st, 250, &n, fx->err), fx);
    assert_int_equal(n, 4);
    gq_store_rollback(st);
    struct seqs s = {0};
    OK(st->ops->list(st, NULL, collect, &s, fx->err), fx);
    assert_int_equal(s.n, N);

    /* Outside a batch it commits by itself. */
    n = -1;
    OK(st->ops->purge(st, 250, &n, fx->err), fx);
    assert_int_equal(n, 4);
    reopen(fx);
    st = fx->st;
    for (int i = 0; i < N; i++) {
        struct gq_jobrec r;
        struct evlog l = {0};
        int rc = st->ops->get(st, seq[i], &r, fx->err);
        OK(st->ops->events(st, seq[i], collect_ev, &l, fx->err), fx);
        if (jobs[i].purged) {
            CHECK_RC(rc, GQ_ENOENT, fx);
            assert_int_equal(l.n, 0);
        } else {
            OK(rc, fx);
            gq_jobrec_clear(&r);
            assert_int_equal(l.n, 2);
        }
    }
    OK(st->ops->purge(st, 250, &n, fx->err), fx);
    assert_int_equal(n, 0);
    OK(st->ops->purge(st, 301, NULL, fx->err), fx);
    CHECK_RC(st->ops->get(st, seq[2], &(struct gq_jobrec){0}, NULL),
             GQ_ENOENT, fx);
}

static int
user_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    int v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("open %s: %s", path, sqlite3_errmsg(db));
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) ==
            SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void
test_migration(void **state)
{
    struct fixture *fx = *state;
    /* An empty file becomes a current (version-3) store. */
    FILE *fp = fopen(fx->path, "w");
    assert_non_null(fp);
    fclose(fp);
    reopen(fx);
    OK(gq_store_begin(fx->st, fx->err), fx);
    uint64_t a = insert1(fx, "a", GQ_QUEUED, 0);
    OK(gq_store_commit(fx->st, fx->err), fx);
    gq_store_close(fx->st);
    fx->st = NULL;
    assert_int_equal(user_version(fx->path), 3);

    /* Reopening keeps the version and the data. */
    reopen(fx);
    struct gq_jobrec r;
    OK(fx->st->ops->get(fx->st, a, &r, fx->err), fx);
    gq_jobrec_clear(&r);
    gq_store_close(fx->st);
    fx->st = NULL;
    assert_int_equal(user_version(fx->path), 3);

    /* A version-1 file (no deps column) is migrated and keeps its rows;
     * deps round-trips once the column exists. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE callbacks;"
                                      "ALTER TABLE jobs DROP COLUMN "
                                      "callback_url;"
                                      "ALTER TABLE jobs DROP COLUMN deps;"
                                      "PRAGMA user_version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(user_version(fx->path), 1);
    reopen(fx);
    OK(fx->st->ops->get(fx->st, a, &r, fx->err), fx);
    assert_null(r.deps);
    gq_jobrec_clear(&r);
    struct gq_jobrec nd = {0};
    snprintf(nd.cls, sizeof nd.cls, "c");
    nd.deps = strdup("[1,2]");
    OK(gq_store_begin(fx->st, fx->err), fx);
    OK(fx->st->ops->insert(fx->st, &nd, fx->err), fx);
    OK(gq_store_commit(fx->st, fx->err), fx);
    OK(fx->st->ops->get(fx->st, nd.seq, &r, fx->err), fx);
    assert_string_equal(r.deps, "[1,2]");
    gq_jobrec_clear(&r);
    gq_jobrec_clear(&nd);
    gq_store_close(fx->st);
    fx->st = NULL;
    assert_int_equal(user_version(fx->path), 3);

    /* A newer schema is refused, not guessed at. */
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    fx->err[0] = '\0';
    assert_null(gq_store_sqlite_open(fx->path, NULL, fx->err));
    assert_true(strstr(fx->err, "99") != NULL);

    /* So is a file that is not a database. */
    char junk[160];
    snprintf(junk, sizeof junk, "%s/junk.db", fx->dir);
    fp = fopen(junk, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database\n", fp);
    fclose(fp);
    fx->err[0] = '\0';
    assert_null(gq_store_sqlite_open(junk, NULL, fx->err));
    assert_true(fx->err[0] != '\0');

    /* Nor a path in a missing directory, nor a bad synchronous. */
    snprintf(junk, sizeof junk, "%s/no/such/dir.db", fx->dir);
    fx->err[0] = '\0';
    assert_null(gq_store_sqlite_open(junk, NULL, fx->err));
    assert_true(fx->err[0] != '\0');
    struct gq_sqlite_opts o = {.synchronous = 3};
    assert_null(gq_store_sqlite_open(fx->path, &o, NULL));

    /* The other synchronous levels open and work. */
    for (int sync = 0; sync <= 2; sync++) {
        char p[160];
        snprintf(p, sizeof p, "%s/sync%d.db", fx->dir, sync);
        o.synchronous = sync;
        struct gq_store *st = gq_store_sqlite_open(p, &o, fx->err);
        if (!st)
            fail_msg("open %s: %s", p, fx->err);
        struct gq_jobrec j;
        mkrec(&j, "a", GQ_QUEUED, "{}");
        OK(gq_store_begin(st, fx->err), fx);
        OK(st->ops->insert(st, &j, fx->err), fx);
        OK(gq_store_commit(st, fx->err), fx);
        gq_store_close(st);
        assert_int_equal(user_version(p), 3);
    }
}

static void
test_group_commit(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    OK(gq_store_begin(st, fx->err), fx);
    uint64_t first = 0, last = 0;
    for (int i = 0; i < 1000; i++) {
        struct gq_jobrec r;
        mkrec(&r, i % 2 ? "a" : "b", GQ_QUEUED, "batch");
        OK(st->ops->insert(st, &r, fx->err), fx);
        OK(st->ops->event(st, r.seq, i, "queued", NULL, fx->err), fx);
        if (i == 0)
            first = r.seq;
        assert_true(r.seq > last);
        last = r.seq;
    }
    OK(gq_store_commit(st, fx->err), fx);
    reopen(fx);
    int total = 0;
    assert_int_equal(count_payload(fx, "batch", &total), 1000);
    assert_int_equal(total, 1000);
    assert_int_equal(last - first, 999);
    struct seqs s = {0};
    OK(fx->st->ops->load_active(fx->st, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 1000);
}

/* Checkpoints run on the store's own thread: with the main connection's
 * auto-checkpoint off, the database file still grows as batches commit
 * (and the WAL does not grow without bound). */
static void
test_checkpoint_thread(void **state)
{
    struct fixture *fx = *state;
    char wal[600];
    struct stat db, w;
    reopen(fx);
    for (int b = 0; b < 600; b++) {
        OK(gq_store_begin(fx->st, fx->err), fx);
        for (int i = 0; i < 4; i++) {
            struct gq_jobrec r;
            mkrec(&r, "a", GQ_QUEUED,
                  "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"");
            OK(fx->st->ops->insert(fx->st, &r, fx->err), fx);
        }
        OK(gq_store_commit(fx->st, fx->err), fx);
    }
    /* The thread runs soon after the WAL passes 1000 pages. */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(stat(fx->path, &db), 0);
        if (db.st_size > 64 * 1024)
            break;
        usleep(10000);
    }
    assert_true(db.st_size > 64 * 1024);
    snprintf(wal, sizeof wal, "%s-wal", fx->path);
    assert_int_equal(stat(wal, &w), 0);
    assert_true(w.st_size < 64L << 20);
}

static void
test_rollback(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    struct gq_store *st = fx->st;
    gq_store_rollback(st); /* no batch open: harmless */
    OK(gq_store_begin(st, fx->err), fx);
    uint64_t keep = insert1(fx, "a", GQ_QUEUED, 0);
    OK(gq_store_commit(st, fx->err), fx);

    OK(gq_store_begin(st, fx->err), fx);
    uint64_t gone = insert1(fx, "a", GQ_QUEUED, 0);
    struct gq_jobrec r;
    OK(st->ops->get(st, keep, &r, fx->err), fx);
    r.state = GQ_CANCELLED;
    OK(st->ops->update(st, &r, fx->err), fx);
    gq_jobrec_clear(&r);
    OK(st->ops->event(st, keep, 1, "cancelled", NULL, fx->err), fx);
    gq_store_rollback(st);
    gq_store_rollback(st);

    CHECK_RC(st->ops->get(st, gone, &r, fx->err), GQ_ENOENT, fx);
    OK(st->ops->get(st, keep, &r, fx->err), fx);
    assert_int_equal(r.state, GQ_QUEUED);
    gq_jobrec_clear(&r);
    struct evlog l = {0};
    OK(st->ops->events(st, keep, collect_ev, &l, fx->err), fx);
    assert_int_equal(l.n, 0);

    /* A begin inside a batch is an error; the batch goes on. */
    OK(gq_store_begin(st, fx->err), fx);
    CHECK_RC(gq_store_begin(st, fx->err), GQ_ESTORE, fx);
    insert1(fx, "a", GQ_QUEUED, 0);
    OK(gq_store_commit(st, fx->err), fx);
    /* A commit with no batch is an error too. */
    CHECK_RC(gq_store_commit(st, fx->err), GQ_ESTORE, fx);
    struct seqs s = {0};
    OK(st->ops->list(st, NULL, collect, &s, fx->err), fx);
    assert_int_equal(s.n, 2);
}

/* Inserts a batch of n jobs with this payload, then arms the fault and
 * commits.  Returns commit's code. */
static int
faulty_batch(struct fixture *fx, int n, const char *payload,
             enum gq_fault kind, int after)
{
    OK(gq_store_begin(fx->st, fx->err), fx);
    for (int i = 0; i < n; i++) {
        struct gq_jobrec r;
        mkrec(&r, "a", GQ_QUEUED, payload);
        OK(fx->st->ops->insert(fx->st, &r, fx->err), fx);
        OK(fx->st->ops->event(fx->st, r.seq, i, "queued", NULL, fx->err),
           fx);
    }
    gq_store_fault(kind, after);
    fx->err[0] = '\0';
    int rc = gq_store_commit(fx->st, fx->err);
    return rc;
}

static void
fault_on_commit(struct fixture *fx, enum gq_fault kind, int want)
{
    reopen(fx);
    OK(faulty_batch(fx, 20, "A", GQ_FAULT_NONE, 0), fx);

    /* Fails at the first write of the commit, then half way through. */
    CHECK_RC(faulty_batch(fx, 200, "B", kind, 0), want, fx);
    assert_true(fx->err[0] != '\0');
    gq_store_rollback(fx->st); /* harmless after the failed commit */
    /* Still armed: reads work, writes keep failing. */
    assert_int_equal(count_payload(fx, "A", NULL), 20);
    assert_int_equal(count_payload(fx, "B", NULL), 0);
    CHECK_RC(faulty_batch(fx, 5, "B", kind, 0), want, fx);
    CHECK_RC(faulty_batch(fx, 200, "B", kind, 5), want, fx);
    gq_store_fault(GQ_FAULT_NONE, 0);

    /* Disarmed: the store works again, the failed batches are gone. */
    OK(faulty_batch(fx, 30, "C", GQ_FAULT_NONE, 0), fx);
    int total = 0;
    assert_int_equal(count_payload(fx, "A", NULL), 20);
    assert_int_equal(count_payload(fx, "B", NULL), 0);
    assert_int_equal(count_payload(fx, "C", &total), 30);
    assert_int_equal(total, 50);
    reopen(fx);
    assert_int_equal(count_payload(fx, "A", NULL), 20);
    assert_int_equal(count_payload(fx, "B", NULL), 0);
    assert_int_equal(count_payload(fx, "C", &total), 30);
    assert_int_equal(total, 50);
}

static void
test_fault_full(void **state)
{
    fault_on_commit(*state, GQ_FAULT_FULL, GQ_ESTOREFULL);
}

static void
test_fault_io(void **state)
{
    fault_on_commit(*state, GQ_FAULT_IO, GQ_ESTORE);
}

/* Fails the n-th write or sync for every n that a commit reaches (WAL
 * header, each frame, the fsync, then checkpoints), checking after each
 * that exactly the committed batches are there. */
static void
test_fault_sweep(void **state)
{
    struct fixture *fx = *state;
    reopen(fx);
    char big[128];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[0] = '"';
    big[sizeof big - 2] = '"';
    int want_ok = 0, failed = 0, succeeded = 0;
    for (int k = 0; k < 2; k++) {
        enum gq_fault kind = k ? GQ_FAULT_IO : GQ_FAULT_FULL;
        int code = k ? GQ_ESTORE : GQ_ESTOREFULL;
        for (int after = 0; after < 40; after++) {
            big[1] = (char)('A' + k);
            big[2] = (char)('0' + after % 10);
            big[3] = (char)('0' + after / 10);
            int rc = faulty_batch(fx, 10, big, kind, after);
            gq_store_fault(GQ_FAULT_NONE, 0);
            if (rc == 0) {
                succeeded++;
                assert_int_equal(count_payload(fx, big, NULL), 10);
                want_ok += 10;
            } else {
                failed++;
                CHECK_RC(rc, code, fx);
                gq_store_rollback(fx->st);
                assert_int_equal(count_payload(fx, big, NULL), 0);
            }
            int total = 0;
            count_payload(fx, "", &total);
            assert_int_equal(total, want_ok);
        }
    }
    assert_true(failed >= 10);
    assert_true(succeeded >= 20);
    reopen(fx);
    int total = 0;
    count_payload(fx, "", &total);
    assert_int_equal(total, want_ok);

    /* Faults in the checkpoint that close runs: the WAL stays and the
     * next open recovers from it. */
    for (int after = 0; after < 12; after++) {
        OK(faulty_batch(fx, 3, "ckpt", GQ_FAULT_NONE, 0), fx);
        want_ok += 3;
        gq_store_fault(after % 2 ? GQ_FAULT_IO : GQ_FAULT_FULL, after / 2);
        gq_store_close(fx->st);
        fx->st = NULL;
        gq_store_fault(GQ_FAULT_NONE, 0);
        reopen(fx);
        count_payload(fx, "", &total);
        assert_int_equal(total, want_ok);
    }
}

/* The child: batches of 1..64 inserts, each committed batch's seqs then
 * written to the pipe (one atomic write per batch), until killed. */
static void
crash_child(const char *path, int fd)
{
    char err[GQ_STORE_ERRLEN];
    struct gq_store *st = gq_store_sqlite_open(path, NULL, err);
    if (!st)
        _exit(2);
    srand((unsigned)getpid());
    for (;;) {
        uint64_t seqs[64];
        int n = 1 + rand() % 64;
        if (gq_store_begin(st, err) != 0)
            _exit(3);
        for (int i = 0; i < n; i++) {
            struct gq_jobrec r;
            mkrec(&r, "crash", GQ_QUEUED, "{\"k\":1}");
            if (st->ops->insert(st, &r, err) != 0)
                _exit(4);
            if (st->ops->event(st, r.seq, 1, "queued", NULL, err) != 0)
                _exit(5);
            seqs[i] = r.seq;
        }
        if (gq_store_commit(st, err) != 0)
            _exit(6);
        ssize_t len = (ssize_t)(n * (int)sizeof seqs[0]);
        if (write(fd, seqs, (size_t)len) != len)
            _exit(7);
    }
}

static void
test_crash_durability(void **state)
{
    struct fixture *fx = *state;
    static uint64_t acked[1 << 16];
    int nacked = 0;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 3; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(fx->path, p[1]);
        }
        close(p[1]);
        struct timespec ts = {0, (50 + rand() % 250) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* not an early exit */
        /* Everything the child wrote before dying is in the pipe. */
        unsigned char buf[8192];
        size_t have = 0;
        int got = 0;
        for (;;) {
            ssize_t r = read(p[0], buf + have, sizeof buf - have);
            if (r < 0 && errno == EINTR)
                continue;
            assert_true(r >= 0);
            if (r == 0)
                break;
            have += (size_t)r;
            size_t whole = have / 8 * 8;
            for (size_t off = 0; off < whole; off += 8) {
                uint64_t s;
                memcpy(&s, buf + off, 8);
                if (nacked < (int)(sizeof acked / sizeof acked[0]))
                    acked[nacked++] = s;
                got++;
            }
            memmove(buf, buf + whole, have - whole);
            have -= whole;
        }
        close(p[0]);
        assert_int_equal(have, 0);
        assert_true(got > 0);

        reopen(fx);
        for (int i = 0; i < nacked; i++) {
            struct gq_jobrec r;
            if (i > 0)
                assert_true(acked[i] > acked[i - 1]);
            int rc = fx->st->ops->get(fx->st, acked[i], &r, fx->err);
            if (rc != 0)
                fail_msg("round %d: acknowledged seq %" PRIu64
                         " missing: %s",
                         round, acked[i], fx->err);
            assert_string_equal(r.cls, "crash");
            gq_jobrec_clear(&r);
        }
        gq_store_close(fx->st);
        fx->st = NULL;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_roundtrip),      T(test_ids_never_repeat),
        T(test_idem_key),       T(test_list),
        T(test_load_active),    T(test_events),
        T(test_meta),           T(test_purge),
        T(test_migration),      T(test_group_commit),
        T(test_rollback),       T(test_checkpoint_thread),
        T(test_fault_full),
        T(test_fault_io),       T(test_fault_sweep),
        T(test_crash_durability),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
