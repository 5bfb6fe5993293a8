/* safetensors reader and writer (see safetensors.h).  A file is an 8-byte little-endian header
 * length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * optional "__metadata__": {str: str}}), then the data section the offsets are relative to.
 * Every shard is memory-mapped and its header validated completely (JSON shape, dtype x shape
 * == byte length, ranges inside the data section, no two tensors sharing bytes) before any
 * tensor is handed out, because checkpoints come from anywhere. */
#include "common/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"

#define TSR_ST_MAX_HEADER (100u << 20)      /* the header cap the reference implementation uses */
#define TSR_ST_MAX_INDEX (64u << 20)        /* model.safetensors.index.json */
#define TSR_ST_MAX_INT 9007199254740992.0   /* 2^53: JSON numbers past this are not exact */

typedef struct tsr__st_file {
    tsr_mmap map;
    bool mapped;
    char *path;
} tsr__st_file;

struct tsr_safetensors {
    tsr__st_file *files;
    int n_files;
    tsr_st_tensor *tensors;
    int64_t n_tensors, cap_tensors;
    char **meta;            /* key, value pairs of the first file's __metadata__ */
    int64_t n_meta;
    int64_t *hash;          /* open addressing over tensor names: index or -1 */
    uint64_t hash_cap;
};

static uint64_t tsr__st_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void tsr_safetensors_close(tsr_safetensors *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].mapped) tsr_mmap_close(&st->files[i].map);
        free(st->files[i].path);
    }
    free(st->files);
    for (int64_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    free(st->hash);
    free(st);
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool tsr__json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= TSR_ST_MAX_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

typedef struct {
    uint64_t begin, end;
    int64_t idx;
} tsr__st_range;

static int tsr__cmp_range(const void *a, const void *b) {
    const tsr__st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static tsr_status tsr__st_push(tsr_safetensors *st, const char *path) {
    if (st->n_tensors == st->cap_tensors) {
        int64_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        tsr_st_tensor *t = realloc(st->tensors, (size_t)cap * sizeof *t);
        if (!t) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
        st->tensors = t;
        st->cap_tensors = cap;
    }
    memset(&st->tensors[st->n_tensors], 0, sizeof st->tensors[0]);
    st->n_tensors++;
    return TSR_OK;
}

/* Parse and validate the header of files[fi] and append its tensors. */
static tsr_status tsr__st_parse(tsr_safetensors *st, int fi) {
    const tsr__st_file *f = &st->files[fi];
    const char *path = f->path;
    const uint8_t *p = f->map.data;
    const size_t size = f->map.size;
    if (size < 8)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: not a safetensors file (%zu bytes, shorter than the 8-byte header length)",
                          path, size);
    uint64_t hlen;
    memcpy(&hlen, p, 8);
    if (hlen > TSR_ST_MAX_HEADER)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: safetensors header length %llu is over the %u-byte cap (corrupt file?)",
                          path, (unsigned long long)hlen, TSR_ST_MAX_HEADER);
    if (hlen > size - 8)
        return tsr_errorf(TSR_ERR_FORMAT, "%s: truncated safetensors file: header of %llu bytes but the file has %zu",
                          path, (unsigned long long)hlen, size);
    if (hlen < 2 || p[8] != '{')
        return tsr_errorf(TSR_ERR_FORMAT, "%s: safetensors header is not a JSON object", path);
    const char *hdr = (const char *)p + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = end ? (size_t)(end - hdr) : (size_t)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - hdr : 0);
        cJSON_Delete(root);
        return tsr_errorf(TSR_ERR_FORMAT, "%s: safetensors header is not valid JSON (near header byte %zu)", path, at);
    }
    /* what follows the object may only be padding */
    for (const char *q = end; q && q < hdr + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            cJSON_Delete(root);
            return tsr_errorf(TSR_ERR_FORMAT, "%s: safetensors header has bytes after its JSON object", path);
        }
    }
    const uint64_t data_size = size - 8 - hlen;
    const uint8_t *data = p + 8 + hlen;
    const int64_t first = st->n_tensors;
    bool seen_meta = false;
    tsr_status rc = TSR_OK;
    for (cJSON *e = root->child; e; e = e->next) {
        const char *name = e->string;
        if (!name) continue;
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                rc = tsr_errorf(TSR_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto out;
            }
            if (seen_meta) {
                rc = tsr_errorf(TSR_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto out;
            }
            seen_meta = true;
            int64_t n = cJSON_GetArraySize(e);
            if (fi != 0) continue;
            st->meta = calloc((size_t)(2 * n + 1), sizeof *st->meta);
            if (!st->meta) { rc = tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path); goto out; }
            for (cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m) || !m->string) {
                    rc = tsr_errorf(TSR_ERR_FORMAT, "%s: __metadata__ value of '%.64s' is not a string", path,
                                    m->string ? m->string : "?");
                    goto out;
                }
                st->meta[2 * st->n_meta] = strdup(m->string);
                st->meta[2 * st->n_meta + 1] = strdup(m->valuestring);
                st->n_meta++;
                if (!st->meta[2 * st->n_meta - 2] || !st->meta[2 * st->n_meta - 1]) {
                    rc = tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
                    goto out;
                }
            }
            continue;
        }
        if (!cJSON_IsObject(e)) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: header entry '%.64s' is not an object", path, name);
            goto out;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo)) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' needs a string dtype, a shape array and data_offsets",
                            path, name);
            goto out;
        }
        int dt = tsr_dtype_from_name(jd->valuestring);
        if (dt < 0) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' has dtype '%.16s', which Tessera does not read", path,
                            name, jd->valuestring);
            goto out;
        }
        int nd = cJSON_GetArraySize(js);
        if (nd > TSR_MAX_DIMS) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' has %d dimensions (at most %d)", path, name, nd,
                            TSR_MAX_DIMS);
            goto out;
        }
        if (cJSON_GetArraySize(jo) != 2) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' data_offsets is not [begin, end]", path, name);
            goto out;
        }
        rc = tsr__st_push(st, path);
        if (rc != TSR_OK) goto out;
        tsr_st_tensor *t = &st->tensors[st->n_tensors - 1];
        t->name = strdup(name);
        if (!t->name) { rc = tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path); goto out; }
        t->dtype = (tsr_dtype)dt;
        t->n_dims = nd;
        t->file_index = fi;
        uint64_t numel = 1;
        int d = 0;
        for (const cJSON *x = js->child; x; x = x->next, d++) {
            uint64_t v;
            if (!tsr__json_uint(x, &v)) {
                rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' shape[%d] is not a non-negative integer", path, name, d);
                goto out;
            }
            if (v != 0 && numel > (1ull << 62) / v) {
                rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' shape overflows", path, name);
                goto out;
            }
            numel *= v;
            t->shape[d] = (int64_t)v;
        }
        uint64_t b, en;
        if (!tsr__json_uint(jo->child, &b) || !tsr__json_uint(jo->child->next, &en) || en < b) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' data_offsets are not integers begin <= end", path, name);
            goto out;
        }
        if (en > data_size) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' ends at data byte %llu, past the end of the data section (%llu bytes)",
                            path, name, (unsigned long long)en, (unsigned long long)data_size);
            goto out;
        }
        /* numel <= 2^62 here; capping it at 2^60 keeps numel x 8 from wrapping */
        const uint64_t want = numel <= (1ull << 60) ? numel * tsr_dtype_size((tsr_dtype)dt) : UINT64_MAX;
        if (want != en - b) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' is %s with %llu elements (%llu bytes) but its data_offsets span %llu bytes",
                            path, name, jd->valuestring, (unsigned long long)numel, (unsigned long long)want,
                            (unsigned long long)(en - b));
            goto out;
        }
        t->data = data + b;
        t->nbytes = (size_t)(en - b);
    }

    /* overlaps: sort this file's ranges */
    int64_t n = st->n_tensors - first;
    if (n > 1) {
        tsr__st_range *r = malloc((size_t)n * sizeof *r);
        if (!r) { rc = tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path); goto out; }
        for (int64_t i = 0; i < n; i++) {
            const tsr_st_tensor *t = &st->tensors[first + i];
            r[i].begin = (uint64_t)((const uint8_t *)t->data - data);
            r[i].end = r[i].begin + t->nbytes;
            r[i].idx = first + i;
        }
        qsort(r, (size_t)n, sizeof *r, tsr__cmp_range);
        for (int64_t i = 0; i + 1 < n; i++) {
            if (r[i].end > r[i + 1].begin && r[i].end > r[i].begin) {
                rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensors '%.64s' and '%.64s' overlap in the data section", path,
                                st->tensors[r[i].idx].name, st->tensors[r[i + 1].idx].name);
                break;
            }
        }
        free(r);
    }
out:
    cJSON_Delete(root);
    return rc;
}

static tsr_status tsr__st_add_file(tsr_safetensors *st, const char *path) {
    tsr__st_file *f = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *f);
    if (!f) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
    st->files = f;
    f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    st->n_files++;
    if (!f->path) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
    TSR_TRY(tsr_mmap_open(path, &f->map));
    f->mapped = true;
    return tsr__st_parse(st, st->n_files - 1);
}

/* Name lookup and the one-name-one-tensor rule across all shards. */
static tsr_status tsr__st_index(tsr_safetensors *st, const char *what) {
    uint64_t cap = 16;
    while (cap < (uint64_t)st->n_tensors * 2) cap <<= 1;
    st->hash = malloc(cap * sizeof *st->hash);
    if (!st->hash) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", what);
    st->hash_cap = cap;
    for (uint64_t i = 0; i < cap; i++) st->hash[i] = -1;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        uint64_t h = tsr__st_hash(name) & (cap - 1);
        for (; st->hash[h] >= 0; h = (h + 1) & (cap - 1)) {
            if (!strcmp(st->tensors[st->hash[h]].name, name))
                return tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' appears twice (in %s and %s)", what, name,
                                  st->files[st->tensors[st->hash[h]].file_index].path,
                                  st->files[st->tensors[i].file_index].path);
        }
        st->hash[h] = i;
    }
    return TSR_OK;
}

static char *tsr__dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static tsr_status tsr__st_open_index(tsr_safetensors *st, const char *index_path) {
    char *text = NULL;
    size_t len = 0;
    TSR_TRY(tsr_read_file(index_path, TSR_ST_MAX_INDEX, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return tsr_errorf(TSR_ERR_FORMAT, "%s: not a safetensors index (no weight_map object)", index_path);
    }
    char *dir = tsr__dirname(index_path);
    tsr_status rc = TSR_OK;
    if (!dir) { rc = tsr_errorf(TSR_ERR_OOM, "out of memory"); goto out; }
    /* open each distinct shard once, in order of first mention */
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->string) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: weight_map entry '%.64s' is not a file name", index_path,
                            e->string ? e->string : "?");
            goto out;
        }
        const char *fn = e->valuestring;
        if (!fn[0] || fn[0] == '/' || strstr(fn, "..")) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: weight_map names shard '%.128s', which is not a file beside the index",
                            index_path, fn);
            goto out;
        }
        char *sp = tsr_path_join(dir, fn);
        bool seen = false;
        for (int i = 0; i < st->n_files && !seen; i++) seen = !strcmp(st->files[i].path, sp);
        if (!seen) rc = tsr__st_add_file(st, sp);
        free(sp);
        if (rc != TSR_OK) goto out;
    }
    if (st->n_files == 0) {
        rc = tsr_errorf(TSR_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto out;
    }
    rc = tsr__st_index(st, index_path);
    if (rc != TSR_OK) goto out;
    /* every tensor the index promises must be in the shard it names */
    for (const cJSON *e = wm->child; e; e = e->next) {
        const tsr_st_tensor *t = tsr_safetensors_find(st, e->string);
        char *sp = tsr_path_join(dir, e->valuestring);
        bool ok = t && !strcmp(st->files[t->file_index].path, sp);
        free(sp);
        if (!ok) {
            rc = tsr_errorf(TSR_ERR_FORMAT, "%s: tensor '%.64s' is not in shard %s as the index says", index_path,
                            e->string, e->valuestring);
            goto out;
        }
    }
out:
    free(dir);
    cJSON_Delete(root);
    return rc;
}

static int tsr__cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A directory: its index, else model.safetensors, else every *.safetensors file in it. */
static tsr_status tsr__st_open_dir(tsr_safetensors *st, const char *dir) {
    char *p = tsr_path_join(dir, "model.safetensors.index.json");
    if (tsr_path_exists(p)) {
        tsr_status rc = tsr__st_open_index(st, p);
        free(p);
        return rc;
    }
    free(p);
    p = tsr_path_join(dir, "model.safetensors");
    if (tsr_path_exists(p)) {
        tsr_status rc = tsr__st_add_file(st, p);
        free(p);
        return rc == TSR_OK ? tsr__st_index(st, dir) : rc;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return tsr_errorf(TSR_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0;
    tsr_status rc = TSR_OK;
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) {
            char **nn = realloc(names, (size_t)(n + 1) * sizeof *names);
            if (!nn) { rc = tsr_errorf(TSR_ERR_OOM, "out of memory"); break; }
            names = nn;
            names[n++] = strdup(de->d_name);
        }
    }
    closedir(d);
    if (rc == TSR_OK && n == 0)
        rc = tsr_errorf(TSR_ERR_NOT_FOUND, "%s: no model.safetensors.index.json or *.safetensors file in this directory", dir);
    if (rc == TSR_OK) qsort(names, (size_t)n, sizeof *names, tsr__cmp_str);
    for (int i = 0; i < n && rc == TSR_OK; i++) {
        char *fp = tsr_path_join(dir, names[i]);
        rc = tsr__st_add_file(st, fp);
        free(fp);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc == TSR_OK ? tsr__st_index(st, dir) : rc;
}

tsr_status tsr_safetensors_open(const char *path, tsr_safetensors **out) {
    *out = NULL;
    tsr_safetensors *st = calloc(1, sizeof *st);
    if (!st) return tsr_errorf(TSR_ERR_OOM, "%s: out of memory", path);
    tsr_status rc;
    size_t l = strlen(path);
    if (tsr_path_is_dir(path)) rc = tsr__st_open_dir(st, path);
    else if (l >= 5 && !strcmp(path + l - 5, ".json")) rc = tsr__st_open_index(st, path);
    else {
        rc = tsr__st_add_file(st, path);
        if (rc == TSR_OK) rc = tsr__st_index(st, path);
    }
    if (rc != TSR_OK) {
        tsr_safetensors_close(st);
        return rc;
    }
    *out = st;
    return TSR_OK;
}

tsr_status tsr_safetensors_open_memory(const void *data, size_t size, const char *name, tsr_safetensors **out) {
    *out = NULL;
    tsr_safetensors *st = calloc(1, sizeof *st);
    if (!st) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    st->files = calloc(1, sizeof *st->files);
    if (!st->files) { free(st); return tsr_errorf(TSR_ERR_OOM, "out of memory"); }
    st->n_files = 1;
    st->files[0].path = strdup(name ? name : "<memory>");
    st->files[0].map.data = data;
    st->files[0].map.size = size;
    tsr_status rc = st->files[0].path ? tsr__st_parse(st, 0) : tsr_errorf(TSR_ERR_OOM, "out of memory");
    if (rc == TSR_OK) rc = tsr__st_index(st, st->files[0].path);
    if (rc != TSR_OK) {
        tsr_safetensors_close(st);
        return rc;
    }
    *out = st;
    return TSR_OK;
}

int64_t tsr_safetensors_count(const tsr_safetensors *st) { return st->n_tensors; }

const tsr_st_tensor *tsr_safetensors_at(const tsr_safetensors *st, int64_t i) {
    return i >= 0 && i < st->n_tensors ? &st->tensors[i] : NULL;
}

const tsr_st_tensor *tsr_safetensors_find(const tsr_safetensors *st, const char *name) {
    if (!st->hash) return NULL;
    for (uint64_t h = tsr__st_hash(name) & (st->hash_cap - 1); st->hash[h] >= 0; h = (h + 1) & (st->hash_cap - 1))
        if (!strcmp(st->tensors[st->hash[h]].name, name)) return &st->tensors[st->hash[h]];
    return NULL;
}

const char *tsr_safetensors_metadata(const tsr_safetensors *st, const char *key) {
    for (int64_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

int64_t tsr_safetensors_n_metadata(const tsr_safetensors *st) { return st->n_meta; }

bool tsr_safetensors_metadata_at(const tsr_safetensors *st, int64_t i, const char **key, const char **value) {
    if (i < 0 || i >= st->n_meta) return false;
    *key = st->meta[2 * i];
    *value = st->meta[2 * i + 1];
    return true;
}

int tsr_safetensors_n_files(const tsr_safetensors *st) { return st->n_files; }
const char *tsr_safetensors_file_path(const tsr_safetensors *st, int i) {
    return i >= 0 && i < st->n_files ? st->files[i].path : NULL;
}

/* ---- writer ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} tsr__sb;

static void tsr__sb_put(tsr__sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) { b->oom = true; return; }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void tsr__sb_str(tsr__sb *b, const char *s) { tsr__sb_put(b, s, strlen(s)); }

static void tsr__sb_json_str(tsr__sb *b, const char *s) {
    tsr__sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') { esc[0] = '\\'; esc[1] = (char)*p; tsr__sb_put(b, esc, 2); }
        else if (*p < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *p); tsr__sb_put(b, esc, 6); }
        else tsr__sb_put(b, (const char *)p, 1);
    }
    tsr__sb_put(b, "\"", 1);
}

tsr_status tsr_safetensors_write(const char *path, const tsr_st_write_tensor *tensors, int64_t n,
                                 const char *const *meta_kv) {
    tsr__sb h = {0};
    char num[64];
    tsr__sb_str(&h, "{");
    bool comma = false;
    if (meta_kv && meta_kv[0]) {
        tsr__sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; meta_kv[i]; i += 2) {
            if (!meta_kv[i + 1]) {
                free(h.buf);
                return tsr_errorf(TSR_ERR_INVALID_ARG, "%s: metadata key '%s' has no value", path, meta_kv[i]);
            }
            if (i) tsr__sb_str(&h, ",");
            tsr__sb_json_str(&h, meta_kv[i]);
            tsr__sb_str(&h, ":");
            tsr__sb_json_str(&h, meta_kv[i + 1]);
        }
        tsr__sb_str(&h, "}");
        comma = true;
    }
    uint64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const tsr_st_write_tensor *t = &tensors[i];
        size_t es = tsr_dtype_size(t->dtype);
        if (!t->name || !t->name[0] || !strcmp(t->name, "__metadata__") || es == 0 || t->n_dims < 0 ||
            t->n_dims > TSR_MAX_DIMS) {
            free(h.buf);
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s: tensor %lld ('%s') has a bad name, dtype or rank", path,
                              (long long)i, t->name ? t->name : "(null)");
        }
        uint64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++) {
            if (t->shape[d] < 0) {
                free(h.buf);
                return tsr_errorf(TSR_ERR_INVALID_ARG, "%s: tensor '%s' has a negative dimension", path, t->name);
            }
            ne *= (uint64_t)t->shape[d];
        }
        if (ne && !t->data) {
            free(h.buf);
            return tsr_errorf(TSR_ERR_INVALID_ARG, "%s: tensor '%s' has no data", path, t->name);
        }
        if (comma) tsr__sb_str(&h, ",");
        comma = true;
        tsr__sb_json_str(&h, t->name);
        tsr__sb_str(&h, ":{\"dtype\":\"");
        tsr__sb_str(&h, tsr_dtype_name(t->dtype));
        tsr__sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->n_dims; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            tsr__sb_str(&h, num);
        }
        uint64_t nb = ne * es;
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        tsr__sb_str(&h, num);
        off += nb;
    }
    tsr__sb_str(&h, "}");
    while (!h.oom && h.len % 8) tsr__sb_str(&h, " "); /* data section starts 8-byte aligned */
    if (h.oom) {
        free(h.buf);
        return tsr_errorf(TSR_ERR_OOM, "%s: out of memory building the header", path);
    }

    /* write beside the target and rename, so a failed write never leaves a half file */
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) { free(h.buf); return tsr_errorf(TSR_ERR_OOM, "out of memory"); }
    snprintf(tmp, pl + 16, "%s.tmp%d", path, (int)(getpid() % 100000));
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        tsr_status rc = tsr_errorf(TSR_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(h.buf);
        return rc;
    }
    uint64_t hl = h.len;
    bool ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(h.buf, 1, h.len, f) == h.len;
    for (int64_t i = 0; ok && i < n; i++) {
        const tsr_st_write_tensor *t = &tensors[i];
        uint64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++) ne *= (uint64_t)t->shape[d];
        size_t nb = (size_t)(ne * tsr_dtype_size(t->dtype));
        if (nb) ok = fwrite(t->data, 1, nb, f) == nb;
    }
    if (fclose(f) != 0) ok = false;
    free(h.buf);
    if (!ok || rename(tmp, path) != 0) {
        tsr_status rc = tsr_errorf(TSR_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return TSR_OK;
}
