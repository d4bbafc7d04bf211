/* backend.c - a backend's circuit breaker and speed averages, and the
 * table of executors. */
#include <stdio.h>
#include <string.h>

#include "../core/err.h"
#include "exec.h"
#include "httpc.h"
#include "parse.h"

const struct gq_exec_ops *const gq_executors[4] = {
    [GQ_EXEC_WORKER] = NULL,
    [GQ_EXEC_TRANSCRIBE] = &gq_exec_transcribe,
    [GQ_EXEC_SUMMARIZE] = &gq_exec_summarize,
    [GQ_EXEC_CHAT] = &gq_exec_chat,
};

const char *
gq_breaker_str(enum gq_breaker b)
{
    switch (b) {
    case GQ_BREAKER_CLOSED: return "closed";
    case GQ_BREAKER_OPEN: return "open";
    case GQ_BREAKER_HALF_OPEN: return "half_open";
    }
    return "unknown";
}

int
gq_backend_ready(const struct gq_backend *b, int64_t now_us)
{
    if (b->inflight >= b->conf.max_concurrency)
        return 0;
    switch (b->breaker) {
    case GQ_BREAKER_CLOSED:
        return 1;
    case GQ_BREAKER_OPEN:
        /* The cool-down over, one probe call may go (half-open). */
        return now_us >= b->open_until_us && b->inflight == 0;
    case GQ_BREAKER_HALF_OPEN:
        return b->inflight == 0;
    }
    return 0;
}

int
gq_backend_result(struct gq_backend *b, int ok, int64_t now_us)
{
    b->calls++;
    if (ok) {
        b->failures = 0;
        b->breaker = GQ_BREAKER_CLOSED;
        return 0;
    }
    b->failures++;
    if (b->breaker != GQ_BREAKER_OPEN &&
        (b->breaker == GQ_BREAKER_HALF_OPEN ||
         b->failures >= b->conf.breaker_failures)) {
        b->breaker = GQ_BREAKER_OPEN;
        b->open_until_us = now_us + (int64_t)(b->conf.breaker_cooldown * 1e6);
        return 1;
    }
    if (b->breaker == GQ_BREAKER_OPEN)
        b->open_until_us = now_us + (int64_t)(b->conf.breaker_cooldown * 1e6);
    return 0;
}

int
gq_backend_repeated_500(struct gq_backend *b, uint64_t seq, const char *body,
                        size_t len)
{
    char digest[64];
    unsigned long h = 5381;
    for (size_t i = 0; i < len; i++)
        h = h * 33 + (unsigned char)body[i];
    snprintf(digest, sizeof digest, "%llu:%lx:%zu", (unsigned long long)seq,
             h, len);
    int same = strcmp(digest, b->last_500) == 0;
    snprintf(b->last_500, sizeof b->last_500, "%s", digest);
    return same;
}

void
gq_backend_failure(struct gq_backend *b, uint64_t seq,
                   const struct gq_call_result *res, char *msg,
                   size_t msglen, const char **code, int *retryable)
{
    *retryable = res->kind == GQ_CALL_RETRYABLE;
    if (res->status >= 400) {
        char em[200];
        gq_parse_error_message(res->body, res->body_len, em, sizeof em);
        snprintf(msg, msglen, "backend %s answered %d: %s", b->conf.name,
                 res->status, em);
        *code = res->status >= 500 ? "backend_5xx" : "backend_4xx";
        /* Only a 500 can be a client mistake in disguise (llama-server);
         * 502, 503 ("Loading model", Ollama's "server busy, please try
         * again") and 504 say "later" however often they repeat. */
        if (res->status == 500 &&
            gq_backend_repeated_500(b, seq, res->body, res->body_len))
            *retryable = 0;
    } else {
        snprintf(msg, msglen, "backend %s call failed: %s", b->conf.name,
                 res->err);
        *code = "backend_unreachable";
    }
}

void
gq_ewma(double *avg, double sample)
{
    if (!(sample >= 0))
        return;
    *avg = *avg > 0 ? 0.7 * *avg + 0.3 * sample : sample;
}
