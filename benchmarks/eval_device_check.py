"""The batched engine's invariants on an accelerator (or any device), with a tiny random model.

Needs only torch, transformers, tokenizers and this package (PYTHONPATH=src): no data mirror, no
MLflow. Checks that left-padded batched greedy == one-at-a-time greedy, that `loglikelihood`
matches an unpadded forward pass, that sampling is seeded, and times engine vs batch-1 loop.

    PYTHONPATH=src python3 benchmarks/eval_device_check.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TEXTS = [f"Human: question {i} about dogs, cats and the weather in town {i % 7}?\n\nAssistant: "
         f"I think the answer is {i * 3} because the sky is blue and the grass is green." for i in range(200)]
PROMPTS = [t[: 20 + (7 * i) % 90] for i, t in enumerate(TEXTS[:64])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()

    import torch

    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    out: dict = {"torch": torch.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = build_tiny_base(Path(tmp) / "tiny", texts=TEXTS, hidden_size=128, layers=4, vocab_size=1024)
        model, tok = load_causal_lm(d, device=args.device)
    eng = HFBackend(model, tok, batch_size=64, fingerprint="t", progress=False)
    one = HFBackend(model, tok, batch_size=1, fingerprint="t", progress=False)
    a = eng.generate(PROMPTS[:16], max_new_tokens=12)
    b = one.generate(PROMPTS[:16], max_new_tokens=12)
    out["greedy_batched_equals_single"] = sum(x == y for x, y in zip(a, b)) / 16
    pairs = [(p, " the answer") for p in PROMPTS[:8]]
    got = eng.loglikelihood(pairs)
    errs = []
    for (ctx, cont), ll in zip(pairs, got):
        ids = tok(ctx + cont)["input_ids"]
        n_ctx = len(tok(ctx)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids], device=eng.device)).logits[0].float(), -1)
        errs.append(abs(ll - sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))))
    out["loglik_max_abs_err"] = max(errs)
    s1 = eng.generate(PROMPTS[:8], max_new_tokens=8, temperature=1.0, num_return_sequences=2, seed=0)
    s2 = eng.generate(PROMPTS[:8], max_new_tokens=8, temperature=1.0, num_return_sequences=2, seed=0)
    out["sampling_seeded"] = s1 == s2
    for name, be in (("engine", eng), ("batch1_loop", one)):
        be.generated_tokens = 0
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        be.generate(PROMPTS, max_new_tokens=args.max_new_tokens)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
        out[name] = {"seconds": round(secs, 3), "tokens_per_s": round(be.generated_tokens / secs, 1)}
    out["speedup"] = round(out["engine"]["tokens_per_s"] / out["batch1_loop"]["tokens_per_s"], 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
