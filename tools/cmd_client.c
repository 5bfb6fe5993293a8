/* `tessera client URL`: an interactive chat against a running `tessera serve` (like
 * `lmdeploy serve api_client`): each stdin line is a user turn; the conversation is resent with
 * every turn to /v1/chat/completions with stream: true and the answer is printed as its SSE
 * events arrive.  Plain sockets and cJSON, so it needs nothing from the engine.
 * grpc://host:port is recognised but not implemented yet (the HTTP API covers the same chat). */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/cli.h"
#include "tools/commands.h"

static int tsr__connect(const char *host, const char *port) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Sends one streaming chat request; prints deltas; returns the answer (malloc'd) or NULL. */
static char *tsr__turn(const char *host, const char *port, const char *key, const char *body) {
    int fd = tsr__connect(host, port);
    if (fd < 0) {
        fprintf(stderr, "tessera client: cannot connect to %s:%s\n", host, port);
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
            fprintf(stderr, "tessera client: HTTP %d: %s", status, line);
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
        if (err) fprintf(stderr, "\ntessera client: %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(err, "message")));
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

int tsr_cmd_client(int argc, char **argv) {
    const char *key = NULL, *system = NULL;
    int64_t max_tokens = 512;
    double temperature = 0.7;
    const tsr_opt opts[] = {
        {"--api-key", TSR_OPT_STR, &key, "KEY", "send 'Authorization: Bearer KEY'"},
        {"--system", TSR_OPT_STR, &system, "TEXT", "system prompt"},
        {"--max-tokens", TSR_OPT_INT, &max_tokens, "N", "answer length limit (default 512)"},
        {"--temperature", TSR_OPT_FLOAT, &temperature, "T", "sampling temperature (default 0.7)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera client URL [options]",
                           "Chats with a running server (URL http://host:port): one user turn per stdin line,\n"
                           "the answer streamed as it comes.  /reset starts over, /exit or EOF leaves.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    const char *url = n_pos ? pos[0] : "http://127.0.0.1:23333";
    if (!strncmp(url, "grpc://", 7)) {
        fprintf(stderr, "tessera client: grpc:// is not implemented yet; use http://host:port\n");
        return 1;
    }
    if (strncmp(url, "http://", 7)) {
        fprintf(stderr, "tessera client: URL must be http://host:port\n");
        return 1;
    }
    char host[256], port[16] = "80";
    const char *h = url + 7, *colon = strrchr(h, ':'), *slash = strchr(h, '/');
    size_t hl = colon ? (size_t)(colon - h) : slash ? (size_t)(slash - h) : strlen(h);
    snprintf(host, sizeof host, "%.*s", (int)hl, h);
    if (colon) snprintf(port, sizeof port, "%.*s", (int)strcspn(colon + 1, "/"), colon + 1);
    cJSON *msgs = cJSON_CreateArray();
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    char *line = NULL;
    size_t cap = 0;
    bool tty = isatty(STDIN_FILENO);
    for (;;) {
        if (tty) fputs("> ", stderr);
        if (getline(&line, &cap, stdin) <= 0) break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (!strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
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
