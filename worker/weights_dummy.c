/* The dummy weight source (see weights_source.h): random weights of the config's shapes
 * (tests, `--load-format dummy`), every element a hash of (seed, kind, layer, row, column) of
 * the UNSPLIT tensor, so a TP group's shards equal the slices of the TP = 1 model. */
#include "worker/weights_dummy.h"

#include <math.h>
#include <stdlib.h>

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
        return tsr_errorf(TSR_ERR_NOT_FOUND, "dummy model has no %s", tsr_shard_rule_of(k)->what);
    tsr__shard_global_shape(c, k, rows, cols);
    return TSR_OK;
}

void tsr__dummy_params(const tsr__src *base, tsr_wkind k, int layer, uint64_t *key, float *scale, float *offset,
                       int64_t *C) {
    TSR_ASSERT(tsr__dummy_source_is(base));
    const tsr__dummy_src *s = (const tsr__dummy_src *)base;
    int64_t R;
    tsr__shard_global_shape(s->base.cfg, k, &R, C);
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
    int64_t C;
    float scale, offset;
    uint64_t key;
    tsr__dummy_params(base, k, layer, &key, &scale, &offset, &C);
    for (int64_t i = 0; i < n_rows; i++)
        for (int64_t j = 0; j < n_cols; j++) {
            uint64_t h = tsr__mix(key ^ (uint64_t)(rows[i] * C + c0 + j));
            float u = (float)((double)(h >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
            dst[i * n_cols + j] = offset + scale * u;
        }
    return TSR_OK;
}

static void tsr__dummy_close(tsr__src *base) { free(base); }

bool tsr__dummy_source_is(const tsr__src *s) { return s->read == tsr__dummy_read; }

tsr_status tsr__dummy_source_open(uint64_t seed, tsr__src **out) {
    tsr__dummy_src *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    s->seed = seed;
    s->base.shape = tsr__dummy_shape;
    s->base.read = tsr__dummy_read;
    s->base.close = tsr__dummy_close;
    s->base.kind_name = "dummy";
    *out = &s->base;
    return TSR_OK;
}
