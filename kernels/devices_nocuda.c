/* Device discovery when the CUDA backend is not built (see devices.h). */
#include "kernels/devices.h"

#ifndef TSR_HAVE_CUDA
int tsr_cuda_device_count(const char **why) {
    if (why) *why = "built without CUDA (-DTESSERA_CUDA=OFF or no nvcc)";
    return 0;
}
int tsr_cuda_device_info(int index, tsr_device_info *info) {
    (void)index;
    (void)info;
    return -1;
}
void tsr_cuda_versions(int *runtime, int *driver, int *cublas, int *nccl) {
    *runtime = *driver = *cublas = *nccl = 0;
}
#else
typedef int tsr__devices_nocuda_unused;
#endif
