/* Micro-benchmark of the typed-weight CPU matmul (kernels/cpu/qmatmul.h); not run in CI.
 *   bench_qmatmul [seconds per case (0.2)] [impl: auto|portable|avx2|avx512vnni] [types: q4_0,q4_k,...]
 * For each weight type, a 576 x 1536 (SmolLM2's down projection) and a 4096 x 4096 matrix at
 * n_tok 1 and 8 on 1 and 2 threads: GB/s of weight bytes read and GFLOP/s (2 rows cols n_tok per
 * call), wall clock, beside OpenBLAS's f32 sgemm of the dequantized matrix on as many threads
 * (whose GB/s counts its f32 bytes); the best of 5 trials each.  Random blocks as in tests/unit/test_qmatmul.c.
 * INT4G runs in groups of 128 with zero points (AutoAWQ's default); its GB/s counts scales and zeros. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/tensor.h"
#include "common/wtype.h"
#include "kernels/cpu/qmatmul.h"
#include "kernels/cpu/threadpool.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd32() & 0xffffff) / (float)0x1000000; }
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Random bytes; each block's scales overwritten with small sane values.  The kernels' speed does
 * not depend on the values, only on the bytes being finite (no NaN/denormal slow paths). */
static uint8_t *rand_weights(tsr_wtype t, int64_t rows, int64_t cols, size_t *row_bytes) {
    if (tsr_wtype_row_bytes(t, cols, row_bytes) != TSR_OK) return NULL;
    const size_t n = *row_bytes * (size_t)rows, bb = tsr_wtype_block_bytes(t);
    uint8_t *w = malloc(n);
    if (!w) return NULL;
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd32();
    if (t == TSR_WTYPE_INT4G) return w;   /* scales and zeros: planes of their own (main) */
    for (size_t i = 0; i < n / bb; i++) {
        uint8_t *b = w + i * bb;
        const uint16_t h = tsr_f32_to_f16(frand(0.002f, 0.02f));
        const float d = frand(0.002f, 0.02f);
        switch (t) {
        case TSR_WTYPE_F32: memcpy(b, &d, 4); break;
        case TSR_WTYPE_F16: case TSR_WTYPE_Q4_0: case TSR_WTYPE_Q5_0: case TSR_WTYPE_Q8_0: memcpy(b, &h, 2); break;
        case TSR_WTYPE_BF16: { const uint16_t bh = tsr_f32_to_bf16(d); memcpy(b, &bh, 2); break; }
        case TSR_WTYPE_Q4_1: case TSR_WTYPE_Q5_1: case TSR_WTYPE_Q4_K: case TSR_WTYPE_Q5_K:
            memcpy(b, &h, 2), memcpy(b + 2, &h, 2); break;
        case TSR_WTYPE_Q2_K: memcpy(b + 80, &h, 2), memcpy(b + 82, &h, 2); break;
        case TSR_WTYPE_Q3_K: memcpy(b + 108, &h, 2); break;
        case TSR_WTYPE_Q6_K: memcpy(b + 208, &h, 2); break;
        case TSR_WTYPE_Q8_K: memcpy(b, &d, 4); break;
        default: break;
        }
    }
    return w;
}

static const tsr_wtype all_types[] = {
    TSR_WTYPE_F32,  TSR_WTYPE_F16,  TSR_WTYPE_BF16, TSR_WTYPE_Q4_0, TSR_WTYPE_Q4_1,
    TSR_WTYPE_Q5_0, TSR_WTYPE_Q5_1, TSR_WTYPE_Q8_0, TSR_WTYPE_Q2_K, TSR_WTYPE_Q3_K,
    TSR_WTYPE_Q4_K, TSR_WTYPE_Q5_K, TSR_WTYPE_Q6_K, TSR_WTYPE_Q8_K, TSR_WTYPE_INT4G,
};

static int type_wanted(const char *list, tsr_wtype t) {
    if (!list) return 1;
    const char *name = tsr_wtype_name(t);
    const size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncasecmp(p, name, n) == 0) return 1;
        p += len + (e ? 1 : 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    const double secs = argc > 1 ? atof(argv[1]) : 0.2;
    tsr_qmm_impl impl = TSR_QMM_AUTO;
    if (argc > 2) {
        for (int i = 0; i <= TSR_QMM_AVX512VNNI; i++)
            if (strcmp(argv[2], tsr_qmm_impl_name((tsr_qmm_impl)i)) == 0) impl = (tsr_qmm_impl)i;
    }
    const char *types = argc > 3 ? argv[3] : NULL;
    if (!tsr_qmm_impl_available(impl)) {
        fprintf(stderr, "bench_qmatmul: %s does not run on this CPU\n", tsr_qmm_impl_name(impl));
        return 1;
    }
    printf("impl %s (auto = %s), %.2f s per case, wall clock\n", tsr_qmm_impl_name(impl),
           tsr_qmm_impl_name(tsr_qmm_impl_best()), secs);
    printf("%-5s %11s %5s %3s | %8s %8s %8s | %12s %12s\n", "type", "rows x cols", "n_tok", "thr", "us/call", "GB/s",
           "GFLOP/s", "sgemm GB/s", "sgemm GFLOP/s");
    static const int64_t shapes[2][2] = {{576, 1536}, {4096, 4096}};
    tsr_cpu_pool *pools[2] = {tsr_cpu_pool_init(1), tsr_cpu_pool_init(2)};
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        const tsr_wtype t = all_types[ti];
        if (!type_wanted(types, t)) continue;
        for (int s = 0; s < 2; s++) {
            const int64_t rows = shapes[s][0], cols = shapes[s][1];
            size_t rb = 0;
            uint8_t *wd = rand_weights(t, rows, cols, &rb);
            float *wf = malloc(sizeof(float) * (size_t)(rows * cols)), *x = malloc(sizeof(float) * 8 * (size_t)cols);
            float *y = malloc(sizeof(float) * 8 * (size_t)rows);
            if (!wd || !wf || !x || !y) return 1;
            tsr_wtensor w;
            if (tsr_wtensor_init(&w, t, rows, cols, 128, wd) != TSR_OK) return 1;
            uint8_t *planes = NULL;
            if (t == TSR_WTYPE_INT4G) {
                const size_t ng = (size_t)(rows * (cols / 128));
                planes = malloc(3 * ng);
                for (size_t i = 0; i < ng; i++) {
                    const uint16_t h = tsr_f32_to_f16(frand(0.002f, 0.02f));
                    memcpy(planes + 2 * i, &h, 2), planes[2 * ng + i] = (uint8_t)(rnd32() % 16);
                }
                w.scales = planes, w.zeros = planes + 2 * ng;
            }
            if (tsr_wtensor_dequantize_rows(&w, 0, rows, wf) != TSR_OK) return 1;
            rb = tsr_wtensor_bytes(&w) / (size_t)rows;
            for (int64_t i = 0; i < 8 * cols; i++) x[i] = frand(-1, 1);
            void *work = malloc(tsr_qmatmul_work_size(t, 8, cols) + 1);
            for (int nt = 1; nt <= 8; nt += 7) {
                for (int th = 1; th <= 2; th++) {
                    /* best of 5 trials of secs / 5: the machines are shared */
                    double per = 1e30, bper = 1e30;
                    for (int trial = 0; trial < 5; trial++) {
                        int64_t reps = 0;
                        double t0 = now(), el;
                        do {
                            if (tsr_qmatmul(pools[th - 1], &w, x, nt, y, rows, work, impl) != TSR_OK) {
                                fprintf(stderr, "bench_qmatmul: %s\n", tsr_last_error());
                                return 1;
                            }
                            reps++;
                        } while ((el = now() - t0) < secs / 5);
                        if (el / (double)reps < per) per = el / (double)reps;
                        openblas_set_num_threads(th);
                        reps = 0, t0 = now();
                        do {
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, (int)rows, (int)cols, 1.0f, x, (int)cols,
                                        wf, (int)cols, 0.0f, y, (int)rows);
                            reps++;
                        } while ((el = now() - t0) < secs / 5);
                        if (el / (double)reps < bper) bper = el / (double)reps;
                    }
                    const double flop = 2.0 * (double)(rows * cols * nt);
                    printf("%-5s %5lldx%-5lld %5d %3d | %8.1f %8.2f %8.2f | %12.2f %12.2f\n", tsr_wtype_name(t),
                           (long long)rows, (long long)cols, nt, th, per * 1e6, (double)rb * (double)rows / per * 1e-9,
                           flop / per * 1e-9, 4.0 * (double)(rows * cols) / bper * 1e-9, flop / bper * 1e-9);
                    fflush(stdout);
                }
            }
            free(work), free(wd), free(wf), free(x), free(y), free(planes);
        }
    }
    tsr_cpu_pool_free(pools[0]);
    tsr_cpu_pool_free(pools[1]);
    return 0;
}
