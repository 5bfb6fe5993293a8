/* GGUF reader (versions 2 and 3): metadata of every type including arrays, tensor infos,
 * alignment, and dequantization to f32 of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
 * Q5_K, Q6_K (and Q8_K/Q2_K/Q3_K where implemented).  The file is memory-mapped; every count,
 * length and offset is checked against the file size before it is used, so a truncated or
 * hostile file is a TSR_ERR_FORMAT naming the file and the problem, never a crash. */
#ifndef TSR_GGUF_H
#define TSR_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ggml_quants.h"
#include "common/status.h"

typedef enum tsr_gguf_vtype {
    TSR_GGUF_UINT8 = 0, TSR_GGUF_INT8 = 1, TSR_GGUF_UINT16 = 2, TSR_GGUF_INT16 = 3,
    TSR_GGUF_UINT32 = 4, TSR_GGUF_INT32 = 5, TSR_GGUF_FLOAT32 = 6, TSR_GGUF_BOOL = 7,
    TSR_GGUF_STRING = 8, TSR_GGUF_ARRAY = 9, TSR_GGUF_UINT64 = 10, TSR_GGUF_INT64 = 11,
    TSR_GGUF_FLOAT64 = 12,
} tsr_gguf_vtype;

typedef struct tsr_gguf_str {
    const char *ptr;   /* into the mmap: NOT NUL-terminated */
    uint64_t len;
} tsr_gguf_str;

typedef struct tsr_gguf_kv {
    tsr_gguf_str key;
    tsr_gguf_vtype type;
    union {
        uint64_t u64; int64_t i64; double f64; bool b; tsr_gguf_str str;
    } v;                      /* scalars, widened */
    tsr_gguf_vtype arr_type;  /* for TSR_GGUF_ARRAY */
    uint64_t arr_n;
    const void *arr_data;     /* numeric arrays: packed little-endian elements in the mmap */
    tsr_gguf_str *arr_str;    /* string arrays: arr_n entries (owned by the reader) */
} tsr_gguf_kv;

typedef struct tsr_gguf_tensor {
    tsr_gguf_str name;
    char *cname;              /* NUL-terminated copy of name */
    uint32_t n_dims;
    int64_t ne[4];            /* ggml order: ne[0] is the innermost (row length) */
    tsr_ggml_type type;
    uint64_t offset;          /* relative to the data section */
    const void *data;
    size_t nbytes;
} tsr_gguf_tensor;

typedef struct tsr_gguf tsr_gguf;

tsr_status tsr_gguf_open(const char *path, tsr_gguf **out);
/* The same over a caller-owned buffer that must outlive the reader (fuzzing, tests); name
 * stands for the path in error messages. */
tsr_status tsr_gguf_open_memory(const void *data, size_t size, const char *name, tsr_gguf **out);
void tsr_gguf_close(tsr_gguf *g);
const char *tsr_gguf_path(const tsr_gguf *g);
uint32_t tsr_gguf_version(const tsr_gguf *g);
uint64_t tsr_gguf_alignment(const tsr_gguf *g);   /* general.alignment, default 32 */
uint64_t tsr_gguf_data_offset(const tsr_gguf *g); /* file offset of the data section */

int64_t tsr_gguf_n_kv(const tsr_gguf *g);
const tsr_gguf_kv *tsr_gguf_kv_at(const tsr_gguf *g, int64_t i);
const tsr_gguf_kv *tsr_gguf_find(const tsr_gguf *g, const char *key); /* NULL if absent */
/* Typed getters: false when absent or of an incompatible type (ints widen, floats widen). */
bool tsr_gguf_get_i64(const tsr_gguf *g, const char *key, int64_t *out);
bool tsr_gguf_get_f64(const tsr_gguf *g, const char *key, double *out);
bool tsr_gguf_get_bool(const tsr_gguf *g, const char *key, bool *out);
/* malloc'd NUL-terminated copy, or NULL. */
char *tsr_gguf_get_str(const tsr_gguf *g, const char *key);
/* Element i of a numeric array (arr_data is unaligned; use these): false when out of range or
 * of an incompatible type (integers and bools widen to i64; anything numeric to f64). */
bool tsr_gguf_arr_get_i64(const tsr_gguf_kv *kv, uint64_t i, int64_t *out);
bool tsr_gguf_arr_get_f64(const tsr_gguf_kv *kv, uint64_t i, double *out);
const char *tsr_gguf_vtype_name(tsr_gguf_vtype t);

int64_t tsr_gguf_n_tensors(const tsr_gguf *g);
const tsr_gguf_tensor *tsr_gguf_tensor_at(const tsr_gguf *g, int64_t i);
const tsr_gguf_tensor *tsr_gguf_find_tensor(const tsr_gguf *g, const char *name);
int64_t tsr_gguf_tensor_numel(const tsr_gguf_tensor *t);

/* Whole tensor (all ne[] elements) to f32; dst holds numel floats. */
tsr_status tsr_gguf_tensor_to_f32(const tsr_gguf_tensor *t, float *dst);
/* Rows [row0, row0 + nrows) of a 2-D tensor (rows are ne[1], row length ne[0]) to f32:
 * what a TP rank uses to read only its slice. */
tsr_status tsr_gguf_tensor_rows_to_f32(const tsr_gguf_tensor *t, int64_t row0, int64_t nrows, float *dst);

/* Writes a GGUF v3 file holding only the metadata keys of src that start with one of the
 * NULL-terminated prefixes (no tensors): a workspace's tokenizer.gguf. */
tsr_status tsr_gguf_write_metadata(const char *path, const tsr_gguf *src, const char *const *prefixes);

#endif
