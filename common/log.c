/* stderr logging and progress meters (see log.h). */
#include "common/log.h"

#include "common/knobs.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int tsr__log_rank = -1;
static int tsr__log_level = -1;

void tsr_log_set_rank(int rank) { tsr__log_rank = rank; }

tsr_log_level tsr_log_get_level(void) {
    if (tsr__log_level < 0) tsr__log_level = tsr_knobs_get()->log_level;   /* TESSERA_LOG */
    return (tsr_log_level)tsr__log_level;
}

void tsr_log(tsr_log_level lvl, const char *fmt, ...) {
    if (lvl < tsr_log_get_level()) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char buf[2048];
    int n = 0;
    if (tsr__log_rank >= 0) n = snprintf(buf, sizeof buf, "[rank %d] ", tsr__log_rank);
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s: ", names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    if (n < (int)sizeof buf) vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", buf);
}

void tsr_progress(const char *what, int64_t done, int64_t total) {
    static int last_pct = -1;
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    int pct = total > 0 ? (int)(100 * done / total) : 100;
    if (tty) {
        fprintf(stderr, "\r%s %lld/%lld %3d%%", what, (long long)done, (long long)total, pct);
        if (done >= total) fputc('\n', stderr);
    } else if (done >= total || pct / 10 != last_pct / 10 || done == 0) {
        fprintf(stderr, "%s %lld/%lld %3d%%\n", what, (long long)done, (long long)total, pct);
    }
    last_pct = done >= total ? -1 : pct;
    fflush(stderr);
}

double tsr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
