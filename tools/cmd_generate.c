/* `tessera generate`: one completion on the default (or a named) model, run on the engine as a
 * batch of one, streamed to stdout as it is produced, with the timing on stderr.  Also home of
 * what `tessera chat` and `bench generate` share (tools/gen_opts.h): the generation options,
 * so both commands list and check them alike, and running one request to its end. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/engine.h"
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
    o->quant_policy = INT64_MIN;
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
            tsr_cli_err("tessera: %s: '%s' is not a list of token ids (like 1,2,3)\n", what, s);
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

int tsr__gen_cli_to_request(const char *cmd, tsr__gen_cli *o, tsr_engine_request *req) {
    tsr_engine_request_default(req);
    if (o->max_new <= 0) {
        tsr_cli_err("tessera %s: --max-new-tokens must be a positive count (got %lld)\n", cmd,
                (long long)o->max_new);
        return -1;
    }
    if (o->session_len < 0) {
        tsr_cli_err("tessera %s: --session-len must be positive (got %lld)\n", cmd, (long long)o->session_len);
        return -1;
    }
    if (o->threads < 0 || o->threads > 1024) {
        tsr_cli_err("tessera %s: --threads must be between 0 (auto) and 1024 (got %lld)\n", cmd,
                (long long)o->threads);
        return -1;
    }
    if (o->top_k > INT32_MAX || o->top_k < -1) {
        tsr_cli_err("tessera %s: --top-k must be 0 (off) or a positive count (got %lld)\n", cmd,
                (long long)o->top_k);
        return -1;
    }
    if (o->logprobs < -1 || o->logprobs > TSR_SAMPLING_MAX_LOGPROBS) {
        tsr_cli_err("tessera %s: --logprobs must be between 0 and %d (got %lld)\n", cmd,
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
        tsr_cli_err("tessera %s: %s: %s\n", cmd, opt, m);
        return -1;
    }
    req->stop = o->stop.items;
    req->n_stop = o->stop.n;
    for (int i = 0; i < o->stop.n; i++)
        if (!o->stop.items[i][0]) {
            tsr_cli_err("tessera %s: --stop needs a non-empty string\n", cmd);
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
                tsr_cli_err("tessera %s: --stop-id takes one token id (got '%s')\n", cmd, o->stop_id.items[i]);
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
    req->truncate_to_fit = true;   /* generation stops where the session is full (finish: length) */
    return 0;
}

void tsr__gen_cli_free(tsr__gen_cli *o) {
    free((void *)o->stop.items);
    free((void *)o->stop_id.items);
    free(o->stop_ids_buf);
    memset(o, 0, sizeof *o);
}

void tsr__gen_engine_config(tsr_engine_config *c, const char *model_path) {
    tsr_engine_config_default(c);
    c->model_path = model_path;
    c->max_batch_size = 1;
    /* /reset must start from nothing; a chat reuses its own session's KV instead */
    c->enable_prefix_cache = false;
    c->session_len_fallback = 4096;
    c->kv_one_session_fallback = true;
}

tsr_status tsr__gen_cli_open(const char *cmd, const tsr__gen_cli *o, const char *model, int *argc, char ***argv,
                             tsr_engine **e) {
    *e = NULL;
    int64_t qp;
    if (tsr_cli_quant_policy(cmd, o->quant_policy, &qp)) return TSR_ERR_INVALID_ARG;
    const char *path = tsr_cli_model_or_default(model);
    if (!path) return TSR_ERR_NOT_FOUND;
    tsr_engine_config ec;
    tsr__gen_engine_config(&ec, path);
    ec.quant_policy = qp;
    ec.chat_template = o->chat_template;
    ec.session_len = o->session_len;
    ec.threads = o->threads;
    if (o->backend) ec.backend = o->backend;
    ec.load_format = o->load_format;
    ec.tp = o->tp;
    tsr_status rc = tsr_engine_open(&ec, argc, argv, e);
    if (rc != TSR_OK && tsr_group_world_rank() == 0) tsr_cli_err("tessera %s: %s\n", cmd, tsr_last_error());
    return rc;
}

tsr_status tsr__gen_run(tsr_engine *e, const tsr_engine_request *rq, tsr__gen_event_fn fn, void *user,
                        tsr__gen_result *res) {
    memset(res, 0, sizeof *res);
    uint64_t id = 0;
    TSR_TRY(tsr_engine_submit(e, rq, NULL, NULL, &id));
    int64_t cap = 0;
    for (;;) {
        tsr_engine_event ev[16];
        int n = tsr_engine_poll(e, ev, 16, -1);
        for (int i = 0; i < n; i++) {
            const tsr_engine_event *v = &ev[i];
            if (v->request_id != id) continue;
            if (v->type == TSR_EVENT_TOKEN) {
                if (res->n_generated == cap) {
                    int64_t nc = cap ? 2 * cap : 256;
                    int32_t *b = realloc(res->ids, (size_t)nc * sizeof *b);
                    if (!b) {   /* the id list only: the request goes on */
                        tsr_engine_cancel(e, id);
                        continue;
                    }
                    res->ids = b;
                    cap = nc;
                }
                res->ids[res->n_generated] = v->token;
                if (fn) fn(user, res->n_generated, v);
                res->n_generated++;
                continue;
            }
            if (fn && v->text_len) fn(user, res->n_generated, v);
            res->n_prompt = v->prompt_tokens;
            res->n_cached = v->cached_tokens;
            res->prefill_s = v->time_to_first_token_s;
            res->decode_s = v->total_s > v->time_to_first_token_s ? v->total_s - v->time_to_first_token_s : 0;
            res->finish = v->finish;
            if (v->finish != TSR_FINISH_ERROR) return TSR_OK;
            return tsr_errorf(v->error != TSR_OK ? v->error : TSR_ERR_INTERNAL, "%s",
                              v->error_message ? v->error_message : "the request failed");
        }
    }
}

void tsr__gen_result_free(tsr__gen_result *res) {
    free(res->ids);
    res->ids = NULL;
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

void tsr__gen_print_logprobs(const tsr_engine *e, int64_t index, const tsr_engine_event *ev) {
    const tsr_sample_result *sr = ev->sample;
    if (ev->type != TSR_EVENT_TOKEN || !sr) return;
    const tsr_tokenizer *tok = tsr_engine_tokenizer(e);
    const char *piece = tok ? tsr_tokenizer_id_to_piece(tok, ev->token) : NULL;
    fprintf(stderr, "[logprobs] %lld: %d ", (long long)index, ev->token);
    tsr__put_piece(piece);
    fprintf(stderr, " %.4f", (double)sr->logprob);
    for (int i = 0; i < sr->n_top; i++) {
        const char *pp = tok ? tsr_tokenizer_id_to_piece(tok, sr->top[i].id) : NULL;
        fprintf(stderr, "%s%d ", i ? " " : " | top: ", sr->top[i].id);
        tsr__put_piece(pp);
        fprintf(stderr, " %.4f", (double)sr->top[i].logprob);
    }
    fputc('\n', stderr);
}

typedef struct {
    const tsr_engine *e;
    bool print_text;
    bool logprobs;
} tsr__gen_sink;

static void tsr__generate_on_event(void *user, int64_t index, const tsr_engine_event *ev) {
    tsr__gen_sink *k = user;
    if (k->print_text && ev->text_len) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
    }
    if (k->logprobs) tsr__gen_print_logprobs(k->e, index, ev);
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
    tsr_engine *e = NULL;
    tsr__gen_result res = {0};
    tsr_engine_request req;
    if (tsr__gen_cli_to_request("generate", &o, &req) != 0) goto done;
    if (!prompt == !prompt_ids) {
        tsr_cli_err("tessera generate: give exactly one of --prompt TEXT or --prompt-ids IDS\n");
        goto done;
    }
    if (prompt_ids && chat) {
        tsr_cli_err("tessera generate: --chat needs --prompt TEXT, not --prompt-ids\n");
        goto done;
    }
    if (system && !chat) {
        tsr_cli_err("tessera generate: --system needs --chat\n");
        goto done;
    }
    if (prompt_ids) {
        if (tsr__parse_ids("--prompt-ids", prompt_ids, &ids, &n_ids) != 0) goto done;
        if (n_ids == 0) {
            tsr_cli_err("tessera generate: --prompt-ids is empty\n");
            goto done;
        }
    }
    if (tsr__gen_cli_open("generate", &o, n_pos ? pos[0] : NULL, &argc, &argv, &e) != TSR_OK) goto done;
    if (!e) { /* a TP worker: it replayed rank 0's steps and is done */
        exit_code = 0;
        goto done;
    }
    if (ids)
        for (int64_t i = 0; i < n_ids; i++)
            if (ids[i] >= tsr_engine_vocab_size(e)) {
                tsr_cli_err("tessera generate: --prompt-ids: id %d is outside the vocabulary (%lld)\n",
                        ids[i], (long long)tsr_engine_vocab_size(e));
                goto done;
            }
    tsr_engine_message msgs[2];
    if (chat) {
        int n = 0;
        if (system) msgs[n++] = (tsr_engine_message){"system", system};
        msgs[n++] = (tsr_engine_message){"user", prompt};
        req.messages = msgs;
        req.n_messages = n;
    } else if (ids) {
        req.prompt_ids = ids;
        req.n_prompt_ids = n_ids;
    } else {
        req.prompt = prompt;
    }
    if (o.seed < 0 && req.sampling.temperature > 0)
        fprintf(stderr, "[seed %llu]\n", (unsigned long long)req.sampling.seed);
    tsr__gen_sink sink = {e, !print_ids, o.logprobs >= 0};
    if (tsr__gen_run(e, &req, tsr__generate_on_event, &sink, &res) != TSR_OK) {
        fflush(stdout);
        tsr_cli_err("\ntessera generate: %s\n", tsr_last_error());
        goto done;
    }
    if (print_ids) {
        for (int64_t i = 0; i < res.n_generated; i++) printf(i ? " %d" : "%d", res.ids[i]);
        printf("\n");
    } else {
        printf("\n");
    }
    fflush(stdout);
    const int64_t n_prefill = res.n_prompt - res.n_cached;
    fprintf(stderr, "[prompt %lld tokens | prefill %.1f tok/s | decode %.1f tok/s | %lld tokens generated, finish: %s]\n",
            (long long)n_prefill, tsr__rate(n_prefill, res.prefill_s),
            tsr__rate(res.n_generated > 1 ? res.n_generated - 1 : 0, res.decode_s), (long long)res.n_generated,
            tsr_finish_reason_str(res.finish));
    exit_code = 0;
done:
    tsr__gen_result_free(&res);
    tsr_engine_close(e);
    free(ids);
    tsr__gen_cli_free(&o);
    return exit_code;
}
