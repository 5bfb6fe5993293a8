// Paged attention on the GPU (backend.h's attention op), in two kernels and a reduction:
//
//  - tsr_k_attn_generic: any head_dim, any query group.  A block takes up to ATT_RB "rows" of
//    ONE sequence and ONE KV head, a row being a (new token, query head of that KV head's
//    group) pair, so K/V tiles are loaded once for the whole GQA/MQA group.  Keys come in
//    tiles of 32 through shared memory; online softmax in f32.  Decode (one new token per
//    sequence) runs it split along the context (flash-decoding): each split writes (max, sum,
//    unnormalized output) and tsr_k_attn_reduce merges the splits, so one long sequence still
//    fills the GPU.  It is also the prefill path for head sizes the tensor-core kernel does
//    not take.
//  - tsr_k_attn_prefill_wmma: prefill (flash-attention style) on tensor cores for head_dim 64
//    and 128 in bf16/f16: 64 rows x 64 keys per tile, S = Q K^T and O += P V through WMMA,
//    the online softmax per row in f32 registers; the score matrix never leaves shared memory.
// Causality: the row of a token at position p sees keys 0..p (cached prefix and new tokens).
// Every kernel reads positions, lengths and block tables from device memory, and the decode
// grid depends only on (n_seq, max_blocks), so a decode step can be recorded as a CUDA graph.
#include <mma.h>
#include <stdio.h>

#include "kernels/cuda/common.cuh"

#define ATT_RB 16     // rows per block, generic kernel
#define ATT_KT 32     // keys per tile, generic kernel (== warp size: one key per lane in softmax)
#define ATT_THREADS 128

struct tsr_attn_args {
    const int32_t *q_start, *ctx_len, *positions, *block_tables;
    int64_t max_blocks, block_len, ld_q;
    int n_seq, n_head, n_kv_head, head_dim;
    float scale;
};

__device__ __forceinline__ int64_t tsr_kv_off(const tsr_attn_args &a, int seq, int g, int64_t kpos) {
    int64_t blk = a.block_tables[(int64_t)seq * a.max_blocks + kpos / a.block_len];
    return ((blk * a.n_kv_head + g) * a.block_len + kpos % a.block_len) * a.head_dim;
}

// ------------------------------------------------------------------------------------------
// generic kernel

template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    tsr_k_attn_generic(T *out, const T *q, const T *kc, const T *vc, tsr_attn_args a, int chunk, float *part_o,
                       float *part_ml, int64_t n_rows_total) {
    extern __shared__ __align__(16) float smem[];
    const int hd = a.head_dim, G = a.n_head / a.n_kv_head;
    const int seq = blockIdx.y / a.n_kv_head, g = blockIdx.y % a.n_kv_head, z = blockIdx.z;
    const int qs = a.q_start[seq], qe = a.q_start[seq + 1];
    const int n_r = (qe - qs) * G, r0 = blockIdx.x * ATT_RB;
    if (r0 >= n_r) return;
    const int nr = min(ATT_RB, n_r - r0);
    const int tid = threadIdx.x;

    float *sQ = smem;                       // [RB][hd] (scaled)
    float *sO = sQ + ATT_RB * hd;           // [RB][hd]
    float *sS = sO + ATT_RB * hd;           // [RB][KT]
    float *sM = sS + ATT_RB * ATT_KT;       // [RB]
    float *sL = sM + ATT_RB;
    float *sA = sL + ATT_RB;
    int *sPos = (int *)(sA + ATT_RB);       // [RB]
    const int kld = hd + 2;                 // padded K rows: lanes reading different keys hit different banks
    T *sK = (T *)(sPos + ATT_RB);           // [KT][hd + 2]
    T *sV = sK + ATT_KT * kld;              // [KT][hd]

    for (int i = tid; i < nr * hd; i += blockDim.x) {
        int r = i / hd, d = i % hd, row = r0 + r;
        int tok = qs + row / G, h = g * G + row % G;
        sQ[i] = tsr_tof(q[(int64_t)tok * a.ld_q + (int64_t)h * hd + d]) * a.scale;
        sO[i] = 0.0f;
    }
    for (int r = tid; r < ATT_RB; r += blockDim.x) {
        sM[r] = -INFINITY;
        sL[r] = 0.0f;
        sPos[r] = r < nr ? a.positions[qs + (r0 + r) / G] : -1;
    }
    // the block's last row is its latest token: it bounds the keys any row may see
    const int kmax = a.positions[qs + (r0 + nr - 1) / G] + 1;
    const int kb = z * chunk, ke = min(kmax, kb + chunk);
    __syncthreads();

    // 16-bit types with hd % 8 == 0 (every real head size): K/V rows move as 16-byte vectors,
    // one block-table lookup per vector instead of per element (v1 moved 2 bytes per load);
    // the padded K rows (hd + 2: bank-conflict-free score loop) take them as 4-byte words.
    const bool vec = sizeof(T) == 2 && (hd & 7) == 0;
    for (int kt = kb; kt < ke; kt += ATT_KT) {
        if (vec) {
            const int hv = hd >> 3;
            for (int i = tid; i < ATT_KT * hv; i += blockDim.x) {
                int j = i / hv, d = (i % hv) << 3, kpos = kt + j;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
                if (kpos < ke) {
                    int64_t off = tsr_kv_off(a, seq, g, kpos) + d;
                    kv = *(const uint4 *)(kc + off);
                    vv = *(const uint4 *)(vc + off);
                }
                uint32_t *dk = (uint32_t *)(sK + j * kld + d);
                dk[0] = kv.x, dk[1] = kv.y, dk[2] = kv.z, dk[3] = kv.w;
                *(uint4 *)(sV + j * hd + d) = vv;
            }
        } else {
            for (int i = tid; i < ATT_KT * hd; i += blockDim.x) {
                int j = i / hd, d = i % hd, kpos = kt + j;
                T kv = tsr_fromf<T>(0.0f), vv = tsr_fromf<T>(0.0f);
                if (kpos < ke) {
                    int64_t off = tsr_kv_off(a, seq, g, kpos) + d;
                    kv = kc[off];
                    vv = vc[off];
                }
                sK[j * kld + d] = kv;
                sV[j * hd + d] = vv;
            }
        }
        __syncthreads();
        for (int i = tid; i < nr * ATT_KT; i += blockDim.x) {
            int r = i / ATT_KT, j = i % ATT_KT, kpos = kt + j;
            float s = -INFINITY;
            if (kpos < ke && kpos <= sPos[r]) {
                s = 0.0f;
                const float *qr = sQ + r * hd;
                const T *kr = sK + j * kld;
                if (vec) {
                    for (int d = 0; d < hd; d += 2) s += qr[d] * tsr_tof(kr[d]) + qr[d + 1] * tsr_tof(kr[d + 1]);
                } else {
                    for (int d = 0; d < hd; d++) s += qr[d] * tsr_tof(kr[d]);
                }
            }
            sS[i] = s;
        }
        __syncthreads();
        {
            int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
            for (int r = warp; r < nr; r += nw) {
                float v = sS[r * ATT_KT + lane];
                float mo = sM[r], mn = fmaxf(mo, tsr_warp_max(v));
                float p = mn == -INFINITY ? 0.0f : __expf(v - mn);
                float al = mn == -INFINITY ? 1.0f : __expf(mo - mn);
                sS[r * ATT_KT + lane] = p;
                float ps = tsr_warp_sum(p);
                if (lane == 0) {
                    sM[r] = mn;
                    sL[r] = sL[r] * al + ps;
                    sA[r] = al;
                }
            }
        }
        __syncthreads();
        for (int i = tid; i < nr * hd; i += blockDim.x) {
            int r = i / hd, d = i % hd;
            const float *p = sS + r * ATT_KT;
            float acc = sO[i] * sA[r];
#pragma unroll 8
            for (int j = 0; j < ATT_KT; j++) acc += p[j] * tsr_tof(sV[j * hd + d]);
            sO[i] = acc;
        }
        __syncthreads();
    }

    for (int i = tid; i < nr * hd; i += blockDim.x) {
        int r = i / hd, d = i % hd, row = r0 + r;
        int tok = qs + row / G, h = g * G + row % G;
        int64_t grow = (int64_t)tok * a.n_head + h;
        if (part_o) {
            part_o[((int64_t)z * n_rows_total + grow) * hd + d] = sO[i];
            if (d == 0) {
                part_ml[((int64_t)z * n_rows_total + grow) * 2] = sM[r];
                part_ml[((int64_t)z * n_rows_total + grow) * 2 + 1] = sL[r];
            }
        } else {
            float l = sL[r];
            out[grow * hd + d] = tsr_fromf<T>(l > 0.0f ? sO[i] / l : 0.0f);
        }
    }
}

// Merges the splits of each (token, head) row: out = sum_z o_z e^(m_z - M) / sum_z l_z e^(m_z - M).
template <typename T>
__global__ void tsr_k_attn_reduce(T *out, const float *part_o, const float *part_ml, int n_split, int64_t n_rows,
                                  int hd) {
    int64_t row = blockIdx.x;
    float M = -INFINITY;
    for (int z = 0; z < n_split; z++) M = fmaxf(M, part_ml[((int64_t)z * n_rows + row) * 2]);
    float L = 0.0f;
    for (int z = 0; z < n_split; z++) {
        float m = part_ml[((int64_t)z * n_rows + row) * 2];
        if (m != -INFINITY) L += part_ml[((int64_t)z * n_rows + row) * 2 + 1] * __expf(m - M);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int z = 0; z < n_split; z++) {
            float m = part_ml[((int64_t)z * n_rows + row) * 2];
            if (m != -INFINITY) acc += part_o[((int64_t)z * n_rows + row) * hd + d] * __expf(m - M);
        }
        out[row * hd + d] = tsr_fromf<T>(L > 0.0f ? acc / L : 0.0f);
    }
}

// ------------------------------------------------------------------------------------------
// tensor-core prefill

#define PF_BQ 64
#define PF_BK 64
#define PF_THREADS 128

template <int HD> struct tsr_pf_smem {
    static constexpr int QLD = HD + 8;                    // 16-bit elements; multiple of 8 for WMMA
    static constexpr int PLD = PF_BK + 8;
    static constexpr int SLD = (HD > PF_BK ? HD : PF_BK) + 4;  // f32 scratch per warp
    static constexpr size_t bytes = (size_t)3 * PF_BQ * QLD * 2 + (size_t)PF_BQ * PLD * 2 + (size_t)4 * 16 * SLD * 4;
};

template <typename T, int HD>
__global__ void __launch_bounds__(PF_THREADS)
    tsr_k_attn_prefill_wmma(T *out, const T *q, const T *kc, const T *vc, tsr_attn_args a) {
    using namespace nvcuda;
    typedef tsr_pf_smem<HD> L;
    extern __shared__ __align__(16) unsigned char pf_smem[];
    T *sQ = (T *)pf_smem;
    T *sK = sQ + PF_BQ * L::QLD;
    T *sV = sK + PF_BK * L::QLD;
    T *sP = sV + PF_BK * L::QLD;
    float *sF = (float *)(sP + PF_BQ * L::PLD);

    const int G = a.n_head / a.n_kv_head;
    const int seq = blockIdx.y / a.n_kv_head, g = blockIdx.y % a.n_kv_head;
    const int qs = a.q_start[seq], qe = a.q_start[seq + 1];
    const int n_r = (qe - qs) * G, r0 = blockIdx.x * PF_BQ;
    if (r0 >= n_r) return;
    const int nr = min(PF_BQ, n_r - r0);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    constexpr int VEC = 8;  // 16-bit elements per 16-byte load
    constexpr int HV = HD / VEC;

    // Q rows of this block
    for (int i = tid; i < PF_BQ * HV; i += PF_THREADS) {
        int r = i / HV, c = (i % HV) * VEC;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nr) {
            int row = r0 + r, tok = qs + row / G, h = g * G + row % G;
            v = *(const uint4 *)(q + (int64_t)tok * a.ld_q + (int64_t)h * HD + c);
        }
        *(uint4 *)(sQ + r * L::QLD + c) = v;
    }
    const int kend = a.positions[qs + (r0 + nr - 1) / G] + 1;

    // this lane's row (of the warp's 16) and half of the columns
    const int rr = lane >> 1, hf = lane & 1;
    const int my_r = warp * 16 + rr;
    const int my_pos = my_r < nr ? a.positions[qs + (r0 + my_r) / G] : -1;
    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; i++) o[i] = 0.0f;
    float m_run = -INFINITY, l_run = 0.0f;
    float *sW = sF + warp * 16 * L::SLD;  // the warp's f32 scratch [16][SLD]

    for (int kt = 0; kt < kend; kt += PF_BK) {
        __syncthreads();  // every warp is done with the previous K/V tile
        for (int i = tid; i < PF_BK * HV; i += PF_THREADS) {
            int j = i / HV, c = (i % HV) * VEC, kpos = kt + j;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (kpos < kend) {
                int64_t off = tsr_kv_off(a, seq, g, kpos) + c;
                kv = *(const uint4 *)(kc + off);
                vv = *(const uint4 *)(vc + off);
            }
            *(uint4 *)(sK + j * L::QLD + c) = kv;
            *(uint4 *)(sV + j * L::QLD + c) = vv;
        }
        __syncthreads();

        // S = Q K^T for the warp's 16 rows x 64 keys
#pragma unroll
        for (int kf = 0; kf < PF_BK / 16; kf++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int ds = 0; ds < HD / 16; ds++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, sQ + warp * 16 * L::QLD + ds * 16, L::QLD);
                wmma::load_matrix_sync(fb, sK + kf * 16 * L::QLD + ds * 16, L::QLD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sW + kf * 16, acc, L::SLD, wmma::mem_row_major);
        }
        __syncwarp();

        // online softmax: the lane's 32 columns of its row, the partner lane has the rest
        float sv[32];
        float mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            int col = hf * 32 + c;
            float s = (kt + col <= my_pos) ? sW[rr * L::SLD + col] * a.scale : -INFINITY;
            sv[c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float mn = fmaxf(m_run, mx);
        float al = mn == -INFINITY ? 1.0f : __expf(m_run - mn);
        float ps = 0.0f;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            float p = mn == -INFINITY ? 0.0f : __expf(sv[c] - mn);
            T pt = tsr_fromf<T>(p);
            ps += tsr_tof(pt);
            sP[my_r * L::PLD + hf * 32 + c] = pt;
        }
        ps += __shfl_xor_sync(0xffffffffu, ps, 1);
        l_run = l_run * al + ps;
        m_run = mn;
#pragma unroll
        for (int i = 0; i < HD / 2; i++) o[i] *= al;
        __syncwarp();

        // O_tile = P V for the warp's rows, through the scratch into the lanes' registers
#pragma unroll
        for (int nf = 0; nf < HD / 16; nf++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int ks = 0; ks < PF_BK / 16; ks++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, sP + warp * 16 * L::PLD + ks * 16, L::PLD);
                wmma::load_matrix_sync(fb, sV + ks * 16 * L::QLD + nf * 16, L::QLD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sW + nf * 16, acc, L::SLD, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < HD / 2; i++) o[i] += sW[rr * L::SLD + hf * (HD / 2) + i];
        __syncwarp();
    }

    if (my_r < nr) {
        int row = r0 + my_r, tok = qs + row / G, h = g * G + row % G;
        T *dst = out + ((int64_t)tok * a.n_head + h) * HD + hf * (HD / 2);
        float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
#pragma unroll
        for (int i = 0; i < HD / 2; i++) dst[i] = tsr_fromf<T>(o[i] * inv);
    }
}

// ------------------------------------------------------------------------------------------
// host side

static size_t tsr__gen_smem(int hd, size_t es) {
    return sizeof(float) * (size_t)(2 * ATT_RB * hd + ATT_RB * ATT_KT + 3 * ATT_RB) + sizeof(int) * ATT_RB +
           es * (size_t)(ATT_KT * (hd + 2) + ATT_KT * hd) + 16;
}

int tsr__cuda_decode_splits(tsr_backend *be, int64_t n_seq, int64_t n_kv_head, int64_t cap_ctx) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    if (c->knobs.decode_splits > 0) return c->knobs.decode_splits;   // TESSERA_DECODE_SPLITS
    int64_t blocks = n_seq * n_kv_head;
    int64_t want = (2 * (int64_t)c->prop.multiProcessorCount + blocks - 1) / blocks;  // fill the GPU twice over
    // >= 64 keys (2 tiles) per split: batch-1 decode at a few hundred tokens is 8 blocks (one per
    // KV head) otherwise, each walking the whole context alone
    int64_t most = (cap_ctx + 63) / 64;
    int64_t n = want < most ? want : most;
    if (n > 64) n = 64;
    return n < 1 ? 1 : (int)n;
}

template <typename T>
static void tsr__attn_launch(tsr_backend *be, T *out, const T *q, const T *kc, const T *vc, const tsr_attn_args &a,
                             const tsr_attn_batch *b) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    const int G = a.n_head / a.n_kv_head;
    const int hd = a.head_dim;
    const size_t es = sizeof(T);
    const bool decode = b->n_tok == b->n_seq;
    const unsigned gy = (unsigned)(b->n_seq * a.n_kv_head);

    if (!decode && sizeof(T) == 2 && (hd == 64 || hd == 128) && (a.ld_q * (int64_t)es) % 16 == 0 &&
        !c->knobs.no_wmma) {
        if constexpr (sizeof(T) == 2) {
            dim3 grid(tsr_cdiv(b->n_tok * G, PF_BQ), gy);
            if (hd == 64) {
                size_t sm = tsr_pf_smem<64>::bytes;
                tsr_k_attn_prefill_wmma<T, 64><<<grid, PF_THREADS, sm, c->stream>>>(out, q, kc, vc, a);
            } else {
                size_t sm = tsr_pf_smem<128>::bytes;
                tsr_k_attn_prefill_wmma<T, 128><<<grid, PF_THREADS, sm, c->stream>>>(out, q, kc, vc, a);
            }
            TSR_LAUNCH_CHECK();
        }
        return;
    }

    size_t sm = tsr__gen_smem(hd, es);
    TSR_ASSERT(sm <= (size_t)c->prop.sharedMemPerBlockOptin);
    int n_split = 1;
    int64_t cap = b->max_blocks * a.block_len;
    if (decode) n_split = tsr__cuda_decode_splits(be, b->n_seq, a.n_kv_head, cap);
    const int64_t n_rows = b->n_tok * a.n_head;
    size_t need = sizeof(float) * (size_t)n_split * (size_t)n_rows * (size_t)(hd + 2);
    if (n_split > 1 && need > c->part_bytes) {
        TSR_ASSERT(!c->capturing);  // recorded steps were run once before, which sized this
        if (!tsr__cuda_wait(c, "attention")) return;  // the step fails (take_error)
        if (c->part) CUDA_CHECK(cudaFree(c->part));
        c->part = NULL;
        c->part_bytes = 0;
        tsr__cuda_graphs_invalidate(c);  // recordings point at the old buffer
        if (cudaMalloc(&c->part, need + need / 2) == cudaSuccess) {
            c->part_bytes = need + need / 2;
        } else {  // out of device memory: one split needs no scratch (slower, same result)
            cudaGetLastError();
            c->part = NULL;
            n_split = 1;
        }
    }
    int chunk = (int)((cap + n_split - 1) / n_split);
    chunk = (chunk + ATT_KT - 1) / ATT_KT * ATT_KT;
    dim3 grid(decode ? tsr_cdiv(G, ATT_RB) : tsr_cdiv(b->n_tok * G, ATT_RB), gy, (unsigned)n_split);
    if (n_split == 1) {
        tsr_k_attn_generic<T><<<grid, ATT_THREADS, sm, c->stream>>>(out, q, kc, vc, a, chunk, NULL, NULL, n_rows);
        TSR_LAUNCH_CHECK();
        return;
    }
    float *po = c->part, *pml = c->part + (size_t)n_split * n_rows * hd;
    tsr_k_attn_generic<T><<<grid, ATT_THREADS, sm, c->stream>>>(out, q, kc, vc, a, chunk, po, pml, n_rows);
    TSR_LAUNCH_CHECK();
    int th = hd >= 128 ? 128 : (hd + 31) / 32 * 32;
    tsr_k_attn_reduce<T><<<(unsigned)n_rows, th, 0, c->stream>>>(out, po, pml, n_split, n_rows, hd);
    TSR_LAUNCH_CHECK();
}

// Raises the kernels' dynamic shared-memory limits once (at backend start: the attribute calls
// must not run while a step is being recorded as a graph).
template <typename T> static void tsr__attn_attrs(int optin) {
    CUDA_CHECK(cudaFuncSetAttribute(tsr_k_attn_generic<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    if constexpr (sizeof(T) == 2) {
        CUDA_CHECK(cudaFuncSetAttribute(tsr_k_attn_prefill_wmma<T, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)tsr_pf_smem<64>::bytes));
        CUDA_CHECK(cudaFuncSetAttribute(tsr_k_attn_prefill_wmma<T, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)tsr_pf_smem<128>::bytes));
    }
}

void tsr__cuda_attention_init(tsr_cuda_ctx *c) {
    int optin = (int)c->prop.sharedMemPerBlockOptin;
    TSR_ASSERT((size_t)optin >= tsr_pf_smem<128>::bytes);
    tsr__attn_attrs<__nv_bfloat16>(optin);
    tsr__attn_attrs<__half>(optin);
    tsr__attn_attrs<float>(optin);
}

void tsr__cuda_attention(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *k_cache,
                         const void *v_cache, const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b,
                         float scale) {
    TSR_ASSERT(n_head % kv->n_kv_head == 0);
    if (b->n_tok <= 0) return;
    tsr_attn_args a;
    a.q_start = b->q_start;
    a.ctx_len = b->ctx_len;
    a.positions = b->positions;
    a.block_tables = b->block_tables;
    a.max_blocks = b->max_blocks;
    a.block_len = kv->block_len;
    a.ld_q = ld_q;
    a.n_seq = (int)b->n_seq;
    a.n_head = (int)n_head;
    a.n_kv_head = (int)kv->n_kv_head;
    a.head_dim = (int)kv->head_dim;
    a.scale = scale;
    TSR_DISPATCH(be->dtype, tsr__attn_launch<T>(be, (T *)out, (const T *)q, (const T *)k_cache, (const T *)v_cache, a, b));
}
