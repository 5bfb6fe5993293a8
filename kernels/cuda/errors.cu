// The CUDA backend's error record and host waits, shared by every kernel file (common.cuh):
// what failed since the last take_error (the first error sticks), and waiting for the stream
// with the backend's deadline so a stuck collective becomes TSR_ERR_COMM instead of a hang.
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cuda/common.cuh"

void tsr__cuda_set_error(tsr_cuda_ctx *c, tsr_status st, const char *what) {
    if (c->err != TSR_OK) return;
    c->err = st;
    snprintf(c->err_msg, sizeof c->err_msg, "%s", what);
}

bool tsr__cuda_wait(tsr_cuda_ctx *c, const char *what) {
    if (c->wait_timeout_s <= 0) {
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        return true;
    }
    if (c->err == TSR_ERR_COMM) return false;  // a stream that timed out once stays stuck
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(c->stream);
        if (e == cudaSuccess) return true;
        if (e != cudaErrorNotReady) CUDA_CHECK(e);  // a device fault: an invariant broke
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (el > c->wait_timeout_s) {
            char m[200];
            snprintf(m, sizeof m, "the GPU stream did not finish %s within %.1f s (a collective waiting on a rank "
                     "that stopped answering?)", what, c->wait_timeout_s);
            tsr__cuda_set_error(c, TSR_ERR_COMM, m);
            return false;
        }
        if (spins > 1000) usleep(50);
    }
}
