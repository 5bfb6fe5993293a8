"""Perplexity of a GGUF through transformers' GGUF loader, by the definition `tessera eval ppl`
uses (llama.cpp's: windows of CTX tokens from an empty cache, a new one every CTX tokens, the
second half of each scored), on token ids given in a file, so both tools score the same windows.
Not a CI test (it needs torch): the figure behind README's and the note's ppl table.

    tessera tokenize --no-special --file TEXT > ids.txt      # the same ids for both tools
    tessera eval ppl MODEL.gguf --ids ids.txt --ctx 512
    python tests/golden/hf_ppl.py MODEL.gguf ids.txt --ctx 512
"""
import argparse
import math
import os
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("ids")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=0)
    a = ap.parse_args()
    ids = [int(x) for x in open(a.ids).read().replace(",", " ").split()]
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(a.gguf)),
                                                 gguf_file=os.path.basename(a.gguf), dtype=torch.float32)
    model.eval()
    n_win = len(ids) // a.ctx
    if a.max_windows:
        n_win = min(n_win, a.max_windows)
    nll, count, t0 = 0.0, 0, time.time()
    with torch.no_grad():
        for w in range(n_win):
            x = torch.tensor([ids[w * a.ctx:(w + 1) * a.ctx]])
            logp = torch.log_softmax(model(x).logits[0].double(), dim=-1).numpy()
            first = a.ctx // 2
            for p in range(first, a.ctx):
                nll -= logp[p - 1, ids[w * a.ctx + p]]
                count += 1
    print(f"transformers {model.__class__.__name__} on {a.gguf}: windows {n_win} of {a.ctx}, "
          f"tokens scored {count}, ppl {math.exp(nll / count):.4f} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
