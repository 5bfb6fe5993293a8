/* Chat templates (rank 0 only): a registry of built-ins (chatml for Qwen2 / SmolLM2, llama2,
 * llama3, internlm2, mistral) chosen from the model's template markers, or a user's
 * `--chat-template NAME|FILE.json` in LMDeploy's JSON form (system, meta_instruction, user,
 * assistant, eosys, eoh, eoa, separator, stop_words).  The rendered prompt equals what
 * transformers' apply_chat_template makes from the model's own Jinja template. */
#ifndef TSR_CHAT_TEMPLATE_H
#define TSR_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

typedef struct tsr_chat_message {
    const char *role;      /* "system" | "user" | "assistant" */
    const char *content;
} tsr_chat_message;

typedef struct tsr_chat_template tsr_chat_template;

/* By name ("chatml", "qwen2", "smollm2", "llama2", "llama3", "internlm2", "mistral") or a path
 * to a JSON file in LMDeploy's form (a "model_name" that names a built-in starts from it).
 * Besides LMDeploy's keys the file may set "bos", "generation_prompt" (strings) and
 * "inject_meta_instruction", "system_in_first_user", "strip_content", "alternate_roles"
 * (booleans); chat_template.c says what each means.  Bad JSON, a wrong type or an unknown key
 * is TSR_ERR_FORMAT naming the file and the key. */
tsr_status tsr_chat_template_load(const char *name_or_path, tsr_chat_template **out);
/* Pick a built-in from a model's Jinja template text (markers such as <|im_start|>) and/or its
 * architecture/model name; falls back to chatml. jinja may be NULL. */
tsr_status tsr_chat_template_detect(const char *jinja, const char *model_name, tsr_chat_template **out);
void tsr_chat_template_free(tsr_chat_template *t);
const char *tsr_chat_template_name(const tsr_chat_template *t);

/* Render messages to a prompt (malloc'd).  add_generation_prompt appends the assistant
 * header so the model answers next. */
tsr_status tsr_chat_template_render(const tsr_chat_template *t, const tsr_chat_message *msgs,
                                    size_t n_msgs, bool add_generation_prompt, char **out);
/* Stop words of the template (e.g. "<|im_end|>"); NULL-terminated array owned by t. */
const char *const *tsr_chat_template_stop_words(const tsr_chat_template *t);
/* The system message put first when a conversation has none (SmolLM2's, Qwen2's), or NULL. */
const char *tsr_chat_template_default_system(const tsr_chat_template *t);
/* Names tsr_chat_template_load accepts without a file; NULL-terminated, static. */
const char *const *tsr_chat_template_builtin_names(void);

#endif
