/*
 * test_job.c - the job model: ids, state/reason/kind strings, job_init,
 * and the job table; plus the error table the model's callers report
 * with.  Pure functions, no I/O.
 */
#include <inttypes.h>
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

/* --- ids --- */

static void
check_roundtrip(uint64_t seq)
{
    char buf[32];
    uint64_t back = 0;
    char *id = gq_job_id(seq, buf, sizeof buf);
    assert_ptr_equal(id, buf);
    assert_int_equal(buf[0], 'j');
    if (gq_job_parse_id(buf, &back) != 0)
        fail_msg("gq_job_parse_id(\"%s\") failed for seq %" PRIu64, buf,
                 seq);
    if (back != seq)
        fail_msg("\"%s\" parsed as %" PRIu64, buf, back);
}

static void
test_id_roundtrip(void **state)
{
    (void)state;
    static const uint64_t fixed[] = {
        1,
        9,
        10,
        42,
        4294967295ULL,
        4294967296ULL,
        999999999999999999ULL,
        1000000000000000000ULL,
        9999999999999999999ULL,  /* 19 digits */
        10000000000000000000ULL, /* 20 digits */
        18446744073709551609ULL,
        18446744073709551610ULL,
        UINT64_MAX - 1,
        UINT64_MAX,
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_roundtrip(fixed[i]);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* Every magnitude, not just 19-20 digit numbers. */
        check_roundtrip((x >> (i % 64)) | 1);
    }

    char buf[32];
    assert_string_equal(gq_job_id(42, buf, sizeof buf), "j42");
    assert_string_equal(gq_job_id(UINT64_MAX, buf, sizeof buf),
                        "j18446744073709551615");
    /* A short buffer truncates, still terminated. */
    assert_string_equal(gq_job_id(12345, buf, 4), "j12");

    uint64_t seq = 0;
    assert_int_equal(gq_job_parse_id("j1", &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(gq_job_parse_id("j18446744073709551615", &seq), 0);
    assert_true(seq == UINT64_MAX);
}

static void
test_id_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "j",
        "x1",
        "j0",
        "j00",
        "j-1",
        "j+1",
        "J1",
        "1",
        "jj1",
        "j1a",
        "j 1",
        " j1",
        "j1 ",
        "j1.0",
        "j0x10",
        "j18446744073709551616",  /* UINT64_MAX + 1 */
        "j18446744073709551620",
        "j20000000000000000000",
        "j99999999999999999999",
        "j184467440737095516150", /* 21 digits */
        "j1234567890123456789012345",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t seq = 777;
        int rc = gq_job_parse_id(bad[i], &seq);
        if (rc != GQ_EINVAL)
            fail_msg("gq_job_parse_id(\"%s\") = %d, want GQ_EINVAL", bad[i],
                     rc);
        /* A rejected id leaves the output alone. */
        assert_int_equal(seq, 777);
    }
    uint64_t seq = 777;
    assert_int_equal(gq_job_parse_id(NULL, &seq), GQ_EINVAL);
    assert_int_equal(seq, 777);
}

/* --- enums as strings --- */

static void
test_state_strings(void **state)
{
    (void)state;
    static const char *const names[] = {"queued",    "running", "succeeded",
                                        "failed",    "cancelled",
                                        "expired",   "dead"};
    assert_int_equal(GQ_NSTATES, 7);
    for (int i = 0; i < GQ_NSTATES; i++) {
        enum gq_state st = GQ_NSTATES;
        assert_string_equal(gq_state_str((enum gq_state)i), names[i]);
        assert_int_equal(gq_state_parse(names[i], &st), 0);
        assert_int_equal(st, i);
    }
    assert_int_equal(GQ_QUEUED, 0);
    assert_int_equal(GQ_DEAD, 6);
    assert_string_equal(gq_state_str(GQ_NSTATES), "unknown");
    assert_string_equal(gq_state_str((enum gq_state)-1), "unknown");

    enum gq_state st = GQ_RUNNING;
    assert_int_equal(gq_state_parse("Queued", &st), GQ_EINVAL);
    assert_int_equal(gq_state_parse("", &st), GQ_EINVAL);
    assert_int_equal(gq_state_parse("unknown", &st), GQ_EINVAL);
    assert_int_equal(gq_state_parse("queued ", &st), GQ_EINVAL);
    assert_int_equal(st, GQ_RUNNING);

    assert_false(gq_state_terminal(GQ_QUEUED));
    assert_false(gq_state_terminal(GQ_RUNNING));
    assert_true(gq_state_terminal(GQ_SUCCEEDED));
    assert_true(gq_state_terminal(GQ_FAILED));
    assert_true(gq_state_terminal(GQ_CANCELLED));
    assert_true(gq_state_terminal(GQ_EXPIRED));
    assert_true(gq_state_terminal(GQ_DEAD));
}

static void
test_reason_and_kind_strings(void **state)
{
    (void)state;
    /* The wire names of doc/api.md, in enum order. */
    static const char *const names[] = {
        "none",    "gpu_busy", "priority", "share",    "cap",
        "backoff", "deps",     "draining", "no_worker", "backend",
    };
    assert_int_equal(GQ_NREASONS, 10);
    for (int i = 0; i < GQ_NREASONS; i++)
        assert_string_equal(gq_reason_str((enum gq_reason)i), names[i]);
    assert_string_equal(gq_reason_str(GQ_R_CAP), "cap");
    assert_string_equal(gq_reason_str(GQ_NREASONS), "unknown");
    assert_string_equal(gq_kind_str(GQ_KIND_JOB), "job");
    assert_string_equal(gq_kind_str(GQ_KIND_LOCK), "lock");
}

static void
test_job_init(void **state)
{
    (void)state;
    struct gq_job j;
    memset(&j, 0xa5, sizeof j);
    gq_job_init(&j, 42, 3, -7, GQ_KIND_LOCK);
    assert_int_equal(j.seq, 42);
    assert_int_equal(j.cls, 3);
    assert_int_equal(j.priority, -7);
    assert_int_equal(j.kind, GQ_KIND_LOCK);
    assert_int_equal(j.state, GQ_QUEUED);
    assert_int_equal(j.slot, -1);
    assert_int_equal(j.attempts, 0);
    assert_int_equal(j.ready_at_us, 0);
    assert_int_equal(j.deadline_us, 0);
    assert_int_equal(j.t_size, 0);
    assert_int_equal(j.b_idx, 0);
    assert_int_equal(j.d_idx, 0);
    assert_null(j.t_left);
    assert_null(j.f_next);
    assert_null(j.h_next);
    assert_null(j.owner);
}

/* --- the job table --- */

struct visit {
    const struct gq_job *base;
    unsigned char *seen;
    size_t calls;
};

static void
count_visit(struct gq_job *j, void *ud)
{
    struct visit *v = ud;
    size_t i = (size_t)(j - v->base);
    v->seen[i]++;
    v->calls++;
}

/* Checks that the table holds exactly the jobs with live[i] set. */
static void
check_table(const struct gq_jobtab *t, struct gq_job *jobs,
            const unsigned char *live, size_t n)
{
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        struct gq_job *got = gq_jobtab_get(t, jobs[i].seq);
        if (live[i]) {
            want++;
            if (got != &jobs[i])
                fail_msg("get(%" PRIu64 ") = %p, want %p", jobs[i].seq,
                         (void *)got, (void *)&jobs[i]);
        } else if (got != NULL) {
            fail_msg("get(%" PRIu64 ") found a deleted job", jobs[i].seq);
        }
    }
    assert_int_equal(t->count, want);
    struct visit v = {jobs, calloc(n, 1), 0};
    assert_non_null(v.seen);
    gq_jobtab_each(t, count_visit, &v);
    assert_int_equal(v.calls, want);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v.seen[i], live[i] ? 1 : 0);
    free(v.seen);
}

static void
run_table(uint64_t (*seq_of)(size_t), size_t n)
{
    struct gq_jobtab t;
    struct gq_job *jobs = calloc(n, sizeof *jobs);
    unsigned char *live = calloc(n, 1);
    assert_non_null(jobs);
    assert_non_null(live);
    assert_int_equal(gq_jobtab_init(&t), 0);
    assert_int_equal(t.count, 0);
    assert_null(gq_jobtab_get(&t, 1));

    for (size_t i = 0; i < n; i++) {
        gq_job_init(&jobs[i], seq_of(i), 0, 0, GQ_KIND_JOB);
        assert_int_equal(gq_jobtab_put(&t, &jobs[i]), 0);
        live[i] = 1;
    }
    assert_true(t.nbuckets >= n);
    assert_int_equal(t.nbuckets & (t.nbuckets - 1), 0);
    check_table(&t, jobs, live, n);
    /* A seq never put is absent. */
    assert_null(gq_jobtab_get(&t, seq_of(n)));

    /* Delete every third, then every other of the rest; deleting an
     * absent job is a no-op. */
    for (size_t i = 0; i < n; i += 3) {
        gq_jobtab_del(&t, &jobs[i]);
        live[i] = 0;
    }
    gq_jobtab_del(&t, &jobs[0]);
    check_table(&t, jobs, live, n);
    for (size_t i = 1; i < n; i += 2) {
        gq_jobtab_del(&t, &jobs[i]);
        live[i] = 0;
    }
    check_table(&t, jobs, live, n);

    /* Put back what was deleted: all present again. */
    for (size_t i = 0; i < n; i++) {
        if (!live[i]) {
            assert_int_equal(gq_jobtab_put(&t, &jobs[i]), 0);
            live[i] = 1;
        }
    }
    check_table(&t, jobs, live, n);
    for (size_t i = 0; i < n; i++)
        gq_jobtab_del(&t, &jobs[i]);
    memset(live, 0, n);
    check_table(&t, jobs, live, n);

    gq_jobtab_close(&t);
    assert_null(t.buckets);
    assert_int_equal(t.count, 0);
    free(jobs);
    free(live);
}

static uint64_t
seq_dense(size_t i)
{
    return (uint64_t)i + 1;
}

/* Seqs that agree in their low 32 bits, so a weak hash would pile them
 * into one bucket. */
static uint64_t
seq_strided(size_t i)
{
    return ((uint64_t)i + 1) << 32;
}

static uint64_t
seq_spread(size_t i)
{
    return ((uint64_t)i + 1) * 0x9e3779b97f4a7c15ULL;
}

static void
test_jobtab(void **state)
{
    (void)state;
    run_table(seq_dense, 5000);
    run_table(seq_strided, 5000);
    run_table(seq_spread, 3000);
    /* Past the initial 1024 buckets several times over. */
    run_table(seq_dense, 70000);
}

/* --- the error table --- */

static void
test_err_table(void **state)
{
    (void)state;
    assert_string_equal(gq_err_name(GQ_EINVAL), "invalid");
    assert_int_equal(gq_err_http(GQ_EINVAL), 400);
    assert_string_equal(gq_err_name(GQ_ENOCLASS), "unknown_class");
    assert_int_equal(gq_err_http(GQ_ENOCLASS), 404);
    assert_string_equal(gq_err_name(GQ_EFULL), "queue_full");
    assert_int_equal(gq_err_http(GQ_EFULL), 429);
    assert_string_equal(gq_err_name(GQ_ESTALE), "stale_token");
    assert_int_equal(gq_err_http(GQ_ESTALE), 409);
    assert_string_equal(gq_err_name(GQ_EINTERNAL), "internal");
    assert_string_equal(gq_err_msg(GQ_ESTOREFULL),
                        "store is full; nothing was changed");
    assert_int_equal(gq_err_http(GQ_ESTOREFULL), 507);
    /* Every code is negative, named and has a message. */
    for (int e = GQ__EFIRST + 1; e < GQ__ELAST; e++) {
        assert_true(e < 0);
        assert_string_not_equal(gq_err_name(e), "unknown");
        assert_string_not_equal(gq_err_msg(e), "unknown error");
        assert_in_range(gq_err_http(e), 400, 599);
    }
    assert_string_equal(gq_err_name(0), "unknown");
    assert_string_equal(gq_err_name(GQ__EFIRST), "unknown");
    assert_string_equal(gq_err_name(GQ__ELAST), "unknown");
    assert_string_equal(gq_err_msg(-1), "unknown error");
    assert_int_equal(gq_err_http(12345), 500);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_roundtrip),
        cmocka_unit_test(test_id_rejects),
        cmocka_unit_test(test_state_strings),
        cmocka_unit_test(test_reason_and_kind_strings),
        cmocka_unit_test(test_job_init),
        cmocka_unit_test(test_jobtab),
        cmocka_unit_test(test_err_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
