/* safetensors reader (single file, or a sharded checkpoint through
 * model.safetensors.index.json) and writer (used by `tessera convert` for workspaces).
 * Files are memory-mapped; tensor data pointers point into the maps, so a rank that reads only
 * its slices only pages in those.  Every header is validated before use: header length cap,
 * JSON shape, dtype x shape == byte length, offsets inside the data section, no overlaps. */
#ifndef TSR_SAFETENSORS_H
#define TSR_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"

typedef struct tsr_st_tensor {
    const char *name;
    tsr_dtype dtype;
    int n_dims;
    int64_t shape[TSR_MAX_DIMS];
    const void *data;   /* into the file's mmap */
    size_t nbytes;
    int file_index;     /* which shard */
} tsr_st_tensor;

typedef struct tsr_safetensors tsr_safetensors;

/* path: a .safetensors file, a model.safetensors.index.json, or a directory holding either. */
tsr_status tsr_safetensors_open(const char *path, tsr_safetensors **out);
/* One file held in a caller-owned buffer that must outlive the reader (fuzzing, tests);
 * name stands for the path in error messages. */
tsr_status tsr_safetensors_open_memory(const void *data, size_t size, const char *name, tsr_safetensors **out);
void tsr_safetensors_close(tsr_safetensors *st);
/* The shard files behind the reader (tsr_st_tensor.file_index indexes these). */
int tsr_safetensors_n_files(const tsr_safetensors *st);
const char *tsr_safetensors_file_path(const tsr_safetensors *st, int i);
int64_t tsr_safetensors_count(const tsr_safetensors *st);
const tsr_st_tensor *tsr_safetensors_at(const tsr_safetensors *st, int64_t i);
const tsr_st_tensor *tsr_safetensors_find(const tsr_safetensors *st, const char *name); /* NULL if absent */
/* The "__metadata__" string map of the (first) file; NULL if absent. */
const char *tsr_safetensors_metadata(const tsr_safetensors *st, const char *key);
int64_t tsr_safetensors_n_metadata(const tsr_safetensors *st);
/* Entry i of that map (key and value), false when out of range. */
bool tsr_safetensors_metadata_at(const tsr_safetensors *st, int64_t i, const char **key, const char **value);

/* Writer: tensors are written in the order given, 8-byte aligned header as the format asks. */
typedef struct tsr_st_write_tensor {
    const char *name;
    tsr_dtype dtype;
    int n_dims;
    int64_t shape[TSR_MAX_DIMS];
    const void *data;
} tsr_st_write_tensor;

tsr_status tsr_safetensors_write(const char *path, const tsr_st_write_tensor *tensors, int64_t n,
                                 const char *const *meta_kv /* key, value, ..., NULL */);

#endif
