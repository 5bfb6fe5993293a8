/* The gRPC half's service: tessera.v1.Tessera's methods (proto/tessera.proto) on top of grpc.c's
 * streams.  Health, ListModels and Tokenize are answered at once; Generate, ChatStream (a stream
 * of GenerateResponse messages, one per token, then one with the finish reason) and Chat (one
 * ChatResponse) become calls (call.c) whose parameters go through the same rules as the HTTP
 * API's (openai.c).  The method and API key are checked when a stream's HEADERS end, before any
 * of its DATA is held; refusals map to gRPC codes from the HTTP status the front end chose.
 * grpc.health.v1.Health/Check (proto/health.proto) answers SERVING or NOT_SERVING for probes;
 * strings that are not UTF-8 are INVALID_ARGUMENT, as proto3 says. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/grpc_frame.h"
#include "common/log.h"
#include "coordinator/frontend/grpc.h"
#include "health.pb-c.h"
#include "tessera.pb-c.h"

#define TSR__HEALTH_PREFIX "/grpc.health.v1.Health/"

/* Serving unless the rank group broke (tsr_engine_health) or the server is draining. */
static bool tsr__g_serving(tsr__srv *srv) {
    return !srv->draining && tsr_engine_health(srv->engine, NULL, 0) == TSR_OK;
}

/* proto3 strings must be UTF-8 (protobuf-c does not check); false after answering INVALID_ARGUMENT. */
static bool tsr__g_utf8(tsr__gstream *s, const char *field, const char *v) {
    if (!v || tsr__fe_utf8_valid(v, strlen(v))) return true;
    char m[128];
    snprintf(m, sizeof m, "'%s' is not valid UTF-8", field);
    tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, m);
    return false;
}

/* grpc.health.v1.Health/Check: the server ("") or tessera.v1.Tessera; other services NOT_FOUND. */
static void tsr__g_health_check(tsr__gstream *s, const uint8_t *msg, size_t n) {
    Grpc__Health__V1__HealthCheckRequest *q = grpc__health__v1__health_check_request__unpack(NULL, n, msg);
    if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    bool known = !q->service[0] || !strcmp(q->service, "tessera.v1.Tessera");
    bool utf8 = tsr__fe_utf8_valid(q->service, strlen(q->service));
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
    if (!utf8) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "'service' is not valid UTF-8");
    if (!known) return tsr__grpc_finish(s, TSR__GRPC_NOT_FOUND, "unknown service");
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = tsr__g_serving(s->srv) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    tsr__grpc_send(s, &r.base);
    tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
}

/* Generate and ChatStream answer with a stream of GenerateResponse messages. */
static bool tsr__g_streams(const tsr__gstream *s) {
    return !strcmp(s->path, "/tessera.v1.Tessera/Generate") || !strcmp(s->path, "/tessera.v1.Tessera/ChatStream");
}

static void tsr__g_on_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__gstream *s = c->owner;
    if (!tsr__g_streams(s)) {
        tsr__choice_text_append(ch, ev->text, ev->text_len);   /* Chat: accumulate */
        return;
    }
    Tessera__V1__GenerateResponse r = TESSERA__V1__GENERATE_RESPONSE__INIT;
    int32_t id = ev->token;
    if (id >= 0) {
        r.n_ids = 1;
        r.ids = &id;
    }
    r.text = (char *)(ev->text ? ev->text : "");
    Tessera__V1__TokenLogprob lp[1 + TSR_SAMPLING_MAX_LOGPROBS], *lpp[1 + TSR_SAMPLING_MAX_LOGPROBS];
    char *texts[1 + TSR_SAMPLING_MAX_LOGPROBS] = {0};
    if (ev->sample && c->p.logprobs >= 0) {
        int n = 1 + ev->sample->n_top;
        for (int i = 0; i < n; i++) {
            tessera__v1__token_logprob__init(&lp[i]);
            lp[i].id = i == 0 ? ev->sample->token : ev->sample->top[i - 1].id;
            lp[i].logprob = i == 0 ? ev->sample->logprob : ev->sample->top[i - 1].logprob;
            texts[i] = tsr__srv_token_text(c->srv, lp[i].id);
            lp[i].text = texts[i] ? texts[i] : (char *)"";
            lpp[i] = &lp[i];
        }
        r.n_logprobs = (size_t)n;
        r.logprobs = lpp;
    }
    r.completion_tokens = (uint32_t)ch->completion_tokens;
    tsr__grpc_send(s, &r.base);
    for (int i = 0; i < 1 + TSR_SAMPLING_MAX_LOGPROBS; i++) free(texts[i]);
    tsr__grpc_stream_sent(s);
}

static void tsr__g_on_done(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    (void)c;
    (void)ch;
    (void)ev;
}

static void tsr__g_on_complete(tsr__call *c) {
    tsr__gstream *s = c->owner;
    tsr__choice *ch = &c->ch[0];
    s->call = NULL;
    c->owner = NULL;
    if (ch->finish == TSR_FINISH_ERROR) {
        tsr__grpc_finish(s, ch->error == TSR_ERR_INVALID_ARG ? TSR__GRPC_INVALID_ARGUMENT : TSR__GRPC_INTERNAL,
                    ch->error_message[0] ? ch->error_message : "generation failed");
    } else if (tsr__g_streams(s)) {
        Tessera__V1__GenerateResponse r = TESSERA__V1__GENERATE_RESPONSE__INIT;
        r.finish_reason = (char *)tsr_finish_reason_str(ch->finish);
        r.prompt_tokens = (uint32_t)ch->prompt_tokens;
        r.completion_tokens = (uint32_t)ch->completion_tokens;
        tsr__grpc_send(s, &r.base);
        tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
    } else {
        Tessera__V1__ChatResponse r = TESSERA__V1__CHAT_RESPONSE__INIT;
        Tessera__V1__ChatMessage m = TESSERA__V1__CHAT_MESSAGE__INIT;
        m.role = (char *)"assistant";
        m.content = ch->text ? ch->text : (char *)"";
        r.message = &m;
        r.finish_reason = (char *)tsr_finish_reason_str(ch->finish);
        r.prompt_tokens = (uint32_t)ch->prompt_tokens;
        r.completion_tokens = (uint32_t)ch->completion_tokens;
        tsr__grpc_send(s, &r.base);
        tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
    }
    tsr__grpc_flush(s);
}

/* The gRPC code for a refused call, from the HTTP status the front end chose for it. */
static int tsr__g_code(int http_status);

/* The call is submitted (or refused: the stream ends here). */
static void tsr__g_on_submitted(tsr__call *c, const tsr__fe_error *err, bool later) {
    tsr__gstream *s = c->owner;
    if (err) {
        s->call = NULL;
        tsr__call_detach(c);
        tsr__grpc_finish(s, tsr__g_code(err->status), err->message);
    } else if (tsr__g_streams(s)) {
        tsr__grpc_start_response(s);   /* headers now */
    }
    if (later) tsr__grpc_flush(s);   /* inside nghttp2's callbacks the connection flushes itself */
}

static const tsr__call_ops tsr__grpc_ops = {tsr__g_on_token, tsr__g_on_done, tsr__g_on_complete, tsr__g_on_submitted};

/* SamplingParams -> params, by the rules HTTP's requests follow (openai.c); proto3's zero means
 * "not set" for the knobs whose zero is invalid. */
static bool tsr__g_params(const Tessera__V1__SamplingParams *sp, tsr__fe_params *p, tsr__fe_error *err) {
    tsr_sampling_params_default(&p->sampling);
    p->max_tokens = 128;
    p->logprobs = -1;
    p->n = 1;
    p->sampling.seed = sp && sp->has_seed ? sp->seed : tsr_sampling_random_seed();
    if (sp) {
        if ((sp->max_tokens && !tsr__fe_check("max_tokens", sp->max_tokens, err)) ||
            !tsr__fe_check("temperature", sp->temperature, err) ||
            (sp->top_p > 0 && !tsr__fe_check("top_p", sp->top_p, err)) || !tsr__fe_check("top_k", sp->top_k, err) ||
            !tsr__fe_check("min_p", sp->min_p, err) ||
            (sp->repetition_penalty > 0 && !tsr__fe_check("repetition_penalty", sp->repetition_penalty, err)) ||
            !tsr__fe_check("presence_penalty", sp->presence_penalty, err) ||
            !tsr__fe_check("frequency_penalty", sp->frequency_penalty, err) ||
            !tsr__fe_check("top_logprobs", sp->top_logprobs, err))
            return false;
        if (sp->max_tokens) p->max_tokens = sp->max_tokens;
        p->sampling.temperature = sp->temperature;
        if (sp->top_p > 0) p->sampling.top_p = sp->top_p;
        p->sampling.top_k = (int32_t)sp->top_k;
        p->sampling.min_p = sp->min_p;
        if (sp->repetition_penalty > 0) p->sampling.repetition_penalty = sp->repetition_penalty;
        p->sampling.presence_penalty = sp->presence_penalty;
        p->sampling.frequency_penalty = sp->frequency_penalty;
        for (size_t i = 0; i < sp->n_stop; i++) {
            if (!tsr__fe_utf8_valid(sp->stop[i], strlen(sp->stop[i]))) {
                tsr__fe_seterr(err, 400, "invalid_request_error", "stop", "invalid_utf8", "'stop' is not valid UTF-8");
                return false;
            }
            if (!tsr__fe_add_stop(p, sp->stop[i], err)) return false;
        }
        p->ignore_eos = sp->ignore_eos;
        if (sp->top_logprobs && !sp->logprobs) {   /* as HTTP: never silently ignored */
            tsr__fe_seterr(err, 400, "invalid_request_error", "top_logprobs", "invalid_value",
                           "'top_logprobs' needs 'logprobs': true");
            return false;
        }
        if (sp->logprobs) p->logprobs = (int)sp->top_logprobs;
        for (size_t i = 0; i < sp->n_logit_bias; i++) {
            char key[16];
            if (sp->logit_bias[i]->key < 0) {   /* the same message as HTTP's for a negative key */
                tsr__fe_seterr(err, 400, "invalid_request_error", "logit_bias", "invalid_value",
                               "'logit_bias' keys must be token ids (non-negative integers), got '%d'", sp->logit_bias[i]->key);
                return false;
            }
            snprintf(key, sizeof key, "%d", sp->logit_bias[i]->key);
            if (!tsr__fe_add_bias(p, key, sp->logit_bias[i]->value, err)) return false;
        }
        if (!tsr__fe_schema_text(p, sp->json_object, sp->json_schema, err)) return false;   /* tools.c */
        if (!tsr__fe_check("min_tokens", sp->min_tokens, err)) return false;
        p->sampling.min_tokens = (int32_t)sp->min_tokens;
        if (sp->min_tokens > p->max_tokens) {
            tsr__fe_seterr(err, 400, "invalid_request_error", "min_tokens", "invalid_value",
                           "'min_tokens' (%u) must not exceed 'max_tokens' (%lld)", sp->min_tokens, (long long)p->max_tokens);
            return false;
        }
    }
    return tsr__fe_check_sampling(p, err);
}

/* The gRPC code for a refused call, from the HTTP status the front end chose for it. */
static int tsr__g_code(int http_status) {
    switch (http_status) {
    case 400: return TSR__GRPC_INVALID_ARGUMENT;
    case 404: return TSR__GRPC_NOT_FOUND;
    case 429: return TSR__GRPC_RESOURCE_EXHAUSTED;   /* past --max-queue: come back later */
    default: return TSR__GRPC_UNAVAILABLE;
    }
}

/* A copy of str that p owns (the call may tokenize on a worker thread after the request
 * message is freed); NULL when out of memory. */
static const char *tsr__g_own(tsr__fe_params *p, const char *str) {
    char *c = strdup(str), **o = c ? realloc(p->owned, sizeof *o * (size_t)(p->n_owned + 1)) : NULL;
    if (!o) {
        free(c);
        return NULL;
    }
    p->owned = o;
    o[p->n_owned++] = c;
    return c;
}

static void tsr__g_submit(tsr__gstream *s, tsr__fe_params *p) {
    tsr__call *call = tsr__call_new(s->srv, 3, p, s, &tsr__grpc_ops);
    if (!call) return tsr__grpc_finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
    s->call = call;
    tsr__call_submit(call);   /* tsr__g_on_submitted goes on */
}

static bool tsr__g_model_ok(tsr__gstream *s, const char *model) {
    if (!tsr__g_utf8(s, "model", model)) return false;
    tsr__fe_error err;
    if (tsr__fe_check_model(model, s->srv->model, s->srv->cfg.model_aliases, s->srv->cfg.n_model_aliases, &err)) return true;
    tsr__grpc_finish(s, tsr__g_code(err.status), err.message);
    return false;
}

/* A Generate's or Chat's model and sampling parameters; false after answering the stream. */
static bool tsr__g_model_and_params(tsr__gstream *s, const char *model, const Tessera__V1__SamplingParams *sp,
                                    tsr__fe_params *p) {
    if (!tsr__g_model_ok(s, model)) return false;
    tsr__fe_error err;
    if (tsr__g_params(sp, p, &err) && tsr__fe_check_vocab(p, tsr_engine_vocab_size(s->srv->engine), &err)) return true;
    tsr__grpc_finish(s, tsr__g_code(err.status), err.message);
    return false;
}

/* When a request's HEADERS end: unknown methods and missing or wrong API keys are answered
 * here, before any DATA is held.  Returns false if the stream was answered. */
bool tsr__grpc_service_headers(tsr__gstream *s) {
    tsr__srv *srv = s->srv;
    const char *m = s->path;
    if (!strcmp(m, TSR__HEALTH_PREFIX "Check")) return true;   /* probes carry no key, as Health */
    if (tsr__grpc_reflection_path(m)) {   /* what the server offers: no key, as grpcurl asks before it has one */
        s->in_stream = true;
        return true;
    }
    if (!strcmp(m, TSR__HEALTH_PREFIX "Watch")) {
        tsr__grpc_reject(s, TSR__GRPC_UNIMPLEMENTED, "Watch is not supported: poll Check");
        return false;
    }
    if (strncmp(m, "/tessera.v1.Tessera/", 20)) {
        tsr__grpc_reject(s, TSR__GRPC_UNIMPLEMENTED, "unknown service");
        return false;
    }
    m += 20;
    bool known = !strcmp(m, "Generate") || !strcmp(m, "Chat") || !strcmp(m, "ChatStream") || !strcmp(m, "Tokenize") ||
                 !strcmp(m, "Health") || !strcmp(m, "ListModels");
    if (!known) {
        tsr__grpc_reject(s, TSR__GRPC_UNIMPLEMENTED, "unknown method");
        return false;
    }
    if (strcmp(m, "Health") && srv->cfg.n_api_keys) {
        bool ok = false;
        if (!strncasecmp(s->auth, "Bearer ", 7))
            for (int i = 0; i < srv->cfg.n_api_keys; i++)
                ok |= tsr__fe_key_equal(s->auth + 7, strlen(s->auth + 7), srv->cfg.api_keys[i]);
        if (!ok) {
            tsr__grpc_reject(s, TSR__GRPC_UNAUTHENTICATED, "missing or invalid API key (authorization: Bearer KEY)");
            return false;
        }
    }
    return true;
}

/* The whole request is in (END_STREAM): decode it and answer or submit. */
void tsr__grpc_service_handle(tsr__gstream *s) {
    tsr__srv *srv = s->srv;
    const char *m = s->path + 20;
    size_t n = 0;
    int fr = tsr_grpc_frame(s->in, s->in_len, (size_t)srv->cfg.max_body_bytes, &n);
    if (fr == TSR_GRPC_FRAME_TOO_BIG)
        return tsr__grpc_finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
    if (fr == TSR_GRPC_FRAME_COMPRESSED) return tsr__grpc_finish(s, TSR__GRPC_UNIMPLEMENTED, "compressed messages are not supported");
    if (fr != TSR_GRPC_FRAME_OK) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "missing or malformed request message");
    if (n != s->in_len - 5) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "exactly one request message expected");
    const uint8_t *msg = s->in + 5;
    tsr__fe_error err;
    if (!strncmp(s->path, TSR__HEALTH_PREFIX, sizeof TSR__HEALTH_PREFIX - 1)) return tsr__g_health_check(s, msg, n);

    if (!strcmp(m, "Health")) {
        Tessera__V1__HealthRequest *q = tessera__v1__health_request__unpack(NULL, n, msg);
        if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed HealthRequest");
        tessera__v1__health_request__free_unpacked(q, NULL);
        Tessera__V1__HealthResponse r = TESSERA__V1__HEALTH_RESPONSE__INIT;
        r.status = !tsr__g_serving(srv) ? TESSERA__V1__HEALTH_RESPONSE__STATUS__NOT_SERVING
                                        : TESSERA__V1__HEALTH_RESPONSE__STATUS__SERVING;
        tsr__grpc_send(s, &r.base);
        return tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
    }
    if (!strcmp(m, "ListModels")) {
        Tessera__V1__ListModelsRequest *q = tessera__v1__list_models_request__unpack(NULL, n, msg);
        if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed ListModelsRequest");
        tessera__v1__list_models_request__free_unpacked(q, NULL);
        Tessera__V1__ListModelsResponse r = TESSERA__V1__LIST_MODELS_RESPONSE__INIT;
        /* the served id, then its aliases (--model-name given again) */
        int nm = 1 + srv->cfg.n_model_aliases;
        Tessera__V1__ModelInfo *mi = calloc((size_t)nm, sizeof *mi), **mip = calloc((size_t)nm, sizeof *mip);
        if (!mi || !mip) {
            free(mi);
            free(mip);
            return tsr__grpc_finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
        }
        for (int i = 0; i < nm; i++) {
            tessera__v1__model_info__init(&mi[i]);
            mi[i].id = (char *)(i ? srv->cfg.model_aliases[i - 1] : srv->model);
            mi[i].max_context = (uint32_t)tsr_engine_session_len(srv->engine);
            mip[i] = &mi[i];
        }
        r.n_models = (size_t)nm;
        r.models = mip;
        tsr__grpc_send(s, &r.base);
        free(mi);
        free(mip);
        return tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
    }
    if (!strcmp(m, "Tokenize")) {
        Tessera__V1__TokenizeRequest *q = tessera__v1__tokenize_request__unpack(NULL, n, msg);
        if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed TokenizeRequest");
        if (!tsr__g_model_ok(s, q->model) || !tsr__g_utf8(s, "text", q->text)) {
            tessera__v1__tokenize_request__free_unpacked(q, NULL);
            return;
        }
        const tsr_tokenizer *tok = tsr_engine_tokenizer(srv->engine);
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        if (!tok || tsr_engine_encode(srv->engine, q->text, strlen(q->text), q->add_special_tokens, &ids, &n_ids) != TSR_OK) {
            tessera__v1__tokenize_request__free_unpacked(q, NULL);
            return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, tok ? tsr_last_error() : "the model has no tokenizer");
        }
        tessera__v1__tokenize_request__free_unpacked(q, NULL);
        Tessera__V1__TokenizeResponse r = TESSERA__V1__TOKENIZE_RESPONSE__INIT;
        r.n_ids = (size_t)n_ids;
        r.ids = ids;
        tsr__grpc_send(s, &r.base);
        free(ids);
        return tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
    }
    if (srv->draining) return tsr__grpc_finish(s, TSR__GRPC_UNAVAILABLE, "the server is shutting down");
    tsr__fe_params p;
    memset(&p, 0, sizeof p);
    if (!strcmp(m, "Generate")) {
        Tessera__V1__GenerateRequest *q = tessera__v1__generate_request__unpack(NULL, n, msg);
        if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed GenerateRequest");
        p.kind = TSR__FE_COMPLETION;
        bool ok = tsr__g_model_and_params(s, q->model, q->params, &p) && tsr__g_utf8(s, "prompt", q->prompt);
        if (ok && q->n_prompt_ids) {
            p.prompt_ids = malloc(sizeof(int32_t) * q->n_prompt_ids);
            if (p.prompt_ids) memcpy(p.prompt_ids, q->prompt_ids, sizeof(int32_t) * q->n_prompt_ids);
            p.n_prompt_ids = p.prompt_ids ? (int64_t)q->n_prompt_ids : 0;
        } else if (ok && !q->prompt[0]) {
            tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "prompt or prompt_ids is required");
            ok = false;
        }
        p.prompt = tsr__g_own(&p, q->prompt);
        if (ok && !p.prompt) {
            tsr__grpc_finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
            ok = false;
        }
        p.session_id = q->session_id;
        if (ok) tsr__g_submit(s, &p);
        else tsr__fe_params_free(&p);
        tessera__v1__generate_request__free_unpacked(q, NULL);
        return;
    }
    Tessera__V1__ChatRequest *q = tessera__v1__chat_request__unpack(NULL, n, msg);
    if (!q) return tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed ChatRequest");
    p.kind = TSR__FE_CHAT;
    bool ok = tsr__g_model_and_params(s, q->model, q->params, &p);
    if (ok && !q->n_messages) {
        tsr__grpc_finish(s, TSR__GRPC_INVALID_ARGUMENT, "messages must not be empty");
        ok = false;
    }
    if (ok) {
        p.messages = calloc(q->n_messages, sizeof *p.messages);
        for (size_t i = 0; p.messages && i < q->n_messages; i++) {
            if (!tsr__g_utf8(s, "messages.role", q->messages[i]->role) ||
                !tsr__g_utf8(s, "messages.content", q->messages[i]->content)) {
                ok = false;
                break;
            }
            const char *r = tsr__fe_role(q->messages[i]->role, &err);
            if (!r) {
                tsr__grpc_finish(s, tsr__g_code(err.status), err.message);
                ok = false;
                break;
            }
            p.messages[i].role = tsr__g_own(&p, r);
            p.messages[i].content = tsr__g_own(&p, q->messages[i]->content);
            if (!p.messages[i].role || !p.messages[i].content) {
                tsr__grpc_finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
                ok = false;
                break;
            }
        }
        p.n_messages = (int64_t)q->n_messages;
        p.session_id = q->session_id;
    }
    if (ok) tsr__g_submit(s, &p);
    else tsr__fe_params_free(&p);
    tessera__v1__chat_request__free_unpacked(q, NULL);
}
