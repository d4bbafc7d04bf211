/*
 * grant.c - keeping and ending a lock or lease over the HTTP API.
 */
#include "grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/err.h"
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

int
gq_grant_heartbeat(void *ud)
{
    struct gq_grant *g = ud;
    struct gq_httpc_resp r;
    json_t *body = json_pack("{sI}", "token", (json_int_t)g->token);
    json_t *reply = NULL;
    char path[GQ_GRANT_ID_MAX + 64];
    long timeout = g->ttl_ms / 3000;
    int err, rc;

    if (!body)
        return GQ_HB_RETRY;
    if (timeout > HB_TIMEOUT_MAX_S)
        timeout = HB_TIMEOUT_MAX_S;
    if (timeout < 1)
        timeout = 1;
    snprintf(path, sizeof(path), "/v1/%s/%s/heartbeat", g->kind, g->id);
    err = gq_cli_call(g->c, "POST", path, body, timeout, 0, &r, &reply);
    json_decref(body);
    if (err != 0) {
        gq_cli_errf("heartbeat of %s: %s", g->raw_id, g->c->http.errbuf);
        rc = GQ_HB_RETRY;
    } else if (r.status == 200) {
        g->yield = json_is_true(json_object_get(reply, "yield"));
        rc = GQ_HB_OK;
    } else if (r.status == 409 || r.status == 404) {
        rc = GQ_HB_LOST;
    } else {
        gq_cli_report(g->c, 0, &r, reply);
        rc = GQ_HB_RETRY;
    }
    json_decref(reply);
    gq_httpc_resp_free(&r);
    return rc;
}

int
gq_grant_post(struct gq_grant *g, const char *method, const char *suffix,
              json_t *body, json_t **out)
{
    struct gq_httpc_resp r;
    char path[GQ_GRANT_ID_MAX + 128];
    time_t deadline = time(NULL) + g->ttl_ms / 1000 + 1;
    int err, warned = 0, code;

    *out = NULL;
    if (body &&
        json_object_set_new(body, "token", json_integer(g->token)) != 0) {
        gq_cli_errf("out of memory");
        return GQ_EXIT_HTTP;
    }
    snprintf(path, sizeof(path), "/v1/%s/%s%s", g->kind, g->id, suffix);
    for (;;) {
        err = gq_cli_call(g->c, method, path, body, 0, 0, &r, out);
        if (err == 0 && r.status >= 200 && r.status <= 299) {
            gq_httpc_resp_free(&r);
            return GQ_EXIT_OK;
        }
        if (err == 0 && (r.status == 409 || r.status == 404)) {
            json_decref(*out);
            *out = NULL;
            gq_httpc_resp_free(&r);
            return GQ_EXIT_LOST;
        }
        if ((err == 0 && r.status < 500) || err == GQ_EINVAL ||
            time(NULL) >= deadline) {
            code = gq_cli_report(g->c, err, &r, *out);
            json_decref(*out);
            *out = NULL;
            gq_httpc_resp_free(&r);
            return code;
        }
        if (!warned++) {
            if (err != 0)
                gq_cli_errf("%s %s: %s; retrying", method, path,
                            g->c->http.errbuf);
            else
                gq_cli_errf("%s %s: HTTP %ld; retrying", method, path,
                            r.status);
        }
        json_decref(*out);
        *out = NULL;
        gq_httpc_resp_free(&r);
        sleep(1);
    }
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
