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
    TSR_ROPE_YARN,        /* YaRN: per-frequency ramp between interpolation and extrapolation, mscale */
    TSR_ROPE_LONGROPE,    /* LongRoPE (Phi-3): per-frequency short/long factors, mscale */
} tsr_rope_type;

/* LongRoPE carries one factor per rotated frequency: at most this many (head_dim <= 1024). */
#define TSR_ROPE_MAX_FACTORS 512

#endif
