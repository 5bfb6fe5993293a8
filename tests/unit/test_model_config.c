/* Model config from HF config.json (Llama 3 with llama3 RoPE and an eos list, Mistral, Qwen2,
 * InternLM2 with dynamic NTK, linear scaling) and from GGUF metadata; each bad config gives a
 * clear error naming the file and the key. */
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "common/model_config.h"
#include "tests/test_util.h"

static char *g_dir;

static tsr_status load(const char *json, tsr_model_config *c) {
    char *p = tsr_path_join(g_dir, "config.json");
    TSR_ASSERT(tsr_write_file(p, json, strlen(json)) == TSR_OK);
    tsr_status rc = tsr_model_config_from_hf(p, c);
    free(p);
    return rc;
}

#define LLAMA_BASE                                                                                     \
    "\"vocab_size\": 1000, \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, " \
    "\"intermediate_size\": 128, \"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 512"

static void test_hf(void) {
    tsr_model_config c;
    tsr_status rc = load("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE
                         ", \"num_key_value_heads\": 2, \"rope_theta\": 500000.0, \"bos_token_id\": 1, "
                         "\"eos_token_id\": [2, 7, 9], \"tie_word_embeddings\": false, \"head_dim\": 32, "
                         "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 256}}",
                         &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.arch == TSR_ARCH_LLAMA && c.vocab_size == 1000 && c.d_model == 64 && c.n_layer == 2);
    CHECK(c.n_head == 4 && c.n_kv_head == 2 && c.head_dim == 32 && c.d_ff == 128);
    CHECK_NEAR(c.rope_theta, 500000.0, 1e-3);
    CHECK_NEAR(c.norm_eps, 1e-5, 1e-10);
    CHECK(c.max_position_embeddings == 512);
    CHECK(c.rope_type == TSR_ROPE_LLAMA3 && c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f &&
          c.rope_high_freq_factor == 4.0f && c.rope_original_max_pos == 256);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && c.n_extra_eos == 2 && c.extra_eos[0] == 7 && c.extra_eos[1] == 9);
    CHECK(!c.tie_embeddings && !c.attn_bias);
    CHECK(strlen(c.model_name) > 0 && strstr(g_dir, c.model_name) != NULL);

    /* Mistral: MHA by default (no num_key_value_heads), head_dim from hidden / heads, linear "type" */
    rc = load("{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE
              ", \"sliding_window\": null, \"eos_token_id\": 2, \"bos_token_id\": null, "
              "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
              &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.arch == TSR_ARCH_MISTRAL && c.n_kv_head == 4 && c.head_dim == 16 && c.eos_id == 2 && c.bos_id == -1);
    CHECK(c.rope_type == TSR_ROPE_LINEAR && c.rope_factor == 2.0f);
    CHECK_NEAR(c.rope_theta, 10000.0, 1e-3);

    /* Qwen2: q/k/v biases, tied embeddings */
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE
              ", \"num_key_value_heads\": 1, \"tie_word_embeddings\": true, \"rope_scaling\": null, "
              "\"use_logn_attn\": false}",
              &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.arch == TSR_ARCH_QWEN2 && c.attn_bias && c.tie_embeddings && c.n_kv_head == 1);
    CHECK(c.rope_type == TSR_ROPE_DEFAULT);

    /* InternLM2: "bias", dynamic NTK */
    rc = load("{\"architectures\": [\"InternLM2ForCausalLM\"], " LLAMA_BASE
              ", \"num_key_value_heads\": 2, \"bias\": false, \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.5}}",
              &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.arch == TSR_ARCH_INTERNLM2 && !c.attn_bias && c.rope_type == TSR_ROPE_DYNAMIC && c.rope_factor == 2.5f);
    rc = load("{\"architectures\": [\"InternLM2ForCausalLM\"], " LLAMA_BASE "}", &c);
    CHECK(rc == TSR_OK && c.attn_bias); /* InternLM2Config's default */

    /* sliding windows as transformers' configs decide them */
    CHECK(c.sliding_window == 0);   /* InternLM2: none */
    rc = load("{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE "}", &c);
    CHECK(rc == TSR_OK && c.sliding_window == 4096 && c.window_layer0 == 0);   /* MistralConfig's default */
    rc = load("{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", \"sliding_window\": null}", &c);
    CHECK(rc == TSR_OK && c.sliding_window == 0 && tsr_model_layer_window(&c, 1) == 0);
    rc = load("{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", \"sliding_window\": 4}", &c);
    CHECK(rc == TSR_OK && tsr_model_layer_window(&c, 0) == 4 && tsr_model_layer_window(&c, 1) == 4);
    CHECK(tsr_model_window_limits(&c, 5) && !tsr_model_window_limits(&c, 4));
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE ", \"sliding_window\": 6, \"max_window_layers\": 1}", &c);
    CHECK(rc == TSR_OK && c.sliding_window == 0);   /* use_sliding_window defaults to false */
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE
              ", \"use_sliding_window\": true, \"sliding_window\": 6, \"max_window_layers\": 1}", &c);
    CHECK(rc == TSR_OK && tsr_model_layer_window(&c, 0) == 0 && tsr_model_layer_window(&c, 1) == 6);
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE
              ", \"use_sliding_window\": true, \"sliding_window\": 6, \"max_window_layers\": 28}", &c);
    CHECK(rc == TSR_OK && !tsr_model_window_limits(&c, 100));   /* no layer reaches max_window_layers */
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE ", \"use_sliding_window\": true, "
              "\"sliding_window\": 6, \"max_window_layers\": 0, \"layer_types\": [\"full_attention\", \"sliding_attention\"]}", &c);
    CHECK(rc == TSR_OK && tsr_model_layer_window(&c, 0) == 0 && tsr_model_layer_window(&c, 1) == 6);   /* the list wins */

    /* yarn: HF's defaults (beta 32 / 1, truncate), attention factor 0.1 ln(factor) + 1, or the
     * mscale / mscale_all_dim ratio; a missing factor is max_position_embeddings / original */
    rc = load("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE
              ", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 128}}", &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.rope_type == TSR_ROPE_YARN && c.rope_factor == 4.0f && c.rope_original_max_pos == 128);
    CHECK(c.rope_beta_fast == 32.0f && c.rope_beta_slow == 1.0f && c.rope_yarn_truncate);
    CHECK_NEAR(c.rope_attn_factor, 1.1386294, 1e-6);
    rc = load("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", "
              "\"original_max_position_embeddings\": 128, \"mscale\": 1, \"mscale_all_dim\": 0.707, \"beta_fast\": 16, "
              "\"truncate\": false}}", &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.rope_factor == 4.0f && c.rope_beta_fast == 16.0f && !c.rope_yarn_truncate);
    CHECK_NEAR(c.rope_attn_factor, 1.0369927, 1e-6);
    /* longrope, Phi-3 style: original_max_position_embeddings at the top level wins */
    rc = load("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"original_max_position_embeddings\": 64, "
              "\"rope_scaling\": {\"type\": \"longrope\", \"original_max_position_embeddings\": 128, "
              "\"short_factor\": [1, 1, 1, 1, 1, 1, 1, 1.5], \"long_factor\": [1, 2, 3, 4, 5, 6, 7, 8]}}", &c);
    CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
    CHECK(c.rope_type == TSR_ROPE_LONGROPE && c.rope_original_max_pos == 64 && c.rope_factor == 8.0f);
    CHECK(c.rope_n_factors == 8 && c.rope_short_factor[7] == 1.5f && c.rope_long_factor[7] == 8.0f);
    CHECK_NEAR(c.rope_attn_factor, 1.2247449, 1e-6);

    /* a directory works too */
    CHECK(tsr_model_config_from_hf(g_dir, &c) == TSR_OK);

    struct { const char *json; tsr_status want; const char *msg; } bad[] = {
        {"{\"architectures\": [\"GPT2LMHeadModel\"], " LLAMA_BASE "}", TSR_ERR_UNSUPPORTED, "GPT2LMHeadModel"},
        {"{" LLAMA_BASE "}", TSR_ERR_FORMAT, "architectures"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"num_key_value_heads\": 3}", TSR_ERR_FORMAT,
         "does not divide"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 10, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"intermediate_size\": 8}", TSR_ERR_FORMAT, "hidden_size"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\", " LLAMA_BASE "}", TSR_ERR_FORMAT,
         "hidden_size"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": \"proportional\", \"factor\": 4}}",
         TSR_ERR_UNSUPPORTED, "proportional"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
         "\"short_factor\": [1, 1], \"long_factor\": [2, 2]}}", TSR_ERR_FORMAT, "head_dim / 2"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
         "\"short_factor\": [1, 1]}}", TSR_ERR_FORMAT, "long_factor"},
        {"{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE ", \"use_sliding_window\": true, \"sliding_window\": 8, "
         "\"layer_types\": [\"sliding_attention\", \"full_attention\"]}", TSR_ERR_UNSUPPORTED, "layer_types"},
        {"{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", \"sliding_window\": -2}", TSR_ERR_FORMAT,
         "sliding_window"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": \"linear\"}}",
         TSR_ERR_FORMAT, "factor"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": -1}}",
         TSR_ERR_FORMAT, "factor"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1}}", TSR_ERR_FORMAT, "low_freq_factor"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"eos_token_id\": \"2\"}", TSR_ERR_FORMAT,
         "eos_token_id"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"eos_token_id\": 5000}", TSR_ERR_FORMAT,
         "outside the vocabulary"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"head_dim\": 7}", TSR_ERR_FORMAT, "head_dim"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 1e12, " LLAMA_BASE "}", TSR_ERR_FORMAT,
         "num_hidden_layers"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"tie_word_embeddings\": 1}", TSR_ERR_FORMAT,
         "tie_word_embeddings"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE, TSR_ERR_FORMAT, "JSON"},
        {"[]", TSR_ERR_FORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tsr_clear_error();
        rc = load(bad[i].json, &c);
        CHECK_MSG(rc == bad[i].want, "case %zu: %s (%s)", i, tsr_status_str(rc), tsr_last_error());
        CHECK_MSG(strstr(tsr_last_error(), bad[i].msg) != NULL, "case %zu: '%s' not in: %s", i, bad[i].msg,
                  tsr_last_error());
        CHECK_MSG(strstr(tsr_last_error(), "config.json") != NULL, "case %zu: no file name in: %s", i, tsr_last_error());
    }
    char *missing = tsr_path_join(g_dir, "nope/config.json");
    CHECK(tsr_model_config_from_hf(missing, &c) == TSR_ERR_IO);
    free(missing);
}

/* ---- GGUF metadata ---- */

typedef struct {
    uint8_t *p;
    size_t n;
} buf;
static void put(buf *b, const void *d, size_t n) {
    b->p = realloc(b->p, b->n + n);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_u32(buf *b, const char *k, uint32_t v) {
    put_str(b, k);
    put_u32(b, TSR_GGUF_UINT32);
    put_u32(b, v);
}
static void kv_f32(buf *b, const char *k, float v) {
    put_str(b, k);
    put_u32(b, TSR_GGUF_FLOAT32);
    put(b, &v, 4);
}
static void kv_str(buf *b, const char *k, const char *v) {
    put_str(b, k);
    put_u32(b, TSR_GGUF_STRING);
    put_str(b, v);
}

/* A metadata-only GGUF (plus one tiny tensor) with llama keys. */
static buf gguf_llama(bool with_output, const char *scaling) {
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, with_output ? 2 : 1);
    int n_kv = 13 + (scaling ? 2 : 0);
    put_u64(&b, (uint64_t)n_kv);
    kv_str(&b, "general.architecture", "llama");
    kv_str(&b, "general.name", "Tiny Llama");
    kv_u32(&b, "llama.embedding_length", 64);
    kv_u32(&b, "llama.block_count", 2);
    kv_u32(&b, "llama.feed_forward_length", 128);
    kv_u32(&b, "llama.attention.head_count", 4);
    kv_u32(&b, "llama.attention.head_count_kv", 2);
    kv_u32(&b, "llama.context_length", 4096);
    kv_u32(&b, "llama.vocab_size", 100);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_f32(&b, "llama.rope.freq_base", 500000.0f);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&b, "tokenizer.ggml.eot_token_id", 9);
    if (scaling) {
        kv_str(&b, "llama.rope.scaling.type", scaling);
        kv_f32(&b, "llama.rope.scaling.factor", 4.0f);
    }
    /* tensors: token_embd.weight f32 [64] (and output.weight) */
    const char *names[2] = {"token_embd.weight", "output.weight"};
    for (int i = 0; i < (with_output ? 2 : 1); i++) {
        put_str(&b, names[i]);
        put_u32(&b, 1);
        put_u64(&b, 8);
        put_u32(&b, TSR_GGML_F32);
        put_u64(&b, (uint64_t)i * 32);
    }
    while (b.n % 32) put(&b, "", 1);
    float z[16] = {0};
    put(&b, z, with_output ? 64 : 32);
    return b;
}

static void test_gguf(void) {
    tsr_model_config c;
    tsr_gguf *g;
    buf b = gguf_llama(false, NULL);
    CHECK_MSG(tsr_gguf_open_memory(b.p, b.n, "tiny.gguf", &g) == TSR_OK, "%s", tsr_last_error());
    if (g) {
        tsr_status rc = tsr_model_config_from_gguf(g, &c);
        CHECK_MSG(rc == TSR_OK, "%s", tsr_last_error());
        CHECK(c.arch == TSR_ARCH_LLAMA && c.d_model == 64 && c.n_layer == 2 && c.d_ff == 128 && c.n_head == 4);
        CHECK(c.n_kv_head == 2 && c.head_dim == 16 && c.vocab_size == 100 && c.max_position_embeddings == 4096);
        CHECK(c.tie_embeddings && c.bos_id == 1 && c.eos_id == -1 && c.n_extra_eos == 1 && c.extra_eos[0] == 9);
        CHECK(!strcmp(c.model_name, "Tiny Llama"));
        CHECK_NEAR(c.rope_theta, 500000.0, 1e-3);
        CHECK(c.rope_type == TSR_ROPE_DEFAULT);
        tsr_gguf_close(g);
    }
    free(b.p);
    b = gguf_llama(true, "linear");
    CHECK(tsr_gguf_open_memory(b.p, b.n, "tiny.gguf", &g) == TSR_OK);
    if (g) {
        CHECK(tsr_model_config_from_gguf(g, &c) == TSR_OK);
        CHECK(!c.tie_embeddings && c.rope_type == TSR_ROPE_LINEAR && c.rope_factor == 4.0f);
        tsr_gguf_close(g);
    }
    free(b.p);
    b = gguf_llama(false, "yarn");
    CHECK(tsr_gguf_open_memory(b.p, b.n, "tiny.gguf", &g) == TSR_OK);
    if (g) {
        CHECK(tsr_model_config_from_gguf(g, &c) == TSR_ERR_UNSUPPORTED);
        CHECK(strstr(tsr_last_error(), "yarn") && strstr(tsr_last_error(), "tiny.gguf"));
        tsr_gguf_close(g);
    }
    free(b.p);
    /* a required key missing */
    buf m = {0};
    put(&m, "GGUF", 4);
    put_u32(&m, 3);
    put_u64(&m, 0);
    put_u64(&m, 2);
    kv_str(&m, "general.architecture", "llama");
    kv_u32(&m, "llama.embedding_length", 64);
    CHECK(tsr_gguf_open_memory(m.p, m.n, "partial.gguf", &g) == TSR_OK);
    if (g) {
        CHECK(tsr_model_config_from_gguf(g, &c) == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "llama.block_count") && strstr(tsr_last_error(), "partial.gguf"));
        tsr_gguf_close(g);
    }
    free(m.p);
    m = (buf){0};
    put(&m, "GGUF", 4);
    put_u32(&m, 3);
    put_u64(&m, 0);
    put_u64(&m, 1);
    kv_str(&m, "general.architecture", "gpt2");
    CHECK(tsr_gguf_open_memory(m.p, m.n, "gpt2.gguf", &g) == TSR_OK);
    if (g) {
        CHECK(tsr_model_config_from_gguf(g, &c) == TSR_ERR_UNSUPPORTED);
        CHECK(strstr(tsr_last_error(), "gpt2"));
        tsr_gguf_close(g);
    }
    free(m.p);
}

int main(void) {
    g_dir = tsr_test_tmpdir();
    TSR_ASSERT(g_dir);
    test_hf();
    test_gguf();
    char *p = tsr_path_join(g_dir, "config.json");
    remove(p);
    free(p);
    remove(g_dir);
    free(g_dir);
    return tsr_test_finish();
}
