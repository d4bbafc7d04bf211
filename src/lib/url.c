/*
 * url.c - base URLs, percent-escaping and request paths.
 */
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gpuq.h>

/*
 * Length of url without its trailing '/'s, or 0 when it is no good: not
 * http:// or https://, no host after the scheme, or too long.
 */
static size_t
base_len(const char *url)
{
    size_t n, scheme;

    if (!url)
        return 0;
    if (strncmp(url, "http://", 7) == 0)
        scheme = 7;
    else if (strncmp(url, "https://", 8) == 0)
        scheme = 8;
    else
        return 0;
    n = strlen(url);
    while (n > scheme && url[n - 1] == '/')
        n--;
    if (n == scheme || n >= GPUQ_URL_MAX)
        return 0;
    return n;
}

int
gpuq_url_check(const char *url)
{
    return base_len(url) > 0 ? 0 : GPUQ_EURL;
}

int
gpuq__url_base(const char *url, char *base, size_t len)
{
    const char *env = getenv("GPUQ_URL");
    size_t n;

    if (!url)
        url = env && env[0] ? env : GPUQ_DEFAULT_URL;
    n = base_len(url);
    if (n == 0 || n >= len)
        return GPUQ_EURL;
    memcpy(base, url, n);
    base[n] = '\0';
    return 0;
}

int
gpuq_escape(const char *s, char *buf, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;

    if (len == 0)
        return GPUQ_EINVAL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
            ch == '_' || ch == '~') {
            if (k + 1 >= len)
                return GPUQ_EINVAL;
            buf[k++] = (char)ch;
        } else {
            if (k + 3 >= len)
                return GPUQ_EINVAL;
            buf[k++] = '%';
            buf[k++] = hex[ch >> 4];
            buf[k++] = hex[ch & 15];
        }
    }
    buf[k] = '\0';
    return 0;
}

void
gpuq__path_init(struct gpuq__path *p, const char *lit)
{
    p->len = 0;
    p->s[0] = '\0';
    p->query = 0;
    p->overflow = 0;
    gpuq__path_lit(p, lit);
}

void
gpuq__path_lit(struct gpuq__path *p, const char *lit)
{
    size_t n = strlen(lit);

    if (p->overflow || n >= sizeof(p->s) - p->len) {
        p->overflow = 1;
        return;
    }
    memcpy(p->s + p->len, lit, n + 1);
    p->len += n;
}

/* Appends raw escaped, or marks the overflow. */
static void
path_esc(struct gpuq__path *p, const char *raw)
{
    if (p->overflow ||
        gpuq_escape(raw, p->s + p->len, sizeof(p->s) - p->len) != 0) {
        p->overflow = 1;
        p->s[p->len] = '\0';
        return;
    }
    p->len += strlen(p->s + p->len);
}

void
gpuq__path_seg(struct gpuq__path *p, const char *raw)
{
    gpuq__path_lit(p, "/");
    path_esc(p, raw);
}

void
gpuq__path_query(struct gpuq__path *p, const char *name, const char *value)
{
    if (!value)
        return;
    gpuq__path_lit(p, p->query ? "&" : "?");
    p->query = 1;
    gpuq__path_lit(p, name);
    gpuq__path_lit(p, "=");
    path_esc(p, value);
}

void
gpuq__path_query_ll(struct gpuq__path *p, const char *name, long long value)
{
    char num[32];

    snprintf(num, sizeof(num), "%lld", value);
    gpuq__path_query(p, name, num);
}
