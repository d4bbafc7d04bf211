/*
 * config.c - gpuqd's configuration: the defaults, the INI file and the
 * checks.  doc/config.md describes every section and key.
 *
 * inih splits "key = value" lines; the rest happens here.  The installed
 * inih is built without INI_HANDLER_LINENO and only reports the first bad
 * line, so the reader that feeds it does more than read: it counts lines,
 * strips comments, checks the syntax of each line and follows the
 * [section] headers itself (inih would also cut section names at 49
 * characters and say nothing about a section without keys).  inih then
 * sees only "key = value" lines, and blank ones in place of the others, so
 * its line numbers stay ours.  Every problem is recorded with its line and
 * parsing goes on, so one run reports them all.  The lines of [models]
 * never reach inih: model names hold ':' (gemma3:12b), which inih would
 * take for a separator, so the reader splits them at '=' itself.
 *
 * Keys are described by tables (one per section) of name, type, offset
 * and allowed range; loading a file and gq_config_check share them.
 * References between sections (a class's backend, a model's class, a
 * token's classes) may point forward, so they are resolved once the
 * whole file is read; so are the files it names for secrets (a token's
 * secret_file, [auth] token_file), which are read then, their problems
 * reported at their own FILE:LINE.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <ini.h>

#include "../core/err.h"

/* What a class gets for the executor keys its section does not set. */
#define EXEC_DEFAULTS                                                       \
    {.executor = GQ_EXEC_WORKER, .backend = -1, .max_hold = 2.0,            \
     .audio_roots = ""}

/* A class as the file describes it: its policy, backoff and executor. */
struct class_ext {
    struct gq_class_conf conf;
    double backoff_base;    /* seconds */
    double backoff_max;     /* seconds */
    struct gq_class_exec exec;      /* .backend is resolved after the file */
    char backend[GQ_NAME_MAX];      /* the backend key's name, "" = none */
};

/* What a class gets for the keys its section does not set. */
static const struct class_ext class_defaults = {
    .conf = {.name = "", .priority = 0, .weight = 1.0, .max_consecutive = 0,
             .max_queue = 1000, .queue_timeout = 0.0, .lease_ttl = 120.0,
             .max_attempts = 3},
    .backoff_base = 1.0,
    .backoff_max = 300.0,
    .exec = EXEC_DEFAULTS,
};

/* The seed design's classes: the classes when no file names any. */
static const struct class_ext seed_classes[] = {
    {.conf = {.name = "chatbot", .priority = 10, .weight = 1.0,
              .max_consecutive = 0, .max_queue = 1000,
              .queue_timeout = 60.0, .lease_ttl = 120.0, .max_attempts = 1},
     .backoff_base = 1.0, .backoff_max = 300.0, .exec = EXEC_DEFAULTS},
    {.conf = {.name = "transcription", .priority = 0, .weight = 70.0,
              .max_consecutive = 2, .max_queue = 1000,
              .queue_timeout = 0.0, .lease_ttl = 120.0, .max_attempts = 3},
     .backoff_base = 1.0, .backoff_max = 300.0, .exec = EXEC_DEFAULTS},
    {.conf = {.name = "summarization", .priority = 0, .weight = 30.0,
              .max_consecutive = 1, .max_queue = 1000,
              .queue_timeout = 0.0, .lease_ttl = 120.0, .max_attempts = 3},
     .backoff_base = 1.0, .backoff_max = 300.0, .exec = EXEC_DEFAULTS},
};
#define NSEED ((int)(sizeof seed_classes / sizeof seed_classes[0]))

/* What a backend gets for the keys its section does not set. */
static const struct gq_backend_conf backend_defaults = {
    .name = "", .type = GQ_BACKEND_WHISPER_CPP, .url = "", .model = "",
    .timeout = 300.0, .max_concurrency = 1, .breaker_failures = 5,
    .breaker_cooldown = 10.0, .health_interval = 10.0,
    .context_tokens = 4096,
};

/* A [token NAME] section as the file gives it. */
struct token_ext {
    struct gq_token_conf conf;  /* .classes is resolved after the file */
    char secret_file[1024];     /* read after the file, "" = none */
    char classes[256];          /* the classes key's text, "" = all */
};

/* A word a key accepts, and the number stored for it. */
struct word {
    const char *name;
    int value;
};

static const struct word sync_words[] = {
    {"full", 2}, {"normal", 1}, {"off", 0}, {NULL, 0},
};

static const struct word share_words[] = {
    {"time", GQ_SHARE_TIME}, {"grants", GQ_SHARE_GRANTS}, {NULL, 0},
};

static const struct word backend_words[] = {
    {"whisper-cpp", GQ_BACKEND_WHISPER_CPP},
    {"openai", GQ_BACKEND_OPENAI},
    {"ollama", GQ_BACKEND_OLLAMA},
    {NULL, 0},
};

static const struct word bool_words[] = {
    {"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"on", 1}, {"off", 0},
    {NULL, 0},
};

static const struct word role_words[] = {
    {"submit", GQ_ROLE_SUBMIT},
    {"worker", GQ_ROLE_WORKER},
    {"admin", GQ_ROLE_ADMIN},
    {NULL, 0},
};

static const struct word exec_words[] = {
    {"transcribe", GQ_EXEC_TRANSCRIBE},
    {"summarize", GQ_EXEC_SUMMARIZE},
    {"chat", GQ_EXEC_CHAT},
    {"worker", GQ_EXEC_WORKER},
    {NULL, 0},
};

/* K_WORD stores through an int pointer, also into these enums. */
_Static_assert(sizeof(enum gq_share_by) == sizeof(int),
               "share_by is stored as an int");
_Static_assert(sizeof(enum gq_backend_type) == sizeof(int),
               "a backend's type is stored as an int");
_Static_assert(sizeof(enum gq_executor) == sizeof(int),
               "a class's executor is stored as an int");
_Static_assert(sizeof(enum gq_role) == sizeof(int),
               "a token's role is stored as an int");

/*
 * The backend types each executor can use, one bit per enum
 * gq_backend_type (0: it needs none), and how a message names them.
 */
static const struct exec_rule {
    unsigned types;
    const char *what;
} exec_rules[] = {
    [GQ_EXEC_WORKER] = {0, NULL},
    [GQ_EXEC_TRANSCRIBE] = {1u << GQ_BACKEND_WHISPER_CPP, "a whisper-cpp"},
    [GQ_EXEC_SUMMARIZE] = {1u << GQ_BACKEND_OPENAI | 1u << GQ_BACKEND_OLLAMA,
                           "an openai or ollama"},
    [GQ_EXEC_CHAT] = {1u << GQ_BACKEND_OPENAI | 1u << GQ_BACKEND_OLLAMA,
                      "an openai or ollama"},
};
#define NEXEC ((int)(sizeof exec_rules / sizeof exec_rules[0]))

enum ktype {
    K_INT,      /* int */
    K_LONG,     /* long */
    K_DOUBLE,   /* double, finite */
    K_STR,      /* char[size], not empty */
    K_OPTSTR,   /* char[size], may be empty (but not set to "") */
    K_LISTEN,   /* char[size] holding HOST:PORT */
    K_URL,      /* char[size] holding http(s)://HOST:PORT */
    K_PATHS,    /* char[size]: absolute paths split by ':' or ',', or "" */
    K_WORD,     /* int (or enum) from one of words */
    K_MODE,     /* int: permission bits, written in octal (0660) */
    K_SECRET,   /* char[size]: "" or GQ_SECRET_MIN.. visible ASCII bytes */
};

#define NOBOUND INFINITY

/* One key of a section. */
struct keydef {
    const char *name;
    enum ktype type;
    size_t off;                 /* offset in the section's struct */
    size_t size;                /* strings: the buffer's size */
    double lo, hi;              /* numbers: allowed range, inclusive */
    int lo_open;                /* nonzero: lo itself is not allowed */
    const struct word *words;   /* K_WORD: the accepted words */
};

#define CF(f) offsetof(struct gq_config, f)
#define CL(f) offsetof(struct class_ext, f)
#define CB(f) offsetof(struct gq_backend_conf, f)
#define CT(f) offsetof(struct token_ext, f)
#define CSTR(f) CF(f), sizeof(((struct gq_config *)0)->f)
#define CLSTR(f) CL(f), sizeof(((struct class_ext *)0)->f)
#define CBSTR(f) CB(f), sizeof(((struct gq_backend_conf *)0)->f)
#define CTSTR(f) CT(f), sizeof(((struct token_ext *)0)->f)

/* [server]: offsets into struct gq_config. */
static const struct keydef server_keys[] = {
    {"listen", K_LISTEN, CSTR(listen), 0, 0, 0, NULL},
    {"data_dir", K_STR, CSTR(data_dir), 0, 0, 0, NULL},
    {"max_body", K_LONG, CF(max_body), 0, 1, NOBOUND, 0, NULL},
    {"max_payload", K_LONG, CF(max_payload), 0, 1, NOBOUND, 0, NULL},
    {"max_parked", K_INT, CF(max_parked), 0, 0, NOBOUND, 0, NULL},
    {"request_timeout", K_DOUBLE, CF(request_timeout), 0, 0, NOBOUND, 1,
     NULL},
    {"drain_timeout", K_DOUBLE, CF(drain_timeout), 0, 0, NOBOUND, 0, NULL},
    {"retention", K_DOUBLE, CF(retention), 0, 0, NOBOUND, 0, NULL},
    {"synchronous", K_WORD, CF(synchronous), 0, 0, 0, 0, sync_words},
    {"allow_remote", K_WORD, CF(allow_remote), 0, 0, 0, 0, bool_words},
    {"unix_socket", K_OPTSTR, CSTR(unix_socket), 0, 0, 0, NULL},
    {"unix_socket_mode", K_MODE, CF(unix_socket_mode), 0, 0, 0777, 0, NULL},
};

/* [gpu]: offsets into struct gq_config. */
static const struct keydef gpu_keys[] = {
    {"slots", K_INT, CF(slots), 0, 1, GQ_MAX_SLOTS, 0, NULL},
};

/* [scheduler]: offsets into struct gq_config. */
static const struct keydef sched_keys[] = {
    {"share_by", K_WORD, CF(share_by), 0, 0, 0, 0, share_words},
};

/* [callbacks]: offsets into struct gq_config. */
static const struct keydef callback_keys[] = {
    {"secret", K_OPTSTR, CSTR(callback_secret), 0, 0, 0, NULL},
    {"attempts", K_INT, CF(callback_attempts), 0, 1, NOBOUND, 0, NULL},
};

/* [auth]: offsets into struct gq_config. */
static const struct keydef auth_keys[] = {
    {"token_file", K_OPTSTR, CSTR(token_file), 0, 0, 0, NULL},
};

/* [token NAME]: offsets into struct token_ext. */
static const struct keydef token_keys[] = {
    {"secret", K_SECRET, CTSTR(conf.secret), 0, 0, 0, NULL},
    {"secret_file", K_OPTSTR, CTSTR(secret_file), 0, 0, 0, NULL},
    {"role", K_WORD, CT(conf.role), 0, 0, 0, 0, role_words},
    /* Names, resolved to conf.classes after the file (resolve()). */
    {"classes", K_OPTSTR, CTSTR(classes), 0, 0, 0, NULL},
};

/* [class NAME]: offsets into struct class_ext. */
static const struct keydef class_keys[] = {
    {"priority", K_INT, CL(conf.priority), 0, -NOBOUND, NOBOUND, 0, NULL},
    {"weight", K_DOUBLE, CL(conf.weight), 0, 0, NOBOUND, 1, NULL},
    {"max_consecutive", K_INT, CL(conf.max_consecutive), 0, 0, NOBOUND, 0,
     NULL},
    {"max_queue", K_INT, CL(conf.max_queue), 0, 1, NOBOUND, 0, NULL},
    {"queue_timeout", K_DOUBLE, CL(conf.queue_timeout), 0, 0, NOBOUND, 0,
     NULL},
    {"lease_ttl", K_DOUBLE, CL(conf.lease_ttl), 0, 0, NOBOUND, 1, NULL},
    {"max_attempts", K_INT, CL(conf.max_attempts), 0, 1, NOBOUND, 0, NULL},
    {"backoff_base", K_DOUBLE, CL(backoff_base), 0, 0, NOBOUND, 0, NULL},
    {"backoff_max", K_DOUBLE, CL(backoff_max), 0, 0, NOBOUND, 0, NULL},
    {"executor", K_WORD, CL(exec.executor), 0, 0, 0, 0, exec_words},
    /* A name, resolved to exec.backend after the file (resolve()). */
    {"backend", K_OPTSTR, CLSTR(backend), 0, 0, 0, NULL},
    {"max_hold", K_DOUBLE, CL(exec.max_hold), 0, 0, NOBOUND, 1, NULL},
    {"audio_roots", K_PATHS, CLSTR(exec.audio_roots), 0, 0, 0, NULL},
};

/* [backend NAME]: offsets into struct gq_backend_conf. */
static const struct keydef backend_keys[] = {
    {"type", K_WORD, CB(type), 0, 0, 0, 0, backend_words},
    {"url", K_URL, CBSTR(url), 0, 0, 0, NULL},
    {"timeout", K_DOUBLE, CB(timeout), 0, 0, NOBOUND, 1, NULL},
    {"max_concurrency", K_INT, CB(max_concurrency), 0, 1, 64, 0, NULL},
    {"model", K_OPTSTR, CBSTR(model), 0, 0, 0, NULL},
    {"breaker_failures", K_INT, CB(breaker_failures), 0, 1, NOBOUND, 0,
     NULL},
    {"breaker_cooldown", K_DOUBLE, CB(breaker_cooldown), 0, 0, NOBOUND, 1,
     NULL},
    {"health_interval", K_DOUBLE, CB(health_interval), 0, 0, NOBOUND, 1,
     NULL},
    {"context_tokens", K_INT, CB(context_tokens), 0, 256, NOBOUND, 0, NULL},
};

#define NKEYS(t) ((int)(sizeof(t) / sizeof((t)[0])))
#define MAX_KEYS 16

struct secdef {
    const char *name;
    const struct keydef *keys; /* NULL: [models], whose keys are names */
    int nkeys;
    int max;                   /* named ("[name NAME]"): at most; else 0 */
    const char *plural;        /* named: "classes", for messages */
};

/* The sections, indexed by SEC_*. */
enum {
    SEC_SERVER, SEC_GPU, SEC_SCHEDULER, SEC_CALLBACKS, SEC_MODELS,
    SEC_AUTH, SEC_CLASS, SEC_BACKEND, SEC_TOKEN, NSECTIONS
};
#define SEC_NONE (-1)           /* before the first header */
#define SEC_SKIP (-2)           /* in a section already reported bad */

static const struct secdef sections[] = {
    [SEC_SERVER] = {"server", server_keys, NKEYS(server_keys), 0, NULL},
    [SEC_GPU] = {"gpu", gpu_keys, NKEYS(gpu_keys), 0, NULL},
    [SEC_SCHEDULER] = {"scheduler", sched_keys, NKEYS(sched_keys), 0, NULL},
    [SEC_CALLBACKS] = {"callbacks", callback_keys, NKEYS(callback_keys), 0,
                       NULL},
    [SEC_MODELS] = {"models", NULL, 0, 0, NULL},
    [SEC_AUTH] = {"auth", auth_keys, NKEYS(auth_keys), 0, NULL},
    [SEC_CLASS] = {"class", class_keys, NKEYS(class_keys), GQ_MAX_CLASSES,
                   "classes"},
    [SEC_BACKEND] = {"backend", backend_keys, NKEYS(backend_keys),
                     GQ_MAX_BACKENDS, "backends"},
    [SEC_TOKEN] = {"token", token_keys, NKEYS(token_keys), GQ_MAX_TOKENS,
                   "tokens"},
};
_Static_assert(sizeof sections / sizeof sections[0] == NSECTIONS,
               "one secdef per SEC_*");

_Static_assert(NKEYS(server_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(NKEYS(class_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(NKEYS(backend_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(NKEYS(token_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(NKEYS(backend_keys) <= 32, "backend_set is a bit mask");

/* The index of key name in section sd, or -1. */
static int
find_key(const struct secdef *sd, const char *name)
{
    int i;

    for (i = 0; i < sd->nkeys; i++)
        if (strcmp(sd->keys[i].name, name) == 0)
            return i;
    return -1;
}

/* The name of value v in words, or NULL. */
static const char *
word_name(const struct word *w, int v)
{
    for (; w->name != NULL; w++)
        if (w->value == v)
            return w->name;
    return NULL;
}

/* ---- error collection ------------------------------------------------ */

/*
 * Messages, one per line, in a caller's buffer.  Once one does not fit,
 * the rest are only counted, and finishing says how many were left out.
 */
struct errbuf {
    char *buf;                  /* NULL when the caller wants none */
    size_t cap;
    size_t len;
    int n;                      /* messages added */
    int dropped;                /* of which left out */
    int full;                   /* nonzero: no more lines fit */
};

static void
eb_init(struct errbuf *eb, char *buf, int len)
{
    eb->buf = buf != NULL && len > 0 ? buf : NULL;
    eb->cap = eb->buf != NULL ? (size_t)len : 0;
    eb->len = 0;
    eb->n = 0;
    eb->dropped = 0;
    eb->full = 0;
    if (eb->buf != NULL)
        eb->buf[0] = '\0';
}

/* Adds one message; a first one that is too long is cut to fit. */
static void
eb_put(struct errbuf *eb, const char *msg)
{
    size_t mlen = strlen(msg);
    size_t need = (eb->len > 0 ? 1 : 0) + mlen;

    eb->n++;
    if (eb->buf == NULL || eb->full) {
        eb->dropped++;
        return;
    }
    if (eb->len + need < eb->cap) {
        if (eb->len > 0)
            eb->buf[eb->len++] = '\n';
        memcpy(eb->buf + eb->len, msg, mlen + 1);
        eb->len += mlen;
        return;
    }
    if (eb->len == 0) {
        memcpy(eb->buf, msg, eb->cap - 1);
        eb->buf[eb->cap - 1] = '\0';
        eb->len = eb->cap - 1;
    } else {
        eb->dropped++;
    }
    eb->full = 1;
}

/* Ends the list with "(N more errors)", dropping lines to make room. */
static void
eb_finish(struct errbuf *eb)
{
    char note[48];
    int nlen;

    if (eb->buf == NULL || eb->dropped == 0)
        return;
    for (;;) {
        nlen = snprintf(note, sizeof note, "%s(%d more error%s)",
                        eb->len > 0 ? "\n" : "", eb->dropped,
                        eb->dropped == 1 ? "" : "s");
        if (eb->len + (size_t)nlen < eb->cap)
            break;
        char *nl = memrchr(eb->buf, '\n', eb->len);
        if (nl == NULL)
            return;             /* one line that fills it: keep that */
        eb->len = (size_t)(nl - eb->buf);
        eb->buf[eb->len] = '\0';
        eb->dropped++;
    }
    memcpy(eb->buf + eb->len, note, (size_t)nlen + 1);
    eb->len += (size_t)nlen;
}

/* ---- values ---------------------------------------------------------- */

/* Parses all of s as a base-10 integer: 0, -1 not one, -2 too big. */
static int
parse_ll(const char *s, long long *out)
{
    char *end;
    long long v;

    if (!isdigit((unsigned char)*s) && *s != '-' && *s != '+')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || *end != '\0')
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = v;
    return 0;
}

/*
 * Parses all of s as a decimal number (no hex, inf or nan): 0, -1 not
 * one, -2 out of double's range.
 */
static int
parse_num(const char *s, double *out)
{
    char *end;
    double v;

    if (*s == '\0' || strspn(s, "0123456789+-.eE") != strlen(s))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end != '\0')
        return -1;
    if (errno == ERANGE || !isfinite(v))
        return -2;
    *out = v;
    return 0;
}

/*
 * Why s is not HOST:PORT, or NULL when it is.  url: s is the part of a
 * URL after "http://", so the messages say so and port 0 is refused.
 */
static const char *
hostport_why(const char *s, int url)
{
    const char *colon, *p;
    size_t n;
    long port;

    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL)
            return "missing ']' after the IPv6 address";
        if (rb == s + 1)
            return "empty host";
        for (p = s + 1; p < rb; p++)
            if (!isalnum((unsigned char)*p) && *p != ':' && *p != '.' &&
                *p != '%')
                return "bad character in the IPv6 address";
        if (rb[1] != ':')
            return "missing :PORT";
        colon = rb + 1;
    } else {
        colon = strchr(s, ':');
        if (colon == NULL)
            return "missing :PORT";
        if (strchr(colon + 1, ':') != NULL)
            return url ? "an IPv6 address must be in brackets, e.g. "
                         "http://[::1]:8080"
                       : "an IPv6 address must be in brackets, e.g. "
                         "[::1]:7707";
        if (colon == s)
            return url ? "empty host"
                       : "empty host (0.0.0.0 or [::] listens on all "
                         "interfaces)";
        for (p = s; p < colon; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' &&
                *p != '_')
                return "bad character in the host";
    }
    p = colon + 1;
    n = strlen(p);
    port = n == 0 || n > 5 || strspn(p, "0123456789") != n
               ? -1 : strtol(p, NULL, 10);
    if (url && (port < 1 || port > 65535))
        return "the port must be a number from 1 to 65535";
    if (port < 0 || port > 65535)
        return "the port must be a number from 0 to 65535";
    return NULL;
}

/* Why s is not http(s)://HOST:PORT, or NULL when it is. */
static const char *
url_why(const char *s)
{
    char hp[512];
    const char *rest, *slash, *why;

    if (strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    else
        return "it must start with http:// or https://";
    slash = strchr(rest, '/');
    if (slash == NULL)
        slash = rest + strlen(rest);
    if ((size_t)(slash - rest) >= sizeof hp)
        return "the host is too long";
    memcpy(hp, rest, (size_t)(slash - rest));
    hp[slash - rest] = '\0';
    why = hostport_why(hp, 1);
    if (why != NULL)
        return why;
    if (*slash != '\0')
        return "nothing may follow the port (no path, not even '/')";
    return NULL;
}

/*
 * Checks s, a list of absolute paths separated by ':' or ',' (not
 * empty): 0, or -1 with the reason in msg.  Whether the directories
 * exist is the executor's business, at run time.
 */
static int
paths_check(const char *name, const char *s, char *msg, size_t len)
{
    const char *p = s;
    size_t n;

    for (;;) {
        n = strcspn(p, ":,");
        if (n == 0) {
            snprintf(msg, len, "%s '%s' has an empty entry", name, s);
            return -1;
        }
        if (*p != '/') {
            snprintf(msg, len, "%s: '%.*s' is not an absolute path", name,
                     (int)n, p);
            return -1;
        }
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/*
 * Why s cannot be a token's secret, or NULL when it can.  The messages
 * never show the secret.
 */
static const char *
secret_why(const char *s)
{
    size_t i, n = strlen(s);

    if (n < GQ_SECRET_MIN)
        return "is too short (at least 16 characters; 32 random ones "
               "are better)";
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return "may only hold visible ASCII characters (no spaces)";
    return NULL;
}

/* Nonzero if s[0..n) may be a model name: no space or control byte. */
static int
model_name_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0)
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Nonzero if s is a valid class name: [A-Za-z0-9_.-]{1,63}. */
static int
class_name_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n >= GQ_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' &&
            s[i] != '-')
            return 0;
    return 1;
}

/* "a, b or c" from a word list, into buf. */
static void
word_list(const struct word *w, char *buf, size_t len)
{
    size_t used = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; w[i].name != NULL && used < len; i++) {
        const char *sep = i == 0 ? "" : w[i + 1].name == NULL ? " or " : ", ";
        int r = snprintf(buf + used, len - used, "%s%s", sep, w[i].name);
        if (r < 0)
            break;
        used += (size_t)r;
    }
}

/*
 * Checks the value of key k in base.  got is how to show the value in a
 * message (the file's text), or NULL to print it from base.  0, or -1
 * with the reason in msg.
 */
static int
check_field(const struct keydef *k, const void *base, const char *got,
            char *msg, size_t len)
{
    const char *f = (const char *)base + k->off;
    char num[64];
    const char *why;
    double v;
    int i;

    switch (k->type) {
    case K_INT:
        v = *(const int *)f;
        snprintf(num, sizeof num, "%d", *(const int *)f);
        break;
    case K_LONG:
        v = (double)*(const long *)f;
        snprintf(num, sizeof num, "%ld", *(const long *)f);
        break;
    case K_DOUBLE:
        v = *(const double *)f;
        snprintf(num, sizeof num, "%g", v);
        if (!isfinite(v)) {
            snprintf(msg, len, "%s must be a finite number, got %s",
                     k->name, got != NULL ? got : num);
            return -1;
        }
        break;
    case K_MODE:
        if (*(const int *)f < 0 || *(const int *)f > (int)k->hi) {
            snprintf(msg, len, "%s must be an octal mode from 0000 to %04o, "
                     "got %s", k->name, (unsigned)k->hi,
                     got != NULL ? got : "a bad value");
            return -1;
        }
        return 0;
    case K_STR:
    case K_OPTSTR:
    case K_LISTEN:
    case K_URL:
    case K_PATHS:
    case K_SECRET:
        if (memchr(f, '\0', k->size) == NULL) {
            snprintf(msg, len, "%s is too long (at most %zu characters)",
                     k->name, k->size - 1);
            return -1;
        }
        if (*f == '\0') {
            if (k->type == K_OPTSTR || k->type == K_PATHS ||
                k->type == K_SECRET)
                return 0;
            snprintf(msg, len, "%s must not be empty", k->name);
            return -1;
        }
        why = NULL;
        if (k->type == K_LISTEN)
            why = hostport_why(f, 0);
        else if (k->type == K_URL)
            why = url_why(f);
        if (why != NULL) {
            snprintf(msg, len, "%s '%s' is not %s: %s", k->name, f,
                     k->type == K_URL ? "http(s)://HOST:PORT" : "HOST:PORT",
                     why);
            return -1;
        }
        if (k->type == K_PATHS)
            return paths_check(k->name, f, msg, len);
        if (k->type == K_SECRET) {
            why = secret_why(f);
            if (why != NULL) {
                snprintf(msg, len, "%s %s", k->name, why);
                return -1;
            }
        }
        return 0;
    case K_WORD:
        for (i = 0; k->words[i].name != NULL; i++)
            if (k->words[i].value == *(const int *)f)
                return 0;
        word_list(k->words, num, sizeof num);
        snprintf(msg, len, "%s must be %s, got %d", k->name, num,
                 *(const int *)f);
        return -1;
    default:
        snprintf(msg, len, "%s: internal error: bad key type", k->name);
        return -1;
    }
    if (got == NULL)
        got = num;
    if (v < k->lo || (k->lo_open && v == k->lo) || v > k->hi) {
        if (k->hi != NOBOUND)
            snprintf(msg, len, "%s must be from %g to %g, got %s", k->name,
                     k->lo, k->hi, got);
        else
            snprintf(msg, len, "%s must be %s %g, got %s", k->name,
                     k->lo_open ? ">" : ">=", k->lo, got);
        return -1;
    }
    return 0;
}

/* Parses val into key k of base and checks it: 0, or -1 with msg. */
static int
set_value(const struct keydef *k, void *base, const char *val, char *msg,
          size_t len)
{
    char *f = (char *)base + k->off;
    long long ll = 0;
    double d = 0;
    char words[64];
    int r, i;

    if (*val == '\0') {
        snprintf(msg, len, "%s: missing value", k->name);
        return -1;
    }
    switch (k->type) {
    case K_INT:
    case K_LONG:
        r = parse_ll(val, &ll);
        if (r == -1) {
            snprintf(msg, len, "%s: '%s' is not an integer", k->name, val);
            return -1;
        }
        if (r == -2 ||
            (k->type == K_INT && (ll < INT_MIN || ll > INT_MAX)) ||
            (k->type == K_LONG && (ll < LONG_MIN || ll > LONG_MAX))) {
            snprintf(msg, len, "%s: %s is out of range", k->name, val);
            return -1;
        }
        if (k->type == K_INT)
            *(int *)f = (int)ll;
        else
            *(long *)f = (long)ll;
        break;
    case K_DOUBLE:
        r = parse_num(val, &d);
        if (r == -1) {
            snprintf(msg, len, "%s: '%s' is not a number", k->name, val);
            return -1;
        }
        if (r == -2) {
            snprintf(msg, len, "%s: %s is out of range", k->name, val);
            return -1;
        }
        *(double *)f = d;
        break;
    case K_MODE:
        if (strlen(val) > 4 || strspn(val, "01234567") != strlen(val)) {
            snprintf(msg, len, "%s: '%s' is not an octal mode (such as "
                     "0660)", k->name, val);
            return -1;
        }
        *(int *)f = (int)strtol(val, NULL, 8);
        break;
    case K_STR:
    case K_OPTSTR:
    case K_LISTEN:
    case K_URL:
    case K_PATHS:
    case K_SECRET:
        if (strlen(val) >= k->size) {
            snprintf(msg, len, "%s is too long (at most %zu characters)",
                     k->name, k->size - 1);
            return -1;
        }
        memcpy(f, val, strlen(val) + 1);
        break;
    case K_WORD:
        for (i = 0; k->words[i].name != NULL; i++)
            if (strcasecmp(k->words[i].name, val) == 0)
                break;
        if (k->words[i].name == NULL) {
            word_list(k->words, words, sizeof words);
            snprintf(msg, len, "%s: '%s' is not one of %s", k->name, val,
                     words);
            return -1;
        }
        *(int *)f = k->words[i].value;
        break;
    }
    return check_field(k, base, val, msg, len);
}

/* ---- the file -------------------------------------------------------- */

/*
 * Room for the class of a [models] line.  inih's line buffer
 * (INI_MAX_LINE, 200 as installed) bounds the line; were it built
 * larger, a longer class would be cut here and then name no class.
 */
#define MODEL_CLASS_MAX 200

struct parse {
    const char *path;
    FILE *fp;
    char *line;                 /* getline's buffer, owned */
    size_t cap;
    int lineno;                 /* of the line last read */
    int ioerr;                  /* errno of a failed read, or 0 */
    struct gq_config cfg;       /* defaults, then the file's values */
    int any_class;              /* the file has a [class ...] header */
    int nclasses;
    struct class_ext cls[GQ_MAX_CLASSES];
    int sec;                    /* index in sections, SEC_NONE, SEC_SKIP */
    int cur;                    /* the class or backend of a named sec */
    int sec_line[NSECTIONS];    /* header line of each fixed section */
    int class_line[GQ_MAX_CLASSES];
    int backend_line[GQ_MAX_BACKENDS];          /* in cfg.backends */
    int seen[NSECTIONS][MAX_KEYS];              /* line a key was set on */
    int class_seen[GQ_MAX_CLASSES][MAX_KEYS];
    int backend_seen[GQ_MAX_BACKENDS][MAX_KEYS];
    unsigned backend_set[GQ_MAX_BACKENDS];      /* bit k: key k is valid */
    /* [models], in cfg.model_names; the classes are resolved later. */
    int model_line[GQ_MAX_MODELS];
    char model_cls[GQ_MAX_MODELS][MODEL_CLASS_MAX];
    /* [token NAME]; copied into cfg.tokens, before token_file's, once
     * resolved. */
    int ntokens;
    struct token_ext tok[GQ_MAX_TOKENS];
    int token_line[GQ_MAX_TOKENS];
    int token_seen[GQ_MAX_TOKENS][MAX_KEYS];
    struct errbuf eb;
};

/* Records "PATH:LINE: message" for a file the configuration names. */
__attribute__((format(printf, 4, 0))) static void
vperr_at(struct parse *p, const char *path, int line, const char *fmt,
         va_list ap)
{
    char msg[1024];
    int n;

    n = snprintf(msg, sizeof msg, "%s:%d: ", path, line);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof msg)
        vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    eb_put(&p->eb, msg);
}

/* Records "PATH:LINE: message" for the configuration file itself. */
__attribute__((format(printf, 3, 4))) static void
perr(struct parse *p, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vperr_at(p, p->path, line, fmt, ap);
    va_end(ap);
}

/* As perr, for another file (a token_file). */
__attribute__((format(printf, 4, 5))) static void
perr_at(struct parse *p, const char *path, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vperr_at(p, path, line, fmt, ap);
    va_end(ap);
}

/* The name of item i of named section s (a class, backend or token). */
static const char *
item_name(const struct parse *p, int s, int i)
{
    if (s == SEC_CLASS)
        return p->cls[i].conf.name;
    if (s == SEC_TOKEN)
        return p->tok[i].conf.name;
    return p->cfg.backends[i].name;
}

/*
 * Starts "[KIND NAME]" of named section s; name[0..n) is what follows
 * KIND.  Class, backend and token names follow the same rules.
 */
static void
begin_named(struct parse *p, int s, const char *name, size_t n)
{
    const struct secdef *sd = &sections[s];
    int *count = s == SEC_CLASS   ? &p->nclasses
                 : s == SEC_TOKEN ? &p->ntokens
                                  : &p->cfg.nbackends;
    int *lines = s == SEC_CLASS   ? p->class_line
                 : s == SEC_TOKEN ? p->token_line
                                  : p->backend_line;
    int i;

    if (s == SEC_CLASS)
        p->any_class = 1;
    while (n > 0 && isspace((unsigned char)*name)) {
        name++;
        n--;
    }
    if (n == 0) {
        perr(p, p->lineno, "missing %s name: write [%s NAME]", sd->name,
             sd->name);
        return;
    }
    if (!class_name_ok(name, n)) {
        perr(p, p->lineno,
             "bad %s name '%.*s': use 1 to %d of A-Z a-z 0-9 _ . -",
             sd->name, (int)n, name, GQ_NAME_MAX - 1);
        return;
    }
    for (i = 0; i < *count; i++) {
        const char *other = item_name(p, s, i);
        if (strlen(other) == n && memcmp(other, name, n) == 0) {
            perr(p, p->lineno,
                 "duplicate section [%s %.*s] (first on line %d)", sd->name,
                 (int)n, name, lines[i]);
            return;
        }
    }
    if (*count == sd->max) {
        perr(p, p->lineno, "too many %s (at most %d)", sd->plural, sd->max);
        return;
    }
    i = (*count)++;
    if (s == SEC_CLASS) {
        p->cls[i] = class_defaults;
        memcpy(p->cls[i].conf.name, name, n);
        p->cls[i].conf.name[n] = '\0';
    } else if (s == SEC_TOKEN) {
        memset(&p->tok[i], 0, sizeof p->tok[i]);
        memcpy(p->tok[i].conf.name, name, n);
        p->tok[i].conf.name[n] = '\0';
        p->tok[i].conf.classes = GQ_ALL_CLASSES;
    } else {
        p->cfg.backends[i] = backend_defaults;
        memcpy(p->cfg.backends[i].name, name, n);
        p->cfg.backends[i].name[n] = '\0';
    }
    lines[i] = p->lineno;
    p->sec = s;
    p->cur = i;
}

/* Starts the section named by name[0..n) (inside the brackets). */
static void
begin_section(struct parse *p, const char *name, size_t n)
{
    size_t kn;
    int i;

    while (n > 0 && isspace((unsigned char)*name)) {
        name++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)name[n - 1]))
        n--;
    p->sec = SEC_SKIP;
    for (i = 0; i < NSECTIONS; i++) {
        const struct secdef *sd = &sections[i];
        kn = strlen(sd->name);
        if (sd->max > 0) {
            /* "[class]", "[class NAME]", not "[classy]" */
            if (n >= kn && memcmp(sd->name, name, kn) == 0 &&
                (n == kn || isspace((unsigned char)name[kn]))) {
                begin_named(p, i, name + kn, n - kn);
                return;
            }
            continue;
        }
        if (kn != n || memcmp(sd->name, name, n) != 0)
            continue;
        if (p->sec_line[i] != 0) {
            perr(p, p->lineno, "duplicate section [%s] (first on line %d)",
                 sd->name, p->sec_line[i]);
            return;
        }
        p->sec_line[i] = p->lineno;
        p->sec = i;
        return;
    }
    perr(p, p->lineno, "unknown section [%.*s]", (int)n, name);
}

/*
 * One "MODEL = CLASS" line of [models]: s is the line, trimmed and
 * without its comment, eq its first '='.  The class is looked up after
 * the file, as it may be defined further down.
 */
static void
model_line(struct parse *p, char *s, char *eq)
{
    char *name = s, *cls = eq + 1, *e = eq;
    size_t n;
    int i;

    while (e > name && isspace((unsigned char)e[-1]))
        e--;
    *e = '\0';
    while (isspace((unsigned char)*cls))
        cls++;
    n = strlen(name);
    if (n >= sizeof p->cfg.model_names[0]) {
        perr(p, p->lineno, "model name '%s' is too long (at most %zu "
             "characters)", name, sizeof p->cfg.model_names[0] - 1);
        return;
    }
    if (!model_name_ok(name, n)) {
        perr(p, p->lineno, "bad model name '%s': no spaces or control "
             "characters", name);
        return;
    }
    if (*cls == '\0') {
        perr(p, p->lineno, "model '%s': missing class", name);
        return;
    }
    for (i = 0; i < p->cfg.nmodels; i++) {
        if (strcmp(p->cfg.model_names[i], name) == 0) {
            perr(p, p->lineno, "model '%s' is set twice (first on line %d)",
                 name, p->model_line[i]);
            return;
        }
    }
    if (p->cfg.nmodels == GQ_MAX_MODELS) {
        perr(p, p->lineno, "too many models (at most %d)", GQ_MAX_MODELS);
        return;
    }
    i = p->cfg.nmodels++;
    memcpy(p->cfg.model_names[i], name, n + 1);
    snprintf(p->model_cls[i], sizeof p->model_cls[i], "%s", cls);
    p->model_line[i] = p->lineno;
}

/*
 * Cuts s at its first inline comment: a ';' after whitespace, as inih
 * has it.  "#" and ";" start a comment only at the start of a line.
 */
static void
cut_comment(char *s)
{
    int was_space = 0;

    for (; *s != '\0'; s++) {
        if (was_space && *s == ';') {
            *s = '\0';
            return;
        }
        was_space = isspace((unsigned char)*s);
    }
}

/*
 * inih's reader.  Reads one line of the file and returns in str what
 * inih is to see of it: the line itself, trimmed and without its
 * comment, if it is "key = value", else a blank line (after handling a
 * header or a [models] line, or recording an error).  NULL at the end of
 * the file or on a read error (p->ioerr).
 */
static char *
reader(char *str, int num, void *stream)
{
    struct parse *p = stream;
    ssize_t n;
    char *s, *end;
    size_t len;

    errno = 0;
    n = getline(&p->line, &p->cap, p->fp);
    if (n < 0) {
        if (!feof(p->fp))
            p->ioerr = errno != 0 ? errno : EIO;
        return NULL;
    }
    p->lineno++;
    strcpy(str, "\n");
    s = p->line;
    if (strlen(s) != (size_t)n) {
        perr(p, p->lineno, "the line holds a NUL byte");
        return str;
    }
    if (p->lineno == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;                 /* UTF-8 byte order mark */
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || *s == ';' || *s == '#')
        return str;
    cut_comment(s);
    len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';

    if (*s == '[') {
        /* After a bad header, its keys are not reported one by one. */
        p->sec = SEC_SKIP;
        end = strchr(s, ']');
        if (end == NULL)
            perr(p, p->lineno, "missing ']' at the end of the section name");
        else if (end[1] != '\0')
            perr(p, p->lineno, "unexpected text after ']'");
        else
            begin_section(p, s + 1, (size_t)(end - s - 1));
        return str;
    }
    /* Model names hold ':', so only '=' separates in [models]. */
    end = s + strcspn(s, p->sec == SEC_MODELS ? "=" : "=:");
    if (*end == '\0') {
        if (p->sec == SEC_MODELS)
            perr(p, p->lineno, "expected 'MODEL = CLASS' (only '=' "
                 "separates them in [models])");
        else
            perr(p, p->lineno, "expected 'key = value' or '[section]'");
        return str;
    }
    if (end == s) {
        perr(p, p->lineno, "missing key before '%c'", *end);
        return str;
    }
    /* inih wants room for the newline and the NUL (and a CR). */
    if (num < 3 || len > (size_t)num - 3) {
        perr(p, p->lineno, "line too long (at most %d characters before "
             "a comment)", num - 3);
        return str;
    }
    if (p->sec == SEC_MODELS) {
        model_line(p, s, end);
        return str;
    }
    memcpy(str, s, len);
    memcpy(str + len, "\n", 2);
    return str;
}

/* inih's handler: one "key = value" of the line the reader last read. */
static int
handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    const struct secdef *sd;
    char msg[768];
    int *seen;
    void *base;
    int i;

    (void)section;              /* the reader follows the headers */
    if (p->sec == SEC_SKIP || p->sec == SEC_MODELS)
        return 1;               /* its header was reported; the reader's */
    if (p->sec == SEC_NONE) {
        perr(p, p->lineno, "'%s' is outside any section", name);
        return 1;
    }
    sd = &sections[p->sec];
    i = find_key(sd, name);
    if (i < 0) {
        if (sd->max > 0)
            perr(p, p->lineno, "unknown key '%s' in [%s %s]", name,
                 sd->name, item_name(p, p->sec, p->cur));
        else
            perr(p, p->lineno, "unknown key '%s' in [%s]", name, sd->name);
        return 1;
    }
    if (p->sec == SEC_CLASS) {
        seen = &p->class_seen[p->cur][i];
        base = &p->cls[p->cur];
    } else if (p->sec == SEC_BACKEND) {
        seen = &p->backend_seen[p->cur][i];
        base = &p->cfg.backends[p->cur];
    } else if (p->sec == SEC_TOKEN) {
        seen = &p->token_seen[p->cur][i];
        base = &p->tok[p->cur];
    } else {
        seen = &p->seen[p->sec][i];
        base = &p->cfg;
    }
    if (*seen != 0) {
        perr(p, p->lineno, "%s is set twice (first on line %d)", name,
             *seen);
        return 1;
    }
    *seen = p->lineno;
    if (set_value(&sd->keys[i], base, value, msg, sizeof msg) != 0)
        perr(p, p->lineno, "%s", msg);
    else if (p->sec == SEC_BACKEND)
        p->backend_set[p->cur] |= 1u << i;
    return 1;                   /* go on: every error is recorded */
}

/*
 * Why a class with executor e cannot run on backend b (NULL: none): 0,
 * or -1 with the reason in msg.  Values out of range are left to the
 * checks of their own keys.
 */
static int
exec_why(enum gq_executor e, const struct gq_backend_conf *b, char *msg,
         size_t len)
{
    const struct exec_rule *r;
    const char *ename = word_name(exec_words, (int)e);
    const char *tname;

    if ((int)e < 0 || (int)e >= NEXEC || ename == NULL)
        return 0;
    r = &exec_rules[e];
    if (r->types == 0)
        return 0;
    if (b == NULL) {
        snprintf(msg, len, "executor %s needs %s backend: set backend = "
                 "NAME", ename, r->what);
        return -1;
    }
    tname = word_name(backend_words, (int)b->type);
    if (tname == NULL || (r->types & 1u << b->type) != 0)
        return 0;
    snprintf(msg, len, "executor %s needs %s backend, but backend '%s' is "
             "%s", ename, r->what, b->name, tname);
    return -1;
}

/* The index of the class named name in c, or -1. */
static int
class_index(const struct gq_config *c, const char *name)
{
    int i;

    for (i = 0; i < c->nclasses; i++)
        if (strcmp(c->classes[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- tokens ---------------------------------------------------------- */

/*
 * The class mask of list, class names split by ',' (blanks around them
 * are allowed), against c's classes: 0, or -1 with the reason in msg.
 */
static int
classes_mask(const struct gq_config *c, const char *list, uint64_t *mask,
             char *msg, size_t len)
{
    const char *s = list;
    char name[GQ_NAME_MAX];
    uint64_t m = 0;
    size_t n, e;
    int k;

    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        n = strcspn(s, ",");
        e = n;
        while (e > 0 && isspace((unsigned char)s[e - 1]))
            e--;
        if (e == 0) {
            snprintf(msg, len, "classes '%s' has an empty entry", list);
            return -1;
        }
        k = -1;
        if (e < sizeof name) {
            memcpy(name, s, e);
            name[e] = '\0';
            k = class_index(c, name);
        }
        if (k < 0) {
            snprintf(msg, len, "unknown class '%.*s'", (int)e, s);
            return -1;
        }
        m |= (uint64_t)1 << k;
        if (s[n] == '\0')
            break;
        s += n + 1;
    }
    *mask = m;
    return 0;
}

/*
 * Reads a token's secret: the first line of path, without its line end
 * and the blanks around it, into out[size].  0, or -1 with the reason in
 * msg (which never shows the secret).
 */
static int
read_secret(const char *path, char *out, size_t size, char *msg,
            size_t len)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, *s;
    size_t cap = 0, n;
    ssize_t got;
    const char *why;
    int ret = -1;

    if (f == NULL) {
        snprintf(msg, len, "secret_file %s: cannot open: %s", path,
                 strerror(errno));
        return -1;
    }
    errno = 0;
    got = getline(&line, &cap, f);
    if (got < 0) {
        if (ferror(f))
            snprintf(msg, len, "secret_file %s: cannot read: %s", path,
                     strerror(errno != 0 ? errno : EIO));
        else
            snprintf(msg, len, "secret_file %s is empty", path);
        goto out;
    }
    if (strlen(line) != (size_t)got) {
        snprintf(msg, len, "secret_file %s: the line holds a NUL byte",
                 path);
        goto out;
    }
    s = line;
    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    s[n] = '\0';
    if (n >= size) {
        snprintf(msg, len, "secret_file %s: the secret is too long (at "
                 "most %zu characters)", path, size - 1);
        goto out;
    }
    why = secret_why(s);
    if (why != NULL) {
        snprintf(msg, len, "secret_file %s: the secret %s", path, why);
        goto out;
    }
    memcpy(out, s, n + 1);
    ret = 0;
out:
    if (line != NULL)
        explicit_bzero(line, cap);
    free(line);
    fclose(f);
    return ret;
}

/* The index of the token named name among c's, or -1. */
static int
token_index(const struct gq_config *c, const char *name)
{
    int i;

    for (i = 0; i < c->ntokens; i++)
        if (strcmp(c->tokens[i].name, name) == 0)
            return i;
    return -1;
}

/*
 * After the file: each [token NAME] needs one of secret and secret_file
 * (read now) and a role; its classes are resolved.  The tokens then go
 * to p->cfg.tokens, in file order.
 */
static void
resolve_tokens(struct parse *p)
{
    const struct secdef *td = &sections[SEC_TOKEN];
    int ks = find_key(td, "secret"), kf = find_key(td, "secret_file");
    int kr = find_key(td, "role"), kc = find_key(td, "classes");
    char msg[768];
    int i;

    for (i = 0; i < p->ntokens; i++) {
        struct token_ext *t = &p->tok[i];
        const int *seen = p->token_seen[i];
        if (seen[ks] == 0 && seen[kf] == 0)
            perr(p, p->token_line[i], "[token %s] has no secret: write "
                 "secret = ... or secret_file = PATH", t->conf.name);
        else if (seen[ks] != 0 && seen[kf] != 0)
            perr(p, seen[kf], "[token %s] has both secret and "
                 "secret_file: keep one", t->conf.name);
        else if (seen[kf] != 0 && t->secret_file[0] != '\0' &&
                 read_secret(t->secret_file, t->conf.secret,
                             sizeof t->conf.secret, msg, sizeof msg) != 0)
            perr(p, seen[kf], "token %s: %s", t->conf.name, msg);
        if (seen[kr] == 0)
            perr(p, p->token_line[i], "[token %s] has no role: write "
                 "role = submit, worker or admin", t->conf.name);
        if (seen[kc] != 0 && t->classes[0] != '\0' &&
            classes_mask(&p->cfg, t->classes, &t->conf.classes, msg,
                         sizeof msg) != 0)
            perr(p, seen[kc], "token %s: %s", t->conf.name, msg);
        p->cfg.tokens[p->cfg.ntokens++] = t->conf;
    }
}

/*
 * One line of the token file, split into its fields: "NAME ROLE SECRET
 * [CLASSES]".  Adds the token to p->cfg or records why not, at
 * path:lineno.
 */
static void
token_file_line(struct parse *p, const char *path, int lineno, char *line)
{
    char *f[5], *save = NULL, msg[768];
    struct gq_token_conf t;
    const char *why;
    int nf = 0, i;

    for (char *w = strtok_r(line, " \t\r\n\v\f", &save); w != NULL;
         w = strtok_r(NULL, " \t\r\n\v\f", &save)) {
        if (nf == 0 && *w == '#')
            return;             /* a comment */
        if (nf == 5)
            break;
        f[nf++] = w;
    }
    if (nf == 0)
        return;                 /* a blank line */
    if (nf < 3) {
        perr_at(p, path, lineno, "expected 'NAME ROLE SECRET [CLASSES]'");
        return;
    }
    if (nf > 4) {
        perr_at(p, path, lineno, "unexpected text after the classes "
                "(CLASSES is one field: a,b,c)");
        return;
    }
    memset(&t, 0, sizeof t);
    if (!class_name_ok(f[0], strlen(f[0]))) {
        perr_at(p, path, lineno, "bad token name '%s': use 1 to %d of "
                "A-Z a-z 0-9 _ . -", f[0], GQ_NAME_MAX - 1);
        return;
    }
    memcpy(t.name, f[0], strlen(f[0]) + 1);
    if (token_index(&p->cfg, t.name) >= 0) {
        perr_at(p, path, lineno, "token %s is defined twice", t.name);
        return;
    }
    for (i = 0; role_words[i].name != NULL; i++)
        if (strcasecmp(role_words[i].name, f[1]) == 0)
            break;
    if (role_words[i].name == NULL) {
        perr_at(p, path, lineno, "token %s: role '%s' is not one of "
                "submit, worker or admin", t.name, f[1]);
        return;
    }
    t.role = (enum gq_role)role_words[i].value;
    why = strlen(f[2]) >= sizeof t.secret ? "is too long (at most 255 "
                                            "characters)"
                                          : secret_why(f[2]);
    if (why != NULL) {
        perr_at(p, path, lineno, "token %s: the secret %s", t.name, why);
        return;
    }
    memcpy(t.secret, f[2], strlen(f[2]) + 1);
    t.classes = GQ_ALL_CLASSES;
    if (nf == 4 &&
        classes_mask(&p->cfg, f[3], &t.classes, msg, sizeof msg) != 0) {
        perr_at(p, path, lineno, "token %s: %s", t.name, msg);
        explicit_bzero(&t, sizeof t);
        return;
    }
    if (p->cfg.ntokens == GQ_MAX_TOKENS) {
        perr_at(p, path, lineno, "too many tokens (at most %d)",
                GQ_MAX_TOKENS);
        explicit_bzero(&t, sizeof t);
        return;
    }
    p->cfg.tokens[p->cfg.ntokens++] = t;
    explicit_bzero(&t, sizeof t);
}

/* After the [token] sections: the lines of [auth] token_file, if set. */
static void
read_token_file(struct parse *p)
{
    const char *path = p->cfg.token_file;
    int line = p->seen[SEC_AUTH][find_key(&sections[SEC_AUTH],
                                          "token_file")];
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    FILE *f;

    if (path[0] == '\0')
        return;
    f = fopen(path, "r");
    if (f == NULL) {
        perr(p, line, "token_file %s: cannot open: %s", path,
             strerror(errno));
        return;
    }
    for (;;) {
        errno = 0;
        n = getline(&buf, &cap, f);
        if (n < 0)
            break;
        lineno++;
        if (strlen(buf) != (size_t)n)
            perr_at(p, path, lineno, "the line holds a NUL byte");
        else
            token_file_line(p, path, lineno, buf);
    }
    if (ferror(f))
        perr(p, line, "token_file %s: cannot read: %s", path,
             strerror(errno != 0 ? errno : EIO));
    if (buf != NULL)
        explicit_bzero(buf, cap);
    free(buf);
    fclose(f);
}

/*
 * After the file: the keys a backend must have, each class's backend
 * (at its backend line) and what its executor needs (at its header
 * line), and each model's class (at its line).  p->cfg holds the file's
 * classes by now.
 */
static void
resolve(struct parse *p)
{
    struct gq_config *c = &p->cfg;
    const struct secdef *bd = &sections[SEC_BACKEND];
    int kb = find_key(&sections[SEC_CLASS], "backend");
    int kt = find_key(bd, "type"), ku = find_key(bd, "url");
    const struct gq_backend_conf *b;
    char msg[768];
    int i, j, line;

    for (i = 0; i < c->nbackends; i++) {
        if (p->backend_seen[i][kt] == 0)
            perr(p, p->backend_line[i], "[backend %s] has no type: write "
                 "type = whisper-cpp, openai or ollama", c->backends[i].name);
        if (p->backend_seen[i][ku] == 0)
            perr(p, p->backend_line[i], "[backend %s] has no url: write "
                 "url = http://HOST:PORT", c->backends[i].name);
    }
    for (i = 0; i < p->nclasses; i++) {
        const struct class_ext *x = &p->cls[i];
        b = NULL;
        line = p->class_seen[i][kb];
        if (line != 0) {
            if (x->backend[0] == '\0')
                continue;       /* its bad value was reported */
            for (j = 0; j < c->nbackends; j++)
                if (strcmp(c->backends[j].name, x->backend) == 0)
                    break;
            if (j == c->nbackends) {
                perr(p, line, "unknown backend '%s' (no [backend %s] "
                     "section)", x->backend, x->backend);
                continue;
            }
            c->exec[i].backend = j;
            if ((p->backend_set[j] & 1u << kt) == 0)
                continue;       /* its type is missing or was reported */
            b = &c->backends[j];
        }
        if (exec_why(x->exec.executor, b, msg, sizeof msg) != 0)
            perr(p, p->class_line[i], "class %s: %s", x->conf.name, msg);
    }
    for (i = 0; i < c->nmodels; i++) {
        j = class_index(c, p->model_cls[i]);
        if (j < 0)
            perr(p, p->model_line[i], "model '%s': unknown class '%s'",
                 c->model_names[i], p->model_cls[i]);
        else
            c->model_class[i] = j;
    }
    resolve_tokens(p);
    read_token_file(p);
}

/* ---- the interface ----------------------------------------------------- */

/* Frees a parse, wiping it first: it may hold token secrets. */
static void
parse_free(struct parse *p)
{
    explicit_bzero(p, sizeof *p);
    free(p);
}

const char *
gq_role_str(enum gq_role r)
{
    const char *name = word_name(role_words, (int)r);

    if (r == GQ_ROLE_NONE)
        return "none";
    return name != NULL ? name : "?";
}

/* Copies class i of the seed or a file into c. */
static void
put_class(struct gq_config *c, int i, const struct class_ext *x)
{
    c->classes[i] = x->conf;
    c->backoff_base[i] = x->backoff_base;
    c->backoff_max[i] = x->backoff_max;
    c->exec[i] = x->exec;
}

void
gq_config_defaults(struct gq_config *c)
{
    static const struct gq_class_exec exec_default = EXEC_DEFAULTS;
    int i;

    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "%s", "127.0.0.1:7707");
    snprintf(c->data_dir, sizeof c->data_dir, "%s", "var");
    c->max_body = 2097152;
    c->max_payload = 1048576;
    c->max_parked = 1024;
    c->request_timeout = 30;
    c->drain_timeout = 30;
    c->retention = 604800;
    c->synchronous = 2;
    c->slots = 1;
    c->share_by = GQ_SHARE_TIME;
    c->nclasses = NSEED;
    for (i = 0; i < GQ_MAX_CLASSES; i++)
        c->exec[i] = exec_default;
    for (i = 0; i < NSEED; i++)
        put_class(c, i, &seed_classes[i]);
    c->nbackends = 0;
    c->nmodels = 0;
    c->callback_secret[0] = '\0';
    c->callback_attempts = 8;
    c->allow_remote = 0;
    c->unix_socket[0] = '\0';
    c->unix_socket_mode = 0660;
    c->token_file[0] = '\0';
    c->ntokens = 0;
}

int
gq_config_load(struct gq_config *c, const char *path, char *err,
               int errlen)
{
    static const struct gq_class_exec exec_default = EXEC_DEFAULTS;
    struct parse *p;
    int r, i, ret;

    gq_config_defaults(c);
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, (size_t)errlen, "%s: out of memory", path);
        return GQ_ENOMEM;
    }
    eb_init(&p->eb, err, errlen);
    p->path = path;
    p->sec = SEC_NONE;
    gq_config_defaults(&p->cfg);
    p->fp = fopen(path, "r");
    if (p->fp == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, (size_t)errlen, "%s: cannot open: %s", path,
                     strerror(errno));
        parse_free(p);
        return GQ_EIO;
    }
    r = ini_parse_stream(reader, p, handler, p);
    fclose(p->fp);
    free(p->line);
    if (p->ioerr != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, (size_t)errlen, "%s: cannot read: %s", path,
                     strerror(p->ioerr));
        ret = p->ioerr == ENOMEM ? GQ_ENOMEM : GQ_EIO;
        parse_free(p);
        return ret;
    }
    if (r > 0)                  /* inih saw what the reader let pass */
        perr(p, r, "syntax error");
    else if (r < 0)
        perr(p, p->lineno, "the INI parser failed (%d)", r);
    if (p->any_class) {
        p->cfg.nclasses = p->nclasses;
        for (i = 0; i < GQ_MAX_CLASSES; i++) {
            if (i < p->nclasses) {
                put_class(&p->cfg, i, &p->cls[i]);
            } else {
                memset(&p->cfg.classes[i], 0, sizeof p->cfg.classes[i]);
                p->cfg.backoff_base[i] = 0;
                p->cfg.backoff_max[i] = 0;
                p->cfg.exec[i] = exec_default;
            }
        }
    }
    resolve(p);
    if (p->eb.n > 0) {
        eb_finish(&p->eb);
        parse_free(p);
        return GQ_EINVAL;
    }
    *c = p->cfg;
    parse_free(p);
    return 0;
}

/* Records a plain message (gq_config_check's). */
__attribute__((format(printf, 2, 3))) static void
cerr(struct errbuf *eb, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    eb_put(eb, msg);
}

/*
 * n, a count of c's, if in 0..max; else records why not and returns the
 * part of it that can be looked at.
 */
static int
check_count(struct errbuf *eb, int n, int max, const char *what)
{
    if (n < 0) {
        cerr(eb, "bad number of %s: %d", what, n);
        return 0;
    }
    if (n > max) {
        cerr(eb, "too many %s: %d (at most %d)", what, n, max);
        return max;
    }
    return n;
}

/* gq_config_check's part for backends[]. */
static void
check_backends(const struct gq_config *c, int nb, struct errbuf *eb)
{
    const struct secdef *sd = &sections[SEC_BACKEND];
    char msg[768];
    int i, j, k;

    for (i = 0; i < nb; i++) {
        const char *name = c->backends[i].name;
        size_t len = strnlen(name, GQ_NAME_MAX);
        if (len == GQ_NAME_MAX || !class_name_ok(name, len)) {
            cerr(eb, "backend %d: bad name '%.*s': use 1 to %d of A-Z a-z "
                 "0-9 _ . -", i + 1, (int)len, name, GQ_NAME_MAX - 1);
            continue;
        }
        for (j = 0; j < i; j++)
            if (strncmp(c->backends[j].name, name, GQ_NAME_MAX) == 0)
                break;
        if (j < i)
            cerr(eb, "backend %s is defined twice", name);
        for (k = 0; k < sd->nkeys; k++)
            if (check_field(&sd->keys[k], &c->backends[i], NULL, msg,
                            sizeof msg) != 0)
                cerr(eb, "backend %s: %s", name, msg);
    }
}

/* gq_config_check's part for the API tokens. */
static void
check_tokens(const struct gq_config *c, int nc, struct errbuf *eb)
{
    const size_t smax = sizeof c->tokens[0].secret;
    int i, j, n;

    n = check_count(eb, c->ntokens, GQ_MAX_TOKENS, "tokens");
    for (i = 0; i < n; i++) {
        const struct gq_token_conf *t = &c->tokens[i];
        size_t len = strnlen(t->name, GQ_NAME_MAX);
        const char *why;
        if (len == GQ_NAME_MAX || !class_name_ok(t->name, len)) {
            cerr(eb, "token %d: bad name '%.*s': use 1 to %d of A-Z a-z "
                 "0-9 _ . -", i + 1, (int)len, t->name, GQ_NAME_MAX - 1);
            continue;
        }
        for (j = 0; j < i; j++)
            if (strncmp(c->tokens[j].name, t->name, GQ_NAME_MAX) == 0)
                break;
        if (j < i)
            cerr(eb, "token %s is defined twice", t->name);
        if (t->role < GQ_ROLE_SUBMIT || t->role > GQ_ROLE_ADMIN)
            cerr(eb, "token %s: role must be submit, worker or admin, got "
                 "%d", t->name, (int)t->role);
        why = memchr(t->secret, '\0', smax) == NULL
                  ? "is too long (at most 255 characters)"
                  : secret_why(t->secret);
        if (why != NULL) {
            cerr(eb, "token %s: the secret %s", t->name, why);
            continue;
        }
        if (t->classes == 0)
            cerr(eb, "token %s allows no class", t->name);
        else if (t->classes != GQ_ALL_CLASSES && nc < 64 &&
                 (t->classes >> nc) != 0)
            cerr(eb, "token %s: allows a class that does not exist",
                 t->name);
        for (j = 0; j < i; j++)
            if (memchr(c->tokens[j].secret, '\0', smax) != NULL &&
                strcmp(c->tokens[j].secret, t->secret) == 0)
                break;
        if (j < i)
            cerr(eb, "tokens %s and %s have the same secret: give each "
                 "its own", c->tokens[j].name, t->name);
    }
}

/*
 * Nonzero if the host of listen (HOST:PORT) is a loopback address:
 * 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or the name localhost.
 * Any other name counts as not loopback, whatever it resolves to.
 */
static int
listen_is_loopback(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    struct in6_addr a6;
    struct in_addr a4;
    char host[256];
    size_t hl;

    if (colon == NULL)
        return 0;
    hl = (size_t)(colon - listen);
    if (listen[0] == '[' && hl >= 2 && listen[hl - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(hl - 2), listen + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)hl, listen);
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

/* gq_config_check's part for the [models] map. */
static void
check_models(const struct gq_config *c, int nc, struct errbuf *eb)
{
    const size_t max = sizeof c->model_names[0];
    int i, j, n;

    n = check_count(eb, c->nmodels, GQ_MAX_MODELS, "models");
    for (i = 0; i < n; i++) {
        const char *name = c->model_names[i];
        size_t len = strnlen(name, max);
        if (len == max || !model_name_ok(name, len)) {
            cerr(eb, "model %d: bad name '%.*s': 1 to %zu characters, no "
                 "spaces or control characters", i + 1, (int)len, name,
                 max - 1);
            continue;
        }
        for (j = 0; j < i; j++)
            if (strncmp(c->model_names[j], name, max) == 0)
                break;
        if (j < i)
            cerr(eb, "model %s is mapped twice", name);
        if (c->model_class[i] < 0 || c->model_class[i] >= nc)
            cerr(eb, "model %s: class %d does not exist", name,
                 c->model_class[i]);
    }
}

int
gq_config_check(const struct gq_config *c, char *err, int errlen)
{
    struct errbuf eb;
    struct class_ext x;
    const struct gq_backend_conf *b;
    char msg[768];
    int s, i, j, k, n, nb;

    eb_init(&eb, err, errlen);
    for (s = 0; s < NSECTIONS; s++) {
        if (sections[s].max > 0)
            continue;           /* named sections: below */
        for (k = 0; k < sections[s].nkeys; k++)
            if (check_field(&sections[s].keys[k], c, NULL, msg,
                            sizeof msg) != 0)
                cerr(&eb, "%s", msg);
    }
    nb = check_count(&eb, c->nbackends, GQ_MAX_BACKENDS, "backends");
    check_backends(c, nb, &eb);
    n = c->nclasses;
    if (n < 1)
        cerr(&eb, "no class is configured");
    if (n > GQ_MAX_CLASSES) {
        cerr(&eb, "too many classes: %d (at most %d)", n, GQ_MAX_CLASSES);
        n = GQ_MAX_CLASSES;
    }
    for (i = 0; i < n; i++) {
        const char *name = c->classes[i].name;
        size_t len = strnlen(name, GQ_NAME_MAX);
        if (len == GQ_NAME_MAX || !class_name_ok(name, len)) {
            cerr(&eb, "class %d: bad name '%.*s': use 1 to %d of A-Z a-z "
                 "0-9 _ . -", i + 1, (int)len, name, GQ_NAME_MAX - 1);
            continue;
        }
        for (j = 0; j < i; j++)
            if (strncmp(c->classes[j].name, name, GQ_NAME_MAX) == 0)
                break;
        if (j < i)
            cerr(&eb, "class %s is defined twice", name);
        x.conf = c->classes[i];
        x.backoff_base = c->backoff_base[i];
        x.backoff_max = c->backoff_max[i];
        x.exec = c->exec[i];
        x.backend[0] = '\0';    /* the file's name; exec.backend here */
        for (k = 0; k < sections[SEC_CLASS].nkeys; k++)
            if (check_field(&sections[SEC_CLASS].keys[k], &x, NULL, msg,
                            sizeof msg) != 0)
                cerr(&eb, "class %s: %s", name, msg);
        b = NULL;
        if (x.exec.backend != -1) {
            if (x.exec.backend < 0 || x.exec.backend >= nb) {
                cerr(&eb, "class %s: backend %d does not exist", name,
                     x.exec.backend);
                continue;
            }
            b = &c->backends[x.exec.backend];
        }
        if (exec_why(x.exec.executor, b, msg, sizeof msg) != 0)
            cerr(&eb, "class %s: %s", name, msg);
    }
    check_models(c, n < 0 ? 0 : n, &eb);
    check_tokens(c, n < 0 ? 0 : n, &eb);
    if (c->allow_remote == 0 && c->ntokens == 0 &&
        memchr(c->listen, '\0', sizeof c->listen) != NULL &&
        hostport_why(c->listen, 0) == NULL &&
        !listen_is_loopback(c->listen))
        cerr(&eb, "listen %s is not a loopback address and no API token "
             "is configured, so anyone who can reach it could use the "
             "API: add [token NAME] sections (or [auth] token_file), or "
             "set [server] allow_remote = true to serve it without "
             "authentication", c->listen);
    if (eb.n > 0) {
        eb_finish(&eb);
        return GQ_EINVAL;
    }
    return 0;
}
