/*
 * url.h - building what libgpuq sends (prefix gpuq__url_ and
 * gpuq__path_): the normalised base URL of a client, and request paths
 * with percent-escaped segments and query values, in fixed buffers that
 * say when they overflowed instead of truncating silently.
 */
#ifndef GPUQ_LIB_URL_H
#define GPUQ_LIB_URL_H

#include <stddef.h>

#define GPUQ__PATH_MAX 4096 /* bytes of a request path with its query */

/*
 * The base URL of a client: url, or $GPUQ_URL when url is NULL and it is
 * set and not empty, or GPUQ_DEFAULT_URL; trailing '/'s dropped.  Into
 * base (len bytes).  Returns 0, or GPUQ_EURL (see gpuq_url_check).
 */
int gpuq__url_base(const char *url, char *base, size_t len);

/* A path being built.  Caller-allocated; gpuq__path_init first. */
struct gpuq__path {
    char s[GPUQ__PATH_MAX]; /* NUL-terminated */
    size_t len;
    int query;              /* a '?' has been written */
    int overflow;           /* something did not fit; s is then cut */
};

/* Starts p with the literal lit ("/v1/jobs"). */
void gpuq__path_init(struct gpuq__path *p, const char *lit);

/* Appends a literal ("/cancel"). */
void gpuq__path_lit(struct gpuq__path *p, const char *lit);

/* Appends "/" and raw percent-escaped. */
void gpuq__path_seg(struct gpuq__path *p, const char *raw);

/* Appends "?name=value" or "&name=value", value escaped; nothing when
 * value is NULL. */
void gpuq__path_query(struct gpuq__path *p, const char *name,
                      const char *value);

/* The same with a decimal integer. */
void gpuq__path_query_ll(struct gpuq__path *p, const char *name,
                         long long value);

#endif
