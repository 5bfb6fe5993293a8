/* A workspace's config.ini: writing it, and reading its model fields and runtime knobs (see
 * workspace.h).  The rank files are written by worker/workspace_convert.c and read by
 * worker/weights_workspace.c. */
#include "worker/workspace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/ini.h"

#define TSR__SEC "llama"

bool tsr_workspace_is(const char *path) {
    if (!tsr_path_is_dir(path)) return false;
    char *p = tsr_path_join(path, "config.ini");
    bool ok = tsr_path_exists(p);
    free(p);
    return ok;
}

static const char *tsr__wt_name(tsr_dtype t) {
    return t == TSR_F16 ? "fp16" : t == TSR_BF16 ? "bf16" : "fp32";
}

tsr_status tsr_workspace_write_config(const char *dir, const tsr_model_config *c, int tp, tsr_dtype wt,
                                      int64_t session_len) {
    char *path = tsr_path_join(dir, "config.ini");
    FILE *f = fopen(path, "w");
    if (!f) {
        tsr_status st = tsr_errorf(TSR_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(path);
        return st;
    }
    fprintf(f, "# Tessera workspace (made by `tessera convert`).  Model fields are checked against the\n"
               "# weights; the runtime knobs (session_len, max_batch_size, cache_*, quant_policy,\n"
               "# rope_scaling_factor, use_logn_attn) may be edited.\n[" TSR__SEC "]\n");
    fprintf(f, "model_name = %s\narchitecture = %s\ntensor_para_size = %d\n", c->model_name, tsr_arch_name(c->arch), tp);
    fprintf(f, "head_num = %lld\nkv_head_num = %lld\nsize_per_head = %lld\nhidden_units = %lld\n", (long long)c->n_head,
            (long long)c->n_kv_head, (long long)c->head_dim, (long long)c->d_model);
    fprintf(f, "vocab_size = %lld\nnum_layer = %lld\ninter_size = %lld\nnorm_eps = %.9g\nattn_bias = %d\n",
            (long long)c->vocab_size, (long long)c->n_layer, (long long)c->d_ff, (double)c->norm_eps, c->attn_bias ? 1 : 0);
    fprintf(f, "tie_word_embeddings = %d\nstart_id = %d\nend_id = %d\n", c->tie_embeddings ? 1 : 0, c->bos_id, c->eos_id);
    fprintf(f, "extra_end_ids =");
    for (int i = 0; i < c->n_extra_eos; i++) fprintf(f, "%s%d", i ? "," : " ", c->extra_eos[i]);
    fprintf(f, "\nweight_type = %s\ngroup_size = 0\n", tsr__wt_name(wt));
    fprintf(f, "rotary_embedding = %lld\nrope_theta = %.9g\nmax_position_embeddings = %lld\n", (long long)c->head_dim,
            (double)c->rope_theta, (long long)c->max_position_embeddings);
    fprintf(f, "rope_scaling_type = %s\nrope_scaling_factor = %.9g\n", tsr_rope_type_name(c->rope_type),
            c->rope_type == TSR_ROPE_DEFAULT ? 0.0 : (double)c->rope_factor);
    fprintf(f, "rope_low_freq_factor = %.9g\nrope_high_freq_factor = %.9g\noriginal_max_position_embeddings = %lld\n",
            (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, (long long)c->rope_original_max_pos);
    fprintf(f, "use_logn_attn = %d\n", c->use_logn_attn ? 1 : 0);
    if (c->rope_type == TSR_ROPE_YARN || c->rope_type == TSR_ROPE_LONGROPE)
        fprintf(f, "rope_attention_factor = %.9g\nrope_beta_fast = %.9g\nrope_beta_slow = %.9g\nrope_yarn_truncate = %d\n",
                (double)c->rope_attn_factor, (double)c->rope_beta_fast, (double)c->rope_beta_slow, c->rope_yarn_truncate ? 1 : 0);
    for (int l = 0; c->rope_type == TSR_ROPE_LONGROPE && l < 2; l++) {
        const float *fa = l ? c->rope_long_factor : c->rope_short_factor;
        fprintf(f, "%s =", l ? "rope_long_factor" : "rope_short_factor");
        for (int i = 0; i < c->rope_n_factors; i++) fprintf(f, "%s%.9g", i ? "," : " ", (double)fa[i]);
        fprintf(f, "\n");
    }
    /* sliding-window attention: layers >= max_window_layers see the last sliding_window keys */
    fprintf(f, "sliding_window = %lld\nmax_window_layers = %lld\n", (long long)c->sliding_window, (long long)c->window_layer0);
    /* only knobs every command honours (TurboMind's step_length, cache_chunk_size and
     * use_context_fmha have no meaning here and are not written) */
    fprintf(f, "# runtime knobs\nsession_len = %lld\nmax_batch_size = 64\nmax_context_token_num = 2048\n"
               "cache_max_entry_count = 0.5\ncache_block_seq_len = 64\nquant_policy = 0\n",
            (long long)session_len);
    int rc = fclose(f);
    tsr_status st = rc == 0 ? TSR_OK : tsr_errorf(TSR_ERR_IO, "%s: write failed", path);
    free(path);
    return st;
}

static tsr_status tsr__geti(const tsr_ini *ini, const char *k, int64_t *v) { return tsr_ini_get_i64(ini, TSR__SEC, k, v); }
static tsr_status tsr__getf(const tsr_ini *ini, const char *k, double *v) { return tsr_ini_get_f64(ini, TSR__SEC, k, v); }

tsr_status tsr_workspace_read_config(const char *dir, tsr_model_config *c, int *tp, tsr_dtype *wt) {
    char *path = tsr_path_join(dir, "config.ini");
    tsr_ini *ini = NULL;
    tsr_status st = tsr_ini_load(path, &ini);
    free(path);
    TSR_TRY(st);
    memset(c, 0, sizeof *c);
    int64_t v, tp64 = 1;
    double x;
    const char *s;
#define TSR__I(key, field) if (st == TSR_OK && (st = tsr__geti(ini, key, &v)) == TSR_OK) c->field = v
    TSR__I("head_num", n_head);
    TSR__I("kv_head_num", n_kv_head);
    TSR__I("size_per_head", head_dim);
    TSR__I("hidden_units", d_model);
    TSR__I("vocab_size", vocab_size);
    TSR__I("num_layer", n_layer);
    TSR__I("inter_size", d_ff);
    TSR__I("max_position_embeddings", max_position_embeddings);
    TSR__I("original_max_position_embeddings", rope_original_max_pos);
    TSR__I("start_id", bos_id);
    TSR__I("end_id", eos_id);
    TSR__I("attn_bias", attn_bias);
    TSR__I("tie_word_embeddings", tie_embeddings);
    TSR__I("use_logn_attn", use_logn_attn);
#undef TSR__I
    /* optional keys (workspaces written before them have none of these features) */
    if (st == TSR_OK && tsr_ini_get(ini, TSR__SEC, "sliding_window")) {
        if ((st = tsr__geti(ini, "sliding_window", &v)) == TSR_OK) c->sliding_window = v;
        if (st == TSR_OK && (st = tsr__geti(ini, "max_window_layers", &v)) == TSR_OK) c->window_layer0 = v;
    }
    if (st == TSR_OK && tsr_ini_get(ini, TSR__SEC, "rope_attention_factor")) {
        if ((st = tsr__getf(ini, "rope_attention_factor", &x)) == TSR_OK) c->rope_attn_factor = (float)x;
        if (st == TSR_OK && (st = tsr__getf(ini, "rope_beta_fast", &x)) == TSR_OK) c->rope_beta_fast = (float)x;
        if (st == TSR_OK && (st = tsr__getf(ini, "rope_beta_slow", &x)) == TSR_OK) c->rope_beta_slow = (float)x;
        if (st == TSR_OK && (st = tsr__geti(ini, "rope_yarn_truncate", &v)) == TSR_OK) c->rope_yarn_truncate = v != 0;
    }
    for (int l = 0; st == TSR_OK && l < 2; l++) {
        s = tsr_ini_get(ini, TSR__SEC, l ? "rope_long_factor" : "rope_short_factor");
        float *fa = l ? c->rope_long_factor : c->rope_short_factor;
        int32_t n = 0;
        for (const char *p = s; p && *p && n < TSR_ROPE_MAX_FACTORS;) {
            char *end;
            double d = strtod(p, &end);
            if (end == p) break;
            fa[n++] = (float)d;
            p = *end == ',' ? end + 1 : end;
        }
        if (s) c->rope_n_factors = n; /* validate checks it is head_dim / 2 */
    }
    if (st == TSR_OK) st = tsr__geti(ini, "tensor_para_size", &tp64);
#define TSR__F(key, field) if (st == TSR_OK && (st = tsr__getf(ini, key, &x)) == TSR_OK) c->field = (float)x
    TSR__F("norm_eps", norm_eps);
    TSR__F("rope_theta", rope_theta);
    TSR__F("rope_scaling_factor", rope_factor);
    TSR__F("rope_low_freq_factor", rope_low_freq_factor);
    TSR__F("rope_high_freq_factor", rope_high_freq_factor);
#undef TSR__F
    if (st == TSR_OK) {
        s = tsr_ini_get(ini, TSR__SEC, "model_name");
        snprintf(c->model_name, sizeof c->model_name, "%s", s ? s : "model");
        s = tsr_ini_get(ini, TSR__SEC, "architecture");
        c->arch = TSR_ARCH_LLAMA;
        for (int a = TSR_ARCH_LLAMA; a <= TSR_ARCH_INTERNLM2 && s; a++)
            if (!strcmp(s, tsr_arch_name((tsr_arch)a))) c->arch = (tsr_arch)a;
        s = tsr_ini_get(ini, TSR__SEC, "rope_scaling_type");
        c->rope_type = TSR_ROPE_DEFAULT;
        if (s && !strcmp(s, "linear")) c->rope_type = TSR_ROPE_LINEAR;
        else if (s && !strcmp(s, "llama3")) c->rope_type = TSR_ROPE_LLAMA3;
        else if (s && !strcmp(s, "dynamic")) c->rope_type = TSR_ROPE_DYNAMIC;
        else if (s && !strcmp(s, "yarn")) c->rope_type = TSR_ROPE_YARN;
        else if (s && !strcmp(s, "longrope")) c->rope_type = TSR_ROPE_LONGROPE;
        else if (s && strcmp(s, "default")) st = tsr_errorf(TSR_ERR_UNSUPPORTED,
                                                  "%s/config.ini: rope_scaling_type '%.32s' is not supported (default, "
                                                  "linear, dynamic, llama3, yarn, longrope are)", dir, s);
        /* TurboMind's rule: a rope_scaling_factor > 0 on a model without scaling turns on
         * dynamic NTK, so editing config.ini is enough to stretch the context */
        if (c->rope_type == TSR_ROPE_DEFAULT && c->rope_factor > 0) c->rope_type = TSR_ROPE_DYNAMIC;
        s = tsr_ini_get(ini, TSR__SEC, "extra_end_ids");
        for (const char *p = s; p && *p && c->n_extra_eos < 8;) {
            char *end;
            long id = strtol(p, &end, 10);
            if (end == p) break;
            c->extra_eos[c->n_extra_eos++] = (int32_t)id;
            p = *end == ',' ? end + 1 : end;
        }
        s = tsr_ini_get(ini, TSR__SEC, "weight_type");
        if (wt) *wt = s && !strcmp(s, "fp16") ? TSR_F16 : s && !strcmp(s, "bf16") ? TSR_BF16 : TSR_F32;
    }
    if (st == TSR_OK && tp64 < 1) st = tsr_errorf(TSR_ERR_FORMAT, "%s/config.ini: tensor_para_size %lld", dir, (long long)tp64);
    tsr_ini_free(ini);
    if (st != TSR_OK) return st;
    *tp = (int)tp64;
    return tsr_model_config_validate(c, dir);
}

tsr_status tsr_workspace_read_knobs(const char *dir, tsr_ws_knobs *k) {
    char *path = tsr_path_join(dir, "config.ini");
    tsr_ini *ini = NULL;
    tsr_status st = tsr_ini_load(path, &ini);
    free(path);
    TSR_TRY(st);
    int64_t v;
    double x;
    /* each knob is optional; a present but malformed one is an error */
#define TSR__K(key, field, get, tmp)                                                            \
    if (st == TSR_OK && tsr_ini_get(ini, TSR__SEC, key)) {                                      \
        st = get(ini, key, &tmp);                                                               \
        if (st == TSR_OK) k->field = tmp;                                                       \
    }
    TSR__K("session_len", session_len, tsr__geti, v);
    TSR__K("max_batch_size", max_batch_size, tsr__geti, v);
    TSR__K("cache_max_entry_count", cache_max_entry_count, tsr__getf, x);
    TSR__K("cache_block_seq_len", cache_block_seq_len, tsr__geti, v);
    TSR__K("quant_policy", quant_policy, tsr__geti, v);
    TSR__K("max_context_token_num", max_prefill_token_num, tsr__geti, v);
#undef TSR__K
    /* TurboMind keys Tessera has no use for: named for a warning, not silently dropped */
    static const char *unused[] = {"step_length", "cache_chunk_size", "use_context_fmha"};
    k->unused[0] = '\0';
    for (size_t i = 0; i < sizeof unused / sizeof *unused; i++)
        if (tsr_ini_get(ini, TSR__SEC, unused[i])) {
            size_t l = strlen(k->unused);
            snprintf(k->unused + l, sizeof k->unused - l, "%s%s", l ? ", " : "", unused[i]);
        }
    tsr_ini_free(ini);
    return st;
}
