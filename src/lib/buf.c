/*
 * buf.c - bounded, NUL-terminated byte buffers that grow by doubling.
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include <gpuq.h>

void *(*gpuq__realloc)(void *ptr, size_t size) = realloc;

void
gpuq__buf_init(struct gpuq__buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

int
gpuq__buf_add(struct gpuq__buf *b, const void *p, size_t n)
{
    size_t want, ncap;
    char *np;

    if (n > b->max - b->len)
        return GPUQ_ETOOBIG;
    want = b->len + n + 1;
    if (want > b->cap) {
        ncap = b->cap ? b->cap : 256;
        while (ncap < want)
            ncap *= 2;
        np = gpuq__realloc(b->p, ncap);
        if (!np)
            return GPUQ_ENOMEM;
        b->p = np;
        b->cap = ncap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

void
gpuq__buf_reset(struct gpuq__buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

char *
gpuq__buf_take(struct gpuq__buf *b)
{
    char *p = b->p;

    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

void
gpuq__buf_free(struct gpuq__buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}
