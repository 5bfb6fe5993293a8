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
    int64_t rope_original_max_pos;     /* llama3: original_max_position_embeddings */
    bool attn_bias;           /* q/k/v biases (Qwen2) */
    bool tie_embeddings;      /* LM head == token embedding */
    bool use_logn_attn;
    int32_t bos_id;           /* -1 if none */
    int32_t eos_id;           /* -1 if none */
    int32_t n_extra_eos;      /* further stop ids (e.g. Llama 3's <|eot_id|>) */
    int32_t extra_eos[8];
} tsr_model_config;

const char *tsr_arch_name(tsr_arch a);
const char *tsr_rope_type_name(tsr_rope_type t);
/* From an HF config.json path. */
tsr_status tsr_model_config_from_hf(const char *config_json_path, tsr_model_config *cfg);
/* From GGUF metadata (general.architecture = llama; keys llama.*). */
tsr_status tsr_model_config_from_gguf(const tsr_gguf *g, tsr_model_config *cfg);
/* Consistency checks shared by every source: positive sizes, heads divide, etc. */
tsr_status tsr_model_config_validate(const tsr_model_config *cfg, const char *source);

#endif
