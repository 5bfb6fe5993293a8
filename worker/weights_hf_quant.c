/* Group-quantized int4 HF checkpoints: config parsing, refusals, and the three packings read
 * element by element or converted to INT4G (the formats are stated in weights_hf_quant.h). */
#include "worker/weights_hf_quant.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/fileutil.h"
#include "common/tensor.h"

#define TSR__HFQ_SUPPORTED                                                                                   \
    "Tessera runs 4-bit group quantization from AutoAWQ (version gemm), GPTQ (bits 4) and compressed-tensors " \
    "(format pack-quantized, 4-bit int weights, group or channel strategy)"

/* ---- quantization_config ---- */

static const cJSON *tsr__jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static tsr_status tsr__jint(const cJSON *o, const char *k, int64_t def, int64_t *out, const char *path) {
    const cJSON *v = tsr__jget(o, k);
    *out = def;
    if (!v || cJSON_IsNull(v)) return TSR_OK;
    if (!cJSON_IsNumber(v)) return tsr_errorf(TSR_ERR_FORMAT, "%s: quantization_config.%s is not a number", path, k);
    *out = (int64_t)v->valuedouble;
    return TSR_OK;
}

static bool tsr__jbool(const cJSON *o, const char *k, bool def) {
    const cJSON *v = tsr__jget(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static const char *tsr__jstr(const cJSON *o, const char *k, const char *def) {
    const cJSON *v = tsr__jget(o, k);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static tsr_status tsr__group_ok(int64_t g, const char *path, const char *what) {
    if (g == -1 || g > 0) return TSR_OK;
    return tsr_errorf(TSR_ERR_FORMAT, "%s: %s group size %lld is neither positive nor -1 (per channel)", path, what,
                      (long long)g);
}

static tsr_status tsr__parse_awq(const cJSON *qc, tsr__hfq *q, const char *path) {
    int64_t bits, g;
    TSR_TRY(tsr__jint(qc, "bits", 4, &bits, path));
    if (bits == 4) TSR_TRY(tsr__jint(qc, "w_bit", 4, &bits, path));
    TSR_TRY(tsr__jint(qc, "group_size", 128, &g, path));
    if (g == 128) TSR_TRY(tsr__jint(qc, "q_group_size", 128, &g, path));
    const char *ver = tsr__jstr(qc, "version", "gemm");
    if (strcasecmp(ver, "gemm") != 0)
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "%s: AutoAWQ version '%s' packs its weights for that kernel's layout, which Tessera does not "
                          "read; " TSR__HFQ_SUPPORTED " (re-save the model with version gemm)",
                          path, ver);
    if (bits != 4)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: AWQ with %lld-bit weights is not supported; " TSR__HFQ_SUPPORTED,
                          path, (long long)bits);
    if (!tsr__jbool(qc, "zero_point", true))
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "%s: AWQ without zero points (zero_point: false) is not supported; " TSR__HFQ_SUPPORTED, path);
    TSR_TRY(tsr__group_ok(g, path, "AWQ"));
    q->method = TSR__HFQ_AWQ, q->group = g;
    snprintf(q->what, sizeof q->what, "AutoAWQ GEMM, 4-bit, group %lld", (long long)g);
    return TSR_OK;
}

static tsr_status tsr__parse_gptq(const cJSON *qc, tsr__hfq *q, const char *path) {
    int64_t bits, g;
    TSR_TRY(tsr__jint(qc, "bits", 4, &bits, path));
    TSR_TRY(tsr__jint(qc, "group_size", 128, &g, path));
    if (bits != 4)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: GPTQ with %lld-bit weights is not supported; " TSR__HFQ_SUPPORTED,
                          path, (long long)bits);
    const char *fmt = tsr__jstr(qc, "checkpoint_format", tsr__jstr(qc, "format", "gptq"));
    if (strcasecmp(fmt, "gptq") != 0 && strcasecmp(fmt, "gptq_v2") != 0)
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "%s: GPTQ checkpoint_format '%s' is a kernel-specific repacking Tessera does not read; "
                          "formats gptq and gptq_v2 are",
                          path, fmt);
    TSR_TRY(tsr__group_ok(g, path, "GPTQ"));
    q->method = TSR__HFQ_GPTQ, q->group = g;
    q->zero_add = strcasecmp(fmt, "gptq") == 0;
    snprintf(q->what, sizeof q->what, "GPTQ (%s), 4-bit, group %lld%s", fmt, (long long)g,
             tsr__jbool(qc, "desc_act", false) ? ", desc_act" : "");
    return TSR_OK;
}

/* Every config group must quantize weights the same way (one scheme per checkpoint here). */
static tsr_status tsr__parse_ct(const cJSON *qc, tsr__hfq *q, const char *path) {
    const char *fmt = tsr__jstr(qc, "format", "");
    const cJSON *groups = tsr__jget(qc, "config_groups");
    if (!cJSON_IsObject(groups) || !groups->child)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: compressed-tensors quantization_config has no config_groups", path);
    if (!cJSON_IsNull(tsr__jget(qc, "kv_cache_scheme")) && tsr__jget(qc, "kv_cache_scheme"))
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "%s: compressed-tensors kv_cache_scheme (quantized KV cache scales) is not supported; " TSR__HFQ_SUPPORTED,
                          path);
    bool first = true;
    for (const cJSON *cg = groups->child; cg; cg = cg->next) {
        const char *gfmt = tsr__jstr(cg, "format", fmt);
        if (strcmp(gfmt, "pack-quantized") != 0)
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: compressed-tensors format '%s' is not supported; " TSR__HFQ_SUPPORTED,
                              path, gfmt[0] ? gfmt : "(none)");
        const cJSON *in = tsr__jget(cg, "input_activations"), *w = tsr__jget(cg, "weights");
        if (in && !cJSON_IsNull(in))
            return tsr_errorf(TSR_ERR_UNSUPPORTED,
                              "%s: compressed-tensors scheme '%s' quantizes activations too; only weight-only int4 (W4A16) "
                              "is supported",
                              path, cg->string);
        if (!cJSON_IsObject(w))
            return tsr_errorf(TSR_ERR_FORMAT, "%s: compressed-tensors scheme '%s' has no weights entry", path, cg->string);
        int64_t bits, g;
        TSR_TRY(tsr__jint(w, "num_bits", 0, &bits, path));
        TSR_TRY(tsr__jint(w, "group_size", -1, &g, path));
        const char *type = tsr__jstr(w, "type", "int"), *strat = tsr__jstr(w, "strategy", "");
        if (bits != 4 || strcmp(type, "int") != 0)
            return tsr_errorf(TSR_ERR_UNSUPPORTED,
                              "%s: compressed-tensors scheme '%s' has %lld-bit %s weights; " TSR__HFQ_SUPPORTED, path,
                              cg->string, (long long)bits, type);
        if (strcmp(strat, "group") == 0) {
            if (g <= 0) return tsr_errorf(TSR_ERR_FORMAT, "%s: group strategy with group_size %lld", path, (long long)g);
        } else if (strcmp(strat, "channel") == 0) {
            g = -1;
        } else {
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: compressed-tensors strategy '%s' is not supported; " TSR__HFQ_SUPPORTED,
                              path, strat);
        }
        const bool sym = tsr__jbool(w, "symmetric", true);
        if (!first && (g != q->group || sym != q->sym))
            return tsr_errorf(TSR_ERR_UNSUPPORTED,
                              "%s: compressed-tensors config groups quantize with different group sizes or symmetry; "
                              "one scheme per checkpoint is supported",
                              path);
        q->group = g, q->sym = sym, first = false;
    }
    q->method = TSR__HFQ_CT;
    snprintf(q->what, sizeof q->what, "compressed-tensors pack-quantized, 4-bit %s, group %lld",
             q->sym ? "symmetric" : "asymmetric", (long long)q->group);
    return TSR_OK;
}

tsr_status tsr__hfq_parse(const char *config_json, tsr__hfq *q) {
    memset(q, 0, sizeof *q);
    char *text = NULL;
    size_t len = 0;
    TSR_TRY(tsr_read_file(config_json, 16u << 20, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    tsr_status st = TSR_OK;
    const cJSON *qc = cJSON_IsObject(root) ? tsr__jget(root, "quantization_config") : NULL;
    if (!cJSON_IsObject(root)) {
        st = tsr_errorf(TSR_ERR_FORMAT, "%s: not a JSON object", config_json);
    } else if (qc && !cJSON_IsNull(qc)) {
        const char *m = tsr__jstr(qc, "quant_method", NULL);
        if (!cJSON_IsObject(qc) || !m) st = tsr_errorf(TSR_ERR_FORMAT, "%s: quantization_config has no quant_method", config_json);
        else if (!strcasecmp(m, "awq")) st = tsr__parse_awq(qc, q, config_json);
        else if (!strcasecmp(m, "gptq")) st = tsr__parse_gptq(qc, q, config_json);
        else if (!strcmp(m, "compressed-tensors")) st = tsr__parse_ct(qc, q, config_json);
        else
            st = tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: quant_method '%s' is not supported; " TSR__HFQ_SUPPORTED, config_json, m);
    }
    cJSON_Delete(root);
    return st;
}

/* ---- a layer's tensors ---- */

static tsr_status tsr__want(const tsr_st_tensor *t, tsr_dtype dt, int64_t d0, int64_t d1) {
    if (t->n_dims == 2 && t->dtype == dt && t->shape[0] == d0 && t->shape[1] == d1) return TSR_OK;
    return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' is %s [%lld%s%lld], expected %s [%lld, %lld]", t->name,
                      tsr_dtype_name(t->dtype), (long long)t->shape[0], t->n_dims > 1 ? ", " : "",
                      t->n_dims > 1 ? (long long)t->shape[1] : 0LL, tsr_dtype_name(dt), (long long)d0, (long long)d1);
}

static const tsr_st_tensor *tsr__find_sfx(const tsr_safetensors *st, const char *prefix, const char *sfx) {
    char name[320];
    snprintf(name, sizeof name, "%s.%s", prefix, sfx);
    return tsr_safetensors_find(st, name);
}

static int32_t tsr__i32(const tsr_st_tensor *t, int64_t i) {
    int32_t v;
    memcpy(&v, (const uint8_t *)t->data + 4 * (size_t)i, 4);
    return v;
}

tsr_status tsr__hfq_find(const tsr__hfq *q, const tsr_safetensors *st, const char *weight_name, tsr__hfq_lin *l,
                         bool *found) {
    memset(l, 0, sizeof *l);
    *found = false;
    char prefix[300];
    size_t n = strlen(weight_name);
    if (q->method == TSR__HFQ_NONE || n < 8 || strcmp(weight_name + n - 7, ".weight") != 0 || n - 7 >= sizeof prefix)
        return TSR_OK;
    memcpy(prefix, weight_name, n - 7);
    prefix[n - 7] = 0;
    const bool ct = q->method == TSR__HFQ_CT;
    l->qw = tsr__find_sfx(st, prefix, ct ? "weight_packed" : "qweight");
    if (!l->qw) return TSR_OK;
    l->sc = tsr__find_sfx(st, prefix, ct ? "weight_scale" : "scales");
    l->qz = tsr__find_sfx(st, prefix, ct ? "weight_zero_point" : "qzeros");
    l->gidx = tsr__find_sfx(st, prefix, ct ? "weight_g_idx" : "g_idx");
    if (l->qw->n_dims != 2)
        return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has %d dimensions, expected 2", l->qw->name, l->qw->n_dims);
    if (q->method == TSR__HFQ_AWQ) l->cols = l->qw->shape[0], l->rows = 8 * l->qw->shape[1];
    else if (q->method == TSR__HFQ_GPTQ) l->cols = 8 * l->qw->shape[0], l->rows = l->qw->shape[1];
    else l->rows = l->qw->shape[0], l->cols = 8 * l->qw->shape[1];
    if (ct) {   /* weight_shape holds the true [out, in] (the packing pads `in` to 8) */
        const tsr_st_tensor *ws = tsr__find_sfx(st, prefix, "weight_shape");
        if (ws && ws->n_dims == 1 && ws->shape[0] == 2 && (ws->dtype == TSR_I64 || ws->dtype == TSR_I32)) {
            int64_t d[2];
            for (int i = 0; i < 2; i++) {
                if (ws->dtype == TSR_I64) memcpy(&d[i], (const uint8_t *)ws->data + 8 * i, 8);
                else d[i] = tsr__i32(ws, i);
            }
            if (d[0] != l->rows || d[1] != l->cols)
                return tsr_errorf(TSR_ERR_FORMAT, "%s.weight_shape [%lld, %lld] does not match weight_packed (in %% 8 != 0 is "
                                  "not supported)", prefix, (long long)d[0], (long long)d[1]);
        }
    }
    l->group = q->group == -1 ? l->cols : q->group;
    l->n_groups = (l->cols + l->group - 1) / l->group;
    if (!l->sc) return tsr_errorf(TSR_ERR_FORMAT, "'%s' has no scales tensor beside it", l->qw->name);
    if (!l->qz && !(ct && q->sym))
        return tsr_errorf(TSR_ERR_FORMAT, "'%s' has no zero-point tensor beside it", l->qw->name);
    if (l->sc->dtype != TSR_F16 && l->sc->dtype != TSR_BF16 && l->sc->dtype != TSR_F32)
        return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' has dtype %s; scales must be F16, BF16 or F32", l->sc->name,
                          tsr_dtype_name(l->sc->dtype));
    if (ct) {
        TSR_TRY(tsr__want(l->sc, l->sc->dtype, l->rows, l->n_groups));
        if (l->qz) TSR_TRY(tsr__want(l->qz, TSR_I32, (l->rows + 7) / 8, l->n_groups));
    } else {
        if (l->rows % 8 != 0) return tsr_errorf(TSR_ERR_FORMAT, "'%s': %lld outputs, not a multiple of 8", l->qw->name, (long long)l->rows);
        TSR_TRY(tsr__want(l->qw, TSR_I32, l->qw->shape[0], l->qw->shape[1]));
        TSR_TRY(tsr__want(l->sc, l->sc->dtype, l->n_groups, l->rows));
        TSR_TRY(tsr__want(l->qz, TSR_I32, l->n_groups, l->rows / 8));
    }
    TSR_TRY(tsr__want(l->qw, TSR_I32, l->qw->shape[0], l->qw->shape[1]));
    l->plain_groups = true;
    if (l->gidx) {
        if (l->gidx->n_dims != 1 || l->gidx->shape[0] != l->cols || (l->gidx->dtype != TSR_I32 && l->gidx->dtype != TSR_I64))
            return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s' is not an integer vector of %lld", l->gidx->name, (long long)l->cols);
        for (int64_t i = 0; i < l->cols; i++) {
            int64_t g;
            if (l->gidx->dtype == TSR_I64) memcpy(&g, (const uint8_t *)l->gidx->data + 8 * (size_t)i, 8);
            else g = tsr__i32(l->gidx, i);
            if (g < 0 || g >= l->n_groups)
                return tsr_errorf(TSR_ERR_FORMAT, "tensor '%s': group %lld of input %lld is outside 0..%lld", l->gidx->name,
                                  (long long)g, (long long)i, (long long)(l->n_groups - 1));
            if (g != i / l->group) l->plain_groups = false;
        }
    }
    *found = true;
    return TSR_OK;
}

/* ---- the packings, element by element ---- */

static const int tsr__awq_pos[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* nibble holding output 8j + k */

static int64_t tsr__group_of(const tsr__hfq_lin *l, int64_t c) {
    if (!l->gidx) return c / l->group;
    if (l->gidx->dtype == TSR_I32) return tsr__i32(l->gidx, c);
    int64_t g;
    memcpy(&g, (const uint8_t *)l->gidx->data + 8 * (size_t)c, 8);
    return g;
}

static int tsr__nib(const tsr_st_tensor *t, int64_t word, int pos) { return (int)(((uint32_t)tsr__i32(t, word) >> (4 * pos)) & 15u); }

/* The unsigned quant u and the zero point z of W[r][c] (W = s (u - z)). */
static void tsr__uz(const tsr__hfq *q, const tsr__hfq_lin *l, int64_t r, int64_t c, int64_t g, int *u, int *z) {
    switch (q->method) {
    case TSR__HFQ_AWQ:
        *u = tsr__nib(l->qw, c * (l->rows / 8) + r / 8, tsr__awq_pos[r % 8]);
        *z = tsr__nib(l->qz, g * (l->rows / 8) + r / 8, tsr__awq_pos[r % 8]);
        break;
    case TSR__HFQ_GPTQ:
        *u = tsr__nib(l->qw, (c / 8) * l->rows + r, (int)(c % 8));
        *z = tsr__nib(l->qz, g * (l->rows / 8) + r / 8, (int)(r % 8)) + q->zero_add;
        break;
    default:
        *u = tsr__nib(l->qw, r * (l->cols / 8) + c / 8, (int)(c % 8));
        *z = l->qz ? tsr__nib(l->qz, (r / 8) * l->n_groups + g, (int)(r % 8)) : 8;
        break;
    }
}

static float tsr__scale(const tsr__hfq *q, const tsr__hfq_lin *l, int64_t r, int64_t g) {
    const int64_t i = q->method == TSR__HFQ_CT ? r * l->n_groups + g : g * l->rows + r;
    float v;
    tsr_convert_to_f32(l->sc->dtype, (const uint8_t *)l->sc->data + (size_t)i * tsr_dtype_size(l->sc->dtype), &v, 1);
    return v;
}

void tsr__hfq_read_row(const tsr__hfq *q, const tsr__hfq_lin *l, int64_t r, int64_t c0, int64_t n, float *dst) {
    for (int64_t j = 0; j < n; j++) {
        const int64_t c = c0 + j, g = tsr__group_of(l, c);
        int u, z;
        tsr__uz(q, l, r, c, g, &u, &z);
        dst[j] = tsr__scale(q, l, r, g) * (float)(u - z);
    }
}

tsr_status tsr__hfq_to_int4g(const tsr__hfq *q, const tsr__hfq_lin *l, tsr_wtensor *out, void **buf) {
    *buf = NULL;
    if (!l->plain_groups)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "'%s': input channels are reordered into groups (g_idx)", l->qw->name);
    if (l->group % 32 != 0 || l->cols % l->group != 0)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "'%s': group %lld of %lld inputs is not whole runs of 32", l->qw->name,
                          (long long)l->group, (long long)l->cols);
    TSR_TRY(tsr_wtensor_init(out, TSR_WTYPE_INT4G, l->rows, l->cols, l->group, NULL));
    const size_t nq = (size_t)(l->rows * l->cols / 2), ng = (size_t)(l->rows * l->n_groups);
    uint8_t *p = malloc(nq + 3 * ng + 1);
    if (!p) return tsr_errorf(TSR_ERR_OOM, "out of memory converting '%s' (%zu bytes)", l->qw->name, nq + 3 * ng);
    uint8_t *qd = p, *sc = p + nq, *zp = p + nq + 2 * ng;
    for (int64_t r = 0; r < l->rows; r++) {
        uint8_t *qr = qd + (size_t)r * out->row_stride;
        for (int64_t g = 0; g < l->n_groups; g++) {
            const uint16_t h = tsr_f32_to_f16(tsr__scale(q, l, r, g));
            memcpy(sc + (size_t)r * out->scale_stride + 2 * (size_t)g, &h, 2);
        }
        for (int64_t c = 0; c < l->cols; c++) {
            const int64_t g = c / l->group;
            int u, z;
            tsr__uz(q, l, r, c, g, &u, &z);
            if (c % l->group == 0) zp[(size_t)r * out->zero_stride + (size_t)g] = (uint8_t)z;
            uint8_t *b = qr + (size_t)(c / 32) * 16 + (size_t)(c % 16);
            *b = (c % 32) < 16 ? (uint8_t)((*b & 0xf0) | u) : (uint8_t)((*b & 0x0f) | u << 4);
        }
    }
    out->data = qd, out->scales = sc, out->zeros = q->method == TSR__HFQ_CT && !l->qz ? NULL : zp;
    *buf = p;
    return TSR_OK;
}
