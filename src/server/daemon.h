/*
 * daemon.h - gpuqd's state and the operations the HTTP layer calls.
 *
 * One event loop (libevent), one thread.  Every operation that changes a
 * job writes it to the store inside the current turn's batch; the batch
 * commits once at the end of the turn (group commit) and only then are
 * the replies that acknowledge its changes sent (gq_reply_*).  When a
 * commit fails the batch's replies become 503s and the in-memory state is
 * rebuilt from the store, so nothing unacknowledged is kept and nothing
 * acknowledged is lost.
 */
#ifndef GQ_DAEMON_H
#define GQ_DAEMON_H

#include <pthread.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "../core/job.h"
#include "../exec/exec.h"
#include "../core/sched.h"
#include "../store/store.h"
#include "config.h"
#include "metrics.h"

#define GQ_VERSION "0.1.0"

enum gq_park_type {
    GQ_PARK_JOBWAIT, /* GET /v1/jobs/{id}?wait= */
    GQ_PARK_LEASE,   /* POST /v1/leases */
    GQ_PARK_LOCK,    /* POST /v1/locks */
    GQ_PARK_SSE,     /* GET /v1/events */
    GQ_PARK_STREAM,  /* a job's tokens: /v1/jobs/{id}/stream, drop-ins */
};
#define GQ_NPARK 5

/* How a STREAM park speaks. */
enum gq_stream_fmt {
    GQ_FMT_GPUQ,            /* SSE: event token {text}, event done {job} */
    GQ_FMT_OPENAI,          /* SSE chat.completion.chunk ... [DONE] */
    GQ_FMT_OPENAI_FULL,     /* one chat.completion when done */
    GQ_FMT_OLLAMA,          /* NDJSON lines, last with done:true */
    GQ_FMT_OLLAMA_FULL,     /* one Ollama object when done */
    GQ_FMT_WHISPER_JSON,    /* {"text"} when done (also OpenAI's json) */
    GQ_FMT_WHISPER_VERBOSE, /* verbose_json when done */
    GQ_FMT_WHISPER_TEXT,    /* plain text when done */
};

/* The daemon's side of a built-in executor's run (one per busy slot). */
struct gq_runctx {
    struct gq_run run;            /* what the executor sees */
    struct gq_daemon *d;
    const struct gq_exec_ops *ops;
    struct gq_class_exec cx;      /* the class's settings at the start: a
                                     reload does not change a run's */
    int ended;                    /* the executor called end() */
    int group_slot;               /* the slot of the grant it runs in */
    int64_t started_us;           /* its own grant's start (monotonic) */
    char *text;                   /* streamed text so far */
    size_t len, cap;
};

/* A request held open: a long-poll or an event stream. */
struct gq_park {
    enum gq_park_type type;
    struct gq_daemon *d;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;          /* wait deadline / SSE ping */
    struct event *watch;          /* notices the client hanging up */
    struct gq_park *prev, *next;  /* in d->parks[type] */
    uint64_t seq;                 /* JOBWAIT/LOCK: the job; SSE: 0 = any */
    int cls;                      /* SSE: class filter, -1 = any */
    uint8_t classes[GQ_MAX_CLASSES]; /* LEASE: classes it takes */
    char worker[64];              /* LEASE: worker name */
    enum gq_stream_fmt fmt;       /* STREAM */
    int started;                  /* STREAM: reply headers sent */
};

/* The side effects of one committed batch, held until it is durable. */
struct gq_group {
    uint64_t seq;                 /* commit number */
    struct gq_pending *replies;
    json_t *sse;                  /* events to publish */
    struct gq_cbd *callbacks;     /* deliveries to start */
    uint64_t *stream_ends;        /* jobs whose token streams end */
    size_t nstream_ends;
    int64_t handoff_from[64];
    int nhandoff;
    struct gq_group *next;
};

/* A reply held until the batch that it acknowledges has committed. */
struct gq_pending {
    struct evhttp_request *req;
    int status;
    char *body;                   /* JSON text, owned */
    char *retry_after;            /* Retry-After value or NULL */
    struct gq_pending *next;
};

struct gq_daemon {
    struct gq_config cfg;
    struct event_base *base;
    struct evhttp *http;
    struct gq_sched *sched;
    struct gq_store *store;
    struct gq_jobtab jobs;        /* every job not yet finished */
    struct gq_metrics metrics;
    struct gq_auth *auth;         /* API tokens, unix socket (auth.c) */

    /* Group commit. */
    int in_batch;                 /* BEGIN done this turn */
    int turn_armed;               /* end-of-turn event activated */
    int commit_fails;             /* failed commits in a row */
    struct event *turn_ev;
    struct gq_pending *pend_head, **pend_tail;
    json_t *sse_batch;            /* events to publish after commit */

    struct event *timer_ev;       /* backoff ends and queue deadlines */
    int64_t timer_at;             /* when timer_ev fires, 0 = unarmed */
    struct event *purge_ev;       /* hourly purge of old terminal jobs */
    struct event *sig_ev[3];      /* SIGTERM, SIGINT, SIGHUP */
    struct event *drain_ev;       /* drain deadline */
    struct event *slot_ev[GQ_MAX_SLOTS];  /* lease expiry per slot */
    int64_t slot_free_at[GQ_MAX_SLOTS];   /* freed with work waiting */
    int batch_failed;             /* a store call failed this turn */
    /* Batched grants: the running jobs sharing each slot's grant (a
     * built-in run is in its job's owner field while it runs). */
    uint64_t group_seq[GQ_MAX_SLOTS][64];
    int group_n[GQ_MAX_SLOTS];
    int nbackends;
    struct gq_backend backends[GQ_MAX_BACKENDS];
    int64_t handoff_from[64];     /* grants this turn: when the slot freed */
    int nhandoff;
    /* Deferred durability: a thread fdatasyncs the WAL after commits;
     * groups wait for it, oldest first. */
    int sync_fd;                  /* -1: commit is durable by itself */
    pthread_t sync_thread;
    int sync_running;
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t sync_want, sync_done;  /* commit numbers; under sync_mu */
    int sync_failed;                /* under sync_mu */
    int sync_stop;                  /* under sync_mu */
    int sync_evfd;                  /* the thread's "done" signal */
    struct event *sync_ev;
    uint64_t commit_seq;
    struct gq_group *groups, **groups_tail;
    char upload_dir[1100];        /* data_dir/uploads */
    struct gq_cbd *cb_active;     /* callback deliveries (callback.c) */
    struct gq_cbd *cb_staged;     /* added by the batch not yet committed */
    uint64_t upload_seq;          /* names uploaded files */
    struct gq_blocked {           /* a job waiting for dependencies */
        uint64_t seq;
        uint64_t *deps;           /* what it waits for (owned) */
        int ndeps;
    } *blocked;
    size_t nblocked, capblocked;
    uint64_t *wakeq;              /* finished jobs whose dependents to check */
    size_t nwake, capwake;
    int waking;                   /* wake_dependents is running */
    uint64_t *stream_ends;        /* jobs whose streams end after commit */
    size_t nstream_ends, capstream_ends;
    struct gq_httpc *httpc;       /* backend calls, on the loop */
    struct event *breaker_ev;     /* a circuit's cool-down ends */
    struct event *health_ev[GQ_MAX_BACKENDS];   /* next /health check */
    struct gq_call *health_call[GQ_MAX_BACKENDS];
    struct gq_health {
        struct gq_daemon *d;
        int b;
    } health_arg[GQ_MAX_BACKENDS];
    struct gq_workq *workq;       /* heavy work, off the loop */

    struct gq_park *parks[GQ_NPARK]; /* by gq_park_type */
    struct gq_park *park_tail[GQ_NPARK]; /* the longest waiting */
    int nparked;
    int waiting_workers[GQ_MAX_CLASSES];

    uint64_t fence;               /* last fencing token handed out */
    int64_t wall_off_us;          /* wall clock = monotonic + wall_off_us */
    int64_t started_us;           /* monotonic start */
    int draining;
    int fault_injection;          /* --fault-injection: /v1/admin/fault */

    /* Reload (SIGHUP, daemon.c "reload").  cfg.classes[] holds the
     * file's classes first, then removed classes whose grants still run
     * ("retired": no submits, no queue; dropped once their last grant
     * ends); cfg.backends[] likewise. */
    char conf_path[1024];         /* --config FILE; "" = none */
    char conf_data[1024];         /* --data over the file; "" = none */
    char conf_listen[256];        /* --listen over the file; "" = none */
    int nlive_classes;            /* cfg.classes[0..n) are the file's */
    int nlive_backends;           /* cfg.backends[0..n) are the file's */
    uint64_t reloads;             /* reloads applied */
    struct event *compact_ev;     /* drops retired classes and backends */
    /* systemd (sd_notify): STATUS= lines and watchdog pings. */
    struct event *notify_ev;
    int64_t watchdog_us;          /* WatchdogSec; 0 = off */
    int64_t notify_status_at;     /* when STATUS= was last sent */
    char notify_status[160];      /* the last STATUS= sent */
    int exit_code;
    char errbuf[GQ_STORE_ERRLEN];
};

/* Clocks, microseconds. */
int64_t gq_now(void);                         /* monotonic */
int64_t gq_wall(const struct gq_daemon *d, int64_t mono);

/* Creates the daemon: opens the store, recovers, binds the listener.
 * Returns 0 or a GQ_E* code with msg filled. */
int gq_daemon_init(struct gq_daemon *d, const struct gq_config *cfg,
                   char *msg, int msglen);
/* Runs the loop until drained; returns the exit code. */
int gq_daemon_run(struct gq_daemon *d);
void gq_daemon_close(struct gq_daemon *d);

/* Starts a drain (SIGTERM, /v1/admin/drain); deadline in seconds. */
void gq_daemon_drain(struct gq_daemon *d, double deadline);

/*
 * Remembers where the configuration came from, for reloads: the file
 * (NULL: none, and a reload has nothing to read) and the command-line
 * values that override it (NULL: not given).  The strings are copied.
 * Call after gq_daemon_init.
 */
void gq_daemon_set_source(struct gq_daemon *d, const char *path,
                          const char *data_dir, const char *listen);
/*
 * Reloads the configuration now (what SIGHUP does): reads and checks the
 * file, and on any error logs every problem and changes nothing.
 * Otherwise classes, backends, [models], [callbacks] and the [server]
 * limits take effect at once, without dropping a job (doc/operations.md
 * says what happens to each kind of change); listen, data_dir, slots and
 * synchronous need a restart and only get a warning.  Returns 0, or the
 * GQ_E* code of the failure (the daemon then runs on as before).
 */
int gq_daemon_reload(struct gq_daemon *d);

/*
 * Tells systemd the daemon is ready (READY=1, when NOTIFY_SOCKET is set)
 * and starts the loop timer that keeps STATUS= current and, with
 * WatchdogSec=, sends WATCHDOG=1 at half the interval.  Call once the
 * listener is up, just before gq_daemon_run.
 */
void gq_daemon_notify_ready(struct gq_daemon *d);

/* --- used by the HTTP layer (http.c) --- */

/* Opens the turn's batch if needed; 0 or a store error code. */
int gq_batch(struct gq_daemon *d);
/* Makes sure the end-of-turn work (dispatch, commit, replies) runs. */
void gq_kick(struct gq_daemon *d);

/* Sends (or, inside a batch, queues until commit) a JSON reply; takes
 * the reference to body (may be NULL for an empty body). */
void gq_reply(struct gq_daemon *d, struct evhttp_request *req, int status,
              json_t *body);
/* An error reply {"error":{code,message,field}}; field may be NULL. */
void gq_reply_err(struct gq_daemon *d, struct evhttp_request *req, int err,
                  const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The job as JSON (new reference), from its stored record plus live
 * scheduling facts (reason, position, lease). */
json_t *gq_job_json(struct gq_daemon *d, const struct gq_jobrec *r);

/* Operations; each returns 0 or a GQ_E* code and, on success, fills rec
 * (caller clears it) with the job as it now is. */
struct gq_submit {
    const char *cls;
    json_t *payload;              /* borrowed */
    json_t *metadata;             /* borrowed, may be NULL */
    int32_t priority;
    const char *idem_key;         /* may be NULL */
    double queue_timeout;         /* < 0 = the class's */
    enum gq_kind kind;
    const char *holder;           /* locks: holder name, may be NULL */
    const uint64_t *deps;         /* jobs that must succeed first */
    int ndeps;
    const char *callback_url;     /* may be NULL */
};
/* *created is 1 for a new job, 0 for an idempotent repeat. */
int gq_op_submit(struct gq_daemon *d, const struct gq_submit *s,
                 struct gq_jobrec *rec, int *created);
int gq_op_cancel(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *rec);
int gq_op_requeue(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *rec);

/* Grant ends.  token must be the live grant's (else GQ_ESTALE). */
enum gq_end { GQ_END_COMPLETE, GQ_END_FAIL, GQ_END_YIELD, GQ_END_RELEASE };
struct gq_finish {
    enum gq_end how;
    json_t *result;               /* complete: result; yield: progress */
    const char *err_code, *err_msg; /* fail */
    int retryable;                /* fail */
    int internal;                 /* from gpuqd's own executor run */
};
int gq_op_finish(struct gq_daemon *d, uint64_t seq, uint64_t token,
                 const struct gq_finish *f, struct gq_jobrec *rec);
/* Extends a live grant; *yield is set when a higher tier waits. */
int gq_op_heartbeat(struct gq_daemon *d, uint64_t seq, uint64_t token,
                    double *ttl, int *yield);

/* Ends a lock waiter (wait timed out: EXPIRED; client gone: CANCELLED). */
void gq_op_abandon(struct gq_daemon *d, uint64_t seq, enum gq_state how);

/* Parking. */
struct gq_park *gq_park_new(struct gq_daemon *d, enum gq_park_type type,
                            struct evhttp_request *req, double wait_s);
/* Unlinks and frees; does not reply. */
void gq_park_free(struct gq_park *p);

/* Reads a stored job; GQ_ENOENT when unknown. */
int gq_get(struct gq_daemon *d, uint64_t seq, struct gq_jobrec *rec);

/* Publishes an event on /v1/events (after the batch commits). */
void gq_publish(struct gq_daemon *d, const struct gq_jobrec *r,
                const struct gq_job *j);

/* The HTTP layer: installs the routes on d->http.  A reload that changes
 * max_body or request_timeout calls it again, so it must only set things
 * (callbacks, limits), never add or allocate. */
void gq_http_setup(struct gq_daemon *d);
/* Starts what the HTTP layer runs besides d->http (once, at start). */
int gq_http_init(struct gq_daemon *d);
/* Makes listener l stop accepting for 100 ms when accept() fails for
 * want of file descriptors (or memory) instead of retrying at once. */
struct evconnlistener;
int gq_http_guard_listener(struct gq_daemon *d, struct evconnlistener *l);
/* Frees what the HTTP layer holds besides d->http (before the base). */
void gq_http_close(struct gq_daemon *d);
/* Replies to a lease/lock park with its grant. */
void gq_http_grant(struct gq_daemon *d, struct gq_park *p,
                   const struct gq_jobrec *r, double ttl);
/* Sends an SSE event to every matching stream. */
void gq_http_sse_send(struct gq_daemon *d, json_t *ev);
/* Sends a piece of a job's generated text to its STREAM parks. */
void gq_http_stream_token(struct gq_daemon *d, uint64_t seq,
                          const char *text, size_t len);
/* Ends a job's STREAM parks with the job's final record. */
void gq_http_stream_end(struct gq_daemon *d, const struct gq_jobrec *r);
/* The run of a running job, or NULL (worker jobs, locks). */
struct gq_runctx *gq_daemon_run_of(struct gq_daemon *d, uint64_t seq);

#endif
