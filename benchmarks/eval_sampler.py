"""Sampled generation: transformers' multinomial vs the inverse-CDF sampler (evals/sampling.py), and
the batch size, side by side on the same toxicity prompts (gemma-3-270m, bf16 as the eval stage
casts it, 1 thread, prefix reuse on as in the default path). The configurations take turns per
round, so the machine's changing load hits them alike. Also prints a torch.profiler breakdown
(self CPU time, by op and input shape) of one batch per configuration with `--profile`.

    nice -n 10 .venv/bin/python benchmarks/eval_sampler.py [--prompts 64] [--rounds 2] [--out benchmarks/results/eval_sampler.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vertical_prompts(vertical: str, limit: int, data_dir: str, entry: dict | None = None) -> list[str]:
    """The exact prompts a vertical's default entry (updated by `entry`) sends to the model (a
    stand-in model records them)."""
    from rlhf_trust import config, evals
    from rlhf_trust.evals.backends import CallableBackend

    ecfg = config.load("eval", ROOT / "params.yaml")
    seen: list[str] = []
    stub = CallableBackend(lambda p, i: (seen.append(p), "No.")[1], loglik=lambda c, x: -1.0)
    stub.progress = False
    evals.run(vertical, stub, data_dir=data_dir, seed=0, settings_entry={**ecfg.verticals[vertical], **(entry or {}), "limit": limit},
              n_boot=10)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--vertical", default="toxicity")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default="multinomial:16,inverse_cdf:16,inverse_cdf:32,inverse_cdf:64")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from rlhf_trust import config
    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.models import build_base, load_causal_lm

    torch.set_num_threads(1)
    ecfg = config.load("eval", ROOT / "params.yaml")
    entry = ecfg.verticals[args.vertical]
    temperature, n_new = float(entry.get("temperature", 0.0)), int(entry["max_new_tokens"])
    prompts = vertical_prompts(args.vertical, max(1, args.prompts // 4), args.data_dir)[:args.prompts]
    mcfg = config.load("model", ROOT / "params.yaml")
    mcfg.spec = args.model
    model, tok = load_causal_lm(build_base(Path(tempfile.mkdtemp(prefix="bench-")) / "base", mcfg))
    model = copy.deepcopy(model).to(torch.bfloat16)
    configs = [(s, int(b)) for s, b in (c.split(":") for c in args.configs.split(","))]
    backends = {c: HFBackend(model, tok, batch_size=c[1], progress=False, sampler=c[0]) for c in configs}
    for b in backends.values():
        b.generate_units([("Warm-up.", 0)], max_new_tokens=2, temperature=temperature or 0.0, seed=0)
    units = [(p, 0) for p in prompts]
    cpu = {c: 0.0 for c in configs}
    for _ in range(args.rounds):
        for c, b in backends.items():
            c0 = time.process_time()
            b.generate_units(units, max_new_tokens=n_new, temperature=temperature, seed=0)
            cpu[c] += time.process_time() - c0
    base = cpu[configs[0]]
    rows = {f"{s}@{b}": {"cpu_s_per_unit": round(cpu[(s, b)] / (args.rounds * len(units)), 4),
                         "speedup_vs_first": round(base / cpu[(s, b)], 2)} for s, b in configs}
    for k, r in rows.items():
        print(k, json.dumps(r), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for c, b in backends.items():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                b.generate_units(units[:c[1]], max_new_tokens=n_new, temperature=temperature, seed=0)
            print(c, prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=30, max_shapes_column_width=60))
    summary = {"model": args.model, "vertical": args.vertical, "units": len(units), "temperature": temperature,
               "max_new_tokens": n_new, "rounds": args.rounds, "threads": 1, "dtype": "bfloat16", "configs": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{configs[-1][0]}@{configs[-1][1]} vs {configs[0][0]}@{configs[0][1]}: "
          f"{rows[f'{configs[-1][0]}@{configs[-1][1]}']['speedup_vs_first']}x CPU s per unit")


if __name__ == "__main__":
    main()
