/* The NCCL communicator (the GPU data plane, DESIGN.md): one GPU per rank, the communicator
 * bootstrapped over MPI (rank 0's ncclUniqueId broadcast on MPI_COMM_WORLD), every collective
 * enqueued on the CUDA backend's compute stream, so an all-reduce is ordered with the kernels
 * around it and can be recorded in a CUDA graph.
 *
 * Never hang: the communicator is non-blocking (ncclConfig_t.blocking = 0), and every place
 * that waits -- initialization, enqueueing, and the stream waits of allgather -- polls
 * ncclCommGetAsyncError.  A wait longer than TESSERA_NCCL_TIMEOUT seconds (default 300; the
 * first collectives set up connections lazily), or an asynchronous NCCL error (a peer died, a
 * network fault), aborts the communicator with ncclCommAbort and breaks the group
 * (worker/group.h): the call fails with TSR_ERR_COMM, so does every later one, and the engine
 * reports it (/health 503) while the process exits on its own terms. */
#ifdef TSR_HAVE_CUDA
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdbool.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/knobs.h"
#include "common/log.h"
#include "worker/comm.h"
#include "worker/group.h"

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;
    double timeout_s;
    bool aborted;
} tsr__nccl;

static double tsr__nccl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The communicator cannot go on: abort it (its kernels return) and break the group. */
static tsr_status tsr__nccl_fail(tsr__nccl *n, int rank, const char *what, const char *why) {
    if (!n->aborted) {
        ncclCommAbort(n->comm);
        n->aborted = true;
    }
    return tsr__group_fail("rank %d: NCCL %s: %s", rank, what, why);
}

/* Waits until the communicator has no operation in progress (a non-blocking call returned). */
static tsr_status tsr__nccl_settle(tsr__nccl *n, int rank, const char *what, ncclResult_t r) {
    if (n->aborted) return tsr__group_fail("rank %d: NCCL %s: the communicator was aborted", rank, what);
    double t0 = tsr__nccl_now();
    while (r == ncclInProgress) {
        if (tsr__nccl_now() - t0 > n->timeout_s) return tsr__nccl_fail(n, rank, what, "timed out");
        ncclCommGetAsyncError(n->comm, &r);
    }
    if (r != ncclSuccess) return tsr__nccl_fail(n, rank, what, ncclGetErrorString(r));
    return TSR_OK;
}

/* Waits for the stream (everything enqueued so far) while watching for NCCL errors. */
static tsr_status tsr__nccl_wait_stream(tsr__nccl *n, int rank, const char *what) {
    if (n->aborted) return tsr__group_fail("rank %d: NCCL %s: the communicator was aborted", rank, what);
    double t0 = tsr__nccl_now();
    for (;;) {
        cudaError_t e = cudaStreamQuery(n->stream);
        if (e == cudaSuccess) return TSR_OK;
        if (e != cudaErrorNotReady) return tsr__nccl_fail(n, rank, what, cudaGetErrorString(e));
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(n->comm, &r);
        if (r != ncclSuccess && r != ncclInProgress) return tsr__nccl_fail(n, rank, what, ncclGetErrorString(r));
        if (tsr__nccl_now() - t0 > n->timeout_s) return tsr__nccl_fail(n, rank, what, "timed out");
        usleep(20);
    }
}

static bool tsr__nccl_type(tsr_dtype t, ncclDataType_t *out) {
    switch (t) {
    case TSR_F32: *out = ncclFloat32; return true;
    case TSR_F16: *out = ncclFloat16; return true;
    case TSR_BF16: *out = ncclBfloat16; return true;
    case TSR_I32: *out = ncclInt32; return true;
    case TSR_I64: *out = ncclInt64; return true;
    case TSR_F64: *out = ncclFloat64; return true;
    default: return false;
    }
}

static tsr_status tsr__nccl_allreduce(tsr_comm *c, void *buf, int64_t n, tsr_dtype dtype) {
    tsr__nccl *p = c->impl;
    ncclDataType_t t;
    if (!tsr__nccl_type(dtype, &t)) return tsr_errorf(TSR_ERR_UNSUPPORTED, "NCCL all-reduce of %s", tsr_dtype_name(dtype));
    if (n <= 0) return TSR_OK;
    if (p->aborted) return tsr__group_fail("rank %d: NCCL all-reduce: the communicator was aborted", c->rank);
    return tsr__nccl_settle(p, c->rank, "all-reduce", ncclAllReduce(buf, buf, (size_t)n, t, ncclSum, p->comm, p->stream));
}

static tsr_status tsr__nccl_allgather(tsr_comm *c, const void *send, void *recv, int64_t n, tsr_dtype dtype) {
    tsr__nccl *p = c->impl;
    ncclDataType_t t;
    if (!tsr__nccl_type(dtype, &t)) return tsr_errorf(TSR_ERR_UNSUPPORTED, "NCCL all-gather of %s", tsr_dtype_name(dtype));
    if (p->aborted) return tsr__group_fail("rank %d: NCCL all-gather: the communicator was aborted", c->rank);
    TSR_TRY(tsr__nccl_settle(p, c->rank, "all-gather", ncclAllGather(send, recv, (size_t)n, t, p->comm, p->stream)));
    /* the caller reads the result next: wait here, where a dead peer is noticed */
    return tsr__nccl_wait_stream(p, c->rank, "all-gather");
}

static void tsr__nccl_free(tsr_comm *c) {
    tsr__nccl *p = c->impl;
    if (p) {
        if (!p->aborted && !tsr_group_broken(NULL) && tsr__nccl_wait_stream(p, c->rank, "shutdown") == TSR_OK) {
            ncclResult_t r = ncclCommFinalize(p->comm);
            double t0 = tsr__nccl_now();
            while (r == ncclInProgress && tsr__nccl_now() - t0 < p->timeout_s) ncclCommGetAsyncError(p->comm, &r);
            if (r == ncclSuccess) ncclCommDestroy(p->comm);
            else ncclCommAbort(p->comm);
        } else if (!p->aborted) {
            ncclCommAbort(p->comm);
        }
        free(p);
    }
    free(c);
}

static const tsr_comm_ops tsr__nccl_ops = {
    .name = "nccl",
    .allreduce_sum = tsr__nccl_allreduce,
    .allgather = tsr__nccl_allgather,
    .free = tsr__nccl_free,
};

tsr_comm *tsr_comm_nccl_init(void *stream) {
    tsr_comm *c = calloc(1, sizeof *c);
    tsr__nccl *p = calloc(1, sizeof *p);
    if (!c || !p) {
        free(c), free(p);
        tsr_errorf(TSR_ERR_OOM, "out of memory");
        return NULL;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    p->timeout_s = tsr_knobs_get()->nccl_timeout_s;   /* TESSERA_NCCL_TIMEOUT */
    p->stream = (cudaStream_t)stream;
    ncclUniqueId id;
    if (c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) memset(&id, 0, sizeof id);
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&p->comm, c->size, id, c->rank, &cfg);
    double t0 = tsr__nccl_now();
    while (r == ncclInProgress) {
        if (tsr__nccl_now() - t0 > p->timeout_s) {
            ncclCommAbort(p->comm);
            tsr_errorf(TSR_ERR_COMM, "NCCL initialization timed out after %.0f s", p->timeout_s);
            free(c), free(p);
            return NULL;
        }
        ncclCommGetAsyncError(p->comm, &r);
    }
    if (r != ncclSuccess) {
        tsr_errorf(TSR_ERR_COMM, "NCCL initialization failed on rank %d: %s", c->rank, ncclGetErrorString(r));
        free(c), free(p);
        return NULL;
    }
    c->ops = &tsr__nccl_ops;
    c->impl = p;
    TSR_LOGD("NCCL communicator: rank %d of %d", c->rank, c->size);
    return c;
}
#else
typedef int tsr__comm_nccl_unused; /* built without CUDA: no NCCL communicator */
#endif
