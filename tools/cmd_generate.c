/* `tessera generate`: one completion on the default (or a named) model, streamed to stdout as
 * it is produced, with the timing on stderr.  Also home of the generation options that
 * `tessera chat` shares (tools/gen_opts.h), so both list and check them alike. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/generator.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen_opts.h"
#include "worker/group.h"

void tsr__gen_cli_defaults(tsr__gen_cli *o, int64_t max_new) {
    memset(o, 0, sizeof *o);
    o->max_new = max_new;
    o->temperature = 0.7;
    o->top_p = 0.9;
    o->top_k = 0;
    o->min_p = 0.0;
    o->repetition_penalty = 1.0;
    o->seed = -1;
    o->logprobs = -1;
}

/* Parses "1,2,3" (spaces allowed) into a malloc'd array. */
static int tsr__parse_ids(const char *what, const char *s, int32_t **out, int64_t *n_out) {
    int64_t cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return -1;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "tessera: %s: '%s' is not a list of token ids (like 1,2,3)\n", what, s);
            free(ids);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *b = realloc(ids, (size_t)cap * sizeof *ids);
            if (!b) { free(ids); return -1; }
            ids = b;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

int tsr__gen_cli_to_request(const char *cmd, tsr__gen_cli *o, tsr_gen_request *req) {
    tsr_gen_request_default(req);
    if (o->max_new <= 0) {
        fprintf(stderr, "tessera %s: --max-new-tokens must be a positive count (got %lld)\n", cmd,
                (long long)o->max_new);
        return -1;
    }
    if (o->session_len < 0) {
        fprintf(stderr, "tessera %s: --session-len must be positive (got %lld)\n", cmd, (long long)o->session_len);
        return -1;
    }
    if (o->threads < 0 || o->threads > 1024) {
        fprintf(stderr, "tessera %s: --threads must be between 0 (auto) and 1024 (got %lld)\n", cmd,
                (long long)o->threads);
        return -1;
    }
    if (o->top_k > INT32_MAX || o->top_k < -1) {
        fprintf(stderr, "tessera %s: --top-k must be 0 (off) or a positive count (got %lld)\n", cmd,
                (long long)o->top_k);
        return -1;
    }
    if (o->logprobs < -1 || o->logprobs > TSR_SAMPLING_MAX_LOGPROBS) {
        fprintf(stderr, "tessera %s: --logprobs must be between 0 and %d (got %lld)\n", cmd,
                TSR_SAMPLING_MAX_LOGPROBS, (long long)o->logprobs);
        return -1;
    }
    req->max_new_tokens = o->max_new;
    tsr_sampling_params *sp = &req->sampling;
    sp->temperature = (float)o->temperature;
    sp->top_p = (float)o->top_p;
    sp->top_k = (int32_t)o->top_k;
    sp->min_p = (float)o->min_p;
    sp->repetition_penalty = (float)o->repetition_penalty;
    sp->presence_penalty = (float)o->presence_penalty;
    sp->frequency_penalty = (float)o->frequency_penalty;
    sp->logprobs = (int32_t)o->logprobs;
    sp->seed = o->seed >= 0 ? (uint64_t)o->seed : tsr_sampling_random_seed();
    if (tsr_sampling_params_validate(sp) != TSR_OK) {
        /* The message names the API parameter; say the option users typed. */
        const char *m = tsr_last_error();
        const char *opt = !strncmp(m, "top_p", 5) ? "--top-p" : !strncmp(m, "top_k", 5) ? "--top-k"
                        : !strncmp(m, "min_p", 5) ? "--min-p" : !strncmp(m, "temperature", 11) ? "--temperature"
                        : !strncmp(m, "repetition", 10) ? "--repetition-penalty"
                        : !strncmp(m, "presence", 8) ? "--presence-penalty"
                        : !strncmp(m, "frequency", 9) ? "--frequency-penalty" : "option";
        fprintf(stderr, "tessera %s: %s: %s\n", cmd, opt, m);
        return -1;
    }
    req->stop = o->stop.items;
    req->n_stop = o->stop.n;
    for (int i = 0; i < o->stop.n; i++)
        if (!o->stop.items[i][0]) {
            fprintf(stderr, "tessera %s: --stop needs a non-empty string\n", cmd);
            return -1;
        }
    if (o->stop_id.n > 0) {
        o->stop_ids_buf = malloc((size_t)o->stop_id.n * sizeof(int32_t));
        if (!o->stop_ids_buf) return -1;
        for (int i = 0; i < o->stop_id.n; i++) {
            int32_t *one = NULL;
            int64_t n1 = 0;
            if (tsr__parse_ids("--stop-id", o->stop_id.items[i], &one, &n1) != 0) return -1;
            if (n1 != 1) {
                fprintf(stderr, "tessera %s: --stop-id takes one token id (got '%s')\n", cmd, o->stop_id.items[i]);
                free(one);
                return -1;
            }
            o->stop_ids_buf[i] = one[0];
            free(one);
        }
        req->stop_ids = o->stop_ids_buf;
        req->n_stop_ids = o->stop_id.n;
    }
    req->ignore_eos = o->ignore_eos;
    return 0;
}

void tsr__gen_cli_free(tsr__gen_cli *o) {
    free((void *)o->stop.items);
    free((void *)o->stop_id.items);
    free(o->stop_ids_buf);
    memset(o, 0, sizeof *o);
}

tsr_status tsr__gen_cli_open(const char *cmd, const tsr__gen_cli *o, const char *model, tsr_generator **g) {
    const char *path = tsr_cli_model_or_default(model);
    if (!path) return TSR_ERR_NOT_FOUND;
    tsr_gen_config gc = {0};
    gc.model_path = path;
    gc.chat_template = o->chat_template;
    gc.session_len = o->session_len;
    gc.n_threads = (int)o->threads;
    gc.backend = o->backend;
    gc.load_format = o->load_format;
    gc.tp = o->tp;
    gc.progress = true;
    tsr_status rc = tsr_generator_open(&gc, g);
    if (rc != TSR_OK && tsr_group_world_rank() == 0) fprintf(stderr, "tessera %s: %s\n", cmd, tsr_last_error());
    return rc;
}

/* A vocabulary piece as one whitespace-free field: spaces, control bytes and '\\' as \xNN.
 * The line reads "[logprobs] INDEX: ID PIECE LOGPROB | top: ID PIECE LOGPROB ID PIECE ...". */
static void tsr__put_piece(const char *p) {
    if (!p || !*p) {
        fputs("?", stderr);
        return;
    }
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '\\') fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
}

void tsr__gen_print_logprobs(const tsr_generator *g, const tsr_gen_token *t) {
    if (!t->sample || t->id < 0) return;
    const tsr_tokenizer *tok = tsr_generator_tokenizer(g);
    const char *piece = tok ? tsr_tokenizer_id_to_piece(tok, t->id) : NULL;
    fprintf(stderr, "[logprobs] %lld: %d ", (long long)t->index, t->id);
    tsr__put_piece(piece);
    fprintf(stderr, " %.4f", (double)t->sample->logprob);
    for (int i = 0; i < t->sample->n_top; i++) {
        const char *pp = tok ? tsr_tokenizer_id_to_piece(tok, t->sample->top[i].id) : NULL;
        fprintf(stderr, "%s%d ", i ? " " : " | top: ", t->sample->top[i].id);
        tsr__put_piece(pp);
        fprintf(stderr, " %.4f", (double)t->sample->top[i].logprob);
    }
    fputc('\n', stderr);
}

typedef struct {
    const tsr_generator *g;
    bool print_text;
    bool logprobs;
} tsr__gen_sink;

static bool tsr__generate_on_token(void *user, const tsr_gen_token *t) {
    tsr__gen_sink *k = user;
    if (k->print_text && t->text_len) {
        fwrite(t->text, 1, t->text_len, stdout);
        fflush(stdout);
    }
    if (k->logprobs) tsr__gen_print_logprobs(k->g, t);
    return true;
}

static double tsr__rate(int64_t n, double s) { return s > 0 ? (double)n / s : 0.0; }

int tsr_cmd_generate(int argc, char **argv) {
    tsr__gen_cli o;
    tsr__gen_cli_defaults(&o, 128);
    const char *prompt = NULL, *prompt_ids = NULL, *system = NULL;
    bool chat = false, print_ids = false;
    tsr_opt opts[] = {
        {"--prompt", TSR_OPT_STR, &prompt, "TEXT", "the prompt text"},
        {"--prompt-ids", TSR_OPT_STR, &prompt_ids, "IDS", "the prompt as token ids, e.g. 1,2,3 (instead of --prompt)"},
        {"--chat", TSR_OPT_FLAG, &chat, NULL, "wrap the prompt in the model's chat template"},
        {"--system", TSR_OPT_STR, &system, "TEXT", "system message (with --chat; default: the template's)"},
        {"--print-ids", TSR_OPT_FLAG, &print_ids, NULL,
         "print the generated token ids (space-separated, one line) on stdout instead of the text"},
        TSR__GEN_OPTS(o),
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera generate [MODEL] --prompt TEXT [options]",
                           "Generates a completion, streamed to stdout; timing on stderr. MODEL: a .gguf "
                           "file or an HF directory (default: the default model).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) {
        tsr__gen_cli_free(&o);
        return rc == TSR_CLI_HELP ? 0 : 1;
    }
    int exit_code = 1;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    tsr_generator *g = NULL;
    tsr_session *s = NULL;
    tsr_gen_stats st = {0};
    tsr_gen_request req;
    if (tsr__gen_cli_to_request("generate", &o, &req) != 0) goto done;
    if (!prompt == !prompt_ids) {
        fprintf(stderr, "tessera generate: give exactly one of --prompt TEXT or --prompt-ids IDS\n");
        goto done;
    }
    if (prompt_ids && chat) {
        fprintf(stderr, "tessera generate: --chat needs --prompt TEXT, not --prompt-ids\n");
        goto done;
    }
    if (system && !chat) {
        fprintf(stderr, "tessera generate: --system needs --chat\n");
        goto done;
    }
    if (prompt_ids) {
        if (tsr__parse_ids("--prompt-ids", prompt_ids, &ids, &n_ids) != 0) goto done;
        if (n_ids == 0) {
            fprintf(stderr, "tessera generate: --prompt-ids is empty\n");
            goto done;
        }
    }
    if (tsr__gen_cli_open("generate", &o, n_pos ? pos[0] : NULL, &g) != TSR_OK) goto done;
    if (!g) { /* a TP worker: it replayed rank 0's steps and is done */
        exit_code = 0;
        goto done;
    }
    if (ids)
        for (int64_t i = 0; i < n_ids; i++)
            if (ids[i] >= tsr_generator_vocab_size(g)) {
                fprintf(stderr, "tessera generate: --prompt-ids: id %d is outside the vocabulary (%lld)\n",
                        ids[i], (long long)tsr_generator_vocab_size(g));
                goto done;
            }
    if (tsr_session_new(g, &s) != TSR_OK) {
        fprintf(stderr, "tessera generate: %s\n", tsr_last_error());
        goto done;
    }
    if (o.seed < 0 && req.sampling.temperature > 0)
        fprintf(stderr, "[seed %llu]\n", (unsigned long long)req.sampling.seed);
    tsr__gen_sink sink = {g, !print_ids, o.logprobs >= 0};
    req.on_token = tsr__generate_on_token;
    req.user = &sink;
    tsr_status st_rc;
    if (chat) st_rc = tsr_session_chat(s, system, prompt, &req, &st);
    else if (ids) st_rc = tsr_session_generate(s, ids, n_ids, &req, &st);
    else st_rc = tsr_session_generate_text(s, prompt, &req, &st);
    if (st_rc != TSR_OK) {
        fflush(stdout);
        fprintf(stderr, "\ntessera generate: %s\n", tsr_last_error());
        goto done;
    }
    if (print_ids) {
        for (int64_t i = 0; i < st.n_generated; i++) printf(i ? " %d" : "%d", st.ids[i]);
        printf("\n");
    } else {
        printf("\n");
    }
    fflush(stdout);
    fprintf(stderr, "[prompt %lld tokens | prefill %.1f tok/s | decode %.1f tok/s | %lld tokens generated, finish: %s]\n",
            (long long)st.n_prefill, tsr__rate(st.n_prefill, st.prefill_s),
            tsr__rate(st.n_generated > 1 ? st.n_generated - 1 : 0, st.decode_s), (long long)st.n_generated,
            tsr_finish_reason_str(st.finish));
    exit_code = 0;
done:
    tsr_gen_stats_free(&st);
    tsr_session_free(s);
    tsr_generator_close(g);
    free(ids);
    tsr__gen_cli_free(&o);
    return exit_code;
}
