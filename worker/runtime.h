/* The runtime every model-running command starts the same way (generate, chat, logits, serve,
 * bench): join the rank group (MPI; a singleton without mpirun), bind this rank's threads near
 * its device (hwloc), pick the backend, load this rank's shard, agree that every rank loaded,
 * size the KV pool as the minimum all ranks can hold, and set up the forward state with the
 * group's communicator.  Then rank 0 drives steps through rt->exec (worker/executor.h) and
 * the other ranks call tsr_runtime_worker_main.
 *
 *   tsr_runtime rt;
 *   if (tsr_runtime_open(&rt, &opts, &argc, &argv) != TSR_OK) -> message, exit 1 (every rank)
 *   if (rt.group.rank != 0) return tsr_runtime_worker_main(&rt);
 *   ... tsr_exec_step(&rt.exec, &step, logits) ...
 *   tsr_runtime_close(&rt);    // rank 0: stops the workers too
 */
#ifndef TSR_RUNTIME_H
#define TSR_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/backend.h"
#include "worker/comm.h"
#include "worker/executor.h"
#include "worker/forward.h"
#include "worker/group.h"
#include "worker/kv_pool.h"
#include "worker/model.h"

typedef struct tsr_runtime_opts {
    const char *model_path;
    const char *backend;            /* "auto" (GPU when there is one), "cpu", "cuda" */
    int64_t tp;                     /* expected group size; 0: whatever mpirun gave */
    int64_t threads;                /* CPU backend threads per rank; 0: the rank's bound cores */
    int64_t block_len;              /* cache_block_seq_len; 0: 64 */
    double cache_max_entry_count;   /* < 1: fraction of free memory after weights; >= 1: blocks;
                                       0: unset (a workspace's config.ini, else 0.5) */
    int64_t session_len;            /* 0: the model's max_position_embeddings */
    /* What applies when neither the fields above nor a workspace's config.ini set session_len or
     * the pool size (a single-sequence command: `tessera generate`, `chat`, `bench generate`) */
    int64_t session_len_fallback;   /* > 0: min(this, max_position_embeddings) */
    bool kv_one_session_fallback;   /* the pool holds one session_len sequence */
    int64_t max_batch_size;         /* a host-memory pool holds at most this many session_len
                                       sequences (0: no such cap) */
    bool progress;                  /* loading progress on rank 0 */
    bool bind;                      /* hwloc binding (default on under mpirun) */
    const char *load_format;        /* NULL / "auto": the files; "dummy": random weights of the
                                       config's shapes, made on the device */
    int64_t quant_policy;           /* KV cache: 0 (compute type), 8 (int8), 4 (int4); -1: unset,
                                       a workspace's config.ini, else 0 */
} tsr_runtime_opts;

/* Defaults: auto backend, cache_max_entry_count 0.5 (CPU: of MemAvailable, capped at 1 GiB
 * worth of blocks), block_len 64, progress on.  For a workspace, the knobs left unset (0) come
 * from its config.ini (session_len, cache_max_entry_count, cache_block_seq_len). */
void tsr_runtime_opts_default(tsr_runtime_opts *o);

typedef struct tsr_runtime {
    tsr_group group;
    tsr_backend *be;
    tsr_model *model;
    tsr_comm *comm;
    tsr_kv_pool kv;
    tsr_forward_state *fs;
    tsr_exec exec;
    int64_t session_len;
    int64_t quant_policy;           /* in force: 0, 8 or 4 */
    bool kv_static;                 /* quantized with the workspace's kv_qparams.json */
    double load_seconds;
    char binding[128];              /* this rank's cpuset, as a list */
    bool is_open;
} tsr_runtime;

/* On failure every rank returns the same status and message (naming the failing rank). */
tsr_status tsr_runtime_open(tsr_runtime *rt, const tsr_runtime_opts *o, int *argc, char ***argv);
/* Ranks > 0: replay step plans until rank 0 closes; returns the process exit code. */
int tsr_runtime_worker_main(tsr_runtime *rt);
void tsr_runtime_close(tsr_runtime *rt);

/* Tokens the pool holds (n_blocks * block_len). */
int64_t tsr_runtime_kv_tokens(const tsr_runtime *rt);
/* One line: "weights 513.2 MiB/rank, KV 1024 blocks x 64 = 65536 tokens (2.9 GiB)". */
void tsr_runtime_describe(const tsr_runtime *rt, char *buf, size_t cap);
/* One line on the KV cache for the policy in force: "KV cache int8 (online per-token scales):
 * 12240 bytes/token/rank, pool 87616 tokens = 10 sessions of 8192". */
void tsr_runtime_describe_kv(const tsr_runtime *rt, char *buf, size_t cap);

#endif
