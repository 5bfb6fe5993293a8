/* Which accelerators this process can see (for `tessera env`, device selection by local
 * rank, and the default backend choice: the GPU when there is one, the CPU otherwise). */
#ifndef TSR_DEVICES_H
#define TSR_DEVICES_H

#include <stddef.h>
#include <stdint.h>

typedef struct tsr_device_info {
    char name[256];
    int cc_major, cc_minor;
    size_t total_mem, free_mem;
    int multiprocessors;
    char pci_bus_id[32];
} tsr_device_info;

/* 0 when built without CUDA or when no driver/device is present; *why (may be NULL) says
 * which. */
int tsr_cuda_device_count(const char **why);
int tsr_cuda_device_info(int index, tsr_device_info *info);  /* 0 ok, -1 error */
/* Versions: CUDA runtime and driver (e.g. 13000), cuBLAS, NCCL; 0 when absent. */
void tsr_cuda_versions(int *runtime, int *driver, int *cublas, int *nccl);

#endif
