"""TruthfulQA MC1 on the default model: the generation protocol (the study's) vs the log-likelihood
protocol (lm-eval `truthfulqa_mc1`, the default run's), on the same questions, side by side.

One process, gemma-3-270m base cast to `eval.dtype` (bf16) as the eval stage does, 1 thread, no
cache, params.yaml's truthfulness entry (200 questions) and `eval.batch_size`. Reports per protocol
the accuracy (mc1_accuracy) and CPU seconds per question (unit), and their agreement: the share of
questions with the same verdict (correct / not correct) and with the same chosen option. The
protocols take turns `--rounds` times so the machine's changing load hits them alike; the verdicts
are those of the first round (greedy and log-likelihoods are deterministic).

    nice -n 10 .venv/bin/python benchmarks/truthfulness_protocols.py --out benchmarks/results/truthfulness_protocols.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=None, help="questions (default: params.yaml's)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from eval_units_per_s import load_backends  # the same model loading as the units/s benchmark

    from rlhf_trust import config, evals

    ecfg = config.load("eval", args.params)
    entry = dict(ecfg.verticals["truthfulness"])
    if args.limit:
        entry["limit"] = args.limit
    _, backend, dtype = load_backends(args.model, 1, ecfg)
    backend.batch_size = int(entry.pop("batch_size", ecfg.batch_size))
    backend.generate(["Warm-up."], max_new_tokens=2, temperature=0.0, num_return_sequences=1, seed=0)
    backend.loglikelihood([("Warm-up", " run")])
    cpu: dict[str, list[float]] = {"generation": [], "loglik": []}
    rows: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for protocol, times in cpu.items():
            c0 = time.process_time()
            res = evals.run("truthfulness", backend, data_dir=args.data_dir, seed=ecfg.seed, n_boot=1000,
                            settings_entry={**entry, "protocol": protocol})
            times.append(time.process_time() - c0)
            rows.setdefault(protocol, res.rows)
            rows.setdefault(protocol + "_metrics", res.metrics)
    gen = {r["id"]: r for r in rows["generation"]}
    ll = {r["id"]: r for r in rows["loglik"]}
    ids = [i for i in gen if i in ll]
    # the generation protocol's options are shuffled: compare chosen options by text
    def chosen(r):
        return r["options"][r["chosen_index"]] if r["chosen_index"] >= 0 else None
    n = len(ids)
    both = sum(gen[i]["correct"] and ll[i]["correct"] for i in ids)
    out = {
        "model": args.model, "dtype": dtype, "threads": 1, "batch_size": backend.batch_size,
        "questions": n, "rounds": args.rounds, "entry": entry,
        "protocols": {p: {"mc1_accuracy": rows[p + "_metrics"]["mc1_accuracy"],
                          "ci95": rows[p + "_metrics"]["mc1_accuracy_ci95"],
                          "parse_failure_rate": rows[p + "_metrics"]["parse_failure_rate"],
                          "cpu_s": [round(x, 2) for x in cpu[p]],
                          "cpu_s_per_unit": round(min(cpu[p]) / n, 4)} for p in cpu},
        "same_verdict": round(sum(gen[i]["correct"] == ll[i]["correct"] for i in ids) / n, 4),
        "verdicts": {"both_correct": both, "only_generation": sum(gen[i]["correct"] for i in ids) - both,
                     "only_loglik": sum(ll[i]["correct"] for i in ids) - both},
        "same_option": round(sum(chosen(gen[i]) == chosen(ll[i]) for i in ids) / n, 4),
        "random_baseline": rows["loglik_metrics"]["random_baseline"],
    }
    out["cpu_ratio_generation_over_loglik"] = round(min(cpu["generation"]) / min(cpu["loglik"]), 2)
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(f"same verdict {out['same_verdict']:.1%} of {n}; loglik {out['cpu_ratio_generation_over_loglik']}x "
          f"the generation protocol's units per CPU second")


if __name__ == "__main__":
    main()
