/* Machine topology from hwloc (every rank): packages, NUMA nodes with their cores and memory,
 * the PCI devices that matter (GPUs, NICs) and the NUMA node each sits near.  `tessera env`
 * prints it; the rank start-up uses tsr_topology_cpuset_for_rank to bind each local rank to
 * the cores nearest its GPU (or to a fair share of the machine for the CPU backend), so host
 * work for a GPU never crosses a socket. */
#ifndef TSR_TOPOLOGY_H
#define TSR_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tsr_topology tsr_topology;

typedef struct tsr_topo_numa {
    int os_index;
    int n_cores, n_pus;
    uint64_t memory;      /* bytes local to the node (0 when the OS does not say) */
    char cpus[256];       /* its PUs as a list, "0-15,32-47" */
} tsr_topo_numa;

typedef struct tsr_topo_pci {
    char busid[32];       /* "0000:3b:00.0", the form cudaDeviceGetPCIBusId gives (lower case) */
    unsigned class_id, vendor_id, device_id;
    const char *kind;     /* "GPU", "network", "InfiniBand", "storage", "accelerator", "other" */
    char name[160];       /* vendor and device names when hwloc knows them, else "" */
    int numa;             /* os index of the one NUMA node it is local to; -1 when not one */
} tsr_topo_pci;

/* A set of CPUs to bind a rank to: the PU os indexes, the same as a list string, and why. */
typedef struct tsr_cpuset {
    int n_cpus;
    int *cpus;            /* malloc'd; tsr_cpuset_free */
    char list[512];       /* "0-7" */
    char why[256];        /* "cores 0-7 of NUMA node 0, near GPU 0 (0000:3b:00.0), 1 of 2 ranks there" */
} tsr_cpuset;

tsr_status tsr_topology_init(tsr_topology **out);
void tsr_topology_free(tsr_topology *t);

int tsr_topology_n_packages(const tsr_topology *t);
int tsr_topology_n_numa(const tsr_topology *t);
int tsr_topology_n_cores(const tsr_topology *t);
int tsr_topology_n_pus(const tsr_topology *t);
int tsr_topology_n_pci(const tsr_topology *t);
/* i in [0, n); 0 ok, -1 out of range. */
int tsr_topology_numa(const tsr_topology *t, int i, tsr_topo_numa *out);
int tsr_topology_pci(const tsr_topology *t, int i, tsr_topo_pci *out);
/* NUMA node (os index) a PCI device is local to, by bus id ("0000:3B:00.0", any case); -1 when
 * hwloc does not see the device or it is not local to exactly one node. */
int tsr_topology_numa_of_busid(const tsr_topology *t, const char *busid);
/* CPU model string from the OS ("AMD EPYC 9654"), or "unknown". */
const char *tsr_topology_cpu_model(const tsr_topology *t);
/* What the calling process is bound to right now, as a list ("0-63"); "" if hwloc can't tell. */
void tsr_topology_current_binding(const tsr_topology *t, char *buf, size_t cap);

/* A readable multi-line description (packages, NUMA nodes with cores/memory, PCI devices and
 * their NUMA node).  Returns what snprintf would: the length it needed. */
size_t tsr_topology_describe(const tsr_topology *t, char *buf, size_t cap);

/* Where local rank `local_rank` of `local_size` (ranks on this host) should run.  With a GPU
 * (gpu_index >= 0, a CUDA device index) whose NUMA node hwloc knows: the cores of that node,
 * split fairly among the local ranks whose GPUs sit on the same node (rank r is taken to use
 * GPU r % n_gpus, the default device choice).  Otherwise: the host's cores split fairly among
 * the local ranks, in topology order, so each share stays inside a package when it can.  All PUs
 * (hyperthreads) of the chosen cores are included. */
tsr_status tsr_topology_cpuset_for_rank(const tsr_topology *t, int local_rank, int local_size, int gpu_index,
                                        tsr_cpuset *out);
void tsr_cpuset_free(tsr_cpuset *s);
/* Binds the calling process (all its threads) to s. */
tsr_status tsr_topology_bind(const tsr_topology *t, const tsr_cpuset *s);

/* The fair split behind cpuset_for_rank: n_items in order, `size` shares; share `rank` is
 * [*begin, *begin + *count).  Shares differ by at most one and the first n_items % size get the
 * extra one.  With fewer items than shares (oversubscribed) every share still gets one item:
 * item rank % n_items.  n_items == 0 gives count 0. */
void tsr_topology_split(int n_items, int rank, int size, int *begin, int *count);

#endif
