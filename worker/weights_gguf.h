/* The GGUF weight source (worker/weights_gguf.c; interface in weights_source.h). */
#ifndef TSR_WEIGHTS_GGUF_H
#define TSR_WEIGHTS_GGUF_H

#include <stdbool.h>

#include "common/model_config.h"
#include "common/status.h"
#include "worker/weights_source.h"

/* A file named *.gguf or starting with the GGUF magic. */
bool tsr__gguf_source_is(const char *path);
/* Reads and validates the config from the GGUF metadata into *cfg (architecture `llama`
 * only) and opens the file. */
tsr_status tsr__gguf_source_open(const char *path, tsr_model_config *cfg, tsr__src **out);

#endif
