/* The HTTP half's routes: what each request means once http.c has read it whole -- Host and
 * Origin checks (DNS rebinding, CORS), API keys, /health, /metrics, the web page and its icon
 * (both served without a key), /v1/models, and the OpenAI endpoints plus TurboMind's
 * /v1/chat/interactive, which parse the body (openai.c) and start a call answered by
 * http_answer.c.  Past max_running + max_queue engine requests a call gets 429 (call.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "coordinator/frontend/http.h"

/* the web page and its icon, embedded at build time (frontend.cmake) */
extern const unsigned char tsr__web_index_html[];
extern const size_t tsr__web_index_html_len;
extern const unsigned char tsr__web_favicon_svg[];
extern const size_t tsr__web_favicon_svg_len;

/* One model object of /v1/models: the served id or one of its aliases. */
static cJSON *tsr__model_json(tsr__srv *s, const char *id) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "tessera");
    cJSON_AddStringToObject(m, "root", s->model);
    cJSON_AddNumberToObject(m, "max_model_len", (double)tsr_engine_session_len(s->engine));
    return m;
}

static cJSON *tsr__models_json(tsr__srv *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(j, "data");
    cJSON_AddItemToArray(data, tsr__model_json(s, s->model));
    for (int i = 0; i < s->cfg.n_model_aliases; i++) cJSON_AddItemToArray(data, tsr__model_json(s, s->cfg.model_aliases[i]));
    return j;
}

static int tsr__hex(char ch) {
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* %-escapes decoded in place; false for a malformed escape or an escaped NUL. */
static bool tsr__url_decode(char *s) {
    char *o = s;
    for (const char *q = s; *q; q++) {
        if (*q != '%') {
            *o++ = *q;
            continue;
        }
        int hi = tsr__hex(q[1]), lo = hi < 0 ? -1 : tsr__hex(q[2]);
        if (lo < 0 || (hi | lo) == 0) return false;
        *o++ = (char)(hi * 16 + lo);
        q += 2;
    }
    *o = 0;
    return true;
}

static bool tsr__authorized(tsr__conn *c) {
    const tsr_server_config *cfg = &c->srv->cfg;
    if (cfg->n_api_keys == 0) return true;
    if (c->in.auth_len < 7 || strncasecmp(c->in.auth, "Bearer ", 7)) return false;
    const char *k = c->in.auth + 7;
    size_t kl = c->in.auth_len - 7;
    bool ok = false;
    for (int i = 0; i < cfg->n_api_keys; i++) ok |= tsr__fe_key_equal(k, kl, cfg->api_keys[i]);
    return ok;
}

/* Host and Origin (DNS rebinding, cross-origin pages): false after answering 421 / 403.  An
 * allowed Origin gets CORS headers on the answer, and OPTIONS preflights are answered here. */
static bool tsr__origin_checked(tsr__conn *c) {
    const tsr_server_config *cfg = &c->srv->cfg;
    tsr__http_policy pol = {cfg->host, cfg->port, cfg->allowed_origins, cfg->n_allowed_origins,
                            cfg->allowed_hosts, cfg->n_allowed_hosts};
    const tsr__http_in *in = &c->in;
    if (in->host_too_long || (in->has_host && !tsr__http_host_ok(&pol, in->host))) {
        c->in.keep_alive = false;
        tsr__http_error(c, 421, "invalid_request_error", NULL, "host_not_allowed",
                        "this server does not answer to that Host name (--allowed-hosts)");
        return false;
    }
    bool preflight = in->method == HTTP_OPTIONS;
    if (in->has_origin) {
        if (in->origin_too_long || !tsr__http_origin_ok(&pol, in->origin, in->has_host ? in->host : NULL)) {
            c->in.keep_alive = false;
            c->srv->metrics.origin_refused++;
            tsr__http_error(c, 403, "invalid_request_error", NULL, "origin_not_allowed",
                            "cross-origin requests from this Origin are not allowed (--allowed-origins)");
            return false;
        }
        /* header names only: letters, digits, '-', ',' and spaces (anything else is dropped) */
        char hdrs[256];
        size_t k = 0;
        for (size_t i = 0; i < in->acr_len && k < sizeof hdrs - 1; i++) {
            char ch = in->acr_headers[i];
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                ch == ',' || ch == ' ')
                hdrs[k++] = ch;
        }
        hdrs[k] = 0;
        snprintf(c->cors, sizeof c->cors,
                 "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s%s%s%s", in->origin,
                 preflight ? "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Max-Age: 600\r\n" : "",
                 preflight ? "Access-Control-Allow-Headers: " : "",
                 preflight ? (k ? hdrs : "Authorization, Content-Type") : "", preflight ? "\r\n" : "");
    }
    if (preflight) {
        tsr__http_respond(c, 200, "text/plain", "", 0, "Allow: GET, HEAD, POST, OPTIONS\r\n");
        return false;
    }
    return true;
}

void tsr__http_route(tsr__conn *c) {
    tsr__srv *s = c->srv;
    struct http_parser_url u;
    http_parser_url_init(&u);
    char path[2048];
    if (http_parser_parse_url(c->in.url, c->in.url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        tsr__http_error(c, 400, "invalid_request_error", NULL, "bad_url", "malformed request target");
        return;
    }
    snprintf(path, sizeof path, "%.*s", (int)u.field_data[UF_PATH].len, c->in.url + u.field_data[UF_PATH].off);
    int method = c->in.method;
    bool get = method == HTTP_GET || method == HTTP_HEAD, post = method == HTTP_POST;
    /* /health carries no data and load balancers probe it with their own Host: not checked */
    if (strcmp(path, "/health") && !tsr__origin_checked(c)) return;

    if (!strcmp(path, "/health")) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        char why[512];
        if (tsr_engine_health(s->engine, why, sizeof why) != TSR_OK) {   /* the rank group broke */
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "status", "unhealthy");
            cJSON_AddStringToObject(j, "message", why);
            char *b = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            if (!b) return tsr__http_respond(c, 503, "application/json", "{\"status\":\"unhealthy\"}", 22, NULL);
            tsr__http_respond(c, 503, "application/json", b, strlen(b), NULL);
            free(b);
            return;
        }
        if (s->draining) return tsr__http_respond(c, 503, "application/json", "{\"status\":\"draining\"}", 21, NULL);
        return tsr__http_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    /* the page and its icon are static and carry no data: they load without a key, and the
     * page sends the key its user types on its own API calls */
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return tsr__http_respond(c, 200, "text/html; charset=utf-8", (const char *)tsr__web_index_html,
                                 tsr__web_index_html_len, NULL);
    }
    if (!strcmp(path, "/favicon.ico")) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return tsr__http_respond(c, 200, "image/svg+xml", (const char *)tsr__web_favicon_svg, tsr__web_favicon_svg_len,
                                 "Cache-Control: max-age=86400\r\n");
    }
    if (!tsr__authorized(c))
        return tsr__http_error(c, 401, "authentication_error", NULL, "invalid_api_key",
                               "missing or invalid API key: send 'Authorization: Bearer KEY'");
    if (!strcmp(path, "/metrics")) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        tsr_engine_stats st;
        tsr_engine_get_stats(s->engine, &st);
        s->metrics.held_bytes = s->held_bytes;
        char *text = tsr__fe_metrics_render(&s->metrics, &st, s->connections, s->draining);
        tsr__http_respond(c, 200, "text/plain; version=0.0.4", text ? text : "", text ? strlen(text) : 0, NULL);
        free(text);
        return;
    }
    if (!strcmp(path, "/v1/models")) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return tsr__http_respond_json(c, 200, tsr__models_json(s));
    }
    if (!strncmp(path, "/v1/models/", 11)) {
        if (!get) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        char *id = path + 11;
        tsr__fe_error err;
        if (!tsr__url_decode(id) || !tsr__fe_utf8_valid(id, strlen(id)) ||
            !tsr__fe_check_model(id[0] ? id : "\x01", s->model, s->cfg.model_aliases, s->cfg.n_model_aliases, &err))
            return tsr__http_error(c, 404, "invalid_request_error", "model", "model_not_found", "no such model");
        return tsr__http_respond_json(c, 200, tsr__model_json(s, id));
    }
    if (tsr__http_route_utility(c, path)) return;
    int api = !strcmp(path, "/v1/chat/completions") ? 0
              : !strcmp(path, "/v1/completions")    ? 1
              : !strcmp(path, "/v1/chat/interactive") ? 2
                                                       : -1;
    if (api < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %.200s", path);
        return tsr__http_error(c, 404, "invalid_request_error", NULL, "unknown_url", msg);
    }
    if (!post) return tsr__http_error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use POST");
    if (s->draining)
        return tsr__http_error(c, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    if (!tsr__fe_utf8_valid(c->in.body, c->in.body_len))
        return tsr__http_error(c, 400, "invalid_request_error", NULL, "invalid_utf8", "the request body is not valid UTF-8");
    tsr__fe_params p;
    tsr__fe_error err;
    tsr__fe_kind kind = api == 0 ? TSR__FE_CHAT : api == 1 ? TSR__FE_COMPLETION : TSR__FE_INTERACTIVE;
    if (!tsr__fe_parse(kind, c->in.body ? c->in.body : "", c->in.body_len, &p, &err)) return tsr__http_respond_error(c, &err);
    if (!tsr__fe_check_model(p.model, s->model, s->cfg.model_aliases, s->cfg.n_model_aliases, &err)) {
        tsr__fe_params_free(&p);
        return tsr__http_respond_error(c, &err);
    }
    if (!tsr__fe_check_vocab(&p, tsr_engine_vocab_size(s->engine), &err)) {
        tsr__fe_params_free(&p);
        return tsr__http_respond_error(c, &err);
    }
    if (api == 2 && !p.session_id && !p.prompt && !p.messages) {
        tsr__fe_params_free(&p);
        return tsr__http_error(c, 400, "invalid_request_error", "prompt", NULL, "'prompt' is required");
    }
    if (api == 2 && p.session_id && !p.interactive_mode && p.prompt && !p.prompt[0]) {
        /* TurboMind: an empty turn without interactive mode ends the session */
        tsr_engine_end_session(s->engine, p.session_id);
        tsr__fe_params_free(&p);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", "");
        cJSON_AddNumberToObject(j, "tokens", 0);
        cJSON_AddStringToObject(j, "finish_reason", "stop");
        return tsr__http_respond_json(c, 200, j);
    }
    tsr__call *call = tsr__call_new(s, api, &p, c, &tsr__http_ops);
    if (!call) return tsr__http_error(c, 500, "server_error", NULL, NULL, "out of memory");
    c->call = call;
    tsr__call_submit(call);   /* the answer continues in tsr__http_on_submitted, then the engine's events */
}
