"""Batched generation engine vs the study's one-prompt-at-a-time loop, same model, same prompts.

The study's scripts call `model.generate` once per prompt (batch 1) with
`return_dict_in_generate=True, output_scores=True, output_hidden_states=True`. We time:
  study_loop   - that loop, flags included (greedy, our EOS so both stop at the same place)
  batch1_loop  - the same loop without the extra outputs (isolates the batching gain)
  engine       - HFBackend: length-sorted, left-padded batches of --batch-size
  engine_cached- the engine behind the sqlite cache, second pass (no model calls)
on the first N toxicity prompts (benign system prompt), greedy, --max-new-tokens each.
The methods take turns batch by batch (rotating order), so a shared machine's changing load
hits them alike. Prints tokens/s of each and the ratios, all measured in this one run.

    .venv/bin/python benchmarks/eval_throughput.py [--model-dir outputs/models/base | --tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def model_dir(args, tmp: Path) -> Path:
    if args.model_dir:
        return Path(args.model_dir)
    from rlhf_trust import config
    from rlhf_trust.models import build_base, build_tiny_base

    if args.tiny:
        return build_tiny_base(tmp / "tiny")
    return build_base(tmp / "base", config.ModelConfig(spec="gemma-3-270m"))


def count_new(tok_ids, eos_ids) -> int:
    for j, t in enumerate(tok_ids):
        if t in eos_ids:
            return j + 1
    return len(tok_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=None, help="a model dir with stage.json (default: gemma-3-270m)")
    ap.add_argument("--tiny", action="store_true", help="use a tiny random GPTNeoX instead")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-study-loop", action="store_true", help="time only the plain batch-1 loop")
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()

    import torch

    from rlhf_trust.data import records
    from rlhf_trust.evals import toxicity
    from rlhf_trust.evals.backends import CallableBackend, HFBackend
    from rlhf_trust.evals.cache import Cache, CachedBackend
    from rlhf_trust.models import load_causal_lm

    torch.set_num_threads(args.threads)
    recs = records.load("toxicity", args.data)[: args.prompts]
    prompts = [toxicity.build_prompt("benign", r["prompt"]) for r in recs]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        mdir = model_dir(args, Path(tmp))
        model, tok = load_causal_lm(mdir, device=args.device)
        load_s = time.perf_counter() - t0
        engine = HFBackend(model, tok, batch_size=args.batch_size, fingerprint="bench", progress=False)
        dev = engine.device

        def loop(ps: list[str], extra: dict) -> tuple[float, int, list[str]]:
            n, outs = 0, []
            t = time.perf_counter()
            for p in ps:  # the study's shape: one prompt, one generate call
                inputs = tok(p, return_tensors="pt").to(dev)
                with torch.inference_mode():
                    out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=engine.pad_id, eos_token_id=engine.eos_ids, **extra)
                seq = out.sequences if hasattr(out, "sequences") else out
                new = seq[0, inputs["input_ids"].shape[1]:].tolist()
                k = count_new(new, engine.eos_ids)
                n += k
                outs.append(tok.decode(new[:k], skip_special_tokens=True))
            return time.perf_counter() - t, n, outs

        def batched(ps: list[str]) -> tuple[float, int, list[str]]:
            engine.generated_tokens = 0
            t = time.perf_counter()
            gens = engine.generate(ps, max_new_tokens=args.max_new_tokens)
            return time.perf_counter() - t, engine.generated_tokens, [g[0] for g in gens]

        engine.generate(prompts[:2], max_new_tokens=2)  # warm-up (allocator, kernels)
        res: dict = {"model_dir": str(args.model_dir or ("tiny" if args.tiny else "gemma-3-270m")),
                     "device": str(dev), "threads": args.threads, "prompts": len(prompts),
                     "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                     "load_s": round(load_s, 2)}
        methods = {"engine": batched, "batch1_loop": lambda ps: loop(ps, {})}
        if not args.skip_study_loop:
            methods["study_loop"] = lambda ps: loop(ps, {"return_dict_in_generate": True, "output_scores": True,
                                                         "output_hidden_states": True})
        # Interleave: each round runs every method on the same batch of prompts, in rotating order,
        # so load from other processes on a shared machine hits all methods alike.
        runs = {name: [0.0, 0, []] for name in methods}
        names = list(methods)
        for r, start in enumerate(range(0, len(prompts), args.batch_size)):
            chunk = prompts[start:start + args.batch_size]
            for name in names[r % len(names):] + names[:r % len(names)]:
                secs, n, outs = methods[name](chunk)
                runs[name][0] += secs
                runs[name][1] += n
                runs[name][2] += outs
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[1] / v[0]:.1f} tok/s" for k, v in runs.items()),
                  file=sys.stderr, flush=True)
        cache = Cache(Path(tmp) / "c.sqlite")
        done = dict(zip(prompts, runs["engine"][2]))  # fill the cache with the engine's outputs
        cached = CachedBackend(CallableBackend(lambda p, i: done[p], fingerprint="bench"), cache, progress=False)
        cached.generate(prompts, max_new_tokens=args.max_new_tokens)
        t = time.perf_counter()
        cached.generate(prompts, max_new_tokens=args.max_new_tokens)
        res["engine_cached_rerun_s"] = round(time.perf_counter() - t, 4)
        res["engine_cached_rerun_model_calls"] = cached.misses - len(prompts)
        cache.close()
        for name, (secs, n, _) in runs.items():
            res[name] = {"seconds": round(secs, 2), "new_tokens": n, "tokens_per_s": round(n / secs, 2)}
        eng = res["engine"]["tokens_per_s"]
        for name in runs:
            if name != "engine":
                res[f"speedup_vs_{name}"] = round(eng / res[name]["tokens_per_s"], 2)
        base_outs = runs["batch1_loop"][2]
        res["greedy_outputs_identical"] = sum(a == b for a, b in zip(base_outs, runs["engine"][2])) / len(prompts)
    print(json.dumps(res, indent=2))
    if args.out:
        from rlhf_trust import fileio

        fileio.write_json(args.out, res)


if __name__ == "__main__":
    main()
