/*
 * sse.h - a Server-Sent Events parser (prefix gpuq__sse_), fed the bytes
 * of a stream in whatever pieces they arrive.  It splits lines (ended by
 * "\n", "\r\n" or "\r"), gathers the "event:" and "data:" fields of each
 * event, skips comments (": ping") and other fields, and calls a
 * gpuq_event_fn at each blank line.  See the WHATWG event-stream format.
 *
 * Bounded: a line over GPUQ__SSE_LINE_MAX bytes is dropped whole, and an
 * event whose data goes over GPUQ_EVENT_MAX bytes (or lost a "data:" line
 * that way) is reported with data NULL.
 */
#ifndef GPUQ_LIB_SSE_H
#define GPUQ_LIB_SSE_H

#include <stddef.h>

#include <gpuq.h>

#include "buf.h"

#define GPUQ__SSE_LINE_MAX (GPUQ_EVENT_MAX + 64) /* "data: " + the data */
#define GPUQ__SSE_EVENT_NAME_MAX 64              /* bytes kept, with NUL */

/* Caller-allocated; gpuq__sse_init, then gpuq__sse_close. */
struct gpuq__sse {
    gpuq_event_fn fn;
    void *ud;
    struct gpuq__buf line; /* the line being read */
    struct gpuq__buf data; /* the event's joined data lines */
    char event[GPUQ__SSE_EVENT_NAME_MAX]; /* its "event:" field */
    int ndata;             /* data lines so far (a first one may be "") */
    int dropping;          /* the current line is over the max: skip it */
    int cr;                /* the last byte was a '\r' */
    int overflow;          /* the event lost data */
    int ended;             /* fn asked to stop; feed ignores the rest */
};

void gpuq__sse_init(struct gpuq__sse *s, gpuq_event_fn fn, void *ud);

/* Frees the buffers.  Safe twice. */
void gpuq__sse_close(struct gpuq__sse *s);

/*
 * Parses n more bytes.  Returns 0 to go on, 1 once fn has asked to end
 * the stream (and for every call after that), or GPUQ_ENOMEM.
 */
int gpuq__sse_feed(struct gpuq__sse *s, const char *p, size_t n);

#endif
