/* libFuzzer harness for the safetensors reader (ci/fuzz.sh builds and runs it): any input must
 * open cleanly or fail with a status; whatever opens must have every tensor inside the input
 * with a byte length that matches its dtype and shape. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr_safetensors *st = NULL;
    if (tsr_safetensors_open_memory(data, size, "fuzz.safetensors", &st) != TSR_OK) return 0;
    for (int64_t i = 0; i < tsr_safetensors_count(st); i++) {
        const tsr_st_tensor *t = tsr_safetensors_at(st, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) abort();
        size_t n = tsr_dtype_size(t->dtype);
        for (int d = 0; d < t->n_dims; d++) n *= (size_t)t->shape[d];
        if (n != t->nbytes) abort();
        if (tsr_safetensors_find(st, t->name) != t) abort();
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < t->nbytes; k++) sink ^= p[k];
        (void)sink;
    }
    const char *k, *v;
    for (int64_t i = 0; tsr_safetensors_metadata_at(st, i, &k, &v); i++)
        if (tsr_safetensors_metadata(st, k) == NULL) abort();
    tsr_safetensors_close(st);
    return 0;
}
