/* Interactive sessions (TurboMind's /v1/chat/interactive, engine.h): a session keeps its sequence
 * (tokens and KV blocks) between requests, so a turn prefills only what it adds.  A chat turn
 * appends its messages to the session's conversation, renders the whole conversation, and keeps
 * the KV up to where the new rendering agrees with the history (normally all of it).  Step
 * thread only. */
#include "coordinator/engine_internal.h"

#include <stdlib.h>
#include <string.h>

void tsr__engine_free_msgs(tsr_chat_message *m, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        free((void *)m[i].role);
        free((void *)m[i].content);
    }
}

static void tsr__session_free(tsr__session *s) {
    tsr_sched_seq_free(&s->seq);
    tsr__engine_free_msgs(s->msgs, s->n_msgs);
    free(s->msgs);
    free(s);
}

tsr__session *tsr__engine_session_find(tsr_engine *e, uint64_t id) {
    for (tsr__session *s = e->sessions; s; s = s->next)
        if (s->id == id) return s;
    return NULL;
}

void tsr__engine_session_end(tsr_engine *e, tsr__session *s) {
    for (tsr__session **p = &e->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    tsr_sched_remove(e->sched, &s->seq);
    tsr__session_free(s);
    e->n_sessions--;
}

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

/* A session request: its input joins the session's sequence (the session starts with it), within
 * session_len; *out is the sequence to schedule. */
tsr_status tsr__engine_session_join(tsr_engine *e, tsr__req *r, tsr_sched_seq **out) {
    tsr_sched_seq *q;
    tsr__session *s = tsr__engine_session_find(e, r->session_id);
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
        if (!tsr_grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + r->n_msgs, sizeof *s->msgs))
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
            tsr__engine_free_msgs(s->msgs + n0, s->n_msgs - n0);
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
    *out = q;
    return TSR_OK;
}
