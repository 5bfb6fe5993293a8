/* The generation options that `tessera generate` and `tessera chat` share (defined once in
 * tools/cmd_generate.c), so both commands list, default and check them the same way. */
#ifndef TSR_GEN_OPTS_H
#define TSR_GEN_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/generator.h"
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
    {"--session-len", TSR_OPT_INT, &(o).session_len, "N", "max tokens of a session (default min(model max, 4096))"}, \
    {"--chat-template", TSR_OPT_STR, &(o).chat_template, "NAME|FILE",                             \
     "chatml, llama2, llama3, internlm2, mistral or an LMDeploy JSON file (default: detect)"},     \
    {"--threads", TSR_OPT_INT, &(o).threads, "N", "CPU threads (default: all cores)"},                \
    {"--backend", TSR_OPT_STR, &(o).backend, "NAME", "auto (the GPU when there is one), cpu or cuda"}, \
    {"--tp", TSR_OPT_INT, &(o).tp, "N", "expected tensor-parallel size: run under mpirun -np N"},    \
    {"--load-format", TSR_OPT_STR, &(o).load_format, "F", "auto (the files) or dummy (random weights of the model's shapes)"}

void tsr__gen_cli_defaults(tsr__gen_cli *o, int64_t max_new);
/* Checks the options and fills a request (printing a message naming the option on error). */
int tsr__gen_cli_to_request(const char *cmd, tsr__gen_cli *o, tsr_gen_request *req);
void tsr__gen_cli_free(tsr__gen_cli *o);
/* Opens the generator for the named or default model; prints the error. */
tsr_status tsr__gen_cli_open(const char *cmd, const tsr__gen_cli *o, const char *model, tsr_generator **g);
/* One "[logprobs] ..." line on stderr for a streamed token. */
void tsr__gen_print_logprobs(const tsr_generator *g, const tsr_gen_token *t);

#endif
