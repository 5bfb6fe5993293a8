/* The tokenizer object: the vocabulary (each id's piece as the file spells it and the bytes it
 * stands for), the piece and byte maps built over it, merges by piece, the index of added
 * tokens, the accessors of coordinator/tokenizer.h, and freeing.  The loaders fill it. */
#include "coordinator/tokenizer/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tsr_tokenizer_free(tsr_tokenizer *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        if (t->raw && t->raw[i] != t->piece[i]) free(t->raw[i]);
        if (t->piece) free(t->piece[i]);
    }
    free(t->piece);
    free(t->piece_len);
    free(t->raw);
    free(t->raw_len);
    free(t->piece_map.slots);
    free(t->raw_map.slots);
    free(t->merges.keys);
    free(t->merges.vals);
    free(t->flags);
    for (int i = 0; i < t->n_norm; i++) { free(t->norm[i].a); free(t->norm[i].b); }
    for (int i = 0; i < t->n_pre; i++) free(t->pre[i].repl);
    for (int i = 0; i < t->n_dec; i++) { free(t->dec[i].a); free(t->dec[i].b); }
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    for (int b = 0; b < 256; b++) free(t->added_by_byte[b]);
    free(t->chat_template);
    tsr__word_cache_free(t);
    free(t);
}

tsr_tokenizer *tsr__tok_new(void) {
    tsr__bytelevel_init();
    tsr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->unk_id = -1;
    t->bos = t->eos = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
}

tsr_status tsr__tok_alloc_vocab(tsr_tokenizer *t, int64_t n) {
    t->n_vocab = n;
    t->piece = calloc((size_t)n, sizeof(char *));
    t->piece_len = calloc((size_t)n, sizeof(uint32_t));
    t->raw = calloc((size_t)n, sizeof(char *));
    t->raw_len = calloc((size_t)n, sizeof(uint32_t));
    t->flags = calloc((size_t)n, 1);
    if (!t->piece || !t->piece_len || !t->raw || !t->raw_len || !t->flags)
        return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory for %lld tokens", (long long)n);
    return TSR_OK;
}

tsr_status tsr__tok_index(tsr_tokenizer *t) {
    if (!tsr__smap_init(&t->piece_map, t->n_vocab) || !tsr__smap_init(&t->raw_map, t->n_vocab))
        return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    for (int64_t i = 0; i < t->n_vocab; i++) {
        if (!t->piece[i]) continue;
        tsr__smap_put(&t->piece_map, t->piece, t->piece_len, (int32_t)i);
        if (t->flags[i] & TSR__F_NOTMODEL) {
            t->raw[i] = t->piece[i];
            t->raw_len[i] = t->piece_len[i];
            continue;
        }
        if (t->byte_level) {
            char *r = malloc(t->piece_len[i] + 1);
            size_t rn;
            if (!r) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
            if (tsr__bytelevel_decode(t->piece[i], t->piece_len[i], r, &rn)) {
                r[rn] = 0;
                t->raw[i] = r;
                t->raw_len[i] = (uint32_t)rn;
                tsr__smap_put(&t->raw_map, t->raw, t->raw_len, (int32_t)i);
            } else {
                free(r);
                t->raw[i] = t->piece[i];
                t->raw_len[i] = t->piece_len[i];
            }
        } else {
            t->raw[i] = t->piece[i];
            t->raw_len[i] = t->piece_len[i];
            tsr__smap_put(&t->raw_map, t->raw, t->raw_len, (int32_t)i);
        }
    }
    /* byte symbols */
    for (int b = 0; b < 256; b++) {
        if (t->byte_level) {
            char c = (char)b;
            t->byte_id[b] = tsr__smap_get(&t->raw_map, t->raw, t->raw_len, &c, 1);
        } else if (t->byte_fallback) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_id[b] = tsr__smap_get(&t->piece_map, t->piece, t->piece_len, name, 6);
        }
    }
    return TSR_OK;
}

void tsr__add_merge(tsr_tokenizer *t, const char *a, size_t an, const char *b, size_t bn, uint32_t rank) {
    int32_t ia = tsr__smap_get(&t->piece_map, t->piece, t->piece_len, a, an);
    int32_t ib = tsr__smap_get(&t->piece_map, t->piece, t->piece_len, b, bn);
    if (ia < 0 || ib < 0) return;
    char stack[256];
    char *cat = an + bn <= sizeof stack ? stack : malloc(an + bn);
    if (!cat) return;
    memcpy(cat, a, an);
    memcpy(cat + an, b, bn);
    int32_t ic = tsr__smap_get(&t->piece_map, t->piece, t->piece_len, cat, an + bn);
    if (cat != stack) free(cat);
    if (ic < 0) return;
    tsr__mmap_put(&t->merges, ia, ib, rank, ic);
}

tsr_status tsr__index_added(tsr_tokenizer *t) {
    for (int i = 0; i < t->n_added; i++) {
        if (!t->added[i].len) continue;
        uint8_t b = (uint8_t)t->added[i].content[0];
        int32_t *p = realloc(t->added_by_byte[b], sizeof(int32_t) * (size_t)(t->n_added_by_byte[b] + 1));
        if (!p) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        p[t->n_added_by_byte[b]++] = i;
        t->added_by_byte[b] = p;
        if (t->added[i].normalized) t->has_normalized_added = true;
    }
    for (int b = 0; b < 256; b++) { /* longest first; stable, so file order breaks ties */
        int32_t *l = t->added_by_byte[b];
        for (int i = 1; i < t->n_added_by_byte[b]; i++)
            for (int j = i; j > 0 && t->added[l[j - 1]].len < t->added[l[j]].len; j--) {
                int32_t tmp = l[j];
                l[j] = l[j - 1];
                l[j - 1] = tmp;
            }
    }
    if (!tsr__word_cache_init(t)) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* accessors                                                                                  */

int64_t tsr_tokenizer_vocab_size(const tsr_tokenizer *t) { return t->n_vocab; }
int32_t tsr_tokenizer_bos_id(const tsr_tokenizer *t) { return t->bos; }
int32_t tsr_tokenizer_eos_id(const tsr_tokenizer *t) { return t->eos; }
const char *tsr_tokenizer_chat_template(const tsr_tokenizer *t) { return t->chat_template; }

int32_t tsr_tokenizer_token_to_id(const tsr_tokenizer *t, const char *piece) {
    if (!piece) return -1;
    return tsr__smap_get(&t->piece_map, t->piece, t->piece_len, piece, strlen(piece));
}

const char *tsr_tokenizer_id_to_piece(const tsr_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    return t->piece[id];
}

bool tsr_tokenizer_is_special(const tsr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->flags[id] & TSR__F_SPECIAL);
}
