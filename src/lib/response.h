/*
 * response.h - what libgpuq reads out of a reply (prefix
 * gpuq__response_): the API's error body {"error": {"code", "message",
 * "field"}} and a one-line description of an error reply.
 */
#ifndef GPUQ_LIB_RESPONSE_H
#define GPUQ_LIB_RESPONSE_H

#include <stddef.h>

#include <gpuq.h>

/*
 * Fills r->error_code, error_message and error_field (malloc'd copies)
 * from r->body when it is an API error body; each stays NULL when absent
 * or not a string, and all do when the body is not JSON.  Returns 0, or
 * GPUQ_ENOMEM (the fields found so far are kept).
 */
int gpuq__response_parse_error(struct gpuq_response *r);

/*
 * Describes an error reply as one line into buf (len bytes, cut to fit):
 * "HTTP 409 bad_state: job j4 is succeeded (field: id) (retry after 2s)",
 * or "HTTP 502: <the first 200 bytes of the body>" when it has no API
 * error.  Control characters become spaces.
 */
void gpuq__response_describe(const struct gpuq_response *r, char *buf,
                             size_t len);

#endif
