/* The workspace weight source (worker/weights_workspace.c; interface in weights_source.h):
 * reading the rank files of a workspace (worker/workspace.h), and the tensor names that
 * worker/workspace_convert.c writes them under. */
#ifndef TSR_WEIGHTS_WORKSPACE_H
#define TSR_WEIGHTS_WORKSPACE_H

#include <stddef.h>

#include "common/model_config.h"
#include "common/status.h"
#include "worker/weights_source.h"

/* A kind's name in a workspace rank file ("tok_embd", "layers.3.q", ...). */
void tsr__ws_tensor_name(char *buf, size_t n, tsr_wkind k, int layer);
/* path: a workspace directory; reads its config.ini into *cfg (and the TP size it was made
 * for into the source's ws_tp).  The rank file is opened on first use. */
tsr_status tsr__ws_source_open(const char *path, tsr_model_config *cfg, tsr__src **out);

#endif
