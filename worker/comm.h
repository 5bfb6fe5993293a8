/* The communicator of a tensor-parallel group (DESIGN.md "data plane"): the sums that
 * row-parallel layers need and the gathers of vocabulary-parallel logits.  Implementations:
 * single (a group of one: every call is a no-op), MPI (host all-reduce, for the CPU backend;
 * the TP issue) and NCCL (device all-reduce on the compute stream; the CUDA issue).  All
 * buffers are backend (device) pointers of the backend's compute type, and every rank must make
 * the same calls in the same order. */
#ifndef TSR_COMM_H
#define TSR_COMM_H

#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"

typedef struct tsr_comm tsr_comm;

typedef struct tsr_comm_ops {
    const char *name;
    /* buf [n] of `dtype` on every rank becomes the element-wise sum over ranks. */
    tsr_status (*allreduce_sum)(tsr_comm *c, void *buf, int64_t n, tsr_dtype dtype);
    /* recv [size][n] = every rank's send [n], in rank order (recv may not alias send). */
    tsr_status (*allgather)(tsr_comm *c, const void *send, void *recv, int64_t n, tsr_dtype dtype);
    void (*free)(tsr_comm *c);
} tsr_comm_ops;

struct tsr_comm {
    const tsr_comm_ops *ops;
    int rank;
    int size;
    void *impl;
};

/* A group of one: rank 0 of size 1; allreduce is a no-op, allgather a copy. */
tsr_comm *tsr_comm_single_init(void);
/* The MPI group (MPI_COMM_WORLD, duplicated): host all-reduce for the CPU backend; each wait
 * has a deadline of timeout_s (> 0) after which the group is broken (worker/group.h). */
tsr_comm *tsr_comm_mpi_init(double timeout_s);
/* The NCCL group over MPI_COMM_WORLD (worker/comm_nccl.c; CUDA builds only): collectives on
 * `stream` (the CUDA backend's, tsr_backend_cuda_stream).  NULL with tsr_last_error set.
 * A wait past TESSERA_NCCL_TIMEOUT or an asynchronous NCCL error aborts the communicator and
 * breaks the group (TSR_ERR_COMM); it never exits the process. */
tsr_comm *tsr_comm_nccl_init(void *stream);

static inline void tsr_comm_free(tsr_comm *c) {
    if (c) c->ops->free(c);
}

#endif
