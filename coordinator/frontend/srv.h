/* Internals of the running server shared by its HTTP half (server.c) and gRPC half (grpc.c):
 * the server state owned by the loop thread, and "calls" -- one client request, which becomes
 * n engine requests (choices).  A call outlives its connection: when a client goes away the
 * call is detached and its engine requests cancelled, and it is freed when the last DONE event
 * arrives, so no engine callback ever points at freed memory. */
#ifndef TSR_SRV_H
#define TSR_SRV_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#include "coordinator/frontend/fe.h"
#include "coordinator/frontend/server.h"

typedef struct tsr__call tsr__call;
typedef struct tsr__evnode tsr__evnode;

typedef struct tsr__srv {
    uv_loop_t *loop;
    tsr_engine *engine;
    tsr_server_config cfg;
    const char *model;
    uv_tcp_t http_listener, grpc_listener;
    bool grpc_on;
    struct tsr__gconn *grpc_conns;  /* open gRPC connections (grpc.c), closed at exit */
    uv_async_t async;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    pthread_mutex_t mu;              /* guards the event queue (engine step thread -> loop) */
    tsr__evnode *q_head, *q_tail;
    tsr__fe_metrics metrics;
    int64_t connections;
    int64_t live_calls;              /* calls with engine requests outstanding */
    int64_t inflight;                /* engine requests submitted without their DONE yet */
    int64_t held_bytes;              /* request bytes held by every connection (HTTP and gRPC) */
    bool draining;
    bool dead;                       /* guarded by mu: the loop has exited */
} tsr__srv;

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
} tsr__choice;

/* What the owner (an HTTP connection or a gRPC stream) does with a call's events; called on
 * the loop thread only while the owner is attached. */
typedef struct tsr__call_ops {
    void (*on_token)(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev);
    void (*on_done)(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev);
    void (*on_complete)(tsr__call *c);   /* every choice is done; the owner must detach */
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
    int n;
    tsr__choice ch[TSR__FE_MAX_N];
};

/* A call for params p (taken over: the call frees it). */
tsr__call *tsr__call_new(tsr__srv *s, int api, tsr__fe_params *p, void *owner, const tsr__call_ops *ops);
/* Submits every choice.  On failure cancels what went in, leaves a message in err, and returns
 * false; the caller then detaches (tsr__call_detach) and answers with err. */
bool tsr__call_submit(tsr__call *c, tsr__fe_error *err);
/* The owner lets go (client gone or answer complete): cancels what still runs; the call frees
 * itself once nothing is outstanding. */
void tsr__call_detach(tsr__call *c);

/* Token text for logprobs (decoded alone, invalid UTF-8 replaced; malloc'd). */
char *tsr__srv_token_text(tsr__srv *s, int32_t id);
/* The finish reason string OpenAI uses for a choice. */
const char *tsr__srv_finish_str(tsr_finish_reason f);

/* gRPC half (grpc.c): binds the listener on cfg.grpc_port. */
tsr_status tsr__grpc_listen(tsr__srv *s);
void tsr__grpc_close(tsr__srv *s);

#endif
