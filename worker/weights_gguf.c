/* The GGUF weight source (see weights_source.h): llama.cpp's names for architecture `llama`,
 * Q/K rows un-permuted back to HF order, blocks dequantized row by row so a rank reads only
 * its rows. */
#include "worker/weights_gguf.h"

#include <stdlib.h>
#include <string.h>

#include "common/gguf.h"

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

/* llama.cpp's converter reorders each Q/K head's rows from HF's halves (rotate_half RoPE) to
 * interleaved pairs: GGUF row h*hd + 2t + s holds HF row h*hd + s*hd/2 + t.  Maps HF -> GGUF. */
static int64_t tsr__gguf_qk_row(int64_t hd, int64_t r) {
    int64_t h = r / hd, j = r % hd, half = hd / 2;
    int64_t s = j / half, t = j % half;
    return h * hd + 2 * t + s;
}

typedef struct {
    tsr__src base;
    tsr_gguf *g;
    float *row;          /* one dequantized row */
    int64_t row_cap;
} tsr__gguf_src;

static tsr_status tsr__gguf_find(tsr__gguf_src *s, tsr_wkind k, int layer, const tsr_gguf_tensor **t) {
    char name[256];
    tsr__weights_name(name, sizeof name, tsr__gguf_names, k, layer);
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
    bool permute = !base->keep_file_order && (k == TSR_W_Q || k == TSR_W_K || k == TSR_W_Q_BIAS || k == TSR_W_K_BIAS);
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

static tsr_status tsr__gguf_raw(tsr__src *base, tsr_wkind k, int layer, tsr_wtensor *out, int64_t *row0,
                                int64_t *col0) {
    *row0 = *col0 = 0;
    tsr__gguf_src *s = (tsr__gguf_src *)base;
    const tsr_gguf_tensor *t;
    TSR_TRY(tsr__gguf_find(s, k, layer, &t));
    tsr_wtype wt;
    if (t->n_dims != 2) return tsr_errorf(TSR_ERR_UNSUPPORTED, "'%s' is not a matrix", t->cname);
    TSR_TRY(tsr_wtype_from_ggml(t->type, &wt));
    return tsr_wtensor_init(out, wt, t->ne[1], t->ne[0], 0, t->data);
}

static int64_t tsr__gguf_file_row(tsr__src *base, tsr_wkind k, int64_t r) {
    bool permuted = !base->keep_file_order && (k == TSR_W_Q || k == TSR_W_K);
    return permuted ? tsr__gguf_qk_row(base->cfg->head_dim, r) : r;
}

static void tsr__gguf_close(tsr__src *base) {
    tsr__gguf_src *s = (tsr__gguf_src *)base;
    tsr_gguf_close(s->g);
    free(s->row);
    free(s);
}

static bool tsr__ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

bool tsr__gguf_source_is(const char *path) {
    if (tsr__ends_with(path, ".gguf")) return true;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

tsr_status tsr__gguf_source_open(const char *path, tsr_model_config *cfg, tsr__src **out) {
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
    TSR_ASSERT(cfg->arch == TSR_ARCH_LLAMA);   /* tsr_model_config_from_gguf refuses the others */
    s->base.shape = tsr__gguf_shape;
    s->base.read = tsr__gguf_read;
    s->base.close = tsr__gguf_close;
    s->base.raw = tsr__gguf_raw;
    s->base.file_row = tsr__gguf_file_row;
    s->base.kind_name = "gguf";
    *out = &s->base;
    return TSR_OK;
}
