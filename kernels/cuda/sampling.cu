// Sampling on the GPU (backend.h's optional `sample` op): the twin of worker/sampling.c, whose
// header fixes the semantics (stage order, Philox keyed by the seed and counted by the tokens
// generated so far, ties to the smaller id, raw or processed logprobs).  Only the chosen ids
// and the requested logprobs go back to the host.
//
// One block of 1024 threads per row, three kernels and one CUB sort:
//   prep    f32 copy of the row (ids >= n_valid masked to -inf); penalties; greedy argmax, or
//           temperature, the row max, e = exp(l - max) and its sum; plain sampling (nothing
//           truncated) draws here by a scan in id order, as the CPU walks; rows that truncate
//           write 64-bit keys (e bits << 32 | ~id) of their candidates
//   sort    cub::DeviceSegmentedRadixSort, descending, one segment per truncating row: the
//           CPU's ranking (higher e first, then the smaller id)
//   walk    top-k = the first k; top-p / min-p cut by a scan of the ranked prefix; the draw
//   lp      log-softmax (raw or processed) of the chosen token and the top N by logit
// Where the arithmetic is the CPU's (penalties, temperature, the f32 subtraction before exp)
// the same IEEE operations are spelled out (__fmul_rn & co.) so nvcc contracts nothing; exp is
// taken in double and rounded, which agrees with glibc's expf except in rare last-bit cases.
// Sums run in double in a different order than the CPU's sequential ones, so a draw that lands
// within ~1e-16 of a CDF boundary may pick the neighbour: the kernel test counts those.
#include <cub/cub.cuh>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

#define TSR__SB 1024   // threads per row block

struct tsr__srow {
    int32_t row;            // logits row
    int32_t greedy;         // temperature <= 0
    float inv_t;            // 1 / temperature (1: skip)
    int32_t top_k;          // > 0 and < vocab: on
    float top_p;            // < 1: on
    float min_p;            // > 0: on
    float pre_cut;          // candidates need e >= pre_cut (the CPU's min-p shortcut)
    int32_t truncate;       // top-k, top-p or min-p on
    float rep, presence, frequency;
    int32_t n_prompt, n_output;
    int64_t ids_off;        // into the ids buffer: prompt ids then output ids
    uint64_t seed, step;
    int32_t n_logprobs;     // -1: none
    int32_t lp_processed;
};

struct tsr_cuda_sampler {
    int64_t cap_rows, vocab;   // per-row buffers sized [cap_rows][vocab]
    float *work;               // processed logits
    int32_t *cnt;              // output-token counts, zero between calls
    uint64_t *keys_in, *keys_out;
    void *cub_tmp;
    size_t cub_bytes;
    // small per-call arrays, device and pinned host mirrors
    tsr__srow *d_rows, *h_rows;
    int32_t *d_ids, *h_ids;
    int64_t cap_ids;
    int *seg_begin, *seg_end, *n_cand;
    double *z;
    float *mx;
    int32_t *d_tok, *h_tok;
    tsr_sample_out *d_out, *h_out;
};

// ---- Philox-4x32-10 and the uniform of worker/sampling.c ----
__device__ __forceinline__ double tsr_d_uniform(uint64_t key, uint64_t counter) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
#pragma unroll
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
    uint64_t bits = (((uint64_t)c0 << 32) | c1) >> 11;
    return (double)bits * (1.0 / 9007199254740992.0);
}

// e = expf(l - mx) as the CPU computes it (f32 subtraction; exp in double, rounded once).
__device__ __forceinline__ float tsr_d_e(float l, float mx) { return (float)exp((double)__fsub_rn(l, mx)); }

__device__ __forceinline__ uint64_t tsr_d_key(float e, int32_t id) {
    return ((uint64_t)__float_as_uint(e) << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)id);
}
__device__ __forceinline__ float tsr_d_key_e(uint64_t k) { return __uint_as_float((uint32_t)(k >> 32)); }
__device__ __forceinline__ int32_t tsr_d_key_id(uint64_t k) { return (int32_t)(0xFFFFFFFFu - (uint32_t)k); }

// Monotone map of a float (NaN as -inf) to uint32, for ranking by logit.
__device__ __forceinline__ uint32_t tsr_d_ord(float x) {
    if (isnan(x)) x = -INFINITY;
    uint32_t u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float tsr_d_unord(uint32_t o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7FFFFFFFu) : ~o);
}

// ---- block reductions / scans (blockDim.x == TSR__SB) ----
__device__ double tsr_d_block_sum(double v, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double s = sh[lane];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) sh[32] = s;
    }
    __syncthreads();
    return sh[32];
}

__device__ float tsr_d_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = sh[lane];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s = fmaxf(s, __shfl_xor_sync(0xffffffffu, s, o));
        if (lane == 0) sh[32] = s;
    }
    __syncthreads();
    return sh[32];
}

__device__ uint64_t tsr_d_block_max_u64(uint64_t v, uint64_t *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        uint64_t s = sh[lane];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            uint64_t w = __shfl_xor_sync(0xffffffffu, s, o);
            s = w > s ? w : s;
        }
        if (lane == 0) sh[32] = s;
    }
    __syncthreads();
    return sh[32];
}

// Inclusive scan of v over the block; *total gets the block's sum.
__device__ double tsr_d_block_scan(double v, double *sh, double *total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double w = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += w;
    }
    __syncthreads();
    if (lane == 31) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double s = sh[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            double w = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += w;
        }
        sh[lane] = s;
    }
    __syncthreads();
    double r = v + (warp > 0 ? sh[warp - 1] : 0.0);
    *total = sh[31];
    return r;
}

// ---- prep: penalties, temperature, greedy, max/sum, plain draw, candidate keys ----
template <typename T>
__global__ void __launch_bounds__(TSR__SB)
    tsr_k_sample_prep(const T *logits, int64_t V, int64_t n_valid, const tsr__srow *rows, const int32_t *ids,
                      float *work, int32_t *cnt, uint64_t *keys, int *seg_begin, int *seg_end, int *n_cand, double *zs,
                      float *mxs, int32_t *tok_out) {
    __shared__ double shd[33];
    __shared__ float shf[33];
    __shared__ uint64_t shu[33];
    __shared__ int s_count, s_found, s_last;
    const int r = blockIdx.x, tid = threadIdx.x;
    const tsr__srow P = rows[r];
    const T *in = logits + (int64_t)P.row * V;
    float *w = work + (int64_t)r * V;
    const bool pen = P.rep != 1.0f || P.presence != 0.0f || P.frequency != 0.0f;
    if (P.greedy && !pen) {   // the common decode case: one pass over the row, nothing stored
        float best = -INFINITY;
        int32_t bid = 0;
        for (int64_t v = tid; v < n_valid; v += TSR__SB) {
            float l = tsr_tof(in[v]);
            if (P.lp_processed) w[v] = l;
            if (l > best) best = l, bid = (int32_t)v;
        }
        if (P.lp_processed)
            for (int64_t v = n_valid + tid; v < V; v += TSR__SB) w[v] = -INFINITY;
        uint64_t k = best > -INFINITY ? ((uint64_t)tsr_d_ord(best) << 32) | (0xFFFFFFFFu - (uint32_t)bid) : 0;
        k = tsr_d_block_max_u64(k, shu);
        if (tid == 0) {
            tok_out[r] = k ? (int32_t)(0xFFFFFFFFu - (uint32_t)k) : 0;
            seg_begin[r] = seg_end[r] = (int)(r * V);
            n_cand[r] = 0;
        }
        return;
    }
    for (int64_t v = tid; v < V; v += TSR__SB) w[v] = v < n_valid ? tsr_tof(in[v]) : -INFINITY;
    if (tid == 0) {
        seg_begin[r] = (int)(r * V);
        seg_end[r] = (int)(r * V);
        n_cand[r] = 0;
        s_count = 0;
        s_found = INT_MAX;
        s_last = 0;
    }
    __syncthreads();
    // 1. penalties.  Repetition: every copy of an id writes f(original value), so duplicates
    // agree and each distinct id is penalised once, as on the CPU.
    const int32_t *pid = ids + P.ids_off, *oid = pid + P.n_prompt;
    if (P.rep != 1.0f) {
        for (int i = tid; i < P.n_prompt + P.n_output; i += TSR__SB) {
            int32_t id = pid[i];
            float l = id < n_valid ? tsr_tof(in[id]) : -INFINITY;
            w[id] = l > 0.0f ? __fdiv_rn(l, P.rep) : __fmul_rn(l, P.rep);
        }
        __syncthreads();
    }
    if (P.presence != 0.0f || P.frequency != 0.0f) {
        int32_t *cr = cnt + (int64_t)r * V;
        for (int i = tid; i < P.n_output; i += TSR__SB) atomicAdd(&cr[oid[i]], 1);
        __syncthreads();
        for (int i = tid; i < P.n_output; i += TSR__SB) {
            int32_t id = oid[i];
            int c = atomicExch(&cr[id], 0);   // the first thread of an id takes its count
            if (c) w[id] = __fsub_rn(w[id], __fmaf_rn(P.frequency, (float)c, P.presence));
        }
        __syncthreads();
    }
    // 2. greedy: the first maximum (NaN never wins; nothing finite: token 0)
    if (P.greedy) {
        float best = -INFINITY;
        int32_t bid = 0;
        for (int64_t v = tid; v < V; v += TSR__SB)
            if (w[v] > best) best = w[v], bid = (int32_t)v;
        uint64_t k = best > -INFINITY ? ((uint64_t)tsr_d_ord(best) << 32) | (0xFFFFFFFFu - (uint32_t)bid) : 0;
        k = tsr_d_block_max_u64(k, shu);
        if (tid == 0) tok_out[r] = k ? (int32_t)(0xFFFFFFFFu - (uint32_t)k) : 0;
        return;
    }
    float mx = -INFINITY;
    for (int64_t v = tid; v < V; v += TSR__SB) {
        float l = w[v];
        if (P.inv_t != 1.0f) w[v] = l = __fmul_rn(l, P.inv_t);
        mx = fmaxf(mx, l);
    }
    mx = tsr_d_block_max(mx, shf);
    if (mx == -INFINITY) {   // nothing has any probability
        if (tid == 0) tok_out[r] = 0;
        return;
    }
    // 3. e and its sum; candidates of a truncating row
    double z = 0.0;
    for (int64_t v = tid; v < V; v += TSR__SB) {
        float e = tsr_d_e(w[v], mx);   // NaN stays NaN and fails e > 0
        if (e > 0.0f) {
            z += e;
            if (P.truncate && e >= P.pre_cut) {
                int pos = atomicAdd(&s_count, 1);
                keys[(int64_t)r * V + pos] = tsr_d_key(e, (int32_t)v);
            }
            if (!P.truncate) atomicMax(&s_last, (int)v);
        }
    }
    z = tsr_d_block_sum(z, shd);   // also orders s_count / s_last
    if (tid == 0) {
        zs[r] = z;
        mxs[r] = mx;
        if (P.truncate) {
            seg_end[r] = (int)(r * V) + s_count;
            n_cand[r] = s_count;
        }
    }
    if (P.truncate) return;
    // 4. plain sampling: walk in id order, the first id whose running sum exceeds u
    const double u = tsr_d_uniform(P.seed, P.step) * z;
    double base = 0.0;
    for (int64_t t0 = 0; t0 < V; t0 += TSR__SB) {
        int64_t v = t0 + tid;
        float e = v < V ? tsr_d_e(w[v], mx) : 0.0f;
        double tot, cum = base + tsr_d_block_scan(e > 0.0f ? (double)e : 0.0, shd, &tot);
        if (v < V && e > 0.0f && u < cum) atomicMin(&s_found, (int)v);
        __syncthreads();
        if (s_found != INT_MAX) break;
        base += tot;
    }
    if (tid == 0) tok_out[r] = s_found != INT_MAX ? s_found : s_last;
}

// ---- walk: top-k / top-p / min-p over the ranked candidates, then the draw ----
__global__ void __launch_bounds__(TSR__SB)
    tsr_k_sample_walk(int64_t V, const tsr__srow *rows, const uint64_t *keys, const int *n_cand, const double *zs,
                      int32_t *tok_out) {
    __shared__ double shd[33];
    __shared__ int s_stop;
    const int r = blockIdx.x, tid = threadIdx.x;
    const tsr__srow P = rows[r];
    const int n = n_cand[r];
    if (P.greedy || !P.truncate || n == 0) return;   // decided in prep
    const uint64_t *kr = keys + (int64_t)r * V;
    const bool use_k = P.top_k > 0 && P.top_k < V, use_p = P.top_p < 1.0f, use_min = P.min_p > 0.0f;
    int L0 = use_k && P.top_k < n ? P.top_k : n;
    double zk = zs[r];
    if (use_k) {
        double s = 0.0;
        for (int i = tid; i < L0; i += TSR__SB) s += tsr_d_key_e(kr[i]);
        zk = tsr_d_block_sum(s, shd);
    }
    int L = L0;
    if (use_p || use_min) {
        const double target = use_p ? (double)P.top_p * zk : INFINITY;
        if (tid == 0) s_stop = INT_MAX;
        __syncthreads();
        double base = 0.0;
        for (int t0 = 0; t0 < L0; t0 += TSR__SB) {
            int i = t0 + tid;
            float e = i < L0 ? tsr_d_key_e(kr[i]) : 0.0f;
            double tot, cum = base + tsr_d_block_scan(i < L0 ? (double)e : 0.0, shd, &tot);
            if (i < L0 && ((use_min && e < P.min_p) || cum >= target)) atomicMin(&s_stop, i);
            __syncthreads();
            if (s_stop != INT_MAX) break;
            base += tot;
        }
        if (s_stop != INT_MAX) L = (use_min && tsr_d_key_e(kr[s_stop]) < P.min_p) ? s_stop : s_stop + 1;
    }
    if (L < 1) L = 1;
    double m = 0.0;
    for (int i = tid; i < L; i += TSR__SB) m += tsr_d_key_e(kr[i]);
    const double mass = tsr_d_block_sum(m, shd);
    const double u = tsr_d_uniform(P.seed, P.step) * mass;
    if (tid == 0) s_stop = INT_MAX;
    __syncthreads();
    double base = 0.0;
    for (int t0 = 0; t0 < L; t0 += TSR__SB) {
        int i = t0 + tid;
        double tot, cum = base + tsr_d_block_scan(i < L ? (double)tsr_d_key_e(kr[i]) : 0.0, shd, &tot);
        if (i < L && u < cum) atomicMin(&s_stop, i);
        __syncthreads();
        if (s_stop != INT_MAX) break;
        base += tot;
    }
    if (tid == 0) tok_out[r] = tsr_d_key_id(kr[s_stop != INT_MAX ? s_stop : L - 1]);
}

// ---- logprobs: of the raw (masked) logits or of the processed ones ----
template <typename T>
__global__ void __launch_bounds__(TSR__SB)
    tsr_k_sample_logprobs(const T *logits, int64_t V, int64_t n_valid, const tsr__srow *rows, const float *work,
                          const int32_t *tok, tsr_sample_out *out) {
    __shared__ double shd[33];
    __shared__ float shf[33];
    __shared__ uint64_t shu[33];
    const int r = blockIdx.x, tid = threadIdx.x;
    const tsr__srow P = rows[r];
    if (P.n_logprobs < 0) return;
    const T *in = logits + (int64_t)P.row * V;
    const float *w = work + (int64_t)r * V;
    const bool raw = !P.lp_processed;
#define TSR__L(v) (raw ? ((v) < n_valid ? tsr_tof(in[v]) : -INFINITY) : w[v])
    float mx = -INFINITY;
    for (int64_t v = tid; v < V; v += TSR__SB) {
        float l = TSR__L(v);
        if (l > mx) mx = l;
    }
    mx = tsr_d_block_max(mx, shf);
    double z = 0.0;
    for (int64_t v = tid; v < V; v += TSR__SB) z += exp((double)TSR__L(v) - (double)mx);
    z = tsr_d_block_sum(z, shd);
    const double lse = (double)mx + log(z);
    const int32_t token = tok[r];
    if (tid == 0) {
        out[r].token = token;
        out[r].logprob = (float)((double)TSR__L((int64_t)token) - lse);
        out[r].n_top = 0;
    }
    int n_top = P.n_logprobs < TSR_SAMPLE_MAX_TOP ? P.n_logprobs : TSR_SAMPLE_MAX_TOP;
    if (n_top > V) n_top = (int)V;
    uint64_t prev = ~0ull;   // the next best key is the largest one below prev
    for (int j = 0; j < n_top; j++) {
        uint64_t best = 0;
        for (int64_t v = tid; v < V; v += TSR__SB) {
            uint64_t k = ((uint64_t)tsr_d_ord(TSR__L(v)) << 32) | (0xFFFFFFFFu - (uint32_t)v);
            if (k < prev && k > best) best = k;
        }
        best = tsr_d_block_max_u64(best, shu);
        if (tid == 0) {
            out[r].top[j].id = (int32_t)(0xFFFFFFFFu - (uint32_t)best);
            out[r].top[j].logprob = (float)((double)tsr_d_unord((uint32_t)(best >> 32)) - lse);
            out[r].n_top = j + 1;
        }
        prev = best;
    }
#undef TSR__L
}

// ---- host side ----

template <typename P> static bool tsr__sgrow(P **p, size_t n, bool host) {
    if (host) {
        if (*p) cudaFreeHost(*p);
        *p = NULL;
        if (cudaMallocHost((void **)p, n ? n : 16) != cudaSuccess) return false;
    } else {
        if (*p) cudaFree(*p);
        *p = NULL;
        if (cudaMalloc((void **)p, n ? n : 16) != cudaSuccess) return false;
    }
    return true;
}

void tsr__cuda_sampler_free(tsr_cuda_ctx *c) {
    tsr_cuda_sampler *s = c->sampler;
    if (!s) return;
    cudaFree(s->work);
    cudaFree(s->cnt);
    cudaFree(s->keys_in);
    cudaFree(s->keys_out);
    cudaFree(s->cub_tmp);
    cudaFree(s->d_rows);
    cudaFree(s->d_ids);
    cudaFree(s->seg_begin);
    cudaFree(s->seg_end);
    cudaFree(s->n_cand);
    cudaFree(s->z);
    cudaFree(s->mx);
    cudaFree(s->d_tok);
    cudaFree(s->d_out);
    if (s->h_rows) cudaFreeHost(s->h_rows);
    if (s->h_ids) cudaFreeHost(s->h_ids);
    if (s->h_tok) cudaFreeHost(s->h_tok);
    if (s->h_out) cudaFreeHost(s->h_out);
    free(s);
    c->sampler = NULL;
}

// Sizes the per-row buffers for n rows of vocab V (false: out of device memory, all freed).
static bool tsr__sampler_reserve(tsr_cuda_ctx *c, int64_t n, int64_t V) {
    tsr_cuda_sampler *s = c->sampler;
    if (s && s->vocab == V && s->cap_rows >= n) return true;
    int64_t cap = s && s->vocab == V && 2 * s->cap_rows > n ? 2 * s->cap_rows : n;
    if (cap < 8) cap = 8;
    if (s) tsr__cuda_sampler_free(c);
    s = (tsr_cuda_sampler *)calloc(1, sizeof *s);
    if (!s) return false;
    c->sampler = s;
    s->vocab = V;
    s->cap_rows = cap;
    size_t nv = (size_t)(cap * V);
    bool ok = tsr__sgrow(&s->work, nv * sizeof(float), false) && tsr__sgrow(&s->cnt, nv * sizeof(int32_t), false) &&
              tsr__sgrow(&s->keys_in, nv * sizeof(uint64_t), false) &&
              tsr__sgrow(&s->keys_out, nv * sizeof(uint64_t), false) &&
              tsr__sgrow(&s->d_rows, cap * sizeof(tsr__srow), false) && tsr__sgrow(&s->h_rows, cap * sizeof(tsr__srow), true) &&
              tsr__sgrow(&s->seg_begin, cap * sizeof(int), false) && tsr__sgrow(&s->seg_end, cap * sizeof(int), false) &&
              tsr__sgrow(&s->n_cand, cap * sizeof(int), false) && tsr__sgrow(&s->z, cap * sizeof(double), false) &&
              tsr__sgrow(&s->mx, cap * sizeof(float), false) && tsr__sgrow(&s->d_tok, cap * sizeof(int32_t), false) &&
              tsr__sgrow(&s->h_tok, cap * sizeof(int32_t), true) &&
              tsr__sgrow(&s->d_out, cap * sizeof(tsr_sample_out), false) &&
              tsr__sgrow(&s->h_out, cap * sizeof(tsr_sample_out), true);
    if (ok) {
        ok = cub::DeviceSegmentedRadixSort::SortKeysDescending(NULL, s->cub_bytes, s->keys_in, s->keys_out, (int)nv,
                                                               (int)cap, s->seg_begin, s->seg_end, 0, 62,
                                                               c->stream) == cudaSuccess &&
             tsr__sgrow(&s->cub_tmp, s->cub_bytes, false);
    }
    if (ok) ok = cudaMemsetAsync(s->cnt, 0, nv * sizeof(int32_t), c->stream) == cudaSuccess;
    if (!ok) {
        cudaGetLastError();
        tsr__cuda_sampler_free(c);
        return false;
    }
    return true;
}

bool tsr__cuda_sample(tsr_backend *be, const void *logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                      const tsr_sample_req *reqs, int32_t *ids_out, tsr_sample_out *outs) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_ASSERT(!c->capturing);
    if (n_rows <= 0) return true;
    if (vocab <= 0 || vocab * n_rows > INT32_MAX || n_valid > vocab) return false;
    if (n_valid <= 0) n_valid = vocab;
    if (!tsr__sampler_reserve(c, n_rows, vocab)) return false;
    tsr_cuda_sampler *s = c->sampler;
    int64_t n_ids = 0;
    bool any_trunc = false, any_lp = false;
    for (int64_t r = 0; r < n_rows; r++) {
        const tsr_sample_req *q = &reqs[r];
        bool pen = q->repetition_penalty != 1.0f || q->presence_penalty != 0.0f || q->frequency_penalty != 0.0f;
        if (pen) n_ids += q->n_prompt + q->n_output;
    }
    if (n_ids > s->cap_ids) {
        int64_t cap = n_ids * 2;
        if (!tsr__sgrow(&s->d_ids, (size_t)cap * sizeof(int32_t), false) ||
            !tsr__sgrow(&s->h_ids, (size_t)cap * sizeof(int32_t), true)) {
            cudaGetLastError();
            tsr__cuda_sampler_free(c);
            return false;
        }
        s->cap_ids = cap;
    }
    int64_t off = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const tsr_sample_req *q = &reqs[r];
        tsr__srow *d = &s->h_rows[r];
        memset(d, 0, sizeof *d);
        d->row = (int32_t)q->row;
        d->greedy = !(q->temperature > 0.0f);
        d->inv_t = d->greedy || q->temperature == 1.0f ? 1.0f : 1.0f / q->temperature;
        const bool use_k = q->top_k > 0 && q->top_k < vocab, use_p = q->top_p < 1.0f, use_min = q->min_p > 0.0f;
        d->top_k = use_k ? q->top_k : 0;
        d->top_p = q->top_p;
        d->min_p = q->min_p;
        d->pre_cut = use_min && !(use_k && use_p) ? q->min_p : 0.0f;
        d->truncate = !d->greedy && (use_k || use_p || use_min);
        d->rep = q->repetition_penalty;
        d->presence = q->presence_penalty;
        d->frequency = q->frequency_penalty;
        d->seed = q->seed;
        d->step = (uint64_t)q->n_output;
        d->n_logprobs = outs ? q->n_logprobs : -1;
        d->lp_processed = q->logprobs_processed;
        d->ids_off = off;
        bool pen = q->repetition_penalty != 1.0f || q->presence_penalty != 0.0f || q->frequency_penalty != 0.0f;
        if (pen) {
            d->n_prompt = (int32_t)q->n_prompt;
            d->n_output = (int32_t)q->n_output;
            if (q->n_prompt) memcpy(s->h_ids + off, q->prompt_ids, sizeof(int32_t) * (size_t)q->n_prompt);
            off += q->n_prompt;
            if (q->n_output) memcpy(s->h_ids + off, q->output_ids, sizeof(int32_t) * (size_t)q->n_output);
            off += q->n_output;
        }
        if (d->truncate) any_trunc = true;
        if (d->n_logprobs >= 0) any_lp = true;
    }
    cudaStream_t st = c->stream;
    CUDA_CHECK(cudaMemcpyAsync(s->d_rows, s->h_rows, sizeof(tsr__srow) * (size_t)n_rows, cudaMemcpyHostToDevice, st));
    if (off) CUDA_CHECK(cudaMemcpyAsync(s->d_ids, s->h_ids, sizeof(int32_t) * (size_t)off, cudaMemcpyHostToDevice, st));
    const unsigned nb = (unsigned)n_rows;
    TSR_DISPATCH(be->dtype, tsr_k_sample_prep<T><<<nb, TSR__SB, 0, st>>>(
                                (const T *)logits, vocab, n_valid, s->d_rows, s->d_ids, s->work, s->cnt, s->keys_in,
                                s->seg_begin, s->seg_end, s->n_cand, s->z, s->mx, s->d_tok));
    TSR_LAUNCH_CHECK();
    if (any_trunc) {
        size_t bytes = s->cub_bytes;
        CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(s->cub_tmp, bytes, s->keys_in, s->keys_out,
                                                                     (int)(n_rows * vocab), (int)n_rows, s->seg_begin,
                                                                     s->seg_end, 0, 62, st));
        tsr_k_sample_walk<<<nb, TSR__SB, 0, st>>>(vocab, s->d_rows, s->keys_out, s->n_cand, s->z, s->d_tok);
        TSR_LAUNCH_CHECK();
    }
    if (any_lp) {
        TSR_DISPATCH(be->dtype, tsr_k_sample_logprobs<T><<<nb, TSR__SB, 0, st>>>(
                                    (const T *)logits, vocab, n_valid, s->d_rows, s->work, s->d_tok, s->d_out));
        TSR_LAUNCH_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(s->h_out, s->d_out, sizeof(tsr_sample_out) * (size_t)n_rows, cudaMemcpyDeviceToHost, st));
    }
    CUDA_CHECK(cudaMemcpyAsync(s->h_tok, s->d_tok, sizeof(int32_t) * (size_t)n_rows, cudaMemcpyDeviceToHost, st));
    if (!tsr__cuda_wait(c, "sampling")) return false;  // the step fails (take_error)
    memcpy(ids_out, s->h_tok, sizeof(int32_t) * (size_t)n_rows);
    if (outs) {
        for (int64_t r = 0; r < n_rows; r++) {
            if (s->h_rows[r].n_logprobs >= 0) {
                outs[r] = s->h_out[r];
            } else {
                memset(&outs[r], 0, sizeof outs[r]);
                outs[r].token = ids_out[r];
            }
        }
    }
    return true;
}
