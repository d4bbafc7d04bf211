/*
 * auth.h - access control: API tokens and the Unix-socket listener.
 *
 * Tokens come from the configuration ([token NAME] sections and [auth]
 * token_file, doc/config.md); each has a role (submit, worker, admin:
 * each with the rights of the ones before it) and the classes it may
 * use.  A request names its token as "Authorization: Bearer SECRET".
 * Only keyed digests of the secrets are kept here, and a presented
 * secret is compared with every one of them in constant time, so
 * neither the time nor the length of a comparison says anything about a
 * secret.  With no token configured, everything is open (the
 * configuration check keeps such a daemon on loopback addresses unless
 * allow_remote is set).
 *
 * http.c asks gq_auth_verify who a request comes from and checks the
 * role and classes of the answer; the daemon owns one struct gq_auth
 * (d->auth), made by gq_auth_init and freed by gq_auth_close.
 */
#ifndef GQ_AUTH_H
#define GQ_AUTH_H

#include <stdint.h>

#include "config.h"

struct gq_daemon;
struct gq_auth;

/* Who a request comes from: what its token allows. */
struct gq_principal {
    const char *name;            /* the token's name; "" with auth off */
    enum gq_role role;           /* GQ_ROLE_ADMIN with auth off */
    uint64_t classes;            /* bit k: class k; GQ_ALL_CLASSES */
};

/*
 * Makes the token table of cfg (digests of the secrets under a random
 * key of this process).  Returns NULL on failure with the reason in msg
 * (out of memory, or no randomness).  Free with gq_auth_free.
 */
struct gq_auth *gq_auth_new(const struct gq_config *cfg, char *msg,
                            int msglen);
/* Frees a (NULL is fine); does not touch a socket file. */
void gq_auth_free(struct gq_auth *a);

/*
 * Replaces a's tokens with cfg's (a configuration reload, SIGHUP; the
 * class masks are indexes into cfg's classes, so call it when cfg
 * becomes d->cfg).  Allocates nothing.  Returns 0, or GQ_EINTERNAL with
 * msg filled and a unchanged (a digest failed).  The Unix socket and
 * allow_remote stay as they were at start.
 */
int gq_auth_reload(struct gq_auth *a, const struct gq_config *cfg,
                   char *msg, int msglen);

/* Nonzero if a has tokens, so requests must name one. */
int gq_auth_enabled(const struct gq_auth *a);

/*
 * Who the Authorization header value header (NULL: none was sent)
 * names.  With auth off, every request is an admin of every class.
 * Returns 0 with *who filled (who->name points into a and lives as long
 * as it does), or GQ_EUNAUTHORIZED with *why saying what was wrong (a
 * static string: the header is missing, is not "Bearer TOKEN", or names
 * no token).  Takes the same time whichever token matches, if any.
 */
int gq_auth_verify(const struct gq_auth *a, const char *header,
                   struct gq_principal *who, const char **why);

/* Nonzero if who may use class cls (its index; any when cls < 0). */
int gq_principal_may(const struct gq_principal *who, int cls);

/*
 * Counts a refused request for /metrics: GQ_EUNAUTHORIZED or
 * GQ_EFORBIDDEN.
 */
void gq_auth_count(struct gq_auth *a, int err);
/* Refusals counted so far: [0] unauthorized (401), [1] forbidden (403). */
void gq_auth_counts(const struct gq_auth *a, uint64_t out[2]);

/*
 * The daemon's part, called by gq_daemon_init once d->http exists: makes
 * d->auth from d->cfg and, when [server] unix_socket is set, listens on
 * that socket too (a stale socket file is replaced, anything else there
 * is an error; the file gets unix_socket_mode before the first
 * connection can be made).  Returns 0, or a GQ_E* code with msg filled;
 * gq_auth_close cleans up either way.
 */
int gq_auth_init(struct gq_daemon *d, char *msg, int msglen);
/*
 * Frees d->auth and removes the socket file it made, if the file is
 * still the one it made.  Safe after a failed or no gq_auth_init.  The
 * listener itself belongs to d->http and goes with evhttp_free.
 */
void gq_auth_close(struct gq_daemon *d);

#endif
