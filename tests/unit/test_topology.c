/* worker/topology: the fair split behind rank binding (exhaustively over small cases), and
 * the hwloc view of this machine (whatever it is: counts agree with each other, binding shares
 * of the host are disjoint and cover every PU, errors for ranks out of range). */
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "worker/topology.h"

static void check_split(int n, int size) {
    int seen[256] = {0};
    int min_c = 1 << 30, max_c = 0, next = 0;
    for (int r = 0; r < size; r++) {
        int b = -1, c = -1;
        tsr_topology_split(n, r, size, &b, &c);
        if (n == 0) {
            CHECK(c == 0);
            continue;
        }
        CHECK_MSG(c >= 1, "n=%d size=%d rank=%d: empty share", n, size, r);
        CHECK(b >= 0 && b + c <= n);
        if (n >= size) {
            /* contiguous, in rank order, no overlap, sizes within one of each other */
            CHECK_MSG(b == next, "n=%d size=%d rank=%d: begins at %d, expected %d", n, size, r, b, next);
            next = b + c;
            if (c < min_c) min_c = c;
            if (c > max_c) max_c = c;
            for (int i = b; i < b + c; i++) seen[i]++;
        } else {
            CHECK(c == 1 && b == r % n);   /* oversubscribed: round robin, one item each */
        }
    }
    if (n >= size && n > 0) {
        CHECK(next == n);
        CHECK_MSG(max_c - min_c <= 1, "n=%d size=%d: shares %d..%d", n, size, min_c, max_c);
        for (int i = 0; i < n; i++) CHECK(seen[i] == 1);
    }
}

int main(void) {
    for (int n = 0; n <= 70; n++)
        for (int size = 1; size <= 17; size++) check_split(n, size);
    /* the first n % size shares take the extra item */
    int b, c;
    tsr_topology_split(10, 0, 4, &b, &c);
    CHECK(b == 0 && c == 3);
    tsr_topology_split(10, 1, 4, &b, &c);
    CHECK(b == 3 && c == 3);
    tsr_topology_split(10, 2, 4, &b, &c);
    CHECK(b == 6 && c == 2);
    tsr_topology_split(10, 3, 4, &b, &c);
    CHECK(b == 8 && c == 2);
    tsr_topology_split(3, 4, 8, &b, &c);
    CHECK(b == 1 && c == 1);

    tsr_topology *t = NULL;
    CHECK(tsr_topology_init(&t) == TSR_OK);
    if (!t) return tsr_test_finish();
    int npu = tsr_topology_n_pus(t), ncore = tsr_topology_n_cores(t), nnuma = tsr_topology_n_numa(t);
    CHECK(npu >= 1 && ncore >= 1 && ncore <= npu);
    CHECK(nnuma >= 1 && tsr_topology_n_packages(t) >= 1);
    int numa_pus = 0, numa_cores = 0;
    for (int i = 0; i < nnuma; i++) {
        tsr_topo_numa n;
        CHECK(tsr_topology_numa(t, i, &n) == 0);
        CHECK(n.n_pus >= 0 && (n.n_pus == 0 || n.cpus[0] != 0));
        numa_pus += n.n_pus;
        numa_cores += n.n_cores;
    }
    CHECK(numa_pus == npu);
    CHECK(numa_cores == ncore);
    tsr_topo_numa dummy;
    CHECK(tsr_topology_numa(t, nnuma, &dummy) == -1);
    for (int i = 0; i < tsr_topology_n_pci(t); i++) {
        tsr_topo_pci d;
        CHECK(tsr_topology_pci(t, i, &d) == 0);
        CHECK(strlen(d.busid) == 12 && d.kind != NULL);
        CHECK(d.numa >= -1);
        CHECK(tsr_topology_numa_of_busid(t, d.busid) == d.numa);
    }
    CHECK(tsr_topology_numa_of_busid(t, "ffff:ff:1f.7") == -1);
    CHECK(tsr_topology_numa_of_busid(t, "") == -1);

    size_t need = tsr_topology_describe(t, NULL, 0);
    CHECK(need > 0);
    char *desc = malloc(need + 1);
    CHECK(tsr_topology_describe(t, desc, need + 1) == need);
    CHECK(strlen(desc) == need && strstr(desc, "NUMA node") && strstr(desc, "package"));
    char small[16];
    CHECK(tsr_topology_describe(t, small, sizeof small) == need && strlen(small) == sizeof small - 1);
    free(desc);

    /* Shares of the host for 1..2*npu local ranks (CPU backend, no GPU). */
    for (int size = 1; size <= 2 * npu && size <= 16; size++) {
        int *owner = calloc(4096, sizeof(int));
        int covered = 0;
        for (int r = 0; r < size; r++) {
            tsr_cpuset s;
            CHECK(tsr_topology_cpuset_for_rank(t, r, size, -1, &s) == TSR_OK);
            CHECK(s.n_cpus >= 1 && s.list[0] && s.why[0]);
            for (int i = 0; i < s.n_cpus; i++) {
                CHECK(s.cpus[i] >= 0 && s.cpus[i] < 4096);
                if (s.cpus[i] < 0 || s.cpus[i] >= 4096) continue;
                if (owner[s.cpus[i]]++ == 0) covered++;
                else CHECK_MSG(size > ncore, "size %d: cpu %d given twice", size, s.cpus[i]);
            }
            tsr_cpuset_free(&s);
        }
        CHECK_MSG(covered == npu, "size %d: %d of %d PUs covered", size, covered, npu);
        free(owner);
    }
    tsr_cpuset s;
    CHECK(tsr_topology_cpuset_for_rank(t, 0, 1, -1, &s) == TSR_OK);
    CHECK(s.n_cpus == npu);
    /* Binding to the whole host is always allowed and changes nothing that matters. */
    CHECK(tsr_topology_bind(t, &s) == TSR_OK);
    char cur[256];
    tsr_topology_current_binding(t, cur, sizeof cur);
    CHECK(!strcmp(cur, s.list));
    tsr_cpuset_free(&s);
    /* A GPU index with no such GPU (CPU build / no driver) falls back to the host split. */
    CHECK(tsr_topology_cpuset_for_rank(t, 0, 1, 0, &s) == TSR_OK);
    CHECK(s.n_cpus >= 1);
    tsr_cpuset_free(&s);
    CHECK(tsr_topology_cpuset_for_rank(t, 2, 2, -1, &s) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_topology_cpuset_for_rank(t, 0, 0, -1, &s) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_topology_cpuset_for_rank(t, -1, 2, -1, &s) == TSR_ERR_INVALID_ARG);
    tsr_cpuset empty = {0};
    CHECK(tsr_topology_bind(t, &empty) == TSR_ERR_INVALID_ARG);
    tsr_topology_free(t);
    return tsr_test_finish();
}
