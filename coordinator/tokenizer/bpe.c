/* BPE over one pre-tokenized word, for byte-level vocabularies (the word's bytes in the GPT-2
 * alphabet) and SentencePiece-style ones (its characters, unknown ones as <0xNN> byte tokens
 * or <unk>).  Merges run on a linked list of symbols with a binary heap of candidate pairs
 * keyed (rank, position), which is the order HF applies merges in.  The word cache
 * (word_cache.h) stands in front of it. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

static inline bool tsr__heap_less(const tsr__heap_item *a, const tsr__heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void tsr__heap_push(tsr__enc *e, size_t *hn, tsr__heap_item it) {
    if (*hn == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 64;
        tsr__heap_item *p = realloc(e->heap, cap * sizeof *p);
        if (!p) { e->oom = true; return; }
        e->heap = p;
        e->heap_cap = cap;
    }
    size_t i = (*hn)++;
    e->heap[i] = it;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tsr__heap_less(&e->heap[i], &e->heap[parent])) break;
        tsr__heap_item tmp = e->heap[i];
        e->heap[i] = e->heap[parent];
        e->heap[parent] = tmp;
        i = parent;
    }
}

static tsr__heap_item tsr__heap_pop(tsr__enc *e, size_t *hn) {
    tsr__heap_item top = e->heap[0];
    e->heap[0] = e->heap[--(*hn)];
    size_t i = 0, n = *hn;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && tsr__heap_less(&e->heap[l], &e->heap[m])) m = l;
        if (r < n && tsr__heap_less(&e->heap[r], &e->heap[m])) m = r;
        if (m == i) break;
        tsr__heap_item tmp = e->heap[i];
        e->heap[i] = e->heap[m];
        e->heap[m] = tmp;
        i = m;
    }
    return top;
}

static bool tsr__sym_reserve(tsr__enc *e, size_t n) {
    if (n <= e->sym_cap) return true;
    size_t cap = e->sym_cap ? e->sym_cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(e->sym_id, cap * sizeof(int32_t));
    if (a) e->sym_id = a;
    int32_t *b = realloc(e->sym_prev, cap * sizeof(int32_t));
    if (b) e->sym_prev = b;
    int32_t *c = realloc(e->sym_next, cap * sizeof(int32_t));
    if (c) e->sym_next = c;
    if (!a || !b || !c) { e->oom = true; return false; }
    e->sym_cap = cap;
    return true;
}

void tsr__bpe_word(tsr__enc *e, const uint8_t *w, size_t n) {
    const tsr_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = tsr__smap_get(&t->raw_map, t->raw, t->raw_len, w, n);
        if (id >= 0) {
            tsr__emit(e, id);
            return;
        }
    }
    if (!tsr__sym_reserve(e, n)) return;
    int32_t ns = 0;
    bool last_unk = false;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_id[w[i]];
            if (id < 0) {
                if (t->unk_id < 0 || (t->fuse_unk && last_unk)) continue;
                id = t->unk_id;
                last_unk = true;
            } else {
                last_unk = false;
            }
            e->sym_id[ns++] = id;
        }
    } else {
        for (size_t i = 0; i < n;) {
            int len;
            tsr_utf8_next(w + i, n - i, &len);
            int32_t id = tsr__smap_get(&t->raw_map, t->raw, t->raw_len, w + i, (size_t)len);
            if (id >= 0) {
                e->sym_id[ns++] = id;
                last_unk = false;
            } else {
                bool fb = t->byte_fallback;
                for (int k = 0; fb && k < len; k++) fb = t->byte_id[w[i + (size_t)k]] >= 0;
                if (fb) {
                    for (int k = 0; k < len; k++) e->sym_id[ns++] = t->byte_id[w[i + (size_t)k]];
                    last_unk = false;
                } else if (t->unk_id >= 0 && !(t->fuse_unk && last_unk)) {
                    e->sym_id[ns++] = t->unk_id;
                    last_unk = true;
                }
            }
            i += (size_t)len;
        }
    }
    for (int32_t i = 0; i < ns; i++) {
        e->sym_prev[i] = i - 1;
        e->sym_next[i] = i + 1 < ns ? i + 1 : -1;
    }
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < ns; i++) {
        uint32_t rank;
        int32_t nid;
        if (tsr__mmap_get(&t->merges, e->sym_id[i], e->sym_id[i + 1], &rank, &nid))
            tsr__heap_push(e, &hn, (tsr__heap_item){rank, i, nid});
    }
    while (hn && !e->oom) {
        tsr__heap_item top = tsr__heap_pop(e, &hn);
        int32_t a = top.pos;
        if (e->sym_id[a] < 0) continue; /* merged away */
        int32_t b = e->sym_next[a];
        if (b < 0) continue;
        uint32_t rank;
        int32_t nid;
        if (!tsr__mmap_get(&t->merges, e->sym_id[a], e->sym_id[b], &rank, &nid) || nid != top.id || rank != top.rank)
            continue;
        e->sym_id[a] = nid;
        e->sym_id[b] = -1;
        int32_t c = e->sym_next[b];
        e->sym_next[a] = c;
        if (c >= 0) e->sym_prev[c] = a;
        int32_t p = e->sym_prev[a];
        if (p >= 0 && tsr__mmap_get(&t->merges, e->sym_id[p], nid, &rank, &nid))
            tsr__heap_push(e, &hn, (tsr__heap_item){rank, p, nid});
        if (c >= 0 && tsr__mmap_get(&t->merges, e->sym_id[a], e->sym_id[c], &rank, &nid))
            tsr__heap_push(e, &hn, (tsr__heap_item){rank, a, nid});
    }
    for (int32_t i = 0; i >= 0 && ns > 0; i = e->sym_next[i]) tsr__emit(e, e->sym_id[i]);
}
