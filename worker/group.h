/* The group of ranks (DESIGN.md "Processes"): MPI bootstrap, who is who, and the control-plane
 * helpers every rank uses: agreeing on success after a step that can fail on one rank (loading
 * a shard, allocating a step's activations), broadcasting from rank 0, min/max over ranks.
 *
 * A group of one (tessera started without mpirun/srun, or `mpirun -np 1`) never initializes MPI:
 * it opens no sockets, so a single-rank server listens on its own ports only.
 *
 * Threads: every MPI call of a process is made by one thread, the one that called
 * tsr_group_init (the engine's step thread under `serve`), so MPI_THREAD_FUNNELED is enough;
 * init fails clearly when the library gives less.
 *
 * Waits: every collective is nonblocking (MPI_I*) and polled.  Inside steps each wait has a
 * deadline (g->timeout_s, TESSERA_COMM_TIMEOUT seconds, default 5): a rank that stops answering
 * (killed, stopped, its link cut) makes the wait fail with TSR_ERR_COMM and marks the group
 * broken for good -- every later group call fails at once, and MPI_Finalize is skipped (it could
 * hang on the dead peer); the process then exits and mpirun takes the rest down. */
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
    int thread_level;            /* the MPI_THREAD_* level MPI provided */
    double timeout_s;            /* deadline of one wait in a step; 0: none (set once loaded) */
} tsr_group;

/* Initializes MPI (when the launcher started more than one rank) once per process and fills g.
 * Sets the log prefix to the rank when size > 1. */
tsr_status tsr_group_init(int *argc, char ***argv, tsr_group *g);
/* This process's rank in MPI_COMM_WORLD (0 before MPI is initialized or after it ended). */
int tsr_group_world_rank(void);
/* MPI_Finalize, unless the group is broken (then the process just exits). */
void tsr_group_finalize(tsr_group *g);
/* TESSERA_COMM_TIMEOUT (seconds, > 0) or 5 (common/knobs.h). */
double tsr_group_step_timeout(void);

/* True once a wait timed out or MPI failed; *why (may be NULL) gets the first reason. */
bool tsr_group_broken(const char **why);
/* Internal: mark the group broken (the first reason sticks) and return TSR_ERR_COMM with it. */
tsr_status tsr__group_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Internal: polls *req (MPI_Request) to completion; timeout_s > 0 is its deadline.  Errors
 * and timeouts mark the group broken.  what names the wait in the message. */
tsr_status tsr__group_wait(void *req, double timeout_s, const char *what);

/* Every rank passes its own status (and, when it failed, tsr_last_error() is its message).
 * Returns TSR_OK on every rank when all succeeded; otherwise every rank returns the lowest
 * failing rank's status with the message "rank R (host): <its message>" -- so one rank that
 * cannot load its shard makes all of them stop with the same clear reason. */
tsr_status tsr_group_agree(const tsr_group *g, tsr_status mine);

/* Broadcast from root; timeout_s > 0 is the deadline (0: wait as long as it takes -- a worker
 * waiting for the next step of an idle server). */
tsr_status tsr_group_bcast(const tsr_group *g, void *buf, size_t n, int root, double timeout_s);
int64_t tsr_group_min_i64(const tsr_group *g, int64_t v);
int64_t tsr_group_max_i64(const tsr_group *g, int64_t v);
/* Gathers one int64 from every rank on every rank: out [size]. */
tsr_status tsr_group_allgather_i64(const tsr_group *g, int64_t v, int64_t *out);

#endif
