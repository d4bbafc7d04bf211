/*
 * test_httpc.c - the asynchronous HTTP client (src/exec/httpc.c) against
 * a scripted fake server, and the thread pool (src/exec/workq.c).
 *
 * The fake server runs in threads of this process: one accept thread on
 * 127.0.0.1 port 0 and one thread per connection, speaking just enough
 * HTTP/1.1 (keep-alive, Content-Length request bodies).  The path picks
 * the script:
 *
 *   /json?delay=MS       200 JSON with Content-Length, after MS ms
 *   /echo                200 echoing the request body and Content-Type
 *   /upload              200; the whole request is recorded
 *   /stream?n=N&ms=MS    200 chunked, N pieces "piece-I\n" MS ms apart
 *   /500, /404           the status with a short text body
 *   /big?n=N, /big500?n=N  200 / 500 with N bytes
 *   /reset               reads the request, then closes with RST
 *   /hang                reads the request, never answers
 *
 * /stream and /hang count, in eofs, the times the client hung up before
 * they finished - how the tests see a cancel reach the wire.  /echo and
 * /upload keep the request for the tests to inspect.
 *
 * Everything targets 127.0.0.1; every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "core/err.h"
#include "exec/httpc.h"
#include "exec/workq.h"

/* --- the fake server --- */

struct srv {
    int lfd;
    int port;
    int stop_pipe[2];
    pthread_t thr;
    atomic_int stopping;
    atomic_int accepted;          /* connections accepted */
    atomic_int live;              /* connection threads running */
    atomic_int eofs;              /* client hung up mid-script */
    pthread_mutex_t mu;
    char *last;                   /* last /echo or /upload request */
    size_t last_len;
};

static struct srv S;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int
send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
reply(int fd, int status, const char *ctype, const void *body, size_t len)
{
    char h[256];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, ctype, len);
    if (send_all(fd, h, (size_t)n) < 0)
        return -1;
    return len ? send_all(fd, body, len) : 0;
}

/* Waits up to ms for the peer to hang up; 1 if it did. */
static int
peer_gone(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    double end = now_s() + ms / 1000.0;
    for (;;) {
        int left = (int)((end - now_s()) * 1000);
        if (left <= 0)
            return 0;
        if (poll(&p, 1, left < 100 ? left : 100) > 0) {
            char c;
            ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                return 1;
            sleep_ms(5);          /* bytes, not EOF: keep waiting */
        }
        if (atomic_load(&S.stopping))
            return 1;
    }
}

static int
qint(const char *target, const char *key, int def)
{
    const char *q = strchr(target, '?');
    size_t kl = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, kl) == 0 && q[kl] == '=')
            return atoi(q + kl + 1);
        q = strchr(q, '&');
    }
    return def;
}

static const char *
find_header(const char *hdrs, size_t hl, const char *name)
{
    size_t nl = strlen(name);
    const char *p = hdrs, *end = hdrs + hl;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 &&
            p[nl] == ':')
            return p + nl + 1;
        p = eol + 2;
    }
    return NULL;
}

static void
record(const char *req, size_t len)
{
    pthread_mutex_lock(&S.mu);
    free(S.last);
    S.last = malloc(len + 1);
    if (S.last) {
        memcpy(S.last, req, len);
        S.last[len] = '\0';
        S.last_len = len;
    }
    pthread_mutex_unlock(&S.mu);
}

/* Runs the script for one request; 0 to keep the connection, 1 to close
 * it. */
static int
serve(int fd, const char *req, size_t hl, size_t len)
{
    char method[16], target[256];
    if (sscanf(req, "%15s %255s", method, target) != 2)
        return 1;
    const char *path = target;
    size_t plen = strcspn(target, "?");

#define IS(p) (plen == strlen(p) && strncmp(path, p, plen) == 0)
    if (IS("/json")) {
        int d = qint(target, "delay", 0);
        if (d > 0)
            sleep_ms(d);
        static const char b[] = "{\"ok\":true,\"n\":42}";
        return reply(fd, 200, "application/json", b, sizeof b - 1) < 0;
    }
    if (IS("/echo") || IS("/upload")) {
        record(req, len);
        if (IS("/upload")) {
            char b[64];
            int n = snprintf(b, sizeof b, "{\"got\":%zu}", len - hl);
            return reply(fd, 200, "application/json", b, (size_t)n) < 0;
        }
        const char *ct = find_header(req, hl, "Content-Type");
        char ctype[128] = "text/plain";
        if (ct) {
            while (*ct == ' ')
                ct++;
            snprintf(ctype, sizeof ctype, "%.*s", (int)strcspn(ct, "\r"),
                     ct);
        }
        return reply(fd, 200, ctype, req + hl, len - hl) < 0;
    }
    if (IS("/stream")) {
        int n = qint(target, "n", 3), ms = qint(target, "ms", 10);
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                                "text/plain\r\nTransfer-Encoding: "
                                "chunked\r\n\r\n";
        if (send_all(fd, h, sizeof h - 1) < 0)
            return 1;
        for (int i = 0; i < n; i++) {
            char piece[32], chunk[64];
            if (i > 0 && peer_gone(fd, ms)) {
                atomic_fetch_add(&S.eofs, 1);
                return 1;
            }
            int pl = snprintf(piece, sizeof piece, "piece-%d\n", i);
            int cl = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", pl,
                              piece);
            if (send_all(fd, chunk, (size_t)cl) < 0) {
                atomic_fetch_add(&S.eofs, 1);
                return 1;
            }
        }
        return send_all(fd, "0\r\n\r\n", 5) < 0;
    }
    if (IS("/500")) {
        static const char b[] = "boom: backend\nexploded";
        return reply(fd, 500, "text/plain", b, sizeof b - 1) < 0;
    }
    if (IS("/404")) {
        static const char b[] = "no such thing";
        return reply(fd, 404, "text/plain", b, sizeof b - 1) < 0;
    }
    if (IS("/big") || IS("/big500")) {
        size_t n = (size_t)qint(target, "n", 1000);
        char *b = malloc(n);
        if (!b)
            return 1;
        memset(b, 'x', n);
        int r = reply(fd, IS("/big") ? 200 : 500, "text/plain", b, n);
        free(b);
        return r < 0;
    }
    if (IS("/reset")) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        return 1;                 /* the close sends RST */
    }
    if (IS("/hang")) {
        if (peer_gone(fd, 5000))
            atomic_fetch_add(&S.eofs, 1);
        return 1;
    }
#undef IS
    return reply(fd, 400, "text/plain", "?", 1) < 0;
}

static void *
conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);

    while (b && !atomic_load(&S.stopping)) {
        /* One request: the head, then Content-Length bytes. */
        char *e = NULL;
        size_t hl = 0, need = 0;
        for (;;) {
            if (!e) {
                e = memmem(b, len, "\r\n\r\n", 4);
                if (e) {
                    hl = (size_t)(e - b) + 4;
                    const char *cl = find_header(b, hl, "Content-Length");
                    need = hl + (cl ? strtoul(cl, NULL, 10) : 0);
                }
            }
            if (e && len >= need)
                break;
            if (len == cap) {
                if (cap >= (8u << 20))
                    goto out;
                char *nb = realloc(b, cap * 2);
                if (!nb)
                    goto out;
                b = nb;
                cap *= 2;
                e = NULL;         /* re-find: b moved */
            }
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 100) <= 0) {
                if (atomic_load(&S.stopping))
                    goto out;
                continue;
            }
            ssize_t r = recv(fd, b + len, cap - len, 0);
            if (r <= 0)
                goto out;
            len += (size_t)r;
        }
        if (serve(fd, b, hl, need))
            break;
        memmove(b, b + need, len - need);
        len -= need;
    }
out:
    free(b);
    close(fd);
    atomic_fetch_sub(&S.live, 1);
    return NULL;
}

static void *
srv_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{S.lfd, POLLIN, 0}, {S.stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents)
            break;
        int fd = accept(S.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add(&S.accepted, 1);
        atomic_fetch_add(&S.live, 1);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, conn_main, (void *)(intptr_t)fd) != 0) {
            atomic_fetch_sub(&S.live, 1);
            close(fd);
        }
        pthread_attr_destroy(&at);
    }
    return NULL;
}

static int
srv_start(void)
{
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    int one = 1;

    S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (S.lfd < 0)
        return -1;
    setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(S.lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(S.lfd, 128) < 0 ||
        getsockname(S.lfd, (struct sockaddr *)&a, &al) < 0 ||
        pipe(S.stop_pipe) < 0)
        return -1;
    S.port = ntohs(a.sin_port);
    pthread_mutex_init(&S.mu, NULL);
    return pthread_create(&S.thr, NULL, srv_main, NULL) == 0 ? 0 : -1;
}

static void
srv_stop(void)
{
    atomic_store(&S.stopping, 1);
    if (write(S.stop_pipe[1], "x", 1) != 1)
        return;
    pthread_join(S.thr, NULL);
    for (int i = 0; i < 300 && atomic_load(&S.live) > 0; i++)
        sleep_ms(10);
    close(S.lfd);
    close(S.stop_pipe[0]);
    close(S.stop_pipe[1]);
    free(S.last);
    S.last = NULL;
}

/* A copy of the last recorded request (caller frees), and its length. */
static char *
srv_last(size_t *len)
{
    pthread_mutex_lock(&S.mu);
    char *c = NULL;
    if (S.last) {
        c = malloc(S.last_len + 1);
        memcpy(c, S.last, S.last_len + 1);
        *len = S.last_len;
    }
    pthread_mutex_unlock(&S.mu);
    return c;
}

/* A port nothing listens on: bound, read back, closed. */
static int
refused_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static void
url(char *buf, size_t n, const char *path)
{
    snprintf(buf, n, "http://127.0.0.1:%d%s", S.port, path);
}

/* --- the client side --- */

/* What one call saw; the callbacks fill it. */
struct rec {
    int ndone, ndata, data_after_done;
    struct gq_call_result r;      /* copied; r.body/content_type unused */
    char ctype[128];
    char *body;                   /* copy of r.body, NUL-terminated */
    size_t body_len;
    char *data;                   /* streamed bytes */
    size_t data_len;
    int abort_at;                 /* data returns 1 at this piece; 0 never */
    int cancel_at;                /* data cancels self at this piece */
    struct gq_call *self;
    struct gq_httpc *h;           /* for calls started from callbacks */
    const char *chain_url;        /* start this from data / done */
    struct rec *chain;            /* ... recording into this */
    int cancel_self_in_done;
    pthread_t done_thread;
};

static void rec_done(void *ud, const struct gq_call_result *r);
static int rec_data(void *ud, const char *buf, size_t len);

static void
start_chain(struct rec *x)
{
    struct gq_call_opts o = {.url = x->chain_url, .timeout = 5};
    struct gq_call *c = gq_call_start(x->h, &o, NULL, rec_done, x->chain);
    x->chain_url = NULL;
    if (c)
        x->chain->self = c;
}

static int
rec_data(void *ud, const char *buf, size_t len)
{
    struct rec *x = ud;
    if (x->ndone)
        x->data_after_done = 1;
    x->ndata++;
    char *d = realloc(x->data, x->data_len + len + 1);
    if (!d)
        return 1;
    x->data = d;
    memcpy(x->data + x->data_len, buf, len);
    x->data_len += len;
    x->data[x->data_len] = '\0';
    if (x->chain_url)
        start_chain(x);           /* gq_call_start inside libcurl */
    if (x->cancel_at && x->ndata == x->cancel_at)
        gq_call_cancel(x->self);
    return x->abort_at && x->ndata >= x->abort_at;
}

static void
rec_done(void *ud, const struct gq_call_result *r)
{
    struct rec *x = ud;
    x->ndone++;
    x->r = *r;
    x->r.body = NULL;
    x->r.content_type = NULL;
    snprintf(x->ctype, sizeof x->ctype, "%s",
             r->content_type ? r->content_type : "");
    x->body = malloc(r->body_len + 1);
    assert_non_null(x->body);
    memcpy(x->body, r->body, r->body_len + 1);  /* NUL included */
    x->body_len = r->body_len;
    x->done_thread = pthread_self();
    if (x->cancel_self_in_done)
        gq_call_cancel(x->self);  /* a no-op by contract */
    if (x->chain_url)
        start_chain(x);
}

static void
rec_clear(struct rec *x)
{
    free(x->body);
    free(x->data);
    memset(x, 0, sizeof *x);
}

/* One test's loop and client. */
struct env {
    struct event_base *base;
    struct gq_httpc *h;
};

static int
setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->base = event_base_new();
    assert_non_null(e->base);
    e->h = gq_httpc_new(e->base);
    assert_non_null(e->h);
    *state = e;
    return 0;
}

static int
teardown(void **state)
{
    struct env *e = *state;
    gq_httpc_free(e->h);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

typedef int (*pred_fn)(void *ctx);

/* Runs the loop until pred(ctx) or max_s seconds; returns seconds run. */
static double
run_until(struct event_base *b, pred_fn pred, void *ctx, double max_s)
{
    struct event *t = event_new(b, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    double t0 = now_s();
    assert_non_null(t);
    event_add(t, &tv);
    while (!(pred && pred(ctx)) && now_s() - t0 < max_s)
        event_base_loop(b, EVLOOP_ONCE);
    event_free(t);
    return now_s() - t0;
}

static int
is_done(void *ctx)
{
    return ((struct rec *)ctx)->ndone > 0;
}

struct eofs_at_least {
    int n;
};

static int
eofs_reached(void *ctx)
{
    return atomic_load(&S.eofs) >= ((struct eofs_at_least *)ctx)->n;
}

/* Starts a buffered GET of path and runs it to the end. */
static void
get(struct env *e, const char *path, struct rec *x, double timeout,
    size_t max)
{
    char u[128];
    url(u, sizeof u, path);
    struct gq_call_opts o = {.url = u, .timeout = timeout,
                             .max_response = max};
    x->self = gq_call_start(e->h, &o, NULL, rec_done, x);
    assert_non_null(x->self);
    run_until(e->base, is_done, x, 5);
    assert_int_equal(x->ndone, 1);
}

static void
test_json_buffered(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    char u[128];
    url(u, sizeof u, "/json");
    struct gq_call_opts o = {.url = u, .timeout = 5};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    assert_non_null(x.self);
    /* done is never called from inside gq_call_start. */
    assert_int_equal(x.ndone, 0);
    assert_int_equal(gq_httpc_active(e->h), 1);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.ndone, 1);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    assert_int_equal(x.r.status, 200);
    assert_int_equal(x.r.curl_code, CURLE_OK);
    assert_string_equal(x.body, "{\"ok\":true,\"n\":42}");
    assert_int_equal(x.body_len, strlen("{\"ok\":true,\"n\":42}"));
    assert_string_equal(x.ctype, "application/json");
    assert_string_equal(x.r.err, "");
    assert_true(x.r.elapsed > 0 && x.r.elapsed < 5);
    assert_int_equal(gq_httpc_active(e->h), 0);
    assert_string_equal(gq_call_kind_str(x.r.kind), "ok");
    rec_clear(&x);
}

static void
test_post_json(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    char u[128], *body = strdup("{\"prompt\":\"hi\"}");
    const char *hv[] = {"X-Test: yes", "Authorization: Bearer t", NULL};
    url(u, sizeof u, "/echo");
    struct gq_call_opts o = {.url = u, .headers = hv, .body = body,
                             .body_len = strlen(body), .timeout = 5};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    assert_non_null(x.self);
    /* The body was copied: the caller's buffer may go now. */
    memset(body, '#', strlen(body));
    free(body);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    assert_string_equal(x.body, "{\"prompt\":\"hi\"}");
    assert_string_equal(x.ctype, "application/json");
    size_t n = 0;
    char *req = srv_last(&n);
    assert_non_null(req);
    assert_true(strncmp(req, "POST /echo HTTP/1.1\r\n", 21) == 0);
    assert_non_null(strstr(req, "\r\nX-Test: yes\r\n"));
    assert_non_null(strstr(req, "\r\nAuthorization: Bearer t\r\n"));
    assert_non_null(strstr(req, "\r\nContent-Type: application/json\r\n"));
    assert_null(strcasestr(req, "Expect:"));
    free(req);
    rec_clear(&x);
}

static void
test_stream_order(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    char u[128];
    url(u, sizeof u, "/stream?n=5&ms=30");
    struct gq_call_opts o = {.url = u, .timeout = 5};
    x.self = gq_call_start(e->h, &o, rec_data, rec_done, &x);
    assert_non_null(x.self);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.ndone, 1);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    assert_non_null(x.data);
    assert_string_equal(x.data,
                        "piece-0\npiece-1\npiece-2\npiece-3\npiece-4\n");
    /* Pieces 30 ms apart arrive as separate writes, all before done. */
    assert_true(x.ndata >= 3);
    assert_int_equal(x.data_after_done, 0);
    assert_int_equal(x.body_len, 0);    /* streamed: not buffered */
    /* A 500 on a streaming call is buffered for the result instead. */
    struct rec y = {0};
    url(u, sizeof u, "/500");
    o.url = u;
    y.self = gq_call_start(e->h, &o, rec_data, rec_done, &y);
    run_until(e->base, is_done, &y, 5);
    assert_int_equal(y.ndata, 0);
    assert_int_equal(y.r.kind, GQ_CALL_RETRYABLE);
    assert_string_equal(y.body, "boom: backend\nexploded");
    rec_clear(&x);
    rec_clear(&y);
}

static void
test_faults(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    char u[128];

    /* Refused. */
    int port = refused_port();
    assert_true(port > 0);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/json", port);
    struct gq_call_opts o = {.url = u, .timeout = 5};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_int_equal(x.r.curl_code, CURLE_COULDNT_CONNECT);
    assert_int_equal(x.r.status, 0);
    assert_true(strlen(x.r.err) > 0);
    rec_clear(&x);

    /* Reset after the request. */
    get(e, "/reset", &x, 5, 0);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_true(x.r.curl_code == CURLE_RECV_ERROR ||
                x.r.curl_code == CURLE_GOT_NOTHING ||
                x.r.curl_code == CURLE_SEND_ERROR);
    rec_clear(&x);

    /* 500: retryable, body kept, err shows it. */
    get(e, "/500", &x, 5, 0);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_int_equal(x.r.status, 500);
    assert_int_equal(x.r.curl_code, CURLE_OK);
    assert_string_equal(x.body, "boom: backend\nexploded");
    assert_string_equal(x.r.err, "HTTP 500: boom: backend exploded");
    rec_clear(&x);

    /* 404: fatal. */
    get(e, "/404", &x, 5, 0);
    assert_int_equal(x.r.kind, GQ_CALL_FATAL);
    assert_int_equal(x.r.status, 404);
    assert_string_equal(x.body, "no such thing");
    rec_clear(&x);

    /* A scheme libcurl may not use: fatal, through done. */
    struct gq_call_opts f = {.url = "ftp://127.0.0.1/x", .timeout = 5};
    x.self = gq_call_start(e->h, &f, NULL, rec_done, &x);
    assert_non_null(x.self);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.r.kind, GQ_CALL_FATAL);
    assert_int_equal(x.r.curl_code, CURLE_UNSUPPORTED_PROTOCOL);
    rec_clear(&x);
    assert_int_equal(gq_httpc_active(e->h), 0);
}

static void
test_timeout(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    struct eofs_at_least want = {atomic_load(&S.eofs) + 1};
    char u[128];
    url(u, sizeof u, "/hang");
    struct gq_call_opts o = {.url = u, .timeout = 0.3};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    double t = run_until(e->base, is_done, &x, 3);
    assert_int_equal(x.ndone, 1);
    assert_true(t < 1.0);
    assert_true(x.r.elapsed >= 0.25 && x.r.elapsed < 1.0);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_int_equal(x.r.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_non_null(strstr(x.r.err, "timeout"));
    /* The server sees the connection go. */
    run_until(e->base, eofs_reached, &want, 2);
    assert_true(eofs_reached(&want));
    rec_clear(&x);
}

static void
test_max_response(void **state)
{
    struct env *e = *state;
    struct rec x = {0};

    get(e, "/big?n=100000", &x, 5, 1000);
    assert_int_equal(x.r.kind, GQ_CALL_FATAL);
    assert_int_equal(x.r.status, 200);
    assert_non_null(strstr(x.r.err, "too large"));
    rec_clear(&x);

    /* Exactly the limit fits. */
    get(e, "/big?n=1000", &x, 5, 1000);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    assert_int_equal(x.body_len, 1000);
    rec_clear(&x);

    /* A big error body is cut, and the status still decides. */
    get(e, "/big500?n=100000", &x, 5, 1000);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_int_equal(x.r.status, 500);
    assert_int_equal(x.body_len, 1000);
    assert_non_null(strstr(x.r.err, "truncated"));
    rec_clear(&x);

    /* Streams are not limited by max_response. */
    char u[128];
    url(u, sizeof u, "/big?n=100000");
    struct gq_call_opts o = {.url = u, .timeout = 5, .max_response = 1000};
    x.self = gq_call_start(e->h, &o, rec_data, rec_done, &x);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    assert_int_equal(x.data_len, 100000);
    rec_clear(&x);
}

static void
test_abort_from_data(void **state)
{
    struct env *e = *state;
    struct rec x = {.abort_at = 2};
    char u[128];
    url(u, sizeof u, "/stream?n=20&ms=20");
    struct gq_call_opts o = {.url = u, .timeout = 5};
    x.self = gq_call_start(e->h, &o, rec_data, rec_done, &x);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.ndone, 1);
    assert_int_equal(x.ndata, 2);
    assert_int_equal(x.r.kind, GQ_CALL_FATAL);
    assert_string_equal(x.r.err, "aborted by caller");
    rec_clear(&x);
}

static int
has_data(void *ctx)
{
    return ((struct rec *)ctx)->ndata > 0;
}

static void
test_cancel_midstream(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    struct eofs_at_least want = {atomic_load(&S.eofs) + 1};
    char u[128];
    url(u, sizeof u, "/stream?n=100&ms=50");
    struct gq_call_opts o = {.url = u, .timeout = 10};
    x.self = gq_call_start(e->h, &o, rec_data, rec_done, &x);
    run_until(e->base, has_data, &x, 5);
    assert_true(x.ndata >= 1);
    gq_call_cancel(x.self);
    assert_int_equal(gq_httpc_active(e->h), 0);
    int seen = x.ndata;
    run_until(e->base, eofs_reached, &want, 2);
    assert_true(eofs_reached(&want));
    run_until(e->base, NULL, NULL, 0.2);
    assert_int_equal(x.ndone, 0);
    assert_int_equal(x.ndata, seen);
    rec_clear(&x);
}

static void
test_cancel_inside_data(void **state)
{
    struct env *e = *state;
    struct rec x = {0}, y = {0};
    struct eofs_at_least want = {atomic_load(&S.eofs) + 1};
    char u[128], u2[128];
    url(u, sizeof u, "/stream?n=100&ms=50");
    url(u2, sizeof u2, "/json");
    /* The data callback starts another call, then cancels its own. */
    x.h = e->h;
    x.chain_url = u2;
    x.chain = &y;
    x.cancel_at = 1;
    struct gq_call_opts o = {.url = u, .timeout = 10};
    x.self = gq_call_start(e->h, &o, rec_data, rec_done, &x);
    run_until(e->base, is_done, &y, 5);
    assert_int_equal(y.ndone, 1);
    assert_int_equal(y.r.kind, GQ_CALL_OK);
    run_until(e->base, eofs_reached, &want, 2);
    assert_true(eofs_reached(&want));
    run_until(e->base, NULL, NULL, 0.2);
    assert_int_equal(x.ndata, 1);
    assert_int_equal(x.ndone, 0);
    assert_int_equal(gq_httpc_active(e->h), 0);
    rec_clear(&x);
    rec_clear(&y);
}

static void
test_done_chains(void **state)
{
    struct env *e = *state;
    struct rec x = {0}, y = {0};
    char u[128], u2[128];
    url(u, sizeof u, "/500");
    url(u2, sizeof u2, "/json");
    /* A retry started from done; cancelling oneself there is a no-op. */
    x.h = e->h;
    x.chain_url = u2;
    x.chain = &y;
    x.cancel_self_in_done = 1;
    struct gq_call_opts o = {.url = u, .timeout = 5};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    run_until(e->base, is_done, &y, 5);
    assert_int_equal(x.ndone, 1);
    assert_int_equal(x.r.kind, GQ_CALL_RETRYABLE);
    assert_int_equal(y.ndone, 1);
    assert_int_equal(y.r.kind, GQ_CALL_OK);
    rec_clear(&x);
    rec_clear(&y);
}

static void
test_multipart(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    unsigned char audio[3000];
    char u[128];
    for (size_t i = 0; i < sizeof audio; i++)
        audio[i] = (unsigned char)(i * 7 + (i >> 8));   /* zeros, 0xff ... */
    static const char meta[] = "{\"language\":\"en\"}";
    struct gq_part parts[] = {
        {.name = "meta", .data = meta, .len = sizeof meta - 1,
         .type = "application/json"},
        {.name = "file", .data = audio, .len = sizeof audio,
         .filename = "clip.wav", .type = "audio/wav"},
        {.name = "model", .data = "whisper-1", .len = 9},
    };
    url(u, sizeof u, "/upload");
    struct gq_call_opts o = {.url = u, .parts = parts, .nparts = 3,
                             .timeout = 5};
    x.self = gq_call_start(e->h, &o, NULL, rec_done, &x);
    assert_non_null(x.self);
    run_until(e->base, is_done, &x, 5);
    assert_int_equal(x.r.kind, GQ_CALL_OK);
    size_t n = 0;
    char *req = srv_last(&n);
    assert_non_null(req);
    assert_true(strncmp(req, "POST /upload HTTP/1.1\r\n", 23) == 0);
    assert_non_null(
        strstr(req, "\r\nContent-Type: multipart/form-data; boundary="));
    assert_null(strcasestr(req, "Expect:"));
    assert_non_null(memmem(req, n,
                           "Content-Disposition: form-data; name=\"meta\"",
                           43));
    assert_non_null(memmem(req, n, "{\"language\":\"en\"}", 17));
    static const char fd[] =
        "Content-Disposition: form-data; name=\"file\"; "
        "filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\n";
    char *p = memmem(req, n, fd, sizeof fd - 1);
    assert_non_null(p);
    p += sizeof fd - 1;
    assert_true((size_t)(p - req) + sizeof audio <= n);
    assert_memory_equal(p, audio, sizeof audio);
    assert_non_null(memmem(req, n, "name=\"model\"\r\n\r\nwhisper-1\r\n", 27));
    free(req);
    rec_clear(&x);
}

struct many {
    struct rec r[50];
    int n;
};

static int
all_done(void *ctx)
{
    struct many *m = ctx;
    for (int i = 0; i < m->n; i++)
        if (!m->r[i].ndone)
            return 0;
    return 1;
}

static void
test_concurrent(void **state)
{
    struct env *e = *state;
    struct many *m = calloc(1, sizeof *m);
    char u[128];
    assert_non_null(m);
    m->n = 50;
    url(u, sizeof u, "/json?delay=100");
    struct gq_call_opts o = {.url = u, .timeout = 5};
    for (int i = 0; i < m->n; i++) {
        m->r[i].self = gq_call_start(e->h, &o, NULL, rec_done, &m->r[i]);
        assert_non_null(m->r[i].self);
    }
    assert_int_equal(gq_httpc_active(e->h), 50);
    /* 100 ms each: only in parallel does it end well inside 2 s. */
    double t = run_until(e->base, all_done, m, 5);
    assert_true(all_done(m));
    assert_true(t < 2.0);
    for (int i = 0; i < m->n; i++) {
        assert_int_equal(m->r[i].ndone, 1);
        assert_int_equal(m->r[i].r.kind, GQ_CALL_OK);
        rec_clear(&m->r[i]);
    }
    assert_int_equal(gq_httpc_active(e->h), 0);
    free(m);
}

static void
test_reuse(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    int before = atomic_load(&S.accepted);
    for (int i = 0; i < 3; i++) {
        get(e, "/json", &x, 5, 0);
        assert_int_equal(x.r.kind, GQ_CALL_OK);
        rec_clear(&x);
    }
    /* One connection, kept in the multi's cache across calls. */
    assert_int_equal(atomic_load(&S.accepted) - before, 1);
}

static void
test_bad_args(void **state)
{
    struct env *e = *state;
    struct rec x = {0};
    char u[128];
    url(u, sizeof u, "/json");
    struct gq_call_opts o = {.url = u};
    struct gq_part nameless = {.data = "x", .len = 1};
    const char *crlf[] = {"X-A: b\r\nX-Evil: 1", NULL};

    assert_null(gq_call_start(e->h, &o, NULL, NULL, &x));
    o.url = NULL;
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    o.url = "127.0.0.1/json";             /* no scheme */
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    o.url = u;
    o.method = "GE T";
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    o.method = NULL;
    o.timeout = -1;
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    o.timeout = 0;
    o.parts = &nameless;
    o.nparts = 1;
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    o.parts = NULL;
    o.nparts = 0;
    o.headers = crlf;
    assert_null(gq_call_start(e->h, &o, NULL, rec_done, &x));
    assert_int_equal(gq_httpc_active(e->h), 0);
    run_until(e->base, NULL, NULL, 0.05);
    assert_int_equal(x.ndone, 0);
    gq_call_cancel(NULL);
    gq_httpc_free(NULL);
}

static void
test_free_inflight(void **state)
{
    struct env *e = *state;
    struct rec x[3];
    struct eofs_at_least want = {atomic_load(&S.eofs) + 3};
    char u[128];
    memset(x, 0, sizeof x);
    url(u, sizeof u, "/hang");
    struct gq_call_opts o = {.url = u, .timeout = 10};
    for (int i = 0; i < 3; i++)
        assert_non_null(gq_call_start(e->h, &o, NULL, rec_done, &x[i]));
    run_until(e->base, NULL, NULL, 0.2);
    gq_httpc_free(e->h);
    e->h = gq_httpc_new(e->base);         /* for teardown */
    assert_non_null(e->h);
    run_until(e->base, eofs_reached, &want, 2);
    assert_true(eofs_reached(&want));
    for (int i = 0; i < 3; i++)
        assert_int_equal(x[i].ndone, 0);
}

/* --- the work queue --- */

static pthread_t main_thread;

struct wjob {
    int ran, done;
    int on_pool;                  /* work ran off the main thread */
    int done_on_main;
    int sleep_ms;
    atomic_int *started;
};

static void
wwork(void *arg)
{
    struct wjob *j = arg;
    if (j->started)
        atomic_fetch_add(j->started, 1);
    j->on_pool = !pthread_equal(pthread_self(), main_thread);
    if (j->sleep_ms)
        sleep_ms(j->sleep_ms);
    j->ran = 1;
}

static int wdone_count;

static void
wdone(void *arg)
{
    struct wjob *j = arg;
    j->done++;
    j->done_on_main = pthread_equal(pthread_self(), main_thread);
    wdone_count++;
}

struct wwant {
    int n;
};

static int
wdone_reached(void *ctx)
{
    return wdone_count >= ((struct wwant *)ctx)->n;
}

static void
test_workq_many(void **state)
{
    struct env *e = *state;
    struct gq_workq *q = gq_workq_new(e->base, 4);
    struct wjob *jobs = calloc(100, sizeof *jobs);
    struct wwant want = {100};
    assert_non_null(q);
    assert_non_null(jobs);
    wdone_count = 0;
    for (int i = 0; i < 100; i++) {
        jobs[i].sleep_ms = i % 10 == 0 ? 5 : 0;
        assert_int_equal(gq_workq_submit(q, wwork, wdone, &jobs[i]), 0);
    }
    assert_int_equal(gq_workq_submit(q, NULL, wdone, jobs), GQ_EINVAL);
    double t = run_until(e->base, wdone_reached, &want, 5);
    assert_true(t < 5);
    assert_int_equal(wdone_count, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(jobs[i].ran, 1);
        assert_int_equal(jobs[i].on_pool, 1);
        assert_int_equal(jobs[i].done, 1);
        assert_int_equal(jobs[i].done_on_main, 1);
    }
    assert_int_equal(gq_workq_pending(q), 0);
    gq_workq_free(q);
    free(jobs);
}

static void
test_workq_free_skips(void **state)
{
    struct env *e = *state;
    struct gq_workq *q = gq_workq_new(e->base, 1);
    struct wjob jobs[10];
    atomic_int started = 0;
    assert_non_null(q);
    memset(jobs, 0, sizeof jobs);
    wdone_count = 0;
    for (int i = 0; i < 10; i++) {
        jobs[i].sleep_ms = 50;
        jobs[i].started = &started;
        assert_int_equal(gq_workq_submit(q, wwork, wdone, &jobs[i]), 0);
    }
    for (int i = 0; i < 100 && atomic_load(&started) == 0; i++)
        sleep_ms(5);
    assert_int_equal(gq_workq_pending(q), 10);
    gq_workq_free(q);                 /* waits for the running one */
    int ran = 0;
    for (int i = 0; i < 10; i++) {
        ran += jobs[i].ran;
        assert_int_equal(jobs[i].done, 1);
        assert_int_equal(jobs[i].done_on_main, 1);
    }
    assert_true(ran >= 1 && ran < 10);
    assert_int_equal(wdone_count, 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_from_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_midstream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_chains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workq_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workq_free_skips, setup,
                                        teardown),
    };
    int rc;

    signal(SIGPIPE, SIG_IGN);
    main_thread = pthread_self();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (srv_start() != 0) {
        fprintf(stderr, "test_httpc: cannot start the fake server\n");
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    srv_stop();
    curl_global_cleanup();
    return rc;
}
