// Shared pieces of the CUDA backend's kernels: the backend context, conversions between the
// two half-precision storage types and f32 (every kernel computes in f32), warp/block
// reductions, and the launch helper that checks the last error after every launch.
#ifndef TSR_CUDA_COMMON_CUH
#define TSR_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "common/knobs.h"
#include "kernels/backend.h"
}
#include "kernels/cuda/cuda_check.h"

struct tsr_cuda_graph_slot {
    int64_t key;
    cudaGraphExec_t exec;
};

#define TSR_CUDA_GRAPH_SLOTS 16

struct tsr_cuda_ctx {
    int device;
    tsr_cuda_knobs knobs;         // TESSERA_NO_GEMV etc. (common/knobs.h), read once at init
    cudaDeviceProp prop;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_ws;              // cuBLAS workspace (set explicitly so graph capture is legal)
    size_t cublas_ws_bytes;
    // flash-decoding partials: [n_split][rows][head_dim] f32 and [n_split][rows][2] (max, sum)
    float *part;
    size_t part_bytes;
    float *f32_stage;             // download_f32: device conversion buffer
    size_t f32_stage_bytes;
    float *h_stage;               // pinned host staging for download_f32
    size_t h_stage_bytes;
    // RoPE: inv_freq of the last static parameter set (not dynamic NTK), on the device
    float *inv_freq;
    tsr_rope_params inv_params;
    bool inv_valid;
    // graphs
    bool capturing;
    tsr_cuda_graph_slot graphs[TSR_CUDA_GRAPH_SLOTS];
    int n_graphs;
    int64_t seen[2 * TSR_CUDA_GRAPH_SLOTS];   // keys run once eagerly (the run that sizes buffers)
    int n_seen;
    long n_graph_eager, n_graph_recorded, n_graph_replayed;  // graph_begin/end/replay outcomes
    struct tsr_cuda_prof *prof;                              // per-op timing (profile.h), or NULL
    struct tsr_cuda_sampler *sampler;                        // sampling.cu's scratch, or NULL
    // error paths (backend.h take_error): a host wait's deadline, and what failed since the
    // last take_error
    double wait_timeout_s;
    tsr_status err;
    char err_msg[256];
};

// errors.cu: waits for everything enqueued on the stream, polling with the ctx's deadline;
// false (with c->err set) when it passed or the stream failed.
bool tsr__cuda_wait(tsr_cuda_ctx *c, const char *what);
// Records an error for take_error (the first one sticks until taken).
void tsr__cuda_set_error(tsr_cuda_ctx *c, tsr_status st, const char *what);

// sampling.cu: the `sample` op and its scratch
bool tsr__cuda_sample(tsr_backend *be, const void *logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                      const tsr_sample_req *reqs, int32_t *ids_out, tsr_sample_out *outs);
void tsr__cuda_sampler_free(tsr_cuda_ctx *c);

static inline tsr_cuda_ctx *tsr__cuda(tsr_backend *be) { return (tsr_cuda_ctx *)be->ctx; }

// ---- conversions ----
__device__ __forceinline__ float tsr_tof(float x) { return x; }
__device__ __forceinline__ float tsr_tof(__half x) { return __half2float(x); }
__device__ __forceinline__ float tsr_tof(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T tsr_fromf(float x);
template <> __device__ __forceinline__ float tsr_fromf<float>(float x) { return x; }
template <> __device__ __forceinline__ __half tsr_fromf<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 tsr_fromf<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
// Rounds through T (what a half-precision framework's intermediate would hold).
template <typename T> __device__ __forceinline__ float tsr_round(float x) { return tsr_tof(tsr_fromf<T>(x)); }

// ---- reductions ----
__device__ __forceinline__ float tsr_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float tsr_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ __forceinline__ float tsr_block_sum(float v) {
    __shared__ float red[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = tsr_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.0f;
        s = tsr_warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// The sequence a flat token row belongs to (q_start sorted, n_seq + 1 entries).
__device__ __forceinline__ int tsr_seq_of(const int32_t *q_start, int n_seq, int t) {
    int lo = 0, hi = n_seq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (q_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static inline unsigned tsr_cdiv(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

// Dispatches on the backend's storage type: F(T) is called with T = __nv_bfloat16 or __half.
#define TSR_DISPATCH(dtype, ...)                                  \
    do {                                                          \
        if ((dtype) == TSR_BF16) {                                \
            typedef __nv_bfloat16 T;                              \
            __VA_ARGS__;                                          \
        } else if ((dtype) == TSR_F16) {                          \
            typedef __half T;                                     \
            __VA_ARGS__;                                          \
        } else {                                                  \
            typedef float T;                                      \
            __VA_ARGS__;                                          \
        }                                                         \
    } while (0)

// graphs.cu: the op table's graph entries, and dropping every recorded graph (a buffer they
// baked in was replaced).
bool tsr__cuda_graph_begin(tsr_backend *be, int64_t key);
void tsr__cuda_graph_end(tsr_backend *be, int64_t key);
bool tsr__cuda_graph_replay(tsr_backend *be, int64_t key);
void tsr__cuda_graphs_invalidate(tsr_cuda_ctx *c);
// profile.cu: frees the per-op timing state (the backend's free).
void tsr__cuda_prof_free(tsr_cuda_ctx *c);
// The attention kernels (attention.cu); _init once per backend.
void tsr__cuda_attention_init(tsr_cuda_ctx *c);
void tsr__cuda_attention(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *k_cache,
                         const void *v_cache, const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b,
                         float scale);
// Skinny GEMM for n_tok <= 8 (gemv.cu); false when it does not take the case (then cuBLAS).
bool tsr__cuda_gemv(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n, int64_t k);
// The same with the SiLU-and-multiply epilogue: out [n_tok][n_ff] = silu(x W_gate^T) * (x W_up^T),
// w = [gate rows | up rows] [2 n_ff][k]; false when it does not take the case.
bool tsr__cuda_gemv_silu(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n_ff,
                         int64_t k);
// Largest n_tok the GEMV takes (2, or TESSERA_GEMV_MAX_TOK up to 8: c->knobs.gemv_max_tok).
// Flash-decoding split count the decode path picks for this batch (exposed for NOTES/tests).
int tsr__cuda_decode_splits(tsr_backend *be, int64_t n_seq, int64_t n_kv_head, int64_t max_ctx);

#endif
