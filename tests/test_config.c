/*
 * test_config.c - the configuration: defaults, the INI file, its error
 * messages (FILE:LINE: ...) and gq_config_check.
 *
 * Each test writes its file under /tmp (mkstemp) and the teardown
 * removes it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "server/config.h"

/* The seed configuration, as doc/config.md shows it. */
static const char seed_ini[] =
    "[server]\n"
    "listen = 127.0.0.1:7707\n"
    "data_dir = var\n"
    "\n"
    "[gpu]\n"
    "slots = 1                 ; GPU slots; each holds one grant at a time\n"
    "\n"
    "[class chatbot]\n"
    "priority = 10             ; higher tier always goes first\n"
    "max_queue = 1000          ; beyond it: 429 with Retry-After\n"
    "queue_timeout = 60        ; seconds a job may wait; 0 = forever\n"
    "lease_ttl = 120           ; seconds a grant may run without a "
    "heartbeat\n"
    "max_attempts = 1\n"
    "\n"
    "[class transcription]\n"
    "priority = 0\n"
    "weight = 70               ; share of GPU time within the tier\n"
    "max_consecutive = 2       ; grants in a row while another class of "
    "the tier waits; 0 = no cap\n"
    "max_attempts = 3\n"
    "\n"
    "[class summarization]\n"
    "priority = 0\n"
    "weight = 30\n"
    "max_consecutive = 1\n"
    "max_attempts = 3\n";

/* The example with executors of doc/config.md, as it shows it. */
static const char example_ini[] =
    "[server]\n"
    "listen = 127.0.0.1:7707\n"
    "data_dir = /var/lib/gpuq\n"
    "\n"
    "[backend whisper]\n"
    "type = whisper-cpp            ; whisper.cpp's whisper-server\n"
    "url = http://127.0.0.1:8080\n"
    "timeout = 300                 ; seconds per call\n"
    "\n"
    "[backend llm]\n"
    "type = openai                 ; llama-server, vLLM, ...\n"
    "url = http://127.0.0.1:8081\n"
    "model = gemma3:12b\n"
    "max_concurrency = 4           ; LLM servers batch\n"
    "context_tokens = 8192\n"
    "\n"
    "[class chatbot]\n"
    "priority = 10\n"
    "queue_timeout = 60\n"
    "max_attempts = 1\n"
    "executor = chat\n"
    "backend = llm\n"
    "\n"
    "[class transcription]\n"
    "weight = 70\n"
    "max_consecutive = 2\n"
    "executor = transcribe\n"
    "backend = whisper\n"
    "max_hold = 2.0                ; seconds of GPU time per chunk\n"
    "audio_roots = /srv/recordings:/srv/uploads\n"
    "\n"
    "[class summarization]\n"
    "weight = 30\n"
    "max_consecutive = 1\n"
    "executor = summarize\n"
    "backend = llm\n"
    "\n"
    "[models]\n"
    "gemma3:12b = chatbot          ; for /v1/chat/completions, /api/chat\n"
    "\n"
    "[callbacks]\n"
    "secret = s3cr3t\n"
    "attempts = 8\n";

/* Fails with both values shown when two doubles differ. */
#define assert_dbl_equal(a, b)                                              \
    do {                                                                    \
        double a_ = (a), b_ = (b);                                          \
        if (a_ != b_)                                                       \
            fail_msg("%s == %.17g, want %.17g", #a, a_, b_);                \
    } while (0)

struct tmp {
    char path[64];              /* the test's file, "" before it exists */
    char aux[64];               /* a second file (a token file), or "" */
    char err[4096];
};

static int
setup(void **state)
{
    struct tmp *t = calloc(1, sizeof *t);
    assert_non_null(t);
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    struct tmp *t = *state;
    if (t->path[0] != '\0')
        unlink(t->path);
    if (t->aux[0] != '\0')
        unlink(t->aux);
    free(t);
    return 0;
}

/* Writes text to the test's file (made on first use); returns its path. */
static const char *
write_file(struct tmp *t, const char *text)
{
    int fd;
    size_t len = strlen(text);

    if (t->path[0] == '\0') {
        snprintf(t->path, sizeof t->path, "/tmp/gq_config_XXXXXX");
        fd = mkstemp(t->path);
    } else {
        fd = open(t->path, O_WRONLY | O_TRUNC);
    }
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return t->path;
}

/* Writes text to the test's second file (made on first use); returns its
 * path.  The configuration names it, e.g. as a token_file. */
static const char *
write_aux(struct tmp *t, const char *text)
{
    int fd;
    size_t len = strlen(text);

    if (t->aux[0] == '\0') {
        snprintf(t->aux, sizeof t->aux, "/tmp/gq_config_aux_XXXXXX");
        fd = mkstemp(t->aux);
    } else {
        fd = open(t->aux, O_WRONLY | O_TRUNC);
    }
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return t->aux;
}

/* Loads text; returns gq_config_load's result (message in t->err). */
static int
load_text(struct tmp *t, struct gq_config *c, const char *text)
{
    const char *path = write_file(t, text);
    return gq_config_load(c, path, t->err, (int)sizeof t->err);
}

static void
assert_class_equal(const struct gq_class_conf *a,
                   const struct gq_class_conf *b)
{
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->priority, b->priority);
    assert_dbl_equal(a->weight, b->weight);
    assert_int_equal(a->max_consecutive, b->max_consecutive);
    assert_int_equal(a->max_queue, b->max_queue);
    assert_dbl_equal(a->queue_timeout, b->queue_timeout);
    assert_dbl_equal(a->lease_ttl, b->lease_ttl);
    assert_int_equal(a->max_attempts, b->max_attempts);
}

static void
assert_exec_equal(const struct gq_class_exec *a,
                  const struct gq_class_exec *b)
{
    assert_int_equal(a->executor, b->executor);
    assert_int_equal(a->backend, b->backend);
    assert_dbl_equal(a->max_hold, b->max_hold);
    assert_string_equal(a->audio_roots, b->audio_roots);
}

static void
assert_backend_equal(const struct gq_backend_conf *a,
                     const struct gq_backend_conf *b)
{
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->url, b->url);
    assert_string_equal(a->model, b->model);
    assert_dbl_equal(a->timeout, b->timeout);
    assert_int_equal(a->max_concurrency, b->max_concurrency);
    assert_int_equal(a->breaker_failures, b->breaker_failures);
    assert_dbl_equal(a->breaker_cooldown, b->breaker_cooldown);
    assert_dbl_equal(a->health_interval, b->health_interval);
    assert_int_equal(a->context_tokens, b->context_tokens);
}

static void
assert_config_equal(const struct gq_config *a, const struct gq_config *b)
{
    int i;

    assert_string_equal(a->listen, b->listen);
    assert_string_equal(a->data_dir, b->data_dir);
    assert_int_equal(a->max_body, b->max_body);
    assert_int_equal(a->max_payload, b->max_payload);
    assert_int_equal(a->max_parked, b->max_parked);
    assert_dbl_equal(a->request_timeout, b->request_timeout);
    assert_dbl_equal(a->drain_timeout, b->drain_timeout);
    assert_dbl_equal(a->retention, b->retention);
    assert_int_equal(a->synchronous, b->synchronous);
    assert_int_equal(a->slots, b->slots);
    assert_int_equal(a->share_by, b->share_by);
    assert_int_equal(a->nclasses, b->nclasses);
    for (i = 0; i < a->nclasses; i++) {
        assert_class_equal(&a->classes[i], &b->classes[i]);
        assert_dbl_equal(a->backoff_base[i], b->backoff_base[i]);
        assert_dbl_equal(a->backoff_max[i], b->backoff_max[i]);
        assert_exec_equal(&a->exec[i], &b->exec[i]);
    }
    assert_int_equal(a->nbackends, b->nbackends);
    for (i = 0; i < a->nbackends; i++)
        assert_backend_equal(&a->backends[i], &b->backends[i]);
    assert_int_equal(a->nmodels, b->nmodels);
    for (i = 0; i < a->nmodels; i++) {
        assert_string_equal(a->model_names[i], b->model_names[i]);
        assert_int_equal(a->model_class[i], b->model_class[i]);
    }
    assert_string_equal(a->callback_secret, b->callback_secret);
    assert_int_equal(a->callback_attempts, b->callback_attempts);
    assert_int_equal(a->allow_remote, b->allow_remote);
    assert_string_equal(a->unix_socket, b->unix_socket);
    assert_int_equal(a->unix_socket_mode, b->unix_socket_mode);
    assert_string_equal(a->token_file, b->token_file);
    assert_int_equal(a->ntokens, b->ntokens);
    for (i = 0; i < a->ntokens; i++) {
        assert_string_equal(a->tokens[i].name, b->tokens[i].name);
        assert_int_equal(a->tokens[i].role, b->tokens[i].role);
        assert_true(a->tokens[i].classes == b->tokens[i].classes);
        assert_string_equal(a->tokens[i].secret, b->tokens[i].secret);
    }
}

/* The number of lines of err (0 when empty). */
static int
count_lines(const char *err)
{
    int n = *err != '\0';
    for (; *err != '\0'; err++)
        n += *err == '\n';
    return n;
}

static void
test_defaults_equal_seed(void **state)
{
    struct gq_config c;
    const struct gq_class_conf *k;
    (void)state;

    gq_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:7707");
    assert_string_equal(c.data_dir, "var");
    assert_int_equal(c.max_body, 2097152);
    assert_int_equal(c.max_payload, 1048576);
    assert_int_equal(c.max_parked, 1024);
    assert_dbl_equal(c.request_timeout, 30);
    assert_dbl_equal(c.drain_timeout, 30);
    assert_dbl_equal(c.retention, 604800);
    assert_int_equal(c.synchronous, 2);
    assert_int_equal(c.slots, 1);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(c.nclasses, 3);

    k = &c.classes[0];
    assert_string_equal(k->name, "chatbot");
    assert_int_equal(k->priority, 10);
    assert_dbl_equal(k->weight, 1);
    assert_int_equal(k->max_consecutive, 0);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 60);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 1);

    k = &c.classes[1];
    assert_string_equal(k->name, "transcription");
    assert_int_equal(k->priority, 0);
    assert_dbl_equal(k->weight, 70);
    assert_int_equal(k->max_consecutive, 2);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 0);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 3);

    k = &c.classes[2];
    assert_string_equal(k->name, "summarization");
    assert_int_equal(k->priority, 0);
    assert_dbl_equal(k->weight, 30);
    assert_int_equal(k->max_consecutive, 1);
    assert_int_equal(k->max_queue, 1000);
    assert_dbl_equal(k->queue_timeout, 0);
    assert_dbl_equal(k->lease_ttl, 120);
    assert_int_equal(k->max_attempts, 3);

    for (int i = 0; i < 3; i++) {
        assert_dbl_equal(c.backoff_base[i], 1);
        assert_dbl_equal(c.backoff_max[i], 300);
    }
    /* No backends: every class is left to external workers. */
    for (int i = 0; i < GQ_MAX_CLASSES; i++) {
        assert_int_equal(c.exec[i].executor, GQ_EXEC_WORKER);
        assert_int_equal(c.exec[i].backend, -1);
        assert_dbl_equal(c.exec[i].max_hold, 2.0);
        assert_string_equal(c.exec[i].audio_roots, "");
    }
    assert_int_equal(c.nbackends, 0);
    assert_int_equal(c.nmodels, 0);
    assert_string_equal(c.callback_secret, "");
    assert_int_equal(c.callback_attempts, 8);
    assert_int_equal(gq_config_check(&c, NULL, 0), 0);
}

/* The seed file, inline comments and all, loads to the defaults. */
static void
test_seed_file_is_the_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c, seed_ini), 0);
    assert_string_equal(t->err, "");
    assert_config_equal(&c, &d);
}

static void
test_empty_file_is_the_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c, ""), 0);
    assert_config_equal(&c, &d);
    assert_int_equal(load_text(t, &c, "; nothing\n\n# here\n"), 0);
    assert_config_equal(&c, &d);
}

/* Writes c as an INI file that should load back to c. */
static void
format_config(const struct gq_config *c, char *buf, size_t len)
{
    static const char *sync_names[] = {"off", "normal", "full"};
    static const char *exec_names[] = {
        [GQ_EXEC_WORKER] = "worker", [GQ_EXEC_TRANSCRIBE] = "transcribe",
        [GQ_EXEC_SUMMARIZE] = "summarize", [GQ_EXEC_CHAT] = "chat",
    };
    static const char *type_names[] = {
        [GQ_BACKEND_WHISPER_CPP] = "whisper-cpp",
        [GQ_BACKEND_OPENAI] = "openai", [GQ_BACKEND_OLLAMA] = "ollama",
    };
    size_t n = 0;
    int i;

#define OUT(...) (n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__))
    OUT("[server]\nlisten = %s\ndata_dir = %s\nmax_body = %ld\n"
        "max_payload = %ld\nmax_parked = %d\nrequest_timeout = %.17g\n"
        "drain_timeout = %.17g\nretention = %.17g\nsynchronous = %s\n"
        "allow_remote = %s\nunix_socket_mode = %04o\n",
        c->listen, c->data_dir, c->max_body, c->max_payload, c->max_parked,
        c->request_timeout, c->drain_timeout, c->retention,
        sync_names[c->synchronous], c->allow_remote ? "yes" : "off",
        (unsigned)c->unix_socket_mode);
    if (c->unix_socket[0] != '\0')
        OUT("unix_socket = %s\n", c->unix_socket);
    OUT("[gpu]\nslots = %d\n", c->slots);
    OUT("[scheduler]\nshare_by = %s\n",
        c->share_by == GQ_SHARE_GRANTS ? "grants" : "time");
    /* References go both ways: classes name backends defined after them,
     * and [models] names classes defined after it. */
    if (c->nmodels > 0)
        OUT("[models]\n");
    for (i = 0; i < c->nmodels; i++)
        OUT("%s = %s\n", c->model_names[i],
            c->classes[c->model_class[i]].name);
    for (i = 0; i < c->nclasses; i++) {
        const struct gq_class_conf *k = &c->classes[i];
        const struct gq_class_exec *e = &c->exec[i];
        OUT("[class %s]\npriority = %d\nweight = %.17g\n"
            "max_consecutive = %d\nmax_queue = %d\nqueue_timeout = %.17g\n"
            "lease_ttl = %.17g\nmax_attempts = %d\nbackoff_base = %.17g\n"
            "backoff_max = %.17g\n",
            k->name, k->priority, k->weight, k->max_consecutive,
            k->max_queue, k->queue_timeout, k->lease_ttl, k->max_attempts,
            c->backoff_base[i], c->backoff_max[i]);
        OUT("executor = %s\nmax_hold = %.17g\n", exec_names[e->executor],
            e->max_hold);
        if (e->backend >= 0)
            OUT("backend = %s\n", c->backends[e->backend].name);
        if (e->audio_roots[0] != '\0')
            OUT("audio_roots = %s\n", e->audio_roots);
    }
    for (i = 0; i < c->nbackends; i++) {
        const struct gq_backend_conf *b = &c->backends[i];
        OUT("[backend %s]\ntype = %s\nurl = %s\ntimeout = %.17g\n"
            "max_concurrency = %d\nbreaker_failures = %d\n"
            "breaker_cooldown = %.17g\nhealth_interval = %.17g\n"
            "context_tokens = %d\n",
            b->name, type_names[b->type], b->url, b->timeout,
            b->max_concurrency, b->breaker_failures, b->breaker_cooldown,
            b->health_interval, b->context_tokens);
        if (b->model[0] != '\0')
            OUT("model = %s\n", b->model);
    }
    OUT("[callbacks]\nattempts = %d\n", c->callback_attempts);
    if (c->callback_secret[0] != '\0')
        OUT("secret = %s\n", c->callback_secret);
    for (i = 0; i < c->ntokens; i++) {
        const struct gq_token_conf *k = &c->tokens[i];
        static const char *roles[] = {"none", "submit", "worker", "admin"};
        OUT("[token %s]\nrole = %s\nsecret = %s\n", k->name,
            roles[k->role], k->secret);
        if (k->classes != GQ_ALL_CLASSES) {
            const char *sep = "classes = ";
            for (int b = 0; b < c->nclasses; b++)
                if (k->classes >> b & 1) {
                    OUT("%s%s", sep, c->classes[b].name);
                    sep = ", ";
                }
            OUT("\n");
        }
    }
#undef OUT
    assert_true(n < len);
}

/* Every key set away from its default survives a write and a load. */
static void
test_full_file_round_trips(void **state)
{
    struct tmp *t = *state;
    struct gq_config want, got;
    static char text[16384];
    int i;

    gq_config_defaults(&want);
    snprintf(want.listen, sizeof want.listen, "[::1]:0");
    snprintf(want.data_dir, sizeof want.data_dir, "/srv/gpuq/data-1");
    want.max_body = 4000000;
    want.max_payload = 123456;
    want.max_parked = 7;
    want.request_timeout = 2.5;
    want.drain_timeout = 0;
    want.retention = 86400.25;
    want.synchronous = 1;
    want.slots = 8;
    want.share_by = GQ_SHARE_GRANTS;
    want.nclasses = 5;
    for (i = 0; i < want.nclasses; i++) {
        struct gq_class_conf *k = &want.classes[i];
        snprintf(k->name, sizeof k->name, "cls-%d.v_%d", i, i * 7);
        k->priority = 100 - 50 * i;
        k->weight = 0.1 + i * 3.3;
        k->max_consecutive = i;
        k->max_queue = 1 + i * 999;
        k->queue_timeout = i * 1.5;
        k->lease_ttl = 0.5 + i;
        k->max_attempts = 1 + i;
        want.backoff_base[i] = 0.25 * i;
        want.backoff_max[i] = 10.0 * (i + 1);
        want.exec[i].max_hold = 0.5 + i;
    }
    want.nbackends = 2;
    want.backends[0] = (struct gq_backend_conf){
        .name = "whisper-1", .type = GQ_BACKEND_WHISPER_CPP,
        .url = "http://127.0.0.1:8080", .model = "", .timeout = 600.5,
        .max_concurrency = 2, .breaker_failures = 3,
        .breaker_cooldown = 2.5, .health_interval = 0.25,
        .context_tokens = 256};
    want.backends[1] = (struct gq_backend_conf){
        .name = "llm", .type = GQ_BACKEND_OLLAMA,
        .url = "https://[::1]:11434", .model = "gemma3:12b", .timeout = 30,
        .max_concurrency = 64, .breaker_failures = 1,
        .breaker_cooldown = 60, .health_interval = 5,
        .context_tokens = 131072};
    want.exec[0] = (struct gq_class_exec){GQ_EXEC_TRANSCRIBE, 0, 0.75,
                                          "/srv/rec:/mnt/a b,/tmp"};
    want.exec[1] = (struct gq_class_exec){GQ_EXEC_SUMMARIZE, 1, 4, ""};
    want.exec[2] = (struct gq_class_exec){GQ_EXEC_CHAT, 1, 1e-3, ""};
    /* A worker class may name a backend; the workers just ignore it. */
    want.exec[3].backend = 1;
    want.nmodels = 3;
    snprintf(want.model_names[0], sizeof want.model_names[0], "gemma3:12b");
    want.model_class[0] = 2;
    snprintf(want.model_names[1], sizeof want.model_names[1],
             "hf.co/org/Model-7B-GGUF:Q4_K_M");
    want.model_class[1] = 2;
    snprintf(want.model_names[2], sizeof want.model_names[2], "m");
    want.model_class[2] = 4;
    snprintf(want.callback_secret, sizeof want.callback_secret,
             "s3cr3t=with:odd#chars");
    want.callback_attempts = 1;
    want.allow_remote = 1;
    snprintf(want.unix_socket, sizeof want.unix_socket, "/run/gpuq/s.sock");
    want.unix_socket_mode = 0640;
    want.ntokens = 3;
    want.tokens[0] = (struct gq_token_conf){
        "ops", GQ_ROLE_ADMIN, GQ_ALL_CLASSES, "0123456789abcdef"};
    want.tokens[1] = (struct gq_token_conf){
        "gpu-box.1", GQ_ROLE_WORKER, 1u << 0 | 1u << 4,
        "=with:odd#chars;and~more/+=="};
    want.tokens[2] = (struct gq_token_conf){"app_2", GQ_ROLE_SUBMIT, 1u << 2,
                                            ""};
    /* As long as a line allows (a file line holds at most 197). */
    memset(want.tokens[2].secret, 'x', 180);
    format_config(&want, text, sizeof text);
    assert_int_equal(load_text(t, &got, text), 0);
    assert_config_equal(&got, &want);
    assert_int_equal(gq_config_check(&got, t->err, sizeof t->err), 0);
}

/* The documented example: two backends, three classes, a model. */
static void
test_example_file(void **state)
{
    struct tmp *t = *state;
    struct gq_config want, got, again;
    static char text[16384];

    gq_config_defaults(&want);
    snprintf(want.data_dir, sizeof want.data_dir, "/var/lib/gpuq");
    want.nbackends = 2;
    want.backends[0] = (struct gq_backend_conf){
        .name = "whisper", .type = GQ_BACKEND_WHISPER_CPP,
        .url = "http://127.0.0.1:8080", .model = "", .timeout = 300,
        .max_concurrency = 1, .breaker_failures = 5,
        .breaker_cooldown = 10, .health_interval = 10,
        .context_tokens = 4096};
    want.backends[1] = (struct gq_backend_conf){
        .name = "llm", .type = GQ_BACKEND_OPENAI,
        .url = "http://127.0.0.1:8081", .model = "gemma3:12b",
        .timeout = 300, .max_concurrency = 4, .breaker_failures = 5,
        .breaker_cooldown = 10, .health_interval = 10,
        .context_tokens = 8192};
    /* The seed's classes, now with executors. */
    want.exec[0] = (struct gq_class_exec){GQ_EXEC_CHAT, 1, 2.0, ""};
    want.exec[1] = (struct gq_class_exec){
        GQ_EXEC_TRANSCRIBE, 0, 2.0, "/srv/recordings:/srv/uploads"};
    want.exec[2] = (struct gq_class_exec){GQ_EXEC_SUMMARIZE, 1, 2.0, ""};
    want.nmodels = 1;
    snprintf(want.model_names[0], sizeof want.model_names[0], "gemma3:12b");
    want.model_class[0] = 0;
    snprintf(want.callback_secret, sizeof want.callback_secret, "s3cr3t");
    want.callback_attempts = 8;

    if (load_text(t, &got, example_ini) != 0)
        fail_msg("%s", t->err);
    assert_config_equal(&got, &want);
    assert_int_equal(gq_config_check(&got, t->err, sizeof t->err), 0);

    /* Written out and read back, it is the same. */
    format_config(&got, text, sizeof text);
    if (load_text(t, &again, text) != 0)
        fail_msg("%s\n%s", t->err, text);
    assert_config_equal(&again, &want);
}

/*
 * References may point forward, resolve to the right index, and a
 * problem with what they point at is reported once, not again at them.
 */
static void
test_references(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char want[1024];
    const char *p;

    assert_int_equal(load_text(t, &c,
                               "[models]\n"
                               "llama3.2:3b = b\n"
                               "qwen=c\n"
                               "[class a]\n"
                               "[class b]\n"
                               "executor = chat\n"
                               "backend = ol\n"
                               "[class c]\n"
                               "executor = Summarize\n"
                               "backend = oa\n"
                               "[backend wh]\ntype = whisper-cpp\n"
                               "url = http://h:1\n"
                               "[backend oa]\ntype = OpenAI\n"
                               "url = http://h:2\n"
                               "[backend ol]\ntype = ollama\n"
                               "url = http://h:3\n"),
                     0);
    assert_int_equal(c.nbackends, 3);
    assert_int_equal(c.backends[1].type, GQ_BACKEND_OPENAI);
    assert_int_equal(c.exec[0].executor, GQ_EXEC_WORKER);
    assert_int_equal(c.exec[0].backend, -1);
    assert_int_equal(c.exec[1].executor, GQ_EXEC_CHAT);
    assert_int_equal(c.exec[1].backend, 2);
    assert_int_equal(c.exec[2].executor, GQ_EXEC_SUMMARIZE);
    assert_int_equal(c.exec[2].backend, 1);
    assert_int_equal(c.nmodels, 2);
    assert_string_equal(c.model_names[0], "llama3.2:3b");
    assert_int_equal(c.model_class[0], 1);
    assert_string_equal(c.model_names[1], "qwen");
    assert_int_equal(c.model_class[1], 2);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);

    /* Without [class] sections, [models] names the seed's classes. */
    assert_int_equal(load_text(t, &c, "[models]\nm = summarization\n"), 0);
    assert_int_equal(c.nclasses, 3);
    assert_int_equal(c.model_class[0], 2);

    /* A backend whose type is missing or bad: only that is reported. */
    assert_int_equal(load_text(t, &c,
                               "[class a]\n"           /* 1 */
                               "executor = chat\n"     /* 2 */
                               "backend = x\n"         /* 3 */
                               "[class b]\n"           /* 4 */
                               "executor = transcribe\n" /* 5 */
                               "backend = y\n"         /* 6 */
                               "[class c]\n"           /* 7 */
                               "executor = transcribe\n" /* 8 */
                               "backend = \n"          /* 9 */
                               "[class d]\n"           /* 10 */
                               "executor = bogus\n"    /* 11 */
                               "backend = x\n"         /* 12 */
                               "[backend x]\n"         /* 13 */
                               "url = http://h:1\n"    /* 14 */
                               "[backend y]\n"         /* 15 */
                               "type = grpc\n"         /* 16 */
                               "url = http://h:1\n"),  /* 17 */
                     GQ_EINVAL);
    p = t->path;
    snprintf(want, sizeof want,
             "%s:9: backend: missing value\n"
             "%s:11: executor: 'bogus' is not one of transcribe, summarize, "
             "chat or worker\n"
             "%s:16: type: 'grpc' is not one of whisper-cpp, openai or "
             "ollama\n"
             "%s:13: [backend x] has no type: write type = whisper-cpp, "
             "openai or ollama",
             p, p, p, p);
    assert_string_equal(t->err, want);
}

/*
 * Errors of references come after those of single lines (they are found
 * once the file is read), each at its line; c stays the defaults.
 */
static void
test_reference_errors_come_last(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;
    char want[2048];
    const char *p;

    assert_int_equal(load_text(t, &c,
                               "[models]\n"                  /* 1 */
                               "gemma3:12b = chat\n"         /* 2 */
                               "[class chat]\n"              /* 3 */
                               "executor = chat\n"           /* 4 */
                               "[class stt]\n"               /* 5 */
                               "executor = transcribe\n"     /* 6 */
                               "backend = whisper\n"         /* 7 */
                               "max_hold = 0\n"              /* 8 */
                               "[class sum]\n"               /* 9 */
                               "executor = summarize\n"      /* 10 */
                               "backend = w\n"               /* 11 */
                               "[backend w]\n"               /* 12 */
                               "type = whisper-cpp\n"        /* 13 */
                               "[models]\n"                  /* 14 */
                               "llama = sum\n"               /* 15 */
                               "[callbacks]\n"               /* 16 */
                               "attempts = 0\n"),            /* 17 */
                     GQ_EINVAL);
    p = t->path;
    snprintf(want, sizeof want,
             "%s:8: max_hold must be > 0, got 0\n"
             "%s:14: duplicate section [models] (first on line 1)\n"
             "%s:17: attempts must be >= 1, got 0\n"
             "%s:12: [backend w] has no url: write url = http://HOST:PORT\n"
             "%s:3: class chat: executor chat needs an openai or ollama "
             "backend: set backend = NAME\n"
             "%s:7: unknown backend 'whisper' (no [backend whisper] "
             "section)\n"
             "%s:9: class sum: executor summarize needs an openai or ollama "
             "backend, but backend 'w' is whisper-cpp",
             p, p, p, p, p, p, p);
    assert_string_equal(t->err, want);
    gq_config_defaults(&d);
    assert_config_equal(&c, &d);
}

/* [models]: names with ':' and '/', comments, '=' without spaces. */
static void
test_model_names(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char text[512], name[160];

    assert_int_equal(load_text(t, &c,
                               "[models]\n"
                               "gemma3:12b = chatbot ; the default\n"
                               "  hf.co/org/x-GGUF:Q4_K_M=chatbot\n"
                               "; a comment\n"
                               "Gemma3:12B: = summarization\n"),
                     0);
    assert_int_equal(c.nmodels, 3);
    assert_string_equal(c.model_names[0], "gemma3:12b");
    assert_int_equal(c.model_class[0], 0);
    assert_string_equal(c.model_names[1], "hf.co/org/x-GGUF:Q4_K_M");
    assert_int_equal(c.model_class[1], 0);
    /* Names are case-sensitive: this is another model. */
    assert_string_equal(c.model_names[2], "Gemma3:12B:");
    assert_int_equal(c.model_class[2], 2);

    /* 127 bytes is the longest name. */
    memset(name, 'm', 127);
    name[127] = '\0';
    snprintf(text, sizeof text, "[models]\n%s = chatbot\n", name);
    assert_int_equal(load_text(t, &c, text), 0);
    assert_string_equal(c.model_names[0], name);
}

/* At most GQ_MAX_BACKENDS backends and GQ_MAX_MODELS models. */
static void
test_backend_and_model_limits(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    static char text[16384];
    char want[256];
    size_t n = 0;
    int i;

    for (i = 0; i < GQ_MAX_BACKENDS; i++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "[backend b%d]\ntype = openai\n"
                              "url = http://h:%d\n", i, 1000 + i);
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.nbackends, GQ_MAX_BACKENDS);
    assert_string_equal(c.backends[GQ_MAX_BACKENDS - 1].url,
                        "http://h:1015");
    snprintf(text + n, sizeof text - n, "[backend one-more]\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want, "%s:%d: too many backends (at most %d)",
             t->path, 3 * GQ_MAX_BACKENDS + 1, GQ_MAX_BACKENDS);
    assert_string_equal(t->err, want);

    n = (size_t)snprintf(text, sizeof text, "[models]\n");
    for (i = 0; i < GQ_MAX_MODELS; i++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "m%d = transcription\n", i);
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.nmodels, GQ_MAX_MODELS);
    assert_int_equal(c.model_class[GQ_MAX_MODELS - 1], 1);
    snprintf(text + n, sizeof text - n, "one-more = chatbot\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want, "%s:%d: too many models (at most %d)",
             t->path, GQ_MAX_MODELS + 2, GQ_MAX_MODELS);
    assert_string_equal(t->err, want);
}

static void
test_url_forms(void **state)
{
    static const char *good[] = {
        "http://127.0.0.1:8080", "https://gpu-box.example.org:443",
        "http://[::1]:11434", "https://[fe80::1%eth0]:1",
        "http://localhost:65535",
    };
    struct tmp *t = *state;
    struct gq_config c;
    char text[256];
    size_t i;

    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text,
                 "[backend b]\ntype = ollama\nurl = %s\n", good[i]);
        if (load_text(t, &c, text) != 0)
            fail_msg("%s: %s", good[i], t->err);
        assert_string_equal(c.backends[0].url, good[i]);
    }
}

static void
test_inline_comments(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    assert_int_equal(load_text(t, &c,
                               "; leading comment\n"
                               "# another\n"
                               "[gpu] ; the GPU\n"
                               "slots = 4 ; four\n"
                               "  ; indented comment\n"
                               "[server]\n"
                               "data_dir = /a;b ; a ';' without space "
                               "before it is data\n"
                               "listen=0.0.0.0:80\t;tab before\n"),
                     0);
    assert_int_equal(c.slots, 4);
    assert_string_equal(c.data_dir, "/a;b");
    assert_string_equal(c.listen, "0.0.0.0:80");

    /* '#' is a comment only at the start of a line. */
    assert_int_equal(load_text(t, &c, "[gpu]\nslots = 2 # two\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: slots: '2 # two' is not an "
                                   "integer"));
}

/* Indentation, CRLF endings, a byte order mark and ':' as separator. */
static void
test_lenient_syntax(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    assert_int_equal(load_text(t, &c,
                               "\xEF\xBB\xBF[gpu]\r\n"
                               "    slots: 3\r\n"
                               "[ class  a-b ]\r\n"
                               "\tweight = 2\r\n"
                               "[class c]\r\n"),
                     0);
    assert_int_equal(c.slots, 3);
    assert_int_equal(c.nclasses, 2);
    assert_string_equal(c.classes[0].name, "a-b");
    assert_dbl_equal(c.classes[0].weight, 2);
    assert_string_equal(c.classes[1].name, "c");
}

struct bad_case {
    const char *text;
    int line;
    const char *msg;            /* expected after "PATH:LINE: " */
};

static const struct bad_case bad_cases[] = {
    {"[gpu]\nslots = 1\n[nosuch]\nx = 1\n", 3, "unknown section [nosuch]"},
    {"[server]\nlisten = 1.2.3.4:5\ncolour = red\n", 3,
     "unknown key 'colour' in [server]"},
    {"[class a]\nweigth = 2\n", 2, "unknown key 'weigth' in [class a]"},
    {"slots = 1\n", 1, "'slots' is outside any section"},
    {"[gpu]\nslots = 1x\n", 2, "slots: '1x' is not an integer"},
    {"[gpu]\nslots = 1.0\n", 2, "slots: '1.0' is not an integer"},
    {"[gpu]\nslots =\n", 2, "slots: missing value"},
    {"[gpu]\nslots = 0\n", 2, "slots must be from 1 to 256, got 0"},
    {"[gpu]\nslots = 257\n", 2, "slots must be from 1 to 256, got 257"},
    {"[gpu]\nslots = 99999999999999999999\n", 2,
     "slots: 99999999999999999999 is out of range"},
    {"[class a]\nweight = abc\n", 2, "weight: 'abc' is not a number"},
    {"[class a]\nweight = nan\n", 2, "weight: 'nan' is not a number"},
    {"[class a]\nweight = 0x10\n", 2, "weight: '0x10' is not a number"},
    {"[class a]\nweight = 1e999\n", 2, "weight: 1e999 is out of range"},
    {"[class a]\nweight = 0\n", 2, "weight must be > 0, got 0"},
    {"[class a]\nweight = -3\n", 2, "weight must be > 0, got -3"},
    {"[class a]\nmax_attempts = 0\n", 2, "max_attempts must be >= 1, got 0"},
    {"[class a]\nmax_queue = 0\n", 2, "max_queue must be >= 1, got 0"},
    {"[class a]\nqueue_timeout = -1\n", 2,
     "queue_timeout must be >= 0, got -1"},
    {"[class a]\nlease_ttl = 0\n", 2, "lease_ttl must be > 0, got 0"},
    {"[class a]\nmax_consecutive = -1\n", 2,
     "max_consecutive must be >= 0, got -1"},
    {"[class a]\nbackoff_max = -1\n", 2, "backoff_max must be >= 0, got -1"},
    {"[server]\nrequest_timeout = 0\n", 2,
     "request_timeout must be > 0, got 0"},
    {"[server]\ndrain_timeout = -0.5\n", 2,
     "drain_timeout must be >= 0, got -0.5"},
    {"[server]\nmax_body = 0\n", 2, "max_body must be >= 1, got 0"},
    {"[server]\ndata_dir =\n", 2, "data_dir: missing value"},
    {"[class a]\n[class b]\n[class a]\n", 3,
     "duplicate section [class a] (first on line 1)"},
    {"[gpu]\nslots = 2\n[gpu]\n", 3,
     "duplicate section [gpu] (first on line 1)"},
    {"[class bad name]\n", 1,
     "bad class name 'bad name': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class a/b]\n", 1,
     "bad class name 'a/b': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class "
     "a234567890123456789012345678901234567890123456789012345678901234]\n",
     1, "bad class name 'a2345678901234567890123456789012345678901234567890"
        "12345678901234': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[class]\n", 1, "missing class name: write [class NAME]"},
    {"[classy]\n", 1, "unknown section [classy]"},
    {"[server]\nlisten = localhost\n", 2,
     "listen 'localhost' is not HOST:PORT: missing :PORT"},
    {"[server]\nlisten = 127.0.0.1:65536\n", 2,
     "listen '127.0.0.1:65536' is not HOST:PORT: the port must be a number "
     "from 0 to 65535"},
    {"[server]\nlisten = 127.0.0.1:http\n", 2,
     "listen '127.0.0.1:http' is not HOST:PORT: the port must be a number "
     "from 0 to 65535"},
    {"[server]\nlisten = ::1:7707\n", 2,
     "listen '::1:7707' is not HOST:PORT: an IPv6 address must be in "
     "brackets, e.g. [::1]:7707"},
    {"[server]\nlisten = [::1:7707\n", 2,
     "listen '[::1:7707' is not HOST:PORT: missing ']' after the IPv6 "
     "address"},
    {"[server]\nlisten = :7707\n", 2,
     "listen ':7707' is not HOST:PORT: empty host (0.0.0.0 or [::] listens "
     "on all interfaces)"},
    {"[server]\nsynchronous = extra\n", 2,
     "synchronous: 'extra' is not one of full, normal or off"},
    {"[scheduler]\nshare_by = money\n", 2,
     "share_by: 'money' is not one of time or grants"},
    {"[gpu]\nslots = 1\nslots = 2\n", 3,
     "slots is set twice (first on line 2)"},
    {"[gpu]\n\nslots\n", 3, "expected 'key = value' or '[section]'"},
    {"[gpu]\n= 2\n", 2, "missing key before '='"},
    {"[gpu\nslots = 1\n", 1, "missing ']' at the end of the section name"},
    {"[gpu] slots = 1\n", 1, "unexpected text after ']'"},
    {"[gpu]\n[class x ; y]\n", 2,
     "missing ']' at the end of the section name"},

    /* [backend NAME] */
#define W "[backend w]\ntype = whisper-cpp\nurl = http://h:1\n"
    {"[backend]\n", 1, "missing backend name: write [backend NAME]"},
    {"[backendx]\n", 1, "unknown section [backendx]"},
    {"[backend a/b]\n", 1,
     "bad backend name 'a/b': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[backend "
     "a234567890123456789012345678901234567890123456789012345678901234]\n",
     1, "bad backend name 'a2345678901234567890123456789012345678901234567890"
        "12345678901234': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {W "[backend w]\n", 4, "duplicate section [backend w] (first on line 1)"},
    {W "port = 80\n", 4, "unknown key 'port' in [backend w]"},
    {W "url = http://h:2\n", 4, "url is set twice (first on line 3)"},
    {"[backend w]\ntype = grpc\nurl = http://h:1\n", 2,
     "type: 'grpc' is not one of whisper-cpp, openai or ollama"},
    {"[backend w]\nurl = http://h:1\n", 1,
     "[backend w] has no type: write type = whisper-cpp, openai or ollama"},
    {"[backend w]\ntype = openai\n", 1,
     "[backend w] has no url: write url = http://HOST:PORT"},
    {"[backend w]\ntype = openai\nurl = ftp://h:1\n", 3,
     "url 'ftp://h:1' is not http(s)://HOST:PORT: it must start with "
     "http:// or https://"},
    {"[backend w]\ntype = openai\nurl = 127.0.0.1:8080\n", 3,
     "url '127.0.0.1:8080' is not http(s)://HOST:PORT: it must start with "
     "http:// or https://"},
    {"[backend w]\ntype = openai\nurl = http://h\n", 3,
     "url 'http://h' is not http(s)://HOST:PORT: missing :PORT"},
    {"[backend w]\ntype = openai\nurl = http://h:0\n", 3,
     "url 'http://h:0' is not http(s)://HOST:PORT: the port must be a "
     "number from 1 to 65535"},
    {"[backend w]\ntype = openai\nurl = https://h:65536\n", 3,
     "url 'https://h:65536' is not http(s)://HOST:PORT: the port must be a "
     "number from 1 to 65535"},
    {"[backend w]\ntype = openai\nurl = http://:80\n", 3,
     "url 'http://:80' is not http(s)://HOST:PORT: empty host"},
    {"[backend w]\ntype = openai\nurl = http://::1:80\n", 3,
     "url 'http://::1:80' is not http(s)://HOST:PORT: an IPv6 address must "
     "be in brackets, e.g. http://[::1]:8080"},
    {"[backend w]\ntype = openai\nurl = http://u@h:80\n", 3,
     "url 'http://u@h:80' is not http(s)://HOST:PORT: bad character in the "
     "host"},
    {"[backend w]\ntype = openai\nurl = http://h:80/v1\n", 3,
     "url 'http://h:80/v1' is not http(s)://HOST:PORT: nothing may follow "
     "the port (no path, not even '/')"},
    {"[backend w]\ntype = openai\nurl = http://h:80/\n", 3,
     "url 'http://h:80/' is not http(s)://HOST:PORT: nothing may follow "
     "the port (no path, not even '/')"},
    {W "timeout = 0\n", 4, "timeout must be > 0, got 0"},
    {W "max_concurrency = 0\n", 4,
     "max_concurrency must be from 1 to 64, got 0"},
    {W "max_concurrency = 65\n", 4,
     "max_concurrency must be from 1 to 64, got 65"},
    {W "model =\n", 4, "model: missing value"},
    {W "breaker_failures = 0\n", 4, "breaker_failures must be >= 1, got 0"},
    {W "breaker_cooldown = 0\n", 4, "breaker_cooldown must be > 0, got 0"},
    {W "health_interval = -1\n", 4, "health_interval must be > 0, got -1"},
    {W "context_tokens = 255\n", 4,
     "context_tokens must be >= 256, got 255"},

    /* [class NAME]'s executor keys */
    {"[class a]\nexecutor = gpu\n", 2,
     "executor: 'gpu' is not one of transcribe, summarize, chat or worker"},
    {"[class a]\nexecutor = transcribe\n", 1,
     "class a: executor transcribe needs a whisper-cpp backend: set "
     "backend = NAME"},
    {"[class a]\n\nexecutor = summarize\n", 1,
     "class a: executor summarize needs an openai or ollama backend: set "
     "backend = NAME"},
    {"[class a]\nexecutor = chat\n", 1,
     "class a: executor chat needs an openai or ollama backend: set "
     "backend = NAME"},
    {"[class a]\nmax_hold = 1\nbackend = nope\n", 3,
     "unknown backend 'nope' (no [backend nope] section)"},
    {W "[class a]\nexecutor = chat\nbackend = w\n", 4,
     "class a: executor chat needs an openai or ollama backend, but backend "
     "'w' is whisper-cpp"},
    {"[class a]\nexecutor = transcribe\nbackend = llm\n"
     "[backend llm]\ntype = ollama\nurl = http://h:1\n", 1,
     "class a: executor transcribe needs a whisper-cpp backend, but backend "
     "'llm' is ollama"},
    {"[class a]\nbackend =\n", 2, "backend: missing value"},
    {"[class a]\nbackend = "
     "a234567890123456789012345678901234567890123456789012345678901234\n",
     2, "backend is too long (at most 63 characters)"},
    {"[class a]\nmax_hold = 0\n", 2, "max_hold must be > 0, got 0"},
    {"[class a]\nmax_hold = x\n", 2, "max_hold: 'x' is not a number"},
    {"[class a]\naudio_roots = srv/rec\n", 2,
     "audio_roots: 'srv/rec' is not an absolute path"},
    {"[class a]\naudio_roots = /srv/rec:rel,/x\n", 2,
     "audio_roots: 'rel' is not an absolute path"},
    {"[class a]\naudio_roots = /srv/rec, /x\n", 2,
     "audio_roots: ' /x' is not an absolute path"},
    {"[class a]\naudio_roots = /a,,/b\n", 2,
     "audio_roots '/a,,/b' has an empty entry"},
    {"[class a]\naudio_roots = /a:\n", 2,
     "audio_roots '/a:' has an empty entry"},

    /* [models] */
    {"[models]\nm = nosuch\n", 2, "model 'm': unknown class 'nosuch'"},
    {"[models]\nm = chatbot\nm = summarization\n", 3,
     "model 'm' is set twice (first on line 2)"},
    {"[models]\na b = chatbot\n", 2,
     "bad model name 'a b': no spaces or control characters"},
    {"[models]\ngemma3:12b chatbot\n", 2,
     "expected 'MODEL = CLASS' (only '=' separates them in [models])"},
    {"[models]\ngemma3: chatbot\n", 2,
     "expected 'MODEL = CLASS' (only '=' separates them in [models])"},
    {"[models]\nm =\n", 2, "model 'm': missing class"},
    {"[models]\n= chatbot\n", 2, "missing key before '='"},
    {"[models]\n[gpu]\n[models]\n", 3,
     "duplicate section [models] (first on line 1)"},
    {"[models]\n"
     "m2345678901234567890123456789012345678901234567890123456789012345678"
     "901234567890123456789012345678901234567890123456789012345678 = a\n",
     2, "model name 'm2345678901234567890123456789012345678901234567890123456"
        "789012345678901234567890123456789012345678901234567890123456789012"
        "345678' is too long (at most 127 characters)"},

    /* [callbacks] */
    {"[callbacks]\nattempts = 0\n", 2, "attempts must be >= 1, got 0"},
    {"[callbacks]\nsecret =\n", 2, "secret: missing value"},
    {"[callbacks]\nretries = 3\n", 2, "unknown key 'retries' in [callbacks]"},
    {"[callbacks]\n[callbacks]\n", 2,
     "duplicate section [callbacks] (first on line 1)"},

    /* access control: [server], [auth], [token NAME] */
    {"[server]\nallow_remote = maybe\n", 2,
     "allow_remote: 'maybe' is not one of true, false, yes, no, on or off"},
    {"[server]\nunix_socket_mode = 0999\n", 2,
     "unix_socket_mode: '0999' is not an octal mode (such as 0660)"},
    {"[server]\nunix_socket_mode = rw\n", 2,
     "unix_socket_mode: 'rw' is not an octal mode (such as 0660)"},
    {"[server]\nunix_socket_mode = 1777\n", 2,
     "unix_socket_mode must be an octal mode from 0000 to 0777, got 1777"},
    {"[server]\nunix_socket = /run/"
     "a23456789012345678901234567890123456789012345678901234567890"
     "1234567890123456789012345678901234567890123456\n", 2,
     "unix_socket is too long (at most 107 characters)"},
    {"[auth]\ntokens = 3\n", 2, "unknown key 'tokens' in [auth]"},
    {"[auth]\ntoken_file = /tmp/gq_config_no/such/file\n", 2,
     "token_file /tmp/gq_config_no/such/file: cannot open: No such file "
     "or directory"},
    {"[token]\nrole = admin\n", 1, "missing token name: write [token NAME]"},
    {"[token a b]\n", 1,
     "bad token name 'a b': use 1 to 63 of A-Z a-z 0-9 _ . -"},
    {"[token a]\nrole = admin\n", 1,
     "[token a] has no secret: write secret = ... or secret_file = PATH"},
    {"[token a]\nsecret = 0123456789abcdef\n", 1,
     "[token a] has no role: write role = submit, worker or admin"},
    {"[token a]\nsecret = 0123456789abcde\nrole = admin\n", 2,
     "secret is too short (at least 16 characters; 32 random ones are "
     "better)"},
    {"[token a]\nsecret = 01234567 89abcdef\nrole = admin\n", 2,
     "secret may only hold visible ASCII characters (no spaces)"},
    {"[token a]\nsecret = 0123456789abcdef\nrole = root\n", 3,
     "role: 'root' is not one of submit, worker or admin"},
    {"[token a]\nsecret = 0123456789abcdef\nsecret_file = /x\n"
     "role = admin\n", 3,
     "[token a] has both secret and secret_file: keep one"},
    {"[token a]\nsecret_file = /tmp/gq_config_no/such/secret\n"
     "role = admin\n", 2,
     "token a: secret_file /tmp/gq_config_no/such/secret: cannot open: No "
     "such file or directory"},
    {"[token a]\nsecret = 0123456789abcdef\nrole = submit\n"
     "classes = chatbot, nosuch\n", 4, "token a: unknown class 'nosuch'"},
    {"[token a]\nsecret = 0123456789abcdef\nrole = submit\n"
     "classes = chatbot,,summarization\n", 4,
     "token a: classes 'chatbot,,summarization' has an empty entry"},
    {"[token a]\nsecret = 0123456789abcdef\nrole = admin\n[token a]\n", 4,
     "duplicate section [token a] (first on line 1)"},
    {"[token a]\nsecret = 0123456789abcdef\nrole = admin\nrole = admin\n",
     4, "role is set twice (first on line 3)"},
#undef W
};

/* Each kind of error gives one line: PATH:LINE: message. */
static void
test_each_error_has_its_line(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char want[1024];
    size_t i;

    for (i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *b = &bad_cases[i];
        int r = load_text(t, &c, b->text);
        snprintf(want, sizeof want, "%s:%d: %s", t->path, b->line, b->msg);
        if (r != GQ_EINVAL || strcmp(t->err, want) != 0)
            fail_msg("case %zu: %s\n got %d '%s'\nwant %d '%s'", i, b->text,
                     r, t->err, GQ_EINVAL, want);
    }
}

/* A key line longer than inih's buffer is an error, not a split line. */
static void
test_long_line(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char text[1200], want[256];
    int n;

    n = snprintf(text, sizeof text, "[server]\ndata_dir = ");
    memset(text + n, 'd', 500);
    snprintf(text + n + 500, sizeof text - (size_t)n - 500,
             "\n[gpu]\nslots = 0\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want,
             "%s:2: line too long (at most 197 characters before a "
             "comment)\n%s:4: slots must be from 1 to 256, got 0",
             t->path, t->path);
    assert_string_equal(t->err, want);

    /* A long comment does not count. */
    n = snprintf(text, sizeof text, "[gpu]\nslots = 5 ;");
    memset(text + n, 'c', 500);
    text[n + 500] = '\0';
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.slots, 5);
}

/* All errors come back, in file order; c is left at the defaults. */
static void
test_multiple_errors(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;
    char want[2048];
    const char *p;

    assert_int_equal(load_text(t, &c,
                               "[server]\n"          /* 1 */
                               "listen = nope\n"     /* 2 */
                               "data_dir = /tmp\n"   /* 3 */
                               "[gpu]\n"             /* 4 */
                               "slots = 0\n"         /* 5 */
                               "[class ok]\n"        /* 6 */
                               "weight = -1\n"       /* 7 */
                               "max_attempts = x\n"  /* 8 */
                               "[bogus]\n"           /* 9 */
                               "anything = 1\n"      /* 10 */
                               "[class ok]\n"),      /* 11 */
                     GQ_EINVAL);
    p = t->path;
    snprintf(want, sizeof want,
             "%s:2: listen 'nope' is not HOST:PORT: missing :PORT\n"
             "%s:5: slots must be from 1 to 256, got 0\n"
             "%s:7: weight must be > 0, got -1\n"
             "%s:8: max_attempts: 'x' is not an integer\n"
             "%s:9: unknown section [bogus]\n"
             "%s:11: duplicate section [class ok] (first on line 6)",
             p, p, p, p, p, p);
    assert_string_equal(t->err, want);
    assert_int_equal(count_lines(t->err), 6);

    gq_config_defaults(&d);
    assert_config_equal(&c, &d);
}

/* A small buffer holds whole lines and says how many were left out. */
static void
test_error_truncation(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char small[100], tiny[12];
    size_t plen;

    write_file(t, "[gpu]\nslots = 0\n[a]\n[b]\n[c]\n[d]\n");
    plen = strlen(t->path);
    assert_int_equal(gq_config_load(&c, t->path, small, sizeof small),
                     GQ_EINVAL);
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(strncmp(small, t->path, plen), 0);
    assert_non_null(strstr(small, "more errors)"));
    /* Every line but the note is whole. */
    assert_non_null(strstr(small, ":2: slots must be from 1 to 256, got 0"));

    assert_int_equal(gq_config_load(&c, t->path, tiny, sizeof tiny),
                     GQ_EINVAL);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
    assert_int_equal(strncmp(tiny, t->path, sizeof tiny - 1), 0);

    assert_int_equal(gq_config_load(&c, t->path, NULL, 0), GQ_EINVAL);
}

/* A file's classes replace the seed's; other sections merge by key. */
static void
test_file_classes_replace_defaults(void **state)
{
    struct tmp *t = *state;
    struct gq_config c, d;

    gq_config_defaults(&d);
    assert_int_equal(load_text(t, &c,
                               "[server]\ndata_dir = /data\n"
                               "[class batch]\npriority = -1\n"
                               "[class interactive]\n"),
                     0);
    assert_string_equal(c.listen, d.listen);
    assert_string_equal(c.data_dir, "/data");
    assert_int_equal(c.slots, 1);
    assert_int_equal(c.nclasses, 2);
    assert_string_equal(c.classes[0].name, "batch");
    assert_int_equal(c.classes[0].priority, -1);
    /* The rest take the per-class defaults, not the seed chatbot's. */
    assert_string_equal(c.classes[1].name, "interactive");
    assert_int_equal(c.classes[1].priority, 0);
    assert_dbl_equal(c.classes[1].weight, 1);
    assert_int_equal(c.classes[1].max_consecutive, 0);
    assert_int_equal(c.classes[1].max_queue, 1000);
    assert_dbl_equal(c.classes[1].queue_timeout, 0);
    assert_dbl_equal(c.classes[1].lease_ttl, 120);
    assert_int_equal(c.classes[1].max_attempts, 3);
    assert_dbl_equal(c.backoff_base[1], 1);
    assert_dbl_equal(c.backoff_max[1], 300);
    assert_string_equal(c.classes[2].name, "");

    /* Without class sections the seed's classes stay. */
    assert_int_equal(load_text(t, &c, "[gpu]\nslots = 3\n"), 0);
    assert_int_equal(c.slots, 3);
    d.slots = 3;
    assert_config_equal(&c, &d);
}

static void
test_class_limits(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    static char text[8192];
    char want[256];
    size_t n = 0;
    int i;

    for (i = 0; i < GQ_MAX_CLASSES; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "[class c%d]\n", i);
    assert_int_equal(load_text(t, &c, text), 0);
    assert_int_equal(c.nclasses, GQ_MAX_CLASSES);
    assert_string_equal(c.classes[GQ_MAX_CLASSES - 1].name, "c63");

    snprintf(text + n, sizeof text - n, "[class one-more]\nweight = 2\n");
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want, "%s:%d: too many classes (at most %d)",
             t->path, GQ_MAX_CLASSES + 1, GQ_MAX_CLASSES);
    assert_string_equal(t->err, want);

    /* 63 characters is the longest name. */
    assert_int_equal(load_text(t, &c,
                               "[class a23456789012345678901234567890123456"
                               "789012345678901234567890123]\n"),
                     0);
    assert_int_equal(strlen(c.classes[0].name), 63);
}

static void
test_share_by(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    gq_config_defaults(&c);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = grants\n"), 0);
    assert_int_equal(c.share_by, GQ_SHARE_GRANTS);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = time\n"), 0);
    assert_int_equal(c.share_by, GQ_SHARE_TIME);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = Grants\n"),
                     0);
    assert_int_equal(c.share_by, GQ_SHARE_GRANTS);
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare_by = 1\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: share_by: '1' is not one of time "
                                   "or grants"));
    assert_int_equal(load_text(t, &c, "[scheduler]\nshare = time\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: unknown key 'share' in "
                                   "[scheduler]"));
}

static void
test_synchronous(void **state)
{
    static const struct {
        const char *word;
        int value;
    } cases[] = {{"full", 2}, {"normal", 1}, {"off", 0}, {"OFF", 0}};
    struct tmp *t = *state;
    struct gq_config c;
    char text[64];
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "[server]\nsynchronous = %s\n",
                 cases[i].word);
        assert_int_equal(load_text(t, &c, text), 0);
        assert_int_equal(c.synchronous, cases[i].value);
    }
    assert_int_equal(load_text(t, &c, "[server]\nsynchronous = 2\n"),
                     GQ_EINVAL);
    assert_non_null(strstr(t->err, ":2: synchronous: '2' is not one of "
                                   "full, normal or off"));
}

static void
test_listen_forms(void **state)
{
    static const char *good[] = {
        "127.0.0.1:0", "0.0.0.0:65535", "localhost:7707", "[::1]:7707",
        "[::]:80", "[fe80::1%eth0]:9", "gpu-box.example.org:1",
    };
    struct tmp *t = *state;
    struct gq_config c;
    char text[128];
    size_t i;

    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "[server]\nlisten = %s\n", good[i]);
        if (load_text(t, &c, text) != 0)
            fail_msg("%s: %s", good[i], t->err);
        assert_string_equal(c.listen, good[i]);
    }
}

static void
test_cannot_open(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    const char *path = "/tmp/gq_config_does/not/exist.ini";

    assert_int_equal(gq_config_load(&c, path, t->err, sizeof t->err),
                     GQ_EIO);
    assert_string_equal(t->err, "/tmp/gq_config_does/not/exist.ini: cannot "
                                "open: No such file or directory");

    /* A directory opens but cannot be read. */
    assert_int_equal(gq_config_load(&c, "/tmp", t->err, sizeof t->err),
                     GQ_EIO);
    assert_string_equal(t->err, "/tmp: cannot read: Is a directory");
}

static void
test_check(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    gq_config_defaults(&c);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
    assert_string_equal(t->err, "");

    /* What command-line flags can break. */
    snprintf(c.listen, sizeof c.listen, "127.0.0.1");
    c.slots = 0;
    snprintf(c.classes[2].name, sizeof c.classes[2].name, "chatbot");
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "listen '127.0.0.1' is not HOST:PORT: missing "
                        ":PORT\n"
                        "slots must be from 1 to 256, got 0\n"
                        "class chatbot is defined twice");

    gq_config_defaults(&c);
    c.nclasses = 0;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err, "no class is configured");

    gq_config_defaults(&c);
    c.slots = GQ_MAX_SLOTS + 1;
    c.classes[1].weight = 0;
    c.data_dir[0] = '\0';
    c.synchronous = 5;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "data_dir must not be empty\n"
                        "synchronous must be full, normal or off, got 5\n"
                        "slots must be from 1 to 256, got 257\n"
                        "class transcription: weight must be > 0, got 0");

    gq_config_defaults(&c);
    c.classes[0].name[0] = '\0';
    assert_int_equal(gq_config_check(&c, NULL, 0), GQ_EINVAL);
}

/* gq_config_check on backends, executors, models and callbacks. */
static void
test_check_references(void **state)
{
    static const char many[] = "too many backends: 17 (at most 16)\n"
                               "backend 3: bad name '': use 1 to 63 of "
                               "A-Z a-z 0-9 _ . -\n";
    struct tmp *t = *state;
    struct gq_config c, good;

    assert_int_equal(load_text(t, &good, example_ini), 0);
    c = good;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);

    /* Each key of a backend is in range. */
    c.backends[0].type = 7;
    snprintf(c.backends[0].url, sizeof c.backends[0].url, "http://h");
    c.backends[1].url[0] = '\0';
    c.backends[1].max_concurrency = 65;
    c.backends[1].context_tokens = 0;
    c.callback_attempts = 0;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "attempts must be >= 1, got 0\n"
                        "backend whisper: type must be whisper-cpp, openai "
                        "or ollama, got 7\n"
                        "backend whisper: url 'http://h' is not "
                        "http(s)://HOST:PORT: missing :PORT\n"
                        "backend llm: url must not be empty\n"
                        "backend llm: max_concurrency must be from 1 to 64, "
                        "got 65\n"
                        "backend llm: context_tokens must be >= 256, got 0");

    /* Names, counts and the references between sections. */
    c = good;
    snprintf(c.backends[1].name, sizeof c.backends[1].name, "whisper");
    c.exec[0].backend = 2;
    c.exec[1].executor = GQ_EXEC_CHAT;
    c.exec[2].backend = -1;
    c.exec[2].max_hold = 0;
    snprintf(c.exec[2].audio_roots, sizeof c.exec[2].audio_roots, "rel");
    c.model_class[0] = 3;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "backend whisper is defined twice\n"
                        "class chatbot: backend 2 does not exist\n"
                        "class transcription: executor chat needs an openai "
                        "or ollama backend, but backend 'whisper' is "
                        "whisper-cpp\n"
                        "class summarization: max_hold must be > 0, got 0\n"
                        "class summarization: audio_roots: 'rel' is not an "
                        "absolute path\n"
                        "class summarization: executor summarize needs an "
                        "openai or ollama backend: set backend = NAME\n"
                        "model gemma3:12b: class 3 does not exist");

    c = good;
    c.nbackends = GQ_MAX_BACKENDS + 1;
    c.nmodels = 2;
    snprintf(c.model_names[1], sizeof c.model_names[1], "gemma3:12b");
    c.model_class[1] = 0;
    c.exec[0].executor = 9;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    /* Only the first GQ_MAX_BACKENDS are looked at (14 have no name). */
    assert_int_equal(strncmp(t->err, many, sizeof many - 1), 0);
    assert_non_null(strstr(t->err, "\nbackend 16: bad name ''"));
    assert_null(strstr(t->err, "backend 17"));
    assert_non_null(strstr(t->err, "\nclass chatbot: executor must be "
                                   "transcribe, summarize, chat or worker, "
                                   "got 9\n"
                                   "model gemma3:12b is mapped twice"));
    assert_int_equal(count_lines(t->err), 1 + 14 + 2);

    c = good;
    c.nmodels = -1;
    c.nbackends = -2;
    snprintf(c.model_names[0], sizeof c.model_names[0], "a b");
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "bad number of backends: -2\n"
                        "class chatbot: backend 1 does not exist\n"
                        "class transcription: backend 0 does not exist\n"
                        "class summarization: backend 1 does not exist\n"
                        "bad number of models: -1");
    c.nmodels = 1;
    c.nbackends = 2;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "model 1: bad name 'a b': 1 to 127 characters, no "
                        "spaces or control characters");

    /* Flags never touch these, so a file that loads passes the check. */
    gq_config_defaults(&c);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
}

/* [token NAME] sections, a secret_file, and [auth] token_file. */
static void
test_tokens(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char text[1024];
    const char *aux;

    /* No token by default. */
    gq_config_defaults(&c);
    assert_int_equal(c.ntokens, 0);
    assert_int_equal(c.allow_remote, 0);
    assert_string_equal(c.unix_socket, "");
    assert_int_equal(c.unix_socket_mode, 0660);
    assert_string_equal(gq_role_str(GQ_ROLE_SUBMIT), "submit");
    assert_string_equal(gq_role_str(GQ_ROLE_WORKER), "worker");
    assert_string_equal(gq_role_str(GQ_ROLE_ADMIN), "admin");
    assert_string_equal(gq_role_str(GQ_ROLE_NONE), "none");

    /* The secret_file's first line, without its line end and blanks. */
    aux = write_aux(t, "  s3cret-from-a-file.0123  \r\nsecond line\n");
    snprintf(text, sizeof text,
             "[server]\n"
             "unix_socket = /run/gpuq/gpuq.sock\n"
             "unix_socket_mode = 660\n"
             "allow_remote = No\n"
             "[token ops]\n"
             "role = ADMIN\n"
             "secret_file = %s\n"
             "[token app]\n"
             "secret = 0123456789abcdef\n"
             "role = submit\n"
             "classes = summarization ,chatbot\n"
             "[token gpu-1]\n"
             "secret = fedcba9876543210\n"
             "role = worker\n"
             "classes = transcription\n",
             aux);
    if (load_text(t, &c, text) != 0)
        fail_msg("%s", t->err);
    assert_string_equal(c.unix_socket, "/run/gpuq/gpuq.sock");
    assert_int_equal(c.unix_socket_mode, 0660);
    assert_int_equal(c.allow_remote, 0);
    assert_int_equal(c.ntokens, 3);
    assert_string_equal(c.tokens[0].name, "ops");
    assert_int_equal(c.tokens[0].role, GQ_ROLE_ADMIN);
    assert_true(c.tokens[0].classes == GQ_ALL_CLASSES);
    assert_string_equal(c.tokens[0].secret, "s3cret-from-a-file.0123");
    assert_string_equal(c.tokens[1].name, "app");
    assert_int_equal(c.tokens[1].role, GQ_ROLE_SUBMIT);
    /* chatbot is class 0, summarization class 2 (the seed's order). */
    assert_true(c.tokens[1].classes == (1u << 0 | 1u << 2));
    assert_int_equal(c.tokens[2].role, GQ_ROLE_WORKER);
    assert_true(c.tokens[2].classes == 1u << 1);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);

    /* A token file: its lines come after the sections; a class may be
     * defined later in the configuration. */
    aux = write_aux(t, "# name role secret [classes]\n"
                       "\n"
                       "ci    submit  ci-secret-0123456789\n"
                       "  w2\tWorker\tw2-secret-0123456789 late,b\n"
                       "root admin r00t-secret-0123456789 # not a comment\n");
    snprintf(text, sizeof text,
             "[auth]\ntoken_file = %s\n"
             "[token app]\nsecret = 0123456789abcdef\nrole = submit\n"
             "[class b]\n[class late]\n",
             aux);
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    assert_string_equal(t->err + strlen(aux),
                        ":5: unexpected text after the classes (CLASSES is "
                        "one field: a,b,c)");
    aux = write_aux(t, "# name role secret [classes]\n"
                       "\n"
                       "ci    submit  ci-secret-0123456789\n"
                       "  w2\tWorker\tw2-secret-0123456789 late,b\n"
                       "root admin r00t-secret-0123456789#not-a-comment\n");
    if (load_text(t, &c, text) != 0)
        fail_msg("%s", t->err);
    assert_string_equal(c.token_file, aux);
    assert_int_equal(c.ntokens, 4);
    assert_string_equal(c.tokens[0].name, "app");
    assert_string_equal(c.tokens[1].name, "ci");
    assert_int_equal(c.tokens[1].role, GQ_ROLE_SUBMIT);
    assert_true(c.tokens[1].classes == GQ_ALL_CLASSES);
    assert_string_equal(c.tokens[1].secret, "ci-secret-0123456789");
    assert_string_equal(c.tokens[2].name, "w2");
    assert_int_equal(c.tokens[2].role, GQ_ROLE_WORKER);
    assert_true(c.tokens[2].classes == (1u << 0 | 1u << 1));
    assert_string_equal(c.tokens[3].secret,
                        "r00t-secret-0123456789#not-a-comment");
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
}

/* Every problem of a token file, at TOKENFILE:LINE. */
static void
test_token_file_errors(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;
    char text[256], want[2048];
    const char *aux;

    aux = write_aux(t, "ci submit\n"                           /* 1 */
                       "a.b boss 0123456789abcdef\n"           /* 2 */
                       "c submit short\n"                      /* 3 */
                       "d submit 0123456789abcdef nosuch\n"    /* 4 */
                       "app worker 0123456789abcdeg\n"         /* 5 */
                       "e/f admin 0123456789abcdef\n"          /* 6 */
                       "ok admin 0123456789abcdef chatbot\n"   /* 7 */
                       "ok admin 0123456789abcdef\n");         /* 8 */
    snprintf(text, sizeof text,
             "[token app]\nsecret = fedcba9876543210\nrole = admin\n"
             "[auth]\ntoken_file = %s\n",
             aux);
    assert_int_equal(load_text(t, &c, text), GQ_EINVAL);
    snprintf(want, sizeof want,
             "%s:1: expected 'NAME ROLE SECRET [CLASSES]'\n"
             "%s:2: token a.b: role 'boss' is not one of submit, worker or "
             "admin\n"
             "%s:3: token c: the secret is too short (at least 16 "
             "characters; 32 random ones are better)\n"
             "%s:4: token d: unknown class 'nosuch'\n"
             "%s:5: token app is defined twice\n"
             "%s:6: bad token name 'e/f': use 1 to 63 of A-Z a-z 0-9 _ . -\n"
             "%s:8: token ok is defined twice",
             aux, aux, aux, aux, aux, aux, aux);
    assert_string_equal(t->err, want);
    /* Nothing in the messages shows a secret. */
    assert_null(strstr(t->err, "0123456789abcde"));
    assert_null(strstr(t->err, "fedcba"));
}

/* Beyond loopback only with tokens or allow_remote (after the flags). */
static void
test_check_remote_listen(void **state)
{
    static const char *loopback[] = {
        "127.0.0.1:7707", "127.1.2.3:0", "localhost:1", "LOCALHOST:1",
        "[::1]:7707", "[::ffff:127.0.0.1]:80",
    };
    static const char *remote[] = {
        "0.0.0.0:7707", "[::]:80", "10.0.0.1:1", "128.0.0.1:1",
        "gpu-box.example.org:1", "[fe80::1%eth0]:9", "[::ffff:10.0.0.1]:1",
    };
    struct tmp *t = *state;
    struct gq_config c;
    char want[512];
    size_t i;

    for (i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
        gq_config_defaults(&c);
        snprintf(c.listen, sizeof c.listen, "%s", loopback[i]);
        if (gq_config_check(&c, t->err, sizeof t->err) != 0)
            fail_msg("%s: %s", loopback[i], t->err);
    }
    for (i = 0; i < sizeof remote / sizeof remote[0]; i++) {
        gq_config_defaults(&c);
        snprintf(c.listen, sizeof c.listen, "%s", remote[i]);
        assert_int_equal(gq_config_check(&c, t->err, sizeof t->err),
                         GQ_EINVAL);
        snprintf(want, sizeof want,
                 "listen %s is not a loopback address and no API token is "
                 "configured, so anyone who can reach it could use the API: "
                 "add [token NAME] sections (or [auth] token_file), or set "
                 "[server] allow_remote = true to serve it without "
                 "authentication",
                 remote[i]);
        assert_string_equal(t->err, want);
        c.allow_remote = 1;
        assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
        c.allow_remote = 0;
        c.ntokens = 1;
        c.tokens[0] = (struct gq_token_conf){"t", GQ_ROLE_SUBMIT,
                                             GQ_ALL_CLASSES,
                                             "0123456789abcdef"};
        assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
    }

    /* A bad listen is reported as such, not also as remote. */
    gq_config_defaults(&c);
    snprintf(c.listen, sizeof c.listen, "0.0.0.0");
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err, "listen '0.0.0.0' is not HOST:PORT: missing "
                                ":PORT");

    /* The file can allow it; --check-config reports the same. */
    assert_int_equal(load_text(t, &c, "[server]\nlisten = 0.0.0.0:1\n"
                                      "allow_remote = true\n"),
                     0);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), 0);
    assert_int_equal(load_text(t, &c, "[server]\nlisten = 0.0.0.0:1\n"), 0);
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
}

/* What gq_config_check finds in tokens set by hand. */
static void
test_check_tokens(void **state)
{
    struct tmp *t = *state;
    struct gq_config c;

    gq_config_defaults(&c);
    c.ntokens = 6;
    c.tokens[0] = (struct gq_token_conf){"a", GQ_ROLE_ADMIN, GQ_ALL_CLASSES,
                                         "0123456789abcdef"};
    c.tokens[1] = (struct gq_token_conf){"b", GQ_ROLE_SUBMIT, 1u << 3,
                                         "fedcba9876543210"};
    c.tokens[2] = (struct gq_token_conf){"c", GQ_ROLE_NONE, 1,
                                         "cccccccccccccccc"};
    c.tokens[3] = (struct gq_token_conf){"a", GQ_ROLE_WORKER, 0,
                                         "dddddddddddddddd"};
    c.tokens[4] = (struct gq_token_conf){"e", GQ_ROLE_WORKER, 1,
                                         "0123456789abcdef"};
    c.tokens[5] = (struct gq_token_conf){"f g", GQ_ROLE_WORKER, 1,
                                         "ffffffffffffffff"};
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_string_equal(t->err,
                        "token b: allows a class that does not exist\n"
                        "token c: role must be submit, worker or admin, got "
                        "0\n"
                        "token a is defined twice\n"
                        "token a allows no class\n"
                        "tokens a and e have the same secret: give each its "
                        "own\n"
                        "token 6: bad name 'f g': use 1 to 63 of A-Z a-z 0-9 "
                        "_ . -");
    c.ntokens = GQ_MAX_TOKENS + 1;
    assert_int_equal(gq_config_check(&c, t->err, sizeof t->err), GQ_EINVAL);
    assert_non_null(strstr(t->err, "too many tokens: 65 (at most 64)"));
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults_equal_seed),
        T(test_seed_file_is_the_defaults),
        T(test_empty_file_is_the_defaults),
        T(test_full_file_round_trips),
        T(test_example_file),
        T(test_references),
        T(test_reference_errors_come_last),
        T(test_model_names),
        T(test_backend_and_model_limits),
        T(test_url_forms),
        T(test_inline_comments),
        T(test_lenient_syntax),
        T(test_each_error_has_its_line),
        T(test_long_line),
        T(test_multiple_errors),
        T(test_error_truncation),
        T(test_file_classes_replace_defaults),
        T(test_class_limits),
        T(test_share_by),
        T(test_synchronous),
        T(test_listen_forms),
        T(test_cannot_open),
        T(test_check),
        T(test_check_references),
        T(test_tokens),
        T(test_token_file_errors),
        T(test_check_remote_listen),
        T(test_check_tokens),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
