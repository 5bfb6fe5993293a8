/* Request intake (engine.h), on the caller's thread: submit validates the request, tokenizes
 * it (under tok_mu), refuses what can never fit session_len or the KV pool, sets up its stop
 * conditions and detokenizer, and hands it to the step thread through the inbox; cancel and
 * end_session queue for the step thread the same way. */
#include "coordinator/engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

void tsr__engine_req_free(tsr__req *r) {
    free(r->ids);
    free(r->text);
    if (r->msgs) tsr__engine_free_msgs(r->msgs, r->n_msgs);
    free(r->msgs);
    if (r->stop_init) tsr_stop_free(&r->stop);
    free(r->answer);
    tsr__engine_grammar_free(r);
    free(r->bias_ids);
    free(r->bias_vals);
    if (!r->sess) tsr_sched_seq_free(&r->own);
    free(r);
}

/* *field and *too_long say what a refusal is about (tsr_engine_error): each check sets them first. */
static tsr_status tsr__submit(tsr_engine *e, const tsr_engine_request *rq, tsr_engine_callback cb, void *user,
                              uint64_t *request_id, tsr_engine_field *field, bool *too_long) {
    if (request_id) *request_id = 0;
    *field = TSR_FIELD_PROMPT;
    int n_inputs = (rq->prompt_ids != NULL || rq->n_prompt_ids > 0) + (rq->prompt != NULL) + (rq->messages != NULL);
    if (n_inputs != 1)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "give exactly one of prompt_ids, prompt and messages (got %d)", n_inputs);
    *field = TSR_FIELD_MAX_NEW_TOKENS;
    if (rq->max_new_tokens < 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "max_new_tokens must not be negative (got %lld)",
                          (long long)rq->max_new_tokens);
    *field = TSR_FIELD_SAMPLING;
    TSR_TRY(tsr_sampling_params_validate(&rq->sampling));
    *field = TSR_FIELD_LOGIT_BIAS;
    if (rq->n_logit_bias < 0 || (rq->n_logit_bias > 0 && (!rq->logit_bias_ids || !rq->logit_bias_vals)))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "logit_bias: %d entries without their arrays", rq->n_logit_bias);
    for (int i = 0; i < rq->n_logit_bias; i++) {
        if (rq->logit_bias_ids[i] < 0 || rq->logit_bias_ids[i] >= e->tok_vocab)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "logit_bias: token id %d is outside the vocabulary (%lld)",
                              rq->logit_bias_ids[i], (long long)e->tok_vocab);
        if (!(rq->logit_bias_vals[i] >= -100.0f && rq->logit_bias_vals[i] <= 100.0f))
            return tsr_errorf(TSR_ERR_INVALID_ARG, "logit_bias: the bias of token %d must be in [-100, 100] (got %g)",
                              rq->logit_bias_ids[i], (double)rq->logit_bias_vals[i]);
    }
    *field = TSR_FIELD_PROMPT_LOGPROBS;
    if (rq->prompt_logprobs && rq->session_id)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "prompt logprobs are not available in a session");
    if (rq->prompt_logprobs && (rq->prompt_top_logprobs < 0 || rq->prompt_top_logprobs > TSR_SAMPLING_MAX_LOGPROBS))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "prompt top logprobs must be between 0 and %d (got %d)",
                          TSR_SAMPLING_MAX_LOGPROBS, (int)rq->prompt_top_logprobs);
    *field = TSR_FIELD_PROMPT;
    if ((rq->prompt || rq->messages || rq->n_stop > 0) && !e->tok)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "text prompts, chat messages and stop strings need a tokenizer, and "
                          "this model has none; give prompt_ids");
    *field = TSR_FIELD_NONE;
    if (rq->n_stop < 0 || rq->n_stop_ids < 0 || rq->n_messages < 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "negative counts in the request");
    tsr__req *r = calloc(1, sizeof *r);
    if (!r) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    *field = TSR_FIELD_PROMPT;
    tsr_status rc = TSR_OK;
    r->cb = cb;
    r->user = user;
    r->sp = rq->sampling;
    r->sp.bias = NULL;   /* the engine's own, set below */
    r->skip_special = rq->skip_special;
    r->truncate = rq->truncate_to_fit;
    r->session_id = rq->session_id;
    r->end_session = rq->end_session;
    r->t_submit = tsr_now();
    r->plp = rq->prompt_logprobs;
    r->plp_top = rq->prompt_top_logprobs;
    if (rq->n_logit_bias > 0) {
        r->bias_ids = malloc((size_t)rq->n_logit_bias * sizeof *r->bias_ids);
        r->bias_vals = malloc((size_t)rq->n_logit_bias * sizeof *r->bias_vals);
        if (!r->bias_ids || !r->bias_vals) {
            rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
            goto fail;
        }
        memcpy(r->bias_ids, rq->logit_bias_ids, (size_t)rq->n_logit_bias * sizeof *r->bias_ids);
        memcpy(r->bias_vals, rq->logit_bias_vals, (size_t)rq->n_logit_bias * sizeof *r->bias_vals);
        r->n_bias = rq->n_logit_bias;
    }
    *field = TSR_FIELD_GRAMMAR;
    rc = tsr__engine_grammar_compile(rq, r);
    if (rc != TSR_OK) goto fail;
    *field = TSR_FIELD_PROMPT;

    if (rq->prompt_ids || rq->n_prompt_ids) {
        if (rq->n_prompt_ids <= 0 || !rq->prompt_ids) {
            rc = tsr_errorf(TSR_ERR_INVALID_ARG, "prompt_ids is empty");
            goto fail;
        }
        for (int64_t i = 0; i < rq->n_prompt_ids; i++)
            if (rq->prompt_ids[i] < 0 || rq->prompt_ids[i] >= e->tok_vocab) {
                rc = tsr_errorf(TSR_ERR_INVALID_ARG, "prompt_ids[%lld] = %d is outside the vocabulary (%lld)",
                                (long long)i, rq->prompt_ids[i], (long long)e->tok_vocab);
                goto fail;
            }
        r->ids = malloc((size_t)rq->n_prompt_ids * sizeof *r->ids);
        if (!r->ids) {
            rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
            goto fail;
        }
        memcpy(r->ids, rq->prompt_ids, (size_t)rq->n_prompt_ids * sizeof *r->ids);
        r->n_ids = rq->n_prompt_ids;
    } else if (rq->prompt && rq->session_id) {
        r->text = strdup(rq->prompt);
        if (!r->text) {
            rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
            goto fail;
        }
    } else if (rq->prompt) {
        pthread_mutex_lock(&e->tok_mu);
        /* BOS only at the start of a sequence: a session's later turns continue it. */
        rc = tsr_tokenizer_encode(e->tok, rq->prompt, strlen(rq->prompt), true, true, &r->ids, &r->n_ids);
        pthread_mutex_unlock(&e->tok_mu);
        if (rc != TSR_OK) goto fail;
        if (r->n_ids == 0) {
            rc = tsr_errorf(TSR_ERR_INVALID_ARG, "the prompt is empty");
            goto fail;
        }
    } else {
        if (rq->n_messages <= 0) {
            rc = tsr_errorf(TSR_ERR_INVALID_ARG, "messages is empty");
            goto fail;
        }
        r->is_chat = true;
        r->msgs = calloc((size_t)rq->n_messages, sizeof *r->msgs);
        if (!r->msgs) {
            rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
            goto fail;
        }
        for (int64_t i = 0; i < rq->n_messages; i++) {
            const tsr_engine_message *m = &rq->messages[i];
            if (!m->role || !m->content) {
                rc = tsr_errorf(TSR_ERR_INVALID_ARG, "messages[%lld] needs a role and a content", (long long)i);
                goto fail;
            }
            r->msgs[i].role = strdup(m->role);
            r->msgs[i].content = strdup(m->content);
            r->n_msgs = i + 1;
            if (!r->msgs[i].role || !r->msgs[i].content) {
                rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
                goto fail;
            }
        }
        if (!rq->session_id) {   /* without a session the whole conversation is rendered here */
            char *full = NULL;
            rc = tsr_chat_template_render(e->tmpl, r->msgs, (size_t)r->n_msgs, true, &full);
            if (rc == TSR_OK) {
                pthread_mutex_lock(&e->tok_mu);
                rc = tsr_tokenizer_encode(e->tok, full, strlen(full), false, true, &r->ids, &r->n_ids);
                pthread_mutex_unlock(&e->tok_mu);
            }
            free(full);
            if (rc != TSR_OK) goto fail;
        }
    }
    /* A request that can never fit is refused now, with the numbers. */
    int64_t room = e->session_len - r->n_ids;
    *too_long = true;
    if (room < 1) {
        rc = tsr_errorf(TSR_ERR_INVALID_ARG,
                        "the prompt has %lld tokens, which leaves no room to generate within session_len %lld",
                        (long long)r->n_ids, (long long)e->session_len);
        goto fail;
    }
    r->max_new = rq->max_new_tokens > 0 ? rq->max_new_tokens : room;
    int64_t pool_tokens = e->rt.kv.n_blocks * e->block_len;
    if (r->truncate) {
        if (r->max_new > room) r->max_new = room;
        if (r->n_ids + r->max_new > pool_tokens) r->max_new = pool_tokens - r->n_ids;
        if (r->max_new < 1) {
            *too_long = false;
            rc = tsr_errorf(TSR_ERR_INVALID_ARG,
                            "the prompt has %lld tokens, which leaves no room to generate in the KV cache (%lld "
                            "tokens); raise cache_max_entry_count",
                            (long long)r->n_ids, (long long)pool_tokens);
            goto fail;
        }
    }
    *field = TSR_FIELD_MAX_NEW_TOKENS;
    if (r->n_ids + r->max_new > e->session_len) {
        rc = tsr_errorf(TSR_ERR_INVALID_ARG,
                        "prompt (%lld tokens) + max_new_tokens (%lld) = %lld is more than session_len %lld",
                        (long long)r->n_ids, (long long)r->max_new, (long long)(r->n_ids + r->max_new),
                        (long long)e->session_len);
        goto fail;
    }
    *too_long = false;
    if (r->n_ids + r->max_new > pool_tokens) {
        rc = tsr_errorf(TSR_ERR_INVALID_ARG,
                        "prompt (%lld tokens) + max_new_tokens (%lld) is more than the whole KV cache holds "
                        "(%lld tokens); lower max_new_tokens or raise cache_max_entry_count",
                        (long long)r->n_ids, (long long)r->max_new, (long long)pool_tokens);
        goto fail;
    }
    /* Stop conditions: the request's, plus the chat template's for chat requests (its end of
     * turn is the chat's EOS, so ignore_eos drops it too). */
    *field = TSR_FIELD_STOP;
    {
        int32_t *sids = malloc((size_t)(rq->n_stop_ids + e->n_tmpl_stop_ids + 1) * sizeof *sids);
        const char **sstr = malloc((size_t)(rq->n_stop + e->n_tmpl_stop_strs + 1) * sizeof *sstr);
        int nsi = 0, nss = 0;
        if (!sids || !sstr) {
            free(sids);
            free(sstr);
            rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < rq->n_stop_ids; i++) sids[nsi++] = rq->stop_ids[i];
        for (int i = 0; i < rq->n_stop; i++) sstr[nss++] = rq->stop[i];
        if (r->is_chat && !rq->ignore_eos) {
            for (int i = 0; i < e->n_tmpl_stop_ids; i++) sids[nsi++] = e->tmpl_stop_ids[i];
            for (int i = 0; i < e->n_tmpl_stop_strs; i++) sstr[nss++] = e->tmpl_stop_strs[i];
        }
        rc = tsr_stop_init(&r->stop, e->eos, e->n_eos, rq->ignore_eos, sids, nsi, sstr, nss);
        free(sids);
        free(sstr);
        if (rc != TSR_OK) goto fail;
        r->stop_init = true;
    }
    if (e->tok) tsr_detok_init(&r->detok, e->tok, r->skip_special);
    if (r->n_bias > 0 || r->sp.min_tokens > 0) {
        r->bias = (tsr_sample_bias){r->bias_ids, r->bias_vals, r->n_bias, r->stop.ids, r->stop.n_ids};
        r->sp.bias = &r->bias;
    }

    *field = TSR_FIELD_NONE;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        rc = tsr_errorf(TSR_ERR_CANCELLED, "the engine is closing");
        goto fail;
    }
    if (e->fatal != TSR_OK) {
        rc = tsr_errorf(TSR_ERR_COMM, "the engine cannot serve: %s", e->fatal_msg);
        pthread_mutex_unlock(&e->mu);
        goto fail;
    }
    r->id = e->next_id++;
    if (e->inbox_tail) e->inbox_tail->next = r;
    else e->inbox = r;
    e->inbox_tail = r;
    e->n_inflight++;
    if (request_id) *request_id = r->id;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return TSR_OK;
fail:
    tsr__engine_req_free(r);
    return rc;
}

tsr_status tsr_engine_submit_ex(tsr_engine *e, const tsr_engine_request *r, tsr_engine_callback cb, void *user,
                                uint64_t *request_id, tsr_engine_error *err) {
    tsr_engine_field field = TSR_FIELD_NONE;
    bool too_long = false;
    tsr_status rc = tsr__submit(e, r, cb, user, request_id, &field, &too_long);
    if (err) {
        memset(err, 0, sizeof *err);
        err->status = rc;
        if (rc != TSR_OK) {
            bool fault = rc == TSR_ERR_INVALID_ARG || rc == TSR_ERR_NOT_FOUND || rc == TSR_ERR_UNSUPPORTED;
            err->code = !fault ? TSR_ENGINE_ERR_UNAVAILABLE : too_long ? TSR_ENGINE_ERR_TOO_LONG : TSR_ENGINE_ERR_INVALID;
            err->field = fault ? field : TSR_FIELD_NONE;
            snprintf(err->message, sizeof err->message, "%s", tsr_last_error());
        }
    }
    return rc;
}

tsr_status tsr_engine_submit(tsr_engine *e, const tsr_engine_request *r, tsr_engine_callback cb, void *user,
                             uint64_t *request_id) {
    return tsr_engine_submit_ex(e, r, cb, user, request_id, NULL);
}

static tsr_status tsr__push_cancel(tsr_engine *e, uint64_t id, bool session) {
    tsr__cancel *c = calloc(1, sizeof *c);
    if (!c) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    c->id = id;
    c->session = session;
    pthread_mutex_lock(&e->mu);
    c->next = e->cancels;
    e->cancels = c;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return TSR_OK;
}

tsr_status tsr_engine_cancel(tsr_engine *e, uint64_t request_id) { return tsr__push_cancel(e, request_id, false); }

tsr_status tsr_engine_end_session(tsr_engine *e, uint64_t session_id) {
    return tsr__push_cancel(e, session_id, true);
}

void tsr_engine_drain(tsr_engine *e) {
    pthread_mutex_lock(&e->mu);
    while (e->n_inflight > 0) pthread_cond_wait(&e->idle_cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

void tsr_engine_get_stats(tsr_engine *e, tsr_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->st;
    pthread_mutex_unlock(&e->mu);
}
