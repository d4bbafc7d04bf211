/*
 * fuzz_parse.c - the parsers of what other servers send gpuqd: replies of
 * the inference backends (src/exec/parse.h: whisper.cpp JSON, OpenAI SSE
 * through the line splitter, Ollama NDJSON, whole chat replies, error
 * bodies) and the multipart/form-data uploads of the drop-in endpoints
 * (src/server/multipart.h).
 *
 * The first byte of an input picks the parser, so one corpus holds them
 * all and the seeds stay readable:
 *
 *   w  gq_parse_whisper, twice (the transcript of two windows)
 *   s  an OpenAI SSE stream: gq_lines, gq_parse_openai_sse_line
 *   n  an Ollama NDJSON stream: gq_lines, gq_parse_ollama_line
 *   o  gq_parse_openai_full      l  gq_parse_ollama_full
 *   e  gq_parse_error_message, with output buffers of many sizes
 *   m  gq_mp_parse: the Content-Type up to the first "\n", then the body
 *
 * any other byte picks one by its value.  For s and n the second byte
 * sets how the stream is cut into reads (1 to 64 bytes at a time), as
 * the network would.  Besides the sanitizers, the harness checks what
 * parse.h promises: error messages NUL-terminated, printable, valid
 * UTF-8; returned text valid UTF-8 without NUL; counters -1 or >= 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/err.h"
#include "exec/parse.h"
#include "server/multipart.h"
#include "fuzz.h"

/* 1 if the n bytes at s are well-formed UTF-8 (no overlongs, no
 * surrogates, nothing past U+10FFFF) without a NUL. */
static int
utf8_ok(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (n - i < need || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += need;
    }
    return 1;
}

/* A message for people: NUL-terminated within len, valid UTF-8, no
 * control characters. */
static void
check_msg(const char *m, size_t len)
{
    size_t n = strnlen(m, len);
    CHECK(n < len);
    CHECK(utf8_ok(m, n));
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)m[i] >= 0x20 && m[i] != 0x7F);
}

static void
check_str(const char *s)
{
    if (s != NULL)
        CHECK(utf8_ok(s, strlen(s)));
}

/* A delta as a parser left it, after it returned rc. */
static void
check_delta(const struct gq_llm_delta *d, int rc)
{
    check_str(d->content);
    check_str(d->finish_reason);
    CHECK(d->content == NULL || d->content[0] != '\0');
    CHECK(d->prompt_tokens >= -1 && d->completion_tokens >= -1);
    CHECK(d->prompt_ms >= -1 && d->predicted_ms >= -1);
    if (rc < 0)
        CHECK(d->content == NULL && d->finish_reason == NULL);
}

/* The error buffers every call gets: a canary after them shows a write
 * past errlen. */
struct errbox {
    char err[200];
    char canary[8];
};

static void
box_init(struct errbox *b)
{
    memset(b, 0x5A, sizeof *b);
    b->err[0] = '\0';
}

static void
box_check(const struct errbox *b, int rc)
{
    for (size_t i = 0; i < sizeof b->canary; i++)
        CHECK(b->canary[i] == 0x5A);
    if (rc < 0)
        check_msg(b->err, sizeof b->err);
}

static void
fuzz_whisper(const char *data, size_t size)
{
    json_t *segs = json_array();
    char *text = NULL, *lang = NULL;
    double dur = -2;
    struct errbox b;
    int rc;

    /* Two windows, as the executor parses them: the second appends. */
    for (int w = 0; w < 2; w++) {
        size_t before = json_array_size(segs);
        size_t tlen = text ? strlen(text) : 0;
        box_init(&b);
        rc = gq_parse_whisper(data, size, 30.0 * w, 30.0, segs, &text,
                              w ? &lang : NULL, w ? &dur : NULL, b.err,
                              sizeof b.err);
        box_check(&b, rc);
        CHECK(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO ||
              rc == GQ_ENOMEM);
        if (rc < 0) {
            /* "On failure nothing was appended or changed." */
            CHECK(json_array_size(segs) == before);
            CHECK((text ? strlen(text) : 0) == tlen);
        }
        check_str(text);
        check_str(lang);
    }
    for (size_t i = 0; i < json_array_size(segs); i++) {
        json_t *s = json_array_get(segs, i);
        CHECK(json_is_object(s));
        CHECK(json_is_number(json_object_get(s, "start")));
        CHECK(json_is_number(json_object_get(s, "end")));
        CHECK(json_is_string(json_object_get(s, "text")));
    }
    free(text);
    free(lang);
    json_decref(segs);
}

/* One stream, cut into reads and split into lines. */
struct stream {
    int ollama;
    int events, done;
    size_t text;              /* bytes of content, as chat.c counts */
};

static int
on_line(void *ud, const char *line, size_t len)
{
    struct stream *st = ud;
    struct gq_llm_delta d = {0};
    struct errbox b;
    int rc, ev = 1;

    gq_llm_delta_clear(&d);
    box_init(&b);
    if (st->ollama)
        rc = gq_parse_ollama_line(line, len, &d, b.err, sizeof b.err);
    else
        rc = gq_parse_openai_sse_line(line, len, &d, &ev, b.err,
                                      sizeof b.err);
    box_check(&b, rc);
    CHECK(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO || rc == GQ_ENOMEM);
    check_delta(&d, rc);
    if (rc == 0 && ev) {
        st->events++;
        if (d.content)
            st->text += strlen(d.content);
        st->done |= d.done;
    }
    gq_llm_delta_clear(&d);
    /* chat.c stops at the first error; going on past a malformed line
     * lets one input reach more lines. */
    return rc == GQ_EIO ? 1 : 0;
}

static void
fuzz_stream(const char *data, size_t size, int ollama)
{
    struct gq_lines l;
    struct stream st = {ollama, 0, 0, 0};
    size_t step = 1, off = 0;
    int rc = 0;

    if (size > 0) {
        step = 1 + (unsigned char)data[0] % 64;
        data++;
        size--;
    }
    /* A small line bound, so that the too-long path is reached. */
    gq_lines_init(&l, 2048);
    while (off < size && rc == 0) {
        size_t n = size - off < step ? size - off : step;
        rc = gq_lines_feed(&l, data + off, n, on_line, &st);
        CHECK(rc == 0 || rc == 1 || rc == GQ_ETOOBIG || rc == GQ_ENOMEM);
        off += n;
    }
    if (rc == 0)
        rc = gq_lines_finish(&l, on_line, &st);
    CHECK(rc == 0 || rc == 1 || rc == GQ_ETOOBIG || rc == GQ_ENOMEM);
    if (rc == GQ_ETOOBIG)
        CHECK(gq_lines_feed(&l, "x\n", 2, on_line, &st) == GQ_ETOOBIG);
    gq_lines_close(&l);
}

static void
fuzz_full(const char *data, size_t size, int ollama)
{
    struct gq_llm_delta d = {0};
    struct errbox b;
    int rc;

    gq_llm_delta_clear(&d);
    box_init(&b);
    if (ollama)
        rc = gq_parse_ollama_full(data, size, &d, b.err, sizeof b.err);
    else
        rc = gq_parse_openai_full(data, size, &d, b.err, sizeof b.err);
    box_check(&b, rc);
    CHECK(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO || rc == GQ_ENOMEM);
    check_delta(&d, rc);
    if (rc == 0)
        CHECK(d.done == 1);
    gq_llm_delta_clear(&d);
}

static void
fuzz_error(const char *data, size_t size)
{
    static const size_t lens[] = {1, 2, 3, 4, 5, 6, 7, 8, 13, 64, 300};
    char buf[300 + 8];

    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t len = lens[i], n;
        memset(buf, 0x5A, sizeof buf);
        gq_parse_error_message(data, size, buf, len);
        for (size_t k = len; k < sizeof buf; k++)
            CHECK(buf[k] == 0x5A);
        check_msg(buf, len);
        n = strlen(buf);
        /* Trimmed: no white space at either end. */
        CHECK(n == 0 || (buf[0] != ' ' && buf[n - 1] != ' '));
    }
}

static void
fuzz_multipart(const char *data, size_t size)
{
    struct gq_mp_part parts[GQ_MP_MAX_PARTS];
    const char *nl = memchr(data, '\n', size);
    char ct[512], msg[128];
    size_t ctlen = nl ? (size_t)(nl - data) : size;
    const char *body;
    size_t blen;
    int n;

    if (ctlen >= sizeof ct)
        ctlen = sizeof ct - 1;
    memcpy(ct, data, ctlen);
    ct[ctlen] = '\0';
    body = nl ? nl + 1 : data + size;
    blen = (size_t)(data + size - body);
    /* The body is not NUL-terminated: a copy of exactly its size lets
     * ASan see a read past its end. */
    char *copy = malloc(blen ? blen : 1);
    CHECK(copy != NULL);
    memcpy(copy, body, blen);
    /* An empty body comes as NULL from evbuffer_pullup. */
    n = gq_mp_parse(ct, blen ? copy : NULL, blen, parts, msg, sizeof msg);
    CHECK(n == GQ_EINVAL || (n >= 0 && n <= GQ_MP_MAX_PARTS));
    if (n < 0)
        check_msg(msg, sizeof msg);
    for (int i = 0; i < n; i++) {
        CHECK(strnlen(parts[i].name, sizeof parts[i].name) <
              sizeof parts[i].name);
        CHECK(parts[i].name[0] != '\0');
        CHECK(strnlen(parts[i].filename, sizeof parts[i].filename) <
              sizeof parts[i].filename);
        CHECK(parts[i].data >= copy && parts[i].len <= blen &&
              (size_t)(parts[i].data - copy) <= blen - parts[i].len);
        CHECK(gq_mp_get(parts, n, parts[i].name) != NULL);
    }
    free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char modes[] = "wsnolem";
    const char *body = (const char *)data + 1;
    char mode;

    if (size == 0)
        return 0;
    mode = strchr(modes, data[0]) && data[0] ? (char)data[0]
                                             : modes[data[0] % 7];
    size--;
    switch (mode) {
    case 'w': fuzz_whisper(body, size); break;
    case 's': fuzz_stream(body, size, 0); break;
    case 'n': fuzz_stream(body, size, 1); break;
    case 'o': fuzz_full(body, size, 0); break;
    case 'l': fuzz_full(body, size, 1); break;
    case 'e': fuzz_error(body, size); break;
    case 'm': fuzz_multipart(body, size); break;
    }
    return 0;
}
