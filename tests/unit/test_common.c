/* common/: status messages, fp16/bf16 conversions, file helpers. */
#include <string.h>

#include "common/fileutil.h"
#include "common/status.h"
#include "common/tensor.h"
#include "tests/test_util.h"

int main(void) {
    CHECK(tsr_errorf(TSR_ERR_FORMAT, "file %s: bad", "x.gguf") == TSR_ERR_FORMAT);
    CHECK(!strcmp(tsr_last_error(), "file x.gguf: bad"));
    tsr_error_wrap(TSR_ERR_FORMAT, "loading");
    CHECK(!strcmp(tsr_last_error(), "loading: file x.gguf: bad"));

    /* every f16 bit pattern that is finite round-trips through f32 */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if (((h >> 10) & 0x1f) == 0x1f) continue;
        if (tsr_f32_to_f16(tsr_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(tsr_f16_to_f32(0x3c00) == 1.0f);
    CHECK(tsr_f16_to_f32(0xc000) == -2.0f);
    CHECK(tsr_bf16_to_f32(tsr_f32_to_bf16(1.5f)) == 1.5f);
    CHECK(tsr_f32_to_bf16(1.00390625f) == 0x3f80); /* ties to even */
    CHECK(tsr_dtype_from_name("BF16") == TSR_BF16);
    CHECK(tsr_dtype_from_name("Q9") == -1);

    tsr_mmap m;
    CHECK(tsr_mmap_open("/nonexistent/file", &m) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), "/nonexistent/file") != NULL);
    char *j = tsr_path_join("a/", "b");
    CHECK(!strcmp(j, "a/b"));
    free(j);
    return tsr_test_finish();
}
