/* The dummy weight source (worker/weights_dummy.c; interface in weights_source.h). */
#ifndef TSR_WEIGHTS_DUMMY_H
#define TSR_WEIGHTS_DUMMY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "worker/weights_source.h"

tsr_status tsr__dummy_source_open(uint64_t seed, tsr__src **out);
bool tsr__dummy_source_is(const tsr__src *s);
/* The generator's parameters for (kind, layer) of a dummy source: element [r][c] of the
 * unsplit tensor is offset + scale * tsr_hash_uniform(key, r * C + c) (kernels/backend.h; a
 * device fills the same values through its fill_hash op). */
void tsr__dummy_params(const tsr__src *s, tsr_wkind k, int layer, uint64_t *key, float *scale, float *offset,
                       int64_t *C);

#endif
