/*
 * buf.h - libgpuq's bounded byte buffer (prefix gpuq__buf_), after curl's
 * dynbuf: every buffer that holds network input has a maximum size, and
 * its bytes are always followed by a NUL so they can be used as a string.
 *
 * Allocation goes through gpuq__realloc, which tests may replace to make
 * it fail.
 */
#ifndef GPUQ_LIB_BUF_H
#define GPUQ_LIB_BUF_H

#include <stddef.h>

/* Caller-allocated; gpuq__buf_init, then gpuq__buf_free. */
struct gpuq__buf {
    char *p;    /* len bytes and a NUL, or NULL before the first byte */
    size_t len; /* bytes held, without the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* len never goes over this */
};

/* The allocator of buf.c (realloc); tests swap it to inject ENOMEM. */
extern void *(*gpuq__realloc)(void *ptr, size_t size);

/* An empty buffer that will hold at most max bytes.  Allocates nothing. */
void gpuq__buf_init(struct gpuq__buf *b, size_t max);

/*
 * Appends n bytes.  Returns 0, GPUQ_ETOOBIG when len would go over max,
 * or GPUQ_ENOMEM; on failure b is unchanged.
 */
int gpuq__buf_add(struct gpuq__buf *b, const void *p, size_t n);

/* Empties b, keeping its memory. */
void gpuq__buf_reset(struct gpuq__buf *b);

/*
 * Hands the bytes over: returns b->p (NULL when nothing was ever
 * added), which the caller frees, and leaves b empty.
 */
char *gpuq__buf_take(struct gpuq__buf *b);

/* Frees b's memory and empties it.  Safe twice. */
void gpuq__buf_free(struct gpuq__buf *b);

#endif
