/* A single-process generation session over the forward pass: what `tessera generate`,
 * `tessera chat` and `tessera bench generate` run.  It owns one model on one backend, the
 * tokenizer, the chat template, a KV pool and a sampler, and drives one sequence at a time:
 * prefill the new prompt tokens, then decode token by token with sampling, stop conditions
 * and streaming.  The batching engine (coordinator/engine) replaces the loop, not the parts:
 * it reuses worker/sampling and coordinator/stop the same way.
 *
 * A session (tsr_session) keeps its KV blocks and its token history between calls, like
 * TurboMind's interactive mode: the next call prefills only the tokens it appends.  The last
 * sampled token of a call is kept in the history but not yet in the KV; the next call feeds
 * it first.  Chat turns go through tsr_session_chat, which renders the conversation with the
 * chat template and prefills only the text that the previous turns have not covered. */
#ifndef TSR_GENERATOR_H
#define TSR_GENERATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/chat_template.h"
#include "coordinator/stop.h"
#include "coordinator/tokenizer.h"
#include "worker/sampling.h"

typedef struct tsr_gen_config {
    const char *model_path;      /* GGUF file or HF directory (required) */
    const char *chat_template;   /* name or JSON file; NULL: detect from the model */
    int64_t session_len;         /* max tokens of one session; <= 0: min(max positions, 4096) */
    int n_threads;               /* CPU backend threads; 0: default */
    const char *backend;         /* "auto" (GPU when there is one) | "cpu" | "cuda"; NULL: auto */
    int64_t tp;                  /* expected TP group size (mpirun -np); 0: whatever it is */
    const char *load_format;     /* "auto" (NULL) or "dummy" (random weights, config shapes) */
    bool progress;               /* progress line while loading */
} tsr_gen_config;

typedef struct tsr_generator tsr_generator;
typedef struct tsr_session tsr_session;

/* Under mpirun every rank calls this with the same config: rank 0 gets the generator; the
 * other ranks replay rank 0's steps inside the call and return TSR_OK with *out == NULL when
 * rank 0 closes its generator.  A failure is reported on every rank with the same message
 * (print it where tsr_group_world_rank() == 0). */
tsr_status tsr_generator_open(const tsr_gen_config *cfg, tsr_generator **out);
void tsr_generator_close(tsr_generator *g);

/* NULL when the model has no tokenizer (then only token ids go in and out). */
const tsr_tokenizer *tsr_generator_tokenizer(const tsr_generator *g);
const tsr_chat_template *tsr_generator_chat_template(const tsr_generator *g);
int64_t tsr_generator_vocab_size(const tsr_generator *g);
int64_t tsr_generator_session_len(const tsr_generator *g);
/* Device bytes of the weights (what one decode step of one sequence reads). */
size_t tsr_generator_weight_bytes(const tsr_generator *g);

/* One streamed token. text is what becomes final with it (possibly "", when UTF-8 bytes are
 * incomplete or a possible stop string is held back); NUL-terminated. */
typedef struct tsr_gen_token {
    int32_t id;
    int64_t index;                    /* 0 for the first generated token */
    const char *text;
    size_t text_len;
    const tsr_sample_result *sample;  /* chosen token's logprob and top N (when asked for) */
} tsr_gen_token;

/* Called once per generated token, and once more with id -1 for the text released at the
 * end (held-back text flushed).  Return false to cancel. */
typedef bool (*tsr_gen_callback)(void *user, const tsr_gen_token *t);

typedef struct tsr_gen_request {
    int64_t max_new_tokens;           /* > 0 */
    tsr_sampling_params sampling;     /* validated by the call */
    const char *const *stop;          /* stop strings */
    int n_stop;
    const int32_t *stop_ids;
    int n_stop_ids;
    bool ignore_eos;
    bool skip_special;                /* drop special tokens from the text (default true) */
    tsr_gen_callback on_token;        /* may be NULL */
    void *user;
} tsr_gen_request;

void tsr_gen_request_default(tsr_gen_request *r);

typedef struct tsr_gen_stats {
    int64_t n_cached;       /* tokens whose KV was already there */
    int64_t n_prefill;      /* tokens prefilled by this call */
    int64_t n_generated;
    double prefill_s;       /* prefill forward time, up to the first sampled token */
    double decode_s;        /* the rest */
    tsr_finish_reason finish;
    int32_t *ids;           /* generated ids (malloc'd, n_generated; freed by tsr_gen_stats_free) */
    char *text;             /* the released text (malloc'd) */
    size_t text_len;
} tsr_gen_stats;

void tsr_gen_stats_free(tsr_gen_stats *st);

tsr_status tsr_session_new(tsr_generator *g, tsr_session **out);
void tsr_session_free(tsr_session *s);
/* Drop the history and free the KV blocks. */
void tsr_session_reset(tsr_session *s);
/* Tokens in the history (fed or pending). */
int64_t tsr_session_n_tokens(const tsr_session *s);

/* Appends ids to the session and generates.  A request that cannot fit (history + ids would
 * leave no room for one new token within session_len) fails with TSR_ERR_INVALID_ARG and a
 * message, and leaves the session as it was.  Generation stops at max_new_tokens, a stop
 * condition, or when the session is full (finish = length). */
tsr_status tsr_session_generate(tsr_session *s, const int32_t *ids, int64_t n_ids,
                                const tsr_gen_request *req, tsr_gen_stats *st);

/* Like generate, from text: encoded with add_special (BOS) only when the session is empty. */
tsr_status tsr_session_generate_text(tsr_session *s, const char *text, const tsr_gen_request *req,
                                     tsr_gen_stats *st);

/* A chat turn: appends {role: user, content} (and a system message first when the session is
 * new and system is not NULL) to the conversation, renders it with the chat template, and
 * prefills only what the previous turns did not cover.  The template's stop words are added
 * to the request's stop strings.  The answer (the generated text as the KV holds it) becomes
 * the assistant message of the conversation. */
tsr_status tsr_session_chat(tsr_session *s, const char *system, const char *content,
                            const tsr_gen_request *req, tsr_gen_stats *st);

#endif
