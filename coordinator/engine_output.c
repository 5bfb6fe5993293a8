/* Per-sequence output, on the step thread: a sampled token joins its sequence, goes through the
 * stop ids (EOS included), the detokenizer and the stop strings, and becomes a TOKEN event; the
 * end of a request (finish) flushes the held-back text, parks or releases its sequence and
 * sends DONE.  Events go to the request's callback or to the poll queue (tsr_engine_poll). */
#include "coordinator/engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static char *tsr__strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static void tsr__deliver(tsr_engine *e, tsr__req *r, const tsr_engine_event *ev) {
    if (r->cb) {
        r->cb(r->user, ev);
        return;
    }
    pthread_mutex_lock(&e->mu);
    if (e->pq_n == e->pq_cap) {   /* ring buffer: grow by unrolling */
        int64_t nc = e->pq_cap ? e->pq_cap * 2 : 64;
        tsr__polled *q = malloc((size_t)nc * sizeof *q);
        if (!q) {   /* out of host memory: the event is lost, the engine goes on */
            pthread_mutex_unlock(&e->mu);
            TSR_LOGE("engine: out of memory queueing an event of request %llu; dropped",
                     (unsigned long long)ev->request_id);
            return;
        }
        for (int64_t i = 0; i < e->pq_n; i++) q[i] = e->pq[(e->pq_head + i) % e->pq_cap];
        free(e->pq);
        e->pq = q;
        e->pq_cap = nc;
        e->pq_head = 0;
    }
    tsr__polled *p = &e->pq[(e->pq_head + e->pq_n) % e->pq_cap];
    memset(p, 0, sizeof *p);
    p->ev = *ev;
    p->text = tsr__strndup(ev->text ? ev->text : "", ev->text_len);   /* NULL (no memory): polled as "" */
    if (ev->sample) {
        p->sample = *ev->sample;
        p->has_sample = true;
    }
    if (ev->error_message) p->err = strdup(ev->error_message);
    e->pq_n++;
    pthread_cond_broadcast(&e->poll_cv);
    pthread_mutex_unlock(&e->mu);
}

void tsr__engine_polled_free(tsr__polled *p) {
    free(p->text);
    free(p->err);
}

int tsr_engine_poll(tsr_engine *e, tsr_engine_event *events, int max, int timeout_ms) {
    pthread_mutex_lock(&e->mu);
    for (int64_t i = 0; i < e->n_given; i++) tsr__engine_polled_free(&e->given[i]);
    e->n_given = 0;
    if (e->pq_n == 0 && timeout_ms != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (int64_t)(timeout_ms < 0 ? 3600000 : timeout_ms) * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        while (e->pq_n == 0)
            if (pthread_cond_timedwait(&e->poll_cv, &e->mu, &ts) != 0) break;
    }
    int n = 0;
    free(e->given);
    e->given = max > 0 ? calloc((size_t)max, sizeof *e->given) : NULL;
    while (n < max && e->pq_n > 0 && e->given) {
        tsr__polled *p = &e->given[n];
        *p = e->pq[e->pq_head];
        e->pq_head = (e->pq_head + 1) % e->pq_cap;
        e->pq_n--;
        events[n] = p->ev;
        events[n].text = p->text ? p->text : "";
        if (!p->text) events[n].text_len = 0;
        events[n].sample = p->has_sample ? &p->sample : NULL;
        events[n].error_message = p->err;
        n++;
    }
    e->n_given = n;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* Ends a request: the rest of its text, DONE, its sequence parked (session) or released. */
void tsr__engine_finish(tsr_engine *e, tsr__req *r, tsr_finish_reason why, tsr_status err, const char *msg) {
    char *tail = NULL;
    size_t tlen = 0;
    if (why != TSR_FINISH_ERROR && why != TSR_FINISH_CANCELLED && r->stop_init && !r->stop.stopped) {
        char *rest = NULL;
        size_t rlen = 0;
        if (e->tok && tsr_detok_finish(&r->detok, &rest, &rlen) == TSR_OK) {
            const char *em;
            size_t elen;
            size_t cap = 0;
            bool matched = tsr_stop_push(&r->stop, rest ? rest : "", rlen, &em, &elen);
            tail = malloc(elen + 1);
            if (tail) memcpy(tail, em, elen), tlen = elen, cap = elen + 1;
            if (matched) {
                why = TSR_FINISH_STOP;
            } else {
                tsr_stop_flush(&r->stop, &em, &elen);
                char *t2 = realloc(tail, tlen + elen + 1);
                if (t2) {
                    memcpy(t2 + tlen, em, elen);
                    tail = t2;
                    tlen += elen;
                    t2[tlen] = 0;
                }
            }
            (void)cap;
            if (tail) tail[tlen] = 0;
        }
        free(rest);
    }
    /* The session keeps what was computed; a failed or cancelled turn keeps its history too
     * (the next turn recomputes whatever has no KV). */
    tsr__session *s = r->sess;
    if (s) {
        if (s->busy == r) s->busy = NULL;
        if (r->seq->state == TSR_SEQ_RUNNING && why != TSR_FINISH_ERROR) tsr_sched_park(e->sched, r->seq, tsr_now());
        else {
            tsr_sched_remove(e->sched, r->seq);
            /* parked-by-hand: NEW with a history; the next turn adds it again */
        }
        s->last_used = tsr_now();
        if (r->is_chat && why != TSR_FINISH_ERROR) {
            /* The assistant's answer joins the conversation (without a final stop id). */
            int64_t n_ans = r->n_gen;
            if (n_ans > 0 && why == TSR_FINISH_STOP && tsr_stop_is_stop_id(&r->stop, r->seq->tokens[r->seq->n_tokens - 1]))
                n_ans--;
            char *ans = NULL;
            size_t alen = 0;
            if (e->tok && tsr_grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof *s->msgs) &&
                tsr_tokenizer_decode(e->tok, r->seq->tokens + r->n_prompt, n_ans, false, &ans, &alen) == TSR_OK) {
                s->msgs[s->n_msgs].role = strdup("assistant");
                s->msgs[s->n_msgs].content = ans;
                s->n_msgs++;
            } else {
                free(ans);
            }
        }
        if (r->end_session) tsr__engine_session_end(e, s);
    } else if (r->seq) {
        tsr_sched_remove(e->sched, r->seq);
    }
    tsr_engine_event ev;
    memset(&ev, 0, sizeof ev);
    ev.request_id = r->id;
    ev.type = TSR_EVENT_DONE;
    ev.token = -1;
    ev.text = tail ? tail : "";
    ev.text_len = tlen;
    ev.finish = why;
    ev.error = err;
    ev.error_message = msg;
    ev.prompt_tokens = r->prompt_tokens;
    ev.cached_tokens = r->cached_tokens > 0 ? r->cached_tokens : 0;
    ev.completion_tokens = r->n_gen;
    double now = tsr_now();
    ev.time_to_first_token_s = r->t_first > 0 ? r->t_first - r->t_submit : 0;
    ev.total_s = now - r->t_submit;
    /* unlink from the active list */
    for (tsr__req **p = &e->active; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    tsr__deliver(e, r, &ev);
    free(tail);
    tsr__engine_req_free(r);
    tsr__engine_update_stats(e);   /* so that a drain sees the blocks this request freed */
    pthread_mutex_lock(&e->mu);
    e->n_inflight--;
    pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

static void tsr__emit_token(tsr_engine *e, tsr__req *r, int32_t tok, const char *text, size_t len,
                            const tsr_sample_result *sr) {
    tsr_engine_event ev;
    memset(&ev, 0, sizeof ev);
    ev.request_id = r->id;
    ev.type = TSR_EVENT_TOKEN;
    ev.token = tok;
    ev.text = text ? text : "";
    ev.text_len = len;
    ev.sample = sr;
    tsr__deliver(e, r, &ev);
}

/* Takes the token sampled (tsr_forward_sample) for an entry whose chunk reached the end of its
 * sequence; sr holds its logprobs when the request asked for them. */
void tsr__engine_sample_one(tsr_engine *e, tsr__req *r, int32_t tok, const tsr_sample_result *sr_in) {
    tsr_sched_seq *q = r->seq;
    tsr_sample_result sr;
    const bool want_lp = r->sp.logprobs >= 0;
    if (want_lp) sr = *sr_in;
    if (tsr_sched_seq_append(q, &tok, 1) != TSR_OK) {
        tsr__engine_finish(e, r, TSR_FINISH_ERROR, TSR_ERR_OOM, "out of memory");
        return;
    }
    r->n_gen++;
    if (r->n_gen == 1) r->t_first = tsr_now();
    tsr_finish_reason fin = TSR_FINISH_NONE;
    if (tsr_stop_is_stop_id(&r->stop, tok)) {
        fin = TSR_FINISH_STOP;
        tsr__emit_token(e, r, tok, "", 0, want_lp ? &sr : NULL);
    } else {
        char *piece = NULL;
        size_t plen = 0;
        if (e->tok && tsr_detok_push(&r->detok, tok, &piece, &plen) != TSR_OK) {
            free(piece);
            tsr__engine_finish(e, r, TSR_FINISH_ERROR, TSR_ERR_INTERNAL, "detokenization failed");
            return;
        }
        const char *em;
        size_t elen;
        if (tsr_stop_push(&r->stop, piece ? piece : "", plen, &em, &elen)) fin = TSR_FINISH_STOP;
        free(piece);
        tsr__emit_token(e, r, tok, em, elen, want_lp ? &sr : NULL);
    }
    if (fin == TSR_FINISH_NONE && (r->n_gen >= r->max_new || q->n_tokens >= e->session_len)) fin = TSR_FINISH_LENGTH;
    if (fin != TSR_FINISH_NONE) tsr__engine_finish(e, r, fin, TSR_OK, NULL);
}

void tsr__engine_prompt_token(tsr_engine *e, tsr__req *r, int64_t pos, const tsr_sample_result *res) {
    tsr_engine_event ev;
    memset(&ev, 0, sizeof ev);
    ev.request_id = r->id;
    ev.type = TSR_EVENT_PROMPT_TOKEN;
    ev.token = r->seq->tokens[pos];
    ev.text = "";
    ev.sample = res;
    r->plp_next = pos + 1;
    tsr__deliver(e, r, &ev);
}

void tsr__engine_update_stats(tsr_engine *e) {
    tsr_bm_counts bc;
    tsr_sched_counts sc;
    tsr_bm_get_counts(e->bm, &bc);
    tsr_sched_get_counts(e->sched, &sc);
    pthread_mutex_lock(&e->mu);
    e->st.running = sc.running;
    e->st.waiting = sc.waiting;
    e->st.kv_blocks_total = bc.total;
    e->st.kv_blocks_used = bc.active;
    e->st.kv_blocks_free = bc.free + bc.cached;
    e->st.kv_blocks_cached = bc.cached;
    e->st.prefix_hit_tokens = sc.prefix_hit_tokens;
    e->st.prefix_query_tokens = sc.prefix_query_tokens;
    e->st.preemptions_total = sc.preemptions;
    e->st.sessions = e->n_sessions;
    pthread_mutex_unlock(&e->mu);
}
