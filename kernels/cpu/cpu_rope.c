/* The CPU backend's RoPE op (kernels/backend.h rope): HF's inverse frequencies per scaling type
 * (default, linear, llama3, dynamic NTK, yarn, longrope, with yarn/longrope's cos/sin factor),
 * rotate_half or GGUF-interleaved pairs, Qwen's logn scaling; threaded over tokens. */
#include <math.h>
#include <stdlib.h>

#include "common/log.h"
#include "kernels/cpu/cpu_internal.h"

/* ---------------- rope ---------------- */

/* HF's find_correction_dim (_compute_yarn_parameters), in double as Python computes it. */
static double tsr__yarn_corr_dim(double rotations, double dim, double base, double max_pos) {
    return dim * log(max_pos / (rotations * 2.0 * 3.14159265358979323846)) / (2.0 * log(base));
}

/* YaRN: inv_freq / factor (interpolation) for the low frequencies, inv_freq (extrapolation) for
 * the high ones, a linear ramp over the dims between the beta_fast and beta_slow corrections. */
static void tsr__rope_yarn(const tsr_rope_params *p, float *inv) {
    int64_t dim = p->rot_dim;
    double lo = tsr__yarn_corr_dim(p->beta_fast, (double)dim, p->theta, (double)p->original_max_pos);
    double hi = tsr__yarn_corr_dim(p->beta_slow, (double)dim, p->theta, (double)p->original_max_pos);
    if (p->yarn_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    if (lo < 0) lo = 0;
    if (hi > (double)(dim - 1)) hi = (double)(dim - 1);
    if (lo == hi) hi += 0.001; /* HF's guard against a zero-width ramp */
    float flo = (float)lo, fspan = (float)(hi - lo);
    for (int64_t i = 0; i < dim / 2; i++) {
        float pos_freq = powf(p->theta, (float)(2 * i) / (float)dim);
        float extra = 1.0f / pos_freq, inter = 1.0f / (p->factor * pos_freq);
        float ramp = ((float)i - flo) / fspan;
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ext_w = 1.0f - ramp; /* inv_freq_extrapolation_factor */
        inv[i] = inter * (1.0f - ext_w) + extra * ext_w;
    }
}

/* inv_freq[i] for i < rot_dim / 2, computed in f32 the way HF transformers computes it so the
 * rounding of long-context angles matches the golden logits. */
static void tsr__rope_inv_freq(const tsr_rope_params *p, int64_t seq_len, float *inv) {
    int64_t dim = p->rot_dim;
    float theta = p->theta;
    if (p->type == TSR_ROPE_YARN) {
        tsr__rope_yarn(p, inv);
        return;
    }
    if (p->type == TSR_ROPE_LONGROPE) {
        /* HF switches on the step's max position + 1 against original_max_position_embeddings */
        const float *ext = seq_len > p->original_max_pos ? p->long_factor : p->short_factor;
        for (int64_t i = 0; i < dim / 2; i++) inv[i] = 1.0f / (ext[i] * powf(theta, (float)(2 * i) / (float)dim));
        return;
    }
    if (p->type == TSR_ROPE_DYNAMIC && p->max_pos > 0 && seq_len > p->max_pos) {
        float f = p->factor;
        float ratio = f * (float)seq_len / (float)p->max_pos - (f - 1.0f);
        theta = theta * powf(ratio, (float)dim / (float)(dim - 2));
    }
    for (int64_t i = 0; i < dim / 2; i++) {
        float e = (float)(2 * i) / (float)dim;
        inv[i] = 1.0f / powf(theta, e);
    }
    if (p->type == TSR_ROPE_LINEAR && p->factor > 0) {
        for (int64_t i = 0; i < dim / 2; i++) inv[i] /= p->factor;
    } else if (p->type == TSR_ROPE_LLAMA3) {
        const float pi = 3.14159265358979323846f;
        float old_ctx = (float)p->original_max_pos;
        float low_wl = old_ctx / p->low_freq_factor, high_wl = old_ctx / p->high_freq_factor;
        for (int64_t i = 0; i < dim / 2; i++) {
            float wl = 2.0f * pi / inv[i];
            if (wl < high_wl) continue;                   /* high frequency: kept */
            if (wl > low_wl) { inv[i] /= p->factor; continue; } /* low frequency: scaled */
            float smooth = (old_ctx / wl - p->low_freq_factor) / (p->high_freq_factor - p->low_freq_factor);
            inv[i] = (1.0f - smooth) * inv[i] / p->factor + smooth * inv[i];
        }
    }
}

typedef struct {
    float *q, *k;
    int64_t ld, n_head, n_kv_head, head_dim;
    const tsr_attn_batch *b;
    const tsr_rope_params *p;
    const float *inv_static;   /* NULL for dynamic NTK and longrope (depend on the sequence) */
    float mscale;              /* cos/sin multiplier (yarn, longrope attention factor) */
} tsr__rope_job;

static inline void tsr__rope_head(float *x, const float *cs, const float *sn, int64_t half, bool interleaved) {
    if (interleaved) {
        for (int64_t i = 0; i < half; i++) {
            float a = x[2 * i], c = x[2 * i + 1];
            x[2 * i] = a * cs[i] - c * sn[i];
            x[2 * i + 1] = c * cs[i] + a * sn[i];
        }
        return;
    }
    for (int64_t i = 0; i < half; i++) {
        float a = x[i], c = x[i + half];
        x[i] = a * cs[i] - c * sn[i];
        x[i + half] = c * cs[i] + a * sn[i];
    }
}

static void tsr__rope_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const tsr__rope_job *j = ctx;
    const tsr_rope_params *p = j->p;
    int64_t half = p->rot_dim / 2;
    float inv_buf[512], cs[512], sn[512];
    TSR_ASSERT(half <= 512);
    for (int64_t t = i0; t < i1; t++) {
        int64_t pos = j->b->positions[t];
        const float *inv = j->inv_static;
        if (!inv) {
            int64_t s = tsr__seq_of(j->b, t);
            tsr__rope_inv_freq(p, j->b->ctx_len[s], inv_buf);
            inv = inv_buf;
        }
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)pos * inv[i];
            cs[i] = cosf(ang) * j->mscale;
            sn[i] = sinf(ang) * j->mscale;
        }
        float *qt = j->q + t * j->ld, *kt = j->k + t * j->ld;
        for (int64_t h = 0; h < j->n_head; h++) tsr__rope_head(qt + h * j->head_dim, cs, sn, half, p->interleaved);
        for (int64_t h = 0; h < j->n_kv_head; h++) tsr__rope_head(kt + h * j->head_dim, cs, sn, half, p->interleaved);
        if (p->use_logn_attn && p->max_pos > 1 && pos + 1 > p->max_pos) {
            float sc = (float)(log((double)(pos + 1)) / log((double)p->max_pos));
            for (int64_t i = 0; i < j->n_head * j->head_dim; i++) qt[i] *= sc;
        }
    }
}

void tsr__cpu_rope(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head,
                          int64_t n_kv_head, int64_t head_dim, const tsr_attn_batch *b,
                          const tsr_rope_params *p) {
    TSR_ASSERT(p->rot_dim > 0 && p->rot_dim <= head_dim && p->rot_dim % 2 == 0);
    float inv[512];
    float mscale = (p->type == TSR_ROPE_YARN || p->type == TSR_ROPE_LONGROPE) && p->attn_factor > 0 ? p->attn_factor : 1.0f;
    tsr__rope_job j = {q, k, ld, n_head, n_kv_head, head_dim, b, p, NULL, mscale};
    if (p->type != TSR_ROPE_DYNAMIC && p->type != TSR_ROPE_LONGROPE) {
        tsr__rope_inv_freq(p, 0, inv);
        j.inv_static = inv;
    }
    if (b->n_tok * (n_head + n_kv_head) * head_dim < TSR__SERIAL_WORK) tsr__rope_rows(&j, 0, b->n_tok, 0);
    else tsr_cpu_pool_run(tsr__ctx(be)->pool, b->n_tok, 0, tsr__rope_rows, &j);
}

