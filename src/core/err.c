/* err.c - names, messages and HTTP statuses of the GQ_E* codes. */
#include "err.h"

struct errinfo {
    int code;
    const char *name;
    int http;
    const char *msg;
};

static const struct errinfo errtab[] = {
#define X(name, jname, status, msg) {GQ_E##name, jname, status, msg},
    GQ_ERRNO_MAP(X)
#undef X
};

static const struct errinfo *
lookup(int err)
{
    if (err <= GQ__EFIRST || err >= GQ__ELAST)
        return 0;
    return &errtab[err - GQ__EFIRST - 1];
}

const char *
gq_err_name(int err)
{
    const struct errinfo *e = lookup(err);
    return e ? e->name : "unknown";
}

const char *
gq_err_msg(int err)
{
    const struct errinfo *e = lookup(err);
    return e ? e->msg : "unknown error";
}

int
gq_err_http(int err)
{
    const struct errinfo *e = lookup(err);
    return e ? e->http : 500;
}
