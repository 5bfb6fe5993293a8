/* Sampling: turns one row of logits into the next token.  It runs wherever the last logits
 * are (rank 0's worker today; a GPU twin later), so everything it needs travels in the step
 * plan: the plain-data tsr_sampling_params, the sequence's prompt and output ids, and the
 * number of tokens generated so far (the RNG counter).  It keeps no per-request state, which
 * is what lets the scheduler preempt, recompute and batch sequences freely and still get the
 * same tokens for the same seed.
 *
 * Processing order (the one vLLM and HF transformers use; each stage sees the previous one's
 * output):
 *   0. logit_bias (OpenAI): bias[id] added to the raw logit (-100 effectively bans, +100
 *      effectively forces); min_tokens (vLLM): while fewer than min_tokens tokens have been
 *      generated, the stop ids (EOS and the request's stop ids) get -inf
 *   1. penalties on the raw logits
 *        repetition_penalty (HF): for every distinct token in prompt + output so far,
 *          logit > 0 ? logit / r : logit * r
 *        frequency_penalty, presence_penalty (OpenAI): over the generated tokens only,
 *          logit -= frequency * count(token) + presence * (count(token) > 0)
 *   2. temperature: logit / T; T == 0 means greedy (argmax of the penalised logits, the
 *      stages below are skipped and no random number is drawn)
 *   3. top-k: keep the k largest (k <= 0: off)
 *   4. top-p: of what top-k kept, renormalised, keep the smallest prefix in descending
 *      probability whose mass reaches p (always at least one token; p >= 1: off)
 *   5. min-p: keep tokens whose probability is >= min_p * the largest probability (0: off)
 *   then draw from the kept tokens, renormalised.
 *
 * Randomness: a Philox-4x32-10 counter-based generator (the one cuRAND and PyTorch use on
 * GPUs), keyed by the request's seed and counted by the number of tokens generated so far.
 * No state to carry or to broadcast; a GPU kernel reproduces the same uniforms bit for bit.
 * Ties in the ranking are broken by the smaller token id so the kept set is deterministic.
 *
 * Logprobs: like vLLM (its default "raw" mode) and OpenAI, the reported logprobs are the
 * log-softmax of the model's raw logits, before logit_bias, penalties, temperature and truncation; the
 * chosen token's logprob and the top N (by raw logit).  TSR_LOGPROBS_PROCESSED switches to the
 * log-softmax of the logits after penalties and temperature (before truncation). */
#ifndef TSR_SAMPLING_H
#define TSR_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#define TSR_SAMPLING_MAX_LOGPROBS 20   /* OpenAI's top_logprobs limit */

typedef enum tsr_logprobs_mode {
    TSR_LOGPROBS_RAW = 0,      /* log-softmax of the model's logits (vLLM / OpenAI default) */
    TSR_LOGPROBS_PROCESSED,    /* after penalties and temperature */
} tsr_logprobs_mode;

/* Stage 0's token lists (logit_bias, and the ids min_tokens masks), owned by the request on
 * rank 0 like `allowed` below. */
typedef struct tsr_sample_bias {
    const int32_t *ids;         /* logit_bias: ids in [0, vocab) */
    const float *vals;          /* and their (finite) biases */
    int64_t n;
    const int32_t *min_ban_ids; /* masked while n_output < min_tokens: EOS and the stop ids */
    int64_t n_min_ban;
} tsr_sample_bias;

/* Plain data (no pointers but allowed and bias, which never leave rank 0). */
typedef struct tsr_sampling_params {
    float temperature;          /* 0: greedy; default 1 */
    int32_t top_k;              /* <= 0: off */
    float top_p;                /* (0, 1]; 1: off */
    float min_p;                /* [0, 1]; 0: off */
    float repetition_penalty;   /* > 0; 1: off */
    float presence_penalty;     /* [-2, 2]; 0: off */
    float frequency_penalty;    /* [-2, 2]; 0: off */
    uint64_t seed;              /* resolved: callers pick one (tsr_sampling_random_seed) */
    int32_t logprobs;           /* -1: none; 0: the chosen token's only; N: also the top N */
    int32_t logprobs_mode;      /* tsr_logprobs_mode */
    /* Constrained decoding (coordinator/grammar): a bitmask over the vocabulary, bit v of
     * allowed[v / 64] set where token v may be sampled; NULL: every token.  The one pointer
     * here: it lives on rank 0 (the engine's), is read where sampling runs (rank 0) and never
     * travels in a step plan.  Applied to the raw logits first (masked tokens become -inf),
     * so raw logprobs still describe the model's own distribution. */
    const uint64_t *allowed;
    int32_t min_tokens;         /* >= 0: bias->min_ban_ids are masked while n_output < this */
    const tsr_sample_bias *bias;   /* NULL: no logit_bias and nothing for min_tokens to mask */
} tsr_sampling_params;

/* Defaults: temperature 1, no truncation, no penalties, seed 0, no logprobs. */
void tsr_sampling_params_default(tsr_sampling_params *p);
/* Range checks for user-given values; the message names the parameter. */
tsr_status tsr_sampling_params_validate(const tsr_sampling_params *p);
/* A seed for requests that did not give one (from /dev/urandom, else the clock). */
uint64_t tsr_sampling_random_seed(void);

typedef struct tsr_token_logprob {
    int32_t id;
    float logprob;
} tsr_token_logprob;

typedef struct tsr_sample_result {
    int32_t token;
    float logprob;              /* of token; valid when params.logprobs >= 0 */
    int32_t n_top;              /* entries in top, in descending logprob */
    tsr_token_logprob top[TSR_SAMPLING_MAX_LOGPROBS];
} tsr_sample_result;

/* Scratch memory sized to a vocabulary, so a step allocates nothing.  One per thread. */
typedef struct tsr_sampler tsr_sampler;

tsr_status tsr_sampler_init(int64_t vocab, tsr_sampler **out);
void tsr_sampler_free(tsr_sampler *s);

/* What one sequence has seen: prompt ids (for the repetition penalty) and the ids generated
 * so far (penalties, and n_output is the RNG counter). Ids must be in [0, vocab). */
typedef struct tsr_sample_history {
    const int32_t *prompt_ids;
    int64_t n_prompt;
    const int32_t *output_ids;
    int64_t n_output;
} tsr_sample_history;

/* Samples one token from logits[vocab] (vocab as given to tsr_sampler_init).  The row is
 * used as scratch and left modified.  res may be NULL when no logprobs are wanted. */
int32_t tsr_sample(tsr_sampler *s, float *logits, const tsr_sampling_params *p,
                   const tsr_sample_history *h, tsr_sample_result *res);

/* The stages, exposed for tests and for the GPU twin's oracle. */
/* Stage 0: logit_bias and the min_tokens mask (no-op when neither applies). */
void tsr_sampling_apply_bias(float *logits, int64_t vocab, const tsr_sampling_params *p, const tsr_sample_history *h);
/* Whether stage 0 changes anything for this sequence (the device sampler does not run it). */
bool tsr_sampling_needs_bias(const tsr_sampling_params *p, const tsr_sample_history *h);
void tsr_sampling_apply_penalties(tsr_sampler *s, float *logits, const tsr_sampling_params *p,
                                  const tsr_sample_history *h);
/* After penalties and temperature: marks which tokens top-k/top-p/min-p keep (keep[v] = 1)
 * and returns how many; probs[v] gets the softmax of the logits before truncation. */
int64_t tsr_sampling_truncate(tsr_sampler *s, const float *logits, const tsr_sampling_params *p,
                              uint8_t *keep, float *probs);

/* The log-softmax of logits[vocab] at `token` into res->logprob (res->token = token) and its top
 * top_n (by logit) into res->top: the logprobs of a given token (a prompt's). */
void tsr_sampling_logprobs(tsr_sampler *s, const float *logits, int32_t token, int32_t top_n, tsr_sample_result *res);

/* Philox-4x32-10: four 32-bit outputs for (key, counter). */
void tsr_philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]);
/* The uniform in [0, 1) (53 bits) that step `step` of a request with `seed` draws. */
double tsr_sampling_uniform(uint64_t seed, uint64_t step);

#endif
