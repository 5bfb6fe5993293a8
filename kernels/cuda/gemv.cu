// Skinny GEMM for decode (n_tok <= 8): out[t][n] = sum_k x[t][k] * W[n][k], W row-major [N][K]
// in bf16/f16, f32 accumulation, out rounded to T once (as cuBLAS with CUBLAS_COMPUTE_32F).
//
// Why not cuBLAS: at m = 1..8 the step is a pure stream of W (x is a few KB), and cuBLAS's
// kernels for these shapes reached well under the copy bandwidth on the H100 (batch-1 decode
// 11.5 ms per step vs 5 ms of weight traffic; see NOTES.md).  Here:
//  - one warp owns GEMV_R rows at a time and reads each of them exactly once, for all tokens,
//    with 16-byte loads (8 elements), GEMV_U of them per row per lane per iteration issued
//    before any is used, so every lane keeps GEMV_R x GEMV_U x 16 B in flight (enough
//    outstanding requests per SM to cover HBM latency);
//  - x is staged in shared memory in chunks of the K axis (the whole K at n_tok = 1 for every
//    Llama shape); each 16-byte x vector read from shared memory serves GEMV_R rows;
//  - the lanes' partial sums meet through warp shuffles; no atomics, no split-K, so the
//    result does not depend on timing.
// K not a multiple of 8 (or unaligned pointers) takes the same kernel with scalar loads.
//
// Used for n_tok <= 2 by default (TESSERA_GEMV_MAX_TOK=N, N <= 8, raises it: common/knobs.c): on the H100 the
// kernel beat cuBLAS at 1-2 tokens but lost to it at 4 (o: 1952 vs 2656 GB/s) and 8 (about
// half of cuBLAS), where x in shared memory and NT accumulators per row cost more than the
// one W stream saves.
//
// SILU variant (the gate_up projection of the MLP, w = [gate rows | up rows] of n_ff each):
// warp j reads gate row j and up row n_ff + j and writes act[t][j] = T(T(silu(T(g))) * T(u))
// directly -- the rounding of the unfused matmul (T(acc)) + silu_mul, so the same numbers --
// which saves the gu round trip and the silu_mul launch.
#include <stdlib.h>

#include "kernels/cuda/common.cuh"

#define GEMV_WARPS 4                       // warps per block (128 threads)
#define GEMV_R 2                           // rows per warp
#define GEMV_U 4                           // 16-byte W vectors per row per lane per iteration
#define GEMV_SMEM_BYTES (32 * 1024)        // x chunk budget per block
#define GEMV_MAX_TOK 8

// 8 x 16-bit -> 8 f32
template <typename T> __device__ __forceinline__ void tsr_unpack8(const uint4 &v, float *f);
template <> __device__ __forceinline__ void tsr_unpack8<__nv_bfloat16>(const uint4 &v, float *f) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 p = __bfloat1622float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}
template <> __device__ __forceinline__ void tsr_unpack8<__half>(const uint4 &v, float *f) {
    const __half2 *h = (const __half2 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 p = __half22float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

// Streaming load of W: read once, do not keep it in L1.
__device__ __forceinline__ uint4 tsr_ld_stream(const uint4 *p) { return __ldcs(p); }

// n: output columns (SILU: n_ff, and w has 2 n_ff rows).
template <typename T, int NT, bool VEC, bool SILU>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    tsr_k_gemv(T *__restrict__ out, const T *__restrict__ x, const T *__restrict__ w, int n, int k, int kc) {
    static_assert(!SILU || GEMV_R == 2, "the SILU variant pairs one gate row with one up row");
    extern __shared__ __align__(16) unsigned char gemv_smem[];
    T *sx = (T *)gemv_smem;  // [NT][kc]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wi = blockIdx.x * GEMV_WARPS + warp;
    const int row0 = SILU ? wi : wi * GEMV_R;  // first output column of this warp

    float acc[GEMV_R][NT];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;

    // rows past n read row n - 1 (valid memory) and are not written
    const T *wr[GEMV_R];
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
        wr[r] = w + (SILU ? (int64_t)min(row0, n - 1) + (int64_t)r * n : (int64_t)min(row0 + r, n - 1)) * k;

    for (int c0 = 0; c0 < k; c0 += kc) {
        const int cl = min(kc, k - c0);
        __syncthreads();  // everyone is done with the previous chunk
        if constexpr (VEC) {
            const int nv = cl / 8;
            for (int i = threadIdx.x; i < NT * nv; i += blockDim.x) {
                int t = i / nv, v = i % nv;
                ((uint4 *)(sx + t * kc))[v] = ((const uint4 *)(x + (int64_t)t * k + c0))[v];
            }
        } else {
            for (int i = threadIdx.x; i < NT * cl; i += blockDim.x) {
                int t = i / cl, j = i % cl;
                sx[t * kc + j] = x[(int64_t)t * k + c0 + j];
            }
        }
        __syncthreads();
        if (row0 >= n) continue;  // (after the barriers: the block shares them)

        if constexpr (VEC) {
            const int nv = cl / 8;
            for (int v0 = 0; v0 < nv; v0 += 32 * GEMV_U) {
                uint4 wv[GEMV_R][GEMV_U];
#pragma unroll
                for (int u = 0; u < GEMV_U; u++) {
                    int v = v0 + u * 32 + lane;
#pragma unroll
                    for (int r = 0; r < GEMV_R; r++)
                        wv[r][u] = v < nv ? tsr_ld_stream((const uint4 *)(wr[r] + c0) + v) : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < GEMV_U; u++) {
                    int v = v0 + u * 32 + lane;
                    if (v >= nv) break;
                    float wf[GEMV_R][8];
#pragma unroll
                    for (int r = 0; r < GEMV_R; r++) tsr_unpack8<T>(wv[r][u], wf[r]);
#pragma unroll
                    for (int t = 0; t < NT; t++) {
                        float xf[8];
                        tsr_unpack8<T>(((const uint4 *)(sx + t * kc))[v], xf);
#pragma unroll
                        for (int r = 0; r < GEMV_R; r++)
#pragma unroll
                            for (int e = 0; e < 8; e++) acc[r][t] = fmaf(wf[r][e], xf[e], acc[r][t]);
                    }
                }
            }
        } else {
            for (int j = lane; j < cl; j += 32) {
                float wf[GEMV_R];
#pragma unroll
                for (int r = 0; r < GEMV_R; r++) wf[r] = tsr_tof(wr[r][c0 + j]);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    float xf = tsr_tof(sx[t * kc + j]);
#pragma unroll
                    for (int r = 0; r < GEMV_R; r++) acc[r][t] = fmaf(wf[r], xf, acc[r][t]);
                }
            }
        }
    }
    if (row0 >= n) return;
#pragma unroll
    for (int r = 0; r < GEMV_R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = tsr_warp_sum(acc[r][t]);
    if constexpr (SILU) {
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (lane == t) {
                float g = tsr_round<T>(acc[0][t]), u = tsr_round<T>(acc[1][t]);
                float sg = tsr_round<T>(g / (1.0f + expf(-g)));
                out[(int64_t)t * n + row0] = tsr_fromf<T>(sg * u);
            }
    } else {
        // lane r * NT + t writes (row0 + r, t): the stores spread over the warp
#pragma unroll
        for (int r = 0; r < GEMV_R; r++)
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (lane == (r * NT + t) % 32 && row0 + r < n) out[(int64_t)t * n + row0 + r] = tsr_fromf<T>(acc[r][t]);
    }
}

template <typename T, int NT, bool VEC, bool SILU>
static void tsr__gemv_launch(cudaStream_t st, T *out, const T *x, const T *w, int n, int k) {
    int kc = GEMV_SMEM_BYTES / (NT * (int)sizeof(T));
    kc = kc / 256 * 256;  // whole 32-lane x 8-element sweeps per chunk
    if (kc >= k) kc = k;
    size_t sm = (size_t)NT * (size_t)kc * sizeof(T);
    unsigned blocks = tsr_cdiv(n, GEMV_WARPS * (SILU ? 1 : GEMV_R));
    tsr_k_gemv<T, NT, VEC, SILU><<<blocks, GEMV_WARPS * 32, sm, st>>>(out, x, w, n, k, kc);
}

template <typename T, bool VEC, bool SILU>
static void tsr__gemv_nt(cudaStream_t st, T *out, const T *x, const T *w, int nt, int n, int k) {
    switch (nt) {
    case 1: tsr__gemv_launch<T, 1, VEC, SILU>(st, out, x, w, n, k); break;
    case 2: tsr__gemv_launch<T, 2, VEC, SILU>(st, out, x, w, n, k); break;
    case 3: tsr__gemv_launch<T, 3, VEC, SILU>(st, out, x, w, n, k); break;
    case 4: tsr__gemv_launch<T, 4, VEC, SILU>(st, out, x, w, n, k); break;
    case 5: tsr__gemv_launch<T, 5, VEC, SILU>(st, out, x, w, n, k); break;
    case 6: tsr__gemv_launch<T, 6, VEC, SILU>(st, out, x, w, n, k); break;
    case 7: tsr__gemv_launch<T, 7, VEC, SILU>(st, out, x, w, n, k); break;
    default: tsr__gemv_launch<T, 8, VEC, SILU>(st, out, x, w, n, k); break;
    }
}

template <bool SILU>
static bool tsr__gemv_any(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n, int64_t k) {
    if (be->dtype != TSR_BF16 && be->dtype != TSR_F16) return false;
    tsr_cuda_ctx *c = tsr__cuda(be);
    if (c->knobs.no_gemv || n_tok < 1 || n_tok > c->knobs.gemv_max_tok || n_tok > GEMV_MAX_TOK || n > INT32_MAX / 2 ||
        k > INT32_MAX)
        return false;
    const bool vec = k % 8 == 0 && (((uintptr_t)x | (uintptr_t)w) % 16) == 0;
    const int nt = (int)n_tok, ni = (int)n, ki = (int)k;
    if (be->dtype == TSR_BF16) {
        typedef __nv_bfloat16 T;
        if (vec) tsr__gemv_nt<T, true, SILU>(c->stream, (T *)out, (const T *)x, (const T *)w, nt, ni, ki);
        else tsr__gemv_nt<T, false, SILU>(c->stream, (T *)out, (const T *)x, (const T *)w, nt, ni, ki);
    } else {
        typedef __half T;
        if (vec) tsr__gemv_nt<T, true, SILU>(c->stream, (T *)out, (const T *)x, (const T *)w, nt, ni, ki);
        else tsr__gemv_nt<T, false, SILU>(c->stream, (T *)out, (const T *)x, (const T *)w, nt, ni, ki);
    }
    TSR_LAUNCH_CHECK();
    return true;
}

bool tsr__cuda_gemv(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n, int64_t k) {
    return tsr__gemv_any<false>(be, out, x, w, n_tok, n, k);
}

bool tsr__cuda_gemv_silu(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n_ff,
                         int64_t k) {
    return tsr__gemv_any<true>(be, out, x, w, n_tok, n_ff, k);
}
