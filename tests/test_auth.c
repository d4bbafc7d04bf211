/*
 * test_auth.c - the token table of auth.c: Authorization headers, roles
 * and classes, a reload's new tokens, the refusal counters.  (The
 * routes' rules and the Unix socket are tested against the real daemon:
 * tests/integration/test_auth.py.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "server/auth.h"
#include "server/config.h"

static struct gq_config cfg;

/* The defaults plus tokens (name, role, classes, secret), n of them. */
static void
with_tokens(int n, const struct gq_token_conf *t)
{
    gq_config_defaults(&cfg);
    cfg.ntokens = n;
    for (int i = 0; i < n; i++)
        cfg.tokens[i] = t[i];
}

/* gq_auth_verify of header; returns its code, who and why filled. */
static int
verify(const struct gq_auth *a, const char *header,
       struct gq_principal *who, const char **why)
{
    *why = NULL;
    memset(who, 0, sizeof *who);
    return gq_auth_verify(a, header, who, why);
}

static void
test_open_without_tokens(void **state)
{
    struct gq_principal who;
    const char *why;
    char msg[256];
    struct gq_auth *a;
    (void)state;

    with_tokens(0, NULL);
    a = gq_auth_new(&cfg, msg, sizeof msg);
    assert_non_null(a);
    assert_false(gq_auth_enabled(a));
    assert_int_equal(verify(a, NULL, &who, &why), 0);
    assert_int_equal(who.role, GQ_ROLE_ADMIN);
    assert_true(who.classes == GQ_ALL_CLASSES);
    assert_true(gq_principal_may(&who, 63));
    /* Any header at all: still open. */
    assert_int_equal(verify(a, "Bearer whatever", &who, &why), 0);
    gq_auth_free(a);
    /* And so is "no table". */
    assert_int_equal(verify(NULL, NULL, &who, &why), 0);
    assert_int_equal(who.role, GQ_ROLE_ADMIN);
}

static void
test_headers(void **state)
{
    static const struct gq_token_conf t[] = {
        {"ops", GQ_ROLE_ADMIN, GQ_ALL_CLASSES, "0123456789abcdef"},
        {"app", GQ_ROLE_SUBMIT, 1u << 2, "fedcba9876543210"},
        {"box", GQ_ROLE_WORKER, 1u << 0 | 1u << 1, "box-secret-0123456789"},
    };
    static const char *bad[] = {
        "Bearer 0123456789abcde",  "Bearer 0123456789abcdef0",
        "Bearer 1123456789abcdef", "Bearer 0123456789ABCDEF",
        "Bearer x",                "Bearer 0123456789abcdef fedcba9876543210",
    };
    static const char *malformed[] = {
        "", "Bearer", "Bearer ", "Bearer   \t", "Basic 0123456789abcdef",
        "0123456789abcdef", "Bearer0123456789abcdef", "Bearers x",
    };
    struct gq_principal who;
    const char *why;
    char msg[256], big[2100];
    uint64_t counts[2];
    struct gq_auth *a;
    size_t i;
    (void)state;

    with_tokens(3, t);
    a = gq_auth_new(&cfg, msg, sizeof msg);
    assert_non_null(a);
    assert_true(gq_auth_enabled(a));

    assert_int_equal(verify(a, NULL, &who, &why), GQ_EUNAUTHORIZED);
    assert_string_equal(why, "this API needs a token: send Authorization: "
                             "Bearer TOKEN");
    for (i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        if (verify(a, malformed[i], &who, &why) != GQ_EUNAUTHORIZED)
            fail_msg("'%s' was accepted", malformed[i]);
        assert_string_equal(why, "the Authorization header must be "
                                 "'Bearer TOKEN'");
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (verify(a, bad[i], &who, &why) != GQ_EUNAUTHORIZED)
            fail_msg("'%s' was accepted", bad[i]);
        assert_string_equal(why, "the token is not valid");
    }
    /* Longer than any token is looked at. */
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', sizeof big - 8);
    big[sizeof big - 1] = '\0';
    assert_int_equal(verify(a, big, &who, &why), GQ_EUNAUTHORIZED);

    /* Each token is itself; the scheme's case and blanks do not matter. */
    assert_int_equal(verify(a, "Bearer 0123456789abcdef", &who, &why), 0);
    assert_string_equal(who.name, "ops");
    assert_int_equal(who.role, GQ_ROLE_ADMIN);
    assert_int_equal(verify(a, " bEaReR \tfedcba9876543210\t ", &who, &why),
                     0);
    assert_string_equal(who.name, "app");
    assert_int_equal(who.role, GQ_ROLE_SUBMIT);
    assert_false(gq_principal_may(&who, 0));
    assert_true(gq_principal_may(&who, 2));
    assert_true(gq_principal_may(&who, -1)); /* unknown: the handler's */
    assert_int_equal(verify(a, "Bearer box-secret-0123456789", &who, &why),
                     0);
    assert_string_equal(who.name, "box");
    assert_int_equal(who.role, GQ_ROLE_WORKER);
    assert_true(gq_principal_may(&who, 1));
    assert_false(gq_principal_may(&who, 2));

    gq_auth_counts(a, counts);
    assert_true(counts[0] == 0 && counts[1] == 0);
    gq_auth_count(a, GQ_EUNAUTHORIZED);
    gq_auth_count(a, GQ_EFORBIDDEN);
    gq_auth_count(a, GQ_EFORBIDDEN);
    gq_auth_count(a, GQ_EINVAL); /* not a refusal */
    gq_auth_counts(a, counts);
    assert_true(counts[0] == 1 && counts[1] == 2);
    gq_auth_counts(NULL, counts);
    assert_true(counts[0] == 0 && counts[1] == 0);
    gq_auth_free(a);
}

/* A reload replaces the tokens: old secrets stop, new ones work. */
static void
test_reload(void **state)
{
    static const struct gq_token_conf before[] = {
        {"ops", GQ_ROLE_ADMIN, GQ_ALL_CLASSES, "0123456789abcdef"},
        {"app", GQ_ROLE_SUBMIT, 1u << 2, "fedcba9876543210"},
    };
    static const struct gq_token_conf after[] = {
        {"app", GQ_ROLE_WORKER, 1u << 0, "fedcba9876543210"},
        {"new", GQ_ROLE_SUBMIT, GQ_ALL_CLASSES, "new-secret-0123456789"},
    };
    struct gq_principal who;
    const char *why;
    char msg[256];
    struct gq_auth *a;
    (void)state;

    with_tokens(2, before);
    a = gq_auth_new(&cfg, msg, sizeof msg);
    assert_non_null(a);
    with_tokens(2, after);
    assert_int_equal(gq_auth_reload(a, &cfg, msg, sizeof msg), 0);
    assert_int_equal(verify(a, "Bearer 0123456789abcdef", &who, &why),
                     GQ_EUNAUTHORIZED);
    assert_int_equal(verify(a, "Bearer fedcba9876543210", &who, &why), 0);
    assert_int_equal(who.role, GQ_ROLE_WORKER);
    assert_true(who.classes == 1u << 0);
    assert_int_equal(verify(a, "Bearer new-secret-0123456789", &who, &why),
                     0);
    assert_string_equal(who.name, "new");

    /* A reload to no token opens the API. */
    with_tokens(0, NULL);
    assert_int_equal(gq_auth_reload(a, &cfg, msg, sizeof msg), 0);
    assert_false(gq_auth_enabled(a));
    /* A bad count changes nothing. */
    with_tokens(1, after);
    assert_int_equal(gq_auth_reload(a, &cfg, msg, sizeof msg), 0);
    cfg.ntokens = GQ_MAX_TOKENS + 1;
    assert_int_equal(gq_auth_reload(a, &cfg, msg, sizeof msg),
                     GQ_EINTERNAL);
    assert_int_equal(verify(a, "Bearer fedcba9876543210", &who, &why), 0);
    gq_auth_free(a);
    gq_auth_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_without_tokens),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
