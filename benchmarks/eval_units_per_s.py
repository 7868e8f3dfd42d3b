"""Units per second of the evaluation engine, the per-item generation path vs the default path, on the same items.

One process, one loaded model (gemma-3-270m by default), no cache; per vertical, the configurations
take turns on the same items so the machine's changing load hits them alike:
  old     the per-item generation path: the generation protocol for every vertical, float32, no
          prefix reuse, batch 16, transformers' multinomial sampler and generate() (length-sorted
          left-padded batches)
  new     exactly the default path: params.yaml's protocol per vertical (log-likelihood for ethics,
          bias, fairness), prefix KV reuse, `eval.dtype` (bfloat16: the float32 model cast once, as
          the eval stage does), `eval.batch_size` and the inverse-CDF sampler (evals/sampling.py)
  new-nr  the same as new without prefix reuse (the reuse's own share)
A unit is a bootstrap unit of the headline (units.csv row). Also reports, per vertical whose
params.yaml protocol is log-likelihood (ethics, bias, fairness; truthfulness when set to loglik),
the agreement of the log-likelihood and generation verdicts on the same items.
Before timing, one warm-up call of each kind (generate, loglikelihood) pays the one-time costs
(first kernels, the scorer's import), so the first configuration timed is not penalised.
Ratios use CPU seconds (the process runs one thread, so CPU seconds are what the work costs on an
idle core; wall time on a shared machine mostly measures the other processes); wall ratios are
reported beside them. The mix: one unit of every vertical (sum of per-unit costs).

    python benchmarks/eval_units_per_s.py [--limits toxicity=16,privacy=10] [--threads-new auto]

`--quick` runs a few units per vertical on tiny-gpt-neox (about a minute); `--model gemma-3-270m
--limits ...` with the quick limits takes ~2-3 minutes on an idle core. The last line prints the
main ratio: units/s of the new default path over the old path.

`--threads-new auto` runs the new configurations as the default params do (`eval.threads: auto`:
every idle core) and the old one at 1 thread; CPU seconds then no longer measure what a unit costs
in time, so the wall-second ratios (`*_wall`) are the result, and only on an otherwise idle machine.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import harness

# items per vertical (the vertical's `limit`)
QUICK = {"toxicity": 1, "bias": 4, "ethics": 8, "truthfulness": 6, "privacy": 1, "fairness": 2}
FULL = {"toxicity": 6, "bias": 24, "ethics": 40, "truthfulness": 16, "privacy": 3, "fairness": 12}
OLD_BATCH = 16  # the per-item path's batch size


def load_backends(spec: str, threads: int, ecfg) -> tuple:
    """(old, new) backends: the float32 model at batch 16 without reuse, and the default path's
    model (cast to `eval.dtype` after loading, like evals/stage.py) at `eval.batch_size`."""
    import copy

    import torch

    from rlhf_trust import config
    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.evals.stage import eval_dtype
    from rlhf_trust.models import build_base, load_causal_lm

    torch.set_num_threads(threads)
    cfg = config.load("model", harness.ROOT / "params.yaml")
    cfg.spec = spec
    d = build_base(Path(tempfile.mkdtemp(prefix="bench-base-")) / "base", cfg)
    model, tok = load_causal_lm(d)
    dtype = eval_dtype(d, ecfg.dtype)
    new_model = copy.deepcopy(model).to(getattr(torch, dtype)) if dtype != "float32" else model
    old = HFBackend(model, tok, batch_size=OLD_BATCH, fingerprint=spec, name=spec, progress=False,
                    prefix_reuse=False, sampler="multinomial",  # transformers' multinomial sampler
                    decode="generate")  # and decoded greedy rows with generate(), not evals/decode.py's loop
    new = HFBackend(new_model, tok, batch_size=ecfg.batch_size, fingerprint=f"{spec}:{dtype}", name=spec,
                    progress=False, prefix_reuse=True)
    return old, new, dtype


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--model", default=None, help="model.spec: gemma-3-270m (default) | tiny-gpt-neox (--quick)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threads-new", default="",
                    help="the new configurations' threads (auto = the default params'); the old one keeps --threads")
    ap.add_argument("--verticals", default="toxicity,bias,ethics,truthfulness,privacy,fairness")
    ap.add_argument("--limits", default="", help="override items per vertical, e.g. toxicity=16,privacy=10")
    args = ap.parse_args()
    args.model = args.model or ("tiny-gpt-neox" if args.quick else "gemma-3-270m")
    args.data_dir = str(harness.data_dir(args))

    from rlhf_trust import config, evals

    ecfg = config.load("eval", args.params)
    limits = {**(QUICK if args.quick else FULL),
              **{k: int(n) for k, n in (kv.split("=") for kv in args.limits.split(",") if kv)}}
    old_b, new_b, dtype = load_backends(args.model, args.threads, ecfg)
    import torch

    from rlhf_trust.train.runtime import auto_threads

    threads = {"old": args.threads}
    threads["new"] = threads["new-nr"] = (auto_threads() if args.threads_new == "auto" else
                                          int(args.threads_new or args.threads))
    for b in (old_b, new_b):
        b.generate(["Warm-up."], max_new_tokens=2, temperature=0.0, num_return_sequences=1, seed=0)
        b.loglikelihood([("Warm-up", " run")])
    from rlhf_trust.evals import scorers

    scorers.get_scorer("profanity-check").score(["Warm-up."])  # its model loads outside the timing
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    for v in args.verticals.split(","):
        entry = {**entry_for(v, ecfg, args.data_dir), "limit": limits[v]}
        loglik = getattr(evals.settings(v, entry), "protocol", "generation") == "loglik"
        old = {**entry, "protocol": "generation"} if loglik else entry
        cfgs = {"old": (old, old_b, False), "new": (entry, new_b, True), "new-nr": (entry, new_b, False)}
        r: dict[str, dict] = {}
        new_b.batch_size = int(entry.get("batch_size", ecfg.batch_size))  # the vertical's own, as the stage
        for name, (e, backend, reuse) in cfgs.items():
            backend.prefix_reuse = reuse
            torch.set_num_threads(threads[name])
            t0, c0 = time.perf_counter(), time.process_time()
            res = evals.run(v, backend, data_dir=args.data_dir, seed=ecfg.seed, settings_entry=e, n_boot=200)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            # CPU seconds per unit: what a unit costs on an idle machine at 1 thread (wall time on a
            # shared machine mostly measures the other processes)
            r[name] = {"units": len(res.units), "seconds": round(dt, 2), "cpu_s": round(cpu, 2),
                       "cpu_s_per_unit": round(cpu / len(res.units), 3),
                       "units_per_s": round(len(res.units) / dt, 3), "s_per_unit": round(dt / len(res.units), 3),
                       "headline": res.metrics[res.metrics["headline"]],
                       "parse_failure_rate": res.metrics.get("parse_failure_rate"), "_units": res.units}
        same = {item(u): x for u, x in r["old"]["_units"]}
        if loglik:  # verdict agreement of the two protocols on the same units
            new_units = {item(u): x for u, x in r["new"]["_units"]}
            common = [u for u in new_units if u in same]
            r["protocol_agreement"] = {"units": len(common), "same_verdict": round(
                sum((new_units[u] >= 0.5) == (same[u] >= 0.5) for u in common) / max(1, len(common)), 3)}
        for x in ("old", "new", "new-nr"):
            r[x].pop("_units", None)
        r["speedup_new_vs_old"] = round(r["old"]["cpu_s_per_unit"] / r["new"]["cpu_s_per_unit"], 2)
        r["speedup_prefix_reuse"] = round(r["new-nr"]["cpu_s_per_unit"] / r["new"]["cpu_s_per_unit"], 2)
        r["speedup_new_vs_old_wall"] = round(r["new"]["units_per_s"] / r["old"]["units_per_s"], 2)
        results[v] = r
        print(v, json.dumps({k: r[k] for k in r if k not in ("new-nr",)}), flush=True)

    setup = {"model": args.model, "threads": threads, "limits": limits,
               "old": {"dtype": "float32", "batch_size": OLD_BATCH, "prefix_reuse": False, "protocol": "generation",
                       "sampler": "multinomial"},
               "new": {"dtype": dtype, "batch_size": {v: ecfg.verticals.get(v, {}).get("batch_size", ecfg.batch_size)
                                                      for v in results}, "prefix_reuse": True, "protocol": "params.yaml",
                       "sampler": new_b.sampler}}
    summary = {"wall_s": round(time.perf_counter() - t_start, 1),
               **ratios(results, {v: default_units(v, ecfg, args.data_dir) for v in results}),
               "verticals": results}
    report(summary, threads)
    harness.write_result("eval_units_per_s", args, summary, setup=setup)


def entry_for(vertical: str, ecfg, data_dir: str) -> dict:
    """The vertical's params entry, with files the stage reads from the raw layout read from `data_dir`."""
    entry = dict(ecfg.verticals.get(vertical, {}))
    if entry.get("system_prompt_dir"):
        entry["system_prompt_dir"] = data_dir
    return entry


def item(unit_id: str) -> str:
    """A unit id without its protocol: truthfulness' condition names the protocol (mc1_generation /
    mc1_loglik) so its units never pair across protocols; here the same question is the same unit."""
    return unit_id.removesuffix("|mc1_generation").removesuffix("|mc1_loglik")


def default_units(vertical: str, ecfg, data_dir: str) -> int:
    """A vertical's units per model in the default run: its params entry run through a constant
    stand-in model (no weights; a second or two), counting units.csv rows."""
    from rlhf_trust import evals
    from rlhf_trust.evals.backends import CallableBackend

    stub = CallableBackend(lambda prompt, i: "No.", loglik=lambda ctx, cont: -float(len(cont)))
    stub.progress = False
    res = evals.run(vertical, stub, data_dir=data_dir, seed=ecfg.seed, settings_entry=entry_for(vertical, ecfg, data_dir),
                    n_boot=100)
    return len(res.units)


def ratios(results: dict, weights: dict) -> dict:
    """CPU-second ratios old / new and no-reuse / reuse for two unit mixes: one unit of every
    vertical, and the default run's mix (each vertical weighted by its units per model there)."""
    def cost(cfg, w, key="cpu_s_per_unit"):
        return sum(w[v] * r[cfg][key] for v, r in results.items())

    one = dict.fromkeys(results, 1.0)
    return {"seconds": {c: round(sum(r[c]["seconds"] for r in results.values()), 1) for c in ("old", "new")},
            "default_run_units_per_model": {v: round(w, 1) for v, w in weights.items()},
            "units_per_s_ratio_new_vs_old": round(cost("old", one) / cost("new", one), 2),
            "units_per_s_ratio_prefix_reuse": round(cost("new-nr", one) / cost("new", one), 2),
            "units_per_s_ratio_new_vs_old_wall": round(cost("old", one, "s_per_unit") / cost("new", one, "s_per_unit"), 2),
            "default_mix_ratio_new_vs_old": round(cost("old", weights) / cost("new", weights), 2),
            "default_mix_ratio_prefix_reuse": round(cost("new-nr", weights) / cost("new", weights), 2),
            "default_mix_ratio_new_vs_old_wall": round(cost("old", weights, "s_per_unit")
                                                       / cost("new", weights, "s_per_unit"), 2)}


def report(summary: dict, threads: dict) -> None:
    for v, r in summary["verticals"].items():
        print(f"{v}: new vs old {r['speedup_new_vs_old']}x, prefix reuse on/off {r['speedup_prefix_reuse']}x")
    print(f"one unit of every vertical: new vs old {summary['units_per_s_ratio_new_vs_old']}x "
          f"(wall {summary['units_per_s_ratio_new_vs_old_wall']}x), prefix reuse on/off "
          f"{summary['units_per_s_ratio_prefix_reuse']}x; timed wall {summary['wall_s']} s")
    print(f"default run's unit mix: prefix reuse on/off {summary['default_mix_ratio_prefix_reuse']}x units/s")
    threaded = threads["new"] != threads["old"]
    key = "default_mix_ratio_new_vs_old_wall" if threaded else "default_mix_ratio_new_vs_old"
    t = threads
    how = f", threads {t['new']} vs {t['old']}, wall" if threaded else ""
    print(f"new default path vs old per-item generation path (default run's unit mix{how}): {summary[key]}x units/s")

if __name__ == "__main__":
    main()
