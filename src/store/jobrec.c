/*
 * jobrec.c - the stored job record, shared by every store backend.
 */
#include <stdlib.h>
#include <string.h>

#include "store.h"

void
gq_jobrec_clear(struct gq_jobrec *r)
{
    free(r->payload);
    free(r->metadata);
    free(r->idem_key);
    free(r->result);
    free(r->progress);
    free(r->err_code);
    free(r->err_msg);
    free(r->holder);
    free(r->deps);
    free(r->callback_url);
    memset(r, 0, sizeof *r);
}
