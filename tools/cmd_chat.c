/* `tessera chat`: an interactive, stateful conversation like TurboMind's: each line read from
 * stdin is a user turn appended to one session, whose KV is kept, so a turn prefills only its
 * own new tokens (the figure line on stderr after each answer shows it).  `/reset` starts over,
 * `/exit` or end of input leaves.  Works the same with a pipe as with a terminal; the "> "
 * prompt is drawn only on a terminal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/generator.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen_opts.h"

typedef struct {
    const tsr_generator *g;
    bool logprobs;
} tsr__chat_sink;

static bool tsr__chat_on_token(void *user, const tsr_gen_token *t) {
    tsr__chat_sink *k = user;
    if (t->text_len) {
        fwrite(t->text, 1, t->text_len, stdout);
        fflush(stdout);
    }
    if (k->logprobs) tsr__gen_print_logprobs(k->g, t);
    return true;
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
    tsr_generator *g = NULL;
    tsr_session *s = NULL;
    char *line = NULL;
    size_t cap = 0;
    tsr_gen_request req;
    if (tsr__gen_cli_to_request("chat", &o, &req) != 0) goto done;
    if (tsr__gen_cli_open("chat", &o, n_pos ? pos[0] : NULL, &g) != TSR_OK) goto done;
    if (!g) { /* a TP worker: it replayed rank 0's steps and is done */
        exit_code = 0;
        goto done;
    }
    if (tsr_session_new(g, &s) != TSR_OK) {
        fprintf(stderr, "tessera chat: %s\n", tsr_last_error());
        goto done;
    }
    const bool tty = isatty(STDIN_FILENO);
    const uint64_t base_seed = req.sampling.seed;
    tsr__chat_sink sink = {g, o.logprobs >= 0};
    req.on_token = tsr__chat_on_token;
    req.user = &sink;
    if (tty)
        fprintf(stderr, "[chat template %s, session length %lld; /reset starts over, /exit leaves]\n",
                tsr_chat_template_name(tsr_generator_chat_template(g)), (long long)tsr_generator_session_len(g));
    int64_t turn = 0;
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
            tsr_session_reset(s);
            turn = 0;
            fprintf(stderr, "[session reset]\n");
            continue;
        }
        /* A fresh stream per turn: the RNG counter restarts with each answer. */
        req.sampling.seed = base_seed + (uint64_t)turn * 0x9E3779B97F4A7C15ull;
        tsr_gen_stats st = {0};
        tsr_status r = tsr_session_chat(s, turn == 0 ? system : NULL, text, &req, &st);
        if (r != TSR_OK) {
            /* The session is unchanged: say why and go on. */
            fflush(stdout);
            fprintf(stderr, "tessera chat: %s\n", tsr_last_error());
            tsr_gen_stats_free(&st);
            continue;
        }
        turn++;
        printf("\n");
        fflush(stdout);
        double pre = st.prefill_s > 0 ? (double)st.n_prefill / st.prefill_s : 0.0;
        double dec = st.decode_s > 0 && st.n_generated > 1 ? (double)(st.n_generated - 1) / st.decode_s : 0.0;
        fprintf(stderr, "[prefill %lld new tokens (%lld cached) %.0f tok/s | decode %lld tokens %.1f tok/s | finish %s | session %lld/%lld]\n",
                (long long)st.n_prefill, (long long)st.n_cached, pre, (long long)st.n_generated, dec,
                tsr_finish_reason_str(st.finish), (long long)tsr_session_n_tokens(s),
                (long long)tsr_generator_session_len(g));
        tsr_gen_stats_free(&st);
    }
    if (tty) fputc('\n', stdout);
    exit_code = 0;
done:
    free(line);
    tsr_session_free(s);
    tsr_generator_close(g);
    tsr__gen_cli_free(&o);
    return exit_code;
}
