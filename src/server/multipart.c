/* multipart.c - see multipart.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../core/err.h"
#include "multipart.h"

static const char *
memfind(const char *h, size_t hl, const char *n, size_t nl)
{
    if (nl == 0 || hl < nl)
        return NULL;
    for (const char *p = h; (size_t)(p - h) <= hl - nl; p++) {
        p = memchr(p, n[0], hl - nl - (size_t)(p - h) + 1);
        if (p == NULL)
            return NULL;
        if (memcmp(p, n, nl) == 0)
            return p;
    }
    return NULL;
}

/* Copies the value of param="..." (or param=token) from a header line. */
static void
header_param(const char *line, size_t len, const char *param, char *out,
             size_t outlen)
{
    size_t pl = strlen(param);
    out[0] = '\0';
    for (size_t i = 0; i + pl + 1 < len; i++) {
        if ((i == 0 || line[i - 1] == ' ' || line[i - 1] == ';') &&
            strncasecmp(line + i, param, pl) == 0 && line[i + pl] == '=') {
            const char *v = line + i + pl + 1, *end = line + len;
            size_t n = 0;
            if (v < end && *v == '"') {
                v++;
                while (v + n < end && v[n] != '"')
                    n++;
            } else {
                while (v + n < end && v[n] != ';' && v[n] != ' ')
                    n++;
            }
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

int
gq_mp_parse(const char *ct, const char *body, size_t len,
            struct gq_mp_part *parts, char *msg, size_t msglen)
{
    char boundary[128], delim[136];
    int n = 0;
    if (ct == NULL || strncasecmp(ct, "multipart/form-data", 19) != 0) {
        snprintf(msg, msglen, "the body must be multipart/form-data");
        return GQ_EINVAL;
    }
    header_param(ct, strlen(ct), "boundary", boundary, sizeof boundary);
    if (boundary[0] == '\0') {
        snprintf(msg, msglen, "multipart/form-data without a boundary");
        return GQ_EINVAL;
    }
    /* An empty body may be NULL (evbuffer_pullup of nothing), and even
     * NULL + 0 is undefined. */
    if (body == NULL) {
        snprintf(msg, msglen, "no multipart boundary in the body");
        return GQ_EINVAL;
    }
    int dl = snprintf(delim, sizeof delim, "--%s", boundary);
    const char *p = memfind(body, len, delim, (size_t)dl);
    const char *end = body + len;
    if (p == NULL) {
        snprintf(msg, msglen, "no multipart boundary in the body");
        return GQ_EINVAL;
    }
    for (;;) {
        p += dl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return n; /* the closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            break;
        p += 2;
        const char *hend = memfind(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hend == NULL)
            break;
        if (n == GQ_MP_MAX_PARTS) {
            snprintf(msg, msglen, "more than %d multipart fields",
                     GQ_MP_MAX_PARTS);
            return GQ_EINVAL;
        }
        struct gq_mp_part *pt = &parts[n];
        memset(pt, 0, sizeof *pt);
        for (const char *l = p; l < hend;) {
            const char *le = memfind(l, (size_t)(hend - l), "\r\n", 2);
            if (le == NULL)
                le = hend;
            if ((size_t)(le - l) > 20 &&
                strncasecmp(l, "Content-Disposition:", 20) == 0) {
                header_param(l, (size_t)(le - l), "name", pt->name,
                             sizeof pt->name);
                header_param(l, (size_t)(le - l), "filename", pt->filename,
                             sizeof pt->filename);
            }
            l = le + 2;
        }
        pt->data = hend + 4;
        char next[140];
        int nl = snprintf(next, sizeof next, "\r\n%s", delim);
        const char *q = memfind(pt->data, (size_t)(end - pt->data), next,
                                (size_t)nl);
        if (q == NULL)
            break;
        pt->len = (size_t)(q - pt->data);
        if (pt->name[0])
            n++;
        p = q + 2;
    }
    snprintf(msg, msglen, "malformed multipart body");
    return GQ_EINVAL;
}

const struct gq_mp_part *
gq_mp_get(const struct gq_mp_part *parts, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(parts[i].name, name) == 0)
            return &parts[i];
    return NULL;
}
