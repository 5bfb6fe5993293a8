/* The single-process generation loop (see generator.h): prefill, then sample -> detokenize ->
 * stop check -> stream -> feed, one token at a time, on one sequence of the KV pool.
 *
 * History and KV: s->ids holds every token of the session; the KV covers the first
 * s->kv.n_tokens of them, and at most one more (the last sampled token) is pending.  The next
 * call feeds the pending token together with its new ones, so nothing is ever computed twice.
 *
 * Chat turns: s->kv_text is the text the history stands for (the rendered prompts that were
 * fed, plus the generated tokens decoded with their special tokens).  A new turn renders the
 * whole conversation; if that starts with kv_text, only the rest is encoded and prefilled.
 * Otherwise (a template that strips answers, a SentencePiece leading space, ...) the session
 * re-prefills the whole conversation: slower, never wrong. */
#include "coordinator/generator.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/block_manager.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/model.h"
#include "worker/runtime.h"
#include "worker/weights.h"

#define TSR__DEFAULT_SESSION_LEN 4096

struct tsr_generator {
    tsr_runtime rt;            /* group, backend, this rank's shard, KV pool, forward state */
    tsr_model *model;          /* rt.model */
    tsr_kv_pool *kv;           /* &rt.kv */
    tsr_block_manager *bm;     /* rt.kv's block ids (the generator is the pool's only user) */
    tsr_forward_state *fs;     /* rt.fs: on rank 0 every step is broadcast to the workers */
    tsr_tokenizer *tok;
    tsr_chat_template *tmpl;
    int64_t vocab;             /* the model's (logit rows) */
    int64_t tok_vocab;         /* the tokenizer's; ids past it are masked out */
    int64_t session_len;
    int32_t eos[10];
    int n_eos;
    /* template stop words: single special tokens become stop ids, the rest stop strings */
    int32_t tmpl_stop_ids[8];
    int n_tmpl_stop_ids;
    const char *tmpl_stop_strs[8];
    int n_tmpl_stop_strs;
    char tok_error[512];       /* why there is no tokenizer (tok == NULL) */
};

struct tsr_session {
    tsr_generator *g;
    tsr_kv_seq kv;
    int32_t *ids;
    int64_t n_ids, cap_ids;
    /* chat */
    tsr_chat_message *msgs;    /* owned role/content strings */
    int64_t n_msgs, cap_msgs;
    char *kv_text;
    size_t n_kv_text, cap_kv_text;
    bool text_valid;           /* kv_text describes ids (false after raw-id generation) */
};

/* ---- small buffers ---- */

static bool tsr__grow(void **buf, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *b = realloc(*buf, (size_t)c * elem);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

static tsr_status tsr__append_text(char **buf, size_t *n, size_t *cap, const char *t, size_t len) {
    int64_t c = (int64_t)*cap;
    if (!tsr__grow((void **)buf, &c, (int64_t)(*n + len + 1), 1)) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    *cap = (size_t)c;
    memcpy(*buf + *n, t, len);
    *n += len;
    (*buf)[*n] = '\0';
    return TSR_OK;
}

/* ---- the generator ---- */

tsr_status tsr_generator_open(const tsr_gen_config *cfg, tsr_generator **out) {
    *out = NULL;
    if (!cfg || !cfg->model_path) return tsr_errorf(TSR_ERR_INVALID_ARG, "no model path given");
    if (!tsr_path_exists(cfg->model_path))
        return tsr_errorf(TSR_ERR_NOT_FOUND, "model '%s' does not exist (a .gguf file or an HF directory)",
                          cfg->model_path);
    /* the session length decides the KV pool, so read the config before starting the group */
    tsr_model_config pre;
    TSR_TRY(tsr_model_config_load(cfg->model_path, &pre));
    int64_t max_pos = pre.max_position_embeddings > 0 ? pre.max_position_embeddings : TSR__DEFAULT_SESSION_LEN;
    int64_t session_len = cfg->session_len > 0 ? cfg->session_len
                          : (max_pos < TSR__DEFAULT_SESSION_LEN ? max_pos : TSR__DEFAULT_SESSION_LEN);
    const int64_t block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    int64_t n_blocks = (session_len + block_len - 1) / block_len;

    tsr_generator *g = calloc(1, sizeof *g);
    if (!g) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    tsr_status rc = TSR_OK;
    tsr_runtime_opts ro;
    tsr_runtime_opts_default(&ro);
    ro.model_path = cfg->model_path;
    ro.backend = cfg->backend ? cfg->backend : "auto";
    ro.tp = cfg->tp;
    ro.threads = cfg->n_threads;
    ro.block_len = block_len;
    ro.cache_max_entry_count = (double)n_blocks;
    ro.session_len = session_len;
    ro.progress = cfg->progress;
    ro.load_format = cfg->load_format;
    rc = tsr_runtime_open(&g->rt, &ro, NULL, NULL);
    if (rc != TSR_OK) {
        free(g);
        return rc;
    }
    if (g->rt.group.rank != 0) {
        /* a worker: replay rank 0's steps until it closes its generator */
        int code = tsr_runtime_worker_main(&g->rt);
        free(g);
        return code == 0 ? TSR_OK : tsr_errorf(TSR_ERR_COMM, "worker step loop failed");
    }
    g->model = g->rt.model;
    g->kv = &g->rt.kv;
    g->fs = g->rt.fs;
    if ((rc = tsr_bm_init(g->kv->n_blocks, g->kv->layout.block_len, &g->bm)) != TSR_OK) goto fail;
    /* A model without a tokenizer (the golden tests' tiny checkpoints) still generates from
     * ids to ids; text in or out then fails with this reason. */
    if (tsr_tokenizer_load_model(cfg->model_path, &g->tok) != TSR_OK) {
        snprintf(g->tok_error, sizeof g->tok_error, "%s", tsr_last_error());
        TSR_LOGW("no tokenizer for %s (%s): token ids in and out only", cfg->model_path, g->tok_error);
        g->tok = NULL;
    }
    const tsr_model_config *mc = &g->model->cfg;
    if (cfg->chat_template) rc = tsr_chat_template_load(cfg->chat_template, &g->tmpl);
    else rc = tsr_chat_template_detect(g->tok ? tsr_tokenizer_chat_template(g->tok) : NULL, mc->model_name, &g->tmpl);
    if (rc != TSR_OK) {
        rc = tsr_error_wrap(rc, "chat template");
        goto fail;
    }
    g->vocab = mc->vocab_size;
    g->tok_vocab = g->tok ? tsr_tokenizer_vocab_size(g->tok) : g->vocab;
    if (g->tok_vocab <= 0 || g->tok_vocab > g->vocab) g->tok_vocab = g->vocab;

    g->session_len = session_len;
    if (g->session_len > max_pos)
        TSR_LOGW("session length %lld is past the model's %lld trained positions", (long long)g->session_len,
                 (long long)max_pos);

    /* Stop ids: the config's EOS ids and the tokenizer's. */
    int32_t cand[10];
    int nc = 0;
    cand[nc++] = mc->eos_id;
    for (int i = 0; i < mc->n_extra_eos && nc < 9; i++) cand[nc++] = mc->extra_eos[i];
    cand[nc++] = g->tok ? tsr_tokenizer_eos_id(g->tok) : -1;
    for (int i = 0; i < nc; i++) {
        bool dup = cand[i] < 0 || cand[i] >= g->vocab;
        for (int j = 0; j < g->n_eos && !dup; j++) dup = g->eos[j] == cand[i];
        if (!dup) g->eos[g->n_eos++] = cand[i];
    }
    const char *const *sw = tsr_chat_template_stop_words(g->tmpl);
    for (int i = 0; sw && sw[i]; i++) {
        int32_t id = g->tok ? tsr_tokenizer_token_to_id(g->tok, sw[i]) : -1;
        if (id >= 0 && id < g->vocab && tsr_tokenizer_is_special(g->tok, id)) {
            if (g->n_tmpl_stop_ids < 8) g->tmpl_stop_ids[g->n_tmpl_stop_ids++] = id;
        } else if (g->n_tmpl_stop_strs < 8) {
            g->tmpl_stop_strs[g->n_tmpl_stop_strs++] = sw[i];
        }
    }
    TSR_LOGD("generator: vocab %lld (tokenizer %lld), session_len %lld, %lld KV blocks, chat template %s",
             (long long)g->vocab, (long long)g->tok_vocab, (long long)g->session_len, (long long)n_blocks,
             tsr_chat_template_name(g->tmpl));
    *out = g;
    return TSR_OK;
fail:
    tsr_generator_close(g);
    return rc;
}

void tsr_generator_close(tsr_generator *g) {
    if (!g) return;
    tsr_chat_template_free(g->tmpl);
    if (g->tok) tsr_tokenizer_free(g->tok);
    tsr_bm_free(g->bm);
    tsr_runtime_close(&g->rt);   /* rank 0: also stops the workers */
    free(g);
}

const tsr_tokenizer *tsr_generator_tokenizer(const tsr_generator *g) { return g->tok; }
const tsr_chat_template *tsr_generator_chat_template(const tsr_generator *g) { return g->tmpl; }
int64_t tsr_generator_vocab_size(const tsr_generator *g) { return g->tok_vocab; }
int64_t tsr_generator_session_len(const tsr_generator *g) { return g->session_len; }
size_t tsr_generator_weight_bytes(const tsr_generator *g) { return g->model->weight_bytes; }

void tsr_gen_request_default(tsr_gen_request *r) {
    memset(r, 0, sizeof *r);
    r->max_new_tokens = 128;
    tsr_sampling_params_default(&r->sampling);
    r->skip_special = true;
}

void tsr_gen_stats_free(tsr_gen_stats *st) {
    if (!st) return;
    free(st->ids);
    free(st->text);
    st->ids = NULL;
    st->text = NULL;
}

/* ---- sessions ---- */

tsr_status tsr_session_new(tsr_generator *g, tsr_session **out) {
    tsr_session *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "out of memory");
    s->g = g;
    s->text_valid = true;
    *out = s;
    return TSR_OK;
}

static void tsr__free_msgs(tsr_session *s) {
    for (int64_t i = 0; i < s->n_msgs; i++) {
        free((void *)s->msgs[i].role);
        free((void *)s->msgs[i].content);
    }
    s->n_msgs = 0;
}

void tsr_session_reset(tsr_session *s) {
    tsr_bm_seq_release(s->g->bm, &s->kv);
    memset(&s->kv, 0, sizeof s->kv);
    s->n_ids = 0;
    tsr__free_msgs(s);
    s->n_kv_text = 0;
    if (s->kv_text) s->kv_text[0] = '\0';
    s->text_valid = true;
}

void tsr_session_free(tsr_session *s) {
    if (!s) return;
    tsr_session_reset(s);
    free(s->ids);
    free(s->msgs);
    free(s->kv_text);
    free(s);
}

int64_t tsr_session_n_tokens(const tsr_session *s) { return s->n_ids; }

static tsr_status tsr__room_check(const tsr_session *s, int64_t n_hist, int64_t n_new) {
    const int64_t L = s->g->session_len;
    if (n_hist + n_new + 1 > L) {
        if (n_hist > 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "this turn needs %lld new tokens but the session already holds %lld of its %lld "
                              "(session_len): no room to answer. Start over (/reset) or use a larger --session-len",
                              (long long)n_new, (long long)n_hist, (long long)L);
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "the prompt has %lld tokens, which leaves no room to generate within session_len %lld; "
                          "use a shorter prompt or a larger --session-len",
                          (long long)n_new, (long long)L);
    }
    return TSR_OK;
}

/* Releases text through the stop matcher and the callback; collects it in st->text. */
typedef struct {
    tsr_stop stop;
    tsr_gen_stats *st;
    size_t cap_text;
    const tsr_gen_request *req;
} tsr__run;

static bool tsr__emit(tsr__run *r, int32_t id, int64_t index, const char *text, size_t len,
                      const tsr_sample_result *sr) {
    if (len) TSR_ASSERT(tsr__append_text(&r->st->text, &r->st->text_len, &r->cap_text, text, len) == TSR_OK);
    if (!r->req->on_token) return true;
    tsr_gen_token t = {id, index, len ? text : "", len, sr};
    return r->req->on_token(r->req->user, &t);
}

tsr_status tsr_session_generate(tsr_session *s, const int32_t *new_ids, int64_t n_new, const tsr_gen_request *req,
                                tsr_gen_stats *st) {
    tsr_generator *g = s->g;
    memset(st, 0, sizeof *st);
    if (req->max_new_tokens <= 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "max_new_tokens must be positive (got %lld)",
                          (long long)req->max_new_tokens);
    TSR_TRY(tsr_sampling_params_validate(&req->sampling));
    for (int64_t i = 0; i < n_new; i++)
        if (new_ids[i] < 0 || new_ids[i] >= g->tok_vocab)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "prompt token id %d is outside the vocabulary (%lld)",
                              new_ids[i], (long long)g->tok_vocab);
    if (s->n_ids == 0 && n_new == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "the prompt is empty");
    if (!g->tok && req->n_stop > 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "stop strings need a tokenizer, and this model has none (%s)",
                          g->tok_error);
    TSR_TRY(tsr__room_check(s, s->n_ids, n_new));

    tsr__run r;
    memset(&r, 0, sizeof r);
    r.st = st;
    r.req = req;
    TSR_TRY(tsr_stop_init(&r.stop, g->eos, g->n_eos, req->ignore_eos, req->stop_ids, req->n_stop_ids, req->stop,
                          req->n_stop));
    st->text = calloc(1, 1);
    r.cap_text = 1;
    const int64_t old_n_ids = s->n_ids, old_fed = s->kv.n_tokens;
    const int64_t max_gen_room = g->session_len - (s->n_ids + n_new);
    const int64_t max_gen = req->max_new_tokens < max_gen_room ? req->max_new_tokens : max_gen_room;
    if (!st->text || !tsr__grow((void **)&s->ids, &s->cap_ids, s->n_ids + n_new + max_gen, sizeof *s->ids) ||
        !(st->ids = malloc((size_t)max_gen * sizeof *st->ids))) {
        tsr_stop_free(&r.stop);
        tsr_gen_stats_free(st);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    if (n_new) memcpy(s->ids + s->n_ids, new_ids, (size_t)n_new * sizeof *new_ids);
    s->n_ids += n_new;

    /* Prefill: the pending token of the last call and the new ones. */
    st->n_cached = s->kv.n_tokens;
    st->n_prefill = s->n_ids - s->kv.n_tokens;
    double t0 = tsr_now();
    /* Prefill, then sample the first token (on the device where the backend can). */
    const int64_t n_prompt = s->n_ids;
    tsr_sample_result sr;
    const bool want_lp = req->sampling.logprobs >= 0;
    int32_t tok = -1;
    tsr_seq_sample smp = {&req->sampling, {s->ids, n_prompt, s->ids + n_prompt, 0}};
    tsr_status rc = tsr_bm_seq_reserve(g->bm, &s->kv, s->n_ids);
    if (rc == TSR_OK)
        rc = tsr_forward_seq_sample(g->fs, g->kv, &s->kv, s->ids + s->kv.n_tokens, st->n_prefill, 0, &smp, g->tok_vocab,
                                    &tok, want_lp ? &sr : NULL);
    if (rc != TSR_OK) {
        tsr_bm_seq_truncate(g->bm, &s->kv, old_fed);
        s->n_ids = old_n_ids;
        tsr_stop_free(&r.stop);
        tsr_gen_stats_free(st);
        return tsr_error_wrap(rc, "prefill of %lld tokens", (long long)st->n_prefill);
    }

    s->text_valid = false;   /* tsr_session_chat re-validates what it generated */
    tsr_detok d;
    memset(&d, 0, sizeof d);
    if (g->tok) tsr_detok_init(&d, g->tok, req->skip_special);
    double t1 = t0;
    tsr_finish_reason fin = TSR_FINISH_NONE;
    bool stop_string = false;
    for (int64_t i = 0; fin == TSR_FINISH_NONE; i++) {
        s->ids[s->n_ids++] = tok;   /* pending: its KV comes with the next feed */
        st->ids[st->n_generated++] = tok;
        if (i == 0) {
            t1 = tsr_now();
            st->prefill_s = t1 - t0;
        }
        bool go_on = true;
        if (tsr_stop_is_stop_id(&r.stop, tok)) {
            fin = TSR_FINISH_STOP;
            go_on = tsr__emit(&r, tok, i, "", 0, want_lp ? &sr : NULL);
        } else {
            char *piece = NULL;
            size_t plen = 0;
            if (g->tok) rc = tsr_detok_push(&d, tok, &piece, &plen);
            if (rc != TSR_OK) {
                fin = TSR_FINISH_ERROR;
                break;
            }
            const char *e;
            size_t elen;
            if (tsr_stop_push(&r.stop, piece ? piece : "", plen, &e, &elen)) {
                fin = TSR_FINISH_STOP;
                stop_string = true;
            }
            free(piece);
            go_on = tsr__emit(&r, tok, i, e, elen, want_lp ? &sr : NULL);
        }
        if (!go_on && fin == TSR_FINISH_NONE) fin = TSR_FINISH_CANCELLED;
        if (fin == TSR_FINISH_NONE && st->n_generated >= max_gen) fin = TSR_FINISH_LENGTH;
        if (fin != TSR_FINISH_NONE) break;
        /* feed the token and sample the next one (history: the outputs so far, i + 1 of them) */
        smp.hist.n_output = i + 1;
        int32_t fed = tok;
        rc = tsr_bm_seq_reserve(g->bm, &s->kv, s->kv.n_tokens + 1);
        if (rc == TSR_OK)
            rc = tsr_forward_seq_sample(g->fs, g->kv, &s->kv, &fed, 1, 0, &smp, g->tok_vocab, &tok,
                                        want_lp ? &sr : NULL);
        if (rc != TSR_OK) {
            fin = TSR_FINISH_ERROR;
            break;
        }
    }
    if (fin != TSR_FINISH_ERROR && !stop_string) {
        /* Whatever the detokenizer and the stop matcher still hold is final now; the
         * detokenizer's last bytes may even complete a stop string. */
        char *rest = NULL, *tail = NULL;
        size_t rlen = 0, tlen = 0, tcap = 0;
        if (!g->tok || tsr_detok_finish(&d, &rest, &rlen) == TSR_OK) {
            const char *e;
            size_t elen;
            bool matched = tsr_stop_push(&r.stop, rest ? rest : "", rlen, &e, &elen);
            TSR_ASSERT(tsr__append_text(&tail, &tlen, &tcap, e, elen) == TSR_OK);
            if (matched) {
                fin = TSR_FINISH_STOP;
            } else {
                tsr_stop_flush(&r.stop, &e, &elen);
                TSR_ASSERT(tsr__append_text(&tail, &tlen, &tcap, e, elen) == TSR_OK);
            }
            tsr__emit(&r, -1, st->n_generated, tail ? tail : "", tlen, NULL);
        }
        free(rest);
        free(tail);
    }
    st->decode_s = tsr_now() - t1;
    st->finish = fin;
    tsr_stop_free(&r.stop);
    if (fin == TSR_FINISH_ERROR) {
        s->text_valid = false;
        return tsr_error_wrap(rc != TSR_OK ? rc : TSR_ERR_INTERNAL, "generation stopped after %lld tokens",
                              (long long)st->n_generated);
    }
    return TSR_OK;
}

tsr_status tsr_session_generate_text(tsr_session *s, const char *text, const tsr_gen_request *req, tsr_gen_stats *st) {
    int32_t *ids = NULL;
    int64_t n = 0;
    memset(st, 0, sizeof *st);
    if (!s->g->tok)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "a text prompt needs a tokenizer, and this model has none (%s); "
                          "give token ids instead", s->g->tok_error);
    TSR_TRY(tsr_tokenizer_encode(s->g->tok, text, strlen(text), s->n_ids == 0, true, &ids, &n));
    tsr_status rc = tsr_session_generate(s, ids, n, req, st);
    free(ids);
    return rc;
}

/* ---- chat ---- */

static tsr_status tsr__push_msg(tsr_session *s, const char *role, const char *content, size_t len) {
    if (!tsr__grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof *s->msgs))
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    char *r = strdup(role), *c = malloc(len + 1);
    if (!r || !c) {
        free(r);
        free(c);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    memcpy(c, content, len);
    c[len] = 0;
    s->msgs[s->n_msgs].role = r;
    s->msgs[s->n_msgs].content = c;
    s->n_msgs++;
    return TSR_OK;
}

static void tsr__pop_msgs(tsr_session *s, int64_t keep) {
    while (s->n_msgs > keep) {
        s->n_msgs--;
        free((void *)s->msgs[s->n_msgs].role);
        free((void *)s->msgs[s->n_msgs].content);
    }
}

tsr_status tsr_session_chat(tsr_session *s, const char *system, const char *content, const tsr_gen_request *req,
                            tsr_gen_stats *st) {
    tsr_generator *g = s->g;
    memset(st, 0, sizeof *st);
    if (!g->tok)
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "chat needs a tokenizer, and this model has none (%s)", g->tok_error);
    const int64_t old_msgs = s->n_msgs;
    tsr_status rc = TSR_OK;
    char *full = NULL;
    int32_t *ids = NULL, *stop_ids = NULL;
    const char **stops = NULL;
    int64_t n_ids = 0;
    if (s->n_msgs == 0 && system) TSR_TRY(tsr__push_msg(s, "system", system, strlen(system)));
    rc = tsr__push_msg(s, "user", content, strlen(content));
    if (rc != TSR_OK) goto fail;
    rc = tsr_chat_template_render(g->tmpl, s->msgs, (size_t)s->n_msgs, true, &full);
    if (rc != TSR_OK) goto fail;
    const size_t full_len = strlen(full);
    bool incremental = s->n_ids > 0 && s->text_valid && s->n_kv_text <= full_len &&
                       !memcmp(full, s->kv_text, s->n_kv_text);
    if (s->n_ids > 0 && !incremental)
        TSR_LOGD("chat: the template does not extend the session's text; re-prefilling the conversation");
    const char *new_text = incremental ? full + s->n_kv_text : full;
    rc = tsr_tokenizer_encode(g->tok, new_text, strlen(new_text), false, true, &ids, &n_ids);
    if (rc != TSR_OK) goto fail;
    rc = tsr__room_check(s, incremental ? s->n_ids : 0, n_ids);
    if (rc != TSR_OK) goto fail;
    if (n_ids == 0 && (!incremental || s->n_ids == 0)) {
        rc = tsr_errorf(TSR_ERR_INVALID_ARG, "the rendered chat prompt is empty");
        goto fail;
    }

    /* The template's stop words join the request's. */
    tsr_gen_request r2 = *req;
    stop_ids = malloc((size_t)(req->n_stop_ids + g->n_tmpl_stop_ids + 1) * sizeof *stop_ids);
    stops = malloc((size_t)(req->n_stop + g->n_tmpl_stop_strs + 1) * sizeof *stops);
    if (!stop_ids || !stops) {
        rc = tsr_errorf(TSR_ERR_OOM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < req->n_stop_ids; i++) stop_ids[i] = req->stop_ids[i];
    for (int i = 0; i < g->n_tmpl_stop_ids; i++) stop_ids[req->n_stop_ids + i] = g->tmpl_stop_ids[i];
    for (int i = 0; i < req->n_stop; i++) stops[i] = req->stop[i];
    for (int i = 0; i < g->n_tmpl_stop_strs; i++) stops[req->n_stop + i] = g->tmpl_stop_strs[i];
    r2.stop_ids = stop_ids;
    r2.n_stop_ids = req->n_stop_ids + g->n_tmpl_stop_ids;
    r2.stop = stops;
    r2.n_stop = req->n_stop + g->n_tmpl_stop_strs;

    if (!incremental && s->n_ids > 0) {   /* start the KV over, keep the conversation */
        tsr_bm_seq_release(g->bm, &s->kv);
        memset(&s->kv, 0, sizeof s->kv);
        s->n_ids = 0;
    }
    if (!incremental) s->n_kv_text = 0;
    rc = tsr_session_generate(s, ids, n_ids, &r2, st);
    if (rc != TSR_OK) {
        if (s->n_ids == 0 || st->n_generated == 0) goto fail;   /* nothing happened to the session */
        s->text_valid = false;
        goto out;
    }
    /* The KV now stands for new_text + the generated tokens (special ones included). */
    char *gen_text = NULL;
    size_t gen_len = 0;
    rc = tsr_tokenizer_decode(g->tok, st->ids, st->n_generated, false, &gen_text, &gen_len);
    if (rc == TSR_OK) {
        size_t cap = s->cap_kv_text;
        rc = tsr__append_text(&s->kv_text, &s->n_kv_text, &cap, new_text, strlen(new_text));
        if (rc == TSR_OK) rc = tsr__append_text(&s->kv_text, &s->n_kv_text, &cap, gen_text, gen_len);
        s->cap_kv_text = cap;
        /* The answer as the conversation holds it: everything generated but a final stop id. */
        int64_t n_ans = st->n_generated;
        if (st->finish == TSR_FINISH_STOP && n_ans > 0) {
            bool is_stop_id = false;
            for (int i = 0; i < r2.n_stop_ids; i++) is_stop_id |= st->ids[n_ans - 1] == r2.stop_ids[i];
            for (int i = 0; i < g->n_eos && !req->ignore_eos; i++) is_stop_id |= st->ids[n_ans - 1] == g->eos[i];
            if (is_stop_id) n_ans--;
        }
        char *ans = NULL;
        size_t ans_len = 0;
        if (rc == TSR_OK) rc = tsr_tokenizer_decode(g->tok, st->ids, n_ans, false, &ans, &ans_len);
        if (rc == TSR_OK) rc = tsr__push_msg(s, "assistant", ans, ans_len);
        free(ans);
    }
    free(gen_text);
    s->text_valid = rc == TSR_OK;
    rc = TSR_OK;   /* the answer was delivered; a bookkeeping failure only costs the next turn a re-prefill */
    goto out;
fail:
    tsr__pop_msgs(s, old_msgs);
out:
    free(full);
    free(ids);
    free(stop_ids);
    free(stops);
    return rc;
}
