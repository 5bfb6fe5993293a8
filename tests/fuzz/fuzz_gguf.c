/* libFuzzer harness for the GGUF reader (ci/fuzz.sh builds and runs it): any input must open
 * cleanly or fail with a status, and whatever opens must be safe to walk, look up, derive a
 * model config from and dequantize. */
#include <stdint.h>
#include <stdlib.h>

#include "common/gguf.h"
#include "common/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr_gguf *g = NULL;
    if (tsr_gguf_open_memory(data, size, "fuzz.gguf", &g) != TSR_OK) return 0;
    for (int64_t i = 0; i < tsr_gguf_n_kv(g); i++) {
        const tsr_gguf_kv *kv = tsr_gguf_kv_at(g, i);
        int64_t v;
        double f;
        if (kv->type == TSR_GGUF_ARRAY && kv->arr_n) {
            tsr_gguf_arr_get_i64(kv, kv->arr_n - 1, &v);
            tsr_gguf_arr_get_f64(kv, 0, &f);
        }
    }
    char *s = tsr_gguf_get_str(g, "general.architecture");
    free(s);
    tsr_model_config cfg;
    tsr_model_config_from_gguf(g, &cfg);
    for (int64_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
        if (tsr_gguf_find_tensor(g, t->cname) == NULL) abort(); /* names are unique and findable */
        int64_t n = tsr_gguf_tensor_numel(t);
        if (n > (1 << 16)) continue;
        float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
        if (!x) continue;
        tsr_gguf_tensor_to_f32(t, x);
        if (t->n_dims >= 2 && t->ne[1] > 0) tsr_gguf_tensor_rows_to_f32(t, t->ne[1] - 1, 1, x);
        free(x);
    }
    tsr_gguf_close(g);
    return 0;
}
