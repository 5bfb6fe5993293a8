/* hwloc behind a small API (see topology.h): what `tessera env` shows and what rank binding
 * uses.  hwloc types stay in this file so the rest of the tree needs no hwloc headers. */
#include "worker/topology.h"

#include <ctype.h>
#include <hwloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/devices.h"

struct tsr_topology {
    hwloc_topology_t topo;
};

tsr_status tsr_topology_init(tsr_topology **out) {
    *out = NULL;
    tsr_topology *t = calloc(1, sizeof *t);
    if (!t) return tsr_errorf(TSR_ERR_OOM, "topology: out of memory");
    if (hwloc_topology_init(&t->topo) != 0) {
        free(t);
        return tsr_errorf(TSR_ERR_INTERNAL, "topology: hwloc_topology_init failed");
    }
    /* PCI devices that matter (GPUs, NICs, storage) and nothing else: bridges are noise here. */
    hwloc_topology_set_io_types_filter(t->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
#if HWLOC_API_VERSION >= 0x00020100
    /* Linux sysfs gives PCI devices and their locality on its own; the libpciaccess plugin
     * only adds names, reads every device's config space, and leaks on cleanup (which the
     * sanitizer build reports). */
    hwloc_topology_set_components(t->topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
#endif
    if (hwloc_topology_load(t->topo) != 0) {
        hwloc_topology_destroy(t->topo);
        free(t);
        return tsr_errorf(TSR_ERR_INTERNAL, "topology: hwloc_topology_load failed");
    }
    *out = t;
    return TSR_OK;
}

void tsr_topology_free(tsr_topology *t) {
    if (!t) return;
    hwloc_topology_destroy(t->topo);
    free(t);
}

static int tsr__count(const tsr_topology *t, hwloc_obj_type_t type) {
    int n = hwloc_get_nbobjs_by_type(t->topo, type);
    return n < 0 ? 0 : n;
}

int tsr_topology_n_packages(const tsr_topology *t) { return tsr__count(t, HWLOC_OBJ_PACKAGE); }
int tsr_topology_n_numa(const tsr_topology *t) { return tsr__count(t, HWLOC_OBJ_NUMANODE); }
int tsr_topology_n_cores(const tsr_topology *t) { return tsr__count(t, HWLOC_OBJ_CORE); }
int tsr_topology_n_pus(const tsr_topology *t) { return tsr__count(t, HWLOC_OBJ_PU); }
int tsr_topology_n_pci(const tsr_topology *t) { return tsr__count(t, HWLOC_OBJ_PCI_DEVICE); }

const char *tsr_topology_cpu_model(const tsr_topology *t) {
    hwloc_obj_t pkg = hwloc_get_obj_by_type(t->topo, HWLOC_OBJ_PACKAGE, 0);
    const char *m = pkg ? hwloc_obj_get_info_by_name(pkg, "CPUModel") : NULL;
    if (!m) m = hwloc_obj_get_info_by_name(hwloc_get_root_obj(t->topo), "CPUModel");
    return m ? m : "unknown";
}

int tsr_topology_numa(const tsr_topology *t, int i, tsr_topo_numa *out) {
    hwloc_obj_t n = hwloc_get_obj_by_type(t->topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
    if (i < 0 || !n) return -1;
    memset(out, 0, sizeof *out);
    out->os_index = (int)n->os_index;
    out->memory = n->attr ? n->attr->numanode.local_memory : 0;
    /* A NUMA node is a memory child; its cpuset says which cores are local to it. */
    out->n_cores = hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, n->cpuset, HWLOC_OBJ_CORE);
    out->n_pus = hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, n->cpuset, HWLOC_OBJ_PU);
    hwloc_bitmap_list_snprintf(out->cpus, sizeof out->cpus, n->cpuset);
    return 0;
}

/* The NUMA node (os index) whose cpuset alone intersects the device's non-I/O ancestor. */
static int tsr__numa_of_obj(const tsr_topology *t, hwloc_obj_t dev) {
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t->topo, dev);
    if (!anc || !anc->cpuset) return -1;
    int found = -1, hits = 0;
    for (hwloc_obj_t n = hwloc_get_next_obj_by_type(t->topo, HWLOC_OBJ_NUMANODE, NULL); n;
         n = hwloc_get_next_obj_by_type(t->topo, HWLOC_OBJ_NUMANODE, n)) {
        if (hwloc_bitmap_intersects(n->cpuset, anc->cpuset)) {
            found = (int)n->os_index;
            hits++;
        }
    }
    return hits == 1 ? found : -1;
}

static const char *tsr__pci_kind(unsigned class_id) {
    if (class_id == 0x0207) return "InfiniBand";
    switch (class_id >> 8) {
    case 0x01: return "storage";
    case 0x02: return "network";
    case 0x03: return "GPU";
    case 0x12: return "accelerator";
    default: return "other";
    }
}

int tsr_topology_pci(const tsr_topology *t, int i, tsr_topo_pci *out) {
    hwloc_obj_t d = hwloc_get_obj_by_type(t->topo, HWLOC_OBJ_PCI_DEVICE, (unsigned)i);
    if (i < 0 || !d) return -1;
    memset(out, 0, sizeof *out);
    const struct hwloc_pcidev_attr_s *p = &d->attr->pcidev;
    snprintf(out->busid, sizeof out->busid, "%04x:%02x:%02x.%01x", p->domain, p->bus, p->dev, p->func);
    out->class_id = p->class_id;
    out->vendor_id = p->vendor_id;
    out->device_id = p->device_id;
    out->kind = tsr__pci_kind(p->class_id);
    const char *vn = hwloc_obj_get_info_by_name(d, "PCIVendor");
    const char *dn = hwloc_obj_get_info_by_name(d, "PCIDevice");
    snprintf(out->name, sizeof out->name, "%s%s%s", vn ? vn : "", vn && dn ? " " : "", dn ? dn : "");
    out->numa = tsr__numa_of_obj(t, d);
    return 0;
}

int tsr_topology_numa_of_busid(const tsr_topology *t, const char *busid) {
    if (!busid || !busid[0]) return -1;
    char low[32];
    size_t i = 0;
    for (; busid[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)busid[i]);
    low[i] = 0;
    /* CUDA may give "00000000:3B:00.0" (8-digit domain); hwloc parses the number either way. */
    hwloc_obj_t d = hwloc_get_pcidev_by_busidstring(t->topo, low);
    return d ? tsr__numa_of_obj(t, d) : -1;
}

void tsr_topology_current_binding(const tsr_topology *t, char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (set && hwloc_get_cpubind(t->topo, set, HWLOC_CPUBIND_PROCESS) == 0)
        hwloc_bitmap_list_snprintf(buf, cap, set);
    hwloc_bitmap_free(set);
}

/* Appends to a bounded buffer while counting what an unbounded one would need. */
typedef struct {
    char *buf;
    size_t cap, len;
} tsr__out;

__attribute__((format(printf, 2, 3))) static void tsr__outf(tsr__out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) o->len += (size_t)n;
}

size_t tsr_topology_describe(const tsr_topology *t, char *buf, size_t cap) {
    tsr__out o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    uint64_t total = 0;
    hwloc_obj_t root = hwloc_get_root_obj(t->topo);
    if (root->total_memory) total = root->total_memory;
    tsr__outf(&o, "machine: %d package(s), %d NUMA node(s), %d core(s), %d PU(s), %.1f GiB; CPU %s\n",
              tsr_topology_n_packages(t), tsr_topology_n_numa(t), tsr_topology_n_cores(t), tsr_topology_n_pus(t),
              (double)total / (1024.0 * 1024 * 1024), tsr_topology_cpu_model(t));
    for (int i = 0; i < tsr_topology_n_packages(t); i++) {
        hwloc_obj_t p = hwloc_get_obj_by_type(t->topo, HWLOC_OBJ_PACKAGE, (unsigned)i);
        char cpus[256];
        hwloc_bitmap_list_snprintf(cpus, sizeof cpus, p->cpuset);
        tsr__outf(&o, "  package %u: %d core(s), PUs %s\n", p->os_index,
                  hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, p->cpuset, HWLOC_OBJ_CORE), cpus);
    }
    for (int i = 0; i < tsr_topology_n_numa(t); i++) {
        tsr_topo_numa n;
        if (tsr_topology_numa(t, i, &n)) continue;
        tsr__outf(&o, "  NUMA node %d: %d core(s), %d PU(s) [%s], %.1f GiB\n", n.os_index, n.n_cores, n.n_pus,
                  n.cpus, (double)n.memory / (1024.0 * 1024 * 1024));
    }
    int npci = tsr_topology_n_pci(t);
    if (npci == 0) tsr__outf(&o, "  PCI: no GPU, network or storage devices seen by hwloc\n");
    for (int i = 0; i < npci; i++) {
        tsr_topo_pci d;
        if (tsr_topology_pci(t, i, &d)) continue;
        char near[32];
        if (d.numa >= 0) snprintf(near, sizeof near, "NUMA node %d", d.numa);
        else snprintf(near, sizeof near, "no single NUMA node");
        tsr__outf(&o, "  PCI %s %-11s [%04x:%04x] near %s%s%s\n", d.busid, d.kind, d.vendor_id, d.device_id, near,
                  d.name[0] ? ": " : "", d.name);
    }
    return o.len;
}

/* ---- binding ---- */

void tsr_topology_split(int n_items, int rank, int size, int *begin, int *count) {
    TSR_ASSERT(size >= 1 && rank >= 0 && rank < size && n_items >= 0);
    if (n_items == 0) {
        *begin = 0;
        *count = 0;
        return;
    }
    if (n_items < size) {
        *begin = rank % n_items;
        *count = 1;
        return;
    }
    int base = n_items / size, extra = n_items % size;
    *begin = rank * base + (rank < extra ? rank : extra);
    *count = base + (rank < extra ? 1 : 0);
}

void tsr_cpuset_free(tsr_cpuset *s) {
    if (!s) return;
    free(s->cpus);
    s->cpus = NULL;
    s->n_cpus = 0;
}

/* Fills out from the cores inside `domain`, share `pos` of `n`. */
static tsr_status tsr__cpuset_from_domain(const tsr_topology *t, hwloc_const_cpuset_t domain, int pos, int n,
                                          tsr_cpuset *out, int *first, int *count) {
    hwloc_obj_type_t unit = HWLOC_OBJ_CORE;
    int n_units = hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, domain, unit);
    if (n_units <= 0) {   /* no core objects (odd VMs): hand out PUs instead */
        unit = HWLOC_OBJ_PU;
        n_units = hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, domain, unit);
    }
    if (n_units <= 0) return tsr_errorf(TSR_ERR_INTERNAL, "topology: no cores in the binding domain");
    int b = 0, c = 0;
    tsr_topology_split(n_units, pos, n, &b, &c);
    *first = b;
    *count = c;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    TSR_ASSERT(set);
    for (int i = b; i < b + c; i++) {
        hwloc_obj_t o = hwloc_get_obj_inside_cpuset_by_type(t->topo, domain, unit, (unsigned)i);
        if (!o) continue;
        hwloc_bitmap_or(set, set, o->cpuset);
    }
    int w = hwloc_bitmap_weight(set);
    out->cpus = calloc(w > 0 ? (size_t)w : 1, sizeof(int));
    TSR_ASSERT(out->cpus);
    out->n_cpus = 0;
    int id;
    hwloc_bitmap_foreach_begin(id, set) { out->cpus[out->n_cpus++] = id; }
    hwloc_bitmap_foreach_end();
    hwloc_bitmap_list_snprintf(out->list, sizeof out->list, set);
    hwloc_bitmap_free(set);
    return TSR_OK;
}

tsr_status tsr_topology_cpuset_for_rank(const tsr_topology *t, int local_rank, int local_size, int gpu_index,
                                        tsr_cpuset *out) {
    memset(out, 0, sizeof *out);
    if (local_size < 1 || local_rank < 0 || local_rank >= local_size)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "topology: local rank %d of %d is out of range", local_rank,
                          local_size);
    int c0 = 0, nc = 0;
    if (gpu_index >= 0) {
        int n_gpus = tsr_cuda_device_count(NULL);
        tsr_device_info info;
        memset(&info, 0, sizeof info);
        int numa = -1;
        if (gpu_index < n_gpus && tsr_cuda_device_info(gpu_index, &info) == 0)
            numa = tsr_topology_numa_of_busid(t, info.pci_bus_id);
        hwloc_obj_t node = NULL;
        for (hwloc_obj_t n = hwloc_get_next_obj_by_type(t->topo, HWLOC_OBJ_NUMANODE, NULL); n && numa >= 0;
             n = hwloc_get_next_obj_by_type(t->topo, HWLOC_OBJ_NUMANODE, n))
            if ((int)n->os_index == numa) node = n;
        if (node) {
            /* Which local ranks share this node: rank r drives GPU r % n_gpus. */
            int pos = 0, peers = 0;
            bool self = false;
            for (int r = 0; r < local_size; r++) {
                tsr_device_info ri;
                int g = r % n_gpus;
                int rn = g == gpu_index ? numa
                         : tsr_cuda_device_info(g, &ri) == 0 ? tsr_topology_numa_of_busid(t, ri.pci_bus_id)
                                                              : -1;
                if (rn != numa) continue;
                if (r < local_rank) pos++;
                if (r == local_rank) self = true;
                peers++;
            }
            if (!self) peers++;
            TSR_TRY(tsr__cpuset_from_domain(t, node->cpuset, pos, peers, out, &c0, &nc));
            snprintf(out->why, sizeof out->why,
                     "%d core(s) (#%d-%d) of NUMA node %d, near GPU %d (%.32s); share %d of %d there", nc, c0,
                     c0 + nc - 1, numa, gpu_index, info.pci_bus_id, pos + 1, peers);
            return TSR_OK;
        }
    }
    hwloc_const_cpuset_t all = hwloc_topology_get_topology_cpuset(t->topo);
    TSR_TRY(tsr__cpuset_from_domain(t, all, local_rank, local_size, out, &c0, &nc));
    snprintf(out->why, sizeof out->why, "%d core(s) (#%d-%d) of the host; share %d of %d local ranks%s", nc, c0,
             c0 + nc - 1, local_rank + 1,
             local_size, gpu_index >= 0 ? " (the GPU's NUMA node is unknown)" : "");
    return TSR_OK;
}

tsr_status tsr_topology_bind(const tsr_topology *t, const tsr_cpuset *s) {
    if (!s || s->n_cpus <= 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "topology: empty cpuset");
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    TSR_ASSERT(set);
    for (int i = 0; i < s->n_cpus; i++) hwloc_bitmap_set(set, (unsigned)s->cpus[i]);
    int rc = hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_PROCESS);
    hwloc_bitmap_free(set);
    if (rc != 0) return tsr_errorf(TSR_ERR_INTERNAL, "topology: binding to CPUs %s failed", s->list);
    return TSR_OK;
}
