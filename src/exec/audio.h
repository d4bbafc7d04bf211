/*
 * audio.h - audio for the transcription executor: decode a file or an
 * upload into 16 kHz mono float samples, plan chunk boundaries at quiet
 * points, encode chunks as the 16-bit PCM WAV that whisper.cpp's
 * whisper-server takes natively, and check client-given paths against
 * the configured audio roots.
 *
 * Everything here runs on worker threads, never on the event loop: calls
 * may block on file I/O and decoding, but keep no global state, so any
 * number of threads may use them at once on different structs.  Memory is
 * bounded by the caller's duration limit (about 64 KB per second of
 * accepted audio, plus fixed buffers).
 *
 * Decoding is libsndfile's (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 with
 * Debian's libsndfile 1.2, and the other formats it knows); resampling is
 * libsamplerate's SRC_SINC_MEDIUM_QUALITY.
 */
#ifndef GQ_AUDIO_H
#define GQ_AUDIO_H

#include <stddef.h>

#define GQ_AUDIO_RATE 16000 /* Hz; the rate of every decoded gq_audio */

/*
 * Decoded audio.  The caller owns the struct and frees samples with
 * gq_audio_free().  A loader fills it; it may also be built by hand (tests,
 * synthetic audio), in which case samples must hold n floats.
 */
struct gq_audio {
    float *samples;  /* n mono samples, nominally in [-1, 1]; never NULL
                        after a successful load, even when n is 0 */
    size_t n;        /* number of samples */
    int rate;        /* samples per second; always GQ_AUDIO_RATE from a
                        loader */
    double duration; /* seconds of the source (its frames / its rate);
                        n / rate agrees with it to within a sample */
};

/*
 * Decodes the audio file at path into out: all channels are averaged to
 * mono and the result resampled to GQ_AUDIO_RATE.  Decoding streams in
 * blocks, so memory stays near the size of the output.
 *
 * max_seconds bounds the work: a source longer than that is refused with
 * GQ_ETOOBIG, up front when the container states its length and while
 * decoding otherwise, so a small compressed file cannot expand without
 * limit.  It must be > 0 (INFINITY lifts the bound; not advised for
 * client-supplied audio).
 *
 * Returns 0 and fills out, or a negative code with *out zeroed and a
 * sentence in err (always NUL-terminated when errlen > 0; err may be NULL
 * when errlen is 0):
 *   GQ_EINVAL  bad arguments, not a regular file, not an audio file
 *              ("not an audio file: <libsndfile's reason>"), an
 *              unsupported sample rate, or a stream that fails to decode;
 *   GQ_ETOOBIG the source is longer than max_seconds;
 *   GQ_EIO     the file cannot be opened or read;
 *   GQ_ENOMEM  out of memory;
 *   GQ_EINTERNAL  libsamplerate failed (a bug, not bad input).
 * Does not check path against any roots: call gq_audio_path_check() first
 * for paths that come from clients, and pass the path it resolved.
 *
 * libsndfile keeps the reason for a failed open in a process-wide
 * variable; when two threads fail to open audio at the same moment, the
 * reason in err may be the other thread's.  The return code is always
 * this call's own.
 */
int gq_audio_load(const char *path, double max_seconds, struct gq_audio *out,
                  char *err, size_t errlen);

/*
 * As gq_audio_load(), from the len bytes at data (an uploaded file).  The
 * bytes are only read, and only during the call; the caller keeps them.
 * Format detection looks at the content only (there is no file name).
 * GQ_EIO cannot happen.
 */
int gq_audio_load_mem(const void *data, size_t len, double max_seconds,
                      struct gq_audio *out, char *err, size_t errlen);

/* Frees a->samples and zeroes *a.  NULL, and a zeroed struct, are fine. */
void gq_audio_free(struct gq_audio *a);

/*
 * Chunk planning.  Returns the end (exclusive) of the chunk that starts at
 * sample `start` and holds at most max_len samples:
 *   - a->n when start + max_len >= a->n (the rest fits), or start >= a->n;
 *   - otherwise the centre of the quietest 200 ms window (lowest energy)
 *     that lies wholly within the last `search` samples before
 *     start + max_len.  search is clamped to max_len / 2, so a chunk is
 *     never shorter than half of max_len; if it is shorter than one
 *     window, the cut is at start + max_len.
 * Among equally quiet windows (digital silence) the latest run of them
 * wins and the cut goes to that run's middle, i.e. the middle of the
 * silence.  The result r always satisfies start < r <= start + max_len
 * (start < a->n), and r >= start + max_len - search when it is not a->n,
 * so a loop `start = cut(start)` ends, covering the audio exactly.
 * A max_len of 0 is taken as 1.  Deterministic: energies are summed in
 * integers.  a must be a valid struct (samples may be NULL only if n is 0).
 */
size_t gq_audio_cut(const struct gq_audio *a, size_t start, size_t max_len,
                    size_t search);

/*
 * Encodes samples [from, to) of a as a 16-bit PCM mono WAV at a->rate (the
 * canonical 44-byte RIFF header, then the data), clipping to [-1, 1].
 * Returns 0 and sets *buf to a malloc'd buffer of *len bytes that the
 * caller frees with free(); on failure *buf is NULL and *len 0:
 *   GQ_EINVAL  from > to, to > a->n, or a->rate <= 0;
 *   GQ_ETOOBIG the data would not fit a RIFF file (over 4 GiB);
 *   GQ_ENOMEM  out of memory.
 * An empty range gives a valid WAV with no samples.
 */
int gq_audio_wav(const struct gq_audio *a, size_t from, size_t to,
                 unsigned char **buf, size_t *len);

/*
 * Checks a client-given path before anything opens it.  path must be
 * absolute; it is resolved with realpath() (".." and every symlink
 * followed) and accepted only if the result lies inside one of `roots`: a
 * list of directories separated by ':' or ',', each itself resolved with
 * realpath() (roots that do not exist are skipped).  Inside means equal to
 * root + '/' + something, so /srv/rec-evil is not inside /srv/rec.  The
 * file must exist and be a regular file.
 *
 * Returns 0 and writes the resolved path (NUL-terminated) to resolved,
 * which should have room for PATH_MAX bytes.  Otherwise GQ_EINVAL, with
 * a sentence in err naming the problem and the given path, never where a
 * symlink led: relative or empty path, no roots, path outside the roots
 * (".." or a symlink escape), nonexistent or unreachable file, not a
 * regular file, resolved buffer too small; GQ_ENOMEM when out of memory.
 *
 * path is a C string: a caller decoding it from JSON must itself refuse a
 * string with an embedded NUL (jansson: json_string_length() !=
 * strlen()).  The check holds at the moment of the call; directories
 * under the roots must not be writable by whoever supplies the paths, or
 * a component could be swapped for a symlink before the file is opened.
 */
int gq_audio_path_check(const char *path, const char *roots, char *resolved,
                        size_t reslen, char *err, size_t errlen);

#endif
