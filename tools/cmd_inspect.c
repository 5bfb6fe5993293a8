/* `tessera inspect [MODEL]`: what a model file holds, read through the same validating readers
 * the engine loads weights with: the file kind, the model config Tessera derives from it, the
 * tensor directory, optionally the metadata, and one tensor dequantized to raw f32 (which
 * tests/formats compares against python gguf / safetensors).  A corrupt file is a message
 * naming the file and the problem, exit code 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "worker/weights.h"
#include "worker/workspace.h"

static void tsr__print_config(const char *source, tsr_status rc, const tsr_model_config *c) {
    if (rc != TSR_OK) {
        printf("config:  none (%s)\n", tsr_last_error());
        return;
    }
    printf("config:  %s (from %s)\n", c->model_name, source);
    printf("  arch %s, vocab %lld, d_model %lld, layers %lld, heads %lld, kv heads %lld, head_dim %lld, d_ff %lld\n",
           tsr_arch_name(c->arch), (long long)c->vocab_size, (long long)c->d_model, (long long)c->n_layer,
           (long long)c->n_head, (long long)c->n_kv_head, (long long)c->head_dim, (long long)c->d_ff);
    printf("  norm_eps %g, rope_theta %g, max_pos %lld, rope %s", (double)c->norm_eps, (double)c->rope_theta,
           (long long)c->max_position_embeddings, tsr_rope_type_name(c->rope_type));
    if (c->rope_type != TSR_ROPE_DEFAULT) printf(" (factor %g)", (double)c->rope_factor);
    if (c->rope_type == TSR_ROPE_LLAMA3)
        printf(" (low %g, high %g, original max pos %lld)", (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, (long long)c->rope_original_max_pos);
    printf("\n  attn_bias %s, tied embeddings %s, bos %d, eos %d", c->attn_bias ? "yes" : "no",
           c->tie_embeddings ? "yes" : "no", c->bos_id, c->eos_id);
    for (int i = 0; i < c->n_extra_eos; i++) printf(i ? ",%d" : " (also %d", c->extra_eos[i]);
    printf("%s\n", c->n_extra_eos ? ")" : "");
}

static void tsr__print_gguf_value(const tsr_gguf_kv *kv) {
    switch (kv->type) {
    case TSR_GGUF_STRING: {
        uint64_t n = kv->v.str.len, shown = n > 120 ? 120 : n;
        putchar('"');
        for (uint64_t i = 0; i < shown; i++) {
            char c = kv->v.str.ptr[i];
            if (c == '\n') fputs("\\n", stdout);
            else putchar((unsigned char)c < 32 ? '?' : c);
        }
        printf("\"%s", n > shown ? "..." : "");
        if (n > shown) printf(" (%llu bytes)", (unsigned long long)n);
        break;
    }
    case TSR_GGUF_BOOL: printf("%s", kv->v.b ? "true" : "false"); break;
    case TSR_GGUF_FLOAT32: case TSR_GGUF_FLOAT64: printf("%g", kv->v.f64); break;
    case TSR_GGUF_UINT8: case TSR_GGUF_UINT16: case TSR_GGUF_UINT32: case TSR_GGUF_UINT64:
        printf("%llu", (unsigned long long)kv->v.u64);
        break;
    case TSR_GGUF_ARRAY:
        printf("[%s x %llu]", tsr_gguf_vtype_name(kv->arr_type), (unsigned long long)kv->arr_n);
        for (uint64_t i = 0; i < kv->arr_n && i < 4; i++) {
            if (kv->arr_type == TSR_GGUF_STRING) {
                uint64_t n = kv->arr_str[i].len;
                printf(" \"%.*s\"", (int)(n > 24 ? 24 : n), kv->arr_str[i].ptr);
            } else {
                double v;
                if (tsr_gguf_arr_get_f64(kv, i, &v)) printf(" %g", v);
            }
        }
        if (kv->arr_n > 4) printf(" ...");
        break;
    default: printf("%lld", (long long)kv->v.i64); break;
    }
}

static int tsr__dump(const char *file, const float *x, int64_t n) {
    tsr_status rc = tsr_write_file(file, x, (size_t)n * sizeof(float));
    if (rc != TSR_OK) {
        tsr_cli_err("tessera inspect: %s\n", tsr_last_error());
        return 1;
    }
    return 0;
}

/* GGUF -> safetensors: every tensor dequantized to F32, shape outermost first, names kept. */
static int tsr__gguf_to_st(const tsr_gguf *g, const char *out) {
    int64_t n = tsr_gguf_n_tensors(g);
    tsr_st_write_tensor *w = calloc((size_t)(n ? n : 1), sizeof *w);
    int ret = w ? 0 : 1;
    for (int64_t i = 0; i < n && !ret; i++) {
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
        int64_t ne = tsr_gguf_tensor_numel(t);
        float *x = malloc((size_t)(ne ? ne : 1) * sizeof *x);
        if (!x || tsr_gguf_tensor_to_f32(t, x) != TSR_OK) {
            tsr_cli_err("tessera inspect: %s\n", x ? tsr_last_error() : "out of memory");
            free(x);
            ret = 1;
            break;
        }
        w[i] = (tsr_st_write_tensor){.name = t->cname, .dtype = TSR_F32, .n_dims = (int)t->n_dims, .data = x};
        for (uint32_t d = 0; d < t->n_dims; d++) w[i].shape[d] = t->ne[t->n_dims - 1 - d];
    }
    const char *meta[] = {"format", "pt", "source", tsr_gguf_path(g), NULL};
    if (!ret && tsr_safetensors_write(out, w, n, meta) != TSR_OK) {
        tsr_cli_err("tessera inspect: %s\n", tsr_last_error());
        ret = 1;
    }
    for (int64_t i = 0; w && i < n; i++) free((void *)w[i].data);
    free(w);
    return ret;
}

/* safetensors -> safetensors: the same tensors, dtypes and metadata, through our writer. */
static int tsr__st_to_st(const tsr_safetensors *st, const char *out) {
    int64_t n = tsr_safetensors_count(st), nm = tsr_safetensors_n_metadata(st);
    tsr_st_write_tensor *w = calloc((size_t)(n ? n : 1), sizeof *w);
    const char **meta = calloc((size_t)(2 * nm + 1), sizeof *meta);
    int ret = 0;
    if (!w || !meta) ret = 1;
    for (int64_t i = 0; i < n && !ret; i++) {
        const tsr_st_tensor *t = tsr_safetensors_at(st, i);
        w[i] = (tsr_st_write_tensor){.name = t->name, .dtype = t->dtype, .n_dims = t->n_dims, .data = t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    for (int64_t i = 0; meta && i < nm; i++) tsr_safetensors_metadata_at(st, i, &meta[2 * i], &meta[2 * i + 1]);
    if (!ret && tsr_safetensors_write(out, w, n, meta) != TSR_OK) {
        tsr_cli_err("tessera inspect: %s\n", tsr_last_error());
        ret = 1;
    }
    free(w);
    free(meta);
    return ret;
}

static int tsr__inspect_gguf(const char *path, bool show_meta, bool quiet, const char *tname, const char *dump,
                             const char *to_st) {
    double t0 = tsr_now();
    tsr_gguf *g;
    if (tsr_gguf_open(path, &g) != TSR_OK) {
        tsr_cli_err("tessera inspect: %s\n", tsr_last_error());
        return 1;
    }
    double ms = (tsr_now() - t0) * 1e3;
    printf("file:    %s\n", path);
    printf("format:  GGUF v%u, %lld tensors, %lld metadata keys, alignment %llu, data at byte %llu (opened in %.2f ms)\n",
           tsr_gguf_version(g), (long long)tsr_gguf_n_tensors(g), (long long)tsr_gguf_n_kv(g),
           (unsigned long long)tsr_gguf_alignment(g), (unsigned long long)tsr_gguf_data_offset(g), ms);
    tsr_model_config cfg;
    tsr_status crc = tsr_model_config_from_gguf(g, &cfg);
    tsr__print_config("GGUF metadata", crc, &cfg);
    if (show_meta) {
        printf("metadata:\n");
        for (int64_t i = 0; i < tsr_gguf_n_kv(g); i++) {
            const tsr_gguf_kv *kv = tsr_gguf_kv_at(g, i);
            printf("  %.*s = ", (int)kv->key.len, kv->key.ptr);
            tsr__print_gguf_value(kv);
            printf("\n");
        }
    }
    if (!quiet) {
        /* shapes outermost first (row-major, like HF's [out, in]); ggml's ne[] is the reverse */
        printf("tensors: (name, type, shape outermost first)\n");
        for (int64_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
            const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
            printf("  %-40s %-5s [", t->cname, tsr_ggml_type_name(t->type));
            for (int d = (int)t->n_dims - 1; d >= 0; d--) printf("%lld%s", (long long)t->ne[d], d ? ", " : "");
            printf("]\n");
        }
    }
    int ret = 0;
    if (tname) {
        const tsr_gguf_tensor *t = tsr_gguf_find_tensor(g, tname);
        if (!t) {
            tsr_cli_err("tessera inspect: %s: no tensor named '%s'\n", path, tname);
            ret = 1;
        } else {
            int64_t n = tsr_gguf_tensor_numel(t);
            float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
            double t1 = tsr_now();
            if (!x || tsr_gguf_tensor_to_f32(t, x) != TSR_OK) {
                tsr_cli_err("tessera inspect: %s: %s\n", path, x ? tsr_last_error() : "out of memory");
                ret = 1;
            } else {
                double s = tsr_now() - t1;
                fprintf(stderr, "%s: %lld elements of %s dequantized in %.2f ms (%.0f MB/s of f32)\n", tname,
                        (long long)n, tsr_ggml_type_name(t->type), s * 1e3, s > 0 ? (double)n * 4 / s / 1e6 : 0.0);
                if (dump) ret = tsr__dump(dump, x, n);
            }
            free(x);
        }
    }
    if (!ret && to_st) ret = tsr__gguf_to_st(g, to_st);
    tsr_gguf_close(g);
    return ret;
}

static int tsr__inspect_st(const char *path, bool show_meta, bool quiet, const char *tname, const char *dump,
                           const char *to_st) {
    double t0 = tsr_now();
    tsr_safetensors *st;
    if (tsr_safetensors_open(path, &st) != TSR_OK) {
        tsr_cli_err("tessera inspect: %s\n", tsr_last_error());
        return 1;
    }
    double ms = (tsr_now() - t0) * 1e3;
    printf("file:    %s\n", path);
    printf("format:  safetensors, %d file%s, %lld tensors (opened in %.2f ms)\n", tsr_safetensors_n_files(st),
           tsr_safetensors_n_files(st) == 1 ? "" : "s", (long long)tsr_safetensors_count(st), ms);
    /* config.json lives in the model directory: the path itself or the file's parent */
    char *dir = tsr_path_is_dir(path) ? strdup(path) : NULL;
    if (!dir) {
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    }
    char *cj = tsr_path_join(dir, "config.json");
    if (tsr_path_exists(cj)) {
        tsr_model_config cfg;
        tsr_status crc = tsr_model_config_from_hf(cj, &cfg);
        tsr__print_config(cj, crc, &cfg);
    } else {
        printf("config:  none (no config.json beside the weights)\n");
    }
    free(cj);
    free(dir);
    if (show_meta) {
        printf("metadata:\n");
        const char *k, *v;
        for (int64_t i = 0; tsr_safetensors_metadata_at(st, i, &k, &v); i++) printf("  %s = \"%.120s\"\n", k, v);
    }
    if (!quiet) {
        printf("tensors: (name, type, shape)\n");
        for (int64_t i = 0; i < tsr_safetensors_count(st); i++) {
            const tsr_st_tensor *t = tsr_safetensors_at(st, i);
            /* a workspace's quantized matrix: U8 rows of blocks, its type and columns in the metadata */
            char key[160];
            snprintf(key, sizeof key, "tsr.wtype.%s", t->name);
            const char *wt = tsr_safetensors_metadata(st, key);
            snprintf(key, sizeof key, "tsr.cols.%s", t->name);
            const char *cols = tsr_safetensors_metadata(st, key);
            if (wt && cols && t->n_dims == 2) {
                printf("  %-40s %-5s [%lld, %s] (blocks: U8 [%lld, %lld])\n", t->name, wt, (long long)t->shape[0], cols,
                       (long long)t->shape[0], (long long)t->shape[1]);
                continue;
            }
            printf("  %-40s %-5s [", t->name, tsr_dtype_name(t->dtype));
            for (int d = 0; d < t->n_dims; d++) printf("%lld%s", (long long)t->shape[d], d + 1 < t->n_dims ? ", " : "");
            printf("]\n");
        }
    }
    int ret = 0;
    if (tname) {
        const tsr_st_tensor *t = tsr_safetensors_find(st, tname);
        if (!t) {
            tsr_cli_err("tessera inspect: %s: no tensor named '%s'\n", path, tname);
            ret = 1;
        } else {
            int64_t n = (int64_t)(t->nbytes / tsr_dtype_size(t->dtype));
            float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
            if (!x) {
                tsr_cli_err("tessera inspect: out of memory\n");
                ret = 1;
            } else {
                int cr = 0;
                if (t->dtype == TSR_I64) {
                    for (int64_t i = 0; i < n; i++) {
                        int64_t v;
                        memcpy(&v, (const char *)t->data + 8 * i, 8);
                        x[i] = (float)v;
                    }
                } else if (t->dtype == TSR_BOOL) {
                    for (int64_t i = 0; i < n; i++) x[i] = ((const uint8_t *)t->data)[i] ? 1.0f : 0.0f;
                } else {
                    cr = tsr_convert_to_f32(t->dtype, t->data, x, n);
                }
                if (cr != 0) {
                    tsr_cli_err("tessera inspect: %s: tensor '%s' of dtype %s has no f32 meaning\n", path, tname,
                            tsr_dtype_name(t->dtype));
                    ret = 1;
                } else if (dump) {
                    ret = tsr__dump(dump, x, n);
                }
                free(x);
            }
        }
    }
    if (!ret && to_st) ret = tsr__st_to_st(st, to_st);
    tsr_safetensors_close(st);
    return ret;
}

/* A converted workspace: config.ini plus one safetensors file per TP rank, each holding that
 * rank's slices under the same names; shown one rank file at a time. */
static int tsr__inspect_workspace(const char *dir, bool show_meta, bool quiet, const char *tname, const char *dump,
                                  const char *to_st) {
    printf("file:    %s\n", dir);
    printf("format:  Tessera workspace (config.ini + per-rank safetensors)\n");
    tsr_model_config cfg;
    tsr_status crc = tsr_model_config_load(dir, &cfg);
    tsr__print_config("config.ini", crc, &cfg);
    int ret = 0, r = 0;
    for (;; r++) {
        char name[32];
        snprintf(name, sizeof name, "rank%d.safetensors", r);
        char *p = tsr_path_join(dir, name);
        if (!tsr_path_exists(p)) {
            free(p);
            break;
        }
        printf("\n");
        /* --tensor/--dump and --to-safetensors act on rank 0's file */
        int rr = tsr__inspect_st(p, show_meta, quiet, r == 0 ? tname : NULL, r == 0 ? dump : NULL, r == 0 ? to_st : NULL);
        free(p);
        if (rr) ret = rr;
    }
    if (r == 0) {
        tsr_cli_err("tessera inspect: %s: workspace has no rank0.safetensors\n", dir);
        return 1;
    }
    return ret;
}

int tsr_cmd_inspect(int argc, char **argv) {
    const char *tname = NULL, *dump = NULL, *to_st = NULL;
    bool show_meta = false, quiet = false;
    const tsr_opt opts[] = {
        {"--tensor", TSR_OPT_STR, &tname, "NAME", "dequantize this tensor (with --dump: write it as raw little-endian f32)"},
        {"--dump", TSR_OPT_STR, &dump, "FILE", "where --tensor's values go"},
        {"--metadata", TSR_OPT_FLAG, &show_meta, NULL, "also print the metadata (GGUF keys / safetensors __metadata__)"},
        {"--no-tensors", TSR_OPT_FLAG, &quiet, NULL, "leave out the tensor list"},
        {"--to-safetensors", TSR_OPT_STR, &to_st, "FILE",
         "write every tensor to a safetensors file (GGUF: dequantized to F32; safetensors: as stored)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int np = 0;
    int r = tsr_cli_parse("tessera inspect [MODEL] [--tensor NAME [--dump FILE]]",
                          "Print what a model holds: file kind, model config, tensors (name, type, shape).\n"
                          "MODEL is a .gguf file, a .safetensors file, a model.safetensors.index.json, an HF\n"
                          "directory or a converted workspace; without it, the default model.",
                          opts, argc, argv, pos, 1, &np);
    if (r == TSR_CLI_HELP) return 0;
    if (r != TSR_CLI_OK) return 1;
    if (dump && !tname) {
        tsr_cli_err("tessera inspect: --dump needs --tensor NAME\n");
        return 1;
    }
    const char *model = tsr_cli_model_or_default(np ? pos[0] : NULL);
    if (!model) return 1;
    if (!tsr_path_exists(model)) {
        tsr_cli_err("tessera inspect: %s: no such file or directory\n", model);
        return 1;
    }
    if (tsr_workspace_is(model)) return tsr__inspect_workspace(model, show_meta, quiet, tname, dump, to_st);
    bool is_gguf = false;
    if (!tsr_path_is_dir(model)) {
        FILE *f = fopen(model, "rb");
        char magic[4] = {0};
        if (f) {
            is_gguf = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
            fclose(f);
        }
        size_t l = strlen(model);
        if (!is_gguf && l > 5 && !strcmp(model + l - 5, ".gguf")) is_gguf = true; /* let the reader say what is wrong */
    }
    return is_gguf ? tsr__inspect_gguf(model, show_meta, quiet, tname, dump, to_st)
                   : tsr__inspect_st(model, show_meta, quiet, tname, dump, to_st);
}
