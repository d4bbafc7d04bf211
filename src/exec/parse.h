/*
 * parse.h - parsers for the replies of the inference servers gpuq drives:
 * whisper.cpp's /inference (json, verbose_json), OpenAI-compatible chat
 * completions (llama.cpp, vLLM; whole or streamed as SSE), Ollama's
 * /api/chat (whole or streamed as NDJSON), and error bodies of all three.
 * The wire formats are recorded in ../shared/protocols/.
 *
 * Every input is a hostile byte string with a length (no NUL needed):
 * lines are bounded by the splitter below, JSON goes through jansson
 * (which rejects invalid UTF-8, \u0000, nesting deeper than 2048 and
 * trailing garbage), and fields of the wrong type are errors, never
 * guesses.  Strings handed back are valid UTF-8 without NUL bytes.
 *
 * Errors: 0, or GQ_EINVAL (malformed reply; err says what and where),
 * GQ_EIO (the backend itself reported an error inside a 200 reply or a
 * stream; err holds its message), GQ_ENOMEM.  err (errlen bytes, may be
 * NULL when errlen is 0) always ends up NUL-terminated, printable and
 * valid UTF-8 on failure, and is left alone on success.
 */
#ifndef GQ_PARSE_H
#define GQ_PARSE_H

#include <stddef.h>

#include <jansson.h>

/* --- whisper.cpp --- */

/*
 * Parses one reply of whisper.cpp's POST /inference for an audio window
 * that starts `offset` seconds into the whole recording, and appends it
 * to a transcript being built window by window:
 *   - verbose_json (has "segments"): each segment becomes
 *     {"start","end","text"} appended to `segments` (a JSON array), start
 *     and end shifted by offset and rounded to the millisecond; the
 *     segment texts are appended to *text verbatim (whisper starts each
 *     with a space).  *language is set from "language" (or
 *     "detected_language"), *duration from "duration".
 *   - json ({"text"}): the text, less its trailing newlines, becomes one
 *     segment [offset, offset + duration_hint]; no segment when it is
 *     empty.  *duration is set to duration_hint.
 * *text is a malloc'd NUL-terminated string grown with realloc; it may
 * start NULL and stays NULL while nothing was appended; the caller frees
 * it.  language and duration may be NULL.  When the reply names a
 * language, a previous *language is freed and replaced (malloc'd; the
 * caller frees it); otherwise it is left alone.
 *
 * whisper.cpp is known to emit invalid UTF-8 when a multi-byte character
 * is split across segments or tokens (whisper.cpp issues #3760, #3821):
 * such bytes are replaced with U+FFFD before parsing instead of losing
 * the whole window.
 *
 * Returns 0; GQ_EINVAL for malformed JSON or a wrong shape (err names the
 * field, e.g. "segments[3].start: expected a number"), or bad arguments
 * (segments not an array, text NULL); GQ_EIO for a JSON {"error":...};
 * GQ_ENOMEM.  On failure nothing was appended or changed.
 */
int gq_parse_whisper(const char *body, size_t len, double offset,
                     double duration_hint, json_t *segments, char **text,
                     char **language, double *duration, char *err,
                     size_t errlen);

/* --- line splitter (SSE and NDJSON) --- */

/* Called with each complete line, without its "\n" or "\r\n"; line is
 * not NUL-terminated and is valid only during the call.  Returns 0 to go
 * on, nonzero to stop. */
typedef int (*gq_line_fn)(void *ud, const char *line, size_t len);

/*
 * Splits a byte stream into lines, holding at most one partial line of
 * at most `max` bytes (plus a '\r').  Caller-allocated; fields are
 * private.
 */
struct gq_lines {
    char *buf;                /* the partial line; malloc'd lazily */
    size_t len, cap;          /* bytes held, bytes allocated */
    size_t max;               /* longest line accepted, without "\r\n" */
    int err;                  /* sticky GQ_ETOOBIG once a line was too long */
};

/* Initialises l for lines of at most max_line bytes.  Allocates nothing. */
void gq_lines_init(struct gq_lines *l, size_t max_line);
/* Frees l's buffer; l may then be initialised again. */
void gq_lines_close(struct gq_lines *l);
/*
 * Feeds len bytes: calls fn(ud, line, n) for each line they complete, in
 * order.  Lines end at "\n"; one '\r' before it is dropped too.  Returns
 * 0; fn's nonzero value as soon as fn returns one (the rest of buf is
 * dropped and the partial line forgotten); GQ_ETOOBIG when a line grows
 * past max (then every later feed returns GQ_ETOOBIG too: the stream is
 * unusable); GQ_ENOMEM.
 */
int gq_lines_feed(struct gq_lines *l, const char *buf, size_t len,
                  gq_line_fn fn, void *ud);
/*
 * At the end of the stream: passes the last line if it had no "\n"
 * (Ollama's last NDJSON line may lack one).  Returns 0, fn's nonzero
 * value, or the sticky GQ_ETOOBIG.
 */
int gq_lines_finish(struct gq_lines *l, gq_line_fn fn, void *ud);

/* --- LLM replies --- */

/*
 * One streamed LLM event, or a whole reply.  Fill it only through the
 * parsers below: they free what it holds on entry and reset every field,
 * so it must start zeroed ({0}) or as left by a parser or
 * gq_llm_delta_clear.  The strings are malloc'd and owned by the struct
 * until gq_llm_delta_clear, or taken by setting the pointer to NULL.
 */
struct gq_llm_delta {
    char *content;            /* next piece of text; NULL if none or "" */
    char *finish_reason;      /* "stop", "length", ...; NULL if none */
    int done;                 /* 1 on the last event: [DONE], done:true */
    long prompt_tokens;       /* usage or Ollama counters; -1 if absent */
    long completion_tokens;
    double prompt_ms;         /* llama.cpp timings or Ollama durations; */
    double predicted_ms;      /* -1 if absent */
};

/* Frees d's strings and resets it (counters -1). */
void gq_llm_delta_clear(struct gq_llm_delta *d);

/*
 * One line of an OpenAI-compatible SSE stream (from gq_lines).  A
 * "data: {chunk}" line gives choices[0].delta.content and finish_reason,
 * and usage and llama.cpp's timings where present (llama.cpp sends them
 * in the last chunk, vLLM in a last chunk with empty choices); "data:
 * [DONE]" gives done = 1.  Both set *is_event = 1.  Blank lines,
 * comments (":"), other fields ("event:", "id:", "retry:") and empty data
 * give 0 with *is_event = 0.  Returns GQ_EIO for an error event: an
 * "error: {...}" line (llama.cpp) or a data chunk {"error": ...}; then
 * err holds the backend's message.
 */
int gq_parse_openai_sse_line(const char *line, size_t len,
                             struct gq_llm_delta *out, int *is_event,
                             char *err, size_t errlen);

/*
 * One line of an Ollama NDJSON stream (/api/chat: message.content;
 * /api/generate: response).  The last has done:true, done_reason
 * (-> finish_reason), prompt_eval_count and eval_count (-> tokens),
 * prompt_eval_duration and eval_duration (ns -> ms).  A blank line gives
 * an empty delta.  Returns GQ_EIO for {"error": "..."}.
 */
int gq_parse_ollama_line(const char *line, size_t len,
                         struct gq_llm_delta *out, char *err, size_t errlen);

/* A whole, non-streamed reply: an OpenAI chat.completion
 * (choices[0].message.content, finish_reason, usage, llama.cpp timings)
 * or Ollama's single object.  Sets done = 1.  Errors as above. */
int gq_parse_openai_full(const char *body, size_t len,
                         struct gq_llm_delta *out, char *err, size_t errlen);
int gq_parse_ollama_full(const char *body, size_t len,
                         struct gq_llm_delta *out, char *err, size_t errlen);

/* --- errors --- */

/*
 * The message of an error reply, for logs and job errors: from
 * {"error":{"message":...}} (llama.cpp, OpenAI), {"error":"..."}
 * (Ollama), {"message":...} or {"detail":"..."}, else the body itself as
 * text (whisper.cpp answers "Invalid request").  Writes at most msglen
 * bytes with the NUL: trimmed, control characters folded into one space,
 * invalid UTF-8 replaced by '?', cut at a character boundary with "..."
 * when too long.  Never fails; "" for an empty body.
 */
void gq_parse_error_message(const char *body, size_t len, char *msg,
                            size_t msglen);

#endif
