/* `tessera env`: what this build and this machine are: Tessera's version, the version of every
 * library it links (each asked at run time, with the headers it was built against beside it),
 * the CUDA devices seen (or why none), the CPU/NUMA/PCI topology from hwloc, and where each
 * local rank would be bound.  The first thing to paste into a bug report; `--json` for tools.
 * It does not call MPI_Init (MPI_Get_library_version is allowed before it), so it runs the same
 * plainly and under mpirun, where each rank reports its own local rank and binding. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <http_parser.h>
#include <mpi.h>
#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hwloc.h>
#include <uv.h>

#include "kernels/devices.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "worker/topology.h"

#ifndef TSR_VERSION
#define TSR_VERSION "unknown"
#endif

typedef struct {
    const char *name;
    char version[64];     /* "1.44.2"; "not built" / "none" when absent */
    char detail[512];
} tsr__dep;

enum { TSR__MAX_DEPS = 16 };

static void tsr__dep_add(tsr__dep *deps, int *n, const char *name, const char *version, const char *detail) {
    TSR_ASSERT(*n < TSR__MAX_DEPS);
    tsr__dep *d = &deps[(*n)++];
    d->name = name;
    snprintf(d->version, sizeof d->version, "%s", version ? version : "unknown");
    snprintf(d->detail, sizeof d->detail, "%s", detail ? detail : "");
}

/* The first "N.N[.N...]" run in s (a library's banner) into out; "unknown" when there is none. */
static void tsr__first_version(const char *s, char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    for (const char *p = s; p && *p; p++) {
        if (*p < '0' || *p > '9' || (p > s && ((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.'))) continue;
        const char *q = p;
        int dots = 0;
        while ((*q >= '0' && *q <= '9') || (*q == '.' && q[1] >= '0' && q[1] <= '9')) dots += *q++ == '.';
        if (dots >= 1) {
            snprintf(out, cap, "%.*s", (int)(q - p), p);
            return;
        }
    }
}

static void tsr__hex3(unsigned v, char *out, size_t cap) {
    snprintf(out, cap, "%u.%u.%u", (v >> 16) & 0xffu, (v >> 8) & 0xffu, v & 0xffu);
}

static int tsr__collect_deps(tsr__dep *deps) {
    int n = 0;
    char ver[64], det[512];

    /* MPI: library banner and standard version; both allowed before MPI_Init. */
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int liblen = 0, mpi_major = 0, mpi_minor = 0;
    MPI_Get_library_version(lib, &liblen);
    MPI_Get_version(&mpi_major, &mpi_minor);
    char *nl = strchr(lib, '\n');
    if (nl) *nl = 0;
    for (char *p = lib; *p; p++)
        if (*p == '\t') *p = ' ';
    tsr__first_version(lib, ver, sizeof ver);
    snprintf(det, sizeof det, "%s; MPI standard %d.%d", lib, mpi_major, mpi_minor);
    tsr__dep_add(deps, &n, "MPI", ver, det);

    snprintf(det, sizeof det, "built against %d.%d.%d", UV_VERSION_MAJOR, UV_VERSION_MINOR, UV_VERSION_PATCH);
    tsr__dep_add(deps, &n, "libuv", uv_version_string(), det);

    nghttp2_info *ng = nghttp2_version(0);
    snprintf(det, sizeof det, "built against %s", NGHTTP2_VERSION);
    tsr__dep_add(deps, &n, "nghttp2", ng ? ng->version_str : NULL, det);

    snprintf(det, sizeof det, "built against %s", PROTOBUF_C_VERSION);
    tsr__dep_add(deps, &n, "protobuf-c", protobuf_c_version(), det);

    char hw_hdr[32];
    tsr__hex3(hwloc_get_api_version(), ver, sizeof ver);
    tsr__hex3(HWLOC_API_VERSION, hw_hdr, sizeof hw_hdr);
    snprintf(det, sizeof det, "release from the headers; API %s at run time (hwloc_get_api_version), %s in the "
             "headers (HWLOC_API_VERSION 0x%08x)", ver, hw_hdr, (unsigned)HWLOC_API_VERSION);
#ifdef HWLOC_VERSION
    tsr__dep_add(deps, &n, "hwloc", HWLOC_VERSION, det);
#else
    tsr__dep_add(deps, &n, "hwloc", ver, det);
#endif

    snprintf(det, sizeof det, "built against %d.%d.%d", CJSON_VERSION_MAJOR, CJSON_VERSION_MINOR, CJSON_VERSION_PATCH);
    tsr__dep_add(deps, &n, "cJSON", cJSON_Version(), det);

    const char *cfg = openblas_get_config();
    tsr__first_version(cfg, ver, sizeof ver);
    snprintf(det, sizeof det, "%s; core %s; %d thread(s)", cfg ? cfg : "?", openblas_get_corename(),
             openblas_get_num_threads());
    tsr__dep_add(deps, &n, "OpenBLAS", ver, det);

    unsigned long hp = http_parser_version();
    snprintf(ver, sizeof ver, "%lu.%lu.%lu", (hp >> 16) & 255, (hp >> 8) & 255, hp & 255);
    snprintf(det, sizeof det, "built against %d.%d.%d", HTTP_PARSER_VERSION_MAJOR, HTTP_PARSER_VERSION_MINOR,
             HTTP_PARSER_VERSION_PATCH);
    tsr__dep_add(deps, &n, "http-parser", ver, det);

    int rt = 0, drv = 0, cublas = 0, nccl = 0;
    tsr_cuda_versions(&rt, &drv, &cublas, &nccl);
#ifdef TSR_HAVE_CUDA
    const char *absent = "none";
    const char *why_absent = "not found at run time";
#else
    const char *absent = "not built";
    const char *why_absent = "built without CUDA (-DTESSERA_CUDA=OFF or no nvcc)";
#endif
    if (rt) snprintf(ver, sizeof ver, "%d.%d", rt / 1000, (rt % 1000) / 10);
    tsr__dep_add(deps, &n, "CUDA runtime", rt ? ver : absent, rt ? "cudaRuntimeGetVersion" : why_absent);
    if (drv) snprintf(ver, sizeof ver, "%d.%d", drv / 1000, (drv % 1000) / 10);
    tsr__dep_add(deps, &n, "CUDA driver", drv ? ver : absent,
                 drv ? "cudaDriverGetVersion (newest CUDA the driver supports)" : why_absent);
    if (cublas) snprintf(ver, sizeof ver, "%d.%d.%d", cublas / 10000, (cublas % 10000) / 100, cublas % 100);
    tsr__dep_add(deps, &n, "cuBLAS", cublas ? ver : absent, cublas ? "headers" : why_absent);
    /* NCCL codes are MAJOR*10000 + MINOR*100 + PATCH since 2.9, MAJOR*1000 + MINOR*100 + PATCH before. */
    if (nccl >= 20900) snprintf(ver, sizeof ver, "%d.%d.%d", nccl / 10000, (nccl % 10000) / 100, nccl % 100);
    else if (nccl) snprintf(ver, sizeof ver, "%d.%d.%d", nccl / 1000, (nccl % 1000) / 100, nccl % 100);
    tsr__dep_add(deps, &n, "NCCL", nccl ? ver : absent, nccl ? "ncclGetVersion" : why_absent);
    return n;
}

/* Local rank and size as the launcher tells them, without MPI_Init. */
static const char *tsr__launcher(int *local_rank, int *local_size) {
    static const struct { const char *rank, *size, *name; } vars[] = {
        {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "mpirun (Open MPI)"},
        {"MPI_LOCALRANKID", "MPI_LOCALNRANKS", "mpiexec (MPICH)"},
        {"SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "srun (Slurm)"},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *r = getenv(vars[i].rank), *s = getenv(vars[i].size);
        if (r && s && atoi(s) >= 1 && atoi(r) >= 0 && atoi(r) < atoi(s)) {
            *local_rank = atoi(r);
            *local_size = atoi(s);
            return vars[i].name;
        }
    }
    *local_rank = 0;
    *local_size = 1;
    return "none (a group of one)";
}

static double tsr__gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

int tsr_cmd_env(int argc, char **argv) {
    bool json = false;
    int64_t ranks = 0;
    const tsr_opt opts[] = {
        {"--json", TSR_OPT_FLAG, &json, NULL, "print the same as one JSON object"},
        {"--ranks", TSR_OPT_INT, &ranks, "N",
         "show the CPU binding each of N local ranks would get (default: the launcher's local size, else 1)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    int np = 0;
    int r = tsr_cli_parse("tessera env [--json] [--ranks N]",
                          "Print Tessera's version, the version of every library it uses, the CUDA devices it\n"
                          "sees (or why none), the CPU/NUMA/PCI topology from hwloc, and where each local rank\n"
                          "would be bound.",
                          opts, argc, argv, NULL, 0, &np);
    if (r == TSR_CLI_HELP) return 0;
    if (r != TSR_CLI_OK) return 1;
    if (ranks < 0 || ranks > 4096) {
        tsr_cli_err("tessera env: --ranks must be between 1 and 4096\n");
        return 1;
    }

    tsr__dep deps[TSR__MAX_DEPS];
    int ndeps = tsr__collect_deps(deps);
#ifdef TSR_HAVE_CUDA
    const bool cuda_built = true;
#else
    const bool cuda_built = false;
#endif
    const char *why = NULL;
    int ngpu = tsr_cuda_device_count(&why);

    tsr_topology *topo = NULL;
    if (tsr_topology_init(&topo) != TSR_OK) {
        tsr_cli_err("tessera env: %s\n", tsr_last_error());
        return 1;
    }
    int local_rank = 0, local_size = 1;
    const char *launcher = tsr__launcher(&local_rank, &local_size);
    int nbind = ranks > 0 ? (int)ranks : local_size;
    char bound[512];
    tsr_topology_current_binding(topo, bound, sizeof bound);

    cJSON *root = cJSON_CreateObject();
    cJSON *ts = cJSON_AddObjectToObject(root, "tessera");
    cJSON_AddStringToObject(ts, "version", TSR_VERSION);
    cJSON_AddBoolToObject(ts, "cuda_backend", cuda_built);
    cJSON *jd = cJSON_AddArrayToObject(root, "dependencies");
    for (int i = 0; i < ndeps; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "name", deps[i].name);
        cJSON_AddStringToObject(d, "version", deps[i].version);
        cJSON_AddStringToObject(d, "detail", deps[i].detail);
        cJSON_AddItemToArray(jd, d);
    }

    if (!json) {
        printf("tessera %s (CUDA backend: %s)\n\ndependencies:\n", TSR_VERSION, cuda_built ? "built" : "not built");
        for (int i = 0; i < ndeps; i++) printf("  %-13s %-12s %s\n", deps[i].name, deps[i].version, deps[i].detail);
        printf("\ndevices:\n");
    }

    cJSON *jdev = cJSON_AddObjectToObject(root, "devices");
    cJSON *jcuda = cJSON_AddObjectToObject(jdev, "cuda");
    cJSON_AddNumberToObject(jcuda, "count", ngpu);
    if (ngpu == 0) cJSON_AddStringToObject(jcuda, "why_none", why ? why : "unknown");
    else cJSON_AddNullToObject(jcuda, "why_none");
    cJSON *jgpus = cJSON_AddArrayToObject(jcuda, "devices");
    if (!json && ngpu == 0) printf("  CUDA: no devices: %s\n", why ? why : "unknown");
    for (int i = 0; i < ngpu; i++) {
        tsr_device_info info;
        cJSON *g = cJSON_CreateObject();
        cJSON_AddNumberToObject(g, "index", i);
        if (tsr_cuda_device_info(i, &info) != 0) {
            cJSON_AddStringToObject(g, "error", "cudaGetDeviceProperties failed");
            cJSON_AddItemToArray(jgpus, g);
            if (!json) printf("  CUDA %d: properties unavailable\n", i);
            continue;
        }
        int numa = tsr_topology_numa_of_busid(topo, info.pci_bus_id);
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", info.cc_major, info.cc_minor);
        cJSON_AddStringToObject(g, "name", info.name);
        cJSON_AddStringToObject(g, "compute_capability", cc);
        cJSON_AddNumberToObject(g, "total_mem", (double)info.total_mem);
        cJSON_AddNumberToObject(g, "free_mem", (double)info.free_mem);
        cJSON_AddNumberToObject(g, "multiprocessors", info.multiprocessors);
        cJSON_AddStringToObject(g, "pci_bus_id", info.pci_bus_id);
        cJSON_AddNumberToObject(g, "numa_node", numa);
        cJSON_AddItemToArray(jgpus, g);
        if (!json)
            printf("  CUDA %d: %s, sm_%d%d, %d SMs, %.1f GiB (%.1f free), PCI %s, NUMA node %s%d\n", i, info.name,
                   info.cc_major, info.cc_minor, info.multiprocessors, tsr__gib((double)info.total_mem),
                   tsr__gib((double)info.free_mem), info.pci_bus_id, numa < 0 ? "unknown " : "", numa);
    }
    cJSON *jcpu = cJSON_AddObjectToObject(jdev, "cpu");
    cJSON_AddStringToObject(jcpu, "model", tsr_topology_cpu_model(topo));
    cJSON_AddNumberToObject(jcpu, "cores", tsr_topology_n_cores(topo));
    cJSON_AddNumberToObject(jcpu, "pus", tsr_topology_n_pus(topo));
    if (!json)
        printf("  CPU: %s, %d core(s), %d PU(s) (the CPU backend)\n", tsr_topology_cpu_model(topo),
               tsr_topology_n_cores(topo), tsr_topology_n_pus(topo));

    /* topology */
    cJSON *jt = cJSON_AddObjectToObject(root, "topology");
    cJSON_AddNumberToObject(jt, "packages", tsr_topology_n_packages(topo));
    cJSON_AddNumberToObject(jt, "cores", tsr_topology_n_cores(topo));
    cJSON_AddNumberToObject(jt, "pus", tsr_topology_n_pus(topo));
    cJSON *jn = cJSON_AddArrayToObject(jt, "numa_nodes");
    for (int i = 0; i < tsr_topology_n_numa(topo); i++) {
        tsr_topo_numa nn;
        if (tsr_topology_numa(topo, i, &nn)) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "os_index", nn.os_index);
        cJSON_AddNumberToObject(o, "cores", nn.n_cores);
        cJSON_AddNumberToObject(o, "pus", nn.n_pus);
        cJSON_AddStringToObject(o, "cpus", nn.cpus);
        cJSON_AddNumberToObject(o, "memory_bytes", (double)nn.memory);
        cJSON_AddItemToArray(jn, o);
    }
    cJSON *jp = cJSON_AddArrayToObject(jt, "pci");
    for (int i = 0; i < tsr_topology_n_pci(topo); i++) {
        tsr_topo_pci d;
        if (tsr_topology_pci(topo, i, &d)) continue;
        cJSON *o = cJSON_CreateObject();
        char ids[16];
        snprintf(ids, sizeof ids, "%04x:%04x", d.vendor_id, d.device_id);
        cJSON_AddStringToObject(o, "busid", d.busid);
        cJSON_AddStringToObject(o, "kind", d.kind);
        cJSON_AddStringToObject(o, "ids", ids);
        cJSON_AddStringToObject(o, "name", d.name);
        cJSON_AddNumberToObject(o, "numa_node", d.numa);
        cJSON_AddItemToArray(jp, o);
    }
    size_t need = tsr_topology_describe(topo, NULL, 0);
    char *desc = malloc(need + 1);
    TSR_ASSERT(desc);
    tsr_topology_describe(topo, desc, need + 1);
    cJSON_AddStringToObject(jt, "description", desc);
    if (!json) printf("\ntopology:\n%s", desc);
    free(desc);

    /* this process and the binding plan */
    cJSON *jproc = cJSON_AddObjectToObject(root, "process");
    cJSON_AddStringToObject(jproc, "launcher", launcher);
    cJSON_AddNumberToObject(jproc, "local_rank", local_rank);
    cJSON_AddNumberToObject(jproc, "local_size", local_size);
    cJSON_AddStringToObject(jproc, "bound_to", bound);
    if (!json)
        printf("\nthis process: launcher %s, local rank %d of %d, bound to CPUs %s\n", launcher, local_rank,
               local_size, bound[0] ? bound : "(unknown)");
    cJSON *jb = cJSON_AddArrayToObject(root, "binding");
    if (!json) printf("binding plan for %d local rank(s)%s:\n", nbind, ngpu ? " (rank r drives GPU r % n_gpus)" : "");
    int status = 0;
    for (int rk = 0; rk < nbind; rk++) {
        int gpu = ngpu > 0 ? rk % ngpu : -1;
        tsr_cpuset cs;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "local_rank", rk);
        cJSON_AddNumberToObject(o, "gpu", gpu);
        if (tsr_topology_cpuset_for_rank(topo, rk, nbind, gpu, &cs) != TSR_OK) {
            cJSON_AddStringToObject(o, "error", tsr_last_error());
            if (!json) printf("  rank %d: %s\n", rk, tsr_last_error());
            status = 1;
        } else {
            cJSON_AddStringToObject(o, "cpus", cs.list);
            cJSON_AddStringToObject(o, "why", cs.why);
            if (!json) printf("  rank %d%s: CPUs %s  (%s)\n", rk, rk == local_rank && nbind == local_size ? " (this one)" : "",
                              cs.list, cs.why);
            tsr_cpuset_free(&cs);
        }
        cJSON_AddItemToArray(jb, o);
    }
    if (json) {
        char *s = cJSON_Print(root);
        TSR_ASSERT(s);
        printf("%s\n", s);
        cJSON_free(s);
    }
    cJSON_Delete(root);
    tsr_topology_free(topo);
    return status;
}
