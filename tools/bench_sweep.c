/* `tessera bench sweep`: the TP sweep.  For each batch size and each TP size it launches
 * `mpirun -np N <this binary> bench generate --tp N ...` (one launch per size; on the CPU the
 * engine with the model, with --dummy-config the GPU forward benchmark), reads the
 * "decode_tok_s=... prefill_tok_s=..." line that benchmark prints, and writes a table, --json
 * and a --plot PNG of decode tok/s and speedup against TP size.  Each launch's output is shown
 * as it runs, prefixed with its TP size. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/plot_png.h"

enum { TSR__MAX_SIZES = 16 };

typedef struct {
    int64_t tp, batch;
    double decode, prefill, wall_s;
    int ok;
} tsr__sweep_row;

/* "1,2,4" -> values (each 1..4096); 0 on success. */
static int tsr__parse_list(const char *what, const char *s, int64_t *v, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || errno || x < 1 || x > 4096 || (*end && *end != ',') || *n == TSR__MAX_SIZES) {
            tsr_cli_err("tessera bench sweep: %s must be a comma-separated list of up to %d sizes in 1..4096, "
                        "got '%s'\n", what, TSR__MAX_SIZES, s);
            return 1;
        }
        v[(*n)++] = x;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) {
        tsr_cli_err("tessera bench sweep: %s is empty\n", what);
        return 1;
    }
    return 0;
}

/* Runs argv with stdout and stderr on a pipe; echoes each line to stderr with a prefix and
 * picks the figures out of the benchmark's machine-readable line.  Returns the exit status. */
static int tsr__launch(char **argv, const char *prefix, tsr__sweep_row *row) {
    int fd[2];
    if (pipe(fd) != 0) {
        perror("tessera bench sweep: pipe");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tessera bench sweep: fork");
        close(fd[0]), close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]), close(fd[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    char line[1024];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *d = strstr(line, "decode_tok_s="), *p = strstr(line, "prefill_tok_s=");
        if (d && p && (!strncmp(line, "bench-generate:", 15) || !strncmp(line, "bench-forward:", 14))) {
            row->decode = strtod(d + 13, NULL);
            row->prefill = strtod(p + 14, NULL);
            found = 1;
        }
        fprintf(stderr, "%s%s", prefix, line);
        if (!strchr(line, '\n')) fputc('\n', stderr);
    }
    if (f) fclose(f);
    else close(fd[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {}
    int rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    if (rc == 0 && !found) rc = -2;
    return rc;
}

static int tsr__write_json(const char *path, const char *backend, const char *model, const char *dummy,
                           int64_t prompt_len, int64_t gen_len, const tsr__sweep_row *rows, int n_rows,
                           int64_t base_tp) {
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "results");
    cJSON_AddStringToObject(root, "benchmark", "bench sweep");
    cJSON_AddStringToObject(root, "backend", dummy ? "cuda" : backend);
    if (dummy) cJSON_AddStringToObject(root, "dummy_config", dummy);
    else cJSON_AddStringToObject(root, "model", model);
    if (prompt_len >= 0) cJSON_AddNumberToObject(root, "prompt_len", (double)prompt_len);
    if (gen_len >= 0) cJSON_AddNumberToObject(root, "gen_len", (double)gen_len);
    cJSON_AddNumberToObject(root, "speedup_base_tp", (double)base_tp);
    for (int i = 0; i < n_rows; i++) {
        const tsr__sweep_row *r = &rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "tp", (double)r->tp);
        cJSON_AddNumberToObject(o, "batch", (double)r->batch);
        cJSON_AddBoolToObject(o, "ok", r->ok);
        if (r->ok) {
            cJSON_AddNumberToObject(o, "decode_tok_s", r->decode);
            cJSON_AddNumberToObject(o, "prefill_tok_s", r->prefill);
            double base = 0;
            for (int j = 0; j < n_rows; j++)
                if (rows[j].batch == r->batch && rows[j].tp == base_tp && rows[j].ok) base = rows[j].decode;
            if (base > 0) cJSON_AddNumberToObject(o, "speedup", r->decode / base);
        }
        cJSON_AddNumberToObject(o, "wall_s", r->wall_s);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    FILE *f = text ? fopen(path, "w") : NULL;
    int bad = !f || fputs(text, f) < 0 || fputc('\n', f) < 0;
    if (f && fclose(f) != 0) bad = 1;
    free(text);
    if (bad) tsr_cli_err("tessera bench sweep: cannot write %s\n", path);
    return bad;
}

/* Decode tok/s (left axis) and speedup (right axis) against TP size, one pair per batch. */
static int tsr__write_plot(const char *path, const tsr__sweep_row *rows, int n_rows, const int64_t *batches, int nb,
                           int64_t base_tp) {
    static const uint8_t tok_rgb[4][3] = {{31, 90, 180}, {40, 150, 60}, {120, 60, 170}, {20, 140, 150}};
    static const uint8_t spd_rgb[4][3] = {{220, 80, 30}, {200, 40, 90}, {230, 150, 0}, {150, 90, 40}};
    tsr_plot_series se[2 * TSR__MAX_SIZES];
    double xs[TSR__MAX_SIZES][TSR__MAX_SIZES], tok[TSR__MAX_SIZES][TSR__MAX_SIZES], spd[TSR__MAX_SIZES][TSR__MAX_SIZES];
    char labels[2 * TSR__MAX_SIZES][48];
    int ns = 0;
    for (int b = 0; b < nb; b++) {
        int n = 0;
        double base = 0;
        for (int i = 0; i < n_rows; i++)
            if (rows[i].batch == batches[b] && rows[i].tp == base_tp && rows[i].ok) base = rows[i].decode;
        for (int i = 0; i < n_rows; i++)
            if (rows[i].batch == batches[b] && rows[i].ok) {
                xs[b][n] = (double)rows[i].tp;
                tok[b][n] = rows[i].decode;
                spd[b][n] = base > 0 ? rows[i].decode / base : 0;
                n++;
            }
        if (!n) continue;
        snprintf(labels[ns], sizeof labels[ns], nb > 1 ? "decode tok/s, batch %lld" : "decode tok/s",
                 (long long)batches[b]);
        se[ns] = (tsr_plot_series){labels[ns], xs[b], tok[b], n, 0, {0, 0, 0}};
        memcpy(se[ns].rgb, tok_rgb[b % 4], 3);
        ns++;
        snprintf(labels[ns], sizeof labels[ns], nb > 1 ? "speedup, batch %lld" : "speedup", (long long)batches[b]);
        se[ns] = (tsr_plot_series){labels[ns], xs[b], spd[b], n, 1, {0, 0, 0}};
        memcpy(se[ns].rgb, spd_rgb[b % 4], 3);
        ns++;
    }
    char right[48];
    snprintf(right, sizeof right, "speedup vs TP %lld", (long long)base_tp);
    tsr_plot pl = {"TP sweep", "TP size", "tok/s", right, se, ns};
    if (tsr_plot_png(&pl, path) != TSR_OK) {
        tsr_cli_err("tessera bench sweep: %s\n", tsr_last_error());
        return 1;
    }
    return 0;
}

int tsr_bench_sweep(int argc, char **argv) {
    const char *tp_s = "1,2,4", *batch_s = NULL, *backend = "cpu", *dummy = NULL, *json = NULL, *plot = NULL;
    const char *mpirun = "mpirun";
    int64_t prompt_len = -1, gen_len = -1, runs = -1, threads = 0;
    tsr_opt opts[] = {
        {"--tp", TSR_OPT_STR, &tp_s, "LIST", "TP sizes, one mpirun launch each (default 1,2,4)"},
        {"--batch", TSR_OPT_STR, &batch_s, "LIST",
         "with --dummy-config: batch sizes of the batched decode (default 64); the CPU benchmark is batch 1"},
        {"--backend", TSR_OPT_STR, &backend, "NAME", "cpu (default), cuda or auto"},
        {"--dummy-config", TSR_OPT_STR, &dummy, "NAME|PATH", "the GPU forward benchmark on random weights (llama3-8b)"},
        {"--prompt-len", TSR_OPT_INT, &prompt_len, "N", "passed to bench generate"},
        {"--gen-len", TSR_OPT_INT, &gen_len, "N", "passed to bench generate"},
        {"--runs", TSR_OPT_INT, &runs, "N", "passed to bench generate (CPU)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads per rank, passed to bench generate"},
        {"--json", TSR_OPT_STR, &json, "FILE", "write the results as JSON"},
        {"--plot", TSR_OPT_STR, &plot, "FILE.png", "write a PNG plot of decode tok/s and speedup against TP size"},
        {"--mpirun", TSR_OPT_STR, &mpirun, "PATH", "the MPI launcher (default mpirun)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench sweep [MODEL] [--tp 1,2,4] [--backend cpu] [--json F] [--plot F.png]\n"
                           "       tessera bench sweep --dummy-config llama3-8b [--tp 1,2,4] [--batch 1,16,64]",
                           "The TP sweep: `bench generate` under mpirun -np N for each TP size N (and each batch),\n"
                           "a table of decode and prefill tok/s with the speedup over the smallest TP size.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    int64_t tps[TSR__MAX_SIZES], batches[TSR__MAX_SIZES] = {1};
    int ntp = 0, nb = 1;
    if (tsr__parse_list("--tp", tp_s, tps, &ntp)) return 1;
    if (batch_s) {
        if (!dummy) {
            tsr_cli_err("tessera bench sweep: --batch needs --dummy-config (the CPU benchmark is one sequence)\n");
            return 1;
        }
        if (tsr__parse_list("--batch", batch_s, batches, &nb)) return 1;
    } else if (dummy) {
        batches[0] = 64;
    }
    if (dummy && n_pos > 0) {
        tsr_cli_err("tessera bench sweep: --dummy-config takes no MODEL\n");
        return 1;
    }
    const char *model = dummy ? NULL : tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!dummy && !model) return 1;
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        tsr_cli_err("tessera bench sweep: cannot find this binary (/proc/self/exe)\n");
        return 1;
    }
    self[sl] = 0;
    int64_t base_tp = tps[0];
    for (int i = 1; i < ntp; i++)
        if (tps[i] < base_tp) base_tp = tps[i];

    tsr__sweep_row rows[TSR__MAX_SIZES * TSR__MAX_SIZES];
    int n_rows = 0, failed = 0, total = ntp * nb;
    char np[24], tpn[24], bs[24], pl[24], gl[24], rn[24], th[24];
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < ntp; t++) {
            tsr__sweep_row *row = &rows[n_rows++];
            *row = (tsr__sweep_row){.tp = tps[t], .batch = batches[b]};
            const char *args[40];
            int na = 0;
            snprintf(np, sizeof np, "%lld", (long long)tps[t]);
            snprintf(tpn, sizeof tpn, "%lld", (long long)tps[t]);
            args[na++] = mpirun, args[na++] = "-np", args[na++] = np, args[na++] = "--oversubscribe";
            args[na++] = "--bind-to", args[na++] = "none", args[na++] = self, args[na++] = "bench";
            args[na++] = "generate", args[na++] = "--tp", args[na++] = tpn;
            if (dummy) {
                snprintf(bs, sizeof bs, "%lld", (long long)batches[b]);
                args[na++] = "--dummy-config", args[na++] = dummy, args[na++] = "--batch", args[na++] = bs;
            } else {
                args[na++] = model, args[na++] = "--backend", args[na++] = backend;
                if (runs > 0) {
                    snprintf(rn, sizeof rn, "%lld", (long long)runs);
                    args[na++] = "--runs", args[na++] = rn;
                }
            }
            if (prompt_len >= 0) {
                snprintf(pl, sizeof pl, "%lld", (long long)prompt_len);
                args[na++] = "--prompt-len", args[na++] = pl;
            }
            if (gen_len >= 0) {
                snprintf(gl, sizeof gl, "%lld", (long long)gen_len);
                args[na++] = "--gen-len", args[na++] = gl;
            }
            if (threads > 0) {
                snprintf(th, sizeof th, "%lld", (long long)threads);
                args[na++] = "--threads", args[na++] = th;
            }
            args[na] = NULL;
            fprintf(stderr, "bench sweep: [%d/%d] TP %lld, batch %lld: %s -np %s ... bench generate\n", n_rows, total,
                    (long long)tps[t], (long long)batches[b], mpirun, np);
            char prefix[32];
            snprintf(prefix, sizeof prefix, "  [tp %lld] ", (long long)tps[t]);
            double t0 = tsr_now();
            int lrc = tsr__launch((char **)args, prefix, row);
            row->wall_s = tsr_now() - t0;
            row->ok = lrc == 0 && row->decode > 0;
            if (!row->ok) {
                failed++;
                if (lrc == -2)
                    tsr_cli_err("tessera bench sweep: TP %lld printed no decode_tok_s line\n", (long long)tps[t]);
                else
                    tsr_cli_err("tessera bench sweep: TP %lld failed (exit status %d)\n", (long long)tps[t], lrc);
            }
            tsr_progress("bench sweep", n_rows, total);
        }

    printf("\n## TP sweep: %s, %s\n\n", dummy ? dummy : model, dummy ? "cuda (dummy weights)" : backend);
    printf("| TP | batch | decode tok/s | prefill tok/s | speedup vs TP %lld | wall s |\n|---|---|---|---|---|---|\n",
           (long long)base_tp);
    for (int i = 0; i < n_rows; i++) {
        const tsr__sweep_row *r = &rows[i];
        double base = 0;
        for (int j = 0; j < n_rows; j++)
            if (rows[j].batch == r->batch && rows[j].tp == base_tp && rows[j].ok) base = rows[j].decode;
        if (r->ok && base > 0)
            printf("| %lld | %lld | %.1f | %.1f | %.2fx | %.1f |\n", (long long)r->tp, (long long)r->batch, r->decode,
                   r->prefill, r->decode / base, r->wall_s);
        else if (r->ok)
            printf("| %lld | %lld | %.1f | %.1f | - | %.1f |\n", (long long)r->tp, (long long)r->batch, r->decode,
                   r->prefill, r->wall_s);
        else
            printf("| %lld | %lld | failed | failed | - | %.1f |\n", (long long)r->tp, (long long)r->batch, r->wall_s);
    }
    fflush(stdout);
    if (json && tsr__write_json(json, backend, model, dummy, prompt_len, gen_len, rows, n_rows, base_tp)) failed++;
    else if (json) fprintf(stderr, "bench sweep: wrote %s\n", json);
    if (plot && tsr__write_plot(plot, rows, n_rows, batches, nb, base_tp)) failed++;
    else if (plot) fprintf(stderr, "bench sweep: wrote %s\n", plot);
    return failed ? 1 : 0;
}
