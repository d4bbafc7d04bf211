/*
 * httpc.h - the daemon's asynchronous HTTP client (prefix gq_httpc_ /
 * gq_call_): calls to inference backends driven by the one libevent loop
 * through libcurl's multi_socket API, so no call ever blocks the loop.
 *
 * One struct gq_httpc per loop holds one CURLM whose connection cache is
 * kept between calls (keep-alive to each backend).  Only http:// and
 * https:// URLs are allowed; redirects are not followed (a 3xx is a
 * FATAL result).  Everything runs on the loop's thread: none of these
 * functions may be called from another thread.
 *
 * Not to be confused with the CLI's blocking client in src/cli/http.h,
 * which has the same struct tag; the two never meet in one binary.
 *
 * curl_global_init(CURL_GLOBAL_DEFAULT) should be called once by main
 * before any thread starts; gq_httpc_new calls it too (ref-counted), which
 * is enough for single-threaded programs and tests.
 *
 * Classification of a finished call (struct gq_call_result.kind):
 *
 *   transfer ended without a curl error:
 *     2xx                                  OK
 *     408, 429, 5xx                        RETRYABLE
 *     1xx, 3xx, other 4xx                  FATAL
 *   curl error (takes precedence over the status):
 *     could not connect (refused, unreachable), could not resolve,
 *     timed out, send/recv error (reset), got nothing, partial body,
 *     TLS handshake failure, HTTP/2 errors                RETRYABLE
 *     2xx body over max_response (err "too large ...")    FATAL
 *     data callback asked to abort ("aborted by caller")  FATAL
 *     bad or unsupported URL, TLS peer verification,
 *     anything else                                        FATAL
 *   A non-2xx body over max_response is truncated, not an error: the
 *   result is classified by its status and err says "(body truncated)".
 */
#ifndef GQ_EXEC_HTTPC_H
#define GQ_EXEC_HTTPC_H

#include <stddef.h>

#include <event2/event.h>

/* Default and ceiling of gq_call_opts.max_response. */
#define GQ_HTTPC_MAX_RESPONSE (16u * 1024 * 1024)
/* Default connect timeout, seconds. */
#define GQ_HTTPC_CONNECT_TIMEOUT 5.0

struct gq_httpc;
struct gq_call;

/*
 * Creates a client on base (not owned; must outlive the client).
 * Returns NULL when libcurl or libevent cannot allocate.
 */
struct gq_httpc *gq_httpc_new(struct event_base *base);

/*
 * Cancels every call in flight (their done callbacks are NOT called, as
 * for gq_call_cancel), closes the cached connections and frees h.  NULL
 * is a no-op.  Must not be called from inside a data or done callback.
 */
void gq_httpc_free(struct gq_httpc *h);

/* One multipart/form-data field (a curl_mime part). */
struct gq_part {
    const char *name;             /* field name, required */
    const void *data;             /* field bytes (may be NULL if len 0) */
    size_t len;
    const char *filename;         /* sent as filename="..."; may be NULL */
    const char *type;             /* part Content-Type; may be NULL */
};

/*
 * What to call.  Every pointer is only read during gq_call_start, which
 * copies what it needs (URL, headers, body, parts), so the caller may free
 * or reuse its buffers as soon as gq_call_start returns.
 */
struct gq_call_opts {
    const char *method;           /* "GET", "POST", ...; NULL = GET, or
                                   * POST when there is a body or parts */
    const char *url;              /* http:// or https://, required */
    const char *const *headers;   /* NULL-terminated "Name: value" list, or
                                   * NULL.  With a body and no Content-Type
                                   * here, application/json is sent. */
    const void *body;             /* request body (JSON); NULL = none */
    size_t body_len;
    const struct gq_part *parts;  /* multipart/form-data instead of body */
    int nparts;
    double timeout;               /* whole call, seconds; 0 = no limit */
    double connect_timeout;       /* seconds; 0 = GQ_HTTPC_CONNECT_TIMEOUT */
    size_t max_response;          /* bytes of body kept when buffering;
                                   * 0 = GQ_HTTPC_MAX_RESPONSE, which is also
                                   * the ceiling.  Does not limit streamed
                                   * 2xx bodies. */
};

enum gq_call_kind { GQ_CALL_OK, GQ_CALL_RETRYABLE, GQ_CALL_FATAL };
/* "ok", "retryable", "fatal". */
const char *gq_call_kind_str(enum gq_call_kind k);

/*
 * How a call ended.  Passed to the done callback; the struct and every
 * pointer in it are valid only during that callback (copy what you keep).
 */
struct gq_call_result {
    int status;                   /* HTTP status of the last response, 0 if
                                   * none came */
    int curl_code;                /* CURLcode; 0 = CURLE_OK */
    enum gq_call_kind kind;       /* see the table at the top */
    const char *body;             /* response body, NUL-terminated (the NUL
                                   * is not counted); "" when none.  For a
                                   * streamed call: only a non-2xx body. */
    size_t body_len;
    const char *content_type;     /* response Content-Type or NULL */
    char err[256];                /* what went wrong when kind != OK; "" for
                                   * OK */
    double elapsed;               /* seconds since gq_call_start */
};

/*
 * Streaming: called on the loop thread as body bytes of a 2xx response
 * arrive (non-2xx bodies are buffered for the result instead).  buf is
 * valid only during the call.  Return 0 to go on, nonzero to abort the
 * call: done then gets FATAL with err "aborted by caller".
 */
typedef int (*gq_call_data_fn)(void *ud, const char *buf, size_t len);
typedef void (*gq_call_done_fn)(void *ud, const struct gq_call_result *r);

/*
 * Starts a call.  data is NULL to buffer the body (up to max_response) or
 * a streaming callback.  done (required) is called exactly once, always
 * later from the loop, never from inside gq_call_start - unless the call
 * is cancelled first.  Returns the call, owned by h (it is freed right
 * after done returns, or by gq_call_cancel), or NULL on bad options (no
 * URL, a URL that does not parse or has no scheme, a method that is not
 * letters only, negative or NaN timeouts, a header with CR/LF or no ':',
 * both body and parts, nparts < 0, parts without names) or when memory
 * runs out.  A URL that parses but cannot be fetched (ftp://, bad host)
 * ends FATAL or RETRYABLE through done instead.  May be called from
 * inside data and done callbacks.
 */
struct gq_call *gq_call_start(struct gq_httpc *h,
                              const struct gq_call_opts *o,
                              gq_call_data_fn data, gq_call_done_fn done,
                              void *ud);

/*
 * Aborts a call at once: its connection is closed (the server sees the
 * peer hang up) and neither data nor done is called again; c is freed
 * and must not be used afterwards.  NULL is a no-op.
 *
 * From inside callbacks:
 *   - from c's own data callback, or from another call's data callback,
 *     the call is marked cancelled and torn down as soon as libcurl
 *     returns control to the loop (libcurl forbids removing a handle from
 *     inside its callbacks); no further callbacks for c happen;
 *   - from c's own done callback it is a no-op (c is freed when done
 *     returns anyway);
 *   - from another call's done callback it acts at once.
 */
void gq_call_cancel(struct gq_call *c);

/* Calls started and not yet finished or cancelled. */
int gq_httpc_active(const struct gq_httpc *h);

#endif
