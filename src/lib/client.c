/*
 * client.c - gpuq_client: blocking HTTP to one gpuqd over a reused
 * libcurl easy handle.
 *
 * Each request resets the handle's options (curl_easy_reset keeps the
 * connection cache), so a program that makes many calls, like a worker
 * heartbeating, talks over one keep-alive connection.  Reply bodies are
 * read into bounded buffers; streams go through the SSE parser of sse.c.
 */
#include "client.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "buf.h"
#include "response.h"
#include "sse.h"
#include "url.h"

/* What the callbacks of one transfer share. */
struct xfer {
    struct gpuq_client *c;
    struct gpuq_response *r;
    struct gpuq__buf body;  /* the reply body (any status but a 2xx of
                             * a stream) */
    int err;                /* a callback's GPUQ_E* failure */
    struct gpuq__sse *sse;  /* a stream, or NULL */
    int ended;              /* the event callback ended the stream */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void
global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int
gpuq__client_fail(struct gpuq_client *c, int err, const char *fmt, ...)
{
    va_list ap;

    char *q;

    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    for (q = c->errmsg; *q; q++) /* one line, whatever a body held */
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            *q = ' ';
    return err;
}

struct gpuq_client *
gpuq_client_new(const char *url, const char *token)
{
    struct gpuq_client *c;
    const char *t;
    size_t n;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->timeout_s = GPUQ_DEFAULT_TIMEOUT;
    if (gpuq__url_base(url, c->base, sizeof(c->base)) != 0)
        goto fail;
    if (token) {
        for (t = token; *t; t++)
            if ((unsigned char)*t < 0x20 || *t == 0x7f)
                goto fail;
        n = strlen("Authorization: Bearer ") + strlen(token) + 1;
        c->auth = malloc(n);
        if (!c->auth)
            goto fail;
        snprintf(c->auth, n, "Authorization: Bearer %s", token);
    }
    c->curl = curl_easy_init();
    if (!c->curl)
        goto fail;
    return c;
fail:
    free(c->auth);
    free(c);
    return NULL;
}

void
gpuq_client_free(struct gpuq_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->auth);
    free(c);
}

const char *
gpuq_client_url(const struct gpuq_client *c)
{
    return c->base;
}

const char *
gpuq_client_errmsg(const struct gpuq_client *c)
{
    return c->errmsg;
}

long
gpuq_client_set_timeout(struct gpuq_client *c, long seconds)
{
    long old = c->timeout_s;

    c->timeout_s = seconds > 0 ? seconds : 0;
    return old;
}

void
gpuq_client_set_abort(struct gpuq_client *c, gpuq_abort_fn fn, void *ud)
{
    c->abort_fn = fn;
    c->abort_ud = fn ? ud : NULL;
}

long
gpuq__client_poll_timeout(const struct gpuq_client *c, long wait_s)
{
    return c->timeout_s ? wait_s + c->timeout_s : 0;
}

static long
status_now(struct xfer *x)
{
    long status = 0;

    curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    long status;
    int rc;

    if (x->sse) {
        status = status_now(x);
        if (status >= 200 && status <= 299) {
            rc = gpuq__sse_feed(x->sse, p, n);
            if (rc < 0) {
                x->err = rc;
                return 0;
            }
            if (rc > 0) {
                x->ended = 1;
                return 0;
            }
            return n;
        }
    }
    rc = gpuq__buf_add(&x->body, p, n);
    if (rc != 0) {
        x->err = rc;
        return 0;
    }
    return n;
}

/* Picks Retry-After out of the reply headers. */
static size_t
on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    char num[32];
    size_t i, k = 0;

    if (n > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
        for (i = sizeof(name) - 1; i < n && k + 1 < sizeof(num); i++)
            if (p[i] >= '0' && p[i] <= '9')
                num[k++] = p[i];
            else if (k > 0)
                break;
        num[k] = '\0';
        if (k > 0)
            x->r->retry_after = strtol(num, NULL, 10);
    }
    return n;
}

static int
on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
            curl_off_t ultotal, curl_off_t ulnow)
{
    struct xfer *x = ud;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return x->c->abort_fn && x->c->abort_fn(x->c->abort_ud);
}

/* Maps a finished transfer to a GPUQ_E* code and the reason. */
static int
finish(struct gpuq_client *c, struct xfer *x, CURLcode rc)
{
    x->r->status = status_now(x);
    if (x->err == GPUQ_ENOMEM)
        return gpuq__client_fail(c, GPUQ_ENOMEM, "out of memory");
    if (x->err == GPUQ_ETOOBIG)
        return gpuq__client_fail(c, GPUQ_ETOOBIG, "reply body over %ld bytes",
                                 GPUQ_REPLY_MAX);
    if (x->ended)
        return 0;
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return gpuq__client_fail(c, GPUQ_ETIMEDOUT, "%s",
                                 c->curlerr[0] ? c->curlerr : "timed out");
    case CURLE_ABORTED_BY_CALLBACK:
        return gpuq__client_fail(c, GPUQ_EINTR, "interrupted");
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return gpuq__client_fail(c, GPUQ_EURL, "%s",
                                 c->curlerr[0] ? c->curlerr
                                               : curl_easy_strerror(rc));
    case CURLE_OUT_OF_MEMORY:
        return gpuq__client_fail(c, GPUQ_ENOMEM, "out of memory");
    default:
        return gpuq__client_fail(c, GPUQ_EIO, "%s",
                                 c->curlerr[0] ? c->curlerr
                                               : curl_easy_strerror(rc));
    }
}

/* Sets the handle up for one request; returns a GPUQ_E* code. */
static int
setup(struct gpuq_client *c, struct xfer *x, const struct gpuq__call *call,
      struct curl_slist **hdrs)
{
    char url[GPUQ_URL_MAX + GPUQ__PATH_MAX];
    CURL *h = c->curl;
    struct curl_slist *l;
    int n;

    n = snprintf(url, sizeof(url), "%s%s", c->base, call->path);
    if (n < 0 || (size_t)n >= sizeof(url))
        return gpuq__client_fail(c, GPUQ_EINVAL, "URL too long");
    curl_easy_reset(h);
    l = curl_slist_append(NULL, call->events ? "Accept: text/event-stream"
                                             : "Accept: application/json");
    *hdrs = l;
    if (l && call->body)
        l = curl_slist_append(l, "Content-Type: application/json");
    if (l) /* no "100 continue" round trip for big bodies */
        l = curl_slist_append(l, "Expect:");
    if (l && c->auth)
        l = curl_slist_append(l, c->auth);
    if (!l)
        return gpuq__client_fail(c, GPUQ_ENOMEM, "out of memory");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curlerr);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "libgpuq/" GPUQ_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)GPUQ_CONNECT_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, call->timeout_s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    if (call->idle_s > 0) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, call->idle_s);
    }
    if (call->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)strlen(call->body));
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body);
    }
    if (strcmp(call->method, "GET") == 0 && !call->body)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(call->method, "POST") != 0 || !call->body)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, call->method);
    return 0;
}

/* A method is a token of upper-case letters. */
static int
method_ok(const char *m)
{
    size_t i;

    if (!m || !m[0])
        return 0;
    for (i = 0; m[i]; i++)
        if (m[i] < 'A' || m[i] > 'Z' || i >= 16)
            return 0;
    return 1;
}

/* A path starts with '/' and holds no space or control character. */
static int
path_ok(const char *p)
{
    if (!p || p[0] != '/')
        return 0;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

int
gpuq__client_call(struct gpuq_client *c, const struct gpuq__call *call,
                  struct gpuq_response *out)
{
    struct xfer x;
    struct gpuq__sse sse;
    struct curl_slist *hdrs = NULL;
    long status;
    int err;

    gpuq_response_init(out);
    c->errmsg[0] = '\0';
    c->curlerr[0] = '\0';
    if (!method_ok(call->method))
        return gpuq__client_fail(c, GPUQ_EINVAL, "bad method");
    if (!path_ok(call->path))
        return gpuq__client_fail(c, GPUQ_EINVAL, "bad path");
    memset(&x, 0, sizeof(x));
    x.c = c;
    x.r = out;
    gpuq__buf_init(&x.body, GPUQ_REPLY_MAX);
    if (call->events) {
        gpuq__sse_init(&sse, call->events, call->events_ud);
        x.sse = &sse;
    }
    err = setup(c, &x, call, &hdrs);
    if (err == 0)
        err = finish(c, &x, curl_easy_perform(c->curl));
    curl_slist_free_all(hdrs);
    if (x.sse)
        gpuq__sse_close(x.sse);
    if (err != 0) {
        status = out->status;
        gpuq__buf_free(&x.body);
        gpuq_response_free(out);
        out->status = err == GPUQ_ETOOBIG ? status : 0;
        return err;
    }
    out->len = x.body.len;
    out->body = gpuq__buf_take(&x.body);
    if (out->status < 200 || out->status > 299) {
        if (gpuq__response_parse_error(out) != 0) {
            gpuq_response_free(out);
            return gpuq__client_fail(c, GPUQ_ENOMEM, "out of memory");
        }
        gpuq__response_describe(out, c->errmsg, sizeof(c->errmsg));
        return GPUQ_EHTTP;
    }
    if (call->want_json && out->len > 0) {
        json_t *v = json_loadb(out->body, out->len, JSON_DECODE_ANY, NULL);
        if (!v)
            return gpuq__client_fail(c, GPUQ_EPROTO,
                                     "malformed reply from %s%s: %.200s",
                                     c->base, call->path, out->body);
        json_decref(v);
    }
    return 0;
}

int
gpuq_client_request(struct gpuq_client *c, const char *method,
                    const char *path, const char *json_body,
                    struct gpuq_response *out)
{
    struct gpuq__call call;

    memset(&call, 0, sizeof(call));
    call.method = method;
    call.path = path;
    call.body = json_body;
    call.timeout_s = c->timeout_s;
    return gpuq__client_call(c, &call, out);
}
