/* ui.c - placeholder until the dashboard lands: no files yet. */
#include "../core/err.h"
#include "ui.h"

int
gq_ui_serve(struct evhttp_request *req, const char *path)
{
    (void)req;
    (void)path;
    return GQ_ENOENT;
}
