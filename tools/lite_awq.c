/* AWQ scale search, 4-bit group quantization, AutoAWQ GEMM packing and the checkpoint writer
 * (lite_awq.h).  Weights come through the loader's sources (worker/weights_reader.h) as f32 in HF
 * orientation [out, in], so a GGUF (its Q/K rows back in HF order) and an HF directory are read
 * alike. */
#include "tools/lite_awq.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cblas.h>
#include <cjson/cJSON.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "worker/weights.h"
#include "worker/weights_reader.h"
#include "worker/workspace_convert.h"

static const int tsr__awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

/* Per-group asymmetric 4-bit quantization of w [out][in]: q [out][in] (0..15), scale and zero
 * [out][in/g] (scale already rounded to f16, as stored). */
static void tsr__awq_quant(const float *w, int64_t out, int64_t in, int64_t g, uint8_t *q, float *scale,
                           uint8_t *zero) {
    int64_t ng = in / g;
    for (int64_t o = 0; o < out; o++)
        for (int64_t gi = 0; gi < ng; gi++) {
            const float *r = w + o * in + gi * g;
            float mx = r[0], mn = r[0];
            for (int64_t i = 1; i < g; i++) mx = r[i] > mx ? r[i] : mx, mn = r[i] < mn ? r[i] : mn;
            float sc = tsr_f16_to_f32(tsr_f32_to_f16(fmaxf(mx - mn, 1e-5f) / 15.0f));
            float z = -nearbyintf(mn / sc);
            z = z < 0 ? 0 : z > 15 ? 15 : z;
            scale[o * ng + gi] = sc;
            zero[o * ng + gi] = (uint8_t)z;
            for (int64_t i = 0; i < g; i++) {
                float v = nearbyintf(r[i] / sc) + z;
                q[o * in + gi * g + i] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
            }
        }
}

/* d = dequant(quant(w * s)) / s - w  (s per input column; s NULL: ones) */
static void tsr__awq_fake_diff(const float *w, int64_t out, int64_t in, int64_t g, const float *s, float *d,
                               uint8_t *q, float *sc, uint8_t *z) {
    float *ws = d;
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) ws[o * in + i] = w[o * in + i] * (s ? s[i] : 1.0f);
    tsr__awq_quant(ws, out, in, g, q, sc, z);
    int64_t ng = in / g;
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            float deq = ((float)q[o * in + i] - (float)z[o * ng + i / g]) * sc[o * ng + i / g];
            d[o * in + i] = deq / (s ? s[i] : 1.0f) - w[o * in + i];
        }
}

/* One group of linear layers sharing an input. */
typedef struct {
    float *w[3];
    int64_t out[3];
    int nw;
    int64_t in;
} tsr__awq_group;

typedef struct {
    float *d, *y, *sc;
    uint8_t *q, *z;
} tsr__awq_scratch;

/* The group's output MSE on the kept rows X [n][in] with scales s (NULL: RTN). */
static double tsr__awq_group_err(const tsr__awq_group *G, const float *X, int64_t n, const float *s, int64_t g,
                                 tsr__awq_scratch *t) {
    double err = 0;
    int64_t cnt = 0;
    for (int j = 0; j < G->nw; j++) {
        tsr__awq_fake_diff(G->w[j], G->out[j], G->in, g, s, t->d, t->q, t->sc, t->z);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)G->out[j], (int)G->in, 1.0f, X, (int)G->in,
                    t->d, (int)G->in, 0.0f, t->y, (int)G->out[j]);
        for (int64_t i = 0; i < n * G->out[j]; i++) err += (double)t->y[i] * t->y[i];
        cnt += n * G->out[j];
    }
    return cnt ? err / (double)cnt : 0;
}

/* Per input channel magnitudes of a group: xm = absmean of the activations; wm = the mean over the
 * group's output rows of |w| / (absmax of its quantization group).  tie > 1 (o under GQA): the
 * channels of the tie query heads of one KV head (head_dim hd) get their mean. */
static void tsr__awq_mags(const tsr__awq_group *G, const tsr_lite_point *p, int64_t g, int64_t tie, int64_t hd,
                          float *xm, float *wm) {
    int64_t in = G->in, rows = 0;
    for (int64_t c = 0; c < in; c++) xm[c] = tsr_lite_absmean(p, c), wm[c] = 0;
    for (int j = 0; j < G->nw; j++)
        for (int64_t o = 0; o < G->out[j]; o++, rows++)
            for (int64_t gi = 0; gi < in / g; gi++) {
                const float *r = G->w[j] + o * in + gi * g;
                float mx = 0;
                for (int64_t i = 0; i < g; i++) mx = fmaxf(mx, fabsf(r[i]));
                for (int64_t i = 0; i < g; i++) wm[gi * g + i] += mx > 0 ? fabsf(r[i]) / mx : 0;
            }
    for (int64_t c = 0; c < in; c++) wm[c] /= (float)(rows ? rows : 1);
    for (int64_t h0 = 0; tie > 1 && h0 < in; h0 += tie * hd)
        for (int64_t j = 0; j < hd; j++)
            for (int v = 0; v < 2; v++) {
                float *a = v ? wm : xm, m = 0;
                for (int64_t r = 0; r < tie; r++) m += a[h0 + r * hd + j];
                for (int64_t r = 0; r < tie; r++) a[h0 + r * hd + j] = m / (float)tie;
            }
}

/* s = xm^alpha (duo: / (wm^(1-alpha) + 1e-4)), at least 1e-4, over sqrt(max * min). */
static void tsr__awq_scales(const float *xm, const float *wm, int64_t dim, bool duo, double alpha, float *s) {
    float mx = 0, mn = INFINITY;
    for (int64_t c = 0; c < dim; c++) {
        double v = pow(fmax(xm[c], 1e-4), alpha);
        if (duo) v /= pow(fmax(wm[c], 1e-8), 1 - alpha) + 1e-4;
        s[c] = v < 1e-4 ? 1e-4f : (float)v;
        mx = fmaxf(mx, s[c]), mn = fminf(mn, s[c]);
    }
    float norm = sqrtf(mx * mn);
    for (int64_t c = 0; c < dim; c++) s[c] /= norm;
}

/* Picks the scales of group G from point p into s (xm, wm: scratch of G->in); fills the report
 * entry. */
static void tsr__awq_choose(const tsr__awq_group *G, const tsr_lite_point *p, const tsr_awq_opts *o, int64_t tie,
                            int64_t hd, float *s, float *xm, float *wm, tsr__awq_scratch *t, cJSON *rep) {
    double best_a = o->rtn ? 0 : o->alpha, best_e = -1, rtn_e = -1;
    bool rows = p->n_rows > 0, best_duo = false;
    tsr__awq_mags(G, p, o->group, tie, hd, xm, wm);
    if (o->search && !o->rtn && rows) {
        for (int duo = 0; duo <= (o->duo ? 1 : 0); duo++)
            for (int64_t i = 0; i < o->n_grid; i++) {
                double a = (double)i / (double)o->n_grid;
                if (duo && i == 0) continue; /* wm^-1 alone */
                tsr__awq_scales(xm, wm, G->in, duo, a, s);
                double e = tsr__awq_group_err(G, p->rows, p->n_rows, s, o->group, t);
                if (i == 0) rtn_e = e;
                if (best_e < 0 || e < best_e) best_e = e, best_a = a, best_duo = duo;
            }
    }
    tsr__awq_scales(xm, wm, G->in, best_duo, best_a, s);
    if (rows && best_e < 0) best_e = tsr__awq_group_err(G, p->rows, p->n_rows, s, o->group, t);
    if (rows && rtn_e < 0) rtn_e = best_a == 0 ? best_e : tsr__awq_group_err(G, p->rows, p->n_rows, NULL, o->group, t);
    cJSON_AddNumberToObject(rep, "alpha", best_a);
    if (o->duo) cJSON_AddBoolToObject(rep, "duo", best_duo);
    if (rows) {
        cJSON_AddNumberToObject(rep, "mse", best_e);
        cJSON_AddNumberToObject(rep, "mse_rtn", rtn_e);
    }
}

/* Output MSE on rows X [n][in] of w [out][in] quantized, against ref [out][in]. */
static double tsr__awq_lin_err(const float *w, const float *ref, int64_t out, int64_t in, int64_t g, const float *X,
                               int64_t n, tsr__awq_scratch *t) {
    int64_t ng = in / g;
    tsr__awq_quant(w, out, in, g, t->q, t->sc, t->z);
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++)
            t->d[o * in + i] = ((float)t->q[o * in + i] - (float)t->z[o * ng + i / g]) * t->sc[o * ng + i / g] - ref[o * in + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, X, (int)in, t->d, (int)in,
                0.0f, t->y, (int)out);
    double err = 0;
    for (int64_t i = 0; i < n * out; i++) err += (double)t->y[i] * t->y[i];
    return n > 0 && out > 0 ? err / (double)(n * out) : 0;
}

/* auto_clip of w [out][in] on rows X [n][in] (the layer's input in w's scaled space): per output
 * row and group, the ratio r (1 - 0.5 i / n_clip) whose clamp of w to r [min, max] gives the
 * smallest error of the group's share of the output, then w is clamped.  Kept only when the
 * layer's output MSE drops: *e0 / *e1 the MSE without / with, *mean_r the mean ratio. */
static tsr_status tsr__awq_clip(float *w, int64_t out, int64_t in, int64_t g, const float *X, int64_t n,
                                int64_t n_clip, tsr__awq_scratch *t, double *e0, double *e1, double *mean_r) {
    int64_t ng = in / g;
    double *best = malloc(sizeof(double) * (size_t)(out * ng));
    float *br = malloc(sizeof(float) * (size_t)(out * ng)), *lo = malloc(sizeof(float) * (size_t)(out * ng)),
          *hi = malloc(sizeof(float) * (size_t)(out * ng)), *w0 = malloc(sizeof(float) * (size_t)(out * in));
    if (!best || !br || !lo || !hi || !w0) {
        free(best), free(br), free(lo), free(hi), free(w0);
        return tsr_errorf(TSR_ERR_OOM, "out of memory clipping weights");
    }
    memcpy(w0, w, sizeof(float) * (size_t)(out * in));
    for (int64_t o = 0; o < out; o++)
        for (int64_t gi = 0; gi < ng; gi++) {
            const float *r = w + o * in + gi * g;
            float mx = r[0], mn = r[0];
            for (int64_t i = 1; i < g; i++) mx = fmaxf(mx, r[i]), mn = fminf(mn, r[i]);
            lo[o * ng + gi] = mn, hi[o * ng + gi] = mx;
        }
    for (int64_t k = 0; k < n_clip; k++) {
        float ratio = 1.0f - 0.5f * (float)k / (float)n_clip;
        float *d = t->d;
        for (int64_t o = 0; o < out; o++)
            for (int64_t gi = 0; gi < ng; gi++) {
                float l = lo[o * ng + gi], h = hi[o * ng + gi];
                l = l < 0 ? l * ratio : l, h = h > 0 ? h * ratio : h;
                for (int64_t i = gi * g; i < gi * g + g; i++) d[o * in + i] = fminf(fmaxf(w0[o * in + i], l), h);
            }
        tsr__awq_quant(d, out, in, g, t->q, t->sc, t->z);
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++)
                d[o * in + i] = ((float)t->q[o * in + i] - (float)t->z[o * ng + i / g]) * t->sc[o * ng + i / g] - w0[o * in + i];
        for (int64_t gi = 0; gi < ng; gi++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)g, 1.0f, X + gi * g, (int)in,
                        d + gi * g, (int)in, 0.0f, t->y, (int)out);
            for (int64_t o = 0; o < out; o++) {
                double e = 0;
                for (int64_t r = 0; r < n; r++) e += (double)t->y[r * out + o] * t->y[r * out + o];
                if (k == 0 || e < best[o * ng + gi]) best[o * ng + gi] = e, br[o * ng + gi] = ratio;
            }
        }
    }
    double rs = 0;
    for (int64_t o = 0; o < out; o++)
        for (int64_t gi = 0; gi < ng; gi++) {
            float ratio = br[o * ng + gi], l = lo[o * ng + gi], h = hi[o * ng + gi];
            l = l < 0 ? l * ratio : l, h = h > 0 ? h * ratio : h;
            rs += ratio;
            for (int64_t i = gi * g; i < gi * g + g; i++) w[o * in + i] = fminf(fmaxf(w0[o * in + i], l), h);
        }
    *e0 = tsr__awq_lin_err(w0, w0, out, in, g, X, n, t);
    *e1 = tsr__awq_lin_err(w, w0, out, in, g, X, n, t);
    *mean_r = rs / (double)(out * ng);
    if (*e1 >= *e0) memcpy(w, w0, sizeof(float) * (size_t)(out * in)), *e1 = *e0, *mean_r = 1;
    free(best), free(br), free(lo), free(hi), free(w0);
    return TSR_OK;
}

/* The checkpoint being built: tensors and their buffers. */
typedef struct {
    tsr_st_write_tensor *ts;
    char (*names)[128];
    void **bufs;
    int64_t n, cap;
} tsr__awq_out;

static tsr_status tsr__awq_add(tsr__awq_out *c, const char *name, tsr_dtype dt, int nd, int64_t d0, int64_t d1,
                               void *buf) {
    if (!buf) return tsr_errorf(TSR_ERR_OOM, "out of memory writing %s", name);
    if (c->n == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 64;
        tsr_st_write_tensor *ts = realloc(c->ts, sizeof *ts * (size_t)cap);
        if (ts) c->ts = ts;
        char(*nm)[128] = realloc(c->names, sizeof *nm * (size_t)cap);
        if (nm) c->names = nm;
        void **b = realloc(c->bufs, sizeof *b * (size_t)cap);
        if (b) c->bufs = b;
        if (!ts || !nm || !b) {
            free(buf);
            return tsr_errorf(TSR_ERR_OOM, "out of memory");
        }
        c->cap = cap;
    }
    snprintf(c->names[c->n], sizeof c->names[0], "%s", name);
    c->bufs[c->n] = buf;
    c->ts[c->n] = (tsr_st_write_tensor){.dtype = dt, .n_dims = nd, .shape = {d0, d1}};
    c->n++;
    return TSR_OK;
}

static uint16_t *tsr__awq_f16(const float *x, int64_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; h && i < n; i++) h[i] = tsr_f32_to_f16(x[i]);
    return h;
}

/* Quantizes w [out][in] and adds PREFIX.qweight / .qzeros / .scales in the AutoAWQ GEMM layout. */
static tsr_status tsr__awq_pack(tsr__awq_out *c, const char *prefix, const float *w, int64_t out, int64_t in,
                                int64_t g, tsr__awq_scratch *t) {
    int64_t ng = in / g, oc = out / 8;
    tsr__awq_quant(w, out, in, g, t->q, t->sc, t->z);
    int32_t *qw = malloc(sizeof(int32_t) * (size_t)(in * oc));
    int32_t *qz = malloc(sizeof(int32_t) * (size_t)(ng * oc));
    uint16_t *sc = malloc(sizeof(uint16_t) * (size_t)(ng * out));
    if (qw)
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < oc; j++) {
                uint32_t v = 0;
                for (int p = 0; p < 8; p++) v |= (uint32_t)t->q[(8 * j + tsr__awq_order[p]) * in + i] << (4 * p);
                qw[i * oc + j] = (int32_t)v;
            }
    if (qz)
        for (int64_t gi = 0; gi < ng; gi++)
            for (int64_t j = 0; j < oc; j++) {
                uint32_t v = 0;
                for (int p = 0; p < 8; p++) v |= (uint32_t)t->z[(8 * j + tsr__awq_order[p]) * ng + gi] << (4 * p);
                qz[gi * oc + j] = (int32_t)v;
            }
    if (sc)
        for (int64_t gi = 0; gi < ng; gi++)
            for (int64_t o = 0; o < out; o++) sc[gi * out + o] = tsr_f32_to_f16(t->sc[o * ng + gi]);
    char name[128];
    snprintf(name, sizeof name, "%.96s.qweight", prefix);
    tsr_status st = tsr__awq_add(c, name, TSR_I32, 2, in, oc, qw);
    snprintf(name, sizeof name, "%.96s.qzeros", prefix);
    if (st == TSR_OK) st = tsr__awq_add(c, name, TSR_I32, 2, ng, oc, qz);
    else free(qz);
    snprintf(name, sizeof name, "%.96s.scales", prefix);
    if (st == TSR_OK) st = tsr__awq_add(c, name, TSR_F16, 2, ng, out, sc);
    else free(sc);
    return st;
}

/* Reads (kind, layer) whole as f32 [rows][cols] (malloc'd; NULL with OK when absent and optional). */
static tsr_status tsr__awq_read(tsr__slice_reader *L, tsr_wkind k, int layer, float **out) {
    bool present;
    *out = NULL;
    TSR_TRY(tsr__reader_check(L, k, layer, &present));
    if (!present) return TSR_OK;
    int64_t rows, cols, n;
    TSR_TRY(L->src->shape(L->src, k, layer, &rows, &cols));
    float *b = malloc(sizeof(float) * (size_t)(rows * cols));
    if (!b) return tsr_errorf(TSR_ERR_OOM, "out of memory reading weights");
    tsr_status st = tsr__reader_read_local(L, k, layer, b, &n);
    if (st != TSR_OK) {
        free(b);
        return st;
    }
    *out = b;
    return TSR_OK;
}


/* config.json: an HF source's own with quantization_config set; a GGUF's llama fields. */
static tsr_status tsr__awq_config(const char *model_path, const tsr_model_config *cfg, const tsr_awq_opts *o,
                                  const char *dir) {
    cJSON *root = NULL;
    if (tsr_path_is_dir(model_path)) {
        char *p = tsr_path_join(model_path, "config.json"), *txt = NULL;
        size_t len;
        tsr_status st = tsr_read_file(p, 1 << 24, &txt, &len);
        free(p);
        TSR_TRY(st);
        root = cJSON_ParseWithLength(txt, len);
        free(txt);
        if (!root) return tsr_errorf(TSR_ERR_FORMAT, "%s/config.json: not valid JSON", model_path);
        cJSON_DeleteItemFromObject(root, "quantization_config");
        cJSON_DeleteItemFromObject(root, "torch_dtype");
        cJSON_DeleteItemFromObject(root, "dtype");
    } else {
        root = cJSON_CreateObject();
        cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
        cJSON_AddStringToObject(root, "model_type", "llama");
        cJSON_AddNumberToObject(root, "vocab_size", (double)cfg->vocab_size);
        cJSON_AddNumberToObject(root, "hidden_size", (double)cfg->d_model);
        cJSON_AddNumberToObject(root, "intermediate_size", (double)cfg->d_ff);
        cJSON_AddNumberToObject(root, "num_hidden_layers", (double)cfg->n_layer);
        cJSON_AddNumberToObject(root, "num_attention_heads", (double)cfg->n_head);
        cJSON_AddNumberToObject(root, "num_key_value_heads", (double)cfg->n_kv_head);
        cJSON_AddNumberToObject(root, "head_dim", (double)cfg->head_dim);
        cJSON_AddNumberToObject(root, "max_position_embeddings", (double)cfg->max_position_embeddings);
        cJSON_AddNumberToObject(root, "rms_norm_eps", cfg->norm_eps);
        cJSON_AddNumberToObject(root, "rope_theta", cfg->rope_theta);
        cJSON_AddNullToObject(root, "rope_scaling");
        cJSON_AddStringToObject(root, "hidden_act", "silu");
        cJSON_AddBoolToObject(root, "tie_word_embeddings", cfg->tie_embeddings);
        cJSON_AddBoolToObject(root, "attention_bias", false);
        cJSON_AddBoolToObject(root, "mlp_bias", false);
        if (cfg->bos_id >= 0) cJSON_AddNumberToObject(root, "bos_token_id", cfg->bos_id);
        if (cfg->eos_id >= 0) cJSON_AddNumberToObject(root, "eos_token_id", cfg->eos_id);
    }
    cJSON_AddStringToObject(root, "torch_dtype", "float16");
    cJSON *q = cJSON_AddObjectToObject(root, "quantization_config");
    cJSON_AddStringToObject(q, "quant_method", "awq");
    cJSON_AddNumberToObject(q, "bits", (double)o->bits);
    cJSON_AddNumberToObject(q, "group_size", (double)o->group);
    cJSON_AddBoolToObject(q, "zero_point", true);
    cJSON_AddStringToObject(q, "version", "gemm");
    cJSON_AddNullToObject(q, "modules_to_not_convert");
    char *s = cJSON_Print(root), *p = tsr_path_join(dir, "config.json");
    tsr_status st = s && p ? tsr_write_file(p, s, strlen(s)) : tsr_errorf(TSR_ERR_OOM, "out of memory");
    free(s);
    free(p);
    cJSON_Delete(root);
    return st;
}


/* Checks that the model can be written in this layout before anything is read. */
static tsr_status tsr__awq_check(const tsr_model_config *cfg, const tsr_awq_opts *o, const char *model_path) {
    if (o->bits != 4) return tsr_errorf(TSR_ERR_INVALID_ARG, "--w-bits %lld: only 4-bit weights are written (AutoAWQ GEMM)", (long long)o->bits);
    if (cfg->arch != TSR_ARCH_LLAMA && cfg->arch != TSR_ARCH_MISTRAL && cfg->arch != TSR_ARCH_QWEN2)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "auto_awq writes llama, mistral and qwen2 checkpoints, not %s",
                          tsr_arch_name(cfg->arch));
    if (!tsr_path_is_dir(model_path) && cfg->rope_type != TSR_ROPE_DEFAULT)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "auto_awq of a GGUF with %s RoPE scaling is not written (use its HF directory)",
                          tsr_rope_type_name(cfg->rope_type));
    int64_t ins[3] = {cfg->d_model, cfg->n_head * cfg->head_dim, cfg->d_ff};
    const char *what[3] = {"hidden_size (q/k/v/gate/up input)", "n_head * head_dim (o_proj input)", "intermediate_size (down_proj input)"};
    for (int i = 0; i < 3; i++)
        if (o->group < 1 || ins[i] % o->group)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "--w-group-size %lld does not divide %s = %lld", (long long)o->group,
                              what[i], (long long)ins[i]);
    int64_t outs[4] = {cfg->d_model, cfg->n_head * cfg->head_dim, cfg->n_kv_head * cfg->head_dim, cfg->d_ff};
    for (int i = 0; i < 4; i++)
        if (outs[i] % 8) return tsr_errorf(TSR_ERR_UNSUPPORTED, "output size %lld of a linear layer is not a multiple of 8", (long long)outs[i]);
    return TSR_OK;
}

tsr_status tsr_lite_auto_awq_check(const char *model_path, const tsr_awq_opts *o) {
    tsr_model_config cfg;
    TSR_TRY(tsr_model_config_load(model_path, &cfg));
    return tsr__awq_check(&cfg, o, model_path);
}

tsr_status tsr_lite_auto_awq(const char *model_path, const tsr_lite_stats *stats, const tsr_awq_opts *o,
                             const char *dir) {
    tsr_model_config cfg;
    tsr__src *src;
    TSR_TRY(tsr__reader_open_source(model_path, &cfg, &src));
    tsr_model m = {0};
    m.cfg = cfg;
    src->cfg = &m.cfg;
    tsr_status st = tsr__awq_check(&cfg, o, model_path);
    if (st == TSR_OK && stats->n_layer != cfg.n_layer)
        st = tsr_errorf(TSR_ERR_INVALID_ARG, "the calibration statistics have %lld layers, the model %lld",
                        (long long)stats->n_layer, (long long)cfg.n_layer);
    for (int64_t l = 0; st == TSR_OK && l < cfg.n_layer; l++) {
        int64_t want[4] = {cfg.d_model, cfg.n_head * cfg.head_dim, cfg.d_model, cfg.d_ff};
        for (int w = 0; w < 4; w++)
            if (stats->pt[l * TSR_LITE_N_POINTS + w].dim != want[w]) {
                st = tsr_errorf(TSR_ERR_INVALID_ARG, "calibration statistics of layer %lld (%s) do not fit the model",
                                (long long)l, tsr_lite_point_name(w));
                break;
            }
    }
    if (st == TSR_OK) st = tsr_shard_plan(&cfg, 0, 1, &m.shard);
    src->shard = &m.shard;
    if (st == TSR_OK && mkdir(dir, 0755) != 0 && errno != EEXIST)
        st = tsr_errorf(TSR_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    tsr__slice_reader L = {.m = &m, .src = src};
    tsr__awq_out c = {0};
    cJSON *report = cJSON_CreateObject(), *layers = cJSON_AddArrayToObject(report, "layers");
    cJSON_AddStringToObject(report, "method", o->rtn ? "rtn" : o->search ? "awq-search" : "awq");
    cJSON_AddBoolToObject(report, "clip", o->clip);
    cJSON_AddNumberToObject(report, "group_size", (double)o->group);
    cJSON_AddNumberToObject(report, "rows", (double)stats->pt[0].n_rows);
    double tot[2] = {0, 0};
    int64_t n_tot = 0;
    int64_t hd = cfg.head_dim, dq = cfg.n_head * hd, dkv = cfg.n_kv_head * hd, d = cfg.d_model, ff = cfg.d_ff;
    int64_t maxw = ff * d > dq * d ? ff * d : dq * d, maxo = ff > dq ? ff : dq;
    maxo = maxo > d ? maxo : d;
    tsr__awq_scratch t = {.d = malloc(sizeof(float) * (size_t)maxw), .sc = malloc(sizeof(float) * (size_t)maxw),
                          .q = malloc((size_t)maxw), .z = malloc((size_t)maxw),
                          .y = malloc(sizeof(float) * (size_t)(maxo * (stats->pt[0].n_rows + 1)))};
    int64_t maxd = ff > d ? (ff > dq ? ff : dq) : (d > dq ? d : dq), rep = dkv ? dq / dkv : 1;
    float *s = malloc(sizeof(float) * (size_t)(6 * maxd)), *xs = malloc(sizeof(float) * (size_t)(maxd * (stats->pt[0].n_rows + 1)));
    double clip_tot[2] = {0, 0};
    int64_t n_clip_tot = 0;
    if (st == TSR_OK && (!t.d || !t.sc || !t.q || !t.z || !t.y || !s || !xs || !report))
        st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    /* embeddings, final norm, LM head: f16 */
    static const struct { tsr_wkind k; const char *name; } glob[] = {
        {TSR_W_TOK_EMBD, "model.embed_tokens.weight"}, {TSR_W_OUT_NORM, "model.norm.weight"}, {TSR_W_LM_HEAD, "lm_head.weight"}};
    for (size_t i = 0; st == TSR_OK && i < sizeof glob / sizeof glob[0]; i++) {
        float *w;
        int64_t rows = 0, cols = 1;
        st = tsr__awq_read(&L, glob[i].k, 0, &w);
        if (st != TSR_OK || !w) continue;
        st = src->shape(src, glob[i].k, 0, &rows, &cols);
        if (glob[i].k == TSR_W_OUT_NORM) st = tsr__awq_add(&c, glob[i].name, TSR_F16, 1, rows * cols, 0, tsr__awq_f16(w, rows * cols));
        else if (st == TSR_OK) st = tsr__awq_add(&c, glob[i].name, TSR_F16, 2, rows, cols, tsr__awq_f16(w, rows * cols));
        free(w);
    }
    for (int l = 0; st == TSR_OK && l < (int)cfg.n_layer; l++) {
        enum { I_AN, I_Q, I_K, I_V, I_QB, I_KB, I_VB, I_O, I_OB, I_FN, I_G, I_U, I_D, NW };
        static const tsr_wkind kinds[NW] = {TSR_W_ATTN_NORM, TSR_W_Q, TSR_W_K, TSR_W_V, TSR_W_Q_BIAS, TSR_W_K_BIAS,
                                            TSR_W_V_BIAS, TSR_W_O, TSR_W_O_BIAS, TSR_W_FFN_NORM, TSR_W_GATE, TSR_W_UP, TSR_W_DOWN};
        float *w[NW] = {0};
        for (int i = 0; i < NW && st == TSR_OK; i++) st = tsr__awq_read(&L, kinds[i], l, &w[i]);
        const tsr_lite_point *P = &stats->pt[(int64_t)l * TSR_LITE_N_POINTS];
        cJSON *lj = cJSON_CreateObject();
        cJSON_AddItemToArray(layers, lj);
        /* scales of the four groups: S[0] q|k|v, S[1] o, S[2] gate|up, S[3] down */
        float *S[4] = {s, s + maxd, s + 2 * maxd, s + 3 * maxd}, *xm = s + 4 * maxd, *wm = s + 5 * maxd;
        if (st == TSR_OK) { /* q|k|v: scales into input_layernorm */
            tsr__awq_group G = {.w = {w[I_Q], w[I_K], w[I_V]}, .out = {dq, dkv, dkv}, .nw = 3, .in = d};
            cJSON *r = cJSON_AddObjectToObject(lj, "qkv");
            tsr__awq_choose(&G, &P[TSR_OBS_QKV_IN], o, 1, hd, S[0], xm, wm, &t, r);
            for (int j = 0; j < 3; j++)
                for (int64_t row = 0; row < G.out[j]; row++)
                    for (int64_t i = 0; i < d; i++) G.w[j][row * d + i] *= S[0][i];
            for (int64_t i = 0; i < d; i++) w[I_AN][i] /= S[0][i];
        }
        if (st == TSR_OK) { /* o: scales into v_proj's rows, tied across the query heads of a KV head */
            tsr__awq_group G = {.w = {w[I_O]}, .out = {d}, .nw = 1, .in = dq};
            cJSON *r = cJSON_AddObjectToObject(lj, "o");
            tsr__awq_choose(&G, &P[TSR_OBS_O_IN], o, rep, hd, S[1], xm, wm, &t, r);
            for (int64_t row = 0; row < d; row++)
                for (int64_t i = 0; i < dq; i++) w[I_O][row * dq + i] *= S[1][i];
            for (int64_t row = 0; row < dkv; row++) { /* KV head row / hd is query head (row / hd) * rep's */
                float sv = S[1][(row / hd) * rep * hd + row % hd];
                for (int64_t i = 0; i < d; i++) w[I_V][row * d + i] /= sv;
                if (w[I_VB]) w[I_VB][row] /= sv;
            }
        }
        if (st == TSR_OK) { /* gate|up: scales into post_attention_layernorm */
            tsr__awq_group G = {.w = {w[I_G], w[I_U]}, .out = {ff, ff}, .nw = 2, .in = d};
            cJSON *r = cJSON_AddObjectToObject(lj, "gate_up");
            tsr__awq_choose(&G, &P[TSR_OBS_GATE_UP_IN], o, 1, hd, S[2], xm, wm, &t, r);
            for (int j = 0; j < 2; j++)
                for (int64_t row = 0; row < ff; row++)
                    for (int64_t i = 0; i < d; i++) G.w[j][row * d + i] *= S[2][i];
            for (int64_t i = 0; i < d; i++) w[I_FN][i] /= S[2][i];
        }
        if (st == TSR_OK) { /* down: scales into up_proj's rows */
            tsr__awq_group G = {.w = {w[I_D]}, .out = {d}, .nw = 1, .in = ff};
            cJSON *r = cJSON_AddObjectToObject(lj, "down");
            tsr__awq_choose(&G, &P[TSR_OBS_DOWN_IN], o, 1, hd, S[3], xm, wm, &t, r);
            for (int64_t row = 0; row < d; row++)
                for (int64_t i = 0; i < ff; i++) w[I_D][row * ff + i] *= S[3][i];
            for (int64_t row = 0; row < ff; row++)
                for (int64_t i = 0; i < d; i++) w[I_U][row * d + i] /= S[3][row];
        }
        if (st == TSR_OK && o->clip && P[0].n_rows) { /* auto_clip on the rows in the scaled space */
            static const struct { int i, grp, pt; const char *name; } cl[] = {
                {I_Q, 0, TSR_OBS_QKV_IN, "q_proj"}, {I_K, 0, TSR_OBS_QKV_IN, "k_proj"}, {I_V, 0, TSR_OBS_QKV_IN, "v_proj"},
                {I_O, 1, TSR_OBS_O_IN, "o_proj"}, {I_G, 2, TSR_OBS_GATE_UP_IN, "gate_proj"},
                {I_U, 2, TSR_OBS_GATE_UP_IN, "up_proj"}, {I_D, 3, TSR_OBS_DOWN_IN, "down_proj"}};
            int64_t co[7] = {dq, dkv, dkv, d, ff, ff, d}, ci[7] = {d, d, d, dq, d, d, ff};
            cJSON *r = cJSON_AddObjectToObject(lj, "clip");
            for (int j = 0; j < 7 && st == TSR_OK; j++) {
                if (!o->clip_qk && (cl[j].i == I_Q || cl[j].i == I_K)) continue;
                const tsr_lite_point *pp = &P[cl[j].pt];
                for (int64_t row = 0; row < pp->n_rows; row++)
                    for (int64_t i = 0; i < ci[j]; i++) xs[row * ci[j] + i] = pp->rows[row * ci[j] + i] / S[cl[j].grp][i];
                double e0 = 0, e1 = 0, mr = 1;
                st = tsr__awq_clip(w[cl[j].i], co[j], ci[j], o->group, xs, pp->n_rows, o->n_clip, &t, &e0, &e1, &mr);
                cJSON *e = cJSON_AddObjectToObject(r, cl[j].name);
                cJSON_AddNumberToObject(e, "mse", e1);
                cJSON_AddNumberToObject(e, "mse_noclip", e0);
                cJSON_AddNumberToObject(e, "mean_ratio", mr);
                clip_tot[0] += e1, clip_tot[1] += e0, n_clip_tot++;
            }
        }
        for (cJSON *g = lj->child; g; g = g->next) {
            cJSON *e = cJSON_GetObjectItem(g, "mse"), *er = cJSON_GetObjectItem(g, "mse_rtn");
            if (e && er) tot[0] += e->valuedouble, tot[1] += er->valuedouble, n_tot++;
        }
        static const struct { int i; const char *name; } lin[] = {
            {I_Q, "self_attn.q_proj"}, {I_K, "self_attn.k_proj"}, {I_V, "self_attn.v_proj"}, {I_O, "self_attn.o_proj"},
            {I_G, "mlp.gate_proj"}, {I_U, "mlp.up_proj"}, {I_D, "mlp.down_proj"}};
        int64_t lo[7] = {dq, dkv, dkv, d, ff, ff, d}, li[7] = {d, d, d, dq, d, d, ff};
        char name[96];
        for (int j = 0; j < 7 && st == TSR_OK; j++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, lin[j].name);
            st = tsr__awq_pack(&c, name, w[lin[j].i], lo[j], li[j], o->group, &t);
        }
        static const struct { int i; const char *name; } vec[] = {
            {I_AN, "input_layernorm.weight"}, {I_FN, "post_attention_layernorm.weight"}, {I_QB, "self_attn.q_proj.bias"},
            {I_KB, "self_attn.k_proj.bias"}, {I_VB, "self_attn.v_proj.bias"}, {I_OB, "self_attn.o_proj.bias"}};
        int64_t vn[6] = {d, d, dq, dkv, dkv, d};
        for (int j = 0; j < 6 && st == TSR_OK; j++) {
            if (!w[vec[j].i]) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, vec[j].name);
            st = tsr__awq_add(&c, name, TSR_F16, 1, vn[j], 0, tsr__awq_f16(w[vec[j].i], vn[j]));
        }
        for (int i = 0; i < NW; i++) free(w[i]);
        tsr_progress("quantizing layers", l + 1, cfg.n_layer);
    }
    if (st == TSR_OK) {
        for (int64_t i = 0; i < c.n; i++) c.ts[i].name = c.names[i], c.ts[i].data = c.bufs[i];
        char *p = tsr_path_join(dir, "model.safetensors");
        const char *meta[] = {"format", "pt", NULL};
        st = p ? tsr_safetensors_write(p, c.ts, c.n, meta) : tsr_errorf(TSR_ERR_OOM, "out of memory");
        free(p);
    }
    if (st == TSR_OK) st = tsr__awq_config(model_path, &cfg, o, dir);
    if (st == TSR_OK) st = tsr_copy_tokenizer(model_path, dir);
    if (st == TSR_OK) {
        if (n_tot) {
            cJSON_AddNumberToObject(report, "mean_mse", tot[0] / (double)n_tot);
            cJSON_AddNumberToObject(report, "mean_mse_rtn", tot[1] / (double)n_tot);
        }
        if (n_clip_tot) {
            cJSON_AddNumberToObject(report, "mean_clip_mse", clip_tot[0] / (double)n_clip_tot);
            cJSON_AddNumberToObject(report, "mean_clip_mse_noclip", clip_tot[1] / (double)n_clip_tot);
        }
        char *js = cJSON_Print(report), *p = tsr_path_join(dir, "awq_report.json");
        st = js && p ? tsr_write_file(p, js, strlen(js)) : tsr_errorf(TSR_ERR_OOM, "out of memory");
        if (st == TSR_OK && n_tot)
            TSR_LOGI("auto_awq: mean output MSE %.4g (round-to-nearest %.4g) over %lld groups", tot[0] / (double)n_tot,
                     tot[1] / (double)n_tot, (long long)n_tot);
        free(js);
        free(p);
    }
    cJSON_Delete(report);
    for (int64_t i = 0; i < c.n; i++) free(c.bufs[i]);
    free(c.bufs), free(c.names), free(c.ts);
    free(t.d), free(t.sc), free(t.q), free(t.z), free(t.y), free(s), free(xs);
    tsr__reader_free(&L);
    src->close(src);
    return st;
}
