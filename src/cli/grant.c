/*
 * grant.c - keeping and ending a lock or lease, through libgpuq.
 */
#include "grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "run.h"

#define HB_TIMEOUT_MAX_S 10 /* one heartbeat call */

int
gq_grant_init(struct gq_grant *g, struct gq_cli *c, const char *kind,
              json_t *reply, const char *id_key)
{
    const char *id = gq_cli_str(reply, id_key);
    long long token = gq_cli_int(reply, "token", -1);
    json_t *ttl_v = reply ? json_object_get(reply, "ttl") : NULL;
    double ttl = json_is_number(ttl_v) ? json_number_value(ttl_v) : -1;

    memset(g, 0, sizeof(*g));
    g->c = c;
    g->kind = kind;
    if (!id || token < 0 || !(ttl > 0 && ttl <= 86400 * 365) ||
        strlen(id) >= sizeof(g->raw_id) ||
        gq_cli_esc(id, g->id, sizeof(g->id)) < 0) {
        gq_cli_errf("malformed grant from server (want %s, token, ttl)",
                    id_key);
        return -1;
    }
    snprintf(g->raw_id, sizeof(g->raw_id), "%s", id);
    g->token = token;
    g->ttl_ms = (long)(ttl * 1000);
    if (g->ttl_ms < 1)
        g->ttl_ms = 1;
    return 0;
}

long
gq_grant_hb_ms(const struct gq_grant *g)
{
    long ms = g->ttl_ms / 3;

    return ms < 100 ? 100 : ms;
}

/* 1 for a lock, 0 for a lease. */
static int
is_lock(const struct gq_grant *g)
{
    return strcmp(g->kind, "locks") == 0;
}

int
gq_grant_heartbeat(void *ud)
{
    struct gq_grant *g = ud;
    struct gpuq_client *cl = g->c->client;
    struct gpuq_response r;
    json_t *reply = NULL;
    long timeout = g->ttl_ms / 3000, saved;
    int err, rc;

    if (timeout > HB_TIMEOUT_MAX_S)
        timeout = HB_TIMEOUT_MAX_S;
    if (timeout < 1)
        timeout = 1;
    saved = gpuq_client_set_timeout(cl, timeout);
    if (is_lock(g))
        rc = gpuq_client_lock_heartbeat(cl, g->raw_id, g->token, &r);
    else
        rc = gpuq_client_lease_op(cl, g->raw_id, "heartbeat", g->token, NULL,
                                  &r);
    gpuq_client_set_timeout(cl, saved);
    err = gq_cli_reply(rc, &r, &reply);
    if (err != 0) {
        gq_cli_errf("heartbeat of %s: %s", g->raw_id,
                    gpuq_client_errmsg(cl));
        rc = GQ_HB_RETRY;
    } else if (r.status == 200) {
        g->yield = json_is_true(json_object_get(reply, "yield"));
        rc = GQ_HB_OK;
    } else if (r.status == 409 || r.status == 404) {
        rc = GQ_HB_LOST;
    } else {
        gq_cli_report(g->c, 0, &r);
        rc = GQ_HB_RETRY;
    }
    json_decref(reply);
    gpuq_response_free(&r);
    return rc;
}

/* One try of gq_grant_post; returns the libgpuq code. */
static int
grant_try(struct gq_grant *g, const char *op, const char *fields,
          struct gpuq_response *r)
{
    struct gpuq_client *cl = g->c->client;

    if (is_lock(g))
        return gpuq_client_unlock(cl, g->raw_id, g->token, r);
    return gpuq_client_lease_op(cl, g->raw_id, op, g->token, fields, r);
}

int
gq_grant_post(struct gq_grant *g, const char *op, json_t *body,
              json_t **out)
{
    struct gpuq_response r;
    char what[GQ_GRANT_ID_MAX + 128], *fields = NULL;
    time_t deadline = time(NULL) + g->ttl_ms / 1000 + 1;
    int err, warned = 0, code;

    *out = NULL;
    if (body) {
        fields = json_dumps(body, JSON_COMPACT);
        if (!fields) {
            gq_cli_errf("out of memory");
            return GQ_EXIT_HTTP;
        }
    }
    /* The request, for messages. */
    if (is_lock(g))
        snprintf(what, sizeof(what), "DELETE /v1/locks/%s?token=%lld", g->id,
                 g->token);
    else
        snprintf(what, sizeof(what), "POST /v1/leases/%s/%s", g->id, op);
    for (;;) {
        err = gq_cli_reply(grant_try(g, op, fields, &r), &r, out);
        if (err == 0 && r.status >= 200 && r.status <= 299) {
            code = GQ_EXIT_OK;
            break;
        }
        if (err == 0 && (r.status == 409 || r.status == 404)) {
            code = GQ_EXIT_LOST;
            break;
        }
        if ((err == 0 && r.status < 500) || err == GPUQ_EURL ||
            err == GPUQ_EINVAL || time(NULL) >= deadline) {
            code = gq_cli_report(g->c, err, &r);
            break;
        }
        if (!warned++) {
            if (err != 0)
                gq_cli_errf("%s: %s; retrying", what,
                            gpuq_client_errmsg(g->c->client));
            else
                gq_cli_errf("%s: HTTP %ld; retrying", what, r.status);
        }
        json_decref(*out);
        *out = NULL;
        gpuq_response_free(&r);
        sleep(1);
    }
    if (code != GQ_EXIT_OK) {
        json_decref(*out);
        *out = NULL;
    }
    gpuq_response_free(&r);
    free(fields);
    return code;
}

void
gq_grant_default_holder(char *buf, size_t len)
{
    char host[256];
    const char *user = getenv("USER");

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    if (!user || !user[0])
        user = "gpuq";
    snprintf(buf, len, "%s@%s", user, host);
}
