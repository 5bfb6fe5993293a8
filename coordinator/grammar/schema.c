/* JSON schema -> the grammar's node graph (internal.h).  One pass compiles the schema into
 * nodes ($refs through an indirection node reserved before its target is compiled, so recursive
 * schemas close on themselves), a second resolves every alternative node into a table from first
 * byte to concrete node; two alternatives that can start with the same byte are refused, since
 * the matcher follows one path (a deterministic pushdown automaton, no backtracking). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/grammar/internal.h"

#define TSR__G_MAX_NODES 8192
#define TSR__G_MAX_NEST 64

typedef struct {
    tsr_grammar *g;
    const cJSON *root;
    char **ref_names;
    int32_t *ref_nodes;
    int n_refs;
    int nest;
} tsr__gc;

static void tsr__node_free(tsr__g_node *n) {
    free(n->alts);
    free(n->by_byte);
    for (int32_t i = 0; i < n->n_lits; i++) free(n->lits[i]);
    free(n->lits);
    free(n->lens);
    free(n->map);
    for (int32_t i = 0; i < n->n_props; i++) free(n->prop_names[i]);
    free(n->prop_names);
    free(n->prop_value);
    free(n->prop_required);
    free(n->next_required);
    free(n->key_lit);
    free(n->tag_values);
}

void tsr_grammar_free(tsr_grammar *g) {
    if (!g) return;
    for (int32_t i = 0; i < g->n_nodes; i++) tsr__node_free(&g->nodes[i]);
    free(g->nodes);
    free(g);
}

/* A new node's id (-1: out of memory or too many; the error is set).  Ids stay valid, pointers
 * into g->nodes do not survive the next call. */
static int32_t tsr__new_node(tsr_grammar *g, tsr__g_kind kind) {
    if (g->n_nodes >= TSR__G_MAX_NODES) {
        tsr_errorf(TSR_ERR_INVALID_ARG, "the JSON schema is too large (more than %d grammar nodes)", TSR__G_MAX_NODES);
        return -1;
    }
    if (g->n_nodes == g->cap_nodes) {
        int32_t cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        tsr__g_node *p = realloc(g->nodes, sizeof *p * (size_t)cap);
        if (!p) {
            tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
            return -1;
        }
        g->nodes = p;
        g->cap_nodes = cap;
    }
    tsr__g_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->max_len = -1;
    n->max_items = -1;
    n->additional = -1;
    n->items = -1;
    n->root = -1;
    return g->n_nodes++;
}

static int tsr__lit_cmp(const char *a, uint32_t an, const char *b, uint32_t bn) {
    uint32_t n = an < bn ? an : bn;
    int c = memcmp(a, b, n);
    return c ? c : (an < bn ? -1 : an > bn);
}

/* A literal set from n strings (copied; sorted, duplicates dropped, the first index kept). */
static int32_t tsr__new_lit(tsr_grammar *g, const char *const *s, const uint32_t *lens, int32_t n) {
    int32_t id = tsr__new_node(g, TSR__G_LIT);
    if (id < 0) return -1;
    tsr__g_node *nd = &g->nodes[id];
    nd->lits = calloc((size_t)n, sizeof *nd->lits);
    nd->lens = calloc((size_t)n, sizeof *nd->lens);
    nd->map = calloc((size_t)n, sizeof *nd->map);
    if (!nd->lits || !nd->lens || !nd->map) goto oom;
    for (int32_t i = 0; i < n; i++) {
        /* insertion sort: sets are small (enums, one object's keys) */
        int32_t k = nd->n_lits, dup = 0;
        for (int32_t j = 0; j < nd->n_lits; j++) {
            int c = tsr__lit_cmp(s[i], lens[i], nd->lits[j], nd->lens[j]);
            if (c == 0) dup = 1;
            if (c <= 0) {
                k = j;
                break;
            }
        }
        if (dup) continue;
        char *cp = malloc(lens[i] + 1);
        if (!cp) goto oom;
        memcpy(cp, s[i], lens[i]);
        cp[lens[i]] = 0;
        memmove(nd->lits + k + 1, nd->lits + k, sizeof *nd->lits * (size_t)(nd->n_lits - k));
        memmove(nd->lens + k + 1, nd->lens + k, sizeof *nd->lens * (size_t)(nd->n_lits - k));
        memmove(nd->map + k + 1, nd->map + k, sizeof *nd->map * (size_t)(nd->n_lits - k));
        nd->lits[k] = cp;
        nd->lens[k] = lens[i];
        nd->map[k] = i;
        nd->n_lits++;
    }
    return id;
oom:
    tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
    return -1;
}

/* A literal set of JSON values, each as cJSON prints it unformatted. */
static int32_t tsr__lit_values(tsr_grammar *g, const cJSON *const *vals, int32_t n) {
    char **s = calloc((size_t)n + 1, sizeof *s);
    uint32_t *l = calloc((size_t)n + 1, sizeof *l);
    int32_t id = -1;
    if (!s || !l) {
        tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
        goto done;
    }
    for (int32_t i = 0; i < n; i++) {
        s[i] = cJSON_PrintUnformatted(vals[i]);
        if (!s[i]) {
            tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
            goto done;
        }
        l[i] = (uint32_t)strlen(s[i]);
    }
    id = tsr__new_lit(g, (const char *const *)s, l, n);
done:
    if (s)
        for (int32_t i = 0; i < n; i++) free(s[i]);
    free(s);
    free(l);
    return id;
}

static int32_t tsr__lit_words(tsr_grammar *g, const char *a, const char *b, const char *c) {
    const char *s[3] = {a, b, c};
    uint32_t l[3];
    int32_t n = 0;
    for (; n < 3 && s[n]; n++) l[n] = (uint32_t)strlen(s[n]);
    return tsr__new_lit(g, s, l, n);
}

static int32_t tsr__new_alt(tsr_grammar *g, const int32_t *alts, int n) {
    int32_t id = tsr__new_node(g, TSR__G_ALT);
    if (id < 0) return -1;
    tsr__g_node *nd = &g->nodes[id];
    nd->alts = malloc(sizeof *nd->alts * (size_t)(n > 0 ? n : 1));
    if (!nd->alts) {
        tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
        return -1;
    }
    memcpy(nd->alts, alts, sizeof *alts * (size_t)n);
    nd->n_alts = n;
    return id;
}

static int32_t tsr__string_node(tsr_grammar *g) {
    if (g->key_string < 0) g->key_string = tsr__new_node(g, TSR__G_STRING);
    return g->key_string;
}

/* Any JSON value: {object of any values, array of any, string, number, true/false/null}. */
static int32_t tsr__any(tsr_grammar *g) {
    if (g->any >= 0) return g->any;
    int32_t any = tsr__new_alt(g, (int32_t[5]){0}, 5);
    if (any < 0) return -1;
    g->any = any;
    int32_t obj = tsr__new_node(g, TSR__G_OBJECT), arr = tsr__new_node(g, TSR__G_ARRAY);
    int32_t str = tsr__string_node(g), num = tsr__new_node(g, TSR__G_NUMBER);
    int32_t lit = tsr__lit_words(g, "true", "false", "null");
    if (obj < 0 || arr < 0 || str < 0 || num < 0 || lit < 0) return -1;
    g->nodes[obj].additional = any;
    g->nodes[arr].items = any;
    int32_t *a = g->nodes[any].alts;
    a[0] = obj, a[1] = arr, a[2] = str, a[3] = num, a[4] = lit;
    return any;
}

static const char *const tsr__annotations[] = {"title", "description", "default", "examples", "$schema", "$id",
                                               "$comment", "deprecated", "readOnly", "writeOnly", "$defs",
                                               "definitions", NULL};
static const char *const tsr__supported[] = {"type", "properties", "required", "additionalProperties", "enum",
                                             "const", "items", "minItems", "maxItems", "minLength", "maxLength",
                                             "anyOf", "oneOf", "allOf", "$ref", NULL};

static bool tsr__in(const char *k, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(k, list[i])) return true;
    return false;
}

static int32_t tsr__compile(tsr__gc *c, const cJSON *s);

static bool tsr__get_count(const cJSON *s, const char *name, int64_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, name);
    if (!x) return true;
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e9 || x->valuedouble != (double)(int64_t)x->valuedouble) {
        tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword '%s' must be a non-negative integer", name);
        return false;
    }
    *v = (int64_t)x->valuedouble;
    return true;
}

static int32_t tsr__object(tsr__gc *c, const cJSON *s) {
    tsr_grammar *g = c->g;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword 'properties' must be an object"), -1;
    if (req && !cJSON_IsArray(req)) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword 'required' must be an array"), -1;
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword 'additionalProperties' must be a boolean or a schema"), -1;
    int32_t n = props ? cJSON_GetArraySize(props) : 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, req) {
        if (!cJSON_IsString(r)) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema 'required' must list strings"), -1;
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
            return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: required property '%.64s' is not in 'properties'",
                              r->valuestring), -1;
    }
    int32_t id = tsr__new_node(g, TSR__G_OBJECT);
    if (id < 0) return -1;
    if (n == 0) {
        if (cJSON_IsFalse(addl)) return id;                  /* {} only */
        int32_t v = cJSON_IsObject(addl) ? tsr__compile(c, addl) : tsr__any(g);
        if (v < 0 || tsr__string_node(g) < 0) return -1;   /* the keys */
        g->nodes[id].additional = v;
        return id;
    }
    /* listed properties only (extras are never generated: the output still validates) */
    char **names = calloc((size_t)n, sizeof *names);
    int32_t *vals = calloc((size_t)n, sizeof *vals), *next = calloc((size_t)n + 1, sizeof *next);
    int32_t *keys = calloc((size_t)n, sizeof *keys);
    bool *reqd = calloc((size_t)n, sizeof *reqd);
    tsr__g_node *nd = &g->nodes[id];
    nd->prop_names = names, nd->prop_value = vals, nd->next_required = next, nd->key_lit = keys;
    nd->prop_required = reqd;
    if (!names || !vals || !next || !keys || !reqd) return tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema"), -1;
    nd->n_props = n;
    int32_t i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props) {
        cJSON *ks = cJSON_CreateString(p->string);
        names[i] = ks ? cJSON_PrintUnformatted(ks) : NULL;   /* the key as JSON, quotes included */
        cJSON_Delete(ks);
        if (!names[i]) return tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema"), -1;
        cJSON_ArrayForEach(r, req)
            if (!strcmp(r->valuestring, p->string)) reqd[i] = true;
        int32_t v = tsr__compile(c, p);
        if (v < 0) return -1;
        g->nodes[id].prop_value[i] = v;
        i++;
    }
    next[n] = n;
    for (int32_t k = n - 1; k >= 0; k--) next[k] = reqd[k] ? k : next[k + 1];
    /* the keys that may come at position k: k .. the next required one */
    for (int32_t k = 0; k < n; k++) {
        int32_t last = next[k] < n ? next[k] : n - 1;
        uint32_t lens[last - k + 1];
        const char *ss[last - k + 1];
        for (int32_t j = k; j <= last; j++) {
            ss[j - k] = g->nodes[id].prop_names[j];
            lens[j - k] = (uint32_t)strlen(ss[j - k]);
        }
        int32_t kl = tsr__new_lit(g, ss, lens, last - k + 1);
        if (kl < 0) return -1;
        for (int32_t j = 0; j < g->nodes[kl].n_lits; j++) g->nodes[kl].map[j] += k;   /* -> property index */
        g->nodes[id].key_lit[k] = kl;
    }
    return id;
}

static int32_t tsr__typed(tsr__gc *c, const cJSON *s, const char *t) {
    tsr_grammar *g = c->g;
    if (!strcmp(t, "object")) return tsr__object(c, s);
    if (!strcmp(t, "array")) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int64_t mn = 0, mx = -1;
        if (!tsr__get_count(s, "minItems", &mn) || !tsr__get_count(s, "maxItems", &mx)) return -1;
        if (mx >= 0 && mn > mx) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: minItems %lld exceeds maxItems %lld", (long long)mn, (long long)mx), -1;
        if (items && !cJSON_IsObject(items) && !cJSON_IsTrue(items))
            return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword 'items' must be a schema (tuple forms are not supported)"), -1;
        int32_t it = items && cJSON_IsObject(items) ? tsr__compile(c, items) : tsr__any(g);
        if (it < 0) return -1;
        int32_t id = tsr__new_node(g, TSR__G_ARRAY);
        if (id < 0) return -1;
        g->nodes[id].items = it;
        g->nodes[id].min_items = mn;
        g->nodes[id].max_items = mx;
        return id;
    }
    if (!strcmp(t, "string")) {
        int64_t mn = 0, mx = -1;
        if (!tsr__get_count(s, "minLength", &mn) || !tsr__get_count(s, "maxLength", &mx)) return -1;
        if (mx >= 0 && mn > mx) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: minLength %lld exceeds maxLength %lld", (long long)mn, (long long)mx), -1;
        if (mn == 0 && mx < 0) return tsr__string_node(g);
        int32_t id = tsr__new_node(g, TSR__G_STRING);
        if (id < 0) return -1;
        g->nodes[id].min_len = mn;
        g->nodes[id].max_len = mx;
        return id;
    }
    if (!strcmp(t, "number") || !strcmp(t, "integer")) {
        int32_t id = tsr__new_node(g, TSR__G_NUMBER);
        if (id >= 0) g->nodes[id].integer = t[1] == 'n';
        return id;
    }
    if (!strcmp(t, "boolean")) return tsr__lit_words(g, "true", "false", NULL);
    if (!strcmp(t, "null")) return tsr__lit_words(g, "null", NULL, NULL);
    return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: unknown type '%.32s'", t), -1;
}

/* A JSON pointer into the root ("#", "#/$defs/Name", with ~0 and ~1 escapes). */
static const cJSON *tsr__pointer(const cJSON *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *cur = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~' && (p[1] == '0' || p[1] == '1')) ch = *++p == '0' ? '~' : '/';
            if (n + 1 >= sizeof tok) return NULL;
            tok[n++] = ch;
        }
        tok[n] = 0;
        if (!cJSON_IsObject(cur)) return NULL;
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        if (!cur) return NULL;
    }
    return *p ? NULL : cur;
}

static int32_t tsr__ref(tsr__gc *c, const char *ref) {
    for (int i = 0; i < c->n_refs; i++)
        if (!strcmp(c->ref_names[i], ref)) return c->ref_nodes[i];
    const cJSON *t = tsr__pointer(c->root, ref);
    if (!t) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: '$ref' '%.128s' does not resolve (only local "
                              "references such as #/$defs/Name are supported)", ref), -1;
    char **rn = realloc(c->ref_names, sizeof *rn * (size_t)(c->n_refs + 1));
    if (rn) c->ref_names = rn;
    int32_t *rd = realloc(c->ref_nodes, sizeof *rd * (size_t)(c->n_refs + 1));
    if (rd) c->ref_nodes = rd;
    char *name = strdup(ref);
    if (!rn || !rd || !name) {
        free(name);
        return tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema"), -1;
    }
    /* an indirection reserved first, so that a schema referring to itself finds it */
    int32_t ind = tsr__new_alt(c->g, (int32_t[1]){-1}, 1);
    if (ind < 0) {
        free(name);
        return -1;
    }
    c->ref_names[c->n_refs] = name;
    c->ref_nodes[c->n_refs++] = ind;
    int32_t target = tsr__compile(c, t);
    if (target < 0) return -1;
    c->g->nodes[ind].alts[0] = target;
    return ind;
}

static int32_t tsr__compile_inner(tsr__gc *c, const cJSON *s) {
    tsr_grammar *g = c->g;
    if (cJSON_IsTrue(s)) return tsr__any(g);
    if (!cJSON_IsObject(s)) return tsr_errorf(TSR_ERR_INVALID_ARG, "a JSON schema must be an object or true"), -1;
    const cJSON *k;
    int n_constraints = 0;
    cJSON_ArrayForEach(k, s) {
        if (tsr__in(k->string, tsr__annotations)) continue;
        if (!tsr__in(k->string, tsr__supported))
            return tsr_errorf(TSR_ERR_INVALID_ARG, "unsupported JSON schema keyword '%.64s'", k->string), -1;
        n_constraints++;
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const char *any_name = "anyOf";
    if (!any) any = cJSON_GetObjectItemCaseSensitive(s, "oneOf"), any_name = "oneOf";
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    if (ref || any || all) {
        const char *which = ref ? "$ref" : any ? any_name : "allOf";
        if (n_constraints > 1)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword '%s' together with other constraints is not supported", which), -1;
        if (ref) {
            if (!cJSON_IsString(ref)) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema '$ref' must be a string"), -1;
            return tsr__ref(c, ref->valuestring);
        }
        if (all) {
            if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1)
                return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema keyword 'allOf' is supported with one schema only"), -1;
            return tsr__compile(c, all->child);
        }
        int n = cJSON_IsArray(any) ? cJSON_GetArraySize(any) : 0;
        if (n == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema '%s' must be a non-empty array", any_name), -1;
        int32_t alts[n];
        int m = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, any) {
            int32_t x = tsr__compile(c, a);
            if (x < 0) return -1;
            alts[m++] = x;
        }
        return m == 1 ? alts[0] : tsr__new_alt(g, alts, m);
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (en) {
        int n = cJSON_IsArray(en) ? cJSON_GetArraySize(en) : 0;
        if (n == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema 'enum' must be a non-empty array"), -1;
        const cJSON *vals[n];
        int i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, en) vals[i++] = v;
        return tsr__lit_values(g, vals, n);
    }
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (cn) return tsr__lit_values(g, &cn, 1);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(ty)) return tsr__typed(c, s, ty->valuestring);
    if (cJSON_IsArray(ty)) {
        int n = cJSON_GetArraySize(ty);
        if (n == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema 'type' must not be an empty list"), -1;
        int32_t alts[n];
        int m = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, ty) {
            if (!cJSON_IsString(t)) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema 'type' must list strings"), -1;
            int32_t x = tsr__typed(c, s, t->valuestring);
            if (x < 0) return -1;
            alts[m++] = x;
        }
        return m == 1 ? alts[0] : tsr__new_alt(g, alts, m);
    }
    if (ty) return tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema 'type' must be a string or a list of strings"), -1;
    /* no type: what the keywords imply, else any value */
    if (cJSON_GetObjectItemCaseSensitive(s, "properties") || cJSON_GetObjectItemCaseSensitive(s, "required") ||
        cJSON_GetObjectItemCaseSensitive(s, "additionalProperties"))
        return tsr__typed(c, s, "object");
    if (cJSON_GetObjectItemCaseSensitive(s, "items") || cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxItems"))
        return tsr__typed(c, s, "array");
    if (cJSON_GetObjectItemCaseSensitive(s, "minLength") || cJSON_GetObjectItemCaseSensitive(s, "maxLength"))
        return tsr__typed(c, s, "string");
    return tsr__any(g);
}

static int32_t tsr__compile(tsr__gc *c, const cJSON *s) {
    if (++c->nest > TSR__G_MAX_NEST) {
        c->nest--;
        return tsr_errorf(TSR_ERR_INVALID_ARG, "the JSON schema nests deeper than %d", TSR__G_MAX_NEST), -1;
    }
    int32_t id = tsr__compile_inner(c, s);
    c->nest--;
    return id;
}

/* Fills an alternative node's first-byte table (alternatives that are alternatives themselves
 * are flattened); two alternatives starting with one byte are refused. */
static bool tsr__resolve(tsr_grammar *g, int32_t id) {
    tsr__g_node *nd = &g->nodes[id];
    if (nd->by_byte) return true;
    if (nd->resolving) {
        tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: a reference or anyOf that refers to itself before any "
                   "object or array is not supported");
        return false;
    }
    nd->resolving = true;
    int32_t *tab = malloc(256 * sizeof *tab);
    if (!tab) {
        tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
        return false;
    }
    for (int b = 0; b < 256; b++) tab[b] = -1;
    bool ok = true;
    for (int i = 0; ok && i < g->nodes[id].n_alts; i++) {
        int32_t a = g->nodes[id].alts[i];
        bool first[256] = {false};
        tsr__g_node *an = &g->nodes[a];
        int32_t target[256];
        for (int b = 0; b < 256; b++) target[b] = a;
        switch (an->kind) {
        case TSR__G_ALT:
            if (!tsr__resolve(g, a)) {
                ok = false;
                break;
            }
            an = &g->nodes[a];
            for (int b = 0; b < 256; b++)
                if (an->by_byte[b] >= 0) first[b] = true, target[b] = an->by_byte[b];
            break;
        case TSR__G_LIT:
            for (int32_t k = 0; k < an->n_lits; k++) first[(uint8_t)an->lits[k][0]] = true;
            break;
        case TSR__G_STRING: first['"'] = true; break;
        case TSR__G_NUMBER:
            first['-'] = true;
            for (int b = '0'; b <= '9'; b++) first[b] = true;
            break;
        case TSR__G_OBJECT: first['{'] = true; break;
        case TSR__G_ARRAY: first['['] = true; break;
        default: break;
        }
        for (int b = 0; ok && b < 256; b++) {
            if (!first[b]) continue;
            if (tab[b] >= 0 && tab[b] != target[b]) {
                tsr_errorf(TSR_ERR_INVALID_ARG, "JSON schema: anyOf/oneOf (or a list of types) whose alternatives can "
                           "both start with '%c' is not supported (say, two objects, or a string and an enum of strings)", b);
                ok = false;
            }
            tab[b] = target[b];
        }
    }
    g->nodes[id].by_byte = tab;
    g->nodes[id].resolving = false;
    return ok;
}

static tsr_status tsr__finish(tsr_grammar *g, int32_t root, tsr_grammar **out) {
    if (root < 0) return TSR_ERR_INVALID_ARG;
    int32_t doc = tsr__new_node(g, TSR__G_DOC);
    if (doc < 0) return TSR_ERR_INVALID_ARG;
    g->nodes[doc].root = root;
    g->doc = doc;
    for (int32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kind == TSR__G_ALT && !tsr__resolve(g, i)) return TSR_ERR_INVALID_ARG;
    *out = g;
    return TSR_OK;
}

static tsr_grammar *tsr__grammar_new(void) {
    tsr_grammar *g = calloc(1, sizeof *g);
    if (g) g->any = g->key_string = g->doc = -1;
    return g;
}

tsr_status tsr_grammar_compile_json(const cJSON *schema, tsr_grammar **out) {
    *out = NULL;
    tsr_grammar *g = tsr__grammar_new();
    if (!g) return tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
    tsr__gc c = {g, schema, NULL, NULL, 0, 0};
    int32_t root;
    if (!schema) {
        root = tsr__new_node(g, TSR__G_OBJECT);   /* json_object: an object of any values */
        int32_t any = root >= 0 ? tsr__any(g) : -1;
        if (any < 0) root = -1;
        else g->nodes[root].additional = any;
    } else {
        root = tsr__compile(&c, schema);
    }
    tsr_status rc = tsr__finish(g, root, out);
    for (int i = 0; i < c.n_refs; i++) free(c.ref_names[i]);
    free(c.ref_names);
    free(c.ref_nodes);
    if (rc != TSR_OK) {
        tsr_grammar_free(g);
        *out = NULL;
    }
    return rc;
}

tsr_status tsr_grammar_compile(const char *schema, size_t len, tsr_grammar **out) {
    *out = NULL;
    if (!schema || !len) return tsr_grammar_compile_json(NULL, out);
    cJSON *j = cJSON_ParseWithLength(schema, len);
    if (!j) return tsr_errorf(TSR_ERR_INVALID_ARG, "the JSON schema is not valid JSON");
    tsr_status rc = tsr_grammar_compile_json(j, out);
    cJSON_Delete(j);
    return rc;
}

tsr_status tsr_grammar_compile_tool_call(const char *const *names, const cJSON *const *params, int n,
                                         tsr_grammar **out) {
    *out = NULL;
    if (n <= 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "tool calls need at least one function");
    tsr_grammar *g = tsr__grammar_new();
    if (!g) return tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
    tsr__gc c = {g, NULL, NULL, NULL, 0, 0};
    int32_t root = -1;
    cJSON **nv = calloc((size_t)n, sizeof *nv);
    int32_t *tags = calloc((size_t)n, sizeof *tags);
    if (!nv || !tags) {
        tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        nv[i] = cJSON_CreateString(names[i]);
        if (!nv[i]) {
            tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
            goto done;
        }
        c.root = params[i];   /* each function's $refs are its own */
        if (params[i]) {
            tags[i] = tsr__compile(&c, params[i]);
        } else {
            tags[i] = tsr__new_node(g, TSR__G_OBJECT);
            int32_t any = tags[i] >= 0 ? tsr__any(g) : -1;
            if (any < 0) goto done;
            g->nodes[tags[i]].additional = any;
        }
        for (int k = 0; k < c.n_refs; k++) free(c.ref_names[k]);
        c.n_refs = 0;
        if (tags[i] < 0) goto done;
    }
    int32_t name_lit = tsr__lit_values(g, (const cJSON *const *)nv, n);
    const char *keys[2] = {"\"name\"", "\"arguments\""};
    uint32_t kl[2] = {6, 11};
    int32_t k0 = tsr__new_lit(g, keys, kl, 1), k1 = tsr__new_lit(g, keys + 1, kl + 1, 1);
    int32_t obj = tsr__new_node(g, TSR__G_OBJECT);
    if (name_lit < 0 || k0 < 0 || k1 < 0 || obj < 0) goto done;
    g->nodes[k1].map[0] = 1;
    tsr__g_node *o = &g->nodes[obj];
    o->n_props = 2;
    o->prop_names = calloc(2, sizeof *o->prop_names);
    o->prop_value = calloc(2, sizeof *o->prop_value);
    o->prop_required = calloc(2, sizeof *o->prop_required);
    o->next_required = calloc(3, sizeof *o->next_required);
    o->key_lit = calloc(2, sizeof *o->key_lit);
    if (!o->prop_names || !o->prop_value || !o->prop_required || !o->next_required || !o->key_lit) {
        o->n_props = 0;
        tsr_errorf(TSR_ERR_OOM, "out of memory compiling a JSON schema");
        goto done;
    }
    o->prop_names[0] = strdup(keys[0]);
    o->prop_names[1] = strdup(keys[1]);
    o->prop_value[0] = name_lit;
    o->prop_value[1] = tags[0];
    o->prop_required[0] = o->prop_required[1] = true;
    o->next_required[0] = 0, o->next_required[1] = 1, o->next_required[2] = 2;
    o->key_lit[0] = k0, o->key_lit[1] = k1;
    o->tag_values = tags;
    tags = NULL;
    root = obj;
done:
    for (int k = 0; k < c.n_refs; k++) free(c.ref_names[k]);
    free(c.ref_names);
    free(c.ref_nodes);
    if (nv)
        for (int i = 0; i < n; i++) cJSON_Delete(nv[i]);
    free(nv);
    free(tags);
    tsr_status rc = root < 0 ? TSR_ERR_INVALID_ARG : tsr__finish(g, root, out);
    if (rc != TSR_OK) {
        tsr_grammar_free(g);
        *out = NULL;
        return rc;
    }
    return TSR_OK;
}

tsr_status tsr_grammar_compile_functions(const char *functions, tsr_grammar **out) {
    *out = NULL;
    cJSON *j = cJSON_Parse(functions ? functions : "");
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0) {
        cJSON_Delete(j);
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tool functions must be a non-empty JSON array");
    }
    int n = cJSON_GetArraySize(j);
    const char **names = calloc((size_t)n, sizeof *names);
    const cJSON **params = calloc((size_t)n, sizeof *params);
    tsr_status rc = TSR_OK;
    if (!names || !params) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory compiling tool functions");
        goto done;
    }
    int i = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, j) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsString(name)) {
            rc = tsr_errorf(TSR_ERR_INVALID_ARG, "each tool function needs a string 'name'");
            goto done;
        }
        names[i] = name->valuestring;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        params[i++] = p && !cJSON_IsNull(p) ? p : NULL;
    }
    rc = tsr_grammar_compile_tool_call(names, (const cJSON *const *)params, n, out);
done:
    free(names);
    free(params);
    cJSON_Delete(j);
    return rc;
}
