/* Files: read-only memory maps (weights are never copied to be read), whole-file reads for
 * small text files, paths, and the Tessera home ($TESSERA_HOME, default ~/.cache/tessera)
 * where set-up puts the default model. */
#ifndef TSR_FILEUTIL_H
#define TSR_FILEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tsr_mmap {
    char *path;         /* owned copy */
    const uint8_t *data;
    size_t size;
} tsr_mmap;

tsr_status tsr_mmap_open(const char *path, tsr_mmap *m);
void tsr_mmap_close(tsr_mmap *m);

/* Reads a whole file (NUL-terminated; *len excludes the NUL). max_bytes caps what is accepted. */
tsr_status tsr_read_file(const char *path, size_t max_bytes, char **out, size_t *len);
tsr_status tsr_write_file(const char *path, const void *data, size_t len);

bool tsr_path_is_dir(const char *path);
bool tsr_path_exists(const char *path);
/* Joins a and b with '/' into a malloc'd string. */
char *tsr_path_join(const char *a, const char *b);
/* $TESSERA_HOME or ~/.cache/tessera (malloc'd). */
char *tsr_home_dir(void);
/* The default model file: $TESSERA_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf (malloc'd). */
char *tsr_default_model_path(void);

#endif
