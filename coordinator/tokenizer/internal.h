/* What the pieces of the tokenizer share (coordinator/tokenizer/, private to it): the tokenizer
 * object, the pipeline steps the loaders build and the encoder and decoder run, the hash maps,
 * and the functions one file offers another.  The public API is coordinator/tokenizer.h.
 *
 * The pipeline, the one HF `tokenizers` runs, so ids match it:
 *
 *   added tokens (matched first) -> normalizer (NFC, Prepend, Replace) -> pre-tokenizer steps
 *   (Split on a known pattern, ByteLevel, Digits, Metaspace) -> BPE (byte-level or
 *   SentencePiece-style with byte fallback) -> post-processor (BOS/EOS templates).
 *
 * The files, callers above callees (no file calls back into one above it):
 *   load_model.c              which loader a model path needs
 *   load_hf.c, load_gguf.c    tokenizer.json (+ tokenizer_config.json) and GGUF metadata
 *   sentencepiece.c           merges rebuilt from SentencePiece scores (GGUF "llama")
 *   vocab.c                   the object: vocabulary, indexes, added tokens, accessors, free
 *   encode.c                  added-token matching, then each segment through the pipeline
 *   normalizers.c             the normalizer steps
 *   pre_tokenizers.c          the pre-tokenizer steps and the hand-written split patterns
 *   bpe.c                     BPE merges over one word
 *   word_cache.c, .h          the cache of recent words' ids, in front of BPE (hits inline)
 *   detok.c                   streaming detokenization (and whole decodes)
 *   decoders.c                the decoder steps applied to one token
 *   byte_level.c              GPT-2's byte alphabet
 *   maps.c                    string -> id and pair -> merge hash maps */
#ifndef TSR_TOKENIZER_INTERNAL_H
#define TSR_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "coordinator/tokenizer.h"
#include "coordinator/unicode.h"

/* ------------------------------------------------------------------------------------------ */
/* small containers: a byte buffer and the hash maps (maps.c builds them; the rest is inline,  */
/* on the encoder's and decoder's hot paths)                                                  */

static inline uint64_t tsr__hash(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        b += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, b, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 32;
    return h;
}

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} tsr__buf;
static inline void tsr__buf_add(tsr__buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

typedef struct {
    uint64_t *slots; /* (hash >> 32) << 32 | (id + 1); 0 = empty */
    uint64_t mask;
} tsr__smap;

bool tsr__smap_init(tsr__smap *m, int64_t n);
static inline int32_t tsr__smap_get(const tsr__smap *m, char *const *keys, const uint32_t *lens,
                                    const void *k, size_t n) {
    if (!m->slots) return -1;
    uint64_t h = tsr__hash(k, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (!s) return -1;
        if ((uint32_t)(s >> 32) == tag) {
            int32_t id = (int32_t)(uint32_t)(s & 0xFFFFFFFFu) - 1;
            if (lens[id] == n && !memcmp(keys[id], k, n)) return id;
        }
    }
}

/* Later puts of an equal key win (as a Python dict built from a token list does). */
void tsr__smap_put(tsr__smap *m, char *const *keys, const uint32_t *lens, int32_t id);

/* (left id, right id) -> (rank, merged id) */
typedef struct {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint64_t *vals; /* rank << 32 | merged id */
    uint64_t mask;
} tsr__mmap;

bool tsr__mmap_init(tsr__mmap *m, int64_t n);

static inline uint64_t tsr__mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
}

static inline bool tsr__mmap_get(const tsr__mmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *id) {
    if (!m->keys) return false;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint64_t i = tsr__mix(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == k) {
            *rank = (uint32_t)(m->vals[i] >> 32);
            *id = (int32_t)(uint32_t)m->vals[i];
            return true;
        }
        if (m->keys[i] == UINT64_MAX) return false;
    }
}

/* The first merge of a pair wins (HF keeps the lowest rank). */
void tsr__mmap_put(tsr__mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);

/* ------------------------------------------------------------------------------------------ */
/* the tokenizer                                                                              */

/* Split patterns recognised by their exact text. */
typedef enum {
    TSR__PAT_GPT2,     /* GPT-2 (also ByteLevel use_regex) */
    TSR__PAT_LLAMA3,   /* Llama-3: \p{N}{1,3} */
    TSR__PAT_QWEN2,    /* Qwen2: \p{N} */
    TSR__PAT_QWEN35,   /* Qwen3.5: [\p{L}\p{M}]+ letters, \p{N} */
    TSR__PAT_DIGITS3,  /* \p{N}{1,3} alone (DeepSeek-V3) */
    TSR__PAT_CJK,      /* DeepSeek-V3's CJK/kana runs */
    TSR__PAT_DSV3,     /* DeepSeek-V3's main pattern */
} tsr__pat;

typedef enum { TSR__NORM_NFC, TSR__NORM_PREPEND, TSR__NORM_REPLACE } tsr__norm_kind;
typedef struct {
    tsr__norm_kind kind;
    char *a, *b; /* PREPEND: a; REPLACE: a -> b */
} tsr__norm;

typedef enum { TSR__PRE_SPLIT, TSR__PRE_BYTELEVEL, TSR__PRE_DIGITS, TSR__PRE_METASPACE } tsr__pre_kind;
enum { TSR__PREPEND_ALWAYS, TSR__PREPEND_FIRST, TSR__PREPEND_NEVER };
typedef struct {
    tsr__pre_kind kind;
    tsr__pat pat;          /* SPLIT */
    bool add_prefix_space; /* BYTELEVEL */
    bool use_regex;        /* BYTELEVEL */
    bool individual;       /* DIGITS */
    char *repl;            /* METASPACE replacement */
    int prepend;           /* METASPACE */
    bool split;            /* METASPACE */
} tsr__pre;

typedef enum {
    TSR__DEC_BYTELEVEL, TSR__DEC_REPLACE, TSR__DEC_BYTEFALLBACK, TSR__DEC_FUSE, TSR__DEC_STRIP,
    TSR__DEC_METASPACE,
} tsr__dec_kind;
typedef struct {
    tsr__dec_kind kind;
    char *a, *b;       /* REPLACE a -> b; METASPACE a = replacement */
    uint32_t strip_cp; /* STRIP content */
    int strip_left;    /* STRIP start count */
    bool stream;       /* STRIP after a Fuse: applies to the start of the whole text */
    bool meta_strip;   /* METASPACE: strip the first token's leading space */
} tsr__dec;

typedef struct {
    char *content;
    uint32_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tsr__added;

enum { TSR__MAX_STEPS = 8, TSR__CACHE_SIZE = 8192, TSR__CACHE_KEY = 22, TSR__CACHE_IDS = 8 };

typedef struct {
    uint64_t h;
    uint8_t klen, nids;
    char key[TSR__CACHE_KEY];
    int32_t ids[TSR__CACHE_IDS];
} tsr__cache_entry;

struct tsr_tokenizer {
    int64_t n_vocab;      /* max id + 1 over the model vocabulary and the added tokens */
    char **piece;         /* [n_vocab] vocabulary strings as the file spells them (NULL: hole) */
    uint32_t *piece_len;  /* [n_vocab] */
    char **raw;           /* [n_vocab] the bytes a model token stands for (byte-level: decoded) */
    uint32_t *raw_len;    /* [n_vocab] */
    tsr__smap piece_map;  /* piece -> id */
    tsr__smap raw_map;    /* raw bytes -> id (model vocabulary only) */
    tsr__mmap merges;
    uint8_t *flags;       /* [n_vocab] TSR__F_* */

    bool byte_level;      /* the model sees bytes in the GPT-2 alphabet */
    bool byte_fallback, ignore_merges, fuse_unk;
    int32_t unk_id;
    int32_t byte_id[256]; /* byte-level: id of each byte's symbol; else <0xNN> fallback ids */

    int n_norm, n_pre, n_dec;
    tsr__norm norm[TSR__MAX_STEPS];
    tsr__pre pre[TSR__MAX_STEPS];
    tsr__dec dec[TSR__MAX_STEPS];
    bool has_decoder;

    tsr__added *added;
    int n_added;
    bool has_normalized_added;
    int32_t *added_by_byte[256]; /* indices into added, longest first, by first byte */
    int n_added_by_byte[256];

    int32_t prefix[8], suffix[8];
    int n_prefix, n_suffix;

    int32_t bos, eos;
    char *chat_template;

    pthread_mutex_t cache_lock;
    tsr__cache_entry *cache;
    bool no_cache;
};

enum { TSR__F_ADDED = 1, TSR__F_SPECIAL = 2, TSR__F_NOTMODEL = 4 /* an added token outside the model vocab */ };

/* ------------------------------------------------------------------------------------------ */
/* the encoder's state, shared by encode.c, pre_tokenizers.c and bpe.c                        */

typedef struct {
    uint32_t rank;
    int32_t pos;
    int32_t id;
} tsr__heap_item;

typedef struct {
    const tsr_tokenizer *t;
    bool parse_special;
    int32_t *ids;
    int64_t n, cap;
    bool oom;
    /* BPE scratch */
    int32_t *sym_id, *sym_prev, *sym_next;
    size_t sym_cap;
    tsr__heap_item *heap;
    size_t heap_cap;
} tsr__enc;

static inline void tsr__emit(tsr__enc *e, int32_t id) {
    if (e->oom) return;
    if (e->n == e->cap) {
        int64_t cap = e->cap ? e->cap * 2 : 256;
        int32_t *p = realloc(e->ids, sizeof(int32_t) * (size_t)cap);
        if (!p) { e->oom = true; return; }
        e->ids = p;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
}

#define TSR__IS(p, c) (((p) & TSR_UC_CLASS) == (c))

/* ------------------------------------------------------------------------------------------ */
/* what one file offers another                                                               */

/* vocab.c */
tsr_tokenizer *tsr__tok_new(void);
/* Sizes the per-id arrays for ids [0, n). */
tsr_status tsr__tok_alloc_vocab(tsr_tokenizer *t, int64_t n);
/* Fills raw[] for model tokens and builds both maps.  In byte-level mode only pieces spelled in
 * the alphabet can be produced by BPE, so only those enter the raw map. */
tsr_status tsr__tok_index(tsr_tokenizer *t);
/* Merges "a b" given as the two halves; a merge whose parts or result are missing is skipped
 * (HF refuses such files; they do not occur in practice). */
void tsr__add_merge(tsr_tokenizer *t, const char *a, size_t an, const char *b, size_t bn, uint32_t rank);
/* Index of added tokens by first byte, longest first, for leftmost-longest matching. */
tsr_status tsr__index_added(tsr_tokenizer *t);

/* byte_level.c */
void tsr__bytelevel_init(void); /* builds the alphabet tables once; tsr__tok_new calls it */
/* Decodes a byte-level string to its bytes into out (room for n bytes); false when a character
 * is outside the alphabet. */
bool tsr__bytelevel_decode(const char *s, size_t n, char *out, size_t *out_n);
/* A byte string in the byte-level alphabet (malloc'd). */
char *tsr__bytelevel_encode(const char *s, size_t n, size_t *out_n);

/* word_cache.c (lookups in word_cache.h) */
bool tsr__word_cache_init(tsr_tokenizer *t);
void tsr__word_cache_free(tsr_tokenizer *t);

/* normalizers.c */
/* Applies the normalizer steps; returns s itself or a malloc'd copy (*owned set). */
const uint8_t *tsr__normalize(const tsr_tokenizer *t, const uint8_t *s, size_t n, size_t *out_n, bool *owned,
                              bool *oom);
/* Added-token content normalized as HF does for normalized=true tokens. */
void tsr__normalize_added(tsr_tokenizer *t);

/* pre_tokenizers.c */
/* Runs pre-tokenizer steps [step, n_pre) over s[0, n) and BPE over the words they make. */
void tsr__pretok(tsr__enc *e, int step, const uint8_t *s, size_t n, bool at_start);
/* The split pattern a Split pre-tokenizer's regex text names; false when Tessera lacks it. */
bool tsr__pattern_find(const char *regex, tsr__pat *pat);

/* bpe.c */
/* BPE over one pre-tokenized word (n > 0); appends its ids.  tsr__encode_word (word_cache.h)
 * asks the cache first. */
void tsr__bpe_word(tsr__enc *e, const uint8_t *w, size_t n);

/* decoders.c: the decoder steps on one token's piece (*s)[0, *n); first: the text's first
 * decoded token.  Returns the malloc'd buffer *s may now point into (the caller frees it) or
 * NULL; a failed allocation sets *oom. */
char *tsr__decoders_apply(const tsr_tokenizer *t, bool first, const char **s, size_t *n, bool *oom);

/* sentencepiece.c */
tsr_status tsr__generate_merges(tsr_tokenizer *t, const double *scores, int64_t n);

#endif
