/* Shared by the `tessera bench` commands (see bench_util.h). */
#include "tools/bench_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"

int tsr__bench_parse_list(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *v,
                          int max_n, int *n) {
    *n = 0;
    if (!s || !*s) {
        tsr_cli_err("%s: %s is empty; give a comma-separated list of integers in %lld..%lld\n", cmd, opt,
                    (long long)lo, (long long)hi);
        return 1;
    }
    for (const char *p = s;; p++) {
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        size_t len = (size_t)(q - p);
        if (*q && *q != ',') {
            tsr_cli_err("%s: %s '%s': item %d is not a whole number (a comma-separated list of integers in "
                        "%lld..%lld, no spaces)\n", cmd, opt, s, *n + 1, (long long)lo, (long long)hi);
            return 1;
        }
        if (len == 0) {
            tsr_cli_err("%s: %s '%s': item %d is empty\n", cmd, opt, s, *n + 1);
            return 1;
        }
        if (*n == max_n) {
            tsr_cli_err("%s: %s '%s': more than %d item%s\n", cmd, opt, s, max_n, max_n == 1 ? "" : "s");
            return 1;
        }
        errno = 0;
        unsigned long long x = len > 19 ? ~0ull : strtoull(p, NULL, 10);
        if (errno || x < (unsigned long long)lo || x > (unsigned long long)hi) {
            tsr_cli_err("%s: %s '%s': item %d (%.*s) is out of range %lld..%lld\n", cmd, opt, s, *n + 1, (int)len, p,
                        (long long)lo, (long long)hi);
            return 1;
        }
        v[(*n)++] = (int64_t)x;
        if (!*q) return 0;
        p = q;
    }
}

void tsr__bench_mean_std(const double *v, int n, double *mean, double *std) {
    double m = 0, ss = 0;
    for (int i = 0; i < n; i++) m += v[i];
    m = n > 0 ? m / n : 0;
    for (int i = 0; i < n; i++) ss += (v[i] - m) * (v[i] - m);
    *mean = m;
    *std = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

int64_t tsr__bench_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) {
            kb = strtoll(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

double tsr__bench_since_start(void) {
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    char buf[1024];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *p = strrchr(buf, ')');   /* the command name may hold spaces and parentheses */
    if (!p) return -1;
    /* after ") " come fields 3 (state) .. ; starttime is field 22 */
    unsigned long long start = 0;
    int field = 2;
    for (const char *q = p + 1; *q && field < 22; q++)
        if (*q == ' ') {
            field++;
            if (field == 22) start = strtoull(q + 1, NULL, 10);
        }
    long hz = sysconf(_SC_CLK_TCK);
    struct timespec ts;
    if (field != 22 || hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return -1;
    double s = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec - (double)start / (double)hz;
    return s >= 0 ? s : -1;
}

double tsr__bench_loadavg(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double v = -1;
    if (fscanf(f, "%lf", &v) != 1) v = -1;
    fclose(f);
    return v;
}
