/* Calls: the bridge between the engine and the front end's two halves (HTTP in http_*.c, gRPC
 * in grpc.c).  A call is one client request, which becomes n engine requests (choices).  The
 * engine's callback runs on its step thread: it copies the event into the server's queue and
 * wakes the loop (uv_async_t), which hands it to the call's owner through tsr__call_ops.  A call
 * outlives its connection: when a client goes away the call is detached and its engine requests
 * cancelled, and it is freed when the last DONE event arrives, so no engine callback ever points
 * at freed memory.  This file knows neither half nor the loop: owners come in through ops. */
#ifndef TSR_CALL_H
#define TSR_CALL_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/frontend/srv.h"

typedef struct tsr__call tsr__call;

typedef struct tsr__choice {
    tsr__call *call;
    int index;
    uint64_t rid;
    bool submitted, done;
    char *text;                      /* accumulated text (non-streaming answers) */
    size_t text_len, text_cap;
    cJSON *logprobs;                 /* accumulated per-token logprob entries (or NULL) */
    int32_t *ids;                    /* generated ids (gRPC) */
    int64_t n_ids, cap_ids;
    bool sent_first;                 /* streaming: the role delta went out */
    tsr_finish_reason finish;
    tsr_status error;
    char error_message[256];
    int64_t prompt_tokens, cached_tokens, completion_tokens;
    double logprob_sum;              /* of the chosen tokens, when the engine reports them */
    int32_t *p_ids;                  /* echo with logprobs: the prompt's ids (TSR_EVENT_PROMPT_TOKEN) */
    tsr_sample_result *p_res;        /* and their logprobs (p_res[0] unused: the first has none) */
    int64_t n_p, cap_p, cap_p_res;
    bool echo_sent;                  /* streaming echo: the prompt's chunk went out */
    int64_t stream_off;              /* streaming completions: characters sent so far (text_offset) */
    bool tool_plain;                 /* streaming with tools (http_tools.c): known to be plain text */
} tsr__choice;

/* What the owner (an HTTP connection or a gRPC stream) does with a call's events; called on
 * the loop thread only while the owner is attached. */
typedef struct tsr__call_ops {
    void (*on_token)(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev);
    void (*on_done)(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev);
    void (*on_complete)(tsr__call *c);   /* every choice is done; the owner must detach */
    /* tsr__call_submit is over: err NULL (every choice runs) or the refusal (the owner then
     * detaches and answers it); later: called from the loop after a worker thread tokenized,
     * not from inside tsr__call_submit (a gRPC owner then flushes its connection) */
    void (*on_submitted)(tsr__call *c, const tsr__fe_error *err, bool later);
} tsr__call_ops;

struct tsr__call {
    tsr__srv *srv;
    int api;                         /* 0 chat, 1 completion, 2 interactive, 3 grpc */
    tsr__fe_params p;
    void *owner;                     /* NULL once detached */
    const tsr__call_ops *ops;
    int outstanding;                 /* submitted engine requests without their DONE yet */
    char id[64];
    long long created;
    int n;                           /* choices running (best_of when it exceeds n) */
    int64_t dropped_tokens;          /* completion tokens of best_of choices not answered */
    tsr__choice ch[TSR__FE_MAX_N];
    /* submission (call.c): a worker thread tokenizes and submits while the loop goes on; the
     * engine's events for the call wait in held until the loop has taken the results */
    bool submitting;
    uv_work_t work;
    tsr__evnode *held, *held_tail;
    bool sub_ok[TSR__FE_MAX_N];
    uint64_t sub_rid[TSR__FE_MAX_N];
    bool sub_failed;
    tsr__fe_error sub_err;
};

/* The event queue's loop side: s->async is initialized with this (s as its data). */
void tsr__call_on_async(uv_async_t *a);
/* At exit, after the loop's last run: drops queued events and marks the server dead so that a
 * late engine callback queues nothing. */
void tsr__call_queue_close(tsr__srv *s);

/* A call for params p (taken over: the call frees it). */
tsr__call *tsr__call_new(tsr__srv *s, int api, tsr__fe_params *p, void *owner, const tsr__call_ops *ops);
/* Submits every choice; ops->on_submitted says how it went (the owner answers a refusal, or
 * starts its stream).  A request with text to tokenize (a prompt or chat messages outside a
 * session) is tokenized and submitted on libuv's thread pool, so that a huge prompt does not
 * hold the loop (other connections, /health); on_submitted then comes later, from the loop, and
 * not at all when the owner detached meanwhile.  Anything else (a full queue, token ids,
 * sessions) is answered from inside this call. */
void tsr__call_submit(tsr__call *c);
/* The owner lets go (client gone or answer complete): cancels what still runs; the call frees
 * itself once nothing is outstanding. */
void tsr__call_detach(tsr__call *c);

/* Draining (SIGTERM): once no call is live the loop stops, after a moment for the last writes. */
void tsr__call_drain_check(tsr__srv *s);

/* Appends generated text to a choice (answers that are sent whole; out of memory: dropped). */
void tsr__choice_text_append(tsr__choice *ch, const char *t, size_t n);
/* Token text for logprobs (decoded alone, invalid UTF-8 replaced; malloc'd). */
char *tsr__srv_token_text(tsr__srv *s, int32_t id);
/* The finish reason string OpenAI uses for a choice. */
const char *tsr__srv_finish_str(tsr_finish_reason f);

#endif
