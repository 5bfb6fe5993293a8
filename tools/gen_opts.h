/* The generation options that `tessera generate` and `tessera chat` share (defined once in
 * tools/cmd_generate.c), so both commands list, default and check them the same way, and the
 * way all three single-sequence commands (generate, chat, bench generate) run a request on
 * the engine: a batch of one, waited for on the caller's thread. */
#ifndef TSR_GEN_OPTS_H
#define TSR_GEN_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/engine.h"
#include "tools/cli.h"

typedef struct tsr__gen_cli {
    int64_t max_new;
    double temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
    int64_t top_k, seed, logprobs, session_len, threads;
    tsr_str_list stop, stop_id;
    bool ignore_eos;
    const char *chat_template;
    const char *backend, *load_format;
    int64_t tp;
    int64_t quant_policy;    /* INT64_MIN: not given */
    int32_t *stop_ids_buf;
} tsr__gen_cli;

/* Entries for a tsr_opt table, pointing into a tsr__gen_cli `o`. */
#define TSR__GEN_OPTS(o)                                                                          \
    {"--max-new-tokens", TSR_OPT_INT, &(o).max_new, "N", "most tokens to generate (generate: 128, chat: 512)"},              \
    {"--temperature", TSR_OPT_FLOAT, &(o).temperature, "T", "0: greedy (default 0.7)"},           \
    {"--top-p", TSR_OPT_FLOAT, &(o).top_p, "P", "nucleus sampling mass in (0, 1] (default 0.9)"}, \
    {"--top-k", TSR_OPT_INT, &(o).top_k, "K", "keep the K most likely tokens (0: off)"},          \
    {"--min-p", TSR_OPT_FLOAT, &(o).min_p, "P", "drop tokens below P x the top probability (0: off)"}, \
    {"--repetition-penalty", TSR_OPT_FLOAT, &(o).repetition_penalty, "R",                         \
     "HF repetition penalty over prompt and output (1: off)"},                                    \
    {"--presence-penalty", TSR_OPT_FLOAT, &(o).presence_penalty, "P",                             \
     "OpenAI presence penalty over the output, [-2, 2]"},                                         \
    {"--frequency-penalty", TSR_OPT_FLOAT, &(o).frequency_penalty, "F",                           \
     "OpenAI frequency penalty over the output, [-2, 2]"},                                        \
    {"--seed", TSR_OPT_INT, &(o).seed, "S", "sampling seed (same seed, same output; default random)"}, \
    {"--stop", TSR_OPT_STR_LIST, &(o).stop, "STR", "stop string (repeatable); not part of the output"}, \
    {"--stop-id", TSR_OPT_STR_LIST, &(o).stop_id, "N", "stop token id (repeatable)"},             \
    {"--ignore-eos", TSR_OPT_FLAG, &(o).ignore_eos, NULL, "keep going past the end-of-sequence token"}, \
    {"--logprobs", TSR_OPT_INT, &(o).logprobs, "N",                                               \
     "print each token's logprob and the top N (raw model distribution) on stderr"},              \
    {"--session-len", TSR_OPT_INT, &(o).session_len, "N", "max tokens of a session (default: a workspace's config.ini, else min(model max, 4096))"}, \
    {"--chat-template", TSR_OPT_STR, &(o).chat_template, "NAME|FILE",                             \
     "chatml, llama2, llama3, internlm2, mistral or an LMDeploy JSON file (default: detect)"},     \
    {"--threads", TSR_OPT_INT, &(o).threads, "N", "CPU threads (default: all cores)"},                \
    {"--backend", TSR_OPT_STR, &(o).backend, "NAME", "auto (the GPU when there is one), cpu or cuda"}, \
    {"--tp", TSR_OPT_INT, &(o).tp, "N", "expected tensor-parallel size: run under mpirun -np N"},    \
    {"--load-format", TSR_OPT_STR, &(o).load_format, "F", TSR_LOAD_FORMAT_HELP},                  \
    {"--quant-policy", TSR_OPT_INT, &(o).quant_policy, "N", TSR_QUANT_POLICY_HELP}

void tsr__gen_cli_defaults(tsr__gen_cli *o, int64_t max_new);
/* Checks the options and fills a request (printing a message naming the option on error). */
int tsr__gen_cli_to_request(const char *cmd, tsr__gen_cli *o, tsr_engine_request *req);
void tsr__gen_cli_free(tsr__gen_cli *o);
/* An engine config for one sequence at a time: what neither the command line nor a
 * workspace's config.ini sets is session_len min(model, 4096) and a KV pool of one session. */
void tsr__gen_engine_config(tsr_engine_config *c, const char *model_path);
/* Opens the engine for the named or default model; prints the error (on rank 0).  Under
 * mpirun, ranks > 0 replay rank 0's steps inside the call and get *e == NULL at the end. */
tsr_status tsr__gen_cli_open(const char *cmd, const tsr__gen_cli *o, const char *model, int *argc, char ***argv,
                             tsr_engine **e);

/* What one request did, from its events. */
typedef struct tsr__gen_result {
    int64_t n_prompt, n_cached;       /* the sequence's tokens when it started; of them, with KV already */
    int64_t n_generated;
    double prefill_s, decode_s;       /* submit to first token; the rest */
    tsr_finish_reason finish;
    int32_t *ids;                     /* the generated ids (malloc'd) */
} tsr__gen_result;

/* Called with each TOKEN event (index: 0 for the first generated token) and with the DONE
 * event when it carries the last of the text. */
typedef void (*tsr__gen_event_fn)(void *user, int64_t index, const tsr_engine_event *ev);

/* Submits rq and waits for its end, passing its events to fn.  TSR_OK when it ended for any
 * reason but an error; else the error (refused, or failed partway: tokens may have streamed). */
tsr_status tsr__gen_run(tsr_engine *e, const tsr_engine_request *rq, tsr__gen_event_fn fn, void *user,
                        tsr__gen_result *res);
void tsr__gen_result_free(tsr__gen_result *res);
/* One "[logprobs] ..." line on stderr for a TOKEN event that carries a sample. */
void tsr__gen_print_logprobs(const tsr_engine *e, int64_t index, const tsr_engine_event *ev);

#endif
