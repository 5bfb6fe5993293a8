/* coordinator/chat_template: every built-in against the strings HF transformers'
 * apply_chat_template made from each model family's own Jinja template
 * (tests/golden/chat_templates.json, written by tests/golden/make_chat_fixtures.py), detection
 * from those Jinja texts and from model names, LMDeploy-form JSON files, and the error paths. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/gguf.h"
#include "coordinator/chat_template.h"
#include "tests/test_util.h"

/* Renders a fixture case with t; checks against "rendered"/"rendered_no_gen" or "error". */
static void check_case(const tsr_chat_template *t, const char *tname, const cJSON *c) {
    const char *cname = cJSON_GetObjectItem(c, "name")->valuestring;
    const cJSON *ms = cJSON_GetObjectItem(c, "messages");
    int n = cJSON_GetArraySize(ms);
    tsr_chat_message *msgs = calloc((size_t)n + 1, sizeof *msgs);
    int i = 0;
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
        msgs[i].role = cJSON_GetObjectItem(m, "role")->valuestring;
        msgs[i].content = cJSON_GetObjectItem(m, "content")->valuestring;
    }
    const cJSON *err = cJSON_GetObjectItem(c, "error");
    for (int gen = 1; gen >= 0; gen--) {
        char *out = NULL;
        tsr_status st = tsr_chat_template_render(t, msgs, (size_t)n, gen, &out);
        if (err) {
            CHECK_MSG(st == TSR_ERR_INVALID_ARG, "%s/%s: HF raised (%s) but render gave %d", tname, cname,
                      err->valuestring, (int)st);
            CHECK(out == NULL);
        } else {
            const char *want = cJSON_GetObjectItem(c, gen ? "rendered" : "rendered_no_gen")->valuestring;
            CHECK_MSG(st == TSR_OK, "%s/%s: %s", tname, cname, tsr_last_error());
            CHECK_MSG(out && !strcmp(out, want), "%s/%s (gen=%d):\n got: [%s]\nwant: [%s]", tname, cname, gen,
                      out ? out : "(null)", want);
        }
        free(out);
    }
    free(msgs);
}

static void check_all_cases(const tsr_chat_template *t, const char *label, const cJSON *tpl) {
    for (const cJSON *c = cJSON_GetObjectItem(tpl, "cases")->child; c; c = c->next) check_case(t, label, c);
}

static char *write_tmp(const char *dir, const char *name, const char *text) {
    char *p = tsr_path_join(dir, name);
    CHECK(tsr_write_file(p, text, strlen(text)) == TSR_OK);
    return p;
}

/* Loads a JSON template from text; returns the status, frees the template. */
static tsr_status load_text(const char *dir, const char *text) {
    char *p = write_tmp(dir, "t.json", text);
    tsr_chat_template *t = NULL;
    tsr_status st = tsr_chat_template_load(p, &t);
    if (st == TSR_OK) CHECK(t != NULL);
    else CHECK(t == NULL && strstr(tsr_last_error(), p) != NULL);
    tsr_chat_template_free(t);
    free(p);
    return st;
}

static const cJSON *fixture_by_name(const cJSON *templates, const char *name) {
    for (const cJSON *t = templates->child; t; t = t->next)
        if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, name)) return t;
    return NULL;
}

int main(void) {
    char *path = tsr_path_join(tsr_test_source_dir(), "tests/golden/chat_templates.json");
    char *text = NULL;
    size_t len = 0;
    if (tsr_read_file(path, 1 << 24, &text, &len) != TSR_OK) {
        fprintf(stderr, "cannot read the fixture: %s\n", tsr_last_error());
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    if (!root) return tsr_test_finish();
    const cJSON *templates = cJSON_GetObjectItem(root, "templates");
    CHECK(cJSON_GetArraySize(templates) >= 6);

    /* 1. detect() from each family's Jinja picks the right built-in and renders like HF. */
    for (const cJSON *tpl = templates->child; tpl; tpl = tpl->next) {
        const char *name = cJSON_GetObjectItem(tpl, "name")->valuestring;
        const char *builtin = cJSON_GetObjectItem(tpl, "builtin")->valuestring;
        const char *jinja = cJSON_GetObjectItem(tpl, "jinja")->valuestring;
        const char *model = cJSON_GetObjectItem(tpl, "model_name")->valuestring;
        for (int with_model = 0; with_model < 2; with_model++) {
            tsr_chat_template *t = NULL;
            CHECK(tsr_chat_template_detect(jinja, with_model ? model : NULL, &t) == TSR_OK);
            CHECK_MSG(!strcmp(tsr_chat_template_name(t), builtin), "%s: detected %s, want %s", name,
                      tsr_chat_template_name(t), builtin);
            check_all_cases(t, name, tpl);
            tsr_chat_template_free(t);
        }
    }

    /* SmolLM2's default system message comes out of its Jinja exactly. */
    {
        const cJSON *tpl = fixture_by_name(templates, "smollm2");
        CHECK(tpl != NULL);
        tsr_chat_template *t = NULL;
        CHECK(tsr_chat_template_detect(cJSON_GetObjectItem(tpl, "jinja")->valuestring, NULL, &t) == TSR_OK);
        const char *ds = tsr_chat_template_default_system(t);
        CHECK(ds && !strcmp(ds, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
        const char *const *sw = tsr_chat_template_stop_words(t);
        CHECK(sw && sw[0] && !strcmp(sw[0], "<|im_end|>") && !sw[1]);
        tsr_chat_template_free(t);
    }

    /* The default model's own GGUF, read by Tessera's reader: the same Jinja as the fixture,
     * detected as chatml with SmolLM2's default system message. */
    {
        char *model = tsr_default_model_path();
        tsr_gguf *g = NULL;
        if (!tsr_path_exists(model)) {
            fprintf(stderr, "note: %s absent; GGUF detection check skipped\n", model);
        } else if (tsr_gguf_open(model, &g) != TSR_OK) {
            CHECK_MSG(false, "%s", tsr_last_error());
        } else {
            char *jinja = tsr_gguf_get_str(g, "tokenizer.chat_template");
            char *gname = tsr_gguf_get_str(g, "general.name");
            CHECK(jinja != NULL);
            const cJSON *tpl = fixture_by_name(templates, "smollm2");
            CHECK(jinja && tpl && !strcmp(jinja, cJSON_GetObjectItem(tpl, "jinja")->valuestring));
            tsr_chat_template *t = NULL;
            CHECK(tsr_chat_template_detect(jinja, gname, &t) == TSR_OK);
            CHECK(!strcmp(tsr_chat_template_name(t), "chatml"));
            const char *ds = tsr_chat_template_default_system(t);
            CHECK(ds && !strcmp(ds, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
            if (tpl) check_all_cases(t, "smollm2 (from the GGUF)", tpl);
            tsr_chat_template_free(t);
            free(jinja);
            free(gname);
            tsr_gguf_close(g);
        }
        free(model);
    }

    /* 2. Built-ins by name, and detect() from a model name alone (no Jinja), render the same. */
    static const struct { const char *fixture, *builtin, *model; } by_name[] = {
        {"smollm2", "smollm2", "SmolLM2-135M-Instruct"}, {"qwen2", "qwen2", "Qwen2-7B-Instruct"},
        {"llama2", "llama2", "Llama-2-7b-chat-hf"},      {"llama3", "llama3", "Meta-Llama-3-8B-Instruct"},
        {"mistral", "mistral", "Mistral-7B-Instruct-v0.2"}, {"internlm2", "internlm2", "internlm2-chat-7b"},
    };
    for (size_t i = 0; i < sizeof by_name / sizeof by_name[0]; i++) {
        const cJSON *tpl = fixture_by_name(templates, by_name[i].fixture);
        CHECK(tpl != NULL);
        if (!tpl) continue;
        tsr_chat_template *t = NULL;
        CHECK_MSG(tsr_chat_template_load(by_name[i].builtin, &t) == TSR_OK, "%s", tsr_last_error());
        CHECK(!strcmp(tsr_chat_template_name(t), by_name[i].builtin));
        check_all_cases(t, by_name[i].builtin, tpl);
        tsr_chat_template_free(t);
        CHECK(tsr_chat_template_detect(NULL, by_name[i].model, &t) == TSR_OK);
        CHECK_MSG(!strcmp(tsr_chat_template_name(t), by_name[i].builtin), "model %s -> %s", by_name[i].model,
                  tsr_chat_template_name(t));
        check_all_cases(t, by_name[i].model, tpl);
        tsr_chat_template_free(t);
    }
    /* Every listed built-in loads. */
    for (const char *const *n = tsr_chat_template_builtin_names(); *n; n++) {
        tsr_chat_template *t = NULL;
        CHECK(tsr_chat_template_load(*n, &t) == TSR_OK);
        tsr_chat_template_free(t);
    }
    /* Nothing to go on: chatml without a default system message. */
    {
        tsr_chat_template *t = NULL;
        CHECK(tsr_chat_template_detect(NULL, NULL, &t) == TSR_OK);
        CHECK(!strcmp(tsr_chat_template_name(t), "chatml") && !tsr_chat_template_default_system(t));
        tsr_chat_template_free(t);
        CHECK(tsr_chat_template_detect("{{ messages }}", "gpt2", &t) == TSR_OK);
        CHECK(!strcmp(tsr_chat_template_name(t), "chatml"));
        tsr_chat_template_free(t);
        /* Escaped quotes inside the default system literal are unescaped as Jinja does. */
        CHECK(tsr_chat_template_detect("{{ '<|im_start|>system\\nIt\\'s me.<|im_end|>\\n' }}", NULL, &t) == TSR_OK);
        CHECK(tsr_chat_template_default_system(t) && !strcmp(tsr_chat_template_default_system(t), "It's me."));
        tsr_chat_template_free(t);
    }

    /* 3. LMDeploy-form JSON files. */
    char *dir = tsr_test_tmpdir();
    CHECK(dir != NULL);
    {
        /* The Qwen2 template written out in LMDeploy's form renders what HF renders. */
        char *p = write_tmp(dir, "qwen.json",
                            "{\"model_name\": \"my-qwen\", \"system\": \"<|im_start|>system\\n\","
                            " \"meta_instruction\": \"You are a helpful assistant.\", \"eosys\": \"<|im_end|>\\n\","
                            " \"user\": \"<|im_start|>user\\n\", \"eoh\": \"<|im_end|>\\n\","
                            " \"assistant\": \"<|im_start|>assistant\\n\", \"eoa\": \"<|im_end|>\","
                            " \"separator\": \"\\n\", \"capability\": \"chat\", \"stop_words\": [\"<|im_end|>\"]}");
        tsr_chat_template *t = NULL;
        CHECK_MSG(tsr_chat_template_load(p, &t) == TSR_OK, "%s", tsr_last_error());
        if (t) {
            CHECK(!strcmp(tsr_chat_template_name(t), "my-qwen"));
            check_all_cases(t, "qwen.json", fixture_by_name(templates, "qwen2"));
            tsr_chat_template_free(t);
        }
        free(p);
        /* model_name naming a built-in starts from it; the file overrides fields. */
        p = write_tmp(dir, "l3.json", "{\"model_name\": \"llama3\", \"meta_instruction\": \"Be brief.\","
                                      " \"stop_words\": [\"<|eot_id|>\"]}");
        CHECK(tsr_chat_template_load(p, &t) == TSR_OK);
        if (t) {
            tsr_chat_message m = {"user", " hi "};
            char *out = NULL;
            CHECK(tsr_chat_template_render(t, &m, 1, true, &out) == TSR_OK);
            CHECK(out && !strcmp(out, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief."
                                      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                                      "<|start_header_id|>assistant<|end_header_id|>\n\n"));
            free(out);
            const char *const *sw = tsr_chat_template_stop_words(t);
            CHECK(sw[0] && !strcmp(sw[0], "<|eot_id|>") && !sw[1]);
            tsr_chat_template_free(t);
        }
        free(p);
        /* The extension switches: fold the system into the first user turn, no default. */
        p = write_tmp(dir, "fold.json", "{\"user\": \"[U]\", \"eoh\": \"[/U]\", \"assistant\": \"[A]\","
                                        " \"eoa\": \"[/A]\", \"system\": \"<S>\", \"eosys\": \"</S>\","
                                        " \"bos\": \"<bos>\", \"generation_prompt\": \"\", \"system_in_first_user\": true,"
                                        " \"strip_content\": true, \"meta_instruction\": \"default\","
                                        " \"inject_meta_instruction\": false}");
        CHECK(tsr_chat_template_load(p, &t) == TSR_OK);
        if (t) {
            tsr_chat_message m[] = {{"system", "sys"}, {"user", " u1 "}, {"assistant", "a1"}, {"user", "u2"}};
            char *out = NULL;
            CHECK(tsr_chat_template_render(t, m, 4, true, &out) == TSR_OK);
            CHECK(out && !strcmp(out, "<bos>[U]<S>sys</S> u1[/U][A]a1[/A][U]u2[/U]"));
            free(out);
            CHECK(tsr_chat_template_render(t, m + 1, 1, true, &out) == TSR_OK);
            CHECK(out && !strcmp(out, "<bos>[U]u1[/U]"));
            CHECK(tsr_chat_template_default_system(t) == NULL);
            free(out);
            tsr_chat_template_free(t);
        }
        free(p);
    }

    /* 4. Errors a user can cause: clear messages, no template, no crash. */
    {
        tsr_chat_template *t = (tsr_chat_template *)1;
        CHECK(tsr_chat_template_load("no-such-template", &t) == TSR_ERR_NOT_FOUND && t == NULL);
        CHECK(strstr(tsr_last_error(), "no-such-template") && strstr(tsr_last_error(), "chatml"));
        CHECK(tsr_chat_template_load("", &t) == TSR_ERR_INVALID_ARG);
        CHECK(load_text(dir, "{\"user\": \"x\"") == TSR_ERR_FORMAT);               /* truncated */
        CHECK(strstr(tsr_last_error(), "not valid JSON"));
        CHECK(load_text(dir, "") == TSR_ERR_FORMAT);
        CHECK(load_text(dir, "[1, 2]") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "object"));
        CHECK(load_text(dir, "{\"user\": 5}") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "'user' must be a string"));
        CHECK(load_text(dir, "{\"stop_words\": \"</s>\"}") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "stop_words"));
        CHECK(load_text(dir, "{\"stop_words\": [\"</s>\", 3]}") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "stop_words'[1]"));
        CHECK(load_text(dir, "{\"model_name\": 7}") == TSR_ERR_FORMAT);
        CHECK(load_text(dir, "{\"strip_content\": \"yes\"}") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "strip_content"));
        CHECK(load_text(dir, "{\"usr\": \"typo\"}") == TSR_ERR_FORMAT);
        CHECK(strstr(tsr_last_error(), "unknown key 'usr'"));
        CHECK(load_text(dir, "{\"inject_meta_instruction\": true}") == TSR_ERR_FORMAT);
        CHECK(load_text(dir, "{\"meta_instruction\": null, \"user\": \"u\"}") == TSR_OK);

        CHECK(tsr_chat_template_load("chatml", &t) == TSR_OK);
        char *out = (char *)1;
        CHECK(tsr_chat_template_render(t, NULL, 0, true, &out) == TSR_ERR_INVALID_ARG && out == NULL);
        tsr_chat_message bad_role = {"tool", "x"};
        CHECK(tsr_chat_template_render(t, &bad_role, 1, true, &out) == TSR_ERR_INVALID_ARG);
        CHECK(strstr(tsr_last_error(), "'tool'"));
        tsr_chat_message no_content = {"user", NULL};
        CHECK(tsr_chat_template_render(t, &no_content, 1, true, &out) == TSR_ERR_INVALID_ARG);
        tsr_chat_template_free(t);

        /* A system message after the first is fine in chatml, refused where it is folded. */
        tsr_chat_message mid[] = {{"user", "a"}, {"assistant", "b"}, {"system", "c"}, {"user", "d"}};
        CHECK(tsr_chat_template_load("chatml", &t) == TSR_OK);
        CHECK(tsr_chat_template_render(t, mid, 4, true, &out) == TSR_OK);
        CHECK(out && strstr(out, "<|im_start|>system\nc<|im_end|>\n<|im_start|>user\nd"));
        free(out);
        tsr_chat_template_free(t);
        CHECK(tsr_chat_template_load("mistral", &t) == TSR_OK);
        CHECK(tsr_chat_template_render(t, mid, 4, true, &out) == TSR_ERR_INVALID_ARG);
        tsr_chat_template_free(t);
        CHECK(tsr_chat_template_load("llama2", &t) == TSR_OK);
        tsr_chat_message starts_assistant[] = {{"assistant", "a"}, {"user", "b"}};
        CHECK(tsr_chat_template_render(t, starts_assistant, 2, true, &out) == TSR_ERR_INVALID_ARG);
        CHECK(strstr(tsr_last_error(), "alternate"));
        tsr_chat_template_free(t);
    }

    free(dir);
    free(path);
    cJSON_Delete(root);
    return tsr_test_finish();
}
