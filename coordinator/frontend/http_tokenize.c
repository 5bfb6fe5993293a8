/* vLLM's utility endpoints beside the OpenAI API: POST /tokenize (a prompt, or chat messages
 * rendered with the served template), POST /detokenize, and GET /version.  Errors use OpenAI's
 * error object and name the field, as openai.c does for the generation endpoints. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/http.h"

#define TBAD(param, code, msg) (tsr__http_error(c, 400, "invalid_request_error", param, code, msg), (cJSON *)NULL)

/* A request body that is one JSON object; NULL after answering 400. */
static cJSON *tsr__tok_body(tsr__conn *c) {
    const char *end = NULL, *body = c->in.body ? c->in.body : "";
    cJSON *o = cJSON_ParseWithLengthOpts(body, c->in.body_len, &end, false);
    for (const char *q = end; o && q < body + c->in.body_len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            cJSON_Delete(o);
            return TBAD(NULL, "invalid_json", "the request body has bytes after its JSON value");
        }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return TBAD(NULL, "invalid_json", "the request body must be a JSON object");
    }
    cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "model");
    tsr__fe_error err;
    if (m && !cJSON_IsNull(m) &&
        (!cJSON_IsString(m) || !tsr__fe_check_model(m->valuestring, c->srv->model, c->srv->cfg.model_aliases,
                                                    c->srv->cfg.n_model_aliases, &err))) {
        cJSON_Delete(o);
        if (!cJSON_IsString(m)) return TBAD("model", "invalid_type", "'model' must be a string");
        tsr__http_respond_error(c, &err);
        return NULL;
    }
    return o;
}

static bool tsr__tok_bool(tsr__conn *c, cJSON *o, const char *name, bool *v) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsBool(x)) {
        tsr__http_error(c, 400, "invalid_request_error", name, "invalid_type", "must be a boolean");
        return false;
    }
    *v = cJSON_IsTrue(x);
    return true;
}

/* The text to encode: the prompt as given, or the messages rendered (char* malloc'd). */
static char *tsr__tok_text(tsr__conn *c, cJSON *o, bool *add_special) {
    cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt"), *ms = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (cJSON_IsString(pr) && !ms) {
        *add_special = true;   /* vLLM's default for a prompt */
        if (!tsr__tok_bool(c, o, "add_special_tokens", add_special)) return NULL;
        char *s = strdup(pr->valuestring);
        if (!s) tsr__http_error(c, 500, "server_error", NULL, NULL, "out of memory");
        return s;
    }
    if (!cJSON_IsArray(ms) || pr) {
        tsr__http_error(c, 400, "invalid_request_error", pr ? "prompt" : "messages", "invalid_value",
                        "send 'prompt' (a string) or 'messages' (an array), one of them");
        return NULL;
    }
    bool gen = true;
    *add_special = false;   /* the template carries its own special tokens */
    if (!tsr__tok_bool(c, o, "add_generation_prompt", &gen) || !tsr__tok_bool(c, o, "add_special_tokens", add_special))
        return NULL;
    int n = cJSON_GetArraySize(ms);
    tsr_chat_message *msgs = calloc((size_t)n + 1, sizeof *msgs);
    if (!msgs) {
        tsr__http_error(c, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    tsr__fe_error err;
    int k = 0;
    cJSON *x;
    cJSON_ArrayForEach(x, ms) {
        cJSON *r = cJSON_GetObjectItemCaseSensitive(x, "role"), *t = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (!cJSON_IsString(r) || !cJSON_IsString(t)) {
            free(msgs);
            tsr__http_error(c, 400, "invalid_request_error", "messages", "invalid_type",
                            "each message needs a string 'role' and a string 'content'");
            return NULL;
        }
        msgs[k].role = tsr__fe_role(r->valuestring, &err);
        if (!msgs[k].role) {
            free(msgs);
            tsr__http_respond_error(c, &err);
            return NULL;
        }
        msgs[k++].content = t->valuestring;
    }
    char *full = NULL;
    const tsr_chat_template *tmpl = tsr_engine_chat_template(c->srv->engine);
    if (!tmpl || tsr_chat_template_render(tmpl, msgs, (size_t)k, gen, &full) != TSR_OK) {
        free(msgs);
        tsr__http_error(c, 400, "invalid_request_error", "messages", "invalid_value",
                        tmpl ? tsr_last_error() : "the model has no chat template");
        return NULL;
    }
    free(msgs);
    return full;
}

static void tsr__tokenize(tsr__conn *c) {
    cJSON *o = tsr__tok_body(c);
    if (!o) return;
    bool add_special = true;
    char *text = tsr__tok_text(c, o, &add_special);
    cJSON_Delete(o);
    if (!text) return;
    const tsr_tokenizer *tok = tsr_engine_tokenizer(c->srv->engine);
    int32_t *ids = NULL;
    int64_t n = 0;
    tsr_status st = tok ? tsr_engine_encode(c->srv->engine, text, strlen(text), add_special, &ids, &n) : TSR_ERR_INVALID_ARG;
    free(text);
    if (st != TSR_OK)
        return tsr__http_error(c, 400, "invalid_request_error", "prompt", "invalid_value",
                               tok ? tsr_last_error() : "the model has no tokenizer");
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "tokens");
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    free(ids);
    cJSON_AddNumberToObject(j, "count", (double)n);
    cJSON_AddNumberToObject(j, "max_model_len", (double)tsr_engine_session_len(c->srv->engine));
    tsr__http_respond_json(c, 200, j);
}

static void tsr__detokenize(tsr__conn *c) {
    cJSON *o = tsr__tok_body(c);
    if (!o) return;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tokens"), *x;
    const tsr_tokenizer *tok = tsr_engine_tokenizer(c->srv->engine);
    int64_t vocab = tok ? tsr_tokenizer_vocab_size(tok) : 0, n = 0;
    int32_t *ids = cJSON_IsArray(t) ? malloc(sizeof(int32_t) * ((size_t)cJSON_GetArraySize(t) + 1)) : NULL;
    if (!ids) {
        cJSON_Delete(o);
        return tsr__http_error(c, 400, "invalid_request_error", "tokens", t ? "invalid_type" : "missing_required_parameter",
                               "'tokens' must be an array of token ids");
    }
    cJSON_ArrayForEach(x, t) {
        if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble < (double)vocab) ||
            x->valuedouble != (double)(int64_t)x->valuedouble) {
            free(ids);
            cJSON_Delete(o);
            return tsr__http_error(c, 400, "invalid_request_error", "tokens", "invalid_value",
                                   "'tokens' must hold token ids of this model's vocabulary");
        }
        ids[n++] = (int32_t)x->valuedouble;
    }
    cJSON_Delete(o);
    char *text = NULL;
    size_t len = 0;
    tsr_status st = tsr_tokenizer_decode(tok, ids, n, false, &text, &len);
    free(ids);
    if (st != TSR_OK) return tsr__http_error(c, 400, "invalid_request_error", "tokens", "invalid_value", tsr_last_error());
    char *clean = tsr__fe_utf8_sanitize(text, len);   /* ids may cut a character in two */
    free(text);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "prompt", clean ? clean : "");
    free(clean);
    tsr__http_respond_json(c, 200, j);
}

bool tsr__http_route_utility(tsr__conn *c, const char *path) {
    int method = c->in.method;
    bool get = method == HTTP_GET || method == HTTP_HEAD;
    if (!strcmp(path, "/version")) {
        if (!get) tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "version", c->srv->cfg.version ? c->srv->cfg.version : "unknown");
            tsr__http_respond_json(c, 200, j);
        }
        return true;
    }
    bool tokenize = !strcmp(path, "/tokenize"), detokenize = !strcmp(path, "/detokenize");
    if (!tokenize && !detokenize) return false;
    if (method != HTTP_POST) tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use POST");
    else if (!tsr__fe_utf8_valid(c->in.body, c->in.body_len))
        tsr__http_error(c, 400, "invalid_request_error", NULL, "invalid_utf8", "the request body is not valid UTF-8");
    else if (tokenize) tsr__tokenize(c);
    else tsr__detokenize(c);
    return true;
}
