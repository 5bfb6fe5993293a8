/* Calibration statistics (lite_stats.h): the observer that accumulates them during forward
 * steps, the calibration loop, and the documented safetensors file. */
#include "tools/lite_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/safetensors.h"
#include "coordinator/block_manager.h"
#include "worker/kv_pool.h"

static const char *const tsr__lite_point_names[TSR_LITE_N_POINTS] = {"qkv_in", "o_in", "gate_up_in",
                                                                     "down_in", "k", "v"};
static const char *const tsr__lite_stat_names[5] = {"max", "min", "mean", "absmax", "absmean"};

const char *tsr_lite_point_name(int what) {
    return what >= 0 && what < TSR_LITE_N_POINTS ? tsr__lite_point_names[what] : "?";
}

void tsr_lite_stats_free(tsr_lite_stats *s) {
    if (!s) return;
    for (int64_t i = 0; s->pt && i < s->n_layer * TSR_LITE_N_POINTS; i++) {
        tsr_lite_point *p = &s->pt[i];
        free(p->max), free(p->min), free(p->absmax), free(p->sum), free(p->abssum), free(p->rows);
    }
    free(s->pt);
    free(s);
}

static tsr_status tsr__lite_point_init(tsr_lite_point *p, int64_t dim) {
    p->dim = dim;
    p->max = malloc(sizeof(float) * (size_t)dim);
    p->min = malloc(sizeof(float) * (size_t)dim);
    p->absmax = calloc((size_t)dim, sizeof(float));
    p->sum = calloc((size_t)dim, sizeof(double));
    p->abssum = calloc((size_t)dim, sizeof(double));
    if (!p->max || !p->min || !p->absmax || !p->sum || !p->abssum)
        return tsr_errorf(TSR_ERR_OOM, "out of memory for calibration statistics");
    for (int64_t c = 0; c < dim; c++) p->max[c] = -INFINITY, p->min[c] = INFINITY;
    return TSR_OK;
}

static tsr_status tsr__lite_stats_alloc(const tsr_model_config *cfg, tsr_lite_stats **out) {
    tsr_lite_stats *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    s->n_layer = cfg->n_layer;
    s->pt = calloc((size_t)(cfg->n_layer * TSR_LITE_N_POINTS), sizeof *s->pt);
    if (!s->pt) {
        free(s);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    int64_t dims[TSR_LITE_N_POINTS] = {cfg->d_model, cfg->n_head * cfg->head_dim, cfg->d_model, cfg->d_ff,
                                       cfg->n_kv_head * cfg->head_dim, cfg->n_kv_head * cfg->head_dim};
    for (int64_t l = 0; l < cfg->n_layer; l++)
        for (int w = 0; w < TSR_LITE_N_POINTS; w++) {
            tsr_status st = tsr__lite_point_init(&s->pt[l * TSR_LITE_N_POINTS + w], dims[w]);
            if (st != TSR_OK) {
                tsr_lite_stats_free(s);
                return st;
            }
        }
    *out = s;
    return TSR_OK;
}

static void tsr__lite_observe(void *user, int64_t layer, int what, const float *x, int64_t n_tok, int64_t ld,
                              int64_t dim) {
    tsr_lite_stats *s = user;
    if (layer < 0 || layer >= s->n_layer || what < 0 || what >= TSR_LITE_N_POINTS) return;
    tsr_lite_point *p = &s->pt[layer * TSR_LITE_N_POINTS + what];
    if (dim != p->dim) return;   /* a shard (TP > 1) is refused before calibration */
    for (int64_t t = 0; t < n_tok; t++) {
        const float *r = x + t * ld;
        for (int64_t c = 0; c < dim; c++) {
            float v = r[c], a = fabsf(v);
            if (v > p->max[c]) p->max[c] = v;
            if (v < p->min[c]) p->min[c] = v;
            if (a > p->absmax[c]) p->absmax[c] = a;
            p->sum[c] += v;
            p->abssum[c] += a;
        }
        if (p->rows && p->n % p->stride == 0 && p->n_rows < p->rows_cap)
            memcpy(p->rows + p->n_rows++ * dim, r, sizeof(float) * (size_t)dim);
        p->n++;
    }
}

tsr_status tsr_lite_stats_collect(tsr_runtime *rt, const int32_t *toks, int64_t n_toks, int64_t samples,
                                  int64_t seqlen, int64_t keep_rows, tsr_lite_stats **out) {
    *out = NULL;
    if (rt->group.size != 1)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "calibration runs on one rank (not under mpirun -np %d)", rt->group.size);
    int64_t n_win = n_toks / seqlen;
    if (n_win > samples) n_win = samples;
    if (n_win < 1)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "the calibration text has %lld tokens, fewer than one window of %lld",
                          (long long)n_toks, (long long)seqlen);
    tsr_lite_stats *s = NULL;
    TSR_TRY(tsr__lite_stats_alloc(&rt->model->cfg, &s));
    s->samples = n_win;
    s->seqlen = seqlen;
    s->k_gguf_order = rt->model->qk_interleaved ? 1 : 0;
    tsr_status st = TSR_OK;
    if (keep_rows > 0) {
        int64_t total = n_win * seqlen, stride = (total + keep_rows - 1) / keep_rows;
        for (int64_t i = 0; i < s->n_layer * TSR_LITE_N_POINTS && st == TSR_OK; i++) {
            tsr_lite_point *p = &s->pt[i];
            if (i % TSR_LITE_N_POINTS > TSR_OBS_DOWN_IN) continue;   /* linear inputs only */
            p->stride = stride < 1 ? 1 : stride;
            p->rows_cap = (total + p->stride - 1) / p->stride;
            p->rows = malloc(sizeof(float) * (size_t)(p->rows_cap * p->dim));
            if (!p->rows) st = tsr_errorf(TSR_ERR_OOM, "out of memory keeping calibration activations");
        }
    }
    tsr_block_manager *bm = NULL;
    tsr_kv_seq seq = {0};
    if (st == TSR_OK) st = tsr_bm_init(rt->kv.n_blocks, rt->kv.layout.block_len, &bm);
    if (st == TSR_OK) st = tsr_bm_seq_reserve(bm, &seq, seqlen);
    if (st == TSR_OK) {
        tsr_forward_set_observer(rt->fs, tsr__lite_observe, s);
        tsr_progress("calibration windows", 0, n_win);
        for (int64_t w = 0; w < n_win && st == TSR_OK; w++) {
            seq.n_tokens = 0;
            st = tsr_forward_seq(rt->fs, &rt->kv, &seq, toks + w * seqlen, seqlen, false, 512, NULL);
            tsr_progress("calibration windows", w + 1, n_win);
        }
        tsr_forward_set_observer(rt->fs, NULL, NULL);
    }
    if (bm) tsr_bm_seq_release(bm, &seq);
    tsr_bm_free(bm);
    if (st != TSR_OK) {
        tsr_lite_stats_free(s);
        return st;
    }
    *out = s;
    return TSR_OK;
}

tsr_status tsr_lite_stats_write(const tsr_lite_stats *s, const char *path) {
    int64_t n = s->n_layer * TSR_LITE_N_POINTS * 5, k = 0;
    tsr_st_write_tensor *ts = calloc((size_t)n, sizeof *ts);
    char (*names)[64] = calloc((size_t)n, sizeof *names);
    float **bufs = calloc((size_t)n, sizeof *bufs);
    tsr_status st = ts && names && bufs ? TSR_OK : tsr_errorf(TSR_ERR_OOM, "out of memory");
    for (int64_t i = 0; i < s->n_layer * TSR_LITE_N_POINTS && st == TSR_OK; i++) {
        const tsr_lite_point *p = &s->pt[i];
        for (int stat = 0; stat < 5 && st == TSR_OK; stat++, k++) {
            float *b = bufs[k] = malloc(sizeof(float) * (size_t)p->dim);
            if (!b) {
                st = tsr_errorf(TSR_ERR_OOM, "out of memory");
                break;
            }
            for (int64_t c = 0; c < p->dim; c++) {
                double nn = p->n ? (double)p->n : 1;
                b[c] = stat == 0 ? p->max[c] : stat == 1 ? p->min[c] : stat == 2 ? (float)(p->sum[c] / nn)
                     : stat == 3 ? p->absmax[c] : (float)(p->abssum[c] / nn);
                if (!p->n) b[c] = 0;
            }
            snprintf(names[k], sizeof names[k], "layers.%lld.%s.%s", (long long)(i / TSR_LITE_N_POINTS),
                     tsr__lite_point_names[i % TSR_LITE_N_POINTS], tsr__lite_stat_names[stat]);
            ts[k] = (tsr_st_write_tensor){.name = names[k], .dtype = TSR_F32, .n_dims = 1, .shape = {p->dim}, .data = b};
        }
    }
    if (st == TSR_OK) {
        char tok_s[32], smp_s[32], len_s[32];
        snprintf(tok_s, sizeof tok_s, "%lld", (long long)(s->n_layer ? s->pt[0].n : 0));
        snprintf(smp_s, sizeof smp_s, "%lld", (long long)s->samples);
        snprintf(len_s, sizeof len_s, "%lld", (long long)s->seqlen);
        const char *meta[] = {"format", "tessera-calib-stats", "version", "1", "model", s->model, "tokens", tok_s,
                              "samples", smp_s, "seqlen", len_s, "k_order",
                              s->k_gguf_order > 0 ? "gguf" : s->k_gguf_order == 0 ? "hf" : "unknown", NULL};
        st = tsr_safetensors_write(path, ts, n, meta);
    }
    for (int64_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(ts);
    return st;
}

tsr_status tsr_lite_stats_read(const char *path, tsr_lite_stats **out) {
    *out = NULL;
    tsr_safetensors *f;
    TSR_TRY(tsr_safetensors_open(path, &f));
    const char *fmt = tsr_safetensors_metadata(f, "format"), *tok = tsr_safetensors_metadata(f, "tokens");
    tsr_status st = TSR_OK;
    if (!fmt || strcmp(fmt, "tessera-calib-stats") || !tok)
        st = tsr_errorf(TSR_ERR_FORMAT, "%s: not a tessera-calib-stats file (tessera lite calibrate writes them)", path);
    int64_t n_layer = 0;
    while (st == TSR_OK) {
        char name[64];
        snprintf(name, sizeof name, "layers.%lld.qkv_in.max", (long long)n_layer);
        if (!tsr_safetensors_find(f, name)) break;
        n_layer++;
    }
    tsr_lite_stats *s = NULL;
    if (st == TSR_OK && !n_layer) st = tsr_errorf(TSR_ERR_FORMAT, "%s: no layers.0.qkv_in statistics", path);
    if (st == TSR_OK && !(s = calloc(1, sizeof *s))) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    if (st == TSR_OK) {
        s->n_layer = n_layer;
        s->pt = calloc((size_t)(n_layer * TSR_LITE_N_POINTS), sizeof *s->pt);
        if (!s->pt) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
        const char *v = tsr_safetensors_metadata(f, "samples");
        s->samples = v ? atoll(v) : 0;
        v = tsr_safetensors_metadata(f, "seqlen");
        s->seqlen = v ? atoll(v) : 0;
        v = tsr_safetensors_metadata(f, "k_order");
        s->k_gguf_order = !v ? -1 : !strcmp(v, "gguf") ? 1 : !strcmp(v, "hf") ? 0 : -1;
        v = tsr_safetensors_metadata(f, "model");
        snprintf(s->model, sizeof s->model, "%s", v ? v : "");
    }
    int64_t n_tok = atoll(tok ? tok : "0");
    for (int64_t i = 0; st == TSR_OK && i < n_layer * TSR_LITE_N_POINTS; i++) {
        tsr_lite_point *p = &s->pt[i];
        const tsr_st_tensor *t[5];
        for (int stat = 0; stat < 5; stat++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%lld.%s.%s", (long long)(i / TSR_LITE_N_POINTS),
                     tsr__lite_point_names[i % TSR_LITE_N_POINTS], tsr__lite_stat_names[stat]);
            t[stat] = tsr_safetensors_find(f, name);
            if (!t[stat] || t[stat]->dtype != TSR_F32 || t[stat]->n_dims != 1 || t[stat]->shape[0] != t[0]->shape[0]) {
                st = tsr_errorf(TSR_ERR_FORMAT, "%s: %s missing or not f32 [dim]", path, name);
                break;
            }
        }
        if (st != TSR_OK || (st = tsr__lite_point_init(p, t[0]->shape[0])) != TSR_OK) break;
        p->n = n_tok;
        for (int64_t c = 0; c < p->dim; c++) {
            p->max[c] = ((const float *)t[0]->data)[c];
            p->min[c] = ((const float *)t[1]->data)[c];
            p->sum[c] = (double)((const float *)t[2]->data)[c] * (double)n_tok;
            p->absmax[c] = ((const float *)t[3]->data)[c];
            p->abssum[c] = (double)((const float *)t[4]->data)[c] * (double)n_tok;
        }
    }
    tsr_safetensors_close(f);
    if (st != TSR_OK) {
        tsr_lite_stats_free(s);
        return st;
    }
    *out = s;
    return TSR_OK;
}
