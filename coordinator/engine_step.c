/* The engine's step thread: it joins the rank group and loads the model (so every MPI call of
 * the process is made on it), then loops: take the inbox (new requests, cancellations, session
 * ends), end idle sessions past their TTL, plan + commit (coordinator/scheduler.h), run the
 * forward pass with sampling on the committed entries (on rank 0 of a TP group the executor
 * broadcasts it; ranks > 0 replay it in tsr_runtime_worker_main), and hand each sampled token to
 * engine_output.c.  A broken group ends every request and the engine's health. */
#include "coordinator/engine_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/group.h"

static tsr_status tsr__start(tsr_engine *e, tsr__req *r) {
    TSR_TRY(tsr__engine_grammar_start(e, r));
    tsr_sched_seq *q;
    if (r->session_id) {
        TSR_TRY(tsr__engine_session_join(e, r, &q));
    } else {
        q = &r->own;
        TSR_TRY(tsr_sched_seq_append(q, r->ids, r->n_ids));
    }
    r->seq = q;
    q->user = r;
    q->id = r->id;
    r->n_prompt = q->n_tokens;
    r->prompt_tokens = q->n_tokens;
    r->cached_tokens = -1;
    q->no_prefix_hits = r->plp;   /* prompt logprobs need every position computed */
    if (q->state == TSR_SEQ_IDLE) tsr_sched_resume(e->sched, q);
    else tsr_sched_add(e->sched, q);
    return TSR_OK;
}

static tsr__req *tsr__find_active(tsr_engine *e, uint64_t id) {
    for (tsr__req *r = e->active; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

/* The group broke (a rank stopped answering, a collective failed): no step can run again.
 * Every request ends with the error, later ones are refused at submit, tsr_engine_health
 * reports it, and the embedder is told once (config.on_fatal). */
static void tsr__go_fatal(tsr_engine *e, tsr_status rc, const char *msg) {
    pthread_mutex_lock(&e->mu);
    bool first = e->fatal == TSR_OK;
    if (first) {
        e->fatal = rc;
        snprintf(e->fatal_msg, sizeof e->fatal_msg, "%s", msg);
    }
    pthread_mutex_unlock(&e->mu);
    while (e->active) tsr__engine_finish(e, e->active, TSR_FINISH_ERROR, rc, msg);
    if (first && e->cfg.on_fatal) e->cfg.on_fatal(e->cfg.on_fatal_user, msg);
}

/* Prompt logprobs (engine.h): an entry of a request that wants them, whose chunk still covers
 * prompt positions not reported, runs on its own with the logits of every new token (row j
 * predicts the token after it), in pieces of at most TSR__PLP_ROWS rows.  Where its chunk reaches
 * the end of the sequence, the last row is sampled here with the host sampler (the function
 * tsr_forward_sample's host path runs). */
static bool tsr__wants_plp(const tsr__req *r, const tsr_sched_seq *q) {
    return r->plp && r->plp_next < r->n_prompt && q->n_computed < r->n_prompt;
}

static tsr_status tsr__run_plp(tsr_engine *e, int64_t i) {
    tsr_sched_seq *q = e->plan.entries[i].seq;
    tsr__req *r = q->user;
    const int64_t V = e->vocab, n_new = e->plan.entries[i].n_new;
    if (!e->plp_sampler) TSR_TRY(tsr_sampler_init(V, &e->plp_sampler));
    const int64_t rows = n_new < TSR__PLP_ROWS ? n_new : TSR__PLP_ROWS;
    if (rows > e->plp_rows) {
        float *x = realloc(e->plp_logits, sizeof(float) * (size_t)(rows * V));
        if (!x) return tsr_errorf(TSR_ERR_OOM, "out of memory for the logits of %lld prompt tokens", (long long)rows);
        e->plp_logits = x;
        e->plp_rows = rows;
    }
    if (r->plp_next == 0 && q->n_computed == 0) tsr__engine_prompt_token(e, r, 0, NULL);
    for (int64_t off = 0; off < n_new; off += TSR__PLP_ROWS) {
        const int64_t c = n_new - off < TSR__PLP_ROWS ? n_new - off : TSR__PLP_ROWS, past = q->n_computed + off;
        tsr_seq_step one = {q->tokens + past, c, past, q->blocks, q->n_blocks};
        tsr_step st = {&one, 1, true};
        TSR_TRY(tsr_forward(e->rt.fs, &e->rt.kv, &st, e->plp_logits));
        for (int64_t j = 0; j < c; j++) {
            float *row = e->plp_logits + j * V;
            for (int64_t v = e->tok_vocab; v < V; v++) row[v] = -INFINITY;
            const int64_t pos = past + j + 1;
            if (pos < r->n_prompt && pos == r->plp_next) {
                tsr_sample_result res;
                tsr_sampling_logprobs(e->plp_sampler, row, q->tokens[pos], r->plp_top, &res);
                tsr__engine_prompt_token(e, r, pos, &res);
            }
            if (e->samples[i].params && off + j == n_new - 1)
                e->sampled[i] = tsr_sample(e->plp_sampler, row, e->samples[i].params, &e->samples[i].hist,
                                           &e->sample_res[i]);
        }
    }
    return TSR_OK;
}

/* A step with prompt-logprob entries: the others run as one batch (tsr_forward_sample), then
 * each of those on its own (tsr__run_plp). */
static tsr_status tsr__forward_with_plp(tsr_engine *e, int64_t n) {
    tsr_seq_step *st = malloc(sizeof *st * (size_t)n);
    tsr_seq_sample *sa = malloc(sizeof *sa * (size_t)n);
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    tsr_sample_result *res = malloc(sizeof *res * (size_t)n);
    int64_t *map = malloc(sizeof *map * (size_t)n);
    tsr_status rc = TSR_OK;
    if (!st || !sa || !ids || !res || !map) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
        goto out;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        tsr_sched_seq *q = e->plan.entries[i].seq;
        if (tsr__wants_plp(q->user, q)) continue;
        st[m] = e->steps[i];
        sa[m] = e->samples[i];
        map[m++] = i;
    }
    if (m > 0) {
        tsr_step step = {st, m, false};
        rc = tsr_forward_sample(e->rt.fs, &e->rt.kv, &step, sa, e->tok_vocab, ids, res);
        if (rc != TSR_OK) goto out;
        for (int64_t k = 0; k < m; k++) {
            e->sampled[map[k]] = ids[k];
            e->sample_res[map[k]] = res[k];
        }
    }
    for (int64_t i = 0; i < n && rc == TSR_OK; i++) {
        tsr_sched_seq *q = e->plan.entries[i].seq;
        if (tsr__wants_plp(q->user, q)) rc = tsr__run_plp(e, i);
    }
out:
    free(st);
    free(sa);
    free(ids);
    free(res);
    free(map);
    return rc;
}

/* Returns true when a forward pass ran (the step counts in the busy/wall figures). */
static bool tsr__step(tsr_engine *e) {
    tsr_sched_plan *p = &e->plan;
    tsr_status rc = tsr_sched_make_plan(e->sched, p);
    if (rc != TSR_OK) {
        TSR_LOGE("engine: planning failed: %s", tsr_last_error());
        return false;
    }
    tsr_sched_commit(e->sched, p);
    for (int64_t i = 0; i < p->n_fail; i++) {
        tsr__req *r = p->fail[i]->user;
        tsr__engine_finish(e, r, TSR_FINISH_ERROR, TSR_ERR_KV_FULL, "the request does not fit the KV cache");
    }
    if (p->n_entries == 0) return false;
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_seq *q = p->entries[i].seq;
        tsr__req *r = q->user;
        if (!r->scheduled_once) {
            r->scheduled_once = true;
            r->cached_tokens = q->n_computed;
        }
        e->steps[i] = (tsr_seq_step){q->tokens + q->n_computed, p->entries[i].n_new, q->n_computed, q->blocks,
                                     q->n_blocks};
    }
    tsr_step step = {e->steps, p->n_entries, false};
    /* Entries whose chunk reaches the end of their sequence sample (on the device where the
     * backend can: only ids and requested logprobs come back). */
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_seq *q = p->entries[i].seq;
        tsr__req *r = q->user;
        e->samples[i] = (tsr_seq_sample){NULL, {0}};
        if (q->n_computed + p->entries[i].n_new < q->n_tokens) continue;   /* a prefill chunk short of the end */
        e->samples[i].params = &r->sp;
        tsr__engine_grammar_mask(e, r);   /* structured output: the tokens allowed now */
        e->samples[i].hist = (tsr_sample_history){q->tokens, r->n_prompt, q->tokens + r->n_prompt, r->n_gen};
    }
    bool plp = false;
    for (int64_t i = 0; i < p->n_entries; i++) plp |= tsr__wants_plp(p->entries[i].seq->user, p->entries[i].seq);
    const double t_fwd = tsr_now();
    if (plp) rc = tsr__forward_with_plp(e, p->n_entries);
    else rc = tsr_forward_sample(e->rt.fs, &e->rt.kv, &step, e->samples, e->tok_vocab, e->sampled, e->sample_res);
    const double busy = tsr_now() - t_fwd;
    pthread_mutex_lock(&e->mu);
    e->st.steps++;
    e->st.step_busy_s += busy;
    pthread_mutex_unlock(&e->mu);
    if (rc != TSR_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "forward pass failed: %s", tsr_last_error());
        TSR_LOGE("engine: %s", msg);
        if (rc == TSR_ERR_COMM || tsr_group_broken(NULL)) {
            tsr__go_fatal(e, rc == TSR_ERR_COMM ? rc : TSR_ERR_COMM, msg);
            return true;
        }
        /* a failure of this step only (memory): its requests end with the error, the rest go on */
        for (int64_t i = 0; i < p->n_entries; i++) tsr__engine_finish(e, p->entries[i].seq->user, TSR_FINISH_ERROR, rc, msg);
        return true;
    }
    /* Entries first advance, then sample: finishing one request never touches another's. */
    for (int64_t i = 0; i < p->n_entries; i++) tsr_sched_advance(e->sched, p->entries[i].seq, p->entries[i].n_new);
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_seq *q = p->entries[i].seq;
        if (!e->samples[i].params) continue;   /* a prefill chunk short of the end */
        if (tsr__engine_grammar_accept(e, q->user, e->sampled[i]) != TSR_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "structured output: %s", tsr_last_error());
            tsr__engine_finish(e, q->user, TSR_FINISH_ERROR, TSR_ERR_INVALID_ARG, msg);
            continue;
        }
        tsr__engine_sample_one(e, q->user, e->sampled[i], &e->sample_res[i]);
    }    return true;
}

static void tsr__step_loop(tsr_engine *e) {
    /* an idle TP group exchanges a heartbeat every second, so a rank that stops answering is
     * found (and reported) with no request running, and workers know rank 0 is alive */
    const bool beats = e->rt.group.size > 1;
    for (;;) {
        bool beat = false;
        pthread_mutex_lock(&e->mu);
        for (;;) {
            bool work = e->inbox || e->cancels || e->stopping;
            if (work) break;
            tsr_sched_counts sc;
            tsr_sched_get_counts(e->sched, &sc);
            if (sc.running || sc.waiting) break;
            if ((e->cfg.session_ttl_s > 0 && e->sessions) || (beats && e->fatal == TSR_OK)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 1;
                beat = pthread_cond_timedwait(&e->cv, &e->mu, &ts) != 0 && beats && e->fatal == TSR_OK;
                break;
            }
            pthread_cond_wait(&e->cv, &e->mu);
        }
        tsr__req *in = e->inbox;
        tsr__cancel *cs = e->cancels;
        e->inbox = e->inbox_tail = NULL;
        e->cancels = NULL;
        bool stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        const double t_step = tsr_now();   /* the wall time of a step: from here to its stats */
        if (beat && !stopping && tsr_exec_heartbeat(&e->rt.exec) != TSR_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tsr_last_error());
            tsr__go_fatal(e, TSR_ERR_COMM, msg);
        }

        while (in) {
            tsr__req *r = in;
            in = in->next;
            r->next = e->active;
            e->active = r;
            if (e->fatal != TSR_OK) {   /* only this thread writes it */
                tsr__engine_finish(e, r, TSR_FINISH_ERROR, e->fatal, e->fatal_msg);
                continue;
            }
            if (tsr__start(e, r) != TSR_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", tsr_last_error());
                tsr__engine_finish(e, r, TSR_FINISH_ERROR, TSR_ERR_INVALID_ARG, msg);
            }
        }
        while (cs) {
            tsr__cancel *c = cs;
            cs = cs->next;
            if (c->session) {
                tsr__session *s = tsr__engine_session_find(e, c->id);
                if (s && s->busy) s->busy->end_session = true;   /* ends with its request */
                else if (s) tsr__engine_session_end(e, s);
            } else {
                tsr__req *r = tsr__find_active(e, c->id);
                if (r) tsr__engine_finish(e, r, TSR_FINISH_CANCELLED, TSR_ERR_CANCELLED, "cancelled");
            }
            free(c);
        }
        if (stopping) {
            while (e->active) tsr__engine_finish(e, e->active, TSR_FINISH_CANCELLED, TSR_ERR_CANCELLED, "the engine closed");
            while (e->sessions) tsr__engine_session_end(e, e->sessions);
            tsr__engine_update_stats(e);
            return;
        }
        if (e->cfg.session_ttl_s > 0) {
            double now = tsr_now();
            for (tsr__session *s = e->sessions, *nx; s; s = nx) {
                nx = s->next;
                if (!s->busy && now - s->last_used > e->cfg.session_ttl_s) tsr__engine_session_end(e, s);
            }
        }
        const bool ran = tsr__step(e);
        tsr__engine_update_stats(e);
        if (ran) {
            const double wall = tsr_now() - t_step;
            pthread_mutex_lock(&e->mu);
            e->st.step_wall_s += wall;
            pthread_mutex_unlock(&e->mu);
        }
    }
}

/* The step thread: joins the group and loads the model, waits for the opener to finish the
 * rest, runs steps (rank 0) or replays them (ranks > 0), and closes the runtime -- so every MPI
 * call of the process is made here (worker/group.h). */
void *tsr__engine_step_main(void *arg) {
    tsr_engine *e = arg;
    const tsr_engine_config *c = &e->cfg;
    tsr_runtime_opts o;
    tsr_runtime_opts_default(&o);
    o.model_path = c->model_path;
    if (c->backend) o.backend = c->backend;
    o.tp = c->tp;
    o.threads = c->threads;
    o.block_len = c->cache_block_seq_len;
    o.cache_max_entry_count = c->cache_max_entry_count;
    o.session_len = c->session_len;
    o.progress = c->progress;
    o.load_format = c->load_format;
    o.session_len_fallback = c->session_len_fallback;
    o.kv_one_session_fallback = c->kv_one_session_fallback;
    /* the CPU pool's cap: at most the sequences one step can run (not yet known when it is the
     * default, which follows from the pool: the CPU backend's cap then) */
    o.max_batch_size = c->max_batch_size > 0 ? c->max_batch_size : TSR_ENGINE_MAX_BATCH_CPU;
    o.quant_policy = c->quant_policy;
    tsr_status rc = tsr_runtime_open(&e->rt, &o, e->argc, e->argv);
    pthread_mutex_lock(&e->mu);
    e->open_rc = rc;
    if (rc != TSR_OK) snprintf(e->open_msg, sizeof e->open_msg, "%s", tsr_last_error());
    e->open_state = rc == TSR_OK ? 1 : -1;
    pthread_cond_broadcast(&e->cv);
    while (rc == TSR_OK && e->rt.group.rank == 0 && !e->go) pthread_cond_wait(&e->cv, &e->mu);
    bool stop = e->stopping;
    pthread_mutex_unlock(&e->mu);
    if (rc != TSR_OK) return NULL;
    if (e->rt.group.rank != 0) {   /* a worker: replay rank 0's steps until it closes */
        e->worker_code = tsr_runtime_worker_main(&e->rt);
        return NULL;
    }
    if (!stop) tsr__step_loop(e);
    tsr_runtime_close(&e->rt);
    return NULL;
}
