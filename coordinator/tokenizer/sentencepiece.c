/* SentencePiece models in GGUF ("llama") carry scores, not merges: the merges BPE needs are
 * rebuilt from the scores here, the way transformers does when it converts such a file. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>

typedef struct {
    int32_t l, r;    /* token ids */
    double score;
    uint32_t ll, rl; /* lengths in characters */
    int64_t order;
} tsr__gen_merge;

static int tsr__cmp_gen_merge(const void *x, const void *y) {
    const tsr__gen_merge *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->ll != b->ll) return a->ll > b->ll ? -1 : 1;
    if (a->rl != b->rl) return a->rl > b->rl ? -1 : 1;
    return a->order < b->order ? -1 : (a->order > b->order);
}

static uint32_t tsr__nchars(const char *s, size_t n) {
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

/* SentencePiece files carry scores, not merges: every split of a token into two vocabulary
 * tokens is a merge, best score first (ties: longer left part, longer right part, then token
 * order and the parts' ids), which is how transformers rebuilds them. */
tsr_status tsr__generate_merges(tsr_tokenizer *t, const double *scores, int64_t n) {
    size_t cap = 1024, m = 0;
    tsr__gen_merge *g = malloc(cap * sizeof *g);
    if (!g) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    for (int64_t id = 0; id < n; id++) {
        const char *s = t->piece[id];
        size_t len = t->piece_len[id];
        if (!s || tsr__smap_get(&t->piece_map, t->piece, t->piece_len, s, len) != id) continue;
        size_t first = m;
        for (size_t i = 1; i < len; i++) {
            if (((uint8_t)s[i] & 0xC0) == 0x80) continue;
            int32_t l = tsr__smap_get(&t->piece_map, t->piece, t->piece_len, s, i);
            int32_t r = l >= 0 ? tsr__smap_get(&t->piece_map, t->piece, t->piece_len, s + i, len - i) : -1;
            if (l < 0 || r < 0) continue;
            if (m == cap) {
                cap *= 2;
                tsr__gen_merge *ng = realloc(g, cap * sizeof *g);
                if (!ng) { free(g); return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory"); }
                g = ng;
            }
            g[m++] = (tsr__gen_merge){l, r, scores[id], tsr__nchars(s, i), tsr__nchars(s + i, len - i), 0};
        }
        /* within a token: by (left id, right id) */
        for (size_t a = first + 1; a < m; a++)
            for (size_t b = a; b > first && (g[b - 1].l > g[b].l || (g[b - 1].l == g[b].l && g[b - 1].r > g[b].r)); b--) {
                tsr__gen_merge tmp = g[b];
                g[b] = g[b - 1];
                g[b - 1] = tmp;
            }
    }
    for (size_t i = 0; i < m; i++) g[i].order = (int64_t)i;
    qsort(g, m, sizeof *g, tsr__cmp_gen_merge);
    if (!tsr__mmap_init(&t->merges, (int64_t)m)) { free(g); return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory"); }
    for (size_t i = 0; i < m; i++)
        tsr__add_merge(t, t->piece[g[i].l], t->piece_len[g[i].l], t->piece[g[i].r], t->piece_len[g[i].r], (uint32_t)i);
    free(g);
    return TSR_OK;
}
