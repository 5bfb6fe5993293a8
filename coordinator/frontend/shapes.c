/* OpenAI's response shapes for streams, built from plain values (no call, no engine) so the
 * server (http_answer.c) and the unit tests use the same builders: a streamed chunk of one choice,
 * the closing usage chunk, usage, the completions API's legacy logprobs, and SSE framing. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/fe.h"

static cJSON *tsr__head(const tsr__fe_chunk_info *ci) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", ci->id);
    cJSON_AddStringToObject(j, "object", ci->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)ci->created);
    cJSON_AddStringToObject(j, "model", ci->model);
    return j;
}

cJSON *tsr__fe_stream_chunk(const tsr__fe_chunk_info *ci, int index, bool role, const char *text, cJSON *logprobs,
                            const char *finish) {
    cJSON *j = tsr__head(ci), *choices = cJSON_AddArrayToObject(j, "choices"), *o = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, o);
    cJSON_AddNumberToObject(o, "index", index);
    if (ci->chat) {
        cJSON *d = cJSON_AddObjectToObject(o, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (text) cJSON_AddStringToObject(d, "content", text);
    } else {
        cJSON_AddStringToObject(o, "text", text ? text : "");
    }
    if (logprobs) cJSON_AddItemToObject(o, "logprobs", logprobs);
    else cJSON_AddNullToObject(o, "logprobs");
    if (finish) cJSON_AddStringToObject(o, "finish_reason", finish);
    else cJSON_AddNullToObject(o, "finish_reason");
    /* with include_usage every chunk carries "usage": null and the last one the figures */
    if (ci->include_usage) cJSON_AddNullToObject(j, "usage");
    return j;
}

cJSON *tsr__fe_usage_chunk(const tsr__fe_chunk_info *ci, cJSON *usage) {
    cJSON *j = tsr__head(ci);
    cJSON_AddArrayToObject(j, "choices");
    cJSON_AddItemToObject(j, "usage", usage);
    return j;
}

cJSON *tsr__fe_usage(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt_tokens + completion_tokens));
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", (double)cached_tokens);
    return u;
}

cJSON *tsr__fe_legacy_logprobs(const cJSON *entries) { return tsr__fe_legacy_logprobs_at(entries, NULL); }

cJSON *tsr__fe_legacy_logprobs_at(const cJSON *entries, const double *offsets) {
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens"), *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs"), *offs = cJSON_AddArrayToObject(o, "text_offset");
    double off = 0;
    int64_t k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, entries) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "token"));
        if (!t) t = "";
        cJSON_AddItemToArray(tokens, cJSON_CreateString(t));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber(offsets ? offsets[k] : off));
        k++;
        off += (double)strlen(t);
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(e, "logprob");
        if (!cJSON_IsNumber(lp)) {   /* the first prompt token (echo): nothing before it to predict it */
            cJSON_AddItemToArray(lps, cJSON_CreateNull());
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp->valuedouble));
        cJSON *m = cJSON_CreateObject();
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(e, "top_logprobs")) {
            const char *tt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "token"));
            if (tt && !cJSON_GetObjectItemCaseSensitive(m, tt))   /* distinct ids can decode alike */
                cJSON_AddNumberToObject(m, tt, cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(x, "logprob")));
        }
        cJSON_AddItemToArray(tops, m);
    }
    return o;
}

char *tsr__fe_sse(const cJSON *j, size_t *len) {
    char *s = cJSON_PrintUnformatted(j);
    if (!s) return NULL;
    size_t l = strlen(s);
    char *buf = malloc(l + 9);
    if (buf) {
        memcpy(buf, "data: ", 6);
        memcpy(buf + 6, s, l);
        memcpy(buf + 6 + l, "\n\n", 3);
        *len = l + 8;
    }
    free(s);
    return buf;
}
