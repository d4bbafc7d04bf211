/*
 * fuzz_audio.c - the audio an upload brings (src/exec/audio.h): each
 * input is a file's bytes for gq_audio_load_mem, with a duration limit
 * small enough to keep runs fast; what loads is then cut into chunks at
 * quiet points and each chunk encoded as WAV, as the transcription
 * executor does.  libsndfile sees WAV, FLAC, OGG, MP3 and the rest of
 * its formats; the seeds are WAVs of every sample format, truncated
 * ones and ones whose headers lie.
 *
 * An input that starts with '/' is a path for gq_audio_path_check
 * instead (up to the first newline), taken under a directory the harness
 * makes: ROOT/rec/a.wav (a file), ROOT/rec/sub/ (a directory), ROOT/out.wav
 * (outside the root), symlinks to each and a symlink loop.  The roots
 * are ROOT/rec and a root that does not exist.  So "/rec/a.wav" is
 * accepted and "/rec/../out.wav" must not be.
 *
 * Checked besides the sanitizers: what audio.h promises of a load (rate,
 * length against duration, *out zeroed on failure), of a cut (progress,
 * bounds) and of a WAV (its size), and that an accepted path resolves
 * inside the root to a regular file.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "exec/audio.h"
#include "fuzz.h"

#define MAX_SECONDS 1.0


static char root[PATH_MAX];     /* the path check's directory, resolved */
static char roots[2 * PATH_MAX + 16];

static void
cleanup(void)
{
    static const char *const names[] = {
        "rec/a.wav", "rec/sub/b.wav", "rec/link-in", "rec/link-out",
        "rec/loop", "rec/link-dir", "out.wav", NULL};
    char p[PATH_MAX + 32];

    if (root[0] == '\0')
        return;
    for (int i = 0; names[i] != NULL; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/rec/sub", root);
    rmdir(p);
    snprintf(p, sizeof p, "%s/rec", root);
    rmdir(p);
    rmdir(root);
    root[0] = '\0';
}

static void
touch(const char *dir, const char *name)
{
    char p[PATH_MAX + 32];
    FILE *f;

    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "w");
    CHECK(f != NULL);
    fputs("RIFF", f);
    fclose(f);
}

static void
link_at(const char *target, const char *name)
{
    char p[PATH_MAX + 32];

    snprintf(p, sizeof p, "%s/%s", root, name);
    CHECK(symlink(target, p) == 0);
}

/* Makes the path check's directory, once. */
static void
setup(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX], p[PATH_MAX + 32];

    if (root[0] != '\0')
        return;
    snprintf(dir, sizeof dir, "%s/gpuq-fuzz-audio.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    CHECK(realpath(dir, root) != NULL);
    atexit(cleanup);
    snprintf(p, sizeof p, "%s/rec", root);
    CHECK(mkdir(p, 0700) == 0);
    touch(p, "a.wav");
    snprintf(p, sizeof p, "%s/rec/sub", root);
    CHECK(mkdir(p, 0700) == 0);
    touch(p, "b.wav");
    touch(root, "out.wav");
    link_at("a.wav", "rec/link-in");
    link_at("../out.wav", "rec/link-out");
    link_at("loop", "rec/loop");
    link_at("sub", "rec/link-dir");
    snprintf(roots, sizeof roots, "%s/rec:%s/missing", root, root);
}

static void
fuzz_path(const uint8_t *data, size_t size)
{
    char path[PATH_MAX + 64], resolved[PATH_MAX], err[256];
    const uint8_t *nl = memchr(data, '\n', size);
    size_t n = nl ? (size_t)(nl - data) : size;
    size_t rl = strlen(root);
    int rc;

    /* The path is the input below ROOT; a NUL ends it, as C does. */
    if (n > sizeof path - rl - 1)
        n = sizeof path - rl - 1;
    memcpy(path, root, rl);
    memcpy(path + rl, data, n);
    path[rl + n] = '\0';
    memset(err, 0x5A, sizeof err);
    rc = gq_audio_path_check(path, roots, resolved, sizeof resolved, err,
                             sizeof err);
    CHECK(rc == 0 || rc == GQ_EINVAL || rc == GQ_ENOMEM);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (rc == 0) {
        struct stat st;
        CHECK(strncmp(resolved, root, rl) == 0 &&
              strncmp(resolved + rl, "/rec/", 5) == 0);
        CHECK(stat(resolved, &st) == 0 && S_ISREG(st.st_mode));
    } else {
        CHECK(err[0] != '\0');
    }
}

static void
fuzz_load(const uint8_t *data, size_t size)
{
    struct gq_audio a;
    char err[256];
    int rc;

    memset(&a, 0x5A, sizeof a);
    memset(err, 0x5A, sizeof err);
    rc = gq_audio_load_mem(data, size, MAX_SECONDS, &a, err, sizeof err);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (rc < 0) {
        CHECK(rc == GQ_EINVAL || rc == GQ_ETOOBIG || rc == GQ_ENOMEM);
        CHECK(a.samples == NULL && a.n == 0 && a.rate == 0);
        CHECK(err[0] != '\0');
        return;
    }
    CHECK(rc == 0);
    CHECK(a.samples != NULL && a.rate == GQ_AUDIO_RATE);
    CHECK(a.duration >= 0 && a.duration <= MAX_SECONDS);
    /* "n / rate agrees with it to within a sample" */
    CHECK(fabs((double)a.n - a.duration * GQ_AUDIO_RATE) <= 1.0);

    /* Chunks of about a second with a quarter-second search, as the
     * executor plans them (there, max_hold decides the length). */
    size_t max_len = GQ_AUDIO_RATE / 2 + size % GQ_AUDIO_RATE;
    size_t search = max_len / 4, start = 0, total = 0;
    while (start < a.n) {
        size_t end = gq_audio_cut(&a, start, max_len, search);
        unsigned char *wav;
        size_t len;
        CHECK(end > start && end <= start + max_len && end <= a.n);
        CHECK(end == a.n || end >= start + max_len - search);
        CHECK(gq_audio_wav(&a, start, end, &wav, &len) == 0);
        CHECK(len == 44 + 2 * (end - start));
        CHECK(memcmp(wav, "RIFF", 4) == 0 && memcmp(wav + 36, "data", 4) == 0);
        total += end - start;
        free(wav);
        start = end;
    }
    CHECK(total == a.n);
    CHECK(gq_audio_cut(&a, a.n, max_len, search) == a.n);
    gq_audio_free(&a);
    CHECK(a.samples == NULL && a.n == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == '/') {
        setup();
        fuzz_path(data, size);
    } else {
        fuzz_load(data, size);
    }
    return 0;
}
