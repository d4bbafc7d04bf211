/*
 * sse.c - the Server-Sent Events parser of libgpuq's streams.
 */
#include "sse.h"

#include <stdio.h>
#include <string.h>

void
gpuq__sse_init(struct gpuq__sse *s, gpuq_event_fn fn, void *ud)
{
    memset(s, 0, sizeof(*s));
    s->fn = fn;
    s->ud = ud;
    gpuq__buf_init(&s->line, GPUQ__SSE_LINE_MAX);
    gpuq__buf_init(&s->data, GPUQ_EVENT_MAX);
}

void
gpuq__sse_close(struct gpuq__sse *s)
{
    gpuq__buf_free(&s->line);
    gpuq__buf_free(&s->data);
}

/* A blank line: hands the event over (if it has data) and starts anew. */
static int
dispatch(struct gpuq__sse *s)
{
    int end = 0;

    if (s->overflow)
        end = s->fn(s->event, NULL, 0, s->ud);
    else if (s->data.len > 0)
        end = s->fn(s->event, s->data.p, s->data.len, s->ud);
    gpuq__buf_reset(&s->data);
    s->event[0] = '\0';
    s->ndata = 0;
    s->overflow = 0;
    return end != 0;
}

/* One whole line, without its end.  Returns as gpuq__sse_feed. */
static int
line(struct gpuq__sse *s, const char *l, size_t len)
{
    const char *colon, *val;
    size_t nlen, vlen;
    int err;

    if (len == 0)
        return dispatch(s);
    if (l[0] == ':') /* a comment */
        return 0;
    colon = memchr(l, ':', len);
    nlen = colon ? (size_t)(colon - l) : len;
    val = colon ? colon + 1 : l + len;
    if (val < l + len && *val == ' ')
        val++;
    vlen = len - (size_t)(val - l);
    if (nlen == 5 && memcmp(l, "event", 5) == 0) {
        snprintf(s->event, sizeof(s->event), "%.*s", (int)vlen, val);
    } else if (nlen == 4 && memcmp(l, "data", 4) == 0 && !s->overflow) {
        err = 0;
        if (s->ndata > 0)
            err = gpuq__buf_add(&s->data, "\n", 1);
        if (err == 0)
            err = gpuq__buf_add(&s->data, val, vlen);
        if (err == GPUQ_ENOMEM)
            return err;
        if (err != 0) {
            s->overflow = 1;
            gpuq__buf_free(&s->data); /* give the memory back at once */
        }
        s->ndata++;
    }
    return 0;
}

/* The current line ended. */
static int
line_end(struct gpuq__sse *s)
{
    int rc = 0;

    if (s->dropping) {
        /* Only a lost data line spoils the event. */
        if (s->line.len >= 4 && memcmp(s->line.p, "data", 4) == 0 &&
            (s->line.len == 4 || s->line.p[4] == ':'))
            s->overflow = 1;
        s->dropping = 0;
    } else {
        rc = line(s, s->line.p ? s->line.p : "", s->line.len);
    }
    gpuq__buf_reset(&s->line);
    return rc;
}

int
gpuq__sse_feed(struct gpuq__sse *s, const char *p, size_t n)
{
    const char *end = p + n, *stop;
    size_t chunk;
    int rc;

    while (!s->ended && p < end) {
        if (*p == '\n' || *p == '\r') {
            int was_cr = s->cr;
            s->cr = *p == '\r';
            p++;
            if (p[-1] == '\n' && was_cr)
                continue; /* the '\n' of "\r\n" */
            rc = line_end(s);
            if (rc < 0)
                return rc;
            if (rc > 0)
                s->ended = 1;
            continue;
        }
        s->cr = 0;
        for (stop = p; stop < end && *stop != '\n' && *stop != '\r'; stop++)
            ;
        chunk = (size_t)(stop - p);
        if (!s->dropping) {
            rc = gpuq__buf_add(&s->line, p, chunk);
            if (rc == GPUQ_ENOMEM)
                return rc;
            if (rc != 0) {
                /* Keep what fits, to tell a data line from others. */
                size_t room = s->line.max - s->line.len;
                if (gpuq__buf_add(&s->line, p, room) == GPUQ_ENOMEM)
                    return GPUQ_ENOMEM;
                s->dropping = 1;
            }
        }
        p = stop;
    }
    return s->ended;
}
