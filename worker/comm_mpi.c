/* The MPI communicator (the CPU backend's data plane): activations live in host memory, so the
 * row-parallel sums are MPI_Allreduce in place and the vocabulary gathers MPI_Allgather, on a
 * communicator duplicated from MPI_COMM_WORLD so data-plane traffic never mixes with the
 * control plane's step plans.  Each is nonblocking and waited for with the group's deadline
 * (tsr__group_wait), so a rank that stops answering fails the step instead of hanging it. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "worker/comm.h"
#include "worker/group.h"

typedef struct {
    MPI_Comm comm;
    double timeout_s;
} tsr__mpi;

static MPI_Datatype tsr__mpi_type(tsr_dtype t) {
    switch (t) {
    case TSR_F32: return MPI_FLOAT;
    case TSR_F64: return MPI_DOUBLE;
    case TSR_I32: return MPI_INT;
    case TSR_I64: return MPI_LONG_LONG;
    default: return MPI_DATATYPE_NULL;
    }
}

static tsr_status tsr__mpi_allreduce(tsr_comm *c, void *buf, int64_t n, tsr_dtype dtype) {
    MPI_Datatype t = tsr__mpi_type(dtype);
    if (t == MPI_DATATYPE_NULL) return tsr_errorf(TSR_ERR_UNSUPPORTED, "MPI all-reduce of %s", tsr_dtype_name(dtype));
    tsr__mpi *p = c->impl;
    MPI_Request rq;
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, t, MPI_SUM, p->comm, &rq) != MPI_SUCCESS)
        return tsr__group_fail("MPI_Iallreduce of %lld elements failed", (long long)n);
    return tsr__group_wait(&rq, p->timeout_s, "an all-reduce of activations");
}

static tsr_status tsr__mpi_allgather(tsr_comm *c, const void *send, void *recv, int64_t n, tsr_dtype dtype) {
    tsr__mpi *p = c->impl;
    size_t bytes = (size_t)n * tsr_dtype_size(dtype);
    MPI_Request rq;
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    if (MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, p->comm, &rq) != MPI_SUCCESS)
        return tsr__group_fail("MPI_Iallgather of %zu bytes failed", bytes);
    return tsr__group_wait(&rq, p->timeout_s, "an all-gather of logits");
}

static void tsr__mpi_free(tsr_comm *c) {
    tsr__mpi *p = c->impl;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && !tsr_group_broken(NULL)) MPI_Comm_free(&p->comm);
    free(p);
    free(c);
}

static const tsr_comm_ops tsr__mpi_ops = {
    .name = "mpi",
    .allreduce_sum = tsr__mpi_allreduce,
    .allgather = tsr__mpi_allgather,
    .free = tsr__mpi_free,
};

tsr_comm *tsr_comm_mpi_init(double timeout_s) {
    tsr_comm *c = calloc(1, sizeof *c);
    tsr__mpi *p = malloc(sizeof *p);
    if (!c || !p) {
        free(c);
        free(p);
        return NULL;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &p->comm);
    p->timeout_s = timeout_s;
    MPI_Comm_rank(p->comm, &c->rank);
    MPI_Comm_size(p->comm, &c->size);
    c->ops = &tsr__mpi_ops;
    c->impl = p;
    return c;
}
