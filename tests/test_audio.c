/*
 * test_audio.c - the audio module of the transcription executor:
 * decoding WAV/FLAC/OGG/MP3 from files and memory into 16 kHz mono,
 * limits and refusals, chunk planning at quiet points, WAV encoding, and
 * the path check against the audio roots.  Test audio is made here with
 * libsndfile, in a fresh temporary directory per test.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sndfile.h>

#include "core/err.h"
#include "exec/audio.h"

#define RATE GQ_AUDIO_RATE
#define LIMIT 600.0 /* max_seconds for loads that should succeed */

/* ---- fixture: a temporary directory per test ------------------------- */

struct fx {
    char dir[64];
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/gq-audio-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* dst = dir "/" name */
static void
join(char *dst, size_t len, const char *dir, const char *name)
{
    int k = snprintf(dst, len, "%s/%s", dir, name);
    assert_true(k > 0 && (size_t)k < len);
}

/* ---- making audio ---------------------------------------------------- */

/* Sample i of channel c, of a file at rate. */
typedef float (*gen_fn)(long i, int c, int rate);

static float
sine1k(long i, int c, int rate)
{
    (void)c;
    return 0.5f * (float)sin(2 * M_PI * 1000.0 * (double)i / rate);
}

/* Left 0.6, right 0.4 of a 1 kHz sine: the mono mix is 0.5 of it. */
static float
sine1k_lr(long i, int c, int rate)
{
    double s = sin(2 * M_PI * 1000.0 * (double)i / rate);
    return (float)((c == 0 ? 0.6 : 0.4) * s);
}

/* Opposite channels: the mono mix is silence. */
static float
sine_antiphase(long i, int c, int rate)
{
    double s = 0.5 * sin(2 * M_PI * 440.0 * (double)i / rate);
    return (float)(c == 0 ? s : -s);
}

static float
sine440(long i, int c, int rate)
{
    (void)c;
    return 0.4f * (float)sin(2 * M_PI * 440.0 * (double)i / rate);
}

/* Writes frames frames of gen at rate and channels into path. */
static void
write_audio(const char *path, int format, int rate, int channels,
            long frames, gen_fn gen)
{
    SF_INFO info = {.samplerate = rate, .channels = channels,
                    .format = format};
    assert_true(sf_format_check(&info));
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf)
        fail_msg("sf_open(%s) for writing: %s", path, sf_strerror(NULL));
    float buf[4096 * 2];
    long blk = 4096;
    for (long i = 0; i < frames; i += blk) {
        long k = frames - i < blk ? frames - i : blk;
        for (long j = 0; j < k; j++)
            for (int c = 0; c < channels; c++)
                buf[j * channels + c] = gen(i + j, c, rate);
        assert_int_equal(sf_writef_float(sf, buf, k), k);
    }
    assert_int_equal(sf_close(sf), 0);
}

static void
write_bytes(const char *path, const void *p, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Reads a whole file into a malloc'd buffer. */
static unsigned char *
read_bytes(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long sz = ftell(fp);
    assert_true(sz > 0);
    rewind(fp);
    unsigned char *p = malloc((size_t)sz);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *len = (size_t)sz;
    return p;
}

/* ---- measuring ------------------------------------------------------- */

static double
rms(const float *x, size_t from, size_t to)
{
    double s = 0;
    for (size_t i = from; i < to; i++)
        s += (double)x[i] * x[i];
    return sqrt(s / (double)(to - from));
}

/* Upward zero crossings in [from, to): a tone's frequency times time. */
static long
upcrossings(const float *x, size_t from, size_t to)
{
    long k = 0;
    for (size_t i = from + 1; i < to; i++)
        if (x[i - 1] < 0 && x[i] >= 0)
            k++;
    return k;
}

static void
load_ok(const char *path, struct gq_audio *a)
{
    char err[256];
    int rc = gq_audio_load(path, LIMIT, a, err, sizeof err);
    if (rc != 0)
        fail_msg("gq_audio_load(%s) = %s: %s", path, gq_err_name(rc), err);
    assert_non_null(a->samples);
    assert_int_equal(a->rate, RATE);
}

/* n is within a sample of seconds at 16 kHz. */
static void
assert_length(const struct gq_audio *a, double seconds)
{
    double want = seconds * RATE;
    if (fabs((double)a->n - want) > 1.0)
        fail_msg("%zu samples, want %.1f", a->n, want);
    if (fabs(a->duration - seconds) > 1e-6)
        fail_msg("duration %.9f, want %.9f", a->duration, seconds);
}

/* The 1 kHz, 0.5 amplitude sine survived: level and frequency. */
static void
assert_sine1k(const struct gq_audio *a, double tol_rms)
{
    /* The middle second, away from the filter's edges. */
    size_t from = a->n / 2 - RATE / 2, to = from + RATE;
    double r = rms(a->samples, from, to);
    double want = 0.5 / sqrt(2.0);
    if (fabs(r - want) > tol_rms * want)
        fail_msg("rms %.4f, want %.4f", r, want);
    long z = upcrossings(a->samples, from, to);
    if (z < 998 || z > 1002)
        fail_msg("%ld upward zero crossings in 1 s, want 1000", z);
}

/*
 * The first and last 10 ms carry the tone too: the resampler's start-up
 * delay is compensated and its tail is flushed, not padded with zeros.
 */
static void
assert_edges(const struct gq_audio *a)
{
    double head = rms(a->samples, 0, RATE / 100);
    double tail = rms(a->samples, a->n - RATE / 100, a->n);
    if (head < 0.3 || tail < 0.3)
        fail_msg("edges: rms %.4f at the start, %.4f at the end", head,
                 tail);
}

/* ---- loading --------------------------------------------------------- */

static void
test_load_wav_stereo_44k(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "a.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 2, 88200,
                sine1k_lr);
    struct gq_audio a;
    load_ok(path, &a);
    assert_length(&a, 2.0);
    assert_sine1k(&a, 0.01);
    assert_edges(&a);
    /* Nothing of the resampler's tail sticks out. */
    for (size_t i = 0; i < a.n; i++)
        assert_true(fabsf(a.samples[i]) < 0.52f);
    gq_audio_free(&a);
    assert_null(a.samples);
    assert_int_equal(a.n, 0);
}

static void
test_load_downmix_averages(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "anti.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 48000, 2, 48000,
                sine_antiphase);
    struct gq_audio a;
    load_ok(path, &a);
    assert_length(&a, 1.0);
    assert_true(rms(a.samples, 0, a.n) < 1e-5);
    gq_audio_free(&a);
}

static void
test_load_16k_passthrough(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "m.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, RATE, 1, 12345,
                sine440);
    struct gq_audio a;
    load_ok(path, &a);
    assert_int_equal(a.n, 12345);
    for (long i = 0; i < 12345; i++)
        assert_true(a.samples[i] == sine440(i, 0, RATE));
    gq_audio_free(&a);
}

static void
test_load_flac(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "a.flac");
    write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 48000, 1, 72000,
                sine1k);
    struct gq_audio a;
    load_ok(path, &a);
    assert_length(&a, 1.5);
    assert_sine1k(&a, 0.01);
    assert_edges(&a);
    gq_audio_free(&a);
}

static void
test_load_ogg(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "a.ogg");
    write_audio(path, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 22050, 2, 66150,
                sine1k_lr);
    struct gq_audio a;
    load_ok(path, &a);
    assert_length(&a, 3.0);
    assert_sine1k(&a, 0.05); /* lossy */
    gq_audio_free(&a);
}

static void
test_load_mp3(void **state)
{
    struct fx *f = *state;
    SF_INFO probe = {.samplerate = 44100, .channels = 1,
                     .format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III};
    if (!sf_format_check(&probe))
        skip(); /* libsndfile built without MPEG */
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "a.mp3");
    write_audio(path, probe.format, 44100, 1, 88200, sine1k);
    struct gq_audio a;
    load_ok(path, &a);
    /* The encoder's gapless info makes the length exact. */
    assert_length(&a, 2.0);
    assert_sine1k(&a, 0.05);

    size_t len;
    unsigned char *bytes = read_bytes(path, &len);
    struct gq_audio m;
    char err[256];
    assert_int_equal(gq_audio_load_mem(bytes, len, LIMIT, &m, err,
                                       sizeof err), 0);
    assert_int_equal(m.n, a.n);
    assert_memory_equal(m.samples, a.samples, a.n * sizeof(float));
    free(bytes);
    gq_audio_free(&m);
    gq_audio_free(&a);
}

/* load_mem of a file's bytes gives exactly what load of the file gives. */
static void
check_mem_equals_file(const char *path)
{
    struct gq_audio a, m;
    load_ok(path, &a);
    size_t len;
    unsigned char *bytes = read_bytes(path, &len);
    char err[256];
    int rc = gq_audio_load_mem(bytes, len, LIMIT, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("load_mem(%s) = %s: %s", path, gq_err_name(rc), err);
    assert_int_equal(m.n, a.n);
    assert_int_equal(m.rate, a.rate);
    assert_true(m.duration == a.duration);
    assert_memory_equal(m.samples, a.samples, a.n * sizeof(float));
    free(bytes);
    gq_audio_free(&a);
    gq_audio_free(&m);
}

static void
test_load_mem_equals_load(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "a.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_24, 44100, 2, 50000,
                sine1k_lr);
    check_mem_equals_file(path);
    join(path, sizeof path, f->dir, "a.flac");
    write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 8000, 1, 20000,
                sine440);
    check_mem_equals_file(path);
    join(path, sizeof path, f->dir, "a.ogg");
    write_audio(path, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 32000, 1, 40000,
                sine440);
    check_mem_equals_file(path);
}

static void
test_load_refusals(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], err[256];
    struct gq_audio a;
    static const char junk[] = "this is not audio at all, just some text "
                               "that goes on for a while to fill a header";

    join(path, sizeof path, f->dir, "junk.wav");
    write_bytes(path, junk, sizeof junk);
    memset(&a, 0x5a, sizeof a);
    assert_int_equal(gq_audio_load(path, LIMIT, &a, err, sizeof err),
                     GQ_EINVAL);
    assert_non_null(strstr(err, "not an audio file"));
    assert_null(a.samples); /* zeroed on failure */
    assert_int_equal(a.n, 0);
    assert_int_equal(gq_audio_load_mem(junk, sizeof junk, LIMIT, &a, err,
                                       sizeof err),
                     GQ_EINVAL);
    assert_non_null(strstr(err, "not an audio file"));

    /* A WAV cut inside its header. */
    join(path, sizeof path, f->dir, "full.wav");
    write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, RATE, 1, 1000,
                sine440);
    size_t len;
    unsigned char *bytes = read_bytes(path, &len);
    assert_int_equal(gq_audio_load_mem(bytes, 20, LIMIT, &a, err,
                                       sizeof err),
                     GQ_EINVAL);
    free(bytes);

    join(path, sizeof path, f->dir, "empty.wav");
    write_bytes(path, "", 0);
    assert_int_equal(gq_audio_load(path, LIMIT, &a, err, sizeof err),
                     GQ_EINVAL);
    assert_int_equal(gq_audio_load_mem("", 0, LIMIT, &a, err, sizeof err),
                     GQ_EINVAL);

    join(path, sizeof path, f->dir, "missing.wav");
    assert_int_equal(gq_audio_load(path, LIMIT, &a, err, sizeof err),
                     GQ_EIO);
    assert_non_null(strstr(err, "missing.wav"));

    assert_int_equal(gq_audio_load(f->dir, LIMIT, &a, err, sizeof err),
                     GQ_EINVAL);
    assert_non_null(strstr(err, "not a regular file"));

    join(path, sizeof path, f->dir, "fifo");
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(gq_audio_load(path, LIMIT, &a, err, sizeof err),
                     GQ_EINVAL);

    join(path, sizeof path, f->dir, "full.wav");
    assert_int_equal(gq_audio_load(path, 0, &a, err, sizeof err), GQ_EINVAL);
    assert_int_equal(gq_audio_load(path, NAN, &a, err, sizeof err),
                     GQ_EINVAL);
    /* No error buffer is fine. */
    assert_int_equal(gq_audio_load("", LIMIT, &a, NULL, 0), GQ_EINVAL);
}

static void
test_load_too_long(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], err[256];
    struct gq_audio a;
    static const int formats[] = {
        SF_FORMAT_WAV | SF_FORMAT_PCM_16,
        SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
        SF_FORMAT_OGG | SF_FORMAT_VORBIS,
        SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III,
    };
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        SF_INFO probe = {.samplerate = 44100, .channels = 1,
                         .format = formats[i]};
        if (!sf_format_check(&probe))
            continue;
        char name[32];
        snprintf(name, sizeof name, "long%zu", i);
        join(path, sizeof path, f->dir, name);
        write_audio(path, formats[i], 44100, 1, 3 * 44100, sine440);
        assert_int_equal(gq_audio_load(path, 2.0, &a, err, sizeof err),
                         GQ_ETOOBIG);
        assert_non_null(strstr(err, "limit"));
        assert_null(a.samples);
        size_t len;
        unsigned char *bytes = read_bytes(path, &len);
        assert_int_equal(gq_audio_load_mem(bytes, len, 2.9, &a, err,
                                           sizeof err),
                         GQ_ETOOBIG);
        assert_int_equal(gq_audio_load_mem(bytes, len, 3.01, &a, err,
                                           sizeof err),
                         0);
        assert_length(&a, 3.0);
        gq_audio_free(&a);
        free(bytes);
    }
}

/* Decoding from several threads at once gives the same samples. */
struct job {
    const char *path;
    struct gq_audio a;
    int rc;
};

static void *
load_thread(void *arg)
{
    struct job *j = arg;
    char err[256];
    j->rc = gq_audio_load(j->path, LIMIT, &j->a, err, sizeof err);
    return NULL;
}

static void
test_load_threads(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "t.flac");
    write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2, 44100,
                sine1k_lr);
    struct job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].path = path;
        assert_int_equal(pthread_create(&th[i], NULL, load_thread,
                                        &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(jobs[i].a.n, jobs[0].a.n);
        assert_memory_equal(jobs[i].a.samples, jobs[0].a.samples,
                            jobs[0].a.n * sizeof(float));
    }
    for (int i = 0; i < 4; i++)
        gq_audio_free(&jobs[i].a);
}

/* ---- chunk planning -------------------------------------------------- */

/* Loud noise, deterministic. */
static void
noise(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
}

static void
make_noise(struct gq_audio *a, double seconds, uint64_t seed)
{
    a->n = (size_t)(seconds * RATE);
    a->rate = RATE;
    a->duration = seconds;
    a->samples = malloc(a->n * sizeof(float));
    assert_non_null(a->samples);
    noise(a->samples, a->n, seed);
}

static void
test_cut_finds_gap(void **state)
{
    (void)state;
    struct gq_audio a;
    make_noise(&a, 70, 42);
    size_t max_len = 30 * RATE, search = 2 * RATE;
    static const size_t starts[] = {0, 7 * RATE + 123, 35 * RATE};
    for (size_t k = 0; k < 3; k++) {
        noise(a.samples, a.n, 42 + k);
        size_t start = starts[k];
        /* A 300 ms silent gap centred 1 s before the boundary. */
        size_t centre = start + max_len - RATE;
        size_t gs = centre - 3 * RATE / 20, ge = centre + 3 * RATE / 20;
        memset(a.samples + gs, 0, (ge - gs) * sizeof(float));
        size_t cut = gq_audio_cut(&a, start, max_len, search);
        if (cut < gs || cut >= ge)
            fail_msg("cut at %zu, the gap is [%zu, %zu)", cut, gs, ge);
        /* A window fits the gap 100 ms either side: mid-gap. */
        assert_true(cut + RATE / 100 >= centre && cut <= centre + RATE / 100);
        assert_int_equal(gq_audio_cut(&a, start, max_len, search), cut);

        /* A quiet (not silent) stretch is found just as well. */
        noise(a.samples, a.n, 7 + k);
        for (size_t i = gs; i < ge; i++)
            a.samples[i] *= 0.01f;
        cut = gq_audio_cut(&a, start, max_len, search);
        if (cut < gs || cut >= ge)
            fail_msg("cut at %zu, the quiet part is [%zu, %zu)", cut, gs, ge);
    }
    gq_audio_free(&a);
}

static void
test_cut_without_gap(void **state)
{
    (void)state;
    struct gq_audio a;
    make_noise(&a, 50, 9);
    size_t max_len = 20 * RATE, search = 2 * RATE;
    for (size_t start = 0; start < 25 * RATE; start += 3 * RATE + 17) {
        size_t cut = gq_audio_cut(&a, start, max_len, search);
        assert_true(cut <= start + max_len);
        assert_true(cut >= start + max_len - search);
    }
    /* search is clamped to half of max_len. */
    size_t cut = gq_audio_cut(&a, 0, 4 * RATE, 10 * RATE);
    assert_true(cut >= 2 * RATE && cut <= 4 * RATE);
    /* search shorter than a window: cut at the boundary. */
    assert_int_equal(gq_audio_cut(&a, 0, 4 * RATE, RATE / 10), 4 * RATE);
    assert_int_equal(gq_audio_cut(&a, 5, 4 * RATE, 0), 5 + 4 * RATE);
    gq_audio_free(&a);
}

static void
test_cut_end(void **state)
{
    (void)state;
    struct gq_audio a;
    make_noise(&a, 10, 3);
    size_t n = a.n;
    assert_int_equal(gq_audio_cut(&a, 0, n, 2 * RATE), n);
    assert_int_equal(gq_audio_cut(&a, 0, n + 1, 2 * RATE), n);
    assert_int_equal(gq_audio_cut(&a, 5 * RATE, 5 * RATE, 2 * RATE), n);
    assert_int_equal(gq_audio_cut(&a, n - 1, 2, 0), n);
    assert_int_equal(gq_audio_cut(&a, n, 100, 10), n);
    assert_int_equal(gq_audio_cut(&a, n + 5, 100, 10), n);
    assert_int_equal(gq_audio_cut(&a, 1, SIZE_MAX, SIZE_MAX), n);
    assert_true(gq_audio_cut(&a, 0, n - 1, 2 * RATE) < n);
    /* max_len 0 still moves on. */
    assert_int_equal(gq_audio_cut(&a, 7, 0, 0), 8);
    struct gq_audio empty = {.rate = RATE};
    assert_int_equal(gq_audio_cut(&empty, 0, 100, 10), 0);
    gq_audio_free(&a);
}

static void
test_cut_covers_all(void **state)
{
    (void)state;
    struct gq_audio a;
    make_noise(&a, 200.3, 11);
    /* Quiet stretches here and there. */
    for (size_t s = 3 * RATE; s + RATE < a.n; s += 17 * RATE + 977)
        for (size_t i = s; i < s + RATE / 3; i++)
            a.samples[i] *= 0.001f;
    size_t max_len = 30 * RATE, search = 2 * RATE;
    size_t start = 0, chunks = 0, total = 0;
    while (start < a.n) {
        size_t end = gq_audio_cut(&a, start, max_len, search);
        assert_true(end > start);
        assert_true(end - start <= max_len);
        if (end != a.n)
            assert_true(end - start >= max_len - search);
        total += end - start;
        start = end;
        chunks++;
        assert_true(chunks < 100);
    }
    assert_int_equal(start, a.n);
    assert_int_equal(total, a.n);
    assert_true(chunks >= 7 && chunks <= 8);
    gq_audio_free(&a);
}

/* ---- WAV encoding ---------------------------------------------------- */

struct vbuf {
    const unsigned char *p;
    sf_count_t len, pos;
};

static sf_count_t
vlen(void *u)
{
    return ((struct vbuf *)u)->len;
}

static sf_count_t
vseek(sf_count_t off, int whence, void *u)
{
    struct vbuf *v = u;
    sf_count_t base = whence == SEEK_SET ? 0
                    : whence == SEEK_CUR ? v->pos
                                         : v->len;
    v->pos = base + off;
    return v->pos;
}

static sf_count_t
vread(void *ptr, sf_count_t count, void *u)
{
    struct vbuf *v = u;
    sf_count_t k = v->len - v->pos;
    if (k > count)
        k = count;
    if (k <= 0)
        return 0;
    memcpy(ptr, v->p + v->pos, (size_t)k);
    v->pos += k;
    return k;
}

static sf_count_t
vwrite(const void *p, sf_count_t count, void *u)
{
    (void)p;
    (void)count;
    (void)u;
    return 0;
}

static sf_count_t
vtell(void *u)
{
    return ((struct vbuf *)u)->pos;
}

static void
test_wav_roundtrip(void **state)
{
    (void)state;
    struct gq_audio a;
    make_noise(&a, 3, 5);
    for (size_t i = 0; i < a.n; i++)
        a.samples[i] *= 2.5f; /* up to +-1.25: some clip */
    a.samples[100] = 1.0f;
    a.samples[101] = -1.0f;
    a.samples[102] = NAN;
    size_t from = 50, to = 2 * RATE + 7;
    unsigned char *buf;
    size_t len;
    assert_int_equal(gq_audio_wav(&a, from, to, &buf, &len), 0);
    assert_int_equal(len, 44 + 2 * (to - from));
    assert_memory_equal(buf, "RIFF", 4);
    assert_memory_equal(buf + 8, "WAVEfmt ", 8);
    assert_memory_equal(buf + 36, "data", 4);

    struct vbuf v = {buf, (sf_count_t)len, 0};
    SF_VIRTUAL_IO io = {vlen, vseek, vread, vwrite, vtell};
    SF_INFO info = {0};
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &v);
    if (!sf)
        fail_msg("libsndfile refuses the WAV: %s", sf_strerror(NULL));
    assert_int_equal(info.samplerate, RATE);
    assert_int_equal(info.channels, 1);
    assert_int_equal(info.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    assert_int_equal(info.frames, to - from);
    float *back = malloc((to - from) * sizeof *back);
    assert_non_null(back);
    assert_int_equal(sf_readf_float(sf, back, (sf_count_t)(to - from)),
                     to - from);
    sf_close(sf);
    for (size_t i = from; i < to; i++) {
        float x = a.samples[i];
        float want = isnan(x) ? 0.0f : x > 1 ? 1.0f : x < -1 ? -1.0f : x;
        float tol = want >= 1.0f ? 1.0f / 32768 : 0.5f / 32768 + 1e-7f;
        if (fabsf(back[i - from] - want) > tol)
            fail_msg("sample %zu: %.7f back as %.7f", i, (double)x,
                     (double)back[i - from]);
    }
    free(back);
    free(buf);

    /* An empty range is a valid, empty WAV. */
    assert_int_equal(gq_audio_wav(&a, 9, 9, &buf, &len), 0);
    assert_int_equal(len, 44);
    free(buf);
    assert_int_equal(gq_audio_wav(&a, 0, a.n, &buf, &len), 0);
    free(buf);

    assert_int_equal(gq_audio_wav(&a, 10, 9, &buf, &len), GQ_EINVAL);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(gq_audio_wav(&a, 0, a.n + 1, &buf, &len), GQ_EINVAL);
    gq_audio_free(&a);
}

/* A loaded file's chunks, encoded, decode back to the same samples. */
static void
test_wav_of_loaded_chunks(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    join(path, sizeof path, f->dir, "src.flac");
    write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2, 441000,
                sine1k_lr);
    struct gq_audio a;
    load_ok(path, &a);
    size_t start = 0;
    while (start < a.n) {
        size_t end = gq_audio_cut(&a, start, 3 * RATE, RATE);
        unsigned char *buf;
        size_t len;
        assert_int_equal(gq_audio_wav(&a, start, end, &buf, &len), 0);
        struct gq_audio b;
        char err[256];
        assert_int_equal(gq_audio_load_mem(buf, len, LIMIT, &b, err,
                                           sizeof err), 0);
        assert_int_equal(b.n, end - start);
        for (size_t i = 0; i < b.n; i++)
            assert_true(fabsf(b.samples[i] - a.samples[start + i]) <=
                        0.5f / 32768 + 1e-7f);
        gq_audio_free(&b);
        free(buf);
        start = end;
    }
    gq_audio_free(&a);
}

/* ---- the path check -------------------------------------------------- */

/* dir/root, dir/root-evil, dir/outside, each with a.wav; dir/root/sub. */
static void
make_tree(const char *dir)
{
    static const char *const dirs[] = {"root", "root-evil", "outside",
                                       "root/sub", "root2"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        join(p, sizeof p, dir, dirs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
    static const char *const files[] = {"root/a.wav", "root-evil/a.wav",
                                        "outside/a.wav", "root/sub/b.wav",
                                        "root2/c.wav"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        join(p, sizeof p, dir, files[i]);
        write_bytes(p, "x", 1);
    }
}

/* Expects the check to refuse path with a message holding `needle`. */
static void
refused(const char *path, const char *roots, const char *needle)
{
    char res[PATH_MAX], err[512];
    int rc = gq_audio_path_check(path, roots, res, sizeof res, err,
                                 sizeof err);
    if (rc != GQ_EINVAL)
        fail_msg("%s under %s: got %s, want invalid", path, roots,
                 gq_err_name(rc));
    assert_string_equal(res, "");
    if (needle && !strstr(err, needle))
        fail_msg("%s: message \"%s\" lacks \"%s\"", path, err, needle);
}

static void
accepted(const char *path, const char *roots, const char *want)
{
    char res[PATH_MAX], err[512];
    int rc = gq_audio_path_check(path, roots, res, sizeof res, err,
                                 sizeof err);
    if (rc != 0)
        fail_msg("%s under %s: %s: %s", path, roots, gq_err_name(rc), err);
    assert_string_equal(res, want);
}

static void
test_path_inside(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char real[PATH_MAX], root[PATH_MAX], p[PATH_MAX], want[PATH_MAX];
    assert_non_null(realpath(f->dir, real));
    join(root, sizeof root, f->dir, "root");
    join(p, sizeof p, root, "a.wav");
    join(want, sizeof want, real, "root/a.wav");
    accepted(p, root, want);
    /* A root given with a trailing slash, and a path with "." and "..". */
    char roots[PATH_MAX + 8];
    snprintf(roots, sizeof roots, "%s/", root);
    accepted(p, roots, want);
    join(p, sizeof p, root, "sub/../sub/./b.wav");
    join(want, sizeof want, real, "root/sub/b.wav");
    accepted(p, root, want);
    /* A symlink inside the root to a file inside it resolves. */
    join(p, sizeof p, root, "link.wav");
    assert_int_equal(symlink("sub/b.wav", p), 0);
    accepted(p, root, want);
    /* The resolved buffer must be big enough. */
    char small[8], err[256];
    assert_int_equal(gq_audio_path_check(p, root, small, sizeof small, err,
                                         sizeof err),
                     GQ_EINVAL);
}

static void
test_path_traversal(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char root[PATH_MAX], p[PATH_MAX];
    join(root, sizeof root, f->dir, "root");
    join(p, sizeof p, root, "../outside/a.wav");
    refused(p, root, "outside the allowed roots");
    join(p, sizeof p, root, "sub/../../outside/a.wav");
    refused(p, root, "outside the allowed roots");
    /* Probing for files elsewhere says "outside", not "not found". */
    join(p, sizeof p, root, "../outside/nothing-here.wav");
    refused(p, root, "outside the allowed roots");
    refused("/etc/passwd", root, "outside the allowed roots");
    /* The root itself is not inside itself. */
    refused(root, root, NULL);
}

static void
test_path_symlink_escape(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char root[PATH_MAX], p[PATH_MAX], target[PATH_MAX], err[512];
    char res[PATH_MAX];
    join(root, sizeof root, f->dir, "root");
    join(target, sizeof target, f->dir, "outside/a.wav");
    join(p, sizeof p, root, "escape.wav");
    assert_int_equal(symlink(target, p), 0);
    assert_int_equal(gq_audio_path_check(p, root, res, sizeof res, err,
                                         sizeof err),
                     GQ_EINVAL);
    assert_non_null(strstr(err, "outside the allowed roots"));
    assert_non_null(strstr(err, "escape.wav"));
    assert_null(strstr(err, "outside/a.wav")); /* no leak of the target */
    /* A symlinked directory inside the root, pointing out. */
    join(p, sizeof p, root, "dirlink");
    join(target, sizeof target, f->dir, "outside");
    assert_int_equal(symlink(target, p), 0);
    join(p, sizeof p, root, "dirlink/a.wav");
    refused(p, root, "outside the allowed roots");
}

static void
test_path_prefix_trick(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char root[PATH_MAX], p[PATH_MAX];
    join(root, sizeof root, f->dir, "root");
    join(p, sizeof p, f->dir, "root-evil/a.wav");
    refused(p, root, "outside the allowed roots");
    /* Nor does a root with a trailing slash change that. */
    char roots[PATH_MAX + 8];
    snprintf(roots, sizeof roots, "%s/", root);
    refused(p, roots, "outside the allowed roots");
}

static void
test_path_refusals(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char root[PATH_MAX], p[PATH_MAX];
    join(root, sizeof root, f->dir, "root");
    join(p, sizeof p, root, "missing.wav");
    refused(p, root, "not found");
    join(p, sizeof p, root, "sub/missing/x.wav");
    refused(p, root, "not found");
    join(p, sizeof p, root, "sub");
    refused(p, root, "not a regular file");
    join(p, sizeof p, root, "fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    refused(p, root, "not a regular file");
    refused("root/a.wav", root, "absolute");
    refused("", root, "empty");
    join(p, sizeof p, root, "a.wav");
    refused(p, "", "no audio roots");
    refused(p, ":,:", "no audio roots");
    refused(p, NULL, "no audio roots");
    char gone[PATH_MAX];
    join(gone, sizeof gone, f->dir, "no-such-root");
    refused(p, gone, "none of the audio roots exist");
    /* Control bytes in the path are not echoed. */
    refused("relative\n\x1b[31mpath", root, "relative??[31mpath");
    /* A dangling symlink inside the root. */
    join(p, sizeof p, root, "dangling.wav");
    assert_int_equal(symlink("/nonexistent/x.wav", p), 0);
    refused(p, root, "dangling.wav");
}

static void
test_path_multiple_roots(void **state)
{
    struct fx *f = *state;
    make_tree(f->dir);
    char real[PATH_MAX], roots[3 * PATH_MAX], p[PATH_MAX], want[PATH_MAX];
    assert_non_null(realpath(f->dir, real));
    snprintf(roots, sizeof roots, "%s/no-such-root:%s/root,%s/root2",
             f->dir, f->dir, f->dir);
    join(p, sizeof p, f->dir, "root/a.wav");
    join(want, sizeof want, real, "root/a.wav");
    accepted(p, roots, want);
    join(p, sizeof p, f->dir, "root2/c.wav");
    join(want, sizeof want, real, "root2/c.wav");
    accepted(p, roots, want);
    join(p, sizeof p, f->dir, "outside/a.wav");
    refused(p, roots, "outside the allowed roots");
    join(p, sizeof p, f->dir, "root-evil/a.wav");
    refused(p, roots, "outside the allowed roots");
    /* A root reached through a symlink works too. */
    char alias[PATH_MAX], aroot[PATH_MAX];
    join(alias, sizeof alias, f->dir, "alias");
    join(aroot, sizeof aroot, f->dir, "root2");
    assert_int_equal(symlink(aroot, alias), 0);
    join(p, sizeof p, alias, "c.wav");
    accepted(p, alias, want);
    /* "/" as a root takes every absolute path. */
    accepted(p, "/", want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_load_wav_stereo_44k),
        T(test_load_downmix_averages),
        T(test_load_16k_passthrough),
        T(test_load_flac),
        T(test_load_ogg),
        T(test_load_mp3),
        T(test_load_mem_equals_load),
        T(test_load_refusals),
        T(test_load_too_long),
        T(test_load_threads),
        T(test_cut_finds_gap),
        T(test_cut_without_gap),
        T(test_cut_end),
        T(test_cut_covers_all),
        T(test_wav_roundtrip),
        T(test_wav_of_loaded_chunks),
        T(test_path_inside),
        T(test_path_traversal),
        T(test_path_symlink_escape),
        T(test_path_prefix_trick),
        T(test_path_refusals),
        T(test_path_multiple_roots),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
