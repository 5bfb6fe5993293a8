/* OpenAI request bodies -> validated parameters -> engine requests, and OpenAI's error object.
 * Every rejection names the parameter (OpenAI's "param") so a client can tell what to fix;
 * ranges follow OpenAI's documentation where it has one and the engine's where it does not.
 * Unknown fields are ignored, as OpenAI-compatible servers do; known fields Tessera does not
 * implement (tools, response_format, ...) are refused unless their value asks for
 * nothing (tsr__unsupported_fields). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/frontend/fe.h"

char *tsr__fe_error_json(const tsr__fe_error *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    char *msg = tsr__fe_utf8_sanitize(e->message, strlen(e->message));
    cJSON_AddStringToObject(o, "message", msg ? msg : "error");
    free(msg);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "invalid_request_error");
    if (e->param) cJSON_AddStringToObject(o, "param", e->param); else cJSON_AddNullToObject(o, "param");
    if (e->code) cJSON_AddStringToObject(o, "code", e->code); else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid (overlongs, surrogates and
 * code points past U+10FFFF are invalid, as RFC 3629 says). */
static int tsr__utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if ((size_t)len > n) return 0;
    unsigned cp = c & (0xFF >> (len + 1));
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

bool tsr__fe_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int l = tsr__utf8_seq(u + i, n - i);
        if (!l) return false;
        i += (size_t)l;
    }
    return true;
}

char *tsr__fe_utf8_sanitize(const char *s, size_t n) {
    char *out = malloc(n * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int l = tsr__utf8_seq(u + i, n - i);
        if (l && !(l == 1 && u[i] == 0)) {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

bool tsr__fe_key_equal(const char *given, size_t given_len, const char *key) {
    /* Time depends only on the presented length, not on where the first difference is. */
    size_t key_len = strlen(key);
    unsigned char diff = (unsigned char)(given_len != key_len);
    for (size_t i = 0; i < given_len; i++) diff |= (unsigned char)(given[i] ^ (i < key_len ? key[i] : 0));
    return diff == 0;
}

#define BAD(...) (tsr__fe_seterr(err, 400, "invalid_request_error", __VA_ARGS__), false)

/* ---- the accepted values: one set of rules for the HTTP (JSON) and gRPC (protobuf) readers ---- */

/* Every numeric request field and its range (bounds exactly representable, within +-2^63). */
static const struct tsr__fe_range {
    const char *name;
    double lo, hi;
    bool integer;
} tsr__fe_ranges[] = {
    {"temperature", 0, 2, false},
    {"top_p", 1e-9, 1, false},
    {"top_k", -1, 1 << 30, true},                     /* -1 and 0: off */
    {"min_p", 0, 1, false},
    {"repetition_penalty", 1e-6, 100, false},
    {"presence_penalty", -2, 2, false},
    {"frequency_penalty", -2, 2, false},
    /* OpenAI's seed is a 64-bit signed integer; exact up to 2^53 in JSON doubles */
    {"seed", -9223372036854775808.0, 9223372036854774784.0, true},
    {"max_tokens", 1, 1 << 24, true},
    {"max_completion_tokens", 1, 1 << 24, true},
    {"request_output_len", 1, 1 << 24, true},       /* TurboMind's max_tokens */
    {"n", 1, TSR__FE_MAX_N, true},
    {"best_of", 1, TSR__FE_MAX_N, true},
    {"top_logprobs", 0, TSR_SAMPLING_MAX_LOGPROBS, true},
    {"logprobs", 0, 5, true},                         /* completions' integer logprobs */
    {"session_id", 0, 9007199254740991.0, true},
    {"min_tokens", 0, 1 << 24, true},                 /* vLLM's */
};

bool tsr__fe_check(const char *name, double v, tsr__fe_error *err) {
    for (size_t i = 0; i < sizeof tsr__fe_ranges / sizeof tsr__fe_ranges[0]; i++) {
        const struct tsr__fe_range *r = &tsr__fe_ranges[i];
        if (strcmp(r->name, name)) continue;
        /* the range first: a double outside int64_t's range converted to it is undefined behaviour */
        if (!(v >= r->lo && v <= r->hi)) {   /* NaN fails too */
            if (r->integer)
                return BAD(name, "invalid_value", "'%s' must be an integer in [%.0f, %.0f], got %g", name, r->lo, r->hi, v);
            return BAD(name, "invalid_value", "'%s' must be in [%g, %g], got %g", name, r->lo, r->hi, v);
        }
        if (r->integer && v != (double)(int64_t)v)
            return BAD(name, "invalid_type", "'%s' must be an integer, got %g", name, v);
        return true;
    }
    TSR_ASSERT(!"a request field without a range");
    return false;
}

bool tsr__fe_add_stop(tsr__fe_params *p, const char *s, tsr__fe_error *err) {
    if (p->n_stop >= TSR__FE_MAX_STOP) return BAD("stop", "invalid_value", "at most %d stop strings", TSR__FE_MAX_STOP);
    if (!s[0]) return BAD("stop", "invalid_value", "'stop' strings must not be empty");
    if (strlen(s) > TSR_STOP_MAX_STRING_LEN)
        return BAD("stop", "invalid_value", "stop strings are at most %d bytes", TSR_STOP_MAX_STRING_LEN);
    p->stop[p->n_stop++] = s;
    return true;
}

bool tsr__fe_add_bias(tsr__fe_params *p, const char *key, double bias, tsr__fe_error *err) {
    /* OpenAI's keys are token ids written in decimal: digits only, no sign, no spaces */
    size_t kl = strlen(key);
    bool digits = kl > 0 && kl <= 10;
    for (size_t i = 0; digits && i < kl; i++) digits = key[i] >= '0' && key[i] <= '9';
    long long id = digits ? strtoll(key, NULL, 10) : -1;
    if (!digits || id > INT32_MAX)
        return BAD("logit_bias", "invalid_value", "'logit_bias' keys must be token ids (non-negative integers), got '%.32s'", key);
    if (!(bias >= -100.0 && bias <= 100.0))
        return BAD("logit_bias", "invalid_value", "'logit_bias' values must be in [-100, 100], got %g for token %lld", bias, id);
    if (p->n_bias >= TSR__FE_MAX_LOGIT_BIAS)
        return BAD("logit_bias", "invalid_value", "'logit_bias' holds at most %d tokens", TSR__FE_MAX_LOGIT_BIAS);
    if (!p->bias_ids) {
        p->bias_ids = malloc(sizeof *p->bias_ids * TSR__FE_MAX_LOGIT_BIAS);
        p->bias_vals = malloc(sizeof *p->bias_vals * TSR__FE_MAX_LOGIT_BIAS);
        if (!p->bias_ids || !p->bias_vals) return BAD("logit_bias", NULL, "out of memory");
    }
    p->bias_ids[p->n_bias] = (int32_t)id;
    p->bias_vals[p->n_bias] = (float)bias;
    p->n_bias++;
    return true;
}

bool tsr__fe_check_vocab(const tsr__fe_params *p, int64_t vocab, tsr__fe_error *err) {
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] >= vocab)
            return BAD("logit_bias", "invalid_value", "'logit_bias' holds token id %d, outside the model's vocabulary (%lld)",
                       (int)p->bias_ids[i], (long long)vocab);
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] >= vocab)
            return BAD("stop_token_ids", "invalid_value", "'stop_token_ids' holds an id outside the model's vocabulary");
    return true;
}

const char *tsr__fe_role(const char *role, tsr__fe_error *err) {
    if (!strcmp(role, "developer")) return "system";
    if (!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant")) return role;
    tsr__fe_seterr(err, 400, "invalid_request_error", "messages", "invalid_value",
                   "unsupported role '%.64s' (system, user, assistant)", role);
    return NULL;
}

bool tsr__fe_check_model(const char *given, const char *served, const char *const *aliases, int n_aliases,
                         tsr__fe_error *err) {
    if (!given || !given[0] || !strcmp(given, served)) return true;
    for (int i = 0; i < n_aliases; i++)
        if (!strcmp(given, aliases[i])) return true;
    tsr__fe_seterr(err, 404, "invalid_request_error", "model", "model_not_found",
                   "the model '%.200s' does not exist; this server serves '%.200s'", given, served);
    return false;
}

bool tsr__fe_check_sampling(tsr__fe_params *p, tsr__fe_error *err) {
    p->sampling.logprobs = p->logprobs;
    if (tsr_sampling_params_validate(&p->sampling) != TSR_OK) return BAD(NULL, "invalid_value", "%s", tsr_last_error());
    return true;
}

void tsr__fe_engine_error(const tsr_engine_error *e, bool chat, tsr__fe_error *err) {
    if (e->code == TSR_ENGINE_ERR_UNAVAILABLE) {
        tsr__fe_seterr(err, 503, "server_error", NULL, "engine_unavailable", "%s", e->message);
        return;
    }
    const char *param = e->field == TSR_FIELD_PROMPT           ? (chat ? "messages" : "prompt")
                        : e->field == TSR_FIELD_MAX_NEW_TOKENS ? "max_tokens"
                        : e->field == TSR_FIELD_STOP           ? "stop"
                        : e->field == TSR_FIELD_LOGIT_BIAS     ? "logit_bias"
                        : e->field == TSR_FIELD_PROMPT_LOGPROBS ? "echo"
                        : e->field == TSR_FIELD_GRAMMAR        ? "response_format"
                                                               : NULL;
    tsr__fe_seterr(err, 400, "invalid_request_error", param,
                   e->code == TSR_ENGINE_ERR_TOO_LONG ? "context_length_exceeded" : "invalid_value", "%s", e->message);
}

/* ---- typed field readers: each fails with the field's name as OpenAI's param ---- */

static bool tsr__get_num(cJSON *o, const char *name, double *v, tsr__fe_error *err) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsNumber(x)) return BAD(name, "invalid_type", "'%s' must be a number", name);
    if (!tsr__fe_check(name, x->valuedouble, err)) return false;
    *v = x->valuedouble;
    return true;
}

/* Integers arrive as doubles: checked (range, then integrality) before the conversion. */
static bool tsr__get_int(cJSON *o, const char *name, int64_t *v, tsr__fe_error *err) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsNumber(x)) return BAD(name, "invalid_type", "'%s' must be an integer", name);
    if (!tsr__fe_check(name, x->valuedouble, err)) return false;
    *v = (int64_t)x->valuedouble;
    return true;
}

static bool tsr__get_bool(cJSON *o, const char *name, bool *v, tsr__fe_error *err) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsBool(x)) return BAD(name, "invalid_type", "'%s' must be a boolean", name);
    *v = cJSON_IsTrue(x);
    return true;
}

static bool tsr__get_str(cJSON *o, const char *name, const char **v, tsr__fe_error *err) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsString(x)) return BAD(name, "invalid_type", "'%s' must be a string", name);
    *v = x->valuestring;
    return true;
}

/* A message's content: a string or an array of {"type": "text", "text": ...} parts. */
static bool tsr__content(tsr__fe_params *p, cJSON *c, const char **out, tsr__fe_error *err) {
    if (cJSON_IsString(c)) {
        *out = c->valuestring;
        return true;
    }
    if (!cJSON_IsArray(c)) return BAD("messages", "invalid_type", "message content must be a string or an array of text parts");
    size_t total = 0;
    cJSON *part;
    cJSON_ArrayForEach(part, c) {
        cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type"), *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx))
            return BAD("messages", "invalid_value", "only content parts of type 'text' are supported");
        total += strlen(tx->valuestring);
    }
    char *s = malloc(total + 1), **owned = realloc(p->owned, sizeof(char *) * (size_t)(p->n_owned + 1));
    if (!s || !owned) {
        free(s);
        if (owned) p->owned = owned;
        return BAD("messages", NULL, "out of memory");
    }
    p->owned = owned;
    p->owned[p->n_owned++] = s;
    size_t o = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + o, t, l);
        o += l;
    }
    s[o] = 0;
    *out = s;
    return true;
}

static bool tsr__messages(tsr__fe_params *p, cJSON *m, tsr__fe_error *err) {
    if (!m) return BAD("messages", "missing_required_parameter", "'messages' is required");
    if (!cJSON_IsArray(m)) return BAD("messages", "invalid_type", "'messages' must be an array");
    int n = cJSON_GetArraySize(m);
    if (n == 0) return BAD("messages", "invalid_value", "'messages' must not be empty");
    p->messages = calloc((size_t)n, sizeof *p->messages);
    if (!p->messages) return BAD("messages", NULL, "out of memory");
    cJSON *x;
    cJSON_ArrayForEach(x, m) {
        if (!cJSON_IsObject(x)) return BAD("messages", "invalid_type", "each message must be an object");
        int tm = tsr__fe_tool_message(p, x, &p->messages[p->n_messages], err);   /* tools.c */
        if (tm < 0) return false;
        if (tm > 0) {
            p->n_messages++;
            continue;
        }
        cJSON *role = cJSON_GetObjectItemCaseSensitive(x, "role"), *content = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (!cJSON_IsString(role)) return BAD("messages", "invalid_type", "each message needs a string 'role'");
        const char *r = tsr__fe_role(role->valuestring, err);
        if (!r) return false;
        if (!content) return BAD("messages", "missing_required_parameter", "each message needs 'content'");
        const char *text = NULL;
        if (!tsr__content(p, content, &text, err)) return false;
        p->messages[p->n_messages].role = r;
        p->messages[p->n_messages].content = text;
        p->n_messages++;
    }
    return true;
}

static bool tsr__prompt(tsr__fe_params *p, cJSON *x, tsr__fe_error *err) {
    if (!x) return BAD("prompt", "missing_required_parameter", "'prompt' is required");
    if (cJSON_IsString(x)) {
        p->prompt = x->valuestring;
        return true;
    }
    if (!cJSON_IsArray(x) || cJSON_GetArraySize(x) == 0)
        return BAD("prompt", "invalid_type", "'prompt' must be a string, a list of one string, or a list of token ids");
    cJSON *first = cJSON_GetArrayItem(x, 0);
    if (cJSON_IsString(first)) {
        if (cJSON_GetArraySize(x) != 1)
            return BAD("prompt", "invalid_value", "batched prompts are not supported: send one prompt per request");
        p->prompt = first->valuestring;
        return true;
    }
    int n = cJSON_GetArraySize(x);
    p->prompt_ids = malloc(sizeof(int32_t) * (size_t)n);
    if (!p->prompt_ids) return BAD("prompt", NULL, "out of memory");
    cJSON *t;
    cJSON_ArrayForEach(t, x) {
        if (!cJSON_IsNumber(t) || !(t->valuedouble >= 0 && t->valuedouble <= 2147483647.0) ||
            t->valuedouble != (double)(int64_t)t->valuedouble)
            return BAD("prompt", "invalid_type", "'prompt' token ids must be non-negative integers");
        p->prompt_ids[p->n_prompt_ids++] = (int32_t)t->valuedouble;
    }
    return true;
}

/* vLLM's stop_token_ids: ids that end the output like EOS (checked against the vocabulary
 * by the route, which knows the engine). */
static bool tsr__stop_ids(tsr__fe_params *p, cJSON *x, tsr__fe_error *err) {
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsArray(x)) return BAD("stop_token_ids", "invalid_type", "'stop_token_ids' must be a list of token ids");
    if (cJSON_GetArraySize(x) > TSR__FE_MAX_STOP)
        return BAD("stop_token_ids", "invalid_value", "at most %d stop token ids", TSR__FE_MAX_STOP);
    cJSON *t;
    cJSON_ArrayForEach(t, x) {
        if (!cJSON_IsNumber(t) || !(t->valuedouble >= 0 && t->valuedouble <= 2147483647.0) ||
            t->valuedouble != (double)(int64_t)t->valuedouble)
            return BAD("stop_token_ids", "invalid_type", "'stop_token_ids' must be non-negative integers");
        p->stop_ids[p->n_stop_ids++] = (int32_t)t->valuedouble;
    }
    return true;
}

static bool tsr__stop(tsr__fe_params *p, cJSON *x, tsr__fe_error *err) {
    if (!x || cJSON_IsNull(x)) return true;
    if (cJSON_IsString(x)) return tsr__fe_add_stop(p, x->valuestring, err);
    if (!cJSON_IsArray(x)) return BAD("stop", "invalid_type", "'stop' must be a string or a list of strings");
    if (cJSON_GetArraySize(x) > TSR__FE_MAX_STOP) return BAD("stop", "invalid_value", "at most %d stop strings", TSR__FE_MAX_STOP);
    cJSON *s;
    cJSON_ArrayForEach(s, x) {
        if (!cJSON_IsString(s)) return BAD("stop", "invalid_type", "'stop' must be a string or a list of strings");
        if (!tsr__fe_add_stop(p, s->valuestring, err)) return false;
    }
    return true;
}

/* OpenAI's logit_bias: {"token id": bias}. */
static bool tsr__logit_bias(tsr__fe_params *p, cJSON *x, tsr__fe_error *err) {
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsObject(x)) return BAD("logit_bias", "invalid_type", "'logit_bias' must be an object mapping token ids to biases");
    cJSON *b;
    cJSON_ArrayForEach(b, x) {
        if (!cJSON_IsNumber(b))
            return BAD("logit_bias", "invalid_type", "'logit_bias' values must be numbers (token '%.32s')", b->string);
        if (!tsr__fe_add_bias(p, b->string, b->valuedouble, err)) return false;
    }
    return true;
}

void tsr__fe_params_free(tsr__fe_params *p) {
    if (p->root) cJSON_Delete(p->root);
    free(p->messages);
    for (int i = 0; i < p->n_owned; i++) free(p->owned[i]);
    free(p->owned);
    free(p->prompt_ids);
    free(p->bias_ids);
    free(p->bias_vals);
    memset(p, 0, sizeof *p);
}

/* ---- fields Tessera does not implement yet: a 400 naming the field, never a silent 200 ----
 * Each is allowed only with a value that asks for nothing (absent, null, or the harmless value
 * its predicate accepts), so a client that sends SDK defaults still works. */
static bool tsr__nothing_empty(cJSON *x, int n) {
    (void)n;
    return (cJSON_IsArray(x) || cJSON_IsObject(x)) && !x->child;
}
static bool tsr__nothing_false(cJSON *x, int n) {
    (void)n;
    return cJSON_IsFalse(x);
}
static bool tsr__nothing_bool(cJSON *x, int n) {   /* meaningless without tools, which must be empty */
    (void)n;
    return cJSON_IsBool(x);
}
static bool tsr__nothing_one(cJSON *x, int n) {
    (void)n;
    return cJSON_IsNumber(x) && x->valuedouble == 1;
}
static bool tsr__nothing_empty_str(cJSON *x, int n) {
    (void)n;
    return cJSON_IsString(x) && !x->valuestring[0];
}
static bool tsr__nothing_choice(cJSON *x, int n) {   /* tool_choice / function_call with no tools */
    (void)n;
    return cJSON_IsString(x) && (!strcmp(x->valuestring, "none") || !strcmp(x->valuestring, "auto"));
}
static bool tsr__nothing_text(cJSON *x, int n) {     /* response_format {"type": "text"} */
    (void)n;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(x, "type");
    return cJSON_IsObject(x) && cJSON_IsString(t) && !strcmp(t->valuestring, "text") && cJSON_GetArraySize(x) == 1;
}
static bool tsr__nothing_text_only(cJSON *x, int n) {   /* modalities ["text"] */
    (void)n;
    cJSON *t = cJSON_GetArrayItem(x, 0);
    return cJSON_IsArray(x) && cJSON_GetArraySize(x) == 1 && cJSON_IsString(t) && !strcmp(t->valuestring, "text");
}

static const struct tsr__unsupported {
    const char *name;
    bool (*nothing)(cJSON *x, int n);   /* NULL: only null means nothing */
    const char *allowed;                /* said in the message */
} tsr__unsupported_fields[] = {
    {"response_format", tsr__nothing_text, "{\"type\": \"text\"}"},
    {"tools", tsr__nothing_empty, "[]"},
    {"tool_choice", tsr__nothing_choice, "\"none\" or \"auto\""},
    {"parallel_tool_calls", tsr__nothing_bool, "a boolean"},
    {"functions", tsr__nothing_empty, "[]"},
    {"function_call", tsr__nothing_choice, "\"none\" or \"auto\""},
    {"suffix", tsr__nothing_empty_str, "\"\""},
    {"use_beam_search", tsr__nothing_false, "false"},
    {"length_penalty", tsr__nothing_one, "1"},
    {"include_stop_str_in_output", tsr__nothing_false, "false"},
    {"guided_json", NULL, NULL},   /* vLLM's guided decoding */
    {"guided_regex", NULL, NULL},
    {"guided_choice", NULL, NULL},
    {"guided_grammar", NULL, NULL},
    {"prompt_logprobs", NULL, NULL},
    {"truncate_prompt_tokens", NULL, NULL},
    {"allowed_token_ids", NULL, NULL},
    {"bad_words", tsr__nothing_empty, "[]"},
    {"structured_outputs", NULL, NULL},
    {"prediction", NULL, NULL},
    {"audio", NULL, NULL},
    {"modalities", tsr__nothing_text_only, "[\"text\"]"},
    {"reasoning_effort", NULL, NULL},
    {"web_search_options", NULL, NULL},
};

static bool tsr__refuse_unsupported(tsr__fe_kind kind, cJSON *o, int n, tsr__fe_error *err) {
    for (size_t i = 0; i < sizeof tsr__unsupported_fields / sizeof tsr__unsupported_fields[0]; i++) {
        const struct tsr__unsupported *u = &tsr__unsupported_fields[i];
        if (kind == TSR__FE_CHAT && tsr__fe_structured_field(u->name)) continue;   /* tools.c's */
        cJSON *x = cJSON_GetObjectItemCaseSensitive(o, u->name);
        if (!x || cJSON_IsNull(x) || (u->nothing && u->nothing(x, n))) continue;
        if (u->allowed)
            return BAD(u->name, "unsupported_parameter", "'%s' is not supported by this server (only %s is accepted)",
                       u->name, u->allowed);
        return BAD(u->name, "unsupported_parameter", "'%s' is not supported by this server", u->name);
    }
    return true;
}

static bool tsr__parse(tsr__fe_kind kind, const char *body, size_t len, tsr__fe_params *p, tsr__fe_error *err) {
    const char *end = NULL;
    p->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!p->root) return BAD(NULL, "invalid_json", "the request body is not valid JSON");
    /* one JSON value and nothing after it but whitespace */
    for (const char *q = end; q && q < body + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
            return BAD(NULL, "invalid_json", "the request body has bytes after its JSON value (at offset %zu)",
                       (size_t)(q - body));
    cJSON *o = p->root;
    if (!cJSON_IsObject(o)) return BAD(NULL, "invalid_json", "the request body must be a JSON object");
    if (!tsr__get_str(o, "model", &p->model, err)) return false;
    if (kind == TSR__FE_CHAT) {
        if (!tsr__messages(p, cJSON_GetObjectItemCaseSensitive(o, "messages"), err)) return false;
    } else if (kind == TSR__FE_COMPLETION) {
        if (!tsr__prompt(p, cJSON_GetObjectItemCaseSensitive(o, "prompt"), err)) return false;
    } else {
        /* TurboMind: prompt is the user's turn (a string), or a messages list */
        cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        if (cJSON_IsArray(pr)) {
            if (!tsr__messages(p, pr, err)) return false;
        } else if (!tsr__get_str(o, "prompt", &p->prompt, err)) {
            return false;
        }
        if (!p->prompt && !p->messages) p->prompt = "";
        int64_t sid = 0;
        if (!tsr__get_int(o, "session_id", &sid, err)) return false;
        p->session_id = (uint64_t)sid;
        p->interactive_mode = false;
        if (!tsr__get_bool(o, "interactive_mode", &p->interactive_mode, err)) return false;
        int64_t rol = 0;
        if (!tsr__get_int(o, "request_output_len", &rol, err)) return false;
        if (rol) p->max_tokens = rol;
    }
    tsr_sampling_params_default(&p->sampling);
    double v;
    int64_t i;
    v = 1.0;
    if (!tsr__get_num(o, "temperature", &v, err)) return false;
    p->sampling.temperature = (float)v;
    v = 1.0;
    if (!tsr__get_num(o, "top_p", &v, err)) return false;
    p->sampling.top_p = (float)v;
    i = 0;
    if (!tsr__get_int(o, "top_k", &i, err)) return false;
    p->sampling.top_k = (int32_t)(i < 0 ? 0 : i);
    v = 0;
    if (!tsr__get_num(o, "min_p", &v, err)) return false;
    p->sampling.min_p = (float)v;
    v = 1;
    if (!tsr__get_num(o, "repetition_penalty", &v, err)) return false;
    p->sampling.repetition_penalty = (float)v;
    v = 0;
    if (!tsr__get_num(o, "presence_penalty", &v, err)) return false;
    p->sampling.presence_penalty = (float)v;
    v = 0;
    if (!tsr__get_num(o, "frequency_penalty", &v, err)) return false;
    p->sampling.frequency_penalty = (float)v;
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (seed && !cJSON_IsNull(seed)) {
        int64_t sv = 0;
        if (!tsr__get_int(o, "seed", &sv, err)) return false;
        p->sampling.seed = (uint64_t)sv;
    } else {
        p->sampling.seed = tsr_sampling_random_seed();
    }
    int64_t mt = p->max_tokens;
    if (!tsr__get_int(o, "max_tokens", &mt, err)) return false;
    if (!tsr__get_int(o, "max_completion_tokens", &mt, err)) return false;
    if (kind == TSR__FE_COMPLETION && mt == 0) mt = 16;   /* OpenAI's completions default */
    p->max_tokens = mt;
    i = 1;
    if (!tsr__get_int(o, "n", &i, err)) return false;
    p->n = (int)i;
    if (!tsr__refuse_unsupported(kind, o, p->n, err)) return false;
    if (kind == TSR__FE_CHAT && !tsr__fe_structured(p, o, err)) return false;
    i = p->n;
    if (!tsr__get_int(o, "best_of", &i, err)) return false;
    if (i < p->n) return BAD("best_of", "invalid_value", "'best_of' must be at least 'n' (%d), got %lld", p->n, (long long)i);
    p->best_of = (int)i > p->n ? (int)i : 0;
    if (p->best_of && kind == TSR__FE_INTERACTIVE)
        return BAD("best_of", "unsupported_parameter", "'best_of' is not supported on /v1/chat/interactive");
    if (!tsr__stop(p, cJSON_GetObjectItemCaseSensitive(o, "stop"), err)) return false;
    if (!tsr__stop_ids(p, cJSON_GetObjectItemCaseSensitive(o, "stop_token_ids"), err)) return false;
    if (!tsr__logit_bias(p, cJSON_GetObjectItemCaseSensitive(o, "logit_bias"), err)) return false;
    i = 0;
    if (!tsr__get_int(o, "min_tokens", &i, err)) return false;
    p->sampling.min_tokens = (int32_t)i;
    if (p->max_tokens > 0 && i > p->max_tokens)
        return BAD("min_tokens", "invalid_value", "'min_tokens' (%lld) must not exceed 'max_tokens' (%lld)", (long long)i,
                   (long long)p->max_tokens);
    if (!tsr__get_bool(o, "stream", &p->stream, err)) return false;
    if (!tsr__get_bool(o, "ignore_eos", &p->ignore_eos, err)) return false;
    if (!tsr__get_bool(o, "echo", &p->echo, err)) return false;
    const char *user = NULL;
    if (!tsr__get_str(o, "user", &user, err)) return false;
    cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return BAD("stream_options", "invalid_type", "'stream_options' must be an object");
        if (!p->stream) return BAD("stream_options", "invalid_value", "'stream_options' is only allowed with 'stream': true");
        cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (iu && !cJSON_IsBool(iu)) return BAD("stream_options", "invalid_type", "'include_usage' must be a boolean");
        p->include_usage = cJSON_IsTrue(iu);
    }
    p->logprobs = -1;
    if (kind == TSR__FE_CHAT) {
        bool lp = false;
        if (!tsr__get_bool(o, "logprobs", &lp, err)) return false;
        int64_t top = -1;
        if (!tsr__get_int(o, "top_logprobs", &top, err)) return false;
        if (top >= 0 && !lp) return BAD("top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs': true");
        if (lp) p->logprobs = top < 0 ? 0 : (int)top;
    } else if (kind == TSR__FE_COMPLETION) {
        int64_t lp = -1;
        if (!tsr__get_int(o, "logprobs", &lp, err)) return false;
        p->logprobs = (int)lp;
    }
    if (!tsr__fe_check_sampling(p, err)) return false;
    if (p->best_of && p->stream)
        return BAD("best_of", "unsupported_parameter", "'best_of' greater than 'n' cannot be streamed");
    /* echo: completions only (with logprobs the prompt's own come from the engine) */
    if (p->echo && kind != TSR__FE_COMPLETION)
        return BAD("echo", "unsupported_parameter", "'echo' is not supported except on /v1/completions");
    return true;
}

bool tsr__fe_parse(tsr__fe_kind kind, const char *body, size_t len, tsr__fe_params *p, tsr__fe_error *err) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    if (tsr__parse(kind, body, len, p, err)) return true;
    tsr__fe_params_free(p);
    return false;
}

void tsr__fe_to_engine(const tsr__fe_params *p, int choice, tsr_engine_request *r) {
    tsr_engine_request_default(r);
    if (p->messages) {
        r->messages = p->messages;
        r->n_messages = p->n_messages;
    } else if (p->prompt_ids) {
        r->prompt_ids = p->prompt_ids;
        r->n_prompt_ids = p->n_prompt_ids;
    } else if (p->kind == TSR__FE_INTERACTIVE) {
        /* a TurboMind interactive prompt is the user's turn: messages of one (pointing into p) */
        static __thread tsr_engine_message one;
        one.role = "user";
        one.content = p->prompt;
        r->messages = &one;
        r->n_messages = 1;
    } else {
        r->prompt = p->prompt;
    }
    r->max_new_tokens = p->max_tokens;
    r->sampling = p->sampling;
    r->sampling.seed = p->sampling.seed + (uint64_t)choice;
    if (p->best_of && r->sampling.logprobs < 0) r->sampling.logprobs = 0;   /* ranks the choices */
    r->stop = p->n_stop ? p->stop : NULL;
    r->n_stop = p->n_stop;
    r->stop_ids = p->n_stop_ids ? p->stop_ids : NULL;
    r->n_stop_ids = p->n_stop_ids;
    r->ignore_eos = p->ignore_eos;
    r->json_schema = p->json_schema;
    r->tool_functions = p->tool_mode == TSR__FE_TOOLS_FORCED ? p->tool_functions : NULL;
    r->logit_bias_ids = p->n_bias ? p->bias_ids : NULL;
    r->logit_bias_vals = p->n_bias ? p->bias_vals : NULL;
    r->n_logit_bias = p->n_bias;
    r->prompt_logprobs = p->echo && p->logprobs >= 0;
    r->prompt_top_logprobs = r->prompt_logprobs ? p->logprobs : 0;
    r->session_id = p->session_id;
    r->end_session = p->kind == TSR__FE_INTERACTIVE && p->session_id && !p->interactive_mode;
}
