/*
 * grant.h - what `gpuq lock` and `gpuq worker` share about a grant (a
 * lock or a lease): its id and fencing token, the heartbeat call that
 * keeps it, and the default holder name.
 */
#ifndef GQ_CLI_GRANT_H
#define GQ_CLI_GRANT_H

#include <jansson.h>

#include "cli.h"

#define GQ_GRANT_ID_MAX 128

struct gq_grant {
    struct gq_cli *c;
    const char *kind;          /* "locks" or "leases": the URL segment */
    char id[GQ_GRANT_ID_MAX];  /* lock_id / lease_id, percent-escaped,
                                * for messages */
    char raw_id[GQ_GRANT_ID_MAX]; /* the id as the server sent it */
    long long token;           /* fencing token */
    long ttl_ms;               /* grant lifetime without a heartbeat */
    int yield;                 /* the last heartbeat asked us to yield */
};

/*
 * Fills g from a 200 reply of POST /v1/locks or /v1/leases: reply[id_key]
 * (a string), reply.token and reply.ttl (seconds, integer or not).
 * Returns 0, or -1 after printing why the reply is malformed.
 */
int gq_grant_init(struct gq_grant *g, struct gq_cli *c, const char *kind,
                  json_t *reply, const char *id_key);

/* Heartbeat period: a third of the ttl, in ms, at least 100. */
long gq_grant_hb_ms(const struct gq_grant *g);

/*
 * gq_run_hb_fn for a grant (ud is the struct gq_grant): POSTs the
 * heartbeat.  GQ_HB_OK on 200, GQ_HB_LOST on 409 or 404, else
 * GQ_HB_RETRY (with a message on stderr).
 */
int gq_grant_heartbeat(void *ud);

/*
 * Ends or reports on the grant: op "release" for a lock (DELETE
 * /v1/locks/ID?token=T; body NULL), "complete", "fail" or "yield" for a
 * lease (POST /v1/leases/ID/OP with body's members and the token; body
 * may be NULL, and is not freed).  Retries while the server cannot be
 * reached or answers 5xx, for at most the ttl.  Returns 0 with *out the
 * reply (caller frees) on 2xx, GQ_EXIT_LOST on 409/404, else an exit
 * code after printing why.
 */
int gq_grant_post(struct gq_grant *g, const char *op, json_t *body,
                  json_t **out);

/* "user@host" into buf (never fails; falls back to "gpuq"). */
void gq_grant_default_holder(char *buf, size_t len);

#endif
