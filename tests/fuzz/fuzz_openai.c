/* libFuzzer harness for the OpenAI request parser (coordinator/frontend/openai.c), run by
 * ci/fuzz.sh: the first byte picks chat or completions, the rest is the request body as the
 * server hands it over (checked to be UTF-8 first, in an exact-size buffer so a read past the
 * body is caught).  Any body must give params that fill an engine request, or a 400 naming
 * the problem; never a crash, a leak or an undefined cast. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/fe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    tsr__fe_kind kind = (data[0] & 1) ? TSR__FE_COMPLETION : TSR__FE_CHAT;
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 1, len);
    if (!tsr__fe_utf8_valid(body, len)) {
        char *clean = tsr__fe_utf8_sanitize(body, len);   /* also fuzzes the sanitizer */
        if (!clean || !tsr__fe_utf8_valid(clean, strlen(clean))) abort();
        free(clean);
        free(body);
        return 0;
    }
    tsr__fe_params p;
    tsr__fe_error err;
    if (tsr__fe_parse(kind, body, len, &p, &err)) {
        for (int choice = 0; choice < p.n; choice++) {
            tsr_engine_request r;
            tsr__fe_to_engine(&p, choice, &r);
        }
        tsr__fe_params_free(&p);
    } else {
        if (err.status < 400 || err.status > 599 || !err.message[0]) abort();
        char *j = tsr__fe_error_json(&err);
        if (!j) abort();
        free(j);
    }
    free(body);
    return 0;
}
