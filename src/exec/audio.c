/*
 * audio.c - decoding (libsndfile), downmix and resampling (libsamplerate)
 * to 16 kHz mono floats, chunk planning at quiet points, WAV encoding,
 * and the path check for client-given audio files.  See audio.h.
 *
 * Nothing here keeps state between calls; each call owns its libsndfile
 * handle and resampler.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <samplerate.h>
#include <sndfile.h>

#include "../core/err.h"
#include "audio.h"

#define MAX_CHANNELS 1024      /* libsndfile's own limit */
#define MIN_RATE 1000          /* Hz; below this nothing is speech */
#define MAX_RATE 768000        /* Hz; well inside libsamplerate's 256x */
#define BLOCK_SAMPLES 65536    /* interleaved samples read per block */
#define BLOCK_FRAMES 4096      /* frames per block, fewer if many channels */
#define WIN_DIV 5              /* cut window: rate / 5 samples = 200 ms */
#define SHOWN_MAX 200          /* bytes of a path quoted in messages */

/* ---- error messages ------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int
fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/*
 * Copies s into dst for quoting in a message: control bytes become '?'
 * (a path may go into logs and JSON), and a long one is cut with "...".
 */
static void
show(char *dst, size_t dlen, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < dlen; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[i] = '\0';
    if (s[i] && dlen >= 4)
        memcpy(dst + dlen - 4, "...", 4);
}

/* ---- decoding -------------------------------------------------------- */

/* The growing output of one decode. */
struct outbuf {
    float *p;
    size_t n;      /* samples written */
    size_t cap;    /* samples allocated */
    size_t maxcap; /* never allocate more: follows from max_seconds */
};

/*
 * Makes room for need samples: 0, or GQ_ENOMEM, or GQ_ETOOBIG when need
 * is past maxcap (the buffer has then grown to maxcap).
 */
static int
reserve(struct outbuf *o, size_t need)
{
    size_t want = need > o->maxcap ? o->maxcap : need;
    if (want > o->cap) {
        size_t cap = o->cap + o->cap / 2;
        if (cap < want)
            cap = want;
        if (cap < GQ_AUDIO_RATE)
            cap = GQ_AUDIO_RATE;
        if (cap > o->maxcap)
            cap = o->maxcap;
        float *p = realloc(o->p, cap * sizeof *p);
        if (!p)
            return GQ_ENOMEM;
        o->p = p;
        o->cap = cap;
    }
    return need > o->cap ? GQ_ETOOBIG : 0;
}

/*
 * Runs nin mono frames (none with eoi set, to drain; in is never NULL)
 * through the resampler into o.  src_process may stop early when output
 * space runs out, so it loops until the input is used up (and, when
 * draining, until nothing more comes out).
 */
static int
resample(SRC_STATE *src, double ratio, const float *in, long nin, int eoi,
         struct outbuf *o, char *err, size_t errlen)
{
    for (;;) {
        size_t want = (size_t)((double)nin * ratio) + 64;
        int rc = reserve(o, o->n + want);
        if (rc == GQ_ETOOBIG && o->cap > o->n)
            rc = 0; /* the last stretch below maxcap; take what fits */
        if (rc == GQ_ENOMEM)
            return fail(err, errlen, rc, "out of memory decoding audio");
        if (rc)
            return fail(err, errlen, rc, "decoded audio is over the limit");
        size_t room = o->cap - o->n;
        SRC_DATA d = {
            .data_in = in,
            .data_out = o->p + o->n,
            .input_frames = nin,
            .output_frames = room > LONG_MAX ? LONG_MAX : (long)room,
            .end_of_input = eoi,
            .src_ratio = ratio,
        };
        int e = src_process(src, &d);
        if (e)
            return fail(err, errlen, GQ_EINTERNAL, "resampler failed: %s",
                        src_strerror(e));
        o->n += (size_t)d.output_frames_gen;
        in += d.input_frames_used;
        nin -= d.input_frames_used;
        if (nin == 0 && (!eoi || d.output_frames_gen == 0))
            return 0;
        if (d.input_frames_used == 0 && d.output_frames_gen == 0)
            return fail(err, errlen, GQ_EINTERNAL,
                        "resampler made no progress");
    }
}

/*
 * Reads everything from an open handle into out (see gq_audio_load).
 * Does not close sf.
 */
static int
decode(SNDFILE *sf, const SF_INFO *info, double max_seconds,
       struct gq_audio *out, char *err, size_t errlen)
{
    int ch = info->channels, rate = info->samplerate;
    if (ch < 1 || ch > MAX_CHANNELS)
        return fail(err, errlen, GQ_EINVAL,
                    "unsupported audio: %d channels", ch);
    if (rate < MIN_RATE || rate > MAX_RATE)
        return fail(err, errlen, GQ_EINVAL,
                    "unsupported audio: sample rate %d Hz", rate);

    /* Frames of the source that max_seconds allows. */
    double lim = max_seconds * rate;
    if (lim > 1e18)
        lim = 1e18;
    /*
     * A stated length is exact for containers but only an estimate for
     * MP3 (from its bitrate when there is no Xing header), so for MP3
     * only the count while decoding is trusted.
     */
    int known = info->frames > 0 && info->frames < SF_COUNT_MAX;
    if (known && (info->format & SF_FORMAT_TYPEMASK) != SF_FORMAT_MPEG &&
        (double)info->frames > lim)
        return fail(err, errlen, GQ_ETOOBIG,
                    "audio is %.1f s long, over the limit of %g s",
                    (double)info->frames / rate, max_seconds);

    sf_count_t blk = BLOCK_SAMPLES / ch;
    if (blk > BLOCK_FRAMES)
        blk = BLOCK_FRAMES;
    double ratio = (double)GQ_AUDIO_RATE / rate;

    struct outbuf o = {0};
    double maxcap = (lim + (double)blk) * ratio + 1024;
    double sizecap = (double)(SIZE_MAX / sizeof(float) / 2);
    o.maxcap = maxcap < sizecap ? (size_t)maxcap : (size_t)sizecap;
    size_t first = 30 * GQ_AUDIO_RATE;
    if (known)
        first = (size_t)((double)info->frames * ratio) + 1024;
    if (first > o.maxcap)
        first = o.maxcap;

    int rc = 0;
    SRC_STATE *src = NULL;
    float *inter = malloc((size_t)blk * (size_t)ch * sizeof *inter);
    float *mono = malloc((size_t)blk * sizeof *mono);
    if (!inter || !mono || reserve(&o, first) != 0) {
        rc = fail(err, errlen, GQ_ENOMEM, "out of memory decoding audio");
        goto done;
    }
    if (rate != GQ_AUDIO_RATE) {
        int e = 0;
        src = src_new(SRC_SINC_MEDIUM_QUALITY, 1, &e);
        if (!src) {
            rc = fail(err, errlen, GQ_ENOMEM, "cannot start resampler: %s",
                      src_strerror(e));
            goto done;
        }
    }

    sf_count_t frames = 0, got;
    while ((got = sf_readf_float(sf, inter, blk)) > 0) {
        frames += got;
        if ((double)frames > lim) {
            rc = fail(err, errlen, GQ_ETOOBIG,
                      "audio is longer than the limit of %g s",
                      max_seconds);
            goto done;
        }
        for (sf_count_t i = 0; i < got; i++) {
            const float *f = inter + i * ch;
            double s = 0;
            for (int c = 0; c < ch; c++)
                s += f[c];
            float v = (float)(s / ch);
            mono[i] = isfinite(v) ? v : 0.0f; /* NaN would spread */
        }
        if (!src) {
            rc = reserve(&o, o.n + (size_t)got);
            if (rc) {
                rc = fail(err, errlen, rc, "out of memory decoding audio");
                goto done;
            }
            memcpy(o.p + o.n, mono, (size_t)got * sizeof *mono);
            o.n += (size_t)got;
        } else {
            rc = resample(src, ratio, mono, (long)got, 0, &o, err, errlen);
            if (rc)
                goto done;
        }
    }
    int se = sf_error(sf);
    if (se != SF_ERR_NO_ERROR) {
        rc = fail(err, errlen, se == SF_ERR_SYSTEM ? GQ_EIO : GQ_EINVAL,
                  "audio decode failed after %.1f s: %s",
                  (double)frames / rate, sf_strerror(sf));
        goto done;
    }
    if (src) {
        /*
         * Drain.  data_in must not be NULL even with no frames:
         * libsamplerate skips its end-of-input padding when it is, and
         * the last few milliseconds never come out.
         */
        rc = resample(src, ratio, mono, 0, 1, &o, err, errlen);
        if (rc)
            goto done;
        /*
         * The filter's tail leaves the count a sample or so off; settle
         * it at the exact length so chunk times add up.
         */
        size_t target = (size_t)llround((double)frames * ratio);
        if (o.n > target)
            o.n = target;
        if (o.n < target) {
            rc = reserve(&o, target);
            if (rc) {
                rc = fail(err, errlen, rc, "out of memory decoding audio");
                goto done;
            }
            memset(o.p + o.n, 0, (target - o.n) * sizeof *o.p);
            o.n = target;
        }
    }

    if (o.cap > o.n + GQ_AUDIO_RATE) {
        float *p = realloc(o.p, (o.n ? o.n : 1) * sizeof *p);
        if (p)
            o.p = p;
    }
    out->samples = o.p;
    out->n = o.n;
    out->rate = GQ_AUDIO_RATE;
    out->duration = (double)frames / rate;
    o.p = NULL;

done:
    if (src)
        src_delete(src);
    free(inter);
    free(mono);
    free(o.p);
    return rc;
}

static int
check_limit(double max_seconds, char *err, size_t errlen)
{
    if (!(max_seconds > 0))
        return fail(err, errlen, GQ_EINVAL,
                    "audio duration limit must be positive");
    return 0;
}

/* ---- a guard for libsndfile's WAV parser ----------------------------- */

#define RIFF_MAX_CHUNKS 4096   /* chunk headers riff_check looks at */

/* Reads the 8-byte chunk header at off; 0, or -1 if it is not there. */
typedef int (*riff_read_fn)(void *ctx, uint64_t off, unsigned char hdr[8]);

static uint32_t
riff_u32(const unsigned char *p, int be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                    (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 |
                    (uint32_t)p[1] << 8 | p[0];
}

/*
 * libsndfile 1.2 can spend minutes inside sf_open on a WAV of a hundred
 * bytes whose LIST chunk claims a size far past the end of the file: it
 * walks the claimed size a few bytes at a time (libsndfile issue 1118,
 * still open in 1.2.2; found by tests/fuzz).  A RIFF or RIFX WAVE file
 * whose chunks before "data" run past its end is broken anyway, so it is
 * refused before libsndfile sees it; "data" may claim more than there
 * is (a recording cut short, a streamed WAV).  Other files pass.  size
 * is the file's length.  Returns 0, or GQ_EINVAL with err set.
 */
static int
riff_check(riff_read_fn rd, void *ctx, uint64_t size, char *err,
           size_t errlen)
{
    unsigned char h[8];
    uint64_t off = 12;
    int be;

    if (size < 12 || rd(ctx, 0, h) < 0)
        return 0;
    if (memcmp(h, "RIFF", 4) == 0)
        be = 0;
    else if (memcmp(h, "RIFX", 4) == 0)
        be = 1;
    else
        return 0;
    if (rd(ctx, 4, h) < 0 || memcmp(h + 4, "WAVE", 4) != 0)
        return 0;
    for (int i = 0; i < RIFF_MAX_CHUNKS && off + 8 <= size; i++) {
        if (rd(ctx, off, h) < 0 || memcmp(h, "data", 4) == 0)
            return 0;
        uint64_t len = riff_u32(h + 4, be);
        if (off + 8 + len > size)
            return fail(err, errlen, GQ_EINVAL, "not an audio file: a WAV "
                        "chunk runs past the end of the file");
        off += 8 + len + (len & 1); /* chunks are padded to even sizes */
    }
    return 0;
}

/* riff_check's reader for a file. */
static int
fd_read_hdr(void *ctx, uint64_t off, unsigned char hdr[8])
{
    int fd = *(int *)ctx;
    if (off > INT64_MAX - 8)
        return -1;
    return pread(fd, hdr, 8, (off_t)off) == 8 ? 0 : -1;
}

int
gq_audio_load(const char *path, double max_seconds, struct gq_audio *out,
              char *err, size_t errlen)
{
    char shown[SHOWN_MAX];
    if (err && errlen > 0)
        err[0] = '\0';
    if (!out)
        return fail(err, errlen, GQ_EINVAL, "no audio struct");
    memset(out, 0, sizeof *out);
    if (!path || !*path)
        return fail(err, errlen, GQ_EINVAL, "audio path is empty");
    int rc = check_limit(max_seconds, err, errlen);
    if (rc)
        return rc;
    show(shown, sizeof shown, path);

    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        char eb[128];
        return fail(err, errlen, GQ_EIO, "cannot open audio file %s: %s",
                    shown, strerror_r(errno, eb, sizeof eb));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        char eb[128];
        rc = fail(err, errlen, GQ_EIO, "cannot stat audio file %s: %s",
                  shown, strerror_r(errno, eb, sizeof eb));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, GQ_EINVAL, "not a regular file: %s", shown);
    }
    rc = riff_check(fd_read_hdr, &fd, (uint64_t)st.st_size, err, errlen);
    if (rc) {
        close(fd);
        return rc;
    }

    SF_INFO info;
    memset(&info, 0, sizeof info);
    /* close_desc 0: the descriptor is ours to close on every path. */
    SNDFILE *sf = sf_open_fd(fd, SFM_READ, &info, 0);
    if (!sf) {
        int se = sf_error(NULL);
        rc = fail(err, errlen, se == SF_ERR_SYSTEM ? GQ_EIO : GQ_EINVAL,
                  "not an audio file: %s", sf_error_number(se));
        close(fd);
        return rc;
    }
    rc = decode(sf, &info, max_seconds, out, err, errlen);
    sf_close(sf);
    close(fd);
    return rc;
}

/* ---- decoding from memory: libsndfile's virtual I/O ------------------ */

struct membuf {
    const unsigned char *p;
    sf_count_t len;
    sf_count_t pos;
};

static sf_count_t
mem_len(void *user)
{
    return ((struct membuf *)user)->len;
}

static sf_count_t
mem_seek(sf_count_t off, int whence, void *user)
{
    struct membuf *m = user;
    sf_count_t base;
    switch (whence) {
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = m->pos;
        break;
    case SEEK_END:
        base = m->len;
        break;
    default:
        return -1;
    }
    /* Offsets come from file headers: no overflow, no negative result. */
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0)
        return -1;
    m->pos = base + off;
    return m->pos;
}

static sf_count_t
mem_read(void *ptr, sf_count_t count, void *user)
{
    struct membuf *m = user;
    if (count <= 0 || m->pos >= m->len)
        return 0;
    sf_count_t k = m->len - m->pos;
    if (k > count)
        k = count;
    memcpy(ptr, m->p + m->pos, (size_t)k);
    m->pos += k;
    return k;
}

static sf_count_t
mem_write(const void *ptr, sf_count_t count, void *user)
{
    (void)ptr;
    (void)count;
    (void)user;
    return 0; /* read-only */
}

static sf_count_t
mem_tell(void *user)
{
    return ((struct membuf *)user)->pos;
}

/* riff_check's reader for a buffer. */
static int
mem_read_hdr(void *ctx, uint64_t off, unsigned char hdr[8])
{
    const struct membuf *m = ctx;
    if (off > (uint64_t)m->len || (uint64_t)m->len - off < 8)
        return -1;
    memcpy(hdr, m->p + off, 8);
    return 0;
}

int
gq_audio_load_mem(const void *data, size_t len, double max_seconds,
                  struct gq_audio *out, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (!out)
        return fail(err, errlen, GQ_EINVAL, "no audio struct");
    memset(out, 0, sizeof *out);
    int rc = check_limit(max_seconds, err, errlen);
    if (rc)
        return rc;
    if (len == 0)
        return fail(err, errlen, GQ_EINVAL, "not an audio file: empty");
    if (!data || len > (size_t)INT64_MAX)
        return fail(err, errlen, GQ_EINVAL, "bad audio buffer");

    struct membuf m = {data, (sf_count_t)len, 0};
    rc = riff_check(mem_read_hdr, &m, len, err, errlen);
    if (rc)
        return rc;
    SF_VIRTUAL_IO io = {
        .get_filelen = mem_len,
        .seek = mem_seek,
        .read = mem_read,
        .write = mem_write,
        .tell = mem_tell,
    };
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &m);
    if (!sf)
        return fail(err, errlen, GQ_EINVAL, "not an audio file: %s",
                    sf_error_number(sf_error(NULL)));
    rc = decode(sf, &info, max_seconds, out, err, errlen);
    sf_close(sf);
    return rc;
}

void
gq_audio_free(struct gq_audio *a)
{
    if (!a)
        return;
    free(a->samples);
    memset(a, 0, sizeof *a);
}

/* ---- chunk planning -------------------------------------------------- */

/*
 * Energy of one sample as an integer, so that window sums slide exactly
 * and equal windows compare equal: the sample clipped to [-1, 1] in steps
 * of 2^-20 (about -120 dB), squared: at most 2^40.
 */
static uint64_t
energy(float x)
{
    if (!(x == x))
        return 0; /* NaN */
    if (x > 1.0f)
        x = 1.0f;
    if (x < -1.0f)
        x = -1.0f;
    int64_t v = (int64_t)(x * 1048576.0f);
    return (uint64_t)(v * v);
}

size_t
gq_audio_cut(const struct gq_audio *a, size_t start, size_t max_len,
             size_t search)
{
    size_t n = a->n;
    if (start >= n)
        return n;
    if (max_len == 0)
        max_len = 1;
    if (max_len >= n - start)
        return n;
    size_t end = start + max_len;
    if (search > max_len / 2)
        search = max_len / 2;
    size_t win = a->rate > 0 ? (size_t)a->rate / WIN_DIV : 0;
    /* 2^23 windows of 2^40 still fit 64 bits. */
    if (win == 0 || win > ((size_t)1 << 23) || search < win)
        return end;

    const float *x = a->samples;
    size_t lo = end - search, last = end - win;
    uint64_t e = 0;
    for (size_t i = lo; i < lo + win; i++)
        e += energy(x[i]);
    /* [run_lo, run_hi]: the latest run of window starts at the minimum. */
    uint64_t best = e;
    size_t run_lo = lo, run_hi = lo;
    for (size_t w = lo + 1; w <= last; w++) {
        e += energy(x[w + win - 1]);
        e -= energy(x[w - 1]);
        if (e < best) {
            best = e;
            run_lo = run_hi = w;
        } else if (e == best) {
            if (run_hi + 1 != w)
                run_lo = w;
            run_hi = w;
        }
    }
    return run_lo + (run_hi - run_lo) / 2 + win / 2;
}

/* ---- WAV encoding ---------------------------------------------------- */

static unsigned char *
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)((v >> 8) & 0xff);
    return p + 2;
}

static unsigned char *
put32(unsigned char *p, uint32_t v)
{
    p = put16(p, v & 0xffff);
    return put16(p, v >> 16);
}

#define WAV_HEADER 44

int
gq_audio_wav(const struct gq_audio *a, size_t from, size_t to,
             unsigned char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (from > to || to > a->n || a->rate <= 0)
        return GQ_EINVAL;
    size_t count = to - from;
    if (count > (UINT32_MAX - (WAV_HEADER - 8)) / 2)
        return GQ_ETOOBIG;
    uint32_t data = (uint32_t)count * 2;
    unsigned char *b = malloc(WAV_HEADER + (size_t)data);
    if (!b)
        return GQ_ENOMEM;

    unsigned char *p = b;
    memcpy(p, "RIFF", 4);
    p = put32(p + 4, WAV_HEADER - 8 + data);
    memcpy(p, "WAVEfmt ", 8);
    p = put32(p + 8, 16);                     /* fmt chunk size */
    p = put16(p, 1);                          /* PCM */
    p = put16(p, 1);                          /* mono */
    p = put32(p, (uint32_t)a->rate);          /* sample rate */
    p = put32(p, (uint32_t)a->rate * 2);      /* byte rate */
    p = put16(p, 2);                          /* block align */
    p = put16(p, 16);                         /* bits per sample */
    memcpy(p, "data", 4);
    p = put32(p + 4, data);

    for (size_t i = from; i < to; i++) {
        float x = a->samples[i];
        if (!(x == x))
            x = 0.0f;
        if (x > 1.0f)
            x = 1.0f;
        if (x < -1.0f)
            x = -1.0f;
        /* Scale 32768, as libsndfile reads 16-bit back to float. */
        long v = lrintf(x * 32768.0f);
        if (v > 32767)
            v = 32767;
        p = put16(p, (unsigned)(uint16_t)(int16_t)v);
    }
    *buf = b;
    *len = WAV_HEADER + (size_t)data;
    return 0;
}

/* ---- the path check -------------------------------------------------- */

/* Whether the resolved path lies strictly inside the resolved root. */
static int
inside(const char *path, const char *root)
{
    size_t rl = strlen(root);
    if (rl == 1 && root[0] == '/')
        return path[0] == '/' && path[1] != '\0';
    return strncmp(path, root, rl) == 0 && path[rl] == '/' &&
           path[rl + 1] != '\0';
}

/*
 * Collapses "//", "." and ".." of an absolute path in place, without
 * looking at the file system ("/.." stays "/").
 */
static void
lexical(char *s)
{
    char *out = s; /* s[0] is '/' */
    const char *p = s;
    while (*p) {
        while (*p == '/')
            p++;
        const char *q = p;
        while (*q && *q != '/')
            q++;
        size_t k = (size_t)(q - p);
        if (k == 0 || (k == 1 && p[0] == '.')) {
            /* nothing */
        } else if (k == 2 && p[0] == '.' && p[1] == '.') {
            while (out > s && *(out - 1) != '/')
                out--;
            if (out > s)
                out--; /* the '/' before the dropped component */
        } else {
            *out++ = '/';
            memmove(out, p, k);
            out += k;
        }
        p = q;
    }
    if (out == s)
        *out++ = '/';
    *out = '\0';
}

/*
 * Splits roots at ':' and ',' and calls fn(root, arg) on each non-empty
 * one that fits PATH_MAX, until fn returns non-zero; returns that.
 */
static int
each_root(const char *roots, int (*fn)(const char *, void *), void *arg)
{
    char buf[PATH_MAX];
    const char *p = roots;
    while (*p) {
        size_t k = strcspn(p, ":,");
        if (k > 0 && k < sizeof buf) {
            memcpy(buf, p, k);
            buf[k] = '\0';
            int r = fn(buf, arg);
            if (r)
                return r;
        }
        p += k;
        if (*p)
            p++;
    }
    return 0;
}

static int
count_root(const char *root, void *arg)
{
    (void)root;
    ++*(int *)arg;
    return 0;
}

struct rootq {
    const char *path; /* resolved, or lexically cleaned */
    int lexical;      /* path did not resolve: also try roots on paper */
    int existing;     /* roots that resolved */
    int nomem;
};

static int
match_root(const char *root, void *arg)
{
    struct rootq *q = arg;
    if (q->lexical && root[0] == '/') {
        char clean[PATH_MAX];
        memcpy(clean, root, strlen(root) + 1);
        lexical(clean);
        if (inside(q->path, clean))
            return 1;
    }
    char *r = realpath(root, NULL);
    if (!r) {
        if (errno == ENOMEM)
            q->nomem = 1;
        return q->nomem;
    }
    q->existing++;
    int in = inside(q->path, r);
    free(r);
    return in;
}

int
gq_audio_path_check(const char *path, const char *roots, char *resolved,
                    size_t reslen, char *err, size_t errlen)
{
    char shown[SHOWN_MAX];
    if (err && errlen > 0)
        err[0] = '\0';
    if (!resolved || reslen == 0)
        return fail(err, errlen, GQ_EINVAL, "no buffer for the audio path");
    resolved[0] = '\0';
    if (!path || !*path)
        return fail(err, errlen, GQ_EINVAL, "audio path is empty");
    show(shown, sizeof shown, path);
    if (path[0] != '/')
        return fail(err, errlen, GQ_EINVAL,
                    "audio path must be absolute: %s", shown);
    if (strlen(path) >= PATH_MAX)
        return fail(err, errlen, GQ_EINVAL, "audio path is too long");
    int nroots = 0;
    if (roots)
        each_root(roots, count_root, &nroots);
    if (nroots == 0)
        return fail(err, errlen, GQ_EINVAL,
                    "no audio roots are configured; audio paths are "
                    "refused");

    char *real = realpath(path, NULL);
    if (!real) {
        int e = errno;
        if (e == ENOMEM)
            return fail(err, errlen, GQ_ENOMEM, "out of memory");
        /*
         * Say "outside" rather than "not found" for a path that is
         * outside even on paper, so that ".." cannot probe which files
         * exist elsewhere.
         */
        char clean[PATH_MAX];
        memcpy(clean, path, strlen(path) + 1);
        lexical(clean);
        struct rootq q = {.path = clean, .lexical = 1};
        int in = each_root(roots, match_root, &q);
        if (q.nomem)
            return fail(err, errlen, GQ_ENOMEM, "out of memory");
        if (!in)
            return fail(err, errlen, GQ_EINVAL,
                        "audio path is outside the allowed roots: %s",
                        shown);
        if (e == ENOENT || e == ENOTDIR)
            return fail(err, errlen, GQ_EINVAL, "audio file not found: %s",
                        shown);
        char eb[128];
        return fail(err, errlen, GQ_EINVAL, "cannot resolve audio path %s: %s",
                    shown, strerror_r(e, eb, sizeof eb));
    }

    struct rootq q = {.path = real};
    int in = each_root(roots, match_root, &q);
    int rc = 0;
    if (q.nomem) {
        rc = fail(err, errlen, GQ_ENOMEM, "out of memory");
    } else if (!in) {
        if (q.existing == 0)
            rc = fail(err, errlen, GQ_EINVAL,
                      "none of the audio roots exist; refusing %s", shown);
        else
            rc = fail(err, errlen, GQ_EINVAL,
                      "audio path is outside the allowed roots: %s", shown);
    } else {
        struct stat st;
        size_t rl = strlen(real);
        if (stat(real, &st) != 0) {
            char eb[128];
            rc = fail(err, errlen, GQ_EINVAL, "cannot stat audio file %s: %s",
                      shown, strerror_r(errno, eb, sizeof eb));
        } else if (!S_ISREG(st.st_mode)) {
            rc = fail(err, errlen, GQ_EINVAL,
                      "audio path is not a regular file: %s", shown);
        } else if (rl >= reslen) {
            rc = fail(err, errlen, GQ_EINVAL,
                      "resolved audio path is too long for its buffer");
        } else {
            memcpy(resolved, real, rl + 1);
        }
    }
    free(real);
    return rc;
}
