"""float32 vs bfloat16 evaluation on the same items, and the bfloat16 generation batch size.

One process, gemma-3-270m loaded once in float32 plus a bfloat16 copy (the cast `eval.dtype:
bfloat16` does after loading), 1 thread, no cache. Per vertical both dtypes run the default
params entry (protocol, prefix reuse, batch size) on the same items, in alternating order so a
change in the machine's load hits them alike; reported per vertical:
  agreement   share of units (units.csv rows) whose value is the same in both dtypes
              (|diff| < 1e-6: the same verdict for binary units, the same scored text for toxicity)
  same_text   share of samples.jsonl rows with the identical generation (generation verticals)
  headline    the headline in each dtype (what a flip does to the reported number)
  speed       CPU seconds per unit, float32 / bfloat16
`--batch` instead times bfloat16 generation at batch sizes 16 / 32 / 64 on the same items
(toxicity and truthfulness: the decode-heavy verticals), each configuration back to back.
`--fullsize` times bfloat16 alone on the default entries at their full size (the sizing check).

    nice -n 10 .venv/bin/python benchmarks/eval_dtype.py --out benchmarks/results/eval_dtype.json
    nice -n 10 .venv/bin/python benchmarks/eval_dtype.py --batch --out benchmarks/results/eval_batch_bf16.json
    nice -n 10 .venv/bin/python benchmarks/eval_dtype.py --fullsize --out benchmarks/results/eval_fullsize_bf16.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"toxicity": 4, "bias": 16, "ethics": 40, "truthfulness": 16, "privacy": 2, "fairness": 10}
BATCH_LIMITS = {"toxicity": 16, "truthfulness": 32}


def load_models(spec: str, threads: int):
    """(float32 model, bfloat16 copy, tokenizer)."""
    import tempfile

    import torch

    from rlhf_trust import config
    from rlhf_trust.models import build_base, load_causal_lm

    torch.set_num_threads(threads)
    cfg = config.load("model", ROOT / "params.yaml")
    cfg.spec = spec
    d = build_base(Path(tempfile.mkdtemp(prefix="bench-base-")) / "base", cfg)
    model, tok = load_causal_lm(d)
    return model, copy.deepcopy(model).to(torch.bfloat16), tok


def timed(vertical: str, backend, entry: dict, data_dir: str, seed: int) -> dict:
    from rlhf_trust import evals

    t0, c0 = time.perf_counter(), time.process_time()
    res = evals.run(vertical, backend, data_dir=data_dir, seed=seed, settings_entry=entry, n_boot=200)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"units": len(res.units), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "cpu_s_per_unit": round(cpu / max(1, len(res.units)), 4),
            "headline": res.metrics[res.metrics["headline"]], "_units": dict(res.units),
            "_gen": [r.get("generation") for r in res.rows]}


def compare(a: dict, b: dict) -> dict:
    common = [u for u in a["_units"] if u in b["_units"]]
    same = sum(abs(a["_units"][u] - b["_units"][u]) < 1e-6 for u in common)
    gens = [(x, y) for x, y in zip(a["_gen"], b["_gen"]) if x is not None and y is not None]
    return {"units_compared": len(common), "agreement": round(same / max(1, len(common)), 3),
            "same_text": round(sum(x == y for x, y in gens) / len(gens), 3) if gens else None,
            "speed_ratio_bf16": round(a["cpu_s_per_unit"] / max(1e-9, b["cpu_s_per_unit"]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", action="store_true", help="time bfloat16 at batch sizes 16 / 32 / 64")
    ap.add_argument("--fullsize", action="store_true", help="bfloat16 only, the default entries' own limits")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--verticals", default=None)
    ap.add_argument("--limits", default=None, help='items per vertical, e.g. "truthfulness=48,privacy=5"')
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from rlhf_trust import config
    from rlhf_trust.evals import scorers
    from rlhf_trust.evals.backends import HFBackend

    ecfg = config.load("eval", args.params)
    fp32, bf16, tok = load_models(args.model, args.threads)
    scorers.get_scorer("profanity-check").score(["Warm-up."])
    limits = dict(BATCH_LIMITS if args.batch else LIMITS)
    limits.update({k: int(n) for k, n in (x.split("=") for x in (args.limits or "").split(",") if x)})
    names = args.verticals.split(",") if args.verticals else list(limits)
    out: dict = {"model": args.model, "threads": args.threads, "limits": {v: limits[v] for v in names}}
    t_start = time.perf_counter()

    def backend(model, bs):
        b = HFBackend(model, tok, batch_size=bs, fingerprint="bench", name="bench", progress=False)
        b.generate(["Warm-up."], max_new_tokens=2, temperature=0.0, num_return_sequences=1, seed=0)
        b.loglikelihood([("Warm-up", " run")])
        return b

    if args.fullsize:
        b16 = backend(bf16, ecfg.batch_size)
        for v in names:
            r = timed(v, b16, ecfg.verticals.get(v, {}), args.data_dir, ecfg.seed)
            out[v] = {k: x for k, x in r.items() if not k.startswith("_")}
            out["limits"][v] = ecfg.verticals.get(v, {}).get("limit")
            print(v, json.dumps(out[v]), flush=True)
    elif args.batch:
        backends = {bs: backend(bf16, bs) for bs in (16, 32, 64)}
        for i, v in enumerate(names):
            entry = {**ecfg.verticals.get(v, {}), "limit": limits[v]}
            order = list(backends) if i % 2 == 0 else list(reversed(backends))
            r = {bs: timed(v, backends[bs], entry, args.data_dir, ecfg.seed) for bs in order}
            res = {f"batch_{bs}": {k: x for k, x in r[bs].items() if not k.startswith("_")} for bs in backends}
            for bs in (32, 64):
                res[f"speed_ratio_{bs}_vs_16"] = round(r[16]["cpu_s_per_unit"] / r[bs]["cpu_s_per_unit"], 2)
                res[f"same_text_{bs}_vs_16"] = compare(r[16], r[bs])["same_text"]
            out[v] = res
            print(v, json.dumps(res), flush=True)
    else:
        b32, b16 = backend(fp32, ecfg.batch_size), backend(bf16, ecfg.batch_size)
        for i, v in enumerate(names):
            entry = {**ecfg.verticals.get(v, {}), "limit": limits[v]}
            r = {}
            for name in (("float32", "bfloat16") if i % 2 == 0 else ("bfloat16", "float32")):
                r[name] = timed(v, b32 if name == "float32" else b16, entry, args.data_dir, ecfg.seed)
            res = {**compare(r["float32"], r["bfloat16"]),
                   **{k: {x: y for x, y in r[k].items() if not x.startswith("_")} for k in r}}
            out[v] = res
            print(v, json.dumps(res), flush=True)
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"timed wall {out['wall_s']} s")


if __name__ == "__main__":
    main()
