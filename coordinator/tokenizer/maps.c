/* The tokenizer's hash maps: string -> id (open addressing; the keys live in the tokenizer's
 * arrays) and (left id, right id) -> (merge rank, merged id).  The lookups are inline in
 * internal.h, on the encoder's hot path; here are the builders. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

bool tsr__smap_init(tsr__smap *m, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2 + 16) cap *= 2;
    m->slots = calloc(cap, sizeof(uint64_t));
    m->mask = cap - 1;
    return m->slots != NULL;
}

void tsr__smap_put(tsr__smap *m, char *const *keys, const uint32_t *lens, int32_t id) {
    uint64_t h = tsr__hash(keys[id], lens[id]);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (s && (uint32_t)(s >> 32) == tag) {
            int32_t o = (int32_t)(uint32_t)(s & 0xFFFFFFFFu) - 1;
            if (lens[o] == lens[id] && !memcmp(keys[o], keys[id], lens[id])) {
                m->slots[i] = ((uint64_t)tag << 32) | (uint32_t)(id + 1);
                return;
            }
        }
        if (!s) {
            m->slots[i] = ((uint64_t)tag << 32) | (uint32_t)(id + 1);
            return;
        }
    }
}

bool tsr__mmap_init(tsr__mmap *m, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2 + 16) cap *= 2;
    m->keys = malloc(cap * sizeof(uint64_t));
    m->vals = malloc(cap * sizeof(uint64_t));
    if (!m->keys || !m->vals) return false;
    memset(m->keys, 0xFF, cap * sizeof(uint64_t));
    m->mask = cap - 1;
    return true;
}

void tsr__mmap_put(tsr__mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint64_t i = tsr__mix(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == k) return;
        if (m->keys[i] == UINT64_MAX) {
            m->keys[i] = k;
            m->vals[i] = ((uint64_t)rank << 32) | (uint32_t)id;
            return;
        }
    }
}
