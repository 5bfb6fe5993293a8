/* libFuzzer harness for the HF config.json reader (ci/fuzz.sh builds and runs it): the input is
 * written to a private temp file and parsed; any JSON must give a config that validates or a
 * status, never a crash or an undefined cast. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void tsr__cleanup(void) { unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/tsr_fuzz_config_%d.json", (int)getpid());
        atexit(tsr__cleanup);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    tsr_model_config cfg;
    if (tsr_model_config_from_hf(path, &cfg) == TSR_OK && tsr_model_config_validate(&cfg, path) != TSR_OK) abort();
    return 0;
}
