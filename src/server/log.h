/*
 * log.h - the daemon's one logging call.  Lines go to stderr; under
 * systemd (JOURNAL_STREAM set) each starts with a <N> priority prefix
 * that journald reads, otherwise with a level word.
 */
#ifndef GQ_LOG_H
#define GQ_LOG_H

enum { GQ_LOG_ERR = 3, GQ_LOG_WARN = 4, GQ_LOG_INFO = 6, GQ_LOG_DEBUG = 7 };

extern int gq_log_level; /* lines above this level are dropped */

void gq_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
