/* A small declarative option parser for the subcommands, so every `tessera SUB --help` lists
 * every option from the same table the parser uses. */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include <stdbool.h>
#include <stdint.h>

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

/* A blocking TCP connection to host:port (TCP_NODELAY set), or -1. For the client tools. */
int tsr_cli_tcp_connect(const char *host, const char *port);

#endif
