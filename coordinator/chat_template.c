/* Chat templates (see chat_template.h): how rank 0 turns a conversation into the prompt text
 * the tokenizer encodes.  A template is LMDeploy's JSON form (system, meta_instruction, eosys,
 * user, eoh, assistant, eoa, separator, stop_words) plus a few switches for what the models'
 * own Jinja templates do that this form cannot say:
 *
 *   bos                   text emitted once before everything.  HF templates for llama3,
 *                         mistral and internlm2 write the BOS token as text (`{{ bos_token }}`),
 *                         and the engine encodes chat prompts with parse_special=true and
 *                         add_special=false, so emitting BOS as text here, as HF does, gives
 *                         the same ids and never a doubled BOS.  llama2 writes `<s>` before
 *                         every [INST], so there it lives in the `user` prefix instead.
 *   inject_meta           put `system + meta_instruction + eosys` first when the conversation
 *                         does not start with a system message (Qwen2, SmolLM2).
 *   fold_system           the system message has no turn of its own: it is written inside the
 *                         first user turn, after the user prefix (llama2's <<SYS>> block inside
 *                         the first [INST], mistral's "system\n\n" before the first question).
 *   strip                 contents are stripped of leading/trailing whitespace (Python's
 *                         str.strip, as Jinja's `trim` and `.strip()` do): llama3 per message,
 *                         llama2 on the first user turn *after* the system block is folded in.
 *   alternate             after an optional first system message, roles must alternate user,
 *                         assistant, user, ... (llama2 and mistral raise otherwise).
 *   generation_prompt     what add_generation_prompt appends (default: the assistant prefix).
 *                         llama2 and mistral templates append nothing: the prompt ends "[/INST]".
 *
 * Rendering follows HF, not LMDeploy, where the two differ: a conversation that ends with an
 * assistant message still gets its eoa + separator (LMDeploy leaves it open as a prefix of the
 * answer), and the generation prompt is appended only when asked for.
 *
 * Known deviation: HF's llama2 template silently drops a system message at an odd position
 * after the first (it passes the alternation check); here any non-leading system message in a
 * folding template is an error, as it is for mistral in HF. */
#include "coordinator/chat_template.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/fileutil.h"

/* Field order matters: tsr__fields below indexes it. */
enum {
    F_SYSTEM,
    F_META,
    F_EOSYS,
    F_USER,
    F_EOH,
    F_ASSISTANT,
    F_EOA,
    F_SEPARATOR,
    F_BOS,
    F_GENPROMPT,
    F_COUNT
};

struct tsr_chat_template {
    char *name;
    char *f[F_COUNT];      /* owned; NULL = absent (F_META, F_GENPROMPT may be absent) */
    bool inject_meta, fold_system, strip, alternate;
    char **stop_words;     /* NULL-terminated, owned */
};

/* ---- built-ins ---- */

typedef struct {
    const char *name;
    const char *f[F_COUNT];
    bool inject_meta, fold_system, strip, alternate;
    const char *stop_words[4];
} tsr__builtin;

#define TSR__CHATML_FIELDS(meta, bos)                                                     \
    {"<|im_start|>system\n", meta, "<|im_end|>\n", "<|im_start|>user\n", "<|im_end|>\n",   \
     "<|im_start|>assistant\n", "<|im_end|>", "\n", bos, NULL}

static const char tsr__smollm_system[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
static const char tsr__qwen2_system[] = "You are a helpful assistant.";

static const tsr__builtin tsr__builtins[] = {
    /* chatml with no default system message (the plain form; detect() fills meta_instruction
     * from the model's Jinja when it has one). */
    {"chatml", TSR__CHATML_FIELDS(NULL, ""), false, false, false, false, {"<|im_end|>", NULL}},
    /* Qwen2-Instruct and SmolLM2-Instruct: chatml + their default system message. */
    {"qwen2", TSR__CHATML_FIELDS(tsr__qwen2_system, ""), true, false, false, false, {"<|im_end|>", NULL}},
    {"smollm2", TSR__CHATML_FIELDS(tsr__smollm_system, ""), true, false, false, false, {"<|im_end|>", NULL}},
    /* Llama-2-chat: "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U [/INST]". */
    {"llama2",
     {"<<SYS>>\n", NULL, "\n<</SYS>>\n\n", "<s>[INST] ", " [/INST]", " ", " </s>", "", "", ""},
     false, true, true, true, {"</s>", NULL}},
    /* Llama-3-Instruct: header per message, contents trimmed, BOS once. */
    {"llama3",
     {"<|start_header_id|>system<|end_header_id|>\n\n", NULL, "<|eot_id|>",
      "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
      "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "", "<|begin_of_text|>", NULL},
     false, false, true, false, {"<|eot_id|>", "<|end_of_text|>", NULL}},
    /* Mistral-7B-Instruct-v0.2: "<s> [INST] S\n\nU [/INST] A</s> [INST] U [/INST]". */
    {"mistral",
     {"", NULL, "\n\n", " [INST] ", " [/INST]", " ", "</s>", "", "<s>", ""},
     false, true, false, true, {"</s>", NULL}},
    /* InternLM2-chat: BOS, then chatml; no default system message in its HF template. */
    {"internlm2", TSR__CHATML_FIELDS(NULL, "<s>"), false, false, false, false, {"<|im_end|>", NULL}},
};
#define TSR__N_BUILTINS (sizeof tsr__builtins / sizeof tsr__builtins[0])

static const char *const tsr__builtin_names[] = {"chatml", "qwen2", "smollm2", "llama2", "llama3",
                                                 "mistral", "internlm2", NULL};

const char *const *tsr_chat_template_builtin_names(void) { return tsr__builtin_names; }

/* LMDeploy JSON keys, in the enum's order; the last two are Tessera's extensions. */
static const char *const tsr__fields[F_COUNT] = {"system", "meta_instruction", "eosys", "user", "eoh",
                                                 "assistant", "eoa", "separator", "bos", "generation_prompt"};

static char *tsr__strdup_or_null(const char *s) {
    if (!s) return NULL;
    char *d = strdup(s);
    TSR_ASSERT(d);
    return d;
}

void tsr_chat_template_free(tsr_chat_template *t) {
    if (!t) return;
    free(t->name);
    for (int i = 0; i < F_COUNT; i++) free(t->f[i]);
    if (t->stop_words)
        for (char **w = t->stop_words; *w; w++) free(*w);
    free(t->stop_words);
    free(t);
}

static const tsr__builtin *tsr__find_builtin(const char *name) {
    for (size_t i = 0; i < TSR__N_BUILTINS; i++)
        if (!strcmp(tsr__builtins[i].name, name)) return &tsr__builtins[i];
    return NULL;
}

static tsr_chat_template *tsr__from_builtin(const tsr__builtin *b) {
    tsr_chat_template *t = calloc(1, sizeof *t);
    TSR_ASSERT(t);
    t->name = tsr__strdup_or_null(b->name);
    for (int i = 0; i < F_COUNT; i++) t->f[i] = tsr__strdup_or_null(b->f[i]);
    t->inject_meta = b->inject_meta;
    t->fold_system = b->fold_system;
    t->strip = b->strip;
    t->alternate = b->alternate;
    size_t n = 0;
    while (b->stop_words[n]) n++;
    t->stop_words = calloc(n + 1, sizeof(char *));
    TSR_ASSERT(t->stop_words);
    for (size_t i = 0; i < n; i++) t->stop_words[i] = tsr__strdup_or_null(b->stop_words[i]);
    return t;
}

const char *tsr_chat_template_name(const tsr_chat_template *t) { return t->name; }

const char *const *tsr_chat_template_stop_words(const tsr_chat_template *t) {
    return (const char *const *)t->stop_words;
}

const char *tsr_chat_template_default_system(const tsr_chat_template *t) {
    return t->inject_meta ? t->f[F_META] : NULL;
}

/* ---- JSON (LMDeploy's form) ---- */

/* Keys LMDeploy writes that do not change a text prompt; accepted and ignored. */
static const char *const tsr__ignored_keys[] = {"capability", "tool", "eotool", NULL};

static tsr_status tsr__load_json(const char *path, tsr_chat_template **out) {
    char *text = NULL;
    size_t len = 0;
    tsr_status st = tsr_read_file(path, 1 << 20, &text, &len);
    if (st != TSR_OK) return tsr_error_wrap(st, "chat template");
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *where = cJSON_GetErrorPtr();
        long off = where && where >= text && where <= text + len ? (long)(where - text) : -1;
        free(text);
        return tsr_errorf(TSR_ERR_FORMAT, "chat template %s: not valid JSON (near byte %ld)", path, off);
    }
    free(text);
    tsr_chat_template *t = NULL;
    st = TSR_OK;
    if (!cJSON_IsObject(root)) {
        st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: the top level must be a JSON object", path);
        goto done;
    }
    /* LMDeploy: a model_name that names a built-in starts from it, the file overrides fields. */
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(root, "model_name");
    if (mn && !cJSON_IsString(mn)) {
        st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: 'model_name' must be a string", path);
        goto done;
    }
    const tsr__builtin *base = mn ? tsr__find_builtin(mn->valuestring) : NULL;
    if (base) {
        t = tsr__from_builtin(base);
    } else {
        t = calloc(1, sizeof *t);
        TSR_ASSERT(t);
        for (int i = 0; i < F_COUNT; i++)
            if (i != F_META && i != F_GENPROMPT) t->f[i] = tsr__strdup_or_null("");
        t->stop_words = calloc(1, sizeof(char *));
        TSR_ASSERT(t->stop_words);
    }
    free(t->name);
    t->name = tsr__strdup_or_null(mn ? mn->valuestring : path);

    bool inject_given = false;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string;
        int fi = -1;
        for (int i = 0; i < F_COUNT; i++)
            if (!strcmp(k, tsr__fields[i])) fi = i;
        if (fi >= 0) {
            if (fi == F_META && cJSON_IsNull(it)) {
                free(t->f[F_META]);
                t->f[F_META] = NULL;
                t->inject_meta = false;
                continue;
            }
            if (!cJSON_IsString(it)) {
                st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: '%s' must be a string", path, k);
                goto done;
            }
            free(t->f[fi]);
            t->f[fi] = tsr__strdup_or_null(it->valuestring);
            if (fi == F_META && !inject_given) t->inject_meta = true;
            continue;
        }
        bool *flag = !strcmp(k, "inject_meta_instruction") ? &t->inject_meta
                     : !strcmp(k, "system_in_first_user")  ? &t->fold_system
                     : !strcmp(k, "strip_content")         ? &t->strip
                     : !strcmp(k, "alternate_roles")       ? &t->alternate
                                                           : NULL;
        if (flag) {
            if (!cJSON_IsBool(it)) {
                st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: '%s' must be true or false", path, k);
                goto done;
            }
            *flag = cJSON_IsTrue(it);
            if (flag == &t->inject_meta) inject_given = true;
            continue;
        }
        if (!strcmp(k, "stop_words")) {
            if (!cJSON_IsArray(it)) {
                st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: 'stop_words' must be an array of strings", path);
                goto done;
            }
            int n = cJSON_GetArraySize(it);
            char **w = calloc((size_t)n + 1, sizeof(char *));
            TSR_ASSERT(w);
            int i = 0;
            for (const cJSON *s = it->child; s; s = s->next, i++) {
                if (!cJSON_IsString(s) || !s->valuestring[0]) {
                    for (int j = 0; j < i; j++) free(w[j]);
                    free(w);
                    st = tsr_errorf(TSR_ERR_FORMAT,
                                    "chat template %s: 'stop_words'[%d] must be a non-empty string", path, i);
                    goto done;
                }
                w[i] = tsr__strdup_or_null(s->valuestring);
            }
            for (char **o = t->stop_words; *o; o++) free(*o);
            free(t->stop_words);
            t->stop_words = w;
            continue;
        }
        if (!strcmp(k, "model_name")) continue;
        bool ignored = false;
        for (const char *const *ig = tsr__ignored_keys; *ig; ig++)
            if (!strcmp(k, *ig)) ignored = true;
        if (ignored) continue;
        st = tsr_errorf(TSR_ERR_FORMAT,
                        "chat template %s: unknown key '%s' (expected system, meta_instruction, eosys, user, "
                        "eoh, assistant, eoa, separator, stop_words, model_name, capability, bos, "
                        "generation_prompt, inject_meta_instruction, system_in_first_user, strip_content, "
                        "alternate_roles)",
                        path, k);
        goto done;
    }
    if (t->inject_meta && !t->f[F_META]) {
        st = tsr_errorf(TSR_ERR_FORMAT, "chat template %s: inject_meta_instruction is true but there is no "
                        "meta_instruction", path);
        goto done;
    }
done:
    cJSON_Delete(root);
    if (st != TSR_OK) {
        tsr_chat_template_free(t);
        return st;
    }
    *out = t;
    return TSR_OK;
}

tsr_status tsr_chat_template_load(const char *name_or_path, tsr_chat_template **out) {
    *out = NULL;
    if (!name_or_path || !name_or_path[0])
        return tsr_errorf(TSR_ERR_INVALID_ARG, "chat template: empty name");
    const tsr__builtin *b = tsr__find_builtin(name_or_path);
    if (b) {
        *out = tsr__from_builtin(b);
        return TSR_OK;
    }
    if (tsr_path_exists(name_or_path)) return tsr__load_json(name_or_path, out);
    return tsr_errorf(TSR_ERR_NOT_FOUND,
                      "chat template '%s': not a built-in (chatml, qwen2, smollm2, llama2, llama3, mistral, "
                      "internlm2) and no such file", name_or_path);
}

/* ---- detection ---- */

static bool tsr__icontains(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n)) return true;
    return false;
}

/* The default system text a chatml Jinja writes when the conversation has none: the literal
 * after "<|im_start|>system" + newline up to "<|im_end|>", when that span is plain text inside
 * one string literal (no bare quote, no Jinja braces), unescaped as Jinja unescapes literals.
 * A span that holds template logic (Qwen2.5's tools branch) is skipped for the next one. */
static char *tsr__extract_default_system(const char *jinja) {
    static const char marker[] = "<|im_start|>system";
    for (const char *p = strstr(jinja, marker); p; p = strstr(p + 1, marker)) {
        const char *q = p + sizeof marker - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e) return NULL;
        if (e == q) continue;
        bool plain = true;
        for (const char *c = q; c < e && plain; c++) {
            if (*c == '\\') {
                if (c + 1 >= e) plain = false;
                c++;
            } else if (*c == '\'' || *c == '"' || *c == '{' || *c == '}') {
                plain = false;
            }
        }
        if (!plain) continue;
        /* Unescape in place: the result is never longer than the literal. */
        char *s = strndup(q, (size_t)(e - q)), *o = s;
        TSR_ASSERT(s);
        for (const char *c = s; *c; c++) {
            if (*c != '\\') { *o++ = *c; continue; }
            c++;
            switch (*c) {
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'r': *o++ = '\r'; break;
            default: *o++ = *c; break;   /* \\ \' \" */
            }
        }
        *o = 0;
        return s;
    }
    return NULL;
}

static const char *tsr__name_from_model(const char *m) {
    if (!m) return NULL;
    if (tsr__icontains(m, "llama-3") || tsr__icontains(m, "llama3") || tsr__icontains(m, "llama_3")) return "llama3";
    if (tsr__icontains(m, "llama-2") || tsr__icontains(m, "llama2") || tsr__icontains(m, "llama_2")) return "llama2";
    if (tsr__icontains(m, "mistral") || tsr__icontains(m, "mixtral")) return "mistral";
    if (tsr__icontains(m, "internlm")) return "internlm2";
    if (tsr__icontains(m, "smollm")) return "smollm2";
    if (tsr__icontains(m, "qwen")) return "qwen2";
    return NULL;
}

tsr_status tsr_chat_template_detect(const char *jinja, const char *model_name, tsr_chat_template **out) {
    *out = NULL;
    const char *pick = NULL;
    char *default_system = NULL;
    if (jinja && jinja[0]) {
        if (strstr(jinja, "<|start_header_id|>")) {
            pick = "llama3";
        } else if (strstr(jinja, "<|im_start|>")) {
            /* InternLM2 is chatml after a BOS: its template writes bos_token, Qwen2's and
             * SmolLM2's do not. */
            bool internlm = strstr(jinja, "bos_token") || (model_name && tsr__icontains(model_name, "internlm"));
            pick = internlm ? "internlm2" : "chatml";
            default_system = tsr__extract_default_system(jinja);
        } else if (strstr(jinja, "[INST]")) {
            pick = strstr(jinja, "<<SYS>>") ? "llama2" : "mistral";
        }
    }
    if (!pick) pick = tsr__name_from_model(model_name);
    if (!pick) pick = "chatml";
    tsr_chat_template *t = tsr__from_builtin(tsr__find_builtin(pick));
    if (default_system) {
        free(t->f[F_META]);
        t->f[F_META] = default_system;
        t->inject_meta = true;
    }
    *out = t;
    return TSR_OK;
}

/* ---- rendering ---- */

typedef struct {
    char *p;
    size_t n, cap;
} tsr__buf;

static void tsr__put(tsr__buf *b, const char *s, size_t n) {
    if (!s || !n) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        TSR_ASSERT(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void tsr__puts(tsr__buf *b, const char *s) {
    if (s) tsr__put(b, s, strlen(s));
}

/* Python's str.isspace() for one code point (what str.strip() and Jinja's trim remove). */
static bool tsr__is_py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* Decodes one UTF-8 sequence at s (n bytes left); an invalid byte decodes as itself, which is
 * never whitespace above 0x7f, so broken text is kept, not stripped. */
static size_t tsr__utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) { *cp = 0xfffd; return 1; }
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1fu) : len == 3 ? (c & 0x0fu) : (c & 0x07u);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) { *cp = 0xfffd; return 1; }
        v = (v << 6) | (s[i] & 0x3fu);
    }
    *cp = v;
    return len;
}

/* Appends s[0..n) to b, stripped like Python's str.strip() when strip is set. */
static void tsr__put_stripped(tsr__buf *b, const char *s, size_t n, bool strip) {
    if (!strip) { tsr__put(b, s, n); return; }
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, start = n, end = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = tsr__utf8_next(u + i, n - i, &cp);
        if (!tsr__is_py_space(cp)) {
            if (start == n) start = i;
            end = i + l;
        }
        i += l;
    }
    if (start < end) tsr__put(b, s + start, end - start);
}

static bool tsr__role_is(const tsr_chat_message *m, const char *r) { return !strcmp(m->role, r); }

tsr_status tsr_chat_template_render(const tsr_chat_template *t, const tsr_chat_message *msgs, size_t n_msgs,
                                    bool add_generation_prompt, char **out) {
    *out = NULL;
    if (n_msgs == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "chat: the conversation has no messages");
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "chat: message %zu has no %s", i, msgs[i].role ? "content" : "role");
        if (!tsr__role_is(&msgs[i], "system") && !tsr__role_is(&msgs[i], "user") &&
            !tsr__role_is(&msgs[i], "assistant"))
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "chat: message %zu has role '%s' (expected system, user or assistant)", i,
                              msgs[i].role);
    }
    const char *system = NULL;   /* the leading system text, given or injected */
    size_t first = 0;
    if (tsr__role_is(&msgs[0], "system")) {
        system = msgs[0].content;
        first = 1;
    } else if (t->inject_meta && t->f[F_META]) {
        system = t->f[F_META];
    }
    /* Check everything before writing, so a refusal never leaves half a prompt behind. */
    for (size_t i = first; i < n_msgs; i++) {
        bool is_user = tsr__role_is(&msgs[i], "user");
        if (t->alternate && is_user != ((i - first) % 2 == 0))
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "chat template %s: after the optional system message, roles must alternate "
                              "user/assistant/user/... (message %zu is '%s')", t->name, i, msgs[i].role);
        if ((t->alternate || t->fold_system) && tsr__role_is(&msgs[i], "system"))
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "chat template %s: a system message is only allowed first (message %zu)", t->name, i);
    }

    tsr__buf b = {0};
    tsr__puts(&b, t->f[F_BOS]);
    const char *pending = NULL;  /* a system text waiting to be folded into the first user turn */
    if (system) {
        if (t->fold_system) {
            pending = system;
        } else {
            tsr__puts(&b, t->f[F_SYSTEM]);
            tsr__put_stripped(&b, system, strlen(system), t->strip);
            tsr__puts(&b, t->f[F_EOSYS]);
        }
    }
    for (size_t i = first; i < n_msgs; i++) {
        const char *c = msgs[i].content;
        if (tsr__role_is(&msgs[i], "system")) {
            tsr__puts(&b, t->f[F_SYSTEM]);
            tsr__put_stripped(&b, c, strlen(c), t->strip);
            tsr__puts(&b, t->f[F_EOSYS]);
        } else if (tsr__role_is(&msgs[i], "user")) {
            tsr__puts(&b, t->f[F_USER]);
            if (pending) {
                /* llama2 strips the whole "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user body. */
                tsr__buf body = {0};
                tsr__puts(&body, t->f[F_SYSTEM]);
                tsr__puts(&body, pending);
                tsr__puts(&body, t->f[F_EOSYS]);
                tsr__puts(&body, c);
                tsr__put_stripped(&b, body.p ? body.p : "", body.n, t->strip);
                free(body.p);
                pending = NULL;
            } else {
                tsr__put_stripped(&b, c, strlen(c), t->strip);
            }
            tsr__puts(&b, t->f[F_EOH]);
        } else {
            tsr__puts(&b, t->f[F_ASSISTANT]);
            tsr__put_stripped(&b, c, strlen(c), t->strip);
            tsr__puts(&b, t->f[F_EOA]);
            tsr__puts(&b, t->f[F_SEPARATOR]);
        }
    }
    if (add_generation_prompt) tsr__puts(&b, t->f[F_GENPROMPT] ? t->f[F_GENPROMPT] : t->f[F_ASSISTANT]);
    if (!b.p) {
        b.p = strdup("");
        TSR_ASSERT(b.p);
    }
    *out = b.p;
    return TSR_OK;
}
