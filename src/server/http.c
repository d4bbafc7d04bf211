/*
 * http.c - the HTTP/JSON API (doc/api.md): a route table, request
 * parsing and validation, job rendering, event streams, status and
 * metrics.  Changes go through the gq_op_* calls of daemon.c; replies go
 * through gq_reply so that they wait for the group commit.
 *
 * Access control: each route names the least role it needs; the router
 * asks auth.c who the request comes from before the handler runs, and
 * the handlers check the classes they touch (class_ok, job_ok) as soon
 * as they know them, before they change anything.
 */
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/evp.h>

#include "../core/err.h"
#include "auth.h"
#include "daemon.h"
#include "multipart.h"
#include "ui.h"
#include "log.h"

#define MAX_SEGS 6
#define GQ_MAX_DEPS 64
#define GQ_MAX_UPLOAD (64L << 20) /* audio uploads to the drop-ins */
#define SSE_BACKLOG (1 << 20) /* memory unsent to an event stream */
#define SSE_PIECE 1024        /* memory of one buffered event, at least */

struct ctx {
    struct gq_daemon *d;
    struct evhttp_request *req;
    const char *param;        /* the {id} segment, if the route has one */
    struct evkeyvalq query;
    json_t *body;             /* parsed body (object), or NULL */
    struct gq_principal who;  /* the caller, from its token */
};

typedef void (*handler_fn)(struct ctx *c);

struct route {
    enum evhttp_cmd_type method;
    const char *path;         /* '*' matches one segment */
    handler_fn fn;
    int has_body;             /* parse a JSON object body */
    enum gq_role need;        /* least role; GQ_ROLE_NONE: no token */
};

/*
 * --- connections: the request deadline, slow readers, accept pauses ---
 *
 * evhttp's timeout (request_timeout) is an inactivity timeout: a client
 * that sends a byte of its headers every few seconds ("slowloris") would
 * keep its connection for hours.  So a request must also arrive whole
 * within request_timeout of its first byte, or its connection is closed.
 * libevent 2.1 says nothing when a connection goes away, so the state is
 * a table indexed by file descriptor whose entries are recognised by
 * their bufferevent and socket inode and are never dereferenced: a
 * bufferevent is only used where libevent hands it over, alive.
 *
 * One daemon per process: this state is the module's.
 */
struct gq_conn {
    const struct bufferevent *bev;  /* identity only */
    ino_t ino;                /* the socket's inode, 0 if unknown */
    int64_t since_us;         /* first byte of the request being read; 0: none */
    int busy;                 /* a request is being answered */
    int cut;                  /* over the deadline: being closed */
};

struct gq_lguard {            /* a listener that pauses when accept fails */
    struct evconnlistener *l;
    struct event *resume;
    struct gq_lguard *next;
};

enum { NET_LOG_SLOW, NET_LOG_READER, NET_LOG_ACCEPT, NET_NLOG };

static struct {
    struct gq_daemon *d;
    struct gq_conn *conns;    /* by file descriptor */
    size_t nconns;
    struct gq_lguard *guards;
    struct event *trim_ev;    /* returns freed memory to the system */
    uint64_t cut_slow;        /* requests not received within request_timeout */
    uint64_t cut_reader;      /* event streams not read (SSE_BACKLOG) */
    uint64_t accept_pauses;
    int64_t log_at[NET_NLOG]; /* last line of each kind: one per 10 s */
} net;

/* 1 if a line of this kind may be logged now: one per 10 s (the lines
 * carry running totals, so nothing is lost). */
static int
net_log_ok(int kind)
{
    int64_t now = gq_now();
    if (net.log_at[kind] != 0 && now - net.log_at[kind] < 10000000)
        return 0;
    net.log_at[kind] = now;
    return 1;
}

static ino_t
sock_ino(evutil_socket_t fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    return st.st_ino;
}

/* The entry of the live connection of bev, or NULL (no descriptor, no
 * memory).  An entry left by an earlier connection on the descriptor is
 * started afresh; with check, the socket's inode is compared too (a new
 * bufferevent may have the address of a freed one). */
static struct gq_conn *
conn_of(struct bufferevent *bev, int check)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct gq_conn *c;
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= net.nconns) {
        size_t n = net.nconns ? net.nconns : 256;
        while (n <= (size_t)fd)
            n *= 2;
        c = realloc(net.conns, n * sizeof *c);
        if (c == NULL)
            return NULL;
        memset(c + net.nconns, 0, (n - net.nconns) * sizeof *c);
        net.conns = c;
        net.nconns = n;
    }
    c = &net.conns[fd];
    if (c->bev != bev || (check && c->ino != sock_ino(fd))) {
        c->bev = bev;
        c->ino = sock_ino(fd);
        c->since_us = 0;
        c->busy = 0;
        c->cut = 0;
    }
    return c;
}

/* Bytes came in on a connection: the request deadline.  Runs inside the
 * bufferevent's read, so it must not free the connection: it sets a
 * tiny timeout and lets evhttp close it as it closes idle ones. */
static void
conn_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
              void *arg)
{
    struct bufferevent *bev = arg;
    struct gq_conn *c;
    int64_t now, limit;
    (void)buf;
    if (info->n_added == 0 || net.d == NULL ||
        (c = conn_of(bev, 0)) == NULL)
        return;
    /* Bytes while busy: pipelined, or an entry of a closed connection. */
    if (c->busy && (c = conn_of(bev, 1))->busy)
        return;
    now = gq_now();
    if (c->since_us == 0) {
        /* A request starts: make sure the entry is this connection's. */
        conn_of(bev, 1)->since_us = now;
        return;
    }
    limit = (int64_t)(net.d->cfg.request_timeout * 1e6);
    if (now - c->since_us <= limit)
        return;
    if ((c = conn_of(bev, 1))->since_us == 0) { /* another connection's */
        c->since_us = now;
        return;
    }
    c->busy = 1; /* once */
    c->cut = 1;
    net.cut_slow++;
    if (net_log_ok(NET_LOG_SLOW))
        gq_log(GQ_LOG_WARN, "closing a connection whose request did not "
               "arrive within request_timeout (%gs); %" PRIu64 " so far",
               net.d->cfg.request_timeout, net.cut_slow);
    struct timeval tv = {0, 1};
    bufferevent_set_timeouts(bev, &tv, &tv);
}

/* evhttp's bufferevent for a new connection, watched by conn_input_cb. */
static struct bufferevent *
conn_new_cb(struct event_base *base, void *arg)
{
    struct bufferevent *bev =
        bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    (void)arg;
    if (bev != NULL &&
        evbuffer_add_cb(bufferevent_get_input(bev), conn_input_cb, bev) ==
            NULL) {
        bufferevent_free(bev);
        return NULL; /* evhttp makes its own */
    }
    return bev;
}

/* A reply was sent: the connection reads its next request. */
static void
conn_done_cb(struct evhttp_request *req, void *arg)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev =
        evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct gq_conn *c = bev ? conn_of(bev, 0) : NULL;
    (void)arg;
    if (c != NULL) {
        c->busy = 0;
        c->since_us = evbuffer_get_length(bufferevent_get_input(bev)) > 0
                          ? gq_now()
                          : 0;
    }
}

/* A whole request arrived: no deadline until its reply is sent.  1 if
 * its last bytes came after the deadline: it must not be served (its
 * connection is being closed). */
static int
conn_busy(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev =
        evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct gq_conn *c = bev ? conn_of(bev, 1) : NULL;
    if (c != NULL && c->cut)
        return 1;
    if (c != NULL)
        c->busy = 1;
    evhttp_request_set_on_complete_cb(req, conn_done_cb, NULL);
    return 0;
}

static void
lguard_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_lguard *g = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(g->l);
}

/*
 * accept() failed with an error libevent does not retry (EMFILE, ENFILE:
 * out of file descriptors; ENOBUFS, ENOMEM).  The listening socket stays
 * readable, so libevent would call accept() again at once, forever: stop
 * accepting for 100 ms instead.  Waiting clients stay in the kernel's
 * backlog until descriptors are free again.
 */
static void
lguard_error_cb(struct evconnlistener *l, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    struct gq_lguard *g;
    struct timeval tv = {0, 100000};
    (void)arg; /* evhttp's */
    for (g = net.guards; g && g->l != l; g = g->next)
        ;
    if (g == NULL)
        return;
    evconnlistener_disable(l);
    evtimer_add(g->resume, &tv);
    net.accept_pauses++;
    if (net_log_ok(NET_LOG_ACCEPT))
        gq_log(GQ_LOG_WARN, "accept: %s; not accepting connections for "
               "100 ms (%" PRIu64 " pauses so far)", strerror(e),
               net.accept_pauses);
}

/*
 * After a storm (thousands of connections, event streams dropped for
 * their backlog) the freed memory is scattered through the heap, and
 * glibc returns only its top to the system.  Every 10 s, if more than 8
 * MiB of the heap is free, malloc_trim gives the free pages back.
 */
static void
trim_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mallinfo2 mi = mallinfo2();
    (void)fd;
    (void)what;
    (void)arg;
    if (mi.fordblks > (size_t)8 << 20) {
        malloc_trim(0);
        gq_log(GQ_LOG_DEBUG, "returned free memory to the system (%zu KiB "
               "were free)", mi.fordblks / 1024);
    }
}

int
gq_http_init(struct gq_daemon *d)
{
    struct timeval tv = {10, 0};
    net.d = d;
    net.trim_ev = event_new(d->base, -1, EV_PERSIST, trim_cb, NULL);
    if (net.trim_ev == NULL)
        return GQ_ENOMEM;
    event_add(net.trim_ev, &tv);
    return 0;
}

int
gq_http_guard_listener(struct gq_daemon *d, struct evconnlistener *l)
{
    struct gq_lguard *g;
    if (l == NULL)
        return GQ_EINVAL;
    g = calloc(1, sizeof *g);
    if (g == NULL)
        return GQ_ENOMEM;
    g->l = l;
    g->resume = evtimer_new(d->base, lguard_resume_cb, g);
    if (g->resume == NULL) {
        free(g);
        return GQ_ENOMEM;
    }
    g->next = net.guards;
    net.guards = g;
    evconnlistener_set_error_cb(l, lguard_error_cb);
    return 0;
}

void
gq_http_close(struct gq_daemon *d)
{
    struct gq_lguard *g;
    (void)d;
    while ((g = net.guards) != NULL) {
        net.guards = g->next;
        event_free(g->resume);
        free(g);
    }
    if (net.trim_ev != NULL)
        event_free(net.trim_ev);
    net.trim_ev = NULL;
    free(net.conns);
    net.conns = NULL;
    net.nconns = 0;
    net.d = NULL;
}

/* --- helpers --- */

static void
fmt_time(int64_t us, char *buf, size_t len)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(us / 1000 % 1000));
}

static json_t *
time_json(int64_t us)
{
    char buf[96];
    if (us <= 0)
        return json_null();
    fmt_time(us, buf, sizeof buf);
    return json_string(buf);
}

static json_t *
text_json(const char *text)
{
    json_t *v;
    if (text == NULL)
        return json_null();
    v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

/* Seconds as JSON: an integer when whole (120), else a real (0.5). */
static json_t *
num_json(double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *
str_json(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void
err(struct ctx *c, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
err(struct ctx *c, int code, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gq_reply_err(c->d, c->req, code, field, "%s", msg);
}

/* Reports an operation's failure with the most useful field. */
static void
op_err(struct ctx *c, int rc, const char *field)
{
    err(c, rc, field, "%s", gq_err_msg(rc));
}

/* --- access control: the classes of the caller's token --- */

/* Replies 403 for class name, which the caller's token may not use. */
static void
forbid_class(struct ctx *c, const char *field, const char *name)
{
    gq_auth_count(c->d->auth, GQ_EFORBIDDEN);
    err(c, GQ_EFORBIDDEN, field, "token %s may not use class %s",
        c->who.name, name);
}

/* 0 if the caller may use class cls (an index; < 0, an unknown class,
 * is left to the handler to report), else replies 403 and -1. */
static int
class_ok(struct ctx *c, int cls, const char *field)
{
    if (cls < 0 || gq_principal_may(&c->who, cls))
        return 0;
    forbid_class(c, field, gq_sched_conf(c->d->sched, cls)->name);
    return -1;
}

/* The class index of job seq, with its name in name[GQ_NAME_MAX]:
 * GQ_ENOENT when there is no such job, GQ_ENOCLASS when its class is no
 * longer configured. */
static int
job_class(struct ctx *c, uint64_t seq, char *name)
{
    struct gq_job *j = gq_jobtab_get(&c->d->jobs, seq);
    struct gq_jobrec r = {0};

    if (j != NULL) {
        snprintf(name, GQ_NAME_MAX, "%s",
                 gq_sched_conf(c->d->sched, j->cls)->name);
        return j->cls;
    }
    if (gq_get(c->d, seq, &r) < 0) {
        gq_jobrec_clear(&r);
        return GQ_ENOENT;
    }
    snprintf(name, GQ_NAME_MAX, "%s", r.cls);
    gq_jobrec_clear(&r);
    return gq_sched_class(c->d->sched, name);
}

/* 0 if the caller may act on job seq (one of its classes, or a job that
 * does not exist, for the handler to report), else replies 403, -1. */
static int
job_ok(struct ctx *c, uint64_t seq, const char *field)
{
    char name[GQ_NAME_MAX];
    int cls;

    if (c->who.classes == GQ_ALL_CLASSES)
        return 0;
    cls = job_class(c, seq, name);
    if (cls == GQ_ENOENT || (cls >= 0 && gq_principal_may(&c->who, cls)))
        return 0;
    forbid_class(c, field, name);
    return -1;
}

/* The one class a class-restricted caller may use, or -1 (several). */
static int
only_class(const struct ctx *c)
{
    uint64_t m = c->who.classes;
    if (m == GQ_ALL_CLASSES || m == 0 || (m & (m - 1)) != 0)
        return -1;
    return __builtin_ctzll(m);
}

json_t *
gq_job_json(struct gq_daemon *d, const struct gq_jobrec *r)
{
    char id[32];
    int cls = gq_sched_class(d->sched, r->cls);
    int max_attempts = cls >= 0 ? gq_sched_conf(d->sched, cls)->max_attempts
                                : 0;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(gq_job_id(r->seq, id,
                                                       sizeof id)));
    json_object_set_new(o, "class", json_string(r->cls));
    json_object_set_new(o, "kind",
                        json_string(gq_kind_str((enum gq_kind)r->kind)));
    json_object_set_new(o, "state",
                        json_string(gq_state_str((enum gq_state)r->state)));
    json_object_set_new(o, "priority", json_integer(r->priority));
    json_object_set_new(o, "payload", text_json(r->payload));
    json_object_set_new(o, "metadata", text_json(r->metadata));
    json_object_set_new(o, "idempotency_key", str_json(r->idem_key));
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "max_attempts", json_integer(max_attempts));
    json_object_set_new(o, "result", text_json(r->result));
    if (r->err_code)
        json_object_set_new(o, "error",
                            json_pack("{s:s, s:o}", "code", r->err_code,
                                      "message", str_json(r->err_msg)));
    else
        json_object_set_new(o, "error", json_null());
    json_object_set_new(o, "progress", text_json(r->progress));
    json_object_set_new(o, "holder", str_json(r->holder));
    if (r->callback_url)
        json_object_set_new(o, "callback_url", json_string(r->callback_url));
    if (r->deps) {
        json_t *da = json_loads(r->deps, 0, NULL), *dv, *ids = json_array();
        size_t di;
        json_array_foreach(da, di, dv)
        {
            char dbuf[32];
            json_array_append_new(
                ids, json_string(gq_job_id((uint64_t)json_integer_value(dv),
                                           dbuf, sizeof dbuf)));
        }
        json_decref(da);
        json_object_set_new(o, "depends_on", ids);
    }

    struct gq_job *j = gq_jobtab_get(&d->jobs, r->seq);
    if (j && j->state == GQ_QUEUED && r->state == GQ_QUEUED) {
        uint32_t pos = 0;
        enum gq_reason why = j->blocked ? GQ_R_DEPS
                                        : gq_sched_reason(d->sched, j, &pos);
        const struct gq_class_exec *jcx = &d->cfg.exec[j->cls];
        if (why == GQ_R_GPU_BUSY && j->kind == GQ_KIND_JOB &&
            gq_sched_free_slots(d->sched) > 0) {
            if (jcx->executor == GQ_EXEC_WORKER) {
                if (d->waiting_workers[j->cls] == 0)
                    why = GQ_R_NO_WORKER;
            } else {
                const struct gq_backend *bk = &d->backends[jcx->backend];
                if (!bk->healthy || bk->breaker == GQ_BREAKER_OPEN)
                    why = GQ_R_BACKEND;
            }
        }
        json_object_set_new(o, "reason", json_string(gq_reason_str(why)));
        json_object_set_new(o, "position", json_integer(pos));
    }
    if (j && j->state == GQ_RUNNING && r->state == GQ_RUNNING) {
        char lid[64];
        snprintf(lid, sizeof lid, "j%" PRIu64 ".%" PRIu64, j->seq, j->token);
        if (j->owner == NULL) /* a built-in run's lease is gpuqd's own */
            json_object_set_new(o, "lease_id", json_string(lid));
        struct gq_runctx *rc = j->owner;
        json_object_set_new(o, "slot",
                            json_integer(rc ? rc->group_slot : j->slot));
        if (j->slot < 0 && rc)
            json_object_set_new(o, "shared_grant", json_true());
    }
    json_object_set_new(o, "created_at", time_json(r->created_us));
    json_object_set_new(o, "started_at", time_json(r->started_us));
    json_object_set_new(o, "ended_at", time_json(r->ended_us));
    json_object_set_new(o, "finished_at", time_json(r->finished_us));
    json_object_set_new(o, "ready_at", time_json(r->ready_at_us));
    int64_t wait = r->wait_us, run = r->run_us;
    if (j && r->state == GQ_QUEUED)
        wait += gq_now() - j->enq_us;
    if (j && r->state == GQ_RUNNING)
        run += gq_now() - j->grant_us;
    json_object_set_new(o, "wait_ms", json_integer(wait / 1000));
    json_object_set_new(o, "run_ms", json_integer(run / 1000));
    return o;
}

/* --- body field validation: each returns 0 or replies 400 and -1 --- */

static int
check_fields(struct ctx *c, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(c->body, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                ok = 1;
        if (!ok) {
            err(c, GQ_EINVAL, key, "unknown field %s", key);
            return -1;
        }
    }
    return 0;
}

static int
opt_int(struct ctx *c, const char *key, json_int_t min, json_int_t max,
        json_int_t *out)
{
    json_t *v = json_object_get(c->body, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min ||
        json_integer_value(v) > max) {
        err(c, GQ_EINVAL, key, "%s must be an integer in %" JSON_INTEGER_FORMAT
            "..%" JSON_INTEGER_FORMAT, key, min, max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int
opt_num(struct ctx *c, const char *key, double min, double max, double *out)
{
    json_t *v = json_object_get(c->body, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= min) ||
        !(json_number_value(v) <= max)) {
        err(c, GQ_EINVAL, key, "%s must be a number in %g..%g", key, min,
            max);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int
opt_str(struct ctx *c, const char *key, size_t maxlen, int required,
        const char **out)
{
    json_t *v = json_object_get(c->body, key);
    if (v == NULL || json_is_null(v)) {
        if (required) {
            err(c, GQ_EINVAL, key, "%s is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > maxlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        err(c, GQ_EINVAL, key, "%s must be a string of 1..%zu bytes", key,
            maxlen);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int
opt_obj(struct ctx *c, const char *key, json_t **out)
{
    json_t *v = json_object_get(c->body, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_object(v)) {
        err(c, GQ_EINVAL, key, "%s must be an object", key);
        return -1;
    }
    *out = v;
    return 0;
}

/* Reads a query number; 0 absent, 1 present, -1 bad (replied). */
static int
query_num(struct ctx *c, const char *key, double min, double max,
          double *out)
{
    const char *s = evhttp_find_header(&c->query, key);
    char *end;
    if (s == NULL)
        return 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= min) || !(v <= max)) {
        err(c, GQ_EINVAL, key, "%s must be a number in %g..%g", key, min,
            max);
        return -1;
    }
    *out = v;
    return 1;
}

static int
param_job(struct ctx *c, uint64_t *seq)
{
    if (gq_job_parse_id(c->param, seq) < 0) {
        err(c, GQ_ENOENT, NULL, "no such job");
        return -1;
    }
    return 0;
}

/* Lease and lock ids are "j<seq>.<token>". */
static int
param_lease(struct ctx *c, uint64_t *seq, uint64_t *token)
{
    char buf[64];
    const char *dot = strchr(c->param, '.');
    char *end;
    if (dot == NULL || (size_t)(dot - c->param) >= sizeof buf)
        goto bad;
    snprintf(buf, sizeof buf, "%.*s", (int)(dot - c->param), c->param);
    if (gq_job_parse_id(buf, seq) < 0 || dot[1] < '0' || dot[1] > '9')
        goto bad;
    *token = strtoull(dot + 1, &end, 10);
    if (*end != '\0')
        goto bad;
    return 0;
bad:
    err(c, GQ_ENOENT, NULL, "no such lease");
    return -1;
}

/* The token of a lease call: body "token" must be the id's. */
static int
body_token(struct ctx *c, uint64_t want)
{
    json_t *v = json_object_get(c->body, "token");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        err(c, GQ_EINVAL, "token", "token must be a non-negative integer");
        return -1;
    }
    if ((uint64_t)json_integer_value(v) != want) {
        err(c, GQ_ESTALE, "token", "the token is not this lease's");
        return -1;
    }
    return 0;
}

/* --- jobs --- */

/* A built-in executor checks its payload at submit; 0 or replied 400. */
static int
validate_payload(struct ctx *c, const char *cls_name, json_t *payload)
{
    int cls = gq_sched_class(c->d->sched, cls_name);
    const struct gq_exec_ops *ops;
    const char *field = "payload";
    char msg[256];
    if (cls < 0)
        return 0; /* the submit reports the unknown class */
    ops = gq_executors[c->d->cfg.exec[cls].executor];
    if (ops == NULL || ops->validate == NULL)
        return 0;
    if (payload == NULL)
        payload = json_null();
    if (json_object_get(payload, "upload")) {
        err(c, GQ_EINVAL, "payload.upload", "upload is set by gpuqd's own "
            "upload endpoints (/inference, /v1/audio/transcriptions)");
        return -1;
    }
    if (ops->validate(&c->d->cfg.exec[cls], payload, &field, msg,
                      sizeof msg) < 0) {
        err(c, GQ_EINVAL, field, "%s", msg);
        return -1;
    }
    return 0;
}

/* Writes len bytes to a new file under data_dir/uploads; its name goes
 * to name.  Page cache only (a kill -9 keeps it; a power cut may not). */
static int
save_upload(struct gq_daemon *d, const void *data, size_t len, char *name,
            size_t namelen)
{
    char path[1400];
    snprintf(name, namelen, "u%lld-%llu.audio", (long long)time(NULL),
             (unsigned long long)++d->upload_seq);
    snprintf(path, sizeof path, "%s/%s", d->upload_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return GQ_EIO;
    int bad = fwrite(data, 1, len, f) != len;
    if (fclose(f) != 0 || bad) {
        unlink(path);
        return GQ_EIO;
    }
    return 0;
}

static void
drop_upload_file(struct gq_daemon *d, json_t *payload)
{
    const char *up = json_string_value(json_object_get(payload, "upload"));
    char path[1400];
    if (up && strchr(up, '/') == NULL) {
        snprintf(path, sizeof path, "%s/%s", d->upload_dir, up);
        unlink(path);
    }
}

/* A transcription payload with "audio" (base64) becomes one with
 * "upload": the audio is decoded and stored under data_dir/uploads.
 * *out is the new payload (or NULL when nothing changes); -1 after
 * replying 400. */
static int
audio_upload(struct ctx *c, const char *cls_name, json_t *payload,
             json_t **out)
{
    int cls = gq_sched_class(c->d->sched, cls_name);
    json_t *au = json_object_get(payload, "audio");
    char name[64];
    *out = NULL;
    if (cls < 0 || c->d->cfg.exec[cls].executor != GQ_EXEC_TRANSCRIBE ||
        !json_is_string(au))
        return 0;
    size_t n = json_string_length(au);
    const char *b64 = json_string_value(au);
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    if (buf == NULL) {
        err(c, GQ_ENOMEM, NULL, "out of memory");
        return -1;
    }
    int len = n % 4 == 0 && n <= INT_MAX
                  ? EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n)
                  : -1;
    if (len < 0) {
        free(buf);
        err(c, GQ_EINVAL, "payload.audio", "audio is not valid base64");
        return -1;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (n >= 1 && b64[n - 1] == '=')
        len--;
    if (n >= 2 && b64[n - 2] == '=')
        len--;
    int rc = save_upload(c->d, buf, (size_t)len, name, sizeof name);
    free(buf);
    if (rc < 0) {
        err(c, GQ_EIO, NULL, "cannot store the audio");
        return -1;
    }
    *out = json_deep_copy(payload);
    json_object_del(*out, "audio");
    json_object_set_new(*out, "upload", json_string(name));
    return 0;
}

/* depends_on: ["j1", ...] plus payload.from_job; each must exist.
 * Returns the count, or -1 after replying 400. */
static int
parse_deps(struct ctx *c, json_t *payload, uint64_t *out)
{
    json_t *a = json_object_get(c->body, "depends_on"), *v;
    json_t *from = json_object_get(payload, "from_job");
    size_t i;
    int n = 0;
    struct gq_jobrec r = {0};
    if (a && !json_is_array(a)) {
        err(c, GQ_EINVAL, "depends_on", "depends_on must be an array of "
            "job ids");
        return -1;
    }
    json_array_foreach(a, i, v)
    {
        if (n == GQ_MAX_DEPS) {
            err(c, GQ_EINVAL, "depends_on", "at most %d dependencies",
                GQ_MAX_DEPS);
            return -1;
        }
        if (!json_is_string(v) ||
            gq_job_parse_id(json_string_value(v), &out[n]) < 0) {
            err(c, GQ_EINVAL, "depends_on", "depends_on[%zu] is not a job "
                "id", i);
            return -1;
        }
        n++;
    }
    if (json_is_string(from) && n < GQ_MAX_DEPS) {
        if (gq_job_parse_id(json_string_value(from), &out[n]) < 0) {
            err(c, GQ_EINVAL, "payload.from_job", "from_job is not a job id");
            return -1;
        }
        n++;
    }
    for (int k = 0; k < n; k++) {
        const char *field = k < (int)json_array_size(a) ? "depends_on"
                                                        : "payload.from_job";
        if (gq_get(c->d, out[k], &r) < 0) {
            err(c, GQ_EINVAL, field, "no such job j%" PRIu64, out[k]);
            gq_jobrec_clear(&r);
            return -1;
        }
        gq_jobrec_clear(&r);
        /* A dependency's result may feed the job (from_job): only jobs
         * of the caller's own classes. */
        if (job_ok(c, out[k], field) < 0)
            return -1;
    }
    return n;
}

static void
h_submit(struct ctx *c)
{
    static const char *const fields[] = {"class", "payload", "metadata",
                                         "priority", "idempotency_key",
                                         "queue_timeout", "depends_on",
                                         "callback_url", NULL};
    uint64_t deps[GQ_MAX_DEPS];
    struct gq_submit s = {0};
    json_int_t prio = 0;
    struct gq_jobrec r = {0};
    int created, rc;
    s.queue_timeout = -1;
    if (check_fields(c, fields) < 0 ||
        opt_str(c, "class", GQ_NAME_MAX - 1, 1, &s.cls) < 0 ||
        opt_obj(c, "metadata", &s.metadata) < 0 ||
        opt_int(c, "priority", -1000, 1000, &prio) < 0 ||
        opt_str(c, "idempotency_key", 200, 0, &s.idem_key) < 0 ||
        opt_num(c, "queue_timeout", 0, 1e9, &s.queue_timeout) < 0)
        return;
    s.payload = json_object_get(c->body, "payload");
    s.priority = (int32_t)prio;
    s.kind = GQ_KIND_JOB;
    if (opt_str(c, "callback_url", 1000, 0, &s.callback_url) < 0)
        return;
    if (s.callback_url && strncmp(s.callback_url, "http://", 7) != 0 &&
        strncmp(s.callback_url, "https://", 8) != 0) {
        err(c, GQ_EINVAL, "callback_url", "callback_url must be an http:// "
            "or https:// URL");
        return;
    }
    if (class_ok(c, gq_sched_class(c->d->sched, s.cls), "class") < 0 ||
        validate_payload(c, s.cls, s.payload) < 0 ||
        (s.ndeps = parse_deps(c, s.payload, deps)) < 0)
        return;
    s.deps = deps;
    json_t *converted = NULL;
    if (audio_upload(c, s.cls, s.payload, &converted) < 0)
        return;
    if (converted)
        s.payload = converted;
    rc = gq_op_submit(c->d, &s, &r, &created);
    if (rc < 0 && converted)
        drop_upload_file(c->d, converted);
    json_decref(converted);
    if (rc < 0) {
        const char *field = rc == GQ_ENOCLASS ? "class"
                            : rc == GQ_ETOOBIG ? "payload"
                                               : NULL;
        if (rc == GQ_ETOOBIG)
            err(c, rc, field, "payload is over %ld bytes",
                c->d->cfg.max_payload);
        else if (rc == GQ_ENOCLASS)
            err(c, rc, field, "unknown class %s", s.cls);
        else
            op_err(c, rc, field);
        return;
    }
    gq_reply(c->d, c->req, created ? 201 : 200, gq_job_json(c->d, &r));
    gq_jobrec_clear(&r);
}

static void
add_history(struct gq_daemon *d, uint64_t seq, json_t *o);

static void
h_get(struct ctx *c)
{
    uint64_t seq;
    double wait = 0;
    struct gq_jobrec r = {0};
    if (param_job(c, &seq) < 0 || job_ok(c, seq, NULL) < 0 ||
        query_num(c, "wait", 0, 300, &wait) < 0)
        return;
    int rc = gq_get(c->d, seq, &r);
    if (rc < 0) {
        op_err(c, rc, NULL);
        return;
    }
    if (wait > 0 && !gq_state_terminal((enum gq_state)r.state)) {
        struct gq_park *p = gq_park_new(c->d, GQ_PARK_JOBWAIT, c->req, wait);
        if (p == NULL) {
            err(c, GQ_EBUSY, NULL, "too many parked requests");
        } else {
            p->seq = seq;
        }
        gq_jobrec_clear(&r);
        return;
    }
    json_t *o = gq_job_json(c->d, &r);
    add_history(c->d, seq, o);
    gq_reply(c->d, c->req, 200, o);
    gq_jobrec_clear(&r);
}

static int
history_cb(void *ud, int64_t t_us, const char *state, const char *detail)
{
    json_t *a = ud;
    json_t *e = json_pack("{s:o, s:s, s:o}", "at", time_json(t_us), "state",
                          state, "detail", text_json(detail));
    json_array_append_new(a, e);
    return 0;
}

static void
add_history(struct gq_daemon *d, uint64_t seq, json_t *o)
{
    json_t *a = json_array();
    d->store->ops->events(d->store, seq, history_cb, a, d->errbuf);
    json_object_set_new(o, "history", a);
}

struct list_ctx {
    struct gq_daemon *d;
    json_t *jobs;
    uint64_t last;
};

static int
list_cb(void *ud, const struct gq_jobrec *r)
{
    struct list_ctx *x = ud;
    json_array_append_new(x->jobs, gq_job_json(x->d, r));
    x->last = r->seq;
    return 0;
}

static void
h_list(struct ctx *c)
{
    struct gq_store_filter f = {NULL, -1, 0, 100};
    const char *s;
    double limit = 100;
    enum gq_state st;
    if ((s = evhttp_find_header(&c->query, "class")) != NULL) {
        int k = gq_sched_class(c->d->sched, s);
        if (k < 0) {
            err(c, GQ_ENOCLASS, "class", "unknown class %s", s);
            return;
        }
        if (class_ok(c, k, "class") < 0)
            return;
        f.cls = s;
    } else if (c->who.classes != GQ_ALL_CLASSES) {
        /* A token of some classes lists those: one at a time. */
        int k = only_class(c);
        if (k < 0) {
            gq_auth_count(c->d->auth, GQ_EFORBIDDEN);
            err(c, GQ_EFORBIDDEN, "class", "token %s may use only some "
                "classes: name one with class=", c->who.name);
            return;
        }
        f.cls = gq_sched_conf(c->d->sched, k)->name;
    }
    if ((s = evhttp_find_header(&c->query, "state")) != NULL) {
        if (gq_state_parse(s, &st) < 0) {
            err(c, GQ_EINVAL, "state", "unknown state %s", s);
            return;
        }
        f.state = (int)st;
    }
    if (query_num(c, "limit", 1, 1000, &limit) < 0)
        return;
    if (limit != floor(limit)) {
        err(c, GQ_EINVAL, "limit", "limit must be an integer in 1..1000");
        return;
    }
    f.limit = (int)limit;
    if ((s = evhttp_find_header(&c->query, "after")) != NULL &&
        gq_job_parse_id(s, &f.after) < 0) {
        err(c, GQ_EINVAL, "after", "after must be a job id");
        return;
    }
    struct list_ctx x = {c->d, json_array(), 0};
    int rc = c->d->store->ops->list(c->d->store, &f, list_cb, &x,
                                    c->d->errbuf);
    if (rc < 0) {
        json_decref(x.jobs);
        op_err(c, rc, NULL);
        return;
    }
    char next[32];
    json_t *o = json_pack("{s:o}", "jobs", x.jobs);
    if (json_array_size(x.jobs) == (size_t)f.limit)
        json_object_set_new(o, "next",
                            json_string(gq_job_id(x.last, next, sizeof next)));
    else
        json_object_set_new(o, "next", json_null());
    gq_reply(c->d, c->req, 200, o);
}

static void
h_cancel(struct ctx *c)
{
    uint64_t seq;
    struct gq_jobrec r = {0};
    if (param_job(c, &seq) < 0 || job_ok(c, seq, NULL) < 0)
        return;
    int rc = gq_op_cancel(c->d, seq, &r);
    if (rc == GQ_ESTATE)
        err(c, rc, NULL, "the job is already %s",
            gq_state_str((enum gq_state)r.state));
    else if (rc < 0)
        op_err(c, rc, NULL);
    else
        gq_reply(c->d, c->req, 200, gq_job_json(c->d, &r));
    gq_jobrec_clear(&r);
}

static void
h_requeue(struct ctx *c)
{
    uint64_t seq;
    struct gq_jobrec r = {0};
    if (param_job(c, &seq) < 0 || job_ok(c, seq, NULL) < 0)
        return;
    int rc = gq_op_requeue(c->d, seq, &r);
    if (rc == GQ_ESTATE)
        err(c, rc, NULL, "%s cannot be requeued (it is %s)",
            r.kind == GQ_KIND_LOCK ? "a lock job" : "this job",
            gq_state_str((enum gq_state)r.state));
    else if (rc < 0)
        op_err(c, rc, NULL);
    else
        gq_reply(c->d, c->req, 200, gq_job_json(c->d, &r));
    gq_jobrec_clear(&r);
}

/* --- events --- */

static void
h_events(struct ctx *c)
{
    const char *s;
    int cls = -1;
    uint64_t seq = 0;
    if ((s = evhttp_find_header(&c->query, "class")) != NULL &&
        (cls = gq_sched_class(c->d->sched, s)) < 0) {
        err(c, GQ_ENOCLASS, "class", "unknown class %s", s);
        return;
    }
    if ((s = evhttp_find_header(&c->query, "job")) != NULL &&
        gq_job_parse_id(s, &seq) < 0) {
        err(c, GQ_EINVAL, "job", "job must be a job id");
        return;
    }
    if (class_ok(c, cls, "class") < 0 ||
        (seq != 0 && job_ok(c, seq, "job") < 0))
        return;
    if (seq != 0) {
        /* A stream for no job would wait for nothing, holding a park. */
        char name[GQ_NAME_MAX];
        if (job_class(c, seq, name) == GQ_ENOENT) {
            err(c, GQ_ENOENT, "job", "no such job");
            return;
        }
    }
    if (cls < 0 && c->who.classes != GQ_ALL_CLASSES) {
        /* A token of some classes hears of those only: of the job's
         * class (job_ok allowed it), or of its one class. */
        char name[GQ_NAME_MAX];
        cls = seq != 0 ? job_class(c, seq, name) : only_class(c);
        if (cls < 0 && seq != 0) {
            err(c, GQ_ENOENT, "job", "no such job");
            return;
        }
        if (cls < 0) {
            gq_auth_count(c->d->auth, GQ_EFORBIDDEN);
            err(c, GQ_EFORBIDDEN, "class", "token %s may use only some "
                "classes: name one with class=", c->who.name);
            return;
        }
    }
    if (c->d->draining) {
        err(c, GQ_EDRAINING, NULL, "the daemon is draining");
        return;
    }
    struct gq_park *p = gq_park_new(c->d, GQ_PARK_SSE, c->req, 15);
    if (p == NULL) {
        err(c, GQ_EBUSY, NULL, "too many parked requests and streams");
        return;
    }
    p->cls = cls;
    p->seq = seq;
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_send_reply_start(c->req, 200, "OK");
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, ": gpuq events\n\n");
    evhttp_send_reply_chunk(c->req, b);
    evbuffer_free(b);
}

/*
 * About the memory an event stream's unsent output holds: its bytes, or
 * SSE_PIECE per piece if that is more.  Each event is a piece of its own
 * in libevent's buffer, of at least 1 KiB (libevent's smallest chain)
 * however short the event, so bytes alone would let a stream that is
 * not read hold seven times SSE_BACKLOG.  Counting the pieces walks
 * them, so only outputs of some length are counted.
 */
static size_t
sse_backlog(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    size_t len = evbuffer_get_length(out), mem;
    if (len < SSE_BACKLOG / 16)
        return len;
    mem = (size_t)evbuffer_peek(out, -1, NULL, NULL, 0) * SSE_PIECE;
    return mem > len ? mem : len;
}

void
gq_http_sse_send(struct gq_daemon *d, json_t *ev)
{
    struct gq_park *p, *next;
    char *text = NULL;
    size_t len = 0;
    struct evbuffer *b = NULL;
    const char *name = json_string_value(json_object_get(ev, "class"));
    int cls = name ? gq_sched_class(d->sched, name) : -1;
    uint64_t seq = 0;
    gq_job_parse_id(json_string_value(json_object_get(ev, "id")), &seq);
    /* Every subscriber is looked at once per event, so what is done per
     * subscriber stays small: an integer class test, and the event is
     * formatted once and copied. */
    for (p = d->parks[GQ_PARK_SSE]; p; p = next) {
        next = p->next;
        if (p->cls >= 0 && p->cls != cls)
            continue;
        if (p->seq && p->seq != seq)
            continue;
        struct bufferevent *bev =
            p->evcon ? evhttp_connection_get_bufferevent(p->evcon) : NULL;
        if (bev && sse_backlog(bev) > SSE_BACKLOG) {
            net.cut_reader++;
            if (net_log_ok(NET_LOG_READER))
                gq_log(GQ_LOG_WARN, "an event stream was not read (over %d "
                       "KiB waiting); closing it (%" PRIu64 " so far)",
                       SSE_BACKLOG / 1024, net.cut_reader);
            struct evhttp_connection *evcon = p->evcon;
            gq_park_free(p);
            evhttp_connection_free(evcon); /* frees the request too */
            continue;
        }
        if (b == NULL) {
            char *json = json_dumps(ev, JSON_COMPACT);
            b = evbuffer_new();
            if (json == NULL || b == NULL ||
                asprintf(&text, "event: job\ndata: %s\n\n", json) < 0) {
                free(json);
                text = NULL;
                break;
            }
            free(json);
            len = strlen(text);
        }
        evbuffer_add(b, text, len);
        evhttp_send_reply_chunk(p->req, b);
        /* It takes b's contents, except when it sends nothing (the
         * connection is gone): then they must not reach the next one. */
        evbuffer_drain(b, evbuffer_get_length(b));
    }
    if (b)
        evbuffer_free(b);
    free(text);
}

/* --- worker leases --- */

void
gq_http_grant(struct gq_daemon *d, struct gq_park *p,
              const struct gq_jobrec *r, double ttl)
{
    char lid[64], jid[32];
    snprintf(lid, sizeof lid, "j%" PRIu64 ".%" PRIu64, r->seq, r->token);
    if (p->type == GQ_PARK_LEASE)
        gq_reply(d, p->req, 200,
                 json_pack("{s:s, s:I, s:o, s:o}", "lease_id", lid, "token",
                           (json_int_t)r->token, "ttl", num_json(ttl), "job",
                           gq_job_json(d, r)));
    else
        gq_reply(d, p->req, 200,
                 json_pack("{s:s, s:I, s:o, s:s}", "lock_id", lid, "token",
                           (json_int_t)r->token, "ttl", num_json(ttl), "job_id",
                           gq_job_id(r->seq, jid, sizeof jid)));
}

static void
h_lease(struct ctx *c)
{
    static const char *const fields[] = {"classes", "wait", "worker", NULL};
    const char *worker = NULL;
    double wait = 0;
    uint8_t want[GQ_MAX_CLASSES] = {0};
    json_t *cl = json_object_get(c->body, "classes"), *v;
    size_t i;
    if (check_fields(c, fields) < 0 || opt_num(c, "wait", 0, 300, &wait) < 0 ||
        opt_str(c, "worker", 63, 0, &worker) < 0)
        return;
    if (!json_is_array(cl) || json_array_size(cl) == 0) {
        err(c, GQ_EINVAL, "classes", "classes must be a non-empty array of "
            "class names");
        return;
    }
    json_array_foreach(cl, i, v)
    {
        int k;
        if (!json_is_string(v)) {
            err(c, GQ_EINVAL, "classes", "classes must hold strings");
            return;
        }
        if ((k = gq_sched_class(c->d->sched, json_string_value(v))) < 0) {
            err(c, GQ_ENOCLASS, "classes", "unknown class %s",
                json_string_value(v));
            return;
        }
        if (class_ok(c, k, "classes") < 0)
            return;
        want[k] = 1;
    }
    if (c->d->draining) {
        err(c, GQ_EDRAINING, NULL, "the daemon is draining");
        return;
    }
    struct gq_park *p = gq_park_new(c->d, GQ_PARK_LEASE, c->req, wait);
    if (p == NULL) {
        err(c, GQ_EBUSY, NULL, "too many parked requests");
        return;
    }
    for (int k = 0; k < GQ_MAX_CLASSES; k++)
        if ((p->classes[k] = want[k]) != 0)
            c->d->waiting_workers[k]++;
    if (worker)
        snprintf(p->worker, sizeof p->worker, "%s", worker);
    gq_kick(c->d);
}

static void
heartbeat(struct ctx *c)
{
    uint64_t seq, token;
    double ttl;
    int yield;
    if (param_lease(c, &seq, &token) < 0 || job_ok(c, seq, NULL) < 0 ||
        body_token(c, token) < 0)
        return;
    int rc = gq_op_heartbeat(c->d, seq, token, &ttl, &yield);
    if (rc < 0) {
        err(c, rc, rc == GQ_ESTALE ? "token" : NULL,
            "the lease is no longer live (expired, cancelled or re-granted)");
        return;
    }
    gq_reply(c->d, c->req, 200,
             json_pack("{s:o, s:b}", "ttl", num_json(ttl), "yield", yield));
}

static void
finish(struct ctx *c, struct gq_finish *f)
{
    uint64_t seq, token;
    struct gq_jobrec r = {0};
    if (param_lease(c, &seq, &token) < 0 || job_ok(c, seq, NULL) < 0 ||
        body_token(c, token) < 0)
        return;
    int rc = gq_op_finish(c->d, seq, token, f, &r);
    if (rc == GQ_ESTALE)
        err(c, rc, "token",
            "the lease is no longer live (expired, cancelled or re-granted)");
    else if (rc == GQ_ENOENT)
        err(c, rc, NULL, "no such lease");
    else if (rc < 0)
        op_err(c, rc, NULL);
    else
        gq_reply(c->d, c->req, 200, gq_job_json(c->d, &r));
    gq_jobrec_clear(&r);
}

static void
h_complete(struct ctx *c)
{
    static const char *const fields[] = {"token", "result", NULL};
    struct gq_finish f = {GQ_END_COMPLETE, NULL, NULL, NULL, 0, 0};
    if (check_fields(c, fields) < 0)
        return;
    f.result = json_object_get(c->body, "result");
    finish(c, &f);
}

static void
h_fail(struct ctx *c)
{
    static const char *const fields[] = {"token", "error", "retryable", NULL};
    struct gq_finish f = {GQ_END_FAIL, NULL, NULL, NULL, 1, 0};
    json_t *e = json_object_get(c->body, "error");
    json_t *rt = json_object_get(c->body, "retryable");
    if (check_fields(c, fields) < 0)
        return;
    if (json_is_string(e)) {
        f.err_msg = json_string_value(e);
    } else if (json_is_object(e)) {
        json_t *code = json_object_get(e, "code");
        json_t *msg = json_object_get(e, "message");
        if ((code && !json_is_string(code)) || (msg && !json_is_string(msg))) {
            err(c, GQ_EINVAL, "error", "error.code and error.message must "
                "be strings");
            return;
        }
        f.err_code = json_string_value(code);
        f.err_msg = json_string_value(msg);
    } else if (e && !json_is_null(e)) {
        err(c, GQ_EINVAL, "error", "error must be a string or an object");
        return;
    }
    if (f.err_code && strlen(f.err_code) > 64) {
        err(c, GQ_EINVAL, "error", "error.code is over 64 bytes");
        return;
    }
    if (rt && !json_is_boolean(rt)) {
        err(c, GQ_EINVAL, "retryable", "retryable must be a boolean");
        return;
    }
    if (rt)
        f.retryable = json_is_true(rt);
    finish(c, &f);
}

static void
h_yield(struct ctx *c)
{
    static const char *const fields[] = {"token", "progress", NULL};
    struct gq_finish f = {GQ_END_YIELD, NULL, NULL, NULL, 0, 0};
    if (check_fields(c, fields) < 0)
        return;
    f.result = json_object_get(c->body, "progress");
    finish(c, &f);
}

/* --- locks --- */

static void
h_lock(struct ctx *c)
{
    static const char *const fields[] = {"class", "holder", "metadata",
                                         "wait", "priority", NULL};
    struct gq_submit s = {0};
    json_int_t prio = 0;
    double wait = 30;
    struct gq_jobrec r = {0};
    int created;
    if (check_fields(c, fields) < 0 ||
        opt_str(c, "class", GQ_NAME_MAX - 1, 1, &s.cls) < 0 ||
        opt_str(c, "holder", 200, 0, &s.holder) < 0 ||
        opt_obj(c, "metadata", &s.metadata) < 0 ||
        opt_num(c, "wait", 0, 3600, &wait) < 0 ||
        opt_int(c, "priority", -1000, 1000, &prio) < 0 ||
        class_ok(c, gq_sched_class(c->d->sched, s.cls), "class") < 0)
        return;
    if (c->d->nparked >= c->d->cfg.max_parked) {
        err(c, GQ_EBUSY, NULL, "too many parked requests");
        return;
    }
    s.priority = (int32_t)prio;
    s.kind = GQ_KIND_LOCK;
    s.queue_timeout = 0;
    int rc = gq_op_submit(c->d, &s, &r, &created);
    if (rc < 0) {
        if (rc == GQ_ENOCLASS)
            err(c, rc, "class", "unknown class %s", s.cls);
        else
            op_err(c, rc, NULL);
        return;
    }
    struct gq_park *p = gq_park_new(c->d, GQ_PARK_LOCK, c->req, wait);
    struct gq_job *j = gq_jobtab_get(&c->d->jobs, r.seq);
    if (p == NULL || j == NULL) {
        if (p)
            gq_park_free(p);
        err(c, GQ_EBUSY, NULL, "too many parked requests");
        gq_op_abandon(c->d, r.seq, GQ_CANCELLED);
    } else {
        p->seq = r.seq;
        j->owner = p;
    }
    gq_jobrec_clear(&r);
}

/* POST /v1/leases/{id}/heartbeat and /v1/locks/{id}/heartbeat. */
static void
h_heartbeat(struct ctx *c)
{
    static const char *const fields[] = {"token", NULL};
    if (check_fields(c, fields) < 0)
        return;
    heartbeat(c);
}

static void
h_unlock(struct ctx *c)
{
    uint64_t seq, token;
    const char *t = evhttp_find_header(&c->query, "token");
    char *end;
    struct gq_finish f = {GQ_END_RELEASE, NULL, NULL, NULL, 0, 0};
    struct gq_jobrec r = {0};
    if (param_lease(c, &seq, &token) < 0 || job_ok(c, seq, NULL) < 0)
        return;
    if (t == NULL || *t < '0' || *t > '9') {
        err(c, GQ_EINVAL, "token", "token (query) must be an integer");
        return;
    }
    uint64_t given = strtoull(t, &end, 10);
    if (*end != '\0') {
        err(c, GQ_EINVAL, "token", "token (query) must be an integer");
        return;
    }
    if (given != token) {
        err(c, GQ_ESTALE, "token", "the token is not this lock's");
        return;
    }
    int rc = gq_op_finish(c->d, seq, token, &f, &r);
    if (rc == GQ_ESTALE)
        err(c, rc, "token", "the lock is no longer held with this token");
    else if (rc == GQ_ENOENT)
        err(c, rc, NULL, "no such lock");
    else if (rc < 0)
        op_err(c, rc, NULL);
    else
        gq_reply(c->d, c->req, 200, gq_job_json(c->d, &r));
    gq_jobrec_clear(&r);
}

/* --- status, health, metrics, drain --- */

static void
h_status(struct ctx *c)
{
    struct gq_daemon *d = c->d;
    int64_t now = gq_now();
    json_t *slots = json_array(), *classes = json_array();
    char id[32];
    for (int s = 0; s < gq_sched_nslots(d->sched); s++) {
        struct gq_job *j = gq_sched_slot(d->sched, s);
        json_t *o = json_pack("{s:i}", "slot", s);
        if (j) {
            struct gq_jobrec r = {0};
            json_object_set_new(o, "job", json_string(gq_job_id(j->seq, id,
                                                                sizeof id)));
            json_object_set_new(
                o, "class",
                json_string(gq_sched_conf(d->sched, j->cls)->name));
            json_object_set_new(
                o, "kind", json_string(gq_kind_str((enum gq_kind)j->kind)));
            /* Who holds it and why is for the tokens of its class. */
            if (!gq_principal_may(&c->who, j->cls)) {
                json_object_set_new(o, "holder", json_null());
                json_object_set_new(o, "metadata", json_null());
            } else if (gq_get(d, j->seq, &r) == 0) {
                json_object_set_new(o, "holder", str_json(r.holder));
                json_object_set_new(o, "metadata", text_json(r.metadata));
            }
            gq_jobrec_clear(&r);
            json_object_set_new(o, "held_ms",
                                json_integer((now - j->grant_us) / 1000));
        } else {
            json_object_set_new(o, "job", json_null());
        }
        json_array_append_new(slots, o);
    }
    for (int k = 0; k < gq_sched_nclasses(d->sched); k++) {
        const struct gq_class_conf *cc = gq_sched_conf(d->sched, k);
        struct gq_class_stats st;
        double tier_w = 0;
        gq_sched_stats(d->sched, k, &st);
        for (int o = 0; o < gq_sched_nclasses(d->sched); o++)
            if (gq_sched_conf(d->sched, o)->priority == cc->priority)
                tier_w += gq_sched_conf(d->sched, o)->weight;
        json_array_append_new(
            classes,
            json_pack("{s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:I, s:f, "
                      "s:f, s:i, s:I, s:i}",
                      "name", cc->name, "priority", cc->priority, "weight",
                      num_json(cc->weight), "max_consecutive", cc->max_consecutive,
                      "ready", (int)st.ready, "backoff", (int)st.backoff,
                      "running", (int)st.running, "queued",
                      (int)(st.ready + st.backoff), "oldest_wait_ms",
                      (json_int_t)(st.oldest_enq_us
                                       ? (now - st.oldest_enq_us) / 1000
                                       : 0),
                      "share", st.share, "target_share",
                      tier_w > 0 ? cc->weight / tier_w : 0, "streak",
                      (int)st.streak, "grants", (json_int_t)st.grants,
                      "workers_waiting", d->waiting_workers[k]));
        json_t *ce = json_array_get(classes, json_array_size(classes) - 1);
        const struct gq_class_exec *cx = &d->cfg.exec[k];
        static const char *const exnames[] = {"worker", "transcribe",
                                              "summarize", "chat"};
        json_object_set_new(ce, "executor",
                            json_string(exnames[cx->executor]));
        json_object_set_new(
            ce, "hold_p50_ms",
            json_integer((json_int_t)(gq_ring_quantile(
                                          &d->metrics.hold_recent[k], 0.5) *
                                      1e3)));
        json_object_set_new(
            ce, "hold_p99_ms",
            json_integer((json_int_t)(gq_ring_quantile(
                                          &d->metrics.hold_recent[k], 0.99) *
                                      1e3)));
        if (cx->executor != GQ_EXEC_WORKER) {
            json_object_set_new(ce, "backend",
                                json_string(d->cfg.backends[cx->backend].name));
            json_object_set_new(ce, "max_hold_ms",
                                json_integer((json_int_t)(cx->max_hold * 1e3)));
        }
        if (cx->executor == GQ_EXEC_CHAT) {
            const struct gq_ring *fr = &d->metrics.first_token_recent[k];
            json_object_set_new(
                ce, "chat_wait_p50_ms",
                json_integer((json_int_t)(gq_ring_quantile(fr, 0.5) * 1e3)));
            json_object_set_new(
                ce, "chat_wait_p99_ms",
                json_integer((json_int_t)(gq_ring_quantile(fr, 0.99) * 1e3)));
        }
    }
    json_t *backends = json_array();
    for (int b = 0; b < d->nbackends; b++) {
        const struct gq_backend *bk = &d->backends[b];
        static const char *const types[] = {"whisper-cpp", "openai",
                                            "ollama"};
        json_array_append_new(
            backends,
            json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:I, s:I, s:I, "
                      "s:f, s:f, s:f, s:s}",
                      "name", bk->conf.name, "type", types[bk->conf.type],
                      "url", bk->conf.url, "state",
                      gq_breaker_str(bk->breaker), "healthy", bk->healthy,
                      "inflight", bk->inflight, "max_concurrency",
                      bk->conf.max_concurrency, "calls",
                      (json_int_t)bk->calls, "errors_retryable",
                      (json_int_t)d->metrics.backend_errors[b][0],
                      "errors_fatal",
                      (json_int_t)d->metrics.backend_errors[b][1],
                      "s_per_audio_s", bk->s_per_audio_s,
                      "s_per_prompt_token", bk->s_per_prompt_tok,
                      "s_per_output_token", bk->s_per_out_tok, "last_error",
                      bk->last_error));
    }
    gq_reply(d, c->req, 200,
             json_pack("{s:s, s:I, s:b, s:s, s:o, s:o, s:o}", "version",
                       GQ_VERSION, "uptime_s",
                       (json_int_t)((now - d->started_us) / 1000000),
                       "draining", d->draining, "share_by",
                       d->cfg.share_by == GQ_SHARE_GRANTS ? "grants"
                                                          : "time",
                       "slots", slots, "classes", classes, "backends",
                       backends));
}

static void
h_health(struct ctx *c)
{
    if (c->d->draining)
        gq_reply(c->d, c->req, 503, json_pack("{s:s}", "status", "draining"));
    else
        gq_reply(c->d, c->req, 200, json_pack("{s:s}", "status", "ok"));
}

/* v as a Prometheus label value (\, " and newline escaped), in buf. */
static const char *
label_esc(const char *v, char *buf, size_t len)
{
    size_t n = 0;
    for (; *v != '\0' && n + 3 < len; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            buf[n++] = '\\';
            buf[n++] = *v == '\n' ? 'n' : *v;
        } else {
            buf[n++] = *v;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* One histogram's series; labels is "" or 'name="value",...'. */
static void
hist_out(struct evbuffer *b, const char *name, const char *labels,
         const struct gq_hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < GQ_HBUCKETS; i++) {
        cum += h->bucket[i];
        if (i == GQ_HBUCKETS - 1)
            evbuffer_add_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n",
                                name, labels, sep, cum);
        else
            evbuffer_add_printf(b, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n",
                                name, labels, sep, gq_hist_bounds[i], cum);
    }
    if (labels[0]) {
        evbuffer_add_printf(b, "%s_sum{%s} %.9g\n", name, labels, h->sum);
        evbuffer_add_printf(b, "%s_count{%s} %" PRIu64 "\n", name, labels,
                            h->count);
    } else {
        evbuffer_add_printf(b, "%s_sum %.9g\n", name, h->sum);
        evbuffer_add_printf(b, "%s_count %" PRIu64 "\n", name, h->count);
    }
}

/*
 * GET /metrics: the Prometheus text format (0.0.4).  Every family has
 * its HELP and TYPE once, then its series; names carry their unit
 * (_seconds) and counters end in _total; label values are escaped.
 * doc/api.md lists the families.
 */
static void
h_metrics(struct ctx *c)
{
    struct gq_daemon *d = c->d;
    struct gq_metrics *m = &d->metrics;
    int n = gq_sched_nclasses(d->sched);
    int nslots = gq_sched_nslots(d->sched);
    struct evbuffer *b = evhttp_request_get_output_buffer(c->req);
    char cls[GQ_MAX_CLASSES][2 * GQ_NAME_MAX], lab[3 * GQ_NAME_MAX];
    char bk[GQ_MAX_BACKENDS][2 * GQ_NAME_MAX];
    int64_t now = gq_now(), up_us = now - d->started_us;
    uint64_t refused[2];

    for (int k = 0; k < n; k++)
        label_esc(gq_sched_conf(d->sched, k)->name, cls[k], sizeof cls[k]);
    for (int k = 0; k < d->nbackends; k++)
        label_esc(d->backends[k].conf.name, bk[k], sizeof bk[k]);

#define FAMILY(name, type, help)                                            \
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, \
                        type)
    FAMILY("gpuq_build_info", "gauge",
           "Always 1; the version of gpuqd in a label.");
    evbuffer_add_printf(b, "gpuq_build_info{version=\"%s\"} 1\n",
                        label_esc(GQ_VERSION, lab, sizeof lab));
    FAMILY("gpuq_uptime_seconds", "gauge", "Seconds since gpuqd started.");
    evbuffer_add_printf(b, "gpuq_uptime_seconds %.3f\n",
                        (double)up_us / 1e6);
    FAMILY("gpuq_jobs_submitted_total", "counter", "Jobs accepted.");
    for (int k = 0; k < n; k++)
        evbuffer_add_printf(b, "gpuq_jobs_submitted_total{class=\"%s\"} %"
                            PRIu64 "\n", cls[k], m->submitted[k]);
    FAMILY("gpuq_grants_total", "counter", "GPU grants made.");
    for (int k = 0; k < n; k++)
        evbuffer_add_printf(b, "gpuq_grants_total{class=\"%s\"} %" PRIu64
                            "\n", cls[k], m->grants[k]);
    FAMILY("gpuq_jobs_finished_total", "counter",
           "Jobs that reached a terminal state.");
    for (int k = 0; k < n; k++)
        for (int s = GQ_SUCCEEDED; s < GQ_NSTATES; s++)
            evbuffer_add_printf(b, "gpuq_jobs_finished_total{class=\"%s\","
                                "state=\"%s\"} %" PRIu64 "\n", cls[k],
                                gq_state_str((enum gq_state)s),
                                m->finished[k][s]);
    FAMILY("gpuq_lease_expired_total", "counter",
           "Grants whose lease ran out without a heartbeat.");
    for (int k = 0; k < n; k++)
        evbuffer_add_printf(b, "gpuq_lease_expired_total{class=\"%s\"} %"
                            PRIu64 "\n", cls[k], m->lease_expired[k]);
    FAMILY("gpuq_queue_ready", "gauge", "Jobs ready to run.");
    for (int k = 0; k < n; k++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, k, &st);
        evbuffer_add_printf(b, "gpuq_queue_ready{class=\"%s\"} %u\n",
                            cls[k], st.ready);
    }
    FAMILY("gpuq_queue_backoff", "gauge", "Jobs waiting out a retry backoff.");
    for (int k = 0; k < n; k++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, k, &st);
        evbuffer_add_printf(b, "gpuq_queue_backoff{class=\"%s\"} %u\n",
                            cls[k], st.backoff);
    }
    FAMILY("gpuq_jobs_running", "gauge",
           "Jobs holding a grant (batched riders included).");
    for (int k = 0; k < n; k++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, k, &st);
        evbuffer_add_printf(b, "gpuq_jobs_running{class=\"%s\"} %u\n",
                            cls[k], st.running);
    }
    FAMILY("gpuq_workers_waiting", "gauge",
           "Parked lease requests that would take the class.");
    for (int k = 0; k < n; k++)
        evbuffer_add_printf(b, "gpuq_workers_waiting{class=\"%s\"} %d\n",
                            cls[k], d->waiting_workers[k]);
    FAMILY("gpuq_slots", "gauge", "GPU slots.");
    evbuffer_add_printf(b, "gpuq_slots %d\n", nslots);
    FAMILY("gpuq_slots_busy", "gauge", "GPU slots held.");
    evbuffer_add_printf(b, "gpuq_slots_busy %d\n",
                        nslots - gq_sched_free_slots(d->sched));
    FAMILY("gpuq_slot_busy_seconds_total", "counter",
           "Seconds the slot has been held since gpuqd started.");
    double busy[GQ_MAX_SLOTS];
    for (int s = 0; s < nslots && s < GQ_MAX_SLOTS; s++) {
        const struct gq_job *j = gq_sched_slot(d->sched, s);
        int64_t us = m->slot_busy_us[s];
        if (j != NULL && now > j->grant_us)
            us += now - j->grant_us;
        busy[s] = (double)us / 1e6;
        evbuffer_add_printf(b, "gpuq_slot_busy_seconds_total{slot=\"%d\"} "
                            "%.6f\n", s, busy[s]);
    }
    FAMILY("gpuq_slot_busy_ratio", "gauge",
           "Fraction of the time since gpuqd started that the slot was "
           "held.");
    for (int s = 0; s < nslots && s < GQ_MAX_SLOTS; s++) {
        double r = up_us > 0 ? busy[s] * 1e6 / (double)up_us : 0;
        evbuffer_add_printf(b, "gpuq_slot_busy_ratio{slot=\"%d\"} %.6f\n", s,
                            r < 0 ? 0 : r > 1 ? 1 : r);
    }
    FAMILY("gpuq_parked_requests", "gauge",
           "Long-polls and event streams held open.");
    evbuffer_add_printf(b, "gpuq_parked_requests %d\n", d->nparked);
    FAMILY("gpuq_store_commits_total", "counter", "Group commits.");
    evbuffer_add_printf(b, "gpuq_store_commits_total %" PRIu64 "\n",
                        m->commits);
    FAMILY("gpuq_store_commit_failures_total", "counter",
           "Group commits that failed (their replies were 503s).");
    evbuffer_add_printf(b, "gpuq_store_commit_failures_total %" PRIu64 "\n",
                        m->commit_failures);
    FAMILY("gpuq_wait_seconds", "histogram", "Queued to granted.");
    for (int k = 0; k < n; k++) {
        snprintf(lab, sizeof lab, "class=\"%.127s\"", cls[k]);
        hist_out(b, "gpuq_wait_seconds", lab, &m->wait[k]);
    }
    FAMILY("gpuq_hold_seconds", "histogram", "Length of grants.");
    for (int k = 0; k < n; k++) {
        snprintf(lab, sizeof lab, "class=\"%.127s\"", cls[k]);
        hist_out(b, "gpuq_hold_seconds", lab, &m->hold[k]);
    }
    FAMILY("gpuq_handoff_seconds", "histogram",
           "Slot freed with work waiting to the next grant's reply sent.");
    hist_out(b, "gpuq_handoff_seconds", "", &m->handoff);
    FAMILY("gpuq_loop_turn_seconds", "histogram",
           "End-of-turn work: dispatch, group commit, replies.");
    hist_out(b, "gpuq_loop_turn_seconds", "", &m->turn);
    FAMILY("gpuq_store_commit_seconds", "histogram",
           "One group commit, fsync included.");
    hist_out(b, "gpuq_store_commit_seconds", "", &m->commit);
    FAMILY("gpuq_chat_first_token_seconds", "histogram",
           "Entry into the queue to the first streamed token, chat classes.");
    for (int k = 0; k < n; k++) {
        if (d->cfg.exec[k].executor != GQ_EXEC_CHAT)
            continue;
        snprintf(lab, sizeof lab, "class=\"%.127s\"", cls[k]);
        hist_out(b, "gpuq_chat_first_token_seconds", lab,
                 &m->first_token[k]);
    }
    FAMILY("gpuq_backend_up", "gauge",
           "1 while the backend's circuit is closed.");
    for (int k = 0; k < d->nbackends; k++)
        evbuffer_add_printf(b, "gpuq_backend_up{backend=\"%s\"} %d\n", bk[k],
                            d->backends[k].breaker == GQ_BREAKER_CLOSED);
    FAMILY("gpuq_backend_errors_total", "counter",
           "Failed backend calls by kind.");
    for (int k = 0; k < d->nbackends; k++) {
        evbuffer_add_printf(b, "gpuq_backend_errors_total{backend=\"%s\","
                            "kind=\"retryable\"} %" PRIu64 "\n", bk[k],
                            m->backend_errors[k][0]);
        evbuffer_add_printf(b, "gpuq_backend_errors_total{backend=\"%s\","
                            "kind=\"fatal\"} %" PRIu64 "\n", bk[k],
                            m->backend_errors[k][1]);
    }
    FAMILY("gpuq_auth_refused_total", "counter",
           "Requests refused for their API token (401 unauthorized, 403 "
           "forbidden).");
    gq_auth_counts(d->auth, refused);
    evbuffer_add_printf(b, "gpuq_auth_refused_total{code=\"unauthorized\"} %"
                        PRIu64 "\n", refused[0]);
    evbuffer_add_printf(b, "gpuq_auth_refused_total{code=\"forbidden\"} %"
                        PRIu64 "\n", refused[1]);
    FAMILY("gpuq_connections_closed_total", "counter",
           "Connections closed by gpuqd for their pace: a request not "
           "received within request_timeout, an event stream not read.");
    evbuffer_add_printf(b, "gpuq_connections_closed_total{reason="
                        "\"request_timeout\"} %" PRIu64 "\n", net.cut_slow);
    evbuffer_add_printf(b, "gpuq_connections_closed_total{reason="
                        "\"slow_reader\"} %" PRIu64 "\n", net.cut_reader);
    FAMILY("gpuq_accept_pauses_total", "counter",
           "Times gpuqd stopped accepting connections for 100 ms because "
           "accept() failed (out of file descriptors).");
    evbuffer_add_printf(b, "gpuq_accept_pauses_total %" PRIu64 "\n",
                        net.accept_pauses);
#undef FAMILY
    evhttp_add_header(evhttp_request_get_output_headers(c->req),
                      "Content-Type", "text/plain; version=0.0.4; "
                      "charset=utf-8");
    evhttp_send_reply(c->req, 200, "OK", NULL);
}

static void
h_drain(struct ctx *c)
{
    static const char *const fields[] = {"deadline", NULL};
    double deadline = c->d->cfg.drain_timeout;
    if (check_fields(c, fields) < 0 ||
        opt_num(c, "deadline", 0, 86400, &deadline) < 0)
        return;
    gq_reply(c->d, c->req, 202, json_pack("{s:b}", "draining", 1));
    gq_daemon_drain(c->d, deadline);
}

/* --- token streams and drop-in endpoints --- */

static void
stream_write(struct gq_park *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
stream_write(struct gq_park *p, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    va_list ap;
    if (b == NULL)
        return;
    if (!p->started) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
        int ndjson = p->fmt == GQ_FMT_OLLAMA;
        evhttp_add_header(h, "Content-Type", ndjson ? "application/x-ndjson"
                                                    : "text/event-stream");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_send_reply_start(p->req, 200, "OK");
        p->started = 1;
    }
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evhttp_send_reply_chunk(p->req, b);
    evbuffer_free(b);
}

static char *
dump(json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    return t;
}

static const char *
model_of(struct gq_daemon *d, uint64_t seq, json_t *payload, char *buf,
         size_t len)
{
    const char *m = json_string_value(json_object_get(payload, "model"));
    (void)d;
    (void)seq;
    snprintf(buf, len, "%s", m ? m : "gpuq");
    return buf;
}

/* One piece of text in a park's format. */
static void
stream_piece(struct gq_park *p, const char *text, size_t len)
{
    char id[48], model[128], at[96];
    char *t;
    json_t *payload = NULL;
    struct gq_jobrec r = {0};
    if (p->fmt == GQ_FMT_OPENAI_FULL || p->fmt == GQ_FMT_OLLAMA_FULL)
        return;
    if (p->fmt != GQ_FMT_GPUQ && gq_get(p->d, p->seq, &r) == 0)
        payload = json_loads(r.payload ? r.payload : "null", JSON_DECODE_ANY,
                             NULL);
    gq_jobrec_clear(&r);
    model_of(p->d, p->seq, payload, model, sizeof model);
    json_decref(payload);
    snprintf(id, sizeof id, "chatcmpl-gpuq-j%" PRIu64, p->seq);
    switch (p->fmt) {
    case GQ_FMT_GPUQ:
        t = dump(json_pack("{s:s%}", "text", text, len));
        stream_write(p, "event: token\ndata: %s\n\n", t);
        break;
    case GQ_FMT_OPENAI:
        t = dump(json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s%}, s:n}]}",
                           "id", id, "object", "chat.completion.chunk",
                           "created", (json_int_t)time(NULL), "model", model,
                           "choices", "index", 0, "delta", "content", text,
                           len, "finish_reason"));
        stream_write(p, "data: %s\n\n", t);
        break;
    case GQ_FMT_OLLAMA:
        fmt_time((int64_t)time(NULL) * 1000000, at, sizeof at);
        t = dump(json_pack("{s:s, s:s, s:{s:s, s:s%}, s:b}", "model", model,
                           "created_at", at, "message", "role", "assistant",
                           "content", text, len, "done", 0));
        stream_write(p, "%s\n", t);
        break;
    default:
        return;
    }
    free(t);
}

void
gq_http_stream_token(struct gq_daemon *d, uint64_t seq, const char *text,
                     size_t len)
{
    for (struct gq_park *p = d->parks[GQ_PARK_STREAM]; p; p = p->next)
        if (p->seq == seq)
            stream_piece(p, text, len);
}

/* The status a drop-in answers with for a job that did not succeed. */
static int
failed_status(int state)
{
    switch (state) {
    case GQ_CANCELLED: return 409;
    case GQ_EXPIRED: return 504;
    default: return 502;
    }
}

/* Answers a whisper.cpp- or OpenAI-style transcription request (the
 * daemon removes the upload when the job ends, whatever the end). */
static void
whisper_finish(struct gq_daemon *d, struct gq_park *p,
               const struct gq_jobrec *r, json_t *res)
{
    if (r->state != GQ_SUCCEEDED) {
        gq_reply(d, p->req, failed_status(r->state),
                 json_pack("{s:{s:s, s:s}}", "error", "code",
                           r->err_code ? r->err_code : "failed", "message",
                           r->err_msg ? r->err_msg : "the job failed"));
        return;
    }
    const char *text = json_string_value(json_object_get(res, "text"));
    if (p->fmt == GQ_FMT_WHISPER_TEXT) {
        struct evbuffer *b = evhttp_request_get_output_buffer(p->req);
        evbuffer_add_printf(b, "%s\n", text ? text : "");
        evhttp_add_header(evhttp_request_get_output_headers(p->req),
                          "Content-Type", "text/plain; charset=utf-8");
        gq_reply(d, p->req, 200, NULL);
    } else if (p->fmt == GQ_FMT_WHISPER_JSON) {
        gq_reply(d, p->req, 200, json_pack("{s:s}", "text", text ? text : ""));
    } else {
        json_t *o = json_pack("{s:s, s:O, s:O, s:O, s:O}", "task",
                              "transcribe", "language",
                              json_object_get(res, "language"), "duration",
                              json_object_get(res, "duration"), "text",
                              json_object_get(res, "text"), "segments",
                              json_object_get(res, "segments"));
        gq_reply(d, p->req, 200, o);
    }
}

static void
stream_finish(struct gq_daemon *d, struct gq_park *p, const struct gq_jobrec *r)
{
    json_t *res = text_json(r->result);
    int ok = r->state == GQ_SUCCEEDED;
    char at[96];
    const char *content = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(res, "choices"), 0),
                        "message"),
        "content"));
    json_t *errj = json_pack("{s:{s:s, s:s}}", "error", "code",
                             r->err_code ? r->err_code : "failed", "message",
                             r->err_msg ? r->err_msg : "the job failed");
    char *t;
    switch (p->fmt) {
    case GQ_FMT_GPUQ:
        if (!p->started && content)
            stream_piece(p, content, strlen(content));
        t = dump(gq_job_json(d, r));
        stream_write(p, "event: done\ndata: %s\n\n", t);
        free(t);
        evhttp_send_reply_end(p->req);
        break;
    case GQ_FMT_OPENAI:
        if (ok && !p->started && content)
            stream_piece(p, content, strlen(content));
        if (ok) {
            json_t *fin = json_deep_copy(res);
            json_t *ch = json_array_get(json_object_get(fin, "choices"), 0);
            json_object_del(ch, "message");
            json_object_set_new(ch, "delta", json_object());
            json_object_set_new(fin, "object",
                                json_string("chat.completion.chunk"));
            t = dump(fin);
        } else {
            t = dump(json_incref(errj));
        }
        stream_write(p, "data: %s\n\ndata: [DONE]\n\n", t);
        free(t);
        evhttp_send_reply_end(p->req);
        break;
    case GQ_FMT_OLLAMA:
        fmt_time((int64_t)time(NULL) * 1000000, at, sizeof at);
        if (ok && !p->started && content)
            stream_piece(p, content, strlen(content));
        if (ok) {
            json_t *u = json_object_get(res, "usage");
            t = dump(json_pack(
                "{s:O, s:s, s:{s:s, s:s}, s:b, s:O, s:O, s:O}", "model",
                json_object_get(res, "model"), "created_at", at, "message",
                "role", "assistant", "content", "", "done", 1, "done_reason",
                json_object_get(json_array_get(json_object_get(res, "choices"),
                                               0),
                                "finish_reason"),
                "prompt_eval_count", json_object_get(u, "prompt_tokens"),
                "eval_count", json_object_get(u, "completion_tokens")));
        } else {
            t = dump(json_pack("{s:s}", "error",
                               r->err_msg ? r->err_msg : "the job failed"));
        }
        stream_write(p, "%s\n", t);
        free(t);
        evhttp_send_reply_end(p->req);
        break;
    case GQ_FMT_OPENAI_FULL:
        if (ok)
            gq_reply(d, p->req, 200, json_incref(res));
        else
            gq_reply(d, p->req, failed_status(r->state), json_incref(errj));
        break;
    case GQ_FMT_WHISPER_JSON:
    case GQ_FMT_WHISPER_VERBOSE:
    case GQ_FMT_WHISPER_TEXT:
        whisper_finish(d, p, r, res);
        break;
    case GQ_FMT_OLLAMA_FULL:
        fmt_time((int64_t)time(NULL) * 1000000, at, sizeof at);
        if (ok) {
            json_t *u = json_object_get(res, "usage");
            gq_reply(d, p->req, 200,
                     json_pack("{s:O, s:s, s:{s:s, s:s}, s:b, s:O, s:O, s:O}",
                               "model", json_object_get(res, "model"),
                               "created_at", at, "message", "role",
                               "assistant", "content", content ? content : "",
                               "done", 1, "done_reason",
                               json_object_get(json_array_get(
                                                   json_object_get(res,
                                                                   "choices"),
                                                   0),
                                               "finish_reason"),
                               "prompt_eval_count",
                               json_object_get(u, "prompt_tokens"),
                               "eval_count",
                               json_object_get(u, "completion_tokens")));
        } else {
            gq_reply(d, p->req, failed_status(r->state),
                     json_pack("{s:s}", "error",
                               r->err_msg ? r->err_msg : "the job failed"));
        }
        break;
    }
    json_decref(errj);
    json_decref(res);
}

void
gq_http_stream_end(struct gq_daemon *d, const struct gq_jobrec *r)
{
    struct gq_park *p, *next;
    for (p = d->parks[GQ_PARK_STREAM]; p; p = next) {
        next = p->next;
        if (p->seq != r->seq)
            continue;
        stream_finish(d, p, r);
        gq_park_free(p);
    }
}

/* Parks req on the job's stream; replies at once if it is finished. */
static void
park_stream(struct ctx *c, uint64_t seq, enum gq_stream_fmt fmt,
            const struct gq_jobrec *r)
{
    if (gq_state_terminal((enum gq_state)r->state)) {
        struct gq_park tmp = {0};
        tmp.type = GQ_PARK_STREAM;
        tmp.d = c->d;
        tmp.req = c->req;
        tmp.seq = seq;
        tmp.fmt = fmt;
        stream_finish(c->d, &tmp, r);
        return;
    }
    struct gq_park *p = gq_park_new(c->d, GQ_PARK_STREAM, c->req, 0);
    if (p == NULL) {
        err(c, GQ_EBUSY, NULL, "too many parked requests and streams");
        return;
    }
    evtimer_del(p->timer); /* the backend's timeout bounds the wait */
    p->seq = seq;
    p->fmt = fmt;
    /* A listener that joins late gets the text so far. */
    struct gq_runctx *rc = gq_daemon_run_of(c->d, seq);
    if (rc && rc->len > 0)
        stream_piece(p, rc->text, rc->len);
}

static void
h_stream(struct ctx *c)
{
    uint64_t seq;
    struct gq_jobrec r = {0};
    if (param_job(c, &seq) < 0 || job_ok(c, seq, NULL) < 0)
        return;
    int rc = gq_get(c->d, seq, &r);
    if (rc < 0)
        op_err(c, rc, NULL);
    else
        park_stream(c, seq, GQ_FMT_GPUQ, &r);
    gq_jobrec_clear(&r);
}

/* The first class with executor e, preferring one the caller may use;
 * -1 if none. */
static int
first_class_of(struct ctx *c, enum gq_executor e)
{
    int any = -1;
    for (int k = 0; k < gq_sched_nclasses(c->d->sched); k++) {
        if (c->d->cfg.exec[k].executor != e)
            continue;
        if (gq_principal_may(&c->who, k))
            return k;
        if (any < 0)
            any = k;
    }
    return any;
}

/* The class of a drop-in chat request: X-Gpuq-Class, the [models] map,
 * or the first class whose executor is chat (one of the caller's if it
 * has one).  -1 after replying 4xx. */
static int
dropin_class(struct ctx *c, const char *model)
{
    struct gq_daemon *d = c->d;
    const char *h = evhttp_find_header(
        evhttp_request_get_input_headers(c->req), "X-Gpuq-Class");
    int cls = -1;
    if (h) {
        if ((cls = gq_sched_class(d->sched, h)) < 0) {
            err(c, GQ_ENOCLASS, "X-Gpuq-Class", "unknown class %s", h);
            return -1;
        }
    } else {
        for (int i = 0; model && i < d->cfg.nmodels; i++)
            if (strcmp(d->cfg.model_names[i], model) == 0)
                cls = d->cfg.model_class[i];
        if (cls < 0)
            cls = first_class_of(c, GQ_EXEC_CHAT);
    }
    if (cls < 0 || d->cfg.exec[cls].executor != GQ_EXEC_CHAT) {
        err(c, GQ_EINVAL, "model", "no class with executor = chat serves "
            "this request (set X-Gpuq-Class or a [models] entry)");
        return -1;
    }
    if (class_ok(c, cls, h ? "X-Gpuq-Class" : "model") < 0)
        return -1;
    return cls;
}

static void
dropin_submit(struct ctx *c, int cls, json_t *payload, enum gq_stream_fmt fmt)
{
    struct gq_submit s = {0};
    struct gq_jobrec r = {0};
    int created;
    const char *field = "messages";
    char msg[256];
    const struct gq_exec_ops *ops = gq_executors[GQ_EXEC_CHAT];
    if (ops->validate(&c->d->cfg.exec[cls], payload, &field, msg,
                      sizeof msg) < 0) {
        err(c, GQ_EINVAL, strncmp(field, "payload.", 8) == 0 ? field + 8
                                                             : field,
            "%s", msg);
        return;
    }
    s.cls = gq_sched_conf(c->d->sched, cls)->name;
    s.payload = payload;
    s.kind = GQ_KIND_JOB;
    s.queue_timeout = -1;
    int rc = gq_op_submit(c->d, &s, &r, &created);
    if (rc < 0)
        op_err(c, rc, NULL);
    else
        park_stream(c, r.seq, fmt, &r);
    gq_jobrec_clear(&r);
}

/* POST /v1/chat/completions: OpenAI-compatible, through the queue. */
static void
h_openai_chat(struct ctx *c)
{
    const char *model = json_string_value(json_object_get(c->body, "model"));
    json_t *st = json_object_get(c->body, "stream");
    int cls = dropin_class(c, model);
    if (cls < 0)
        return;
    json_t *payload = json_deep_copy(c->body);
    json_object_del(payload, "stream");
    dropin_submit(c, cls, payload,
                  json_is_true(st) ? GQ_FMT_OPENAI : GQ_FMT_OPENAI_FULL);
    json_decref(payload);
}

/* POST /api/chat: Ollama-compatible (streams NDJSON unless stream:false). */
static void
h_ollama_chat(struct ctx *c)
{
    const char *model = json_string_value(json_object_get(c->body, "model"));
    json_t *st = json_object_get(c->body, "stream");
    json_t *opts = json_object_get(c->body, "options"), *v;
    int cls = dropin_class(c, model);
    if (cls < 0)
        return;
    json_t *payload = json_object();
    if (model)
        json_object_set_new(payload, "model", json_string(model));
    if ((v = json_object_get(c->body, "messages")))
        json_object_set(payload, "messages", v);
    if ((v = json_object_get(opts, "temperature")))
        json_object_set(payload, "temperature", v);
    if ((v = json_object_get(opts, "top_p")))
        json_object_set(payload, "top_p", v);
    if ((v = json_object_get(opts, "seed")))
        json_object_set(payload, "seed", v);
    if ((v = json_object_get(opts, "num_predict")))
        json_object_set(payload, "max_tokens", v);
    dropin_submit(c, cls, payload,
                  json_is_false(st) ? GQ_FMT_OLLAMA_FULL : GQ_FMT_OLLAMA);
    json_decref(payload);
}

/*
 * POST /inference (whisper.cpp) and POST /v1/audio/transcriptions
 * (OpenAI): a multipart upload becomes a chunked transcription job of
 * the first class whose executor is transcribe (or X-Gpuq-Class), and the
 * reply comes in the requested format when it is done.  The audio is
 * kept under data_dir/uploads until then.  whisper.cpp's /load is never
 * forwarded: gpuq has no such route.
 */
static void
transcription_dropin(struct ctx *c, int openai)
{
    struct gq_daemon *d = c->d;
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    const char *ct = evhttp_find_header(
        evhttp_request_get_input_headers(c->req), "Content-Type");
    struct gq_mp_part parts[GQ_MP_MAX_PARTS];
    char msg[256], name[64], path[1400];
    const char *h = evhttp_find_header(
        evhttp_request_get_input_headers(c->req), "X-Gpuq-Class");
    int cls = -1;
    if (h && (cls = gq_sched_class(d->sched, h)) < 0) {
        err(c, GQ_ENOCLASS, "X-Gpuq-Class", "unknown class %s", h);
        return;
    }
    if (cls < 0)
        cls = first_class_of(c, GQ_EXEC_TRANSCRIBE);
    if (cls < 0 || d->cfg.exec[cls].executor != GQ_EXEC_TRANSCRIBE) {
        err(c, GQ_EINVAL, NULL, "no class with executor = transcribe");
        return;
    }
    if (class_ok(c, cls, h ? "X-Gpuq-Class" : NULL) < 0)
        return;
    const char *body = (const char *)evbuffer_pullup(in, -1);
    int n = gq_mp_parse(ct, body, len, parts, msg, sizeof msg);
    if (n < 0) {
        err(c, GQ_EINVAL, "body", "%s", msg);
        return;
    }
    const struct gq_mp_part *file = gq_mp_get(parts, n, "file");
    if (file == NULL || file->len == 0) {
        err(c, GQ_EINVAL, "file", "the multipart field file (the audio) is "
            "required");
        return;
    }
    enum gq_stream_fmt fmt = GQ_FMT_WHISPER_JSON;
    const struct gq_mp_part *rf = gq_mp_get(parts, n, "response_format");
    if (rf) {
        if (rf->len == 12 && memcmp(rf->data, "verbose_json", 12) == 0)
            fmt = GQ_FMT_WHISPER_VERBOSE;
        else if (rf->len == 4 && memcmp(rf->data, "text", 4) == 0)
            fmt = GQ_FMT_WHISPER_TEXT;
        else if (!(rf->len == 4 && memcmp(rf->data, "json", 4) == 0)) {
            err(c, GQ_EINVAL, "response_format",
                "response_format must be json, verbose_json or text");
            return;
        }
    }
    /* The audio goes to the page cache here (no fsync: a kill -9 keeps
     * it, a power cut may not); decoding happens on a worker thread. */
    if (save_upload(d, file->data, file->len, name, sizeof name) < 0) {
        err(c, GQ_EIO, NULL, "cannot store the upload");
        return;
    }
    snprintf(path, sizeof path, "%s/%s", d->upload_dir, name);
    json_t *payload = json_pack("{s:s}", "upload", name);
    const struct gq_mp_part *lang = gq_mp_get(parts, n, "language");
    if (lang && lang->len > 0 && lang->len < 16 &&
        !(lang->len == 4 && memcmp(lang->data, "auto", 4) == 0))
        json_object_set_new(payload, "language",
                            json_stringn(lang->data, lang->len));
    const struct gq_mp_part *pr = gq_mp_get(parts, n, "prompt");
    if (pr && pr->len > 0 && pr->len < 1024)
        json_object_set_new(payload, "prompt", json_stringn(pr->data,
                                                            pr->len));
    (void)openai;
    struct gq_submit s = {0};
    struct gq_jobrec r = {0};
    int created;
    s.cls = gq_sched_conf(d->sched, cls)->name;
    s.payload = payload;
    s.kind = GQ_KIND_JOB;
    s.queue_timeout = -1;
    int rc = gq_op_submit(d, &s, &r, &created);
    if (rc < 0) {
        unlink(path);
        op_err(c, rc, NULL);
    } else {
        park_stream(c, r.seq, fmt, &r);
    }
    gq_jobrec_clear(&r);
    json_decref(payload);
}

static void
h_whisper_inference(struct ctx *c)
{
    transcription_dropin(c, 0);
}

static void
h_openai_transcriptions(struct ctx *c)
{
    transcription_dropin(c, 1);
}

/* GET / and /ui/...: the dashboard's built-in files. */
static void
h_ui(struct ctx *c)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(
        c->req));
    if (gq_ui_serve(c->req, path) < 0)
        err(c, GQ_ENOENT, NULL, "no such file");
}

/* Test hook, only with --fault-injection: arms the store's failures. */
static void
h_fault(struct ctx *c)
{
    static const char *const fields[] = {"kind", "after", NULL};
    const char *kind = NULL;
    json_int_t after = 0;
    enum gq_fault f;
    if (!c->d->fault_injection) {
        err(c, GQ_ENOENT, NULL, "no such route");
        return;
    }
    if (check_fields(c, fields) < 0 || opt_str(c, "kind", 8, 1, &kind) < 0 ||
        opt_int(c, "after", 0, 1000000, &after) < 0)
        return;
    if (strcmp(kind, "none") == 0)
        f = GQ_FAULT_NONE;
    else if (strcmp(kind, "full") == 0)
        f = GQ_FAULT_FULL;
    else if (strcmp(kind, "io") == 0)
        f = GQ_FAULT_IO;
    else {
        err(c, GQ_EINVAL, "kind", "kind must be none, full or io");
        return;
    }
    gq_log(GQ_LOG_WARN, "fault injection: %s after %d writes", kind,
           (int)after);
    gq_store_fault(f, (int)after);
    gq_reply(c->d, c->req, 200, json_pack("{s:s, s:I}", "kind", kind,
                                          "after", after));
}

/* --- routing --- */

/*
 * The routes, with the least role each needs (auth.h): SUBMIT is any
 * valid token.  With no token configured everything is open.  The
 * dashboard's files are open: they are the same for everyone, hold no
 * data, and a browser cannot send a token when it navigates; the API
 * calls the page makes need one like any other.
 */
#define R_OPEN GQ_ROLE_NONE
#define R_SUBMIT GQ_ROLE_SUBMIT
#define R_WORKER GQ_ROLE_WORKER
#define R_ADMIN GQ_ROLE_ADMIN
static const struct route routes[] = {
    {EVHTTP_REQ_POST, "/v1/jobs", h_submit, 1, R_SUBMIT},
    {EVHTTP_REQ_GET, "/v1/jobs", h_list, 0, R_SUBMIT},
    {EVHTTP_REQ_GET, "/v1/jobs/*", h_get, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/jobs/*/cancel", h_cancel, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/jobs/*/requeue", h_requeue, 0, R_SUBMIT},
    {EVHTTP_REQ_GET, "/v1/events", h_events, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/leases", h_lease, 1, R_WORKER},
    {EVHTTP_REQ_POST, "/v1/leases/*/heartbeat", h_heartbeat, 1, R_WORKER},
    {EVHTTP_REQ_POST, "/v1/leases/*/complete", h_complete, 1, R_WORKER},
    {EVHTTP_REQ_POST, "/v1/leases/*/fail", h_fail, 1, R_WORKER},
    {EVHTTP_REQ_POST, "/v1/leases/*/yield", h_yield, 1, R_WORKER},
    {EVHTTP_REQ_POST, "/v1/locks", h_lock, 1, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/locks/*/heartbeat", h_heartbeat, 1, R_SUBMIT},
    {EVHTTP_REQ_DELETE, "/v1/locks/*", h_unlock, 0, R_SUBMIT},
    {EVHTTP_REQ_GET, "/v1/status", h_status, 0, R_SUBMIT},
    {EVHTTP_REQ_GET, "/healthz", h_health, 0, R_OPEN},
    {EVHTTP_REQ_GET, "/metrics", h_metrics, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/admin/drain", h_drain, 1, R_ADMIN},
    {EVHTTP_REQ_POST, "/v1/admin/fault", h_fault, 1, R_ADMIN},
    {EVHTTP_REQ_GET, "/v1/jobs/*/stream", h_stream, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/chat/completions", h_openai_chat, 1, R_SUBMIT},
    {EVHTTP_REQ_POST, "/api/chat", h_ollama_chat, 1, R_SUBMIT},
    {EVHTTP_REQ_POST, "/inference", h_whisper_inference, 0, R_SUBMIT},
    {EVHTTP_REQ_POST, "/v1/audio/transcriptions", h_openai_transcriptions,
     0, R_SUBMIT},
    {EVHTTP_REQ_GET, "/", h_ui, 0, R_OPEN},
    {EVHTTP_REQ_GET, "/ui/*", h_ui, 0, R_OPEN},
};

/* Splits a path into at most MAX_SEGS segments (modifies buf). */
static int
split(char *buf, char **segs)
{
    int n = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/",
                                                              &save)) {
        if (n == MAX_SEGS)
            return -1;
        segs[n++] = s;
    }
    return n;
}

/* 1 if the route's pattern matches; *param gets the '*' segment. */
static int
match(const char *pattern, char **segs, int n, const char **param)
{
    char pbuf[64], *psegs[MAX_SEGS];
    snprintf(pbuf, sizeof pbuf, "%s", pattern);
    int pn = split(pbuf, psegs);
    if (pn != n)
        return 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(psegs[i], "*") == 0)
            *param = segs[i];
        else if (strcmp(psegs[i], segs[i]) != 0)
            return 0;
    }
    return 1;
}

static int
parse_body(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    json_error_t je;
    if ((long)len > c->d->cfg.max_body) {
        err(c, GQ_ETOOBIG, "body", "the body is over %ld bytes",
            c->d->cfg.max_body);
        return -1;
    }
    if (len == 0) {
        c->body = json_object();
        return 0;
    }
    const char *data = (const char *)evbuffer_pullup(in, -1);
    c->body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (c->body == NULL) {
        err(c, GQ_EINVAL, NULL, "invalid JSON at byte %d: %s", je.position,
            je.text);
        return -1;
    }
    if (!json_is_object(c->body)) {
        err(c, GQ_EINVAL, NULL, "the body must be a JSON object");
        return -1;
    }
    return 0;
}

static const char *
method_str(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "?";
}

/*
 * Who sent the request, and may they use route r?  Fills c->who; 0, or
 * -1 after replying 401 (no or a bad token, with WWW-Authenticate) or
 * 403 (a role below the route's).
 */
static int
authorize(struct ctx *c, const struct route *r)
{
    struct gq_daemon *d = c->d;
    const char *h, *why = "";
    int rc;

    if (r->need == GQ_ROLE_NONE) {
        c->who.name = "";
        c->who.role = GQ_ROLE_NONE;
        c->who.classes = 0;
        return 0;
    }
    if (d->auth == NULL && d->cfg.ntokens > 0) {
        /* Tokens without their table: refuse rather than open up. */
        err(c, GQ_EINTERNAL, NULL, "access control is not set up");
        return -1;
    }
    h = evhttp_find_header(evhttp_request_get_input_headers(c->req),
                           "Authorization");
    rc = gq_auth_verify(d->auth, h, &c->who, &why);
    if (rc < 0) {
        gq_auth_count(d->auth, rc);
        /* RFC 6750: no error code when no credentials were sent. */
        evhttp_add_header(evhttp_request_get_output_headers(c->req),
                          "WWW-Authenticate",
                          h == NULL ? "Bearer realm=\"gpuq\""
                                    : "Bearer realm=\"gpuq\", "
                                      "error=\"invalid_token\"");
        err(c, rc, "Authorization", "%s", why);
        return -1;
    }
    if (c->who.role < r->need) {
        gq_auth_count(d->auth, GQ_EFORBIDDEN);
        err(c, GQ_EFORBIDDEN, NULL, "token %s has role %s; %s %s needs "
            "role %s", c->who.name, gq_role_str(c->who.role),
            method_str(r->method), r->path, gq_role_str(r->need));
        return -1;
    }
    return 0;
}

/* Replies leave as soon as they are written.  libevent writes a reply
 * 16 KiB at a time; with Nagle's algorithm on, each piece after the
 * first waits for the client's ACK of the one before, which a client
 * delays by up to 40 ms (Linux): a 20-60 KiB reply on a keep-alive
 * connection took 44 ms instead of 1.  It fails harmlessly on the Unix
 * socket. */
static void
no_delay(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev =
        evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    int one = 1;
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void
dispatch_request(struct evhttp_request *req, void *arg)
{
    struct gq_daemon *d = arg;
    struct ctx c = {d, req, NULL, {0}, NULL, {"", GQ_ROLE_NONE, 0}};
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    char buf[512], *segs[MAX_SEGS];
    int n, path_matched = 0;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);

    if (conn_busy(req)) {
        evhttp_send_error(req, 408, NULL);
        return;
    }
    no_delay(req);
    TAILQ_INIT(&c.query);
    if (path == NULL || strlen(path) >= sizeof buf) {
        err(&c, GQ_ENOENT, NULL, "no such route");
        return;
    }
    if (query && evhttp_parse_query_str(query, &c.query) < 0) {
        err(&c, GQ_EINVAL, NULL, "malformed query string");
        return;
    }
    snprintf(buf, sizeof buf, "%s", path);
    n = split(buf, segs);
    for (size_t i = 0; n >= 0 && i < sizeof routes / sizeof routes[0]; i++) {
        const char *param = NULL;
        if (!match(routes[i].path, segs, n, &param))
            continue;
        path_matched = 1;
        if (routes[i].method != method &&
            !(method == EVHTTP_REQ_HEAD && routes[i].method == EVHTTP_REQ_GET))
            continue;
        c.param = param;
        if (authorize(&c, &routes[i]) < 0 ||
            (routes[i].has_body && parse_body(&c) < 0))
            goto out;
        routes[i].fn(&c);
        goto out;
    }
    if (path_matched)
        gq_reply(d, req, 405,
                 json_pack("{s:{s:s,s:s}}", "error", "code",
                           "method_not_allowed", "message",
                           "method not allowed on this path"));
    else
        err(&c, GQ_ENOENT, NULL, "no such route");
out:
    json_decref(c.body);
    evhttp_clear_headers(&c.query);
}

void
gq_http_setup(struct gq_daemon *d)
{
    struct timeval tv = {(time_t)d->cfg.request_timeout,
                         (suseconds_t)((d->cfg.request_timeout -
                                        floor(d->cfg.request_timeout)) *
                                       1e6)};
    net.d = d;
    evhttp_set_gencb(d->http, dispatch_request, d);
    /* Every connection's input is watched for the request deadline. */
    evhttp_set_bevcb(d->http, conn_new_cb, NULL);
    /* evhttp refuses (its own 413) bodies over twice our limit; bodies
     * between the two get our JSON 413. */
    evhttp_set_max_body_size(d->http, (ev_ssize_t)(d->cfg.max_body * 2 >
                                                   GQ_MAX_UPLOAD
                                               ? d->cfg.max_body * 2
                                               : GQ_MAX_UPLOAD));
    evhttp_set_max_headers_size(d->http, 16384);
    evhttp_set_timeout_tv(d->http, &tv);
    /* Every method reaches the router, which answers 405 as JSON. */
    evhttp_set_allowed_methods(
        d->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                     EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH |
                     EVHTTP_REQ_OPTIONS);
}
