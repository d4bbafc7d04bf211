/*
 * test_libgpuq.c - libgpuq (include/gpuq.h, src/lib/) without a daemon:
 * its pieces one by one (error names, base URLs and escaping, request
 * paths, the API's error bodies, the bounded buffer, the Server-Sent
 * Events parser fed in every possible split), argument checks that fail
 * before anything is sent, and whole calls against a scripted fake server
 * in a thread of this process that records each request and answers it
 * with a canned reply (or never answers).
 *
 * Everything targets 127.0.0.1; every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gpuq.h>

#include "lib/buf.h"
#include "lib/response.h"
#include "lib/sse.h"
#include "lib/url.h"

static void
assert_has(const char *s, const char *part)
{
    if (!s || !strstr(s, part))
        fail_msg("\"%s\" does not contain \"%s\"", s ? s : "(null)", part);
}

/* --- error codes --- */

static void
test_errors(void **state)
{
    static const int codes[] = {
#define X(name, value, msg) GPUQ_E##name,
        GPUQ_ERRNO_MAP(X)
#undef X
    };
    size_t i, j;

    (void)state;
    assert_string_equal(gpuq_strerror(0), "success");
    assert_string_equal(gpuq_err_name(0), "OK");
    assert_string_equal(gpuq_err_name(GPUQ_EINVAL), "EINVAL");
    assert_string_equal(gpuq_err_name(GPUQ_EPROTO), "EPROTO");
    assert_string_equal(gpuq_strerror(GPUQ_ENOMEM), "out of memory");
    assert_string_equal(gpuq_strerror(-12345), "unknown error");
    assert_string_equal(gpuq_err_name(7), "EUNKNOWN");
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_true(codes[i] < 0);
        assert_string_not_equal(gpuq_strerror(codes[i]), "unknown error");
        for (j = 0; j < i; j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
    assert_string_equal(gpuq_version(), GPUQ_VERSION);
}

/* --- base URLs and escaping --- */

static void
test_url_check(void **state)
{
    char longurl[GPUQ_URL_MAX + 16];

    (void)state;
    assert_int_equal(gpuq_url_check("http://127.0.0.1:7707"), 0);
    assert_int_equal(gpuq_url_check("https://gpu.example/"), 0);
    assert_int_equal(gpuq_url_check("http://h///"), 0);
    assert_int_equal(gpuq_url_check(NULL), GPUQ_EURL);
    assert_int_equal(gpuq_url_check(""), GPUQ_EURL);
    assert_int_equal(gpuq_url_check("127.0.0.1:7707"), GPUQ_EURL);
    assert_int_equal(gpuq_url_check("ftp://h"), GPUQ_EURL);
    assert_int_equal(gpuq_url_check("http://"), GPUQ_EURL);
    assert_int_equal(gpuq_url_check("https:///"), GPUQ_EURL);
    memset(longurl, 'a', sizeof(longurl));
    memcpy(longurl, "http://", 7);
    longurl[GPUQ_URL_MAX] = '\0'; /* GPUQ_URL_MAX bytes: one too many */
    assert_int_equal(gpuq_url_check(longurl), GPUQ_EURL);
    longurl[GPUQ_URL_MAX - 1] = '\0';
    assert_int_equal(gpuq_url_check(longurl), 0);
}

static void
test_url_base(void **state)
{
    char base[GPUQ_URL_MAX];

    (void)state;
    assert_int_equal(gpuq__url_base("http://h:1//", base, sizeof(base)), 0);
    assert_string_equal(base, "http://h:1");
    unsetenv("GPUQ_URL");
    assert_int_equal(gpuq__url_base(NULL, base, sizeof(base)), 0);
    assert_string_equal(base, GPUQ_DEFAULT_URL);
    setenv("GPUQ_URL", "", 1);
    assert_int_equal(gpuq__url_base(NULL, base, sizeof(base)), 0);
    assert_string_equal(base, GPUQ_DEFAULT_URL);
    setenv("GPUQ_URL", "https://q.example:9/", 1);
    assert_int_equal(gpuq__url_base(NULL, base, sizeof(base)), 0);
    assert_string_equal(base, "https://q.example:9");
    /* An explicit URL wins over the environment. */
    assert_int_equal(gpuq__url_base("http://x", base, sizeof(base)), 0);
    assert_string_equal(base, "http://x");
    setenv("GPUQ_URL", "nonsense", 1);
    assert_int_equal(gpuq__url_base(NULL, base, sizeof(base)), GPUQ_EURL);
    unsetenv("GPUQ_URL");
    /* A buffer too small for the URL. */
    assert_int_equal(gpuq__url_base("http://abc", base, 10), GPUQ_EURL);
    assert_int_equal(gpuq__url_base("http://abc", base, 11), 0);
}

static void
test_escape(void **state)
{
    char buf[64];

    (void)state;
    assert_int_equal(gpuq_escape("j42.7-a_b~", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "j42.7-a_b~");
    assert_int_equal(gpuq_escape("a b/c?d&e=f%#", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "a%20b%2Fc%3Fd%26e%3Df%25%23");
    assert_int_equal(gpuq_escape("\xc3\xa9\n", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "%C3%A9%0A");
    assert_int_equal(gpuq_escape("", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    /* Exact fits and one byte short. */
    assert_int_equal(gpuq_escape("abc", buf, 4), 0);
    assert_int_equal(gpuq_escape("abc", buf, 3), GPUQ_EINVAL);
    assert_int_equal(gpuq_escape("a/", buf, 5), 0);
    assert_string_equal(buf, "a%2F");
    assert_int_equal(gpuq_escape("a/", buf, 4), GPUQ_EINVAL);
    assert_int_equal(gpuq_escape("", buf, 0), GPUQ_EINVAL);
}

/* --- request paths --- */

static void
test_path(void **state)
{
    struct gpuq__path p;
    char big[GPUQ__PATH_MAX];

    (void)state;
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, "j4 2/x");
    gpuq__path_lit(&p, "/cancel");
    assert_false(p.overflow);
    assert_string_equal(p.s, "/v1/jobs/j4%202%2Fx/cancel");
    assert_int_equal(p.len, strlen(p.s));

    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_query(&p, "class", NULL);
    gpuq__path_query(&p, "state", "queued");
    gpuq__path_query_ll(&p, "limit", 10);
    gpuq__path_query(&p, "after", "j&3");
    assert_string_equal(p.s, "/v1/jobs?state=queued&limit=10&after=j%263");

    gpuq__path_init(&p, "/v1/locks");
    gpuq__path_seg(&p, "j5.9");
    gpuq__path_query_ll(&p, "token", -1);
    assert_string_equal(p.s, "/v1/locks/j5.9?token=-1");

    /* Too long: flagged, never silently cut into a different request. */
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, big);
    assert_true(p.overflow);
    gpuq__path_lit(&p, "/x");
    assert_true(p.overflow);
    assert_true(strlen(p.s) < GPUQ__PATH_MAX);
    /* Escaping that triples the length overflows too. */
    memset(big, '/', 1400);
    big[1400] = '\0';
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, big);
    assert_true(p.overflow);
}

/* --- error bodies --- */

/* A response holding body (copied), with status. */
static void
resp_with(struct gpuq_response *r, long status, const char *body)
{
    gpuq_response_init(r);
    r->status = status;
    if (body) {
        r->body = strdup(body);
        assert_non_null(r->body);
        r->len = strlen(body);
    }
}

static void
test_parse_error(void **state)
{
    struct gpuq_response r;
    char line[512];

    (void)state;
    resp_with(&r, 400,
              "{\"error\": {\"code\": \"invalid\", \"message\": "
              "\"priority must be an integer in -1000..1000\", "
              "\"field\": \"priority\"}}");
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_string_equal(r.error_code, "invalid");
    assert_string_equal(r.error_message,
                        "priority must be an integer in -1000..1000");
    assert_string_equal(r.error_field, "priority");
    gpuq__response_describe(&r, line, sizeof(line));
    assert_string_equal(line, "HTTP 400 invalid: priority must be an "
                              "integer in -1000..1000 (field: priority)");
    gpuq_response_free(&r);
    assert_null(r.body);
    assert_null(r.error_code);
    assert_int_equal(r.retry_after, -1);

    /* No field; Retry-After. */
    resp_with(&r, 429, "{\"error\":{\"code\":\"queue_full\","
                       "\"message\":\"full\"}}");
    r.retry_after = 3;
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_null(r.error_field);
    gpuq__response_describe(&r, line, sizeof(line));
    assert_string_equal(line, "HTTP 429 queue_full: full (retry after 3s)");
    gpuq_response_free(&r);

    /* Members of the wrong type count as absent. */
    resp_with(&r, 404, "{\"error\":{\"code\":7,\"message\":\"gone\","
                       "\"field\":null}}");
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_null(r.error_code);
    assert_string_equal(r.error_message, "gone");
    assert_null(r.error_field);
    gpuq__response_describe(&r, line, sizeof(line));
    assert_string_equal(line, "HTTP 404 error: gone");
    gpuq_response_free(&r);

    /* Not an API error: the body speaks for itself, on one line. */
    resp_with(&r, 502, "<html>\nbad gateway\r\n</html>");
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_null(r.error_code);
    assert_null(r.error_message);
    gpuq__response_describe(&r, line, sizeof(line));
    assert_string_equal(line, "HTTP 502: <html> bad gateway  </html>");
    gpuq_response_free(&r);

    resp_with(&r, 500, "{\"error\": \"a string\"}");
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_null(r.error_code);
    gpuq_response_free(&r);

    resp_with(&r, 500, "[1, 2]");
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    assert_null(r.error_code);
    gpuq_response_free(&r);

    resp_with(&r, 503, NULL);
    assert_int_equal(gpuq__response_parse_error(&r), 0);
    gpuq__response_describe(&r, line, sizeof(line));
    assert_string_equal(line, "HTTP 503: (no body)");
    gpuq_response_free(&r);
    gpuq_response_free(&r); /* twice is fine */
    gpuq_response_free(NULL);

    /* A long body is cut at 200 bytes; a small buffer cuts the line. */
    {
        char body[1000];
        memset(body, 'x', sizeof(body) - 1);
        body[sizeof(body) - 1] = '\0';
        resp_with(&r, 500, body);
        gpuq__response_describe(&r, line, sizeof(line));
        assert_int_equal(strlen(line), strlen("HTTP 500: ") + 200);
        gpuq__response_describe(&r, line, 16);
        assert_string_equal(line, "HTTP 500: xxxxx");
        gpuq_response_free(&r);
    }
}

/* --- the bounded buffer, and allocation failures --- */

static int fail_allocs; /* the next allocations of buf.c that fail */

static void *
failing_realloc(void *p, size_t n)
{
    if (fail_allocs > 0) {
        fail_allocs--;
        return NULL;
    }
    return realloc(p, n);
}

static void
test_buf(void **state)
{
    struct gpuq__buf b;
    char *p;

    (void)state;
    gpuq__buf_init(&b, 10);
    assert_int_equal(gpuq__buf_add(&b, "hello", 5), 0);
    assert_int_equal(gpuq__buf_add(&b, "world", 5), 0);
    assert_string_equal(b.p, "helloworld");
    assert_int_equal(gpuq__buf_add(&b, "!", 1), GPUQ_ETOOBIG);
    assert_string_equal(b.p, "helloworld");
    gpuq__buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    assert_int_equal(gpuq__buf_add(&b, "x", 1), 0);
    p = gpuq__buf_take(&b);
    assert_string_equal(p, "x");
    free(p);
    assert_null(b.p);
    assert_int_equal(b.len, 0);

    gpuq__realloc = failing_realloc;
    fail_allocs = 1;
    assert_int_equal(gpuq__buf_add(&b, "abc", 3), GPUQ_ENOMEM);
    assert_int_equal(b.len, 0);
    assert_null(b.p);
    assert_int_equal(gpuq__buf_add(&b, "abc", 3), 0);
    assert_string_equal(b.p, "abc");
    gpuq__realloc = realloc;
    gpuq__buf_free(&b);
    gpuq__buf_free(&b);
}

/* --- Server-Sent Events --- */

/* What the event callback saw, one "event|data" string per event. */
struct seen {
    char log[8192];
    int n;
    int stop_after; /* end the stream after this many events; 0 = never */
    size_t last_len; /* len of the last event */
};

static int
on_event(const char *event, const char *data, size_t len, void *ud)
{
    struct seen *s = ud;
    size_t used = strlen(s->log);

    if (data)
        assert_int_equal(strlen(data), len); /* NUL-terminated, no NULs */
    snprintf(s->log + used, sizeof(s->log) - used, "[%s|%s]", event,
             data ? data : "(dropped)");
    s->n++;
    s->last_len = len;
    return s->stop_after && s->n >= s->stop_after;
}

/* Feeds text to a fresh parser in pieces of at most step bytes. */
static int
feed_steps(const char *text, size_t step, struct seen *seen)
{
    struct gpuq__sse sse;
    size_t off = 0, len = strlen(text), n;
    int rc = 0;

    gpuq__sse_init(&sse, on_event, seen);
    while (off < len && rc == 0) {
        n = len - off < step ? len - off : step;
        rc = gpuq__sse_feed(&sse, text + off, n);
        off += n;
    }
    gpuq__sse_close(&sse);
    return rc;
}

static const char sse_text[] =
    ": ping\n"
    "\n"
    "event: job\n"
    "data: {\"id\":\"j1\",\"state\":\"running\"}\n"
    "\n"
    "event: token\r\n"
    "data:no space\r\n"
    "data:  two spaces\r\n"
    "id: 7\r\n"
    "retry: 100\r\n"
    "\r\n"
    "data: cr only\r"
    "\r"
    "event\n"
    "data\n"
    "data: x\n"
    "\n"
    "event: empty\n"
    "\n"
    "data: not ended";

static const char sse_want[] =
    "[job|{\"id\":\"j1\",\"state\":\"running\"}]"
    "[token|no space\n two spaces]"
    "[|cr only]"
    "[|\nx]";

static void
test_sse_splits(void **state)
{
    struct seen seen;
    size_t step;

    (void)state;
    /* Every piece size, so that every byte is once a piece's end. */
    for (step = 1; step <= sizeof(sse_text); step++) {
        memset(&seen, 0, sizeof(seen));
        assert_int_equal(feed_steps(sse_text, step, &seen), 0);
        if (strcmp(seen.log, sse_want) != 0)
            fail_msg("pieces of %zu: got %s", step, seen.log);
    }
}

static void
test_sse_stop(void **state)
{
    struct gpuq__sse sse;
    struct seen seen;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    seen.stop_after = 1;
    gpuq__sse_init(&sse, on_event, &seen);
    assert_int_equal(gpuq__sse_feed(&sse, "data: a\n\ndata: b\n\n", 18), 1);
    assert_int_equal(gpuq__sse_feed(&sse, "data: c\n\n", 9), 1);
    gpuq__sse_close(&sse);
    assert_string_equal(seen.log, "[|a]");
}

static void
test_sse_bounds(void **state)
{
    struct gpuq__sse sse;
    struct seen seen;
    char *big;
    size_t n = GPUQ_EVENT_MAX + 100, i;

    (void)state;
    big = malloc(n);
    assert_non_null(big);
    memset(big, 'x', n);

    /* One data line over the maximum: the event is dropped, reported
     * with data NULL, and the next one is whole. */
    memset(&seen, 0, sizeof(seen));
    gpuq__sse_init(&sse, on_event, &seen);
    assert_int_equal(gpuq__sse_feed(&sse, "event: e\ndata: ", 15), 0);
    assert_int_equal(gpuq__sse_feed(&sse, big, n), 0);
    assert_int_equal(gpuq__sse_feed(&sse, "\n\ndata: ok\n\n", 12), 0);
    assert_string_equal(seen.log, "[e|(dropped)][|ok]");

    /* Many data lines that add up to over the maximum. */
    memset(&seen, 0, sizeof(seen));
    for (i = 0; i < 5; i++) {
        assert_int_equal(gpuq__sse_feed(&sse, "data: ", 6), 0);
        assert_int_equal(gpuq__sse_feed(&sse, big, GPUQ_EVENT_MAX / 4), 0);
        assert_int_equal(gpuq__sse_feed(&sse, "\n", 1), 0);
    }
    assert_int_equal(gpuq__sse_feed(&sse, "\ndata: ok\n\n", 11), 0);
    assert_string_equal(seen.log, "[|(dropped)][|ok]");

    /* Exactly the maximum is kept. */
    memset(&seen, 0, sizeof(seen));
    seen.stop_after = 0;
    assert_int_equal(gpuq__sse_feed(&sse, "data: ", 6), 0);
    assert_int_equal(gpuq__sse_feed(&sse, big, GPUQ_EVENT_MAX), 0);
    assert_int_equal(gpuq__sse_feed(&sse, "\n\n", 2), 0);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.last_len, GPUQ_EVENT_MAX);
    assert_null(strstr(seen.log, "(dropped)"));

    /* An overlong comment spoils nothing. */
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(gpuq__sse_feed(&sse, ":", 1), 0);
    assert_int_equal(gpuq__sse_feed(&sse, big, n), 0);
    assert_int_equal(gpuq__sse_feed(&sse, "\ndata: ok\n\n", 11), 0);
    assert_string_equal(seen.log, "[|ok]");
    gpuq__sse_close(&sse);
    free(big);
}

static void
test_sse_nomem(void **state)
{
    struct gpuq__sse sse;
    struct seen seen;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    gpuq__sse_init(&sse, on_event, &seen);
    gpuq__realloc = failing_realloc;
    fail_allocs = 1;
    assert_int_equal(gpuq__sse_feed(&sse, "data: a\n\n", 9), GPUQ_ENOMEM);
    fail_allocs = 0;
    gpuq__realloc = realloc;
    gpuq__sse_close(&sse);
    assert_int_equal(seen.n, 0);
}

/* --- the client, before anything is sent --- */

static void
test_client_new(void **state)
{
    struct gpuq_client *c;

    (void)state;
    assert_null(gpuq_client_new("localhost:7707", NULL));
    assert_null(gpuq_client_new("http://h", "bad\ntoken"));
    c = gpuq_client_new("http://127.0.0.1:9/", "t0k");
    assert_non_null(c);
    assert_string_equal(gpuq_client_url(c), "http://127.0.0.1:9");
    assert_string_equal(gpuq_client_errmsg(c), "");
    assert_int_equal(gpuq_client_set_timeout(c, 5), GPUQ_DEFAULT_TIMEOUT);
    assert_int_equal(gpuq_client_set_timeout(c, -3), 5);
    assert_int_equal(gpuq_client_set_timeout(c, 30), 0);
    gpuq_client_free(c);
    gpuq_client_free(NULL);
    unsetenv("GPUQ_URL");
    c = gpuq_client_new(NULL, NULL);
    assert_non_null(c);
    assert_string_equal(gpuq_client_url(c), GPUQ_DEFAULT_URL);
    gpuq_client_free(c);
}

static int
no_event(const char *event, const char *data, size_t len, void *ud)
{
    (void)event;
    (void)data;
    (void)len;
    (void)ud;
    fail_msg("no event expected");
    return 1;
}

/* Calls that are refused before a byte is sent (port 9: nobody there). */
static void
test_client_refuses(void **state)
{
    struct gpuq_client *c = gpuq_client_new("http://127.0.0.1:9", NULL);
    struct gpuq_submit_opts o;
    struct gpuq_response r;
    const char *const none[] = {NULL};
    const char *const bad_cls[] = {"\xff", NULL};
    char big[GPUQ__PATH_MAX];

    (void)state;
    assert_non_null(c);
    memset(&r, 0x5a, sizeof(r)); /* garbage in: initialised anyway */
    assert_int_equal(gpuq_client_request(c, "get", "/v1/status", NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(r.status, 0);
    assert_null(r.body);
    assert_int_equal(r.retry_after, -1);
    assert_int_equal(gpuq_client_request(c, "GET", "v1/status", NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_request(c, "GET", "/a b", NULL, &r),
                     GPUQ_EINVAL);

    gpuq_submit_opts_init(&o);
    assert_int_equal(gpuq_client_submit(c, &o, &r), GPUQ_EINVAL);
    o.cls = "c";
    o.payload = "{bad";
    assert_int_equal(gpuq_client_submit(c, &o, &r), GPUQ_EINVAL);
    assert_has(gpuq_client_errmsg(c), "payload is not JSON");
    o.payload = "{\"a\":1,\"a\":2}"; /* duplicate keys */
    assert_int_equal(gpuq_client_submit(c, &o, &r), GPUQ_EINVAL);
    o.payload = NULL;
    o.metadata = "[1]";
    assert_int_equal(gpuq_client_submit(c, &o, &r), GPUQ_EINVAL);
    assert_has(gpuq_client_errmsg(c), "metadata is not a JSON object");
    o.metadata = NULL;
    o.idempotency_key = "\xc3";
    assert_int_equal(gpuq_client_submit(c, &o, &r), GPUQ_EINVAL);
    assert_has(gpuq_client_errmsg(c), "not UTF-8");

    assert_int_equal(gpuq_client_get(c, "", 0, &r), GPUQ_EINVAL);
    assert_int_equal(gpuq_client_get(c, NULL, 0, &r), GPUQ_EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(gpuq_client_get(c, big, 0, &r), GPUQ_EINVAL);
    assert_has(gpuq_client_errmsg(c), "too long");
    assert_int_equal(gpuq_client_cancel(c, "", &r), GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lease(c, none, 1, NULL, &r), GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lease(c, NULL, 1, NULL, &r), GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lease(c, bad_cls, 1, NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lease_op(c, "j1.1", "explode", 1, NULL, &r),
                     GPUQ_EINVAL);
    assert_has(gpuq_client_errmsg(c), "explode");
    assert_int_equal(gpuq_client_lease_op(c, "j1.1", "complete", 1, "[]",
                                          &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lock(c, NULL, NULL, 1, NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_lock(c, "c", "h", 1, "nope", &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_unlock(c, "", 1, &r), GPUQ_EINVAL);
    assert_int_equal(gpuq_client_events(c, NULL, NULL, NULL, NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(gpuq_client_stream(c, "", no_event, NULL, &r),
                     GPUQ_EINVAL);
    assert_int_equal(r.status, 0);
    assert_null(r.body);
    gpuq_response_free(&r);
    gpuq_client_free(c);
}

/* --- whole calls against a fake server --- */

/*
 * The fake server: one thread accepting on 127.0.0.1 port 0, one
 * connection at a time.  It reads a request (headers and a
 * Content-Length body), keeps it in req, and writes reply, then closes;
 * with reply NULL it never answers and waits for the client to go.
 */
struct fake {
    int lfd;
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    const char *reply; /* the raw HTTP reply, or NULL to hang */
    char req[65536];   /* the last request */
    int nreq;          /* requests so far */
    volatile int stop;
};

static struct fake fake;

/* Reads a request from fd into buf; its length, or -1. */
static ssize_t
read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    char *end;
    long clen = 0;

    for (;;) {
        if (len + 1 >= cap)
            return -1;
        n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            clen = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
        }
        if (len >= (size_t)(end + 4 - buf) + (size_t)clen)
            return (ssize_t)len;
    }
}

static void *
fake_main(void *arg)
{
    struct pollfd p = {.fd = fake.lfd, .events = POLLIN};
    char buf[65536], drain[256];
    const char *reply;
    ssize_t n;
    int fd;

    (void)arg;
    while (!fake.stop) {
        if (poll(&p, 1, 50) <= 0)
            continue;
        fd = accept(fake.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        n = read_request(fd, buf, sizeof(buf));
        pthread_mutex_lock(&fake.mu);
        if (n > 0) {
            memcpy(fake.req, buf, (size_t)n + 1);
            fake.nreq++;
        }
        reply = fake.reply;
        pthread_mutex_unlock(&fake.mu);
        if (n > 0 && reply) {
            size_t off = 0, len = strlen(reply);
            while (off < len) {
                ssize_t w = write(fd, reply + off, len - off);
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
        } else if (n > 0) {
            struct pollfd q = {.fd = fd, .events = POLLIN};
            while (!fake.stop && poll(&q, 1, 50) >= 0)
                if (q.revents && read(fd, drain, sizeof(drain)) <= 0)
                    break;
        }
        close(fd);
    }
    return NULL;
}

static int
fake_setup(void **state)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int one = 1;

    (void)state;
    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.mu, NULL);
    fake.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (fake.lfd < 0)
        return -1;
    setsockopt(fake.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fake.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fake.lfd, 8) != 0 ||
        getsockname(fake.lfd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    fake.port = ntohs(a.sin_port);
    return pthread_create(&fake.thread, NULL, fake_main, NULL) == 0 ? 0 : -1;
}

static int
fake_teardown(void **state)
{
    (void)state;
    fake.stop = 1;
    pthread_join(fake.thread, NULL);
    close(fake.lfd);
    pthread_mutex_destroy(&fake.mu);
    return 0;
}

static void
fake_reply(const char *reply)
{
    pthread_mutex_lock(&fake.mu);
    fake.reply = reply;
    fake.req[0] = '\0';
    pthread_mutex_unlock(&fake.mu);
}

/* The last request's body (after the blank line). */
static const char *
req_body(void)
{
    const char *p = strstr(fake.req, "\r\n\r\n");

    return p ? p + 4 : "";
}

static struct gpuq_client *
fake_client(const char *token)
{
    char url[64];
    struct gpuq_client *c;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", fake.port);
    c = gpuq_client_new(url, token);
    assert_non_null(c);
    return c;
}

/* A whole reply with body; valid until the next call. */
static const char *
reply_with(const char *status, const char *headers, const char *body)
{
    static char buf[8192];

    snprintf(buf, sizeof(buf),
             "HTTP/1.1 %s\r\nConnection: close\r\n%sContent-Length: %zu"
             "\r\n\r\n%s",
             status, headers, strlen(body), body);
    return buf;
}

static void
test_fake_request(void **state)
{
    struct gpuq_client *c = fake_client("s3cret");
    struct gpuq_response r;

    (void)state;
    fake_reply(reply_with("200 OK", "", "{\"ok\":true}"));
    assert_int_equal(gpuq_client_request(c, "POST", "/v1/x", "{\"a\":1}", &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 11);
    assert_string_equal(r.body, "{\"ok\":true}");
    assert_null(r.error_code);
    assert_string_equal(gpuq_client_errmsg(c), "");
    assert_has(fake.req, "POST /v1/x HTTP/1.1\r\n");
    assert_has(fake.req, "\r\nAuthorization: Bearer s3cret\r\n");
    assert_has(fake.req, "\r\nContent-Type: application/json\r\n");
    assert_has(fake.req, "\r\nAccept: application/json\r\n");
    assert_has(fake.req, "\r\nUser-Agent: libgpuq/" GPUQ_VERSION "\r\n");
    assert_string_equal(req_body(), "{\"a\":1}");
    gpuq_response_free(&r);

    /* The generic call does not check that a 2xx body is JSON... */
    fake_reply(reply_with("200 OK", "", "hello"));
    assert_int_equal(gpuq_client_request(c, "GET", "/metrics", NULL, &r), 0);
    assert_string_equal(r.body, "hello");
    gpuq_response_free(&r);
    /* ...the typed ones do, keeping the reply. */
    assert_int_equal(gpuq_client_status(c, &r), GPUQ_EPROTO);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_has(gpuq_client_errmsg(c), "malformed reply from http://127.0.0.1:");
    assert_has(gpuq_client_errmsg(c), "/v1/status: hello");
    gpuq_response_free(&r);

    /* An API error, with Retry-After. */
    fake_reply(reply_with("429 Too Many Requests", "Retry-After: 7\r\n",
                          "{\"error\":{\"code\":\"queue_full\","
                          "\"message\":\"full\",\"field\":\"class\"}}"));
    assert_int_equal(gpuq_client_request(c, "DELETE", "/v1/q", NULL, &r),
                     GPUQ_EHTTP);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after, 7);
    assert_string_equal(r.error_code, "queue_full");
    assert_string_equal(r.error_message, "full");
    assert_string_equal(r.error_field, "class");
    assert_string_equal(gpuq_client_errmsg(c), "HTTP 429 queue_full: full "
                                               "(field: class) "
                                               "(retry after 7s)");
    assert_has(fake.req, "DELETE /v1/q HTTP/1.1\r\n");
    gpuq_response_free(&r);

    /* 204: no body at all. */
    fake_reply("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    {
        const char *const cls[] = {"c", "d", NULL};
        assert_int_equal(gpuq_client_lease(c, cls, 3, "w1", &r), 0);
    }
    assert_int_equal(r.status, 204);
    assert_null(r.body);
    assert_int_equal(r.len, 0);
    assert_has(fake.req, "POST /v1/leases HTTP/1.1\r\n");
    assert_string_equal(req_body(),
                        "{\"classes\":[\"c\",\"d\"],\"wait\":3,\"worker\":"
                        "\"w1\"}");
    gpuq_response_free(&r);
    gpuq_client_free(c);
}

static void
test_fake_typed(void **state)
{
    struct gpuq_client *c = fake_client(NULL);
    struct gpuq_submit_opts o;
    struct gpuq_response r;
    const char *const deps[] = {"j1", "j2", NULL};

    (void)state;
    fake_reply(reply_with("200 OK", "", "{}"));
    gpuq_submit_opts_init(&o);
    o.cls = "transcription";
    o.payload = "[1, 2.5, \"x\"]";
    o.metadata = "{\"m\": \"7\"}";
    o.priority = -3;
    o.idempotency_key = "k1";
    o.queue_timeout = 1.5;
    o.depends_on = deps;
    o.callback_url = "http://app/hook";
    assert_int_equal(gpuq_client_submit(c, &o, &r), 0);
    assert_has(fake.req, "POST /v1/jobs HTTP/1.1\r\n");
    assert_null(strstr(fake.req, "Authorization"));
    assert_string_equal(req_body(),
                        "{\"class\":\"transcription\",\"payload\":[1,2.5,"
                        "\"x\"],\"metadata\":{\"m\":\"7\"},\"priority\":-3,"
                        "\"idempotency_key\":\"k1\",\"queue_timeout\":1.5,"
                        "\"depends_on\":[\"j1\",\"j2\"],\"callback_url\":"
                        "\"http://app/hook\"}");
    gpuq_response_free(&r);
    /* Whole seconds go as an integer; absent fields are not sent. */
    gpuq_submit_opts_init(&o);
    o.cls = "c";
    o.queue_timeout = 0;
    assert_int_equal(gpuq_client_submit(c, &o, &r), 0);
    assert_string_equal(req_body(), "{\"class\":\"c\",\"queue_timeout\":0}");
    gpuq_response_free(&r);

    assert_int_equal(gpuq_client_get(c, "j4/2", 60, &r), 0);
    assert_has(fake.req, "GET /v1/jobs/j4%2F2?wait=60 HTTP/1.1\r\n");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_list(c, "a b", NULL, 10, "j3", &r), 0);
    assert_has(fake.req, "GET /v1/jobs?class=a%20b&limit=10&after=j3 ");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_cancel(c, "j9", &r), 0);
    assert_has(fake.req, "POST /v1/jobs/j9/cancel HTTP/1.1\r\n");
    assert_string_equal(req_body(), "{}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_requeue(c, "j9", &r), 0);
    assert_has(fake.req, "POST /v1/jobs/j9/requeue HTTP/1.1\r\n");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_drain(c, 2.0, &r), 0);
    assert_has(fake.req, "POST /v1/admin/drain HTTP/1.1\r\n");
    assert_string_equal(req_body(), "{\"deadline\":2}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_drain(c, -1, &r), 0);
    assert_string_equal(req_body(), "{}");
    gpuq_response_free(&r);

    /* The token wins over a "token" in json_fields. */
    assert_int_equal(gpuq_client_lease_op(c, "j7.3", "complete", 7,
                                          "{\"result\":{\"x\":1},"
                                          "\"token\":99}",
                                          &r),
                     0);
    assert_has(fake.req, "POST /v1/leases/j7.3/complete HTTP/1.1\r\n");
    assert_string_equal(req_body(), "{\"result\":{\"x\":1},\"token\":7}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_lease_op(c, "j7.3", "heartbeat", 7, NULL,
                                          &r),
                     0);
    assert_string_equal(req_body(), "{\"token\":7}");
    gpuq_response_free(&r);

    assert_int_equal(gpuq_client_lock(c, "chatbot", "me", 5,
                                      "{\"priority\":4,\"class\":\"x\"}", &r),
                     0);
    assert_has(fake.req, "POST /v1/locks HTTP/1.1\r\n");
    assert_string_equal(req_body(), "{\"priority\":4,\"class\":\"chatbot\","
                                    "\"holder\":\"me\",\"wait\":5}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_lock(c, "chatbot", NULL, -1, NULL, &r), 0);
    assert_string_equal(req_body(), "{\"class\":\"chatbot\"}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_lock_heartbeat(c, "j5.9", 9, &r), 0);
    assert_has(fake.req, "POST /v1/locks/j5.9/heartbeat HTTP/1.1\r\n");
    assert_string_equal(req_body(), "{\"token\":9}");
    gpuq_response_free(&r);
    assert_int_equal(gpuq_client_unlock(c, "j5.9", 9, &r), 0);
    assert_has(fake.req, "DELETE /v1/locks/j5.9?token=9 HTTP/1.1\r\n");
    gpuq_response_free(&r);
    gpuq_client_free(c);
}

static void
test_fake_events(void **state)
{
    struct gpuq_client *c = fake_client(NULL);
    struct gpuq_response r;
    struct seen seen;

    (void)state;
    fake_reply("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               "Connection: close\r\n\r\n"
               ": ping\n\nevent: job\ndata: {\"id\":\"j1\"}\n\n"
               "event: job\r\ndata: {\"id\":\"j2\"}\r\n\r\n");
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(gpuq_client_events(c, "a b", "j1", on_event, &seen, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_null(r.body);
    assert_has(fake.req, "GET /v1/events?class=a%20b&job=j1 HTTP/1.1\r\n");
    assert_has(fake.req, "\r\nAccept: text/event-stream\r\n");
    assert_string_equal(seen.log, "[job|{\"id\":\"j1\"}][job|{\"id\":\"j2\"}]");
    gpuq_response_free(&r);

    /* The callback ends the stream early. */
    memset(&seen, 0, sizeof(seen));
    seen.stop_after = 1;
    assert_int_equal(gpuq_client_stream(c, "j1", on_event, &seen, &r), 0);
    assert_has(fake.req, "GET /v1/jobs/j1/stream HTTP/1.1\r\n");
    assert_string_equal(seen.log, "[job|{\"id\":\"j1\"}]");
    gpuq_response_free(&r);

    /* An error reply is not a stream. */
    fake_reply(reply_with("503 Service Unavailable", "",
                          "{\"error\":{\"code\":\"busy\","
                          "\"message\":\"too many\"}}"));
    assert_int_equal(gpuq_client_events(c, NULL, NULL, no_event, NULL, &r),
                     GPUQ_EHTTP);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.error_code, "busy");
    assert_has(fake.req, "GET /v1/events HTTP/1.1\r\n");
    gpuq_response_free(&r);
    gpuq_client_free(c);
}

static int aborts; /* calls of abort_now */

static int
abort_now(void *ud)
{
    (void)ud;
    return ++aborts >= 2;
}

static void
test_fake_timeout_abort(void **state)
{
    struct gpuq_client *c = fake_client(NULL);
    struct gpuq_response r;

    (void)state;
    fake_reply(NULL); /* never answers */
    gpuq_client_set_timeout(c, 1);
    assert_int_equal(gpuq_client_status(c, &r), GPUQ_ETIMEDOUT);
    assert_int_equal(r.status, 0);
    assert_has(gpuq_client_errmsg(c), "timed out");

    gpuq_client_set_timeout(c, 10);
    gpuq_client_set_abort(c, abort_now, NULL);
    assert_int_equal(gpuq_client_status(c, &r), GPUQ_EINTR);
    assert_string_equal(gpuq_client_errmsg(c), "interrupted");
    assert_true(aborts >= 2);
    gpuq_client_set_abort(c, NULL, NULL);
    gpuq_response_free(&r);
    gpuq_client_free(c);
}

static void
test_refused(void **state)
{
    struct gpuq_client *c;
    struct gpuq_response r;
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    char url[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    (void)state;
    /* A port that was just free: nothing listens there. */
    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    c = gpuq_client_new(url, NULL);
    assert_non_null(c);
    assert_int_equal(gpuq_client_status(c, &r), GPUQ_EIO);
    assert_int_equal(r.status, 0);
    assert_null(r.body);
    assert_true(gpuq_client_errmsg(c)[0] != '\0');
    gpuq_client_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_url_base),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_sse_splits),
        cmocka_unit_test(test_sse_stop),
        cmocka_unit_test(test_sse_bounds),
        cmocka_unit_test(test_sse_nomem),
        cmocka_unit_test(test_client_new),
        cmocka_unit_test(test_client_refuses),
        cmocka_unit_test_setup_teardown(test_fake_request, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_fake_typed, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_fake_events, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_fake_timeout_abort, fake_setup,
                                        fake_teardown),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
