/* Calls: the engine's events brought to the loop thread and handed to whoever owns the call
 * (call.h says how a call lives and dies).  The engine's callback is the only code here that
 * runs on another thread (the engine's step thread); it only copies and queues. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/frontend/call.h"

#include "common/grow.h"

/* ---------------------------------------------------------------- events from the engine */

struct tsr__evnode {
    tsr__evnode *next;
    tsr__choice *choice;
    tsr_engine_event ev;
    tsr_sample_result sample;
    char *text;
    char err[256];
};

static void tsr__engine_cb(void *user, const tsr_engine_event *ev) {
    tsr__choice *ch = user;
    tsr__srv *s = ch->call->srv;
    tsr__evnode *n = calloc(1, sizeof *n);
    char *text = malloc(ev->text_len + 1);
    if (!n || !text) {
        /* Losing a TOKEN event only loses text; a DONE must get through or the call leaks, so
         * it retries a smaller allocation (the node alone). */
        free(text);
        if (ev->type != TSR_EVENT_DONE) {
            free(n);
            return;
        }
        while (!n) n = calloc(1, sizeof *n);
        text = NULL;
    }
    n->choice = ch;
    n->ev = *ev;
    if (text) {
        memcpy(text, ev->text ? ev->text : "", ev->text_len);
        text[ev->text_len] = 0;
    }
    n->text = text;
    n->ev.text = text ? text : "";
    n->ev.text_len = text ? ev->text_len : 0;
    if (ev->sample) {
        n->sample = *ev->sample;
        n->ev.sample = &n->sample;
    }
    if (ev->error_message) snprintf(n->err, sizeof n->err, "%s", ev->error_message);
    n->ev.error_message = n->err;
    pthread_mutex_lock(&s->mu);
    if (s->dead) {   /* the loop is gone (forced exit): nobody will read it */
        pthread_mutex_unlock(&s->mu);
        free(n->text);
        free(n);
        return;
    }
    if (s->q_tail) s->q_tail->next = n; else s->q_head = n;
    s->q_tail = n;
    uv_async_send(&s->async);
    pthread_mutex_unlock(&s->mu);
}

static void tsr__call_free(tsr__call *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->ch[i].text);
        free(c->ch[i].ids);
        free(c->ch[i].p_ids);
        free(c->ch[i].p_res);
        if (c->ch[i].logprobs) cJSON_Delete(c->ch[i].logprobs);
    }
    tsr__fe_params_free(&c->p);
    c->srv->live_calls--;
    free(c);
}

/* best_of: once every choice is done, the n of highest mean logprob (ties: the lower index) move
 * to the front in that order and the rest are freed; an error keeps every choice (answered as one). */
static void tsr__call_keep_best(tsr__call *c) {
    int want = c->p.n > 0 ? c->p.n : 1;
    if (!c->p.best_of || c->n <= want) return;
    for (int i = 0; i < c->n; i++)
        if (c->ch[i].finish == TSR_FINISH_ERROR) return;
    for (int k = 0; k < want; k++) {   /* selection: k-th best into place k */
        int best = k;
        for (int i = k + 1; i < c->n; i++) {
            const tsr__choice *a = &c->ch[i], *b = &c->ch[best];
            double ma = a->logprob_sum / (double)(a->completion_tokens > 0 ? a->completion_tokens : 1);
            double mb = b->logprob_sum / (double)(b->completion_tokens > 0 ? b->completion_tokens : 1);
            if (ma > mb || (ma == mb && a->index < b->index)) best = i;
        }
        tsr__choice t = c->ch[k];
        c->ch[k] = c->ch[best];
        c->ch[best] = t;
    }
    for (int i = want; i < c->n; i++) {
        c->dropped_tokens += c->ch[i].completion_tokens;
        free(c->ch[i].text);
        free(c->ch[i].ids);
        free(c->ch[i].p_ids);
        free(c->ch[i].p_res);
        if (c->ch[i].logprobs) cJSON_Delete(c->ch[i].logprobs);
        memset(&c->ch[i], 0, sizeof c->ch[i]);
    }
    for (int i = 0; i < want; i++) c->ch[i].index = i;
    c->n = want;
}

static void tsr__dispatch(tsr__evnode *n) {
    tsr__choice *ch = n->choice;
    tsr__call *c = ch->call;
    tsr__srv *s = c->srv;
    const tsr_engine_event *ev = &n->ev;
    if (ev->type == TSR_EVENT_PROMPT_TOKEN) {   /* echo with logprobs: kept for the answer */
        if (c->owner && tsr_grow((void **)&ch->p_ids, &ch->cap_p, ch->n_p + 1, sizeof *ch->p_ids) &&
            tsr_grow((void **)&ch->p_res, &ch->cap_p_res, ch->n_p + 1, sizeof *ch->p_res)) {
            ch->p_ids[ch->n_p] = ev->token;
            if (ev->sample) ch->p_res[ch->n_p] = *ev->sample;
            else memset(&ch->p_res[ch->n_p], 0, sizeof *ch->p_res);
            ch->n_p++;
        }
        return;
    }
    if (ev->type == TSR_EVENT_TOKEN) {
        if (c->owner) {
            if (ev->token >= 0 && tsr_grow((void **)&ch->ids, &ch->cap_ids, ch->n_ids + 1, sizeof *ch->ids))
                ch->ids[ch->n_ids++] = ev->token;
            ch->completion_tokens++;
            if (ev->sample) ch->logprob_sum += ev->sample->logprob;
            c->ops->on_token(c, ch, ev);
        }
        return;
    }
    ch->done = true;
    ch->finish = ev->finish;
    ch->error = ev->error;
    snprintf(ch->error_message, sizeof ch->error_message, "%s", n->err);
    ch->prompt_tokens = ev->prompt_tokens;
    ch->cached_tokens = ev->cached_tokens;
    ch->completion_tokens = ev->completion_tokens;
    int f = ev->finish >= 1 && ev->finish <= 4 ? (int)ev->finish : 5;
    s->metrics.requests[c->api][f]++;
    s->metrics.prompt_tokens += ev->prompt_tokens;
    s->metrics.completion_tokens += ev->completion_tokens;
    s->metrics.cached_tokens += ev->cached_tokens;
    if (ev->completion_tokens > 0) {
        tsr__fe_hist_add(&s->metrics.ttft, ev->time_to_first_token_s);
        if (ev->completion_tokens > 1)
            tsr__fe_hist_add(&s->metrics.tpot,
                             (ev->total_s - ev->time_to_first_token_s) / (double)(ev->completion_tokens - 1));
    }
    tsr__fe_hist_add(&s->metrics.e2e, ev->total_s);
    c->outstanding--;
    s->inflight--;
    if (c->owner) {
        c->ops->on_done(c, ch, ev);
        if (c->outstanding == 0 && c->owner) {
            tsr__call_keep_best(c);
            c->ops->on_complete(c);
        }
    }
    if (c->outstanding == 0 && !c->owner) {
        tsr__call_free(c);
        tsr__call_drain_check(s);
    }
}

void tsr__call_on_async(uv_async_t *a) {
    tsr__srv *s = a->data;
    pthread_mutex_lock(&s->mu);
    tsr__evnode *n = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (n) {
        tsr__evnode *next = n->next;
        tsr__call *c = n->choice->call;
        if (c->submitting) {   /* its submission's results are not in yet: after them */
            n->next = NULL;
            if (c->held_tail) c->held_tail->next = n;
            else c->held = n;
            c->held_tail = n;
        } else {
            tsr__dispatch(n);
            free(n->text);
            free(n);
        }
        n = next;
    }
}

void tsr__call_queue_close(tsr__srv *s) {
    pthread_mutex_lock(&s->mu);
    tsr__evnode *n = s->q_head;
    s->q_head = s->q_tail = NULL;
    while (n) {
        tsr__evnode *next = n->next;
        free(n->text);
        free(n);
        n = next;
    }
    s->dead = true;
    pthread_mutex_unlock(&s->mu);
}

tsr__call *tsr__call_new(tsr__srv *s, int api, tsr__fe_params *p, void *owner, const tsr__call_ops *ops) {
    tsr__call *c = calloc(1, sizeof *c);
    if (!c) {
        tsr__fe_params_free(p);
        return NULL;
    }
    c->srv = s;
    c->api = api;
    c->p = *p;
    memset(p, 0, sizeof *p);
    c->owner = owner;
    c->ops = ops;
    c->n = c->p.n > 0 ? c->p.n : 1;
    if (c->p.best_of > c->n) c->n = c->p.best_of;
    c->created = (long long)time(NULL);
    tsr__fe_make_id(api == 1 ? "cmpl" : "chatcmpl", c->id, sizeof c->id);
    for (int i = 0; i < c->n; i++) {
        c->ch[i].call = c;
        c->ch[i].index = i;
    }
    s->live_calls++;
    return c;
}

/* Any thread: submits the choices in order, stopping at the first refusal; writes only the
 * call's sub_* fields (the loop reads them once this is over). */
static void tsr__call_submit_choices(tsr__call *c) {
    for (int i = 0; i < c->n; i++) {
        tsr_engine_request r;
        tsr__fe_to_engine(&c->p, i, &r);
        tsr_engine_error ee;
        if (tsr_engine_submit_ex(c->srv->engine, &r, tsr__engine_cb, &c->ch[i], &c->sub_rid[i], &ee) != TSR_OK) {
            tsr__fe_engine_error(&ee, c->p.messages != NULL, &c->sub_err);
            c->sub_failed = true;
            return;
        }
        c->sub_ok[i] = true;
    }
}

/* The loop takes the submission's results: the choices that did not go in give back what
 * tsr__call_submit reserved for them, the owner hears how it went, and the events that
 * arrived meanwhile are handed over in order. */
static void tsr__call_submitted(tsr__call *c, bool later) {
    tsr__srv *s = c->srv;
    c->submitting = false;
    for (int i = 0; i < c->n; i++) {
        if (c->sub_ok[i]) {
            c->ch[i].rid = c->sub_rid[i];
            c->ch[i].submitted = true;
        } else {
            c->outstanding--;
            s->inflight--;
        }
    }
    /* held events belong to submitted choices whose DONE is not dispatched yet: while there are
     * any, the call stays alive through whatever the owner does below */
    tsr__evnode *n = c->held;
    c->held = c->held_tail = NULL;
    if (c->owner) {
        c->ops->on_submitted(c, c->sub_failed ? &c->sub_err : NULL, later);
    } else {   /* the owner went away while a worker submitted */
        for (int i = 0; i < c->n; i++)
            if (c->ch[i].submitted && !c->ch[i].done) tsr_engine_cancel(s->engine, c->ch[i].rid);
        if (c->outstanding == 0) {
            tsr__call_free(c);
            tsr__call_drain_check(s);
            return;
        }
    }
    while (n) {
        tsr__evnode *next = n->next;
        tsr__dispatch(n);
        free(n->text);
        free(n);
        n = next;
    }
}

static void tsr__call_submit_work(uv_work_t *w) { tsr__call_submit_choices(w->data); }

static void tsr__call_submit_after(uv_work_t *w, int status) {
    (void)status;   /* never cancelled: the loop runs until every call is over */
    tsr__call_submitted(w->data, true);
}

void tsr__call_submit(tsr__call *c) {
    tsr__srv *s = c->srv;
    memset(c->sub_ok, 0, sizeof c->sub_ok);
    c->sub_failed = false;
    if (s->inflight + c->n > s->cfg.max_running + s->cfg.max_queue) {
        /* a bounded queue: what it cannot hold is told to come back (429 + Retry-After) */
        s->metrics.queue_refused++;
        tsr__fe_seterr(&c->sub_err, 429, "rate_limit_error", NULL, "queue_full",
                       "the server is at capacity (%lld running or waiting, --max-queue %lld); retry later",
                       (long long)s->inflight, (long long)s->cfg.max_queue);
        c->sub_failed = true;
        c->ops->on_submitted(c, &c->sub_err, false);
        return;
    }
    /* reserved now (the queue bound holds while workers submit); given back per choice refused */
    c->outstanding += c->n;
    s->inflight += c->n;
    const bool tokenizes = !c->p.session_id && !c->p.prompt_ids && (c->p.prompt || c->p.messages);
    if (tokenizes) {
        c->submitting = true;
        c->work.data = c;
        if (uv_queue_work(s->loop, &c->work, tsr__call_submit_work, tsr__call_submit_after) == 0) return;
        c->submitting = false;   /* no thread pool: here, then */
    }
    tsr__call_submit_choices(c);
    tsr__call_submitted(c, false);
}

void tsr__call_detach(tsr__call *c) {
    c->owner = NULL;
    for (int i = 0; i < c->n; i++)
        if (c->ch[i].submitted && !c->ch[i].done) tsr_engine_cancel(c->srv->engine, c->ch[i].rid);
    if (c->outstanding == 0) {
        tsr__srv *s = c->srv;
        tsr__call_free(c);
        tsr__call_drain_check(s);
    }
}

void tsr__choice_text_append(tsr__choice *ch, const char *t, size_t n) {
    if (ch->text_len + n + 1 > ch->text_cap) {
        size_t cap = (ch->text_cap ? ch->text_cap * 2 : 256) + n;
        char *x = realloc(ch->text, cap);
        if (!x) return;
        ch->text = x;
        ch->text_cap = cap;
    }
    memcpy(ch->text + ch->text_len, t, n);
    ch->text_len += n;
    ch->text[ch->text_len] = 0;
}

char *tsr__srv_token_text(tsr__srv *s, int32_t id) {
    const tsr_tokenizer *tok = tsr_engine_tokenizer(s->engine);
    char *t = NULL;
    size_t len = 0;
    if (!tok || tsr_tokenizer_decode(tok, &id, 1, false, &t, &len) != TSR_OK) {
        char buf[32];
        snprintf(buf, sizeof buf, "<%d>", (int)id);
        return strdup(buf);
    }
    char *out = tsr__fe_utf8_sanitize(t, len);
    free(t);
    return out;
}

const char *tsr__srv_finish_str(tsr_finish_reason f) {
    switch (f) {
    case TSR_FINISH_LENGTH: return "length";
    case TSR_FINISH_CANCELLED: return "abort";
    case TSR_FINISH_ERROR: return "error";
    default: return "stop";
    }
}

/* ---------------------------------------------------------------- draining */

static void tsr__stop_timer_cb(uv_timer_t *t) { uv_stop(t->loop); }

void tsr__call_drain_check(tsr__srv *s) {
    if (s->draining && s->live_calls == 0 && !uv_is_active((uv_handle_t *)&s->drain_timer))
        uv_timer_start(&s->drain_timer, tsr__stop_timer_cb, 200, 0);   /* lets the last writes flush */
}
