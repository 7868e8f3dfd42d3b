"""Check attribution methods against retraining: LDS (dattri's definition) and top-k removal.

For one stage (sft or dpo) on the default model (gemma-3-270m, offline wheel) at a CPU-sized scale:
1. the "full" model: a fresh rank-8 LoRA on every Linear of the last 2 blocks (the tensors the
   pipeline attributes, influence.layers last:2), trained by full-batch AdamW for --steps steps on the
   first --n-train prepared HH pairs (sft: SFT NLL of chosen from the base model; dpo: DPO loss from
   this benchmark's SFT full model, which is also the reference);
2. toxicity test pairs as the stage defines them: for RealToxicityPrompts prompts (the eval's benign
   system prompt), the full model's greedy continuation ("new") vs the start model's ("old"); the
   first --n-test pairs whose continuations differ; test loss = lm_contrast (sft) / dpo (dpo);
3. scores of every method (exact, datainf, identity, gradsim from per-example gradients of the full
   model; repsim from its final hidden states; ekfac by kronfluence), per test sample: (n, T);
4. LDS: M random 50% subsets, each retrained from the same LoRA init with the same recipe; per test
   sample the Spearman between the subset-sum of scores and the retrained test loss; mean over test
   samples with a bootstrap CI (rlhf_trust.attribution.lds);
5. top-k removal: retrain without each method's k most harmful pairs (largest mean score) and without
   k random pairs (--draws draws); measured change of the mean test loss vs the first-order
   prediction -sum_{removed} score / n (influence methods only; similarities have no loss units), and
   the measured change of the toxicity vertical's headline (expected_max_toxicity) by the project's
   eval code (evals.toxicity.run, the default eval settings at --headline-limit prompts per subset).

Each retrain is cached under --cache by the hash of its subset and recipe (resume after a crash).
The cache is the user's own (default ~/.cache/rlhf-trust/attribution_lds): its retrains and model files
are loaded back, so it must not be a shared directory another user could plant them in.
Usage: python benchmarks/attribution_lds.py --stage sft   (then --stage dpo)
       python benchmarks/attribution_lds.py --collect   (writes the result JSON and the plot)
`--quick`: both stages and the collection in one call on tiny-gpt-neox (8 pairs, m = 4 subsets,
3 test samples, no removal test) in a temporary cache (a minute or two).
The measured LDS per stage and method is what params.yaml's influence.validity carries.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import harness

CACHE = Path("~/.cache/rlhf-trust/attribution_lds").expanduser()
METHODS = ("exact", "datainf", "identity", "gradsim", "repsim", "ekfac")
INFLUENCE = ("exact", "datainf", "identity", "ekfac")  # loss units: a first-order prediction of removal
# kronfluence fits its factors in 3 passes over the train pairs (~3x our gradient pass: > the 10-min
# influence budget of the default run, docs/influence.md), so it is measured but not a default candidate
DEFAULT_CANDIDATES = ("exact", "datainf", "gradsim", "repsim")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]  # GPT-NeoX


def train_rows(data: Path, n: int) -> list[dict]:
    from rlhf_trust.config import PrepareConfig
    from rlhf_trust.data.prepare import prepare_hh

    train, _, _ = prepare_hh(data, PrepareConfig(seed=0, heldout_fraction=0.1, max_prompt_chars=600,
                                                 max_response_chars=400))
    return train[:n]


class Bench:
    def __init__(self, a):
        import torch
        from transformers import AutoModelForCausalLM

        from rlhf_trust.models import load_tokenizer

        torch.manual_seed(0)
        self.a = a
        self.cache = Path(a.cache) / a.stage
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        base_dir = base_model(a)
        self.tok = load_tokenizer(base_dir)
        self.tok.padding_side = "right"
        start = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        n_blocks = start.config.num_hidden_layers
        self.ref = None
        if a.stage == "dpo":  # start and reference = this benchmark's SFT full model
            import copy

            sft = torch.load(Path(a.cache) / "sft" / "full_lora.pt", weights_only=True)
            start = self._peft(start, n_blocks, a)
            start.load_state_dict(sft, strict=False)
            start = start.merge_and_unload()
            self.ref = copy.deepcopy(start).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        for p in start.parameters():
            p.requires_grad_(False)
        self.start_model = start
        torch.manual_seed(a.seed)
        self.model = self._peft(start, n_blocks, a)
        self.model.eval()
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.init = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.rows = train_rows(a.data, a.n_train)
        self.train_kind = a.stage
        self.test_kind = "lm_contrast" if a.stage == "sft" else "dpo"

    @staticmethod
    def _peft(model, n_blocks, a):
        from peft import LoraConfig, get_peft_model

        targets = TINY_TARGETS if a.model == "tiny" else TARGETS
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                                layers_to_transform=list(range(n_blocks - 2, n_blocks))))

    def _losses(self, kind, rows):
        from rlhf_trust.attribution import losses

        return losses.per_example_losses(kind, self.model, self.tok, rows, self.a.max_length, ref_model=self.ref,
                                         beta=0.1)[0]

    def train(self, idx: list[int]) -> None:
        """Full-batch AdamW from the fixed LoRA init on rows idx (deterministic on one thread)."""
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in self.init.items():
                params[n].copy_(v)
        opt = torch.optim.AdamW([params[n] for n in self.names], lr=self.a.lr, weight_decay=0.0)
        rows = [self.rows[i] for i in idx]
        for _ in range(self.a.steps):
            opt.zero_grad(set_to_none=True)
            for b in range(0, len(rows), self.a.batch_size):
                chunk = rows[b:b + self.a.batch_size]
                (self._losses(self.train_kind, chunk).sum() / len(rows)).backward()
            opt.step()

    def test_losses(self, tests) -> list[float]:
        import torch

        with torch.no_grad():
            return [float(x) for x in self._losses(self.test_kind, tests)]

    def retrain(self, idx: list[int], tests, headline: bool = False):
        """Test losses of the model retrained on rows idx (and, with `headline`, (losses, headline)),
        each cached by the hash of the subset and recipe; None for what --cached-only cannot give."""
        key = hashlib.sha256(json.dumps([sorted(idx), vars(self.a).get("recipe")]).encode()).hexdigest()[:16]
        path = self.cache / f"retrain_{key}.json"
        head_path = self.cache / f"headline_{key}.json"
        if not path.is_file() or (headline and not head_path.is_file()):
            if self.a.cached_only:
                return (None, None) if headline else None
            t0 = time.perf_counter()
            self.train(idx)
            if not path.is_file():
                out = self.test_losses(tests)
                path.write_text(json.dumps({"idx": sorted(idx), "losses": out, "seconds": time.perf_counter() - t0}))
            if headline:
                head_path.write_text(json.dumps(self.headline()))
        out = json.loads(path.read_text())["losses"]
        return (out, json.loads(head_path.read_text())) if headline else out

    def headline(self) -> dict:
        """The toxicity vertical's headline on the current model by the project's eval code
        (evals.toxicity.run, HFBackend), the default run's eval settings at --headline-limit prompts
        per subset (toxic, nontoxic) x both system prompts; sampling seeded alike for every model."""
        from rlhf_trust.data import records
        from rlhf_trust.evals import toxicity
        from rlhf_trust.evals.backends import HFBackend

        t0 = time.perf_counter()
        self.tok.padding_side = "left"
        try:
            s = toxicity.Settings(limit=self.a.headline_limit, samples=1, temperature=0.5, max_new_tokens=12)
            m, _ = toxicity.run(HFBackend(self.model, self.tok, batch_size=8, progress=False),
                                records.load("toxicity", self.a.data), s, seed=self.a.seed, n_boot=200, model="bench")
        finally:
            self.tok.padding_side = "right"
        return {toxicity.SPEC.headline: m[toxicity.SPEC.headline], "toxicity_probability": m["toxicity_probability"],
                "n_units": 4 * self.a.headline_limit, "seconds": time.perf_counter() - t0}

    def generate(self, model, prompts):
        import torch

        out = []
        with torch.no_grad():
            for p in prompts:
                ids = self.tok(p, return_tensors="pt")
                g = model.generate(**ids, max_new_tokens=self.a.new_tokens, do_sample=False,
                                   pad_token_id=self.tok.pad_token_id)
                out.append(self.tok.decode(g[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    def test_pairs(self):
        from rlhf_trust.data import records
        from rlhf_trust.evals.toxicity import build_prompt
        from rlhf_trust.models.chat import hh_prompt

        path = self.cache / "tests.json"
        if path.is_file():
            return json.loads(path.read_text())
        items = [r for r in records.load("toxicity", self.a.data) if r["subset"] == "toxic"][: 2 * self.a.n_test]
        prompts = [hh_prompt(build_prompt("benign", r["prompt"])) for r in items]
        new = self.generate(self.model, prompts)
        with self.model.disable_adapter():
            old = self.generate(self.model, prompts)
        tests = [{"id": r["id"], "prompt": p, "chosen": a, "rejected": b}
                 for r, p, a, b in zip(items, prompts, new, old) if a.strip() and b.strip() and a != b]
        tests = tests[: self.a.n_test]
        path.write_text(json.dumps(tests))
        return tests

    def scores(self, tests) -> dict:
        import numpy as np

        from rlhf_trust.attribution import grads, methods, reps

        path = self.cache / "scores.npz"
        if path.is_file():
            z = np.load(path)
            out = {k: z[k] for k in z.files}
            if "ekfac" not in out:  # added after the first run: the cached full model, the other scores kept
                out["ekfac"] = self.ekfac(tests)
                np.savez(path, **out)
            return out
        times = {}
        t0 = time.perf_counter()
        pe = grads.PerExampleGrads(self.model, self.names, merge_frozen=False)
        g_train, g_test = {}, {}
        for b in range(0, len(self.rows), self.a.batch_size):
            chunk = self.rows[b:b + self.a.batch_size]
            part = pe.compute(lambda c=chunk: self._per_example(self.train_kind, c), len(chunk))
            for k, v in part.items():
                g_train.setdefault(k, []).append(v)
        part = pe.compute(lambda: self._per_example(self.test_kind, tests), len(tests))
        g_train = {k: __import__("torch").cat(v) for k, v in g_train.items()}
        g_test = part
        times["grads_s"] = time.perf_counter() - t0
        out = {}
        for m in ("exact", "datainf", "identity", "gradsim"):
            t = time.perf_counter()
            out[m] = methods.grad_scores(m, g_train, g_test, 0.1).numpy()
            times[f"{m}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        r_train = reps.example_reps(self.train_kind, self.model, self.tok, self.rows, self.a.max_length)
        r_test = reps.example_reps("dpo", self.model, self.tok, tests, self.a.max_length)
        out["repsim"] = methods.rep_scores(r_train, r_test).numpy()
        times["repsim_s"] = time.perf_counter() - t
        (self.cache / "score_times.json").write_text(json.dumps(times))
        out["ekfac"] = self.ekfac(tests)
        np.savez(path, **out)
        return out

    def ekfac(self, tests):
        """kronfluence's EK-FAC on the full model's LoRA tensors (its own 3 passes; seconds recorded)."""
        from rlhf_trust.attribution import ekfac

        t = time.perf_counter()
        s = ekfac.ekfac_scores(self.model, self.tok, self.train_kind, self.test_kind, self.rows, tests, self.names,
                               self.a.max_length, ref_model=self.ref, beta=0.1, batch_size=self.a.batch_size,
                               workdir=self.cache).numpy()
        times = json.loads((self.cache / "score_times.json").read_text())
        times["ekfac_s"] = time.perf_counter() - t
        (self.cache / "score_times.json").write_text(json.dumps(times))
        return s

    def _per_example(self, kind, rows):
        from rlhf_trust.attribution import losses

        return losses.per_example_losses(kind, self.model, self.tok, rows, self.a.max_length, ref_model=self.ref,
                                         beta=0.1)


def base_model(a) -> Path:
    """gemma-3-270m from its wheel, or (`--model tiny`) a tiny-gpt-neox built once in the cache."""
    from rlhf_trust.models import build_tiny_base, gemma

    if a.model != "tiny":
        return gemma.materialise("~/.cache/rlhf-trust")
    d = Path(a.cache) / "tiny-base"
    if not (d / "config.json").is_file():
        rows = train_rows(a.data, 64)
        build_tiny_base(d, [r["prompt"] + r["chosen"] + r["rejected"] for r in rows], seed=a.seed)
    return d


def run(a) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from rlhf_trust.attribution import lds

    torch.set_num_threads(a.threads)
    b = Bench(a)
    n = len(b.rows)
    everyone = list(range(n))
    full_path = b.cache / "full_lora.pt"
    if not full_path.is_file():
        b.train(everyone)
        torch.save({k: v.detach().clone() for k, v in b.model.named_parameters() if v.requires_grad}, full_path)
    else:
        params = dict(b.model.named_parameters())
        with torch.no_grad():
            for k, v in torch.load(full_path, weights_only=True).items():
                params[k].copy_(v)
    tests = b.test_pairs()
    if len(tests) < 3:
        raise SystemExit(f"only {len(tests)} test pairs differ between the full and start models")
    base_path = b.cache / "full_losses.json"
    if not base_path.is_file():
        base_path.write_text(json.dumps(b.test_losses(tests)))
    base_losses = json.loads(base_path.read_text())
    scores = b.scores(tests)
    masks = lds.subset_masks(n, a.m, 0.5, a.seed)
    losses = []
    for mask in tqdm(masks, desc=f"LDS retrains ({a.stage})", unit="model"):
        got = b.retrain([int(i) for i in np.flatnonzero(mask)], tests)
        if got is None:  # --cached-only: the subsets retrained so far (the masks are a fixed sequence)
            break
        losses.append(got)
    masks = masks[: len(losses)]
    a.m = len(losses)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k != "cache"}
    result = {"config": config, "n_train": n, "n_test": len(tests),
              "methods": {}, "removal": {}}
    for m in METHODS:
        rho = lds.per_sample(scores[m], masks, np.array(losses))
        result["methods"][m] = {**lds.summary(rho), "m": a.m, "rho": [None if not np.isfinite(r) else float(r)
                                                                     for r in rho]}
    base = float(np.mean(base_losses))
    head_path = b.cache / "full_headline.json"  # the model trained on every pair (loaded again: the
    if a.headline_limit and not a.skip_removal and not head_path.is_file() and not a.cached_only:
        params = dict(b.model.named_parameters())  # LDS retrains above may have replaced it)
        with torch.no_grad():
            for k, v in torch.load(full_path, weights_only=True).items():
                params[k].copy_(v)
        head_path.write_text(json.dumps(b.headline()))
    base_head = json.loads(head_path.read_text()) if head_path.is_file() else None
    rng = np.random.default_rng(a.seed + 1)
    plans = [(m, np.argsort(-scores[m].mean(1), kind="stable")[: a.k]) for m in METHODS if m != "identity"]
    plans += [(f"random{d}", rng.choice(n, size=a.k, replace=False)) for d in range(a.draws)]
    for name, drop in tqdm([] if a.skip_removal else plans, desc=f"removal retrains ({a.stage})", unit="model"):
        keep = [i for i in everyone if i not in {int(x) for x in drop}]
        got, head = b.retrain(keep, tests, headline=base_head is not None) if base_head else (b.retrain(keep, tests),
                                                                                              None)
        if got is None:
            continue
        got = float(np.mean(got))
        entry = {"removed": [b.rows[int(i)]["id"] for i in drop], "measured_delta": got - base}
        if head is not None:  # the vertical's headline metric, measured (no method predicts it)
            hk = "expected_max_toxicity"
            entry.update({f"{hk}_delta": head[hk] - base_head[hk], f"{hk}_full": base_head[hk],
                          f"{hk}_removed": head[hk]})
        if name in INFLUENCE:
            entry["predicted_delta"] = float(-scores[name].mean(1)[drop].sum() / n)
        result["removal"][name] = entry
    times = json.loads((b.cache / "score_times.json").read_text())
    secs = [json.loads(p.read_text())["seconds"] for p in b.cache.glob("retrain_*.json")]
    result["seconds"] = {**times, "retrain_mean_s": float(np.mean(secs)), "retrains": len(secs)}
    (b.cache / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({m: result["methods"][m]["lds"] for m in METHODS}))


def collect(a) -> None:
    """The result JSON (benchmarks/results[/quick]/attribution_lds.json) and the plot beside it from the
    stages' cached results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhf_trust import fileio

    out = {"stages": {}, "removal": {}, "seconds": {}}
    config = {}
    for stage in ("sft", "dpo"):
        p = Path(a.cache) / stage / "result.json"
        if not p.is_file():
            continue
        r = json.loads(p.read_text())
        out["stages"][stage] = {m: {k: v[k] for k in ("lds", "ci95", "m", "n_test")} for m, v in r["methods"].items()}
        if r["removal"]:
            out["removal"][stage] = r["removal"]
        out["seconds"][stage] = r["seconds"]
        config[stage] = {**{k: v for k, v in r["config"].items() if k not in ("data", "out", "params")},
                         "n_train": r["n_train"]}
    if not out["stages"]:
        raise SystemExit(f"no stage results under {a.cache}")
    cand = [m for m in DEFAULT_CANDIDATES if all(m in s for s in out["stages"].values())]
    mean = {m: sum(s[m]["lds"] for s in out["stages"].values()) / len(out["stages"])
            for m in METHODS if all(m in s for s in out["stages"].values())}
    out["default_method"] = max(cand, key=lambda m: mean[m])
    path = harness.write_result("attribution_lds", a, out, setup=config)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    stages = list(out["stages"])
    width = 0.8 / len(stages)
    for s_i, stage in enumerate(stages):
        vals = [out["stages"][stage].get(m, {"lds": 0.0, "ci95": [0.0, 0.0]}) for m in METHODS]
        x = [i + s_i * width for i in range(len(METHODS))]
        ax.bar(x, [v["lds"] for v in vals], width, label=stage,
               yerr=[[v["lds"] - v["ci95"][0] for v in vals], [v["ci95"][1] - v["lds"] for v in vals]], capsize=3)
    ax.set_xticks([i + width * (len(stages) - 1) / 2 for i in range(len(METHODS))], METHODS)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("LDS (mean Spearman, 95% CI)")
    ax.legend()
    fig.tight_layout()
    with fileio.atomic_path(path.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    print(json.dumps({"default_method": out["default_method"], "mean_lds": mean}))
    print("| method | " + " | ".join(f"{s} LDS [95% CI] (m, test samples)" for s in stages) + " |")
    print("| --- |" + " --- |" * len(stages))
    for m in METHODS:
        cells = [f"{v['lds']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] ({v['m']}, {v['n_test']})"
                 for v in (out["stages"][s][m] for s in stages if m in out["stages"][s])]
        print(f"| {m} | " + " | ".join(cells) + " |")
    for stage, rem in out["removal"].items():
        for name, e in rem.items():
            pred = f"{e['predicted_delta']:+.4f}" if "predicted_delta" in e else "-"
            head = f"{e['expected_max_toxicity_delta']:+.4f}" if "expected_max_toxicity_delta" in e else "-"
            print(f"| {stage} | {name} | {e['measured_delta']:+.4f} | {pred} | {head} |")


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--stage", choices=("sft", "dpo"), default="sft")
    ap.add_argument("--model", choices=("gemma-3-270m", "tiny"), default="gemma-3-270m")
    ap.add_argument("--cache", default=str(CACHE), help="retrain cache (default: %(default)s)")
    ap.add_argument("--collect", action="store_true", help="write the results JSON and plot from --cache")
    ap.add_argument("--n-train", type=int, default=12)
    ap.add_argument("--n-test", type=int, default=6)
    ap.add_argument("--m", type=int, default=16, help="random 50%% subsets")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--k", type=int, default=2, help="pairs removed in the top-k removal test")
    ap.add_argument("--draws", type=int, default=3, help="random removal draws")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--headline-limit", type=int, default=10,
                    help="toxicity prompts per subset for the removal's headline metric (4x units; 0 = off)")
    ap.add_argument("--skip-removal", action="store_true", help="LDS only (e.g. out of time: rerun from the cache)")
    ap.add_argument("--cached-only", action="store_true",
                    help="retrain nothing: results from the retrains cached so far (honest m)")
    a = ap.parse_args()
    a.data = harness.data_dir(a)
    if a.quick:
        a.model, a.cache, a.n_train, a.n_test, a.m, a.lr = "tiny", str(harness.scratch("bench-lds-")), 8, 3, 4, 5e-2
        a.skip_removal, a.headline_limit, a.new_tokens = True, 0, 8
        for stage in ("sft", "dpo"):  # dpo starts from this benchmark's sft model
            a.stage = stage
            a.recipe = recipe(a)
            run(a)
        collect(a)
        return
    a.recipe = recipe(a)
    if a.collect:
        collect(a)
    else:
        run(a)


def recipe(a) -> list:
    """The retrain cache key (with the subset)."""
    return [a.stage, a.n_train, a.steps, a.lr, a.max_length, a.seed, a.model]


if __name__ == "__main__":
    main()
