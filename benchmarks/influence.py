"""End-to-end influence (gradients + scores): our batched pipeline vs the study's method.

The study's method (AI4LIFE-GROUP/RLHF_Trust attribute_*.py, copying ykwon0407/DataInf):
one forward/backward per training example at batch size 1 through every LoRA tensor (only the
selected layers are kept), full-vocabulary logits at every position, gradients kept per example in a
dict of per-layer tensors, the test gradient averaged in a Python loop, then
`compute_hvp_proposed` and `compute_IF`: per layer, per example Python loops. Reimplemented here
from that code (with its DPO log-prob bug fixed, so both methods compute the same quantity).

Ours: `PerExampleGrads` (one batched backward per batch, hooks + einsum; autograd stops at the
first selected tensor; logits only where a completion token is predicted), the sharded gradient
store on disk (written and read back, as the stage does), then `datainf_scores_chunked`.
Timed: gradients + scores (model loading and imports excluded, the same for both).

Each method runs in its own subprocess so its peak RSS is its own. Same model, pairs, layers and
loss; the scores must agree (relative L2 difference <= 1e-4). Usage:
    .venv/bin/python benchmarks/influence.py [--n 128] [--loss sft|dpo|bt] [--layers last:2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RLHF_TRUST_DATA", ROOT / ".." / "shared" / "data"))


def setup(args):
    """(model, ref, tok, layers, train rows, test rows): tiny GPTNeoX + rank-8 LoRA on real HH pairs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_trust.attribution import grads
    from rlhf_trust.data import records

    rows = records.load("hh_train", DATA)
    rows = [{"id": r["id"], "prompt": r["prompt"][-args.chars:], "chosen": r["chosen"][:args.chars],
             "rejected": r["rejected"][:args.chars]} for r in rows[: args.n + args.n_test]]
    base = Path(args.workdir) / "base"
    torch.manual_seed(0)
    cls = AutoModelForSequenceClassification if args.loss == "bt" else AutoModelForCausalLM
    model = cls.from_pretrained(str(base), **({"num_labels": 1} if args.loss == "bt" else {}))
    tok = AutoTokenizer.from_pretrained(str(base))
    model.config.pad_token_id = tok.pad_token_id
    model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=False,
        target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        task_type="SEQ_CLS" if args.loss == "bt" else "CAUSAL_LM")).eval()
    ref = AutoModelForCausalLM.from_pretrained(str(base)).eval() if args.loss == "dpo" else None
    model = model.to(args.device)
    ref = ref.to(args.device) if ref is not None else None
    layers = grads.select_layers(grads.lora_param_names(model), args.layers)
    return model, ref, tok, layers, rows[: args.n], rows[args.n:]


def run_study(args) -> tuple[list[float], float]:
    """One backward per example, then DataInf's IFEngine loops (compute_hvp_proposed + compute_IF)."""
    import torch

    from rlhf_trust.attribution import losses

    model, ref, tok, layers, train, test = setup(args)
    t0 = time.perf_counter()
    params = dict(model.named_parameters())  # every LoRA tensor trainable, as in the study's PeftModel

    def grad_dict(rows):
        out = {}
        for i, r in enumerate(rows):
            model.zero_grad()
            loss, _ = losses.per_example_losses(args.loss, model, tok, [r], args.max_length, ref_model=ref, beta=0.1,
                                                trim=False, device=args.device)
            loss.sum().backward()
            out[i] = {l: params[l].grad.detach().cpu().clone() for l in layers}  # the study kept them on CPU
        return out

    tr, val = grad_dict(train), grad_dict(test)
    n_train, n_val = len(tr), len(val)
    v = {}
    for w in val[0]:  # compute_val_grad_avg
        v[w] = torch.zeros(val[0][w].shape)
        for i in val:
            v[w] += val[i][w] / n_val
    hvp = {}
    for w in v:  # compute_hvp_proposed(lambda_const_param=10)  # noqa: PLC0206 (the study's loop, verbatim)
        s = torch.zeros(n_train)
        for i in tr:
            s[i] = torch.mean(tr[i][w] ** 2)
        lam = torch.mean(s) / 10
        h = torch.zeros(v[w].shape)
        for i in tr:
            g = tr[i][w]
            c = torch.sum(v[w] * g) / (lam + torch.sum(g ** 2))
            h += (v[w] - c * g) / (n_train * lam)
        hvp[w] = h
    scores = []
    for i in tr:  # compute_IF
        total = 0
        for w in v:
            total += torch.sum(hvp[w] * tr[i][w])
        scores.append(float(-total))
    return scores, time.perf_counter() - t0


def run_ours(args) -> tuple[list[float], float]:
    from rlhf_trust.attribution import datainf, grads, losses

    model, ref, tok, layers, train, test = setup(args)
    t0 = time.perf_counter()
    pe = grads.PerExampleGrads(model, layers)

    def compute(rows):
        return pe.compute(lambda: losses.per_example_losses(args.loss, model, tok, rows, args.max_length,
                                                             ref_model=ref, beta=0.1, device=args.device), len(rows))

    store = Path(args.workdir) / "store"
    grads.write_store(store, grads.shard_batches(train, args.shard_size, args.shard_size),
                      lambda items: grads.compute_sorted(items, args.batch_size, compute, grads.pair_length),
                      len(train), layers, pe.shapes, args.shard_size, "float32")
    tg = compute(test)
    v = {k: x.mean(0) for k, x in tg.items()}
    scores = datainf.datainf_scores_chunked(lambda: grads.iter_store(store), v, 0.1).tolist()
    return scores, time.perf_counter() - t0


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fn = run_study if args.method == "study" else run_ours
    if args.warmup:  # lazy imports and first-call allocations are not what is being compared
        warm = Path(tempfile.mkdtemp(prefix="warm-", dir=args.workdir))
        (warm / "base").symlink_to(Path(args.workdir) / "base")
        fn(argparse.Namespace(**{**vars(args), "n": args.warmup, "n_test": 2, "workdir": str(warm)}))
    scores, seconds = fn(args)  # excludes imports/loading
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0.0
    print(json.dumps({"method": args.method, "seconds": seconds, "peak_rss_mb": peak_mb, "peak_gpu_mb": gpu_mb,
                      "scores": scores}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="training pairs")
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--loss", choices=["sft", "dpo", "bt"], default="dpo")
    ap.add_argument("--layers", default="last:1")
    ap.add_argument("--chars", type=int, default=300, help="prompt tail / response head kept, characters")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both methods (this CPU has 2 cores)")
    ap.add_argument("--warmup", type=int, default=8, help="untimed warm-up examples per method (0 = none)")
    ap.add_argument("--method", choices=["study", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        return child(args)

    import torch

    torch.set_num_threads(args.threads)
    from rlhf_trust.data import records
    from rlhf_trust.models import build_tiny_base

    work = Path(tempfile.mkdtemp(prefix="bench-influence-"))
    texts = [r["prompt"] + r["chosen"] for r in records.load("hh_train", DATA)[:300]]
    build_tiny_base(work / "base", texts=texts, hidden_size=args.hidden, layers=args.n_layers, heads=4,
                    vocab_size=args.vocab)
    results = {}
    for method in ("study", "ours"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--method", method, "--workdir", str(work)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{method} failed:\n{proc.stderr[-3000:]}")
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    a, b = np.array(results["ours"]["scores"]), np.array(results["study"]["scores"])
    rel_l2 = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    rel_max = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    s, o = results["study"], results["ours"]
    print(f"model: tiny-gpt-neox hidden={args.hidden} layers={args.n_layers} vocab={args.vocab}, LoRA r=8 all Linear, "
          f"selected {args.layers}; loss={args.loss}; n={args.n} train pairs, {args.n_test} test; device {args.device}, "
          f"{args.threads} CPU thread(s), {args.warmup} untimed warm-up examples per method")
    print(f"{'method':<42}{'seconds':>9}{'examples/s':>12}{'peak RSS MB':>13}{'peak GPU MB':>13}")
    for name, r in (("study: batch-1 backward + Python loops", s), ("ours: batched hooks + store + vectorised", o)):
        print(f"{name:<42}{r['seconds']:>9.2f}{args.n / r['seconds']:>12.1f}{r['peak_rss_mb']:>13.0f}"
              f"{r['peak_gpu_mb']:>13.0f}")
    print(f"speed-up: {s['seconds'] / o['seconds']:.1f}x (target >= 5x)")
    print(f"scores agree: relative L2 difference {rel_l2:.2e}, max |diff| / max |score| {rel_max:.2e} "
          f"(required <= 1e-4): {'OK' if rel_l2 <= 1e-4 else 'FAIL'}")
    if rel_l2 > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
