/* Fork-join pool behind every threaded CPU op (see threadpool.h for why it spins first). */
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/status.h"

/* ~0.2-1 ms of spinning before a worker sleeps: long enough to bridge the gaps between the
 * ops of one forward step, short enough not to steal a shared core for long. */
#define TSR__SPIN_ITERS 20000

struct tsr_cpu_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;        /* bumped once per job */
    atomic_int pending;     /* workers still running the current job */
    atomic_bool stop;
    /* the current job */
    tsr_cpu_task_fn fn;
    void *ctx;
    int64_t n_items, grain;
    atomic_llong next;      /* dynamic scheduling counter */
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

static void tsr__run_share(tsr_cpu_pool *p, int tid) {
    if (p->grain == 0) {
        int64_t n = p->n_items, per = n / p->n, rem = n % p->n;
        int64_t i0 = tid * per + (tid < rem ? tid : rem);
        int64_t i1 = i0 + per + (tid < rem ? 1 : 0);
        if (i1 > i0) p->fn(p->ctx, i0, i1, tid);
        return;
    }
    for (;;) {
        int64_t i0 = atomic_fetch_add(&p->next, p->grain);
        if (i0 >= p->n_items) break;
        int64_t i1 = i0 + p->grain < p->n_items ? i0 + p->grain : p->n_items;
        p->fn(p->ctx, i0, i1, tid);
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
            if (atomic_load(&p->stop)) return NULL;
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        tsr__run_share(p, tid);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
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
    if (p->n == 1 || (grain == 0 && n == 1) || (grain > 0 && n <= grain)) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    tsr__run_share(p, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < TSR__SPIN_ITERS) tsr__cpu_relax();
        else sched_yield();
    }
}
