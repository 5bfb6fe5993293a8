/* qmatmul's AVX-512 VNNI kernels: qmatmul_simd.inc with vpdpbusd (u8 x s8 -> s32 in one
 * instruction, on 256-bit vectors via AVX-512VL) instead of AVX2's vpmaddubsw + vpmaddwd;
 * chosen at run time where the CPU has it (Ice Lake / Sapphire Rapids, Zen 4). */
#include "kernels/cpu/qmatmul_impl.h"

#if defined(__x86_64__)
#define TSR_SIMD_TARGET "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"
#define TSR_SIMD_VNNI 1
#define TSR_SIMD_TABLE tsr__qmm_dot_vnni
#define TSR_SIMD_I4_TABLE tsr__qmm_i4_vnni
#include "kernels/cpu/qmatmul_simd.inc"
#else
tsr__qmm_dotn_fn tsr__qmm_dot_vnni(tsr_wtype t) {
    (void)t;
    return NULL;
}
tsr__qmm_i4_fn tsr__qmm_i4_vnni(void) { return NULL; }
#endif
