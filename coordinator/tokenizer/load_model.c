/* Loading the tokenizer of a model path as users give it: a GGUF file, a tokenizer.json, an HF
 * directory, or a workspace (which keeps a GGUF's tokenizer as metadata-only tokenizer.gguf). */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/gguf.h"

tsr_status tsr_tokenizer_load_model(const char *model_path, tsr_tokenizer **out) {
    *out = NULL;
    if (!model_path) return tsr_errorf(TSR_ERR_INVALID_ARG, "tokenizer: no model path");
    if (tsr_path_is_dir(model_path)) {
        char *p = tsr_path_join(model_path, "tokenizer.json");
        if (!p) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        if (!tsr_path_exists(p)) {
            /* a workspace converted from a GGUF keeps the tokenizer as metadata-only GGUF */
            char *g = tsr_path_join(model_path, "tokenizer.gguf");
            if (g && tsr_path_exists(g)) {
                free(p);
                tsr_status st = tsr_tokenizer_load_model(g, out);
                free(g);
                return st;
            }
            free(g);
            tsr_status st = tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no tokenizer.json (or tokenizer.gguf) in this model directory", model_path);
            free(p);
            return st;
        }
        tsr_status st = tsr_tokenizer_load_hf(p, out);
        free(p);
        return st;
    }
    if (!tsr_path_exists(model_path)) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no such file or directory", model_path);
    size_t n = strlen(model_path);
    if (n >= 5 && !strcmp(model_path + n - 5, ".json")) return tsr_tokenizer_load_hf(model_path, out);
    tsr_gguf *g = NULL;
    TSR_TRY(tsr_gguf_open(model_path, &g));
    tsr_status st = tsr_tokenizer_load_gguf(g, out);
    tsr_gguf_close(g);
    return st;
}
