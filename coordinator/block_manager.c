/* The block manager: the one owner of KV block state (see block_manager.h for its role).
 *
 * Layout: per block a reference count, a hash (valid when `hashed`) with its parent's hash and
 * a copy of its token ids (tokens[id * block_len ...], compared on every lookup), links of a
 * doubly linked list that is either the free list or the LRU of cached blocks, and a link in
 * its hash bucket's chain.  Every operation is O(1) but for removing a block from its bucket chain,
 * which walks a chain of expected length < 1 (buckets >= 2 x blocks). */
#include "coordinator/block_manager.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/kv_pool.h"

enum { TSR__LIST_NONE = 0, TSR__LIST_FREE, TSR__LIST_LRU };

typedef struct {
    int32_t ref;
    int32_t prev, next;      /* list links (-1: none) */
    int32_t hnext;           /* hash chain (-1: end) */
    uint8_t list;            /* which list the block is on */
    bool hashed;
    uint64_t hash, parent;   /* valid when hashed */
} tsr__block;

struct tsr_block_manager {
    int64_t n_blocks, block_len;
    tsr__block *b;
    int32_t head[3], tail[3];   /* per list: FREE (oldest freed first), LRU (least recent first) */
    int64_t count[3];
    int64_t n_active, evictions;
    int32_t *buckets;
    uint64_t mask;
    int32_t *tokens;            /* [n_blocks][block_len]: a hashed block's token ids */
};

static void tsr__list_push(tsr_block_manager *bm, int l, int32_t id) {
    tsr__block *x = &bm->b[id];
    x->list = (uint8_t)l;
    x->next = -1;
    x->prev = bm->tail[l];
    if (bm->tail[l] >= 0) bm->b[bm->tail[l]].next = id;
    else bm->head[l] = id;
    bm->tail[l] = id;
    bm->count[l]++;
}

static void tsr__list_remove(tsr_block_manager *bm, int32_t id) {
    tsr__block *x = &bm->b[id];
    int l = x->list;
    TSR_ASSERT(l != TSR__LIST_NONE);
    if (x->prev >= 0) bm->b[x->prev].next = x->next;
    else bm->head[l] = x->next;
    if (x->next >= 0) bm->b[x->next].prev = x->prev;
    else bm->tail[l] = x->prev;
    x->prev = x->next = -1;
    x->list = TSR__LIST_NONE;
    bm->count[l]--;
}

/* ---- the keyed block hash: SipHash-2-4 (Aumasson & Bernstein) over the little-endian words
 * parent, block_len, then the token ids two to a word, under a per-process 128-bit key.  Written
 * from the paper's description; a keyed PRF, so without the key a client can neither invert a
 * hash nor search for collisions offline. ---- */

static uint64_t tsr__key[2];
static pthread_once_t tsr__key_once = PTHREAD_ONCE_INIT;

static void tsr__key_init(void) {
    uint8_t *p = (uint8_t *)tsr__key;
    size_t got = 0;
    while (got < sizeof tsr__key) {
        ssize_t r = getrandom(p + got, sizeof tsr__key - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < sizeof tsr__key) {   /* no getrandom (very old kernel): still unpredictable enough to a client */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        tsr__key[0] ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
        tsr__key[1] ^= (uint64_t)(uintptr_t)&ts * 0xc2b2ae3d27d4eb4fULL ^ (uint64_t)clock();
        TSR_LOGW("block manager: getrandom() failed (%s); prefix-cache key taken from the clock", strerror(errno));
    }
}

#define TSR__ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

typedef struct { uint64_t v0, v1, v2, v3; } tsr__sip;

static void tsr__sip_round(tsr__sip *s) {
    s->v0 += s->v1; s->v1 = TSR__ROTL(s->v1, 13); s->v1 ^= s->v0; s->v0 = TSR__ROTL(s->v0, 32);
    s->v2 += s->v3; s->v3 = TSR__ROTL(s->v3, 16); s->v3 ^= s->v2;
    s->v0 += s->v3; s->v3 = TSR__ROTL(s->v3, 21); s->v3 ^= s->v0;
    s->v2 += s->v1; s->v1 = TSR__ROTL(s->v1, 17); s->v1 ^= s->v2; s->v2 = TSR__ROTL(s->v2, 32);
}

static void tsr__sip_word(tsr__sip *s, uint64_t m) {
    s->v3 ^= m;
    tsr__sip_round(s);
    tsr__sip_round(s);
    s->v0 ^= m;
}

uint64_t tsr_bm_hash_block(uint64_t parent, const int32_t *tokens, int64_t block_len) {
    pthread_once(&tsr__key_once, tsr__key_init);
    tsr__sip s = {tsr__key[0] ^ 0x736f6d6570736575ULL, tsr__key[1] ^ 0x646f72616e646f6dULL,
                  tsr__key[0] ^ 0x6c7967656e657261ULL, tsr__key[1] ^ 0x7465646279746573ULL};
    tsr__sip_word(&s, parent);
    tsr__sip_word(&s, (uint64_t)block_len);
    int64_t i = 0;
    for (; i + 1 < block_len; i += 2)
        tsr__sip_word(&s, (uint64_t)(uint32_t)tokens[i] | (uint64_t)(uint32_t)tokens[i + 1] << 32);
    uint64_t nbytes = 16 + 4 * (uint64_t)block_len, last = (nbytes & 0xff) << 56;
    if (i < block_len) last |= (uint32_t)tokens[i];   /* the 4-byte tail */
    tsr__sip_word(&s, last);
    s.v2 ^= 0xff;
    for (int r = 0; r < 4; r++) tsr__sip_round(&s);
    uint64_t h = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
    return h ? h : 1;   /* 0 is the parent of the first block */
}

tsr_status tsr_bm_init(int64_t n_blocks, int64_t block_len, tsr_block_manager **out) {
    *out = NULL;
    if (n_blocks <= 0 || n_blocks > INT32_MAX / 4 || block_len <= 0 ||
        (uint64_t)block_len > SIZE_MAX / sizeof(int32_t) / (uint64_t)n_blocks)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "block manager: bad size (%lld blocks of %lld tokens)",
                          (long long)n_blocks, (long long)block_len);
    tsr_block_manager *bm = calloc(1, sizeof *bm);
    if (!bm) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    uint64_t nb = 16;
    while (nb < (uint64_t)n_blocks * 2) nb <<= 1;
    bm->b = calloc((size_t)n_blocks, sizeof *bm->b);
    bm->buckets = malloc(nb * sizeof *bm->buckets);
    bm->tokens = malloc((size_t)n_blocks * (size_t)block_len * sizeof *bm->tokens);
    if (!bm->b || !bm->buckets || !bm->tokens) {
        tsr_bm_free(bm);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    bm->n_blocks = n_blocks;
    bm->block_len = block_len;
    bm->mask = nb - 1;
    for (uint64_t i = 0; i < nb; i++) bm->buckets[i] = -1;
    for (int l = 0; l < 3; l++) bm->head[l] = bm->tail[l] = -1;
    for (int64_t i = 0; i < n_blocks; i++) {
        bm->b[i].hnext = -1;
        tsr__list_push(bm, TSR__LIST_FREE, (int32_t)i);
    }
    *out = bm;
    return TSR_OK;
}

void tsr_bm_free(tsr_block_manager *bm) {
    if (!bm) return;
    free(bm->b);
    free(bm->buckets);
    free(bm->tokens);
    free(bm);
}

int64_t tsr_bm_block_len(const tsr_block_manager *bm) { return bm->block_len; }

void tsr_bm_get_counts(const tsr_block_manager *bm, tsr_bm_counts *c) {
    c->total = bm->n_blocks;
    c->free = bm->count[TSR__LIST_FREE];
    c->cached = bm->count[TSR__LIST_LRU];
    c->active = bm->n_active;
    c->evictions = bm->evictions;
}

int64_t tsr_bm_available(const tsr_block_manager *bm) {
    return bm->count[TSR__LIST_FREE] + bm->count[TSR__LIST_LRU];
}

int32_t tsr_bm_ref(const tsr_block_manager *bm, int32_t id) {
    TSR_ASSERT(id >= 0 && id < bm->n_blocks);
    return bm->b[id].ref;
}

static bool tsr__same(const tsr_block_manager *bm, int32_t id, uint64_t h, uint64_t parent, const int32_t *tokens) {
    const tsr__block *x = &bm->b[id];
    return x->hash == h && x->parent == parent &&
           memcmp(bm->tokens + (size_t)id * (size_t)bm->block_len, tokens, (size_t)bm->block_len * sizeof *tokens) == 0;
}

int32_t tsr_bm_lookup(const tsr_block_manager *bm, uint64_t h, uint64_t parent, const int32_t *tokens) {
    for (int32_t id = bm->buckets[h & bm->mask]; id >= 0; id = bm->b[id].hnext)
        if (tsr__same(bm, id, h, parent, tokens)) return id;
    return -1;
}

static void tsr__unhash(tsr_block_manager *bm, int32_t id) {
    tsr__block *x = &bm->b[id];
    if (!x->hashed) return;
    int32_t *p = &bm->buckets[x->hash & bm->mask];
    while (*p != id) {
        TSR_ASSERT(*p >= 0);
        p = &bm->b[*p].hnext;
    }
    *p = x->hnext;
    x->hnext = -1;
    x->hashed = false;
    x->hash = x->parent = 0;
}

/* ---- the state machine of one block; the functions below are the only ones that move it:
 *
 *     FREE   --alloc-------------------------------> ACTIVE (ref 1, no hash)
 *     ACTIVE --acquire (another sequence)----------> ACTIVE (ref + 1)
 *     ACTIVE --set_hash (full, computed)-----------> ACTIVE (hashed)
 *     ACTIVE --release, ref -> 0, no hash----------> FREE   (tail of the free list)
 *     ACTIVE --release, ref -> 0, hashed-----------> CACHED (tail of the LRU, still findable)
 *     CACHED --acquire (a prefix hit)--------------> ACTIVE (ref 1, leaves the LRU)
 *     CACHED --alloc when no FREE block is left----> ACTIVE (ref 1, hash dropped: evicted,
 *                                                    the least recently released first)
 *
 * FREE: ref 0, on the free list, no hash.  CACHED: ref 0, on the LRU, hashed.  ACTIVE: ref > 0,
 * on no list, hashed or not.  A partial block is never hashed, so it is owned by exactly one
 * sequence, which is what makes writing into it safe. ---- */

tsr_status tsr_bm_alloc(tsr_block_manager *bm, int64_t n, int32_t *out) {
    if (n < 0 || n > tsr_bm_available(bm))
        return tsr_errorf(TSR_ERR_KV_FULL, "out of KV blocks: %lld wanted, %lld available of %lld", (long long)n,
                          (long long)tsr_bm_available(bm), (long long)bm->n_blocks);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = bm->head[TSR__LIST_FREE];
        if (id < 0) {
            id = bm->head[TSR__LIST_LRU];
            bm->evictions++;
        }
        TSR_ASSERT(id >= 0 && bm->b[id].ref == 0);
        tsr__list_remove(bm, id);
        tsr__unhash(bm, id);
        bm->b[id].ref = 1;
        bm->n_active++;
        out[i] = id;
    }
    return TSR_OK;
}

void tsr_bm_acquire(tsr_block_manager *bm, int32_t id) {
    TSR_ASSERT(id >= 0 && id < bm->n_blocks);
    tsr__block *x = &bm->b[id];
    if (x->ref == 0) {
        TSR_ASSERT(x->list == TSR__LIST_LRU && x->hashed);
        tsr__list_remove(bm, id);
        bm->n_active++;
    }
    x->ref++;
}

void tsr_bm_release(tsr_block_manager *bm, int64_t n, const int32_t *ids) {
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        TSR_ASSERT(id >= 0 && id < bm->n_blocks);
        tsr__block *x = &bm->b[id];
        TSR_ASSERT(x->ref > 0);
        if (--x->ref > 0) continue;
        bm->n_active--;
        tsr__list_push(bm, x->hashed ? TSR__LIST_LRU : TSR__LIST_FREE, id);
    }
}

bool tsr_bm_set_hash(tsr_block_manager *bm, int32_t id, uint64_t h, uint64_t parent, const int32_t *tokens) {
    TSR_ASSERT(id >= 0 && id < bm->n_blocks);
    tsr__block *x = &bm->b[id];
    TSR_ASSERT(x->ref > 0);
    if (x->hashed) return tsr__same(bm, id, h, parent, tokens);
    if (tsr_bm_lookup(bm, h, parent, tokens) >= 0) return false;
    x->hashed = true;
    x->hash = h;
    x->parent = parent;
    memcpy(bm->tokens + (size_t)id * (size_t)bm->block_len, tokens, (size_t)bm->block_len * sizeof *tokens);
    int32_t *bk = &bm->buckets[h & bm->mask];
    x->hnext = *bk;
    *bk = id;
    return true;
}

/* ---- one sequence's block table, on the calls above ---- */

tsr_status tsr_bm_seq_reserve(tsr_block_manager *bm, tsr_kv_seq *s, int64_t n_total) {
    int64_t need = (n_total + bm->block_len - 1) / bm->block_len;
    if (need <= s->n_blocks) return TSR_OK;
    if (need > s->cap) {
        int64_t cap = s->cap ? s->cap : 8;
        while (cap < need) cap *= 2;
        int32_t *b = realloc(s->blocks, sizeof(int32_t) * (size_t)cap);
        if (!b) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        s->blocks = b, s->cap = cap;
    }
    TSR_TRY(tsr_bm_alloc(bm, need - s->n_blocks, s->blocks + s->n_blocks));
    s->n_blocks = need;
    return TSR_OK;
}

void tsr_bm_seq_truncate(tsr_block_manager *bm, tsr_kv_seq *s, int64_t n_keep) {
    if (n_keep < 0) n_keep = 0;
    if (n_keep < s->n_tokens) s->n_tokens = n_keep;
    int64_t keep_blocks = (n_keep + bm->block_len - 1) / bm->block_len;
    if (keep_blocks < s->n_blocks) {
        tsr_bm_release(bm, s->n_blocks - keep_blocks, s->blocks + keep_blocks);
        s->n_blocks = keep_blocks;
    }
}

void tsr_bm_seq_release(tsr_block_manager *bm, tsr_kv_seq *s) {
    tsr_bm_seq_truncate(bm, s, 0);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

bool tsr_bm_check(const tsr_block_manager *bm) {
    int64_t n[3] = {0, 0, 0}, active = 0, hashed = 0, chained = 0;
    bool ok = true;
    for (int64_t i = 0; i < bm->n_blocks; i++) {
        const tsr__block *x = &bm->b[i];
        if (x->ref > 0) {
            active++;
            if (x->list != TSR__LIST_NONE) ok = false;
        } else {
            if (x->list == TSR__LIST_NONE) ok = false;
            if (x->list == TSR__LIST_LRU && !x->hashed) ok = false;
            if (x->list == TSR__LIST_FREE && x->hashed) ok = false;
        }
        n[x->list]++;
        hashed += x->hashed;
    }
    for (uint64_t k = 0; k <= bm->mask; k++)
        for (int32_t id = bm->buckets[k]; id >= 0; id = bm->b[id].hnext) {
            chained++;
            if (!bm->b[id].hashed || (bm->b[id].hash & bm->mask) != k) ok = false;
        }
    for (int l = 1; l < 3; l++) {
        int64_t walked = 0;
        for (int32_t id = bm->head[l]; id >= 0 && walked <= bm->n_blocks; id = bm->b[id].next) walked++;
        if (walked != bm->count[l] || n[l] != bm->count[l]) ok = false;
    }
    if (active != bm->n_active || chained != hashed ||
        bm->count[TSR__LIST_FREE] + bm->count[TSR__LIST_LRU] + bm->n_active != bm->n_blocks)
        ok = false;
    if (!ok)
        TSR_LOGE("block manager invariants broken: free %lld/%lld cached %lld/%lld active %lld/%lld hashed %lld "
                 "chained %lld",
                 (long long)n[1], (long long)bm->count[1], (long long)n[2], (long long)bm->count[2], (long long)active,
                 (long long)bm->n_active, (long long)hashed, (long long)chained);
    return ok;
}
