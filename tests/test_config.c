/*
 * test_config.c - the configuration: defaults, the INI file, its error
 * messages (FILE:LINE: ...) and gq_config_check.
 *
 * Each test writes its file under /tmp (mkstemp) and the teardown
 * removes it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "server/config.h"

/* The seed configuration, as doc/config.md shows it. */
static const char seed_ini[] =
    "[server]\n"
    "listen = 127.0.0.1:7707\n"
    "data_dir = var\n"
    "\n"
    "[gpu]\n"
    "slots = 1                 ; GPU slots; each holds one grant at a time\n"
    "\n"
    "[class chatbot]\n"
    "priority = 10             ; higher tier always goes first\n"
    "max_queue = 1000          ; beyond it: 429 with Retry-After\n"
    "queue_timeout = 60        ; seconds a job may wait; 0 = forever\n"
    "lease_ttl = 120           ; seconds a grant may run without a "
    "heartbeat\n"
    "max_attempts = 1\n"
    "\n"
    "[class transcription]\n"
    "priority = 0\n"
    "weight = 70               ; share of GPU time within the tier\n"
    "max_consecutive = 2       ; grants in a row while another class of "
    "the tier waits; 0 = no cap\n"
    "max_attempts = 3\n"
    "\n"
    "[class summarization]\n"
    "priority = 0\n"
    "weight = 30\n"
    "max_consecutive = 1\n"
    "max_attempts = 3\n";

/* Fails with both values shown when two doubles differ. */
#define assert_dbl_equal(a, b)                                              \
    do {                                                                    \
        double a_ = (a), b_ = (b);                                          \
        if (a_ != b_)                                                       \
            fail_msg("%s == %.17g, want %.17g", #a, a_, b_);                \
    } while (0)

struct tmp {
    char path[64];              /* the test's file, "" before it exists */
    char err[4096];
};

static int
setup(void **state)
{
    struct tmp *t = calloc(1, sizeof *t);
    assert_non_null(t);
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    struct tmp *t = *state;
    if (t->path[0] != '\0')
        unlink(t->path);
    free(t);
    return 0;
}

/* Writes text to the test's file (made on first use); returns its path. */
static const char *
write_file(struct tmp *t, const char *text)
{
    int fd;
    size_t len = strlen(text);

    if (t->path[0] == '\0') {
        snprintf(t->path, sizeof t->path, "/tmp/gq_config_XXXXXX");
        fd = mkstemp(t->path);
    } else {
        fd = open(t->path, O_WRONLY | O_TRUNC);
    }
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return t->path;
}

/* Loads text; returns gq_config_load's result (message in t->err). */
static int
load_text(struct tmp *t, struct gq_config *c, const char *text)
{
    const char *path = write_file(t, text);
    return gq_config_load(c, path, t->err, (int)sizeof t->err);
}

static void
assert_class_equal(const struct gq_class_conf *a,
                   const struct gq_class_conf *b)
{
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->priority, b->priority);
    assert_dbl_equal(a->weight, b->weight);
    assert_int_equal(a->max_consecutive, b->max_consecutive);
    assert_int_equal(a->max_queue, b->max_queue);
    assert_dbl_equal(a->queue_timeout, b->queue_timeout);
    assert_dbl_equal(a->lease_ttl, b->lease_ttl);
    assert_int_equal(a->max_attempts, b->max_attempts);
}

static void
assert_config_equal(const struct gq_config *a, const struct gq_config *b)
{
    int i;

    assert_string_equal(a->listen, b->listen);
    assert_string_equal(a->data_dir, b->data_dir);
    assert_int_equal(a->max_body, b->max_body);
    assert_int_equal(a->max_payload, b->max_payload);
    assert_int_equal(a->max_parked, b->max_parked);
    assert_dbl_equal(a->request_timeout, b->request_timeout);
    assert_dbl_equal(a->drain_timeout, b->drain_timeout);
    assert_dbl_equal(a->retention, b->retention);
    assert_int_equal(a->synchronous, b->synchronous);
    assert_int_equal(a->slots, b->slots);
    assert_int_equal(a->share_by, b->share_by);
    assert_int_equal(a->nclasses, b->nclasses);
    for (i = 0; i < a->nclasses; i++) {
        assert_class_equal(&a->classes[i], &b->classes[i]);
        assert_dbl_equal(a->backoff_base[i], b->backoff_base[i]);
        assert_dbl_equal(a->backoff_max[i], b->backoff_max[i]);
    }
}

/* The number of lines of err (0 when empty). */
static int
count_lines(const char *err)
{
    int n = *err != '\0';
    for (; *err != '\0'; err++)
        n += *err == '\n';
    return n;
}

static void
test_defaults_equal_seed(void **state)
{
    struct gq_config c;
    const struct gq_class_conf *k;
    (void)state;

    gq_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:7707");
    assert_string_equal(c.data_dir, "var");
    assert_int_equal(c.max_body, 2097152);
    assert_int_equal(c.max_payload, 1048576);
    assert_int_equal(c.max_parked, 1024);
    assert_dbl_equal(c.request_timeout, 30);
    assert_dbl_equal(c.drain_timeout, 30);
    assert_dbl_equal(c.retention, 604800);
    assert_int_equal(c.synchronous, 2);
    assert_int_equal(c.slots, 1);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(c.nclasses, 3);

    k = &c.classes[0];
    assert_string_equal(k->name, "chatbot");
    assert_int_equal(k->priority, 10);
    assert_dbl_equal(k->weight, 1);
    assert_int_equal(k->max_consecutive, 0);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 60);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 1);

    k = &c.classes[1];
    assert_string_equal(k->name, "transcription");
    assert_int_equal(k->priority, 0);
    assert_dbl_equal(k->weight, 70);
    assert_int_equal(k->max_consecutive, 2);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 0);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 3);

    k = &c.classes[2];
    assert_string_equal(k->name, "summarization");
    assert_int_equal(k->priority, 0);
    assert_dbl_equal(k->weight, 30);
    assert_int_equal(k->max_consecutive, 1);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 0);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 3);

    for (int i = 0; i < 3; i++) {
        assert_dbl_equal(c.backoff_base[i], 1);
        assert_dbl_equal(c.backoff_max[i], 300);
    }
    assert_int_equal(gq_config_check(&c, NULL, 0), 0);
}

/* The seed file, inline comments and all, loads to the defaults. */
static void
test_seed_file_is_the_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c, seed_ini), 0);
    assert_string_equal(t->err, "");
    assert_config_equal(&c, &d);
}

static void
test_empty_file_is_the_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c, ""), 0);
    assert_config_equal(&c, &d);
    assert_int_equal(load_text(t, &c, "; nothing\n\n# here\n"), 0);
    assert_config_equal(&c, &d);
}

/* Writes c as an INI file that should load back to c. */
static void
format_config(const struct gq_config *c, char *buf, size_t len)
{
    static const char *sync_names[] = {"off", "normal", "full"};
    size_t n = 0;
    int i;

#define OUT(...) (n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__))
    OUT("[server]\nlisten = %s\ndata_dir = %s\nmax_body = %ld\n"
        "max_payload = %ld\nmax_parked = %d\nrequest_timeout = %.17g\n"
        "drain_timeout = %.17g\nretention = %.17g\nsynchronous = %s\n",
        c->listen, c->data_dir, c->max_body, c->max_payload, c->max_parked,
        c->request_timeout, c->drain_timeout, c->retention,
        sync_names[c->synchronous]);
    OUT("[gpu]\nslots = %d\n", c->slots);
    OUT("[scheduler]\nshare_by = %s\n",
        c->share_by == GQ_SHARE_GRANTS ? "grants" : "time");
    for (i = 0; i < c->nclasses; i++) {
        const struct gq_class_conf *k = &c->classes[i];
        OUT("[class %s]\npriority = %d\nweight = %.17g\n"
            "max_consecutive = %d\nmax_queue = %d\nqueue_timeout = %.17g\n"
            "lease_ttl = %.17g\nmax_attempts = %d\nbackoff_base = %.17g\n"
            "backoff_max = %.17g\n",
            k->name, k->priority, k->weight, k->max_consecutive,
            k->max_queue, k->queue_timeout, k->lease_ttl, k->max_attempts,
            c->backoff_base[i], c->backoff_max[i]);
    }
#undef OUT
    assert_true(n < len);
}

/* Every key set away from its default survives a write and a load. */
static void
test_full_file_round_trips(void **state)
{
    struct tmp *t = *state;
    struct gq_config want, got;
    static char text[16384];
    int i;

    gq_config_defaults(&want);
    snprintf(want.listen, sizeof want.listen, "[::1]:0");
    snprintf(want.data_dir, sizeof want.data_dir, "/srv/gpuq/data-1");
    want.max_body = 4000000;
    want.max_payload = 123456;
    want.max_parked = 7;
    want.request_timeout = 2.5;
    want.drain_timeout = 0;
    want.retention = 86400.25;
    want.synchronous = 1;
    want.slots = 8;
    want.share_by = GQ_SHARE_GRANTS;
    want.nclasses = 5;
    for (i = 0; i < want.nclasses; i++) {
        struct gq_class_conf *k = &want.classes[i];
        snprintf(k->name, sizeof k->name, "cls-%d.v_%d", i, i * 7);
        k->priority = 100 - 50 * i;
        k->weight = 0.1 + i * 3.3;
        k->max_consecutive = i;
        k->max_queue = 1 + i * 999;
        k->queue_timeout = i * 1.5;
        k->lease_ttl = 0.5 + i;
        k->max_attempts = 1 + i;
        want.backoff_base[i] = 0.25 * i;
        want.backoff_max[i] = 10.0 * (i + 1);
    }
    format_config(&want, text, sizeof text);
    assert_int_equal(load_text(t, &got, text), 0);
    assert_config_equal(&got, &want);
    assert_int_equal(gq_config_check(&got, t->err, sizeof t->err), 0);
}

static void
test_inline_comments(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    assert_int_equal(load_text(t, &c,
                               "; leading comment\n"
                               "# another\n"
                               "[gpu] ; the GPU\n"
                               "slots = 4 ; four\n"
                               "  ; indented comment\n"
                               "[server]\n"
                               "data_dir = /a;b ; a ';' without space "
                               "before it is data\n"
                               "listen=0.0.0.0:80\t;tab before\n"),
                     0);
    assert_int_equal(c.slots, 4);
    assert_string_equal(c.data_dir, "/a;b");
    assert_string_equal(c.listen, "0.0.0.0:80");

    /* '#' is a comment only at the start of a line. */
    assert_int_equal(load_text(t, &c, "[gpu]\nslots = 2 # two\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: slots: '2 # two' is not an "
                                   "integer"));
}

/* Indentation, CRLF endings, a byte order mark and ':' as separator. */
static void
test_lenient_syntax(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    assert_int_equal(load_text(t, &c,
                               "\xEF\xBB\xBF[gpu]\r\n"
                               "    slots: 3\r\n"
                               "[ class  a-b ]\r\n"
                               "\tweight = 2\r\n"
                               "[class c]\r\n"),
                     0);
    assert_int_equal(c.slots, 3);
    assert_int_equal(c.nclasses, 2);
    assert_string_equal(c.classes[0].name, "a-b");
    assert_dbl_equal(c.classes[0].weight, 2);
    assert_string_equal(c.classes[1].name, "c");
}

struct bad_case {
    const char *text;
    int line;
    const char *msg;            /* expected after "PATH:LINE: " */
};

static const struct bad_case bad_cases[] = {
    {"[gpu]\nslots = 1\n[nosuch]\nx = 1\n", 3, "unknown section [nosuch]"},
    {"[server]\nlisten = 1.2.3.4:5\ncolour = red\n", 3,
     "unknown key 'colour' in [server]"},
    {"[class a]\nweigth = 2\n", 2, "unknown key 'weigth' in [class a]"},
    {"slots = 1\n", 1, "'slots' is outside any section"},
    {"[gpu]\nslots = 1x\n", 2, "slots: '1x' is not an integer"},
    {"[gpu]\nslots = 1.0\n", 2, "slots: '1.0' is not an integer"},
    {"[gpu]\nslots =\n", 2, "slots: missing value"},
    {"[gpu]\nslots = 0\n", 2, "slots must be from 1 to 256, got 0"},
    {"[gpu]\nslots = 257\n", 2, "slots must be from 1 to 256, got 257"},
    {"[gpu]\nslots = 99999999999999999999\n", 2,
     "slots: 99999999999999999999 is out of range"},
    {"[class a]\nweight = abc\n", 2, "weight: 'abc' is not a number"},
    {"[class a]\nweight = nan\n", 2, "weight: 'nan' is not a number"},
    {"[class a]\nweight = 0x10\n", 2, "weight: '0x10' is not a number"},
    {"[class a]\nweight = 1e999\n", 2, "weight: 1e999 is out of range"},
    {"[class a]\nweight = 0\n", 2, "weight must be > 0, got 0"},
    {"[class a]\nweight = -3\n", 2, "weight must be > 0, got -3"},
    {"[class a]\nmax_attempts = 0\n", 2, "max_attempts must be >= 1, got 0"},
    {"[class a]\nmax_queue = 0\n", 2, "max_queue must be >= 1, got 0"},
    {"[class a]\nqueue_timeout = -1\n", 2,
     "queue_timeout must be >= 0, got -1"},
    {"[class a]\nlease_ttl = 0\n", 2, "lease_ttl must be > 0, got 0"},
    {"[class a]\nmax_consecutive = -1\n", 2,
     "max_consecutive must be >= 0, got -1"},
    {"[class a]\nbackoff_max = -1\n", 2, "backoff_max must be >= 0, got -1"},
    {"[server]\nrequest_timeout = 0\n", 2,
     "request_timeout must be > 0, got 0"},
    {"[server]\ndrain_timeout = -0.5\n", 2,
     "drain_timeout must be >= 0, got -0.5"},
    {"[server]\nmax_body = 0\n", 2, "max_body must be >= 1, got 0"},
    {"[server]\ndata_dir =\n", 2, "data_dir: missing value"},
    {"[class a]\n[class b]\n[class a]\n", 3,
     "duplicate section [class a] (first on line 1)"},
    {"[gpu]\nslots = 2\n[gpu]\n", 3,
     "duplicate section [gpu] (first on line 1)"},
    {"[class bad name]\n", 1,
     "bad class name 'bad name': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class a/b]\n", 1,
     "bad class name 'a/b': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class "
     "a234567890123456789012345678901234567890123456789012345678901234]\n",
     1, "bad class name 'a2345678901234567890123456789012345678901234567890"
        "12345678901234': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class]\n", 1, "missing class name: write [class NAME]"},
    {"[classy]\n", 1, "unknown section [classy]"},
    {"[server]\nlisten = localhost\n", 2,
     "listen 'localhost' is not HOST:PORT: missing :PORT"},
    {"[server]\nlisten = 127.0.0.1:65536\n", 2,
     "listen '127.0.0.1:65536' is not HOST:PORT: the port must be a number "
     "from 0 to 65535"},
    {"[server]\nlisten = 127.0.0.1:http\n", 2,
     "listen '127.0.0.1:http' is not HOST:PORT: the port must be a number "
     "from 0 to 65535"},
    {"[server]\nlisten = ::1:7707\n", 2,
     "listen '::1:7707' is not HOST:PORT: an IPv6 address must be in "
     "brackets, e.g. [::1]:7707"},
    {"[server]\nlisten = [::1:7707\n", 2,
     "listen '[::1:7707' is not HOST:PORT: missing ']' after the IPv6 "
     "address"},
    {"[server]\nlisten = :7707\n", 2,
     "listen ':7707' is not HOST:PORT: empty host (0.0.0.0 or [::] listens "
     "on all interfaces)"},
    {"[server]\nsynchronous = extra\n", 2,
     "synchronous: 'extra' is not one of full, normal or off"},
    {"[scheduler]\nshare_by = money\n", 2,
     "share_by: 'money' is not one of time or grants"},
    {"[gpu]\nslots = 1\nslots = 2\n", 3,
     "slots is set twice (first on line 2)"},
    {"[gpu]\n\nslots\n", 3, "expected 'key = value' or '[section]'"},
    {"[gpu]\n= 2\n", 2, "missing key before '='"},
    {"[gpu\nslots = 1\n", 1, "missing ']' at the end of the section name"},
    {"[gpu] slots = 1\n", 1, "unexpected text after ']'"},
    {"[gpu]\n[class x ; y]\n", 2,
     "missing ']' at the end of the section name"},
};

/* Each kind of error gives one line: PATH:LINE: message. */
static void
test_each_error_has_its_line(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char want[1024];
    size_t i;

    for (i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *b = &bad_cases[i];
        int r = load_text(t, &c, b->text);
        snprintf(want, sizeof want, "%s:%d: %s", t->path, b->line, b->msg);
        if (r != GQ_EINVAL || strcmp(t->err, want) != 0)
            fail_msg("case %zu: %s\n got %d '%s'\nwant %d '%s'", i, b->text,
                     r, t->err, GQ_EINVAL, want);
    }
}

/* A key line longer than inih's buffer is an error, not a split line. */
static void
test_long_line(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char text[1200], want[256];
    int n;

    n = snprintf(text, sizeof text, "[server]\ndata_dir = ");
    memset(text + n, 'd', 500);
    snprintf(text + n + 500, sizeof text - (size_t)n - 500,
             "\n[gpu]\nslots = 0\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want,
             "%s:2: line too long (at most 197 characters before a "
             "comment)\n%s:4: slots must be from 1 to 256, got 0",
             t->path, t->path);
    assert_string_equal(t->err, want);

    /* A long comment does not count. */
    n = snprintf(text, sizeof text, "[gpu]\nslots = 5 ;");
    memset(text + n, 'c', 500);
    text[n + 500] = '\0';
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.slots, 5);
}

/* All errors come back, in file order; c is left at the defaults. */
static void
test_multiple_errors(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;
    char want[2048];
    const char *p;

    assert_int_equal(load_text(t, &c,
                               "[server]\n"          /* 1 */
                               "listen = nope\n"     /* 2 */
                               "data_dir = /tmp\n"   /* 3 */
                               "[gpu]\n"             /* 4 */
                               "slots = 0\n"         /* 5 */
                               "[class ok]\n"        /* 6 */
                               "weight = -1\n"       /* 7 */
                               "max_attempts = x\n"  /* 8 */
                               "[bogus]\n"           /* 9 */
                               "anything = 1\n"      /* 10 */
                               "[class ok]\n"),      /* 11 */
                     GQ_EINVAL);
    p = t->path;
    snprintf(want, sizeof want,
             "%s:2: listen 'nope' is not HOST:PORT: missing :PORT\n"
             "%s:5: slots must be from 1 to 256, got 0\n"
             "%s:7: weight must be > 0, got -1\n"
             "%s:8: max_attempts: 'x' is not an integer\n"
             "%s:9: unknown section [bogus]\n"
             "%s:11: duplicate section [class ok] (first on line 6)",
             p, p, p, p, p, p);
    assert_string_equal(t->err, want);
    assert_int_equal(count_lines(t->err), 6);

    gq_config_defaults(&d);
    assert_config_equal(&c, &d);
}

/* A small buffer holds whole lines and says how many were left out. */
static void
test_error_truncation(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char small[100], tiny[12];
    size_t plen;

    write_file(t, "[gpu]\nslots = 0\n[a]\n[b]\n[c]\n[d]\n");
    plen = strlen(t->path);
    assert_int_equal(gq_config_load(&c, t->path, small, sizeof small),
                     GQ_EINVAL);
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(strncmp(small, t->path, plen), 0);
    assert_non_null(strstr(small, "more errors)"));
    /* Every line but the note is whole. */
    assert_non_null(strstr(small, ":2: slots must be from 1 to 256, got 0"));

    assert_int_equal(gq_config_load(&c, t->path, tiny, sizeof tiny),
                     GQ_EINVAL);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
    assert_int_equal(strncmp(tiny, t->path, sizeof tiny - 1), 0);

    assert_int_equal(gq_config_load(&c, t->path, NULL, 0), GQ_EINVAL);
}

/* A file's classes replace the seed's; other sections merge by key. */
static void
test_file_classes_replace_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c,
                               "[server]\ndata_dir = /data\n"
                               "[class batch]\npriority = -1\n"
                               "[class interactive]\n"),
                     0);
    assert_string_equal(c.listen, d.listen);
    assert_string_equal(c.data_dir, "/data");
    assert_int_equal(c.slots, 1);
    assert_int_equal(c.nclasses, 2);
    assert_string_equal(c.classes[0].name, "batch");
    assert_int_equal(c.classes[0].priority, -1);
    /* The rest take the per-class defaults, not the seed chatbot's. */
    assert_string_equal(c.classes[1].name, "interactive");
    assert_int_equal(c.classes[1].priority, 0);
    assert_dbl_equal(c.classes[1].weight, 1);
    assert_int_equal(c.classes[1].max_consecutive, 0);
    assert_int_equal(c.classes[1].max_queue, 1000);
    assert_dbl_equal(c.classes[1].queue_timeout, 0);
    assert_dbl_equal(c.classes[1].lease_ttl, 120);
    assert_int_equal(c.classes[1].max_attempts, 3);
    assert_dbl_equal(c.backoff_base[1], 1);
    assert_dbl_equal(c.backoff_max[1], 300);
    assert_string_equal(c.classes[2].name, "");

    /* Without class sections the seed's classes stay. */
    assert_int_equal(load_text(t, &c, "[gpu]\nslots = 3\n"), 0);
    assert_int_equal(c.slots, 3);
    d.slots = 3;
    assert_config_equal(&c, &d);
}

static void
test_class_limits(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    static char text[8192];
    char want[256];
    size_t n = 0;
    int i;

    for (i = 0; i < GQ_MAX_CLASSES; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "[class c%d]\n", i);
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.nclasses, GQ_MAX_CLASSES);
    assert_string_equal(c.classes[GQ_MAX_CLASSES - 1].name, "c63");

    snprintf(text + n, sizeof text - n, "[class one-more]\nweight = 2\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want, "%s:%d: too many classes (at most %d)",
             t->path, GQ_MAX_CLASSES + 1, GQ_MAX_CLASSES);
    assert_string_equal(t->err, want);

    /* 63 characters is the longest name. */
    assert_int_equal(load_text(t, &c,
                               "[class a23456789012345678901234567890123456"
                               "789012345678901234567890123]\n"),
                     0);
    assert_int_equal(strlen(c.classes[0].name), 63);
}

static void
test_share_by(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    gq_config_defaults(&c);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = grants\n"), 0);
    assert_int_equal(c.share_by, GQ_SHARE_GRANTS);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = time\n"), 0);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = Grants\n"),
                     0);
    assert_int_equal(c.share_by, GQ_SHARE_GRANTS);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = 1\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: share_by: '1' is not one of time "
                                   "or grants"));
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare = time\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: unknown key 'share' in "
                                   "[scheduler]"));
}

static void
test_synchronous(void **state)
{
    static const struct {
        const char *word;
        int value;
    } cases[] = {{"full", 2}, {"normal", 1}, {"off", 0}, {"OFF", 0}};
    struct tmp *t = *state;
    struct gq_config c;
    char text[64];
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "[server]\nsynchronous = %s\n",
                 cases[i].word);
        assert_int_equal(load_text(t, &c, text), 0);
        assert_int_equal(c.synchronous, cases[i].value);
    }
    assert_int_equal(load_text(t, &c, "[server]\nsynchronous = 2\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: synchronous: '2' is not one of "
                                   "full, normal or off"));
}

static void
test_listen_forms(void **state)
{
    static const char *good[] = {
        "127.0.0.1:0", "0.0.0.0:65535", "localhost:7707", "[::1]:7707",
        "[::]:80", "[fe80::1%eth0]:9", "gpu-box.example.org:1",
    };
    struct tmp *t = *state;
    struct gq_config c;
    char text[128];
    size_t i;

    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "[server]\nlisten = %s\n", good[i]);
        if (load_text(t, &c, text) != 0)
            fail_msg("%s: %s", good[i], t->err);
        assert_string_equal(c.listen, good[i]);
    }
}

static void
test_cannot_open(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    const char *path = "/tmp/gq_config_does/not/exist.ini";

    assert_int_equal(gq_config_load(&c, path, t->err, sizeof t->err),
                     GQ_EIO);
    assert_string_equal(t->err, "/tmp/gq_config_does/not/exist.ini: cannot "
                                "open: No such file or directory");

    /* A directory opens but cannot be read. */
    assert_int_equal(gq_config_load(&c, "/tmp", t->err, sizeof t->err),
                     GQ_EIO);
    assert_string_equal(t->err, "/tmp: cannot read: Is a directory");
}

static void
test_check(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    gq_config_defaults(&c);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
    assert_string_equal(t->err, "");

    /* What command-line flags can break. */
    snprintf(c.listen, sizeof c.listen, "127.0.0.1");
    c.slots = 0;
    snprintf(c.classes[2].name, sizeof c.classes[2].name, "chatbot");
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "listen '127.0.0.1' is not HOST:PORT: missing "
                        ":PORT\n"
                        "slots must be from 1 to 256, got 0\n"
                        "class chatbot is defined twice");

    gq_config_defaults(&c);
    c.nclasses = 0;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err, "no class is configured");

    gq_config_defaults(&c);
    c.slots = GQ_MAX_SLOTS + 1;
    c.classes[1].weight = 0;
    c.data_dir[0] = '\0';
    c.synchronous = 5;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "data_dir must not be empty\n"
                        "synchronous must be full, normal or off, got 5\n"
                        "slots must be from 1 to 256, got 257\n"
                        "class transcription: weight must be > 0, got 0");

    gq_config_defaults(&c);
    c.classes[0].name[0] = '\0';
    assert_int_equal(gq_config_check(&c, NULL, 0), GQ_EINVAL);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults_equal_seed),
        T(test_seed_file_is_the_defaults),
        T(test_empty_file_is_the_defaults),
        T(test_full_file_round_trips),
        T(test_inline_comments),
        T(test_lenient_syntax),
        T(test_each_error_has_its_line),
        T(test_long_line),
        T(test_multiple_errors),
        T(test_error_truncation),
        T(test_file_classes_replace_defaults),
        T(test_class_limits),
        T(test_share_by),
        T(test_synchronous),
        T(test_listen_forms),
        T(test_cannot_open),
        T(test_check),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
