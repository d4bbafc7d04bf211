/*
 * http.c - blocking HTTP over one reused libcurl easy handle.
 *
 * Each request resets the handle's options (curl_easy_reset keeps the
 * connection cache), so a CLI command that makes many calls, like a worker
 * heartbeating, talks over one keep-alive connection.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/err.h"

/* What the callbacks of one transfer share. */
struct xfer {
    struct gq_httpc *h;
    struct gq_httpc_resp *r;
    int interruptible;   /* honour *h->stop */
    size_t cap;          /* allocated bytes of r->body */
    int overflow;        /* the body went over GQ_HTTPC_REPLY_MAX */
    int nomem;           /* an allocation failed */
    /* Streams only. */
    gq_httpc_line_fn fn;
    void *ud;
    char *line;          /* partial line, GQ_HTTPC_LINE_MAX + 1 bytes */
    size_t linelen;
    int dropping;        /* the current line is over the max: skip it */
    int ended;           /* fn asked to stop */
};

int
gq_httpc_init(struct gq_httpc *h, const char *base_url)
{
    size_t n;

    memset(h, 0, sizeof(*h));
    h->connect_timeout_s = 10;
    n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(h->base))
        return GQ_EINVAL;
    if (strncmp(base_url, "http://", 7) != 0 &&
        strncmp(base_url, "https://", 8) != 0)
        return GQ_EINVAL;
    memcpy(h->base, base_url, n);
    h->base[n] = '\0';
    h->curl = curl_easy_init();
    if (!h->curl)
        return GQ_ENOMEM;
    return 0;
}

void
gq_httpc_close(struct gq_httpc *h)
{
    if (h->curl)
        curl_easy_cleanup(h->curl);
    h->curl = NULL;
}

void
gq_httpc_resp_free(struct gq_httpc_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
    r->status = 0;
    r->retry_after = -1;
}

/* Appends n bytes to the reply body, keeping it NUL-terminated. */
static int
body_append(struct xfer *x, const char *p, size_t n)
{
    struct gq_httpc_resp *r = x->r;
    size_t want = r->len + n + 1;
    char *nb;
    size_t ncap;

    if (r->len + n > (size_t)GQ_HTTPC_REPLY_MAX) {
        x->overflow = 1;
        return -1;
    }
    if (want > x->cap) {
        ncap = x->cap ? x->cap : 4096;
        while (ncap < want)
            ncap *= 2;
        nb = realloc(r->body, ncap);
        if (!nb) {
            x->nomem = 1;
            return -1;
        }
        r->body = nb;
        x->cap = ncap;
    }
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;

    if (body_append(x, p, n) < 0)
        return 0;
    return n;
}

/* Feeds the stream's bytes to the line callback, one line at a time. */
static size_t
on_stream(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb, i;
    long status = 0;

    curl_easy_getinfo(x->h->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        return on_body(p, size, nmemb, ud);
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            if (!x->dropping) {
                if (x->linelen > 0 && x->line[x->linelen - 1] == '\r')
                    x->linelen--;
                x->line[x->linelen] = '\0';
                if (x->fn(x->line, x->linelen, x->ud) != 0) {
                    x->ended = 1;
                    return 0;
                }
            }
            x->linelen = 0;
            x->dropping = 0;
        } else if (!x->dropping) {
            if (x->linelen == GQ_HTTPC_LINE_MAX)
                x->dropping = 1;
            else
                x->line[x->linelen++] = c;
        }
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
    return x->interruptible && x->h->stop && *x->h->stop;
}

/* Sets up everything but the write callback; returns a GQ_E* code. */
static int
setup(struct gq_httpc *h, struct xfer *x, const char *method,
      const char *path, const char *body, long timeout_s,
      const char *accept, struct curl_slist **hdrs)
{
    char url[GQ_HTTPC_URL_MAX * 2];
    CURL *c = h->curl;
    int n;

    n = snprintf(url, sizeof(url), "%s%s", h->base, path);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        snprintf(h->errbuf, sizeof(h->errbuf), "URL too long");
        return GQ_EINVAL;
    }
    curl_easy_reset(c);
    h->errbuf[0] = '\0';
    *hdrs = curl_slist_append(NULL, accept);
    if (*hdrs && body)
        *hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
    if (*hdrs) /* no "100 continue" round trip for big bodies */
        *hdrs = curl_slist_append(*hdrs, "Expect:");
    if (!*hdrs) {
        snprintf(h->errbuf, sizeof(h->errbuf), "out of memory");
        return GQ_ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "gpuq");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, h->connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)strlen(body));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "GET") == 0 && !body)
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0 || !body)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    return 0;
}

/* Maps a finished transfer to a GQ_E* code. */
static int
finish(struct gq_httpc *h, struct xfer *x, CURLcode rc)
{
    long status = 0;

    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    x->r->status = status;
    if (x->nomem) {
        snprintf(h->errbuf, sizeof(h->errbuf), "out of memory");
        return GQ_ENOMEM;
    }
    if (x->overflow) {
        snprintf(h->errbuf, sizeof(h->errbuf),
                 "reply body over %ld bytes", GQ_HTTPC_REPLY_MAX);
        return GQ_ETOOBIG;
    }
    if (x->ended)
        return 0;
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        if (!h->errbuf[0])
            snprintf(h->errbuf, sizeof(h->errbuf), "timed out");
        return GQ_ETIMEDOUT;
    case CURLE_ABORTED_BY_CALLBACK:
        snprintf(h->errbuf, sizeof(h->errbuf), "interrupted");
        return GQ_EIO;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        if (!h->errbuf[0])
            snprintf(h->errbuf, sizeof(h->errbuf), "%s",
                     curl_easy_strerror(rc));
        return GQ_EINVAL;
    case CURLE_OUT_OF_MEMORY:
        snprintf(h->errbuf, sizeof(h->errbuf), "out of memory");
        return GQ_ENOMEM;
    default:
        if (!h->errbuf[0])
            snprintf(h->errbuf, sizeof(h->errbuf), "%s",
                     curl_easy_strerror(rc));
        return GQ_EIO;
    }
}

int
gq_httpc_request(struct gq_httpc *h, const char *method, const char *path,
                 const char *body, long timeout_s, int interruptible,
                 struct gq_httpc_resp *r)
{
    struct xfer x;
    struct curl_slist *hdrs = NULL;
    int err;

    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
    memset(&x, 0, sizeof(x));
    x.h = h;
    x.r = r;
    x.interruptible = interruptible;
    err = setup(h, &x, method, path, body, timeout_s,
                "Accept: application/json", &hdrs);
    if (err == 0) {
        curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &x);
        err = finish(h, &x, curl_easy_perform(h->curl));
    }
    curl_slist_free_all(hdrs);
    if (err != 0) {
        long status = r->status;
        gq_httpc_resp_free(r);
        r->status = err == GQ_ETOOBIG ? status : 0;
    }
    return err;
}

int
gq_httpc_stream(struct gq_httpc *h, const char *path, long idle_s,
                gq_httpc_line_fn fn, void *ud, struct gq_httpc_resp *r)
{
    struct xfer x;
    struct curl_slist *hdrs = NULL;
    int err;

    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
    memset(&x, 0, sizeof(x));
    x.h = h;
    x.r = r;
    x.interruptible = 1;
    x.fn = fn;
    x.ud = ud;
    x.line = malloc(GQ_HTTPC_LINE_MAX + 1);
    if (!x.line) {
        snprintf(h->errbuf, sizeof(h->errbuf), "out of memory");
        return GQ_ENOMEM;
    }
    err = setup(h, &x, "GET", path, NULL, 0, "Accept: text/event-stream",
                &hdrs);
    if (err == 0) {
        CURL *c = h->curl;
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
        if (idle_s > 0) {
            curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
            curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, idle_s);
        }
        err = finish(h, &x, curl_easy_perform(c));
    }
    curl_slist_free_all(hdrs);
    free(x.line);
    if (err != 0) {
        gq_httpc_resp_free(r);
    }
    return err;
}
