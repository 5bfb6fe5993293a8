/* GGUF reader (see gguf.h).  The file is memory-mapped and parsed once at open: the metadata
 * and tensor directory are decoded into small arrays whose strings and numeric arrays point
 * into the map, so opening a model costs a walk over its header, not over its weights.
 * Every count, length and offset read from the file is checked against the bytes that remain
 * before it is used or multiplied, because the file is user input: a hostile file must end in
 * TSR_ERR_FORMAT naming the file and the problem, never in a crash or a huge allocation. */
#include "common/gguf.h"

#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"

#define TSR_GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define TSR_GGUF_DEFAULT_ALIGNMENT 32
#define TSR_GGUF_MAX_DIMS 4

struct tsr_gguf {
    tsr_mmap map;          /* data/size are also set for in-memory opens (map.path owned) */
    bool mapped;
    char *path;
    uint32_t version;
    int64_t n_kv;
    tsr_gguf_kv *kv;
    int64_t n_tensors;
    tsr_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t *tensor_hash;  /* open addressing: index into tensors, -1 empty */
    uint64_t tensor_hash_cap;
    int64_t *kv_hash;
    uint64_t kv_hash_cap;
};

/* ---- string hash set over (ptr, len) names ---- */

static uint64_t tsr__hash(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static bool tsr__str_eq(tsr_gguf_str a, const char *b, uint64_t blen) {
    return a.len == blen && memcmp(a.ptr, b, blen) == 0;
}

static int64_t *tsr__hash_new(int64_t n, uint64_t *cap) {
    uint64_t c = 16;
    while (c < (uint64_t)n * 2) c <<= 1;
    int64_t *h = malloc(c * sizeof *h);
    if (!h) return NULL;
    for (uint64_t i = 0; i < c; i++) h[i] = -1;
    *cap = c;
    return h;
}

/* ---- bounded reader over the map ---- */

typedef struct {
    const uint8_t *p;
    uint64_t size, pos;
    const char *path;
} tsr__rd;

static tsr_status tsr__need(tsr__rd *r, uint64_t n, const char *what) {
    if (n > r->size - r->pos)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: truncated GGUF: %s at byte %llu needs %llu bytes but the file has %llu",
                          r->path, what, (unsigned long long)r->pos, (unsigned long long)n,
                          (unsigned long long)r->size);
    return TSR_OK;
}

static tsr_status tsr__u32(tsr__rd *r, uint32_t *v, const char *what) {
    TSR_TRY(tsr__need(r, 4, what));
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return TSR_OK;
}

static tsr_status tsr__u64(tsr__rd *r, uint64_t *v, const char *what) {
    TSR_TRY(tsr__need(r, 8, what));
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return TSR_OK;
}

static tsr_status tsr__str(tsr__rd *r, tsr_gguf_str *s, const char *what) {
    uint64_t n;
    TSR_TRY(tsr__u64(r, &n, what));
    if (n > r->size - r->pos)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: %s at byte %llu has length %llu, past the end of the file (%llu bytes)",
                          r->path, what, (unsigned long long)(r->pos - 8), (unsigned long long)n,
                          (unsigned long long)r->size);
    s->ptr = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += n;
    return TSR_OK;
}

static size_t tsr__vtype_size(uint32_t t) {
    switch (t) {
    case TSR_GGUF_UINT8: case TSR_GGUF_INT8: case TSR_GGUF_BOOL: return 1;
    case TSR_GGUF_UINT16: case TSR_GGUF_INT16: return 2;
    case TSR_GGUF_UINT32: case TSR_GGUF_INT32: case TSR_GGUF_FLOAT32: return 4;
    case TSR_GGUF_UINT64: case TSR_GGUF_INT64: case TSR_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *tsr__vtype_name(uint32_t t) {
    static const char *names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                  "bool",  "string", "array", "uint64", "int64",  "float64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* A key for error messages: at most 64 bytes of it, non-printable bytes as '?'. */
static const char *tsr__printable(tsr_gguf_str s, char buf[72]) {
    uint64_t n = s.len < 64 ? s.len : 64;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[i] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    buf[n] = 0;
    if (s.len > 64) strcpy(buf + n, "...");
    return buf;
}

static void tsr__scalar(const uint8_t *p, uint32_t type, tsr_gguf_kv *kv) {
    switch (type) {
    case TSR_GGUF_UINT8: kv->v.u64 = p[0]; break;
    case TSR_GGUF_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case TSR_GGUF_BOOL: kv->v.b = p[0] != 0; break;
    case TSR_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u64 = x; break; }
    case TSR_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i64 = x; break; }
    case TSR_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u64 = x; break; }
    case TSR_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i64 = x; break; }
    case TSR_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f64 = x; break; }
    case TSR_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); kv->v.u64 = x; break; }
    case TSR_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); kv->v.i64 = x; break; }
    case TSR_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); kv->v.f64 = x; break; }
    default: break;
    }
}

static tsr_status tsr__read_kv(tsr__rd *r, tsr_gguf_kv *kv) {
    char kb[72];
    TSR_TRY(tsr__str(r, &kv->key, "metadata key"));
    uint32_t type;
    TSR_TRY(tsr__u32(r, &type, "metadata value type"));
    if (type > TSR_GGUF_FLOAT64)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata key '%s' has unknown value type %u", r->path,
                          tsr__printable(kv->key, kb), type);
    kv->type = (tsr_gguf_vtype)type;
    if (type == TSR_GGUF_STRING) return tsr__str(r, &kv->v.str, "metadata string value");
    if (type != TSR_GGUF_ARRAY) {
        size_t n = tsr__vtype_size(type);
        TSR_TRY(tsr__need(r, n, "metadata value"));
        tsr__scalar(r->p + r->pos, type, kv);
        r->pos += n;
        return TSR_OK;
    }
    uint32_t at;
    uint64_t n;
    TSR_TRY(tsr__u32(r, &at, "array element type"));
    TSR_TRY(tsr__u64(r, &n, "array length"));
    if (at > TSR_GGUF_FLOAT64 || at == TSR_GGUF_ARRAY)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata key '%s' is an array of %s, which GGUF readers do not accept",
                          r->path, tsr__printable(kv->key, kb), at == TSR_GGUF_ARRAY ? "arrays" : "an unknown type");
    kv->arr_type = (tsr_gguf_vtype)at;
    kv->arr_n = n;
    uint64_t left = r->size - r->pos;
    if (at == TSR_GGUF_STRING) {
        /* every string takes at least its 8-byte length: bound n before allocating */
        if (n > left / 8)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata key '%s' claims %llu strings, more than the %llu bytes left can hold (truncated or corrupt file)",
                              r->path, tsr__printable(kv->key, kb), (unsigned long long)n, (unsigned long long)left);
        kv->arr_str = malloc((n ? n : 1) * sizeof *kv->arr_str);
        if (!kv->arr_str) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory reading '%s'", r->path, tsr__printable(kv->key, kb));
        for (uint64_t i = 0; i < n; i++) TSR_TRY(tsr__str(r, &kv->arr_str[i], "array string"));
        return TSR_OK;
    }
    size_t es = tsr__vtype_size(at);
    if (n > left / es)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata key '%s' claims %llu %s elements, more than the %llu bytes left hold (truncated or corrupt file)",
                          r->path, tsr__printable(kv->key, kb), (unsigned long long)n, tsr__vtype_name(at),
                          (unsigned long long)left);
    kv->arr_data = r->p + r->pos;
    r->pos += n * es;
    return TSR_OK;
}

static tsr_status tsr__read_tensor_info(tsr__rd *r, tsr_gguf_tensor *t, int64_t idx) {
    char nb[72];
    TSR_TRY(tsr__str(r, &t->name, "tensor name"));
    if (memchr(t->name.ptr, 0, t->name.len)) /* names are looked up as C strings */
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor %lld's name '%s' contains a NUL byte", r->path, (long long)idx,
                          tsr__printable(t->name, nb));
    TSR_TRY(tsr__u32(r, &t->n_dims, "tensor n_dims"));
    if (t->n_dims < 1 || t->n_dims > TSR_GGUF_MAX_DIMS)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor %lld '%s' has n_dims %u (must be 1..%d)", r->path,
                          (long long)idx, tsr__printable(t->name, nb), t->n_dims, TSR_GGUF_MAX_DIMS);
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        TSR_TRY(tsr__u64(r, &ne, "tensor dimension"));
        if (ne > (uint64_t)INT64_MAX)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' dimension %u is %llu", r->path,
                              tsr__printable(t->name, nb), d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    TSR_TRY(tsr__u32(r, &type, "tensor type"));
    t->type = (tsr_ggml_type)type;
    TSR_TRY(tsr__u64(r, &t->offset, "tensor offset"));
    return TSR_OK;
}

/* Size checks that need the whole directory: element counts (overflow-checked), block
 * divisibility, alignment, range inside the data section. */
static tsr_status tsr__check_tensor(const tsr_gguf *g, tsr_gguf_tensor *t, uint64_t data_size) {
    char nb[72];
    const char *name = tsr__printable(t->name, nb);
    const int64_t bs = tsr_ggml_block_size(t->type);
    const size_t ts = tsr_ggml_type_size(t->type);
    if (bs == 0 && strcmp(tsr_ggml_type_name(t->type), "unknown"))
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' has ggml type %s (%u), which Tessera does not support",
                          g->path, name, tsr_ggml_type_name(t->type), (unsigned)t->type);
    if (bs == 0)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' has ggml type %u, which Tessera does not know", g->path,
                          name, (unsigned)t->type);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne = (uint64_t)t->ne[d];
        if (ne != 0 && numel > (uint64_t)INT64_MAX / ne)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' has too many elements (the shape overflows)", g->path, name);
        numel *= ne;
    }
    if (t->ne[0] % bs != 0)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' of type %s has rows of %lld elements, not a multiple of the block size %lld",
                          g->path, name, tsr_ggml_type_name(t->type), (long long)t->ne[0], (long long)bs);
    uint64_t nblocks = numel / (uint64_t)bs;
    if (nblocks > UINT64_MAX / ts)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' byte size overflows", g->path, name);
    uint64_t nbytes = nblocks * ts;
    if (t->offset % g->alignment != 0)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' offset %llu is not a multiple of the alignment %llu", g->path,
                          name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
    if (t->offset > data_size || nbytes > data_size - t->offset)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' (%llu bytes at data offset %llu) ends past the end of the file (data section is %llu bytes)",
                          g->path, name, (unsigned long long)nbytes, (unsigned long long)t->offset,
                          (unsigned long long)data_size);
    t->nbytes = (size_t)nbytes;
    t->data = g->map.data + g->data_offset + t->offset;
    return TSR_OK;
}

static int tsr__cmp_offset(const void *a, const void *b) {
    const tsr_gguf_tensor *x = *(const tsr_gguf_tensor *const *)a, *y = *(const tsr_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static tsr_status tsr__parse(tsr_gguf *g) {
    tsr__rd r = {g->map.data, g->map.size, 0, g->path};
    uint32_t magic;
    if (g->map.size < 4) return tsr_errorf(TSR_ERR_FORMAT, "%s: not a GGUF file (only %zu bytes)", g->path, g->map.size);
    TSR_TRY(tsr__u32(&r, &magic, "magic"));
    if (magic != TSR_GGUF_MAGIC) return tsr_errorf(TSR_ERR_FORMAT, "%s: not a GGUF file (bad magic)", g->path);
    TSR_TRY(tsr__u32(&r, &g->version, "version"));
    if (g->version == 1)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: GGUF version 1 is not supported (versions 2 and 3 are)", g->path);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0)
            return tsr_errorf(TSR_ERR_FORMAT, "%s: big-endian GGUF files are not supported", g->path);
        return tsr_errorf(TSR_ERR_FORMAT, "%s: unsupported GGUF version %u (versions 2 and 3 are read)", g->path,
                          g->version);
    }
    uint64_t n_tensors, n_kv;
    TSR_TRY(tsr__u64(&r, &n_tensors, "tensor count"));
    TSR_TRY(tsr__u64(&r, &n_kv, "metadata count"));
    /* a KV takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info at least
     * 8 + 4 + 8 + 4 + 8: bound the counts by what the file can hold before allocating */
    uint64_t left = r.size - r.pos;
    if (n_kv > left / 13)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata count %llu is more than a file of %llu bytes can hold (truncated or corrupt file)", g->path,
                          (unsigned long long)n_kv, (unsigned long long)r.size);
    if (n_tensors > left / 32)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor count %llu is more than a file of %llu bytes can hold (truncated or corrupt file)", g->path,
                          (unsigned long long)n_tensors, (unsigned long long)r.size);
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    g->kv_hash = tsr__hash_new((int64_t)n_kv, &g->kv_hash_cap);
    g->tensor_hash = tsr__hash_new((int64_t)n_tensors, &g->tensor_hash_cap);
    if (!g->kv || !g->tensors || !g->kv_hash || !g->tensor_hash)
        return tsr_errorf(TSR_ERR_OOM, "%s: out of memory for the GGUF directory", g->path);

    g->alignment = TSR_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        tsr_gguf_kv *kv = &g->kv[i];
        g->n_kv = (int64_t)i + 1; /* so close() frees what this one allocates */
        TSR_TRY(tsr__read_kv(&r, kv));
        uint64_t h = tsr__hash(kv->key.ptr, kv->key.len) & (g->kv_hash_cap - 1);
        for (; g->kv_hash[h] >= 0; h = (h + 1) & (g->kv_hash_cap - 1)) {
            if (tsr__str_eq(g->kv[g->kv_hash[h]].key, kv->key.ptr, kv->key.len)) {
                char kb[72];
                return tsr_errorf(TSR_ERR_FORMAT, "%s: metadata key '%s' appears twice", g->path, tsr__printable(kv->key, kb));
            }
        }
        g->kv_hash[h] = (int64_t)i;
        if (tsr__str_eq(kv->key, "general.alignment", 17)) {
            if (kv->type != TSR_GGUF_UINT32)
                return tsr_errorf(TSR_ERR_FORMAT, "%s: general.alignment must be a uint32, not %s", g->path,
                                  tsr__vtype_name(kv->type));
            if (kv->v.u64 == 0 || (kv->v.u64 & (kv->v.u64 - 1)) != 0)
                return tsr_errorf(TSR_ERR_FORMAT, "%s: general.alignment %llu is not a power of two", g->path,
                                  (unsigned long long)kv->v.u64);
            g->alignment = kv->v.u64;
        }
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        tsr_gguf_tensor *t = &g->tensors[i];
        g->n_tensors = (int64_t)i + 1;
        TSR_TRY(tsr__read_tensor_info(&r, t, (int64_t)i));
        t->cname = malloc(t->name.len + 1);
        if (!t->cname) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", g->path);
        memcpy(t->cname, t->name.ptr, t->name.len);
        t->cname[t->name.len] = 0;
        uint64_t h = tsr__hash(t->name.ptr, t->name.len) & (g->tensor_hash_cap - 1);
        for (; g->tensor_hash[h] >= 0; h = (h + 1) & (g->tensor_hash_cap - 1)) {
            if (tsr__str_eq(g->tensors[g->tensor_hash[h]].name, t->name.ptr, t->name.len)) {
                char nb[72];
                return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%s' appears twice", g->path, tsr__printable(t->name, nb));
            }
        }
        g->tensor_hash[h] = (int64_t)i;
    }

    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = r.pos + pad;
    if (n_tensors == 0) return TSR_OK;
    if (pad > r.size - r.pos)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: truncated GGUF: the data section would start at byte %llu, past the end (%llu bytes)",
                          g->path, (unsigned long long)g->data_offset, (unsigned long long)r.size);
    uint64_t data_size = r.size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) TSR_TRY(tsr__check_tensor(g, &g->tensors[i], data_size));

    /* no two tensors may share bytes: sort by offset and compare neighbours */
    tsr_gguf_tensor **order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", g->path);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, tsr__cmp_offset);
    for (int64_t i = 0; i + 1 < g->n_tensors; i++) {
        if (order[i]->nbytes > 0 && order[i]->offset + order[i]->nbytes > order[i + 1]->offset) {
            tsr_status st = tsr_errorf(TSR_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", g->path,
                                       order[i]->cname, order[i + 1]->cname);
            free(order);
            return st;
        }
    }
    free(order);
    return TSR_OK;
}

static tsr_status tsr__open_common(tsr_gguf *g, tsr_gguf **out) {
    tsr_status st = tsr__parse(g);
    if (st != TSR_OK) {
        tsr_gguf_close(g);
        return st;
    }
    *out = g;
    return TSR_OK;
}

tsr_status tsr_gguf_open(const char *path, tsr_gguf **out) {
    *out = NULL;
    tsr_gguf *g = calloc(1, sizeof *g);
    if (!g) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
    tsr_status st = tsr_mmap_open(path, &g->map);
    if (st != TSR_OK) {
        free(g);
        return st;
    }
    g->mapped = true;
    g->path = strdup(path);
    if (!g->path) {
        tsr_gguf_close(g);
        return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
    }
    return tsr__open_common(g, out);
}

tsr_status tsr_gguf_open_memory(const void *data, size_t size, const char *name, tsr_gguf **out) {
    *out = NULL;
    tsr_gguf *g = calloc(1, sizeof *g);
    if (!g) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", name);
    g->map.data = data;
    g->map.size = size;
    g->path = strdup(name ? name : "<memory>");
    if (!g->path) {
        free(g);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    return tsr__open_common(g, out);
}

void tsr_gguf_close(tsr_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_str);
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].cname);
    free(g->kv);
    free(g->tensors);
    free(g->kv_hash);
    free(g->tensor_hash);
    if (g->mapped) tsr_mmap_close(&g->map);
    free(g->path);
    free(g);
}

const char *tsr_gguf_path(const tsr_gguf *g) { return g->path; }
uint32_t tsr_gguf_version(const tsr_gguf *g) { return g->version; }
uint64_t tsr_gguf_alignment(const tsr_gguf *g) { return g->alignment; }
uint64_t tsr_gguf_data_offset(const tsr_gguf *g) { return g->data_offset; }
int64_t tsr_gguf_n_kv(const tsr_gguf *g) { return g->n_kv; }

const tsr_gguf_kv *tsr_gguf_kv_at(const tsr_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const tsr_gguf_kv *tsr_gguf_find(const tsr_gguf *g, const char *key) {
    uint64_t n = strlen(key);
    for (uint64_t h = tsr__hash(key, n) & (g->kv_hash_cap - 1); g->kv_hash[h] >= 0; h = (h + 1) & (g->kv_hash_cap - 1))
        if (tsr__str_eq(g->kv[g->kv_hash[h]].key, key, n)) return &g->kv[g->kv_hash[h]];
    return NULL;
}

static bool tsr__vtype_is_uint(tsr_gguf_vtype t) {
    return t == TSR_GGUF_UINT8 || t == TSR_GGUF_UINT16 || t == TSR_GGUF_UINT32 || t == TSR_GGUF_UINT64;
}
static bool tsr__vtype_is_sint(tsr_gguf_vtype t) {
    return t == TSR_GGUF_INT8 || t == TSR_GGUF_INT16 || t == TSR_GGUF_INT32 || t == TSR_GGUF_INT64;
}

bool tsr_gguf_get_i64(const tsr_gguf *g, const char *key, int64_t *out) {
    const tsr_gguf_kv *kv = tsr_gguf_find(g, key);
    if (!kv) return false;
    if (tsr__vtype_is_uint(kv->type)) {
        if (kv->v.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)kv->v.u64;
        return true;
    }
    if (tsr__vtype_is_sint(kv->type)) {
        *out = kv->v.i64;
        return true;
    }
    return false;
}

bool tsr_gguf_get_f64(const tsr_gguf *g, const char *key, double *out) {
    const tsr_gguf_kv *kv = tsr_gguf_find(g, key);
    if (!kv) return false;
    if (kv->type == TSR_GGUF_FLOAT32 || kv->type == TSR_GGUF_FLOAT64) *out = kv->v.f64;
    else if (tsr__vtype_is_uint(kv->type)) *out = (double)kv->v.u64;
    else if (tsr__vtype_is_sint(kv->type)) *out = (double)kv->v.i64;
    else return false;
    return true;
}

bool tsr_gguf_get_bool(const tsr_gguf *g, const char *key, bool *out) {
    const tsr_gguf_kv *kv = tsr_gguf_find(g, key);
    if (!kv || kv->type != TSR_GGUF_BOOL) return false;
    *out = kv->v.b;
    return true;
}

char *tsr_gguf_get_str(const tsr_gguf *g, const char *key) {
    const tsr_gguf_kv *kv = tsr_gguf_find(g, key);
    if (!kv || kv->type != TSR_GGUF_STRING) return NULL;
    char *s = malloc(kv->v.str.len + 1);
    if (!s) return NULL;
    memcpy(s, kv->v.str.ptr, kv->v.str.len);
    s[kv->v.str.len] = 0;
    return s;
}

bool tsr_gguf_arr_get_i64(const tsr_gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || kv->type != TSR_GGUF_ARRAY || i >= kv->arr_n) return false;
    size_t es = tsr__vtype_size(kv->arr_type);
    if (es == 0 || kv->arr_type == TSR_GGUF_FLOAT32 || kv->arr_type == TSR_GGUF_FLOAT64) return false;
    tsr_gguf_kv tmp;
    memset(&tmp, 0, sizeof tmp);
    tsr__scalar((const uint8_t *)kv->arr_data + i * es, kv->arr_type, &tmp);
    if (kv->arr_type == TSR_GGUF_BOOL) *out = tmp.v.b;
    else if (tsr__vtype_is_uint(kv->arr_type)) {
        if (tmp.v.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)tmp.v.u64;
    } else *out = tmp.v.i64;
    return true;
}

bool tsr_gguf_arr_get_f64(const tsr_gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != TSR_GGUF_ARRAY || i >= kv->arr_n) return false;
    if (kv->arr_type == TSR_GGUF_FLOAT32 || kv->arr_type == TSR_GGUF_FLOAT64) {
        tsr_gguf_kv tmp;
        tsr__scalar((const uint8_t *)kv->arr_data + i * tsr__vtype_size(kv->arr_type), kv->arr_type, &tmp);
        *out = tmp.v.f64;
        return true;
    }
    int64_t v;
    if (!tsr_gguf_arr_get_i64(kv, i, &v)) return false;
    *out = (double)v;
    return true;
}

const char *tsr_gguf_vtype_name(tsr_gguf_vtype t) { return tsr__vtype_name((uint32_t)t); }

int64_t tsr_gguf_n_tensors(const tsr_gguf *g) { return g->n_tensors; }

const tsr_gguf_tensor *tsr_gguf_tensor_at(const tsr_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const tsr_gguf_tensor *tsr_gguf_find_tensor(const tsr_gguf *g, const char *name) {
    uint64_t n = strlen(name);
    for (uint64_t h = tsr__hash(name, n) & (g->tensor_hash_cap - 1); g->tensor_hash[h] >= 0;
         h = (h + 1) & (g->tensor_hash_cap - 1))
        if (tsr__str_eq(g->tensors[g->tensor_hash[h]].name, name, n)) return &g->tensors[g->tensor_hash[h]];
    return NULL;
}

int64_t tsr_gguf_tensor_numel(const tsr_gguf_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

tsr_status tsr_gguf_tensor_to_f32(const tsr_gguf_tensor *t, float *dst) {
    tsr_status st = tsr_ggml_dequantize(t->type, t->data, dst, tsr_gguf_tensor_numel(t));
    if (st != TSR_OK) return tsr_error_wrap(st, "tensor '%s'", t->cname);
    return TSR_OK;
}

tsr_status tsr_gguf_tensor_rows_to_f32(const tsr_gguf_tensor *t, int64_t row0, int64_t nrows, float *dst) {
    for (uint32_t d = 2; d < t->n_dims; d++)
        if (t->ne[d] != 1)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s' is not 2-D (ne[%u] = %lld)", t->cname, d,
                              (long long)t->ne[d]);
    const int64_t rows = t->n_dims >= 2 ? t->ne[1] : 1;
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor '%s': rows [%lld, %lld) are outside its %lld rows", t->cname,
                          (long long)row0, (long long)(row0 + nrows), (long long)rows);
    const int64_t bs = tsr_ggml_block_size(t->type);
    const size_t row_bytes = (size_t)(t->ne[0] / bs) * tsr_ggml_type_size(t->type);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * row_bytes;
    tsr_status st = tsr_ggml_dequantize(t->type, src, dst, nrows * t->ne[0]);
    if (st != TSR_OK) return tsr_error_wrap(st, "tensor '%s'", t->cname);
    return TSR_OK;
}
