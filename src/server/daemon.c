/*
 * daemon.c - gpuqd's job life cycle on one event loop: submit, grant,
 * heartbeat, complete/fail/yield, cancel, requeue, expiry, recovery,
 * group commit and drain.  The HTTP layer (http.c) parses and replies;
 * the policy is in core/sched.c; the bytes on disk are in store/.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <systemd/sd-daemon.h>

#include "../core/assert.h"
#include "../core/err.h"
#include "../exec/httpc.h"
#include "../exec/workq.h"
#include "auth.h"
#include "callback.h"
#include "daemon.h"
#include "log.h"

#define ASSERT(c) GQ_ASSERT(c)

static void turn_cb(evutil_socket_t fd, short what, void *arg);
static void committed(struct gq_daemon *d);
static void drop_upload(struct gq_daemon *d, struct gq_job *j,
                        const struct gq_jobrec *r);
static void arm_timer(struct gq_daemon *d);
static void slot_cb(evutil_socket_t fd, short what, void *arg);
static int recover(struct gq_daemon *d, int keep_running,
                   const uint8_t *only);
static void maybe_compact(struct gq_daemon *d);
static void notify_status(struct gq_daemon *d, int force);

/* --- clocks --- */

int64_t
gq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
gq_wall(const struct gq_daemon *d, int64_t mono)
{
    return mono ? mono + d->wall_off_us : 0;
}

static int64_t
to_mono(const struct gq_daemon *d, int64_t wall)
{
    /* A time before this boot's monotonic origin is simply "past". */
    if (wall == 0)
        return 0;
    return wall - d->wall_off_us > 0 ? wall - d->wall_off_us : 1;
}

static void
set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

static void
set_json(char **dst, json_t *v)
{
    free(*dst);
    *dst = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

/* --- batches and replies --- */

/* How long to wait before trying the store again after commit_fails
 * failed commits in a row: 10 ms, doubling to 1.28 s. */
static struct timeval
fail_backoff(const struct gq_daemon *d)
{
    long us = 10000L << (d->commit_fails < 7 ? d->commit_fails : 7);
    struct timeval tv = {us / 1000000, us % 1000000};
    return tv;
}

void
gq_kick(struct gq_daemon *d)
{
    if (d->turn_armed)
        return;
    d->turn_armed = 1;
    /*
     * While commits keep failing, every turn waits (fail_backoff), not
     * only the one a rebuild arms (turn_cb): a job whose queue deadline
     * passed would otherwise make timer_cb write, kick, fail the turn,
     * rebuild, and be loaded past its deadline again, over and over
     * without a pause.
     */
    if (d->commit_fails > 0) {
        struct timeval tv = fail_backoff(d);
        event_add(d->turn_ev, &tv);
    } else {
        event_active(d->turn_ev, EV_TIMEOUT, 0);
    }
}

int
gq_batch(struct gq_daemon *d)
{
    int rc;
    if (d->batch_failed)
        return GQ_ESTORE;
    if (d->in_batch)
        return 0;
    rc = gq_store_begin(d->store, d->errbuf);
    if (rc < 0) {
        gq_log(GQ_LOG_ERR, "store: begin: %s", d->errbuf);
        return rc;
    }
    d->in_batch = 1;
    gq_kick(d);
    return 0;
}

/* Notes a store call's result: any failure poisons the whole batch. */
static int
checked(struct gq_daemon *d, int rc, const char *what)
{
    if (rc < 0 && rc != GQ_ENOENT) {
        if (!d->batch_failed)
            gq_log(GQ_LOG_ERR, "store: %s: %s", what, d->errbuf);
        d->batch_failed = 1;
        gq_kick(d);
    }
    return rc;
}

static void
send_now(struct evhttp_request *req, int status, const char *body,
         const char *retry_after)
{
    if (req == NULL) /* its connection closed while the reply waited */
        return;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evhttp_request_get_output_buffer(req);
    const char *reason = status == 200 ? "OK" : NULL;
    if (body) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(b, body, strlen(body));
        evbuffer_add(b, "\n", 1);
    }
    if (retry_after)
        evhttp_add_header(h, "Retry-After", retry_after);
    evhttp_send_reply(req, status, reason, NULL);
}

/*
 * A connection is going away while a reply waits for the commit.  If
 * libevent has already detached the request from it (EOF or timeout),
 * the request is ours and sending the reply frees it; otherwise libevent
 * frees it with the connection and we must forget it.
 */
static void
pending_close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct gq_pending *p = arg;
    if (evhttp_request_get_connection(p->req) != NULL)
        p->req = NULL;
}

static void
send_err_now(struct evhttp_request *req, int err)
{
    json_t *e = json_pack("{s:{s:s,s:s}}", "error", "code", gq_err_name(err),
                          "message", gq_err_msg(err));
    char *t = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    send_now(req, gq_err_http(err), t, NULL);
    free(t);
}

void
gq_reply(struct gq_daemon *d, struct evhttp_request *req, int status,
         json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(6))
                     : NULL;
    const char *ra = NULL;
    json_decref(body);
    if (status == 429)
        ra = "1";
    if (!d->in_batch && !d->batch_failed && d->groups == NULL) {
        send_now(req, status, text, ra);
        free(text);
        return;
    }
    struct gq_pending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        send_now(req, 503, NULL, NULL);
        free(text);
        return;
    }
    p->req = req;
    p->status = status;
    p->body = text;
    p->retry_after = ra ? strdup(ra) : NULL;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon)
        evhttp_connection_set_closecb(evcon, pending_close_cb, p);
    if (!d->in_batch && !d->batch_failed) {
        /* A read: it must not show state that is not yet durable, so it
         * waits behind the newest pending group. */
        struct gq_group *g = d->groups;
        while (g->next)
            g = g->next;
        struct gq_pending **pp = &g->replies;
        while (*pp)
            pp = &(*pp)->next;
        *pp = p;
        return;
    }
    *d->pend_tail = p;
    d->pend_tail = &p->next;
    gq_kick(d);
}

void
gq_reply_err(struct gq_daemon *d, struct evhttp_request *req, int err,
             const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s, s:s}", "code", gq_err_name(err),
                          "message", msg);
    if (field)
        json_object_set_new(e, "field", json_string(field));
    gq_reply(d, req, gq_err_http(err), json_pack("{s:o}", "error", e));
}

/* Sends every queued reply: as queued after a commit, as 503s (nothing
 * was stored) after a failed one. */
static void
send_list(struct gq_pending *p, int failed, int err)
{
    struct gq_pending *next;
    for (; p; p = next) {
        next = p->next;
        if (p->req) {
            struct evhttp_connection *evcon =
                evhttp_request_get_connection(p->req);
            if (evcon)
                evhttp_connection_set_closecb(evcon, NULL, NULL);
        }
        if (failed) {
            send_err_now(p->req, err);
        } else {
            send_now(p->req, p->status, p->body, p->retry_after);
        }
        free(p->body);
        free(p->retry_after);
        free(p);
    }
}

static void
flush_replies(struct gq_daemon *d, int failed, int err)
{
    struct gq_pending *p = d->pend_head;
    d->pend_head = NULL;
    d->pend_tail = &d->pend_head;
    send_list(p, failed, err);
}

/* --- events (SSE) --- */

void
gq_publish(struct gq_daemon *d, const struct gq_jobrec *r,
           const struct gq_job *j)
{
    char id[32], at[96];
    if (d->parks[GQ_PARK_SSE] == NULL)
        return;
    if (d->sse_batch == NULL)
        d->sse_batch = json_array();
    int64_t w = wall_now();
    time_t secs = (time_t)(w / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(at, sizeof at, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(w / 1000 % 1000));
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "id",
                           gq_job_id(r->seq, id, sizeof id), "class", r->cls,
                           "state", gq_state_str((enum gq_state)r->state),
                           "at", at, "attempts", r->attempts, "kind",
                           gq_kind_str((enum gq_kind)r->kind));
    if (j && j->state == GQ_RUNNING)
        json_object_set_new(ev, "slot", json_integer(j->slot));
    if (r->err_code)
        json_object_set_new(ev, "error", json_string(r->err_code));
    json_array_append_new(d->sse_batch, ev);
}

static void
publish_batch(struct gq_daemon *d, json_t *b)
{
    size_t i;
    json_t *ev;
    if (b == NULL)
        return;
    json_array_foreach(b, i, ev) gq_http_sse_send(d, ev);
    json_decref(b);
}

/* --- parks --- */

static void
park_timer_cb(evutil_socket_t fd, short what, void *arg);

static void
park_close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct gq_park *p = arg;
    struct gq_daemon *d = p->d;
    /* A request libevent has detached from its dying connection is ours
     * to free (ending a chunked reply frees it); an attached one is
     * freed with the connection. */
    if (evhttp_request_get_connection(p->req) == NULL) {
        if (p->type == GQ_PARK_SSE || (p->type == GQ_PARK_STREAM && p->started))
            evhttp_send_reply_end(p->req);
        else
            evhttp_request_free(p->req);
    }
    if (p->type == GQ_PARK_STREAM && p->fmt != GQ_FMT_GPUQ) {
        /* A drop-in request's job lives for its client: cancel it, which
         * also drops the backend call so the server stops working. */
        uint64_t seq = p->seq;
        struct gq_jobrec r = {0};
        gq_park_free(p);
        if (gq_op_cancel(d, seq, &r) == 0)
            gq_log(GQ_LOG_INFO, "j%llu: client went away; cancelled",
                   (unsigned long long)seq);
        gq_jobrec_clear(&r);
        return;
    }
    if (p->type == GQ_PARK_LOCK) {
        uint64_t seq = p->seq;
        gq_park_free(p);
        gq_op_abandon(d, seq, GQ_CANCELLED);
    } else {
        gq_park_free(p);
    }
}

/*
 * evhttp 2.1 does not read from a connection while its request waits for
 * a reply, so it never notices a client that hangs up on a long-poll.  We
 * watch the socket ourselves: EOF or an error means the client is gone;
 * pipelined bytes only mean we stop watching.
 */
static void
park_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_park *p = arg;
    char ch;
    ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        event_del(p->watch);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    struct evhttp_connection *evcon = p->evcon;
    park_close_cb(evcon, p);
    if (evcon)
        evhttp_connection_free(evcon);
}

struct gq_park *
gq_park_new(struct gq_daemon *d, enum gq_park_type type,
            struct evhttp_request *req, double wait_s)
{
    if (d->nparked >= d->cfg.max_parked)
        return NULL;
    struct gq_park *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->type = type;
    p->d = d;
    p->req = req;
    p->cls = -1;
    p->evcon = evhttp_request_get_connection(req);
    p->timer = evtimer_new(d->base, park_timer_cb, p);
    if (p->timer == NULL) {
        free(p);
        return NULL;
    }
    if (wait_s >= 0) {
        struct timeval tv = {(time_t)wait_s,
                             (suseconds_t)((wait_s - floor(wait_s)) * 1e6)};
        evtimer_add(p->timer, &tv);
    }
    if (p->evcon) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(p->evcon);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        evhttp_connection_set_closecb(p->evcon, park_close_cb, p);
        if (fd >= 0) {
            p->watch = event_new(d->base, fd, EV_READ | EV_PERSIST,
                                 park_watch_cb, p);
            if (p->watch)
                event_add(p->watch, NULL);
        }
    }
    p->next = d->parks[type];
    if (p->next)
        p->next->prev = p;
    else
        d->park_tail[type] = p;
    d->parks[type] = p;
    d->nparked++;
    if (type == GQ_PARK_LEASE) {
        /* classes are filled by the caller before the first dispatch */
    }
    return p;
}

void
gq_park_free(struct gq_park *p)
{
    struct gq_daemon *d = p->d;
    if (p->type == GQ_PARK_LEASE)
        for (int c = 0; c < GQ_MAX_CLASSES; c++)
            if (p->classes[c])
                d->waiting_workers[c]--;
    if (p->type == GQ_PARK_LOCK) {
        struct gq_job *j = gq_jobtab_get(&d->jobs, p->seq);
        if (j && j->owner == p)
            j->owner = NULL;
    }
    if (p->evcon)
        evhttp_connection_set_closecb(p->evcon, NULL, NULL);
    if (p->prev)
        p->prev->next = p->next;
    else
        d->parks[p->type] = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        d->park_tail[p->type] = p->prev;
    d->nparked--;
    if (p->watch)
        event_free(p->watch);
    event_free(p->timer);
    free(p);
}

static void
park_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_park *p = arg;
    struct gq_daemon *d = p->d;
    struct gq_jobrec r = {0};
    switch (p->type) {
    case GQ_PARK_LEASE:
        gq_reply(d, p->req, 204, NULL);
        gq_park_free(p);
        break;
    case GQ_PARK_JOBWAIT:
        if (gq_get(d, p->seq, &r) == 0)
            gq_reply(d, p->req, 200, gq_job_json(d, &r));
        else
            gq_reply_err(d, p->req, GQ_ENOENT, NULL, "no such job");
        gq_jobrec_clear(&r);
        gq_park_free(p);
        break;
    case GQ_PARK_LOCK: {
        uint64_t seq = p->seq;
        gq_reply_err(d, p->req, GQ_ETIMEDOUT, "wait",
                     "the lock was not granted within the wait");
        gq_park_free(p);
        gq_op_abandon(d, seq, GQ_EXPIRED);
        break;
    }
    case GQ_PARK_STREAM:
        break; /* no timer: the job's own end closes it */
    case GQ_PARK_SSE: {
        /* Keep-alive comment; a stream whose reader has stalled is cut. */
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, ": ping\n\n");
        evhttp_send_reply_chunk(p->req, b);
        evbuffer_free(b);
        struct timeval tv = {15, 0};
        evtimer_add(p->timer, &tv);
        break;
    }
    }
}

/* --- job life --- */

int
gq_get(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *rec)
{
    int rc = d->store->ops->get(d->store, seq, rec, d->errbuf);
    if (rc < 0 && rc != GQ_ENOENT)
        gq_log(GQ_LOG_ERR, "store: get: %s", d->errbuf);
    return rc;
}

static int
store_update(struct gq_daemon *d, const struct gq_jobrec *r,
             const char *detail)
{
    int rc = d->store->ops->update(d->store, r, d->errbuf);
    if (checked(d, rc, "update") < 0)
        return rc;
    rc = d->store->ops->event(d->store, r->seq, wall_now(),
                              gq_state_str((enum gq_state)r->state), detail,
                              d->errbuf);
    return checked(d, rc, "event");
}

/* Replies to every GET ?wait= parked on this job. */
static void
wake_jobwaits(struct gq_daemon *d, const struct gq_jobrec *r)
{
    struct gq_park *p = d->parks[GQ_PARK_JOBWAIT], *next;
    for (; p; p = next) {
        next = p->next;
        if (p->seq == r->seq) {
            gq_reply(d, p->req, 200, gq_job_json(d, r));
            gq_park_free(p);
        }
    }
}

/* --- dependencies --- */

static int
push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        uint64_t *nv = realloc(*v, c * sizeof *nv);
        if (nv == NULL)
            return GQ_ENOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

/* Holds j back until its dependencies (deps: a JSON array of seqs) are
 * done; the list is kept in memory so finishing a job checks only its
 * own dependents, with no store reads for the others. */
static int
block_job(struct gq_daemon *d, struct gq_job *j, const char *deps)
{
    json_t *a = deps ? json_loads(deps, 0, NULL) : NULL, *v;
    size_t i;
    if (d->nblocked == d->capblocked) {
        size_t cap = d->capblocked ? d->capblocked * 2 : 16;
        struct gq_blocked *nv = realloc(d->blocked, cap * sizeof *nv);
        if (nv == NULL) {
            json_decref(a);
            return GQ_ENOMEM;
        }
        d->blocked = nv;
        d->capblocked = cap;
    }
    struct gq_blocked *b = &d->blocked[d->nblocked];
    b->seq = j->seq;
    b->ndeps = 0;
    b->deps = calloc(json_array_size(a) + 1, sizeof *b->deps);
    if (b->deps == NULL) {
        json_decref(a);
        return GQ_ENOMEM;
    }
    json_array_foreach(a, i, v) b->deps[b->ndeps++] =
        (uint64_t)json_integer_value(v);
    json_decref(a);
    d->nblocked++;
    j->blocked = 1;
    j->state = GQ_QUEUED;
    return 0;
}

static void
unblock_at(struct gq_daemon *d, size_t i)
{
    free(d->blocked[i].deps);
    d->blocked[i] = d->blocked[--d->nblocked];
}

static void
unblock_job(struct gq_daemon *d, struct gq_job *j)
{
    for (size_t i = 0; i < d->nblocked; i++)
        if (d->blocked[i].seq == j->seq) {
            unblock_at(d, i);
            break;
        }
    j->blocked = 0;
}

/* 1: every dependency succeeded; 0: some still pending; -1: one failed
 * or is gone (*bad gets it). */
static int
deps_state(struct gq_daemon *d, const char *deps, uint64_t *bad)
{
    json_t *a = deps ? json_loads(deps, 0, NULL) : NULL, *v;
    size_t i;
    int st = 1;
    json_array_foreach(a, i, v)
    {
        uint64_t seq = (uint64_t)json_integer_value(v);
        struct gq_jobrec r = {0};
        if (gq_jobtab_get(&d->jobs, seq)) {
            st = st < 0 ? st : 0;
            continue;
        }
        if (gq_get(d, seq, &r) < 0 || r.state != GQ_SUCCEEDED) {
            *bad = seq;
            st = -1;
        }
        gq_jobrec_clear(&r);
        if (st < 0)
            break;
    }
    json_decref(a);
    return st;
}

static void finish_job(struct gq_daemon *d, struct gq_job *j,
                       struct gq_jobrec *r, int64_t now, const char *detail);

/* A job finished: its dependents may now run, or fail.  A worklist, not
 * recursion: a failing dependent finishes in turn and is queued here. */
static void
wake_dependents(struct gq_daemon *d, uint64_t done_seq)
{
    if (push_u64(&d->wakeq, &d->nwake, &d->capwake, done_seq) < 0 ||
        d->waking)
        return;
    d->waking = 1;
    int64_t now = gq_now();
    while (d->nwake > 0) {
        uint64_t done = d->wakeq[--d->nwake];
        for (size_t i = 0; i < d->nblocked;) {
            struct gq_blocked *b = &d->blocked[i];
            int hit = done == 0; /* 0: check all (start-up) */
            for (int k = 0; !hit && k < b->ndeps; k++)
                hit = b->deps[k] == done;
            if (!hit) {
                i++;
                continue;
            }
            struct gq_job *j = gq_jobtab_get(&d->jobs, b->seq);
            struct gq_jobrec r = {0};
            uint64_t bad = 0;
            if (j == NULL) {
                unblock_at(d, i);
                continue;
            }
            if (checked(d, gq_get(d, j->seq, &r), "get") < 0) {
                gq_jobrec_clear(&r);
                d->nwake = 0;
                d->waking = 0;
                return;
            }
            int st = deps_state(d, r.deps, &bad);
            if (st == 0) {
                gq_jobrec_clear(&r);
                i++;
                continue;
            }
            unblock_at(d, i); /* moves another entry to i */
            j->blocked = 0;
            if (st > 0) {
                gq_sched_enqueue(d->sched, j, now);
                gq_publish(d, &r, j);
            } else {
                char msg[128];
                snprintf(msg, sizeof msg, "dependency j%llu did not succeed",
                         (unsigned long long)bad);
                r.state = GQ_FAILED;
                set_str(&r.err_code, "dependency_failed");
                set_str(&r.err_msg, msg);
                finish_job(d, j, &r, now, NULL); /* queues its own seq */
            }
            gq_jobrec_clear(&r);
        }
    }
    d->waking = 0;
}

/* The job reached a terminal state: stored, and gone from memory. */
static void
finish_job(struct gq_daemon *d, struct gq_job *j, struct gq_jobrec *r,
           int64_t now, const char *detail)
{
    r->finished_us = gq_wall(d, now);
    r->ready_at_us = 0;
    if (store_update(d, r, detail) < 0)
        return;
    d->metrics.finished[j->cls][r->state]++;
    j->state = (uint8_t)r->state;
    drop_upload(d, j, r);
    gq_cb_enqueue(d, r, r->state == GQ_SUCCEEDED ? "succeeded" : "failed");
    gq_publish(d, r, j);
    wake_jobwaits(d, r);
    /* The stream's last word waits, like any reply, for durability. */
    for (struct gq_park *sp = d->parks[GQ_PARK_STREAM]; sp; sp = sp->next)
        if (sp->seq == r->seq) {
            push_u64(&d->stream_ends, &d->nstream_ends, &d->capstream_ends,
                     r->seq);
            break;
        }
    if (j->owner && j->state != GQ_RUNNING) {
        /* Only a queued lock's owner is a park (a running job's is its
         * run, already dropped by end_grant). */
        struct gq_park *p = j->owner;
        j->owner = NULL;
        gq_park_free(p);
    }
    if (j->blocked)
        unblock_job(d, j);
    gq_jobtab_del(&d->jobs, j);
    uint64_t seq = j->seq;
    free(j);
    if (d->nblocked > 0)
        wake_dependents(d, seq);
}

static void
drop_run(struct gq_runctx *rc)
{
    if (!rc->ended)
        rc->ops->cancel(&rc->run);
    rc->run.bk->inflight--;
    json_decref(rc->run.payload);
    json_decref(rc->run.progress);
    free(rc->text);
    free(rc);
}

static void
group_join(struct gq_daemon *d, int slot, uint64_t seq)
{
    if (d->group_n[slot] < 64)
        d->group_seq[slot][d->group_n[slot]++] = seq;
}

static void
group_leave(struct gq_daemon *d, int slot, uint64_t seq)
{
    for (int i = 0; i < d->group_n[slot]; i++)
        if (d->group_seq[slot][i] == seq) {
            d->group_seq[slot][i] = d->group_seq[slot][--d->group_n[slot]];
            return;
        }
}

/* Ends j's grant at now: slot freed, times charged to the record. */
static void
end_grant(struct gq_daemon *d, struct gq_job *j, struct gq_jobrec *r,
          int64_t now)
{
    int slot = j->slot; /* -1 for a rider of a batched grant */
    struct gq_runctx *rc = j->owner;
    int gslot = rc ? rc->group_slot : slot;
    int64_t start = rc ? rc->started_us : j->grant_us;
    if (rc) {
        /* A built-in run: drop its backend call unless it has ended. */
        j->owner = NULL;
        drop_run(rc);
    }
    if (gslot >= 0)
        group_leave(d, gslot, j->seq);
    if (slot >= 0) {
        evtimer_del(d->slot_ev[slot]);
        if (d->group_n[slot] > 0) {
            /* Others still run in this grant: the slot stays held. */
            struct gq_job *to = gq_jobtab_get(&d->jobs,
                                              d->group_seq[slot][0]);
            if (to && to->state == GQ_RUNNING && to->slot < 0) {
                gq_sched_handover(d->sched, j, to);
                struct timeval tv = {30, 0};
                if (to->expires_us > now)
                    tv.tv_sec = (time_t)((to->expires_us - now) / 1000000);
                evtimer_add(d->slot_ev[slot], &tv);
            }
        }
    }
    int freed = slot >= 0 && j->slot >= 0;
    if (freed) /* the slot's time since it was taken (handovers keep it) */
        gq_metrics_slot_freed(&d->metrics, slot, j->grant_us, now);
    gq_sched_release(d->sched, j, now);
    gq_hist_add(&d->metrics.hold[j->cls], (double)(now - start) / 1e6);
    gq_ring_add(&d->metrics.hold_recent[j->cls], (double)(now - start) / 1e6);
    r->ended_us = gq_wall(d, now);
    r->run_us += now - start;
    maybe_compact(d); /* a removed class's last grant may have ended */
    if (!freed)
        return;
    d->slot_free_at[slot] = 0;
    for (int c = 0; c < gq_sched_nclasses(d->sched); c++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, c, &st);
        if (st.ready > 0) {
            d->slot_free_at[slot] = now;
            break;
        }
    }
}

/* Back to the queue, after delay_us of backoff (0 = at once). */
static void
requeue_job(struct gq_daemon *d, struct gq_job *j, struct gq_jobrec *r,
            int64_t now, int64_t delay_us, const char *detail)
{
    j->ready_at_us = delay_us > 0 ? now + delay_us : 0;
    j->deadline_us = 0;
    j->token = r->token;
    r->state = GQ_QUEUED;
    r->ready_at_us = gq_wall(d, j->ready_at_us);
    r->deadline_us = 0;
    if (j->cls >= d->nlive_classes) {
        /* Its class was removed by a reload while it ran: it is stored
         * queued, as recovery leaves the jobs of unknown classes. */
        gq_log(GQ_LOG_WARN, "j%llu: class %s is no longer configured; the "
               "job stays stored but is not scheduled",
               (unsigned long long)j->seq, r->cls);
        if (store_update(d, r, detail) == 0)
            gq_publish(d, r, NULL);
        wake_jobwaits(d, r);
        for (struct gq_park *sp = d->parks[GQ_PARK_STREAM]; sp; sp = sp->next)
            if (sp->seq == r->seq) {
                push_u64(&d->stream_ends, &d->nstream_ends,
                         &d->capstream_ends, r->seq);
                break;
            }
        gq_jobtab_del(&d->jobs, j);
        free(j);
        return;
    }
    gq_sched_enqueue(d->sched, j, now);
    if (store_update(d, r, detail) < 0)
        return;
    gq_publish(d, r, j);
}

static int64_t
backoff_us(struct gq_daemon *d, int cls, int attempts)
{
    double base = d->cfg.backoff_base[cls], max = d->cfg.backoff_max[cls];
    double delay = base * ldexp(1.0, attempts > 1 ? attempts - 1 : 0);
    if (delay > max)
        delay = max;
    delay *= 0.5 + 0.5 * ((double)random() / (double)RAND_MAX);
    return (int64_t)(delay * 1e6);
}

static int
servable(void *ud, const struct gq_job *j)
{
    struct gq_daemon *d = ud;
    const struct gq_class_exec *cx = &d->cfg.exec[j->cls];
    if (j->kind == GQ_KIND_LOCK)
        return j->owner != NULL;
    if (cx->executor != GQ_EXEC_WORKER)
        return d->backends[cx->backend].healthy &&
               gq_backend_ready(&d->backends[cx->backend], gq_now());
    return d->waiting_workers[j->cls] > 0;
}

/* --- built-in executor runs --- */

struct gq_runctx *
gq_daemon_run_of(struct gq_daemon *d, uint64_t seq)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    if (j == NULL || j->state != GQ_RUNNING)
        return NULL;
    return j->owner; /* a running job's owner is its run, if built-in */
}

/* Measured backend speeds are kept in the store's meta table (in
 * nanoseconds per unit), so the first chunk after a restart is sized by
 * them too. */
static const char *const speed_keys[3] = {"audio", "prompt", "output"};

static double *
speed_field(struct gq_backend *bk, int k)
{
    return k == 0 ? &bk->s_per_audio_s
           : k == 1 ? &bk->s_per_prompt_tok
                    : &bk->s_per_out_tok;
}

static void
save_speeds(struct gq_daemon *d, struct gq_backend *bk)
{
    char key[128];
    if (gq_batch(d) < 0)
        return;
    for (int k = 0; k < 3; k++) {
        double v = *speed_field(bk, k);
        if (!(v > 0))
            continue;
        snprintf(key, sizeof key, "speed:%s:%s", bk->conf.name,
                 speed_keys[k]);
        checked(d, d->store->ops->meta_set(d->store, key,
                                           (int64_t)(v * 1e9), d->errbuf),
                "meta");
    }
}

static void
load_speeds(struct gq_daemon *d, int b)
{
    char key[128];
    for (int k = 0; k < 3; k++) {
        int64_t v = 0;
        snprintf(key, sizeof key, "speed:%s:%s", d->backends[b].conf.name,
                 speed_keys[k]);
        if (d->store->ops->meta_get(d->store, key, &v, d->errbuf) == 0 &&
            v > 0)
            *speed_field(&d->backends[b], k) = (double)v / 1e9;
    }
}

static void
run_token(struct gq_run *r, const char *text, size_t len)
{
    struct gq_runctx *rc = r->ud;
    if (rc->len + len + 1 > rc->cap) {
        size_t cap = rc->cap ? rc->cap * 2 : 512;
        while (cap < rc->len + len + 1)
            cap *= 2;
        char *t = realloc(rc->text, cap);
        if (t == NULL)
            return;
        rc->text = t;
        rc->cap = cap;
    }
    memcpy(rc->text + rc->len, text, len);
    rc->len += len;
    rc->text[rc->len] = '\0';
    gq_http_stream_token(rc->d, r->seq, text, len);
}

static void
run_first_token(struct gq_run *r)
{
    struct gq_runctx *rc = r->ud;
    struct gq_job *j = gq_jobtab_get(&rc->d->jobs, r->seq);
    if (j) {
        double w = (double)(gq_now() - j->enq_us) / 1e6;
        gq_hist_add(&rc->d->metrics.first_token[r->cls], w);
        gq_ring_add(&rc->d->metrics.first_token_recent[r->cls], w);
    }
}

static void
run_end(struct gq_run *r, enum gq_run_end how, json_t *result,
        const char *code, const char *msg, int retryable)
{
    struct gq_runctx *rc = r->ud;
    struct gq_daemon *d = rc->d;
    struct gq_jobrec rec = {0};
    struct gq_finish f = {GQ_END_COMPLETE, result, NULL, NULL, 0, 1};
    int64_t now = gq_now();
    int bi = (int)(r->bk - d->backends);
    /* Only the backend's own failures count against it: not a request
     * it rejected (4xx), nor bad input (audio_invalid, ...). */
    int ok = how != GQ_RUN_FAIL || code == NULL ||
             strncmp(code, "backend_", 8) != 0 ||
             strcmp(code, "backend_4xx") == 0;
    rc->ended = 1;
    if (gq_backend_result(r->bk, ok, now)) {
        /* Wake up for the half-open probe when the cool-down ends. */
        double cd = r->bk->conf.breaker_cooldown;
        struct timeval tv = {(time_t)cd,
                             (suseconds_t)((cd - floor(cd)) * 1e6) + 1000};
        gq_log(GQ_LOG_WARN, "backend %s: circuit open after %d failures",
               r->bk->conf.name, r->bk->failures);
        evtimer_add(d->breaker_ev, &tv);
    }
    if (how == GQ_RUN_FAIL) {
        snprintf(r->bk->last_error, sizeof r->bk->last_error, "%s",
                 msg ? msg : "");
        d->metrics.backend_errors[bi][retryable ? 0 : 1]++;
        f.how = GQ_END_FAIL;
        f.err_code = code;
        f.err_msg = msg;
        f.retryable = retryable;
    } else if (how == GQ_RUN_CHUNK) {
        f.how = GQ_END_YIELD;
    }
    struct gq_backend *bk = r->bk;
    int rcode = gq_op_finish(d, r->seq, r->token, &f, &rec);
    if (rcode == 0)
        save_speeds(d, bk);
    if (rcode < 0)
        gq_log(GQ_LOG_WARN, "j%llu: executor result not stored: %s",
               (unsigned long long)r->seq, gq_err_msg(rcode));
    gq_jobrec_clear(&rec);
    json_decref(result);
}

/* Starts the executor for a granted job; on failure the job fails. */
static void
start_run(struct gq_daemon *d, struct gq_job *j, struct gq_jobrec *r,
          int gslot, int64_t now)
{
    const struct gq_class_exec *cx = &d->cfg.exec[j->cls];
    struct gq_runctx *rc = calloc(1, sizeof *rc);
    int err = GQ_ENOMEM;
    if (rc) {
        rc->d = d;
        rc->ops = gq_executors[cx->executor];
        rc->run.httpc = d->httpc;
        rc->run.workq = d->workq;
        rc->run.base = d->base;
        rc->run.bk = &d->backends[cx->backend];
        rc->cx = *cx; /* a reload may change the class, not this run */
        rc->run.cx = &rc->cx;
        rc->run.seq = j->seq;
        rc->run.token = j->token;
        rc->run.cls = j->cls;
        rc->run.payload = json_loads(r->payload ? r->payload : "null",
                                     JSON_DECODE_ANY, NULL);
        rc->run.progress = r->progress ? json_loads(r->progress,
                                                    JSON_DECODE_ANY, NULL)
                                       : NULL;
        rc->run.started_us = gq_now();
        json_t *from = json_object_get(rc->run.payload, "from_job");
        uint64_t fseq;
        if (json_is_string(from) &&
            !json_object_get(rc->run.payload, "text") &&
            gq_job_parse_id(json_string_value(from), &fseq) == 0) {
            /* The text of the transcription it summarizes. */
            struct gq_jobrec fr = {0};
            json_t *res = NULL;
            if (gq_get(d, fseq, &fr) == 0 && fr.state == GQ_SUCCEEDED)
                res = json_loads(fr.result ? fr.result : "null",
                                 JSON_DECODE_ANY, NULL);
            json_t *text = json_object_get(res, "text");
            if (!json_is_string(text))
                text = json_object_get(res, "summary");
            if (json_is_string(text))
                json_object_set(rc->run.payload, "text", text);
            json_decref(res);
            gq_jobrec_clear(&fr);
        }
        rc->run.end = run_end;
        rc->run.token_cb = run_token;
        rc->run.first_token = run_first_token;
        rc->run.ud = rc;
        if (rc->run.bk->breaker == GQ_BREAKER_OPEN)
            rc->run.bk->breaker = GQ_BREAKER_HALF_OPEN;
        rc->run.bk->inflight++;
        rc->group_slot = gslot;
        rc->started_us = now;
        j->owner = rc;
        group_join(d, gslot, j->seq);
        err = rc->ops->start(&rc->run);
        if (err == 0)
            return;
        rc->ended = 1; /* nothing to cancel */
    }
    /* Could not start: fail the grant now (retryable). */
    struct gq_finish f = {GQ_END_FAIL, NULL, "executor_start",
                          "the executor could not start", 1, 1};
    struct gq_jobrec rec = {0};
    gq_log(GQ_LOG_ERR, "j%llu: executor start: %s",
           (unsigned long long)j->seq, gq_err_msg(err));
    if (rc == NULL) {
        /* No run to end; release through the normal path. */
    }
    gq_op_finish(d, j->seq, j->token, &f, &rec);
    gq_jobrec_clear(&rec);
}

static struct gq_park *
find_worker(struct gq_daemon *d, int cls)
{
    /* Parks are pushed at the head; the longest waiting is the last, so
     * the walk starts at the tail: with one pool of workers for a class
     * the first poll looked at takes it, however many are parked. */
    for (struct gq_park *p = d->park_tail[GQ_PARK_LEASE]; p; p = p->prev)
        if (p->classes[cls])
            return p;
    return NULL;
}

/* Grants j: a slot holder (j->slot >= 0), or a rider of the batched
 * grant on gslot (j->slot == -1). */
static void
grant(struct gq_daemon *d, struct gq_job *j, int64_t now, int gslot)
{
    const struct gq_class_conf *cc = gq_sched_conf(d->sched, j->cls);
    struct gq_park *p;
    struct gq_jobrec r = {0};
    char detail[256];

    int builtin = j->kind == GQ_KIND_JOB &&
                  d->cfg.exec[j->cls].executor != GQ_EXEC_WORKER;
    double ttl = cc->lease_ttl;
    p = j->kind == GQ_KIND_LOCK ? j->owner
        : builtin               ? NULL
                                : find_worker(d, j->cls);
    ASSERT(p != NULL || builtin);
    if (builtin) /* the backend's own timeout bounds the call */
        ttl = d->backends[d->cfg.exec[j->cls].backend].conf.timeout + 30;
    if (checked(d, gq_get(d, j->seq, &r), "get") < 0) {
        gq_jobrec_clear(&r);
        return;
    }
    j->token = ++d->fence;
    j->attempts++;
    j->owner = NULL;
    j->expires_us = now + (int64_t)(ttl * 1e6);
    checked(d, d->store->ops->meta_set(d->store, "fence", (int64_t)d->fence,
                                       d->errbuf),
            "meta");
    r.state = GQ_RUNNING;
    r.attempts = j->attempts;
    r.token = j->token;
    r.started_us = gq_wall(d, now);
    r.ended_us = 0;
    r.ready_at_us = 0;
    r.wait_us += now - j->enq_us;
    if (p && p->type == GQ_PARK_LEASE)
        set_str(&r.holder, p->worker[0] ? p->worker : NULL);
    if (builtin)
        set_str(&r.holder, d->cfg.backends[d->cfg.exec[j->cls].backend].name);
    snprintf(detail, sizeof detail, "{\"token\":%llu,\"slot\":%d%s}",
             (unsigned long long)j->token, gslot,
             j->slot < 0 ? ",\"shared\":true" : "");
    if (store_update(d, &r, detail) == 0) {
        struct timeval tv = {(time_t)ttl,
                             (suseconds_t)((ttl - floor(ttl)) * 1e6)};
        if (j->slot >= 0) {
            evtimer_assign(d->slot_ev[j->slot], d->base, slot_cb, d);
            evtimer_add(d->slot_ev[j->slot], &tv);
        }
        d->metrics.grants[j->cls]++;
        gq_hist_add(&d->metrics.wait[j->cls],
                    (double)(now - j->enq_us) / 1e6);
        if (j->slot >= 0 && d->slot_free_at[j->slot]) {
            /* Measured when the grant's reply has been sent (after the
             * commit), which is what the next holder waits for. */
            if (d->nhandoff < (int)(sizeof d->handoff_from /
                                    sizeof d->handoff_from[0]))
                d->handoff_from[d->nhandoff++] = d->slot_free_at[j->slot];
            d->slot_free_at[j->slot] = 0;
        }
        gq_publish(d, &r, j);
        gq_cb_enqueue(d, &r, "started");
        if (p)
            gq_http_grant(d, p, &r, cc->lease_ttl);
    }
    if (p) {
        if (d->batch_failed) /* no grant: the batch fails, say so */
            gq_reply_err(d, p->req, GQ_ESTORE, NULL, "store failure");
        gq_park_free(p);
    }
    if (builtin && !d->batch_failed)
        start_run(d, j, &r, gslot, now);
    gq_jobrec_clear(&r);
}

static void
dispatch(struct gq_daemon *d)
{
    while (!d->batch_failed && gq_sched_free_slots(d->sched) > 0) {
        int64_t now = gq_now();
        struct gq_job *j = gq_sched_pick(d->sched, now, servable, d);
        if (j == NULL)
            break;
        if (gq_batch(d) < 0) {
            /* Could not start a batch: undo the pick, try next turn. */
            gq_sched_release(d->sched, j, now);
            gq_sched_enqueue(d->sched, j, now);
            break;
        }
        int slot = j->slot, cls = j->cls;
        grant(d, j, now, slot); /* may end j at once (a failed start) */
        /* A backend that batches takes more of the class's ready jobs
         * into the same grant, up to its max_concurrency; they end with
         * it, so the grant stays as bounded as one chunk. */
        const struct gq_class_exec *cx = &d->cfg.exec[cls];
        while (cx->executor != GQ_EXEC_WORKER && !d->batch_failed &&
               d->backends[cx->backend].conf.max_concurrency > 1 &&
               gq_sched_slot(d->sched, slot) != NULL) {
            struct gq_job *r = gq_sched_ride(d->sched, cls, now,
                                             servable, d);
            if (r == NULL)
                break;
            grant(d, r, now, slot);
        }
    }
}

static void
slot_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    int64_t now = gq_now();
    for (int s = 0; s < gq_sched_nslots(d->sched); s++) {
        struct gq_job *j = gq_sched_slot(d->sched, s);
        if (j == NULL)
            continue;
        if (j->expires_us > now) {
            /* Timers run on libevent's cached time, which can be a little
             * behind ours: fire again for what is left. */
            int64_t left = j->expires_us - now;
            struct timeval tv = {(time_t)(left / 1000000),
                                 (suseconds_t)(left % 1000000)};
            if (!evtimer_pending(d->slot_ev[s], NULL))
                evtimer_add(d->slot_ev[s], &tv);
            continue;
        }
        struct gq_jobrec r = {0};
        if (gq_batch(d) < 0 || checked(d, gq_get(d, j->seq, &r), "get") < 0) {
            /* The store is not writable now: try again in a second. */
            struct timeval again = {1, 0};
            evtimer_add(d->slot_ev[s], &again);
            gq_jobrec_clear(&r);
            return;
        }
        const struct gq_class_conf *cc = gq_sched_conf(d->sched, j->cls);
        gq_log(GQ_LOG_INFO, "j%llu: lease expired (token %llu)",
               (unsigned long long)j->seq, (unsigned long long)j->token);
        end_grant(d, j, &r, now);
        d->metrics.lease_expired[j->cls]++;
        set_str(&r.err_code, "lease_expired");
        set_str(&r.err_msg, "the lease was not heartbeated within its ttl");
        if (j->kind == GQ_KIND_LOCK) {
            r.state = GQ_FAILED;
            finish_job(d, j, &r, now, "{\"error\":\"lease_expired\"}");
        } else if (j->attempts >= cc->max_attempts) {
            r.state = GQ_DEAD;
            finish_job(d, j, &r, now, "{\"error\":\"lease_expired\"}");
        } else {
            requeue_job(d, j, &r, now, backoff_us(d, j->cls, j->attempts),
                        "{\"error\":\"lease_expired\"}");
        }
        gq_jobrec_clear(&r);
    }
    gq_kick(d);
}

int
gq_op_submit(struct gq_daemon *d, const struct gq_submit *s,
             struct gq_jobrec *r, int *created)
{
    int cls = gq_sched_class(d->sched, s->cls), rc;
    const struct gq_class_conf *cc;
    int64_t now = gq_now();
    *created = 0;
    if (cls < 0 || cls >= d->nlive_classes) /* unknown, or removed */
        return GQ_ENOCLASS;
    cc = gq_sched_conf(d->sched, cls);
    if (s->idem_key) {
        uint64_t seq;
        rc = d->store->ops->find_key(d->store, s->idem_key, &seq, d->errbuf);
        if (rc == 0)
            return gq_get(d, seq, r);
        if (rc != GQ_ENOENT)
            return checked(d, rc, "find_key");
    }
    if (s->kind == GQ_KIND_LOCK && d->draining)
        return GQ_EDRAINING;
    if (gq_sched_queued(d->sched, cls) >= (uint32_t)cc->max_queue)
        return GQ_EFULL;
    memset(r, 0, sizeof *r);
    r->payload = s->payload ? json_dumps(s->payload,
                                         JSON_COMPACT | JSON_ENCODE_ANY)
                            : strdup("null");
    if (r->payload == NULL)
        return GQ_ENOMEM;
    if ((long)strlen(r->payload) > d->cfg.max_payload) {
        gq_jobrec_clear(r);
        return GQ_ETOOBIG;
    }
    struct gq_job *j = malloc(sizeof *j);
    if (j == NULL) {
        gq_jobrec_clear(r);
        return GQ_ENOMEM;
    }
    if ((rc = gq_batch(d)) < 0) {
        free(j);
        gq_jobrec_clear(r);
        return rc;
    }
    snprintf(r->cls, sizeof r->cls, "%s", cc->name);
    r->priority = s->priority;
    r->state = GQ_QUEUED;
    r->kind = s->kind;
    set_json(&r->metadata, s->metadata);
    set_str(&r->idem_key, s->idem_key);
    set_str(&r->holder, s->holder);
    set_str(&r->callback_url, s->callback_url);
    if (s->ndeps > 0) {
        json_t *a = json_array();
        for (int k = 0; k < s->ndeps; k++)
            json_array_append_new(a, json_integer((json_int_t)s->deps[k]));
        r->deps = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    }
    r->created_us = gq_wall(d, now);
    double qt = s->queue_timeout >= 0 ? s->queue_timeout : cc->queue_timeout;
    int64_t deadline = qt > 0 ? now + (int64_t)(qt * 1e6) : 0;
    r->deadline_us = gq_wall(d, deadline);
    rc = checked(d, d->store->ops->insert(d->store, r, d->errbuf), "insert");
    if (rc == 0)
        rc = checked(d, d->store->ops->event(d->store, r->seq, r->created_us,
                                             "queued", NULL, d->errbuf),
                     "event");
    if (rc < 0) {
        free(j);
        gq_jobrec_clear(r);
        return rc;
    }
    gq_job_init(j, r->seq, (uint16_t)cls, s->priority, s->kind);
    j->deadline_us = deadline;
    if (gq_jobtab_put(&d->jobs, j) < 0) {
        free(j);
        d->batch_failed = 1; /* the row exists; memory does not: resync */
        gq_kick(d);
        gq_jobrec_clear(r);
        return GQ_ENOMEM;
    }
    uint64_t bad = 0;
    int dst = r->deps ? deps_state(d, r->deps, &bad) : 1;
    if (dst == 0) {
        if (block_job(d, j, r->deps) < 0) {
            d->batch_failed = 1;
            gq_kick(d);
        }
    } else if (dst < 0) {
        /* Checked by the caller before; a race with a purge lands here. */
        r->state = GQ_FAILED;
        set_str(&r->err_code, "dependency_failed");
        set_str(&r->err_msg, "a dependency did not succeed");
        finish_job(d, j, r, now, NULL);
        *created = 1;
        return 0;
    } else {
        gq_sched_enqueue(d->sched, j, now);
    }
    d->metrics.submitted[cls]++;
    gq_publish(d, r, j);
    *created = 1;
    gq_kick(d);
    return 0;
}

int
gq_op_cancel(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *r)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    int64_t now = gq_now();
    int rc;
    if (j == NULL) {
        rc = gq_get(d, seq, r);
        return rc < 0 ? rc : GQ_ESTATE;
    }
    if ((rc = gq_batch(d)) < 0)
        return rc;
    if ((rc = checked(d, gq_get(d, seq, r), "get")) < 0)
        return rc;
    if (j->state == GQ_RUNNING)
        end_grant(d, j, r, now);
    else if (j->blocked)
        unblock_job(d, j);
    else
        gq_sched_remove(d->sched, j);
    if (j->state == GQ_QUEUED && j->owner) {
        struct gq_park *p = j->owner;
        gq_reply_err(d, p->req, GQ_ESTATE, NULL, "the lock request was "
                     "cancelled");
        j->owner = NULL;
        gq_park_free(p);
    }
    r->state = GQ_CANCELLED;
    set_str(&r->err_code, "cancelled");
    set_str(&r->err_msg, "cancelled by request");
    finish_job(d, j, r, now, NULL);
    gq_kick(d);
    return 0;
}

int
gq_op_requeue(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *r)
{
    int rc, cls;
    int64_t now = gq_now();
    if (gq_jobtab_get(&d->jobs, seq) != NULL) {
        rc = gq_get(d, seq, r);
        return rc < 0 ? rc : GQ_ESTATE;
    }
    if ((rc = gq_get(d, seq, r)) < 0)
        return rc;
    if (r->state == GQ_SUCCEEDED || r->kind == GQ_KIND_LOCK)
        return GQ_ESTATE;
    if ((cls = gq_sched_class(d->sched, r->cls)) < 0 ||
        cls >= d->nlive_classes)
        return GQ_ENOCLASS;
    struct gq_job *j = malloc(sizeof *j);
    if (j == NULL)
        return GQ_ENOMEM;
    gq_job_init(j, seq, (uint16_t)cls, r->priority, GQ_KIND_JOB);
    if ((rc = gq_batch(d)) < 0 || gq_jobtab_put(&d->jobs, j) < 0) {
        free(j);
        return rc < 0 ? rc : GQ_ENOMEM;
    }
    j->token = r->token;
    uint64_t bad = 0;
    int dst = r->deps ? deps_state(d, r->deps, &bad) : 1;
    if (dst < 0) {
        gq_jobtab_del(&d->jobs, j);
        free(j);
        return GQ_ESTATE; /* a dependency failed: it would fail again */
    }
    r->attempts = 0;
    r->finished_us = 0;
    set_str(&r->err_code, NULL);
    set_str(&r->err_msg, NULL);
    if (dst == 0) {
        r->state = GQ_QUEUED;
        if (block_job(d, j, r->deps) < 0 ||
            store_update(d, r, "{\"requeue\":true}") < 0)
            return GQ_ESTORE;
        gq_publish(d, r, j);
        gq_kick(d);
        return 0;
    }
    requeue_job(d, j, r, now, 0, "{\"requeue\":true}");
    gq_kick(d);
    return 0;
}

int
gq_op_finish(struct gq_daemon *d, uint64_t seq, uint64_t token,
             const struct gq_finish *f, struct gq_jobrec *r)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    int64_t now = gq_now();
    int rc;
    if (j == NULL || j->state != GQ_RUNNING || j->token != token)
        return GQ_ESTALE;
    if ((f->how == GQ_END_RELEASE) != (j->kind == GQ_KIND_LOCK))
        return GQ_ENOENT;
    if (j->owner != NULL && !f->internal)
        return GQ_ENOENT; /* a built-in run's lease is gpuqd's own */
    if ((rc = gq_batch(d)) < 0)
        return rc;
    if ((rc = checked(d, gq_get(d, seq, r), "get")) < 0)
        return rc;
    const struct gq_class_conf *cc = gq_sched_conf(d->sched, j->cls);
    end_grant(d, j, r, now);
    switch (f->how) {
    case GQ_END_COMPLETE:
    case GQ_END_RELEASE:
        r->state = GQ_SUCCEEDED;
        set_json(&r->result, f->result);
        finish_job(d, j, r, now, NULL);
        break;
    case GQ_END_YIELD:
        /* A yield is not a failed attempt. */
        if (j->attempts > 0)
            j->attempts--;
        r->attempts = j->attempts;
        if (f->result)
            set_json(&r->progress, f->result);
        requeue_job(d, j, r, now, 0, "{\"yield\":true}");
        break;
    case GQ_END_FAIL:
        set_str(&r->err_code, f->err_code ? f->err_code : "failed");
        set_str(&r->err_msg, f->err_msg);
        if (!f->retryable) {
            r->state = GQ_FAILED;
            finish_job(d, j, r, now, "{\"retryable\":false}");
        } else if (j->attempts >= cc->max_attempts) {
            r->state = GQ_DEAD;
            finish_job(d, j, r, now, "{\"retryable\":true}");
        } else {
            requeue_job(d, j, r, now, backoff_us(d, j->cls, j->attempts),
                        "{\"retryable\":true}");
        }
        break;
    }
    gq_kick(d);
    return 0;
}

int
gq_op_heartbeat(struct gq_daemon *d, uint64_t seq, uint64_t token,
                double *ttl, int *yield)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    if (j == NULL || j->state != GQ_RUNNING || j->token != token)
        return GQ_ESTALE;
    if (j->owner != NULL || j->slot < 0)
        return GQ_ENOENT; /* a built-in run: gpuqd holds that lease */
    const struct gq_class_conf *cc = gq_sched_conf(d->sched, j->cls);
    int64_t now = gq_now();
    j->expires_us = now + (int64_t)(cc->lease_ttl * 1e6);
    struct timeval tv = {(time_t)cc->lease_ttl,
                         (suseconds_t)((cc->lease_ttl -
                                        floor(cc->lease_ttl)) * 1e6)};
    evtimer_add(d->slot_ev[j->slot], &tv);
    *ttl = cc->lease_ttl;
    *yield = 0;
    for (int c = 0; c < gq_sched_nclasses(d->sched); c++) {
        struct gq_class_stats st;
        if (gq_sched_conf(d->sched, c)->priority <= cc->priority)
            continue;
        gq_sched_stats(d->sched, c, &st);
        if (st.ready > 0)
            *yield = 1;
    }
    return 0;
}

void
gq_op_abandon(struct gq_daemon *d, uint64_t seq, enum gq_state how)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    struct gq_jobrec r = {0};
    if (j == NULL || j->state != GQ_QUEUED || gq_batch(d) < 0 ||
        checked(d, gq_get(d, seq, &r), "get") < 0) {
        gq_jobrec_clear(&r);
        return;
    }
    gq_sched_remove(d->sched, j);
    r.state = how;
    if (how == GQ_EXPIRED) {
        set_str(&r.err_code, "timeout");
        set_str(&r.err_msg, "the lock was not granted within the wait");
    } else {
        set_str(&r.err_code, "client_gone");
        set_str(&r.err_msg, "the client went away while waiting");
    }
    finish_job(d, j, &r, gq_now(), NULL);
    gq_jobrec_clear(&r);
    gq_kick(d);
}

static void
breaker_cb(evutil_socket_t fd, short what, void *arg)
{
    gq_kick(arg); /* dispatch may now send a half-open probe */
}

/* Deletes a job's uploaded audio once the job is over. */
static void
drop_upload(struct gq_daemon *d, struct gq_job *j, const struct gq_jobrec *r)
{
    if (d->cfg.exec[j->cls].executor != GQ_EXEC_TRANSCRIBE || !r->payload ||
        strstr(r->payload, "\"upload\"") == NULL)
        return;
    json_t *p = json_loads(r->payload, 0, NULL);
    const char *up = json_string_value(json_object_get(p, "upload"));
    if (up && strchr(up, '/') == NULL && up[0] != '.') {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", d->upload_dir, up);
        unlink(path);
    }
    json_decref(p);
}

/* --- backend health --- */

static void health_arm(struct gq_daemon *d, int b);

static void
health_done(void *ud, const struct gq_call_result *res)
{
    struct gq_health *h = ud;
    struct gq_daemon *d = h->d;
    struct gq_backend *bk = &d->backends[h->b];
    int ok = res->kind == GQ_CALL_OK;
    if (ok != bk->healthy)
        gq_log(ok ? GQ_LOG_INFO : GQ_LOG_WARN, "backend %s is %s%s%s",
               bk->conf.name, ok ? "healthy" : "unhealthy: ",
               ok ? "" : res->err, "");
    bk->healthy = ok;
    d->health_call[h->b] = NULL;
    if (ok)
        gq_kick(d); /* its jobs may be servable again */
    health_arm(d, h->b);
}

static void
health_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_health *h = arg;
    struct gq_daemon *d = h->d;
    struct gq_backend *bk = &d->backends[h->b];
    char url[600];
    /* Ollama answers GET / ("Ollama is running"); the others /health. */
    snprintf(url, sizeof url, "%s%s", bk->conf.url,
             bk->conf.type == GQ_BACKEND_OLLAMA ? "/" : "/health");
    struct gq_call_opts o = {0};
    o.method = "GET";
    o.url = url;
    o.timeout = 5;
    o.max_response = 4096;
    d->health_call[h->b] = gq_call_start(d->httpc, &o, NULL, health_done,
                                         h);
    if (d->health_call[h->b] == NULL)
        health_arm(d, h->b);
}

static void
health_arm(struct gq_daemon *d, int b)
{
    double s = d->backends[b].conf.health_interval;
    struct timeval tv = {(time_t)s, (suseconds_t)((s - floor(s)) * 1e6)};
    if (d->draining)
        return;
    evtimer_add(d->health_ev[b], &tv);
}

/* --- timers: backoff ends, queue deadlines, purge --- */

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    int64_t now = gq_now();
    struct gq_job *j;
    d->timer_at = 0;
    gq_sched_tick(d->sched, now);
    while ((j = gq_sched_pop_expired(d->sched, now)) != NULL) {
        struct gq_jobrec r = {0};
        if (gq_batch(d) < 0 || checked(d, gq_get(d, j->seq, &r), "get") < 0) {
            /* Put it back and try again in a second. */
            j->deadline_us = now + 1000000;
            gq_sched_enqueue(d->sched, j, now);
            gq_jobrec_clear(&r);
            break;
        }
        if (j->owner) {
            struct gq_park *p = j->owner;
            gq_reply_err(d, p->req, GQ_ETIMEDOUT, "queue_timeout",
                         "the class's queue_timeout passed");
            j->owner = NULL;
            gq_park_free(p);
        }
        r.state = GQ_EXPIRED;
        set_str(&r.err_code, "queue_timeout");
        set_str(&r.err_msg, "waited longer than its queue_timeout");
        finish_job(d, j, &r, now, NULL);
        gq_jobrec_clear(&r);
    }
    gq_kick(d);
}

static void
arm_timer(struct gq_daemon *d)
{
    int64_t at = gq_sched_next_timer(d->sched);
    if (at == d->timer_at)
        return;
    d->timer_at = at;
    if (at == 0) {
        evtimer_del(d->timer_ev);
        return;
    }
    int64_t delta = at - gq_now();
    if (delta < 0)
        delta = 0;
    struct timeval tv = {(time_t)(delta / 1000000),
                         (suseconds_t)(delta % 1000000)};
    evtimer_add(d->timer_ev, &tv);
}

static void
purge_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    int64_t n = 0;
    if (gq_batch(d) == 0) {
        int64_t before = wall_now() - (int64_t)(d->cfg.retention * 1e6);
        if (checked(d, d->store->ops->purge(d->store, before, &n, d->errbuf),
                    "purge") == 0 &&
            n > 0)
            gq_log(GQ_LOG_INFO, "purged %lld finished jobs", (long long)n);
    }
    /* Every quarter of the retention, from 1 s to 60 s: a finished job
     * outlives its retention by at most that (an hourly purge kept a
     * 60 s retention's jobs for up to an hour), and each purge deletes
     * at most about a minute's worth of jobs inside its loop turn. */
    double every = d->cfg.retention / 4;
    every = every < 1 ? 1 : every > 60 ? 60 : every;
    struct timeval tv = {(time_t)every,
                         (suseconds_t)((every - floor(every)) * 1e6)};
    evtimer_add(d->purge_ev, &tv);
}

/* --- rebuilding memory from the store --- */

static void
drop_run_cb(struct gq_job *j, void *ud)
{
    (void)ud;
    if (j->state == GQ_RUNNING && j->owner) {
        drop_run(j->owner);
        j->owner = NULL;
    }
}

static void
free_job_cb(struct gq_job *j, void *ud)
{
    (void)ud;
    free(j);
}

/* Throws away the in-memory jobs and scheduler and loads them again from
 * the store; used after a failed commit. Running grants stay running. */
static void
rebuild(struct gq_daemon *d)
{
    char msg[256];
    struct gq_park *p;
    gq_log(GQ_LOG_WARN, "rebuilding state from the store");
    /* Lock waiters cannot be matched to what the store kept: fail them. */
    while ((p = d->parks[GQ_PARK_LOCK]) != NULL) {
        send_err_now(p->req, GQ_ESTORE);
        gq_park_free(p);
    }
    for (int s = 0; s < gq_sched_nslots(d->sched); s++) {
        evtimer_del(d->slot_ev[s]);
        d->group_n[s] = 0;
    }
    /* Runs are cancelled; their grants are reloaded without a run and
     * expire at once (recover_one); workers' and locks' grants stay. */
    gq_jobtab_each(&d->jobs, drop_run_cb, NULL);
    gq_jobtab_each(&d->jobs, free_job_cb, NULL);
    gq_jobtab_close(&d->jobs);
    while (d->nblocked > 0)
        unblock_at(d, d->nblocked - 1);
    gq_sched_free(d->sched);
    d->sched = gq_sched_new(d->cfg.classes, d->cfg.nclasses, d->cfg.slots,
                            d->cfg.share_by, (uint32_t)gq_now(), msg,
                            sizeof msg);
    ASSERT(d->sched != NULL);
    ASSERT(gq_jobtab_init(&d->jobs) == 0);
    if (gq_sched_draining(d->sched) != d->draining)
        gq_sched_set_draining(d->sched, d->draining);
    if (recover(d, 1, NULL) < 0)
        gq_log(GQ_LOG_ERR, "rebuild: %s", d->errbuf);
    maybe_compact(d);
    /* A wait on a job whose insert was rolled back must not attach to
     * the job that gets the same id next. */
    for (int t = GQ_PARK_JOBWAIT; t <= GQ_PARK_STREAM; t++) {
        struct gq_park *q, *qn;
        if (t != GQ_PARK_JOBWAIT && t != GQ_PARK_STREAM)
            continue;
        for (q = d->parks[t]; q; q = qn) {
            struct gq_jobrec r = {0};
            qn = q->next;
            if (gq_get(d, q->seq, &r) == GQ_ENOENT) {
                if (q->type == GQ_PARK_STREAM && q->started)
                    evhttp_send_reply_end(q->req);
                else
                    send_err_now(q->req, GQ_ESTORE);
                gq_park_free(q);
            }
            gq_jobrec_clear(&r);
        }
    }
}

/* --- the end of every loop turn --- */

static void
check_drained(struct gq_daemon *d)
{
    if (d->draining &&
        gq_sched_free_slots(d->sched) == gq_sched_nslots(d->sched)) {
        /* Let the last replies reach their sockets before exiting. */
        struct timeval tv = {0, 100000};
        if (d->draining == 1)
            gq_log(GQ_LOG_INFO, "drained; exiting");
        d->draining = 2;
        event_base_loopexit(d->base, &tv);
    }
}

static void
turn_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    int64_t t0 = gq_now();
    d->turn_armed = 0;
    dispatch(d);
    if (d->in_batch || d->batch_failed) {
        int rc = GQ_ESTORE;
        int64_t t1 = gq_now();
        if (d->in_batch && !d->batch_failed)
            rc = gq_store_commit(d->store, d->errbuf);
        if (d->in_batch && rc < 0)
            gq_store_rollback(d->store);
        d->in_batch = 0;
        gq_hist_add(&d->metrics.commit, (double)(gq_now() - t1) / 1e6);
        if (rc == 0) {
            d->metrics.commits++;
            d->commit_fails = 0;
            committed(d);
        } else {
            if (rc != GQ_ESTORE || !d->batch_failed)
                gq_log(GQ_LOG_ERR, "store: commit: %s", d->errbuf);
            d->metrics.commit_failures++;
            d->batch_failed = 0;
            d->nhandoff = 0;
            d->nstream_ends = 0;
            gq_cb_batch_done(d, 0);
            flush_replies(d, 1, rc == GQ_ESTOREFULL ? GQ_ESTOREFULL
                                                     : GQ_ESTORE);
            json_decref(d->sse_batch);
            d->sse_batch = NULL;
            rebuild(d);
            /*
             * If the rebuild itself has work to commit (a lock waiter to
             * cancel, a grant), the turn is armed again, and run at once
             * it would fail the same way: a loop that never polls, so
             * no request (not even the one that lifts a fault) is read
             * and the log fills.  While commits keep failing, the next
             * turn waits (fail_backoff).
             */
            if (d->turn_armed) {
                struct timeval tv = fail_backoff(d);
                event_del(d->turn_ev);
                event_add(d->turn_ev, &tv);
            }
            d->commit_fails++;
        }
    } else {
        flush_replies(d, 0, 0);
    }
    arm_timer(d);
    check_drained(d);
    gq_hist_add(&d->metrics.turn, (double)(gq_now() - t0) / 1e6);
}

/* --- durability: groups wait for the WAL's fdatasync --- */

static void
end_streams(struct gq_daemon *d, const uint64_t *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct gq_jobrec r = {0};
        if (gq_get(d, seqs[i], &r) == 0)
            gq_http_stream_end(d, &r);
        gq_jobrec_clear(&r);
    }
}

/* The batch is durable: reply, publish, start callbacks. */
static void
complete_group(struct gq_daemon *d, struct gq_group *g)
{
    send_list(g->replies, 0, 0);
    int64_t sent = gq_now();
    for (int i = 0; i < g->nhandoff; i++)
        gq_hist_add(&d->metrics.handoff,
                    (double)(sent - g->handoff_from[i]) / 1e6);
    publish_batch(d, g->sse);
    gq_cb_activate(d, g->callbacks);
    end_streams(d, g->stream_ends, g->nstream_ends);
    free(g->stream_ends);
    free(g);
}

/* The turn's batch has committed: its effects wait for durability. */
static void
committed(struct gq_daemon *d)
{
    struct gq_group *g = calloc(1, sizeof *g);
    if (g == NULL && d->sync_fd >= 0) {
        /* No memory to wait: make it durable here, on the loop. */
        if (fdatasync(d->sync_fd) != 0)
            gq_log(GQ_LOG_ERR, "fdatasync: %s", strerror(errno));
    }
    if (g == NULL) {
        flush_replies(d, 0, 0);
        publish_batch(d, d->sse_batch);
        d->sse_batch = NULL;
        gq_cb_activate(d, gq_cb_take_staged(d));
        d->nhandoff = 0;
        end_streams(d, d->stream_ends, d->nstream_ends);
        d->nstream_ends = 0;
        return;
    }
    g->stream_ends = d->stream_ends;
    g->nstream_ends = d->nstream_ends;
    d->stream_ends = NULL;
    d->nstream_ends = d->capstream_ends = 0;
    g->seq = ++d->commit_seq;
    g->replies = d->pend_head;
    d->pend_head = NULL;
    d->pend_tail = &d->pend_head;
    g->sse = d->sse_batch;
    d->sse_batch = NULL;
    g->callbacks = gq_cb_take_staged(d);
    memcpy(g->handoff_from, d->handoff_from, sizeof g->handoff_from);
    g->nhandoff = d->nhandoff;
    d->nhandoff = 0;
    if (d->sync_fd < 0) {
        complete_group(d, g);
        return;
    }
    *d->groups_tail = g;
    d->groups_tail = &g->next;
    pthread_mutex_lock(&d->sync_mu);
    d->sync_want = g->seq;
    pthread_cond_signal(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
}

static void
complete_until(struct gq_daemon *d, uint64_t done)
{
    struct gq_group *g;
    while ((g = d->groups) != NULL && g->seq <= done) {
        d->groups = g->next;
        if (d->groups == NULL)
            d->groups_tail = &d->groups;
        complete_group(d, g);
    }
}

static void *
sync_main(void *arg)
{
    struct gq_daemon *d = arg;
    pthread_mutex_lock(&d->sync_mu);
    for (;;) {
        while (d->sync_want == d->sync_done && !d->sync_stop)
            pthread_cond_wait(&d->sync_cv, &d->sync_mu);
        if (d->sync_want == d->sync_done)
            break; /* stopping, nothing owed */
        uint64_t target = d->sync_want;
        pthread_mutex_unlock(&d->sync_mu);
        int rc = fdatasync(d->sync_fd);
        int e = errno;
        pthread_mutex_lock(&d->sync_mu);
        if (rc != 0)
            d->sync_failed = e;
        d->sync_done = target;
        uint64_t one = 1;
        if (write(d->sync_evfd, &one, sizeof one) < 0) {
            /* The counter cannot overflow in practice; nothing to do. */
        }
    }
    pthread_mutex_unlock(&d->sync_mu);
    return NULL;
}

static void
sync_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    uint64_t n, done;
    int failed;
    if (read(fd, &n, sizeof n) < 0) {
        /* EAGAIN: a spurious wake-up. */
    }
    pthread_mutex_lock(&d->sync_mu);
    done = d->sync_done;
    failed = d->sync_failed;
    pthread_mutex_unlock(&d->sync_mu);
    if (failed) {
        /* A failed fsync may have lost committed pages: nothing can be
         * acknowledged any more.  Stop; the next start recovers from
         * what is on disk. */
        struct gq_group *g;
        gq_log(GQ_LOG_ERR, "fdatasync of the WAL failed: %s; stopping",
               strerror(failed));
        while ((g = d->groups) != NULL) {
            d->groups = g->next;
            send_list(g->replies, 1, GQ_ESTORE);
            json_decref(g->sse);
            gq_cb_free_list(g->callbacks);
            free(g->stream_ends);
            free(g);
        }
        d->groups_tail = &d->groups;
        d->exit_code = 1;
        event_base_loopexit(d->base, NULL);
        return;
    }
    complete_until(d, done);
}

static int
sync_start(struct gq_daemon *d)
{
    d->groups_tail = &d->groups;
    d->sync_fd = d->store->ops->sync_fd ? d->store->ops->sync_fd(d->store)
                                        : -1;
    if (d->sync_fd < 0)
        return 0;
    d->sync_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->sync_evfd < 0)
        return GQ_EIO;
    pthread_mutex_init(&d->sync_mu, NULL);
    pthread_cond_init(&d->sync_cv, NULL);
    d->sync_ev = event_new(d->base, d->sync_evfd, EV_READ | EV_PERSIST,
                           sync_cb, d);
    if (d->sync_ev == NULL || event_add(d->sync_ev, NULL) < 0 ||
        pthread_create(&d->sync_thread, NULL, sync_main, d) != 0)
        return GQ_EIO;
    d->sync_running = 1;
    return 0;
}

/* At exit: everything committed becomes durable and is answered. */
static void
sync_finish(struct gq_daemon *d)
{
    if (d->sync_running) {
        pthread_mutex_lock(&d->sync_mu);
        d->sync_stop = 1;
        pthread_cond_signal(&d->sync_cv);
        pthread_mutex_unlock(&d->sync_mu);
        pthread_join(d->sync_thread, NULL);
        d->sync_running = 0;
    }
    if (d->groups && d->sync_fd >= 0 && fdatasync(d->sync_fd) != 0)
        gq_log(GQ_LOG_ERR, "fdatasync: %s", strerror(errno));
    complete_until(d, UINT64_MAX);
}

/* --- drain and signals --- */

static void
drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    gq_log(GQ_LOG_WARN, "drain deadline passed with grants outstanding; "
           "they are requeued at the next start");
    event_base_loopexit(d->base, NULL);
}

void
gq_daemon_drain(struct gq_daemon *d, double deadline)
{
    struct gq_park *p, *next;
    if (d->draining)
        return;
    gq_log(GQ_LOG_INFO, "draining (deadline %.0fs)", deadline);
    d->draining = 1;
    gq_sched_set_draining(d->sched, 1);
    sd_notify(0, "STOPPING=1");
    notify_status(d, 1);
    for (p = d->parks[GQ_PARK_LOCK]; p; p = next) {
        uint64_t seq = p->seq;
        next = p->next;
        gq_reply_err(d, p->req, GQ_EDRAINING, NULL,
                     "the daemon is draining; no lock will be granted");
        gq_park_free(p);
        gq_op_abandon(d, seq, GQ_CANCELLED);
    }
    for (p = d->parks[GQ_PARK_LEASE]; p; p = next) {
        next = p->next;
        gq_reply_err(d, p->req, GQ_EDRAINING, NULL,
                     "the daemon is draining; no job will be granted");
        gq_park_free(p);
    }
    for (p = d->parks[GQ_PARK_JOBWAIT]; p; p = next) {
        struct gq_jobrec r = {0};
        next = p->next;
        if (gq_get(d, p->seq, &r) == 0)
            gq_reply(d, p->req, 200, gq_job_json(d, &r));
        else
            gq_reply_err(d, p->req, GQ_EDRAINING, NULL, "draining");
        gq_jobrec_clear(&r);
        gq_park_free(p);
    }
    for (p = d->parks[GQ_PARK_SSE]; p; p = next) {
        next = p->next;
        evhttp_send_reply_end(p->req);
        gq_park_free(p);
    }
    struct timeval tv = {(time_t)deadline,
                         (suseconds_t)((deadline - floor(deadline)) * 1e6)};
    evtimer_add(d->drain_ev, &tv);
    gq_kick(d);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct gq_daemon *d = arg;
    if (sig == SIGHUP) {
        gq_daemon_reload(d); /* logs what it did or why not */
        return;
    }
    gq_daemon_drain(d, d->cfg.drain_timeout);
}

/* --- reload (SIGHUP) ---
 *
 * A reload builds a new scheduler from the new classes and moves every
 * in-memory job into it, mapping class indexes by name (a job's cls
 * changes): queued jobs are enqueued again with their priority, backoff
 * end and deadline (their order in a class is by priority and seq, so it
 * is kept); running jobs are attached to the slots they hold (riders of a
 * batched grant ride again); jobs waiting for dependencies stay blocked.
 * Every array indexed by class (cfg.exec, the metrics, parked leases'
 * class masks, waiting_workers) or by backend (backends[], health checks,
 * metrics) is remapped the same way, and then all of it is swapped at
 * once.  Nothing in the move can fail: its memory is allocated, and the
 * store written, before it starts.
 *
 * The fairness state (virtual times, streaks, achieved shares, the
 * scheduler's grant counts) starts afresh; the /metrics counters do not.
 *
 * A removed class's queued jobs leave memory and stay stored, as
 * recovery leaves the jobs of an unknown class; its lock waiters and
 * drop-in requests, which live only as long as a connection, are
 * cancelled.  A removed class with grants still running is kept after
 * the file's classes, "retired": it takes no submits and has no queue;
 * its grants end normally, their ends are stored, and a job that would
 * go back to its queue is stored queued instead.  When the last of them
 * ends the classes are compacted by the same move.  A removed backend
 * with calls in flight (or used by a retired class) is retired likewise.
 * Backends keep their live state (breaker, speeds, counters, caches) by
 * name; a changed url or type closes the breaker.
 */

void
gq_daemon_set_source(struct gq_daemon *d, const char *path,
                     const char *data_dir, const char *listen)
{
    snprintf(d->conf_path, sizeof d->conf_path, "%s", path ? path : "");
    snprintf(d->conf_data, sizeof d->conf_data, "%s",
             data_dir ? data_dir : "");
    snprintf(d->conf_listen, sizeof d->conf_listen, "%s",
             listen ? listen : "");
}

/* Index of the class called name among the first n of c, or -1. */
static int
conf_class(const struct gq_config *c, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (strcmp(c->classes[k].name, name) == 0)
            return k;
    return -1;
}

/* Index of the backend called name among the first n of c, or -1. */
static int
conf_backend(const struct gq_config *c, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (strcmp(c->backends[k].name, name) == 0)
            return k;
    return -1;
}

static const char *
exec_str(enum gq_executor e)
{
    static const char *const names[] = {"worker", "transcribe", "summarize",
                                        "chat"};
    return (unsigned)e < 4 ? names[e] : "?";
}

static const char *
sync_str(int level)
{
    return level == 2 ? "full" : level == 1 ? "normal" : "off";
}

/* Appends ", TEXT" (or TEXT to an empty buf), cut to fit len. */
static void appendf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
appendf(char *buf, size_t len, const char *fmt, ...)
{
    size_t n = strlen(buf);
    va_list ap;
    if (n + 3 >= len)
        return;
    if (n > 0) {
        memcpy(buf + n, ", ", 3);
        n += 2;
    }
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

static const char *
backend_name(const struct gq_config *c, int b)
{
    return b >= 0 && b < c->nbackends ? c->backends[b].name : "none";
}

/* Logs what changed in class oc of o, now class nc of n. */
static void
log_class_diff(const struct gq_config *o, int oc, const struct gq_config *n,
               int nc)
{
    const struct gq_class_conf *a = &o->classes[oc], *z = &n->classes[nc];
    const struct gq_class_exec *ax = &o->exec[oc], *zx = &n->exec[nc];
    char b[900] = "";
    if (a->priority != z->priority)
        appendf(b, sizeof b, "priority %d -> %d", a->priority, z->priority);
    if (a->weight != z->weight)
        appendf(b, sizeof b, "weight %g -> %g", a->weight, z->weight);
    if (a->max_consecutive != z->max_consecutive)
        appendf(b, sizeof b, "max_consecutive %d -> %d", a->max_consecutive,
                z->max_consecutive);
    if (a->max_queue != z->max_queue)
        appendf(b, sizeof b, "max_queue %d -> %d", a->max_queue,
                z->max_queue);
    if (a->queue_timeout != z->queue_timeout)
        appendf(b, sizeof b, "queue_timeout %g -> %g", a->queue_timeout,
                z->queue_timeout);
    if (a->lease_ttl != z->lease_ttl)
        appendf(b, sizeof b, "lease_ttl %g -> %g", a->lease_ttl,
                z->lease_ttl);
    if (a->max_attempts != z->max_attempts)
        appendf(b, sizeof b, "max_attempts %d -> %d", a->max_attempts,
                z->max_attempts);
    if (o->backoff_base[oc] != n->backoff_base[nc])
        appendf(b, sizeof b, "backoff_base %g -> %g", o->backoff_base[oc],
                n->backoff_base[nc]);
    if (o->backoff_max[oc] != n->backoff_max[nc])
        appendf(b, sizeof b, "backoff_max %g -> %g", o->backoff_max[oc],
                n->backoff_max[nc]);
    if (ax->executor != zx->executor)
        appendf(b, sizeof b, "executor %s -> %s", exec_str(ax->executor),
                exec_str(zx->executor));
    if (strcmp(backend_name(o, ax->backend), backend_name(n, zx->backend)))
        appendf(b, sizeof b, "backend %s -> %s", backend_name(o, ax->backend),
                backend_name(n, zx->backend));
    if (ax->max_hold != zx->max_hold)
        appendf(b, sizeof b, "max_hold %g -> %g", ax->max_hold, zx->max_hold);
    if (strcmp(ax->audio_roots, zx->audio_roots) != 0)
        appendf(b, sizeof b, "audio_roots changed");
    if (b[0])
        gq_log(GQ_LOG_INFO, "reload: class %s: %s", z->name, b);
}

/* Logs what changed in backend a, now z. */
static void
log_backend_diff(const struct gq_backend_conf *a,
                 const struct gq_backend_conf *z)
{
    char b[1400] = "";
    if (a->type != z->type)
        appendf(b, sizeof b, "type changed");
    if (strcmp(a->url, z->url) != 0)
        appendf(b, sizeof b, "url %s -> %s", a->url, z->url);
    if (a->timeout != z->timeout)
        appendf(b, sizeof b, "timeout %g -> %g", a->timeout, z->timeout);
    if (a->max_concurrency != z->max_concurrency)
        appendf(b, sizeof b, "max_concurrency %d -> %d", a->max_concurrency,
                z->max_concurrency);
    if (strcmp(a->model, z->model) != 0)
        appendf(b, sizeof b, "model '%s' -> '%s'", a->model, z->model);
    if (a->breaker_failures != z->breaker_failures ||
        a->breaker_cooldown != z->breaker_cooldown)
        appendf(b, sizeof b, "breaker %d/%gs -> %d/%gs", a->breaker_failures,
                a->breaker_cooldown, z->breaker_failures,
                z->breaker_cooldown);
    if (a->health_interval != z->health_interval)
        appendf(b, sizeof b, "health_interval %g -> %g", a->health_interval,
                z->health_interval);
    if (a->context_tokens != z->context_tokens)
        appendf(b, sizeof b, "context_tokens %d -> %d", a->context_tokens,
                z->context_tokens);
    if (b[0])
        gq_log(GQ_LOG_INFO, "reload: backend %s: %s", z->name, b);
}

/* Whether class mask a of configuration o names the classes that mask
 * z of n does (masks are indexes into each one's classes). */
static int
same_classes(const struct gq_config *o, uint64_t a, const struct gq_config *n,
             uint64_t z)
{
    if (a == GQ_ALL_CLASSES || z == GQ_ALL_CLASSES)
        return a == z;
    for (int k = 0; k < o->nclasses && k < 64; k++)
        if ((a >> k & 1) &&
            !(conf_class(n, n->nclasses, o->classes[k].name) >= 0 &&
              (z >> conf_class(n, n->nclasses, o->classes[k].name) & 1)))
            return 0;
    for (int k = 0; k < n->nclasses && k < 64; k++)
        if ((z >> k & 1) &&
            !(conf_class(o, o->nclasses, n->classes[k].name) >= 0 &&
              (a >> conf_class(o, o->nclasses, n->classes[k].name) & 1)))
            return 0;
    return 1;
}

/* Logs the changes of [server] limits, [scheduler], [models],
 * [callbacks] and the API tokens (never a secret itself). */
static void
log_other_diff(const struct gq_config *o, const struct gq_config *n)
{
    char b[900] = "";
    int models = o->nmodels != n->nmodels;
    if (o->max_body != n->max_body)
        appendf(b, sizeof b, "max_body %ld -> %ld", o->max_body, n->max_body);
    if (o->max_payload != n->max_payload)
        appendf(b, sizeof b, "max_payload %ld -> %ld", o->max_payload,
                n->max_payload);
    if (o->max_parked != n->max_parked)
        appendf(b, sizeof b, "max_parked %d -> %d", o->max_parked,
                n->max_parked);
    if (o->request_timeout != n->request_timeout)
        appendf(b, sizeof b, "request_timeout %g -> %g", o->request_timeout,
                n->request_timeout);
    if (o->drain_timeout != n->drain_timeout)
        appendf(b, sizeof b, "drain_timeout %g -> %g", o->drain_timeout,
                n->drain_timeout);
    if (o->retention != n->retention)
        appendf(b, sizeof b, "retention %g -> %g", o->retention,
                n->retention);
    if (o->share_by != n->share_by)
        appendf(b, sizeof b, "share_by %s -> %s",
                o->share_by == GQ_SHARE_GRANTS ? "grants" : "time",
                n->share_by == GQ_SHARE_GRANTS ? "grants" : "time");
    for (int i = 0; !models && i < n->nmodels; i++)
        models = strcmp(o->model_names[i], n->model_names[i]) != 0 ||
                 strcmp(o->classes[o->model_class[i]].name,
                        n->classes[n->model_class[i]].name) != 0;
    if (models)
        appendf(b, sizeof b, "[models] now %d", n->nmodels);
    if (strcmp(o->callback_secret, n->callback_secret) != 0)
        appendf(b, sizeof b, "callback secret changed");
    if (o->callback_attempts != n->callback_attempts)
        appendf(b, sizeof b, "callback attempts %d -> %d",
                o->callback_attempts, n->callback_attempts);
    int tokens = o->ntokens != n->ntokens;
    for (int i = 0; !tokens && i < n->ntokens; i++)
        tokens = strcmp(o->tokens[i].name, n->tokens[i].name) != 0 ||
                 o->tokens[i].role != n->tokens[i].role ||
                 !same_classes(o, o->tokens[i].classes, n,
                               n->tokens[i].classes) ||
                 strcmp(o->tokens[i].secret, n->tokens[i].secret) != 0;
    if (tokens) /* never the secrets themselves */
        appendf(b, sizeof b, "API tokens changed (now %d)", n->ntokens);
    if (b[0])
        gq_log(GQ_LOG_INFO, "reload: %s", b);
}

/*
 * The values only a restart can change (the listeners and who may reach
 * them, the store, the slots) stay as they are; each one the file
 * changed gets a warning.  A new restart-only setting belongs here.
 */
static void
keep_restart_only(const struct gq_daemon *d, struct gq_config *nc)
{
    const char *tail = "needs a restart; keeping";
    if (strcmp(nc->listen, d->cfg.listen) != 0) {
        gq_log(GQ_LOG_WARN, "reload: [server] listen %s -> %s %s %s",
               d->cfg.listen, nc->listen, tail, d->cfg.listen);
        memcpy(nc->listen, d->cfg.listen, sizeof nc->listen);
    }
    if (strcmp(nc->data_dir, d->cfg.data_dir) != 0) {
        gq_log(GQ_LOG_WARN, "reload: [server] data_dir %s -> %s %s %s",
               d->cfg.data_dir, nc->data_dir, tail, d->cfg.data_dir);
        memcpy(nc->data_dir, d->cfg.data_dir, sizeof nc->data_dir);
    }
    if (nc->synchronous != d->cfg.synchronous) {
        gq_log(GQ_LOG_WARN, "reload: [server] synchronous %s -> %s %s %s",
               sync_str(d->cfg.synchronous), sync_str(nc->synchronous),
               tail, sync_str(d->cfg.synchronous));
        nc->synchronous = d->cfg.synchronous;
    }
    if (strcmp(nc->unix_socket, d->cfg.unix_socket) != 0) {
        gq_log(GQ_LOG_WARN, "reload: [server] unix_socket '%s' -> '%s' %s "
               "'%s'", d->cfg.unix_socket, nc->unix_socket, tail,
               d->cfg.unix_socket);
        memcpy(nc->unix_socket, d->cfg.unix_socket, sizeof nc->unix_socket);
    }
    if (nc->unix_socket_mode != d->cfg.unix_socket_mode) {
        gq_log(GQ_LOG_WARN, "reload: [server] unix_socket_mode %04o -> %04o "
               "%s %04o", (unsigned)d->cfg.unix_socket_mode,
               (unsigned)nc->unix_socket_mode, tail,
               (unsigned)d->cfg.unix_socket_mode);
        nc->unix_socket_mode = d->cfg.unix_socket_mode;
    }
    if (nc->allow_remote != d->cfg.allow_remote) {
        gq_log(GQ_LOG_WARN, "reload: [server] allow_remote %s -> %s %s %s",
               d->cfg.allow_remote ? "true" : "false",
               nc->allow_remote ? "true" : "false", tail,
               d->cfg.allow_remote ? "true" : "false");
        nc->allow_remote = d->cfg.allow_remote;
    }
    if (nc->slots != d->cfg.slots) {
        gq_log(GQ_LOG_WARN, "reload: [gpu] slots %d -> %d %s %d",
               d->cfg.slots, nc->slots, tail, d->cfg.slots);
        nc->slots = d->cfg.slots;
    }
}

struct jobvec {
    struct gq_job **v;
    size_t n, cap;
};

static void
collect_cb(struct gq_job *j, void *ud)
{
    struct jobvec *jv = ud;
    if (jv->n < jv->cap)
        jv->v[jv->n++] = j;
}

static int
by_enqueue(const void *a, const void *b)
{
    const struct gq_job *x = *(struct gq_job *const *)a;
    const struct gq_job *y = *(struct gq_job *const *)b;
    if (x->enq_us != y->enq_us)
        return x->enq_us < y->enq_us ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Whether a drop-in request (whose job lives for its client) waits on
 * job seq. */
static int
has_dropin(struct gq_daemon *d, uint64_t seq)
{
    for (struct gq_park *p = d->parks[GQ_PARK_STREAM]; p; p = p->next)
        if (p->seq == seq && p->fmt != GQ_FMT_GPUQ)
            return 1;
    return 0;
}

/* Cancels a queued job whose class is going away and whose caller waits
 * on a connection (a lock waiter, a drop-in request).  On a store error
 * the job is left as it is (the move then drops it from memory). */
static void
cancel_removed(struct gq_daemon *d, uint64_t seq)
{
    struct gq_job *j = gq_jobtab_get(&d->jobs, seq);
    struct gq_jobrec r = {0};
    if (j == NULL || j->state != GQ_QUEUED ||
        checked(d, gq_get(d, seq, &r), "get") < 0) {
        gq_jobrec_clear(&r);
        return;
    }
    if (j->blocked)
        unblock_job(d, j);
    else
        gq_sched_remove(d->sched, j);
    if (j->owner) {
        struct gq_park *p = j->owner;
        gq_reply_err(d, p->req, GQ_ENOCLASS, "class",
                     "class %s was removed by a configuration reload",
                     r.cls);
        j->owner = NULL;
        gq_park_free(p);
    }
    r.state = GQ_CANCELLED;
    set_str(&r.err_code, "class_removed");
    set_str(&r.err_msg, "its class was removed by a configuration reload");
    finish_job(d, j, &r, gq_now(), "{\"reload\":true}");
    gq_jobrec_clear(&r);
}

static void
reset_links(struct gq_job *j)
{
    j->t_left = j->t_right = NULL;
    j->t_size = 0;
    j->f_prev = j->f_next = NULL;
    j->b_idx = j->d_idx = 0;
}

/* Moves the class-indexed and backend-indexed counters to their new
 * indexes (cmap, bmap: old index -> new, -1 = gone); the rest (global
 * and per-slot) is copied as it is.  A new per-class or per-backend
 * field of struct gq_metrics must be added here. */
static void
remap_metrics(struct gq_metrics *to, const struct gq_metrics *from,
              const int *cmap, int oldn, const int *bmap, int oldb)
{
    *to = *from;
    memset(to->submitted, 0, sizeof to->submitted);
    memset(to->grants, 0, sizeof to->grants);
    memset(to->finished, 0, sizeof to->finished);
    memset(to->lease_expired, 0, sizeof to->lease_expired);
    memset(to->wait, 0, sizeof to->wait);
    memset(to->hold, 0, sizeof to->hold);
    memset(to->first_token, 0, sizeof to->first_token);
    memset(to->backend_errors, 0, sizeof to->backend_errors);
    memset(to->hold_recent, 0, sizeof to->hold_recent);
    memset(to->first_token_recent, 0, sizeof to->first_token_recent);
    for (int c = 0; c < oldn; c++) {
        int k = cmap[c];
        if (k < 0)
            continue;
        to->submitted[k] = from->submitted[c];
        to->grants[k] = from->grants[c];
        memcpy(to->finished[k], from->finished[c], sizeof to->finished[k]);
        to->lease_expired[k] = from->lease_expired[c];
        to->wait[k] = from->wait[c];
        to->hold[k] = from->hold[c];
        to->first_token[k] = from->first_token[c];
        to->hold_recent[k] = from->hold_recent[c];
        to->first_token_recent[k] = from->first_token_recent[c];
    }
    for (int b = 0; b < oldb; b++)
        if (bmap[b] >= 0)
            memcpy(to->backend_errors[bmap[b]], from->backend_errors[b],
                   sizeof to->backend_errors[0]);
}

/* Remaps the parked requests that name classes by index: a lease poll
 * left with none of its classes gets 404 unknown_class, an event stream
 * of a class that is gone ends; waiting_workers is counted afresh. */
static void
remap_parks(struct gq_daemon *d, const int *cmap, int oldn)
{
    struct gq_park *p, *next;
    for (p = d->parks[GQ_PARK_LEASE]; p; p = next) {
        uint8_t was[GQ_MAX_CLASSES];
        int had = 0, any = 0;
        next = p->next;
        memcpy(was, p->classes, sizeof was);
        memset(p->classes, 0, sizeof p->classes);
        for (int c = 0; c < oldn; c++) {
            int k = cmap[c];
            if (!was[c])
                continue;
            had = 1;
            if (k >= 0 && k < d->nlive_classes) {
                p->classes[k] = 1;
                any = 1;
            }
        }
        if (had && !any) {
            gq_reply_err(d, p->req, GQ_ENOCLASS, "classes",
                         "the classes this request waits for were removed "
                         "by a configuration reload");
            gq_park_free(p); /* its mask is empty: no counts to undo */
        }
    }
    memset(d->waiting_workers, 0, sizeof d->waiting_workers);
    for (p = d->parks[GQ_PARK_LEASE]; p; p = p->next)
        for (int k = 0; k < GQ_MAX_CLASSES; k++)
            if (p->classes[k])
                d->waiting_workers[k]++;
    for (p = d->parks[GQ_PARK_SSE]; p; p = next) {
        next = p->next;
        if (p->cls < 0)
            continue;
        int k = p->cls < oldn ? cmap[p->cls] : -1;
        if (k >= 0) {
            p->cls = k;
            continue;
        }
        evhttp_send_reply_end(p->req);
        gq_park_free(p);
    }
}

/*
 * Makes nc the running configuration: nc is checked and its
 * restart-only values are the running ones.  compact: a compaction (nc
 * is the running file configuration), which logs only what it drops.
 * Returns 0, or GQ_ENOMEM, GQ_ESTORE, GQ_EINVAL (no room for the retired
 * classes or backends) with nothing changed.
 */
static int
apply(struct gq_daemon *d, const struct gq_config *nc, int compact)
{
    int64_t now = gq_now();
    int oldn = gq_sched_nclasses(d->sched), oldb = d->nbackends;
    int cmap[GQ_MAX_CLASSES], bmap[GQ_MAX_BACKENDS];
    int fresh[GQ_MAX_BACKENDS] = {0}, nadded = 0;
    uint8_t added[GQ_MAX_CLASSES] = {0};
    uint64_t dropped_n[GQ_MAX_CLASSES] = {0};
    struct gq_config *m = malloc(sizeof *m);
    struct gq_metrics *nm = malloc(sizeof *nm);
    struct gq_backend *nb = calloc(GQ_MAX_BACKENDS, sizeof *nb);
    struct jobvec jv = {NULL, 0, d->jobs.count};
    uint64_t *seqs = NULL;
    size_t nseqs = 0, nq = 0;
    struct gq_sched *ns = NULL, *old;
    char msg[256];
    int rc = GQ_ENOMEM;

    jv.v = malloc((jv.cap + 1) * sizeof *jv.v);
    seqs = malloc((jv.cap + 1) * sizeof *seqs);
    if (m == NULL || nm == NULL || nb == NULL || jv.v == NULL ||
        seqs == NULL)
        goto fail;
    *m = *nc;

    /* Classes by name; a removed one with grants running is retired. */
    for (int c = 0; c < oldn; c++) {
        const struct gq_class_conf *cc = gq_sched_conf(d->sched, c);
        struct gq_class_stats st;
        int k = conf_class(nc, nc->nclasses, cc->name);
        gq_sched_stats(d->sched, c, &st);
        if (k < 0 && st.running > 0) {
            if (m->nclasses == GQ_MAX_CLASSES) {
                gq_log(GQ_LOG_ERR, "reload: no room to keep removed class "
                       "%s until its grants end; retry when they have",
                       cc->name);
                rc = GQ_EINVAL;
                goto fail;
            }
            k = m->nclasses++;
            m->classes[k] = *cc;
            m->backoff_base[k] = d->cfg.backoff_base[c];
            m->backoff_max[k] = d->cfg.backoff_max[c];
            m->exec[k] = d->cfg.exec[c]; /* its backend is mapped below */
        }
        cmap[c] = k;
    }
    /* Backends by name; a removed one still in use is retired. */
    for (int b = 0; b < oldb; b++) {
        int k = conf_backend(nc, nc->nbackends, d->backends[b].conf.name);
        int used = d->backends[b].inflight > 0;
        for (int c = nc->nclasses; c < m->nclasses; c++)
            if (m->exec[c].executor != GQ_EXEC_WORKER &&
                m->exec[c].backend == b)
                used = 1;
        if (k < 0 && used) {
            if (m->nbackends == GQ_MAX_BACKENDS) {
                gq_log(GQ_LOG_ERR, "reload: no room to keep removed backend "
                       "%s until its calls end; retry when they have",
                       d->backends[b].conf.name);
                rc = GQ_EINVAL;
                goto fail;
            }
            k = m->nbackends++;
            m->backends[k] = d->backends[b].conf;
        }
        bmap[b] = k;
    }
    for (int c = nc->nclasses; c < m->nclasses; c++) {
        int ob = m->exec[c].backend;
        m->exec[c].backend = ob >= 0 && ob < oldb ? bmap[ob] : -1;
    }
    for (int k = 0; k < nc->nclasses; k++)
        added[k] = 1;
    for (int c = 0; c < oldn; c++)
        if (cmap[c] >= 0)
            added[cmap[c]] = 0;
    for (int k = 0; k < nc->nclasses; k++)
        nadded += added[k];
    ns = gq_sched_new(m->classes, m->nclasses, m->slots, m->share_by,
                      (uint32_t)now, msg, sizeof msg);
    if (ns == NULL) {
        gq_log(GQ_LOG_ERR, "reload: %s", msg);
        rc = GQ_EINVAL;
        goto fail;
    }

    /* The store first: queued lock waiters and drop-in requests of
     * removed classes are cancelled (their callers are told now). */
    gq_jobtab_each(&d->jobs, collect_cb, &jv);
    for (size_t i = 0; i < jv.n; i++) {
        struct gq_job *j = jv.v[i];
        int k = cmap[j->cls];
        if (j->state == GQ_QUEUED && (k < 0 || k >= nc->nclasses) &&
            (j->kind == GQ_KIND_LOCK || has_dropin(d, j->seq)))
            seqs[nseqs++] = j->seq;
    }
    if (nseqs > 0 && (rc = gq_batch(d)) < 0) {
        gq_log(GQ_LOG_ERR, "reload: the store is not writable now");
        goto fail;
    }
    /* The API tokens, whose class masks are indexes into the new classes
     * (a compaction keeps the file's classes where they are).  Last of
     * what may fail: it changes nothing when it does. */
    if (!compact && d->auth &&
        (rc = gq_auth_reload(d->auth, m, msg, sizeof msg)) < 0) {
        gq_log(GQ_LOG_ERR, "reload: %s", msg);
        goto fail;
    }
    for (size_t i = 0; i < nseqs; i++)
        cancel_removed(d, seqs[i]); /* may finish dependents too */
    nseqs = 0;

    /* From here on nothing fails.  Every job: to its new class, or out
     * of memory if its class is gone and it is not running. */
    jv.n = 0;
    gq_jobtab_each(&d->jobs, collect_cb, &jv);
    ASSERT(jv.n == d->jobs.count); /* every job moves, or none could */
    for (size_t i = 0; i < jv.n; i++) {
        struct gq_job *j = jv.v[i];
        int k = cmap[j->cls];
        if (j->state != GQ_RUNNING && (k < 0 || k >= nc->nclasses)) {
            dropped_n[j->cls]++;
            seqs[nseqs++] = j->seq;
            if (j->blocked)
                unblock_job(d, j);
            gq_jobtab_del(&d->jobs, j);
            free(j);
            jv.v[i] = NULL;
            continue;
        }
        ASSERT(k >= 0);
        if (j->state == GQ_RUNNING && j->owner) {
            /* A built-in run: its backend moves with the array. */
            struct gq_runctx *rc2 = j->owner;
            int ob = (int)(rc2->run.bk - d->backends);
            ASSERT(ob >= 0 && ob < oldb && bmap[ob] >= 0);
            rc2->run.bk = &d->backends[bmap[ob]];
            rc2->run.cls = k;
        }
        j->cls = (uint16_t)k;
        if (j->state != GQ_RUNNING)
            reset_links(j);
    }
    /* Slot holders, then riders (each alone in its class's queue, so the
     * ride takes it), then the queue in its old enqueue order. */
    for (size_t i = 0; i < jv.n; i++) {
        struct gq_job *j = jv.v[i];
        if (j == NULL || j->state != GQ_RUNNING || j->slot < 0)
            continue;
        int64_t grant_us = j->grant_us;
        int arc = gq_sched_attach(ns, j, j->slot, now); /* same slots */
        ASSERT(arc == 0);
        j->grant_us = grant_us;
    }
    for (size_t i = 0; i < jv.n; i++) {
        struct gq_job *j = jv.v[i];
        if (j == NULL || j->state != GQ_RUNNING || j->slot >= 0)
            continue;
        int64_t enq = j->enq_us, grant_us = j->grant_us;
        int64_t ready = j->ready_at_us, deadline = j->deadline_us;
        j->ready_at_us = j->deadline_us = 0;
        gq_sched_enqueue(ns, j, now);
        struct gq_job *rode = gq_sched_ride(ns, j->cls, now, NULL, NULL);
        ASSERT(rode == j);
        j->enq_us = enq;
        j->grant_us = grant_us;
        j->ready_at_us = ready;
        j->deadline_us = deadline;
    }
    for (size_t i = 0; i < jv.n; i++) {
        struct gq_job *j = jv.v[i];
        if (j != NULL && j->state == GQ_QUEUED && !j->blocked)
            jv.v[nq++] = j;
    }
    qsort(jv.v, nq, sizeof *jv.v, by_enqueue);
    for (size_t i = 0; i < nq; i++) {
        int64_t enq = jv.v[i]->enq_us;
        gq_sched_enqueue(ns, jv.v[i], now);
        jv.v[i]->enq_us = enq;
    }
    gq_sched_set_draining(ns, d->draining);
    old = d->sched;
    d->sched = ns;
    ns = NULL;

    /* Log against the old configuration, before it is replaced. */
    for (int c = 0; c < oldn; c++) {
        const char *name = d->cfg.classes[c].name;
        int k = cmap[c];
        if (k >= 0 && k < nc->nclasses && !compact)
            log_class_diff(&d->cfg, c, m, k);
        else if (k >= nc->nclasses && c < d->nlive_classes)
            gq_log(GQ_LOG_WARN, "reload: class %s removed; its running "
                   "grants end first", name);
        else if (k < 0 && c >= d->nlive_classes)
            gq_log(GQ_LOG_INFO, "removed class %s: its last grant has "
                   "ended", name);
        else if (k < 0)
            gq_log(GQ_LOG_WARN, "reload: class %s removed", name);
        if ((k < 0 || k >= nc->nclasses) && dropped_n[c] > 0)
            gq_log(GQ_LOG_WARN, "reload: %llu queued jobs of class %s stay "
                   "stored but are not scheduled (add the class back to "
                   "run them)", (unsigned long long)dropped_n[c], name);
    }
    for (int k = 0; k < nc->nclasses; k++)
        if (conf_class(&d->cfg, oldn, m->classes[k].name) < 0)
            gq_log(GQ_LOG_INFO, "reload: class %s added", m->classes[k].name);
    for (int b = 0; b < oldb; b++) {
        int k = bmap[b];
        if (k >= 0 && k < nc->nbackends && !compact)
            log_backend_diff(&d->cfg.backends[b], &m->backends[k]);
        else if (k >= nc->nbackends && b < d->nlive_backends)
            gq_log(GQ_LOG_WARN, "reload: backend %s removed; its calls in "
                   "flight end first", d->cfg.backends[b].name);
        else if (k < 0 && b < d->nlive_backends)
            gq_log(GQ_LOG_WARN, "reload: backend %s removed",
                   d->cfg.backends[b].name);
        else if (k < 0)
            gq_log(GQ_LOG_INFO, "removed backend %s: its last call has "
                   "ended", d->cfg.backends[b].name);
    }
    for (int k = 0; k < nc->nbackends; k++)
        if (conf_backend(&d->cfg, oldb, m->backends[k].name) < 0)
            gq_log(GQ_LOG_INFO, "reload: backend %s added",
                   m->backends[k].name);
    if (!compact)
        log_other_diff(&d->cfg, m);

    /* Backends: live state kept by name; health checks start afresh. */
    for (int k = 0; k < m->nbackends; k++) {
        int ob = -1;
        for (int b = 0; b < oldb; b++)
            if (bmap[b] == k)
                ob = b;
        if (ob < 0) {
            fresh[k] = 1;
            nb[k].healthy = 1;
        } else {
            nb[k] = d->backends[ob];
            if (nb[k].conf.type != m->backends[k].type ||
                strcmp(nb[k].conf.url, m->backends[k].url) != 0) {
                /* Another server: what its breaker knew is stale. */
                nb[k].breaker = GQ_BREAKER_CLOSED;
                nb[k].failures = 0;
                nb[k].open_until_us = 0;
                nb[k].healthy = 1;
                nb[k].last_500[0] = '\0';
            }
        }
        nb[k].conf = m->backends[k];
    }
    for (int b = 0; b < oldb; b++) {
        if (d->health_call[b])
            gq_call_cancel(d->health_call[b]);
        d->health_call[b] = NULL;
        if (d->health_ev[b])
            event_free(d->health_ev[b]);
        d->health_ev[b] = NULL;
        /* A dropped backend's executor state (bk->exec_state) is left
         * behind; gq_daemon_close frees only the backends it has. */
    }
    memcpy(d->backends, nb, GQ_MAX_BACKENDS * sizeof *nb);
    d->nbackends = m->nbackends;
    for (int k = 0; k < m->nbackends; k++) {
        if (fresh[k])
            load_speeds(d, k);
        if (k >= nc->nbackends)
            continue; /* retired: no health checks */
        d->health_arg[k].d = d;
        d->health_arg[k].b = k;
        d->health_ev[k] = evtimer_new(d->base, health_cb, &d->health_arg[k]);
        if (d->health_ev[k]) {
            struct timeval now_tv = {0, 0};
            evtimer_add(d->health_ev[k], &now_tv);
        }
    }

    remap_metrics(nm, &d->metrics, cmap, oldn, bmap, oldb);
    d->metrics = *nm;
    int limits = d->cfg.max_body != m->max_body ||
                 d->cfg.request_timeout != m->request_timeout;
    d->cfg = *m;
    d->nlive_classes = nc->nclasses;
    d->nlive_backends = nc->nbackends;
    remap_parks(d, cmap, oldn);
    gq_sched_free(old);
    if (limits)
        gq_http_setup(d); /* evhttp's body size limit and read timeout */

    /* Whoever waits on a job that left memory gets it as stored. */
    for (size_t i = 0; i < nseqs; i++) {
        struct gq_jobrec r = {0};
        if (gq_get(d, seqs[i], &r) == 0) {
            wake_jobwaits(d, &r);
            gq_http_stream_end(d, &r);
        }
        gq_jobrec_clear(&r);
    }
    if (nadded > 0) {
        /* An added class may have jobs in the store: those of a class
         * removed earlier, or unknown at the last start. */
        size_t before = d->jobs.count;
        if (recover(d, 0, added) < 0)
            gq_log(GQ_LOG_ERR, "reload: loading the stored jobs of the "
                   "added classes: %s; they wait for the next start",
                   d->errbuf);
        else if (d->jobs.count > before)
            gq_log(GQ_LOG_INFO, "reload: %zu stored jobs of the added "
                   "classes loaded", d->jobs.count - before);
    }
    d->timer_at = -1; /* the deadlines moved: arm the timer afresh */
    gq_kick(d);
    rc = 0;
fail:
    gq_sched_free(ns);
    free(m);
    free(nm);
    free(nb);
    free(jv.v);
    free(seqs);
    return rc;
}

/* Drops the retired classes and backends once nothing uses them. */
static void
compact_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    struct gq_config *live;
    int rc;
    for (int c = d->nlive_classes; c < gq_sched_nclasses(d->sched); c++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, c, &st);
        if (st.running > 0)
            return;
    }
    for (int b = d->nlive_backends; b < d->nbackends; b++)
        if (d->backends[b].inflight > 0)
            return;
    live = malloc(sizeof *live);
    if (live == NULL)
        return; /* tried again when another grant ends */
    *live = d->cfg;
    live->nclasses = d->nlive_classes;
    live->nbackends = d->nlive_backends;
    rc = apply(d, live, 1);
    if (rc < 0)
        gq_log(GQ_LOG_WARN, "dropping removed classes: %s", gq_err_msg(rc));
    free(live);
}

/* Schedules a compaction once no retired class runs a grant and no
 * retired backend has a call in flight. */
static void
maybe_compact(struct gq_daemon *d)
{
    if (d->cfg.nclasses == d->nlive_classes &&
        d->nbackends == d->nlive_backends)
        return;
    for (int c = d->nlive_classes; c < gq_sched_nclasses(d->sched); c++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, c, &st);
        if (st.running > 0)
            return;
    }
    for (int b = d->nlive_backends; b < d->nbackends; b++)
        if (d->backends[b].inflight > 0)
            return;
    if (d->compact_ev)
        event_active(d->compact_ev, EV_TIMEOUT, 0);
}

int
gq_daemon_reload(struct gq_daemon *d)
{
    static char err[8192];
    struct gq_config *nc;
    int rc;
    if (d->conf_path[0] == '\0') {
        gq_log(GQ_LOG_WARN, "reload: gpuqd was started without --config; "
               "there is nothing to reload");
        return GQ_EINVAL;
    }
    if (d->draining) {
        gq_log(GQ_LOG_WARN, "reload: draining; the configuration is not "
               "reloaded");
        return GQ_EDRAINING;
    }
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading %s",
               (long long)gq_now(), d->conf_path);
    gq_log(GQ_LOG_INFO, "reload: reading %s", d->conf_path);
    nc = malloc(sizeof *nc);
    if (nc == NULL) {
        rc = GQ_ENOMEM;
        snprintf(err, sizeof err, "out of memory");
    } else {
        rc = gq_config_load(nc, d->conf_path, err, sizeof err);
    }
    if (rc == 0) {
        if (d->conf_data[0])
            snprintf(nc->data_dir, sizeof nc->data_dir, "%s", d->conf_data);
        if (d->conf_listen[0])
            snprintf(nc->listen, sizeof nc->listen, "%s", d->conf_listen);
        rc = gq_config_check(nc, err, sizeof err);
    }
    if (rc < 0) {
        /* Every problem, one log line each. */
        for (char *line = err, *nl; line && *line; line = nl) {
            nl = strchr(line, '\n');
            if (nl)
                *nl++ = '\0';
            gq_log(GQ_LOG_ERR, "reload: %s", line);
        }
        gq_log(GQ_LOG_ERR, "reload: %s was not applied; the configuration "
               "is unchanged", d->conf_path);
    } else {
        keep_restart_only(d, nc);
        rc = apply(d, nc, 0);
        if (rc == 0) {
            d->reloads++;
            gq_log(GQ_LOG_INFO, "reload: %s applied (%d classes, %d "
                   "backends)", d->conf_path, nc->nclasses, nc->nbackends);
        } else {
            gq_log(GQ_LOG_ERR, "reload: %s was not applied (%s); the "
                   "configuration is unchanged", d->conf_path,
                   gq_err_msg(rc));
        }
    }
    free(nc);
    sd_notify(0, "READY=1");
    notify_status(d, 1);
    return rc;
}

/* --- systemd: status and watchdog --- */

static void
status_text(struct gq_daemon *d, char *buf, size_t len)
{
    unsigned long long queued = 0, running = 0;
    for (int c = 0; c < gq_sched_nclasses(d->sched); c++) {
        struct gq_class_stats st;
        gq_sched_stats(d->sched, c, &st);
        queued += st.ready + st.backoff;
        running += st.running;
    }
    snprintf(buf, len, "%s: %llu queued, %zu waiting for dependencies, "
             "%llu running, %d of %d slots busy",
             d->draining ? "draining" : "serving", queued, d->nblocked,
             running, gq_sched_nslots(d->sched) -
                          gq_sched_free_slots(d->sched),
             gq_sched_nslots(d->sched));
}

/* Sends STATUS= when it changed (force: in any case). */
static void
notify_status(struct gq_daemon *d, int force)
{
    char st[sizeof d->notify_status];
    if (d->sched == NULL)
        return;
    status_text(d, st, sizeof st);
    if (!force && strcmp(st, d->notify_status) == 0)
        return;
    memcpy(d->notify_status, st, sizeof st);
    d->notify_status_at = gq_now();
    sd_notifyf(0, "STATUS=%s", st);
}

static void
notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_daemon *d = arg;
    /* From the loop itself: a loop that is stuck stops the pings, and
     * systemd restarts the service. */
    if (d->watchdog_us > 0)
        sd_notify(0, "WATCHDOG=1");
    /* At least once a minute, so a lost datagram is mended. */
    notify_status(d, gq_now() - d->notify_status_at > 60000000);
}

void
gq_daemon_notify_ready(struct gq_daemon *d)
{
    uint64_t wd = 0;
    int64_t every = 2000000; /* STATUS= refresh */
    status_text(d, d->notify_status, sizeof d->notify_status);
    d->notify_status_at = gq_now();
    sd_notifyf(0, "READY=1\nSTATUS=%s", d->notify_status);
    if (getenv("NOTIFY_SOCKET") == NULL)
        return; /* not under systemd (or Type=simple): nothing to keep */
    if (sd_watchdog_enabled(0, &wd) > 0 && wd > 0) {
        d->watchdog_us = (int64_t)wd;
        if (d->watchdog_us / 2 < every)
            every = d->watchdog_us / 2;
        gq_log(GQ_LOG_INFO, "watchdog: %.1fs; pinging every %.1fs",
               (double)wd / 1e6, (double)every / 1e6);
    }
    d->notify_ev = event_new(d->base, -1, EV_PERSIST, notify_cb, d);
    if (d->notify_ev) {
        struct timeval tv = {(time_t)(every / 1000000),
                             (suseconds_t)(every % 1000000)};
        event_add(d->notify_ev, &tv);
    }
}

/* --- start-up --- */

struct recover_ctx {
    struct gq_daemon *d;
    int keep_running;
    const uint8_t *only;      /* classes to load (by index), NULL = all */
    uint64_t *fix;            /* seqs to fix after the scan */
    size_t nfix, capfix;
    int rc;
};

static int
add_fix(struct recover_ctx *x, uint64_t seq)
{
    if (x->nfix == x->capfix) {
        size_t cap = x->capfix ? x->capfix * 2 : 64;
        uint64_t *v = realloc(x->fix, cap * sizeof *v);
        if (v == NULL)
            return x->rc = GQ_ENOMEM;
        x->fix = v;
        x->capfix = cap;
    }
    x->fix[x->nfix++] = seq;
    return 0;
}

static int
recover_one(void *ud, const struct gq_jobrec *r)
{
    struct recover_ctx *x = ud;
    struct gq_daemon *d = x->d;
    int64_t now = gq_now();
    int cls = gq_sched_class(d->sched, r->cls);
    if (x->only && (cls < 0 || !x->only[cls] ||
                    gq_jobtab_get(&d->jobs, r->seq) != NULL))
        return 0; /* a reload loads the jobs of its added classes */
    if (cls >= d->nlive_classes && r->state != GQ_RUNNING)
        cls = -1; /* removed by a reload; only its grants run on */
    if (cls < 0) {
        gq_log(GQ_LOG_WARN, "j%llu: class %s is not configured; the job "
               "stays stored but is not scheduled",
               (unsigned long long)r->seq, r->cls);
        return 0;
    }
    if (r->token > d->fence)
        d->fence = r->token;
    struct gq_job *j = malloc(sizeof *j);
    if (j == NULL)
        return x->rc = GQ_ENOMEM;
    gq_job_init(j, r->seq, (uint16_t)cls, r->priority,
                (enum gq_kind)r->kind);
    j->attempts = (uint16_t)r->attempts;
    j->token = r->token;
    if (gq_jobtab_put(&d->jobs, j) < 0) {
        free(j);
        return x->rc = GQ_ENOMEM;
    }
    if (r->kind == GQ_KIND_LOCK && r->state == GQ_QUEUED)
        return add_fix(x, r->seq); /* its caller is gone */
    if (r->state == GQ_RUNNING) {
        int slot = 0;
        j->state = GQ_RUNNING;
        if (!x->keep_running)
            return add_fix(x, r->seq);
        while (slot < gq_sched_nslots(d->sched) &&
               gq_sched_slot(d->sched, slot))
            slot++;
        if (slot >= gq_sched_nslots(d->sched) ||
            gq_sched_attach(d->sched, j, slot, now) < 0)
            return add_fix(x, r->seq);
        const struct gq_class_conf *cc = gq_sched_conf(d->sched, cls);
        struct timeval tv = {(time_t)cc->lease_ttl + 1, 0};
        j->expires_us = now + (int64_t)(cc->lease_ttl * 1e6);
        /* A built-in executor's run is gone (rebuild cancels runs) and
         * nobody will end its grant: expire it as a lost lease as soon
         * as the store may work again, rather than leave the slot idle
         * for a whole ttl. */
        if (r->kind == GQ_KIND_JOB &&
            d->cfg.exec[cls].executor != GQ_EXEC_WORKER) {
            tv = fail_backoff(d);
            j->expires_us = now;
        }
        evtimer_assign(d->slot_ev[slot], d->base, slot_cb, d);
        evtimer_add(d->slot_ev[slot], &tv);
        return 0;
    }
    j->ready_at_us = to_mono(d, r->ready_at_us);
    j->deadline_us = to_mono(d, r->deadline_us);
    if (r->deps) {
        /* Decided after the scan, when every job is in memory. */
        if (block_job(d, j, r->deps) < 0)
            return x->rc = GQ_ENOMEM;
        return 0;
    }
    gq_sched_enqueue(d->sched, j, now);
    return 0;
}

/* Loads queued and running jobs from the store.  keep_running = 0 (a
 * start): grants that were live when the daemon died get their attempt
 * counted and go back to the queue (or dead).  Queued lock jobs have lost
 * their caller either way and are cancelled.  only (NULL = every class):
 * just the jobs of these classes that are not in memory (a reload that
 * adds classes; their "running" rows are from an earlier life). */
static int
recover(struct gq_daemon *d, int keep_running, const uint8_t *only)
{
    struct recover_ctx x = {d, keep_running, only, NULL, 0, 0, 0};
    int rc;
    int64_t fence = 0;
    rc = d->store->ops->meta_get(d->store, "fence", &fence, d->errbuf);
    if (rc < 0)
        return rc;
    if ((uint64_t)fence > d->fence)
        d->fence = (uint64_t)fence;
    rc = d->store->ops->load_active(d->store, recover_one, &x, d->errbuf);
    if (rc == 0)
        rc = x.rc;
    if (rc == 0 && d->nblocked > 0 && (rc = gq_batch(d)) == 0)
        wake_dependents(d, 0);
    if (rc == 0 && x.nfix > 0 && (rc = gq_batch(d)) == 0) {
        int64_t now = gq_now();
        for (size_t i = 0; i < x.nfix; i++) {
            struct gq_jobrec r = {0};
            struct gq_job *j = gq_jobtab_get(&d->jobs, x.fix[i]);
            if (gq_get(d, x.fix[i], &r) < 0) {
                gq_jobrec_clear(&r);
                continue;
            }
            int cls = gq_sched_class(d->sched, r.cls);
            const struct gq_class_conf *cc = gq_sched_conf(d->sched, cls);
            if (j == NULL) {
                gq_jobrec_clear(&r);
                continue;
            }
            if (j->slot >= 0)
                end_grant(d, j, &r, now);
            set_str(&r.err_code, "daemon_restart");
            set_str(&r.err_msg, "the daemon restarted while this job "
                    "waited or held the GPU");
            if (r.kind == GQ_KIND_LOCK) {
                r.state = r.state == GQ_RUNNING ? GQ_FAILED : GQ_CANCELLED;
                finish_job(d, j, &r, now, "{\"restart\":true}");
            } else if (r.attempts >= cc->max_attempts) {
                r.state = GQ_DEAD;
                finish_job(d, j, &r, now, "{\"restart\":true}");
            } else {
                requeue_job(d, j, &r, now, 0, "{\"restart\":true}");
            }
            gq_jobrec_clear(&r);
        }
    }
    free(x.fix);
    return rc;
}

static int
write_addr(struct gq_daemon *d, struct evhttp_bound_socket *bs)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[128], path[1200], tmp[1300];
    int port;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return GQ_EIO;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        char h[INET6_ADDRSTRLEN];
        evutil_inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        snprintf(host, sizeof host, "[%s]", h);
        port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    gq_log(GQ_LOG_INFO, "listening on %s:%d", host, port);
    snprintf(path, sizeof path, "%s/gpuqd.addr", d->cfg.data_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return GQ_EIO;
    fprintf(f, "%s:%d\n", host, port);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return GQ_EIO;
    return 0;
}

int
gq_daemon_init(struct gq_daemon *d, const struct gq_config *cfg, char *msg,
               int msglen)
{
    char path[1200], host[256];
    int port;
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->pend_tail = &d->pend_head;
    d->started_us = gq_now();
    d->wall_off_us = wall_now() - d->started_us;
    srandom((unsigned)(d->wall_off_us ^ getpid()));

    if (mkdir(cfg->data_dir, 0750) < 0 && errno != EEXIST) {
        snprintf(msg, (size_t)msglen, "%s: %s", cfg->data_dir,
                 strerror(errno));
        return GQ_EIO;
    }
    d->sched = gq_sched_new(cfg->classes, cfg->nclasses, cfg->slots,
                            cfg->share_by, (uint32_t)d->wall_off_us, msg,
                            msglen);
    if (d->sched == NULL)
        return GQ_EINVAL;
    if (gq_jobtab_init(&d->jobs) < 0)
        return GQ_ENOMEM;
    snprintf(path, sizeof path, "%s/gpuq.db", cfg->data_dir);
    struct gq_sqlite_opts so = {cfg->synchronous, 1};
    d->store = gq_store_sqlite_open(path, &so, d->errbuf);
    if (d->store == NULL) {
        snprintf(msg, (size_t)msglen, "%s: %s", path, d->errbuf);
        return GQ_ESTORE;
    }
    d->base = event_base_new();
    if (d->base == NULL) {
        snprintf(msg, (size_t)msglen, "event_base_new failed");
        return GQ_ENOMEM;
    }
    d->nbackends = cfg->nbackends;
    d->nlive_classes = cfg->nclasses;
    d->nlive_backends = cfg->nbackends;
    for (int b = 0; b < cfg->nbackends; b++) {
        d->backends[b].conf = cfg->backends[b];
        d->backends[b].healthy = 1;
        load_speeds(d, b);
    }
    snprintf(d->upload_dir, sizeof d->upload_dir, "%s/uploads",
             cfg->data_dir);
    if (mkdir(d->upload_dir, 0750) < 0 && errno != EEXIST) {
        snprintf(msg, (size_t)msglen, "%s: %s", d->upload_dir,
                 strerror(errno));
        return GQ_EIO;
    }
    gq_upload_dir = d->upload_dir;
    d->httpc = gq_httpc_new(d->base);
    d->workq = gq_workq_new(d->base, 2);
    if (d->httpc == NULL || d->workq == NULL) {
        snprintf(msg, (size_t)msglen, "cannot start the backend client");
        return GQ_ENOMEM;
    }
    for (int b = 0; b < cfg->nbackends; b++) {
        d->health_arg[b].d = d;
        d->health_arg[b].b = b;
        d->health_ev[b] = evtimer_new(d->base, health_cb, &d->health_arg[b]);
        /* The first check right away. */
        struct timeval now_tv = {0, 0};
        evtimer_add(d->health_ev[b], &now_tv);
    }
    d->breaker_ev = evtimer_new(d->base, breaker_cb, d);
    d->turn_ev = event_new(d->base, -1, 0, turn_cb, d);
    d->timer_ev = evtimer_new(d->base, timer_cb, d);
    d->purge_ev = evtimer_new(d->base, purge_cb, d);
    d->drain_ev = evtimer_new(d->base, drain_deadline_cb, d);
    d->compact_ev = event_new(d->base, -1, 0, compact_cb, d);
    for (int s = 0; s < cfg->slots; s++)
        d->slot_ev[s] = evtimer_new(d->base, slot_cb, d);
    int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        d->sig_ev[i] = evsignal_new(d->base, sigs[i], signal_cb, d);
        event_add(d->sig_ev[i], NULL);
    }
    signal(SIGPIPE, SIG_IGN);

    d->sync_fd = -1;
    d->groups_tail = &d->groups;
    if (sync_start(d) < 0) {
        snprintf(msg, (size_t)msglen, "cannot start the sync thread");
        return GQ_EIO;
    }
    int rc = recover(d, 0, NULL);
    if (rc < 0) {
        snprintf(msg, (size_t)msglen, "recovery: %s", d->errbuf);
        return rc;
    }
    if (d->in_batch) {
        rc = gq_store_commit(d->store, d->errbuf);
        d->in_batch = 0;
        if (rc < 0 || d->batch_failed) {
            snprintf(msg, (size_t)msglen, "recovery commit: %s", d->errbuf);
            return GQ_ESTORE;
        }
        if (d->sync_fd >= 0)
            fdatasync(d->sync_fd);
        committed(d);
    }
    d->turn_armed = 0;
    if (gq_cb_start(d) < 0) {
        snprintf(msg, (size_t)msglen, "loading callbacks: %s", d->errbuf);
        return GQ_ESTORE;
    }
    gq_log(GQ_LOG_INFO, "recovered %zu jobs; fence at %llu", d->jobs.count,
           (unsigned long long)d->fence);

    d->http = evhttp_new(d->base);
    if (d->http == NULL) {
        snprintf(msg, (size_t)msglen, "evhttp_new failed");
        return GQ_ENOMEM;
    }
    gq_http_setup(d);
    if (gq_http_init(d) < 0) {
        snprintf(msg, (size_t)msglen, "cannot start the HTTP layer");
        return GQ_ENOMEM;
    }
    rc = gq_auth_init(d, msg, msglen);
    if (rc < 0)
        return rc;
    /* HOST:PORT, [v6]:PORT */
    const char *colon = strrchr(cfg->listen, ':');
    if (colon == NULL || colon == cfg->listen) {
        snprintf(msg, (size_t)msglen, "bad listen address %s", cfg->listen);
        return GQ_EINVAL;
    }
    size_t hl = (size_t)(colon - cfg->listen);
    if (cfg->listen[0] == '[' && hl >= 2 && cfg->listen[hl - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(hl - 2), cfg->listen + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)hl, cfg->listen);
    port = atoi(colon + 1);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(d->http, host, (ev_uint16_t)port);
    if (bs == NULL) {
        snprintf(msg, (size_t)msglen, "cannot listen on %s: %s",
                 cfg->listen, strerror(errno));
        return GQ_EIO;
    }
    if (gq_http_guard_listener(d, evhttp_bound_socket_get_listener(bs)) <
        0) {
        snprintf(msg, (size_t)msglen, "cannot watch the listener");
        return GQ_ENOMEM;
    }
    if (write_addr(d, bs) < 0) {
        snprintf(msg, (size_t)msglen, "cannot write %s/gpuqd.addr",
                 cfg->data_dir);
        return GQ_EIO;
    }
    purge_cb(-1, 0, d);
    gq_kick(d);
    return 0;
}

int
gq_daemon_run(struct gq_daemon *d)
{
    event_base_dispatch(d->base);
    /* A last turn for whatever the final callbacks changed. */
    if (d->in_batch) {
        if (!d->batch_failed && gq_store_commit(d->store, d->errbuf) == 0) {
            d->in_batch = 0;
            committed(d);
        } else {
            flush_replies(d, 1, GQ_ESTORE);
        }
        d->in_batch = 0;
    }
    sync_finish(d);
    return d->exit_code;
}

void
gq_daemon_close(struct gq_daemon *d)
{
    struct gq_park *p;
    for (int t = 0; t < GQ_NPARK; t++)
        while ((p = d->parks[t]) != NULL)
            gq_park_free(p);
    flush_replies(d, 1, GQ_EDRAINING);
    if (d->jobs.buckets)
        gq_jobtab_each(&d->jobs, drop_run_cb, NULL);
    sync_finish(d);
    if (d->sync_ev)
        event_free(d->sync_ev);
    if (d->sync_evfd > 0)
        close(d->sync_evfd);
    gq_cb_close(d);
    for (int b = 0; b < d->nbackends; b++) {
        if (d->health_call[b])
            gq_call_cancel(d->health_call[b]);
        if (d->health_ev[b])
            event_free(d->health_ev[b]);
    }
    if (d->workq)
        gq_workq_free(d->workq);
    if (d->httpc)
        gq_httpc_free(d->httpc);
    /* After the work queue: a cancelled run's work that came back has
     * let go of its cache entries. */
    for (int b = 0; b < d->nbackends; b++)
        if (d->backends[b].exec_state && d->backends[b].exec_state_free)
            d->backends[b].exec_state_free(d->backends[b].exec_state);
    if (d->http)
        evhttp_free(d->http);
    gq_http_close(d);
    gq_auth_close(d);
    if (d->jobs.buckets) {
        gq_jobtab_each(&d->jobs, free_job_cb, NULL);
        gq_jobtab_close(&d->jobs);
    }
    gq_sched_free(d->sched);
    while (d->nblocked > 0)
        unblock_at(d, d->nblocked - 1);
    free(d->blocked);
    free(d->wakeq);
    free(d->stream_ends);
    if (d->store)
        gq_store_close(d->store);
    json_decref(d->sse_batch);
    for (int s = 0; s < GQ_MAX_SLOTS; s++)
        if (d->slot_ev[s])
            event_free(d->slot_ev[s]);
    for (int i = 0; i < 3; i++)
        if (d->sig_ev[i])
            event_free(d->sig_ev[i]);
    if (d->turn_ev)
        event_free(d->turn_ev);
    if (d->breaker_ev)
        event_free(d->breaker_ev);
    if (d->timer_ev)
        event_free(d->timer_ev);
    if (d->purge_ev)
        event_free(d->purge_ev);
    if (d->drain_ev)
        event_free(d->drain_ev);
    if (d->compact_ev)
        event_free(d->compact_ev);
    if (d->notify_ev)
        event_free(d->notify_ev);
    if (d->base)
        event_base_free(d->base);
}
