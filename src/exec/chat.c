/*
 * chat.c - the chat executor: one OpenAI-style chat request per job, sent
 * to an OpenAI-compatible server (llama.cpp, vLLM: SSE) or to Ollama
 * (/api/chat: NDJSON), always streamed from the backend so that tokens
 * reach the job's listeners as they arrive and the first token's time is
 * known.  The result is an OpenAI chat.completion object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/err.h"
#include "exec.h"
#include "httpc.h"
#include "parse.h"

#define CHAT_MAX_LINE (1 << 20)
#define CHAT_MAX_TEXT (16 << 20)

struct chat {
    struct gq_run *r;
    struct gq_call *call;
    struct gq_lines lines;
    int ollama;
    char *text;               /* content so far */
    size_t len, cap;
    char *finish;
    long ptok, ctok;
    double prompt_ms, predicted_ms;
    int first;                /* the first token has come */
    int failed;               /* a parse error was met */
    char err[256];
    char *body;               /* request JSON */
    char url[600];
};

static void
chat_free(struct chat *c)
{
    gq_lines_close(&c->lines);
    free(c->text);
    free(c->finish);
    free(c->body);
    free(c);
}

static int
chat_validate(const struct gq_class_exec *cx, json_t *p, const char **field,
              char *msg, size_t msglen)
{
    json_t *m = json_object_get(p, "messages"), *v;
    size_t i;
    if (!json_is_object(p)) {
        *field = "payload";
        snprintf(msg, msglen, "payload must be an OpenAI chat request "
                 "object");
        return GQ_EINVAL;
    }
    if (!json_is_array(m) || json_array_size(m) == 0) {
        *field = "payload.messages";
        snprintf(msg, msglen, "messages must be a non-empty array");
        return GQ_EINVAL;
    }
    json_array_foreach(m, i, v)
    {
        if (!json_is_object(v) ||
            !json_is_string(json_object_get(v, "role"))) {
            *field = "payload.messages";
            snprintf(msg, msglen, "messages[%zu] must be an object with a "
                     "string role", i);
            return GQ_EINVAL;
        }
    }
    v = json_object_get(p, "max_tokens");
    if (v && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) < 1)) {
        *field = "payload.max_tokens";
        snprintf(msg, msglen, "max_tokens must be a positive integer");
        return GQ_EINVAL;
    }
    return 0;
}

static int
append(struct chat *c, const char *s, size_t n)
{
    if (c->len + n + 1 > CHAT_MAX_TEXT)
        return GQ_ETOOBIG;
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *t = realloc(c->text, cap);
        if (t == NULL)
            return GQ_ENOMEM;
        c->text = t;
        c->cap = cap;
    }
    memcpy(c->text + c->len, s, n);
    c->len += n;
    c->text[c->len] = '\0';
    return 0;
}

static int
line_cb(void *ud, const char *line, size_t len)
{
    struct chat *c = ud;
    struct gq_llm_delta dl = {0};
    int is_event = 1, rc;
    if (c->ollama) {
        if (len == 0)
            return 0;
        rc = gq_parse_ollama_line(line, len, &dl, c->err, sizeof c->err);
    } else {
        rc = gq_parse_openai_sse_line(line, len, &dl, &is_event, c->err,
                                      sizeof c->err);
    }
    if (rc < 0) {
        c->failed = 1;
        gq_llm_delta_clear(&dl);
        return 1;
    }
    if (is_event) {
        if (dl.content && dl.content[0]) {
            if (!c->first) {
                c->first = 1;
                if (c->r->first_token)
                    c->r->first_token(c->r);
            }
            if (append(c, dl.content, strlen(dl.content)) < 0) {
                snprintf(c->err, sizeof c->err, "reply too long");
                c->failed = 1;
                gq_llm_delta_clear(&dl);
                return 1;
            }
            if (c->r->token_cb)
                c->r->token_cb(c->r, dl.content, strlen(dl.content));
        }
        if (dl.finish_reason) {
            free(c->finish);
            c->finish = dl.finish_reason;
            dl.finish_reason = NULL;
        }
        if (dl.prompt_tokens >= 0)
            c->ptok = dl.prompt_tokens;
        if (dl.completion_tokens >= 0)
            c->ctok = dl.completion_tokens;
        if (dl.prompt_ms >= 0)
            c->prompt_ms = dl.prompt_ms;
        if (dl.predicted_ms >= 0)
            c->predicted_ms = dl.predicted_ms;
    }
    gq_llm_delta_clear(&dl);
    return 0;
}

static int
data_cb(void *ud, const char *buf, size_t len)
{
    struct chat *c = ud;
    int rc = gq_lines_feed(&c->lines, buf, len, line_cb, c);
    if (rc < 0 && !c->failed) {
        if (rc == GQ_ETOOBIG)
            snprintf(c->err, sizeof c->err, "backend sent a line over %d "
                     "bytes", CHAT_MAX_LINE);
        else
            snprintf(c->err, sizeof c->err, "%s", gq_err_msg(rc));
        c->failed = 1;
    }
    return c->failed;
}

static void
done_cb(void *ud, const struct gq_call_result *res)
{
    struct chat *c = ud;
    struct gq_run *r = c->r;
    char msg[300];
    c->call = NULL;
    /* A last line without its newline (NDJSON streams may end so). */
    if (res->kind == GQ_CALL_OK && !c->failed &&
        gq_lines_finish(&c->lines, line_cb, c) < 0 && !c->failed) {
        snprintf(c->err, sizeof c->err, "bad last line from the backend");
        c->failed = 1;
    }
    if (res->kind == GQ_CALL_OK && !c->failed) {
        /* Speed: prompt and output tokens per second as measured. */
        if (c->ctok > 0 && c->predicted_ms > 0)
            gq_ewma(&r->bk->s_per_out_tok, c->predicted_ms / 1e3 / c->ctok);
        else if (c->ctok > 0)
            gq_ewma(&r->bk->s_per_out_tok, res->elapsed / c->ctok);
        if (c->ptok > 0 && c->prompt_ms > 0)
            gq_ewma(&r->bk->s_per_prompt_tok, c->prompt_ms / 1e3 / c->ptok);
        json_t *model = json_object_get(r->payload, "model");
        char id[48];
        snprintf(id, sizeof id, "chatcmpl-gpuq-j%llu",
                 (unsigned long long)r->seq);
        json_t *res_json = json_pack(
            "{s:s, s:s, s:I, s:o, s:[{s:i, s:{s:s, s:s}, s:o}]}", "id", id,
            "object", "chat.completion", "created", (json_int_t)time(NULL),
            "model",
            model ? json_deep_copy(model)
                  : json_string(r->bk->conf.model[0] ? r->bk->conf.model
                                                     : "unknown"),
            "choices", "index", 0, "message", "role", "assistant", "content",
            c->text ? c->text : "", "finish_reason",
            c->finish ? json_string(c->finish) : json_string("stop"));
        if (c->ptok >= 0 || c->ctok >= 0)
            json_object_set_new(
                res_json, "usage",
                json_pack("{s:I, s:I, s:I}", "prompt_tokens",
                          (json_int_t)(c->ptok > 0 ? c->ptok : 0),
                          "completion_tokens",
                          (json_int_t)(c->ctok > 0 ? c->ctok : 0),
                          "total_tokens",
                          (json_int_t)((c->ptok > 0 ? c->ptok : 0) +
                                       (c->ctok > 0 ? c->ctok : 0))));
        chat_free(c);
        r->priv = NULL;
        r->end(r, GQ_RUN_DONE, res_json, NULL, NULL, 0);
        return;
    }
    int retryable;
    const char *code;
    if (c->failed) {
        snprintf(msg, sizeof msg, "bad reply from the backend: %s", c->err);
        code = "backend_bad_reply";
        retryable = 1;
    } else {
        gq_backend_failure(r->bk, r->seq, res, msg, sizeof msg, &code,
                           &retryable);
    }
    /* Tokens already streamed to a listener cannot be taken back. */
    if (c->first)
        retryable = 0;
    chat_free(c);
    r->priv = NULL;
    r->end(r, GQ_RUN_FAIL, NULL, code, msg, retryable);
}

static int
chat_start(struct gq_run *r)
{
    struct chat *c = calloc(1, sizeof *c);
    json_t *req;
    if (c == NULL)
        return GQ_ENOMEM;
    c->r = r;
    c->ptok = c->ctok = -1;
    c->prompt_ms = c->predicted_ms = -1;
    c->ollama = r->bk->conf.type == GQ_BACKEND_OLLAMA;
    gq_lines_init(&c->lines, CHAT_MAX_LINE);
    const char *model = json_string_value(json_object_get(r->payload,
                                                          "model"));
    if (r->bk->conf.model[0])
        model = r->bk->conf.model;
    if (c->ollama) {
        json_t *opts = json_object();
        json_t *v;
        if ((v = json_object_get(r->payload, "temperature")))
            json_object_set(opts, "temperature", v);
        if ((v = json_object_get(r->payload, "top_p")))
            json_object_set(opts, "top_p", v);
        if ((v = json_object_get(r->payload, "max_tokens")))
            json_object_set(opts, "num_predict", v);
        if ((v = json_object_get(r->payload, "seed")))
            json_object_set(opts, "seed", v);
        req = json_pack("{s:s, s:O, s:b, s:o}", "model", model ? model : "",
                        "messages", json_object_get(r->payload, "messages"),
                        "stream", 1, "options", opts);
        snprintf(c->url, sizeof c->url, "%s/api/chat", r->bk->conf.url);
    } else {
        req = json_deep_copy(r->payload);
        if (model)
            json_object_set_new(req, "model", json_string(model));
        json_object_set_new(req, "stream", json_true());
        snprintf(c->url, sizeof c->url, "%s/v1/chat/completions",
                 r->bk->conf.url);
    }
    c->body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (c->body == NULL) {
        chat_free(c);
        return GQ_ENOMEM;
    }
    static const char *const headers[] = {"Content-Type: application/json",
                                          NULL};
    struct gq_call_opts o = {0};
    o.method = "POST";
    o.url = c->url;
    o.headers = headers;
    o.body = c->body;
    o.body_len = strlen(c->body);
    o.timeout = r->bk->conf.timeout;
    o.max_response = 1 << 20;
    r->priv = c;
    c->call = gq_call_start(r->httpc, &o, data_cb, done_cb, c);
    if (c->call == NULL) {
        r->priv = NULL;
        chat_free(c);
        return GQ_ENOMEM;
    }
    return 0;
}

static void
chat_cancel(struct gq_run *r)
{
    struct chat *c = r->priv;
    if (c == NULL)
        return;
    if (c->call)
        gq_call_cancel(c->call);
    chat_free(c);
    r->priv = NULL;
}

const struct gq_exec_ops gq_exec_chat = {
    "chat",
    chat_validate,
    chat_start,
    chat_cancel,
};
