/*
 * exec.h - built-in executors: gpuqd itself runs the GPU work of a class
 * (executor = transcribe | summarize | chat) against an inference server
 * (a backend), instead of waiting for an external worker.
 *
 * An executor is a table of functions (struct gq_exec_ops); a new one is
 * one new file and one entry in gq_executors[].  The daemon grants a slot,
 * makes a struct gq_run for the grant and calls start(); the executor
 * drives its HTTP calls on the shared loop (httpc.h) and heavy CPU work
 * on worker threads (workq.h), then reports exactly once through
 * run->end(): done (the job succeeds), chunk (one bounded piece of work
 * is done: the job gives the GPU back and keeps its place, with its
 * progress stored), or fail (retryable or not).  cancel() aborts a run
 * at once (the backend call is dropped) and end() is then not called.
 */
#ifndef GQ_EXEC_H
#define GQ_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "../server/config.h"

struct gq_httpc;
struct gq_workq;

/* Circuit breaker states of a backend. */
enum gq_breaker { GQ_BREAKER_CLOSED, GQ_BREAKER_OPEN, GQ_BREAKER_HALF_OPEN };
const char *gq_breaker_str(enum gq_breaker b);

/* A backend's live state, owned by the daemon. */
struct gq_backend {
    struct gq_backend_conf conf;
    int inflight;             /* calls running now */
    enum gq_breaker breaker;
    int failures;             /* consecutive failed calls */
    int64_t open_until_us;    /* monotonic; when OPEN turns HALF_OPEN */
    int healthy;              /* last /health answer was 200 */
    char last_error[256];
    uint64_t calls, errors_retryable, errors_fatal;
    /* Measured speed (EWMA, seconds): per audio second for whisper,
     * per prompt token and per output token for LLMs; 0 = not yet. */
    double s_per_audio_s;
    double s_per_prompt_tok;
    double s_per_out_tok;
    char last_500[64];        /* digest of the last 500 reply, for repeats */
    void *exec_state;         /* the executor's per-backend state (caches) */
    void (*exec_state_free)(void *state); /* frees exec_state; set with it */
};

/* Can the backend take another call now? (breaker and concurrency) */
int gq_backend_ready(const struct gq_backend *b, int64_t now_us);
/* Records a call's outcome; returns 1 if the breaker just opened. */
int gq_backend_result(struct gq_backend *b, int ok, int64_t now_us);
/* 1 if this 500 reply repeats, byte for byte, the last 500 that the same
 * job got from this backend: a bad request in disguise (llama.cpp
 * answers client errors with 500), not worth retrying.  Remembers it. */
int gq_backend_repeated_500(struct gq_backend *b, uint64_t seq,
                            const char *body, size_t len);
struct gq_call_result;
/*
 * Describes a failed backend call of job seq: *code is backend_4xx,
 * backend_5xx or backend_unreachable; msg says what happened (with the
 * server's own message); *retryable follows the call's classification,
 * except that a 500 repeated for the same job is final.
 */
void gq_backend_failure(struct gq_backend *b, uint64_t seq,
                        const struct gq_call_result *res, char *msg,
                        size_t msglen, const char **code, int *retryable);
/* Folds one measurement into an EWMA (alpha 0.3; first sample taken). */
void gq_ewma(double *avg, double sample);

enum gq_run_end {
    GQ_RUN_DONE,              /* result: the job's result */
    GQ_RUN_CHUNK,             /* result: progress; the job yields */
    GQ_RUN_FAIL,
};

struct gq_run {
    /* Set by the daemon before start(). */
    struct gq_httpc *httpc;
    struct gq_workq *workq;
    struct event_base *base;
    struct gq_backend *bk;
    const struct gq_class_exec *cx;
    uint64_t seq, token;
    int cls;
    json_t *payload;          /* owned by the run (decref'd by the daemon) */
    json_t *progress;         /* stored progress or NULL; owned likewise */
    int64_t started_us;       /* monotonic */
    /* Called by the executor exactly once (not after cancel).  result is
     * stolen (may be NULL).  For FAIL, code/msg describe the error and
     * retryable says whether another attempt may succeed. */
    void (*end)(struct gq_run *r, enum gq_run_end how, json_t *result,
                const char *code, const char *msg, int retryable);
    /* Streams a piece of generated text to the job's listeners (chat);
     * may be NULL. */
    void (*token_cb)(struct gq_run *r, const char *text, size_t len);
    /* Reports the first token's arrival (chat wait metric); may be NULL. */
    void (*first_token)(struct gq_run *r);
    void *ud;                 /* the daemon's */
    void *priv;               /* the executor's */
};

struct gq_exec_ops {
    const char *name;
    /* Checks a payload at submit time; 0, or GQ_EINVAL with *field and
     * msg set.  May rewrite nothing. */
    int (*validate)(const struct gq_class_exec *cx, json_t *payload,
                    const char **field, char *msg, size_t msglen);
    /* Starts the run's work; 0, or a GQ_E* code (then end() is not
     * called and the daemon fails the grant itself). */
    int (*start)(struct gq_run *r);
    /* Aborts the run now: drops its backend call, frees its state. */
    void (*cancel)(struct gq_run *r);
};

/* Directory of audio uploaded through gpuqd's own endpoints (payload
 * "upload" names a file in it); set once by the daemon at start. */
extern const char *gq_upload_dir;

/* Indexed by enum gq_executor; NULL for GQ_EXEC_WORKER. */
extern const struct gq_exec_ops *const gq_executors[4];
extern const struct gq_exec_ops gq_exec_chat;
extern const struct gq_exec_ops gq_exec_transcribe;
extern const struct gq_exec_ops gq_exec_summarize;

#endif
