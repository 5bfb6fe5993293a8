/* `tessera serve [MODEL]`: the API server (like `lmdeploy serve api_server`).  Every rank opens
 * the engine (under mpirun, ranks > 0 become workers inside tsr_engine_open and return when rank
 * 0 closes it); rank 0 runs the front end (coordinator/frontend) until SIGTERM, drains, and
 * closes the engine, which releases the workers. */
#include <math.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/engine.h"
#include "coordinator/frontend/server.h"
#include "tools/cli.h"
#include "tools/commands.h"

/* The rank group broke (engine.h on_fatal): every request has ended with the error and /health
 * answers 503; stop serving as on SIGTERM, so the process exits non-zero and mpirun ends the
 * rest of the group. */
static void tsr__serve_on_fatal(void *user, const char *message) {
    (void)user;
    fprintf(stderr, "tessera serve: %s; shutting down\n", message);
    kill(getpid(), SIGTERM);
}

/* The served id when --model-name is not given, as vLLM: the path the user gave, as its last
 * component (a file's name without its extension, or the directory's name). */
static const char *tsr__serve_default_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), path + b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out && (!strcmp(dot, ".gguf") || !strcmp(dot, ".GGUF") || !strcmp(dot, ".safetensors"))) *dot = 0;
    return out[0] ? out : NULL;
}

int tsr_cmd_serve(int argc, char **argv) {
    const char *host = "127.0.0.1", *backend = NULL, *load_format = NULL, *chat_template = NULL;
    int64_t port = 23333, grpc_port = 23334, tp = 0, max_batch = INT64_MIN, session_len = 0, max_body = 8 << 20;
    int64_t max_prefill = 0, threads = 0, block_len = 0, quant_policy_arg = INT64_MIN, quant_policy = -1;
    const char *cache_arg = NULL;   /* a string, so that "not given" differs from every value */
    double cache = 0, read_timeout = 30, idle_timeout = 60, session_ttl = 0;
    int64_t max_connections = 1024, max_unsent = 4 << 20, max_held = (int64_t)256 << 20, max_queue = 1024;
    int64_t grpc_conn_buffer = 16 << 20;
    bool no_prefix_cache = false;
    tsr_str_list keys = {0}, origins = {0}, hosts = {0}, names = {0};
    const tsr_opt opts[] = {
        {"--server-name", TSR_OPT_STR, &host, "ADDR", "address to bind (default 127.0.0.1; 0.0.0.0 for all)"},
        {"--server-port", TSR_OPT_INT, &port, "N", "HTTP port: OpenAI API, web page, /metrics (default 23333)"},
        {"--grpc-port", TSR_OPT_INT, &grpc_port, "N", "gRPC port (default 23334; 0: off)"},
        {"--tp", TSR_OPT_INT, &tp, "N", "tensor-parallel ranks expected (run under mpirun -np N)"},
        {"--backend", TSR_OPT_STR, &backend, "B", "auto | cpu | cuda (default auto)"},
        {"--load-format", TSR_OPT_STR, &load_format, "F", TSR_LOAD_FORMAT_HELP},
        {"--max-batch-size", TSR_OPT_INT, &max_batch, "N", "sequences per engine step (default: config.ini's, else KV pool tokens / min(session_len, 512), at most 256 on a GPU, 64 on CPU)"},
        {"--max-prefill-token-num", TSR_OPT_INT, &max_prefill, "N", "prefill tokens per step (default: config.ini's max_context_token_num, else 2048)"},
        {"--cache-max-entry-count", TSR_OPT_STR, &cache_arg, "F", "KV pool: < 1 fraction of free memory, >= 1 blocks"},
        {"--cache-block-seq-len", TSR_OPT_INT, &block_len, "N", "tokens per KV block (default 64)"},
        {"--quant-policy", TSR_OPT_INT, &quant_policy_arg, "N", TSR_QUANT_POLICY_HELP},
        {"--no-prefix-cache", TSR_OPT_FLAG, &no_prefix_cache, NULL, "do not reuse KV blocks across requests"},
        {"--session-len", TSR_OPT_INT, &session_len, "N", "max tokens of one sequence (default: the model's)"},
        {"--session-ttl", TSR_OPT_FLOAT, &session_ttl, "S", "idle interactive sessions end after S seconds"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU backend threads per rank (default: all cores)"},
        {"--chat-template", TSR_OPT_STR, &chat_template, "T", "template name or LMDeploy JSON file"},
        {"--model-name", TSR_OPT_STR_LIST, &names, "NAME", "model id in the API (default: the model path's file name "
                                                          "without extension, or its directory's name); again: aliases"},
        {"--api-key", TSR_OPT_STR_LIST, &keys, "KEY", "require 'Authorization: Bearer KEY' (repeatable)"},
        {"--max-body-bytes", TSR_OPT_INT, &max_body, "N", "largest request body (default 8 MiB)"},
        {"--read-timeout", TSR_OPT_FLOAT, &read_timeout, "S", "a started request must arrive within S s (default 30)"},
        {"--idle-timeout", TSR_OPT_FLOAT, &idle_timeout, "S", "idle keep-alive connections close after S s (default 60)"},
        {"--max-connections", TSR_OPT_INT, &max_connections, "N", "open HTTP + gRPC connections; more get 503 (default 1024)"},
        {"--max-queue", TSR_OPT_INT, &max_queue, "N", "requests waiting beyond --max-batch-size; more get 429 (default 1024)"},
        {"--max-unsent-bytes", TSR_OPT_INT, &max_unsent, "N", "a stream this far ahead of its reader is dropped (default 4 MiB)"},
        {"--max-held-bytes", TSR_OPT_INT, &max_held, "N", "request bytes held over all connections (default 256 MiB)"},
        {"--grpc-max-conn-buffer", TSR_OPT_INT, &grpc_conn_buffer, "N", "gRPC request bytes held per connection (default 16 MiB)"},
        {"--allowed-origins", TSR_OPT_STR_LIST, &origins, "O", "browser origins allowed besides the server's own (repeatable, "
                                                              "comma list, * for any)"},
        {"--allowed-hosts", TSR_OPT_STR_LIST, &hosts, "H", "Host names accepted besides the bound address and localhost "
                                                          "(repeatable, comma list, * for any)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera serve [MODEL] [options]",
                           "Serves a model: the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models),\n"
                           "vLLM's /tokenize, /detokenize and /version, TurboMind's /v1/chat/interactive, /health, /metrics and a web chat page over HTTP, and\n"
                           "proto/tessera.proto over gRPC.  Under `mpirun -np N` rank 0 serves, the others are\n"
                           "tensor-parallel workers.  SIGTERM stops admitting, finishes what runs, and exits.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (port < 1 || port > 65535 || grpc_port < 0 || grpc_port > 65535 || max_body < 1 || (max_batch != INT64_MIN && max_batch < 1) ||
        max_connections < 1 || max_queue < 0 || max_unsent < 1 || max_held < 1 ||
        grpc_conn_buffer < 1) {
        tsr_cli_err("tessera serve: ports in 1..65535 (--grpc-port 0: off), --max-body-bytes, --max-batch-size, "
                        "--max-connections, --max-unsent-bytes and --max-held-bytes >= 1, --max-queue >= 0\n");
        free(keys.items);
        free(origins.items);
        free(hosts.items);
        free(names.items);
        return 1;
    }
    /* every numeric flag in its range or an error naming it, never a silent default */
    const char *bad = NULL;
    if (cache_arg) {
        char *end = NULL;
        cache = strtod(cache_arg, &end);
        if (end == cache_arg || *end || !isfinite(cache) || cache <= 0) bad = "--cache-max-entry-count must be a number > 0";
    }
    if (tp < 0) bad = "--tp must be >= 1";
    if (max_prefill < 0) bad = "--max-prefill-token-num must be >= 1";
    if (block_len < 0) bad = "--cache-block-seq-len must be >= 1";
    if (session_len < 0) bad = "--session-len must be >= 1";
    if (threads < 0) bad = "--threads must be >= 1";
    if (quant_policy_arg != INT64_MIN && quant_policy_arg != 0 && quant_policy_arg != 8 && quant_policy_arg != 4)
        bad = "--quant-policy must be 0 (KV of the compute type), 8 (int8 KV) or 4 (int4 KV)";
    else if (quant_policy_arg != INT64_MIN) quant_policy = quant_policy_arg;
    if (!isfinite(session_ttl) || session_ttl < 0) bad = "--session-ttl must be a number >= 0";
    if (!isfinite(read_timeout) || read_timeout < 0) bad = "--read-timeout must be a number >= 0 (0: off)";
    if (!isfinite(idle_timeout) || idle_timeout < 0) bad = "--idle-timeout must be a number >= 0 (0: off)";
    if (bad) {
        tsr_cli_err("tessera serve: %s\n", bad);
        free(keys.items);
        free(origins.items);
        free(hosts.items);
        free(names.items);
        return 1;
    }
    /* comma lists are split in place (argv strings are writable) */
    tsr_str_list *lists[2] = {&origins, &hosts};
    for (int l = 0; l < 2; l++) {
        tsr_str_list out = {0};
        for (int i = 0; i < lists[l]->n; i++)
            for (char *save = NULL, *t = strtok_r((char *)lists[l]->items[i], ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                while (*t == ' ') t++;
                if (!*t) continue;
                const char **x = realloc(out.items, sizeof *x * (size_t)(out.n + 1));
                if (!x) break;
                out.items = x;
                out.items[out.n++] = t;
            }
        free(lists[l]->items);
        *lists[l] = out;
    }
    for (int i = 0; i < names.n; i++)
        if (!names.items[i][0]) {
            tsr_cli_err("tessera serve: --model-name must not be empty\n");
            free(keys.items);
            free(origins.items);
            free(hosts.items);
            free(names.items);
            return 1;
        }
    for (int i = 0; i < keys.n; i++)
        if (!keys.items[i][0]) {
            tsr_cli_err("tessera serve: --api-key must not be empty\n");
            free(keys.items);
            free(origins.items);
            free(hosts.items);
            free(names.items);
            return 1;
        }
    const char *model = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model) {
        free(keys.items);
        free(origins.items);
        free(hosts.items);
        free(names.items);
        return 1;
    }
    tsr_engine_config ec;
    tsr_engine_config_default(&ec);
    ec.model_path = model;
    ec.backend = backend;
    ec.load_format = load_format;
    ec.chat_template = chat_template;
    ec.tp = tp;
    ec.max_batch_size = max_batch == INT64_MIN ? 0 : max_batch;   /* not given: config.ini's, else from the KV pool */
    if (max_prefill > 0) ec.max_prefill_token_num = max_prefill;
    ec.session_len = session_len;
    ec.cache_max_entry_count = cache;
    if (block_len > 0) ec.cache_block_seq_len = block_len;
    ec.quant_policy = quant_policy;
    ec.enable_prefix_cache = !no_prefix_cache;
    ec.session_ttl_s = session_ttl;
    ec.threads = threads;
    ec.progress = true;
    ec.on_fatal = tsr__serve_on_fatal;
    tsr_engine *e = NULL;
    if (tsr_engine_open(&ec, &argc, &argv, &e) != TSR_OK) {
        tsr_cli_err("tessera serve: %s\n", tsr_last_error());
        free(keys.items);
        free(origins.items);
        free(hosts.items);
        free(names.items);
        return 1;
    }
    if (!e) {   /* a worker rank: rank 0 has closed the engine */
        free(keys.items);
        free(origins.items);
        free(hosts.items);
        free(names.items);
        return 0;
    }
    tsr_server_config sc;
    tsr_server_config_default(&sc);
    sc.host = host;
    sc.port = (int)port;
    sc.grpc_port = grpc_port > 0 ? (int)grpc_port : -1;
    sc.api_keys = keys.items;
    sc.n_api_keys = keys.n;
    sc.max_body_bytes = max_body;
    sc.read_timeout_s = read_timeout;
    sc.idle_timeout_s = idle_timeout;
    char default_name[256];
    sc.model_name = names.n ? names.items[0] : tsr__serve_default_name(model, default_name, sizeof default_name);
    sc.model_aliases = names.n > 1 ? names.items + 1 : NULL;
    sc.n_model_aliases = names.n > 1 ? names.n - 1 : 0;
    sc.version = TSR_VERSION;
    sc.max_connections = max_connections;
    sc.max_queue = max_queue;
    sc.max_running = tsr_engine_max_batch_size(e);
    sc.max_unsent_bytes = max_unsent;
    sc.max_held_bytes = max_held;
    sc.grpc_max_conn_buffer = grpc_conn_buffer;
    sc.allowed_origins = origins.items;
    sc.n_allowed_origins = origins.n;
    sc.allowed_hosts = hosts.items;
    sc.n_allowed_hosts = hosts.n;
    tsr_status st = tsr_server_run(e, &sc);
    if (st != TSR_OK) tsr_cli_err("tessera serve: %s\n", tsr_last_error());
    const bool broken = tsr_engine_health(e, NULL, 0) != TSR_OK;
    tsr_engine_close(e);
    free(keys.items);
    free(origins.items);
    free(hosts.items);
    free(names.items);
    return st == TSR_OK && !broken ? 0 : 1;
}
