/* Constrained decoding (coordinator/grammar): the schema compiler refuses what it cannot honour
 * (naming the keyword), the automaton accepts valid JSON byte strings of the schema and rejects
 * invalid ones, a token mask equals feeding every token's bytes one by one (tiny and synthetic
 * vocabularies), the sampler never picks a masked token, and the chat front end's tool handling
 * (tools.c) renders tools and history and reads "auto" replies. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/fe.h"
#include "coordinator/grammar/grammar.h"
#include "tests/test_util.h"
#include "worker/sampling.h"

/* 1: the whole text is accepted and complete; 0: rejected or incomplete; -1: no grammar */
static int tsr__accepts(const char *schema, const char *text) {
    tsr_grammar *g = NULL;
    if (tsr_grammar_compile(schema, schema ? strlen(schema) : 0, &g) != TSR_OK) return -1;
    tsr_grammar_matcher *m = NULL;
    CHECK(tsr_grammar_matcher_new(g, &m) == TSR_OK);
    int ok = tsr_grammar_matcher_feed(m, text, strlen(text)) && tsr_grammar_matcher_can_end(m);
    tsr_grammar_matcher_free(m);
    tsr_grammar_free(g);
    return ok;
}

#define YES(s, t) CHECK_MSG(tsr__accepts(s, t) == 1, "should accept %s", t)
#define NO(s, t) CHECK_MSG(tsr__accepts(s, t) == 0, "should reject %s", t)

static void test_json_object(void) {
    YES(NULL, "{}");
    YES(NULL, "{\"a\": [1, 2.5e3, -0.5E-2, true, false, null, \"x\\u00e9\\n\xc3\xa9\"], \"b\": {\"c\": -0}}");
    YES(NULL, " {\"a\":1}\n");
    YES(NULL, "{\n  \"a\": 1,\n  \"b\": [\n    1\n  ]\n}");
    NO(NULL, "{\"a\" :1}");
    NO(NULL, "{\"a\":  1}");
    NO(NULL, "{\"a\":1 \n}");
    NO(NULL, "  {}");
    NO(NULL, "{\"a\":1 ,\"b\":2}");
    NO(NULL, "{\"a\":[1\n,2]}");
    YES(NULL, "{\"a\":{\"b\":{\"c\":[[[]]]}}}");
    NO(NULL, "[]");
    NO(NULL, "\"x\"");
    NO(NULL, "{\"a\":}");
    NO(NULL, "{\"a\":1,}");
    NO(NULL, "{a:1}");
    NO(NULL, "{\"a\":01}");
    NO(NULL, "{\"a\":1.}");
    NO(NULL, "{\"a\":\"\x01\"}");
    NO(NULL, "{\"a\":\"\\x\"}");
    NO(NULL, "{\"a\":\"\xed\xa0\x80\"}");   /* a UTF-16 surrogate in UTF-8 */
    NO(NULL, "{\"a\":1");                   /* incomplete */
    NO(NULL, "{\"a\":1}}");
    NO(NULL, "{\"a\":tru}");
    char pad[64];
    memset(pad, ' ', sizeof pad);
    pad[0] = '\n';
    pad[TSR_GRAMMAR_MAX_WS + 1] = 0;
    char text[128];
    snprintf(text, sizeof text, "{%s}", pad);
    NO(NULL, text);                          /* a whitespace run past the cap */
    pad[TSR_GRAMMAR_MAX_WS] = 0;
    snprintf(text, sizeof text, "{%s}", pad);
    YES(NULL, text);
    /* numbers are capped */
    YES(NULL, "{\"n\":123456789012345678901234}");
    NO(NULL, "{\"n\":1234567890123456789012345}");
}

static const char *tsr__person =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"description\":\"who\"},"
    "\"color\":{\"enum\":[\"red\",\"green\",\"re\"]},\"n\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"color\"],\"additionalProperties\":false}";

static void test_object_schema(void) {
    const char *s = tsr__person;
    YES(s, "{\"name\":\"x\",\"color\":\"red\"}");
    YES(s, "{\"name\": \"x\", \"color\": \"re\", \"n\": -3, \"ok\": true}");
    YES(s, "{\"name\":\"x\",\"color\":\"green\",\"ok\":false}");
    NO(s, "{\"color\":\"red\",\"name\":\"x\"}");         /* the schema's order */
    NO(s, "{\"name\":\"x\"}");                            /* a required property missing */
    NO(s, "{\"name\":\"x\",\"color\":\"blue\"}");
    NO(s, "{\"name\":\"x\",\"color\":\"red\",\"n\":1.5}");
    NO(s, "{\"name\":\"x\",\"color\":\"red\",\"extra\":1}");
    NO(s, "{\"name\":1,\"color\":\"red\"}");
    NO(s, "{\"name\":\"x\",\"color\":\"red\",\"n\":1,\"n\":2}");
}

static void test_arrays_strings_alternatives(void) {
    const char *ints = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":3}";
    YES(ints, "[]");
    YES(ints, "[1, 2,3]");
    NO(ints, "[1,2,3,4]");
    NO(ints, "[1.0]");
    NO(ints, "[\"1\"]");
    const char *some = "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":2,\"minLength\":1},\"minItems\":1}";
    NO(some, "[]");
    YES(some, "[\"ab\",\"\xc3\xa9\",\"\\n\"]");
    NO(some, "[\"abc\"]");
    NO(some, "[\"\"]");
    const char *opt = "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}";
    YES(opt, "\"a\"");
    YES(opt, "null");
    NO(opt, "1");
    const char *types = "{\"type\":[\"integer\",\"boolean\"]}";
    YES(types, "12");
    YES(types, "false");
    NO(types, "\"x\"");
    YES("{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,2]}");
    NO("{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,3]}");
    YES("{\"enum\":[1,12,\"x\"]}", "1");
    YES("{\"enum\":[1,12,\"x\"]}", "12");
    NO("{\"enum\":[1,12,\"x\"]}", "2");
    YES("{\"type\":\"number\"}", "-1.5e+10");
    YES("true", "[{}]");
    /* $defs and recursion */
    const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\",\"kids\"]}},"
                       "\"$ref\":\"#/$defs/node\"}";
    YES(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[]},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}");
    NO(tree, "{\"v\":1,\"kids\":[{\"v\":2}]}");
    /* an object without properties: any keys, values of additionalProperties */
    const char *map = "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}";
    YES(map, "{\"a\":1,\"b\":2}");
    NO(map, "{\"a\":\"x\"}");
    YES("{\"type\":\"object\",\"additionalProperties\":false}", "{}");
    NO("{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}");
}

static void tsr__refused(const char *schema, const char *word) {
    tsr_grammar *g = NULL;
    tsr_status rc = tsr_grammar_compile(schema, strlen(schema), &g);
    CHECK_MSG(rc == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), word), "%s: %s", schema, tsr_last_error());
    tsr_grammar_free(g);
}

static void test_refusals(void) {
    tsr__refused("{\"type\":\"string\",\"pattern\":\"^a$\"}", "'pattern'");
    tsr__refused("{\"type\":\"string\",\"format\":\"date-time\"}", "'format'");
    tsr__refused("{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\",\"minimum\":0}}}", "'minimum'");
    tsr__refused("{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{\"a\":{}}}]}", "anyOf");
    tsr__refused("{\"$ref\":\"#/$defs/missing\"}", "$ref");
    tsr__refused("{\"$ref\":\"https://example.com/s.json\"}", "$ref");
    tsr__refused("{\"type\":\"object\",\"required\":[\"a\"]}", "'a'");
    tsr__refused("{\"type\":\"tuple\"}", "tuple");
    tsr__refused("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "refers to itself");
    tsr__refused("not json", "not valid JSON");
}

static void test_tool_call(void) {
    cJSON *p0 = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    const char *names[2] = {"get_weather", "add"};
    const cJSON *params[2] = {p0, NULL};
    tsr_grammar *g = NULL;
    CHECK(tsr_grammar_compile_tool_call(names, params, 2, &g) == TSR_OK);
    const char *good[] = {"{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}",
                          "{\"name\": \"add\", \"arguments\": {\"x\": 1, \"y\": [2]}}"};
    const char *bad[] = {"{\"name\":\"get_weather\",\"arguments\":{\"x\":1}}",
                         "{\"name\":\"other\",\"arguments\":{}}", "{\"arguments\":{},\"name\":\"add\"}"};
    for (int i = 0; i < 2; i++) {
        tsr_grammar_matcher *m = NULL;
        CHECK(g && tsr_grammar_matcher_new(g, &m) == TSR_OK);
        CHECK_MSG(m && tsr_grammar_matcher_feed(m, good[i], strlen(good[i])) && tsr_grammar_matcher_can_end(m), "%s", good[i]);
        tsr_grammar_matcher_free(m);
    }
    for (int i = 0; i < 3; i++) {
        tsr_grammar_matcher *m = NULL;
        CHECK(g && tsr_grammar_matcher_new(g, &m) == TSR_OK);
        CHECK_MSG(m && !(tsr_grammar_matcher_feed(m, bad[i], strlen(bad[i])) && tsr_grammar_matcher_can_end(m)), "%s", bad[i]);
        tsr_grammar_matcher_free(m);
    }
    tsr_grammar_free(g);
    cJSON_Delete(p0);
}

/* The mask equals feeding each token's bytes to the matcher, at every state along a path. */
static void tsr__check_mask_path(const char *schema, const char *const *toks, int n, int end_id, const int *path,
                                 int n_path) {
    size_t lens[64];
    for (int i = 0; i < n; i++) lens[i] = toks[i] ? strlen(toks[i]) : 0;
    tsr_grammar_vocab *v = NULL;
    CHECK(tsr_grammar_vocab_new(n, toks, lens, &end_id, 1, &v) == TSR_OK);
    tsr_grammar *g = NULL;
    CHECK(tsr_grammar_compile(schema, schema ? strlen(schema) : 0, &g) == TSR_OK);
    tsr_grammar_matcher *m = NULL;
    CHECK(g && tsr_grammar_matcher_new(g, &m) == TSR_OK);
    if (!v || !m) return;
    uint64_t mask[2];
    for (int step = 0; step <= n_path; step++) {
        int64_t count = tsr_grammar_fill_mask(v, m, mask);
        int64_t want = 0;
        for (int t = 0; t < n; t++) {
            bool bit = (mask[t >> 6] >> (t & 63)) & 1;
            bool ok;
            if (t == end_id) {   /* once ended, only the end stays allowed */
                ok = tsr_grammar_matcher_can_end(m) || tsr_grammar_matcher_ended(m);
            } else {
                tsr_grammar_matcher *c = NULL;
                CHECK(tsr_grammar_matcher_new(g, &c) == TSR_OK);
                /* replay the path so far, then this token */
                for (int k = 0; k < step; k++) tsr_grammar_accept_token(v, c, path[k]);
                ok = toks[t] && tsr_grammar_matcher_feed(c, toks[t], lens[t]);
                tsr_grammar_matcher_free(c);
            }
            want += ok;
            CHECK_MSG(bit == ok, "step %d token %d (%s): mask %d, matcher %d", step, t, toks[t] ? toks[t] : "<end>", bit, ok);
        }
        CHECK(count == want);
        if (step < n_path) CHECK(tsr_grammar_accept_token(v, m, path[step]) == TSR_OK);
    }
    CHECK(tsr_grammar_matcher_ended(m));
    tsr_grammar_matcher_free(m);
    tsr_grammar_free(g);
    tsr_grammar_vocab_free(v);
}

static void test_masks(void) {
    /* ids:              0    1    2     3    4       5    6    7    8      9     10   11      12    13 */
    const char *toks[] = {"{", "}", "\"", "a", "\"a\"", ":", " ", "1", "{\"", "}}", "x", NULL, "12}", "1,"};
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}";
    /* {"a": 12}<end> */
    const int path[] = {8, 3, 2, 5, 6, 12, 11};
    tsr__check_mask_path(schema, toks, 14, 11, path, 7);
    const int path2[] = {0, 4, 5, 7, 1, 11};
    tsr__check_mask_path(schema, toks, 14, 11, path2, 6);
    /* a synthetic vocabulary: every string of 1..3 bytes over a JSON-ish alphabet */
    static const char alpha[] = "{}[]\":, a1.-etrunl";
    const int na = (int)sizeof alpha - 1;
    int n = 0;
    static char store[8000][4];
    const char *syn[8000];
    for (int l = 1; l <= 3; l++) {
        int total = l == 1 ? na : l == 2 ? na * na : na * na * na;
        for (int k = 0; k < total && n < 7999; k++) {
            int x = k;
            for (int j = 0; j < l; j++) {
                store[n][j] = alpha[x % na];
                x /= na;
            }
            store[n][l] = 0;
            syn[n] = store[n];
            n++;
        }
    }
    syn[n++] = NULL;   /* the end token */
    size_t *lens = malloc(sizeof *lens * (size_t)n);
    for (int i = 0; i < n; i++) lens[i] = syn[i] ? strlen(syn[i]) : 0;
    int32_t end = n - 1;
    tsr_grammar_vocab *v = NULL;
    CHECK(tsr_grammar_vocab_new(n, syn, lens, &end, 1, &v) == TSR_OK);
    tsr_grammar *g = NULL;
    CHECK(tsr_grammar_compile(NULL, 0, &g) == TSR_OK);
    const char *prefixes[] = {"", "{", "{\"a", "{\"a\":", "{\"a\": [1, tr", "{\"a\": [1.", "{\"a\":[]", "{\"a\":-1}"};
    uint64_t *mask = calloc((size_t)(n + 63) / 64, sizeof *mask);
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        tsr_grammar_matcher *m = NULL;
        CHECK(tsr_grammar_matcher_new(g, &m) == TSR_OK);
        CHECK(tsr_grammar_matcher_feed(m, prefixes[p], strlen(prefixes[p])));
        tsr_grammar_fill_mask(v, m, mask);
        int bad = 0;
        for (int t = 0; t < n; t++) {
            bool bit = (mask[t >> 6] >> (t & 63)) & 1, ok;
            if (t == end) {
                ok = tsr_grammar_matcher_can_end(m);
            } else {
                tsr_grammar_matcher *c = NULL;
                CHECK(tsr_grammar_matcher_new(g, &c) == TSR_OK);
                tsr_grammar_matcher_feed(c, prefixes[p], strlen(prefixes[p]));
                ok = tsr_grammar_matcher_feed(c, syn[t], lens[t]);
                tsr_grammar_matcher_free(c);
            }
            bad += bit != ok;
        }
        CHECK_MSG(bad == 0, "prefix '%s': %d tokens differ", prefixes[p], bad);
        tsr_grammar_matcher_free(m);
    }
    free(mask);
    free(lens);
    tsr_grammar_free(g);
    tsr_grammar_vocab_free(v);
}

/* No dead ends: random walks through allowed tokens of a vocabulary of short strings (spaces,
 * tabs and newlines among them) always find the mask non-empty, and reach the end. */
static void test_no_dead_ends(void) {
    static const char alpha[] = "{}[]\":, \t\nabcdefgklmnorstu1.-+0";   /* spells the keys */
    const int na = (int)sizeof alpha - 1;
    static char store[1300][3];
    const char *voc[1300];
    size_t lens[1300];
    int n = 0;
    for (int i = 0; i < na; i++, n++) store[n][0] = alpha[i], store[n][1] = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < na; j++, n++) store[n][0] = alpha[i], store[n][1] = alpha[j], store[n][2] = 0;
    for (int i = 0; i < n; i++) voc[i] = store[i], lens[i] = strlen(store[i]);
    voc[n] = NULL, lens[n] = 0;
    int32_t end = n++;
    tsr_grammar_vocab *v = NULL;
    CHECK(tsr_grammar_vocab_new(n, voc, lens, &end, 1, &v) == TSR_OK);
    const char *schemas[] = {NULL, tsr__person,
                             "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":\"number\"},"
                             "\"minItems\":2,\"maxItems\":3},\"b\":{\"type\":\"integer\"}},\"required\":[\"a\",\"b\"]}"};
    uint64_t mask[(1300 + 63) / 64];
    uint64_t rng = 12345;
    for (size_t k = 0; k < sizeof schemas / sizeof schemas[0]; k++) {
        tsr_grammar *g = NULL;
        CHECK(tsr_grammar_compile(schemas[k], schemas[k] ? strlen(schemas[k]) : 0, &g) == TSR_OK);
        for (int walk = 0; g && walk < 40; walk++) {
            tsr_grammar_matcher *m = NULL;
            CHECK(tsr_grammar_matcher_new(g, &m) == TSR_OK);
            int steps = 0;
            while (!tsr_grammar_matcher_ended(m) && steps < 400) {
                int64_t cnt = tsr_grammar_fill_mask(v, m, mask);
                CHECK_MSG(cnt > 0, "schema %zu walk %d: an empty mask after %d steps", k, walk, steps);
                if (cnt <= 0) break;
                /* after 150 steps prefer closing tokens so walks end */
                int32_t pick = -1;
                for (int tries = 0; tries < 4 * n && pick < 0; tries++) {
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    int32_t t = (int32_t)((rng >> 33) % (uint64_t)n);
                    if (!((mask[t >> 6] >> (t & 63)) & 1)) continue;
                    if (steps > 150 && t != end && !strpbrk(voc[t], "}]\"0123456789") && tries < 3 * n) continue;
                    pick = t;
                }
                if (pick < 0)
                    for (int32_t t = 0; t < n && pick < 0; t++)
                        if ((mask[t >> 6] >> (t & 63)) & 1) pick = t;
                CHECK(tsr_grammar_accept_token(v, m, pick) == TSR_OK);
                steps++;
            }
            tsr_grammar_matcher_free(m);
        }
        tsr_grammar_free(g);
    }
    tsr_grammar_vocab_free(v);
}

/* The sampler honours the mask, greedy and sampled alike. */
static void test_sampler_mask(void) {
    tsr_sampler *s = NULL;
    CHECK(tsr_sampler_init(100, &s) == TSR_OK);
    uint64_t allowed[2] = {0, 0};
    allowed[70 >> 6] |= 1ull << (70 & 63);
    allowed[3 >> 6] |= 1ull << 3;
    for (int temp = 0; temp < 2; temp++) {
        for (int seed = 0; seed < 20; seed++) {
            float logits[100];
            for (int v = 0; v < 100; v++) logits[v] = (float)(v % 7);
            logits[5] = 50.0f;   /* the model's favourite, masked out */
            tsr_sampling_params p;
            tsr_sampling_params_default(&p);
            p.temperature = temp ? 1.0f : 0.0f;
            p.seed = (uint64_t)seed;
            p.allowed = allowed;
            tsr_sample_history h = {NULL, 0, NULL, 0};
            int32_t t = tsr_sample(s, logits, &p, &h, NULL);
            CHECK_MSG(t == 70 || t == 3, "sampled %d", t);
        }
    }
    tsr_sampler_free(s);
}

/* The chat front end (coordinator/frontend/tools.c): tools go into the system message, tool
 * results and calls in the history are rendered, "auto" replies that are <tool_call> blocks of
 * known functions become tool_calls and anything else stays content. */
static void test_frontend_tools(void) {
    const char *body =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"add 1 and 2\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"add\",\"arguments\":\"{\\\"a\\\": 1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"3\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\"}}}]}";
    tsr__fe_params p;
    tsr__fe_error err;
    CHECK_MSG(tsr__fe_parse(TSR__FE_CHAT, body, strlen(body), &p, &err), "%s", err.message);
    if (p.n_messages != 4) {
        CHECK(p.n_messages == 4);
        return;
    }
    CHECK(p.tool_mode == TSR__FE_TOOLS_AUTO && !p.json_schema);
    CHECK(!strcmp(p.messages[0].role, "system") && strstr(p.messages[0].content, "\"name\":\"add\""));
    CHECK(!strcmp(p.messages[2].role, "assistant") && strstr(p.messages[2].content, "<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1}}"));
    CHECK(!strcmp(p.messages[3].role, "user") && !strcmp(p.messages[3].content, "<tool_response>\n3\n</tool_response>"));
    cJSON *calls = tsr__fe_tool_calls(&p, " <tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>", false);
    cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 0), "function");
    CHECK(cJSON_GetArraySize(calls) == 1 && !strcmp(cJSON_GetObjectItem(f, "name")->valuestring, "add") &&
          !strcmp(cJSON_GetObjectItem(f, "arguments")->valuestring, "{\"a\":1,\"b\":2}"));
    cJSON_Delete(calls);
    CHECK(!tsr__fe_tool_calls(&p, "The answer is 3.", false));
    CHECK(!tsr__fe_tool_calls(&p, "<tool_call>{\"name\": \"sub\", \"arguments\": {}}</tool_call>", false));
    CHECK(tsr__fe_tool_may_start("\n<tool_") && tsr__fe_tool_may_start("") && !tsr__fe_tool_may_start("<tool_x"));
    tsr__fe_params_free(&p);
    const char *forced = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"x\"}],"
                         "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\"}";
    CHECK_MSG(tsr__fe_parse(TSR__FE_CHAT, forced, strlen(forced), &p, &err), "%s", err.message);
    CHECK(p.tool_mode == TSR__FE_TOOLS_FORCED && p.tool_functions && strstr(p.tool_functions, "\"f\""));
    CHECK(p.n_messages == 2 && !strncmp(p.messages[0].content, "Be brief.\n\n# Tools", 18));
    tsr__fe_params_free(&p);
    const char *both = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"},"
                       "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}";
    CHECK(!tsr__fe_parse(TSR__FE_CHAT, both, strlen(both), &p, &err) && !strcmp(err.param, "response_format"));
    const char *compl = "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}";   /* chat only */
    CHECK(!tsr__fe_parse(TSR__FE_COMPLETION, compl, strlen(compl), &p, &err) && !strcmp(err.code, "unsupported_parameter"));
}

int main(void) {
    test_json_object();
    test_object_schema();
    test_arrays_strings_alternatives();
    test_refusals();
    test_tool_call();
    test_masks();
    test_no_dead_ends();
    test_sampler_mask();
    test_frontend_tools();
    return tsr_test_finish();
}
