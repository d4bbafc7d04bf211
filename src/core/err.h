/*
 * err.h - the one error list of gpuq.
 *
 * Every function that can fail returns 0 or a negative GQ_E* code.  The
 * codes come from one X-macro list that also yields their JSON names (the
 * "code" field of API errors), messages and HTTP statuses, after libuv's
 * UV_ERRNO_MAP.
 */
#ifndef GQ_ERR_H
#define GQ_ERR_H

/* X(NAME, json name, http status, message) */
#define GQ_ERRNO_MAP(X)                                                     \
    X(INVAL, "invalid", 400, "invalid argument")                            \
    X(NOENT, "not_found", 404, "not found")                                 \
    X(NOCLASS, "unknown_class", 404, "unknown class")                       \
    X(TOOBIG, "too_large", 413, "too large")                                \
    X(FULL, "queue_full", 429, "class queue is full")                       \
    X(STALE, "stale_token", 409, "stale or unknown lease token")            \
    X(STATE, "bad_state", 409, "not allowed in the job's current state")    \
    X(TIMEDOUT, "timeout", 408, "timed out")                                \
    X(DRAINING, "draining", 503, "daemon is draining")                      \
    X(BUSY, "busy", 503, "too many parked requests")                        \
    X(NOMEM, "no_memory", 503, "out of memory")                             \
    X(STORE, "store_failure", 503, "store failure; nothing was changed")    \
    X(STOREFULL, "store_full", 507, "store is full; nothing was changed")   \
    X(IO, "io", 500, "i/o error")                                           \
    X(INTERNAL, "internal", 500, "internal error")                          \
    X(UNAUTHORIZED, "unauthorized", 401, "missing or invalid API token")    \
    X(FORBIDDEN, "forbidden", 403, "the API token does not allow this")

enum {
    GQ_OK = 0,
    GQ__EFIRST = -1000,
#define X(name, jname, status, msg) GQ_E##name,
    GQ_ERRNO_MAP(X)
#undef X
    GQ__ELAST
};

/* JSON code name, e.g. "invalid"; "unknown" for a code not in the list. */
const char *gq_err_name(int err);
/* Human sentence for the code.  Never NULL. */
const char *gq_err_msg(int err);
/* HTTP status the API answers with for this code; 500 if unknown. */
int gq_err_http(int err);

#endif
