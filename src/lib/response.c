/*
 * response.c - replies: their lifetime and their error bodies.
 */
#include "response.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void
gpuq_response_init(struct gpuq_response *r)
{
    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
}

void
gpuq_response_free(struct gpuq_response *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->error_code);
    free(r->error_message);
    free(r->error_field);
    gpuq_response_init(r);
}

/* A copy of obj[key] when it is a string, in *out.  0 or GPUQ_ENOMEM. */
static int
copy_str(json_t *obj, const char *key, char **out)
{
    json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (!json_is_string(v))
        return 0;
    *out = strdup(json_string_value(v));
    return *out ? 0 : GPUQ_ENOMEM;
}

int
gpuq__response_parse_error(struct gpuq_response *r)
{
    json_t *root, *e;
    int err = 0;

    free(r->error_code);
    free(r->error_message);
    free(r->error_field);
    r->error_code = r->error_message = r->error_field = NULL;
    if (!r->body || r->len == 0)
        return 0;
    root = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
    e = json_is_object(root) ? json_object_get(root, "error") : NULL;
    if (json_is_object(e)) {
        err = copy_str(e, "code", &r->error_code);
        if (err == 0)
            err = copy_str(e, "message", &r->error_message);
        if (err == 0)
            err = copy_str(e, "field", &r->error_field);
    }
    json_decref(root);
    return err;
}

/* Appends to buf as snprintf would, never past len. */
static void
append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*used + 1 >= len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *used += (size_t)n < len - *used ? (size_t)n : len - *used - 1;
}

void
gpuq__response_describe(const struct gpuq_response *r, char *buf, size_t len)
{
    size_t used = 0, i;

    if (len == 0)
        return;
    buf[0] = '\0';
    if (r->error_code || r->error_message)
        append(buf, len, &used, "HTTP %ld %s: %s", r->status,
               r->error_code ? r->error_code : "error",
               r->error_message ? r->error_message : "(no message)");
    else
        append(buf, len, &used, "HTTP %ld: %.200s", r->status,
               r->body && r->len > 0 ? r->body : "(no body)");
    if (r->error_field)
        append(buf, len, &used, " (field: %s)", r->error_field);
    if (r->retry_after >= 0)
        append(buf, len, &used, " (retry after %lds)", r->retry_after);
    for (i = 0; i < used; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = ' ';
}
