/* GGUF reader: a small valid file built here (every metadata type, arrays of strings, several
 * tensor types, a non-default alignment) is read back exactly; then a list of mutations
 * (truncation at every length, every header byte flipped, huge counts / lengths / offsets,
 * bad magic / version / n_dims / types, overlaps, duplicates) must each give TSR_ERR_FORMAT
 * naming the file, never a crash (this test also runs under ASan + UBSan).  Last, the real
 * default model opens fast with the expected directory and config. */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/model_config.h"
#include "common/tensor.h"
#include "tests/test_util.h"

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        TSR_ASSERT(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_key(buf *b, const char *k, uint32_t type) {
    put_str(b, k);
    put_u32(b, type);
}
static void set_u32(buf *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static void set_u64(buf *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

/* Where the fields the mutations aim at sit in the built file. */
typedef struct {
    size_t version, n_tensors, n_kv, key0_len, str_val_len, arr_str_n, arr_i32_n, arr_type, vtype_u8;
    size_t align_val, align_type;
    size_t t_ndims[8], t_ne0[8], t_type[8], t_off[8], t_name_len[8];
    uint64_t t_rel[8];
    size_t data_start;
    int n_t;
} layout;

#define ALIGN 64

/* Tensors: f32 [2][4], f16 [32], q8_0 [2][64], q4_0 [3][32], q4_1 [2][32], bf16 [8]. */
static void build(buf *b, layout *L, uint32_t version) {
    memset(L, 0, sizeof *L);
    b->n = 0;
    put(b, "GGUF", 4);
    L->version = b->n;
    put_u32(b, version);
    L->n_tensors = b->n;
    put_u64(b, 6);
    L->n_kv = b->n;
    put_u64(b, 17);
    L->key0_len = b->n;
    put_key(b, "general.architecture", TSR_GGUF_STRING);
    L->str_val_len = b->n;
    put_str(b, "llama");
    L->vtype_u8 = b->n + 8 + strlen("t.u8");
    put_key(b, "t.u8", TSR_GGUF_UINT8); put_u8(b, 200);
    put_key(b, "t.i8", TSR_GGUF_INT8); put_u8(b, (uint8_t)-5);
    put_key(b, "t.u16", TSR_GGUF_UINT16); { uint16_t v = 60000; put(b, &v, 2); }
    put_key(b, "t.i16", TSR_GGUF_INT16); { int16_t v = -30000; put(b, &v, 2); }
    put_key(b, "t.u32", TSR_GGUF_UINT32); put_u32(b, 4000000000u);
    put_key(b, "t.i32", TSR_GGUF_INT32); { int32_t v = -2000000000; put(b, &v, 4); }
    put_key(b, "t.f32", TSR_GGUF_FLOAT32); { float v = 1.5f; put(b, &v, 4); }
    put_key(b, "t.bool", TSR_GGUF_BOOL); put_u8(b, 1);
    put_key(b, "t.u64", TSR_GGUF_UINT64); put_u64(b, 1ull << 40);
    put_key(b, "t.i64", TSR_GGUF_INT64); put_u64(b, (uint64_t)-7);
    put_key(b, "t.f64", TSR_GGUF_FLOAT64); { double v = -2.25; put(b, &v, 8); }
    put_key(b, "t.arr_str", TSR_GGUF_ARRAY);
    L->arr_type = b->n;
    put_u32(b, TSR_GGUF_STRING);
    L->arr_str_n = b->n;
    put_u64(b, 3);
    put_str(b, "a"); put_str(b, ""); put_str(b, "<|im_end|>");
    put_key(b, "t.arr_i32", TSR_GGUF_ARRAY);
    put_u32(b, TSR_GGUF_INT32);
    L->arr_i32_n = b->n;
    put_u64(b, 4);
    for (int32_t i = 0; i < 4; i++) put_u32(b, (uint32_t)(i * 10 - 5));
    put_key(b, "t.arr_f32", TSR_GGUF_ARRAY);
    put_u32(b, TSR_GGUF_FLOAT32);
    put_u64(b, 2);
    { float v[2] = {0.25f, -8.0f}; put(b, v, 8); }
    put_key(b, "t.arr_empty", TSR_GGUF_ARRAY);
    put_u32(b, TSR_GGUF_UINT8);
    put_u64(b, 0);
    L->align_type = b->n + 8 + strlen("general.alignment");
    put_key(b, "general.alignment", TSR_GGUF_UINT32);
    L->align_val = b->n;
    put_u32(b, ALIGN);

    struct { const char *name; int nd; int64_t ne[2]; uint32_t type; uint64_t bytes; } ts[] = {
        {"f32", 2, {4, 2}, TSR_GGML_F32, 32},   {"f16", 1, {32, 1}, TSR_GGML_F16, 64},
        {"q8", 2, {64, 2}, TSR_GGML_Q8_0, 4 * 34}, {"q40", 2, {32, 3}, TSR_GGML_Q4_0, 3 * 18},
        {"q41", 2, {32, 2}, TSR_GGML_Q4_1, 2 * 20}, {"bf16", 1, {8, 1}, TSR_GGML_BF16, 16},
    };
    L->n_t = 6;
    uint64_t rel = 0;
    for (int i = 0; i < 6; i++) {
        L->t_name_len[i] = b->n;
        put_str(b, ts[i].name);
        L->t_ndims[i] = b->n;
        put_u32(b, (uint32_t)ts[i].nd);
        L->t_ne0[i] = b->n;
        for (int d = 0; d < ts[i].nd; d++) put_u64(b, (uint64_t)ts[i].ne[d]);
        L->t_type[i] = b->n;
        put_u32(b, ts[i].type);
        L->t_off[i] = b->n;
        put_u64(b, rel);
        L->t_rel[i] = rel;
        rel += (ts[i].bytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    while (b->n % ALIGN) put_u8(b, 0);
    L->data_start = b->n;
    /* f32: 0..7 */
    for (int i = 0; i < 8; i++) { float v = (float)i; put(b, &v, 4); }
    while ((b->n - L->data_start) % ALIGN) put_u8(b, 0);
    /* f16: i / 4 */
    for (int i = 0; i < 32; i++) { uint16_t h = tsr_f32_to_f16((float)i / 4); put(b, &h, 2); }
    while ((b->n - L->data_start) % ALIGN) put_u8(b, 0);
    /* q8_0: 4 blocks, d = 0.5 * (blk + 1), q = l - 16 */
    for (int blk = 0; blk < 4; blk++) {
        uint16_t d = tsr_f32_to_f16(0.5f * (float)(blk + 1));
        put(b, &d, 2);
        for (int l = 0; l < 32; l++) put_u8(b, (uint8_t)(int8_t)(l - 16));
    }
    while ((b->n - L->data_start) % ALIGN) put_u8(b, 0);
    /* q4_0: d = 1, byte j = (j % 16) | ((15 - j % 16) << 4) */
    for (int blk = 0; blk < 3; blk++) {
        uint16_t d = tsr_f32_to_f16(1.0f + (float)blk);
        put(b, &d, 2);
        for (int j = 0; j < 16; j++) put_u8(b, (uint8_t)(j | ((15 - j) << 4)));
    }
    while ((b->n - L->data_start) % ALIGN) put_u8(b, 0);
    /* q4_1: d = 0.5, m = -1 */
    for (int blk = 0; blk < 2; blk++) {
        uint16_t d = tsr_f32_to_f16(0.5f), m = tsr_f32_to_f16(-1.0f);
        put(b, &d, 2);
        put(b, &m, 2);
        for (int j = 0; j < 16; j++) put_u8(b, (uint8_t)(j | (j << 4)));
    }
    while ((b->n - L->data_start) % ALIGN) put_u8(b, 0);
    for (int i = 0; i < 8; i++) { uint16_t h = tsr_f32_to_bf16((float)-i); put(b, &h, 2); }
    /* the file ends exactly where the last tensor does, so every truncation cuts a tensor */
}

static void check_valid(const tsr_gguf *g, uint32_t version) {
    CHECK(tsr_gguf_version(g) == version);
    CHECK(tsr_gguf_n_kv(g) == 17);
    CHECK(tsr_gguf_n_tensors(g) == 6);
    CHECK(tsr_gguf_alignment(g) == ALIGN);
    int64_t i;
    double f;
    bool bo;
    CHECK(tsr_gguf_get_i64(g, "t.u8", &i) && i == 200);
    CHECK(tsr_gguf_get_i64(g, "t.i8", &i) && i == -5);
    CHECK(tsr_gguf_get_i64(g, "t.u16", &i) && i == 60000);
    CHECK(tsr_gguf_get_i64(g, "t.i16", &i) && i == -30000);
    CHECK(tsr_gguf_get_i64(g, "t.u32", &i) && i == 4000000000ll);
    CHECK(tsr_gguf_get_i64(g, "t.i32", &i) && i == -2000000000ll);
    CHECK(tsr_gguf_get_i64(g, "t.u64", &i) && i == (1ll << 40));
    CHECK(tsr_gguf_get_i64(g, "t.i64", &i) && i == -7);
    CHECK(!tsr_gguf_get_i64(g, "t.f32", &i));
    CHECK(tsr_gguf_get_f64(g, "t.f32", &f) && f == 1.5);
    CHECK(tsr_gguf_get_f64(g, "t.f64", &f) && f == -2.25);
    CHECK(tsr_gguf_get_f64(g, "t.i32", &f) && f == -2e9);
    CHECK(tsr_gguf_get_bool(g, "t.bool", &bo) && bo);
    CHECK(!tsr_gguf_get_bool(g, "t.u8", &bo));
    CHECK(!tsr_gguf_get_i64(g, "missing", &i));
    char *s = tsr_gguf_get_str(g, "general.architecture");
    CHECK(s && !strcmp(s, "llama"));
    free(s);
    CHECK(tsr_gguf_get_str(g, "t.u8") == NULL);
    const tsr_gguf_kv *kv = tsr_gguf_find(g, "t.arr_str");
    CHECK(kv && kv->type == TSR_GGUF_ARRAY && kv->arr_type == TSR_GGUF_STRING && kv->arr_n == 3);
    if (kv && kv->arr_n == 3) {
        CHECK(kv->arr_str[0].len == 1 && kv->arr_str[0].ptr[0] == 'a');
        CHECK(kv->arr_str[1].len == 0);
        CHECK(kv->arr_str[2].len == 10 && !memcmp(kv->arr_str[2].ptr, "<|im_end|>", 10));
    }
    kv = tsr_gguf_find(g, "t.arr_i32");
    CHECK(kv && kv->arr_n == 4);
    CHECK(tsr_gguf_arr_get_i64(kv, 3, &i) && i == 25);
    CHECK(tsr_gguf_arr_get_i64(kv, 0, &i) && i == -5);
    CHECK(!tsr_gguf_arr_get_i64(kv, 4, &i));
    kv = tsr_gguf_find(g, "t.arr_f32");
    CHECK(tsr_gguf_arr_get_f64(kv, 1, &f) && f == -8.0);
    CHECK(!tsr_gguf_arr_get_i64(kv, 1, &i));
    kv = tsr_gguf_find(g, "t.arr_empty");
    CHECK(kv && kv->arr_n == 0);

    float out[256];
    const tsr_gguf_tensor *t = tsr_gguf_find_tensor(g, "f32");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 2 && t->nbytes == 32 && t->type == TSR_GGML_F32);
    CHECK(tsr_gguf_find_tensor(g, "nope") == NULL);
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        for (int k = 0; k < 8; k++) CHECK(out[k] == (float)k);
        CHECK(tsr_gguf_tensor_rows_to_f32(t, 1, 1, out) == TSR_OK && out[0] == 4.0f && out[3] == 7.0f);
        CHECK(tsr_gguf_tensor_rows_to_f32(t, 1, 2, out) == TSR_ERR_INVALID_ARG);
        CHECK(tsr_gguf_tensor_rows_to_f32(t, -1, 1, out) == TSR_ERR_INVALID_ARG);
    }
    t = tsr_gguf_find_tensor(g, "f16");
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        for (int k = 0; k < 32; k++) CHECK(out[k] == (float)k / 4);
    }
    t = tsr_gguf_find_tensor(g, "q8");
    CHECK(t && t->nbytes == 4 * 34);
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        int bad = 0;
        for (int k = 0; k < 128; k++) bad += out[k] != 0.5f * (float)(k / 32 + 1) * (float)(k % 32 - 16);
        CHECK(bad == 0);
        float row[64];
        CHECK(tsr_gguf_tensor_rows_to_f32(t, 1, 1, row) == TSR_OK && !memcmp(row, out + 64, sizeof row));
    }
    t = tsr_gguf_find_tensor(g, "q40");
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        int bad = 0;
        for (int blk = 0; blk < 3; blk++)
            for (int j = 0; j < 16; j++) {
                bad += out[blk * 32 + j] != (float)(j - 8) * (float)(blk + 1);
                bad += out[blk * 32 + j + 16] != (float)(15 - j - 8) * (float)(blk + 1);
            }
        CHECK(bad == 0);
        float rows[64];
        CHECK(tsr_gguf_tensor_rows_to_f32(t, 1, 2, rows) == TSR_OK && !memcmp(rows, out + 32, sizeof rows));
    }
    t = tsr_gguf_find_tensor(g, "q41");
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        int bad = 0;
        for (int k = 0; k < 64; k++) bad += out[k] != 0.5f * (float)(k % 16) - 1.0f;
        CHECK(bad == 0);
    }
    t = tsr_gguf_find_tensor(g, "bf16");
    if (t) {
        CHECK(tsr_gguf_tensor_to_f32(t, out) == TSR_OK);
        for (int k = 0; k < 8; k++) CHECK(out[k] == (float)-k);
    }
}

static int n_mut_ok, n_mut_err;

/* A mutated file must open cleanly or fail with TSR_ERR_FORMAT naming the file; when it opens,
 * every tensor must still lie inside the buffer and dequantize without a fault. */
static void expect_format_error_or_sane(const buf *b, const char *what, bool must_fail) {
    tsr_gguf *g = NULL;
    tsr_status st = tsr_gguf_open_memory(b->p, b->n, "mutant.gguf", &g);
    if (st == TSR_OK) {
        n_mut_ok++;
        CHECK_MSG(!must_fail, "%s: opened but should have failed", what);
        for (int64_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
            const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
            const uint8_t *d = t->data;
            CHECK(d >= b->p && d + t->nbytes <= b->p + b->n);
            int64_t n = tsr_gguf_tensor_numel(t);
            if (n <= (1 << 20)) {
                float *x = malloc((size_t)(n ? n : 1) * 4);
                tsr_status ds = tsr_gguf_tensor_to_f32(t, x);
                CHECK(ds == TSR_OK || ds == TSR_ERR_UNSUPPORTED);
                free(x);
            }
        }
        tsr_gguf_close(g);
        return;
    }
    n_mut_err++;
    CHECK_MSG(st == TSR_ERR_FORMAT, "%s: status %s (%s)", what, tsr_status_str(st), tsr_last_error());
    CHECK_MSG(strstr(tsr_last_error(), "mutant.gguf") != NULL, "%s: message does not name the file: %s", what,
              tsr_last_error());
    CHECK(g == NULL);
}

static void mutate_field(const buf *orig, size_t at, int width, uint64_t value, const char *what, const char *expect) {
    buf m = {0};
    put(&m, orig->p, orig->n);
    if (width == 4) set_u32(&m, at, (uint32_t)value);
    else set_u64(&m, at, value);
    expect_format_error_or_sane(&m, what, true);
    if (expect)
        CHECK_MSG(strstr(tsr_last_error(), expect) != NULL, "%s: expected '%s' in: %s", what, expect, tsr_last_error());
    free(m.p);
}

static void test_mutations(const buf *b, const layout *L) {
    /* truncation at every length */
    for (size_t n = 0; n < b->n; n++) {
        buf m = {b->p, n, n};
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", n);
        expect_format_error_or_sane(&m, what, true);
    }
    /* every header byte flipped, one at a time (the result may still be valid: a flipped
     * character in a string; then it must be sane) */
    for (size_t at = 0; at < L->data_start; at++) {
        for (int k = 0; k < 2; k++) {
            buf m = {0};
            put(&m, b->p, b->n);
            m.p[at] ^= k ? 0xff : 0x01;
            expect_format_error_or_sane(&m, "flipped byte", false);
            free(m.p);
        }
    }
    mutate_field(b, 0, 4, 0x46554748, "bad magic", "bad magic");
    mutate_field(b, L->version, 4, 1, "version 1", "version 1");
    mutate_field(b, L->version, 4, 4, "version 4", "version 4");
    mutate_field(b, L->version, 4, 0x03000000, "big-endian", "big-endian");
    mutate_field(b, L->n_kv, 8, UINT64_MAX, "huge n_kv", "metadata count");
    mutate_field(b, L->n_kv, 8, 1ull << 40, "large n_kv", "metadata count");
    mutate_field(b, L->n_kv, 8, 18, "one more kv than present", NULL);
    mutate_field(b, L->n_tensors, 8, UINT64_MAX, "huge n_tensors", "tensor count");
    mutate_field(b, L->n_tensors, 8, 7, "one more tensor than present", NULL);
    mutate_field(b, L->key0_len, 8, UINT64_MAX, "huge key length", "length");
    mutate_field(b, L->key0_len, 8, (uint64_t)b->n, "key length = file size", "length");
    mutate_field(b, L->str_val_len, 8, UINT64_MAX - 3, "huge string value length", "length");
    mutate_field(b, L->arr_str_n, 8, UINT64_MAX, "huge string array count", "strings");
    mutate_field(b, L->arr_str_n, 8, 1ull << 61, "string array count x 8 overflows", "strings");
    mutate_field(b, L->arr_i32_n, 8, UINT64_MAX / 2, "huge int array count", "elements");
    mutate_field(b, L->arr_i32_n, 8, (1ull << 62) + 1, "int array count x 4 wraps", "elements");
    mutate_field(b, L->arr_type, 4, TSR_GGUF_ARRAY, "nested array", "array");
    mutate_field(b, L->arr_type, 4, 13, "unknown array element type", NULL);
    mutate_field(b, L->vtype_u8, 4, 77, "unknown value type", "unknown value type");
    mutate_field(b, L->align_val, 4, 0, "alignment 0", "alignment");
    mutate_field(b, L->align_val, 4, 48, "alignment 48", "power of two");
    mutate_field(b, L->align_type, 4, TSR_GGUF_INT32, "alignment of type int32", "alignment");
    mutate_field(b, L->t_ndims[0], 4, 5, "n_dims 5", "n_dims");
    mutate_field(b, L->t_ndims[0], 4, 0, "n_dims 0", "n_dims");
    mutate_field(b, L->t_ndims[0], 4, UINT32_MAX, "n_dims huge", "n_dims");
    mutate_field(b, L->t_ne0[0], 8, UINT64_MAX, "ne[0] huge", NULL);
    mutate_field(b, L->t_ne0[0], 8, 1ull << 62, "ne[0] x ne[1] overflows", "overflow");
    mutate_field(b, L->t_ne0[0] + 8, 8, 1ull << 40, "ne[1] so big the tensor passes the end", "past the end");
    mutate_field(b, L->t_ne0[2], 8, 65, "q8_0 row not a multiple of 32", "block size");
    mutate_field(b, L->t_ne0[2], 8, 0x2000000000000000ull, "q8_0 byte size overflows", NULL);
    mutate_field(b, L->t_type[0], 4, 99, "unknown tensor type", "type");
    mutate_field(b, L->t_type[0], 4, 4, "removed tensor type Q4_2", "type");
    mutate_field(b, L->t_type[2], 4, TSR_GGML_F32, "wrong type size: q8 read as f32 (larger)", "past the end");
    mutate_field(b, L->t_off[0], 8, UINT64_MAX - 63, "offset near 2^64", NULL);
    mutate_field(b, L->t_off[0], 8, 1ull << 40, "offset past the end", "past the end");
    mutate_field(b, L->t_off[0], 8, 8, "misaligned offset", "alignment");
    mutate_field(b, L->t_off[1], 8, L->t_rel[0], "overlapping tensors", "overlap");
    mutate_field(b, L->t_off[5], 8, L->t_rel[4], "overlapping last tensors", "overlap");
    mutate_field(b, L->t_name_len[1], 8, UINT64_MAX, "huge tensor name length", "length");
    /* duplicate tensor name: rename "f16" to "f32" */
    {
        buf m = {0};
        put(&m, b->p, b->n);
        memcpy(m.p + L->t_name_len[1] + 8, "f32", 3);
        expect_format_error_or_sane(&m, "duplicate tensor", true);
        CHECK(strstr(tsr_last_error(), "twice") != NULL);
        free(m.p);
    }
    /* a NUL inside a tensor name (found by fuzzing: the name could not be looked up) */
    {
        buf m = {0};
        put(&m, b->p, b->n);
        m.p[L->t_name_len[1] + 8 + 1] = 0;
        expect_format_error_or_sane(&m, "NUL in a tensor name", true);
        CHECK(strstr(tsr_last_error(), "NUL") != NULL);
        free(m.p);
    }
    /* duplicate key: rename "t.i8" to "t.u8" */
    {
        buf m = {0};
        put(&m, b->p, b->n);
        uint8_t *k = memmem(m.p, L->data_start, "t.i8", 4);
        CHECK(k != NULL);
        if (k) k[2] = 'u';
        expect_format_error_or_sane(&m, "duplicate key", true);
        CHECK(strstr(tsr_last_error(), "twice") != NULL);
        free(m.p);
    }
    printf("mutations: %d opened (still valid), %d rejected\n", n_mut_ok, n_mut_err);
}

static void test_files(const buf *b) {
    char *dir = tsr_test_tmpdir();
    TSR_ASSERT(dir);
    char *path = tsr_path_join(dir, "small.gguf");
    CHECK(tsr_write_file(path, b->p, b->n) == TSR_OK);
    tsr_gguf *g;
    CHECK(tsr_gguf_open(path, &g) == TSR_OK);
    if (g) {
        CHECK(!strcmp(tsr_gguf_path(g), path));
        check_valid(g, 3);
        tsr_gguf_close(g);
    }
    /* truncated copies on disk: the error names the path */
    size_t cuts[] = {0, 3, 4, 8, 23, 100, b->n / 2, b->n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(tsr_write_file(path, b->p, cuts[i]) == TSR_OK);
        tsr_status st = tsr_gguf_open(path, &g);
        CHECK_MSG(st == TSR_ERR_FORMAT && strstr(tsr_last_error(), path), "cut %zu: %s", cuts[i], tsr_last_error());
    }
    unlink(path);
    CHECK(tsr_gguf_open(path, &g) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), path) != NULL);
    rmdir(dir);
    free(path);
    free(dir);
}

static void test_dequant_args(void) {
    float out[64];
    uint8_t blk[34] = {0};
    CHECK(tsr_ggml_dequantize(TSR_GGML_Q8_0, blk, out, 31) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_ggml_dequantize((tsr_ggml_type)99, blk, out, 32) == TSR_ERR_UNSUPPORTED);
    CHECK(tsr_ggml_dequantize(TSR_GGML_Q8_0, blk, out, 32) == TSR_OK && out[5] == 0.0f);
    CHECK(tsr_ggml_block_size(TSR_GGML_Q4_K) == 256 && tsr_ggml_type_size(TSR_GGML_Q4_K) == 144);
    CHECK(tsr_ggml_type_size(TSR_GGML_Q6_K) == 210 && tsr_ggml_type_size(TSR_GGML_Q5_K) == 176);
    CHECK(tsr_ggml_type_size(TSR_GGML_Q2_K) == 84 && tsr_ggml_type_size(TSR_GGML_Q3_K) == 110);
    CHECK(!strcmp(tsr_ggml_type_name(TSR_GGML_Q4_1), "Q4_1"));
    /* Q8_K (python gguf has no dequantizer for it): f32 d, int8 qs[256], int16 bsums[16] */
    uint8_t k8[292] = {0};
    float d = 0.25f, y[256];
    memcpy(k8, &d, 4);
    for (int i = 0; i < 256; i++) k8[4 + i] = (uint8_t)(int8_t)(i - 128);
    CHECK(tsr_ggml_type_size(TSR_GGML_Q8_K) == 292);
    CHECK(tsr_ggml_dequantize(TSR_GGML_Q8_K, k8, y, 256) == TSR_OK);
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += y[i] != 0.25f * (float)(i - 128);
    CHECK(bad == 0);
}

/* The default model: SmolLM2-135M-Instruct Q4_1. */
static void test_default_model(void) {
    char *path = tsr_default_model_path();
    if (!tsr_path_exists(path)) {
        printf("skipped the default-model checks: %s is missing (bash ci/fetch-model.sh)\n", path);
        free(path);
        return;
    }
    double t0 = tsr_now();
    tsr_gguf *g;
    CHECK(tsr_gguf_open(path, &g) == TSR_OK);
    double ms = (tsr_now() - t0) * 1e3;
    printf("default model opened in %.2f ms\n", ms);
    /* a header walk, not a weight read: milliseconds even under the sanitizers (bound generous
     * for a loaded CI machine) */
    CHECK_MSG(ms < 250, "opening took %.1f ms", ms);
    if (!g) { free(path); return; }
    CHECK(tsr_gguf_version(g) == 3);
    CHECK(tsr_gguf_n_tensors(g) == 272);
    int n_q41 = 0, n_f32 = 0, n_q80 = 0;
    for (int64_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
        tsr_ggml_type ty = tsr_gguf_tensor_at(g, i)->type;
        n_q41 += ty == TSR_GGML_Q4_1;
        n_f32 += ty == TSR_GGML_F32;
        n_q80 += ty == TSR_GGML_Q8_0;
    }
    CHECK(n_q41 == 210 && n_f32 == 61 && n_q80 == 1);
    tsr_model_config c;
    CHECK(tsr_model_config_from_gguf(g, &c) == TSR_OK);
    CHECK(c.arch == TSR_ARCH_LLAMA && c.vocab_size == 49152 && c.d_model == 576 && c.n_layer == 30);
    CHECK(c.n_head == 9 && c.n_kv_head == 3 && c.head_dim == 64 && c.d_ff == 1536);
    CHECK(c.tie_embeddings && c.bos_id == 1 && c.eos_id == 2);
    CHECK_NEAR(c.rope_theta, 100000.0, 1e-3);
    CHECK_NEAR(c.norm_eps, 1e-5, 1e-9);
    const tsr_gguf_tensor *e = tsr_gguf_find_tensor(g, "token_embd.weight");
    CHECK(e && e->type == TSR_GGML_Q8_0 && e->ne[0] == 576 && e->ne[1] == 49152);
    const tsr_gguf_tensor *q = tsr_gguf_find_tensor(g, "blk.0.attn_q.weight");
    CHECK(q && q->type == TSR_GGML_Q4_1 && q->ne[0] == 576 && q->ne[1] == 576);
    if (q) {
        /* a TP rank's row slice equals the same rows of the whole tensor */
        float *all = malloc(576 * 576 * 4), *part = malloc(192 * 576 * 4);
        CHECK(tsr_gguf_tensor_to_f32(q, all) == TSR_OK);
        CHECK(tsr_gguf_tensor_rows_to_f32(q, 192, 192, part) == TSR_OK);
        CHECK(!memcmp(part, all + 192 * 576, 192 * 576 * 4));
        free(all);
        free(part);
    }
    tsr_gguf_close(g);
    free(path);
}

int main(void) {
    buf b = {0};
    layout L;
    for (uint32_t v = 2; v <= 3; v++) {
        build(&b, &L, v);
        tsr_gguf *g;
        tsr_status st = tsr_gguf_open_memory(b.p, b.n, "small.gguf", &g);
        CHECK_MSG(st == TSR_OK, "%s", tsr_last_error());
        if (st == TSR_OK) {
            check_valid(g, v);
            tsr_gguf_close(g);
        }
    }
    test_mutations(&b, &L);
    test_files(&b);
    test_dequant_args();
    test_default_model();
    free(b.p);
    return tsr_test_finish();
}
