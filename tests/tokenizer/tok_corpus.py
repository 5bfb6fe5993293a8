"""The parity corpus: hand-picked strings that exercise every branch of the split patterns,
normalizers, byte fallback and added-token matching, plus deterministic random mixes of them.
Each entry is one input to `tessera tokenize --lines` (so it may hold newlines and tabs)."""
import random

FIXED = [
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "multiple   spaces   between   words",
    "tabs\tbetween\t\twords\t",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\nendings\r\n",
    "mixed \t \n \r\n whitespace   \n\n  \t",
    "\n\n\n",
    " ",
    "   ",
    "\t",
    "It's, I'm, you're, we've, they'll, he'd, don't, IT'S, YOU'RE, We'Ve, She'LL",
    "'s 't 're 've 'm 'll 'd ' 'x ''",
    "The year 2024 had 366 days; pi is 3.14159 and e is 2.71828.",
    "1234567890 12 345 6789 0000001",
    "Phone: +1 (555) 123-4567, price $1,299.99, 50% off, 3/4 cup",
    "Numbers in other scripts: \u0663\u0664\u0665 \u096a\u096b \u2460\u2461 x\u00b2 \u00bd",
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
    "\u4e2d\u6587\u548cEnglish\u6df7\u5408\u5728\u4e00\u8d77\uff0c\u8fd8\u6709\u6570\u5b57123\u3002",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c\uff01\u3000\u5168\u89d2\u30b9\u30da\u30fc\u30b9",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4. \uc548\ub155\ud558\uc138\uc694!",
    "Emoji: \U0001f600\U0001f602\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f \U0001f1fa\U0001f1f8",
    "\U0001f680 rocket launch \U0001f525\U0001f525\U0001f525",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * y[i];\n}",
    "if x == 0 && y != 1 || z >= 2:\n        pass",
    "<div class=\"main\"><p>Hello &amp; welcome</p></div>",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "path/to/file.txt C:\\Users\\name\\file.doc https://example.com/a?b=c&d=e#frag",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe \u00e7a va",
    "cafe\u0301 decomposed e\u0301 and A\u030a and n\u0303",
    "\u1100\u1161\u11a8 jamo sequence \u1112\u1161\u11ab",
    "\u03a9\u2126 ohm and \u212b angstrom, \u0958 qa",
    "\u017f long s, 'sTATE, '\u017f, \u212a kelvin",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u05e9\u05dc\u05d5\u05dd",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u1ec3 Vi\u1ec7t",
    "nbsp\u00a0here, thin\u2009space, ideographic\u3000space, nel\u0085x",
    "zero\u200bwidth and soft\u00adhyphen and bom\ufeffchar",
    "control \x01\x02\x7f chars",
    "punctuation!!! ??? ... --- ___ *** ((( ))) [[[ ]]] {{{ }}}",
    "\u201csmart quotes\u201d and \u2018single\u2019 \u2014 dashes \u2013 and \u2026 ellipsis",
    "a" * 300,
    "\u4e00" * 120,
    "ab" * 100 + " " + "12" * 50,
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text <|endoftext|> spaced",
    "<|im_start|><|im_end|><|im_start|>",
    "<s>Hello</s> <s> spaced </s> <unk>",
    "not special: <|im_start |> <im_start> <|IM_START|>",
    "<\uff5cbegin\u2581of\u2581sentence\uff5c>DeepSeek<\uff5cend\u2581of\u2581sentence\uff5c>",
    "\u2581already metaspace \u2581\u2581 chars",
    "<0x41> looks like a byte token",
    "Mixed\u00a0\u4e2d\u6587 and \U0001f600 with  2  spaces\tand 123,456.78",
]

FRAGMENTS = [
    "the", " quick", " brown", " fox", "jumps", " over", "lazy", " dog", "'s", "'LL", " 42", "007", "3.14",
    " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\u3000", "\u00a0", ",", ".", "!", "?", " (", ")", "\"",
    "\u4f60\u597d", "\u4e16\u754c", "\u3053\u3093\u306b\u3061\u306f", "\u30ab\u30bf\u30ab\u30ca",
    "\uc548\ub155", "\U0001f600", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "e\u0301", "\u00e9", "\u1100\u1161",
    "\u11a8", "\u0663", "\u00b2", "\u2460", "x", "Zz", "__init__", "->", "==", "{", "}", ";", "//", "#",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "\u2581", "\u017f", "\u0627\u0644",
    "\u041c\u0438\u0440", "caf\u00e9", "\u0301", "\U00010348", "\ufffd", "12345", " 6", "  7", "\t8",
]


def corpus(n_random=400, seed=1234):
    rng = random.Random(seed)
    out = list(FIXED)
    for _ in range(n_random):
        k = rng.randint(1, 12)
        out.append("".join(rng.choice(FRAGMENTS) for _ in range(k)))
    return out
