/* The layer loop (see forward.h): the only place that knows the order of the ops, written
 * against the backend table and the communicator so TP = 1 and TP = N, CPU and GPU, run the
 * same code. */
#include "worker/forward.h"
#include "worker/group.h"
#include "worker/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/knobs.h"
#include "common/log.h"

static inline void *tsr__at(void *p, int64_t elems, size_t es) { return (char *)p + (size_t)elems * es; }

/* The wtype a backend's dense buffers hold. */
static tsr_wtype tsr__dense_wtype(const tsr_backend *be) {
    return be->dtype == TSR_F32 ? TSR_WTYPE_F32 : be->dtype == TSR_F16 ? TSR_WTYPE_F16 : TSR_WTYPE_BF16;
}

/* out[t][0 .. w->rows) (row stride ldo) = x[t] @ W^T, part by part (model.h tsr_wmat).  One dense
 * part of the backend's type writing a packed output is the plain matmul every backend has. */
static void tsr__mm(tsr_backend *be, void *out, int64_t ldo, const void *x, const tsr_wmat *w, int64_t n_tok) {
    const tsr_backend_ops *ops = be->ops;
    if (w->n_parts == 1 && w->part[0].type == tsr__dense_wtype(be) && ldo == w->rows) {
        ops->matmul(be, out, x, w->part[0].data, n_tok, w->rows, w->cols);
        return;
    }
    size_t es = tsr_dtype_size(be->dtype);
    int64_t off = 0;
    for (int i = 0; i < w->n_parts; i++) {
        ops->matmul_w(be, (char *)out + (size_t)off * es, ldo, x, &w->part[i], n_tok);
        off += w->part[i].rows;
    }
}

void tsr_forward_set_observer(tsr_forward_state *st,
                              void (*fn)(void *user, int64_t layer, int what, const float *x, int64_t n_tok,
                                         int64_t ld, int64_t dim),
                              void *user) {
    st->obs.fn = fn;
    st->obs.user = user;
}

/* Hands x [n_tok][ld] (device, be->dtype) to the observer as host f32. */
static tsr_status tsr__observe(tsr_forward_state *st, int64_t layer, tsr_obs_point what, const void *x, int64_t n_tok,
                               int64_t ld, int64_t dim) {
    tsr_backend *be = st->model->be;
    const float *h = x;
    if (!be->ops->host_memory || be->dtype != TSR_F32) {
        if (n_tok * ld > st->obs.host_cap) {
            float *p = realloc(st->obs.host, sizeof(float) * (size_t)(n_tok * ld));
            if (!p) return tsr_errorf(TSR_ERR_OOM, "out of memory observing activations");
            st->obs.host = p, st->obs.host_cap = n_tok * ld;
        }
        if (be->ops->download_f32) be->ops->download_f32(be, st->obs.host, x, n_tok * ld);
        else be->ops->download(be, st->obs.host, x, sizeof(float) * (size_t)(n_tok * ld));
        h = st->obs.host;
    }
    st->obs.fn(st->obs.user, layer, (int)what, h, n_tok, ld, dim);
    return TSR_OK;
}

static int64_t tsr__qkv_dim(const tsr_model *m) {
    return (m->shard.n_head + 2 * m->shard.n_kv_head) * m->cfg.head_dim;
}

tsr_status tsr_forward_state_init(tsr_model *m, tsr_comm *comm, tsr_forward_state **out) {
    *out = NULL;
    tsr_forward_state *st = calloc(1, sizeof *st);
    if (!st) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    st->model = m;
    if (!comm) {
        comm = tsr_comm_single_init();
        if (!comm) {
            free(st);
            return tsr_errorf(TSR_ERR_OOM, "out of memory");
        }
        st->own_comm = true;
    }
    if (comm->size != m->shard.size || comm->rank != m->shard.rank) {
        if (st->own_comm) tsr_comm_free(comm);
        free(st);
        return tsr_errorf(TSR_ERR_INVALID_ARG, "communicator is rank %d of %d but the model was loaded for rank %d of %d",
                          comm->rank, comm->size, m->shard.rank, m->shard.size);
    }
    st->comm = comm;
    const tsr_knobs *knobs = tsr_knobs_get();
    st->host_sampling = knobs->host_sampling;
    const char *fi = knobs->fault_inject;   /* test-only (forward.h) */
    for (int k = 0; fi && *fi && k < 4;) {
        long long n = 0;
        int at = -1;
        if (sscanf(fi, "step_alloc:%lld@%d", &n, &at) >= 1 && n > 0 && (at < 0 || at == comm->rank)) {
            st->fault_steps[k++] = n;
            TSR_LOGW("TESSERA_FAULT_INJECT: step %lld's allocation will fail on rank %d (a test hook)", n, comm->rank);
        }
        fi = strchr(fi, ',');
        if (fi) fi++;
    }
    *out = st;
    return TSR_OK;
}

static void tsr__free_acts(tsr_forward_state *st) {
    tsr_backend *be = st->model->be;
    void **bufs[] = {&st->h, &st->xn, &st->qkv, &st->attn, &st->proj, &st->gu, &st->act};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        be->ops->dfree(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    st->cap_tok = 0;
}

static void tsr__free_outs(tsr_forward_state *st) {
    tsr_backend *be = st->model->be;
    be->ops->dfree(be, st->rows_out);
    be->ops->dfree(be, st->logits);
    be->ops->dfree(be, st->gather);
    st->rows_out = st->logits = NULL;
    st->gather = NULL;
    st->cap_out = 0;
}

void tsr_forward_state_free(tsr_forward_state *st) {
    if (!st) return;
    tsr__free_acts(st);
    tsr__free_outs(st);
    st->model->be->ops->dfree(st->model->be, st->ints);
    free(st->ints_host);
    tsr_sampler_free(st->sampler);
    free(st->host_logits);
    free(st->sample_reqs);
    free(st->sample_outs);
    free(st->sample_ids);
    free(st->obs.host);
    if (st->own_comm) tsr_comm_free(st->comm);
    free(st);
}

static tsr_status tsr__alloc(tsr_backend *be, void **p, int64_t elems, size_t es) {
    *p = be->ops->alloc(be, (size_t)elems * es);
    if (!*p)
        return tsr_errorf(TSR_ERR_OOM, "out of %s memory for activations (%lld elements)", be->ops->name,
                          (long long)elems);
    return TSR_OK;
}

/* Grows the activation buffers to n_tok rows and the output buffers to n_out rows. */
static tsr_status tsr__ensure(tsr_forward_state *st, int64_t n_tok, int64_t n_out) {
    tsr_model *m = st->model;
    tsr_backend *be = m->be;
    size_t es = tsr_dtype_size(be->dtype);
    int64_t d = m->cfg.d_model;
    if (n_tok > st->cap_tok) {
        tsr__free_acts(st);
        int64_t cap = n_tok < 16 ? 16 : n_tok;
        tsr_status s = TSR_OK;
        if (s == TSR_OK) s = tsr__alloc(be, &st->h, cap * d, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->xn, cap * d, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->qkv, cap * tsr__qkv_dim(m), es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->attn, cap * m->shard.n_head * m->cfg.head_dim, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->proj, cap * d, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->gu, cap * 2 * m->shard.d_ff, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->act, cap * m->shard.d_ff, es);
        if (s != TSR_OK) {
            tsr__free_acts(st);
            return s;
        }
        st->cap_tok = cap;
    }
    if (n_out > st->cap_out) {
        tsr__free_outs(st);
        int64_t cap = n_out < 4 ? 4 : n_out;
        tsr_status s = tsr__alloc(be, &st->rows_out, cap * d, es);
        if (s == TSR_OK) s = tsr__alloc(be, &st->logits, cap * m->shard.vocab_pad, es);
        if (s == TSR_OK && m->shard.size > 1)
            s = tsr__alloc(be, (void **)&st->gather, cap * m->shard.vocab_pad * m->shard.size, es);
        if (s != TSR_OK) {
            tsr__free_outs(st);
            return s;
        }
        st->cap_out = cap;
    }
    return TSR_OK;
}

static tsr_status tsr__ensure_ints(tsr_forward_state *st, int64_t n) {
    if (n <= st->ints_cap) return TSR_OK;
    tsr_backend *be = st->model->be;
    be->ops->dfree(be, st->ints);
    free(st->ints_host);
    st->ints = NULL;
    st->ints_cap = 0;
    int64_t cap = n < 1024 ? 1024 : n * 2;
    st->ints_host = malloc(sizeof(int32_t) * (size_t)cap);
    st->ints = be->ops->alloc(be, sizeof(int32_t) * (size_t)cap);
    if (!st->ints_host || !st->ints) return tsr_errorf(TSR_ERR_OOM, "out of memory for the step's index arrays");
    st->ints_cap = cap;
    return TSR_OK;
}

/* Everything a user-facing plan can get wrong is checked before any state changes. */
static tsr_status tsr__validate(const tsr_forward_state *st, const tsr_kv_pool *kv, const tsr_step *step) {
    const tsr_model *m = st->model;
    if (!step || step->n_seq < 1) return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: a step needs at least one sequence");
    if (kv->layout.n_kv_head != m->shard.n_kv_head || kv->layout.head_dim != m->cfg.head_dim ||
        kv->n_layer != m->cfg.n_layer)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: the KV pool was not made for this model");
    for (int64_t s = 0; s < step->n_seq; s++) {
        const tsr_seq_step *q = &step->seqs[s];
        if (q->n_new < 1 || q->n_past < 0 || !q->tokens)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: sequence %lld has %lld new tokens after %lld", (long long)s,
                              (long long)q->n_new, (long long)q->n_past);
        int64_t ctx = q->n_past + q->n_new;
        if (ctx > INT32_MAX) return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: sequence %lld is too long", (long long)s);
        int64_t need = (ctx + kv->layout.block_len - 1) / kv->layout.block_len;
        if (q->n_blocks < need || !q->block_table)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: sequence %lld needs %lld KV blocks for %lld tokens, has %lld",
                              (long long)s, (long long)need, (long long)ctx, (long long)q->n_blocks);
        /* a model windowed on every layer may have its leading blocks released (-1) once every
         * query of this step is past them (coordinator/scheduler.h, window) */
        const int64_t w = m->cfg.sliding_window > 0 && m->cfg.window_layer0 == 0 ? m->cfg.sliding_window : 0;
        const int64_t gone = w > 0 && q->n_past - w + 1 > 0 ? (q->n_past - w + 1) / kv->layout.block_len : 0;
        for (int64_t b = 0; b < need; b++)
            if ((q->block_table[b] < 0 && !(b < gone && q->block_table[b] == -1)) || q->block_table[b] >= kv->n_blocks)
                return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: sequence %lld: block id %d out of range [0, %lld)",
                                  (long long)s, q->block_table[b], (long long)kv->n_blocks);
        for (int64_t i = 0; i < q->n_new; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= m->cfg.vocab_size)
                return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: token id %d out of range [0, %lld)", q->tokens[i],
                                  (long long)m->cfg.vocab_size);
    }
    return TSR_OK;
}

static bool tsr__fault_now(const tsr_forward_state *st) {
    for (int k = 0; k < 4; k++)
        if (st->fault_steps[k] == st->n_steps) return true;
    return false;
}

/* The step.  want: compute the LM head; logits (host) NULL with want: leave them in st->logits
 * (TP == 1 only, for the device sampler). */
static tsr_status tsr__run_ops(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step, bool want,
                               float *logits);

/* A backend op that could not do its work (backend.h take_error) fails the step; a device
 * stream stuck past its deadline means a peer stopped answering: the group is broken. */
static tsr_status tsr__backend_error(tsr_forward_state *st) {
    tsr_backend *be = st->model->be;
    tsr_status s = be->ops->take_error ? be->ops->take_error(be) : TSR_OK;
    if (s == TSR_ERR_COMM) return tsr__group_fail("rank %d: %s", st->comm->rank, tsr_last_error());
    return s;
}

static tsr_status tsr__run(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step, bool want, float *logits) {
    tsr_status s = tsr__run_ops(st, kv, step, want, logits);
    tsr_status b = tsr__backend_error(st);
    return s != TSR_OK ? s : b;
}

static tsr_status tsr__run_ops(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step, bool want,
                               float *logits) {
    TSR_TRY(tsr__validate(st, kv, step));
    tsr_model *m = st->model;
    const tsr_model_config *c = &m->cfg;
    tsr_backend *be = m->be;
    const tsr_backend_ops *ops = be->ops;
    size_t es = tsr_dtype_size(be->dtype);

    /* ---- the step's index arrays ---- */
    int64_t n_seq = step->n_seq, n_tok = 0, max_ctx = 0, max_blocks = 1;
    for (int64_t s = 0; s < n_seq; s++) {
        const tsr_seq_step *q = &step->seqs[s];
        int64_t ctx = q->n_past + q->n_new, nb = (ctx + kv->layout.block_len - 1) / kv->layout.block_len;
        n_tok += q->n_new;
        if (ctx > max_ctx) max_ctx = ctx;
        if (nb > max_blocks) max_blocks = nb;
    }
    int64_t n_out = step->all_logits ? n_tok : n_seq;
    int64_t n_ints = 2 * n_tok + 2 * n_seq + 1 + n_out + n_seq * max_blocks;
    /* Memory first, then the plan goes out (rank 0), then every rank agrees it can run the
     * step: no collective of a step starts unless all ranks will make it. */
    st->n_steps++;
    tsr_status ok = TSR_OK;
    if (st->fail_next) {
        st->fail_next = false;
        ok = TSR_ERR_OOM;   /* the executor left the message */
    } else if (tsr__fault_now(st)) {
        ok = tsr_errorf(TSR_ERR_OOM, "out of %s memory for the step's activations (injected by TESSERA_FAULT_INJECT)",
                        be->ops->name);
    }
    if (ok == TSR_OK) ok = tsr__ensure_ints(st, n_ints);
    if (ok == TSR_OK) ok = tsr__ensure(st, n_tok, want ? n_out : 0);
    if (st->on_step) {
        TSR_TRY(ok);   /* rank 0: a step it cannot run is never sent */
        TSR_TRY(st->on_step(st->on_step_ctx, step, want));
    }
    if (st->on_agree) ok = st->on_agree(st->on_agree_ctx, ok);
    TSR_TRY(ok);
    int32_t *hi = st->ints_host;
    int32_t *h_tok = hi, *h_pos = h_tok + n_tok, *h_qs = h_pos + n_tok, *h_ctx = h_qs + n_seq + 1,
            *h_out = h_ctx + n_seq, *h_bt = h_out + n_out;
    int64_t t = 0;
    for (int64_t s = 0; s < n_seq; s++) {
        const tsr_seq_step *q = &step->seqs[s];
        h_qs[s] = (int32_t)t;
        h_ctx[s] = (int32_t)(q->n_past + q->n_new);
        for (int64_t i = 0; i < q->n_new; i++, t++) {
            /* vocab-parallel embedding: this rank's row, or -1 (zeros) for another rank's token */
            int32_t tk = q->tokens[i];
            h_tok[t] = tk >= m->shard.vocab0 && tk < m->shard.vocab0 + m->shard.vocab ? tk - (int32_t)m->shard.vocab0 : -1;
            h_pos[t] = (int32_t)(q->n_past + i);
        }
        int64_t nb = (h_ctx[s] + kv->layout.block_len - 1) / kv->layout.block_len;
        for (int64_t b = 0; b < max_blocks; b++) h_bt[s * max_blocks + b] = b < nb ? q->block_table[b] : 0;
    }
    h_qs[n_seq] = (int32_t)n_tok;
    if (step->all_logits)
        for (int64_t i = 0; i < n_tok; i++) h_out[i] = (int32_t)i;
    else
        for (int64_t s = 0; s < n_seq; s++) h_out[s] = h_qs[s + 1] - 1;
    ops->upload(be, st->ints, hi, sizeof(int32_t) * (size_t)n_ints);
    const int32_t *d_tok = st->ints, *d_out = st->ints + (h_out - hi);
    tsr_attn_batch b = {
        .n_seq = n_seq,
        .n_tok = n_tok,
        .max_ctx = max_ctx,
        .max_blocks = max_blocks,
        .q_start = st->ints + (h_qs - hi),
        .ctx_len = st->ints + (h_ctx - hi),
        .positions = st->ints + (h_pos - hi),
        .block_tables = st->ints + (h_bt - hi),
    };

    /* ---- the layers ---- */
    const int64_t d = c->d_model, hd = c->head_dim, nq = m->shard.n_head, nkv = m->shard.n_kv_head;
    const int64_t qkv_dim = tsr__qkv_dim(m), ff = m->shard.d_ff;
    const float eps = c->norm_eps, scale = 1.0f / sqrtf((float)hd);
    tsr_rope_params rope = tsr_model_rope_params(c);
    rope.interleaved = m->qk_interleaved;
    void *q = st->qkv, *k = tsr__at(st->qkv, nq * hd, es), *v = tsr__at(st->qkv, (nq + nkv) * hd, es);
    const int64_t vl = m->shard.vocab;

    /* A decode step (one new token per sequence) is recorded once as a CUDA graph and replayed
     * (backend.h graph_*): every kernel reads the step's values from st->ints, so a recording
     * stays valid while the shapes and buffers it baked in are the same -- the key says which. */
    int64_t gkey = 0;
    bool replayed = false, recording = false;
    if (ops->graph_replay && n_tok == n_seq && !st->obs.fn) {
        uint64_t h = 1469598103934665603ull;
        const uint64_t parts[] = {(uint64_t)n_seq, (uint64_t)max_blocks, (uint64_t)want,
                                  (uint64_t)(uintptr_t)m, (uint64_t)(uintptr_t)kv->data, (uint64_t)(uintptr_t)st->ints,
                                  (uint64_t)(uintptr_t)st->h, (uint64_t)(uintptr_t)st->xn,
                                  (uint64_t)(uintptr_t)st->qkv, (uint64_t)(uintptr_t)st->attn,
                                  (uint64_t)(uintptr_t)st->proj, (uint64_t)(uintptr_t)st->gu,
                                  (uint64_t)(uintptr_t)st->act, (uint64_t)(uintptr_t)st->rows_out,
                                  (uint64_t)(uintptr_t)st->logits, (uint64_t)(uintptr_t)st->comm};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) h = (h ^ parts[i]) * 1099511628211ull;
        gkey = (int64_t)(h >> 1);
        replayed = ops->graph_replay(be, gkey);
        if (!replayed) recording = ops->graph_begin(be, gkey);
    }

    if (!replayed) {
    if (m->w.tok_embd.part[0].type == tsr__dense_wtype(be)) ops->get_rows(be, st->h, m->w.tok_embd.part[0].data, d_tok, n_tok, d);
    else ops->get_rows_w(be, st->h, &m->w.tok_embd.part[0], d_tok, n_tok);
    if (m->shard.size > 1) TSR_TRY(st->comm->ops->allreduce_sum(st->comm, st->h, n_tok * d, be->dtype));
    for (int64_t l = 0; l < c->n_layer; l++) {
        const tsr_layer_weights *w = &m->w.layers[l];
        b.window = tsr_model_layer_window(c, l); /* sliding-window layers (Mistral, Qwen2) */
        if (l == 0) ops->rmsnorm(be, st->xn, st->h, w->attn_norm, n_tok, d, eps);
        else ops->add_rmsnorm(be, st->h, st->proj, st->xn, w->attn_norm, n_tok, d, eps);

        if (st->obs.fn) TSR_TRY(tsr__observe(st, l, TSR_OBS_QKV_IN, st->xn, n_tok, d, d));
        tsr__mm(be, st->qkv, qkv_dim, st->xn, &w->wqkv, n_tok);
        if (w->bqkv) ops->add_bias(be, st->qkv, w->bqkv, n_tok, qkv_dim, qkv_dim);
        void *kc = tsr_kv_pool_k(kv, l), *vc = tsr_kv_pool_v(kv, l);
        const tsr_kv_layout *kvl = tsr_kv_pool_layout(kv, l);   /* quantized KV: this layer's static params */
        if (ops->rope_kv_write) {
            ops->rope_kv_write(be, q, k, v, qkv_dim, nq, &b, &rope, kc, vc, kvl);
        } else {
            ops->rope(be, q, k, qkv_dim, nq, nkv, hd, &b, &rope);
            ops->kv_write(be, kc, vc, kvl, k, v, qkv_dim, &b);
        }
        if (st->obs.fn) {
            TSR_TRY(tsr__observe(st, l, TSR_OBS_K, k, n_tok, qkv_dim, nkv * hd));
            TSR_TRY(tsr__observe(st, l, TSR_OBS_V, v, n_tok, qkv_dim, nkv * hd));
        }
        ops->attention(be, st->attn, q, qkv_dim, kc, vc, kvl, nq, &b, scale);
        if (st->obs.fn) TSR_TRY(tsr__observe(st, l, TSR_OBS_O_IN, st->attn, n_tok, nq * hd, nq * hd));
        tsr__mm(be, st->proj, d, st->attn, &w->wo, n_tok);
        TSR_TRY(st->comm->ops->allreduce_sum(st->comm, st->proj, n_tok * d, be->dtype));
        if (w->bo) ops->add_bias(be, st->proj, w->bo, n_tok, d, d);

        ops->add_rmsnorm(be, st->h, st->proj, st->xn, w->ffn_norm, n_tok, d, eps);
        if (st->obs.fn) TSR_TRY(tsr__observe(st, l, TSR_OBS_GATE_UP_IN, st->xn, n_tok, d, d));
        if (ops->matmul_silu && w->w_gate_up.n_parts == 1 && w->w_gate_up.part[0].type == tsr__dense_wtype(be)) {
            ops->matmul_silu(be, st->act, st->gu, st->xn, w->w_gate_up.part[0].data, n_tok, ff, d);
        } else {
            tsr__mm(be, st->gu, 2 * ff, st->xn, &w->w_gate_up, n_tok);
            ops->silu_mul(be, st->act, st->gu, n_tok, ff);
        }
        if (st->obs.fn) TSR_TRY(tsr__observe(st, l, TSR_OBS_DOWN_IN, st->act, n_tok, ff, ff));
        tsr__mm(be, st->proj, d, st->act, &w->w_down, n_tok);
        TSR_TRY(st->comm->ops->allreduce_sum(st->comm, st->proj, n_tok * d, be->dtype));
    }
    if (want) {
        /* ---- the LM head on the wanted rows ---- */
        ops->add_rmsnorm(be, st->h, st->proj, st->xn, m->w.out_norm, n_tok, d, eps);
        ops->get_rows(be, st->rows_out, st->xn, d_out, n_out, d);
        tsr__mm(be, st->logits, vl, st->rows_out, &m->w.lm_head, n_out);
    }
    if (recording) ops->graph_end(be, gkey);
    }
    if (!want) {
        ops->synchronize(be);
        return TSR_OK;
    }
    if (!logits) {
        TSR_ASSERT(m->shard.size == 1);
        return TSR_OK;   /* they stay in st->logits for the device sampler */
    }

    /* logits to the host as f32 (a half-precision backend converts on the device) */
    if (m->shard.size == 1) {
        if (ops->download_f32) ops->download_f32(be, logits, st->logits, n_out * vl);
        else ops->download(be, logits, st->logits, sizeof(float) * (size_t)(n_out * vl));
        return TSR_OK;
    }
    if (ops->download_f32) {
        /* device gather: one conversion + copy of the whole [tp][n_out * vocab_pad], then the
         * interleave on the host */
        int64_t per = n_out * m->shard.vocab_pad;
        TSR_TRY(st->comm->ops->allgather(st->comm, st->logits, st->gather, per, be->dtype));
        float *all = malloc(sizeof(float) * (size_t)(per * m->shard.size));
        if (!all) return tsr_errorf(TSR_ERR_OOM, "out of memory gathering logits");
        ops->download_f32(be, all, st->gather, per * m->shard.size);
        for (int r = 0; r < m->shard.size; r++) {
            int64_t v0, vr;
            tsr_shard_split(c->vocab_size, r, m->shard.size, &v0, &vr);
            for (int64_t i = 0; i < n_out; i++)
                memcpy(logits + i * c->vocab_size + v0, all + r * per + i * vr, sizeof(float) * (size_t)vr);
        }
        free(all);
        return TSR_OK;
    }
    TSR_ASSERT(be->dtype == TSR_F32);
    /* vocab-parallel: gather [tp][n_out * vocab_pad] (rank r's rows packed [n_out][vocab_r]
     * at the front of its part), then interleave into [n_out][vocab] */
    TSR_TRY(st->comm->ops->allgather(st->comm, st->logits, st->gather, n_out * m->shard.vocab_pad, be->dtype));
    for (int r = 0; r < m->shard.size; r++) {
        int64_t v0, vr;
        tsr_shard_split(c->vocab_size, r, m->shard.size, &v0, &vr);
        for (int64_t i = 0; i < n_out; i++)
            ops->download(be, logits + i * c->vocab_size + v0,
                          (float *)st->gather + r * n_out * m->shard.vocab_pad + i * vr, sizeof(float) * (size_t)vr);
    }
    return TSR_OK;
}

tsr_status tsr_forward(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step, float *logits) {
    return tsr__run(st, kv, step, logits != NULL, logits);
}

static tsr_status tsr__ensure_sample(tsr_forward_state *st, int64_t n) {
    int64_t V = st->model->cfg.vocab_size;
    if (!st->sampler) TSR_TRY(tsr_sampler_init(V, &st->sampler));
    if (n <= st->cap_sample) return TSR_OK;
    int64_t cap = n < 8 ? 8 : n;
    free(st->host_logits);
    free(st->sample_reqs);
    free(st->sample_outs);
    free(st->sample_ids);
    st->host_logits = malloc(sizeof(float) * (size_t)(cap * V));
    st->sample_reqs = malloc(sizeof(tsr_sample_req) * (size_t)cap);
    st->sample_outs = malloc(sizeof(tsr_sample_out) * (size_t)cap);
    st->sample_ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!st->host_logits || !st->sample_reqs || !st->sample_outs || !st->sample_ids) {
        st->cap_sample = 0;
        return tsr_errorf(TSR_ERR_OOM, "out of memory for sampling %lld rows", (long long)n);
    }
    st->cap_sample = cap;
    return TSR_OK;
}

/* The host sampler on rows of f32 logits [n_seq][vocab] (the CPU path, bit for bit the one the
 * engine and generator always ran). */
static void tsr__sample_host(tsr_forward_state *st, float *logits, int64_t n_seq, const tsr_seq_sample *samples,
                             int64_t n_valid, int32_t *ids, tsr_sample_result *res) {
    const int64_t V = st->model->cfg.vocab_size;
    for (int64_t s = 0; s < n_seq; s++) {
        const tsr_seq_sample *q = &samples[s];
        ids[s] = -1;
        if (!q->params) continue;
        float *row = logits + s * V;
        for (int64_t v = n_valid; v < V; v++) row[v] = -INFINITY;
        const bool want_lp = res && q->params->logprobs >= 0;
        ids[s] = tsr_sample(st->sampler, row, q->params, &q->hist, want_lp ? &res[s] : NULL);
    }
}

tsr_status tsr_forward_sample(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step,
                              const tsr_seq_sample *samples, int64_t n_valid, int32_t *ids, tsr_sample_result *res) {
    tsr_model *m = st->model;
    tsr_backend *be = m->be;
    const int64_t V = m->cfg.vocab_size, n_seq = step ? step->n_seq : 0;
    if (!step || step->all_logits)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "forward_sample: samples the last token of each sequence only");
    if (n_valid <= 0 || n_valid > V) n_valid = V;
    TSR_TRY(tsr__ensure_sample(st, n_seq));
    bool device = be->ops->sample && m->shard.size == 1 && !st->on_step && !st->host_sampling;
    /* A row with a token mask (constrained decoding, sampling.h's allowed) samples on the host:
     * the device sampler has no mask input yet, so the whole step downloads its logits. */
    for (int64_t s = 0; device && s < n_seq; s++)
        if (samples[s].params && samples[s].params->allowed) device = false;
    /* logit_bias and min_tokens (sampling.h stage 0) are not in the device sampler's request
     * either: a step where a row uses them samples on the host, exactly; other steps keep the
     * device path. */
    for (int64_t s = 0; device && s < n_seq; s++)
        if (samples[s].params && tsr_sampling_needs_bias(samples[s].params, &samples[s].hist)) device = false;
    if (!device) {
        TSR_TRY(tsr__run(st, kv, step, true, st->host_logits));
        tsr__sample_host(st, st->host_logits, n_seq, samples, n_valid, ids, res);
        return TSR_OK;
    }
    TSR_TRY(tsr__run(st, kv, step, true, NULL));
    tsr_sample_req *rq = st->sample_reqs;
    tsr_sample_out *out = st->sample_outs;
    int64_t n = 0;
    bool any_lp = false;
    for (int64_t s = 0; s < n_seq; s++) {
        const tsr_seq_sample *q = &samples[s];
        ids[s] = -1;
        if (!q->params) continue;
        const tsr_sampling_params *p = q->params;
        rq[n] = (tsr_sample_req){
            .row = s,
            .temperature = p->temperature,
            .top_k = p->top_k,
            .top_p = p->top_p,
            .min_p = p->min_p,
            .repetition_penalty = p->repetition_penalty,
            .presence_penalty = p->presence_penalty,
            .frequency_penalty = p->frequency_penalty,
            .seed = p->seed,
            .n_logprobs = res ? p->logprobs : -1,
            .logprobs_processed = p->logprobs_mode == TSR_LOGPROBS_PROCESSED,
            .prompt_ids = q->hist.prompt_ids,
            .n_prompt = q->hist.n_prompt,
            .output_ids = q->hist.output_ids,
            .n_output = q->hist.n_output,
        };
        if (rq[n].n_logprobs >= 0) any_lp = true;
        n++;
    }
    if (n == 0) return TSR_OK;
    if (!be->ops->sample(be, st->logits, n, V, n_valid, rq, st->sample_ids, any_lp ? out : NULL)) {
        TSR_TRY(tsr__backend_error(st));
        /* out of device memory for the sampler's scratch: this step samples on the host */
        if (be->ops->download_f32) be->ops->download_f32(be, st->host_logits, st->logits, n_seq * V);
        else be->ops->download(be, st->host_logits, st->logits, sizeof(float) * (size_t)(n_seq * V));
        TSR_TRY(tsr__backend_error(st));
        tsr__sample_host(st, st->host_logits, n_seq, samples, n_valid, ids, res);
        return TSR_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t s = rq[i].row;
        ids[s] = st->sample_ids[i];
        if (rq[i].n_logprobs >= 0) {
            tsr_sample_result *r = &res[s];
            r->token = out[i].token;
            r->logprob = out[i].logprob;
            r->n_top = out[i].n_top;
            for (int32_t j = 0; j < out[i].n_top && j < TSR_SAMPLING_MAX_LOGPROBS; j++) {
                r->top[j].id = out[i].top[j].id;
                r->top[j].logprob = out[i].top[j].logprob;
            }
        }
    }
    return TSR_OK;
}

/* The caller reserved the blocks (the block manager's ids): check before feeding anything. */
static tsr_status tsr__seq_covers(const tsr_kv_pool *kv, const tsr_kv_seq *seq, int64_t n) {
    if (seq->n_blocks * kv->layout.block_len < seq->n_tokens + n)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: the block table covers %lld tokens, %lld needed",
                          (long long)(seq->n_blocks * kv->layout.block_len), (long long)(seq->n_tokens + n));
    return TSR_OK;
}

tsr_status tsr_forward_seq_sample(tsr_forward_state *st, tsr_kv_pool *kv, tsr_kv_seq *seq, const int32_t *tokens,
                                  int64_t n, int64_t max_chunk, const tsr_seq_sample *sample, int64_t n_valid,
                                  int32_t *id, tsr_sample_result *res) {
    if (n < 1) return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: no tokens to feed");
    if (max_chunk <= 0) max_chunk = 512;
    TSR_TRY(tsr__seq_covers(kv, seq, n));
    for (int64_t off = 0; off < n; off += max_chunk) {
        int64_t c = n - off < max_chunk ? n - off : max_chunk;
        tsr_seq_step q = {tokens + off, c, seq->n_tokens, seq->blocks, seq->n_blocks};
        tsr_step step = {&q, 1, false};
        if (off + c == n) TSR_TRY(tsr_forward_sample(st, kv, &step, sample, n_valid, id, res));
        else TSR_TRY(tsr_forward(st, kv, &step, NULL));
        seq->n_tokens += c;
    }
    return TSR_OK;
}

tsr_status tsr_forward_seq(tsr_forward_state *st, tsr_kv_pool *kv, tsr_kv_seq *seq, const int32_t *tokens,
                           int64_t n, bool all_logits, int64_t max_chunk, float *logits) {
    if (n < 1) return tsr_errorf(TSR_ERR_INVALID_ARG, "forward: no tokens to feed");
    if (max_chunk <= 0) max_chunk = 512;
    TSR_TRY(tsr__seq_covers(kv, seq, n));
    int64_t vocab = st->model->cfg.vocab_size;
    for (int64_t off = 0; off < n; off += max_chunk) {
        int64_t c = n - off < max_chunk ? n - off : max_chunk;
        bool last = off + c == n;
        tsr_seq_step q = {tokens + off, c, seq->n_tokens, seq->blocks, seq->n_blocks};
        tsr_step step = {&q, 1, all_logits};
        float *out = NULL;
        if (logits && all_logits) out = logits + off * vocab;
        else if (logits && last) out = logits;
        TSR_TRY(tsr_forward(st, kv, &step, out));
        seq->n_tokens += c;
    }
    return TSR_OK;
}
