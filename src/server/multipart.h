/*
 * multipart.h - a bounded parser for multipart/form-data request bodies
 * (RFC 7578), for the whisper.cpp- and OpenAI-compatible upload endpoints.
 * Parts point into the caller's body buffer; nothing is copied.
 */
#ifndef GQ_MULTIPART_H
#define GQ_MULTIPART_H

#include <stddef.h>

#define GQ_MP_MAX_PARTS 32

struct gq_mp_part {
    char name[64];            /* form field name */
    char filename[128];       /* "" when the part is not a file */
    const char *data;         /* into the body */
    size_t len;
};

/*
 * Parses body (len bytes; may be NULL when len is 0) with the boundary
 * taken from content_type ("multipart/form-data; boundary=..."), filling
 * at most GQ_MP_MAX_PARTS parts.  Returns the number of parts, or
 * GQ_EINVAL with msg set for a missing boundary, a malformed part or too
 * many parts.
 */
int gq_mp_parse(const char *content_type, const char *body, size_t len,
                struct gq_mp_part *parts, char *msg, size_t msglen);

/* The part named name, or NULL. */
const struct gq_mp_part *gq_mp_get(const struct gq_mp_part *parts, int n,
                                   const char *name);

#endif
