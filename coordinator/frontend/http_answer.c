/* The HTTP half's answers to calls (tsr__http_ops): engine events become OpenAI shapes
 * (chat.completion / text_completion objects, their streamed chunks with usage and logprobs,
 * shapes.c builds the JSON) or TurboMind's interactive answers (JSON lines), and a stream whose
 * client stops reading is dropped past max_unsent_bytes.  Writing is http.c's. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/frontend/http.h"

/* One token's logprob entry: chat shape {token, logprob, bytes, top_logprobs}. */
static cJSON *tsr__logprob_entry(tsr__srv *s, const tsr_sample_result *r, bool top_too) {
    cJSON *e = cJSON_CreateObject();
    char *t = tsr__srv_token_text(s, r->token);
    cJSON_AddStringToObject(e, "token", t ? t : "");
    cJSON_AddNumberToObject(e, "logprob", r->logprob);
    cJSON *bytes = cJSON_AddArrayToObject(e, "bytes");
    for (const unsigned char *p = (const unsigned char *)(t ? t : ""); *p; p++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber(*p));
    free(t);
    if (top_too) {
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int i = 0; i < r->n_top; i++) {
            tsr_sample_result one = {.token = r->top[i].id, .logprob = r->top[i].logprob};
            cJSON_AddItemToArray(top, tsr__logprob_entry(s, &one, false));
        }
    }
    return e;
}

static tsr__fe_chunk_info tsr__chunk_info(const tsr__call *c);

/* Characters (code points) in n bytes of UTF-8: text_offset counts them, as OpenAI's and vLLM's
 * (Python str) offsets do. */
static int64_t tsr__cp_len(const char *t, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)t[i] & 0xC0) != 0x80;
    return k;
}

/* text_offset of each of ids[0..n) in text that starts at `base` characters: where the text of
 * the tokens before it ends, as the incremental detokenizer makes it. */
static void tsr__offsets(tsr__srv *s, const int32_t *ids, int64_t n, bool skip_special, double base, double *out) {
    const tsr_tokenizer *tok = tsr_engine_tokenizer(s->engine);
    tsr_detok d;
    if (tok) tsr_detok_init(&d, tok, skip_special);
    double cum = base;
    for (int64_t i = 0; i < n; i++) {
        out[i] = cum;
        char *piece = NULL;
        size_t len = 0;
        if (tok && tsr_detok_push(&d, ids[i], &piece, &len) == TSR_OK) cum += (double)tsr__cp_len(piece, len);
        free(piece);
    }
}

/* echo: the prompt as the answer repeats it (a text prompt as given; token ids decoded). */
static char *tsr__echo_text(tsr__call *c) {
    if (c->p.prompt) return strdup(c->p.prompt);
    const tsr_tokenizer *tok = tsr_engine_tokenizer(c->srv->engine);
    char *t = NULL, *out;
    size_t len = 0;
    if (!tok || tsr_tokenizer_decode(tok, c->p.prompt_ids, c->p.n_prompt_ids, false, &t, &len) != TSR_OK)
        return strdup("");
    out = tsr__fe_utf8_sanitize(t, len);
    free(t);
    return out;
}

/* echo with logprobs: the prompt's entries (the first with a null logprob), appended to arr. */
static void tsr__prompt_entries(tsr__srv *s, const tsr__choice *ch, cJSON *arr) {
    for (int64_t i = 0; i < ch->n_p; i++) {
        if (i == 0) {
            cJSON *e = cJSON_CreateObject();
            char *t = tsr__srv_token_text(s, ch->p_ids[0]);
            cJSON_AddStringToObject(e, "token", t ? t : "");
            free(t);
            cJSON_AddNullToObject(e, "logprob");
            cJSON_AddItemToArray(arr, e);
        } else {
            cJSON_AddItemToArray(arr, tsr__logprob_entry(s, &ch->p_res[i], true));
        }
    }
}

/* Completions' logprobs for prompt entries (echo) + completion entries: offsets from the
 * detokenizer, so that each indexes the answer's text.  Takes comp (may be NULL). */
static cJSON *tsr__completion_logprobs(tsr__call *c, tsr__choice *ch, const char *echo, cJSON *comp) {
    cJSON *all = cJSON_CreateArray();
    int64_t np = 0;
    if (echo) {
        tsr__prompt_entries(c->srv, ch, all);
        np = ch->n_p;
    }
    int64_t nc = comp ? cJSON_GetArraySize(comp) : 0;
    if (nc > ch->n_ids) nc = ch->n_ids;
    while (comp && comp->child && cJSON_GetArraySize(comp) > 0 && nc > 0) {
        cJSON_AddItemToArray(all, cJSON_DetachItemFromArray(comp, 0));
        nc--;
    }
    int64_t n = cJSON_GetArraySize(all);
    double *off = malloc(sizeof *off * (size_t)(n + 1));
    cJSON *o;
    if (off) {
        if (np) tsr__offsets(c->srv, ch->p_ids, np, false, 0, off);
        double base = echo ? (double)tsr__cp_len(echo, strlen(echo)) : 0;
        tsr__offsets(c->srv, ch->ids, n - np, true, base, off + np);
        o = tsr__fe_legacy_logprobs_at(all, off);
        free(off);
    } else {
        o = tsr__fe_legacy_logprobs(all);
    }
    cJSON_Delete(all);
    if (comp) cJSON_Delete(comp);
    return o;
}

/* Streaming echo: the prompt's chunk (with its logprobs when asked) before the first token's. */
static void tsr__http_echo_chunk(tsr__call *c, tsr__choice *ch) {
    if (!c->p.echo || ch->echo_sent || c->api != 1) return;
    ch->echo_sent = true;
    char *echo = tsr__echo_text(c);
    if (!echo) return;
    cJSON *lpo = c->p.logprobs >= 0 ? tsr__completion_logprobs(c, ch, echo, NULL) : NULL;
    /* the prompt's entries only: the completion's offsets start after the echo */
    tsr__fe_chunk_info ci = tsr__chunk_info(c);
    tsr__http_sse(c->owner, tsr__fe_stream_chunk(&ci, ch->index, false, echo, lpo, NULL));
    ch->stream_off = tsr__cp_len(echo, strlen(echo));
    ch->sent_first = true;
    free(echo);
}

static cJSON *tsr__usage(const tsr__call *c) {
    int64_t comp = c->dropped_tokens;   /* best_of: every generated token is billed, as OpenAI does */
    for (int i = 0; i < c->n; i++) comp += c->ch[i].completion_tokens;
    return tsr__fe_usage(c->ch[0].prompt_tokens, comp, c->ch[0].cached_tokens);
}

static tsr__fe_chunk_info tsr__chunk_info(const tsr__call *c) {
    tsr__fe_chunk_info ci = {c->id, c->srv->model, c->created, c->api != 1, c->p.include_usage};
    return ci;
}

static void tsr__http_token_out(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__conn *conn = c->owner;
    if (tsr__http_tool_token(c, ch, ev)) return;   /* held while it may be a tool call (http_tools.c) */
    cJSON *lp = NULL;
    if (c->p.logprobs >= 0 && ev->sample) lp = tsr__logprob_entry(c->srv, ev->sample, true);
    if (c->api == 2) {   /* interactive */
        tsr__choice_text_append(ch, ev->text, ev->text_len);
        if (lp) cJSON_Delete(lp);
        if (c->p.stream && ev->text_len) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "text", ev->text);
            cJSON_AddNumberToObject(j, "tokens", (double)ch->completion_tokens);
            cJSON_AddNullToObject(j, "finish_reason");
            tsr__http_json_line(conn, j);
        }
        return;
    }
    if (!c->p.stream) {
        tsr__choice_text_append(ch, ev->text, ev->text_len);
        if (lp) {
            if (!ch->logprobs) ch->logprobs = cJSON_CreateArray();
            cJSON_AddItemToArray(ch->logprobs, lp);
        }
        return;
    }
    tsr__http_echo_chunk(c, ch);
    if (!ev->text_len && !lp && ch->sent_first) return;
    tsr__fe_chunk_info ci = tsr__chunk_info(c);
    cJSON *lpo = NULL;
    if (lp && c->api == 0) {
        lpo = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(lpo, "content"), lp);
    } else if (lp) {
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, lp);
        double off = (double)ch->stream_off;   /* where this chunk's text starts in the whole answer */
        lpo = tsr__fe_legacy_logprobs_at(arr, &off);
        cJSON_Delete(arr);
    }
    ch->stream_off += tsr__cp_len(ev->text, ev->text_len);
    cJSON *j = tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, ev->text, lpo, NULL);
    ch->sent_first = true;
    tsr__http_sse(conn, j);
}

/* Backpressure: a client that does not read its stream is dropped once its unsent bytes pass
 * --max-unsent-bytes (its requests are cancelled: finish reason "abort", a warning in the log,
 * tessera_slow_client_drops_total), so a slow reader costs bounded memory and no generation.
 * Checked on tokens only: a TOKEN means this choice's DONE is still to come, so closing here
 * cannot free the call under tsr__dispatch. */
static void tsr__http_on_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__http_token_out(c, ch, ev);
    tsr__conn *conn = c->owner;
    if (!conn || conn->closing || !c->p.stream) return;
    size_t unsent = tsr__http_unsent(conn);
    if ((int64_t)unsent > c->srv->cfg.max_unsent_bytes) {
        c->srv->metrics.slow_client_drops++;
        TSR_LOGW("dropping %s: the client has %zu unsent bytes (--max-unsent-bytes %lld); its requests are cancelled",
                 c->id, unsent, (long long)c->srv->cfg.max_unsent_bytes);
        tsr__http_close(conn);
    }
}

static void tsr__http_on_done(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    (void)ev;
    tsr__conn *conn = c->owner;
    if (!c->p.stream || c->api == 2) return;
    if (ch->finish != TSR_FINISH_ERROR) tsr__http_echo_chunk(c, ch);   /* no token came */
    if (ch->finish == TSR_FINISH_ERROR) {   /* the choice ends with finish_reason "error", then why */
        tsr__fe_chunk_info ci = tsr__chunk_info(c);
        tsr__http_sse(conn, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, "error"));
        cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "message", ch->error_message[0] ? ch->error_message : "generation failed");
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddNullToObject(e, "param");
        if (ch->error == TSR_ERR_OOM || ch->error == TSR_ERR_KV_FULL) cJSON_AddStringToObject(e, "code", "insufficient_resources");
        else if (ch->error == TSR_ERR_COMM) cJSON_AddStringToObject(e, "code", "engine_unavailable");
        else cJSON_AddNullToObject(e, "code");
        tsr__http_sse(conn, j);
        return;
    }
    if (tsr__http_tool_done(c, ch)) return;   /* held text: tool calls or content, then the finish */
    tsr__fe_chunk_info ci = tsr__chunk_info(c);
    tsr__http_sse(conn, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, tsr__srv_finish_str(ch->finish)));
}

static void tsr__http_on_complete(tsr__call *c) {
    tsr__conn *conn = c->owner;
    conn->call = NULL;
    c->owner = NULL;
    if (c->api == 2) {
        const tsr__choice *ch = &c->ch[0];
        cJSON *j = cJSON_CreateObject();
        if (ch->finish == TSR_FINISH_ERROR && !c->p.stream) {
            tsr__fe_error e;
            tsr__fe_seterr(&e, 400, "invalid_request_error", "prompt", NULL, "%s", ch->error_message);
            cJSON_Delete(j);
            tsr__http_respond_error(conn, &e);
        } else {
            cJSON_AddStringToObject(j, "text", c->p.stream ? "" : (ch->text ? ch->text : ""));
            cJSON_AddNumberToObject(j, "tokens", (double)ch->completion_tokens);
            cJSON_AddNumberToObject(j, "input_tokens", (double)ch->prompt_tokens);
            cJSON_AddNumberToObject(j, "history_tokens", (double)ch->cached_tokens);
            cJSON_AddStringToObject(j, "finish_reason", tsr__srv_finish_str(ch->finish));
            if (c->p.stream) {
                tsr__http_json_line(conn, j);
                tsr__http_stream_end(conn);
            } else {
                tsr__http_respond_json(conn, 200, j);
            }
        }
    } else if (c->p.stream) {
        if (c->p.include_usage) {
            tsr__fe_chunk_info ci = tsr__chunk_info(c);
            tsr__http_sse(conn, tsr__fe_usage_chunk(&ci, tsr__usage(c)));
        }
        tsr__http_chunk(conn, "data: [DONE]\n\n", 14);
        tsr__http_stream_end(conn);
    } else {
        const tsr__choice *bad = NULL;
        for (int i = 0; i < c->n; i++)
            if (c->ch[i].finish == TSR_FINISH_ERROR) bad = &c->ch[i];
        if (bad) {
            tsr__fe_error e;
            /* the engine's code picks the status: no memory for it now -> 429 (retry), the group
             * broke -> 503, both with Retry-After */
            const bool res = bad->error == TSR_ERR_OOM || bad->error == TSR_ERR_KV_FULL;
            tsr__fe_seterr(&e, bad->error == TSR_ERR_INVALID_ARG ? 400 : res ? 429 : bad->error == TSR_ERR_COMM ? 503 : 500,
                           bad->error == TSR_ERR_INVALID_ARG ? "invalid_request_error" : "server_error", NULL,
                           res ? "insufficient_resources" : bad->error == TSR_ERR_COMM ? "engine_unavailable" : NULL,
                           "%s", bad->error_message[0] ? bad->error_message : "generation failed");
            tsr__http_respond_error(conn, &e);
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "id", c->id);
            cJSON_AddStringToObject(j, "object", c->api == 1 ? "text_completion" : "chat.completion");
            cJSON_AddNumberToObject(j, "created", (double)c->created);
            cJSON_AddStringToObject(j, "model", c->srv->model);
            cJSON *choices = cJSON_AddArrayToObject(j, "choices");
            for (int i = 0; i < c->n; i++) {
                tsr__choice *ch = &c->ch[i];
                cJSON *o = cJSON_CreateObject();
                cJSON_AddItemToArray(choices, o);
                cJSON_AddNumberToObject(o, "index", i);
                const char *text = ch->text ? ch->text : "";
                const char *finish = tsr__srv_finish_str(ch->finish);
                if (c->api == 0) {
                    cJSON *m = cJSON_AddObjectToObject(o, "message");
                    cJSON_AddStringToObject(m, "role", "assistant");
                    finish = tsr__fe_reply(&c->p, m, text, finish);   /* content or tool_calls (tools.c) */
                    if (c->p.logprobs >= 0) {
                        cJSON *l = cJSON_AddObjectToObject(o, "logprobs");
                        cJSON_AddItemToObject(l, "content", ch->logprobs ? ch->logprobs : cJSON_CreateArray());
                        ch->logprobs = NULL;
                    } else {
                        cJSON_AddNullToObject(o, "logprobs");
                    }
                } else {
                    char *echo = c->p.echo ? tsr__echo_text(c) : NULL;
                    if (echo) {
                        size_t pl = strlen(echo);
                        char *both = malloc(pl + ch->text_len + 1);
                        if (both) {
                            memcpy(both, echo, pl);
                            memcpy(both + pl, text, ch->text_len + 1);
                            cJSON_AddStringToObject(o, "text", both);
                            free(both);
                        }
                    } else {
                        cJSON_AddStringToObject(o, "text", text);
                    }
                    if (c->p.logprobs >= 0) {
                        cJSON_AddItemToObject(o, "logprobs", tsr__completion_logprobs(c, ch, echo, ch->logprobs));
                        ch->logprobs = NULL;
                    } else {
                        cJSON_AddNullToObject(o, "logprobs");
                    }
                    free(echo);
                }
                cJSON_AddStringToObject(o, "finish_reason", finish);
            }
            cJSON_AddItemToObject(j, "usage", tsr__usage(c));
            tsr__http_respond_json(conn, 200, j);
        }
    }
    /* tsr__dispatch frees the call now that it has no owner and nothing outstanding */
}

/* The call is submitted (or refused: answered here). */
static void tsr__http_on_submitted(tsr__call *call, const tsr__fe_error *err, bool later) {
    (void)later;
    tsr__conn *c = call->owner;
    if (err) {
        c->call = NULL;
        tsr__call_detach(call);
        tsr__http_respond_error(c, err);
        return;
    }
    if (call->p.stream) tsr__http_stream_begin(c, call->api == 2 ? "application/x-ndjson" : "text/event-stream");
}

const tsr__call_ops tsr__http_ops = {tsr__http_on_token, tsr__http_on_done, tsr__http_on_complete,
                                     tsr__http_on_submitted};
