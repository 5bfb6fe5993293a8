// The CUDA backend (kernels/backend.h's op table on one NVIDIA GPU): activations, weights and
// the KV cache in bf16 or f16 (f32 also works, for debugging), every kernel accumulating in f32,
// GEMMs through cuBLAS, attention in attention.cu, sampling in sampling.cu, CUDA graphs in
// graphs.cu, per-op timing in profile.cu, the error record and stream waits in errors.cu.
// Everything is enqueued on one stream; upload/download/synchronize wait.  Each kernel's CPU
// twin in kernels/cpu/cpu_backend.c is its oracle (tests/kernel/test_cuda_ops.c).  Where a
// half-precision framework rounds an intermediate (HF transformers: the normed activation
// before the weight multiply, SiLU before the up multiply, cos/sin before RoPE), these kernels
// round at the same place, so golden comparisons see the same function.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

// ------------------------------------------------------------------------------------------
// memory

static void *tsr__cu_alloc(tsr_backend *be, size_t nbytes) {
    (void)be;
    void *p = NULL;
    if (cudaMalloc(&p, nbytes ? nbytes : 256) != cudaSuccess) {
        cudaGetLastError();  // out of memory is not sticky: clear it, report NULL
        return NULL;
    }
    return p;
}

static tsr_status tsr__cu_take_error(tsr_backend *be) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    tsr_status st = c->err;
    if (st != TSR_OK) {
        tsr_errorf(st, "%s", c->err_msg);
        if (st != TSR_ERR_COMM) c->err = TSR_OK;   // a stuck stream stays reported
    }
    return st;
}

extern "C" void tsr_backend_cuda_set_wait_timeout(tsr_backend *be, double timeout_s) {
    tsr__cuda(be)->wait_timeout_s = timeout_s;
}

static void tsr__cu_dfree(tsr_backend *be, void *p) {
    (void)be;
    if (p) CUDA_CHECK(cudaFree(p));
}

static void tsr__cu_upload(tsr_backend *be, void *dst, const void *src, size_t n) {
    if (!n) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream));
    // the caller may reuse its host buffer at once
    tsr__cuda_wait(c, "an upload");
}

static void tsr__cu_download(tsr_backend *be, void *dst, const void *src, size_t n) {
    if (!n) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream));
    tsr__cuda_wait(c, "a download");
}

static void tsr__cu_memset0(tsr_backend *be, void *dst, size_t n) {
    if (n) CUDA_CHECK(cudaMemsetAsync(dst, 0, n, tsr__cuda(be)->stream));
}

static void tsr__cu_sync(tsr_backend *be) { tsr__cuda_wait(tsr__cuda(be), "the step"); }

// ------------------------------------------------------------------------------------------
// get_rows

__global__ void tsr_k_get_rows_vec(uint4 *out, const uint4 *table, const int32_t *rows, int64_t nvec) {
    int64_t i = blockIdx.x;
    uint4 *dst = out + i * nvec;
    if (rows[i] < 0) {  // vocab-parallel embedding: another rank owns this token
        for (int64_t j = threadIdx.x; j < nvec; j += blockDim.x) dst[j] = make_uint4(0, 0, 0, 0);
        return;
    }
    const uint4 *src = table + (int64_t)rows[i] * nvec;
    for (int64_t j = threadIdx.x; j < nvec; j += blockDim.x) dst[j] = src[j];
}

template <typename T>
__global__ void tsr_k_get_rows(T *out, const T *table, const int32_t *rows, int64_t d) {
    int64_t i = blockIdx.x;
    if (rows[i] < 0) {
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) out[i * d + j] = T(0.0f);
        return;
    }
    const T *src = table + (int64_t)rows[i] * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) out[i * d + j] = src[j];
}

static void tsr__cu_get_rows(tsr_backend *be, void *out, const void *table, const int32_t *rows, int64_t n,
                             int64_t d) {
    if (n <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    size_t es = tsr_dtype_size(be->dtype), row = (size_t)d * es;
    if (row % 16 == 0 && ((uintptr_t)out | (uintptr_t)table) % 16 == 0) {
        int64_t nvec = (int64_t)(row / 16);
        int th = nvec >= 256 ? 256 : (int)((nvec + 31) / 32 * 32);
        tsr_k_get_rows_vec<<<(unsigned)n, th, 0, c->stream>>>((uint4 *)out, (const uint4 *)table, rows, nvec);
    } else {
        TSR_DISPATCH(be->dtype, tsr_k_get_rows<T><<<(unsigned)n, 128, 0, c->stream>>>((T *)out, (const T *)table, rows, d));
    }
    TSR_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------------------
// rmsnorm, add + rmsnorm

// One block per row.  With residual: r = T(r + x) is stored and normed; out may alias x.
// HF order: y = T(x * rsqrt(mean(x^2) + eps)), out = T(w * y).
template <typename T>
__global__ void tsr_k_rmsnorm(T *out, T *residual, const T *x, const T *w, int64_t d, float eps) {
    int64_t row = blockIdx.x;
    const T *xr = x + row * d;
    T *rr = residual ? residual + row * d : NULL;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = tsr_tof(xr[i]);
        if (rr) {
            T s = tsr_fromf<T>(tsr_tof(rr[i]) + v);
            rr[i] = s;
            v = tsr_tof(s);
        }
        ss += v * v;
    }
    ss = tsr_block_sum(ss);
    float inv = rsqrtf(ss / (float)d + eps);
    const T *src = rr ? rr : xr;
    T *o = out + row * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float y = tsr_round<T>(tsr_tof(src[i]) * inv);
        o[i] = tsr_fromf<T>(tsr_tof(w[i]) * y);
    }
}

// The same for 16-bit T with d % 8 == 0 and 16-byte rows: each thread holds its VPT 8-element
// vectors in registers between the sum and the scaling, so a row is read once (a decode step's
// single 4096-wide row: 512 threads, one 16-byte load each, instead of two scalar passes).
template <typename T, int VPT>
__global__ void __launch_bounds__(1024)
    tsr_k_rmsnorm_vec(T *out, T *residual, const T *x, const T *w, int64_t d, float eps) {
    const int64_t row = blockIdx.x;
    const int nv = (int)(d / 8);
    const uint4 *xr = (const uint4 *)(x + row * d);
    uint4 *rr = residual ? (uint4 *)(residual + row * d) : NULL;
    float v[VPT][8];
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        const int i = threadIdx.x + u * blockDim.x;
        if (i >= nv) continue;
        uint4 a = xr[i];
        T *ae = reinterpret_cast<T *>(&a);
        if (rr) {
            uint4 r = rr[i];
            const T *re = reinterpret_cast<const T *>(&r);
#pragma unroll
            for (int e = 0; e < 8; e++) ae[e] = tsr_fromf<T>(tsr_tof(re[e]) + tsr_tof(ae[e]));
            rr[i] = a;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            v[u][e] = tsr_tof(ae[e]);
            ss += v[u][e] * v[u][e];
        }
    }
    ss = tsr_block_sum(ss);  // (its barriers also order every read of x before out is written)
    const float inv = rsqrtf(ss / (float)d + eps);
    uint4 *o = (uint4 *)(out + row * d);
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        const int i = threadIdx.x + u * blockDim.x;
        if (i >= nv) continue;
        uint4 wv = ((const uint4 *)w)[i], res;
        const T *we = reinterpret_cast<const T *>(&wv);
        T *oe = reinterpret_cast<T *>(&res);
#pragma unroll
        for (int e = 0; e < 8; e++) oe[e] = tsr_fromf<T>(tsr_tof(we[e]) * tsr_round<T>(v[u][e] * inv));
        o[i] = res;
    }
}

// Launches the vector kernel when it applies; false: the caller uses the scalar one.
static bool tsr__rmsnorm_vec(tsr_backend *be, void *out, void *residual, const void *x, const void *w, int64_t n_tok,
                             int64_t d, float eps) {
    if (be->dtype == TSR_F32 || d % 8 || d / 8 > 4 * 1024 || tsr__cuda(be)->knobs.no_vec_norm) return false;
    if (((uintptr_t)out | (uintptr_t)residual | (uintptr_t)x | (uintptr_t)w) % 16) return false;
    const int nv = (int)(d / 8);
    const int th = nv >= 1024 ? 1024 : (nv + 31) / 32 * 32;
    const int vpt = (nv + th - 1) / th;
    cudaStream_t st = tsr__cuda(be)->stream;
#define TSR__NORM_VEC(T, V)                                                                                   \
    tsr_k_rmsnorm_vec<T, V><<<(unsigned)n_tok, th, 0, st>>>((T *)out, (T *)residual, (const T *)x, (const T *)w, \
                                                            d, eps)
    if (be->dtype == TSR_BF16) {
        if (vpt == 1) TSR__NORM_VEC(__nv_bfloat16, 1);
        else if (vpt == 2) TSR__NORM_VEC(__nv_bfloat16, 2);
        else TSR__NORM_VEC(__nv_bfloat16, 4);
    } else {
        if (vpt == 1) TSR__NORM_VEC(__half, 1);
        else if (vpt == 2) TSR__NORM_VEC(__half, 2);
        else TSR__NORM_VEC(__half, 4);
    }
#undef TSR__NORM_VEC
    TSR_LAUNCH_CHECK();
    return true;
}

static int tsr__norm_threads(int64_t d) {
    int64_t t = (d + 7) / 8;  // ~8 elements per thread
    t = (t + 31) / 32 * 32;
    return t < 64 ? 64 : t > 1024 ? 1024 : (int)t;
}

static void tsr__cu_rmsnorm(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t d,
                            float eps) {
    if (n_tok <= 0) return;
    if (tsr__rmsnorm_vec(be, out, NULL, x, w, n_tok, d, eps)) return;
    TSR_DISPATCH(be->dtype, tsr_k_rmsnorm<T><<<(unsigned)n_tok, tsr__norm_threads(d), 0, tsr__cuda(be)->stream>>>(
                                (T *)out, (T *)NULL, (const T *)x, (const T *)w, d, eps));
    TSR_LAUNCH_CHECK();
}

static void tsr__cu_add_rmsnorm(tsr_backend *be, void *residual, const void *x, void *out, const void *w,
                                int64_t n_tok, int64_t d, float eps) {
    if (n_tok <= 0) return;
    if (tsr__rmsnorm_vec(be, out, residual, x, w, n_tok, d, eps)) return;
    TSR_DISPATCH(be->dtype, tsr_k_rmsnorm<T><<<(unsigned)n_tok, tsr__norm_threads(d), 0, tsr__cuda(be)->stream>>>(
                                (T *)out, (T *)residual, (const T *)x, (const T *)w, d, eps));
    TSR_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------------------
// matmul: out [n_tok][n] = x [n_tok][k] @ w[n][k]^T.  Column-major, that is
// out^T (n x n_tok) = W (op T of the k x n column-major view) * x^T (k x n_tok).

static cudaDataType_t tsr__cuda_type(tsr_dtype t) {
    return t == TSR_BF16 ? CUDA_R_16BF : t == TSR_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static void tsr__cu_matmul(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n,
                           int64_t k) {
    TSR_ASSERT(n_tok >= 0 && n > 0 && k > 0);
    if (n_tok == 0) return;
    // decode-sized batches: the weight stream at bandwidth (gemv.cu); larger ones: cuBLAS
    if (tsr__cuda_gemv(be, out, x, w, n_tok, n, k)) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    cudaDataType_t dt = tsr__cuda_type(be->dtype);
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)n_tok, (int)k, &alpha, w, dt, (int)k,
                              x, dt, (int)k, &beta, out, dt, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ------------------------------------------------------------------------------------------
// elementwise

template <typename T> __global__ void tsr_k_add_bias(T *x, const T *b, int64_t n_tok, int64_t n, int64_t ld) {
    int64_t total = n_tok * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / n, j = i % n;
        x[t * ld + j] = tsr_fromf<T>(tsr_tof(x[t * ld + j]) + tsr_tof(b[j]));
    }
}

template <typename T> __global__ void tsr_k_silu_mul(T *out, const T *gu, int64_t n_tok, int64_t n_ff) {
    int64_t total = n_tok * n_ff;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / n_ff, j = i % n_ff;
        float g = tsr_tof(gu[t * 2 * n_ff + j]), u = tsr_tof(gu[t * 2 * n_ff + n_ff + j]);
        float s = tsr_round<T>(g / (1.0f + expf(-g)));
        out[i] = tsr_fromf<T>(s * u);
    }
}

static unsigned tsr__ew_blocks(tsr_cuda_ctx *c, int64_t n) {
    int64_t b = (n + 255) / 256, cap = (int64_t)c->prop.multiProcessorCount * 16;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

static void tsr__cu_add_bias(tsr_backend *be, void *x, const void *b, int64_t n_tok, int64_t n, int64_t ld) {
    if (n_tok <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_DISPATCH(be->dtype, tsr_k_add_bias<T><<<tsr__ew_blocks(c, n_tok * n), 256, 0, c->stream>>>((T *)x, (const T *)b,
                                                                                                  n_tok, n, ld));
    TSR_LAUNCH_CHECK();
}

static void tsr__cu_silu_mul(tsr_backend *be, void *out, const void *gate_up, int64_t n_tok, int64_t n_ff) {
    if (n_tok <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_DISPATCH(be->dtype, tsr_k_silu_mul<T><<<tsr__ew_blocks(c, n_tok * n_ff), 256, 0, c->stream>>>(
                                (T *)out, (const T *)gate_up, n_tok, n_ff));
    TSR_LAUNCH_CHECK();
}

// gate_up projection + SiLU-and-multiply: the GEMV's fused epilogue for decode-sized batches,
// else the GEMM into gu and silu_mul.
static void tsr__cu_matmul_silu(tsr_backend *be, void *out, void *gu, const void *x, const void *w, int64_t n_tok,
                                int64_t n_ff, int64_t k) {
    if (n_tok <= 0) return;
    if (!tsr__cuda(be)->knobs.no_fuse && tsr__cuda_gemv_silu(be, out, x, w, n_tok, n_ff, k)) return;
    tsr__cu_matmul(be, gu, x, w, n_tok, 2 * n_ff, k);
    tsr__cu_silu_mul(be, out, gu, n_tok, n_ff);
}

// ------------------------------------------------------------------------------------------
// RoPE (rotate_half pairing, backend.h's variants)

// inv_freq on the host in f32, the formula of backend.h (and HF), for the static variants.
static void tsr__inv_freq_host(const tsr_rope_params *p, float *inv) {
    int64_t dim = p->rot_dim;
    for (int64_t i = 0; i < dim / 2; i++) inv[i] = 1.0f / powf(p->theta, (float)(2 * i) / (float)dim);
    if (p->type == TSR_ROPE_LINEAR && p->factor > 0) {
        for (int64_t i = 0; i < dim / 2; i++) inv[i] /= p->factor;
    } else if (p->type == TSR_ROPE_LLAMA3) {
        const float pi = 3.14159265358979323846f;
        float old_ctx = (float)p->original_max_pos;
        float low_wl = old_ctx / p->low_freq_factor, high_wl = old_ctx / p->high_freq_factor;
        for (int64_t i = 0; i < dim / 2; i++) {
            float wl = 2.0f * pi / inv[i];
            if (wl < high_wl) continue;
            if (wl > low_wl) {
                inv[i] /= p->factor;
                continue;
            }
            float smooth = (old_ctx / wl - p->low_freq_factor) / (p->high_freq_factor - p->low_freq_factor);
            inv[i] = (1.0f - smooth) * inv[i] / p->factor + smooth * inv[i];
        }
    }
}

// One block per token; threads over (head, i < rot_dim/2) pairs of q then k heads.
// inv_static NULL: dynamic NTK, base from the token's sequence length.
// The KV cache side of the fused rope + kv_write (kc NULL: plain RoPE): after the rotation the
// block stores its token's (rotated) k and v into the paged cache, so the decode step runs one
// small kernel here instead of two.
template <typename T> struct tsr_kv_dst {
    T *kc, *vc;
    const T *v;
    int64_t block_len, max_blocks;
    const int32_t *block_tables;
};

template <typename T>
__global__ void tsr_k_rope(T *q, T *k, int64_t ld, int n_head, int n_kv_head, int head_dim, int rot_dim,
                           const int32_t *positions, const int32_t *q_start, const int32_t *ctx_len, int n_seq,
                           const float *inv_static, float theta, float factor, int64_t max_pos, int logn,
                           tsr_kv_dst<T> kvd) {
    int t = blockIdx.x;
    int half = rot_dim / 2;
    int pos = positions[t];
    float dyn_theta = theta;
    if (!inv_static) {
        int s = tsr_seq_of(q_start, n_seq, t);
        int64_t L = ctx_len[s];
        if (max_pos > 0 && L > max_pos) {
            float ratio = factor * (float)L / (float)max_pos - (factor - 1.0f);
            dyn_theta = theta * powf(ratio, (float)rot_dim / (float)(rot_dim - 2));
        }
    }
    float qscale = 1.0f;
    if (logn && max_pos > 1 && pos + 1 > max_pos) qscale = (float)(log((double)(pos + 1)) / log((double)max_pos));
    int n_pairs = (n_head + n_kv_head) * half;
    for (int it = threadIdx.x; it < n_pairs; it += blockDim.x) {
        int h = it / half, i = it % half;
        float inv = inv_static ? inv_static[i] : 1.0f / powf(dyn_theta, (float)(2 * i) / (float)rot_dim);
        float sn, cs;
        sincosf((float)pos * inv, &sn, &cs);
        cs = tsr_round<T>(cs);
        sn = tsr_round<T>(sn);
        T *x = h < n_head ? q + (int64_t)t * ld + (int64_t)h * head_dim : k + (int64_t)t * ld + (int64_t)(h - n_head) * head_dim;
        float a = tsr_tof(x[i]), b = tsr_tof(x[i + half]);
        float ra = a * cs - b * sn, rb = b * cs + a * sn;
        if (h < n_head && qscale != 1.0f) {
            ra *= qscale;
            rb *= qscale;
        }
        x[i] = tsr_fromf<T>(ra);
        x[i + half] = tsr_fromf<T>(rb);
        // logn also scales the unrotated tail of q heads (rot_dim < head_dim)
        if (h < n_head && qscale != 1.0f && i == 0)
            for (int j = rot_dim; j < head_dim; j++) x[j] = tsr_fromf<T>(tsr_tof(x[j]) * qscale);
    }
    if (!kvd.kc) return;
    // the rotated k of this token was written by this block: visible to it after the barrier
    __syncthreads();
    int s = tsr_seq_of(q_start, n_seq, t);
    int64_t blk = kvd.block_tables[(int64_t)s * kvd.max_blocks + pos / kvd.block_len], slot = pos % kvd.block_len;
    int n = n_kv_head * head_dim;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        int g = i / head_dim, j = i % head_dim;
        int64_t off = ((blk * n_kv_head + g) * kvd.block_len + slot) * head_dim + j;
        kvd.kc[off] = k[(int64_t)t * ld + i];
        kvd.vc[off] = kvd.v[(int64_t)t * ld + i];
    }
}

static void tsr__rope_launch(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head, int64_t n_kv_head,
                             int64_t head_dim, const tsr_attn_batch *b, const tsr_rope_params *p, void *k_cache,
                             void *v_cache, const void *v, const tsr_kv_layout *kv) {
    TSR_ASSERT(p->rot_dim > 0 && p->rot_dim <= head_dim && p->rot_dim % 2 == 0 && p->rot_dim <= 1024);
    if (b->n_tok <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    const float *inv = NULL;
    if (p->type != TSR_ROPE_DYNAMIC) {
        const tsr_rope_params *o = &c->inv_params;  // field by field: padding bytes may differ
        bool same = c->inv_valid && o->type == p->type && o->theta == p->theta && o->factor == p->factor &&
                    o->low_freq_factor == p->low_freq_factor && o->high_freq_factor == p->high_freq_factor &&
                    o->original_max_pos == p->original_max_pos && o->rot_dim == p->rot_dim;
        if (!same) {
            // a new parameter set (once per model): not legal while recording a graph
            TSR_ASSERT(!c->capturing);
            float h[512];
            tsr__inv_freq_host(p, h);
            CUDA_CHECK(cudaMemcpyAsync(c->inv_freq, h, sizeof(float) * (size_t)(p->rot_dim / 2), cudaMemcpyHostToDevice,
                                       c->stream));
            tsr__cuda_wait(c, "a RoPE table upload");
            c->inv_params = *p;
            c->inv_valid = true;
            tsr__cuda_graphs_invalidate(c);  // recordings read the old table
        }
        inv = c->inv_freq;
    }
    int64_t pairs = (n_head + n_kv_head) * (p->rot_dim / 2);
    // one block per token: a decode step's few tokens get whole 1024-thread blocks (Llama-3-8B:
    // 2560 pairs, 2.5 per thread instead of 10), large batches 256-thread ones
    int64_t cap = b->n_tok < 2 * c->prop.multiProcessorCount ? 1024 : 256;
    int th = pairs >= cap ? (int)cap : (int)((pairs + 31) / 32 * 32);
    TSR_DISPATCH(be->dtype, {
        tsr_kv_dst<T> kvd = {(T *)k_cache, (T *)v_cache, (const T *)v, kv ? kv->block_len : 0, b->max_blocks,
                             b->block_tables};
        tsr_k_rope<T><<<(unsigned)b->n_tok, th, 0, c->stream>>>(
            (T *)q, (T *)k, ld, (int)n_head, (int)n_kv_head, (int)head_dim, (int)p->rot_dim, b->positions, b->q_start,
            b->ctx_len, (int)b->n_seq, inv, p->theta, p->factor, p->max_pos, p->use_logn_attn ? 1 : 0, kvd);
    });
    TSR_LAUNCH_CHECK();
}

static void tsr__cu_rope(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head, int64_t n_kv_head,
                         int64_t head_dim, const tsr_attn_batch *b, const tsr_rope_params *p) {
    tsr__rope_launch(be, q, k, ld, n_head, n_kv_head, head_dim, b, p, NULL, NULL, NULL, NULL);
}

static void tsr__cu_rope_kv_write(tsr_backend *be, void *q, void *k, const void *v, int64_t ld, int64_t n_head,
                                  const tsr_attn_batch *b, const tsr_rope_params *p, void *k_cache, void *v_cache,
                                  const tsr_kv_layout *kv) {
    TSR_ASSERT(k_cache && v_cache);
    tsr__rope_launch(be, q, k, ld, n_head, kv->n_kv_head, kv->head_dim, b, p, k_cache, v_cache, v, kv);
}

// ------------------------------------------------------------------------------------------
// kv_write

template <typename T>
__global__ void tsr_k_kv_write(T *kc, T *vc, int64_t block_len, int n_kv_head, int head_dim, const T *k, const T *v,
                               int64_t ld, const int32_t *positions, const int32_t *q_start, int n_seq,
                               const int32_t *block_tables, int64_t max_blocks) {
    int t = blockIdx.x;
    int s = tsr_seq_of(q_start, n_seq, t);
    int64_t pos = positions[t];
    int64_t blk = block_tables[(int64_t)s * max_blocks + pos / block_len], slot = pos % block_len;
    int n = n_kv_head * head_dim;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        int g = i / head_dim, j = i % head_dim;
        int64_t off = ((blk * n_kv_head + g) * block_len + slot) * head_dim + j;
        kc[off] = k[(int64_t)t * ld + i];
        vc[off] = v[(int64_t)t * ld + i];
    }
}

static void tsr__cu_kv_write(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv, const void *k,
                             const void *v, int64_t ld, const tsr_attn_batch *b) {
    if (b->n_tok <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    int64_t n = kv->n_kv_head * kv->head_dim;
    int th = n >= 256 ? 256 : (int)((n + 31) / 32 * 32);
    TSR_DISPATCH(be->dtype, tsr_k_kv_write<T><<<(unsigned)b->n_tok, th, 0, c->stream>>>(
                                (T *)k_cache, (T *)v_cache, kv->block_len, (int)kv->n_kv_head, (int)kv->head_dim,
                                (const T *)k, (const T *)v, ld, b->positions, b->q_start, (int)b->n_seq,
                                b->block_tables, b->max_blocks));
    TSR_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------------------
// optional ops

template <typename T> __global__ void tsr_k_to_f32(float *out, const T *in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = tsr_tof(in[i]);
}

// Grows a staging buffer; false (the buffer gone, the error recorded for take_error) when
// there is no memory for it.
static bool tsr__grow(tsr_cuda_ctx *c, void **p, size_t *cap, size_t need, bool host) {
    if (need <= *cap) return true;
    size_t n = need + need / 4;
    cudaError_t e;
    if (host) {
        if (*p) CUDA_CHECK(cudaFreeHost(*p));
        e = cudaMallocHost(p, n);
    } else {
        if (*p) CUDA_CHECK(cudaFree(*p));
        e = cudaMalloc(p, n);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();  // out of memory is not sticky
        *p = NULL;
        *cap = 0;
        tsr__cuda_set_error(c, TSR_ERR_OOM, host ? "out of pinned host memory for staging logits"
                                                  : "out of device memory for converting logits");
        return false;
    }
    *cap = n;
    return true;
}

static void tsr__cu_download_f32(tsr_backend *be, float *dst, const void *src, int64_t n) {
    if (n <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_ASSERT(!c->capturing);
    size_t bytes = sizeof(float) * (size_t)n;
    if (!tsr__grow(c, (void **)&c->h_stage, &c->h_stage_bytes, bytes, true)) return;
    const float *from = (const float *)src;
    if (be->dtype != TSR_F32) {
        if (!tsr__grow(c, (void **)&c->f32_stage, &c->f32_stage_bytes, bytes, false)) return;
        TSR_DISPATCH(be->dtype, tsr_k_to_f32<T><<<tsr__ew_blocks(c, n), 256, 0, c->stream>>>(c->f32_stage, (const T *)src, n));
        TSR_LAUNCH_CHECK();
        from = c->f32_stage;
    }
    CUDA_CHECK(cudaMemcpyAsync(c->h_stage, from, bytes, cudaMemcpyDeviceToHost, c->stream));
    if (tsr__cuda_wait(c, "a logits download")) memcpy(dst, c->h_stage, bytes);
}

__device__ __forceinline__ uint64_t tsr_d_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

template <typename T>
__global__ void tsr_k_fill_hash(T *dst, int64_t n_rows, int64_t n_cols, uint64_t key, int64_t first, int64_t stride,
                                float scale, float offset) {
    int64_t total = n_rows * n_cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / n_cols, j = i % n_cols;
        uint64_t h = tsr_d_mix(key ^ (uint64_t)(first + r * stride + j));
        float u = (float)((double)(h >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
        dst[i] = tsr_fromf<T>(offset + scale * u);
    }
}

static void tsr__cu_fill_hash(tsr_backend *be, void *dst, int64_t n_rows, int64_t n_cols, uint64_t key, int64_t first,
                              int64_t row_stride, float scale, float offset) {
    if (n_rows <= 0 || n_cols <= 0) return;
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_DISPATCH(be->dtype, tsr_k_fill_hash<T><<<tsr__ew_blocks(c, n_rows * n_cols), 256, 0, c->stream>>>(
                                (T *)dst, n_rows, n_cols, key, first, row_stride, scale, offset));
    TSR_LAUNCH_CHECK();
}

static void tsr__cu_mem_info(tsr_backend *be, size_t *free_bytes, size_t *total_bytes) {
    (void)be;
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

// ------------------------------------------------------------------------------------------
// the table

static void tsr__cu_free(tsr_backend *be) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    cudaStreamSynchronize(c->stream);
    tsr__cuda_prof_free(c);
    tsr__cuda_sampler_free(c);
    for (int i = 0; i < c->n_graphs; i++) cudaGraphExecDestroy(c->graphs[i].exec);
    cublasDestroy(c->cublas);
    cudaFree(c->cublas_ws);
    cudaFree(c->part);
    cudaFree(c->f32_stage);
    cudaFree(c->inv_freq);
    if (c->h_stage) cudaFreeHost(c->h_stage);
    cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

static const tsr_backend_ops tsr__cuda_ops = {
    /* name */ "cuda",
    /* free */ tsr__cu_free,
    /* alloc */ tsr__cu_alloc,
    /* dfree */ tsr__cu_dfree,
    /* upload */ tsr__cu_upload,
    /* download */ tsr__cu_download,
    /* memset0 */ tsr__cu_memset0,
    /* synchronize */ tsr__cu_sync,
    /* get_rows */ tsr__cu_get_rows,
    /* rmsnorm */ tsr__cu_rmsnorm,
    /* add_rmsnorm */ tsr__cu_add_rmsnorm,
    /* matmul */ tsr__cu_matmul,
    /* add_bias */ tsr__cu_add_bias,
    /* rope */ tsr__cu_rope,
    /* silu_mul */ tsr__cu_silu_mul,
    /* kv_write */ tsr__cu_kv_write,
    /* attention */ tsr__cuda_attention,
    /* download_f32 */ tsr__cu_download_f32,
    /* fill_hash */ tsr__cu_fill_hash,
    /* mem_info */ tsr__cu_mem_info,
    /* graph_begin */ tsr__cuda_graph_begin,
    /* graph_end */ tsr__cuda_graph_end,
    /* graph_replay */ tsr__cuda_graph_replay,
    /* rope_kv_write */ tsr__cu_rope_kv_write,
    /* matmul_silu */ tsr__cu_matmul_silu,    /* sample */ tsr__cuda_sample,
    /* take_error */ tsr__cu_take_error,
    /* host_memory: device buffers */ false,
    /* wtype_native: only be->dtype (GGUF blocks arrive dequantized) */ NULL,
    /* matmul_w */ NULL,
    /* get_rows_w */ NULL,
};

extern "C" tsr_backend *tsr_backend_cuda_init(int device, tsr_dtype dtype) {
    if (dtype != TSR_BF16 && dtype != TSR_F16 && dtype != TSR_F32) {
        tsr_errorf(TSR_ERR_INVALID_ARG, "the CUDA backend computes in bf16, f16 or f32, not %s", tsr_dtype_name(dtype));
        return NULL;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        tsr_errorf(TSR_ERR_UNSUPPORTED, "cannot open CUDA device %d: %s", device, cudaGetErrorString(e));
        cudaGetLastError();
        return NULL;
    }
    tsr_backend *be = (tsr_backend *)calloc(1, sizeof *be);
    tsr_cuda_ctx *c = (tsr_cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        tsr_errorf(TSR_ERR_OOM, "out of memory");
        return NULL;
    }
    c->device = device;
    c->knobs = tsr_knobs_get()->cuda;
    CUDA_CHECK(cudaGetDeviceProperties(&c->prop, device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&c->cublas));
    CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
    // an explicit workspace: cuBLAS then allocates nothing itself, so steps can be recorded
    c->cublas_ws_bytes = (size_t)32 << 20;
    if (cudaMalloc(&c->cublas_ws, c->cublas_ws_bytes) != cudaSuccess ||
        cudaMalloc(&c->inv_freq, sizeof(float) * 512) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(c->cublas_ws);
        cublasDestroy(c->cublas);
        cudaStreamDestroy(c->stream);
        free(be);
        free(c);
        tsr_errorf(TSR_ERR_OOM, "out of memory on CUDA device %d for the backend's workspace", device);
        return NULL;
    }
    CUBLAS_CHECK(cublasSetWorkspace(c->cublas, c->cublas_ws, c->cublas_ws_bytes));
    CUBLAS_CHECK(cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
    tsr__cuda_attention_init(c);
    be->ops = &tsr__cuda_ops;
    be->dtype = dtype;
    be->ctx = c;
    return be;
}

extern "C" void *tsr_backend_cuda_stream(tsr_backend *be) { return (void *)tsr__cuda(be)->stream; }

extern "C" tsr_cuda_knobs *tsr_backend_cuda_knobs(tsr_backend *be) { return &tsr__cuda(be)->knobs; }
