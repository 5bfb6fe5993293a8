/* Typed weights (issue 12): what a weight matrix holds, so the op table's matmul-like ops can
 * take a quantized checkpoint's blocks as they are instead of an f32 copy.  A tsr_wtensor is a
 * view (it owns nothing): HF layout [rows = out][cols = in], each row a run of blocks along
 * `in`.  The GGUF block layouts and their byte sizes live in common/ggml_quants.c; this file
 * only names them and adds the shape arithmetic (bytes per row, where a tensor-parallel split
 * may cut).  INT4G is the one layout Tessera computes group-quantized int4 with (issue 13):
 * AutoAWQ, GPTQ and compressed-tensors checkpoints are converted into it at load
 * (worker/weights_hf_quant.c), since their packings differ and none suits a row-wise kernel. */
#ifndef TSR_WTYPE_H
#define TSR_WTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/status.h"

/* The GGUF types keep their ggml numbers (a GGUF tensor's type converts with a cast); the
 * group-quantized int4 formats sit above ggml's range. */
typedef enum tsr_wtype {
    TSR_WTYPE_F32 = TSR_GGML_F32,
    TSR_WTYPE_F16 = TSR_GGML_F16,
    TSR_WTYPE_BF16 = TSR_GGML_BF16,
    TSR_WTYPE_Q4_0 = TSR_GGML_Q4_0,
    TSR_WTYPE_Q4_1 = TSR_GGML_Q4_1,
    TSR_WTYPE_Q5_0 = TSR_GGML_Q5_0,
    TSR_WTYPE_Q5_1 = TSR_GGML_Q5_1,
    TSR_WTYPE_Q8_0 = TSR_GGML_Q8_0,
    TSR_WTYPE_Q2_K = TSR_GGML_Q2_K,
    TSR_WTYPE_Q3_K = TSR_GGML_Q3_K,
    TSR_WTYPE_Q4_K = TSR_GGML_Q4_K,
    TSR_WTYPE_Q5_K = TSR_GGML_Q5_K,
    TSR_WTYPE_Q6_K = TSR_GGML_Q6_K,
    TSR_WTYPE_Q8_K = TSR_GGML_Q8_K,
    /* int4 in groups along `in`, an f16 scale and an optional zero point per group (layout below). */
    TSR_WTYPE_INT4G = 100,
} tsr_wtype;

/* Which axis of the HF [out, in] matrix a tensor-parallel split cuts: ROWS splits `out`
 * (column-parallel layers: q/k/v, gate/up, LM head), COLS splits `in` (row-parallel: o_proj,
 * down_proj). */
typedef enum tsr_split_axis { TSR_SPLIT_ROWS = 0, TSR_SPLIT_COLS = 1 } tsr_split_axis;

/* INT4G, row by row like the block types so a TP slice of either axis is a view:
 *   data   [rows][row_stride bytes]: cols / 2 bytes of unsigned 4-bit quants u; in each run of
 *          32 elements along `in`, byte j holds element j (low nibble) and element j + 16 (high
 *          nibble) -- GGUF Q4_0's order, so the SIMD kernels unpack 32 quants with one shift;
 *   scales [rows][scale_stride bytes]: f16 d, one per group of `block` (a multiple of 32) columns;
 *   zeros  [rows][zero_stride bytes]: one byte z per group (0..15; 16 occurs in old GPTQ files),
 *          or NULL for a symmetric format, where z = 8;
 * and W[r][c] = d * (u - z) for the group of c.  Zero points are kept whole bytes (not packed
 * nibbles) so that a column slice never has to cut a byte: they cost 1 / block bytes a weight. */
typedef struct tsr_wtensor {
    tsr_wtype type;
    int64_t rows;         /* out */
    int64_t cols;         /* in; a multiple of block (block types) or group (int4) */
    int64_t block;        /* elements per block along `in` (1 for f32/f16/bf16), or the group size */
    const void *data;     /* [rows] rows of row_stride bytes; blocks as the file stores them */
    size_t row_stride;    /* bytes from one row to the next (>= tsr_wtype_row_bytes; more for a
                           * column slice of a wider matrix) */
    const void *scales;   /* INT4G: f16 [rows][scale_stride bytes]; NULL for the GGUF types,
                           * whose scales sit inside each block */
    const void *zeros;    /* INT4G: uint8 [rows][zero_stride bytes]; NULL: symmetric (z = 8) */
    size_t scale_stride;  /* INT4G: bytes from one row of scales (zeros) to the next */
    size_t zero_stride;
} tsr_wtensor;

const char *tsr_wtype_name(tsr_wtype t);
/* Elements per block (1 for the float types); 0 for an unknown type.  For INT4G the group
 * size is per tensor (tsr_wtensor.block), so this returns 0 for it. */
int64_t tsr_wtype_block_size(tsr_wtype t);
/* Bytes of one block (of tsr_wtype_block_size elements); 0 for unknown or group types. */
size_t tsr_wtype_block_bytes(tsr_wtype t);
/* The weight types this build knows (GGUF types convert with a cast; others are unsupported). */
tsr_status tsr_wtype_from_ggml(tsr_ggml_type g, tsr_wtype *out);

/* Bytes of one packed row of `cols` elements (INT4G: cols / 2, the packed weights alone).
 * Fails (INVALID_ARG) when cols is not a multiple of the block size. */
tsr_status tsr_wtype_row_bytes(tsr_wtype t, int64_t cols, size_t *out);

/* Fills a descriptor for a dense, contiguous matrix (row_stride = row bytes); checks that the
 * type is known and cols fits its blocks.  group is used only by INT4G (a multiple of 32 that
 * divides cols), whose scale and zero strides are set for dense planes too; the caller points
 * scales (and zeros, or leaves NULL) at them. */
tsr_status tsr_wtensor_init(tsr_wtensor *w, tsr_wtype t, int64_t rows, int64_t cols, int64_t group,
                            const void *data);

/* The smallest step, in elements, at which a split along `axis` leaves whole blocks (INT4G:
 * whole groups) on each side. */
int64_t tsr_wtensor_split_unit(const tsr_wtensor *w, tsr_split_axis axis);

/* OK when cutting `name` along `axis` at element `offset` keeps every block whole; otherwise
 * INVALID_ARG with a message naming the tensor, the block and the nearest valid offsets. */
tsr_status tsr_wtensor_check_cut(const tsr_wtensor *w, const char *name, tsr_split_axis axis,
                                 int64_t offset);

/* OK when `tp` equal parts along `axis` each hold whole blocks; otherwise INVALID_ARG with a
 * message naming the tensor and the TP sizes (up to 2 tp) that would work. */
tsr_status tsr_wtensor_check_split(const tsr_wtensor *w, const char *name, tsr_split_axis axis, int tp);

/* A view of rows [start, start + n) or columns [start, start + n) of w (no copy; a column
 * slice keeps the parent's strides, INT4G's scales and zeros move with the data); both cuts
 * are checked as tsr_wtensor_check_cut does. */
tsr_status tsr_wtensor_slice(const tsr_wtensor *w, const char *name, tsr_split_axis axis, int64_t start,
                             int64_t n, tsr_wtensor *out);

/* Bytes the tensor's rows occupy, scales and zeros included (what a loader reports resident). */
size_t tsr_wtensor_bytes(const tsr_wtensor *w);

/* out[i][c] = W[r0 + i][c] as f32 for i < n, every column: GGUF types through
 * tsr_ggml_dequantize, INT4G as d * (u - z).  For the tile path of a batched matmul, the
 * embedding lookup and the reference twins. */
tsr_status tsr_wtensor_dequantize_rows(const tsr_wtensor *w, int64_t r0, int64_t n, float *out);

#endif
