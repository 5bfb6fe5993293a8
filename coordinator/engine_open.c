/* The engine (engine.h): the request life cycle over the scheduler, on one step thread.  This
 * file opens and closes it and answers the accessors; the life cycle itself lives in
 * engine_submit.c, engine_step.c, engine_output.c and engine_session.c (the map and the order
 * they call each other in: engine_internal.h).
 *
 * Threads: submit / cancel / end_session run on the caller's thread; they validate and
 * tokenize there (under tok_mu: the tokenizer's word cache is not thread-safe), then hand the
 * request to the step thread through the inbox (mu + cv).  Everything else -- the scheduler,
 * the block manager, sessions, sampling, stop matching, events -- belongs to the step thread,
 * so none of it needs a lock.
 *
 * One step: take the inbox (new requests, cancellations, session ends), end idle sessions past
 * their TTL, plan + commit (coordinator/scheduler.h), run tsr_forward on the committed entries
 * (on rank 0 of a TP group the executor's hook broadcasts it), then for each entry whose chunk
 * reached the end of its sequence: sample, stop checks, detokenize, emit.  Every command that
 * generates runs here; `tessera generate` / `chat` / `bench generate` are a batch of one.
 *
 * Sampling history: the "prompt" of a request is the sequence's whole history when it starts
 * (earlier turns included), and the RNG counter is the number of tokens this request has
 * generated.  So a session turn samples exactly as replaying the whole history without a
 * session would, and a preempted sequence, recomputed, continues with the same tokens. */
#include "coordinator/engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/workspace.h"

void tsr_engine_config_default(tsr_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->backend = "auto";
    /* max_batch_size and max_prefill_token_num stay 0: a workspace's config.ini, else the
     * pool's and device's default (tsr_engine_default_max_batch) / 2048 */
    c->enable_prefix_cache = true;
    c->progress = true;
    c->quant_policy = -1;   /* config.ini's, else 0 */
}

void tsr_engine_request_default(tsr_engine_request *r) {
    memset(r, 0, sizeof *r);
    tsr_sampling_params_default(&r->sampling);
    r->skip_special = true;
}

tsr_status tsr_engine_health(tsr_engine *e, char *msg, size_t cap) {
    pthread_mutex_lock(&e->mu);
    tsr_status st = e->fatal;
    if (msg && cap) snprintf(msg, cap, "%s", st == TSR_OK ? "ok" : e->fatal_msg);
    pthread_mutex_unlock(&e->mu);
    return st;
}

static void tsr__engine_destroy(tsr_engine *e) {
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->tok_mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->idle_cv);
    pthread_cond_destroy(&e->poll_cv);
    free(e);
}

tsr_status tsr_engine_open(const tsr_engine_config *c, int *argc, char ***argv, tsr_engine **out) {
    *out = NULL;
    if (!c || !c->model_path) return tsr_errorf(TSR_ERR_INVALID_ARG, "no model path given");
    if (c->max_batch_size < 0 || c->max_prefill_token_num < 0 || c->session_len < 0 || c->cache_block_seq_len < 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "engine config: sizes must not be negative");
    tsr_engine *e = calloc(1, sizeof *e);
    if (!e) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    e->cfg = *c;
    /* precedence: the caller's value (a flag) > a workspace's config.ini > the default */
    if ((!c->max_batch_size || !c->max_prefill_token_num) && tsr_workspace_is(c->model_path)) {
        tsr_ws_knobs k = {0};
        tsr_status kst = tsr_workspace_read_knobs(c->model_path, &k);
        if (kst == TSR_OK && (k.max_batch_size < 0 || k.max_prefill_token_num < 0))
            kst = tsr_errorf(TSR_ERR_FORMAT, "%s/config.ini: max_batch_size and max_context_token_num must be >= 1",
                             c->model_path);
        if (kst != TSR_OK) {
            free(e);
            return kst;
        }
        if (!e->cfg.max_batch_size) e->cfg.max_batch_size = k.max_batch_size;
        if (!e->cfg.max_prefill_token_num) e->cfg.max_prefill_token_num = k.max_prefill_token_num;
    }
    /* max_batch_size still 0: set from the KV pool once the runtime is open (below) */
    if (e->cfg.max_prefill_token_num == 0) e->cfg.max_prefill_token_num = 2048;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->tok_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->idle_cv, NULL);
    pthread_cond_init(&e->poll_cv, NULL);
    e->next_id = 1;

    e->argc = argc;
    e->argv = argv;
    if (pthread_create(&e->thread, NULL, tsr__engine_step_main, e) != 0) {
        tsr__engine_destroy(e);
        return tsr_errorf(TSR_ERR_INTERNAL, "could not start the engine's step thread");
    }
    pthread_mutex_lock(&e->mu);
    while (e->open_state == 0) pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    tsr_status rc = TSR_OK;
    if (e->open_state < 0 || e->rt.group.rank != 0) {
        /* failed (the message was the step thread's), or a worker whose loop has run to its end */
        pthread_join(e->thread, NULL);
        if (e->open_state < 0) rc = tsr_errorf(e->open_rc, "%s", e->open_msg);
        else if (e->worker_code != 0) rc = tsr_errorf(TSR_ERR_COMM, "worker step loop failed");
        tsr__engine_destroy(e);
        return rc;
    }
    e->thread_started = true;
    const tsr_model_config *mc = &e->rt.model->cfg;
    snprintf(e->model_name, sizeof e->model_name, "%s", mc->model_name[0] ? mc->model_name : "model");
    if (tsr_tokenizer_load_model(c->model_path, &e->tok) != TSR_OK) {
        TSR_LOGW("no tokenizer for %s (%s): token ids in and out only", c->model_path, tsr_last_error());
        e->tok = NULL;
    }
    if (c->chat_template) rc = tsr_chat_template_load(c->chat_template, &e->tmpl);
    else rc = tsr_chat_template_detect(e->tok ? tsr_tokenizer_chat_template(e->tok) : NULL, mc->model_name, &e->tmpl);
    if (rc != TSR_OK) {
        rc = tsr_error_wrap(rc, "chat template");
        goto fail;
    }
    e->vocab = mc->vocab_size;
    e->tok_vocab = e->tok ? tsr_tokenizer_vocab_size(e->tok) : e->vocab;
    if (e->tok_vocab <= 0 || e->tok_vocab > e->vocab) e->tok_vocab = e->vocab;
    e->session_len = e->rt.session_len > 0 ? e->rt.session_len : 4096;
    e->block_len = e->rt.kv.layout.block_len;
    if (e->cfg.max_batch_size == 0) {
        const bool gpu = strcmp(e->rt.be->ops->name, "cpu") != 0;
        e->cfg.max_batch_size = tsr_engine_default_max_batch(tsr_runtime_kv_tokens(&e->rt), e->session_len, gpu);
        TSR_LOGI("default max_batch_size %lld: a KV pool of %lld tokens at min(session_len, 512) per "
                 "sequence, at most %d on %s", (long long)e->cfg.max_batch_size,
                 (long long)tsr_runtime_kv_tokens(&e->rt), gpu ? TSR_ENGINE_MAX_BATCH_GPU : TSR_ENGINE_MAX_BATCH_CPU,
                 gpu ? "a GPU" : "the CPU backend");
    }

    int32_t cand[TSR__MAX_EOS];
    int nc = 0;
    cand[nc++] = mc->eos_id;
    for (int i = 0; i < mc->n_extra_eos && nc < TSR__MAX_EOS - 1; i++) cand[nc++] = mc->extra_eos[i];
    cand[nc++] = e->tok ? tsr_tokenizer_eos_id(e->tok) : -1;
    for (int i = 0; i < nc; i++) {
        bool dup = cand[i] < 0 || cand[i] >= e->vocab;
        for (int j = 0; j < e->n_eos && !dup; j++) dup = e->eos[j] == cand[i];
        if (!dup) e->eos[e->n_eos++] = cand[i];
    }
    const char *const *sw = tsr_chat_template_stop_words(e->tmpl);
    for (int i = 0; sw && sw[i]; i++) {
        int32_t id = e->tok ? tsr_tokenizer_token_to_id(e->tok, sw[i]) : -1;
        if (id >= 0 && id < e->vocab && tsr_tokenizer_is_special(e->tok, id)) {
            if (e->n_tmpl_stop_ids < 8) e->tmpl_stop_ids[e->n_tmpl_stop_ids++] = id;
        } else if (e->n_tmpl_stop_strs < 8) {
            e->tmpl_stop_strs[e->n_tmpl_stop_strs++] = sw[i];
        }
    }

    if ((rc = tsr_bm_init(e->rt.kv.n_blocks, e->block_len, &e->bm)) != TSR_OK) goto fail;
    /* blocks behind the attention window are released early only when every layer has it */
    tsr_sched_config sc = {e->cfg.max_batch_size, e->cfg.max_prefill_token_num, c->enable_prefix_cache,
                           mc->sliding_window > 0 && mc->window_layer0 == 0 ? mc->sliding_window : 0};
    if ((rc = tsr_sched_init(&sc, e->bm, &e->sched)) != TSR_OK) goto fail;
    e->steps = calloc((size_t)e->cfg.max_batch_size, sizeof *e->steps);
    e->samples = calloc((size_t)e->cfg.max_batch_size, sizeof *e->samples);
    e->sampled = calloc((size_t)e->cfg.max_batch_size, sizeof *e->sampled);
    e->sample_res = calloc((size_t)e->cfg.max_batch_size, sizeof *e->sample_res);
    if (!e->steps || !e->samples || !e->sampled || !e->sample_res) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
        goto fail;
    }
    tsr__engine_update_stats(e);
    pthread_mutex_lock(&e->mu);
    e->go = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    char desc[256];
    tsr_runtime_describe(&e->rt, desc, sizeof desc);
    TSR_LOGI("engine: %s; max_batch_size %lld, max_prefill_token_num %lld, session_len %lld, prefix cache %s",
             desc, (long long)e->cfg.max_batch_size, (long long)e->cfg.max_prefill_token_num,
             (long long)e->session_len, c->enable_prefix_cache ? "on" : "off");
    *out = e;
    return TSR_OK;
fail:
    tsr_engine_close(e);
    return rc;
}

void tsr_engine_close(tsr_engine *e) {
    if (!e) return;
    if (e->thread_started) {   /* the thread finishes every request and closes the runtime */
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        e->go = true;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* requests submitted after the thread left */
    while (e->inbox) {
        tsr__req *r = e->inbox;
        e->inbox = r->next;
        tsr__engine_req_free(r);
    }
    while (e->cancels) {
        tsr__cancel *c = e->cancels;
        e->cancels = c->next;
        free(c);
    }
    for (int64_t i = 0; i < e->pq_n; i++) tsr__engine_polled_free(&e->pq[(e->pq_head + i) % e->pq_cap]);
    for (int64_t i = 0; i < e->n_given; i++) tsr__engine_polled_free(&e->given[i]);
    free(e->pq);
    free(e->given);
    tsr_sched_plan_free(&e->plan);
    tsr_grammar_vocab_free(e->gvocab);
    tsr_sched_free(e->sched);
    tsr_bm_free(e->bm);
    free(e->steps);
    free(e->samples);
    free(e->sampled);
    free(e->sample_res);
    tsr_sampler_free(e->plp_sampler);
    free(e->plp_logits);
    tsr_chat_template_free(e->tmpl);
    if (e->tok) tsr_tokenizer_free(e->tok);
    tsr__engine_destroy(e);
}

const tsr_tokenizer *tsr_engine_tokenizer(const tsr_engine *e) { return e->tok; }
const tsr_chat_template *tsr_engine_chat_template(const tsr_engine *e) { return e->tmpl; }
const char *tsr_engine_model_name(const tsr_engine *e) { return e->model_name; }
int64_t tsr_engine_session_len(const tsr_engine *e) { return e->session_len; }
int64_t tsr_engine_max_batch_size(const tsr_engine *e) { return e->cfg.max_batch_size; }

tsr_status tsr_engine_encode(tsr_engine *e, const char *text, size_t len, bool add_special, int32_t **ids, int64_t *n) {
    if (!e->tok) return tsr_errorf(TSR_ERR_UNSUPPORTED, "the model has no tokenizer");
    pthread_mutex_lock(&e->tok_mu);
    tsr_status rc = tsr_tokenizer_encode(e->tok, text, len, add_special, true, ids, n);
    pthread_mutex_unlock(&e->tok_mu);
    return rc;
}

int64_t tsr_engine_default_max_batch(int64_t pool_tokens, int64_t session_len, bool gpu) {
    const int64_t per_seq = session_len > 0 && session_len < 512 ? session_len : 512;
    const int64_t cap = gpu ? TSR_ENGINE_MAX_BATCH_GPU : TSR_ENGINE_MAX_BATCH_CPU;
    int64_t n = (pool_tokens + per_seq / 2) / per_seq;   /* rounded */
    if (n < 1) n = 1;
    return n < cap ? n : cap;
}
int64_t tsr_engine_vocab_size(const tsr_engine *e) { return e->tok_vocab; }
size_t tsr_engine_weight_bytes(const tsr_engine *e) { return e->rt.model->weight_bytes; }
