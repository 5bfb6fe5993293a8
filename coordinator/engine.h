/* The engine (rank 0): the request life cycle over the continuous-batching scheduler.  This is
 * Tessera's public C API for embedding (installed as <tessera/engine.h> with libtessera and a
 * pkg-config file) and what the server, `tessera chat`/`generate` and the benchmarks drive.
 *
 * Threads: the engine runs its own step thread.  tsr_engine_submit / cancel / end_session may be
 * called from any thread at any time.  Events (tokens, the end of a request) are delivered either
 * to a callback -- called on the engine's step thread, so it must be quick and must not call back
 * into the engine except tsr_engine_cancel -- or, when no callback is given, queued for
 * tsr_engine_poll.
 *
 * Under mpirun every rank calls tsr_engine_open with the same config; on ranks > 0 it runs the
 * worker step loop and returns (TSR_OK, *out == NULL) when rank 0 closes its engine.  The step
 * thread makes every MPI call (it initializes MPI), so the library needs only FUNNELED.
 *
 * Errors: a request's DONE event with TSR_FINISH_ERROR carries a status in `error` for the
 * caller to map: TSR_ERR_INVALID_ARG (the request's fault), TSR_ERR_OOM / TSR_ERR_KV_FULL (no
 * memory for it now: retry later), TSR_ERR_COMM (the group broke: tsr_engine_health fails).
 *
 * Text: a request gives token ids, a prompt string, or chat messages (rendered with the model's
 * chat template).  Events carry the token id and the text that became final with it: complete
 * UTF-8 with stop strings held back while they may still match (coordinator/stop.h). */
#ifndef TSR_ENGINE_H
#define TSR_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/chat_template.h"
#include "coordinator/stop.h"
#include "coordinator/tokenizer.h"
#include "worker/sampling.h"

typedef struct tsr_engine tsr_engine;

typedef struct tsr_engine_config {
    const char *model_path;          /* GGUF file, HF directory or workspace (required) */
    const char *backend;             /* "auto" | "cpu" | "cuda"; NULL: auto */
    const char *chat_template;       /* name or LMDeploy JSON file; NULL: from the model */
    int64_t tp;                      /* expected group size (0: whatever mpirun gave) */
    int64_t max_batch_size;          /* sequences per step (0: config.ini's, else
                                        tsr_engine_default_max_batch for the pool and device) */
    int64_t max_prefill_token_num;   /* per-step token budget for prefill chunks (0: config.ini's, else 2048) */
    int64_t session_len;             /* max tokens of one sequence/session (0: the model's) */
    double cache_max_entry_count;    /* KV pool: < 1 fraction of free memory, >= 1 blocks (0: default) */
    int64_t cache_block_seq_len;     /* tokens per KV block (0: 64) */
    int64_t quant_policy;            /* KV cache: 0 compute type, 8 int8, 4 int4 (-1, the default:
                                        a workspace's config.ini, else 0) */
    bool enable_prefix_cache;        /* hash full blocks and reuse them across requests (default true) */
    double session_ttl_s;            /* idle sessions end after this (<= 0: never) */
    int64_t threads;                 /* CPU backend threads per rank (0: default) */
    bool progress;                   /* loading progress on rank 0 */
    const char *load_format;         /* NULL/"auto": the files; "dummy": random weights, config shapes */
    /* A single-sequence embedder (`tessera generate`, `chat`, `bench generate`): when neither
     * this config nor a workspace's config.ini sets them, session_len is min(this, the model's)
     * and the KV pool holds one session (0 / false: the model's length, a share of memory). */
    int64_t session_len_fallback;
    bool kv_one_session_fallback;
    /* Called once, on the step thread, when the rank group breaks (a rank stopped answering, a
     * collective failed): every request has ended with the error and no step can run again.
     * The server uses it to shut down (the group must be restarted); may be NULL. */
    void (*on_fatal)(void *user, const char *message);
    void *on_fatal_user;
} tsr_engine_config;

void tsr_engine_config_default(tsr_engine_config *c);

tsr_status tsr_engine_open(const tsr_engine_config *c, int *argc, char ***argv, tsr_engine **out);
/* Finishes nothing: running requests end with TSR_FINISH_CANCELLED DONE events first.  To drain,
 * stop submitting and wait for the requests' done events (or tsr_engine_drain). */
void tsr_engine_close(tsr_engine *e);

typedef struct tsr_engine_message {
    const char *role;                /* "system" | "user" | "assistant" */
    const char *content;
} tsr_engine_message;

typedef struct tsr_engine_request {
    /* the input: exactly one of these */
    const int32_t *prompt_ids;
    int64_t n_prompt_ids;
    const char *prompt;              /* encoded with the tokenizer's special tokens (BOS) */
    const tsr_engine_message *messages;
    int64_t n_messages;              /* rendered with the chat template + generation prompt */

    int64_t max_new_tokens;          /* 0: up to session_len */
    tsr_sampling_params sampling;    /* validated at submit */
    const char *const *stop;         /* stop strings (the template's stop words are added) */
    int n_stop;
    const int32_t *stop_ids;
    int n_stop_ids;
    bool ignore_eos;
    bool skip_special;               /* keep special tokens out of the text (default true) */
    /* OpenAI's logit_bias: bias_vals[i] is added to the logit of token bias_ids[i] (ids within
     * the vocabulary, values in [-100, 100]); sampling.min_tokens masks the stop ids (EOS and
     * stop_ids) until that many tokens are out. */
    const int32_t *logit_bias_ids;
    const float *logit_bias_vals;
    int n_logit_bias;
    /* The prompt's own logprobs (each prompt token's given the ones before it, with the top
     * prompt_top_logprobs) come as TSR_EVENT_PROMPT_TOKEN events before the first TOKEN; the
     * prefix cache is then bypassed for this request so that every position is computed.  Not
     * with a session. */
    bool prompt_logprobs;
    int32_t prompt_top_logprobs;     /* 0..TSR_SAMPLING_MAX_LOGPROBS */
    /* Cut max_new_tokens to what session_len and the KV pool leave (TurboMind's interactive
     * mode), ending with TSR_FINISH_LENGTH there, instead of refusing the request; a prompt
     * that leaves no room for one token is still refused. */
    bool truncate_to_fit;
    /* Structured output (constrained decoding, coordinator/grammar/grammar.h says what is
     * supported): the output is one JSON value, ending when it is complete.  json_schema: a JSON
     * schema's text ("" or {"type": "object"}: any JSON object); tool_functions: a JSON array of
     * OpenAI function objects ({"name", "parameters"}), the output then being one call
     * {"name": ..., "arguments": {...}} of one of them.  At most one; NULL: free text.  An
     * unsupported schema is refused at submit (TSR_FIELD_GRAMMAR). */
    const char *json_schema;
    const char *tool_functions;

    /* sessions (TurboMind's interactive mode): with session_id != 0 the request continues the
     * session's conversation; its KV stays after the request ends, so the next one prefills only
     * its new tokens.  With messages, only the newest messages are appended; the session holds
     * the rendered history. */
    uint64_t session_id;
    bool end_session;                /* end the session when this request finishes */
} tsr_engine_request;

void tsr_engine_request_default(tsr_engine_request *r);

typedef enum tsr_event_type {
    TSR_EVENT_TOKEN = 1,             /* one generated token (text may be "") */
    TSR_EVENT_DONE,                  /* the request ended; the last event of a request */
    TSR_EVENT_PROMPT_TOKEN,          /* prompt_logprobs: one prompt token, in order from position 0;
                                        token: its id; sample: its logprob (NULL for position 0) */
} tsr_event_type;

typedef struct tsr_engine_event {
    uint64_t request_id;
    tsr_event_type type;
    int32_t token;                   /* TOKEN: the id; DONE: -1 */
    const char *text;                /* the newly final text (valid during the callback only) */
    size_t text_len;
    const tsr_sample_result *sample; /* TOKEN with logprobs asked for; else NULL */
    /* DONE only */
    tsr_finish_reason finish;        /* coordinator/stop.h */
    tsr_status error;                /* TSR_FINISH_ERROR: why (message in error_message) */
    const char *error_message;
    int64_t prompt_tokens;           /* tokens of the input */
    int64_t cached_tokens;           /* of them, served from the prefix cache / session */
    int64_t completion_tokens;
    double time_to_first_token_s;    /* from submit */
    double total_s;
} tsr_engine_event;

typedef void (*tsr_engine_callback)(void *user, const tsr_engine_event *ev);

/* Validates (bad parameters, a prompt that can never fit session_len: TSR_ERR_INVALID_ARG with
 * a message naming the parameter) and enqueues.  cb NULL: events go to tsr_engine_poll. */
tsr_status tsr_engine_submit(tsr_engine *e, const tsr_engine_request *r, tsr_engine_callback cb, void *user,
                             uint64_t *request_id);
/* What a refused submit was about, so that a front end answers without reading the message:
 * the request's part at fault and whether it is the request's fault at all. */
typedef enum tsr_engine_field {
    TSR_FIELD_NONE = 0,              /* no one part (the engine's state, memory) */
    TSR_FIELD_PROMPT,                /* prompt, prompt_ids or messages (or the session they continue) */
    TSR_FIELD_MAX_NEW_TOKENS,
    TSR_FIELD_SAMPLING,
    TSR_FIELD_STOP,
    TSR_FIELD_LOGIT_BIAS,
    TSR_FIELD_PROMPT_LOGPROBS,
    TSR_FIELD_GRAMMAR,               /* json_schema or tool_functions */
} tsr_engine_field;

typedef enum tsr_engine_errcode {
    TSR_ENGINE_ERR_NONE = 0,
    TSR_ENGINE_ERR_INVALID,          /* the request's fault: a value it may not have */
    TSR_ENGINE_ERR_TOO_LONG,         /* the request's fault: prompt + max_new_tokens exceed session_len */
    TSR_ENGINE_ERR_UNAVAILABLE,      /* not the request's: out of memory, closing, the group broke */
} tsr_engine_errcode;

typedef struct tsr_engine_error {
    tsr_status status;               /* what tsr_engine_submit_ex returned */
    tsr_engine_errcode code;
    tsr_engine_field field;          /* TSR_FIELD_NONE unless the request is at fault */
    char message[256];               /* tsr_last_error()'s text */
} tsr_engine_error;

/* tsr_engine_submit, and on a refusal what it was about in *err (NULL: not wanted). */
tsr_status tsr_engine_submit_ex(tsr_engine *e, const tsr_engine_request *r, tsr_engine_callback cb, void *user,
                                uint64_t *request_id, tsr_engine_error *err);
/* Frees the request's blocks within one step; its DONE event says TSR_FINISH_CANCELLED.  Unknown or
 * finished ids are not an error. */
tsr_status tsr_engine_cancel(tsr_engine *e, uint64_t request_id);
/* Ends a session now (its KV blocks return to the pool / prefix cache). */
tsr_status tsr_engine_end_session(tsr_engine *e, uint64_t session_id);

/* Poll mode: copies up to max events (texts copied into the event's own storage, valid until
 * the next poll) waiting up to timeout_ms; returns the number. */
int tsr_engine_poll(tsr_engine *e, tsr_engine_event *events, int max, int timeout_ms);

/* Blocks until no request is running or waiting. */
void tsr_engine_drain(tsr_engine *e);

typedef struct tsr_engine_stats {
    int64_t running, waiting;
    int64_t kv_blocks_total, kv_blocks_used, kv_blocks_free, kv_blocks_cached;
    int64_t prefix_hit_tokens, prefix_query_tokens;
    int64_t preemptions_total;
    int64_t sessions;
    int64_t steps;
    /* per step that ran a forward pass: the time inside it (forward + sampling, "busy") and the
     * whole step (inbox, plan, commit, forward, stop checks, detokenizing, events); their
     * difference is the engine's own overhead */
    double step_busy_s, step_wall_s;
} tsr_engine_stats;

void tsr_engine_get_stats(tsr_engine *e, tsr_engine_stats *s);

/* TSR_OK while the engine can serve; otherwise the status of the fatal error that stopped it
 * (TSR_ERR_COMM: the rank group broke), with its message in msg (cap bytes; "ok" when healthy).
 * A failure of one step or request (out of memory for it, say) ends only those requests and
 * leaves the engine healthy.  Any thread. */
tsr_status tsr_engine_health(tsr_engine *e, char *msg, size_t cap);

/* What the front end needs besides requests (owned by the engine). */
const tsr_tokenizer *tsr_engine_tokenizer(const tsr_engine *e);
const tsr_chat_template *tsr_engine_chat_template(const tsr_engine *e);
const char *tsr_engine_model_name(const tsr_engine *e);
int64_t tsr_engine_session_len(const tsr_engine *e);
int64_t tsr_engine_max_batch_size(const tsr_engine *e);   /* in force: flag > config.ini > default */
/* The default max_batch_size: the sequences the KV pool holds at min(session_len, 512) tokens
 * each (a typical request; a longer one is preempted and recomputed when the pool runs short), at
 * least 1, capped by the device: 256 on a GPU, 64 on the CPU backend (its steps are
 * slow: 64 rows already cost ~0.4 s per step with the default model on 2 cores, see README). */
#define TSR_ENGINE_MAX_BATCH_GPU 256
#define TSR_ENGINE_MAX_BATCH_CPU 64
int64_t tsr_engine_default_max_batch(int64_t pool_tokens, int64_t session_len, bool gpu);
/* tsr_tokenizer_encode on the engine's tokenizer under its lock (the word cache is not
 * thread-safe and submissions encode on other threads); any thread.  No tokenizer: an error. */
tsr_status tsr_engine_encode(tsr_engine *e, const char *text, size_t len, bool add_special, int32_t **ids, int64_t *n);
/* Token ids a prompt may use (the tokenizer's vocabulary, within the model's). */
int64_t tsr_engine_vocab_size(const tsr_engine *e);
/* Bytes of rank 0's weights (what one decode step of one sequence reads there). */
size_t tsr_engine_weight_bytes(const tsr_engine *e);

#endif
