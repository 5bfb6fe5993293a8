/* Loading the tokenizer embedded in a GGUF file (tokenizer.ggml.*, models "gpt2" and "llama"),
 * as transformers converts it, so ids agree with HF: the vocabulary and token types, the
 * pre-tokenizer named by tokenizer.ggml.pre, merges (or, for SentencePiece, scores), BOS/EOS
 * and the chat template. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/gguf.h"

static char *tsr__strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* tokenizer.ggml.pre -> split pattern (transformers' GGUF_PRE_TOKENIZER_SPLITS); anything else
 * (gpt2, smollm, starcoder, ...) uses ByteLevel's own GPT-2 regex. */
static const struct {
    const char *pre;
    tsr__pat pat;
} tsr__gguf_pre[] = {
    {"llama3", TSR__PAT_LLAMA3},    {"llama-v3", TSR__PAT_LLAMA3},  {"llama-bpe", TSR__PAT_LLAMA3},
    {"falcon3", TSR__PAT_LLAMA3},   {"falcon-h1", TSR__PAT_LLAMA3}, {"pixtral", TSR__PAT_LLAMA3},
    {"midm-2.0", TSR__PAT_LLAMA3},  {"lfm2", TSR__PAT_LLAMA3},      {"jina-v5-nano", TSR__PAT_LLAMA3},
    {"dbrx", TSR__PAT_LLAMA3},      {"smaug-bpe", TSR__PAT_LLAMA3}, {"qwen2", TSR__PAT_QWEN2},
    {"deepseek-r1-qwen", TSR__PAT_QWEN2}, {"kormo", TSR__PAT_QWEN2}, {"f2llmv2", TSR__PAT_QWEN2},
    {"megrez", TSR__PAT_QWEN2},     {"qwen35", TSR__PAT_QWEN35},
};
static const char *const tsr__gguf_pre_unsupported[] = {"tekken", "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"};

static tsr_status tsr__load_gguf(tsr_tokenizer *t, const tsr_gguf *g) {
    const char *path = tsr_gguf_path(g);
    char *model = tsr_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no tokenizer.ggml.model (no embedded tokenizer)", path);
    bool gpt2 = !strcmp(model, "gpt2"), llama = !strcmp(model, "llama");
    if (!gpt2 && !llama) {
        tsr_status st = tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported (gpt2, llama are)", path, model);
        free(model);
        return st;
    }
    free(model);
    const tsr_gguf_kv *tokens = tsr_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != TSR_GGUF_ARRAY || tokens->arr_type != TSR_GGUF_STRING || !tokens->arr_n ||
        tokens->arr_n > 16000000)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing or not a string array", path);
    int64_t n = (int64_t)tokens->arr_n;
    const tsr_gguf_kv *types = tsr_gguf_find(g, "tokenizer.ggml.token_type");
    const tsr_gguf_kv *scores = tsr_gguf_find(g, "tokenizer.ggml.scores");
    const tsr_gguf_kv *merges = tsr_gguf_find(g, "tokenizer.ggml.merges");
    if (types && (types->type != TSR_GGUF_ARRAY || (int64_t)types->arr_n != n)) types = NULL;
    if (merges && (merges->type != TSR_GGUF_ARRAY || merges->arr_type != TSR_GGUF_STRING)) merges = NULL;
    TSR_TRY(tsr__tok_alloc_vocab(t, n));

    t->byte_level = gpt2;
    for (int64_t i = 0; i < n; i++) {
        const tsr_gguf_str *s = &tokens->arr_str[i];
        char *p;
        size_t pn = s->len;
        if (gpt2) {
            /* a token spelled outside the byte alphabet is re-spelled in it (transformers does) */
            char *tmp = malloc(s->len + 1);
            size_t rn;
            bool ok = tmp && tsr__bytelevel_decode(s->ptr, s->len, tmp, &rn);
            free(tmp);
            p = ok ? tsr__strndup(s->ptr, s->len) : tsr__bytelevel_encode(s->ptr, s->len, &pn);
        } else {
            p = tsr__strndup(s->ptr, s->len);
        }
        if (!p) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        t->piece[i] = p;
        t->piece_len[i] = (uint32_t)pn;
    }

    /* pre-tokenizer, decoder, model options */
    char *pre = tsr_gguf_get_str(g, "tokenizer.ggml.pre");
    if (gpt2) {
        int k = -1;
        for (size_t j = 0; pre && j < sizeof tsr__gguf_pre / sizeof tsr__gguf_pre[0]; j++)
            if (!strcmp(pre, tsr__gguf_pre[j].pre)) k = (int)j;
        for (size_t j = 0; pre && j < sizeof tsr__gguf_pre_unsupported / sizeof(char *); j++)
            if (!strcmp(pre, tsr__gguf_pre_unsupported[j])) {
                tsr_status st = tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: pre-tokenizer '%s' is not supported", path, pre);
                free(pre);
                return st;
            }
        if (k >= 0) {
            t->pre[t->n_pre++] = (tsr__pre){.kind = TSR__PRE_SPLIT, .pat = tsr__gguf_pre[k].pat};
            t->pre[t->n_pre++] = (tsr__pre){.kind = TSR__PRE_BYTELEVEL, .use_regex = false};
        } else {
            t->pre[t->n_pre++] = (tsr__pre){.kind = TSR__PRE_BYTELEVEL, .use_regex = true};
        }
        t->dec[t->n_dec++] = (tsr__dec){.kind = TSR__DEC_BYTELEVEL};
    } else {
        t->byte_fallback = true;
        t->fuse_unk = true;
        t->pre[t->n_pre++] = (tsr__pre){.kind = TSR__PRE_METASPACE, .repl = strdup("\xe2\x96\x81"),
                                        .prepend = TSR__PREPEND_FIRST, .split = false};
        t->dec[t->n_dec++] = (tsr__dec){.kind = TSR__DEC_REPLACE, .a = strdup("\xe2\x96\x81"), .b = strdup(" ")};
        t->dec[t->n_dec++] = (tsr__dec){.kind = TSR__DEC_BYTEFALLBACK};
        t->dec[t->n_dec++] = (tsr__dec){.kind = TSR__DEC_FUSE};
        t->dec[t->n_dec++] = (tsr__dec){.kind = TSR__DEC_STRIP, .strip_cp = ' ', .strip_left = 1, .stream = true};
    }
    free(pre);
    t->has_decoder = true;

    /* control tokens are special added tokens, user-defined ones plain added tokens */
    t->added = calloc((size_t)n, sizeof(tsr__added));
    if (!t->added) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    /* transformers also registers the bos/eos/unk/pad tokens it is given as special tokens */
    int64_t named[4] = {-1, -1, -1, -1};
    tsr_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &named[0]);
    tsr_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &named[1]);
    tsr_gguf_get_i64(g, "tokenizer.ggml.unknown_token_id", &named[2]);
    tsr_gguf_get_i64(g, "tokenizer.ggml.padding_token_id", &named[3]);
    for (int64_t i = 0; i < n; i++) {
        int64_t ty = 0;
        if (types && !tsr_gguf_arr_get_i64(types, (uint64_t)i, &ty)) ty = 0;
        if (ty == 2) ty = 3; /* UNKNOWN: special like the control tokens */
        for (int k = 0; k < 4; k++)
            if (named[k] == i && ty != 4) ty = 3;
        if (ty != 3 && ty != 4) continue;
        if (ty == 3 && gpt2) {
            char *tmp = malloc(t->piece_len[i] + 1);
            size_t rn;
            bool ok = tmp && tsr__bytelevel_decode(t->piece[i], t->piece_len[i], tmp, &rn);
            free(tmp);
            if (!ok) continue;
        }
        tsr__added *a = &t->added[t->n_added++];
        a->id = (int32_t)i;
        a->content = tsr__strndup(t->piece[i], t->piece_len[i]);
        a->len = t->piece_len[i];
        a->special = ty == 3;
        t->flags[i] |= TSR__F_ADDED | (a->special ? TSR__F_SPECIAL : 0);
        if (!a->content) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    }
    TSR_TRY(tsr__tok_index(t));

    int64_t v;
    if (tsr_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < n) t->bos = (int32_t)v;
    if (tsr_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < n) t->eos = (int32_t)v;
    if (llama) {
        if (tsr_gguf_get_i64(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && v < n) t->unk_id = (int32_t)v;
        else t->unk_id = tsr_tokenizer_token_to_id(t, "<unk>");
    }
    bool add_bos = llama, add_eos = false;
    tsr_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
    tsr_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);
    if (add_bos && t->bos >= 0) t->prefix[t->n_prefix++] = t->bos;
    if (add_eos && t->eos >= 0) t->suffix[t->n_suffix++] = t->eos;
    t->chat_template = tsr_gguf_get_str(g, "tokenizer.chat_template");

    if (merges && merges->arr_n) {
        if (!tsr__mmap_init(&t->merges, (int64_t)merges->arr_n)) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        for (uint64_t i = 0; i < merges->arr_n; i++) {
            const tsr_gguf_str *s = &merges->arr_str[i];
            const char *sp = memchr(s->ptr, ' ', s->len);
            if (!sp) return tsr_errorf(TSR_ERR_FORMAT, "%s: merge %llu is not two tokens", path, (unsigned long long)i);
            size_t an = (size_t)(sp - s->ptr);
            const char *b = sp + 1;
            const char *sp2 = memchr(b, ' ', s->len - an - 1);
            size_t bn = sp2 ? (size_t)(sp2 - b) : s->len - an - 1;
            tsr__add_merge(t, s->ptr, an, b, bn, (uint32_t)i);
        }
    } else if (llama) {
        if (!scores || scores->type != TSR_GGUF_ARRAY || (int64_t)scores->arr_n != n)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: a llama tokenizer needs tokenizer.ggml.scores or merges", path);
        double *sc = malloc(sizeof(double) * (size_t)n);
        if (!sc) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        for (int64_t i = 0; i < n; i++)
            if (!tsr_gguf_arr_get_f64(scores, (uint64_t)i, &sc[i])) sc[i] = 0;
        tsr_status st = tsr__generate_merges(t, sc, n);
        free(sc);
        TSR_TRY(st);
    }
    return tsr__index_added(t);
}

tsr_status tsr_tokenizer_load_gguf(const tsr_gguf *g, tsr_tokenizer **out) {
    *out = NULL;
    tsr_tokenizer *t = tsr__tok_new();
    if (!t) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    tsr_status st = tsr__load_gguf(t, g);
    if (st != TSR_OK) { tsr_tokenizer_free(t); return st; }
    *out = t;
    return TSR_OK;
}
