/* Bring-up of one rank of the group (see runtime.h). */
#define _GNU_SOURCE
#include "worker/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <strings.h>

#include "common/fileutil.h"
#include "common/knobs.h"
#include "common/log.h"
#include "common/model_config.h"
#include "kernels/devices.h"
#include "kernels/kv_quant.h"
#include "worker/kv_qparams.h"
#include "worker/topology.h"
#include "worker/weights.h"
#include "worker/workspace.h"

#include <sys/resource.h>

void tsr_runtime_opts_default(tsr_runtime_opts *o) {
    memset(o, 0, sizeof *o);
    o->backend = "auto";
    o->cache_max_entry_count = 0; /* unset: config.ini's, else 0.5 */
    o->progress = true;
    o->bind = true;
    o->quant_policy = -1; /* unset: config.ini's, else 0 */
}

/* MemAvailable from /proc/meminfo, in bytes (0 if unknown). */
static size_t tsr__mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

static tsr_status tsr__bind(tsr_runtime *rt, int gpu_index) {
    tsr_topology *topo = NULL;
    TSR_TRY(tsr_topology_init(&topo));
    tsr_cpuset set;
    tsr_status st = tsr_topology_cpuset_for_rank(topo, rt->group.local_rank, rt->group.local_size, gpu_index, &set);
    if (st == TSR_OK) {
        st = tsr_topology_bind(topo, &set);
        tsr_cpuset_free(&set);
    }
    tsr_topology_current_binding(topo, rt->binding, sizeof rt->binding);
    tsr_topology_free(topo);
    return st;
}

/* Cores this process may run on (after binding). */
static int tsr__allowed_cpus(void) {
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof s, &s) != 0) return 1;
    int n = CPU_COUNT(&s);
    return n > 0 ? n : 1;
}

static tsr_status tsr__open_local(tsr_runtime *rt, const tsr_runtime_opts *o) {
    /* backend */
    const char *why = NULL;
    int n_gpu = tsr_cuda_device_count(&why);
    bool want_cuda = !strcasecmp(o->backend, "cuda") || (!strcasecmp(o->backend, "auto") && n_gpu > 0);
    if (strcasecmp(o->backend, "auto") && strcasecmp(o->backend, "cpu") && strcasecmp(o->backend, "cuda"))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "unknown backend '%s' (auto, cpu or cuda)", o->backend);
    if (want_cuda) {
        if (n_gpu <= 0) return tsr_errorf(TSR_ERR_UNSUPPORTED, "--backend cuda: no GPU (%s)", why ? why : "none");
#ifdef TSR_HAVE_CUDA
        /* one GPU per rank, picked by the local rank; compute type bf16 unless
         * TESSERA_DTYPE=f16|fp16|float16 (or f32 for debugging; common/knobs.h) */
        int dev = rt->group.local_rank % n_gpu;
        if (o->bind && rt->group.size > 1 && tsr__bind(rt, dev) != TSR_OK)
            TSR_LOGW("could not bind rank %d: %s", rt->group.rank, tsr_last_error());
        rt->be = tsr_backend_cuda_init(dev, tsr_knobs_get()->cuda_dtype);
        if (!rt->be) return tsr_error_wrap(TSR_ERR_UNSUPPORTED, "starting the CUDA backend on GPU %d", dev);
        goto load;
#else
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "this tessera was built without the CUDA backend; use --backend cpu");
#endif
    }
    if (o->bind && rt->group.size > 1) {
        if (tsr__bind(rt, -1) != TSR_OK) TSR_LOGW("could not bind rank %d: %s", rt->group.rank, tsr_last_error());
    }
    int threads = o->threads > 0 ? (int)o->threads : (rt->group.size > 1 ? tsr__allowed_cpus() : 0);
    rt->be = tsr_backend_cpu_init(threads);
    if (!rt->be) return tsr_errorf(TSR_ERR_OOM, "cannot start the CPU backend");

#ifdef TSR_HAVE_CUDA
load:
#endif
    /* a backend without quantized KV kernels refuses a quantized cache before loading anything */
    TSR_TRY(tsr_kvq_policy_check(o->quant_policy, rt->be->ops->name, NULL));
    /* this rank's shard */
    tsr_load_opts lo = {.tp_rank = rt->group.rank, .tp_size = rt->group.size,
                        .progress = o->progress && rt->group.rank == 0};
    double t0 = tsr_now();
    if (o->load_format && !strcmp(o->load_format, "dummy")) {
        /* the model's shapes from its config, random weights made on the device (speed tests of
         * large models without their files; the values are the same hash on every backend) */
        tsr_model_config cfg;
        if (tsr_path_is_dir(o->model_path) && !tsr_workspace_is(o->model_path)) {
            /* an HF directory: config.json alone, as vLLM (no weight files needed) */
            char *cj = tsr_path_join(o->model_path, "config.json");
            tsr_status st = tsr_path_exists(cj) ? tsr_model_config_from_hf(cj, &cfg)
                                                : tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no config.json for --load-format dummy",
                                                             o->model_path);
            free(cj);
            TSR_TRY(st);
        } else {
            TSR_TRY(tsr_model_config_load(o->model_path, &cfg));
        }
        TSR_TRY(tsr_model_init_dummy(&cfg, rt->be, &lo, 1234, &rt->model));
    } else if (o->load_format && strcmp(o->load_format, "auto") && strcmp(o->load_format, "dequantized")) {
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--load-format '%s': auto, dequantized or dummy", o->load_format);
    } else {
        lo.dequantize = o->load_format && !strcmp(o->load_format, "dequantized");
        TSR_TRY(tsr_model_load(o->model_path, rt->be, &lo, &rt->model));
    }
    rt->load_seconds = tsr_now() - t0;
    return TSR_OK;
}

/* A workspace's kv_qparams.json (`lite kv_qparams`) for a quantized pool: used when its bits
 * are the policy's, else online scales with a warning. */
static tsr_status tsr__kv_static(tsr_runtime *rt, const char *dir) {
    tsr_kv_qparams q;
    bool found = false;
    TSR_TRY(tsr_kv_qparams_load(dir, &q, &found));
    if (!found) return TSR_OK;
    tsr_status st = TSR_OK;
    const tsr_shard *sh = &rt->model->shard;
    if (q.bits != rt->quant_policy) {
        if (rt->group.rank == 0)
            TSR_LOGW("%s/%s holds %lld-bit parameters but quant_policy is %lld: online per-token scales instead", dir,
                     TSR_KV_QPARAMS_FILE, (long long)q.bits, (long long)rt->quant_policy);
    } else if (q.n_layer != rt->model->cfg.n_layer || q.n_kv_head != rt->model->cfg.n_kv_head) {
        st = tsr_errorf(TSR_ERR_FORMAT, "%s/%s: %lld layers x %lld KV heads, the model has %lld x %lld", dir,
                        TSR_KV_QPARAMS_FILE, (long long)q.n_layer, (long long)q.n_kv_head,
                        (long long)rt->model->cfg.n_layer, (long long)rt->model->cfg.n_kv_head);
    } else if (q.bits == 4 && q.k_chan) {   /* int4: K channel offsets, online scales (kv_qparams.h) */
        float *local = q.head_dim == rt->model->cfg.head_dim ? tsr_kv_qparams_local_chan(&q, sh->kv_head0, sh->n_kv_head) : NULL;
        st = local ? tsr_kv_pool_set_k_shift(&rt->kv, local)
                   : tsr_errorf(TSR_ERR_FORMAT, "%s/%s: k_channel_zp of head_dim %lld, the model's is %lld", dir,
                                TSR_KV_QPARAMS_FILE, (long long)q.head_dim, (long long)rt->model->cfg.head_dim);
        free(local);
        rt->kv_static = st == TSR_OK;
    } else {
        float *local = tsr_kv_qparams_local(&q, sh->kv_head0, sh->n_kv_head);
        st = local ? tsr_kv_pool_set_static(&rt->kv, local) : tsr_errorf(TSR_ERR_OOM, "kv_qparams");
        free(local);
        rt->kv_static = st == TSR_OK;
    }
    tsr_kv_qparams_free(&q);
    return st;
}

/* Rank 0 prints what every rank holds: the figures behind "each rank holds ~1/N". */
static void tsr__report(tsr_runtime *rt) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t n = rt->group.size, rss = (int64_t)ru.ru_maxrss * 1024, wb = (int64_t)rt->model->weight_bytes;
    int64_t ms = (int64_t)(rt->load_seconds * 1000);
    int64_t *all = calloc((size_t)(3 * n), sizeof *all);
    if (!all) return;
    tsr_group_allgather_i64(&rt->group, wb, all);
    tsr_group_allgather_i64(&rt->group, rss, all + n);
    tsr_group_allgather_i64(&rt->group, ms, all + 2 * n);
    if (rt->group.rank == 0) {
        char buf[512];
        tsr_runtime_describe(rt, buf, sizeof buf);
        TSR_LOGI("%s", buf);
        tsr_runtime_describe_kv(rt, buf, sizeof buf);
        TSR_LOGI("%s", buf);
        for (int64_t r = 0; r < n && n > 1; r++)
            TSR_LOGI("rank %lld: weights %.1f MiB, loaded in %.2f s, peak RSS %.1f MiB", (long long)r,
                     (double)all[r] / (1 << 20), (double)all[2 * n + r] / 1000, (double)all[n + r] / (1 << 20));
    }
    free(all);
}

tsr_status tsr_runtime_open(tsr_runtime *rt, const tsr_runtime_opts *o_in, int *argc, char ***argv) {
    memset(rt, 0, sizeof *rt);
    /* a workspace's config.ini supplies the runtime knobs the command line left unset */
    tsr_runtime_opts oo = *o_in;
    const tsr_runtime_opts *o = &oo;
    tsr_status kst = TSR_OK;
    char unused[64] = "";
    if (o_in->model_path && tsr_workspace_is(o_in->model_path)) {
        tsr_ws_knobs k = {0};
        kst = tsr_workspace_read_knobs(o_in->model_path, &k);
        /* precedence: the command line's --quant-policy, then config.ini's, then 0 */
        if (kst == TSR_OK && oo.quant_policy < 0) {
            oo.quant_policy = k.quant_policy;
            if (tsr_kvq_policy_check(k.quant_policy, NULL, NULL) != TSR_OK)
                kst = tsr_error_wrap(TSR_ERR_INVALID_ARG, "%s/config.ini", o_in->model_path);
        }
        if (!oo.block_len) oo.block_len = k.cache_block_seq_len;
        if (oo.cache_max_entry_count <= 0) oo.cache_max_entry_count = k.cache_max_entry_count;
        if (!oo.session_len) oo.session_len = k.session_len;
        snprintf(unused, sizeof unused, "%s", k.unused);
    }
    if (oo.quant_policy < 0) oo.quant_policy = 0;
    if (kst == TSR_OK && tsr_kvq_policy_check(oo.quant_policy, NULL, NULL) != TSR_OK)
        kst = tsr_error_wrap(TSR_ERR_INVALID_ARG, "--quant-policy");
    rt->quant_policy = oo.quant_policy;
    TSR_TRY(tsr_group_init(argc, argv, &rt->group));
    if (unused[0] && rt->group.rank == 0)
        TSR_LOGW("%s/config.ini: %s: TurboMind's, no effect in Tessera (remove them)", o_in->model_path, unused);
    if (o->tp > 0 && o->tp != rt->group.size) {
        tsr_status st = tsr_errorf(TSR_ERR_INVALID_ARG,
                                   "--tp %lld asks for %lld ranks but this group has %d: start it with "
                                   "`mpirun -np %lld tessera ...`",
                                   (long long)o->tp, (long long)o->tp, rt->group.size, (long long)o->tp);
        return st;
    }
    tsr_status st = kst == TSR_OK ? tsr__open_local(rt, o) : kst;
    st = tsr_group_agree(&rt->group, st);
    if (st != TSR_OK) {
        tsr_error_wrap(st, "starting the model");
        tsr_runtime_close(rt);
        return st;
    }

    const int64_t max_pos = rt->model->cfg.max_position_embeddings;
    rt->session_len = o->session_len > 0 ? o->session_len
                      : o->session_len_fallback > 0 && (max_pos <= 0 || o->session_len_fallback < max_pos)
                          ? o->session_len_fallback
                          : max_pos;
    /* What the CUDA kernels do not implement yet (kernels/cuda: no attention window, no yarn /
     * longrope RoPE) is refused by name on any backend but the CPU one, never run wrong.  A
     * window no shorter than the session never cuts anything, so it runs. */
    const tsr_model_config *mc = &rt->model->cfg;
    if (strcmp(rt->be->ops->name, "cpu") != 0) {
        if (mc->rope_type == TSR_ROPE_YARN || mc->rope_type == TSR_ROPE_LONGROPE)
            st = tsr_errorf(TSR_ERR_UNSUPPORTED, "rope_scaling type %s is implemented on the CPU backend only, not on %s "
                            "(run with --backend cpu)", tsr_rope_type_name(mc->rope_type), rt->be->ops->name);
        else if (tsr_model_window_limits(mc, rt->session_len))
            st = tsr_errorf(TSR_ERR_UNSUPPORTED, "sliding-window attention (window %lld from layer %lld) is implemented on "
                            "the CPU backend only, not on %s, and this session (%lld tokens) is longer than the window: run "
                            "with --backend cpu, or --session-len %lld or less", (long long)mc->sliding_window,
                            (long long)mc->window_layer0, rt->be->ops->name, (long long)rt->session_len,
                            (long long)mc->sliding_window);
        if (st != TSR_OK) {
            tsr_error_wrap(st, "starting the model");
            tsr_runtime_close(rt);
            return st;
        }
    }
    /* KV pool: the same number of blocks on every rank, so block ids mean the same everywhere */
    int64_t block_len = o->block_len > 0 ? o->block_len : TSR_KV_DEFAULT_BLOCK_LEN;
    size_t block_bytes = tsr_kv_block_bytes(rt->model, block_len, o->quant_policy);
    int64_t n_blocks;
    if (o->cache_max_entry_count >= 1) {
        n_blocks = (int64_t)o->cache_max_entry_count;
    } else if (o->cache_max_entry_count <= 0 && o->kv_one_session_fallback && rt->session_len > 0) {
        n_blocks = (rt->session_len + block_len - 1) / block_len;
    } else {
        size_t avail = tsr__mem_available(), budget;
        double frac = o->cache_max_entry_count > 0 ? o->cache_max_entry_count : 0.5;
        if (rt->be->ops->mem_info) {
            /* a device of its own: the fraction of its memory free after the weights, less room
             * for activations and the runtime's scratch */
            size_t fr = 0, tot = 0;
            rt->be->ops->mem_info(rt->be, &fr, &tot);
            budget = (size_t)((double)fr * frac);
            size_t reserve = (size_t)1 << 30;
            budget = budget > reserve ? budget - reserve : 0;
        } else {
            /* CPU ranks on one host share its memory */
            avail /= (size_t)(rt->group.local_size > 0 ? rt->group.local_size : 1);
            budget = (size_t)((double)avail * frac);
            const size_t cap = (size_t)1 << 30; /* the pool's pages become resident as blocks are used */
            if (budget > cap) budget = cap;
        }
        n_blocks = block_bytes ? (int64_t)(budget / block_bytes) : 0;
        /* no more than the sessions the engine can run at once could use */
        int64_t per_session = (rt->session_len + block_len - 1) / block_len;
        if (!rt->be->ops->mem_info && o->max_batch_size > 0 && rt->session_len > 0 &&
            per_session * o->max_batch_size < n_blocks)
            n_blocks = per_session * o->max_batch_size;
    }
    n_blocks = tsr_group_min_i64(&rt->group, n_blocks);
    st = n_blocks > 0 ? TSR_OK : tsr_errorf(TSR_ERR_OOM, "no memory left for even one KV block of %zu bytes", block_bytes);
    if (st == TSR_OK) st = tsr_kv_pool_init_for_model_q(&rt->kv, rt->model, block_len, n_blocks, o->quant_policy);
    if (st == TSR_OK && o->quant_policy && tsr_workspace_is(o->model_path)) st = tsr__kv_static(rt, o->model_path);
    if (st == TSR_OK) {
#ifdef TSR_HAVE_CUDA
        if (rt->group.size > 1 && !strcmp(rt->be->ops->name, "cuda"))
            rt->comm = tsr_comm_nccl_init(tsr_backend_cuda_stream(rt->be));
        else
#endif
        rt->comm = rt->group.size > 1 ? tsr_comm_mpi_init(tsr_group_step_timeout()) : tsr_comm_single_init();
        if (!rt->comm) st = tsr_errorf(TSR_ERR_OOM, "cannot create the communicator");
    }
    if (st == TSR_OK) st = tsr_forward_state_init(rt->model, rt->comm, &rt->fs);
    st = tsr_group_agree(&rt->group, st);
    if (st != TSR_OK) {
        tsr_error_wrap(st, "starting the model");
        tsr_runtime_close(rt);
        return st;
    }
    tsr_exec_init(&rt->exec, &rt->group, rt->fs, &rt->kv);
    rt->is_open = true;
    if (o->progress) tsr__report(rt);
    /* loading took what it took on each rank; from now on a wait inside a step has a deadline */
    rt->group.timeout_s = tsr_group_step_timeout();
#ifdef TSR_HAVE_CUDA
    if (rt->group.size > 1 && !strcmp(rt->be->ops->name, "cuda"))
        tsr_backend_cuda_set_wait_timeout(rt->be, rt->group.timeout_s);
#endif
    return TSR_OK;
}

int tsr_runtime_worker_main(tsr_runtime *rt) {
    /* mpirun forwards SIGTERM / SIGINT to every rank; only rank 0 decides when the group stops
     * (a server drains first), so a worker leaves when rank 0 says so, not on the signal. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    tsr_status st = tsr_exec_worker_loop(&rt->exec);
    tsr_runtime_close(rt);
    return st == TSR_OK ? 0 : 1;
}

void tsr_runtime_close(tsr_runtime *rt) {
    if (rt->is_open && rt->group.rank == 0) tsr_exec_stop(&rt->exec);
    if (tsr_group_broken(NULL) && rt->comm) {
        /* first: NCCL kernels stuck on a dead peer end only with the communicator, and freeing
         * device memory below waits for them */
        tsr_comm_free(rt->comm);
        rt->comm = NULL;
    }
    tsr_exec_free(&rt->exec);
    if (rt->fs) tsr_forward_state_free(rt->fs);
    rt->fs = NULL;
    if (rt->kv.data) tsr_kv_pool_free(&rt->kv);
    if (rt->comm) tsr_comm_free(rt->comm);
    rt->comm = NULL;
    if (rt->model) tsr_model_free(rt->model);
    rt->model = NULL;
    tsr_backend_free(rt->be);
    rt->be = NULL;
    rt->is_open = false;
    tsr_group_finalize(&rt->group);
}

int64_t tsr_runtime_kv_tokens(const tsr_runtime *rt) { return rt->kv.n_blocks * rt->kv.layout.block_len; }

void tsr_runtime_describe_kv(const tsr_runtime *rt, char *buf, size_t cap) {
    int64_t bl = rt->kv.layout.block_len, tokens = tsr_runtime_kv_tokens(rt);
    size_t per_tok = tsr_kv_block_bytes(rt->model, bl, rt->quant_policy) / (size_t)bl;
    const char *what = rt->quant_policy == 8 ? "int8" : rt->quant_policy == 4 ? "int4" : tsr_dtype_name(rt->be->dtype);
    snprintf(buf, cap, "KV cache quant_policy %lld (%s%s): %zu bytes/token/rank, pool %lld tokens = %lld sessions of %lld",
             (long long)rt->quant_policy, what,
             !rt->quant_policy ? ""
             : rt->kv.k_shift ? ", static kv_qparams K channel offsets + online per-token scales"
             : rt->kv_static  ? ", static kv_qparams"
                              : ", online per-token scales",
             per_tok,
             (long long)tokens, (long long)(rt->session_len > 0 ? tokens / rt->session_len : 0),
             (long long)rt->session_len);
}

void tsr_runtime_describe(const tsr_runtime *rt, char *buf, size_t cap) {
    size_t kvb = tsr_kv_block_bytes(rt->model, rt->kv.layout.block_len, rt->quant_policy) * (size_t)rt->kv.n_blocks;
    snprintf(buf, cap, "%s backend, tp %d, weights %.1f MiB/rank (%s), KV %lld blocks x %lld = %lld tokens (%.1f MiB/rank), loaded in %.2f s",
             rt->be->ops->name, rt->group.size, (double)rt->model->weight_bytes / (1 << 20), rt->model->source,
             (long long)rt->kv.n_blocks, (long long)rt->kv.layout.block_len, (long long)tsr_runtime_kv_tokens(rt),
             (double)kvb / (1 << 20), rt->load_seconds);
}
