/* Fork-join pool behind every threaded CPU op (see threadpool.h for why it spins first).
 *
 * Work is handed out in ranges from a shared counter and the caller waits for the ITEMS to be
 * done, not for every worker to check in: on a shared, oversubscribed machine a descheduled
 * worker then costs at most the one range it holds, instead of stalling every op until the
 * scheduler runs it again.  Jobs live in two slots used alternately; a worker pins a slot with
 * a reference count and re-checks the generation, so a late worker never runs a stale job and
 * a slot is never rewritten while a worker still reads it. */
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/status.h"

/* ~0.5 ms of spinning before a worker sleeps: long enough to bridge the gaps between the ops
 * of one forward step, short enough not to hold a shared core for long. */
#define TSR__SPIN_ITERS 20000

typedef struct {
    tsr_cpu_task_fn fn;
    void *ctx;
    int64_t n_items, grain;
    atomic_llong next;      /* first item not yet handed out */
    atomic_llong done;      /* items finished */
    atomic_int refs;        /* workers reading this slot */
} tsr__job;

struct tsr_cpu_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;        /* job generation; job g lives in slot g & 1 */
    atomic_bool stop;
    tsr__job jobs[2];
};

typedef struct {
    tsr_cpu_pool *p;
    int tid;
} tsr__worker_arg;

static inline void tsr__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void tsr__work(tsr__job *j, int tid) {
    for (;;) {
        int64_t i0 = atomic_fetch_add_explicit(&j->next, j->grain, memory_order_relaxed);
        if (i0 >= j->n_items) break;
        int64_t i1 = i0 + j->grain < j->n_items ? i0 + j->grain : j->n_items;
        j->fn(j->ctx, i0, i1, tid);
        atomic_fetch_add_explicit(&j->done, i1 - i0, memory_order_release);
    }
}

static void *tsr__worker(void *arg) {
    tsr__worker_arg *wa = arg;
    tsr_cpu_pool *p = wa->p;
    int tid = wa->tid;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < TSR__SPIN_ITERS) {
                tsr__cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        tsr__job *j = &p->jobs[g & 1];
        atomic_fetch_add(&j->refs, 1);
        if (atomic_load(&p->gen) == g) tsr__work(j, tid); /* else: a newer job; this one is done */
        atomic_fetch_sub(&j->refs, 1);
    }
}

tsr_cpu_pool *tsr_cpu_pool_init(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    tsr_cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    TSR_ASSERT(p->threads);
    for (int i = 1; i < n_threads; i++) {
        tsr__worker_arg *wa = malloc(sizeof *wa);
        TSR_ASSERT(wa);
        wa->p = p;
        wa->tid = i;
        int rc = pthread_create(&p->threads[i], NULL, tsr__worker, wa);
        TSR_ASSERT(rc == 0);
    }
    return p;
}

void tsr_cpu_pool_free(tsr_cpu_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int tsr_cpu_pool_size(const tsr_cpu_pool *p) { return p->n; }

void tsr_cpu_pool_run(tsr_cpu_pool *p, int64_t n, int64_t grain, tsr_cpu_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain <= 0) grain = (n + p->n - 1) / p->n; /* one range per thread */
    if (p->n == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    unsigned g = atomic_load(&p->gen) + 1;
    tsr__job *j = &p->jobs[g & 1];
    while (atomic_load(&j->refs) > 0) tsr__cpu_relax(); /* a late worker backing out of job g-2 */
    j->fn = fn;
    j->ctx = ctx;
    j->n_items = n;
    j->grain = grain;
    atomic_store(&j->next, 0);
    atomic_store(&j->done, 0);
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->gen, g, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    tsr__work(j, 0);
    int spins = 0;
    while (atomic_load_explicit(&j->done, memory_order_acquire) < n) {
        if (++spins < TSR__SPIN_ITERS) tsr__cpu_relax();
        else sched_yield();
    }
}
