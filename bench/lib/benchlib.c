/*
 * benchlib.c - helpers shared by the gpuq benchmarks.
 *
 * The Makefile builds every bench/NAME.c into its own binary, so this file
 * lives one folder down, has no main, and is #included by each benchmark
 * ("lib/benchlib.c").  Everything here is static; BL_FN marks the helpers
 * a benchmark may leave unused.
 *
 * What it holds: a monotonic clock, percentiles, temporary directories,
 * starting and stopping a real gpuqd on 127.0.0.1 port 0 (the way the
 * integration tests do), and a minimal blocking HTTP/1.1 keep-alive
 * client that understands Content-Length bodies only (gpuqd always sends
 * one; event streams are not needed here).  Benchmarks are programs, so
 * the helpers may print and exit: bl_die() is the only way out on an
 * unexpected failure.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define BL_FN static __attribute__((unused))
#define BL_MAX_RESP (8 << 20) /* largest response the client accepts */

/* --- failure, clock, numbers --- */

BL_FN void bl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                                       noreturn));

BL_FN void
bl_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Monotonic time in nanoseconds. */
BL_FN int64_t
bl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

BL_FN void
bl_sleep_us(int64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int
bl_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

BL_FN void
bl_sort(double *v, size_t n)
{
    qsort(v, n, sizeof *v, bl_cmp_double);
}

/* The q-quantile (0..1) of a sorted array, nearest rank; 0 if empty. */
BL_FN double
bl_pct(const double *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return sorted[k - 1];
}

/* A growable array of doubles (latency samples). */
struct bl_samples {
    double *v;
    size_t n, cap;
};

BL_FN void
bl_samples_add(struct bl_samples *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        double *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            bl_die("out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

BL_FN void
bl_samples_free(struct bl_samples *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* --- files and directories --- */

/* Creates BASE/gpuq-TAG-XXXXXX; returns it (malloc'd). */
BL_FN char *
bl_tmpdir(const char *base, const char *tag)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/gpuq-%s-XXXXXX", base, tag);
    if (mkdtemp(path) == NULL)
        bl_die("mkdtemp %s: %s", path, strerror(errno));
    return strdup(path);
}

static int
bl_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(path);
    return 0;
}

BL_FN void
bl_rmtree(const char *path)
{
    nftw(path, bl_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

BL_FN void
bl_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        bl_die("cannot write %s: %s", path, strerror(errno));
}

/* VmRSS of a process in KiB, or -1. */
BL_FN long
bl_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* User + system CPU seconds a process has used so far, or -1. */
BL_FN double
bl_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the ")" of comm: state is field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long ut = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &stime) != 2)
        return -1;
    return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * The disk's durability floor: p50/p90/p99 (microseconds) of writing and
 * fdatasync'ing a fresh file in dir, iters times.  Three patterns:
 *   BL_FLOOR_OVERWRITE  4 KiB at offset 0 each time: the least a durable
 *                       commit can cost on this disk;
 *   BL_FLOOR_APPEND     4 KiB appended: the file grows, so the file
 *                       system must also journal the new size;
 *   BL_FLOOR_WAL        7 frames of 24 + 4096 bytes (one pwrite each),
 *                       cycling through a pre-written 4 MiB file: what a
 *                       SQLite WAL commit of a few pages does.
 */
enum bl_floor { BL_FLOOR_OVERWRITE, BL_FLOOR_APPEND, BL_FLOOR_WAL };

BL_FN void
bl_fsync_floor(const char *dir, int iters, enum bl_floor kind,
               double out[3])
{
    enum { FRAME = 4096 + 24, NFRAMES = 7, REGION = 4 << 20 };
    char path[PATH_MAX];
    char *block = calloc(1, FRAME);
    double *t = calloc((size_t)iters, sizeof *t);
    off_t off = 0;
    if (block == NULL || t == NULL)
        bl_die("out of memory");
    snprintf(path, sizeof path, "%s/fsync-floor.tmp", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        bl_die("open %s: %s", path, strerror(errno));
    if (kind == BL_FLOOR_WAL) {
        for (off_t o = 0; o < REGION + FRAME * NFRAMES; o += FRAME)
            if (pwrite(fd, block, FRAME, o) != FRAME)
                bl_die("write %s: %s", path, strerror(errno));
        if (fsync(fd) < 0)
            bl_die("fsync %s: %s", path, strerror(errno));
    }
    for (int i = 0; i < iters; i++) {
        int ok = 1;
        memset(block, 'a' + i % 26, FRAME);
        int64_t t0 = bl_now_ns();
        if (kind == BL_FLOOR_WAL) {
            for (int k = 0; k < NFRAMES && ok; k++, off += FRAME)
                ok = pwrite(fd, block, 24, off) == 24 &&
                     pwrite(fd, block + 24, 4096, off + 24) == 4096;
            if (off >= REGION)
                off = 0;
        } else {
            ok = pwrite(fd, block, 4096, off) == 4096;
            if (kind == BL_FLOOR_APPEND)
                off += 4096;
        }
        if (!ok || fdatasync(fd) < 0)
            bl_die("write/fdatasync %s: %s", path, strerror(errno));
        t[i] = (double)(bl_now_ns() - t0) / 1e3;
    }
    close(fd);
    unlink(path);
    bl_sort(t, (size_t)iters);
    out[0] = bl_pct(t, (size_t)iters, 0.50);
    out[1] = bl_pct(t, (size_t)iters, 0.90);
    out[2] = bl_pct(t, (size_t)iters, 0.99);
    free(t);
    free(block);
}

/* Prints the three floors for dir (iters each). */
BL_FN void
bl_fsync_floor_print(const char *dir, int iters)
{
    static const char *const names[3] = {
        "4 KiB overwrite (floor)", "4 KiB append", "WAL-like: 7 x 4 KiB"};
    printf("fsync floor in %s, write + fdatasync, %d each:\n", dir, iters);
    for (int k = 0; k < 3; k++) {
        double v[3];
        bl_fsync_floor(dir, iters, (enum bl_floor)k, v);
        printf("  %-26s p50 %7.0f  p90 %7.0f  p99 %7.0f us\n", names[k],
               v[0], v[1], v[2]);
    }
}

/* --- servers: gpuqd and beanstalkd as child processes --- */

struct bl_proc {
    pid_t pid;
    int port;
};

/* Forks argv[0] with stdout and stderr to logpath (stdin /dev/null). */
static pid_t
bl_spawn(char *const argv[], const char *logpath)
{
    pid_t pid = fork();
    if (pid < 0)
        bl_die("fork: %s", strerror(errno));
    if (pid == 0) {
        /* A benchmark killed by its timeout takes its servers with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Stops a child: SIGTERM, up to timeout_s, then SIGKILL.  Returns its
 * wait status. */
BL_FN int
bl_stop(struct bl_proc *p, double timeout_s)
{
    int status = 0;
    if (p->pid <= 0)
        return 0;
    kill(p->pid, SIGTERM);
    int64_t end = bl_now_ns() + (int64_t)(timeout_s * 1e9);
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid || (r < 0 && errno != EINTR))
            break;
        if (bl_now_ns() > end) {
            fprintf(stderr, "bench: pid %d did not stop; killing it\n",
                    (int)p->pid);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        bl_sleep_us(2000);
    }
    p->pid = 0;
    return status;
}

/*
 * Starts gpuqd on 127.0.0.1 port 0 with data dir and config (may be
 * NULL), its log in DIR/gpuqd.log, and waits up to timeout_s for
 * DIR/gpuqd.addr.  Returns 0, or -1 if it died or timed out (then it is
 * stopped).  *t_addr_ns gets how long the address took (may be NULL).
 */
BL_FN int
bl_gpuqd_start(struct bl_proc *p, const char *gpuqd, const char *dir,
               const char *config, double timeout_s, int64_t *t_addr_ns)
{
    char addr[PATH_MAX], log[PATH_MAX], line[128];
    char *argv[10];
    int n = 0;
    snprintf(addr, sizeof addr, "%s/gpuqd.addr", dir);
    snprintf(log, sizeof log, "%s/gpuqd.log", dir);
    unlink(addr);
    argv[n++] = (char *)gpuqd;
    argv[n++] = "--data";
    argv[n++] = (char *)dir;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    if (config) {
        argv[n++] = "--config";
        argv[n++] = (char *)config;
    }
    argv[n] = NULL;
    int64_t t0 = bl_now_ns(), end = t0 + (int64_t)(timeout_s * 1e9);
    p->pid = bl_spawn(argv, log);
    p->port = 0;
    for (;;) {
        int status;
        FILE *f = fopen(addr, "r");
        if (f) {
            if (fgets(line, sizeof line, f)) {
                char *colon = strrchr(line, ':');
                if (colon)
                    p->port = atoi(colon + 1);
            }
            fclose(f);
            if (p->port > 0)
                break;
        }
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            fprintf(stderr, "bench: gpuqd exited (status %d); see %s\n",
                    status, log);
            p->pid = 0;
            return -1;
        }
        if (bl_now_ns() > end) {
            fprintf(stderr, "bench: gpuqd wrote no address in %.0f s\n",
                    timeout_s);
            bl_stop(p, 5);
            return -1;
        }
        bl_sleep_us(500);
    }
    if (t_addr_ns)
        *t_addr_ns = bl_now_ns() - t0;
    return 0;
}

/* A free TCP port on 127.0.0.1 (bound and released; a tiny race). */
BL_FN int
bl_free_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        bl_die("free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* --- connections --- */

/* A blocking TCP connection to 127.0.0.1:port, TCP_NODELAY set, reads
 * timing out after timeout_s.  Returns the fd or -1. */
BL_FN int
bl_connect(int port, double timeout_s)
{
    struct sockaddr_in a = {0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {(time_t)timeout_s,
                         (suseconds_t)((timeout_s - (double)(time_t)timeout_s)
                                       * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Writes all of buf; 0 or -1. */
BL_FN int
bl_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* --- HTTP/1.1 --- */

/*
 * Parses one response at the start of buf[0..len).  Returns its total
 * length once it is complete, 0 if more bytes are needed, -1 if it is
 * malformed or uses a framing this client does not speak (chunked).
 * *status, *body_off and *body_len describe it when complete.
 */
BL_FN long
bl_http_parse(const char *buf, size_t len, int *status, size_t *body_off,
              size_t *body_len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len > 65536 ? -1 : 0;
    size_t hlen = (size_t)(end - buf) + 4;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    int st = atoi(buf + 9);
    long clen = -1;
    const char *p = memchr(buf, '\n', hlen);
    while (p && p + 1 < buf + hlen) {
        const char *line = p + 1;
        p = memchr(line, '\n', (size_t)(buf + hlen - line));
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0)
            return -1;
    }
    if (clen < 0) {
        if (st == 204 || st == 304 || st / 100 == 1)
            clen = 0;
        else
            return -1;
    }
    if (clen > BL_MAX_RESP)
        return -1;
    if (len < hlen + (size_t)clen)
        return 0;
    *status = st;
    *body_off = hlen;
    *body_len = (size_t)clen;
    return (long)(hlen + (size_t)clen);
}

/* A keep-alive client connection with its read buffer. */
struct bl_conn {
    int fd;
    char *in;           /* received bytes; the body is NUL-terminated */
    size_t len, cap;    /* bytes in `in`, its size */
    size_t consumed;    /* bytes of the last response, dropped next time */
    int status;         /* of the last response */
    char *body;         /* of the last response, inside `in` */
    size_t body_len;
};

BL_FN int
bl_conn_open(struct bl_conn *c, int port, double timeout_s)
{
    memset(c, 0, sizeof *c);
    c->fd = bl_connect(port, timeout_s);
    c->cap = 65536;
    c->in = malloc(c->cap);
    if (c->in == NULL)
        bl_die("out of memory");
    return c->fd < 0 ? -1 : 0;
}

BL_FN void
bl_conn_close(struct bl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Sends one request (body may be NULL) in a single write; 0 or -1. */
BL_FN int
bl_http_send(struct bl_conn *c, const char *method, const char *path,
             const char *body)
{
    char req[8192];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, blen, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof req)
        bl_die("request too large for the bench client");
    return bl_write_all(c->fd, req, (size_t)n);
}

/* Reads one whole response (blocking).  Returns the status, or -1 on a
 * closed connection, a timeout or a malformed reply.  c->body stays
 * valid until the next call on c. */
BL_FN int
bl_http_recv(struct bl_conn *c)
{
    if (c->consumed) {
        memmove(c->in, c->in + c->consumed, c->len - c->consumed);
        c->len -= c->consumed;
        c->consumed = 0;
    }
    for (;;) {
        size_t off, blen;
        int st;
        long n = bl_http_parse(c->in, c->len, &st, &off, &blen);
        if (n < 0)
            return -1;
        if (n > 0) {
            /* Requests are not pipelined, so nothing may follow the
             * response; recv() always leaves a spare byte for the NUL. */
            if ((size_t)n != c->len)
                return -1;
            c->status = st;
            c->body = c->in + off;
            c->body_len = blen;
            c->consumed = (size_t)n;
            c->in[n] = '\0';
            return st;
        }
        if (c->len + 1 >= c->cap) {
            if (c->cap >= BL_MAX_RESP * 2)
                return -1;
            char *in = realloc(c->in, c->cap * 2);
            if (in == NULL)
                bl_die("out of memory");
            c->in = in;
            c->cap *= 2;
        }
        ssize_t r = recv(c->fd, c->in + c->len, c->cap - c->len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

/* Request + response on one connection; returns the status or -1. */
BL_FN int
bl_http(struct bl_conn *c, const char *method, const char *path,
        const char *body)
{
    if (bl_http_send(c, method, path, body) < 0)
        return -1;
    return bl_http_recv(c);
}

/* Polls GET /healthz on fresh connections until it answers 200 or
 * timeout_s passes; returns 0 or -1. */
BL_FN int
bl_wait_healthy(int port, double timeout_s)
{
    int64_t end = bl_now_ns() + (int64_t)(timeout_s * 1e9);
    while (bl_now_ns() < end) {
        struct bl_conn c;
        if (bl_conn_open(&c, port, 5) == 0 &&
            bl_http(&c, "GET", "/healthz", NULL) == 200) {
            bl_conn_close(&c);
            return 0;
        }
        bl_conn_close(&c);
        bl_sleep_us(500);
    }
    return -1;
}

/* --- tiny JSON and Prometheus text look-ups --- */

/* The string value of the first "key":"..." in json (no escapes); 0 or
 * -1. */
BL_FN int
bl_json_str(const char *json, const char *key, char *out, size_t len)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(json, pat);
    if (p == NULL)
        return -1;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (q == NULL || (size_t)(q - p) >= len)
        return -1;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return 0;
}

/* The integer value of the first "key":N in json; 0 or -1. */
BL_FN int
bl_json_int(const char *json, const char *key, long long *out)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (p == NULL)
        return -1;
    p += strlen(pat);
    if (*p != '-' && !isdigit((unsigned char)*p))
        return -1;
    *out = strtoll(p, NULL, 10);
    return 0;
}

/* A Prometheus histogram as scraped: cumulative buckets, sum, count. */
struct bl_hist {
    int n;
    double le[32];      /* upper bounds; the last is +Inf */
    double cum[32];     /* cumulative counts */
    double sum, count;
};

/* The value of the sample line that starts with `name ` (exactly), or
 * -1 if absent. */
BL_FN double
bl_metric(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
            return strtod(p + nl + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

/* Reads an unlabelled histogram `name` out of /metrics text. */
BL_FN void
bl_hist_scrape(const char *text, const char *name, struct bl_hist *h)
{
    char pat[160];
    memset(h, 0, sizeof *h);
    snprintf(pat, sizeof pat, "%s_bucket{le=\"", name);
    size_t pl = strlen(pat);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, pat, pl) == 0 && h->n < 32) {
            const char *v = p + pl;
            h->le[h->n] = strncmp(v, "+Inf", 4) == 0 ? 1e300
                                                     : strtod(v, NULL);
            const char *sp = strstr(v, "} ");
            h->cum[h->n] = sp ? strtod(sp + 2, NULL) : 0;
            h->n++;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    snprintf(pat, sizeof pat, "%s_sum", name);
    h->sum = bl_metric(text, pat);
    snprintf(pat, sizeof pat, "%s_count", name);
    h->count = bl_metric(text, pat);
}

/* The upper bound of the bucket holding the q-quantile (seconds). */
BL_FN double
bl_hist_q(const struct bl_hist *h, double q)
{
    double want = q * h->count;
    for (int i = 0; i < h->n; i++)
        if (h->cum[i] >= want && h->cum[i] > 0)
            return h->le[i];
    return 0;
}

/* Prints "name: count N, mean X us, p50 <= A us, p99 <= B us". */
BL_FN void
bl_hist_print(const char *label, const struct bl_hist *h)
{
    char p50[32], p99[32];
    double a = bl_hist_q(h, 0.50), b = bl_hist_q(h, 0.99);
    if (a >= 1e299)
        snprintf(p50, sizeof p50, "+Inf");
    else
        snprintf(p50, sizeof p50, "%.0f", a * 1e6);
    if (b >= 1e299)
        snprintf(p99, sizeof p99, "+Inf");
    else
        snprintf(p99, sizeof p99, "%.0f", b * 1e6);
    printf("  %-26s count %8.0f  mean %8.1f us  p50 <= %s us  p99 <= %s us"
           " (bucket bounds)\n",
           label, h->count, h->count > 0 ? h->sum / h->count * 1e6 : 0.0,
           p50, p99);
}
