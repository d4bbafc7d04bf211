/*
 * summarize.c - the summarization executor: map-reduce over an LLM
 * (OpenAI-compatible server or Ollama).
 *
 * The source text (payload.text, or the text of the finished
 * transcription named by payload.from_job, which the daemon fills in) is
 * split into pieces that fit the model's context (a token estimate of 4
 * bytes a token); each piece is summarized by one LLM call, and the
 * summaries are combined, level by level, until one is left.  Every call
 * is its own grant: the run ends with GQ_RUN_CHUNK and the progress
 * (level, inputs, outputs) after each call, so the scheduler decides
 * again between calls and a restart resumes from the next call.  Each
 * call's max_tokens is sized from the backend's measured speed so that
 * its expected GPU time stays within the class's max_hold.
 * Result: {summary, parts} (parts: the first level's summaries).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "exec.h"
#include "httpc.h"
#include "parse.h"

#define BYTES_PER_TOKEN 4
#define DEFAULT_MAX_TOKENS 512
#define MIN_TOKENS 32
#define MAX_TOKENS 2048
#define MAX_TEXT (64 << 20)

struct sum {
    struct gq_run *r;
    struct gq_call *call;
    json_t *prog;             /* progress being advanced */
    char *body;
    char url[600];
    int final;                /* this call makes the final summary */
    int ollama;
};

static int
sum_validate(const struct gq_class_exec *cx, json_t *p, const char **field,
             char *msg, size_t msglen)
{
    json_t *t = json_object_get(p, "text"), *f = json_object_get(p,
                                                                "from_job");
    json_t *v;
    if (!json_is_object(p)) {
        *field = "payload";
        snprintf(msg, msglen, "payload must be an object with text or "
                 "from_job");
        return GQ_EINVAL;
    }
    if ((t == NULL) == (f == NULL)) {
        *field = "payload.text";
        snprintf(msg, msglen, "give exactly one of text and from_job");
        return GQ_EINVAL;
    }
    if (t && (!json_is_string(t) || json_string_length(t) == 0)) {
        *field = "payload.text";
        snprintf(msg, msglen, "text must be a non-empty string");
        return GQ_EINVAL;
    }
    if (f && (!json_is_string(f) || json_string_value(f)[0] != 'j')) {
        *field = "payload.from_job";
        snprintf(msg, msglen, "from_job must be a job id");
        return GQ_EINVAL;
    }
    if ((v = json_object_get(p, "instructions")) &&
        !(json_is_string(v) && json_string_length(v) <= 4000)) {
        *field = "payload.instructions";
        snprintf(msg, msglen, "instructions must be a string of at most "
                 "4000 bytes");
        return GQ_EINVAL;
    }
    if ((v = json_object_get(p, "max_words")) &&
        !(json_is_integer(v) && json_integer_value(v) >= 1 &&
          json_integer_value(v) <= 100000)) {
        *field = "payload.max_words";
        snprintf(msg, msglen, "max_words must be an integer in 1..100000");
        return GQ_EINVAL;
    }
    return 0;
}

/* max_tokens for a call whose prompt has prompt_bytes, within max_hold. */
static int
call_tokens(const struct gq_run *r, size_t prompt_bytes)
{
    const struct gq_backend *bk = r->bk;
    if (bk->s_per_out_tok <= 0)
        return DEFAULT_MAX_TOKENS;
    double prompt_s = bk->s_per_prompt_tok * (double)prompt_bytes /
                      BYTES_PER_TOKEN;
    double left = r->cx->max_hold - prompt_s;
    double n = left / bk->s_per_out_tok;
    if (n < MIN_TOKENS)
        n = MIN_TOKENS;
    if (n > MAX_TOKENS)
        n = MAX_TOKENS;
    return (int)n;
}

/* Bytes of source text one call may take. */
static size_t
piece_bytes(const struct gq_run *r)
{
    long ctx = r->bk->conf.context_tokens > 0 ? r->bk->conf.context_tokens
                                              : 4096;
    long room = ctx - MAX_TOKENS / 2 - 256;
    if (room < 256)
        room = 256;
    return (size_t)room * BYTES_PER_TOKEN * 9 / 10;
}

/* Where to end a piece of at most max bytes of s: a paragraph break, a
 * sentence end, a space, else a UTF-8 character boundary. */
static size_t
cut_at(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    const char *seps[] = {"\n\n", ". ", "\n", " "};
    for (int k = 0; k < 4; k++) {
        size_t sl = strlen(seps[k]);
        for (size_t i = max; i > max / 2; i--)
            if (strncmp(s + i - sl, seps[k], sl) == 0)
                return i;
    }
    size_t i = max;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i ? i : max;
}

/* The inputs of the current level: pieces of the source at level 0, the
 * previous level's summaries grouped to fit afterwards. */
static json_t *
level_pieces(const struct gq_run *r, json_t *prog)
{
    size_t max = piece_bytes(r);
    json_t *pieces = json_array();
    int level = (int)json_integer_value(json_object_get(prog, "level"));
    if (level == 0) {
        const char *s = json_string_value(json_object_get(r->payload,
                                                          "text"));
        size_t len = s ? strlen(s) : 0, at = 0;
        while (at < len) {
            size_t n = cut_at(s + at, len - at, max);
            json_array_append_new(pieces, json_stringn(s + at, n));
            at += n;
        }
        return pieces;
    }
    json_t *in = json_object_get(prog, "inputs"), *v;
    size_t i;
    char *acc = NULL;
    size_t alen = 0;
    json_array_foreach(in, i, v)
    {
        const char *t = json_string_value(v);
        size_t tl = t ? strlen(t) : 0;
        if (acc && alen + tl + 2 > max) {
            json_array_append_new(pieces, json_stringn(acc, alen));
            free(acc);
            acc = NULL;
            alen = 0;
        }
        char *n = realloc(acc, alen + tl + 3);
        if (n == NULL)
            break;
        acc = n;
        if (alen) {
            memcpy(acc + alen, "\n\n", 2);
            alen += 2;
        }
        memcpy(acc + alen, t ? t : "", tl);
        alen += tl;
    }
    if (acc)
        json_array_append_new(pieces, json_stringn(acc, alen));
    free(acc);
    if (json_array_size(pieces) > 1 &&
        json_array_size(pieces) >= json_array_size(in)) {
        /* Summaries too long to group: pair them, each cut to half a
         * piece, so every level at least halves and the job ends. */
        json_decref(pieces);
        pieces = json_array();
        size_t n = json_array_size(in);
        for (i = 0; i < n; i += 2) {
            const char *a = json_string_value(json_array_get(in, i));
            const char *b = i + 1 < n
                                ? json_string_value(json_array_get(in, i + 1))
                                : NULL;
            size_t la = a ? cut_at(a, strlen(a), max / 2) : 0;
            size_t lb = b ? cut_at(b, strlen(b), max / 2) : 0;
            char *pair = malloc(la + lb + 3);
            if (pair == NULL)
                break;
            memcpy(pair, a ? a : "", la);
            memcpy(pair + la, "\n\n", 2);
            memcpy(pair + la + 2, b ? b : "", lb);
            json_array_append_new(pieces, json_stringn(pair, la + 2 + lb));
            free(pair);
        }
    }
    return pieces;
}

static void
sum_free(struct sum *s)
{
    json_decref(s->prog);
    free(s->body);
    free(s);
}

static void
sum_done(void *ud, const struct gq_call_result *res)
{
    struct sum *s = ud;
    struct gq_run *r = s->r;
    struct gq_llm_delta dl = {0};
    char msg[300];
    s->call = NULL;
    if (res->kind != GQ_CALL_OK) {
        int retryable;
        const char *code;
        gq_backend_failure(r->bk, r->seq, res, msg, sizeof msg, &code,
                           &retryable);
        r->priv = NULL;
        sum_free(s);
        r->end(r, GQ_RUN_FAIL, NULL, code, msg, retryable);
        return;
    }
    int rc = s->ollama ? gq_parse_ollama_full(res->body, res->body_len, &dl,
                                              msg, sizeof msg)
                       : gq_parse_openai_full(res->body, res->body_len, &dl,
                                              msg, sizeof msg);
    if (rc < 0) {
        r->priv = NULL;
        sum_free(s);
        gq_llm_delta_clear(&dl);
        r->end(r, GQ_RUN_FAIL, NULL, "backend_bad_reply", msg, 1);
        return;
    }
    if (dl.completion_tokens > 0 && dl.predicted_ms > 0)
        gq_ewma(&r->bk->s_per_out_tok,
                dl.predicted_ms / 1e3 / (double)dl.completion_tokens);
    else if (dl.completion_tokens > 0)
        gq_ewma(&r->bk->s_per_out_tok,
                res->elapsed / (double)dl.completion_tokens);
    if (dl.prompt_tokens > 0 && dl.prompt_ms > 0)
        gq_ewma(&r->bk->s_per_prompt_tok,
                dl.prompt_ms / 1e3 / (double)dl.prompt_tokens);
    const char *text = dl.content ? dl.content : "";
    json_t *prog = s->prog;
    json_t *outs = json_object_get(prog, "outputs");
    json_array_append_new(outs, json_string(text));
    int level = (int)json_integer_value(json_object_get(prog, "level"));
    if (level == 0)
        json_array_append_new(json_object_get(prog, "parts"),
                              json_string(text));
    int calls = (int)json_integer_value(json_object_get(prog, "calls")) + 1;
    json_object_set_new(prog, "calls", json_integer(calls));
    gq_llm_delta_clear(&dl);
    if (s->final) {
        json_t *result = json_pack("{s:O, s:O}", "summary",
                                   json_array_get(outs, 0), "parts",
                                   json_object_get(prog, "parts"));
        r->priv = NULL;
        sum_free(s);
        r->end(r, GQ_RUN_DONE, result, NULL, NULL, 0);
        return;
    }
    json_t *pieces = level_pieces(r, prog);
    if (json_array_size(outs) >= json_array_size(pieces)) {
        /* The level is done: its summaries feed the next one. */
        json_object_set(prog, "inputs", outs);
        json_object_set_new(prog, "outputs", json_array());
        json_object_set_new(prog, "level", json_integer(level + 1));
    }
    json_decref(pieces);
    json_incref(prog);
    r->priv = NULL;
    sum_free(s);
    r->end(r, GQ_RUN_CHUNK, prog, NULL, NULL, 0);
}

static int
sum_start(struct gq_run *r)
{
    struct sum *s = calloc(1, sizeof *s);
    if (s == NULL)
        return GQ_ENOMEM;
    s->r = r;
    s->ollama = r->bk->conf.type == GQ_BACKEND_OLLAMA;
    s->prog = r->progress ? json_deep_copy(r->progress) : json_object();
    if (!json_is_array(json_object_get(s->prog, "outputs")))
        json_object_set_new(s->prog, "outputs", json_array());
    if (!json_is_array(json_object_get(s->prog, "parts")))
        json_object_set_new(s->prog, "parts", json_array());
    if (!json_is_integer(json_object_get(s->prog, "level")))
        json_object_set_new(s->prog, "level", json_integer(0));
    if (json_string_value(json_object_get(r->payload, "text")) == NULL) {
        sum_free(s);
        return GQ_EINVAL;
    }
    int level = (int)json_integer_value(json_object_get(s->prog, "level"));
    if (level > 64) {
        /* Cannot happen while each level at least halves; a guard. */
        sum_free(s);
        return GQ_EINVAL;
    }
    json_t *pieces = level_pieces(r, s->prog);
    size_t done = json_array_size(json_object_get(s->prog, "outputs"));
    size_t n = json_array_size(pieces);
    if (n == 0) {
        json_decref(pieces);
        sum_free(s);
        return GQ_EINVAL;
    }
    const char *piece = json_string_value(json_array_get(pieces, done));
    /* The last call of a level with one piece makes the final summary. */
    s->final = n == 1;
    const char *ins = json_string_value(json_object_get(r->payload,
                                                        "instructions"));
    json_int_t words = json_integer_value(json_object_get(r->payload,
                                                          "max_words"));
    char limit[64] = "";
    if (words > 0 && s->final)
        snprintf(limit, sizeof limit, " Use at most %lld words.",
                 (long long)words);
    size_t plen = strlen(piece ? piece : "") + 512 + (ins ? strlen(ins) : 0);
    char *prompt = malloc(plen);
    if (prompt == NULL) {
        json_decref(pieces);
        sum_free(s);
        return GQ_ENOMEM;
    }
    if (level == 0 && n > 1)
        snprintf(prompt, plen, "%s This is part %zu of %zu of a longer "
                 "text; summarize this part.%s\n\n%s",
                 ins ? ins : "Summarize the following text.", done + 1, n,
                 limit, piece);
    else if (level == 0)
        snprintf(prompt, plen, "%s%s\n\n%s",
                 ins ? ins : "Summarize the following text.", limit, piece);
    else
        snprintf(prompt, plen, "Combine these partial summaries into one "
                 "coherent summary.%s%s%s\n\n%s", ins ? " " : "",
                 ins ? ins : "", limit, piece);
    json_decref(pieces);
    int max_tokens = call_tokens(r, strlen(prompt));
    json_t *msgs = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system",
                             "content", "You are a careful, faithful "
                             "summarizer.", "role", "user", "content",
                             prompt);
    free(prompt);
    const char *model = r->bk->conf.model[0] ? r->bk->conf.model : NULL;
    json_t *req;
    if (s->ollama) {
        req = json_pack("{s:s, s:o, s:b, s:{s:i}}", "model",
                        model ? model : "", "messages", msgs, "stream", 0,
                        "options", "num_predict", max_tokens);
        snprintf(s->url, sizeof s->url, "%s/api/chat", r->bk->conf.url);
    } else {
        req = json_pack("{s:o, s:i, s:b}", "messages", msgs, "max_tokens",
                        max_tokens, "stream", 0);
        if (model)
            json_object_set_new(req, "model", json_string(model));
        snprintf(s->url, sizeof s->url, "%s/v1/chat/completions",
                 r->bk->conf.url);
    }
    s->body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (s->body == NULL) {
        sum_free(s);
        return GQ_ENOMEM;
    }
    static const char *const headers[] = {"Content-Type: application/json",
                                          NULL};
    struct gq_call_opts o = {0};
    o.method = "POST";
    o.url = s->url;
    o.headers = headers;
    o.body = s->body;
    o.body_len = strlen(s->body);
    o.timeout = r->bk->conf.timeout;
    o.max_response = 8 << 20;
    r->priv = s;
    s->call = gq_call_start(r->httpc, &o, NULL, sum_done, s);
    if (s->call == NULL) {
        r->priv = NULL;
        sum_free(s);
        return GQ_ENOMEM;
    }
    return 0;
}

static void
sum_cancel(struct gq_run *r)
{
    struct sum *s = r->priv;
    if (s == NULL)
        return;
    if (s->call)
        gq_call_cancel(s->call);
    sum_free(s);
    r->priv = NULL;
}

const struct gq_exec_ops gq_exec_summarize = {
    "summarize",
    sum_validate,
    sum_start,
    sum_cancel,
};
