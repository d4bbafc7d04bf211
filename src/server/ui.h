/*
 * ui.h - the dashboard: static files built into gpuqd (plain HTML, CSS
 * and JS with SVG, no build step), served at / and /ui/...; it reads the
 * public API (/v1/status, /v1/jobs, /v1/events) like any client.
 */
#ifndef GQ_UI_H
#define GQ_UI_H

#include <event2/http.h>

/*
 * Answers req with the built-in file for path ("/" is index.html; others
 * are "/ui/NAME").  Returns 0 when it replied, GQ_ENOENT (no reply sent)
 * when no such file exists.
 */
int gq_ui_serve(struct evhttp_request *req, const char *path);

#endif
