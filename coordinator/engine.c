/* The engine (engine.h): the request life cycle over the scheduler, on one step thread.
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
#include "coordinator/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/block_manager.h"
#include "coordinator/scheduler.h"
#include "worker/forward.h"
#include "worker/group.h"
#include "worker/runtime.h"

#define TSR__MAX_EOS 10

typedef struct tsr__session tsr__session;

typedef struct tsr__req {
    uint64_t id;
    tsr_engine_callback cb;
    void *user;
    /* input, tokenized at submit */
    int32_t *ids;
    int64_t n_ids;
    char *text;                      /* a session's text prompt: encoded when it starts (BOS or not) */
    tsr_chat_message *msgs;          /* messages (owned strings), when given */
    int64_t n_msgs;
    bool is_chat;
    uint64_t session_id;
    bool end_session;
    /* generation */
    tsr_sched_seq own;               /* the sequence, when not in a session */
    tsr_sched_seq *seq;
    tsr__session *sess;
    int64_t n_prompt;                /* history length when it started */
    int64_t max_new, n_gen;
    tsr_sampling_params sp;
    tsr_stop stop;
    bool stop_init;
    tsr_detok detok;
    bool skip_special;
    bool truncate;                   /* truncate_to_fit */
    int64_t prompt_tokens, cached_tokens;
    bool scheduled_once;
    double t_submit, t_first;
    char *answer;                    /* chat sessions: the generated text as the history holds it */
    struct tsr__req *next;           /* inbox / active list */
} tsr__req;

struct tsr__session {
    uint64_t id;
    tsr_sched_seq seq;
    tsr__req *busy;                  /* the request running on it */
    tsr_chat_message *msgs;          /* the conversation (owned strings) */
    int64_t n_msgs, cap_msgs;
    double last_used;
    struct tsr__session *next;
};

typedef struct tsr__cancel {
    uint64_t id;
    bool session;
    struct tsr__cancel *next;
} tsr__cancel;

typedef struct tsr__polled {
    tsr_engine_event ev;
    char *text;
    tsr_sample_result sample;
    bool has_sample;
    char *err;
} tsr__polled;

struct tsr_engine {
    tsr_engine_config cfg;
    tsr_runtime rt;
    tsr_tokenizer *tok;
    tsr_chat_template *tmpl;
    char model_name[256];
    int64_t vocab, tok_vocab, session_len, block_len;
    int32_t eos[TSR__MAX_EOS];
    int n_eos;
    int32_t tmpl_stop_ids[8];
    int n_tmpl_stop_ids;
    const char *tmpl_stop_strs[8];
    int n_tmpl_stop_strs;

    tsr_block_manager *bm;
    tsr_sched *sched;
    tsr_seq_step *steps;             /* [max_batch] */
    tsr_seq_sample *samples;         /* [max_batch] what each entry of a step samples */
    int32_t *sampled;                /* [max_batch] the ids it got */
    tsr_sample_result *sample_res;   /* [max_batch] and their logprobs */
    tsr_sched_plan plan;

    pthread_t thread;
    bool thread_started;
    /* opening: the step thread joins the group and loads (so every MPI call of the process is
     * made on it, worker/group.h); the opener waits for open_state, sets up the rest, then go */
    int *argc;
    char ***argv;
    int open_state;                  /* 0 pending, 1 open, -1 failed (under mu) */
    tsr_status open_rc;
    char open_msg[512];
    bool go;                         /* the opener is done: run steps (or stop) */
    int worker_code;                 /* ranks > 0: the worker loop's exit code */
    /* health (under mu): set once when the group breaks */
    tsr_status fatal;
    char fatal_msg[512];
    pthread_mutex_t mu, tok_mu;
    pthread_cond_t cv, idle_cv;
    bool stopping;
    tsr__req *inbox, *inbox_tail;
    tsr__cancel *cancels;
    uint64_t next_id;
    int64_t n_inflight;              /* submitted, not yet DONE (under mu) */

    /* step thread only */
    tsr__req *active;
    tsr__session *sessions;
    int64_t n_sessions;

    /* poll mode (under mu) */
    tsr__polled *pq;
    int64_t pq_head, pq_n, pq_cap;
    tsr__polled *given;              /* what the last poll handed out */
    int64_t n_given;
    pthread_cond_t poll_cv;

    /* stats (under mu) */
    tsr_engine_stats st;
};

/* ---- small helpers ---- */

static bool tsr__grow(void **buf, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *b = realloc(*buf, (size_t)c * elem);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

static char *tsr__strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static void tsr__free_msgs(tsr_chat_message *m, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        free((void *)m[i].role);
        free((void *)m[i].content);
    }
}

void tsr_engine_config_default(tsr_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->backend = "auto";
    c->max_batch_size = 64;
    c->max_prefill_token_num = 2048;
    c->enable_prefix_cache = true;
    c->progress = true;
}

void tsr_engine_request_default(tsr_engine_request *r) {
    memset(r, 0, sizeof *r);
    tsr_sampling_params_default(&r->sampling);
    r->skip_special = true;
}

/* ---- events ---- */

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

static void tsr__session_free(tsr__session *s) {
    tsr_sched_seq_free(&s->seq);
    tsr__free_msgs(s->msgs, s->n_msgs);
    free(s->msgs);
    free(s);
}

static tsr__session *tsr__session_find(tsr_engine *e, uint64_t id) {
    for (tsr__session *s = e->sessions; s; s = s->next)
        if (s->id == id) return s;
    return NULL;
}

static void tsr__session_end(tsr_engine *e, tsr__session *s) {
    for (tsr__session **p = &e->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    tsr_sched_remove(e->sched, &s->seq);
    tsr__session_free(s);
    e->n_sessions--;
}

static void tsr__req_free(tsr__req *r) {
    free(r->ids);
    free(r->text);
    if (r->msgs) tsr__free_msgs(r->msgs, r->n_msgs);
    free(r->msgs);
    if (r->stop_init) tsr_stop_free(&r->stop);
    free(r->answer);
    if (!r->sess) tsr_sched_seq_free(&r->own);
    free(r);
}

static void tsr__update_stats(tsr_engine *e);

/* Ends a request: the rest of its text, DONE, its sequence parked (session) or released. */
static void tsr__finish(tsr_engine *e, tsr__req *r, tsr_finish_reason why, tsr_status err, const char *msg) {
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
            if (e->tok && tsr__grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof *s->msgs) &&
                tsr_tokenizer_decode(e->tok, r->seq->tokens + r->n_prompt, n_ans, false, &ans, &alen) == TSR_OK) {
                s->msgs[s->n_msgs].role = strdup("assistant");
                s->msgs[s->n_msgs].content = ans;
                s->n_msgs++;
            } else {
                free(ans);
            }
        }
        if (r->end_session) tsr__session_end(e, s);
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
    pthread_mutex_lock(&e->mu);
    e->st.completion_tokens_total += r->n_gen;
    pthread_mutex_unlock(&e->mu);
    tsr__deliver(e, r, &ev);
    free(tail);
    tsr__req_free(r);
    tsr__update_stats(e);   /* so that a drain sees the blocks this request freed */
    pthread_mutex_lock(&e->mu);
    e->n_inflight--;
    pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

/* ---- starting a request on the step thread ---- */

/* truncate_to_fit: cuts max_new to the room a session history of n tokens leaves in
 * session_len and the KV pool; refuses when not one token fits. */
static tsr_status tsr__fit(tsr_engine *e, tsr__req *r, int64_t n) {
    const int64_t pool = e->rt.kv.n_blocks * e->block_len;
    const int64_t lim = e->session_len < pool ? e->session_len : pool;
    if (n + 1 > lim)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "session %llu: the conversation has %lld tokens, which leaves no room to generate within "
                          "session_len %lld (the KV cache holds %lld tokens); end the session and start a new one",
                          (unsigned long long)r->session_id, (long long)n, (long long)e->session_len, (long long)pool);
    if (n + r->max_new > lim) r->max_new = lim - n;
    return TSR_OK;
}

/* Longest common prefix. */
static int64_t tsr__lcp(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static tsr_status tsr__start(tsr_engine *e, tsr__req *r) {
    tsr_sched_seq *q;
    if (r->session_id) {
        tsr__session *s = tsr__session_find(e, r->session_id);
        if (s && s->busy)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "session %llu already has a request running; wait for its end",
                              (unsigned long long)r->session_id);
        if (!s) {
            s = calloc(1, sizeof *s);
            if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
            s->id = r->session_id;
            s->next = e->sessions;
            e->sessions = s;
            e->n_sessions++;
        }
        q = &s->seq;
        if (r->is_chat) {
            /* The conversation so far + the new messages, rendered whole; the KV is kept up to
             * where the new rendering still agrees with the history (normally all of it). */
            int64_t n0 = s->n_msgs;
            if (!tsr__grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + r->n_msgs, sizeof *s->msgs))
                return tsr_errorf(TSR_ERR_OOM, "out of memory");
            for (int64_t i = 0; i < r->n_msgs; i++) s->msgs[s->n_msgs++] = r->msgs[i];
            r->n_msgs = 0;   /* the session owns them now */
            char *full = NULL;
            int32_t *ids = NULL;
            int64_t n = 0;
            tsr_status rc = tsr_chat_template_render(e->tmpl, s->msgs, (size_t)s->n_msgs, true, &full);
            if (rc == TSR_OK) {
                pthread_mutex_lock(&e->tok_mu);
                rc = tsr_tokenizer_encode(e->tok, full, strlen(full), false, true, &ids, &n);
                pthread_mutex_unlock(&e->tok_mu);
            }
            free(full);
            if (rc == TSR_OK && r->truncate) rc = tsr__fit(e, r, n);
            else if (rc == TSR_OK && n + r->max_new > e->session_len)
                rc = tsr_errorf(TSR_ERR_INVALID_ARG,
                                "session %llu: the conversation has %lld tokens, which with max_new_tokens %lld is more "
                                "than session_len %lld; end the session and start a new one",
                                (unsigned long long)s->id, (long long)n, (long long)r->max_new,
                                (long long)e->session_len);
            if (rc != TSR_OK || n == 0) {
                free(ids);
                tsr__free_msgs(s->msgs + n0, s->n_msgs - n0);
                s->n_msgs = n0;
                return rc != TSR_OK ? rc : tsr_errorf(TSR_ERR_INVALID_ARG, "the rendered chat prompt is empty");
            }
            int64_t keep = tsr__lcp(q->tokens, q->n_tokens, ids, n);
            tsr_sched_seq_truncate(e->sched, q, keep, keep);
            q->n_tokens = keep;
            rc = tsr_sched_seq_append(q, ids + keep, n - keep);
            free(ids);
            if (rc != TSR_OK) return rc;
        } else {
            if (r->text) {   /* BOS only when the session starts */
                pthread_mutex_lock(&e->tok_mu);
                tsr_status rc = tsr_tokenizer_encode(e->tok, r->text, strlen(r->text), q->n_tokens == 0, true, &r->ids,
                                                     &r->n_ids);
                pthread_mutex_unlock(&e->tok_mu);
                TSR_TRY(rc);
            }
            if (r->truncate) TSR_TRY(tsr__fit(e, r, q->n_tokens + r->n_ids));
            else if (q->n_tokens + r->n_ids + r->max_new > e->session_len)
                return tsr_errorf(TSR_ERR_INVALID_ARG,
                                  "session %llu holds %lld tokens; %lld more plus max_new_tokens %lld exceed "
                                  "session_len %lld; end the session and start a new one",
                                  (unsigned long long)s->id, (long long)q->n_tokens, (long long)r->n_ids,
                                  (long long)r->max_new, (long long)e->session_len);
            TSR_TRY(tsr_sched_seq_append(q, r->ids, r->n_ids));
        }
        if (q->n_tokens == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "the prompt is empty");
        if (q->n_computed >= q->n_tokens) tsr_sched_seq_truncate(e->sched, q, q->n_tokens - 1, q->n_tokens);
        s->busy = r;
        r->sess = s;
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
    if (q->state == TSR_SEQ_IDLE) tsr_sched_resume(e->sched, q);
    else tsr_sched_add(e->sched, q);
    return TSR_OK;
}

/* ---- the step ---- */

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
static void tsr__sample_one(tsr_engine *e, tsr__req *r, int32_t tok, const tsr_sample_result *sr_in) {
    tsr_sched_seq *q = r->seq;
    tsr_sample_result sr;
    const bool want_lp = r->sp.logprobs >= 0;
    if (want_lp) sr = *sr_in;
    if (tsr_sched_seq_append(q, &tok, 1) != TSR_OK) {
        tsr__finish(e, r, TSR_FINISH_ERROR, TSR_ERR_OOM, "out of memory");
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
            tsr__finish(e, r, TSR_FINISH_ERROR, TSR_ERR_INTERNAL, "detokenization failed");
            return;
        }
        const char *em;
        size_t elen;
        if (tsr_stop_push(&r->stop, piece ? piece : "", plen, &em, &elen)) fin = TSR_FINISH_STOP;
        free(piece);
        tsr__emit_token(e, r, tok, em, elen, want_lp ? &sr : NULL);
    }
    if (fin == TSR_FINISH_NONE && (r->n_gen >= r->max_new || q->n_tokens >= e->session_len)) fin = TSR_FINISH_LENGTH;
    if (fin != TSR_FINISH_NONE) tsr__finish(e, r, fin, TSR_OK, NULL);
}

static tsr__req *tsr__find_active(tsr_engine *e, uint64_t id) {
    for (tsr__req *r = e->active; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

static void tsr__update_stats(tsr_engine *e) {
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
    while (e->active) tsr__finish(e, e->active, TSR_FINISH_ERROR, rc, msg);
    if (first && e->cfg.on_fatal) e->cfg.on_fatal(e->cfg.on_fatal_user, msg);
}

static void tsr__step(tsr_engine *e) {
    tsr_sched_plan *p = &e->plan;
    tsr_status rc = tsr_sched_make_plan(e->sched, p);
    if (rc != TSR_OK) {
        TSR_LOGE("engine: planning failed: %s", tsr_last_error());
        return;
    }
    tsr_sched_commit(e->sched, p);
    for (int64_t i = 0; i < p->n_fail; i++) {
        tsr__req *r = p->fail[i]->user;
        tsr__finish(e, r, TSR_FINISH_ERROR, TSR_ERR_KV_FULL, "the request does not fit the KV cache");
    }
    if (p->n_entries == 0) return;
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
        e->samples[i].hist = (tsr_sample_history){q->tokens, r->n_prompt, q->tokens + r->n_prompt, r->n_gen};
    }
    rc = tsr_forward_sample(e->rt.fs, &e->rt.kv, &step, e->samples, e->tok_vocab, e->sampled, e->sample_res);
    pthread_mutex_lock(&e->mu);
    e->st.steps++;
    pthread_mutex_unlock(&e->mu);
    if (rc != TSR_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "forward pass failed: %s", tsr_last_error());
        TSR_LOGE("engine: %s", msg);
        if (rc == TSR_ERR_COMM || tsr_group_broken(NULL)) {
            tsr__go_fatal(e, rc == TSR_ERR_COMM ? rc : TSR_ERR_COMM, msg);
            return;
        }
        /* a failure of this step only (memory): its requests end with the error, the rest go on */
        for (int64_t i = 0; i < p->n_entries; i++) tsr__finish(e, p->entries[i].seq->user, TSR_FINISH_ERROR, rc, msg);
        return;
    }
    /* Entries first advance, then sample: finishing one request never touches another's. */
    for (int64_t i = 0; i < p->n_entries; i++) tsr_sched_advance(e->sched, p->entries[i].seq, p->entries[i].n_new);
    for (int64_t i = 0; i < p->n_entries; i++) {
        tsr_sched_seq *q = p->entries[i].seq;
        if (!e->samples[i].params) continue;   /* a prefill chunk short of the end */
        tsr__sample_one(e, q->user, e->sampled[i], &e->sample_res[i]);
    }
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
                tsr__finish(e, r, TSR_FINISH_ERROR, e->fatal, e->fatal_msg);
                continue;
            }
            if (tsr__start(e, r) != TSR_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", tsr_last_error());
                tsr__finish(e, r, TSR_FINISH_ERROR, TSR_ERR_INVALID_ARG, msg);
            }
        }
        while (cs) {
            tsr__cancel *c = cs;
            cs = cs->next;
            if (c->session) {
                tsr__session *s = tsr__session_find(e, c->id);
                if (s && s->busy) s->busy->end_session = true;   /* ends with its request */
                else if (s) tsr__session_end(e, s);
            } else {
                tsr__req *r = tsr__find_active(e, c->id);
                if (r) tsr__finish(e, r, TSR_FINISH_CANCELLED, TSR_ERR_CANCELLED, "cancelled");
            }
            free(c);
        }
        if (stopping) {
            while (e->active) tsr__finish(e, e->active, TSR_FINISH_CANCELLED, TSR_ERR_CANCELLED, "the engine closed");
            while (e->sessions) tsr__session_end(e, e->sessions);
            tsr__update_stats(e);
            return;
        }
        if (e->cfg.session_ttl_s > 0) {
            double now = tsr_now();
            for (tsr__session *s = e->sessions, *nx; s; s = nx) {
                nx = s->next;
                if (!s->busy && now - s->last_used > e->cfg.session_ttl_s) tsr__session_end(e, s);
            }
        }
        tsr__step(e);
        tsr__update_stats(e);
    }
}

/* The step thread: joins the group and loads the model, waits for the opener to finish the
 * rest, runs steps (rank 0) or replays them (ranks > 0), and closes the runtime -- so every MPI
 * call of the process is made here (worker/group.h). */
static void *tsr__step_main(void *arg) {
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

/* ---- open / close ---- */

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
    if (e->cfg.max_batch_size == 0) e->cfg.max_batch_size = 64;
    if (e->cfg.max_prefill_token_num == 0) e->cfg.max_prefill_token_num = 2048;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->tok_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->idle_cv, NULL);
    pthread_cond_init(&e->poll_cv, NULL);
    e->next_id = 1;

    e->argc = argc;
    e->argv = argv;
    if (pthread_create(&e->thread, NULL, tsr__step_main, e) != 0) {
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
    tsr_sched_config sc = {e->cfg.max_batch_size, e->cfg.max_prefill_token_num, c->enable_prefix_cache};
    if ((rc = tsr_sched_init(&sc, e->bm, &e->sched)) != TSR_OK) goto fail;
    e->steps = calloc((size_t)e->cfg.max_batch_size, sizeof *e->steps);
    e->samples = calloc((size_t)e->cfg.max_batch_size, sizeof *e->samples);
    e->sampled = calloc((size_t)e->cfg.max_batch_size, sizeof *e->sampled);
    e->sample_res = calloc((size_t)e->cfg.max_batch_size, sizeof *e->sample_res);
    if (!e->steps || !e->samples || !e->sampled || !e->sample_res) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
        goto fail;
    }
    tsr__update_stats(e);
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

static void tsr__polled_free(tsr__polled *p) {
    free(p->text);
    free(p->err);
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
        tsr__req_free(r);
    }
    while (e->cancels) {
        tsr__cancel *c = e->cancels;
        e->cancels = c->next;
        free(c);
    }
    for (int64_t i = 0; i < e->pq_n; i++) tsr__polled_free(&e->pq[(e->pq_head + i) % e->pq_cap]);
    for (int64_t i = 0; i < e->n_given; i++) tsr__polled_free(&e->given[i]);
    free(e->pq);
    free(e->given);
    tsr_sched_plan_free(&e->plan);
    tsr_sched_free(e->sched);
    tsr_bm_free(e->bm);
    free(e->steps);
    free(e->samples);
    free(e->sampled);
    free(e->sample_res);
    tsr_chat_template_free(e->tmpl);
    if (e->tok) tsr_tokenizer_free(e->tok);
    tsr__engine_destroy(e);
}

/* ---- submit ---- */

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
    r->skip_special = rq->skip_special;
    r->truncate = rq->truncate_to_fit;
    r->session_id = rq->session_id;
    r->end_session = rq->end_session;
    r->t_submit = tsr_now();

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
    /* Stop conditions: the request's, plus the chat template's for chat requests. */
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
        if (r->is_chat) {
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
    e->st.requests_total++;
    e->st.prompt_tokens_total += r->n_ids;
    if (request_id) *request_id = r->id;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return TSR_OK;
fail:
    tsr__req_free(r);
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

int tsr_engine_poll(tsr_engine *e, tsr_engine_event *events, int max, int timeout_ms) {
    pthread_mutex_lock(&e->mu);
    for (int64_t i = 0; i < e->n_given; i++) tsr__polled_free(&e->given[i]);
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

const tsr_tokenizer *tsr_engine_tokenizer(const tsr_engine *e) { return e->tok; }
const tsr_chat_template *tsr_engine_chat_template(const tsr_engine *e) { return e->tmpl; }
const char *tsr_engine_model_name(const tsr_engine *e) { return e->model_name; }
int64_t tsr_engine_session_len(const tsr_engine *e) { return e->session_len; }
int64_t tsr_engine_vocab_size(const tsr_engine *e) { return e->tok_vocab; }
size_t tsr_engine_weight_bytes(const tsr_engine *e) { return e->rt.model->weight_bytes; }
