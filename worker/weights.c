/* Weight loading for one rank (see weights.h).  Three layers of indirection keep every rule in
 * one place:
 *   1. a SOURCE presents each logical tensor (kind, layer) in HF orientation [out, in] and
 *      reads any set of its rows and a column range: safetensors (HF names, InternLM2's packed
 *      wqkv unpacked by row mapping), GGUF (llama.cpp names, Q/K rows un-permuted back to HF
 *      order, dequantized row by row), or the dummy generator;
 *   2. the SHARD-RULE TABLE says which rows/columns of each kind belong to a rank;
 *   3. the loader reads exactly those slices and fuses q|k|v and gate|up per layer.
 * So no rank ever reads (or pages in) more than its share of a tensor. */
#include "worker/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "worker/workspace.h"

/* ------------------------------------------------------------------------------------------ */
/* the shard-rule table                                                                        */

static const tsr_shard_rule tsr__rules[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = {TSR_W_TOK_EMBD, "token embedding", false, false, TSR_SPLIT_OUT, TSR_UNIT_VOCAB},
    [TSR_W_ATTN_NORM] = {TSR_W_ATTN_NORM, "attention norm", true, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_Q] = {TSR_W_Q, "q projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_HEAD},
    [TSR_W_K] = {TSR_W_K, "k projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_V] = {TSR_W_V, "v projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_Q_BIAS] = {TSR_W_Q_BIAS, "q bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_HEAD},
    [TSR_W_K_BIAS] = {TSR_W_K_BIAS, "k bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_V_BIAS] = {TSR_W_V_BIAS, "v bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_O] = {TSR_W_O, "attention output projection", true, false, TSR_SPLIT_IN, TSR_UNIT_HEAD},
    /* a row-parallel bias is replicated and added once, after the all-reduce */
    [TSR_W_O_BIAS] = {TSR_W_O_BIAS, "attention output bias", true, true, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_FFN_NORM] = {TSR_W_FFN_NORM, "ffn norm", true, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_GATE] = {TSR_W_GATE, "gate projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_FF},
    [TSR_W_UP] = {TSR_W_UP, "up projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_FF},
    [TSR_W_DOWN] = {TSR_W_DOWN, "down projection", true, false, TSR_SPLIT_IN, TSR_UNIT_FF},
    [TSR_W_OUT_NORM] = {TSR_W_OUT_NORM, "final norm", false, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_LM_HEAD] = {TSR_W_LM_HEAD, "lm head", false, true, TSR_SPLIT_OUT, TSR_UNIT_VOCAB},
};

const tsr_shard_rule *tsr_shard_rule_of(tsr_wkind kind) {
    TSR_ASSERT(kind >= 0 && kind < TSR_W_COUNT);
    return &tsr__rules[kind];
}

void tsr_shard_split(int64_t n, int rank, int size, int64_t *first, int64_t *count) {
    int64_t base = n / size, extra = n % size;
    *count = base + (rank < extra ? 1 : 0);
    *first = rank * base + (rank < extra ? rank : extra);
}

/* Splits need not be even: ranks get balanced, contiguous shares (SmolLM2's 9 heads run on 2
 * or 4 ranks).  Attention keeps whole KV groups together so a rank's query heads always map
 * onto its own KV heads with the same group ratio the kernels assume:
 *  - tp <= n_kv_head: the KV heads are split in balanced contiguous runs and each rank takes
 *    the query heads of its KV heads;
 *  - tp > n_kv_head: the ranks are split among the KV groups (balanced), every rank keeps the
 *    one KV head of its group (replicated) and a balanced share of that group's query heads. */
tsr_status tsr_shard_plan(const tsr_model_config *cfg, int rank, int size, tsr_shard *out) {
    if (size < 1 || rank < 0 || rank >= size)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "bad tensor-parallel rank %d of %d", rank, size);
    memset(out, 0, sizeof *out);
    out->rank = rank;
    out->size = size;
    if (cfg->n_kv_head < 1 || cfg->n_head % cfg->n_kv_head)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "n_head %lld is not a multiple of n_kv_head %lld",
                          (long long)cfg->n_head, (long long)cfg->n_kv_head);
    const int64_t group = cfg->n_head / cfg->n_kv_head;
    if (size > cfg->n_head)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "tensor parallelism: tp_size %d is larger than n_head (attention heads) %lld: every rank "
                          "needs at least one whole head",
                          size, (long long)cfg->n_head);
    if (size <= cfg->n_kv_head) {
        tsr_shard_split(cfg->n_kv_head, rank, size, &out->kv_head0, &out->n_kv_head);
        out->head0 = out->kv_head0 * group;
        out->n_head = out->n_kv_head * group;
    } else {
        /* rank -> KV group: the inverse of splitting `size` ranks over n_kv_head groups */
        int64_t g = 0, r0 = 0, nr = 0;
        for (g = 0; g < cfg->n_kv_head; g++) {
            tsr_shard_split(size, (int)g, (int)cfg->n_kv_head, &r0, &nr);
            if (rank < r0 + nr) break;
        }
        if (nr > group)
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "tensor parallelism: tp_size %d puts %lld ranks on a KV group of only %lld query heads "
                              "(n_head %lld, n_kv_head %lld)",
                              size, (long long)nr, (long long)group, (long long)cfg->n_head, (long long)cfg->n_kv_head);
        out->kv_head0 = g;
        out->n_kv_head = 1;
        int64_t q0, nq;
        tsr_shard_split(group, (int)(rank - r0), (int)nr, &q0, &nq);
        out->head0 = g * group + q0;
        out->n_head = nq;
    }
    if (size > cfg->d_ff)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor parallelism: tp_size %d is larger than d_ff (intermediate_size) %lld",
                          size, (long long)cfg->d_ff);
    tsr_shard_split(cfg->d_ff, rank, size, &out->ff0, &out->d_ff);
    if (size > cfg->vocab_size)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor parallelism: tp_size %d is larger than vocab_size %lld", size,
                          (long long)cfg->vocab_size);
    tsr_shard_split(cfg->vocab_size, rank, size, &out->vocab0, &out->vocab);
    out->vocab_pad = (cfg->vocab_size + size - 1) / size;
    return TSR_OK;
}

/* The unsplit HF shape of a kind; cols == 1 for vectors. */
static void tsr__global_shape(const tsr_model_config *c, tsr_wkind k, int64_t *rows, int64_t *cols) {
    int64_t d = c->d_model, hd = c->head_dim;
    switch (k) {
    case TSR_W_TOK_EMBD: case TSR_W_LM_HEAD: *rows = c->vocab_size; *cols = d; return;
    case TSR_W_ATTN_NORM: case TSR_W_FFN_NORM: case TSR_W_OUT_NORM: case TSR_W_O_BIAS: *rows = d; *cols = 1; return;
    case TSR_W_Q: *rows = c->n_head * hd; *cols = d; return;
    case TSR_W_K: case TSR_W_V: *rows = c->n_kv_head * hd; *cols = d; return;
    case TSR_W_Q_BIAS: *rows = c->n_head * hd; *cols = 1; return;
    case TSR_W_K_BIAS: case TSR_W_V_BIAS: *rows = c->n_kv_head * hd; *cols = 1; return;
    case TSR_W_O: *rows = d; *cols = c->n_head * hd; return;
    case TSR_W_GATE: case TSR_W_UP: *rows = c->d_ff; *cols = d; return;
    case TSR_W_DOWN: *rows = d; *cols = c->d_ff; return;
    case TSR_W_COUNT: break;
    }
    TSR_ASSERT(0);
}

/* The first unit, the number of units and the unit's size in rows/cols for a rank. */
static void tsr__unit_range(const tsr_model_config *c, const tsr_shard *sh, tsr_split_unit u,
                            int64_t *first, int64_t *n, int64_t *usize) {
    switch (u) {
    case TSR_UNIT_HEAD: *first = sh->head0; *n = sh->n_head; *usize = c->head_dim; return;
    case TSR_UNIT_KV_HEAD: *first = sh->kv_head0; *n = sh->n_kv_head; *usize = c->head_dim; return;
    case TSR_UNIT_FF: *first = sh->ff0; *n = sh->d_ff; *usize = 1; return;
    case TSR_UNIT_VOCAB: *first = sh->vocab0; *n = sh->vocab; *usize = 1; return;
    case TSR_UNIT_NONE: break;
    }
    TSR_ASSERT(0);
}

/* This rank's slice of a kind: rows [r0, r0 + nr), columns [c0, c0 + nc) of the HF tensor. */
static void tsr__local_slice(const tsr_model_config *c, const tsr_shard *sh, tsr_wkind k, int64_t *r0,
                             int64_t *nr, int64_t *c0, int64_t *nc) {
    int64_t rows, cols;
    tsr__global_shape(c, k, &rows, &cols);
    *r0 = 0, *nr = rows, *c0 = 0, *nc = cols;
    const tsr_shard_rule *r = &tsr__rules[k];
    if (r->split == TSR_SPLIT_NONE) return;
    int64_t first, n, us;
    tsr__unit_range(c, sh, r->unit, &first, &n, &us);
    if (r->split == TSR_SPLIT_OUT) *r0 = first * us, *nr = n * us;
    else *c0 = first * us, *nc = n * us;
}

/* ------------------------------------------------------------------------------------------ */
/* sources                                                                                     */

typedef struct tsr__src tsr__src;
struct tsr__src {
    const tsr_model_config *cfg;
    /* The HF-orientation shape of (kind, layer); TSR_ERR_NOT_FOUND when absent. */
    tsr_status (*shape)(tsr__src *s, tsr_wkind k, int layer, int64_t *rows, int64_t *cols);
    /* dst[i][j] = T[rows[i]][c0 + j] for i < n_rows, j < n_cols. */
    tsr_status (*read)(tsr__src *s, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows, int64_t c0,
                       int64_t n_cols, float *dst);
    void (*close)(tsr__src *s);
    const char *kind_name;
    const tsr_shard *shard;   /* set by the loader before the first shape/read */
    int ws_tp;                /* a workspace: the TP size it was split for (0 otherwise) */
};

/* ---- HF safetensors ---- */

static const char *const tsr__hf_llama_names[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = "model.embed_tokens.weight",
    [TSR_W_ATTN_NORM] = "model.layers.%d.input_layernorm.weight",
    [TSR_W_Q] = "model.layers.%d.self_attn.q_proj.weight",
    [TSR_W_K] = "model.layers.%d.self_attn.k_proj.weight",
    [TSR_W_V] = "model.layers.%d.self_attn.v_proj.weight",
    [TSR_W_Q_BIAS] = "model.layers.%d.self_attn.q_proj.bias",
    [TSR_W_K_BIAS] = "model.layers.%d.self_attn.k_proj.bias",
    [TSR_W_V_BIAS] = "model.layers.%d.self_attn.v_proj.bias",
    [TSR_W_O] = "model.layers.%d.self_attn.o_proj.weight",
    [TSR_W_O_BIAS] = "model.layers.%d.self_attn.o_proj.bias",
    [TSR_W_FFN_NORM] = "model.layers.%d.post_attention_layernorm.weight",
    [TSR_W_GATE] = "model.layers.%d.mlp.gate_proj.weight",
    [TSR_W_UP] = "model.layers.%d.mlp.up_proj.weight",
    [TSR_W_DOWN] = "model.layers.%d.mlp.down_proj.weight",
    [TSR_W_OUT_NORM] = "model.norm.weight",
    [TSR_W_LM_HEAD] = "lm_head.weight",
};

/* InternLM2: q, k and v live in one packed `wqkv` (see tsr__internlm2_row). */
static const char *const tsr__hf_internlm2_names[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = "model.tok_embeddings.weight",
    [TSR_W_ATTN_NORM] = "model.layers.%d.attention_norm.weight",
    [TSR_W_Q] = "model.layers.%d.attention.wqkv.weight",
    [TSR_W_K] = "model.layers.%d.attention.wqkv.weight",
    [TSR_W_V] = "model.layers.%d.attention.wqkv.weight",
    [TSR_W_Q_BIAS] = "model.layers.%d.attention.wqkv.bias",
    [TSR_W_K_BIAS] = "model.layers.%d.attention.wqkv.bias",
    [TSR_W_V_BIAS] = "model.layers.%d.attention.wqkv.bias",
    [TSR_W_O] = "model.layers.%d.attention.wo.weight",
    [TSR_W_O_BIAS] = "model.layers.%d.attention.wo.bias",
    [TSR_W_FFN_NORM] = "model.layers.%d.ffn_norm.weight",
    [TSR_W_GATE] = "model.layers.%d.feed_forward.w1.weight",
    [TSR_W_UP] = "model.layers.%d.feed_forward.w3.weight",
    [TSR_W_DOWN] = "model.layers.%d.feed_forward.w2.weight",
    [TSR_W_OUT_NORM] = "model.norm.weight",
    [TSR_W_LM_HEAD] = "output.weight",
};

/* llama.cpp's GGUF names (architecture `llama`). */
static const char *const tsr__gguf_names[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = "token_embd.weight",
    [TSR_W_ATTN_NORM] = "blk.%d.attn_norm.weight",
    [TSR_W_Q] = "blk.%d.attn_q.weight",
    [TSR_W_K] = "blk.%d.attn_k.weight",
    [TSR_W_V] = "blk.%d.attn_v.weight",
    [TSR_W_Q_BIAS] = "blk.%d.attn_q.bias",
    [TSR_W_K_BIAS] = "blk.%d.attn_k.bias",
    [TSR_W_V_BIAS] = "blk.%d.attn_v.bias",
    [TSR_W_O] = "blk.%d.attn_output.weight",
    [TSR_W_O_BIAS] = "blk.%d.attn_output.bias",
    [TSR_W_FFN_NORM] = "blk.%d.ffn_norm.weight",
    [TSR_W_GATE] = "blk.%d.ffn_gate.weight",
    [TSR_W_UP] = "blk.%d.ffn_up.weight",
    [TSR_W_DOWN] = "blk.%d.ffn_down.weight",
    [TSR_W_OUT_NORM] = "output_norm.weight",
    [TSR_W_LM_HEAD] = "output.weight",
};

static void tsr__name(char *buf, size_t n, const char *const *table, tsr_wkind k, int layer) {
    snprintf(buf, n, table[k], layer);
}

static bool tsr__is_qkv(tsr_wkind k) {
    return k == TSR_W_Q || k == TSR_W_K || k == TSR_W_V || k == TSR_W_Q_BIAS || k == TSR_W_K_BIAS ||
           k == TSR_W_V_BIAS;
}

/* InternLM2's wqkv rows: for each KV head j, [q heads j*g .. j*g+g-1, k_j, v_j] of head_dim
 * rows each (g = n_head / n_kv_head).  Maps an HF-order row of q, k or v to the packed row. */
static int64_t tsr__internlm2_row(const tsr_model_config *c, tsr_wkind k, int64_t r) {
    int64_t hd = c->head_dim, g = c->n_head / c->n_kv_head, h = r / hd, i = r % hd;
    if (k == TSR_W_Q || k == TSR_W_Q_BIAS) return ((h / g) * (g + 2) + h % g) * hd + i;
    if (k == TSR_W_K || k == TSR_W_K_BIAS) return (h * (g + 2) + g) * hd + i;
    return (h * (g + 2) + g + 1) * hd + i;
}

/* llama.cpp's converter reorders each Q/K head's rows from HF's halves (rotate_half RoPE) to
 * interleaved pairs: GGUF row h*hd + 2t + s holds HF row h*hd + s*hd/2 + t.  Maps HF -> GGUF. */
static int64_t tsr__gguf_qk_row(int64_t hd, int64_t r) {
    int64_t h = r / hd, j = r % hd, half = hd / 2;
    int64_t s = j / half, t = j % half;
    return h * hd + 2 * t + s;
}

typedef struct {
    tsr__src base;
    tsr_safetensors *st;
    const char *const *names;
    bool packed_qkv;
} tsr__st_src;

static tsr_status tsr__st_find(tsr__st_src *s, tsr_wkind k, int layer, const tsr_st_tensor **t) {
    char name[256];
    tsr__name(name, sizeof name, s->names, k, layer);
    *t = tsr_safetensors_find(s->st, name);
    if (!*t) return tsr_errorf(TSR_ERR_NOT_FOUND, "tensor '%s' not found in the checkpoint", name);
    if ((*t)->n_dims < 1 || (*t)->n_dims > 2)
        return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has %d dimensions, expected 1 or 2", name, (*t)->n_dims);
    if ((*t)->dtype != TSR_F32 && (*t)->dtype != TSR_F16 && (*t)->dtype != TSR_BF16)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "tensor '%s' has dtype %s; F32, F16 and BF16 are supported", name,
                          tsr_dtype_name((*t)->dtype));
    return TSR_OK;
}

static tsr_status tsr__st_shape(tsr__src *base, tsr_wkind k, int layer, int64_t *rows, int64_t *cols) {
    tsr__st_src *s = (tsr__st_src *)base;
    const tsr_st_tensor *t;
    TSR_TRY(tsr__st_find(s, k, layer, &t));
    if (s->packed_qkv && tsr__is_qkv(k)) {
        /* The packed tensor must be exactly q + k + v; then report the logical shape. */
        const tsr_model_config *c = base->cfg;
        int64_t want = (c->n_head + 2 * c->n_kv_head) * c->head_dim;
        if (t->shape[0] != want)
            return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has %lld rows, expected (n_head + 2 n_kv_head) * head_dim = %lld",
                              t->name, (long long)t->shape[0], (long long)want);
        tsr__global_shape(c, k, rows, cols);
        return t->n_dims == 2 && t->shape[1] != *cols
                   ? tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has %lld columns, expected %lld", t->name,
                                (long long)t->shape[1], (long long)*cols)
                   : TSR_OK;
    }
    *rows = t->shape[0];
    *cols = t->n_dims == 2 ? t->shape[1] : 1;
    return TSR_OK;
}

static tsr_status tsr__st_read(tsr__src *base, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows,
                               int64_t c0, int64_t n_cols, float *dst) {
    tsr__st_src *s = (tsr__st_src *)base;
    const tsr_st_tensor *t;
    TSR_TRY(tsr__st_find(s, k, layer, &t));
    int64_t cols = t->n_dims == 2 ? t->shape[1] : 1;
    size_t es = tsr_dtype_size(t->dtype);
    TSR_ASSERT(c0 >= 0 && c0 + n_cols <= cols);
    for (int64_t i = 0; i < n_rows; i++) {
        int64_t r = rows[i];
        if (s->packed_qkv && tsr__is_qkv(k)) r = tsr__internlm2_row(base->cfg, k, r);
        TSR_ASSERT(r >= 0 && r < t->shape[0]);
        const uint8_t *p = (const uint8_t *)t->data + ((size_t)r * (size_t)cols + (size_t)c0) * es;
        if (tsr_convert_to_f32(t->dtype, p, dst + i * n_cols, n_cols) != 0)
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "tensor '%s': cannot convert %s to f32", t->name,
                              tsr_dtype_name(t->dtype));
    }
    return TSR_OK;
}

static void tsr__st_close(tsr__src *base) {
    tsr__st_src *s = (tsr__st_src *)base;
    tsr_safetensors_close(s->st);
    free(s);
}

/* ---- GGUF ---- */

typedef struct {
    tsr__src base;
    tsr_gguf *g;
    float *row;          /* one dequantized row */
    int64_t row_cap;
} tsr__gguf_src;

static tsr_status tsr__gguf_find(tsr__gguf_src *s, tsr_wkind k, int layer, const tsr_gguf_tensor **t) {
    char name[256];
    tsr__name(name, sizeof name, tsr__gguf_names, k, layer);
    *t = tsr_gguf_find_tensor(s->g, name);
    if (!*t) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: tensor '%s' not found", tsr_gguf_path(s->g), name);
    if ((*t)->n_dims < 1 || (*t)->n_dims > 2)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' has %u dimensions, expected 1 or 2", tsr_gguf_path(s->g),
                          name, (*t)->n_dims);
    return TSR_OK;
}

static tsr_status tsr__gguf_shape(tsr__src *base, tsr_wkind k, int layer, int64_t *rows, int64_t *cols) {
    const tsr_gguf_tensor *t;
    TSR_TRY(tsr__gguf_find((tsr__gguf_src *)base, k, layer, &t));
    /* ggml order: ne[0] is the row length (HF `in`), ne[1] the rows (HF `out`). */
    if (t->n_dims == 1) *rows = t->ne[0], *cols = 1;
    else *rows = t->ne[1], *cols = t->ne[0];
    return TSR_OK;
}

static tsr_status tsr__gguf_read(tsr__src *base, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows,
                                 int64_t c0, int64_t n_cols, float *dst) {
    tsr__gguf_src *s = (tsr__gguf_src *)base;
    const tsr_gguf_tensor *t;
    TSR_TRY(tsr__gguf_find(s, k, layer, &t));
    bool permute = k == TSR_W_Q || k == TSR_W_K || k == TSR_W_Q_BIAS || k == TSR_W_K_BIAS;
    int64_t hd = base->cfg->head_dim;
    if (t->n_dims == 1) {
        /* vectors are small: dequantize whole, then pick */
        if (s->row_cap < t->ne[0]) {
            float *r = realloc(s->row, sizeof(float) * (size_t)t->ne[0]);
            if (!r) return tsr_errorf(TSR_ERR_OOM, "out of memory reading '%s'", t->cname);
            s->row = r, s->row_cap = t->ne[0];
        }
        TSR_TRY(tsr_gguf_tensor_to_f32(t, s->row));
        for (int64_t i = 0; i < n_rows; i++) {
            int64_t r = permute ? tsr__gguf_qk_row(hd, rows[i]) : rows[i];
            TSR_ASSERT(r >= 0 && r < t->ne[0] && n_cols == 1);
            dst[i] = s->row[r];
        }
        return TSR_OK;
    }
    int64_t cols = t->ne[0];
    TSR_ASSERT(c0 >= 0 && c0 + n_cols <= cols);
    if (c0 == 0 && n_cols == cols) {
        /* whole rows: dequantize each run of consecutive rows straight into dst */
        for (int64_t i = 0; i < n_rows;) {
            int64_t r = permute ? tsr__gguf_qk_row(hd, rows[i]) : rows[i], run = 1;
            while (i + run < n_rows && (permute ? tsr__gguf_qk_row(hd, rows[i + run]) : rows[i + run]) == r + run) run++;
            TSR_TRY(tsr_gguf_tensor_rows_to_f32(t, r, run, dst + i * n_cols));
            i += run;
        }
        return TSR_OK;
    }
    /* a column slice (row-parallel split): quantization blocks run along the row, so each row is
     * dequantized whole and the slice copied out */
    if (s->row_cap < cols) {
        float *r = realloc(s->row, sizeof(float) * (size_t)cols);
        if (!r) return tsr_errorf(TSR_ERR_OOM, "out of memory reading '%s'", t->cname);
        s->row = r, s->row_cap = cols;
    }
    for (int64_t i = 0; i < n_rows; i++) {
        int64_t r = permute ? tsr__gguf_qk_row(hd, rows[i]) : rows[i];
        TSR_TRY(tsr_gguf_tensor_rows_to_f32(t, r, 1, s->row));
        memcpy(dst + i * n_cols, s->row + c0, sizeof(float) * (size_t)n_cols);
    }
    return TSR_OK;
}

static void tsr__gguf_close(tsr__src *base) {
    tsr__gguf_src *s = (tsr__gguf_src *)base;
    tsr_gguf_close(s->g);
    free(s->row);
    free(s);
}

/* ---- dummy ---- */

typedef struct {
    tsr__src base;
    uint64_t seed;
} tsr__dummy_src;

static uint64_t tsr__mix(uint64_t x) {
    /* splitmix64 finalizer */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static tsr_status tsr__dummy_shape(tsr__src *base, tsr_wkind k, int layer, int64_t *rows, int64_t *cols) {
    (void)layer;
    const tsr_model_config *c = base->cfg;
    bool is_bias = k == TSR_W_Q_BIAS || k == TSR_W_K_BIAS || k == TSR_W_V_BIAS;
    if ((is_bias && !c->attn_bias) || k == TSR_W_O_BIAS || (k == TSR_W_LM_HEAD && c->tie_embeddings))
        return tsr_errorf(TSR_ERR_NOT_FOUND, "dummy model has no %s", tsr__rules[k].what);
    tsr__global_shape(c, k, rows, cols);
    return TSR_OK;
}

/* The generator's parameters for (kind, layer): element [r][c] of the unsplit tensor is
 * offset + scale * tsr_hash_uniform(key, r * C + c) (kernels/backend.h; a device fills the same
 * values through its fill_hash op). */
static void tsr__dummy_params(const tsr__dummy_src *s, tsr_wkind k, int layer, uint64_t *key, float *scale,
                              float *offset, int64_t *C) {
    int64_t R;
    tsr__global_shape(s->base.cfg, k, &R, C);
    /* Uniform values with the spread of a trained model's: ~1/sqrt(fan-in) for matrices, norms
     * near one, small biases, O(1) embeddings. */
    *scale = 1.0f / sqrtf((float)*C), *offset = 0.0f;
    if (*C == 1) *scale = 0.1f;
    if (k == TSR_W_ATTN_NORM || k == TSR_W_FFN_NORM || k == TSR_W_OUT_NORM) *offset = 1.0f;
    if (k == TSR_W_TOK_EMBD) *scale = 1.0f;
    *key = tsr__mix(s->seed ^ tsr__mix(((uint64_t)k << 32) ^ (uint64_t)(layer + 1)));
}

static tsr_status tsr__dummy_read(tsr__src *base, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows,
                                  int64_t c0, int64_t n_cols, float *dst) {
    tsr__dummy_src *s = (tsr__dummy_src *)base;
    int64_t C;
    float scale, offset;
    uint64_t key;
    tsr__dummy_params(s, k, layer, &key, &scale, &offset, &C);
    for (int64_t i = 0; i < n_rows; i++)
        for (int64_t j = 0; j < n_cols; j++) {
            uint64_t h = tsr__mix(key ^ (uint64_t)(rows[i] * C + c0 + j));
            float u = (float)((double)(h >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
            dst[i * n_cols + j] = offset + scale * u;
        }
    return TSR_OK;
}

static void tsr__dummy_close(tsr__src *base) { free(base); }

/* ------------------------------------------------------------------------------------------ */
/* config + opening a source                                                                   */

/* ---- a workspace (worker/workspace.h): rank files hold each kind's local slice ---- */

static const char *const tsr__ws_names[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = "tok_embd",           [TSR_W_ATTN_NORM] = "layers.%d.attn_norm",
    [TSR_W_Q] = "layers.%d.q",                [TSR_W_K] = "layers.%d.k",
    [TSR_W_V] = "layers.%d.v",                [TSR_W_Q_BIAS] = "layers.%d.q_bias",
    [TSR_W_K_BIAS] = "layers.%d.k_bias",      [TSR_W_V_BIAS] = "layers.%d.v_bias",
    [TSR_W_O] = "layers.%d.o",                [TSR_W_O_BIAS] = "layers.%d.o_bias",
    [TSR_W_FFN_NORM] = "layers.%d.ffn_norm",  [TSR_W_GATE] = "layers.%d.gate",
    [TSR_W_UP] = "layers.%d.up",              [TSR_W_DOWN] = "layers.%d.down",
    [TSR_W_OUT_NORM] = "out_norm",            [TSR_W_LM_HEAD] = "lm_head",
};

typedef struct {
    tsr__src base;
    char *dir;
    tsr_safetensors *st;   /* this rank's file, opened on first use */
} tsr__ws_src;

static tsr_status tsr__ws_find(tsr__ws_src *s, tsr_wkind k, int layer, const tsr_st_tensor **t, int64_t *r0,
                               int64_t *c0) {
    const tsr_shard *sh = s->base.shard;
    TSR_ASSERT(sh);
    if (!s->st) {
        char name[64];
        snprintf(name, sizeof name, "rank%d.safetensors", sh->rank);
        char *path = tsr_path_join(s->dir, name);
        tsr_status st = tsr_safetensors_open(path, &s->st);
        free(path);
        TSR_TRY(st);
    }
    char name[128];
    tsr__name(name, sizeof name, tsr__ws_names, k, layer);
    *t = tsr_safetensors_find(s->st, name);
    if (!*t) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s/rank%d.safetensors: no tensor '%s'", s->dir, sh->rank, name);
    int64_t nr, nc;
    tsr__local_slice(s->base.cfg, sh, k, r0, &nr, c0, &nc);
    int64_t fr = (*t)->shape[0], fc = (*t)->n_dims == 2 ? (*t)->shape[1] : 1;
    if ((*t)->n_dims < 1 || (*t)->n_dims > 2 || fr != nr || fc != nc ||
        ((*t)->dtype != TSR_F32 && (*t)->dtype != TSR_F16 && (*t)->dtype != TSR_BF16))
        return tsr_errorf(TSR_ERR_FORMAT,
                          "%s/rank%d.safetensors: '%s' is %s [%lld, %lld] but config.ini's model fields make rank %d's "
                          "share [%lld, %lld]: the workspace and its config.ini disagree (convert it again)",
                          s->dir, sh->rank, name, tsr_dtype_name((*t)->dtype), (long long)fr, (long long)fc, sh->rank,
                          (long long)nr, (long long)nc);
    return TSR_OK;
}

static tsr_status tsr__ws_shape(tsr__src *base, tsr_wkind k, int layer, int64_t *rows, int64_t *cols) {
    const tsr_st_tensor *t;
    int64_t r0, c0;
    TSR_TRY(tsr__ws_find((tsr__ws_src *)base, k, layer, &t, &r0, &c0));
    tsr__global_shape(base->cfg, k, rows, cols); /* the local shape matched this rank's share */
    return TSR_OK;
}

static tsr_status tsr__ws_read(tsr__src *base, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows,
                               int64_t c0, int64_t n_cols, float *dst) {
    const tsr_st_tensor *t;
    int64_t lr0, lc0;
    TSR_TRY(tsr__ws_find((tsr__ws_src *)base, k, layer, &t, &lr0, &lc0));
    int64_t cols = t->n_dims == 2 ? t->shape[1] : 1;
    size_t es = tsr_dtype_size(t->dtype);
    TSR_ASSERT(c0 - lc0 >= 0 && c0 - lc0 + n_cols <= cols);
    for (int64_t i = 0; i < n_rows; i++) {
        int64_t r = rows[i] - lr0;
        TSR_ASSERT(r >= 0 && r < t->shape[0]);
        const uint8_t *p = (const uint8_t *)t->data + ((size_t)r * (size_t)cols + (size_t)(c0 - lc0)) * es;
        tsr_convert_to_f32(t->dtype, p, dst + i * n_cols, n_cols);
    }
    return TSR_OK;
}

static void tsr__ws_close(tsr__src *base) {
    tsr__ws_src *s = (tsr__ws_src *)base;
    if (s->st) tsr_safetensors_close(s->st);
    free(s->dir);
    free(s);
}

static bool tsr__ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static bool tsr__is_gguf(const char *path) {
    if (tsr__ends_with(path, ".gguf")) return true;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

/* The directory holding config.json for an HF path (a dir, or a file inside it); malloc'd. */
static char *tsr__hf_dir(const char *path) {
    if (tsr_path_is_dir(path)) return strdup(path);
    char *d = strdup(path);
    if (!d) return NULL;
    char *slash = strrchr(d, '/');
    if (slash) *slash = 0;
    else strcpy(d, ".");
    return d;
}

static tsr_status tsr__open_source(const char *path, tsr_model_config *cfg, tsr__src **out) {
    *out = NULL;
    if (!tsr_path_exists(path)) return tsr_errorf(TSR_ERR_NOT_FOUND, "model '%s' does not exist", path);
    if (tsr_workspace_is(path)) {
        tsr__ws_src *s = calloc(1, sizeof *s);
        if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        tsr_status st = tsr_workspace_read_config(path, cfg, &s->base.ws_tp, NULL);
        if (st != TSR_OK) {
            free(s);
            return st;
        }
        s->dir = strdup(path);
        s->base.shape = tsr__ws_shape;
        s->base.read = tsr__ws_read;
        s->base.close = tsr__ws_close;
        s->base.kind_name = "workspace";
        *out = &s->base;
        return TSR_OK;
    }
    if (!tsr_path_is_dir(path) && tsr__is_gguf(path)) {
        tsr__gguf_src *s = calloc(1, sizeof *s);
        if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        tsr_status st = tsr_gguf_open(path, &s->g);
        if (st == TSR_OK) st = tsr_model_config_from_gguf(s->g, cfg);
        if (st == TSR_OK) st = tsr_model_config_validate(cfg, path);
        if (st != TSR_OK) {
            if (s->g) tsr_gguf_close(s->g);
            free(s);
            return st;
        }
        if (cfg->arch != TSR_ARCH_LLAMA && cfg->arch != TSR_ARCH_MISTRAL) {
            tsr_gguf_close(s->g);
            free(s);
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: GGUF architecture %s is not supported (llama only)", path,
                              tsr_arch_name(cfg->arch));
        }
        s->base.shape = tsr__gguf_shape;
        s->base.read = tsr__gguf_read;
        s->base.close = tsr__gguf_close;
        s->base.kind_name = "gguf";
        *out = &s->base;
        return TSR_OK;
    }
    char *dir = tsr__hf_dir(path);
    if (!dir) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    char *cj = tsr_path_join(dir, "config.json");
    tsr_status st = tsr_path_exists(cj) ? tsr_model_config_from_hf(cj, cfg)
                                        : tsr_errorf(TSR_ERR_NOT_FOUND,
                                                     "'%s' is neither a GGUF file nor an HF model directory "
                                                     "(no config.json in %s)",
                                                     path, dir);
    free(cj);
    if (st == TSR_OK) st = tsr_model_config_validate(cfg, path);
    tsr__st_src *s = NULL;
    if (st == TSR_OK) {
        s = calloc(1, sizeof *s);
        if (!s) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    if (st == TSR_OK) st = tsr_safetensors_open(tsr_path_is_dir(path) ? dir : path, &s->st);
    free(dir);
    if (st != TSR_OK) {
        free(s);
        return st;
    }
    s->packed_qkv = cfg->arch == TSR_ARCH_INTERNLM2;
    s->names = s->packed_qkv ? tsr__hf_internlm2_names : tsr__hf_llama_names;
    s->base.shape = tsr__st_shape;
    s->base.read = tsr__st_read;
    s->base.close = tsr__st_close;
    s->base.kind_name = "safetensors";
    *out = &s->base;
    return TSR_OK;
}

tsr_status tsr_model_config_load(const char *path, tsr_model_config *cfg) {
    tsr__src *s;
    TSR_TRY(tsr__open_source(path, cfg, &s));
    s->close(s);
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* the loader                                                                                  */

typedef struct {
    tsr_model *m;
    tsr__src *src;
    float *stage;         /* host staging for one fused tensor */
    size_t stage_cap;     /* floats */
    int64_t *rows;        /* row-index scratch */
    size_t rows_cap;
} tsr__loader;

static tsr_status tsr__stage(tsr__loader *L, size_t n_floats) {
    if (n_floats <= L->stage_cap) return TSR_OK;
    float *p = realloc(L->stage, sizeof(float) * n_floats);
    if (!p) return tsr_errorf(TSR_ERR_OOM, "out of host memory staging %zu weights", n_floats);
    L->stage = p, L->stage_cap = n_floats;
    return TSR_OK;
}

/* Checks a kind's shape against the config; *present is false for an absent optional one. */
static tsr_status tsr__check(tsr__loader *L, tsr_wkind k, int layer, bool *present) {
    int64_t rows, cols, wr, wc;
    tsr_status st = L->src->shape(L->src, k, layer, &rows, &cols);
    *present = st == TSR_OK;
    if (st == TSR_ERR_NOT_FOUND && tsr__rules[k].optional) {
        tsr_clear_error();
        return TSR_OK;
    }
    TSR_TRY(st);
    tsr__global_shape(&L->m->cfg, k, &wr, &wc);
    if (rows != wr || cols != wc)
        return tsr_errorf(TSR_ERR_FORMAT, "%s%s%.0d: shape [%lld, %lld] does not match the config's [%lld, %lld]",
                          tsr__rules[k].what, tsr__rules[k].per_layer ? " of layer " : "",
                          tsr__rules[k].per_layer ? layer : 0, (long long)rows, (long long)cols, (long long)wr,
                          (long long)wc);
    return TSR_OK;
}

/* Reads this rank's slice of (kind, layer) into dst ([nr][nc] floats). */
static tsr_status tsr__read_local(tsr__loader *L, tsr_wkind k, int layer, float *dst, int64_t *n_out) {
    int64_t r0, nr, c0, nc;
    tsr__local_slice(&L->m->cfg, &L->m->shard, k, &r0, &nr, &c0, &nc);
    if ((size_t)nr > L->rows_cap) {
        int64_t *p = realloc(L->rows, sizeof(int64_t) * (size_t)nr);
        if (!p) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        L->rows = p, L->rows_cap = (size_t)nr;
    }
    for (int64_t i = 0; i < nr; i++) L->rows[i] = r0 + i;
    if (n_out) *n_out = nr * nc;
    tsr_status st = L->src->read(L->src, k, layer, L->rows, nr, c0, nc, dst);
    if (st != TSR_OK && tsr__rules[k].per_layer)
        return tsr_error_wrap(st, "%s of layer %d", tsr__rules[k].what, layer);
    return st;
}

/* Uploads n f32 values as the backend's type (converted in place in the staging buffer, which
 * the caller refills before its next use). */
static tsr_status tsr__upload(tsr__loader *L, void **dst, float *src, int64_t n) {
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
static tsr_status tsr__dummy_on_device(tsr__loader *L, const tsr_wkind *kinds, int n_kinds, int layer,
                                       const int64_t *row0, void **dst, bool *done) {
    tsr_backend *be = L->m->be;
    *done = false;
    if (L->src->read != tsr__dummy_read || !be->ops->fill_hash) return TSR_OK;
    int64_t total = 0, r0[4], nr[4], c0[4], nc[4];
    TSR_ASSERT(n_kinds <= 4);
    for (int i = 0; i < n_kinds; i++) {
        tsr__local_slice(&L->m->cfg, &L->m->shard, kinds[i], &r0[i], &nr[i], &c0[i], &nc[i]);
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
        tsr__dummy_params((const tsr__dummy_src *)L->src, kinds[i], layer, &key, &scale, &offset, &C);
        be->ops->fill_hash(be, (char *)*dst + (size_t)off * es, nr[i], nc[i], key, r0[i] * C + c0[i], C, scale, offset);
        off += nr[i] * nc[i];
    }
    L->m->weight_bytes += bytes;
    *done = true;
    return TSR_OK;
}

/* Reads one or more kinds back to back into one buffer (q|k|v, gate|up) and uploads it. */
static tsr_status tsr__load_fused(tsr__loader *L, const tsr_wkind *kinds, int n_kinds, int layer, void **dst) {
    bool on_device;
    TSR_TRY(tsr__dummy_on_device(L, kinds, n_kinds, layer, NULL, dst, &on_device));
    if (on_device) return TSR_OK;
    int64_t total = 0;
    for (int i = 0; i < n_kinds; i++) {
        int64_t r0, nr, c0, nc;
        tsr__local_slice(&L->m->cfg, &L->m->shard, kinds[i], &r0, &nr, &c0, &nc);
        total += nr * nc;
    }
    TSR_TRY(tsr__stage(L, (size_t)total));
    int64_t off = 0;
    for (int i = 0; i < n_kinds; i++) {
        int64_t n;
        TSR_TRY(tsr__read_local(L, kinds[i], layer, L->stage + off, &n));
        off += n;
    }
    return tsr__upload(L, dst, L->stage, total);
}

static tsr_status tsr__load_one(tsr__loader *L, tsr_wkind k, int layer, void **dst) {
    return tsr__load_fused(L, &k, 1, layer, dst);
}

static tsr_status tsr__load_all(tsr__loader *L, bool progress) {
    tsr_model *m = L->m;
    const tsr_model_config *c = &m->cfg;
    bool present;
    m->w.layers = calloc((size_t)c->n_layer, sizeof(tsr_layer_weights));
    if (!m->w.layers) return tsr_errorf(TSR_ERR_OOM, "out of memory");

    TSR_TRY(tsr__check(L, TSR_W_TOK_EMBD, 0, &present));
    TSR_TRY(tsr__load_one(L, TSR_W_TOK_EMBD, 0, &m->w.tok_embd));
    TSR_TRY(tsr__check(L, TSR_W_OUT_NORM, 0, &present));
    TSR_TRY(tsr__load_one(L, TSR_W_OUT_NORM, 0, &m->w.out_norm));
    TSR_TRY(tsr__check(L, TSR_W_LM_HEAD, 0, &present));
    if (present) {
        TSR_TRY(tsr__load_one(L, TSR_W_LM_HEAD, 0, &m->w.lm_head));
    } else {
        /* tied: the same rows, no copy (both vocab-parallel, so the same slice under TP) */
        m->w.lm_head = m->w.tok_embd;
        m->w.lm_head_aliases_embd = true;
    }
    if (progress) tsr_progress("loading weights", 0, c->n_layer);

    static const tsr_wkind qkv[] = {TSR_W_Q, TSR_W_K, TSR_W_V};
    static const tsr_wkind bqkv[] = {TSR_W_Q_BIAS, TSR_W_K_BIAS, TSR_W_V_BIAS};
    static const tsr_wkind gate_up[] = {TSR_W_GATE, TSR_W_UP};
    for (int l = 0; l < (int)c->n_layer; l++) {
        tsr_layer_weights *lw = &m->w.layers[l];
        for (int k = TSR_W_ATTN_NORM; k <= TSR_W_DOWN; k++) {
            if (tsr__rules[k].optional) continue; /* the biases, checked below */
            TSR_TRY(tsr__check(L, (tsr_wkind)k, l, &present));
        }
        /* biases come as a set: all three or none */
        bool has_b[3];
        for (int i = 0; i < 3; i++) TSR_TRY(tsr__check(L, bqkv[i], l, &has_b[i]));
        if (has_b[0] != has_b[1] || has_b[0] != has_b[2])
            return tsr_errorf(TSR_ERR_FORMAT, "layer %d has some of the q/k/v biases but not all", l);
        bool has_bo;
        TSR_TRY(tsr__check(L, TSR_W_O_BIAS, l, &has_bo));

        TSR_TRY(tsr__load_one(L, TSR_W_ATTN_NORM, l, &lw->attn_norm));
        TSR_TRY(tsr__load_fused(L, qkv, 3, l, &lw->wqkv));
        if (has_b[0]) TSR_TRY(tsr__load_fused(L, bqkv, 3, l, &lw->bqkv));
        TSR_TRY(tsr__load_one(L, TSR_W_O, l, &lw->wo));
        if (has_bo) TSR_TRY(tsr__load_one(L, TSR_W_O_BIAS, l, &lw->bo));
        TSR_TRY(tsr__load_one(L, TSR_W_FFN_NORM, l, &lw->ffn_norm));
        TSR_TRY(tsr__load_fused(L, gate_up, 2, l, &lw->w_gate_up));
        TSR_TRY(tsr__load_one(L, TSR_W_DOWN, l, &lw->w_down));
        if (progress) tsr_progress("loading weights", l + 1, c->n_layer);
    }
    return TSR_OK;
}

static tsr_status tsr__load_from(tsr__src *src, const tsr_model_config *cfg, tsr_backend *be,
                                 const tsr_load_opts *opts, tsr_model **out) {
    tsr_load_opts def = {0, 1, false};
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
    tsr__loader L = {.m = m, .src = src};
    double t0 = tsr_now();
    if (st == TSR_OK) st = tsr__load_all(&L, opts->progress);
    free(L.stage);
    free(L.rows);
    if (st != TSR_OK) {
        tsr_model_free(m);
        return st;
    }
    TSR_LOGD("loaded %s weights (rank %d of %d): %.1f MB in %.2f s", src->kind_name, opts->tp_rank, opts->tp_size,
             (double)m->weight_bytes / 1e6, tsr_now() - t0);
    *out = m;
    return TSR_OK;
}

tsr_status tsr_model_load(const char *path, tsr_backend *be, const tsr_load_opts *opts, tsr_model **out) {
    tsr_model_config cfg;
    tsr__src *src;
    tsr_status st = tsr__open_source(path, &cfg, &src);
    if (st != TSR_OK) return tsr_error_wrap(st, "loading model %s", path);
    st = tsr__load_from(src, &cfg, be, opts, out);
    src->close(src);
    if (st != TSR_OK) return tsr_error_wrap(st, "loading model %s", path);
    return TSR_OK;
}

tsr_status tsr_model_init_dummy(const tsr_model_config *cfg, tsr_backend *be, const tsr_load_opts *opts,
                                uint64_t seed, tsr_model **out) {
    TSR_TRY(tsr_model_config_validate(cfg, "dummy model"));
    tsr__dummy_src *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    s->seed = seed;
    s->base.shape = tsr__dummy_shape;
    s->base.read = tsr__dummy_read;
    s->base.close = tsr__dummy_close;
    s->base.kind_name = "dummy";
    tsr_status st = tsr__load_from(&s->base, cfg, be, opts, out);
    s->base.close(&s->base);
    return st;
}

void tsr_model_free(tsr_model *m) {
    if (!m) return;
    tsr_backend *be = m->be;
    if (m->w.layers) {
        for (int64_t l = 0; l < m->cfg.n_layer; l++) {
            tsr_layer_weights *lw = &m->w.layers[l];
            void *ptrs[] = {lw->attn_norm, lw->wqkv, lw->bqkv, lw->wo, lw->bo, lw->ffn_norm, lw->w_gate_up, lw->w_down};
            for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) be->ops->dfree(be, ptrs[i]);
        }
        free(m->w.layers);
    }
    if (!m->w.lm_head_aliases_embd) be->ops->dfree(be, m->w.lm_head);
    be->ops->dfree(be, m->w.tok_embd);
    be->ops->dfree(be, m->w.out_norm);
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
    };
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* writing one rank of a workspace                                                             */

tsr_status tsr_workspace_write_rank(const char *model_path, int rank, int size, tsr_dtype dtype, const char *out_path) {
    if (dtype != TSR_F32 && dtype != TSR_F16 && dtype != TSR_BF16)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "workspace weights are f32, f16 or bf16, not %s", tsr_dtype_name(dtype));
    tsr_model_config cfg;
    tsr__src *src;
    TSR_TRY(tsr__open_source(model_path, &cfg, &src));
    tsr_model m = {0};
    m.cfg = cfg;
    src->cfg = &m.cfg;
    tsr_status st = tsr_shard_plan(&cfg, rank, size, &m.shard);
    src->shard = &m.shard;
    tsr__loader L = {.m = &m, .src = src};
    int64_t n_max = 2 + 16 * cfg.n_layer, n = 0;
    tsr_st_write_tensor *ts = calloc((size_t)n_max, sizeof *ts);
    char (*names)[96] = calloc((size_t)n_max, sizeof *names);
    void **bufs = calloc((size_t)n_max, sizeof *bufs);
    if (!ts || !names || !bufs) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    for (int layer = -1; layer < (int)cfg.n_layer && st == TSR_OK; layer++) {
        for (int k = 0; k < TSR_W_COUNT && st == TSR_OK; k++) {
            if (tsr__rules[k].per_layer != (layer >= 0)) continue;
            bool present;
            st = tsr__check(&L, (tsr_wkind)k, layer < 0 ? 0 : layer, &present);
            if (st != TSR_OK || !present) continue;
            int64_t r0, nr, c0, nc, cnt;
            tsr__local_slice(&cfg, &m.shard, (tsr_wkind)k, &r0, &nr, &c0, &nc);
            st = tsr__stage(&L, (size_t)(nr * nc));
            if (st == TSR_OK) st = tsr__read_local(&L, (tsr_wkind)k, layer < 0 ? 0 : layer, L.stage, &cnt);
            if (st != TSR_OK) break;
            size_t es = tsr_dtype_size(dtype);
            bufs[n] = malloc(es * (size_t)cnt);
            if (!bufs[n]) {
                st = tsr_errorf(TSR_ERR_OOM, "out of memory");
                break;
            }
            for (int64_t i = 0; i < cnt; i++) {
                if (dtype == TSR_F32) ((float *)bufs[n])[i] = L.stage[i];
                else if (dtype == TSR_F16) ((uint16_t *)bufs[n])[i] = tsr_f32_to_f16(L.stage[i]);
                else ((uint16_t *)bufs[n])[i] = tsr_f32_to_bf16(L.stage[i]);
            }
            tsr__name(names[n], sizeof names[n], tsr__ws_names, (tsr_wkind)k, layer < 0 ? 0 : layer);
            bool vec = tsr__rules[k].kind == TSR_W_ATTN_NORM || tsr__rules[k].kind == TSR_W_FFN_NORM ||
                       tsr__rules[k].kind == TSR_W_OUT_NORM || k == TSR_W_Q_BIAS || k == TSR_W_K_BIAS ||
                       k == TSR_W_V_BIAS || k == TSR_W_O_BIAS;
            ts[n] = (tsr_st_write_tensor){.name = names[n], .dtype = dtype, .n_dims = vec ? 1 : 2,
                                          .shape = {nr, nc}, .data = bufs[n]};
            n++;
        }
        if (layer >= 0) tsr_progress("converting layers", layer + 1, cfg.n_layer);
    }
    if (st == TSR_OK) {
        char rank_s[16], size_s[16];
        snprintf(rank_s, sizeof rank_s, "%d", rank);
        snprintf(size_s, sizeof size_s, "%d", size);
        const char *meta[] = {"format", "tessera-workspace", "rank", rank_s, "tensor_para_size", size_s, NULL};
        st = tsr_safetensors_write(out_path, ts, n, meta);
    }
    for (int64_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(ts);
    free(L.stage);
    free(L.rows);
    src->close(src);
    return st;
}
