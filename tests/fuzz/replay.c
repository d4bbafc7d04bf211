/*
 * replay.c - runs a libFuzzer target without libFuzzer, so that its
 * inputs are checked by every ordinary build (gcc, -Werror, ASan).
 *
 *   test_fuzz_NAME [DIR_OR_FILE...]
 *
 * Every file named, and every file in every directory named (in name
 * order, not recursing), goes once through the target's
 * LLVMFuzzerTestOneInput, in a buffer of exactly its size so that ASan
 * sees a read past the end.  With no arguments it replays the target's
 * seeds and crash reproducers, tests/fuzz/NAME/ and tests/fuzz/regress/
 * NAME/, relative to the repository root where tests/run.sh runs the
 * unit tests: so `make test` and `make asan` run every input that ever
 * crashed.  A target that finds a bug aborts; finding no input at all is
 * a failure too (run from the wrong directory).  NAME comes from the
 * build (-DFUZZ_NAME).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"name\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Runs the file at path once; 0, or -1 if it cannot be read. */
static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    unsigned char *buf;
    size_t n;

    if (f == NULL || fstat(fileno(f), &st) < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return -1;
    }
    /* malloc(0) may give NULL; the target still gets a valid pointer. */
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (buf == NULL) {
        fclose(f);
        fprintf(stderr, "%s: out of memory\n", path);
        return -1;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f) || n != (size_t)st.st_size) {
        fprintf(stderr, "%s: short read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int
skip_entry(const struct dirent *e)
{
    /* Hidden files (.gitkeep) are not inputs. */
    return e->d_name[0] != '.';
}

/*
 * Runs path: a file, or each file of a directory.  Adds the inputs run
 * to *count.  A directory that does not exist is skipped when optional
 * (tests/fuzz/regress/NAME until the first crash is kept).  Returns 0 or
 * -1.
 */
static int
run_path(const char *path, int optional, int *count)
{
    struct dirent **names;
    struct stat st;
    char file[4096];
    int n, rc = 0;

    if (stat(path, &st) < 0) {
        if (optional && errno == ENOENT)
            return 0;
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (run_file(path) < 0)
            return -1;
        (*count)++;
        return 0;
    }
    n = scandir(path, &names, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        snprintf(file, sizeof file, "%s/%s", path, names[i]->d_name);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(file) < 0)
                rc = -1;
            else
                (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int
main(int argc, char **argv)
{
    static const char *const defaults[] = {"tests/fuzz/" FUZZ_NAME,
                                           "tests/fuzz/regress/" FUZZ_NAME};
    int count = 0, rc = 0;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (run_path(argv[i], 0, &count) < 0)
                rc = 1;
    } else {
        if (run_path(defaults[0], 0, &count) < 0 ||
            run_path(defaults[1], 1, &count) < 0)
            rc = 1;
    }
    if (count == 0) {
        fprintf(stderr, "fuzz_%s: no inputs found (run from the repository "
                "root, or name directories)\n", FUZZ_NAME);
        rc = 1;
    }
    printf("fuzz_%s: replayed %d input%s%s\n", FUZZ_NAME, count,
           count == 1 ? "" : "s", rc ? " (with errors)" : "");
    /* The targets clean up in atexit handlers, which run before
     * LeakSanitizer's own (registered first). */
    return rc;
}
