/* safetensors reader and writer: writer -> reader round trips for every dtype and metadata,
 * sharded checkpoints (index.json, a directory, a directory without an index), and a list of
 * hostile headers (huge length, bad JSON, offsets past the end, wrong dtype sizes, overlaps,
 * duplicates, truncation at every length, flipped bytes) that must each be TSR_ERR_FORMAT
 * naming the file, never a crash (also run under ASan + UBSan). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "tests/test_util.h"

static void test_round_trip(const char *dir) {
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t f16[4], bf16[4];
    for (int i = 0; i < 4; i++) {
        f16[i] = tsr_f32_to_f16((float)i - 1.5f);
        bf16[i] = tsr_f32_to_bf16((float)i * 3);
    }
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[2] = {0, 255};
    int16_t i16[2] = {-300, 300};
    int32_t i32[2] = {-70000, 70000};
    int64_t i64[2] = {-(1ll << 40), 5};
    double f64[1] = {3.25};
    uint8_t bl[3] = {1, 0, 1};
    tsr_st_write_tensor ts[] = {
        {"model.layers.0.w", TSR_F32, 2, {2, 3}, f32},
        {"f16", TSR_F16, 1, {4}, f16},
        {"bf16", TSR_BF16, 2, {2, 2}, bf16},
        {"i8", TSR_I8, 1, {3}, i8},
        {"u8", TSR_U8, 1, {2}, u8},
        {"i16", TSR_I16, 1, {2}, i16},
        {"i32", TSR_I32, 1, {2}, i32},
        {"i64", TSR_I64, 1, {2}, i64},
        {"scalar.f64", TSR_F64, 0, {0}, f64},
        {"bool", TSR_BOOL, 3, {1, 3, 1}, bl},
        {"empty", TSR_F32, 2, {0, 4}, NULL},
        {"name \"with\" quotes\\", TSR_U8, 1, {1}, u8},
    };
    const int n = (int)(sizeof ts / sizeof ts[0]);
    const char *meta[] = {"format", "pt", "tessera", "v\"1\"\n", NULL};
    char *path = tsr_path_join(dir, "rt.safetensors");
    CHECK_MSG(tsr_safetensors_write(path, ts, n, meta) == TSR_OK, "%s", tsr_last_error());
    tsr_safetensors *st;
    tsr_status rc = tsr_safetensors_open(path, &st);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    if (rc == TSR_OK) {
        CHECK(tsr_safetensors_count(st) == n);
        CHECK(tsr_safetensors_n_files(st) == 1);
        const char *v = tsr_safetensors_metadata(st, "format");
        CHECK(v && !strcmp(v, "pt"));
        v = tsr_safetensors_metadata(st, "tessera");
        CHECK(v && !strcmp(v, "v\"1\"\n"));
        CHECK(tsr_safetensors_metadata(st, "nope") == NULL);
        CHECK(tsr_safetensors_n_metadata(st) == 2);
        for (int i = 0; i < n; i++) {
            const tsr_st_tensor *t = tsr_safetensors_find(st, ts[i].name);
            CHECK_MSG(t != NULL, "missing %s", ts[i].name);
            if (!t) continue;
            CHECK(t->dtype == ts[i].dtype && t->n_dims == ts[i].n_dims);
            size_t nb = tsr_dtype_size(ts[i].dtype);
            for (int d = 0; d < t->n_dims; d++) {
                CHECK(t->shape[d] == ts[i].shape[d]);
                nb *= (size_t)ts[i].shape[d];
            }
            CHECK(t->nbytes == nb);
            if (nb) CHECK(!memcmp(t->data, ts[i].data, nb));
        }
        /* the data section begins 8-byte aligned */
        CHECK(((uintptr_t)tsr_safetensors_find(st, "model.layers.0.w")->data) % 8 == 0);
        CHECK(tsr_safetensors_find(st, "missing") == NULL);
        tsr_safetensors_close(st);
    }
    /* bad writer input */
    tsr_st_write_tensor bad[] = {{"x", TSR_F32, 1, {-1}, f32}};
    CHECK(tsr_safetensors_write(path, bad, 1, NULL) == TSR_ERR_INVALID_ARG);
    tsr_st_write_tensor bad2[] = {{"x", TSR_F32, 1, {2}, NULL}};
    CHECK(tsr_safetensors_write(path, bad2, 1, NULL) == TSR_ERR_INVALID_ARG);
    char *nodir = tsr_path_join(dir, "no/such/dir/x.safetensors");
    CHECK(tsr_safetensors_write(nodir, ts, 1, NULL) == TSR_ERR_IO);
    free(nodir);
    free(path);
}

static void write_shard(const char *dir, const char *name, const char *tname, float base) {
    float v[4] = {base, base + 1, base + 2, base + 3};
    tsr_st_write_tensor t = {tname, TSR_F32, 2, {2, 2}, v};
    char *p = tsr_path_join(dir, name);
    CHECK(tsr_safetensors_write(p, &t, 1, NULL) == TSR_OK);
    free(p);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = tsr_path_join(dir, name);
    CHECK(tsr_write_file(p, text, strlen(text)) == TSR_OK);
    free(p);
}

static void test_sharded(const char *base) {
    char *dir = tsr_path_join(base, "sharded");
    CHECK(mkdir(dir, 0755) == 0);
    write_shard(dir, "model-00001-of-00002.safetensors", "a", 0);
    write_shard(dir, "model-00002-of-00002.safetensors", "b", 10);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\": {\"total_size\": 32}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
               "\"b\": \"model-00002-of-00002.safetensors\"}}");
    tsr_safetensors *st;
    /* through the directory and through the index itself */
    for (int k = 0; k < 2; k++) {
        char *p = k ? tsr_path_join(dir, "model.safetensors.index.json") : strdup(dir);
        tsr_status rc = tsr_safetensors_open(p, &st);
        CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
        if (rc == TSR_OK) {
            CHECK(tsr_safetensors_count(st) == 2 && tsr_safetensors_n_files(st) == 2);
            const tsr_st_tensor *b = tsr_safetensors_find(st, "b");
            CHECK(b && b->file_index == 1 && ((const float *)b->data)[3] == 13.0f);
            CHECK(strstr(tsr_safetensors_file_path(st, b->file_index), "00002") != NULL);
            tsr_safetensors_close(st);
        }
        free(p);
    }
    /* the index names a tensor its shard does not hold */
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\"}}");
    CHECK(tsr_safetensors_open(dir, &st) == TSR_ERR_FORMAT);
    CHECK(strstr(tsr_last_error(), "'b'") != NULL);
    /* the index names a shard outside the directory */
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    CHECK(tsr_safetensors_open(dir, &st) == TSR_ERR_FORMAT);
    /* a missing shard */
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"gone.safetensors\"}}");
    CHECK(tsr_safetensors_open(dir, &st) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), "gone.safetensors") != NULL);
    /* not an index */
    write_text(dir, "model.safetensors.index.json", "[1, 2]");
    CHECK(tsr_safetensors_open(dir, &st) == TSR_ERR_FORMAT);
    CHECK(strstr(tsr_last_error(), "index.json") != NULL);
    /* no index: every *.safetensors file, sorted */
    char *ip = tsr_path_join(dir, "model.safetensors.index.json");
    unlink(ip);
    free(ip);
    CHECK(tsr_safetensors_open(dir, &st) == TSR_OK);
    if (st) {
        CHECK(tsr_safetensors_count(st) == 2);
        tsr_safetensors_close(st);
    }
    /* the same tensor in two shards */
    write_shard(dir, "model-00003-of-00003.safetensors", "a", 20);
    CHECK(tsr_safetensors_open(dir, &st) == TSR_ERR_FORMAT);
    CHECK(strstr(tsr_last_error(), "twice") != NULL);
    /* model.safetensors wins over the others */
    write_shard(dir, "model.safetensors", "only", 5);
    CHECK(tsr_safetensors_open(dir, &st) == TSR_OK);
    if (st) {
        CHECK(tsr_safetensors_count(st) == 1 && tsr_safetensors_find(st, "only"));
        tsr_safetensors_close(st);
    }
    char *empty = tsr_path_join(base, "empty");
    CHECK(mkdir(empty, 0755) == 0);
    CHECK(tsr_safetensors_open(empty, &st) == TSR_ERR_NOT_FOUND);
    free(empty);
    free(dir);
}

/* A file from a header string and a data section of n zero bytes. */
static uint8_t *make(const char *header, size_t data_len, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *p = calloc(1, *len);
    uint64_t h = hl;
    memcpy(p, &h, 8);
    memcpy(p + 8, header, hl);
    return p;
}

static void expect_bad(const uint8_t *p, size_t n, const char *what, const char *expect) {
    tsr_safetensors *st = NULL;
    tsr_status rc = tsr_safetensors_open_memory(p, n, "evil.safetensors", &st);
    CHECK_MSG(rc == TSR_ERR_FORMAT, "%s: got %s", what, tsr_status_str(rc));
    if (rc == TSR_OK) {
        tsr_safetensors_close(st);
        return;
    }
    CHECK_MSG(strstr(tsr_last_error(), "evil.safetensors") != NULL, "%s: %s", what, tsr_last_error());
    if (expect) CHECK_MSG(strstr(tsr_last_error(), expect) != NULL, "%s: expected '%s' in: %s", what, expect, tsr_last_error());
}

static void expect_bad_header(const char *header, size_t data_len, const char *what, const char *expect) {
    size_t n;
    uint8_t *p = make(header, data_len, &n);
    expect_bad(p, n, what, expect);
    free(p);
}

static void test_hostile(void) {
    size_t n;
    /* the baseline is valid */
    uint8_t *p = make("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[8,12]},"
                      "\"__metadata__\":{\"k\":\"v\"}}   ",
                      12, &n);
    tsr_safetensors *st;
    CHECK_MSG(tsr_safetensors_open_memory(p, n, "ok.safetensors", &st) == TSR_OK, "%s", tsr_last_error());
    if (st) tsr_safetensors_close(st);
    /* truncation at every length */
    for (size_t k = 0; k < n; k++) expect_bad(p, k, "truncated", NULL);
    /* every header byte flipped: must not crash; whatever opens must be in bounds */
    for (size_t at = 0; at < n - 12; at++) {
        for (int b = 0; b < 3; b++) {
            uint8_t *q = malloc(n);
            memcpy(q, p, n);
            q[at] ^= (uint8_t)(b == 0 ? 0x01 : b == 1 ? 0x80 : 0xff);
            st = NULL;
            tsr_status rc = tsr_safetensors_open_memory(q, n, "flip.safetensors", &st);
            CHECK(rc == TSR_OK || rc == TSR_ERR_FORMAT || rc == TSR_ERR_UNSUPPORTED);
            if (rc == TSR_OK) {
                for (int64_t i = 0; i < tsr_safetensors_count(st); i++) {
                    const tsr_st_tensor *t = tsr_safetensors_at(st, i);
                    CHECK((const uint8_t *)t->data >= q && (const uint8_t *)t->data + t->nbytes <= q + n);
                }
                tsr_safetensors_close(st);
            } else {
                CHECK(strstr(tsr_last_error(), "flip.safetensors") != NULL);
            }
            free(q);
        }
    }
    /* header length fields */
    uint64_t h = UINT64_MAX;
    memcpy(p, &h, 8);
    expect_bad(p, n, "header length 2^64-1", "cap");
    h = 200u << 20;
    memcpy(p, &h, 8);
    expect_bad(p, n, "header length 200 MB", "cap");
    h = n;
    memcpy(p, &h, 8);
    expect_bad(p, n, "header longer than the file", "truncated");
    free(p);

    expect_bad_header("[1,2]", 0, "top-level array", "JSON object");
    expect_bad_header("{\"a\":", 0, "unterminated JSON", "JSON");
    expect_bad_header("{\"a\":{}} x", 0, "trailing garbage", NULL);
    expect_bad_header("{\"a\":5}", 0, "entry not an object", "not an object");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "no data_offsets", "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype", "dtype");
    expect_bad_header("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "numeric dtype", NULL);
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "negative dim", "shape");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "fractional dim", "shape");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "string dim", "shape");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dims",
                      "dimensions");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}",
                      4, "shape overflow", "overflow");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "dim 1e300", "shape");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,400]}}", 4, "offset past the end",
                      "past the end");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551615,4]}}", 4,
                      "offset 2^64", "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "begin > end",
                      "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "one offset", "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "three offsets",
                      "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "F32 x 2 in 4 bytes",
                      "span");
    expect_bad_header("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "F16 x 2 in 8 bytes",
                      "span");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "overlap", "overlap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      8, "same range", "overlap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "duplicate name", "twice");
    expect_bad_header("{\"__metadata__\":{\"k\":1}}", 0, "metadata value not a string", "__metadata__");
    expect_bad_header("{\"__metadata__\":[1]}", 0, "metadata not an object", "__metadata__");
    expect_bad_header("{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\",\"c\":\"3\"}}", 0,
                      "two metadata objects", "twice");
    /* deep nesting is refused by the JSON parser's limit, not by the stack */
    {
        char *deep = malloc(20002);
        deep[0] = '{';
        memcpy(deep + 1, "\"a\":", 4);
        size_t k = 5;
        for (int i = 0; i < 5000; i++) deep[k++] = '[';
        for (int i = 0; i < 5000; i++) deep[k++] = ']';
        deep[k++] = '}';
        deep[k] = 0;
        expect_bad_header(deep, 0, "deeply nested", NULL);
        free(deep);
    }
    /* empty file, short file */
    uint8_t z[7] = {0};
    expect_bad(z, 0, "empty", "not a safetensors file");
    expect_bad(z, 7, "7 bytes", "not a safetensors file");
    /* an empty header object is a valid file with no tensors */
    size_t en;
    uint8_t *e = make("{}      ", 0, &en);
    CHECK(tsr_safetensors_open_memory(e, en, "empty.safetensors", &st) == TSR_OK);
    if (st) {
        CHECK(tsr_safetensors_count(st) == 0 && tsr_safetensors_find(st, "x") == NULL);
        tsr_safetensors_close(st);
    }
    free(e);
}

static void test_files(const char *dir) {
    char *p = tsr_path_join(dir, "bad.safetensors");
    uint64_t h = 1ull << 50;
    uint8_t buf[16] = {0};
    memcpy(buf, &h, 8);
    CHECK(tsr_write_file(p, buf, sizeof buf) == TSR_OK);
    tsr_safetensors *st;
    CHECK(tsr_safetensors_open(p, &st) == TSR_ERR_FORMAT);
    CHECK(strstr(tsr_last_error(), p) != NULL);
    unlink(p);
    CHECK(tsr_safetensors_open(p, &st) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), p) != NULL);
    free(p);
}

int main(void) {
    char *dir = tsr_test_tmpdir();
    TSR_ASSERT(dir);
    test_round_trip(dir);
    test_sharded(dir);
    test_hostile();
    test_files(dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
    return tsr_test_finish();
}
