/*
 * assert.h - GQ_ASSERT: a broken invariant crashes loudly, in every
 * build (not compiled out like assert(3)).  Bad input, network failures
 * and store errors are ordinary error codes, never asserts.
 */
#ifndef GQ_ASSERT_H
#define GQ_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define GQ_ASSERT(c)                                                        \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,      \
                    __LINE__, #c);                                          \
            abort();                                                        \
        }                                                                   \
    } while (0)

#endif
