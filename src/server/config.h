/*
 * config.h - gpuqd's configuration: defaults, the INI file (inih), and
 * validation with FILE:LINE: messages.
 */
#ifndef GQ_CONFIG_H
#define GQ_CONFIG_H

#include <stdint.h>

#include "../core/sched.h"

#define GQ_MAX_BACKENDS 16
#define GQ_MAX_MODELS 64
#define GQ_MAX_TOKENS 64
#define GQ_SECRET_MIN 16         /* shortest token secret, bytes */
#define GQ_SECRET_MAX 256        /* secret buffer: 255 bytes and the NUL */
#define GQ_ALL_CLASSES UINT64_MAX /* a token's class mask: every class */
#define GQ_SOCKET_PATH_MAX 108   /* sizeof sun_path on Linux, NUL included */

/*
 * What an API token may do ([token NAME] role = ...).  Each role has the
 * rights of the ones below it; the route table of http.c names the least
 * role each route needs (GQ_ROLE_NONE: no token at all).
 */
enum gq_role {
    GQ_ROLE_NONE = 0,        /* open routes: /healthz, the dashboard */
    GQ_ROLE_SUBMIT = 1,      /* jobs, locks, events, status, drop-ins */
    GQ_ROLE_WORKER = 2,      /* and worker leases */
    GQ_ROLE_ADMIN = 3,       /* and /v1/admin/... */
};

/* [backend NAME] type = ... */
enum gq_backend_type {
    GQ_BACKEND_WHISPER_CPP = 0, /* whisper.cpp whisper-server */
    GQ_BACKEND_OPENAI = 1,      /* llama-server, vLLM, any OpenAI-compatible */
    GQ_BACKEND_OLLAMA = 2,      /* Ollama /api/chat */
};

/* [class NAME] executor = ... */
enum gq_executor {
    GQ_EXEC_WORKER = 0,         /* external workers lease the jobs (default) */
    GQ_EXEC_TRANSCRIBE = 1,
    GQ_EXEC_SUMMARIZE = 2,
    GQ_EXEC_CHAT = 3,
};

struct gq_backend_conf {
    char name[GQ_NAME_MAX];
    enum gq_backend_type type;
    char url[512];           /* base URL, http(s)://host:port */
    char model[128];         /* model name sent to the server ("" = none) */
    double timeout;          /* seconds per call, default 300 */
    int max_concurrency;     /* calls in flight at once, default 1 */
    int breaker_failures;    /* consecutive failures that open the circuit, 5 */
    double breaker_cooldown; /* seconds before a half-open probe, 10 */
    double health_interval;  /* seconds between /health checks, 10 */
    int context_tokens;      /* LLM context size for summarize, 4096 */
};

/* One API token, from a [token NAME] section or a line of token_file. */
struct gq_token_conf {
    char name[GQ_NAME_MAX];
    enum gq_role role;       /* GQ_ROLE_SUBMIT .. GQ_ROLE_ADMIN */
    uint64_t classes;        /* bit k: class k; GQ_ALL_CLASSES: any class */
    char secret[GQ_SECRET_MAX]; /* GQ_SECRET_MIN..255 visible ASCII bytes */
};

/* Per-class executor settings (arrays indexed like classes[]). */
struct gq_class_exec {
    enum gq_executor executor; /* default GQ_EXEC_WORKER */
    int backend;               /* index into backends[], -1 = none */
    double max_hold;           /* seconds of GPU time per chunk, 2.0 */
    char audio_roots[1024];    /* ':' or ',' separated directories */
};

struct gq_config {
    /* [server] */
    char listen[256];        /* HOST:PORT, default 127.0.0.1:7707 */
    char data_dir[1024];     /* default "var" */
    long max_body;           /* bytes, default 2 MiB */
    long max_payload;        /* bytes of payload JSON, default 1 MiB */
    int max_parked;          /* long-polls + SSE streams, default 1024 */
    double request_timeout;  /* seconds, default 30 */
    double drain_timeout;    /* seconds, default 30 */
    double retention;        /* seconds terminal jobs are kept, 7 days */
    int synchronous;         /* 2 full (default), 1 normal, 0 off */
    int allow_remote;        /* listen beyond loopback without tokens */
    char unix_socket[GQ_SOCKET_PATH_MAX]; /* also listen here; "" = no */
    int unix_socket_mode;    /* its permission bits, default 0660 */
    /* [gpu] */
    int slots;               /* default 1 */
    /* [scheduler] */
    enum gq_share_by share_by;
    /* [class NAME], in file order; the seed's three when none given. */
    int nclasses;
    struct gq_class_conf classes[GQ_MAX_CLASSES];
    double backoff_base[GQ_MAX_CLASSES]; /* seconds, default 1 */
    double backoff_max[GQ_MAX_CLASSES];  /* seconds, default 300 */
    struct gq_class_exec exec[GQ_MAX_CLASSES];
    /* [backend NAME], in file order. */
    int nbackends;
    struct gq_backend_conf backends[GQ_MAX_BACKENDS];
    /* [models]: model name = class, for /v1/chat/completions and /api/chat */
    int nmodels;
    char model_names[GQ_MAX_MODELS][128];
    int model_class[GQ_MAX_MODELS];
    /* [callbacks] */
    char callback_secret[256];   /* HMAC-SHA256 key for X-Gpuq-Signature */
    int callback_attempts;       /* deliveries tried per event, default 8 */
    /* [auth] */
    char token_file[1024];       /* "NAME ROLE SECRET [CLASSES]" lines */
    /* [token NAME] sections, then token_file's lines (read at load). */
    int ntokens;
    struct gq_token_conf tokens[GQ_MAX_TOKENS];
};

/* "submit", "worker", "admin" ("none" for GQ_ROLE_NONE, "?" if bad). */
const char *gq_role_str(enum gq_role r);

/* Fills c with the defaults (the seed design's three classes). */
void gq_config_defaults(struct gq_config *c);

/*
 * Reads path over the defaults.  If the file has any [class ...] section,
 * the classes are exactly those of the file (each starting from the
 * per-class defaults: priority 0, weight 1, max_consecutive 0, max_queue
 * 1000, queue_timeout 0, lease_ttl 120, max_attempts 3, backoff 1/300).
 * Unknown sections and keys, bad values and a file with no class left are
 * errors.  Returns 0, or GQ_EINVAL with err holding every problem, one
 * "FILE:LINE: message" per line (GQ_EIO if the file cannot be read).
 *
 * c need not be initialised: it is set to the defaults first, so apply
 * command-line flags after this call, then gq_config_check.  On any
 * failure c holds the defaults.  GQ_EIO comes with "FILE: cannot open:
 * REASON" (or "cannot read"), GQ_ENOMEM with "out of memory".  err (may
 * be NULL) is always NUL-terminated and "" on success; lines that do not
 * fit in errlen are left out and counted in a last "(N more errors)"
 * line.  Not thread-safe (strerror).
 */
int gq_config_load(struct gq_config *c, const char *path, char *err,
                   int errlen);

/*
 * Checks every value and the cross-field rules, after flags override: at
 * least one class and at most GQ_MAX_CLASSES, valid and unique class
 * names, listen is HOST:PORT, slots in 1..GQ_MAX_SLOTS, each key in its
 * range, tokens with valid names, roles and secrets, no secret twice,
 * and a listen address beyond loopback only with tokens or allow_remote
 * (doc/config.md).  Returns 0, or GQ_EINVAL with every problem in
 * err, one plain message (no FILE:LINE) per line, as for gq_config_load.
 */
int gq_config_check(const struct gq_config *c, char *err, int errlen);

#endif
