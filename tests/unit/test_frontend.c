/* The server's pure parts (coordinator/frontend/fe.h), without sockets or a model: OpenAI
 * request bodies validated into engine requests (every parameter out of range and of the wrong
 * type rejected with its name as OpenAI's "param"), the error object's shape, UTF-8 checks, the
 * constant-time key compare, gRPC message framing fed hostile lengths, streamed chunks in OpenAI's
 * shapes with their SSE framing, and /metrics text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/grpc_frame.h"
#include "coordinator/frontend/fe.h"
#include "coordinator/frontend/http_conn.h"
#include "tests/test_util.h"

static const char *CHAT_MSGS = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";

/* Parses {CHAT_MSGS, extra} (or {extra} for completions with a prompt) for kind; returns ok. */
static bool parse_with(tsr__fe_kind kind, const char *extra, tsr__fe_params *p, tsr__fe_error *e) {
    char body[4096];
    const char *base = kind == TSR__FE_CHAT ? CHAT_MSGS : "\"prompt\":\"hello\"";
    snprintf(body, sizeof body, "{%s%s%s}", base, extra[0] ? "," : "", extra);
    memset(e, 0, sizeof *e);
    return tsr__fe_parse(kind, body, strlen(body), p, e);
}

/* The body must be rejected with HTTP 400 naming param (NULL: no param). */
static void expect_bad(tsr__fe_kind kind, const char *extra, const char *param) {
    tsr__fe_params p;
    tsr__fe_error e;
    bool ok = parse_with(kind, extra, &p, &e);
    CHECK_MSG(!ok, "accepted: %s", extra);
    if (ok) {
        tsr__fe_params_free(&p);
        return;
    }
    CHECK_MSG(e.status == 400, "%s: status %d", extra, e.status);
    CHECK_MSG(e.message[0], "%s: empty message", extra);
    if (param) CHECK_MSG(e.param && !strcmp(e.param, param), "%s: param %s, want %s", extra, e.param ? e.param : "null", param);
    else CHECK_MSG(!e.param, "%s: param %s, want null", extra, e.param);
}

static void expect_ok(tsr__fe_kind kind, const char *extra) {
    tsr__fe_params p;
    tsr__fe_error e;
    bool ok = parse_with(kind, extra, &p, &e);
    CHECK_MSG(ok, "rejected: %s (%s)", extra, e.message);
    if (ok) tsr__fe_params_free(&p);
}

static void test_valid_chat_to_engine(void) {
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
        "\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"repetition_penalty\":1.1,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"seed\":42,\"stop\":[\"x\",\"yz\"],\"n\":3,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true,\"top_logprobs\":2,"
        "\"ignore_eos\":true,\"user\":\"u\",\"unknown_field\":{\"ignored\":1}}";
    tsr__fe_params p;
    tsr__fe_error e;
    CHECK(tsr__fe_parse(TSR__FE_CHAT, body, strlen(body), &p, &e));
    CHECK(p.model && !strcmp(p.model, "m"));
    CHECK(p.n_messages == 2);
    CHECK(!strcmp(p.messages[0].role, "system"));   /* developer is OpenAI's new name for system */
    CHECK(!strcmp(p.messages[1].content, "ab"));     /* text parts joined */
    CHECK(p.max_tokens == 7 && p.n == 3 && p.stream && p.include_usage && p.ignore_eos);
    CHECK(p.n_stop == 2 && !strcmp(p.stop[1], "yz"));
    CHECK(p.logprobs == 2);
    tsr_engine_request r;
    tsr__fe_to_engine(&p, 2, &r);
    CHECK(r.messages == p.messages && r.n_messages == 2);
    CHECK(r.max_new_tokens == 7);
    CHECK_NEAR(r.sampling.temperature, 0.5, 1e-6);
    CHECK_NEAR(r.sampling.top_p, 0.9, 1e-6);
    CHECK(r.sampling.top_k == 40);
    CHECK_NEAR(r.sampling.min_p, 0.05, 1e-6);
    CHECK_NEAR(r.sampling.repetition_penalty, 1.1, 1e-6);
    CHECK_NEAR(r.sampling.presence_penalty, 0.5, 1e-6);
    CHECK_NEAR(r.sampling.frequency_penalty, -0.5, 1e-6);
    CHECK(r.sampling.seed == 44);   /* choice i gets seed + i, so n choices differ but reproduce */
    CHECK(r.sampling.logprobs == 2);
    CHECK(r.n_stop == 2 && r.ignore_eos);
    tsr__fe_params_free(&p);

    /* completions: token-id prompts, default max_tokens 16, legacy logprobs */
    const char *c = "{\"prompt\":[1,2,3],\"logprobs\":3}";
    CHECK(tsr__fe_parse(TSR__FE_COMPLETION, c, strlen(c), &p, &e));
    CHECK(p.n_prompt_ids == 3 && p.prompt_ids[2] == 3 && p.max_tokens == 16 && p.logprobs == 3);
    tsr__fe_to_engine(&p, 0, &r);
    CHECK(r.prompt_ids == p.prompt_ids && r.n_prompt_ids == 3 && !r.prompt && !r.messages);
    tsr__fe_params_free(&p);

    /* interactive: the prompt is one user turn in a session that stays open */
    const char *it = "{\"prompt\":\"hey\",\"session_id\":9,\"interactive_mode\":true,\"request_output_len\":5}";
    CHECK(tsr__fe_parse(TSR__FE_INTERACTIVE, it, strlen(it), &p, &e));
    tsr__fe_to_engine(&p, 0, &r);
    CHECK(r.session_id == 9 && !r.end_session && r.max_new_tokens == 5);
    CHECK(r.n_messages == 1 && !strcmp(r.messages[0].role, "user") && !strcmp(r.messages[0].content, "hey"));
    tsr__fe_params_free(&p);

    /* boundaries are accepted */
    expect_ok(TSR__FE_CHAT, "\"temperature\":0,\"top_p\":1,\"min_p\":1,\"presence_penalty\":-2,\"frequency_penalty\":2");
    expect_ok(TSR__FE_CHAT, "\"temperature\":2,\"n\":16,\"top_k\":-1,\"max_tokens\":1");
    expect_ok(TSR__FE_CHAT, "\"logprobs\":true,\"top_logprobs\":20");
    expect_ok(TSR__FE_CHAT, "\"temperature\":null,\"stop\":null,\"seed\":null");
    expect_ok(TSR__FE_COMPLETION, "\"logprobs\":5,\"prompt\":[\"one string\"]");
}

static void test_out_of_range(void) {
    static const struct { const char *extra, *param; } cases[] = {
        {"\"temperature\":-0.01", "temperature"}, {"\"temperature\":2.01", "temperature"},
        {"\"top_p\":0", "top_p"}, {"\"top_p\":1.5", "top_p"},
        {"\"top_k\":-2", "top_k"}, {"\"top_k\":2000000000", "top_k"},
        {"\"min_p\":-0.1", "min_p"}, {"\"min_p\":1.1", "min_p"},
        {"\"repetition_penalty\":0", "repetition_penalty"}, {"\"repetition_penalty\":101", "repetition_penalty"},
        {"\"presence_penalty\":2.5", "presence_penalty"}, {"\"presence_penalty\":-2.5", "presence_penalty"},
        {"\"frequency_penalty\":3", "frequency_penalty"}, {"\"frequency_penalty\":-3", "frequency_penalty"},
        {"\"max_tokens\":0", "max_tokens"}, {"\"max_tokens\":-5", "max_tokens"},
        {"\"max_tokens\":100000000", "max_tokens"}, {"\"max_completion_tokens\":0", "max_completion_tokens"},
        {"\"n\":0", "n"}, {"\"n\":17", "n"},
        {"\"logprobs\":true,\"top_logprobs\":21", "top_logprobs"}, {"\"logprobs\":true,\"top_logprobs\":-1", "top_logprobs"},
        {"\"top_logprobs\":2", "top_logprobs"},   /* needs logprobs: true */
        {"\"stop\":\"\"", "stop"}, {"\"stop\":[\"a\",\"\"]", "stop"},
        {"\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]", "stop"},
        {"\"stream_options\":{\"include_usage\":true}", "stream_options"},   /* without stream */
        {"\"temperature\":1e999", "temperature"},   /* cJSON reads this as inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_bad(TSR__FE_CHAT, cases[i].extra, cases[i].param);
    expect_bad(TSR__FE_COMPLETION, "\"logprobs\":6", "logprobs");
    expect_bad(TSR__FE_COMPLETION, "\"logprobs\":-1", "logprobs");
    expect_bad(TSR__FE_INTERACTIVE, "\"session_id\":-1", "session_id");
    expect_bad(TSR__FE_INTERACTIVE, "\"request_output_len\":0", "request_output_len");
    /* one stop string longer than the engine keeps, alone and in a list */
    char big[700], extra[800];
    memset(big, 'a', 600);
    big[600] = 0;
    snprintf(extra, sizeof extra, "\"stop\":\"%s\"", big);
    expect_bad(TSR__FE_CHAT, extra, "stop");
    snprintf(extra, sizeof extra, "\"stop\":[\"%s\"]", big);
    expect_bad(TSR__FE_CHAT, extra, "stop");
}

static void test_wrong_types(void) {
    static const struct { const char *extra, *param; } cases[] = {
        {"\"model\":5", "model"},
        {"\"temperature\":\"0.5\"", "temperature"}, {"\"top_p\":true", "top_p"},
        {"\"top_k\":1.5", "top_k"}, {"\"top_k\":\"4\"", "top_k"},
        {"\"min_p\":[]", "min_p"}, {"\"repetition_penalty\":{}", "repetition_penalty"},
        {"\"presence_penalty\":\"x\"", "presence_penalty"}, {"\"frequency_penalty\":false", "frequency_penalty"},
        {"\"seed\":\"42\"", "seed"}, {"\"seed\":1.5", "seed"},
        {"\"max_tokens\":\"3\"", "max_tokens"}, {"\"max_tokens\":2.5", "max_tokens"},
        {"\"n\":\"2\"", "n"}, {"\"stop\":5", "stop"}, {"\"stop\":[\"a\",1]", "stop"}, {"\"stop\":{}", "stop"},
        {"\"stream\":\"yes\"", "stream"}, {"\"stream\":1", "stream"},
        {"\"stream\":true,\"stream_options\":5", "stream_options"},
        {"\"stream\":true,\"stream_options\":{\"include_usage\":\"yes\"}", "stream_options"},
        {"\"ignore_eos\":0", "ignore_eos"}, {"\"echo\":\"no\"", "echo"}, {"\"user\":7", "user"},
        {"\"logprobs\":1", "logprobs"}, {"\"logprobs\":true,\"top_logprobs\":\"2\"", "top_logprobs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_bad(TSR__FE_CHAT, cases[i].extra, cases[i].param);
    expect_bad(TSR__FE_COMPLETION, "\"logprobs\":true", "logprobs");

    /* messages and prompt shapes */
    static const struct { tsr__fe_kind k; const char *body, *param; } whole[] = {
        {TSR__FE_CHAT, "{}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":\"hi\"}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[\"hi\"]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages"},
        {TSR__FE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages"},
        {TSR__FE_COMPLETION, "{}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":5}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":[]}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":[1,-2]}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":[1,2.5]}", "prompt"},
        {TSR__FE_COMPLETION, "{\"prompt\":[1,3000000000]}", "prompt"},
        {TSR__FE_INTERACTIVE, "{\"prompt\":5}", "prompt"},
        {TSR__FE_INTERACTIVE, "{\"prompt\":\"x\",\"interactive_mode\":1}", "interactive_mode"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        tsr__fe_params p;
        tsr__fe_error e;
        bool ok = tsr__fe_parse(whole[i].k, whole[i].body, strlen(whole[i].body), &p, &e);
        CHECK_MSG(!ok, "accepted: %s", whole[i].body);
        if (ok) tsr__fe_params_free(&p);
        else CHECK_MSG(e.status == 400 && e.param && !strcmp(e.param, whole[i].param), "%s: param %s", whole[i].body,
                       e.param ? e.param : "null");
    }
}

static void test_malformed_json(void) {
    static const char *bodies[] = {"", "{", "{\"messages\": [", "[1,2]", "\"str\"", "null", "{\"a\":1,}", "{'a':1}",
                                   "{\"messages\":[]} trailing"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        tsr__fe_params p;
        tsr__fe_error e;
        bool ok = tsr__fe_parse(TSR__FE_CHAT, bodies[i], strlen(bodies[i]), &p, &e);
        CHECK_MSG(!ok, "accepted: %s", bodies[i]);
        if (ok) {
            tsr__fe_params_free(&p);
            continue;
        }
        CHECK(e.status == 400);
        if (i != sizeof bodies / sizeof bodies[0] - 1)   /* trailing text: cJSON stops at the object */
            CHECK_MSG(e.code && !strcmp(e.code, "invalid_json"), "%s: code %s", bodies[i], e.code ? e.code : "null");
    }
    /* a body with a NUL inside: the length, not the NUL, bounds parsing */
    const char nul[] = "{\"prompt\":\"a\"}\0garbage";
    tsr__fe_params p;
    tsr__fe_error e;
    CHECK(tsr__fe_parse(TSR__FE_COMPLETION, nul, sizeof nul - 1, &p, &e) || e.status == 400);
    if (p.root) tsr__fe_params_free(&p);
    /* deep nesting does not crash */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = 0;
    CHECK(!tsr__fe_parse(TSR__FE_CHAT, deep, 2 * depth, &p, &e));
    free(deep);
}

/* Every JSON number that becomes an integer is range-checked before it is converted (a double
 * outside int64_t converted to it is undefined behaviour): out of range is invalid_value naming
 * the parameter, a fraction is invalid_type. */
static void test_integer_params_huge(void) {
    static const struct { tsr__fe_kind kind; const char *param, *prefix; } params[] = {
        {TSR__FE_CHAT, "max_tokens", ""}, {TSR__FE_CHAT, "max_completion_tokens", ""}, {TSR__FE_CHAT, "n", ""},
        {TSR__FE_CHAT, "seed", ""}, {TSR__FE_CHAT, "top_k", ""}, {TSR__FE_CHAT, "top_logprobs", "\"logprobs\":true,"},
        {TSR__FE_COMPLETION, "logprobs", ""}, {TSR__FE_COMPLETION, "max_tokens", ""}, {TSR__FE_COMPLETION, "seed", ""},
        {TSR__FE_INTERACTIVE, "session_id", ""}, {TSR__FE_INTERACTIVE, "request_output_len", ""},
        {TSR__FE_INTERACTIVE, "max_tokens", ""}, {TSR__FE_INTERACTIVE, "n", ""},
    };
    static const struct { const char *v, *code; } values[] = {
        {"1e300", "invalid_value"}, {"-1e300", "invalid_value"}, {"1e20", "invalid_value"}, {"-1e20", "invalid_value"},
        {"9223372036854775808", "invalid_value"}, {"1e999", "invalid_value"}, {"-1e999", "invalid_value"},
        {"1.5", "invalid_type"},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        for (size_t j = 0; j < sizeof values / sizeof values[0]; j++) {
            char extra[256];
            snprintf(extra, sizeof extra, "%s\"%s\":%s", params[i].prefix, params[i].param, values[j].v);
            tsr__fe_params p;
            tsr__fe_error e;
            bool ok = parse_with(params[i].kind, extra, &p, &e);
            CHECK_MSG(!ok, "accepted: %s", extra);
            if (ok) {
                tsr__fe_params_free(&p);
                continue;
            }
            CHECK_MSG(e.status == 400 && e.param && !strcmp(e.param, params[i].param), "%s: param %s", extra,
                      e.param ? e.param : "null");
            CHECK_MSG(e.code && !strcmp(e.code, values[j].code), "%s: code %s, want %s", extra, e.code ? e.code : "null",
                      values[j].code);
        }
    /* the extremes of seed's range are integers and accepted */
    expect_ok(TSR__FE_CHAT, "\"seed\":-9223372036854775808");
    expect_ok(TSR__FE_CHAT, "\"seed\":9007199254740993");
}

/* One JSON value per body: anything but whitespace after it is a 400. */
static void test_trailing_bytes(void) {
    static const char *bad[] = {"{\"prompt\":\"a\"} x", "{\"prompt\":\"a\"}{}", "{\"prompt\":\"a\"}]", "{\"prompt\":\"a\"}\n\n1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tsr__fe_params p;
        tsr__fe_error e;
        bool ok = tsr__fe_parse(TSR__FE_COMPLETION, bad[i], strlen(bad[i]), &p, &e);
        CHECK_MSG(!ok, "accepted: %s", bad[i]);
        if (ok) tsr__fe_params_free(&p);
        else CHECK(e.status == 400 && e.code && !strcmp(e.code, "invalid_json"));
    }
    const char nul[] = "{\"prompt\":\"a\"}\0garbage";
    tsr__fe_params p;
    tsr__fe_error e;
    CHECK(!tsr__fe_parse(TSR__FE_COMPLETION, nul, sizeof nul - 1, &p, &e));
    const char ws[] = "{\"prompt\":\"a\"} \r\n\t ";
    CHECK(tsr__fe_parse(TSR__FE_COMPLETION, ws, sizeof ws - 1, &p, &e));
    tsr__fe_params_free(&p);
}

/* The HTTP input side without sockets: thousands of pipelined requests come out one at a time
 * (each only after the previous one is done), and the limits give their statuses. */
static void test_http_pipelining(void) {
    tsr__http_in h;
    tsr__http_in_init(&h, 16 << 10, 1 << 20);
    const char one[] = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    const char post[] = "POST /v1/completions HTTP/1.1\r\nHost: h:1\r\nOrigin: http://o\r\nContent-Length: 5\r\n\r\nhello";
    int n = 5000;
    for (int i = 0; i < n; i++) CHECK(tsr__http_in_push(&h, one, sizeof one - 1));
    CHECK(tsr__http_in_push(&h, post, sizeof post - 1));
    int got = 0;
    for (;;) {
        int r = tsr__http_in_next(&h);
        if (r != TSR__HTTP_REQUEST) {
            CHECK(r == TSR__HTTP_NEED_MORE);
            break;
        }
        CHECK(tsr__http_in_next(&h) == TSR__HTTP_REQUEST);   /* stays on it until done */
        got++;
        if (got <= n) CHECK(h.method == HTTP_GET && !strcmp(h.url, "/x") && !strcmp(h.host, "a") && !h.has_origin);
        tsr__http_in_done(&h);
    }
    CHECK_MSG(got == n + 1, "%d requests", got);
    CHECK(h.method == HTTP_POST && h.body_len == 5 && !memcmp(h.body, "hello", 5) && !strcmp(h.origin, "http://o"));
    CHECK(tsr__http_in_unparsed(&h) == 0);
    tsr__http_in_free(&h);

    static const struct { const char *req; int status; const char *code; } errs[] = {
        {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 414, "uri_too_long"},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413, "request_too_large"},
        {"GET / HTTP/1.1\r\nX: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n", 431, "headers_too_large"},
        {"NOPE\r\n\r\n", 400, "bad_request"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        tsr__http_in_init(&h, 2100, 1000);
        if (errs[i].status == 414) {   /* a target longer than 2047 bytes, pushed in pieces */
            h.max_header_bytes = 1 << 20;
            tsr__http_in_push(&h, "GET /", 5);
            for (int k = 0; k < 30; k++) tsr__http_in_push(&h, errs[i].req + 5, 100);
        } else if (errs[i].status == 431) {
            tsr__http_in_push(&h, errs[i].req, strlen(errs[i].req));
            for (int k = 0; k < 40; k++) tsr__http_in_push(&h, "Y: 01234567890123456789012345678901234567890123456789\r\n", 55);
        } else {
            tsr__http_in_push(&h, errs[i].req, strlen(errs[i].req));
        }
        CHECK_MSG(tsr__http_in_next(&h) == TSR__HTTP_ERROR, "case %zu", i);
        CHECK_MSG(h.reject == errs[i].status, "case %zu: %d", i, h.reject);
        char msg[200];
        CHECK(!strcmp(tsr__http_in_error(&h, msg, sizeof msg), errs[i].code) && msg[0]);
        tsr__http_in_free(&h);
    }
}

static void test_origin_host_policy(void) {
    const char *origins[] = {"http://good.example", "https://b.example:8443"};
    tsr__http_policy p = {"127.0.0.1", 23333, origins, 2, NULL, 0};
    static const char *hosts_ok[] = {"127.0.0.1", "127.0.0.1:23333", "localhost", "LocalHost:1", "[::1]", "[::1]:23333"};
    static const char *hosts_bad[] = {"evil.example", "evil.example:23333", "127.0.0.2", "[::2]", "", "[::1", "a b",
                                      "localhost.evil.example", "x@127.0.0.1"};
    for (size_t i = 0; i < sizeof hosts_ok / sizeof *hosts_ok; i++) CHECK_MSG(tsr__http_host_ok(&p, hosts_ok[i]), "%s", hosts_ok[i]);
    for (size_t i = 0; i < sizeof hosts_bad / sizeof *hosts_bad; i++) CHECK_MSG(!tsr__http_host_ok(&p, hosts_bad[i]), "%s", hosts_bad[i]);
    /* bound to every address: any name, unless --allowed-hosts narrows it */
    tsr__http_policy any = {"0.0.0.0", 23333, NULL, 0, NULL, 0};
    CHECK(tsr__http_host_ok(&any, "my-box.lan:23333"));
    const char *allowed[] = {"api.example"};
    any.allowed_hosts = allowed;
    any.n_allowed_hosts = 1;
    CHECK(tsr__http_host_ok(&any, "api.example:23333") && tsr__http_host_ok(&any, "localhost"));
    CHECK(!tsr__http_host_ok(&any, "my-box.lan:23333"));

    CHECK(tsr__http_origin_ok(&p, "http://127.0.0.1:23333", "127.0.0.1:23333"));
    CHECK(tsr__http_origin_ok(&p, "http://localhost:23333", "127.0.0.1:23333"));   /* loopback forms */
    CHECK(tsr__http_origin_ok(&p, "http://[::1]:23333", NULL));
    CHECK(tsr__http_origin_ok(&p, "http://good.example", "127.0.0.1:23333"));
    CHECK(tsr__http_origin_ok(&p, "HTTPS://B.example:8443", NULL));
    CHECK(!tsr__http_origin_ok(&p, "http://localhost:8080", "127.0.0.1:23333"));  /* another port, another origin */
    CHECK(!tsr__http_origin_ok(&p, "http://evil.example", "127.0.0.1:23333"));
    CHECK(!tsr__http_origin_ok(&p, "https://127.0.0.1:23333", "127.0.0.1:23333"));
    CHECK(!tsr__http_origin_ok(&p, "null", "127.0.0.1:23333"));
    CHECK(!tsr__http_origin_ok(&p, "http://good.example.evil", NULL));
    const char *star[] = {"*"};
    tsr__http_policy open = {"127.0.0.1", 23333, star, 1, NULL, 0};
    CHECK(tsr__http_origin_ok(&open, "https://anything.example", NULL));
}

static void test_error_json_shape(void) {
    tsr__fe_error e;
    tsr__fe_seterr(&e, 400, "invalid_request_error", "top_p", "invalid_value", "bad \"%s\" \xff", "x");
    char *s = tsr__fe_error_json(&e);
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL);
    cJSON *o = cJSON_GetObjectItem(j, "error");
    CHECK(cJSON_IsObject(o) && cJSON_GetArraySize(o) == 4);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "type")), "invalid_request_error"));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "param")), "top_p"));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "code")), "invalid_value"));
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(o, "message"));
    CHECK(msg && strstr(msg, "bad \"x\"") && tsr__fe_utf8_valid(msg, strlen(msg)));   /* invalid byte replaced */
    cJSON_Delete(j);
    free(s);
    tsr__fe_seterr(&e, 401, "authentication_error", NULL, NULL, "no key");
    s = tsr__fe_error_json(&e);
    j = cJSON_Parse(s);
    o = cJSON_GetObjectItem(j, "error");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "param")) && cJSON_IsNull(cJSON_GetObjectItem(o, "code")));
    cJSON_Delete(j);
    free(s);
}

/* An engine refusal becomes OpenAI's error from its fields, never from its words. */
static void test_engine_refusals(void) {
    struct {
        tsr_engine_errcode code;
        tsr_engine_field field;
        bool chat;
        int status;
        const char *param, *ecode;
    } cases[] = {
        {TSR_ENGINE_ERR_TOO_LONG, TSR_FIELD_MAX_NEW_TOKENS, false, 400, "max_tokens", "context_length_exceeded"},
        {TSR_ENGINE_ERR_TOO_LONG, TSR_FIELD_PROMPT, true, 400, "messages", "context_length_exceeded"},
        {TSR_ENGINE_ERR_INVALID, TSR_FIELD_PROMPT, false, 400, "prompt", "invalid_value"},
        {TSR_ENGINE_ERR_INVALID, TSR_FIELD_STOP, false, 400, "stop", "invalid_value"},
        {TSR_ENGINE_ERR_INVALID, TSR_FIELD_SAMPLING, false, 400, NULL, "invalid_value"},
        {TSR_ENGINE_ERR_UNAVAILABLE, TSR_FIELD_NONE, false, 503, NULL, "engine_unavailable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* the message names a session and a prompt: a reader of words would pick other fields */
        tsr_engine_error ee = {TSR_ERR_INVALID_ARG, cases[i].code, cases[i].field, "session 7: prompt too long"};
        tsr__fe_error e;
        tsr__fe_engine_error(&ee, cases[i].chat, &e);
        CHECK(e.status == cases[i].status && !strcmp(e.code, cases[i].ecode));
        CHECK(cases[i].param ? e.param && !strcmp(e.param, cases[i].param) : e.param == NULL);
        CHECK(!strcmp(e.message, "session 7: prompt too long"));
    }
}

static void test_utf8(void) {
    static const struct { const char *s; bool ok; } cases[] = {
        {"plain", true}, {"caf\xc3\xa9", true}, {"\xe2\x82\xac", true}, {"\xf0\x9f\x98\x80", true},
        {"\xc3\x28", false},           /* bad continuation */
        {"\xc0\xaf", false},           /* overlong */
        {"\xe0\x80\xaf", false},       /* overlong 3-byte */
        {"\xed\xa0\x80", false},       /* surrogate */
        {"\xf4\x90\x80\x80", false},   /* past U+10FFFF */
        {"\xe2\x82", false},           /* truncated */
        {"\xff", false}, {"\x80", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(tsr__fe_utf8_valid(cases[i].s, strlen(cases[i].s)) == cases[i].ok, "case %zu", i);
    char *s = tsr__fe_utf8_sanitize("a\xff" "b\xe2\x82", 5);
    CHECK(s && !strcmp(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD"));
    free(s);
    char id[64];
    tsr__fe_make_id("chatcmpl", id, sizeof id);
    CHECK(!strncmp(id, "chatcmpl-", 9) && strlen(id) > 20);
}

static void test_key_equal(void) {
    CHECK(tsr__fe_key_equal("secret", 6, "secret"));
    CHECK(!tsr__fe_key_equal("secreT", 6, "secret"));
    CHECK(!tsr__fe_key_equal("secre", 5, "secret"));          /* prefix */
    CHECK(!tsr__fe_key_equal("secrets", 7, "secret"));        /* longer */
    CHECK(!tsr__fe_key_equal("", 0, "secret"));
    CHECK(!tsr__fe_key_equal("secret\0x", 8, "secret"));      /* an embedded NUL is not an end */
    CHECK(tsr__fe_key_equal("", 0, ""));
    /* a presented key much longer than the configured one reads no byte past either */
    char lng[4096];
    memset(lng, 's', sizeof lng);
    CHECK(!tsr__fe_key_equal(lng, sizeof lng, "s"));
}

static void test_grpc_frames(void) {
    size_t n = 99;
    uint8_t b[16] = {0};
    CHECK(tsr_grpc_frame(b, 0, 100, &n) == TSR_GRPC_FRAME_NEED_MORE);
    CHECK(tsr_grpc_frame(b, 4, 100, &n) == TSR_GRPC_FRAME_NEED_MORE);
    CHECK(tsr_grpc_frame(b, 5, 100, &n) == TSR_GRPC_FRAME_OK && n == 0);   /* an empty message */
    CHECK(tsr_grpc_frame_header(b, 3) == 5);
    CHECK(b[0] == 0 && b[1] == 0 && b[4] == 3);
    memcpy(b + 5, "abc", 3);
    CHECK(tsr_grpc_frame(b, 7, 100, &n) == TSR_GRPC_FRAME_NEED_MORE && n == 3);
    CHECK(tsr_grpc_frame(b, 8, 100, &n) == TSR_GRPC_FRAME_OK && n == 3);
    CHECK(tsr_grpc_frame(b, 16, 100, &n) == TSR_GRPC_FRAME_OK && n == 3);  /* more after: next frame */
    CHECK(tsr_grpc_frame(b, 8, 2, &n) == TSR_GRPC_FRAME_TOO_BIG);
    /* hostile lengths: declared far past what arrived or what is allowed */
    uint8_t h[5] = {0, 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK(tsr_grpc_frame(h, 5, (size_t)64 << 20, &n) == TSR_GRPC_FRAME_TOO_BIG);
    CHECK(tsr_grpc_frame(h, 5, SIZE_MAX, &n) == TSR_GRPC_FRAME_NEED_MORE && n == 0xFFFFFFFFu);
    uint8_t h2[5] = {0, 0x80, 0, 0, 0};
    CHECK(tsr_grpc_frame(h2, 5, (size_t)8 << 20, &n) == TSR_GRPC_FRAME_TOO_BIG);
    uint8_t c[5] = {1, 0, 0, 0, 1};
    CHECK(tsr_grpc_frame(c, 5, 100, &n) == TSR_GRPC_FRAME_COMPRESSED);
    uint8_t f[5] = {7, 0, 0, 0, 1};
    CHECK(tsr_grpc_frame(f, 5, 100, &n) == TSR_GRPC_FRAME_BAD_FLAG);
    /* a stream of frames split at every byte boundary parses to the same messages */
    uint8_t s[64];
    size_t len = 0;
    for (int m = 0; m < 4; m++) {
        len += tsr_grpc_frame_header(s + len, (size_t)m * 2);
        memset(s + len, 'a' + m, (size_t)m * 2);
        len += (size_t)m * 2;
    }
    for (size_t cut = 0; cut <= len; cut++) {
        size_t off = 0, got = 0;
        while (tsr_grpc_frame(s + off, cut - off, 100, &n) == TSR_GRPC_FRAME_OK) {
            CHECK(n == got * 2);
            off += 5 + n;
            got++;
        }
        CHECK(off <= cut);
        if (cut == len) CHECK(got == 4);
    }
}

/* Streamed chunks, the usage chunk and SSE framing in OpenAI's shapes. */
static void test_stream_shapes(void) {
    tsr__fe_chunk_info ci = {"chatcmpl-1", "smol", 1700000000, true, true};
    cJSON *j = tsr__fe_stream_chunk(&ci, 1, true, "Hel", NULL, NULL);
    size_t len = 0;
    char *sse = tsr__fe_sse(j, &len);
    CHECK(sse && !strncmp(sse, "data: {", 7) && len == strlen(sse) && !strcmp(sse + len - 2, "\n\n"));
    CHECK(sse && strstr(sse + 6, "\n\n") == sse + len - 2);   /* one event */
    cJSON *back = sse ? cJSON_Parse(sse + 6) : NULL;
    CHECK(back != NULL);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(back, "object")), "chat.completion.chunk"));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(back, "id")), "chatcmpl-1"));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(back, "model")), "smol"));
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(back, "created")) == 1700000000.0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(back, "usage")));   /* include_usage: null until the end */
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(back, "choices"), 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(back, "choices")) == 1);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(ch, "index")) == 1);
    cJSON *d = cJSON_GetObjectItem(ch, "delta");
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(d, "role")), "assistant"));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(d, "content")), "Hel"));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ch, "logprobs")) && cJSON_IsNull(cJSON_GetObjectItem(ch, "finish_reason")));
    cJSON_Delete(back);
    cJSON_Delete(j);
    free(sse);

    /* the closing chunk of a choice: no content, a finish reason, no role once one was sent */
    j = tsr__fe_stream_chunk(&ci, 0, false, NULL, NULL, "length");
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    d = cJSON_GetObjectItem(ch, "delta");
    CHECK(cJSON_IsObject(d) && cJSON_GetArraySize(d) == 0);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason")), "length"));
    cJSON_Delete(j);

    /* usage chunk: empty choices, the figures */
    j = tsr__fe_usage_chunk(&ci, tsr__fe_usage(10, 5, 4));
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(j, "choices")) && cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 0);
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(u, "prompt_tokens")) == 10);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(u, "completion_tokens")) == 5);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(u, "total_tokens")) == 15);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "prompt_tokens_details"), "cached_tokens")) == 4);
    cJSON_Delete(j);

    /* completions: text_completion chunks carry "text" (never a delta); without include_usage no usage key */
    tsr__fe_chunk_info cc = {"cmpl-1", "smol", 1, false, false};
    j = tsr__fe_stream_chunk(&cc, 0, true, NULL, NULL, "stop");
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "object")), "text_completion"));
    CHECK(!cJSON_GetObjectItem(ch, "delta") && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text")), ""));
    CHECK(!cJSON_GetObjectItem(j, "usage"));
    cJSON_Delete(j);

    /* text with quotes, newlines and control bytes stays one SSE event of valid JSON */
    j = tsr__fe_stream_chunk(&ci, 0, false, "a\n\nb\"c\x01", NULL, NULL);
    sse = tsr__fe_sse(j, &len);
    CHECK(sse && strstr(sse, "\n\n") == sse + len - 2);
    back = sse ? cJSON_Parse(sse + 6) : NULL;
    d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(back, "choices"), 0), "delta");
    CHECK(d && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(d, "content")), "a\n\nb\"c\x01"));
    cJSON_Delete(back);
    cJSON_Delete(j);
    free(sse);

    /* legacy logprobs from chat-shaped entries: offsets accumulate, duplicate top tokens collapse */
    const char *ent = "[{\"token\":\"He\",\"logprob\":-0.5,\"top_logprobs\":[{\"token\":\"He\",\"logprob\":-0.5},"
                      "{\"token\":\"He\",\"logprob\":-3}]},{\"token\":\"llo\",\"logprob\":-1,\"top_logprobs\":[]}]";
    cJSON *entries = cJSON_Parse(ent);
    cJSON *lg = tsr__fe_legacy_logprobs(entries);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lg, "tokens")) == 2);
    CHECK(cJSON_GetNumberValue(cJSON_GetArrayItem(cJSON_GetObjectItem(lg, "text_offset"), 1)) == 2);
    CHECK(cJSON_GetNumberValue(cJSON_GetArrayItem(cJSON_GetObjectItem(lg, "token_logprobs"), 1)) == -1);
    cJSON *top0 = cJSON_GetArrayItem(cJSON_GetObjectItem(lg, "top_logprobs"), 0);
    CHECK(cJSON_GetArraySize(top0) == 1 && cJSON_GetNumberValue(cJSON_GetObjectItem(top0, "He")) == -0.5);
    cJSON_Delete(lg);
    cJSON_Delete(entries);
}

static void test_metrics_text(void) {
    tsr__fe_metrics m;
    tsr__fe_metrics_init(&m);
    tsr__fe_hist_add(&m.ttft, 0.05);
    tsr__fe_hist_add(&m.ttft, 1e9);   /* past every bound: only +Inf */
    tsr_engine_stats st = {0};
    st.kv_blocks_free = 7;
    char *t = tsr__fe_metrics_render(&m, &st, 3, false);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(strstr(t, "tessera_kv_blocks_free 7") != NULL);
    CHECK(strstr(t, "tessera_time_to_first_token_seconds_count 2") != NULL);
    CHECK(strstr(t, "le=\"+Inf\"} 2") != NULL);
    CHECK(strstr(t, "# TYPE tessera_time_to_first_token_seconds histogram") != NULL);
    free(t);
}

int main(void) {
    test_valid_chat_to_engine();
    test_out_of_range();
    test_wrong_types();
    test_malformed_json();
    test_integer_params_huge();
    test_trailing_bytes();
    test_http_pipelining();
    test_origin_host_policy();
    test_error_json_shape();
    test_engine_refusals();
    test_utf8();
    test_key_equal();
    test_grpc_frames();
    test_stream_shapes();
    test_metrics_text();
    return tsr_test_finish();
}
