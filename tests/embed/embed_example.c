/* Embedding Tessera: the smallest program against the installed library.
 *   cc embed_example.c $(pkg-config --cflags --libs tessera) -o embed_example
 *   ./embed_example MODEL "prompt"
 * Opens the engine, submits one request, prints its tokens' text as they come (poll mode). */
#include <stdio.h>
#include <string.h>

#include <tessera/engine.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: embed_example MODEL PROMPT\n");
        return 2;
    }
    tsr_engine_config c;
    tsr_engine_config_default(&c);
    c.model_path = argv[1];
    c.backend = "cpu";
    c.progress = false;
    c.session_len = 512;
    c.cache_max_entry_count = 64;
    tsr_engine *e = NULL;
    if (tsr_engine_open(&c, &argc, &argv, &e) != TSR_OK) {
        fprintf(stderr, "error: %s\n", tsr_last_error());
        return 1;
    }
    if (!e) return 0;   /* a worker rank under mpirun */
    tsr_engine_request r;
    tsr_engine_request_default(&r);
    r.prompt = argv[2];
    r.max_new_tokens = 12;
    r.sampling.temperature = 0;
    uint64_t id;
    if (tsr_engine_submit(e, &r, NULL, NULL, &id) != TSR_OK) {
        fprintf(stderr, "error: %s\n", tsr_last_error());
        tsr_engine_close(e);
        return 1;
    }
    int n_tokens = 0, done = 0;
    while (!done) {
        tsr_engine_event ev[8];
        int n = tsr_engine_poll(e, ev, 8, 1000);
        for (int i = 0; i < n; i++) {
            fwrite(ev[i].text, 1, ev[i].text_len, stdout);
            if (ev[i].type == TSR_EVENT_TOKEN) n_tokens++;
            if (ev[i].type == TSR_EVENT_DONE) {
                done = 1;
                printf("\n[done: %s, %d tokens, prompt %lld]\n", tsr_finish_reason_str(ev[i].finish), n_tokens,
                       (long long)ev[i].prompt_tokens);
            }
        }
    }
    tsr_engine_close(e);
    return n_tokens > 0 ? 0 : 1;
}
