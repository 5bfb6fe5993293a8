/* common/: status messages, fp16/bf16 conversions, file helpers, the environment knobs. */
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/knobs.h"
#include "common/status.h"
#include "common/tensor.h"
#include "tests/test_util.h"

/* a fake environment: NULL-terminated name, value pairs */
static const char *fake_env(const char *name, void *ctx) {
    for (const char **kv = ctx; kv[0]; kv += 2)
        if (!strcmp(kv[0], name)) return kv[1];
    return NULL;
}

static void test_knobs(void) {
    tsr_knobs k;
    char why[512];
    const char *none[] = {NULL};
    CHECK(tsr_knobs_parse(&k, fake_env, none, why, sizeof why) == 0 && why[0] == '\0');
    CHECK(k.log_level == 1 && k.threads == 0 && k.cuda_dtype == TSR_BF16 && k.comm_timeout_s == 5 &&
          k.nccl_timeout_s == 300 && !k.host_sampling && !k.profile && k.fault_inject[0] == '\0');
    CHECK(!k.cuda.no_gemv && k.cuda.gemv_max_tok == 2 && !k.cuda.no_fuse && !k.cuda.no_vec_norm &&
          !k.cuda.no_wmma && !k.cuda.no_graphs && k.cuda.decode_splits == 0);

    const char *good[] = {"TESSERA_LOG", "DEBUG", "TESSERA_THREADS", "3", "TESSERA_DTYPE", "fp16",
                          "TESSERA_COMM_TIMEOUT", "0.5", "TESSERA_NCCL_TIMEOUT", "60", "TESSERA_HOST_SAMPLING", "1",
                          "TESSERA_PROFILE", "yes", "TESSERA_FAULT_INJECT", "step_alloc:3@1",
                          "TESSERA_NO_GEMV", "true", "TESSERA_GEMV_MAX_TOK", "8", "TESSERA_NO_FUSE", "on",
                          "TESSERA_NO_VEC_NORM", "1", "TESSERA_NO_WMMA", "1", "TESSERA_NO_GRAPHS", "1",
                          "TESSERA_DECODE_SPLITS", "4", NULL};
    CHECK(tsr_knobs_parse(&k, fake_env, good, why, sizeof why) == 0);
    CHECK(k.log_level == 0 && k.threads == 3 && k.cuda_dtype == TSR_F16 && k.comm_timeout_s == 0.5 &&
          k.nccl_timeout_s == 60 && k.host_sampling && k.profile && !strcmp(k.fault_inject, "step_alloc:3@1"));
    CHECK(k.cuda.no_gemv && k.cuda.gemv_max_tok == 8 && k.cuda.no_fuse && k.cuda.no_vec_norm && k.cuda.no_wmma &&
          k.cuda.no_graphs && k.cuda.decode_splits == 4);
    const char *f32[] = {"TESSERA_DTYPE", "float32", "TESSERA_NO_GRAPHS", "0", "TESSERA_GEMV_MAX_TOK", "0", NULL};
    CHECK(tsr_knobs_parse(&k, fake_env, f32, why, sizeof why) == 0);
    CHECK(k.cuda_dtype == TSR_F32 && !k.cuda.no_graphs && k.cuda.gemv_max_tok == 0);

    /* each bad value keeps its default and is named; an empty value is unset */
    const char *bad[] = {"TESSERA_LOG", "loud", "TESSERA_THREADS", "4x", "TESSERA_DTYPE", "f8",
                         "TESSERA_COMM_TIMEOUT", "0", "TESSERA_NCCL_TIMEOUT", "-1", "TESSERA_NO_WMMA", "maybe",
                         "TESSERA_GEMV_MAX_TOK", "9", "TESSERA_DECODE_SPLITS", "0", "TESSERA_NO_GEMV", "",
                         NULL};
    CHECK(tsr_knobs_parse(&k, fake_env, bad, why, sizeof why) == 8);
    CHECK(k.log_level == 1 && k.threads == 0 && k.cuda_dtype == TSR_BF16 && k.comm_timeout_s == 5 &&
          k.nccl_timeout_s == 300 && !k.cuda.no_wmma && k.cuda.gemv_max_tok == 2 && k.cuda.decode_splits == 0 &&
          !k.cuda.no_gemv);
    CHECK_MSG(strstr(why, "TESSERA_GEMV_MAX_TOK=9: expected an integer from 0 to 8") &&
                  strstr(why, "TESSERA_DTYPE=f8: expected one of bf16") && strstr(why, "TESSERA_LOG=loud") &&
                  !strstr(why, "TESSERA_NO_GEMV"),
              "%s", why);
    char small[16];
    CHECK(tsr_knobs_parse(&k, fake_env, bad, small, sizeof small) == 8 && strlen(small) < sizeof small);

    /* the process's knobs: read from the environment once */
    setenv("TESSERA_DECODE_SPLITS", "7", 1);
    const tsr_knobs *e = tsr_knobs_get();
    setenv("TESSERA_DECODE_SPLITS", "9", 1);
    CHECK(e->cuda.decode_splits == 7 && tsr_knobs_get() == e && e->cuda.decode_splits == 7);

    /* README's "Environment knobs" lists every row of the table */
    char *src = tsr_path_join(tsr_test_source_dir(), "common/knobs.c");
    char *readme = tsr_path_join(tsr_test_source_dir(), "README.md");
    char *table = NULL, *doc = NULL;
    size_t len;
    CHECK(tsr_read_file(src, 1 << 20, &table, &len) == TSR_OK && tsr_read_file(readme, 1 << 20, &doc, &len) == TSR_OK);
    int rows = 0;
    for (const char *p = table; p && doc && (p = strstr(p, "{\"TESSERA_")) != NULL; p++) {
        char name[64];
        CHECK(sscanf(p + 2, "%63[A-Z_]", name) == 1);
        CHECK_MSG(strstr(doc, name) != NULL, "README.md does not list %s", name);
        rows++;
    }
    CHECK(rows == 16);
    free(table), free(doc), free(src), free(readme);
}

int main(void) {
    test_knobs();
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
