/*
 * http.h - the CLI's one HTTP client (prefix gq_httpc_, "client", apart
 * from the daemon's gq_http_): blocking requests over a reused
 * libcurl easy handle (so consecutive calls share a keep-alive
 * connection), replies read into a bounded buffer, and a line-splitting
 * stream reader for Server-Sent Events.
 *
 * Nothing here prints or exits; failures come back as GQ_E* codes with a
 * sentence in h->errbuf.
 */
#ifndef GQ_CLI_HTTPC_H
#define GQ_CLI_HTTPC_H

#include <signal.h>
#include <stddef.h>

#include <curl/curl.h>

#define GQ_HTTPC_URL_MAX 1024
#define GQ_HTTPC_REPLY_MAX (64L * 1024 * 1024) /* bytes of one reply body */
#define GQ_HTTPC_LINE_MAX (256 * 1024)         /* bytes of one stream line */

/* Caller-allocated; gq_httpc_init / gq_httpc_close. */
struct gq_httpc {
    CURL *curl;                       /* reused: keeps the connection */
    char base[GQ_HTTPC_URL_MAX];       /* "http://host:port", no '/' at end */
    long connect_timeout_s;           /* for every request */
    const volatile sig_atomic_t *stop; /* if set and *stop != 0, an
                                        * interruptible transfer aborts */
    char errbuf[CURL_ERROR_SIZE + 64]; /* why the last call failed */
};

/* One reply.  body is malloc'd, NUL-terminated, owned by the reply. */
struct gq_httpc_resp {
    long status;      /* HTTP status; 0 when no reply came */
    char *body;       /* NULL when the reply had no body */
    size_t len;       /* bytes in body, without the NUL */
    long retry_after; /* Retry-After seconds, or -1 */
};

/*
 * Called with each line of a stream, without its "\n" or "\r\n", as a
 * NUL-terminated string valid only during the call.  Returns 0 to go on,
 * non-zero to end the stream (gq_httpc_stream then returns 0).
 */
typedef int (*gq_httpc_line_fn)(const char *line, size_t len, void *ud);

/*
 * Initialises h for the server at base_url (a trailing '/' is dropped).
 * Returns 0, GQ_EINVAL if the URL is too long or not http(s)://, or
 * GQ_ENOMEM.  curl_global_init must have been called.
 */
int gq_httpc_init(struct gq_httpc *h, const char *base_url);

/* Frees the handle and its connection.  Safe on a failed init. */
void gq_httpc_close(struct gq_httpc *h);

/*
 * Sends METHOD base+path with body (NULL for none; not freed) and waits at
 * most timeout_s seconds (0 = no limit) for the whole reply.  If
 * interruptible, a set *h->stop aborts the transfer.
 *
 * Returns 0 when a reply came (any status: see r->status), GQ_EIO when
 * the server could not be reached or the transfer broke or was
 * interrupted, GQ_ETIMEDOUT when timeout_s passed, GQ_ETOOBIG when the
 * body was over GQ_HTTPC_REPLY_MAX, GQ_EINVAL for a malformed URL, or
 * GQ_ENOMEM.  r is always initialised; free it with gq_httpc_resp_free.
 */
int gq_httpc_request(struct gq_httpc *h, const char *method, const char *path,
                     const char *body, long timeout_s, int interruptible,
                     struct gq_httpc_resp *r);

/* Frees r's body and resets it.  Safe on a zeroed reply. */
void gq_httpc_resp_free(struct gq_httpc_resp *r);

/*
 * GETs base+path and feeds each line of a 2xx reply to fn until the
 * server closes the stream, fn returns non-zero, *h->stop is set, or no
 * byte arrives for idle_s seconds.  Lines over GQ_HTTPC_LINE_MAX are
 * dropped whole.  A non-2xx reply is read into r (as gq_httpc_request
 * does) and fn is not called.
 *
 * Returns 0 when the stream ended (closed by the server, or by fn, or a
 * non-2xx reply: check r->status), otherwise as gq_httpc_request.
 */
int gq_httpc_stream(struct gq_httpc *h, const char *path, long idle_s,
                    gq_httpc_line_fn fn, void *ud, struct gq_httpc_resp *r);

#endif
