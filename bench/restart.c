/*
 * restart.c - gpuqd at scale: restart time, memory per queued job, and
 * the cost of one job cycle with a deep queue.
 *
 * For each N (100, 10^4, 10^5, 10^6, capped by --max): fill a fresh data
 * dir with N queued jobs directly through the store API (batches of
 * 10 000, like submits would leave them: class transcription, payload
 * "{}", one "queued" history event each), then:
 *
 *   restart   start bin/gpuqd on it; time from fork to the first 200 of
 *             GET /healthz.  Measured twice: "cold" after the database
 *             file was dropped from the page cache (posix_fadvise
 *             DONTNEED; the host's cache below a VM may still hold it),
 *             and "warm" (the median of three more starts).
 *   memory    VmRSS of the warm daemon once healthy, minus that of a
 *             daemon on an empty data dir, divided by N.
 *   cycle     submit + lease + complete, one after the other on one
 *             keep-alive connection, repeated --cycles times; the queue
 *             stays at N.  Reported as p50/p90/p99 per cycle, with
 *             durable commits (synchronous = full, the default) and
 *             again on a third start with synchronous = off, where only
 *             CPU is left and a cost that grows with N would show.
 *
 *   restart [--gpuqd PATH] [--dir BASE] [--max N] [--sizes N,N,...]
 *           [--cycles C]
 */
#include <fcntl.h>

#include "lib/benchlib.c"
#include "core/job.h"
#include "store/store.h"

#define BATCH 10000
#define MAXSIZES 16

struct row {
    long n;
    double fill_s;            /* populating the store */
    double db_mb;             /* size of gpuq.db */
    double cold_s, warm_s;    /* fork -> /healthz 200 */
    double addr_s;            /* fork -> gpuqd.addr written (warm start) */
    long rss_kb;              /* warm daemon, once healthy */
    double bytes_per_job;
    double c50, c90, c99;     /* cycle latency, us (--sync mode) */
    double o50, o90, o99;     /* the same with synchronous = off */
};

static const char *gpuqd = "bin/gpuqd";
static int cycles = 500;

static void
populate(const char *dir, long n)
{
    char path[PATH_MAX], err[GQ_STORE_ERRLEN];
    struct gq_sqlite_opts o = {0}; /* populating: no fsync needed */
    snprintf(path, sizeof path, "%s/gpuq.db", dir);
    struct gq_store *st = gq_store_sqlite_open(path, &o, err);
    if (st == NULL)
        bl_die("store open: %s", err);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    for (long done = 0; done < n;) {
        if (st->ops->begin(st, err) < 0)
            bl_die("begin: %s", err);
        for (long k = 0; k < BATCH && done < n; k++, done++) {
            struct gq_jobrec r = {0};
            snprintf(r.cls, sizeof r.cls, "transcription");
            r.state = GQ_QUEUED;
            r.kind = GQ_KIND_JOB;
            r.payload = "{}";
            r.created_us = wall + done;
            if (st->ops->insert(st, &r, err) < 0 ||
                st->ops->event(st, r.seq, r.created_us, "queued", NULL,
                               err) < 0)
                bl_die("insert: %s", err);
        }
        if (st->ops->commit(st, err) < 0)
            bl_die("commit: %s", err);
    }
    gq_store_close(st);
}

static void
drop_cache(const char *dir)
{
    const char *names[] = {"gpuq.db", "gpuq.db-wal"};
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Starts gpuqd on dir; returns seconds from fork to /healthz 200. */
static double
start(struct bl_proc *d, const char *dir, const char *cfg, double *addr_s)
{
    int64_t t0 = bl_now_ns(), t_addr;
    if (bl_gpuqd_start(d, gpuqd, dir, cfg, 120, &t_addr) < 0)
        bl_die("gpuqd did not start on %s", dir);
    if (bl_wait_healthy(d->port, 60) < 0)
        bl_die("gpuqd never answered /healthz");
    if (addr_s)
        *addr_s = (double)t_addr / 1e9;
    return (double)(bl_now_ns() - t0) / 1e9;
}

/* submit + lease + complete, `cycles` times; fills out[0..2] with
 * p50/p90/p99. */
static void
cycle(int port, double out[3])
{
    struct bl_conn c;
    char lease[64], path[128], body[128];
    long long token;
    double *t = calloc((size_t)cycles, sizeof *t);
    if (t == NULL || bl_conn_open(&c, port, 30) < 0)
        bl_die("connect/alloc failed");
    for (int i = -20; i < cycles; i++) { /* 20 warm-up cycles */
        int64_t t0 = bl_now_ns();
        snprintf(body, sizeof body,
                 "{\"class\":\"transcription\",\"payload\":{\"n\":%d}}", i);
        if (bl_http(&c, "POST", "/v1/jobs", body) != 201)
            bl_die("submit: status %d", c.status);
        if (bl_http(&c, "POST", "/v1/leases",
                    "{\"classes\":[\"transcription\"],\"wait\":5}") != 200 ||
            bl_json_str(c.body, "lease_id", lease, sizeof lease) < 0 ||
            bl_json_int(c.body, "token", &token) < 0)
            bl_die("lease: status %d", c.status);
        snprintf(path, sizeof path, "/v1/leases/%s/complete", lease);
        snprintf(body, sizeof body, "{\"token\":%lld}", token);
        if (bl_http(&c, "POST", path, body) != 200)
            bl_die("complete: status %d", c.status);
        if (i >= 0)
            t[i] = (double)(bl_now_ns() - t0) / 1e3;
    }
    bl_conn_close(&c);
    bl_sort(t, (size_t)cycles);
    out[0] = bl_pct(t, (size_t)cycles, 0.50);
    out[1] = bl_pct(t, (size_t)cycles, 0.90);
    out[2] = bl_pct(t, (size_t)cycles, 0.99);
    free(t);
}

static void
write_cfg(const char *path, const char *sync)
{
    char text[256];
    snprintf(text, sizeof text,
             "[server]\nsynchronous = %s\n\n"
             "[class transcription]\nmax_queue = 10000000\n", sync);
    bl_write_file(path, text);
}

static void
measure(const char *base, long n, long empty_rss_kb, struct row *row)
{
    char *dir = bl_tmpdir(base, "restart");
    char full[PATH_MAX], off[PATH_MAX], db[PATH_MAX];
    struct bl_proc d;
    struct stat sb;
    double c[3];
    snprintf(full, sizeof full, "%s/full.ini", dir);
    snprintf(off, sizeof off, "%s/off.ini", dir);
    write_cfg(full, "full");
    write_cfg(off, "off");
    row->n = n;
    int64_t t0 = bl_now_ns();
    if (n > 0)
        populate(dir, n);
    row->fill_s = (double)(bl_now_ns() - t0) / 1e9;
    snprintf(db, sizeof db, "%s/gpuq.db", dir);
    row->db_mb = stat(db, &sb) == 0 ? (double)sb.st_size / 1048576 : 0;

    drop_cache(dir);
    row->cold_s = start(&d, dir, full, NULL);
    bl_stop(&d, 60);
    /* Warm: the median of three starts; the last one stays up. */
    double w[3], a[3];
    for (int k = 0; k < 3; k++) {
        w[k] = start(&d, dir, full, &a[k]);
        if (k < 2)
            bl_stop(&d, 60);
    }
    bl_sort(w, 3);
    bl_sort(a, 3);
    row->warm_s = w[1];
    row->addr_s = a[1];
    row->rss_kb = bl_rss_kb(d.pid);
    row->bytes_per_job = n > 0 && empty_rss_kb > 0
                             ? (double)(row->rss_kb - empty_rss_kb) * 1024 /
                                   (double)n
                             : 0;
    cycle(d.port, c);
    row->c50 = c[0];
    row->c90 = c[1];
    row->c99 = c[2];
    bl_stop(&d, 60);
    /* The same cycles without fsync: what is left is CPU, where a cost
     * that grows with N would show. */
    start(&d, dir, off, NULL);
    cycle(d.port, c);
    row->o50 = c[0];
    row->o90 = c[1];
    row->o99 = c[2];
    bl_stop(&d, 60);
    bl_rmtree(dir);
    free(dir);
}

int
main(int argc, char **argv)
{
    const char *base = "/tmp", *sizes = "100,10000,100000,1000000";
    long max = 1000000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            bl_die("usage: restart [--gpuqd PATH] [--dir BASE] [--max N] "
                   "[--sizes N,N,...] [--cycles C]");
        if (strcmp(a, "--gpuqd") == 0)
            gpuqd = v;
        else if (strcmp(a, "--dir") == 0)
            base = v;
        else if (strcmp(a, "--max") == 0)
            max = atol(v);
        else if (strcmp(a, "--sizes") == 0)
            sizes = v;
        else if (strcmp(a, "--cycles") == 0)
            cycles = atoi(v);
        else
            bl_die("unknown flag %s", a);
        i++;
    }
    if (cycles < 1 || cycles > 100000)
        bl_die("--cycles must be 1..100000");

    long ns[MAXSIZES];
    int nn = 0;
    char list[256], *save = NULL;
    snprintf(list, sizeof list, "%s", sizes);
    for (char *k = strtok_r(list, ",", &save); k && nn < MAXSIZES;
         k = strtok_r(NULL, ",", &save))
        if (atol(k) > 0 && atol(k) <= max)
            ns[nn++] = atol(k);

    printf("== restart: queued jobs N in {");
    for (int i = 0; i < nn; i++)
        printf("%s%ld", i ? ", " : "", ns[i]);
    printf("} (--max %ld), %d cycles, data under %s ==\n", max, cycles,
           base);

    struct row empty = {0}, rows[MAXSIZES];
    measure(base, 0, 0, &empty);
    printf("empty daemon: start %.3f s, VmRSS %ld KiB, cycle p50 %.0f us "
           "(sync off %.0f us)\n", empty.warm_s, empty.rss_kb, empty.c50,
           empty.o50);
    fflush(stdout);
    for (int i = 0; i < nn; i++) {
        measure(base, ns[i], empty.rss_kb, &rows[i]);
        printf("  N=%-8ld fill %.1f s, db %.1f MiB, start cold %.3f s / "
               "warm %.3f s\n", ns[i], rows[i].fill_s, rows[i].db_mb,
               rows[i].cold_s, rows[i].warm_s);
        fflush(stdout);
    }

    printf("\n%9s %7s %7s %7s %7s %8s %6s | %18s | %18s\n", "", "", "",
           "", "", "", "", "cycle, sync=full", "cycle, sync=off");
    printf("%9s %7s %7s %7s %7s %8s %6s | %5s %6s %5s | %5s %6s %5s\n", "N",
           "db MiB", "cold s", "warm s", "addr s", "RSS MiB", "B/job", "p50",
           "p90", "p99", "p50", "p90", "p99");
    for (int i = 0; i < nn; i++) {
        const struct row *r = &rows[i];
        char bpj[16] = "-"; /* RSS noise swamps small N */
        if (r->n >= 10000)
            snprintf(bpj, sizeof bpj, "%.0f", r->bytes_per_job);
        printf("%9ld %7.1f %7.3f %7.3f %7.3f %8.1f %6s | %5.0f %6.0f %5.0f "
               "| %5.0f %6.0f %5.0f\n",
               r->n, r->db_mb, r->cold_s, r->warm_s, r->addr_s,
               (double)r->rss_kb / 1024, bpj, r->c50, r->c90, r->c99,
               r->o50, r->o90, r->o99);
    }
    printf("(times to /healthz 200 from fork; addr s = to gpuqd.addr; "
           "cycle = submit + lease + complete, us;\n B/job = (RSS - %ld KiB "
           "of an empty daemon) / N)\n", empty.rss_kb);

    const struct row *small = NULL, *big = NULL;
    for (int i = 0; i < nn; i++) {
        if (rows[i].n <= 100 && small == NULL)
            small = &rows[i];
        big = &rows[i];
    }
    if (big && big->n >= 1000000) {
        printf("goal: restart <= 3 s at 10^6: warm %s (%.2f s), cold %s "
               "(%.2f s)\n", big->warm_s <= 3 ? "MET" : "NOT MET",
               big->warm_s, big->cold_s <= 3 ? "MET" : "NOT MET",
               big->cold_s);
    } else if (big) {
        printf("goal: restart <= 3 s at 10^6: not measured (largest N %ld: "
               "cold %.2f s, warm %.2f s)\n", big->n, big->cold_s,
               big->warm_s);
    }
    if (big)
        printf("goal: <= 512 B per queued job: %s (%.0f B at N=%ld)\n",
               big->bytes_per_job <= 512 ? "MET" : "NOT MET",
               big->bytes_per_job, big->n);
    if (small && big && big != small)
        printf("goal: cycle latency growth <= 2x from N=%ld to N=%ld: %s "
               "(p50 %.0f -> %.0f us, %.2fx; sync=off p50 %.0f -> %.0f us, "
               "%.2fx)\n",
               small->n, big->n,
               big->c50 <= 2 * small->c50 && big->o50 <= 2 * small->o50
                   ? "MET"
                   : "NOT MET",
               small->c50, big->c50,
               small->c50 > 0 ? big->c50 / small->c50 : 0, small->o50,
               big->o50, small->o50 > 0 ? big->o50 / small->o50 : 0);
    fflush(stdout);
    return 0;
}
