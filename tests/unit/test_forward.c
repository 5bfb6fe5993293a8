/* The forward pass on small random (dummy) models: the ways of feeding the same tokens must
 * agree -- one whole prefill, chunked prefill, token-by-token decode through the paged cache,
 * several sequences in one varlen step, any block length -- and a TP group of N ranks (run
 * in-process, one thread per rank, through a test communicator) must give the TP = 1 logits.
 * The KV pool is memory addressed by block id: a sequence runs on any ids in range that no
 * allocator handed out, its KV lands in exactly those blocks' slots, and the block manager is
 * the only record of which ids are taken.  Agreement with HF transformers itself is tests/golden's job. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/block_manager.h"
#include "kernels/backend.h"
#include "tests/test_util.h"
#include "worker/comm.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/weights.h"

static tsr_model_config tiny_cfg(int64_t n_head, int64_t n_kv, int64_t head_dim) {
    tsr_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_name, sizeof c.model_name, "tiny");
    c.arch = TSR_ARCH_LLAMA;
    c.vocab_size = 96;
    c.d_model = 40;
    c.n_layer = 3;
    c.n_head = n_head;
    c.n_kv_head = n_kv;
    c.head_dim = head_dim;
    c.d_ff = 72;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000;
    c.max_position_embeddings = 32;
    c.rope_type = TSR_ROPE_DEFAULT;
    c.rope_factor = 1;
    c.tie_embeddings = true;
    c.bos_id = -1;
    c.eos_id = -1;
    return c;
}

static int32_t *rand_tokens(int64_t n, int64_t vocab, uint64_t seed) {
    int32_t *t = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
    return t;
}

static double rel_diff(const float *a, const float *b, int64_t n) {
    double m = 0, scale = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
        if (fabs(a[i]) > scale) scale = fabs(a[i]);
    }
    return m / scale;
}

/* All-position logits of `tokens` fed in chunks of `chunk` through a pool of block_len. */
static float *run_seq(tsr_model *m, const int32_t *tokens, int64_t n, int64_t chunk, int64_t block_len) {
    tsr_kv_pool kv;
    tsr_forward_state *fs;
    float *logits = malloc(sizeof(float) * (size_t)(n * m->cfg.vocab_size));
    tsr_block_manager *bm;
    CHECK(tsr_kv_pool_init_for_model(&kv, m, block_len, (n + block_len - 1) / block_len + 2) == TSR_OK);
    CHECK(tsr_bm_init(kv.n_blocks, block_len, &bm) == TSR_OK);
    CHECK(tsr_forward_state_init(m, NULL, &fs) == TSR_OK);
    tsr_kv_seq seq = {0};
    /* a first block taken by "someone else", so this sequence's ids do not start at 0 */
    int32_t other;
    CHECK(tsr_bm_alloc(bm, 1, &other) == TSR_OK);
    CHECK(tsr_bm_seq_reserve(bm, &seq, n) == TSR_OK);
    tsr_status st = tsr_forward_seq(fs, &kv, &seq, tokens, n, true, chunk, logits);
    CHECK_MSG(st == TSR_OK, "forward_seq: %s", tsr_last_error());
    CHECK(seq.n_tokens == n);
    tsr_bm_seq_release(bm, &seq);
    tsr_bm_counts bc;
    tsr_bm_get_counts(bm, &bc);
    CHECK(bc.free == bc.total - 1 && bc.active == 1 && tsr_bm_check(bm));
    tsr_bm_free(bm);
    tsr_forward_state_free(fs);
    tsr_kv_pool_free(&kv);
    return logits;
}

static void test_feeding_agrees(tsr_backend *be, const tsr_model_config *cfg, int64_t n, const char *what) {
    tsr_model *m;
    tsr_status st = tsr_model_init_dummy(cfg, be, NULL, 42, &m);
    CHECK_MSG(st == TSR_OK, "%s: %s", what, tsr_last_error());
    if (st != TSR_OK) return;
    int64_t V = cfg->vocab_size;
    int32_t *tok = rand_tokens(n, V, 7);
    float *whole = run_seq(m, tok, n, 1000, 64);
    float *chunked = run_seq(m, tok, n, 7, 64);
    float *decode = run_seq(m, tok, n, 1, 64);
    float *small_blocks = run_seq(m, tok, n, 5, 1);
    float *odd_blocks = run_seq(m, tok, n, 16, 3);
    double e1 = rel_diff(whole, chunked, n * V), e2 = rel_diff(whole, decode, n * V),
           e3 = rel_diff(whole, small_blocks, n * V), e4 = rel_diff(whole, odd_blocks, n * V);
    CHECK_MSG(e1 < 1e-5, "%s: chunked prefill vs whole: %g", what, e1);
    CHECK_MSG(e2 < 1e-5, "%s: decode vs whole prefill: %g", what, e2);
    CHECK_MSG(e3 < 1e-5, "%s: block_len 1 vs 64: %g", what, e3);
    CHECK_MSG(e4 < 1e-5, "%s: block_len 3 vs 64: %g", what, e4);
    /* the logits are not trivially equal: positions differ from each other */
    CHECK(rel_diff(whole, whole + V, V) > 1e-3);
    free(whole), free(chunked), free(decode), free(small_blocks), free(odd_blocks);

    /* three sequences in one varlen step == each alone */
    int32_t *a = rand_tokens(20, V, 11), *b = rand_tokens(9, V, 12), *c = rand_tokens(30, V, 13);
    float *ra = run_seq(m, a, 20, 1000, 4), *rb = run_seq(m, b, 9, 1000, 4), *rc = run_seq(m, c, 30, 1000, 4);
    tsr_kv_pool kv;
    tsr_block_manager *bm;
    tsr_forward_state *fs;
    CHECK(tsr_kv_pool_init_for_model(&kv, m, 4, 40) == TSR_OK);
    CHECK(tsr_bm_init(kv.n_blocks, 4, &bm) == TSR_OK);
    CHECK(tsr_forward_state_init(m, NULL, &fs) == TSR_OK);
    tsr_kv_seq sa = {0}, sb = {0}, sc = {0};
    /* history first: a has 12 cached, c has 29 cached, b none */
    CHECK(tsr_bm_seq_reserve(bm, &sa, 12) == TSR_OK && tsr_bm_seq_reserve(bm, &sc, 29) == TSR_OK);
    CHECK(tsr_forward_seq(fs, &kv, &sa, a, 12, false, 0, NULL) == TSR_OK);
    CHECK(tsr_forward_seq(fs, &kv, &sc, c, 29, false, 0, NULL) == TSR_OK);
    /* a table too short for what is fed is refused, and nothing is fed */
    CHECK(tsr_forward_seq(fs, &kv, &sa, a + 12, 8, false, 0, NULL) == TSR_ERR_INVALID_ARG && sa.n_tokens == 12);
    CHECK(tsr_bm_seq_reserve(bm, &sa, 20) == TSR_OK);
    CHECK(tsr_bm_seq_reserve(bm, &sb, 9) == TSR_OK);
    CHECK(tsr_bm_seq_reserve(bm, &sc, 30) == TSR_OK);
    tsr_seq_step steps[3] = {
        {a + 12, 8, 12, sa.blocks, sa.n_blocks},  /* chunked prefill after a prefix */
        {b, 9, 0, sb.blocks, sb.n_blocks},        /* fresh prefill */
        {c + 29, 1, 29, sc.blocks, sc.n_blocks},  /* decode */
    };
    float *out_last = malloc(sizeof(float) * 3 * (size_t)V), *out_all = malloc(sizeof(float) * 18 * (size_t)V);
    tsr_step step = {steps, 3, false};
    CHECK(tsr_forward(fs, &kv, &step, out_last) == TSR_OK);
    CHECK_MSG(rel_diff(ra + 19 * V, out_last, V) < 1e-5, "%s: batched seq a", what);
    CHECK_MSG(rel_diff(rb + 8 * V, out_last + V, V) < 1e-5, "%s: batched seq b", what);
    CHECK_MSG(rel_diff(rc + 29 * V, out_last + 2 * V, V) < 1e-5, "%s: batched seq c", what);
    /* the same step again with all_logits (the cache slots are simply rewritten) */
    step.all_logits = true;
    CHECK(tsr_forward(fs, &kv, &step, out_all) == TSR_OK);
    CHECK(rel_diff(ra + 12 * V, out_all, 8 * V) < 1e-5);
    CHECK(rel_diff(rb, out_all + 8 * V, 9 * V) < 1e-5);
    CHECK(rel_diff(rc + 29 * V, out_all + 17 * V, V) < 1e-5);

    /* bad steps are errors, not crashes */
    int32_t bad_tok = (int32_t)V;
    tsr_seq_step bs = {&bad_tok, 1, 0, sb.blocks, sb.n_blocks};
    tsr_step bstep = {&bs, 1, false};
    CHECK(tsr_forward(fs, &kv, &bstep, out_last) == TSR_ERR_INVALID_ARG);
    tsr_seq_step short_table = {b, 9, 0, sb.blocks, 1};
    bstep.seqs = &short_table;
    CHECK(tsr_forward(fs, &kv, &bstep, out_last) == TSR_ERR_INVALID_ARG);
    int32_t bad_block = (int32_t)kv.n_blocks;
    tsr_seq_step oob = {b, 1, 0, &bad_block, 1};
    bstep.seqs = &oob;
    CHECK(tsr_forward(fs, &kv, &bstep, out_last) == TSR_ERR_INVALID_ARG);
    /* running out of KV blocks */
    tsr_kv_seq big = {0};
    CHECK(tsr_bm_seq_reserve(bm, &big, 4 * 1000) == TSR_ERR_KV_FULL && big.n_blocks == 0);
    tsr_bm_seq_release(bm, &big);

    tsr_bm_seq_release(bm, &sa), tsr_bm_seq_release(bm, &sb), tsr_bm_seq_release(bm, &sc);
    tsr_bm_counts bc;
    tsr_bm_get_counts(bm, &bc);
    CHECK(bc.free == kv.n_blocks && bc.active == 0 && tsr_bm_check(bm));
    tsr_bm_free(bm);
    tsr_forward_state_free(fs);
    tsr_kv_pool_free(&kv);
    free(a), free(b), free(c), free(ra), free(rb), free(rc), free(out_last), free(out_all), free(tok);
    tsr_model_free(m);
}

/* The pool is memory addressed by block id: nothing hands ids out but the block manager, so a
 * sequence runs on ids no allocator gave it (the last block, then one in the middle), its K/V
 * land in exactly those blocks' slots, and its logits equal a run on the manager's ids. */
static void test_pool_by_id(tsr_backend *be) {
    tsr_model_config cfg = tiny_cfg(4, 2, 8);
    tsr_model *m;
    tsr_status st = tsr_model_init_dummy(&cfg, be, NULL, 42, &m);
    CHECK_MSG(st == TSR_OK, "pool by id: %s", tsr_last_error());
    if (st != TSR_OK) return;
    const int64_t bl = 4, nb = 8, n = 6, V = cfg.vocab_size, hd = cfg.head_dim;
    int32_t *tok = rand_tokens(n, V, 5);
    float *ref = run_seq(m, tok, n, 1000, bl), *logits = malloc(sizeof(float) * (size_t)(n * V));
    tsr_kv_pool kv;
    tsr_forward_state *fs;
    CHECK(be->dtype == TSR_F32);
    CHECK(tsr_kv_pool_init_for_model(&kv, m, bl, nb) == TSR_OK);
    CHECK(tsr_forward_state_init(m, NULL, &fs) == TSR_OK);
    /* the slots tile the pool in the order (layer, K/V, block, head), nothing between them */
    size_t slot = (size_t)(bl * hd) * sizeof(float), i = 0;
    bool tiled = true;
    for (int64_t l = 0; l < kv.n_layer; l++)
        for (int v = 0; v < 2; v++)
            for (int32_t b = 0; b < nb; b++)
                for (int64_t h = 0; h < kv.layout.n_kv_head; h++, i++)
                    tiled &= tsr_kv_pool_slot(&kv, l, v, b, h) == (char *)kv.data + i * slot;
    CHECK(tiled && i * slot == 2 * (size_t)kv.n_layer * kv.part_bytes);
    CHECK(tsr_kv_pool_k(&kv, 2) == tsr_kv_pool_slot(&kv, 2, 0, 0, 0));
    CHECK(tsr_kv_pool_v(&kv, 2) == tsr_kv_pool_slot(&kv, 2, 1, 0, 0));

    int32_t table[2] = {(int32_t)nb - 1, 3};
    tsr_kv_seq seq = {.blocks = table, .n_blocks = 2, .cap = 2, .n_tokens = 0};
    st = tsr_forward_seq(fs, &kv, &seq, tok, n, true, 0, logits);
    CHECK_MSG(st == TSR_OK, "pool by id: %s", tsr_last_error());
    CHECK_MSG(rel_diff(ref, logits, n * V) < 1e-5, "pool by id: logits differ from a run on other ids");
    /* tokens 0..3 sit in block nb - 1, tokens 4..5 in rows 0..1 of block 3; all else is zero */
    bool placed = true;
    for (int64_t l = 0; l < kv.n_layer; l++)
        for (int v = 0; v < 2; v++)
            for (int32_t b = 0; b < nb; b++)
                for (int64_t h = 0; h < kv.layout.n_kv_head; h++) {
                    const float *x = tsr_kv_pool_slot(&kv, l, v, b, h);
                    for (int64_t r = 0; r < bl; r++) {
                        bool nonzero = false;
                        for (int64_t d = 0; d < hd; d++) nonzero |= x[r * hd + d] != 0.0f;
                        placed &= nonzero == (b == nb - 1 || (b == 3 && r < 2));
                    }
                }
    CHECK_MSG(placed, "pool by id: K/V written outside the sequence's blocks");
    tsr_forward_state_free(fs);
    tsr_kv_pool_free(&kv);
    free(tok), free(ref), free(logits);
    tsr_model_free(m);
}

/* ---- an in-process TP group: one thread per rank, collectives through shared slots ---- */

typedef struct {
    int size;
    pthread_barrier_t bar;
    float *slots[8];
    int64_t slot_cap;
    pthread_mutex_t mu;
} tp_shared;

typedef struct {
    tp_shared *sh;
} tp_impl;

static void tp_slot(tp_shared *sh, int rank, int64_t n) {
    /* every rank grows its own slot; the barrier after publishes it */
    if (n > sh->slot_cap) {
        /* all ranks call with the same n; rank 0 grows everything between two barriers */
        pthread_barrier_wait(&sh->bar);
        if (rank == 0) {
            for (int r = 0; r < sh->size; r++) sh->slots[r] = realloc(sh->slots[r], sizeof(float) * (size_t)n);
            sh->slot_cap = n;
        }
        pthread_barrier_wait(&sh->bar);
    }
}

static tsr_status tp_allreduce(tsr_comm *c, void *buf, int64_t n, tsr_dtype dt) {
    tp_shared *sh = ((tp_impl *)c->impl)->sh;
    TSR_ASSERT(dt == TSR_F32);
    tp_slot(sh, c->rank, n);
    memcpy(sh->slots[c->rank], buf, sizeof(float) * (size_t)n);
    pthread_barrier_wait(&sh->bar);
    float *f = buf;
    for (int64_t i = 0; i < n; i++) {
        float s = 0; /* the same order on every rank: identical sums */
        for (int r = 0; r < sh->size; r++) s += sh->slots[r][i];
        f[i] = s;
    }
    pthread_barrier_wait(&sh->bar);
    return TSR_OK;
}

static tsr_status tp_allgather(tsr_comm *c, const void *send, void *recv, int64_t n, tsr_dtype dt) {
    tp_shared *sh = ((tp_impl *)c->impl)->sh;
    TSR_ASSERT(dt == TSR_F32);
    tp_slot(sh, c->rank, n);
    memcpy(sh->slots[c->rank], send, sizeof(float) * (size_t)n);
    pthread_barrier_wait(&sh->bar);
    for (int r = 0; r < sh->size; r++) memcpy((float *)recv + r * n, sh->slots[r], sizeof(float) * (size_t)n);
    pthread_barrier_wait(&sh->bar);
    return TSR_OK;
}

static void tp_free(tsr_comm *c) {
    free(c->impl);
    free(c);
}

static const tsr_comm_ops tp_ops = {"test-threads", tp_allreduce, tp_allgather, tp_free};

typedef struct {
    tp_shared *sh;
    int rank;
    const tsr_model_config *cfg;
    const int32_t *tokens;
    int64_t n;
    float *logits;          /* [n][vocab] */
    tsr_status st;
    size_t weight_bytes;
} tp_rank_arg;

static void *tp_rank_main(void *arg) {
    tp_rank_arg *a = arg;
    tsr_backend *be = tsr_backend_cpu_init(1);
    tsr_comm *comm = calloc(1, sizeof *comm);
    tp_impl *impl = calloc(1, sizeof *impl);
    impl->sh = a->sh;
    comm->ops = &tp_ops;
    comm->rank = a->rank;
    comm->size = a->sh->size;
    comm->impl = impl;
    tsr_load_opts lo = {a->rank, a->sh->size, false, false};
    tsr_model *m = NULL;
    a->st = tsr_model_init_dummy(a->cfg, be, &lo, 42, &m);
    if (a->st == TSR_OK) {
        a->weight_bytes = m->weight_bytes;
        tsr_kv_pool kv;
        tsr_block_manager *bm;   /* each rank's own: the same ids come out everywhere */
        tsr_forward_state *fs;
        a->st = tsr_kv_pool_init_for_model(&kv, m, 8, 16);
        TSR_ASSERT(a->st == TSR_OK);
        a->st = tsr_bm_init(16, 8, &bm);
        TSR_ASSERT(a->st == TSR_OK);
        a->st = tsr_forward_state_init(m, comm, &fs);
        TSR_ASSERT(a->st == TSR_OK);
        tsr_kv_seq seq = {0};
        /* prefill in two chunks, then decode the rest token by token */
        int64_t V = a->cfg->vocab_size, p1 = a->n - 6;
        a->st = tsr_bm_seq_reserve(bm, &seq, a->n);
        if (a->st == TSR_OK) a->st = tsr_forward_seq(fs, &kv, &seq, a->tokens, p1, true, 9, a->logits);
        for (int64_t i = p1; i < a->n && a->st == TSR_OK; i++)
            a->st = tsr_forward_seq(fs, &kv, &seq, a->tokens + i, 1, false, 0, a->logits + i * V);
        tsr_bm_seq_release(bm, &seq);
        tsr_bm_free(bm);
        tsr_forward_state_free(fs);
        tsr_kv_pool_free(&kv);
        tsr_model_free(m);
    }
    tsr_comm_free(comm);
    tsr_backend_free(be);
    return NULL;
}

static void test_tp(const tsr_model_config *cfg, int size, const char *what) {
    int64_t n = 30, V = cfg->vocab_size;
    int32_t *tok = rand_tokens(n, V, 99);
    tp_shared sh;
    memset(&sh, 0, sizeof sh);
    float *ref = NULL;
    size_t ref_bytes = 0;
    for (int round = 0; round < 2; round++) {
        int sz = round == 0 ? 1 : size;
        sh.size = sz;
        sh.slot_cap = 0; /* slots of ranks the previous round did not have are grown again */
        pthread_barrier_init(&sh.bar, NULL, (unsigned)sz);
        pthread_t th[8];
        tp_rank_arg args[8];
        for (int r = 0; r < sz; r++) {
            args[r] = (tp_rank_arg){&sh, r, cfg, tok, n, malloc(sizeof(float) * (size_t)(n * V)), TSR_OK, 0};
            pthread_create(&th[r], NULL, tp_rank_main, &args[r]);
        }
        for (int r = 0; r < sz; r++) pthread_join(th[r], NULL);
        pthread_barrier_destroy(&sh.bar);
        for (int r = 0; r < sz; r++) CHECK_MSG(args[r].st == TSR_OK, "%s tp=%d rank %d failed", what, sz, r);
        if (round == 0) {
            ref = args[0].logits;
            ref_bytes = args[0].weight_bytes;
        } else {
            for (int r = 0; r < sz; r++) {
                double e = rel_diff(ref, args[r].logits, n * V);
                CHECK_MSG(e < 1e-5, "%s: tp=%d rank %d logits differ from tp=1 by %g", what, sz, r, e);
                /* each rank holds well under the whole model (embeddings are replicated) */
                CHECK_MSG(args[r].weight_bytes < ref_bytes, "%s: rank %d holds %zu bytes, tp=1 %zu", what, r,
                          args[r].weight_bytes, ref_bytes);
                free(args[r].logits);
            }
        }
    }
    for (int r = 0; r < 8; r++) free(sh.slots[r]);
    free(ref);
    free(tok);
}

/* Whatever split the plan chooses (even, or balanced uneven), the shards must partition the
 * query heads, d_ff and the vocabulary, and each rank's query heads must use only its own KV
 * heads; a group that cannot be split is an error that names the dimension. */
static void check_plan_partitions(const tsr_model_config *c, int size) {
    int64_t next_head = 0, next_ff = 0, next_vocab = 0, group = c->n_head / c->n_kv_head;
    for (int r = 0; r < size; r++) {
        tsr_shard sh;
        tsr_status st = tsr_shard_plan(c, r, size, &sh);
        CHECK_MSG(st == TSR_OK, "plan %lld heads / %lld kv, tp=%d rank %d: %s", (long long)c->n_head,
                  (long long)c->n_kv_head, size, r, tsr_last_error());
        if (st != TSR_OK) return;
        CHECK(sh.head0 == next_head && sh.n_head >= 1);
        CHECK(sh.ff0 == next_ff && sh.d_ff >= 1);
        CHECK(sh.vocab0 == next_vocab && sh.vocab >= 1);
        next_head += sh.n_head, next_ff += sh.d_ff, next_vocab += sh.vocab;
        /* GQA within the rank: local head i uses local KV head i / (n_head_l / n_kv_l) */
        CHECK(sh.n_kv_head >= 1 && sh.n_head % sh.n_kv_head == 0);
        for (int64_t i = 0; i < sh.n_head; i++)
            CHECK((sh.head0 + i) / group == sh.kv_head0 + i / (sh.n_head / sh.n_kv_head));
    }
    CHECK(next_head == c->n_head && next_ff == c->d_ff && next_vocab == c->vocab_size);
}

static void test_shard_plan(void) {
    tsr_model_config c = tiny_cfg(9, 3, 64);
    c.d_model = 576, c.d_ff = 1536, c.vocab_size = 49152;
    tsr_shard sh;
    CHECK(tsr_shard_plan(&c, 0, 1, &sh) == TSR_OK && sh.n_head == 9 && sh.n_kv_head == 3);
    CHECK(tsr_shard_plan(&c, 2, 3, &sh) == TSR_OK && sh.n_head == 3 && sh.head0 == 6 && sh.n_kv_head == 1 &&
          sh.kv_head0 == 2 && sh.d_ff == 512 && sh.vocab0 == 2 * 16384);
    check_plan_partitions(&c, 3);
    for (int size = 2; size <= 9; size++)
        if (tsr_shard_plan(&c, 0, size, &sh) == TSR_OK) check_plan_partitions(&c, size);
        else CHECK_MSG(strstr(tsr_last_error(), "tp") || strstr(tsr_last_error(), "tensor parallel"),
                       "tp=%d error does not say why: %s", size, tsr_last_error());
    /* more ranks than heads can never work */
    CHECK(tsr_shard_plan(&c, 0, 10, &sh) == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "n_head"));
    c = tiny_cfg(8, 2, 8);
    c.d_ff = 64;
    /* KV heads replicated: 4 ranks share 2 KV heads */
    CHECK(tsr_shard_plan(&c, 1, 4, &sh) == TSR_OK && sh.n_kv_head == 1 && sh.kv_head0 == 0 && sh.head0 == 2);
    CHECK(tsr_shard_plan(&c, 2, 4, &sh) == TSR_OK && sh.kv_head0 == 1);
    check_plan_partitions(&c, 4);
    check_plan_partitions(&c, 8);
    /* the table: o_proj and down_proj are row-parallel, q/k/v/gate/up/lm_head column-parallel */
    CHECK(tsr_shard_rule_of(TSR_W_O)->split == TSR_SPLIT_IN && tsr_shard_rule_of(TSR_W_DOWN)->split == TSR_SPLIT_IN);
    CHECK(tsr_shard_rule_of(TSR_W_K)->unit == TSR_UNIT_KV_HEAD && tsr_shard_rule_of(TSR_W_LM_HEAD)->unit == TSR_UNIT_VOCAB);
    CHECK(tsr_shard_rule_of(TSR_W_ATTN_NORM)->split == TSR_SPLIT_NONE);
}

int main(void) {
    tsr_backend *be = tsr_backend_cpu_init(2);
    CHECK(be != NULL);
    tsr_model_config c = tiny_cfg(4, 4, 10);
    test_feeding_agrees(be, &c, 45, "MHA");
    c = tiny_cfg(6, 2, 8);
    c.attn_bias = true;
    c.tie_embeddings = false;
    test_feeding_agrees(be, &c, 45, "GQA + qkv bias + untied");
    c = tiny_cfg(5, 1, 16);
    /* Dynamic NTK rescales the base by the length a step reaches, so past max_pos (32) the
     * logits depend on how the tokens were fed (as in HF); within it they must not. */
    c.rope_type = TSR_ROPE_DYNAMIC, c.rope_factor = 2;
    test_feeding_agrees(be, &c, 31, "MQA + dynamic NTK within max_pos");
    c = tiny_cfg(4, 2, 12);
    c.rope_type = TSR_ROPE_LLAMA3, c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4;
    c.rope_original_max_pos = 16;
    test_feeding_agrees(be, &c, 45, "llama3 rope");
    test_pool_by_id(be);
    tsr_backend_free(be);

    test_shard_plan();
    c = tiny_cfg(8, 4, 8);
    c.d_ff = 64, c.attn_bias = true;
    test_tp(&c, 2, "GQA 8/4 tp=2 (qkv bias)");
    c.tie_embeddings = false;
    test_tp(&c, 4, "GQA 8/4 tp=4 (untied)");
    c = tiny_cfg(8, 2, 8);
    c.d_ff = 64;
    test_tp(&c, 4, "GQA 8/2 tp=4 (KV heads replicated)");
    c = tiny_cfg(6, 3, 8);
    c.d_ff = 63;
    test_tp(&c, 3, "GQA 6/3 tp=3");
    /* SmolLM2's head layout (9 heads, 3 KV heads) on 2 ranks, where the plan splits unevenly */
    c = tiny_cfg(9, 3, 8);
    c.d_ff = 64, c.vocab_size = 97;
    tsr_shard sh;
    if (tsr_shard_plan(&c, 0, 2, &sh) == TSR_OK) test_tp(&c, 2, "GQA 9/3 tp=2 (uneven)");
    return tsr_test_finish();
}
