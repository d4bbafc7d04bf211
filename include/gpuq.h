/*
 * gpuq.h - libgpuq, the C client library of gpuqd.
 *
 * This header is the contract.  It speaks only the public HTTP API of
 * doc/api.md, which stays the reference for what each call means and what
 * the server answers; doc/libgpuq.md is the tutorial.  The `gpuq` command
 * uses nothing else to talk to the daemon.
 *
 *     #include <gpuq.h>          cc app.c $(pkg-config --cflags --libs gpuq)
 *
 *     struct gpuq_client *c = gpuq_client_new(NULL, NULL);
 *     struct gpuq_response r;
 *     int rc = gpuq_client_get(c, "j42", 0, &r);
 *     if (rc == 0)
 *         puts(r.body);                   // the job, as JSON text
 *     else
 *         fprintf(stderr, "%s\n", gpuq_client_errmsg(c));
 *     gpuq_response_free(&r);
 *     gpuq_client_free(c);
 *
 * Conventions, for every function below unless it says otherwise:
 *
 * - Functions return 0 or a negative GPUQ_E* code; constructors return
 *   NULL.  gpuq_strerror() turns a code into a sentence, and
 *   gpuq_client_errmsg() says what went wrong with the last call.
 * - A call that a reply came for fills its struct gpuq_response: 0 when
 *   the status was 2xx, GPUQ_EHTTP when it was not (the error body's
 *   code, message and field are parsed out), GPUQ_EPROTO when a 2xx reply
 *   that must be JSON was not.  Any other code means no usable reply came
 *   (status 0).  The struct is initialised by the call, whatever it
 *   returns: pass uninitialised memory, and always release it with
 *   gpuq_response_free(), which is safe on an empty one.
 * - String arguments are read during the call only and never freed.  NULL
 *   is allowed only where it says so.  JSON arguments are text (any
 *   valid JSON where a value is wanted, an object where "object" is
 *   said); bad JSON or strings that are not UTF-8 give GPUQ_EINVAL and
 *   send nothing.  Ids are percent-escaped by the library.
 * - The library never prints, never exits, and never installs signal
 *   handlers.  It allocates with malloc.
 *
 * Threads: a struct gpuq_client and everything it returns belong to one
 * thread at a time; use one client per thread.  Distinct clients may be
 * used at once from different threads.  The first gpuq_client_new()
 * initialises libcurl (curl_global_init), which older libcurl versions
 * require to happen while no other thread uses libcurl.
 *
 * libgpuq uses libcurl and jansson internally; neither appears in this
 * header, and neither do the daemon's internal headers.
 */
#ifndef GPUQ_H
#define GPUQ_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define GPUQ_API __attribute__((visibility("default")))
#else
#define GPUQ_API
#endif

#define GPUQ_VERSION "0.1.0"

/* Where a client connects when given no URL and $GPUQ_URL is unset. */
#define GPUQ_DEFAULT_URL "http://127.0.0.1:7707"

/* Seconds an ordinary request may take, unless gpuq_client_set_timeout. */
#define GPUQ_DEFAULT_TIMEOUT 30
/* Seconds a connection may take to open, for every request. */
#define GPUQ_CONNECT_TIMEOUT 10
/* The server's default wait of POST /v1/locks, for gpuq_client_lock. */
#define GPUQ_LOCK_DEFAULT_WAIT 30
/* gpuq_client_events ends when no byte came for this long (the server
 * sends ": ping" every 15 s). */
#define GPUQ_EVENTS_IDLE 45

#define GPUQ_URL_MAX 1024                   /* bytes of a base URL */
#define GPUQ_REPLY_MAX (64L * 1024 * 1024)  /* bytes of one reply body */
#define GPUQ_EVENT_MAX (256 * 1024)         /* bytes of one event's data */

/*
 * The error codes: X(NAME, value, message).  Values are negative and
 * never change; new codes are added at the end.
 */
#define GPUQ_ERRNO_MAP(X)                                                   \
    X(INVAL, -1, "invalid argument")                                        \
    X(NOMEM, -2, "out of memory")                                           \
    X(URL, -3, "bad server URL (want http://HOST:PORT or https://...)")     \
    X(IO, -4, "cannot reach the server, or the connection broke")           \
    X(TIMEDOUT, -5, "the server did not answer in time")                    \
    X(INTR, -6, "interrupted by the abort callback")                        \
    X(TOOBIG, -7, "reply over the size limit")                              \
    X(HTTP, -8, "the server answered with an error status")                 \
    X(PROTO, -9, "malformed reply from the server")

enum gpuq_errno {
    GPUQ_OK = 0,
#define GPUQ_X_(name, value, msg) GPUQ_E##name = (value),
    GPUQ_ERRNO_MAP(GPUQ_X_)
#undef GPUQ_X_
};

/*
 * A sentence for a GPUQ_E* code ("success" for 0, "unknown error" for a
 * code not in the list).  Never NULL; static storage.
 */
GPUQ_API const char *gpuq_strerror(int err);

/* The code's name without the prefix, "EINVAL"; "OK" for 0; "EUNKNOWN"
 * for a code not in the list.  Never NULL; static storage. */
GPUQ_API const char *gpuq_err_name(int err);

/* The library's version, GPUQ_VERSION as it was built.  Static storage. */
GPUQ_API const char *gpuq_version(void);

/* One reply.  Caller-allocated; every call initialises it. */
struct gpuq_response {
    long status;         /* HTTP status; 0 when no reply came */
    char *body;          /* the body, NUL-terminated; NULL when empty */
    size_t len;          /* bytes in body, without the NUL */
    long retry_after;    /* the Retry-After header in seconds, or -1 */
    char *error_code;    /* non-2xx with an API error body: its
                          * error.code ("queue_full"), else NULL */
    char *error_message; /* ... its error.message, else NULL */
    char *error_field;   /* ... its error.field, else NULL */
};

/* Empties r (status 0, retry_after -1, no strings) without freeing. */
GPUQ_API void gpuq_response_init(struct gpuq_response *r);

/*
 * Frees what r holds and re-initialises it.  Pointers taken from r
 * (r->body, r->error_*) are invalid afterwards.  Safe on an initialised,
 * empty or already freed response; NULL is a no-op.
 */
GPUQ_API void gpuq_response_free(struct gpuq_response *r);

/* An open connection to one gpuqd.  Opaque. */
struct gpuq_client;

/*
 * Checks that url can be a client's server URL: http:// or https://,
 * shorter than GPUQ_URL_MAX once trailing '/'s are dropped.  Returns 0 or
 * GPUQ_EURL.  Whether the host exists is only found out by a request.
 */
GPUQ_API int gpuq_url_check(const char *url);

/*
 * A client for the server at url: NULL means $GPUQ_URL when it is set and
 * not empty, else GPUQ_DEFAULT_URL.  Trailing '/'s are dropped.  token,
 * if not NULL, is sent as "Authorization: Bearer TOKEN" with every
 * request (gpuqd itself does not check it; a proxy in front of it may).
 * Nothing is sent until the first request; connections are kept alive
 * between requests.
 *
 * Returns NULL when the URL fails gpuq_url_check, the token holds a
 * control character, or out of memory.  Free with gpuq_client_free.
 */
GPUQ_API struct gpuq_client *gpuq_client_new(const char *url,
                                             const char *token);

/* Closes c's connection and frees c.  NULL is a no-op. */
GPUQ_API void gpuq_client_free(struct gpuq_client *c);

/* The base URL c talks to, as normalised.  Valid while c lives. */
GPUQ_API const char *gpuq_client_url(const struct gpuq_client *c);

/*
 * Why the last call on c failed, as one line without a newline: for
 * GPUQ_EHTTP "HTTP 404 not_found: no such job j9 (field: id)", for
 * transport errors libcurl's description ("Failed to connect to ...").
 * "" after a call that returned 0.  Valid until the next call on c.
 */
GPUQ_API const char *gpuq_client_errmsg(const struct gpuq_client *c);

/*
 * Sets how many seconds an ordinary request may take in all (0 = no
 * limit) and returns the previous value.  Long-polls (gpuq_client_get
 * with a wait, gpuq_client_lease, gpuq_client_lock) may take their wait
 * plus this.  Default GPUQ_DEFAULT_TIMEOUT.  Negative values count as 0.
 */
GPUQ_API long gpuq_client_set_timeout(struct gpuq_client *c, long seconds);

/*
 * Called during a transfer about once a second, and whenever data comes;
 * a non-zero return aborts the transfer, which then returns GPUQ_EINTR.
 * It must not call into the client.
 */
typedef int (*gpuq_abort_fn)(void *ud);

/*
 * Makes fn (with ud) the abort check of every later request on c, until
 * it is set again; fn NULL removes it.  A signal handler that sets a
 * flag and an fn that reads it make long-polls interruptible.
 */
GPUQ_API void gpuq_client_set_abort(struct gpuq_client *c, gpuq_abort_fn fn,
                                    void *ud);

/*
 * Percent-escapes s (for a path segment or a query value: everything but
 * A-Z a-z 0-9 - . _ ~) into buf of len bytes, NUL-terminated.  Returns 0,
 * or GPUQ_EINVAL when it does not fit (buf is then unspecified).
 */
GPUQ_API int gpuq_escape(const char *s, char *buf, size_t len);

/*
 * Sends METHOD base-URL+path, path starting with '/' and already
 * escaped, with json_body (NULL for none; sent as is, with Content-Type
 * application/json), and fills out.  Returns 0 for a 2xx reply of any
 * body (it is not checked to be JSON), GPUQ_EHTTP for another status,
 * GPUQ_EINVAL for a bad method or path, GPUQ_EURL when libcurl refuses
 * the URL, GPUQ_EIO when the server could not be reached or the
 * transfer broke, GPUQ_ETIMEDOUT, GPUQ_EINTR (the abort callback),
 * GPUQ_ETOOBIG when the body was over GPUQ_REPLY_MAX (out->status is
 * then set, the body dropped), or GPUQ_ENOMEM.
 */
GPUQ_API int gpuq_client_request(struct gpuq_client *c, const char *method,
                                 const char *path, const char *json_body,
                                 struct gpuq_response *out);

/*
 * The typed calls below return as gpuq_client_request does, plus
 * GPUQ_EPROTO when a 2xx reply that should hold JSON did not (out keeps
 * the reply).  Their 2xx bodies are the JSON of doc/api.md.
 */

/* Unset integer fields of option structs. */
#define GPUQ_UNSET (-2147483647L - 1)

/* What POST /v1/jobs sends.  Set up with gpuq_submit_opts_init. */
struct gpuq_submit_opts {
    const char *cls;             /* the class; required */
    const char *payload;         /* JSON value, or NULL for none */
    const char *metadata;        /* JSON object, or NULL */
    long priority;               /* -1000..1000, or GPUQ_UNSET */
    const char *idempotency_key; /* or NULL */
    double queue_timeout;        /* seconds (0 = forever), or < 0 for
                                  * the class's own */
    const char *const *depends_on; /* NULL-terminated job ids, or NULL */
    const char *callback_url;    /* or NULL */
};

/* Sets every field of o to "absent". */
GPUQ_API void gpuq_submit_opts_init(struct gpuq_submit_opts *o);

/* POST /v1/jobs: 201 the new job, or 200 the job of a known key. */
GPUQ_API int gpuq_client_submit(struct gpuq_client *c,
                                const struct gpuq_submit_opts *o,
                                struct gpuq_response *out);

/*
 * GET /v1/jobs/ID, with ?wait=wait_s when wait_s > 0 (the reply then
 * comes when the job is terminal or the wait ran out).
 */
GPUQ_API int gpuq_client_get(struct gpuq_client *c, const char *id,
                             long wait_s, struct gpuq_response *out);

/*
 * GET /v1/jobs: one page in id order.  cls, state and after (the "next"
 * of the previous page) may be NULL; limit 0 is the server's default.
 */
GPUQ_API int gpuq_client_list(struct gpuq_client *c, const char *cls,
                              const char *state, long limit,
                              const char *after, struct gpuq_response *out);

/* POST /v1/jobs/ID/cancel and /requeue: 200 with the job. */
GPUQ_API int gpuq_client_cancel(struct gpuq_client *c, const char *id,
                                struct gpuq_response *out);
GPUQ_API int gpuq_client_requeue(struct gpuq_client *c, const char *id,
                                 struct gpuq_response *out);

/* GET /v1/status. */
GPUQ_API int gpuq_client_status(struct gpuq_client *c,
                                struct gpuq_response *out);

/* POST /v1/admin/drain, with the deadline in seconds unless < 0. */
GPUQ_API int gpuq_client_drain(struct gpuq_client *c, double deadline_s,
                               struct gpuq_response *out);

/*
 * POST /v1/leases: long-polls up to wait_s seconds (0..300) for a job of
 * one of classes (a NULL-terminated array, at least one) as worker (NULL:
 * the server records none).  Returns 0 with status 200 and the grant
 * {"lease_id", "token", "ttl", "job"}, or 0 with status 204 and no body
 * when the wait passed.
 */
GPUQ_API int gpuq_client_lease(struct gpuq_client *c,
                               const char *const *classes, long wait_s,
                               const char *worker,
                               struct gpuq_response *out);

/*
 * POST /v1/leases/LEASE_ID/OP with {"token": token} and the members of
 * json_fields (a JSON object, or NULL; "token" in it is overridden).  op
 * is "heartbeat", "complete" (fields: "result"), "fail" ("error",
 * "retryable") or "yield" ("progress"); any other op is GPUQ_EINVAL.
 * A lost lease is GPUQ_EHTTP with status 409 (stale_token) or 404.
 */
GPUQ_API int gpuq_client_lease_op(struct gpuq_client *c, const char *lease_id,
                                  const char *op, long long token,
                                  const char *json_fields,
                                  struct gpuq_response *out);

/*
 * POST /v1/locks: long-polls for a GPU lock of class cls held by holder
 * (NULL: the server records none), for wait_s seconds (0..3600; < 0 sends
 * none and the server waits GPUQ_LOCK_DEFAULT_WAIT).  json_fields (a JSON
 * object, or NULL) adds members such as "metadata" and "priority"; the
 * named arguments win over its members.  200 with {"lock_id", "token",
 * "ttl", "job_id"}; a wait that ran out is GPUQ_EHTTP with status 408.
 */
GPUQ_API int gpuq_client_lock(struct gpuq_client *c, const char *cls,
                              const char *holder, long wait_s,
                              const char *json_fields,
                              struct gpuq_response *out);

/* POST /v1/locks/LOCK_ID/heartbeat: 200 {"ttl", ...}; 409/404 = lost. */
GPUQ_API int gpuq_client_lock_heartbeat(struct gpuq_client *c,
                                        const char *lock_id, long long token,
                                        struct gpuq_response *out);

/* DELETE /v1/locks/LOCK_ID?token=T: 200 with the lock job. */
GPUQ_API int gpuq_client_unlock(struct gpuq_client *c, const char *lock_id,
                                long long token, struct gpuq_response *out);

/*
 * Called with each Server-Sent Event of a stream: event is its "event:"
 * field ("" when it had none), data its "data:" lines joined by "\n",
 * NUL-terminated, len bytes.  data is NULL (len 0) for an event whose
 * data was over GPUQ_EVENT_MAX bytes, which is dropped.  Both pointers
 * are valid only during the call.  Return 0 to go on, non-zero to end
 * the stream (the stream call then returns 0).
 */
typedef int (*gpuq_event_fn)(const char *event, const char *data,
                             size_t len, void *ud);

/*
 * GET /v1/events[?class=cls][&job=job] (either may be NULL) and calls fn
 * with every event until the server ends the stream or fn returns
 * non-zero (both return 0), or no byte came for GPUQ_EVENTS_IDLE seconds
 * (GPUQ_ETIMEDOUT).  The timeout of gpuq_client_set_timeout does not
 * apply; the abort callback does.  A non-2xx reply is GPUQ_EHTTP, and fn
 * is not called.  out holds the status (and the error reply, if any).
 */
GPUQ_API int gpuq_client_events(struct gpuq_client *c, const char *cls,
                                const char *job, gpuq_event_fn fn, void *ud,
                                struct gpuq_response *out);

/*
 * GET /v1/jobs/ID/stream: as gpuq_client_events, for the "token" events
 * of a job's text and the final "done" (its data is the job).  There is
 * no idle limit: the stream lasts as long as the job.
 */
GPUQ_API int gpuq_client_stream(struct gpuq_client *c, const char *id,
                                gpuq_event_fn fn, void *ud,
                                struct gpuq_response *out);

#ifdef __cplusplus
}
#endif

#endif
