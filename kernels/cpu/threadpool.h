/* A tiny fork-join thread pool for the CPU backend: the caller is thread 0 and n - 1 workers
 * wait for the next job, spinning briefly (a decode step dispatches a few hundred small jobs,
 * so a futex round trip each would cost as much as the work) and then sleeping on a condition
 * variable, so an idle pool costs nothing.  One job at a time; not reentrant. */
#ifndef TSR_CPU_THREADPOOL_H
#define TSR_CPU_THREADPOOL_H

#include <stdint.h>

typedef struct tsr_cpu_pool tsr_cpu_pool;

/* Runs fn(ctx, i0, i1, tid) over [i0, i1) ranges that cover [0, n) exactly once. */
typedef void (*tsr_cpu_task_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

tsr_cpu_pool *tsr_cpu_pool_init(int n_threads);
void tsr_cpu_pool_free(tsr_cpu_pool *p);
int tsr_cpu_pool_size(const tsr_cpu_pool *p);

/* Threads take ranges of `grain` items from a shared counter (grain == 0: n / n_threads, one
 * range per thread when all are running).  Returns when every item is done.  tid (0 = the
 * caller) is unique among the threads running concurrently: index per-thread scratch by it. */
void tsr_cpu_pool_run(tsr_cpu_pool *p, int64_t n, int64_t grain, tsr_cpu_task_fn fn, void *ctx);

#endif
