/* The immutable model config (llama2.c's Config): filled from HF config.json, from GGUF
 * metadata (`llama` architecture keys), or from a workspace's config.ini.  Runtime knobs
 * (session length, KV cache) live in tsr_engine_config, not here. */
#ifndef TSR_MODEL_CONFIG_H
#define TSR_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/rope_type.h"
#include "common/status.h"

typedef enum tsr_arch {
    TSR_ARCH_LLAMA = 0,   /* LlamaForCausalLM (Llama 2/3, SmolLM2) */
    TSR_ARCH_MISTRAL,     /* MistralForCausalLM */
    TSR_ARCH_QWEN2,       /* Qwen2ForCausalLM: biases on q/k/v */
    TSR_ARCH_INTERNLM2,   /* InternLM2ForCausalLM: packed wqkv, different weight names */
} tsr_arch;

typedef struct tsr_model_config {
    char model_name[128];
    tsr_arch arch;
    int64_t vocab_size;
    int64_t d_model;          /* hidden_size */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_kv_head;
    int64_t head_dim;         /* size_per_head */
    int64_t d_ff;             /* intermediate_size (inter_size) */
    float norm_eps;
    float rope_theta;
    int64_t max_position_embeddings;
    tsr_rope_type rope_type;
    float rope_factor;                 /* linear / llama3 / dynamic factor */
    float rope_low_freq_factor;        /* llama3 */
    float rope_high_freq_factor;       /* llama3 */
    int64_t rope_original_max_pos;     /* llama3, yarn, longrope: original_max_position_embeddings */
    float rope_attn_factor;            /* yarn, longrope: HF's attention_factor (cos/sin multiplier), resolved */
    float rope_beta_fast, rope_beta_slow; /* yarn (32, 1) */
    bool rope_yarn_truncate;           /* yarn: floor/ceil the correction range (HF default true) */
    int32_t rope_n_factors;            /* longrope: entries of short/long_factor (head_dim / 2) */
    float rope_short_factor[TSR_ROPE_MAX_FACTORS]; /* longrope: sequences <= original_max_pos */
    float rope_long_factor[TSR_ROPE_MAX_FACTORS];  /* longrope: sequences longer than that */
    /* Sliding-window attention: layers l >= window_layer0 see only the last sliding_window keys
     * (HF: key k visible from query q iff q - window < k <= q).  Mistral: every layer; Qwen2 with
     * use_sliding_window: layers from max_window_layers on.  0: full attention everywhere. */
    int64_t sliding_window;
    int64_t window_layer0;
    bool attn_bias;           /* q/k/v biases (Qwen2) */
    bool tie_embeddings;      /* LM head == token embedding */
    bool use_logn_attn;
    int32_t bos_id;           /* -1 if none */
    int32_t eos_id;           /* -1 if none */
    int32_t n_extra_eos;      /* further stop ids (e.g. Llama 3's <|eot_id|>) */
    int32_t extra_eos[8];
} tsr_model_config;

/* The attention window of layer l: sliding_window, or 0 (full attention). */
static inline int64_t tsr_model_layer_window(const tsr_model_config *cfg, int64_t l) {
    return cfg->sliding_window > 0 && l >= cfg->window_layer0 ? cfg->sliding_window : 0;
}
/* Whether any layer's window is shorter than len tokens (so attention differs from full). */
static inline bool tsr_model_window_limits(const tsr_model_config *cfg, int64_t len) {
    return cfg->sliding_window > 0 && cfg->window_layer0 < cfg->n_layer && cfg->sliding_window < len;
}

const char *tsr_arch_name(tsr_arch a);
const char *tsr_rope_type_name(tsr_rope_type t);
/* From an HF config.json path. */
tsr_status tsr_model_config_from_hf(const char *config_json_path, tsr_model_config *cfg);
/* From GGUF metadata (general.architecture = llama; keys llama.*). */
tsr_status tsr_model_config_from_gguf(const tsr_gguf *g, tsr_model_config *cfg);
/* Consistency checks shared by every source: positive sizes, heads divide, etc. */
tsr_status tsr_model_config_validate(const tsr_model_config *cfg, const char *source);

#endif
