/* Token masks: the vocabulary's byte strings in a trie laid out in preorder (node i's subtree is
 * [i, end[i])), built once per tokenizer.  A mask walks the trie with one automaton state per
 * depth: a node's state is its parent's plus one byte, and a byte the automaton rejects skips
 * the node's whole subtree -- so a step costs the trie nodes still alive, not the sum of all
 * token lengths.  End ids (EOS, the template's end of turn) are allowed only when the value is
 * complete. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/grammar/internal.h"

struct tsr_grammar_vocab {
    int64_t n;                 /* tokens (the mask's bits) */
    int32_t n_nodes;
    uint8_t *byte;             /* [n_nodes] */
    uint16_t *depth;           /* [n_nodes] 1 for a first byte */
    int32_t *end;              /* [n_nodes] one past the subtree */
    int32_t *first_tok;        /* [n_nodes] a token whose bytes end here, -1 */
    int32_t *next_tok;         /* [n] the next token with the same bytes, -1 */
    char **bytes;              /* [n] NULL: never allowed */
    uint32_t *lens;
    int32_t *end_ids;
    int n_end;
    int32_t max_len;
};

void tsr_grammar_vocab_free(tsr_grammar_vocab *v) {
    if (!v) return;
    free(v->byte);
    free(v->depth);
    free(v->end);
    free(v->first_tok);
    free(v->next_tok);
    if (v->bytes)
        for (int64_t i = 0; i < v->n; i++) free(v->bytes[i]);
    free(v->bytes);
    free(v->lens);
    free(v->end_ids);
    free(v);
}

int64_t tsr_grammar_vocab_size(const tsr_grammar_vocab *v) { return v->n; }

typedef struct {
    const char *b;
    uint32_t l;
    int32_t id;
} tsr__tokref;

static int tsr__cmp_tok(const void *pa, const void *pb) {
    const tsr__tokref *x = pa, *y = pb;
    uint32_t n = x->l < y->l ? x->l : y->l;
    int c = memcmp(x->b, y->b, n);
    if (c) return c;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

#define TSR__MAX_TOKEN_BYTES 1024   /* longer tokens are never allowed */

tsr_status tsr_grammar_vocab_new(int64_t n, const char *const *bytes, const size_t *lens, const int32_t *end_ids,
                                 int n_end, tsr_grammar_vocab **out) {
    *out = NULL;
    tsr_grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return tsr_errorf(TSR_ERR_OOM, "out of memory for the grammar's vocabulary");
    v->n = n;
    v->bytes = calloc((size_t)n, sizeof *v->bytes);
    v->lens = calloc((size_t)n, sizeof *v->lens);
    v->next_tok = malloc(sizeof *v->next_tok * (size_t)n);
    v->end_ids = malloc(sizeof *v->end_ids * (size_t)(n_end > 0 ? n_end : 1));
    tsr__tokref *order = malloc(sizeof *order * (size_t)n);
    size_t total = 0;
    int32_t m = 0;
    tsr_status rc = TSR_OK;
    if (!v->bytes || !v->lens || !v->next_tok || !v->end_ids || !order) goto oom;
    for (int i = 0; i < n_end; i++)
        if (end_ids[i] >= 0 && end_ids[i] < n) v->end_ids[v->n_end++] = end_ids[i];
    for (int64_t i = 0; i < n; i++) {
        v->next_tok[i] = -1;
        if (!bytes[i] || lens[i] == 0 || lens[i] > TSR__MAX_TOKEN_BYTES) continue;
        bool is_end = false;
        for (int k = 0; k < v->n_end; k++) is_end |= v->end_ids[k] == i;
        if (is_end) continue;
        v->bytes[i] = malloc(lens[i]);
        if (!v->bytes[i]) goto oom;
        memcpy(v->bytes[i], bytes[i], lens[i]);
        v->lens[i] = (uint32_t)lens[i];
        if ((int32_t)lens[i] > v->max_len) v->max_len = (int32_t)lens[i];
        order[m++] = (tsr__tokref){v->bytes[i], v->lens[i], (int32_t)i};
        total += lens[i];
    }
    qsort(order, (size_t)m, sizeof *order, tsr__cmp_tok);
    /* preorder trie from the sorted strings: each token shares its longest common prefix with
     * the one before it; the path below that prefix is new */
    size_t cap = total + 1;
    v->byte = malloc(cap);
    v->depth = malloc(sizeof *v->depth * cap);
    v->end = malloc(sizeof *v->end * cap);
    v->first_tok = malloc(sizeof *v->first_tok * cap);
    int32_t *path = malloc(sizeof *path * (size_t)(v->max_len + 1));
    if (!v->byte || !v->depth || !v->end || !v->first_tok || !path) {
        free(path);
        goto oom;
    }
    int32_t plen = 0, nn = 0;
    const char *prev = NULL;
    uint32_t prev_len = 0;
    for (int32_t k = 0; k < m; k++) {
        int32_t t = order[k].id;
        const char *b = v->bytes[t];
        uint32_t l = v->lens[t], lcp = 0;
        while (prev && lcp < l && lcp < prev_len && b[lcp] == prev[lcp]) lcp++;
        if (prev && lcp == l && l == prev_len) {   /* the same bytes as the previous token */
            int32_t node = path[l - 1], *p = &v->first_tok[node];
            while (*p >= 0) p = &v->next_tok[*p];
            *p = t;
            continue;
        }
        while (plen > (int32_t)lcp) v->end[path[--plen]] = nn;
        for (uint32_t d = lcp; d < l; d++) {
            v->byte[nn] = (uint8_t)b[d];
            v->depth[nn] = (uint16_t)(d + 1);
            v->first_tok[nn] = -1;
            path[plen++] = nn++;
        }
        v->first_tok[path[l - 1]] = t;
        prev = b, prev_len = l;
    }
    while (plen > 0) v->end[path[--plen]] = nn;
    free(path);
    v->n_nodes = nn;
    free(order);
    *out = v;
    return TSR_OK;
oom:
    rc = tsr_errorf(TSR_ERR_OOM, "out of memory for the grammar's vocabulary");
    free(order);
    tsr_grammar_vocab_free(v);
    return rc;
}

tsr_status tsr_grammar_vocab_from_tokenizer(const tsr_tokenizer *t, int64_t n, const int32_t *end_ids, int n_end,
                                            tsr_grammar_vocab **out) {
    *out = NULL;
    int64_t nt = tsr_tokenizer_vocab_size(t);
    if (nt > n) nt = n;
    char **bytes = calloc((size_t)n, sizeof *bytes);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    tsr_status rc = TSR_OK;
    if (!bytes || !lens) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory for the grammar's vocabulary");
        goto done;
    }
    for (int64_t i = 0; i < nt; i++) {
        if (tsr_tokenizer_is_special(t, (int32_t)i)) continue;
        if (tsr_tokenizer_token_bytes(t, (int32_t)i, &bytes[i], &lens[i]) != TSR_OK) bytes[i] = NULL, lens[i] = 0;
    }
    rc = tsr_grammar_vocab_new(n, (const char *const *)bytes, lens, end_ids, n_end, out);
done:
    if (bytes)
        for (int64_t i = 0; i < n; i++) free(bytes[i]);
    free(bytes);
    free(lens);
    return rc;
}

static void tsr__set(uint64_t *mask, int32_t id) { mask[id >> 6] |= 1ull << (id & 63); }

int64_t tsr_grammar_fill_mask(const tsr_grammar_vocab *v, tsr_grammar_matcher *m, uint64_t *mask) {
    const tsr_grammar *g = m->g;
    memset(mask, 0, sizeof *mask * (size_t)((v->n + 63) / 64));
    int64_t count = 0;
    if (tsr__g_can_end(g, &m->st) || m->st.ended) {
        for (int k = 0; k < v->n_end; k++) tsr__set(mask, v->end_ids[k]);
        count += v->n_end;
    }
    if (m->st.ended) return count;
    if (m->n_scratch < v->max_len + 1) {
        tsr__g_state *s = realloc(m->scratch, sizeof *s * (size_t)(v->max_len + 1));
        if (!s) {   /* no memory to walk: end ids only (the request then ends or is cut) */
            return count;
        }
        m->scratch = s;
        m->n_scratch = v->max_len + 1;
    }
    tsr__g_state *st = m->scratch;
    tsr__g_state_copy(&st[0], &m->st);
    for (int32_t i = 0; i < v->n_nodes;) {
        int d = v->depth[i];
        tsr__g_state_copy(&st[d], &st[d - 1]);
        if (!tsr__g_feed_byte(g, &st[d], v->byte[i])) {
            i = v->end[i];
            continue;
        }
        for (int32_t t = v->first_tok[i]; t >= 0; t = v->next_tok[t]) {
            tsr__set(mask, t);
            count++;
        }
        i++;
    }
    return count;
}

tsr_status tsr_grammar_accept_token(const tsr_grammar_vocab *v, tsr_grammar_matcher *m, int32_t id) {
    if (id < 0 || id >= v->n) return tsr_errorf(TSR_ERR_INVALID_ARG, "grammar: token %d is outside the vocabulary", id);
    for (int k = 0; k < v->n_end; k++) {
        if (v->end_ids[k] != id) continue;
        if (!m->st.ended && !tsr__g_can_end(m->g, &m->st))
            return tsr_errorf(TSR_ERR_INVALID_ARG, "grammar: the output may not end before its JSON value is complete");
        m->st.ended = true;
        return TSR_OK;
    }
    if (!v->bytes[id] || !tsr_grammar_matcher_feed(m, v->bytes[id], v->lens[id]))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "grammar: token %d does not continue the JSON value", id);
    return TSR_OK;
}
