/* Unit-test harness helpers (see test_util.h). */
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

int tsr_test_failures = 0;
int tsr_test_checks = 0;

const char *tsr_test_source_dir(void) {
    const char *s = getenv("TSR_SOURCE_DIR");
    return s ? s : ".";
}

char *tsr_test_tmpdir(void) {
    char tmpl[] = "/tmp/tsr_test_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

int tsr_test_finish(void) {
    if (tsr_test_checks == 0) {
        fprintf(stderr, "FAIL: no checks ran\n");
        return 1;
    }
    if (tsr_test_failures) {
        fprintf(stderr, "FAIL: %d of %d checks failed\n", tsr_test_failures, tsr_test_checks);
        return 1;
    }
    printf("ok: %d checks\n", tsr_test_checks);
    return 0;
}
