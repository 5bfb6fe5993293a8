/* Tokenizers for the coordinator (rank 0): one BPE engine behind the two ways models ship a
 * tokenizer, HF tokenizer.json and the tokenizer.ggml.* keys of a GGUF file.  Both are turned
 * into the same pipeline, the one HF `tokenizers` runs, so ids match it:
 *
 *   added tokens (matched first) -> normalizer (NFC, Prepend, Replace) -> pre-tokenizer steps
 *   (Split on a known pattern, ByteLevel, Digits, Metaspace) -> BPE (byte-level or
 *   SentencePiece-style with byte fallback) -> post-processor (BOS/EOS templates).
 *
 * No general regex engine: the split patterns models use are recognised by their exact text
 * and matched by hand-written functions that follow the regex's alternation order and
 * backtracking (an unknown pattern is TSR_ERR_UNSUPPORTED at load).  BPE merges run on a
 * linked list of symbols with a binary heap of candidate pairs keyed (rank, position), which is
 * the order HF applies merges in; a small direct-mapped cache remembers recent words.
 * Decoding is the streaming decoder run to the end, so a stream and a whole decode agree. */
#include "coordinator/tokenizer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "coordinator/unicode.h"

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                              */

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

static char *tsr__strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} tsr__buf;

static void tsr__buf_add(tsr__buf *b, const void *s, size_t n) {
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

/* ------------------------------------------------------------------------------------------ */
/* string -> id map (open addressing; keys live in the tokenizer's arrays)                    */

typedef struct {
    uint64_t *slots; /* (hash >> 32) << 32 | (id + 1); 0 = empty */
    uint64_t mask;
} tsr__smap;

static bool tsr__smap_init(tsr__smap *m, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2 + 16) cap *= 2;
    m->slots = calloc(cap, sizeof(uint64_t));
    m->mask = cap - 1;
    return m->slots != NULL;
}

static int32_t tsr__smap_get(const tsr__smap *m, char *const *keys, const uint32_t *lens,
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
static void tsr__smap_put(tsr__smap *m, char *const *keys, const uint32_t *lens, int32_t id) {
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

/* (left id, right id) -> (rank, merged id) */
typedef struct {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint64_t *vals; /* rank << 32 | merged id */
    uint64_t mask;
} tsr__mmap;

static bool tsr__mmap_init(tsr__mmap *m, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2 + 16) cap *= 2;
    m->keys = malloc(cap * sizeof(uint64_t));
    m->vals = malloc(cap * sizeof(uint64_t));
    if (!m->keys || !m->vals) return false;
    memset(m->keys, 0xFF, cap * sizeof(uint64_t));
    m->mask = cap - 1;
    return true;
}

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
static void tsr__mmap_put(tsr__mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
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

static const struct {
    const char *text;
    tsr__pat pat;
} tsr__patterns[] = {
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", TSR__PAT_GPT2},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_LLAMA3},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_QWEN2},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_QWEN35},
    {"\\p{N}{1,3}", TSR__PAT_DIGITS3},
    {"[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+", TSR__PAT_CJK},
    {"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
     "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_DSV3},
};

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

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the rest move to
 * U+0100 and up, in byte order. */
static void tsr__byte_alphabet(uint32_t cp_of_byte[256], int16_t byte_of_cp[512]) {
    int n = 0;
    for (int i = 0; i < 512; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_of_byte[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        byte_of_cp[cp_of_byte[b]] = (int16_t)b;
    }
}

static uint32_t tsr__cp_of_byte[256];
static int16_t tsr__byte_of_cp[512];
static pthread_once_t tsr__alphabet_once = PTHREAD_ONCE_INIT;
static void tsr__alphabet_init(void) { tsr__byte_alphabet(tsr__cp_of_byte, tsr__byte_of_cp); }

/* Decodes a byte-level string to its bytes into out (room for n bytes); false when a character
 * is outside the alphabet. */
static bool tsr__bytelevel_decode(const char *s, size_t n, char *out, size_t *out_n) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t cp = tsr_utf8_next((const uint8_t *)s + i, n - i, &len);
        if (cp >= 512 || tsr__byte_of_cp[cp] < 0 || (cp == 0xFFFD)) return false;
        out[o++] = (char)tsr__byte_of_cp[cp];
        i += (size_t)len;
    }
    *out_n = o;
    return true;
}

/* A byte string in the byte-level alphabet (malloc'd). */
static char *tsr__bytelevel_encode(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)tsr_utf8_put(tsr__cp_of_byte[(uint8_t)s[i]], o + k);
    o[k] = 0;
    *out_n = k;
    return o;
}

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
    if (t->cache) pthread_mutex_destroy(&t->cache_lock);
    free(t->cache);
    free(t);
}

static tsr_tokenizer *tsr__tok_new(void) {
    pthread_once(&tsr__alphabet_once, tsr__alphabet_init);
    tsr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->unk_id = -1;
    t->bos = t->eos = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
}

/* Sizes the per-id arrays for ids [0, n). */
static tsr_status tsr__tok_alloc_vocab(tsr_tokenizer *t, int64_t n) {
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

/* Fills raw[] for model tokens and builds both maps.  In byte-level mode only pieces spelled in
 * the alphabet can be produced by BPE, so only those enter the raw map. */
static tsr_status tsr__tok_index(tsr_tokenizer *t) {
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

/* Merges "a b" given as the two halves; a merge whose parts or result are missing is skipped
 * (HF refuses such files; they do not occur in practice). */
static void tsr__add_merge(tsr_tokenizer *t, const char *a, size_t an, const char *b, size_t bn, uint32_t rank) {
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

/* Index of added tokens by first byte, longest first, for leftmost-longest matching. */
static tsr_status tsr__index_added(tsr_tokenizer *t) {
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
    t->cache = calloc(TSR__CACHE_SIZE, sizeof(tsr__cache_entry));
    if (!t->cache) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    pthread_mutex_init(&t->cache_lock, NULL);
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* pattern matchers: the length of the regex match starting exactly at s[i], 0 when none      */

static inline uint8_t tsr__cls_at(const uint8_t *s, size_t n, size_t i, int *len) {
    if (s[i] < 0x80) { *len = 1; return tsr__uc_ascii[s[i]]; }
    uint32_t cp = tsr_utf8_next(s + i, n - i, len);
    return tsr_uc_props(cp);
}

#define TSR__IS(p, c) (((p) & TSR_UC_CLASS) == (c))

static size_t tsr__run_letters(const uint8_t *s, size_t n, size_t i, bool with_marks) {
    while (i < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if (!(TSR__IS(p, TSR_UC_L) || (with_marks && TSR__IS(p, TSR_UC_M)))) break;
        i += (size_t)len;
    }
    return i;
}

static size_t tsr__run_class(const uint8_t *s, size_t n, size_t i, int cls, size_t max_chars) {
    size_t k = 0;
    while (i < n && k < max_chars) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if (!TSR__IS(p, cls)) break;
        i += (size_t)len;
        k++;
    }
    return i;
}

/* [^\s\p{L}\p{N}]+ (with_marks: also not \p{M}) */
static size_t tsr__run_other(const uint8_t *s, size_t n, size_t i, bool with_marks) {
    while (i < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if ((p & TSR_UC_SPACE) || TSR__IS(p, TSR_UC_L) || TSR__IS(p, TSR_UC_N) ||
            (with_marks && TSR__IS(p, TSR_UC_M)))
            break;
        i += (size_t)len;
    }
    return i;
}

/* The whitespace alternatives every pattern ends with:
 *   [\s*[\r\n]+ if newline_alt] | \s+(?!\S) | \s+        (returns 0 if s[i] is not \s) */
static size_t tsr__match_space(const uint8_t *s, size_t n, size_t i, bool newline_alt) {
    size_t k = i, last_start = i, last_nl = SIZE_MAX;
    while (k < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, k, &len);
        if (!(p & TSR_UC_SPACE)) break;
        if (s[k] == '\r' || s[k] == '\n') last_nl = k;
        last_start = k;
        k += (size_t)len;
    }
    if (k == i) return 0;
    if (newline_alt && last_nl != SIZE_MAX) return last_nl + 1 - i;
    if (k == n) return k - i;              /* \s+(?!\S) at the end */
    if (last_start > i) return last_start - i; /* back off one char so (?!\S) holds */
    return k - i;                          /* \s+ */
}

static size_t tsr__contraction(const uint8_t *s, size_t n, size_t i, bool icase) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (icase) {
        if (a >= 'A' && a <= 'Z') a = (uint8_t)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (uint8_t)(b + 32);
        /* U+017F LATIN SMALL LETTER LONG S folds to 's'; U+212A KELVIN SIGN to 'k' (unused) */
        if (a == 0xC5 && b == 0xBF) return 3;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static size_t tsr__match_gpt2(const uint8_t *s, size_t n, size_t i) {
    size_t m = tsr__contraction(s, n, i, false);
    if (m) return m;
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, j, &len);
        if (TSR__IS(p, TSR_UC_L)) return tsr__run_letters(s, n, j, false) - i;
        if (TSR__IS(p, TSR_UC_N)) return tsr__run_class(s, n, j, TSR_UC_N, SIZE_MAX) - i;
        if (!(p & TSR_UC_SPACE)) return tsr__run_other(s, n, j, false) - i;
    }
    return tsr__match_space(s, n, i, false);
}

/* Llama-3 (max_digits 3), Qwen2 (1), Qwen3.5 (1, letters include marks). */
static size_t tsr__match_llama3(const uint8_t *s, size_t n, size_t i, size_t max_digits, bool lm) {
    size_t m = tsr__contraction(s, n, i, true);
    if (m) return m;
    int len0;
    uint8_t p0 = tsr__cls_at(s, n, i, &len0);
    bool letter0 = TSR__IS(p0, TSR_UC_L) || (lm && TSR__IS(p0, TSR_UC_M));
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!TSR__IS(p0, TSR_UC_L) && !TSR__IS(p0, TSR_UC_N) && s[i] != '\r' && s[i] != '\n') {
        size_t j = i + (size_t)len0;
        if (j < n) {
            int len1;
            uint8_t p1 = tsr__cls_at(s, n, j, &len1);
            if (TSR__IS(p1, TSR_UC_L) || (lm && TSR__IS(p1, TSR_UC_M))) return tsr__run_letters(s, n, j, lm) - i;
        }
    }
    if (letter0) return tsr__run_letters(s, n, i, lm) - i;
    if (TSR__IS(p0, TSR_UC_N)) return tsr__run_class(s, n, i, TSR_UC_N, max_digits) - i;
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, j, &len);
        if (!(p & TSR_UC_SPACE) && !TSR__IS(p, TSR_UC_L) && !TSR__IS(p, TSR_UC_N) && !(lm && TSR__IS(p, TSR_UC_M))) {
            size_t k = tsr__run_other(s, n, j, lm);
            while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
            return k - i;
        }
    }
    return tsr__match_space(s, n, i, true);
}

static bool tsr__is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x309F) || (cp >= 0x30A0 && cp <= 0x30FF);
}

static bool tsr__ascii_punct(uint8_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

static bool tsr__ascii_alpha(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static size_t tsr__match_dsv3(const uint8_t *s, size_t n, size_t i) {
    /* [!"#...~][A-Za-z]+ */
    if (tsr__ascii_punct(s[i]) && i + 1 < n && tsr__ascii_alpha(s[i + 1])) {
        size_t k = i + 1;
        while (k < n && tsr__ascii_alpha(s[k])) k++;
        return k - i;
    }
    int len0;
    uint8_t p0 = tsr__cls_at(s, n, i, &len0);
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    if (!TSR__IS(p0, TSR_UC_L) && !TSR__IS(p0, TSR_UC_P) && !TSR__IS(p0, TSR_UC_S) && s[i] != '\r' && s[i] != '\n') {
        size_t j = i + (size_t)len0;
        if (j < n) {
            int len1;
            uint8_t p1 = tsr__cls_at(s, n, j, &len1);
            if (TSR__IS(p1, TSR_UC_L) || TSR__IS(p1, TSR_UC_M)) return tsr__run_letters(s, n, j, true) - i;
        }
    }
    if (TSR__IS(p0, TSR_UC_L) || TSR__IS(p0, TSR_UC_M)) return tsr__run_letters(s, n, i, true) - i;
    /* ` ?[\p{P}\p{S}]+[\r\n]*` */
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        size_t k = j;
        while (k < n) {
            int len;
            uint8_t p = tsr__cls_at(s, n, k, &len);
            if (!TSR__IS(p, TSR_UC_P) && !TSR__IS(p, TSR_UC_S)) break;
            k += (size_t)len;
        }
        if (k > j) {
            while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
            return k - i;
        }
    }
    return tsr__match_space(s, n, i, true);
}

static size_t tsr__match(tsr__pat pat, const uint8_t *s, size_t n, size_t i) {
    switch (pat) {
    case TSR__PAT_GPT2: return tsr__match_gpt2(s, n, i);
    case TSR__PAT_LLAMA3: return tsr__match_llama3(s, n, i, 3, false);
    case TSR__PAT_QWEN2: return tsr__match_llama3(s, n, i, 1, false);
    case TSR__PAT_QWEN35: return tsr__match_llama3(s, n, i, 1, true);
    case TSR__PAT_DIGITS3: {
        int len;
        if (!TSR__IS(tsr__cls_at(s, n, i, &len), TSR_UC_N)) return 0;
        return tsr__run_class(s, n, i, TSR_UC_N, 3) - i;
    }
    case TSR__PAT_CJK: {
        size_t k = i;
        while (k < n) {
            int len;
            uint32_t cp = tsr_utf8_next(s + k, n - k, &len);
            if (!tsr__is_cjk(cp)) break;
            k += (size_t)len;
        }
        return k - i;
    }
    case TSR__PAT_DSV3: return tsr__match_dsv3(s, n, i);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* encoding                                                                                   */

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

static void tsr__emit(tsr__enc *e, int32_t id) {
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

/* BPE over one pre-tokenized word; appends its ids. */
static void tsr__bpe_word(tsr__enc *e, const uint8_t *w, size_t n) {
    const tsr_tokenizer *t = e->t;
    if (!n) return;
    uint64_t h = 0;
    tsr__cache_entry *ce = NULL;
    if (n <= TSR__CACHE_KEY && !t->no_cache) {
        h = tsr__hash(w, n);
        ce = (tsr__cache_entry *)&t->cache[h & (TSR__CACHE_SIZE - 1)];
        pthread_mutex_t *lock = (pthread_mutex_t *)&t->cache_lock;
        if (pthread_mutex_trylock(lock) == 0) {
            bool hit = ce->h == h && ce->klen == n && !memcmp(ce->key, w, n);
            int32_t ids[TSR__CACHE_IDS];
            int nids = ce->nids;
            if (hit) memcpy(ids, ce->ids, sizeof(int32_t) * (size_t)nids);
            pthread_mutex_unlock(lock);
            if (hit) {
                for (int k = 0; k < nids; k++) tsr__emit(e, ids[k]);
                return;
            }
        } else {
            ce = NULL;
        }
    }
    int64_t first_out = e->n;
    if (t->ignore_merges) {
        int32_t id = tsr__smap_get(&t->raw_map, t->raw, t->raw_len, w, n);
        if (id >= 0) {
            tsr__emit(e, id);
            goto cache_store;
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
cache_store:
    if (ce && !e->oom && e->n - first_out <= TSR__CACHE_IDS) {
        pthread_mutex_t *lock = (pthread_mutex_t *)&t->cache_lock;
        if (pthread_mutex_trylock(lock) == 0) {
            ce->h = h;
            ce->klen = (uint8_t)n;
            memcpy(ce->key, w, n);
            ce->nids = (uint8_t)(e->n - first_out);
            memcpy(ce->ids, e->ids + first_out, sizeof(int32_t) * (size_t)ce->nids);
            pthread_mutex_unlock(lock);
        }
    }
}

static void tsr__pretok(tsr__enc *e, int step, const uint8_t *s, size_t n, bool at_start);

/* Hands s[a, b) to the next step. */
static inline void tsr__next(tsr__enc *e, int step, const uint8_t *s, size_t a, size_t b, bool at_start) {
    if (b > a) tsr__pretok(e, step + 1, s + a, b - a, at_start && a == 0);
}

static void tsr__split_pattern(tsr__enc *e, int step, tsr__pat pat, const uint8_t *s, size_t n, bool at_start) {
    size_t pos = 0;
    while (pos < n) {
        size_t p = pos, m = 0;
        while (p < n && !(m = tsr__match(pat, s, n, p))) {
            int len;
            tsr_utf8_next(s + p, n - p, &len);
            p += (size_t)len;
        }
        tsr__next(e, step, s, pos, p, at_start);
        if (p >= n) break;
        tsr__next(e, step, s, p, p + m, at_start);
        pos = p + m;
    }
}

static void tsr__pretok(tsr__enc *e, int step, const uint8_t *s, size_t n, bool at_start) {
    const tsr_tokenizer *t = e->t;
    if (e->oom || !n) return;
    if (step >= t->n_pre) {
        tsr__bpe_word(e, s, n);
        return;
    }
    const tsr__pre *pre = &t->pre[step];
    switch (pre->kind) {
    case TSR__PRE_SPLIT:
        tsr__split_pattern(e, step, pre->pat, s, n, at_start);
        return;
    case TSR__PRE_BYTELEVEL: {
        uint8_t *tmp = NULL;
        if (pre->add_prefix_space && s[0] != ' ') {
            tmp = malloc(n + 1);
            if (!tmp) { e->oom = true; return; }
            tmp[0] = ' ';
            memcpy(tmp + 1, s, n);
            s = tmp;
            n++;
        }
        if (pre->use_regex) tsr__split_pattern(e, step, TSR__PAT_GPT2, s, n, at_start);
        else tsr__pretok(e, step + 1, s, n, at_start);
        free(tmp);
        return;
    }
    case TSR__PRE_DIGITS: {
        size_t pos = 0, i = 0;
        while (i < n) {
            int len;
            uint8_t p = tsr__cls_at(s, n, i, &len);
            if (!TSR__IS(p, TSR_UC_N)) { i += (size_t)len; continue; }
            size_t end = pre->individual ? i + (size_t)len : tsr__run_class(s, n, i, TSR_UC_N, SIZE_MAX);
            tsr__next(e, step, s, pos, i, at_start);
            tsr__next(e, step, s, i, end, at_start);
            pos = i = end;
        }
        tsr__next(e, step, s, pos, n, at_start);
        return;
    }
    case TSR__PRE_METASPACE: {
        size_t rl = strlen(pre->repl), spaces = 0;
        for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
        bool prepend = (pre->prepend == TSR__PREPEND_ALWAYS || (pre->prepend == TSR__PREPEND_FIRST && at_start));
        uint8_t *buf = malloc(n + (spaces + 1) * rl + 1);
        if (!buf) { e->oom = true; return; }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') { memcpy(buf + o, pre->repl, rl); o += rl; }
            else buf[o++] = s[i];
        }
        if (prepend && !(o >= rl && !memcmp(buf, pre->repl, rl))) {
            memmove(buf + rl, buf, o);
            memcpy(buf, pre->repl, rl);
            o += rl;
        }
        if (!pre->split) {
            tsr__pretok(e, step + 1, buf, o, at_start);
        } else {
            /* MergedWithNext on the replacement: each piece starts at a replacement */
            size_t start = 0;
            for (size_t i = 0; i + rl <= o; i++) {
                if (i > start && !memcmp(buf + i, pre->repl, rl)) {
                    tsr__next(e, step, buf, start, i, at_start);
                    start = i;
                }
            }
            tsr__next(e, step, buf, start, o, at_start);
        }
        free(buf);
        return;
    }
    }
}

/* Applies the normalizer steps; returns s itself or a malloc'd copy (*owned set). */
static const uint8_t *tsr__normalize(const tsr_tokenizer *t, const uint8_t *s, size_t n, size_t *out_n, bool *owned,
                                     bool *oom) {
    *owned = false;
    *out_n = n;
    for (int k = 0; k < t->n_norm; k++) {
        const tsr__norm *nm = &t->norm[k];
        uint8_t *next = NULL;
        size_t nn = 0;
        if (nm->kind == TSR__NORM_NFC) {
            next = (uint8_t *)tsr_uc_nfc((const char *)s, n, &nn);
            if (!next && nn == SIZE_MAX) { *oom = true; break; }
            if (!next) continue;
        } else if (nm->kind == TSR__NORM_PREPEND) {
            if (!n) continue;
            size_t pl = strlen(nm->a);
            next = malloc(n + pl + 1);
            if (!next) { *oom = true; break; }
            memcpy(next, nm->a, pl);
            memcpy(next + pl, s, n);
            nn = n + pl;
        } else {
            size_t al = strlen(nm->a), bl = strlen(nm->b), cnt = 0;
            if (!al) continue;
            for (size_t i = 0; i + al <= n;) {
                if (!memcmp(s + i, nm->a, al)) { cnt++; i += al; }
                else i++;
            }
            if (!cnt) continue;
            next = malloc(n + cnt * bl + 1);
            if (!next) { *oom = true; break; }
            for (size_t i = 0; i < n;) {
                if (i + al <= n && !memcmp(s + i, nm->a, al)) { memcpy(next + nn, nm->b, bl); nn += bl; i += al; }
                else next[nn++] = s[i++];
            }
        }
        if (*owned) free((void *)s);
        s = next;
        n = nn;
        *owned = true;
    }
    *out_n = n;
    return s;
}

static bool tsr__word_char(uint32_t cp) {
    uint8_t p = tsr_uc_props(cp);
    return TSR__IS(p, TSR_UC_L) || TSR__IS(p, TSR_UC_N) || cp == '_';
}

/* Leftmost-longest added-token match in s[from, n) among the tokens of this pass.  Returns the
 * token index or -1; [*ms, *me) is the matched span including lstrip/rstrip whitespace. */
static int tsr__find_added(const tsr__enc *e, bool normalized_pass, const uint8_t *s, size_t n, size_t from,
                           size_t *ms, size_t *me) {
    const tsr_tokenizer *t = e->t;
    for (size_t p = from; p < n; p++) {
        int cnt = t->n_added_by_byte[s[p]];
        if (!cnt) continue;
        const int32_t *list = t->added_by_byte[s[p]];
        for (int k = 0; k < cnt; k++) {
            const tsr__added *a = &t->added[list[k]];
            if (a->normalized != normalized_pass) continue;
            if (a->special && !e->parse_special) continue;
            if (a->len > n - p || memcmp(s + p, a->content, a->len)) continue;
            size_t st = p, en = p + a->len;
            if (a->single_word) {
                bool ok = true;
                if (st > 0) {
                    size_t q = st - 1;
                    while (q > 0 && (s[q] & 0xC0) == 0x80) q--;
                    int len;
                    ok = !tsr__word_char(tsr_utf8_next(s + q, n - q, &len));
                }
                if (ok && en < n) {
                    int len;
                    ok = !tsr__word_char(tsr_utf8_next(s + en, n - en, &len));
                }
                if (!ok) continue;
            }
            if (a->lstrip) {
                while (st > from) {
                    size_t q = st - 1;
                    while (q > from && (s[q] & 0xC0) == 0x80) q--;
                    int len;
                    if (!(tsr_uc_props(tsr_utf8_next(s + q, n - q, &len)) & TSR_UC_SPACE)) break;
                    st = q;
                }
            }
            if (a->rstrip) {
                while (en < n) {
                    int len;
                    if (!(tsr_uc_props(tsr_utf8_next(s + en, n - en, &len)) & TSR_UC_SPACE)) break;
                    en += (size_t)len;
                }
            }
            *ms = st;
            *me = en;
            return list[k];
        }
    }
    return -1;
}

/* A segment between non-normalized added tokens: normalize, split on normalized added
 * tokens, pre-tokenize. */
static void tsr__encode_segment(tsr__enc *e, const uint8_t *s, size_t n, bool at_start) {
    const tsr_tokenizer *t = e->t;
    if (!n) return;
    size_t nn;
    bool owned, oom = false;
    const uint8_t *ns = tsr__normalize(t, s, n, &nn, &owned, &oom);
    if (oom) { e->oom = true; return; }
    if (!t->has_normalized_added) {
        tsr__pretok(e, 0, ns, nn, at_start);
    } else {
        size_t pos = 0;
        while (pos < nn) {
            size_t ms, me;
            int k = tsr__find_added(e, true, ns, nn, pos, &ms, &me);
            if (k < 0) break;
            if (ms > pos) tsr__pretok(e, 0, ns + pos, ms - pos, at_start && pos == 0);
            tsr__emit(e, t->added[k].id);
            pos = me;
        }
        if (pos < nn) tsr__pretok(e, 0, ns + pos, nn - pos, at_start && pos == 0);
    }
    if (owned) free((void *)ns);
}

tsr_status tsr_tokenizer_encode(const tsr_tokenizer *t, const char *text, size_t len, bool add_special,
                                bool parse_special, int32_t **ids, int64_t *n_ids) {
    if (!t || (!text && len) || !ids || !n_ids) return tsr_errorf(TSR_ERR_INVALID_ARG, "tokenizer_encode: bad arguments");
    tsr__enc e = {.t = t, .parse_special = parse_special};
    const uint8_t *s = (const uint8_t *)text;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++) tsr__emit(&e, t->prefix[i]);
    size_t pos = 0;
    while (pos < len && !e.oom) {
        size_t ms, me;
        int k = tsr__find_added(&e, false, s, len, pos, &ms, &me);
        if (k < 0) break;
        tsr__encode_segment(&e, s + pos, ms - pos, pos == 0);
        tsr__emit(&e, t->added[k].id);
        pos = me;
    }
    if (pos < len) tsr__encode_segment(&e, s + pos, len - pos, pos == 0);
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++) tsr__emit(&e, t->suffix[i]);
    free(e.sym_id);
    free(e.sym_prev);
    free(e.sym_next);
    free(e.heap);
    if (e.oom) {
        free(e.ids);
        return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    if (!e.ids) e.ids = malloc(sizeof(int32_t));
    *ids = e.ids;
    *n_ids = e.n;
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding: the streaming decoder; a whole decode runs it to the end                         */

void tsr_detok_init(tsr_detok *d, const tsr_tokenizer *t, bool skip_special) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->skip_special = skip_special;
    d->strip_left = -1;
}

static void tsr__put_cp(tsr__buf *out, tsr_detok *d, uint32_t cp) {
    if (d->strip_left == -1) {
        d->strip_left = 0;
        for (int k = 0; k < d->tok->n_dec; k++)
            if (d->tok->dec[k].kind == TSR__DEC_STRIP && d->tok->dec[k].stream) d->strip_left = d->tok->dec[k].strip_left;
    }
    if (d->strip_left > 0) {
        uint32_t want = 0;
        for (int k = 0; k < d->tok->n_dec; k++)
            if (d->tok->dec[k].kind == TSR__DEC_STRIP && d->tok->dec[k].stream) want = d->tok->dec[k].strip_cp;
        if (cp == want) { d->strip_left--; return; }
        d->strip_left = 0;
    }
    char b[4];
    int k = tsr_utf8_put(cp, b);
    tsr__buf_add(out, b, (size_t)k);
    d->emitted = true;
}

/* Feeds bytes through a lossy UTF-8 decoder (each maximal invalid subpart becomes U+FFFD, as
 * Rust's from_utf8_lossy does); an incomplete tail stays pending unless final. */
static void tsr__feed(tsr_detok *d, tsr__buf *out, const uint8_t *s, size_t n, bool final) {
    uint8_t tmp[4];
    size_t total = (size_t)d->n_pending + n;
    uint8_t *all = total <= sizeof tmp ? tmp : malloc(total);
    if (!all) { out->oom = true; return; }
    memcpy(all, d->pending, (size_t)d->n_pending);
    if (n) memcpy(all + d->n_pending, s, n);
    d->n_pending = 0;
    size_t i = 0;
    while (i < total) {
        uint8_t c = all[i];
        if (c < 0x80) { tsr__put_cp(out, d, c); i++; continue; }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 2;
        else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else { tsr__put_cp(out, d, 0xFFFD); i++; continue; }
        int k = 1;
        bool bad = false;
        while (k < need) {
            if (i + (size_t)k >= total) break;
            uint8_t x = all[i + (size_t)k];
            if (k == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) { bad = true; break; }
            k++;
        }
        if (bad) { tsr__put_cp(out, d, 0xFFFD); i += (size_t)k; continue; }
        if (k < need) { /* incomplete at the end */
            if (final) { tsr__put_cp(out, d, 0xFFFD); i = total; break; }
            memcpy(d->pending, all + i, total - i);
            d->n_pending = (int)(total - i);
            break;
        }
        int len;
        uint32_t cp = tsr_utf8_next(all + i, (size_t)need, &len);
        tsr__put_cp(out, d, cp);
        i += (size_t)need;
    }
    if (all != tmp) free(all);
}

/* Replaces every a by b in s[0..n) into a new malloc'd buffer. */
static char *tsr__replace(const char *s, size_t n, const char *a, const char *b, size_t *out_n) {
    size_t al = strlen(a), bl = strlen(b);
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    for (size_t i = 0; i < n;) {
        if (al && i + al <= n && !memcmp(s + i, a, al)) { tsr__buf_add(&o, b, bl); i += al; }
        else { tsr__buf_add(&o, s + i, 1); i++; }
    }
    if (o.oom) { free(o.p); return NULL; }
    *out_n = o.n;
    return o.p;
}

static bool tsr__is_byte_token(const char *s, size_t n, uint8_t *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int x = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (x < 0) return false;
        v = v * 16 + x;
    }
    *byte = (uint8_t)v;
    return true;
}

tsr_status tsr_detok_push(tsr_detok *d, int32_t id, char **out, size_t *len) {
    const tsr_tokenizer *t = d->tok;
    *out = NULL;
    if (len) *len = 0;
    if (id < 0 || id >= t->n_vocab || !t->piece[id])
        return tsr_errorf(TSR_ERR_INVALID_ARG, "detokenize: token id %d is outside the vocabulary (%lld)", id,
                          (long long)t->n_vocab);
    d->n_pushed++;
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    if (d->skip_special && (t->flags[id] & TSR__F_SPECIAL)) goto done;
    {
        const char *s = t->piece[id];
        size_t n = t->piece_len[id];
        char *own = NULL;
        bool first = d->n_decoded == 0;
        d->n_decoded++;
        if (!t->has_decoder) {
            if (!first) tsr__feed(d, &o, (const uint8_t *)" ", 1, false);
            tsr__feed(d, &o, (const uint8_t *)s, n, false);
            goto done;
        }
        bool is_bytes = false; /* s already holds raw bytes */
        for (int k = 0; k < t->n_dec; k++) {
            const tsr__dec *dc = &t->dec[k];
            switch (dc->kind) {
            case TSR__DEC_BYTELEVEL: {
                char *r = malloc(n + 1);
                size_t rn;
                if (!r) { o.oom = true; break; }
                if (tsr__bytelevel_decode(s, n, r, &rn)) {
                    free(own);
                    own = r;
                    s = r;
                    n = rn;
                } else {
                    free(r);
                }
                is_bytes = true;
                break;
            }
            case TSR__DEC_REPLACE:
            case TSR__DEC_METASPACE: {
                if (is_bytes) break;
                size_t rn;
                char *r = tsr__replace(s, n, dc->a, dc->kind == TSR__DEC_REPLACE ? dc->b : " ", &rn);
                if (!r) { o.oom = true; break; }
                free(own);
                own = r;
                s = r;
                n = rn;
                if (dc->kind == TSR__DEC_METASPACE && dc->meta_strip && first && n && s[0] == ' ') { s++; n--; }
                break;
            }
            case TSR__DEC_BYTEFALLBACK: {
                uint8_t b;
                if (!is_bytes && tsr__is_byte_token(s, n, &b)) {
                    free(own);
                    own = malloc(1);
                    if (!own) { o.oom = true; break; }
                    own[0] = (char)b;
                    s = own;
                    n = 1;
                    is_bytes = true;
                }
                break;
            }
            case TSR__DEC_STRIP:
                if (!dc->stream) {
                    int k2 = 0;
                    char cb[4];
                    int cl = tsr_utf8_put(dc->strip_cp, cb);
                    while (k2 < dc->strip_left && n >= (size_t)cl && !memcmp(s, cb, (size_t)cl)) { s += cl; n -= (size_t)cl; k2++; }
                }
                break;
            case TSR__DEC_FUSE: break;
            }
        }
        tsr__feed(d, &o, (const uint8_t *)s, n, false);
        free(own);
    }
done:
    if (o.oom) {
        free(o.p);
        return tsr_errorf(TSR_ERR_OOM, "detokenize: out of memory");
    }
    *out = o.p;
    if (len) *len = o.n;
    return TSR_OK;
}

tsr_status tsr_detok_finish(tsr_detok *d, char **out, size_t *len) {
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    tsr__feed(d, &o, NULL, 0, true);
    if (o.oom) {
        free(o.p);
        return tsr_errorf(TSR_ERR_OOM, "detokenize: out of memory");
    }
    *out = o.p;
    if (len) *len = o.n;
    return TSR_OK;
}

tsr_status tsr_tokenizer_decode(const tsr_tokenizer *t, const int32_t *ids, int64_t n_ids, bool skip_special,
                                char **text, size_t *len) {
    tsr_detok d;
    tsr_detok_init(&d, t, skip_special);
    tsr__buf all = {0};
    tsr__buf_add(&all, "", 0);
    for (int64_t i = 0; i <= n_ids; i++) {
        char *piece;
        size_t pn;
        tsr_status st = i < n_ids ? tsr_detok_push(&d, ids[i], &piece, &pn) : tsr_detok_finish(&d, &piece, &pn);
        if (st != TSR_OK) { free(all.p); return st; }
        tsr__buf_add(&all, piece, pn);
        free(piece);
    }
    if (all.oom) { free(all.p); return tsr_errorf(TSR_ERR_OOM, "decode: out of memory"); }
    *text = all.p;
    if (len) *len = all.n;
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* accessors                                                                                  */

int64_t tsr_tokenizer_vocab_size(const tsr_tokenizer *t) { return t->n_vocab; }
void tsr_tokenizer_set_cache(tsr_tokenizer *t, bool enabled) {
    t->no_cache = !enabled;
    if (t->cache) memset(t->cache, 0, TSR__CACHE_SIZE * sizeof(tsr__cache_entry));
}
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

/* ------------------------------------------------------------------------------------------ */
/* loading HF tokenizer.json                                                                  */

static const char *tsr__jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool tsr__jbool(const cJSON *o, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

/* cJSON stops strings at NUL; the JSON we read never holds one in a token. */
static tsr_status tsr__parse_normalizer(tsr_tokenizer *t, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return TSR_OK;
    const char *type = tsr__jstr(n, "type");
    if (!type) return tsr_errorf(TSR_ERR_FORMAT, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, list) TSR_TRY(tsr__parse_normalizer(t, it, path));
        return TSR_OK;
    }
    if (t->n_norm >= TSR__MAX_STEPS) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: too many normalizers", path);
    tsr__norm *nm = &t->norm[t->n_norm];
    memset(nm, 0, sizeof *nm);
    if (!strcmp(type, "NFC")) {
        nm->kind = TSR__NORM_NFC;
    } else if (!strcmp(type, "Prepend")) {
        const char *p = tsr__jstr(n, "prepend");
        if (!p) return tsr_errorf(TSR_ERR_FORMAT, "%s: Prepend normalizer without 'prepend'", path);
        nm->kind = TSR__NORM_PREPEND;
        nm->a = strdup(p);
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = tsr__jstr(pat, "String"), *to = tsr__jstr(n, "content");
        if (!from || !to)
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Replace normalizer with a regex pattern is not supported", path);
        nm->kind = TSR__NORM_REPLACE;
        nm->a = strdup(from);
        nm->b = strdup(to);
    } else {
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported (NFC, Prepend, Replace are)", path, type);
    }
    t->n_norm++;
    return TSR_OK;
}

static int tsr__prepend_scheme(const cJSON *p) {
    const char *scheme = tsr__jstr(p, "prepend_scheme");
    if (scheme) {
        if (!strcmp(scheme, "first")) return TSR__PREPEND_FIRST;
        if (!strcmp(scheme, "never")) return TSR__PREPEND_NEVER;
        return TSR__PREPEND_ALWAYS;
    }
    return tsr__jbool(p, "add_prefix_space", true) ? TSR__PREPEND_ALWAYS : TSR__PREPEND_NEVER;
}

static tsr_status tsr__parse_pre(tsr_tokenizer *t, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return TSR_OK;
    const char *type = tsr__jstr(p, "type");
    if (!type) return tsr_errorf(TSR_ERR_FORMAT, "%s: pre_tokenizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, list) TSR_TRY(tsr__parse_pre(t, it, path));
        return TSR_OK;
    }
    if (t->n_pre >= TSR__MAX_STEPS) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: too many pre-tokenizers", path);
    tsr__pre *pr = &t->pre[t->n_pre];
    memset(pr, 0, sizeof *pr);
    if (!strcmp(type, "ByteLevel")) {
        pr->kind = TSR__PRE_BYTELEVEL;
        pr->add_prefix_space = tsr__jbool(p, "add_prefix_space", false);
        pr->use_regex = tsr__jbool(p, "use_regex", true);
        t->byte_level = true;
    } else if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = tsr__jstr(pat, "Regex");
        const char *behavior = tsr__jstr(p, "behavior");
        if (!re) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Split on a plain string is not supported", path);
        if (!behavior || strcmp(behavior, "Isolated") || tsr__jbool(p, "invert", false))
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Split behavior '%s' is not supported (Isolated is)", path,
                              behavior ? behavior : "?");
        size_t k = 0, np = sizeof tsr__patterns / sizeof tsr__patterns[0];
        while (k < np && strcmp(tsr__patterns[k].text, re)) k++;
        if (k == np)
            return tsr_errorf(TSR_ERR_UNSUPPORTED,
                              "%s: pre-tokenizer split pattern not supported (Tessera hand-codes the known "
                              "GPT-2, Llama-3, Qwen2/3.5 and DeepSeek-V3 patterns): %.200s",
                              path, re);
        pr->kind = TSR__PRE_SPLIT;
        pr->pat = tsr__patterns[k].pat;
    } else if (!strcmp(type, "Digits")) {
        pr->kind = TSR__PRE_DIGITS;
        pr->individual = tsr__jbool(p, "individual_digits", false);
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = tsr__jstr(p, "replacement");
        pr->kind = TSR__PRE_METASPACE;
        pr->repl = strdup(r ? r : "\xe2\x96\x81");
        pr->prepend = tsr__prepend_scheme(p);
        pr->split = tsr__jbool(p, "split", true);
    } else {
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: pre-tokenizer '%s' is not supported", path, type);
    }
    t->n_pre++;
    return TSR_OK;
}

static tsr_status tsr__parse_decoder(tsr_tokenizer *t, const cJSON *d, const char *path, bool *fused) {
    if (!d || cJSON_IsNull(d)) return TSR_OK;
    const char *type = tsr__jstr(d, "type");
    if (!type) return tsr_errorf(TSR_ERR_FORMAT, "%s: decoder without a type", path);
    t->has_decoder = true;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        const cJSON *it;
        cJSON_ArrayForEach(it, list) TSR_TRY(tsr__parse_decoder(t, it, path, fused));
        return TSR_OK;
    }
    if (t->n_dec >= TSR__MAX_STEPS) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: too many decoders", path);
    tsr__dec *dc = &t->dec[t->n_dec];
    memset(dc, 0, sizeof *dc);
    if (!strcmp(type, "ByteLevel")) {
        dc->kind = TSR__DEC_BYTELEVEL;
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(d, "pattern");
        const char *from = tsr__jstr(pat, "String"), *to = tsr__jstr(d, "content");
        if (!from || !to) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Replace decoder with a regex is not supported", path);
        dc->kind = TSR__DEC_REPLACE;
        dc->a = strdup(from);
        dc->b = strdup(to);
    } else if (!strcmp(type, "ByteFallback")) {
        dc->kind = TSR__DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        dc->kind = TSR__DEC_FUSE;
        *fused = true;
    } else if (!strcmp(type, "Strip")) {
        const char *c = tsr__jstr(d, "content");
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (cJSON_IsNumber(stop) && stop->valueint != 0)
            return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Strip decoder with stop > 0 is not supported", path);
        dc->kind = TSR__DEC_STRIP;
        int len;
        dc->strip_cp = c && *c ? tsr_utf8_next((const uint8_t *)c, strlen(c), &len) : ' ';
        dc->strip_left = cJSON_IsNumber(start) ? start->valueint : 0;
        dc->stream = *fused;
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = tsr__jstr(d, "replacement");
        dc->kind = TSR__DEC_METASPACE;
        dc->a = strdup(r ? r : "\xe2\x96\x81");
        dc->meta_strip = tsr__prepend_scheme(d) != TSR__PREPEND_NEVER;
    } else {
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: decoder '%s' is not supported", path, type);
    }
    t->n_dec++;
    return TSR_OK;
}

static tsr_status tsr__parse_post(tsr_tokenizer *t, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return TSR_OK;
    const char *type = tsr__jstr(p, "type");
    if (!type) return tsr_errorf(TSR_ERR_FORMAT, "%s: post_processor without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        const cJSON *it;
        cJSON_ArrayForEach(it, list) TSR_TRY(tsr__parse_post(t, it, path));
        return TSR_OK;
    }
    if (!strcmp(type, "ByteLevel")) return TSR_OK; /* offsets only */
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
        bool after = false;
        const cJSON *it;
        t->n_prefix = t->n_suffix = 0;
        cJSON_ArrayForEach(it, single) {
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) { after = true; continue; }
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            const char *name = tsr__jstr(sp, "id");
            if (!name) return tsr_errorf(TSR_ERR_FORMAT, "%s: TemplateProcessing item without a token", path);
            const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, name);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
            const cJSON *idv;
            if (!cJSON_IsArray(ids)) return tsr_errorf(TSR_ERR_FORMAT, "%s: template token '%s' has no ids", path, name);
            cJSON_ArrayForEach(idv, ids) {
                int32_t *dst = after ? t->suffix : t->prefix;
                int *nd = after ? &t->n_suffix : &t->n_prefix;
                if (*nd >= 8 || !cJSON_IsNumber(idv)) return tsr_errorf(TSR_ERR_FORMAT, "%s: bad template ids", path);
                dst[(*nd)++] = (int32_t)idv->valuedouble;
            }
        }
        return TSR_OK;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (cJSON_GetArraySize(cls) == 2 && cJSON_GetArraySize(sep) == 2) {
            t->prefix[0] = (int32_t)cJSON_GetArrayItem(cls, 1)->valuedouble;
            t->suffix[0] = (int32_t)cJSON_GetArrayItem(sep, 1)->valuedouble;
            t->n_prefix = t->n_suffix = 1;
            return TSR_OK;
        }
    }
    return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: post-processor '%s' is not supported", path, type);
}

/* The content of a token given either as a string or as {"content": ...}. */
static const char *tsr__token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    return tsr__jstr(v, "content");
}

static void tsr__apply_config(tsr_tokenizer *t, const char *dir) {
    char *path = tsr_path_join(dir, "tokenizer_config.json");
    char *txt = NULL;
    size_t len;
    if (path && tsr_read_file(path, 64u << 20, &txt, &len) == TSR_OK) {
        cJSON *c = cJSON_ParseWithLength(txt, len);
        if (c) {
            const char *bos = tsr__token_text(cJSON_GetObjectItemCaseSensitive(c, "bos_token"));
            const char *eos = tsr__token_text(cJSON_GetObjectItemCaseSensitive(c, "eos_token"));
            if (bos) t->bos = tsr_tokenizer_token_to_id(t, bos);
            if (eos) t->eos = tsr_tokenizer_token_to_id(t, eos);
            const cJSON *ct = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
            if (cJSON_IsString(ct)) {
                t->chat_template = strdup(ct->valuestring);
            } else if (cJSON_IsArray(ct)) {
                const cJSON *it;
                cJSON_ArrayForEach(it, ct) {
                    const char *name = tsr__jstr(it, "name"), *tmpl = tsr__jstr(it, "template");
                    if (tmpl && (!t->chat_template || (name && !strcmp(name, "default")))) {
                        free(t->chat_template);
                        t->chat_template = strdup(tmpl);
                    }
                }
            }
            cJSON_Delete(c);
        }
    }
    tsr_clear_error();
    free(txt);
    free(path);
    /* newer exports keep the template in its own file */
    if (!t->chat_template) {
        path = tsr_path_join(dir, "chat_template.jinja");
        if (path && tsr_read_file(path, 16u << 20, &txt, &len) == TSR_OK) t->chat_template = txt;
        tsr_clear_error();
        free(path);
    }
    if (t->bos < 0 || t->eos < 0) {
        path = tsr_path_join(dir, "config.json");
        txt = NULL;
        if (path && tsr_read_file(path, 16u << 20, &txt, &len) == TSR_OK) {
            cJSON *c = cJSON_ParseWithLength(txt, len);
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(c, "bos_token_id");
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "eos_token_id");
            if (t->bos < 0 && cJSON_IsNumber(b)) t->bos = (int32_t)b->valuedouble;
            if (t->eos < 0 && cJSON_IsNumber(e)) t->eos = (int32_t)e->valuedouble;
            if (t->eos < 0 && cJSON_IsArray(e) && cJSON_IsNumber(cJSON_GetArrayItem(e, 0)))
                t->eos = (int32_t)cJSON_GetArrayItem(e, 0)->valuedouble;
            cJSON_Delete(c);
        }
        tsr_clear_error();
        free(txt);
        free(path);
    }
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
}

/* Added-token content normalized as HF does for normalized=true tokens. */
static void tsr__normalize_added(tsr_tokenizer *t) {
    for (int i = 0; i < t->n_added; i++) {
        tsr__added *a = &t->added[i];
        if (!a->normalized || !t->n_norm) continue;
        size_t nn;
        bool owned, oom = false;
        const uint8_t *ns = tsr__normalize(t, (const uint8_t *)a->content, a->len, &nn, &owned, &oom);
        if (owned) {
            free(a->content);
            a->content = (char *)ns;
            a->len = (uint32_t)nn;
        }
    }
}

static tsr_status tsr__load_hf_json(tsr_tokenizer *t, cJSON *root, const char *path) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return tsr_errorf(TSR_ERR_FORMAT, "%s: no 'model' object", path);
    const char *type = tsr__jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE"))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported (BPE is)", path, type);
    if (!cJSON_IsObject(vocab) || (merges && !cJSON_IsArray(merges) && !cJSON_IsNull(merges)))
        return tsr_errorf(TSR_ERR_FORMAT, "%s: BPE model without a vocab object / merges array", path);
    const char *csp = tsr__jstr(model, "continuing_subword_prefix"), *ews = tsr__jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (ews && *ews))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: BPE with subword prefixes/suffixes is not supported", path);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", path);
    t->byte_fallback = tsr__jbool(model, "byte_fallback", false);
    t->ignore_merges = tsr__jbool(model, "ignore_merges", false);
    t->fuse_unk = tsr__jbool(model, "fuse_unk", false);

    /* sizes: ids of the vocab and of the added tokens */
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 16e6)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: vocab entry '%.40s' has a bad id", path, it->string);
        if ((int64_t)it->valuedouble > max_id) max_id = (int64_t)it->valuedouble;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int n_added = cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0;
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16e6 || !tsr__jstr(it, "content"))
            return tsr_errorf(TSR_ERR_FORMAT, "%s: added token without a valid id/content", path);
        if ((int64_t)id->valuedouble > max_id) max_id = (int64_t)id->valuedouble;
    }
    if (max_id < 0) return tsr_errorf(TSR_ERR_FORMAT, "%s: empty vocabulary", path);
    TSR_TRY(tsr__tok_alloc_vocab(t, max_id + 1));
    cJSON_ArrayForEach(it, vocab) {
        int64_t id = (int64_t)it->valuedouble;
        free(t->piece[id]);
        t->piece[id] = strdup(it->string);
        t->piece_len[id] = (uint32_t)strlen(it->string);
        if (!t->piece[id]) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    }
    t->added = calloc((size_t)n_added + 1, sizeof(tsr__added));
    if (!t->added) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
    cJSON_ArrayForEach(it, added) {
        tsr__added *a = &t->added[t->n_added++];
        const char *content = tsr__jstr(it, "content");
        a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        a->content = strdup(content);
        a->len = (uint32_t)strlen(content);
        a->special = tsr__jbool(it, "special", false);
        a->lstrip = tsr__jbool(it, "lstrip", false);
        a->rstrip = tsr__jbool(it, "rstrip", false);
        a->single_word = tsr__jbool(it, "single_word", false);
        a->normalized = tsr__jbool(it, "normalized", !a->special);
        if (!t->piece[a->id] || strcmp(t->piece[a->id], content)) {
            free(t->piece[a->id]);
            t->piece[a->id] = strdup(content);
            t->piece_len[a->id] = a->len;
            t->flags[a->id] |= TSR__F_NOTMODEL;
        }
        if (!a->content || !t->piece[a->id]) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        t->flags[a->id] |= TSR__F_ADDED | (a->special ? TSR__F_SPECIAL : 0);
    }
    TSR_TRY(tsr__parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path));
    TSR_TRY(tsr__parse_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path));
    bool fused = false;
    TSR_TRY(tsr__parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, &fused));
    TSR_TRY(tsr__parse_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), path));
    TSR_TRY(tsr__tok_index(t));
    const char *unk = tsr__jstr(model, "unk_token");
    if (unk) t->unk_id = tsr_tokenizer_token_to_id(t, unk);
    if (merges && cJSON_IsArray(merges)) {
        int n = cJSON_GetArraySize(merges);
        if (!tsr__mmap_init(&t->merges, n)) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        uint32_t rank = 0;
        cJSON_ArrayForEach(it, merges) {
            if (cJSON_IsString(it)) {
                const char *s = it->valuestring, *sp = strchr(s, ' ');
                if (!sp || strchr(sp + 1, ' '))
                    return tsr_errorf(TSR_ERR_FORMAT, "%s: merge %u ('%.40s') is not two tokens", path, rank, s);
                tsr__add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank);
            } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                       cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
                const char *a = cJSON_GetArrayItem(it, 0)->valuestring, *b = cJSON_GetArrayItem(it, 1)->valuestring;
                tsr__add_merge(t, a, strlen(a), b, strlen(b), rank);
            } else {
                return tsr_errorf(TSR_ERR_FORMAT, "%s: merge %u is neither \"a b\" nor [a, b]", path, rank);
            }
            rank++;
        }
    }
    tsr__normalize_added(t);
    return tsr__index_added(t);
}

tsr_status tsr_tokenizer_load_hf(const char *tokenizer_json_path, tsr_tokenizer **out) {
    *out = NULL;
    char *txt = NULL;
    size_t len;
    tsr_status st = tsr_read_file(tokenizer_json_path, 1u << 30, &txt, &len);
    if (st != TSR_OK) return tsr_error_wrap(st, "loading tokenizer %s", tokenizer_json_path);
    cJSON *root = cJSON_ParseWithLength(txt, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= txt && at <= txt + len ? (long)(at - txt) : -1;
        free(txt);
        return tsr_errorf(TSR_ERR_FORMAT, "%s: not valid JSON (error near byte %ld)", tokenizer_json_path, off);
    }
    free(txt);
    tsr_tokenizer *t = tsr__tok_new();
    if (!t) { cJSON_Delete(root); return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory"); }
    st = tsr__load_hf_json(t, root, tokenizer_json_path);
    cJSON_Delete(root);
    if (st != TSR_OK) { tsr_tokenizer_free(t); return st; }
    char *dir = strdup(tokenizer_json_path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
        tsr__apply_config(t, dir);
        free(dir);
    }
    *out = t;
    return TSR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* loading the tokenizer of a GGUF file (as transformers converts it, so ids agree with HF)   */

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
static tsr_status tsr__generate_merges(tsr_tokenizer *t, const double *scores, int64_t n) {
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

tsr_status tsr_tokenizer_load_model(const char *model_path, tsr_tokenizer **out) {
    *out = NULL;
    if (!model_path) return tsr_errorf(TSR_ERR_INVALID_ARG, "tokenizer: no model path");
    if (tsr_path_is_dir(model_path)) {
        char *p = tsr_path_join(model_path, "tokenizer.json");
        if (!p) return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory");
        if (!tsr_path_exists(p)) {
            /* a workspace converted from a GGUF keeps the tokenizer as metadata-only GGUF */
            char *g = tsr_path_join(model_path, "tokenizer.gguf");
            if (g && tsr_path_exists(g)) {
                free(p);
                tsr_status st = tsr_tokenizer_load_model(g, out);
                free(g);
                return st;
            }
            free(g);
            tsr_status st = tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no tokenizer.json (or tokenizer.gguf) in this model directory", model_path);
            free(p);
            return st;
        }
        tsr_status st = tsr_tokenizer_load_hf(p, out);
        free(p);
        return st;
    }
    if (!tsr_path_exists(model_path)) return tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no such file or directory", model_path);
    size_t n = strlen(model_path);
    if (n >= 5 && !strcmp(model_path + n - 5, ".json")) return tsr_tokenizer_load_hf(model_path, out);
    tsr_gguf *g = NULL;
    TSR_TRY(tsr_gguf_open(model_path, &g));
    tsr_status st = tsr_tokenizer_load_gguf(g, out);
    tsr_gguf_close(g);
    return st;
}
