/* `tessera chat`: an interactive, stateful conversation like TurboMind's: each line read from
 * stdin is a user turn appended to one engine session (coordinator/engine.h, interactive mode),
 * whose KV is kept, so a turn prefills only its own new tokens (the figure line on stderr after
 * each answer shows it).  `/reset` ends the session and starts a new one, `/exit` or end of
 * input leaves.  Works the same with a pipe as with a terminal; the "> " prompt is drawn only on
 * a terminal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/engine.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen_opts.h"

typedef struct {
    const tsr_engine *e;
    bool logprobs;
} tsr__chat_sink;

static void tsr__chat_on_event(void *user, int64_t index, const tsr_engine_event *ev) {
    tsr__chat_sink *k = user;
    if (ev->text_len) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
    }
    if (k->logprobs) tsr__gen_print_logprobs(k->e, index, ev);
}

/* Trims the line's end (newline, CR, spaces); returns the start past leading spaces. */
static char *tsr__trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

int tsr_cmd_chat(int argc, char **argv) {
    tsr__gen_cli o;
    tsr__gen_cli_defaults(&o, 512);
    const char *system = NULL;
    tsr_opt opts[] = {
        {"--system", TSR_OPT_STR, &system, "TEXT", "system message (default: the chat template's)"},
        TSR__GEN_OPTS(o),
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera chat [MODEL] [options]",
                           "Chats with a model: one user turn per line on stdin, the answer streamed to "
                           "stdout, figures on stderr. /reset starts over, /exit or EOF leaves.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) {
        tsr__gen_cli_free(&o);
        return rc == TSR_CLI_HELP ? 0 : 1;
    }
    int exit_code = 1;
    tsr_engine *e = NULL;
    char *line = NULL;
    size_t cap = 0;
    tsr_engine_request req;
    if (tsr__gen_cli_to_request("chat", &o, &req) != 0) goto done;
    if (tsr__gen_cli_open("chat", &o, n_pos ? pos[0] : NULL, &argc, &argv, &e) != TSR_OK) goto done;
    if (!e) { /* a TP worker: it replayed rank 0's steps and is done */
        exit_code = 0;
        goto done;
    }
    const bool tty = isatty(STDIN_FILENO);
    const uint64_t base_seed = req.sampling.seed;
    tsr__chat_sink sink = {e, o.logprobs >= 0};
    if (tty)
        fprintf(stderr, "[chat template %s, session length %lld; /reset starts over, /exit leaves]\n",
                tsr_chat_template_name(tsr_engine_chat_template(e)), (long long)tsr_engine_session_len(e));
    uint64_t session = 1;
    int64_t turn = 0, n_tokens = 0;   /* the session's history */
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        char *text = tsr__trim(line);
        if (!*text) continue;
        if (!strcmp(text, "/exit") || !strcmp(text, "/quit")) break;
        if (!strcmp(text, "/reset")) {
            tsr_engine_end_session(e, session++);
            turn = 0;
            n_tokens = 0;
            fprintf(stderr, "[session reset]\n");
            continue;
        }
        tsr_engine_message msgs[2];
        int n_msgs = 0;
        if (turn == 0 && system) msgs[n_msgs++] = (tsr_engine_message){"system", system};
        msgs[n_msgs++] = (tsr_engine_message){"user", text};
        req.messages = msgs;
        req.n_messages = n_msgs;
        req.session_id = session;
        /* A fresh stream per turn: the RNG counter restarts with each answer. */
        req.sampling.seed = base_seed + (uint64_t)turn * 0x9E3779B97F4A7C15ull;
        tsr__gen_result res;
        tsr_status r = tsr__gen_run(e, &req, tsr__chat_on_event, &sink, &res);
        if (r != TSR_OK) {
            /* A refused turn leaves the session as it was: say why and go on. */
            fflush(stdout);
            if (res.n_generated) fputc('\n', stdout);
            tsr_cli_err("tessera chat: %s%s\n", tsr_last_error(),
                    r == TSR_ERR_INVALID_ARG ? " (/reset starts over)" : "");
            tsr__gen_result_free(&res);
            continue;
        }
        turn++;
        n_tokens = res.n_prompt + res.n_generated;
        printf("\n");
        fflush(stdout);
        const int64_t n_prefill = res.n_prompt - res.n_cached;
        double pre = res.prefill_s > 0 ? (double)n_prefill / res.prefill_s : 0.0;
        double dec = res.decode_s > 0 && res.n_generated > 1 ? (double)(res.n_generated - 1) / res.decode_s : 0.0;
        fprintf(stderr, "[prefill %lld new tokens (%lld cached) %.0f tok/s | decode %lld tokens %.1f tok/s | finish %s | session %lld/%lld]\n",
                (long long)n_prefill, (long long)res.n_cached, pre, (long long)res.n_generated, dec,
                tsr_finish_reason_str(res.finish), (long long)n_tokens, (long long)tsr_engine_session_len(e));
        tsr__gen_result_free(&res);
    }
    if (tty) fputc('\n', stdout);
    exit_code = 0;
done:
    free(line);
    tsr_engine_close(e);
    tsr__gen_cli_free(&o);
    return exit_code;
}
