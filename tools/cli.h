/* A small declarative option parser for the subcommands, so every `tessera SUB --help` lists
 * every option from the same table the parser uses. */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* --load-format's help, one text for every command that loads a model. */
#define TSR_LOAD_FORMAT_HELP                                                                          \
    "auto (the files; a GGUF's quantized weights run as stored), dequantized (every weight as a copy " \
    "of the backend's compute type) or dummy (random weights of the model's shapes)"

/* --quant-policy's help, and its check: a value given (not INT64_MIN, the "not given" default)
 * must be 0, 8 or 4; *policy is then it, or -1 (config.ini's, else 0).  Returns 0, or 1 after
 * printing "tessera CMD: --quant-policy ...". */
#define TSR_QUANT_POLICY_HELP                                                                          \
    "KV cache: 0 (the compute type), 8 (int8) or 4 (int4), per-token per-head scales, or a "           \
    "workspace's kv_qparams (default: a workspace's config.ini quant_policy, else 0)"
int tsr_cli_quant_policy(const char *cmd, int64_t given, int64_t *policy);

typedef enum { TSR_OPT_FLAG, TSR_OPT_STR, TSR_OPT_INT, TSR_OPT_FLOAT, TSR_OPT_STR_LIST } tsr_opt_kind;

typedef struct tsr_str_list {
    const char **items;
    int n;
} tsr_str_list;

typedef struct tsr_opt {
    const char *name;      /* "--max-new-tokens" */
    tsr_opt_kind kind;
    void *dst;             /* bool* | const char** | int64_t* | double* | tsr_str_list* */
    const char *metavar;   /* "N" (ignored for flags) */
    const char *help;
} tsr_opt;

enum { TSR_CLI_OK = 0, TSR_CLI_ERROR = 1, TSR_CLI_HELP = 2 };

/* Parses argv[1..] (argv[0] is the subcommand name).  Positional arguments are collected in
 * pos (up to max_pos).  "--name=value" and "--name value" both work.  Returns TSR_CLI_HELP
 * after printing help for -h/--help, TSR_CLI_ERROR after printing a message. */
int tsr_cli_parse(const char *usage, const char *description, const tsr_opt *opts, int argc,
                  char **argv, const char **pos, int max_pos, int *n_pos);
void tsr_cli_print_help(const char *usage, const char *description, const tsr_opt *opts);

/* The model argument as users give it, or the default model when none is named. Exits with a
 * message telling the user how to fetch it when the default is missing (returns NULL). */
const char *tsr_cli_model_or_default(const char *given);

/* Whether this process is rank 0 of its launch: under mpirun (or srun) every rank runs the same
 * subcommand and the library reports the same status on every rank, so the tools print a
 * user's error once per group, from rank 0.  Read from the launcher's environment, so it holds
 * before MPI is initialised and after it is finalised; a plain start is rank 0. */
bool tsr_cli_is_root(void);
/* fprintf(stderr, ...) on rank 0 only (see tsr_cli_is_root): the tools' error messages.  The
 * other ranks hold the text back for tsr_cli_err_held_flush. */
void tsr_cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For a non-zero rank whose subcommand failed: wait a moment for rank 0, which normally failed
 * the same way, to print the message and end the job (mpirun then stops this rank); a rank
 * still running after that failed alone, and prints what it held back, naming itself. */
void tsr_cli_err_held_flush(void);

/* A blocking TCP connection to host:port (TCP_NODELAY set), or -1. For the client tools. */
int tsr_cli_tcp_connect(const char *host, const char *port);

#endif
