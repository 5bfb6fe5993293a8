/* The continuous-batching scheduler (rank 0 only).  Each step it PLANS without changing
 * anything (tsr_sched_make_plan reads the queues and the block manager), then COMMITS the plan in
 * one place (tsr_sched_commit: preemptions, session evictions, prefix hits, block allocations,
 * queue moves), then the engine runs the forward pass on the committed entries and reports
 * back with tsr_sched_advance.  It knows no model, no text and no sampling, so its unit test
 * drives it without one (tests/unit/test_scheduler.c).
 *
 * A sequence is its token history (tokens[0..n_tokens)) and how much of it has KV in the cache
 * (n_computed).  Whatever lies between is fed next: a whole prompt, a chunk of it, the one
 * token sampled last step (a decode), or, after a preemption, everything again.  The engine
 * samples only when an entry's chunk reaches n_tokens.
 *
 * The plan, in order of priority:
 *   1. running sequences, oldest first (decodes, then continuing prefill chunks share the
 *      token budget max_prefill_token_num); when blocks run out, idle sessions are evicted
 *      first, then the newest running sequences are preempted (blocks released, back to the
 *      front of the waiting queue; they recompute prompt + generated tokens later);
 *   2. waiting sequences, first come first served, only in a step that preempted nothing: each
 *      takes its prefix-cache hits (full blocks of tokens[0..n_tokens-1): at least the last
 *      token is always computed, for its logits) and a first chunk within the budget;
 *   at most max_batch_size sequences in all.
 *
 * Sessions: a sequence parked with tsr_sched_park keeps its blocks between requests (IDLE);
 * tsr_sched_resume queues it again after the engine appended the next turn's tokens.  Under
 * memory pressure idle sessions lose their blocks (least recently used first); their full
 * blocks stay in the prefix cache, so the next turn often finds them there. */
#ifndef TSR_SCHEDULER_H
#define TSR_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/block_manager.h"

typedef enum tsr_seq_state {
    TSR_SEQ_NEW = 0,      /* not in the scheduler */
    TSR_SEQ_WAITING,
    TSR_SEQ_RUNNING,
    TSR_SEQ_IDLE,         /* a session between requests */
} tsr_seq_state;

typedef struct tsr_sched_seq {
    uint64_t id;
    void *user;                  /* the engine's request */
    int32_t *tokens;             // [cap_tokens] history: prompt (+ earlier turns) + generated
    int64_t n_tokens, cap_tokens;
    int64_t n_computed;          /* leading tokens whose KV is in blocks */
    int32_t *blocks;             // [cap_blocks] block table
    int64_t n_blocks, cap_blocks;
    uint64_t *hashes;            // [cap_hashes] chained hashes of the full blocks of tokens
    int64_t n_hashes, cap_hashes;
    int64_t n_registered;        /* leading blocks already offered to the prefix cache */
    int64_t n_dropped;           /* leading blocks released behind the attention window (ids -1) */
    int64_t n_hit_tokens;        /* prefix-cache hit at the last admission */
    int64_t n_preemptions;
    bool no_prefix_hits;         /* compute every token (the engine wants the prompt's logits) */
    int64_t order;               /* admission order: preemption takes the largest */
    double last_used;            /* IDLE: when it was parked */
    tsr_seq_state state;
    struct tsr_sched_seq *prev, *next;   /* queue links */
    int64_t mark;                /* plan bookkeeping */
} tsr_sched_seq;

/* Appends tokens to the history (grows the arrays). */
tsr_status tsr_sched_seq_append(tsr_sched_seq *s, const int32_t *tokens, int64_t n);
/* Frees the arrays (the sequence must not be in the scheduler). */
void tsr_sched_seq_free(tsr_sched_seq *s);

typedef struct tsr_sched_config {
    int64_t max_batch_size;
    int64_t max_prefill_token_num;
    bool prefix_cache;
    /* > 0 (a model whose every layer has this sliding window): a running sequence's leading
     * blocks that hold only keys no later query can see (all positions <= n_computed - window)
     * are released as it advances; its block table keeps their slots as -1, which attention
     * never reads.  A session truncated back into them recomputes from the start (the prefix
     * cache still holds what was registered).  0: blocks live as long as the sequence. */
    int64_t window;
} tsr_sched_config;

typedef struct tsr_sched tsr_sched;

tsr_status tsr_sched_init(const tsr_sched_config *c, tsr_block_manager *bm, tsr_sched **out);
/* Releases the blocks of every sequence still in it (they stay owned by the caller). */
void tsr_sched_free(tsr_sched *s);

/* NEW -> WAITING (a fresh sequence with n_tokens >= 1 and no blocks). */
void tsr_sched_add(tsr_sched *s, tsr_sched_seq *q);
/* Any state -> NEW: releases its blocks, leaves the queues.  The caller then frees it. */
void tsr_sched_remove(tsr_sched *s, tsr_sched_seq *q);
/* RUNNING -> IDLE, keeping the blocks (a session between requests). */
void tsr_sched_park(tsr_sched *s, tsr_sched_seq *q, double now);
/* IDLE -> WAITING after the caller appended tokens (n_computed < n_tokens). */
void tsr_sched_resume(tsr_sched *s, tsr_sched_seq *q);
/* Keeps the KV of the first n_keep tokens at most (rounded down so that no hashed, possibly
 * shared block is ever written again) and drops the history past n_tokens_new.  For a session
 * whose next turn does not extend its history exactly.  q must be IDLE or NEW. */
void tsr_sched_seq_truncate(tsr_sched *s, tsr_sched_seq *q, int64_t n_keep, int64_t n_tokens_new);

typedef struct tsr_sched_entry {
    tsr_sched_seq *seq;
    int64_t n_new;               /* tokens fed this step: tokens[n_computed .. + n_new) */
    int64_t n_hit_blocks;        /* admissions: leading blocks found in the prefix cache */
    bool admit;                  /* WAITING -> RUNNING */
} tsr_sched_entry;

typedef struct tsr_sched_plan {
    tsr_sched_entry *entries;    /* after commit: what runs this step, in this order */
    int64_t n_entries, cap_entries;
    tsr_sched_seq **preempt;     /* RUNNING -> WAITING (blocks released) */
    int64_t n_preempt, cap_preempt;
    tsr_sched_seq **evict;       /* IDLE sessions losing their blocks */
    int64_t n_evict, cap_evict;
    tsr_sched_seq **fail;        /* can never fit the pool: the engine ends them with an error */
    int64_t n_fail, cap_fail;
    int64_t n_tokens;            /* tokens fed in all */
} tsr_sched_plan;

void tsr_sched_plan_free(tsr_sched_plan *p);

/* Read-only. */
tsr_status tsr_sched_make_plan(const tsr_sched *s, tsr_sched_plan *p);
/* Applies the plan; entries whose blocks could not be had after all (an admission that the
 * plan's conservative count let through) are dropped from p and stay waiting.  Sequences in
 * p->fail are left WAITING for the caller to remove.  After it, each entry's sequence has
 * blocks covering n_computed + n_new tokens. */
void tsr_sched_commit(tsr_sched *s, tsr_sched_plan *p);
/* After the forward pass: n_new more tokens have KV; full blocks join the prefix cache. */
void tsr_sched_advance(tsr_sched *s, tsr_sched_seq *q, int64_t n_new);

typedef struct tsr_sched_counts {
    int64_t waiting, running, idle;
    int64_t preemptions, prefix_hit_tokens, prefix_query_tokens;
} tsr_sched_counts;
void tsr_sched_get_counts(const tsr_sched *s, tsr_sched_counts *c);

#endif
