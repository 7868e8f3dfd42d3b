"""`rlhf-trust influence`: attribution scores of every HH training pair for each RLHF stage x trust vertical.

`--stage S` without `--vertical` handles all of S's verticals in one process (the model loads once);
DVC runs one cell per (stage, vertical), and the first cell of a stage writes the train gradients
that its other cells read back from the store; influence.method picks the score that ranks pairs (exact, datainf, gradsim, repsim, ekfac),
influence.compare the other methods computed beside it (one column each, Spearman between them).

Stages (the study's attribute_{sft,ppo,dpo}.py, with its defects fixed, docs/influence.md):
  sft: SFT policy; train loss = SFT NLL of (prompt, chosen); test = SFT's continuation vs base's.
  rm:  reward model (how PPO is attributed); train = Bradley-Terry on (prompt, chosen, rejected);
       test = BT preferring the PPO continuation over the SFT continuation.
  dpo: DPO policy vs the SFT reference; train = DPO loss on the pair; test = DPO loss preferring
       DPO's continuation over SFT's.
Train gradients are computed once per stage (sharded on disk, resumable) and reused by every vertical.
With several training seeds (train.seeds) each seed's models are attributed on that seed's samples and
the scores averaged, as TRAK ensembles models: `score` ranks by the ensemble, `score_s<k>` keeps each
seed's, and the metrics give the Spearman agreement between seeds.
Outputs: influence/<stage>/<vertical>/{scores.parquet, top.jsonl, hist.png, metrics.json}.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_trust import config, fileio, paths
from rlhf_trust import verticals as registry
from rlhf_trust.errors import UserError


@dataclass(frozen=True)
class StageSpec:
    model: str            # the model whose LoRA gradients are taken
    new: str              # eval samples of the stage's result
    old: str              # eval samples of the model before the stage
    train_loss: str
    test_loss: str
    ref: str | None = None  # DPO reference stage


def spec(stage: str, cfg) -> StageSpec:
    from rlhf_trust.pipeline import INFLUENCE  # the pipeline table: which model each stage explains

    if stage in INFLUENCE:
        p = INFLUENCE[stage]
        test_loss = cfg.sft_test_loss if stage == "sft" else p.train_loss
        return StageSpec(p.model, p.new, p.old, p.train_loss, test_loss, ref=p.ref)
    raise UserError(f"influence: unknown stage '{stage}' (use sft, rm, dpo)")


def out_dir(stage: str, vertical: str) -> Path:
    return paths.INFLUENCE / stage / vertical


# ----------------------------------------------------------------------------------------------
class Attributor:
    """One RLHF stage: its model, train pairs and train-gradient store, scoring any test pairs."""

    def __init__(self, stage: str, cfg, train_rows: list[dict], train_md5: str, seed: int | None = None):
        import torch

        from rlhf_trust import models
        from rlhf_trust.attribution import grads, loading

        self.stage, self.cfg, self.rows = stage, cfg, train_rows
        self.spec = spec(stage, cfg)
        self.device = models.resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        model_dir = paths.model_dir(self.spec.model, seed)
        self.model, self.tok = loading.load_lora_model(model_dir, cfg.svd_rank, self.device)
        self.ref = loading.load_reference(paths.model_dir(self.spec.ref, seed), self.device) if self.spec.ref else None
        self.layers = grads.select_layers(grads.lora_param_names(self.model), cfg.layers)
        self.pe = grads.PerExampleGrads(self.model, self.layers)
        key = grads.store_key(model=models.load_stage_info(model_dir).get("md5"), stage=stage, data=train_md5,
                              n=len(train_rows), loss=self.spec.train_loss, layers=self.layers,
                              max_length=cfg.max_length, beta=cfg.dpo_beta, svd_rank=cfg.svd_rank,
                              dtype=cfg.grad_dtype, shard_size=cfg.shard_size)
        self.store = paths.OUTPUTS / "influence_grads" / stage / key
        self.grad_seconds = 0.0
        self.grads_ready = False
        self._train_g = None
        self._reps = None

    def _grads(self, kind: str, rows: list[dict]) -> dict:
        from rlhf_trust.attribution import losses

        return self.pe.compute(lambda: losses.per_example_losses(
            kind, self.model, self.tok, rows, self.cfg.max_length, ref_model=self.ref, beta=self.cfg.dpo_beta,
            device=self.device), len(rows))

    def train_grads(self) -> Path:
        """Write (or resume) the sharded train-gradient store."""
        from tqdm import tqdm

        from rlhf_trust.attribution import grads, losses

        t0 = time.perf_counter()
        cfg = self.cfg
        with tqdm(total=len(self.rows), desc=f"influence {self.stage}: train gradients", unit="pair") as bar:
            def shard(items):  # micro-batches of similar length inside each shard: little padding
                return grads.compute_sorted(items, cfg.batch_size, lambda b: self._grads(self.spec.train_loss, b),
                                            lambda r: losses.row_tokens(self.spec.train_loss, self.tok, r,
                                                                        cfg.max_length), bar.update)

            grads.write_store(self.store, grads.shard_batches(self.rows, cfg.shard_size, cfg.shard_size), shard,
                              len(self.rows), self.layers, self.pe.shapes, cfg.shard_size, cfg.grad_dtype,
                              on_skip=bar.update)
        self.grad_seconds = time.perf_counter() - t0
        self.grads_ready = True
        return self.store

    def test_grad(self, test_rows: list[dict]) -> dict:
        """Mean gradient of the test loss over the test pairs."""
        total = None
        for b in range(0, len(test_rows), self.cfg.batch_size):
            chunk = test_rows[b:b + self.cfg.batch_size]
            g = self._grads(self.spec.test_loss, chunk)
            s = {k: v.sum(0) for k, v in g.items()}
            total = s if total is None else {k: total[k] + s[k] for k in total}
        return {k: v / len(test_rows) for k, v in total.items()}

    def wanted(self) -> list[str]:
        """The methods this run computes: influence.method first, then influence.compare."""
        return list(dict.fromkeys([self.cfg.method, *self.cfg.compare]))

    def check_memory(self) -> bool:
        """Whether the in-memory methods (exact, gradsim) fit; exit 2 naming the memory when the
        chosen method is exact and it does not (checked before the long gradient pass)."""
        from rlhf_trust.attribution import methods

        dims = [math.prod(s) for s in self.pe.shapes.values()]
        if self.cfg.method == "exact":
            methods.check_exact_memory(len(self.rows), dims, self.cfg.exact_memory_gb)
            return True
        try:
            methods.check_exact_memory(len(self.rows), dims, self.cfg.exact_memory_gb)
            return True
        except UserError:
            return False

    def train_in_memory(self) -> dict:
        """All train gradients, read from the store once per stage process (shared by the verticals)."""
        from rlhf_trust.attribution import grads

        if self._train_g is None:
            self._train_g = grads.load_store(self.store)
        return self._train_g

    def train_reps(self):
        """Final-layer representations of the train pairs (repsim), once per stage, cached beside the
        gradient store."""
        import numpy as np

        from rlhf_trust.attribution import reps

        path = self.store / "reps.npy"
        if self._reps is None:
            if path.is_file():
                self._reps = np.load(path)
            else:
                self._reps = reps.example_reps(self.spec.train_loss, self.model, self.tok, self.rows,
                                               self.cfg.max_length, self.cfg.batch_size, self.device).numpy()
                with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, self._reps)
        return self._reps

    def ekfac(self, test_rows: list[dict]):
        """EK-FAC scores for the stage's mean test loss (the mean of the per-test-pair columns)."""
        from rlhf_trust.attribution import ekfac

        s = ekfac.ekfac_scores(self.model, self.tok, self.spec.train_loss, self.spec.test_loss, self.rows, test_rows,
                               self.layers, self.cfg.max_length, ref_model=self.ref, beta=self.cfg.dpo_beta,
                               device=self.device, batch_size=self.cfg.batch_size, workdir=paths.OUTPUTS)
        return s.mean(1).numpy()

    def score(self, test_rows: list[dict]) -> dict:
        """{"columns": {method: scores (n,)}, "scores": the chosen method's, "metrics"}."""
        import numpy as np
        import torch

        from rlhf_trust.attribution import datainf, grads, methods, reps

        t0 = time.perf_counter()
        v = self.test_grad(test_rows)
        timings = {"test_grad_s": time.perf_counter() - t0}
        fits = self.check_memory()
        cols = {}
        for m in self.wanted():
            t = time.perf_counter()
            if m == "repsim":
                test = reps.example_reps("dpo", self.model, self.tok, test_rows, self.cfg.max_length,
                                         self.cfg.batch_size, self.device).mean(0, keepdim=True)
                cols[m] = methods.rep_scores(self.train_reps(), test)[:, 0].numpy()
            elif m == "ekfac":  # kronfluence fits its own factors over the model (3 passes over the pairs)
                cols[m] = self.ekfac(test_rows)
            elif m == "datainf" and not fits:  # streamed over the shards
                cols[m] = datainf.datainf_scores_chunked(lambda: grads.iter_store(self.store), v,
                                                         self.cfg.damping_scale).numpy()
            elif fits:
                cols[m] = methods.grad_scores(m, self.train_in_memory(), {k: x[None] for k, x in v.items()},
                                              self.cfg.damping_scale)[:, 0].numpy()
            elif m == "gradsim":  # row-wise: streamed over the shards
                cols[m] = torch.cat([methods.grad_scores(m, c, {k: x[None] for k, x in v.items()})[:, 0]
                                     for c in grads.iter_store(self.store)]).numpy()
            else:  # exact past the memory limit, as a comparison column only: skipped (stated in metrics)
                continue
            timings[f"{m}_s"] = time.perf_counter() - t
        rho = methods.spearman_table(cols)
        agree = {f"spearman_{a}_{b}": r for k, r in rho.items() for a, b in [k.split("~")]}
        # the historical key (the report and the DVC metric): DataInf vs exact, whichever order
        if "spearman_exact_datainf" in agree:
            agree["spearman_datainf_exact"] = agree.pop("spearman_exact_datainf")
        return {"scores": np.asarray(cols[self.cfg.method], dtype=np.float64), "columns": cols,
                "metrics": {"method": self.cfg.method, "methods": ",".join(cols), **agree, **timings,
                            "exact_skipped_memory": int(not fits and "exact" in self.wanted())}}


# ----------------------------------------------------------------------------------------------
def write_outputs(dest: Path, rows: list[dict], scores, columns: dict, top_k: int) -> dict:
    """scores.parquet (`score` = the chosen method's, one `score_<method>` column per computed
    method), top.jsonl and hist.png of the chosen method."""
    import numpy as np
    import pandas as pd

    from rlhf_trust.attribution import datainf

    norm = datainf.normalize(scores)
    order = np.argsort(scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(len(scores))
    df = pd.DataFrame({"id": [str(r["id"]) for r in rows], "score": scores, "score_normalized": norm,
                       "rank_helpful": rank, **{f"score_{m}": np.asarray(c) for m, c in columns.items()}})
    dest.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(dest / "scores.parquet") as tmp:
        df.to_parquet(tmp, index=False)

    def entry(kind: str, i: int, pos: int) -> dict:
        r = rows[i]
        return {"kind": kind, "rank": pos + 1, "id": r["id"], "score": float(scores[i]),
                "score_normalized": float(norm[i]), "prompt": r["prompt"], "chosen": r["chosen"],
                "rejected": r["rejected"]}

    k = min(top_k, len(rows)) if np.any(scores) else 0  # all-zero scores rank nothing
    helpful = [entry("helpful", int(i), p) for p, i in enumerate(order[:k])]           # most negative
    harmful = [entry("harmful", int(i), p) for p, i in enumerate(order[::-1][:k])]     # most positive
    fileio.write_jsonl(dest / "top.jsonl", helpful + harmful)
    plot_hist(dest / "hist.png", scores)
    return {"n_train": len(rows), "frac_negative": float((scores < 0).mean()),
            "score_min": float(scores.min()), "score_max": float(scores.max()),
            "score_median": float(np.median(scores))}


def plot_hist(path: Path, scores) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(scores, bins=min(50, max(5, len(scores) // 4)), color="#4472c4")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("DataInf influence (negative = pair moved the model toward the new behaviour)")
    ax.set_ylabel("HH pairs")
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
def train_rows(cfg) -> tuple[list[dict], str]:
    from rlhf_trust.data import records

    path = paths.CURATED / "hh_train.jsonl"  # the set the training stages read (curate's output)
    if not path.is_file():
        raise UserError(f"missing {path}; run `rlhf-trust curate` first")
    rows = records.load("hh_train", paths.CURATED)
    if cfg.max_train_pairs:
        rows = rows[: cfg.max_train_pairs]
    if not rows:
        raise UserError(f"{path} holds no training pairs")
    return rows, fileio.md5_file(path)


# the DVC metrics: sizes, the chosen method's measured LDS (params: influence.validity), and every pair of
# methods' agreement
METRIC_KEYS = ("n_train", "n_test", "lds", "n_seeds", "seed_spearman_mean", "seed_spearman_min",
               *(f"spearman_{a}_{b}" for a in ("exact", "datainf", "gradsim", "repsim")
                                            for b in ("exact", "datainf", "gradsim", "repsim") if a != b))


def ensemble(per_seed: dict, method: str) -> dict:
    """Mean over seeds of each method's scores (TRAK's ensemble over models), each seed's chosen-method
    scores as column `s<k>`, and the Spearman agreement between seeds (every pair, their mean and min)."""
    import numpy as np

    from rlhf_trust.attribution import methods

    seeds = list(per_seed)
    if len(seeds) == 1:   # one model: its own scores
        return per_seed[seeds[0]]
    shared = [m for m in per_seed[seeds[0]]["columns"] if all(m in r["columns"] for r in per_seed.values())]
    cols = {m: np.mean([np.asarray(per_seed[k]["columns"][m], dtype=np.float64) for k in seeds], axis=0)
            for m in shared}
    by_seed = {paths.seed_part(k): np.asarray(per_seed[k]["scores"], dtype=np.float64) for k in seeds}
    rho = methods.spearman_table(by_seed) if len(seeds) > 1 else {}
    agree = {f"seed_spearman_{a}_{b}": r for key, r in rho.items() for a, b in [key.split("~")]}
    vals = [r for r in agree.values() if r is not None and not math.isnan(r)]
    metrics = {**per_seed[seeds[0]]["metrics"], **agree, "n_seeds": len(seeds), "seeds": ",".join(map(str, seeds))}
    if vals:
        metrics.update(seed_spearman_mean=float(np.mean(vals)), seed_spearman_min=float(np.min(vals)))
    return {"scores": np.mean(list(by_seed.values()), axis=0), "columns": {**cols, **by_seed}, "metrics": metrics}


def run_stage(stage: str, verticals: list[str], cfg, seeds: list[int | None] = (None,)) -> dict[str, dict]:
    from rlhf_trust.attribution import testpairs
    from rlhf_trust.tracking import track_stage

    seeds = list(seeds)
    rows, md5 = train_rows(cfg)
    sp = spec(stage, cfg)
    # fail fast on missing eval samples before the (long) gradient pass
    tests = {(v, k): testpairs.build(v, sp.new, sp.old, cfg.max_test_samples, k) for v in verticals for k in seeds}
    atts = {k: Attributor(stage, cfg, rows, md5, k) for k in seeds}
    for att in atts.values():
        att.check_memory()  # exact past the memory: one line, exit 2, before the gradient pass
    results = {}
    for vertical in verticals:
        dest = out_dir(stage, vertical)

        def work(sr, vertical=vertical, dest=dest):
            import numpy as np

            t0 = time.perf_counter()
            per_seed, grad_s = {}, 0.0
            for k, att in atts.items():
                test_rows, _ = tests[(vertical, k)]
                if not att.grads_ready and test_rows:
                    att.train_grads()
                    grad_s += att.grad_seconds
                if test_rows:
                    per_seed[k] = att.score(test_rows)
                else:  # no behaviour change between the two stages on these samples: nothing to attribute
                    zeros = np.zeros(len(rows))
                    per_seed[k] = {"scores": zeros, "columns": {cfg.method: zeros},
                                   "metrics": {"no_behaviour_change": 1}}
            res = ensemble(per_seed, cfg.method)
            summary = write_outputs(dest, rows, res["scores"], res["columns"], cfg.top_k)
            for name in ("scores.parquet", "top.jsonl", "hist.png"):
                sr.log_artifact(dest / name)
            counts = tests[(vertical, seeds[0])][1]
            return {**summary, **counts, **res["metrics"], **cfg.validity.measured(stage, cfg.method),
                    "n_test": sum(len(tests[(vertical, k)][0]) for k in seeds),
                    "train_grad_s": grad_s, "runtime_s": time.perf_counter() - t0,
                    "layers": len(atts[seeds[0]].layers),
                    "params_per_example": sum(math.prod(s) for s in atts[seeds[0]].pe.shapes.values()),
                    "train_loss": sp.train_loss, "test_loss": sp.test_loss}

        inputs = [paths.CURATED / "hh_train.jsonl"]
        for k in seeds:
            inputs += [paths.model_dir(sp.model, k), testpairs.samples_path(vertical, sp.new, k),
                       testpairs.samples_path(vertical, sp.old, k)]
        results[vertical] = track_stage("influence", work, cfg=cfg, inputs=list(dict.fromkeys(inputs)),
                                        metrics_path=dest / "metrics.json",
                                        metric_keys=METRIC_KEYS,
                                        run_name=f"influence@{stage}-{vertical}",
                                        tags={"influence.stage": stage, "influence.vertical": vertical,
                                              "seed": ",".join("none" if k is None else str(k) for k in seeds)})
    return results


def cli(args) -> int:
    cfgs = config.load_all(args.params)
    cfg, seeds = cfgs["influence"], cfgs["train"].seeds
    stages = [args.stage] if getattr(args, "stage", None) else list(cfg.stages)
    verticals = [args.vertical] if getattr(args, "vertical", None) else list(cfg.verticals)
    known = registry.names()
    for v in verticals:
        if v not in known:
            raise UserError(f"influence: unknown vertical '{v}' (known: {', '.join(known)})")
    for stage in stages:
        spec(stage, cfg)
    for stage in stages:
        run_stage(stage, verticals, cfg, seeds)
    return 0
