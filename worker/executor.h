/* One rank decides, every rank replays (DESIGN.md): the executor turns a step (worker/forward.h)
 * into a step plan that rank 0 broadcasts over MPI, and runs it on this rank's shard.  On rank
 * 0, tsr_exec_init installs a hook in the forward state, so every tsr_forward (and
 * tsr_forward_seq) there broadcasts its plan first: callers above need not know about TP.
 * Rank 0 calls tsr_exec_stop at the end; the other ranks sit in tsr_exec_worker_loop, which
 * returns when rank 0 stops the group.  Workers keep no scheduling
 * state: a plan carries everything a step needs (tokens, positions, block tables).
 *
 * Wire format of a plan (host memory, little-endian, one MPI_Bcast of a fixed header then one
 * of the body):
 *   header: magic, op (STEP | STOP | BEAT), n_seq, n_tok, n_bt, flags, body bytes
 *   body:   n_seq x {n_new, n_past, n_blocks} (int64) | tokens [n_tok] (int32) | blocks [n_bt] (int32)
 */
#ifndef TSR_EXECUTOR_H
#define TSR_EXECUTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "worker/forward.h"
#include "worker/group.h"
#include "worker/kv_pool.h"

typedef struct tsr_exec {
    const tsr_group *group;      /* not owned */
    tsr_forward_state *fs;       /* not owned */
    tsr_kv_pool *kv;             /* not owned */
    uint8_t *buf;                /* plan staging */
    size_t buf_cap;
    int64_t n_steps;
} tsr_exec;

void tsr_exec_init(tsr_exec *e, const tsr_group *g, tsr_forward_state *fs, tsr_kv_pool *kv);
void tsr_exec_free(tsr_exec *e);

/* Rank 0: tell the workers to leave their loop (idempotent; a no-op for a group of one). */
void tsr_exec_stop(tsr_exec *e);
/* Rank 0, while idle (the engine: every second): every rank answers, within the group's
 * deadline, or the group is broken (TSR_ERR_COMM).  Once a worker has seen one, it also expects
 * the next within the deadline (+1 s) and leaves its loop with TSR_ERR_COMM when rank 0 stops
 * answering.  A no-op for a group of one. */
tsr_status tsr_exec_heartbeat(tsr_exec *e);
/* Ranks > 0: receive and run plans until rank 0 stops.  A failing step aborts the group with
 * a message naming this rank (a worker cannot report per-request errors: rank 0 validated the
 * plan before sending it). */
tsr_status tsr_exec_worker_loop(tsr_exec *e);

/* Serialization, exposed for tests. */
size_t tsr_plan_encode(const tsr_step *step, bool want_logits, uint8_t **buf, size_t *cap);
/* Decodes into caller storage that lives as long as buf: seqs [n_seq] allocated in *seqs. */
tsr_status tsr_plan_decode(const uint8_t *buf, size_t len, tsr_step *step, bool *want_logits,
                           tsr_seq_step **seqs);

#endif
