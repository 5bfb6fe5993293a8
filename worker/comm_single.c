/* The communicator of a group of one (no mpirun): nothing to sum with, so every collective is
 * the identity.  The forward pass calls it unconditionally, so TP=1 and TP=N run one code path. */
#include <stdlib.h>
#include <string.h>

#include "worker/comm.h"

static tsr_status tsr__single_allreduce(tsr_comm *c, void *buf, int64_t n, tsr_dtype dtype) {
    (void)c, (void)buf, (void)n, (void)dtype;
    return TSR_OK;
}

/* Only reached with host-visible buffers (the CPU backend) or with send == recv. */
static tsr_status tsr__single_allgather(tsr_comm *c, const void *send, void *recv, int64_t n,
                                        tsr_dtype dtype) {
    (void)c;
    if (send != recv && n > 0) memcpy(recv, send, (size_t)n * tsr_dtype_size(dtype));
    return TSR_OK;
}

static void tsr__single_free(tsr_comm *c) { free(c); }

static const tsr_comm_ops tsr__single_ops = {
    .name = "single",
    .allreduce_sum = tsr__single_allreduce,
    .allgather = tsr__single_allgather,
    .free = tsr__single_free,
};

tsr_comm *tsr_comm_single_init(void) {
    tsr_comm *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ops = &tsr__single_ops;
    c->rank = 0;
    c->size = 1;
    return c;
}
