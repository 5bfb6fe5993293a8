/* The model config from its two sources (see model_config.h): an HF config.json (Llama,
 * Mistral, Qwen2, InternLM2, with their key spellings and defaults as transformers applies
 * them) and GGUF metadata (`<arch>.*` keys as llama.cpp writes them).  Both end in
 * tsr_model_config_validate so a bad config is one clear message before any weight is read. */
#include "common/model_config.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"

const char *tsr_arch_name(tsr_arch a) {
    switch (a) {
    case TSR_ARCH_LLAMA: return "llama";
    case TSR_ARCH_MISTRAL: return "mistral";
    case TSR_ARCH_QWEN2: return "qwen2";
    case TSR_ARCH_INTERNLM2: return "internlm2";
    }
    return "unknown";
}

const char *tsr_rope_type_name(tsr_rope_type t) {
    switch (t) {
    case TSR_ROPE_DEFAULT: return "default";
    case TSR_ROPE_LINEAR: return "linear";
    case TSR_ROPE_LLAMA3: return "llama3";
    case TSR_ROPE_DYNAMIC: return "dynamic";
    case TSR_ROPE_YARN: return "yarn";
    case TSR_ROPE_LONGROPE: return "longrope";
    }
    return "unknown";
}

static void tsr__cfg_defaults(tsr_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->norm_eps = 1e-6f;
    cfg->rope_theta = 10000.0f;
    cfg->max_position_embeddings = 2048;
    cfg->rope_type = TSR_ROPE_DEFAULT;
    cfg->rope_factor = 1.0f;
    cfg->bos_id = -1;
    cfg->eos_id = -1;
}

/* ---- HF config.json ---- */

/* A double that is exactly an int32 (no undefined out-of-range casts). */
static bool tsr__as_i32(double d, int32_t *out) {
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return false;
    *out = (int32_t)d;
    return true;
}

/* A JSON integer field: absent or null leaves *out alone; anything but an integer is an error. */
static tsr_status tsr__j_int(const cJSON *o, const char *key, int64_t *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return TSR_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: '%s' is not an integer", path, key);
    *out = (int64_t)v->valuedouble;
    return TSR_OK;
}

static tsr_status tsr__j_float(const cJSON *o, const char *key, float *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return TSR_OK;
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) <= FLT_MAX))
        return tsr_errorf(TSR_ERR_FORMAT, "%s: '%s' is not a number in float range", path, key);
    *out = (float)v->valuedouble;
    return TSR_OK;
}

static tsr_status tsr__j_bool(const cJSON *o, const char *key, bool *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return TSR_OK;
    if (!cJSON_IsBool(v)) return tsr_errorf(TSR_ERR_FORMAT, "%s: '%s' is not true/false", path, key);
    *out = cJSON_IsTrue(v);
    return TSR_OK;
}

/* eos_token_id: an integer or a list of them (Llama 3: [128001, 128008, 128009]). */
static tsr_status tsr__j_eos(const cJSON *o, tsr_model_config *cfg, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    if (!v || cJSON_IsNull(v)) return TSR_OK;
    if (cJSON_IsNumber(v)) {
        if (!tsr__as_i32(v->valuedouble, &cfg->eos_id))
            return tsr_errorf(TSR_ERR_FORMAT, "%s: eos_token_id is not an int32", path);
        return TSR_OK;
    }
    if (!cJSON_IsArray(v)) return tsr_errorf(TSR_ERR_FORMAT, "%s: eos_token_id is neither an integer nor a list", path);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        int32_t id;
        if (!cJSON_IsNumber(e) || !tsr__as_i32(e->valuedouble, &id))
            return tsr_errorf(TSR_ERR_FORMAT, "%s: eos_token_id[%d] is not an int32", path, i);
        if (i == 0) cfg->eos_id = id;
        else if (cfg->n_extra_eos < (int32_t)(sizeof cfg->extra_eos / sizeof cfg->extra_eos[0]))
            cfg->extra_eos[cfg->n_extra_eos++] = id;
        else return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: eos_token_id lists more than 9 ids", path);
    }
    return TSR_OK;
}

/* A list of numbers (longrope's short_factor / long_factor) into out[cap]; *n its length. */
static tsr_status tsr__j_float_list(const cJSON *o, const char *key, float *out, int32_t cap, int32_t *n,
                                    const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(v)) return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling needs a list '%s'", path, key);
    int32_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (i >= cap) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: rope_scaling %s has more than %d entries", path, key, cap);
        if (!cJSON_IsNumber(e) || !(fabs(e->valuedouble) <= FLT_MAX))
            return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling %s[%d] is not a number", path, key, i);
        out[i] = (float)e->valuedouble;
    }
    *n = i;
    return TSR_OK;
}

/* HF's get_mscale of _compute_yarn_parameters. */
static double tsr__yarn_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* yarn and longrope as transformers' _compute_yarn_parameters / _compute_longrope_parameters read
 * them: original_max_position_embeddings from the top level first (Phi-3 keeps it there), then
 * rope_scaling, else max_position_embeddings; a missing factor is max_pos / original; the
 * attention factor (the cos/sin multiplier) from attention_factor, else derived from factor. */
static tsr_status tsr__j_rope_yarn_longrope(const cJSON *root, const cJSON *rs, tsr_model_config *cfg, const char *path) {
    int64_t orig = -1;
    TSR_TRY(tsr__j_int(root, "original_max_position_embeddings", &orig, path));
    if (orig < 0) TSR_TRY(tsr__j_int(rs, "original_max_position_embeddings", &orig, path));
    if (orig < 0) orig = cfg->max_position_embeddings;
    if (orig <= 0) return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling needs original_max_position_embeddings > 0", path);
    cfg->rope_original_max_pos = orig;
    float factor = 0;
    TSR_TRY(tsr__j_float(rs, "factor", &factor, path));
    if (factor == 0) factor = (float)((double)cfg->max_position_embeddings / (double)orig);
    cfg->rope_factor = factor;
    float af = 0;
    TSR_TRY(tsr__j_float(rs, "attention_factor", &af, path));
    if (cfg->rope_type == TSR_ROPE_YARN) {
        float ms = 0, ms_all = 0;
        cfg->rope_beta_fast = 0;
        cfg->rope_beta_slow = 0;
        cfg->rope_yarn_truncate = true;
        TSR_TRY(tsr__j_float(rs, "mscale", &ms, path));
        TSR_TRY(tsr__j_float(rs, "mscale_all_dim", &ms_all, path));
        TSR_TRY(tsr__j_float(rs, "beta_fast", &cfg->rope_beta_fast, path));
        TSR_TRY(tsr__j_float(rs, "beta_slow", &cfg->rope_beta_slow, path));
        TSR_TRY(tsr__j_bool(rs, "truncate", &cfg->rope_yarn_truncate, path));
        if (cfg->rope_beta_fast == 0) cfg->rope_beta_fast = 32; /* HF: `get("beta_fast") or 32` */
        if (cfg->rope_beta_slow == 0) cfg->rope_beta_slow = 1;
        if (af == 0) {
            af = ms != 0 && ms_all != 0 ? (float)(tsr__yarn_mscale(factor, ms) / tsr__yarn_mscale(factor, ms_all))
                                        : (float)tsr__yarn_mscale(factor, 1.0);
        }
    } else {
        int32_t ns = 0, nl = 0;
        TSR_TRY(tsr__j_float_list(rs, "short_factor", cfg->rope_short_factor, TSR_ROPE_MAX_FACTORS, &ns, path));
        TSR_TRY(tsr__j_float_list(rs, "long_factor", cfg->rope_long_factor, TSR_ROPE_MAX_FACTORS, &nl, path));
        if (ns != nl) return tsr_errorf(TSR_ERR_FORMAT, "%s: longrope short_factor has %d entries, long_factor %d", path, ns, nl);
        cfg->rope_n_factors = ns;
        if (af == 0) af = factor <= 1 ? 1.0f : (float)sqrt(1.0 + log((double)factor) / log((double)orig));
    }
    cfg->rope_attn_factor = af;
    return TSR_OK;
}

static tsr_status tsr__j_rope_scaling(const cJSON *o, tsr_model_config *cfg, const char *path) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return TSR_OK;
    if (!cJSON_IsObject(rs)) return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling is not an object", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type"); /* newer transformers */
    if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(ty)) return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling has no type / rope_type", path);
    const char *t = ty->valuestring;
    if (!strcmp(t, "default")) return TSR_OK;
    if (!strcmp(t, "linear")) cfg->rope_type = TSR_ROPE_LINEAR;
    else if (!strcmp(t, "dynamic")) cfg->rope_type = TSR_ROPE_DYNAMIC;
    else if (!strcmp(t, "llama3")) cfg->rope_type = TSR_ROPE_LLAMA3;
    else if (!strcmp(t, "yarn")) cfg->rope_type = TSR_ROPE_YARN;
    else if (!strcmp(t, "longrope")) cfg->rope_type = TSR_ROPE_LONGROPE;
    else return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: rope_scaling type '%.32s' is not supported (default, linear, dynamic, llama3, yarn, longrope are)", path, t);
    if (cfg->rope_type == TSR_ROPE_YARN || cfg->rope_type == TSR_ROPE_LONGROPE)
        return tsr__j_rope_yarn_longrope(o, rs, cfg, path);
    if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rs, "factor")))
        return tsr_errorf(TSR_ERR_FORMAT, "%s: rope_scaling of type %s needs a numeric factor", path, t);
    TSR_TRY(tsr__j_float(rs, "factor", &cfg->rope_factor, path));
    if (cfg->rope_type == TSR_ROPE_LLAMA3) {
        cfg->rope_low_freq_factor = 1.0f;
        cfg->rope_high_freq_factor = 4.0f;
        cfg->rope_original_max_pos = 8192;
        TSR_TRY(tsr__j_float(rs, "low_freq_factor", &cfg->rope_low_freq_factor, path));
        TSR_TRY(tsr__j_float(rs, "high_freq_factor", &cfg->rope_high_freq_factor, path));
        TSR_TRY(tsr__j_int(rs, "original_max_position_embeddings", &cfg->rope_original_max_pos, path));
    }
    return TSR_OK;
}

/* Sliding-window attention as transformers' configs decide it.  Mistral: sliding_window (null:
 * none) on every layer.  Qwen2: only with use_sliding_window, on the layers whose layer_types
 * entry is "sliding_attention" -- by default those from max_window_layers on. */
static tsr_status tsr__j_sliding_window(const cJSON *root, tsr_model_config *cfg, const char *path) {
    if (cfg->arch != TSR_ARCH_MISTRAL && cfg->arch != TSR_ARCH_QWEN2) return TSR_OK;
    /* absent: the configs' default 4096 (as transformers reads it); null: no window */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    int64_t w = sw ? 0 : 4096;
    TSR_TRY(tsr__j_int(root, "sliding_window", &w, path));
    if (w < 0) return tsr_errorf(TSR_ERR_FORMAT, "%s: sliding_window %lld is negative", path, (long long)w);
    cfg->window_layer0 = 0;
    if (cfg->arch == TSR_ARCH_QWEN2) {
        bool use = false;
        int64_t mwl = 28; /* Qwen2Config's default */
        TSR_TRY(tsr__j_bool(root, "use_sliding_window", &use, path));
        TSR_TRY(tsr__j_int(root, "max_window_layers", &mwl, path));
        if (!use) w = 0;
        cfg->window_layer0 = mwl < 0 ? 0 : mwl;
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
        if (lt && !cJSON_IsNull(lt)) {
            /* an explicit list: only the shape "full ... full, sliding ... sliding" is kept */
            if (!cJSON_IsArray(lt)) return tsr_errorf(TSR_ERR_FORMAT, "%s: layer_types is not a list", path);
            int64_t i = 0, first = -1;
            for (const cJSON *e = lt->child; e; e = e->next, i++) {
                bool sl = cJSON_IsString(e) && !strcmp(e->valuestring, "sliding_attention");
                if (!sl && !(cJSON_IsString(e) && !strcmp(e->valuestring, "full_attention")))
                    return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: layer_types[%lld] is neither full_attention nor sliding_attention",
                                      path, (long long)i);
                if (sl && first < 0) first = i;
                if (!sl && first >= 0 && w > 0)
                    return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: layer_types puts a full_attention layer (%lld) after a "
                                      "sliding_attention one; only windows on the last layers are supported", path, (long long)i);
            }
            if (i != cfg->n_layer)
                return tsr_errorf(TSR_ERR_FORMAT, "%s: layer_types has %lld entries for %lld layers", path, (long long)i,
                                  (long long)cfg->n_layer);
            cfg->window_layer0 = first < 0 ? cfg->n_layer : first;
        }
    }
    cfg->sliding_window = w;
    if (cfg->window_layer0 > cfg->n_layer) cfg->window_layer0 = cfg->n_layer;
    return TSR_OK;
}

static void tsr__basename_into(char *dst, size_t cap, const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t len = n - b < cap - 1 ? n - b : cap - 1;
    memcpy(dst, path + b, len);
    dst[len] = 0;
}

static tsr_status tsr__from_hf_json(const cJSON *root, tsr_model_config *cfg, const char *path, const char *dir) {
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? archs->child : NULL;
    if (!cJSON_IsString(a0)) return tsr_errorf(TSR_ERR_FORMAT, "%s: no \"architectures\" list", path);
    const char *an = a0->valuestring;
    if (!strcmp(an, "LlamaForCausalLM")) cfg->arch = TSR_ARCH_LLAMA;
    else if (!strcmp(an, "MistralForCausalLM")) cfg->arch = TSR_ARCH_MISTRAL;
    else if (!strcmp(an, "Qwen2ForCausalLM")) cfg->arch = TSR_ARCH_QWEN2;
    else if (!strcmp(an, "InternLM2ForCausalLM")) cfg->arch = TSR_ARCH_INTERNLM2;
    else
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "%s: architecture '%.64s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                          "Qwen2ForCausalLM, InternLM2ForCausalLM are)", path, an);

    /* the directory name is what users call a model; _name_or_path is often a training path */
    tsr__basename_into(cfg->model_name, sizeof cfg->model_name, dir);

    cfg->max_position_embeddings = 2048;
    cfg->n_kv_head = -1;
    cfg->head_dim = -1;
    TSR_TRY(tsr__j_int(root, "vocab_size", &cfg->vocab_size, path));
    TSR_TRY(tsr__j_int(root, "hidden_size", &cfg->d_model, path));
    TSR_TRY(tsr__j_int(root, "num_hidden_layers", &cfg->n_layer, path));
    TSR_TRY(tsr__j_int(root, "num_attention_heads", &cfg->n_head, path));
    TSR_TRY(tsr__j_int(root, "num_key_value_heads", &cfg->n_kv_head, path));
    TSR_TRY(tsr__j_int(root, "head_dim", &cfg->head_dim, path));
    TSR_TRY(tsr__j_int(root, "intermediate_size", &cfg->d_ff, path));
    TSR_TRY(tsr__j_int(root, "max_position_embeddings", &cfg->max_position_embeddings, path));
    TSR_TRY(tsr__j_float(root, "rms_norm_eps", &cfg->norm_eps, path));
    TSR_TRY(tsr__j_float(root, "rope_theta", &cfg->rope_theta, path));
    TSR_TRY(tsr__j_bool(root, "tie_word_embeddings", &cfg->tie_embeddings, path));
    TSR_TRY(tsr__j_bool(root, "use_logn_attn", &cfg->use_logn_attn, path));
    if (cfg->n_kv_head < 0) cfg->n_kv_head = cfg->n_head; /* MHA when absent (Llama 2 7B) */
    if (cfg->head_dim < 0 && cfg->n_head > 0) cfg->head_dim = cfg->d_model / cfg->n_head;

    switch (cfg->arch) {
    case TSR_ARCH_QWEN2: cfg->attn_bias = true; break; /* Qwen2 always has q/k/v biases */
    case TSR_ARCH_INTERNLM2:
        cfg->attn_bias = true; /* InternLM2Config's default for "bias" */
        TSR_TRY(tsr__j_bool(root, "bias", &cfg->attn_bias, path));
        break;
    default: TSR_TRY(tsr__j_bool(root, "attention_bias", &cfg->attn_bias, path)); break;
    }
    TSR_TRY(tsr__j_rope_scaling(root, cfg, path));
    TSR_TRY(tsr__j_sliding_window(root, cfg, path));

    int64_t bos = -1;
    TSR_TRY(tsr__j_int(root, "bos_token_id", &bos, path));
    if (bos < -1 || bos > INT32_MAX) return tsr_errorf(TSR_ERR_FORMAT, "%s: bos_token_id %lld is out of range", path, (long long)bos);
    cfg->bos_id = (int32_t)bos;
    TSR_TRY(tsr__j_eos(root, cfg, path));
    return TSR_OK;
}

tsr_status tsr_model_config_from_hf(const char *config_json_path, tsr_model_config *cfg) {
    tsr__cfg_defaults(cfg);
    char *joined = NULL;
    const char *path = config_json_path;
    if (tsr_path_is_dir(path)) path = joined = tsr_path_join(path, "config.json");
    char *text = NULL;
    size_t len = 0;
    tsr_status rc = tsr_read_file(path, 16u << 20, &text, &len);
    if (rc != TSR_OK) {
        free(joined);
        return rc;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        rc = tsr_errorf(TSR_ERR_FORMAT, "%s: not a JSON object", path);
    } else {
        /* the model's directory: config_json_path itself, or the file's parent */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) *slash = 0;
        else snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
        if (!strcmp(dir, ".")) {
            char cwd[4096];
            if (getcwd(cwd, sizeof cwd)) snprintf(dir, sizeof dir, "%s", cwd);
        }
        rc = tsr__from_hf_json(root, cfg, path, dir);
        if (rc == TSR_OK) rc = tsr_model_config_validate(cfg, path);
    }
    cJSON_Delete(root);
    free(joined);
    return rc;
}

/* ---- GGUF metadata ---- */

static tsr_status tsr__g_int(const tsr_gguf *g, const char *arch, const char *key, int64_t *out, bool required) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (tsr_gguf_get_i64(g, k, out)) return TSR_OK;
    if (tsr_gguf_find(g, k)) return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata %s is not an integer", tsr_gguf_path(g), k);
    if (required) return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata %s is missing", tsr_gguf_path(g), k);
    return TSR_OK;
}

static tsr_status tsr__g_float(const tsr_gguf *g, const char *arch, const char *key, float *out) {
    char k[128];
    double v;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (tsr_gguf_get_f64(g, k, &v)) {
        if (!(fabs(v) <= FLT_MAX)) return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata %s = %g is out of float range", tsr_gguf_path(g), k, v);
        *out = (float)v;
        return TSR_OK;
    }
    if (tsr_gguf_find(g, k)) return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata %s is not a number", tsr_gguf_path(g), k);
    return TSR_OK;
}

static tsr_status tsr__g_token(const tsr_gguf *g, const char *key, int32_t *out) {
    int64_t v;
    if (!tsr_gguf_find(g, key)) return TSR_OK;
    if (!tsr_gguf_get_i64(g, key, &v) || v < 0 || v > INT32_MAX)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata %s is not a token id", tsr_gguf_path(g), key);
    *out = (int32_t)v;
    return TSR_OK;
}

tsr_status tsr_model_config_from_gguf(const tsr_gguf *g, tsr_model_config *cfg) {
    tsr__cfg_defaults(cfg);
    const char *path = tsr_gguf_path(g);
    char *arch = tsr_gguf_get_str(g, "general.architecture");
    if (!arch) return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata general.architecture is missing", path);
    tsr_status rc = TSR_OK;
    /* Only llama.cpp's `llama` conventions are read (Llama, Mistral, SmolLM ... are converted
     * to it); other architectures (qwen2's unpermuted Q/K, ...) are refused here, by name,
     * rather than by the weight loader after this check passed. */
    if (!strcmp(arch, "llama")) cfg->arch = TSR_ARCH_LLAMA;
    else {
        rc = tsr_errorf(TSR_ERR_UNSUPPORTED,
                        "%s: GGUF architecture '%.32s' is not supported (GGUF files of architecture llama are; "
                        "qwen2, mistral and internlm2 models load from their Hugging Face directory)", path, arch);
        goto out;
    }
    char *name = tsr_gguf_get_str(g, "general.name");
    if (name) {
        snprintf(cfg->model_name, sizeof cfg->model_name, "%s", name);
        free(name);
    } else {
        tsr__basename_into(cfg->model_name, sizeof cfg->model_name, path);
    }

    int64_t head_dim = -1, rope_dim = -1;
    cfg->n_kv_head = -1;
    if ((rc = tsr__g_int(g, arch, "embedding_length", &cfg->d_model, true)) ||
        (rc = tsr__g_int(g, arch, "block_count", &cfg->n_layer, true)) ||
        (rc = tsr__g_int(g, arch, "feed_forward_length", &cfg->d_ff, true)) ||
        (rc = tsr__g_int(g, arch, "attention.head_count", &cfg->n_head, true)) ||
        (rc = tsr__g_int(g, arch, "attention.head_count_kv", &cfg->n_kv_head, false)) ||
        (rc = tsr__g_int(g, arch, "attention.key_length", &head_dim, false)) ||
        (rc = tsr__g_int(g, arch, "rope.dimension_count", &rope_dim, false)) ||
        (rc = tsr__g_int(g, arch, "context_length", &cfg->max_position_embeddings, false)) ||
        (rc = tsr__g_int(g, arch, "vocab_size", &cfg->vocab_size, false)) ||
        (rc = tsr__g_float(g, arch, "attention.layer_norm_rms_epsilon", &cfg->norm_eps)) ||
        (rc = tsr__g_float(g, arch, "rope.freq_base", &cfg->rope_theta)) ||
        (rc = tsr__g_int(g, arch, "attention.sliding_window", &cfg->sliding_window, false))) /* every layer */
        goto out;
    if (cfg->n_kv_head < 0) cfg->n_kv_head = cfg->n_head;
    if (head_dim < 0) head_dim = rope_dim;
    if (head_dim < 0 && cfg->n_head > 0) head_dim = cfg->d_model / cfg->n_head;
    cfg->head_dim = head_dim;
    if (cfg->vocab_size == 0) {
        /* older files carry no vocab_size: the token list, else the embedding's rows, says it */
        const tsr_gguf_kv *toks = tsr_gguf_find(g, "tokenizer.ggml.tokens");
        const tsr_gguf_tensor *emb = tsr_gguf_find_tensor(g, "token_embd.weight");
        if (toks && toks->type == TSR_GGUF_ARRAY) cfg->vocab_size = (int64_t)toks->arr_n;
        else if (emb && emb->n_dims == 2) cfg->vocab_size = emb->ne[1];
    }

    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    char *st = tsr_gguf_get_str(g, key);
    if (st) {
        if (!strcmp(st, "linear")) cfg->rope_type = TSR_ROPE_LINEAR;
        else if (strcmp(st, "none") != 0) {
            rc = tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: %s '%.32s' is not supported (none and linear are)", path, key, st);
            free(st);
            goto out;
        }
        free(st);
        if (cfg->rope_type == TSR_ROPE_LINEAR) {
            cfg->rope_factor = 0;
            if ((rc = tsr__g_float(g, arch, "rope.scaling.factor", &cfg->rope_factor))) goto out;
        }
    } else {
        /* older files: rope.scale_linear */
        float lin = 0;
        if ((rc = tsr__g_float(g, arch, "rope.scale_linear", &lin))) goto out;
        if (lin > 0 && lin != 1.0f) {
            cfg->rope_type = TSR_ROPE_LINEAR;
            cfg->rope_factor = lin;
        }
    }
    /* Llama 3.1-style scaling is stored as a rope_freqs.weight tensor of per-frequency divisors,
     * not as keys; the config cannot express it, so refuse rather than run with wrong RoPE */
    if (tsr_gguf_find_tensor(g, "rope_freqs.weight")) {
        rc = tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: rope_freqs.weight (llama3 RoPE scaling baked into the file) is not supported yet; "
                        "load the HF checkpoint instead", path);
        goto out;
    }

    cfg->tie_embeddings = tsr_gguf_find_tensor(g, "output.weight") == NULL;
    if ((rc = tsr__g_token(g, "tokenizer.ggml.bos_token_id", &cfg->bos_id)) ||
        (rc = tsr__g_token(g, "tokenizer.ggml.eos_token_id", &cfg->eos_id)))
        goto out;
    /* end-of-turn / end-of-message tokens stop generation too (Llama 3's <|eot_id|>) */
    static const char *const extra_keys[] = {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < sizeof extra_keys / sizeof extra_keys[0]; i++) {
        int32_t id = -1;
        if ((rc = tsr__g_token(g, extra_keys[i], &id))) goto out;
        bool dup = id == cfg->eos_id;
        for (int j = 0; j < cfg->n_extra_eos; j++) dup = dup || cfg->extra_eos[j] == id;
        if (id >= 0 && !dup) cfg->extra_eos[cfg->n_extra_eos++] = id;
    }
    rc = tsr_model_config_validate(cfg, path);
out:
    free(arch);
    return rc;
}

/* ---- validation ---- */

#define TSR__CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) return tsr_errorf(TSR_ERR_FORMAT, __VA_ARGS__);           \
    } while (0)

tsr_status tsr_model_config_validate(const tsr_model_config *c, const char *source) {
    const char *s = source ? source : "model config";
    /* the caps keep every size product downstream (weights, KV pool) far from int64 overflow */
    TSR__CHECK(c->vocab_size > 0 && c->vocab_size <= (1 << 26), "%s: vocab_size %lld must be in 1..%d", s,
               (long long)c->vocab_size, 1 << 26);
    TSR__CHECK(c->d_model > 0 && c->d_model <= (1 << 18), "%s: hidden_size %lld must be in 1..%d", s,
               (long long)c->d_model, 1 << 18);
    TSR__CHECK(c->n_layer > 0 && c->n_layer <= 4096, "%s: num_hidden_layers %lld must be in 1..4096", s, (long long)c->n_layer);
    TSR__CHECK(c->n_head > 0 && c->n_head <= 4096, "%s: num_attention_heads %lld must be in 1..4096", s, (long long)c->n_head);
    TSR__CHECK(c->n_kv_head > 0 && c->n_kv_head <= c->n_head,
               "%s: num_key_value_heads %lld must be in 1..num_attention_heads (%lld)", s, (long long)c->n_kv_head,
               (long long)c->n_head);
    TSR__CHECK(c->n_head % c->n_kv_head == 0, "%s: num_key_value_heads (%lld) does not divide num_attention_heads (%lld)",
               s, (long long)c->n_kv_head, (long long)c->n_head);
    TSR__CHECK(c->head_dim > 0 && c->head_dim <= 4096 && c->head_dim % 2 == 0,
               "%s: head_dim %lld must be even and in 2..4096 (RoPE rotates pairs)", s, (long long)c->head_dim);
    TSR__CHECK(c->d_ff > 0 && c->d_ff <= (1 << 20), "%s: intermediate_size %lld must be in 1..%d", s, (long long)c->d_ff,
               1 << 20);
    TSR__CHECK(c->norm_eps > 0 && c->norm_eps < 1, "%s: rms_norm_eps %g must be in (0, 1)", s, (double)c->norm_eps);
    TSR__CHECK(c->rope_theta > 0 && isfinite(c->rope_theta), "%s: rope_theta %g must be positive", s, (double)c->rope_theta);
    TSR__CHECK(c->max_position_embeddings > 0, "%s: max_position_embeddings %lld must be positive", s,
               (long long)c->max_position_embeddings);
    if (c->rope_type != TSR_ROPE_DEFAULT)
        TSR__CHECK(c->rope_factor > 0 && isfinite(c->rope_factor), "%s: rope_scaling factor %g must be positive", s,
                   (double)c->rope_factor);
    if (c->rope_type == TSR_ROPE_LLAMA3) {
        TSR__CHECK(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor,
                   "%s: llama3 rope_scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g)", s,
                   (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor);
        TSR__CHECK(c->rope_original_max_pos > 0, "%s: llama3 rope_scaling needs original_max_position_embeddings > 0", s);
    }
    if (c->rope_type == TSR_ROPE_YARN || c->rope_type == TSR_ROPE_LONGROPE) {
        TSR__CHECK(c->rope_original_max_pos > 0, "%s: %s rope_scaling needs original_max_position_embeddings > 0", s,
                   tsr_rope_type_name(c->rope_type));
        TSR__CHECK(c->rope_attn_factor > 0 && isfinite(c->rope_attn_factor), "%s: rope_scaling attention_factor %g must be positive",
                   s, (double)c->rope_attn_factor);
    }
    if (c->rope_type == TSR_ROPE_YARN)
        TSR__CHECK(c->rope_beta_fast > 0 && c->rope_beta_slow > 0 && isfinite(c->rope_beta_fast) && isfinite(c->rope_beta_slow),
                   "%s: yarn rope_scaling needs positive beta_fast (%g) and beta_slow (%g)", s,
                   (double)c->rope_beta_fast, (double)c->rope_beta_slow);
    if (c->rope_type == TSR_ROPE_LONGROPE) {
        TSR__CHECK(c->rope_n_factors == c->head_dim / 2, "%s: longrope short_factor/long_factor have %d entries, head_dim / 2 = %lld",
                   s, c->rope_n_factors, (long long)(c->head_dim / 2));
        for (int i = 0; i < c->rope_n_factors; i++)
            TSR__CHECK(c->rope_short_factor[i] > 0 && c->rope_long_factor[i] > 0 && isfinite(c->rope_short_factor[i]) &&
                       isfinite(c->rope_long_factor[i]), "%s: longrope factors must be positive (entry %d)", s, i);
    }
    TSR__CHECK(c->sliding_window >= 0 && c->window_layer0 >= 0, "%s: sliding_window %lld must not be negative", s,
               (long long)c->sliding_window);
    TSR__CHECK(c->bos_id >= -1 && c->bos_id < c->vocab_size, "%s: bos_token_id %d is outside the vocabulary (%lld)", s,
               c->bos_id, (long long)c->vocab_size);
    TSR__CHECK(c->eos_id >= -1 && c->eos_id < c->vocab_size, "%s: eos_token_id %d is outside the vocabulary (%lld)", s,
               c->eos_id, (long long)c->vocab_size);
    TSR__CHECK(c->n_extra_eos >= 0 && c->n_extra_eos <= 8, "%s: too many extra eos ids", s);
    for (int i = 0; i < c->n_extra_eos; i++)
        TSR__CHECK(c->extra_eos[i] >= 0 && c->extra_eos[i] < c->vocab_size, "%s: eos_token_id %d is outside the vocabulary (%lld)",
                   s, c->extra_eos[i], (long long)c->vocab_size);
    return TSR_OK;
}
