/*
 * errors.c - the names and sentences of libgpuq's error codes, all from
 * the one list GPUQ_ERRNO_MAP in gpuq.h, and the library's version.
 */
#include <gpuq.h>

const char *
gpuq_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define X(name, value, msg)                                                 \
    case GPUQ_E##name:                                                      \
        return msg;
        GPUQ_ERRNO_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *
gpuq_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define X(name, value, msg)                                                 \
    case GPUQ_E##name:                                                      \
        return "E" #name;
        GPUQ_ERRNO_MAP(X)
#undef X
    default:
        return "EUNKNOWN";
    }
}

const char *
gpuq_version(void)
{
    return GPUQ_VERSION;
}
