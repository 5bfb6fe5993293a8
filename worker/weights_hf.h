/* The HF safetensors weight source (worker/weights_hf.c; interface in weights_source.h). */
#ifndef TSR_WEIGHTS_HF_H
#define TSR_WEIGHTS_HF_H

#include "common/model_config.h"
#include "common/status.h"
#include "worker/weights_source.h"

/* path: an HF directory (config.json + *.safetensors) or a .safetensors file with config.json
 * beside it.  Reads and validates the config into *cfg and opens the checkpoint. */
tsr_status tsr__hf_source_open(const char *path, tsr_model_config *cfg, tsr__src **out);

#endif
