/* Weight type descriptors: names, row sizes and the tensor-parallel cut rules of issue 12.
 * Block sizes and byte sizes of the GGUF types come from common/ggml_quants.c (one table). */
#include "common/wtype.h"

#include <stdio.h>
#include <string.h>

#include "common/ggml_quants.h"
#include "common/tensor.h"

static int tsr__wtype_is_int4(tsr_wtype t) { return t == TSR_WTYPE_INT4G; }

static int tsr__wtype_is_ggml(tsr_wtype t) {
    switch (t) {
    case TSR_WTYPE_F32: case TSR_WTYPE_F16: case TSR_WTYPE_BF16:
    case TSR_WTYPE_Q4_0: case TSR_WTYPE_Q4_1: case TSR_WTYPE_Q5_0: case TSR_WTYPE_Q5_1:
    case TSR_WTYPE_Q8_0: case TSR_WTYPE_Q2_K: case TSR_WTYPE_Q3_K: case TSR_WTYPE_Q4_K:
    case TSR_WTYPE_Q5_K: case TSR_WTYPE_Q6_K: case TSR_WTYPE_Q8_K: return 1;
    default: return 0;
    }
}

const char *tsr_wtype_name(tsr_wtype t) {
    if (t == TSR_WTYPE_INT4G) return "INT4G";
    return tsr__wtype_is_ggml(t) ? tsr_ggml_type_name((tsr_ggml_type)t) : "unknown";
}

int64_t tsr_wtype_block_size(tsr_wtype t) {
    return tsr__wtype_is_ggml(t) ? tsr_ggml_block_size((tsr_ggml_type)t) : 0;
}

size_t tsr_wtype_block_bytes(tsr_wtype t) {
    return tsr__wtype_is_ggml(t) ? tsr_ggml_type_size((tsr_ggml_type)t) : 0;
}

tsr_status tsr_wtype_from_ggml(tsr_ggml_type g, tsr_wtype *out) {
    if (!tsr__wtype_is_ggml((tsr_wtype)g))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "ggml type %s (%d) is not a weight type Tessera computes with",
                          tsr_ggml_type_name(g), (int)g);
    *out = (tsr_wtype)g;
    return TSR_OK;
}

tsr_status tsr_wtype_row_bytes(tsr_wtype t, int64_t cols, size_t *out) {
    if (cols < 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "%s row: negative width %lld", tsr_wtype_name(t), (long long)cols);
    if (tsr__wtype_is_int4(t)) {
        if (cols % 32 != 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s row of %lld elements: not a multiple of 32 (quants run in 32s)",
                              tsr_wtype_name(t), (long long)cols);
        *out = (size_t)(cols / 2);
        return TSR_OK;
    }
    const int64_t bs = tsr_wtype_block_size(t);
    if (bs == 0) return tsr_errorf(TSR_ERR_UNSUPPORTED, "weight type %d is unknown", (int)t);
    if (cols % bs != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "%s row of %lld elements: not a multiple of its block of %lld",
                          tsr_wtype_name(t), (long long)cols, (long long)bs);
    *out = (size_t)(cols / bs) * tsr_wtype_block_bytes(t);
    return TSR_OK;
}

tsr_status tsr_wtensor_init(tsr_wtensor *w, tsr_wtype t, int64_t rows, int64_t cols, int64_t group,
                            const void *data) {
    size_t rb = 0;
    if (rows < 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "%s tensor: negative row count %lld", tsr_wtype_name(t), (long long)rows);
    TSR_TRY(tsr_wtype_row_bytes(t, cols, &rb));
    int64_t block = tsr_wtype_block_size(t);
    size_t ss = 0, zs = 0;
    if (tsr__wtype_is_int4(t)) {
        if (group <= 0 || group % 32 != 0 || cols % group != 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s tensor [%lld, %lld]: group size %lld must be a positive multiple of 32 dividing %lld",
                              tsr_wtype_name(t), (long long)rows, (long long)cols, (long long)group, (long long)cols);
        block = group;
        zs = (size_t)(cols / group), ss = 2 * zs;
    }
    *w = (tsr_wtensor){.type = t, .rows = rows, .cols = cols, .block = block, .data = data, .row_stride = rb,
                       .scale_stride = ss, .zero_stride = zs};
    return TSR_OK;
}

int64_t tsr_wtensor_split_unit(const tsr_wtensor *w, tsr_split_axis axis) {
    /* GGUF blocks and INT4G groups run along `in`: any whole row is a whole set of them. */
    return axis == TSR_SPLIT_ROWS ? 1 : w->block;
}

static const char *tsr__axis_name(tsr_split_axis a) { return a == TSR_SPLIT_ROWS ? "rows (out)" : "columns (in)"; }

tsr_status tsr_wtensor_check_cut(const tsr_wtensor *w, const char *name, tsr_split_axis axis, int64_t offset) {
    const int64_t dim = axis == TSR_SPLIT_ROWS ? w->rows : w->cols, unit = tsr_wtensor_split_unit(w, axis);
    if (offset < 0 || offset > dim)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s' [%lld, %lld]: cut at %s %lld is outside the tensor",
                          name, (long long)w->rows, (long long)w->cols, tsr__axis_name(axis), (long long)offset);
    if (unit > 0 && offset % unit != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "tensor '%s' (%s [%lld, %lld]): a cut at %s %lld splits a block of %lld; the nearest "
                          "whole-block cuts are %lld and %lld",
                          name, tsr_wtype_name(w->type), (long long)w->rows, (long long)w->cols, tsr__axis_name(axis),
                          (long long)offset, (long long)unit, (long long)(offset / unit * unit),
                          (long long)(offset / unit * unit + unit));
    return TSR_OK;
}

static int tsr__split_ok(int64_t dim, int64_t unit, int tp) {
    return tp >= 1 && dim % tp == 0 && (dim / tp) % unit == 0;
}

tsr_status tsr_wtensor_check_split(const tsr_wtensor *w, const char *name, tsr_split_axis axis, int tp) {
    const int64_t dim = axis == TSR_SPLIT_ROWS ? w->rows : w->cols, unit = tsr_wtensor_split_unit(w, axis);
    if (tp < 1) return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s': TP size %d is not positive", name, tp);
    if (unit > 0 && tsr__split_ok(dim, unit, tp)) return TSR_OK;
    char ok[160] = "";
    size_t len = 0;
    for (int t = 1; t <= 2 * tp && t <= 1024 && len + 16 < sizeof ok; t++)
        if (t != tp && unit > 0 && tsr__split_ok(dim, unit, t))
            len += (size_t)snprintf(ok + len, sizeof ok - len, "%s%d", len ? ", " : "", t);
    if (!len) snprintf(ok, sizeof ok, "none up to %d", 2 * tp);
    if (dim % tp != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "tensor '%s' (%s [%lld, %lld]): %lld %s do not divide into %d equal parts; TP sizes that "
                          "would work: %s",
                          name, tsr_wtype_name(w->type), (long long)w->rows, (long long)w->cols, (long long)dim,
                          tsr__axis_name(axis), tp, ok);
    return tsr_errorf(TSR_ERR_INVALID_ARG,
                      "tensor '%s' (%s [%lld, %lld]): splitting %s %d ways cuts a block of %lld (each part would "
                      "hold %lld); TP sizes that would work: %s",
                      name, tsr_wtype_name(w->type), (long long)w->rows, (long long)w->cols, tsr__axis_name(axis), tp,
                      (long long)unit, (long long)(dim / tp), ok);
}

tsr_status tsr_wtensor_slice(const tsr_wtensor *w, const char *name, tsr_split_axis axis, int64_t start,
                             int64_t n, tsr_wtensor *out) {
    if (n < 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s': slice of negative length %lld", name, (long long)n);
    TSR_TRY(tsr_wtensor_check_cut(w, name, axis, start));
    TSR_TRY(tsr_wtensor_check_cut(w, name, axis, start + n));
    *out = *w;
    const uint8_t *base = w->data;
    const uint8_t *sc = w->scales, *zp = w->zeros;
    if (axis == TSR_SPLIT_ROWS) {
        out->rows = n;
        out->data = base ? base + (size_t)start * w->row_stride : NULL;
        out->scales = sc ? sc + (size_t)start * w->scale_stride : NULL;
        out->zeros = zp ? zp + (size_t)start * w->zero_stride : NULL;
    } else if (tsr__wtype_is_int4(w->type)) {
        out->cols = n;   /* start is a whole number of groups, so of 32-element runs too */
        out->data = base ? base + (size_t)start / 2 : NULL;
        out->scales = sc ? sc + 2 * (size_t)(start / w->block) : NULL;
        out->zeros = zp ? zp + (size_t)(start / w->block) : NULL;
    } else {
        out->cols = n;
        out->data = base ? base + (size_t)(start / w->block) * tsr_wtype_block_bytes(w->type) : NULL;
    }
    return TSR_OK;
}

size_t tsr_wtensor_bytes(const tsr_wtensor *w) {
    size_t rb = 0;
    if (tsr_wtype_row_bytes(w->type, w->cols, &rb) != TSR_OK) {
        tsr_clear_error();
        return 0;
    }
    if (tsr__wtype_is_int4(w->type)) rb += (size_t)(w->cols / w->block) * (w->zeros ? 3 : 2);
    return rb * (size_t)w->rows;
}

/* One INT4G row: d * (u - z), 32 elements per run of 16 bytes. */
static void tsr__int4g_row(const tsr_wtensor *w, int64_t r, float *out) {
    const uint8_t *q = (const uint8_t *)w->data + (size_t)r * w->row_stride;
    const uint8_t *sc = (const uint8_t *)w->scales + (size_t)r * w->scale_stride;
    const uint8_t *zp = w->zeros ? (const uint8_t *)w->zeros + (size_t)r * w->zero_stride : NULL;
    for (int64_t c = 0; c < w->cols; c += 32, q += 16, out += 32) {
        const int64_t g = c / w->block;
        uint16_t h;
        memcpy(&h, sc + 2 * g, 2);
        const float d = tsr_f16_to_f32(h), z = zp ? (float)zp[g] : 8.0f;
        for (int j = 0; j < 16; j++) {
            out[j] = d * ((float)(q[j] & 15) - z);
            out[j + 16] = d * ((float)(q[j] >> 4) - z);
        }
    }
}

tsr_status tsr_wtensor_dequantize_rows(const tsr_wtensor *w, int64_t r0, int64_t n, float *out) {
    if (r0 < 0 || n < 0 || r0 + n > w->rows)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "%s tensor of %lld rows: rows %lld..%lld are outside it",
                          tsr_wtype_name(w->type), (long long)w->rows, (long long)r0, (long long)(r0 + n));
    for (int64_t i = 0; i < n; i++) {
        float *o = out + i * w->cols;
        if (tsr__wtype_is_int4(w->type)) {
            tsr__int4g_row(w, r0 + i, o);
            continue;
        }
        if (!tsr__wtype_is_ggml(w->type)) return tsr_errorf(TSR_ERR_UNSUPPORTED, "weight type %d is unknown", (int)w->type);
        TSR_TRY(tsr_ggml_dequantize((tsr_ggml_type)w->type, (const uint8_t *)w->data + (size_t)(r0 + i) * w->row_stride,
                                    o, w->cols));
    }
    return TSR_OK;
}
