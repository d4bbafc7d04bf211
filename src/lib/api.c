/*
 * api.c - the typed calls of libgpuq, one per route of doc/api.md: each
 * builds its path and JSON body, picks its timeout, and makes the request
 * through gpuq__client_call.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <gpuq.h>

#include "client.h"
#include "url.h"

/* Starts a typed call: out is empty and the last message cleared. */
static void
begin(struct gpuq_client *c, struct gpuq_response *out)
{
    gpuq_response_init(out);
    c->errmsg[0] = '\0';
}

static int
nomem(struct gpuq_client *c)
{
    return gpuq__client_fail(c, GPUQ_ENOMEM, "out of memory");
}

/* A job, lease or lock id: not NULL, not empty. */
static int
check_id(struct gpuq_client *c, const char *id, const char *what)
{
    if (!id || !id[0])
        return gpuq__client_fail(c, GPUQ_EINVAL, "%s is empty", what);
    return 0;
}

static int
check_path(struct gpuq_client *c, const struct gpuq__path *p)
{
    if (p->overflow)
        return gpuq__client_fail(c, GPUQ_EINVAL, "arguments too long");
    return 0;
}

/* obj[key] = the string s, which must be UTF-8. */
static int
set_str(struct gpuq_client *c, json_t *obj, const char *key, const char *s)
{
    json_t *v = json_string(s);

    if (!v)
        return gpuq__client_fail(c, GPUQ_EINVAL, "%s is not UTF-8", key);
    if (json_object_set_new(obj, key, v) != 0)
        return nomem(c);
    return 0;
}

static int
set_new(struct gpuq_client *c, json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v) != 0)
        return nomem(c);
    return 0;
}

/* Parses text, a JSON value (an object when object is set), into *out. */
static int
parse(struct gpuq_client *c, const char *what, const char *text, int object,
      json_t **out)
{
    json_error_t jerr;

    *out = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return gpuq__client_fail(c, GPUQ_EINVAL, "%s is not JSON: %s", what,
                                 jerr.text);
    if (object && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return gpuq__client_fail(c, GPUQ_EINVAL, "%s is not a JSON object",
                                 what);
    }
    return 0;
}

/* A JSON number of seconds: an integer when whole. */
static json_t *
secs(double s)
{
    if (s < 9e15 && (double)(long long)s == s)
        return json_integer((json_int_t)s);
    return json_real(s);
}

/*
 * A body that starts as the members of json_fields (NULL: none), for the
 * named members to be set over them.  NULL after setting the error.
 */
static json_t *
body_from(struct gpuq_client *c, const char *json_fields, int *err)
{
    json_t *body;

    *err = 0;
    if (!json_fields) {
        body = json_object();
        if (!body)
            *err = nomem(c);
        return body;
    }
    *err = parse(c, "json_fields", json_fields, 1, &body);
    return body;
}

/* Sends body (may be NULL) and frees it. */
static int
call_api(struct gpuq_client *c, const char *method,
         const struct gpuq__path *p, json_t *body, long timeout_s,
         struct gpuq_response *out)
{
    struct gpuq__call call;
    char *text = NULL;
    int err;

    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!text)
            return nomem(c);
    }
    memset(&call, 0, sizeof(call));
    call.method = method;
    call.path = p->s;
    call.body = text;
    call.timeout_s = timeout_s;
    call.want_json = 1;
    err = gpuq__client_call(c, &call, out);
    free(text);
    return err;
}

void
gpuq_submit_opts_init(struct gpuq_submit_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->priority = GPUQ_UNSET;
    o->queue_timeout = -1;
}

int
gpuq_client_submit(struct gpuq_client *c, const struct gpuq_submit_opts *o,
                   struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body, *v, *deps;
    size_t i;
    int err;

    begin(c, out);
    if (!o || !o->cls)
        return gpuq__client_fail(c, GPUQ_EINVAL, "class is missing");
    body = json_object();
    if (!body)
        return nomem(c);
    err = set_str(c, body, "class", o->cls);
    if (err == 0 && o->payload) {
        err = parse(c, "payload", o->payload, 0, &v);
        if (err == 0)
            err = set_new(c, body, "payload", v);
    }
    if (err == 0 && o->metadata) {
        err = parse(c, "metadata", o->metadata, 1, &v);
        if (err == 0)
            err = set_new(c, body, "metadata", v);
    }
    if (err == 0 && o->priority != GPUQ_UNSET)
        err = set_new(c, body, "priority", json_integer(o->priority));
    if (err == 0 && o->idempotency_key)
        err = set_str(c, body, "idempotency_key", o->idempotency_key);
    if (err == 0 && o->queue_timeout >= 0)
        err = set_new(c, body, "queue_timeout", secs(o->queue_timeout));
    if (err == 0 && o->depends_on) {
        deps = json_array();
        err = set_new(c, body, "depends_on", deps);
        for (i = 0; err == 0 && o->depends_on[i]; i++) {
            v = json_string(o->depends_on[i]);
            if (!v)
                err = gpuq__client_fail(c, GPUQ_EINVAL,
                                        "depends_on is not UTF-8");
            else if (json_array_append_new(deps, v) != 0)
                err = nomem(c);
        }
    }
    if (err == 0 && o->callback_url)
        err = set_str(c, body, "callback_url", o->callback_url);
    if (err != 0) {
        json_decref(body);
        return err;
    }
    gpuq__path_init(&p, "/v1/jobs");
    return call_api(c, "POST", &p, body, c->timeout_s, out);
}

int
gpuq_client_get(struct gpuq_client *c, const char *id, long wait_s,
                struct gpuq_response *out)
{
    struct gpuq__path p;
    int err;

    begin(c, out);
    err = check_id(c, id, "job id");
    if (err != 0)
        return err;
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, id);
    if (wait_s > 0)
        gpuq__path_query_ll(&p, "wait", wait_s);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    return call_api(c, "GET", &p, NULL,
                wait_s > 0 ? gpuq__client_poll_timeout(c, wait_s)
                           : c->timeout_s,
                out);
}

int
gpuq_client_list(struct gpuq_client *c, const char *cls, const char *state,
                 long limit, const char *after, struct gpuq_response *out)
{
    struct gpuq__path p;
    int err;

    begin(c, out);
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_query(&p, "class", cls);
    gpuq__path_query(&p, "state", state);
    if (limit > 0)
        gpuq__path_query_ll(&p, "limit", limit);
    gpuq__path_query(&p, "after", after);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    return call_api(c, "GET", &p, NULL, c->timeout_s, out);
}

/* POST /v1/jobs/ID/ACTION with {}. */
static int
job_action(struct gpuq_client *c, const char *id, const char *action,
           struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body;
    int err;

    begin(c, out);
    err = check_id(c, id, "job id");
    if (err != 0)
        return err;
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, id);
    gpuq__path_lit(&p, action);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    body = json_object();
    if (!body)
        return nomem(c);
    return call_api(c, "POST", &p, body, c->timeout_s, out);
}

int
gpuq_client_cancel(struct gpuq_client *c, const char *id,
                   struct gpuq_response *out)
{
    return job_action(c, id, "/cancel", out);
}

int
gpuq_client_requeue(struct gpuq_client *c, const char *id,
                    struct gpuq_response *out)
{
    return job_action(c, id, "/requeue", out);
}

int
gpuq_client_status(struct gpuq_client *c, struct gpuq_response *out)
{
    struct gpuq__path p;

    begin(c, out);
    gpuq__path_init(&p, "/v1/status");
    return call_api(c, "GET", &p, NULL, c->timeout_s, out);
}

int
gpuq_client_drain(struct gpuq_client *c, double deadline_s,
                  struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body;
    int err = 0;

    begin(c, out);
    body = json_object();
    if (!body)
        return nomem(c);
    if (deadline_s >= 0)
        err = set_new(c, body, "deadline", secs(deadline_s));
    if (err != 0) {
        json_decref(body);
        return err;
    }
    gpuq__path_init(&p, "/v1/admin/drain");
    return call_api(c, "POST", &p, body, c->timeout_s, out);
}

int
gpuq_client_lease(struct gpuq_client *c, const char *const *classes,
                  long wait_s, const char *worker, struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body, *arr, *v;
    size_t i;
    int err;

    begin(c, out);
    if (!classes || !classes[0])
        return gpuq__client_fail(c, GPUQ_EINVAL, "no classes");
    if (wait_s < 0)
        wait_s = 0;
    body = json_object();
    arr = json_array();
    if (!body || !arr) {
        json_decref(body);
        json_decref(arr);
        return nomem(c);
    }
    err = set_new(c, body, "classes", arr);
    for (i = 0; err == 0 && classes[i]; i++) {
        v = json_string(classes[i]);
        if (!v)
            err = gpuq__client_fail(c, GPUQ_EINVAL, "class is not UTF-8");
        else if (json_array_append_new(arr, v) != 0)
            err = nomem(c);
    }
    if (err == 0)
        err = set_new(c, body, "wait", json_integer(wait_s));
    if (err == 0 && worker)
        err = set_str(c, body, "worker", worker);
    if (err != 0) {
        json_decref(body);
        return err;
    }
    gpuq__path_init(&p, "/v1/leases");
    return call_api(c, "POST", &p, body, gpuq__client_poll_timeout(c, wait_s),
                out);
}

/* The operations of POST /v1/leases/ID/OP. */
static const char *const lease_ops[] = {"heartbeat", "complete", "fail",
                                        "yield"};

/* POST /v1/KIND/ID/OP with the token over json_fields. */
static int
grant_op(struct gpuq_client *c, const char *kind, const char *id,
         const char *op, long long token, const char *json_fields,
         struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body;
    int err;

    err = check_id(c, id, "grant id");
    if (err != 0)
        return err;
    gpuq__path_init(&p, kind);
    gpuq__path_seg(&p, id);
    gpuq__path_lit(&p, "/");
    gpuq__path_lit(&p, op);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    body = body_from(c, json_fields, &err);
    if (!body)
        return err;
    err = set_new(c, body, "token", json_integer(token));
    if (err != 0) {
        json_decref(body);
        return err;
    }
    return call_api(c, "POST", &p, body, c->timeout_s, out);
}

int
gpuq_client_lease_op(struct gpuq_client *c, const char *lease_id,
                     const char *op, long long token, const char *json_fields,
                     struct gpuq_response *out)
{
    size_t i;

    begin(c, out);
    for (i = 0; op && i < sizeof(lease_ops) / sizeof(lease_ops[0]); i++)
        if (strcmp(op, lease_ops[i]) == 0)
            return grant_op(c, "/v1/leases", lease_id, op, token,
                            json_fields, out);
    return gpuq__client_fail(c, GPUQ_EINVAL, "unknown lease operation '%s'",
                             op ? op : "(null)");
}

int
gpuq_client_lock(struct gpuq_client *c, const char *cls, const char *holder,
                 long wait_s, const char *json_fields,
                 struct gpuq_response *out)
{
    struct gpuq__path p;
    json_t *body;
    int err;

    begin(c, out);
    if (!cls)
        return gpuq__client_fail(c, GPUQ_EINVAL, "class is missing");
    body = body_from(c, json_fields, &err);
    if (!body)
        return err;
    err = set_str(c, body, "class", cls);
    if (err == 0 && holder)
        err = set_str(c, body, "holder", holder);
    if (err == 0 && wait_s >= 0)
        err = set_new(c, body, "wait", json_integer(wait_s));
    if (err != 0) {
        json_decref(body);
        return err;
    }
    gpuq__path_init(&p, "/v1/locks");
    return call_api(c, "POST", &p, body,
                gpuq__client_poll_timeout(
                    c, wait_s >= 0 ? wait_s : GPUQ_LOCK_DEFAULT_WAIT),
                out);
}

int
gpuq_client_lock_heartbeat(struct gpuq_client *c, const char *lock_id,
                           long long token, struct gpuq_response *out)
{
    begin(c, out);
    return grant_op(c, "/v1/locks", lock_id, "heartbeat", token, NULL, out);
}

int
gpuq_client_unlock(struct gpuq_client *c, const char *lock_id,
                   long long token, struct gpuq_response *out)
{
    struct gpuq__path p;
    int err;

    begin(c, out);
    err = check_id(c, lock_id, "lock id");
    if (err != 0)
        return err;
    gpuq__path_init(&p, "/v1/locks");
    gpuq__path_seg(&p, lock_id);
    gpuq__path_query_ll(&p, "token", token);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    return call_api(c, "DELETE", &p, NULL, c->timeout_s, out);
}

/* A stream of events at p. */
static int
stream(struct gpuq_client *c, const struct gpuq__path *p, long idle_s,
       gpuq_event_fn fn, void *ud, struct gpuq_response *out)
{
    struct gpuq__call call;

    if (!fn)
        return gpuq__client_fail(c, GPUQ_EINVAL, "no event callback");
    memset(&call, 0, sizeof(call));
    call.method = "GET";
    call.path = p->s;
    call.events = fn;
    call.events_ud = ud;
    call.idle_s = idle_s;
    return gpuq__client_call(c, &call, out);
}

int
gpuq_client_events(struct gpuq_client *c, const char *cls, const char *job,
                   gpuq_event_fn fn, void *ud, struct gpuq_response *out)
{
    struct gpuq__path p;
    int err;

    begin(c, out);
    gpuq__path_init(&p, "/v1/events");
    gpuq__path_query(&p, "class", cls);
    gpuq__path_query(&p, "job", job);
    err = check_path(c, &p);
    if (err != 0)
        return err;
    return stream(c, &p, GPUQ_EVENTS_IDLE, fn, ud, out);
}

int
gpuq_client_stream(struct gpuq_client *c, const char *id, gpuq_event_fn fn,
                   void *ud, struct gpuq_response *out)
{
    struct gpuq__path p;
    int err;

    begin(c, out);
    err = check_id(c, id, "job id");
    if (err != 0)
        return err;
    gpuq__path_init(&p, "/v1/jobs");
    gpuq__path_seg(&p, id);
    gpuq__path_lit(&p, "/stream");
    err = check_path(c, &p);
    if (err != 0)
        return err;
    return stream(c, &p, 0, fn, ud, out);
}
