/* The word cache's hot half, inline for the pre-tokenizer's last step: a word's ids from the
 * cache, else from BPE and then remembered.  Inline because most words of prose hit, and a hit
 * should cost no more than a hash and a compare.  The cache itself (what it is, making and
 * clearing it) is word_cache.c. */
#ifndef TSR_TOKENIZER_WORD_CACHE_H
#define TSR_TOKENIZER_WORD_CACHE_H

#include "coordinator/tokenizer/internal.h"

/* Looks up the word w[0, n): on a hit its ids go to ids[TSR__CACHE_IDS] and their count is
 * returned, else -1.  *slot (with its hash *h) is where to store the word after a miss, NULL
 * when it is not to be cached (too long, cache off, or the cache was busy). */
static inline int tsr__word_cache_get(const tsr_tokenizer *t, const uint8_t *w, size_t n, tsr__cache_entry **slot,
                                      uint64_t *h, int32_t *ids) {
    *slot = NULL;
    *h = 0;
    if (n > TSR__CACHE_KEY || t->no_cache) return -1;
    *h = tsr__hash(w, n);
    tsr__cache_entry *ce = (tsr__cache_entry *)&t->cache[*h & (TSR__CACHE_SIZE - 1)];
    pthread_mutex_t *lock = (pthread_mutex_t *)&t->cache_lock;
    if (pthread_mutex_trylock(lock) != 0) return -1;
    bool hit = ce->h == *h && ce->klen == n && !memcmp(ce->key, w, n);
    int nids = ce->nids;
    if (hit) memcpy(ids, ce->ids, sizeof(int32_t) * (size_t)nids);
    pthread_mutex_unlock(lock);
    if (hit) return nids;
    *slot = ce;
    return -1;
}

/* Stores the ids of the word just encoded in the slot a miss gave (skipped if the cache is busy). */
static inline void tsr__word_cache_put(const tsr_tokenizer *t, tsr__cache_entry *slot, uint64_t h, const uint8_t *w,
                                       size_t n, const int32_t *ids, int nids) {
    pthread_mutex_t *lock = (pthread_mutex_t *)&t->cache_lock;
    if (pthread_mutex_trylock(lock) == 0) {
        slot->h = h;
        slot->klen = (uint8_t)n;
        memcpy(slot->key, w, n);
        slot->nids = (uint8_t)nids;
        memcpy(slot->ids, ids, sizeof(int32_t) * (size_t)slot->nids);
        pthread_mutex_unlock(lock);
    }
}

/* Encodes one pre-tokenized word: from the cache, else by BPE (then remembered). */
static inline void tsr__encode_word(tsr__enc *e, const uint8_t *w, size_t n) {
    const tsr_tokenizer *t = e->t;
    if (!n) return;
    uint64_t h;
    tsr__cache_entry *ce;
    int32_t cached[TSR__CACHE_IDS];
    int nids = tsr__word_cache_get(t, w, n, &ce, &h, cached);
    if (nids >= 0) {
        for (int k = 0; k < nids; k++) tsr__emit(e, cached[k]);
        return;
    }
    int64_t first_out = e->n;
    tsr__bpe_word(e, w, n);
    if (ce && !e->oom && e->n > first_out && e->n - first_out <= TSR__CACHE_IDS)   /* e->ids may still be NULL */
        tsr__word_cache_put(t, ce, h, w, n, e->ids + first_out, (int)(e->n - first_out));
}

#endif
