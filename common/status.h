/* Errors in three tiers (DESIGN.md): TSR_ASSERT for invariants (always on), tsr_status codes
 * for what a user, a file or the network can cause, and the CUDA/NCCL/MPI check family
 * (kernels/cuda, worker/comm).  A failing function returns a code and leaves a message in a
 * thread-local buffer (tsr_last_error) that names the file / parameter and the problem. */
#ifndef TSR_STATUS_H
#define TSR_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum tsr_status {
    TSR_OK = 0,
    TSR_ERR_INVALID_ARG,   /* a bad parameter or request */
    TSR_ERR_IO,            /* open/read/write/mmap failed */
    TSR_ERR_FORMAT,        /* a corrupt or unsupported file */
    TSR_ERR_UNSUPPORTED,   /* valid, but not something Tessera does */
    TSR_ERR_OOM,           /* host or device memory */
    TSR_ERR_NOT_FOUND,     /* a tensor, key, model or file that is not there */
    TSR_ERR_KV_FULL,       /* out of KV cache blocks */
    TSR_ERR_COMM,          /* a rank, MPI or NCCL failure */
    TSR_ERR_CANCELLED,
    TSR_ERR_INTERNAL,
} tsr_status;

const char *tsr_status_str(tsr_status s);

/* Set the thread-local error message and return `code`, so a failure reads
 *   return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' ends past the file", path, name);  */
tsr_status tsr_errorf(tsr_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading model X: <old message>"). */
tsr_status tsr_error_wrap(tsr_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *tsr_last_error(void);
void tsr_clear_error(void);

/* Invariants: always on, print expression and place, abort. Never for user input. */
#define TSR_ASSERT(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "tessera: assertion failed: %s at %s:%d\n", #cond, __FILE__,   \
                    __LINE__);                                                             \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Propagate a status: TSR_TRY(f(x)); */
#define TSR_TRY(expr)                                                                      \
    do {                                                                                   \
        tsr_status tsr__st = (expr);                                                       \
        if (tsr__st != TSR_OK) return tsr__st;                                             \
    } while (0)

#endif
