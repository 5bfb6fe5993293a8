/* Internals shared by the front end's files (not installed): OpenAI request parsing and
 * validation into engine requests, error objects, response shapes, metrics, and the pieces of
 * the server that the HTTP and gRPC halves both use.  openai.c and metrics.c are pure (no
 * sockets, no engine), which is what lets tests/unit/test_frontend.c check them directly. */
#ifndef TSR_FE_H
#define TSR_FE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "coordinator/engine.h"

#define TSR__FE_MAX_STOP 16
#define TSR__FE_MAX_N 16
#define TSR__FE_MAX_LOGIT_BIAS 1024

typedef enum { TSR__FE_CHAT = 1, TSR__FE_COMPLETION, TSR__FE_INTERACTIVE } tsr__fe_kind;

/* OpenAI's error object plus the HTTP status that carries it. */
typedef struct tsr__fe_error {
    int status;
    const char *type;      /* "invalid_request_error", "authentication_error", ... */
    const char *param;     /* NULL: null */
    const char *code;      /* NULL: null */
    char message[512];
} tsr__fe_error;

void tsr__fe_seterr(tsr__fe_error *e, int status, const char *type, const char *param, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error": {"message", "type", "param", "code"}} (malloc'd) */
char *tsr__fe_error_json(const tsr__fe_error *e);

typedef struct tsr__fe_params {
    tsr__fe_kind kind;
    cJSON *root;                     /* owns the strings below */
    const char *model;               /* NULL: not given */
    tsr_engine_message *messages;    /* chat (malloc'd array) */
    int64_t n_messages;
    char **owned;                    /* contents joined from content parts */
    int n_owned;
    const char *prompt;              /* completions / interactive */
    int32_t *prompt_ids;             /* completions with a token-id prompt (malloc'd) */
    int64_t n_prompt_ids;
    int64_t max_tokens;              /* 0: up to the session length */
    tsr_sampling_params sampling;
    const char *stop[TSR__FE_MAX_STOP];
    int n_stop;
    int32_t stop_ids[TSR__FE_MAX_STOP]; /* vLLM's stop_token_ids */
    int n_stop_ids;
    int n;
    int best_of;                     /* > n: best_of choices run, the n of best mean logprob answer */
    bool stream, include_usage, ignore_eos, echo;
    int logprobs;                    /* -1: none; else the top N (0: the chosen token's only) */
    int32_t *bias_ids;               /* logit_bias (malloc'd): token ids and their biases */
    float *bias_vals;
    int n_bias;
    uint64_t session_id;             /* interactive */
    /* structured output and tool calls (tools.c) */
    const char *json_schema;         /* response_format's schema ("": json_object); NULL: text */
    const char *tool_functions;      /* forced tool call: the functions allowed (a JSON array) */
    int tool_mode;                   /* TSR__FE_TOOLS_* */
    bool interactive_mode;
} tsr__fe_params;

/* Parses and validates a request body (already checked to be UTF-8) for kind.  On failure
 * fills err (status 400 and the offending param) and returns false; p is then freed. */
bool tsr__fe_parse(tsr__fe_kind kind, const char *body, size_t len, tsr__fe_params *p, tsr__fe_error *err);
void tsr__fe_params_free(tsr__fe_params *p);
/* The rules both halves apply to what a request asks for (the HTTP body's reader above, and
 * grpc.c's for protobuf), each failing with err (400, the field's name as param):
 * a numeric field by its name (temperature, top_p, top_k, min_p, repetition_penalty,
 * presence_penalty, frequency_penalty, seed, max_tokens, max_completion_tokens,
 * request_output_len, n, top_logprobs, completions' logprobs, session_id, min_tokens) within its range; */
/* one more logit_bias entry (key: the token id as a decimal string; bias in [-100, 100]); */
bool tsr__fe_add_bias(tsr__fe_params *p, const char *key, double bias, tsr__fe_error *err);
/* logit_bias ids and stop_token_ids within the model's vocabulary (vocab tokens). */
bool tsr__fe_check_vocab(const tsr__fe_params *p, int64_t vocab, tsr__fe_error *err);
bool tsr__fe_check(const char *name, double v, tsr__fe_error *err);
/* one more stop string (non-empty, at most TSR_STOP_MAX_STRING_LEN bytes, TSR__FE_MAX_STOP in all); */
bool tsr__fe_add_stop(tsr__fe_params *p, const char *s, tsr__fe_error *err);
/* a message's role: "system", "user", "assistant" ("developer" is "system"), else NULL; */
const char *tsr__fe_role(const char *role, tsr__fe_error *err);
/* the model asked for (NULL or "": any) is the one served (else 404 model_not_found); */
bool tsr__fe_check_model(const char *given, const char *served, const char *const *aliases, int n_aliases,
                         tsr__fe_error *err);
/* and, once p is filled, the sampling parameters together (p->logprobs included). */
bool tsr__fe_check_sampling(tsr__fe_params *p, tsr__fe_error *err);
/* The answer to a request the engine refused at submit: 400 naming the parameter at fault
 * (context_length_exceeded when it cannot fit), or 503 when the engine cannot take it now;
 * chat: the prompt came as messages. */
void tsr__fe_engine_error(const tsr_engine_error *e, bool chat, tsr__fe_error *err);
/* Fills an engine request that points into p (valid while p lives); choice picks the seed. */
void tsr__fe_to_engine(const tsr__fe_params *p, int choice, tsr_engine_request *r);

bool tsr__fe_utf8_valid(const char *s, size_t n);
/* Copies s replacing invalid UTF-8 with U+FFFD (malloc'd, NUL-terminated). */
char *tsr__fe_utf8_sanitize(const char *s, size_t n);
/* "chatcmpl-<24 hex>" style ids. */
void tsr__fe_make_id(const char *prefix, char *out, size_t cap);
/* Constant-time comparison of a presented key with one configured key. */
bool tsr__fe_key_equal(const char *given, size_t given_len, const char *key);

/* ---- structured output and tool calls (tools.c; http_tools.c streams them) ---- */
enum { TSR__FE_TOOLS_NONE = 0, TSR__FE_TOOLS_AUTO, TSR__FE_TOOLS_FORCED };
/* gRPC's SamplingParams.json_object / json_schema (schema "" or NULL: not given). */
bool tsr__fe_schema_text(tsr__fe_params *p, bool json_object, const char *schema, tsr__fe_error *err);
/* The chat fields tools.c reads (so the unsupported-field check lets them through on chat). */
bool tsr__fe_structured_field(const char *name);
/* A history message of role "tool" or an assistant's with tool_calls, rendered into *out:
 * 1 done, 0 not such a message, -1 refused (err). */
int tsr__fe_tool_message(tsr__fe_params *p, cJSON *x, tsr_engine_message *out, tsr__fe_error *err);
/* response_format, tools, tool_choice, parallel_tool_calls of a chat request (messages parsed). */
bool tsr__fe_structured(tsr__fe_params *p, cJSON *o, tsr__fe_error *err);
/* The reply's tool calls (OpenAI's shape; with "index" when stream), or NULL: plain content. */
cJSON *tsr__fe_tool_calls(const tsr__fe_params *p, const char *text, bool stream);
/* tool_choice auto, streaming: the text so far may still be the start of a <tool_call>. */
bool tsr__fe_tool_may_start(const char *text);
/* A chat.completion message's content or tool_calls into m; returns the finish reason to give. */
const char *tsr__fe_reply(const tsr__fe_params *p, cJSON *m, const char *text, const char *finish);

/* ---- response shapes (shapes.c) ---- */
typedef struct tsr__fe_chunk_info {
    const char *id, *model;
    long long created;
    bool chat;                       /* chat.completion.chunk, else text_completion */
    bool include_usage;
} tsr__fe_chunk_info;
/* One streamed chunk for choice index: role adds the delta's role (chat's first chunk); text
 * NULL leaves out chat's content (completions then send ""); logprobs is taken (NULL: null);
 * finish NULL: null. */
cJSON *tsr__fe_stream_chunk(const tsr__fe_chunk_info *ci, int index, bool role, const char *text, cJSON *logprobs,
                            const char *finish);
/* The closing chunk of a stream with include_usage: "choices": [] and usage (taken). */
cJSON *tsr__fe_usage_chunk(const tsr__fe_chunk_info *ci, cJSON *usage);
cJSON *tsr__fe_usage(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens);
/* Completions' legacy logprobs {tokens, token_logprobs, top_logprobs, text_offset} from chat-shaped
 * entries [{token, logprob, bytes, top_logprobs}]. */
cJSON *tsr__fe_legacy_logprobs(const cJSON *entries);
/* The same with each token's text_offset given (offsets[i], in characters of the answer's text);
 * an entry whose logprob is null (echo's first prompt token) gets null logprob and top_logprobs. */
cJSON *tsr__fe_legacy_logprobs_at(const cJSON *entries, const double *offsets);
/* "data: <json>\n\n" (malloc'd, NUL-terminated; *len without the NUL). */
char *tsr__fe_sse(const cJSON *j, size_t *len);

/* ---- metrics (metrics.c): owned by the loop thread ---- */
#define TSR__FE_HIST_BUCKETS 14
typedef struct tsr__fe_hist {
    const double *bounds;            /* TSR__FE_HIST_BUCKETS upper bounds (+Inf implied) */
    int64_t counts[TSR__FE_HIST_BUCKETS + 1];
    double sum;
    int64_t n;
} tsr__fe_hist;

typedef struct tsr__fe_metrics {
    int64_t requests[4][6];          /* [kind: chat, completion, interactive, grpc][finish] */
    int64_t http_errors;             /* 4xx/5xx answers */
    int64_t slow_client_drops;       /* streams dropped past --max-unsent-bytes */
    int64_t connections_refused;     /* connections past --max-connections */
    int64_t queue_refused;           /* requests past --max-queue (429) */
    int64_t origin_refused;          /* requests from an Origin not allowed (403) */
    int64_t held_refused;            /* connections closed past --max-held-bytes */
    int64_t held_bytes;              /* gauge: request bytes held now (set before rendering) */
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    tsr__fe_hist ttft, tpot, e2e;
} tsr__fe_metrics;

void tsr__fe_metrics_init(tsr__fe_metrics *m);
void tsr__fe_hist_add(tsr__fe_hist *h, double v);
/* Prometheus text exposition format 0.0.4 (malloc'd). */
char *tsr__fe_metrics_render(const tsr__fe_metrics *m, const tsr_engine_stats *s, int64_t connections,
                             bool draining);

#endif
