/* Loading an HF tokenizer.json: the BPE model (vocab, merges, options), the added tokens, and
 * the normalizer, pre-tokenizer, decoder and post-processor objects turned into the pipeline's
 * steps; then tokenizer_config.json (BOS/EOS, chat template), chat_template.jinja and
 * config.json from the same directory.  cJSON stops strings at NUL; the JSON we read never
 * holds one in a token. */
#include "coordinator/tokenizer/internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"

static const char *tsr__jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool tsr__jbool(const cJSON *o, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

/* One step of a pipeline component, given its JSON object and type (never "Sequence"). */
typedef tsr_status (*tsr__step_parser)(tsr_tokenizer *t, const cJSON *o, const char *type, const char *path);

/* A component (normalizer, pre_tokenizer, decoder, post_processor): null is none, a Sequence
 * lists more of them under list_key, anything else is one step for parse. */
static tsr_status tsr__parse_steps(tsr_tokenizer *t, const cJSON *o, const char *what, const char *list_key,
                                   const char *path, tsr__step_parser parse) {
    if (!o || cJSON_IsNull(o)) return TSR_OK;
    const char *type = tsr__jstr(o, "type");
    if (!type) return tsr_errorf(TSR_ERR_FORMAT, "%s: %s without a type", path, what);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, list_key);
        const cJSON *it;
        cJSON_ArrayForEach(it, list) TSR_TRY(tsr__parse_steps(t, it, what, list_key, path, parse));
        return TSR_OK;
    }
    return parse(t, o, type, path);
}

/* A Replace step (normalizer or decoder) of a plain string by another. */
static tsr_status tsr__parse_replace(const cJSON *o, const char *path, const char *what, char **from, char **to) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *a = tsr__jstr(pat, "String"), *b = tsr__jstr(o, "content");
    if (!a || !b) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: Replace %s is not supported", path, what);
    *from = strdup(a);
    *to = strdup(b);
    return TSR_OK;
}

static tsr_status tsr__parse_normalizer(tsr_tokenizer *t, const cJSON *n, const char *type, const char *path) {
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
        TSR_TRY(tsr__parse_replace(n, path, "normalizer with a regex pattern", &nm->a, &nm->b));
        nm->kind = TSR__NORM_REPLACE;
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

static tsr_status tsr__parse_pre(tsr_tokenizer *t, const cJSON *p, const char *type, const char *path) {
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
        if (!tsr__pattern_find(re, &pr->pat))
            return tsr_errorf(TSR_ERR_UNSUPPORTED,
                              "%s: pre-tokenizer split pattern not supported (Tessera hand-codes the known "
                              "GPT-2, Llama-3, Qwen2/3.5 and DeepSeek-V3 patterns): %.200s",
                              path, re);
        pr->kind = TSR__PRE_SPLIT;
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

static tsr_status tsr__parse_decoder(tsr_tokenizer *t, const cJSON *d, const char *type, const char *path) {
    if (t->n_dec >= TSR__MAX_STEPS) return tsr_errorf(TSR_ERR_UNSUPPORTED, "%s: too many decoders", path);
    tsr__dec *dc = &t->dec[t->n_dec];
    memset(dc, 0, sizeof *dc);
    if (!strcmp(type, "ByteLevel")) {
        dc->kind = TSR__DEC_BYTELEVEL;
    } else if (!strcmp(type, "Replace")) {
        TSR_TRY(tsr__parse_replace(d, path, "decoder with a regex", &dc->a, &dc->b));
        dc->kind = TSR__DEC_REPLACE;
    } else if (!strcmp(type, "ByteFallback")) {
        dc->kind = TSR__DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        dc->kind = TSR__DEC_FUSE;
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
        for (int k = 0; k < t->n_dec; k++) dc->stream |= t->dec[k].kind == TSR__DEC_FUSE; /* after a Fuse */
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

static tsr_status tsr__parse_post(tsr_tokenizer *t, const cJSON *p, const char *type, const char *path) {
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
    const cJSON *decoder = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    t->has_decoder = decoder && !cJSON_IsNull(decoder); /* even an empty Sequence: no spaces between tokens */
    TSR_TRY(tsr__parse_steps(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer", "normalizers", path,
                             tsr__parse_normalizer));
    TSR_TRY(tsr__parse_steps(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer",
                             "pretokenizers", path, tsr__parse_pre));
    TSR_TRY(tsr__parse_steps(t, decoder, "decoder", "decoders", path, tsr__parse_decoder));
    TSR_TRY(tsr__parse_steps(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor",
                             "processors", path, tsr__parse_post));
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
