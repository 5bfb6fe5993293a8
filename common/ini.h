/* A small INI reader/writer for workspace config.ini files (TurboMind's format: one [llama]
 * section of key = value lines).  Keys are looked up in one section; values are strings that
 * typed getters parse strictly, so a mistyped number in a hand-edited config.ini is an error
 * naming the key instead of a silent zero. */
#ifndef TSR_INI_H
#define TSR_INI_H

#include <stdint.h>

#include "common/status.h"

typedef struct tsr_ini tsr_ini;

tsr_status tsr_ini_load(const char *path, tsr_ini **out);
void tsr_ini_free(tsr_ini *ini);
/* NULL when absent. */
const char *tsr_ini_get(const tsr_ini *ini, const char *section, const char *key);
/* TSR_ERR_NOT_FOUND when absent (message names the key), TSR_ERR_FORMAT when not a number. */
tsr_status tsr_ini_get_i64(const tsr_ini *ini, const char *section, const char *key, int64_t *out);
tsr_status tsr_ini_get_f64(const tsr_ini *ini, const char *section, const char *key, double *out);

#endif
