/*
 * auth.c - API tokens and the Unix-socket listener (auth.h).
 *
 * A token's secret is kept only as HMAC-SHA256(key, secret), the key
 * being 32 random bytes drawn at start.  A presented secret is digested
 * the same way and compared with every stored digest by CRYPTO_memcmp:
 * all digests have one length and every comparison runs to the end, so
 * the time taken says nothing about how much of a secret matched, nor
 * how long a secret is.
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "../core/err.h"
#include "daemon.h"
#include "log.h"

#define DIGEST_LEN 32           /* SHA-256 */
#define MAX_PRESENTED 1024      /* longest token looked at, bytes */

struct auth_token {
    char name[GQ_NAME_MAX];
    enum gq_role role;
    uint64_t classes;           /* GQ_ALL_CLASSES: any */
    unsigned char digest[DIGEST_LEN]; /* HMAC-SHA256(key, secret) */
};

struct gq_auth {
    unsigned char key[DIGEST_LEN]; /* random, this process only */
    int ntokens;
    struct auth_token tokens[GQ_MAX_TOKENS];
    uint64_t refused[2];        /* 401s, 403s */
    char sock_path[GQ_SOCKET_PATH_MAX]; /* the socket file made, "" none */
    dev_t sock_dev;             /* and its identity, to remove only it */
    ino_t sock_ino;
};

/* HMAC-SHA256 of data[0..len) under a's key into md: 0 or -1. */
static int
digest(const struct gq_auth *a, const void *data, size_t len,
       unsigned char md[DIGEST_LEN])
{
    unsigned int mdlen = 0;

    if (HMAC(EVP_sha256(), a->key, (int)sizeof a->key, data, len, md,
             &mdlen) == NULL ||
        mdlen != DIGEST_LEN)
        return -1;
    return 0;
}

/*
 * Fills out[] with the digested tokens of cfg under a's key; returns
 * their number, or -1 (a bad count, or a digest failed).
 */
static int
digest_tokens(const struct gq_auth *a, const struct gq_config *cfg,
              struct auth_token out[GQ_MAX_TOKENS])
{
    int i, n = cfg->ntokens;

    if (n < 0 || n > GQ_MAX_TOKENS)
        return -1;
    for (i = 0; i < n; i++) {
        const struct gq_token_conf *t = &cfg->tokens[i];
        struct auth_token *o = &out[i];
        snprintf(o->name, sizeof o->name, "%s", t->name);
        o->role = t->role;
        o->classes = t->classes;
        if (digest(a, t->secret, strnlen(t->secret, sizeof t->secret),
                   o->digest) < 0)
            return -1;
    }
    return n;
}

struct gq_auth *
gq_auth_new(const struct gq_config *cfg, char *msg, int msglen)
{
    struct gq_auth *a = calloc(1, sizeof *a);

    if (a == NULL) {
        snprintf(msg, (size_t)msglen, "out of memory");
        return NULL;
    }
    if (RAND_bytes(a->key, (int)sizeof a->key) != 1) {
        snprintf(msg, (size_t)msglen, "no randomness for the token key");
        gq_auth_free(a);
        return NULL;
    }
    a->ntokens = digest_tokens(a, cfg, a->tokens);
    if (a->ntokens < 0) {
        snprintf(msg, (size_t)msglen, "cannot digest the API tokens");
        gq_auth_free(a);
        return NULL;
    }
    return a;
}

void
gq_auth_free(struct gq_auth *a)
{
    if (a == NULL)
        return;
    OPENSSL_cleanse(a, sizeof *a);
    free(a);
}

int
gq_auth_reload(struct gq_auth *a, const struct gq_config *cfg, char *msg,
               int msglen)
{
    struct auth_token tokens[GQ_MAX_TOKENS];
    int n = digest_tokens(a, cfg, tokens);

    if (n < 0) {
        OPENSSL_cleanse(tokens, sizeof tokens);
        snprintf(msg, (size_t)msglen, "cannot digest the API tokens");
        return GQ_EINTERNAL;
    }
    memcpy(a->tokens, tokens, sizeof tokens);
    a->ntokens = n;
    OPENSSL_cleanse(tokens, sizeof tokens);
    return 0;
}

int
gq_auth_enabled(const struct gq_auth *a)
{
    return a != NULL && a->ntokens > 0;
}

int
gq_auth_verify(const struct gq_auth *a, const char *header,
               struct gq_principal *who, const char **why)
{
    unsigned char md[DIGEST_LEN];
    const char *tok, *end;
    int i, found = -1;

    if (!gq_auth_enabled(a)) {
        who->name = "";
        who->role = GQ_ROLE_ADMIN;
        who->classes = GQ_ALL_CLASSES;
        return 0;
    }
    if (header == NULL) {
        *why = "this API needs a token: send Authorization: Bearer TOKEN";
        return GQ_EUNAUTHORIZED;
    }
    while (*header == ' ' || *header == '\t')
        header++;
    /* The scheme is case-insensitive (RFC 7235). */
    if (strncasecmp(header, "Bearer", 6) != 0 ||
        (header[6] != ' ' && header[6] != '\t')) {
        *why = "the Authorization header must be 'Bearer TOKEN'";
        return GQ_EUNAUTHORIZED;
    }
    tok = header + 6;
    while (*tok == ' ' || *tok == '\t')
        tok++;
    end = tok + strlen(tok);
    while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end == tok) {
        *why = "the Authorization header must be 'Bearer TOKEN'";
        return GQ_EUNAUTHORIZED;
    }
    if ((size_t)(end - tok) > MAX_PRESENTED ||
        digest(a, tok, (size_t)(end - tok), md) < 0) {
        *why = "the token is not valid";
        return GQ_EUNAUTHORIZED;
    }
    /* Every digest is compared, to the end, whatever matched before. */
    for (i = 0; i < a->ntokens; i++)
        if (CRYPTO_memcmp(md, a->tokens[i].digest, DIGEST_LEN) == 0)
            found = i;
    OPENSSL_cleanse(md, sizeof md);
    if (found < 0) {
        *why = "the token is not valid";
        return GQ_EUNAUTHORIZED;
    }
    who->name = a->tokens[found].name;
    who->role = a->tokens[found].role;
    who->classes = a->tokens[found].classes;
    return 0;
}

int
gq_principal_may(const struct gq_principal *who, int cls)
{
    if (cls < 0 || who->classes == GQ_ALL_CLASSES)
        return 1;
    return cls < 64 && (who->classes >> cls & 1) != 0;
}

void
gq_auth_count(struct gq_auth *a, int err)
{
    if (a == NULL)
        return;
    if (err == GQ_EUNAUTHORIZED)
        a->refused[0]++;
    else if (err == GQ_EFORBIDDEN)
        a->refused[1]++;
}

void
gq_auth_counts(const struct gq_auth *a, uint64_t out[2])
{
    out[0] = a != NULL ? a->refused[0] : 0;
    out[1] = a != NULL ? a->refused[1] : 0;
}

/* ---- the Unix socket ------------------------------------------------- */

/*
 * Whether a process listens on the socket at sa: 1 yes, 0 no (a stale
 * file), -1 cannot tell (errno set).
 */
static int
socket_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r, e;

    if (fd < 0)
        return -1;
    r = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    e = errno;
    close(fd);
    if (r == 0)
        return 1;
    if (e == ECONNREFUSED)
        return 0;
    errno = e;
    return -1;
}

/*
 * Listens on the Unix socket path with permissions mode, for d->http.
 * The file is chmod'ed before listen(), so nobody can connect while it
 * has the umask's permissions.  0, or a GQ_E* code with msg filled.
 */
static int
bind_unix(struct gq_daemon *d, const char *path, int mode, char *msg,
          int msglen)
{
    struct gq_auth *a = d->auth;
    struct evconnlistener *l;
    struct sockaddr_un sa;
    struct stat st;
    size_t n = strlen(path);
    int fd, live;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (n >= sizeof sa.sun_path) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: the path is too "
                 "long (at most %zu characters)", path,
                 sizeof sa.sun_path - 1);
        return GQ_EINVAL;
    }
    memcpy(sa.sun_path, path, n + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(msg, (size_t)msglen, "unix_socket %s exists and is "
                     "not a socket; not replacing it", path);
            return GQ_EIO;
        }
        live = socket_live(&sa);
        if (live != 0) {
            snprintf(msg, (size_t)msglen, "unix_socket %s: %s", path,
                     live > 0 ? "another process listens on it"
                              : strerror(errno));
            return GQ_EIO;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
            snprintf(msg, (size_t)msglen, "unix_socket %s: cannot remove "
                     "the stale socket: %s", path, strerror(errno));
            return GQ_EIO;
        }
        gq_log(GQ_LOG_INFO, "removed the stale socket %s", path);
    } else if (errno != ENOENT) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: %s", path,
                 strerror(errno));
        return GQ_EIO;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: socket: %s", path,
                 strerror(errno));
        return GQ_EIO;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(msg, (size_t)msglen, "cannot listen on unix_socket %s: "
                 "%s", path, strerror(errno));
        close(fd);
        return GQ_EIO;
    }
    if (chmod(path, (mode_t)mode) < 0 || stat(path, &st) < 0) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: chmod: %s", path,
                 strerror(errno));
        unlink(path);
        close(fd);
        return GQ_EIO;
    }
    /* Ours from here on: gq_auth_close removes it. */
    memcpy(a->sock_path, path, n + 1);
    a->sock_dev = st.st_dev;
    a->sock_ino = st.st_ino;
    if (listen(fd, SOMAXCONN) < 0) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: listen: %s", path,
                 strerror(errno));
        close(fd);
        return GQ_EIO;
    }
    /* Backlog 0: the socket already listens. */
    l = evconnlistener_new(d->base, NULL, NULL,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
                           fd);
    if (l == NULL) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: cannot make its "
                 "listener", path);
        close(fd);
        return GQ_ENOMEM;
    }
    if (evhttp_bind_listener(d->http, l) == NULL) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: cannot serve HTTP "
                 "on it", path);
        evconnlistener_free(l);
        return GQ_ENOMEM;
    }
    if (gq_http_guard_listener(d, l) < 0) {
        snprintf(msg, (size_t)msglen, "unix_socket %s: cannot watch its "
                 "listener", path);
        return GQ_ENOMEM;
    }
    gq_log(GQ_LOG_INFO, "listening on unix:%s (mode %04o)", path,
           (unsigned)mode);
    return 0;
}

int
gq_auth_init(struct gq_daemon *d, char *msg, int msglen)
{
    d->auth = gq_auth_new(&d->cfg, msg, msglen);
    if (d->auth == NULL)
        return GQ_ENOMEM;
    if (gq_auth_enabled(d->auth))
        gq_log(GQ_LOG_INFO, "API tokens: %d; requests must name one",
               d->cfg.ntokens);
    else if (d->cfg.allow_remote)
        gq_log(GQ_LOG_WARN, "no API tokens and allow_remote = true: "
               "anyone who can reach %s may use the API", d->cfg.listen);
    if (d->cfg.unix_socket[0] == '\0')
        return 0;
    return bind_unix(d, d->cfg.unix_socket, d->cfg.unix_socket_mode, msg,
                     msglen);
}

void
gq_auth_close(struct gq_daemon *d)
{
    struct gq_auth *a = d->auth;
    struct stat st;

    if (a == NULL)
        return;
    if (a->sock_path[0] != '\0' && lstat(a->sock_path, &st) == 0 &&
        st.st_dev == a->sock_dev && st.st_ino == a->sock_ino)
        unlink(a->sock_path);
    gq_auth_free(a);
    d->auth = NULL;
}
