/*
 * store.h - durable job storage, behind an interface.
 *
 * The daemon writes every change through these calls inside a batch
 * (gq_store_begin .. gq_store_commit); it sends no reply that
 * acknowledges a change before the batch holding it has committed.  One
 * batch per event-loop turn gives group commit: one fsync per turn.
 *
 * SQLite is the implementation today (store_sqlite.c); PostgreSQL will be
 * another table of the same operations.  All calls return 0 or a negative
 * GQ_E* code (GQ_ESTOREFULL for a full disk, GQ_ESTORE for other I/O
 * errors, GQ_ENOENT for a missing row) and fill err (may be NULL) with a
 * message.  A store is used from one thread.
 */
#ifndef GQ_STORE_H
#define GQ_STORE_H

#include <stdint.h>

#include "../core/job.h"

#define GQ_STORE_ERRLEN 256

/*
 * One job as stored.  Strings are owned by the record (malloc'd, may be
 * NULL) and freed by gq_jobrec_clear.  JSON fields hold JSON text.
 */
struct gq_jobrec {
    uint64_t seq;          /* id number; set by insert */
    char cls[64];          /* class name */
    int32_t priority;
    int state;             /* enum gq_state */
    int kind;              /* enum gq_kind */
    int attempts;
    uint64_t token;        /* fencing token of the current/last grant */
    char *payload;         /* JSON */
    char *metadata;        /* JSON object or NULL */
    char *idem_key;        /* idempotency key or NULL */
    char *result;          /* JSON or NULL */
    char *progress;        /* JSON or NULL */
    char *err_code;        /* error.code or NULL */
    char *err_msg;         /* error.message or NULL */
    char *holder;          /* worker or lock holder name, or NULL */
    char *deps;            /* JSON array of seqs it waits for, or NULL;
                              fixed at submit */
    char *callback_url;    /* where state changes are POSTed, or NULL;
                              fixed at submit */
    int64_t created_us;    /* wall clock, microseconds since the epoch */
    int64_t started_us;    /* start of the last grant; 0 = never */
    int64_t ended_us;      /* end of the last grant; 0 = none */
    int64_t finished_us;   /* reached a terminal state; 0 = not yet */
    int64_t ready_at_us;   /* backoff end; 0 = none */
    int64_t deadline_us;   /* queue-timeout deadline; 0 = none */
    int64_t wait_us;       /* total time queued so far */
    int64_t run_us;        /* total time granted so far */
};

void gq_jobrec_clear(struct gq_jobrec *r); /* frees strings, zeroes r */

/* Filter for listing; zero/NULL fields do not filter. */
struct gq_store_filter {
    const char *cls;
    int state;             /* -1 = any */
    uint64_t after;        /* seq > after (cursor) */
    int limit;             /* 1..1000 */
};

/* Callbacks return 0 to go on, nonzero to stop (passed back). The record
 * is only valid during the call.  A callback may call other operations of
 * the store, but must not start the same listing again. */
typedef int (*gq_store_job_fn)(void *ud, const struct gq_jobrec *r);
typedef int (*gq_store_event_fn)(void *ud, int64_t t_us, const char *state,
                                 const char *detail);
/* A pending callback delivery (see the cb_* operations). */
struct gq_callback {
    int64_t id;
    uint64_t seq;          /* the job */
    const char *event;     /* "started", "succeeded", "failed" */
    const char *url;
    const char *body;      /* JSON */
    int attempts;          /* deliveries tried so far */
    int64_t next_us;       /* wall clock of the next try */
};
typedef int (*gq_store_cb_fn)(void *ud, const struct gq_callback *cb);

struct gq_store;

struct gq_store_ops {
    const char *name;
    void (*close)(struct gq_store *st);
    int (*begin)(struct gq_store *st, char *err);
    /* On failure the batch is rolled back (rollback is then a no-op). */
    int (*commit)(struct gq_store *st, char *err);
    /* Discards the open batch; does nothing when none is open. */
    void (*rollback)(struct gq_store *st);
    /* Inserts r (r->seq out: a new id that never repeats; only an id
     * from a batch that was rolled back may be issued again).  A
     * duplicate idem_key gives GQ_EINVAL. */
    int (*insert)(struct gq_store *st, struct gq_jobrec *r, char *err);
    /* Writes every mutable field of r over the row r->seq: all but
     * cls, kind, payload, metadata, idem_key and created_us, which are
     * fixed at insert.  GQ_ENOENT if there is no such row. */
    int (*update)(struct gq_store *st, const struct gq_jobrec *r,
                  char *err);
    /* Appends to the job's history; detail is JSON or NULL. */
    int (*event)(struct gq_store *st, uint64_t seq, int64_t t_us,
                 const char *state, const char *detail, char *err);
    int (*get)(struct gq_store *st, uint64_t seq, struct gq_jobrec *out,
               char *err);
    /* Finds a job by idempotency key; GQ_ENOENT if none. */
    int (*find_key)(struct gq_store *st, const char *key, uint64_t *seq,
                    char *err);
    /* Jobs matching f in seq order; f NULL lists all, a limit outside
     * 1..1000 means 1000. */
    int (*list)(struct gq_store *st, const struct gq_store_filter *f,
                gq_store_job_fn fn, void *ud, char *err);
    /* Every running job, then every queued job, each in seq order
     * (start-up recovery). */
    int (*load_active)(struct gq_store *st, gq_store_job_fn fn, void *ud,
                       char *err);
    /* A job's history, oldest first. */
    int (*events)(struct gq_store *st, uint64_t seq, gq_store_event_fn fn,
                  void *ud, char *err);
    /* Named 64-bit counters (e.g. "fence"); get gives 0 when unset. */
    int (*meta_get)(struct gq_store *st, const char *key, int64_t *val,
                    char *err);
    int (*meta_set)(struct gq_store *st, const char *key, int64_t val,
                    char *err);
    /* Deletes terminal jobs finished before before_us, and their
     * events; *n gets the count. */
    int (*purge)(struct gq_store *st, int64_t before_us, int64_t *n,
                 char *err);
    /* Callback deliveries waiting to succeed: added in the batch of the
     * state change they report, so a restart does not drop them. */
    int (*cb_add)(struct gq_store *st, struct gq_callback *cb, char *err);
    int (*cb_retry)(struct gq_store *st, int64_t id, int attempts,
                    int64_t next_us, char *err);
    int (*cb_done)(struct gq_store *st, int64_t id, char *err);
    int (*cb_load)(struct gq_store *st, gq_store_cb_fn fn, void *ud,
                   char *err);
    /* The file descriptor whose fdatasync() makes every committed batch
     * durable, or -1 when commit itself is durable (or nothing is). */
    int (*sync_fd)(struct gq_store *st);
};

struct gq_store {
    const struct gq_store_ops *ops;
};

/* Options of the SQLite store. */
struct gq_sqlite_opts {
    int synchronous;       /* 2 = FULL (default), 1 = NORMAL, 0 = OFF */
    /* With FULL: let commit return before the WAL is on disk, and have
     * the caller make it durable with fdatasync(sync_fd()) (off the
     * event loop) before acknowledging anything.  Same durability, but
     * the loop never waits for the disk. */
    int deferred_sync;
};

/*
 * Opens (creating if needed) the SQLite store at path, in WAL mode,
 * migrating its schema to the current version.  Returns NULL on failure
 * with err filled.  Close with st->ops->close(st).
 */
struct gq_store *gq_store_sqlite_open(const char *path,
                                      const struct gq_sqlite_opts *o,
                                      char *err);

/*
 * Fault injection (tests, --fault flag of the daemon): after `after`
 * more successful file writes or syncs, every write and sync of the
 * SQLite files fails with kind (GQ_FAULT_FULL: SQLITE_FULL,
 * GQ_FAULT_IO: SQLITE_IOERR) until gq_store_fault(GQ_FAULT_NONE, 0).
 * Process-wide; done with a shim VFS registered on first use.
 */
enum gq_fault { GQ_FAULT_NONE = 0, GQ_FAULT_FULL = 1, GQ_FAULT_IO = 2 };
void gq_store_fault(enum gq_fault kind, int after);

/* Convenience wrappers: st->ops->x(st, ...). */
#define gq_store_close(st) ((st)->ops->close(st))
#define gq_store_begin(st, e) ((st)->ops->begin((st), (e)))
#define gq_store_commit(st, e) ((st)->ops->commit((st), (e)))
#define gq_store_rollback(st) ((st)->ops->rollback(st))

#endif
