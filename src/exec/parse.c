/*
 * parse.c - parsers for inference servers' replies (see parse.h): whisper
 * transcripts, OpenAI SSE and Ollama NDJSON streams, whole chat replies
 * and error bodies.  No I/O: bytes in, fields out, every input treated
 * as hostile.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "parse.h"

#define ERRBUF 512            /* a message before it is cleaned into err */

/* --- text hygiene --- */

/* Length of the well-formed UTF-8 sequence at s (Unicode table 3-7:
 * no overlongs, no surrogates, nothing past U+10FFFF), or 0. */
static size_t
utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

static int
is_space_or_ctl(unsigned char c)
{
    return c <= 0x20 || c == 0x7F;
}

/*
 * Copies n bytes of src into dst (dstlen > 0) as one printable line:
 * leading and trailing white space dropped, runs of white space and
 * control characters folded into one space, invalid UTF-8 bytes as '?',
 * and, if it does not fit, cut at a character boundary and ended with
 * "..." (when dstlen is 5 or more).
 */
static void
clean_copy(char *dst, size_t dstlen, const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, room = dstlen - 1, i = 0;
    int space = 0;
    while (i < n) {
        if (is_space_or_ctl(s[i])) {
            space = o > 0;
            i++;
            continue;
        }
        size_t k = utf8_char(s + i, n - i);
        size_t need = (k ? k : 1) + (space ? 1 : 0);
        if (need > room - o) {
            /* Too long: make room for "..." on a character boundary,
             * when that leaves at least one character. */
            if (room >= 4) {
                while (o > room - 3) {
                    while (o > 0 && ((unsigned char)dst[o - 1] & 0xC0) == 0x80)
                        o--;
                    if (o > 0)
                        o--;
                }
                while (o > 0 && dst[o - 1] == ' ')
                    o--;
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (space)
            dst[o++] = ' ';
        space = 0;
        if (k == 0) {
            dst[o++] = '?';
            i++;
        } else {
            memcpy(dst + o, s + i, k);
            o += k;
            i += k;
        }
    }
    dst[o] = '\0';
}

/* Formats a message into err, cleaned by clean_copy. */
__attribute__((format(printf, 3, 4))) static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    char tmp[ERRBUF];
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    clean_copy(err, errlen, tmp, (size_t)n < sizeof tmp ? (size_t)n
                                                        : sizeof tmp - 1);
}

/*
 * Copy of body with each byte that is not part of well-formed UTF-8
 * replaced by U+FFFD, or NULL with *rc = 0 when body is valid already.
 * On allocation failure NULL with *rc = GQ_ENOMEM.
 */
static char *
utf8_repair(const char *body, size_t len, size_t *outlen, int *rc)
{
    const unsigned char *s = (const unsigned char *)body;
    size_t bad = 0, i = 0, o = 0;
    *rc = 0;
    while (i < len) {
        size_t k = utf8_char(s + i, len - i);
        bad += k == 0;
        i += k ? k : 1;
    }
    if (bad == 0)
        return NULL;
    if (bad > (SIZE_MAX - len - 1) / 2) {
        *rc = GQ_ENOMEM;
        return NULL;
    }
    char *out = malloc(len + 2 * bad + 1);
    if (out == NULL) {
        *rc = GQ_ENOMEM;
        return NULL;
    }
    for (i = 0; i < len;) {
        size_t k = utf8_char(s + i, len - i);
        if (k == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* --- JSON access --- */

/* Parses buf as one JSON object into *out (a new reference). */
static int
load_object(const char *buf, size_t len, const char *what, json_t **out,
            char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loadb(buf ? buf : "", buf ? len : 0, 0, &je);
    *out = NULL;
    if (j == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            seterr(err, errlen, "%s: out of memory", what);
            return GQ_ENOMEM;
        }
        seterr(err, errlen, "%s: malformed JSON at byte %d: %s", what,
               je.position, je.text);
        return GQ_EINVAL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        seterr(err, errlen, "%s: expected a JSON object", what);
        return GQ_EINVAL;
    }
    *out = j;
    return 0;
}

static int
bad_field(char *err, size_t errlen, const char *where, const char *key,
          const char *what)
{
    seterr(err, errlen, "%s%s%s: %s", where, *where ? "." : "", key, what);
    return GQ_EINVAL;
}

/* The field's value, or NULL when it is absent or null. */
static json_t *
field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* *s = the string field (NULL if absent or null); n its length. */
static int
get_str(json_t *obj, const char *key, const char *where, const char **s,
        size_t *n, char *err, size_t errlen)
{
    json_t *v = field(obj, key);
    *s = NULL;
    if (n)
        *n = 0;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return bad_field(err, errlen, where, key, "expected a string");
    *s = json_string_value(v);
    if (n)
        *n = json_string_length(v);
    return 0;
}

/* *o = the object field, or NULL if absent or null. */
static int
get_obj(json_t *obj, const char *key, const char *where, json_t **o,
        char *err, size_t errlen)
{
    json_t *v = field(obj, key);
    *o = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return bad_field(err, errlen, where, key, "expected an object");
    *o = v;
    return 0;
}

/* *d = a number >= 0 (integer or real), or -1 if absent or null. */
static int
get_num(json_t *obj, const char *key, const char *where, double *d,
        char *err, size_t errlen)
{
    json_t *v = field(obj, key);
    *d = -1;
    if (v == NULL)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0)
        return bad_field(err, errlen, where, key,
                         "expected a number >= 0");
    *d = json_number_value(v);
    return 0;
}

/* *n = an integer >= 0, or -1 if absent or null. */
static int
get_count(json_t *obj, const char *key, const char *where, long *n,
          char *err, size_t errlen)
{
    json_t *v = field(obj, key);
    *n = -1;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > LONG_MAX)
        return bad_field(err, errlen, where, key,
                         "expected an integer >= 0");
    *n = (long)json_integer_value(v);
    return 0;
}

/* *out = a malloc'd copy of s (n bytes), or NULL when s is NULL or "". */
static int
dup_text(const char *s, size_t n, char **out)
{
    *out = NULL;
    if (s == NULL || n == 0)
        return 0;
    char *p = malloc(n + 1);
    if (p == NULL)
        return GQ_ENOMEM;
    memcpy(p, s, n);
    p[n] = '\0';
    *out = p;
    return 0;
}

/*
 * The message carried by an error value: a string, or an object with a
 * string "message" (or "error"), written to buf by clean_copy.  Returns
 * 0 if there was none.
 */
static int
error_text(json_t *e, char *buf, size_t buflen)
{
    json_t *m = e;
    if (json_is_object(e)) {
        m = json_object_get(e, "message");
        if (!json_is_string(m))
            m = json_object_get(e, "error");
    }
    if (!json_is_string(m) || json_string_length(m) == 0)
        return 0;
    clean_copy(buf, buflen, json_string_value(m), json_string_length(m));
    return 1;
}

/* GQ_EIO with err = "backend error: MESSAGE". */
static int
backend_error(json_t *e, char *err, size_t errlen)
{
    char m[ERRBUF - 32];
    if (!error_text(e, m, sizeof m))
        snprintf(m, sizeof m, "unspecified");
    seterr(err, errlen, "backend error: %s", m);
    return GQ_EIO;
}

/* --- whisper.cpp --- */

/* x rounded to the millisecond; no libm needed. */
static double
round_ms(double x)
{
    double y = x * 1000.0;
    if (y > -9e15 && y < 9e15) {
        long long k = (long long)(y < 0 ? y - 0.5 : y + 0.5);
        return (double)k / 1000.0;
    }
    return x;
}

/* One output segment {"start","end","text"} appended to arr. */
static int
add_segment(json_t *arr, double start, double end, const char *s, size_t n)
{
    json_t *seg = json_pack("{s:f, s:f, s:s%}", "start", round_ms(start),
                            "end", round_ms(end), "text", s, n);
    if (seg == NULL || json_array_append_new(arr, seg) != 0)
        return GQ_ENOMEM;
    return 0;
}

/* Appends the n bytes of s to the growing text buffer *buf of *len. */
static int
grow_text(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (n > SIZE_MAX - *len - 1)
        return GQ_ENOMEM;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 128;
        while (c < *len + n + 1)
            c = c > SIZE_MAX / 2 ? *len + n + 1 : c * 2;
        char *p = realloc(*buf, c);
        if (p == NULL)
            return GQ_ENOMEM;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* Fills segs and add (the text to append) from a whisper reply. */
static int
whisper_fill(json_t *root, double offset, double duration_hint,
             json_t *segs, char **add, size_t *addlen, char *err,
             size_t errlen)
{
    size_t cap = 0, n, i;
    const char *s;
    json_t *list = field(root, "segments"), *seg;
    int rc;
    if (list != NULL) {
        if (!json_is_array(list))
            return bad_field(err, errlen, "", "segments",
                             "expected an array");
        json_array_foreach(list, i, seg)
        {
            char where[40];
            double start, end;
            snprintf(where, sizeof where, "segments[%zu]", i);
            if (!json_is_object(seg)) {
                seterr(err, errlen, "%s: expected an object", where);
                return GQ_EINVAL;
            }
            rc = get_str(seg, "text", where, &s, &n, err, errlen);
            if (rc == 0)
                rc = get_num(seg, "start", where, &start, err, errlen);
            if (rc == 0)
                rc = get_num(seg, "end", where, &end, err, errlen);
            if (rc < 0)
                return rc;
            if (s == NULL)
                return bad_field(err, errlen, where, "text", "missing");
            if (start < 0)
                return bad_field(err, errlen, where, "start", "missing");
            if (end < 0)
                return bad_field(err, errlen, where, "end", "missing");
            rc = add_segment(segs, offset + start, offset + end, s, n);
            if (rc == 0)
                rc = grow_text(add, addlen, &cap, s, n);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    /* The json format: one text for the whole window. */
    rc = get_str(root, "text", "", &s, &n, err, errlen);
    if (rc < 0)
        return rc;
    if (s == NULL) {
        seterr(err, errlen, "whisper reply: neither segments nor text");
        return GQ_EINVAL;
    }
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n == 0)
        return 0;
    rc = add_segment(segs, offset, offset + duration_hint, s, n);
    if (rc == 0)
        rc = grow_text(add, addlen, &cap, s, n);
    return rc;
}

int
gq_parse_whisper(const char *body, size_t len, double offset,
                 double duration_hint, json_t *segments, char **text,
                 char **language, double *duration, char *err,
                 size_t errlen)
{
    json_t *root = NULL, *segs = NULL;
    char *add = NULL, *lang = NULL;
    size_t addlen = 0, fixlen = 0;
    double dur = duration_hint;
    const char *s;
    size_t n;
    int rc;
    if (!json_is_array(segments) || text == NULL) {
        seterr(err, errlen, "gq_parse_whisper: bad arguments");
        return GQ_EINVAL;
    }
    char *fixed = utf8_repair(body, len, &fixlen, &rc);
    if (rc < 0) {
        seterr(err, errlen, "whisper reply: out of memory");
        return rc;
    }
    rc = load_object(fixed ? fixed : body, fixed ? fixlen : len,
                     "whisper reply", &root, err, errlen);
    free(fixed);
    if (rc < 0)
        return rc;
    if (field(root, "error") && !field(root, "text") &&
        !field(root, "segments")) {
        rc = backend_error(field(root, "error"), err, errlen);
        goto out;
    }
    segs = json_array();
    if (segs == NULL) {
        rc = GQ_ENOMEM;
        goto out;
    }
    rc = whisper_fill(root, offset, duration_hint, segs, &add, &addlen, err,
                      errlen);
    if (rc == 0)
        rc = get_str(root, "language", "", &s, &n, err, errlen);
    if (rc == 0 && s == NULL)
        rc = get_str(root, "detected_language", "", &s, &n, err, errlen);
    if (rc == 0)
        rc = dup_text(s, n, &lang);
    if (rc == 0 && field(root, "duration"))
        rc = get_num(root, "duration", "", &dur, err, errlen);
    if (rc < 0)
        goto out;
    /* Commit: the allocations first, so that a failure changes nothing. */
    if (addlen > 0) {
        size_t old = *text ? strlen(*text) : 0;
        int was_null = *text == NULL;
        char *t = NULL;
        if (addlen < SIZE_MAX - old)
            t = realloc(*text, old + addlen + 1);
        if (t == NULL) {
            rc = GQ_ENOMEM;
            goto out;
        }
        if (*text == NULL)
            t[0] = '\0';
        *text = t;
        if (json_array_extend(segments, segs) != 0) {
            if (was_null) { /* leave it as it was */
                free(t);
                *text = NULL;
            }
            rc = GQ_ENOMEM;
            goto out;
        }
        memcpy(t + old, add, addlen + 1);
    } else if (json_array_extend(segments, segs) != 0) {
        rc = GQ_ENOMEM;
        goto out;
    }
    if (lang && language) {
        free(*language);
        *language = lang;
        lang = NULL;
    }
    if (duration)
        *duration = dur;
out:
    if (rc == GQ_ENOMEM)
        seterr(err, errlen, "whisper reply: out of memory");
    free(lang);
    free(add);
    json_decref(segs);
    json_decref(root);
    return rc;
}

/* --- line splitter --- */

void
gq_lines_init(struct gq_lines *l, size_t max_line)
{
    l->buf = NULL;
    l->len = l->cap = 0;
    l->max = max_line < SIZE_MAX / 2 ? max_line : SIZE_MAX / 2;
    l->err = 0;
}

void
gq_lines_close(struct gq_lines *l)
{
    free(l->buf);
    l->buf = NULL;
    l->len = l->cap = 0;
}

/* Appends n bytes to the partial line; the caller checked the bound. */
static int
lines_hold(struct gq_lines *l, const char *s, size_t n)
{
    if (l->len + n > l->cap) {
        size_t c = l->cap ? l->cap : 256;
        while (c < l->len + n)
            c *= 2;
        if (c > l->max + 1)
            c = l->max + 1;
        char *p = realloc(l->buf, c);
        if (p == NULL)
            return GQ_ENOMEM;
        l->buf = p;
        l->cap = c;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

/* Passes one line (with any '\r' still on it) to fn. */
static int
lines_emit(struct gq_lines *l, const char *line, size_t n, gq_line_fn fn,
           void *ud)
{
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n > l->max) {
        l->err = GQ_ETOOBIG;
        return l->err;
    }
    return fn(ud, line, n);
}

int
gq_lines_feed(struct gq_lines *l, const char *buf, size_t len,
              gq_line_fn fn, void *ud)
{
    size_t i = 0;
    int rc;
    if (l->err)
        return l->err;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t seg = nl ? (size_t)(nl - (buf + i)) : len - i;
        /* One '\r' past max is allowed: it may end the line. */
        if (seg > l->max + 1 - l->len) {
            l->len = 0;
            l->err = GQ_ETOOBIG;
            return l->err;
        }
        if (nl == NULL)
            return lines_hold(l, buf + i, seg);
        if (l->len == 0) {
            rc = lines_emit(l, buf + i, seg, fn, ud);
        } else {
            rc = lines_hold(l, buf + i, seg);
            if (rc < 0)
                return rc;
            size_t n = l->len;
            l->len = 0; /* the bytes stay valid during fn */
            rc = lines_emit(l, l->buf, n, fn, ud);
        }
        i += seg + 1;
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
gq_lines_finish(struct gq_lines *l, gq_line_fn fn, void *ud)
{
    if (l->err)
        return l->err;
    if (l->len == 0)
        return 0;
    size_t n = l->len;
    l->len = 0;
    return lines_emit(l, l->buf, n, fn, ud);
}

/* --- LLM replies --- */

void
gq_llm_delta_clear(struct gq_llm_delta *d)
{
    free(d->content);
    free(d->finish_reason);
    d->content = NULL;
    d->finish_reason = NULL;
    d->done = 0;
    d->prompt_tokens = d->completion_tokens = -1;
    d->prompt_ms = d->predicted_ms = -1;
}

/* Fills out from an OpenAI chat.completion (stream = 0) or chunk. */
static int
openai_fill(json_t *root, int stream, struct gq_llm_delta *out, char *err,
            size_t errlen)
{
    json_t *choices = field(root, "choices"), *m, *o;
    const char *s;
    size_t n;
    int rc;
    if (field(root, "error"))
        return backend_error(field(root, "error"), err, errlen);
    if (choices != NULL && !json_is_array(choices))
        return bad_field(err, errlen, "", "choices", "expected an array");
    if (json_array_size(choices) > 0) {
        json_t *c0 = json_array_get(choices, 0);
        const char *key = stream ? "delta" : "message";
        if (!json_is_object(c0)) {
            seterr(err, errlen, "choices[0]: expected an object");
            return GQ_EINVAL;
        }
        rc = get_obj(c0, key, "choices[0]", &m, err, errlen);
        if (rc == 0 && m != NULL) {
            rc = get_str(m, "content", stream ? "choices[0].delta"
                                              : "choices[0].message",
                         &s, &n, err, errlen);
            if (rc == 0)
                rc = dup_text(s, n, &out->content);
        }
        if (rc == 0)
            rc = get_str(c0, "finish_reason", "choices[0]", &s, &n, err,
                         errlen);
        if (rc == 0)
            rc = dup_text(s, n, &out->finish_reason);
        if (rc < 0)
            return rc;
    }
    rc = get_obj(root, "usage", "", &o, err, errlen);
    if (rc == 0 && o) {
        rc = get_count(o, "prompt_tokens", "usage", &out->prompt_tokens,
                       err, errlen);
        if (rc == 0)
            rc = get_count(o, "completion_tokens", "usage",
                           &out->completion_tokens, err, errlen);
    }
    if (rc == 0)
        rc = get_obj(root, "timings", "", &o, err, errlen);
    if (rc == 0 && o) {
        rc = get_num(o, "prompt_ms", "timings", &out->prompt_ms, err,
                     errlen);
        if (rc == 0)
            rc = get_num(o, "predicted_ms", "timings", &out->predicted_ms,
                         err, errlen);
    }
    return rc;
}

/* Fills out from an Ollama /api/chat or /api/generate object. */
static int
ollama_fill(json_t *root, struct gq_llm_delta *out, char *err,
            size_t errlen)
{
    json_t *m, *v;
    const char *s;
    size_t n;
    long ns;
    int rc;
    if (field(root, "error"))
        return backend_error(field(root, "error"), err, errlen);
    rc = get_obj(root, "message", "", &m, err, errlen);
    if (rc == 0 && m != NULL)
        rc = get_str(m, "content", "message", &s, &n, err, errlen);
    else if (rc == 0)
        rc = get_str(root, "response", "", &s, &n, err, errlen);
    if (rc == 0)
        rc = dup_text(s, n, &out->content);
    if (rc < 0)
        return rc;
    v = field(root, "done");
    if (v != NULL && !json_is_boolean(v))
        return bad_field(err, errlen, "", "done", "expected a boolean");
    out->done = json_is_true(v);
    rc = get_str(root, "done_reason", "", &s, &n, err, errlen);
    if (rc == 0)
        rc = dup_text(s, n, &out->finish_reason);
    if (rc == 0)
        rc = get_count(root, "prompt_eval_count", "", &out->prompt_tokens,
                       err, errlen);
    if (rc == 0)
        rc = get_count(root, "eval_count", "", &out->completion_tokens, err,
                       errlen);
    if (rc == 0)
        rc = get_count(root, "prompt_eval_duration", "", &ns, err, errlen);
    if (rc == 0 && ns >= 0)
        out->prompt_ms = (double)ns / 1e6;
    if (rc == 0)
        rc = get_count(root, "eval_duration", "", &ns, err, errlen);
    if (rc == 0 && ns >= 0)
        out->predicted_ms = (double)ns / 1e6;
    return rc;
}

static int
is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Trims JSON white space at both ends of [*s, *s + *n). */
static void
trim(const char **s, size_t *n)
{
    while (*n > 0 && is_json_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_json_space((*s)[*n - 1]))
        (*n)--;
}

/* The outcome of an "error:" SSE line: its JSON's message, or its text. */
static int
sse_error(const char *v, size_t n, char *err, size_t errlen)
{
    json_error_t je;
    char m[ERRBUF - 32];
    json_t *j = json_loadb(v, n, 0, &je);
    int got = 0;
    if (j != NULL) {
        got = error_text(field(j, "error") ? field(j, "error") : j, m,
                         sizeof m);
        json_decref(j);
    }
    if (!got)
        clean_copy(m, sizeof m, v, n);
    seterr(err, errlen, "backend error: %s", m[0] ? m : "unspecified");
    return GQ_EIO;
}

int
gq_parse_openai_sse_line(const char *line, size_t len,
                         struct gq_llm_delta *out, int *is_event, char *err,
                         size_t errlen)
{
    json_t *root;
    int rc;
    gq_llm_delta_clear(out);
    *is_event = 0;
    /* A UTF-8 byte order mark may open the stream. */
    if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    if (len == 0 || line[0] == ':')
        return 0;
    const char *colon = memchr(line, ':', len);
    size_t flen = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    size_t vlen = len - (size_t)(v - line);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 5 && memcmp(line, "error", 5) == 0) {
        *is_event = 1;
        return sse_error(v, vlen, err, errlen);
    }
    if (flen != 4 || memcmp(line, "data", 4) != 0)
        return 0;
    trim(&v, &vlen);
    if (vlen == 0)
        return 0;
    if (vlen == 6 && memcmp(v, "[DONE]", 6) == 0) {
        out->done = 1;
        *is_event = 1;
        return 0;
    }
    rc = load_object(v, vlen, "SSE data", &root, err, errlen);
    if (rc < 0)
        return rc;
    rc = openai_fill(root, 1, out, err, errlen);
    json_decref(root);
    if (rc < 0) {
        gq_llm_delta_clear(out);
        return rc;
    }
    *is_event = 1;
    return 0;
}

int
gq_parse_ollama_line(const char *line, size_t len, struct gq_llm_delta *out,
                     char *err, size_t errlen)
{
    json_t *root;
    int rc;
    gq_llm_delta_clear(out);
    trim(&line, &len);
    if (len == 0)
        return 0;
    rc = load_object(line, len, "NDJSON line", &root, err, errlen);
    if (rc < 0)
        return rc;
    rc = ollama_fill(root, out, err, errlen);
    json_decref(root);
    if (rc < 0)
        gq_llm_delta_clear(out);
    return rc;
}

int
gq_parse_openai_full(const char *body, size_t len, struct gq_llm_delta *out,
                     char *err, size_t errlen)
{
    json_t *root;
    int rc;
    gq_llm_delta_clear(out);
    rc = load_object(body, len, "chat reply", &root, err, errlen);
    if (rc < 0)
        return rc;
    rc = openai_fill(root, 0, out, err, errlen);
    json_decref(root);
    if (rc < 0) {
        gq_llm_delta_clear(out);
        return rc;
    }
    out->done = 1;
    return 0;
}

int
gq_parse_ollama_full(const char *body, size_t len, struct gq_llm_delta *out,
                     char *err, size_t errlen)
{
    json_t *root;
    int rc;
    gq_llm_delta_clear(out);
    rc = load_object(body, len, "Ollama reply", &root, err, errlen);
    if (rc < 0)
        return rc;
    rc = ollama_fill(root, out, err, errlen);
    json_decref(root);
    if (rc < 0) {
        gq_llm_delta_clear(out);
        return rc;
    }
    out->done = 1;
    return 0;
}

/* --- errors --- */

void
gq_parse_error_message(const char *body, size_t len, char *msg,
                       size_t msglen)
{
    const char *s = body;
    size_t n = body ? len : 0;
    if (msg == NULL || msglen == 0)
        return;
    msg[0] = '\0';
    trim(&s, &n);
    if (n > 0 && s[0] == '{') {
        json_error_t je;
        json_t *j = json_loadb(s, n, 0, &je);
        int got = 0;
        if (json_is_object(j)) {
            got = error_text(field(j, "error"), msg, msglen);
            if (!got)
                got = error_text(field(j, "message"), msg, msglen);
            if (!got)
                got = error_text(field(j, "detail"), msg, msglen);
        }
        json_decref(j);
        if (got)
            return;
    }
    clean_copy(msg, msglen, s, n);
}
