/* `tessera bench SUB`: benchmarks that print a figure and what it is measured against.  Each
 * sub-benchmark is one row of tsr__benches (add a row to add one); `bench tokenizer` lives
 * here, the others in their own files (declared in tools/commands.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/status.h"
#include "coordinator/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} tsr__bench;

int tsr_bench_batch(int argc, char **argv);   /* tools/bench_batch.c */
int tsr_bench_sweep(int argc, char **argv);   /* tools/bench_sweep.c */

static const tsr__bench tsr__benches[] = {
    {"tokenizer", tsr_bench_tokenizer, "encode/decode throughput of the model's tokenizer on one core (MB/s)"},
    {"generate", tsr_bench_generate,
     "prefill and decode tok/s of one sequence per --prompt-len x --depth x --gen-len case, mean +- std of --runs, "
     "peak RSS, --json"},
    {"batch", tsr_bench_batch, "decode tok/s of 1 vs 8 vs 32 concurrent requests through the batching engine"},
    {"sweep", tsr_bench_sweep,
     "the TP sweep: bench generate under mpirun -np N for each TP size; table, --json, --plot PNG"},
    {"serve", tsr_bench_serve,
     "requests/s, tok/s, TTFT, inter-token latency and answers by status of concurrent HTTP streaming clients "
     "(--duration S --disconnect-fraction F: a soak)"},
    {NULL, NULL, NULL},
};

static void tsr__bench_usage(FILE *f) {
    fprintf(f, "usage: tessera bench <benchmark> [options]   (tessera bench <benchmark> --help)\n\nbenchmarks:\n");
    for (const tsr__bench *b = tsr__benches; b->name; b++) fprintf(f, "  %-12s %s\n", b->name, b->help);
}

int tsr_cmd_bench(int argc, char **argv) {
    if (argc < 2) {
        tsr__bench_usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        tsr__bench_usage(stdout);
        return 0;
    }
    for (const tsr__bench *b = tsr__benches; b->name; b++)
        if (!strcmp(argv[1], b->name)) return b->fn(argc - 1, argv + 1);
    tsr_cli_err("tessera bench: unknown benchmark '%s'\n\n", argv[1]);
    tsr__bench_usage(stderr);
    return 1;
}

/* ---- bench tokenizer ---- */

/* Built-in English prose (written for this benchmark), repeated to the requested size.  A
 * repeated text flatters the word cache, so the benchmark also reports the cache-off figure. */
static const char tsr__english[] =
    "The harbour town woke slowly that morning. Fishermen carried their nets down to the water while the "
    "bakers, who had been up since four, opened their shutters and set out trays of bread that steamed in "
    "the cold air. Nobody in the square seemed to notice the stranger at first; he was tall, wore a grey coat "
    "that had seen better years, and he carried nothing but a small leather case.\n\n"
    "He asked the woman at the post office whether the ferry still left at noon. She told him it did, except "
    "on Sundays and during storms, and that the crossing took about three hours if the wind was kind. He "
    "thanked her, bought a newspaper, and sat on the bench by the fountain to read it. The headlines were "
    "about the new bridge: the council had argued for eleven months about its cost, which had risen from 4.2 "
    "million to nearly 7 million, and the engineers now said it would not open before the spring of next year.\n\n"
    "Children ran past him on their way to school, shouting about a football match, a lost dog and a teacher "
    "who had promised them a trip to the museum. An old man with a cane stopped to ask if he was waiting for "
    "someone. \"In a way,\" the stranger said. \"I'm waiting for the right moment.\" The old man laughed, said "
    "that moments like that rarely announce themselves, and went on towards the harbour.\n\n"
    "By eleven o'clock the square was full. Farmers had arrived with vegetables, cheese and honey; a musician "
    "tuned his guitar beside the church steps; tourists photographed the clock tower, whose hands had been "
    "stuck at a quarter past three for as long as anyone could remember. The stranger folded his newspaper, "
    "picked up his case and walked to the pier, where the ferry was already taking on passengers and cars. "
    "He did not look back. Later, people would argue about what had been in the case, and whether he had "
    "ever really been there at all.\n\n";

static double tsr__median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n ? v[n / 2] : 0;
}

/* Times encode of the whole text (median of rounds); returns seconds, sets *n_tokens. */
static int tsr__time_encode(const tsr_tokenizer *tok, const char *text, size_t len, int rounds, double *secs,
                            int64_t *n_tokens) {
    double t[64];
    if (rounds > 64) rounds = 64;
    for (int r = 0; r < rounds; r++) {
        int32_t *ids;
        int64_t n;
        double t0 = tsr_now();
        if (tsr_tokenizer_encode(tok, text, len, false, true, &ids, &n) != TSR_OK) {
            tsr_cli_err("tessera bench tokenizer: %s\n", tsr_last_error());
            return 1;
        }
        t[r] = tsr_now() - t0;
        *n_tokens = n;
        free(ids);
    }
    *secs = tsr__median(t, rounds);
    return 0;
}

int tsr_bench_tokenizer(int argc, char **argv) {
    const char *file = NULL;
    int64_t mb = 8, rounds = 5;
    const tsr_opt opts[] = {
        {"--file", TSR_OPT_STR, &file, "F", "encode the text of file F (default: built-in English prose, repeated)"},
        {"--mb", TSR_OPT_INT, &mb, "N", "size of the built-in corpus in MB (default 8)"},
        {"--rounds", TSR_OPT_INT, &rounds, "N", "timed rounds; the median is reported (default 5)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench tokenizer [MODEL] [--file F]",
                           "Encode throughput of the model's tokenizer on one core (one thread), in MB/s and tokens/s,\n"
                           "with the word cache on and off, and decode throughput.  Target: >= 10 MB/s on English.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (rounds < 1 || mb < 1 || mb > 1024) {
        tsr_cli_err("tessera bench tokenizer: --rounds >= 1 and 1 <= --mb <= 1024\n");
        return 1;
    }
    const char *path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!path) return 1;
    double t0 = tsr_now();
    tsr_tokenizer *tok = NULL;
    if (tsr_tokenizer_load_model(path, &tok) != TSR_OK) {
        tsr_cli_err("tessera bench tokenizer: %s\n", tsr_last_error());
        return 1;
    }
    double load_s = tsr_now() - t0;

    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (tsr_read_file(file, (size_t)1 << 31, &text, &len) != TSR_OK) {
            tsr_cli_err("tessera bench tokenizer: %s\n", tsr_last_error());
            tsr_tokenizer_free(tok);
            return 1;
        }
    } else {
        size_t unit = sizeof tsr__english - 1, want = (size_t)mb << 20;
        text = malloc(want + unit + 1);
        if (!text) { tsr_tokenizer_free(tok); return 1; }
        while (len < want) {
            memcpy(text + len, tsr__english, unit);
            len += unit;
        }
        text[len] = 0;
    }

    printf("tokenizer: %s (vocab %lld, loaded in %.3f s)\n", path, (long long)tsr_tokenizer_vocab_size(tok), load_s);
    printf("input: %s, %.2f MB\n", file ? file : "built-in English prose (repeated)", (double)len / 1e6);
    int status = 0;
    double secs = 0;
    int64_t n_tokens = 0;
    for (int cache = 1; cache >= 0 && !status; cache--) {
        tsr_tokenizer_set_cache(tok, cache);
        status = tsr__time_encode(tok, text, len, (int)rounds, &secs, &n_tokens);
        if (status) break;
        double mbps = (double)len / 1e6 / secs;
        printf("encode (word cache %s): %8.2f MB/s  %10.0f tokens/s  (%lld tokens, %.2f bytes/token, median of %lld)  "
               "%.2fx the 10 MB/s target\n",
               cache ? "on " : "off", mbps, (double)n_tokens / secs, (long long)n_tokens, (double)len / (double)n_tokens,
               (long long)rounds, mbps / 10.0);
    }
    tsr_tokenizer_set_cache(tok, true);
    if (!status) {
        int32_t *ids;
        int64_t n;
        if (tsr_tokenizer_encode(tok, text, len, false, true, &ids, &n) == TSR_OK) {
            char *out;
            size_t out_len;
            double d0 = tsr_now();
            if (tsr_tokenizer_decode(tok, ids, n, false, &out, &out_len) == TSR_OK) {
                double ds = tsr_now() - d0;
                printf("decode: %8.2f MB/s  %10.0f tokens/s  (round trip %s)\n", (double)out_len / 1e6 / ds,
                       (double)n / ds, out_len == len && !memcmp(out, text, len) ? "exact" : "DIFFERS");
                free(out);
            }
            free(ids);
        }
    }
    free(text);
    tsr_tokenizer_free(tok);
    return status;
}
