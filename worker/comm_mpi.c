/* The MPI communicator (the CPU backend's data plane): activations live in host memory, so the
 * row-parallel sums are MPI_Allreduce in place and the vocabulary gathers MPI_Allgather, on a
 * communicator duplicated from MPI_COMM_WORLD so data-plane traffic never mixes with the
 * control plane's step plans. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "worker/comm.h"

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
    MPI_Comm *comm = c->impl;
    if (MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, t, MPI_SUM, *comm) != MPI_SUCCESS)
        return tsr_errorf(TSR_ERR_COMM, "MPI_Allreduce of %lld elements failed", (long long)n);
    return TSR_OK;
}

static tsr_status tsr__mpi_allgather(tsr_comm *c, const void *send, void *recv, int64_t n, tsr_dtype dtype) {
    MPI_Comm *comm = c->impl;
    size_t bytes = (size_t)n * tsr_dtype_size(dtype);
    if (MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, *comm) != MPI_SUCCESS)
        return tsr_errorf(TSR_ERR_COMM, "MPI_Allgather of %zu bytes failed", bytes);
    return TSR_OK;
}

static tsr_status tsr__mpi_barrier(tsr_comm *c) {
    MPI_Comm *comm = c->impl;
    return MPI_Barrier(*comm) == MPI_SUCCESS ? TSR_OK : tsr_errorf(TSR_ERR_COMM, "MPI_Barrier failed");
}

static void tsr__mpi_free(tsr_comm *c) {
    MPI_Comm *comm = c->impl;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(comm);
    free(comm);
    free(c);
}

static const tsr_comm_ops tsr__mpi_ops = {
    .name = "mpi",
    .allreduce_sum = tsr__mpi_allreduce,
    .allgather = tsr__mpi_allgather,
    .barrier = tsr__mpi_barrier,
    .free = tsr__mpi_free,
};

tsr_comm *tsr_comm_mpi_init(void) {
    tsr_comm *c = calloc(1, sizeof *c);
    MPI_Comm *comm = malloc(sizeof *comm);
    if (!c || !comm) {
        free(c);
        free(comm);
        return NULL;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, comm);
    MPI_Comm_rank(*comm, &c->rank);
    MPI_Comm_size(*comm, &c->size);
    c->ops = &tsr__mpi_ops;
    c->impl = comm;
    return c;
}
