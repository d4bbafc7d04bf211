/*
 * fuzz_http.c - the whole daemon in this process, fuzzed through its
 * socket.  Each input is the raw bytes a client sends on one TCP
 * connection to gpuqd: one request or several pipelined, well formed or
 * not.  They go through evhttp's parser, the route table of
 * src/server/http.c, every handler with its validation, the scheduler,
 * the executors and the SQLite store, exactly as a client's would.
 *
 * The daemon runs on the harness's thread.  The harness writes the input,
 * runs the event loop, and half-closes its end once the daemon has had
 * nothing to do (no event, no backend call, no decoding, no timer about
 * to fire) for GPUQ_FUZZ_IDLE_ROUNDS (3) turns of the loop in a row;
 * evhttp then sees where the last request ends, and a request still
 * parked (a long-poll, a drop-in waiting for its job) sees its client go
 * away.  The input ends when the daemon closes the connection, or after
 * GPUQ_FUZZ_DEADLINE_MS (250).  State carries over from one input to the
 * next, as on a real server: jobs submitted by one input can be leased,
 * completed or cancelled by a later one (ids are j1, j2, ...).
 *
 * The configuration (conf_fmt below): the seed design's three worker
 * classes, and one class per built-in executor (chat, transcribe,
 * summarize) with a backend of each type.  The backends are a fake
 * server in this process, on the same loop: it answers health checks, and
 * other calls with the real servers' recorded replies
 * (tests/fake/recordings), or, when the input holds the line
 * "--gpuq-fuzz-backend--", with the bytes after that line (the client's
 * part ends before it): so the executors parse hostile replies too.  It
 * is also every curl transfer's proxy (http_proxy and friends), so
 * callbacks to any URL an input names end there, and nothing leaves the
 * process.  The transcribe class's audio root is tests/fuzz/files,
 * reached through /proc/self/cwd so that seeds can name a file in it
 * wherever the repository is: the harness runs from the repository root,
 * like the unit tests.  Short leases, small queues and few parked
 * requests keep the state small.  Store faults can be armed by an input
 * (POST /v1/admin/fault); they are disarmed after each input.
 *
 * The data directory is under /dev/shm (or GPUQ_FUZZ_TMP), named with
 * the pid so that the next run removes what a crashed one left.  The
 * daemon is closed and started again on the same data (a restart, with
 * recovery) when an input drained it (POST /v1/admin/drain) or when
 * parked requests pile up, and on a fresh data directory every
 * RESET_EVERY inputs, so memory and disk stay bounded over long runs.
 *
 * Besides the sanitizers the harness checks the first reply: never a 500
 * (gpuqd's "internal" and "io" errors are bugs or broken disks, never a
 * client's doing) unless the input armed a store fault; that the job
 * table is sound after each input (check_jobs); and that the daemon's
 * loop does not spin (timer_cb).
 * GPUQ_FUZZ_LOG=1 shows the daemon's log, GPUQ_FUZZ_SHOW=1 each
 * request line and the start of its reply.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/err.h"
#include "core/job.h"
#include "exec/httpc.h"
#include "exec/workq.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/log.h"
#include "store/store.h"
#include "fuzz.h"

#define RESET_EVERY 20000  /* inputs between fresh data directories */
#define MAX_PARKED 16      /* parked requests before a restart */
#define BACKEND_SEP "\n--gpuq-fuzz-backend--\n"
#define BACKEND_MAX_REQ (4 << 20) /* request bytes the fake keeps */
#define SOON_US 50000      /* a daemon timer due sooner is waited for */
#define SPIN_MS 5000       /* a turn of the loop longer than this spins */

static struct gq_daemon d;
static int up;                  /* d is running */
static char tmp[512];           /* the harness's directory */
static char data_dir[600];      /* tmp/data */
static struct sockaddr_in daemon_addr;
static unsigned long inputs;    /* since the last fresh start */
static long deadline_ms = 250;
static long idle_rounds = 3;
static int show;                /* GPUQ_FUZZ_SHOW: print each exchange */

static const char conf_fmt[] =
    "[server]\n"
    "listen = 127.0.0.1:0\n"
    "data_dir = %s\n"
    "synchronous = off\n"
    "request_timeout = 2\n"
    "drain_timeout = 1\n"
    "max_parked = 32\n"
    "max_payload = 65536\n"
    "[gpu]\n"
    "slots = 2\n"
    "[callbacks]\n"
    "secret = fuzz-callback-secret-0123456789\n"
    "attempts = 2\n"
    "[class chatbot]\n"
    "priority = 10\n"
    "queue_timeout = 60\n"
    "max_attempts = 1\n"
    "lease_ttl = 2\n"
    "max_queue = 100\n"
    "[class transcription]\n"
    "weight = 70\n"
    "max_consecutive = 2\n"
    "lease_ttl = 2\n"
    "max_queue = 100\n"
    "[class summarization]\n"
    "weight = 30\n"
    "max_consecutive = 1\n"
    "lease_ttl = 2\n"
    "max_queue = 100\n"
    "[class chat]\n"
    "priority = 5\n"
    "executor = chat\n"
    "backend = llm\n"
    "max_queue = 100\n"
    "max_attempts = 2\n"
    "backoff_base = 0.01\n"
    "backoff_max = 0.05\n"
    "[class transcribe]\n"
    "executor = transcribe\n"
    "backend = whisper\n"
    "audio_roots = /proc/self/cwd/tests/fuzz/files\n"
    "max_queue = 100\n"
    "max_attempts = 2\n"
    "backoff_base = 0.01\n"
    "backoff_max = 0.05\n"
    "[class summarize]\n"
    "executor = summarize\n"
    "backend = ollama\n"
    "max_queue = 100\n"
    "max_attempts = 2\n"
    "backoff_base = 0.01\n"
    "backoff_max = 0.05\n"
    "[backend whisper]\n"
    "type = whisper-cpp\n"
    "url = http://127.0.0.1:%d\n"
    "timeout = 2\n"
    "[backend llm]\n"
    "type = openai\n"
    "url = http://127.0.0.1:%d\n"
    "model = fuzz-model\n"
    "timeout = 2\n"
    "[backend ollama]\n"
    "type = ollama\n"
    "url = http://127.0.0.1:%d\n"
    "timeout = 2\n"
    "[models]\n"
    "fuzz-model = chat\n"
    "gemma3:12b = chat\n";

/* ---- the fake backend ------------------------------------------------ */

/*
 * One connection to the fake: a request read in full (headers, then
 * Content-Length bytes or a chunked body), then one reply written, then
 * closed, as a server that does not keep connections alive.
 */
struct bconn {
    int fd;
    struct event *rd, *wr;
    char *in;                   /* the request so far */
    size_t len, cap;
    int continued;              /* "100 Continue" sent */
    char *out;                  /* the reply, being written */
    size_t outlen, outoff;
    struct bconn *prev, *next;
};

static int backend_fd = -1;     /* listening, for the whole run */
static int backend_port;
static struct event *backend_ev;    /* accepts, on d's loop */
static struct bconn *bconns;
static char *fuzz_reply;        /* this input's backend part, or NULL */
static size_t fuzz_reply_len;

/* The recorded replies, read once. */
enum { R_HEALTH, R_WHISPER, R_CHAT, R_CHAT_STREAM, R_OLLAMA,
       R_OLLAMA_STREAM, R_OTHER, R_CONNECT, NREPLIES };
static char *replies[NREPLIES];
static size_t reply_len[NREPLIES];

static void
set_reply(int i, const char *head, const char *body, size_t blen)
{
    size_t hl = strlen(head);
    replies[i] = malloc(hl + blen);
    CHECK(replies[i] != NULL);
    memcpy(replies[i], head, hl);
    memcpy(replies[i] + hl, body, blen);
    reply_len[i] = hl + blen;
}

/* A file of the repository, whole, or NULL with *len 0. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) != NULL &&
        fread(buf, 1, (size_t)n, f) == (size_t)n)
        *len = (size_t)n;
    fclose(f);
    if (*len == 0) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

/*
 * The recordings keep a chunked reply's body as it was decoded (the
 * header says chunked, the body has no chunk sizes): put it back in one
 * chunk, as the server sent it.
 */
static void
rechunk(int i)
{
    char *r = replies[i], *h, *out;
    size_t n = reply_len[i], hl, bl, cap;
    int k;

    h = memmem(r, n, "\r\n\r\n", 4);
    if (h == NULL || memmem(r, (size_t)(h - r), "Transfer-Encoding: chunked",
                            26) == NULL)
        return;
    hl = (size_t)(h - r) + 4;
    bl = n - hl;
    cap = hl + bl + 32;
    out = malloc(cap);
    CHECK(out != NULL);
    memcpy(out, r, hl);
    k = snprintf(out + hl, 32, "%zx\r\n", bl);
    memcpy(out + hl + (size_t)k, r + hl, bl);
    memcpy(out + hl + (size_t)k + bl, "\r\n0\r\n\r\n", 7);
    reply_len[i] = hl + (size_t)k + bl + 7;
    free(r);
    replies[i] = out;
}

static void
load_replies(void)
{
    static const struct {
        int i;
        const char *file;
    } recs[] = {
        {R_WHISPER, "tests/fake/recordings/whisper-inference-verbose_json"
                    ".http"},
        {R_CHAT, "tests/fake/recordings/llama-chat.http"},
        {R_CHAT_STREAM, "tests/fake/recordings/llama-chat-stream.http"},
    };
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                             "application/json\r\nContent-Length: 15\r\n"
                             "Connection: close\r\n\r\n";
    static const char nd[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                             "application/x-ndjson\r\nConnection: close"
                             "\r\n\r\n";
    /* Ollama's reply with stream:false (summarize asks for it). */
    static const char ollama_full[] =
        "{\"model\":\"tiny-random-llama\",\"created_at\":"
        "\"2026-11-27T10:00:00Z\",\"message\":{\"role\":\"assistant\","
        "\"content\":\"a short summary\"},\"done\":true,"
        "\"done_reason\":\"stop\",\"prompt_eval_count\":18,"
        "\"eval_count\":4}\n";
    char *body;
    size_t n;

    for (size_t k = 0; k < sizeof recs / sizeof recs[0]; k++) {
        int i = recs[k].i;
        replies[i] = slurp(recs[k].file, &reply_len[i]);
        if (replies[i] == NULL) {
            fprintf(stderr, "fuzz_http: cannot read %s: run from the "
                    "repository root\n", recs[k].file);
            abort();
        }
        rechunk(i);
    }
    set_reply(R_HEALTH, ok, "{\"status\":\"ok\"}", 15);
    body = slurp("tests/fixtures/ollama-chat-stream.ndjson", &n);
    CHECK(body != NULL);
    set_reply(R_OLLAMA_STREAM, nd, body, n);
    free(body);
    set_reply(R_OLLAMA, nd, ollama_full, sizeof ollama_full - 1);
    set_reply(R_OTHER, "HTTP/1.1 204 No Content\r\nConnection: close\r\n"
              "\r\n", "", 0);
    set_reply(R_CONNECT, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
              "Connection: close\r\n\r\n", "", 0);
}

static void
bconn_free(struct bconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        bconns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rd);
    event_free(c->wr);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* 1 when c->in holds a whole request. */
static int
request_done(const struct bconn *c)
{
    const char *h = memmem(c->in, c->len, "\r\n\r\n", 4);
    size_t hlen, blen = 0;
    const char *cl;

    if (h == NULL)
        return 0;
    hlen = (size_t)(h - c->in) + 4;
    /* The headers are text: the copy ends at the NUL bconn_rd adds. */
    cl = strcasestr(c->in, "\r\nContent-Length:");
    if (cl != NULL && cl < h)
        blen = strtoul(cl + 17, NULL, 10);
    else if (strcasestr(c->in, "\r\nTransfer-Encoding: chunked") != NULL)
        return memmem(c->in + hlen, c->len - hlen, "0\r\n\r\n", 5) != NULL;
    return c->len - hlen >= blen;
}

/* The reply for the request in c->in. */
static void
pick_reply(struct bconn *c)
{
    const char *line_end = memchr(c->in, '\r', c->len);
    size_t ll = line_end ? (size_t)(line_end - c->in) : c->len;
    const char *r;
    size_t rl;
    int k;

#define LINE_HAS(s) (memmem(c->in, ll, s, strlen(s)) != NULL)
    int stream = memmem(c->in, c->len, "\"stream\":true", 13) != NULL;
    if (strncmp(c->in, "CONNECT ", 8) == 0)
        k = R_CONNECT;
    else if (strncmp(c->in, "GET ", 4) == 0 &&
             (LINE_HAS("/health ") || LINE_HAS("/ HTTP/")))
        k = R_HEALTH;
    else if (fuzz_reply != NULL)
        k = -1;
    else if (LINE_HAS("/inference "))
        k = R_WHISPER;
    else if (LINE_HAS("/v1/chat/completions "))
        k = stream ? R_CHAT_STREAM : R_CHAT;
    else if (LINE_HAS("/api/chat "))
        k = stream ? R_OLLAMA_STREAM : R_OLLAMA;
    else
        k = R_OTHER;            /* a callback */
#undef LINE_HAS
    r = k < 0 ? fuzz_reply : replies[k];
    rl = k < 0 ? fuzz_reply_len : reply_len[k];
    c->out = malloc(rl ? rl : 1);
    CHECK(c->out != NULL);
    memcpy(c->out, r, rl);
    c->outlen = rl;
    c->outoff = 0;
}

static void
bconn_wr(evutil_socket_t fd, short what, void *arg)
{
    struct bconn *c = arg;
    ssize_t n;

    (void)what;
    while (c->outoff < c->outlen) {
        n = write(fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            break;
        c->outoff += (size_t)n;
    }
    bconn_free(c);              /* the reply ends when the connection does */
}

static void
bconn_rd(evutil_socket_t fd, short what, void *arg)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct bconn *c = arg;
    char buf[16384];
    ssize_t n;

    (void)what;
    for (;;) {
        n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            bconn_free(c);      /* gone before asking anything */
            return;
        }
        if (c->len + (size_t)n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 65536;
            while (cap < c->len + (size_t)n + 1)
                cap *= 2;
            if (cap > BACKEND_MAX_REQ) {
                bconn_free(c);
                return;
            }
            c->in = realloc(c->in, cap);
            CHECK(c->in != NULL);
            c->cap = cap;
        }
        memcpy(c->in + c->len, buf, (size_t)n);
        c->len += (size_t)n;
        c->in[c->len] = '\0';
        if (request_done(c))
            break;
        /* curl waits a second for this before a big body. */
        if (!c->continued && memmem(c->in, c->len, "\r\n\r\n", 4) &&
            strcasestr(c->in, "\r\nExpect: 100-continue") != NULL) {
            c->continued = 1;
            if (write(fd, cont, sizeof cont - 1) < 0)
                bconn_free(c);
            return;
        }
    }
    pick_reply(c);
    event_del(c->rd);
    event_add(c->wr, NULL);
}

static void
accept_cb(evutil_socket_t fd, short what, void *arg)
{
    int cfd;

    (void)what;
    (void)arg;
    while ((cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
           0) {
        struct bconn *c = calloc(1, sizeof *c);
        CHECK(c != NULL);
        c->fd = cfd;
        c->rd = event_new(d.base, cfd, EV_READ | EV_PERSIST, bconn_rd, c);
        c->wr = event_new(d.base, cfd, EV_WRITE | EV_PERSIST, bconn_wr, c);
        CHECK(c->rd != NULL && c->wr != NULL);
        event_add(c->rd, NULL);
        c->next = bconns;
        if (bconns)
            bconns->prev = c;
        bconns = c;
    }
}

static void
backend_listen(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;

    backend_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0);
    CHECK(backend_fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(backend_fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(backend_fd, 64) == 0);
    CHECK(getsockname(backend_fd, (struct sockaddr *)&a, &alen) == 0);
    backend_port = ntohs(a.sin_port);
    load_replies();
}

/* ---- the daemon -------------------------------------------------------- */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void
rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Starts the daemon on data_dir (emptied first when fresh). */
static void
daemon_start(int fresh)
{
    static struct gq_config cfg;
    char path[700], msg[4096], addr[128];
    FILE *f;
    int port;

    if (fresh) {
        rm_rf(data_dir);
        inputs = 0;
    }
    snprintf(path, sizeof path, "%s/gpuqd.conf", tmp);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fprintf(f, conf_fmt, data_dir, backend_port, backend_port,
            backend_port);
    CHECK(fclose(f) == 0);
    if (gq_config_load(&cfg, path, msg, sizeof msg) < 0 ||
        gq_config_check(&cfg, msg, sizeof msg) < 0) {
        fprintf(stderr, "fuzz_http: the harness's configuration:\n%s\n",
                msg);
        abort();
    }
    if (gq_daemon_init(&d, &cfg, msg, sizeof msg) < 0) {
        fprintf(stderr, "fuzz_http: gq_daemon_init: %s\n", msg);
        abort();
    }
    d.fault_injection = 1;
    up = 1;
    backend_ev = event_new(d.base, backend_fd, EV_READ | EV_PERSIST,
                           accept_cb, NULL);
    CHECK(backend_ev != NULL && event_add(backend_ev, NULL) == 0);

    /* Where it listens: the port it bound, as gpuqd.addr says. */
    snprintf(path, sizeof path, "%s/gpuqd.addr", data_dir);
    f = fopen(path, "r");
    CHECK(f != NULL);
    CHECK(fgets(addr, sizeof addr, f) != NULL);
    fclose(f);
    CHECK(sscanf(addr, "127.0.0.1:%d", &port) == 1);
    memset(&daemon_addr, 0, sizeof daemon_addr);
    daemon_addr.sin_family = AF_INET;
    daemon_addr.sin_port = htons((uint16_t)port);
    daemon_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void
daemon_stop(void)
{
    if (!up)
        return;
    /* The fake's events live on the daemon's loop: they go first. */
    while (bconns != NULL)
        bconn_free(bconns);
    event_free(backend_ev);
    backend_ev = NULL;
    gq_daemon_close(&d);
    up = 0;
}

static void
cleanup(void)
{
    daemon_stop();
    if (backend_fd >= 0)
        close(backend_fd);
    backend_fd = -1;
    for (int i = 0; i < NREPLIES; i++) {
        free(replies[i]);
        replies[i] = NULL;
    }
    free(fuzz_reply);
    fuzz_reply = NULL;
    if (tmp[0] != '\0' && getenv("GPUQ_FUZZ_KEEP") == NULL)
        rm_rf(tmp);
    tmp[0] = '\0';
}

/*
 * Removes the directories of earlier runs that died without cleaning up
 * (a crash or a timeout ends libFuzzer without atexit): the pid in the
 * name is no longer a process.
 */
static void
remove_stale(const char *base)
{
    char pat[600], path[700];
    DIR *dir = opendir(base);
    struct dirent *e;
    long pid;

    if (dir == NULL)
        return;
    while ((e = readdir(dir)) != NULL) {
        if (sscanf(e->d_name, "gpuq-fuzz-http.%ld.%8s", &pid, pat) != 2 ||
            pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        rm_rf(path);
    }
    closedir(dir);
}

static void
setup(void)
{
    const char *base = getenv("GPUQ_FUZZ_TMP"), *s;
    char proxy[64];
    struct stat st;

    if (base == NULL || base[0] == '\0') {
        /* Memory is quicker than disk for a store that churns. */
        base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0
                   ? "/dev/shm"
                   : getenv("TMPDIR");
        if (base == NULL || base[0] == '\0')
            base = "/tmp";
    }
    remove_stale(base);
    snprintf(tmp, sizeof tmp, "%s/gpuq-fuzz-http.%ld.XXXXXX", base,
             (long)getpid());
    CHECK(mkdtemp(tmp) != NULL);
    snprintf(data_dir, sizeof data_dir, "%s/data", tmp);
    atexit(cleanup);
    if ((s = getenv("GPUQ_FUZZ_DEADLINE_MS")) != NULL && atol(s) > 0)
        deadline_ms = atol(s);
    if ((s = getenv("GPUQ_FUZZ_IDLE_ROUNDS")) != NULL && atol(s) > 0)
        idle_rounds = atol(s);
    if (getenv("GPUQ_FUZZ_LOG") == NULL)
        gq_log_level = -1;
    show = getenv("GPUQ_FUZZ_SHOW") != NULL;

    backend_listen();
    /* Whatever URL an input gives (callback_url), curl goes to the fake. */
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", backend_port);
    setenv("http_proxy", proxy, 1);
    setenv("https_proxy", proxy, 1);
    setenv("HTTPS_PROXY", proxy, 1);
    setenv("all_proxy", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    daemon_start(1);
}

/* ---- one input --------------------------------------------------------- */

/* One client connection: the input going out, the reply coming in. */
struct conv {
    int fd;
    const uint8_t *data;
    size_t size, off;
    int shut;                   /* our end is half-closed */
    long idle;                  /* turns of the loop with nothing done */
    int late;                   /* the deadline has passed */
    int done;                   /* the daemon closed, or time is up */
    char head[512];             /* the reply's first bytes */
    size_t nhead;
    struct event *rd, *wr, *tick, *timer;
};

/* Half-closes, once everything is written. */
static void
conv_shut(struct conv *c)
{
    if (c->shut || c->off < c->size)
        return;
    shutdown(c->fd, SHUT_WR);
    c->shut = 1;
}

static void
wr_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conv *c = arg;

    (void)what;
    while (c->off < c->size) {
        ssize_t n = write(fd, c->data + c->off, c->size - c->off);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            /* The daemon closed first (a 400 to a bad request line). */
            c->off = c->size;
            break;
        }
        c->off += (size_t)n;
    }
    event_del(c->wr);
}

static void
rd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conv *c = arg;
    char buf[16384];
    ssize_t n;

    (void)what;
    for (;;) {
        n = read(fd, buf, sizeof buf);
        if (n > 0) {
            size_t k = sizeof c->head - c->nhead;
            if (k > (size_t)n)
                k = (size_t)n;
            memcpy(c->head + c->nhead, buf, k);
            c->nhead += k;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        c->done = 1;            /* EOF or reset */
        return;
    }
}

/*
 * A zero timer, so once per turn of the loop (whose poll then does not
 * wait): if nothing else woke the loop, no backend call or decoding is
 * under way and none of the daemon's timers (backoff ends, queue
 * deadlines) is due soon, the daemon has nothing to do.  After
 * idle_rounds such turns in a row it is waiting for more of the
 * request, or parked: half-close.
 */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conv *c = arg;
    struct timeval tv = {0, 0};

    (void)fd;
    (void)what;
    if (event_base_get_num_events(d.base, EVENT_BASE_COUNT_ACTIVE) == 0 &&
        gq_workq_pending(d.workq) == 0 && gq_httpc_active(d.httpc) == 0 &&
        (d.timer_at == 0 || d.timer_at - gq_now() > SOON_US))
        c->idle++;
    else
        c->idle = 0;
    if (c->idle >= idle_rounds)
        conv_shut(c);
    if (!c->shut)
        evtimer_add(c->tick, &tv);
}

/*
 * The deadline.  event_base_loop (EVLOOP_ONCE or NONBLOCK) returns only
 * once no callback is left active, so the harness sees done when that
 * turn ends.  If the loops of an exchange have not ended SPIN_MS later,
 * the daemon keeps activating callbacks without a pause: a busy loop
 * (100% CPU, a bug even if requests are still served), reported as a
 * crash.  (exchange frees the timer as soon as its loops end.)
 */
static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conv *c = arg;
    struct timeval tv = {SPIN_MS / 1000, SPIN_MS % 1000 * 1000};

    (void)fd;
    (void)what;
    if (!c->late) {
        c->late = 1;
        c->done = 1;
        evtimer_add(c->timer, &tv);
        return;
    }
    fprintf(stderr, "fuzz_http: the daemon's loop has kept a callback "
            "active for %d ms after the deadline (a busy loop): "
            "commit_fails %d, turn_armed %d, in_batch %d, batch_failed %d, "
            "jobs %zu, parked %d\n", SPIN_MS, d.commit_fails, d.turn_armed,
            d.in_batch, d.batch_failed, d.jobs.count, d.nparked);
    abort();
}

/* Sends the client's bytes on a new connection and runs the loop until
 * the exchange ends; the reply's first bytes go to head. */
static void
exchange(const uint8_t *data, size_t size, char *head, size_t *nhead)
{
    struct conv c = {0};
    struct timeval dl = {deadline_ms / 1000, deadline_ms % 1000 * 1000};
    struct timeval tv = {0, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    CHECK(fd >= 0);
    /* Loopback: the handshake completes before the daemon accepts. */
    CHECK(connect(fd, (struct sockaddr *)&daemon_addr,
                  sizeof daemon_addr) == 0);
    CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
    c.fd = fd;
    c.data = data;
    c.size = size;
    c.rd = event_new(d.base, fd, EV_READ | EV_PERSIST, rd_cb, &c);
    c.wr = event_new(d.base, fd, EV_WRITE | EV_PERSIST, wr_cb, &c);
    c.tick = evtimer_new(d.base, tick_cb, &c);
    c.timer = evtimer_new(d.base, timer_cb, &c);
    CHECK(c.rd != NULL && c.wr != NULL && c.tick != NULL && c.timer != NULL);
    event_add(c.rd, NULL);
    event_add(c.wr, NULL);
    evtimer_add(c.tick, &tv);
    evtimer_add(c.timer, &dl);
    while (!c.done)
        event_base_loop(d.base, EVLOOP_ONCE);
    event_free(c.rd);
    event_free(c.wr);
    event_free(c.tick);
    close(fd);
    /* Let the daemon see the close and finish its turn.  A NONBLOCK
     * loop also returns only once no callback is active: the deadline
     * still watches it for a busy loop. */
    for (int i = 0; i < 4; i++)
        event_base_loop(d.base, EVLOOP_NONBLOCK);
    event_free(c.timer);
    memcpy(head, c.head, c.nhead);
    *nhead = c.nhead;
}

/*
 * The job table after an input: every chain ends, the chains hold count
 * jobs, and no seq is there twice (gq_jobtab_get finds each one).  A
 * broken table would hang or corrupt later inputs far from the cause.
 */
static void
check_jobs(void)
{
    size_t n = 0;

    for (size_t i = 0; i < d.jobs.nbuckets; i++) {
        for (struct gq_job *j = d.jobs.buckets[i]; j; j = j->h_next) {
            if (++n > d.jobs.count) {
                fprintf(stderr, "fuzz_http: the job table holds more than "
                        "its count (%zu) of jobs: a job is in it twice or a "
                        "chain loops (bucket %zu, j%llu)\n", d.jobs.count,
                        i, (unsigned long long)j->seq);
                abort();
            }
            CHECK(gq_jobtab_get(&d.jobs, j->seq) == j);
        }
    }
    CHECK(n == d.jobs.count);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = memmem(data, size, BACKEND_SEP,
                                sizeof BACKEND_SEP - 1);
    size_t client = sep ? (size_t)(sep - data) : size;
    char head[512];
    size_t nhead;
    int64_t t0;

    if (!up)
        setup();
    if (sep != NULL) {
        /* Kept until the next input: calls may outlast this one. */
        size_t n = size - client - (sizeof BACKEND_SEP - 1);
        free(fuzz_reply);
        fuzz_reply = malloc(n ? n : 1);
        CHECK(fuzz_reply != NULL);
        memcpy(fuzz_reply, sep + sizeof BACKEND_SEP - 1, n);
        fuzz_reply_len = n;
    } else {
        free(fuzz_reply);
        fuzz_reply = NULL;
    }
    t0 = gq_now();
    exchange(data, client, head, &nhead);
    if (show) {
        const uint8_t *eol = memchr(data, '\r', client);
        fprintf(stderr, "> %.*s\n< %.*s\n(%.1f ms)\n\n",
                (int)(eol ? eol - data : (ptrdiff_t)(client < 80 ? client
                                                                 : 80)),
                (const char *)data, (int)nhead, head,
                (double)(gq_now() - t0) / 1e3);
    }
    if (nhead >= 12 && memcmp(head, "HTTP/1.", 7) == 0 &&
        memcmp(head + 9, "500", 3) == 0 &&
        memmem(data, client, "/v1/admin/fault", 15) == NULL) {
        fprintf(stderr, "fuzz_http: a 500 reply without an armed fault:\n"
                "%.*s\n", (int)nhead, head);
        abort();
    }
    check_jobs();
    gq_store_fault(GQ_FAULT_NONE, 0);
    inputs++;
    if (d.draining || d.exit_code != 0 || d.nparked > MAX_PARKED ||
        inputs >= RESET_EVERY) {
        daemon_stop();
        daemon_start(inputs >= RESET_EVERY);
    }
    return 0;
}
