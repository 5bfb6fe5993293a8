/* The HF safetensors weight source (see weights_source.h): an HF directory (config.json and
 * one or more *.safetensors) or one .safetensors file beside its config.json, read straight
 * from the mmap.  Llama/Mistral/Qwen2 names, and InternLM2's names with its packed `wqkv`
 * unpacked by row mapping.  A checkpoint with a quantization_config (AutoAWQ, GPTQ,
 * compressed-tensors int4; weights_hf_quant.h) is read through its packing: read() dequantizes,
 * raw() hands the CPU an INT4G copy converted once per tensor and kept until close(). */
#include "worker/weights_hf.h"

#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "worker/weights_hf_quant.h"

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

/* One converted INT4G tensor, kept for the model's lifetime (raw()'s views point into it). */
typedef struct {
    char name[256];
    tsr_wtensor w;
    void *buf;
} tsr__st_conv;

typedef struct {
    tsr__src base;
    tsr_safetensors *st;
    const char *const *names;
    bool packed_qkv;
    tsr__hfq q;
    tsr__st_conv *conv;
    int64_t n_conv, cap_conv;
    bool warned_gidx;
} tsr__st_src;

/* The quantized tensors standing for (k, layer)'s weight; *found false for a dense tensor. */
static tsr_status tsr__st_qfind(tsr__st_src *s, tsr_wkind k, int layer, tsr__hfq_lin *l, bool *found) {
    char name[256];
    tsr__weights_name(name, sizeof name, s->names, k, layer);
    return tsr__hfq_find(&s->q, s->st, name, l, found);
}

static tsr_status tsr__st_find(tsr__st_src *s, tsr_wkind k, int layer, const tsr_st_tensor **t) {
    char name[256];
    tsr__weights_name(name, sizeof name, s->names, k, layer);
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
    tsr__hfq_lin l;
    bool quant;
    TSR_TRY(tsr__st_qfind(s, k, layer, &l, &quant));
    if (quant && s->packed_qkv && tsr__is_qkv(k))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "a quantized packed wqkv (InternLM2) is not supported");
    if (quant) {
        *rows = l.rows, *cols = l.cols;
        return TSR_OK;
    }
    TSR_TRY(tsr__st_find(s, k, layer, &t));
    if (s->packed_qkv && tsr__is_qkv(k)) {
        /* The packed tensor must be exactly q + k + v; then report the logical shape. */
        const tsr_model_config *c = base->cfg;
        int64_t want = (c->n_head + 2 * c->n_kv_head) * c->head_dim;
        if (t->shape[0] != want)
            return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has %lld rows, expected (n_head + 2 n_kv_head) * head_dim = %lld",
                              t->name, (long long)t->shape[0], (long long)want);
        tsr__shard_global_shape(c, k, rows, cols);
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
    tsr__hfq_lin l;
    bool quant;
    TSR_TRY(tsr__st_qfind(s, k, layer, &l, &quant));
    if (quant) {
        TSR_ASSERT(c0 >= 0 && c0 + n_cols <= l.cols);
        for (int64_t i = 0; i < n_rows; i++) {
            TSR_ASSERT(rows[i] >= 0 && rows[i] < l.rows);
            tsr__hfq_read_row(&s->q, &l, rows[i], c0, n_cols, dst + i * n_cols);
        }
        return TSR_OK;
    }
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

/* A quantized layer as INT4G (converted on first use); UNSUPPORTED for a dense tensor and for
 * groups INT4G cannot hold (g_idx reordering: logged once, the loader then dequantizes). */
static tsr_status tsr__st_raw(tsr__src *base, tsr_wkind k, int layer, tsr_wtensor *out, int64_t *row0, int64_t *col0) {
    tsr__st_src *s = (tsr__st_src *)base;
    *row0 = *col0 = 0;
    tsr__hfq_lin l;
    bool quant;
    TSR_TRY(tsr__st_qfind(s, k, layer, &l, &quant));
    if (!quant || (s->packed_qkv && tsr__is_qkv(k)))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "not a quantized tensor Tessera keeps as stored");
    for (int64_t i = 0; i < s->n_conv; i++)
        if (!strcmp(s->conv[i].name, l.qw->name)) {
            *out = s->conv[i].w;
            return TSR_OK;
        }
    if (s->n_conv == s->cap_conv) {
        int64_t cap = s->cap_conv ? 2 * s->cap_conv : 64;
        tsr__st_conv *p = realloc(s->conv, sizeof *p * (size_t)cap);
        if (!p) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        s->conv = p, s->cap_conv = cap;
    }
    tsr__st_conv *c = &s->conv[s->n_conv];
    tsr_status st = tsr__hfq_to_int4g(&s->q, &l, &c->w, &c->buf);
    if (st == TSR_ERR_UNSUPPORTED && !s->warned_gidx) {
        TSR_LOGI("%s: %s; such layers run as a dequantized copy", s->q.what, tsr_last_error());
        s->warned_gidx = true;
    }
    TSR_TRY(st);
    snprintf(c->name, sizeof c->name, "%s", l.qw->name);
    s->n_conv++;
    *out = c->w;
    return TSR_OK;
}

static void tsr__st_close(tsr__src *base) {
    tsr__st_src *s = (tsr__st_src *)base;
    tsr_safetensors_close(s->st);
    for (int64_t i = 0; i < s->n_conv; i++) free(s->conv[i].buf);
    free(s->conv);
    free(s);
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

tsr_status tsr__hf_source_open(const char *path, tsr_model_config *cfg, tsr__src **out) {
    char *dir = tsr__hf_dir(path);
    if (!dir) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    char *cj = tsr_path_join(dir, "config.json");
    tsr_status st = tsr_path_exists(cj) ? tsr_model_config_from_hf(cj, cfg)
                                        : tsr_errorf(TSR_ERR_NOT_FOUND,
                                                     "'%s' is neither a GGUF file nor an HF model directory "
                                                     "(no config.json in %s)",
                                                     path, dir);
    if (st == TSR_OK) st = tsr_model_config_validate(cfg, path);
    tsr__st_src *s = NULL;
    if (st == TSR_OK) {
        s = calloc(1, sizeof *s);
        if (!s) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    if (st == TSR_OK) st = tsr__hfq_parse(cj, &s->q);
    free(cj);
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
    if (s->q.method != TSR__HFQ_NONE) {
        s->base.raw = tsr__st_raw;
        TSR_LOGD("quantized checkpoint: %s", s->q.what);
    }
    s->base.kind_name = "safetensors";
    *out = &s->base;
    return TSR_OK;
}
