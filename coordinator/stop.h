/* Stop conditions of one request (rank 0 only; the worker never sees text): stop token ids and
 * stop strings, with OpenAI's semantics.
 *
 * - Stop ids: the model's EOS and extra EOS ids (dropped when ignore_eos is set, as in vLLM)
 *   plus the user's stop ids (always honoured).  A stop id ends the generation and its text
 *   is not part of the output.
 * - Stop strings: the output ends just before the first stop string to appear in the
 *   generated text (when several complete at the same token, the one that starts first); the
 *   stop string itself is not output.  Stop strings may span any number of tokens, so the
 *   streamed text is held back while (and only while) its tail could still be the beginning
 *   of a stop string: with stop "<|im_end|>", the text "a <|im" waits, "a <|in" goes out.
 *
 * Feed it the text that the incremental detokenizer made final (whole UTF-8 characters); as
 * long as the stop strings are valid UTF-8 too, what it releases never splits a character.
 * The matcher is per request; tsr_stop_reset starts the next generation with the same set. */
#ifndef TSR_STOP_H
#define TSR_STOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define TSR_STOP_MAX_STRINGS 64
#define TSR_STOP_MAX_STRING_LEN 512

typedef enum tsr_finish_reason {
    TSR_FINISH_NONE = 0,     /* still running */
    TSR_FINISH_STOP,         /* EOS, a stop id or a stop string */
    TSR_FINISH_LENGTH,       /* max_new_tokens or session_len */
    TSR_FINISH_CANCELLED,
    TSR_FINISH_ERROR,
} tsr_finish_reason;

const char *tsr_finish_reason_str(tsr_finish_reason r);   /* "stop", "length", ... */

typedef struct tsr_stop {
    int32_t *ids;            /* stop ids in effect (eos unless ignored, then the user's) */
    int n_ids;
    char **strs;             /* owned copies */
    size_t *lens;
    int n_strs;
    char *held;              /* text received but not released: a possible stop-string start */
    size_t n_held, cap_held;
    char *out;               /* what the last push released (returned to the caller) */
    size_t cap_out;
    bool stopped;            /* a stop string matched; later pushes release nothing */
    int matched;             /* index of the stop string that matched, or -1 */
} tsr_stop;

/* eos_ids: the model's EOS and extra EOS ids (ignored when ignore_eos); user_ids: the request's
 * stop ids; strs: the request's stop strings (non-empty, at most TSR_STOP_MAX_STRINGS of at
 * most TSR_STOP_MAX_STRING_LEN bytes; duplicates are fine). */
tsr_status tsr_stop_init(tsr_stop *s, const int32_t *eos_ids, int n_eos, bool ignore_eos,
                         const int32_t *user_ids, int n_user, const char *const *strs, int n_strs);
void tsr_stop_free(tsr_stop *s);
/* Forget the held text and any match; keep the ids and strings. */
void tsr_stop_reset(tsr_stop *s);

bool tsr_stop_is_stop_id(const tsr_stop *s, int32_t id);

/* Take newly final text; *emit and *emit_len get the text that can be released now (a pointer
 * into s, valid until the next call; "" when everything is held).  Returns true when a stop
 * string has matched: the release then ends just before it, and the generation should end. */
bool tsr_stop_push(tsr_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len);
/* The generation ended without a stop string (EOS, a stop id, length): release what is held. */
void tsr_stop_flush(tsr_stop *s, const char **emit, size_t *emit_len);

/* How many bytes at the end of text[0..len) could still begin one of the stop strings (the
 * longest suffix that is a proper prefix of one of them).  Exposed for tests. */
size_t tsr_stop_partial_suffix(const tsr_stop *s, const char *text, size_t len);

#endif
