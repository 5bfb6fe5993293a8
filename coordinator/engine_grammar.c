/* Constrained decoding in the engine (coordinator/grammar): a request with a JSON schema or
 * tool functions gets a compiled grammar at submit (a refusal names the keyword), a matcher when
 * it starts, and before each step that samples it, the mask of the tokens that keep its output
 * valid (sampling.h's allowed; the worker then samples that row on the host).  The sampled token
 * advances the matcher.  The vocabulary's trie is built once, on the first such request, on the
 * step thread (rank 0: the only rank that samples). */
#include "coordinator/engine_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

tsr_status tsr__engine_grammar_compile(const tsr_engine_request *rq, tsr__req *r) {
    if (rq->json_schema && rq->tool_functions)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "give a JSON schema or tool functions, not both");
    if (!rq->json_schema && !rq->tool_functions) return TSR_OK;
    if (rq->ignore_eos)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "ignore_eos cannot be combined with structured output (the output "
                          "ends when its JSON value is complete)");
    if (rq->sampling.min_tokens > 0)   /* it could ban the end when nothing else is allowed */
        return tsr_errorf(TSR_ERR_INVALID_ARG, "min_tokens cannot be combined with structured output (the output "
                          "ends when its JSON value is complete)");
    if (rq->json_schema) return tsr_grammar_compile(rq->json_schema, strlen(rq->json_schema), &r->grammar);
    return tsr_grammar_compile_functions(rq->tool_functions, &r->grammar);
}

tsr_status tsr__engine_grammar_start(tsr_engine *e, tsr__req *r) {
    if (!r->grammar) return TSR_OK;
    if (!e->tok) return tsr_errorf(TSR_ERR_UNSUPPORTED, "structured output needs the model's tokenizer");
    if (!e->gvocab) {
        int32_t ends[TSR__MAX_EOS + 8];
        int n = 0;
        for (int i = 0; i < e->n_eos; i++) ends[n++] = e->eos[i];
        for (int i = 0; i < e->n_tmpl_stop_ids; i++) ends[n++] = e->tmpl_stop_ids[i];
        double t0 = tsr_now();
        TSR_TRY(tsr_grammar_vocab_from_tokenizer(e->tok, e->vocab, ends, n, &e->gvocab));
        TSR_LOGI("engine: the vocabulary's trie for structured output built in %.0f ms", (tsr_now() - t0) * 1e3);
    }
    TSR_TRY(tsr_grammar_matcher_new(r->grammar, &r->gm));
    r->gmask = malloc(sizeof *r->gmask * (size_t)((e->vocab + 63) / 64));
    if (!r->gmask) return tsr_errorf(TSR_ERR_OOM, "out of memory for a token mask");
    return TSR_OK;
}

/* The end ids the vocabulary knows are EOS and the template's end-of-turn ids; a request stops on
 * the latter only when it is a chat, so for others they are taken out of the mask. */
static bool tsr__stops_on(const tsr_engine *e, const tsr__req *r, int32_t id) {
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == id) return true;
    return r->is_chat;
}

void tsr__engine_grammar_mask(tsr_engine *e, tsr__req *r) {
    if (!r->gm) return;
    int64_t n = tsr_grammar_fill_mask(e->gvocab, r->gm, r->gmask);
    for (int i = 0; i < e->n_tmpl_stop_ids; i++) {
        int32_t id = e->tmpl_stop_ids[i];
        if (!tsr__stops_on(e, r, id) && ((r->gmask[id >> 6] >> (id & 63)) & 1)) {
            r->gmask[id >> 6] &= ~(1ull << (id & 63));
            n--;
        }
    }
    if (n <= 0) {   /* nothing continues the value (out of memory for the walk): let it end */
        for (int i = 0; i < e->n_eos; i++) r->gmask[e->eos[i] >> 6] |= 1ull << (e->eos[i] & 63);
    }
    r->sp.allowed = r->gmask;
}

tsr_status tsr__engine_grammar_accept(tsr_engine *e, tsr__req *r, int32_t tok) {
    if (!r->gm) return TSR_OK;
    return tsr_grammar_accept_token(e->gvocab, r->gm, tok);
}

void tsr__engine_grammar_free(tsr__req *r) {
    tsr_grammar_matcher_free(r->gm);
    tsr_grammar_free(r->grammar);
    free(r->gmask);
    r->gm = NULL;
    r->grammar = NULL;
    r->gmask = NULL;
}
