/* Weight type descriptors: names, row sizes and the tensor-parallel cut rules of issue 12.
 * Block sizes and byte sizes of the GGUF types come from common/ggml_quants.c (one table). */
#include "common/wtype.h"

#include <stdio.h>

static int tsr__wtype_is_int4(tsr_wtype t) { return t == TSR_WTYPE_AWQ_INT4 || t == TSR_WTYPE_GPTQ_INT4; }

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
    if (t == TSR_WTYPE_AWQ_INT4) return "AWQ_INT4";
    if (t == TSR_WTYPE_GPTQ_INT4) return "GPTQ_INT4";
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
        if (cols % 8 != 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s row of %lld elements: not a multiple of 8 (int4 packs 8 per word)",
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
    if (tsr__wtype_is_int4(t)) {
        if (group <= 0 || group % 8 != 0 || cols % group != 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s tensor [%lld, %lld]: group size %lld must be a positive multiple of 8 dividing %lld",
                              tsr_wtype_name(t), (long long)rows, (long long)cols, (long long)group, (long long)cols);
        block = group;
    }
    *w = (tsr_wtensor){.type = t, .rows = rows, .cols = cols, .block = block, .data = data, .row_stride = rb};
    return TSR_OK;
}

int64_t tsr_wtensor_split_unit(const tsr_wtensor *w, tsr_split_axis axis) {
    if (tsr__wtype_is_int4(w->type)) /* qweight/qzeros pack 8 int4 per int32 word */
        return axis == TSR_SPLIT_ROWS ? 8 : w->block;
    /* GGUF blocks run along `in`: any whole row is a whole set of blocks. */
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
    if (tsr__wtype_is_int4(w->type))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "tensor '%s': slicing %s weights is not implemented yet", name,
                          tsr_wtype_name(w->type));
    if (n < 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s': slice of negative length %lld", name, (long long)n);
    TSR_TRY(tsr_wtensor_check_cut(w, name, axis, start));
    TSR_TRY(tsr_wtensor_check_cut(w, name, axis, start + n));
    *out = *w;
    const uint8_t *base = w->data;
    if (axis == TSR_SPLIT_ROWS) {
        out->rows = n;
        out->data = base ? base + (size_t)start * w->row_stride : NULL;
    } else {
        out->cols = n;
        out->data = base ? base + (size_t)(start / w->block) * tsr_wtype_block_bytes(w->type) : NULL;
    }
    return TSR_OK;
}
