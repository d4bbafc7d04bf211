/* log.c - see log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

int gq_log_level = GQ_LOG_INFO;

void
gq_log(int level, const char *fmt, ...)
{
    static int journal = -1;
    static const char *words[] = {"emerg", "alert", "crit", "error",
                                  "warning", "notice", "info", "debug"};
    char line[1024];
    va_list ap;
    if (level > gq_log_level)
        return;
    if (journal < 0)
        journal = getenv("JOURNAL_STREAM") != NULL;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (journal)
        fprintf(stderr, "<%d>%s\n", level, line);
    else
        fprintf(stderr, "gpuqd: %s: %s\n", words[level & 7], line);
}
