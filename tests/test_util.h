/* A minimal unit-test harness: CHECK records a failure with file:line and goes on; a test
 * program returns tsr_test_finish() as its exit code. */
#ifndef TSR_TEST_UTIL_H
#define TSR_TEST_UTIL_H

#include <math.h>
#include <stdio.h>

extern int tsr_test_failures;
extern int tsr_test_checks;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        tsr_test_checks++;                                                                  \
        if (!(cond)) {                                                                      \
            tsr_test_failures++;                                                            \
            fprintf(stderr, "CHECK failed: %s at %s:%d\n", #cond, __FILE__, __LINE__);     \
        }                                                                                   \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                \
    do {                                                                                    \
        tsr_test_checks++;                                                                  \
        if (!(cond)) {                                                                      \
            tsr_test_failures++;                                                            \
            fprintf(stderr, "CHECK failed: %s at %s:%d: ", #cond, __FILE__, __LINE__);     \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g", (double)(a), (double)(b))

/* Directory of the source tree (TSR_SOURCE_DIR, set by ctest), for fixtures. */
const char *tsr_test_source_dir(void);
/* A fresh temporary directory (malloc'd path), removed by nothing: under /tmp. */
char *tsr_test_tmpdir(void);
int tsr_test_finish(void);

#endif
