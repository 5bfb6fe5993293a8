/* The continuous-batching scheduler: plan (read-only), commit (one place), advance.  See
 * scheduler.h for the policy.  Queues are doubly linked lists kept in admission order
 * (waiting, running) or parking order (idle); plans mark sequences with a per-plan epoch in
 * seq->mark so that planning writes nothing but the plan itself (mark is plan bookkeeping,
 * invisible to everything else). */
#include "coordinator/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "common/grow.h"
#include "common/log.h"

typedef struct {
    tsr_sched_seq *head, *tail;
    int64_t n;
} tsr__queue;

struct tsr_sched {
    tsr_sched_config cfg;
    tsr_block_manager *bm;
    int64_t block_len;
    tsr__queue waiting, running, idle;
    int64_t next_order;
    int64_t epoch;               /* plan marks */
    int64_t preemptions, hit_tokens, query_tokens;
};

/* ---- sequences ---- */

tsr_status tsr_sched_seq_append(tsr_sched_seq *s, const int32_t *tokens, int64_t n) {
    if (!tsr_grow((void **)&s->tokens, &s->cap_tokens, s->n_tokens + n, sizeof *s->tokens))
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    if (n) memcpy(s->tokens + s->n_tokens, tokens, (size_t)n * sizeof *tokens);
    s->n_tokens += n;
    return TSR_OK;
}

void tsr_sched_seq_free(tsr_sched_seq *s) {
    if (!s) return;
    TSR_ASSERT(s->state == TSR_SEQ_NEW && s->n_blocks == 0);
    free(s->tokens);
    free(s->blocks);
    free(s->hashes);
    s->tokens = s->blocks = NULL;
    s->hashes = NULL;
    s->n_tokens = s->cap_tokens = s->cap_blocks = s->n_hashes = s->cap_hashes = 0;
}

/* Chained hashes of the first n full blocks of the history (computed once, tokens only grow
 * or are truncated by tsr_sched_seq_truncate, which drops stale hashes).  Out of memory, fewer
 * are there (s->n_hashes): the prefix cache then matches less, nothing else changes. */
static void tsr__ensure_hashes(tsr_sched_seq *s, int64_t n, int64_t bl) {
    if (n <= s->n_hashes) return;
    TSR_ASSERT(n * bl <= s->n_tokens);
    if (!tsr_grow((void **)&s->hashes, &s->cap_hashes, n, sizeof *s->hashes)) return;
    for (int64_t i = s->n_hashes; i < n; i++)
        s->hashes[i] = tsr_bm_hash_block(i ? s->hashes[i - 1] : 0, s->tokens + i * bl, bl);
    s->n_hashes = n;
}

/* ---- queues ---- */

static void tsr__q_remove(tsr__queue *q, tsr_sched_seq *s) {
    if (s->prev) s->prev->next = s->next;
    else q->head = s->next;
    if (s->next) s->next->prev = s->prev;
    else q->tail = s->prev;
    s->prev = s->next = NULL;
    q->n--;
}

static void tsr__q_append(tsr__queue *q, tsr_sched_seq *s) {
    s->next = NULL;
    s->prev = q->tail;
    if (q->tail) q->tail->next = s;
    else q->head = s;
    q->tail = s;
    q->n++;
}

/* Keeps the queue sorted by order (preempted sequences go back before younger ones). */
static void tsr__q_insert_sorted(tsr__queue *q, tsr_sched_seq *s) {
    tsr_sched_seq *at = q->tail;
    while (at && at->order > s->order) at = at->prev;
    s->prev = at;
    s->next = at ? at->next : q->head;
    if (s->next) s->next->prev = s;
    else q->tail = s;
    if (at) at->next = s;
    else q->head = s;
    q->n++;
}

static tsr__queue *tsr__queue_of(tsr_sched *s, tsr_sched_seq *q) {
    switch (q->state) {
    case TSR_SEQ_WAITING: return &s->waiting;
    case TSR_SEQ_RUNNING: return &s->running;
    case TSR_SEQ_IDLE: return &s->idle;
    default: return NULL;
    }
}

static void tsr__release_blocks(tsr_sched *s, tsr_sched_seq *q) {
    if (q->n_blocks > q->n_dropped) tsr_bm_release(s->bm, q->n_blocks - q->n_dropped, q->blocks + q->n_dropped);
    q->n_blocks = 0;
    q->n_dropped = 0;
    q->n_computed = 0;
    q->n_registered = 0;
}

/* ---- life cycle ---- */

tsr_status tsr_sched_init(const tsr_sched_config *c, tsr_block_manager *bm, tsr_sched **out) {
    *out = NULL;
    if (c->max_batch_size < 1 || c->max_prefill_token_num < 1)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "scheduler: max_batch_size and max_prefill_token_num must be >= 1");
    tsr_sched *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    s->cfg = *c;
    s->bm = bm;
    s->block_len = tsr_bm_block_len(bm);
    *out = s;
    return TSR_OK;
}

void tsr_sched_free(tsr_sched *s) {
    if (!s) return;
    tsr__queue *qs[3] = {&s->waiting, &s->running, &s->idle};
    for (int i = 0; i < 3; i++)
        while (qs[i]->head) tsr_sched_remove(s, qs[i]->head);
    free(s);
}

void tsr_sched_add(tsr_sched *s, tsr_sched_seq *q) {
    TSR_ASSERT(q->state == TSR_SEQ_NEW && q->n_tokens >= 1);
    q->order = s->next_order++;
    q->state = TSR_SEQ_WAITING;
    tsr__q_append(&s->waiting, q);
}

void tsr_sched_remove(tsr_sched *s, tsr_sched_seq *q) {
    tsr__queue *qq = tsr__queue_of(s, q);
    if (qq) tsr__q_remove(qq, q);
    tsr__release_blocks(s, q);
    q->state = TSR_SEQ_NEW;
}

void tsr_sched_park(tsr_sched *s, tsr_sched_seq *q, double now) {
    TSR_ASSERT(q->state == TSR_SEQ_RUNNING);
    tsr__q_remove(&s->running, q);
    q->state = TSR_SEQ_IDLE;
    q->last_used = now;
    tsr__q_append(&s->idle, q);
}

void tsr_sched_resume(tsr_sched *s, tsr_sched_seq *q) {
    TSR_ASSERT(q->state == TSR_SEQ_IDLE && q->n_computed < q->n_tokens);
    tsr__q_remove(&s->idle, q);
    q->order = s->next_order++;
    q->state = TSR_SEQ_WAITING;
    tsr__q_append(&s->waiting, q);
}

void tsr_sched_seq_truncate(tsr_sched *s, tsr_sched_seq *q, int64_t n_keep, int64_t n_tokens_new) {
    TSR_ASSERT(q->state == TSR_SEQ_IDLE || q->state == TSR_SEQ_NEW);
    const int64_t bl = s->block_len;
    if (n_tokens_new < q->n_tokens) q->n_tokens = n_tokens_new;
    if (n_keep > q->n_computed) n_keep = q->n_computed;
    if (n_keep > q->n_tokens - 1) n_keep = q->n_tokens - 1;   /* the last token is always computed */
    if (n_keep < 0) n_keep = 0;
    /* A block that is registered (hashed) may be shared: never write into it again. */
    if (n_keep % bl && n_keep / bl < q->n_registered) n_keep = n_keep / bl * bl;
    /* the next query (at n_keep) would need keys from blocks released behind the window */
    if (q->n_dropped > 0 && n_keep - s->cfg.window + 1 < q->n_dropped * bl) n_keep = 0;
    int64_t keep_blocks = (n_keep + bl - 1) / bl;
    if (keep_blocks < q->n_blocks) {
        int64_t from = keep_blocks > q->n_dropped ? keep_blocks : q->n_dropped;
        if (q->n_blocks > from) tsr_bm_release(s->bm, q->n_blocks - from, q->blocks + from);
        q->n_blocks = keep_blocks;
        if (q->n_dropped > keep_blocks) q->n_dropped = keep_blocks;
    }
    q->n_computed = n_keep;
    if (q->n_registered > n_keep / bl) q->n_registered = n_keep / bl;
    if (q->n_hashes > q->n_tokens / bl) q->n_hashes = q->n_tokens / bl;
}

/* ---- plan ---- */

void tsr_sched_plan_free(tsr_sched_plan *p) {
    free(p->entries);
    free(p->preempt);
    free(p->evict);
    free(p->fail);
    memset(p, 0, sizeof *p);
}

static tsr_status tsr__push_seq(tsr_sched_seq ***arr, int64_t *n, int64_t *cap, tsr_sched_seq *q) {
    if (!tsr_grow((void **)arr, cap, *n + 1, sizeof **arr)) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    (*arr)[(*n)++] = q;
    return TSR_OK;
}

static tsr_status tsr__push_entry(tsr_sched_plan *p, tsr_sched_seq *q, int64_t n_new, int64_t hits, bool admit) {
    if (!tsr_grow((void **)&p->entries, &p->cap_entries, p->n_entries + 1, sizeof *p->entries))
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    p->entries[p->n_entries++] = (tsr_sched_entry){q, n_new, hits, admit};
    p->n_tokens += n_new;
    return TSR_OK;
}

static int64_t tsr__blocks_for(int64_t n_tok, int64_t bl) { return (n_tok + bl - 1) / bl; }

/* Blocks that releasing q would make allocatable (those only q holds). */
static int64_t tsr__freeable(const tsr_sched *s, const tsr_sched_seq *q) {
    int64_t n = 0;
    for (int64_t i = q->n_dropped; i < q->n_blocks; i++) n += tsr_bm_ref(s->bm, q->blocks[i]) == 1;
    return n;
}

/* Marks are epoch-based: mark == epoch*4 + k means "k" in this plan. */
enum { TSR__M_SCHEDULED = 1, TSR__M_PREEMPTED = 2, TSR__M_EVICTED = 3 };

/* Planning is read-only but for seq->mark and the memo of each sequence's block hashes. */
tsr_status tsr_sched_make_plan(const tsr_sched *cs, tsr_sched_plan *p) {
    tsr_sched *s = (tsr_sched *)cs;   /* for the marks only */
    p->n_entries = p->n_preempt = p->n_evict = p->n_fail = 0;
    p->n_tokens = 0;
    const int64_t epoch = ++s->epoch * 4, bl = s->block_len;
    int64_t avail = tsr_bm_available(s->bm);
    int64_t batch = 0, budget = s->cfg.max_prefill_token_num;
    tsr_sched_seq *idle_next = s->idle.head;

    /* 1. Running sequences, oldest first. */
    for (tsr_sched_seq *q = s->running.head; q && batch < s->cfg.max_batch_size; q = q->next) {
        if (q->mark == epoch + TSR__M_PREEMPTED) continue;
        const int64_t rem = q->n_tokens - q->n_computed;
        TSR_ASSERT(rem >= 1);
        int64_t chunk = 1;
        if (rem > 1) {
            chunk = rem < budget ? rem : budget;
            if (chunk == 0) continue;
        }
        const int64_t need = tsr__blocks_for(q->n_computed + chunk, bl) - q->n_blocks;
        bool self_preempted = false;
        while (need > avail) {
            if (idle_next) {   /* idle sessions go first */
                if (idle_next->n_blocks > 0) {
                    TSR_TRY(tsr__push_seq(&p->evict, &p->n_evict, &p->cap_evict, idle_next));
                    idle_next->mark = epoch + TSR__M_EVICTED;
                    avail += tsr__freeable(s, idle_next);
                }
                idle_next = idle_next->next;
                continue;
            }
            tsr_sched_seq *v = s->running.tail;
            while (v && v->mark == epoch + TSR__M_PREEMPTED) v = v->prev;
            TSR_ASSERT(v && v->mark != epoch + TSR__M_SCHEDULED);
            TSR_TRY(tsr__push_seq(&p->preempt, &p->n_preempt, &p->cap_preempt, v));
            v->mark = epoch + TSR__M_PREEMPTED;
            avail += tsr__freeable(s, v);
            if (v == q) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted) continue;
        TSR_TRY(tsr__push_entry(p, q, chunk, 0, false));
        q->mark = epoch + TSR__M_SCHEDULED;
        avail -= need;
        batch++;
        if (rem > 1) budget -= chunk;
    }

    /* 2. Waiting sequences, first come first served, in a step that preempted nothing. */
    for (tsr_sched_seq *q = s->waiting.head; q && !p->n_preempt && batch < s->cfg.max_batch_size && budget > 0;
         q = q->next) {
        int64_t hits = 0, pinned = 0, n_comp = q->n_computed, have = q->n_blocks;
        if (have == 0 && s->cfg.prefix_cache && !q->no_prefix_hits) {
            tsr__ensure_hashes(q, (q->n_tokens - 1) / bl, bl);
            const int64_t n_full = q->n_hashes < (q->n_tokens - 1) / bl ? q->n_hashes : (q->n_tokens - 1) / bl;
            for (; hits < n_full; hits++) {
                int32_t id = tsr_bm_lookup(s->bm, q->hashes[hits], hits ? q->hashes[hits - 1] : 0, q->tokens + hits * bl);
                if (id < 0) break;
                pinned += tsr_bm_ref(s->bm, id) == 0;
            }
            n_comp = hits * bl;
            have = hits;
        }
        const int64_t rem = q->n_tokens - n_comp;
        const int64_t chunk = rem < budget ? rem : budget;
        const int64_t need = tsr__blocks_for(n_comp + chunk, bl) - have;
        while (need + pinned > avail && idle_next) {
            if (idle_next->n_blocks > 0) {
                TSR_TRY(tsr__push_seq(&p->evict, &p->n_evict, &p->cap_evict, idle_next));
                idle_next->mark = epoch + TSR__M_EVICTED;
                avail += tsr__freeable(s, idle_next);
            }
            idle_next = idle_next->next;
        }
        if (need + pinned > avail) {
            /* Nothing runs and even the whole pool cannot hold it: it never will (the engine
             * refuses such requests at submit; this catches what slips through). */
            tsr_bm_counts bc;
            tsr_bm_get_counts(s->bm, &bc);
            if (p->n_entries == 0 && s->running.n == 0 && tsr__blocks_for(q->n_tokens, bl) > bc.total)
                TSR_TRY(tsr__push_seq(&p->fail, &p->n_fail, &p->cap_fail, q));
            break;
        }
        TSR_TRY(tsr__push_entry(p, q, chunk, hits, true));
        q->mark = epoch + TSR__M_SCHEDULED;
        avail -= need + pinned;
        batch++;
        budget -= chunk;
    }
    return TSR_OK;
}

/* ---- commit ---- */

void tsr_sched_commit(tsr_sched *s, tsr_sched_plan *p) {
    const int64_t bl = s->block_len;
    for (int64_t i = 0; i < p->n_evict; i++) tsr__release_blocks(s, p->evict[i]);
    for (int64_t i = 0; i < p->n_preempt; i++) {
        tsr_sched_seq *q = p->preempt[i];
        tsr__q_remove(&s->running, q);
        tsr__release_blocks(s, q);
        q->state = TSR_SEQ_WAITING;
        q->n_preemptions++;
        s->preemptions++;
        tsr__q_insert_sorted(&s->waiting, q);
    }
    /* Prefix hits first, so no allocation below can evict a block the plan counted on. */
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_entry *e = &p->entries[i];
        tsr_sched_seq *q = e->seq;
        if (!e->admit || q->n_blocks > 0) continue;
        q->mark = -1;   /* a fresh admission: on a failed allocation below, undo its hits */
        if (!tsr_grow((void **)&q->blocks, &q->cap_blocks, e->n_hit_blocks, sizeof *q->blocks))
            e->n_hit_blocks = 0;   /* out of host memory: no hits; the allocation below decides */
        for (int64_t k = 0; k < e->n_hit_blocks; k++) {
            int32_t id = tsr_bm_lookup(s->bm, q->hashes[k], k ? q->hashes[k - 1] : 0, q->tokens + k * bl);
            TSR_ASSERT(id >= 0);
            tsr_bm_acquire(s->bm, id);
            q->blocks[k] = id;
        }
        q->n_blocks = q->n_registered = e->n_hit_blocks;
        q->n_computed = q->n_hit_tokens = e->n_hit_blocks * bl;
        if (s->cfg.prefix_cache) {
            s->hit_tokens += q->n_hit_tokens;
            s->query_tokens += q->n_tokens;
        }
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_entry e = p->entries[i];
        tsr_sched_seq *q = e.seq;
        const int64_t need = tsr__blocks_for(q->n_computed + e.n_new, bl) - q->n_blocks;
        if (need > 0) {
            /* out of host memory for the block table: this sequence sits this step out (an
             * admission waits, a running one keeps what it has and tries again next step) */
            if (!tsr_grow((void **)&q->blocks, &q->cap_blocks, q->n_blocks + need, sizeof *q->blocks)) {
                if (e.admit && q->mark == -1) tsr__release_blocks(s, q);
                continue;
            }
            if (tsr_bm_alloc(s->bm, need, q->blocks + q->n_blocks) != TSR_OK) {
                /* Only an admission can get here (the plan's count of pinned cached blocks is
                 * conservative but not exact after session evictions); it waits a step. */
                TSR_ASSERT(e.admit);
                if (q->mark == -1) tsr__release_blocks(s, q);
                continue;
            }
            q->n_blocks += need;
        }
        if (e.admit) {
            tsr__q_remove(&s->waiting, q);
            q->state = TSR_SEQ_RUNNING;
            tsr__q_insert_sorted(&s->running, q);
        }
        p->entries[kept++] = e;
    }
    p->n_entries = kept;
    p->n_tokens = 0;
    for (int64_t i = 0; i < kept; i++) p->n_tokens += p->entries[i].n_new;
}

/* Sliding window: releases the leading blocks whose keys (positions < dead * bl) the next query
 * at n_computed and every later one are past: key k is seen from q only when k > q - window. */
static void tsr__drop_behind_window(tsr_sched *s, tsr_sched_seq *q) {
    const int64_t bl = s->block_len, w = s->cfg.window;
    if (w <= 0 || q->n_computed - w + 1 < bl) return;
    int64_t dead = (q->n_computed - w + 1) / bl;
    if (dead > q->n_blocks) dead = q->n_blocks;
    for (int64_t i = q->n_dropped; i < dead; i++) {
        tsr_bm_release(s->bm, 1, q->blocks + i);   /* a registered block stays in the prefix cache */
        q->blocks[i] = -1;
    }
    if (dead > q->n_dropped) q->n_dropped = dead;
}

void tsr_sched_advance(tsr_sched *s, tsr_sched_seq *q, int64_t n_new) {
    const int64_t bl = s->block_len;
    q->n_computed += n_new;
    TSR_ASSERT(q->n_computed <= q->n_tokens && q->n_computed <= q->n_blocks * bl);
    int64_t n_full = s->cfg.prefix_cache ? q->n_computed / bl : 0;
    if (n_full > q->n_registered) tsr__ensure_hashes(q, n_full, bl);
    if (n_full > q->n_hashes) n_full = q->n_hashes;   /* out of memory: register fewer */
    for (int64_t i = q->n_registered; i < n_full; i++)
        if (q->blocks[i] >= 0)
            tsr_bm_set_hash(s->bm, q->blocks[i], q->hashes[i], i ? q->hashes[i - 1] : 0, q->tokens + i * bl);
    if (n_full > q->n_registered) q->n_registered = n_full;
    tsr__drop_behind_window(s, q);
}

void tsr_sched_get_counts(const tsr_sched *s, tsr_sched_counts *c) {
    c->waiting = s->waiting.n;
    c->running = s->running.n;
    c->idle = s->idle.n;
    c->preemptions = s->preemptions;
    c->prefix_hit_tokens = s->hit_tokens;
    c->prefix_query_tokens = s->query_tokens;
}
