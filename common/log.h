/* Logging to stderr with a level (TESSERA_LOG=debug|info|warn|error, default info) and, under
 * mpirun, the rank as a prefix.  Progress lines for long commands go through tsr_progress. */
#ifndef TSR_LOG_H
#define TSR_LOG_H

#include <stdint.h>

typedef enum { TSR_LOG_DEBUG = 0, TSR_LOG_INFO, TSR_LOG_WARN, TSR_LOG_ERROR } tsr_log_level;

void tsr_log_set_rank(int rank);           /* -1: no prefix */
tsr_log_level tsr_log_get_level(void);
void tsr_log(tsr_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TSR_LOGD(...) tsr_log(TSR_LOG_DEBUG, __VA_ARGS__)
#define TSR_LOGI(...) tsr_log(TSR_LOG_INFO, __VA_ARGS__)
#define TSR_LOGW(...) tsr_log(TSR_LOG_WARN, __VA_ARGS__)
#define TSR_LOGE(...) tsr_log(TSR_LOG_ERROR, __VA_ARGS__)

/* A one-line progress meter on stderr ("loading 12/30 tensors  40%"), redrawn in place when
 * stderr is a terminal and printed every ~10% otherwise.  done == total ends the line. */
void tsr_progress(const char *what, int64_t done, int64_t total);

/* Monotonic seconds. */
double tsr_now(void);

#endif
