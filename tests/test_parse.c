/*
 * test_parse.c - the backend reply parsers (src/exec/parse.c) against the
 * real recordings of whisper.cpp and llama.cpp in ../shared/protocols/
 * (copied byte for byte into tests/fixtures/ so that a clean clone needs
 * nothing else), a small Ollama NDJSON fixture written from its API
 * documentation, and hostile input: truncated and mistyped JSON, lines
 * over the bound, invalid UTF-8, deep nesting, random mutations.
 *
 * Run from the repository root.  $GPUQ_PROTOCOLS overrides where the
 * recordings are looked for (default ../shared/protocols); when they are
 * there, the fixtures are checked to be identical to their bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "exec/parse.h"

/* --- helpers --- */

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* A fixture from tests/fixtures/, NUL-terminated; fails the test if it is
 * missing. */
static char *
fixture(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    char *b = read_file(path, len);
    if (b == NULL)
        fail_msg("cannot read %s (run the tests from the repository root)",
                 path);
    return b;
}

/* The body of a recording (status line and headers cut off), or NULL
 * when the recordings are not reachable. */
static char *
recording_body(const char *name, size_t *len)
{
    const char *dir = getenv("GPUQ_PROTOCOLS");
    char path[512];
    size_t n;
    snprintf(path, sizeof path, "%s/%s.http",
             dir && dir[0] ? dir : "../shared/protocols", name);
    char *all = read_file(path, &n);
    if (all == NULL)
        return NULL;
    char *sep = strstr(all, "\r\n\r\n");
    assert_non_null(sep);
    size_t off = (size_t)(sep + 4 - all);
    memmove(all, all + off, n - off + 1);
    *len = n - off;
    return all;
}

/* Is s valid UTF-8 with no control characters (what err must be)? */
static int
clean_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t k;
        if (*p < 0x20 || *p == 0x7F)
            return 0;
        if (*p < 0x80)
            k = 1;
        else if (*p >= 0xC2 && *p <= 0xDF)
            k = 2;
        else if (*p >= 0xE0 && *p <= 0xEF)
            k = 3;
        else if (*p >= 0xF0 && *p <= 0xF4)
            k = 4;
        else
            return 0;
        for (size_t i = 1; i < k; i++)
            if ((p[i] & 0xC0) != 0x80)
                return 0;
        p += k;
    }
    return 1;
}

static void
assert_err_has(const char *err, const char *part)
{
    if (strstr(err, part) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, part);
    if (!clean_text(err))
        fail_msg("error \"%s\" is not clean UTF-8 text", err);
}

static void
assert_near(double a, double b)
{
    if (a - b > 1e-9 || b - a > 1e-9)
        fail_msg("%.17g != %.17g", a, b);
}

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* --- the fixtures are the recordings --- */

static void
test_fixtures_match_recordings(void **state)
{
    (void)state;
    static const char *const names[] = {
        "whisper-inference-verbose_json", "whisper-inference-json",
        "whisper-inference-nofile",       "whisper-inference-text",
        "llama-chat",                     "llama-chat-stream",
        "llama-chat-badjson",             "llama-chat-nomessages",
    };
    int seen = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char fname[128];
        size_t flen, rlen;
        snprintf(fname, sizeof fname, "%s.body", names[i]);
        char *f = fixture(fname, &flen);
        char *r = recording_body(names[i], &rlen);
        if (r != NULL) {
            seen++;
            if (rlen != flen || memcmp(r, f, flen) != 0)
                fail_msg("tests/fixtures/%s differs from the recording",
                         fname);
        }
        free(r);
        free(f);
    }
    if (seen == 0)
        print_message("recordings not found; fixtures used alone\n");
}

/* --- whisper.cpp --- */

static const char seg0[] =
    " This tiny random whisper model always says these same words";
static const char seg1[] =
    " in every window, so scheduler tests can check the format.";

static void
check_segment(json_t *segs, size_t i, double start, double end,
              const char *text)
{
    json_t *s = json_array_get(segs, i);
    assert_true(json_is_object(s));
    assert_int_equal(json_object_size(s), 3);
    assert_near(json_real_value(json_object_get(s, "start")), start);
    assert_near(json_real_value(json_object_get(s, "end")), end);
    assert_string_equal(json_string_value(json_object_get(s, "text")), text);
}

static void
test_whisper_verbose(void **state)
{
    (void)state;
    size_t len;
    char *body = fixture("whisper-inference-verbose_json.body", &len);
    json_t *segs = json_array();
    char *text = NULL, *lang = NULL, err[256] = "";
    double dur = -1;
    int rc = gq_parse_whisper(body, len, 60.0, 30.0, segs, &text, &lang,
                              &dur, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, ""); /* untouched on success */
    assert_int_equal(json_array_size(segs), 2);
    check_segment(segs, 0, 60.0, 60.9, seg0);
    check_segment(segs, 1, 60.9, 62.0, seg1);
    char want[256];
    snprintf(want, sizeof want, "%s%s", seg0, seg1);
    assert_string_equal(text, want);
    assert_string_equal(lang, "english");
    assert_near(dur, 30.0);

    /* The next window appends, shifted by its own offset. */
    rc = gq_parse_whisper(body, len, 90.0, 30.0, segs, &text, &lang, &dur,
                          err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(json_array_size(segs), 4);
    check_segment(segs, 2, 90.0, 90.9, seg0);
    check_segment(segs, 3, 90.9, 92.0, seg1);
    snprintf(want, sizeof want, "%s%s%s%s", seg0, seg1, seg0, seg1);
    assert_string_equal(text, want);

    /* Times are rounded to the millisecond, language/duration optional. */
    static const char odd[] =
        "{\"segments\":[{\"text\":\" x\",\"start\":0.47000000000000003,"
        "\"end\":1}],\"detected_language\":\"german\"}";
    json_t *s2 = json_array();
    char *t2 = NULL;
    rc = gq_parse_whisper(odd, strlen(odd), 0.1, 30, s2, &t2, NULL, NULL,
                          err, sizeof err);
    assert_int_equal(rc, 0);
    assert_true(json_real_value(json_object_get(json_array_get(s2, 0),
                                                "start")) == 0.57);
    assert_near(json_real_value(json_object_get(json_array_get(s2, 0),
                                                "end")), 1.1);
    rc = gq_parse_whisper(odd, strlen(odd), 0, 30, s2, &t2, &lang, &dur,
                          err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(lang, "german");
    assert_near(dur, 30.0); /* no duration in the reply: the hint */
    assert_string_equal(t2, " x x");

    free(t2);
    json_decref(s2);
    free(text);
    free(lang);
    json_decref(segs);
    free(body);
}

static void
test_whisper_json(void **state)
{
    (void)state;
    size_t len;
    char *body = fixture("whisper-inference-json.body", &len);
    json_t *segs = json_array();
    char *text = NULL, *lang = NULL, err[256];
    double dur = -1;
    int rc = gq_parse_whisper(body, len, 30.0, 27.5, segs, &text, &lang,
                              &dur, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(json_array_size(segs), 1);
    const char *want = " This tiny random whisper model always says these "
                       "same words in every window, so scheduler tests can "
                       "check the format.";
    check_segment(segs, 0, 30.0, 57.5, want); /* trailing "\n" dropped */
    assert_string_equal(text, want);
    assert_null(lang);
    assert_near(dur, 27.5);

    /* A silent window: no segment, text untouched. */
    json_t *s2 = json_array();
    char *t2 = NULL;
    rc = gq_parse_whisper("{\"text\":\"\\n\"}", 13, 0, 30, s2, &t2, NULL,
                          NULL, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(json_array_size(s2), 0);
    assert_null(t2);
    static const char empty[] = "{\"segments\":[],\"text\":\"\"}";
    rc = gq_parse_whisper(empty, strlen(empty), 0, 30, s2, &t2, NULL, NULL,
                          err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(json_array_size(s2), 0);
    assert_null(t2);

    json_decref(s2);
    free(text);
    json_decref(segs);
    free(body);
}

static void
test_whisper_malformed(void **state)
{
    (void)state;
    size_t vlen, tlen;
    char *verbose = fixture("whisper-inference-verbose_json.body", &vlen);
    char *textfmt = fixture("whisper-inference-text.body", &tlen);
    static const struct {
        const char *body;
        const char *part;
    } cases[] = {
        {"", "malformed JSON"},
        {"[]", "expected a JSON object"},
        {"{}", "neither segments nor text"},
        {"{\"text\":12}", "text: expected a string"},
        {"{\"segments\":{}}", "segments: expected an array"},
        {"{\"segments\":[1]}", "segments[0]: expected an object"},
        {"{\"segments\":[{\"text\":5,\"start\":0,\"end\":1}]}",
         "segments[0].text: expected a string"},
        {"{\"segments\":[{\"text\":\"a\",\"start\":\"0\",\"end\":1}]}",
         "segments[0].start: expected a number"},
        {"{\"segments\":[{\"text\":\"a\",\"start\":0,\"end\":1},"
         "{\"text\":\"b\",\"start\":1}]}",
         "segments[1].end: missing"},
        {"{\"segments\":[{\"start\":0,\"end\":1}]}",
         "segments[0].text: missing"},
        {"{\"segments\":[{\"text\":\"a\",\"start\":-1,\"end\":1}]}",
         "segments[0].start: expected a number >= 0"},
        {"{\"text\":\"a\",\"language\":7}", "language: expected a string"},
        {"{\"text\":\"a\",\"duration\":\"30\"}", "duration: expected a"},
        {"{\"text\":\"a\"} trailing", "malformed JSON"},
        {"{\"text\":\"a\\u0000b\"}", "malformed JSON"},
        {"{\"text\":1e999}", "malformed JSON"},
    };
    json_t *segs = json_array();
    char *text = strdup("kept"), *lang = strdup("en"), err[256];
    double dur = 5;
    assert_int_equal(gq_parse_whisper("{\"text\":\" a\"}", 13, 0, 1, segs,
                                      &text, &lang, &dur, err, sizeof err),
                     0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = gq_parse_whisper(cases[i].body, strlen(cases[i].body), 0,
                                  30, segs, &text, &lang, &dur, err,
                                  sizeof err);
        if (rc != GQ_EINVAL)
            fail_msg("case %zu (%s): rc %d", i, cases[i].body, rc);
        assert_err_has(err, cases[i].part);
    }
    /* Truncated at every length: never a crash, never a partial append. */
    for (size_t n = 0; n < vlen; n++) {
        int rc = gq_parse_whisper(verbose, n, 0, 30, segs, &text, &lang,
                                  &dur, err, sizeof err);
        assert_int_equal(rc, GQ_EINVAL);
        assert_true(clean_text(err));
    }
    /* The text format is not JSON. */
    assert_int_equal(gq_parse_whisper(textfmt, tlen, 0, 30, segs, &text,
                                      &lang, &dur, err, sizeof err),
                     GQ_EINVAL);
    assert_err_has(err, "whisper reply: malformed JSON");
    /* Nothing was changed by any of the failures. */
    assert_int_equal(json_array_size(segs), 1);
    assert_string_equal(text, "kept a");
    assert_string_equal(lang, "en");
    assert_near(dur, 1);

    /* A JSON error object is the backend's error. */
    static const char eb[] = "{\"error\":\"failed to read audio data\"}";
    assert_int_equal(gq_parse_whisper(eb, strlen(eb), 0, 30, segs, &text,
                                      &lang, &dur, err, sizeof err),
                     GQ_EIO);
    assert_err_has(err, "failed to read audio data");

    /* Deep nesting. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 32);
    size_t o = (size_t)sprintf(deep, "{\"segments\":");
    memset(deep + o, '[', depth);
    memset(deep + o + depth, ']', depth);
    o += 2 * depth;
    deep[o++] = '}';
    assert_int_equal(gq_parse_whisper(deep, o, 0, 30, segs, &text, &lang,
                                      &dur, err, sizeof err),
                     GQ_EINVAL);
    assert_err_has(err, "depth");
    free(deep);

    /* Bad arguments. */
    json_t *obj = json_object();
    assert_int_equal(gq_parse_whisper("{}", 2, 0, 30, obj, &text, NULL,
                                      NULL, err, sizeof err),
                     GQ_EINVAL);
    assert_int_equal(gq_parse_whisper("{}", 2, 0, 30, segs, NULL, NULL,
                                      NULL, NULL, 0),
                     GQ_EINVAL);
    json_decref(obj);

    free(text);
    free(lang);
    json_decref(segs);
    free(textfmt);
    free(verbose);
}

/* whisper.cpp can split a character across segments (issue #3760): the
 * stray bytes become U+FFFD instead of failing the window. */
static void
test_whisper_invalid_utf8_repaired(void **state)
{
    (void)state;
    static const char body[] =
        "{\"segments\":[{\"text\":\" caf\xC3\",\"start\":0,\"end\":1},"
        "{\"text\":\"\xA9 ok \xF0\x9F\x98\x80\",\"start\":1,\"end\":2}],"
        "\"language\":\"fr\xFF\"}";
    json_t *segs = json_array();
    char *text = NULL, *lang = NULL, err[256];
    int rc = gq_parse_whisper(body, sizeof body - 1, 0, 30, segs, &text,
                              &lang, NULL, err, sizeof err);
    assert_int_equal(rc, 0);
    check_segment(segs, 0, 0, 1, " caf\xEF\xBF\xBD");
    check_segment(segs, 1, 1, 2, "\xEF\xBF\xBD ok \xF0\x9F\x98\x80");
    assert_string_equal(text, " caf\xEF\xBF\xBD\xEF\xBF\xBD ok "
                              "\xF0\x9F\x98\x80");
    assert_string_equal(lang, "fr\xEF\xBF\xBD");
    /* Outside a string the replacement is still a syntax error. */
    static const char bad[] = "{\"text\":\"a\"\xFF}";
    assert_int_equal(gq_parse_whisper(bad, sizeof bad - 1, 0, 30, segs,
                                      &text, &lang, NULL, err, sizeof err),
                     GQ_EINVAL);
    assert_true(clean_text(err));
    free(text);
    free(lang);
    json_decref(segs);
}

/* --- llama.cpp, whole replies --- */

static void
test_llama_full(void **state)
{
    (void)state;
    size_t len;
    char *body = fixture("llama-chat.body", &len);
    struct gq_llm_delta d = {0};
    char err[256];
    assert_int_equal(gq_parse_openai_full(body, len, &d, err, sizeof err),
                     0);
    assert_string_equal(d.content, "port Jnee thefa budoout lineout lineout "
                                   "lineouttellcame");
    assert_string_equal(d.finish_reason, "length");
    assert_int_equal(d.prompt_tokens, 61);
    assert_int_equal(d.completion_tokens, 16);
    assert_near(d.prompt_ms, 2.644);
    assert_near(d.predicted_ms, 2.531);
    assert_int_equal(d.done, 1);

    /* Reused without clearing: the old strings are freed (ASan). */
    static const char nul[] =
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":null},\"finish_reason\":\"tool_calls\"}]}";
    assert_int_equal(gq_parse_openai_full(nul, strlen(nul), &d, err,
                                          sizeof err),
                     0);
    assert_null(d.content);
    assert_string_equal(d.finish_reason, "tool_calls");
    assert_int_equal(d.prompt_tokens, -1);
    assert_true(d.prompt_ms == -1);

    /* Errors. */
    static const struct {
        const char *body;
        int rc;
        const char *part;
    } cases[] = {
        {"{\"choices\":[{\"message\":{\"content\":5}}]}", GQ_EINVAL,
         "choices[0].message.content: expected a string"},
        {"{\"choices\":{}}", GQ_EINVAL, "choices: expected an array"},
        {"{\"choices\":[\"x\"]}", GQ_EINVAL,
         "choices[0]: expected an object"},
        {"{\"choices\":[{\"message\":\"x\"}]}", GQ_EINVAL,
         "choices[0].message: expected an object"},
        {"{\"choices\":[{\"finish_reason\":1}]}", GQ_EINVAL,
         "choices[0].finish_reason"},
        {"{\"usage\":{\"prompt_tokens\":-1}}", GQ_EINVAL,
         "usage.prompt_tokens: expected an integer >= 0"},
        {"{\"usage\":{\"completion_tokens\":1.5}}", GQ_EINVAL,
         "usage.completion_tokens"},
        {"{\"usage\":{\"prompt_tokens\":99999999999999999999}}", GQ_EINVAL,
         "malformed JSON"},
        {"{\"timings\":{\"prompt_ms\":\"1\"}}", GQ_EINVAL,
         "timings.prompt_ms"},
        {"{\"timings\":[]}", GQ_EINVAL, "timings: expected an object"},
        {"{\"choices\":[{\"message\":{\"content\":\"a", GQ_EINVAL,
         "chat reply: malformed JSON"},
        {"{\"error\":{\"code\":500,\"message\":\"boom\"}}", GQ_EIO,
         "backend error: boom"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = gq_parse_openai_full(cases[i].body, strlen(cases[i].body),
                                      &d, err, sizeof err);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): rc %d", i, cases[i].body, rc);
        assert_err_has(err, cases[i].part);
        assert_null(d.content);
        assert_null(d.finish_reason);
    }
    gq_llm_delta_clear(&d);
    free(body);
}

/* --- llama.cpp, streamed --- */

/* What a stream adds up to. */
struct acc {
    int ollama;
    char text[1024];
    size_t len;
    char finish[32];
    long ptok, ctok;
    double pms, dms;
    int events, others, done, after_done;
    int rc;                   /* first parser error */
    char err[256];
};

static void
acc_init(struct acc *a, int ollama)
{
    memset(a, 0, sizeof *a);
    a->ollama = ollama;
    a->ptok = a->ctok = -1;
    a->pms = a->dms = -1;
}

static int
acc_line(void *ud, const char *line, size_t len)
{
    struct acc *a = ud;
    struct gq_llm_delta d = {0};
    int is_event = 1, rc;
    if (a->ollama)
        rc = gq_parse_ollama_line(line, len, &d, a->err, sizeof a->err);
    else
        rc = gq_parse_openai_sse_line(line, len, &d, &is_event, a->err,
                                      sizeof a->err);
    if (rc < 0) {
        a->rc = rc;
        gq_llm_delta_clear(&d);
        return 1;
    }
    if (!is_event) {
        a->others++;
        return 0;
    }
    a->events++;
    if (a->done)
        a->after_done++;
    if (d.content) {
        size_t n = strlen(d.content);
        if (n > sizeof a->text - 1 - a->len)
            n = sizeof a->text - 1 - a->len; /* damaged input: keep a part */
        memcpy(a->text + a->len, d.content, n);
        a->len += n;
        a->text[a->len] = '\0';
    }
    if (d.finish_reason)
        snprintf(a->finish, sizeof a->finish, "%s", d.finish_reason);
    if (d.prompt_tokens >= 0)
        a->ptok = d.prompt_tokens;
    if (d.completion_tokens >= 0)
        a->ctok = d.completion_tokens;
    if (d.prompt_ms >= 0)
        a->pms = d.prompt_ms;
    if (d.predicted_ms >= 0)
        a->dms = d.predicted_ms;
    a->done |= d.done;
    gq_llm_delta_clear(&d);
    return 0;
}

static void
acc_equal(const struct acc *a, const struct acc *b)
{
    assert_string_equal(a->text, b->text);
    assert_int_equal(a->len, b->len);
    assert_string_equal(a->finish, b->finish);
    assert_int_equal(a->ptok, b->ptok);
    assert_int_equal(a->ctok, b->ctok);
    assert_true(a->pms == b->pms);
    assert_true(a->dms == b->dms);
    assert_int_equal(a->events, b->events);
    assert_int_equal(a->others, b->others);
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->rc, b->rc);
}

/* Feeds body in pieces: step 0 = random sizes from seed, else fixed. */
static void
feed(struct acc *a, const char *body, size_t len, size_t step,
     uint64_t seed)
{
    struct gq_lines l;
    size_t i = 0;
    gq_lines_init(&l, 4096);
    while (i < len) {
        size_t n = step ? step : 1 + rnd(&seed) % 97;
        if (n > len - i)
            n = len - i;
        int rc = gq_lines_feed(&l, body + i, n, acc_line, a);
        assert_int_equal(rc, 0);
        i += n;
    }
    assert_int_equal(gq_lines_finish(&l, acc_line, a), 0);
    assert_true(l.cap <= 4097);
    gq_lines_close(&l);
}

static void
test_llama_stream(void **state)
{
    (void)state;
    size_t len;
    char *body = fixture("llama-chat-stream.body", &len);
    struct acc whole, piece;
    acc_init(&whole, 0);
    feed(&whole, body, len, len, 0);
    assert_int_equal(whole.rc, 0);
    assert_string_equal(whole.text, "port read _ stanig dr");
    assert_string_equal(whole.finish, "length");
    assert_int_equal(whole.ptok, 18);
    assert_int_equal(whole.ctok, 6);
    assert_near(whole.pms, 0.614);
    assert_near(whole.dms, 1.111);
    assert_int_equal(whole.events, 8); /* 7 chunks and [DONE] */
    assert_int_equal(whole.others, 8); /* the blank lines */
    assert_int_equal(whole.done, 1);
    assert_int_equal(whole.after_done, 0);

    /* Any way of cutting the stream gives the same result. */
    acc_init(&piece, 0);
    feed(&piece, body, len, 1, 0);
    acc_equal(&piece, &whole);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        acc_init(&piece, 0);
        feed(&piece, body, len, 0, seed * 0x9E3779B97F4A7C15ULL);
        acc_equal(&piece, &whole);
    }

    /* The same stream with CRLF line ends. */
    char *crlf = malloc(2 * len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '\n')
            crlf[o++] = '\r';
        crlf[o++] = body[i];
    }
    acc_init(&piece, 0);
    feed(&piece, crlf, o, 1, 0);
    acc_equal(&piece, &whole);
    acc_init(&piece, 0);
    feed(&piece, crlf, o, 0, 77);
    acc_equal(&piece, &whole);
    free(crlf);
    free(body);
}

static void
sse_one(const char *line, int want_rc, int want_event,
        struct gq_llm_delta *d, char *err, size_t errlen)
{
    int is_event = -1;
    int rc = gq_parse_openai_sse_line(line, strlen(line), d, &is_event, err,
                                      errlen);
    if (rc != want_rc)
        fail_msg("\"%s\": rc %d, want %d (%s)", line, rc, want_rc, err);
    if (rc == 0 && is_event != want_event)
        fail_msg("\"%s\": is_event %d", line, is_event);
}

static void
test_sse_lines(void **state)
{
    (void)state;
    struct gq_llm_delta d = {0};
    char err[256];
    static const char *const quiet[] = {
        "",           ": keep-alive", "event: message", "id: 7",
        "retry: 100", "data",         "data:",          "data: ",
        "data:   \t", "datax: {}",    "comment",
    };
    for (size_t i = 0; i < sizeof quiet / sizeof quiet[0]; i++) {
        sse_one(quiet[i], 0, 0, &d, err, sizeof err);
        assert_null(d.content);
        assert_int_equal(d.done, 0);
    }
    sse_one("data:[DONE]", 0, 1, &d, err, sizeof err);
    assert_int_equal(d.done, 1);
    sse_one("data: [DONE] \r", 0, 1, &d, err, sizeof err);
    assert_int_equal(d.done, 1);
    sse_one("\xEF\xBB\xBF" "data: [DONE]", 0, 1, &d, err, sizeof err);
    assert_int_equal(d.done, 1);
    /* No space after the colon; a role-only chunk (vLLM, Ollama). */
    sse_one("data:{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}", 0, 1,
            &d, err, sizeof err);
    assert_string_equal(d.content, "hi");
    sse_one("data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":"
            "\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
            0, 1, &d, err, sizeof err);
    assert_null(d.content);
    assert_null(d.finish_reason);
    assert_int_equal(d.done, 0);
    /* vLLM's usage chunk has empty choices. */
    sse_one("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
            "\"completion_tokens\":2,\"total_tokens\":7}}",
            0, 1, &d, err, sizeof err);
    assert_int_equal(d.prompt_tokens, 5);
    assert_int_equal(d.completion_tokens, 2);
    assert_true(d.prompt_ms == -1);
    /* Escapes and non-ASCII text survive. */
    sse_one("data: {\"choices\":[{\"delta\":{\"content\":"
            "\"\\u00e9\\n\\\"\xE2\x82\xAC\"}}]}",
            0, 1, &d, err, sizeof err);
    assert_string_equal(d.content, "\xC3\xA9\n\"\xE2\x82\xAC");

    /* The backend's own errors. */
    sse_one("error: {\"code\":500,\"message\":\"slot unavailable\","
            "\"type\":\"server_error\"}",
            GQ_EIO, 1, &d, err, sizeof err);
    assert_err_has(err, "backend error: slot unavailable");
    sse_one("error: context\nshift failed", GQ_EIO, 1, &d, err, sizeof err);
    assert_err_has(err, "backend error: context shift failed");
    sse_one("data: {\"error\":{\"message\":\"out of memory\",\"code\":500}}",
            GQ_EIO, 1, &d, err, sizeof err);
    assert_err_has(err, "out of memory");
    sse_one("data: {\"error\":42}", GQ_EIO, 1, &d, err, sizeof err);
    assert_err_has(err, "backend error: unspecified");

    /* Malformed chunks. */
    static const struct {
        const char *line;
        const char *part;
    } bad[] = {
        {"data: {\"choices\":[{\"delta\":{\"content\":5}}]}",
         "choices[0].delta.content: expected a string"},
        {"data: {\"choices\":[{\"delta\":{\"content\":[\"a\"]}}]}",
         "choices[0].delta.content"},
        {"data: {\"choices\":[{\"delta\":{\"content\":\"a",
         "SSE data: malformed JSON"},
        {"data: {\"choices\":[{\"delta\":{\"content\":\"\xFF\"}}]}",
         "malformed JSON"},
        {"data: {\"choices\":[{\"delta\":{\"content\":\"\xC3\x28\"}}]}",
         "malformed JSON"},
        {"data: {\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}",
         "malformed JSON"},
        {"data: [1,2]", "expected a JSON object"},
        {"data: \"text\"", "malformed JSON"},
        {"data: {} {}", "malformed JSON"},
        {"data: [DONE]x", "malformed JSON"},
        {"data: {\"choices\":[{\"delta\":\"x\"}]}",
         "choices[0].delta: expected an object"},
        {"data: {\"usage\":{\"prompt_tokens\":\"5\"}}",
         "usage.prompt_tokens"},
        {"data: {\"timings\":{\"predicted_ms\":-3}}",
         "timings.predicted_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sse_one(bad[i].line, GQ_EINVAL, 0, &d, err, sizeof err);
        assert_err_has(err, bad[i].part);
        assert_null(d.content);
    }
    /* An embedded NUL byte. */
    static const char nul[] =
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\0b\"}}]}";
    int is_event;
    assert_int_equal(gq_parse_openai_sse_line(nul, sizeof nul - 1, &d,
                                              &is_event, err, sizeof err),
                     GQ_EINVAL);
    assert_true(clean_text(err));
    /* Deep nesting. */
    size_t depth = 50000;
    char *deep = malloc(2 * depth + 8);
    memcpy(deep, "data: ", 6);
    memset(deep + 6, '[', depth);
    memset(deep + 6 + depth, ']', depth);
    assert_int_equal(gq_parse_openai_sse_line(deep, 6 + 2 * depth, &d,
                                              &is_event, err, sizeof err),
                     GQ_EINVAL);
    assert_true(clean_text(err));
    free(deep);
    /* A tiny err buffer is still terminated. */
    char tiny[8];
    sse_one("data: {", GQ_EINVAL, 0, &d, tiny, sizeof tiny);
    assert_true(strlen(tiny) < sizeof tiny);
    sse_one("data: {", GQ_EINVAL, 0, &d, NULL, 0);
    gq_llm_delta_clear(&d);
}

/* --- the line splitter --- */

struct lines_seen {
    int n;
    char last[128];
    size_t lens[16];
    int stop_at;
};

static int
lines_cb(void *ud, const char *line, size_t len)
{
    struct lines_seen *s = ud;
    if (s->n < 16)
        s->lens[s->n] = len;
    s->n++;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, line);
    return s->n == s->stop_at ? 7 : 0;
}

static void
test_lines(void **state)
{
    (void)state;
    struct gq_lines l;
    struct lines_seen s = {0};

    /* Empty lines, CRLF, a lone '\r' kept mid-line, finish. */
    gq_lines_init(&l, 8);
    static const char mixed[] = "\n\r\nab\rc\r\n12345678\n";
    assert_int_equal(gq_lines_feed(&l, mixed, sizeof mixed - 1, lines_cb,
                                   &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.lens[0], 0);
    assert_int_equal(s.lens[1], 0);
    assert_int_equal(s.lens[2], 4);
    assert_int_equal(s.lens[3], 8);
    assert_int_equal(gq_lines_finish(&l, lines_cb, &s), 0);
    assert_int_equal(s.n, 4); /* nothing held */
    assert_int_equal(gq_lines_feed(&l, "12345678\r", 9, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "\n", 1, lines_cb, &s), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.last, "12345678");
    assert_int_equal(gq_lines_feed(&l, "tail", 4, lines_cb, &s), 0);
    assert_int_equal(gq_lines_finish(&l, lines_cb, &s), 0);
    assert_int_equal(s.n, 6);
    assert_string_equal(s.last, "tail");
    assert_int_equal(gq_lines_finish(&l, lines_cb, &s), 0);
    assert_int_equal(s.n, 6);
    gq_lines_close(&l);

    /* The callback stops the feed; its value comes back. */
    memset(&s, 0, sizeof s);
    s.stop_at = 2;
    gq_lines_init(&l, 100);
    assert_int_equal(gq_lines_feed(&l, "a\nb\nc\n", 6, lines_cb, &s), 7);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.last, "b");
    gq_lines_close(&l);

    /* Over the bound: at once, in pieces, and sticky afterwards. */
    memset(&s, 0, sizeof s);
    gq_lines_init(&l, 8);
    assert_int_equal(gq_lines_feed(&l, "123456789\n", 10, lines_cb, &s),
                     GQ_ETOOBIG);
    assert_int_equal(gq_lines_feed(&l, "ok\n", 3, lines_cb, &s),
                     GQ_ETOOBIG);
    assert_int_equal(gq_lines_finish(&l, lines_cb, &s), GQ_ETOOBIG);
    assert_int_equal(s.n, 0);
    gq_lines_close(&l);
    gq_lines_init(&l, 8);
    assert_int_equal(gq_lines_feed(&l, "12345", 5, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "6789", 4, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "\n", 1, lines_cb, &s), GQ_ETOOBIG);
    gq_lines_close(&l);
    gq_lines_init(&l, 8);
    assert_int_equal(gq_lines_feed(&l, "12345", 5, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "6789x", 5, lines_cb, &s),
                     GQ_ETOOBIG);
    gq_lines_close(&l);

    /* A huge line never grows the buffer past the bound. */
    size_t big = 4 << 20, max = 1 << 20;
    char *huge = malloc(big);
    memset(huge, 'x', big);
    gq_lines_init(&l, max);
    int rc = 0;
    for (size_t i = 0; i < big && rc == 0; i += 65536)
        rc = gq_lines_feed(&l, huge + i, 65536, lines_cb, &s);
    assert_int_equal(rc, GQ_ETOOBIG);
    assert_true(l.cap <= max + 1);
    gq_lines_close(&l);
    /* ... and the parser sees the error through the SSE path too. */
    struct acc a;
    acc_init(&a, 0);
    memcpy(huge, "data: ", 6);
    huge[big - 1] = '\n';
    gq_lines_init(&l, max);
    assert_int_equal(gq_lines_feed(&l, huge, big, acc_line, &a),
                     GQ_ETOOBIG);
    assert_int_equal(a.events, 0);
    gq_lines_close(&l);
    free(huge);

    /* Closing twice and an unused splitter are fine. */
    gq_lines_init(&l, 0);
    assert_int_equal(gq_lines_feed(&l, "\n", 1, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "x", 1, lines_cb, &s), 0);
    assert_int_equal(gq_lines_feed(&l, "\n", 1, lines_cb, &s), GQ_ETOOBIG);
    gq_lines_close(&l);
    gq_lines_close(&l);
}

/* --- Ollama --- */

static void
test_ollama_stream(void **state)
{
    (void)state;
    size_t len;
    char *body = fixture("ollama-chat-stream.ndjson", &len);
    struct acc whole, piece;
    acc_init(&whole, 1);
    feed(&whole, body, len, len, 0);
    assert_int_equal(whole.rc, 0);
    assert_string_equal(whole.text, "port read \xC3\xA9t\xC3\xA9 \"q\"\n");
    assert_string_equal(whole.finish, "length");
    assert_int_equal(whole.ptok, 26);
    assert_int_equal(whole.ctok, 3);
    assert_near(whole.pms, 342.546);
    assert_near(whole.dms, 4535.599);
    assert_int_equal(whole.events, 4);
    assert_int_equal(whole.done, 1);
    for (uint64_t seed = 1; seed <= 20; seed++) {
        acc_init(&piece, 1);
        feed(&piece, body, len, 0, seed * 0x2545F4914F6CDD1DULL);
        acc_equal(&piece, &whole);
    }
    /* Without the last newline, finish delivers the last line. */
    acc_init(&piece, 1);
    feed(&piece, body, len - 1, 1, 0);
    acc_equal(&piece, &whole);
    free(body);

    struct gq_llm_delta d = {0};
    char err[256];
    assert_int_equal(gq_parse_ollama_line(" \t\r", 3, &d, err, sizeof err),
                     0);
    assert_null(d.content);
    assert_int_equal(d.done, 0);
    static const struct {
        const char *line;
        int rc;
        const char *part;
    } bad[] = {
        {"{\"error\":\"model 'x' not found, try pulling it first\"}",
         GQ_EIO, "backend error: model 'x' not found"},
        {"{\"message\":{\"content\":5},\"done\":false}", GQ_EINVAL,
         "message.content: expected a string"},
        {"{\"message\":\"hi\"}", GQ_EINVAL, "message: expected an object"},
        {"{\"message\":{\"content\":\"a\"},\"done\":\"yes\"}", GQ_EINVAL,
         "done: expected a boolean"},
        {"{\"done\":true,\"eval_count\":-2}", GQ_EINVAL, "eval_count"},
        {"{\"done\":true,\"eval_duration\":1.5}", GQ_EINVAL,
         "eval_duration"},
        {"{\"done\":true,\"done_reason\":{}}", GQ_EINVAL, "done_reason"},
        {"{\"message\":{\"content\":\"a\"}", GQ_EINVAL,
         "NDJSON line: malformed JSON"},
        {"[]", GQ_EINVAL, "expected a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = gq_parse_ollama_line(bad[i].line, strlen(bad[i].line), &d,
                                      err, sizeof err);
        if (rc != bad[i].rc)
            fail_msg("case %zu (%s): rc %d", i, bad[i].line, rc);
        assert_err_has(err, bad[i].part);
        assert_null(d.content);
    }
    gq_llm_delta_clear(&d);
}

static void
test_ollama_full(void **state)
{
    (void)state;
    struct gq_llm_delta d = {0};
    char err[256];
    static const char chat[] =
        "{\"model\":\"tiny-random-llama\",\"created_at\":\"2026-11-27T10:00:"
        "00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"port "
        "read\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":"
        "5000000,\"load_duration\":1000,\"prompt_eval_count\":9,"
        "\"prompt_eval_duration\":2500000,\"eval_count\":2,"
        "\"eval_duration\":1250000}\n";
    assert_int_equal(gq_parse_ollama_full(chat, strlen(chat), &d, err,
                                          sizeof err),
                     0);
    assert_string_equal(d.content, "port read");
    assert_string_equal(d.finish_reason, "stop");
    assert_int_equal(d.prompt_tokens, 9);
    assert_int_equal(d.completion_tokens, 2);
    assert_near(d.prompt_ms, 2.5);
    assert_near(d.predicted_ms, 1.25);
    assert_int_equal(d.done, 1);
    /* /api/generate answers "response" instead of "message". */
    static const char gen[] = "{\"response\":\"x y\",\"done\":false}";
    assert_int_equal(gq_parse_ollama_full(gen, strlen(gen), &d, err,
                                          sizeof err),
                     0);
    assert_string_equal(d.content, "x y");
    assert_null(d.finish_reason);
    assert_int_equal(d.prompt_tokens, -1);
    assert_int_equal(d.done, 1);
    assert_int_equal(gq_parse_ollama_full("{\"error\":\"busy\"}", 16, &d,
                                          err, sizeof err),
                     GQ_EIO);
    assert_err_has(err, "busy");
    assert_int_equal(gq_parse_ollama_full("", 0, &d, err, sizeof err),
                     GQ_EINVAL);
    assert_err_has(err, "Ollama reply: malformed JSON");
    assert_int_equal(gq_parse_ollama_full(NULL, 0, &d, err, sizeof err),
                     GQ_EINVAL);
    gq_llm_delta_clear(&d);
}

/* --- error replies --- */

static void
check_msg(const char *name, const char *want)
{
    size_t len;
    char msg[512];
    char *body = fixture(name, &len);
    gq_parse_error_message(body, len, msg, sizeof msg);
    assert_string_equal(msg, want);
    free(body);
}

static void
errmsg(const char *body, size_t msglen, const char *want)
{
    char msg[256];
    assert_true(msglen <= sizeof msg);
    memset(msg, 'Z', sizeof msg);
    gq_parse_error_message(body, strlen(body), msg, msglen);
    assert_string_equal(msg, want);
    assert_true(strlen(msg) < msglen);
    assert_true(clean_text(msg));
}

static void
test_error_messages(void **state)
{
    (void)state;
    check_msg("llama-chat-badjson.body",
              "[json.exception.parse_error.101] parse error at line 1, "
              "column 41: syntax error while parsing value - unexpected end "
              "of input; expected '[', '{', or a literal");
    check_msg("llama-chat-nomessages.body",
              "[json.exception.out_of_range.403] key 'messages' not found");
    check_msg("whisper-inference-nofile.body", "Invalid request");

    errmsg("{\"error\":\"model 'x' not found\"}", 256,
           "model 'x' not found");
    errmsg("{\"object\":\"error\",\"message\":\"too long\",\"code\":400}",
           256, "too long");
    errmsg("{\"detail\":\"Not Found\"}", 256, "Not Found");
    errmsg("{\"error\":{\"code\":500}}", 256, "{\"error\":{\"code\":500}}");
    errmsg("{\"error\":\"\"}", 256, "{\"error\":\"\"}");
    errmsg("{\"error\":{\"message\":\"line1\\nline2\\t\\u0001x\"}}", 256,
           "line1 line2 x");
    errmsg("  <html>\r\n<body>502 Bad\tGateway</body>\n</html>\n ", 256,
           "<html> <body>502 Bad Gateway</body> </html>");
    errmsg("", 256, "");
    errmsg(" \r\n\t", 256, "");
    errmsg("bad \xFF\xC3 bytes \xED\xA0\x80", 256, "bad ?? bytes ???");
    errmsg("Invalid request", 1, "");
    errmsg("Invalid request", 4, "Inv");
    errmsg("Invalid request", 5, "I...");
    errmsg("Invalid request", 15, "Invalid req...");
    errmsg("Invalid request", 16, "Invalid request");
    /* Cut on a character boundary, never inside one. */
    errmsg("\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC", 10,
           "\xE2\x82\xAC\xE2\x82\xAC...");
    errmsg("ab \xE2\x82\xAC\xE2\x82\xAC", 8, "ab...");
    errmsg("{\"error\":\"\xFF\"}", 256, "{\"error\":\"?\"}");

    gq_parse_error_message("x", 1, NULL, 0);
    char m[16] = "junk";
    gq_parse_error_message(NULL, 0, m, sizeof m);
    assert_string_equal(m, "");
    /* A huge body is cut to the buffer. */
    size_t n = 1 << 20;
    char *big = malloc(n);
    memset(big, 'e', n);
    char out[64];
    gq_parse_error_message(big, n, out, sizeof out);
    assert_int_equal(strlen(out), 63);
    assert_string_equal(out + 60, "...");
    free(big);
}

/* --- random damage --- */

static void
parse_all(const char *b, size_t n)
{
    char err[96], msg[64];
    struct gq_llm_delta d = {0};
    json_t *segs = json_array();
    char *text = NULL, *lang = NULL;
    double dur;
    int ev, rc;
    struct gq_lines l;
    struct acc a;

    rc = gq_parse_whisper(b, n, 1.5, 30, segs, &text, &lang, &dur, err,
                          sizeof err);
    assert_true(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO);
    if (rc < 0)
        assert_true(clean_text(err));
    rc = gq_parse_openai_full(b, n, &d, err, sizeof err);
    assert_true(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO);
    if (rc < 0)
        assert_true(clean_text(err));
    rc = gq_parse_ollama_full(b, n, &d, err, sizeof err);
    assert_true(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO);
    rc = gq_parse_openai_sse_line(b, n, &d, &ev, err, sizeof err);
    assert_true(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO);
    rc = gq_parse_ollama_line(b, n, &d, err, sizeof err);
    assert_true(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO);
    gq_parse_error_message(b, n, msg, sizeof msg);
    assert_true(clean_text(msg));
    acc_init(&a, 0);
    gq_lines_init(&l, 512);
    rc = gq_lines_feed(&l, b, n, acc_line, &a);
    assert_true(rc == 0 || rc == 1 || rc == GQ_ETOOBIG);
    gq_lines_close(&l);

    gq_llm_delta_clear(&d);
    free(text);
    free(lang);
    json_decref(segs);
}

static void
test_mutations(void **state)
{
    (void)state;
    static const char *const names[] = {
        "whisper-inference-verbose_json.body", "whisper-inference-json.body",
        "llama-chat.body",                     "llama-chat-stream.body",
        "llama-chat-badjson.body",             "ollama-chat-stream.ndjson",
    };
    uint64_t seed = 0xC0FFEE;
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        size_t len;
        char *body = fixture(names[f], &len);
        char *m = malloc(len + 64);
        parse_all(body, len);
        for (int it = 0; it < 1500; it++) {
            size_t n = len;
            memcpy(m, body, len);
            int edits = 1 + (int)(rnd(&seed) % 4);
            for (int e = 0; e < edits; e++) {
                size_t at = rnd(&seed) % n;
                switch (rnd(&seed) % 5) {
                case 0: /* flip bits */
                    m[at] ^= (char)(1u << (rnd(&seed) % 8));
                    break;
                case 1: /* a random byte */
                    m[at] = (char)rnd(&seed);
                    break;
                case 2: /* cut */
                    n = at + 1;
                    break;
                case 3: /* delete one */
                    memmove(m + at, m + at + 1, n - at - 1);
                    n = n > 1 ? n - 1 : 1;
                    break;
                default: /* a structural byte */
                    m[at] = "{}[]\":,\\\n0-e"[rnd(&seed) % 13];
                    break;
                }
            }
            parse_all(m, n);
        }
        free(m);
        free(body);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_match_recordings),
        cmocka_unit_test(test_whisper_verbose),
        cmocka_unit_test(test_whisper_json),
        cmocka_unit_test(test_whisper_malformed),
        cmocka_unit_test(test_whisper_invalid_utf8_repaired),
        cmocka_unit_test(test_llama_full),
        cmocka_unit_test(test_llama_stream),
        cmocka_unit_test(test_sse_lines),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_ollama_stream),
        cmocka_unit_test(test_ollama_full),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
