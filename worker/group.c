/* MPI bootstrap and control-plane helpers of the rank group (see group.h).  Everything here
 * runs on host memory over MPI_COMM_WORLD; the data plane (all-reduce of activations) lives in
 * the communicators (comm_*.c), which wait through tsr__group_wait too. */
#define _GNU_SOURCE
#include "worker/group.h"

#include <mpi.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/knobs.h"
#include "common/log.h"

#define TSR__MSG_LEN 512

/* The process has one MPI world, so "broken" is process-wide: set once, by the one MPI thread,
 * read by any (the engine's health). */
static atomic_bool tsr__broken;
static char tsr__broken_why[TSR__MSG_LEN];

static double tsr__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool tsr_group_broken(const char **why) {
    bool b = atomic_load(&tsr__broken);
    if (why) *why = b ? tsr__broken_why : NULL;
    return b;
}

tsr_status tsr__group_fail(const char *fmt, ...) {
    if (!atomic_load(&tsr__broken)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tsr__broken_why, sizeof tsr__broken_why, fmt, ap);
        va_end(ap);
        atomic_store(&tsr__broken, true);
        TSR_LOGE("the rank group is broken: %s", tsr__broken_why);
    }
    return tsr_errorf(TSR_ERR_COMM, "%s", tsr__broken_why);
}

double tsr_group_step_timeout(void) { return tsr_knobs_get()->comm_timeout_s; }

tsr_status tsr__group_wait(void *req, double timeout_s, const char *what) {
    MPI_Request *rq = req;
    if (atomic_load(&tsr__broken)) return tsr_errorf(TSR_ERR_COMM, "%s", tsr__broken_why);
    const double t0 = tsr__now();
    long sleep_ns = 0;
    for (;;) {
        int done = 0;
        if (MPI_Test(rq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return tsr__group_fail("rank %d: MPI failed while waiting for %s", tsr_group_world_rank(), what);
        if (done) return TSR_OK;
        double el = tsr__now() - t0;
        if (timeout_s > 0 && el > timeout_s)
            return tsr__group_fail("rank %d: no answer from the other ranks within %.1f s (%s): a rank died, "
                                   "stopped or lost its link", tsr_group_world_rank(), timeout_s, what);
        /* a step's collectives are quick: poll, yielding the core (ranks may share cores);
         * after 100 ms back off to sleeps of at most 1 ms, so a worker waiting for the next step
         * of an idle server does not hold a core */
        if (el < 0.1) {
            sched_yield();
        } else {
            sleep_ns = sleep_ns ? (sleep_ns * 2 > 1000000 ? 1000000 : sleep_ns * 2) : 50000;
            struct timespec ts = {0, sleep_ns};
            nanosleep(&ts, NULL);
        }
    }
}

/* The size the launcher gave this process's world: 1 without a launcher; -1 when a launcher is
 * there but did not say (MPI is initialized to ask it). */
static int tsr__launcher_size(void) {
    const char *v[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *s = getenv(v[i]);
        if (s && atoi(s) > 0) return atoi(s);
    }
    const char *launched[] = {"PMIX_RANK", "PMI_RANK", "PMI_FD", "SLURM_STEP_ID", "HYDRA_CONTROL_FD"};
    for (size_t i = 0; i < sizeof launched / sizeof launched[0]; i++)
        if (getenv(launched[i])) return -1;
    return 1;
}

static const char *tsr__level_name(int l) {
    switch (l) {
    case MPI_THREAD_SINGLE: return "SINGLE";
    case MPI_THREAD_FUNNELED: return "FUNNELED";
    case MPI_THREAD_SERIALIZED: return "SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MULTIPLE";
    default: return "?";
    }
}

tsr_status tsr_group_init(int *argc, char ***argv, tsr_group *g) {
    memset(g, 0, sizeof *g);
    g->size = g->local_size = 1;
    if (gethostname(g->host, sizeof g->host - 1) != 0) snprintf(g->host, sizeof g->host, "?");
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && tsr__launcher_size() == 1) {
        /* a group of one: no MPI at all (no listening sockets, no thread rules) */
        g->thread_level = MPI_THREAD_MULTIPLE;
        return TSR_OK;
    }
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return tsr_errorf(TSR_ERR_COMM, "MPI_Init_thread failed");
        g->initialized = true;
        g->thread_level = provided;
    } else {
        MPI_Query_thread(&g->thread_level);
    }
    if (g->thread_level < MPI_THREAD_FUNNELED) {
        tsr_status st = tsr_errorf(TSR_ERR_UNSUPPORTED,
                                   "the MPI library provides thread level %s; tessera runs helper threads and needs "
                                   "at least FUNNELED (all MPI calls on one thread)",
                                   tsr__level_name(g->thread_level));
        tsr_group_finalize(g);
        return st;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &g->local_rank);
    MPI_Comm_size(local, &g->local_size);
    MPI_Comm_free(&local);
    if (g->size > 1) tsr_log_set_rank(g->rank);
    TSR_LOGD("MPI thread level %s; every MPI call is made on this thread", tsr__level_name(g->thread_level));
    return TSR_OK;
}

int tsr_group_world_rank(void) {
    int inited = 0, fin = 0, r = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

void tsr_group_finalize(tsr_group *g) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (g->initialized && !fin && !tsr_group_broken(NULL)) MPI_Finalize();
    g->initialized = false;
}

tsr_status tsr_group_agree(const tsr_group *g, tsr_status mine) {
    if (g->size <= 1) return mine;
    /* the lowest failing rank, or size when none failed */
    int me = mine == TSR_OK ? g->size : g->rank, first = g->size;
    char saved[TSR__MSG_LEN - 96];
    snprintf(saved, sizeof saved, "%s", mine == TSR_OK ? "" : tsr_last_error());
    MPI_Request rq;
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    MPI_Iallreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &rq);
    TSR_TRY(tsr__group_wait(&rq, g->timeout_s, "agreeing on a step"));
    if (first == g->size) return TSR_OK;
    struct { int status; char msg[TSR__MSG_LEN]; } m = {0};
    if (g->rank == first) {
        m.status = (int)mine;
        snprintf(m.msg, sizeof m.msg, "rank %d (%.40s): %s", g->rank, g->host, saved);
    }
    MPI_Ibcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD, &rq);
    TSR_TRY(tsr__group_wait(&rq, g->timeout_s, "agreeing on a step"));
    m.msg[TSR__MSG_LEN - 1] = 0;
    return tsr_errorf((tsr_status)m.status, "%s", m.msg);
}

tsr_status tsr_group_bcast(const tsr_group *g, void *buf, size_t n, int root, double timeout_s) {
    if (g->size <= 1 || n == 0) return TSR_OK;
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        MPI_Request rq;
        if (MPI_Ibcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
            return tsr__group_fail("MPI_Ibcast of %zu bytes from rank %d failed", n, root);
        TSR_TRY(tsr__group_wait(&rq, timeout_s, "a broadcast from rank 0"));
    }
    return TSR_OK;
}

static tsr_status tsr__allreduce(const tsr_group *g, void *in, void *out, MPI_Datatype t, MPI_Op op) {
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    MPI_Request rq;
    if (MPI_Iallreduce(in, out, 1, t, op, MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
        return tsr__group_fail("MPI_Iallreduce failed");
    return tsr__group_wait(&rq, g->timeout_s, "an all-reduce");
}

int64_t tsr_group_min_i64(const tsr_group *g, int64_t v) {
    if (g->size <= 1) return v;
    long long in = v, out = v;
    if (tsr__allreduce(g, &in, &out, MPI_LONG_LONG, MPI_MIN) != TSR_OK) return INT64_MIN;
    return out;
}

int64_t tsr_group_max_i64(const tsr_group *g, int64_t v) {
    if (g->size <= 1) return v;
    long long in = v, out = v;
    if (tsr__allreduce(g, &in, &out, MPI_LONG_LONG, MPI_MAX) != TSR_OK) return INT64_MAX;
    return out;
}

tsr_status tsr_group_allgather_i64(const tsr_group *g, int64_t v, int64_t *out) {
    if (g->size <= 1) {
        out[0] = v;
        return TSR_OK;
    }
    if (tsr_group_broken(NULL)) return tsr__group_fail("(broken)");
    long long in = v;
    MPI_Request rq;
    if (MPI_Iallgather(&in, 1, MPI_LONG_LONG, out, 1, MPI_LONG_LONG, MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
        return tsr__group_fail("MPI_Iallgather failed");
    return tsr__group_wait(&rq, g->timeout_s, "an all-gather");
}
