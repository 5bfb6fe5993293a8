/* Sampling on the CPU: the reference that a GPU sampler will be tested against.  The order of
 * the stages and the semantics of every parameter are written down in sampling.h.
 *
 * Speed: a step costs one pass for the softmax (exp over the vocabulary) and, only when
 * truncation is asked for, a selection of the top candidates: top-k by an O(V) quickselect
 * and a sort of the k survivors; top-p and min-p by sorting growing chunks of the best
 * remaining candidates until the cut-off is found (peaked LM distributions stop after the
 * first chunk of 64), so no full sort of 49k-128k entries happens in the common case. */
#include "worker/sampling.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct tsr__cand {
    float p;      /* exp(logit - max): unnormalised probability */
    int32_t id;
} tsr__cand;

struct tsr_sampler {
    int64_t vocab;
    tsr__cand *cand;    /* [vocab] */
    float *raw;         /* [vocab] copy of the raw logits, for logprobs */
    uint32_t *stamp;    /* [vocab] dedup marks for the repetition penalty */
    uint32_t cur_stamp;
    int32_t *count;     /* [vocab] zero between calls; output-token counts */
};

void tsr_sampling_params_default(tsr_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
    p->logprobs_mode = TSR_LOGPROBS_RAW;
}

tsr_status tsr_sampling_params_validate(const tsr_sampling_params *p) {
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "temperature must be a finite number >= 0 (got %g)",
                          (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
    if (p->top_k < -1)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "top_k must be -1 or 0 (off) or a positive count (got %d)",
                          (int)p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "min_p must be in [0, 1] (got %g)", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "repetition_penalty must be a finite number > 0 (got %g)",
                          (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "presence_penalty must be in [-2, 2] (got %g)",
                          (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "frequency_penalty must be in [-2, 2] (got %g)",
                          (double)p->frequency_penalty);
    if (p->logprobs < -1 || p->logprobs > TSR_SAMPLING_MAX_LOGPROBS)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "logprobs must be between 0 and %d (got %d)",
                          TSR_SAMPLING_MAX_LOGPROBS, (int)p->logprobs);
    if (p->min_tokens < 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "min_tokens must be >= 0 (got %d)", (int)p->min_tokens);
    if (p->logprobs_mode != TSR_LOGPROBS_RAW && p->logprobs_mode != TSR_LOGPROBS_PROCESSED)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "unknown logprobs mode %d", (int)p->logprobs_mode);
    return TSR_OK;
}

static uint64_t tsr__splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t tsr_sampling_random_seed(void) {
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, &s, sizeof s);
        close(fd);
        if (n == (ssize_t)sizeof s) return s;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return tsr__splitmix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
           tsr__splitmix64((uint64_t)getpid());
}

/* ---- Philox-4x32-10 (Salmon et al., SC'11), checked against Random123's known answers. ---- */

void tsr_philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
    uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

double tsr_sampling_uniform(uint64_t seed, uint64_t step) {
    uint32_t r[4];
    tsr_philox4x32(seed, step, 0, r);
    uint64_t bits = (((uint64_t)r[0] << 32) | r[1]) >> 11;   /* 53 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* ---- scratch ---- */

tsr_status tsr_sampler_init(int64_t vocab, tsr_sampler **out) {
    *out = NULL;
    if (vocab <= 0 || vocab > INT32_MAX)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "sampler: vocabulary size %lld out of range", (long long)vocab);
    tsr_sampler *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "sampler: out of memory");
    s->vocab = vocab;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->raw = malloc((size_t)vocab * sizeof *s->raw);
    s->stamp = calloc((size_t)vocab, sizeof *s->stamp);
    s->count = calloc((size_t)vocab, sizeof *s->count);
    if (!s->cand || !s->raw || !s->stamp || !s->count) {
        tsr_sampler_free(s);
        return tsr_errorf(TSR_ERR_OOM, "sampler: out of memory for vocabulary %lld", (long long)vocab);
    }
    *out = s;
    return TSR_OK;
}

void tsr_sampler_free(tsr_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->raw);
    free(s->stamp);
    free(s->count);
    free(s);
}

/* ---- stage 0: logit_bias, min_tokens ---- */

bool tsr_sampling_needs_bias(const tsr_sampling_params *p, const tsr_sample_history *h) {
    const tsr_sample_bias *b = p->bias;
    return b && (b->n > 0 || (b->n_min_ban > 0 && h->n_output < p->min_tokens));
}

void tsr_sampling_apply_bias(float *logits, int64_t vocab, const tsr_sampling_params *p, const tsr_sample_history *h) {
    const tsr_sample_bias *b = p->bias;
    if (!b) return;
    for (int64_t i = 0; i < b->n; i++) {
        int32_t id = b->ids[i];
        TSR_ASSERT(id >= 0 && id < vocab);
        logits[id] += b->vals[i];
    }
    if (h->n_output < p->min_tokens)
        for (int64_t i = 0; i < b->n_min_ban; i++) {
            int32_t id = b->min_ban_ids[i];
            if (id >= 0 && id < vocab) logits[id] = -INFINITY;
        }
}

/* ---- stage 1: penalties ---- */

void tsr_sampling_apply_penalties(tsr_sampler *s, float *logits, const tsr_sampling_params *p,
                                  const tsr_sample_history *h) {
    const int64_t V = s->vocab;
    if (p->repetition_penalty != 1.0f) {
        const float r = p->repetition_penalty;
        if (++s->cur_stamp == 0) {   /* wrapped: forget all marks once every 4G calls */
            memset(s->stamp, 0, (size_t)V * sizeof *s->stamp);
            s->cur_stamp = 1;
        }
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *ids = pass ? h->output_ids : h->prompt_ids;
            int64_t n = pass ? h->n_output : h->n_prompt;
            for (int64_t i = 0; i < n; i++) {
                int32_t id = ids[i];
                TSR_ASSERT(id >= 0 && id < V);
                if (s->stamp[id] == s->cur_stamp) continue;
                s->stamp[id] = s->cur_stamp;
                float l = logits[id];
                logits[id] = l > 0.0f ? l / r : l * r;
            }
        }
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (int64_t i = 0; i < h->n_output; i++) {
            int32_t id = h->output_ids[i];
            TSR_ASSERT(id >= 0 && id < V);
            s->count[id]++;
        }
        for (int64_t i = 0; i < h->n_output; i++) {
            int32_t id = h->output_ids[i];
            int32_t c = s->count[id];
            if (c == 0) continue;   /* already applied */
            logits[id] -= p->frequency_penalty * (float)c + p->presence_penalty;
            s->count[id] = 0;
        }
    }
}

/* ---- selection helpers ---- */

/* The ranking: higher probability first, then the smaller id (a total order, so the kept set
 * and the walk order are the same on every machine). */
static inline int tsr__better(const tsr__cand *a, const tsr__cand *b) {
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

static int tsr__cmp_desc(const void *a, const void *b) {
    const tsr__cand *x = a, *y = b;
    if (tsr__better(x, y)) return -1;
    if (tsr__better(y, x)) return 1;
    return 0;
}

static inline void tsr__swap(tsr__cand *a, tsr__cand *b) {
    tsr__cand t = *a;
    *a = *b;
    *b = t;
}

/* Sift c[i] down a heap of size m whose root is the worst element. */
static void tsr__heap_down(tsr__cand *c, int64_t m, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < m && tsr__better(&c[w], &c[l])) w = l;
        if (r < m && tsr__better(&c[w], &c[r])) w = r;
        if (w == i) return;
        tsr__swap(&c[i], &c[w]);
        i = w;
    }
}

/* Reorders c[0..n) so that its m best elements are c[0..m) (in no particular order).
 * For a few out of many, one pass against a heap of the m best so far: nearly every element
 * costs one comparison with the heap's worst.  Otherwise quickselect with a median-of-three
 * pivot: O(n) on average. */
static void tsr__select_top(tsr__cand *c, int64_t n, int64_t m) {
    if (m <= 0 || m >= n) return;
    if (m * 16 <= n) {
        for (int64_t i = m / 2 - 1; i >= 0; i--) tsr__heap_down(c, m, i);
        for (int64_t i = m; i < n; i++) {
            if (tsr__better(&c[i], &c[0])) {
                tsr__swap(&c[i], &c[0]);
                tsr__heap_down(c, m, 0);
            }
        }
        return;
    }
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        /* Order c[lo], c[mid], c[hi] best-first and take the middle as the pivot. */
        if (tsr__better(&c[mid], &c[lo])) tsr__swap(&c[mid], &c[lo]);
        if (tsr__better(&c[hi], &c[lo])) tsr__swap(&c[hi], &c[lo]);
        if (tsr__better(&c[hi], &c[mid])) tsr__swap(&c[hi], &c[mid]);
        tsr__cand pivot = c[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (tsr__better(&c[i], &pivot)) i++;
            while (tsr__better(&pivot, &c[j])) j--;
            if (i <= j) {
                tsr__swap(&c[i], &c[j]);
                i++;
                j--;
            }
        }
        /* Now c[lo..j] >= pivot >= c[i..hi] in rank, and c[j+1..i-1] == pivot. */
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else return;
    }
}

/* Softmax + truncation. Leaves the kept candidates in s->cand[0..L) and returns L and their
 * total unnormalised mass; *sorted says whether they are in rank order (otherwise id order,
 * which happens only when nothing was truncated). Also returns the softmax normaliser. */
static int64_t tsr__truncate(tsr_sampler *s, const float *logits, const tsr_sampling_params *p,
                             double *kept_mass, double *z_all) {
    const int64_t V = s->vocab;
    tsr__cand *c = s->cand;
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
        if (logits[v] > mx) mx = logits[v];
    if (mx == -INFINITY) {   /* nothing has any probability (or NaN everywhere): take token 0 */
        c[0].p = 1.0f;
        c[0].id = 0;
        *kept_mass = 1.0;
        *z_all = 1.0;
        return 1;
    }
    const bool use_k = p->top_k > 0 && p->top_k < V;
    const bool use_p = p->top_p < 1.0f;
    const bool use_min = p->min_p > 0.0f;
    /* min-p comes last and keeps a rank prefix; dropping its losers up front changes nothing
     * unless top-p needs the mass of top-k survivors that min-p would remove. */
    const float pre_cut = (use_min && !(use_k && use_p)) ? p->min_p : 0.0f;
    double z = 0.0;
    int64_t n = 0;
    int64_t n_lim;
    double z_k;
    if (use_k) {
        /* Rank by logit first (the same order as by probability), so only k exps are needed;
         * the sum over the whole vocabulary is then needed by nobody. */
        for (int64_t v = 0; v < V; v++) {
            if (logits[v] > -INFINITY) {   /* also drops NaN */
                c[n].p = logits[v];
                c[n].id = (int32_t)v;
                n++;
            }
        }
        if (p->top_k < n) {
            tsr__select_top(c, n, p->top_k);
            n = p->top_k;
        }
        int64_t w = 0;
        for (int64_t i = 0; i < n; i++) {
            float e = expf(c[i].p - mx);
            if (e > 0.0f && e >= pre_cut) {
                z += e;
                c[w].p = e;
                c[w].id = c[i].id;
                w++;
            } else if (e > 0.0f) {
                z += e;
            }
        }
        n = w;
        n_lim = n;
        z_k = z;
        *z_all = NAN;   /* not computed on this path */
    } else {
        for (int64_t v = 0; v < V; v++) {
            float e = expf(logits[v] - mx);   /* NaN logits give NaN here and are dropped */
            if (e > 0.0f) {
                z += e;
                if (e >= pre_cut) {
                    c[n].p = e;
                    c[n].id = (int32_t)v;
                    n++;
                }
            }
        }
        *z_all = z;
        if (!use_p && !use_min) {   /* plain sampling from the whole distribution */
            *kept_mass = z;
            return n;
        }
        n_lim = n;
        z_k = z;
    }
    const double target = use_p ? (double)p->top_p * z_k : INFINITY;
    int64_t sorted = 0, chunk = 64, L = n_lim;
    double cum = 0.0;
    bool done = false;
    while (!done && sorted < n_lim) {
        int64_t end = sorted + chunk < n_lim ? sorted + chunk : n_lim;
        tsr__select_top(c + sorted, n_lim - sorted, end - sorted);
        qsort(c + sorted, (size_t)(end - sorted), sizeof *c, tsr__cmp_desc);
        for (int64_t i = sorted; i < end; i++) {
            if (use_min && c[i].p < p->min_p) {   /* max prob is exp(0) = 1 */
                L = i;
                done = true;
                break;
            }
            cum += c[i].p;
            if (cum >= target) {
                L = i + 1;
                done = true;
                break;
            }
        }
        sorted = end;
        chunk *= 4;
    }
    if (L < 1) L = 1;
    double mass = 0.0;
    for (int64_t i = 0; i < L; i++) mass += c[i].p;
    *kept_mass = mass;
    return L;
}

int64_t tsr_sampling_truncate(tsr_sampler *s, const float *logits, const tsr_sampling_params *p,
                              uint8_t *keep, float *probs) {
    double mass, z_unused;
    int64_t L = tsr__truncate(s, logits, p, &mass, &z_unused);
    float mx = -INFINITY;
    for (int64_t v = 0; v < s->vocab; v++)
        if (logits[v] > mx) mx = logits[v];
    double z = 0.0;
    for (int64_t v = 0; v < s->vocab; v++) z += mx == -INFINITY ? 0.0 : expf(logits[v] - mx);
    for (int64_t v = 0; v < s->vocab; v++) {
        keep[v] = 0;
        probs[v] = mx == -INFINITY ? 0.0f : (float)(expf(logits[v] - mx) / z);
    }
    for (int64_t i = 0; i < L; i++) keep[s->cand[i].id] = 1;
    return L;
}

/* ---- logprobs ---- */

static void tsr__logprobs(tsr_sampler *s, const float *l, int32_t token, int32_t top_n,
                          tsr_sample_result *res) {
    const int64_t V = s->vocab;
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
        if (l[v] > mx) mx = l[v];
    double z = 0.0;
    for (int64_t v = 0; v < V; v++) z += exp((double)l[v] - (double)mx);
    const double lse = (double)mx + log(z);
    res->logprob = (float)((double)l[token] - lse);
    res->n_top = 0;
    if (top_n <= 0) return;
    /* Rank by logit: reuse the candidate array with the logit in place of the probability. */
    tsr__cand *c = s->cand;
    for (int64_t v = 0; v < V; v++) {
        c[v].p = isnan(l[v]) ? -INFINITY : l[v];
        c[v].id = (int32_t)v;
    }
    int64_t n = top_n < V ? top_n : V;
    tsr__select_top(c, V, n);
    qsort(c, (size_t)n, sizeof *c, tsr__cmp_desc);
    for (int64_t i = 0; i < n; i++) {
        res->top[i].id = c[i].id;
        res->top[i].logprob = (float)((double)c[i].p - lse);
    }
    res->n_top = (int32_t)n;
}

void tsr_sampling_logprobs(tsr_sampler *s, const float *logits, int32_t token, int32_t top_n, tsr_sample_result *res) {
    TSR_ASSERT(token >= 0 && token < s->vocab);
    res->token = token;
    if (top_n > TSR_SAMPLING_MAX_LOGPROBS) top_n = TSR_SAMPLING_MAX_LOGPROBS;
    tsr__logprobs(s, logits, token, top_n, res);
}

/* ---- the whole step ---- */

int32_t tsr_sample(tsr_sampler *s, float *logits, const tsr_sampling_params *p,
                   const tsr_sample_history *h, tsr_sample_result *res) {
    const int64_t V = s->vocab;
    const bool want_lp = res && p->logprobs >= 0;
    const bool raw_lp = want_lp && p->logprobs_mode == TSR_LOGPROBS_RAW;
    if (raw_lp) memcpy(s->raw, logits, (size_t)V * sizeof *logits);
    if (p->allowed)
        for (int64_t v = 0; v < V; v++)
            if (!((p->allowed[v >> 6] >> (v & 63)) & 1)) logits[v] = -INFINITY;
    tsr_sampling_apply_bias(logits, V, p, h);

    tsr_sampling_apply_penalties(s, logits, p, h);

    int32_t token = 0;
    if (p->temperature <= 0.0f) {
        /* Greedy: the first maximum, like torch.argmax. */
        float best = -INFINITY;
        for (int64_t v = 0; v < V; v++)
            if (logits[v] > best) {
                best = logits[v];
                token = (int32_t)v;
            }
    } else {
        if (p->temperature != 1.0f) {
            const float inv_t = 1.0f / p->temperature;
            for (int64_t v = 0; v < V; v++) logits[v] *= inv_t;
        }
        double mass, z;
        int64_t L = tsr__truncate(s, logits, p, &mass, &z);
        double u = tsr_sampling_uniform(p->seed, (uint64_t)h->n_output) * mass;
        double cum = 0.0;
        token = s->cand[L - 1].id;   /* if rounding leaves u past the last sum */
        for (int64_t i = 0; i < L; i++) {
            cum += s->cand[i].p;
            if (u < cum) {
                token = s->cand[i].id;
                break;
            }
        }
    }
    if (res) {
        res->token = token;
        res->logprob = 0.0f;
        res->n_top = 0;
        if (want_lp) {
            int32_t top_n = p->logprobs < TSR_SAMPLING_MAX_LOGPROBS ? p->logprobs : TSR_SAMPLING_MAX_LOGPROBS;
            tsr__logprobs(s, raw_lp ? s->raw : logits, token, top_n, res);
        }
    }
    return token;
}
