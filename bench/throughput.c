/*
 * throughput.c - durable submit throughput, gpuq against beanstalkd.
 *
 * C keep-alive connections (default 50) each send a job, wait for its
 * acknowledgement, and send the next, back to back, for a fixed time.
 * One client thread drives them all with poll(), so the client costs as
 * little CPU as it can on a machine it shares with the server.  Targets:
 *
 *   gpuq          POST /v1/jobs {"class":"transcription","payload":{"n":i}}
 *                 -> 201, synchronous = full (ack after fsync)
 *   gpuq-off      the same with synchronous = off (reference)
 *   bs-f0         beanstalkd -b DIR -f0: fsync after every put
 *   bs-f50        beanstalkd -b DIR (its default -f50: fsync at most every
 *                 50 ms, so a put is acknowledged before it is on disk)
 *
 * beanstalkd gets `put 0 0 60 N\r\n<body>\r\n` with the same body bytes
 * as gpuq's request body, and must answer `INSERTED id\r\n`.  Only
 * replies that arrive inside the measured window (after a warm-up) count.
 *
 *   throughput [--gpuqd PATH] [--beanstalkd PATH] [--dir BASE]
 *              [--conns N] [--seconds S] [--warmup S]
 *              [--targets gpuq,gpuq-off,bs-f0,bs-f50]
 */
#include "lib/benchlib.c"

#define MAXCONN 512
#define INBUF 16384

enum proto { P_HTTP, P_BEANSTALK };

struct cconn {
    int fd;
    char in[INBUF];
    size_t len;
    int64_t t_sent;
    long n;                   /* jobs sent on this connection */
    int busy;                 /* a request is outstanding */
};

struct tres {
    const char *name;
    int ran;
    double secs;              /* measured window */
    long ok, bad;             /* acknowledged / refused in the window */
    double rate;              /* ok per second */
    double p50, p90, p99, max;/* latency, us */
    double srv_cpu;           /* server CPU seconds in the window */
    double commits;           /* gpuq: group commits in the window */
    int first_bad_status;
};

static int conns = 50;
static double seconds = 10, warmup = 1;

/* The body of job i of connection c (identical bytes for both servers). */
static int
job_body(char *buf, size_t len, int c, long i)
{
    return snprintf(buf, len,
                    "{\"class\":\"transcription\",\"payload\":{\"n\":%ld}}",
                    (long)c * 10000000L + i);
}

static int
send_job(enum proto p, struct cconn *cc, int ci)
{
    char body[256], req[1024];
    int blen = job_body(body, sizeof body, ci, cc->n++);
    int n;
    if (p == P_HTTP)
        n = snprintf(req, sizeof req,
                     "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s", blen, body);
    else
        n = snprintf(req, sizeof req, "put 0 0 60 %d\r\n%s\r\n", blen, body);
    cc->t_sent = bl_now_ns();
    cc->busy = 1;
    return bl_write_all(cc->fd, req, (size_t)n);
}

/* Length of one complete reply at the start of cc->in (0: incomplete,
 * -1: malformed); *ok says whether it acknowledged the job. */
static long
take_reply(enum proto p, struct cconn *cc, int *ok, int *status)
{
    if (p == P_HTTP) {
        size_t off, blen;
        long n = bl_http_parse(cc->in, cc->len, status, &off, &blen);
        if (n > 0)
            *ok = *status == 201;
        return n;
    }
    char *eol = memmem(cc->in, cc->len, "\r\n", 2);
    if (eol == NULL)
        return cc->len > 1024 ? -1 : 0;
    *ok = strncmp(cc->in, "INSERTED ", 9) == 0;
    *status = *ok ? 0 : -1;
    return (long)(eol - cc->in) + 2;
}

/* The end of the measured window: server CPU and (gpuq) commits. */
static void
end_window(enum proto p, int port, pid_t srv, double cpu0, double commits0,
           struct tres *r)
{
    r->srv_cpu = bl_cpu_s(srv) - cpu0;
    if (p == P_HTTP) {
        struct bl_conn m;
        if (bl_conn_open(&m, port, 10) == 0 &&
            bl_http(&m, "GET", "/metrics", NULL) == 200)
            r->commits = bl_metric(m.body, "gpuq_store_commits_total") -
                         commits0;
        bl_conn_close(&m);
    }
}

/* Drives the load against 127.0.0.1:port and fills r (latency, rate). */
static void
drive(enum proto p, int port, pid_t srv, struct tres *r)
{
    static struct cconn cc[MAXCONN];
    struct pollfd pf[MAXCONN];
    struct bl_samples lat = {0};
    for (int i = 0; i < conns; i++) {
        cc[i].fd = bl_connect(port, 10);
        if (cc[i].fd < 0)
            bl_die("connect %d: %s", i, strerror(errno));
        cc[i].len = 0;
        cc[i].n = 0;
        cc[i].busy = 0;
        pf[i].fd = cc[i].fd;
        pf[i].events = POLLIN;
    }
    int64_t t_begin = bl_now_ns();
    int64_t t_meas = t_begin + (int64_t)(warmup * 1e9);
    int64_t t_end = t_meas + (int64_t)(seconds * 1e9);
    int64_t t_hard = t_end + 10000000000LL; /* drain at most 10 s */
    int measuring = 0, ended = 0;
    double cpu0 = 0, commits0 = 0;
    r->ok = r->bad = 0;
    r->first_bad_status = 0;
    for (int i = 0; i < conns; i++)
        if (send_job(p, &cc[i], i) < 0)
            bl_die("send: %s", strerror(errno));
    int outstanding = conns;
    while (outstanding > 0) {
        int64_t now = bl_now_ns();
        if (!measuring && now >= t_meas) {
            measuring = 1;
            cpu0 = bl_cpu_s(srv);
            r->commits = -1;
            if (p == P_HTTP) {
                /* Commits so far, on a side connection (one request). */
                struct bl_conn m;
                if (bl_conn_open(&m, port, 10) == 0 &&
                    bl_http(&m, "GET", "/metrics", NULL) == 200)
                    commits0 = bl_metric(m.body, "gpuq_store_commits_total");
                bl_conn_close(&m);
            }
        }
        if (now > t_hard)
            bl_die("%d replies still missing 10 s after the end", outstanding);
        int n = poll(pf, (nfds_t)conns, 100);
        if (n < 0 && errno != EINTR)
            bl_die("poll: %s", strerror(errno));
        for (int i = 0; i < conns && n > 0; i++) {
            if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            struct cconn *c = &cc[i];
            ssize_t got = recv(c->fd, c->in + c->len, sizeof c->in - c->len,
                               0);
            if (got <= 0)
                bl_die("connection %d closed by the server (%s)", i,
                       got < 0 ? strerror(errno) : "EOF");
            c->len += (size_t)got;
            int ok, status;
            long used = take_reply(p, c, &ok, &status);
            if (used < 0)
                bl_die("malformed reply on connection %d", i);
            if (used == 0)
                continue;
            int64_t t = bl_now_ns();
            memmove(c->in, c->in + used, c->len - (size_t)used);
            c->len -= (size_t)used;
            c->busy = 0;
            outstanding--;
            if (t >= t_meas && t < t_end) {
                if (ok) {
                    r->ok++;
                    bl_samples_add(&lat, (double)(t - c->t_sent) / 1e3);
                } else {
                    r->bad++;
                    if (r->first_bad_status == 0)
                        r->first_bad_status = status;
                }
            }
            if (t < t_end) {
                if (send_job(p, c, i) < 0)
                    bl_die("send: %s", strerror(errno));
                outstanding++;
            }
        }
        if (measuring && !ended && bl_now_ns() >= t_end) {
            end_window(p, port, srv, cpu0, commits0, r);
            ended = 1;
        }
    }
    if (!ended)
        end_window(p, port, srv, cpu0, commits0, r);
    for (int i = 0; i < conns; i++)
        close(cc[i].fd);
    r->secs = seconds;
    r->rate = (double)r->ok / seconds;
    bl_sort(lat.v, lat.n);
    r->p50 = bl_pct(lat.v, lat.n, 0.50);
    r->p90 = bl_pct(lat.v, lat.n, 0.90);
    r->p99 = bl_pct(lat.v, lat.n, 0.99);
    r->max = lat.n ? lat.v[lat.n - 1] : 0;
    bl_samples_free(&lat);
}

static void
run_gpuq(const char *gpuqd, const char *base, const char *sync,
         struct tres *r)
{
    char cfgpath[PATH_MAX], cfg[512];
    char *dir = bl_tmpdir(base, "tput");
    struct bl_proc d;
    snprintf(cfgpath, sizeof cfgpath, "%s/gpuq.ini", dir);
    snprintf(cfg, sizeof cfg,
             "[server]\nsynchronous = %s\n\n"
             "[class transcription]\nmax_queue = 10000000\n", sync);
    bl_write_file(cfgpath, cfg);
    if (bl_gpuqd_start(&d, gpuqd, dir, cfgpath, 30, NULL) < 0)
        bl_die("gpuqd did not start");
    drive(P_HTTP, d.port, d.pid, r);
    bl_stop(&d, 30);
    bl_rmtree(dir);
    free(dir);
}

static void
run_beanstalkd(const char *bs, const char *base, int fsync_ms,
               struct tres *r)
{
    char *dir = bl_tmpdir(base, "beanstalkd");
    char port_s[16], log[PATH_MAX], f_s[16];
    struct bl_proc b = {0};
    snprintf(log, sizeof log, "%s/beanstalkd.log", dir);
    for (int attempt = 0; attempt < 5 && b.pid == 0; attempt++) {
        int port = bl_free_port();
        snprintf(port_s, sizeof port_s, "%d", port);
        snprintf(f_s, sizeof f_s, "-f%d", fsync_ms);
        char *argv[] = {(char *)bs, "-l", "127.0.0.1", "-p", port_s,
                        "-b", dir, fsync_ms >= 0 ? f_s : NULL, NULL};
        b.pid = bl_spawn(argv, log);
        b.port = port;
        int64_t end = bl_now_ns() + 5000000000LL;
        int fd = -1;
        while (bl_now_ns() < end && (fd = bl_connect(port, 1)) < 0) {
            int st;
            if (waitpid(b.pid, &st, WNOHANG) == b.pid) {
                b.pid = 0; /* port taken meanwhile? try another */
                break;
            }
            bl_sleep_us(2000);
        }
        if (fd >= 0)
            close(fd);
        else if (b.pid)
            bl_stop(&b, 5);
    }
    if (b.pid == 0)
        bl_die("beanstalkd did not start; see %s", log);
    drive(P_BEANSTALK, b.port, b.pid, r);
    bl_stop(&b, 10);
    bl_rmtree(dir);
    free(dir);
}

int
main(int argc, char **argv)
{
    const char *gpuqd = "bin/gpuqd", *bs = "/usr/bin/beanstalkd";
    const char *base = "/tmp", *targets = "gpuq,gpuq-off,bs-f0,bs-f50";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            bl_die("usage: throughput [--gpuqd PATH] [--beanstalkd PATH] "
                   "[--dir BASE] [--conns N] [--seconds S] [--warmup S] "
                   "[--targets gpuq,gpuq-off,bs-f0,bs-f50]");
        if (strcmp(a, "--gpuqd") == 0)
            gpuqd = v;
        else if (strcmp(a, "--beanstalkd") == 0)
            bs = v;
        else if (strcmp(a, "--dir") == 0)
            base = v;
        else if (strcmp(a, "--conns") == 0)
            conns = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            seconds = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atof(v);
        else if (strcmp(a, "--targets") == 0)
            targets = v;
        else
            bl_die("unknown flag %s", a);
        i++;
    }
    if (conns < 1 || conns > MAXCONN || !(seconds > 0 && seconds <= 600) ||
        !(warmup >= 0 && warmup <= 60))
        bl_die("--conns 1..%d, --seconds (0, 600], --warmup [0, 60]",
               MAXCONN);

    struct tres r[4] = {{.name = "gpuq (synchronous=full)"},
                        {.name = "gpuq (synchronous=off)"},
                        {.name = "beanstalkd -f0"},
                        {.name = "beanstalkd -f50 (default)"}};
    const char *keys[4] = {"gpuq", "gpuq-off", "bs-f0", "bs-f50"};
    printf("== throughput: %d keep-alive connections, %.0f s measured after "
           "%.0f s warm-up, data under %s ==\n", conns, seconds, warmup, base);
    for (int t = 0; t < 4; t++) {
        char list[256], *save = NULL;
        int want = 0;
        snprintf(list, sizeof list, "%s", targets);
        for (char *k = strtok_r(list, ",", &save); k;
             k = strtok_r(NULL, ",", &save))
            if (strcmp(k, keys[t]) == 0)
                want = 1;
        if (!want)
            continue;
        if (t == 0)
            run_gpuq(gpuqd, base, "full", &r[t]);
        else if (t == 1)
            run_gpuq(gpuqd, base, "off", &r[t]);
        else if (access(bs, X_OK) != 0) {
            printf("%s: %s not found; skipped\n", r[t].name, bs);
            continue;
        } else
            run_beanstalkd(bs, base, t == 2 ? 0 : -1, &r[t]);
        r[t].ran = 1;
        printf("  %-27s %9.0f jobs/s\n", r[t].name, r[t].rate);
        fflush(stdout);
    }
    printf("\n%-27s %9s %8s %8s %8s %8s %7s %9s %8s\n", "target", "jobs/s",
           "p50 us", "p90 us", "p99 us", "max us", "errors", "srv CPU%",
           "jobs/commit");
    for (int t = 0; t < 4; t++) {
        if (!r[t].ran)
            continue;
        char per[32] = "-";
        if (r[t].commits > 0)
            snprintf(per, sizeof per, "%.1f",
                     (double)(r[t].ok + r[t].bad) / r[t].commits);
        printf("%-27s %9.0f %8.0f %8.0f %8.0f %8.0f %7ld %8.0f%% %9s\n",
               r[t].name, r[t].rate, r[t].p50, r[t].p90, r[t].p99, r[t].max,
               r[t].bad, 100 * r[t].srv_cpu / r[t].secs, per);
        if (r[t].bad)
            printf("  (first refusal: status %d)\n", r[t].first_bad_status);
    }
    if (r[0].ran && r[3].ran)
        printf("goal: gpuq (durable) >= beanstalkd -f50: %s (%.0f vs %.0f "
               "jobs/s, %.2fx)\n",
               r[0].rate >= r[3].rate ? "MET" : "NOT MET", r[0].rate,
               r[3].rate, r[3].rate > 0 ? r[0].rate / r[3].rate : 0);
    if (r[0].ran && r[2].ran)
        printf("      gpuq (durable) vs beanstalkd -f0 (also durable): "
               "%.2fx\n", r[2].rate > 0 ? r[0].rate / r[2].rate : 0);
    fflush(stdout);
    return 0;
}
