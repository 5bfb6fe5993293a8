/* Structured output and tool calls on /v1/chat/completions (pure: request JSON in, engine
 * fields and OpenAI shapes out; http_tools.c streams them).
 *
 *   response_format  {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema"}}:
 *                    the engine constrains the output to the schema (coordinator/grammar); a
 *                    schema the grammar cannot honour is a 400 naming the keyword.
 *   tools            OpenAI function tools.  No built-in chat template here renders tools (the
 *                    templates are LMDeploy-style, not Jinja), so, as vLLM does for such models,
 *                    the functions are described in the system message, with the reply format
 *                    <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Hermes/Qwen2.5's).
 *   tool_choice      "none": no tools in the prompt, free text.  "auto" (the default with tools):
 *                    free text; a reply that starts with <tool_call> and whose blocks parse as
 *                    calls of the given functions is returned as tool_calls, otherwise as
 *                    content.  "required" or {"type": "function", "function": {"name"}}: the
 *                    output is constrained to one call {"name", "arguments"} of the allowed
 *                    function(s), arguments valid against its parameters schema.
 *   history          role "tool" messages become user turns wrapped in <tool_response>, an
 *                    assistant's tool_calls are written back as <tool_call> blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/fe.h"
#include "coordinator/grammar/grammar.h"

#define BAD(...) (tsr__fe_seterr(err, 400, "invalid_request_error", __VA_ARGS__), false)

static const char tsr__open_tag[] = "<tool_call>", tsr__close_tag[] = "</tool_call>";

bool tsr__fe_structured_field(const char *name) {
    return !strcmp(name, "response_format") || !strcmp(name, "tools") || !strcmp(name, "tool_choice") ||
           !strcmp(name, "parallel_tool_calls");
}

/* Keeps s (malloc'd) with the request: freed with p. */
static char *tsr__own(tsr__fe_params *p, char *s) {
    if (!s) return NULL;
    char **o = realloc(p->owned, sizeof *o * (size_t)(p->n_owned + 1));
    if (!o) {
        free(s);
        return NULL;
    }
    p->owned = o;
    p->owned[p->n_owned++] = s;
    return s;
}

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} tsr__sb;

static void tsr__sb_add(tsr__sb *b, const char *s) {
    size_t l = strlen(s);
    if (b->oom) return;
    if (b->n + l + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + l;
        char *x = realloc(b->p, cap);
        if (!x) {
            b->oom = true;
            return;
        }
        b->p = x;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

/* A message's text content (string or text parts), "" for null. */
static bool tsr__text_of(tsr__fe_params *p, const cJSON *c, tsr__sb *b, tsr__fe_error *err) {
    if (!c || cJSON_IsNull(c)) return true;
    if (cJSON_IsString(c)) {
        tsr__sb_add(b, c->valuestring);
        return true;
    }
    (void)p;
    if (!cJSON_IsArray(c)) return BAD("messages", "invalid_type", "message content must be a string or an array of text parts");
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type"), *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx))
            return BAD("messages", "invalid_value", "only content parts of type 'text' are supported");
        tsr__sb_add(b, tx->valuestring);
    }
    return true;
}

int tsr__fe_tool_message(tsr__fe_params *p, cJSON *x, tsr_engine_message *out, tsr__fe_error *err) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(x, "role");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(x, "tool_calls");
    if (!cJSON_IsString(role)) return 0;
    bool tool = !strcmp(role->valuestring, "tool");
    bool asst = !strcmp(role->valuestring, "assistant") && calls && !cJSON_IsNull(calls);
    if (!tool && !asst) return 0;
    tsr__sb b = {0};
    if (tool) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "tool_call_id");
        if (!cJSON_IsString(id)) {
            (void)BAD("messages", "missing_required_parameter", "a message of role 'tool' needs a string 'tool_call_id'");
            return -1;
        }
        tsr__sb_add(&b, "<tool_response>\n");
        if (!tsr__text_of(p, cJSON_GetObjectItemCaseSensitive(x, "content"), &b, err)) {
            free(b.p);
            return -1;
        }
        tsr__sb_add(&b, "\n</tool_response>");
        out->role = "user";
    } else {
        if (!cJSON_IsArray(calls)) {
            (void)BAD("messages", "invalid_type", "an assistant message's 'tool_calls' must be an array");
            return -1;
        }
        if (!tsr__text_of(p, cJSON_GetObjectItemCaseSensitive(x, "content"), &b, err)) {
            free(b.p);
            return -1;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, calls) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(f, "arguments");
            if (!cJSON_IsString(name) || (args && !cJSON_IsString(args) && !cJSON_IsObject(args))) {
                free(b.p);
                (void)BAD("messages", "invalid_value", "each tool call needs function.name and function.arguments (a JSON string)");
                return -1;
            }
            /* {"name": N, "arguments": A}: A as JSON when the string holds JSON */
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", name->valuestring);
            cJSON *a = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : args ? cJSON_Duplicate(args, true) : NULL;
            if (!a) a = cJSON_IsString(args) ? cJSON_CreateString(args->valuestring) : cJSON_CreateObject();
            cJSON_AddItemToObject(o, "arguments", a);
            char *js = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            if (b.n) tsr__sb_add(&b, "\n");
            tsr__sb_add(&b, tsr__open_tag);
            tsr__sb_add(&b, "\n");
            tsr__sb_add(&b, js ? js : "{}");
            tsr__sb_add(&b, "\n");
            tsr__sb_add(&b, tsr__close_tag);
            free(js);
        }
        out->role = "assistant";
    }
    if (b.oom || !b.p) tsr__sb_add(&b, "");
    if (b.oom || !tsr__own(p, b.p)) {
        (void)BAD("messages", NULL, "out of memory");
        return -1;
    }
    out->content = b.p;
    return 1;
}

/* response_format -> p->json_schema ("" for json_object), checked by compiling it. */
static bool tsr__response_format(tsr__fe_params *p, const cJSON *rf, tsr__fe_error *err) {
    if (!rf || cJSON_IsNull(rf)) return true;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(ty))
        return BAD("response_format", "invalid_type", "'response_format' must be an object with a string 'type'");
    if (!strcmp(ty->valuestring, "text")) return true;
    const cJSON *schema = NULL;
    if (!strcmp(ty->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        if (!cJSON_IsObject(js))
            return BAD("response_format", "invalid_type", "'response_format' of type json_schema needs a 'json_schema' object");
        schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (schema && !cJSON_IsObject(schema) && !cJSON_IsNull(schema))
            return BAD("response_format", "invalid_type", "'json_schema.schema' must be an object");
        if (cJSON_IsNull(schema)) schema = NULL;
    } else if (strcmp(ty->valuestring, "json_object")) {
        return BAD("response_format", "invalid_value", "'response_format' type must be text, json_object or json_schema (got '%.64s')",
                   ty->valuestring);
    }
    tsr_grammar *g = NULL;
    if (tsr_grammar_compile_json(schema, &g) != TSR_OK)
        return BAD("response_format", "invalid_value", "response_format: %s", tsr_last_error());
    tsr_grammar_free(g);
    p->json_schema = tsr__own(p, schema ? cJSON_PrintUnformatted(schema) : strdup(""));
    if (!p->json_schema) return BAD("response_format", NULL, "out of memory");
    return true;
}

static bool tsr__name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    }
    return true;
}

/* The system message's description of the tools (tool_choice other than none). */
static char *tsr__tools_prompt(const cJSON *tools) {
    tsr__sb b = {0};
    tsr__sb_add(&b, "# Tools\n\nYou can call functions to help answer the user. Their signatures, one JSON object a "
                    "line, are inside <tools></tools>:\n<tools>\n");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        char *s = cJSON_PrintUnformatted(t);
        tsr__sb_add(&b, s ? s : "{}");
        tsr__sb_add(&b, "\n");
        free(s);
    }
    tsr__sb_add(&b, "</tools>\n\nTo call a function, answer with a JSON object holding its name and arguments "
                    "inside <tool_call></tool_call> tags, one block per call:\n<tool_call>\n{\"name\": "
                    "<function name>, \"arguments\": <arguments as a JSON object>}\n</tool_call>");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Puts the tools' description into the system message (first, made when there is none). */
static bool tsr__add_system(tsr__fe_params *p, const char *text, tsr__fe_error *err) {
    if (p->n_messages > 0 && !strcmp(p->messages[0].role, "system")) {
        size_t a = strlen(p->messages[0].content), l = strlen(text);
        char *s = tsr__own(p, malloc(a + l + 3));
        if (!s) return BAD("tools", NULL, "out of memory");
        memcpy(s, p->messages[0].content, a);
        memcpy(s + a, a ? "\n\n" : "", a ? 2 : 0);
        memcpy(s + a + (a ? 2 : 0), text, l + 1);
        p->messages[0].content = s;
        return true;
    }
    tsr_engine_message *m = realloc(p->messages, sizeof *m * (size_t)(p->n_messages + 1));
    if (!m) return BAD("tools", NULL, "out of memory");
    memmove(m + 1, m, sizeof *m * (size_t)p->n_messages);
    m[0].role = "system";
    m[0].content = text;
    p->messages = m;
    p->n_messages++;
    return true;
}

bool tsr__fe_structured(tsr__fe_params *p, cJSON *o, tsr__fe_error *err) {
    if (!tsr__response_format(p, cJSON_GetObjectItemCaseSensitive(o, "response_format"), err)) return false;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(o, "tool_choice");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(o, "parallel_tool_calls");
    if (par && !cJSON_IsNull(par) && !cJSON_IsBool(par))
        return BAD("parallel_tool_calls", "invalid_type", "'parallel_tool_calls' must be a boolean");
    if (cJSON_IsNull(tools)) tools = NULL;
    if (tools && !cJSON_IsArray(tools)) return BAD("tools", "invalid_type", "'tools' must be an array");
    int n_tools = tools ? cJSON_GetArraySize(tools) : 0;
    const char *named = NULL;
    int mode = n_tools ? TSR__FE_TOOLS_AUTO : TSR__FE_TOOLS_NONE;
    if (choice && !cJSON_IsNull(choice)) {
        if (cJSON_IsString(choice)) {
            const char *c = choice->valuestring;
            if (!strcmp(c, "none")) mode = TSR__FE_TOOLS_NONE;
            else if (!strcmp(c, "auto")) mode = n_tools ? TSR__FE_TOOLS_AUTO : TSR__FE_TOOLS_NONE;
            else if (!strcmp(c, "required")) mode = TSR__FE_TOOLS_FORCED;
            else return BAD("tool_choice", "invalid_value", "'tool_choice' must be none, auto, required or a function (got '%.64s')", c);
        } else {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(choice, "type");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "function"), "name");
            if (!cJSON_IsObject(choice) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsString(nm))
                return BAD("tool_choice", "invalid_value", "'tool_choice' must be none, auto, required or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            named = nm->valuestring;
            mode = TSR__FE_TOOLS_FORCED;
        }
        if (mode == TSR__FE_TOOLS_FORCED && !n_tools)
            return BAD("tool_choice", "invalid_value", "'tool_choice' asks for a tool call but 'tools' is empty");
    }
    /* each tool: a function with a valid name and a parameters schema the grammar takes */
    cJSON *allowed = cJSON_CreateArray();
    if (!allowed) return BAD("tools", NULL, "out of memory");
    const cJSON *t;
    bool found = named == NULL;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type"), *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name"), *pa = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        if (!cJSON_IsObject(t) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsObject(f)) {
            cJSON_Delete(allowed);
            return BAD("tools", "invalid_value", "each tool must be {\"type\": \"function\", \"function\": {...}}");
        }
        if (!cJSON_IsString(nm) || !tsr__name_ok(nm->valuestring)) {
            cJSON_Delete(allowed);
            return BAD("tools", "invalid_value", "a tool's function.name must be 1-64 letters, digits, '_' or '-'");
        }
        if (pa && !cJSON_IsNull(pa) && !cJSON_IsObject(pa)) {
            cJSON_Delete(allowed);
            return BAD("tools", "invalid_type", "function '%.64s': 'parameters' must be a JSON schema object", nm->valuestring);
        }
        tsr_grammar *g = NULL;
        if (pa && cJSON_IsObject(pa) && tsr_grammar_compile_json(pa, &g) != TSR_OK) {
            cJSON_Delete(allowed);
            return BAD("tools", "invalid_value", "function '%.64s' parameters: %s", nm->valuestring, tsr_last_error());
        }
        tsr_grammar_free(g);
        if (named && strcmp(named, nm->valuestring)) continue;
        found = true;
        cJSON *one = cJSON_CreateObject();
        cJSON_AddStringToObject(one, "name", nm->valuestring);
        if (pa && cJSON_IsObject(pa)) cJSON_AddItemToObject(one, "parameters", cJSON_Duplicate(pa, true));
        cJSON_AddItemToArray(allowed, one);
    }
    if (!found) {
        cJSON_Delete(allowed);
        return BAD("tool_choice", "invalid_value", "'tool_choice' names '%.64s', which is not in 'tools'", named);
    }
    p->tool_mode = mode;
    if (mode != TSR__FE_TOOLS_NONE && p->json_schema) {
        cJSON_Delete(allowed);
        return BAD("response_format", "unsupported_parameter", "'response_format' cannot be combined with tools unless "
                   "'tool_choice' is \"none\"");
    }
    if (mode == TSR__FE_TOOLS_FORCED) {
        p->tool_functions = tsr__own(p, cJSON_PrintUnformatted(allowed));
        if (!p->tool_functions) {
            cJSON_Delete(allowed);
            return BAD("tools", NULL, "out of memory");
        }
        tsr_grammar *g = NULL;
        if (tsr_grammar_compile_functions(p->tool_functions, &g) != TSR_OK) {
            cJSON_Delete(allowed);
            return BAD("tools", "invalid_value", "tools: %s", tsr_last_error());
        }
        tsr_grammar_free(g);
    }
    cJSON_Delete(allowed);
    if (mode != TSR__FE_TOOLS_NONE) {
        char *text = tsr__own(p, tsr__tools_prompt(tools));
        if (!text) return BAD("tools", NULL, "out of memory");
        if (!tsr__add_system(p, text, err)) return false;
    }
    return true;
}

/* One call object {"name", "arguments"} -> OpenAI's tool call (NULL: not a call of a given tool). */
static cJSON *tsr__one_call(const tsr__fe_params *p, const cJSON *o, int index, bool stream) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!cJSON_IsObject(o) || !cJSON_IsString(nm)) return NULL;
    /* the name must be one of the request's tools */
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(p->root, "tools"), *t;
    bool known = false;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *n2 = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        if (cJSON_IsString(n2) && !strcmp(n2->valuestring, nm->valuestring)) known = true;
    }
    if (!known) return NULL;
    char *a = NULL;
    if (!args || cJSON_IsNull(args)) a = strdup("{}");
    else if (cJSON_IsString(args)) a = strdup(args->valuestring);
    else if (cJSON_IsObject(args)) a = cJSON_PrintUnformatted(args);
    if (!a) return NULL;
    cJSON *c = cJSON_CreateObject();
    if (stream) cJSON_AddNumberToObject(c, "index", index);
    char id[64];
    tsr__fe_make_id("call", id, sizeof id);
    id[4] = '_';
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "type", "function");
    cJSON *f = cJSON_AddObjectToObject(c, "function");
    cJSON_AddStringToObject(f, "name", nm->valuestring);
    cJSON_AddStringToObject(f, "arguments", a);
    free(a);
    return c;
}

static const char *tsr__skip_ws(const char *s) {
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
    return s;
}

cJSON *tsr__fe_tool_calls(const tsr__fe_params *p, const char *text, bool stream) {
    if (p->tool_mode == TSR__FE_TOOLS_NONE || !text) return NULL;
    cJSON *calls = cJSON_CreateArray();
    if (p->tool_mode == TSR__FE_TOOLS_FORCED) {   /* the whole output is one call */
        cJSON *o = cJSON_Parse(text);
        cJSON *c = o ? tsr__one_call(p, o, 0, stream) : NULL;
        cJSON_Delete(o);
        if (!c) {
            cJSON_Delete(calls);
            return NULL;
        }
        cJSON_AddItemToArray(calls, c);
        return calls;
    }
    /* auto: <tool_call> blocks from the start, nothing else but whitespace */
    const char *s = tsr__skip_ws(text);
    int k = 0;
    while (*s) {
        if (strncmp(s, tsr__open_tag, sizeof tsr__open_tag - 1)) goto fail;
        s += sizeof tsr__open_tag - 1;
        const char *e = strstr(s, tsr__close_tag);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        cJSON *o = cJSON_ParseWithLength(s, len);
        cJSON *c = o ? tsr__one_call(p, o, k, stream) : NULL;
        cJSON_Delete(o);
        if (!c) goto fail;
        cJSON_AddItemToArray(calls, c);
        k++;
        s = tsr__skip_ws(e ? e + sizeof tsr__close_tag - 1 : s + len);
    }
    if (k > 0) return calls;
fail:
    cJSON_Delete(calls);
    return NULL;
}

bool tsr__fe_tool_may_start(const char *text) {
    const char *s = tsr__skip_ws(text ? text : "");
    size_t n = strlen(s), t = sizeof tsr__open_tag - 1;
    return !strncmp(s, tsr__open_tag, n < t ? n : t);
}

const char *tsr__fe_reply(const tsr__fe_params *p, cJSON *m, const char *text, const char *finish) {
    cJSON *calls = tsr__fe_tool_calls(p, text, false);
    if (!calls) {
        cJSON_AddStringToObject(m, "content", text);
        return finish;
    }
    cJSON_AddNullToObject(m, "content");
    cJSON_AddItemToObject(m, "tool_calls", calls);
    return !strcmp(finish, "stop") ? "tool_calls" : finish;
}

bool tsr__fe_schema_text(tsr__fe_params *p, bool json_object, const char *schema, tsr__fe_error *err) {
    bool has_schema = schema && schema[0];
    if (!json_object && !has_schema) return true;
    if (json_object && has_schema) return BAD("json_schema", "invalid_value", "give json_object or json_schema, not both");
    tsr_grammar *g = NULL;
    if (tsr_grammar_compile(has_schema ? schema : NULL, has_schema ? strlen(schema) : 0, &g) != TSR_OK)
        return BAD(has_schema ? "json_schema" : "json_object", "invalid_value", "%s", tsr_last_error());
    tsr_grammar_free(g);
    p->json_schema = tsr__own(p, strdup(has_schema ? schema : ""));
    if (!p->json_schema) return BAD("json_schema", NULL, "out of memory");
    return true;
}
