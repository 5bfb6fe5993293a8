/* Tokenizers (rank 0 only): HF tokenizer.json (byte-level BPE as in GPT-2 / Llama-3 / Qwen2 /
 * SmolLM2 with their pre-tokenizer split patterns; SentencePiece-style BPE with byte fallback
 * as in Llama-2 / Mistral / InternLM2) and the tokenizer embedded in a GGUF file
 * (tokenizer.ggml.*, models "gpt2" and "llama").  Encode, decode, and an incremental decoder
 * for streaming that never emits a broken UTF-8 sequence.  Ids match HF `tokenizers`. */
#ifndef TSR_TOKENIZER_H
#define TSR_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/status.h"

typedef struct tsr_tokenizer tsr_tokenizer;

tsr_status tsr_tokenizer_load_hf(const char *tokenizer_json_path, tsr_tokenizer **out);
tsr_status tsr_tokenizer_load_gguf(const tsr_gguf *g, tsr_tokenizer **out);
/* A model path as users give it (GGUF file, HF dir with tokenizer.json, or workspace dir). */
tsr_status tsr_tokenizer_load_model(const char *model_path, tsr_tokenizer **out);
void tsr_tokenizer_free(tsr_tokenizer *t);

/* Encode UTF-8 text.  add_special: prepend BOS (etc.) as the tokenizer's post-processor says.
 * parse_special: recognise special/added token strings in the text (as HF does by default).
 * *ids is malloc'd; caller frees. */
tsr_status tsr_tokenizer_encode(const tsr_tokenizer *t, const char *text, size_t len,
                                bool add_special, bool parse_special, int32_t **ids, int64_t *n_ids);
/* The word cache (on by default) speeds up encoding; `tessera bench tokenizer` measures with
 * and without it.  Not thread-safe against concurrent encodes: call before sharing t. */
void tsr_tokenizer_set_cache(tsr_tokenizer *t, bool enabled);
/* Decode to malloc'd UTF-8 (NUL-terminated). skip_special drops special tokens. */
tsr_status tsr_tokenizer_decode(const tsr_tokenizer *t, const int32_t *ids, int64_t n_ids,
                                bool skip_special, char **text, size_t *len);

int64_t tsr_tokenizer_vocab_size(const tsr_tokenizer *t);
int32_t tsr_tokenizer_bos_id(const tsr_tokenizer *t);   /* -1 if none */
int32_t tsr_tokenizer_eos_id(const tsr_tokenizer *t);   /* -1 if none */
int32_t tsr_tokenizer_token_to_id(const tsr_tokenizer *t, const char *piece); /* -1 if absent */
const char *tsr_tokenizer_id_to_piece(const tsr_tokenizer *t, int32_t id);    /* raw vocab string */
bool tsr_tokenizer_is_special(const tsr_tokenizer *t, int32_t id);
/* The bytes token id adds to a text after other tokens (decoded, not necessarily whole UTF-8;
 * malloc'd): constrained decoding's view of the vocabulary. */
tsr_status tsr_tokenizer_token_bytes(const tsr_tokenizer *t, int32_t id, char **bytes, size_t *len);
/* The chat template string shipped with the tokenizer (tokenizer_config.json or GGUF
 * tokenizer.chat_template), or NULL. */
const char *tsr_tokenizer_chat_template(const tsr_tokenizer *t);

/* Incremental decoding for streaming: push ids one at a time, get back the text that is now
 * final (complete UTF-8, and for SentencePiece the leading-space rule applied as in a whole
 * decode).  The concatenation of all outputs equals tsr_tokenizer_decode of all ids. */
typedef struct tsr_detok {
    const tsr_tokenizer *tok;
    bool skip_special;
    int64_t n_pushed;
    char pending[64];     /* bytes of an incomplete UTF-8 sequence */
    int n_pending;
    int64_t n_decoded;    /* tokens that reached the decoder (skipped specials do not) */
    int strip_left;       /* leading characters still to strip (Strip decoder), -1 before start */
    bool emitted;         /* some character has been output */
} tsr_detok;

void tsr_detok_init(tsr_detok *d, const tsr_tokenizer *t, bool skip_special);
/* Appends the newly final text to *out (malloc'd, NUL-terminated; "" when nothing is final). */
tsr_status tsr_detok_push(tsr_detok *d, int32_t id, char **out, size_t *len);
/* Flush what is left at the end of a stream (invalid trailing bytes become U+FFFD). */
tsr_status tsr_detok_finish(tsr_detok *d, char **out, size_t *len);

#endif
