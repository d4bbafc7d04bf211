/*
 * fuzz.h - what every fuzz target of tests/fuzz shares.  Each target is
 * one .c file that includes this once; it is linked with libFuzzer
 * (make fuzz) or with replay.c (make test), never with another target.
 */
#ifndef GQ_FUZZ_H
#define GQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The entry point libFuzzer and replay.c call, once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A property the code under test promises, checked on every input: a
 * failure is a finding like a sanitizer's report, so it aborts (which
 * libFuzzer reports as a crash and saves the input).
 */
#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/*
 * LeakSanitizer reads its built-in suppressions from this function (gcc's
 * and clang's ASan both; without ASan it is never called).  Leaks that
 * are not gpuq's own and that gpuq cannot avoid:
 *
 * - libvorbis 1.3.7 (Debian 12) loses about 6 KB each time a crafted or
 *   truncated multi-link Ogg Vorbis file fails to open
 *   (_bisect_forward_serialno; xiph/vorbis issue 125).  libsndfile opens
 *   Ogg files through it, so every upload of such a file leaks in gpuqd
 *   too; only a libvorbis update fixes it.
 */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
    return "leak:libvorbis.so\n";
}

#endif
