/* `tessera client URL`: an interactive chat against a running `tessera serve` (like
 * `lmdeploy serve api_client`): each stdin line is a user turn; the conversation is resent with
 * every turn to /v1/chat/completions with stream: true and the answer is printed as its SSE
 * events arrive.  Plain sockets and cJSON, so it needs nothing from the engine.
 * grpc://host:port speaks gRPC over HTTP/2 (nghttp2 client session on a blocking socket,
 * protobuf-c messages from proto/tessera.proto): the ChatStream RPC with the whole conversation each
 * turn, or with --generate the server-streaming Generate RPC on the raw line, printed message by
 * message as it streams. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nghttp2/nghttp2.h>

#include "common/grpc_frame.h"
#include "tessera.pb-c.h"

#include "tools/cli.h"
#include "tools/commands.h"

enum { TSR__TURN_END, TSR__TURN_RESET, TSR__TURN_TEXT };

/* The next user turn from stdin (a "> " prompt on a terminal; blank lines skipped): the text
 * in *line, or /reset, or the end (/exit or EOF). */
static int tsr__read_turn(char **line, size_t *cap) {
    for (;;) {
        if (isatty(STDIN_FILENO)) fputs("> ", stderr);
        if (getline(line, cap, stdin) <= 0) return TSR__TURN_END;
        (*line)[strcspn(*line, "\r\n")] = 0;
        if (!(*line)[0]) continue;
        if (!strcmp(*line, "/exit")) return TSR__TURN_END;
        if (!strcmp(*line, "/reset")) return TSR__TURN_RESET;
        return TSR__TURN_TEXT;
    }
}

/* Sends one streaming chat request; prints deltas; returns the answer (malloc'd) or NULL. */
static char *tsr__turn(const char *host, const char *port, const char *key, const char *body) {
    int fd = tsr_cli_tcp_connect(host, port);
    if (fd < 0) {
        tsr_cli_err("tessera client: cannot connect to %s:%s\n", host, port);
        return NULL;
    }
    char head[1024];
    int k = snprintf(head, sizeof head,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",
                     host, port, strlen(body), key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "");
    if (write(fd, head, (size_t)k) != k || write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    char *line = NULL, *answer = calloc(1, 1);
    size_t cap = 0, alen = 0;
    int status = 0;
    bool chunked = false, in_body = false;
    while (getline(&line, &cap, f) > 0) {
        if (!status) {
            sscanf(line, "HTTP/1.%*d %d", &status);
            continue;
        }
        if (!in_body) {
            if (!strncasecmp(line, "Transfer-Encoding: chunked", 26)) chunked = true;
            if (!strcmp(line, "\r\n")) in_body = true;
            continue;
        }
        if (status != 200) {
            tsr_cli_err("tessera client: HTTP %d: %s", status, line);
            continue;
        }
        (void)chunked;   /* chunk-size lines do not start with "data: " and are skipped */
        if (strncmp(line, "data: ", 6)) continue;
        if (!strncmp(line + 6, "[DONE]", 6)) break;
        cJSON *j = cJSON_Parse(line + 6);
        cJSON *ch = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0) : NULL;
        cJSON *c = ch ? cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content") : NULL;
        if (cJSON_IsString(c)) {
            fputs(c->valuestring, stdout);
            fflush(stdout);
            size_t l = strlen(c->valuestring);
            char *x = realloc(answer, alen + l + 1);
            if (x) {
                answer = x;
                memcpy(answer + alen, c->valuestring, l + 1);
                alen += l;
            }
        }
        cJSON *err = j ? cJSON_GetObjectItem(j, "error") : NULL;
        if (err) tsr_cli_err("\ntessera client: %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(err, "message")));
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    fputc('\n', stdout);
    if (status != 200) {
        free(answer);
        return NULL;
    }
    return answer;
}

/* ---------------------------------------------------------------- gRPC */

typedef struct {
    int fd;
    const uint8_t *req;          /* the framed request message */
    size_t req_len, req_off;
    bool generate;
    uint8_t *in;                 /* response bytes not yet parsed into messages */
    size_t in_len, in_cap;
    int status;                  /* grpc-status (-1: none yet) */
    char message[256];
    int http_status;
    bool closed, failed;
    char *answer;
    size_t answer_len;
} tsr__gcli;

static ssize_t tsr__gcli_read_req(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                                  nghttp2_data_source *src, void *user) {
    (void)ses, (void)id, (void)src;
    tsr__gcli *g = user;
    size_t n = g->req_len - g->req_off;
    if (n > len) n = len;
    memcpy(buf, g->req + g->req_off, n);
    g->req_off += n;
    if (g->req_off == g->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void tsr__gcli_print(tsr__gcli *g, const char *t) {
    size_t l = strlen(t);
    if (!l) return;
    fputs(t, stdout);
    fflush(stdout);
    char *x = realloc(g->answer, g->answer_len + l + 1);
    if (!x) return;
    g->answer = x;
    memcpy(g->answer + g->answer_len, t, l + 1);
    g->answer_len += l;
}

/* Each complete message in g->in is printed as it arrives. */
static int tsr__gcli_on_data(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                             void *user) {
    (void)ses, (void)flags, (void)id;
    tsr__gcli *g = user;
    if (g->in_len + len > g->in_cap) {
        size_t cap = (g->in_cap ? g->in_cap * 2 : 4096) + len;
        uint8_t *x = realloc(g->in, cap);
        if (!x) return NGHTTP2_ERR_CALLBACK_FAILURE;
        g->in = x;
        g->in_cap = cap;
    }
    memcpy(g->in + g->in_len, data, len);
    g->in_len += len;
    size_t off = 0, n = 0;
    for (;;) {
        int r = tsr_grpc_frame(g->in + off, g->in_len - off, (size_t)64 << 20, &n);
        if (r == TSR_GRPC_FRAME_NEED_MORE) break;
        if (r != TSR_GRPC_FRAME_OK) {
            tsr_cli_err("\ntessera client: bad gRPC message frame from the server\n");
            g->failed = true;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        const uint8_t *m = g->in + off + 5;
        /* Generate and ChatStream both stream GenerateResponse messages */
        Tessera__V1__GenerateResponse *r2 = tessera__v1__generate_response__unpack(NULL, n, m);
        if (r2) tsr__gcli_print(g, r2->text);
        if (r2) tessera__v1__generate_response__free_unpacked(r2, NULL);
        off += 5 + n;
    }
    memmove(g->in, g->in + off, g->in_len - off);
    g->in_len -= off;
    return 0;
}

static int tsr__gcli_on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                               const uint8_t *value, size_t vl, uint8_t flags, void *user) {
    (void)ses, (void)f, (void)flags;
    tsr__gcli *g = user;
    if (nl == 11 && !memcmp(name, "grpc-status", 11)) g->status = atoi((const char *)value);
    else if (nl == 12 && !memcmp(name, "grpc-message", 12)) snprintf(g->message, sizeof g->message, "%.*s", (int)vl, value);
    else if (nl == 7 && !memcmp(name, ":status", 7)) g->http_status = atoi((const char *)value);
    return 0;
}

static int tsr__gcli_on_close(nghttp2_session *ses, int32_t id, uint32_t code, void *user) {
    (void)ses, (void)id;
    tsr__gcli *g = user;
    g->closed = true;
    if (code) g->failed = true;
    return 0;
}

/* One RPC on a fresh connection; returns the answer text (malloc'd) or NULL. */
static char *tsr__grpc_turn(const char *host, const char *port, const char *key, bool generate, const uint8_t *msg,
                            size_t msg_len) {
    int fd = tsr_cli_tcp_connect(host, port);
    if (fd < 0) {
        tsr_cli_err("tessera client: cannot connect to %s:%s\n", host, port);
        return NULL;
    }
    uint8_t *req = malloc(msg_len + 5);
    if (!req) {
        close(fd);
        return NULL;
    }
    tsr_grpc_frame_header(req, msg_len);
    memcpy(req + 5, msg, msg_len);
    tsr__gcli g = {.fd = fd, .req = req, .req_len = msg_len + 5, .generate = generate, .status = -1};
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, tsr__gcli_on_data);
    nghttp2_session_callbacks_set_on_header_callback(cb, tsr__gcli_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, tsr__gcli_on_close);
    nghttp2_session *ses = NULL;
    nghttp2_session_client_new(&ses, cb, &g);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(ses, NGHTTP2_FLAG_NONE, NULL, 0);
    char authority[300], bearer[600];
    snprintf(authority, sizeof authority, "%s:%s", host, port);
    snprintf(bearer, sizeof bearer, "Bearer %s", key ? key : "");
    const char *path = generate ? "/tessera.v1.Tessera/Generate" : "/tessera.v1.Tessera/ChatStream";
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", path), NV(":authority", authority),
                       NV("content-type", "application/grpc"), NV("te", "trailers"), NV("authorization", bearer)};
#undef NV
    nghttp2_data_provider dp = {.source = {.ptr = NULL}, .read_callback = tsr__gcli_read_req};
    nghttp2_submit_request(ses, NULL, nv, key ? 7 : 6, &dp, NULL);
    uint8_t buf[16384];
    while (!g.closed && !g.failed) {
        const uint8_t *out;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(ses, &out)) > 0)
            if (write(fd, out, (size_t)n) != n) {
                g.failed = true;
                break;
            }
        if (n < 0 || g.failed) break;
        if (g.closed) break;
        ssize_t k = read(fd, buf, sizeof buf);
        if (k <= 0) {
            g.failed = true;
            break;
        }
        if (nghttp2_session_mem_recv(ses, buf, (size_t)k) < 0) g.failed = true;
    }
    nghttp2_session_del(ses);
    close(fd);
    free(req);
    free(g.in);
    fputc('\n', stdout);
    fflush(stdout);
    if (g.status != 0) {
        if (g.status > 0) tsr_cli_err("tessera client: gRPC status %d: %s\n", g.status, g.message);
        else tsr_cli_err("tessera client: the gRPC call failed (HTTP %d, no grpc-status)\n", g.http_status);
        free(g.answer);
        return NULL;
    }
    return g.answer ? g.answer : calloc(1, 1);
}

/* Chat (or Generate) turns over gRPC until EOF; the conversation is kept here. */
static int tsr__grpc_chat(const char *host, const char *port, const char *key, const char *system, int64_t max_tokens,
                          double temperature, bool generate) {
    char **roles = NULL, **texts = NULL;
    int n_msgs = 0;
    if (system) {
        roles = malloc(sizeof(char *));
        texts = malloc(sizeof(char *));
        roles[0] = strdup("system");
        texts[0] = strdup(system);
        n_msgs = 1;
    }
    int base = n_msgs;
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        int turn = tsr__read_turn(&line, &cap);
        if (turn == TSR__TURN_END) break;
        if (turn == TSR__TURN_RESET) {
            while (n_msgs > base) {
                n_msgs--;
                free(roles[n_msgs]);
                free(texts[n_msgs]);
            }
            continue;
        }
        Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
        sp.max_tokens = (uint32_t)max_tokens;
        sp.temperature = (float)temperature;
        sp.top_p = 1.0f;
        sp.repetition_penalty = 1.0f;
        uint8_t *packed = NULL;
        size_t plen = 0;
        if (generate) {
            Tessera__V1__GenerateRequest q = TESSERA__V1__GENERATE_REQUEST__INIT;
            q.prompt = line;
            q.params = &sp;
            plen = tessera__v1__generate_request__get_packed_size(&q);
            packed = malloc(plen + 1);
            if (packed) tessera__v1__generate_request__pack(&q, packed);
        } else {
            char **r2 = realloc(roles, sizeof(char *) * (size_t)(n_msgs + 2)), **t2;
            if (r2) roles = r2;
            t2 = realloc(texts, sizeof(char *) * (size_t)(n_msgs + 2));
            if (t2) texts = t2;
            if (!r2 || !t2) break;
            roles[n_msgs] = strdup("user");
            texts[n_msgs] = strdup(line);
            n_msgs++;
            Tessera__V1__ChatMessage *ms = calloc((size_t)n_msgs, sizeof *ms);
            Tessera__V1__ChatMessage **mp = calloc((size_t)n_msgs, sizeof *mp);
            Tessera__V1__ChatRequest q = TESSERA__V1__CHAT_REQUEST__INIT;
            if (ms && mp) {
                for (int i = 0; i < n_msgs; i++) {
                    tessera__v1__chat_message__init(&ms[i]);
                    ms[i].role = roles[i];
                    ms[i].content = texts[i];
                    mp[i] = &ms[i];
                }
                q.messages = mp;
                q.n_messages = (size_t)n_msgs;
                q.params = &sp;
                plen = tessera__v1__chat_request__get_packed_size(&q);
                packed = malloc(plen + 1);
                if (packed) tessera__v1__chat_request__pack(&q, packed);
            }
            free(ms);
            free(mp);
        }
        char *answer = packed ? tsr__grpc_turn(host, port, key, generate, packed, plen) : NULL;
        free(packed);
        if (generate) {
            free(answer);
            continue;
        }
        if (!answer) {   /* the turn failed: forget it */
            n_msgs--;
            free(roles[n_msgs]);
            free(texts[n_msgs]);
            continue;
        }
        roles[n_msgs] = strdup("assistant");
        texts[n_msgs] = answer;
        n_msgs++;
    }
    for (int i = 0; i < n_msgs; i++) {
        free(roles[i]);
        free(texts[i]);
    }
    free(roles);
    free(texts);
    free(line);
    return 0;
}

int tsr_cmd_client(int argc, char **argv) {
    const char *key = NULL, *system = NULL;
    int64_t max_tokens = 512;
    double temperature = 0.7;
    bool generate = false;
    const tsr_opt opts[] = {
        {"--generate", TSR_OPT_FLAG, &generate, NULL, "grpc:// only: each line is a raw prompt to the streaming Generate RPC"},
        {"--api-key", TSR_OPT_STR, &key, "KEY", "send 'Authorization: Bearer KEY'"},
        {"--system", TSR_OPT_STR, &system, "TEXT", "system prompt"},
        {"--max-tokens", TSR_OPT_INT, &max_tokens, "N", "answer length limit (default 512)"},
        {"--temperature", TSR_OPT_FLOAT, &temperature, "T", "sampling temperature (default 0.7)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera client URL [options]",
                           "Chats with a running server (URL http://host:port, or grpc://host:port for gRPC): one user\n"
                           "turn per stdin line,"
                           "the answer streamed as it comes.  /reset starts over, /exit or EOF leaves.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    const char *url = n_pos ? pos[0] : "http://127.0.0.1:23333";
    bool grpc = !strncmp(url, "grpc://", 7);
    if (!grpc && strncmp(url, "http://", 7)) {
        tsr_cli_err("tessera client: URL must be http://host:port or grpc://host:port\n");
        return 1;
    }
    char host[256], port[16];
    snprintf(port, sizeof port, "%s", grpc ? "23334" : "80");
    const char *h = url + 7, *colon = strrchr(h, ':'), *slash = strchr(h, '/');
    size_t hl = colon ? (size_t)(colon - h) : slash ? (size_t)(slash - h) : strlen(h);
    snprintf(host, sizeof host, "%.*s", (int)hl, h);
    if (colon) snprintf(port, sizeof port, "%.*s", (int)strcspn(colon + 1, "/"), colon + 1);
    if (grpc) return tsr__grpc_chat(host, port, key, system, max_tokens, temperature, generate);
    cJSON *msgs = cJSON_CreateArray();
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        int turn = tsr__read_turn(&line, &cap);
        if (turn == TSR__TURN_END) break;
        if (turn == TSR__TURN_RESET) {
            while (cJSON_GetArraySize(msgs) > (system ? 1 : 0)) cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
            continue;
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", line);
        cJSON_AddItemToArray(msgs, m);
        cJSON *req = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(req, "messages", msgs);
        cJSON_AddBoolToObject(req, "stream", 1);
        cJSON_AddNumberToObject(req, "max_tokens", (double)max_tokens);
        cJSON_AddNumberToObject(req, "temperature", temperature);
        char *body = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
        char *answer = tsr__turn(host, port, key, body);
        free(body);
        if (!answer) {
            cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
            continue;
        }
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "role", "assistant");
        cJSON_AddStringToObject(a, "content", answer);
        cJSON_AddItemToArray(msgs, a);
        free(answer);
    }
    free(line);
    cJSON_Delete(msgs);
    return 0;
}
