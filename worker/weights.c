/* The weight loader for one rank (see weights.h): opens a source (worker/weights_reader.c),
 * reads exactly this rank's slice of every kind through the shard-rule table, fuses q|k|v and
 * gate|up per layer, and uploads each as the backend's type.  So no rank ever reads (or pages
 * in) more than its share of a tensor. */
#include "worker/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/weights_dummy.h"
#include "worker/weights_reader.h"

tsr_status tsr_model_config_load(const char *path, tsr_model_config *cfg) {
    tsr__src *s;
    TSR_TRY(tsr__reader_open_source(path, cfg, &s));
    s->close(s);
    return TSR_OK;
}

/* Uploads n f32 values as the backend's type (converted in place in the staging buffer, which
 * the caller refills before its next use). */
static tsr_status tsr__upload(tsr__slice_reader *L, void **dst, float *src, int64_t n) {
    tsr_backend *be = L->m->be;
    TSR_ASSERT(be->dtype == TSR_F32 || be->dtype == TSR_F16 || be->dtype == TSR_BF16);
    size_t bytes = tsr_dtype_size(be->dtype) * (size_t)n;
    if (be->dtype != TSR_F32) {
        uint16_t *h = (uint16_t *)src; /* h[i] is written after src[i] was read: safe in place */
        for (int64_t i = 0; i < n; i++)
            h[i] = be->dtype == TSR_BF16 ? tsr_f32_to_bf16(src[i]) : tsr_f32_to_f16(src[i]);
    }
    *dst = be->ops->alloc(be, bytes);
    if (!*dst) return tsr_errorf(TSR_ERR_OOM, "out of %s memory for weights (%zu bytes more)", be->ops->name, bytes);
    be->ops->upload(be, *dst, src, bytes);
    L->m->weight_bytes += bytes;
    return TSR_OK;
}

/* Dummy weights straight on the device (fill_hash): no host generation or transfer, so an
 * 8B-parameter model takes seconds.  *done is false when the source or backend cannot. */
static tsr_status tsr__dummy_on_device(tsr__slice_reader *L, const tsr_wkind *kinds, int n_kinds, int layer,
                                       const int64_t *row0, void **dst, bool *done) {
    tsr_backend *be = L->m->be;
    *done = false;
    if (!tsr__dummy_source_is(L->src) || !be->ops->fill_hash) return TSR_OK;
    int64_t total = 0, r0[4], nr[4], c0[4], nc[4];
    TSR_ASSERT(n_kinds <= 4);
    for (int i = 0; i < n_kinds; i++) {
        tsr__shard_local_slice(&L->m->cfg, &L->m->shard, kinds[i], &r0[i], &nr[i], &c0[i], &nc[i]);
        if (row0) r0[i] = *row0, nr[i] = L->m->shard.vocab; /* vocab-parallel slice of a tied embedding */
        total += nr[i] * nc[i];
    }
    size_t es = tsr_dtype_size(be->dtype), bytes = es * (size_t)total;
    *dst = be->ops->alloc(be, bytes);
    if (!*dst) return tsr_errorf(TSR_ERR_OOM, "out of %s memory for weights (%zu bytes more)", be->ops->name, bytes);
    int64_t off = 0;
    for (int i = 0; i < n_kinds; i++) {
        uint64_t key;
        float scale, offset;
        int64_t C;
        tsr__dummy_params(L->src, kinds[i], layer, &key, &scale, &offset, &C);
        be->ops->fill_hash(be, (char *)*dst + (size_t)off * es, nr[i], nc[i], key, r0[i] * C + c0[i], C, scale, offset);
        off += nr[i] * nc[i];
    }
    L->m->weight_bytes += bytes;
    *done = true;
    return TSR_OK;
}

/* Reads one or more kinds back to back into one buffer (q|k|v, gate|up) and uploads it. */
static tsr_status tsr__load_fused(tsr__slice_reader *L, const tsr_wkind *kinds, int n_kinds, int layer, void **dst) {
    bool on_device;
    TSR_TRY(tsr__dummy_on_device(L, kinds, n_kinds, layer, NULL, dst, &on_device));
    if (on_device) return TSR_OK;
    int64_t total = 0;
    for (int i = 0; i < n_kinds; i++) {
        int64_t r0, nr, c0, nc;
        tsr__shard_local_slice(&L->m->cfg, &L->m->shard, kinds[i], &r0, &nr, &c0, &nc);
        total += nr * nc;
    }
    TSR_TRY(tsr__reader_stage(L, (size_t)total));
    int64_t off = 0;
    for (int i = 0; i < n_kinds; i++) {
        int64_t n;
        TSR_TRY(tsr__reader_read_local(L, kinds[i], layer, L->stage + off, &n));
        off += n;
    }
    return tsr__upload(L, dst, L->stage, total);
}

static tsr_status tsr__load_one(tsr__slice_reader *L, tsr_wkind k, int layer, void **dst) {
    return tsr__load_fused(L, &k, 1, layer, dst);
}

/* The wtype of the backend's dense buffers. */
static tsr_wtype tsr__be_wtype(const tsr_backend *be) {
    return be->dtype == TSR_F32 ? TSR_WTYPE_F32 : be->dtype == TSR_F16 ? TSR_WTYPE_F16 : TSR_WTYPE_BF16;
}

/* Views of this rank's slices of `kinds` in the mapped file, one part each, when the backend
 * computes with their stored types (backend.h wtype_native): nothing is copied.  *done is false
 * (and nothing is set) when the source cannot offer a tensor as stored or the backend lacks a
 * type; the caller then reads a dequantized copy, and a lacking type is logged once. */
static tsr_status tsr__load_views(tsr__slice_reader *L, const tsr_wkind *kinds, int n_kinds, int layer, tsr_wmat *out,
                                  bool *done) {
    tsr_model *m = L->m;
    tsr_backend *be = m->be;
    *done = false;
    if (!L->typed) return TSR_OK;
    tsr_wmat w = {.n_parts = n_kinds};
    for (int i = 0; i < n_kinds; i++) {
        tsr_wtensor full;
        int64_t v_r0, v_c0;
        tsr_status st = L->src->raw(L->src, kinds[i], layer, &full, &v_r0, &v_c0);
        if (st == TSR_ERR_UNSUPPORTED) {
            tsr_clear_error();
            return TSR_OK;
        }
        TSR_TRY(st);
        if (!be->ops->wtype_native(be, full.type)) {
            unsigned bit = (unsigned)full.type < 32 ? 1u << (unsigned)full.type : 0;
            if (!(L->warned_types & bit))
                TSR_LOGI("the %s backend has no kernel for %s weights: they run as a dequantized %s copy", be->ops->name,
                         tsr_wtype_name(full.type), tsr_dtype_name(be->dtype));
            L->warned_types |= bit;
            return TSR_OK;
        }
        char name[96];
        const tsr_shard_rule *r = tsr_shard_rule_of(kinds[i]);
        if (r->per_layer) snprintf(name, sizeof name, "%s of layer %d", r->what, layer);
        else snprintf(name, sizeof name, "%s", r->what);
        int64_t r0, nr, c0, nc;
        tsr__shard_local_slice(&m->cfg, &m->shard, kinds[i], &r0, &nr, &c0, &nc);
        if ((nr != full.rows || nc != full.cols) && m->shard.size > 1 && v_r0 == 0 && v_c0 == 0)
            TSR_TRY(tsr_shard_check_blocks(&m->cfg, kinds[i], &full, name, m->shard.rank, m->shard.size));
        tsr_wtensor part = full;
        if (nr != full.rows) TSR_TRY(tsr_wtensor_slice(&full, name, TSR_SPLIT_ROWS, r0 - v_r0, nr, &part));
        if (nc != full.cols) {
            tsr_wtensor rows = part;
            TSR_TRY(tsr_wtensor_slice(&rows, name, TSR_SPLIT_COLS, c0 - v_c0, nc, &part));
        }
        if (i > 0 && part.cols != w.cols)
            return tsr_errorf(TSR_ERR_FORMAT, "%s has %lld columns, unlike the tensor it is stacked with", name,
                              (long long)part.cols);
        w.part[i] = part;
        w.rows += part.rows;
        w.cols = part.cols;
    }
    for (int i = 0; i < n_kinds; i++) {
        const size_t bytes = tsr_wtensor_bytes(&w.part[i]);   /* INT4G: scales and zeros too */
        m->weight_bytes += bytes;
        m->mapped_bytes += bytes;
    }
    *out = w;
    *done = true;
    return TSR_OK;
}

/* A matmul weight (q|k|v, gate|up or one kind): views of the file where the backend runs its
 * types, else one fused copy of the backend's type. */
static tsr_status tsr__load_mat(tsr__slice_reader *L, const tsr_wkind *kinds, int n_kinds, int layer, tsr_wmat *out) {
    bool viewed;
    TSR_TRY(tsr__load_views(L, kinds, n_kinds, layer, out, &viewed));
    if (viewed) return TSR_OK;
    tsr_model *m = L->m;
    int64_t rows = 0, cols = 0;
    for (int i = 0; i < n_kinds; i++) {
        int64_t r0, nr, c0, nc;
        tsr__shard_local_slice(&m->cfg, &m->shard, kinds[i], &r0, &nr, &c0, &nc);
        rows += nr, cols = nc;
    }
    void *buf;
    TSR_TRY(tsr__load_fused(L, kinds, n_kinds, layer, &buf));
    memset(out, 0, sizeof *out);
    out->n_parts = 1, out->rows = rows, out->cols = cols, out->buf[0] = buf;
    return tsr_wtensor_init(&out->part[0], tsr__be_wtype(m->be), rows, cols, 0, buf);
}

static tsr_status tsr__load_all(tsr__slice_reader *L, bool progress) {
    tsr_model *m = L->m;
    const tsr_model_config *c = &m->cfg;
    bool present;
    m->w.layers = calloc((size_t)c->n_layer, sizeof(tsr_layer_weights));
    if (!m->w.layers) return tsr_errorf(TSR_ERR_OOM, "out of memory");

    TSR_TRY(tsr__reader_check(L, TSR_W_TOK_EMBD, 0, &present));
    static const tsr_wkind embd[] = {TSR_W_TOK_EMBD}, head[] = {TSR_W_LM_HEAD};
    TSR_TRY(tsr__load_mat(L, embd, 1, 0, &m->w.tok_embd));
    TSR_TRY(tsr__reader_check(L, TSR_W_OUT_NORM, 0, &present));
    TSR_TRY(tsr__load_one(L, TSR_W_OUT_NORM, 0, &m->w.out_norm));
    TSR_TRY(tsr__reader_check(L, TSR_W_LM_HEAD, 0, &present));
    if (present) {
        TSR_TRY(tsr__load_mat(L, head, 1, 0, &m->w.lm_head));
    } else {
        /* tied: the same rows, no copy (both vocab-parallel, so the same slice under TP) */
        m->w.lm_head = m->w.tok_embd;
        for (int i = 0; i < 3; i++) m->w.lm_head.buf[i] = NULL;
        m->w.lm_head_aliases_embd = true;
    }
    if (progress) tsr_progress("loading weights", 0, c->n_layer);

    static const tsr_wkind qkv[] = {TSR_W_Q, TSR_W_K, TSR_W_V};
    static const tsr_wkind bqkv[] = {TSR_W_Q_BIAS, TSR_W_K_BIAS, TSR_W_V_BIAS};
    static const tsr_wkind gate_up[] = {TSR_W_GATE, TSR_W_UP}, wo[] = {TSR_W_O}, down[] = {TSR_W_DOWN};
    for (int l = 0; l < (int)c->n_layer; l++) {
        tsr_layer_weights *lw = &m->w.layers[l];
        for (int k = TSR_W_ATTN_NORM; k <= TSR_W_DOWN; k++) {
            if (tsr_shard_rule_of((tsr_wkind)k)->optional) continue; /* the biases, checked below */
            TSR_TRY(tsr__reader_check(L, (tsr_wkind)k, l, &present));
        }
        /* biases come as a set: all three or none */
        bool has_b[3];
        for (int i = 0; i < 3; i++) TSR_TRY(tsr__reader_check(L, bqkv[i], l, &has_b[i]));
        if (has_b[0] != has_b[1] || has_b[0] != has_b[2])
            return tsr_errorf(TSR_ERR_FORMAT, "layer %d has some of the q/k/v biases but not all", l);
        bool has_bo;
        TSR_TRY(tsr__reader_check(L, TSR_W_O_BIAS, l, &has_bo));

        TSR_TRY(tsr__load_one(L, TSR_W_ATTN_NORM, l, &lw->attn_norm));
        TSR_TRY(tsr__load_mat(L, qkv, 3, l, &lw->wqkv));
        if (has_b[0]) TSR_TRY(tsr__load_fused(L, bqkv, 3, l, &lw->bqkv));
        TSR_TRY(tsr__load_mat(L, wo, 1, l, &lw->wo));
        if (has_bo) TSR_TRY(tsr__load_one(L, TSR_W_O_BIAS, l, &lw->bo));
        TSR_TRY(tsr__load_one(L, TSR_W_FFN_NORM, l, &lw->ffn_norm));
        TSR_TRY(tsr__load_mat(L, gate_up, 2, l, &lw->w_gate_up));
        TSR_TRY(tsr__load_mat(L, down, 1, l, &lw->w_down));
        if (progress) tsr_progress("loading weights", l + 1, c->n_layer);
    }
    return TSR_OK;
}

static tsr_status tsr__load_from(tsr__src *src, const tsr_model_config *cfg, tsr_backend *be,
                                 const tsr_load_opts *opts, tsr_model **out) {
    tsr_load_opts def = {0, 1, false, false};
    if (!opts) opts = &def;
    *out = NULL;
    tsr_model *m = calloc(1, sizeof *m);
    if (!m) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    m->cfg = *cfg;
    m->be = be;
    snprintf(m->source, sizeof m->source, "%s", src->kind_name);
    src->cfg = &m->cfg;
    tsr_status st = tsr_shard_plan(cfg, opts->tp_rank, opts->tp_size, &m->shard);
    src->shard = &m->shard;
    if (st == TSR_OK && src->ws_tp && src->ws_tp != opts->tp_size)
        st = tsr_errorf(TSR_ERR_INVALID_ARG,
                        "this workspace was converted for tensor_para_size %d but the group has %d rank%s: run it with "
                        "`mpirun -np %d tessera ...`, or convert the model again with `tessera convert MODEL --dst DIR "
                        "--tp %d`",
                        src->ws_tp, opts->tp_size, opts->tp_size == 1 ? "" : "s", src->ws_tp, opts->tp_size);
    tsr__slice_reader L = {.m = m, .src = src};
    /* A backend that computes on host memory with typed weights gets views of the mapped file;
     * GGUF Q/K rows then stay in the file's order and RoPE pairs them accordingly. */
    L.typed = src->raw && be->ops->host_memory && be->ops->wtype_native && !opts->dequantize;
    src->keep_file_order = L.typed;
    m->qk_interleaved = L.typed && !strcmp(src->kind_name, "gguf");
    double t0 = tsr_now();
    if (st == TSR_OK) st = tsr__load_all(&L, opts->progress);
    tsr__reader_free(&L);
    if (st != TSR_OK) {
        tsr_model_free(m);
        return st;
    }
    TSR_LOGD("loaded %s weights (rank %d of %d): %.1f MB (%.1f MB of them mapped from the file) in %.2f s",
             src->kind_name, opts->tp_rank, opts->tp_size, (double)m->weight_bytes / 1e6, (double)m->mapped_bytes / 1e6,
             tsr_now() - t0);
    *out = m;
    return TSR_OK;
}

static void tsr__close_src(void *src) { ((tsr__src *)src)->close(src); }

tsr_status tsr_model_load(const char *path, tsr_backend *be, const tsr_load_opts *opts, tsr_model **out) {
    tsr_model_config cfg;
    tsr__src *src;
    tsr_status st = tsr__reader_open_source(path, &cfg, &src);
    if (st != TSR_OK) return tsr_error_wrap(st, "loading model %s", path);
    st = tsr__load_from(src, &cfg, be, opts, out);
    if (st == TSR_OK && (*out)->mapped_bytes) {
        /* the model's views point into the source's mapping: it lives as long as the model */
        (*out)->mapping = src;
        (*out)->mapping_close = tsr__close_src;
    } else {
        src->close(src);
    }
    if (st != TSR_OK) return tsr_error_wrap(st, "loading model %s", path);
    return TSR_OK;
}

tsr_status tsr_model_init_dummy(const tsr_model_config *cfg, tsr_backend *be, const tsr_load_opts *opts,
                                uint64_t seed, tsr_model **out) {
    TSR_TRY(tsr_model_config_validate(cfg, "dummy model"));
    tsr__src *src;
    TSR_TRY(tsr__dummy_source_open(seed, &src));
    tsr_status st = tsr__load_from(src, cfg, be, opts, out);
    src->close(src);
    return st;
}

static void tsr__wmat_free(tsr_backend *be, tsr_wmat *w) {
    for (int i = 0; i < 3; i++) be->ops->dfree(be, w->buf[i]);
}

void tsr_model_free(tsr_model *m) {
    if (!m) return;
    tsr_backend *be = m->be;
    if (m->w.layers) {
        for (int64_t l = 0; l < m->cfg.n_layer; l++) {
            tsr_layer_weights *lw = &m->w.layers[l];
            void *ptrs[] = {lw->attn_norm, lw->bqkv, lw->bo, lw->ffn_norm};
            for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) be->ops->dfree(be, ptrs[i]);
            tsr__wmat_free(be, &lw->wqkv);
            tsr__wmat_free(be, &lw->wo);
            tsr__wmat_free(be, &lw->w_gate_up);
            tsr__wmat_free(be, &lw->w_down);
        }
        free(m->w.layers);
    }
    if (!m->w.lm_head_aliases_embd) tsr__wmat_free(be, &m->w.lm_head);
    tsr__wmat_free(be, &m->w.tok_embd);
    be->ops->dfree(be, m->w.out_norm);
    if (m->mapping_close) m->mapping_close(m->mapping);
    free(m);
}

tsr_rope_params tsr_model_rope_params(const tsr_model_config *cfg) {
    tsr_rope_params p = {
        .type = cfg->rope_type,
        .theta = cfg->rope_theta,
        .factor = cfg->rope_factor,
        .low_freq_factor = cfg->rope_low_freq_factor,
        .high_freq_factor = cfg->rope_high_freq_factor,
        .original_max_pos = cfg->rope_original_max_pos,
        .max_pos = cfg->max_position_embeddings,
        .rot_dim = cfg->head_dim,
        .use_logn_attn = cfg->use_logn_attn,
        .attn_factor = cfg->rope_attn_factor,
        .beta_fast = cfg->rope_beta_fast,
        .beta_slow = cfg->rope_beta_slow,
        .yarn_truncate = cfg->rope_yarn_truncate,
        .short_factor = cfg->rope_short_factor,
        .long_factor = cfg->rope_long_factor,
    };
    return p;
}

