/* The RoPE variants, shared vocabulary of two layers: a model's config names one
 * (common/model_config.h) and the kernels' rope ops compute it from tsr_rope_params
 * (kernels/backend.h), so the kernels need this enum and nothing else of the model config. */
#ifndef TSR_ROPE_TYPE_H
#define TSR_ROPE_TYPE_H

typedef enum tsr_rope_type {
    TSR_ROPE_DEFAULT = 0,
    TSR_ROPE_LINEAR,      /* positions divided by factor */
    TSR_ROPE_LLAMA3,      /* per-frequency smooth scaling (low/high_freq_factor) */
    TSR_ROPE_DYNAMIC,     /* dynamic NTK: base grows once seq len > max_position_embeddings */
} tsr_rope_type;

#endif
