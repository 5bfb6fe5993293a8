/* What the `tessera bench` commands share: comma lists of sizes checked one way (every bad
 * item refused with a message naming the option), mean and standard deviation of repeated
 * runs, and what the process cost (peak RSS, time since it started), read from /proc. */
#ifndef TSR_BENCH_UTIL_H
#define TSR_BENCH_UTIL_H

#include <stdint.h>

/* "128,512" -> v[0..*n) with every item an integer in [lo, hi]; at most max_n items.  An empty
 * list or item, a sign or space, text, a value out of range or too many items print
 * "CMD: OPT ..." (tsr_cli_err) and return 1; 0 on success. */
int tsr__bench_parse_list(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *v,
                          int max_n, int *n);

/* Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value). */
void tsr__bench_mean_std(const double *v, int n, double *mean, double *std);

/* The process's peak resident set (VmHWM of /proc/self/status) in bytes; -1 if unknown. */
int64_t tsr__bench_peak_rss(void);

/* Seconds since this process started (from /proc/self/stat, 1/CLK_TCK resolution); -1 if
 * unknown. */
double tsr__bench_since_start(void);

/* The 1-minute load average of the host (/proc/loadavg): how busy the machine was; -1 if
 * unknown. */
double tsr__bench_loadavg(void);

#endif
