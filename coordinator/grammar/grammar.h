/* Constrained decoding (rank 0 only): a JSON schema -- or OpenAI's plain json_object -- compiled
 * into a byte-level pushdown automaton, a matcher that walks it, and the token masks the sampler
 * applies (worker/sampling.h's allowed).
 *
 *   tsr_grammar          the compiled schema: an immutable graph of nodes (literal sets, string,
 *                        number, object, array, first-byte alternatives), shared by requests
 *   tsr_grammar_matcher  one request's position in it: a stack of frames, fed byte by byte
 *   tsr_grammar_vocab    a tokenizer's vocabulary as byte strings in a trie (built once), so that
 *                        a step's mask walks the trie once and cuts every subtree whose prefix
 *                        the automaton rejects
 *
 * The schema subset (schema.c): type (object, array, string, number, integer, boolean, null, or
 * a list of them), properties, required, additionalProperties, enum, const, items, minItems,
 * maxItems, minLength, maxLength, anyOf/oneOf (alternatives must start with different bytes:
 * a string and null, say, but not two objects), a single-element allOf, and $ref into #/$defs or
 * #/definitions (recursion allowed).  Annotations (title, description, default, examples, ...)
 * are ignored; any other keyword is refused with TSR_ERR_INVALID_ARG naming it.  Objects get
 * their properties in the schema's order, the required ones always, no others.  Whitespace
 * between tokens is one space or a newline plus indentation (at most TSR_GRAMMAR_MAX_WS bytes),
 * none before ':' and at most one space after it, so a model can write compact or pretty JSON
 * but cannot pad forever; numbers are capped at TSR_GRAMMAR_MAX_NUMBER bytes and nesting at TSR_GRAMMAR_MAX_DEPTH. */
#ifndef TSR_GRAMMAR_H
#define TSR_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/status.h"
#include "coordinator/tokenizer.h"

#define TSR_GRAMMAR_MAX_WS 32       /* whitespace bytes in a row between JSON tokens */
#define TSR_GRAMMAR_MAX_NUMBER 24   /* bytes of one number */
#define TSR_GRAMMAR_MAX_DEPTH 32    /* frames: nesting of objects/arrays plus the value inside */

typedef struct tsr_grammar tsr_grammar;
typedef struct tsr_grammar_matcher tsr_grammar_matcher;
typedef struct tsr_grammar_vocab tsr_grammar_vocab;

/* A JSON schema given as text (or NULL / "" for any JSON object: OpenAI's json_object). */
tsr_status tsr_grammar_compile(const char *schema, size_t len, tsr_grammar **out);
tsr_status tsr_grammar_compile_json(const cJSON *schema, tsr_grammar **out);
/* Tool calls: {"name": <one of names>, "arguments": <that function's parameters schema>};
 * params[i] NULL means any JSON object. */
tsr_status tsr_grammar_compile_tool_call(const char *const *names, const cJSON *const *params, int n,
                                         tsr_grammar **out);
/* The same from a JSON array of OpenAI function objects ({"name", "parameters"}). */
tsr_status tsr_grammar_compile_functions(const char *functions, tsr_grammar **out);
void tsr_grammar_free(tsr_grammar *g);

tsr_status tsr_grammar_matcher_new(const tsr_grammar *g, tsr_grammar_matcher **out);
void tsr_grammar_matcher_free(tsr_grammar_matcher *m);
/* Feeds bytes; false (and the matcher unchanged) when the automaton rejects any of them. */
bool tsr_grammar_matcher_feed(tsr_grammar_matcher *m, const char *bytes, size_t n);
/* The bytes so far are one complete value (the output may end here). */
bool tsr_grammar_matcher_can_end(const tsr_grammar_matcher *m);
/* The end token was taken: from now on only end ids are allowed. */
bool tsr_grammar_matcher_ended(const tsr_grammar_matcher *m);

/* A vocabulary of n tokens (the mask's size): bytes[i] (lens[i] bytes) is what token i adds to
 * the text, NULL for tokens never allowed (specials); end_ids may end the output.  Copies. */
tsr_status tsr_grammar_vocab_new(int64_t n, const char *const *bytes, const size_t *lens, const int32_t *end_ids,
                                 int n_end, tsr_grammar_vocab **out);
/* From a tokenizer: ids [0, n) (n >= the tokenizer's vocabulary is the model's, for the mask),
 * special tokens excluded. */
tsr_status tsr_grammar_vocab_from_tokenizer(const tsr_tokenizer *t, int64_t n, const int32_t *end_ids, int n_end,
                                            tsr_grammar_vocab **out);
void tsr_grammar_vocab_free(tsr_grammar_vocab *v);
int64_t tsr_grammar_vocab_size(const tsr_grammar_vocab *v);
/* The tokens allowed next: bit v of mask[v / 64] ((n + 63) / 64 words).  Returns how many. */
int64_t tsr_grammar_fill_mask(const tsr_grammar_vocab *v, tsr_grammar_matcher *m, uint64_t *mask);
/* Advances m by token id: its bytes, or the end when id is an end id and the value is complete.
 * TSR_ERR_INVALID_ARG (m unchanged) when the token is not allowed. */
tsr_status tsr_grammar_accept_token(const tsr_grammar_vocab *v, tsr_grammar_matcher *m, int32_t id);

#endif
