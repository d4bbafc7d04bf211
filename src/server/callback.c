/* callback.c - durable, signed callback deliveries (see callback.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "../core/err.h"
#include "../exec/httpc.h"
#include "callback.h"
#include "daemon.h"
#include "log.h"

struct gq_cbd {
    struct gq_daemon *d;
    int64_t id;               /* row in the callbacks table */
    uint64_t seq;
    char event[16];
    char *url, *body;
    int attempts;
    struct event *timer;
    struct gq_call *call;
    struct gq_cbd *next, *prev;
};

static int64_t
wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
gq_cb_sign(const char *key, const char *body, char out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)body,
         strlen(body), mac, &len);
    for (unsigned i = 0; i < len && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    out[64] = '\0';
}

static void
unlink_cbd(struct gq_cbd **head, struct gq_cbd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void
push_cbd(struct gq_cbd **head, struct gq_cbd *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void
free_cbd(struct gq_cbd *c)
{
    if (c->call)
        gq_call_cancel(c->call);
    if (c->timer)
        event_free(c->timer);
    free(c->url);
    free(c->body);
    free(c);
}

static void send_cb(evutil_socket_t fd, short what, void *arg);

static void
arm(struct gq_cbd *c, int64_t at_wall)
{
    int64_t delta = at_wall - wall_us();
    if (delta < 0)
        delta = 0;
    struct timeval tv = {(time_t)(delta / 1000000),
                         (suseconds_t)(delta % 1000000)};
    evtimer_add(c->timer, &tv);
}

static struct gq_cbd *
new_cbd(struct gq_daemon *d, const struct gq_callback *cb)
{
    struct gq_cbd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->d = d;
    c->id = cb->id;
    c->seq = cb->seq;
    snprintf(c->event, sizeof c->event, "%s", cb->event);
    c->url = strdup(cb->url);
    c->body = strdup(cb->body);
    c->attempts = cb->attempts;
    c->timer = evtimer_new(d->base, send_cb, c);
    if (c->url == NULL || c->body == NULL || c->timer == NULL) {
        free_cbd(c);
        return NULL;
    }
    return c;
}

static void
delivered(void *ud, const struct gq_call_result *res)
{
    struct gq_cbd *c = ud;
    struct gq_daemon *d = c->d;
    c->call = NULL;
    c->attempts++;
    int ok = res->kind == GQ_CALL_OK;
    int give_up = !ok && c->attempts >= d->cfg.callback_attempts;
    if (!ok)
        gq_log(give_up ? GQ_LOG_WARN : GQ_LOG_INFO,
               "j%llu: callback %s to %s failed (%s)%s",
               (unsigned long long)c->seq, c->event, c->url, res->err,
               give_up ? "; giving up" : "; will retry");
    if (gq_batch(d) < 0) {
        /* Could not record the outcome: try again later. */
        arm(c, wall_us() + 1000000);
        return;
    }
    if (ok || give_up) {
        d->store->ops->cb_done(d->store, c->id, d->errbuf);
        unlink_cbd(&d->cb_active, c);
        free_cbd(c);
        return;
    }
    double delay = ldexp(1.0, c->attempts - 1);
    if (delay > 300)
        delay = 300;
    delay *= 0.5 + 0.5 * ((double)random() / (double)RAND_MAX);
    int64_t next = wall_us() + (int64_t)(delay * 1e6);
    d->store->ops->cb_retry(d->store, c->id, c->attempts, next, d->errbuf);
    arm(c, next);
}

static void
send_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gq_cbd *c = arg;
    struct gq_daemon *d = c->d;
    char sig[65], sighdr[96], evhdr[64];
    const char *headers[4] = {"Content-Type: application/json", sighdr,
                              evhdr, NULL};
    if (d->cfg.callback_secret[0]) {
        gq_cb_sign(d->cfg.callback_secret, c->body, sig);
        snprintf(sighdr, sizeof sighdr, "X-Gpuq-Signature: sha256=%s", sig);
    } else {
        snprintf(sighdr, sizeof sighdr, "X-Gpuq-Signature:");
    }
    snprintf(evhdr, sizeof evhdr, "X-Gpuq-Event: %s", c->event);
    struct gq_call_opts o = {0};
    o.method = "POST";
    o.url = c->url;
    o.headers = headers;
    o.body = c->body;
    o.body_len = strlen(c->body);
    o.timeout = 10;
    o.max_response = 65536;
    c->call = gq_call_start(d->httpc, &o, NULL, delivered, c);
    if (c->call == NULL) {
        /* A URL libcurl refuses never works: drop it. */
        gq_log(GQ_LOG_WARN, "j%llu: callback URL %s refused; dropped",
               (unsigned long long)c->seq, c->url);
        if (gq_batch(d) == 0)
            d->store->ops->cb_done(d->store, c->id, d->errbuf);
        unlink_cbd(&d->cb_active, c);
        free_cbd(c);
    }
}

static int
load_one(void *ud, const struct gq_callback *cb)
{
    struct gq_daemon *d = ud;
    struct gq_cbd *c = new_cbd(d, cb);
    if (c == NULL)
        return GQ_ENOMEM;
    push_cbd(&d->cb_active, c);
    arm(c, cb->next_us);
    return 0;
}

int
gq_cb_start(struct gq_daemon *d)
{
    if (d->cfg.callback_secret[0] == '\0')
        gq_log(GQ_LOG_INFO, "callbacks are sent unsigned: no [callbacks] "
               "secret");
    return d->store->ops->cb_load(d->store, load_one, d, d->errbuf);
}

void
gq_cb_close(struct gq_daemon *d)
{
    struct gq_cbd *c;
    while ((c = d->cb_active) != NULL) {
        unlink_cbd(&d->cb_active, c);
        free_cbd(c);
    }
    while ((c = d->cb_staged) != NULL) {
        unlink_cbd(&d->cb_staged, c);
        free_cbd(c);
    }
}

void
gq_cb_enqueue(struct gq_daemon *d, const struct gq_jobrec *r,
              const char *event)
{
    if (r->callback_url == NULL || gq_batch(d) < 0)
        return;
    json_t *job = gq_job_json(d, r);
    json_t *o = json_pack("{s:s, s:o}", "event", event, "job", job);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (body == NULL)
        return;
    struct gq_callback cb = {0, r->seq, event, r->callback_url, body, 0,
                             wall_us()};
    if (d->store->ops->cb_add(d->store, &cb, d->errbuf) < 0) {
        gq_log(GQ_LOG_ERR, "store: cb_add: %s", d->errbuf);
        d->batch_failed = 1;
        free(body);
        return;
    }
    struct gq_cbd *c = new_cbd(d, &cb);
    free(body);
    if (c)
        push_cbd(&d->cb_staged, c);
}

void
gq_cb_batch_done(struct gq_daemon *d, int ok)
{
    struct gq_cbd *c;
    while ((c = d->cb_staged) != NULL) {
        unlink_cbd(&d->cb_staged, c);
        if (ok) {
            push_cbd(&d->cb_active, c);
            arm(c, 0);
        } else {
            free_cbd(c);
        }
    }
}

struct gq_cbd *
gq_cb_take_staged(struct gq_daemon *d)
{
    struct gq_cbd *l = d->cb_staged;
    d->cb_staged = NULL;
    return l;
}

void
gq_cb_activate(struct gq_daemon *d, struct gq_cbd *list)
{
    struct gq_cbd *c, *next;
    for (c = list; c; c = next) {
        next = c->next;
        push_cbd(&d->cb_active, c);
        arm(c, 0);
    }
}

void
gq_cb_free_list(struct gq_cbd *list)
{
    struct gq_cbd *c, *next;
    for (c = list; c; c = next) {
        next = c->next;
        free_cbd(c);
    }
}
