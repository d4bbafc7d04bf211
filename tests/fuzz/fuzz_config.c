/*
 * fuzz_config.c - gpuqd's configuration file (src/server/config.c): each
 * input is an INI file, read by gq_config_load (the reader that feeds
 * inih, the key tables, the references resolved after the file, the
 * secret and token files it names) and, when it loads, checked by
 * gq_config_check, as gpuqd --check-config does.
 *
 * Relative paths in a file are relative to the repository root, where
 * the harness runs (like the unit tests): tests/fuzz/files/ holds a
 * secret file and a token file that seeds name.
 *
 * Checked besides the sanitizers: the error text is NUL-terminated and
 * empty exactly on success; a file with errors gives the same result
 * with a small error buffer, which is not written past; and a
 * configuration that passes both calls holds what the daemon takes for
 * granted (counts within their arrays, every executor's backend present
 * and of a type it can use, every model's class present, strings
 * terminated).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "server/config.h"
#include "fuzz.h"

static char path[512];          /* the file each input is written to */

static void
cleanup(void)
{
    if (path[0] != '\0')
        unlink(path);
}

static void
setup(void)
{
    const char *tmp = getenv("TMPDIR");
    int fd;

    snprintf(path, sizeof path, "%s/gpuq-fuzz-config.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    atexit(cleanup);
}

static int
terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

/* What gpuqd relies on in a configuration that passed its checks. */
static void
check_config(const struct gq_config *c)
{
    CHECK(c->nclasses >= 1 && c->nclasses <= GQ_MAX_CLASSES);
    CHECK(c->nbackends >= 0 && c->nbackends <= GQ_MAX_BACKENDS);
    CHECK(c->nmodels >= 0 && c->nmodels <= GQ_MAX_MODELS);
    CHECK(c->ntokens >= 0 && c->ntokens <= GQ_MAX_TOKENS);
    CHECK(c->slots >= 1 && c->slots <= GQ_MAX_SLOTS);
    CHECK(c->synchronous >= 0 && c->synchronous <= 2);
    CHECK(c->max_body >= 1 && c->max_payload >= 1 && c->max_parked >= 0);
    CHECK(c->request_timeout > 0 && c->callback_attempts >= 1);
    CHECK(terminated(c->listen, sizeof c->listen));
    CHECK(terminated(c->data_dir, sizeof c->data_dir) && c->data_dir[0]);
    CHECK(terminated(c->unix_socket, sizeof c->unix_socket));
    CHECK(terminated(c->callback_secret, sizeof c->callback_secret));
    CHECK(terminated(c->token_file, sizeof c->token_file));
    for (int k = 0; k < c->nclasses; k++) {
        const struct gq_class_exec *x = &c->exec[k];
        CHECK(terminated(c->classes[k].name, GQ_NAME_MAX));
        CHECK(c->classes[k].name[0] != '\0');
        CHECK(c->classes[k].weight > 0 && c->classes[k].lease_ttl > 0);
        CHECK(c->classes[k].max_queue >= 1);
        CHECK(c->classes[k].max_attempts >= 1);
        CHECK(x->executor >= GQ_EXEC_WORKER && x->executor <= GQ_EXEC_CHAT);
        CHECK(x->backend >= -1 && x->backend < c->nbackends);
        CHECK(terminated(x->audio_roots, sizeof x->audio_roots));
        if (x->executor == GQ_EXEC_WORKER)
            continue;
        CHECK(x->backend >= 0 && x->max_hold > 0);
        enum gq_backend_type t = c->backends[x->backend].type;
        if (x->executor == GQ_EXEC_TRANSCRIBE)
            CHECK(t == GQ_BACKEND_WHISPER_CPP);
        else
            CHECK(t == GQ_BACKEND_OPENAI || t == GQ_BACKEND_OLLAMA);
    }
    for (int b = 0; b < c->nbackends; b++) {
        CHECK(terminated(c->backends[b].name, GQ_NAME_MAX));
        CHECK(terminated(c->backends[b].url, sizeof c->backends[b].url));
        CHECK(terminated(c->backends[b].model,
                         sizeof c->backends[b].model));
        CHECK(c->backends[b].max_concurrency >= 1 &&
              c->backends[b].max_concurrency <= 64);
        CHECK(c->backends[b].timeout > 0);
    }
    for (int m = 0; m < c->nmodels; m++) {
        CHECK(terminated(c->model_names[m], sizeof c->model_names[m]));
        CHECK(c->model_class[m] >= 0 && c->model_class[m] < c->nclasses);
    }
    for (int t = 0; t < c->ntokens; t++) {
        const struct gq_token_conf *tk = &c->tokens[t];
        CHECK(terminated(tk->name, GQ_NAME_MAX) && tk->name[0] != '\0');
        CHECK(tk->role >= GQ_ROLE_SUBMIT && tk->role <= GQ_ROLE_ADMIN);
        CHECK(terminated(tk->secret, sizeof tk->secret));
        CHECK(strlen(tk->secret) >= GQ_SECRET_MIN);
        CHECK(tk->classes != 0);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct gq_config c, c2;
    static char err[8192], small[40];
    size_t smallen = 1 + size % (sizeof small - 1);
    FILE *f;
    int rc, rc2;

    if (path[0] == '\0')
        setup();
    f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);

    memset(err, 0x5A, sizeof err);
    rc = gq_config_load(&c, path, err, sizeof err);
    CHECK(rc == 0 || rc == GQ_EINVAL || rc == GQ_EIO || rc == GQ_ENOMEM);
    CHECK(terminated(err, sizeof err));
    CHECK((rc == 0) == (err[0] == '\0'));

    if (rc < 0) {
        /* The same file, its messages in a buffer too small for them. */
        memset(small, 0x5A, sizeof small);
        rc2 = gq_config_load(&c2, path, small, (int)smallen);
        CHECK(rc2 == rc);
        CHECK(terminated(small, smallen));
        for (size_t i = smallen; i < sizeof small; i++)
            CHECK(small[i] == 0x5A);
        return 0;
    }

    memset(err, 0x5A, sizeof err);
    rc = gq_config_check(&c, err, sizeof err);
    CHECK(rc == 0 || rc == GQ_EINVAL);
    CHECK(terminated(err, sizeof err));
    CHECK((rc == 0) == (err[0] == '\0'));
    rc2 = gq_config_check(&c, small, (int)smallen);
    CHECK(rc2 == rc && terminated(small, smallen));
    if (rc == 0)
        check_config(&c);
    return 0;
}
