/* The generated family of device check macros (DESIGN.md, errors tier 3): every CUDA, cuBLAS
 * and NCCL call goes through one of these; a failure prints the call, the library's message
 * and file:line, then aborts (device errors are not recoverable per request).  TSR_LAUNCH_CHECK
 * follows every kernel launch. */
#ifndef TSR_CUDA_CHECK_H
#define TSR_CUDA_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define TSR__DEVICE_CHECK(lib, expr, ok, errstr)                                            \
    do {                                                                                    \
        __typeof__(expr) tsr__r = (expr);                                                   \
        if (tsr__r != (ok)) {                                                               \
            fprintf(stderr, "tessera: %s error %d (%s) in %s at %s:%d\n", lib, (int)tsr__r, \
                    errstr(tsr__r), #expr, __FILE__, __LINE__);                             \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

#define CUDA_CHECK(expr) TSR__DEVICE_CHECK("CUDA", expr, cudaSuccess, cudaGetErrorString)
#define CUBLAS_CHECK(expr) TSR__DEVICE_CHECK("cuBLAS", expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)
#define NCCL_CHECK(expr) TSR__DEVICE_CHECK("NCCL", expr, ncclSuccess, ncclGetErrorString)
#define TSR_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#endif
