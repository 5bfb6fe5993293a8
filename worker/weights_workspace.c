/* The workspace weight source (see weights_source.h, worker/workspace.h): a directory made by
 * `tessera convert`, whose rank<N>.safetensors hold each kind's local slice under the names
 * below, so a rank reads its share without splitting anything. */
#include "worker/weights_workspace.h"

#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/ggml_quants.h"
#include "common/safetensors.h"
#include "common/wtype.h"
#include "worker/workspace.h"

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

void tsr__ws_tensor_name(char *buf, size_t n, tsr_wkind k, int layer) {
    tsr__weights_name(buf, n, tsr__ws_names, k, layer);
}

typedef struct {
    tsr__src base;
    char *dir;
    tsr_safetensors *st;   /* this rank's file, opened on first use */
} tsr__ws_src;

/* A quantized tensor's type and columns from the rank file's metadata (workspace_convert.h);
 * *wt = F32 and *cols = 0 for a plain float tensor. */
static tsr_status tsr__ws_qtype(tsr__ws_src *s, const char *name, tsr_wtype *wt, int64_t *cols) {
    char key[160];
    snprintf(key, sizeof key, "tsr.wtype.%s", name);
    const char *tn = tsr_safetensors_metadata(s->st, key);
    *wt = TSR_WTYPE_F32, *cols = 0;
    if (!tn) return TSR_OK;
    snprintf(key, sizeof key, "tsr.cols.%s", name);
    const char *cs = tsr_safetensors_metadata(s->st, key);
    char *end = NULL;
    long long c = cs ? strtoll(cs, &end, 10) : 0;
    if (!strcmp(tn, tsr_wtype_name(TSR_WTYPE_INT4G)) && cs && *end == 0 && c > 0) {
        *wt = TSR_WTYPE_INT4G, *cols = c;
        return TSR_OK;
    }
    for (int g = 0; g < 64; g++) {
        tsr_wtype t;
        if (tsr_wtype_from_ggml((tsr_ggml_type)g, &t) != TSR_OK) {
            tsr_clear_error();
            continue;
        }
        if (!strcmp(tsr_wtype_name(t), tn) && tsr_wtype_block_size(t) > 1 && cs && *end == 0 && c > 0) {
            *wt = t, *cols = c;
            return TSR_OK;
        }
    }
    return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' has weight type '%s' (columns '%s'), which this build cannot read",
                      s->dir, name, tn, cs ? cs : "missing");
}

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
    tsr__weights_name(name, sizeof name, tsr__ws_names, k, layer);
    *t = tsr_safetensors_find(s->st, name);
    if (!*t) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s/rank%d.safetensors: no tensor '%s'", s->dir, sh->rank, name);
    int64_t nr, nc;
    tsr__shard_local_slice(s->base.cfg, sh, k, r0, &nr, c0, &nc);
    int64_t fr = (*t)->shape[0], fc = (*t)->n_dims == 2 ? (*t)->shape[1] : 1;
    tsr_wtype wt;
    int64_t qcols;
    TSR_TRY(tsr__ws_qtype(s, name, &wt, &qcols));
    if (qcols) {   /* blocks: [rows][row bytes] of U8 */
        size_t rb = 0;
        if ((*t)->dtype != TSR_U8 || (*t)->n_dims != 2 || qcols != nc || fr != nr ||
            tsr_wtype_row_bytes(wt, qcols, &rb) != TSR_OK || (size_t)fc != rb)
            return tsr_errorf(TSR_ERR_FORMAT,
                              "%s/rank%d.safetensors: '%s' (%s, %lld columns) is %s [%lld, %lld], not rank %d's share "
                              "[%lld, %lld] in blocks: the workspace and its config.ini disagree (convert it again)",
                              s->dir, sh->rank, name, tsr_wtype_name(wt), (long long)qcols, tsr_dtype_name((*t)->dtype),
                              (long long)fr, (long long)fc, sh->rank, (long long)nr, (long long)nc);
        return TSR_OK;
    }
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
    tsr__shard_global_shape(base->cfg, k, rows, cols); /* the local shape matched this rank's share */
    return TSR_OK;
}

static tsr_status tsr__ws_int4g(tsr__ws_src *s, const char *name, const tsr_st_tensor *t, int64_t cols,
                                tsr_wtensor *out);

static tsr_status tsr__ws_read(tsr__src *base, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows,
                               int64_t c0, int64_t n_cols, float *dst) {
    const tsr_st_tensor *t;
    int64_t lr0, lc0;
    TSR_TRY(tsr__ws_find((tsr__ws_src *)base, k, layer, &t, &lr0, &lc0));
    tsr_wtype wt;
    int64_t qcols;
    char name[128];
    tsr__weights_name(name, sizeof name, tsr__ws_names, k, layer);
    TSR_TRY(tsr__ws_qtype((tsr__ws_src *)base, name, &wt, &qcols));
    if (qcols && wt == TSR_WTYPE_INT4G) {
        tsr_wtensor w;
        TSR_TRY(tsr__ws_int4g((tsr__ws_src *)base, name, t, qcols, &w));
        float *row = malloc(sizeof(float) * (size_t)qcols);
        if (!row) return tsr_errorf(TSR_ERR_OOM, "out of memory reading '%s'", name);
        tsr_status st = TSR_OK;
        for (int64_t i = 0; i < n_rows && st == TSR_OK; i++) {
            int64_t r = rows[i] - lr0;
            TSR_ASSERT(r >= 0 && r < t->shape[0] && c0 - lc0 >= 0 && c0 - lc0 + n_cols <= qcols);
            st = tsr_wtensor_dequantize_rows(&w, r, 1, row);
            if (st == TSR_OK) memcpy(dst + i * n_cols, row + (c0 - lc0), sizeof(float) * (size_t)n_cols);
        }
        free(row);
        return st;
    }
    if (qcols) {   /* whole rows of blocks dequantized, the column range copied out */
        TSR_ASSERT(c0 - lc0 >= 0 && c0 - lc0 + n_cols <= qcols);
        float *row = malloc(sizeof(float) * (size_t)qcols);
        if (!row) return tsr_errorf(TSR_ERR_OOM, "out of memory reading '%s'", name);
        tsr_status st = TSR_OK;
        for (int64_t i = 0; i < n_rows && st == TSR_OK; i++) {
            int64_t r = rows[i] - lr0;
            TSR_ASSERT(r >= 0 && r < t->shape[0]);
            st = tsr_ggml_dequantize((tsr_ggml_type)wt, (const uint8_t *)t->data + (size_t)r * (size_t)t->shape[1], row,
                                     qcols);
            if (st == TSR_OK) memcpy(dst + i * n_cols, row + (c0 - lc0), sizeof(float) * (size_t)n_cols);
        }
        free(row);
        return st;
    }
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

/* An INT4G matrix from its planes: NAME (packed rows), NAME.scales (f16) and, when asymmetric,
 * NAME.zeros (workspace_convert.c), checked against the group size in the metadata. */
static tsr_status tsr__ws_int4g(tsr__ws_src *s, const char *name, const tsr_st_tensor *t, int64_t cols,
                                tsr_wtensor *out) {
    char key[160];
    snprintf(key, sizeof key, "tsr.group.%s", name);
    const char *gs = tsr_safetensors_metadata(s->st, key);
    char *end = NULL;
    long long g = gs ? strtoll(gs, &end, 10) : 0;
    snprintf(key, sizeof key, "%s.scales", name);
    const tsr_st_tensor *d = tsr_safetensors_find(s->st, key);
    snprintf(key, sizeof key, "%s.zeros", name);
    const tsr_st_tensor *z = tsr_safetensors_find(s->st, key);
    const int64_t rows = t->shape[0], ng = g > 0 ? cols / g : 0;
    if (!gs || *end || g <= 0 || cols % g || !d || d->dtype != TSR_F16 || d->n_dims != 2 || d->shape[0] != rows ||
        d->shape[1] != ng || (z && (z->dtype != TSR_U8 || z->n_dims != 2 || z->shape[0] != rows || z->shape[1] != ng)))
        return tsr_errorf(TSR_ERR_FORMAT, "%s: 4-bit matrix '%s' lacks consistent group size, scales or zero points "
                          "(convert it again)", s->dir, name);
    TSR_TRY(tsr_wtensor_init(out, TSR_WTYPE_INT4G, rows, cols, g, t->data));
    out->scales = d->data;
    out->zeros = z ? z->data : NULL;
    out->scale_stride = (size_t)ng * 2;
    out->zero_stride = (size_t)ng;
    return TSR_OK;
}

/* Quantized tensors only (float ones are read as f32 copies, as before). */
static tsr_status tsr__ws_raw(tsr__src *base, tsr_wkind k, int layer, tsr_wtensor *out, int64_t *row0, int64_t *col0) {
    tsr__ws_src *s = (tsr__ws_src *)base;
    const tsr_st_tensor *t;
    TSR_TRY(tsr__ws_find(s, k, layer, &t, row0, col0));
    char name[128];
    tsr__weights_name(name, sizeof name, tsr__ws_names, k, layer);
    tsr_wtype wt;
    int64_t qcols;
    TSR_TRY(tsr__ws_qtype(s, name, &wt, &qcols));
    if (!qcols) return tsr_errorf(TSR_ERR_UNSUPPORTED, "'%s' is not quantized", name);
    if (wt == TSR_WTYPE_INT4G) return tsr__ws_int4g(s, name, t, qcols, out);
    return tsr_wtensor_init(out, wt, t->shape[0], qcols, 0, t->data);
}

static void tsr__ws_close(tsr__src *base) {
    tsr__ws_src *s = (tsr__ws_src *)base;
    if (s->st) tsr_safetensors_close(s->st);
    free(s->dir);
    free(s);
}

tsr_status tsr__ws_source_open(const char *path, tsr_model_config *cfg, tsr__src **out) {
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
    s->base.raw = tsr__ws_raw;
    s->base.kind_name = "workspace";
    *out = &s->base;
    return TSR_OK;
}
