/* `tessera tokenize [MODEL] TEXT`: the model's tokenizer from the command line: text to ids,
 * `--decode` ids to text.  `--lines` batches many inputs in one process (one JSON string per
 * input line, one result line per input), which is how the parity tests in tests/tokenizer
 * compare thousands of strings with HF tokenizers without paying the load time per string. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/fileutil.h"
#include "common/status.h"
#include "coordinator/tokenizer.h"
#include "coordinator/unicode.h"
#include "tools/cli.h"
#include "tools/commands.h"

/* Writes s as a JSON string literal (UTF-8 kept as is; the decoder never emits invalid UTF-8). */
static void tsr__put_json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void tsr__print_ids(const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

/* Parses space/comma separated ids; false if anything else is there. */
static bool tsr__parse_ids(const char *s, int32_t **ids, int64_t *n) {
    int64_t cap = 16, k = 0;
    int32_t *v = malloc(sizeof(int32_t) * (size_t)cap);
    if (!v) return false;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '[' || *p == ']' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX) { free(v); return false; }
        if (k == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, sizeof(int32_t) * (size_t)cap);
            if (!nv) { free(v); return false; }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = k;
    return true;
}

static bool tsr__all_ids(const char *s) {
    int32_t *ids;
    int64_t n;
    if (!tsr__parse_ids(s, &ids, &n)) return false;
    free(ids);
    return n > 0;
}

/* Decodes ids; stream: through the incremental decoder, printing the pieces as a JSON array. */
static int tsr__decode_one(const tsr_tokenizer *tok, const int32_t *ids, int64_t n, bool skip, bool stream, bool json) {
    if (stream) {
        tsr_detok d;
        tsr_detok_init(&d, tok, skip);
        printf("[");
        for (int64_t i = 0; i <= n; i++) {
            char *piece;
            size_t len;
            tsr_status st = i < n ? tsr_detok_push(&d, ids[i], &piece, &len) : tsr_detok_finish(&d, &piece, &len);
            if (st != TSR_OK) {
                printf("]\n");
                tsr_cli_err("tessera tokenize: %s\n", tsr_last_error());
                return 1;
            }
            if (i) printf(", ");
            tsr__put_json_string(stdout, piece, len);
            free(piece);
        }
        printf("]\n");
        return 0;
    }
    char *text;
    size_t len;
    if (tsr_tokenizer_decode(tok, ids, n, skip, &text, &len) != TSR_OK) {
        tsr_cli_err("tessera tokenize: %s\n", tsr_last_error());
        return 1;
    }
    if (json) tsr__put_json_string(stdout, text, len);
    else fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return 0;
}

int tsr_cmd_tokenize(int argc, char **argv) {
    bool decode = false, no_special = false, no_parse_special = false, skip_special = false, lines = false,
         stream = false, info = false;
    const char *file = NULL;
    const tsr_opt opts[] = {
        {"--decode", TSR_OPT_FLAG, &decode, NULL, "take token ids (space or comma separated) and print the text"},
        {"--no-special", TSR_OPT_FLAG, &no_special, NULL, "do not add BOS/EOS (the post-processor's special tokens)"},
        {"--no-parse-special", TSR_OPT_FLAG, &no_parse_special, NULL,
         "treat special-token strings in the text as plain text"},
        {"--skip-special", TSR_OPT_FLAG, &skip_special, NULL, "with --decode: drop special tokens from the text"},
        {"--file", TSR_OPT_STR, &file, "F", "read the text (or ids) from file F ('-' for stdin)"},
        {"--lines", TSR_OPT_FLAG, &lines, NULL,
         "batch mode: every input line is one input (a JSON string when encoding); one output line each "
         "(ids; a JSON string when decoding)"},
        {"--stream", TSR_OPT_FLAG, &stream, NULL,
         "with --decode: use the incremental decoder and print its pieces as a JSON array"},
        {"--info", TSR_OPT_FLAG, &info, NULL, "print the vocabulary size, BOS/EOS and whether a chat template is present"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *usage = "tessera tokenize [MODEL] TEXT | [MODEL] --file F | --decode [MODEL] IDS...";
    const char *desc =
        "Encode text to token ids with the model's tokenizer (HF tokenizer.json or the one embedded in a GGUF),\n"
        "or decode ids back to text.  MODEL is a .gguf file, an HF directory or a workspace; without it the\n"
        "default model is used.  With one positional argument it is the TEXT (or, with --decode, the IDS).";
    int max_pos = 1 << 16;
    const char **pos = malloc(sizeof(char *) * (size_t)max_pos);
    if (!pos) return 1;
    int n_pos = 0;
    int rc = tsr_cli_parse(usage, desc, opts, argc, argv, pos, max_pos, &n_pos);
    if (rc != TSR_CLI_OK) { free(pos); return rc == TSR_CLI_HELP ? 0 : 1; }

    /* MODEL is the first positional when there is more input after it (or a file provides it). */
    const char *model = NULL;
    int first_input = 0;
    if (decode) {
        if (n_pos >= 1 && (file || info || !tsr__all_ids(pos[0]))) { model = pos[0]; first_input = 1; }
    } else if (n_pos >= 2 || (n_pos == 1 && (file || info))) {
        model = pos[0];
        first_input = 1;
    }
    if (n_pos - first_input > 1 && !decode) {
        tsr_cli_err("tessera tokenize: too many arguments (quote the TEXT)\n");
        free(pos);
        return 1;
    }
    const char *path = tsr_cli_model_or_default(model);
    if (!path) { free(pos); return 1; }
    tsr_tokenizer *tok = NULL;
    if (tsr_tokenizer_load_model(path, &tok) != TSR_OK) {
        tsr_cli_err("tessera tokenize: %s\n", tsr_last_error());
        free(pos);
        return 1;
    }
    if (info) {
        printf("vocab %lld, bos %d, eos %d, chat template %s, unicode tables %s\n",
               (long long)tsr_tokenizer_vocab_size(tok), tsr_tokenizer_bos_id(tok), tsr_tokenizer_eos_id(tok),
               tsr_tokenizer_chat_template(tok) ? "yes" : "no", tsr_unicode_version());
        tsr_tokenizer_free(tok);
        free(pos);
        return 0;
    }

    /* the input: a file, or the remaining positionals */
    char *input = NULL;
    size_t input_len = 0;
    if (file) {
        if (!strcmp(file, "-")) {
            size_t cap = 1 << 16;
            input = malloc(cap);
            size_t k;
            while (input && (k = fread(input + input_len, 1, cap - input_len - 1, stdin)) > 0) {
                input_len += k;
                if (cap - input_len < 2) {
                    char *ni = realloc(input, cap *= 2);
                    if (!ni) { free(input); input = NULL; }
                    input = ni;
                }
            }
            if (input) input[input_len] = 0;
        } else if (tsr_read_file(file, (size_t)1 << 31, &input, &input_len) != TSR_OK) {
            tsr_cli_err("tessera tokenize: %s\n", tsr_last_error());
            input = NULL;
        }
        if (!input) { tsr_tokenizer_free(tok); free(pos); return 1; }
    } else {
        size_t total = 1;
        for (int i = first_input; i < n_pos; i++) total += strlen(pos[i]) + 1;
        input = calloc(1, total);
        if (!input) { tsr_tokenizer_free(tok); free(pos); return 1; }
        for (int i = first_input; i < n_pos; i++) {
            if (i > first_input) input[input_len++] = ' ';
            size_t l = strlen(pos[i]);
            memcpy(input + input_len, pos[i], l);
            input_len += l;
        }
        if (n_pos == first_input) {
            tsr_cli_err("tessera tokenize: nothing to %s (give %s or --file F)\n", decode ? "decode" : "encode",
                    decode ? "IDS" : "TEXT");
            free(input);
            tsr_tokenizer_free(tok);
            free(pos);
            return 1;
        }
    }
    free(pos);

    int status = 0;
    /* lines are split by hand: an empty line (an empty id list) is an input too */
    char *line = input, *next_line = NULL;
    if (lines && input_len && input[input_len - 1] == '\n') input[--input_len] = 0;
    int64_t lineno = 0;
    while (line && !status) {
        if (lines) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            next_line = nl ? nl + 1 : NULL;
            if (!nl && !*line && lineno == 0 && !input_len) break;
        }
        lineno++;
        if (decode) {
            int32_t *ids;
            int64_t n;
            if (!tsr__parse_ids(line, &ids, &n)) {
                tsr_cli_err("tessera tokenize: line %lld: not a list of token ids\n", (long long)lineno);
                status = 1;
                break;
            }
            status = tsr__decode_one(tok, ids, n, skip_special, stream, lines);
            free(ids);
        } else {
            const char *text = line;
            size_t len = lines ? strlen(line) : input_len;
            cJSON *j = NULL;
            if (lines) {
                j = cJSON_Parse(line);
                if (!cJSON_IsString(j)) {
                    tsr_cli_err("tessera tokenize: line %lld: expected a JSON string\n", (long long)lineno);
                    cJSON_Delete(j);
                    status = 1;
                    break;
                }
                text = j->valuestring;
                len = strlen(text);
            }
            int32_t *ids;
            int64_t n;
            if (tsr_tokenizer_encode(tok, text, len, !no_special, !no_parse_special, &ids, &n) != TSR_OK) {
                tsr_cli_err("tessera tokenize: %s\n", tsr_last_error());
                status = 1;
            } else {
                tsr__print_ids(ids, n);
                free(ids);
            }
            cJSON_Delete(j);
        }
        line = lines ? next_line : NULL;
    }
    free(input);
    tsr_tokenizer_free(tok);
    return status;
}
