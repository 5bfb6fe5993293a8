/* MPI bootstrap and control-plane helpers of the rank group (see group.h).  Everything here
 * runs on host memory over MPI_COMM_WORLD; the data plane (all-reduce of activations) lives in
 * the communicators (comm_*.c). */
#include "worker/group.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define TSR__MSG_LEN 512

tsr_status tsr_group_init(int *argc, char ***argv, tsr_group *g) {
    memset(g, 0, sizeof *g);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            return tsr_errorf(TSR_ERR_COMM, "MPI_Init_thread failed");
        g->initialized = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &g->local_rank);
    MPI_Comm_size(local, &g->local_size);
    MPI_Comm_free(&local);
    if (gethostname(g->host, sizeof g->host - 1) != 0) snprintf(g->host, sizeof g->host, "?");
    if (g->size > 1) tsr_log_set_rank(g->rank);
    return TSR_OK;
}

int tsr_group_world_rank(void) {
    int inited = 0, fin = 0, r = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

void tsr_group_finalize(tsr_group *g) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (g->initialized && !fin) MPI_Finalize();
    g->initialized = false;
}

_Noreturn void tsr_group_abort(const tsr_group *g, int code) {
    (void)g;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);
}

tsr_status tsr_group_agree(const tsr_group *g, tsr_status mine) {
    if (g->size <= 1) return mine;
    /* the lowest failing rank, or size when none failed */
    int me = mine == TSR_OK ? g->size : g->rank, first = g->size;
    MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == g->size) return TSR_OK;
    struct { int status; char msg[TSR__MSG_LEN]; } m = {0};
    if (g->rank == first) {
        m.status = (int)mine;
        snprintf(m.msg, sizeof m.msg, "rank %d (%s): %s", g->rank, g->host, tsr_last_error());
    }
    MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD);
    m.msg[TSR__MSG_LEN - 1] = 0;
    return tsr_errorf((tsr_status)m.status, "%s", m.msg);
}

tsr_status tsr_group_bcast(const tsr_group *g, void *buf, size_t n, int root) {
    if (g->size <= 1 || n == 0) return TSR_OK;
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        if (MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return tsr_errorf(TSR_ERR_COMM, "MPI_Bcast of %zu bytes from rank %d failed", n, root);
    }
    return TSR_OK;
}

int64_t tsr_group_min_i64(const tsr_group *g, int64_t v) {
    if (g->size <= 1) return v;
    long long in = v, out = v;
    MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    return out;
}

int64_t tsr_group_max_i64(const tsr_group *g, int64_t v) {
    if (g->size <= 1) return v;
    long long in = v, out = v;
    MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    return out;
}

double tsr_group_max_f64(const tsr_group *g, double v) {
    if (g->size <= 1) return v;
    double out = v;
    MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return out;
}

tsr_status tsr_group_allgather_i64(const tsr_group *g, int64_t v, int64_t *out) {
    if (g->size <= 1) {
        out[0] = v;
        return TSR_OK;
    }
    long long in = v;
    if (MPI_Allgather(&in, 1, MPI_LONG_LONG, out, 1, MPI_LONG_LONG, MPI_COMM_WORLD) != MPI_SUCCESS)
        return tsr_errorf(TSR_ERR_COMM, "MPI_Allgather failed");
    return TSR_OK;
}
