/*
 * store_sqlite.c - the SQLite store: one database file in WAL mode.
 *
 * Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT)
 * and reset after each use.  The daemon wraps a whole event-loop turn in
 * gq_store_begin .. gq_store_commit, so a turn costs one WAL append and,
 * with synchronous = FULL, one fsync (group commit).  The file is always
 * opened through the "gqfault" shim VFS (bottom of this file), which
 * passes every call through to the default VFS unless a test or the
 * daemon's --fault flag arms gq_store_fault().
 *
 * On-disk format, schema version 3 (PRAGMA user_version = 3):
 *
 *   jobs - one row per job not yet purged.
 *     seq          INTEGER PRIMARY KEY AUTOINCREMENT.  The job id.
 *                  AUTOINCREMENT (table sqlite_sequence) makes ids never
 *                  repeat, even after the highest row was purged.
 *     cls          TEXT NOT NULL, the class name.
 *     priority     INTEGER NOT NULL.
 *     state        INTEGER NOT NULL, enum gq_state (0 queued, 1 running,
 *                  2 succeeded, 3 failed, 4 cancelled, 5 expired, 6 dead).
 *     kind         INTEGER NOT NULL, enum gq_kind (0 job, 1 lock).
 *     attempts     INTEGER NOT NULL.
 *     token        INTEGER NOT NULL, the uint64 fencing token stored as
 *                  the int64 with the same bits.
 *     payload, metadata, result, progress
 *                  TEXT, JSON text or NULL.
 *     idem_key     TEXT, the idempotency key or NULL; unique where not
 *                  NULL (index jobs_idem).
 *     err_code, err_msg, holder
 *                  TEXT or NULL.
 *     deps         TEXT, a JSON array of the seqs the job waits for, or
 *                  NULL (added by version 2).
 *     callback_url TEXT or NULL (added by version 3).
 *   callbacks - deliveries of callback POSTs not yet made (version 3).
 *     id           INTEGER PRIMARY KEY AUTOINCREMENT.
 *     seq          INTEGER NOT NULL, the job.
 *     event        TEXT NOT NULL: started, succeeded, failed.
 *     url, body    TEXT NOT NULL: where, and the JSON to POST.
 *     attempts     INTEGER NOT NULL, tries so far.
 *     next_us      INTEGER NOT NULL, wall clock of the next try.
 *     created_us, started_us, ended_us, finished_us, ready_at_us,
 *     deadline_us, wait_us, run_us
 *                  INTEGER NOT NULL, microseconds (0 = unset); see
 *                  struct gq_jobrec.
 *   job_events - each job's history.
 *     id           INTEGER PRIMARY KEY: append order, read oldest first.
 *     seq          INTEGER NOT NULL, the job (no foreign key: purge
 *                  deletes a job's events with it).
 *     t_us         INTEGER NOT NULL, wall clock of the event.
 *     state        TEXT NOT NULL, a state name ("queued", ...).
 *     detail       TEXT, JSON or NULL.
 *   meta - named 64-bit counters.
 *     key          TEXT PRIMARY KEY.
 *     val          INTEGER NOT NULL.
 *   Indexes: jobs_state (state, seq) and jobs_cls (cls, seq) for listing
 *   and start-up recovery; jobs_finished (finished_us) for purge;
 *   jobs_idem (idem_key) UNIQUE WHERE idem_key IS NOT NULL;
 *   job_events_seq (seq).
 *
 * The integer values of enum gq_state and enum gq_kind are on disk: new
 * values are appended, existing ones never renumbered (the static
 * asserts below trip when the enums change).
 *
 * Changing the schema:
 *  1. Append a migration to `migrations` below; never edit one that has
 *     shipped.  Entry i takes the file from version i to version i + 1
 *     and runs in its own BEGIN IMMEDIATE transaction together with the
 *     PRAGMA user_version bump, so a crash leaves the old or the new
 *     version, never half of one.
 *  2. Keep it additive where possible (ALTER TABLE ADD COLUMN with a
 *     default, CREATE INDEX); to change a column, create the new table,
 *     INSERT ... SELECT, DROP the old one and rename, in that migration.
 *  3. Update the statements in stmt_sql and this comment, and add a test
 *     that opens a file of the previous version.
 *  An older gpuqd refuses a file whose user_version is newer than its
 *  own (GQ_ESTORE at open) rather than guess.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "../core/err.h"
#include "store.h"

_Static_assert(GQ_QUEUED == 0 && GQ_RUNNING == 1 && GQ_SUCCEEDED == 2 &&
                   GQ_FAILED == 3 && GQ_CANCELLED == 4 &&
                   GQ_EXPIRED == 5 && GQ_DEAD == 6 && GQ_NSTATES == 7,
               "enum gq_state is on disk: update the SQL below");
_Static_assert(GQ_KIND_JOB == 0 && GQ_KIND_LOCK == 1,
               "enum gq_kind is on disk");

#define BUSY_TIMEOUT_MS 5000
#define LIST_MAX 1000
#define FAULT_VFS "gqfault"

/* Terminal and active states as SQL, matching gq_state_terminal(). */
#define SQL_TERMINAL "state IN (2, 3, 4, 5, 6)"

/* Migration i takes user_version i to i + 1. */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE jobs ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " cls TEXT NOT NULL,"
    " priority INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " kind INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " token INTEGER NOT NULL,"
    " payload TEXT,"
    " metadata TEXT,"
    " idem_key TEXT,"
    " result TEXT,"
    " progress TEXT,"
    " err_code TEXT,"
    " err_msg TEXT,"
    " holder TEXT,"
    " created_us INTEGER NOT NULL,"
    " started_us INTEGER NOT NULL,"
    " ended_us INTEGER NOT NULL,"
    " finished_us INTEGER NOT NULL,"
    " ready_at_us INTEGER NOT NULL,"
    " deadline_us INTEGER NOT NULL,"
    " wait_us INTEGER NOT NULL,"
    " run_us INTEGER NOT NULL);"
    "CREATE INDEX jobs_state ON jobs (state, seq);"
    "CREATE INDEX jobs_cls ON jobs (cls, seq);"
    "CREATE INDEX jobs_finished ON jobs (finished_us);"
    "CREATE UNIQUE INDEX jobs_idem ON jobs (idem_key)"
    " WHERE idem_key IS NOT NULL;"
    "CREATE TABLE job_events ("
    " id INTEGER PRIMARY KEY,"
    " seq INTEGER NOT NULL,"
    " t_us INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " detail TEXT);"
    "CREATE INDEX job_events_seq ON job_events (seq);"
    "CREATE TABLE meta ("
    " key TEXT PRIMARY KEY,"
    " val INTEGER NOT NULL);",
    /* 2: dependencies (a JSON array of job seqs, fixed at submit). */
    "ALTER TABLE jobs ADD COLUMN deps TEXT;",
    /* 3: callbacks: the URL per job, and deliveries not yet made. */
    "ALTER TABLE jobs ADD COLUMN callback_url TEXT;"
    "CREATE TABLE callbacks ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " seq INTEGER NOT NULL,"
    " event TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " next_us INTEGER NOT NULL);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* Columns of a job row, in the order row_to_rec() reads them. */
#define JOB_COLS                                                            \
    "seq, cls, priority, state, kind, attempts, token, payload, metadata,"  \
    " idem_key, result, progress, err_code, err_msg, holder, created_us,"   \
    " started_us, ended_us, finished_us, ready_at_us, deadline_us,"         \
    " wait_us, run_us, deps, callback_url"

/* The list statements all number their parameters alike:
 * ?1 cls, ?2 state, ?3 after, ?4 limit. */
enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_INSERT,
    S_UPDATE,
    S_EVENT,
    S_GET,
    S_FIND_KEY,
    S_LIST_ALL,
    S_LIST_CLS,
    S_LIST_STATE,
    S_LIST_BOTH,
    S_ACTIVE,
    S_ACTIVE_QUEUED,
    S_EVENTS,
    S_META_GET,
    S_META_SET,
    S_PURGE_EVENTS,
    S_PURGE_JOBS,
    S_CB_ADD,
    S_CB_RETRY,
    S_CB_DONE,
    S_CB_LOAD,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT gq_purge",
    [S_RELEASE] = "RELEASE gq_purge",
    [S_ROLLBACK_TO] = "ROLLBACK TO gq_purge",
    [S_INSERT] =
        "INSERT INTO jobs (cls, priority, state, kind, attempts, token,"
        " payload, metadata, idem_key, result, progress, err_code, err_msg,"
        " holder, created_us, started_us, ended_us, finished_us,"
        " ready_at_us, deadline_us, wait_us, run_us, deps, callback_url)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
        " ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    [S_UPDATE] =
        "UPDATE jobs SET priority = ?2, state = ?3, attempts = ?4,"
        " token = ?5, result = ?6, progress = ?7, err_code = ?8,"
        " err_msg = ?9, holder = ?10, started_us = ?11, ended_us = ?12,"
        " finished_us = ?13, ready_at_us = ?14, deadline_us = ?15,"
        " wait_us = ?16, run_us = ?17 WHERE seq = ?1",
    [S_EVENT] = "INSERT INTO job_events (seq, t_us, state, detail)"
                " VALUES (?1, ?2, ?3, ?4)",
    [S_GET] = "SELECT " JOB_COLS " FROM jobs WHERE seq = ?1",
    [S_FIND_KEY] = "SELECT seq FROM jobs WHERE idem_key = ?1",
    [S_LIST_ALL] = "SELECT " JOB_COLS " FROM jobs WHERE seq > ?3"
                   " ORDER BY seq LIMIT ?4",
    [S_LIST_CLS] = "SELECT " JOB_COLS " FROM jobs WHERE cls = ?1"
                   " AND seq > ?3 ORDER BY seq LIMIT ?4",
    [S_LIST_STATE] = "SELECT " JOB_COLS " FROM jobs WHERE state = ?2"
                     " AND seq > ?3 ORDER BY seq LIMIT ?4",
    [S_LIST_BOTH] = "SELECT " JOB_COLS " FROM jobs WHERE cls = ?1"
                    " AND state = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
    /* Recovery reads running then queued jobs, each along jobs_state in
     * seq order: one IN (...) ORDER BY seq would sort every row. */
    [S_ACTIVE] = "SELECT " JOB_COLS " FROM jobs WHERE state = 1"
                 " ORDER BY seq",
    [S_ACTIVE_QUEUED] = "SELECT " JOB_COLS " FROM jobs WHERE state = 0"
                        " ORDER BY seq",
    [S_EVENTS] = "SELECT t_us, state, detail FROM job_events"
                 " WHERE seq = ?1 ORDER BY id",
    [S_META_GET] = "SELECT val FROM meta WHERE key = ?1",
    [S_META_SET] = "INSERT INTO meta (key, val) VALUES (?1, ?2)"
                   " ON CONFLICT (key) DO UPDATE SET val = excluded.val",
    /* Purge walks jobs_finished: without statistics the planner would
     * pick jobs_state and visit every terminal job ever kept. */
    [S_PURGE_EVENTS] = "DELETE FROM job_events WHERE seq IN (SELECT seq"
                       " FROM jobs INDEXED BY jobs_finished WHERE "
                       SQL_TERMINAL " AND finished_us > 0"
                       " AND finished_us < ?1)",
    /* finished_us > 0 keeps the index walk off the unfinished jobs. */
    [S_PURGE_JOBS] = "DELETE FROM jobs INDEXED BY jobs_finished WHERE "
                     SQL_TERMINAL " AND finished_us > 0 AND finished_us < ?1",
    [S_CB_ADD] = "INSERT INTO callbacks (seq, event, url, body, attempts,"
                 " next_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_CB_RETRY] = "UPDATE callbacks SET attempts = ?2, next_us = ?3"
                   " WHERE id = ?1",
    [S_CB_DONE] = "DELETE FROM callbacks WHERE id = ?1",
    [S_CB_LOAD] = "SELECT id, seq, event, url, body, attempts, next_us"
                  " FROM callbacks ORDER BY id",
};

/*
 * WAL checkpoints run on a thread of their own with its own connection,
 * so the commit on the daemon's event loop never pays for copying the
 * WAL into the database file (auto-checkpoint is off on the main
 * connection).  The WAL hook, called after each commit, wakes the thread
 * once the WAL holds CKPT_PAGES pages.
 */
#define CKPT_PAGES 1000

struct gq_sqlite {
    struct gq_store base;  /* first: gq_store * converts to this */
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT]; /* prepared once, reset after each use */
    char *path;
    pthread_t ckpt;        /* the checkpointer */
    int ckpt_running;
    pthread_mutex_t mu;    /* guards want and stop */
    pthread_cond_t cv;
    int want, stop;
    atomic_int checkpoints; /* done by the thread, for tests */
    int wal_fd;            /* deferred_sync: the WAL, to fdatasync */
    int sync_level;        /* PRAGMA synchronous for the checkpointer */
};

static const struct gq_store_ops sqlite_ops;

static int fault_register(void);

/* ---- errors ------------------------------------------------------ */

/* SQLite primary result codes that map to something other than
 * GQ_ESTORE. */
static const struct {
    int sqlite;
    int gq;
} errmap[] = {
    {SQLITE_FULL, GQ_ESTOREFULL},
    {SQLITE_CONSTRAINT, GQ_EINVAL}, /* e.g. a duplicate idempotency key */
    {SQLITE_NOMEM, GQ_ENOMEM},
    {SQLITE_TOOBIG, GQ_ETOOBIG},
};

static int
map_rc(int rc)
{
    for (size_t i = 0; i < sizeof errmap / sizeof errmap[0]; i++)
        if ((rc & 0xff) == errmap[i].sqlite)
            return errmap[i].gq;
    return GQ_ESTORE;
}

/* Fills err with "what: <SQLite's message>" and returns the GQ_E code.
 * Call before resetting the statement that failed. */
static int
fail(sqlite3 *db, int rc, const char *what, char *err)
{
    if (err)
        snprintf(err, GQ_STORE_ERRLEN, "%s: %s", what,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return map_rc(rc);
}

static int
fail_msg(int code, const char *msg, char *err)
{
    if (err)
        snprintf(err, GQ_STORE_ERRLEN, "%s", msg);
    return code;
}

/* ---- helpers ------------------------------------------------------ */

static struct gq_sqlite *
to_sqlite(struct gq_store *st)
{
    return (struct gq_sqlite *)st;
}

static sqlite3_int64
u2i(uint64_t u)
{
    sqlite3_int64 i;
    memcpy(&i, &u, sizeof i);
    return i;
}

static uint64_t
i2u(sqlite3_int64 i)
{
    uint64_t u;
    memcpy(&u, &i, sizeof u);
    return u;
}

static int
bind_str(sqlite3_stmt *s, int i, const char *v)
{
    if (!v)
        return sqlite3_bind_null(s, i);
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Runs a statement that returns no rows of interest, then resets it. */
static int
run(struct gq_sqlite *s, sqlite3_stmt *stmt, const char *what, char *err)
{
    int rc = sqlite3_step(stmt);
    int ret = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        ret = fail(s->db, rc, what, err);
    sqlite3_reset(stmt);
    return ret;
}

/* Copies column i as a string: a malloc'd copy when copy is set, else
 * SQLite's own buffer (valid until the statement steps or resets).
 * Returns SQLITE_OK or SQLITE_NOMEM. */
static int
col_str(sqlite3_stmt *s, int i, int copy, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return SQLITE_OK;
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t)
        return SQLITE_NOMEM;
    if (!copy) {
        *out = (char *)t;
        return SQLITE_OK;
    }
    size_t n = (size_t)sqlite3_column_bytes(s, i);
    char *c = malloc(n + 1);
    if (!c)
        return SQLITE_NOMEM;
    memcpy(c, t, n);
    c[n] = '\0';
    *out = c;
    return SQLITE_OK;
}

/* Reads a JOB_COLS row into r.  With copy, strings are malloc'd (freed by
 * gq_jobrec_clear, also on failure); without, they point into the
 * statement.  Returns SQLITE_OK or SQLITE_NOMEM. */
static int
row_to_rec(sqlite3_stmt *s, struct gq_jobrec *r, int copy)
{
    memset(r, 0, sizeof *r);
    r->seq = i2u(sqlite3_column_int64(s, 0));
    const unsigned char *cls = sqlite3_column_text(s, 1);
    if (cls)
        snprintf(r->cls, sizeof r->cls, "%s", (const char *)cls);
    r->priority = sqlite3_column_int(s, 2);
    r->state = sqlite3_column_int(s, 3);
    r->kind = sqlite3_column_int(s, 4);
    r->attempts = sqlite3_column_int(s, 5);
    r->token = i2u(sqlite3_column_int64(s, 6));
    char **strs[] = {&r->payload, &r->metadata, &r->idem_key, &r->result,
                     &r->progress, &r->err_code, &r->err_msg, &r->holder};
    for (int i = 0; i < (int)(sizeof strs / sizeof strs[0]); i++) {
        int rc = col_str(s, 7 + i, copy, strs[i]);
        if (rc != SQLITE_OK)
            return rc;
    }
    int drc = col_str(s, 23, copy, &r->deps);
    if (drc != SQLITE_OK)
        return drc;
    drc = col_str(s, 24, copy, &r->callback_url);
    if (drc != SQLITE_OK)
        return drc;
    int64_t *times[] = {&r->created_us, &r->started_us, &r->ended_us,
                        &r->finished_us, &r->ready_at_us, &r->deadline_us,
                        &r->wait_us, &r->run_us};
    for (int i = 0; i < (int)(sizeof times / sizeof times[0]); i++)
        *times[i] = sqlite3_column_int64(s, 15 + i);
    return SQLITE_OK;
}

#define BIND(x)                                                             \
    do {                                                                    \
        int rc_ = (x);                                                      \
        if (rc_ != SQLITE_OK)                                               \
            return rc_;                                                     \
    } while (0)

static int
bind_insert(sqlite3_stmt *s, const struct gq_jobrec *r)
{
    BIND(sqlite3_bind_text(s, 1, r->cls, (int)strnlen(r->cls, sizeof r->cls),
                           SQLITE_STATIC));
    BIND(sqlite3_bind_int(s, 2, r->priority));
    BIND(sqlite3_bind_int(s, 3, r->state));
    BIND(sqlite3_bind_int(s, 4, r->kind));
    BIND(sqlite3_bind_int(s, 5, r->attempts));
    BIND(sqlite3_bind_int64(s, 6, u2i(r->token)));
    BIND(bind_str(s, 7, r->payload));
    BIND(bind_str(s, 8, r->metadata));
    BIND(bind_str(s, 9, r->idem_key));
    BIND(bind_str(s, 10, r->result));
    BIND(bind_str(s, 11, r->progress));
    BIND(bind_str(s, 12, r->err_code));
    BIND(bind_str(s, 13, r->err_msg));
    BIND(bind_str(s, 14, r->holder));
    BIND(sqlite3_bind_int64(s, 15, r->created_us));
    BIND(sqlite3_bind_int64(s, 16, r->started_us));
    BIND(sqlite3_bind_int64(s, 17, r->ended_us));
    BIND(sqlite3_bind_int64(s, 18, r->finished_us));
    BIND(sqlite3_bind_int64(s, 19, r->ready_at_us));
    BIND(sqlite3_bind_int64(s, 20, r->deadline_us));
    BIND(sqlite3_bind_int64(s, 21, r->wait_us));
    BIND(sqlite3_bind_int64(s, 22, r->run_us));
    BIND(bind_str(s, 23, r->deps));
    BIND(bind_str(s, 24, r->callback_url));
    return SQLITE_OK;
}

/* The mutable fields: all but seq, cls, kind, payload, metadata, idem_key
 * and created_us, which are fixed at submit. */
static int
bind_update(sqlite3_stmt *s, const struct gq_jobrec *r)
{
    BIND(sqlite3_bind_int64(s, 1, u2i(r->seq)));
    BIND(sqlite3_bind_int(s, 2, r->priority));
    BIND(sqlite3_bind_int(s, 3, r->state));
    BIND(sqlite3_bind_int(s, 4, r->attempts));
    BIND(sqlite3_bind_int64(s, 5, u2i(r->token)));
    BIND(bind_str(s, 6, r->result));
    BIND(bind_str(s, 7, r->progress));
    BIND(bind_str(s, 8, r->err_code));
    BIND(bind_str(s, 9, r->err_msg));
    BIND(bind_str(s, 10, r->holder));
    BIND(sqlite3_bind_int64(s, 11, r->started_us));
    BIND(sqlite3_bind_int64(s, 12, r->ended_us));
    BIND(sqlite3_bind_int64(s, 13, r->finished_us));
    BIND(sqlite3_bind_int64(s, 14, r->ready_at_us));
    BIND(sqlite3_bind_int64(s, 15, r->deadline_us));
    BIND(sqlite3_bind_int64(s, 16, r->wait_us));
    BIND(sqlite3_bind_int64(s, 17, r->run_us));
    return SQLITE_OK;
}

/* Steps a JOB_COLS query, calling fn with each row (strings borrowed
 * from the statement).  Returns 0, fn's nonzero value, or a GQ_E code. */
static int
each_job(struct gq_sqlite *s, sqlite3_stmt *q, const char *what,
         gq_store_job_fn fn, void *ud, char *err)
{
    int ret = 0;
    for (;;) {
        int rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = fail(s->db, rc, what, err);
            break;
        }
        struct gq_jobrec r;
        rc = row_to_rec(q, &r, 0);
        if (rc != SQLITE_OK) {
            ret = fail(s->db, rc, what, err);
            break;
        }
        ret = fn(ud, &r);
        if (ret != 0)
            break;
    }
    sqlite3_reset(q);
    return ret;
}

/* ---- operations --------------------------------------------------- */

static void
sq_close(struct gq_store *st)
{
    struct gq_sqlite *s = to_sqlite(st);
    if (!s)
        return;
    if (s->ckpt_running) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->ckpt, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    /* An open batch is rolled back by SQLite; the last connection to
     * close checkpoints the WAL into the main file. */
    sqlite3_close(s->db);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    free(s->path);
    free(s);
}

static int
sq_sync_fd(struct gq_store *st)
{
    return to_sqlite(st)->wal_fd;
}

static int
wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct gq_sqlite *s = arg;
    (void)db;
    (void)name;
    if (pages >= CKPT_PAGES) {
        pthread_mutex_lock(&s->mu);
        s->want = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return SQLITE_OK;
}

static void *
ckpt_main(void *arg)
{
    struct gq_sqlite *s = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE |
                                          SQLITE_OPEN_NOMUTEX,
                        FAULT_VFS) != SQLITE_OK) {
        sqlite3_close(db);
        db = NULL;
    } else {
        char pragma[48];
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
        /* With synchronous = off nothing is synced, checkpoints included;
         * otherwise NORMAL syncs the WAL before and the database after
         * each checkpoint, as FULL would. */
        snprintf(pragma, sizeof pragma, "PRAGMA synchronous = %d",
                 s->sync_level ? 1 : 0);
        sqlite3_exec(db, pragma, NULL, NULL, NULL);
        /* A connection learns that the file is in WAL mode on its first
         * read; until then a checkpoint does nothing. */
        sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL,
                     NULL);
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->want && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        s->want = 0;
        pthread_mutex_unlock(&s->mu);
        /* PASSIVE: copies what it can without waiting for the writer. */
        if (db && sqlite3_wal_checkpoint_v2(db, NULL,
                                            SQLITE_CHECKPOINT_PASSIVE, NULL,
                                            NULL) == SQLITE_OK)
            atomic_fetch_add(&s->checkpoints, 1);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    sqlite3_close(db);
    return NULL;
}

static int
sq_begin(struct gq_store *st, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    return run(s, s->stmt[S_BEGIN], "begin", err);
}

static void
sq_rollback(struct gq_store *st)
{
    struct gq_sqlite *s = to_sqlite(st);
    if (sqlite3_get_autocommit(s->db))
        return; /* no transaction open (or SQLite already rolled back) */
    run(s, s->stmt[S_ROLLBACK], "rollback", NULL);
}

/* A failed commit rolls the batch back, so that "nothing was changed"
 * holds and the next begin starts clean.  One caveat no store escapes:
 * when only the final fsync failed, the batch's frames are already in
 * the WAL file; if the process dies before its next commit overwrites
 * them, recovery at the next open may bring that batch back. */
static int
sq_commit(struct gq_store *st, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    int ret = run(s, s->stmt[S_COMMIT], "commit", err);
    if (ret != 0)
        sq_rollback(st);
    return ret;
}

static int
sq_insert(struct gq_store *st, struct gq_jobrec *r, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_INSERT];
    int rc = bind_insert(q, r);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "insert", err);
        sqlite3_reset(q);
        return ret;
    }
    int ret = run(s, q, "insert", err);
    if (ret == 0)
        r->seq = i2u(sqlite3_last_insert_rowid(s->db));
    return ret;
}

static int
sq_update(struct gq_store *st, const struct gq_jobrec *r, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_UPDATE];
    int rc = bind_update(q, r);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "update", err);
        sqlite3_reset(q);
        return ret;
    }
    int ret = run(s, q, "update", err);
    if (ret == 0 && sqlite3_changes(s->db) == 0)
        ret = fail_msg(GQ_ENOENT, "update: no such job", err);
    return ret;
}

static int
sq_event(struct gq_store *st, uint64_t seq, int64_t t_us, const char *state,
         const char *detail, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_EVENT];
    if (!state)
        return fail_msg(GQ_EINVAL, "event: no state", err);
    int rc = sqlite3_bind_int64(q, 1, u2i(seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 2, t_us);
    if (rc == SQLITE_OK)
        rc = bind_str(q, 3, state);
    if (rc == SQLITE_OK)
        rc = bind_str(q, 4, detail);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "event", err);
        sqlite3_reset(q);
        return ret;
    }
    return run(s, q, "event", err);
}

static int
sq_get(struct gq_store *st, uint64_t seq, struct gq_jobrec *out, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_GET];
    int ret = 0;
    memset(out, 0, sizeof *out);
    sqlite3_bind_int64(q, 1, u2i(seq));
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        rc = row_to_rec(q, out, 1);
        if (rc != SQLITE_OK) {
            ret = fail(s->db, rc, "get", err);
            gq_jobrec_clear(out);
        }
    } else if (rc == SQLITE_DONE) {
        ret = fail_msg(GQ_ENOENT, "get: no such job", err);
    } else {
        ret = fail(s->db, rc, "get", err);
    }
    sqlite3_reset(q);
    return ret;
}

static int
sq_find_key(struct gq_store *st, const char *key, uint64_t *seq, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_FIND_KEY];
    int ret = 0;
    if (!key)
        return fail_msg(GQ_EINVAL, "find_key: no key", err);
    int rc = bind_str(q, 1, key);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *seq = i2u(sqlite3_column_int64(q, 0));
    else if (rc == SQLITE_DONE)
        ret = fail_msg(GQ_ENOENT, "find_key: no job has this key", err);
    else
        ret = fail(s->db, rc, "find_key", err);
    sqlite3_reset(q);
    return ret;
}

/* A NULL filter lists everything; limit outside 1..1000 means 1000. */
static int
sq_list(struct gq_store *st, const struct gq_store_filter *f,
        gq_store_job_fn fn, void *ud, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    const char *cls = f ? f->cls : NULL;
    int state = f ? f->state : -1;
    uint64_t after = f ? f->after : 0;
    int limit = f ? f->limit : 0;
    if (state < -1 || state >= GQ_NSTATES)
        return fail_msg(GQ_EINVAL, "list: bad state", err);
    if (limit < 1 || limit > LIST_MAX)
        limit = LIST_MAX;
    enum stmt_id id = cls ? (state >= 0 ? S_LIST_BOTH : S_LIST_CLS)
                          : (state >= 0 ? S_LIST_STATE : S_LIST_ALL);
    sqlite3_stmt *q = s->stmt[id];
    int rc = bind_str(q, 1, cls);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(q, 2, state);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 3, u2i(after));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(q, 4, limit);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "list", err);
        sqlite3_reset(q);
        return ret;
    }
    return each_job(s, q, "list", fn, ud, err);
}

static int
sq_load_active(struct gq_store *st, gq_store_job_fn fn, void *ud,
               char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    int rc = each_job(s, s->stmt[S_ACTIVE], "load_active", fn, ud, err);
    if (rc == 0)
        rc = each_job(s, s->stmt[S_ACTIVE_QUEUED], "load_active", fn, ud,
                      err);
    return rc;
}

static int
sq_events(struct gq_store *st, uint64_t seq, gq_store_event_fn fn, void *ud,
          char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_EVENTS];
    int ret = 0;
    sqlite3_bind_int64(q, 1, u2i(seq));
    for (;;) {
        int rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = fail(s->db, rc, "events", err);
            break;
        }
        int64_t t_us = sqlite3_column_int64(q, 0);
        const char *state = (const char *)sqlite3_column_text(q, 1);
        const char *detail = (const char *)sqlite3_column_text(q, 2);
        ret = fn(ud, t_us, state ? state : "", detail);
        if (ret != 0)
            break;
    }
    sqlite3_reset(q);
    return ret;
}

static int
sq_meta_get(struct gq_store *st, const char *key, int64_t *val, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_META_GET];
    int ret = 0;
    if (!key)
        return fail_msg(GQ_EINVAL, "meta_get: no key", err);
    int rc = bind_str(q, 1, key);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *val = sqlite3_column_int64(q, 0);
    else if (rc == SQLITE_DONE)
        *val = 0;
    else
        ret = fail(s->db, rc, "meta_get", err);
    sqlite3_reset(q);
    return ret;
}

static int
sq_meta_set(struct gq_store *st, const char *key, int64_t val, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_META_SET];
    if (!key)
        return fail_msg(GQ_EINVAL, "meta_set: no key", err);
    int rc = bind_str(q, 1, key);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 2, val);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "meta_set", err);
        sqlite3_reset(q);
        return ret;
    }
    return run(s, q, "meta_set", err);
}

static int
sq_cb_add(struct gq_store *st, struct gq_callback *cb, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_CB_ADD];
    int rc = sqlite3_bind_int64(q, 1, u2i(cb->seq));
    if (rc == SQLITE_OK)
        rc = bind_str(q, 2, cb->event);
    if (rc == SQLITE_OK)
        rc = bind_str(q, 3, cb->url);
    if (rc == SQLITE_OK)
        rc = bind_str(q, 4, cb->body);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(q, 5, cb->attempts);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 6, cb->next_us);
    if (rc != SQLITE_OK) {
        int ret = fail(s->db, rc, "cb_add", err);
        sqlite3_reset(q);
        return ret;
    }
    rc = run(s, q, "cb_add", err);
    if (rc == 0)
        cb->id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int
sq_cb_retry(struct gq_store *st, int64_t id, int attempts, int64_t next_us,
            char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_CB_RETRY];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int(q, 2, attempts);
    sqlite3_bind_int64(q, 3, next_us);
    return run(s, q, "cb_retry", err);
}

static int
sq_cb_done(struct gq_store *st, int64_t id, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_CB_DONE];
    sqlite3_bind_int64(q, 1, id);
    return run(s, q, "cb_done", err);
}

static int
sq_cb_load(struct gq_store *st, gq_store_cb_fn fn, void *ud, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    sqlite3_stmt *q = s->stmt[S_CB_LOAD];
    int rc, ret = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct gq_callback cb = {
            sqlite3_column_int64(q, 0),
            i2u(sqlite3_column_int64(q, 1)),
            (const char *)sqlite3_column_text(q, 2),
            (const char *)sqlite3_column_text(q, 3),
            (const char *)sqlite3_column_text(q, 4),
            sqlite3_column_int(q, 5),
            sqlite3_column_int64(q, 6),
        };
        if ((ret = fn(ud, &cb)) != 0)
            break;
    }
    if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
        ret = fail(s->db, rc, "cb_load", err);
    sqlite3_reset(q);
    return ret;
}

/* Both deletes in a savepoint, so purge is atomic inside a batch and
 * outside one alike. */
static int
sq_purge(struct gq_store *st, int64_t before_us, int64_t *n, char *err)
{
    struct gq_sqlite *s = to_sqlite(st);
    int ret = run(s, s->stmt[S_SAVEPOINT], "purge", err);
    if (ret != 0)
        return ret;
    sqlite3_bind_int64(s->stmt[S_PURGE_EVENTS], 1, before_us);
    sqlite3_bind_int64(s->stmt[S_PURGE_JOBS], 1, before_us);
    ret = run(s, s->stmt[S_PURGE_EVENTS], "purge", err);
    if (ret == 0)
        ret = run(s, s->stmt[S_PURGE_JOBS], "purge", err);
    int64_t count = ret == 0 ? sqlite3_changes64(s->db) : 0;
    if (ret != 0)
        run(s, s->stmt[S_ROLLBACK_TO], "purge", NULL);
    int rel = run(s, s->stmt[S_RELEASE], "purge", ret == 0 ? err : NULL);
    if (ret == 0)
        ret = rel;
    if (ret == 0 && n)
        *n = count;
    return ret;
}

static const struct gq_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .insert = sq_insert,
    .update = sq_update,
    .event = sq_event,
    .get = sq_get,
    .find_key = sq_find_key,
    .list = sq_list,
    .load_active = sq_load_active,
    .events = sq_events,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .purge = sq_purge,
    .cb_add = sq_cb_add,
    .cb_retry = sq_cb_retry,
    .cb_done = sq_cb_done,
    .cb_load = sq_cb_load,
    .sync_fd = sq_sync_fd,
};

/* ---- open and migrate -------------------------------------------- */

/* Runs one-off SQL (open time only). */
static int
exec(sqlite3 *db, const char *sql, const char *what, char *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return fail(db, rc, what, err);
    return 0;
}

/* Reads a single integer from a PRAGMA. */
static int
pragma_int(sqlite3 *db, const char *sql, int *out, char *err)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK)
        return fail(db, rc, sql, err);
    rc = sqlite3_step(q);
    int ret = 0;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int(q, 0);
    else
        ret = fail(db, rc, sql, err);
    sqlite3_finalize(q);
    return ret;
}

static int
set_wal(sqlite3 *db, char *err)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &q,
                                NULL);
    if (rc != SQLITE_OK)
        return fail(db, rc, "journal_mode", err);
    rc = sqlite3_step(q);
    int ret = 0;
    if (rc != SQLITE_ROW) {
        ret = fail(db, rc, "journal_mode", err);
    } else {
        const char *mode = (const char *)sqlite3_column_text(q, 0);
        if (!mode || strcmp(mode, "wal") != 0)
            ret = fail_msg(GQ_ESTORE, "journal_mode: WAL not available",
                           err);
    }
    sqlite3_finalize(q);
    return ret;
}

/* Brings the schema up to SCHEMA_VERSION, one transaction per step. */
static int
migrate(sqlite3 *db, char *err)
{
    for (;;) {
        int ret = exec(db, "BEGIN IMMEDIATE", "migrate", err);
        if (ret != 0)
            return ret;
        int v = 0;
        ret = pragma_int(db, "PRAGMA user_version", &v, err);
        if (ret == 0 && (v < 0 || v > SCHEMA_VERSION)) {
            if (err)
                snprintf(err, GQ_STORE_ERRLEN,
                         "schema version %d is not one this gpuqd knows"
                         " (0..%d)",
                         v, SCHEMA_VERSION);
            ret = GQ_ESTORE;
        }
        if (ret != 0 || v == SCHEMA_VERSION) {
            exec(db, "ROLLBACK", "migrate", NULL);
            return ret;
        }
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        ret = exec(db, migrations[v], "migrate", err);
        if (ret == 0)
            ret = exec(db, bump, "migrate", err);
        if (ret == 0)
            ret = exec(db, "COMMIT", "migrate", err);
        if (ret != 0) {
            if (!sqlite3_get_autocommit(db))
                exec(db, "ROLLBACK", "migrate", NULL);
            return ret;
        }
    }
}

struct gq_store *
gq_store_sqlite_open(const char *path, const struct gq_sqlite_opts *o,
                     char *err)
{
    int sync = o ? o->synchronous : 2;
    if (!path) {
        fail_msg(GQ_EINVAL, "no path", err);
        return NULL;
    }
    if (sync < 0 || sync > 2) {
        fail_msg(GQ_EINVAL, "synchronous must be 0, 1 or 2", err);
        return NULL;
    }
    int rc = fault_register();
    if (rc != SQLITE_OK) {
        fail(NULL, rc, "register fault VFS", err);
        return NULL;
    }
    struct gq_sqlite *s = calloc(1, sizeof *s);
    if (!s) {
        fail_msg(GQ_ENOMEM, "out of memory", err);
        return NULL;
    }
    s->base.ops = &sqlite_ops;
    s->wal_fd = -1;
    rc = sqlite3_open_v2(path, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX,
                         FAULT_VFS);
    if (rc != SQLITE_OK) {
        if (err)
            snprintf(err, GQ_STORE_ERRLEN, "open %s: %s", path,
                     s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto bad;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    char sql[64];
    int deferred = o && o->deferred_sync && sync == 2;
    /* Deferred: NORMAL skips the WAL sync at commit; the caller does it
     * through sync_fd().  Checkpoints still sync as under FULL. */
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %d",
             deferred ? 1 : sync);
    if (set_wal(s->db, err) != 0 || exec(s->db, sql, "synchronous", err) != 0 ||
        /* Keep the WAL file from staying huge after a large batch. */
        exec(s->db, "PRAGMA journal_size_limit = 67108864", "pragma",
             err) != 0 ||
        migrate(s->db, err) != 0)
        goto bad;
    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                                NULL);
        if (rc != SQLITE_OK) {
            fail(s->db, rc, "prepare", err);
            goto bad;
        }
    }
    if ((s->path = strdup(path)) == NULL) {
        fail_msg(GQ_ENOMEM, "out of memory", err);
        goto bad;
    }
    s->sync_level = sync;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->ckpt, NULL, ckpt_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        fail_msg(GQ_ESTORE, "cannot start the checkpoint thread", err);
        goto bad;
    }
    s->ckpt_running = 1;
    if (deferred) {
        char wal[PATH_MAX];
        snprintf(wal, sizeof wal, "%s-wal", path);
        /* The WAL exists from the first WAL-mode open; it is never
         * deleted while a connection is open, only reset in place. */
        s->wal_fd = open(wal, O_RDWR | O_CLOEXEC);
        if (s->wal_fd < 0) {
            fail_msg(GQ_ESTORE, "cannot open the WAL to sync it", err);
            goto bad;
        }
    }
    if (exec(s->db, "PRAGMA wal_autocheckpoint = 0", "pragma", err) != 0)
        goto bad;
    sqlite3_wal_hook(s->db, wal_hook, s);
    return &s->base;

bad:
    sq_close(&s->base);
    return NULL;
}

/* ---- fault injection: the "gqfault" shim VFS ----------------------
 *
 * Wraps the default VFS.  Every file it opens is a struct fault_file
 * with the real file right behind it; xWrite, xTruncate and xSync check
 * the process-wide fault state first and otherwise pass through.  When
 * disarmed that check is one atomic load.  Reads, locks and the WAL
 * index (shared memory) are never failed.
 */

struct fault_file {
    sqlite3_file base;    /* pMethods = &fault_io */
    sqlite3_file *real;   /* the default VFS's file, at (this + 1) */
};

static atomic_int fault_kind; /* enum gq_fault */
static atomic_int fault_left; /* writes/syncs still allowed when armed */

/* Returns SQLITE_OK to let the call through, else the code to fail it
 * with: SQLITE_FULL, or ioerr for GQ_FAULT_IO. */
static int
fault_check(int ioerr)
{
    int kind = atomic_load_explicit(&fault_kind, memory_order_acquire);
    if (kind == GQ_FAULT_NONE)
        return SQLITE_OK;
    /* Decrement only while positive, so the count never wraps. */
    if (atomic_load(&fault_left) > 0 && atomic_fetch_sub(&fault_left, 1) > 0)
        return SQLITE_OK;
    return kind == GQ_FAULT_FULL ? SQLITE_FULL : ioerr;
}

void
gq_store_fault(enum gq_fault kind, int after)
{
    fault_register(); /* harmless if SQLite cannot be set up yet */
    if (kind == GQ_FAULT_NONE) {
        atomic_store_explicit(&fault_kind, GQ_FAULT_NONE,
                              memory_order_release);
        atomic_store(&fault_left, 0);
        return;
    }
    atomic_store(&fault_left, after > 0 ? after : 0);
    atomic_store_explicit(&fault_kind, (int)kind, memory_order_release);
}

static sqlite3_file *
real_file(sqlite3_file *f)
{
    return ((struct fault_file *)f)->real;
}

static int
ff_close(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xClose(r);
}

static int
ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xRead(r, buf, n, off);
}

static int
ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    int rc = fault_check(SQLITE_IOERR_WRITE);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_file *r = real_file(f);
    return r->pMethods->xWrite(r, buf, n, off);
}

static int
ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = fault_check(SQLITE_IOERR_TRUNCATE);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_file *r = real_file(f);
    return r->pMethods->xTruncate(r, size);
}

static int
ff_sync(sqlite3_file *f, int flags)
{
    int rc = fault_check(SQLITE_IOERR_FSYNC);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_file *r = real_file(f);
    return r->pMethods->xSync(r, flags);
}

static int
ff_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xFileSize(r, size);
}

static int
ff_lock(sqlite3_file *f, int lock)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xLock(r, lock);
}

static int
ff_unlock(sqlite3_file *f, int lock)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xUnlock(r, lock);
}

static int
ff_check_reserved(sqlite3_file *f, int *out)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int
ff_file_control(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int
ff_sector_size(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xSectorSize(r);
}

static int
ff_device_chars(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

static int
ff_shm_map(sqlite3_file *f, int pg, int pgsz, int extend,
           void volatile **pp)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 2 || !r->pMethods->xShmMap)
        return SQLITE_IOERR_SHMMAP;
    return r->pMethods->xShmMap(r, pg, pgsz, extend, pp);
}

static int
ff_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 2 || !r->pMethods->xShmLock)
        return SQLITE_IOERR_SHMLOCK;
    return r->pMethods->xShmLock(r, off, n, flags);
}

static void
ff_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion >= 2 && r->pMethods->xShmBarrier)
        r->pMethods->xShmBarrier(r);
}

static int
ff_shm_unmap(sqlite3_file *f, int del)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 2 || !r->pMethods->xShmUnmap)
        return SQLITE_OK;
    return r->pMethods->xShmUnmap(r, del);
}

static int
ff_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 3 || !r->pMethods->xFetch) {
        *pp = NULL; /* "not mapped": SQLite reads instead */
        return SQLITE_OK;
    }
    return r->pMethods->xFetch(r, off, n, pp);
}

static int
ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 3 || !r->pMethods->xUnfetch)
        return SQLITE_OK;
    return r->pMethods->xUnfetch(r, off, p);
}

static const sqlite3_io_methods fault_io = {
    .iVersion = 3,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_file_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_check_reserved,
    .xFileControl = ff_file_control,
    .xSectorSize = ff_sector_size,
    .xDeviceCharacteristics = ff_device_chars,
    .xShmMap = ff_shm_map,
    .xShmLock = ff_shm_lock,
    .xShmBarrier = ff_shm_barrier,
    .xShmUnmap = ff_shm_unmap,
    .xFetch = ff_fetch,
    .xUnfetch = ff_unfetch,
};

/* The VFS methods forward to the wrapped VFS, kept in pAppData. */
static sqlite3_vfs *
real_vfs(sqlite3_vfs *v)
{
    return (sqlite3_vfs *)v->pAppData;
}

static int
fv_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags,
        int *out_flags)
{
    struct fault_file *ff = (struct fault_file *)f;
    sqlite3_vfs *rv = real_vfs(v);
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = rv->xOpen(rv, name, ff->real, flags, out_flags);
    /* SQLite calls xClose iff pMethods is set, failed open or not. */
    ff->base.pMethods = ff->real->pMethods ? &fault_io : NULL;
    return rc;
}

static int
fv_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xDelete(rv, name, sync_dir);
}

static int
fv_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xAccess(rv, name, flags, out);
}

static int
fv_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xFullPathname(rv, name, n, out);
}

static void *
fv_dlopen(sqlite3_vfs *v, const char *name)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xDlOpen(rv, name);
}

static void
fv_dlerror(sqlite3_vfs *v, int n, char *msg)
{
    sqlite3_vfs *rv = real_vfs(v);
    rv->xDlError(rv, n, msg);
}

static void (*fv_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xDlSym(rv, h, sym);
}

static void
fv_dlclose(sqlite3_vfs *v, void *h)
{
    sqlite3_vfs *rv = real_vfs(v);
    rv->xDlClose(rv, h);
}

static int
fv_randomness(sqlite3_vfs *v, int n, char *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xRandomness(rv, n, out);
}

static int
fv_sleep(sqlite3_vfs *v, int us)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xSleep(rv, us);
}

static int
fv_current_time(sqlite3_vfs *v, double *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xCurrentTime(rv, out);
}

static int
fv_last_error(sqlite3_vfs *v, int n, char *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    return rv->xGetLastError ? rv->xGetLastError(rv, n, out) : 0;
}

static int
fv_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    sqlite3_vfs *rv = real_vfs(v);
    if (rv->iVersion >= 2 && rv->xCurrentTimeInt64)
        return rv->xCurrentTimeInt64(rv, out);
    double d;
    int rc = rv->xCurrentTime(rv, &d);
    *out = (sqlite3_int64)(d * 86400000.0);
    return rc;
}

static sqlite3_vfs fault_vfs = {
    .iVersion = 2,
    .zName = FAULT_VFS,
    .xOpen = fv_open,
    .xDelete = fv_delete,
    .xAccess = fv_access,
    .xFullPathname = fv_full_pathname,
    .xDlOpen = fv_dlopen,
    .xDlError = fv_dlerror,
    .xDlSym = fv_dlsym,
    .xDlClose = fv_dlclose,
    .xRandomness = fv_randomness,
    .xSleep = fv_sleep,
    .xCurrentTime = fv_current_time,
    .xGetLastError = fv_last_error,
    .xCurrentTimeInt64 = fv_current_time64,
};

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static int fault_reg_rc = SQLITE_ERROR;

static void
fault_register_once(void)
{
    sqlite3_vfs *rv = sqlite3_vfs_find(NULL); /* initialises SQLite */
    if (!rv)
        return;
    fault_vfs.szOsFile = (int)sizeof(struct fault_file) + rv->szOsFile;
    fault_vfs.mxPathname = rv->mxPathname;
    fault_vfs.pAppData = rv;
    fault_reg_rc = sqlite3_vfs_register(&fault_vfs, 0);
}

/* Registers the shim once per process; returns an SQLite code. */
static int
fault_register(void)
{
    pthread_once(&fault_once, fault_register_once);
    return fault_reg_rc;
}
