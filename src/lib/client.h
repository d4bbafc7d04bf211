/*
 * client.h - the insides of struct gpuq_client (prefix gpuq__client_):
 * one reused libcurl easy handle per client, so that consecutive calls
 * share a keep-alive connection, and the one function that makes a
 * request, which the typed calls of api.c are built on.
 */
#ifndef GPUQ_LIB_CLIENT_H
#define GPUQ_LIB_CLIENT_H

#include <curl/curl.h>

#include <gpuq.h>

#define GPUQ__ERRMSG_MAX (CURL_ERROR_SIZE + 512)

struct gpuq_client {
    CURL *curl;                  /* reused: keeps the connection */
    char base[GPUQ_URL_MAX];     /* "http://host:port", no '/' at the end */
    char *auth;                  /* "Authorization: Bearer T", or NULL */
    long timeout_s;              /* ordinary requests; 0 = no limit */
    gpuq_abort_fn abort_fn;      /* checked during transfers, or NULL */
    void *abort_ud;
    char curlerr[CURL_ERROR_SIZE]; /* libcurl's words for the last failure */
    char errmsg[GPUQ__ERRMSG_MAX]; /* gpuq_client_errmsg */
};

/* One request, as api.c describes it. */
struct gpuq__call {
    const char *method;    /* "GET", "POST", "DELETE" */
    const char *path;      /* escaped, starting with '/' */
    const char *body;      /* JSON text, or NULL */
    long timeout_s;        /* the whole transfer; 0 = no limit */
    int want_json;         /* a 2xx body must be JSON, else GPUQ_EPROTO */
    gpuq_event_fn events;  /* a stream: 2xx bytes go to an SSE parser */
    void *events_ud;
    long idle_s;           /* a stream ends after this long without a
                            * byte; 0 = never */
};

/* Makes the request; returns and fills out as gpuq_client_request. */
int gpuq__client_call(struct gpuq_client *c, const struct gpuq__call *call,
                      struct gpuq_response *out);

/*
 * The limit of a long-poll that waits wait_s seconds: wait_s plus the
 * client's timeout, or 0 (none) when the client has none.
 */
long gpuq__client_poll_timeout(const struct gpuq_client *c, long wait_s);

/* Sets c->errmsg from fmt and returns err. */
int gpuq__client_fail(struct gpuq_client *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
