/*
 * transcribe.c - the transcription executor, for whisper.cpp's
 * whisper-server.
 *
 * A job is cut into chunks and each chunk is its own grant: the run
 * decodes the audio (on a worker thread: libsndfile, mono, 16 kHz with
 * libsamplerate), plans one chunk sized so that its expected GPU time is
 * at most the class's max_hold (the backend's measured seconds of GPU
 * per second of audio), cuts it in the quietest 200 ms near the boundary,
 * sends it as a 16-bit WAV to /inference (verbose_json) and ends with
 * GQ_RUN_CHUNK and the progress so far — the scheduler decides again
 * before the next chunk, so a waiting chat goes first — or, after the
 * last chunk, with the stitched result {text, segments, language,
 * duration}.  The progress is stored per chunk, so after a crash the job
 * resumes from the next chunk.
 *
 * Decoded audio is kept in a small cache on the backend (the jobs being
 * transcribed), touched only on the loop thread.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "audio.h"
#include "exec.h"
#include "httpc.h"
#include "parse.h"
#include "workq.h"

#define MAX_AUDIO_S (6 * 3600.0)  /* longest source accepted */
#define MIN_CHUNK_S 1.0
#define MAX_CHUNK_S 300.0
#define FIRST_CHUNK_S 10.0        /* before any speed is measured */
#define CACHE_N 4

/* The decoded audio of a job, shared by its chunks. */
struct cached {
    uint64_t seq;
    struct gq_audio a;
    unsigned use;             /* LRU clock */
    int refs;                 /* runs using it now */
};

struct tcache {
    struct cached e[CACHE_N];
    unsigned clock;
};

struct tx {
    struct gq_run *r;
    char path[PATH_MAX];
    struct cached *audio;     /* from the cache, or NULL until decoded */
    struct gq_audio fresh;    /* decoded on the worker thread */
    int decode_rc;
    char err[256];
    size_t start, end;        /* this chunk, in samples */
    size_t max_len;           /* longest chunk, in samples (max_hold) */
    unsigned char *wav;
    size_t wav_len;
    struct gq_call *call;
    int cancelled;            /* set while worker thread work is pending */
    char lang[32], prompt[1024];
};

/* Frees a cache and its audio (the backend's exec_state_free). */
static void
cache_free(void *state)
{
    struct tcache *tc = state;
    for (int i = 0; tc && i < CACHE_N; i++)
        gq_audio_free(&tc->e[i].a);
    free(tc);
}

static struct tcache *
cache_of(struct gq_backend *bk)
{
    /* The backend's spare pointer holds this executor's cache; the
     * daemon frees it with the backend. */
    if (bk->exec_state == NULL) {
        bk->exec_state = calloc(1, sizeof(struct tcache));
        bk->exec_state_free = cache_free;
    }
    return bk->exec_state;
}

static struct cached *
cache_get(struct tcache *tc, uint64_t seq)
{
    for (int i = 0; tc && i < CACHE_N; i++)
        if (tc->e[i].seq == seq && tc->e[i].a.samples) {
            tc->e[i].use = ++tc->clock;
            return &tc->e[i];
        }
    return NULL;
}

/* Takes ownership of a; NULL if every entry is in use. */
static struct cached *
cache_put(struct tcache *tc, uint64_t seq, struct gq_audio *a)
{
    struct cached *victim = NULL;
    for (int i = 0; tc && i < CACHE_N; i++) {
        struct cached *e = &tc->e[i];
        if (e->refs > 0)
            continue;
        if (victim == NULL || e->use < victim->use)
            victim = e;
    }
    if (victim == NULL)
        return NULL;
    gq_audio_free(&victim->a);
    victim->seq = seq;
    victim->a = *a;
    memset(a, 0, sizeof *a);
    victim->use = ++tc->clock;
    return victim;
}

static void
cache_drop(struct gq_backend *bk, uint64_t seq)
{
    struct tcache *tc = bk->exec_state;
    for (int i = 0; tc && i < CACHE_N; i++)
        if (tc->e[i].seq == seq && tc->e[i].refs == 0) {
            gq_audio_free(&tc->e[i].a);
            tc->e[i].seq = 0;
        }
}

static int
tx_validate(const struct gq_class_exec *cx, json_t *p, const char **field,
            char *msg, size_t msglen)
{
    json_t *ap = json_object_get(p, "audio_path");
    json_t *up = json_object_get(p, "upload");
    char resolved[PATH_MAX];
    if (!json_is_object(p)) {
        *field = "payload";
        snprintf(msg, msglen, "payload must be an object with audio_path");
        return GQ_EINVAL;
    }
    json_t *au = json_object_get(p, "audio");
    if ((ap != NULL) + (up != NULL) + (au != NULL) != 1) {
        *field = "payload.audio_path";
        snprintf(msg, msglen, "give exactly one of audio_path and audio");
        return GQ_EINVAL;
    }
    if (au) {
        /* Base64 audio in the JSON; the daemon stores it as an upload. */
        if (!json_is_string(au) || json_string_length(au) < 8) {
            *field = "payload.audio";
            snprintf(msg, msglen, "audio must be a base64 string");
            return GQ_EINVAL;
        }
    } else if (up) {
        /* Set by gpuqd's own upload endpoints only: a plain file name. */
        const char *s = json_string_value(up);
        if (s == NULL || strchr(s, '/') || s[0] == '.' || !s[0]) {
            *field = "payload.upload";
            snprintf(msg, msglen, "upload must name an uploaded file");
            return GQ_EINVAL;
        }
    } else {
        if (!json_is_string(ap) ||
            strlen(json_string_value(ap)) != json_string_length(ap)) {
            *field = "payload.audio_path";
            snprintf(msg, msglen, "audio_path must be a string");
            return GQ_EINVAL;
        }
        if (gq_audio_path_check(json_string_value(ap), cx->audio_roots,
                                resolved, sizeof resolved, msg, msglen) < 0) {
            *field = "payload.audio_path";
            return GQ_EINVAL;
        }
    }
    json_t *l = json_object_get(p, "language");
    if (l && !(json_is_string(l) && json_string_length(l) < 16)) {
        *field = "payload.language";
        snprintf(msg, msglen, "language must be a short string, e.g. en");
        return GQ_EINVAL;
    }
    json_t *pr = json_object_get(p, "prompt");
    if (pr && !(json_is_string(pr) && json_string_length(pr) < 1024)) {
        *field = "payload.prompt";
        snprintf(msg, msglen, "prompt must be a string under 1024 bytes");
        return GQ_EINVAL;
    }
    return 0;
}

static void
tx_free(struct tx *t)
{
    if (t->audio)
        t->audio->refs--;
    gq_audio_free(&t->fresh);
    free(t->wav);
    free(t);
}

static size_t
progress_offset(const struct gq_run *r)
{
    json_t *o = json_object_get(r->progress, "offset");
    return json_is_integer(o) && json_integer_value(o) > 0
               ? (size_t)json_integer_value(o)
               : 0;
}

/* Chunk length in samples so that the expected GPU time <= max_hold. */
static size_t
chunk_samples(const struct gq_run *r, int rate)
{
    double s = FIRST_CHUNK_S;
    if (r->bk->s_per_audio_s > 0)
        s = r->cx->max_hold / r->bk->s_per_audio_s;
    if (s < MIN_CHUNK_S)
        s = MIN_CHUNK_S;
    if (s > MAX_CHUNK_S)
        s = MAX_CHUNK_S;
    return (size_t)(s * rate);
}

/* Worker thread: decode (first chunk of a job only), plan, encode. */
static void
tx_work(void *arg)
{
    struct tx *t = arg;
    const struct gq_audio *a;
    if (t->audio == NULL) {
        t->decode_rc = gq_audio_load(t->path, MAX_AUDIO_S, &t->fresh,
                                     t->err, sizeof t->err);
        if (t->decode_rc < 0)
            return;
        a = &t->fresh;
    } else {
        a = &t->audio->a;
    }
    size_t search = (size_t)(2.0 * a->rate);
    t->end = gq_audio_cut(a, t->start, t->max_len, search);
    if (t->end <= t->start) {
        t->end = t->start;
        return;
    }
    t->decode_rc = gq_audio_wav(a, t->start, t->end, &t->wav, &t->wav_len);
    if (t->decode_rc < 0)
        snprintf(t->err, sizeof t->err, "cannot encode the chunk");
}

static json_t *
progress_json(const struct gq_run *r)
{
    return r->progress ? json_deep_copy(r->progress) : json_object();
}

static void
tx_done_call(void *ud, const struct gq_call_result *res)
{
    struct tx *t = ud;
    struct gq_run *r = t->r;
    const struct gq_audio *a = &t->audio->a;
    char msg[300];
    t->call = NULL;
    if (res->kind != GQ_CALL_OK) {
        int retryable;
        const char *code;
        gq_backend_failure(r->bk, r->seq, res, msg, sizeof msg, &code,
                           &retryable);
        r->priv = NULL;
        tx_free(t);
        r->end(r, GQ_RUN_FAIL, NULL, code, msg, retryable);
        return;
    }
    double offset = (double)t->start / a->rate;
    double chunk_s = (double)(t->end - t->start) / a->rate;
    json_t *prog = progress_json(r);
    json_t *segs = json_object_get(prog, "segments");
    if (!json_is_array(segs)) {
        segs = json_array();
        json_object_set_new(prog, "segments", segs);
    }
    const char *old = json_string_value(json_object_get(prog, "text"));
    char *text = old ? strdup(old) : NULL;
    char *lang = NULL;
    double dur = 0;
    if (gq_parse_whisper(res->body, res->body_len, offset, chunk_s, segs,
                         &text, &lang, &dur, msg, sizeof msg) < 0) {
        json_decref(prog);
        free(text);
        free(lang);
        r->priv = NULL;
        tx_free(t);
        r->end(r, GQ_RUN_FAIL, NULL, "backend_bad_reply", msg, 1);
        return;
    }
    /* GPU seconds per audio second, as measured on this chunk. */
    if (chunk_s > 0.5)
        gq_ewma(&r->bk->s_per_audio_s, res->elapsed / chunk_s);
    int chunks = (int)json_integer_value(json_object_get(prog,
                                                         "chunks_done")) + 1;
    json_object_set_new(prog, "text", json_string(text ? text : ""));
    if (lang)
        json_object_set_new(prog, "language", json_string(lang));
    json_object_set_new(prog, "offset", json_integer((json_int_t)t->end));
    json_object_set_new(prog, "offset_s",
                        json_real((double)t->end / a->rate));
    json_object_set_new(prog, "duration", json_real(a->duration));
    json_object_set_new(prog, "chunks_done", json_integer(chunks));
    size_t left = a->n - t->end;
    size_t per = chunk_samples(r, a->rate);
    json_object_set_new(prog, "chunks_total",
                        json_integer(chunks + (json_int_t)((left + per - 1) /
                                                           per)));
    free(text);
    free(lang);
    int last = t->end >= a->n;
    uint64_t seq = r->seq;
    struct gq_backend *bk = r->bk;
    r->priv = NULL;
    tx_free(t);
    if (last) {
        json_t *result = json_pack(
            "{s:O, s:O, s:O, s:O}", "text", json_object_get(prog, "text"),
            "segments", json_object_get(prog, "segments"), "language",
            json_object_get(prog, "language")
                ? json_object_get(prog, "language")
                : json_null(),
            "duration", json_object_get(prog, "duration"));
        json_decref(prog);
        cache_drop(bk, seq);
        r->end(r, GQ_RUN_DONE, result, NULL, NULL, 0);
    } else {
        r->end(r, GQ_RUN_CHUNK, prog, NULL, NULL, 0);
    }
}

/* Loop thread, after tx_work. */
static void
tx_after_work(void *arg)
{
    struct tx *t = arg;
    struct gq_run *r = t->r;
    char url[600];
    if (t->cancelled) {
        tx_free(t);
        return;
    }
    if (t->decode_rc < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", t->err);
        int code = t->decode_rc;
        r->priv = NULL;
        tx_free(t);
        r->end(r, GQ_RUN_FAIL, NULL,
               code == GQ_EIO ? "audio_unreadable" : "audio_invalid", msg,
               code == GQ_EIO);
        return;
    }
    if (t->audio == NULL) {
        t->audio = cache_put(cache_of(r->bk), r->seq, &t->fresh);
        if (t->audio == NULL) {
            r->priv = NULL;
            tx_free(t);
            r->end(r, GQ_RUN_FAIL, NULL, "busy",
                   "no room to hold the decoded audio", 1);
            return;
        }
        t->audio->refs++;
    }
    if (t->end <= t->start) {
        /* Nothing left (empty audio, or resumed past the end). */
        json_t *prog = progress_json(r);
        json_t *result = json_pack(
            "{s:s, s:o, s:n, s:f}", "text",
            json_string_value(json_object_get(prog, "text"))
                ? json_string_value(json_object_get(prog, "text"))
                : "",
            "segments",
            json_object_get(prog, "segments")
                ? json_incref(json_object_get(prog, "segments"))
                : json_array(),
            "language", "duration", t->audio->a.duration);
        json_decref(prog);
        uint64_t seq = r->seq;
        struct gq_backend *bk = r->bk;
        r->priv = NULL;
        tx_free(t);
        cache_drop(bk, seq);
        r->end(r, GQ_RUN_DONE, result, NULL, NULL, 0);
        return;
    }
    struct gq_part parts[4];
    int np = 0;
    parts[np++] = (struct gq_part){"file", t->wav, t->wav_len, "chunk.wav",
                                   "audio/wav"};
    parts[np++] = (struct gq_part){"response_format", "verbose_json", 12,
                                   NULL, NULL};
    if (t->lang[0])
        parts[np++] = (struct gq_part){"language", t->lang, strlen(t->lang),
                                       NULL, NULL};
    if (t->prompt[0])
        parts[np++] = (struct gq_part){"prompt", t->prompt,
                                       strlen(t->prompt), NULL, NULL};
    snprintf(url, sizeof url, "%s/inference", r->bk->conf.url);
    struct gq_call_opts o = {0};
    o.method = "POST";
    o.url = url;
    o.parts = parts;
    o.nparts = np;
    o.timeout = r->bk->conf.timeout;
    o.max_response = 16 << 20;
    t->call = gq_call_start(r->httpc, &o, NULL, tx_done_call, t);
    if (t->call == NULL) {
        r->priv = NULL;
        tx_free(t);
        r->end(r, GQ_RUN_FAIL, NULL, "internal",
               "could not start the backend call", 1);
    }
}

/* Where uploaded audio lives: set by the daemon (data_dir/uploads). */
const char *gq_upload_dir = "var/uploads";

static int
tx_start(struct gq_run *r)
{
    struct tx *t = calloc(1, sizeof *t);
    const char *s;
    if (t == NULL)
        return GQ_ENOMEM;
    t->r = r;
    t->start = progress_offset(r);
    t->max_len = chunk_samples(r, GQ_AUDIO_RATE);
    if ((s = json_string_value(json_object_get(r->payload, "language"))))
        snprintf(t->lang, sizeof t->lang, "%s", s);
    if ((s = json_string_value(json_object_get(r->payload, "prompt"))))
        snprintf(t->prompt, sizeof t->prompt, "%s", s);
    if ((s = json_string_value(json_object_get(r->payload, "upload")))) {
        snprintf(t->path, sizeof t->path, "%s/%s", gq_upload_dir, s);
    } else {
        /* Checked again at run time: the file may have moved since. */
        s = json_string_value(json_object_get(r->payload, "audio_path"));
        if (s == NULL ||
            gq_audio_path_check(s, r->cx->audio_roots, t->path,
                                sizeof t->path, t->err, sizeof t->err) < 0) {
            free(t);
            return GQ_EINVAL;
        }
    }
    t->audio = cache_get(cache_of(r->bk), r->seq);
    if (t->audio)
        t->audio->refs++;
    r->priv = t;
    if (gq_workq_submit(r->workq, tx_work, tx_after_work, t) < 0) {
        r->priv = NULL;
        tx_free(t);
        return GQ_ENOMEM;
    }
    return 0;
}

static void
tx_cancel(struct gq_run *r)
{
    struct tx *t = r->priv;
    if (t == NULL)
        return;
    r->priv = NULL;
    if (t->call) {
        gq_call_cancel(t->call);
        tx_free(t);
    } else {
        /* Worker-thread work is pending: it frees t when it comes back. */
        t->cancelled = 1;
    }
}

const struct gq_exec_ops gq_exec_transcribe = {
    "transcribe",
    tx_validate,
    tx_start,
    tx_cancel,
};
