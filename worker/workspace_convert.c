/* `tessera convert` (see workspace_convert.h): a model (HF directory or GGUF) -> a workspace
 * directory split for N ranks.  Each rank file is written by reading that rank's slices
 * through the same reader and shard rules the loader uses (worker/weights_reader.h), so a
 * workspace rank holds exactly what loading the source on that rank would. */
#include "worker/workspace_convert.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/wtype.h"
#include "worker/weights.h"
#include "worker/weights_hf_quant.h"
#include "worker/weights_reader.h"
#include "worker/weights_workspace.h"
#include "worker/workspace.h"

/* Copies this rank's slice of a quantized matrix as it is stored: whole rows, in HF order (a
 * GGUF's per-head Q/K permutation undone row by row), the columns of a row-parallel split cut at
 * a block edge.  *out: [nr][row bytes] of the wtensor type, malloc'd. */
static tsr_status tsr__copy_blocks(tsr__src *src, tsr_wkind k, int layer, const tsr_wtensor *full, int64_t r0,
                                   int64_t nr, int64_t c0, int64_t nc, void **out, size_t *row_bytes) {
    char name[96];
    const tsr_shard_rule *rule = tsr_shard_rule_of(k);
    if (rule->per_layer) snprintf(name, sizeof name, "%s of layer %d", rule->what, layer);
    else snprintf(name, sizeof name, "%s", rule->what);
    tsr_wtensor part = *full;
    if (nc != full->cols) {
        TSR_TRY(tsr_wtensor_slice(full, name, TSR_SPLIT_COLS, c0, nc, &part));
    }
    TSR_TRY(tsr_wtype_row_bytes(part.type, nc, row_bytes));
    uint8_t *buf = malloc(*row_bytes * (size_t)nr);
    if (!buf) return tsr_errorf(TSR_ERR_OOM, "out of memory copying %s", name);
    for (int64_t i = 0; i < nr; i++) {
        int64_t fr = src->file_row ? src->file_row(src, k, r0 + i) : r0 + i;
        memcpy(buf + (size_t)i * *row_bytes, (const uint8_t *)part.data + (size_t)fr * part.row_stride, *row_bytes);
    }
    *out = buf;
    return TSR_OK;
}

/* This rank's slice of an INT4G matrix (an AWQ / GPTQ / compressed-tensors checkpoint as the
 * loader converts it): packed rows, f16 scales and byte zero points of its groups, each a dense
 * plane.  out[0..2] are malloc'd (out[2] NULL when the format is symmetric). */
static tsr_status tsr__copy_int4g(const tsr_wtensor *full, int64_t r0, int64_t nr, int64_t c0, int64_t nc, void **out) {
    const int64_t g = full->block, ng = nc / g;
    TSR_ASSERT(g > 0 && c0 % g == 0 && nc % g == 0);
    const size_t rb = (size_t)nc / 2;
    uint8_t *q = malloc(rb * (size_t)nr), *z = full->zeros ? malloc((size_t)(ng * nr)) : NULL;
    uint16_t *d = malloc(sizeof(uint16_t) * (size_t)(ng * nr));
    if (!q || !d || (full->zeros && !z)) {
        free(q), free(d), free(z);
        return tsr_errorf(TSR_ERR_OOM, "out of memory copying a 4-bit matrix");
    }
    for (int64_t i = 0; i < nr; i++) {
        memcpy(q + (size_t)i * rb, (const uint8_t *)full->data + (size_t)(r0 + i) * full->row_stride + (size_t)c0 / 2, rb);
        memcpy(d + i * ng, (const uint8_t *)full->scales + (size_t)(r0 + i) * full->scale_stride + (size_t)(c0 / g) * 2,
               sizeof(uint16_t) * (size_t)ng);
        if (z) memcpy(z + i * ng, (const uint8_t *)full->zeros + (size_t)(r0 + i) * full->zero_stride + (size_t)(c0 / g),
                      (size_t)ng);
    }
    out[0] = q, out[1] = d, out[2] = z;
    return TSR_OK;
}

tsr_status tsr_workspace_write_rank(const char *model_path, int rank, int size, tsr_dtype dtype, bool keep_quantized,
                                    const char *out_path) {
    if (dtype != TSR_F32 && dtype != TSR_F16 && dtype != TSR_BF16)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "workspace weights are f32, f16 or bf16, not %s", tsr_dtype_name(dtype));
    tsr_model_config cfg;
    tsr__src *src;
    TSR_TRY(tsr__reader_open_source(model_path, &cfg, &src));
    tsr_model m = {0};
    m.cfg = cfg;
    src->cfg = &m.cfg;
    tsr_status st = tsr_shard_plan(&cfg, rank, size, &m.shard);
    src->shard = &m.shard;
    tsr__slice_reader L = {.m = &m, .src = src};
    int64_t n_max = 2 + 3 * 16 * cfg.n_layer, n = 0, n_meta = 0;
    tsr_st_write_tensor *ts = calloc((size_t)n_max, sizeof *ts);
    char (*names)[96] = calloc((size_t)n_max, sizeof *names);
    void **bufs = calloc((size_t)n_max, sizeof *bufs);
    /* per quantized tensor: "tsr.wtype.NAME" = type, "tsr.cols.NAME" = its columns */
    char (*meta_s)[112] = calloc((size_t)(6 * n_max), sizeof *meta_s);
    const char **meta = calloc((size_t)(6 * n_max + 8), sizeof *meta);
    if (!ts || !names || !bufs || !meta_s || !meta) st = tsr_errorf(TSR_ERR_OOM, "out of memory");
    for (int layer = -1; layer < (int)cfg.n_layer && st == TSR_OK; layer++) {
        for (int k = 0; k < TSR_W_COUNT && st == TSR_OK; k++) {
            if (tsr_shard_rule_of((tsr_wkind)k)->per_layer != (layer >= 0)) continue;
            bool present;
            st = tsr__reader_check(&L, (tsr_wkind)k, layer < 0 ? 0 : layer, &present);
            if (st != TSR_OK || !present) continue;
            int64_t r0, nr, c0, nc, cnt;
            tsr__shard_local_slice(&cfg, &m.shard, (tsr_wkind)k, &r0, &nr, &c0, &nc);
            bool vec = k == TSR_W_ATTN_NORM || k == TSR_W_FFN_NORM || k == TSR_W_OUT_NORM || k == TSR_W_Q_BIAS ||
                       k == TSR_W_K_BIAS || k == TSR_W_V_BIAS || k == TSR_W_O_BIAS;
            tsr_wtensor full;
            int64_t v_r0 = 0, v_c0 = 0;
            tsr_status rs = keep_quantized && !vec && src->raw
                                ? src->raw(src, (tsr_wkind)k, layer < 0 ? 0 : layer, &full, &v_r0, &v_c0)
                                : TSR_ERR_UNSUPPORTED;
            if (rs == TSR_ERR_UNSUPPORTED) tsr_clear_error();
            else if (rs != TSR_OK) {
                st = rs;
                break;
            }
            if (rs == TSR_OK && full.type == TSR_WTYPE_INT4G) {
                char what[96];
                if (layer >= 0) snprintf(what, sizeof what, "%s of layer %d", tsr_shard_rule_of((tsr_wkind)k)->what, layer);
                else snprintf(what, sizeof what, "%s", tsr_shard_rule_of((tsr_wkind)k)->what);
                if (size > 1 && v_r0 == 0 && v_c0 == 0) {
                    st = tsr_shard_check_blocks(&cfg, (tsr_wkind)k, &full, what, rank, size);
                    if (st != TSR_OK) break;
                }
                void *planes[3] = {NULL, NULL, NULL};
                st = tsr__copy_int4g(&full, r0 - v_r0, nr, c0 - v_c0, nc, planes);
                if (st != TSR_OK) break;
                const int64_t ng = nc / full.block;
                static const char *const suffix[3] = {"", ".scales", ".zeros"};
                for (int pl = 0; pl < 3 && planes[pl]; pl++) {
                    bufs[n] = planes[pl];
                    tsr__ws_tensor_name(names[n], sizeof names[n], (tsr_wkind)k, layer < 0 ? 0 : layer);
                    strncat(names[n], suffix[pl], sizeof names[n] - strlen(names[n]) - 1);
                    ts[n] = (tsr_st_write_tensor){.name = names[n], .dtype = pl == 1 ? TSR_F16 : TSR_U8, .n_dims = 2,
                                                  .shape = {nr, pl == 0 ? nc / 2 : ng}, .data = bufs[n]};
                    n++;
                }
                const char *base = names[n - (planes[2] ? 3 : 2)];
                snprintf(meta_s[6 * n_meta], sizeof meta_s[0], "tsr.wtype.%s", base);
                snprintf(meta_s[6 * n_meta + 1], sizeof meta_s[0], "%s", tsr_wtype_name(full.type));
                snprintf(meta_s[6 * n_meta + 2], sizeof meta_s[0], "tsr.cols.%s", base);
                snprintf(meta_s[6 * n_meta + 3], sizeof meta_s[0], "%lld", (long long)nc);
                snprintf(meta_s[6 * n_meta + 4], sizeof meta_s[0], "tsr.group.%s", base);
                snprintf(meta_s[6 * n_meta + 5], sizeof meta_s[0], "%lld", (long long)full.block);
                n_meta++;
                continue;
            }
            if (rs == TSR_OK && tsr_wtype_block_size(full.type) > 1) {
                size_t rb;
                char what[96];
                if (layer >= 0) snprintf(what, sizeof what, "%s of layer %d", tsr_shard_rule_of((tsr_wkind)k)->what, layer);
                else snprintf(what, sizeof what, "%s", tsr_shard_rule_of((tsr_wkind)k)->what);
                if (size > 1 && v_r0 == 0 && v_c0 == 0) {
                    st = tsr_shard_check_blocks(&cfg, (tsr_wkind)k, &full, what, rank, size);
                    if (st != TSR_OK) break;
                }
                st = tsr__copy_blocks(src, (tsr_wkind)k, layer < 0 ? 0 : layer, &full, r0 - v_r0, nr, c0 - v_c0, nc, &bufs[n],
                                      &rb);
                if (st != TSR_OK) break;
                tsr__ws_tensor_name(names[n], sizeof names[n], (tsr_wkind)k, layer < 0 ? 0 : layer);
                ts[n] = (tsr_st_write_tensor){.name = names[n], .dtype = TSR_U8, .n_dims = 2,
                                              .shape = {nr, (int64_t)rb}, .data = bufs[n]};
                snprintf(meta_s[6 * n_meta], sizeof meta_s[0], "tsr.wtype.%s", names[n]);
                snprintf(meta_s[6 * n_meta + 1], sizeof meta_s[0], "%s", tsr_wtype_name(full.type));
                snprintf(meta_s[6 * n_meta + 2], sizeof meta_s[0], "tsr.cols.%s", names[n]);
                snprintf(meta_s[6 * n_meta + 3], sizeof meta_s[0], "%lld", (long long)nc);
                snprintf(meta_s[6 * n_meta + 4], sizeof meta_s[0], "tsr.group.%s", names[n]);
                snprintf(meta_s[6 * n_meta + 5], sizeof meta_s[0], "%lld", (long long)tsr_wtype_block_size(full.type));
                n_meta++, n++;
                continue;
            }
            st = tsr__reader_stage(&L, (size_t)(nr * nc));
            if (st == TSR_OK) st = tsr__reader_read_local(&L, (tsr_wkind)k, layer < 0 ? 0 : layer, L.stage, &cnt);
            if (st != TSR_OK) break;
            size_t es = tsr_dtype_size(dtype);
            bufs[n] = malloc(es * (size_t)cnt);
            if (!bufs[n]) {
                st = tsr_errorf(TSR_ERR_OOM, "out of memory");
                break;
            }
            for (int64_t i = 0; i < cnt; i++) {
                if (dtype == TSR_F32) ((float *)bufs[n])[i] = L.stage[i];
                else if (dtype == TSR_F16) ((uint16_t *)bufs[n])[i] = tsr_f32_to_f16(L.stage[i]);
                else ((uint16_t *)bufs[n])[i] = tsr_f32_to_bf16(L.stage[i]);
            }
            tsr__ws_tensor_name(names[n], sizeof names[n], (tsr_wkind)k, layer < 0 ? 0 : layer);
            ts[n] = (tsr_st_write_tensor){.name = names[n], .dtype = dtype, .n_dims = vec ? 1 : 2,
                                          .shape = {nr, nc}, .data = bufs[n]};
            n++;
        }
        if (layer >= 0) tsr_progress("converting layers", layer + 1, cfg.n_layer);
    }
    if (st == TSR_OK) {
        char rank_s[16], size_s[16];
        snprintf(rank_s, sizeof rank_s, "%d", rank);
        snprintf(size_s, sizeof size_s, "%d", size);
        const char *head[] = {"format", "tessera-workspace", "rank", rank_s, "tensor_para_size", size_s};
        int64_t nm = 0;
        for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) meta[nm++] = head[i];
        for (int64_t i = 0; i < 6 * n_meta; i++) meta[nm++] = meta_s[i];
        meta[nm] = NULL;
        st = tsr_safetensors_write(out_path, ts, n, meta);
    }
    for (int64_t i = 0; i < n; i++) free(bufs[i]);
    free(meta_s);
    free(meta);
    free(bufs);
    free(names);
    free(ts);
    tsr__reader_free(&L);
    src->close(src);
    return st;
}

static tsr_status tsr__copy_file(const char *src, const char *dst) {
    char *data;
    size_t len;
    TSR_TRY(tsr_read_file(src, (size_t)1 << 30, &data, &len));
    tsr_status st = tsr_write_file(dst, data, len);
    free(data);
    return st;
}

tsr_status tsr_copy_tokenizer(const char *model_path, const char *dir) {
    if (!tsr_path_is_dir(model_path)) {
        tsr_gguf *g;
        TSR_TRY(tsr_gguf_open(model_path, &g));
        static const char *const keep[] = {"tokenizer.", "general.", NULL};
        char *dst = tsr_path_join(dir, "tokenizer.gguf");
        tsr_status st = tsr_gguf_write_metadata(dst, g, keep);
        free(dst);
        tsr_gguf_close(g);
        return st;
    }
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                        "special_tokens_map.json", "tokenizer.gguf", NULL};
    for (const char *const *f = files; *f; f++) {
        char *src = tsr_path_join(model_path, *f), *dst = tsr_path_join(dir, *f);
        tsr_status st = tsr_path_exists(src) ? tsr__copy_file(src, dst) : TSR_OK;
        free(src);
        free(dst);
        TSR_TRY(st);
    }
    return TSR_OK;
}

tsr_status tsr_workspace_convert(const char *model_path, const char *dir, int tp, tsr_dtype dtype, bool keep_quantized) {
    if (tp < 1) return tsr_errorf(TSR_ERR_INVALID_ARG, "--tp must be at least 1");
    tsr_model_config cfg;
    TSR_TRY(tsr_model_config_load(model_path, &cfg));
    for (int r = 0; r < tp; r++) { /* refuse an impossible split before writing anything */
        tsr_shard sh;
        TSR_TRY(tsr_shard_plan(&cfg, r, tp, &sh));
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return tsr_errorf(TSR_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    /* tokenizer and chat template, in the form they came in */
    TSR_TRY(tsr_copy_tokenizer(model_path, dir));
    for (int r = 0; r < tp; r++) {
        char name[64];
        snprintf(name, sizeof name, "rank%d.safetensors", r);
        char *path = tsr_path_join(dir, name);
        TSR_LOGI("converting rank %d of %d -> %s", r, tp, path);
        tsr_status st = tsr_workspace_write_rank(model_path, r, tp, dtype, keep_quantized, path);
        free(path);
        TSR_TRY(st);
    }
    return tsr_workspace_write_config(dir, &cfg, tp, dtype, cfg.max_position_embeddings);
}

tsr_status tsr_workspace_check_model_format(const char *model_path, const char *format, int64_t group) {
    static const char *const names[] = {[TSR__HFQ_NONE] = "unquantized", [TSR__HFQ_AWQ] = "awq",
                                        [TSR__HFQ_GPTQ] = "gptq", [TSR__HFQ_CT] = "compressed-tensors"};
    bool dir = tsr_path_is_dir(model_path);
    if (!strcmp(format, "gguf") || !strcmp(format, "hf")) {
        if (dir == !strcmp(format, "hf")) return TSR_OK;
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--model-format %s, but %s is %s", format, model_path,
                          dir ? "an HF directory" : "not an HF directory");
    }
    tsr__hfq_method want = !strcmp(format, "awq") ? TSR__HFQ_AWQ : !strcmp(format, "gptq") ? TSR__HFQ_GPTQ
                           : !strcmp(format, "compressed-tensors") ? TSR__HFQ_CT : TSR__HFQ_NONE;
    if (want == TSR__HFQ_NONE)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--model-format '%s': hf, gguf, awq, gptq or compressed-tensors", format);
    if (!dir)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--model-format %s names a quantized HF checkpoint, but %s is a file",
                          format, model_path);
    char *cj = tsr_path_join(model_path, "config.json");
    tsr__hfq q;
    tsr_status st = tsr__hfq_parse(cj, &q);
    free(cj);
    TSR_TRY(st);
    if (q.method != want)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--model-format %s, but %s is %s (its config.json's quantization_config)",
                          format, model_path, names[q.method]);
    if (group > 0 && q.group != group)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--group-size %lld, but %s is quantized in groups of %lld", (long long)group,
                          model_path, (long long)q.group);
    return TSR_OK;
}
