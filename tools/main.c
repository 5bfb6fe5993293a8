/* `tessera`: one binary, subcommands.  Started plainly it is an MPI singleton (a group of
 * one); under mpirun every rank runs the same subcommand and rank 0 coordinates. */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} tsr_command;

static const tsr_command tsr__commands[] = {
    {"env", tsr_cmd_env, "print versions of Tessera and its libraries, devices seen, CPU/NUMA/GPU topology"},
    {"tokenize", tsr_cmd_tokenize, "encode text to token ids with the model's tokenizer (--decode: ids to text)"},
    {"bench", tsr_cmd_bench, "benchmarks: tokenizer (encode MB/s), ... (tessera bench --help)"},
    {"inspect", tsr_cmd_inspect, "print a model file's kind, config and tensors; dump a tensor as f32"},
    {"logits", tsr_cmd_logits, "run the model on token ids; print top logits per position or write raw f32"},
    {"generate", tsr_cmd_generate, "generate a completion for a prompt, streamed to stdout (timing on stderr)"},
    {"chat", tsr_cmd_chat, "chat interactively with a model; each turn reuses the KV of the earlier ones"},
    {"serve", tsr_cmd_serve, "serve a model: OpenAI API + SSE, gRPC, web chat page, /metrics (mpirun -np N: TP)"},
    {"client", tsr_cmd_client, "chat with a running server (http://host:port or grpc://host:port)"},
    {"eval", tsr_cmd_eval, "evaluate a model: ppl (perplexity over a text file, llama.cpp's definition)"},
    {"lite", tsr_cmd_lite, "offline quantization: auto_awq (4-bit AWQ into an AutoAWQ GEMM checkpoint)"},
    {"convert", tsr_cmd_convert, "HF directory or GGUF -> a workspace split for N ranks"},
    {NULL, NULL, NULL},
};

static void tsr__usage(FILE *f) {
    fprintf(f, "usage: tessera <command> [options]   (tessera <command> --help for its options)\n\n"
               "Tessera serves large language models from one GPU to many nodes.\n\ncommands:\n");
    for (const tsr_command *c = tsr__commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        if (tsr_cli_is_root()) tsr__usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        tsr__usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tessera %s\n", TSR_VERSION);
        return 0;
    }
    for (const tsr_command *c = tsr__commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) {
            int rc = c->fn(argc - 1, argv + 1);
            if (rc != 0) tsr_cli_err_held_flush();   /* errors: once per group, from rank 0 */
            return rc;
        }
    if (!tsr_cli_is_root()) return 1;   /* rank 0 says it, once for the group */
    fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
    tsr__usage(stderr);
    return 1;
}
