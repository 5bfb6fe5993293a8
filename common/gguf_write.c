/* Writing GGUF metadata (no tensors): a workspace made from a GGUF keeps the source's
 * tokenizer.* and general.* keys in tokenizer.gguf, so the tokenizer and chat template travel
 * in the format they came in and the same reader loads them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/gguf.h"

static size_t tsr__vsize(tsr_gguf_vtype t) {
    switch (t) {
    case TSR_GGUF_UINT8: case TSR_GGUF_INT8: case TSR_GGUF_BOOL: return 1;
    case TSR_GGUF_UINT16: case TSR_GGUF_INT16: return 2;
    case TSR_GGUF_UINT32: case TSR_GGUF_INT32: case TSR_GGUF_FLOAT32: return 4;
    case TSR_GGUF_UINT64: case TSR_GGUF_INT64: case TSR_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int tsr__w(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

static int tsr__wstr(FILE *f, const char *p, uint64_t n) {
    return tsr__w(f, &n, 8) || tsr__w(f, p, (size_t)n);
}

/* A scalar, narrowed back to its own width (GGUF is little-endian, as is every host we run on). */
static int tsr__wscalar(FILE *f, const tsr_gguf_kv *kv) {
    uint8_t b[8];
    size_t n = tsr__vsize(kv->type);
    switch (kv->type) {
    case TSR_GGUF_FLOAT32: { float x = (float)kv->v.f64; memcpy(b, &x, 4); break; }
    case TSR_GGUF_FLOAT64: memcpy(b, &kv->v.f64, 8); break;
    case TSR_GGUF_BOOL: b[0] = kv->v.b ? 1 : 0; break;
    case TSR_GGUF_INT8: case TSR_GGUF_INT16: case TSR_GGUF_INT32: case TSR_GGUF_INT64: memcpy(b, &kv->v.i64, n); break;
    default: memcpy(b, &kv->v.u64, n); break;
    }
    return tsr__w(f, b, n);
}

static int tsr__wanted(const tsr_gguf_kv *kv, const char *const *prefixes) {
    for (const char *const *p = prefixes; *p; p++) {
        size_t n = strlen(*p);
        if (kv->key.len >= n && !memcmp(kv->key.ptr, *p, n)) return 1;
    }
    return 0;
}

tsr_status tsr_gguf_write_metadata(const char *path, const tsr_gguf *src, const char *const *prefixes) {
    FILE *f = fopen(path, "wb");
    if (!f) return tsr_errorf(TSR_ERR_IO, "%s: cannot create", path);
    uint64_t n_kv = 0, n_tensors = 0;
    for (int64_t i = 0; i < tsr_gguf_n_kv(src); i++) n_kv += (uint64_t)tsr__wanted(tsr_gguf_kv_at(src, i), prefixes);
    uint32_t version = 3;
    int bad = tsr__w(f, "GGUF", 4) || tsr__w(f, &version, 4) || tsr__w(f, &n_tensors, 8) || tsr__w(f, &n_kv, 8);
    for (int64_t i = 0; i < tsr_gguf_n_kv(src) && !bad; i++) {
        const tsr_gguf_kv *kv = tsr_gguf_kv_at(src, i);
        if (!tsr__wanted(kv, prefixes)) continue;
        uint32_t t = (uint32_t)kv->type;
        bad = tsr__wstr(f, kv->key.ptr, kv->key.len) || tsr__w(f, &t, 4);
        if (bad) break;
        if (kv->type == TSR_GGUF_STRING) {
            bad = tsr__wstr(f, kv->v.str.ptr, kv->v.str.len);
        } else if (kv->type == TSR_GGUF_ARRAY) {
            uint32_t at = (uint32_t)kv->arr_type;
            bad = tsr__w(f, &at, 4) || tsr__w(f, &kv->arr_n, 8);
            if (kv->arr_type == TSR_GGUF_STRING) {
                for (uint64_t j = 0; j < kv->arr_n && !bad; j++) bad = tsr__wstr(f, kv->arr_str[j].ptr, kv->arr_str[j].len);
            } else if (tsr__vsize(kv->arr_type) && kv->arr_n) {
                bad = tsr__w(f, kv->arr_data, tsr__vsize(kv->arr_type) * (size_t)kv->arr_n);
            } else if (kv->arr_n) {
                fclose(f);
                return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: nested arrays are not copied", path);
            }
        } else {
            bad = tsr__wscalar(f, kv);
        }
    }
    if (fclose(f) != 0) bad = 1;
    return bad ? tsr_errorf(TSR_ERR_IO, "%s: write failed", path) : TSR_OK;
}
