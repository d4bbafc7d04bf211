/*
 * httpc.c - asynchronous HTTP calls on the daemon's libevent loop (see
 * httpc.h), after curl's docs/examples/multi-event.c and hiperfifo.c.
 *
 * libcurl tells us which sockets to watch (sock_cb) and when to wake it
 * (timer_cb); libevent calls back, and we hand the event to
 * curl_multi_socket_action.  After every socket_action we settle():
 * tear down calls cancelled from inside libcurl's callbacks, add calls
 * started from inside them, then drain curl_multi_info_read and complete
 * every finished transfer - libcurl does not tell us a transfer ended any
 * other way, so skipping that after any one socket_action strands calls.
 *
 * libcurl forbids curl_multi_add_handle / _remove_handle while it is
 * running one of its callbacks (CURLM_RECURSIVE_API_CALL), and the data
 * callback runs inside the write callback; in_curl marks that window, and
 * start/cancel inside it are deferred to settle().
 */
#include <math.h>             /* isfinite (a macro: no -lm) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "../core/assert.h"
#include "../core/err.h"
#include "httpc.h"


/* A socket libcurl asked us to watch; its socketp. */
struct gq_sock {
    struct gq_httpc *h;
    curl_socket_t fd;
    struct event *ev;             /* EV_PERSIST, re-assigned on change */
    struct gq_sock *prev, *next;  /* in h->socks */
};

enum call_state {
    CALL_PENDING,                 /* started inside libcurl; not added yet */
    CALL_ACTIVE,                  /* its easy handle is in the multi */
    CALL_DONE,                    /* its done callback is running */
};

struct gq_call {
    struct gq_httpc *h;
    CURL *easy;
    struct curl_slist *hdrs;      /* owned; freed with the call */
    curl_mime *mime;              /* owned; freed with the call */
    gq_call_data_fn data;         /* NULL = buffer the body */
    gq_call_done_fn done;
    void *ud;
    enum call_state state;
    int cancelled;                /* no more callbacks; free when settled */
    int aborted;                  /* data callback returned nonzero */
    int toobig;                   /* 2xx body went over max */
    int truncated;                /* non-2xx body cut at max */
    char *buf;                    /* buffered body, NUL-terminated */
    size_t len, cap, max;
    double t0;                    /* monotonic seconds at start */
    char errbuf[CURL_ERROR_SIZE];
    struct gq_call *prev, *next;  /* in h->calls */
    struct gq_call *qnext;        /* in h->pend or h->doomed */
};

struct gq_httpc {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;          /* libcurl's one timeout */
    struct gq_call *calls;        /* every call not yet freed */
    struct gq_call *pend;         /* CALL_PENDING, to add in settle() */
    struct gq_call *doomed;       /* cancelled inside libcurl */
    struct gq_sock *socks;        /* every watched socket */
    int active;                   /* started, not finished or cancelled */
    int in_curl;                  /* inside curl_multi_socket_action */
    int in_done;                  /* inside a done callback */
};

const char *
gq_call_kind_str(enum gq_call_kind k)
{
    switch (k) {
    case GQ_CALL_OK:
        return "ok";
    case GQ_CALL_RETRYABLE:
        return "retryable";
    case GQ_CALL_FATAL:
        return "fatal";
    }
    return "unknown";
}

static double
mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- sockets and the timer: libcurl <-> libevent --- */

static void settle(struct gq_httpc *h);

static void
action(struct gq_httpc *h, curl_socket_t fd, int flags)
{
    int running;
    h->in_curl++;
    /* Errors here are multi-level (bad handle, out of memory); transfers
     * that fail report through info_read, which settle() drains. */
    (void)curl_multi_socket_action(h->multi, fd, flags, &running);
    h->in_curl--;
    settle(h);
}

static void
sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct gq_sock *s = arg;  /* may be freed during action(): not used */
    int flags = 0;
    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    action(s->h, fd, flags);
}

static void
timer_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static void
sock_free(struct gq_sock *s)
{
    struct gq_httpc *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    event_free(s->ev);        /* deletes it first */
    free(s);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what, or stop watching it. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct gq_httpc *h = userp;
    struct gq_sock *s = socketp;
    short ev = EV_PERSIST;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        /* Called before libcurl closes fd, so libevent never holds a
         * closed descriptor. */
        if (s)
            sock_free(s);
        return 0;
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= EV_READ;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= EV_WRITE;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->h = h;
        s->fd = fd;
        s->ev = event_new(h->base, fd, ev, sock_event, s);
        if (!s->ev) {
            free(s);
            return -1;
        }
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    } else {
        /* Not pending after event_del, so event_assign is allowed, even
         * from inside this event's own callback. */
        event_del(s->ev);
        event_assign(s->ev, h->base, fd, ev, sock_event, s);
    }
    return event_add(s->ev, NULL) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: wake libcurl in ms milliseconds (-1 = never).
 * Never calls socket_action itself: that would recurse into libcurl. */
static int
timer_cb(CURLM *multi, long ms, void *userp)
{
    struct gq_httpc *h = userp;
    (void)multi;
    if (ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

/* --- calls --- */

static void
call_unlink(struct gq_call *c)
{
    struct gq_httpc *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

/* Frees c; its easy handle must be out of the multi. */
static void
call_free(struct gq_call *c)
{
    call_unlink(c);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->hdrs);
    curl_mime_free(c->mime);
    free(c->buf);
    free(c);
}

/* Keeps body bytes, at most c->max; 0 when they did not all fit. */
static int
buf_add(struct gq_call *c, const char *p, size_t n)
{
    int fits = n <= c->max - c->len;
    if (!fits)
        n = c->max - c->len;
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        if (cap > c->max + 1)
            cap = c->max + 1;
        char *b = realloc(c->buf, cap);
        if (!b)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
    c->buf[c->len] = '\0';
    return fits;
}

/* CURLOPT_WRITEFUNCTION: stream a 2xx body to data, else buffer it. */
static size_t
write_cb(char *p, size_t size, size_t nmemb, void *userp)
{
    struct gq_call *c = userp;
    size_t n = size * nmemb;
    long status = 0;

    if (c->cancelled)
        return CURL_WRITEFUNC_ERROR;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    int ok = status >= 200 && status < 300;
    if (c->data && ok) {
        if (c->data(c->ud, p, n) != 0) {
            c->aborted = 1;
            return CURL_WRITEFUNC_ERROR;
        }
        /* gq_call_cancel from inside data. */
        return c->cancelled ? CURL_WRITEFUNC_ERROR : n;
    }
    int r = buf_add(c, p, n);
    if (r < 0)
        return CURL_WRITEFUNC_ERROR;      /* CURLE_WRITE_ERROR: no memory */
    if (r == 0) {
        /* A big 2xx body is an error; a big error body is only cut. */
        if (ok)
            c->toobig = 1;
        else
            c->truncated = 1;
        return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

static int
curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_AGAIN:
    case CURLE_OUT_OF_MEMORY:
        return 1;
    default:
        return 0;
    }
}

static int
status_kind(long status)
{
    if (status >= 200 && status < 300)
        return GQ_CALL_OK;
    if (status == 408 || status == 429 || (status >= 500 && status < 600))
        return GQ_CALL_RETRYABLE;
    return GQ_CALL_FATAL;
}

/* Fills r->kind and r->err for c ending with rc and status. */
static void
classify(struct gq_call *c, CURLcode rc, long status,
         struct gq_call_result *r)
{
    r->err[0] = '\0';
    if (c->aborted) {
        r->kind = GQ_CALL_FATAL;
        snprintf(r->err, sizeof r->err, "aborted by caller");
        return;
    }
    if (c->toobig) {
        r->kind = GQ_CALL_FATAL;
        snprintf(r->err, sizeof r->err,
                 "response too large: more than %zu bytes", c->max);
        return;
    }
    if (rc == CURLE_OK || (c->truncated && rc == CURLE_WRITE_ERROR)) {
        r->kind = status_kind(status);
        if (r->kind == GQ_CALL_OK)
            return;
        /* "HTTP 500: <start of the body>" with control bytes blanked. */
        int n = snprintf(r->err, sizeof r->err, "HTTP %ld%s", status,
                         c->truncated ? " (body truncated)" : "");
        if (c->len > 0 && n > 0 && (size_t)n + 3 < sizeof r->err) {
            size_t i, o = (size_t)n;
            r->err[o++] = ':';
            r->err[o++] = ' ';
            for (i = 0; i < c->len && o + 1 < sizeof r->err && i < 160; i++) {
                unsigned char ch = (unsigned char)c->buf[i];
                r->err[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
            }
            r->err[o] = '\0';
        }
        return;
    }
    r->kind = curl_retryable(rc) ? GQ_CALL_RETRYABLE : GQ_CALL_FATAL;
    const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(r->err, sizeof r->err, "timeout: %.230s", detail);
    else if (rc == CURLE_COULDNT_CONNECT)
        snprintf(r->err, sizeof r->err, "connect failed: %.230s", detail);
    else
        snprintf(r->err, sizeof r->err, "%.60s: %.180s", curl_easy_strerror(rc),
                 detail);
}

/* Completes c (out of the multi or never added): done, then free. */
static void
call_finish(struct gq_call *c, CURLcode rc)
{
    struct gq_httpc *h = c->h;
    struct gq_call_result r;
    long status = 0;
    char *ctype = NULL, *ct = NULL;

    memset(&r, 0, sizeof r);
    if (c->easy) {
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
    }
    if (ct)
        ctype = strdup(ct);   /* NULL on no memory: only the type is lost */
    r.status = (int)status;
    r.curl_code = (int)rc;
    classify(c, rc, status, &r);
    r.body = c->buf ? c->buf : "";
    r.body_len = c->len;
    r.content_type = ctype;
    r.elapsed = mono_now() - c->t0;

    c->state = CALL_DONE;
    h->active--;
    h->in_done++;
    c->done(c->ud, &r);
    h->in_done--;
    free(ctype);
    call_free(c);
}

/* Adds c's easy handle; 0 or a CURLMcode. */
static int
call_add(struct gq_call *c)
{
    CURLMcode mc = curl_multi_add_handle(c->h->multi, c->easy);
    if (mc == CURLM_OK)
        c->state = CALL_ACTIVE;
    return (int)mc;
}

static void
settle(struct gq_httpc *h)
{
    struct gq_call *c;
    CURLMsg *m;
    int left;

    GQ_ASSERT(h->in_curl == 0);
    while ((c = h->doomed) != NULL) {
        h->doomed = c->qnext;
        curl_multi_remove_handle(h->multi, c->easy);
        call_free(c);
    }
    while ((c = h->pend) != NULL) {
        h->pend = c->qnext;
        int mc = call_add(c);
        if (mc != CURLM_OK) {
            snprintf(c->errbuf, sizeof c->errbuf, "cannot start: %s",
                     curl_multi_strerror((CURLMcode)mc));
            call_finish(c, CURLE_FAILED_INIT);
        }
    }
    for (;;) {
        m = curl_multi_info_read(h->multi, &left);
        if (!m)
            break;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;   /* m dies with remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        c = (struct gq_call *)(void *)priv;
        curl_multi_remove_handle(h->multi, easy);
        if (c->cancelled)
            call_free(c);     /* cancelled inside libcurl, then ended */
        else
            call_finish(c, rc);
    }
}

struct gq_httpc *
gq_httpc_new(struct event_base *base)
{
    struct gq_httpc *h;

    if (!base || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    h = calloc(1, sizeof *h);
    if (!h)
        goto fail;
    h->base = base;
    h->multi = curl_multi_init();
    h->timer = evtimer_new(base, timer_event, h);
    if (!h->multi || !h->timer)
        goto fail;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
fail:
    if (h) {
        if (h->multi)
            curl_multi_cleanup(h->multi);
        if (h->timer)
            event_free(h->timer);
        free(h);
    }
    curl_global_cleanup();
    return NULL;
}

void
gq_httpc_free(struct gq_httpc *h)
{
    if (!h)
        return;
    GQ_ASSERT(h->in_curl == 0 && h->in_done == 0);
    while (h->calls) {
        struct gq_call *c = h->calls;
        if (c->state == CALL_ACTIVE)
            curl_multi_remove_handle(h->multi, c->easy);
        call_free(c);
    }
    /* Closes the cached connections; libcurl may still call sock_cb and
     * timer_cb from here, so both stay valid until it returns. */
    curl_multi_cleanup(h->multi);
    while (h->socks)
        sock_free(h->socks);
    event_free(h->timer);
    free(h);
    curl_global_cleanup();
}

int
gq_httpc_active(const struct gq_httpc *h)
{
    return h ? h->active : 0;
}

/* A method is an HTTP token: letters only, so nothing can be smuggled
 * into the request line. */
static int
method_ok(const char *m)
{
    if (!*m || strlen(m) > 16)
        return 0;
    for (; *m; m++)
        if (!((*m >= 'A' && *m <= 'Z') || (*m >= 'a' && *m <= 'z')))
            return 0;
    return 1;
}

static int
has_header(const char *const *hv, const char *name)
{
    size_t n = strlen(name);
    for (; hv && *hv; hv++)
        if (strncasecmp(*hv, name, n) == 0 && (*hv)[n] == ':')
            return 1;
    return 0;
}

static int
opts_ok(const struct gq_call_opts *o)
{
    int i;
    CURLU *u;

    if (!o->url || !*o->url)
        return 0;
    if (o->method && !method_ok(o->method))
        return 0;
    if (!isfinite(o->timeout) || o->timeout < 0 ||
        !isfinite(o->connect_timeout) || o->connect_timeout < 0)
        return 0;
    if ((!o->body && o->body_len > 0) || o->nparts < 0 ||
        (o->nparts > 0 && !o->parts) || (o->body && o->nparts > 0))
        return 0;
    for (i = 0; i < o->nparts; i++)
        if (!o->parts[i].name ||
            (!o->parts[i].data && o->parts[i].len > 0))
            return 0;
    for (const char *const *hv = o->headers; hv && *hv; hv++)
        if (strpbrk(*hv, "\r\n") || !strchr(*hv, ':'))
            return 0;
    /* The URL must parse with a scheme: libcurl alone would guess http
     * for "host/path". */
    u = curl_url();
    if (!u)
        return 0;
    i = curl_url_set(u, CURLUPART_URL, o->url, 0) == CURLUE_OK;
    curl_url_cleanup(u);
    return i;
}

/* Seconds to whole milliseconds, rounded up (no libm needed). */
static long
secs_to_ms(double s)
{
    double ms = s * 1000;
    if (ms > 1e9)
        return 1000000000L;
    long l = (long)ms;
    return (double)l < ms ? l + 1 : l;
}

/* Sets c's easy options from o; 0 or GQ_ENOMEM / GQ_EINVAL. */
static int
call_setup(struct gq_call *c, const struct gq_call_opts *o)
{
    CURL *e = c->easy;
    int body = o->body != NULL, mp = o->nparts > 0;
    const char *m = o->method;
    struct curl_slist *l;
    int rc = 0;
    double ct = o->connect_timeout > 0 ? o->connect_timeout
                                       : GQ_HTTPC_CONNECT_TIMEOUT;

#define SET(opt, val)                                                       \
    do {                                                                    \
        if (curl_easy_setopt(e, opt, val) != CURLE_OK)                      \
            rc = GQ_EINVAL;                                                 \
    } while (0)
    SET(CURLOPT_URL, o->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);   /* notices a dead peer mid-stream */
    SET(CURLOPT_PRIVATE, (void *)c);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_CONNECTTIMEOUT_MS, secs_to_ms(ct));
    if (o->timeout > 0)
        SET(CURLOPT_TIMEOUT_MS, secs_to_ms(o->timeout));

    if (mp) {
        c->mime = curl_mime_init(e);
        if (!c->mime)
            return GQ_ENOMEM;
        for (int i = 0; i < o->nparts; i++) {
            const struct gq_part *p = &o->parts[i];
            curl_mimepart *mpart = curl_mime_addpart(c->mime);
            if (!mpart ||
                curl_mime_name(mpart, p->name) != CURLE_OK ||
                curl_mime_data(mpart, p->len ? p->data : "", p->len) !=
                    CURLE_OK ||
                (p->filename &&
                 curl_mime_filename(mpart, p->filename) != CURLE_OK) ||
                (p->type && curl_mime_type(mpart, p->type) != CURLE_OK))
                return GQ_ENOMEM;
        }
        SET(CURLOPT_MIMEPOST, c->mime);
    } else if (body) {
        /* Copied: the caller's buffer is free after gq_call_start. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        SET(CURLOPT_COPYPOSTFIELDS, (const char *)o->body);
    }
    if (!m)
        m = body || mp ? "POST" : "GET";
    if (strcmp(m, "GET") == 0 && !body && !mp) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(m, "HEAD") == 0 && !body && !mp) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "POST") == 0) {
        if (!body && !mp) {
            SET(CURLOPT_POSTFIELDSIZE, 0L);
            SET(CURLOPT_POSTFIELDS, "");
        }
    } else {
        SET(CURLOPT_CUSTOMREQUEST, m);
    }
#undef SET

    for (const char *const *hv = o->headers; hv && *hv; hv++) {
        l = curl_slist_append(c->hdrs, *hv);
        if (!l)
            return GQ_ENOMEM;
        c->hdrs = l;
    }
    /* No "Expect: 100-continue" round trip (or 1 s stall with servers
     * that ignore it) before a large body. */
    if (!has_header(o->headers, "Expect")) {
        l = curl_slist_append(c->hdrs, "Expect:");
        if (!l)
            return GQ_ENOMEM;
        c->hdrs = l;
    }
    if (body && !has_header(o->headers, "Content-Type")) {
        l = curl_slist_append(c->hdrs, "Content-Type: application/json");
        if (!l)
            return GQ_ENOMEM;
        c->hdrs = l;
    }
    if (curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs) != CURLE_OK)
        rc = GQ_EINVAL;
    return rc;
}

struct gq_call *
gq_call_start(struct gq_httpc *h, const struct gq_call_opts *o,
              gq_call_data_fn data, gq_call_done_fn done, void *ud)
{
    struct gq_call *c;

    if (!h || !o || !done || !opts_ok(o))
        return NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->h = h;
    c->data = data;
    c->done = done;
    c->ud = ud;
    c->t0 = mono_now();
    c->max = o->max_response && o->max_response < GQ_HTTPC_MAX_RESPONSE
                 ? o->max_response
                 : GQ_HTTPC_MAX_RESPONSE;
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    c->easy = curl_easy_init();
    if (!c->easy || call_setup(c, o) != 0)
        goto fail;
    if (h->in_curl) {
        /* Added by settle() once libcurl returns. */
        c->state = CALL_PENDING;
        c->qnext = h->pend;
        h->pend = c;
    } else if (call_add(c) != CURLM_OK) {
        goto fail;
    }
    h->active++;
    return c;
fail:
    call_free(c);
    return NULL;
}

void
gq_call_cancel(struct gq_call *c)
{
    struct gq_call **pp;
    struct gq_httpc *h;

    if (!c || c->cancelled || c->state == CALL_DONE)
        return;
    h = c->h;
    c->cancelled = 1;
    h->active--;
    if (c->state == CALL_PENDING) {
        for (pp = &h->pend; *pp != c; pp = &(*pp)->qnext)
            GQ_ASSERT(*pp);
        *pp = c->qnext;
        call_free(c);
    } else if (h->in_curl) {
        /* write_cb now refuses its data; settle() removes it. */
        c->qnext = h->doomed;
        h->doomed = c;
    } else {
        curl_multi_remove_handle(h->multi, c->easy);
        call_free(c);
    }
}
