// Device discovery on the CUDA backend (see kernels/devices.h).  Runs on machines without a
// driver too: then it reports why no device is seen instead of failing.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "kernels/devices.h"
}

extern "C" int tsr_cuda_device_count(const char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        cudaGetLastError();  // clear the sticky-free error so later queries start clean
        return 0;
    }
    if (n == 0 && why) *why = "no CUDA devices";
    return n;
}

extern "C" int tsr_cuda_device_info(int index, tsr_device_info *info) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, index) != cudaSuccess) return -1;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->total_mem = p.totalGlobalMem;
    info->multiprocessors = p.multiProcessorCount;
    cudaDeviceGetPCIBusId(info->pci_bus_id, (int)sizeof info->pci_bus_id, index);
    int prev = 0;
    cudaGetDevice(&prev);
    if (cudaSetDevice(index) == cudaSuccess) {
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) info->free_mem = fr;
        cudaSetDevice(prev);
    }
    return 0;
}

extern "C" void tsr_cuda_versions(int *runtime, int *driver, int *cublas, int *nccl) {
    *runtime = *driver = *cublas = *nccl = 0;
    cudaRuntimeGetVersion(runtime);
    cudaDriverGetVersion(driver);
    *cublas = CUBLAS_VER_MAJOR * 10000 + CUBLAS_VER_MINOR * 100 + CUBLAS_VER_PATCH;
    ncclGetVersion(nccl);
}
