/*
 * ui.c - the dashboard's static files, served from the binary.
 *
 * The files live in src/ui/ (plain HTML, CSS and JS; no build step) and
 * scripts/embed.sh turns them into ui_assets.inc, a table the build
 * writes beside this file's object and that is included below.  The page
 * itself only speaks the public API, so nothing here touches the daemon.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "../core/err.h"
#include "ui.h"

struct ui_file {
    const char *path;          /* "/" or "/ui/NAME" */
    const char *type;          /* Content-Type */
    const unsigned char *data; /* static; never freed */
    size_t len;                /* bytes in data */
};

#include "ui_assets.inc" /* static const struct ui_file ui_files[] */

#define UI_NFILES (sizeof ui_files / sizeof ui_files[0])

/*
 * Scripts, styles and fetches from this origin only, no inline code, no
 * frames: the page shows job metadata that anyone who can submit chose.
 */
#define UI_CSP                                                              \
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "       \
    "style-src 'self'; script-src 'self'; base-uri 'none'; "               \
    "form-action 'none'; frame-ancestors 'none'"

/* A strong validator of a file's bytes (FNV-1a, 64 bit), as an ETag. */
static void
etag_of(const struct ui_file *f, char *buf, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < f->len; i++) {
        h ^= f->data[i];
        h *= 1099511628211ULL;
    }
    snprintf(buf, n, "\"%016llx\"", (unsigned long long)h);
}

int
gq_ui_serve(struct evhttp_request *req, const char *path)
{
    const struct ui_file *f = NULL;
    char etag[24];
    if (path == NULL)
        return GQ_ENOENT;
    for (size_t i = 0; i < UI_NFILES; i++)
        if (strcmp(ui_files[i].path, path) == 0) {
            f = &ui_files[i];
            break;
        }
    if (f == NULL)
        return GQ_ENOENT;
    etag_of(f, etag, sizeof etag);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "ETag", etag);
    evhttp_add_header(h, "Content-Security-Policy", UI_CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req),
                                         "If-None-Match");
    if (inm != NULL && strcmp(inm, etag) == 0) {
        evhttp_send_reply(req, 304, "Not Modified", NULL);
        return 0;
    }
    evhttp_add_header(h, "Content-Type", f->type);
    /* The bytes are static: libevent sends them without a copy. */
    evbuffer_add_reference(evhttp_request_get_output_buffer(req), f->data,
                           f->len, NULL, NULL);
    evhttp_send_reply(req, 200, "OK", NULL);
    return 0;
}
