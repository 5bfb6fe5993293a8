/* The block manager (rank 0 only): owns the ids of the paged KV pool's blocks (worker/kv_pool.h
 * holds the memory on every rank; here we decide which id holds what).  Blocks are reference
 * counted, so sequences that share a prompt prefix share its blocks, and full blocks are
 * hashed so later requests find them (the prefix cache).
 *
 * A block's hash is chained: hash(block i) = H(hash(block i-1), the block_len token ids of
 * block i), so the hash stands for the whole prefix, not merely the block.  H is keyed with a
 * per-process secret (SipHash-2-4 under a 128-bit key drawn from getrandom() the first time a
 * manager is made), so a client cannot craft a prompt whose blocks collide with another
 * user's: an unkeyed (or guessable-key) 64-bit hash can be inverted or brute-forced offline.
 * A hash is only an index, never proof: every hashed block also keeps its own token ids and
 * its parent's hash, and a lookup is a hit only when all three match (a collision is a miss).
 * Only full blocks whose KV has been computed are hashed; a partial block is always owned by
 * exactly one sequence, which is what makes writing into it safe.
 *
 * Every block is FREE, CACHED or ACTIVE; the state machine (the only transitions) is written
 * down in block_manager.c beside the functions that move it.  Cached blocks are reused before
 * anything is evicted, and allocation fails (KV_FULL) only when every block is ACTIVE.
 * free + cached + active == total at all times (tsr_bm_check verifies it).
 *
 * This is the only allocator of KV block ids: the pool (worker/kv_pool.h) is memory addressed
 * by id and keeps no state of its own, and single-sequence users of tsr_forward_seq (tools,
 * tests) take their ids here too, through tsr_bm_seq_*.
 *
 * Not thread-safe: one thread uses a manager (the engine's step thread; a tool's own one).  Read-only queries (lookup,
 * ref, counters) never change anything, so the scheduler can plan with them and commit later. */
#ifndef TSR_BLOCK_MANAGER_H
#define TSR_BLOCK_MANAGER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tsr_block_manager tsr_block_manager;
typedef struct tsr_kv_seq tsr_kv_seq;   /* worker/kv_pool.h */

typedef struct tsr_bm_counts {
    int64_t total, free, cached, active;
    int64_t evictions;           /* cached blocks whose hash was dropped to make room */
} tsr_bm_counts;

tsr_status tsr_bm_init(int64_t n_blocks, int64_t block_len, tsr_block_manager **out);
void tsr_bm_free(tsr_block_manager *bm);

int64_t tsr_bm_block_len(const tsr_block_manager *bm);
void tsr_bm_get_counts(const tsr_block_manager *bm, tsr_bm_counts *c);
/* Blocks an alloc can take now: free + cached. */
int64_t tsr_bm_available(const tsr_block_manager *bm);
int32_t tsr_bm_ref(const tsr_block_manager *bm, int32_t id);

/* The chained, keyed hash of one full block (the process secret is drawn on first use).
 * parent is 0 for the first block. Never 0. */
uint64_t tsr_bm_hash_block(uint64_t parent, const int32_t *tokens, int64_t block_len);

/* Read-only: the block registered under hash h whose parent hash is parent and whose block_len
 * token ids equal tokens, or -1 (a block under h holding other tokens is a miss). */
int32_t tsr_bm_lookup(const tsr_block_manager *bm, uint64_t h, uint64_t parent, const int32_t *tokens);

/* n blocks (FREE first, then the LRU's oldest CACHED), each ACTIVE with ref 1 and no hash.
 * TSR_ERR_KV_FULL and nothing taken when fewer than n are available. */
tsr_status tsr_bm_alloc(tsr_block_manager *bm, int64_t n, int32_t *out);
/* One more reference to an ACTIVE or CACHED block (a prefix hit). */
void tsr_bm_acquire(tsr_block_manager *bm, int32_t id);
/* Drops one reference from each; see the state machine. */
void tsr_bm_release(tsr_block_manager *bm, int64_t n, const int32_t *ids);
/* Registers a full, computed, ACTIVE block under h = tsr_bm_hash_block(parent, tokens), keeping
 * a copy of its block_len token ids and its parent hash for lookups to compare.  Returns false
 * (and changes nothing) when another block already holds the same prefix (two sequences
 * computed it at once): the block stays unhashed and is freed, not cached, when released. */
bool tsr_bm_set_hash(tsr_block_manager *bm, int32_t id, uint64_t h, uint64_t parent, const int32_t *tokens);

/* One sequence's block table (worker/kv_pool.h) for single-sequence users: reserve makes it
 * cover n_total tokens (alloc; TSR_ERR_KV_FULL and nothing taken when too few are available),
 * truncate keeps the first n_keep tokens (releasing the blocks past them; 0 empties it), and
 * release returns every block and frees the table.  Its blocks are never hashed. */
tsr_status tsr_bm_seq_reserve(tsr_block_manager *bm, tsr_kv_seq *s, int64_t n_total);
void tsr_bm_seq_truncate(tsr_block_manager *bm, tsr_kv_seq *s, int64_t n_keep);
void tsr_bm_seq_release(tsr_block_manager *bm, tsr_kv_seq *s);

/* Verifies the invariants (counters against a full scan, LRU and hash table links); returns
 * false and logs what is wrong.  O(n_blocks): tests and debug only. */
bool tsr_bm_check(const tsr_block_manager *bm);

#endif
