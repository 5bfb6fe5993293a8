/* qmatmul's AVX2 kernels (AVX2 + FMA + F16C, every x86-64 CPU since Haswell / Zen 1): the
 * shared source in qmatmul_simd.inc compiled for that target; chosen at run time. */
#include "kernels/cpu/qmatmul_impl.h"

#if defined(__x86_64__)
#define TSR_SIMD_TARGET "avx2,fma,f16c"
#define TSR_SIMD_VNNI 0
#define TSR_SIMD_TABLE tsr__qmm_dot_avx2
#define TSR_SIMD_I4_TABLE tsr__qmm_i4_avx2
#include "kernels/cpu/qmatmul_simd.inc"
#else
tsr__qmm_dotn_fn tsr__qmm_dot_avx2(tsr_wtype t) {
    (void)t;
    return NULL;
}
tsr__qmm_i4_fn tsr__qmm_i4_avx2(void) { return NULL; }
#endif
