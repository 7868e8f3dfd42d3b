"""The decode step: evals/decode.py's loop vs transformers' generate, side by side in one process on
the same items (gemma-3-270m cast once to bf16 as the eval stage does, or `--dtype float32`, 1 thread, prefix reuse on,
each vertical's own batch size). The two take turns per round, so the machine's changing load hits
them alike; every round also checks that both paths return identical text. `--profile` adds a
torch.profiler table (self CPU time by op and input shape) of one batch per path and vertical.

    nice -n 10 .venv/bin/python benchmarks/eval_decode.py [--rounds 2] [--profile] [--out benchmarks/results/eval_decode.json]

Verticals (default params.yaml entries): privacy (greedy, 16 tokens, 64 rows), toxicity (sampled at
T 0.5 by the inverse-CDF sampler, 12 tokens, 64 rows), truthfulness' generation protocol (greedy,
8 tokens, 16 rows).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_sampler import vertical_prompts

# vertical -> (params entry overrides, rows measured, batch size)
PLAN = {"privacy": ({}, 64, 64), "toxicity": ({}, 64, 64), "truthfulness": ({"protocol": "generation"}, 16, 16)}


def load_model(spec: str, dtype: str):
    import torch

    from rlhf_trust import config
    from rlhf_trust.models import build_base, load_causal_lm

    local = ROOT / "outputs" / "models" / "base"
    if spec == "gemma-3-270m" and (local / "config.json").is_file():
        model, tok = load_causal_lm(local)
    else:
        mcfg = config.load("model", ROOT / "params.yaml")
        mcfg.spec = spec
        model, tok = load_causal_lm(build_base(Path(tempfile.mkdtemp(prefix="bench-")) / "base", mcfg))
    return copy.deepcopy(model).to(getattr(torch, dtype)), tok  # the stage's cast: float32 load, bf16 once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--verticals", default=",".join(PLAN))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="the eval stage's cast (float32 where the CPU has no fast bf16 matmul)")
    ap.add_argument("--rows", default="", help="rows per vertical instead of PLAN's, e.g. toxicity=16")
    ap.add_argument("--check-rows", type=int, default=0,
                    help="extra rows per vertical compared for identical text only (not timed)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from rlhf_trust import config
    from rlhf_trust.evals.backends import HFBackend

    torch.set_num_threads(1)
    ecfg = config.load("eval", ROOT / "params.yaml")
    model, tok = load_model(args.model, args.dtype)
    rows_over = {k: int(n) for k, n in (kv.split("=") for kv in args.rows.split(",") if kv)}
    summary: dict = {"model": args.model, "dtype": args.dtype, "threads": 1, "rounds": args.rounds,
                     "prefix_reuse": True, "verticals": {}}
    tot = {"loop": 0.0, "generate": 0.0}
    for v in args.verticals.split(","):
        over, rows, bs = PLAN[v]
        rows = rows_over.get(v, rows)
        entry = {**ecfg.verticals[v], **over}
        temperature, n_new = float(entry.get("temperature", 0.0)), int(entry["max_new_tokens"])
        want = rows + args.check_rows
        prompts: list[str] = []
        limit = max(1, want // 8)
        while len(prompts) < want:
            prompts = vertical_prompts(v, limit, args.data_dir, entry=over)
            if len(prompts) >= want or limit > 10_000:
                break
            limit *= 2
        units = [(p, 0) for p in prompts[:rows]]
        extra = [(p, 0) for p in prompts[rows:want]]
        be = {d: HFBackend(model, tok, batch_size=bs, progress=False, decode=d) for d in ("loop", "generate")}
        for b in be.values():
            b.generate_units([("Warm-up.", 0)], max_new_tokens=2, temperature=temperature, seed=0)
        cpu = {d: 0.0 for d in be}
        wall = {d: 0.0 for d in be}
        texts: dict[str, list[str]] = {}
        same = True
        for r in range(args.rounds):
            for d in (("loop", "generate") if r % 2 == 0 else ("generate", "loop")):
                be[d].generated_tokens = 0
                c0, w0 = time.process_time(), time.perf_counter()
                texts[d] = be[d].generate_units(units, max_new_tokens=n_new, temperature=temperature, seed=r)
                cpu[d] += time.process_time() - c0
                wall[d] += time.perf_counter() - w0
            same &= texts["loop"] == texts["generate"]
        n_same = sum(a == b for a, b in zip(texts["loop"], texts["generate"]))
        checked = len(units)
        if extra:
            got = {d: be[d].generate_units(extra, max_new_tokens=n_new, temperature=temperature, seed=0) for d in be}
            same &= got["loop"] == got["generate"]
            n_same += sum(a == b for a, b in zip(got["loop"], got["generate"]))
            checked += len(extra)
        n = args.rounds * len(units)
        row = {"units": len(units), "batch_size": bs, "temperature": temperature, "max_new_tokens": n_new,
               "generated_tokens_per_pass": be["loop"].generated_tokens,
               "cpu_s_per_unit": {d: round(cpu[d] / n, 4) for d in be},
               "wall_s_per_unit": {d: round(wall[d] / n, 4) for d in be},
               "speedup_cpu": round(cpu["generate"] / cpu["loop"], 3),
               "speedup_wall": round(wall["generate"] / wall["loop"], 3),
               "identical_text": bool(same), "rows_compared": checked, "rows_identical": n_same}
        for d in be:
            tot[d] += cpu[d] / args.rounds
        print(v, json.dumps(row), flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            row["profile"] = {}
            for d, b in be.items():
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    b.generate_units(units[:bs], max_new_tokens=n_new, temperature=temperature, seed=0)
                table = prof.key_averages(group_by_input_shape=True).table(
                    sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=34, max_shapes_column_width=58)
                print(f"== {v} / {d}: one batch of {min(bs, len(units))} rows ==\n{table}", flush=True)
                top = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
                total = sum(e.self_cpu_time_total for e in prof.key_averages())
                row["profile"][d] = {"total_self_cpu_s": round(total / 1e6, 3), "top": [
                    {"op": e.key, "shapes": str(e.input_shapes)[:120], "calls": e.count,
                     "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3)} for e in top[:14]]}
        summary["verticals"][v] = row
    summary["all_cpu_s_per_pass"] = {d: round(t, 2) for d, t in tot.items()}
    summary["all_speedup_cpu"] = round(tot["generate"] / tot["loop"], 3)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"decode loop vs generate, all measured units: {summary['all_speedup_cpu']}x CPU s; identical text: "
          f"{all(r['identical_text'] for r in summary['verticals'].values())}")


if __name__ == "__main__":
    main()
