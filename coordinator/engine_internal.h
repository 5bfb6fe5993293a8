/* The engine's private state (engine.h is the public face), shared by the files that implement
 * it, one concern each; each file calls only the ones listed before it:
 *   engine_session.c  sessions: find, join (a turn's input onto the session's sequence), end
 *   engine_submit.c   request intake on the caller's thread: submit, cancel, end_session
 *   engine_grammar.c  structured output: a request's grammar, matcher and token mask
 *   engine_output.c   per-sequence output: sampled token -> stop/EOS -> detokenize -> event,
 *                     the end of a request, the poll queue, stats
 *   engine_step.c     the step thread: open the runtime, take the inbox, plan, forward, sample
 *   engine_open.c     open / close and the accessors (engine.h itself has no engine.c: every
 *                     file here depends on it, so it holds declarations only)
 * Locking: mu guards the inbox, cancels, the poll queue, stats and health; tok_mu the
 * tokenizer's encode; everything else belongs to the step thread. */
#ifndef TSR_ENGINE_INTERNAL_H
#define TSR_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/grow.h"
#include "coordinator/block_manager.h"
#include "coordinator/engine.h"
#include "coordinator/grammar/grammar.h"
#include "coordinator/scheduler.h"
#include "worker/forward.h"
#include "worker/runtime.h"

#define TSR__MAX_EOS 10
/* prompt-logprob rows per forward call: a prefill chunk up to this size runs whole, so its
 * numbers are the ones a plain prefill of it gives (the CPU backend's matmuls take another path
 * below 32 rows); the buffer grows to the largest chunk seen */
#define TSR__PLP_ROWS 512

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
    tsr_grammar *grammar;            /* structured output (engine_grammar.c); NULL: free text */
    tsr_grammar_matcher *gm;
    uint64_t *gmask;                 /* [(vocab + 63) / 64] the step's allowed tokens */
    int32_t *bias_ids;               /* logit_bias (owned copies) */
    float *bias_vals;
    int64_t n_bias;
    tsr_sample_bias bias;            /* sp.bias points here when logit_bias or min_tokens is set */
    bool plp;                        /* prompt logprobs wanted */
    int32_t plp_top;
    int64_t plp_next;                /* the next prompt position to report (a recompute skips the rest) */
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
    /* prompt logprobs (engine_step.c): a sampler and the all-logits rows of one sub-chunk */
    tsr_sampler *plp_sampler;
    float *plp_logits;               /* [plp_rows][vocab] */
    int64_t plp_rows;

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
    tsr_grammar_vocab *gvocab;       /* the vocabulary's trie, built for the first grammar */

    /* poll mode (under mu) */
    tsr__polled *pq;
    int64_t pq_head, pq_n, pq_cap;
    tsr__polled *given;              /* what the last poll handed out */
    int64_t n_given;
    pthread_cond_t poll_cv;

    /* stats (under mu) */
    tsr_engine_stats st;
};

/* engine_session.c */
void tsr__engine_free_msgs(tsr_chat_message *m, int64_t n);
tsr__session *tsr__engine_session_find(tsr_engine *e, uint64_t id);
void tsr__engine_session_end(tsr_engine *e, tsr__session *s);
tsr_status tsr__engine_session_join(tsr_engine *e, tsr__req *r, tsr_sched_seq **out);

/* engine_submit.c */
void tsr__engine_req_free(tsr__req *r);

/* engine_grammar.c: compile at submit (caller's thread); the rest on the step thread */
tsr_status tsr__engine_grammar_compile(const tsr_engine_request *rq, tsr__req *r);
tsr_status tsr__engine_grammar_start(tsr_engine *e, tsr__req *r);
void tsr__engine_grammar_mask(tsr_engine *e, tsr__req *r);
tsr_status tsr__engine_grammar_accept(tsr_engine *e, tsr__req *r, int32_t tok);
void tsr__engine_grammar_free(tsr__req *r);

/* engine_output.c (step thread, but tsr__engine_polled_free) */
void tsr__engine_finish(tsr_engine *e, tsr__req *r, tsr_finish_reason why, tsr_status err, const char *msg);
void tsr__engine_sample_one(tsr_engine *e, tsr__req *r, int32_t tok, const tsr_sample_result *sr_in);
void tsr__engine_update_stats(tsr_engine *e);
/* prompt logprobs: the token at position pos of r's prompt (res NULL for position 0) */
void tsr__engine_prompt_token(tsr_engine *e, tsr__req *r, int64_t pos, const tsr_sample_result *res);
void tsr__engine_polled_free(tsr__polled *p);

/* engine_step.c: the step thread's body */
void *tsr__engine_step_main(void *arg);

#endif
