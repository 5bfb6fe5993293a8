/* The group of ranks (DESIGN.md "Processes"): MPI bootstrap, who is who, and the control-plane
 * helpers every rank uses: agreeing on success after a step that can fail on one rank (loading
 * a shard), broadcasting from rank 0, min/max over ranks.  Started without mpirun, tessera is an
 * MPI singleton: a group of one. */
#ifndef TSR_GROUP_H
#define TSR_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tsr_group {
    int rank, size;              /* in MPI_COMM_WORLD: rank 0 is the coordinator */
    int local_rank, local_size;  /* on this host (MPI_COMM_TYPE_SHARED) */
    char host[64];
    bool initialized;            /* MPI_Init done here (and MPI_Finalize due) */
} tsr_group;

/* Initializes MPI (thread level MULTIPLE where available) once per process and fills g.
 * Sets the log prefix to the rank when size > 1. */
tsr_status tsr_group_init(int *argc, char ***argv, tsr_group *g);
/* This process's rank in MPI_COMM_WORLD (0 before MPI is initialized or after it ended). */
int tsr_group_world_rank(void);
void tsr_group_finalize(tsr_group *g);
/* Ends every rank at once (MPI_Abort) with exit code `code`. */
_Noreturn void tsr_group_abort(const tsr_group *g, int code);

/* Every rank passes its own status (and, when it failed, tsr_last_error() is its message).
 * Returns TSR_OK on every rank when all succeeded; otherwise every rank returns the lowest
 * failing rank's status with the message "rank R (host): <its message>" -- so one rank that
 * cannot load its shard makes all of them stop with the same clear reason. */
tsr_status tsr_group_agree(const tsr_group *g, tsr_status mine);

tsr_status tsr_group_bcast(const tsr_group *g, void *buf, size_t n, int root);
int64_t tsr_group_min_i64(const tsr_group *g, int64_t v);
int64_t tsr_group_max_i64(const tsr_group *g, int64_t v);
double tsr_group_max_f64(const tsr_group *g, double v);
/* Gathers one int64 from every rank on every rank: out [size]. */
tsr_status tsr_group_allgather_i64(const tsr_group *g, int64_t v, int64_t *out);

#endif
